/* Convolutions on GEMM (glow-model.md §7.1–7.2). conv3x3_edge: im2col over the
 * zero-padded input with the edge-indicator channel (1 on the pad ring) appended
 * as channel cin, then y = cols·W with W as a [9·(cin+1), cout] matrix (HWIO).
 * Zero conv: out = (conv + b)·exp(3·logs). 1x1: y = x·W, one GEMM. */
#include "conv2d.h"

#include <string.h>

#include "actnorm.h"
#include "blas.h"
#include "check.h"
#include "gemm_small.h"

size_t conv3x3_cols_size(size_t n, size_t h, size_t w, size_t cin)
{
    return n * h * w * 9 * (cin + 1);
}

/* Pixel rows (e, i) are independent in im2col, col2im (written as a gather
 * per input pixel, so no two threads add into the same dx) and the shift
 * form's loops; below FT_CONV_PAR_MIN elements they stay on one thread. */
#define FT_CONV_PAR_MIN 32768

void conv3x3_im2col(ft_real *cols, const ft_real *x, size_t xs,
                    size_t n, size_t h, size_t w, size_t cin)
{
    const size_t k = 9 * (cin + 1), nh = n * h;
    const int par = nh * w * k >= FT_CONV_PAR_MIN;
#pragma omp parallel for num_threads(ft_threads()) schedule(static) if (par)
    for (size_t ei = 0; ei < nh; ei++) {
        const size_t e = ei / h, i = ei % h;
        for (size_t j = 0; j < w; j++) {
            ft_real *row = cols + (ei * w + j) * k;
            for (size_t a = 0; a < 3; a++)
                for (size_t b = 0; b < 3; b++) {
                    ft_real *dst = row + (a * 3 + b) * (cin + 1);
                    /* padded (i+a, j+b) is original (i+a−1, j+b−1) */
                    int inside = i + a >= 1 && i + a <= h && j + b >= 1 && j + b <= w;
                    if (inside) {
                        const ft_real *src = x + ((e * h + i + a - 1) * w + j + b - 1) * xs;
                        memcpy(dst, src, cin * sizeof *dst);
                        dst[cin] = 0;
                    } else {
                        memset(dst, 0, cin * sizeof *dst);
                        dst[cin] = 1;
                    }
                }
        }
    }
}

void conv3x3_col2im_add(ft_real *dx, size_t dxs, const ft_real *dcols,
                        size_t n, size_t h, size_t w, size_t cin)
{
    const size_t k = 9 * (cin + 1), nh = n * h;
    const int par = nh * w * k >= FT_CONV_PAR_MIN;
#pragma omp parallel for num_threads(ft_threads()) schedule(static) if (par)
    for (size_t ey = 0; ey < nh; ey++) {
        const size_t e = ey / h, y = ey % h;
        for (size_t xx = 0; xx < w; xx++) {
            ft_real *dst = dx + (ey * w + xx) * dxs;
            /* input (y, xx) is read by tap (a, b) of output (y+1−a, xx+1−b) */
            for (size_t a = 0; a < 3; a++) {
                if (y + 1 < a || y + 1 - a >= h)
                    continue;
                for (size_t b = 0; b < 3; b++) {
                    if (xx + 1 < b || xx + 1 - b >= w)
                        continue;
                    const ft_real *src = dcols + ((e * h + y + 1 - a) * w + xx + 1 - b) * k
                                         + (a * 3 + b) * (cin + 1);
                    for (size_t c = 0; c < cin; c++)
                        dst[c] += src[c];
                }
            }
        }
    }
}

/* Narrow outputs (cout well below cin, e.g. the zero conv: width → C) use the
 * shift form instead of im2col: G = x·Wr with Wr[ci][t·cout + o] = W[t][ci][o]
 * is one GEMM over the unexpanded input, and y sums the nine taps' columns of
 * G at the shifted pixels, plus the edge weights on border taps. It needs
 * 9·cout·(rows + 2·cin) floats of the cols workspace, which fit when cout is
 * small; otherwise im2col (9·(cin+1)·rows floats) is used. */
static int use_shift(size_t rows, size_t cin, size_t cout)
{
    return cout * (rows + 2 * cin) <= rows * (cin + 1) && cout < cin;
}

size_t conv3x3_work_size(size_t n, size_t h, size_t w, size_t cin, size_t cout)
{
    const size_t rows = n * h * w;
    return use_shift(rows, cin, cout) ? 9 * cout * (rows + 2 * cin) : rows * 9 * (cin + 1);
}

