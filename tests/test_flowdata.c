/* Tests of the flowdata tool ($FT_BINARY_DIR/flowdata, run as a child process):
 * tiny IDX (plain and gzip), .npy, PNG folders (written with libspng), CIFAR-10
 * batches and the fashion-mnist command convert pixel-exactly, read back through
 * dataset_read, with --pad and --rgb; corrupt inputs exit 1 with one line
 * "flowdata: <file>: ..." and leave no output (nor temp) file behind. */
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
#include <spng.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "dataset.h"
#include "ft_test.h"
#include "h5util.h"
#include "rng.h"

struct fixture {
    char dir[256];
    char out_dir[300];       /* outputs go here; must stay empty after a failure */
    char bin[512];
    char output[8192];       /* stdout + stderr of the last run */
    char *paths[64];         /* from path_in, freed by teardown */
    int n_paths;
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    const char *tmp = getenv("TMPDIR"), *bin = getenv("FT_BINARY_DIR");
    snprintf(fx->dir, sizeof fx->dir, "%s/test_flowdata.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(fx->dir)) {
        fprintf(stderr, "mkdtemp(%s): %s\n", fx->dir, strerror(errno));
        free(fx);
        return -1;
    }
    snprintf(fx->out_dir, sizeof fx->out_dir, "%s/out", fx->dir);
    mkdir(fx->out_dir, 0755);
    if (bin && *bin)
        snprintf(fx->bin, sizeof fx->bin, "%s/flowdata", bin);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    ft_rm_rf(fx->dir);
    for (int i = 0; i < fx->n_paths; i++)
        free(fx->paths[i]);
    free(fx);
    return 0;
}

/* Skips the test when the binary is unknown (run outside ctest). */
static void need_binary(struct fixture *fx)
{
    if (!fx->bin[0] || access(fx->bin, X_OK) != 0) {
        fprintf(stderr, "skipping: set FT_BINARY_DIR to the build directory holding flowdata\n");
        skip();
    }
}

/* Runs flowdata with the NULL-terminated arguments; returns its exit code and
 * keeps its stdout + stderr in fx->output. */
