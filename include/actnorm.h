/* ActNorm (glow-model.md §5): y = (x + b)·exp(3·logs) per channel, log-det
 * H·W·Σ 3·logs, and its data-dependent init from per-channel sums reduced over
 * every rank. Buffers are NHWC viewed as (rows = N·H·W, C). */
#ifndef FT_ACTNORM_H
#define FT_ACTNORM_H

#include <stddef.h>
#include "real.h"

/* How DDI sums are combined across ranks: allreduce_sum(buf, len, ctx) must
 * replace buf by its element-wise sum over all ranks (NULL: one process). */
struct ddi {
    void (*allreduce_sum)(double *buf, size_t len, void *ctx);
    void *ctx;
};

/* Sets b, logs so that (x + b)·exp(3·logs) has per-channel mean 0 and variance 1
 * over all rows of all ranks: m = S1/n, v = S2/n − m², b = −m,
 * logs = ln(1/(√v + 1e-6))/3. work: 2·c + 1 doubles. */
void actnorm_ddi(ft_real *b, ft_real *logs, double *work, const ft_real *x,
                 size_t rows, size_t c, const struct ddi *ddi);

/* y may equal x. logdet (per example, n entries) += hw·Σ 3·logs unless NULL. */
void actnorm_forward(ft_real *y, double *logdet, const ft_real *x,
                     const ft_real *b, const ft_real *logs, size_t n, size_t hw, size_t c);
/* x may equal y. logdet −= hw·Σ 3·logs unless NULL. */
void actnorm_reverse(ft_real *x, double *logdet, const ft_real *y,
                     const ft_real *b, const ft_real *logs, size_t n, size_t hw, size_t c);
/* dx = dy·exp(3·logs) (overwritten; dx may equal dy); db += Σ dx;
 * dlogs += 3·Σ dy·y + 3·hw·Σ_n dlogdet_n (dlogdet NULL: no log-det term).
 * acc: 2·c doubles of workspace. */
void actnorm_backward(ft_real *dx, ft_real *db, ft_real *dlogs, double *acc,
                      const ft_real *dy, const ft_real *y, const double *dlogdet,
                      const ft_real *logs, size_t n, size_t hw, size_t c);

/* ActNorm then ReLU in one pass, as the coupling network uses them (no
 * log-det): y = max((x + b)·exp(3·logs), 0) over (rows, c); y may equal x. */
void actnorm_relu_forward(ft_real *y, const ft_real *x, const ft_real *b, const ft_real *logs,
                          size_t rows, size_t c);
/* The same map in two halves, for GEMM epilogues that already run on every
 * thread: sc (c doubles) = exp(3·logs) rounded to ft_real, then
 * actnorm_relu_apply on any block of rows, on the calling thread only. The
 * results are bitwise those of actnorm_relu_forward. */
void actnorm_scales(double *sc, const ft_real *logs, size_t c);
void actnorm_relu_apply(ft_real *y, const ft_real *x, const ft_real *b, const double *sc,
                        size_t rows, size_t c);
/* Backward of actnorm_relu_forward given its output y: g = dy where y > 0,
 * else 0; dx = g·exp(3·logs) (overwritten; dx may equal dy); db += Σ dx;
 * dlogs += 3·Σ g·y. acc: 2·c doubles of workspace. */
void actnorm_relu_backward(ft_real *dx, ft_real *db, ft_real *dlogs, double *acc,
                           const ft_real *dy, const ft_real *y, const ft_real *logs,
                           size_t rows, size_t c);
/* The same in two halves, for the epilogue of the GEMM that makes dy: rows
 * r0..r1−1 of dx (on the calling thread), with that block's Σ dx in part[0..c)
 * and Σ g·y in part[c..2c); then the blocks' parts (each 2·c doubles) added in
 * block order into db and dlogs. With the row blocks of actnorm_relu_backward
 * (eighths of the rows) the bits are the same as its. */
void actnorm_relu_backward_rows(ft_real *dx, double *part, const ft_real *dy, const ft_real *y,
                                const ft_real *logs, size_t r0, size_t r1, size_t c);
void actnorm_relu_backward_sum(ft_real *db, ft_real *dlogs, const double *parts, size_t nparts,
                               size_t c);

#endif
