/* Tests of the Gaussian priors (glow-model.md §3, §9, §13.6):
 *   ln N(x; μ, ℓ) = Σ −½(ln 2π + 2ℓ + (x−μ)²e^{−2ℓ}),  ε = (x−μ)e^{−ℓ}
 * against the closed form for the interleaved split layout and the halved,
 * broadcast top layout (hn = 0), with strided x; sampling inverts ε at T = 1 and
 * gives μ at T = 0; gradients of x and h by central differences (double). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "ft_test.h"
#include "prior.h"

enum { N = 2, HW = 6, C = 3, XS = 2 * C };   /* x = z2 = z[..., C:2C] of a 2C-channel z */

static const double LN_2PI = 1.8378770664093454836;
#ifdef FT_REAL_DOUBLE
static const double RT_TOL = 1e-12;
#else
static const double RT_TOL = 1e-5;     /* glow-model.md §13.1, float32 */
#endif

struct fx {
    int top;                   /* 0: split layout (per example), 1: top (broadcast) */
    struct prior_layout lay;
    ft_real z[N * HW * XS];    /* x = z + C, pixel stride XS */
    ft_real h[N * HW * 2 * C]; /* split: (N,HW,2C); top: only (HW,2C) is used */
    double gamma[N];
};

static void fx_fill(struct fx *f, int top)
{
    memset(f, 0, sizeof *f);
    f->top = top;
    f->lay = top ? prior_top_layout(C) : prior_split_layout(C);
    ft_fill_normal(f->z, N * HW * XS, 1.0, 101);
    ft_fill_normal(f->h, N * HW * 2 * C, 0.4, 102 + (unsigned long)top);
    f->gamma[0] = 0.7;
    f->gamma[1] = -1.3;
}

static const ft_real *fx_x(const struct fx *f) { return f->z + C; }

/* μ and ℓ of element (n, p, k), read by the spec's layout rules, not lay. */
static void ref_mu_ell(const struct fx *f, size_t n, size_t p, size_t k, double *mu, double *ell)
{
    if (f->top) {          /* μ = h[..., :C], ℓ = h[..., C:], same for every n */
        *mu = f->h[p * 2 * C + k];
        *ell = f->h[p * 2 * C + C + k];
    } else {               /* μ = h[..., 0::2], ℓ = h[..., 1::2] */
        *mu = f->h[(n * HW + p) * 2 * C + 2 * k];
        *ell = f->h[(n * HW + p) * 2 * C + 2 * k + 1];
    }
}

static void check_forward(int top)
{
    struct fx f;
    fx_fill(&f, top);
    double logp[N] = { 10.0, -20.0 }, want[N] = { 10.0, -20.0 };   /* += */
    ft_real eps[N * HW * C], eref[N * HW * C];
    gaussian_forward(logp, eps, fx_x(&f), XS, f.h, &f.lay, N, HW, C);
    for (size_t n = 0; n < N; n++)
        for (size_t p = 0; p < HW; p++)
            for (size_t k = 0; k < C; k++) {
                double mu, ell, x = fx_x(&f)[(n * HW + p) * XS + k];
                ref_mu_ell(&f, n, p, k, &mu, &ell);
                want[n] += -0.5 * (LN_2PI + 2 * ell + (x - mu) * (x - mu) * exp(-2 * ell));
                eref[(n * HW + p) * C + k] = (ft_real)((x - mu) * exp(-ell));
            }
    ft_assert_close_d(logp, want, N, 1e-12, 0.0);
    ft_assert_close(eps, eref, N * HW * C, RT_TOL, 0.0);

    double logp2[N] = { 10.0, -20.0 };
    gaussian_forward(logp2, NULL, fx_x(&f), XS, f.h, &f.lay, N, HW, C);   /* eps NULL */
    ft_assert_close_d(logp2, want, N, 1e-12, 0.0);
}

static void test_prior_forward_split(void **state) { (void)state; check_forward(0); }
static void test_prior_forward_top(void **state) { (void)state; check_forward(1); }

static void test_prior_layouts(void **state)
{
    (void)state;
    struct prior_layout s = prior_split_layout(C), t = prior_top_layout(C);
    assert_int_equal(s.hp, 2 * C);
    assert_int_equal(s.hk, 2);
    assert_int_equal(s.lo, 1);
    assert_true(s.hn != 0);
    assert_int_equal(t.hn, 0);
    assert_int_equal(t.hp, 2 * C);
    assert_int_equal(t.hk, 1);
    assert_int_equal(t.lo, C);
}

