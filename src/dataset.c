/* Reader of flowtrain-images HDF5 data sets (docs/dataset-format.md): opens one
 * file or a glob of shards (sorted by name, concatenated), checks every shard's
 * format, dtype, rank and shape, keeps all labels in memory, and reads images by
 * global index: shard s holds [first_s, first_s + n_s). dataset_read sorts the
 * requested indices and reads each run of consecutive ones as one hyperslab. */
#include "dataset.h"

#include <errno.h>
#include <glob.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "h5util.h"

struct read_item {          /* one requested image: global index, position in out */
    uint64_t idx, pos;
};

static int has_glob_chars(const char *p)
{
    return strpbrk(p, "*?[") != NULL;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *str_dup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = ft_malloc(n);
    memcpy(d, s, n);
    return d;
}

/* The shard paths of path: itself, or the glob's matches in strcmp order. */
static int expand_path(const char *path, char ***out, size_t *n_out, struct ft_err *err)
{
    int rc = FT_ERR_DATA;
    glob_t g;
    struct stat st;
    char **paths = NULL;
    int grc;

    if (!has_glob_chars(path) || stat(path, &st) == 0) {
        paths = ft_malloc(sizeof *paths);
        paths[0] = str_dup(path);
        *out = paths;
        *n_out = 1;
        return FT_OK;
    }
    memset(&g, 0, sizeof g);
    grc = glob(path, GLOB_NOSORT, NULL, &g);
    if (grc == GLOB_NOMATCH || (grc == 0 && g.gl_pathc == 0)) {
        ft_err_set(err, "%s: no files match this pattern", path);
        goto cleanup;
    }
    if (grc != 0) {
        ft_err_set(err, "%s: cannot expand the pattern (%s)", path,
                   grc == GLOB_ABORTED ? "a directory cannot be read" : "out of memory");
        goto cleanup;
    }
    paths = ft_malloc(g.gl_pathc * sizeof *paths);
    for (size_t i = 0; i < g.gl_pathc; i++)
        paths[i] = str_dup(g.gl_pathv[i]);
    qsort(paths, g.gl_pathc, sizeof *paths, cmp_str);   /* glob's own order follows the locale */
    *out = paths;
    *n_out = g.gl_pathc;
    rc = FT_OK;
cleanup:
    globfree(&g);
    return rc;
}

