/* Tests of the dataset module (src/dataset.c, src/dataset_write.c): write → open →
 * read round trips with random, duplicate and sequential indices, shards by glob
 * in sorted name order, and every corrupt or mismatched file (truncated, missing
 * 'images', wrong dtype, rank, shape, label count, not HDF5, flipped chunk byte)
 * giving FT_ERR_DATA with a one-line message naming the file, and no HDF5 noise. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dataset.h"
#include "ft_test.h"
#include "h5util.h"
#include "rng.h"

struct fixture {
    char dir[256];
    char path[512];
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    const char *tmp = getenv("TMPDIR");
    snprintf(fx->dir, sizeof fx->dir, "%s/test_dataset.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(fx->dir)) {
        fprintf(stderr, "mkdtemp(%s): %s\n", fx->dir, strerror(errno));
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    ft_rm_rf(fx->dir);
    free(fx);
    return 0;
}

static const char *in_dir(struct fixture *fx, const char *name)
{
    snprintf(fx->path, sizeof fx->path, "%s/%s", fx->dir, name);
    return fx->path;
}

static void fill_random(uint8_t *a, size_t n, uint64_t seed)
{
    struct rng_key k = rng_key(seed, RNG_TEST, 0, 0);
    for (size_t i = 0; i < n; i++)
        a[i] = (uint8_t)rng_u64(k, i);
}

/* Fails loudly at the first differing byte of image data. */
static void assert_bytes_equal(const uint8_t *got, const uint8_t *want, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i]) {
            fail_msg("%s: byte %zu differs: got %u, want %u", what, i, got[i], want[i]);
        }
}

/* The message must contain each NULL-terminated substring. */
static void assert_msg_has(const struct ft_err *err, ...)
{
    va_list ap;
    const char *s;
    va_start(ap, err);
    while ((s = va_arg(ap, const char *)) != NULL)
        if (!strstr(err->msg, s))
            fail_msg("error message '%s' lacks '%s'", err->msg, s);
    va_end(ap);
    if (strchr(err->msg, '\n'))
        fail_msg("error message is not one line: '%s'", err->msg);
}

/* Writes n random images (seeded) with labels 1000 + 7·i into path. */
static void write_set(const char *path, size_t n, size_t h, size_t w, size_t c, int labels, uint64_t seed,
                      uint8_t **images_out, int32_t **labels_out)
{
    struct ft_err err = {{0}};
    uint8_t *img = malloc(n * h * w * c);
    int32_t *lab = labels ? malloc(n * sizeof *lab) : NULL;
    fill_random(img, n * h * w * c, seed);
    for (size_t i = 0; labels && i < n; i++)
        lab[i] = (int32_t)(1000 + 7 * i + seed);
    int rc = dataset_write(path, img, lab, n, h, w, c, "test", &err);
    if (rc != FT_OK)
        fail_msg("dataset_write(%s): %s", path, err.msg);
    if (images_out)
        *images_out = img;
    else
        free(img);
    if (labels_out)
        *labels_out = lab;
    else
        free(lab);
}

/* Reads idx through dataset_read and compares with the reference arrays. */
static void check_read(struct dataset *ds, const uint8_t *ref, const int32_t *ref_lab, const uint64_t *idx,
                       size_t count)
{
    struct ft_err err = {{0}};
    size_t img = ds->h * ds->w * ds->c;
    uint8_t *out = malloc(count * img + 1);
    int32_t *lab = malloc((count + 1) * sizeof *lab);
    int rc = dataset_read(ds, out, ref_lab ? lab : NULL, idx, count, &err);
    if (rc != FT_OK)
        fail_msg("dataset_read: %s", err.msg);
    for (size_t k = 0; k < count; k++) {
        char what[64];
        snprintf(what, sizeof what, "image %zu (index %llu)", k, (unsigned long long)idx[k]);
        assert_bytes_equal(out + k * img, ref + idx[k] * img, img, what);
        if (ref_lab && lab[k] != ref_lab[idx[k]])
            fail_msg("label %zu (index %llu): got %d, want %d", k, (unsigned long long)idx[k], lab[k],
                     ref_lab[idx[k]]);
    }
    free(out);
    free(lab);
}

