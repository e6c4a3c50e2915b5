/* The training loop (glow-model.md §3, §11; distributed.md §2.4, §2.14–2.15).
 * Epoch e's order is a permutation from (seed, e); global batch k is positions
 * [kB, (k+1)B) and rank r reads its slice [kB + r·b, kB + (r+1)·b). Each rank
 * back-propagates Σ_n bits_n / B (γ = −1/(B·D·ln 2)), gradients are summed over
 * ranks, and one small allreduce of (Σnll, Σlogdet, count, bad) makes every rank
 * take the same skip/update decision; bpd = Σnll / (count·D·ln 2). */
#include "train.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "preprocess.h"
#include "rng.h"

/* Dequantization noise of test images is keyed apart from every training epoch. */
#define TEST_PASS (UINT64_C(1) << 62)

double ft_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int mkdir_p(const char *path, struct ft_err *err)
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

static void new_epoch_order(struct trainer *t)
{
    rng_permutation(t->order, t->n_train, rng_key(t->cfg->train.seed, RNG_PERMUTE, t->epoch, 0));
}

static void load_batch(struct trainer *t, const uint64_t *idx, size_t count, struct dataset *ds,
                       uint64_t pass)
{
    const struct config_data *cd = &t->cfg->data;
    struct ft_err err;
    /* A read failure after a successful open is a damaged file mid-run: stop the job. */
    int rc = dataset_read(ds, t->pixels, NULL, idx, count, &err);
    FT_CHECK(rc == FT_OK, "%s", err.msg);
    preprocess_batch(t->x, t->obj0, t->pixels, idx, count, t->dim, (int)cd->n_bits,
                     cd->preprocess, cd->logit_alpha, t->cfg->train.seed, pass, 0);
}

static double example_nll(const struct trainer *t, size_t i)
{
    return -(t->obj0[i] + t->g.logdet[i] + t->g.logp[i]);
}

static void ddi_pass(struct trainer *t)
{
    const struct dist *d = t->dist;
    size_t n = t->cfg->train.ddi_images < t->n_train ? t->cfg->train.ddi_images : t->n_train;
    size_t lo = n * (size_t)d->rank / (size_t)d->size, hi = n * (size_t)(d->rank + 1) / (size_t)d->size;
    /* The DDI set is the first n images of epoch 0's order, split unevenly if
     * need be; the sums are reduced over all ranks at each actnorm. */
    for (size_t i = lo; i < hi; i++)
        t->idx[i - lo] = t->order[i];
    FT_CHECK(hi > lo, "rank %d has no DDI images (train.ddi_images %u < ranks %d)", d->rank,
             t->cfg->train.ddi_images, d->size);
    load_batch(t, t->idx, hi - lo, &t->train, 0);
    struct ddi ddi = { dist_ddi_sum, NULL };
    glow_forward(&t->g, t->x, hi - lo, &ddi);
}

int trainer_init(struct trainer *t, const struct config *cfg, const struct dist *dist,
                 struct ft_err *err)
{
    memset(t, 0, sizeof *t);
    t->cfg = cfg;
    t->dist = dist;
    t->t_start = ft_now();
    const struct config_data *cd = &cfg->data;
    int rc = dataset_open(&t->train, cd->train, cd->height, cd->width, cd->channels, err);
    if (rc != FT_OK)
        return rc;
    rc = dataset_open(&t->test, cd->test, cd->height, cd->width, cd->channels, err);
    if (rc != FT_OK)
        return rc;
    t->has_test = 1;
    t->batch = cfg->train.batch;
    if (t->batch % (size_t)dist->size != 0) {
        ft_err_set(err, "train.batch: global batch %zu is not divisible by the %d ranks",
                   t->batch, dist->size);
        return FT_ERR_CONFIG;
    }
    t->local = t->batch / (size_t)dist->size;
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
    t->order = ft_malloc(t->n_train * sizeof *t->order);
    t->idx = ft_malloc(bmax * sizeof *t->idx);
    t->pixels = ft_malloc(bmax * t->dim);
    t->x = ft_malloc_aligned(bmax * t->dim * sizeof *t->x);
    t->obj0 = ft_malloc(bmax * sizeof *t->obj0);

    if (dist->rank == 0) {
        rc = mkdir_p(cfg->run.dir, err);
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
           t->g.n_params, t->g.n_params * 4.0 / 1048576, t->g.n_acts * 4.0 / 1048576,
           t->g.n_work * 4.0 / 1048576);
    ft_log("data: %zu training images, %zu test images, %zu steps per epoch (%zu dropped), "
           "batch %zu = %d ranks x %zu", t->n_train, t->test.n, t->steps_per_epoch,
           t->n_train % t->batch, t->batch, dist->size, t->local);

