/* The training loop (glow-model.md §3, §11; distributed.md §2.1–2.15).
 * Epoch e's order is a permutation from (seed, e); global batch k is positions
 * [kB, (k+1)B) and rank r reads its slice [kB + r·b, kB + (r+1)·b), prefetched
 * on the I/O thread while the previous step computes. Each rank back-propagates
 * Σ_n bits_n / B (γ = −1/(B·D·ln 2)); gradients are summed over ranks (bucketed
 * and overlapped in fast mode, along a fixed tree of sample groups in
 * deterministic mode), and one small allreduce of (Σnll, Σlogdet, count, bad)
 * makes every rank take the same skip/update decision. */
#include "train.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "blas.h"
#include "preprocess.h"
#include "rng.h"


double ft_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int ft_mkdir_p(const char *path, struct ft_err *err)
{
    char buf[FT_CONFIG_PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
                ft_err_set(err, "run.dir: cannot create %s: %s", buf, strerror(errno));
                return FT_ERR_IO;
            }
            *p = c;
            if (c == '\0')
                break;
        }
    }
    return FT_OK;
}

/* ---------- batches on the I/O thread ---------- */

static void load_job(void *arg)
{
    struct batch *bt = arg;
    const struct trainer *t = bt->t;
    const struct config_data *cd = &t->cfg->data;
    struct ft_err err;
    /* A read failure after a successful open is a damaged file mid-run: stop the job. */
    int rc = dataset_read(bt->ds, bt->pixels, bt->labels, bt->idx, bt->count, &err);
    FT_CHECK(rc == FT_OK, "%s", err.msg);
    preprocess_batch(bt->x, bt->obj0, bt->pixels, bt->idx, bt->count, t->dim, (int)cd->n_bits,
                     cd->preprocess, cd->logit_alpha, t->cfg->train.seed, bt->pass, 0);
}

/* Queues the read of bt->idx[0..count). */
static void load_async(struct trainer *t, struct batch *bt, size_t count, struct dataset *ds,
                       uint64_t pass)
{
    bt->count = count;
    bt->ds = ds;
    bt->pass = pass;
    iothread_submit(&t->io, &bt->job, load_job, bt);
}

static void order_for_epoch(struct trainer *t, uint64_t epoch)
{
    if (t->order_epoch == epoch)
        return;
    rng_permutation(t->order, t->n_train, rng_key(t->cfg->train.seed, RNG_PERMUTE, epoch, 0));
    t->order_epoch = epoch;
}

/* Queues this rank's slice of the global batch at (epoch, pos) into bt. */
static void prefetch(struct trainer *t, struct batch *bt, uint64_t epoch, uint64_t pos)
{
    order_for_epoch(t, epoch);
    const size_t first = pos + (size_t)t->dist->rank * t->local;
    for (size_t i = 0; i < t->local; i++)
        bt->idx[i] = t->order[first + i];
    load_async(t, bt, t->local, &t->train, epoch);
}

static double example_nll(const struct batch *bt, const struct glow *g, size_t i)
{
    return -(bt->obj0[i] + g->logdet[i] + g->logp[i]);
}

static void ddi_pass(struct trainer *t)
{
    const struct dist *d = t->dist;
    size_t n = t->cfg->train.ddi_images < t->n_train ? t->cfg->train.ddi_images : t->n_train;
    size_t lo = n * (size_t)d->rank / (size_t)d->size, hi = n * (size_t)(d->rank + 1) / (size_t)d->size;
    /* The DDI set is the first n images of epoch 0's order, split unevenly if
     * need be; the sums are reduced over all ranks at each actnorm. */
    FT_CHECK(hi > lo, "rank %d has no DDI images (train.ddi_images %u < ranks %d)", d->rank,
             t->cfg->train.ddi_images, d->size);
    order_for_epoch(t, 0);
    struct batch *bt = &t->bat[0];
    for (size_t i = lo; i < hi; i++)
        bt->idx[i - lo] = t->order[i];
    load_async(t, bt, hi - lo, &t->train, 0);
    iothread_wait(&t->io, &bt->job);
    struct ddi ddi = { dist_ddi_sum, NULL };
    t->g.labels = bt->labels;
    glow_forward(&t->g, bt->x, hi - lo, &ddi);
}

