/* Preprocessing and postprocessing of images (glow-model.md §2): n_bits,
 * dequantization noise keyed by (seed, RNG_DEQUANT, pass, global index, element),
 * the glow map x = k/n_bins − 0.5 + u and the logit map z = logit(α/2 + (1−α)·p),
 * objective_0 = −D·ln n_bins + Σ[|z| + 2·log1p(e^{−|z|})] + D·ln(1−α) (logit only). */
#include "preprocess.h"

#include <math.h>

#include "check.h"
#include "rng.h"

/* Bin of a logit-space value: p = (σ(z) − α/2)/(1−α), clip(floor(p·n_bins), 0,
 * n_bins−1); NaN goes to bin 0. Shared by postprocess and preprocess's fit. */
static int logit_bin(double z, double alpha, double nb)
{
    double q = 1.0 / (1.0 + exp(-z));
    double p = (q - 0.5 * alpha) / (1.0 - alpha);
    double b = floor(p * nb);
    if (!(b >= 0))
        return 0;
    if (b > nb - 1)
        return (int)nb - 1;
    return (int)b;
}

static void check_args(int n_bits, enum preprocess_kind kind, double alpha)
{
    FT_CHECK(n_bits >= 1 && n_bits <= 8, "n_bits %d must be in 1..8", n_bits);
    FT_CHECK(kind == PREPROCESS_GLOW || kind == PREPROCESS_LOGIT,
             "unknown preprocessing kind %d", (int)kind);
    FT_CHECK(kind != PREPROCESS_LOGIT || (alpha > 0 && alpha < 1),
             "logit alpha %g must be in (0, 1)", alpha);
}

double preprocess_logit_z(double p, double alpha)
{
    double q = 0.5 * alpha + (1.0 - alpha) * p;
    double r = 0.5 * alpha + (1.0 - alpha) * (1.0 - p);   /* 1 − q; 1 − p is exact for p ≥ ½ */
    return log(q) - log(r);
}

double preprocess_logit_logdet(double z, double alpha)
{
    double a = fabs(z);
    return a + 2.0 * log1p(exp(-a)) + log1p(-alpha);
}

double preprocess_logit_logdet_naive(double p, double alpha)
{
    double q = 0.5 * alpha + (1.0 - alpha) * p;
    return -log(q) - log(1.0 - q) + log(1.0 - alpha);
}

/* One sample, glow map. x is rounded to ft_real; lo and hi = lo + 1/n_bins are
 * exact in float, so rounding keeps x ≥ lo, and a value that rounds up to hi
 * (u within half an ulp of 1/n_bins) is put one ulp below it: x stays in its
 * bin, x ∈ [−0.5, 0.5), and postprocess recovers k. */
static void glow_sample(ft_real *x, const uint8_t *img, size_t dim, int shift, double inv,
                        struct rng_key key, int noise_off)
{
    for (size_t j = 0; j < dim; j++) {
        double lo = (double)(img[j] >> shift) * inv - 0.5;
        double u = noise_off ? 0.5 * inv : rng_uniform(key, j) * inv;   /* [0, inv) */
        ft_real hi = (ft_real)(lo + inv);
        ft_real xf = (ft_real)(lo + u);
        if (!(xf < hi))
            xf = ft_real_step(hi, 0);
        x[j] = xf;
    }
}

/* One sample, logit map; returns Σ_j (|z| + 2·log1p(e^{−|z|})) in double from the
 * unrounded z. The rounded z is moved by ulps (at most a couple: a bin is at
 * least ~4/n_bins·(1−α) wide in z) until it decodes to its own bin. */
static double logit_sample(ft_real *x, const uint8_t *img, size_t dim, int shift, double inv,
                           double nb, double alpha, struct rng_key key, int noise_off)
{
    double s = 0.0;
    for (size_t j = 0; j < dim; j++) {
        int k = img[j] >> shift;
        double u = noise_off ? 0.5 * inv : rng_uniform(key, j) * inv;
        double z = preprocess_logit_z((double)k * inv + u, alpha);
        ft_real zf = (ft_real)z;
        for (int it = 0;; it++) {
            int b = logit_bin((double)zf, alpha, nb);
            if (b == k)
                break;
            FT_CHECK(it < 16, "logit value %.17g of bin %d decodes to bin %d", z, k, b);
            zf = ft_real_step(zf, b < k);
        }
        x[j] = zf;
        double a = fabs(z);
        s += a + 2.0 * log1p(exp(-a));
    }
    return s;
}

void preprocess_batch(ft_real *x, double *objective0, const uint8_t *img, const uint64_t *idx,
                      size_t count, size_t dim, int n_bits, enum preprocess_kind kind,
                      double alpha, uint64_t seed, uint64_t pass, int noise_off)
{
    check_args(n_bits, kind, alpha);
    FT_CHECK(noise_off || idx || count == 0, "dequantization noise needs the sample indices");
    FT_CHECK(count == 0 || dim == 0 || (x && img), "preprocess on NULL arrays");
    FT_CHECK(count == 0 || objective0, "preprocess needs objective0");
    int shift = 8 - n_bits;
    double nb = (double)(1 << n_bits), inv = 1.0 / nb;   /* inv exact: a power of two */
    /* The same expression as glow_nll's constant, so the two agree to the bit. */
    double obj_const = -(double)dim * log(nb);
    for (size_t i = 0; i < count; i++) {
        struct rng_key key = { 0 };
        if (!noise_off)
            key = rng_key(seed, RNG_DEQUANT, pass, idx[i]);
        if (kind == PREPROCESS_GLOW) {
            glow_sample(x + i * dim, img + i * dim, dim, shift, inv, key, noise_off);
            objective0[i] = obj_const;
        } else {
            double s = logit_sample(x + i * dim, img + i * dim, dim, shift, inv, nb, alpha, key,
                                    noise_off);
            objective0[i] = obj_const + s + (double)dim * log1p(-alpha);
        }
    }
}

void postprocess_batch(uint8_t *img, const ft_real *x, size_t count, size_t dim, int n_bits,
                       enum preprocess_kind kind, double alpha)
{
    check_args(n_bits, kind, alpha);
    FT_CHECK(count == 0 || dim == 0 || (x && img), "postprocess on NULL arrays");
    int shift = 8 - n_bits;
    double nb = (double)(1 << n_bits);
    size_t total = count * dim;
    if (kind == PREPROCESS_LOGIT) {
        for (size_t j = 0; j < total; j++)
            img[j] = (uint8_t)(logit_bin((double)x[j], alpha, nb) << shift);
        return;
    }
    for (size_t j = 0; j < total; j++) {
        /* floor((x+0.5)·n_bins) as floor(x·n_bins) + n_bins/2: x·n_bins is exact
         * (power of two), while x + 0.5 could round a value just below a bin
         * edge up into the next bin. */
        double v = (floor((double)x[j] * nb) + 0.5 * nb) * (256.0 / nb);
        if (!(v >= 0))            /* also NaN */
            v = 0;
        if (v > 255)
            v = 255;
        img[j] = (uint8_t)v;
    }
}
