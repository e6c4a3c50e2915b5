/* floweval CHECKPOINT DATASET: the exact test bits/dim of a checkpoint on a data set,
 * computed as training computes its test bits/dim (src/train.c trainer_eval;
 * glow-model.md §3): rank r of R takes the contiguous slice [⌊N·r/R⌋, ⌊N·(r+1)/R⌋),
 * every image gets one dequantization draw keyed by (seed, RNG_DEQUANT, TEST_PASS,
 * index), NLL_n = −(objective0_n + logdet_n + logp_n), and after one allreduce of
 * (ΣNLL, N): bpd = ΣNLL / (N·D·ln 2). Exit 0; 1 with one line "floweval: <file>: <reason>"
 * for a missing, damaged or mismatched input; 2 on bad usage.
 * --check-memory-modes: one backward of the loss on the first B images in stored and
 * in reversible mode (model.memory), same parameters; prints the rebuilt stage inputs'
 * error and the gradients' relative L2 differences (beside those one ulp of input
 * rounding causes); exit 0 when every tensor's and the input gradient's are ≤ 1e-4 (or
 * --tol). floweval64 is the same program built in float64 (FT_REAL_DOUBLE): it
 * evaluates the float32 checkpoint's parameters, converted exactly, in float64. */
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
    "  --check-memory-modes\n"
    "                  instead of evaluating: run one backward on the first B images\n"
    "                  (default: the checkpoint's train.batch) with stored activations\n"
    "                  and again in reversible mode (model.memory), with the raw\n"
    "                  parameters unless --ema; print the error of the stage inputs the\n"
    "                  reverse pass rebuilt, how far the gradients differ, and how far\n"
    "                  moving every input by one ulp moves them (one rank); floweval64\n"
    "                  does the same in float64\n"
    "  --tol T         the bound of --check-memory-modes (default 1e-4)\n"
    "  -h, --help      this text\n"
    "\n"
    "Prints one line: test bits/dim: X (N images, R ranks).\n"
    "Exit status: 0 done, 1 missing/damaged/mismatched input (one line), 2 bad usage.\n"
    "With --check-memory-modes: 0 when every parameter tensor's gradient and the input\n"
    "gradient agree within --tol relative L2 (||g_rev - g_stored|| / ||g_stored||) and the\n"
    "forwards' bits/dim are identical, else 1.\n";

struct args {
    const char *ckpt, *data;
    size_t batch;           /* 0: default */
    uint64_t seed;
    int has_seed;
    enum tool_weights weights;
    double ema_beta;        /* 0: resolve */
    int check;              /* --check-memory-modes */
    double tol;             /* its bound */
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
    a->tol = 1e-4;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            a->help = 1;
            return 0;
        } else if (!strcmp(s, "--ema")) {
            a->weights = TOOL_WEIGHTS_EMA;
        } else if (!strcmp(s, "--no-ema")) {
            a->weights = TOOL_WEIGHTS_PARAMS;
        } else if (!strcmp(s, "--check-memory-modes")) {
            a->check = 1;
        } else if (!strcmp(s, "--batch") || !strcmp(s, "--seed") || !strcmp(s, "--ema-beta") ||
                   !strcmp(s, "--tol")) {
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
            } else if (!strcmp(s, "--tol")) {
                char *end;
                a->tol = strtod(v, &end);
                if (!*v || *end || !(a->tol > 0 && a->tol < 1)) {
                    snprintf(msg, size, "--tol: '%s' is not a number in (0, 1)", v);
                    return -1;
                }
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

/* ||a − b||², ||b||², max |a − b|, max |b| over n values, in double. */
struct diff {
    double d2, b2, dmax, bmax;
};

static struct diff diff_of(const ft_real *a, const ft_real *b, size_t n)
{
    struct diff f = { 0, 0, 0, 0 };
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]), v = fabs((double)b[i]);
        f.d2 += d * d;
        f.b2 += v * v;
        f.dmax = d > f.dmax || isnan(d) ? d : f.dmax;
        f.bmax = v > f.bmax ? v : f.bmax;
    }
    return f;
}

static double rel_l2(struct diff f)
{
    return f.b2 > 0 ? sqrt(f.d2 / f.b2) : f.d2 > 0 ? INFINITY : f.d2;
}

/* Gradients a (params, input) against the reference b of the same model. */
struct grad_cmp {
    const struct glow_tensor *worst;   /* largest relative L2 (NaN counts as largest) */
    double worst_rel, worst_max;       /* it; max over tensors of max|diff| / max|b| */
    double all, dx;                    /* relative L2 over every parameter, the input */
};

