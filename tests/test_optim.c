/* Tests of the optimizer (glow-model.md §11, distributed.md §2.14): Adamax with
 * openai's bias correction and Adam, two steps on three elements against the
 * formulas written out in double; the warmup schedule; global-norm clipping;
 * the double-summed norm (non-finite for NaN/Inf, no float overflow); the
 * bias-corrected EMA after one and two steps. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "ft_test.h"
#include "optim.h"

enum { N3 = 3 };

/* State and parameters are float32 and updated in float: θ ≈ 1 carries ~1e-7
 * rounding per operation; 1e-6 relative to max|want| is a few ulps. */
static const double TOL = 1e-6;

static const double B1 = 0.9, B2 = 0.99, LR = 0.01, EPS = 1e-8;
static const double TH0[N3] = { 0.5, -1.0, 2.0 };
/* The third gradient is tiny so ε's placement shows: with Adam √v = 1e-7 vs ε = 1e-8. */
static const double G1[N3] = { 0.1, -0.2, 1e-6 };
static const double G2[N3] = { -0.3, 0.1, 2e-6 };

static void to_float(float *out, const double *in, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (float)in[i];
}

/* The reference: one update of (θ, m, v) in double, straight from §11. */
static void ref_step(double *th, double *m, double *v, const double *g, uint64_t t, int adam,
                     double lr)
{
    double a = lr * sqrt(1.0 - pow(B2, (double)t)) / (1.0 - pow(B1, (double)t));
    for (size_t i = 0; i < N3; i++) {
        m[i] = B1 * m[i] + (1 - B1) * g[i];
        if (adam) {
            v[i] = B2 * v[i] + (1 - B2) * g[i] * g[i];
            th[i] -= a * m[i] / (sqrt(v[i]) + EPS);
        } else {
            v[i] = fmax(B2 * v[i], fabs(g[i]));
            th[i] -= a * m[i] / (v[i] + EPS);
        }
    }
}

static void check_two_steps(enum optim_kind kind, const double *want1, const double *want2)
{
    struct optim o;
    optim_init(&o, kind, N3, LR, B1, B2, 0.0, 0, 0.0);
    float p[N3], g[N3];
    double th[N3], m[N3] = { 0 }, v[N3] = { 0 };
    memcpy(th, TH0, sizeof th);
    to_float(p, TH0, N3);

    /* Step 1: α_1 = 0.01·√(1−0.99)/(1−0.9) = 0.01 exactly. */
    to_float(g, G1, N3);
    optim_step(&o, p, g, 0.2236, LR);
    ref_step(th, m, v, G1, 1, kind == OPTIM_ADAM, LR);
    assert_int_equal(o.t, 1);
    ft_assert_close_d(th, want1, N3, 1e-8, 0.0);   /* the written-out numbers match §11 */
    float thf[N3], mf[N3], vf[N3];
    to_float(thf, th, N3);
    to_float(mf, m, N3);
    to_float(vf, v, N3);
    ft_assert_close(p, thf, N3, TOL, 0.0);
    ft_assert_close(o.m, mf, N3, TOL, 0.0);
    ft_assert_close(o.v, vf, N3, TOL, 0.0);

    /* Step 2: α_2 = 0.01·√(1−0.99²)/(1−0.9²) = 0.01·√0.0199/0.19 = 0.0074245979. */
    to_float(g, G2, N3);
    optim_step(&o, p, g, 0.3162, LR);
    ref_step(th, m, v, G2, 2, kind == OPTIM_ADAM, LR);
    assert_int_equal(o.t, 2);
    ft_assert_close_d(th, want2, N3, 1e-8, 0.0);
    to_float(thf, th, N3);
    to_float(mf, m, N3);
    to_float(vf, v, N3);
    ft_assert_close(p, thf, N3, TOL, 0.0);
    ft_assert_close(o.m, mf, N3, TOL, 0.0);
    ft_assert_close(o.v, vf, N3, TOL, 0.0);
    optim_free(&o);
}

