/* Input readers of flowdata (include/convert.h): IDX through zlib's gzread (reads
 * gzip and plain alike), CIFAR-10 records (1 label byte + 3 planes of 32x32, R, G, B:
 * out[(y·32+x)·3+k] = rec[1 + k·1024 + y·32 + x]) and NumPy .npy with its header
 * dict parsed here. Every size is checked against the headers or the file length
 * before anything is written, and the end of each input is checked after the last read. */
#include "convert.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define IDX_MAX_IMAGE_BYTES ((size_t)1 << 28)
#define CIFAR_SIDE 32
#define CIFAR_PIXELS (3 * CIFAR_SIDE * CIFAR_SIDE)
#define CIFAR_RECORD (1 + CIFAR_PIXELS)

char *convert_strdup(const char *str)
{
    size_t n = strlen(str) + 1;
    char *d = ft_malloc(n);
    memcpy(d, str, n);
    return d;
}

static void init_source(struct convert_source *s, enum convert_kind kind)
{
    memset(s, 0, sizeof *s);
    s->kind = kind;
}

/* zlib's error text without the "path: " it prefixes. */
static const char *gz_msg(gzFile gz, const char *path, int *zerr)
{
    const char *m = gzerror(gz, zerr);
    size_t n = strlen(path);
    if (m && strncmp(m, path, n) == 0 && m[n] == ':' && m[n + 1] == ' ')
        m += n + 2;
    return m ? m : "unknown zlib error";
}

/* Reads exactly len bytes from gz; reports truncation or a gzip error. */
static int gz_read_exact(gzFile gz, const char *path, void *buf, size_t len, const char *what,
                         struct ft_err *err)
{
    size_t got = 0;
    while (got < len) {
        unsigned chunk = len - got > (1u << 30) ? (1u << 30) : (unsigned)(len - got);
        int r = gzread(gz, (char *)buf + got, chunk);
        if (r < 0) {
            int zerr;
            ft_err_set(err, "%s: corrupt gzip data while reading %s (%s)", path, what, gz_msg(gz, path, &zerr));
            return FT_ERR_DATA;
        }
        if (r == 0) {
            ft_err_set(err, "%s: truncated: %s: expected %zu bytes, got %zu", path, what, len, got);
            return FT_ERR_DATA;
        }
        got += (size_t)r;
    }
    return FT_OK;
}

/* After the data: nothing may follow, and a gzip stream must end cleanly (CRC checked). */
static int gz_expect_end(gzFile gz, const char *path, struct ft_err *err)
{
    unsigned char extra[256];
    size_t n = 0;
    int r, zerr;
    while ((r = gzread(gz, extra, sizeof extra)) > 0)
        n += (size_t)r;
    const char *m = gz_msg(gz, path, &zerr);   /* a cut gzip trailer is only a Z_BUF_ERROR */
    if (r < 0 || zerr != Z_OK) {
        ft_err_set(err, "%s: truncated or corrupt gzip stream at the end of the data (%s)", path, m);
        return FT_ERR_DATA;
    }
    if (n > 0) {
        ft_err_set(err, "%s: %zu unexpected bytes after the data (header sizes disagree with the file)",
                   path, n);
        return FT_ERR_DATA;
    }
    return FT_OK;
}

/* IDX header: 0, 0, type 0x08 (unsigned byte), ndim, then ndim big-endian u32 sizes. */
static int idx_header(gzFile gz, const char *path, int min_dims, int max_dims, uint32_t *dims, int *ndim,
                      const char *expect, struct ft_err *err)
{
    unsigned char m[4], d[4];
    if (gz_read_exact(gz, path, m, 4, "IDX magic number", err) != FT_OK)
        return FT_ERR_DATA;
    if (m[0] != 0 || m[1] != 0 || m[2] == 0) {
        ft_err_set(err, "%s: bad magic number 0x%02x%02x%02x%02x: not an IDX file", path, m[0], m[1], m[2], m[3]);
        return FT_ERR_DATA;
    }
    if (m[2] != 0x08) {
        ft_err_set(err, "%s: IDX element type 0x%02x is not unsigned byte (0x08)", path, m[2]);
        return FT_ERR_DATA;
    }
    if (m[3] < min_dims || m[3] > max_dims) {
        ft_err_set(err, "%s: IDX magic 0x%02x%02x%02x%02x says %d dimensions, expected %s", path, m[0], m[1],
                   m[2], m[3], m[3], expect);
        return FT_ERR_DATA;
    }
    *ndim = m[3];
    for (int i = 0; i < *ndim; i++) {
        if (gz_read_exact(gz, path, d, 4, "IDX header", err) != FT_OK)
            return FT_ERR_DATA;
        dims[i] = (uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3];
        if (dims[i] == 0) {
            ft_err_set(err, "%s: IDX dimension %d is 0", path, i);
            return FT_ERR_DATA;
        }
    }
    return FT_OK;
}

