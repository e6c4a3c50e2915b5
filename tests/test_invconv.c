/* Tests of invconv.c (glow-model.md §6, §13): y = x·W per pixel, plain and with
 * W = P_mat·L~·U~. Round trips in both precisions; in float64 the layer log-det
 * (H·W·ln|det W|, or H·W·Σ log_s) against a brute-force Jacobian and every
 * gradient against central differences of Σ_n γ_n·logdet_n + Σ r⊙y; the LU
 * init rebuilds W0 (≤ 1e-6) with Σ log_s = ln|det W0|. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "blas.h"
#include "check.h"
#include "ft_test.h"
#include "invconv.h"
#include "rng.h"

#define MAXC 16
#define MAXN 2
#define MAXHW 16

#ifdef FT_REAL_DOUBLE
#define EPS_REAL 1e-15
#else
#define EPS_REAL 1e-7
#endif

struct fixture {
    size_t n, hw, c;
    int lu;                        /* which form loss_fn / map_fn evaluate */
    ft_real *x, *y, *x2, *r, *dx;
    double *logdet, *logdet2, *gamma;
    /* plain */
    ft_real *w, *winv, *wit, *dw;
    /* LU */
    int32_t *p;
    ft_real *l, *u, *log_s, *sign_s, *dl, *du, *dlog_s;
    double *work;
    int *ipiv;
};

static struct rng_key test_key(uint64_t a)
{
    return rng_key(11, RNG_TEST, a, 0);
}

static int setup(void **state)
{
    struct fixture *fx = ft_malloc(sizeof *fx);
    size_t xn = MAXN * MAXHW * MAXC, cc = MAXC * MAXC;
    fx->x = ft_malloc(xn * sizeof *fx->x);
    fx->y = ft_malloc(xn * sizeof *fx->y);
    fx->x2 = ft_malloc(xn * sizeof *fx->x2);
    fx->r = ft_malloc(xn * sizeof *fx->r);
    fx->dx = ft_malloc(xn * sizeof *fx->dx);
    fx->logdet = ft_malloc(MAXN * sizeof *fx->logdet);
    fx->logdet2 = ft_malloc(MAXN * sizeof *fx->logdet2);
    fx->gamma = ft_malloc(MAXN * sizeof *fx->gamma);
    fx->w = ft_malloc(cc * sizeof *fx->w);
    fx->winv = ft_malloc(cc * sizeof *fx->winv);
    fx->wit = ft_malloc(cc * sizeof *fx->wit);
    fx->dw = ft_malloc(cc * sizeof *fx->dw);
    fx->p = ft_malloc(MAXC * sizeof *fx->p);
    fx->l = ft_malloc(cc * sizeof *fx->l);
    fx->u = ft_malloc(cc * sizeof *fx->u);
    fx->log_s = ft_malloc(MAXC * sizeof *fx->log_s);
    fx->sign_s = ft_malloc(MAXC * sizeof *fx->sign_s);
    fx->dl = ft_malloc(cc * sizeof *fx->dl);
    fx->du = ft_malloc(cc * sizeof *fx->du);
    fx->dlog_s = ft_malloc(MAXC * sizeof *fx->dlog_s);
    fx->work = ft_malloc(invconv_work_size(MAXC) * sizeof *fx->work);
    fx->ipiv = ft_malloc(MAXC * sizeof *fx->ipiv);
    fx->gamma[0] = 0.7;
    fx->gamma[1] = -1.3;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    free(fx->ipiv);
    free(fx->work);
    free(fx->dlog_s);
    free(fx->du);
    free(fx->dl);
    free(fx->sign_s);
    free(fx->log_s);
    free(fx->u);
    free(fx->l);
    free(fx->p);
    free(fx->dw);
    free(fx->wit);
    free(fx->winv);
    free(fx->w);
    free(fx->gamma);
    free(fx->logdet2);
    free(fx->logdet);
    free(fx->dx);
    free(fx->r);
    free(fx->x2);
    free(fx->y);
    free(fx->x);
    free(fx);
    return 0;
}

static void set_shape(struct fixture *fx, size_t n, size_t hw, size_t c)
{
    assert_true(n <= MAXN && hw <= MAXHW && c <= MAXC);
    fx->n = n;
    fx->hw = hw;
    fx->c = c;
    ft_fill_normal(fx->x, n * hw * c, 1.0, 1000 + c);
    ft_fill_normal(fx->r, n * hw * c, 1.0, 2000 + c);
}

