/* Convolutions on GEMM (glow-model.md §7.1–7.2). conv3x3_edge: im2col over the
 * zero-padded input with the edge-indicator channel (1 on the pad ring) appended
 * as channel cin, then y = cols·W with W as a [9·(cin+1), cout] matrix (HWIO).
 * Zero conv: out = (conv + b)·exp(3·logs). 1x1: y = x·W, one GEMM. */
#include "conv2d.h"

#include <string.h>

#include "actnorm.h"
#include "blas.h"
#include "check.h"

size_t conv3x3_cols_size(size_t n, size_t h, size_t w, size_t cin)
{
    return n * h * w * 9 * (cin + 1);
}

void conv3x3_im2col(ft_real *cols, const ft_real *x, size_t xs,
                    size_t n, size_t h, size_t w, size_t cin)
{
    const size_t k = 9 * (cin + 1);
    for (size_t e = 0; e < n; e++)
        for (size_t i = 0; i < h; i++)
            for (size_t j = 0; j < w; j++) {
                ft_real *row = cols + ((e * h + i) * w + j) * k;
                for (size_t a = 0; a < 3; a++)
                    for (size_t b = 0; b < 3; b++) {
                        ft_real *dst = row + (a * 3 + b) * (cin + 1);
                        /* padded (i+a, j+b) is original (i+a−1, j+b−1) */
                        int inside = i + a >= 1 && i + a <= h && j + b >= 1 && j + b <= w;
                        if (inside) {
                            const ft_real *src = x + ((e * h + i + a - 1) * w + j + b - 1) * xs;
                            memcpy(dst, src, cin * sizeof *dst);
                            dst[cin] = 0;
                        } else {
                            memset(dst, 0, cin * sizeof *dst);
                            dst[cin] = 1;
                        }
                    }
            }
}

void conv3x3_col2im_add(ft_real *dx, size_t dxs, const ft_real *dcols,
                        size_t n, size_t h, size_t w, size_t cin)
{
    const size_t k = 9 * (cin + 1);
    for (size_t e = 0; e < n; e++)
        for (size_t i = 0; i < h; i++)
            for (size_t j = 0; j < w; j++) {
                const ft_real *row = dcols + ((e * h + i) * w + j) * k;
                for (size_t a = 0; a < 3; a++) {
                    if (i + a < 1 || i + a > h)
                        continue;
                    for (size_t b = 0; b < 3; b++) {
                        if (j + b < 1 || j + b > w)
                            continue;
                        const ft_real *src = row + (a * 3 + b) * (cin + 1);
                        ft_real *dst = dx + ((e * h + i + a - 1) * w + j + b - 1) * dxs;
                        for (size_t c = 0; c < cin; c++)
                            dst[c] += src[c];
                    }
                }
            }
}

void conv3x3_forward(ft_real *y, ft_real *cols, const ft_real *x, size_t xs,
                     const ft_real *wt, size_t n, size_t h, size_t w, size_t cin, size_t cout)
{
    FT_CHECK(xs >= cin, "pixel stride %zu < channels %zu", xs, cin);
    const size_t k = 9 * (cin + 1), rows = n * h * w;
    conv3x3_im2col(cols, x, xs, n, h, w, cin);
    ft_gemm(0, 0, rows, cout, k, 1, cols, k, wt, cout, 0, y, cout);
}

void conv3x3_backward(ft_real *dx, size_t dxs, ft_real *dw, ft_real *cols, ft_real *dcols,
                      const ft_real *dy, const ft_real *x, size_t xs, const ft_real *wt,
                      size_t n, size_t h, size_t w, size_t cin, size_t cout)
{
    const size_t k = 9 * (cin + 1), rows = n * h * w;
    conv3x3_im2col(cols, x, xs, n, h, w, cin);
    ft_gemm(1, 0, k, cout, rows, 1, cols, k, dy, cout, 1, dw, cout);
    if (dx) {
        FT_CHECK(dcols != NULL, "conv3x3_backward needs dcols for dx");
        ft_gemm(0, 1, rows, k, cout, 1, dy, cout, wt, cout, 0, dcols, k);
        conv3x3_col2im_add(dx, dxs, dcols, n, h, w, cin);
    }
}

void zeroconv_forward(ft_real *out, ft_real *cols, const ft_real *x, size_t xs,
                      const ft_real *wt, const ft_real *b, const ft_real *logs,
                      size_t n, size_t h, size_t w, size_t cin, size_t cout)
{
    const size_t rows = n * h * w;
    conv3x3_forward(out, cols, x, xs, wt, n, h, w, cin, cout);
    actnorm_forward(out, NULL, out, b, logs, 1, rows, cout);   /* same affine map */
}

void zeroconv_backward(ft_real *dx, size_t dxs, ft_real *dw, ft_real *db, ft_real *dlogs,
                       ft_real *cols, ft_real *dcols, double *acc, ft_real *dout,
                       const ft_real *out, const ft_real *x, size_t xs, const ft_real *wt,
                       const ft_real *logs, size_t n, size_t h, size_t w, size_t cin, size_t cout)
{
    const size_t rows = n * h * w;
    /* (pre + b)·exp(3·logs) is ActNorm's map without its log-det. */
    actnorm_backward(dout, db, dlogs, acc, dout, out, NULL, logs, 1, rows, cout);
    conv3x3_backward(dx, dxs, dw, cols, dcols, dout, x, xs, wt, n, h, w, cin, cout);
}

void conv1x1_forward(ft_real *y, const ft_real *x, const ft_real *wt,
                     size_t rows, size_t cin, size_t cout)
{
    ft_gemm(0, 0, rows, cout, cin, 1, x, cin, wt, cout, 0, y, cout);
}

void conv1x1_backward(ft_real *dx, ft_real *dw, const ft_real *dy, const ft_real *x,
                      const ft_real *wt, size_t rows, size_t cin, size_t cout)
{
    ft_gemm(1, 0, cin, cout, rows, 1, x, cin, dy, cout, 1, dw, cout);
    if (dx)
        ft_gemm(0, 1, rows, cin, cout, 1, dy, cout, wt, cout, 0, dx, cin);
}
