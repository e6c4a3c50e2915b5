/* Tests of the convolutions (glow-model.md §7.1, §7.2, §13.6):
 *   conv3x3_edge: pad x by 1, append e = 1 on the pad ring as channel cin, VALID
 *   3x3 cross-correlation y[n,i,j,o] = Σ_{a,b,c} xp[n,i+a,j+b,c]·W[a,b,c,o] (HWIO)
 * against an explicit reference (strided x), the im2col layout and col2im adjoint,
 * conv1x1 y = x·W, zeroconv (conv + b)·e^{3 logs}, and gradients (double). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "actnorm.h"
#include "blas.h"
#include "conv2d.h"
#include "gemm_small.h"
#include "ft_test.h"

enum { N = 2, H = 4, W = 5, CIN = 3, COUT = 4, XS = CIN + 2, P = N * H * W };
enum { NW = 9 * (CIN + 1) * COUT, NX = P * XS };

#ifdef FT_REAL_DOUBLE
static const double TOL = 1e-12;
#else
static const double TOL = 2e-6;   /* float32 sums of ≤ 36 products, measured ~3e-7 */
#endif

/* Padded-plus-edge-channel input value at padded position (pi, pj), channel c. */
static double xpad(const ft_real *x, size_t xs, size_t n, size_t pi, size_t pj, size_t c,
                   size_t h, size_t w, size_t cin)
{
    int ring = pi == 0 || pj == 0 || pi == h + 1 || pj == w + 1;
    if (c == cin)
        return ring ? 1.0 : 0.0;
    if (ring)
        return 0.0;
    return x[((n * h + pi - 1) * w + pj - 1) * xs + c];
}

/* The explicit reference: y (n,h,w,cout) in ft_real from double sums. */
static void ref_conv3x3(ft_real *y, const ft_real *x, size_t xs, const ft_real *wt,
                        size_t n, size_t h, size_t w, size_t cin, size_t cout)
{
    for (size_t e = 0; e < n; e++)
        for (size_t i = 0; i < h; i++)
            for (size_t j = 0; j < w; j++)
                for (size_t o = 0; o < cout; o++) {
                    double s = 0.0;
                    for (size_t a = 0; a < 3; a++)
                        for (size_t b = 0; b < 3; b++)
                            for (size_t c = 0; c <= cin; c++)
                                s += xpad(x, xs, e, i + a, j + b, c, h, w, cin) *
                                     wt[((a * 3 + b) * (cin + 1) + c) * cout + o];
                    y[((e * h + i) * w + j) * cout + o] = (ft_real)s;
                }
}

struct fx {
    ft_real x[NX], wt[NW], b[COUT], logs[COUT], r[P * COUT], y[P * COUT];
    ft_real *cols, *dcols;
    size_t ncols;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->ncols = conv3x3_cols_size(N, H, W, CIN);
    f->cols = calloc(f->ncols, sizeof *f->cols);
    f->dcols = calloc(f->ncols, sizeof *f->dcols);
    if (!f->cols || !f->dcols)
        return -1;
    ft_fill_normal(f->x, NX, 1.0, 1);
    ft_fill_normal(f->wt, NW, 0.3, 2);
    ft_fill_normal(f->b, COUT, 0.1, 3);
    ft_fill_uniform(f->logs, COUT, -0.2, 0.2, 4);
    ft_fill_normal(f->r, P * COUT, 1.0, 5);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    free(f->cols);
    free(f->dcols);
    free(f);
    return 0;
}

static void test_cols_size(void **state)
{
    struct fx *f = *state;
    size_t need = (size_t)P * 9 * (CIN + 1);
    if (f->ncols < need) {
        print_error("conv3x3_cols_size(%d,%d,%d,%d) = %zu < %zu = N·H·W·9·(cin+1)\n",
                    N, H, W, CIN, f->ncols, need);
        fail();
    }
}

