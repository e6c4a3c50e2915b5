/* An AVX-512 kernel for conv1 of the coupling networks: y = ReLU(ActNorm(
 * cols·W)) with K = 9·(C/2 + 1) = 27..81 terms and the hidden width as N.
 * At that K, OpenBLAS's packing of both operands and its clearing of C are
 * a large part of the work (one core, C in L2: OpenBLAS 45 GFLOP/s, this
 * kernel 69), and the ActNorm + ReLU epilogue is one more pass over C. This
 * kernel reads A and B in place and applies the epilogue in registers, so C
 * is written once (in a one-thread microbenchmark of 2048 rows at K = 27,
 * N = 512: 1.43 ms, against 1.89 ms for the same kernel followed by the
 * separate epilogue pass). */
#ifndef FT_GEMM_SMALL_H
#define FT_GEMM_SMALL_H

#include <stddef.h>
#include "real.h"

/* Largest inner dimension K of ft_small_nn. */
#define FT_SMALL_MAX 96

/* 1 if the kernel runs on this CPU and build: AVX-512F, float32, and the
 * environment does not set FLOWTRAIN_KERNELS=blas (every GEMM on the BLAS
 * libraries, e.g. to compare) or =openblas (every GEMM on OpenBLAS). */
int ft_small_available(void);

/* C = max((A·B + bias)·(ft_real)scale, 0) per column, or C = A·B when bias is
 * NULL; A: m×k, B: k×n, row-major; k ≤ FT_SMALL_MAX, n a multiple of 16. Runs
 * on the calling thread. Each element is its sum over p = 0..k−1 in order,
 * one fused multiply-add per term, then the epilogue as actnorm_relu_apply
 * computes it; without AVX-512 the same loops run in plain C, same bits. */
void ft_small_nn(size_t m, size_t n, size_t k, const ft_real *a, size_t lda, const ft_real *b,
                 size_t ldb, ft_real *c, size_t ldc, const ft_real *bias, const double *scale);

#endif
