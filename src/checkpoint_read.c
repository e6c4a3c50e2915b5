/* Checkpoint reading: the state fields and file naming both sides share; format,
 * stored config, state and checksum validation, then
 * the tensor table against the model, then loading into the model and optimizer
 * (distributed.md §2.8–2.9; layout in include/checkpoint.h). Every check and a
 * read of every dataset (which runs the Fletcher32 filter) happen before anything
 * is written into the caller's model, so a refused file leaves it as it was.
 * Damage is FT_ERR_CKPT, an intact file of another model or version FT_ERR_CONFIG.
 * HDF5 errors are silenced and turned into one line "<path>: <reason>". */
#include "checkpoint.h"

#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "h5util.h"

#define BLOCK_ELEMS ((hsize_t)1 << 20)
/* The model's arenas in memory: float32, or float64 in the FT_REAL_DOUBLE build
 * of the tools (HDF5 converts the stored float32 values exactly). */
#ifdef FT_REAL_DOUBLE
#define REAL_MTYPE H5T_NATIVE_DOUBLE
#else
#define REAL_MTYPE H5T_NATIVE_FLOAT
#endif

#define FIELD(n, t) { #n, t, offsetof(struct train_state, n) }
const struct ckpt_field ckpt_state_fields[] = {
    FIELD(step, CKPT_U64), FIELD(epoch, CKPT_U64), FIELD(pos, CKPT_U64),
    FIELD(images_seen, CKPT_U64), FIELD(skipped, CKPT_U64), FIELD(bad_run, CKPT_U64),
    FIELD(opt_t, CKPT_U64), FIELD(seed, CKPT_U64), FIELD(ddi_done, CKPT_I32),
    FIELD(world_size, CKPT_I32), FIELD(best_test_bpd, CKPT_F64), FIELD(slurm_job_id, CKPT_U64),
    FIELD(slurm_restart_count, CKPT_U64), FIELD(wall_s, CKPT_F64),
    FIELD(log_loss, CKPT_F64), FIELD(log_count, CKPT_F64),
    FIELD(log_bits_y, CKPT_F64), FIELD(log_errors, CKPT_F64),
};
#undef FIELD
const size_t ckpt_n_state_fields = sizeof ckpt_state_fields / sizeof ckpt_state_fields[0];

uint64_t checkpoint_text_hash(const char *text, size_t len)
{
    uint64_t h = UINT64_C(14695981039346656037);   /* FNV-1a 64, as config_hash */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)text[i]) * UINT64_C(1099511628211);
    return h;
}