static int run(struct fixture *fx, ...)
{
    const char *argv[32];
    char log[512];
    int n = 0, status = 0;
    va_list ap;

    need_binary(fx);
    argv[n++] = fx->bin;
    va_start(ap, fx);
    while ((argv[n] = va_arg(ap, const char *)) != NULL && n < 30)
        n++;
    va_end(ap);
    argv[n] = NULL;
    snprintf(log, sizeof log, "%s/run.log", fx->dir);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
        execv(fx->bin, (char *const *)argv);
        _exit(127);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    FILE *fp = fopen(log, "r");
    size_t got = fp ? fread(fx->output, 1, sizeof fx->output - 1, fp) : 0;
    fx->output[got] = '\0';
    if (fp)
        fclose(fp);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* "dir/name", owned by the fixture. */
static char *path_in(struct fixture *fx, const char *dir, const char *name)
{
    char *p = malloc(strlen(dir) + strlen(name) + 2);
    assert_true(fx->n_paths < 64);
    sprintf(p, "%s/%s", dir, name);
    fx->paths[fx->n_paths++] = p;
    return p;
}

static void fill_random(uint8_t *a, size_t n, uint64_t seed)
{
    struct rng_key k = rng_key(seed, RNG_TEST, 0, 0);
    for (size_t i = 0; i < n; i++)
        a[i] = (uint8_t)rng_u64(k, i);
}

static void write_bytes(const char *path, int gz, const void *data, size_t n)
{
    if (gz) {
        gzFile g = gzopen(path, "wb");
        assert_non_null(g);
        assert_int_equal(gzwrite(g, data, (unsigned)n), (int)n);
        assert_int_equal(gzclose(g), Z_OK);
    } else {
        FILE *fp = fopen(path, "wb");
        assert_non_null(fp);
        assert_int_equal(fwrite(data, 1, n, fp), n);
        fclose(fp);
    }
}

/* An IDX file: magic 0 0 8 ndim, big-endian dims, then the bytes (cut short by `cut`). */
static void write_idx(const char *path, int gz, int ndim, const uint32_t *dims, const uint8_t *data,
                      size_t cut)
{
    size_t n = 1, len;
    for (int i = 0; i < ndim; i++)
        n *= dims[i];
    uint8_t *buf = malloc(4 + 4 * (size_t)ndim + n);
    buf[0] = buf[1] = 0;
    buf[2] = 8;
    buf[3] = (uint8_t)ndim;
    for (int i = 0; i < ndim; i++)
        for (int b = 0; b < 4; b++)
            buf[4 + 4 * i + b] = (uint8_t)(dims[i] >> (24 - 8 * b));
    len = 4 + 4 * (size_t)ndim;
    memcpy(buf + len, data, n);
    write_bytes(path, gz, buf, len + n - cut);
    free(buf);
}

/* A version 1 .npy file with the given descr and shape (up to 4 dims). */
static void write_npy(const char *path, const char *descr, int ndim, const size_t *shape, const void *data,
                      size_t bytes)
{
    char dict[256], shp[96] = "";
    size_t len = 0;
    for (int i = 0; i < ndim; i++)
        len += (size_t)snprintf(shp + len, sizeof shp - len, "%zu,%s", shape[i], i + 1 < ndim ? " " : "");
    if (ndim > 1)
        shp[len - 1] = '\0';   /* numpy writes (3,) for one dim, (3, 4) for more */
    int hl = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, shp);
    size_t total = 10 + (size_t)hl + 1, pad = (64 - total % 64) % 64;
    uint8_t *buf = malloc(total + pad + bytes);
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    size_t hlen = (size_t)hl + pad + 1;
    buf[8] = (uint8_t)(hlen & 0xff);
    buf[9] = (uint8_t)(hlen >> 8);
    memcpy(buf + 10, dict, (size_t)hl);
    memset(buf + 10 + hl, ' ', pad);
    buf[10 + hl + pad] = '\n';
    memcpy(buf + total + pad, data, bytes);
    write_bytes(path, 0, buf, total + pad + bytes);
    free(buf);
}

/* An 8-bit PNG: c = 1 grey, 3 RGB, 4 RGBA. */
static void write_png(const char *path, const uint8_t *img, uint32_t h, uint32_t w, int c)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    struct spng_ihdr ihdr = {0};
    ihdr.width = w;
    ihdr.height = h;
    ihdr.bit_depth = 8;
    ihdr.color_type = c == 1 ? SPNG_COLOR_TYPE_GRAYSCALE
                    : c == 3 ? SPNG_COLOR_TYPE_TRUECOLOR : SPNG_COLOR_TYPE_TRUECOLOR_ALPHA;
    assert_int_equal(spng_set_png_file(ctx, fp), 0);
    assert_int_equal(spng_set_ihdr(ctx, &ihdr), 0);
    assert_int_equal(spng_encode_image(ctx, img, (size_t)h * w * (size_t)c, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE), 0);
    spng_ctx_free(ctx);
    fclose(fp);
}

