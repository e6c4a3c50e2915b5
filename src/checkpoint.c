/* Checkpoint snapshot and atomic write, retention and the newest-valid search
 * (distributed.md §2.7–2.9; layout in include/checkpoint.h). Owns the snapshot
 * copies. Commit: write .ckpt-<step>.h5.tmp → close → fsync → rename to
 * ckpt-<step>.h5 → fsync(dir) → reopen and verify → delete beyond keep_last, so a
 * crash at any point leaves the previous checkpoints complete. */
#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "h5util.h"

_Static_assert(sizeof(ft_real) == sizeof(float), "checkpoints store float32 arenas");

#define CHUNK_MAX_ELEMS ((hsize_t)1 << 20)
#define PATH_MAX_LEN 4096

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---------- snapshot ---------- */

void ckpt_snapshot_init(struct ckpt_snapshot *s, const struct glow *g, const struct optim *o)
{
    memset(s, 0, sizeof *s);
    s->tensors = g->tensors;
    s->n_tensors = g->n_tensors;
    s->n_params = g->n_params;
    s->n_fbufs = g->n_fbufs;
    s->n_ibufs = g->n_ibufs;
    s->params = ft_malloc_aligned(g->n_params * sizeof *s->params);
    s->fbufs = ft_malloc_aligned((g->n_fbufs + 1) * sizeof *s->fbufs);
    s->ibufs = ft_malloc_aligned((g->n_ibufs + 1) * sizeof *s->ibufs);
    if (o) {
        FT_CHECK(o->n == g->n_params, "optimizer of %zu values for %zu parameters", o->n, g->n_params);
        s->m = ft_malloc_aligned(o->n * sizeof *s->m);
        s->v = ft_malloc_aligned(o->n * sizeof *s->v);
        s->ema = o->ema_w ? ft_malloc_aligned(o->n * sizeof *s->ema) : NULL;
    }
    s->config_cap = 4096;
    s->config = ft_malloc(s->config_cap);
}

void ckpt_snapshot_take(struct ckpt_snapshot *s, const struct glow *g, const struct optim *o,
                        const struct train_state *st, const char *config_yaml)
{
    FT_CHECK(s->tensors == g->tensors && s->n_params == g->n_params && s->n_fbufs == g->n_fbufs &&
             s->n_ibufs == g->n_ibufs, "snapshot taken of another model than at init");
    FT_CHECK(!o == !s->m && (!o || (!o->ema_w == !s->ema && o->n == s->n_params)),
             "snapshot taken with another optimizer than at init");
    memcpy(s->params, g->params, g->n_params * sizeof *s->params);
    memcpy(s->fbufs, g->fbufs, g->n_fbufs * sizeof *s->fbufs);
    memcpy(s->ibufs, g->ibufs, g->n_ibufs * sizeof *s->ibufs);
    if (o) {
        memcpy(s->m, o->m, o->n * sizeof *s->m);
        memcpy(s->v, o->v, o->n * sizeof *s->v);
        if (o->ema_w)
            memcpy(s->ema, o->ema_w, o->n * sizeof *s->ema);
    }
    s->state = *st;
    if (o)
        s->state.opt_t = o->t;   /* the optimizer's own count is the truth */
    s->config_len = strlen(config_yaml);
    FT_CHECK(s->config_len > 0, "empty config text for a checkpoint");
    if (s->config_len + 1 > s->config_cap) {
        free(s->config);
        s->config_cap = s->config_len + 1;
        s->config = ft_malloc(s->config_cap);
    }
    memcpy(s->config, config_yaml, s->config_len + 1);
    s->taken = 1;
}

void ckpt_snapshot_free(struct ckpt_snapshot *s)
{
    free(s->params);
    free(s->fbufs);
    free(s->ibufs);
    free(s->m);
    free(s->v);
    free(s->ema);
    free(s->config);
    memset(s, 0, sizeof *s);
}

/* ---------- writing ---------- */

/* Creates and writes one chunked, Fletcher32-checked dataset. Chunks are the
 * whole dataset up to CHUNK_MAX_ELEMS elements, else cut along the leading
 * dimensions. */
