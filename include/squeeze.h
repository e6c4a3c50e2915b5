/* Squeeze (space-to-depth), glow-model.md §4:
 * out[n,i,j,4c+2dy+dx] = in[n,2i+dy,2j+dx,c]; unsqueeze is its exact inverse,
 * both with log-det 0. The backward of one is the other. */
#ifndef FT_SQUEEZE_H
#define FT_SQUEEZE_H

#include <stddef.h>
#include "real.h"

/* x: (N,H,W,C) with pixel stride xs ≥ c (its first c channels), y: (N,H/2,W/2,4C). */
void squeeze_forward(ft_real *y, const ft_real *x, size_t xs, size_t n, size_t h, size_t w, size_t c);
/* y: (N,H/2,W/2,4C) → x: (N,H,W,C) with pixel stride xs (first c channels written). */
void squeeze_reverse(ft_real *x, size_t xs, const ft_real *y, size_t n, size_t h, size_t w, size_t c);

#endif