/* Opens out, checks its shape, and compares every image and label with the references. */
static void check_output(const char *out, const uint8_t *ref, const int32_t *ref_lab, size_t n, size_t h,
                         size_t w, size_t c)
{
    struct dataset ds;
    struct ft_err err = {{0}};
    size_t img = h * w * c;
    if (dataset_open(&ds, out, h, w, c, &err) != FT_OK)
        fail_msg("dataset_open: %s", err.msg);
    assert_int_equal(ds.n, n);
    assert_int_equal(ds.has_labels, ref_lab != NULL);
    uint8_t *got = malloc(n * img);
    int32_t *lab = malloc(n * sizeof *lab);
    uint64_t *idx = malloc(n * sizeof *idx);
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    assert_int_equal(dataset_read(&ds, got, lab, idx, n, &err), FT_OK);
    for (size_t i = 0; i < n * img; i++)
        if (got[i] != ref[i])
            fail_msg("%s: image %zu, byte %zu (y %zu, x %zu, c %zu): got %u, want %u", out, i / img, i % img,
                     i % img / (w * c), i % (w * c) / c, i % c, got[i], ref[i]);
    for (size_t i = 0; ref_lab && i < n; i++)
        if (lab[i] != ref_lab[i])
            fail_msg("%s: label %zu: got %d, want %d", out, i, lab[i], ref_lab[i]);
    dataset_close(&ds);
    free(got);
    free(lab);
    free(idx);
}

