/* The run loop around trainer_step (distributed.md §2.7, §2.12, §2.15): limits,
 * the progress line and metrics.jsonl, periodic evaluation, sample grids and
 * checkpoints, and the agreed stop on SIGUSR1/SIGTERM (exit 99/98 after a
 * committed checkpoint). Only rank 0 prints and writes files. */
#include "train.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sample.h"

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
    const int head = t->g.spec.weight_y > 0;
    char cls[96] = "";
    if (head)
        snprintf(cls, sizeof cls, ", classifier %.4f bits, error %.2f%%", t->test_bits_y,
                 100 * t->test_err);
    ft_log("%sstep %llu: test %.4f bits/dim (%zu images)%s%s",
           isatty(1) && !getenv("OMPI_COMM_WORLD_SIZE") ? "\n" : "",
           (unsigned long long)t->step, bpd, t->test.n, t->opt.ema ? " with EMA weights" : "", cls);
    if (t->metrics) {
        fprintf(t->metrics, "{\"event\":\"test_bpd\",\"step\":%llu,\"epoch\":%llu,\"images\":%llu,"
                "\"test_bpd\":%.6f", (unsigned long long)t->step, (unsigned long long)t->epoch,
                (unsigned long long)t->images_seen, bpd);
        if (head)
            fprintf(t->metrics, ",\"test_bits_y\":%.6f,\"test_err\":%.6f", t->test_bits_y,
                    t->test_err);
        fprintf(t->metrics, ",\"wall_s\":%.3f}\n", elapsed);
        fflush(t->metrics);
    }
}

static void write_metrics_line(struct trainer *t, double now, double t0, double t_log,
                               uint64_t img_log)
{
    double elapsed = now - t0;
    double bpd = t->log_loss / (t->log_count * (double)t->dim * log(2.0));
    double ips = (double)(t->images_seen - img_log) / (now - t_log);
    double f = progress(t, elapsed), eta = f > 0 ? elapsed * (1 - f) / f : NAN;
    char etas[32];
    fmt_duration(etas, sizeof etas, eta);
    if (t->dist->rank == 0) {
        int tty = isatty(1) && !getenv("OMPI_COMM_WORLD_SIZE");
        printf("%sstep %llu | epoch %llu | train %.4f bpd | %.1f img/s | lr %.2e | "
               "|g| %.3g | ETA %s%s", tty ? "\r" : "", (unsigned long long)t->step,
               (unsigned long long)t->epoch, bpd, ips, t->last_lr, t->last_grad_norm,
               etas, tty ? "   " : "\n");
        fflush(stdout);
    }
    if (t->metrics) {
        fprintf(t->metrics, "{\"step\":%llu,\"epoch\":%llu,\"images\":%llu,"
                "\"train_bpd\":%.9f,\"lr\":%.9g,\"grad_norm\":%.9g,\"skipped\":%llu,",
                (unsigned long long)t->step, (unsigned long long)t->epoch,
                (unsigned long long)t->images_seen, bpd, t->last_lr, t->last_grad_norm,
                (unsigned long long)t->skipped);
        if (t->g.spec.weight_y > 0)   /* classifier head (glow-model.md §9) */
            fprintf(t->metrics, "\"train_bits_y\":%.9f,\"train_err\":%.6f,",
                    t->log_bits_y / t->log_count, t->log_errors / t->log_count);
        fprintf(t->metrics, "\"img_per_s\":%.2f,\"eta_s\":%.1f,\"wall_s\":%.3f,"
                "\"world_size\":%d}\n", ips, isfinite(eta) ? eta : -1.0,
                t->wall_before + (now - t->t_start), t->dist->size);
        fflush(t->metrics);
    }
    t->log_loss = t->log_count = t->log_bits_y = t->log_errors = 0;
}

