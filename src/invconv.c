/* Invertible 1x1 convolution, plain and LU (glow-model.md §6): y = x·W per pixel,
 * one GEMM on the (rows = N·H·W, C) matrix; log-det H·W·ln|det W| (plain, LU in
 * double) or H·W·Σ log_s with W = P_mat·L~·U~ (LU form). Backward: dX = dY·Wᵀ,
 * dW = Xᵀ·dY + (H·W·Σ_n γ_n)·W^{−T}; LU: with G = Xᵀ·dY, dL = tril(P_matᵀ·G·U~ᵀ, −1),
 * dU = triu(L~ᵀ·P_matᵀ·G, +1), dlog_s = diag(L~ᵀ·P_matᵀ·G)·sign_s·e^{log_s} + H·W·Σ_n γ_n. */
#include "invconv.h"

#include <math.h>
#include <string.h>

#include "blas.h"
#include "check.h"

size_t invconv_work_size(size_t c)
{
    /* The largest user sets the size: init_qr needs A (c²) + ft_qr_q (2c² + c).
     * lu_build: L~, U~ and their product (3c²); prepare: W and the LU/inverse
     * scratch (2c²); lu_init: W0 and the row order (c² + c); lu_backward: G,
     * P_matᵀ·G and sign_s·e^{log_s} (2c² + c). */
    return 3 * c * c + c;
}

void invconv_init_qr(ft_real *w, struct rng_key key, size_t c, double *work)
{
    FT_CHECK(c > 0, "invconv needs at least one channel");
    double *a = work, *qr_work = work + c * c;
    for (size_t i = 0; i < c * c; i++)
        a[i] = rng_normal(key, i);
    ft_qr_q(a, c, qr_work);
    for (size_t i = 0; i < c * c; i++)
        w[i] = (ft_real)a[i];
}

int invconv_prepare(double *ldet, ft_real *winv, ft_real *wit, const ft_real *w,
                    size_t c, double *work, int *ipiv)
{
    FT_CHECK(c > 0, "invconv needs at least one channel");
    double *wd = work, *scratch = work + c * c;
    for (size_t i = 0; i < c * c; i++)
        wd[i] = (double)w[i];
    *ldet = ft_logabsdet(wd, c, scratch, ipiv);
    if (!isfinite(*ldet))
        return 1;             /* singular or non-finite W: the step's log-det is not finite */
    if (winv == NULL && wit == NULL)
        return 0;
    if (ft_inverse(wd, c, scratch, ipiv) != 0)
        return 1;
    for (size_t i = 0; i < c; i++)
        for (size_t j = 0; j < c; j++) {
            if (winv)
                winv[i * c + j] = (ft_real)wd[i * c + j];
            if (wit)
                wit[j * c + i] = (ft_real)wd[i * c + j];
        }
    return 0;
}

