/* flowsample CHECKPOINT COMMAND: the Glow demos (glow-model.md §10) as PNG grids.
 * grid: samples z = μ + e^ℓ⊙(T·ε) at several temperatures (sample_grid); interp:
 * encode images a and b at the bin centres u = 1/(2·n_bins), flatten e = (ε_0 …
 * ε_{L−2}, ε_top) and decode (1−t)·e_a + t·e_b; attribute: d = mean(e | label) −
 * mean(e | not label) over a labelled set, decode e_I + scale·α·d for each strength α.
 * Runs on rank 0. Exit 0 with one summary line; 1 with one line "flowsample: <file>:
 * <reason>" for a missing, damaged or mismatched input; 2 on bad usage. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "sample.h"
#include "tool_model.h"

#define MAX_LIST 64          /* temperatures or strengths */
#define MAX_COUNT 1024       /* samples per row, interpolation steps */

static const char usage[] =
    "usage: flowsample CHECKPOINT COMMAND [options] -o OUT.png\n"
    "\n"
    "Decodes images with a flowtrain checkpoint (the demos of the Glow paper).\n"
    "\n"
    "commands:\n"
    "  grid [--temps T,T,...] [--n N] [--seed S]\n"
    "      one row of N samples per temperature, the same latents in every row\n"
    "      (defaults: the checkpoint's run.sample_temperatures, run.sample_grid and\n"
    "      train.seed, which give the grids training wrote)\n"
    "  interp --data FILE --a I --b J [--steps K]\n"
    "      images I and J of FILE encoded at the bin centres, the latent line between\n"
    "      them decoded at K points (default 8): row = I, K decoded, J\n"
    "  attribute --data FILE --label L [--image I] [--strengths A,A,...] [--scale S]\n"
    "            [--limit N]\n"
    "      d = mean latent of FILE's images with label L minus the mean of the others\n"
    "      (the first N images; default all); image I (default 0) decoded from\n"
    "      e + S*A*d for each strength A (default -1,-0.5,0,0.5,1; S default 1)\n"
    "\n"
    "options:\n"
    "  -o, --output OUT   the PNG, written atomically\n"
    "  --ema, --no-ema    EMA weights / raw parameters (default: what training sampled\n"
    "                     with, the EMA when train.ema is on)\n"
    "  --ema-beta B       the EMA beta in (0, 1) when it is auto and the training set\n"
    "                     named by the checkpoint is unreadable\n"
    "  --batch B          images per forward or reverse pass (default 16)\n"
    "  -h, --help         this text\n"
    "\n"
    "Exit status: 0 done (one summary line), 1 missing/damaged/mismatched input (one\n"
    "line), 2 bad usage.\n";

enum command { CMD_GRID, CMD_INTERP, CMD_ATTRIBUTE };

struct args {
    const char *ckpt, *output, *data;
    enum command cmd;
    double temps[MAX_LIST], strengths[MAX_LIST];
    size_t n_temps, n_strengths;       /* 0: default */
    uint64_t n, seed, a, b, steps, label, image, limit, batch;
    int has_n, has_seed, has_a, has_b, has_label;
    double scale;
    enum tool_weights weights;
    double ema_beta;
};

/* Prints one usage error line; returns -1. */
static int bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "flowsample: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see flowsample --help)\n");
    va_end(ap);
    return -1;
}

static int parse_u64(const char *opt, const char *v, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (!*v || *end || errno || v[0] == '-' || x < min || x > max) {
        return bad_usage("%s: '%s' is not an integer in %" PRIu64 "..%" PRIu64, opt, v, min, max);
    }
    *out = x;
    return 0;
}

static int parse_double(const char *opt, const char *v, double *out)
{
    char *end;
    *out = strtod(v, &end);
    if (!*v || *end || !isfinite(*out))
        return bad_usage("%s: '%s' is not a finite number", opt, v);
    return 0;
}

/* A comma-separated list of finite numbers within [lo, hi]. */
static int parse_list(const char *opt, const char *v, double lo, double hi, double *out,
                      size_t *n)
{
    char buf[1024], *save = NULL;
    snprintf(buf, sizeof buf, "%s", v);
    *n = 0;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (*n == MAX_LIST)
            return bad_usage("%s: more than %d values", opt, MAX_LIST);
        if (parse_double(opt, tok, &out[*n]) < 0)
            return -1;
        if (out[*n] < lo || out[*n] > hi)
            return bad_usage("%s: '%s' is outside %g..%g", opt, tok, lo, hi);
        (*n)++;
    }
    if (*n == 0)
        return bad_usage("%s: '%s' is an empty list", opt, v);
    return 0;
}

