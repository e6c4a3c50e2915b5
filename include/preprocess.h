/* Preprocessing (glow-model.md §2): uint8 → model input with n_bits and uniform
 * dequantization noise from the counter-based RNG, the "glow" map
 * x = k/n_bins − 0.5 + u or the "logit" map z = logit(α/2 + (1−α)·p), and the
 * per-example objective_0 = −D·ln n_bins (+ the logit log-det); postprocess back. */
#ifndef FT_PREPROCESS_H
#define FT_PREPROCESS_H

#include <stddef.h>
#include <stdint.h>
#include "real.h"

enum preprocess_kind { PREPROCESS_GLOW = 0, PREPROCESS_LOGIT = 1 };

/* img (count, dim) uint8 → x (count, dim). k = v >> (8 − n_bits), n_bins = 2^n_bits,
 * u ∈ [0, 1/n_bins) = rng_uniform(rng_key(seed, RNG_DEQUANT, pass, idx[i]), j)/n_bins
 * for element j of sample i (idx[i]: global sample index; pass: epoch or test
 * pass), so a sample's noise does not depend on its batch or position.
 * noise_off: u = 1/(2·n_bins), the bin centre (idx may then be NULL).
 *   GLOW:  x = k/n_bins − 0.5 + u;     objective0[i] = −dim·ln n_bins
 *   LOGIT: p = k/n_bins + u, z = logit(α/2 + (1−α)·p);
 *          objective0[i] = −dim·ln n_bins + Σ_j [|z| + 2·log1p(e^{−|z|})] + dim·ln(1−α)
 * The stored value never leaves its bin through rounding to ft_real, so
 * postprocess_batch returns the (n_bits-quantized) pixels exactly.
 * FT_CHECKs n_bits ∈ 1…8 and, for LOGIT, α ∈ (0, 1); alpha is ignored for GLOW. */
void preprocess_batch(ft_real *x, double *objective0, const uint8_t *img, const uint64_t *idx,
                      size_t count, size_t dim, int n_bits, enum preprocess_kind kind,
                      double alpha, uint64_t seed, uint64_t pass, int noise_off);

/* x (count, dim) → uint8 pixels (glow-model.md §2 postprocess / logit inverse):
 *   GLOW:  v = clip(floor((x+0.5)·n_bins)·256/n_bins, 0, 255)
 *   LOGIT: p = (σ(z) − α/2)/(1−α), v = clip(floor(p·n_bins), 0, n_bins−1)·256/n_bins
 * A NaN maps to 0 (a diverged sample must not stop a run). */
void postprocess_batch(uint8_t *img, const ft_real *x, size_t count, size_t dim, int n_bits,
                       enum preprocess_kind kind, double alpha);

/* z = ln q − ln(1−q), q = α/2 + (1−α)·p, with 1−q formed as α/2 + (1−α)·(1−p)
 * so neither logarithm loses digits near p = 0 or 1. */
double preprocess_logit_z(double p, double alpha);
/* The stable per-element log-det at z: |z| + 2·log1p(e^{−|z|}) + ln(1−α). */
double preprocess_logit_logdet(double z, double alpha);
/* The same log-det written naively, −ln q − ln(1−q) + ln(1−α), for tests. */
double preprocess_logit_logdet_naive(double p, double alpha);

#endif
