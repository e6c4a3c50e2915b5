/* Tests of ActNorm (glow-model.md §5, §13):
 *   y = (x + b)·e^{3·logs}, log-det H·W·Σ 3·logs, reverse x = y·e^{−3·logs} − b
 * round trip (also in place) and log-det bookkeeping, log-det vs a brute-force
 * Jacobian and gradients of x, b, logs (double), and DDI: per-channel mean 0,
 * variance 1, the same with a fake two-rank allreduce. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "actnorm.h"
#include "ft_test.h"

enum { N = 2, HW = 16, C = 4, D = N * HW * C };

#ifdef FT_REAL_DOUBLE
static const double RT_TOL = 1e-12;
#else
static const double RT_TOL = 1e-5;     /* glow-model.md §13.1, float32 */
#endif

struct fx {
    ft_real x[D], b[C], logs[C], r[D], y[D];
    double gamma[N];
};

static void fx_fill(struct fx *f)
{
    ft_fill_normal(f->x, D, 1.5, 21);
    ft_fill_normal(f->b, C, 0.5, 22);
    ft_fill_uniform(f->logs, C, -0.3, 0.3, 23);
    ft_fill_normal(f->r, D, 1.0, 24);
    f->gamma[0] = 0.6;
    f->gamma[1] = -1.1;
}

static double sum_3logs(const ft_real *logs)
{
    double s = 0.0;
    for (size_t k = 0; k < C; k++)
        s += 3.0 * logs[k];
    return s;
}

static void test_actnorm_forward_values(void **state)
{
    (void)state;
    struct fx f;
    fx_fill(&f);
    ft_real want[D];
    for (size_t i = 0; i < D; i++)
        want[i] = (ft_real)(((double)f.x[i] + f.b[i % C]) * exp(3.0 * f.logs[i % C]));
    double ld[N] = { 1.0, -2.0 }, ldw[N];
    for (size_t n = 0; n < N; n++)
        ldw[n] = ld[n] + HW * sum_3logs(f.logs);
    actnorm_forward(f.y, ld, f.x, f.b, f.logs, N, HW, C);
    ft_assert_close(f.y, want, D, RT_TOL, 0.0);
    ft_assert_close_d(ld, ldw, N, 1e-6, 0.0);
}

static void test_actnorm_round_trip(void **state)
{
    (void)state;
    struct fx f;
    fx_fill(&f);
    ft_real x2[D], z[D], z2[D];
    double ld[N] = { 0.0, 0.0 }, zero[N] = { 0.0, 0.0 };
    actnorm_forward(f.y, ld, f.x, f.b, f.logs, N, HW, C);
    actnorm_reverse(x2, ld, f.y, f.b, f.logs, N, HW, C);
    ft_assert_close(x2, f.x, D, RT_TOL, 0.0);
    ft_assert_close_d(ld, zero, N, 0.0, 1e-6);     /* forward adds, reverse subtracts */

    /* in place, and forward(reverse(z)) = z */
    ft_fill_normal(z, D, 1.0, 25);
    memcpy(z2, z, sizeof z);
    actnorm_reverse(z2, NULL, z2, f.b, f.logs, N, HW, C);
    actnorm_forward(z2, NULL, z2, f.b, f.logs, N, HW, C);
    ft_assert_close(z2, z, D, RT_TOL, 0.0);
}

#ifdef FT_REAL_DOUBLE
struct map_ctx {
    const ft_real *b, *logs;
};

static void an_map(ft_real *y, const ft_real *x, void *ctx)
{
    const struct map_ctx *m = ctx;
    actnorm_forward(y, NULL, x, m->b, m->logs, 1, 16, 4);
}

/* glow-model.md §13.2: 4x4x4, batch 1 (a double build agrees to ~1e-8). */
static void test_actnorm_logdet_brute(void **state)
{
    (void)state;
    struct fx f;
    fx_fill(&f);
    struct map_ctx m = { f.b, f.logs };
    double ld[1] = { 0.0 }, brute[1];
    actnorm_forward(f.y, ld, f.x, f.b, f.logs, 1, 16, 4);
    brute[0] = ft_brute_logdet(an_map, &m, f.x, 64, 1e-6);
    ft_assert_close_d(ld, brute, 1, 0.0, 1e-6);
}

