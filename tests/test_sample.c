/* Tests of sample grids (glow-model.md §10): the fixed latents are a pure
 * function of (seed, grid id, element) with mean ≈ 0 and variance ≈ 1; a PNG
 * grid decoded with libspng has every cell and separator pixel where the layout
 * says (grey, RGB, 1- and 2-pixel separators); sample_grid on a tiny model writes
 * a grid of the expected size whose T = 0 row is the decode of ε = 0 in every
 * cell and whose T = 1 row is the decode of sample_latents, chunk by chunk. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <spng.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ft_test.h"
#include "glow.h"
#include "rng.h"
#include "sample.h"

static const uint64_t SEED = 777;

struct png_image {
    uint8_t *px;
    size_t h, w, c;
};

/* Decodes path in its own format (8-bit grey or RGB); fails the test otherwise. */
static struct png_image read_png(const char *path)
{
    struct png_image im = { NULL, 0, 0, 0 };
    struct spng_ihdr ihdr;
    size_t len = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        fail_msg("%s: not written", path);
    spng_ctx *ctx = spng_ctx_new(0);
    assert_non_null(ctx);
    assert_int_equal(spng_set_png_file(ctx, fp), 0);
    assert_int_equal(spng_get_ihdr(ctx, &ihdr), 0);
    assert_int_equal(ihdr.bit_depth, 8);
    if (ihdr.color_type == SPNG_COLOR_TYPE_GRAYSCALE)
        im.c = 1;
    else if (ihdr.color_type == SPNG_COLOR_TYPE_TRUECOLOR)
        im.c = 3;
    else
        fail_msg("%s: colour type %u, want grey or RGB", path, ihdr.color_type);
    im.h = ihdr.height;
    im.w = ihdr.width;
    assert_int_equal(spng_decoded_image_size(ctx, SPNG_FMT_PNG, &len), 0);
    assert_int_equal(len, im.h * im.w * im.c);
    im.px = malloc(len);
    assert_int_equal(spng_decode_image(ctx, im.px, len, SPNG_FMT_PNG, 0), 0);
    spng_ctx_free(ctx);
    fclose(fp);
    return im;
}

static char *make_tmpdir(void)
{
    char tmpl[] = "/tmp/ft_sample_XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    return strdup(tmpl);
}

/* ---------- latents ---------- */

static void test_latents_deterministic(void **state)
{
    (void)state;
    enum { N = 5, DIM = 48 };
    ft_real a[N * DIM], b[N * DIM], c3[3 * DIM], other[N * DIM];
    sample_latents(a, N, DIM, SEED, 2);
    sample_latents(b, N, DIM, SEED, 2);
    assert_memory_equal(a, b, sizeof a);
    /* sample i does not depend on how many are drawn */
    sample_latents(c3, 3, DIM, SEED, 2);
    assert_memory_equal(a, c3, sizeof c3);
    /* the documented key: element i·D + j of (seed, RNG_SAMPLE, grid, 0) */
    struct rng_key key = rng_key(SEED, RNG_SAMPLE, 2, 0);
    for (size_t i = 0; i < N * DIM; i++)
        assert_true(a[i] == (ft_real)rng_normal(key, i));
    /* another grid id or seed gives other latents */
    sample_latents(other, N, DIM, SEED, 3);
    size_t same = 0;
    for (size_t i = 0; i < N * DIM; i++)
        same += other[i] == a[i];
    assert_int_equal(same, 0);
    sample_latents(other, N, DIM, SEED + 1, 2);
    same = 0;
    for (size_t i = 0; i < N * DIM; i++)
        same += other[i] == a[i];
    assert_int_equal(same, 0);
}

static void test_latents_moments(void **state)
{
    (void)state;
    const size_t n = 64, dim = 4096, m = n * dim;   /* 262144 draws */
    ft_real *e = malloc(m * sizeof *e);
    sample_latents(e, n, dim, SEED, 0);
    double s = 0, s2 = 0, s4 = 0;
    for (size_t i = 0; i < m; i++) {
        assert_true(isfinite(e[i]));
        s += e[i];
    }
    double mean = s / (double)m;
    for (size_t i = 0; i < m; i++) {
        double d = e[i] - mean;
        s2 += d * d;
        s4 += d * d * d * d;
    }
    double var = s2 / (double)(m - 1), kurt = s4 / (double)m / (var * var);
    /* 5 standard errors: sd(mean) = 1/√m ≈ 0.002, sd(var) = √(2/m) ≈ 0.0028,
     * sd(kurtosis) = √(24/m) ≈ 0.0096 (a normal's kurtosis is 3) */
    if (fabs(mean) > 5 / sqrt((double)m) || fabs(var - 1) > 5 * sqrt(2.0 / (double)m) ||
        fabs(kurt - 3) > 5 * sqrt(24.0 / (double)m))
        fail_msg("latent moments: mean %.5f, var %.5f, kurtosis %.4f", mean, var, kurt);
    free(e);
}

/* ---------- PNG grid ---------- */

/* Writes count images (h, w, c) with pixel values that avoid the separator grey,
 * reads the PNG back and checks every pixel against the layout. */
