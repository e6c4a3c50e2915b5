/* Tests of the config module: the shipped configs load, every class of user
 * error is refused with a message naming the source and the key, --set
 * overrides, and dump -> load gives an equal struct. FT_SOURCE_DIR (set by
 * ctest) locates configs/; temporary files live under a mkdtemp directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

struct fixture {
    char src[PATH_MAX];       /* FT_SOURCE_DIR */
    char defaults[PATH_MAX];  /* its configs/default.yaml */
    char dir[64];             /* mkdtemp */
    char user[PATH_MAX];      /* dir/user.yaml, written by load_user */
    struct config cfg;
    struct ft_err err;
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    const char *src = getenv("FT_SOURCE_DIR");
    if (!fx || !src) {
        fprintf(stderr, "test_config: FT_SOURCE_DIR is not set (ctest sets it)\n");
        free(fx);
        return -1;
    }
    snprintf(fx->src, sizeof fx->src, "%s", src);
    snprintf(fx->defaults, sizeof fx->defaults, "%s/configs/default.yaml", src);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/test_config.XXXXXX");
    if (!mkdtemp(fx->dir)) {
        perror("mkdtemp");
        free(fx);
        return -1;
    }
    snprintf(fx->user, sizeof fx->user, "%s/user.yaml", fx->dir);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    DIR *d = opendir(fx->dir);
    struct dirent *e;
    char p[PATH_MAX + 300];
    while (d && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", fx->dir, e->d_name);
        unlink(p);
    }
    if (d)
        closedir(d);
    rmdir(fx->dir);
    free(fx);
    return 0;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* Loads default.yaml, then text as dir/user.yaml (NULL: no user file), then sets. */
static int load_user(struct fixture *fx, const char *text, const char *const *sets, size_t n)
{
    memset(&fx->err, 0, sizeof fx->err);
    if (text)
        write_file(fx->user, text);
    return config_load(&fx->cfg, fx->defaults, text ? fx->user : NULL, sets, n, &fx->err);
}

static int load_shipped(struct fixture *fx, const char *name)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/configs/%s", fx->src, name);
    memset(&fx->err, 0, sizeof fx->err);
    return config_load(&fx->cfg, fx->defaults, path, NULL, 0, &fx->err);
}

#define assert_ok(fx, rc) assert_ok_impl((fx), (rc), __FILE__, __LINE__)
static void assert_ok_impl(const struct fixture *fx, int rc, const char *file, int line)
{
    if (rc != FT_OK) {
        print_error("%s:%d: expected FT_OK, got %d: %s\n", file, line, rc, fx->err.msg);
        fail();
    }
}

/* The load failed with FT_ERR_CONFIG and the message contains want. */
#define assert_err(fx, rc, want) assert_err_impl((fx), (rc), (want), __FILE__, __LINE__)
static void assert_err_impl(const struct fixture *fx, int rc, const char *want,
                            const char *file, int line)
{
    if (rc != FT_ERR_CONFIG || !strstr(fx->err.msg, want)) {
        print_error("%s:%d: expected FT_ERR_CONFIG with \"%s\"\n  got %d: \"%s\"\n", file, line,
                    want, rc, fx->err.msg);
        fail();
    }
}

/* ---- shipped configs ----------------------------------------------------- */

static void test_default_alone(void **state)
{
    struct fixture *fx = *state;
    assert_ok(fx, load_user(fx, NULL, NULL, 0));
    const struct config *c = &fx->cfg;
    assert_int_equal(c->data.height, 32);
    assert_int_equal(c->data.channels, 1);
    assert_int_equal(c->data.n_bits, 8);
    assert_int_equal(c->model.levels, 3);
    assert_int_equal(c->model.depth, 8);
    assert_int_equal(c->model.width, 128);
    assert_int_equal(c->model.coupling, COUPLING_AFFINE);
    assert_true(c->model.learntop);
    assert_int_equal(c->train.batch, 64);
    assert_int_equal(c->train.optimizer, OPTIM_ADAMAX);
    assert_true(c->train.lr == 1e-3);
    assert_int_equal(c->run.sample_temperatures_count, 6);
    assert_true(c->run.sample_temperatures[2] == 0.7);
    assert_string_equal(c->data.train, "data/fashion-mnist/train.h5");
}

