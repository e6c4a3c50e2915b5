/* Whole-model tests of the variants (glow-model.md §8, §9, §12, §13): RealNVP
 * (masked couplings, multi-scale order), NICE (additive, reverse permutation,
 * diagonal scaling) and class-conditional Glow with the classifier head pass
 * the oracles of the default model: reverse(forward(x)) = x, brute-force
 * log-det of the whole model, central-difference gradients of every tensor
 * and the input with the loss mean(bits_x + weight_y·bits_y); plus the tensor
 * names and shapes of §12, parameter counts against the formulas below, the
 * init constants, DDI, stored vs reversible, and config errors naming the field.
 *
 * Parameter counts (trainable scalars; w = width, NN(cin, nout) the §7.1 net):
 *   NN(cin, nout) = 9(cin+1)·w + 2w + w² + 2w + 9(w+1)·nout + 2·nout
 *   RealNVP, S scales, C_0 = image channels, C_{s+1} = 2·C_s (a = 2 affine, 1 additive):
 *     per scale s < S−1: 3·(2C_s + NN(C_s, a·C_s))                 checkerboard
 *                      + 3·(8C_s + NN(2C_s, a·2C_s))               channel, at 4C_s
 *                      + 9(2C_s+1)·4C_s + 8C_s                     split prior of 4C_s
 *     last scale:        4·(2C + NN(C, a·C)) + [learntop] 9(2C+1)·2C + 4C,  C = C_{S−1}
 *   NICE (levels 1, C_t = 4·C_0 at H/2 × W/2): K·NN(C_t/2, C_t/2) + (H/2)(W/2)·C_t
 *   ycond: + 2C_t·n_y + 4C_t (prior/y_emb);  weight_y > 0: + C_t·n_y + 2n_y (classifier)
 *   (together §12's P_ycond = 3C_t·n_y + 4C_t + 2n_y). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#ifndef FT_REAL_DOUBLE
#include "config.h"
#endif
#include "ft_test.h"
#include "glow.h"
#include "rng.h"

#define N_CLS 3

static struct glow_spec base_spec(size_t h, size_t w, size_t c, size_t levels, size_t depth,
                                  size_t hidden)
{
    struct glow_spec s;
    memset(&s, 0, sizeof s);
    s.height = h;
    s.width = w;
    s.channels = c;
    s.levels = levels;
    s.depth = depth;
    s.hidden = hidden;
    s.coupling = COUPLING_AFFINE;
    s.scale = SCALE_SIGMOID2;
    s.perm = PERM_INVCONV;
    s.learntop = 1;
    s.n_bits = 8;
    return s;
}

static struct glow_spec realnvp_spec(size_t h, size_t w, size_t c, size_t scales, size_t hidden)
{
    struct glow_spec s = base_spec(h, w, c, scales, 1, hidden);
    s.arch = ARCH_REALNVP;
    return s;
}

static struct glow_spec nice_spec(size_t h, size_t w, size_t c, size_t depth, size_t hidden)
{
    struct glow_spec s = base_spec(h, w, c, 1, depth, hidden);
    s.arch = ARCH_NICE;
    s.coupling = COUPLING_ADDITIVE;
    s.learntop = 0;
    return s;
}

static struct glow_spec ycond_spec(size_t h, size_t w, size_t c, double weight_y)
{
    struct glow_spec s = base_spec(h, w, c, 2, 2, 4);
    s.ycond = 1;
    s.n_classes = N_CLS;
    s.weight_y = weight_y;
    return s;
}

static const char *arch_name(const struct glow_spec *s)
{
    static const char *const names[] = { "glow", "realnvp", "nice" };
    return names[s->arch];
}

static const int32_t LABELS[8] = { 2, 0, 1, 1, 0, 2, 2, 1 };

static void init_model(struct glow *g, const struct glow_spec *s, size_t n, int reversible)
{
    struct ft_err err = { "" };
    int rc = glow_init(g, s, n, reversible, &err);
    if (rc != FT_OK)
        fail_msg("glow_init (%s): %s", arch_name(s), err.msg);
    g->labels = LABELS;   /* used only with ycond / weight_y */
}

