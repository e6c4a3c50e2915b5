/* Writer of flowtrain-images HDF5 files (docs/dataset-format.md), part of the
 * dataset module: 'images' uint8 [N,H,W,C] in chunks of a few whole images
 * (Fletcher32, optional deflate), optional 'labels' int32 [N], root attributes.
 * Atomic: written to a hidden ".<name>.tmp-<pid>" beside the output (so shard
 * globs never match it), closed, fsync'ed, renamed, and the directory fsync'ed. */
#include "dataset.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "h5util.h"

#define CHUNK_TARGET_BYTES 8192    /* a random single-image read decodes at most ~8 KiB */
#define CHUNK_MAX_IMAGES 64
#define LABEL_CHUNK 16384

static char *str_dup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = ft_malloc(n);
    memcpy(d, s, n);
    return d;
}

/* dir part of path ("." if none) into buf. */
static void dir_of(const char *path, char *buf, size_t size)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(buf, size, ".");
    else if (slash == path)
        snprintf(buf, size, "/");
    else
        snprintf(buf, size, "%.*s", (int)(slash - path), path);
}

static hid_t create_dataset(hid_t file, const char *name, hid_t type, int rank, const hsize_t *dims,
                            const hsize_t *chunk, int deflate)
{
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE), space = H5Screate_simple(rank, dims, NULL);
    hid_t d = H5I_INVALID_HID;

    if (dcpl < 0 || space < 0 || H5Pset_chunk(dcpl, rank, chunk) < 0 ||
        H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) < 0)
        goto cleanup;
    if (deflate > 0 && H5Pset_deflate(dcpl, (unsigned)deflate) < 0)
        goto cleanup;
    if (H5Pset_fletcher32(dcpl) < 0)       /* after deflate: checks the stored bytes */
        goto cleanup;
    d = H5Dcreate2(file, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
cleanup:
    if (space >= 0) H5Sclose(space);
    if (dcpl >= 0) H5Pclose(dcpl);
    return d;
}

static void close_handles(struct dataset_writer *wr)
{
    if (wr->labels >= 0) H5Dclose(wr->labels);
    if (wr->images >= 0) H5Dclose(wr->images);
    if (wr->file >= 0) H5Fclose(wr->file);
    wr->labels = wr->images = wr->file = H5I_INVALID_HID;
}

void dataset_writer_abort(struct dataset_writer *wr)
{
    struct h5util_quiet q;

    h5util_quiet_begin(&q);
    close_handles(wr);
    h5util_quiet_end(&q);
    if (wr->tmp_path)
        unlink(wr->tmp_path);
    free(wr->tmp_path);
    free(wr->path);
    memset(wr, 0, sizeof *wr);
    wr->file = wr->images = wr->labels = H5I_INVALID_HID;
}

/* Creates wr->tmp_path as an HDF5 file with its datasets and attributes; the
 * handles land in wr (closed by dataset_writer_abort on failure). */
static herr_t create_file(struct dataset_writer *wr, size_t k, const char *source,
                          const struct dataset_writer_opts *opts)
{
    herr_t rc = -1;
    int deflate = opts ? opts->deflate : 0;
    hsize_t dims[4] = {wr->n, wr->h, wr->w, wr->c}, chunk[4] = {k, wr->h, wr->w, wr->c};
    hsize_t lchunk = wr->n < LABEL_CHUNK ? wr->n : LABEL_CHUNK;
    int64_t ver = DATASET_FORMAT_VERSION, shape[3] = {(int64_t)wr->h, (int64_t)wr->w, (int64_t)wr->c};
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);

    /* v1.8 object headers carry checksums; v1.10 at most, so HDF5 1.10 readers open it. */
    if (fapl < 0 || H5Pset_fapl_sec2(fapl) < 0 ||
        H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V110) < 0)
        goto cleanup;
    wr->file = H5Fcreate(wr->tmp_path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (wr->file < 0)
        goto cleanup;
    wr->images = create_dataset(wr->file, "images", H5T_STD_U8LE, 4, dims, chunk, deflate);
    if (wr->images < 0)
        goto cleanup;
    if (wr->has_labels) {
        wr->labels = create_dataset(wr->file, "labels", H5T_STD_I32LE, 1, dims, &lchunk, deflate);
        if (wr->labels < 0)
            goto cleanup;
    }
    if (h5util_write_str_attr(wr->file, "format", DATASET_FORMAT) < 0 ||
        h5util_write_i64_attr(wr->file, "format_version", &ver, 1) < 0 ||
        h5util_write_i64_attr(wr->file, "image_shape", shape, 3) < 0 ||
        h5util_write_str_attr(wr->file, "source", source ? source : "") < 0)
        goto cleanup;
    if (opts && opts->label_names && h5util_write_str_attr(wr->file, "label_names", opts->label_names) < 0)
        goto cleanup;
    rc = 0;
cleanup:
    if (fapl >= 0) H5Pclose(fapl);
    return rc;
}

