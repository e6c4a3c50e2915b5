/* Image sources that flowdata converts to flowtrain-images files
 * (docs/dataset-format.md): IDX (MNIST, Fashion-MNIST; gzip or plain), CIFAR-10
 * binary batches (label byte + R, G, B planes of 32x32 → HWC), NumPy .npy uint8
 * [N,H,W] or [N,H,W,C] (C order), and a folder of PNGs (labels from sub-folder
 * names). Opening checks headers, sizes and label counts; images then stream in
 * order as uint8 HWC, so a conversion needs memory for one block only. */
#ifndef FT_CONVERT_H
#define FT_CONVERT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <zlib.h>

#include "check.h"

enum convert_kind {
    CONVERT_IDX = 1,
    CONVERT_CIFAR10,
    CONVERT_NPY,
    CONVERT_PNG,
};

struct convert_source {
    enum convert_kind kind;
    size_t n, h, w, c;          /* images and their shape as read (before pad / rgb) */
    int has_labels;
    size_t done;                /* images returned so far */
    char desc[1024];            /* what was read, for the 'source' attribute */
    char *label_names;          /* PNG sub-folder names, '\n'-separated, or NULL */
    /* private */
    char **paths;               /* IDX: images; CIFAR: batches; npy: array; PNG: every image */
    size_t n_paths, path_i;     /* CIFAR: file being read */
    size_t left_in_file;        /* CIFAR: records not yet read in paths[path_i] */
    gzFile gz;                  /* IDX images */
    FILE *fp;                   /* CIFAR, npy */
    int32_t *labels;            /* all n labels, read at open (IDX, npy, PNG) */
    uint8_t *buf;               /* CIFAR record, PNG decode */
    size_t buf_size;
};

/* labels may be NULL. */
int convert_open_idx(struct convert_source *s, const char *images, const char *labels, struct ft_err *err);
int convert_open_cifar10(struct convert_source *s, char *const *files, size_t n_files, struct ft_err *err);
/* labels may be NULL; a labels .npy is any integer dtype, shape [N]. */
int convert_open_npy(struct convert_source *s, const char *images, const char *labels, struct ft_err *err);
/* PNGs directly in dir (no labels) or in its sub-folders (label = index of the sorted
 * sub-folder name); 8-bit grey or colour, all one size; C = 3 if any is colour. */
int convert_open_png(struct convert_source *s, const char *dir, struct ft_err *err);

/* The next count ≤ n − done images into images (count·h·w·c, HWC) and, if has_labels,
 * labels (count). After the last one it checks the input has nothing left over. */
int convert_read(struct convert_source *s, uint8_t *images, int32_t *labels, size_t count,
                 struct ft_err *err);
void convert_close(struct convert_source *s);

/* out: n images of (h + 2·pad) x (w + 2·pad) x (rgb ? 3 : c), zero border, grey tiled
 * to R = G = B when rgb (needs c = 1). */
void convert_pad_tile(uint8_t *out, const uint8_t *in, size_t n, size_t h, size_t w, size_t c,
                      size_t pad, int rgb);

/* Internal to the convert module (src/convert.c, src/convert_png.c). */
int convert_png_read(struct convert_source *s, uint8_t *images, size_t count, struct ft_err *err);
char *convert_strdup(const char *str);

#endif
