/* Diagonal Gaussian priors, glow-model.md §3, §9:
 *   ln N(x; μ, ℓ) = Σ −½(ln 2π + 2ℓ + (x−μ)²e^{−2ℓ}),  ε = (x−μ)e^{−ℓ}
 *   ∂/∂x = −(x−μ)e^{−2ℓ},  ∂/∂μ = (x−μ)e^{−2ℓ},  ∂/∂ℓ = −1 + (x−μ)²e^{−2ℓ}
 * μ, ℓ are read through a prior_layout (interleaved split prior, or the halves
 * of the broadcast top prior). Sums over H, W, C accumulate in double. */
#include "prior.h"

#include <math.h>

#include "blas.h"
#include "check.h"

/* Examples (or, for the broadcast top prior, pixels) are independent and each
 * keeps its own sums in order: parallel loops with thread-count-free bits.
 * Below FT_PRIOR_PAR_MIN elements they stay on one thread. */
#define FT_PRIOR_PAR_MIN 8192

static const double LN_2PI = 1.8378770664093454836;

/* Offset of μ for element (e, p, k); ℓ sits lay->lo further on. */
static size_t mu_at(const struct prior_layout *lay, size_t e, size_t p, size_t k, size_t hw)
{
    return e * lay->hn * hw + p * lay->hp + k * lay->hk;
}

void gaussian_forward(double *logp, ft_real *eps, const ft_real *x, size_t xs,
                      const ft_real *h, const struct prior_layout *lay,
                      size_t n, size_t hw, size_t c)
{
    FT_CHECK(xs >= c, "pixel stride %zu < channels %zu", xs, c);
    const int par = n > 1 && n * hw * c >= FT_PRIOR_PAR_MIN;
#pragma omp parallel for num_threads(ft_threads()) schedule(static) if (par)
    for (size_t e = 0; e < n; e++) {
        double acc = 0.0;
        for (size_t p = 0; p < hw; p++) {
            const ft_real *xp = x + (e * hw + p) * xs;
            for (size_t k = 0; k < c; k++) {
                size_t o = mu_at(lay, e, p, k, hw);
                double mu = h[o], ell = h[o + lay->lo];
                double d = (double)xp[k] - mu;
                double inv = exp(-ell);
                double z = d * inv;
                acc += -0.5 * (LN_2PI + 2.0 * ell + z * z);
                if (eps)
                    eps[(e * hw + p) * c + k] = (ft_real)z;
            }
        }
        logp[e] += acc;
    }
}

void gaussian_sample(ft_real *x, size_t xs, const ft_real *eps, double temperature,
                     const ft_real *h, const struct prior_layout *lay,
                     size_t n, size_t hw, size_t c)
{
    FT_CHECK(xs >= c, "pixel stride %zu < channels %zu", xs, c);
    const int par = n > 1 && n * hw * c >= FT_PRIOR_PAR_MIN;
#pragma omp parallel for num_threads(ft_threads()) schedule(static) if (par)
    for (size_t e = 0; e < n; e++)
        for (size_t p = 0; p < hw; p++) {
            ft_real *xp = x + (e * hw + p) * xs;
            for (size_t k = 0; k < c; k++) {
                size_t o = mu_at(lay, e, p, k, hw);
                double mu = h[o], ell = h[o + lay->lo];
                xp[k] = (ft_real)(mu + exp(ell) * temperature * (double)eps[(e * hw + p) * c + k]);
            }
        }
}

void gaussian_backward(ft_real *dx, size_t dxs, ft_real *dh, const ft_real *x, size_t xs,
                       const ft_real *h, const struct prior_layout *lay, const double *dlogp,
                       size_t n, size_t hw, size_t c)
{
    FT_CHECK(xs >= c, "pixel stride %zu < channels %zu", xs, c);
    FT_CHECK(dx == NULL || dxs >= c, "pixel stride %zu < channels %zu", dxs, c);
    const int par = n * hw * c >= FT_PRIOR_PAR_MIN;
    if (lay->hn != 0) {
        /* Per-example μ, ℓ: every (e, p, k) owns its own dh entries. */
#pragma omp parallel for num_threads(ft_threads()) schedule(static) if (par && n > 1)
        for (size_t e = 0; e < n; e++) {
            double g = dlogp[e];
            for (size_t p = 0; p < hw; p++) {
                const ft_real *xp = x + (e * hw + p) * xs;
                for (size_t k = 0; k < c; k++) {
                    size_t o = mu_at(lay, e, p, k, hw);
                    double mu = h[o], ell = h[o + lay->lo];
                    double d = (double)xp[k] - mu;
                    double w = d * exp(-2.0 * ell);
                    if (dx)
                        dx[(e * hw + p) * dxs + k] = (ft_real)(-g * w);
                    if (dh) {
                        dh[o] = (ft_real)(g * w);
                        dh[o + lay->lo] = (ft_real)(g * (d * w - 1.0));
                    }
                }
            }
        }
        return;
    }
    /* Broadcast μ, ℓ (top prior): dh sums over the examples, in double. */
#pragma omp parallel for num_threads(ft_threads()) schedule(static) if (par)
    for (size_t p = 0; p < hw; p++)
        for (size_t k = 0; k < c; k++) {
            size_t o = mu_at(lay, 0, p, k, hw);
            double mu = h[o], ell = h[o + lay->lo], e2 = exp(-2.0 * ell);
            double smu = 0.0, sell = 0.0;
            for (size_t e = 0; e < n; e++) {
                double g = dlogp[e];
                double d = (double)x[(e * hw + p) * xs + k] - mu;
                double w = d * e2;
                if (dx)
                    dx[(e * hw + p) * dxs + k] = (ft_real)(-g * w);
                smu += g * w;
                sell += g * (d * w - 1.0);
            }
            if (dh) {
                dh[o] += (ft_real)smu;
                dh[o + lay->lo] += (ft_real)sell;
            }
        }
}

struct prior_layout prior_split_layout(size_t c)
{
    /* h: (N, HW, 2c), μ_k = h[..., 2k], ℓ_k = h[..., 2k+1]. */
    struct prior_layout lay = { .hn = 2 * c, .hp = 2 * c, .hk = 2, .lo = 1 };
    return lay;
}

struct prior_layout prior_top_layout(size_t c)
{
    /* h: (HW, 2c) shared by all examples, μ_k = h[..., k], ℓ_k = h[..., c+k]. */
    struct prior_layout lay = { .hn = 0, .hp = 2 * c, .hk = 1, .lo = c };
    return lay;
}