/* ---------- inverse ---------- */

static void check_round_trip(const struct glow_spec *s, int reversible)
{
    struct glow g;
    const size_t n = 3;
    init_model(&g, s, n, reversible);
    ft_glow_randomize(&g, 11, 0.05);
    ft_real *x = calloc(n * g.dim, sizeof *x), *x2 = calloc(n * g.dim, sizeof *x2);
    ft_real *eps = calloc(n * g.dim, sizeof *eps);
    ft_fill_input(x, n * g.dim, 5);
    struct ddi ddi = { NULL, NULL };
    glow_forward(&g, x, n, &ddi);
    glow_forward(&g, x, n, NULL);
    memcpy(eps, g.eps, n * g.dim * sizeof *eps);
    glow_reverse(&g, x2, eps, n, 1.0);
    printf("round trip %s C%zu L%zu (%zu stages, %s): ", arch_name(s), s->channels, s->levels,
           g.n_levels, reversible ? "reversible" : "stored");
    double worst = 0;
    for (size_t i = 0; i < n * g.dim; i++)
        worst = fmax(worst, fabs((double)x2[i] - x[i]));
    printf("max |x - reverse(forward(x))| %.3g\n", worst);
    ft_assert_close(x2, x, n * g.dim, 1e-5, 0.0);
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
    struct glow_spec s = realnvp_spec(8, 8, 1, 2, 8);
    check_round_trip(&s, 0);
    check_round_trip(&s, 1);
    s = realnvp_spec(8, 8, 3, 2, 8);
    check_round_trip(&s, 0);
    s = realnvp_spec(16, 16, 2, 3, 8);
    s.coupling = COUPLING_ADDITIVE;
    check_round_trip(&s, 1);
    s = realnvp_spec(8, 8, 1, 2, 8);
    s.scale = SCALE_EXP;
    s.learntop = 0;
    check_round_trip(&s, 0);
    s = nice_spec(8, 8, 1, 4, 8);
    check_round_trip(&s, 0);
    check_round_trip(&s, 1);
    s = ycond_spec(8, 8, 1, 0.5);
    check_round_trip(&s, 0);
    check_round_trip(&s, 1);
    s = realnvp_spec(8, 8, 1, 2, 8);
    s.ycond = 1;
    s.n_classes = N_CLS;
    s.weight_y = 0.01;
    check_round_trip(&s, 0);
}

/* ---------- names, shapes, counts ---------- */

static void expect_tensor(const struct glow *g, const char *name, int ndim, const int *shape)
{
    const struct glow_tensor *t = glow_find(g, name);
    if (!t)
        fail_msg("tensor %s is missing", name);
    assert_int_equal(t->ndim, ndim);
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i])
            fail_msg("%s: dim %d is %d, want %d", name, i, t->shape[i], shape[i]);
}

#define EXPECT(g, name, ...) \
    expect_tensor((g), (name), (int)(sizeof((int[]){ __VA_ARGS__ }) / sizeof(int)), \
                  (int[]){ __VA_ARGS__ })

static size_t index_of(const struct glow *g, const char *name)
{
    const struct glow_tensor *t = glow_find(g, name);
    if (!t)
        fail_msg("tensor %s is missing", name);
    return (size_t)(t - g->tensors);
}

