/* Fixed channel permutations (glow-model.md §6): y[..., c] = x[..., perm[c]],
 * log-det 0. "reverse" is perm[c] = C−1−c; "shuffle" is a Fisher–Yates draw
 * keyed by the seed and the tensor name, stored with the model. */
#ifndef FT_PERMUTE_H
#define FT_PERMUTE_H

#include <stddef.h>
#include <stdint.h>
#include "real.h"
#include "rng.h"

void permute_init_reverse(int32_t *perm, size_t c);
void permute_init_shuffle(int32_t *perm, struct rng_key key, size_t c);
/* y[r, c] = x[r, perm[c]]; y and x must not alias. */
void permute_forward(ft_real *y, const ft_real *x, const int32_t *perm, size_t rows, size_t c);
/* x[r, perm[c]] = y[r, c]. Also the backward of permute_forward (dx from dy). */
void permute_reverse(ft_real *x, const ft_real *y, const int32_t *perm, size_t rows, size_t c);

#endif
