/* Counter-based random numbers: every draw is a pure function of
 * (seed, purpose, a, b, element), with no stream state, so the value an element
 * gets does not depend on the world size, the batch split or restarts. */
#ifndef FT_RNG_H
#define FT_RNG_H

#include <stdint.h>

enum rng_purpose {
    RNG_PARAM_INIT = 1,  /* a: hash of the tensor name */
    RNG_DEQUANT = 2,     /* a: epoch (or test pass), b: global sample index */
    RNG_PERMUTE = 3,     /* a: epoch: the global sample order */
    RNG_SAMPLE = 4,      /* sampling latents */
    RNG_TEST = 5,        /* test fixtures */
};

struct rng_key {
    uint64_t k;
};

struct rng_key rng_key(uint64_t seed, uint32_t purpose, uint64_t a, uint64_t b);
uint64_t rng_u64(struct rng_key key, uint64_t ctr);
double rng_uniform(struct rng_key key, uint64_t ctr);   /* [0, 1), 53 bits */
double rng_normal(struct rng_key key, uint64_t ctr);    /* N(0,1), Box-Muller on ctr */
uint64_t rng_hash_str(const char *s);                   /* FNV-1a 64 */
/* Uniform integer in [0, n) by rejection, for Fisher-Yates. */
uint64_t rng_below(struct rng_key key, uint64_t ctr, uint64_t n);

/* perm ← a permutation of [0, n): Fisher–Yates driven by key, so epoch e's
 * sample order is a pure function of (seed, e) (distributed.md §2.4). */
void rng_permutation(uint64_t *perm, uint64_t n, struct rng_key key);

#endif