static void test_optim_adamax(void **state)
{
    (void)state;
    /* Step 1: m = 0.1·g = {0.01, −0.02, 1e-7}; v = |g| = {0.1, 0.2, 1e-6};
     * θ −= 0.01·m/(v + 1e-8): {0.499, −0.999, 1.9990099} (third: 0.01·0.1/1.01).
     * Step 2: m = {−0.021, −0.008, 2.9e-7}; v = max(0.99·v, |g2|) = {0.3, 0.198, 2e-6};
     * θ = {0.499519722, −0.998700016, 1.99793869}. */
    const double want1[N3] = { 0.499, -0.999, 1.99900990099 };
    const double want2[N3] = { 0.499519722, -0.998700016, 1.99793869 };
    check_two_steps(OPTIM_ADAMAX, want1, want2);
}

static void test_optim_adam(void **state)
{
    (void)state;
    /* Step 1: m = {0.01, −0.02, 1e-7}; v = 0.01·g² = {1e-4, 4e-4, 1e-14}, √v = {0.01,
     * 0.02, 1e-7}; θ −= 0.01·m/(√v + 1e-8): {0.49000001, −0.990000005, 1.99090909}
     * (third: 0.01·1e-7/1.1e-7; ε inside the root would move it by only ~1e-5).
     * Step 2: v = {0.000999, 0.000496, 4.99e-14}; θ = {0.49493299, −0.987333012, 1.98168334}. */
    const double want1[N3] = { 0.49000001, -0.990000005, 1.99090909 };
    const double want2[N3] = { 0.49493299, -0.987333012, 1.98168334 };
    check_two_steps(OPTIM_ADAM, want1, want2);
}

static void test_optim_warmup(void **state)
{
    (void)state;
    /* lr·min(1, seen/warmup), seen = images before the step: step 1 sees 0. */
    assert_true(optim_lr_at(1e-3, 0, 1000) == 0.0);
    assert_true(optim_lr_at(1e-3, 500, 1000) == 0.5e-3);
    assert_true(optim_lr_at(1e-3, 250, 1000) == 0.25e-3);
    assert_true(optim_lr_at(1e-3, 1000, 1000) == 1e-3);
    assert_true(optim_lr_at(1e-3, 123456, 1000) == 1e-3);
    assert_true(optim_lr_at(1e-3, 0, 0) == 1e-3);        /* warmup 0 = off */
    /* The paper's 500,000 images at B = 512: step 1 gets 0, step 2 512/500000·lr. */
    assert_true(optim_lr_at(1e-3, 0, 500000) == 0.0);
    assert_true(fabs(optim_lr_at(1e-3, 512, 500000) - 1.024e-6) < 1e-18);

    /* lr_t = 0 on step 1: the moments and t still update, θ stays bitwise. */
    struct optim o;
    optim_init(&o, OPTIM_ADAMAX, N3, 1e-3, B1, B2, 0.0, 0, 0.0);
    float p[N3], p0[N3], g[N3];
    to_float(p, TH0, N3);
    memcpy(p0, p, sizeof p);
    to_float(g, G1, N3);
    optim_step(&o, p, g, 0.2236, optim_lr_at(o.lr, 0, 1000));
    assert_memory_equal(p, p0, sizeof p);
    assert_int_equal(o.t, 1);
    assert_true(o.m[0] != 0.0f && o.v[1] != 0.0f);
    optim_free(&o);
}

static void test_optim_clip(void **state)
{
    (void)state;
    /* g = {3, 4, 0}: ‖g‖ = 5 > clip 1, so g ← g/5 = {0.6, 0.8, 0}, norm exactly 1 (to float). */
    struct optim o;
    optim_init(&o, OPTIM_ADAM, N3, LR, B1, B2, 1.0, 0, 0.0);
    float p[N3] = { 0 }, g[N3] = { 3.0f, 4.0f, 0.0f };
    double norm = optim_grad_norm(g, N3);
    assert_true(norm == 5.0);
    optim_step(&o, p, g, norm, LR);
    const float want[N3] = { 0.6f, 0.8f, 0.0f };
    ft_assert_close(g, want, N3, 1e-7, 0.0);
    assert_true(fabs(optim_grad_norm(g, N3) - 1.0) < 1e-7);
    /* The moments saw the clipped gradient: m = 0.1·{0.6, 0.8, 0}. */
    const float wm[N3] = { 0.06f, 0.08f, 0.0f };
    ft_assert_close(o.m, wm, N3, 1e-6, 0.0);
    optim_free(&o);

    /* Norm at or below the clip, or clipping off: g untouched bitwise. */
    optim_init(&o, OPTIM_ADAM, N3, LR, B1, B2, 5.0, 0, 0.0);
    float g2[N3] = { 3.0f, 4.0f, 0.0f }, g2c[N3];
    memcpy(g2c, g2, sizeof g2);
    optim_step(&o, p, g2, optim_grad_norm(g2, N3), LR);
    assert_memory_equal(g2, g2c, sizeof g2);
    optim_free(&o);
    optim_init(&o, OPTIM_ADAMAX, N3, LR, B1, B2, 0.0, 0, 0.0);
    optim_step(&o, p, g2, optim_grad_norm(g2, N3), LR);
    assert_memory_equal(g2, g2c, sizeof g2);
    optim_free(&o);
}

