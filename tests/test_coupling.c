/* Tests of the coupling layers (glow-model.md §7, §13):
 *   NN: a1 = relu(an1(conv3x3_edge(z1; W1))), a2 = relu(an2(a1·W2)),
 *       h = (conv3x3_edge(a2; W3) + b3)·e^{3·logs3}
 *   affine y2 = (z2 + t)·s, t = h[0::2], s = σ(h[1::2] + 2) or e^{h[1::2]}; additive y2 = z2 + h
 * round trips in place (acts refilled identically), log-det vs brute force and
 * every gradient (double), the init constant (H·W·C/2)·ln σ(2), and DDI in nn_forward. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "actnorm.h"
#include "conv2d.h"
#include "coupling.h"
#include "ft_test.h"

#ifdef FT_REAL_DOUBLE
static const double RT_TOL = 1e-12;
#else
static const double RT_TOL = 1e-5;     /* glow-model.md §13.1, float32 */
#endif
static const double LN_SIGMOID2 = -0.12692801104297263;   /* ln σ(2), §13.4 */

enum { NT = 9 };   /* w1, an1_b, an1_logs, w2, an2_b, an2_logs, w3, b3, logs3 */

struct cfx {
    struct coupling_dims d;
    size_t cin, nout, rows, dim, nt[NT];
    ft_real *pbuf, *gbuf, *pt[NT], *gt[NT];
    struct nn_tensors p, g;
    struct coupling_acts acts, acts2;
    struct coupling_work wk;
    ft_real *x, *y, *r, *dy;
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
    t->w1 = v[0];
    t->an1_b = v[1];
    t->an1_logs = v[2];
    t->w2 = v[3];
    t->an2_b = v[4];
    t->an2_logs = v[5];
    t->w3 = v[6];
    t->b3 = v[7];
    t->logs3 = v[8];
}

static void cfx_init(struct cfx *f, size_t n, size_t h, size_t w, size_t c, size_t width,
                     enum coupling_kind kind, enum scale_fn scale)
{
    memset(f, 0, sizeof *f);
    f->d = (struct coupling_dims){ .n = n, .h = h, .w = w, .c = c, .width = width,
                                   .kind = kind, .scale = scale };
    f->cin = c / 2;
    f->nout = coupling_nout(&f->d);
    assert_int_equal(f->nout, kind == COUPLING_AFFINE ? c : c / 2);
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
    f->acts.a1 = zalloc(f->rows * width);
    f->acts.a2 = zalloc(f->rows * width);
    f->acts.h = zalloc(f->rows * f->nout);
    f->acts2.a1 = zalloc(f->rows * width);
    f->acts2.a2 = zalloc(f->rows * width);
    f->acts2.h = zalloc(f->rows * f->nout);
    size_t ncols = coupling_cols_size(&f->d);
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
    f->gamma = calloc(n, sizeof *f->gamma);
    f->ld = calloc(n, sizeof *f->ld);
    assert_non_null(f->gamma);
    assert_non_null(f->ld);
    ft_fill_normal(f->x, f->dim, 1.0, 41);
    ft_fill_normal(f->r, f->dim, 1.0, 42);
    for (size_t i = 0; i < n; i++)
        f->gamma[i] = 0.8 - 1.7 * (double)i;
}

static void cfx_free(struct cfx *f)
{
    free(f->pbuf);
    free(f->gbuf);
    free(f->acts.a1);
    free(f->acts.a2);
    free(f->acts.h);
    free(f->acts2.a1);
    free(f->acts2.a2);
    free(f->acts2.h);
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
    free(f->gamma);
    free(f->ld);
}

/* Away from init (glow-model.md §13): zero layers N(0, 0.1²), actnorm logs ≠ 0,
 * W1, W2 N(0, 0.2²). */
static void randomise(struct cfx *f)
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

/* Paper init: W1, W2 N(0, 0.05²), zero last layer; actnorms at b = 0, logs = 0. */
static void paper_init(struct cfx *f)
{
    memset(f->pbuf, 0, (f->pt[NT - 1] + f->nt[NT - 1] - f->pbuf) * sizeof *f->pbuf);
    ft_fill_normal(f->p.w1, f->nt[0], 0.05, 61);
    ft_fill_normal(f->p.w2, f->nt[3], 0.05, 62);
}