static void add_logdet(double *logdet, double v, size_t n)
{
    if (logdet == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        logdet[i] += v;
}

void invconv_forward(ft_real *y, double *logdet, const ft_real *x, const ft_real *w,
                     double ldet, size_t n, size_t hw, size_t c)
{
    FT_CHECK(y != x, "invconv_forward: y and x must not alias");
    ft_gemm(0, 0, n * hw, c, c, 1, x, c, w, c, 0, y, c);
    add_logdet(logdet, (double)hw * ldet, n);
}

void invconv_reverse(ft_real *x, double *logdet, const ft_real *y, const ft_real *winv,
                     double ldet, size_t n, size_t hw, size_t c)
{
    FT_CHECK(y != x, "invconv_reverse: x and y must not alias");
    ft_gemm(0, 0, n * hw, c, c, 1, y, c, winv, c, 0, x, c);
    add_logdet(logdet, -(double)hw * ldet, n);
}

/* hw·Σ_n dlogdet_n: the upstream gradient of every per-example log-det term. */
static double logdet_grad(const double *dlogdet, size_t n, size_t hw)
{
    double s = 0.0;
    if (dlogdet)
        for (size_t i = 0; i < n; i++)
            s += dlogdet[i];
    return (double)hw * s;
}

void invconv_backward(ft_real *dx, ft_real *dw, const ft_real *dy, const ft_real *x,
                      const ft_real *w, const ft_real *wit, const double *dlogdet,
                      size_t n, size_t hw, size_t c)
{
    size_t rows = n * hw;
    FT_CHECK(dx == NULL || (dx != dy && dx != x), "invconv_backward: dx must not alias dy or x");
    /* dW first: dx, overwritten just after, is the K-split's scratch */
    ft_gemm_tn_acc(c, c, rows, x, c, dy, c, dw, c, dx, dx ? rows * c : 0);
    if (dx)
        ft_gemm(0, 1, rows, c, c, 1, dy, c, w, c, 0, dx, c);
    if (dlogdet) {
        FT_CHECK(wit != NULL, "invconv_backward: the log-det term needs W^-T");
        double s = logdet_grad(dlogdet, n, hw);
        for (size_t i = 0; i < c * c; i++)
            dw[i] += (ft_real)(s * (double)wit[i]);
    }
}

static void check_perm(const int32_t *p, size_t c)
{
    for (size_t i = 0; i < c; i++)
        FT_CHECK(p[i] >= 0 && (size_t)p[i] < c, "invconv P[%zu] = %d is outside [0, %zu)",
                 i, (int)p[i], c);
}

void invconv_lu_init(int32_t *p, ft_real *l, ft_real *u, ft_real *log_s, ft_real *sign_s,
                     const ft_real *w0, size_t c, double *work, int *ipiv)
{
    FT_CHECK(c > 0 && c < 2147483647u, "invconv needs 1 ≤ C < 2^31, got %zu", c);
    double *a = work;
    for (size_t i = 0; i < c * c; i++)
        a[i] = (double)w0[i];
    int info = ft_lu_factor(a, ipiv, c);
    FT_CHECK(info == 0, "invconv LU init: W0 is singular (dgetrf info %d)", info);

    /* LAPACK's ipiv: for k = 0…c−1 rows k and ipiv[k]−1 were swapped in turn, so
     * row r of L·U is row q[r] of W0 (q: identity with the swaps applied). Then
     * W0 = P_mat·L·U with (P_mat·M)[i] = M[P[i]] needs P[q[r]] = r. q is kept in
     * the double workspace (exact for any index). */
    double *q = work + c * c;
    for (size_t r = 0; r < c; r++)
        q[r] = (double)r;
    for (size_t k = 0; k < c; k++) {
        int t = ipiv[k] - 1;
        FT_CHECK(t >= (int)k && (size_t)t < c, "dgetrf pivot %d at row %zu out of range", t, k);
        double s = q[k];
        q[k] = q[t];
        q[t] = s;
    }
    for (size_t r = 0; r < c; r++)
        p[(size_t)q[r]] = (int32_t)r;

    for (size_t i = 0; i < c; i++) {
        double d = a[i * c + i];
        sign_s[i] = d < 0.0 ? (ft_real)-1 : (ft_real)1;
        log_s[i] = (ft_real)log(fabs(d));
        for (size_t j = 0; j < c; j++) {
            l[i * c + j] = j < i ? (ft_real)a[i * c + j] : (ft_real)0;
            u[i * c + j] = j > i ? (ft_real)a[i * c + j] : (ft_real)0;
        }
    }
}

/* L~ = tril(l,−1) + I and U~ = triu(u,+1) + diag(sign_s·e^{log_s}) in double;
 * the masked entries of l and u are ignored. */
static void lu_factors(double *lt, double *ut, const ft_real *l, const ft_real *u,
                       const ft_real *log_s, const ft_real *sign_s, size_t c)
{
    for (size_t i = 0; i < c; i++)
        for (size_t j = 0; j < c; j++) {
            lt[i * c + j] = j < i ? (double)l[i * c + j] : (j == i ? 1.0 : 0.0);
            ut[i * c + j] = j > i ? (double)u[i * c + j]
                          : (j == i ? (double)sign_s[i] * exp((double)log_s[i]) : 0.0);
        }
}

/* In place: unit lower-triangular L → L⁻¹. Column j uses only columns ≥ j of L
 * and the already inverted entries above row i in column j. */
static void invert_unit_lower(double *a, size_t c)
{
    for (size_t j = 0; j < c; j++)
        for (size_t i = j + 1; i < c; i++) {
            double s = a[i * c + j];
            for (size_t k = j + 1; k < i; k++)
                s += a[i * c + k] * a[k * c + j];
            a[i * c + j] = -s;
        }
}

/* In place: upper-triangular U → U⁻¹, columns from the last; column j uses only
 * columns ≤ j of U and the already inverted entries below row i in column j. */
static void invert_upper(double *a, size_t c)
{
    for (size_t jj = c; jj-- > 0;) {
        a[jj * c + jj] = 1.0 / a[jj * c + jj];
        for (size_t i = jj; i-- > 0;) {
            double s = a[i * c + jj] * a[jj * c + jj];
            for (size_t k = i + 1; k < jj; k++)
                s += a[i * c + k] * a[k * c + jj];
            a[i * c + jj] = -s / a[i * c + i];
        }
    }
}

void invconv_lu_build(ft_real *w, ft_real *winv, double *ldet, const int32_t *p,
                      const ft_real *l, const ft_real *u, const ft_real *log_s,
                      const ft_real *sign_s, size_t c, double *work)
{
    FT_CHECK(c > 0, "invconv needs at least one channel");
    check_perm(p, c);
    double *lt = work, *ut = work + c * c, *m = work + 2 * c * c;
    lu_factors(lt, ut, l, u, log_s, sign_s, c);

    /* M = L~·U~ (triangular bounds), W = P_mat·M: W[i] = M[P[i]]. */
    for (size_t i = 0; i < c; i++)
        for (size_t j = 0; j < c; j++) {
            double s = 0.0;
            size_t kmax = i < j ? i : j;
            for (size_t k = 0; k <= kmax; k++)
                s += lt[i * c + k] * ut[k * c + j];
            m[i * c + j] = s;
        }
    for (size_t i = 0; i < c; i++)
        for (size_t j = 0; j < c; j++)
            w[i * c + j] = (ft_real)m[(size_t)p[i] * c + j];

    double s = 0.0;
    for (size_t i = 0; i < c; i++)
        s += (double)log_s[i];
    *ldet = s;

    if (winv == NULL)
        return;
    /* W⁻¹ = U~⁻¹·L~⁻¹·P_matᵀ, and (N·P_matᵀ)[i][j] = N[i][P[j]]. */
    invert_unit_lower(lt, c);
    invert_upper(ut, c);
    for (size_t i = 0; i < c; i++)
        for (size_t j = 0; j < c; j++) {
            double t = 0.0;
            for (size_t k = i > j ? i : j; k < c; k++)
                t += ut[i * c + k] * lt[k * c + j];
            m[i * c + j] = t;
        }
    for (size_t i = 0; i < c; i++)
        for (size_t j = 0; j < c; j++)
            winv[i * c + j] = (ft_real)m[i * c + (size_t)p[j]];
}

void invconv_lu_backward(ft_real *dx, ft_real *dl, ft_real *du, ft_real *dlog_s,
                         const ft_real *dy, const ft_real *x, const ft_real *w,
                         const int32_t *p, const ft_real *l, const ft_real *u,
                         const ft_real *log_s, const ft_real *sign_s, const double *dlogdet,
                         size_t n, size_t hw, size_t c, double *work)
{
    size_t rows = n * hw;
    check_perm(p, c);
    if (dx) {
        FT_CHECK(dx != dy, "invconv_lu_backward: dx and dy must not alias");
        ft_gemm(0, 1, rows, c, c, 1, dy, c, w, c, 0, dx, c);
    }

    /* G = Xᵀ·dY accumulated in double: the chain below runs in double and the
     * workspace is double; R·C² is small next to the coupling convolutions. */
    double *g = work, *a = work + c * c, *diag = work + 2 * c * c;
    memset(g, 0, c * c * sizeof *g);
    for (size_t r = 0; r < rows; r++) {
        const ft_real *xr = x + r * c, *dyr = dy + r * c;
        for (size_t i = 0; i < c; i++) {
            double xi = (double)xr[i];
            double *gi = g + i * c;
            for (size_t j = 0; j < c; j++)
                gi[j] += xi * (double)dyr[j];
        }
    }
    /* A = P_matᵀ·G: (P_matᵀ·G)[P[k]] = G[k]. */
    for (size_t k = 0; k < c; k++)
        memcpy(a + (size_t)p[k] * c, g + k * c, c * sizeof *a);
    for (size_t i = 0; i < c; i++)
        diag[i] = (double)sign_s[i] * exp((double)log_s[i]);

    /* dL[i][j] (i > j) = Σ_{k ≥ j} A[i][k]·U~[j][k]. */
    for (size_t i = 1; i < c; i++)
        for (size_t j = 0; j < i; j++) {
            double s = a[i * c + j] * diag[j];
            for (size_t k = j + 1; k < c; k++)
                s += a[i * c + k] * (double)u[j * c + k];
            dl[i * c + j] += (ft_real)s;
        }
    /* (L~ᵀ·A)[i][j] (i ≤ j) = A[i][j] + Σ_{k > i} L[k][i]·A[k][j]. */
    double sum_dld = logdet_grad(dlogdet, n, hw);
    for (size_t i = 0; i < c; i++)
        for (size_t j = i; j < c; j++) {
            double s = a[i * c + j];
            for (size_t k = i + 1; k < c; k++)
                s += (double)l[k * c + i] * a[k * c + j];
            if (j > i)
                du[i * c + j] += (ft_real)s;
            else
                dlog_s[i] += (ft_real)(s * diag[i] + sum_dld);
        }
}
