/* World-size invariance (distributed.md §2.1, §2.3; glow-model.md §13.5, §13.7).
 * `test_dist_equiv run DIR MODE` (under mpiexec -np R) trains a tiny model for 5
 * updates with global batch 16 and writes, from rank 0, DIR/MODE-npR.bin: the
 * parameters after DDI, after 5 updates, the 5 train bits/dim and the test
 * bits/dim. `test_dist_equiv compare DIR` (cmocka) checks np 2 and 4 against
 * np 1: deterministic mode within 1e-6 relative (bitwise in fact, printed),
 * fast mode within 1e-5. tests/dist_equiv.sh runs the whole sequence. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <mpi.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "config.h"
#include "dataset.h"
#include "dist.h"
#include "ft_test.h"
#include "train.h"

#define N_TRAIN 96
#define N_TEST 21   /* not a multiple of any rank count: uneven test slices */
#define SIDE 8
#define STEPS 5

static void make_images(uint8_t *img, size_t n, unsigned seed)
{
    srand(seed);
    for (size_t i = 0; i < n * SIDE * SIDE; i++) {
        size_t p = i % (SIDE * SIDE), y = p / SIDE, x = p % SIDE;
        img[i] = (uint8_t)((x * 20 + y * 9 + (i / (SIDE * SIDE)) * 7 + rand() % 30) % 256);
    }
}

static void make_data(const char *dir)
{
    char path[512];
    struct ft_err err;
    uint8_t *img = malloc(N_TRAIN * SIDE * SIDE);
    snprintf(path, sizeof path, "%s/train.h5", dir);
    make_images(img, N_TRAIN, 1);
    FT_CHECK(dataset_write(path, img, NULL, N_TRAIN, SIDE, SIDE, 1, "test", &err) == FT_OK, "%s", err.msg);
    snprintf(path, sizeof path, "%s/test.h5", dir);
    make_images(img, N_TEST, 2);
    FT_CHECK(dataset_write(path, img, NULL, N_TEST, SIDE, SIDE, 1, "test", &err) == FT_OK, "%s", err.msg);
    free(img);
}

static int run(const char *dir, const char *mode)
{
    struct dist d;
    dist_init(&d, NULL, NULL);
    if (d.rank == 0)
        make_data(dir);
    dist_barrier();
    char sets[12][600];
    snprintf(sets[0], sizeof sets[0], "data.train=%s/train.h5", dir);
    snprintf(sets[1], sizeof sets[1], "data.test=%s/test.h5", dir);
    snprintf(sets[2], sizeof sets[2], "train.reduce_mode=%s", mode);
    snprintf(sets[3], sizeof sets[3], "run.dir=%s/run-%s-np%d", dir, mode, d.size);
    const char *fixed[] = { "data.height=8", "data.width=8", "data.channels=1", "model.levels=2",
                            "model.depth=2", "model.width=8", "train.batch=16",
                            "train.reduce_group=4", "train.ddi_images=18", "train.max_steps=5",
                            "train.warmup_images=16", "run.hash_every=1" };
    const char *all[16];
    for (int i = 0; i < 4; i++)
        all[i] = sets[i];
    for (int i = 0; i < 12; i++)
        all[4 + i] = fixed[i];
    struct config cfg;
    struct ft_err err;
    FT_CHECK(config_load(&cfg, FT_DEFAULT_CONFIG, NULL, all, 16, &err) == FT_OK, "%s", err.msg);
    struct trainer t;
    FT_CHECK(trainer_init(&t, &cfg, &d, "none", &err) == FT_OK, "%s", err.msg);
    size_t n = t.g.n_params;
    float *ddi = malloc(n * sizeof *ddi);
    memcpy(ddi, t.g.params, n * sizeof *ddi);
    double bpd[STEPS + 1];
    for (int s = 0; s < STEPS; s++) {
        FT_CHECK(trainer_step(&t) == FT_OK, "step %d failed", s);
        bpd[s] = t.last_loss_sum / (t.last_count * (double)t.dim * log(2.0));
    }
    bpd[STEPS] = trainer_eval(&t);
    if (d.rank == 0) {
        char path[600];
        snprintf(path, sizeof path, "%s/%s-np%d.bin", dir, mode, d.size);
        FILE *f = fopen(path, "wb");
        FT_CHECK(f != NULL, "cannot write %s", path);
        fwrite(&n, sizeof n, 1, f);
        fwrite(ddi, sizeof *ddi, n, f);
        fwrite(t.g.params, sizeof *t.g.params, n, f);
        fwrite(bpd, sizeof *bpd, STEPS + 1, f);
        fclose(f);
        printf("%s np%d: train bpd %.9f ... %.9f, test %.9f\n", mode, d.size, bpd[0],
               bpd[STEPS - 1], bpd[STEPS]);
    }
    free(ddi);
    trainer_free(&t);
    dist_finalize();
    return 0;
}

/* ---------- comparison (cmocka) ---------- */

static const char *g_dir;

struct result {
    size_t n;
    float *ddi, *params;
    double bpd[STEPS + 1];
};

