/* Fixed channel permutations (glow-model.md §6): y[r, c] = x[r, perm[c]], log-det 0.
 * "reverse" is perm[c] = C−1−c; "shuffle" is Fisher–Yates keyed by (seed, tensor
 * name): for i = C−1…1, swap perm[i] with perm[j], j = rng_below(key, i, i+1).
 * The reverse map x[r, perm[c]] = y[r, c] is also the backward of the forward. */
#include "permute.h"

#include "blas.h"
#include "check.h"

/* Rows are independent; below this many elements one thread. */
#define FT_PERMUTE_PAR_MIN 32768

void permute_init_reverse(int32_t *perm, size_t c)
{
    FT_CHECK(c < 2147483647u, "permutation of %zu channels does not fit int32", c);
    for (size_t i = 0; i < c; i++)
        perm[i] = (int32_t)(c - 1 - i);
}

void permute_init_shuffle(int32_t *perm, struct rng_key key, size_t c)
{
    FT_CHECK(c < 2147483647u, "permutation of %zu channels does not fit int32", c);
    for (size_t i = 0; i < c; i++)
        perm[i] = (int32_t)i;
    for (size_t i = c; i-- > 1;) {
        size_t j = (size_t)rng_below(key, i, i + 1);   /* uniform in [0, i] */
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

static void check_perm(const int32_t *perm, size_t c)
{
    for (size_t k = 0; k < c; k++)
        FT_CHECK(perm[k] >= 0 && (size_t)perm[k] < c,
                 "perm[%zu] = %d is outside [0, %zu)", k, (int)perm[k], c);
}

void permute_forward(ft_real *y, const ft_real *x, const int32_t *perm, size_t rows, size_t c)
{
    FT_CHECK(y != x, "permute_forward: y and x must not alias");
    check_perm(perm, c);
    const int par = rows * c >= FT_PERMUTE_PAR_MIN;
#pragma omp parallel for num_threads(ft_threads()) schedule(static) if (par)
    for (size_t r = 0; r < rows; r++) {
        const ft_real *xr = x + r * c;
        ft_real *yr = y + r * c;
        for (size_t k = 0; k < c; k++)
            yr[k] = xr[perm[k]];
    }
}

void permute_reverse(ft_real *x, const ft_real *y, const int32_t *perm, size_t rows, size_t c)
{
    FT_CHECK(y != x, "permute_reverse: x and y must not alias");
    check_perm(perm, c);
    const int par = rows * c >= FT_PERMUTE_PAR_MIN;
#pragma omp parallel for num_threads(ft_threads()) schedule(static) if (par)
    for (size_t r = 0; r < rows; r++) {
        const ft_real *yr = y + r * c;
        ft_real *xr = x + r * c;
        for (size_t k = 0; k < c; k++)
            xr[perm[k]] = yr[k];
    }
}
