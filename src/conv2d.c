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

/* Narrow outputs (cout well below cin, e.g. the zero conv: width → C) use the
 * shift form instead of im2col: G = x·Wr with Wr[ci][t·cout + o] = W[t][ci][o]
 * is one GEMM over the unexpanded input, and y sums the nine taps' columns of
 * G at the shifted pixels, plus the edge weights on border taps. It needs
 * 9·cout·(rows + 2·cin) floats of the cols workspace, which fit when cout is
 * small; otherwise im2col (9·(cin+1)·rows floats) is used. */
static int use_shift(size_t rows, size_t cin, size_t cout)
{
    return cout * (rows + 2 * cin) <= rows * (cin + 1) && cout < cin;
}

static void shift_weights(ft_real *wr, const ft_real *wt, size_t cin, size_t cout)
{
    for (size_t t = 0; t < 9; t++)
        for (size_t ci = 0; ci < cin; ci++)
            memcpy(wr + ci * 9 * cout + t * cout, wt + (t * (cin + 1) + ci) * cout,
                   cout * sizeof *wr);
}

static void shift_forward(ft_real *y, ft_real *work, const ft_real *x, size_t xs,
                          const ft_real *wt, size_t n, size_t h, size_t w, size_t cin, size_t cout)
{
    const size_t rows = n * h * w, k9 = 9 * cout;
    ft_real *wr = work, *gm = work + 9 * cin * cout;
    shift_weights(wr, wt, cin, cout);
    ft_gemm(0, 0, rows, k9, cin, 1, x, xs, wr, k9, 0, gm, k9);
    for (size_t e = 0; e < n; e++)
        for (size_t i = 0; i < h; i++)
            for (size_t j = 0; j < w; j++) {
                ft_real *yo = y + ((e * h + i) * w + j) * cout;
                memset(yo, 0, cout * sizeof *yo);
                for (size_t a = 0; a < 3; a++)
                    for (size_t b = 0; b < 3; b++) {
                        size_t t = a * 3 + b;
                        int inside = i + a >= 1 && i + a <= h && j + b >= 1 && j + b <= w;
                        const ft_real *src = inside
                            ? gm + ((e * h + i + a - 1) * w + j + b - 1) * k9 + t * cout
                            : wt + (t * (cin + 1) + cin) * cout;   /* edge channel = 1 */
                        for (size_t o = 0; o < cout; o++)
                            yo[o] += src[o];
                    }
            }
}

static void shift_backward(ft_real *dx, size_t dxs, ft_real *dw, ft_real *work,
                           const ft_real *dy, const ft_real *x, size_t xs, const ft_real *wt,
                           size_t n, size_t h, size_t w, size_t cin, size_t cout)
{
    const size_t rows = n * h * w, k9 = 9 * cout;
    ft_real *wr = work, *dwr = work + 9 * cin * cout, *dg = dwr + 9 * cin * cout;
    /* dG[q, t] = dy[q − offset(t)]: the pixel whose tap t reads q (0 if none). */
    for (size_t e = 0; e < n; e++)
        for (size_t i = 0; i < h; i++)
            for (size_t j = 0; j < w; j++) {
                ft_real *row = dg + ((e * h + i) * w + j) * k9;
                for (size_t a = 0; a < 3; a++)
                    for (size_t b = 0; b < 3; b++) {
                        ft_real *d = row + (a * 3 + b) * cout;
                        /* output pixel (i − a + 1, j − b + 1) */
                        if (i + 1 >= a && i + 1 - a < h && j + 1 >= b && j + 1 - b < w)
                            memcpy(d, dy + ((e * h + i + 1 - a) * w + j + 1 - b) * cout,
                                   cout * sizeof *d);
                        else
                            memset(d, 0, cout * sizeof *d);
                    }
            }
    ft_gemm(1, 0, cin, k9, rows, 1, x, xs, dg, k9, 0, dwr, k9);
    for (size_t t = 0; t < 9; t++)
        for (size_t ci = 0; ci < cin; ci++) {
            ft_real *d = dw + (t * (cin + 1) + ci) * cout;
            const ft_real *s = dwr + ci * k9 + t * cout;
            for (size_t o = 0; o < cout; o++)
                d[o] += s[o];
        }
    /* edge weights: dy summed over the pixels whose tap t lands on the ring */
    for (size_t t = 0; t < 9; t++) {
        size_t a = t / 3, b = t % 3;
        ft_real *d = dw + (t * (cin + 1) + cin) * cout;
        for (size_t e = 0; e < n; e++)
            for (size_t i = 0; i < h; i++)
                for (size_t j = 0; j < w; j++) {
                    int inside = i + a >= 1 && i + a <= h && j + b >= 1 && j + b <= w;
                    if (inside)
                        continue;
                    const ft_real *g = dy + ((e * h + i) * w + j) * cout;
                    for (size_t o = 0; o < cout; o++)
                        d[o] += g[o];
                }
    }
    if (dx) {
        shift_weights(wr, wt, cin, cout);
        ft_gemm(0, 1, rows, cin, k9, 1, dg, k9, wr, k9, 1, dx, dxs);
    }
}

void conv3x3_forward(ft_real *y, ft_real *cols, const ft_real *x, size_t xs,
                     const ft_real *wt, size_t n, size_t h, size_t w, size_t cin, size_t cout)
{
    FT_CHECK(xs >= cin, "pixel stride %zu < channels %zu", xs, cin);
    const size_t k = 9 * (cin + 1), rows = n * h * w;
    if (use_shift(rows, cin, cout)) {
        shift_forward(y, cols, x, xs, wt, n, h, w, cin, cout);
        return;
    }
    conv3x3_im2col(cols, x, xs, n, h, w, cin);
    ft_gemm(0, 0, rows, cout, k, 1, cols, k, wt, cout, 0, y, cout);
}

void conv3x3_backward(ft_real *dx, size_t dxs, ft_real *dw, ft_real *cols, ft_real *dcols,
                      const ft_real *dy, const ft_real *x, size_t xs, const ft_real *wt,
                      size_t n, size_t h, size_t w, size_t cin, size_t cout)
{
    const size_t k = 9 * (cin + 1), rows = n * h * w;
    if (use_shift(rows, cin, cout)) {
        shift_backward(dx, dxs, dw, cols, dy, x, xs, wt, n, h, w, cin, cout);
        return;
    }
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