static herr_t write_dset(hid_t file, hid_t lcpl, const char *name, hid_t ftype, hid_t mtype, int ndim,
                         const hsize_t *dims, const void *buf)
{
    herr_t rc = -1;
    hsize_t chunk[4];
    hid_t dcpl = H5I_INVALID_HID, space = H5I_INVALID_HID, d = H5I_INVALID_HID;

    FT_CHECK(ndim >= 1 && ndim <= 4, "dataset %s of rank %d", name, ndim);
    for (int i = 0; i < ndim; i++) {
        FT_CHECK(dims[i] > 0, "dataset %s has an empty dimension", name);
        chunk[i] = dims[i];
    }
    for (int i = 0; i < ndim; i++) {
        hsize_t n = 1, rest = 1;
        for (int j = 0; j < ndim; j++)
            n *= chunk[j];
        if (n <= CHUNK_MAX_ELEMS)
            break;
        for (int j = i + 1; j < ndim; j++)
            rest *= chunk[j];
        chunk[i] = rest >= CHUNK_MAX_ELEMS ? 1 : CHUNK_MAX_ELEMS / rest;
    }
    dcpl = H5Pcreate(H5P_DATASET_CREATE);
    space = H5Screate_simple(ndim, dims, NULL);
    if (dcpl < 0 || space < 0 || H5Pset_chunk(dcpl, ndim, chunk) < 0 ||
        H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) < 0 || H5Pset_fletcher32(dcpl) < 0)
        goto cleanup;
    d = H5Dcreate2(file, name, ftype, space, lcpl, dcpl, H5P_DEFAULT);
    if (d < 0 || H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
        goto cleanup;
    rc = 0;
cleanup:
    if (d >= 0 && H5Dclose(d) < 0)
        rc = -1;
    if (space >= 0) H5Sclose(space);
    if (dcpl >= 0) H5Pclose(dcpl);
    return rc;
}

/* Writes the snapshot's contents into an open file; on failure names the dataset in what. */
static herr_t write_contents(hid_t file, const struct ckpt_snapshot *s, char *what, size_t what_size)
{
    herr_t rc = -1;
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    int64_t ver = CHECKPOINT_FORMAT_VERSION;
    hsize_t one = 1, len = s->config_len;
    uint64_t hash = checkpoint_text_hash(s->config, s->config_len);
    char name[160];
    static const char *const groups[3] = { "adam_m", "adam_v", "ema" };
    const float *arrays[3] = { s->m, s->v, s->ema };

    if (lcpl < 0 || H5Pset_create_intermediate_group(lcpl, 1) < 0)
        goto cleanup;
    snprintf(what, what_size, "root attributes");
    if (h5util_write_str_attr(file, "format", CHECKPOINT_FORMAT) < 0 ||
        h5util_write_i64_attr(file, "format_version", &ver, 1) < 0)
        goto cleanup;
    snprintf(what, what_size, "dataset config");
    if (write_dset(file, lcpl, "config", H5T_STD_U8LE, H5T_NATIVE_UCHAR, 1, &len, s->config) < 0)
        goto cleanup;
    for (size_t i = 0; i < ckpt_n_state_fields; i++) {
        const struct ckpt_field *f = &ckpt_state_fields[i];
        const void *p = (const char *)&s->state + f->offset;
        hid_t ft = f->type == CKPT_U64 ? H5T_STD_U64LE : f->type == CKPT_I32 ? H5T_STD_I32LE : H5T_IEEE_F64LE;
        hid_t mt = f->type == CKPT_U64 ? H5T_NATIVE_UINT64
                 : f->type == CKPT_I32 ? H5T_NATIVE_INT32 : H5T_NATIVE_DOUBLE;
        snprintf(name, sizeof name, "state/%s", f->name);
        snprintf(what, what_size, "dataset %s", name);
        if (write_dset(file, lcpl, name, ft, mt, 1, &one, p) < 0)
            goto cleanup;
    }
    snprintf(what, what_size, "dataset state/config_hash");
    if (write_dset(file, lcpl, "state/config_hash", H5T_STD_U64LE, H5T_NATIVE_UINT64, 1, &one, &hash) < 0)
        goto cleanup;
    for (size_t i = 0; i < s->n_tensors; i++) {
        const struct glow_tensor *t = &s->tensors[i];
        hsize_t dims[4];
        for (int j = 0; j < t->ndim; j++)
            dims[j] = (hsize_t)t->shape[j];
        snprintf(name, sizeof name, "params/%s", t->name);
        snprintf(what, what_size, "dataset %s", name);
        herr_t e = t->kind == TENSOR_PARAM
                 ? write_dset(file, lcpl, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, t->ndim, dims,
                              s->params + t->offset)
                 : t->kind == TENSOR_BUF_F32
                 ? write_dset(file, lcpl, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, t->ndim, dims,
                              s->fbufs + t->offset)
                 : write_dset(file, lcpl, name, H5T_STD_I32LE, H5T_NATIVE_INT32, t->ndim, dims,
                              s->ibufs + t->offset);
        if (e < 0)
            goto cleanup;
        for (int k = 0; k < 3 && t->kind == TENSOR_PARAM; k++) {
            if (!arrays[k])
                continue;
            snprintf(name, sizeof name, "%s/%s", groups[k], t->name);
            snprintf(what, what_size, "dataset %s", name);
            if (write_dset(file, lcpl, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, t->ndim, dims,
                           arrays[k] + t->offset) < 0)
                goto cleanup;
        }
    }
    rc = 0;
cleanup:
    if (lcpl >= 0) H5Pclose(lcpl);
    return rc;
}