static void test_names(void **state)
{
    (void)state;
    /* RealNVP 8x8x1, 2 scales, width 4: checker at 8x8x1, channel at 4x4x4,
     * split to 4x4x2, last checker at 4x4x2 */
    struct glow_spec s = realnvp_spec(8, 8, 1, 2, 4);
    struct glow g;
    init_model(&g, &s, 1, 0);
    assert_int_equal(g.n_levels, 3);
    EXPECT(&g, "level0/checker00/actnorm/b", 1);
    EXPECT(&g, "level0/checker02/actnorm/logs", 1);
    EXPECT(&g, "level0/checker00/coupling/conv1/W", 3, 3, 2, 4);      /* C_in = C = 1 */
    EXPECT(&g, "level0/checker01/coupling/conv3/W", 3, 3, 5, 2);      /* n_out = 2C */
    EXPECT(&g, "level0/channel00/actnorm/b", 4);
    EXPECT(&g, "level0/channel01/coupling/conv1/W", 3, 3, 3, 4);      /* C/2 = 2 */
    EXPECT(&g, "level0/channel02/coupling/conv3/b", 4);
    EXPECT(&g, "level0/split/conv/W", 3, 3, 3, 4);
    EXPECT(&g, "level1/checker03/coupling/conv1/W", 3, 3, 3, 4);      /* C = 2 */
    EXPECT(&g, "level1/checker03/coupling/conv3/logs", 4);
    EXPECT(&g, "prior/conv/W", 3, 3, 5, 4);
    assert_null(glow_find(&g, "level0/checker03/actnorm/b"));   /* 3 per scale but the last */
    assert_null(glow_find(&g, "level1/channel00/actnorm/b"));
    assert_null(glow_find(&g, "level0/step00/actnorm/b"));
    for (size_t i = 0; i < g.n_tensors; i++)
        assert_null(strstr(g.tensors[i].name, "invconv"));       /* no permutation */
    /* table order: level by level, layer by layer, then split, then the prior */
    assert_true(index_of(&g, "level0/checker02/coupling/conv3/logs")
                < index_of(&g, "level0/channel00/actnorm/b"));
    assert_true(index_of(&g, "level0/channel02/coupling/conv3/logs")
                < index_of(&g, "level0/split/conv/W"));
    assert_true(index_of(&g, "level0/split/conv/logs") < index_of(&g, "level1/checker00/actnorm/b"));
    assert_true(index_of(&g, "level1/checker03/coupling/conv3/logs") < index_of(&g, "prior/conv/W"));
    glow_free(&g);

    s = nice_spec(8, 8, 1, 3, 4);
    s.learntop = 1;   /* ignored: NICE's prior is N(0, I) */
    init_model(&g, &s, 1, 0);
    EXPECT(&g, "level0/step02/coupling/conv1/W", 3, 3, 3, 4);
    EXPECT(&g, "level0/step00/coupling/conv3/W", 3, 3, 5, 2);        /* additive: C/2 */
    EXPECT(&g, "level0/scale/S", 4, 4, 4);
    assert_null(glow_find(&g, "level0/step00/actnorm/b"));
    assert_null(glow_find(&g, "prior/conv/W"));
    assert_true(index_of(&g, "level0/step02/coupling/conv3/logs") < index_of(&g, "level0/scale/S"));
    glow_free(&g);

    s = ycond_spec(8, 8, 1, 0.01);   /* C_t = 8 at 2x2 */
    init_model(&g, &s, 1, 0);
    EXPECT(&g, "prior/y_emb/W", N_CLS, 16);
    EXPECT(&g, "prior/y_emb/b", 16);
    EXPECT(&g, "prior/y_emb/logs", 16);
    EXPECT(&g, "classifier/W", 8, N_CLS);
    EXPECT(&g, "classifier/b", N_CLS);
    EXPECT(&g, "classifier/logs", N_CLS);
    assert_true(index_of(&g, "prior/conv/logs") < index_of(&g, "prior/y_emb/W"));
    assert_true(index_of(&g, "prior/y_emb/logs") < index_of(&g, "classifier/W"));
    assert_int_equal(index_of(&g, "classifier/logs"), g.n_tensors - 1);
    glow_free(&g);
}

static size_t nn_count(size_t cin, size_t nout, size_t w)
{
    return 9 * (cin + 1) * w + 2 * w + w * w + 2 * w + 9 * (w + 1) * nout + 2 * nout;
}