static void test_optim_norm_nonfinite(void **state)
{
    (void)state;
    /* The skip flag: a NaN or Inf anywhere makes the norm non-finite; the caller
     * then skips the step and never calls optim_step (distributed.md §2.14). */
    float g[11];
    for (size_t i = 0; i < 11; i++)
        g[i] = 0.5f;
    assert_true(isfinite(optim_grad_norm(g, 11)));
    g[9] = NAN;                         /* in the tail after the 8-lane blocks */
    assert_false(isfinite(optim_grad_norm(g, 11)));
    g[9] = 0.5f;
    g[2] = INFINITY;
    assert_false(isfinite(optim_grad_norm(g, 11)));
    g[2] = -INFINITY;
    assert_false(isfinite(optim_grad_norm(g, 11)));
    /* Summed in double: 3e20² overflows float but not double. */
    float big[2] = { 3e20f, 4e20f };
    double nb = optim_grad_norm(big, 2);
    assert_true(isfinite(nb));
    assert_true(fabs(nb - 5e20) <= 1e-6 * 5e20);
    /* Zero length: norm 0, and an empty optimizer steps and frees cleanly. */
    assert_true(optim_grad_norm(NULL, 0) == 0.0);
    struct optim o;
    optim_init(&o, OPTIM_ADAMAX, 0, LR, B1, B2, 1.0, 1, 0.999);
    optim_step(&o, NULL, NULL, 0.0, LR);
    assert_int_equal(o.t, 1);
    optim_ema_weights(&o, NULL);
    optim_free(&o);
    /* A longer vector: the 8-lane sum equals a plain double sum to rounding. */
    float h[1003];
    double s = 0;
    for (size_t i = 0; i < 1003; i++) {
        h[i] = (float)sin(0.37 * (double)i);
        s += (double)h[i] * h[i];
    }
    assert_true(fabs(optim_grad_norm(h, 1003) - sqrt(s)) <= 1e-13 * sqrt(s));
}

static void test_optim_ema(void **state)
{
    (void)state;
    /* ema starts at 0: after one update ema = (1−β)θ1, corrected θ1 exactly (in
     * exact arithmetic); after two (βθ1 + θ2)/(1+β). β = 0.9 makes the weight visible. */
    const double eb = 0.9;
    struct optim o;
    optim_init(&o, OPTIM_ADAMAX, N3, LR, B1, B2, 0.0, 1, eb);
    assert_non_null(o.ema_w);
    float p[N3], g[N3], out[N3], want[N3];
    double th1[N3];
    to_float(p, TH0, N3);
    to_float(g, G1, N3);
    optim_step(&o, p, g, 0.2236, LR);
    for (size_t i = 0; i < N3; i++) {
        th1[i] = p[i];
        want[i] = (float)((1 - eb) * th1[i]);   /* raw EMA */
    }
    ft_assert_close(o.ema_w, want, N3, TOL, 0.0);
    optim_ema_weights(&o, out);
    ft_assert_close(out, p, N3, TOL, 0.0);      /* = θ1 */

    to_float(g, G2, N3);
    optim_step(&o, p, g, 0.3162, LR);
    for (size_t i = 0; i < N3; i++)
        want[i] = (float)((eb * th1[i] + p[i]) / (1 + eb));
    optim_ema_weights(&o, out);
    ft_assert_close(out, want, N3, TOL, 0.0);
    /* The EMA is not the parameters: θ moved, the average lags. */
    assert_true(fabsf(out[0] - p[0]) > 1e-5f);
    optim_free(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_optim_adamax),
        cmocka_unit_test(test_optim_adam),
        cmocka_unit_test(test_optim_warmup),
        cmocka_unit_test(test_optim_clip),
        cmocka_unit_test(test_optim_norm_nonfinite),
        cmocka_unit_test(test_optim_ema),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