/* fsync of a file or directory by path; -1 with errno on failure. */
static int fsync_path(const char *p, int flags)
{
    int fd = open(p, flags), rc, saved;
    if (fd < 0)
        return -1;
    rc = fsync(fd);
    saved = errno;
    if (close(fd) != 0 && rc == 0)
        return -1;
    errno = saved;
    return rc;
}

static int cmp_step_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* The steps of dir's checkpoint files, newest first (*steps malloc'd). -1 if dir
 * cannot be read. */
static int list_steps(const char *dir, uint64_t **steps, size_t *n)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t cap = 16;
    uint64_t step;

    *n = 0;
    *steps = NULL;
    if (!d)
        return -1;
    *steps = ft_malloc(cap * sizeof **steps);
    while ((e = readdir(d)) != NULL) {
        if (!checkpoint_name_step(e->d_name, &step))
            continue;
        if (*n == cap) {
            cap *= 2;
            *steps = realloc(*steps, cap * sizeof **steps);
            FT_CHECK(*steps != NULL, "out of memory listing %s", dir);
        }
        (*steps)[(*n)++] = step;
    }
    closedir(d);
    qsort(*steps, *n, sizeof **steps, cmp_step_desc);
    return 0;
}

static void ckpt_path(char *buf, size_t size, const char *dir, uint64_t step)
{
    int len = snprintf(buf, size, "%s/ckpt-%09llu.h5", dir, (unsigned long long)step);
    FT_CHECK(len > 0 && (size_t)len < size, "checkpoint path in %s too long", dir);
}

/* Keeps the newest keep_last files of step ≤ newest and multiples of keep_every;
 * deletes the other older ones. Failures to delete are warnings. */
static void apply_retention(const char *dir, uint64_t newest, unsigned keep_last, uint64_t keep_every)
{
    uint64_t *steps = NULL;
    size_t n = 0, kept = 0;
    char path[PATH_MAX_LEN];

    if (list_steps(dir, &steps, &n) != 0) {
        ft_warn("checkpoint retention: cannot list %s: %s", dir, strerror(errno));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (steps[i] > newest)
            continue;   /* from a run that fell back past it: not ours to judge */
        if (kept < keep_last) {
            kept++;
            continue;
        }
        if (keep_every > 0 && steps[i] % keep_every == 0)
            continue;
        ckpt_path(path, sizeof path, dir, steps[i]);
        if (unlink(path) != 0)
            ft_warn("checkpoint retention: cannot delete %s: %s", path, strerror(errno));
    }
    free(steps);
}

