/* ActNorm (glow-model.md §5): y = (x + b)·exp(3·logs), log-det H·W·Σ 3·logs;
 * DDI sets b = −mean, logs = ln(1/(√var + 1e-6))/3 from Σx, Σx², count summed
 * in double over every rank, so the init does not depend on the world size. */
#include "actnorm.h"

#include <math.h>
#include <string.h>

#include "check.h"

void actnorm_ddi(ft_real *b, ft_real *logs, double *work, const ft_real *x,
                 size_t rows, size_t c, const struct ddi *ddi)
{
    double *s1 = work, *s2 = work + c;
    memset(work, 0, (2 * c + 1) * sizeof *work);
    for (size_t r = 0; r < rows; r++)
        for (size_t k = 0; k < c; k++) {
            double v = x[r * c + k];
            s1[k] += v;
            s2[k] += v * v;
        }
    work[2 * c] = (double)rows;
    if (ddi && ddi->allreduce_sum)
        ddi->allreduce_sum(work, 2 * c + 1, ddi->ctx);
    double cnt = work[2 * c];
    FT_CHECK(cnt > 0, "actnorm DDI over zero rows");
    for (size_t k = 0; k < c; k++) {
        double m = s1[k] / cnt;
        double v = s2[k] / cnt - m * m;
        if (v < 0)
            v = 0;
        b[k] = (ft_real)(-m);
        logs[k] = (ft_real)(log(1.0 / (sqrt(v) + 1e-6)) / 3.0);
    }
}

/* Per-channel exp(±3·logs) are computed once per block of channels, not per
 * element; FT_AN_BLOCK channels at a time keep the scales on the stack. */
#define FT_AN_BLOCK 256

static double sum_logs3(const ft_real *logs, size_t c)
{
    double s = 0;
    for (size_t k = 0; k < c; k++)
        s += 3.0 * logs[k];
    return s;
}

void actnorm_forward(ft_real *y, double *logdet, const ft_real *x,
                     const ft_real *b, const ft_real *logs, size_t n, size_t hw, size_t c)
{
    const size_t rows = n * hw;
    ft_real sc[FT_AN_BLOCK];
    for (size_t k0 = 0; k0 < c; k0 += FT_AN_BLOCK) {
        size_t kn = c - k0 < FT_AN_BLOCK ? c - k0 : FT_AN_BLOCK;
        for (size_t k = 0; k < kn; k++)
            sc[k] = (ft_real)exp(3.0 * logs[k0 + k]);
        for (size_t r = 0; r < rows; r++) {
            const ft_real *xr = x + r * c + k0;
            ft_real *yr = y + r * c + k0;
            for (size_t k = 0; k < kn; k++)
                yr[k] = (xr[k] + b[k0 + k]) * sc[k];
        }
    }
    if (logdet) {
        double ld = (double)hw * sum_logs3(logs, c);
        for (size_t e = 0; e < n; e++)
            logdet[e] += ld;
    }
}

void actnorm_reverse(ft_real *x, double *logdet, const ft_real *y,
                     const ft_real *b, const ft_real *logs, size_t n, size_t hw, size_t c)
{
    const size_t rows = n * hw;
    ft_real sc[FT_AN_BLOCK];
    for (size_t k0 = 0; k0 < c; k0 += FT_AN_BLOCK) {
        size_t kn = c - k0 < FT_AN_BLOCK ? c - k0 : FT_AN_BLOCK;
        for (size_t k = 0; k < kn; k++)
            sc[k] = (ft_real)exp(-3.0 * logs[k0 + k]);
        for (size_t r = 0; r < rows; r++) {
            const ft_real *yr = y + r * c + k0;
            ft_real *xr = x + r * c + k0;
            for (size_t k = 0; k < kn; k++)
                xr[k] = yr[k] * sc[k] - b[k0 + k];
        }
    }
    if (logdet) {
        double ld = (double)hw * sum_logs3(logs, c);
        for (size_t e = 0; e < n; e++)
            logdet[e] -= ld;
    }
}

void actnorm_backward(ft_real *dx, ft_real *db, ft_real *dlogs, double *acc,
                      const ft_real *dy, const ft_real *y, const double *dlogdet,
                      const ft_real *logs, size_t n, size_t hw, size_t c)
{
    const size_t rows = n * hw;
    double *sb = acc, *sl = acc + c;
    ft_real sc[FT_AN_BLOCK];
    memset(acc, 0, 2 * c * sizeof *acc);
    for (size_t k0 = 0; k0 < c; k0 += FT_AN_BLOCK) {
        size_t kn = c - k0 < FT_AN_BLOCK ? c - k0 : FT_AN_BLOCK;
        for (size_t k = 0; k < kn; k++)
            sc[k] = (ft_real)exp(3.0 * logs[k0 + k]);
        for (size_t r = 0; r < rows; r++) {
            const ft_real *gr = dy + r * c + k0, *yr = y + r * c + k0;
            ft_real *dr = dx + r * c + k0;
            for (size_t k = 0; k < kn; k++) {
                ft_real g = gr[k];
                sl[k0 + k] += (double)g * yr[k];
                ft_real d = g * sc[k];
                dr[k] = d;
                sb[k0 + k] += d;
            }
        }
    }
    double gsum = 0;
    if (dlogdet)
        for (size_t e = 0; e < n; e++)
            gsum += dlogdet[e];
    for (size_t k = 0; k < c; k++) {
        db[k] += (ft_real)sb[k];
        dlogs[k] += (ft_real)(3.0 * sl[k] + 3.0 * (double)hw * gsum);
    }
}
