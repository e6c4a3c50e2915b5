/* conv1's small-K GEMM with its ActNorm + ReLU epilogue (see gemm_small.h).
 * The AVX-512 tile keeps a 4×64 block of C in 16 registers: per term p, four
 * 16-wide pieces of B's row p and four broadcast elements of A feed 16 fused
 * multiply-adds; B (k×64 floats per column block) stays in L1. */
#include "gemm_small.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(FT_REAL_DOUBLE)
#define FT_SMALL_AVX512 1
#include <immintrin.h>
#else
#define FT_SMALL_AVX512 0
#endif

#ifdef FT_REAL_DOUBLE
#define FT_FMA fma
#else
#define FT_FMA fmaf
#endif

static pthread_once_t avail_once = PTHREAD_ONCE_INIT;
static int avail;

static void avail_init(void)
{
    const char *e = getenv("FLOWTRAIN_KERNELS");
    int off = e != NULL && (strcmp(e, "blas") == 0 || strcmp(e, "openblas") == 0);
#if FT_SMALL_AVX512
    __builtin_cpu_init();
    avail = !off && __builtin_cpu_supports("avx512f");
#else
    (void)off;
#endif
}

int ft_small_available(void)
{
    FT_CHECK(pthread_once(&avail_once, avail_init) == 0, "pthread_once failed");
    return avail;
}

#if FT_SMALL_AVX512
/* C[0..R)[0..16Q) = A[0..R)[0..k) · B[0..k)[0..16Q), then the epilogue with
 * bias and sc (already float) of those columns when bias is not NULL. */
static inline __attribute__((always_inline, target("avx512f"))) void
nn_tile(const int R, const int Q, size_t k, const float *a, size_t lda, const float *b,
        size_t ldb, float *c, size_t ldc, const float *bias, const float *sc)
{
    __m512 acc[4][4], bv[4];
    for (int r = 0; r < R; r++)
        for (int q = 0; q < Q; q++)
            acc[r][q] = _mm512_setzero_ps();
    for (size_t p = 0; p < k; p++) {
        for (int q = 0; q < Q; q++)
            bv[q] = _mm512_loadu_ps(b + p * ldb + 16 * q);
        for (int r = 0; r < R; r++) {
            __m512 s = _mm512_set1_ps(a[r * lda + p]);
            for (int q = 0; q < Q; q++)
                acc[r][q] = _mm512_fmadd_ps(s, bv[q], acc[r][q]);
        }
    }
    /* max(v, +0) is +0 for v ≤ 0 and for NaN, as v > 0 ? v : 0 is */
    if (bias)
        for (int q = 0; q < Q; q++) {
            __m512 bq = _mm512_loadu_ps(bias + 16 * q), sq = _mm512_loadu_ps(sc + 16 * q);
            for (int r = 0; r < R; r++)
                acc[r][q] = _mm512_max_ps(_mm512_mul_ps(_mm512_add_ps(acc[r][q], bq), sq),
                                          _mm512_setzero_ps());
        }
    for (int r = 0; r < R; r++)
        for (int q = 0; q < Q; q++)
            _mm512_storeu_ps(c + r * ldc + 16 * q, acc[r][q]);
}

__attribute__((target("avx512f"))) static void
nn_avx512(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b, size_t ldb,
          float *c, size_t ldc, const float *bias, const double *scale)
{
    float sc[64];
    for (size_t j = 0; j < n; j += 64) {
        const size_t nj = n - j < 64 ? n - j : 64;
        const float *bj = bias ? bias + j : NULL;
        if (bias)
            for (size_t q = 0; q < nj; q++)
                sc[q] = (float)scale[j + q];
        size_t i = 0;
        if (nj == 64) {
            for (; i + 4 <= m; i += 4)
                nn_tile(4, 4, k, a + i * lda, lda, b + j, ldb, c + i * ldc + j, ldc, bj, sc);
            for (; i < m; i++)
                nn_tile(1, 4, k, a + i * lda, lda, b + j, ldb, c + i * ldc + j, ldc, bj, sc);
            continue;
        }
        for (size_t q = 0; q < nj; q += 16) {
            const float *bq = bias ? bj + q : NULL;
            for (i = 0; i + 4 <= m; i += 4)
                nn_tile(4, 1, k, a + i * lda, lda, b + j + q, ldb, c + i * ldc + j + q, ldc, bq,
                        sc + q);
            for (; i < m; i++)
                nn_tile(1, 1, k, a + i * lda, lda, b + j + q, ldb, c + i * ldc + j + q, ldc, bq,
                        sc + q);
        }
    }
}
#endif

void ft_small_nn(size_t m, size_t n, size_t k, const ft_real *a, size_t lda, const ft_real *b,
                 size_t ldb, ft_real *c, size_t ldc, const ft_real *bias, const double *scale)
{
    FT_CHECK(k <= FT_SMALL_MAX && n % 16 == 0, "ft_small_nn: k %zu or n %zu out of range", k, n);
#if FT_SMALL_AVX512
    if (ft_small_available()) {
        nn_avx512(m, n, k, a, lda, b, ldb, c, ldc, bias, scale);
        return;
    }
#endif
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            ft_real s = 0;
            for (size_t p = 0; p < k; p++)
                s = FT_FMA(a[i * lda + p], b[p * ldb + j], s);
            if (bias) {
                s = (s + bias[j]) * (ft_real)scale[j];
                s = s > 0 ? s : 0;
            }
            c[i * ldc + j] = s;
        }
}