int checkpoint_name_step(const char *name, uint64_t *step)
{
    const char *p = name + 5;
    uint64_t v = 0;
    size_t digits = 0;

    if (strncmp(name, "ckpt-", 5) != 0)
        return 0;
    for (; *p >= '0' && *p <= '9'; p++, digits++) {
        if (v > (UINT64_MAX - 9) / 10)
            return 0;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (digits < 9 || strcmp(p, ".h5") != 0)
        return 0;
    *step = v;
    return 1;
}

/* What was read from a file before the model is involved. */
struct reader {
    const char *path;
    hid_t file;
    int64_t version;
    char *config;
    size_t config_len;
    struct config cfg;          /* the stored config, loaded */
    uint64_t config_hash;
    struct train_state st;
};

static void dtype_name(hid_t type, char *buf, size_t size)
{
    H5T_class_t cls = H5Tget_class(type);
    size_t bytes = H5Tget_size(type);
    if (cls == H5T_FLOAT && (bytes == 4 || bytes == 8))
        snprintf(buf, size, "float%zu", 8 * bytes);
    else if (cls == H5T_INTEGER)
        snprintf(buf, size, "%sint%zu", H5Tget_sign(type) == H5T_SGN_NONE ? "u" : "", 8 * bytes);
    else
        snprintf(buf, size, "class-%d/%zu-byte", (int)cls, bytes);
}

static void shape_str(char *buf, size_t size, int ndim, const hsize_t *dims)
{
    size_t at = 0;
    at += (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && at < size; i++)
        at += (size_t)snprintf(buf + at, size - at, "%s%llu", i ? "," : "", (unsigned long long)dims[i]);
    if (at < size)
        snprintf(buf + at, size - at, "]");
}

/* Opens dataset name and checks its dtype (expected like "float32") and, if
 * ndim ≥ 0, its rank and dims. Returns the dataset or H5I_INVALID_HID with err
 * set ("<path>: <what> ..."). what names it in messages. */
static hid_t open_checked(const struct reader *r, const char *name, const char *what, const char *dtype,
                          int ndim, const hsize_t *dims, struct ft_err *err)
{
    hid_t d = H5Dopen2(r->file, name, H5P_DEFAULT), type = H5I_INVALID_HID, space = H5I_INVALID_HID;
    hsize_t got[H5S_MAX_RANK];
    char tn[32], s1[96], s2[96], detail[256];
    int ok = 0, rank;

    if (d < 0) {
        h5util_err_detail(detail, sizeof detail);
        ft_err_set(err, "%s: %s is missing or unreadable (%s)", r->path, what, detail);
        return H5I_INVALID_HID;
    }
    type = H5Dget_type(d);
    space = H5Dget_space(d);
    if (type < 0 || space < 0) {
        ft_err_set(err, "%s: %s: cannot read its type or shape", r->path, what);
        goto cleanup;
    }
    dtype_name(type, tn, sizeof tn);
    if (strcmp(tn, dtype) != 0) {
        ft_err_set(err, "%s: %s is %s in the checkpoint, %s expected", r->path, what, tn, dtype);
        goto cleanup;
    }
    rank = H5Sget_simple_extent_ndims(space);
    if (rank < 0 || rank > H5S_MAX_RANK || H5Sget_simple_extent_dims(space, got, NULL) < 0) {
        ft_err_set(err, "%s: %s: cannot read its shape", r->path, what);
        goto cleanup;
    }
    if (ndim >= 0) {
        int same = rank == ndim;
        for (int i = 0; same && i < ndim; i++)
            same = got[i] == dims[i];
        if (!same) {
            shape_str(s1, sizeof s1, rank, got);
            shape_str(s2, sizeof s2, ndim, dims);
            ft_err_set(err, "%s: %s has shape %s in the checkpoint but %s in the model", r->path, what,
                       s1, s2);
            goto cleanup;
        }
    }
    ok = 1;
cleanup:
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    if (!ok) {
        H5Dclose(d);
        d = H5I_INVALID_HID;
    }
    return d;
}

/* Reads a whole checked dataset into buf with memory type mtype. */
static int read_all(const struct reader *r, hid_t d, const char *what, hid_t mtype, void *buf,
                    struct ft_err *err)
{
    char detail[256];
    if (H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        h5util_err_detail(detail, sizeof detail);
        ft_err_set(err, "%s: %s: read failed, corrupt data (%s)", r->path, what, detail);
        return FT_ERR_CKPT;
    }
    return FT_OK;
}

/* ---------- the parts every reader checks ---------- */

static int reader_open(struct reader *r, const char *path, struct ft_err *err)
{
    char detail[256], fmt[64];
    int got;

    memset(r, 0, sizeof *r);
    r->file = H5I_INVALID_HID;
    r->path = path;
    if (access(path, R_OK) != 0) {
        ft_err_set(err, "%s: cannot read: %s", path, strerror(errno));
        return FT_ERR_CKPT;
    }
    r->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (r->file < 0) {
        h5util_err_detail(detail, sizeof detail);
        ft_err_set(err, "%s: truncated or not HDF5 (%s)", path, detail);
        return FT_ERR_CKPT;
    }
    got = h5util_read_str_attr(r->file, "format", fmt, sizeof fmt);
    if (got != 1 || strcmp(fmt, CHECKPOINT_FORMAT) != 0) {
        ft_err_set(err, "%s: not a flowtrain checkpoint (root attribute format is %s%s%s)", path,
                   got == 1 ? "'" : "", got == 1 ? fmt : got == 0 ? "missing" : "unreadable",
                   got == 1 ? "'" : "");
        return FT_ERR_CKPT;
    }
    got = h5util_read_i64_attr(r->file, "format_version", &r->version, 1);
    if (got != 1) {
        ft_err_set(err, "%s: root attribute format_version is %s", path, got == 0 ? "missing" : "unreadable");
        return FT_ERR_CKPT;
    }
    if (r->version != CHECKPOINT_FORMAT_VERSION) {
        ft_err_set(err, "%s: format_version %lld, this build reads version %d", path,
                   (long long)r->version, CHECKPOINT_FORMAT_VERSION);
        return FT_ERR_CONFIG;
    }
    return FT_OK;
}

static void reader_close(struct reader *r)
{
    if (r->file >= 0)
        H5Fclose(r->file);
    r->file = H5I_INVALID_HID;
    free(r->config);
    r->config = NULL;
}

static int reader_config(struct reader *r, struct ft_err *err)
{
    int rc = FT_ERR_CKPT;
    hid_t d = open_checked(r, "config", "dataset config", "uint8", -1, NULL, err);
    hid_t space = H5I_INVALID_HID;
    hssize_t n;
    struct ft_err e;
    char src[64];

    if (d < 0)
        return FT_ERR_CKPT;
    space = H5Dget_space(d);
    n = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
    if (n <= 0 || H5Sget_simple_extent_ndims(space) != 1) {
        ft_err_set(err, "%s: dataset config is not a non-empty byte string", r->path);
        goto cleanup;
    }
    r->config_len = (size_t)n;
    r->config = ft_malloc(r->config_len + 1);
    if (read_all(r, d, "dataset config", H5T_NATIVE_UCHAR, r->config, err) != FT_OK)
        goto cleanup;
    if (memchr(r->config, '\0', r->config_len)) {
        ft_err_set(err, "%s: dataset config contains a NUL byte", r->path);
        goto cleanup;
    }
    snprintf(src, sizeof src, "stored config");
    if (config_load_string(&r->cfg, r->config, r->config_len, src, &e) != FT_OK) {
        /* intact (checksummed) but not for this build's schema */
        ft_err_set(err, "%s: the stored config does not load (%s)", r->path, e.msg);
        rc = FT_ERR_CONFIG;
        goto cleanup;
    }
    rc = FT_OK;
cleanup:
    if (space >= 0) H5Sclose(space);
    H5Dclose(d);
    return rc;
}

/* Reads one [1] state dataset of the given dtype into p. */
static int read_scalar(struct reader *r, const char *name, const char *dtype, hid_t mtype, void *p,
                       struct ft_err *err)
{
    hsize_t one = 1;
    char what[96];
    snprintf(what, sizeof what, "dataset %s", name);
    hid_t d = open_checked(r, name, what, dtype, 1, &one, err);
    if (d < 0)
        return FT_ERR_CKPT;
    int rc = read_all(r, d, what, mtype, p, err);
    H5Dclose(d);
    return rc;
}

/* State, config hash and the naming rule (the name's step is state/step). */
static int reader_state(struct reader *r, struct ft_err *err)
{
    char name[96];
    const char *base = strrchr(r->path, '/');
    uint64_t name_step;

    for (size_t i = 0; i < ckpt_n_state_fields; i++) {
        const struct ckpt_field *f = &ckpt_state_fields[i];
        void *p = (char *)&r->st + f->offset;
        snprintf(name, sizeof name, "state/%s", f->name);
        int rc = f->type == CKPT_U64 ? read_scalar(r, name, "uint64", H5T_NATIVE_UINT64, p, err)
               : f->type == CKPT_I32 ? read_scalar(r, name, "int32", H5T_NATIVE_INT32, p, err)
               : read_scalar(r, name, "float64", H5T_NATIVE_DOUBLE, p, err);
        if (rc != FT_OK)
            return rc;
    }
    if (read_scalar(r, "state/config_hash", "uint64", H5T_NATIVE_UINT64, &r->config_hash, err) != FT_OK)
        return FT_ERR_CKPT;
    if (r->config_hash != checkpoint_text_hash(r->config, r->config_len)) {
        ft_err_set(err, "%s: state/config_hash does not match the stored config", r->path);
        return FT_ERR_CKPT;
    }
    base = base ? base + 1 : r->path;
    if (checkpoint_name_step(base, &name_step) && name_step != r->st.step) {
        ft_err_set(err, "%s: the name says step %llu but state/step is %llu", r->path,
                   (unsigned long long)name_step, (unsigned long long)r->st.step);
        return FT_ERR_CKPT;
    }
    return FT_OK;
}

/* ---------- reading every dataset ---------- */

struct visit {
    struct reader *r;
    struct ckpt_info *info;     /* NULL: verify only */
    size_t cap;
    struct ft_err *err;
    double *buf;                /* read buffer, reused across datasets */
    size_t buf_cap;
};

static int has_fletcher32(hid_t d)
{
    hid_t dcpl = H5Dget_create_plist(d);
    int n = dcpl >= 0 ? H5Pget_nfilters(dcpl) : -1, found = 0;
    for (int i = 0; i < n && !found; i++) {
        unsigned flags = 0, cd[8], filter_config = 0;
        size_t ncd = 8;
        char fname[32];
        found = H5Pget_filter2(dcpl, (unsigned)i, &flags, &ncd, cd, sizeof fname, fname, &filter_config)
                == H5Z_FILTER_FLETCHER32;
    }
    if (dcpl >= 0)
        H5Pclose(dcpl);
    return found;
}

/* Reads dataset d in blocks of rows (running its filters) as float (f32: a
 * float32 dataset, read without conversion) or double, and its L2 norm into *l2. */
static int read_blocks(struct visit *v, hid_t d, const char *name, int ndim, const hsize_t *dims,
                       int f32, double *l2)
{
    int rc = FT_ERR_CKPT;
    hsize_t rest = 1, rows, off[H5S_MAX_RANK] = {0}, cnt[H5S_MAX_RANK];
    hid_t fs = H5Dget_space(d), ms = H5I_INVALID_HID;
    double sum = 0;
    char detail[256];

    for (int i = 1; i < ndim; i++)
        rest *= dims[i];
    rows = rest >= BLOCK_ELEMS ? 1 : BLOCK_ELEMS / rest;
    rows = rows > dims[0] ? dims[0] : rows;
    if ((size_t)(rows * rest) > v->buf_cap) {
        free(v->buf);
        v->buf_cap = (size_t)(rows * rest);
        v->buf = ft_malloc(v->buf_cap * sizeof *v->buf);
    }
    for (int i = 0; i < ndim; i++)
        cnt[i] = dims[i];
    for (hsize_t at = 0; at < dims[0]; at += rows) {
        off[0] = at;
        cnt[0] = dims[0] - at < rows ? dims[0] - at : rows;
        hsize_t n = cnt[0] * rest;
        /* same rank as the file selection: HDF5 then maps whole chunks, not elements */
        ms = H5Screate_simple(ndim, cnt, NULL);
        if (fs < 0 || ms < 0 || H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL) < 0 ||
            H5Dread(d, f32 ? H5T_NATIVE_FLOAT : H5T_NATIVE_DOUBLE, ms, fs, H5P_DEFAULT, v->buf) < 0) {
            h5util_err_detail(detail, sizeof detail);
            ft_err_set(v->err, "%s: dataset %s: read failed, corrupt data (%s)", v->r->path, name, detail);
            goto cleanup;
        }
        H5Sclose(ms);
        ms = H5I_INVALID_HID;
        if (f32) {
            const float *x = (const float *)v->buf;
            for (hsize_t i = 0; i < n; i++)
                sum += (double)x[i] * x[i];
        } else {
            for (hsize_t i = 0; i < n; i++)
                sum += v->buf[i] * v->buf[i];
        }
    }
    *l2 = sqrt(sum);
    rc = FT_OK;
cleanup:
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    return rc;
}

