/* NICE's diagonal scaling (glow-model.md §8): z ← z⊙e^S with S of the latent's
 * shape [H_t, W_t, C_t] shared by all examples (zero init), log-det Σ S. */
#ifndef FT_DIAGSCALE_H
#define FT_DIAGSCALE_H

#include <stddef.h>
#include "real.h"

/* x, y: (n, m) with m = H_t·W_t·C_t; s: (m). y may equal x. logdet (n) += Σ S
 * unless NULL. */
void diagscale_forward(ft_real *y, double *logdet, const ft_real *x, const ft_real *s,
                       size_t n, size_t m);
/* x = y·e^{−S}; x may equal y. logdet −= Σ S unless NULL. */
void diagscale_reverse(ft_real *x, double *logdet, const ft_real *y, const ft_real *s,
                       size_t n, size_t m);
/* dx = dy·e^S (dx may equal dy); ds += Σ_n dy·y + Σ_n dlogdet_n. y: the forward
 * output. acc: m doubles. */
void diagscale_backward(ft_real *dx, ft_real *ds, double *acc, const ft_real *dy,
                        const ft_real *y, const double *dlogdet, const ft_real *s,
                        size_t n, size_t m);

#endif