/* Class conditioning and the classifier head need a label for every image,
 * in 0..data.n_classes−1 (glow-model.md §9); the model aborts on others. */
static int check_labels(const struct config *cfg, const struct dataset *ds, const char *path,
                        struct ft_err *err)
{
    const char *field = cfg->model.ycond ? "model.ycond" : "model.weight_y";
    if (!cfg->model.ycond && !(cfg->model.weight_y > 0))
        return FT_OK;
    if (!ds->has_labels) {
        ft_err_set(err, "%s: class conditioning (model.ycond, model.weight_y > 0) needs "
                   "labels, but %s has none", field, path);
        return FT_ERR_CONFIG;
    }
    for (size_t i = 0; i < ds->n; i++)
        if (ds->labels[i] < 0 || (uint32_t)ds->labels[i] >= cfg->data.n_classes) {
            ft_err_set(err, "data.n_classes: %s: label %d of image %zu is outside 0..%u",
                       path, (int)ds->labels[i], i, cfg->data.n_classes - 1);
            return FT_ERR_CONFIG;
        }
    return FT_OK;
}

static size_t floor_log2(size_t x)
{
    size_t l = 0;
    while (x >>= 1)
        l++;
    return l;
}

/* Everything in start-up that can fail on some ranks only; no collectives. */
static int setup(struct trainer *t, const struct config *cfg, const struct dist *dist,
                 struct ft_err *err)
{
    t->cfg = cfg;
    t->dist = dist;
    t->t_start = ft_now();
    t->order_epoch = UINT64_MAX;
    watchdog_start(&t->wd, dist->rank, cfg->run.watchdog_min_s);
    iothread_start(&t->io);
    const struct config_data *cd = &cfg->data;
    /* test hook: a training file that exists on every rank but this one */
    const char *miss = getenv("FT_TEST_MISSING_DATA_RANK");
    const char *train_path = miss && atoi(miss) == dist->rank ? "/nonexistent/train.h5" : cd->train;
    int rc = dataset_open(&t->train, train_path, cd->height, cd->width, cd->channels, err);
    if (rc != FT_OK)
        return rc;
    rc = dataset_open(&t->test, cd->test, cd->height, cd->width, cd->channels, err);
    if (rc != FT_OK)
        return rc;
    t->has_test = 1;
    rc = check_labels(cfg, &t->train, train_path, err);
    if (rc == FT_OK)
        rc = check_labels(cfg, &t->test, cd->test, err);
    if (rc != FT_OK)
        return rc;
    t->batch = cfg->train.batch;
    if (t->batch % (size_t)dist->size != 0) {
        ft_err_set(err, "train.batch: global batch %zu is not divisible by the %d ranks",
                   t->batch, dist->size);
        return FT_ERR_CONFIG;
    }
    t->local = t->batch / (size_t)dist->size;
    t->deterministic = cfg->train.reduce_mode == REDUCE_DETERMINISTIC;
    t->group = t->deterministic ? cfg->train.reduce_group : t->local;
    if (t->local % t->group != 0) {
        ft_err_set(err, "train.reduce_group: %zu samples per group do not tile the %zu samples "
                   "per rank (train.batch %zu over %d ranks)", t->group, t->local, t->batch,
                   dist->size);
        return FT_ERR_CONFIG;
    }
    t->n_groups = t->local / t->group;
    t->n_train = t->train.n;
    if (t->n_train < t->batch) {
        ft_err_set(err, "%s: %zu images, fewer than one global batch (train.batch %zu)",
                   cd->train, t->n_train, t->batch);
        return FT_ERR_DATA;
    }
    t->steps_per_epoch = t->n_train / t->batch;
    t->dim = (size_t)cd->height * cd->width * cd->channels;