/* A plain W away from orthogonal (QR + noise), so ln|det W| is clearly non-zero. */
static double make_plain_w(struct fixture *fx)
{
    size_t c = fx->c;
    ft_real noise[MAXC * MAXC];
    invconv_init_qr(fx->w, test_key(c), c, fx->work);
    ft_fill_normal(noise, c * c, 0.4, 3000 + c);
    for (size_t i = 0; i < c * c; i++)
        fx->w[i] += noise[i];
    double ldet = 0.0;
    assert_int_equal(invconv_prepare(&ldet, fx->winv, fx->wit, fx->w, c, fx->work, fx->ipiv), 0);
    return ldet;
}

/* LU parameters from the factored QR matrix, then moved off init: log_s and
 * the free triangles get noise; masked entries stay 0. Builds W and W⁻¹. */
static double make_lu_params(struct fixture *fx)
{
    size_t c = fx->c;
    ft_real w0[MAXC * MAXC], nl[MAXC * MAXC], nu[MAXC * MAXC], ns[MAXC];
    invconv_init_qr(w0, test_key(100 + c), c, fx->work);
    invconv_lu_init(fx->p, fx->l, fx->u, fx->log_s, fx->sign_s, w0, c, fx->work, fx->ipiv);
    ft_fill_normal(nl, c * c, 0.2, 4000 + c);
    ft_fill_normal(nu, c * c, 0.2, 5000 + c);
    ft_fill_normal(ns, c, 0.3, 6000 + c);
    for (size_t i = 0; i < c; i++) {
        fx->log_s[i] += ns[i];
        for (size_t j = 0; j < c; j++) {
            if (j < i)
                fx->l[i * c + j] += nl[i * c + j];
            if (j > i)
                fx->u[i * c + j] += nu[i * c + j];
        }
    }
    double ldet = 0.0;
    invconv_lu_build(fx->w, fx->winv, &ldet, fx->p, fx->l, fx->u, fx->log_s, fx->sign_s, c,
                     fx->work);
    return ldet;
}

static double max_abs(const ft_real *a, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs((double)a[i]));
    return m;
}

/* M·N ≈ I for c×c ft_real matrices, computed in double. */
static void assert_inverse_pair(const ft_real *m, const ft_real *inv, size_t c, double tol)
{
    double prod[MAXC * MAXC], eye[MAXC * MAXC];
    for (size_t i = 0; i < c; i++)
        for (size_t j = 0; j < c; j++) {
            double s = 0.0;
            for (size_t k = 0; k < c; k++)
                s += (double)m[i * c + k] * (double)inv[k * c + j];
            prod[i * c + j] = s;
            eye[i * c + j] = i == j ? 1.0 : 0.0;
        }
    ft_assert_close_d(prod, eye, c * c, 0.0, tol);
}

/* ---- plain ---------------------------------------------------------------- */

static void test_init_qr_orthogonal(void **state)
{
    struct fixture *fx = *state;
    size_t c = 8;
    ft_real wt[MAXC * MAXC], w2[MAXC * MAXC];
    invconv_init_qr(fx->w, test_key(1), c, fx->work);
    invconv_init_qr(w2, test_key(1), c, fx->work);
    ft_assert_close(w2, fx->w, c * c, 0.0, 0.0);          /* a function of the key */
    for (size_t i = 0; i < c; i++)
        for (size_t j = 0; j < c; j++)
            wt[j * c + i] = fx->w[i * c + j];
    assert_inverse_pair(fx->w, wt, c, 10 * EPS_REAL);      /* W·Wᵀ = I */
    double ldet = 1.0;
    assert_int_equal(invconv_prepare(&ldet, NULL, NULL, fx->w, c, fx->work, fx->ipiv), 0);
    double zero = 0.0;
    ft_assert_close_d(&ldet, &zero, 1, 0.0, 10 * EPS_REAL);   /* |det W| = 1 */
}