/* "uint8", "int32", "float32", "string", ... for messages. */
static const char *type_name(hid_t type, char *buf, size_t size)
{
    size_t bytes = H5Tget_size(type);
    switch (H5Tget_class(type)) {
    case H5T_INTEGER:
        snprintf(buf, size, "%s%zu", H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int", 8 * bytes);
        break;
    case H5T_FLOAT:
        snprintf(buf, size, "float%zu", 8 * bytes);
        break;
    case H5T_STRING:
        snprintf(buf, size, "string");
        break;
    case H5T_COMPOUND:
        snprintf(buf, size, "compound");
        break;
    default:
        snprintf(buf, size, "a non-numeric type");
        break;
    }
    return buf;
}

/* "32x32x*" for an expected shape with wildcards (0). */
static const char *shape_str(char *buf, size_t size, size_t h, size_t w, size_t c)
{
    char p[3][24];
    size_t v[3] = {h, w, c};
    for (int i = 0; i < 3; i++) {
        if (v[i])
            snprintf(p[i], sizeof p[i], "%zu", v[i]);
        else
            snprintf(p[i], sizeof p[i], "*");
    }
    snprintf(buf, size, "%sx%sx%s", p[0], p[1], p[2]);
    return buf;
}

/* Opens one shard and checks it on its own; fills sh and its shape. */
static int open_shard(struct dataset_shard *sh, const char *path, size_t shape[3],
                      int *has_labels, struct ft_err *err)
{
    int rc = FT_ERR_DATA;
    hid_t file = H5I_INVALID_HID, imgs = H5I_INVALID_HID, space = H5I_INVALID_HID;
    hid_t type = H5I_INVALID_HID, lab = H5I_INVALID_HID, ltype = H5I_INVALID_HID;
    hid_t lspace = H5I_INVALID_HID;
    char detail[256], tn[32], fmt[64];
    hsize_t dims[4], ldims[1];
    int64_t ver = 0, ishape[3];
    struct stat st;
    int r, ndims;

    if (stat(path, &st) != 0) {
        ft_err_set(err, "%s: cannot open: %s", path, strerror(errno));
        goto cleanup;
    }
    if (S_ISDIR(st.st_mode)) {
        ft_err_set(err, "%s: is a directory, expected an HDF5 file or a glob of shards", path);
        goto cleanup;
    }
    file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) {
        h5util_err_detail(detail, sizeof detail);
        ft_err_set(err, "%s: not a readable HDF5 file (%s)", path, detail);
        goto cleanup;
    }
    r = h5util_read_str_attr(file, "format", fmt, sizeof fmt);
    if (r <= 0) {
        ft_err_set(err, "%s: root attribute 'format' is %s: not a %s file (convert the data with flowdata)",
                   path, r == 0 ? "missing" : "not a string", DATASET_FORMAT);
        goto cleanup;
    }
    if (strcmp(fmt, DATASET_FORMAT) != 0) {
        ft_err_set(err, "%s: attribute 'format' is '%s', expected '%s'", path, fmt, DATASET_FORMAT);
        goto cleanup;
    }
    r = h5util_read_i64_attr(file, "format_version", &ver, 1);
    if (r <= 0) {
        ft_err_set(err, "%s: root attribute 'format_version' is %s", path,
                   r == 0 ? "missing" : "not an integer scalar");
        goto cleanup;
    }
    if (ver != DATASET_FORMAT_VERSION) {
        ft_err_set(err, "%s: format_version %" PRId64 " is not supported (this build reads %d)",
                   path, ver, DATASET_FORMAT_VERSION);
        goto cleanup;
    }
    if (H5Lexists(file, "images", H5P_DEFAULT) <= 0) {
        ft_err_set(err, "%s: dataset 'images' is missing (rebuild with flowdata)", path);
        goto cleanup;
    }
    imgs = H5Dopen2(file, "images", H5P_DEFAULT);
    if (imgs < 0) {
        ft_err_set(err, "%s: 'images' is not a readable dataset", path);
        goto cleanup;
    }
    type = H5Dget_type(imgs);
    if (type < 0 || H5Tget_class(type) != H5T_INTEGER || H5Tget_size(type) != 1 ||
        H5Tget_sign(type) != H5T_SGN_NONE) {
        ft_err_set(err, "%s: dataset 'images' has type %s, expected uint8", path,
                   type < 0 ? "unknown" : type_name(type, tn, sizeof tn));
        goto cleanup;
    }
    space = H5Dget_space(imgs);
    ndims = space < 0 ? -1 : H5Sget_simple_extent_ndims(space);
    if (ndims != 4) {
        ft_err_set(err, "%s: dataset 'images' has rank %d, expected 4 [N,H,W,C]", path, ndims);
        goto cleanup;
    }
    H5Sget_simple_extent_dims(space, dims, NULL);
    if (dims[0] == 0 || dims[1] == 0 || dims[2] == 0 || dims[3] == 0) {
        ft_err_set(err, "%s: dataset 'images' is empty ([%llu,%llu,%llu,%llu])", path,
                   (unsigned long long)dims[0], (unsigned long long)dims[1],
                   (unsigned long long)dims[2], (unsigned long long)dims[3]);
        goto cleanup;
    }
    r = h5util_read_i64_attr(file, "image_shape", ishape, 3);
    if (r < 0 || (r == 1 && ((uint64_t)ishape[0] != dims[1] || (uint64_t)ishape[1] != dims[2] ||
                             (uint64_t)ishape[2] != dims[3]))) {
        ft_err_set(err, "%s: attribute 'image_shape' disagrees with dataset 'images' [%llu,%llu,%llu,%llu]",
                   path, (unsigned long long)dims[0], (unsigned long long)dims[1],
                   (unsigned long long)dims[2], (unsigned long long)dims[3]);
        goto cleanup;
    }
    *has_labels = 0;
    if (H5Lexists(file, "labels", H5P_DEFAULT) > 0) {
        lab = H5Dopen2(file, "labels", H5P_DEFAULT);
        ltype = lab < 0 ? H5I_INVALID_HID : H5Dget_type(lab);
        if (ltype < 0 || H5Tget_class(ltype) != H5T_INTEGER) {
            ft_err_set(err, "%s: dataset 'labels' has type %s, expected int32", path,
                       ltype < 0 ? "unknown" : type_name(ltype, tn, sizeof tn));
            goto cleanup;
        }
        lspace = H5Dget_space(lab);
        ndims = lspace < 0 ? -1 : H5Sget_simple_extent_ndims(lspace);
        if (ndims != 1) {
            ft_err_set(err, "%s: dataset 'labels' has rank %d, expected 1 [N]", path, ndims);
            goto cleanup;
        }
        H5Sget_simple_extent_dims(lspace, ldims, NULL);
        if (ldims[0] != dims[0]) {
            ft_err_set(err, "%s: dataset 'labels' has %llu entries but 'images' has %llu", path,
                       (unsigned long long)ldims[0], (unsigned long long)dims[0]);
            goto cleanup;
        }
        *has_labels = 1;
    }
    shape[0] = dims[1];
    shape[1] = dims[2];
    shape[2] = dims[3];
    sh->n = dims[0];
    sh->file = file;      /* ownership moves to sh */
    file = H5I_INVALID_HID;
    sh->images = imgs;
    imgs = H5I_INVALID_HID;
    sh->fspace = space;
    space = H5I_INVALID_HID;
    rc = FT_OK;
cleanup:
    if (lspace >= 0) H5Sclose(lspace);
    if (ltype >= 0) H5Tclose(ltype);
    if (lab >= 0) H5Dclose(lab);
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    if (imgs >= 0) H5Dclose(imgs);
    if (file >= 0) H5Fclose(file);
    return rc;
}