size_t conv3x3_dwork_size(size_t n, size_t h, size_t w, size_t cin, size_t cout)
{
    const size_t rows = n * h * w;
    return use_shift(rows, cin, cout) ? 0 : rows * 9 * (cin + 1);
}

static void shift_weights(ft_real *wr, const ft_real *wt, size_t cin, size_t cout)
{
    for (size_t t = 0; t < 9; t++)
        for (size_t ci = 0; ci < cin; ci++)
            memcpy(wr + ci * 9 * cout + t * cout, wt + (t * (cin + 1) + ci) * cout,
                   cout * sizeof *wr);
}

static void shift_forward(ft_real *y, ft_real *work, const ft_real *x, size_t xs,
                          const ft_real *wt, size_t n, size_t h, size_t w, size_t cin, size_t cout)
{
    const size_t rows = n * h * w, k9 = 9 * cout;
    ft_real *wr = work, *gm = work + 9 * cin * cout;
    shift_weights(wr, wt, cin, cout);
    ft_gemm(0, 0, rows, k9, cin, 1, x, xs, wr, k9, 0, gm, k9);
    const size_t nh = n * h;
    const int par = rows * k9 >= FT_CONV_PAR_MIN;
#pragma omp parallel for num_threads(ft_threads()) schedule(static) if (par)
    for (size_t ei = 0; ei < nh; ei++) {
        const size_t e = ei / h, i = ei % h;
        for (size_t j = 0; j < w; j++) {
            ft_real *yo = y + (ei * w + j) * cout;
            memset(yo, 0, cout * sizeof *yo);
            for (size_t a = 0; a < 3; a++)
                for (size_t b = 0; b < 3; b++) {
                    size_t t = a * 3 + b;
                    int inside = i + a >= 1 && i + a <= h && j + b >= 1 && j + b <= w;
                    const ft_real *src = inside
                        ? gm + ((e * h + i + a - 1) * w + j + b - 1) * k9 + t * cout
                        : wt + (t * (cin + 1) + cin) * cout;   /* edge channel = 1 */
                    for (size_t o = 0; o < cout; o++)
                        yo[o] += src[o];
                }
        }
    }
}

static void shift_backward(ft_real *dx, size_t dxs, ft_real *dw, ft_real *work,
                           const ft_real *dy, const ft_real *x, size_t xs, const ft_real *wt,
                           size_t n, size_t h, size_t w, size_t cin, size_t cout,
                           const struct ft_rows_ep *dx_ep)
{
    const size_t rows = n * h * w, k9 = 9 * cout;
    ft_real *wr = work, *dwr = work + 9 * cin * cout, *dg = dwr + 9 * cin * cout;
    /* dG[q, t] = dy[q − offset(t)]: the pixel whose tap t reads q (0 if none). */
    const size_t nh = n * h;
    const int par = rows * k9 >= FT_CONV_PAR_MIN;
#pragma omp parallel for num_threads(ft_threads()) schedule(static) if (par)
    for (size_t ei = 0; ei < nh; ei++) {
        const size_t e = ei / h, i = ei % h;
        for (size_t j = 0; j < w; j++) {
            ft_real *row = dg + (ei * w + j) * k9;
            for (size_t a = 0; a < 3; a++)
                for (size_t b = 0; b < 3; b++) {
                    ft_real *d = row + (a * 3 + b) * cout;
                    /* output pixel (i − a + 1, j − b + 1) */
                    if (i + 1 >= a && i + 1 - a < h && j + 1 >= b && j + 1 - b < w)
                        memcpy(d, dy + ((e * h + i + 1 - a) * w + j + 1 - b) * cout,
                               cout * sizeof *d);
                    else
                        memset(d, 0, cout * sizeof *d);
                }
        }
    }
    /* dWrᵀ = dGᵀ·x (k9 × cin): this TN shape runs faster with the narrow
     * side as M (config L's 4096 rows × 512 × 36: oneDNN 100 GFLOP/s against
     * 77 for xᵀ·dG, OpenBLAS 58-60 against 46-47). wr is rebuilt below before
     * its use: until then it is the K-split's scratch. */
    memset(dwr, 0, 9 * cin * cout * sizeof *dwr);
    ft_gemm_tn_acc(k9, cin, rows, dg, k9, x, xs, dwr, cin, wr, 9 * cin * cout);
    for (size_t t = 0; t < 9; t++)
        for (size_t ci = 0; ci < cin; ci++) {
            ft_real *d = dw + (t * (cin + 1) + ci) * cout;
            const ft_real *s = dwr + t * cout * cin + ci;
            for (size_t o = 0; o < cout; o++)
                d[o] += s[o * cin];
        }
    /* edge weights: dy summed over the pixels whose tap t lands on the ring,
     * visiting only those: all of a border row, else the border column. */
    for (size_t t = 0; t < 9; t++) {
        size_t a = t / 3, b = t % 3;
        ft_real *d = dw + (t * (cin + 1) + cin) * cout;
        for (size_t e = 0; e < n; e++)
            for (size_t i = 0; i < h; i++) {
                const ft_real *g = dy + (e * h + i) * w * cout;
                if ((a == 0 && i == 0) || (a == 2 && i + 1 == h)) {
                    for (size_t j = 0; j < w; j++)
                        for (size_t o = 0; o < cout; o++)
                            d[o] += g[j * cout + o];
                } else if (b != 1) {
                    g += (b == 0 ? 0 : w - 1) * cout;
                    for (size_t o = 0; o < cout; o++)
                        d[o] += g[o];
                }
            }
    }
    if (dx) {
        shift_weights(wr, wt, cin, cout);
        if (dx_ep)
            ft_gemm_rows(1, rows, cin, k9, dg, k9, wr, k9, dx, dxs, dx_ep->fn, dx_ep->ctx);
        else
            ft_gemm(0, 1, rows, cin, k9, 1, dg, k9, wr, k9, 1, dx, dxs);
    }
}

