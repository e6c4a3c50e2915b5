/* Gaussian priors (glow-model.md §3, §9). ln N(x; μ, ℓ) = Σ −½(ln 2π + 2ℓ +
 * (x−μ)²e^{−2ℓ}). Split prior: h = zeroconv(z1) on the kept half, μ = h[0::2],
 * ℓ = h[1::2]. Top prior (learntop): h = zeroconv(0) on [Ht,Wt,2Ct], the same
 * for every example, μ = h[:Ct], ℓ = h[Ct:]; without learntop μ = ℓ = 0. */
#ifndef FT_PRIOR_H
#define FT_PRIOR_H

#include <stddef.h>
#include "real.h"

/* Element (n, p, k) of x (p < hw pixels, k < c channels) is x[(n·hw + p)·xs + k];
 * eps is dense: eps[(n·hw + p)·c + k]. μ and ℓ of it sit at
 * h[n·hn·hw + p·hp + k·hk] and h[… + lo]: hn is the per-example stride of h per
 * pixel (hn = hp for a per-example h, hn = 0 broadcasts one h to all examples).
 * This describes both the interleaved split layout and the halved top layout. */
struct prior_layout {
    size_t hn, hp, hk, lo;
};

/* logp (n) += ln N(x; μ, ℓ) per example; eps = (x − μ)·e^{−ℓ} (NULL: not written). */
void gaussian_forward(double *logp, ft_real *eps, const ft_real *x, size_t xs,
                      const ft_real *h, const struct prior_layout *lay,
                      size_t n, size_t hw, size_t c);
/* x = μ + e^{ℓ}·T·eps (x pixel stride xs). */
void gaussian_sample(ft_real *x, size_t xs, const ft_real *eps, double temperature,
                     const ft_real *h, const struct prior_layout *lay,
                     size_t n, size_t hw, size_t c);
/* With upstream γ_n = dlogp[n]: dx = −γ(x−μ)e^{−2ℓ} (overwritten, pixel stride dxs;
 * NULL skips); dh (same layout as h, overwritten where μ and ℓ live, or summed
 * over n when hn = 0; dh must be zeroed by the caller when hn = 0):
 * dμ = γ(x−μ)e^{−2ℓ}, dℓ = γ(−1 + (x−μ)²e^{−2ℓ}). */
void gaussian_backward(ft_real *dx, size_t dxs, ft_real *dh, const ft_real *x, size_t xs,
                       const ft_real *h, const struct prior_layout *lay, const double *dlogp,
                       size_t n, size_t hw, size_t c);

/* The interleaved split layout for c transformed channels (h has 2c channels). */
struct prior_layout prior_split_layout(size_t c);
/* The halves layout of the (broadcast) top prior for c channels. */
struct prior_layout prior_top_layout(size_t c);

#endif