static size_t formula_count(const struct glow_spec *s)
{
    size_t a = s->coupling == COUPLING_AFFINE ? 2 : 1, w = s->hidden, total = 0, ct = 0;
    if (s->arch == ARCH_REALNVP) {
        size_t c = s->channels;
        for (size_t i = 0; i + 1 < s->levels; i++, c *= 2)
            total += 3 * (2 * c + nn_count(c, a * c, w))
                     + 3 * (8 * c + nn_count(2 * c, a * 2 * c, w))
                     + 9 * (2 * c + 1) * 4 * c + 8 * c;
        total += 4 * (2 * c + nn_count(c, a * c, w));
        if (s->learntop)
            total += 9 * (2 * c + 1) * 2 * c + 4 * c;
        ct = c;
    } else {   /* nice */
        ct = 4 * s->channels;
        total = s->depth * nn_count(ct / 2, ct / 2, w) + (s->height / 2) * (s->width / 2) * ct;
    }
    if (s->ycond)
        total += 2 * ct * s->n_classes + 4 * ct;
    if (s->weight_y > 0)
        total += ct * s->n_classes + 2 * s->n_classes;
    return total;
}

static void test_param_count(void **state)
{
    (void)state;
    struct glow_spec v[] = {
        realnvp_spec(32, 32, 3, 3, 64),    /* configs/realnvp-cifar10.yaml */
        realnvp_spec(32, 32, 1, 3, 128),
        realnvp_spec(8, 8, 1, 2, 4),
        realnvp_spec(8, 8, 3, 1, 4),
        nice_spec(32, 32, 1, 4, 256),      /* configs/nice-mnist.yaml */
        nice_spec(8, 8, 1, 3, 4),
        realnvp_spec(16, 16, 2, 2, 8),
        realnvp_spec(32, 32, 3, 3, 64),
        nice_spec(8, 8, 1, 3, 4),
    };
    v[6].coupling = COUPLING_ADDITIVE;
    v[6].learntop = 0;
    v[7].ycond = 1;
    v[7].n_classes = 10;
    v[7].weight_y = 0.01;
    v[8].ycond = 1;
    v[8].n_classes = N_CLS;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        size_t got = glow_param_count(&v[i]), want = formula_count(&v[i]);
        printf("params %s %zux%zux%zu S/L%zu K%zu w%zu%s%s: %zu (formula %zu)\n",
               arch_name(&v[i]), v[i].height, v[i].width, v[i].channels, v[i].levels,
               v[i].depth, v[i].hidden, v[i].ycond ? " ycond" : "",
               v[i].weight_y > 0 ? " classifier" : "", got, want);
        assert_int_equal(got, want);
        struct glow g;
        init_model(&g, &v[i], 1, 0);
        assert_int_equal(g.n_params >= got, 1);
        glow_free(&g);
    }
    /* class-conditional Glow: the Glow count plus §12's P_ycond */
    struct glow_spec gl = base_spec(32, 32, 1, 3, 8, 128), yc = gl;
    yc.ycond = 1;
    yc.n_classes = 10;
    yc.weight_y = 0.01;
    size_t ct = 16, ny = 10;
    printf("params glow ycond+classifier 32x32x1 L3 K8 w128: %zu\n", glow_param_count(&yc));
    assert_int_equal(glow_param_count(&gl), 835884);   /* §12 */
    assert_int_equal(glow_param_count(&yc), 835884 + 3 * ct * ny + 4 * ct + 2 * ny);
}

/* ---------- init ---------- */