/* 0, 1 for --help, or -1 after printing the usage error. */
static int parse_args(struct args *a, int argc, char **argv)
{
    memset(a, 0, sizeof *a);
    a->steps = 8;
    a->scale = 1.0;
    a->batch = 16;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
            return 1;
    if (argc < 3)
        return bad_usage("needs a CHECKPOINT and a COMMAND");
    a->ckpt = argv[1];
    if (!strcmp(argv[2], "grid"))
        a->cmd = CMD_GRID;
    else if (!strcmp(argv[2], "interp"))
        a->cmd = CMD_INTERP;
    else if (!strcmp(argv[2], "attribute"))
        a->cmd = CMD_ATTRIBUTE;
    else
        return bad_usage("unknown command '%s' (grid, interp or attribute)", argv[2]);
    for (int i = 3; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--ema")) {
            a->weights = TOOL_WEIGHTS_EMA;
            continue;
        }
        if (!strcmp(s, "--no-ema")) {
            a->weights = TOOL_WEIGHTS_PARAMS;
            continue;
        }
        if (s[0] != '-')
            return bad_usage("unexpected argument '%s'", s);
        if (i + 1 >= argc)
            return bad_usage("%s needs a value", s);
        const char *v = argv[++i];
        const int grid = a->cmd == CMD_GRID, interp = a->cmd == CMD_INTERP,
                  attr = a->cmd == CMD_ATTRIBUTE;
        int rc;
        if (!strcmp(s, "-o") || !strcmp(s, "--output")) {
            a->output = v;
            rc = 0;
        } else if (!strcmp(s, "--ema-beta")) {
            rc = parse_double(s, v, &a->ema_beta);
            if (rc == 0 && !(a->ema_beta > 0 && a->ema_beta < 1))
                rc = bad_usage("%s: '%s' is not in (0, 1)", s, v);
        } else if (!strcmp(s, "--batch")) {
            rc = parse_u64(s, v, 1, 65536, &a->batch);
        } else if (grid && !strcmp(s, "--temps")) {
            rc = parse_list(s, v, 0, 4, a->temps, &a->n_temps);
        } else if (grid && !strcmp(s, "--n")) {
            rc = parse_u64(s, v, 1, MAX_COUNT, &a->n);
            a->has_n = 1;
        } else if (grid && !strcmp(s, "--seed")) {
            rc = parse_u64(s, v, 0, UINT64_MAX, &a->seed);
            a->has_seed = 1;
        } else if ((interp || attr) && !strcmp(s, "--data")) {
            a->data = v;
            rc = 0;
        } else if (interp && !strcmp(s, "--a")) {
            rc = parse_u64(s, v, 0, UINT64_MAX, &a->a);
            a->has_a = 1;
        } else if (interp && !strcmp(s, "--b")) {
            rc = parse_u64(s, v, 0, UINT64_MAX, &a->b);
            a->has_b = 1;
        } else if (interp && !strcmp(s, "--steps")) {
            rc = parse_u64(s, v, 2, MAX_COUNT, &a->steps);
        } else if (attr && !strcmp(s, "--label")) {
            rc = parse_u64(s, v, 0, INT32_MAX, &a->label);
            a->has_label = 1;
        } else if (attr && !strcmp(s, "--image")) {
            rc = parse_u64(s, v, 0, UINT64_MAX, &a->image);
        } else if (attr && !strcmp(s, "--strengths")) {
            rc = parse_list(s, v, -1e6, 1e6, a->strengths, &a->n_strengths);
        } else if (attr && !strcmp(s, "--scale")) {
            rc = parse_double(s, v, &a->scale);
        } else if (attr && !strcmp(s, "--limit")) {
            rc = parse_u64(s, v, 1, UINT64_MAX, &a->limit);
        } else {
            rc = bad_usage("unknown option '%s' for %s", s, argv[2]);
        }
        if (rc < 0)
            return -1;
    }
    if (!a->output)
        return bad_usage("%s needs -o OUT.png", argv[2]);
    if (a->cmd != CMD_GRID && !a->data)
        return bad_usage("%s needs --data FILE", argv[2]);
    if (a->cmd == CMD_INTERP && !(a->has_a && a->has_b))
        return bad_usage("interp needs --a I and --b J");
    if (a->cmd == CMD_ATTRIBUTE && !a->has_label)
        return bad_usage("attribute needs --label L");
    if (a->cmd == CMD_ATTRIBUTE && !a->n_strengths) {
        const double def[] = { -1, -0.5, 0, 0.5, 1 };
        memcpy(a->strengths, def, sizeof def);
        a->n_strengths = 5;
    }
    return 0;
}

