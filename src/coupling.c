/* Coupling layers (glow-model.md §7): z1 = x[..., :C/2] passes through and feeds
 * NN; affine y2 = (z2 + t)·s with t = h[0::2], s = σ(h[1::2] + 2) (or exp),
 * log-det Σ ln s = −Σ softplus(−(r + 2)); additive y2 = z2 + h. All in place on
 * the (rows, C) buffer; NN activations a1, a2, h are kept for backward. The
 * NN's ActNorm + ReLU pairs run as epilogues of their conv GEMMs (forward,
 * outside DDI), and in backward as one fused pass each, the second one as the
 * epilogue of conv3's input-gradient GEMM. */
#include "coupling.h"

#include <math.h>
#include <string.h>

#include "blas.h"
#include "check.h"
#include "conv2d.h"

/* Below this many elements the affine coupling loops stay on one thread. */
#define FT_COUPLING_PAR_MIN 8192

size_t coupling_nout(const struct coupling_dims *d)
{
    return d->kind == COUPLING_AFFINE ? d->c : d->c / 2;
}

size_t coupling_cols_size(const struct coupling_dims *d)
{
    size_t cin = d->c / 2 > d->width ? d->c / 2 : d->width;
    return conv3x3_cols_size(d->n, d->h, d->w, cin);
}

size_t coupling_parts_size(size_t rows_max, size_t width)
{
    return 2 * width * ft_rows_blocks_max(rows_max, width);
}

/* ActNorm2 + ReLU backward on each block of rows of da2 as conv3's input
 * gradient makes it, while the block is in cache; its sums go to the
 * block's part. */
struct relu_bwd {
    ft_real *dx;
    const ft_real *y, *logs;
    double *parts;
    size_t blk, c;
};

static void relu_bwd_rows(void *ctx, size_t r0, size_t r1)
{
    const struct relu_bwd *e = ctx;
    actnorm_relu_backward_rows(e->dx, e->parts + r0 / e->blk * 2 * e->c, e->dx, e->y, e->logs,
                               r0, r1, e->c);
}

void nn_forward(struct coupling_acts *acts, const struct coupling_work *wk,
                const ft_real *z1, size_t xs, const struct nn_tensors *p,
                const struct ddi *ddi, const struct coupling_dims *d, size_t cin, size_t nout)
{
    const size_t hw = d->h * d->w, rows = d->n * hw, wd = d->width;
    if (!ddi) {
        /* acc (≥ 2·width doubles) holds the scales: it is free in forward. */
        actnorm_scales(wk->acc, p->an1_logs, wd);
        conv3x3_forward_relu(acts->a1, wk->cols, z1, xs, p->w1, d->n, d->h, d->w, cin, wd,
                             p->an1_b, wk->acc);
        actnorm_scales(wk->acc, p->an2_logs, wd);
        conv1x1_forward_relu(acts->a2, acts->a1, p->w2, rows, wd, wd, p->an2_b, wk->acc);
        zeroconv_forward(acts->h, wk->cols, acts->a2, wd, p->w3, p->b3, p->logs3,
                         d->n, d->h, d->w, wd, nout);
        return;
    }
    /* DDI needs the whole conv output before its ActNorm exists: unfused. */
    conv3x3_forward(acts->a1, wk->cols, z1, xs, p->w1, d->n, d->h, d->w, cin, wd);
    actnorm_ddi(p->an1_b, p->an1_logs, wk->acc, acts->a1, rows, wd, ddi);
    actnorm_relu_forward(acts->a1, acts->a1, p->an1_b, p->an1_logs, rows, wd);
    conv1x1_forward(acts->a2, acts->a1, p->w2, rows, wd, wd);
    actnorm_ddi(p->an2_b, p->an2_logs, wk->acc, acts->a2, rows, wd, ddi);
    actnorm_relu_forward(acts->a2, acts->a2, p->an2_b, p->an2_logs, rows, wd);
    zeroconv_forward(acts->h, wk->cols, acts->a2, wd, p->w3, p->b3, p->logs3,
                     d->n, d->h, d->w, wd, nout);
}

void nn_backward(ft_real *dz1, size_t dxs, const struct nn_tensors *g,
                 const struct coupling_work *wk, ft_real *dh,
                 const struct coupling_acts *acts, const ft_real *z1, size_t xs,
                 const struct nn_tensors *p, const struct coupling_dims *d, size_t cin, size_t nout)
{
    const size_t hw = d->h * d->w, rows = d->n * hw, wd = d->width;
    ft_real *da2 = wk->da, *da1 = wk->da + rows * wd;
    /* ActNorm backward may use the ReLU output as its y: where they differ the
     * masked gradient is 0, so Σ dy·y is unchanged. */
    const size_t blk = ft_rows_block(rows, wd), nb = (rows + blk - 1) / blk;
    FT_CHECK(2 * wd * nb <= wk->n_parts, "coupling parts: %zu blocks of %zu rows need %zu "
             "doubles, have %zu", nb, blk, 2 * wd * nb, wk->n_parts);
    struct relu_bwd e = { da2, acts->a2, p->an2_logs, wk->parts, blk, wd };
    struct ft_rows_ep ep = { relu_bwd_rows, &e };
    zeroconv_backward(da2, wd, g->w3, g->b3, g->logs3, wk->cols, wk->dcols, wk->acc, dh,
                      acts->h, acts->a2, wd, p->w3, p->logs3, d->n, d->h, d->w, wd, nout, &ep);
    actnorm_relu_backward_sum(g->an2_b, g->an2_logs, wk->parts, nb, wd);
    if (acts->rebuild_a1) {   /* as nn_forward makes it, bit for bit */
        actnorm_scales(wk->acc, p->an1_logs, wd);
        conv3x3_forward_relu(acts->a1, wk->cols, z1, xs, p->w1, d->n, d->h, d->w, cin, wd,
                             p->an1_b, wk->acc);
    }
    conv1x1_backward(da1, g->w2, da2, acts->a1, p->w2, rows, wd, wd);
    actnorm_relu_backward(da1, g->an1_b, g->an1_logs, wk->acc, da1, acts->a1, p->an1_logs,
                          rows, wd);
    conv3x3_backward(dz1, dxs, g->w1, wk->cols, wk->dcols, da1, z1, xs, p->w1,
                     d->n, d->h, d->w, cin, wd, NULL);
}