static void test_init(void **state)
{
    (void)state;
    const double ln_sig2 = -0.12692801104297263;
    ft_real *x = calloc(2 * 32 * 32, sizeof *x);
    ft_fill_input(x, 2 * 32 * 32, 1);
    /* RealNVP 32x32x1, 3 scales: each affine coupling scales half of its
     * elements by σ(2): 3·512 + 3·512 + 3·256 + 3·256 + 4·128 = 5120 */
    struct glow_spec s = realnvp_spec(32, 32, 1, 3, 8);
    struct glow g;
    init_model(&g, &s, 2, 0);
    glow_init_params(&g, 3);
    glow_forward(&g, x, 2, NULL);
    for (size_t e = 0; e < 2; e++) {
        printf("realnvp init log-det %.6f (want %.6f)\n", g.logdet[e], 5120 * ln_sig2);
        assert_true(fabs(g.logdet[e] - 5120 * ln_sig2) < 1e-5 * 5120 * fabs(ln_sig2));
    }
    glow_free(&g);
    /* NICE: additive couplings and S = 0 give log-det 0; the prior is N(0, I) */
    s = nice_spec(32, 32, 1, 4, 8);
    init_model(&g, &s, 2, 0);
    glow_init_params(&g, 3);
    glow_forward(&g, x, 2, NULL);
    for (size_t e = 0; e < 2; e++)
        assert_true(g.logdet[e] == 0.0);
    glow_free(&g);
    /* ycond + classifier at init: the prior is the unconditional one and
     * bits_y = log2 n_y (§9) */
    struct glow a, b;
    s = ycond_spec(8, 8, 1, 0.01);
    struct glow_spec plain = s;
    plain.ycond = 0;
    plain.weight_y = 0;
    init_model(&a, &s, 2, 0);
    init_model(&b, &plain, 2, 0);
    glow_init_params(&a, 4);
    glow_init_params(&b, 4);
    glow_forward(&a, x, 2, NULL);
    glow_forward(&b, x, 2, NULL);
    for (size_t e = 0; e < 2; e++) {
        printf("ycond init: nll %.9f (plain %.9f), bits_y %.9f (log2 3 = %.9f)\n",
               glow_nll(&a, e), glow_nll(&b, e), a.bits_y[e], log2(3.0));
        assert_true(glow_nll(&a, e) == glow_nll(&b, e));
        assert_true(fabs(a.bits_y[e] - log2(3.0)) < 1e-12);
    }
    glow_free(&a);
    glow_free(&b);
    free(x);
}

static void test_ddi(void **state)
{
    (void)state;
    struct glow_spec s = realnvp_spec(16, 16, 1, 2, 8);
    struct glow g;
    const size_t n = 16;
    init_model(&g, &s, n, 0);
    glow_init_params(&g, 4);
    ft_real *x = calloc(n * g.dim, sizeof *x);
    ft_fill_input(x, n * g.dim, 2);
    struct ddi ddi = { NULL, NULL };
    glow_forward(&g, x, n, &ddi);
    size_t checked = 0;
    for (size_t i = 0; i < g.n_levels; i++)
        for (size_t k = 0; k < glow_level_steps(&g, i); k++) {
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
                    fail_msg("stage %zu layer %zu channel %zu: mean %g var %g", i, k, ch, m, v);
            }
            checked++;
        }
    assert_int_equal(checked, 3 + 3 + 4);
    free(x);
    glow_free(&g);
}

/* ---------- bad specs ---------- */

static void expect_bad(struct glow_spec s, const char *field)
{
    struct glow g;
    struct ft_err err = { "" };
    assert_int_equal(glow_init(&g, &s, 1, 0, &err), FT_ERR_CONFIG);
    printf("rejected: %s\n", err.msg);
    if (!strstr(err.msg, field))
        fail_msg("\"%s\" does not name %s", err.msg, field);
    assert_int_equal(glow_param_count(&s), 0);
}

static void test_bad_spec(void **state)
{
    (void)state;
    expect_bad(realnvp_spec(2, 2, 1, 2, 4), "model.levels");        /* last scale 1x1 */
    expect_bad(realnvp_spec(6, 8, 1, 3, 4), "data.height");         /* odd size at a squeeze */
    expect_bad(realnvp_spec(8, 10, 1, 3, 4), "data.width");
    struct glow_spec s = nice_spec(8, 8, 1, 2, 4);
    s.levels = 2;
    expect_bad(s, "model.levels");
    s = nice_spec(8, 8, 1, 2, 4);
    s.coupling = COUPLING_AFFINE;
    expect_bad(s, "model.coupling");
    expect_bad(nice_spec(7, 8, 1, 2, 4), "data.height");
    s = ycond_spec(8, 8, 1, 0);
    s.n_classes = 1;
    expect_bad(s, "data.n_classes");
    s = ycond_spec(8, 8, 1, -1);
    expect_bad(s, "model.weight_y");
    s = base_spec(8, 8, 1, 2, 2, 4);
    s.arch = (enum arch_kind)7;
    expect_bad(s, "model.arch");
}