static void list_str(char *buf, size_t size, const double *v, size_t n)
{
    size_t at = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && at < size; i++)
        at += (size_t)snprintf(buf + at, size - at, "%s%g", i ? "," : "", v[i]);
}

static const char *weights_str(const struct tool_model *m)
{
    return m->ema ? "EMA weights" : "parameters";
}

static int cmd_grid(struct tool_model *m, const struct args *a, struct ft_err *err)
{
    const struct config *c = &m->cfg;
    const double *temps = a->n_temps ? a->temps : c->run.sample_temperatures;
    const size_t n_temps = a->n_temps ? a->n_temps : c->run.sample_temperatures_count;
    const size_t per_row = a->has_n ? a->n : c->run.sample_grid;
    const uint64_t seed = a->has_seed ? a->seed : c->train.seed;
    int rc = sample_grid(&m->g, a->output, temps, n_temps, per_row, seed, (int)c->data.n_bits,
                         c->data.preprocess, c->data.logit_alpha, err);
    if (rc != FT_OK)
        return rc;
    char ts[512];
    list_str(ts, sizeof ts, temps, n_temps);
    size_t oh, ow, sep;
    sample_grid_layout(n_temps * per_row, c->data.height, c->data.width, per_row, &oh, &ow, &sep);
    printf("grid: wrote %s (%zux%zu px): %zu rows of %zu samples at temperatures %s, seed %" PRIu64
           ", step %" PRIu64 ", %s\n", a->output, ow, oh, n_temps, per_row, ts, seed, m->st.step,
           weights_str(m));
    return FT_OK;
}

/* Reads images idx[0..n) of ds and encodes them into e (n, D); x: scratch n·D;
 * keep (may be NULL): the n_bits-quantized pixels as the model sees them. */
static int encode_images(struct tool_model *m, struct dataset *ds, const uint64_t *idx, size_t n,
                         ft_real *e, ft_real *x, uint8_t *pix, int32_t *labels,
                         struct ft_err *err)
{
    const size_t dim = m->g.dim, b = m->g.batch_max;
    for (size_t i = 0; i < n; i += b) {
        const size_t k = n - i < b ? n - i : b;
        int rc = dataset_read(ds, pix + i * dim, labels ? labels + i : NULL, idx + i, k, err);
        if (rc != FT_OK)
            return rc;
        tool_model_encode(m, e + i * dim, x + i * dim, pix + i * dim, k);
    }
    return FT_OK;
}

static int cmd_interp(struct tool_model *m, struct dataset *ds, const struct args *a,
                      struct ft_err *err)
{
    const struct config_data *cd = &m->cfg.data;
    const size_t dim = m->g.dim, steps = a->steps, cols = steps + 2;
    int rc = FT_ERR_DATA;
    ft_real *e = NULL, *x = NULL;
    uint8_t *pix = NULL, *imgs = NULL;

