/* flowdata: converts image data sets to flowtrain-images HDF5 files
 * (docs/dataset-format.md): IDX (MNIST, Fashion-MNIST), CIFAR-10 binary batches,
 * NumPy .npy and PNG folders, with zero padding (H+2p, W+2p) and grey → RGB tiling;
 * `fashion-mnist` converts Debian's copy into train.h5 and test.h5 at 32x32x1,
 * `info` describes (and with --verify, reads every byte of) a data set.
 * Exit 0 on success, 1 with one line "flowdata: <file>: <what is wrong>" otherwise. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "check.h"
#include "convert.h"
#include "dataset.h"

#define BLOCK_BYTES ((size_t)4 << 20)   /* images converted per append, in input bytes */
#define FASHION_SRC "/usr/share/datasets/fashion-mnist"

/* Set by SIGINT / SIGTERM; the conversion loop then aborts, removing its temp file. */
static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

static const char usage[] =
    "usage: flowdata <command> [options]\n"
    "\n"
    "Converts images to a flowtrain-images HDF5 file (docs/dataset-format.md).\n"
    "\n"
    "commands:\n"
    "  idx --images FILE [--labels FILE] -o OUT   MNIST / Fashion-MNIST IDX files, gzip or plain\n"
    "  cifar10 FILE... -o OUT                     CIFAR-10 binary batches (data_batch_1.bin ...)\n"
    "  npy FILE [--labels FILE] -o OUT            NumPy uint8 [N,H,W] or [N,H,W,C]; labels: integer [N]\n"
    "  png DIR -o OUT                             PNGs in DIR, or in DIR/<class>/ (labels = sorted\n"
    "                                             class folder index)\n"
    "  fashion-mnist OUTDIR [--src DIR]           Debian's Fashion-MNIST (" FASHION_SRC ")\n"
    "                                             to OUTDIR/train.h5 and OUTDIR/test.h5, 32x32x1\n"
    "  info PATH [--verify]                       describe a data set (a file or a glob of shards);\n"
    "                                             --verify reads every image (checksums)\n"
    "\n"
    "conversion options:\n"
    "  -o, --output OUT   output file, written atomically (temp file, fsync, rename)\n"
    "  --pad P            zero border of P pixels on every side (28x28 --pad 2 -> 32x32)\n"
    "  --rgb              tile grey images to 3 channels\n"
    "  --chunk K          images per HDF5 chunk (default: about 8 KiB per chunk, at most 64)\n"
    "  --deflate L        gzip level 0-9 for the stored images (default 0, uncompressed)\n"
    "  -q, --quiet        no summary line\n"
    "  -h, --help         this text\n"
    "\n"
    "Exit status: 0 on success, 1 on any error (one line on stderr).\n";

struct cli {
    const char *cmd, *output, *images, *labels, *src;
    const char **pos;            /* positional arguments after the command */
    size_t n_pos;
    size_t pad, chunk;
    int deflate, rgb, quiet, verify;
};

/* Prints a usage error naming option name; returns 1. */
static int usage_error(const char *what, const char *name)
{
    fprintf(stderr, "flowdata: %s: %s (see flowdata --help)\n", name, what);
    return 1;
}

static int parse_size(const char *opt, const char *v, size_t max, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (!*v || *end || errno || v[0] == '-' || x > max) {
        fprintf(stderr, "flowdata: %s: '%s' is not an integer in 0..%zu\n", opt, v, max);
        return -1;
    }
    *out = (size_t)x;
    return 0;
}

