/* Masked couplings (glow-model.md §8) on the coupling network of coupling.c:
 * checkerboard masks (NN on x⊙b, C inputs, n_out = 2C or C) and the "second"
 * channel mask (NN on z2, z1 transformed); "first" is coupling_forward itself.
 * Transformed elements: affine y = (x + t)·σ(r + 2) (or e^r), log-det Σ ln s;
 * additive y = x + h. Copied elements pass unchanged and their NN outputs are
 * unused (gradient 0). In place on the (rows, C) buffer, as coupling.c. */
#include "masked.h"

#include <math.h>
#include <string.h>

#include "blas.h"
#include "check.h"

/* Below this many elements the element loops stay on one thread. */
#define FT_MASKED_PAR_MIN 8192

int masked_is_checker(enum mask_kind m)
{
    return m == MASK_CHECKER0 || m == MASK_CHECKER1;
}

size_t masked_cin(enum mask_kind m, size_t c)
{
    return masked_is_checker(m) ? c : c / 2;
}

size_t masked_nout(enum mask_kind m, const struct coupling_dims *d)
{
    size_t ct = masked_is_checker(m) ? d->c : d->c / 2;   /* NN targets per pixel */
    return d->kind == COUPLING_AFFINE ? 2 * ct : ct;
}

/* b of pixel q (raster index within the image) under checkerboard m: 1 = copied. */
static int checker_b(enum mask_kind m, const struct coupling_dims *d, size_t q)
{
    size_t i = q / d->w, j = q % d->w, p = m == MASK_CHECKER1;
    return (i + j + p) % 2 == 0;
}

/* Transformed channels of pixel q: [k0, k0 + *ct); NN output of channel k0+kk
 * is h[2kk], h[2kk+1] (affine) or h[kk] (additive). */
static size_t span(enum mask_kind m, const struct coupling_dims *d, size_t q, size_t *k0)
{
    *k0 = m == MASK_CHANNEL_FIRST ? d->c / 2 : 0;
    if (masked_is_checker(m))
        return checker_b(m, d, q) ? 0 : d->c;
    return d->c / 2;
}

/* xb = x⊙b for a checkerboard (zeros at transformed pixels). */
static void mask_input(ft_real *xb, const ft_real *x, const struct coupling_dims *d,
                       enum mask_kind m)
{
    const size_t hw = d->h * d->w, c = d->c;
    for (size_t r = 0; r < d->n * hw; r++) {
        if (checker_b(m, d, r % hw))
            memcpy(xb + r * c, x + r * c, c * sizeof *xb);
        else
            memset(xb + r * c, 0, c * sizeof *xb);
    }
}

/* The NN on the conditioning part of x (in place buffer x, rows·c). */
static void run_nn(struct coupling_acts *acts, const struct coupling_work *wk, ft_real *xb,
                   const ft_real *x, const struct nn_tensors *p, const struct ddi *ddi,
                   const struct coupling_dims *d, enum mask_kind m)
{
    const size_t c = d->c, nout = masked_nout(m, d);
    if (masked_is_checker(m)) {
        mask_input(xb, x, d, m);
        nn_forward(acts, wk, xb, c, p, ddi, d, c, nout);
    } else {
        nn_forward(acts, wk, x + c / 2, c, p, ddi, d, c / 2, nout);
    }
}

/* s and ln s of the affine scale for raw output r (as coupling.c). */
static inline double affine_scale(double r, enum scale_fn fn, double *log_s)
{
    if (fn == SCALE_EXP) {
        *log_s = r;
        return exp(r);
    }
    double u = r + 2.0;  /* ln σ(u) = −softplus(−u) */
    *log_s = -(fmax(-u, 0.0) + log1p(exp(-fabs(u))));
    return 1.0 / (1.0 + exp(-u));
}

/* dir = +1: forward map, −1: its inverse, on the transformed elements. */
static void apply(ft_real *y, double *logdet, const struct coupling_acts *acts,
                  const struct coupling_dims *d, enum mask_kind m, int dir)
{
    const size_t c = d->c, hw = d->h * d->w, nout = masked_nout(m, d);
    const int par = d->n > 1 && d->n * hw * c >= FT_MASKED_PAR_MIN;
#pragma omp parallel for num_threads(ft_threads()) schedule(static) if (par)
    for (size_t e = 0; e < d->n; e++) {
        double ld = 0;
        for (size_t q = 0; q < hw; q++) {
            size_t r = e * hw + q, k0;
            size_t ct = span(m, d, q, &k0);
            ft_real *z = y + r * c + k0;
            const ft_real *h = acts->h + r * nout;
            for (size_t kk = 0; kk < ct; kk++) {
                if (d->kind == COUPLING_ADDITIVE) {
                    z[kk] = dir > 0 ? z[kk] + h[kk] : z[kk] - h[kk];
                    continue;
                }
                double ls;
                ft_real s = (ft_real)affine_scale(h[2 * kk + 1], d->scale, &ls);
                z[kk] = dir > 0 ? (z[kk] + h[2 * kk]) * s : z[kk] / s - h[2 * kk];
                ld += ls;
            }
        }
        if (logdet)
            logdet[e] += dir > 0 ? ld : -ld;
    }
}