/* ε from the encoder, fed back with T = 1, reproduces x (glow-model.md §10);
 * T = 0 gives μ. Only the first C channels of the strided output are written. */
static void check_sample(int top)
{
    struct fx f;
    fx_fill(&f, top);
    double logp[N] = { 0 };
    ft_real eps[N * HW * C], out[N * HW * XS], want[N * HW * XS];
    gaussian_forward(logp, eps, fx_x(&f), XS, f.h, &f.lay, N, HW, C);

    for (size_t i = 0; i < N * HW * XS; i++)
        out[i] = want[i] = (ft_real)-7;
    for (size_t p = 0; p < N * HW; p++)
        for (size_t k = 0; k < C; k++)
            want[p * XS + k] = fx_x(&f)[p * XS + k];
    gaussian_sample(out, XS, eps, 1.0, f.h, &f.lay, N, HW, C);
    ft_assert_close(out, want, N * HW * XS, RT_TOL, 0.0);

    for (size_t n = 0; n < N; n++)
        for (size_t p = 0; p < HW; p++)
            for (size_t k = 0; k < C; k++) {
                double mu, ell;
                ref_mu_ell(&f, n, p, k, &mu, &ell);
                want[(n * HW + p) * XS + k] = (ft_real)mu;
            }
    gaussian_sample(out, XS, eps, 0.0, f.h, &f.lay, N, HW, C);
    ft_assert_close(out, want, N * HW * XS, 0.0, 0.0);
}

static void test_prior_sample_split(void **state) { (void)state; check_sample(0); }
static void test_prior_sample_top(void **state) { (void)state; check_sample(1); }

#ifdef FT_REAL_DOUBLE
/* loss = Σ_n γ_n·ln N(x_n; μ, ℓ) */
static double prior_loss(void *ctx)
{
    struct fx *f = ctx;
    double logp[N] = { 0 }, s = 0.0;
    gaussian_forward(logp, NULL, fx_x(f), XS, f->h, &f->lay, N, HW, C);
    for (size_t n = 0; n < N; n++)
        s += f->gamma[n] * logp[n];
    return s;
}

static void check_grad(int top)
{
    struct fx f;
    fx_fill(&f, top);
    enum { DXS = C + 1 };
    ft_real dx[N * HW * DXS], dxz[N * HW * XS], dh[N * HW * 2 * C];
    size_t nh = top ? HW * 2 * C : N * HW * 2 * C;
    for (size_t i = 0; i < N * HW * DXS; i++)
        dx[i] = 1e3;                    /* overwritten, not accumulated */
    for (size_t i = 0; i < nh; i++)
        dh[i] = top ? 0.0 : 1e3;        /* top: caller zeroes; split: overwritten */
    gaussian_backward(dx, DXS, dh, fx_x(&f), XS, f.h, &f.lay, f.gamma, N, HW, C);

    /* dx back into a full z-shaped gradient so ft_check_grad can walk x in z. */
    memset(dxz, 0, sizeof dxz);
    for (size_t p = 0; p < N * HW; p++) {
        for (size_t k = 0; k < C; k++)
            dxz[p * XS + C + k] = dx[p * DXS + k];
        assert_true(dx[p * DXS + C] == 1e3);   /* beyond c: untouched */
    }
    ft_check_grad(prior_loss, &f, f.z, dxz, N * HW * XS, N * HW * XS);
    ft_check_grad(prior_loss, &f, f.h, dh, nh, nh);

    if (top) {   /* dh accumulates over calls when hn = 0 */
        ft_real dh2[HW * 2 * C], want[HW * 2 * C];
        for (size_t i = 0; i < HW * 2 * C; i++) {
            dh2[i] = 0.5;
            want[i] = 0.5 + dh[i];
        }
        gaussian_backward(NULL, 0, dh2, fx_x(&f), XS, f.h, &f.lay, f.gamma, N, HW, C);
        ft_assert_close(dh2, want, HW * 2 * C, 1e-14, 0.0);
    }
}

static void test_prior_grad_split(void **state) { (void)state; check_grad(0); }
static void test_prior_grad_top(void **state) { (void)state; check_grad(1); }
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prior_layouts),
        cmocka_unit_test(test_prior_forward_split),
        cmocka_unit_test(test_prior_forward_top),
        cmocka_unit_test(test_prior_sample_split),
        cmocka_unit_test(test_prior_sample_top),
#ifdef FT_REAL_DOUBLE
        cmocka_unit_test(test_prior_grad_split),
        cmocka_unit_test(test_prior_grad_top),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
