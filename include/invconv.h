/* Invertible 1x1 convolution (glow-model.md §6): y = x·W at every pixel, log-det
 * H·W·ln|det W| from an LU factorisation in double; and the LU-parameterised
 * form W = P·(tril(L,−1)+I)·(triu(U,+1)+diag(sign_s·exp(log_s))) whose log-det
 * is H·W·Σ log_s. Buffers are NHWC viewed as (rows = N·H·W, C); W is [C,C]. */
#ifndef FT_INVCONV_H
#define FT_INVCONV_H

#include <stddef.h>
#include <stdint.h>
#include "real.h"
#include "rng.h"

/* Workspace, in doubles, that the functions below taking `work` need for c channels. */
size_t invconv_work_size(size_t c);

/* W = Q of QR(A), A[i][j] ~ N(0,1) from key at counter i·c+j, in double, cast. */
void invconv_init_qr(ft_real *w, struct rng_key key, size_t c, double *work);

/* Per-pixel constants of a plain invconv for the current W: ln|det W| (double)
 * and, when winv/wit are not NULL, W⁻¹ and W^{−T} (cast from double). Returns
 * non-zero if W is singular or not finite (log-det −inf or NaN, inverses not
 * written). work: invconv_work_size(c) doubles, ipiv: c. */
int invconv_prepare(double *ldet, ft_real *winv, ft_real *wit, const ft_real *w,
                    size_t c, double *work, int *ipiv);

/* y = x·W; logdet (n entries) += hw·ldet unless NULL. y and x must not alias. */
void invconv_forward(ft_real *y, double *logdet, const ft_real *x, const ft_real *w,
                     double ldet, size_t n, size_t hw, size_t c);
/* x = y·W⁻¹; logdet −= hw·ldet unless NULL. */
void invconv_reverse(ft_real *x, double *logdet, const ft_real *y, const ft_real *winv,
                     double ldet, size_t n, size_t hw, size_t c);
/* dx = dy·Wᵀ (overwritten; dx must not alias dy or x; skipped when dx is NULL);
 * dw += xᵀ·dy + (hw·Σ_n dlogdet_n)·W^{−T} (dlogdet NULL: no log-det term, wit unused). */
void invconv_backward(ft_real *dx, ft_real *dw, const ft_real *dy, const ft_real *x,
                      const ft_real *w, const ft_real *wit, const double *dlogdet,
                      size_t n, size_t hw, size_t c);

/* LU form. p: int32 [c] with P_mat[i][p[i]] = 1; l, u: [c,c]; log_s, sign_s: [c].
 * Init factors w0 = P_mat·L0·U0 (partial pivoting, double); l, u get the strict
 * triangles of L0, U0 and 0 elsewhere. A singular w0 is a bug (FT_CHECK).
 * work: invconv_work_size(c) doubles, ipiv: c. */
void invconv_lu_init(int32_t *p, ft_real *l, ft_real *u, ft_real *log_s, ft_real *sign_s,
                     const ft_real *w0, size_t c, double *work, int *ipiv);
/* Builds W (and W⁻¹ = U~⁻¹·L~⁻¹·P_matᵀ when winv is not NULL) in double, cast;
 * *ldet = Σ log_s. Only the strict triangles of l and u are read. */
void invconv_lu_build(ft_real *w, ft_real *winv, double *ldet, const int32_t *p,
                      const ft_real *l, const ft_real *u, const ft_real *log_s,
                      const ft_real *sign_s, size_t c, double *work);
/* dx = dy·Wᵀ (overwritten, as in invconv_backward; w is the built W); with
 * G = xᵀ·dy (accumulated in double): dl += tril(P_matᵀ·G·Ũᵀ, −1),
 * du += triu(L̃ᵀ·P_matᵀ·G, +1), dlog_s += diag(L̃ᵀ·P_matᵀ·G)·sign_s·exp(log_s)
 * + hw·Σ_n dlogdet_n (dlogdet may be NULL). Masked entries of dl, du are not
 * touched. work: invconv_work_size(c) doubles. */
void invconv_lu_backward(ft_real *dx, ft_real *dl, ft_real *du, ft_real *dlog_s,
                         const ft_real *dy, const ft_real *x, const ft_real *w,
                         const int32_t *p, const ft_real *l, const ft_real *u,
                         const ft_real *log_s, const ft_real *sign_s, const double *dlogdet,
                         size_t n, size_t hw, size_t c, double *work);

#endif
