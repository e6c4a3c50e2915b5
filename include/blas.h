/* Dense linear algebra for the kernels: row-major GEMM on OpenBLAS (sgemm for
 * float32, dgemm for the float64 test build) and the few LAPACK factorisations
 * the invertible 1x1 convolution needs, always in double (glow-model.md §6). */
#ifndef FT_BLAS_H
#define FT_BLAS_H

#include <stddef.h>
#include "real.h"

/* C = alpha·op(A)·op(B) + beta·C, row-major; op(A) is m×k, op(B) k×n. */
void ft_gemm(int trans_a, int trans_b, size_t m, size_t n, size_t k,
             ft_real alpha, const ft_real *a, size_t lda, const ft_real *b, size_t ldb,
             ft_real beta, ft_real *c, size_t ldc);

/* LU with partial pivoting of the row-major n×n matrix a = P·L·U (LAPACK dgetrf):
 * a is overwritten by L (strictly below the diagonal, unit diagonal implied) and
 * U (on and above); ipiv: n, 1-based row interchanges as LAPACK returns them.
 * Returns 0, or LAPACK's info (> 0: U is singular). */
int ft_lu_factor(double *a, int *ipiv, size_t n);
/* ln|det a| of a row-major n×n matrix; work: n·n doubles, ipiv: n. -inf if singular. */
double ft_logabsdet(const double *a, size_t n, double *work, int *ipiv);
/* a ← a⁻¹ in place (row-major n×n). work: n·n doubles (LAPACK workspace), ipiv: n.
 * Returns 0, or non-zero when a is singular. */
int ft_inverse(double *a, size_t n, double *work, int *ipiv);
/* a ← Q of the QR decomposition of a (row-major n×n), Householder (LAPACK
 * dgeqrf + dorgqr), no sign correction. work: 2·n·n + n doubles. */
void ft_qr_q(double *a, size_t n, double *work);

#endif
