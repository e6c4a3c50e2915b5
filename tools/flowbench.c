/* flowbench: times training steps (forward, backward and the optimizer update)
 * of a Glow model on random data and sets them against the sgemm rate of the
 * same machine in the same run. FLOPs count the convolutions and 1x1 invconvs:
 * forward 2·P·(9(C/2+1)w + w² + 9(w+1)n_out + C²) per step and pixel, plus the
 * split priors; a training step counts 3× forward (backward needs dX and dW). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

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

static double sgemm_gflops(size_t m, size_t n, size_t k)
{
    float *a = ft_malloc_aligned(m * k * sizeof *a), *b = ft_malloc_aligned(k * n * sizeof *b);
    float *c = ft_malloc_aligned(m * n * sizeof *c);
    for (size_t i = 0; i < m * k; i++)
        a[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < k * n; i++)
        b[i] = (float)(i % 5) * 0.1f;
    ft_gemm(0, 0, m, n, k, 1, a, k, b, n, 0, c, n);   /* warm up */
    double t0 = ft_now(), t = 0;
    int reps = 0;
    while ((t = ft_now() - t0) < 1.0 || reps < 3) {
        ft_gemm(0, 0, m, n, k, 1, a, k, b, n, 0, c, n);
        reps++;
    }
    free(a);
    free(b);
    free(c);
    return 2.0 * (double)m * (double)n * (double)k * reps / t * 1e-9;
}

struct result {
    double ips, gflops, sgemm, rss_gib, step_s;
};

/* MPI mode (distributed.md §2.6): every rank times its own training steps with
 * the overlapped bucket reduction of fast mode, then backward alone and the
 * reduction alone; hidden share = (t_bwd + t_comm − t_bwd+comm) / t_comm. */
static void bench_mpi(const struct config *cfg, int steps, const struct dist *d)
{
    struct glow_spec spec;
    struct glow g;
    struct optim o;
    struct reducer red;
    struct ft_err err;
    config_glow_spec(cfg, &spec);
    size_t b = cfg->train.batch;   /* per rank: weak scaling keeps it fixed */
    FT_CHECK(glow_init(&g, &spec, b, cfg->model.memory == MEMORY_REVERSIBLE, &err) == FT_OK,
             "%s", err.msg);
    glow_init_params(&g, 1);
    optim_init(&o, OPTIM_ADAM, g.n_params, 1e-4, 0.9, 0.999, 0, 0, 0);
    reducer_init(&red, &g, (size_t)cfg->train.bucket_mb << 20);
    ft_real *x = ft_malloc_aligned(b * g.dim * sizeof *x);
    struct rng_key key = rng_key(1, RNG_TEST, (uint64_t)d->rank, 0);
    for (size_t i = 0; i < b * g.dim; i++)
        x[i] = (ft_real)(rng_uniform(key, i) - 0.5);
    struct ddi ddi = { dist_ddi_sum, NULL };
    glow_forward(&g, x, b, &ddi);
    double gamma = -1.0 / ((double)b * (double)d->size * (double)g.dim * log(2.0));
    double t_step = 0, t_bwd = 0, t_comm = 0, t_both = 0, t_wait = 0;
    for (int s = -1; s < steps; s++) {   /* step −1 warms up */
        dist_barrier();
        double t0 = ft_now();
        glow_zero_grad(&g);
        glow_forward(&g, x, b, NULL);
        double t1 = ft_now();
        g.grads_ready = reducer_ready;
        g.grads_ready_ctx = &red;
        reducer_begin(&red, g.grads);
        double w0 = red.t_wait;
        glow_backward(&g, gamma);
        g.grads_ready = NULL;
        reducer_finish(&red);
        double t2 = ft_now();
        optim_step(&o, g.params, g.grads, optim_grad_norm(g.grads, g.n_params), 1e-4);
        double t3 = ft_now();
        /* the same backward without communication, then the reduction alone */
        glow_backward(&g, gamma);
        double t4 = ft_now();
        dist_barrier();
        double t5 = ft_now();
        reducer_begin(&red, g.grads);
        reducer_ready(&red, 0);
        reducer_finish(&red);
        double t6 = ft_now();
        if (s >= 0) {
            t_step += t3 - t0;
            t_both += t2 - t1;
            t_bwd += t4 - t3;
            t_comm += t6 - t5;
            t_wait += red.t_wait - w0;
        }
    }
    double r[5] = { t_step / steps, t_both / steps, t_bwd / steps, t_comm / steps, t_wait / steps };
    dist_allreduce_sum_f64(r, 5);
    for (int i = 0; i < 5; i++)
        r[i] /= d->size;
    if (d->rank == 0) {
        double ips = (double)(b * (size_t)d->size) / r[0];
        double hidden = d->size > 1 ? (r[2] + r[3] - r[1]) / r[3] : NAN;
        printf("flowbench --mpi: %d rank%s x batch %zu, %zu buckets: step %.3f s, %.1f images/s "
               "in all (%.1f per rank); backward %.3f s, reduction alone %.3f s, backward with "
               "overlapped reduction %.3f s (%.3f s waiting after it): hidden share %.0f%%\n",
               d->size, d->size > 1 ? "s" : "", b, red.n_buckets, r[0], ips, ips / d->size, r[2],
               r[3], r[1], r[4], 100 * hidden);
    }
    free(x);
    reducer_free(&red);
    optim_free(&o);
    glow_free(&g);
}

