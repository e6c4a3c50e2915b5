/* Class conditioning of the top prior and the classifier head (glow-model.md
 * §9). Embedding: h[e,p,k] = h0[p,k] + (W_y[y_e,k] + b_y[k])·e^{3·logs_y[k]},
 * W_y [n_y, 2C_t], broadcast over the pixels. Head: f = mean over pixels of
 * z_top, logits = (f·W_c + b_c)·e^{3·logs_c}, W_c [C_t, n_y],
 * bits_y = −ln softmax(logits)[y] / ln 2. */
#ifndef FT_CLASSCOND_H
#define FT_CLASSCOND_H

#include <stddef.h>
#include <stdint.h>
#include "real.h"

/* h: (n, hw, c2) = h0 (hw, c2; NULL: zeros) + the embedding of label y[e]. */
void classcond_emb_forward(ft_real *h, const ft_real *h0, const int32_t *y,
                           const ft_real *w, const ft_real *b, const ft_real *logs,
                           size_t n, size_t hw, size_t c2, size_t ny);
/* From dh (n, hw, c2): dh0 (hw, c2) += Σ_e dh (NULL: skipped); dw, db, dlogs
 * accumulate (+=). acc: (ny + 3)·c2 doubles. */
void classcond_emb_backward(ft_real *dh0, ft_real *dw, ft_real *db, ft_real *dlogs, double *acc,
                            const ft_real *dh, const int32_t *y, const ft_real *w,
                            const ft_real *b, const ft_real *logs,
                            size_t n, size_t hw, size_t c2, size_t ny);

/* z: (n, hw, c) with pixel stride zs. Writes feat (n·c) and logit (n·ny), kept
 * for backward; bits[e] = bits_y of label y[e] (y NULL: bits not written);
 * pred[e] = argmax of the logits (NULL: skipped). */
void classcond_head_forward(double *bits, int32_t *pred, double *feat, double *logit,
                            const ft_real *z, size_t zs, const int32_t *y,
                            const ft_real *w, const ft_real *b, const ft_real *logs,
                            size_t n, size_t hw, size_t c, size_t ny);
/* Upstream u[e] = ∂L/∂bits[e]: dz (pixel stride dzs) += ∂L/∂z; dw, db, dlogs
 * accumulate (+=). acc: (c + 2)·ny + c doubles. */
void classcond_head_backward(ft_real *dz, size_t dzs, ft_real *dw, ft_real *db, ft_real *dlogs,
                             double *acc, const double *u, const double *feat,
                             const double *logit, const int32_t *y, const ft_real *w,
                             const ft_real *logs, size_t n, size_t hw, size_t c, size_t ny);

#endif
