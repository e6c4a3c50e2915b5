/* Tests of squeeze / unsqueeze (glow-model.md §4, §13.6):
 *   out[n,i,j,4c+2dy+dx] = in[n,2i+dy,2j+dx,c]
 * checked on distinct values, unsqueeze∘squeeze = id and squeeze∘unsqueeze = id,
 * strided input/output (pixel stride xs > c), and log-det 0 (double build). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>

#include "ft_test.h"
#include "squeeze.h"

enum { N = 2, H = 4, W = 6, C = 3, XS = C + 2, D = N * H * W * C };

/* Distinct, exactly representable values in both precisions. */
static void fill_distinct(ft_real *a, size_t n, ft_real base)
{
    for (size_t i = 0; i < n; i++)
        a[i] = base + (ft_real)i;
}

static void test_squeeze_index_formula(void **state)
{
    (void)state;
    ft_real x[D], y[D], ref[D];
    fill_distinct(x, D, 1);
    squeeze_forward(y, x, C, N, H, W, C);
    for (size_t n = 0; n < N; n++)
        for (size_t i = 0; i < H / 2; i++)
            for (size_t j = 0; j < W / 2; j++)
                for (size_t c = 0; c < C; c++)
                    for (size_t dy = 0; dy < 2; dy++)
                        for (size_t dx = 0; dx < 2; dx++)
                            ref[((n * (H / 2) + i) * (W / 2) + j) * 4 * C + 4 * c + 2 * dy + dx] =
                                x[((n * H + 2 * i + dy) * W + 2 * j + dx) * C + c];
    ft_assert_close(y, ref, D, 0.0, 0.0);
}

static void test_squeeze_round_trip(void **state)
{
    (void)state;
    ft_real x[D], y[D], x2[D], y2[D];
    fill_distinct(x, D, -100);
    squeeze_forward(y, x, C, N, H, W, C);
    squeeze_reverse(x2, C, y, N, H, W, C);
    ft_assert_close(x2, x, D, 0.0, 0.0);          /* unsqueeze∘squeeze = id */
    fill_distinct(y, D, 7);
    squeeze_reverse(x2, C, y, N, H, W, C);
    squeeze_forward(y2, x2, C, N, H, W, C);
    ft_assert_close(y2, y, D, 0.0, 0.0);          /* squeeze∘unsqueeze = id */
}

/* x is the first C channels of an (N,H,W,XS) buffer: squeeze reads only those,
 * unsqueeze writes only those and leaves the other channels untouched. */
static void test_squeeze_strided(void **state)
{
    (void)state;
    enum { DS = N * H * W * XS };
    ft_real xs[DS], dense[D], y[D], yref[D], back[DS], backref[DS];
    fill_distinct(xs, DS, 3);
    for (size_t p = 0; p < (size_t)N * H * W; p++)
        for (size_t c = 0; c < C; c++)
            dense[p * C + c] = xs[p * XS + c];
    squeeze_forward(yref, dense, C, N, H, W, C);
    squeeze_forward(y, xs, XS, N, H, W, C);
    ft_assert_close(y, yref, D, 0.0, 0.0);

    for (size_t i = 0; i < DS; i++)
        back[i] = backref[i] = (ft_real)-1;        /* sentinel in the extra channels */
    for (size_t p = 0; p < (size_t)N * H * W; p++)
        for (size_t c = 0; c < C; c++)
            backref[p * XS + c] = xs[p * XS + c];
    squeeze_reverse(back, XS, y, N, H, W, C);
    ft_assert_close(back, backref, DS, 0.0, 0.0);
}

#ifdef FT_REAL_DOUBLE
struct sq_ctx {
    size_t n, h, w, c;
};

static void sq_map(ft_real *y, const ft_real *x, void *ctx)
{
    const struct sq_ctx *s = ctx;
    squeeze_forward(y, x, s->c, s->n, s->h, s->w, s->c);
}

/* glow-model.md §13.2: squeeze's brute-force log-det is 0 (4x4x2, batch 1). */
static void test_squeeze_logdet(void **state)
{
    (void)state;
    struct sq_ctx s = { 1, 4, 4, 2 };
    ft_real x[32];
    ft_fill_normal(x, 32, 1.0, 11);
    double ld = ft_brute_logdet(sq_map, &s, x, 32, 1e-6);
    if (!(fabs(ld) <= 1e-8)) {
        print_error("squeeze brute-force log-det %.3g, want 0\n", ld);
        fail();
    }
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_squeeze_index_formula),
        cmocka_unit_test(test_squeeze_round_trip),
        cmocka_unit_test(test_squeeze_strided),
#ifdef FT_REAL_DOUBLE
        cmocka_unit_test(test_squeeze_logdet),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
