/* Tests of permute.c (glow-model.md §6, §13): y[r, c] = x[r, perm[c]] for the
 * reverse and the Fisher–Yates shuffle; both are permutations, round trips are
 * exact, the shuffle is a function of its key and uniform over S_4, log-det 0
 * by brute force and the backward (permute_reverse of dy) by central differences. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "check.h"
#include "ft_test.h"
#include "permute.h"
#include "rng.h"

#define MAXC 48

static void assert_is_permutation(const int32_t *perm, size_t c)
{
    int seen[MAXC] = { 0 };
    assert_true(c <= MAXC);
    for (size_t k = 0; k < c; k++) {
        if (perm[k] < 0 || (size_t)perm[k] >= c)
            fail_msg("perm[%zu] = %d is outside [0, %zu)", k, (int)perm[k], c);
        if (seen[perm[k]]++)
            fail_msg("perm[%zu] = %d repeats an earlier entry (c = %zu)", k, (int)perm[k], c);
    }
}

static void test_reverse_perm(void **state)
{
    (void)state;
    int32_t perm[MAXC];
    const size_t sizes[] = { 1, 2, 7, 48 };
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t c = sizes[s];
        permute_init_reverse(perm, c);
        assert_is_permutation(perm, c);
        for (size_t k = 0; k < c; k++)
            assert_int_equal(perm[k], (int32_t)(c - 1 - k));
    }
}

static void test_shuffle_is_permutation_and_keyed(void **state)
{
    (void)state;
    int32_t p1[MAXC], p2[MAXC], p3[MAXC];
    const size_t sizes[] = { 1, 2, 7, 48 };
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t c = sizes[s];
        permute_init_shuffle(p1, rng_key(1, RNG_PARAM_INIT, rng_hash_str("level0/step00/shuffle/perm"), 0), c);
        permute_init_shuffle(p2, rng_key(1, RNG_PARAM_INIT, rng_hash_str("level0/step00/shuffle/perm"), 0), c);
        assert_is_permutation(p1, c);
        assert_memory_equal(p1, p2, c * sizeof *p1);   /* same key, same draw */
    }
    /* Another tensor name or seed gives another permutation (48! makes a clash
     * practically impossible), and a 48-channel draw is not the identity. */
    size_t c = 48;
    permute_init_shuffle(p1, rng_key(1, RNG_PARAM_INIT, rng_hash_str("level0/step00/shuffle/perm"), 0), c);
    permute_init_shuffle(p2, rng_key(1, RNG_PARAM_INIT, rng_hash_str("level0/step01/shuffle/perm"), 0), c);
    permute_init_shuffle(p3, rng_key(2, RNG_PARAM_INIT, rng_hash_str("level0/step00/shuffle/perm"), 0), c);
    assert_memory_not_equal(p1, p2, c * sizeof *p1);
    assert_memory_not_equal(p1, p3, c * sizeof *p1);
    size_t fixed = 0;
    for (size_t k = 0; k < c; k++)
        fixed += p1[k] == (int32_t)k;
    assert_true(fixed < c);
}

static void test_shuffle_uniform_s4(void **state)
{
    (void)state;
    /* All 24 permutations of 4 channels must appear about equally often over
     * many keys; an off-by-one draw (Sattolo's algorithm) reaches only 6 of them.
     * Expected 100 each; the bounds are ±5σ (σ ≈ 9.8), fixed keys, so not flaky. */
    enum { DRAWS = 2400 };
    int count[24] = { 0 };
    int32_t perm[4];
    for (uint64_t d = 0; d < DRAWS; d++) {
        permute_init_shuffle(perm, rng_key(7, RNG_TEST, d, 0), 4);
        assert_is_permutation(perm, 4);
        /* Lehmer code → index in [0, 24). */
        int idx = 0;
        for (int i = 0; i < 4; i++) {
            int smaller = 0;
            for (int j = i + 1; j < 4; j++)
                smaller += perm[j] < perm[i];
            idx = idx * (4 - i) + smaller;
        }
        count[idx]++;
    }
    for (int i = 0; i < 24; i++)
        if (count[i] < 50 || count[i] > 150)
            fail_msg("permutation %d of S_4 drawn %d times in %d (expected 100)", i, count[i], DRAWS);
}

