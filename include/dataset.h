/* Image data sets in HDF5 (docs/dataset-format.md): one logical set of N uint8
 * images [N,H,W,C] over 1..n shard files (a path or a glob, shards concatenated
 * in sorted name order), optional int32 labels [N]. Global index i lives in the
 * shard s with first[s] ≤ i < first[s] + n_s. Reads sort the requested indices
 * and read each run of consecutive ones as one hyperslab. Writes are atomic:
 * hidden temp file, fsync, rename, fsync of the directory. */
#ifndef FT_DATASET_H
#define FT_DATASET_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "check.h"

#define DATASET_FORMAT "flowtrain-images"
#define DATASET_FORMAT_VERSION 1

struct dataset_shard {
    char  *path;
    hid_t  file;     /* H5Fopen, read-only, serial (default) driver */
    hid_t  images;   /* "images" uint8 [n,H,W,C] */
    hid_t  fspace;   /* its file dataspace, reselected for every read */
    size_t n;        /* images in this shard */
    size_t first;    /* global index of its first image */
};

struct dataset {            /* one logical data set over 1..n shard files */
    size_t n, h, w, c;      /* total images and their shape */
    int has_labels;
    size_t n_shards;
    struct dataset_shard *shards;   /* n_shards, sorted by path */
    int32_t *labels;                /* all n labels (read at open), or NULL */
    void     *order;                /* scratch of dataset_read: sorted (idx, position) pairs */
    uint8_t  *stage;                /* scratch of dataset_read: one run of images */
    size_t order_cap, stage_cap;
};

/* Opens path (a file or a glob pattern of shards). h, w, c: expected shape, 0 = accept any.
 * Returns FT_OK, or FT_ERR_DATA with err naming the file and what is wrong; on error ds
 * is left closed (dataset_close is still safe). */
int dataset_open(struct dataset *ds, const char *path, size_t h, size_t w, size_t c, struct ft_err *err);

/* Reads images idx[0..count) (global indices, any order, duplicates allowed) into out
 * (count × h·w·c bytes, in the order of idx) and labels (count int32, may be NULL;
 * all −1 when the data set has no labels).
 * Reads in sorted order internally, coalescing consecutive indices into one hyperslab
 * read. An index ≥ n is a bug (FT_CHECK); a failed read (e.g. checksum) is FT_ERR_DATA. */
int dataset_read(struct dataset *ds, uint8_t *out, int32_t *labels, const uint64_t *idx, size_t count, struct ft_err *err);

void dataset_close(struct dataset *ds);

/* Reads the root attribute "source" of shard s into buf (empty if absent). */
int dataset_source(const struct dataset *ds, size_t s, char *buf, size_t size, struct ft_err *err);

/* Streaming writer: begin with the final shape, append images in order, then commit
 * (close, fsync, rename to path, fsync the directory) or abort (remove the temp file).
 * Memory use is one append's worth, so large conversions need not fit in RAM. */
struct dataset_writer_opts {
    size_t chunk_images;        /* images per HDF5 chunk; 0 = about 8 KiB per chunk (1..64) */
    int deflate;                /* gzip level 0..9; 0 = uncompressed (default) */
    const char *label_names;    /* optional: class names, '\n'-separated, as attribute */
};

struct dataset_writer {
    char  *path, *tmp_path;
    hid_t  file, images, labels;
    size_t n, h, w, c, done;
    int    has_labels;
};

int dataset_writer_begin(struct dataset_writer *wr, const char *path, size_t n, size_t h, size_t w,
                         size_t c, int has_labels, const char *source,
                         const struct dataset_writer_opts *opts, struct ft_err *err);
/* images: count × h·w·c bytes; labels: count int32 (NULL iff the writer has none). */
int dataset_writer_append(struct dataset_writer *wr, const uint8_t *images, const int32_t *labels,
                          size_t count, struct ft_err *err);
int dataset_writer_commit(struct dataset_writer *wr, struct ft_err *err);
void dataset_writer_abort(struct dataset_writer *wr);

/* Writer used by flowdata and by tests to make tiny files: writes images (n,h,w,c) and
 * optional labels atomically (tmp + fsync + rename). source: free text. */
int dataset_write(const char *path, const uint8_t *images, const int32_t *labels, size_t n, size_t h,
                  size_t w, size_t c, const char *source, struct ft_err *err);

#endif
