/* GEMM and LAPACK wrappers, and the kernels' thread count. Row-major n×n
 * matrices are handed to the column-major Fortran LAPACK as their transposes:
 * det(Aᵀ) = det(A), (Aᵀ)⁻¹ = (A⁻¹)ᵀ, and LU/QR of the transpose are used
 * accordingly. The GEMMs are split over the OpenMP threads, each running a
 * single-threaded oneDNN or OpenBLAS call (gemm1): by blocks of C (ft_gemm),
 * by K for weight gradients (ft_gemm_tn_acc), or by row blocks with an
 * epilogue (ft_gemm_rows). */
#include "blas.h"

#include <cblas.h>
#include <math.h>
#ifndef FT_REAL_DOUBLE
#include <oneapi/dnnl/dnnl.h>
#endif
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

void dgetrf_(const int *m, const int *n, double *a, const int *lda, int *ipiv, int *info);
void dgetri_(const int *n, double *a, const int *lda, const int *ipiv, double *work,
             const int *lwork, int *info);
void dgeqrf_(const int *m, const int *n, double *a, const int *lda, double *tau,
             double *work, const int *lwork, int *info);
void dorgqr_(const int *m, const int *n, const int *k, double *a, const int *lda,
             const double *tau, double *work, const int *lwork, int *info);

/* One pool of threads for everything: OpenBLAS's own pthreads would spin
 * (sched_yield) between calls on the core that the OpenMP threads of the
 * elementwise kernels need, and OpenMP's spinning workers would steal the
 * core from OpenBLAS's threads during a GEMM (measured: GEMMs 13% slower and
 * elementwise passes slower than serial). So the thread count is fixed once
 * from both libraries' settings (OPENBLAS_NUM_THREADS is the documented knob,
 * OMP_NUM_THREADS may lower it) and OpenBLAS is switched to one thread; the
 * GEMMs are split over the OpenMP threads below. The count is a constant of
 * the process once read, so there is no state to pass around. */
static pthread_once_t threads_once = PTHREAD_ONCE_INIT;
static int threads_n = 1;
static int openblas_only;   /* FLOWTRAIN_KERNELS=openblas: no oneDNN, to compare */

static void threads_init(void)
{
    int nb = openblas_get_num_threads(), no = omp_get_max_threads();
    threads_n = nb < no ? nb : no;
    if (threads_n < 1)
        threads_n = 1;
    openblas_set_num_threads(1);
    omp_set_num_threads(threads_n);   /* oneDNN's threads, for calls outside a region */
    const char *e = getenv("FLOWTRAIN_KERNELS");
    openblas_only = e != NULL && strcmp(e, "openblas") == 0;
}

int ft_threads(void)
{
    FT_CHECK(pthread_once(&threads_once, threads_init) == 0, "pthread_once failed");
    return threads_n;
}

/* One thread's GEMM. float32 runs on oneDNN's sgemm, JIT-compiled for the
 * CPU (AVX-512 here), which took 0.76-0.93 of OpenBLAS's time on the model's
 * shapes as the threads split them (4096×512×512 NN 0.93, NT
 * 0.81; 16384×128×128 NN 0.81; 4096×36×512 NN 0.77; 36×512×4096 TN 0.76),
 * except the wide weight gradients Aᵀ·B: 512×512×4096 took 1.08-1.21 of
 * OpenBLAS's time, whether split by K or by rows; 384×384 took 0.87. Inside
 * the OpenMP regions below, oneDNN runs on the calling thread; called outside
 * them it would start its own threads, which took up to 1 ms on the small
 * GEMMs that ft_gemm keeps on one thread (16384×4×4 in the model), so those
 * stay on single-threaded OpenBLAS. */
