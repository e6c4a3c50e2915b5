/* Counter-based generator: rng_u64(key, ctr) = mix(key ^ mix(ctr)), with the
 * SplitMix64 finaliser as mix. Keys fold (seed, purpose, a, b) through the same
 * mixer, so a draw depends only on what names it, never on call order. */
#include "rng.h"

#include <math.h>

static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

struct rng_key rng_key(uint64_t seed, uint32_t purpose, uint64_t a, uint64_t b)
{
    uint64_t k = mix64(seed);
    k = mix64(k ^ ((uint64_t)purpose * 0xd1b54a32d192ed03ULL));
    k = mix64(k ^ mix64(a + 0x632be59bd9b4e019ULL));
    k = mix64(k ^ mix64(b + 0x8cb92ba72f3d8dd7ULL));
    return (struct rng_key){ k };
}

uint64_t rng_u64(struct rng_key key, uint64_t ctr)
{
    return mix64(key.k ^ mix64(ctr * 0x9fb21c651e98df25ULL + 1));
}

double rng_uniform(struct rng_key key, uint64_t ctr)
{
    return (double)(rng_u64(key, ctr) >> 11) * 0x1.0p-53;
}

double rng_normal(struct rng_key key, uint64_t ctr)
{
    /* Two independent uniforms from counters 2·ctr and 2·ctr+1; u1 in (0, 1]. */
    double u1 = 1.0 - rng_uniform(key, 2 * ctr);
    double u2 = rng_uniform(key, 2 * ctr + 1);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925 * u2);
}

uint64_t rng_hash_str(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    return h;
}

uint64_t rng_below(struct rng_key key, uint64_t ctr, uint64_t n)
{
    /* Rejection on the top of the range keeps the draw unbiased; sub-counters
     * are ctr·64 + attempt, so each logical draw has its own stream. */
    uint64_t lim = UINT64_MAX - UINT64_MAX % n;
    for (uint64_t t = 0;; t++) {
        uint64_t r = rng_u64(key, ctr * 64 + t);
        if (r < lim)
            return r % n;
    }
}

void rng_permutation(uint64_t *perm, uint64_t n, struct rng_key key)
{
    for (uint64_t i = 0; i < n; i++)
        perm[i] = i;
    for (uint64_t i = n; i > 1; i--) {
        uint64_t j = rng_below(key, i, i);
        uint64_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
}