/* Reads shard sh's labels (any integer type, each must fit int32) into out[0..sh->n). */
static int read_labels(const struct dataset_shard *sh, int32_t *out, struct ft_err *err)
{
    int rc = FT_ERR_DATA;
    hid_t lab = H5I_INVALID_HID;
    int64_t *tmp = ft_malloc(sh->n * sizeof *tmp);
    char detail[256];

    lab = H5Dopen2(sh->file, "labels", H5P_DEFAULT);
    if (lab < 0 || H5Dread(lab, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, tmp) < 0) {
        h5util_err_detail(detail, sizeof detail);
        ft_err_set(err, "%s: reading dataset 'labels' failed (%s)", sh->path, detail);
        goto cleanup;
    }
    for (size_t i = 0; i < sh->n; i++) {
        if (tmp[i] < INT32_MIN || tmp[i] > INT32_MAX) {
            ft_err_set(err, "%s: labels[%zu] = %" PRId64 " does not fit int32", sh->path, i, tmp[i]);
            goto cleanup;
        }
        out[i] = (int32_t)tmp[i];
    }
    rc = FT_OK;
cleanup:
    if (lab >= 0) H5Dclose(lab);
    free(tmp);
    return rc;
}

int dataset_open(struct dataset *ds, const char *path, size_t h, size_t w, size_t c, struct ft_err *err)
{
    int rc = FT_ERR_DATA;
    struct h5util_quiet q;
    char **paths = NULL;
    size_t n_paths = 0;
    char want[80], got[80];

    memset(ds, 0, sizeof *ds);
    h5util_quiet_begin(&q);
    rc = expand_path(path, &paths, &n_paths, err);
    if (rc != FT_OK)
        goto cleanup;
    rc = FT_ERR_DATA;
    ds->shards = ft_malloc(n_paths * sizeof *ds->shards);
    for (size_t s = 0; s < n_paths; s++) {
        ds->shards[s].file = ds->shards[s].images = ds->shards[s].fspace = H5I_INVALID_HID;
        ds->shards[s].path = paths[s];
        paths[s] = NULL;
    }
    ds->n_shards = n_paths;
    for (size_t s = 0; s < n_paths; s++) {
        struct dataset_shard *sh = &ds->shards[s];
        size_t shape[3] = {0, 0, 0};
        int lab = 0;
        if (open_shard(sh, sh->path, shape, &lab, err) != FT_OK)
            goto cleanup;
        if ((h && shape[0] != h) || (w && shape[1] != w) || (c && shape[2] != c)) {
            ft_err_set(err, "%s: images are %s (HxWxC), expected %s", sh->path,
                       shape_str(got, sizeof got, shape[0], shape[1], shape[2]),
                       shape_str(want, sizeof want, h, w, c));
            goto cleanup;
        }
        if (s == 0) {
            ds->h = shape[0];
            ds->w = shape[1];
            ds->c = shape[2];
            ds->has_labels = lab;
        } else if (shape[0] != ds->h || shape[1] != ds->w || shape[2] != ds->c) {
            ft_err_set(err, "%s: images are %s but shard %s has %s", sh->path,
                       shape_str(got, sizeof got, shape[0], shape[1], shape[2]), ds->shards[0].path,
                       shape_str(want, sizeof want, ds->h, ds->w, ds->c));
            goto cleanup;
        } else if (lab != ds->has_labels) {
            ft_err_set(err, "%s: %s 'labels' but shard %s %s", sh->path, lab ? "has" : "has no",
                       ds->shards[0].path, lab ? "has none" : "has them");
            goto cleanup;
        }
        sh->first = ds->n;
        ds->n += sh->n;
    }
    if (ds->has_labels) {
        ds->labels = ft_malloc(ds->n * sizeof *ds->labels);
        for (size_t s = 0; s < ds->n_shards; s++)
            if (read_labels(&ds->shards[s], ds->labels + ds->shards[s].first, err) != FT_OK)
                goto cleanup;
    }
    rc = FT_OK;
cleanup:
    if (paths) {
        for (size_t s = 0; s < n_paths; s++)
            free(paths[s]);
        free(paths);
    }
    if (rc != FT_OK)
        dataset_close(ds);
    h5util_quiet_end(&q);
    return rc;
}

