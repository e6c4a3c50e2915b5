/* Convolutions on GEMM (glow-model.md §7.1, §7.2). 3x3 convs carry the
 * edge-indicator channel: the input is zero-padded and a channel that is 1 on the
 * padded ring is appended, then a VALID 3x3 cross-correlation with W[3,3,Cin+1,Cout]
 * (HWIO) is applied, via im2col (rows = pixels, 9·(Cin+1) columns, in HWIO order)
 * and one GEMM. 1x1 convs are one GEMM on the [rows, Cin] matrix. */
#ifndef FT_CONV2D_H
#define FT_CONV2D_H

#include <stddef.h>
#include "real.h"

struct ft_rows_ep;   /* blas.h */

/* Columns a 3x3 edge conv over n×h×w pixels with cin input channels needs. */
size_t conv3x3_cols_size(size_t n, size_t h, size_t w, size_t cin);
/* Floats of the cols and dcols workspaces that conv3x3_forward/backward (and
 * the zeroconv) need for these dims: the im2col size, or for a narrow output
 * the shift form's 9·cout·(rows + 2·cin) in cols and nothing in dcols. */
size_t conv3x3_work_size(size_t n, size_t h, size_t w, size_t cin, size_t cout);
size_t conv3x3_dwork_size(size_t n, size_t h, size_t w, size_t cin, size_t cout);

/* x: (N,H,W,·) with pixel stride xs ≥ cin, its first cin channels are read.
 * cols: (N·H·W, 9·(cin+1)) workspace. */
void conv3x3_im2col(ft_real *cols, const ft_real *x, size_t xs,
                    size_t n, size_t h, size_t w, size_t cin);
/* dx[(pixel), 0:cin] (pixel stride dxs) += fold of dcols, dropping the pad ring
 * and the edge channel. */
void conv3x3_col2im_add(ft_real *dx, size_t dxs, const ft_real *dcols,
                        size_t n, size_t h, size_t w, size_t cin);

/* y: (N,H,W,cout) = conv3x3_edge(x; W). cols: workspace. */
void conv3x3_forward(ft_real *y, ft_real *cols, const ft_real *x, size_t xs,
                     const ft_real *wt, size_t n, size_t h, size_t w, size_t cin, size_t cout);
/* conv3x3_forward followed by ActNorm + ReLU, y = max((conv + b)·sc, 0) as
 * actnorm_relu_apply computes it, on each block of output rows while it is
 * in cache (see ft_gemm_rows), or inside the small-K kernel (gemm_small.h). */
void conv3x3_forward_relu(ft_real *y, ft_real *cols, const ft_real *x, size_t xs,
                          const ft_real *wt, size_t n, size_t h, size_t w, size_t cin,
                          size_t cout, const ft_real *b, const double *sc);
/* dw += colsᵀ·dy; if dx: dx += fold(dy·Wᵀ). cols, dcols: workspaces (cols is
 * rebuilt from x; dcols may be NULL when dx is NULL). With dx_ep, dx is
 * overwritten instead, and dx_ep runs on each block of its rows as in
 * ft_gemm_rows(…, m = N·H·W, n = cin, …): right after the block is made where
 * the conv's form allows (the shift form), else after all of dx. */
void conv3x3_backward(ft_real *dx, size_t dxs, ft_real *dw, ft_real *cols, ft_real *dcols,
                      const ft_real *dy, const ft_real *x, size_t xs, const ft_real *wt,
                      size_t n, size_t h, size_t w, size_t cin, size_t cout,
                      const struct ft_rows_ep *dx_ep);

/* Zero-initialised output conv: out = (conv3x3_edge(x; W) + b)·exp(3·logs). */
void zeroconv_forward(ft_real *out, ft_real *cols, const ft_real *x, size_t xs,
                      const ft_real *wt, const ft_real *b, const ft_real *logs,
                      size_t n, size_t h, size_t w, size_t cin, size_t cout);
/* dout is overwritten by d(pre) = dout·exp(3·logs); db += Σ d(pre);
 * dlogs += 3·Σ dout·out; then conv3x3_backward. dlogs_acc: 2·cout doubles. */
void zeroconv_backward(ft_real *dx, size_t dxs, ft_real *dw, ft_real *db, ft_real *dlogs,
                       ft_real *cols, ft_real *dcols, double *acc, ft_real *dout,
                       const ft_real *out, const ft_real *x, size_t xs, const ft_real *wt,
                       const ft_real *logs, size_t n, size_t h, size_t w, size_t cin, size_t cout,
                       const struct ft_rows_ep *dx_ep);

/* 1x1: y (rows, cout) = x (rows, cin) · W (cin, cout). */
void conv1x1_forward(ft_real *y, const ft_real *x, const ft_real *wt,
                     size_t rows, size_t cin, size_t cout);
/* conv1x1_forward followed by ActNorm + ReLU, y as conv3x3_forward_relu
 * computes it; the epilogue is a pass over y after the GEMM (conv2d.c). */
void conv1x1_forward_relu(ft_real *y, const ft_real *x, const ft_real *wt, size_t rows,
                          size_t cin, size_t cout, const ft_real *b, const double *sc);
/* dw += xᵀ·dy; dx = dy·Wᵀ (overwritten) when dx is not NULL; dx must not
 * alias x or dy (it is scratch while dw is summed). */
void conv1x1_backward(ft_real *dx, ft_real *dw, const ft_real *dy, const ft_real *x,
                      const ft_real *wt, size_t rows, size_t cin, size_t cout);

#endif
