/* Tests of the masked couplings (glow-model.md §8, §13) alone, for both
 * checkerboard parities and both channel halves, affine (sigmoid2, exp) and
 * additive: round trips in place with the acts refilled, copied elements
 * unchanged and each transformed element depending on no other transformed
 * one (the NN sees x⊙b only), the init constant, and (double) the log-det
 * against a brute-force Jacobian and every gradient by central differences. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "conv2d.h"
#include "ft_test.h"
#include "masked.h"

#ifdef FT_REAL_DOUBLE
static const double RT_TOL = 1e-12;
#else
static const double RT_TOL = 1e-5;     /* glow-model.md §13.1, float32 */
#endif
static const double LN_SIGMOID2 = -0.12692801104297263;   /* ln σ(2), §13.4 */

enum { NT = 9 };   /* w1, an1_b, an1_logs, w2, an2_b, an2_logs, w3, b3, logs3 */

static const char *const MASK_NAME[4] = { "channel first", "channel second", "checker p=0",
                                          "checker p=1" };

struct mfx {
    struct coupling_dims d;
    enum mask_kind m;
    size_t cin, nout, rows, dim, nt[NT];
    ft_real *pbuf, *gbuf, *pt[NT], *gt[NT];
    struct nn_tensors p, g;
    struct coupling_acts acts, acts2;
    struct coupling_work wk;
    ft_real *x, *y, *r, *dy, *xb, *dxb;
    double *gamma, *ld;
};

static ft_real *zalloc(size_t n)
{
    ft_real *a = calloc(n ? n : 1, sizeof *a);
    assert_non_null(a);
    return a;
}

static void tensors_view(struct nn_tensors *t, ft_real **v)
{
    *t = (struct nn_tensors){ v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8] };
}

static void mfx_init(struct mfx *f, size_t n, size_t h, size_t w, size_t c, size_t width,
                     enum coupling_kind kind, enum scale_fn scale, enum mask_kind m)
{
    memset(f, 0, sizeof *f);
    f->d = (struct coupling_dims){ .n = n, .h = h, .w = w, .c = c, .width = width,
                                   .kind = kind, .scale = scale };
    f->m = m;
    f->cin = masked_cin(m, c);
    f->nout = masked_nout(m, &f->d);
    /* §8: checkerboard C_in = C, n_out = 2C (affine) or C; channel C/2 and C or C/2 */
    size_t ct = masked_is_checker(m) ? c : c / 2;
    assert_int_equal(f->cin, ct);
    assert_int_equal(f->nout, kind == COUPLING_AFFINE ? 2 * ct : ct);
    f->rows = n * h * w;
    f->dim = f->rows * c;
    size_t sz[NT] = { 9 * (f->cin + 1) * width, width, width, width * width, width, width,
                      9 * (width + 1) * f->nout, f->nout, f->nout };
    size_t tot = 0;
    for (size_t i = 0; i < NT; i++)
        tot += (f->nt[i] = sz[i]);
    f->pbuf = zalloc(tot);
    f->gbuf = zalloc(tot);
    for (size_t i = 0, o = 0; i < NT; o += sz[i], i++) {
        f->pt[i] = f->pbuf + o;
        f->gt[i] = f->gbuf + o;
    }
    tensors_view(&f->p, f->pt);
    tensors_view(&f->g, f->gt);
    struct coupling_acts *a[2] = { &f->acts, &f->acts2 };
    for (int i = 0; i < 2; i++) {
        a[i]->a1 = zalloc(f->rows * width);
        a[i]->a2 = zalloc(f->rows * width);
        a[i]->h = zalloc(f->rows * f->nout);
    }
    size_t ncols = conv3x3_cols_size(n, h, w, f->cin > width ? f->cin : width);
    f->wk.cols = zalloc(ncols);
    f->wk.dcols = zalloc(ncols);
    f->wk.da = zalloc(2 * f->rows * width);
    f->wk.dh = zalloc(f->rows * f->nout);
    f->wk.acc = calloc(2 * (width > f->nout ? width : f->nout) + 1, sizeof *f->wk.acc);
    assert_non_null(f->wk.acc);
    f->wk.n_parts = coupling_parts_size(f->rows, width);
    f->wk.parts = calloc(f->wk.n_parts, sizeof *f->wk.parts);
    assert_non_null(f->wk.parts);
    f->x = zalloc(f->dim);
    f->y = zalloc(f->dim);
    f->r = zalloc(f->dim);
    f->dy = zalloc(f->dim);
    f->xb = zalloc(f->dim);
    f->dxb = zalloc(f->dim);
    f->gamma = calloc(n, sizeof *f->gamma);
    f->ld = calloc(n, sizeof *f->ld);
    assert_non_null(f->gamma);
    assert_non_null(f->ld);
    ft_fill_normal(f->x, f->dim, 1.0, 41);
    ft_fill_normal(f->r, f->dim, 1.0, 42);
    for (size_t i = 0; i < n; i++)
        f->gamma[i] = 0.8 - 1.7 * (double)i;
}

