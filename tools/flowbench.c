/* flowbench: times training steps (forward, backward and the optimizer update)
 * of a Glow model on random data and sets them against the sgemm rate of the
 * same machine in the same run. FLOPs count the convolutions and 1x1 invconvs:
 * forward 2·P·(9(C/2+1)w + w² + 9(w+1)n_out + C²) per step and pixel, plus the
 * split priors; a training step counts 3× forward (backward needs dX and dW).
 * The sgemm rate is that of the model's largest GEMM shape, the level-0 conv2
 * (B·H·W × width × width). Images/s and sgemm GFLOP/s are the best seen: the
 * fastest step, and the best 0.1 s window of 1 s of sgemm calls. --rounds N
 * interleaves N blocks of steps with N slices of that second; the share of
 * sgemm is the median over rounds of a block's GFLOP/s over the sgemm rate
 * measured right after it, so that a slow spell of the shared machine hits
 * both sides of each ratio. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "blas.h"
#include "config.h"
#include "dist.h"
#include "glow.h"
#include "optim.h"
#include "reduce.h"
#include "rng.h"
#include "train.h"

struct preset {
    const char *name;
    size_t c, levels, depth, width, batch;
    double torch_ips, torch_gib, target_ips, target_gib;  /* issue targets, 0 = none */
};

static const struct preset presets[] = {
    { "S", 1, 2, 8, 128, 64, 286, 1.06, 570, 0.35 },
    { "M", 1, 3, 16, 256, 32, 51.5, 1.8, 103, 0.6 },
    { "L", 1, 3, 32, 512, 16, 9.3, 3.4, 16, 1.1 },
    { "cifar", 3, 3, 32, 512, 16, 0, 0, 0, 1.5 },
};

static double forward_flops(const struct glow *g)
{
    const struct glow_spec *s = &g->spec;
    double f = 0, w = (double)s->hidden;
    for (size_t i = 0; i < s->levels; i++) {
        size_t h, wd, c;
        glow_level_shape(g, i, &h, &wd, &c);
        double p = (double)(h * wd), cc = (double)c;
        double nout = s->coupling == COUPLING_AFFINE ? cc : cc / 2;
        double perm = (s->perm == PERM_INVCONV || s->perm == PERM_INVCONV_LU) ? cc * cc : 0;
        double step = 9 * (cc / 2 + 1) * w + w * w + 9 * (w + 1) * nout + perm;
        f += 2 * p * step * (double)s->depth;
        if (i + 1 < s->levels)
            f += 2 * p * 9 * (cc / 2 + 1) * cc;
    }
    return f;
}

/* The best rate over windows of at least 0.1 s (and 3 calls) for `seconds` in
 * all: a passing dip of the shared machine does not lower it. */
static double sgemm_gflops(size_t m, size_t n, size_t k, double seconds)
{
    float *a = ft_malloc_aligned(m * k * sizeof *a), *b = ft_malloc_aligned(k * n * sizeof *b);
    float *c = ft_malloc_aligned(m * n * sizeof *c);
    for (size_t i = 0; i < m * k; i++)
        a[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < k * n; i++)
        b[i] = (float)(i % 5) * 0.1f;
    ft_gemm(0, 0, m, n, k, 1, a, k, b, n, 0, c, n);   /* warm up */
    double best = 0, start = ft_now();
    while (ft_now() - start < seconds || best == 0) {
        double t0 = ft_now(), t = 0;
        int reps = 0;
        while ((t = ft_now() - t0) < 0.1 || reps < 3) {
            ft_gemm(0, 0, m, n, k, 1, a, k, b, n, 0, c, n);
            reps++;
        }
        double rate = 2.0 * (double)m * (double)n * (double)k * reps / t * 1e-9;
        if (rate > best)
            best = rate;
    }
    free(a);
    free(b);
    free(c);
    return best;
}