static void gemm1(int trans_a, int trans_b, size_t m, size_t n, size_t k,
                  ft_real alpha, const ft_real *a, size_t lda, const ft_real *b, size_t ldb,
                  ft_real beta, ft_real *c, size_t ldc)
{
#ifdef FT_REAL_DOUBLE
    cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha,
                a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
#else
    const int nt = ft_threads();   /* also reads openblas_only */
    const int wide_tn = trans_a && !trans_b && m >= 256 && n >= 512;
    if (!openblas_only && !wide_tn && (nt == 1 || omp_in_parallel())) {
        dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', (dnnl_dim_t)m,
                                      (dnnl_dim_t)n, (dnnl_dim_t)k, alpha, a, (dnnl_dim_t)lda,
                                      b, (dnnl_dim_t)ldb, beta, c, (dnnl_dim_t)ldc);
        FT_CHECK(st == dnnl_success, "dnnl_sgemm failed: status %d", (int)st);
        return;
    }
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha,
                a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
#endif
}

/* Below this many multiply-adds a GEMM stays on one thread: the fork costs
 * a few microseconds. */
#define FT_GEMM_SPLIT_MIN (1u << 20)

/* Start of block t of nt over len, in steps of 16 rows or columns (whole
 * cache lines and OpenBLAS micro-tiles), the last block taking the rest. */
static size_t split_at(size_t len, int t, int nt)
{
    if (t >= nt)
        return len;
    size_t at = len * (size_t)t / (size_t)nt / 16 * 16;
    return at < len ? at : len;
}

void ft_gemm(int trans_a, int trans_b, size_t m, size_t n, size_t k,
             ft_real alpha, const ft_real *a, size_t lda, const ft_real *b, size_t ldb,
             ft_real beta, ft_real *c, size_t ldc)
{
    if (m == 0 || n == 0)
        return;
    FT_CHECK(m < 2147483647u && n < 2147483647u && k < 2147483647u, "gemm too large");
    int nt = ft_threads();
    if (nt == 1 || (double)m * (double)n * (double)k < FT_GEMM_SPLIT_MIN ||
        (m < 32 && n < 32) || omp_in_parallel()) {
        gemm1(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    /* Split the longer side of C: every block keeps the full K, so each
     * element's sum runs in the same order as in one call (measured on the
     * model's shapes: as fast as OpenBLAS's threading for the square ones,
     * up to 2x faster for the skinny ones). */
    const int split_m = m >= n;
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), tn = omp_get_num_threads();
        if (split_m) {
            size_t i0 = split_at(m, t, tn), i1 = split_at(m, t + 1, tn);
            if (i1 > i0)
                gemm1(trans_a, trans_b, i1 - i0, n, k, alpha,
                      trans_a ? a + i0 : a + i0 * lda, lda, b, ldb, beta, c + i0 * ldc, ldc);
        } else {
            size_t j0 = split_at(n, t, tn), j1 = split_at(n, t + 1, tn);
            if (j1 > j0)
                gemm1(trans_a, trans_b, m, j1 - j0, k, alpha, a, lda,
                      trans_b ? b + j0 * ldb : b + j0, ldb, beta, c + j0, ldc);
        }
    }
}

void ft_gemm_tn_acc(size_t m, size_t n, size_t k, const ft_real *a, size_t lda,
                    const ft_real *b, size_t ldb, ft_real *c, size_t ldc,
                    ft_real *scratch, size_t scratch_len)
{
    const int nt = ft_threads();
    if (nt == 1 || scratch == NULL || scratch_len < (size_t)(nt - 1) * m * n ||
        (double)m * (double)n * (double)k < FT_GEMM_SPLIT_MIN || k < 64 * (size_t)nt ||
        omp_in_parallel()) {
        ft_gemm(1, 0, m, n, k, 1, a, lda, b, ldb, 1, c, ldc);
        return;
    }
    /* Split K: thread 0 adds its slice into C, thread t > 0 writes its own
     * m×n partial to scratch; then the partials are added in thread order.
     * Each thread keeps the whole m×n block, the shape OpenBLAS runs best for
     * these weight gradients (measured at 128×128×16384: 19% faster than
     * splitting C; 27×512×4096: 36%). */
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), tn = omp_get_num_threads();
        size_t k0 = split_at(k, t, tn), k1 = split_at(k, t + 1, tn);
        ft_real *ct = t == 0 ? c : scratch + (size_t)(t - 1) * m * n;
        if (k1 > k0)
            gemm1(1, 0, m, n, k1 - k0, 1, a + k0 * lda, lda, b + k0 * ldb, ldb, t == 0 ? 1 : 0,
                  ct, t == 0 ? ldc : n);
        else if (t > 0)
            memset(ct, 0, m * n * sizeof *ct);