/* A moment or EMA dataset needs the parameter of the same name and shape. */
static int check_mirror(const struct reader *r, const char *name, int ndim, const hsize_t *dims,
                        struct ft_err *err)
{
    static const char *const prefixes[3] = { "adam_m/", "adam_v/", "ema/" };
    char pname[160], what[192], s1[96], s2[96];
    hsize_t pdims[H5S_MAX_RANK];
    for (int k = 0; k < 3; k++) {
        size_t len = strlen(prefixes[k]);
        if (strncmp(name, prefixes[k], len) != 0)
            continue;
        snprintf(pname, sizeof pname, "params/%s", name + len);
        snprintf(what, sizeof what, "dataset %s (the parameter of %s)", pname, name);
        hid_t d = open_checked(r, pname, what, "float32", -1, NULL, err);
        if (d < 0)
            return FT_ERR_CKPT;
        hid_t space = H5Dget_space(d);
        int prank = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1, same = prank == ndim;
        if (same && H5Sget_simple_extent_dims(space, pdims, NULL) < 0)
            same = 0;
        for (int i = 0; same && i < ndim; i++)
            same = pdims[i] == dims[i];
        if (space >= 0) H5Sclose(space);
        H5Dclose(d);
        if (!same) {
            shape_str(s1, sizeof s1, ndim, dims);
            shape_str(s2, sizeof s2, prank < 0 ? 0 : prank, pdims);
            ft_err_set(err, "%s: dataset %s has shape %s but %s has %s", r->path, name, s1, pname, s2);
            return FT_ERR_CKPT;
        }
    }
    return FT_OK;
}