void conv3x3_forward(ft_real *y, ft_real *cols, const ft_real *x, size_t xs,
                     const ft_real *wt, size_t n, size_t h, size_t w, size_t cin, size_t cout)
{
    FT_CHECK(xs >= cin, "pixel stride %zu < channels %zu", xs, cin);
    const size_t k = 9 * (cin + 1), rows = n * h * w;
    if (use_shift(rows, cin, cout)) {
        shift_forward(y, cols, x, xs, wt, n, h, w, cin, cout);
        return;
    }
    conv3x3_im2col(cols, x, xs, n, h, w, cin);
    ft_gemm(0, 0, rows, cout, k, 1, cols, k, wt, cout, 0, y, cout);
}

/* ActNorm + ReLU on rows r0..r1−1 of y, the epilogue of the GEMMs below. */
struct an_relu {
    ft_real *y;
    const ft_real *b;
    const double *sc;
    size_t c;
};

static void an_relu_rows(void *ctx, size_t r0, size_t r1)
{
    const struct an_relu *e = ctx;
    ft_real *y = e->y + r0 * e->c;
    actnorm_relu_apply(y, y, e->b, e->sc, r1 - r0, e->c);
}

/* The small-K kernel with the epilogue in registers, on ft_gemm_rows' blocks. */
struct small_rows {
    const struct an_relu *e;
    const ft_real *cols, *wt;
    size_t k;
};

static void small_rows(void *ctx, size_t r0, size_t r1)
{
    const struct small_rows *s = ctx;
    const size_t c = s->e->c;
    ft_small_nn(r1 - r0, c, s->k, s->cols + r0 * s->k, s->k, s->wt, c, s->e->y + r0 * c, c,
                s->e->b, s->e->sc);
}

void conv3x3_forward_relu(ft_real *y, ft_real *cols, const ft_real *x, size_t xs,
                          const ft_real *wt, size_t n, size_t h, size_t w, size_t cin,
                          size_t cout, const ft_real *b, const double *sc)
{
    FT_CHECK(xs >= cin, "pixel stride %zu < channels %zu", xs, cin);
    const size_t k = 9 * (cin + 1), rows = n * h * w;
    struct an_relu e = { y, b, sc, cout };
    if (use_shift(rows, cin, cout)) {
        shift_forward(y, cols, x, xs, wt, n, h, w, cin, cout);
        ft_rows_parallel(rows, cout, an_relu_rows, &e);
        return;
    }
    conv3x3_im2col(cols, x, xs, n, h, w, cin);
    if (k <= FT_SMALL_MAX && cout % 16 == 0 && ft_small_available()) {
        struct small_rows s = { &e, cols, wt, k };
        ft_rows_parallel(rows, cout, small_rows, &s);
        return;
    }
    ft_gemm_rows(0, rows, cout, k, cols, k, wt, cout, y, cout, an_relu_rows, &e);
}