static const char *kind_name(const struct coupling_dims *d)
{
    if (d->kind == COUPLING_ADDITIVE)
        return "additive";
    return d->scale == SCALE_EXP ? "affine/exp" : "affine/sigmoid2";
}

/* Round trip -------------------------------------------------------------------- */

static void check_round_trip(enum coupling_kind kind, enum scale_fn scale)
{
    struct cfx f;
    cfx_init(&f, 2, 4, 4, 4, 8, kind, scale);
    randomise(&f);
    print_message("round trip %s\n", kind_name(&f.d));
    size_t width = f.d.width;
    double ld[2] = { 0.5, -0.5 }, ld2[2];

    memcpy(f.y, f.x, f.dim * sizeof *f.y);
    coupling_forward(f.y, ld, &f.acts, &f.wk, &f.p, NULL, &f.d);
    memcpy(ld2, ld, sizeof ld);
    ft_real *x2 = zalloc(f.dim);
    memcpy(x2, f.y, f.dim * sizeof *x2);
    coupling_reverse(x2, ld2, &f.acts2, &f.wk, &f.p, &f.d);
    ft_assert_close(x2, f.x, f.dim, RT_TOL, 0.0);
    double ld0[2] = { 0.5, -0.5 };
    ft_assert_close_d(ld2, ld0, 2, 0.0, 1e-5);       /* forward adds, reverse subtracts */
    /* reverse refills acts exactly as forward did */
    ft_assert_close(f.acts2.a1, f.acts.a1, f.rows * width, 0.0, 0.0);
    ft_assert_close(f.acts2.a2, f.acts.a2, f.rows * width, 0.0, 0.0);
    ft_assert_close(f.acts2.h, f.acts.h, f.rows * f.nout, 0.0, 0.0);
    /* z1 passes through unchanged */
    for (size_t p = 0; p < f.rows; p++)
        for (size_t k = 0; k < f.cin; k++)
            if (f.y[p * f.d.c + k] != f.x[p * f.d.c + k]) {
                print_error("z1 changed at pixel %zu channel %zu: %g -> %g\n", p, k,
                            (double)f.x[p * f.d.c + k], (double)f.y[p * f.d.c + k]);
                fail();
            }
    if (kind == COUPLING_ADDITIVE) {
        double z[2] = { 0.5, -0.5 };
        ft_assert_close_d(ld, z, 2, 0.0, 0.0);        /* additive: log-det 0 */
    }

    /* forward(reverse(z)) = z */
    ft_real *z = zalloc(f.dim), *z2 = zalloc(f.dim);
    ft_fill_normal(z, f.dim, 1.0, 43);
    memcpy(z2, z, f.dim * sizeof *z2);
    coupling_reverse(z2, NULL, &f.acts2, &f.wk, &f.p, &f.d);
    coupling_forward(z2, ld, &f.acts, &f.wk, &f.p, NULL, &f.d);
    ft_assert_close(z2, z, f.dim, RT_TOL, 0.0);
    free(z);
    free(z2);
    free(x2);
    cfx_free(&f);
}

static void test_round_trip_sigmoid2(void **s) { (void)s; check_round_trip(COUPLING_AFFINE, SCALE_SIGMOID2); }
static void test_round_trip_exp(void **s) { (void)s; check_round_trip(COUPLING_AFFINE, SCALE_EXP); }
static void test_round_trip_additive(void **s) { (void)s; check_round_trip(COUPLING_ADDITIVE, SCALE_SIGMOID2); }

/* Init constant (§13.4) ------------------------------------------------------------ */