static int verify_dataset(struct visit *v, hid_t d, const char *name)
{
    struct reader *r = v->r;
    hid_t type = H5Dget_type(d), space = H5Dget_space(d);
    hsize_t dims[H5S_MAX_RANK];
    int ndim = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1, rc = FT_ERR_CKPT;
    H5T_class_t cls = type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
    struct ckpt_entry ent;

    memset(&ent, 0, sizeof ent);
    if (ndim < 1 || ndim > 4 || H5Sget_simple_extent_dims(space, dims, NULL) < 0 ||
        (cls != H5T_FLOAT && cls != H5T_INTEGER)) {
        ft_err_set(v->err, "%s: dataset %s has an unexpected type or rank", r->path, name);
        goto cleanup;
    }
    if (!has_fletcher32(d)) {
        ft_err_set(v->err, "%s: dataset %s has no Fletcher32 checksum", r->path, name);
        goto cleanup;
    }
    if (check_mirror(r, name, ndim, dims, v->err) != FT_OK)
        goto cleanup;
    if (read_blocks(v, d, name, ndim, dims, cls == H5T_FLOAT && H5Tget_size(type) == 4, &ent.l2) != FT_OK)
        goto cleanup;
    if (v->info) {
        snprintf(ent.name, sizeof ent.name, "%s", name);
        dtype_name(type, ent.dtype, sizeof ent.dtype);
        ent.ndim = ndim;
        for (int i = 0; i < ndim; i++)
            ent.shape[i] = dims[i];
        if (v->info->n_entries == v->cap) {
            v->cap = v->cap ? 2 * v->cap : 64;
            v->info->entries = realloc(v->info->entries, v->cap * sizeof *v->info->entries);
            FT_CHECK(v->info->entries != NULL, "out of memory for the checkpoint listing");
        }
        v->info->entries[v->info->n_entries++] = ent;
    }
    rc = FT_OK;
cleanup:
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    return rc;
}

