/* GEMM and LAPACK wrappers. Row-major n×n matrices are handed to the
 * column-major Fortran LAPACK as their transposes: det(Aᵀ) = det(A),
 * (Aᵀ)⁻¹ = (A⁻¹)ᵀ, and LU/QR of the transpose are used accordingly. */
#include "blas.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "check.h"

void dgetrf_(const int *m, const int *n, double *a, const int *lda, int *ipiv, int *info);
void dgetri_(const int *n, double *a, const int *lda, const int *ipiv, double *work,
             const int *lwork, int *info);
void dgeqrf_(const int *m, const int *n, double *a, const int *lda, double *tau,
             double *work, const int *lwork, int *info);
void dorgqr_(const int *m, const int *n, const int *k, double *a, const int *lda,
             const double *tau, double *work, const int *lwork, int *info);

void ft_gemm(int trans_a, int trans_b, size_t m, size_t n, size_t k,
             ft_real alpha, const ft_real *a, size_t lda, const ft_real *b, size_t ldb,
             ft_real beta, ft_real *c, size_t ldc)
{
    if (m == 0 || n == 0)
        return;
    FT_CHECK(m < 2147483647u && n < 2147483647u && k < 2147483647u, "gemm too large");
#ifdef FT_REAL_DOUBLE
    cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha,
                a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
#else
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha,
                a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
#endif
}

static void transpose_sq(double *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++) {
            double t = a[i * n + j];
            a[i * n + j] = a[j * n + i];
            a[j * n + i] = t;
        }
}

int ft_lu_factor(double *a, int *ipiv, size_t n)
{
    /* LAPACK sees a row-major matrix as its transpose: transpose in and out so
     * that a = P·L·U holds for the row-major a (unit-diagonal L below, U on and
     * above the diagonal; ipiv as LAPACK, 1-based row interchanges). */
    int nn = (int)n, info = 0;
    transpose_sq(a, n);
    dgetrf_(&nn, &nn, a, &nn, ipiv, &info);
    transpose_sq(a, n);
    return info;
}

double ft_logabsdet(const double *a, size_t n, double *work, int *ipiv)
{
    /* det(Aᵀ) = det(A): factor what LAPACK sees, no transposes needed. */
    int nn = (int)n, info = 0;
    memcpy(work, a, n * n * sizeof *work);
    dgetrf_(&nn, &nn, work, &nn, ipiv, &info);
    FT_CHECK(info >= 0, "dgetrf argument error %d", info);
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(work[i * n + i]);
        if (d == 0.0)
            return -INFINITY;
        s += log(d);
    }
    return s;
}

int ft_inverse(double *a, size_t n, double *work, int *ipiv)
{
    int nn = (int)n, info = 0, lwork = (int)(n * n);
    dgetrf_(&nn, &nn, a, &nn, ipiv, &info);
    if (info != 0)
        return info;
    dgetri_(&nn, a, &nn, ipiv, work, &lwork, &info);
    return info;
}

void ft_qr_q(double *a, size_t n, double *work)
{
    /* Q of A: LAPACK factors Aᵀ (what it sees) = Q'R', so transpose in, take Q'
     * out, and transpose back to get the Q of A itself. */
    int nn = (int)n, info = 0, lwork = (int)(n * n);
    double *t = work, *tau = work + n * n, *w = tau + n;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            t[j * n + i] = a[i * n + j];      /* column-major copy of A */
    dgeqrf_(&nn, &nn, t, &nn, tau, w, &lwork, &info);
    FT_CHECK(info == 0, "dgeqrf failed: %d", info);
    dorgqr_(&nn, &nn, &nn, t, &nn, tau, w, &lwork, &info);
    FT_CHECK(info == 0, "dorgqr failed: %d", info);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            a[i * n + j] = t[j * n + i];
}
