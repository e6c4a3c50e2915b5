/* floweval CHECKPOINT DATASET: the exact test bits/dim of a checkpoint on a data set,
 * computed as training computes its test bits/dim (src/train.c trainer_eval;
 * glow-model.md §3): rank r of R takes the contiguous slice [⌊N·r/R⌋, ⌊N·(r+1)/R⌋),
 * every image gets one dequantization draw keyed by (seed, RNG_DEQUANT, TEST_PASS,
 * index), NLL_n = −(objective0_n + logdet_n + logp_n), and after one allreduce of
 * (ΣNLL, N): bpd = ΣNLL / (N·D·ln 2). Exit 0; 1 with one line "floweval: <file>: <reason>"
 * for a missing, damaged or mismatched input; 2 on bad usage. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "preprocess.h"
#include "tool_model.h"
#include "train.h"

static const char usage[] =
    "usage: floweval CHECKPOINT DATASET [options]\n"
    "\n"
    "Exact test bits/dim of a flowtrain checkpoint on a flowtrain-images data set (a file\n"
    "or a glob of shards), as training reports it. Under mpirun each rank evaluates a\n"
    "contiguous slice; the result does not depend on the number of ranks.\n"
    "\n"
    "  --batch B       images per forward pass on each rank (default: the checkpoint's\n"
    "                  train.batch divided by the number of ranks, as in training)\n"
    "  --seed S        dequantization noise seed (default: the checkpoint's train.seed,\n"
    "                  which reproduces training's test bits/dim)\n"
    "  --ema           evaluate the EMA weights (error if the checkpoint has none)\n"
    "  --no-ema        evaluate the raw parameters\n"
    "                  (default: the EMA weights exactly when training used them, i.e.\n"
    "                  train.ema is on)\n"
    "  --ema-beta B    the EMA beta in (0, 1), when train.ema_beta and train.beta2 are\n"
    "                  auto and the training set named by the checkpoint is unreadable\n"
    "  -h, --help      this text\n"
    "\n"
    "Prints one line: test bits/dim: X (N images, R ranks).\n"
    "Exit status: 0 done, 1 missing/damaged/mismatched input (one line), 2 bad usage.\n";

struct args {
    const char *ckpt, *data;
    size_t batch;           /* 0: default */
    uint64_t seed;
    int has_seed;
    enum tool_weights weights;
    double ema_beta;        /* 0: resolve */
    int help;
};

static int parse_u64(const char *opt, const char *v, uint64_t min, uint64_t *out, char *msg,
                     size_t size)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (!*v || *end || errno || v[0] == '-' || x < min) {
        snprintf(msg, size, "%s: '%s' is not an integer >= %llu", opt, v, (unsigned long long)min);
        return -1;
    }
    *out = x;
    return 0;
}

/* 0, or -1 with msg set. */
static int parse_args(struct args *a, int argc, char **argv, char *msg, size_t size)
{
    size_t n_pos = 0;
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            a->help = 1;
            return 0;
        } else if (!strcmp(s, "--ema")) {
            a->weights = TOOL_WEIGHTS_EMA;
        } else if (!strcmp(s, "--no-ema")) {
            a->weights = TOOL_WEIGHTS_PARAMS;
        } else if (!strcmp(s, "--batch") || !strcmp(s, "--seed") || !strcmp(s, "--ema-beta")) {
            if (i + 1 >= argc) {
                snprintf(msg, size, "%s needs a value", s);
                return -1;
            }
            const char *v = argv[++i];
            uint64_t x;
            if (!strcmp(s, "--batch")) {
                if (parse_u64(s, v, 1, &x, msg, size) < 0)
                    return -1;
                if (x > 1048576) {
                    snprintf(msg, size, "--batch: %s is above the limit 1048576", v);
                    return -1;
                }
                a->batch = (size_t)x;
            } else if (!strcmp(s, "--seed")) {
                if (parse_u64(s, v, 0, &a->seed, msg, size) < 0)
                    return -1;
                a->has_seed = 1;
            } else {
                char *end;
                a->ema_beta = strtod(v, &end);
                if (!*v || *end || !(a->ema_beta > 0 && a->ema_beta < 1)) {
                    snprintf(msg, size, "--ema-beta: '%s' is not a number in (0, 1)", v);
                    return -1;
                }
            }
        } else if (s[0] == '-' && s[1]) {
            snprintf(msg, size, "unknown option '%s'", s);
            return -1;
        } else if (n_pos < 2) {
            *(n_pos++ == 0 ? &a->ckpt : &a->data) = s;
        } else {
            snprintf(msg, size, "unexpected argument '%s'", s);
            return -1;
        }
    }
    if (n_pos < 2) {
        snprintf(msg, size, "needs a CHECKPOINT and a DATASET");
        return -1;
    }
    return 0;
}

/* 1 on every rank if any rank failed. Rank 0 prints its own message; when rank 0
 * did not fail, each failing rank prints its own, prefixed with its rank. */
static int agree(const struct dist *d, int failed, const struct ft_err *err)
{
    if (!dist_any(failed))
        return 0;
    int r0 = failed;
    dist_bcast(&r0, sizeof r0);
    if (failed && d->rank == 0)
        fprintf(stderr, "floweval: %s\n", err->msg);
    else if (failed && !r0)
        fprintf(stderr, "floweval: rank %d: %s\n", d->rank, err->msg);
    fflush(stderr);
    return 1;
}