int checkpoint_write(const char *dir, const struct ckpt_snapshot *s, unsigned keep_last,
                     uint64_t keep_every, double *seconds, struct ft_err *err)
{
    int rc = FT_ERR_IO, fd;
    double t0 = now_s();
    struct h5util_quiet q;
    struct ft_err verr;
    char path[PATH_MAX_LEN], tmp[PATH_MAX_LEN], what[200], detail[256];
    hid_t fapl = H5I_INVALID_HID, file = H5I_INVALID_HID;
    int tmp_exists = 0;

    FT_CHECK(s->taken, "checkpoint_write of a snapshot never taken");
    FT_CHECK(keep_last >= 1, "keep_last must be >= 1");
    ckpt_path(path, sizeof path, dir, s->state.step);
    snprintf(tmp, sizeof tmp, "%s/.ckpt-%09llu.h5.tmp", dir, (unsigned long long)s->state.step);
    h5util_quiet_begin(&q);
    /* Created by hand first so a missing or read-only directory gives errno's words. */
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        ft_err_set(err, "%s: cannot create %s: %s", path, tmp, strerror(errno));
        goto cleanup;
    }
    close(fd);
    tmp_exists = 1;
    /* v1.8 object headers carry checksums; v1.10 at most, so HDF5 1.10 readers open it. */
    fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fapl_sec2(fapl) < 0 ||
        H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V110) < 0) {
        h5util_err_detail(detail, sizeof detail);
        ft_err_set(err, "%s: cannot set up HDF5 file access (%s)", path, detail);
        goto cleanup;
    }
    file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (file < 0) {
        h5util_err_detail(detail, sizeof detail);
        ft_err_set(err, "%s: cannot create HDF5 file %s (%s)", path, tmp, detail);
        goto cleanup;
    }
    if (write_contents(file, s, what, sizeof what) < 0) {
        h5util_err_detail(detail, sizeof detail);
        ft_err_set(err, "%s: writing %s failed (%s)", path, what, detail);
        goto cleanup;
    }
    herr_t closed = H5Fclose(file);
    file = H5I_INVALID_HID;
    if (closed < 0) {
        h5util_err_detail(detail, sizeof detail);
        ft_err_set(err, "%s: closing %s failed (%s)", path, tmp, detail);
        goto cleanup;
    }
    if (fsync_path(tmp, O_RDONLY) != 0) {
        ft_err_set(err, "%s: fsync of %s failed: %s", path, tmp, strerror(errno));
        goto cleanup;
    }
    if (rename(tmp, path) != 0) {
        ft_err_set(err, "%s: cannot rename %s to it: %s", path, tmp, strerror(errno));
        goto cleanup;
    }
    tmp_exists = 0;
    if (fsync_path(dir, O_RDONLY | O_DIRECTORY) != 0) {
        ft_err_set(err, "%s: fsync of directory %s failed: %s", path, dir, strerror(errno));
        goto cleanup;   /* in place but maybe not durable: older files stay */
    }
    if (checkpoint_verify(path, &verr) != FT_OK) {
        ft_err_set(err, "%s: verification after writing failed, file removed (%s)", path, verr.msg);
        unlink(path);
        goto cleanup;
    }
    apply_retention(dir, s->state.step, keep_last, keep_every);
    rc = FT_OK;
cleanup:
    if (file >= 0) H5Fclose(file);
    if (fapl >= 0) H5Pclose(fapl);
    h5util_quiet_end(&q);
    if (tmp_exists)
        unlink(tmp);
    if (seconds)
        *seconds = now_s() - t0;
    return rc;
}

/* ---------- newest valid checkpoint ---------- */

/* ".ckpt-…h5.tmp": a write that never committed; never loaded. */
static void remove_stale_tmp(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[PATH_MAX_LEN];

    if (!d)
        return;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, ".ckpt-", 6) != 0 || len < 13 || strcmp(e->d_name + len - 7, ".h5.tmp") != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) == 0)
            ft_log("checkpoint: removed %s, a write that never committed", path);
        else
            ft_warn("checkpoint: cannot remove %s: %s", path, strerror(errno));
    }
    closedir(d);
}

int checkpoint_load_latest(const char *dir, const struct config *model_cfg, struct glow *g,
                           struct optim *o, struct train_state *st, char *path, size_t path_size,
                           struct ft_err *err)
{
    int rc = FT_ERR_CKPT;
    uint64_t *steps = NULL;
    size_t n = 0;
    char p[PATH_MAX_LEN];
    struct ft_err e;

    remove_stale_tmp(dir);
    if (list_steps(dir, &steps, &n) != 0) {
        ft_err_set(err, "%s: no valid checkpoint (cannot read the directory: %s)", dir, strerror(errno));
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) {
        ckpt_path(p, sizeof p, dir, steps[i]);
        rc = checkpoint_load(p, model_cfg, g, o, st, NULL, &e);
        if (rc == FT_OK) {
            FT_CHECK(strlen(p) < path_size, "path buffer of %zu bytes for %s", path_size, p);
            snprintf(path, path_size, "%s", p);
            goto cleanup;
        }
        if (rc == FT_ERR_CONFIG) {
            /* intact but of another model or format: the run directory is not this run's */
            ft_err_set(err, "%s", e.msg);
            goto cleanup;
        }
        ft_warn("checkpoint %s; falling back to %s", e.msg,
                i + 1 < n ? "the previous one" : "none (no older checkpoint)");
    }
    rc = FT_ERR_CKPT;
    if (n == 0)
        ft_err_set(err, "%s: no valid checkpoint (none there)", dir);
    else
        ft_err_set(err, "%s: no valid checkpoint (%zu found, none loads)", dir, n);
cleanup:
    free(steps);
    return rc;
}