/* The header documents cols as (N·H·W, 9·(cin+1)) in HWIO order. */
static void test_im2col_layout(void **state)
{
    struct fx *f = *state;
    size_t k = 9 * (CIN + 1);
    ft_real *want = calloc(P * k, sizeof *want);
    assert_non_null(want);
    for (size_t e = 0; e < N; e++)
        for (size_t i = 0; i < H; i++)
            for (size_t j = 0; j < W; j++)
                for (size_t a = 0; a < 3; a++)
                    for (size_t b = 0; b < 3; b++)
                        for (size_t c = 0; c <= CIN; c++)
                            want[((e * H + i) * W + j) * k + (a * 3 + b) * (CIN + 1) + c] =
                                (ft_real)xpad(f->x, XS, e, i + a, j + b, c, H, W, CIN);
    conv3x3_im2col(f->cols, f->x, XS, N, H, W, CIN);
    ft_assert_close(f->cols, want, P * k, 0.0, 0.0);
    free(want);
}

static void test_conv3x3_forward(void **state)
{
    struct fx *f = *state;
    ft_real want[P * COUT];
    /* strided: x is the first CIN of XS channels */
    ref_conv3x3(want, f->x, XS, f->wt, N, H, W, CIN, COUT);
    conv3x3_forward(f->y, f->cols, f->x, XS, f->wt, N, H, W, CIN, COUT);
    ft_assert_close(f->y, want, P * COUT, TOL, 0.0);
    /* dense */
    ft_real xd[P * CIN];
    for (size_t p = 0; p < P; p++)
        for (size_t c = 0; c < CIN; c++)
            xd[p * CIN + c] = f->x[p * XS + c];
    ref_conv3x3(want, xd, CIN, f->wt, N, H, W, CIN, COUT);
    conv3x3_forward(f->y, f->cols, xd, CIN, f->wt, N, H, W, CIN, COUT);
    ft_assert_close(f->y, want, P * COUT, TOL, 0.0);
}

/* conv3x3_forward_relu = max((conv + b)·sc, 0): against the reference conv
 * within TOL, and bit for bit against its definition with the K terms summed
 * in order by fma (what the small-K kernel and its plain-C form compute).
 * cout 80 covers the kernel's 64- and 16-column tiles; 15 rows, its 1-row tail. */
static void test_conv3x3_forward_relu(void **state)
{
    (void)state;
    enum { RN = 1, RH = 3, RW = 5, RC = 2, RO = 80, RP = RN * RH * RW, RK = 9 * (RC + 1) };
    ft_real x[RP * RC], wt[RK * RO], b[RO], y[RP * RO], want[RP * RO], cols[RP * RK];
    double sc[RO];
    ft_fill_normal(x, RP * RC, 1.0, 11);
    ft_fill_normal(wt, RK * RO, 0.3, 12);
    ft_fill_normal(b, RO, 0.5, 13);
    for (size_t o = 0; o < RO; o++)
        sc[o] = exp(0.3 * sin((double)o));
    conv3x3_forward_relu(y, cols, x, RC, wt, RN, RH, RW, RC, RO, b, sc);
    ref_conv3x3(want, x, RC, wt, RN, RH, RW, RC, RO);
    actnorm_relu_apply(want, want, b, sc, RP, RO);
    ft_assert_close(y, want, RP * RO, 4 * TOL, 0.0);
    conv3x3_im2col(cols, x, RC, RN, RH, RW, RC);
    for (size_t r = 0; r < RP; r++)
        for (size_t o = 0; o < RO; o++) {
            ft_real t = 0;
            for (size_t p = 0; p < RK; p++)
#ifdef FT_REAL_DOUBLE
                t = fma(cols[r * RK + p], wt[p * RO + o], t);
#else
                t = fmaf(cols[r * RK + p], wt[p * RO + o], t);
#endif
            want[r * RO + o] = t;
        }
    actnorm_relu_apply(want, want, b, sc, RP, RO);
    if (ft_small_available())
        ft_assert_close(y, want, RP * RO, 0.0, 0.0);
    ft_small_nn(RP, RO, RK, cols, RK, wt, RO, y, RO, b, sc);
    ft_assert_close(y, want, RP * RO, 0.0, 0.0);
}