static void check_init_constant(size_t h, size_t w, size_t c, enum coupling_kind kind,
                                enum scale_fn scale)
{
    struct cfx f;
    cfx_init(&f, 2, h, w, c, 8, kind, scale);
    paper_init(&f);
    print_message("init constant %s %zux%zux%zu\n", kind_name(&f.d), h, w, c);
    double ld[2] = { 0.0, 0.0 }, want[2];
    memcpy(f.y, f.x, f.dim * sizeof *f.y);
    coupling_forward(f.y, ld, &f.acts, &f.wk, &f.p, NULL, &f.d);
    int sig = kind == COUPLING_AFFINE && scale == SCALE_SIGMOID2;
    want[0] = want[1] = sig ? (double)(h * w * c / 2) * LN_SIGMOID2 : 0.0;
    ft_assert_close_d(ld, want, 2, 1e-5, 1e-12);
    /* y1 = z1, y2 = z2·σ(2) (sigmoid2) or z2 */
    ft_real *yw = zalloc(f.dim);
    double s2 = sig ? 1.0 / (1.0 + exp(-2.0)) : 1.0;
    for (size_t p = 0; p < f.rows; p++)
        for (size_t k = 0; k < c; k++)
            yw[p * c + k] = (ft_real)(k < c / 2 ? f.x[p * c + k] : s2 * f.x[p * c + k]);
    ft_assert_close(f.y, yw, f.dim, RT_TOL, 0.0);
    free(yw);
    cfx_free(&f);
}

static void test_init_constant(void **s)
{
    (void)s;
    check_init_constant(4, 4, 4, COUPLING_AFFINE, SCALE_SIGMOID2);     /* 32·ln σ(2) */
    check_init_constant(8, 8, 12, COUPLING_AFFINE, SCALE_SIGMOID2);    /* 384·ln σ(2) */
    check_init_constant(4, 4, 4, COUPLING_AFFINE, SCALE_EXP);
    check_init_constant(4, 4, 4, COUPLING_ADDITIVE, SCALE_SIGMOID2);
}

/* DDI through nn_forward (§5) -------------------------------------------------------- */

struct fake {
    int calls;
};

static void allreduce_double(double *buf, size_t len, void *ctx)
{
    struct fake *fk = ctx;
    fk->calls++;
    for (size_t i = 0; i < len; i++)
        buf[i] *= 2.0;
}

/* pre (rows, width) → (pre + b)·e^{3 logs}: per-channel mean 0, var 1; and
 * act = relu of it. */
static void check_an_output(const char *what, ft_real *pre, const ft_real *act,
                            const ft_real *b, const ft_real *logs, size_t rows, size_t width)
{
    ft_real *relu = zalloc(rows * width);
    for (size_t k = 0; k < width; k++) {
        double s1 = 0.0, s2 = 0.0, sr = 0.0, sr2 = 0.0;
        for (size_t r = 0; r < rows; r++) {
            double v = pre[r * width + k];
            sr += v;
            sr2 += v * v;
        }
        double raw_sd = sqrt(fmax(sr2 / rows - (sr / rows) * (sr / rows), 0.0));
        for (size_t r = 0; r < rows; r++) {
            double v = ((double)pre[r * width + k] + b[k]) * exp(3.0 * (double)logs[k]);
            pre[r * width + k] = (ft_real)v;
            relu[r * width + k] = (ft_real)(v > 0 ? v : 0);
            s1 += v;
        }
        double m = s1 / rows;
        for (size_t r = 0; r < rows; r++)
            s2 += (pre[r * width + k] - m) * (pre[r * width + k] - m);
        double var = s2 / rows;
        if (raw_sd >= 0.02 && !(fabs(m) <= 1e-4 && fabs(var - 1.0) <= 1e-4)) {
            print_error("%s channel %zu after DDI: mean %.3g (want 0), var %.8g (want 1), "
                        "tol 1e-4; b %.8g logs %.8g, raw sd %.4g\n",
                        what, k, m, var, (double)b[k], (double)logs[k], raw_sd);
            fail();
        }
    }
    ft_assert_close(act, relu, rows * width, RT_TOL, 0.0);
    free(relu);
}

static void run_ddi(struct cfx *f, const struct ddi *ddi)
{
    paper_init(f);
    for (size_t k = 0; k < f->d.width; k++) {   /* DDI must overwrite these */
        f->p.an1_b[k] = f->p.an2_b[k] = (ft_real)3;
        f->p.an1_logs[k] = f->p.an2_logs[k] = (ft_real)-1;
    }
    nn_forward(&f->acts, &f->wk, f->x, f->d.c, &f->p, ddi, &f->d, f->cin, f->nout);
}