static herr_t visit_cb(hid_t root, const char *name, const H5L_info_t *li, void *data)
{
    struct visit *v = data;
    char detail[256];
    int rc;

    if (li->type != H5L_TYPE_HARD) {
        ft_err_set(v->err, "%s: %s is a %s link, not an object", v->r->path, name,
                   li->type == H5L_TYPE_SOFT ? "soft" : "external");
        return -1;
    }
    hid_t obj = H5Oopen(root, name, H5P_DEFAULT);
    if (obj < 0) {
        h5util_err_detail(detail, sizeof detail);
        ft_err_set(v->err, "%s: object %s cannot be opened (%s)", v->r->path, name, detail);
        return -1;
    }
    switch (H5Iget_type(obj)) {
    case H5I_GROUP:
        rc = FT_OK;
        break;
    case H5I_DATASET:
        rc = verify_dataset(v, obj, name);
        break;
    default:
        ft_err_set(v->err, "%s: object %s is neither a group nor a dataset", v->r->path, name);
        rc = FT_ERR_CKPT;
        break;
    }
    H5Oclose(obj);
    return rc == FT_OK ? 0 : -1;
}

/* Reads every dataset of the file (info: NULL or the listing to fill). */
static int verify_all(struct reader *r, struct ckpt_info *info, struct ft_err *err)
{
    struct ft_err e = {{0}};
    struct visit v = { r, info, 0, &e, NULL, 0 };
    char detail[256];
    herr_t walked = H5Lvisit(r->file, H5_INDEX_NAME, H5_ITER_INC, visit_cb, &v);

    free(v.buf);
    if (walked < 0) {
        if (!e.msg[0]) {
            h5util_err_detail(detail, sizeof detail);
            ft_err_set(&e, "%s: walking the file failed, corrupt structure (%s)", r->path, detail);
        }
        ft_err_set(err, "%s", e.msg);
        return FT_ERR_CKPT;
    }
    return FT_OK;
}

