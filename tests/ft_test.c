/* Shared test helpers (house-style §5, glow-model.md §13): loud array
 * comparisons (worst index, both values, difference), fills from the
 * counter-based RNG, ln|det J| of a map by central differences factored by LU,
 * and central-difference gradient checks: |a − num| ≤ rtol·max(|a|,|num|) + atol. */
#include "ft_test.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "blas.h"
#include "glow.h"
#include "check.h"
#include "rng.h"

/* Seed base of the test fills, so they never collide with a training seed by accident. */
#define FT_TEST_SEED_BASE 0x7e57f11eULL
/* How many failing elements a gradient check lists before it only counts. */
#define FT_TEST_MAX_REPORTED 8

/* The comparison core for either element type: get(i) reads element i as double. */
struct close_result {
    size_t worst;        /* index of the largest |got − want| (or the first non-finite) */
    double worst_diff;
    double max_want;
    int nonfinite;       /* got and want disagree on finiteness somewhere */
};

static void close_scan(struct close_result *r, const void *got, const void *want, size_t n,
                       double (*get)(const void *, size_t))
{
    r->worst = 0;
    r->worst_diff = 0.0;
    r->max_want = 0.0;
    r->nonfinite = 0;
    for (size_t i = 0; i < n; i++) {
        double w = get(want, i);
        if (isfinite(w) && fabs(w) > r->max_want)
            r->max_want = fabs(w);
    }
    for (size_t i = 0; i < n; i++) {
        double g = get(got, i), w = get(want, i);
        if (!isfinite(g) || !isfinite(w)) {
            /* Equal infinities match; anything else non-finite is a failure. */
            if (isinf(g) && isinf(w) && (g > 0) == (w > 0))
                continue;
            if (!r->nonfinite) {
                r->nonfinite = 1;
                r->worst = i;
                r->worst_diff = NAN;
            }
            continue;
        }
        double d = fabs(g - w);
        if (!r->nonfinite && d > r->worst_diff) {
            r->worst_diff = d;
            r->worst = i;
        }
    }
}

static double get_real(const void *a, size_t i)
{
    return (double)((const ft_real *)a)[i];
}

static double get_double(const void *a, size_t i)
{
    return ((const double *)a)[i];
}

static void close_check(const void *got, const void *want, size_t n, double rtol, double atol,
                        const char *what, const char *file, int line,
                        double (*get)(const void *, size_t), const char *type)
{
    if (n == 0)
        return;
    if (got == NULL || want == NULL) {
        print_error("%s:%d: %s: NULL array passed to a comparison\n", file, line, what);
        _fail(file, line);
    }
    struct close_result r;
    close_scan(&r, got, want, n, get);
    double tol = rtol * r.max_want + atol;
    if (!r.nonfinite && r.worst_diff <= tol)
        return;
    double g = get(got, r.worst), w = get(want, r.worst);
    print_error("%s:%d: %s (%s, n = %zu) differs: worst at [%zu]: got %.17g, want %.17g, "
                "|diff| %.6g > tol %.6g (rtol %g · max|want| %.6g + atol %g)%s\n",
                file, line, what, type, n, r.worst, g, w, fabs(g - w), tol, rtol, r.max_want,
                atol, r.nonfinite ? " [non-finite]" : "");
    _fail(file, line);
}

void ft_assert_close_impl(const ft_real *got, const ft_real *want, size_t n,
                          double rtol, double atol, const char *what,
                          const char *file, int line)
{
    close_check(got, want, n, rtol, atol, what, file, line, get_real, FT_REAL_NAME);
}

void ft_assert_close_d_impl(const double *got, const double *want, size_t n,
                            double rtol, double atol, const char *what,
                            const char *file, int line)
{
    close_check(got, want, n, rtol, atol, what, file, line, get_double, "double");
}

void ft_fill_normal(ft_real *a, size_t n, double sd, unsigned long seed)
{
    struct rng_key key = rng_key(FT_TEST_SEED_BASE + seed, RNG_TEST, 1, 0);
    for (size_t i = 0; i < n; i++)
        a[i] = (ft_real)(sd * rng_normal(key, i));
}

void ft_fill_uniform(ft_real *a, size_t n, double lo, double hi, unsigned long seed)
{
    struct rng_key key = rng_key(FT_TEST_SEED_BASE + seed, RNG_TEST, 2, 0);
    for (size_t i = 0; i < n; i++)
        a[i] = (ft_real)(lo + (hi - lo) * rng_uniform(key, i));
}

double ft_brute_logdet(ft_map_fn f, void *ctx, const ft_real *x, size_t d, double h)
{
    FT_CHECK(d > 0 && h > 0.0, "brute log-det needs d > 0 and h > 0 (d = %zu, h = %g)", d, h);
    double *jac = ft_malloc(d * d * sizeof *jac);
    double *work = ft_malloc(d * d * sizeof *work);
    int *ipiv = ft_malloc(d * sizeof *ipiv);
    ft_real *xp = ft_malloc(d * sizeof *xp);
    ft_real *yp = ft_malloc(d * sizeof *yp);
    ft_real *ym = ft_malloc(d * sizeof *ym);
    int bad_step = 0;
    size_t bad_col = 0;

    for (size_t j = 0; j < d; j++)
        xp[j] = x[j];
    for (size_t j = 0; j < d && !bad_step; j++) {
        /* Divide by the step actually taken after rounding to ft_real. */
        ft_real hi = (ft_real)((double)x[j] + h), lo = (ft_real)((double)x[j] - h);
        double step = (double)hi - (double)lo;
        if (!(step > 0.0)) {
            bad_step = 1;
            bad_col = j;
            break;
        }
        xp[j] = hi;
        f(yp, xp, ctx);
        xp[j] = lo;
        f(ym, xp, ctx);
        xp[j] = x[j];
        for (size_t i = 0; i < d; i++)
            jac[i * d + j] = ((double)yp[i] - (double)ym[i]) / step;   /* column j = ∂y/∂x_j */
    }
    double ld = bad_step ? NAN : ft_logabsdet(jac, d, work, ipiv);
    free(ym);
    free(yp);
    free(xp);
    free(ipiv);
    free(work);
    free(jac);
    if (bad_step) {
        print_error("ft_brute_logdet: step h = %g vanishes at x[%zu] = %.9g in %s\n",
                    h, bad_col, (double)x[bad_col], FT_REAL_NAME);
        fail();
    }
    return ld;
}