/* Edge channel alone: x = 0, so y = E, non-zero only on border pixels. */
static void test_conv3x3_edge_map(void **state)
{
    struct fx *f = *state;
    ft_real x0[NX], want[P * COUT];
    memset(x0, 0, sizeof x0);
    for (size_t e = 0; e < N; e++)
        for (size_t i = 0; i < H; i++)
            for (size_t j = 0; j < W; j++)
                for (size_t o = 0; o < COUT; o++) {
                    double s = 0.0;
                    for (size_t a = 0; a < 3; a++)
                        for (size_t b = 0; b < 3; b++) {
                            size_t pi = i + a, pj = j + b;
                            if (pi == 0 || pj == 0 || pi == H + 1 || pj == W + 1)
                                s += f->wt[((a * 3 + b) * (CIN + 1) + CIN) * COUT + o];
                        }
                    want[((e * H + i) * W + j) * COUT + o] = (ft_real)s;
                }
    conv3x3_forward(f->y, f->cols, x0, XS, f->wt, N, H, W, CIN, COUT);
    ft_assert_close(f->y, want, P * COUT, TOL, 0.0);
}

/* col2im_add is the adjoint of the x-dependent part of im2col:
 * Σ dcols⊙(im2col(x) − im2col(0)) = Σ x⊙fold(dcols); it adds into dx (stride
 * dxs) and leaves channels ≥ cin alone. */
static void test_col2im_adjoint(void **state)
{
    struct fx *f = *state;
    size_t k = 9 * (CIN + 1), nc = P * k;
    ft_real x0[NX], *c0 = calloc(nc, sizeof *c0), *dc = calloc(nc, sizeof *dc);
    ft_real dx[NX], base[NX];
    assert_non_null(c0);
    assert_non_null(dc);
    memset(x0, 0, sizeof x0);
    ft_fill_normal(dc, nc, 1.0, 6);
    ft_fill_normal(base, NX, 1.0, 7);
    memcpy(dx, base, sizeof dx);
    conv3x3_im2col(f->cols, f->x, XS, N, H, W, CIN);
    conv3x3_im2col(c0, x0, XS, N, H, W, CIN);
    conv3x3_col2im_add(dx, XS, dc, N, H, W, CIN);
    double lhs = 0.0, rhs = 0.0;
    for (size_t i = 0; i < nc; i++)
        lhs += (double)dc[i] * ((double)f->cols[i] - (double)c0[i]);
    for (size_t p = 0; p < P; p++) {
        for (size_t c = 0; c < CIN; c++)
            rhs += (double)f->x[p * XS + c] * ((double)dx[p * XS + c] - (double)base[p * XS + c]);
        for (size_t c = CIN; c < XS; c++)
            if (dx[p * XS + c] != base[p * XS + c]) {
                print_error("col2im_add wrote channel %zu >= cin of pixel %zu\n", c, p);
                fail();
            }
    }
    double tol = 1e-5 * fabs(lhs) + 1e-5;
#ifdef FT_REAL_DOUBLE
    tol = 1e-12 * fabs(lhs) + 1e-12;
#endif
    if (!(fabs(lhs - rhs) <= tol)) {
        print_error("col2im adjoint: <dcols, im2col(x)-im2col(0)> = %.12g, <x, fold(dcols)> = %.12g\n",
                    lhs, rhs);
        fail();
    }
    free(c0);
    free(dc);
}