int checkpoint_inspect(const char *path, struct ckpt_info *info, struct ft_err *err)
{
    struct reader r;
    struct h5util_quiet q;
    int rc;

    if (info)
        memset(info, 0, sizeof *info);
    h5util_quiet_begin(&q);
    rc = reader_open(&r, path, err);
    if (rc == FT_OK)
        rc = reader_config(&r, err);
    if (rc == FT_OK)
        rc = reader_state(&r, err);
    if (rc == FT_OK)
        rc = verify_all(&r, info, err);
    if (rc == FT_OK && info) {
        info->format_version = r.version;
        info->state = r.st;
        info->config_hash = r.config_hash;
        info->config = r.config;
        r.config = NULL;
    }
    reader_close(&r);
    h5util_quiet_end(&q);
    if (rc != FT_OK && info)
        checkpoint_info_free(info);
    return rc;
}

void checkpoint_info_free(struct ckpt_info *info)
{
    free(info->config);
    free(info->entries);
    memset(info, 0, sizeof *info);
}

int checkpoint_verify(const char *path, struct ft_err *err)
{
    return checkpoint_inspect(path, NULL, err);
}

/* ---------- against the model ---------- */

/* "params" etc.: dtype of tensor t's datasets. */
static const char *tensor_dtype(const struct glow_tensor *t)
{
    return t->kind == TENSOR_BUF_I32 ? "int32" : "float32";
}

static void tensor_dims(const struct glow_tensor *t, hsize_t *dims)
{
    for (int i = 0; i < t->ndim; i++)
        dims[i] = (hsize_t)t->shape[i];
}

/* Checks group/<name> of every tensor (params: all; else parameters only). */
static int check_tensors(const struct reader *r, const struct glow *g, const char *group,
                         struct ft_err *err)
{
    char name[160], what[200];
    hsize_t dims[4];
    for (size_t i = 0; i < g->n_tensors; i++) {
        const struct glow_tensor *t = &g->tensors[i];
        if (strcmp(group, "params") != 0 && t->kind != TENSOR_PARAM)
            continue;
        snprintf(name, sizeof name, "%s/%s", group, t->name);
        snprintf(what, sizeof what, "tensor %s", name);
        tensor_dims(t, dims);
        hid_t d = open_checked(r, name, what, tensor_dtype(t), t->ndim, dims, err);
        if (d < 0)
            return FT_ERR_CONFIG;
        H5Dclose(d);
    }
    return FT_OK;
}