static void test_round_trip(void **state)
{
    struct fixture *fx = *state;
    struct dataset ds;
    struct ft_err err = {{0}};
    uint8_t *ref = NULL;
    int32_t *ref_lab = NULL;
    const size_t n = 37, h = 5, w = 4, c = 3;
    uint64_t idx[80];
    char src[64];

    write_set(in_dir(fx, "a.h5"), n, h, w, c, 1, 1, &ref, &ref_lab);
    assert_int_equal(dataset_open(&ds, fx->path, h, w, c, &err), FT_OK);
    assert_int_equal(ds.n, n);
    assert_int_equal(ds.h, h);
    assert_int_equal(ds.w, w);
    assert_int_equal(ds.c, c);
    assert_int_equal(ds.has_labels, 1);
    assert_int_equal(ds.n_shards, 1);

    struct rng_key k = rng_key(7, RNG_TEST, 1, 0);
    for (size_t i = 0; i < 80; i++)              /* random, with many duplicates */
        idx[i] = rng_below(k, i, n);
    idx[3] = idx[4] = idx[5] = 36;
    idx[10] = 0;
    check_read(&ds, ref, ref_lab, idx, 80);
    for (size_t i = 0; i < n; i++)               /* sequential: one hyperslab straight into out */
        idx[i] = i;
    check_read(&ds, ref, ref_lab, idx, n);
    for (size_t i = 0; i < n; i++)               /* reversed: one hyperslab, then scattered */
        idx[i] = n - 1 - i;
    check_read(&ds, ref, ref_lab, idx, n);
    check_read(&ds, ref, NULL, idx, 1);          /* no labels wanted */
    assert_int_equal(dataset_read(&ds, NULL, NULL, idx, 0, &err), FT_OK);
    assert_int_equal(dataset_source(&ds, 0, src, sizeof src, &err), FT_OK);
    assert_string_equal(src, "test");
    dataset_close(&ds);
    dataset_close(&ds);                          /* closing twice is harmless */

    assert_int_equal(dataset_open(&ds, fx->path, 0, 0, 0, &err), FT_OK);   /* any shape */
    assert_int_equal(ds.n, n);
    dataset_close(&ds);
    assert_int_equal(dataset_open(&ds, fx->path, 5, 0, 3, &err), FT_OK);   /* partly given */
    dataset_close(&ds);
    free(ref);
    free(ref_lab);
}

static void test_no_labels(void **state)
{
    struct fixture *fx = *state;
    struct dataset ds;
    struct ft_err err = {{0}};
    uint8_t *ref = NULL, out[2 * 8 * 8];
    int32_t lab[2] = {5, 5};
    uint64_t idx[2] = {9, 2};

    write_set(in_dir(fx, "nl.h5"), 10, 8, 8, 1, 0, 2, &ref, NULL);
    assert_int_equal(dataset_open(&ds, fx->path, 8, 8, 1, &err), FT_OK);
    assert_int_equal(ds.has_labels, 0);
    assert_int_equal(dataset_read(&ds, out, lab, idx, 2, &err), FT_OK);
    assert_int_equal(lab[0], -1);
    assert_int_equal(lab[1], -1);
    assert_bytes_equal(out, ref + 9 * 64, 64, "image 9");
    assert_bytes_equal(out + 64, ref + 2 * 64, 64, "image 2");
    dataset_close(&ds);
    free(ref);
}