static void test_nn_ddi(void **s)
{
    (void)s;
    struct cfx f;
    cfx_init(&f, 4, 4, 4, 4, 8, COUPLING_AFFINE, SCALE_SIGMOID2);
    size_t width = f.d.width, rows = f.rows;
    /* z1 with a non-zero mean and scale, so DDI has something to undo */
    for (size_t i = 0; i < f.dim; i++)
        f.x[i] = (ft_real)(0.7 + 2.0 * f.x[i]);
    struct ddi one = { NULL, NULL };
    run_ddi(&f, &one);

    ft_real *w1c = zalloc(f.nt[0]), *w2c = zalloc(f.nt[3]);
    ft_real *pre = zalloc(rows * width);
    memcpy(w1c, f.p.w1, f.nt[0] * sizeof *w1c);
    memcpy(w2c, f.p.w2, f.nt[3] * sizeof *w2c);
    paper_init(&f);    /* same W1, W2 as the pass used */
    ft_assert_close(f.p.w1, w1c, f.nt[0], 0.0, 0.0);
    run_ddi(&f, &one);
    ft_assert_close(f.p.w1, w1c, f.nt[0], 0.0, 0.0);   /* DDI leaves W1, W2 alone */
    ft_assert_close(f.p.w2, w2c, f.nt[3], 0.0, 0.0);

    conv3x3_forward(pre, f.wk.cols, f.x, f.d.c, f.p.w1, f.d.n, f.d.h, f.d.w, f.cin, width);
    check_an_output("actnorm1", pre, f.acts.a1, f.p.an1_b, f.p.an1_logs, rows, width);
    conv1x1_forward(pre, f.acts.a1, f.p.w2, rows, width, width);
    check_an_output("actnorm2", pre, f.acts.a2, f.p.an2_b, f.p.an2_logs, rows, width);
    /* zero last layer: h = 0 */
    ft_real *hz = zalloc(rows * f.nout);
    ft_assert_close(f.acts.h, hz, rows * f.nout, 0.0, 0.0);

    /* two identical ranks: the same parameters */
    ft_real an[4][8];
    memcpy(an[0], f.p.an1_b, width * sizeof **an);
    memcpy(an[1], f.p.an1_logs, width * sizeof **an);
    memcpy(an[2], f.p.an2_b, width * sizeof **an);
    memcpy(an[3], f.p.an2_logs, width * sizeof **an);
    struct fake fk = { 0 };
    struct ddi two = { allreduce_double, &fk };
    run_ddi(&f, &two);
    if (fk.calls < 2) {
        print_error("nn_forward DDI made %d allreduce calls, want ≥ 2 (one per actnorm)\n", fk.calls);
        fail();
    }
    ft_assert_close(f.p.an1_b, an[0], width, 1e-6, 0.0);
    ft_assert_close(f.p.an1_logs, an[1], width, 1e-6, 0.0);
    ft_assert_close(f.p.an2_b, an[2], width, 1e-6, 0.0);
    ft_assert_close(f.p.an2_logs, an[3], width, 1e-6, 0.0);

    /* coupling_forward passes ddi on to its NN: the same init */
    paper_init(&f);
    memcpy(f.y, f.x, f.dim * sizeof *f.y);
    coupling_forward(f.y, f.ld, &f.acts, &f.wk, &f.p, &one, &f.d);
    ft_assert_close(f.p.an1_b, an[0], width, 1e-6, 0.0);
    ft_assert_close(f.p.an1_logs, an[1], width, 1e-6, 0.0);
    ft_assert_close(f.p.an2_b, an[2], width, 1e-6, 0.0);
    ft_assert_close(f.p.an2_logs, an[3], width, 1e-6, 0.0);

    free(hz);
    free(pre);
    free(w1c);
    free(w2c);
    cfx_free(&f);
}

#ifdef FT_REAL_DOUBLE
/* Brute-force log-det (§13.2), batch 1, 4x4x4 ------------------------------------- */

static void cpl_map(ft_real *y, const ft_real *x, void *ctx)
{
    struct cfx *f = ctx;
    double ld[1] = { 0.0 };
    memcpy(y, x, f->dim * sizeof *y);
    coupling_forward(y, ld, &f->acts, &f->wk, &f->p, NULL, &f->d);
}