/* Rank 0: a sample grid of the current weights (EMA when enabled). */
static void write_samples(struct trainer *t)
{
    const struct config *c = t->cfg;
    if (t->dist->rank != 0 || (c->data.channels != 1 && c->data.channels != 3))
        return;
    char path[FT_CONFIG_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/samples", c->run.dir);
    struct ft_err err;
    if (ft_mkdir_p(path, &err) != FT_OK) {
        ft_warn("samples: %s", err.msg);
        return;
    }
    snprintf(path, sizeof path, "%s/samples/step-%09llu.png", c->run.dir,
             (unsigned long long)t->step);
    int ema = t->opt.ema && t->opt.t > 0;
    if (ema) {
        memcpy(t->g.grads, t->g.params, t->g.n_params * sizeof *t->g.params);
        optim_ema_weights(&t->opt, t->g.params);
    }
    watchdog_phase(&t->wd, "samples", t->step, 0);
    t->g.labels = NULL;   /* class-conditional models: column e samples class e mod n_y */
    if (sample_grid(&t->g, path, c->run.sample_temperatures, c->run.sample_temperatures_count,
                    c->run.sample_grid, c->train.seed, (int)c->data.n_bits, c->data.preprocess,
                    c->data.logit_alpha, &err) != FT_OK)
        ft_warn("samples: %s", err.msg);
    if (ema)
        memcpy(t->g.params, t->g.grads, t->g.n_params * sizeof *t->g.params);
}

static void log_event(struct trainer *t, const char *fmt_json)
{
    if (t->metrics) {
        fprintf(t->metrics, "%s\n", fmt_json);
        fflush(t->metrics);
    }
}

/* Test hooks for the resume and preemption tests (tests/resume.sh):
 * FT_TEST_KILL_AT_STEP=N: every rank SIGKILLs itself after step N;
 * FT_TEST_SIGNAL_AT_STEP=N:SIG:RANK[:COUNT]: rank RANK raises signal SIG
 * (10 = SIGUSR1, 15 = SIGTERM) COUNT times after step N. */
static void test_hooks(const struct trainer *t)
{
    const char *k = getenv("FT_TEST_KILL_AT_STEP");
    if (k && t->step == strtoull(k, NULL, 10))
        raise(SIGKILL);
    const char *s = getenv("FT_TEST_SIGNAL_AT_STEP");
    unsigned long long step = 0;
    int sig = 0, rank = 0, count = 1;
    if (s && sscanf(s, "%llu:%d:%d:%d", &step, &sig, &rank, &count) >= 3 && t->step == step
        && t->dist->rank == rank)
        for (int i = 0; i < count; i++)
            raise(sig);
}

volatile sig_atomic_t ft_stop_signal = 0;

static void on_signal(int sig)
{
    if (!ft_stop_signal)   /* a second signal is ignored */
        ft_stop_signal = sig;
}

void trainer_install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int trainer_run(struct trainer *t)
{
    const struct config_train *ct = &t->cfg->train;
    const struct config_run *cr = &t->cfg->run;
    double t0 = ft_now(), t_log = t0;
    uint64_t img_log = t->images_seen;
    int rc = FT_EXIT_OK;
    /* each rank's PID in the run directory, so tests and operators can signal
     * exactly one process */
    char buf[FT_CONFIG_PATH_MAX + 256];
    snprintf(buf, sizeof buf, "%s/rank-%d.pid", cr->dir, t->dist->rank);
    FILE *pf = fopen(buf, "w");
    if (pf) {
        fprintf(pf, "%ld\n", (long)getpid());
        fclose(pf);
    }
    snprintf(buf, sizeof buf, "{\"event\":\"%s\",\"step\":%llu,\"world_size\":%d,"
             "\"params\":%zu,\"slurm_job_id\":%llu,\"slurm_restart_count\":%llu}",
             t->step ? "resume" : "start", (unsigned long long)t->step, t->dist->size,
             t->g.n_params, (unsigned long long)ft_env_u64("SLURM_JOB_ID"),
             (unsigned long long)ft_env_u64("SLURM_RESTART_COUNT"));
    log_event(t, buf);
    for (;;) {
        /* Wall-clock limits are decided on rank 0 and broadcast, so every rank
         * stops at the same step. */
        int stop = t->dist->rank == 0 && finished(t, ft_now() - t0);
        if (t->dist->size > 1)
            dist_bcast(&stop, sizeof stop);
        if (stop)
            break;
        rc = trainer_step(t);
        if (rc != FT_OK)
            break;
        test_hooks(t);
        if (isfinite(t->last_loss_sum)) {
            t->log_loss += t->last_loss_sum;
            t->log_count += t->last_count;
            t->log_bits_y += t->last_bits_y;
            t->log_errors += t->last_errors;
        }
        if (t->step % ct->log_every == 0) {
            write_metrics_line(t, ft_now(), t0, t_log, img_log);
            t_log = ft_now();
            img_log = t->images_seen;
        }
        if (t->stop_sig)
            break;
        if (ct->eval_every && t->step % ct->eval_every == 0) {
            double bpd = trainer_eval(t);
            if (!(bpd >= t->best_test_bpd))
                t->best_test_bpd = bpd;
            log_eval(t, bpd, ft_now() - t0);
        }
        if (cr->sample_every && t->step % cr->sample_every == 0)
            write_samples(t);
        int due = (cr->checkpoint_every && t->step % cr->checkpoint_every == 0)
                  || (cr->checkpoint_minutes > 0
                      && ft_now() - t->last_ckpt_time >= 60.0 * cr->checkpoint_minutes);
        if (t->dist->rank == 0 && due)
            trainer_checkpoint(t, 0);
    }
    if (rc == FT_EXIT_NONFINITE) {
        ft_log("stopping: %llu consecutive non-finite steps (train.max_bad_steps)",
               (unsigned long long)t->bad_run);
        return rc;
    }
    if (t->stop_sig) {
        /* stop quickly: checkpoint, then 99 (requeue wanted) or 98 (stop) */
        int sig = t->stop_sig;
        ft_log("stopping at step %llu on %s: writing the final checkpoint",
               (unsigned long long)t->step, sig == SIGUSR1 ? "SIGUSR1" : "SIGTERM");
        int wrc = FT_OK;
        if (t->ckpt_step != t->step) {
            wrc = trainer_checkpoint(t, 1);
        } else if (t->dist->rank == 0) {
            iothread_wait(&t->io, &t->ckpt_job);
            wrc = t->ckpt_rc;
        }
        snprintf(buf, sizeof buf, "{\"event\":\"stop\",\"reason\":\"%s\",\"step\":%llu,"
                 "\"checkpoint\":%s}", sig == SIGUSR1 ? "SIGUSR1" : "SIGTERM",
                 (unsigned long long)t->step, wrc == FT_OK ? "true" : "false");
        log_event(t, buf);
        dist_barrier();
        return sig == SIGUSR1 ? FT_EXIT_REQUEUE : FT_EXIT_TERM;
    }
    double bpd = trainer_eval(t);
    if (!(bpd >= t->best_test_bpd))
        t->best_test_bpd = bpd;
    log_eval(t, bpd, ft_now() - t0);
    if (cr->sample_every)
        write_samples(t);
    if (t->ckpt_step != t->step)
        trainer_checkpoint(t, 1);
    else if (t->dist->rank == 0)
        iothread_wait(&t->io, &t->ckpt_job);
    snprintf(buf, sizeof buf, "{\"event\":\"stop\",\"reason\":\"done\",\"step\":%llu,"
             "\"images\":%llu,\"skipped\":%llu,\"best_test_bpd\":%.6f}",
             (unsigned long long)t->step, (unsigned long long)t->images_seen,
             (unsigned long long)t->skipped, t->best_test_bpd);
    log_event(t, buf);
    dist_barrier();
    return rc;
}