void conv3x3_backward(ft_real *dx, size_t dxs, ft_real *dw, ft_real *cols, ft_real *dcols,
                      const ft_real *dy, const ft_real *x, size_t xs, const ft_real *wt,
                      size_t n, size_t h, size_t w, size_t cin, size_t cout,
                      const struct ft_rows_ep *dx_ep)
{
    const size_t k = 9 * (cin + 1), rows = n * h * w;
    if (use_shift(rows, cin, cout)) {
        shift_backward(dx, dxs, dw, cols, dy, x, xs, wt, n, h, w, cin, cout, dx_ep);
        return;
    }
    if (dx && dx_ep)
        for (size_t r = 0; r < rows; r++)
            memset(dx + r * dxs, 0, cin * sizeof *dx);
    conv3x3_im2col(cols, x, xs, n, h, w, cin);
    /* dcols is overwritten just after: until then it is the K-split's scratch */
    ft_gemm_tn_acc(k, cout, rows, cols, k, dy, cout, dw, cout, dcols, dcols ? rows * k : 0);
    if (dx) {
        FT_CHECK(dcols != NULL, "conv3x3_backward needs dcols for dx");
        ft_gemm(0, 1, rows, k, cout, 1, dy, cout, wt, cout, 0, dcols, k);
        conv3x3_col2im_add(dx, dxs, dcols, n, h, w, cin);
        if (dx_ep)
            ft_rows_parallel(rows, cin, dx_ep->fn, dx_ep->ctx);
    }
}

void zeroconv_forward(ft_real *out, ft_real *cols, const ft_real *x, size_t xs,
                      const ft_real *wt, const ft_real *b, const ft_real *logs,
                      size_t n, size_t h, size_t w, size_t cin, size_t cout)
{
    const size_t rows = n * h * w;
    conv3x3_forward(out, cols, x, xs, wt, n, h, w, cin, cout);
    actnorm_forward(out, NULL, out, b, logs, 1, rows, cout);   /* same affine map */
}

void zeroconv_backward(ft_real *dx, size_t dxs, ft_real *dw, ft_real *db, ft_real *dlogs,
                       ft_real *cols, ft_real *dcols, double *acc, ft_real *dout,
                       const ft_real *out, const ft_real *x, size_t xs, const ft_real *wt,
                       const ft_real *logs, size_t n, size_t h, size_t w, size_t cin, size_t cout,
                       const struct ft_rows_ep *dx_ep)
{
    const size_t rows = n * h * w;
    /* (pre + b)·exp(3·logs) is ActNorm's map without its log-det. */
    actnorm_backward(dout, db, dlogs, acc, dout, out, NULL, logs, 1, rows, cout);
    conv3x3_backward(dx, dxs, dw, cols, dcols, dout, x, xs, wt, n, h, w, cin, cout, dx_ep);
}

void conv1x1_forward(ft_real *y, const ft_real *x, const ft_real *wt,
                     size_t rows, size_t cin, size_t cout)
{
    ft_gemm(0, 0, rows, cout, cin, 1, x, cin, wt, cout, 0, y, cout);
}

void conv1x1_forward_relu(ft_real *y, const ft_real *x, const ft_real *wt, size_t rows,
                          size_t cin, size_t cout, const ft_real *b, const double *sc)
{
    /* One GEMM, then the epilogue as a pass of its own: with K = width, the
     * GEMM's B packed once per thread rather than once per 512-row block is
     * worth more than keeping each block in L2 for the epilogue (measured on
     * config L's 4096×512×512: 18.1 ms against 18.6; 256 rows: 1.23 ms
     * against 1.30). */
    struct an_relu e = { y, b, sc, cout };
    ft_gemm(0, 0, rows, cout, cin, 1, x, cin, wt, cout, 0, y, cout);
    ft_rows_parallel(rows, cout, an_relu_rows, &e);
}

void conv1x1_backward(ft_real *dx, ft_real *dw, const ft_real *dy, const ft_real *x,
                      const ft_real *wt, size_t rows, size_t cin, size_t cout)
{
    /* dx is overwritten just after: until then it is the K-split's scratch */
    FT_CHECK(dx == NULL || (dx != x && dx != dy), "conv1x1_backward: dx must not alias x or dy");
    ft_gemm_tn_acc(cin, cout, rows, x, cin, dy, cout, dw, cout, dx, dx ? rows * cin : 0);
    if (dx)
        ft_gemm(0, 1, rows, cin, cout, 1, dy, cout, wt, cout, 0, dx, cin);
}
