/* Tests of blas.c: ft_gemm against a naive triple loop (all four transpose
 * combinations, non-square shapes, padded leading dimensions, alpha and beta;
 * small shapes and ones split over the threads on each GEMM library),
 * and the double LAPACK wrappers: a = P·L·U rebuilt from ipiv, A⁻¹·A = I,
 * ln|det(U·P_mat)| = Σ ln|u_ii|, and Q of QR orthogonal with Qᵀ·A upper triangular. */
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

#ifdef FT_REAL_DOUBLE
#define GEMM_RTOL 1e-13
#else
#define GEMM_RTOL 1e-5      /* sgemm over k = 7 O(1) terms: a few float ulps expected */
#endif

static void fill_normal_d(double *a, size_t n, unsigned long seed)
{
    ft_real *t = ft_malloc(n * sizeof *t);
    ft_fill_normal(t, n, 1.0, seed);
    for (size_t i = 0; i < n; i++)
        a[i] = (double)t[i];
    free(t);
}

static void matmul_d(double *c, const double *a, const double *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) {
            double s = 0.0;
            for (size_t k = 0; k < n; k++)
                s += a[i * n + k] * b[k * n + j];
            c[i * n + j] = s;
        }
}

static void identity_d(double *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            a[i * n + j] = i == j ? 1.0 : 0.0;
}

/* C = alpha·op(A)·op(B) + beta·C on the first m×n block of a ldc-strided C. */
static void gemm_naive(int ta, int tb, size_t m, size_t n, size_t k, double alpha,
                       const ft_real *a, size_t lda, const ft_real *b, size_t ldb,
                       double beta, ft_real *c, size_t ldc)
{
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            double s = 0.0;
            for (size_t p = 0; p < k; p++) {
                double av = ta ? a[p * lda + i] : a[i * lda + p];
                double bv = tb ? b[j * ldb + p] : b[p * ldb + j];
                s += av * bv;
            }
            c[i * ldc + j] = (ft_real)(alpha * s + beta * (double)c[i * ldc + j]);
        }
}

static void test_gemm_all_transposes(void **state)
{
    (void)state;
    const size_t m = 5, n = 3, k = 7, pad = 2;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            /* A is m×k (or k×m stored when transposed), B is k×n (or n×k). */
            size_t arows = ta ? k : m, acols = ta ? m : k;
            size_t brows = tb ? n : k, bcols = tb ? k : n;
            size_t lda = acols + pad, ldb = bcols + pad + 1, ldc = n + pad;
            ft_real *a = ft_malloc(arows * lda * sizeof *a);
            ft_real *b = ft_malloc(brows * ldb * sizeof *b);
            ft_real *c = ft_malloc(m * ldc * sizeof *c);
            ft_real *want = ft_malloc(m * ldc * sizeof *want);
            ft_fill_normal(a, arows * lda, 1.0, 10 + (unsigned long)(2 * ta + tb));
            ft_fill_normal(b, brows * ldb, 1.0, 20 + (unsigned long)(2 * ta + tb));
            ft_fill_normal(c, m * ldc, 1.0, 30);
            memcpy(want, c, m * ldc * sizeof *c);
            ft_gemm(ta, tb, m, n, k, (ft_real)0.75, a, lda, b, ldb, (ft_real)0.5, c, ldc);
            gemm_naive(ta, tb, m, n, k, 0.75, a, lda, b, ldb, 0.5, want, ldc);
            /* The padding columns of C must be untouched (they compare equal to
             * the original values that gemm_naive left there too). */
            ft_assert_close(c, want, m * ldc, GEMM_RTOL, 0.0);
            free(want);
            free(c);
            free(b);
            free(a);
        }
}

static void test_gemm_beta_zero_ignores_garbage(void **state)
{
    (void)state;
    const size_t m = 4, n = 6, k = 3;
    ft_real a[4 * 3], b[3 * 6], c[4 * 6], want[4 * 6];
    ft_fill_normal(a, m * k, 1.0, 40);
    ft_fill_normal(b, k * n, 1.0, 41);
    for (size_t i = 0; i < m * n; i++) {
        c[i] = (ft_real)NAN;     /* beta = 0 must not read C (BLAS semantics) */
        want[i] = 0;
    }
    ft_gemm(0, 0, m, n, k, 1, a, k, b, n, 0, c, n);
    gemm_naive(0, 0, m, n, k, 1.0, a, k, b, n, 0.0, want, n);
    ft_assert_close(c, want, m * n, GEMM_RTOL, 0.0);
}

/* Shapes large enough to be split over the threads, so that every library
 * path of gemm1 runs: oneDNN on row and column blocks, OpenBLAS for the wide
 * Aᵀ·B blocks (both sides ≥ 512 before the split), beta = 0 over NaN garbage,
 * and ft_gemm_tn_acc's split of K with partials in scratch. */