static void mfx_free(struct mfx *f)
{
    free(f->pbuf);
    free(f->gbuf);
    struct coupling_acts *a[2] = { &f->acts, &f->acts2 };
    for (int i = 0; i < 2; i++) {
        free(a[i]->a1);
        free(a[i]->a2);
        free(a[i]->h);
    }
    free(f->wk.cols);
    free(f->wk.dcols);
    free(f->wk.da);
    free(f->wk.dh);
    free(f->wk.acc);
    free(f->wk.parts);
    free(f->x);
    free(f->y);
    free(f->r);
    free(f->dy);
    free(f->xb);
    free(f->dxb);
    free(f->gamma);
    free(f->ld);
}

/* Away from init (§13): zero layers N(0, 0.1²), actnorm logs ≠ 0. */
static void randomise(struct mfx *f)
{
    ft_fill_normal(f->p.w1, f->nt[0], 0.2, 51);
    ft_fill_normal(f->p.an1_b, f->nt[1], 0.3, 52);
    ft_fill_uniform(f->p.an1_logs, f->nt[2], -0.2, 0.2, 53);
    ft_fill_normal(f->p.w2, f->nt[3], 0.2, 54);
    ft_fill_normal(f->p.an2_b, f->nt[4], 0.3, 55);
    ft_fill_uniform(f->p.an2_logs, f->nt[5], -0.2, 0.2, 56);
    ft_fill_normal(f->p.w3, f->nt[6], 0.1, 57);
    ft_fill_normal(f->p.b3, f->nt[7], 0.1, 58);
    ft_fill_normal(f->p.logs3, f->nt[8], 0.1, 59);
}

/* 1 if element (pixel r, channel k) is copied (b = 1), by §8's definitions. */
static int copied(const struct mfx *f, size_t r, size_t k)
{
    size_t q = r % (f->d.h * f->d.w), i = q / f->d.w, j = q % f->d.w, c = f->d.c;
    switch (f->m) {
    case MASK_CHANNEL_FIRST: return k < c / 2;
    case MASK_CHANNEL_SECOND: return k >= c / 2;
    case MASK_CHECKER0: return (i + j) % 2 == 0;
    case MASK_CHECKER1: return (i + j + 1) % 2 == 0;
    }
    return 0;
}

static const char *kind_name(const struct coupling_dims *d)
{
    if (d->kind == COUPLING_ADDITIVE)
        return "additive";
    return d->scale == SCALE_EXP ? "affine/exp" : "affine/sigmoid2";
}

static void fwd(struct mfx *f, ft_real *y, const ft_real *x, double *ld)
{
    memcpy(y, x, f->dim * sizeof *y);
    masked_forward(y, ld, &f->acts, &f->wk, f->xb, &f->p, NULL, &f->d, f->m);
}

/* Round trip, mask structure -------------------------------------------------------- */