    glow_init_params(&t->g, cfg->train.seed);
    new_epoch_order(t);
    double t0 = ft_now();
    ddi_pass(t);
    ft_log("data-dependent init on %zu images: %.2f s", n_ddi, ft_now() - t0);
    return FT_OK;
}

void trainer_free(struct trainer *t)
{
    if (t->metrics)
        fclose(t->metrics);
    dataset_close(&t->train);
    if (t->has_test)
        dataset_close(&t->test);
    glow_free(&t->g);
    optim_free(&t->opt);
    free(t->order);
    free(t->idx);
    free(t->pixels);
    free(t->x);
    free(t->obj0);
    memset(t, 0, sizeof *t);
}

int trainer_step(struct trainer *t)
{
    const struct config_train *ct = &t->cfg->train;
    const size_t b = t->local, first = t->pos + (size_t)t->dist->rank * b;
    for (size_t i = 0; i < b; i++)
        t->idx[i] = t->order[first + i];
    load_batch(t, t->idx, b, &t->train, t->epoch);

    glow_zero_grad(&t->g);
    glow_forward(&t->g, t->x, b, NULL);
    double sums[4] = { 0, 0, (double)b, 0 };   /* Σnll, Σlogdet, count, bad */
    for (size_t i = 0; i < b; i++) {
        sums[0] += example_nll(t, i);
        sums[1] += t->g.logdet[i];
    }
    if (!isfinite(sums[0]))
        sums[3] = 1;
    glow_backward(&t->g, -1.0 / ((double)t->batch * (double)t->dim * log(2.0)));
    if (t->inject_nan && t->dist->rank == (t->dist->size > 1 ? 1 : 0)) {
        t->g.grads[0] = NAN;
        t->inject_nan = 0;
    }
    if (t->dist->size > 1) {
        dist_allreduce_sum_f32(t->g.grads, t->g.n_params);
        dist_allreduce_sum_f64(sums, 4);
    }
    t->inject_nan = 0;
    double norm = optim_grad_norm(t->g.grads, t->g.n_params);
    t->last_loss_sum = sums[0];
    t->last_count = sums[2];
    t->last_grad_norm = norm;
    t->last_lr = optim_lr_at(ct->lr, t->images_seen, ct->warmup_images);
    int rc = FT_OK;
    if (sums[3] > 0 || !isfinite(norm)) {
        t->skipped++;
        t->bad_run++;
        ft_log("step %llu: non-finite %s, step skipped (%llu in a row, %llu in all)",
               (unsigned long long)t->step + 1, sums[3] > 0 ? "loss" : "gradient",
               (unsigned long long)t->bad_run, (unsigned long long)t->skipped);
        if (t->metrics)
            fprintf(t->metrics, "{\"event\":\"skip\",\"step\":%llu,\"skipped\":%llu}\n",
                    (unsigned long long)t->step + 1, (unsigned long long)t->skipped);
        if (t->bad_run >= ct->max_bad_steps)
            rc = FT_EXIT_NONFINITE;
    } else {
        t->bad_run = 0;
        optim_step(&t->opt, t->g.params, t->g.grads, norm, t->last_lr);
    }
    t->step++;
    t->images_seen += t->batch;
    t->pos += t->batch;
    if (t->pos + t->batch > t->n_train) {
        t->epoch++;
        t->pos = 0;
        new_epoch_order(t);
    }
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
    double sums[2] = { 0, 0 };
    for (size_t s = lo; s < hi; s += b) {
        size_t m = hi - s < b ? hi - s : b;
        for (size_t i = 0; i < m; i++)
            t->idx[i] = s + i;
        load_batch(t, t->idx, m, &t->test, TEST_PASS);
        glow_forward(&t->g, t->x, m, NULL);
        for (size_t i = 0; i < m; i++)
            sums[0] += example_nll(t, i);
        sums[1] += (double)m;
    }
    if (ema)
        memcpy(t->g.params, t->g.grads, t->g.n_params * sizeof *t->g.params);
    if (d->size > 1)
        dist_allreduce_sum_f64(sums, 2);
    return sums[0] / (sums[1] * (double)t->dim * log(2.0));
}