static gzFile gz_open(const char *path, struct ft_err *err)
{
    gzFile gz = gzopen(path, "rb");
    if (!gz) {
        ft_err_set(err, "%s: cannot open: %s", path, errno ? strerror(errno) : "out of memory");
        return NULL;
    }
    gzbuffer(gz, 1 << 17);
    return gz;
}

int convert_open_idx(struct convert_source *s, const char *images, const char *labels, struct ft_err *err)
{
    int rc = FT_ERR_DATA, ndim = 0;
    uint32_t dims[4] = {0, 0, 0, 1}, ldim[1];
    gzFile lgz = NULL;
    uint8_t *lbytes = NULL;

    init_source(s, CONVERT_IDX);
    s->gz = gz_open(images, err);
    if (!s->gz) {
        rc = FT_ERR_IO;
        goto cleanup;
    }
    if (idx_header(s->gz, images, 3, 4, dims, &ndim, "3 [N,rows,cols] or 4 [N,rows,cols,C] for images",
                   err) != FT_OK)
        goto cleanup;
    s->n = dims[0];
    s->h = dims[1];
    s->w = dims[2];
    s->c = ndim == 4 ? dims[3] : 1;
    if (s->h * s->w * s->c > IDX_MAX_IMAGE_BYTES) {
        ft_err_set(err, "%s: image size %zux%zux%zu is implausibly large", images, s->h, s->w, s->c);
        goto cleanup;
    }
    if (labels) {
        lgz = gz_open(labels, err);
        if (!lgz) {
            rc = FT_ERR_IO;
            goto cleanup;
        }
        if (idx_header(lgz, labels, 1, 1, ldim, &ndim, "1 [N] for labels", err) != FT_OK)
            goto cleanup;
        if (ldim[0] != s->n) {
            ft_err_set(err, "%s: has %" PRIu32 " labels but %s has %zu images", labels, ldim[0], images, s->n);
            goto cleanup;
        }
        lbytes = ft_malloc(s->n);
        if (gz_read_exact(lgz, labels, lbytes, s->n, "labels", err) != FT_OK ||
            gz_expect_end(lgz, labels, err) != FT_OK)
            goto cleanup;
        s->labels = ft_malloc(s->n * sizeof *s->labels);
        for (size_t i = 0; i < s->n; i++)
            s->labels[i] = lbytes[i];
        s->has_labels = 1;
    }
    s->paths = ft_malloc(sizeof *s->paths);
    s->paths[0] = convert_strdup(images);
    s->n_paths = 1;
    snprintf(s->desc, sizeof s->desc, "idx: %s%s%s", images, labels ? ", labels " : "", labels ? labels : "");
    rc = FT_OK;
cleanup:
    free(lbytes);
    if (lgz)
        gzclose(lgz);
    if (rc != FT_OK)
        convert_close(s);
    return rc;
}