static void check_round_trip(enum mask_kind m, enum coupling_kind kind, enum scale_fn scale,
                             size_t h, size_t w, size_t c)
{
    struct mfx f;
    mfx_init(&f, 2, h, w, c, 8, kind, scale, m);
    randomise(&f);
    print_message("round trip %s %s %zux%zux%zu\n", MASK_NAME[m], kind_name(&f.d), h, w, c);
    double ld[2] = { 0.5, -0.5 }, ld0[2] = { 0.5, -0.5 };
    fwd(&f, f.y, f.x, ld);
    ft_real *x2 = zalloc(f.dim);
    memcpy(x2, f.y, f.dim * sizeof *x2);
    double ld2[2];
    memcpy(ld2, ld, sizeof ld);
    masked_reverse(x2, ld2, &f.acts2, &f.wk, f.xb, &f.p, &f.d, m);
    ft_assert_close(x2, f.x, f.dim, RT_TOL, 0.0);
    ft_assert_close_d(ld2, ld0, 2, 0.0, 1e-5);     /* forward adds, reverse subtracts */
    ft_assert_close(f.acts2.a1, f.acts.a1, f.rows * f.d.width, 0.0, 0.0);
    ft_assert_close(f.acts2.a2, f.acts.a2, f.rows * f.d.width, 0.0, 0.0);
    ft_assert_close(f.acts2.h, f.acts.h, f.rows * f.nout, 0.0, 0.0);
    size_t n_changed = 0, n_trans = 0;
    for (size_t r = 0; r < f.rows; r++)
        for (size_t k = 0; k < c; k++) {
            size_t i = r * c + k;
            if (copied(&f, r, k) && f.y[i] != f.x[i])
                fail_msg("copied element (pixel %zu, channel %zu) changed: %g -> %g", r, k,
                         (double)f.x[i], (double)f.y[i]);
            n_trans += !copied(&f, r, k);
            n_changed += f.y[i] != f.x[i];
        }
    assert_int_equal(n_trans, f.dim / 2);   /* even H·W or C: half is transformed */
    assert_true(n_changed > n_trans / 2);
    if (kind == COUPLING_ADDITIVE)
        ft_assert_close_d(ld, ld0, 2, 0.0, 0.0);   /* additive: log-det 0 */

    /* The NN sees x⊙b: moving one transformed element moves no other output. */
    ft_real *xp = zalloc(f.dim), *yp = zalloc(f.dim);
    for (size_t r = 0, done = 0; r < f.rows && !done; r++)
        for (size_t k = 0; k < c && !done; k++) {
            if (copied(&f, r, k))
                continue;
            memcpy(xp, f.x, f.dim * sizeof *xp);
            xp[r * c + k] += (ft_real)0.75;
            double ldp[2] = { 0, 0 };
            fwd(&f, yp, xp, ldp);
            for (size_t i = 0; i < f.dim; i++)
                if (i != r * c + k && yp[i] != f.y[i])
                    fail_msg("output %zu depends on transformed input %zu", i, r * c + k);
            assert_true(yp[r * c + k] != f.y[r * c + k]);
            done = 1;
        }

    /* forward(reverse(z)) = z */
    ft_real *z = zalloc(f.dim), *z2 = zalloc(f.dim);
    ft_fill_normal(z, f.dim, 1.0, 43);
    memcpy(z2, z, f.dim * sizeof *z2);
    masked_reverse(z2, NULL, &f.acts2, &f.wk, f.xb, &f.p, &f.d, m);
    masked_forward(z2, ld, &f.acts, &f.wk, f.xb, &f.p, NULL, &f.d, m);
    ft_assert_close(z2, z, f.dim, RT_TOL, 0.0);
    free(z);
    free(z2);
    free(xp);
    free(yp);
    free(x2);
    mfx_free(&f);
}

static void test_round_trip(void **s)
{
    (void)s;
    for (int m = 0; m < 4; m++) {
        check_round_trip((enum mask_kind)m, COUPLING_AFFINE, SCALE_SIGMOID2, 4, 4, 4);
        check_round_trip((enum mask_kind)m, COUPLING_AFFINE, SCALE_EXP, 4, 4, 2);
        check_round_trip((enum mask_kind)m, COUPLING_ADDITIVE, SCALE_SIGMOID2, 4, 4, 2);
    }
    /* odd width, and one channel for the checkerboards */
    check_round_trip(MASK_CHECKER0, COUPLING_AFFINE, SCALE_SIGMOID2, 2, 3, 2);
    check_round_trip(MASK_CHECKER1, COUPLING_AFFINE, SCALE_SIGMOID2, 4, 4, 1);
    check_round_trip(MASK_CHANNEL_SECOND, COUPLING_AFFINE, SCALE_SIGMOID2, 3, 5, 6);
}

/* Init constant: zero last layer, s = σ(2) on every transformed element ------------- */

static void test_init_constant(void **s)
{
    (void)s;
    for (int m = 0; m < 4; m++) {
        struct mfx f;
        mfx_init(&f, 2, 4, 6, 2, 8, COUPLING_AFFINE, SCALE_SIGMOID2, (enum mask_kind)m);
        ft_fill_normal(f.p.w1, f.nt[0], 0.05, 61);
        ft_fill_normal(f.p.w2, f.nt[3], 0.05, 62);
        double ld[2] = { 0, 0 }, want[2];
        fwd(&f, f.y, f.x, ld);
        want[0] = want[1] = (double)(f.dim / 2 / 2) * LN_SIGMOID2;   /* 24 of 48 per example */
        print_message("init %s: log-det %.10f (want %.10f)\n", MASK_NAME[m], ld[0], want[0]);
        ft_assert_close_d(ld, want, 2, 1e-5, 1e-12);
        ft_real *yw = zalloc(f.dim);
        for (size_t r = 0; r < f.rows; r++)
            for (size_t k = 0; k < f.d.c; k++) {
                double v = f.x[r * f.d.c + k];
                yw[r * f.d.c + k] = (ft_real)(copied(&f, r, k) ? v : v / (1.0 + exp(-2.0)));
            }
        ft_assert_close(f.y, yw, f.dim, RT_TOL, 0.0);
        free(yw);
        mfx_free(&f);
    }
}

#ifdef FT_REAL_DOUBLE
/* Brute-force log-det (§13.2), batch 1 --------------------------------------------- */

static void mk_map(ft_real *y, const ft_real *x, void *ctx)
{
    struct mfx *f = ctx;
    double ld[1] = { 0.0 };
    fwd(f, y, x, ld);
}