/* Reference for --pad p and --rgb: zero border, grey tiled. */
static uint8_t *pad_ref(const uint8_t *in, size_t n, size_t h, size_t w, size_t c, size_t p, int rgb)
{
    size_t oc = rgb ? 3 : c, oh = h + 2 * p, ow = w + 2 * p;
    uint8_t *o = calloc(n * oh * ow * oc, 1);
    for (size_t i = 0; i < n; i++)
        for (size_t y = 0; y < h; y++)
            for (size_t x = 0; x < w; x++)
                for (size_t k = 0; k < oc; k++)
                    o[((i * oh + y + p) * ow + x + p) * oc + k] = in[((i * h + y) * w + x) * c + (rgb ? 0 : k)];
    return o;
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

/* A failed run: exit 1, one line naming `file` and containing `what`, no output left. */
static void expect_failure(struct fixture *fx, int rc, const char *file, const char *what)
{
    char head[1100];
    if (rc != 1)
        fail_msg("exit code %d, want 1; output: %s", rc, fx->output);
    snprintf(head, sizeof head, "flowdata: %s: ", file);
    if (strncmp(fx->output, head, strlen(head)) != 0 || !strstr(fx->output, what))
        fail_msg("output '%s' does not start with '%s' or lacks '%s'", fx->output, head, what);
    const char *nl = strchr(fx->output, '\n');
    if (!nl || nl[1] != '\0')
        fail_msg("output is not exactly one line: '%s'", fx->output);
    if (count_entries(fx->out_dir) != 0)
        fail_msg("%s is not empty after a failed conversion", fx->out_dir);
}

static void test_idx(void **state)
{
    struct fixture *fx = *state;
    const size_t n = 5, h = 6, w = 7;
    uint8_t img[5 * 6 * 7], lab8[5];
    int32_t lab[5];
    uint32_t dims[3] = {5, 6, 7}, ldim[1] = {5};
    char *out = path_in(fx, fx->out_dir, "idx.h5");

    fill_random(img, sizeof img, 1);
    for (size_t i = 0; i < n; i++)
        lab[i] = lab8[i] = (uint8_t)(i * 3 % 10);
    for (int gz = 0; gz < 2; gz++) {
        char *ip = path_in(fx, fx->dir, gz ? "img.gz" : "img.idx"), *lp = path_in(fx, fx->dir, gz ? "lab.gz" : "lab.idx");
        write_idx(ip, gz, 3, dims, img, 0);
        write_idx(lp, gz, 1, ldim, lab8, 0);
        assert_int_equal(run(fx, "idx", "--images", ip, "--labels", lp, "-o", out, NULL), 0);
        assert_non_null(strstr(fx->output, "wrote 5 images 6x7x1 with labels to"));
        check_output(out, img, lab, n, h, w, 1);

        uint8_t *ref = pad_ref(img, n, h, w, 1, 2, 1);
        assert_int_equal(run(fx, "idx", "--images", ip, "--labels", lp, "--pad", "2", "--rgb", "-o", out, NULL), 0);
        check_output(out, ref, lab, n, h + 4, w + 4, 3);
        free(ref);

        ref = pad_ref(img, n, h, w, 1, 1, 0);
        assert_int_equal(run(fx, "idx", "--images", ip, "--pad=1", "--chunk", "2", "--output", out, NULL), 0);
        check_output(out, ref, NULL, n, h + 2, w + 2, 1);
        free(ref);
    }
}

static void test_npy(void **state)
{
    struct fixture *fx = *state;
    uint8_t img[4 * 3 * 5 * 3];
    int64_t lab64[4] = {3, -1, 7, 100000};
    int32_t lab[4] = {3, -1, 7, 100000};
    size_t s3[3] = {4, 3, 5}, s4[4] = {4, 3, 5, 3}, s1[1] = {4};
    char *a3 = path_in(fx, fx->dir, "a3.npy"), *a4 = path_in(fx, fx->dir, "a4.npy"), *l = path_in(fx, fx->dir, "l.npy");
    char *out = path_in(fx, fx->out_dir, "npy.h5");

    fill_random(img, sizeof img, 2);
    write_npy(a3, "|u1", 3, s3, img, 4 * 3 * 5);
    write_npy(a4, "|u1", 4, s4, img, sizeof img);
    write_npy(l, "<i8", 1, s1, lab64, sizeof lab64);
    assert_int_equal(run(fx, "npy", a3, "--labels", l, "-o", out, NULL), 0);
    check_output(out, img, lab, 4, 3, 5, 1);
    assert_int_equal(run(fx, "npy", a4, "-o", out, NULL), 0);
    check_output(out, img, NULL, 4, 3, 5, 3);
    uint8_t *ref = pad_ref(img, 4, 3, 5, 3, 1, 0);
    assert_int_equal(run(fx, "npy", a4, "--pad", "1", "-o", out, "--deflate", "4", NULL), 0);
    check_output(out, ref, NULL, 4, 5, 7, 3);
    free(ref);
}

static void test_png(void **state)
{
    struct fixture *fx = *state;
    const uint32_t h = 4, w = 5;
    uint8_t grey[3 * 4 * 5], rgb[4 * 4 * 5 * 3], rgba[4 * 5 * 4];
    int32_t lab[4] = {0, 0, 1, 1};
    char *flat = path_in(fx, fx->dir, "flat"), *cls = path_in(fx, fx->dir, "classes");
    char *out = path_in(fx, fx->out_dir, "png.h5");
    char p[1024];

    fill_random(grey, sizeof grey, 3);
    fill_random(rgb, sizeof rgb, 4);
    mkdir(flat, 0755);
    for (int i = 0; i < 3; i++) {           /* sorted by name: img0, img1, img2 */
        snprintf(p, sizeof p, "%s/img%d.png", flat, 2 - i);
        write_png(p, grey + (2 - i) * h * w, h, w, 1);
    }
    snprintf(p, sizeof p, "%s/notes.txt", flat);   /* ignored */
    write_bytes(p, 0, "x", 1);
    assert_int_equal(run(fx, "png", flat, "-o", out, NULL), 0);
    check_output(out, grey, NULL, 3, h, w, 1);
    uint8_t *ref = pad_ref(grey, 3, h, w, 1, 0, 1);
    assert_int_equal(run(fx, "png", flat, "--rgb", "-o", out, NULL), 0);
    check_output(out, ref, NULL, 3, h, w, 3);
    free(ref);

    /* Class folders: cat/{a,b} and dog/{a (RGBA, opaque), b}; labels cat = 0, dog = 1. */
    mkdir(cls, 0755);
    snprintf(p, sizeof p, "%s/dog", cls);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/cat", cls);
    mkdir(p, 0755);
    const char *files[4] = {"cat/a.png", "cat/b.PNG", "dog/a.png", "dog/b.png"};
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s", cls, files[i]);
        if (i == 2) {
            for (size_t q = 0; q < h * w; q++) {
                memcpy(rgba + 4 * q, rgb + 2 * h * w * 3 + 3 * q, 3);
                rgba[4 * q + 3] = 255;
            }
            write_png(p, rgba, h, w, 4);
        } else {
            write_png(p, rgb + (size_t)i * h * w * 3, h, w, 3);
        }
    }
    assert_int_equal(run(fx, "png", cls, "-o", out, NULL), 0);
    check_output(out, rgb, lab, 4, h, w, 3);
    struct dataset ds;
    struct ft_err err = {{0}};
    char names[64];
    assert_int_equal(dataset_open(&ds, out, 0, 0, 0, &err), FT_OK);
    assert_int_equal(h5util_read_str_attr(ds.shards[0].file, "label_names", names, sizeof names), 1);
    assert_string_equal(names, "cat\ndog");
    dataset_close(&ds);

    /* A grey image among colour ones is tiled to RGB. */
    snprintf(p, sizeof p, "%s/dog/b.png", cls);
    write_png(p, grey, h, w, 1);
    uint8_t *mixed = malloc(sizeof rgb);
    memcpy(mixed, rgb, sizeof rgb);
    for (size_t q = 0; q < h * w; q++)
        memset(mixed + 3 * h * w * 3 + 3 * q, grey[q], 3);
    assert_int_equal(run(fx, "png", cls, "-o", out, NULL), 0);
    check_output(out, mixed, lab, 4, h, w, 3);
    free(mixed);
}