#pragma omp barrier
#pragma omp for schedule(static)
        for (size_t i = 0; i < m; i++)
            for (int u = 1; u < tn; u++) {
                const ft_real *p = scratch + (size_t)(u - 1) * m * n + i * n;
                for (size_t j = 0; j < n; j++)
                    c[i * ldc + j] += p[j];
            }
    }
}

/* Rows of C per block of ft_gemm_rows: B is repacked for every block, so a
 * block takes up to 512 rows; its C, at most 1 MiB (one L2) for n ≤ 512, is
 * still in L2 for the epilogue. Measured on config L's 4096×512×512 conv:
 * 512-row blocks ran 8-10% faster than 128-row ones, 1024-row ones no faster.
 * Smaller m is cut into at least 4 blocks (of ≥ 64 rows) to keep every thread
 * busy; the blocks depend on m and n only, not on the thread count. */
size_t ft_rows_block(size_t m, size_t n)
{
    size_t r = ((size_t)1 << 18) / (n ? n : 1) / 16 * 16;
    r = r < 32 ? 32 : r > 512 ? 512 : r;
    while (r > 64 && m < 4 * r)
        r /= 2;
    return r;
}

size_t ft_rows_blocks_max(size_t m_max, size_t n)
{
    /* Any m ≤ m_max either keeps m_max's block (no more blocks than m_max) or
     * has its block halved, which stops once m ≥ 4 blocks: at most 8 then. */
    const size_t b = ft_rows_block(m_max, n), nb = (m_max + b - 1) / b;
    return nb > 8 ? nb : 8;
}

/* Blocks [j·blk, (j+1)·blk) whatever the thread count, so each block's GEMM
 * and epilogue see the same rows (and give the same bits) on any number of
 * threads; each thread takes a contiguous range of blocks. */
static void for_row_blocks(size_t m, size_t blk, void (*fn)(void *ctx, size_t r0, size_t r1),
                           void *ctx)
{
    const size_t nb = (m + blk - 1) / blk;
    const int nt = ft_threads();
#pragma omp parallel num_threads(nt) if (nt > 1 && nb > 1)
    {
        size_t t = (size_t)omp_get_thread_num(), tn = (size_t)omp_get_num_threads();
        for (size_t j = nb * t / tn; j < nb * (t + 1) / tn; j++)
            fn(ctx, j * blk, (j + 1) * blk < m ? (j + 1) * blk : m);
    }
}

struct gemm_rows_ctx {
    int trans_b;
    size_t n, k, lda, ldb, ldc;
    const ft_real *a, *b;
    ft_real *c;
    void (*ep)(void *ctx, size_t r0, size_t r1);
    void *ep_ctx;
};

static void gemm_rows_block(void *ctx, size_t r0, size_t r1)
{
    const struct gemm_rows_ctx *g = ctx;
    gemm1(0, g->trans_b, r1 - r0, g->n, g->k, 1, g->a + r0 * g->lda, g->lda, g->b, g->ldb, 0,
          g->c + r0 * g->ldc, g->ldc);
    g->ep(g->ep_ctx, r0, r1);
}

void ft_gemm_rows(int trans_b, size_t m, size_t n, size_t k, const ft_real *a, size_t lda,
                  const ft_real *b, size_t ldb, ft_real *c, size_t ldc,
                  void (*ep)(void *ctx, size_t r0, size_t r1), void *ep_ctx)
{
    if (m == 0 || n == 0)
        return;
    FT_CHECK(m < 2147483647u && n < 2147483647u && k < 2147483647u, "gemm too large");
    struct gemm_rows_ctx g = { trans_b, n, k, lda, ldb, ldc, a, b, c, ep, ep_ctx };
    for_row_blocks(m, ft_rows_block(m, n), gemm_rows_block, &g);
}

void ft_rows_parallel(size_t m, size_t n, void (*fn)(void *ctx, size_t r0, size_t r1), void *ctx)
{
    if (m > 0)
        for_row_blocks(m, ft_rows_block(m, n), fn, ctx);
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