static void test_zeroconv_forward(void **state)
{
    struct fx *f = *state;
    ft_real want[P * COUT];
    ref_conv3x3(want, f->x, XS, f->wt, N, H, W, CIN, COUT);
    for (size_t p = 0; p < P; p++)
        for (size_t o = 0; o < COUT; o++)
            want[p * COUT + o] = (ft_real)(((double)want[p * COUT + o] + f->b[o]) * exp(3.0 * f->logs[o]));
    zeroconv_forward(f->y, f->cols, f->x, XS, f->wt, f->b, f->logs, N, H, W, CIN, COUT);
    ft_assert_close(f->y, want, P * COUT, TOL, 0.0);

    /* all-zero parameters give exactly 0 (glow-model.md §7.1 init) */
    ft_real wz[NW], bz[COUT], lz[COUT], zero[P * COUT];
    memset(wz, 0, sizeof wz);
    memset(bz, 0, sizeof bz);
    memset(lz, 0, sizeof lz);
    memset(zero, 0, sizeof zero);
    zeroconv_forward(f->y, f->cols, f->x, XS, wz, bz, lz, N, H, W, CIN, COUT);
    ft_assert_close(f->y, zero, P * COUT, 0.0, 0.0);
}

static void test_conv1x1_forward(void **state)
{
    (void)state;
    enum { R = 7, CI = 5, CO = 3 };
    ft_real x[R * CI], wt[CI * CO], y[R * CO], want[R * CO];
    ft_fill_normal(x, R * CI, 1.0, 8);
    ft_fill_normal(wt, CI * CO, 0.5, 9);
    for (size_t r = 0; r < R; r++)
        for (size_t o = 0; o < CO; o++) {
            double s = 0.0;
            for (size_t c = 0; c < CI; c++)
                s += (double)x[r * CI + c] * wt[c * CO + o];
            want[r * CO + o] = (ft_real)s;
        }
    conv1x1_forward(y, x, wt, R, CI, CO);
    ft_assert_close(y, want, R * CO, TOL, 0.0);
}

/* conv3x3_backward with a dx epilogue: dx is overwritten (the garbage it held
 * is gone), equals the accumulating form's dx from zero, and the epilogue sees
 * every row once, in ft_gemm_rows' blocks; dw is unchanged. Both forms: im2col
 * (cin 3, cout 4) and the shift form (cin 8, cout 2); pixel stride cin + 1. */
struct ep_probe {
    ft_real *dx;
    size_t dxs, cin, blk;
    int *seen, bad_block;
};

static void ep_double(void *ctx, size_t r0, size_t r1)
{
    struct ep_probe *e = ctx;
    if (r0 % e->blk != 0)
        e->bad_block = 1;
    for (size_t r = r0; r < r1; r++) {
        e->seen[r]++;
        for (size_t c = 0; c < e->cin; c++)
            e->dx[r * e->dxs + c] *= 2;
    }
}

static void test_conv3x3_backward_ep(void **state)
{
    (void)state;
    const size_t shapes[2][2] = { { 3, 4 }, { 8, 2 } };
    enum { EN = 2, EH = 4, EW = 5, EP = EN * EH * EW };
    for (int sh = 0; sh < 2; sh++) {
        const size_t cin = shapes[sh][0], cout = shapes[sh][1], xs = cin + 1, k = 9 * (cin + 1);
        ft_real *x = calloc(EP * xs, sizeof *x), *wt = calloc(k * cout, sizeof *wt);
        ft_real *dy = calloc(EP * cout, sizeof *dy), *dx = calloc(EP * xs, sizeof *dx);
        ft_real *dx0 = calloc(EP * xs, sizeof *dx0), *dw = calloc(k * cout, sizeof *dw);
        ft_real *dw0 = calloc(k * cout, sizeof *dw0);
        ft_real *cols = calloc(EP * k, sizeof *cols), *dcols = calloc(EP * k, sizeof *dcols);
        int seen[EP] = { 0 };
        assert_true(x && wt && dy && dx && dx0 && dw && dw0 && cols && dcols);
        ft_fill_normal(x, EP * xs, 1.0, 21);
        ft_fill_normal(wt, k * cout, 0.3, 22);
        ft_fill_normal(dy, EP * cout, 1.0, 23);
        conv3x3_backward(dx0, xs, dw0, cols, dcols, dy, x, xs, wt, EN, EH, EW, cin, cout, NULL);
        for (size_t r = 0; r < EP; r++) {
            for (size_t c = 0; c < cin; c++)
                dx0[r * xs + c] *= 2;
            for (size_t c = 0; c < xs; c++)
                dx[r * xs + c] = c < cin ? 7 : dx0[r * xs + c];
        }
        struct ep_probe e = { dx, xs, cin, ft_rows_block(EP, cin), seen, 0 };
        struct ft_rows_ep ep = { ep_double, &e };
        conv3x3_backward(dx, xs, dw, cols, dcols, dy, x, xs, wt, EN, EH, EW, cin, cout, &ep);
        ft_assert_close(dx, dx0, EP * xs, 0.0, 0.0);
        ft_assert_close(dw, dw0, k * cout, 0.0, 0.0);
        for (size_t r = 0; r < EP; r++)
            assert_int_equal(seen[r], 1);
        assert_int_equal(e.bad_block, 0);
        free(x), free(wt), free(dy), free(dx), free(dx0), free(dw), free(dw0);
        free(cols), free(dcols);
    }
}