int dataset_writer_begin(struct dataset_writer *wr, const char *path, size_t n, size_t h, size_t w,
                         size_t c, int has_labels, const char *source,
                         const struct dataset_writer_opts *opts, struct ft_err *err)
{
    int rc = FT_ERR_DATA;
    struct h5util_quiet q;
    const char *base = strrchr(path, '/');
    char dir[4096], detail[256];
    size_t img = h * w * c, k;
    int fd, deflate = opts ? opts->deflate : 0;

    memset(wr, 0, sizeof *wr);
    wr->file = wr->images = wr->labels = H5I_INVALID_HID;
    h5util_quiet_begin(&q);
    if (n == 0 || img == 0) {
        ft_err_set(err, "%s: nothing to write (%zu images of %zux%zux%zu)", path, n, h, w, c);
        goto cleanup;
    }
    if (deflate < 0 || deflate > 9) {
        ft_err_set(err, "%s: deflate level %d is not in 0..9", path, deflate);
        goto cleanup;
    }
    if (opts && opts->chunk_images) {
        k = opts->chunk_images;
    } else {
        k = CHUNK_TARGET_BYTES / img;
        k = k < 1 ? 1 : k > CHUNK_MAX_IMAGES ? CHUNK_MAX_IMAGES : k;
    }
    k = k > n ? n : k;
    if (k * img >= ((size_t)1 << 32)) {
        ft_err_set(err, "%s: a chunk of %zu images of %zu bytes exceeds HDF5's 4 GiB chunk limit",
                   path, k, img);
        goto cleanup;
    }
    rc = FT_ERR_IO;
    base = base ? base + 1 : path;
    if (!*base) {
        ft_err_set(err, "%s: output path names a directory, not a file", path);
        goto cleanup;
    }
    dir_of(path, dir, sizeof dir);
    wr->path = str_dup(path);
    wr->tmp_path = ft_malloc(strlen(dir) + strlen(base) + 40);
    sprintf(wr->tmp_path, "%s/.%s.tmp-%ld", dir, base, (long)getpid());
    /* Created by hand first so a missing or read-only directory gives errno's words. */
    fd = open(wr->tmp_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        ft_err_set(err, "%s: cannot create %s: %s", path, wr->tmp_path, strerror(errno));
        goto cleanup;
    }
    close(fd);
    wr->n = n;
    wr->h = h;
    wr->w = w;
    wr->c = c;
    wr->has_labels = has_labels;
    if (create_file(wr, k, source, opts) < 0) {
        h5util_err_detail(detail, sizeof detail);
        ft_err_set(err, "%s: cannot create HDF5 file %s (%s)", path, wr->tmp_path, detail);
        goto cleanup;
    }
    rc = FT_OK;
cleanup:
    h5util_quiet_end(&q);
    if (rc != FT_OK)
        dataset_writer_abort(wr);
    return rc;
}

/* Writes count rows at row `at` of dataset d (rank 1 or 4, trailing dims from dims). */
static herr_t write_rows(hid_t d, hid_t mem_type, int rank, const hsize_t *dims, size_t at, size_t count,
                         const void *buf)
{
    herr_t rc = -1;
    hsize_t off[4] = {at, 0, 0, 0}, cnt[4] = {count, dims[1], dims[2], dims[3]};
    hid_t fs = H5Dget_space(d), ms = H5Screate_simple(rank, cnt, NULL);

    if (fs >= 0 && ms >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL) >= 0)
        rc = H5Dwrite(d, mem_type, ms, fs, H5P_DEFAULT, buf);
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    return rc;
}