/* Returns 0 to go on, 1 on a usage error (message printed), 2 after --help. */
static int parse_args(struct cli *cl, int argc, char **argv)
{
    memset(cl, 0, sizeof *cl);
    cl->pos = ft_malloc((size_t)argc * sizeof *cl->pos);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = NULL;
        char name[32];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            return 2;
        }
        if (a[0] != '-' || strcmp(a, "-") == 0) {
            if (!cl->cmd)
                cl->cmd = a;
            else
                cl->pos[cl->n_pos++] = a;
            continue;
        }
        const char *eq = strchr(a, '=');
        snprintf(name, sizeof name, "%.*s", eq ? (int)(eq - a) : (int)strlen(a), a);
        if (strcmp(name, "--rgb") == 0 || strcmp(name, "-q") == 0 || strcmp(name, "--quiet") == 0 ||
            strcmp(name, "--verify") == 0) {
            if (eq)
                return usage_error("takes no value", name);
            if (strcmp(name, "--rgb") == 0)
                cl->rgb = 1;
            else if (strcmp(name, "--verify") == 0)
                cl->verify = 1;
            else
                cl->quiet = 1;
            continue;
        }
        const char *with_value[] = {"-o", "--output", "--images", "--labels", "--pad", "--chunk",
                                    "--deflate", "--src"};
        int known = 0;
        for (size_t k = 0; k < sizeof with_value / sizeof *with_value; k++)
            known |= strcmp(name, with_value[k]) == 0;
        if (!known)
            return usage_error("unknown option", name);
        if (eq)
            val = eq + 1;
        else if (i + 1 < argc)
            val = argv[++i];
        else
            return usage_error("needs a value", name);
        size_t v = 0;
        if (strcmp(name, "-o") == 0 || strcmp(name, "--output") == 0)
            cl->output = val;
        else if (strcmp(name, "--images") == 0)
            cl->images = val;
        else if (strcmp(name, "--labels") == 0)
            cl->labels = val;
        else if (strcmp(name, "--src") == 0)
            cl->src = val;
        else if (strcmp(name, "--pad") == 0 && parse_size(name, val, 4096, &cl->pad) != 0)
            return 1;
        else if (strcmp(name, "--chunk") == 0 && parse_size(name, val, 1u << 20, &cl->chunk) != 0)
            return 1;
        else if (strcmp(name, "--deflate") == 0) {
            if (parse_size(name, val, 9, &v) != 0)
                return 1;
            cl->deflate = (int)v;
        }
    }
    if (!cl->cmd) {
        fputs(usage, stderr);
        return 1;
    }
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Streams src through pad / tile into out. */
static int convert_to(struct convert_source *src, const char *out, const struct cli *cl, struct ft_err *err)
{
    int rc = FT_ERR_DATA;
    struct dataset_writer wr;
    struct dataset_writer_opts opts = {cl->chunk, cl->deflate, src->label_names};
    size_t oh = src->h + 2 * cl->pad, ow = src->w + 2 * cl->pad, oc = cl->rgb ? 3 : src->c;
    size_t in_img = src->h * src->w * src->c, out_img = oh * ow * oc;
    size_t block = BLOCK_BYTES / in_img ? BLOCK_BYTES / in_img : 1;
    uint8_t *in = NULL, *outb = NULL;
    int32_t *lab = NULL;
    char desc[1200];
    struct stat st;
    double t0 = now_s();
    int writing = 0;

    if (cl->rgb && src->c != 1) {
        ft_err_set(err, "%s: --rgb needs grey images, these have %zu channels", src->paths[0], src->c);
        goto cleanup;
    }
    if (cl->pad)
        snprintf(desc, sizeof desc, "%s; zero pad %zu%s", src->desc, cl->pad, cl->rgb ? "; grey tiled to RGB" : "");
    else
        snprintf(desc, sizeof desc, "%s%s", src->desc, cl->rgb ? "; grey tiled to RGB" : "");
    block = block > src->n ? src->n : block;
    in = ft_malloc(block * in_img);
    outb = (cl->pad || cl->rgb) ? ft_malloc(block * out_img) : in;
    lab = src->has_labels ? ft_malloc(block * sizeof *lab) : NULL;
    rc = dataset_writer_begin(&wr, out, src->n, oh, ow, oc, src->has_labels, desc, &opts, err);
    if (rc != FT_OK)
        goto cleanup;
    writing = 1;
    for (size_t done = 0; done < src->n; done += block) {
        size_t k = src->n - done < block ? src->n - done : block;
        if (stop_signal) {
            ft_err_set(err, "%s: interrupted by signal %d; nothing written", out, (int)stop_signal);
            rc = FT_ERR_IO;
            goto cleanup;
        }
        rc = convert_read(src, in, lab, k, err);
        if (rc != FT_OK)
            goto cleanup;
        if (outb != in)
            convert_pad_tile(outb, in, k, src->h, src->w, src->c, cl->pad, cl->rgb);
        rc = dataset_writer_append(&wr, outb, lab, k, err);
        if (rc != FT_OK)
            goto cleanup;
    }
    writing = 0;
    rc = dataset_writer_commit(&wr, err);
    if (rc == FT_OK && !cl->quiet) {
        double mb = stat(out, &st) == 0 ? (double)st.st_size / 1e6 : 0.0;
        printf("flowdata: wrote %zu images %zux%zux%zu%s to %s (%.1f MB, %.2f s)\n", src->n, oh, ow, oc,
               src->has_labels ? " with labels" : "", out, mb, now_s() - t0);
    }
cleanup:
    if (writing)
        dataset_writer_abort(&wr);
    if (outb != in)
        free(outb);
    free(in);
    free(lab);
    return rc;
}