static void test_fashion_mnist(void **state)
{
    struct fixture *fx = *state;
    assert_ok(fx, load_shipped(fx, "fashion-mnist.yaml"));
    const struct config *c = &fx->cfg;
    assert_int_equal(c->train.optimizer, OPTIM_ADAM);
    assert_true(c->train.beta2 == 0.999);
    assert_true(c->train.clip_norm > 0);
    assert_true(c->train.max_minutes == 30);
    assert_int_equal(c->train.epochs, 20);          /* from default.yaml */
    assert_int_equal(c->model.depth, 8);
    assert_int_equal(c->train.reduce_group, 8);     /* from default.yaml */
}

static void test_cifar10_paper(void **state)
{
    struct fixture *fx = *state;
    struct glow_spec spec;
    assert_ok(fx, load_shipped(fx, "cifar10-paper.yaml"));
    const struct config *c = &fx->cfg;
    assert_string_equal(c->data.train, "data/cifar10/train.h5");
    assert_string_equal(c->data.test, "data/cifar10/test.h5");
    assert_int_equal(c->train.batch, 512);
    assert_int_equal(c->train.optimizer, OPTIM_ADAMAX);
    assert_int_equal(c->train.warmup_images, 500000);
    assert_true(c->train.beta2 == 0);
    config_glow_spec(c, &spec);
    assert_int_equal(spec.height, 32);
    assert_int_equal(spec.channels, 3);
    assert_int_equal(spec.levels, 3);
    assert_int_equal(spec.depth, 32);
    assert_int_equal(spec.hidden, 512);
    assert_int_equal(spec.coupling, COUPLING_AFFINE);
    assert_int_equal(spec.scale, SCALE_SIGMOID2);
    assert_int_equal(spec.perm, PERM_INVCONV);
    assert_int_equal(spec.learntop, 1);
    assert_int_equal(spec.n_bits, 8);
}

static void test_tiny(void **state)
{
    struct fixture *fx = *state;
    assert_ok(fx, load_shipped(fx, "tiny-test.yaml"));
    const struct config *c = &fx->cfg;
    assert_int_equal(c->data.height, 8);
    assert_int_equal(c->model.levels, 2);
    assert_int_equal(c->model.depth, 2);
    assert_int_equal(c->model.width, 8);
    assert_int_equal(c->train.batch, 8);
    assert_int_equal(c->train.max_steps, 40);
    assert_int_equal(c->train.epochs, 0);
}

static void test_empty_user_file(void **state)
{
    struct fixture *fx = *state;
    struct config base;
    assert_ok(fx, load_user(fx, NULL, NULL, 0));
    base = fx->cfg;
    assert_ok(fx, load_user(fx, "", NULL, 0));
    assert_true(config_equal(&base, &fx->cfg, NULL, 0));
    assert_ok(fx, load_user(fx, "# comments only\n", NULL, 0));
    assert_true(config_equal(&base, &fx->cfg, NULL, 0));
    assert_ok(fx, load_user(fx, "train:\n  lr: 2.5e-4\n", NULL, 0));
    char key[FT_CONFIG_KEY_MAX];
    assert_false(config_equal(&base, &fx->cfg, key, sizeof key));
    assert_string_equal(key, "train.lr");               /* the only change */
    fx->cfg.train.lr = base.train.lr;
    assert_true(config_equal(&base, &fx->cfg, NULL, 0));
}

/* ---- errors in files ----------------------------------------------------- */

struct bad_case {
    const char *yaml, *want;
};