static void test_cifar10(void **state)
{
    struct fixture *fx = *state;
    enum { REC = 3073, PIX = 1024 };
    uint8_t raw[5 * REC], ref[5 * 3072];
    int32_t lab[5];
    char *b1 = path_in(fx, fx->dir, "data_batch_1.bin"), *b2 = path_in(fx, fx->dir, "data_batch_2.bin");
    char *out = path_in(fx, fx->out_dir, "c10.h5");

    fill_random(raw, sizeof raw, 5);
    for (int i = 0; i < 5; i++) {
        raw[i * REC] = (uint8_t)((i * 7) % 10);
        lab[i] = raw[i * REC];
        for (int p = 0; p < PIX; p++)       /* planes R, G, B → HWC */
            for (int k = 0; k < 3; k++)
                ref[i * 3072 + p * 3 + k] = raw[i * REC + 1 + k * PIX + p];
    }
    write_bytes(b1, 0, raw, 3 * REC);
    write_bytes(b2, 0, raw + 3 * REC, 2 * REC);
    assert_int_equal(run(fx, "cifar10", b1, b2, "-o", out, NULL), 0);
    assert_non_null(strstr(fx->output, "wrote 5 images 32x32x3 with labels"));
    check_output(out, ref, lab, 5, 32, 32, 3);
    uint8_t *padded = pad_ref(ref, 5, 32, 32, 3, 2, 0);
    assert_int_equal(run(fx, "cifar10", b1, b2, "-o", out, "--pad", "2", NULL), 0);
    check_output(out, padded, lab, 5, 36, 36, 3);
    free(padded);
}

