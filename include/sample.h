/* Sample grids (glow-model.md §10): fixed standard-normal latents from the
 * RNG_SAMPLE purpose, decoded by glow_reverse with every prior std × T (one grid
 * row per temperature, the same latents in every row), postprocessed to uint8
 * (§2) and written as one PNG with grey separators through libspng. */
#ifndef FT_SAMPLE_H
#define FT_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "check.h"
#include "glow.h"
#include "preprocess.h"
#include "real.h"

#define SAMPLE_SEP_GREY 128   /* separator and empty-cell value */

/* eps (n, dim) ~ N(0,1): eps[i·dim + j] = rng_normal(rng_key(seed, RNG_SAMPLE,
 * grid_id, 0), i·dim + j). A pure function of its arguments, so every grid drawn
 * with the same grid_id during a run uses the same latents and is comparable;
 * sample i is the same whatever n. */
void sample_latents(ft_real *eps, size_t n, size_t dim, uint64_t seed, uint64_t grid_id);

/* Layout of a grid of `count` h×w images, `cols` per row: rows = ceil(count/cols),
 * separator width sep = 1 (2 if h or w ≥ 64), drawn between cells and around the
 * border, so out_w = cols·w + (cols+1)·sep, out_h = rows·h + (rows+1)·sep, and
 * cell (r, k) has its top-left pixel at (sep + r·(h+sep), sep + k·(w+sep)). */
void sample_grid_layout(size_t count, size_t h, size_t w, size_t cols,
                        size_t *out_h, size_t *out_w, size_t *sep);

/* Writes imgs (count, h, w, c) uint8 HWC, c = 1 (grey PNG) or 3 (RGB PNG), as a
 * grid with the layout above; separators and unused cells are SAMPLE_SEP_GREY.
 * Atomic: written to "<path>.tmp", flushed, then renamed over path.
 * Returns FT_OK, FT_ERR_CONFIG (c not 1 or 3, empty grid) or FT_ERR_IO. */
int sample_write_png(const char *path, const uint8_t *imgs, size_t count, size_t h, size_t w,
                     size_t c, size_t cols, struct ft_err *err);

/* One grid row per temperature temps[t], per_row samples each, all rows from the
 * same latents sample_latents(.., per_row, D, seed, grid 0): decodes with
 * glow_reverse in chunks of at most g->batch_max (this overwrites g's activation
 * arena), postprocesses with (n_bits, kind, alpha) and writes the PNG at path.
 * T = 0 gives the prior means at every level, the same image across its row.
 * Returns as sample_write_png (FT_ERR_CONFIG unless the model has 1 or 3
 * channels, checked before decoding). */
int sample_grid(struct glow *g, const char *path, const double *temps, size_t n_temps,
                size_t per_row, uint64_t seed, int n_bits, enum preprocess_kind kind,
                double alpha, struct ft_err *err);

#endif