#ifdef FT_REAL_DOUBLE
/* loss = Σ r⊙y for y = conv3x3(x), zeroconv(x) (mode 1) */
struct gctx {
    struct fx *f;
    int zero;
};

static double conv_loss(void *ctx)
{
    struct gctx *g = ctx;
    struct fx *f = g->f;
    if (g->zero)
        zeroconv_forward(f->y, f->cols, f->x, XS, f->wt, f->b, f->logs, N, H, W, CIN, COUT);
    else
        conv3x3_forward(f->y, f->cols, f->x, XS, f->wt, N, H, W, CIN, COUT);
    double s = 0.0;
    for (size_t i = 0; i < P * COUT; i++)
        s += (double)f->r[i] * f->y[i];
    return s;
}

/* Gradients are accumulated: start from OFF and subtract it afterwards. */
#define OFF 0.25

static void test_conv3x3_grad(void **state)
{
    struct fx *f = *state;
    struct gctx g = { f, 0 };
    enum { DXS = CIN + 1 };
    ft_real dx[P * DXS], dxg[NX], dw[NW], dw2[NW];
    for (size_t i = 0; i < P * DXS; i++)
        dx[i] = OFF;
    for (size_t i = 0; i < NW; i++)
        dw[i] = dw2[i] = OFF;
    conv3x3_backward(dx, DXS, dw, f->cols, f->dcols, f->r, f->x, XS, f->wt, N, H, W, CIN, COUT,
                     NULL);
    memset(dxg, 0, sizeof dxg);
    for (size_t p = 0; p < P; p++) {
        for (size_t c = 0; c < CIN; c++)
            dxg[p * XS + c] = dx[p * DXS + c] - OFF;
        if (dx[p * DXS + CIN] != OFF) {
            print_error("conv3x3_backward wrote dx channel cin at pixel %zu: %g\n", p, dx[p * DXS + CIN]);
            fail();
        }
    }
    for (size_t i = 0; i < NW; i++)
        dw[i] -= OFF;
    ft_check_grad(conv_loss, &g, f->x, dxg, NX, NX);
    ft_check_grad(conv_loss, &g, f->wt, dw, NW, NW);

    /* dx NULL, dcols NULL: dw only, the same values */
    conv3x3_backward(NULL, 0, dw2, f->cols, NULL, f->r, f->x, XS, f->wt, N, H, W, CIN, COUT,
                     NULL);
    for (size_t i = 0; i < NW; i++)
        dw2[i] -= OFF;
    ft_assert_close(dw2, dw, NW, 1e-12, 0.0);
}