/* Σ NLL over this rank's slice [lo, hi) of ds, in batches of g.batch_max. */
static int eval_slice(struct tool_model *m, struct dataset *ds, size_t lo, size_t hi,
                      uint64_t seed, double *sum, struct ft_err *err)
{
    const struct config_data *cd = &m->cfg.data;
    const size_t dim = m->g.dim, b = m->g.batch_max;
    uint64_t *idx = ft_malloc(b * sizeof *idx);
    uint8_t *pixels = ft_malloc(b * dim);
    ft_real *x = ft_malloc_aligned(b * dim * sizeof *x);
    double *obj0 = ft_malloc(b * sizeof *obj0);
    /* class-conditional models encode p(x|y): they need each image's label */
    const int need_labels = m->g.spec.ycond || m->g.spec.weight_y > 0;
    int32_t *labels = need_labels ? ft_malloc(b * sizeof *labels) : NULL;
    int rc = FT_OK;
    if (need_labels && !ds->has_labels) {
        ft_err_set(err, "the checkpoint's model is class-conditional (model.ycond or "
                   "model.weight_y) but the data set has no labels");
        rc = FT_ERR_DATA;
        hi = lo;
    }
    m->g.labels = labels;

    for (size_t s = lo; s < hi; s += b) {
        const size_t n = hi - s < b ? hi - s : b;
        for (size_t i = 0; i < n; i++)
            idx[i] = s + i;
        rc = dataset_read(ds, pixels, labels, idx, n, err);
        if (rc != FT_OK)
            break;
        preprocess_batch(x, obj0, pixels, idx, n, dim, (int)cd->n_bits, cd->preprocess,
                         cd->logit_alpha, seed, TEST_PASS, 0);
        glow_forward(&m->g, x, n, NULL);
        for (size_t i = 0; i < n; i++)
            *sum += -(obj0[i] + m->g.logdet[i] + m->g.logp[i]);
    }
    m->g.labels = NULL;
    free(labels);
    free(obj0);
    free(x);
    free(pixels);
    free(idx);
    return rc;
}

int main(int argc, char **argv)
{
    struct dist d;
    struct args a;
    struct tool_model m;
    struct dataset ds;
    struct ft_err err = {{0}};
    char msg[256] = "";
    int rc = FT_OK, status = 1;

    memset(&m, 0, sizeof m);
    memset(&ds, 0, sizeof ds);
    dist_init(&d, &argc, &argv);
    if (parse_args(&a, argc, argv, msg, sizeof msg) < 0 || a.help) {
        if (d.rank == 0 && a.help)
            fputs(usage, stdout);
        else if (d.rank == 0)
            fprintf(stderr, "floweval: %s (see floweval --help)\n", msg);
        dist_finalize();
        return a.help ? 0 : 2;
    }
    /* rank 0 verifies the checkpoint and reads its config; every rank builds the model */
    if (d.rank == 0)
        rc = tool_model_open(&m, a.ckpt, &err);
    if (agree(&d, rc != FT_OK, &err))
        goto done;
    dist_bcast(&m.cfg, sizeof m.cfg);
    dist_bcast(&m.st, sizeof m.st);
    m.path = a.ckpt;
    size_t batch = a.batch ? a.batch : m.cfg.train.batch / (size_t)d.size;
    if (batch == 0)
        batch = 1;
    rc = tool_model_build(&m, batch, &err);
    if (agree(&d, rc != FT_OK, &err))
        goto done;
    if (d.rank == 0)
        rc = tool_model_load(&m, a.weights, a.ema_beta, &err);
    if (agree(&d, rc != FT_OK, &err))
        goto done;
    dist_bcast(m.g.params, m.g.n_params * sizeof *m.g.params);
    dist_bcast(m.g.fbufs, m.g.n_fbufs * sizeof *m.g.fbufs);
    dist_bcast(m.g.ibufs, m.g.n_ibufs * sizeof *m.g.ibufs);
    dist_bcast(&m.ema, sizeof m.ema);

    rc = tool_model_open_data(&m.cfg, &ds, a.data, &err);
    if (agree(&d, rc != FT_OK, &err))
        goto done;
    const size_t n = ds.n;
    const size_t lo = n * (size_t)d.rank / (size_t)d.size;
    const size_t hi = n * (size_t)(d.rank + 1) / (size_t)d.size;
    double sums[2] = { 0, (double)(hi - lo) };
    rc = eval_slice(&m, &ds, lo, hi, a.has_seed ? a.seed : m.cfg.train.seed, &sums[0], &err);
    if (agree(&d, rc != FT_OK, &err))
        goto done;
    if (d.size > 1)
        dist_allreduce_sum_f64(sums, 2);
    const double bpd = sums[0] / (sums[1] * (double)m.g.dim * log(2.0));
    if (d.rank == 0) {
        printf("test bits/dim: %.10f (%zu images, %d rank%s)\n", bpd, n, d.size,
               d.size == 1 ? "" : "s");
        fflush(stdout);
    }
    status = 0;
done:
    dataset_close(&ds);
    tool_model_free(&m);
    dist_finalize();
    return status;
}
