/* Tests of preprocessing (glow-model.md §2, §13.6): the glow map keeps x in its
 * bin [k/n_bins − 0.5, +1/n_bins) for n_bits 8 and 5; the noise is keyed by
 * (seed, pass, global index, element) only, not by batch or position;
 * postprocess(preprocess(v)) = v quantized, for both maps and bit depths; the
 * stable logit log-det against the naive formula, a central difference and the
 * objective_0 of a batch; bad n_bits and α end the job (exit 3). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ft_test.h"
#include "preprocess.h"
#include "rng.h"

enum { D = 256, NB_MAX = 256 };

static const uint64_t SEED = 20240611;
static const double ALPHA = 0.05;

#ifdef FT_REAL_DOUBLE
static const double ULP_HALF = 0x1p-54;   /* half an ulp of values in [0.25, 0.5] */
#else
static const double ULP_HALF = 0x1p-25;
#endif

/* Sample s of a test image set: every value 0…255 once, in an order that
 * changes with s (7 is odd, so j ↦ 7j + 13s mod 256 is a permutation). */
static void fill_images(uint8_t *img, size_t count)
{
    for (size_t s = 0; s < count; s++)
        for (size_t j = 0; j < D; j++)
            img[s * D + j] = (uint8_t)((7 * j + 13 * s) & 255);
}

static void check_glow_bins(int n_bits)
{
    enum { CNT = 4 };
    uint8_t img[CNT * D];
    ft_real x[CNT * D], ref[CNT * D];
    double obj[CNT];
    const uint64_t idx[CNT] = { 0, 5, 100, (uint64_t)1 << 40 };
    fill_images(img, CNT);
    preprocess_batch(x, obj, img, idx, CNT, D, n_bits, PREPROCESS_GLOW, 0.0, SEED, 3, 0);
    double nb = (double)(1 << n_bits), umin = 1, umax = 0, usum = 0;
    for (size_t i = 0; i < CNT; i++) {
        assert_true(obj[i] == -(double)D * log(nb));   /* −D·ln n_bins, same expression as glow_nll */
        struct rng_key key = rng_key(SEED, RNG_DEQUANT, 3, idx[i]);
        for (size_t j = 0; j < D; j++) {
            int k = img[i * D + j] >> (8 - n_bits);
            double lo = k / nb - 0.5, xv = x[i * D + j];
            if (!(xv >= lo && xv < lo + 1 / nb && xv >= -0.5 && xv < 0.5))
                fail_msg("n_bits %d: x[%zu] = %.9g outside its bin [%.9g, %.9g)", n_bits,
                         i * D + j, xv, lo, lo + 1 / nb);
            ref[i * D + j] = (ft_real)(lo + rng_uniform(key, j) / nb);
            double u = (xv - lo) * nb;
            umin = fmin(umin, u);
            umax = fmax(umax, u);
            usum += u;
        }
    }
    /* The value is the keyed draw, rounded once to ft_real. */
    ft_assert_close(x, ref, CNT * D, 0.0, 2 * ULP_HALF);
    /* 1024 uniforms: mean 0.5 ± 0.009 (1σ), and they fill the bin. */
    assert_true(fabs(usum / (CNT * D) - 0.5) < 0.05);
    assert_true(umin < 0.02 && umax > 0.98);
}

static void test_glow_bins_8(void **state) { (void)state; check_glow_bins(8); }
static void test_glow_bins_5(void **state) { (void)state; check_glow_bins(5); }

