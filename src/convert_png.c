/* PNG folder reader of the convert module (include/convert.h), on libspng.
 * DIR holds either PNGs (no labels) or sub-folders of PNGs (label = index of the
 * sub-folder in sorted name order); files are taken in sorted name order. A first
 * pass reads every IHDR (same size, 8-bit or less; C = 3 if any image is colour),
 * so a bad file stops the conversion before anything is written. Alpha must be
 * fully opaque: out = RGB (or grey) of the decoded RGBA8 / G8 image. */
#include "convert.h"

#include <dirent.h>
#include <errno.h>
#include <spng.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

struct name_list {
    char **v;
    size_t n, cap;
};

static void list_add(struct name_list *l, const char *s)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        char **v = ft_malloc(cap * sizeof *v);
        if (l->n)
            memcpy(v, l->v, l->n * sizeof *v);
        free(l->v);
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = convert_strdup(s);
}

static void list_free(struct name_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int is_png_name(const char *name)
{
    size_t n = strlen(name);
    return n > 4 && strcasecmp(name + n - 4, ".png") == 0;
}

static char *join_path(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *p = ft_malloc(la + lb + 2);
    memcpy(p, a, la);
    p[la] = '/';
    memcpy(p + la + 1, b, lb + 1);
    return p;
}

/* Sorted PNG files and sub-folders of dir (hidden entries skipped). */
static int scan_dir(const char *dir, struct name_list *pngs, struct name_list *subdirs, struct ft_err *err)
{
    DIR *d = opendir(dir);
    struct dirent *e;

    if (!d) {
        ft_err_set(err, "%s: cannot open folder: %s", dir, strerror(errno));
        return FT_ERR_IO;
    }
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (e->d_name[0] == '.')
            continue;
        char *p = join_path(dir, e->d_name);
        if (stat(p, &st) == 0) {
            if (S_ISDIR(st.st_mode) && subdirs)
                list_add(subdirs, e->d_name);
            else if (S_ISREG(st.st_mode) && is_png_name(e->d_name))
                list_add(pngs, e->d_name);
        }
        free(p);
    }
    closedir(d);
    if (pngs->n)
        qsort(pngs->v, pngs->n, sizeof *pngs->v, cmp_str);
    if (subdirs && subdirs->n)
        qsort(subdirs->v, subdirs->n, sizeof *subdirs->v, cmp_str);
    return FT_OK;
}