/* dir/name.gz if it exists, else dir/name if that exists, else dir/name.gz (for the message). */
static void pick_idx(char *buf, size_t size, const char *dir, const char *name)
{
    struct stat st;
    const char *ext[3] = {".gz", "", ".gz"};
    for (int i = 0; i < 3; i++) {
        snprintf(buf, size, "%s/%s%s", dir, name, ext[i]);
        if (stat(buf, &st) == 0)
            return;
    }
}

/* mkdir -p: creates path and its missing parents. */
static int mkdir_p(const char *path)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static int cmd_fashion(const struct cli *cl, struct ft_err *err)
{
    const char *dir = cl->src ? cl->src : FASHION_SRC, *split[2][2] = {{"train", "train"}, {"t10k", "test"}};
    struct cli c = *cl;
    char img[4096], lab[4096], out[4096], name[64];
    struct stat st;

    if (cl->n_pos != 1) {
        ft_err_set(err, "fashion-mnist: expected one OUTDIR, got %zu arguments", cl->n_pos);
        return FT_ERR_CONFIG;
    }
    if (mkdir_p(cl->pos[0]) != 0) {
        ft_err_set(err, "%s: cannot create directory: %s", cl->pos[0], strerror(errno));
        return FT_ERR_IO;
    }
    if (stat(cl->pos[0], &st) != 0 || !S_ISDIR(st.st_mode)) {
        ft_err_set(err, "%s: is not a directory", cl->pos[0]);
        return FT_ERR_IO;
    }
    if (!cl->src && stat(dir, &st) != 0) {
        ft_err_set(err, "%s: missing (install Debian's dataset-fashion-mnist, or pass --src DIR)", dir);
        return FT_ERR_IO;
    }
    c.pad = 2;           /* 28x28 → 32x32x1 (glow-model.md §2); --pad/--rgb may override */
    if (cl->pad)
        c.pad = cl->pad;
    for (int s = 0; s < 2; s++) {
        struct convert_source src;
        snprintf(name, sizeof name, "%s-images-idx3-ubyte", split[s][0]);
        pick_idx(img, sizeof img, dir, name);
        snprintf(name, sizeof name, "%s-labels-idx1-ubyte", split[s][0]);
        pick_idx(lab, sizeof lab, dir, name);
        snprintf(out, sizeof out, "%s/%s.h5", cl->pos[0], split[s][1]);
        int rc = convert_open_idx(&src, img, lab, err);
        if (rc == FT_OK) {
            rc = convert_to(&src, out, &c, err);
            convert_close(&src);
        }
        if (rc != FT_OK)
            return rc;
    }
    return FT_OK;
}