struct extra {
    const struct glow *g;
    int params_group;
    char name[160];             /* first dataset the model lacks */
};

static herr_t extra_cb(hid_t grp, const char *name, const H5L_info_t *li, void *data)
{
    struct extra *x = data;
    const struct glow_tensor *t;
    (void)li;
    hid_t obj = H5Oopen(grp, name, H5P_DEFAULT);
    int is_dset = obj >= 0 && H5Iget_type(obj) == H5I_DATASET;
    if (obj >= 0)
        H5Oclose(obj);
    if (!is_dset)
        return 0;   /* groups; unreadable objects are verify_all's to report */
    t = glow_find(x->g, name);
    if (!t || (!x->params_group && t->kind != TENSOR_PARAM)) {
        snprintf(x->name, sizeof x->name, "%s", name);
        return 1;
    }
    return 0;
}

/* A tensor in the file that the model lacks (so a bigger model is refused too). */
static int check_extras(const struct reader *r, const struct glow *g, const char *group,
                        struct ft_err *err)
{
    struct extra x = { g, strcmp(group, "params") == 0, "" };
    hid_t grp = H5Gopen2(r->file, group, H5P_DEFAULT);
    herr_t e;
    if (grp < 0) {
        ft_err_set(err, "%s: group %s is missing", r->path, group);
        return FT_ERR_CONFIG;
    }
    e = H5Lvisit(grp, H5_INDEX_NAME, H5_ITER_INC, extra_cb, &x);
    H5Gclose(grp);
    if (e > 0) {
        ft_err_set(err, "%s: tensor %s/%s is in the checkpoint but not in the model", r->path, group,
                   x.name);
        return FT_ERR_CONFIG;
    }
    return FT_OK;
}

static int group_exists(const struct reader *r, const char *group)
{
    return H5Lexists(r->file, group, H5P_DEFAULT) > 0;
}

/* Tensors, moments and EMA against g and o, with the config key (if any) that
 * differs from model_cfg appended to a tensor mismatch. Runs after verify_all, so
 * every object is known readable: a failure here is another model (FT_ERR_CONFIG). */
static int check_model(const struct reader *r, const struct config *model_cfg, const struct glow *g,
                       const struct optim *o, struct ft_err *err)
{
    char key[FT_CONFIG_KEY_MAX] = "";
    int cfg_differs = model_cfg && !config_model_equal(&r->cfg, model_cfg, key, sizeof key);
    static const char *const groups[3] = { "params", "adam_m", "adam_v" };
    int rc = FT_OK;

    for (int k = 0; k < 3 && rc == FT_OK; k++) {
        if (k > 0 && !o)
            break;
        if (k > 0 && !group_exists(r, groups[k])) {
            ft_err_set(err, "%s: optimizer moments %s are missing (saved without an optimizer)", r->path,
                       groups[k]);
            return FT_ERR_CONFIG;
        }
        rc = check_tensors(r, g, groups[k], err);
        if (rc == FT_OK)
            rc = check_extras(r, g, groups[k], err);
    }
    if (rc == FT_OK && o && o->ema_w && group_exists(r, "ema")) {
        rc = check_tensors(r, g, "ema", err);
        if (rc == FT_OK)
            rc = check_extras(r, g, "ema", err);
    }
    if (rc != FT_OK && cfg_differs) {
        size_t len = strlen(err->msg);
        snprintf(err->msg + len, sizeof err->msg - len, " (the stored config differs in %s)", key);
    }
    if (rc == FT_OK && cfg_differs) {
        ft_err_set(err, "%s: checkpoint of another model: the stored config differs in %s", r->path, key);
        rc = FT_ERR_CONFIG;
    }
    return rc;
}

