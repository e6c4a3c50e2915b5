/* Squeeze (space-to-depth) and its inverse, glow-model.md §4:
 *   out[n,i,j,4c+2dy+dx] = in[n,2i+dy,2j+dx,c],  dy,dx ∈ {0,1}
 * Each input channel becomes four consecutive output channels, in raster order
 * of its 2×2 block. Pure permutations: log-det 0, the backward of one is the
 * other. The input side may be a channel slice (pixel stride xs ≥ c). */
#include "squeeze.h"

#include "blas.h"
#include "check.h"

/* Output rows are independent; below this many elements one thread. */
#define FT_SQUEEZE_PAR_MIN 32768

void squeeze_forward(ft_real *y, const ft_real *x, size_t xs, size_t n, size_t h, size_t w, size_t c)
{
    FT_CHECK(h % 2 == 0 && w % 2 == 0, "squeeze needs even H and W, got %zux%zu", h, w);
    FT_CHECK(xs >= c, "pixel stride %zu < channels %zu", xs, c);
    size_t ho = h / 2, wo = w / 2, co = 4 * c, nh = n * ho;
    const int par = nh * wo * co >= FT_SQUEEZE_PAR_MIN;
#pragma omp parallel for num_threads(ft_threads()) schedule(static) if (par)
    for (size_t ei = 0; ei < nh; ei++) {
        const size_t e = ei / ho, i = ei % ho;
        for (size_t j = 0; j < wo; j++) {
            ft_real *yp = y + ((e * ho + i) * wo + j) * co;
            for (size_t dy = 0; dy < 2; dy++)
                for (size_t dx = 0; dx < 2; dx++) {
                    const ft_real *xp = x + ((e * h + 2 * i + dy) * w + 2 * j + dx) * xs;
                    size_t o = 2 * dy + dx;
                    for (size_t k = 0; k < c; k++)
                        yp[4 * k + o] = xp[k];
                }
        }
    }
}

void squeeze_reverse(ft_real *x, size_t xs, const ft_real *y, size_t n, size_t h, size_t w, size_t c)
{
    FT_CHECK(h % 2 == 0 && w % 2 == 0, "unsqueeze needs even H and W, got %zux%zu", h, w);
    FT_CHECK(xs >= c, "pixel stride %zu < channels %zu", xs, c);
    size_t ho = h / 2, wo = w / 2, co = 4 * c, nh = n * ho;
    const int par = nh * wo * co >= FT_SQUEEZE_PAR_MIN;
#pragma omp parallel for num_threads(ft_threads()) schedule(static) if (par)
    for (size_t ei = 0; ei < nh; ei++) {
        const size_t e = ei / ho, i = ei % ho;
        for (size_t j = 0; j < wo; j++) {
            const ft_real *yp = y + ((e * ho + i) * wo + j) * co;
            for (size_t dy = 0; dy < 2; dy++)
                for (size_t dx = 0; dx < 2; dx++) {
                    ft_real *xp = x + ((e * h + 2 * i + dy) * w + 2 * j + dx) * xs;
                    size_t o = 2 * dy + dx;
                    for (size_t k = 0; k < c; k++)
                        xp[k] = yp[4 * k + o];
                }
        }
    }
}