static void check_cases(struct fixture *fx, const struct bad_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc = load_user(fx, cases[i].yaml, NULL, 0);
        if (rc != FT_ERR_CONFIG || !strstr(fx->err.msg, cases[i].want)) {
            print_error("case %zu:\n%s  expected \"%s\"\n  got %d: \"%s\"\n", i, cases[i].yaml,
                        cases[i].want, rc, fx->err.msg);
            fail();
        }
        assert_non_null(strstr(fx->err.msg, "user.yaml: "));   /* names the file */
    }
}

static void test_unknown_keys(void **state)
{
    static const struct bad_case cases[] = {
        {"train:\n  lrr: 1\n", "train.lrr: unknown key (line 2)"},
        {"trian:\n  lr: 1\n", "trian: unknown section"},
        {"train:\n  lr: 1\n  lr: 2\n", "train.lr: duplicate key"},
        {"train:\n  lr: 1\ntrain:\n  seed: 2\n", "train: duplicate section"},
        {"train:\n  lr: 1\n  - 2\n", "YAML syntax error at line 3"},
        {"- 1\n- 2\n", "expected a mapping of sections"},
        {"train: 5\n", "train: expected a mapping of keys"},
        {"train:\n  lr: 1\n---\ntrain:\n  lr: 2\n", "only one YAML document"},
    };
    check_cases(*state, cases, sizeof cases / sizeof cases[0]);
}

static void test_wrong_types(void **state)
{
    static const struct bad_case cases[] = {
        {"train:\n  batch: sixty\n", "train.batch: expected an unsigned integer, got 'sixty'"},
        {"train:\n  batch: 64abc\n", "train.batch: expected an unsigned integer, got '64abc'"},
        {"train:\n  batch: 6.5\n", "train.batch: expected an unsigned integer, got '6.5'"},
        {"train:\n  batch: -1\n", "train.batch: expected an unsigned integer, got '-1'"},
        {"train:\n  batch: 010\n", "train.batch: expected an unsigned integer, got '010'"},
        {"train:\n  batch: \"64\"\n", "train.batch: expected an unsigned integer, got the quoted"},
        {"train:\n  batch:\n", "train.batch: has no value"},
        {"train:\n  batch: [64]\n", "train.batch: expected a single value"},
        {"train:\n  batch: 4294967296\n", "train.batch: 4294967296 is out of range"},
        {"train:\n  lr: fast\n", "train.lr: expected a number, got 'fast'"},
        {"train:\n  lr: .nan\n", "train.lr: expected a number, got '.nan'"},
        {"train:\n  lr: 1e999\n", "train.lr: 1e999 is out of range"},
        {"train:\n  ema: maybe\n", "train.ema: expected true or false, got 'maybe'"},
        {"train:\n  ema: 1\n", "train.ema: expected true or false, got '1'"},
        {"model:\n  permutation: 0\n", "model.permutation: expected one of invconv, invconv_lu"},
        {"run:\n  sample_temperatures: 0.5\n", "run.sample_temperatures: expected a list"},
        {"run:\n  sample_temperatures: [0, hot]\n", "list entry 1: expected a number, got 'hot'"},
        {"run:\n  sample_temperatures: []\n", "expected 1 to 16 entries, got 0"},
        {"data:\n  train: \"\"\n", "data.train: must not be empty"},
    };
    check_cases(*state, cases, sizeof cases / sizeof cases[0]);
}