#ifndef FT_REAL_DOUBLE
/* ---------- configs (float32 build: the config module is not in the f64 core) ---------- */

static void expect_config_error(const char *const *sets, size_t n, const char *needle)
{
    struct config cfg;
    struct ft_err err = { "" };
    int rc = config_load(&cfg, FT_DEFAULT_CONFIG, NULL, sets, n, &err);
    printf("config rejected: %s\n", err.msg);
    assert_int_equal(rc, FT_ERR_CONFIG);
    if (!strstr(err.msg, needle))
        fail_msg("\"%s\" does not name %s", err.msg, needle);
}

static void test_config_errors(void **state)
{
    (void)state;
    const char *unknown[] = { "model.arch=glow2" };
    expect_config_error(unknown, 1, "model.arch: expected one of glow, realnvp, nice");
    const char *odd[] = { "model.arch=realnvp", "model.levels=3", "data.height=30" };
    expect_config_error(odd, 3, "divisible by 4");
    const char *tiny[] = { "model.arch=realnvp", "model.levels=3", "data.height=4",
                           "data.width=4" };
    expect_config_error(tiny, 4, "checkerboard mask needs at least 2 pixels");
    const char *ncls[] = { "model.ycond=true", "data.n_classes=1" };
    expect_config_error(ncls, 2, "data.n_classes");
    const char *nice[] = { "model.arch=nice" };
    expect_config_error(nice, 1, "model.levels must be 1");
}

/* The shipped variant configs load, map to a spec that builds, and print their size. */
static void test_shipped_configs(void **state)
{
    (void)state;
    const char *src = getenv("FT_SOURCE_DIR");
    const char *files[] = { "configs/realnvp-cifar10.yaml", "configs/nice-mnist.yaml" };
    enum arch_kind want[] = { ARCH_REALNVP, ARCH_NICE };
    for (size_t i = 0; i < 2; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", src ? src : ".", files[i]);
        struct config cfg;
        struct ft_err err = { "" };
        if (config_load(&cfg, FT_DEFAULT_CONFIG, path, NULL, 0, &err) != FT_OK)
            fail_msg("%s: %s", path, err.msg);
        struct glow_spec s;
        config_glow_spec(&cfg, &s);
        assert_int_equal(s.arch, want[i]);
        size_t np = glow_param_count(&s);
        printf("%s: %zu parameters (formula %zu)\n", files[i], np, formula_count(&s));
        assert_int_equal(np, formula_count(&s));
    }
}
#endif

/* ---------- stored vs reversible ---------- */

static void check_reversible(const struct glow_spec *s)
{
    struct glow a, b;
    const size_t n = 3;
    init_model(&a, s, n, 0);
    init_model(&b, s, n, 1);
    ft_glow_randomize(&a, 21, 0.1);
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
    printf("%s: activations stored %zu, reversible %zu\n", arch_name(s), a.n_acts, b.n_acts);
    for (size_t e = 0; e < n; e++)
        assert_true(glow_nll(&a, e) == glow_nll(&b, e));
    ft_assert_close(b.grads, a.grads, a.n_params, 1e-4, 0.0);
    ft_assert_close(b.dx, a.dx, n * a.dim, 1e-4, 0.0);
    free(x);
    glow_free(&a);
    glow_free(&b);
}

