/* Dense linear algebra for the kernels: row-major GEMM (float32 on oneDNN's
 * sgemm, or OpenBLAS's where that is faster; OpenBLAS's dgemm for the float64
 * test build) and the few LAPACK factorisations the invertible 1x1
 * convolution needs, always in double (glow-model.md §6). */
#ifndef FT_BLAS_H
#define FT_BLAS_H

#include <stddef.h>
#include "real.h"

/* Threads of the numeric kernels: min(OPENBLAS_NUM_THREADS, OpenMP's maximum),
 * read once. The first call also sets OpenBLAS itself to one thread and
 * OpenMP's default to that count, since the kernels' OpenMP regions (ft_gemm
 * included) own the parallelism. */
int ft_threads(void);

/* C = alpha·op(A)·op(B) + beta·C, row-major; op(A) is m×k, op(B) k×n. Large
 * products are split by rows or columns of C over ft_threads() threads. */
void ft_gemm(int trans_a, int trans_b, size_t m, size_t n, size_t k,
             ft_real alpha, const ft_real *a, size_t lda, const ft_real *b, size_t ldb,
             ft_real beta, ft_real *c, size_t ldc);

/* C += Aᵀ·B (A: k×m, B: k×n; a weight gradient summed over k pixels). With
 * scratch of at least (ft_threads() − 1)·m·n elements the sum over k is
 * split between the threads and the partials added in thread order (the
 * bits depend on the thread count, not on the run); otherwise ft_gemm. */
void ft_gemm_tn_acc(size_t m, size_t n, size_t k, const ft_real *a, size_t lda,
                    const ft_real *b, size_t ldb, ft_real *c, size_t ldc,
                    ft_real *scratch, size_t scratch_len);

/* C = A·op(B) (beta 0; A is m×k row-major), computed in blocks of rows of C
 * spread over the threads; right after each block's GEMM, while it is in
 * cache, ep(ep_ctx, r0, r1) runs on the same thread for rows r0..r1−1 (it
 * must touch only those rows). Replaces a GEMM and a separate pass over C.
 * Block j is rows [j·B, (j+1)·B), B = ft_rows_block(m, n), on any thread count. */
void ft_gemm_rows(int trans_b, size_t m, size_t n, size_t k, const ft_real *a, size_t lda,
                  const ft_real *b, size_t ldb, ft_real *c, size_t ldc,
                  void (*ep)(void *ctx, size_t r0, size_t r1), void *ep_ctx);
size_t ft_rows_block(size_t m, size_t n);
/* The most blocks ft_gemm_rows cuts any m ≤ m_max rows into. */
size_t ft_rows_blocks_max(size_t m_max, size_t n);
/* An epilogue as ft_gemm_rows takes it, for functions that pass one on. */
struct ft_rows_ep {
    void (*fn)(void *ctx, size_t r0, size_t r1);
    void *ctx;
};
/* fn(ctx, r0, r1) over the rows 0..m−1 of an m×n array in the blocks and on
 * the threads ft_gemm_rows would use. */
void ft_rows_parallel(size_t m, size_t n, void (*fn)(void *ctx, size_t r0, size_t r1), void *ctx);

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