static void test_out_of_range(void **state)
{
    static const struct bad_case cases[] = {
        {"data:\n  n_bits: 9\n", "data.n_bits: must be in 1..8, got 9"},
        {"data:\n  n_bits: 0\n", "data.n_bits: must be in 1..8, got 0"},
        {"train:\n  lr: -1\n", "user.yaml: train.lr: must be > 0, got -1"},
        {"train:\n  lr: 0\n", "train.lr: must be > 0, got 0"},
        {"data:\n  logit_alpha: 1.5\n", "data.logit_alpha: must be in (0, 1), got 1.5"},
        {"data:\n  channels: 5\n", "data.channels: must be in 1..4, got 5"},
        {"train:\n  beta2: 1\n", "train.beta2: must be in [0, 1), got 1"},
        {"train:\n  clip_norm: -0.5\n", "train.clip_norm: must be >= 0, got -0.5"},
        {"model:\n  weight_y: -1\n", "model.weight_y: must be >= 0, got -1"},
        {"run:\n  sample_temperatures: [0, 5]\n", "entry 1 must be in [0, 4], got 5"},
        {"run:\n  keep_last: 0\n", "run.keep_last: must be in 1..1000000, got 0"},
        {"run:\n  keep_every: 1200\n",
         "run.keep_every: run.keep_every (1200) must be a multiple of run.checkpoint_every (500)"},
        {"train:\n  epochs: 0\n", "train.epochs: no stopping limit"},
    };
    check_cases(*state, cases, sizeof cases / sizeof cases[0]);
}

static void test_bad_enum(void **state)
{
    static const struct bad_case cases[] = {
        {"model:\n  coupling: affin\n",
         "model.coupling: expected one of affine, additive; got 'affin'"},
        {"train:\n  optimizer: sgd\n", "train.optimizer: expected one of adamax, adam; got 'sgd'"},
        {"data:\n  preprocess: Glow\n", "data.preprocess: expected one of glow, logit"},
    };
    check_cases(*state, cases, sizeof cases / sizeof cases[0]);
}

static void test_cross_field(void **state)
{
    static const struct bad_case cases[] = {
        {"train:\n  reduce_group: 12\n",
         "train.reduce_group: must divide train.batch (64), got 12"},
        {"train:\n  reduce_group: 128\n", "train.reduce_group: must be in 1..64, got 128"},
        {"model:\n  levels: 6\n",
         "model.levels: 6 levels (model.levels, arch glow) need data.height and data.width "
         "divisible by 64, got 32x32"},
        {"data:\n  height: 28\n", "data.height and data.width divisible by 8, got 28x32"},
        {"model:\n  arch: nice\n", "model.arch: arch nice has one level: model.levels must be 1"},
        {"model:\n  arch: nice\n  levels: 1\n", "model.arch: arch nice uses additive coupling"},
    };
    check_cases(*state, cases, sizeof cases / sizeof cases[0]);
    struct fixture *fx = *state;
    /* realnvp squeezes once per scale after the first: 3 scales need 4 | H. */
    assert_ok(fx, load_user(fx, "data:\n  height: 12\n  width: 12\nmodel:\n  arch: realnvp\n",
                            NULL, 0));
    assert_ok(fx, load_user(fx, "model:\n  arch: nice\n  levels: 1\n  coupling: additive\n",
                            NULL, 0));
}

static void test_missing_files(void **state)
{
    struct fixture *fx = *state;
    char defaults[PATH_MAX + 64];
    int rc = config_load(&fx->cfg, fx->defaults, "/nonexistent/x.yaml", NULL, 0, &fx->err);
    assert_err(fx, rc, "config: /nonexistent/x.yaml: cannot open");
    /* The defaults file must set every key. */
    snprintf(defaults, sizeof defaults, "%s/defaults.yaml", fx->dir);
    write_file(defaults, "data:\n  train: x.h5\n");
    rc = config_load(&fx->cfg, defaults, NULL, NULL, 0, &fx->err);
    assert_err(fx, rc, "defaults.yaml: data.test: missing (a base config must set every key)");
}

/* ---- --set --------------------------------------------------------------- */