static void check_keyed(enum preprocess_kind kind)
{
    enum { CNT = 3 };
    uint8_t img[CNT * D];
    ft_real xb[CNT * D], x1[D], x2[D];
    double ob[CNT], o1[1], o2[1];
    const uint64_t idx[CNT] = { 3, 7, 9 };
    fill_images(img, CNT);
    /* Sample 7 in the middle of batch [3, 7, 9] and alone: the same bits. */
    preprocess_batch(xb, ob, img, idx, CNT, D, 8, kind, ALPHA, SEED, 1, 0);
    preprocess_batch(x1, o1, img + D, &idx[1], 1, D, 8, kind, ALPHA, SEED, 1, 0);
    assert_memory_equal(x1, xb + D, sizeof x1);
    assert_true(o1[0] == ob[1]);

    /* Another pass, another index or another seed: (almost) every element differs. */
    const uint64_t other = 8;
    const struct { uint64_t seed, pass; const uint64_t *id; } var[3] = {
        { SEED, 2, &idx[1] }, { SEED, 1, &other }, { SEED + 1, 1, &idx[1] },
    };
    for (size_t v = 0; v < 3; v++) {
        preprocess_batch(x2, o2, img + D, var[v].id, 1, D, 8, kind, ALPHA, var[v].seed,
                         var[v].pass, 0);
        size_t same = 0;
        for (size_t j = 0; j < D; j++)
            same += x2[j] == x1[j];
        if (same > 2)
            fail_msg("variant %zu: %zu of %d elements kept the same noise", v, same, D);
    }
}

static void test_noise_keyed_glow(void **state) { (void)state; check_keyed(PREPROCESS_GLOW); }
static void test_noise_keyed_logit(void **state) { (void)state; check_keyed(PREPROCESS_LOGIT); }

static void check_round_trip(enum preprocess_kind kind, int n_bits)
{
    enum { CNT = 256, PASSES = 8 };
    static uint8_t img[CNT * D], back[CNT * D];
    static ft_real x[CNT * D];
    static uint64_t idx[CNT];
    double obj[CNT];
    fill_images(img, CNT);
    for (size_t i = 0; i < CNT; i++)
        idx[i] = 1000 + 17 * i;
    int shift = 8 - n_bits;
    for (int pass = 0; pass <= PASSES; pass++) {
        int noise_off = pass == PASSES;    /* the last round: bin centres */
        preprocess_batch(x, obj, img, idx, CNT, D, n_bits, kind, ALPHA, SEED, (uint64_t)pass,
                         noise_off);
        postprocess_batch(back, x, CNT, D, n_bits, kind, ALPHA);
        for (size_t j = 0; j < CNT * D; j++) {
            int want = (img[j] >> shift) << shift;   /* n_bits 5: v rounded down to 8·k */
            if (back[j] != want)
                fail_msg("kind %d n_bits %d pass %d: pixel %zu = %d decodes to %d, want %d",
                         (int)kind, n_bits, pass, j, img[j], back[j], want);
        }
    }
    /* Noise off puts glow values at the bin centre exactly. */
    if (kind == PREPROCESS_GLOW) {
        double nb = (double)(1 << n_bits);
        for (size_t j = 0; j < D; j++)
            assert_true(x[j] == (ft_real)(((img[j] >> shift) + 0.5) / nb - 0.5));
    }
}

static void test_round_trip_glow_8(void **state) { (void)state; check_round_trip(PREPROCESS_GLOW, 8); }
static void test_round_trip_glow_5(void **state) { (void)state; check_round_trip(PREPROCESS_GLOW, 5); }
static void test_round_trip_logit_8(void **state) { (void)state; check_round_trip(PREPROCESS_LOGIT, 8); }
static void test_round_trip_logit_5(void **state) { (void)state; check_round_trip(PREPROCESS_LOGIT, 5); }