/* The fashion-mnist command on a tiny stand-in for Debian's directory. */
static void test_fashion_mnist(void **state)
{
    struct fixture *fx = *state;
    uint8_t img[3 * 28 * 28], lab8[3] = {9, 0, 4};
    int32_t lab[3] = {9, 0, 4};
    uint32_t dims[3] = {3, 28, 28}, ldim[1] = {3};
    char *src = path_in(fx, fx->dir, "fm");
    char *outdir = path_in(fx, fx->out_dir, "data/fashion-mnist");   /* parents are made too */

    fill_random(img, sizeof img, 6);
    mkdir(src, 0755);
    write_idx(path_in(fx, src, "train-images-idx3-ubyte.gz"), 1, 3, dims, img, 0);
    write_idx(path_in(fx, src, "train-labels-idx1-ubyte.gz"), 1, 1, ldim, lab8, 0);
    write_idx(path_in(fx, src, "t10k-images-idx3-ubyte"), 0, 3, dims, img, 0);   /* plain also found */
    write_idx(path_in(fx, src, "t10k-labels-idx1-ubyte"), 0, 1, ldim, lab8, 0);
    assert_int_equal(run(fx, "fashion-mnist", outdir, "--src", src, NULL), 0);
    uint8_t *ref = pad_ref(img, 3, 28, 28, 1, 2, 0);
    check_output(path_in(fx, outdir, "train.h5"), ref, lab, 3, 32, 32, 1);
    check_output(path_in(fx, outdir, "test.h5"), ref, lab, 3, 32, 32, 1);
    free(ref);
    assert_int_equal(count_entries(outdir), 2);
}