static void test_set_valid(void **state)
{
    struct fixture *fx = *state;
    static const char *const sets[] = {
        "train.lr=5e-4", "model.depth=4", "run.sample_temperatures=[0, 0.25, 1]",
        "data.train=my dir/a #b: \"c\\d\".h5", "model.learntop=false", "train.seed=18446744073709551615",
        "model.permutation=invconv_lu", "train.lr=7e-4"};
    assert_ok(fx, load_user(fx, "train:\n  lr: -1\n", sets, sizeof sets / sizeof sets[0]));
    const struct config *c = &fx->cfg;
    assert_true(c->train.lr == 7e-4);                /* the last --set wins over the file */
    assert_int_equal(c->model.depth, 4);
    assert_int_equal(c->run.sample_temperatures_count, 3);
    assert_true(c->run.sample_temperatures[1] == 0.25);
    assert_string_equal(c->data.train, "my dir/a #b: \"c\\d\".h5");
    assert_false(c->model.learntop);
    assert_true(c->train.seed == UINT64_MAX);
    assert_int_equal(c->model.permutation, PERM_INVCONV_LU);
    assert_int_equal(c->model.width, 128);           /* untouched keys keep the defaults */
}

static void test_set_invalid(void **state)
{
    struct fixture *fx = *state;
    static const struct {
        const char *set, *want;
    } cases[] = {
        {"train.foo=1", "config: --set: train.foo: unknown key"},
        {"trian.lr=1", "config: --set: trian.lr: unknown key"},
        {"lr=1", "config: --set: lr: unknown key"},
        {"train.lr", "config: --set: 'train.lr': expected key=value"},
        {"train.lr=abc", "config: --set: train.lr: expected a number, got 'abc'"},
        {"train.lr=", "config: --set: train.lr: has no value"},
        {"train.batch=64 # c", "config: --set: train.batch: expected an unsigned integer"},
        {"train.lr=-1", "config: --set: train.lr: must be > 0, got -1"},
        {"model.coupling=affinee", "config: --set: model.coupling: expected one of affine"},
        {"run.sample_temperatures=0.5", "config: --set: run.sample_temperatures: expected a list"},
        {"run.sample_temperatures=[0, 1], x: 1",
         "config: --set: run.sample_temperatures: invalid value '[0, 1], x: 1': YAML syntax"},
        {"data.n_bits=9", "config: --set: data.n_bits: must be in 1..8, got 9"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *sets[] = {cases[i].set};
        int rc = load_user(fx, NULL, sets, 1);
        if (rc != FT_ERR_CONFIG || !strstr(fx->err.msg, cases[i].want)) {
            print_error("--set %s: expected \"%s\"\n  got %d: \"%s\"\n", cases[i].set,
                        cases[i].want, rc, fx->err.msg);
            fail();
        }
    }
}

/* A range error names whichever source last set the key. */
static void test_error_origin(void **state)
{
    struct fixture *fx = *state;
    const char *fix[] = {"train.lr=1e-3"};
    const char *breaks[] = {"train.batch=48"};
    assert_err(fx, load_user(fx, "train:\n  lr: -1\n", NULL, 0), "user.yaml: train.lr: must be > 0");
    assert_ok(fx, load_user(fx, "train:\n  lr: -1\n", fix, 1));
    /* reduce_group 8 comes from default.yaml: 48 is fine, 36 is not, and the
     * message names the later source (--set) and its key. */
    assert_ok(fx, load_user(fx, NULL, breaks, 1));
    breaks[0] = "train.batch=36";
    assert_err(fx, load_user(fx, NULL, breaks, 1),
               "config: --set: train.batch: must be a multiple of train.reduce_group (8), got 36");
    /* batch from default.yaml, reduce_group from the file: the file is named. */
    assert_err(fx, load_user(fx, "train:\n  reduce_group: 12\n", NULL, 0),
               "user.yaml: train.reduce_group: must divide train.batch (64), got 12");
    /* Limits zeroed in two sources: named after the later one. */
    breaks[0] = "train.max_minutes=0";
    assert_err(fx, load_user(fx, "train:\n  epochs: 0\n", breaks, 1),
               "config: --set: train.max_minutes: no stopping limit");
}

/* ---- dump, hash, equality ------------------------------------------------ */

static void test_dump_round_trip(void **state)
{
    struct fixture *fx = *state;
    static const char *const sets[] = {
        "train.lr=3e-4", "train.beta1=0.1", "data.logit_alpha=0.0123456789012345678",
        "data.test=odd: \"name\" #1.h5", "run.sample_temperatures=[0, 0.3333333333333333, 1]",
        "train.seed=12345678901234567890", "train.max_minutes=12.5", "model.ycond=true"};
    struct config back;
    char key[FT_CONFIG_KEY_MAX] = "", path[PATH_MAX + 64];
    size_t len = 0;

    assert_ok(fx, load_user(fx, "model:\n  memory: reversible\n  permutation: reverse\n", sets,
                            sizeof sets / sizeof sets[0]));
    char *text = config_dump_string(&fx->cfg, &len);
    assert_int_equal(strlen(text), len);
    assert_ok(fx, config_load_string(&back, text, len, "dump", &fx->err));
    if (!config_equal(&fx->cfg, &back, key, sizeof key)) {
        print_error("round trip differs at %s; dump:\n%s\n", key, text);
        fail();
    }
    assert_memory_equal(&fx->cfg, &back, sizeof back);
    assert_true(config_hash(&fx->cfg) == config_hash(&back));

    /* Through a file: a dump is itself a complete base config. */
    snprintf(path, sizeof path, "%s/dump.yaml", fx->dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(config_dump(&fx->cfg, f), FT_OK);
    assert_int_equal(fclose(f), 0);
    assert_ok(fx, config_load(&back, path, NULL, NULL, 0, &fx->err));
    assert_true(config_equal(&fx->cfg, &back, NULL, 0));
    free(text);

    /* A changed value changes the hash. */
    back.train.lr *= 2;
    assert_true(config_hash(&fx->cfg) != config_hash(&back));
}

static void test_model_equal(void **state)
{
    struct fixture *fx = *state;
    struct config a, b;
    char key[FT_CONFIG_KEY_MAX] = "";
    const char *train_only[] = {"train.lr=2e-4", "train.batch=128", "run.dir=elsewhere",
                                "model.memory=reversible", "data.train=other.h5",
                                "model.weight_y=0"};
    const char *depth[] = {"model.depth=4"};
    const char *alpha[] = {"data.logit_alpha=0.1"};
    const char *perm[] = {"model.permutation=shuffle"};

    assert_ok(fx, load_user(fx, NULL, NULL, 0));
    a = fx->cfg;
    assert_ok(fx, load_user(fx, NULL, train_only, sizeof train_only / sizeof train_only[0]));
    b = fx->cfg;
    assert_true(config_model_equal(&a, &b, key, sizeof key));
    assert_false(config_equal(&a, &b, key, sizeof key));
    assert_string_equal(key, "data.train");
    assert_ok(fx, load_user(fx, NULL, alpha, 1));    /* alpha unused by preprocess glow */
    assert_true(config_model_equal(&a, &fx->cfg, key, sizeof key));
    assert_ok(fx, load_user(fx, NULL, depth, 1));
    assert_false(config_model_equal(&a, &fx->cfg, key, sizeof key));
    assert_string_equal(key, "model.depth");
    assert_ok(fx, load_user(fx, NULL, perm, 1));
    assert_false(config_model_equal(&a, &fx->cfg, key, sizeof key));
    assert_string_equal(key, "model.permutation");
}

static void test_validate_struct(void **state)
{
    struct fixture *fx = *state;
    assert_ok(fx, load_user(fx, NULL, NULL, 0));
    struct config c = fx->cfg;
    assert_int_equal(config_validate(&c, NULL, "mine", &fx->err), FT_OK);
    c.train.lr = NAN;
    assert_err(fx, config_validate(&c, NULL, "mine", &fx->err), "config: mine: train.lr: must be > 0");
    c = fx->cfg;
    c.model.coupling = (enum coupling_kind)7;
    assert_err(fx, config_validate(&c, NULL, "mine", &fx->err), "model.coupling: must be in 0..1, got 7");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_default_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fashion_mnist, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cifar10_paper, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tiny, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_user_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_types, setup, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_enum, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cross_field, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_valid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_origin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dump_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_model_equal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_validate_struct, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