static void test_gemm_threaded_shapes(void **state)
{
    (void)state;
    const size_t shapes[][3] = { { 600, 520, 70 }, { 40, 700, 300 }, { 1030, 48, 90 } };
    for (size_t s = 0; s < 3; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int garbage = 0; garbage < 2; garbage++) {
                    const size_t m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
                    size_t lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 1, ldc = n + 2;
                    ft_real *a = ft_malloc((ta ? k : m) * lda * sizeof *a);
                    ft_real *b = ft_malloc((tb ? n : k) * ldb * sizeof *b);
                    ft_real *c = ft_malloc(m * ldc * sizeof *c);
                    ft_real *want = ft_malloc(m * ldc * sizeof *want);
                    ft_fill_normal(a, (ta ? k : m) * lda, 1.0, 50 + s);
                    ft_fill_normal(b, (tb ? n : k) * ldb, 1.0, 60 + s);
                    ft_fill_normal(c, m * ldc, 1.0, 70 + s);
                    memcpy(want, c, m * ldc * sizeof *c);
                    if (garbage)
                        for (size_t i = 0; i < m; i++)
                            for (size_t j = 0; j < n; j++)
                                c[i * ldc + j] = (ft_real)NAN;
                    const double beta = garbage ? 0.0 : 0.5;
                    ft_gemm(ta, tb, m, n, k, (ft_real)0.75, a, lda, b, ldb, (ft_real)beta, c,
                            ldc);
                    gemm_naive(ta, tb, m, n, k, 0.75, a, lda, b, ldb, beta, want, ldc);
                    ft_assert_close(c, want, m * ldc, GEMM_RTOL, 0.0);
                    free(want);
                    free(c);
                    free(b);
                    free(a);
                }
    /* C += Aᵀ·B split by K: 520×530 (OpenBLAS) and 48×530 (oneDNN) blocks. */
    const size_t ms[] = { 520, 48 };
    for (size_t s = 0; s < 2; s++) {
        const size_t m = ms[s], n = 530, k = 200, ldc = n + 1;
        ft_real *a = ft_malloc(k * m * sizeof *a), *b = ft_malloc(k * n * sizeof *b);
        ft_real *c = ft_malloc(m * ldc * sizeof *c), *want = ft_malloc(m * ldc * sizeof *want);
        ft_real *scratch = ft_malloc((size_t)ft_threads() * m * n * sizeof *scratch);
        ft_fill_normal(a, k * m, 1.0, 80);
        ft_fill_normal(b, k * n, 1.0, 81);
        ft_fill_normal(c, m * ldc, 1.0, 82);
        memcpy(want, c, m * ldc * sizeof *c);
        ft_gemm_tn_acc(m, n, k, a, m, b, n, c, ldc, scratch, (size_t)ft_threads() * m * n);
        gemm_naive(1, 0, m, n, k, 1.0, a, m, b, n, 1.0, want, ldc);
        ft_assert_close(c, want, m * ldc, GEMM_RTOL, 0.0);
        free(scratch);
        free(want);
        free(c);
        free(b);
        free(a);
    }
}

static void test_lu_factor_rebuilds(void **state)
{
    (void)state;
    const size_t sizes[] = { 1, 2, 5, 9 };
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        double *a0 = ft_malloc(n * n * sizeof *a0), *lu = ft_malloc(n * n * sizeof *lu);
        double *l = ft_malloc(n * n * sizeof *l), *u = ft_malloc(n * n * sizeof *u);
        double *m = ft_malloc(n * n * sizeof *m);
        int *ipiv = ft_malloc(n * sizeof *ipiv);
        fill_normal_d(a0, n * n, 50 + s);
        memcpy(lu, a0, n * n * sizeof *lu);
        assert_int_equal(ft_lu_factor(lu, ipiv, n), 0);
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < n; j++) {
                l[i * n + j] = j < i ? lu[i * n + j] : (j == i ? 1.0 : 0.0);
                u[i * n + j] = j >= i ? lu[i * n + j] : 0.0;
                /* Partial pivoting keeps every multiplier at most 1 in magnitude. */
                if (j < i)
                    assert_true(fabs(lu[i * n + j]) <= 1.0);
            }
        matmul_d(m, l, u, n);
        /* P·L·U = A means L·U = A with the interchanges applied in order. */
        for (size_t k = 0; k < n; k++) {
            size_t t = (size_t)(ipiv[k] - 1);
            assert_true(t >= k && t < n);
            for (size_t j = 0; j < n; j++) {
                double tmp = a0[k * n + j];
                a0[k * n + j] = a0[t * n + j];
                a0[t * n + j] = tmp;
            }
        }
        ft_assert_close_d(m, a0, n * n, 1e-13, 0.0);
        free(ipiv);
        free(m);
        free(u);
        free(l);
        free(lu);
        free(a0);
    }
}