static void test_prepare_inverses(void **state)
{
    struct fixture *fx = *state;
    set_shape(fx, 1, 1, 7);
    size_t c = fx->c;
    double ldet = make_plain_w(fx);
    assert_inverse_pair(fx->w, fx->winv, c, 100 * EPS_REAL);
    assert_inverse_pair(fx->winv, fx->w, c, 100 * EPS_REAL);
    for (size_t i = 0; i < c; i++)
        for (size_t j = 0; j < c; j++)
            assert_true(fx->wit[i * c + j] == fx->winv[j * c + i]);
    /* The same log-det with and without the inverses requested. */
    double ld2 = 0.0;
    assert_int_equal(invconv_prepare(&ld2, NULL, NULL, fx->w, c, fx->work, fx->ipiv), 0);
    ft_assert_close_d(&ld2, &ldet, 1, 0.0, 0.0);
}

static void test_prepare_singular(void **state)
{
    struct fixture *fx = *state;
    size_t c = 4;
    ft_fill_normal(fx->w, c * c, 1.0, 7);
    for (size_t i = 0; i < c; i++)
        fx->w[i * c + 2] = 0;     /* a zero column: an exactly zero pivot, not a residue */
    double ldet = 0.0;
    assert_int_not_equal(invconv_prepare(&ldet, fx->winv, fx->wit, fx->w, c, fx->work,
                                         fx->ipiv), 0);
    assert_true(isinf(ldet) && ldet < 0);
    ft_fill_normal(fx->w, c * c, 1.0, 8);
    fx->w[5] = (ft_real)NAN;
    assert_int_not_equal(invconv_prepare(&ldet, NULL, NULL, fx->w, c, fx->work, fx->ipiv), 0);
}

static void round_trips(struct fixture *fx, double ldet)
{
    size_t n = fx->n, hw = fx->hw, c = fx->c, len = n * hw * c;
    /* reverse(forward(x)) = x; the log-det added forward is removed in reverse. */
    memset(fx->logdet, 0, n * sizeof *fx->logdet);
    invconv_forward(fx->y, fx->logdet, fx->x, fx->w, ldet, n, hw, c);
    for (size_t i = 0; i < n; i++)
        assert_true(fx->logdet[i] == (double)hw * ldet);
    invconv_reverse(fx->x2, fx->logdet, fx->y, fx->winv, ldet, n, hw, c);
    ft_assert_close(fx->x2, fx->x, len, 1e-5, 0.0);
    double zeros[MAXN] = { 0 };
    ft_assert_close_d(fx->logdet, zeros, n, 0.0, 1e-12 * fabs((double)hw * ldet));
    /* forward(reverse(z)) = z, with z = x. */
    invconv_reverse(fx->y, NULL, fx->x, fx->winv, ldet, n, hw, c);
    invconv_forward(fx->x2, NULL, fx->y, fx->w, ldet, n, hw, c);
    ft_assert_close(fx->x2, fx->x, len, 1e-5, 0.0);
    assert_true(max_abs(fx->x, len) > 1.0);
}

static void test_plain_round_trip(void **state)
{
    struct fixture *fx = *state;
    set_shape(fx, 2, 16, 6);
    double ldet = make_plain_w(fx);
    assert_true(fabs(ldet) > 0.05);
    round_trips(fx, ldet);
}

/* Backward twice accumulates twice the parameter gradient and rewrites dx. */
static void test_plain_backward_accumulates(void **state)
{
    struct fixture *fx = *state;
    set_shape(fx, 2, 4, 5);
    size_t c = fx->c, len = fx->n * fx->hw * c;
    make_plain_w(fx);
    ft_real g1[MAXC * MAXC], dx1[MAXN * MAXHW * MAXC];
    memset(fx->dw, 0, c * c * sizeof *fx->dw);
    invconv_backward(fx->dx, fx->dw, fx->r, fx->x, fx->w, fx->wit, fx->gamma, fx->n, fx->hw, c);
    memcpy(g1, fx->dw, c * c * sizeof *g1);
    memcpy(dx1, fx->dx, len * sizeof *dx1);
    invconv_backward(fx->dx, fx->dw, fx->r, fx->x, fx->w, fx->wit, fx->gamma, fx->n, fx->hw, c);
    for (size_t i = 0; i < c * c; i++)
        g1[i] *= 2;
    ft_assert_close(fx->dw, g1, c * c, 10 * EPS_REAL, 0.0);
    ft_assert_close(fx->dx, dx1, len, 0.0, 0.0);
}