/* loss = Σ r⊙y + Σ_n γ_n·logdet_n */
static double an_loss(void *ctx)
{
    struct fx *f = ctx;
    double ld[N] = { 0.0, 0.0 }, s = 0.0;
    actnorm_forward(f->y, ld, f->x, f->b, f->logs, N, HW, C);
    for (size_t i = 0; i < D; i++)
        s += (double)f->r[i] * f->y[i];
    for (size_t n = 0; n < N; n++)
        s += f->gamma[n] * ld[n];
    return s;
}

#define OFF 0.25   /* db, dlogs accumulate: start here, subtract afterwards */

static void test_actnorm_grad(void **state)
{
    (void)state;
    struct fx f;
    fx_fill(&f);
    ft_real dx[D], db[C], dlogs[C], dy[D];
    double acc[2 * C];
    actnorm_forward(f.y, NULL, f.x, f.b, f.logs, N, HW, C);
    for (size_t i = 0; i < D; i++)
        dx[i] = 1e3;                      /* overwritten */
    for (size_t k = 0; k < C; k++)
        db[k] = dlogs[k] = OFF;
    actnorm_backward(dx, db, dlogs, acc, f.r, f.y, f.gamma, f.logs, N, HW, C);
    for (size_t k = 0; k < C; k++) {
        db[k] -= OFF;
        dlogs[k] -= OFF;
    }
    ft_check_grad(an_loss, &f, f.x, dx, D, D);
    ft_check_grad(an_loss, &f, f.b, db, C, C);
    ft_check_grad(an_loss, &f, f.logs, dlogs, C, C);

    /* in place (dx == dy) gives the same dx */
    memcpy(dy, f.r, sizeof dy);
    ft_real db2[C] = { 0 }, dl2[C] = { 0 };
    actnorm_backward(dy, db2, dl2, acc, dy, f.y, f.gamma, f.logs, N, HW, C);
    ft_assert_close(dy, dx, D, 1e-14, 0.0);

    /* dlogdet NULL: no log-det term, dlogs = 3·Σ dy·y only */
    ft_real db3[C] = { 0 }, dl3[C] = { 0 }, want3[C];
    for (size_t k = 0; k < C; k++) {
        double s = 0.0;
        for (size_t i = k; i < D; i += C)
            s += 3.0 * (double)f.r[i] * f.y[i];
        want3[k] = (ft_real)s;
    }
    actnorm_backward(dy, db3, dl3, acc, f.r, f.y, NULL, f.logs, N, HW, C);
    ft_assert_close(dl3, want3, C, 1e-12, 0.0);
}
#endif

/* DDI ------------------------------------------------------------------------ */

enum { DN = 4, DHW = 16, DC = 3, DR = DN * DHW };

/* A second, identical rank: every sum doubles, so m and v do not change. */
struct fake {
    int calls;
    size_t len;
};

static void allreduce_double(double *buf, size_t len, void *ctx)
{
    struct fake *fk = ctx;
    fk->calls++;
    fk->len = len;
    for (size_t i = 0; i < len; i++)
        buf[i] *= 2.0;
}

static void ddi_data(ft_real *x)
{
    /* channels with different means and scales, including a large mean */
    static const double mean[DC] = { 0.3, -2.0, 5.0 }, sd[DC] = { 1.0, 0.05, 3.0 };
    ft_fill_normal(x, DR * DC, 1.0, 31);
    for (size_t i = 0; i < DR * DC; i++)
        x[i] = (ft_real)(mean[i % DC] + sd[i % DC] * x[i]);
}