static void test_bad_inputs(void **state)
{
    struct fixture *fx = *state;
    uint8_t img[4 * 3 * 3], lab8[4] = {0, 1, 2, 3};
    uint32_t dims[3] = {4, 3, 3}, ldim[1] = {4}, ldim3[1] = {3};
    char *out = path_in(fx, fx->out_dir, "bad.h5");
    char *ip = path_in(fx, fx->dir, "i.gz"), *lp = path_in(fx, fx->dir, "l.gz");
    char *bad;

    fill_random(img, sizeof img, 7);
    write_idx(ip, 1, 3, dims, img, 0);
    write_idx(lp, 1, 1, ldim, lab8, 0);

    bad = path_in(fx, fx->dir, "magic.gz");      /* bad magic: a labels header where images belong */
    uint8_t junk[16] = {0x12, 0x34, 0x56, 0x78};
    write_bytes(bad, 1, junk, sizeof junk);
    expect_failure(fx, run(fx, "idx", "--images", bad, "-o", out, NULL), bad, "bad magic number 0x12345678");
    expect_failure(fx, run(fx, "idx", "--images", lp, "-o", out, NULL), lp, "says 1 dimensions, expected 3");

    bad = path_in(fx, fx->dir, "trunc.gz");
    write_idx(bad, 1, 3, dims, img, 5);
    expect_failure(fx, run(fx, "idx", "--images", bad, "--labels", lp, "-o", out, NULL), bad, "truncated");
    bad = path_in(fx, fx->dir, "trunc.idx");
    write_idx(bad, 0, 3, dims, img, 1);
    expect_failure(fx, run(fx, "idx", "--images", bad, "-o", out, NULL), bad, "truncated");
    bad = path_in(fx, fx->dir, "cut.gz");        /* a gzip stream cut mid-way */
    write_idx(bad, 1, 3, dims, img, 0);
    struct stat st;
    stat(bad, &st);
    assert_int_equal(truncate(bad, st.st_size - 6), 0);
    expect_failure(fx, run(fx, "idx", "--images", bad, "-o", out, NULL), bad, "truncated or corrupt gzip");
    bad = path_in(fx, fx->dir, "long.idx");      /* trailing bytes */
    uint8_t more[4 * 3 * 3 + 2] = {0};
    memcpy(more, img, sizeof img);
    uint32_t dims_long[3] = {4, 3, 3};
    write_idx(bad, 0, 3, dims_long, more, 0);
    FILE *fp = fopen(bad, "ab");
    fputs("xy", fp);
    fclose(fp);
    expect_failure(fx, run(fx, "idx", "--images", bad, "-o", out, NULL), bad, "2 unexpected bytes");

    bad = path_in(fx, fx->dir, "l3.gz");
    write_idx(bad, 1, 1, ldim3, lab8, 0);
    expect_failure(fx, run(fx, "idx", "--images", ip, "--labels", bad, "-o", out, NULL), bad,
                   "has 3 labels but");
    expect_failure(fx, run(fx, "idx", "--images", path_in(fx, fx->dir, "nope.gz"), "-o", out, NULL),
                   path_in(fx, fx->dir, "nope.gz"), "cannot open");

    float f[4 * 3 * 3] = {0};
    size_t s3[3] = {4, 3, 3}, s1[1] = {3};
    bad = path_in(fx, fx->dir, "f.npy");
    write_npy(bad, "<f4", 3, s3, f, sizeof f);
    expect_failure(fx, run(fx, "npy", bad, "-o", out, NULL), bad, "dtype '<f4' is not uint8");
    bad = path_in(fx, fx->dir, "short.npy");
    write_npy(bad, "|u1", 3, s3, img, sizeof img - 1);
    expect_failure(fx, run(fx, "npy", bad, "-o", out, NULL), bad, "truncated");
    char *good = path_in(fx, fx->dir, "good.npy");
    write_npy(good, "|u1", 3, s3, img, sizeof img);
    bad = path_in(fx, fx->dir, "l3.npy");
    int32_t lab32[3] = {0, 1, 2};
    write_npy(bad, "<i4", 1, s1, lab32, sizeof lab32);
    expect_failure(fx, run(fx, "npy", good, "--labels", bad, "-o", out, NULL), bad, "has 3 labels but");
    expect_failure(fx, run(fx, "npy", ip, "-o", out, NULL), ip, "not a NumPy .npy file");

    uint8_t rec[2 * 3073] = {0};
    bad = path_in(fx, fx->dir, "c.bin");
    write_bytes(bad, 0, rec, 3073 + 100);
    expect_failure(fx, run(fx, "cifar10", bad, "-o", out, NULL), bad, "not a positive multiple of 3073");
    rec[3073] = 12;
    write_bytes(bad, 0, rec, 2 * 3073);
    expect_failure(fx, run(fx, "cifar10", bad, "-o", out, NULL), bad, "record 1 has label 12");

    char *dir = path_in(fx, fx->dir, "pngs"), p[1024];
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/a.png", dir);
    write_png(p, img, 3, 3, 1);
    snprintf(p, sizeof p, "%s/b.png", dir);
    write_png(p, img, 2, 3, 1);
    expect_failure(fx, run(fx, "png", dir, "-o", out, NULL), p, "is 3x2 (WxH) but");
    write_png(p, img, 3, 3, 1);
    snprintf(p, sizeof p, "%s/c.png", dir);
    write_bytes(p, 0, "not a png", 9);
    expect_failure(fx, run(fx, "png", dir, "-o", out, NULL), p, "not a readable PNG");
    uint8_t rgba[3 * 3 * 4] = {0};
    write_png(p, rgba, 3, 3, 4);
    expect_failure(fx, run(fx, "png", dir, "-o", out, NULL), p, "is not opaque");

    write_npy(good, "|u1", 4, (size_t[]){1, 3, 3, 3}, img, 27);
    expect_failure(fx, run(fx, "npy", good, "--rgb", "-o", out, NULL), good, "--rgb needs grey images");
}

static void test_usage(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(run(fx, "--help", NULL), 0);
    assert_non_null(strstr(fx->output, "usage: flowdata"));
    assert_int_equal(run(fx, NULL), 1);
    assert_int_equal(run(fx, "idx", "--images", "x", NULL), 1);
    assert_non_null(strstr(fx->output, "missing -o OUT"));
    assert_int_equal(run(fx, "idx", "--bogus", NULL), 1);
    assert_non_null(strstr(fx->output, "flowdata: --bogus: unknown option"));
    assert_int_equal(run(fx, "frobnicate", "-o", "x", NULL), 1);
    assert_non_null(strstr(fx->output, "unknown command 'frobnicate'"));
    assert_int_equal(run(fx, "idx", "--pad", "-3", NULL), 1);
    assert_int_equal(count_entries(fx->out_dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_idx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_npy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_png, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cifar10, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fashion_mnist, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_inputs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_usage, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
