/* Shared test helpers: loud array comparisons, brute-force log-determinants
 * and central-difference gradients (house-style §5, glow-model.md §13). */
#ifndef FT_TEST_H
#define FT_TEST_H

#include <stddef.h>
#include <stdint.h>
#include "real.h"

/* Fails the current cmocka test unless max|got − want| ≤ rtol·max|want| + atol;
 * on failure prints the worst index, both values and the difference. */
void ft_assert_close_impl(const ft_real *got, const ft_real *want, size_t n,
                          double rtol, double atol, const char *what,
                          const char *file, int line);
#define ft_assert_close(got, want, n, rtol, atol) \
    ft_assert_close_impl((got), (want), (n), (rtol), (atol), #got, __FILE__, __LINE__)
/* Same for double arrays. */
void ft_assert_close_d_impl(const double *got, const double *want, size_t n,
                            double rtol, double atol, const char *what,
                            const char *file, int line);
#define ft_assert_close_d(got, want, n, rtol, atol) \
    ft_assert_close_d_impl((got), (want), (n), (rtol), (atol), #got, __FILE__, __LINE__)

/* Fills a with N(0, sd²) (or U[lo,hi) for the _uniform form) from a fixed seed. */
void ft_fill_normal(ft_real *a, size_t n, double sd, unsigned long seed);
void ft_fill_uniform(ft_real *a, size_t n, double lo, double hi, unsigned long seed);

/* A map R^d → R^d on ft_real arrays (ctx carries parameters and shapes). */
typedef void (*ft_map_fn)(ft_real *y, const ft_real *x, void *ctx);
/* ln|det J| of f at x, J built column by column by central differences with
 * step h, in double, factored by LU. */
double ft_brute_logdet(ft_map_fn f, void *ctx, const ft_real *x, size_t d, double h);

/* A scalar loss of whatever ctx holds. */
typedef double (*ft_loss_fn)(void *ctx);
/* Central-difference derivative of loss with respect to *theta
 * (h = 1e-6·max(1, |θ|)); *theta is restored. */
double ft_numgrad(ft_loss_fn loss, void *ctx, ft_real *theta);
/* Compares analytic gradient grad[i] of tensor theta[0..n) with central
 * differences, for every element (n ≤ max_elems, or max_elems = 0) or max_elems
 * spread ones (one fixed random element in each of max_elems equal strata);
 * fails unless |a − num| ≤ rtol·max(|a|, |num|) + atol for each, listing the
 * failing elements and the worst. loss must read theta (through ctx). */
void ft_check_grad_impl(ft_loss_fn loss, void *ctx, ft_real *theta, const ft_real *grad,
                        size_t n, size_t max_elems, double rtol, double atol,
                        const char *what, const char *file, int line);
#define ft_check_grad(loss, ctx, theta, grad, n, max_elems) \
    ft_check_grad_impl((loss), (ctx), (theta), (grad), (n), (max_elems), 1e-4, 1e-8, \
                       #theta, __FILE__, __LINE__)

/* Whole-model helpers for the brute-force log-det of test_glow and
 * test_variants: zero every split and top prior tensor (μ = 0, ℓ = 0, so ε is
 * the latent itself), and the map x ↦ ε of one example (ctx: struct glow *). */
struct glow;
void ft_glow_zero_priors(struct glow *g);
/* Moves every parameter away from init (glow-model.md §13): glow_init_params
 * from seed, then N(0, sd²) added to every tensor, 0.2·sd to the invconv
 * matrices (which must stay well conditioned). */
void ft_glow_randomize(struct glow *g, uint64_t seed, double sd);
/* x[0..n) uniform in [−0.5, 0.5) from seed. */
void ft_fill_input(ft_real *x, size_t n, uint64_t seed);
void ft_glow_eps_map(ft_real *y, const ft_real *x, void *g);

/* Removes a file or a directory tree (test temp dirs); errors are ignored. */
void ft_rm_rf(const char *path);

#endif