static void test_reversible_matches_stored(void **state)
{
    (void)state;
    struct glow_spec s = realnvp_spec(8, 8, 2, 2, 8);
    check_reversible(&s);
    s = nice_spec(8, 8, 1, 4, 8);
    check_reversible(&s);
    s = ycond_spec(8, 8, 1, 0.5);
    check_reversible(&s);
}

/* ---------- class-conditional sampling ---------- */

/* glow_reverse without labels samples example e as class e mod n_y; with
 * labels, the given classes. The class embedding moves the samples. */
static void test_ycond_sampling(void **state)
{
    (void)state;
    struct glow_spec s = ycond_spec(8, 8, 1, 0.01);
    struct glow g;
    const size_t n = 6;
    init_model(&g, &s, n, 0);
    ft_glow_randomize(&g, 13, 0.1);
    ft_real *eps = calloc(n * g.dim, sizeof *eps), *x = calloc(n * g.dim, sizeof *x);
    ft_real *x2 = calloc(n * g.dim, sizeof *x2);
    for (size_t e = 0; e < n; e++)   /* the same ε for every example */
        ft_fill_input(eps + e * g.dim, g.dim, 17);
    g.labels = NULL;
    glow_reverse(&g, x, eps, n, 0.7);
    for (size_t e = 0; e + N_CLS < n; e++)
        ft_assert_close(x + (e + N_CLS) * g.dim, x + e * g.dim, g.dim, 0.0, 0.0);
    double diff = 0;
    for (size_t i = 0; i < g.dim; i++)
        diff = fmax(diff, fabs((double)x[g.dim + i] - x[i]));
    printf("ycond samples: classes 0 and 1 differ by up to %.3g\n", diff);
    assert_true(diff > 1e-3);
    const int32_t lab[6] = { 1, 2, 0, 1, 2, 0 };
    g.labels = lab;
    glow_reverse(&g, x2, eps, n, 0.7);
    ft_assert_close(x2, x + g.dim, g.dim, 0.0, 0.0);          /* class 1 */
    ft_assert_close(x2 + 2 * g.dim, x, g.dim, 0.0, 0.0);      /* class 0 */
    free(eps);
    free(x);
    free(x2);
    glow_free(&g);
}

/* ---------- grads_ready order ---------- */

struct ready_log {
    size_t last, calls;
    int bad;
};

static void on_ready(void *ctx, size_t offset)
{
    struct ready_log *r = ctx;
    if (offset > r->last)
        r->bad = 1;   /* must only move towards the start of the arena */
    r->last = offset;
    r->calls++;
}

static void test_grads_ready(void **state)
{
    (void)state;
    struct glow_spec specs[3] = { realnvp_spec(8, 8, 1, 2, 4), nice_spec(8, 8, 1, 3, 4),
                                  ycond_spec(8, 8, 1, 0.5) };
    for (size_t i = 0; i < 3; i++) {
        struct glow g;
        init_model(&g, &specs[i], 2, 0);
        ft_glow_randomize(&g, 5, 0.1);
        ft_real *x = calloc(2 * g.dim, sizeof *x);
        ft_fill_input(x, 2 * g.dim, 3);
        struct ready_log r = { SIZE_MAX, 0, 0 };
        g.grads_ready = on_ready;
        g.grads_ready_ctx = &r;
        glow_zero_grad(&g);
        glow_forward(&g, x, 2, NULL);
        glow_backward(&g, -1.0);
        printf("%s: %zu grads_ready calls, last offset %zu\n", arch_name(&specs[i]), r.calls,
               r.last);
        assert_false(r.bad);
        assert_int_equal(r.last, 0);
        free(x);
        glow_free(&g);
    }
}

#ifdef FT_REAL_DOUBLE
/* ---------- brute-force log-det and gradients (float64 build) ---------- */