/* s and ln s of the affine scale for raw output r. */
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

void coupling_forward(ft_real *y, double *logdet, struct coupling_acts *acts,
                      const struct coupling_work *wk, const struct nn_tensors *p,
                      const struct ddi *ddi, const struct coupling_dims *d)
{
    const size_t c = d->c, c2 = c / 2, hw = d->h * d->w, nout = coupling_nout(d);
    FT_CHECK(c % 2 == 0, "coupling needs an even channel count, got %zu", c);
    nn_forward(acts, wk, y, c, p, ddi, d, c2, nout);
    /* Examples are independent and each sums its own log-det in pixel order,
     * so the bits do not depend on the thread count. */
    const int par = d->n > 1 && d->n * hw * c2 >= FT_COUPLING_PAR_MIN;
#pragma omp parallel for num_threads(ft_threads()) schedule(static) if (par)
    for (size_t e = 0; e < d->n; e++) {
        double ld = 0;
        for (size_t q = 0; q < hw; q++) {
            size_t r = e * hw + q;
            ft_real *z2 = y + r * c + c2;
            const ft_real *h = acts->h + r * nout;
            if (d->kind == COUPLING_ADDITIVE) {
                for (size_t k = 0; k < c2; k++)
                    z2[k] += h[k];
                continue;
            }
            for (size_t k = 0; k < c2; k++) {
                double ls;
                ft_real s = (ft_real)affine_scale(h[2 * k + 1], d->scale, &ls);
                z2[k] = (z2[k] + h[2 * k]) * s;
                ld += ls;
            }
        }
        if (logdet)
            logdet[e] += ld;
    }
}

void coupling_reverse(ft_real *x, double *logdet, struct coupling_acts *acts,
                      const struct coupling_work *wk, const struct nn_tensors *p,
                      const struct coupling_dims *d)
{
    const size_t c = d->c, c2 = c / 2, hw = d->h * d->w, nout = coupling_nout(d);
    nn_forward(acts, wk, x, c, p, NULL, d, c2, nout);
    const int par = d->n > 1 && d->n * hw * c2 >= FT_COUPLING_PAR_MIN;
#pragma omp parallel for num_threads(ft_threads()) schedule(static) if (par)
    for (size_t e = 0; e < d->n; e++) {
        double ld = 0;
        for (size_t q = 0; q < hw; q++) {
            size_t r = e * hw + q;
            ft_real *y2 = x + r * c + c2;
            const ft_real *h = acts->h + r * nout;
            if (d->kind == COUPLING_ADDITIVE) {
                for (size_t k = 0; k < c2; k++)
                    y2[k] -= h[k];
                continue;
            }
            for (size_t k = 0; k < c2; k++) {
                double ls;
                ft_real s = (ft_real)affine_scale(h[2 * k + 1], d->scale, &ls);
                y2[k] = y2[k] / s - h[2 * k];
                ld += ls;
            }
        }
        if (logdet)
            logdet[e] -= ld;
    }
}

void coupling_backward(ft_real *dy, const struct nn_tensors *g, const struct coupling_work *wk,
                       const ft_real *y, const struct coupling_acts *acts,
                       const struct nn_tensors *p, const double *dlogdet,
                       const struct coupling_dims *d)
{
    const size_t c = d->c, c2 = c / 2, hw = d->h * d->w, nout = coupling_nout(d);
    const int par = d->n > 1 && d->n * hw * c2 >= FT_COUPLING_PAR_MIN;
#pragma omp parallel for num_threads(ft_threads()) schedule(static) if (par)
    for (size_t e = 0; e < d->n; e++) {
        const double gam = dlogdet ? dlogdet[e] : 0.0;
        for (size_t q = 0; q < hw; q++) {
            size_t r = e * hw + q;
            ft_real *g2 = dy + r * c + c2;
            const ft_real *y2 = y + r * c + c2, *h = acts->h + r * nout;
            ft_real *dh = wk->dh + r * nout;
            if (d->kind == COUPLING_ADDITIVE) {
                memcpy(dh, g2, c2 * sizeof *dh);
                continue;
            }
            for (size_t k = 0; k < c2; k++) {
                double ls;
                double s = (ft_real)affine_scale(h[2 * k + 1], d->scale, &ls);
                double gy = (double)g2[k] * y2[k];  /* g·(z2 + t)·s */
                double dr = d->scale == SCALE_EXP ? gy + gam : (gy + gam) * (1.0 - s);
                dh[2 * k] = (ft_real)(g2[k] * s);
                dh[2 * k + 1] = (ft_real)dr;
                g2[k] = (ft_real)(g2[k] * s);
            }
        }
    }
    nn_backward(dy, c, g, wk, wk->dh, acts, y, c, p, d, c2, nout);
}