static void check_normalised(const ft_real *x, const ft_real *b, const ft_real *logs)
{
    ft_real y[DR * DC];
    actnorm_forward(y, NULL, x, b, logs, DN, DHW, DC);
    for (size_t k = 0; k < DC; k++) {
        double s1 = 0.0, s2 = 0.0;
        for (size_t r = 0; r < DR; r++)
            s1 += y[r * DC + k];
        double m = s1 / DR;
        for (size_t r = 0; r < DR; r++)
            s2 += (y[r * DC + k] - m) * (y[r * DC + k] - m);
        double v = s2 / DR;
        if (!(fabs(m) <= 1e-4 && fabs(v - 1.0) <= 1e-4)) {
            print_error("DDI channel %zu: mean %.3g (want 0), var %.8g (want 1), tol 1e-4; "
                        "b %.8g logs %.8g\n", k, m, v, (double)b[k], (double)logs[k]);
            fail();
        }
    }
}

/* actnorm_relu_backward in row blocks (the GEMM-epilogue form): with the
 * eighths of the rows that actnorm_relu_backward sums in, dx, db and dlogs are
 * bitwise its; 300 channels cover two channel blocks of the scale cache. */
static void test_actnorm_relu_backward_rows(void **state)
{
    (void)state;
    enum { R = 64, RC = 300 };
    static ft_real dy[R * RC], y[R * RC], dx[R * RC], dx2[R * RC], logs[RC], b[RC];
    ft_real db[RC] = { 0 }, dl[RC] = { 0 }, db2[RC] = { 0 }, dl2[RC] = { 0 };
    static double acc[2 * RC], parts[8 * 2 * RC];
    ft_fill_normal(dy, R * RC, 1.0, 31);
    ft_fill_normal(y, R * RC, 1.0, 32);
    ft_fill_uniform(logs, RC, -0.3, 0.3, 33);
    ft_fill_normal(b, RC, 0.5, 34);
    actnorm_relu_forward(y, y, b, logs, R, RC);   /* a ReLU output: zeros included */
    actnorm_relu_backward(dx, db, dl, acc, dy, y, logs, R, RC);
    for (size_t p = 0; p < 8; p++)
        actnorm_relu_backward_rows(dx2, parts + p * 2 * RC, dy, y, logs, R * p / 8,
                                   R * (p + 1) / 8, RC);
    actnorm_relu_backward_sum(db2, dl2, parts, 8, RC);
    ft_assert_close(dx2, dx, R * RC, 0.0, 0.0);
    ft_assert_close(db2, db, RC, 0.0, 0.0);
    ft_assert_close(dl2, dl, RC, 0.0, 0.0);
}

static void test_actnorm_ddi(void **state)
{
    (void)state;
    ft_real x[DR * DC], b[DC], logs[DC], b2[DC], logs2[DC];
    double work[2 * DC + 1];
    ddi_data(x);
    for (size_t k = 0; k < DC; k++)
        b[k] = logs[k] = b2[k] = logs2[k] = (ft_real)7;   /* must be overwritten */
    actnorm_ddi(b, logs, work, x, DR, DC, NULL);
    check_normalised(x, b, logs);

    struct fake fk = { 0, 0 };
    struct ddi two = { allreduce_double, &fk };
    actnorm_ddi(b2, logs2, work, x, DR, DC, &two);
    if (fk.calls < 1 || fk.len == 0 || fk.len > 2 * DC + 1) {
        print_error("DDI allreduce: %d calls, last len %zu (want ≥ 1 call, len ≤ 2c+1 = %d)\n",
                    fk.calls, fk.len, 2 * DC + 1);
        fail();
    }
    ft_assert_close(b2, b, DC, 1e-6, 0.0);
    ft_assert_close(logs2, logs, DC, 1e-6, 0.0);
    check_normalised(x, b2, logs2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_actnorm_forward_values),
        cmocka_unit_test(test_actnorm_round_trip),
        cmocka_unit_test(test_actnorm_ddi),
        cmocka_unit_test(test_actnorm_relu_backward_rows),
#ifdef FT_REAL_DOUBLE
        cmocka_unit_test(test_actnorm_logdet_brute),
        cmocka_unit_test(test_actnorm_grad),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