static void test_shards_glob(void **state)
{
    struct fixture *fx = *state;
    struct dataset ds;
    struct ft_err err = {{0}};
    /* Written out of order; sorted names give a (7), b (20), c (1). */
    const char *names[3] = {"part-b.h5", "part-c.h5", "part-a.h5"};
    const size_t counts[3] = {20, 1, 7}, order[3] = {2, 0, 1}, img = 3 * 2 * 1;
    uint8_t *parts[3], *ref = malloc(28 * img);
    int32_t *plab[3], ref_lab[28];
    size_t at = 0;
    uint64_t idx[64];
    char pattern[512];

    for (int s = 0; s < 3; s++)
        write_set(in_dir(fx, names[s]), counts[s], 3, 2, 1, 1, 10 + (uint64_t)s, &parts[s], &plab[s]);
    for (int k = 0; k < 3; k++) {
        size_t s = order[k];
        memcpy(ref + at * img, parts[s], counts[s] * img);
        memcpy(ref_lab + at, plab[s], counts[s] * sizeof *ref_lab);
        at += counts[s];
    }
    write_set(in_dir(fx, "other.h5"), 3, 3, 2, 1, 1, 99, NULL, NULL);   /* not matched */
    snprintf(pattern, sizeof pattern, "%s/part-*.h5", fx->dir);
    assert_int_equal(dataset_open(&ds, pattern, 3, 2, 1, &err), FT_OK);
    assert_int_equal(ds.n_shards, 3);
    assert_int_equal(ds.n, 28);
    assert_non_null(strstr(ds.shards[0].path, "part-a.h5"));
    assert_non_null(strstr(ds.shards[2].path, "part-c.h5"));
    assert_int_equal(ds.shards[1].first, 7);
    assert_int_equal(ds.shards[2].first, 27);

    struct rng_key k = rng_key(3, RNG_TEST, 2, 0);
    for (size_t i = 0; i < 64; i++)
        idx[i] = rng_below(k, i, 28);
    idx[0] = 6, idx[1] = 7, idx[2] = 8, idx[3] = 27, idx[4] = 26, idx[5] = 6;   /* shard edges */
    check_read(&ds, ref, ref_lab, idx, 64);
    for (size_t i = 0; i < 28; i++)      /* one sorted run spanning all shards */
        idx[i] = i;
    check_read(&ds, ref, ref_lab, idx, 28);
    dataset_close(&ds);

    snprintf(pattern, sizeof pattern, "%s/none-*.h5", fx->dir);
    assert_int_equal(dataset_open(&ds, pattern, 0, 0, 0, &err), FT_ERR_DATA);
    assert_msg_has(&err, pattern, "no files match", NULL);
    for (int s = 0; s < 3; s++) {
        free(parts[s]);
        free(plab[s]);
    }
    free(ref);
}

static void test_shards_disagree(void **state)
{
    struct fixture *fx = *state;
    struct dataset ds;
    struct ft_err err = {{0}};
    char pattern[512];

    write_set(in_dir(fx, "s-0.h5"), 4, 3, 2, 1, 1, 1, NULL, NULL);
    write_set(in_dir(fx, "s-1.h5"), 4, 3, 3, 1, 1, 1, NULL, NULL);
    snprintf(pattern, sizeof pattern, "%s/s-*.h5", fx->dir);
    assert_int_equal(dataset_open(&ds, pattern, 0, 0, 0, &err), FT_ERR_DATA);
    assert_msg_has(&err, "s-1.h5: images are 3x3x1 but shard", "s-0.h5 has 3x2x1", NULL);
    assert_null(ds.shards);

    write_set(in_dir(fx, "s-1.h5"), 4, 3, 2, 1, 0, 1, NULL, NULL);
    assert_int_equal(dataset_open(&ds, pattern, 0, 0, 0, &err), FT_ERR_DATA);
    assert_msg_has(&err, "s-1.h5: has no 'labels'", NULL);
}

/* A hand-made HDF5 file: images of type itype and rank irank (0: none), labels of
 * type ltype and length nl (H5I_INVALID_HID: none), format attributes unless fmt is NULL. */