static void test_postprocess_edges(void **state)
{
    (void)state;
    /* Out-of-range samples clip as in §2 (openai): glow clips after scaling, so
     * x = 0.5 at n_bits 5 gives 255; logit clips the bin, giving 248. NaN → 0.
     * x = −1e-30 lies in the bin below 0: (x + 0.5) would round to 0.5 and
     * decode one bin too high. */
    const ft_real xg[7] = { -0.5, -0.75, 0.5, 3.0, (ft_real)NAN, (ft_real)INFINITY,
                            (ft_real)-1e-30 };
    const uint8_t wg8[7] = { 0, 0, 255, 255, 0, 255, 127 };
    const uint8_t wg5[7] = { 0, 0, 255, 255, 0, 255, 120 };
    uint8_t out[7];
    postprocess_batch(out, xg, 1, 7, 8, PREPROCESS_GLOW, 0.0);
    assert_memory_equal(out, wg8, 7);
    postprocess_batch(out, xg, 1, 7, 5, PREPROCESS_GLOW, 0.0);
    assert_memory_equal(out, wg5, 7);
    const ft_real xl[5] = { -40.0, 0.0, 40.0, (ft_real)NAN, (ft_real)-INFINITY };
    const uint8_t wl8[5] = { 0, 128, 255, 0, 0 }, wl5[5] = { 0, 128, 248, 0, 0 };
    postprocess_batch(out, xl, 1, 5, 8, PREPROCESS_LOGIT, ALPHA);
    assert_memory_equal(out, wl8, 5);
    postprocess_batch(out, xl, 1, 5, 5, PREPROCESS_LOGIT, ALPHA);
    assert_memory_equal(out, wl5, 5);
}

static void test_logit_logdet(void **state)
{
    (void)state;
    const double alphas[4] = { 0.05, 0.1, 1e-3, 1e-6 };
    double ps[64 + 1000];
    size_t np = 0;
    const double fixed[] = { 0.0, 1e-300, 1e-12, 1e-9, 1e-6, 1e-3, 0.01, 0.1, 0.25, 0.5, 0.75,
                             0.9, 0.99, 1 - 1e-3, 1 - 1e-6, 1 - 1e-9, 1 - 1e-12 };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        ps[np++] = fixed[i];
    ps[np++] = nextafter(1.0, 0.0);
    for (size_t i = 0; i < 1000; i++)
        ps[np++] = (i + 0.5) / 1000.0;
    double worst = 0;
    for (size_t a = 0; a < 4; a++)
        for (size_t i = 0; i < np; i++) {
            double z = preprocess_logit_z(ps[i], alphas[a]);
            double got = preprocess_logit_logdet(z, alphas[a]);
            double naive = preprocess_logit_logdet_naive(ps[i], alphas[a]);
            if (!isfinite(got))
                fail_msg("alpha %g p %.17g: log-det %g not finite", alphas[a], ps[i], got);
            if (!isfinite(naive))
                continue;
            double rel = fabs(got - naive) / fabs(naive);
            worst = fmax(worst, rel);
            if (rel > 1e-6)   /* §13.6; measured worst 9.8e-12 (α = 1e-6, p near 1) */
                fail_msg("alpha %g p %.17g: stable %.17g naive %.17g (rel %.3g)", alphas[a],
                         ps[i], got, naive, rel);
        }
    print_message("logit log-det: worst relative difference to the naive formula %.3g\n", worst);
    /* p = 0 and p = 1 exactly are finite too (q stays in [α/2, 1−α/2]). */
    assert_true(isfinite(preprocess_logit_logdet(preprocess_logit_z(0.0, ALPHA), ALPHA)));
    assert_true(isfinite(preprocess_logit_logdet(preprocess_logit_z(1.0, ALPHA), ALPHA)));

    /* The log-det is ln dz/dp (diagonal Jacobian): central differences, h = 1e-6. */
    const double pm[5] = { 0.01, 0.3, 0.5, 0.8, 0.99 };
    for (size_t i = 0; i < 5; i++) {
        double h = 1e-6;
        double dz = (preprocess_logit_z(pm[i] + h, ALPHA) - preprocess_logit_z(pm[i] - h, ALPHA))
                    / (2 * h);
        double want = log(dz), got = preprocess_logit_logdet(preprocess_logit_z(pm[i], ALPHA), ALPHA);
        if (fabs(got - want) > 1e-6)
            fail_msg("p %g: log-det %.12g, ln dz/dp %.12g", pm[i], got, want);
    }
}