static int cmp_item(const void *a, const void *b)
{
    const struct read_item *x = a, *y = b;
    if (x->idx != y->idx)
        return x->idx < y->idx ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

/* The shard holding global index i (binary search over first). */
static size_t find_shard(const struct dataset *ds, uint64_t i)
{
    size_t lo = 0, hi = ds->n_shards;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (ds->shards[mid].first <= i)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* Reads images [start, start + run) of shard sh (local indices) into dst. */
static int read_run(struct dataset_shard *sh, size_t h, size_t w, size_t c,
                    uint64_t start, uint64_t run, uint8_t *dst, struct ft_err *err)
{
    int rc = FT_ERR_DATA;
    hsize_t off[4] = {start, 0, 0, 0}, cnt[4] = {run, h, w, c};
    hid_t mspace = H5I_INVALID_HID;
    char detail[256];

    mspace = H5Screate_simple(4, cnt, NULL);   /* same shape as the file selection: HDF5's fast path */
    FT_CHECK(mspace >= 0, "H5Screate_simple failed");
    if (H5Sselect_hyperslab(sh->fspace, H5S_SELECT_SET, off, NULL, cnt, NULL) < 0 ||
        H5Dread(sh->images, H5T_NATIVE_UINT8, mspace, sh->fspace, H5P_DEFAULT, dst) < 0) {
        h5util_err_detail(detail, sizeof detail);
        ft_err_set(err, "%s: reading 'images' [%" PRIu64 ", %" PRIu64 ") failed (%s)", sh->path, start,
                   start + run, detail);
        goto cleanup;
    }
    rc = FT_OK;
cleanup:
    H5Sclose(mspace);
    return rc;
}

int dataset_read(struct dataset *ds, uint8_t *out, int32_t *labels, const uint64_t *idx, size_t count,
                 struct ft_err *err)
{
    int rc = FT_ERR_DATA;
    struct h5util_quiet q;
    struct read_item *items;
    size_t img = ds->h * ds->w * ds->c;

    FT_CHECK(ds->shards != NULL, "dataset_read on a closed dataset");
    if (count == 0)
        return FT_OK;
    if (ds->order_cap < count) {     /* scratch grows to the largest batch, then stays */
        free(ds->order);
        ds->order = ft_malloc(count * sizeof(struct read_item));
        ds->order_cap = count;
    }
    items = (struct read_item *)ds->order;
    for (size_t k = 0; k < count; k++) {
        FT_CHECK(idx[k] < ds->n, "index %" PRIu64 " out of range (data set has %zu images)", idx[k], ds->n);
        items[k].idx = idx[k];
        items[k].pos = k;
        if (labels)
            labels[k] = ds->has_labels ? ds->labels[idx[k]] : -1;
    }
    qsort(items, count, sizeof *items, cmp_item);

    h5util_quiet_begin(&q);
    for (size_t k = 0; k < count;) {
        struct dataset_shard *sh = &ds->shards[find_shard(ds, items[k].idx)];
        uint64_t start = items[k].idx, end = start + 1, shard_end = sh->first + sh->n;
        size_t j = k + 1;
        int direct = 1;   /* positions k..j are consecutive and unique: read straight into out */
        while (j < count && (items[j].idx == end - 1 || (items[j].idx == end && end < shard_end))) {
            if (items[j].idx == end - 1 || items[j].pos != items[j - 1].pos + 1)
                direct = 0;
            if (items[j].idx == end)
                end++;
            j++;
        }
        uint64_t run = end - start;
        if (direct) {
            if (read_run(sh, ds->h, ds->w, ds->c, start - sh->first, run, out + items[k].pos * img, err))
                goto cleanup;
        } else {
            if (ds->stage_cap < run * img) {
                free(ds->stage);
                ds->stage = ft_malloc(run * img);
                ds->stage_cap = run * img;
            }
            if (read_run(sh, ds->h, ds->w, ds->c, start - sh->first, run, ds->stage, err))
                goto cleanup;
            for (size_t t = k; t < j; t++)
                memcpy(out + items[t].pos * img, ds->stage + (items[t].idx - start) * img, img);
        }
        k = j;
    }
    rc = FT_OK;
cleanup:
    h5util_quiet_end(&q);
    return rc;
}

int dataset_source(const struct dataset *ds, size_t s, char *buf, size_t size, struct ft_err *err)
{
    struct h5util_quiet q;
    int r;

    FT_CHECK(s < ds->n_shards, "shard %zu of %zu", s, ds->n_shards);
    h5util_quiet_begin(&q);
    r = h5util_read_str_attr(ds->shards[s].file, "source", buf, size);
    h5util_quiet_end(&q);
    if (r < 0) {
        ft_err_set(err, "%s: root attribute 'source' is not a readable string", ds->shards[s].path);
        return FT_ERR_DATA;
    }
    return FT_OK;
}

void dataset_close(struct dataset *ds)
{
    struct h5util_quiet q;

    h5util_quiet_begin(&q);
    for (size_t s = 0; s < ds->n_shards && ds->shards; s++) {
        struct dataset_shard *sh = &ds->shards[s];
        if (sh->fspace >= 0) H5Sclose(sh->fspace);
        if (sh->images >= 0) H5Dclose(sh->images);
        if (sh->file >= 0) H5Fclose(sh->file);
        free(sh->path);
    }
    h5util_quiet_end(&q);
    free(ds->shards);
    free(ds->labels);
    free(ds->order);
    free(ds->stage);
    memset(ds, 0, sizeof *ds);
}