static void write_raw(const char *path, hid_t itype, int irank, const hsize_t *idims, hid_t ltype, hsize_t nl,
                      const char *fmt, int64_t version)
{
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(f >= 0);
    if (irank > 0) {
        hid_t sp = H5Screate_simple(irank, idims, NULL);
        hid_t d = H5Dcreate2(f, "images", itype, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        assert_true(d >= 0);
        H5Dclose(d);
        H5Sclose(sp);
    }
    if (ltype != H5I_INVALID_HID) {
        hid_t sp = H5Screate_simple(1, &nl, NULL);
        hid_t d = H5Dcreate2(f, "labels", ltype, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        assert_true(d >= 0);
        H5Dclose(d);
        H5Sclose(sp);
    }
    if (fmt) {
        assert_int_equal(h5util_write_str_attr(f, "format", fmt), 0);
        assert_int_equal(h5util_write_i64_attr(f, "format_version", &version, 1), 0);
    }
    H5Fclose(f);
}

/* Opens path expecting FT_ERR_DATA and each substring (plus the path) in the message. */
static void expect_open_error(const char *path, size_t h, size_t w, size_t c, const char *s1, const char *s2)
{
    struct dataset ds;
    struct ft_err err = {{0}};
    int rc = dataset_open(&ds, path, h, w, c, &err);
    if (rc != FT_ERR_DATA)
        fail_msg("dataset_open(%s) returned %d, want FT_ERR_DATA (msg '%s')", path, rc, err.msg);
    assert_msg_has(&err, path, s1, s2, NULL);
    assert_null(ds.shards);
    dataset_close(&ds);
}

static void test_corrupt_files(void **state)
{
    struct fixture *fx = *state;
    hsize_t d4[4] = {6, 4, 4, 1}, d3[3] = {6, 4, 4};

    write_raw(in_dir(fx, "noimg.h5"), 0, 0, NULL, H5T_STD_I32LE, 6, DATASET_FORMAT, 1);
    expect_open_error(fx->path, 0, 0, 0, "dataset 'images' is missing", NULL);

    write_raw(in_dir(fx, "float.h5"), H5T_IEEE_F32LE, 4, d4, H5I_INVALID_HID, 0, DATASET_FORMAT, 1);
    expect_open_error(fx->path, 0, 0, 0, "'images' has type float32, expected uint8", NULL);

    write_raw(in_dir(fx, "int16.h5"), H5T_STD_I16LE, 4, d4, H5I_INVALID_HID, 0, DATASET_FORMAT, 1);
    expect_open_error(fx->path, 0, 0, 0, "type int16", NULL);

    write_raw(in_dir(fx, "rank3.h5"), H5T_STD_U8LE, 3, d3, H5I_INVALID_HID, 0, DATASET_FORMAT, 1);
    expect_open_error(fx->path, 0, 0, 0, "'images' has rank 3, expected 4", NULL);

    write_raw(in_dir(fx, "nlab.h5"), H5T_STD_U8LE, 4, d4, H5T_STD_I32LE, 5, DATASET_FORMAT, 1);
    expect_open_error(fx->path, 0, 0, 0, "'labels' has 5 entries but 'images' has 6", NULL);

    write_raw(in_dir(fx, "flab.h5"), H5T_STD_U8LE, 4, d4, H5T_IEEE_F64LE, 6, DATASET_FORMAT, 1);
    expect_open_error(fx->path, 0, 0, 0, "'labels' has type float64", NULL);

    write_raw(in_dir(fx, "nofmt.h5"), H5T_STD_U8LE, 4, d4, H5I_INVALID_HID, 0, NULL, 0);
    expect_open_error(fx->path, 0, 0, 0, "attribute 'format' is missing", NULL);

    write_raw(in_dir(fx, "otherfmt.h5"), H5T_STD_U8LE, 4, d4, H5I_INVALID_HID, 0, "flowtrain-checkpoint", 1);
    expect_open_error(fx->path, 0, 0, 0, "'flowtrain-checkpoint', expected 'flowtrain-images'", NULL);

    write_raw(in_dir(fx, "v2.h5"), H5T_STD_U8LE, 4, d4, H5I_INVALID_HID, 0, DATASET_FORMAT, 2);
    expect_open_error(fx->path, 0, 0, 0, "format_version 2 is not supported", NULL);

    write_raw(in_dir(fx, "good.h5"), H5T_STD_U8LE, 4, d4, H5T_STD_I64LE, 6, DATASET_FORMAT, 1);
    expect_open_error(fx->path, 32, 32, 1, "images are 4x4x1 (HxWxC), expected 32x32x1", NULL);
    expect_open_error(fx->path, 0, 0, 3, "expected *x*x3", NULL);
    struct dataset ds;
    struct ft_err err = {{0}};
    assert_int_equal(dataset_open(&ds, fx->path, 4, 4, 1, &err), FT_OK);   /* int64 labels load */
    dataset_close(&ds);

    FILE *fp = fopen(in_dir(fx, "text.h5"), "w");
    fputs("this is not an HDF5 file\n", fp);
    fclose(fp);
    expect_open_error(fx->path, 0, 0, 0, "not a readable HDF5 file", NULL);

    fclose(fopen(in_dir(fx, "empty.h5"), "w"));
    expect_open_error(fx->path, 0, 0, 0, "not a readable HDF5 file", NULL);

    expect_open_error(in_dir(fx, "absent.h5"), 0, 0, 0, "cannot open", "No such file");
    expect_open_error(fx->dir, 0, 0, 0, "is a directory", NULL);
}

static void test_truncated(void **state)
{
    struct fixture *fx = *state;
    struct stat st;
    const off_t cuts[3] = {2, 100, 1};   /* size / cut: half, nearly all gone, one byte short */

    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "trunc%d.h5", i);
        write_set(in_dir(fx, name), 200, 8, 8, 3, 1, 5, NULL, NULL);
        assert_int_equal(stat(fx->path, &st), 0);
        off_t size = i == 2 ? st.st_size - 1 : st.st_size / cuts[i];
        assert_int_equal(truncate(fx->path, size), 0);
        expect_open_error(fx->path, 8, 8, 3, "not a readable HDF5 file", NULL);
    }
}