static void test_lu_factor_singular(void **state)
{
    (void)state;
    double a[9] = { 1, 2, 3, 2, 4, 6, 1, 0, 1 };   /* row 1 = 2·row 0 */
    int ipiv[3];
    assert_true(ft_lu_factor(a, ipiv, 3) > 0);
}

static void test_inverse(void **state)
{
    (void)state;
    const size_t n = 6;
    double a[36], inv[36], prod[36], eye[36], work[36];
    int ipiv[6];
    fill_normal_d(a, n * n, 60);
    a[0 * n + 5] += 4.0;    /* strongly non-symmetric, so a transposed result fails */
    memcpy(inv, a, sizeof a);
    assert_int_equal(ft_inverse(inv, n, work, ipiv), 0);
    identity_d(eye, n);
    matmul_d(prod, inv, a, n);
    ft_assert_close_d(prod, eye, n * n, 0.0, 1e-12);
    matmul_d(prod, a, inv, n);
    ft_assert_close_d(prod, eye, n * n, 0.0, 1e-12);

    double sing[4] = { 1, 2, 2, 4 };
    assert_int_not_equal(ft_inverse(sing, 2, work, ipiv), 0);
}

static void test_logabsdet_known(void **state)
{
    (void)state;
    /* A = U·P_mat with U upper triangular: |det A| = Π |u_ii|. */
    const size_t n = 5;
    const double diag[5] = { 2.0, -0.5, 3.0, 0.25, -1.5 };
    const size_t perm[5] = { 3, 0, 4, 1, 2 };     /* P_mat[i][perm[i]] = 1 */
    double u[25], pm[25], a[25], work[25];
    int ipiv[5];
    fill_normal_d(u, n * n, 70);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) {
            if (j < i)
                u[i * n + j] = 0.0;
            if (j == i)
                u[i * n + j] = diag[i];
            pm[i * n + j] = j == perm[i] ? 1.0 : 0.0;
        }
    matmul_d(a, u, pm, n);
    double want = 0.0;
    for (size_t i = 0; i < n; i++)
        want += log(fabs(diag[i]));
    double got = ft_logabsdet(a, n, work, ipiv);
    ft_assert_close_d(&got, &want, 1, 0.0, 1e-13);

    /* The input is not modified, and a singular matrix gives −inf. */
    double a2[25];
    matmul_d(a2, u, pm, n);
    ft_assert_close_d(a, a2, n * n, 0.0, 0.0);
    double sing[9] = { 1, 2, 3, 4, 5, 6, 5, 7, 9 };  /* row 2 = row 0 + row 1 */
    double ws[9];
    int ip3[3];
    double ld = ft_logabsdet(sing, 3, ws, ip3);
    assert_true(ld < -20.0);   /* exactly −inf, or ln of a rounding residue */
}

static void test_qr_q(void **state)
{
    (void)state;
    const size_t sizes[] = { 1, 3, 8 };
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        double *a = ft_malloc(n * n * sizeof *a), *q = ft_malloc(n * n * sizeof *q);
        double *qt = ft_malloc(n * n * sizeof *qt), *r = ft_malloc(n * n * sizeof *r);
        double *prod = ft_malloc(n * n * sizeof *prod), *eye = ft_malloc(n * n * sizeof *eye);
        double *work = ft_malloc((2 * n * n + n) * sizeof *work);
        fill_normal_d(a, n * n, 80 + s);
        memcpy(q, a, n * n * sizeof *q);
        ft_qr_q(q, n, work);
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < n; j++)
                qt[j * n + i] = q[i * n + j];
        identity_d(eye, n);
        matmul_d(prod, qt, q, n);
        ft_assert_close_d(prod, eye, n * n, 0.0, 1e-13);
        matmul_d(prod, q, qt, n);
        ft_assert_close_d(prod, eye, n * n, 0.0, 1e-13);
        /* R = Qᵀ·A is upper triangular (so Q is A's own Q, not Aᵀ's), and Q·R = A. */
        matmul_d(r, qt, a, n);
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < i; j++)
                if (fabs(r[i * n + j]) > 1e-12)
                    fail_msg("R[%zu][%zu] = %g below the diagonal (n = %zu)", i, j,
                             r[i * n + j], n);
        matmul_d(prod, q, r, n);
        ft_assert_close_d(prod, a, n * n, 1e-13, 0.0);
        free(work);
        free(eye);
        free(prod);
        free(r);
        free(qt);
        free(q);
        free(a);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_all_transposes),
        cmocka_unit_test(test_gemm_beta_zero_ignores_garbage),
        cmocka_unit_test(test_gemm_threaded_shapes),
        cmocka_unit_test(test_lu_factor_rebuilds),
        cmocka_unit_test(test_lu_factor_singular),
        cmocka_unit_test(test_inverse),
        cmocka_unit_test(test_logabsdet_known),
        cmocka_unit_test(test_qr_q),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