static struct grad_cmp compare_grads(const struct glow *g, const ft_real *ga, const ft_real *dxa,
                                     const ft_real *gb, const ft_real *dxb)
{
    struct grad_cmp c = { NULL, -1, 0, 0, 0 };
    for (size_t t = 0; t < g->n_tensors; t++) {
        const struct glow_tensor *gt = &g->tensors[t];
        if (gt->kind != TENSOR_PARAM)
            continue;
        struct diff f = diff_of(ga + gt->offset, gb + gt->offset, gt->numel);
        double r = rel_l2(f), q = f.bmax > 0 ? f.dmax / f.bmax : f.dmax > 0 ? INFINITY : 0;
        if (!(r <= c.worst_rel))
            c.worst_rel = r, c.worst = gt;
        c.worst_max = q > c.worst_max || isnan(q) ? q : c.worst_max;
    }
    c.all = rel_l2(diff_of(ga, gb, g->n_params));
    c.dx = rel_l2(diff_of(dxa, dxb, g->n_fwd * g->dim));
    return c;
}

/* zero_grad, forward, backward of the loss on x; returns the bits/dim Σ NLL / (n·D·ln 2). */
static double loss_pass(struct glow *g, const ft_real *x, const double *obj0,
                        const int32_t *labels, size_t n)
{
    const double scale = (double)n * (double)g->dim * log(2.0);
    double s = 0;
    g->labels = labels;
    glow_zero_grad(g);
    glow_forward(g, x, n, NULL);
    glow_backward(g, -1.0 / scale);
    g->labels = NULL;
    for (size_t i = 0; i < n; i++)
        s += -(obj0[i] + g->logdet[i] + g->logp[i]);
    return s / scale;
}

/* --check-memory-modes on m->g (stored mode, batch_max = B images): the same
 * backward in a reversible twin with the same parameters and buffers; prints the
 * figures and sets *pass. FT_OK, or an error about the data set. */
