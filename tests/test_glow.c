/* Whole-model tests (glow-model.md §12, §13): inverse, brute-force log-det and
 * gradient checks of every tensor and the input, the init constant, DDI, the
 * parameter-count formula, bad shapes, stored vs reversible backward, and the
 * golden NLL fixture from the independent NumPy reference (tools/reference). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <hdf5.h>

#include "ft_test.h"
#include "glow.h"
#include "rng.h"

static struct glow_spec tiny_spec(size_t h, size_t w, size_t c, size_t levels, size_t depth,
                                  size_t hidden, enum coupling_kind ck, enum scale_fn sf,
                                  enum perm_kind pk, int learntop)
{
    return (struct glow_spec){ h, w, c, levels, depth, hidden, ck, sf, pk, learntop, 8,
                               ARCH_GLOW, 0, 0, 0.0 };
}

/* ---------- inverse ---------- */

static void check_round_trip(const struct glow_spec *s, int reversible)
{
    struct glow g;
    struct ft_err err;
    const size_t n = 3;
    assert_int_equal(glow_init(&g, s, n, reversible, &err), FT_OK);
    /* sd 0.05: random couplings well away from the identity. With sd 0.1 the
     * random 12-step flow is so ill-conditioned that float32 rounding alone
     * grows to 4.7e-5 (measured); the float64 build holds it to 1e-12. */
    ft_glow_randomize(&g, 11, 0.05);
    ft_real *x = calloc(n * g.dim, sizeof *x), *x2 = calloc(n * g.dim, sizeof *x2);
    ft_real *eps = calloc(n * g.dim, sizeof *eps);
    ft_fill_input(x, n * g.dim, 5);
    /* Random non-zero couplings, with the actnorms then set by DDI as in training
     * (random actnorm gains compound over 12 steps far beyond any trained model). */
    struct ddi ddi = { NULL, NULL };
    glow_forward(&g, x, n, &ddi);
    glow_forward(&g, x, n, NULL);
    memcpy(eps, g.eps, n * g.dim * sizeof *eps);
    glow_reverse(&g, x2, eps, n, 1.0);
    ft_assert_close(x2, x, n * g.dim, 1e-5, 0.0);
    /* and forward(reverse(ε)) = ε */
    glow_forward(&g, x2, n, NULL);
    ft_assert_close(g.eps, eps, n * g.dim, 1e-5, 0.0);
    free(x);
    free(x2);
    free(eps);
    glow_free(&g);
}

static void test_round_trip(void **state)
{
    (void)state;
    struct glow_spec s = tiny_spec(16, 16, 2, 3, 4, 16, COUPLING_AFFINE, SCALE_SIGMOID2,
                                   PERM_INVCONV, 1);
    check_round_trip(&s, 0);
    check_round_trip(&s, 1);
    s = tiny_spec(16, 8, 3, 3, 4, 12, COUPLING_ADDITIVE, SCALE_SIGMOID2, PERM_INVCONV_LU, 1);
    check_round_trip(&s, 0);
    s = tiny_spec(8, 8, 1, 2, 4, 8, COUPLING_AFFINE, SCALE_EXP, PERM_SHUFFLE, 0);
    check_round_trip(&s, 0);
    s = tiny_spec(8, 8, 1, 2, 3, 8, COUPLING_AFFINE, SCALE_SIGMOID2, PERM_REVERSE, 1);
    check_round_trip(&s, 1);
}

/* ---------- init constant, DDI, counts, bad specs ---------- */