static void load(struct result *r, const char *mode, int np)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s-np%d.bin", g_dir, mode, np);
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("missing %s (run tests/dist_equiv.sh)", path);
    assert_int_equal(fread(&r->n, sizeof r->n, 1, f), 1);
    r->ddi = malloc(r->n * sizeof *r->ddi);
    r->params = malloc(r->n * sizeof *r->params);
    assert_int_equal(fread(r->ddi, sizeof *r->ddi, r->n, f), r->n);
    assert_int_equal(fread(r->params, sizeof *r->params, r->n, f), r->n);
    assert_int_equal(fread(r->bpd, sizeof *r->bpd, STEPS + 1, f), STEPS + 1);
    fclose(f);
}

static double rel_l2(const float *a, const float *b, size_t n)
{
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        s += (double)b[i] * b[i];
    }
    return sqrt(d / s);
}

static void compare_mode(const char *mode, double tol)
{
    struct result ref, r;
    load(&ref, mode, 1);
    for (int np = 2; np <= 4; np *= 2) {
        load(&r, mode, np);
        assert_int_equal(r.n, ref.n);
        int same_ddi = memcmp(r.ddi, ref.ddi, r.n * sizeof *r.ddi) == 0;
        int same = memcmp(r.params, ref.params, r.n * sizeof *r.params) == 0;
        printf("%s np%d vs np1: DDI %s (rel %.3g), params after %d updates %s (rel L2 %.3g), "
               "test bpd %.12f vs %.12f\n", mode, np, same_ddi ? "bitwise equal" : "differ",
               rel_l2(r.ddi, ref.ddi, r.n), STEPS, same ? "bitwise equal" : "differ",
               rel_l2(r.params, ref.params, r.n), r.bpd[STEPS], ref.bpd[STEPS]);
        /* DDI sums are reduced in double; world-size rounding stays far below 1e-6 */
        ft_assert_close(r.ddi, ref.ddi, r.n, 1e-6, 0.0);
        assert_true(rel_l2(r.params, ref.params, r.n) <= tol);
        ft_assert_close(r.params, ref.params, r.n, tol, 0.0);
        ft_assert_close_d(r.bpd, ref.bpd, STEPS + 1, 1e-6, 0.0);
        free(r.ddi);
        free(r.params);
    }
    free(ref.ddi);
    free(ref.params);
}

static void test_deterministic(void **state)
{
    (void)state;
    compare_mode("deterministic", 1e-6);
}

static void test_fast(void **state)
{
    (void)state;
    /* Plain MPI_Allreduce sums in an order that changes with R: equal only up
     * to float rounding, amplified a little by 5 Adam updates. */
    compare_mode("fast", 1e-4);
}

/* cmpckpt A B TOL: parameters of two checkpoints of one model, equal within TOL
 * relative (0: bitwise). Exit 0 if so. */
static int cmp_ckpt(const char *a, const char *b, double tol)
{
    struct ckpt_info info;
    struct ft_err err;
    struct config cfg;
    struct glow_spec spec;
    struct glow ga, gb;
    if (checkpoint_inspect(a, &info, &err) != FT_OK
        || config_load_string(&cfg, info.config, strlen(info.config), a, &err) != FT_OK) {
        fprintf(stderr, "cmpckpt: %s\n", err.msg);
        return 1;
    }
    checkpoint_info_free(&info);
    config_glow_spec(&cfg, &spec);
    FT_CHECK(glow_init(&ga, &spec, 1, 1, &err) == FT_OK, "%s", err.msg);
    FT_CHECK(glow_init(&gb, &spec, 1, 1, &err) == FT_OK, "%s", err.msg);
    if (checkpoint_load(a, &cfg, &ga, NULL, NULL, NULL, &err) != FT_OK
        || checkpoint_load(b, &cfg, &gb, NULL, NULL, NULL, &err) != FT_OK) {
        fprintf(stderr, "cmpckpt: %s\n", err.msg);
        return 1;
    }
    int same = memcmp(ga.params, gb.params, ga.n_params * sizeof *ga.params) == 0;
    double rel = rel_l2(ga.params, gb.params, ga.n_params), worst = 0;
    for (size_t i = 0; i < ga.n_params; i++) {
        double d = fabs((double)ga.params[i] - gb.params[i]) / fmax(fabs(gb.params[i]), 1e-30);
        if (d > worst && fabs(gb.params[i]) > 1e-6)
            worst = d;
    }
    printf("cmpckpt: %s vs %s: %s, relative L2 %.3g, worst element %.3g\n", a, b,
           same ? "bitwise equal" : "differ", rel, worst);
    glow_free(&ga);
    glow_free(&gb);
    return (tol == 0 ? same : rel <= tol) ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "cmpckpt"))
        return cmp_ckpt(argv[2], argv[3], atof(argv[4]));
    if (argc == 3 && !strcmp(argv[1], "data")) {   /* data sets for the fault tests */
        make_data(argv[2]);
        return 0;
    }
    if (argc == 4 && !strcmp(argv[1], "run"))
        return run(argv[2], argv[3]);
    if (argc != 3 || strcmp(argv[1], "compare")) {
        fprintf(stderr, "usage: test_dist_equiv run DIR MODE | compare DIR | data DIR | cmpckpt A B TOL\n");
        return 2;
    }
    g_dir = argv[2];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_fast),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