static void fmt_duration(char *buf, size_t size, double s)
{
    if (!isfinite(s) || s < 0)
        snprintf(buf, size, "?");
    else if (s >= 3600)
        snprintf(buf, size, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
    else
        snprintf(buf, size, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
}

/* Fraction of the run done, from whichever limit ends it first. */
static double progress(const struct trainer *t, double elapsed)
{
    const struct config_train *ct = &t->cfg->train;
    double f = 0;
    if (ct->max_steps)
        f = fmax(f, (double)t->step / (double)ct->max_steps);
    if (ct->epochs)
        f = fmax(f, (double)t->step / ((double)ct->epochs * (double)t->steps_per_epoch));
    if (ct->max_minutes > 0)
        f = fmax(f, elapsed / (60.0 * ct->max_minutes));
    return f;
}

static int finished(const struct trainer *t, double elapsed)
{
    const struct config_train *ct = &t->cfg->train;
    if (ct->max_steps && t->step >= ct->max_steps)
        return 1;
    if (ct->epochs && t->epoch >= ct->epochs)
        return 1;
    return ct->max_minutes > 0 && elapsed >= 60.0 * ct->max_minutes;
}

static void log_eval(struct trainer *t, double bpd, double elapsed)
{
    ft_log("%sstep %llu: test %.4f bits/dim (%zu images)%s",
           isatty(1) && !getenv("OMPI_COMM_WORLD_SIZE") ? "\n" : "",
           (unsigned long long)t->step, bpd, t->test.n, t->opt.ema ? " with EMA weights" : "");
    if (t->metrics) {
        fprintf(t->metrics, "{\"event\":\"test_bpd\",\"step\":%llu,\"epoch\":%llu,\"images\":%llu,"
                "\"test_bpd\":%.6f,\"wall_s\":%.3f}\n", (unsigned long long)t->step,
                (unsigned long long)t->epoch, (unsigned long long)t->images_seen, bpd, elapsed);
        fflush(t->metrics);
    }
}

int trainer_run(struct trainer *t)
{
    const struct config_train *ct = &t->cfg->train;
    double t0 = ft_now(), t_log = t0, loss = 0, cnt = 0;
    uint64_t img_log = t->images_seen;
    /* Under Open MPI a rank's stdout is a pty whatever mpirun writes to, so the
     * in-place line is used only when not launched by mpirun. */
    int tty = isatty(1) && !getenv("OMPI_COMM_WORLD_SIZE"), rc = FT_EXIT_OK;
    if (t->metrics)
        fprintf(t->metrics, "{\"event\":\"start\",\"world_size\":%d,\"params\":%zu}\n",
                t->dist->size, t->g.n_params);
    for (;;) {
        /* Wall-clock limits are decided on rank 0 and broadcast, so every rank stops
         * at the same step. */
        int stop = t->dist->rank == 0 && finished(t, ft_now() - t0);
        if (t->dist->size > 1)
            dist_bcast(&stop, sizeof stop);
        if (stop)
            break;
        rc = trainer_step(t);
        if (rc != FT_OK)
            break;
        if (isfinite(t->last_loss_sum)) {
            loss += t->last_loss_sum;
            cnt += t->last_count;
        }
        double now = ft_now(), elapsed = now - t0;
        if (t->step % ct->log_every == 0) {
            double bpd = loss / (cnt * (double)t->dim * log(2.0));
            double ips = (double)(t->images_seen - img_log) / (now - t_log);
            double f = progress(t, elapsed), eta = f > 0 ? elapsed * (1 - f) / f : NAN;
            char etas[32];
            fmt_duration(etas, sizeof etas, eta);
            if (t->dist->rank == 0) {
                printf("%sstep %llu | epoch %llu | train %.4f bpd | %.1f img/s | lr %.2e | "
                       "|g| %.3g | ETA %s%s", tty ? "\r" : "", (unsigned long long)t->step,
                       (unsigned long long)t->epoch, bpd, ips, t->last_lr, t->last_grad_norm,
                       etas, tty ? "   " : "\n");
                fflush(stdout);
            }
            if (t->metrics) {
                fprintf(t->metrics, "{\"step\":%llu,\"epoch\":%llu,\"images\":%llu,"
                        "\"train_bpd\":%.6f,\"lr\":%.6g,\"grad_norm\":%.6g,\"skipped\":%llu,"
                        "\"img_per_s\":%.2f,\"eta_s\":%.1f,\"wall_s\":%.3f,\"world_size\":%d}\n",
                        (unsigned long long)t->step, (unsigned long long)t->epoch,
                        (unsigned long long)t->images_seen, bpd, t->last_lr, t->last_grad_norm,
                        (unsigned long long)t->skipped, ips, isfinite(eta) ? eta : -1.0,
                        elapsed, t->dist->size);
                fflush(t->metrics);
            }
            loss = cnt = 0;
            t_log = now;
            img_log = t->images_seen;
        }
        if (ct->eval_every && t->step % ct->eval_every == 0)
            log_eval(t, trainer_eval(t), ft_now() - t0);
    }
    if (rc == FT_EXIT_NONFINITE) {
        ft_log("%sstopping: %llu consecutive non-finite steps (train.max_bad_steps)",
               tty ? "\n" : "", (unsigned long long)t->bad_run);
        return rc;
    }
    log_eval(t, trainer_eval(t), ft_now() - t0);
    if (t->metrics)
        fprintf(t->metrics, "{\"event\":\"stop\",\"step\":%llu,\"images\":%llu,\"skipped\":%llu}\n",
                (unsigned long long)t->step, (unsigned long long)t->images_seen,
                (unsigned long long)t->skipped);
    return rc;
}