static void test_init_constant(void **state)
{
    (void)state;
    const double ln_sig2 = -0.12692801104297263;
    struct glow_spec s = tiny_spec(32, 32, 1, 3, 8, 16, COUPLING_AFFINE, SCALE_SIGMOID2,
                                   PERM_INVCONV, 1);
    struct glow g;
    struct ft_err err;
    assert_int_equal(glow_init(&g, &s, 2, 0, &err), FT_OK);
    glow_init_params(&g, 3);
    ft_real *x = calloc(2 * g.dim, sizeof *x);
    ft_fill_input(x, 2 * g.dim, 1);
    glow_forward(&g, x, 2, NULL);
    /* 7168 transformed elements (glow-model.md §13.4): −909.820 nats; invconv
     * adds ln|det Q| = 0 up to rounding. */
    double want = 7168 * ln_sig2;
    for (size_t e = 0; e < 2; e++) {
        printf("init log-det example %zu: %.6f (want %.6f)\n", e, g.logdet[e], want);
        assert_true(fabs(g.logdet[e] - want) < 1e-5 * fabs(want));
    }
    free(x);
    glow_free(&g);
}

static void test_ddi(void **state)
{
    (void)state;
    struct glow_spec s = tiny_spec(16, 16, 1, 2, 3, 16, COUPLING_AFFINE, SCALE_SIGMOID2,
                                   PERM_INVCONV, 1);
    struct glow g;
    struct ft_err err;
    const size_t n = 16;
    assert_int_equal(glow_init(&g, &s, n, 0, &err), FT_OK);
    glow_init_params(&g, 4);
    ft_real *x = calloc(n * g.dim, sizeof *x);
    ft_fill_input(x, n * g.dim, 2);
    struct ddi ddi = { NULL, NULL };
    glow_forward(&g, x, n, &ddi);
    /* The actnorm outputs of this forward were computed with the new values. */
    for (size_t i = 0; i < s.levels; i++)
        for (size_t k = 0; k < s.depth; k++) {
            size_t h, w, c;
            glow_level_shape(&g, i, &h, &w, &c);
            const ft_real *y = glow_actnorm_output(&g, i, k);
            size_t rows = n * h * w;
            for (size_t ch = 0; ch < c; ch++) {
                double m = 0, v = 0;
                for (size_t r = 0; r < rows; r++)
                    m += y[r * c + ch];
                m /= rows;
                for (size_t r = 0; r < rows; r++)
                    v += (y[r * c + ch] - m) * (y[r * c + ch] - m);
                v /= rows;
                if (fabs(m) > 1e-4 || fabs(v - 1) > 1e-4)
                    fail_msg("level %zu step %zu channel %zu: mean %g var %g", i, k, ch, m, v);
            }
        }
    free(x);
    glow_free(&g);
}

static size_t formula_count(const struct glow_spec *s)
{
    size_t total = 0, w = s->hidden;
    for (size_t i = 0; i < s->levels; i++) {
        size_t c = 4 * s->channels << i;
        size_t nout = s->coupling == COUPLING_AFFINE ? c : c / 2;
        size_t perm = (s->perm == PERM_SHUFFLE || s->perm == PERM_REVERSE) ? 0 : c * c;
        size_t step = 2 * c + perm + 9 * (c / 2 + 1) * w + 2 * w + w * w + 2 * w
                      + 9 * (w + 1) * nout + 2 * nout;
        total += s->depth * step;
        if (i + 1 < s->levels)
            total += 9 * (c / 2 + 1) * c + 2 * c;
        else if (s->learntop)
            total += 9 * (2 * c + 1) * 2 * c + 4 * c;
    }
    return total;
}