int convert_open_cifar10(struct convert_source *s, char *const *files, size_t n_files, struct ft_err *err)
{
    int rc = FT_ERR_DATA;
    struct stat st;
    size_t len;

    init_source(s, CONVERT_CIFAR10);
    s->h = s->w = CIFAR_SIDE;
    s->c = 3;
    s->has_labels = 1;
    s->paths = ft_malloc(n_files * sizeof *s->paths);
    len = (size_t)snprintf(s->desc, sizeof s->desc, "cifar10:");
    for (size_t i = 0; i < n_files; i++) {
        unsigned char magic[2] = {0, 0};
        FILE *fp;
        s->paths[i] = convert_strdup(files[i]);
        s->n_paths = i + 1;
        fp = fopen(files[i], "rb");
        if (!fp || fstat(fileno(fp), &st) != 0) {
            ft_err_set(err, "%s: cannot open: %s", files[i], strerror(errno));
            if (fp)
                fclose(fp);
            rc = FT_ERR_IO;
            goto cleanup;
        }
        size_t got = fread(magic, 1, 2, fp);
        fclose(fp);
        if (got == 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
            ft_err_set(err, "%s: is gzip-compressed; extract the CIFAR-10 binary batches first", files[i]);
            goto cleanup;
        }
        if (!S_ISREG(st.st_mode) || st.st_size == 0 || st.st_size % CIFAR_RECORD != 0) {
            ft_err_set(err, "%s: size %lld is not a positive multiple of %d bytes (1 label byte + 3072 pixels);"
                       " not a CIFAR-10 binary batch, or truncated", files[i], (long long)st.st_size,
                       CIFAR_RECORD);
            goto cleanup;
        }
        s->n += (size_t)st.st_size / CIFAR_RECORD;
        if (len < sizeof s->desc)
            len += (size_t)snprintf(s->desc + len, sizeof s->desc - len, " %s", files[i]);
    }
    if (n_files == 0) {
        ft_err_set(err, "cifar10: no input files given");
        goto cleanup;
    }
    s->buf = ft_malloc(CIFAR_RECORD);
    s->buf_size = CIFAR_RECORD;
    s->path_i = (size_t)-1;      /* the first read opens paths[0] */
    rc = FT_OK;
cleanup:
    if (rc != FT_OK)
        convert_close(s);
    return rc;
}

/* Next CIFAR-10 records; moves through the files, each checked to end on a record. */
static int cifar_read(struct convert_source *s, uint8_t *images, int32_t *labels, size_t count,
                      struct ft_err *err)
{
    for (size_t i = 0; i < count; i++) {
        while (!s->fp || s->left_in_file == 0) {
            if (s->fp) {
                int extra = fgetc(s->fp);
                fclose(s->fp);
                s->fp = NULL;
                if (extra != EOF) {
                    ft_err_set(err, "%s: grew while being read", s->paths[s->path_i]);
                    return FT_ERR_DATA;
                }
            }
            s->path_i++;
            FT_CHECK(s->path_i < s->n_paths, "CIFAR-10 reader ran past its files");
            s->fp = fopen(s->paths[s->path_i], "rb");
            struct stat st;
            if (!s->fp || fstat(fileno(s->fp), &st) != 0) {
                ft_err_set(err, "%s: cannot open: %s", s->paths[s->path_i], strerror(errno));
                return FT_ERR_IO;
            }
            s->left_in_file = (size_t)st.st_size / CIFAR_RECORD;
        }
        if (fread(s->buf, 1, CIFAR_RECORD, s->fp) != CIFAR_RECORD) {
            ft_err_set(err, "%s: truncated while reading", s->paths[s->path_i]);
            return FT_ERR_DATA;
        }
        if (s->buf[0] > 9) {
            ft_err_set(err, "%s: record %zu has label %u; CIFAR-10 labels are 0..9 (CIFAR-100 records"
                       " have 2 label bytes and are not supported)", s->paths[s->path_i],
                       (size_t)(ftell(s->fp) / CIFAR_RECORD) - 1, s->buf[0]);
            return FT_ERR_DATA;
        }
        labels[i] = s->buf[0];
        uint8_t *img = images + i * CIFAR_PIXELS;
        for (size_t p = 0; p < CIFAR_SIDE * CIFAR_SIDE; p++)
            for (size_t k = 0; k < 3; k++)
                img[p * 3 + k] = s->buf[1 + k * CIFAR_SIDE * CIFAR_SIDE + p];
        s->left_in_file--;
    }
    return FT_OK;
}

/* ---- NumPy .npy: "\x93NUMPY", major, minor, header length (u16 LE for v1, u32 LE
 * for v2/v3), then a Python dict literal {'descr': .., 'fortran_order': .., 'shape': (..)}. */

struct npy_info {
    char descr[16];
    int fortran;
    int ndim;
    uint64_t shape[8];
    size_t offset;      /* of the data */
    size_t data_bytes;  /* as the file holds it */
};

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

/* A quoted Python string ('..' or ".."), no escapes, into buf. */
static const char *npy_string(const char *p, char *buf, size_t size)
{
    char q = *p;
    size_t n = 0;
    if (q != '\'' && q != '"')
        return NULL;
    for (p++; *p && *p != q; p++) {
        if (n + 1 >= size)
            return NULL;
        buf[n++] = *p;
    }
    buf[n] = '\0';
    return *p == q ? p + 1 : NULL;
}