/* ---- LU ------------------------------------------------------------------- */

static int is_involution(const int32_t *p, size_t c)
{
    for (size_t i = 0; i < c; i++)
        if (p[p[i]] != (int32_t)i)
            return 0;
    return 1;
}

static void test_lu_init_rebuilds_w0(void **state)
{
    struct fixture *fx = *state;
    const size_t sizes[] = { 1, 2, 3, 5, 8, 12, 16 };
    int saw_long_cycle = 0;
    ft_real w0[MAXC * MAXC];
    double w0d[MAXC * MAXC];
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (int kind = 0; kind < 2; kind++) {
            size_t c = sizes[s];
            /* kind 0: the QR init matrix; kind 1: a general matrix (QR + noise). */
            fx->c = c;
            if (kind == 0) {
                invconv_init_qr(w0, test_key(200 + c), c, fx->work);
            } else {
                make_plain_w(fx);
                memcpy(w0, fx->w, c * c * sizeof *w0);
            }
            invconv_lu_init(fx->p, fx->l, fx->u, fx->log_s, fx->sign_s, w0, c, fx->work,
                            fx->ipiv);
            /* P is a permutation; sign_s = ±1; the masked entries are stored as 0. */
            int seen[MAXC] = { 0 };
            for (size_t i = 0; i < c; i++) {
                assert_true(fx->p[i] >= 0 && (size_t)fx->p[i] < c);
                assert_int_equal(seen[fx->p[i]]++, 0);
                assert_true(fx->sign_s[i] == 1 || fx->sign_s[i] == -1);
                for (size_t j = 0; j < c; j++) {
                    if (j >= i)
                        assert_true(fx->l[i * c + j] == 0);
                    if (j <= i)
                        assert_true(fx->u[i * c + j] == 0);
                }
            }
            saw_long_cycle |= !is_involution(fx->p, c);
            /* The rebuilt W equals W0, and Σ log_s = ln|det W0| (glow-model.md §13.6). */
            double ldet = 0.0;
            invconv_lu_build(fx->w, fx->winv, &ldet, fx->p, fx->l, fx->u, fx->log_s,
                             fx->sign_s, c, fx->work);
            ft_assert_close(fx->w, w0, c * c, 0.0, 1e-6);
            for (size_t i = 0; i < c * c; i++)
                w0d[i] = (double)w0[i];
            double want = ft_logabsdet(w0d, c, fx->work, fx->ipiv);
            double sum = 0.0;
            for (size_t i = 0; i < c; i++)
                sum += (double)fx->log_s[i];
            ft_assert_close_d(&ldet, &sum, 1, 0.0, 0.0);
            ft_assert_close_d(&sum, &want, 1, 0.0, 1e-6);
        }
    /* The ipiv → P conversion is only really tested by a P that is not its own
     * inverse (a 3-cycle or longer); these fixed draws must contain one. */
    assert_true(saw_long_cycle);
}

static void test_lu_build_inverse(void **state)
{
    struct fixture *fx = *state;
    set_shape(fx, 1, 1, 7);
    size_t c = fx->c;
    double ldet = make_lu_params(fx);
    assert_inverse_pair(fx->w, fx->winv, c, 100 * EPS_REAL);
    assert_inverse_pair(fx->winv, fx->w, c, 100 * EPS_REAL);
    /* Triangular W⁻¹ agrees with the general LAPACK inverse, and Σ log_s with ln|det W|. */
    ft_real winv_lapack[MAXC * MAXC];
    double ld_plain = 0.0;
    assert_int_equal(invconv_prepare(&ld_plain, winv_lapack, NULL, fx->w, c, fx->work,
                                     fx->ipiv), 0);
    ft_assert_close(fx->winv, winv_lapack, c * c, 100 * EPS_REAL, 0.0);
    ft_assert_close_d(&ldet, &ld_plain, 1, 0.0, 100 * EPS_REAL * c);
    assert_true(fabs(ldet) > 0.05);
    /* Without winv only W and the log-det are produced, identically. */
    ft_real w2[MAXC * MAXC];
    double ld2 = 0.0;
    invconv_lu_build(w2, NULL, &ld2, fx->p, fx->l, fx->u, fx->log_s, fx->sign_s, c, fx->work);
    ft_assert_close(w2, fx->w, c * c, 0.0, 0.0);
    ft_assert_close_d(&ld2, &ldet, 1, 0.0, 0.0);
}