/* Opens path for spng; *fp must be closed by the caller. */
static spng_ctx *png_open(const char *path, FILE **fp, struct spng_ihdr *ihdr, struct ft_err *err)
{
    spng_ctx *ctx = NULL;
    int r;

    *fp = fopen(path, "rb");
    if (!*fp) {
        ft_err_set(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    ctx = spng_ctx_new(0);
    FT_CHECK(ctx != NULL, "spng_ctx_new failed");
    if ((r = spng_set_png_file(ctx, *fp)) != 0 || (r = spng_get_ihdr(ctx, ihdr)) != 0) {
        ft_err_set(err, "%s: not a readable PNG (%s)", path, spng_strerror(r));
        spng_ctx_free(ctx);
        return NULL;
    }
    if (ihdr->bit_depth > 8) {
        ft_err_set(err, "%s: is a %u-bit PNG; only 8-bit (or lower) images are supported", path,
                   ihdr->bit_depth);
        spng_ctx_free(ctx);
        return NULL;
    }
    return ctx;
}

static int is_colour(const struct spng_ihdr *ihdr)
{
    return ihdr->color_type != SPNG_COLOR_TYPE_GRAYSCALE && ihdr->color_type != SPNG_COLOR_TYPE_GRAYSCALE_ALPHA;
}

int convert_open_png(struct convert_source *s, const char *dir, struct ft_err *err)
{
    int rc = FT_ERR_DATA;
    struct name_list pngs = {0}, subdirs = {0}, files = {0};
    size_t *class_of = NULL, names_len = 0;

    memset(s, 0, sizeof *s);
    s->kind = CONVERT_PNG;
    rc = scan_dir(dir, &pngs, &subdirs, err);
    if (rc != FT_OK)
        goto cleanup;
    rc = FT_ERR_DATA;
    if (pngs.n && subdirs.n) {
        ft_err_set(err, "%s: holds both PNG files and sub-folders; use PNGs only, or one sub-folder per"
                   " class", dir);
        goto cleanup;
    }
    if (pngs.n) {
        for (size_t i = 0; i < pngs.n; i++) {
            char *p = join_path(dir, pngs.v[i]);
            list_add(&files, p);
            free(p);
        }
    } else {
        for (size_t k = 0; k < subdirs.n; k++) {
            struct name_list sub = {0};
            char *sd = join_path(dir, subdirs.v[k]);
            rc = scan_dir(sd, &sub, NULL, err);
            if (rc == FT_OK && sub.n == 0) {
                ft_err_set(err, "%s: class folder holds no PNG files", sd);
                rc = FT_ERR_DATA;
            }
            for (size_t i = 0; rc == FT_OK && i < sub.n; i++) {
                char *p = join_path(sd, sub.v[i]);
                list_add(&files, p);
                free(p);
                class_of = realloc(class_of, files.n * sizeof *class_of);
                FT_CHECK(class_of != NULL, "out of memory");
                class_of[files.n - 1] = k;
            }
            free(sd);
            list_free(&sub);
            if (rc != FT_OK)
                goto cleanup;
            names_len += strlen(subdirs.v[k]) + 1;
        }
        rc = FT_ERR_DATA;
    }
    if (files.n == 0) {
        ft_err_set(err, "%s: no PNG files found", dir);
        goto cleanup;
    }
    for (size_t i = 0; i < files.n; i++) {     /* pass 1: every header */
        struct spng_ihdr ihdr;
        FILE *fp = NULL;
        spng_ctx *ctx = png_open(files.v[i], &fp, &ihdr, err);
        if (fp)
            fclose(fp);
        if (!ctx)
            goto cleanup;
        spng_ctx_free(ctx);
        if (i == 0) {
            s->h = ihdr.height;
            s->w = ihdr.width;
        } else if (ihdr.height != s->h || ihdr.width != s->w) {
            ft_err_set(err, "%s: is %ux%u (WxH) but %s is %zux%zu", files.v[i], ihdr.width, ihdr.height,
                       files.v[0], s->w, s->h);
            goto cleanup;
        }
        if (is_colour(&ihdr))
            s->c = 3;
    }
    if (!s->c)
        s->c = 1;
    s->n = files.n;
    s->paths = files.v;
    s->n_paths = files.n;
    files.v = NULL;
    files.n = 0;
    s->buf_size = s->h * s->w * 4;
    s->buf = ft_malloc(s->buf_size);
    if (class_of) {
        s->has_labels = 1;
        s->labels = ft_malloc(s->n * sizeof *s->labels);
        for (size_t i = 0; i < s->n; i++)
            s->labels[i] = (int32_t)class_of[i];
        char *q = s->label_names = ft_malloc(names_len + 1);   /* zero-filled: ends in NUL */
        for (size_t k = 0; k < subdirs.n; k++) {
            size_t len = strlen(subdirs.v[k]);
            if (k)
                *q++ = '\n';
            memcpy(q, subdirs.v[k], len);
            q += len;
        }
    }
    snprintf(s->desc, sizeof s->desc, "png: %s (%zu files%s)", dir, s->n,
             s->has_labels ? ", labels from sub-folder names" : "");
    rc = FT_OK;
cleanup:
    free(class_of);
    list_free(&pngs);
    list_free(&subdirs);
    list_free(&files);
    if (rc != FT_OK)
        convert_close(s);
    return rc;
}

/* Decodes one file into img (h·w·c): grey PNGs as G8 (or RGBA8 with grey+alpha),
 * everything else as RGBA8 with tRNS applied; alpha must be 255 everywhere. */
static int png_decode(struct convert_source *s, const char *path, uint8_t *img, struct ft_err *err)
{
    int rc = FT_ERR_DATA, r, fmt;
    struct spng_ihdr ihdr;
    FILE *fp = NULL;
    size_t len = 0, hw = s->h * s->w;
    spng_ctx *ctx = png_open(path, &fp, &ihdr, err);

    if (!ctx)
        goto cleanup;
    if (ihdr.height != s->h || ihdr.width != s->w || (s->c == 1 && is_colour(&ihdr))) {
        ft_err_set(err, "%s: changed while being converted", path);
        goto cleanup;
    }
    fmt = s->c == 1 && ihdr.color_type == SPNG_COLOR_TYPE_GRAYSCALE ? SPNG_FMT_G8 : SPNG_FMT_RGBA8;
    if ((r = spng_decoded_image_size(ctx, fmt, &len)) != 0 || len > s->buf_size ||
        (r = spng_decode_image(ctx, s->buf, len, fmt, fmt == SPNG_FMT_G8 ? 0 : SPNG_DECODE_TRNS)) != 0) {
        ft_err_set(err, "%s: PNG decode failed (%s)", path, r ? spng_strerror(r) : "unexpected size");
        goto cleanup;
    }
    if (fmt == SPNG_FMT_G8) {
        memcpy(img, s->buf, hw);
    } else {
        for (size_t p = 0; p < hw; p++) {
            if (s->buf[4 * p + 3] != 255) {
                ft_err_set(err, "%s: pixel (%zu, %zu) is not opaque (alpha %u); flatten the image first",
                           path, p % s->w, p / s->w, s->buf[4 * p + 3]);
                goto cleanup;
            }
            for (size_t k = 0; k < s->c; k++)
                img[p * s->c + k] = s->buf[4 * p + k];
        }
    }
    rc = FT_OK;
cleanup:
    if (ctx)
        spng_ctx_free(ctx);
    if (fp)
        fclose(fp);
    return rc;
}

int convert_png_read(struct convert_source *s, uint8_t *images, size_t count, struct ft_err *err)
{
    size_t img = s->h * s->w * s->c;
    for (size_t i = 0; i < count; i++)
        if (png_decode(s, s->paths[s->done + i], images + i * img, err) != FT_OK)
            return FT_ERR_DATA;
    return FT_OK;
}