static int npy_parse_dict(const char *p, struct npy_info *info)
{
    char key[32];
    int seen = 0;

    p = skip_ws(p);
    if (*p++ != '{')
        return -1;
    for (;;) {
        p = skip_ws(p);
        if (*p == '}')
            break;
        if (!(p = npy_string(p, key, sizeof key)))
            return -1;
        p = skip_ws(p);
        if (*p++ != ':')
            return -1;
        p = skip_ws(p);
        if (strcmp(key, "descr") == 0) {
            if (!(p = npy_string(p, info->descr, sizeof info->descr)))
                return -1;
            seen |= 1;
        } else if (strcmp(key, "fortran_order") == 0) {
            if (strncmp(p, "True", 4) == 0) {
                info->fortran = 1;
                p += 4;
            } else if (strncmp(p, "False", 5) == 0) {
                info->fortran = 0;
                p += 5;
            } else {
                return -1;
            }
            seen |= 2;
        } else if (strcmp(key, "shape") == 0) {
            if (*p++ != '(')
                return -1;
            info->ndim = 0;
            for (;;) {
                p = skip_ws(p);
                if (*p == ')')
                    break;
                if (*p < '0' || *p > '9' || info->ndim == 8)
                    return -1;
                char *end;
                errno = 0;
                unsigned long long v = strtoull(p, &end, 10);
                if (errno)
                    return -1;
                info->shape[info->ndim++] = v;
                p = skip_ws(end);
                if (*p == 'L')          /* Python 2 longs */
                    p = skip_ws(p + 1);
                if (*p == ',')
                    p++;
                else if (*p != ')')
                    return -1;
            }
            p++;
            seen |= 4;
        } else {
            return -1;
        }
        p = skip_ws(p);
        if (*p == ',')
            p++;
        else if (*p != '}')
            return -1;
    }
    return seen == 7 ? 0 : -1;
}

/* Integer dtype of descr: *bytes (1, 2, 4, 8), *is_signed, *big_endian; -1 if not one. */
static int npy_int_type(const char *descr, size_t *bytes, int *is_signed, int *big_endian)
{
    char order = descr[0];
    const char *t = descr;
    if (order == '<' || order == '>' || order == '|' || order == '=')
        t++;
    else
        order = '=';
    if ((t[0] != 'i' && t[0] != 'u') || t[1] == '\0' || !strchr("1248", t[1]) || t[2] != '\0')
        return -1;
    *bytes = (size_t)(t[1] - '0');
    *is_signed = t[0] == 'i';
    *big_endian = order == '>';
    return 0;
}

static int npy_open(const char *path, FILE **fpo, struct npy_info *info, struct ft_err *err)
{
    int rc = FT_ERR_DATA;
    unsigned char pre[12];
    char *hdr = NULL;
    size_t hlen, pre_len;
    struct stat st;
    FILE *fp = fopen(path, "rb");

    memset(info, 0, sizeof *info);
    if (!fp || fstat(fileno(fp), &st) != 0) {
        ft_err_set(err, "%s: cannot open: %s", path, strerror(errno));
        rc = FT_ERR_IO;
        goto cleanup;
    }
    if (fread(pre, 1, 10, fp) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0) {
        ft_err_set(err, "%s: bad magic: not a NumPy .npy file", path);
        goto cleanup;
    }
    if (pre[6] == 1) {
        hlen = pre[8] | (size_t)pre[9] << 8;
        pre_len = 10;
    } else if (pre[6] == 2 || pre[6] == 3) {
        if (fread(pre + 10, 1, 2, fp) != 2) {
            ft_err_set(err, "%s: truncated .npy header", path);
            goto cleanup;
        }
        hlen = pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
        pre_len = 12;
    } else {
        ft_err_set(err, "%s: .npy format version %d.%d is not supported (1, 2 or 3)", path, pre[6], pre[7]);
        goto cleanup;
    }
    if (hlen > (1u << 20)) {
        ft_err_set(err, "%s: .npy header length %zu is implausible", path, hlen);
        goto cleanup;
    }
    hdr = ft_malloc(hlen + 1);
    if (fread(hdr, 1, hlen, fp) != hlen) {
        ft_err_set(err, "%s: truncated .npy header", path);
        goto cleanup;
    }
    if (npy_parse_dict(hdr, info) != 0) {
        ft_err_set(err, "%s: cannot parse the .npy header dict", path);
        goto cleanup;
    }
    if (info->fortran) {
        ft_err_set(err, "%s: array is in Fortran order; save np.ascontiguousarray(a) instead", path);
        goto cleanup;
    }
    info->offset = pre_len + hlen;
    info->data_bytes = (size_t)st.st_size >= info->offset ? (size_t)st.st_size - info->offset : 0;
    *fpo = fp;
    fp = NULL;
    rc = FT_OK;
cleanup:
    free(hdr);
    if (fp)
        fclose(fp);
    return rc;
}