/* Reads group/<name> of every tensor (params: all; else parameters only) into base. */
static int load_group(const struct reader *r, const struct glow *g, const char *group, float *base,
                      struct ft_err *err)
{
    char name[160], what[200];
    hsize_t dims[4];
    for (size_t i = 0; i < g->n_tensors; i++) {
        const struct glow_tensor *t = &g->tensors[i];
        int params = strcmp(group, "params") == 0;
        if (!params && t->kind != TENSOR_PARAM)
            continue;
        snprintf(name, sizeof name, "%s/%s", group, t->name);
        snprintf(what, sizeof what, "tensor %s", name);
        tensor_dims(t, dims);
        hid_t d = open_checked(r, name, what, tensor_dtype(t), t->ndim, dims, err);
        if (d < 0)
            return FT_ERR_CKPT;
        hid_t mtype = t->kind == TENSOR_BUF_I32 ? H5T_NATIVE_INT32 : REAL_MTYPE;
        int rc = params ? read_all(r, d, what, mtype, glow_tensor_data(g, t), err)
                        : read_all(r, d, what, H5T_NATIVE_FLOAT, base + t->offset, err);
        H5Dclose(d);
        if (rc != FT_OK)
            return rc;
    }
    return FT_OK;
}

int checkpoint_load(const char *path, const struct config *model_cfg, struct glow *g,
                    struct optim *o, struct train_state *st, char **cfg_text, struct ft_err *err)
{
    struct reader r;
    struct h5util_quiet q;
    char key[FT_CONFIG_KEY_MAX];
    int rc, file_ema;

    FT_CHECK(!o || o->n == g->n_params, "optimizer of %zu values for %zu parameters",
             o ? o->n : 0, g->n_params);
    if (cfg_text)
        *cfg_text = NULL;
    h5util_quiet_begin(&q);
    rc = reader_open(&r, path, err);
    if (rc == FT_OK)
        rc = reader_config(&r, err);
    if (rc == FT_OK)
        rc = reader_state(&r, err);
    if (rc == FT_OK)
        rc = verify_all(&r, NULL, err);
    if (rc == FT_OK)
        rc = check_model(&r, model_cfg, g, o, err);
    if (rc != FT_OK)
        goto cleanup;
    /* Everything is checked: only now is the caller's state overwritten. */
    file_ema = group_exists(&r, "ema");
    rc = load_group(&r, g, "params", NULL, err);
    if (rc == FT_OK && o)
        rc = load_group(&r, g, "adam_m", o->m, err);
    if (rc == FT_OK && o)
        rc = load_group(&r, g, "adam_v", o->v, err);
    if (rc == FT_OK && o && o->ema_w && file_ema)
        rc = load_group(&r, g, "ema", o->ema_w, err);
    if (rc != FT_OK)
        goto cleanup;   /* the file changed under us after verification */
    if (o) {
        o->t = r.st.opt_t;
        if (o->ema_w && !file_ema) {
            /* ema/(1−β^t) then equals θ: the average starts from the loaded weights. */
            float c = (float)(1.0 - pow(o->ema_beta, (double)o->t));
            for (size_t i = 0; i < g->n_params; i++)
                o->ema_w[i] = o->t ? g->params[i] * c : 0.0f;
            ft_log("checkpoint %s has no EMA weights: the EMA starts from its parameters", path);
        } else if (!o->ema_w && file_ema) {
            ft_log("checkpoint %s: its EMA weights are not used (EMA is off)", path);
        }
    }
    if (model_cfg && !config_equal(&r.cfg, model_cfg, key, sizeof key))
        ft_log("checkpoint %s: the running config differs from the stored one (first: %s); "
               "the running config applies", path, key);
    if (st)
        *st = r.st;
    if (cfg_text) {
        *cfg_text = r.config;
        r.config = NULL;
    }
cleanup:
    reader_close(&r);
    h5util_quiet_end(&q);
    return rc;
}