struct result {
    size_t params, batch;
    int reversible;
    double ips, gflops, flop_image, sgemm, rss_gib, step_s;
    double share;   /* median over rounds of (round's GFLOP/s) / (sgemm right after it) */
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void make_model(const struct config *cfg, struct glow *g, struct optim *o, ft_real **x,
                       uint64_t stream)
{
    struct glow_spec spec;
    struct ft_err err;
    config_glow_spec(cfg, &spec);
    size_t b = cfg->train.batch;
    FT_CHECK(glow_init(g, &spec, b, cfg->model.memory == MEMORY_REVERSIBLE, &err) == FT_OK,
             "%s", err.msg);
    glow_init_params(g, 1);
    optim_init(o, cfg->train.optimizer, g->n_params, 1e-4, 0.9, 0.999, 0, 0, 0);
    *x = ft_malloc_aligned(b * g->dim * sizeof **x);
    struct rng_key key = rng_key(1, RNG_TEST, stream, 0);
    for (size_t i = 0; i < b * g->dim; i++)
        (*x)[i] = (ft_real)(rng_uniform(key, i) - 0.5);
}

/* MPI mode (distributed.md §2.6): every rank times its own training steps with
 * the overlapped bucket reduction of fast mode, then backward alone and the
 * reduction alone. The rank that finishes backward last waits only for the part
 * of the reduction that backward did not hide, while the others also wait for
 * it; so exposed = min over ranks of the wait after backward, taken per step,
 * and hidden share = 1 − exposed / (the reduction alone). Rank skew, which the
 * plain "backward with reduction − backward alone" difference would count as
 * communication, drops out. After each step every rank also times sgemm at
 * once (0.3 s); the share of sgemm is the median over steps of the step's
 * GFLOP/s over all ranks (the slowest rank's step time) over the sum of the
 * ranks' sgemm rates. */
static void bench_mpi(const struct config *cfg, int steps, const struct dist *d)
{
    struct glow g;
    struct optim o;
    struct reducer red;
    ft_real *x;
    make_model(cfg, &g, &o, &x, (uint64_t)d->rank);
    size_t b = cfg->train.batch, h0, wd0, c0;   /* per rank: weak scaling keeps it fixed */
    glow_level_shape(&g, 0, &h0, &wd0, &c0);
    const double flop_step = 3.0 * forward_flops(&g) * (double)b * (double)d->size;
    double *share = ft_malloc((size_t)steps * sizeof *share), sg_best = 0;
    reducer_init(&red, &g, (size_t)cfg->train.bucket_mb << 20);
    struct ddi ddi = { dist_ddi_sum, NULL };
    glow_forward(&g, x, b, &ddi);
    double gamma = -1.0 / ((double)b * (double)d->size * (double)g.dim * log(2.0));
    double t_step = 0, t_bwd = 0, t_comm = 0, t_wait = 0, t_exposed = 0;
    for (int s = -1; s < steps; s++) {   /* step −1 warms up */
        dist_barrier();
        double t0 = ft_now();
        glow_zero_grad(&g);
        glow_forward(&g, x, b, NULL);
        g.grads_ready = reducer_ready;
        g.grads_ready_ctx = &red;
        reducer_begin(&red, g.grads);
        glow_backward(&g, gamma);
        g.grads_ready = NULL;
        double w0 = red.t_wait;
        reducer_finish(&red);
        double wait = red.t_wait - w0;
        optim_step(&o, g.params, g.grads, optim_grad_norm(g.grads, g.n_params), 1e-4);
        double t1 = ft_now();
        /* the same backward without communication, then the reduction alone */
        double t2 = ft_now();
        glow_backward(&g, gamma);
        double t3 = ft_now();
        dist_barrier();
        double t4 = ft_now();
        reducer_begin(&red, g.grads);
        reducer_ready(&red, 0);
        reducer_finish(&red);
        double t5 = ft_now(), exposed = wait;
        FT_MPI(MPI_Allreduce(MPI_IN_PLACE, &exposed, 1, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD));
        double step_max = t1 - t0, sg = 0;
        if (s >= 0) {
            dist_barrier();
            sg = sgemm_gflops(b * h0 * wd0, g.spec.hidden, g.spec.hidden, 0.3);
        }
        FT_MPI(MPI_Allreduce(MPI_IN_PLACE, &step_max, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
        FT_MPI(MPI_Allreduce(MPI_IN_PLACE, &sg, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
        if (s >= 0) {
            share[s] = flop_step / step_max * 1e-9 / sg;
            sg_best = sg > sg_best ? sg : sg_best;
            t_step += t1 - t0;
            t_bwd += t3 - t2;
            t_comm += t5 - t4;
            t_wait += wait;
            t_exposed += exposed;
        }
    }
    double r[5] = { t_step / steps, t_bwd / steps, t_comm / steps, t_wait / steps,
                    t_exposed / steps };
    dist_allreduce_sum_f64(r, 5);
    for (int i = 0; i < 5; i++)
        r[i] /= d->size;
    if (d->rank == 0) {
        double ips = (double)(b * (size_t)d->size) / r[0];
        double gflops = 3.0 * forward_flops(&g) * ips * 1e-9;
        printf("flowbench --mpi: %d rank%s x batch %zu, %zu buckets of %zu floats: step %.3f s, "
               "%.1f images/s in all, %.1f per rank (%.1f GFLOP/s per rank); backward %.3f s, "
               "reduction alone %.2f ms, waiting after backward %.2f ms (on the last rank %.3f ms)",
               d->size, d->size > 1 ? "s" : "", b, red.n_buckets, g.n_params, r[0], ips,
               ips / d->size, gflops / d->size, r[1], 1e3 * r[2], 1e3 * r[3], 1e3 * r[4]);
        if (d->size > 1)
            printf(": hidden share %.0f%%", 100 * (1 - r[4] / r[2]));
        qsort(share, (size_t)steps, sizeof *share, cmp_double);
        printf("; share of sgemm %.0f%% (sgemm of all ranks at once, best %.1f GFLOP/s)\n",
               100 * share[steps / 2], sg_best);
    }
    free(share);
    free(x);
    reducer_free(&red);
    optim_free(&o);
    glow_free(&g);
}

static void train_step(struct glow *g, struct optim *o, const ft_real *x, size_t b, double gamma)
{
    glow_zero_grad(g);
    glow_forward(g, x, b, NULL);
    glow_backward(g, gamma);
    optim_step(o, g->params, g->grads, optim_grad_norm(g->grads, g->n_params), 1e-4);
}

static struct result bench(const struct config *cfg, int steps, int rounds)
{
    struct glow g;
    struct optim o;
    ft_real *x;
    make_model(cfg, &g, &o, &x, 0);
    size_t b = cfg->train.batch, h0, w0, c0;
    struct ddi ddi = { NULL, NULL };
    glow_forward(&g, x, b, &ddi);
    double gamma = -1.0 / ((double)b * (double)g.dim * log(2.0));
    glow_level_shape(&g, 0, &h0, &w0, &c0);
    struct result r = { .params = g.n_params, .batch = b, .reversible = g.reversible,
                        .step_s = INFINITY, .flop_image = 3.0 * forward_flops(&g) };
    train_step(&g, &o, x, b, gamma);   /* warms up caches and threads */
    double *share = ft_malloc((size_t)rounds * sizeof *share);
    for (int k = 0; k < rounds; k++) {
        double t_round = 0;
        for (int s = 0; s < steps; s++) {
            double t0 = ft_now();
            train_step(&g, &o, x, b, gamma);
            double dt = ft_now() - t0;
            t_round += dt;
            if (dt < r.step_s)
                r.step_s = dt;
        }
        double sg = sgemm_gflops(b * h0 * w0, g.spec.hidden, g.spec.hidden, 1.0 / rounds);
        if (sg > r.sgemm)
            r.sgemm = sg;
        share[k] = r.flop_image * (double)b * steps / t_round * 1e-9 / sg;
    }
    qsort(share, (size_t)rounds, sizeof *share, cmp_double);
    r.share = share[rounds / 2];
    free(share);
    r.ips = (double)b / r.step_s;
    r.gflops = r.flop_image * r.ips * 1e-9;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    r.rss_gib = (double)ru.ru_maxrss / 1048576.0;
    free(x);
    optim_free(&o);
    glow_free(&g);
    return r;
}

static void print_result(const struct result *r)
{
    printf("flowbench: %zu params, batch %zu, %s, %.3f s/step, %.1f images/s, %.1f GFLOP/s "
           "(%.1f GFLOP/image), sgemm %.1f GFLOP/s, share %.0f%%, peak RSS %.3f GiB\n",
           r->params, r->batch, r->reversible ? "reversible" : "stored", r->step_s, r->ips,
           r->gflops, r->flop_image * 1e-9, r->sgemm, 100 * r->share, r->rss_gib);
}

/* Presets go first in the --set list so that the user's --set still overrides
 * them; extra (e.g. model.memory) after the presets. Returns the count. */
static size_t preset_sets(const struct preset *p, const char *extra, char buf[][64],
                          const char **sets, const char *const *user, size_t n_user)
{
    size_t n = 0;
    if (p) {
        snprintf(buf[0], 64, "data.channels=%zu", p->c);
        snprintf(buf[1], 64, "model.levels=%zu", p->levels);
        snprintf(buf[2], 64, "model.depth=%zu", p->depth);
        snprintf(buf[3], 64, "model.width=%zu", p->width);
        snprintf(buf[4], 64, "train.batch=%zu", p->batch);
        snprintf(buf[5], 64, "train.reduce_group=1");
        for (n = 0; n < 6; n++)
            sets[n] = buf[n];
    }
    if (extra)
        sets[n++] = extra;
    for (size_t i = 0; i < n_user; i++)
        sets[n++] = user[i];
    return n;
}

static int load(struct config *cfg, const struct preset *p, const char *extra,
                const char *config, const char *const *user, size_t n_user)
{
    char buf[6][64];
    const char *sets[80];
    struct ft_err err;
    size_t n = preset_sets(p, extra, buf, sets, user, n_user);
    if (config_load(cfg, FT_DEFAULT_CONFIG, config, sets, n, &err) != FT_OK) {
        fprintf(stderr, "flowbench: %s\n", err.msg);
        return -1;
    }
    return 0;
}

/* --compare: every preset in both memory modes, each in a child process of its
 * own so that its peak RSS is its own, as one Markdown table with the issue's
 * targets (images/s, peak RSS, and ≥ 70% of sgemm for L) marked pass or FAIL. */
static int compare(int steps, int rounds, const char *config, const char *const *user,
                   size_t n_user)
{
    char cpu[128] = "unknown CPU", line[256], day[32];
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
            snprintf(cpu, sizeof cpu, "%s", strchr(line, ':') + 2);
            cpu[strcspn(cpu, "\n")] = 0;
            break;
        }
    if (f)
        fclose(f);
    time_t now = time(NULL);
    strftime(day, sizeof day, "%Y-%m-%d", gmtime(&now));
    printf("flowbench --compare, %s, %s, %d threads, fastest of %d steps, sgemm in %d slice%s\n\n",
           day, cpu, ft_threads(), rounds * steps, rounds, rounds > 1 ? "s" : "");
    printf("| config | memory | images/s | GFLOP/s | sgemm GFLOP/s | share of sgemm | peak RSS "
           "| target images/s | target RSS | target share |\n"
           "|---|---|---|---|---|---|---|---|---|---|\n");
    fflush(stdout);
    int failed = 0;
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        for (int rev = 0; rev < 2; rev++) {
            const struct preset *p = &presets[i];
            int fd[2];
            struct result r;
            FT_CHECK(pipe(fd) == 0, "pipe failed");
            pid_t pid = fork();
            FT_CHECK(pid >= 0, "fork failed");
            if (pid == 0) {
                struct config cfg;
                close(fd[0]);
                if (load(&cfg, p, rev ? "model.memory=reversible" : "model.memory=stored",
                         config, user, n_user))
                    _exit(1);
                r = bench(&cfg, steps, rounds);
                _exit(write(fd[1], &r, sizeof r) == (ssize_t)sizeof r ? 0 : 1);
            }
            close(fd[1]);
            ssize_t got = read(fd[0], &r, sizeof r);
            int status;
            close(fd[0]);
            waitpid(pid, &status, 0);
            if (got != (ssize_t)sizeof r || !WIFEXITED(status) || WEXITSTATUS(status)) {
                printf("| %s | %s | failed | | | | | | | |\n", p->name,
                       rev ? "reversible" : "stored");
                failed = 1;
                continue;
            }
            double share = r.share;
            int ok_ips = r.ips >= p->target_ips, ok_gib = r.rss_gib <= p->target_gib;
            int ok_share = strcmp(p->name, "L") || share >= 0.70;
            char t_ips[32] = "", t_share[32] = "";
            if (p->target_ips > 0)
                snprintf(t_ips, sizeof t_ips, "≥ %.0f: %s", p->target_ips,
                         ok_ips ? "pass" : "FAIL");
            if (!strcmp(p->name, "L"))
                snprintf(t_share, sizeof t_share, "≥ 70%%: %s", ok_share ? "pass" : "FAIL");
            printf("| %s | %s | %.1f | %.1f | %.1f | %.0f%% | %.3f GiB | %s | ≤ %.2f GiB: %s "
                   "| %s |\n", p->name, rev ? "reversible" : "stored", r.ips, r.gflops, r.sgemm,
                   100 * share, r.rss_gib, t_ips, p->target_gib, ok_gib ? "pass" : "FAIL",
                   t_share);
            fflush(stdout);
            failed |= !(ok_ips && ok_gib && ok_share);
        }
    return failed;
}

/* --check-share FILE: fails (exit 1) when this preset's share of the sgemm rate
 * fell more than 20% below the figure FILE records for it ("NAME SHARE" lines,
 * '#' comments): a performance regression test that the machine's own speed
 * (measured in the same run) does not move. */
static int check_share(const struct result *r, const char *name, const char *path)
{
    FILE *f = fopen(path, "r");
    char line[256], key[32];
    double want = 0;
    if (!f) {
        fprintf(stderr, "flowbench: %s: cannot open\n", path);
        return 2;
    }
    while (fgets(line, sizeof line, f))
        if (line[0] != '#' && sscanf(line, "%31s %lf", key, &want) == 2 && !strcmp(key, name))
            break;
        else
            want = 0;
    fclose(f);
    if (want <= 0) {
        fprintf(stderr, "flowbench: %s: no figure for preset %s\n", path, name);
        return 2;
    }
    double share = r->share;
    int ok = share >= 0.8 * want;
    printf("%s: share of sgemm %.3f, recorded %.3f, floor %.3f (80%%): %s\n", name, share, want,
           0.8 * want, ok ? "pass" : "FAIL, a performance regression");
    return !ok;
}

static const char usage[] =
    "usage: flowbench [--preset S|M|L|cifar] [--config FILE] [--set key=value]... [--steps N]\n"
    "                 [--rounds N] [--mpi | --compare | --check-share FILE]\n"
    "Times training steps of one process on random data against the sgemm rate of the\n"
    "same run; threads come from OPENBLAS_NUM_THREADS (default: all cores).\n"
    "  --rounds N         interleave N blocks of steps with N slices of the sgemm timing\n"
    "  --mpi              under mpirun: the batch is per rank; times the overlapped\n"
    "                     reduction and the share of it hidden behind backward\n"
    "  --compare          every preset, stored and reversible, in one table with targets\n"
    "  --check-share FILE exit 1 if the preset's share of sgemm is > 20% below FILE's figure\n";

int main(int argc, char **argv)
{
    const char *sets[64], *preset = NULL, *config = NULL, *share_file = NULL;
    size_t n_sets = 0;
    int steps = 5, rounds = 1, mpi = 0, cmp = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--preset") && i + 1 < argc)
            preset = argv[++i];
        else if (!strcmp(argv[i], "--config") && i + 1 < argc)
            config = argv[++i];
        else if (!strcmp(argv[i], "--set") && i + 1 < argc && n_sets < 60)
            sets[n_sets++] = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc && atoi(argv[i + 1]) > 0)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc && atoi(argv[i + 1]) > 0)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--check-share") && i + 1 < argc)
            share_file = argv[++i];
        else if (!strcmp(argv[i], "--mpi"))
            mpi = 1;
        else if (!strcmp(argv[i], "--compare"))
            cmp = 1;
        else {
            fputs(usage, stderr);
            return 2;
        }
    }
    const struct preset *p = NULL;
    for (size_t i = 0; preset && i < sizeof presets / sizeof presets[0]; i++)
        if (!strcmp(presets[i].name, preset))
            p = &presets[i];
    if (preset && !p) {
        fprintf(stderr, "flowbench: unknown preset '%s' (S, M, L, cifar)\n", preset);
        return 2;
    }
    if (share_file && !p) {
        fprintf(stderr, "flowbench: --check-share needs --preset\n");
        return 2;
    }
    if (cmp)
        return compare(steps, rounds, config, sets, n_sets);
    struct config cfg;
    if (load(&cfg, p, NULL, config, sets, n_sets))
        return 1;
    if (mpi) {   /* MPI starts only here: --compare forks, which MPI dislikes */
        struct dist d;
        dist_init(&d, &argc, &argv);
        bench_mpi(&cfg, steps, &d);
        dist_finalize();
        return 0;
    }
    struct result r = bench(&cfg, steps, rounds);
    print_result(&r);
    if (share_file)
        return check_share(&r, p->name, share_file);
    if (p && p->target_ips > 0)
        printf("target %s: >= %.0f images/s (%s), <= %.2f GiB (%s); the issue's PyTorch Glow "
               "%.1f images/s, %.2f GiB (tools/torch-glow-bench measures it here)\n",
               p->name, p->target_ips, r.ips >= p->target_ips ? "pass" : "FAIL", p->target_gib,
               r.rss_gib <= p->target_gib ? "pass" : "FAIL", p->torch_ips, p->torch_gib);
    return 0;
}