/* Flips one byte inside the third chunk of 'images': Fletcher32 catches it on read. */
static void test_flipped_byte(void **state)
{
    struct fixture *fx = *state;
    struct dataset ds;
    struct ft_err err = {{0}};
    uint8_t *ref = NULL, out[64 * 3 * 8];
    haddr_t addr = 0;
    hsize_t off[4], size = 0, nchunks = 0;
    unsigned mask = 0;
    uint64_t idx[8];

    write_set(in_dir(fx, "flip.h5"), 100, 8, 8, 3, 1, 6, &ref, NULL);   /* 192 B: 42 per chunk */
    hid_t f = H5Fopen(fx->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "images", H5P_DEFAULT);
    hid_t sp = H5Dget_space(d);
    assert_true(H5Dget_num_chunks(d, sp, &nchunks) >= 0);
    assert_int_equal(nchunks, 3);
    assert_true(H5Dget_chunk_info(d, sp, 2, off, &mask, &addr, &size) >= 0);
    H5Sclose(sp);
    H5Dclose(d);
    H5Fclose(f);
    assert_int_equal(off[0], 84);
    int fd = open(fx->path, O_RDWR);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, (off_t)addr + 10), 1);
    b ^= 0x40;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)addr + 10), 1);
    close(fd);

    assert_int_equal(dataset_open(&ds, fx->path, 8, 8, 3, &err), FT_OK);
    for (int i = 0; i < 8; i++)
        idx[i] = (uint64_t)i * 10;       /* 0..70: chunks 0 and 1 only */
    check_read(&ds, ref, NULL, idx, 8);
    idx[0] = 90;
    assert_int_equal(dataset_read(&ds, out, NULL, idx, 1, &err), FT_ERR_DATA);
    assert_msg_has(&err, fx->path, "reading 'images' [90, 91) failed", NULL);
    dataset_close(&ds);
    free(ref);
}