static void check_logdet(enum mask_kind m, enum coupling_kind kind, enum scale_fn scale,
                         size_t h, size_t w, size_t c)
{
    struct mfx f;
    mfx_init(&f, 1, h, w, c, 6, kind, scale, m);
    randomise(&f);
    double ld[1] = { 0.0 }, brute[1];
    fwd(&f, f.y, f.x, ld);
    brute[0] = ft_brute_logdet(mk_map, &f, f.x, f.dim, 1e-6);
    print_message("log-det %s %s %zux%zux%zu: %.10f, brute force %.10f\n", MASK_NAME[m],
                  kind_name(&f.d), h, w, c, ld[0], brute[0]);
    /* spec bound 1e-4; a double build agrees to ~1e-8 */
    ft_assert_close_d(ld, brute, 1, 0.0, 1e-6);
    mfx_free(&f);
}

static void test_logdet(void **s)
{
    (void)s;
    for (int m = 0; m < 4; m++) {
        check_logdet((enum mask_kind)m, COUPLING_AFFINE, SCALE_SIGMOID2, 4, 4, 2);
        check_logdet((enum mask_kind)m, COUPLING_AFFINE, SCALE_EXP, 4, 4, 2);
        check_logdet((enum mask_kind)m, COUPLING_ADDITIVE, SCALE_SIGMOID2, 4, 4, 2);
    }
    check_logdet(MASK_CHECKER1, COUPLING_AFFINE, SCALE_SIGMOID2, 3, 3, 3);
}

/* Gradients (§13.3), batch 2: loss = Σ r⊙y + Σ_n γ_n·logdet_n ---------------------- */

static double mk_loss(void *ctx)
{
    struct mfx *f = ctx;
    double ld[2] = { 0.0, 0.0 }, s = 0.0;
    fwd(f, f->y, f->x, ld);
    for (size_t i = 0; i < f->dim; i++)
        s += (double)f->r[i] * f->y[i];
    for (size_t n = 0; n < f->d.n; n++)
        s += f->gamma[n] * ld[n];
    return s;
}

#define OFF 0.25   /* grads accumulate: start here, subtract afterwards */

static const char *const TNAME[NT] = { "w1", "an1_b", "an1_logs", "w2", "an2_b",
                                       "an2_logs", "w3", "b3", "logs3" };

static void check_grad(enum mask_kind m, enum coupling_kind kind, enum scale_fn scale)
{
    struct mfx f;
    mfx_init(&f, 2, 4, 4, 2, 6, kind, scale, m);
    randomise(&f);
    print_message("gradients %s %s\n", MASK_NAME[m], kind_name(&f.d));
    fwd(&f, f.y, f.x, f.ld);
    memcpy(f.dy, f.r, f.dim * sizeof *f.dy);
    size_t tot = (size_t)(f.gt[NT - 1] + f.nt[NT - 1] - f.gbuf);
    for (size_t i = 0; i < tot; i++)
        f.gbuf[i] = OFF;
    masked_backward(f.dy, &f.g, &f.wk, f.xb, f.dxb, f.y, &f.acts, &f.p, f.gamma, &f.d, m);
    for (size_t i = 0; i < tot; i++)
        f.gbuf[i] -= OFF;
    for (size_t t = NT; t-- > 0;)
        ft_check_grad_impl(mk_loss, &f, f.pt[t], f.gt[t], f.nt[t], 48, 1e-4, 1e-8,
                           TNAME[t], __FILE__, __LINE__);
    ft_check_grad(mk_loss, &f, f.x, f.dy, f.dim, f.dim);
    /* NN outputs at copied pixels are unused (§8): their gradient (dh, scaled
     * in place by the zero conv's backward) must be exactly 0 */
    if (masked_is_checker(m))
        for (size_t r = 0; r < f.rows; r++)
            if (copied(&f, r, 0))
                for (size_t o = 0; o < f.nout; o++)
                    if (f.wk.dh[r * f.nout + o] != 0)
                        fail_msg("unused NN output (pixel %zu, %zu) has gradient %g", r, o,
                                 (double)f.wk.dh[r * f.nout + o]);
    mfx_free(&f);
}

static void test_grads(void **s)
{
    (void)s;
    for (int m = 0; m < 4; m++) {
        check_grad((enum mask_kind)m, COUPLING_AFFINE, SCALE_SIGMOID2);
        check_grad((enum mask_kind)m, COUPLING_AFFINE, SCALE_EXP);
        check_grad((enum mask_kind)m, COUPLING_ADDITIVE, SCALE_SIGMOID2);
    }
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_init_constant),
#ifdef FT_REAL_DOUBLE
        cmocka_unit_test(test_logdet),
        cmocka_unit_test(test_grads),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