static struct result bench(const struct config *cfg, int steps)
{
    struct glow_spec spec;
    struct glow g;
    struct optim o;
    struct ft_err err;
    config_glow_spec(cfg, &spec);
    size_t b = cfg->train.batch;
    FT_CHECK(glow_init(&g, &spec, b, cfg->model.memory == MEMORY_REVERSIBLE, &err) == FT_OK,
             "%s", err.msg);
    glow_init_params(&g, 1);
    optim_init(&o, cfg->train.optimizer, g.n_params, 1e-4, 0.9, 0.999, 0, 0, 0);
    ft_real *x = ft_malloc_aligned(b * g.dim * sizeof *x);
    struct rng_key key = rng_key(1, RNG_TEST, 0, 0);
    for (size_t i = 0; i < b * g.dim; i++)
        x[i] = (ft_real)(rng_uniform(key, i) - 0.5);
    struct ddi ddi = { NULL, NULL };
    glow_forward(&g, x, b, &ddi);
    double gamma = -1.0 / ((double)b * (double)g.dim * log(2.0)), t0 = 0;
    for (int s = -1; s < steps; s++) {   /* step −1 warms up caches and threads */
        if (s == 0)
            t0 = ft_now();
        glow_zero_grad(&g);
        glow_forward(&g, x, b, NULL);
        glow_backward(&g, gamma);
        optim_step(&o, g.params, g.grads, optim_grad_norm(g.grads, g.n_params), 1e-4);
    }
    double dt = (ft_now() - t0) / steps;
    struct result r;
    r.step_s = dt;
    r.ips = (double)b / dt;
    r.gflops = 3.0 * forward_flops(&g) * (double)b / dt * 1e-9;
    size_t h0, w0, c0;
    glow_level_shape(&g, 0, &h0, &w0, &c0);
    r.sgemm = sgemm_gflops(b * h0 * w0, spec.hidden, spec.hidden);  /* conv2 of level 0 */
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    r.rss_gib = (double)ru.ru_maxrss / 1048576.0;
    printf("flowbench: %zu params, batch %zu, %s, %.3f s/step, %.1f images/s, "
           "%.1f GFLOP/s (%.1f GFLOP/image), sgemm %.1f GFLOP/s, share %.0f%%, peak RSS %.3f GiB\n",
           glow_param_count(&spec), b, g.reversible ? "reversible" : "stored", dt, r.ips, r.gflops,
           3.0 * forward_flops(&g) * 1e-9, r.sgemm, 100 * r.gflops / r.sgemm, r.rss_gib);
    free(x);
    optim_free(&o);
    glow_free(&g);
    return r;
}

int main(int argc, char **argv)
{
    struct dist d;
    dist_init(&d, &argc, &argv);
    const char *sets[64], *preset = NULL, *config = NULL;
    size_t n_sets = 0;
    int steps = 5, mpi = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--preset") && i + 1 < argc)
            preset = argv[++i];
        else if (!strcmp(argv[i], "--config") && i + 1 < argc)
            config = argv[++i];
        else if (!strcmp(argv[i], "--set") && i + 1 < argc && n_sets < 60)
            sets[n_sets++] = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--mpi"))
            mpi = 1;
        else {
            fprintf(stderr, "usage: flowbench [--preset S|M|L|cifar] [--config FILE] "
                            "[--set key=value]... [--steps N] [--mpi]\n"
                            "Times training steps of one process on random data; threads "
                            "come from OPENBLAS_NUM_THREADS. --mpi (under mpirun): the batch is "
                            "per rank, with the overlapped reduction timed.\n");
            dist_finalize();
            return 1;
        }
    }
    char buf[8][64];
    const struct preset *p = NULL;
    for (size_t i = 0; preset && i < sizeof presets / sizeof presets[0]; i++)
        if (!strcmp(presets[i].name, preset))
            p = &presets[i];
    if (preset && !p) {
        fprintf(stderr, "flowbench: unknown preset '%s' (S, M, L, cifar)\n", preset);
        dist_finalize();
        return 1;
    }
    if (p) {   /* presets go first so that --set can still override them */
        snprintf(buf[0], sizeof buf[0], "data.channels=%zu", p->c);
        snprintf(buf[1], sizeof buf[1], "model.levels=%zu", p->levels);
        snprintf(buf[2], sizeof buf[2], "model.depth=%zu", p->depth);
        snprintf(buf[3], sizeof buf[3], "model.width=%zu", p->width);
        snprintf(buf[4], sizeof buf[4], "train.batch=%zu", p->batch);
        snprintf(buf[5], sizeof buf[5], "train.reduce_group=1");
        memmove(sets + 6, sets, n_sets * sizeof *sets);
        for (int i = 0; i < 6; i++)
            sets[i] = buf[i];
        n_sets += 6;
    }
    struct config cfg;
    struct ft_err err;
    if (config_load(&cfg, FT_DEFAULT_CONFIG, config, sets, n_sets, &err) != FT_OK) {
        fprintf(stderr, "flowbench: %s\n", err.msg);
        dist_finalize();
        return 1;
    }
    if (mpi) {
        bench_mpi(&cfg, steps, &d);
        dist_finalize();
        return 0;
    }
    struct result r = bench(&cfg, steps);
    if (p && p->target_ips > 0)
        printf("target %s: >= %.0f images/s (%s), <= %.2f GiB (%s); PyTorch Glow %.1f images/s, "
               "%.2f GiB\n", p->name, p->target_ips, r.ips >= p->target_ips ? "pass" : "FAIL",
               p->target_gib, r.rss_gib <= p->target_gib ? "pass" : "FAIL", p->torch_ips,
               p->torch_gib);
    dist_finalize();
    return 0;
}