    if (m->g.spec.ycond || m->g.spec.weight_y > 0) {
        ft_err_set(err, "interp: the checkpoint's model is class-conditional (model.ycond or "
                   "model.weight_y); latent edits of such models are not supported");
        return FT_ERR_CONFIG;
    }
    if (a->a >= ds->n || a->b >= ds->n) {
        ft_err_set(err, "%s: image %" PRIu64 " is out of range (%zu images)", a->data,
                   a->a >= ds->n ? a->a : a->b, ds->n);
        return FT_ERR_DATA;
    }
    const uint64_t idx[2] = { a->a, a->b };
    e = ft_malloc_aligned((2 + steps) * dim * sizeof *e);
    x = ft_malloc_aligned((2 + steps) * dim * sizeof *x);
    pix = ft_malloc(2 * dim);
    imgs = ft_malloc(cols * dim);
    rc = encode_images(m, ds, idx, 2, e, x, pix, NULL, err);
    if (rc != FT_OK)
        goto cleanup;
    /* the two inputs as the model sees them (n_bits-quantized): x holds them preprocessed */
    postprocess_batch(imgs, x, 1, dim, (int)cd->n_bits, cd->preprocess, cd->logit_alpha);
    postprocess_batch(imgs + (cols - 1) * dim, x + dim, 1, dim, (int)cd->n_bits, cd->preprocess,
                      cd->logit_alpha);
    ft_real *path = e + 2 * dim;
    for (size_t k = 0; k < steps; k++) {
        const double t = (double)k / (double)(steps - 1);
        for (size_t j = 0; j < dim; j++)
            path[k * dim + j] = (ft_real)((1.0 - t) * e[j] + t * e[dim + j]);
    }
    tool_model_decode(m, imgs + dim, x, path, steps);
    /* t = 0 and t = 1 decode the encoder's own latents: exact reconstructions (§10) */
    int worst = 0;
    for (size_t j = 0; j < dim; j++) {
        int d0 = abs((int)imgs[dim + j] - (int)imgs[j]);
        int d1 = abs((int)imgs[steps * dim + j] - (int)imgs[(cols - 1) * dim + j]);
        if (d0 > worst)
            worst = d0;
        if (d1 > worst)
            worst = d1;
    }
    rc = sample_write_png(a->output, imgs, cols, cd->height, cd->width, cd->channels, cols, err);
    if (rc != FT_OK)
        goto cleanup;
    size_t oh, ow, sep;
    sample_grid_layout(cols, cd->height, cd->width, cols, &oh, &ow, &sep);
    printf("interp: wrote %s (%zux%zu px): images %" PRIu64 " and %" PRIu64 " of %s, %zu steps "
           "between them; end points reconstruct the inputs to %d grey levels; step %" PRIu64
           ", %s\n", a->output, ow, oh, a->a, a->b, a->data, steps, worst, m->st.step,
           weights_str(m));
cleanup:
    free(imgs);
    free(pix);
    free(x);
    free(e);
    return rc;
}

static int cmd_attribute(struct tool_model *m, struct dataset *ds, const struct args *a,
                         struct ft_err *err)
{
    const struct config_data *cd = &m->cfg.data;
    const size_t dim = m->g.dim, b = m->g.batch_max, ns = a->n_strengths;
    const size_t n = a->limit && a->limit < ds->n ? (size_t)a->limit : ds->n;
    const int32_t label = (int32_t)a->label;
    int rc = FT_ERR_DATA;
    double *sum_in = NULL, *sum_out = NULL;
    ft_real *e = NULL, *x = NULL, *edit = NULL;
    uint8_t *pix = NULL, *imgs = NULL;
    uint64_t *idx = NULL;
    int32_t *labels = NULL;

    if (m->g.spec.ycond || m->g.spec.weight_y > 0) {
        ft_err_set(err, "attribute: the checkpoint's model is class-conditional (model.ycond or "
                   "model.weight_y); latent edits of such models are not supported");
        return FT_ERR_CONFIG;
    }
    size_t n_in = 0, n_out = 0;