/* Data size must be exactly elems·itemsize. */
static int npy_check_size(const char *path, const struct npy_info *info, size_t elems, size_t item,
                          struct ft_err *err)
{
    size_t want = elems * item;
    if (info->data_bytes < want) {
        ft_err_set(err, "%s: truncated: shape needs %zu bytes of data, file has %zu", path, want,
                   info->data_bytes);
        return FT_ERR_DATA;
    }
    if (info->data_bytes > want) {
        ft_err_set(err, "%s: %zu unexpected bytes after the data", path, info->data_bytes - want);
        return FT_ERR_DATA;
    }
    return FT_OK;
}

static int npy_read_labels(struct convert_source *s, const char *path, struct ft_err *err)
{
    int rc = FT_ERR_DATA, sgn = 0, big = 0;
    struct npy_info info;
    FILE *fp = NULL;
    uint8_t *raw = NULL;
    size_t bytes = 0;

    rc = npy_open(path, &fp, &info, err);
    if (rc != FT_OK)
        goto cleanup;
    rc = FT_ERR_DATA;
    if (npy_int_type(info.descr, &bytes, &sgn, &big) != 0) {
        ft_err_set(err, "%s: labels dtype '%s' is not an integer type", path, info.descr);
        goto cleanup;
    }
    if (info.ndim != 1) {
        ft_err_set(err, "%s: labels have %d dimensions, expected 1 [N]", path, info.ndim);
        goto cleanup;
    }
    if (info.shape[0] != s->n) {
        ft_err_set(err, "%s: has %" PRIu64 " labels but %s has %zu images", path, info.shape[0],
                   s->paths[0], s->n);
        goto cleanup;
    }
    if (npy_check_size(path, &info, s->n, bytes, err) != FT_OK)
        goto cleanup;
    raw = ft_malloc(s->n * bytes);
    if (fread(raw, bytes, s->n, fp) != s->n) {
        ft_err_set(err, "%s: read error: %s", path, strerror(errno));
        goto cleanup;
    }
    s->labels = ft_malloc(s->n * sizeof *s->labels);
    for (size_t i = 0; i < s->n; i++) {
        uint64_t u = 0;
        for (size_t b = 0; b < bytes; b++)
            u |= (uint64_t)raw[i * bytes + (big ? bytes - 1 - b : b)] << (8 * b);
        int64_t v = (int64_t)u;
        if (sgn && bytes < 8 && (u >> (8 * bytes - 1)) & 1)     /* sign-extend */
            v = (int64_t)(u | ~(((uint64_t)1 << (8 * bytes)) - 1));
        if ((!sgn && u > INT32_MAX) || v < INT32_MIN || v > INT32_MAX) {
            ft_err_set(err, "%s: label %zu does not fit int32", path, i);
            goto cleanup;
        }
        s->labels[i] = (int32_t)v;
    }
    s->has_labels = 1;
    rc = FT_OK;
cleanup:
    free(raw);
    if (fp)
        fclose(fp);
    return rc;
}