static void test_param_count(void **state)
{
    (void)state;
    struct { struct glow_spec s; size_t want; } cases[] = {
        { tiny_spec(32, 32, 3, 3, 32, 512, COUPLING_AFFINE, SCALE_SIGMOID2, PERM_INVCONV, 1), 44603604 },
        { tiny_spec(32, 32, 1, 3, 8, 128, COUPLING_AFFINE, SCALE_SIGMOID2, PERM_INVCONV, 1), 835884 },
        { tiny_spec(32, 32, 1, 2, 8, 128, COUPLING_AFFINE, SCALE_SIGMOID2, PERM_INVCONV, 1), 459140 },
        { tiny_spec(32, 32, 1, 3, 16, 256, COUPLING_AFFINE, SCALE_SIGMOID2, PERM_INVCONV, 1), 4875020 },
        { tiny_spec(32, 32, 1, 3, 32, 512, COUPLING_AFFINE, SCALE_SIGMOID2, PERM_INVCONV, 1), 32030412 },
        { tiny_spec(32, 32, 3, 3, 48, 512, COUPLING_AFFINE, SCALE_SIGMOID2, PERM_INVCONV, 1), 66861588 },
        { tiny_spec(64, 64, 3, 4, 48, 512, COUPLING_AFFINE, SCALE_SIGMOID2, PERM_INVCONV, 1), 112377540 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t got = glow_param_count(&cases[i].s);
        printf("params L%zu K%zu w%zu C%zu: %zu (spec %zu)\n", cases[i].s.levels,
               cases[i].s.depth, cases[i].s.hidden, cases[i].s.channels, got, cases[i].want);
        assert_int_equal(got, cases[i].want);
        assert_int_equal(formula_count(&cases[i].s), cases[i].want);
    }
    /* variants follow the same formula (shuffle drops C², additive halves n_out) */
    struct glow_spec v[] = {
        tiny_spec(16, 16, 2, 2, 3, 8, COUPLING_ADDITIVE, SCALE_SIGMOID2, PERM_INVCONV_LU, 1),
        tiny_spec(16, 16, 2, 2, 3, 8, COUPLING_AFFINE, SCALE_EXP, PERM_SHUFFLE, 0),
        tiny_spec(16, 16, 2, 2, 3, 8, COUPLING_AFFINE, SCALE_SIGMOID2, PERM_REVERSE, 1),
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        assert_int_equal(glow_param_count(&v[i]), formula_count(&v[i]));
}

static void expect_bad(struct glow_spec s, const char *field)
{
    struct glow g;
    struct ft_err err = { "" };
    assert_int_equal(glow_init(&g, &s, 1, 0, &err), FT_ERR_CONFIG);
    printf("rejected: %s\n", err.msg);
    assert_non_null(strstr(err.msg, field));
}

static void test_bad_spec(void **state)
{
    (void)state;
    expect_bad(tiny_spec(28, 32, 1, 3, 2, 8, COUPLING_AFFINE, SCALE_SIGMOID2, PERM_INVCONV, 1),
               "data.height");
    expect_bad(tiny_spec(32, 30, 1, 2, 2, 8, COUPLING_AFFINE, SCALE_SIGMOID2, PERM_INVCONV, 1),
               "data.width");
    expect_bad(tiny_spec(32, 32, 1, 6, 2, 8, COUPLING_AFFINE, SCALE_SIGMOID2, PERM_INVCONV, 1),
               "model.levels");
    expect_bad(tiny_spec(32, 32, 1, 0, 2, 8, COUPLING_AFFINE, SCALE_SIGMOID2, PERM_INVCONV, 1),
               "model.levels");
    expect_bad(tiny_spec(32, 32, 1, 2, 0, 8, COUPLING_AFFINE, SCALE_SIGMOID2, PERM_INVCONV, 1),
               "model.depth");
    struct glow_spec s = tiny_spec(32, 32, 1, 2, 2, 8, COUPLING_AFFINE, SCALE_SIGMOID2,
                                   PERM_INVCONV, 1);
    s.n_bits = 9;
    expect_bad(s, "data.n_bits");
}

/* ---------- stored vs reversible ---------- */

/* Width 16 keeps every step's a1; at width 256 the stored model rebuilds a1 in
 * backward on level 0 (9·(cin+1)·8 = 216 ≤ 256). */
static void check_reversible_matches_stored(size_t width, double sd)
{
    struct glow_spec s = tiny_spec(16, 16, 1, 3, 4, width, COUPLING_AFFINE, SCALE_SIGMOID2,
                                   PERM_INVCONV, 1);
    struct glow a, b;
    struct ft_err err;
    const size_t n = 4;
    assert_int_equal(glow_init(&a, &s, n, 0, &err), FT_OK);
    assert_int_equal(glow_init(&b, &s, n, 1, &err), FT_OK);
    printf("activation arena: stored %zu, reversible %zu elements\n", a.n_acts, b.n_acts);
    assert_true(b.n_acts < a.n_acts);
    ft_glow_randomize(&a, 21, sd);
    memcpy(b.params, a.params, a.n_params * sizeof *a.params);
    ft_real *x = calloc(n * a.dim, sizeof *x);
    ft_fill_input(x, n * a.dim, 3);
    double gamma = -1.0 / (n * a.dim * log(2.0));
    glow_zero_grad(&a);
    glow_zero_grad(&b);
    glow_forward(&a, x, n, NULL);
    glow_backward(&a, gamma);
    glow_forward(&b, x, n, NULL);
    glow_backward(&b, gamma);
    for (size_t e = 0; e < n; e++)
        assert_true(glow_nll(&a, e) == glow_nll(&b, e));
    /* reconstruction error through 12 reversed steps stays far below 1e-4 */
    ft_assert_close(b.grads, a.grads, a.n_params, 1e-4, 0.0);
    ft_assert_close(b.dx, a.dx, n * a.dim, 1e-4, 0.0);
    free(x);
    glow_free(&a);
    glow_free(&b);
}

static void test_reversible_matches_stored(void **state)
{
    (void)state;
    check_reversible_matches_stored(16, 0.1);
    check_reversible_matches_stored(256, 0.025);   /* sd ∝ 1/√width keeps it tame */
}

#ifdef FT_REAL_DOUBLE
/* ---------- brute-force log-det and gradients (float64 build) ---------- */

static void check_model_logdet(const struct glow_spec *s)
{
    struct glow g;
    struct ft_err err;
    assert_int_equal(glow_init(&g, s, 1, 0, &err), FT_OK);
    ft_glow_randomize(&g, 31, 0.1);
    ft_glow_zero_priors(&g);  /* μ = 0, ℓ = 0: ε is the latent z itself */
    ft_real *x = calloc(g.dim, sizeof *x);
    ft_fill_input(x, g.dim, 4);
    double brute = ft_brute_logdet(ft_glow_eps_map, &g, x, g.dim, 1e-6);
    glow_forward(&g, x, 1, NULL);
    printf("model log-det %.10f, brute force %.10f\n", g.logdet[0], brute);
    assert_true(fabs(g.logdet[0] - brute) < 1e-4);
    free(x);
    glow_free(&g);
}

static void test_model_logdet(void **state)
{
    (void)state;
    struct glow_spec s = tiny_spec(4, 4, 2, 2, 2, 6, COUPLING_AFFINE, SCALE_SIGMOID2,
                                   PERM_INVCONV, 1);
    check_model_logdet(&s);
    s = tiny_spec(4, 4, 2, 2, 2, 6, COUPLING_ADDITIVE, SCALE_SIGMOID2, PERM_INVCONV_LU, 1);
    check_model_logdet(&s);
    s = tiny_spec(4, 4, 2, 2, 2, 6, COUPLING_AFFINE, SCALE_EXP, PERM_SHUFFLE, 0);
    check_model_logdet(&s);
    s = tiny_spec(4, 4, 1, 2, 2, 6, COUPLING_AFFINE, SCALE_SIGMOID2, PERM_REVERSE, 1);
    check_model_logdet(&s);
}

struct loss_ctx {
    struct glow *g;
    ft_real *x;
    size_t n;
};

/* Mean bits/dim of the batch: the training loss. */
static double model_loss(void *vctx)
{
    struct loss_ctx *ctx = vctx;
    glow_forward(ctx->g, ctx->x, ctx->n, NULL);
    double s = 0;
    for (size_t e = 0; e < ctx->n; e++)
        s += glow_nll(ctx->g, e);
    return s / ((double)ctx->n * ctx->g->dim * log(2.0));
}

static void check_model_grads(const struct glow_spec *s, int reversible)
{
    struct glow g;
    struct ft_err err;
    const size_t n = 2;
    assert_int_equal(glow_init(&g, s, n, reversible, &err), FT_OK);
    ft_glow_randomize(&g, 41, 0.1);
    ft_real *x = calloc(n * g.dim, sizeof *x), *dx = calloc(n * g.dim, sizeof *dx);
    ft_fill_input(x, n * g.dim, 6);
    struct loss_ctx ctx = { &g, x, n };
    glow_zero_grad(&g);
    model_loss(&ctx);
    glow_backward(&g, -1.0 / (n * g.dim * log(2.0)));
    memcpy(dx, g.dx, n * g.dim * sizeof *dx);
    ft_real *grads = malloc(g.n_params * sizeof *grads);
    memcpy(grads, g.grads, g.n_params * sizeof *grads);
    size_t checked = 0;
    for (size_t i = 0; i < g.n_tensors; i++) {
        const struct glow_tensor *t = &g.tensors[i];
        if (t->kind != TENSOR_PARAM)
            continue;
        ft_check_grad_impl(model_loss, &ctx, g.params + t->offset, grads + t->offset, t->numel,
                           20, 1e-4, 1e-8, t->name, __FILE__, __LINE__);
        checked++;
    }
    ft_check_grad(model_loss, &ctx, x, dx, n * g.dim, 64);
    printf("gradient check: %zu tensors and the input\n", checked);
    free(grads);
    free(x);
    free(dx);
    glow_free(&g);
}

static void test_model_grads(void **state)
{
    (void)state;
    struct glow_spec s = tiny_spec(8, 8, 1, 2, 2, 4, COUPLING_AFFINE, SCALE_SIGMOID2,
                                   PERM_INVCONV, 1);
    check_model_grads(&s, 0);
    check_model_grads(&s, 1);
    s = tiny_spec(8, 8, 2, 2, 2, 4, COUPLING_ADDITIVE, SCALE_SIGMOID2, PERM_INVCONV_LU, 1);
    check_model_grads(&s, 0);
    s = tiny_spec(8, 8, 1, 2, 2, 4, COUPLING_AFFINE, SCALE_EXP, PERM_SHUFFLE, 0);
    check_model_grads(&s, 0);
    s = tiny_spec(8, 8, 1, 2, 2, 4, COUPLING_AFFINE, SCALE_SIGMOID2, PERM_REVERSE, 1);
    check_model_grads(&s, 1);
}
#endif

/* ---------- golden fixture ---------- */

static long attr_long(hid_t grp, const char *name)
{
    long v = 0;
    hid_t a = H5Aopen(grp, name, H5P_DEFAULT);
    assert_true(a >= 0);
    assert_true(H5Aread(a, H5T_NATIVE_LONG, &v) >= 0);
    H5Aclose(a);
    return v;
}

static void attr_str(hid_t grp, const char *name, char *out, size_t cap)
{
    hid_t a = H5Aopen(grp, name, H5P_DEFAULT);
    assert_true(a >= 0);
    hid_t ft = H5Aget_type(a);
    hid_t mt = H5Tcopy(H5T_C_S1);
    if (H5Tis_variable_str(ft) > 0) {
        char *s = NULL;
        H5Tset_size(mt, H5T_VARIABLE);
        assert_true(H5Aread(a, mt, &s) >= 0);
        snprintf(out, cap, "%s", s);
        H5free_memory(s);
    } else {
        size_t sz = H5Tget_size(ft);
        assert_true(sz < cap);
        H5Tset_size(mt, sz + 1);
        memset(out, 0, cap);
        assert_true(H5Aread(a, mt, out) >= 0);
    }
    H5Tclose(mt);
    H5Tclose(ft);
    H5Aclose(a);
}

static void read_ds(hid_t grp, const char *name, hid_t mtype, void *buf, size_t numel)
{
    hid_t d = H5Dopen2(grp, name, H5P_DEFAULT);
    if (d < 0)
        fail_msg("golden.h5: dataset %s missing", name);
    hid_t sp = H5Dget_space(d);
    hssize_t cnt = H5Sget_simple_extent_npoints(sp);
    if ((size_t)cnt != numel)
        fail_msg("golden.h5: %s has %lld elements, model expects %zu", name, (long long)cnt, numel);
    assert_true(H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    H5Sclose(sp);
    H5Dclose(d);
}

static void check_golden_case(hid_t file, const char *case_name)
{
    hid_t grp = H5Gopen2(file, case_name, H5P_DEFAULT);
    assert_true(grp >= 0);
    char coupling[32], scale[32], perm[32];
    attr_str(grp, "coupling", coupling, sizeof coupling);
    attr_str(grp, "scale_fn", scale, sizeof scale);
    attr_str(grp, "permutation", perm, sizeof perm);
    struct glow_spec s = {
        (size_t)attr_long(grp, "height"), (size_t)attr_long(grp, "width"),
        (size_t)attr_long(grp, "channels"), (size_t)attr_long(grp, "levels"),
        (size_t)attr_long(grp, "depth"), (size_t)attr_long(grp, "hidden"),
        strcmp(coupling, "additive") == 0 ? COUPLING_ADDITIVE : COUPLING_AFFINE,
        strcmp(scale, "exp") == 0 ? SCALE_EXP : SCALE_SIGMOID2,
        strcmp(perm, "invconv_lu") == 0 ? PERM_INVCONV_LU
        : strcmp(perm, "shuffle") == 0  ? PERM_SHUFFLE
        : strcmp(perm, "reverse") == 0  ? PERM_REVERSE : PERM_INVCONV,
        (int)attr_long(grp, "learntop"), (int)attr_long(grp, "n_bits"), ARCH_GLOW, 0, 0, 0.0,
    };
    hid_t xd = H5Dopen2(grp, "x", H5P_DEFAULT);
    hid_t xs = H5Dget_space(xd);
    hsize_t dims[4];
    assert_int_equal(H5Sget_simple_extent_dims(xs, dims, NULL), 4);
    H5Sclose(xs);
    H5Dclose(xd);
    size_t n = dims[0];
    struct glow g;
    struct ft_err err;
    assert_int_equal(glow_init(&g, &s, n, 0, &err), FT_OK);
    for (size_t i = 0; i < g.n_tensors; i++) {
        const struct glow_tensor *t = &g.tensors[i];
        char path[128];
        snprintf(path, sizeof path, "params/%s", t->name);
        hid_t mt = t->kind == TENSOR_BUF_I32 ? H5T_NATIVE_INT32
                 : sizeof(ft_real) == 8 ? H5T_NATIVE_DOUBLE : H5T_NATIVE_FLOAT;
        read_ds(grp, path, mt, glow_tensor_data(&g, t), t->numel);
    }
    ft_real *x = calloc(n * g.dim, sizeof *x);
    double *nll = calloc(n, sizeof *nll), *got = calloc(n, sizeof *got);
    read_ds(grp, "x", sizeof(ft_real) == 8 ? H5T_NATIVE_DOUBLE : H5T_NATIVE_FLOAT, x, n * g.dim);
    read_ds(grp, "nll", H5T_NATIVE_DOUBLE, nll, n);
    glow_forward(&g, x, n, NULL);
    for (size_t e = 0; e < n; e++) {
        got[e] = glow_nll(&g, e);
        printf("golden %s example %zu: nll %.8f, reference %.8f\n", case_name, e, got[e], nll[e]);
    }
    ft_assert_close_d(got, nll, n, 1e-5, 0.0);
    free(x);
    free(nll);
    free(got);
    glow_free(&g);
    H5Gclose(grp);
}

static void test_golden(void **state)
{
    (void)state;
    const char *src = getenv("FT_SOURCE_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/data/golden.h5", src ? src : ".");
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0)
        fail_msg("cannot open %s", path);
    const char *cases[] = { "affine", "lu_additive", "exp_shuffle", "reverse_nolt" };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_golden_case(f, cases[i]);
    H5Fclose(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_init_constant),
        cmocka_unit_test(test_ddi),
        cmocka_unit_test(test_param_count),
        cmocka_unit_test(test_bad_spec),
        cmocka_unit_test(test_reversible_matches_stored),
        cmocka_unit_test(test_golden),
#ifdef FT_REAL_DOUBLE
        cmocka_unit_test(test_model_logdet),
        cmocka_unit_test(test_model_grads),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
