/* Sample grids (include/sample.h, glow-model.md §10): latents ε ~ N(0,1) keyed by
 * (seed, RNG_SAMPLE, grid id) and element i·D + j, decoded per temperature row by
 * glow_reverse (z = μ + e^ℓ⊙(T·ε) at every prior), postprocessed by
 * v = clip(floor((x+0.5)·n_bins)·256/n_bins, 0, 255) (§2), and written as one
 * grey or RGB PNG (libspng) with grey separators, atomically (tmp + rename). */
#include "sample.h"

#include <errno.h>
#include <math.h>
#include <spng.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rng.h"

void sample_latents(ft_real *eps, size_t n, size_t dim, uint64_t seed, uint64_t grid_id)
{
    struct rng_key key = rng_key(seed, RNG_SAMPLE, grid_id, 0);
    for (size_t i = 0; i < n * dim; i++)
        eps[i] = (ft_real)rng_normal(key, (uint64_t)i);
}

void sample_grid_layout(size_t count, size_t h, size_t w, size_t cols,
                        size_t *out_h, size_t *out_w, size_t *sep)
{
    FT_CHECK(count >= 1 && cols >= 1 && h >= 1 && w >= 1,
             "empty grid: count %zu, cols %zu, image %zux%zu", count, cols, h, w);
    const size_t s = (h >= 64 || w >= 64) ? 2 : 1;
    const size_t ncol = count < cols ? count : cols;
    const size_t rows = (count + cols - 1) / cols;
    *out_w = ncol * w + (ncol + 1) * s;
    *out_h = rows * h + (rows + 1) * s;
    *sep = s;
}

/* Encodes the (oh, ow, c) canvas to fp; spng's error string goes to err. */
static int encode_png(FILE *fp, const char *path, const uint8_t *canvas, size_t oh, size_t ow,
                      size_t c, struct ft_err *err)
{
    int rc = FT_ERR_IO, r;
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    FT_CHECK(ctx != NULL, "spng_ctx_new failed");
    struct spng_ihdr ihdr = {
        .width = (uint32_t)ow,
        .height = (uint32_t)oh,
        .bit_depth = 8,
        .color_type = c == 1 ? SPNG_COLOR_TYPE_GRAYSCALE : SPNG_COLOR_TYPE_TRUECOLOR,
    };
    if ((r = spng_set_png_file(ctx, fp)) != 0 || (r = spng_set_ihdr(ctx, &ihdr)) != 0 ||
        (r = spng_encode_image(ctx, canvas, oh * ow * c, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE)) != 0) {
        ft_err_set(err, "%s: PNG encoding failed (%s)", path, spng_strerror(r));
        goto cleanup;
    }
    rc = FT_OK;
cleanup:
    spng_ctx_free(ctx);
    return rc;
}

int sample_write_png(const char *path, const uint8_t *imgs, size_t count, size_t h, size_t w,
                     size_t c, size_t cols, struct ft_err *err)
{
    int rc = FT_ERR_CONFIG;
    uint8_t *canvas = NULL;
    char *tmp = NULL;
    FILE *fp = NULL;
    size_t oh, ow, sep, len;
    int close_rc;

    if (c != 1 && c != 3) {
        ft_err_set(err, "%s: a PNG grid needs 1 (grey) or 3 (RGB) channels, the images have %zu",
                   path, c);
        goto cleanup;
    }
    if (count == 0 || cols == 0 || h == 0 || w == 0) {
        ft_err_set(err, "%s: empty grid (%zu images of %zux%zu, %zu per row)", path, count, h, w,
                   cols);
        goto cleanup;
    }
    sample_grid_layout(count, h, w, cols, &oh, &ow, &sep);
    if (oh > UINT32_MAX / 4 || ow > UINT32_MAX / 4) {
        ft_err_set(err, "%s: grid of %zux%zu pixels is too large for a PNG", path, oh, ow);
        goto cleanup;
    }
    canvas = ft_malloc(oh * ow * c);
    memset(canvas, SAMPLE_SEP_GREY, oh * ow * c);
    for (size_t i = 0; i < count; i++) {
        const size_t y0 = sep + (i / cols) * (h + sep), x0 = sep + (i % cols) * (w + sep);
        for (size_t y = 0; y < h; y++)
            memcpy(canvas + ((y0 + y) * ow + x0) * c, imgs + (i * h + y) * w * c, w * c);
    }

    rc = FT_ERR_IO;
    len = strlen(path) + 5;
    tmp = ft_malloc(len);
    snprintf(tmp, len, "%s.tmp", path);
    fp = fopen(tmp, "wb");
    if (!fp) {
        ft_err_set(err, "%s: cannot create: %s", tmp, strerror(errno));
        goto cleanup;
    }
    rc = encode_png(fp, path, canvas, oh, ow, c, err);
    if (rc != FT_OK)
        goto cleanup;
    rc = FT_ERR_IO;
    /* fsync before rename, so a crash leaves the old grid or the new one, never a torn file */
    if (fflush(fp) != 0 || fsync(fileno(fp)) != 0) {
        ft_err_set(err, "%s: write failed: %s", tmp, strerror(errno));
        goto cleanup;
    }
    close_rc = fclose(fp);
    fp = NULL;
    if (close_rc != 0) {
        ft_err_set(err, "%s: write failed: %s", tmp, strerror(errno));
        goto cleanup;
    }
    if (rename(tmp, path) != 0) {
        ft_err_set(err, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
        goto cleanup;
    }
    rc = FT_OK;
cleanup:
    if (fp)
        fclose(fp);
    if (rc != FT_OK && tmp)
        remove(tmp);
    free(tmp);
    free(canvas);
    return rc;
}

int sample_grid(struct glow *g, const char *path, const double *temps, size_t n_temps,
                size_t per_row, uint64_t seed, int n_bits, enum preprocess_kind kind,
                double alpha, struct ft_err *err)
{
    int rc = FT_ERR_CONFIG;
    const size_t dim = g->dim, c = g->spec.channels;
    ft_real *eps = NULL, *x = NULL;
    uint8_t *imgs = NULL;

    FT_CHECK(n_temps >= 1 && per_row >= 1, "empty sample grid: %zu temperatures, %zu per row",
             n_temps, per_row);
    for (size_t t = 0; t < n_temps; t++)
        FT_CHECK(isfinite(temps[t]) && temps[t] >= 0, "temperature %zu is %g", t, temps[t]);
    if (c != 1 && c != 3) {
        ft_err_set(err, "%s: sample grids need a 1- or 3-channel model, this one has %zu", path, c);
        goto cleanup;
    }
    eps = ft_malloc(per_row * dim * sizeof *eps);
    x = ft_malloc(per_row * dim * sizeof *x);
    imgs = ft_malloc(n_temps * per_row * dim);
    sample_latents(eps, per_row, dim, seed, 0);
    for (size_t t = 0; t < n_temps; t++) {
        for (size_t i = 0; i < per_row; i += g->batch_max) {
            const size_t n = per_row - i < g->batch_max ? per_row - i : g->batch_max;
            glow_reverse(g, x + i * dim, eps + i * dim, n, temps[t]);
        }
        postprocess_batch(imgs + t * per_row * dim, x, per_row, dim, n_bits, kind, alpha);
    }
    rc = sample_write_png(path, imgs, n_temps * per_row, g->spec.height, g->spec.width, c,
                          per_row, err);
cleanup:
    free(imgs);
    free(x);
    free(eps);
    return rc;
}