static void check_logdet(enum coupling_kind kind, enum scale_fn scale)
{
    struct cfx f;
    cfx_init(&f, 1, 4, 4, 4, 8, kind, scale);
    randomise(&f);
    print_message("brute-force log-det %s\n", kind_name(&f.d));
    double ld[1] = { 0.0 }, brute[1];
    memcpy(f.y, f.x, f.dim * sizeof *f.y);
    coupling_forward(f.y, ld, &f.acts, &f.wk, &f.p, NULL, &f.d);
    brute[0] = ft_brute_logdet(cpl_map, &f, f.x, f.dim, 1e-6);
    /* spec bound 1e-4; a double build agrees to ~1e-8 */
    ft_assert_close_d(ld, brute, 1, 0.0, 1e-6);
    cfx_free(&f);
}

static void test_logdet_sigmoid2(void **s) { (void)s; check_logdet(COUPLING_AFFINE, SCALE_SIGMOID2); }
static void test_logdet_exp(void **s) { (void)s; check_logdet(COUPLING_AFFINE, SCALE_EXP); }
static void test_logdet_additive(void **s) { (void)s; check_logdet(COUPLING_ADDITIVE, SCALE_SIGMOID2); }

/* Gradients (§13.3), batch 2: loss = Σ r⊙y + Σ_n γ_n·logdet_n ---------------------- */

static double cpl_loss(void *ctx)
{
    struct cfx *f = ctx;
    double ld[2] = { 0.0, 0.0 }, s = 0.0;
    memcpy(f->y, f->x, f->dim * sizeof *f->y);
    coupling_forward(f->y, ld, &f->acts, &f->wk, &f->p, NULL, &f->d);
    for (size_t i = 0; i < f->dim; i++)
        s += (double)f->r[i] * f->y[i];
    for (size_t n = 0; n < f->d.n; n++)
        s += f->gamma[n] * ld[n];
    return s;
}

#define OFF 0.25   /* grads accumulate: start here, subtract afterwards */

static const char *const TNAME[NT] = { "w1", "an1_b", "an1_logs", "w2", "an2_b",
                                       "an2_logs", "w3", "b3", "logs3" };

static void check_grad(enum coupling_kind kind, enum scale_fn scale)
{
    struct cfx f;
    cfx_init(&f, 2, 4, 4, 4, 8, kind, scale);
    randomise(&f);
    print_message("gradients %s\n", kind_name(&f.d));
    memcpy(f.y, f.x, f.dim * sizeof *f.y);
    coupling_forward(f.y, f.ld, &f.acts, &f.wk, &f.p, NULL, &f.d);
    memcpy(f.dy, f.r, f.dim * sizeof *f.dy);
    size_t tot = (size_t)(f.gt[NT - 1] + f.nt[NT - 1] - f.gbuf);
    for (size_t i = 0; i < tot; i++)
        f.gbuf[i] = OFF;
    coupling_backward(f.dy, &f.g, &f.wk, f.y, &f.acts, &f.p, f.gamma, &f.d);
    for (size_t i = 0; i < tot; i++)
        f.gbuf[i] -= OFF;
    /* from the output back to the input, so the first failure locates a bug */
    for (size_t t = NT; t-- > 0;) {
        print_message("  %s (%zu elements)\n", TNAME[t], f.nt[t]);
        ft_check_grad_impl(cpl_loss, &f, f.pt[t], f.gt[t], f.nt[t], 48, 1e-4, 1e-8,
                           TNAME[t], __FILE__, __LINE__);
    }
    ft_check_grad(cpl_loss, &f, f.x, f.dy, f.dim, f.dim);
    cfx_free(&f);
}

static void test_grad_sigmoid2(void **s) { (void)s; check_grad(COUPLING_AFFINE, SCALE_SIGMOID2); }
static void test_grad_exp(void **s) { (void)s; check_grad(COUPLING_AFFINE, SCALE_EXP); }
static void test_grad_additive(void **s) { (void)s; check_grad(COUPLING_ADDITIVE, SCALE_SIGMOID2); }
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_sigmoid2),
        cmocka_unit_test(test_round_trip_exp),
        cmocka_unit_test(test_round_trip_additive),
        cmocka_unit_test(test_init_constant),
        cmocka_unit_test(test_nn_ddi),
#ifdef FT_REAL_DOUBLE
        cmocka_unit_test(test_logdet_sigmoid2),
        cmocka_unit_test(test_logdet_exp),
        cmocka_unit_test(test_logdet_additive),
        cmocka_unit_test(test_grad_sigmoid2),
        cmocka_unit_test(test_grad_exp),
        cmocka_unit_test(test_grad_additive),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