double ft_numgrad(ft_loss_fn loss, void *ctx, ft_real *theta)
{
    ft_real t0 = *theta;
    double h = 1e-6 * fmax(1.0, fabs((double)t0));
    ft_real tp = (ft_real)((double)t0 + h), tm = (ft_real)((double)t0 - h);
    *theta = tp;
    double lp = loss(ctx);
    *theta = tm;
    double lm = loss(ctx);
    *theta = t0;
    /* The step actually taken after rounding θ ± h to ft_real. */
    double step = (double)tp - (double)tm;
    return step > 0.0 ? (lp - lm) / step : NAN;
}

void ft_check_grad_impl(ft_loss_fn loss, void *ctx, ft_real *theta, const ft_real *grad,
                        size_t n, size_t max_elems, double rtol, double atol,
                        const char *what, const char *file, int line)
{
    if (n == 0)
        return;
    if (loss == NULL || theta == NULL || grad == NULL) {
        print_error("%s:%d: %s: NULL passed to a gradient check\n", file, line, what);
        _fail(file, line);
    }
    /* All elements, or one random element from each of max_elems equal strata,
     * so large tensors are covered end to end without aliasing a stride. */
    size_t m = (max_elems == 0 || n <= max_elems) ? n : max_elems;
    struct rng_key key = rng_key(FT_TEST_SEED_BASE, RNG_TEST, 3, (uint64_t)n);
    size_t n_bad = 0, worst = 0;
    double worst_ratio = -1.0, worst_a = 0.0, worst_num = 0.0;

    for (size_t k = 0; k < m; k++) {
        size_t i = k;
        if (m < n) {
            size_t lo = (size_t)((double)k * (double)n / (double)m);
            size_t hi = (size_t)((double)(k + 1) * (double)n / (double)m);
            if (hi > n)
                hi = n;
            i = hi > lo ? lo + (size_t)rng_below(key, k, hi - lo) : lo;
        }
        double a = (double)grad[i];
        double num = ft_numgrad(loss, ctx, &theta[i]);
        double err = fabs(a - num);
        double tol = rtol * fmax(fabs(a), fabs(num)) + atol;
        int ok = isfinite(a) && isfinite(num) && err <= tol;
        double ratio = ok ? err / tol : INFINITY;
        if (!ok) {
            if (n_bad < FT_TEST_MAX_REPORTED)
                print_error("%s:%d: gradient of %s[%zu]: analytic %.12g, numeric %.12g, "
                            "|diff| %.4g > tol %.4g\n", file, line, what, i, a, num, err, tol);
            n_bad++;
        }
        if (ratio > worst_ratio) {
            worst_ratio = ratio;
            worst = i;
            worst_a = a;
            worst_num = num;
        }
    }
    if (n_bad == 0)
        return;
    print_error("%s:%d: gradient check of %s failed at %zu of %zu checked elements "
                "(n = %zu, rtol %g, atol %g); worst [%zu]: analytic %.12g, numeric %.12g, "
                "diff %.4g\n", file, line, what, n_bad, m, n, rtol, atol, worst, worst_a,
                worst_num, worst_a - worst_num);
    _fail(file, line);
}

void ft_rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *e;
        while (d && (e = readdir(d)) != NULL) {
            char sub[1024];
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            ft_rm_rf(sub);
        }
        if (d)
            closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static int is_invconv_matrix(const char *name)
{
    return strstr(name, "/invconv/W") || strstr(name, "/invconv/L") || strstr(name, "/invconv/U");
}

void ft_glow_randomize(struct glow *g, uint64_t seed, double sd)
{
    glow_init_params(g, seed);
    struct rng_key key = rng_key(seed, RNG_TEST, 7, 0);
    uint64_t ctr = 0;
    for (size_t i = 0; i < g->n_tensors; i++) {
        const struct glow_tensor *t = &g->tensors[i];
        if (t->kind != TENSOR_PARAM)
            continue;
        double s = is_invconv_matrix(t->name) ? 0.2 * sd : sd;
        ft_real *p = g->params + t->offset;
        for (size_t e = 0; e < t->numel; e++)
            p[e] += (ft_real)(s * rng_normal(key, ctr++));
    }
}

void ft_fill_input(ft_real *x, size_t n, uint64_t seed)
{
    struct rng_key key = rng_key(seed, RNG_TEST, 9, 0);
    for (size_t i = 0; i < n; i++)
        x[i] = (ft_real)(rng_uniform(key, i) - 0.5);
}

void ft_glow_zero_priors(struct glow *g)
{
    for (size_t i = 0; i < g->n_tensors; i++) {
        const struct glow_tensor *t = &g->tensors[i];
        if (strstr(t->name, "/split/") || strncmp(t->name, "prior/", 6) == 0)
            memset(g->params + t->offset, 0, t->numel * sizeof *g->params);
    }
}

void ft_glow_eps_map(ft_real *y, const ft_real *x, void *vg)
{
    struct glow *g = vg;
    glow_forward(g, x, 1, NULL);
    memcpy(y, g->eps, g->dim * sizeof *y);
}