    struct glow_spec spec;
    config_glow_spec(cfg, &spec);
    size_t n_ddi = cfg->train.ddi_images < t->n_train ? cfg->train.ddi_images : t->n_train;
    size_t bmax = t->local;
    size_t ddi_local = (n_ddi + (size_t)dist->size - 1) / (size_t)dist->size;
    if (ddi_local > bmax)
        bmax = ddi_local;
    rc = glow_init(&t->g, &spec, bmax, cfg->model.memory == MEMORY_REVERSIBLE, err);
    if (rc != FT_OK)
        return rc;
    double beta2 = cfg->train.beta2 > 0 ? cfg->train.beta2 : 1.0 - 1.0 / (double)t->steps_per_epoch;
    double ema_beta = cfg->train.ema_beta > 0 ? cfg->train.ema_beta : beta2;
    optim_init(&t->opt, cfg->train.optimizer, t->g.n_params, cfg->train.lr, cfg->train.beta1,
               beta2, cfg->train.clip_norm, cfg->train.ema, ema_beta);
    reducer_init(&t->red, &t->g, (size_t)cfg->train.bucket_mb << 20);
    t->grads_own = t->g.grads;
    if (t->deterministic && t->n_groups > 1) {
        t->tree_depth = floor_log2(t->n_groups) + 1;
        t->tree = ft_malloc((t->tree_depth + 2) * sizeof *t->tree);
        for (size_t i = 0; i < t->tree_depth + 2; i++)
            t->tree[i] = i == 0 ? t->grads_own : ft_malloc_aligned(t->g.n_params * sizeof(float));
    }
    t->order = ft_malloc(t->n_train * sizeof *t->order);
    for (int i = 0; i < 2; i++) {
        struct batch *bt = &t->bat[i];
        bt->t = t;
        bt->idx = ft_malloc(bmax * sizeof *bt->idx);
        bt->pixels = ft_malloc(bmax * t->dim);
        bt->labels = ft_malloc(bmax * sizeof *bt->labels);
        bt->x = ft_malloc_aligned(bmax * t->dim * sizeof *bt->x);
        bt->obj0 = ft_malloc(bmax * sizeof *bt->obj0);
    }