static int check_memory_modes(struct tool_model *m, struct dataset *ds, const char *path,
                              uint64_t seed, double tol, int *pass, struct ft_err *err)
{
    const struct config_data *cd = &m->cfg.data;
    struct glow *gs = &m->g, gr;
    const size_t n = gs->batch_max, dim = gs->dim;
    if (ds->n < n) {
        ft_err_set(err, "%s: has %zu images, fewer than the batch of %zu (pass --batch)", path,
                   ds->n, n);
        return FT_ERR_DATA;
    }
    const int need_labels = gs->spec.ycond || gs->spec.weight_y > 0;
    if (need_labels && !ds->has_labels) {
        ft_err_set(err, "%s: the checkpoint's model is class-conditional but the data set has "
                   "no labels", path);
        return FT_ERR_DATA;
    }
    struct ft_err e;
    FT_CHECK(glow_init(&gr, &gs->spec, n, 1, &e) == FT_OK, "reversible twin: %s", e.msg);
    memcpy(gr.params, gs->params, gs->n_params * sizeof *gs->params);
    memcpy(gr.fbufs, gs->fbufs, gs->n_fbufs * sizeof *gs->fbufs);
    memcpy(gr.ibufs, gs->ibufs, gs->n_ibufs * sizeof *gs->ibufs);
    uint64_t *idx = ft_malloc(n * sizeof *idx);
    uint8_t *pixels = ft_malloc(n * dim);
    ft_real *x = ft_malloc_aligned(n * dim * sizeof *x);
    double *obj0 = ft_malloc(n * sizeof *obj0);
    int32_t *labels = ft_malloc(n * sizeof *labels);
    ft_real *g0 = ft_malloc_aligned(gs->n_params * sizeof *g0);
    ft_real *dx0 = ft_malloc_aligned(n * dim * sizeof *dx0);
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    int rc = dataset_read(ds, pixels, labels, idx, n, err);
    if (rc != FT_OK)
        goto cleanup;
    preprocess_batch(x, obj0, pixels, idx, n, dim, (int)cd->n_bits, cd->preprocess,
                     cd->logit_alpha, seed, TEST_PASS, 0);
    const int32_t *y = need_labels ? labels : NULL;
    const double bpd_s = loss_pass(gs, x, obj0, y, n), bpd_r = loss_pass(&gr, x, obj0, y, n);

    printf("%s: %zu images of %s, %s weights, evaluated in %s\n", m->path, n, path,
           m->ema ? "EMA" : "raw", FT_REAL_NAME);
    printf("bits/dim of the forwards: stored %.10f, reversible %.10f (%s)\n", bpd_s, bpd_r,
           bpd_s == bpd_r ? "identical" : "DIFFERENT");
    printf("stage inputs rebuilt by the reverse pass vs stored:\n");
    for (size_t i = 0; i < gs->n_levels; i++) {
        size_t h, w, c;
        glow_level_shape(gs, i, &h, &w, &c);
        struct diff f = diff_of(glow_stage_input(&gr, i), glow_stage_input(gs, i), n * h * w * c);
        printf("  stage %zu (%zux%zux%zu, %zu steps): max |diff| %.3e, relative L2 %.3e\n", i, h,
               w, c, glow_level_steps(gs, i), f.dmax, rel_l2(f));
    }
    const struct grad_cmp c = compare_grads(gs, gr.grads, gr.dx, gs->grads, gs->dx);
    printf("gradients, reversible vs stored, relative L2 ||g_rev - g_stored|| / ||g_stored||:\n");
    printf("  worst tensor %s: %.3e\n", c.worst ? c.worst->name : "(none)", c.worst_rel);
    printf("  all parameters: %.3e; input gradient: %.3e\n", c.all, c.dx);
    printf("  max over tensors of max|diff| / max|g_stored|: %.3e\n", c.worst_max);

    /* What rounding alone does: the stored gradient again, with every input
     * moved by one ulp (alternately up and down). */
    memcpy(g0, gs->grads, gs->n_params * sizeof *g0);
    memcpy(dx0, gs->dx, n * dim * sizeof *dx0);
    for (size_t i = 0; i < n * dim; i++)
        x[i] = ft_real_step(x[i], i % 2);
    loss_pass(gs, x, obj0, y, n);
    const struct grad_cmp u = compare_grads(gs, gs->grads, gs->dx, g0, dx0);
    printf("%s floor, stored with every input moved by 1 ulp vs stored:\n", FT_REAL_NAME);
    printf("  worst tensor %s: %.3e\n", u.worst ? u.worst->name : "(none)", u.worst_rel);
    printf("  all parameters: %.3e; input gradient: %.3e\n", u.all, u.dx);

    /* the forwards run the same kernels on the same data: their NLL must be identical */
    *pass = bpd_s == bpd_r && c.worst && c.worst_rel <= tol && c.dx <= tol;
    if (*pass)
        printf("PASS: every tensor's gradient and the input gradient agree within %g relative L2\n",
               tol);
    else if (bpd_s != bpd_r)
        printf("FAIL: the two forwards give different bits/dim\n");
    else if (!(c.dx <= tol))
        printf("FAIL: the input gradient differs by %.3e relative L2 (limit %g)\n", c.dx, tol);
    else
        printf("FAIL: tensor %s differs by %.3e relative L2 (limit %g)\n",
               c.worst ? c.worst->name : "(none)", c.worst_rel, tol);
    fflush(stdout);
cleanup:
    free(dx0);
    free(g0);
    free(labels);
    free(obj0);
    free(x);
    free(pixels);
    free(idx);
    glow_free(&gr);
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
    if (a.check && d.size > 1) {
        if (d.rank == 0)
            fprintf(stderr, "floweval: --check-memory-modes runs on one rank, not %d\n", d.size);
        dist_finalize();
        return 2;
    }
    /* rank 0 verifies the checkpoint and reads its config; every rank builds the model */
    if (d.rank == 0)
        rc = tool_model_open(&m, a.ckpt, &err);
    if (agree(&d, rc != FT_OK, &err))
        goto done;
    dist_bcast(&m.cfg, sizeof m.cfg);
    dist_bcast(&m.st, sizeof m.st);
    m.path = a.ckpt;
    if (a.check) {   /* m.g is the stored reference; the check builds the reversible twin */
        m.cfg.model.memory = MEMORY_STORED;
        if (a.weights == TOOL_WEIGHTS_AUTO)
            a.weights = TOOL_WEIGHTS_PARAMS;   /* gradients are for training's parameters */
    }
    size_t batch = a.batch ? a.batch : m.cfg.train.batch / (size_t)(a.check ? 1 : d.size);
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
    if (a.check) {
        int pass = 0;
        rc = check_memory_modes(&m, &ds, a.data, a.has_seed ? a.seed : m.cfg.train.seed, a.tol,
                                &pass, &err);
        if (rc != FT_OK)
            fprintf(stderr, "floweval: %s\n", err.msg);
        status = rc == FT_OK && pass ? 0 : 1;
        goto done;
    }
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