int dataset_writer_append(struct dataset_writer *wr, const uint8_t *images, const int32_t *labels,
                          size_t count, struct ft_err *err)
{
    int rc = FT_OK;
    struct h5util_quiet q;
    hsize_t dims[4] = {wr->n, wr->h, wr->w, wr->c};
    char detail[256];

    FT_CHECK(wr->file >= 0, "append to a closed dataset writer");
    FT_CHECK(wr->done + count <= wr->n, "appending %zu images after %zu of %zu", count, wr->done, wr->n);
    FT_CHECK(!labels == !wr->has_labels, "labels %s but the writer %s", labels ? "given" : "missing",
             wr->has_labels ? "has them" : "has none");
    if (count == 0)
        return FT_OK;
    h5util_quiet_begin(&q);
    if (write_rows(wr->images, H5T_NATIVE_UINT8, 4, dims, wr->done, count, images) < 0 ||
        (labels && write_rows(wr->labels, H5T_NATIVE_INT32, 1, dims, wr->done, count, labels) < 0)) {
        h5util_err_detail(detail, sizeof detail);
        ft_err_set(err, "%s: writing images [%zu, %zu) failed (%s)", wr->path, wr->done, wr->done + count,
                   detail);
        rc = FT_ERR_IO;
    } else {
        wr->done += count;
    }
    h5util_quiet_end(&q);
    return rc;
}

/* fsync of a file or directory by path. */
static int fsync_path(const char *p, int flags)
{
    int fd = open(p, flags), rc;
    if (fd < 0)
        return -1;
    rc = fsync(fd);
    if (close(fd) != 0)
        rc = -1;
    return rc;
}

int dataset_writer_commit(struct dataset_writer *wr, struct ft_err *err)
{
    int rc = FT_ERR_IO;
    struct h5util_quiet q;
    char dir[4096], detail[256];
    herr_t e1, e2, e3;

    FT_CHECK(wr->file >= 0, "commit of a closed dataset writer");
    FT_CHECK(wr->done == wr->n, "commit after %zu of %zu images", wr->done, wr->n);
    h5util_quiet_begin(&q);
    e1 = wr->labels >= 0 ? H5Dclose(wr->labels) : 0;
    e2 = H5Dclose(wr->images);
    e3 = H5Fclose(wr->file);
    wr->labels = wr->images = wr->file = H5I_INVALID_HID;
    if (e1 < 0 || e2 < 0 || e3 < 0) {
        h5util_err_detail(detail, sizeof detail);
        ft_err_set(err, "%s: closing the HDF5 file failed (%s)", wr->path, detail);
        goto cleanup;
    }
    if (fsync_path(wr->tmp_path, O_RDONLY) != 0) {
        ft_err_set(err, "%s: fsync of %s failed: %s", wr->path, wr->tmp_path, strerror(errno));
        goto cleanup;
    }
    if (rename(wr->tmp_path, wr->path) != 0) {
        ft_err_set(err, "%s: cannot rename %s to it: %s", wr->path, wr->tmp_path, strerror(errno));
        goto cleanup;
    }
    dir_of(wr->path, dir, sizeof dir);
    if (fsync_path(dir, O_RDONLY | O_DIRECTORY) != 0) {
        ft_err_set(err, "%s: fsync of directory %s failed: %s", wr->path, dir, strerror(errno));
        free(wr->tmp_path);         /* the file is in place; only durability is in doubt */
        wr->tmp_path = NULL;
        goto cleanup;
    }
    free(wr->tmp_path);
    wr->tmp_path = NULL;
    rc = FT_OK;
cleanup:
    h5util_quiet_end(&q);
    dataset_writer_abort(wr);       /* frees; unlinks the temp file only if still there */
    return rc;
}

int dataset_write(const char *path, const uint8_t *images, const int32_t *labels, size_t n, size_t h,
                  size_t w, size_t c, const char *source, struct ft_err *err)
{
    struct dataset_writer wr;
    int rc = dataset_writer_begin(&wr, path, n, h, w, c, labels != NULL, source, NULL, err);
    if (rc != FT_OK)
        return rc;
    rc = dataset_writer_append(&wr, images, labels, n, err);
    if (rc != FT_OK) {
        dataset_writer_abort(&wr);
        return rc;
    }
    return dataset_writer_commit(&wr, err);
}