static void check_model_logdet(const struct glow_spec *s)
{
    struct glow g;
    init_model(&g, s, 1, 0);
    ft_glow_randomize(&g, 31, 0.1);
    ft_glow_zero_priors(&g);
    ft_real *x = calloc(g.dim, sizeof *x);
    ft_fill_input(x, g.dim, 4);
    double brute = ft_brute_logdet(ft_glow_eps_map, &g, x, g.dim, 1e-6);
    glow_forward(&g, x, 1, NULL);
    printf("%s model log-det %.10f, brute force %.10f\n", arch_name(s), g.logdet[0], brute);
    assert_true(fabs(g.logdet[0] - brute) < 1e-4);
    free(x);
    glow_free(&g);
}

static void test_model_logdet(void **state)
{
    (void)state;
    struct glow_spec s = realnvp_spec(4, 4, 2, 2, 6);
    check_model_logdet(&s);
    s = realnvp_spec(4, 4, 3, 2, 6);
    s.scale = SCALE_EXP;
    check_model_logdet(&s);
    s = realnvp_spec(4, 4, 1, 2, 6);
    s.coupling = COUPLING_ADDITIVE;
    check_model_logdet(&s);
    s = nice_spec(4, 4, 2, 3, 6);
    check_model_logdet(&s);
    s = ycond_spec(4, 4, 2, 0.5);
    check_model_logdet(&s);
}

struct loss_ctx {
    struct glow *g;
    ft_real *x;
    size_t n;
};

/* The training loss of the batch: mean of bits_x + weight_y·bits_y (§3). */
static double model_loss(void *vctx)
{
    struct loss_ctx *ctx = vctx;
    struct glow *g = ctx->g;
    glow_forward(g, ctx->x, ctx->n, NULL);
    double s = 0;
    for (size_t e = 0; e < ctx->n; e++) {
        s += glow_nll(g, e) / (g->dim * log(2.0));
        if (g->spec.weight_y > 0)
            s += g->spec.weight_y * g->bits_y[e];
    }
    return s / (double)ctx->n;
}

static void check_model_grads(const struct glow_spec *s, int reversible)
{
    struct glow g;
    const size_t n = 2;
    init_model(&g, s, n, reversible);
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
    printf("%s gradient check (%s): %zu tensors and the input\n", arch_name(s),
           reversible ? "reversible" : "stored", checked);
    free(grads);
    free(x);
    free(dx);
    glow_free(&g);
}

static void test_model_grads(void **state)
{
    (void)state;
    struct glow_spec s = realnvp_spec(8, 8, 1, 2, 4);
    check_model_grads(&s, 0);
    check_model_grads(&s, 1);
    s = realnvp_spec(8, 8, 3, 2, 4);
    s.scale = SCALE_EXP;
    check_model_grads(&s, 0);
    s = realnvp_spec(8, 8, 1, 2, 4);
    s.coupling = COUPLING_ADDITIVE;
    s.learntop = 0;
    check_model_grads(&s, 0);
    s = nice_spec(8, 8, 1, 3, 4);
    check_model_grads(&s, 0);
    check_model_grads(&s, 1);
    s = ycond_spec(8, 8, 1, 0.5);
    check_model_grads(&s, 0);
    check_model_grads(&s, 1);
    s = ycond_spec(8, 8, 1, 0);          /* ycond without the head */
    s.learntop = 0;
    check_model_grads(&s, 0);
    s = realnvp_spec(8, 8, 1, 2, 4);     /* the head alone, on RealNVP */
    s.weight_y = 0.7;
    s.n_classes = N_CLS;
    check_model_grads(&s, 0);
    s = nice_spec(8, 8, 1, 2, 4);        /* ycond on NICE's N(0, I) */
    s.ycond = 1;
    s.n_classes = N_CLS;
    check_model_grads(&s, 0);
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_param_count),
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_ddi),
        cmocka_unit_test(test_bad_spec),
#ifndef FT_REAL_DOUBLE
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_shipped_configs),
#endif
        cmocka_unit_test(test_reversible_matches_stored),
        cmocka_unit_test(test_grads_ready),
        cmocka_unit_test(test_ycond_sampling),
#ifdef FT_REAL_DOUBLE
        cmocka_unit_test(test_model_logdet),
        cmocka_unit_test(test_model_grads),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
