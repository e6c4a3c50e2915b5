/* NICE's diagonal scaling (glow-model.md §8): y = x·e^S, log-det Σ S per
 * example; backward dx = dy·e^S, dS = Σ_n dy·y + Σ_n γ_n. S sums and the
 * parameter gradient accumulate in double. */
#include "diagscale.h"

#include <math.h>
#include <string.h>

static double sum_s(const ft_real *s, size_t m)
{
    double t = 0;
    for (size_t j = 0; j < m; j++)
        t += s[j];
    return t;
}

void diagscale_forward(ft_real *y, double *logdet, const ft_real *x, const ft_real *s,
                       size_t n, size_t m)
{
    for (size_t e = 0; e < n; e++)
        for (size_t j = 0; j < m; j++)
            y[e * m + j] = (ft_real)(x[e * m + j] * exp((double)s[j]));
    if (logdet) {
        double t = sum_s(s, m);
        for (size_t e = 0; e < n; e++)
            logdet[e] += t;
    }
}

void diagscale_reverse(ft_real *x, double *logdet, const ft_real *y, const ft_real *s,
                       size_t n, size_t m)
{
    for (size_t e = 0; e < n; e++)
        for (size_t j = 0; j < m; j++)
            x[e * m + j] = (ft_real)(y[e * m + j] * exp(-(double)s[j]));
    if (logdet) {
        double t = sum_s(s, m);
        for (size_t e = 0; e < n; e++)
            logdet[e] -= t;
    }
}

void diagscale_backward(ft_real *dx, ft_real *ds, double *acc, const ft_real *dy,
                        const ft_real *y, const double *dlogdet, const ft_real *s,
                        size_t n, size_t m)
{
    double gsum = 0;
    for (size_t e = 0; e < n; e++)
        gsum += dlogdet ? dlogdet[e] : 0.0;
    for (size_t j = 0; j < m; j++)
        acc[j] = gsum;
    for (size_t e = 0; e < n; e++)
        for (size_t j = 0; j < m; j++) {
            double g = dy[e * m + j];
            acc[j] += g * y[e * m + j];
            dx[e * m + j] = (ft_real)(g * exp((double)s[j]));
        }
    for (size_t j = 0; j < m; j++)
        ds[j] += (ft_real)acc[j];
}