static void test_logit_objective0(void **state)
{
    (void)state;
    /* objective_0 of a batch = −D·ln n_bins + Σ_j naive(p_j), with p_j rebuilt from
     * the keyed draws; x holds z rounded to ft_real. Pixels cover 0…255. */
    enum { CNT = 2 };
    uint8_t img[CNT * D];
    ft_real x[CNT * D], zr[CNT * D];
    double obj[CNT], want[CNT];
    const uint64_t idx[CNT] = { 11, 12 };
    fill_images(img, CNT);
    for (int n_bits = 5; n_bits <= 8; n_bits += 3) {
        double nb = (double)(1 << n_bits);
        preprocess_batch(x, obj, img, idx, CNT, D, n_bits, PREPROCESS_LOGIT, ALPHA, SEED, 4, 0);
        for (size_t i = 0; i < CNT; i++) {
            struct rng_key key = rng_key(SEED, RNG_DEQUANT, 4, idx[i]);
            want[i] = -(double)D * log(nb);
            for (size_t j = 0; j < D; j++) {
                double p = (img[i * D + j] >> (8 - n_bits)) / nb + rng_uniform(key, j) / nb;
                double q = ALPHA / 2 + (1 - ALPHA) * p;
                want[i] += preprocess_logit_logdet_naive(p, ALPHA);
                zr[i * D + j] = (ft_real)log(q / (1 - q));
            }
        }
        ft_assert_close_d(obj, want, CNT, 1e-12, 0.0);
        ft_assert_close(x, zr, CNT * D, 1e-6, 0.0);   /* one ft_real rounding (and a rare ulp nudge) */
    }
}

/* Runs fn in a child with stderr captured: it must end with exit 3 (ft_fail
 * without MPI) and a message containing needle. */
static void expect_check_failure(void (*fn)(void), const char *needle)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], STDERR_FILENO);
        fn();
        _exit(0);
    }
    close(fds[1]);
    char buf[1024];
    size_t len = 0;
    ssize_t r;
    while (len < sizeof buf - 1 && (r = read(fds[0], buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)r;
    buf[len] = '\0';
    close(fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 3 || !strstr(buf, needle))
        fail_msg("expected exit 3 with \"%s\", got status %d, stderr \"%s\"", needle, status, buf);
}

static void run_pre(int n_bits, double alpha)
{
    uint8_t img[4] = { 0, 1, 2, 3 };
    ft_real x[4];
    double obj[1];
    const uint64_t idx[1] = { 0 };
    preprocess_batch(x, obj, img, idx, 1, 4, n_bits, PREPROCESS_LOGIT, alpha, SEED, 0, 0);
}
static void pre_alpha_0(void) { run_pre(8, 0.0); }
static void pre_alpha_1(void) { run_pre(8, 1.0); }
static void pre_alpha_big(void) { run_pre(8, 1.5); }
static void pre_alpha_nan(void) { run_pre(8, NAN); }
static void pre_bits_0(void) { run_pre(0, ALPHA); }
static void pre_bits_9(void) { run_pre(9, ALPHA); }
static void post_alpha_neg(void)
{
    ft_real x[1] = { 0 };
    uint8_t v[1];
    postprocess_batch(v, x, 1, 1, 8, PREPROCESS_LOGIT, -0.1);
}

static void test_bad_args_abort(void **state)
{
    (void)state;
    expect_check_failure(pre_alpha_0, "alpha");
    expect_check_failure(pre_alpha_1, "alpha");
    expect_check_failure(pre_alpha_big, "alpha");
    expect_check_failure(pre_alpha_nan, "alpha");
    expect_check_failure(pre_bits_0, "n_bits");
    expect_check_failure(pre_bits_9, "n_bits");
    expect_check_failure(post_alpha_neg, "alpha");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_glow_bins_8),
        cmocka_unit_test(test_glow_bins_5),
        cmocka_unit_test(test_noise_keyed_glow),
        cmocka_unit_test(test_noise_keyed_logit),
        cmocka_unit_test(test_round_trip_glow_8),
        cmocka_unit_test(test_round_trip_glow_5),
        cmocka_unit_test(test_round_trip_logit_8),
        cmocka_unit_test(test_round_trip_logit_5),
        cmocka_unit_test(test_postprocess_edges),
        cmocka_unit_test(test_logit_logdet),
        cmocka_unit_test(test_logit_objective0),
        cmocka_unit_test(test_bad_args_abort),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