static int cmd_info(const struct cli *cl, struct ft_err *err)
{
    struct dataset ds;
    char source[1024];
    int rc;

    if (cl->n_pos != 1) {
        ft_err_set(err, "info: expected one PATH, got %zu arguments", cl->n_pos);
        return FT_ERR_CONFIG;
    }
    rc = dataset_open(&ds, cl->pos[0], 0, 0, 0, err);
    if (rc != FT_OK)
        return rc;
    rc = dataset_source(&ds, 0, source, sizeof source, err);
    if (rc == FT_OK)
        printf("%s: %zu images %zux%zux%zu, %s, %zu shard%s; source: %s\n", cl->pos[0], ds.n, ds.h, ds.w,
               ds.c, ds.has_labels ? "labels" : "no labels", ds.n_shards, ds.n_shards == 1 ? "" : "s",
               source[0] ? source : "(none)");
    if (rc == FT_OK && cl->verify) {
        size_t img = ds.h * ds.w * ds.c, block = BLOCK_BYTES / img ? BLOCK_BYTES / img : 1;
        uint8_t *buf = ft_malloc(block * img);
        uint64_t *idx = ft_malloc(block * sizeof *idx);
        double sum = 0.0, t0 = now_s();
        for (size_t i = 0; rc == FT_OK && i < ds.n; i += block) {
            size_t k = ds.n - i < block ? ds.n - i : block;
            for (size_t j = 0; j < k; j++)
                idx[j] = i + j;
            rc = dataset_read(&ds, buf, NULL, idx, k, err);
            for (size_t j = 0; rc == FT_OK && j < k * img; j++)
                sum += buf[j];
        }
        if (rc == FT_OK)
            printf("%s: verified %zu images in %.2f s, mean pixel %.3f\n", cl->pos[0], ds.n, now_s() - t0,
                   sum / ((double)ds.n * (double)img));
        free(buf);
        free(idx);
    }
    dataset_close(&ds);
    return rc;
}

static int run(const struct cli *cl, struct ft_err *err)
{
    struct convert_source src;
    int rc;

    if (strcmp(cl->cmd, "fashion-mnist") == 0)
        return cmd_fashion(cl, err);
    if (strcmp(cl->cmd, "info") == 0)
        return cmd_info(cl, err);
    if (strcmp(cl->cmd, "idx") && strcmp(cl->cmd, "cifar10") && strcmp(cl->cmd, "npy") &&
        strcmp(cl->cmd, "png")) {
        ft_err_set(err, "unknown command '%s' (see flowdata --help)", cl->cmd);
        return FT_ERR_CONFIG;
    }
    if (!cl->output) {
        ft_err_set(err, "%s: missing -o OUT (see flowdata --help)", cl->cmd);
        return FT_ERR_CONFIG;
    }
    if (strcmp(cl->cmd, "idx") == 0) {
        if (!cl->images || cl->n_pos) {
            ft_err_set(err, "idx: expected --images FILE [--labels FILE] -o OUT");
            return FT_ERR_CONFIG;
        }
        rc = convert_open_idx(&src, cl->images, cl->labels, err);
    } else if (strcmp(cl->cmd, "cifar10") == 0) {
        if (!cl->n_pos) {
            ft_err_set(err, "cifar10: expected one or more batch files, e.g. data_batch_1.bin");
            return FT_ERR_CONFIG;
        }
        rc = convert_open_cifar10(&src, (char *const *)cl->pos, cl->n_pos, err);
    } else if (strcmp(cl->cmd, "npy") == 0) {
        if (cl->n_pos != 1) {
            ft_err_set(err, "npy: expected one FILE.npy [--labels FILE.npy]");
            return FT_ERR_CONFIG;
        }
        rc = convert_open_npy(&src, cl->pos[0], cl->labels, err);
    } else {
        if (cl->n_pos != 1) {
            ft_err_set(err, "png: expected one folder");
            return FT_ERR_CONFIG;
        }
        rc = convert_open_png(&src, cl->pos[0], err);
    }
    if (rc != FT_OK)
        return rc;
    rc = convert_to(&src, cl->output, cl, err);
    convert_close(&src);
    return rc;
}

int main(int argc, char **argv)
{
    struct cli cl;
    struct ft_err err = {{0}};
    struct sigaction sa;
    int rc;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;     /* reads and writes resume; the loop checks the flag */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    rc = parse_args(&cl, argc, argv);

    if (rc == 0 && run(&cl, &err) != FT_OK) {
        fprintf(stderr, "flowdata: %s\n", err.msg);
        rc = 1;
    }
    free(cl.pos);
    return rc == 2 ? 0 : rc;
}