static void test_zeroconv_grad(void **state)
{
    struct fx *f = *state;
    struct gctx g = { f, 1 };
    ft_real dx[NX], dw[NW], db[COUT], dlogs[COUT], dout[P * COUT], want_pre[P * COUT];
    double acc[2 * COUT];
    zeroconv_forward(f->y, f->cols, f->x, XS, f->wt, f->b, f->logs, N, H, W, CIN, COUT);
    memcpy(dout, f->r, sizeof dout);
    for (size_t i = 0; i < NX; i++)
        dx[i] = OFF;
    for (size_t i = 0; i < NW; i++)
        dw[i] = OFF;
    for (size_t o = 0; o < COUT; o++)
        db[o] = dlogs[o] = OFF;
    for (size_t p = 0; p < P; p++)
        for (size_t o = 0; o < COUT; o++)
            want_pre[p * COUT + o] = f->r[p * COUT + o] * exp(3.0 * f->logs[o]);
    zeroconv_backward(dx, XS, dw, db, dlogs, f->cols, f->dcols, acc, dout, f->y, f->x, XS,
                      f->wt, f->logs, N, H, W, CIN, COUT, NULL);
    ft_assert_close(dout, want_pre, P * COUT, 1e-14, 0.0);   /* dout ← d(pre) */
    for (size_t i = 0; i < NX; i++)
        dx[i] -= OFF;
    for (size_t i = 0; i < NW; i++)
        dw[i] -= OFF;
    for (size_t o = 0; o < COUT; o++) {
        db[o] -= OFF;
        dlogs[o] -= OFF;
    }
    /* channels ≥ CIN of x do not reach the loss: their numeric gradient is 0 */
    ft_check_grad(conv_loss, &g, f->x, dx, NX, NX);
    ft_check_grad(conv_loss, &g, f->wt, dw, NW, NW);
    ft_check_grad(conv_loss, &g, f->b, db, COUT, COUT);
    ft_check_grad(conv_loss, &g, f->logs, dlogs, COUT, COUT);
}

struct c1ctx {
    ft_real x[7 * 5], wt[5 * 3], r[7 * 3], y[7 * 3];
};

static double c1_loss(void *ctx)
{
    struct c1ctx *c = ctx;
    conv1x1_forward(c->y, c->x, c->wt, 7, 5, 3);
    double s = 0.0;
    for (size_t i = 0; i < 7 * 3; i++)
        s += (double)c->r[i] * c->y[i];
    return s;
}

static void test_conv1x1_grad(void **state)
{
    (void)state;
    struct c1ctx c;
    ft_real dx[7 * 5], dw[5 * 3];
    ft_fill_normal(c.x, 35, 1.0, 10);
    ft_fill_normal(c.wt, 15, 0.5, 11);
    ft_fill_normal(c.r, 21, 1.0, 12);
    for (size_t i = 0; i < 35; i++)
        dx[i] = 1e3;              /* dx is overwritten */
    for (size_t i = 0; i < 15; i++)
        dw[i] = OFF;              /* dw accumulates */
    conv1x1_backward(dx, dw, c.r, c.x, c.wt, 7, 5, 3);
    for (size_t i = 0; i < 15; i++)
        dw[i] -= OFF;
    ft_check_grad(c1_loss, &c, c.x, dx, 35, 35);
    ft_check_grad(c1_loss, &c, c.wt, dw, 15, 15);
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cols_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_im2col_layout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conv3x3_forward, setup, teardown),
        cmocka_unit_test(test_conv3x3_forward_relu),
        cmocka_unit_test_setup_teardown(test_conv3x3_edge_map, setup, teardown),
        cmocka_unit_test_setup_teardown(test_col2im_adjoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zeroconv_forward, setup, teardown),
        cmocka_unit_test(test_conv1x1_forward),
        cmocka_unit_test(test_conv3x3_backward_ep),
#ifdef FT_REAL_DOUBLE
        cmocka_unit_test_setup_teardown(test_conv3x3_grad, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zeroconv_grad, setup, teardown),
        cmocka_unit_test(test_conv1x1_grad),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