    if (dist->rank == 0) {
        rc = ft_mkdir_p(cfg->run.dir, err);
        if (rc != FT_OK)
            return rc;
        char path[FT_CONFIG_PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/config.yaml", cfg->run.dir);
        FILE *f = fopen(path, "w");
        if (!f || config_dump(cfg, f) != FT_OK || fclose(f) != 0) {
            ft_err_set(err, "run.dir: cannot write %s", path);
            return FT_ERR_IO;
        }
        snprintf(path, sizeof path, "%s/metrics.jsonl", cfg->run.dir);
        t->metrics = fopen(path, "a");
        if (!t->metrics) {
            ft_err_set(err, "run.dir: cannot open %s: %s", path, strerror(errno));
            return FT_ERR_IO;
        }
    }
    ft_log("model: %zu parameters (%.1f MiB per arena), activations %.1f MiB, workspace %.1f MiB",
           glow_param_count(&spec), t->g.n_params * 4.0 / 1048576, t->g.n_acts * 4.0 / 1048576,
           t->g.n_work * 4.0 / 1048576);
    ft_log("data: %zu training images, %zu test images, %zu steps per epoch (%zu dropped), "
           "batch %zu = %d ranks x %zu", t->n_train, t->test.n, t->steps_per_epoch,
           t->n_train % t->batch, t->batch, dist->size, t->local);
    /* libgomp's default wait lets a waiting thread sleep after 300,000 spins,
     * which cost 5-20% of the step with 2 threads here (README, Speed). */
    const char *wait = getenv("OMP_WAIT_POLICY"), *spin = getenv("GOMP_SPINCOUNT");
    const int nt = ft_threads();
    ft_log("threads: %d per rank, OpenMP wait policy %s%s", nt,
           wait ? wait : spin ? "GOMP_SPINCOUNT" : "default",
           nt > 1 && !wait && !spin
               ? " (OMP_WAIT_POLICY=active is faster when each thread has a core)" : "");
    if (t->deterministic)
        ft_log("reduction: deterministic, %zu groups of %zu samples per rank, %zu buckets",
               t->n_groups, t->group, t->red.n_buckets);
    else
        ft_log("reduction: fast (overlapped MPI_Iallreduce), %zu buckets", t->red.n_buckets);
    t->config_text = config_dump_string(cfg, NULL);
    if (dist->rank == 0)
        ckpt_snapshot_init(&t->snap, &t->g, &t->opt);
    t->best_test_bpd = NAN;
    return FT_OK;
}

uint64_t ft_env_u64(const char *name)
{
    const char *v = getenv(name);
    return v ? strtoull(v, NULL, 10) : 0;
}

static void fill_state(const struct trainer *t, struct train_state *st)
{
    memset(st, 0, sizeof *st);
    st->step = t->step;
    st->epoch = t->epoch;
    st->pos = t->pos;
    st->images_seen = t->images_seen;
    st->skipped = t->skipped;
    st->bad_run = t->bad_run;
    st->opt_t = t->opt.t;
    st->seed = t->cfg->train.seed;
    st->ddi_done = 1;
    st->world_size = t->dist->size;
    st->best_test_bpd = t->best_test_bpd;
    st->slurm_job_id = ft_env_u64("SLURM_JOB_ID");
    st->slurm_restart_count = ft_env_u64("SLURM_RESTART_COUNT");
    st->wall_s = t->wall_before + (ft_now() - t->t_start);
    st->log_loss = t->log_loss;
    st->log_count = t->log_count;
    st->log_bits_y = t->log_bits_y;
    st->log_errors = t->log_errors;
}

/* Rank 0 loads (resume "auto": the newest valid checkpoint of run.dir; else a
 * path) and broadcasts tensors, moments and state. Returns 1 if resumed, 0 to
 * start fresh, or a negative status (err set on rank 0, FT_ERR_PEER elsewhere). */
static int resume_from(struct trainer *t, const char *resume, struct ft_err *err)
{
    const int rank = t->dist->rank, is_auto = !strcmp(resume, "auto");
    struct train_state st;
    char path[FT_CONFIG_PATH_MAX + 64] = "";
    int code = 0;   /* 0 loaded, 1 nothing to resume, 2 error */
    if (rank == 0) {
        int rc;
        if (is_auto) {
            rc = checkpoint_load_latest(t->cfg->run.dir, t->cfg, &t->g, &t->opt, &st, path,
                                        sizeof path, err);
        } else {
            snprintf(path, sizeof path, "%s", resume);
            rc = checkpoint_load(resume, t->cfg, &t->g, &t->opt, &st, NULL, err);
        }
        code = rc == FT_OK ? 0 : (is_auto && rc == FT_ERR_CKPT) ? 1 : 2;
    }
    dist_bcast(&code, sizeof code);
    if (code == 2)
        return rank == 0 ? FT_ERR_CKPT : FT_ERR_PEER;
    if (code == 1) {
        ft_log("resume: no checkpoint in %s, starting fresh", t->cfg->run.dir);
        return 0;
    }
    struct glow *g = &t->g;
    dist_bcast(&st, sizeof st);
    dist_bcast(g->params, g->n_params * sizeof *g->params);
    dist_bcast(g->fbufs, g->n_fbufs * sizeof *g->fbufs);
    dist_bcast(g->ibufs, g->n_ibufs * sizeof *g->ibufs);
    dist_bcast(t->opt.m, t->opt.n * sizeof *t->opt.m);
    dist_bcast(t->opt.v, t->opt.n * sizeof *t->opt.v);
    if (t->opt.ema_w)
        dist_bcast(t->opt.ema_w, t->opt.n * sizeof *t->opt.ema_w);
    t->opt.t = st.opt_t;
    t->step = st.step;
    t->epoch = st.epoch;
    t->pos = st.pos;
    t->images_seen = st.images_seen;
    t->skipped = st.skipped;
    t->bad_run = st.bad_run;
    t->best_test_bpd = st.best_test_bpd;
    t->wall_before = st.wall_s;
    t->log_loss = st.log_loss;
    t->log_count = st.log_count;
    t->log_bits_y = st.log_bits_y;
    t->log_errors = st.log_errors;
    FT_CHECK(st.pos + t->batch <= t->n_train || st.pos == 0,
             "checkpoint position %llu does not fit a batch of %zu in %zu images",
             (unsigned long long)st.pos, t->batch, t->n_train);
    ft_log("resume: %s at step %llu (epoch %llu, %llu images seen), saved on %d rank%s, now %d",
           path, (unsigned long long)st.step, (unsigned long long)st.epoch,
           (unsigned long long)st.images_seen, st.world_size, st.world_size == 1 ? "" : "s",
           t->dist->size);
    if (st.seed != t->cfg->train.seed)
        ft_log("resume: warning: train.seed changed from %llu to %llu: the data order changes",
               (unsigned long long)st.seed, (unsigned long long)t->cfg->train.seed);
    return 1;
}

int trainer_init(struct trainer *t, const struct config *cfg, const struct dist *dist,
                 const char *resume, struct ft_err *err)
{
    memset(t, 0, sizeof *t);
    int rc = setup(t, cfg, dist, err);
    /* One agreement before the first collective: a rank that failed alone (a
     * missing file, an unwritable run directory) must not leave the others
     * waiting in DDI. The ranks that did not fail return FT_ERR_PEER. */
    if (dist_any(rc != FT_OK))
        return rc != FT_OK ? rc : FT_ERR_PEER;
    rc = resume && strcmp(resume, "none") ? resume_from(t, resume, err) : 0;
    if (rc < 0)
        return rc;
    if (rc == 0) {   /* fresh start; a resumed run never repeats DDI */
        const size_t n_ddi = cfg->train.ddi_images < t->n_train ? cfg->train.ddi_images : t->n_train;
        glow_init_params(&t->g, cfg->train.seed);
        double t0 = ft_now();
        ddi_pass(t);
        ft_log("data-dependent init on %zu images: %.2f s", n_ddi, ft_now() - t0);
    }
    t->last_ckpt_time = ft_now();
    t->ckpt_step = rc == 1 ? t->step : UINT64_MAX;
    dist_check_replicas(dist_hash(t->g.params, t->g.n_params * sizeof *t->g.params), 0);
    prefetch(t, &t->bat[t->cur], t->epoch, t->pos);
    return FT_OK;
}

static void ckpt_write_job(void *arg)
{
    struct trainer *t = arg;
    t->ckpt_rc = checkpoint_write(t->cfg->run.dir, &t->snap, t->cfg->run.keep_last,
                                  t->cfg->run.keep_every, &t->ckpt_seconds, &t->ckpt_err);
    if (t->ckpt_rc == FT_OK)
        ft_log("checkpoint: step %llu written in %.2f s", (unsigned long long)t->snap.state.step,
               t->ckpt_seconds);
    else
        ft_warn("checkpoint: %s", t->ckpt_err.msg);
}

int trainer_checkpoint(struct trainer *t, int wait)
{
    if (t->dist->rank != 0)
        return FT_OK;
    iothread_wait(&t->io, &t->ckpt_job);   /* a running write finishes first */
    struct train_state st;
    fill_state(t, &st);
    ckpt_snapshot_take(&t->snap, &t->g, &t->opt, &st, t->config_text);
    iothread_submit(&t->io, &t->ckpt_job, ckpt_write_job, t);
    t->last_ckpt_time = ft_now();
    t->ckpt_step = t->step;
    if (t->metrics) {
        fprintf(t->metrics, "{\"event\":\"checkpoint\",\"step\":%llu,\"images\":%llu}\n",
                (unsigned long long)t->step, (unsigned long long)t->images_seen);
        fflush(t->metrics);
    }
    if (!wait)
        return FT_OK;
    watchdog_phase(&t->wd, "checkpoint write", t->step, 600 + t->cfg->run.watchdog_min_s);
    iothread_wait(&t->io, &t->ckpt_job);
    return t->ckpt_rc;
}

void trainer_free(struct trainer *t)
{
    iothread_stop(&t->io);   /* runs what is queued: a pending checkpoint completes */
    if (t->dist && t->dist->rank == 0)
        ckpt_snapshot_free(&t->snap);
    free(t->config_text);
    watchdog_stop(&t->wd);
    if (t->metrics)
        fclose(t->metrics);
    dataset_close(&t->train);
    if (t->has_test)
        dataset_close(&t->test);
    if (t->tree) {
        for (size_t i = 1; i < t->tree_depth + 2; i++)
            free(t->tree[i]);
        free(t->tree);
    }
    if (t->grads_own)
        t->g.grads = t->grads_own;
    glow_free(&t->g);
    optim_free(&t->opt);
    reducer_free(&t->red);
    free(t->order);
    for (int i = 0; i < 2; i++) {
        free(t->bat[i].idx);
        free(t->bat[i].pixels);
        free(t->bat[i].labels);
        free(t->bat[i].x);
        free(t->bat[i].obj0);
    }
    memset(t, 0, sizeof *t);
}

/* Forward and backward of samples [lo, lo+n) of bt into g->grads; adds the
 * loss sums into sums. */
static void run_samples(struct trainer *t, const struct batch *bt, size_t lo, size_t n,
                        double *sums)
{
    struct glow *g = &t->g;
    glow_zero_grad(g);
    g->labels = bt->labels + lo;   /* read by ycond / classifier models only */
    glow_forward(g, bt->x + lo * t->dim, n, NULL);
    for (size_t i = 0; i < n; i++) {
        sums[0] += -(bt->obj0[lo + i] + g->logdet[i] + g->logp[i]);
        sums[1] += g->logdet[i];
        if (g->spec.weight_y > 0) {   /* classifier head: bits_y and errors */
            sums[6] += g->bits_y[i];
            sums[7] += g->pred_y[i] != bt->labels[lo + i];
        }
    }
    glow_backward(g, -1.0 / ((double)t->batch * (double)t->dim * log(2.0)));
}

static void add_into(float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        a[i] = a[i] + b[i];
}

/* Deterministic mode: each group's gradient on its own, combined along the
 * binary tree over group index (pairwise, left + right), then across ranks. */
static void grads_by_groups(struct trainer *t, const struct batch *bt, double *sums)
{
    struct glow *g = &t->g;
    const size_t n = g->n_params;
    if (t->n_groups == 1) {
        run_samples(t, bt, 0, t->group, sums);
    } else {
        float *pool[64];
        size_t n_pool = 0;
        for (size_t i = 0; i < t->tree_depth + 2; i++)
            pool[n_pool++] = t->tree[i];
        float *stack[64] = { 0 };        /* stack[level]: a pending subtree of 2^level groups */
        for (size_t j = 0; j < t->n_groups; j++) {
            float *cur = pool[--n_pool];
            g->grads = cur;
            run_samples(t, bt, j * t->group, t->group, sums);
            size_t level = 0;
            for (size_t k = j; k & 1; k >>= 1, level++) {
                add_into(stack[level], cur, n);   /* earlier subtree on the left */
                pool[n_pool++] = cur;
                cur = stack[level];
                stack[level] = NULL;
            }
            stack[level] = cur;
        }
        /* non-power-of-two counts leave several subtrees: fold from the latest */
        float *acc = NULL;
        for (size_t l = 0; l < 64; l++)
            if (stack[l]) {
                if (acc) {
                    add_into(stack[l], acc, n);
                    pool[n_pool++] = acc;
                }
                acc = stack[l];
            }
        g->grads = acc;
    }
    reducer_tree(&t->red, g->grads, t->n_groups);
    if (g->grads != t->grads_own) {
        memcpy(t->grads_own, g->grads, n * sizeof *g->grads);
        g->grads = t->grads_own;
    }
}

int trainer_step(struct trainer *t)
{
    const struct config_train *ct = &t->cfg->train;
    double t_step = ft_now();
    watchdog_phase(&t->wd, "data", t->step + 1, 0);
    struct batch *bt = &t->bat[t->cur];
    iothread_wait(&t->io, &bt->job);
    /* prefetch the next batch while this one computes */
    uint64_t next_epoch = t->epoch, next_pos = t->pos + t->batch;
    if (next_pos + t->batch > t->n_train) {
        next_epoch++;
        next_pos = 0;
    }
    t->cur = 1 - t->cur;
    prefetch(t, &t->bat[t->cur], next_epoch, next_pos);

    watchdog_phase(&t->wd, "forward/backward", t->step + 1, 0);
    /* Σnll, Σlogdet, count, bad, SIGUSR1 seen, SIGTERM seen */
    double sums[8] = { 0, 0, (double)t->local, 0, ft_stop_signal == SIGUSR1,
                       ft_stop_signal == SIGTERM, 0, 0 };   /* + Σbits_y, errors */
    if (t->deterministic) {
        grads_by_groups(t, bt, sums);
    } else {
        t->g.grads_ready = reducer_ready;
        t->g.grads_ready_ctx = &t->red;
        reducer_begin(&t->red, t->g.grads);
        run_samples(t, bt, 0, t->local, sums);
        t->g.grads_ready = NULL;
        watchdog_phase(&t->wd, "gradient allreduce", t->step + 1, 0);
        reducer_finish(&t->red);
    }
    if (!isfinite(sums[0]))
        sums[3] = 1;
    if (t->inject_nan && t->dist->rank == (t->dist->size > 1 ? 1 : 0))
        t->g.grads[0] = NAN;   /* after the reduction: only this rank's copy is bad */
    t->inject_nan = 0;
    watchdog_phase(&t->wd, "metrics allreduce", t->step + 1, 0);
    if (t->dist->size > 1)
        dist_allreduce_sum_f64(sums, 8);
    /* every rank stops at the same step, at most one after any rank saw a signal */
    if (!t->stop_sig)
        t->stop_sig = sums[5] > 0 ? SIGTERM : sums[4] > 0 ? SIGUSR1 : 0;
    double norm = optim_grad_norm(t->g.grads, t->g.n_params);
    /* every rank decides from the same flags: a NaN on one rank skips everywhere */
    int bad = dist_any(sums[3] > 0 || !isfinite(norm));
    t->last_loss_sum = sums[0];
    t->last_count = sums[2];
    t->last_bits_y = sums[6];
    t->last_errors = sums[7];
    t->last_grad_norm = norm;
    t->last_lr = optim_lr_at(ct->lr, t->images_seen, ct->warmup_images);
    int rc = FT_OK;
    if (bad) {
        t->skipped++;
        t->bad_run++;
        ft_log("step %llu: non-finite %s, step skipped (%llu in a row, %llu in all)",
               (unsigned long long)t->step + 1, sums[3] > 0 ? "loss" : "gradient",
               (unsigned long long)t->bad_run, (unsigned long long)t->skipped);
        if (t->metrics) {
            fprintf(t->metrics, "{\"event\":\"skip\",\"step\":%llu,\"skipped\":%llu}\n",
                    (unsigned long long)t->step + 1, (unsigned long long)t->skipped);
            fflush(t->metrics);
        }
        if (t->bad_run >= ct->max_bad_steps)
            rc = FT_EXIT_NONFINITE;
    } else {
        t->bad_run = 0;
        optim_step(&t->opt, t->g.params, t->g.grads, norm, t->last_lr);
    }
    t->step++;
    t->images_seen += t->batch;
    t->epoch = next_epoch;
    t->pos = next_pos;
    const char *perturb = getenv("FT_TEST_PERTURB_RANK");   /* test hook: replica check */
    if (perturb && atoi(perturb) == t->dist->rank && t->step == 2)
        t->g.params[0] += 1.0f;
    if (t->step % t->cfg->run.hash_every == 0) {
        watchdog_phase(&t->wd, "replica check", t->step, 0);
        dist_check_replicas(dist_hash(t->g.params, t->g.n_params * sizeof *t->g.params), t->step);
    }
    t->last_step_s = ft_now() - t_step;
    watchdog_step_time(&t->wd, t->last_step_s);
    return rc;
}

double trainer_eval(struct trainer *t)
{
    const struct dist *d = t->dist;
    const size_t n = t->test.n, b = t->local;
    /* Contiguous, possibly uneven slices: every test image counts exactly once. */
    size_t lo = n * (size_t)d->rank / (size_t)d->size, hi = n * (size_t)(d->rank + 1) / (size_t)d->size;
    int ema = t->opt.ema && t->opt.t > 0;
    if (ema) {   /* evaluate with the EMA weights; the gradient arena holds θ meanwhile */
        memcpy(t->g.grads, t->g.params, t->g.n_params * sizeof *t->g.params);
        optim_ema_weights(&t->opt, t->g.params);
    }
    /* The training prefetch (in bat[cur]) must finish before its buffer pair is
     * reused; eval then double-buffers through bat[0] and bat[1] and re-queues it. */
    iothread_wait(&t->io, &t->bat[t->cur].job);
    double sums[4] = { 0, 0, 0, 0 };   /* Σnll, count, Σbits_y, errors */
    int k = 0;
    size_t s = lo;
    if (s < hi) {
        size_t m = hi - s < b ? hi - s : b;
        for (size_t i = 0; i < m; i++)
            t->bat[k].idx[i] = s + i;
        load_async(t, &t->bat[k], m, &t->test, TEST_PASS);
    }
    while (s < hi) {
        struct batch *bt = &t->bat[k];
        iothread_wait(&t->io, &bt->job);
        size_t m = bt->count, s2 = s + m;
        if (s2 < hi) {   /* queue the next test batch */
            size_t m2 = hi - s2 < b ? hi - s2 : b;
            for (size_t i = 0; i < m2; i++)
                t->bat[1 - k].idx[i] = s2 + i;
            load_async(t, &t->bat[1 - k], m2, &t->test, TEST_PASS);
        }
        watchdog_phase(&t->wd, "test evaluation", t->step, 0);
        t->g.labels = bt->labels;
        glow_forward(&t->g, bt->x, m, NULL);
        for (size_t i = 0; i < m; i++)
            sums[0] += example_nll(bt, &t->g, i);
        if (t->g.spec.weight_y > 0)
            for (size_t i = 0; i < m; i++) {
                sums[2] += t->g.bits_y[i];
                sums[3] += t->g.pred_y[i] != bt->labels[i];
            }
        sums[1] += (double)m;
        s = s2;
        k = 1 - k;
    }
    if (ema)
        memcpy(t->g.params, t->g.grads, t->g.n_params * sizeof *t->g.params);
    if (d->size > 1)
        dist_allreduce_sum_f64(sums, 4);
    t->test_bits_y = sums[2] / sums[1];
    t->test_err = sums[3] / sums[1];
    prefetch(t, &t->bat[t->cur], t->epoch, t->pos);
    return sums[0] / (sums[1] * (double)t->dim * log(2.0));
}