struct fixture {
    size_t rows, c;
    int32_t perm[MAXC];
    ft_real *x, *y, *x2, *r, *dx;
};

static int setup(void **state)
{
    struct fixture *fx = ft_malloc(sizeof *fx);
    fx->rows = 2 * 3 * 3;     /* batch 2 of 3x3 pixels */
    fx->c = 6;
    size_t n = fx->rows * fx->c;
    fx->x = ft_malloc(n * sizeof *fx->x);
    fx->y = ft_malloc(n * sizeof *fx->y);
    fx->x2 = ft_malloc(n * sizeof *fx->x2);
    fx->r = ft_malloc(n * sizeof *fx->r);
    fx->dx = ft_malloc(n * sizeof *fx->dx);
    ft_fill_normal(fx->x, n, 1.0, 100);
    ft_fill_normal(fx->r, n, 1.0, 101);
    permute_init_shuffle(fx->perm, rng_key(3, RNG_TEST, 0, 0), fx->c);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    free(fx->dx);
    free(fx->r);
    free(fx->x2);
    free(fx->y);
    free(fx->x);
    free(fx);
    return 0;
}

static void round_trip(struct fixture *fx)
{
    size_t n = fx->rows * fx->c;
    permute_forward(fx->y, fx->x, fx->perm, fx->rows, fx->c);
    for (size_t r = 0; r < fx->rows; r++)
        for (size_t k = 0; k < fx->c; k++)
            assert_true(fx->y[r * fx->c + k] == fx->x[r * fx->c + (size_t)fx->perm[k]]);
    permute_reverse(fx->x2, fx->y, fx->perm, fx->rows, fx->c);
    ft_assert_close(fx->x2, fx->x, n, 0.0, 0.0);          /* exact */
    /* forward(reverse(z)) = z, with z = x. */
    permute_reverse(fx->y, fx->x, fx->perm, fx->rows, fx->c);
    permute_forward(fx->x2, fx->y, fx->perm, fx->rows, fx->c);
    ft_assert_close(fx->x2, fx->x, n, 0.0, 0.0);
}

static void test_round_trip_shuffle(void **state)
{
    round_trip(*state);
}

static void test_round_trip_reverse(void **state)
{
    struct fixture *fx = *state;
    permute_init_reverse(fx->perm, fx->c);
    round_trip(fx);
}

#ifdef FT_REAL_DOUBLE
static void perm_map(ft_real *y, const ft_real *x, void *ctx)
{
    struct fixture *fx = ctx;
    permute_forward(y, x, fx->perm, fx->rows, fx->c);
}

static void test_logdet_brute(void **state)
{
    struct fixture *fx = *state;
    /* One 2x2x6 example (D = 24), for the shuffle and the reverse permutation. */
    fx->rows = 4;
    for (int kind = 0; kind < 2; kind++) {
        if (kind == 1)
            permute_init_reverse(fx->perm, fx->c);
        double ld = ft_brute_logdet(perm_map, fx, fx->x, fx->rows * fx->c, 1e-6);
        double zero = 0.0;
        ft_assert_close_d(&ld, &zero, 1, 0.0, 1e-4);
    }
}

static double perm_loss(void *ctx)
{
    struct fixture *fx = ctx;
    permute_forward(fx->y, fx->x, fx->perm, fx->rows, fx->c);
    double s = 0.0;
    for (size_t i = 0; i < fx->rows * fx->c; i++)
        s += (double)fx->r[i] * (double)fx->y[i];
    return s;
}

static void test_backward_grad(void **state)
{
    struct fixture *fx = *state;
    /* Loss Σ r⊙y: dy = r, so dx = permute_reverse(r). */
    permute_reverse(fx->dx, fx->r, fx->perm, fx->rows, fx->c);
    ft_check_grad(perm_loss, fx, fx->x, fx->dx, fx->rows * fx->c, 0);
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reverse_perm),
        cmocka_unit_test(test_shuffle_is_permutation_and_keyed),
        cmocka_unit_test(test_shuffle_uniform_s4),
        cmocka_unit_test_setup_teardown(test_round_trip_shuffle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip_reverse, setup, teardown),
#ifdef FT_REAL_DOUBLE
        cmocka_unit_test_setup_teardown(test_logdet_brute, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backward_grad, setup, teardown),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