int convert_open_npy(struct convert_source *s, const char *images, const char *labels, struct ft_err *err)
{
    int rc = FT_ERR_DATA, sgn = 0, big = 0;
    struct npy_info info;
    size_t bytes = 0;

    init_source(s, CONVERT_NPY);
    s->paths = ft_malloc(sizeof *s->paths);
    s->paths[0] = convert_strdup(images);
    s->n_paths = 1;
    rc = npy_open(images, &s->fp, &info, err);
    if (rc != FT_OK)
        goto cleanup;
    rc = FT_ERR_DATA;
    if (npy_int_type(info.descr, &bytes, &sgn, &big) != 0 || bytes != 1 || sgn) {
        ft_err_set(err, "%s: dtype '%s' is not uint8 (save a.astype(np.uint8))", images, info.descr);
        goto cleanup;
    }
    if (info.ndim != 3 && info.ndim != 4) {
        ft_err_set(err, "%s: array has %d dimensions, expected 3 [N,H,W] or 4 [N,H,W,C]", images, info.ndim);
        goto cleanup;
    }
    for (int i = 0; i < info.ndim; i++)
        if (info.shape[i] == 0 || info.shape[i] > ((uint64_t)1 << 40)) {
            ft_err_set(err, "%s: dimension %d is %" PRIu64 "", images, i, info.shape[i]);
            goto cleanup;
        }
    s->n = info.shape[0];
    s->h = info.shape[1];
    s->w = info.shape[2];
    s->c = info.ndim == 4 ? info.shape[3] : 1;
    if (s->h * s->w * s->c > IDX_MAX_IMAGE_BYTES) {
        ft_err_set(err, "%s: image size %zux%zux%zu is implausibly large", images, s->h, s->w, s->c);
        goto cleanup;
    }
    if (npy_check_size(images, &info, s->n * s->h * s->w * s->c, 1, err) != FT_OK)
        goto cleanup;
    if (fseek(s->fp, (long)info.offset, SEEK_SET) != 0) {
        ft_err_set(err, "%s: seek failed: %s", images, strerror(errno));
        goto cleanup;
    }
    if (labels && npy_read_labels(s, labels, err) != FT_OK)
        goto cleanup;
    snprintf(s->desc, sizeof s->desc, "npy: %s%s%s", images, labels ? ", labels " : "", labels ? labels : "");
    rc = FT_OK;
cleanup:
    if (rc != FT_OK)
        convert_close(s);
    return rc;
}

int convert_read(struct convert_source *s, uint8_t *images, int32_t *labels, size_t count,
                 struct ft_err *err)
{
    size_t img = s->h * s->w * s->c;
    int rc = FT_OK;

    FT_CHECK(s->done + count <= s->n, "reading %zu images after %zu of %zu", count, s->done, s->n);
    FT_CHECK(!s->has_labels || labels, "labels buffer missing");
    switch (s->kind) {
    case CONVERT_IDX:
        rc = gz_read_exact(s->gz, s->paths[0], images, count * img, "pixel data", err);
        if (rc == FT_OK && s->done + count == s->n)
            rc = gz_expect_end(s->gz, s->paths[0], err);
        break;
    case CONVERT_CIFAR10:
        rc = cifar_read(s, images, labels, count, err);
        if (rc == FT_OK && s->done + count == s->n && s->fp && fgetc(s->fp) != EOF) {
            ft_err_set(err, "%s: grew while being read", s->paths[s->path_i]);
            rc = FT_ERR_DATA;
        }
        break;
    case CONVERT_NPY:
        if (fread(images, 1, count * img, s->fp) != count * img) {
            ft_err_set(err, "%s: truncated while reading", s->paths[0]);
            rc = FT_ERR_DATA;
        }
        break;
    case CONVERT_PNG:
        rc = convert_png_read(s, images, count, err);
        break;
    }
    if (rc == FT_OK && s->has_labels && s->kind != CONVERT_CIFAR10)
        memcpy(labels, s->labels + s->done, count * sizeof *labels);
    if (rc == FT_OK)
        s->done += count;
    return rc;
}

void convert_close(struct convert_source *s)
{
    if (s->gz)
        gzclose(s->gz);
    if (s->fp)
        fclose(s->fp);
    for (size_t i = 0; i < s->n_paths; i++)
        free(s->paths[i]);
    free(s->paths);
    free(s->labels);
    free(s->buf);
    free(s->label_names);
    memset(s, 0, sizeof *s);
}

void convert_pad_tile(uint8_t *out, const uint8_t *in, size_t n, size_t h, size_t w, size_t c,
                      size_t pad, int rgb)
{
    size_t oc = rgb ? 3 : c, ow = w + 2 * pad, oh = h + 2 * pad;
    FT_CHECK(!rgb || c == 1, "--rgb needs 1 channel, got %zu", c);
    memset(out, 0, n * oh * ow * oc);
    for (size_t i = 0; i < n; i++)
        for (size_t y = 0; y < h; y++) {
            const uint8_t *src = in + ((i * h + y) * w) * c;
            uint8_t *dst = out + ((i * oh + y + pad) * ow + pad) * oc;
            if (!rgb) {
                memcpy(dst, src, w * c);
                continue;
            }
            for (size_t x = 0; x < w; x++)
                dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = src[x];
        }
}