static void check_grid_round_trip(size_t count, size_t h, size_t w, size_t c, size_t cols,
                                  size_t want_sep)
{
    char *dir = make_tmpdir(), path[256], tmp[272];
    struct ft_err err = { { 0 } };
    const size_t sz = h * w * c;
    uint8_t *imgs = malloc(count * sz);
    for (size_t i = 0; i < count * sz; i++)
        imgs[i] = (uint8_t)((i * 37 + 11) % 120);   /* < 128: never the separator */
    snprintf(path, sizeof path, "%s/grid.png", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    /* an existing file is replaced */
    FILE *old = fopen(path, "wb");
    assert_non_null(old);
    fputs("old", old);
    fclose(old);
    int rc = sample_write_png(path, imgs, count, h, w, c, cols, &err);
    if (rc != FT_OK)
        fail_msg("sample_write_png: %s", err.msg);
    assert_int_not_equal(access(tmp, F_OK), 0);   /* the tmp file was renamed */

    size_t rows = (count + cols - 1) / cols, ncol = count < cols ? count : cols;
    size_t oh, ow, sep;
    sample_grid_layout(count, h, w, cols, &oh, &ow, &sep);
    assert_int_equal(sep, want_sep);
    assert_int_equal(ow, ncol * w + (ncol + 1) * sep);
    assert_int_equal(oh, rows * h + (rows + 1) * sep);

    struct png_image im = read_png(path);
    assert_int_equal(im.h, oh);
    assert_int_equal(im.w, ow);
    assert_int_equal(im.c, c);
    size_t n_sep = 0;
    for (size_t y = 0; y < oh; y++)
        for (size_t x = 0; x < ow; x++) {
            /* pixel (y, x) is in cell (r, k) at (yy, xx) unless it lies on a separator */
            size_t r = (y - (y >= sep ? sep : y)) / (h + sep), k = (x - (x >= sep ? sep : x)) / (w + sep);
            size_t yy = y - sep - r * (h + sep), xx = x - sep - k * (w + sep);
            int on_sep = y < sep || x < sep || yy >= h || xx >= w;
            size_t i = r * cols + k;
            for (size_t ch = 0; ch < c; ch++) {
                uint8_t got = im.px[(y * ow + x) * c + ch];
                uint8_t want = (on_sep || i >= count) ? SAMPLE_SEP_GREY
                                                      : imgs[i * sz + (yy * w + xx) * c + ch];
                if (got != want)
                    fail_msg("grid %zux%zu: pixel (%zu, %zu, %zu) = %u, want %u (%s)", oh, ow, y,
                             x, ch, got, want, on_sep ? "separator" : "cell");
            }
            n_sep += on_sep;
        }
    /* separators: (rows+1) full rows and (ncol+1) full columns of width sep */
    assert_int_equal(n_sep, oh * ow - rows * ncol * h * w);
    free(im.px);
    free(imgs);
    ft_rm_rf(dir);
    free(dir);
}

static void test_png_grey(void **state)
{
    (void)state;
    check_grid_round_trip(3, 4, 5, 1, 2, 1);    /* 2×2 cells, the last one empty */
}

static void test_png_rgb(void **state)
{
    (void)state;
    check_grid_round_trip(5, 3, 2, 3, 3, 1);
    check_grid_round_trip(2, 6, 7, 3, 4, 1);    /* fewer images than cols: one row of 2 */
}

static void test_png_wide_separator(void **state)
{
    (void)state;
    check_grid_round_trip(3, 64, 3, 1, 2, 2);   /* 64-pixel images get 2-pixel separators */
}

static void test_png_errors(void **state)
{
    (void)state;
    struct ft_err err = { { 0 } };
    uint8_t img[4 * 4 * 2] = { 0 };
    assert_int_equal(sample_write_png("/nonexistent-dir/x.png", img, 1, 4, 4, 1, 1, &err),
                     FT_ERR_IO);
    assert_non_null(strstr(err.msg, "/nonexistent-dir/x.png"));
    assert_int_equal(sample_write_png("/tmp/never.png", img, 1, 4, 4, 2, 1, &err), FT_ERR_CONFIG);
    assert_non_null(strstr(err.msg, "channels"));
    assert_int_not_equal(access("/tmp/never.png", F_OK), 0);
}

/* ---------- sample_grid on a tiny model ---------- */

/* Compares grid cell (r, k) of im with the (h, w, 1) image want. */
static void check_cell(const struct png_image *im, size_t r, size_t k, const uint8_t *want,
                       size_t h, size_t w, const char *what)
{
    const size_t sep = 1;
    for (size_t y = 0; y < h; y++)
        for (size_t x = 0; x < w; x++) {
            uint8_t got = im->px[(sep + r * (h + sep) + y) * im->w + sep + k * (w + sep) + x];
            if (got != want[y * w + x])
                fail_msg("%s: cell (%zu, %zu) pixel (%zu, %zu) = %u, want %u", what, r, k, y, x,
                         got, want[y * w + x]);
        }
}

static void test_sample_grid(void **state)
{
    (void)state;
    struct glow_spec spec = { 8, 8, 1, 2, 2, 4, COUPLING_AFFINE, SCALE_SIGMOID2, PERM_INVCONV, 1, 8,
                              ARCH_GLOW, 0, 0, 0.0 };
    struct glow g;
    struct ft_err err = { { 0 } };
    enum { PER_ROW = 6, BATCH = 4 };   /* decoded in chunks of 4 and 2 */
    const double temps[3] = { 0.0, 0.7, 1.0 };
    assert_int_equal(glow_init(&g, &spec, BATCH, 0, &err), FT_OK);
    ft_glow_randomize(&g, 1, 0.05);   /* plain invconv: W is its only matrix */
    const size_t dim = g.dim;

    char *dir = make_tmpdir(), path[256];
    snprintf(path, sizeof path, "%s/samples.png", dir);
    int rc = sample_grid(&g, path, temps, 3, PER_ROW, SEED, 8, PREPROCESS_GLOW, 0.0, &err);
    if (rc != FT_OK)
        fail_msg("sample_grid: %s", err.msg);
    struct png_image im = read_png(path);
    assert_int_equal(im.c, 1);
    assert_int_equal(im.w, PER_ROW * 8 + PER_ROW + 1);   /* 55 */
    assert_int_equal(im.h, 3 * 8 + 4);                   /* 28 */

    /* T = 0: every cell is the decode of ε = 0 (the prior means at every level) */
    ft_real *eps = calloc(BATCH * dim, sizeof *eps), *x = calloc(BATCH * dim, sizeof *x);
    uint8_t *want = calloc(BATCH * dim, 1);
    glow_reverse(&g, x, eps, 1, 1.0);
    postprocess_batch(want, x, 1, dim, 8, PREPROCESS_GLOW, 0.0);
    size_t lo = 255, hi = 0;
    for (size_t j = 0; j < dim; j++) {
        lo = want[j] < lo ? want[j] : lo;
        hi = want[j] > hi ? want[j] : hi;
    }
    if (hi - lo < 8)   /* a flat mean image would make the comparison weak */
        fail_msg("T = 0 image spans only %zu..%zu", lo, hi);
    for (size_t k = 0; k < PER_ROW; k++)
        check_cell(&im, 0, k, want, 8, 8, "T=0 row vs decode of eps=0");

    /* T = 1: the decode of sample_latents(grid 0), in the same chunks */
    ft_real *lat = calloc(PER_ROW * dim, sizeof *lat);
    sample_latents(lat, PER_ROW, dim, SEED, 0);
    for (size_t i = 0; i < PER_ROW; i += BATCH) {
        size_t n = PER_ROW - i < BATCH ? PER_ROW - i : BATCH;
        glow_reverse(&g, x, lat + i * dim, n, 1.0);
        postprocess_batch(want, x, n, dim, 8, PREPROCESS_GLOW, 0.0);
        for (size_t s = 0; s < n; s++)
            check_cell(&im, 2, i + s, want + s * dim, 8, 8, "T=1 row vs decode of latents");
    }
    /* T = 0.7 sits between: not the mean image, not the T = 1 sample */
    size_t diff07_1 = 0, diff07_0 = 0;
    for (size_t y = 0; y < 8; y++)
        for (size_t xx = 0; xx < 8; xx++) {
            uint8_t v0 = im.px[(1 + y) * im.w + 1 + xx];
            uint8_t v07 = im.px[(1 + 9 + y) * im.w + 1 + xx];
            uint8_t v1 = im.px[(1 + 18 + y) * im.w + 1 + xx];
            diff07_0 += v07 != v0;
            diff07_1 += v07 != v1;
        }
    assert_true(diff07_0 > 0 && diff07_1 > 0);

    free(lat);
    free(want);
    free(x);
    free(eps);
    free(im.px);
    ft_rm_rf(dir);
    free(dir);
    glow_free(&g);
}

static void test_sample_grid_two_channels(void **state)
{
    (void)state;
    struct glow_spec spec = { 4, 4, 2, 1, 1, 4, COUPLING_AFFINE, SCALE_SIGMOID2, PERM_INVCONV, 1, 8,
                              ARCH_GLOW, 0, 0, 0.0 };
    struct glow g;
    struct ft_err err = { { 0 } };
    const double t = 1.0;
    assert_int_equal(glow_init(&g, &spec, 2, 0, &err), FT_OK);
    glow_init_params(&g, 1);
    assert_int_equal(sample_grid(&g, "/tmp/never2.png", &t, 1, 2, SEED, 8, PREPROCESS_GLOW, 0.0,
                                 &err),
                     FT_ERR_CONFIG);
    assert_non_null(strstr(err.msg, "channel"));
    assert_int_not_equal(access("/tmp/never2.png", F_OK), 0);
    glow_free(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_latents_deterministic),
        cmocka_unit_test(test_latents_moments),
        cmocka_unit_test(test_png_grey),
        cmocka_unit_test(test_png_rgb),
        cmocka_unit_test(test_png_wide_separator),
        cmocka_unit_test(test_png_errors),
        cmocka_unit_test(test_sample_grid),
        cmocka_unit_test(test_sample_grid_two_channels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