/* A failing open prints nothing: HDF5's automatic error stack is silenced. */
static void test_quiet_errors(void **state)
{
    struct fixture *fx = *state;
    struct dataset ds;
    struct ft_err err = {{0}};
    struct stat st;
    char log[512];
    hsize_t d4[4] = {2, 2, 2, 1};

    snprintf(log, sizeof log, "%s/stderr.txt", fx->dir);
    fflush(stderr);
    int saved = dup(2), fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 2);
    close(fd);
    FILE *fp = fopen(in_dir(fx, "junk.h5"), "w");
    fputs("junk", fp);
    fclose(fp);
    int rc1 = dataset_open(&ds, fx->path, 0, 0, 0, &err);
    write_raw(in_dir(fx, "noimg.h5"), 0, 0, d4, H5I_INVALID_HID, 0, DATASET_FORMAT, 1);
    int rc2 = dataset_open(&ds, fx->path, 0, 0, 0, &err);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    assert_int_equal(rc1, FT_ERR_DATA);
    assert_int_equal(rc2, FT_ERR_DATA);
    assert_int_equal(stat(log, &st), 0);
    assert_int_equal(st.st_size, 0);
    /* and the caller's own error printing is back afterwards */
    H5E_auto2_t func = NULL;
    void *data = NULL;
    H5Eget_auto2(H5E_DEFAULT, &func, &data);
    assert_non_null(func);
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    while (d && (e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    if (d)
        closedir(d);
    return n;
}

static void test_writer(void **state)
{
    struct fixture *fx = *state;
    struct dataset_writer wr;
    struct dataset ds;
    struct ft_err err = {{0}};
    uint8_t img[10 * 12];
    int32_t lab[10];
    char bad[600];

    write_set(in_dir(fx, "w.h5"), 3, 2, 2, 3, 1, 1, NULL, NULL);
    assert_int_equal(count_entries(fx->dir), 1);       /* no temp file left */

    snprintf(bad, sizeof bad, "%s/missing-dir/out.h5", fx->dir);
    assert_int_equal(dataset_write(bad, img, NULL, 1, 2, 2, 3, "x", &err), FT_ERR_IO);
    assert_msg_has(&err, bad, "No such file or directory", NULL);
    assert_int_equal(dataset_write(in_dir(fx, "empty.h5"), img, NULL, 0, 2, 2, 3, "x", &err), FT_ERR_DATA);
    assert_msg_has(&err, "empty.h5", "nothing to write", NULL);

    /* Streamed in three appends, with chunking and compression options. */
    struct dataset_writer_opts opts = {3, 6, "zero\none"};
    fill_random(img, sizeof img, 4);
    for (int i = 0; i < 10; i++)
        lab[i] = i % 2;
    assert_int_equal(dataset_writer_begin(&wr, in_dir(fx, "stream.h5"), 10, 2, 2, 3, 1, "s", &opts, &err), FT_OK);
    assert_int_equal(count_entries(fx->dir), 2);       /* w.h5 and the hidden temp file */
    assert_int_equal(dataset_writer_append(&wr, img, lab, 4, &err), FT_OK);
    assert_int_equal(dataset_writer_append(&wr, img + 48, lab + 4, 5, &err), FT_OK);
    assert_int_equal(dataset_writer_append(&wr, img + 108, lab + 9, 1, &err), FT_OK);
    assert_int_equal(dataset_writer_commit(&wr, &err), FT_OK);
    assert_int_equal(count_entries(fx->dir), 2);
    assert_int_equal(dataset_open(&ds, fx->path, 2, 2, 3, &err), FT_OK);
    uint64_t idx[10] = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0};
    check_read(&ds, img, lab, idx, 10);
    char names[32];
    assert_int_equal(h5util_read_str_attr(ds.shards[0].file, "label_names", names, sizeof names), 1);
    assert_string_equal(names, "zero\none");
    dataset_close(&ds);

    /* An aborted writer leaves nothing behind. */
    assert_int_equal(dataset_writer_begin(&wr, in_dir(fx, "gone.h5"), 10, 2, 2, 3, 0, "s", NULL, &err), FT_OK);
    assert_int_equal(dataset_writer_append(&wr, img, NULL, 4, &err), FT_OK);
    dataset_writer_abort(&wr);
    assert_int_equal(count_entries(fx->dir), 2);
    assert_int_not_equal(access(fx->path, F_OK), 0);
}

/* Files must open through HDF5's plain serial (sec2) driver with default properties. */
static void test_serial_driver(void **state)
{
    struct fixture *fx = *state;
    write_set(in_dir(fx, "serial.h5"), 5, 2, 2, 1, 1, 3, NULL, NULL);
    hid_t f = H5Fopen(fx->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t fapl = H5Fget_access_plist(f);
    assert_true(H5Pget_driver(fapl) == H5FD_SEC2);
    H5Pclose(fapl);
    H5Fclose(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_labels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shards_glob, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shards_disagree, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flipped_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quiet_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_serial_driver, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