static void test_lu_build_ignores_masked(void **state)
{
    struct fixture *fx = *state;
    set_shape(fx, 1, 1, 5);
    size_t c = fx->c;
    make_lu_params(fx);
    ft_real w1[MAXC * MAXC], wi1[MAXC * MAXC];
    memcpy(w1, fx->w, c * c * sizeof *w1);
    memcpy(wi1, fx->winv, c * c * sizeof *wi1);
    for (size_t i = 0; i < c; i++)
        for (size_t j = 0; j < c; j++) {
            if (j >= i)
                fx->l[i * c + j] = (ft_real)(3.0 + (double)(i + j));
            if (j <= i)
                fx->u[i * c + j] = (ft_real)(-2.0 - (double)(i * j));
        }
    double ldet = 0.0;
    invconv_lu_build(fx->w, fx->winv, &ldet, fx->p, fx->l, fx->u, fx->log_s, fx->sign_s, c,
                     fx->work);
    ft_assert_close(fx->w, w1, c * c, 0.0, 0.0);
    ft_assert_close(fx->winv, wi1, c * c, 0.0, 0.0);
}

static void test_lu_round_trip(void **state)
{
    struct fixture *fx = *state;
    set_shape(fx, 2, 16, 6);
    double ldet = make_lu_params(fx);
    assert_true(fabs(ldet) > 0.05);
    round_trips(fx, ldet);
}

static void lu_backward_zeroed(struct fixture *fx)
{
    size_t c = fx->c;
    memset(fx->dl, 0, c * c * sizeof *fx->dl);
    memset(fx->du, 0, c * c * sizeof *fx->du);
    memset(fx->dlog_s, 0, c * sizeof *fx->dlog_s);
    invconv_lu_backward(fx->dx, fx->dl, fx->du, fx->dlog_s, fx->r, fx->x, fx->w, fx->p, fx->l,
                        fx->u, fx->log_s, fx->sign_s, fx->gamma, fx->n, fx->hw, c, fx->work);
}

static void test_lu_backward_masked_and_accumulates(void **state)
{
    struct fixture *fx = *state;
    set_shape(fx, 2, 4, 5);
    size_t c = fx->c, len = fx->n * fx->hw * c;
    make_lu_params(fx);
    lu_backward_zeroed(fx);
    /* Masked entries get no gradient; the free ones do. */
    for (size_t i = 0; i < c; i++)
        for (size_t j = 0; j < c; j++) {
            if (j >= i)
                assert_true(fx->dl[i * c + j] == 0);
            else
                assert_true(fx->dl[i * c + j] != 0);
            if (j <= i)
                assert_true(fx->du[i * c + j] == 0);
            else
                assert_true(fx->du[i * c + j] != 0);
        }
    /* dx = dy·Wᵀ, as in the plain layer with the built W. */
    ft_real dxp[MAXN * MAXHW * MAXC], dwp[MAXC * MAXC];
    memset(dwp, 0, sizeof dwp);
    invconv_backward(dxp, dwp, fx->r, fx->x, fx->w, NULL, NULL, fx->n, fx->hw, c);
    ft_assert_close(fx->dx, dxp, len, 0.0, 0.0);
    /* A second call adds the same again. */
    ft_real dl1[MAXC * MAXC], du1[MAXC * MAXC], ds1[MAXC];
    for (size_t i = 0; i < c * c; i++) {
        dl1[i] = 2 * fx->dl[i];
        du1[i] = 2 * fx->du[i];
    }
    for (size_t i = 0; i < c; i++)
        ds1[i] = 2 * fx->dlog_s[i];
    invconv_lu_backward(fx->dx, fx->dl, fx->du, fx->dlog_s, fx->r, fx->x, fx->w, fx->p, fx->l,
                        fx->u, fx->log_s, fx->sign_s, fx->gamma, fx->n, fx->hw, c, fx->work);
    ft_assert_close(fx->dl, dl1, c * c, 10 * EPS_REAL, 0.0);
    ft_assert_close(fx->du, du1, c * c, 10 * EPS_REAL, 0.0);
    ft_assert_close(fx->dlog_s, ds1, c, 10 * EPS_REAL, 0.0);
}