void masked_forward(ft_real *y, double *logdet, struct coupling_acts *acts,
                    const struct coupling_work *wk, ft_real *xb, const struct nn_tensors *p,
                    const struct ddi *ddi, const struct coupling_dims *d, enum mask_kind m)
{
    if (m == MASK_CHANNEL_FIRST) {
        coupling_forward(y, logdet, acts, wk, p, ddi, d);
        return;
    }
    FT_CHECK(masked_is_checker(m) || d->c % 2 == 0,
             "channel mask needs an even channel count, got %zu", d->c);
    run_nn(acts, wk, xb, y, p, ddi, d, m);
    apply(y, logdet, acts, d, m, +1);
}

void masked_reverse(ft_real *x, double *logdet, struct coupling_acts *acts,
                    const struct coupling_work *wk, ft_real *xb, const struct nn_tensors *p,
                    const struct coupling_dims *d, enum mask_kind m)
{
    if (m == MASK_CHANNEL_FIRST) {
        coupling_reverse(x, logdet, acts, wk, p, d);
        return;
    }
    /* The copied part of the output equals that of the input, so the NN sees
     * exactly what it saw in the forward pass. */
    run_nn(acts, wk, xb, x, p, NULL, d, m);
    apply(x, logdet, acts, d, m, -1);
}

void masked_backward(ft_real *dy, const struct nn_tensors *g, const struct coupling_work *wk,
                     ft_real *xb, ft_real *dxb, const ft_real *y,
                     const struct coupling_acts *acts, const struct nn_tensors *p,
                     const double *dlogdet, const struct coupling_dims *d, enum mask_kind m)
{
    if (m == MASK_CHANNEL_FIRST) {
        coupling_backward(dy, g, wk, y, acts, p, dlogdet, d);
        return;
    }
    const size_t c = d->c, hw = d->h * d->w, rows = d->n * hw, nout = masked_nout(m, d);
    const int par = d->n > 1 && rows * c >= FT_MASKED_PAR_MIN;
#pragma omp parallel for num_threads(ft_threads()) schedule(static) if (par)
    for (size_t e = 0; e < d->n; e++) {
        const double gam = dlogdet ? dlogdet[e] : 0.0;
        for (size_t q = 0; q < hw; q++) {
            size_t r = e * hw + q, k0;
            size_t ct = span(m, d, q, &k0);
            ft_real *gz = dy + r * c + k0;
            const ft_real *yz = y + r * c + k0, *h = acts->h + r * nout;
            ft_real *dh = wk->dh + r * nout;
            if (ct == 0) {   /* a copied pixel: its NN outputs are unused */
                memset(dh, 0, nout * sizeof *dh);
                continue;
            }
            for (size_t kk = 0; kk < ct; kk++) {
                if (d->kind == COUPLING_ADDITIVE) {
                    dh[kk] = gz[kk];
                    continue;
                }
                double ls;
                double s = (ft_real)affine_scale(h[2 * kk + 1], d->scale, &ls);
                double gy = (double)gz[kk] * yz[kk];  /* g·(x + t)·s */
                double dr = d->scale == SCALE_EXP ? gy + gam : (gy + gam) * (1.0 - s);
                dh[2 * kk] = (ft_real)(gz[kk] * s);
                dh[2 * kk + 1] = (ft_real)dr;
                gz[kk] = (ft_real)(gz[kk] * s);
            }
        }
    }
    if (!masked_is_checker(m)) {
        /* z2 conditions: its gradient gains the NN's input gradient */
        nn_backward(dy + c / 2, c, g, wk, wk->dh, acts, y + c / 2, c, p, d, c / 2, nout);
        return;
    }
    /* The NN saw x⊙b = y⊙b; its input gradient reaches x only where b = 1. */
    mask_input(xb, y, d, m);
    memset(dxb, 0, rows * c * sizeof *dxb);
    nn_backward(dxb, c, g, wk, wk->dh, acts, xb, c, p, d, c, nout);
    for (size_t r = 0; r < rows; r++)
        if (checker_b(m, d, r % hw))
            for (size_t k = 0; k < c; k++)
                dy[r * c + k] += dxb[r * c + k];
}