    if (!ds->has_labels) {
        ft_err_set(err, "%s: has no labels; an attribute vector needs a labelled data set "
                   "(e.g. flowdata idx --labels FILE)", a->data);
        return FT_ERR_DATA;
    }
    if (a->image >= ds->n) {
        ft_err_set(err, "%s: image %" PRIu64 " is out of range (%zu images)", a->data, a->image,
                   ds->n);
        return FT_ERR_DATA;
    }
    sum_in = ft_malloc(dim * sizeof *sum_in);
    sum_out = ft_malloc(dim * sizeof *sum_out);
    e = ft_malloc_aligned(b * dim * sizeof *e);
    x = ft_malloc_aligned((b > ns ? b : ns) * dim * sizeof *x);
    edit = ft_malloc_aligned(ns * dim * sizeof *edit);
    pix = ft_malloc(b * dim);
    imgs = ft_malloc(ns * dim);
    idx = ft_malloc(b * sizeof *idx);
    labels = ft_malloc(b * sizeof *labels);
    for (size_t s = 0; s < n; s += b) {
        const size_t k = n - s < b ? n - s : b;
        for (size_t i = 0; i < k; i++)
            idx[i] = s + i;
        rc = encode_images(m, ds, idx, k, e, x, pix, labels, err);
        if (rc != FT_OK)
            goto cleanup;
        for (size_t i = 0; i < k; i++) {
            const int with = labels[i] == label;
            double *acc = with ? sum_in : sum_out;
            n_in += (size_t)with;
            n_out += (size_t)!with;
            for (size_t j = 0; j < dim; j++)
                acc[j] += e[i * dim + j];
        }
    }
    rc = FT_ERR_DATA;
    if (n_in == 0 || n_out == 0) {
        ft_err_set(err, "%s: label %" PRId32 " %s in its %s%zu images: no contrast for an "
                   "attribute vector", a->data, label, n_in == 0 ? "never occurs" : "is on every image",
                   n < ds->n ? "first " : "", n);
        goto cleanup;
    }
    /* e of the edited image, then e + scale·α·d for each strength */
    idx[0] = a->image;
    rc = encode_images(m, ds, idx, 1, e, x, pix, NULL, err);
    if (rc != FT_OK)
        goto cleanup;
    double norm = 0;
    for (size_t j = 0; j < dim; j++) {
        const double dj = sum_in[j] / (double)n_in - sum_out[j] / (double)n_out;
        norm += dj * dj;
        for (size_t k = 0; k < ns; k++)
            edit[k * dim + j] = (ft_real)((double)e[j] + a->scale * a->strengths[k] * dj);
    }
    tool_model_decode(m, imgs, x, edit, ns);
    rc = sample_write_png(a->output, imgs, ns, cd->height, cd->width, cd->channels, ns, err);
    if (rc != FT_OK)
        goto cleanup;
    char ss[512];
    list_str(ss, sizeof ss, a->strengths, ns);
    size_t oh, ow, sep;
    sample_grid_layout(ns, cd->height, cd->width, ns, &oh, &ow, &sep);
    printf("attribute: wrote %s (%zux%zu px): image %" PRIu64 " of %s along label %" PRId32
           " (%zu with, %zu without, |d| = %.4g) at strengths %s x %g; step %" PRIu64 ", %s\n",
           a->output, ow, oh, a->image, a->data, label, n_in, n_out, sqrt(norm), ss, a->scale,
           m->st.step, weights_str(m));
cleanup:
    free(labels);
    free(idx);
    free(imgs);
    free(pix);
    free(edit);
    free(x);
    free(e);
    free(sum_out);
    free(sum_in);
    return rc;
}

static int run(const struct args *a, struct ft_err *err)
{
    struct tool_model m;
    struct dataset ds;
    int rc;

    memset(&ds, 0, sizeof ds);
    rc = tool_model_open(&m, a->ckpt, err);
    if (rc != FT_OK)
        return rc;
    if (m.cfg.data.channels != 1 && m.cfg.data.channels != 3) {
        ft_err_set(err, "%s: the model has %u channels; PNG grids need 1 (grey) or 3 (RGB)",
                   a->ckpt, m.cfg.data.channels);
        return FT_ERR_CONFIG;
    }
    if (a->data) {   /* the data set's shape is checked before the model is loaded */
        rc = tool_model_open_data(&m.cfg, &ds, a->data, err);
        if (rc != FT_OK)
            return rc;
    }
    rc = tool_model_build(&m, (size_t)a->batch, err);
    if (rc == FT_OK)
        rc = tool_model_load(&m, a->weights, a->ema_beta, err);
    if (rc == FT_OK)
        rc = a->cmd == CMD_GRID ? cmd_grid(&m, a, err)
           : a->cmd == CMD_INTERP ? cmd_interp(&m, &ds, a, err)
           : cmd_attribute(&m, &ds, a, err);
    dataset_close(&ds);
    tool_model_free(&m);
    return rc;
}

int main(int argc, char **argv)
{
    struct dist d;
    struct args a;
    struct ft_err err = {{0}};
    int status = 0;

    dist_init(&d, &argc, &argv);
    /* Decoding is rank 0's alone; other ranks of an mpirun only wait. */
    if (d.rank == 0) {
        int p = parse_args(&a, argc, argv);
        if (p == 1)
            fputs(usage, stdout);
        else if (p < 0)
            status = 2;
        else if (run(&a, &err) != FT_OK) {
            fprintf(stderr, "flowsample: %s\n", err.msg);
            status = 1;
        }
        fflush(stdout);
        fflush(stderr);
    }
    dist_finalize();
    return status;
}