/* ---- float64: brute-force log-dets and gradient checks -------------------- */

#ifdef FT_REAL_DOUBLE
static void layer_map(ft_real *y, const ft_real *x, void *ctx)
{
    struct fixture *fx = ctx;
    invconv_forward(y, NULL, x, fx->w, 0.0, fx->n, fx->hw, fx->c);
}

/* Layer log-det of one 4x4x4 example against ln|det J| of the whole map (D = 64). */
static void check_logdet_brute(struct fixture *fx, double ldet)
{
    memset(fx->logdet, 0, sizeof *fx->logdet);
    invconv_forward(fx->y, fx->logdet, fx->x, fx->w, ldet, fx->n, fx->hw, fx->c);
    double brute = ft_brute_logdet(layer_map, fx, fx->x, fx->n * fx->hw * fx->c, 1e-6);
    ft_assert_close_d(fx->logdet, &brute, 1, 0.0, 1e-4);
    assert_true(fabs(brute) > 0.5);     /* W is far enough from orthogonal to matter */
}

static void test_plain_logdet_brute(void **state)
{
    struct fixture *fx = *state;
    set_shape(fx, 1, 16, 4);
    check_logdet_brute(fx, make_plain_w(fx));
}

static void test_lu_logdet_brute(void **state)
{
    struct fixture *fx = *state;
    set_shape(fx, 1, 16, 4);
    check_logdet_brute(fx, make_lu_params(fx));
}

/* Σ_n γ_n·logdet_n + Σ r⊙y for the current parameters of the selected form. */
static double layer_loss(void *ctx)
{
    struct fixture *fx = ctx;
    size_t n = fx->n, c = fx->c;
    double ldet = 0.0;
    if (fx->lu)
        invconv_lu_build(fx->w, NULL, &ldet, fx->p, fx->l, fx->u, fx->log_s, fx->sign_s, c,
                         fx->work);
    else
        assert_int_equal(invconv_prepare(&ldet, NULL, NULL, fx->w, c, fx->work, fx->ipiv), 0);
    memset(fx->logdet2, 0, n * sizeof *fx->logdet2);
    invconv_forward(fx->y, fx->logdet2, fx->x, fx->w, ldet, n, fx->hw, c);
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += fx->gamma[i] * fx->logdet2[i];
    for (size_t i = 0; i < n * fx->hw * c; i++)
        s += (double)fx->r[i] * (double)fx->y[i];
    return s;
}

static void test_plain_grad(void **state)
{
    struct fixture *fx = *state;
    set_shape(fx, 2, 4, 5);
    size_t c = fx->c;
    fx->lu = 0;
    make_plain_w(fx);
    memset(fx->dw, 0, c * c * sizeof *fx->dw);
    invconv_backward(fx->dx, fx->dw, fx->r, fx->x, fx->w, fx->wit, fx->gamma, fx->n, fx->hw, c);
    ft_check_grad(layer_loss, fx, fx->w, fx->dw, c * c, 0);
    ft_check_grad(layer_loss, fx, fx->x, fx->dx, fx->n * fx->hw * c, 0);
}

static void test_lu_grad(void **state)
{
    struct fixture *fx = *state;
    set_shape(fx, 2, 4, 5);
    size_t c = fx->c;
    fx->lu = 1;
    make_lu_params(fx);
    lu_backward_zeroed(fx);
    /* Every element of L and U, masked ones included (numerically 0 there). */
    ft_check_grad(layer_loss, fx, fx->l, fx->dl, c * c, 0);
    ft_check_grad(layer_loss, fx, fx->u, fx->du, c * c, 0);
    ft_check_grad(layer_loss, fx, fx->log_s, fx->dlog_s, c, 0);
    ft_check_grad(layer_loss, fx, fx->x, fx->dx, fx->n * fx->hw * c, 0);
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_init_qr_orthogonal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepare_inverses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepare_singular, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_backward_accumulates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lu_init_rebuilds_w0, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lu_build_inverse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lu_build_ignores_masked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lu_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lu_backward_masked_and_accumulates, setup, teardown),
#ifdef FT_REAL_DOUBLE
        cmocka_unit_test_setup_teardown(test_plain_logdet_brute, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lu_logdet_brute, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_grad, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lu_grad, setup, teardown),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
