/* Tests of the checkpoint module (src/checkpoint.c, src/checkpoint_read.c) on a
 * tiny 8x8x1 Glow (L=2, K=2, width 4, LU invconv): save → load is bit-exact for
 * every arena, the state and the config; save → load → save gives identical
 * payloads; keep_last / keep_every retention; a truncated newest file, a flipped
 * byte in a tensor, a wrong format version or a renamed file is refused and
 * load_latest falls back with a warning naming the file; another model shape is
 * refused naming the first mismatching tensor (FT_ERR_CONFIG: no fallback);
 * stale temp files are removed;
 * flowinspect verifies ($FT_BINARY_DIR/flowinspect, as a child process). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint.h"
#include "config.h"
#include "ft_test.h"
#include "glow.h"
#include "h5util.h"
#include "optim.h"

struct model {
    struct config cfg;
    struct glow g;
    struct optim o;
    char *yaml;
};

struct fixture {
    char dir[256];
    char path[512];
    struct model a;              /* the saved model */
    struct ckpt_snapshot snap;
};

/* Tiny config; width is the coupling width, ema the EMA switch. */
static void make_config(struct config *cfg, unsigned width, int ema)
{
    char w[32], e[32];
    struct ft_err err = {{0}};
    snprintf(w, sizeof w, "model.width=%u", width);
    snprintf(e, sizeof e, "train.ema=%s", ema ? "true" : "false");
    const char *sets[] = { "data.height=8", "data.width=8", "data.channels=1", "model.levels=2",
                           "model.depth=2", w, "model.permutation=invconv_lu", e,
                           "train.ema_beta=0.999", "train.beta2=0.999", "run.keep_last=3" };
    if (config_load(cfg, FT_DEFAULT_CONFIG, NULL, sets, sizeof sets / sizeof sets[0], &err) != FT_OK)
        fail_msg("config_load: %s", err.msg);
}

/* Model and optimizer from cfg; random parameters, moments and EMA if fill. */
static void make_model(struct model *m, unsigned width, int ema, uint64_t seed, int fill)
{
    struct glow_spec spec;
    struct ft_err err = {{0}};
    memset(m, 0, sizeof *m);
    make_config(&m->cfg, width, ema);
    config_glow_spec(&m->cfg, &spec);
    if (glow_init(&m->g, &spec, 2, 0, &err) != FT_OK)
        fail_msg("glow_init: %s", err.msg);
    optim_init(&m->o, OPTIM_ADAMAX, m->g.n_params, 1e-3, 0.9, 0.999, 0, ema, 0.999);
    m->yaml = config_dump_string(&m->cfg, NULL);
    if (!fill)
        return;
    glow_init_params(&m->g, seed);
    /* Actnorms and zero layers get values too, so every tensor is distinct. The
     * arenas' alignment padding stays 0, as training leaves it. */
    for (size_t i = 0; i < m->g.n_tensors; i++) {
        const struct glow_tensor *t = &m->g.tensors[i];
        if (t->kind != TENSOR_PARAM)
            continue;
        ft_fill_normal(m->g.params + t->offset, t->numel, 0.1, seed + 100 + 4 * i);
        ft_fill_normal(m->o.m + t->offset, t->numel, 0.01, seed + 101 + 4 * i);
        ft_fill_uniform(m->o.v + t->offset, t->numel, 0.0, 0.1, seed + 102 + 4 * i);
        if (ema)
            ft_fill_normal(m->o.ema_w + t->offset, t->numel, 0.1, seed + 103 + 4 * i);
    }
    m->o.t = 17;
}

static void free_model(struct model *m)
{
    optim_free(&m->o);
    glow_free(&m->g);
    free(m->yaml);
    memset(m, 0, sizeof *m);
}

static struct train_state make_state(uint64_t step)
{
    struct train_state st = {
        .step = step, .epoch = 3, .pos = 128, .images_seen = 64 * step, .skipped = 2, .bad_run = 1,
        .opt_t = 17, .seed = UINT64_C(0xfedcba9876543210), .ddi_done = 1, .world_size = 4,
        .best_test_bpd = step % 2 ? NAN : 3.25, .slurm_job_id = 4242, .slurm_restart_count = 2,
        .wall_s = 12.5 + (double)step,
    };
    return st;
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    const char *tmp = getenv("TMPDIR");
    snprintf(fx->dir, sizeof fx->dir, "%s/test_checkpoint.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(fx->dir)) {
        fprintf(stderr, "mkdtemp(%s): %s\n", fx->dir, strerror(errno));
        free(fx);
        return -1;
    }
    make_model(&fx->a, 4, 1, 7, 1);
    ckpt_snapshot_init(&fx->snap, &fx->a.g, &fx->a.o);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    ckpt_snapshot_free(&fx->snap);
    free_model(&fx->a);
    ft_rm_rf(fx->dir);
    free(fx);
    return 0;
}

static const char *in_dir(struct fixture *fx, const char *name)
{
    snprintf(fx->path, sizeof fx->path, "%s/%s", fx->dir, name);
    return fx->path;
}

static const char *ckpt_in(struct fixture *fx, uint64_t step)
{
    snprintf(fx->path, sizeof fx->path, "%s/ckpt-%09llu.h5", fx->dir, (unsigned long long)step);
    return fx->path;
}

/* Saves fx->a at step into dir. */
static void save_to(struct fixture *fx, const char *dir, uint64_t step, unsigned keep_last, uint64_t keep_every)
{
    struct ft_err err = {{0}};
    struct train_state st = make_state(step);
    double secs = -1;
    ckpt_snapshot_take(&fx->snap, &fx->a.g, &fx->a.o, &st, fx->a.yaml);
    if (checkpoint_write(dir, &fx->snap, keep_last, keep_every, &secs, &err) != FT_OK)
        fail_msg("checkpoint_write(step %llu): %s", (unsigned long long)step, err.msg);
    assert_true(secs >= 0);
}

static void save(struct fixture *fx, uint64_t step)
{
    save_to(fx, fx->dir, step, 100, 0);
}

static void assert_msg_has(const char *msg, const char *want)
{
    if (!strstr(msg, want))
        fail_msg("message '%s' lacks '%s'", msg, want);
    if (strchr(msg, '\n'))
        fail_msg("message is not one line: '%s'", msg);
}

/* Bitwise comparison; prints the first differing element. */
static void assert_bits(const void *got, const void *want, size_t n, size_t elem, const char *what)
{
    const unsigned char *a = got, *b = want;
    for (size_t i = 0; i < n * elem; i++)
        if (a[i] != b[i])
            fail_msg("%s: element %zu differs", what, i / elem);
}

static void assert_state_equal(const struct train_state *a, const struct train_state *b)
{
    for (size_t i = 0; i < ckpt_n_state_fields; i++) {
        const struct ckpt_field *f = &ckpt_state_fields[i];
        size_t size = f->type == CKPT_I32 ? 4 : 8;
        if (memcmp((const char *)a + f->offset, (const char *)b + f->offset, size) != 0)
            fail_msg("state field %s differs after the round trip", f->name);
    }
}

/* Redirects stderr into a file until capture_end, which returns its text. */
struct capture {
    int saved;
    char path[600];
    char text[8192];
};

static void capture_begin(struct capture *c, struct fixture *fx)
{
    snprintf(c->path, sizeof c->path, "%s/stderr.txt", fx->dir);
    fflush(stderr);
    c->saved = dup(2);
    int fd = open(c->path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    dup2(fd, 2);
    close(fd);
}

static const char *capture_end(struct capture *c)
{
    fflush(stderr);
    dup2(c->saved, 2);
    close(c->saved);
    FILE *f = fopen(c->path, "r");
    size_t n = f ? fread(c->text, 1, sizeof c->text - 1, f) : 0;
    c->text[n] = '\0';
    if (f)
        fclose(f);
    unlink(c->path);
    return c->text;
}

static void test_round_trip(void **state)
{
    struct fixture *fx = *state;
    struct model b;
    struct train_state st, want = make_state(200);
    struct ft_err err = {{0}};
    char *text = NULL;

    save(fx, 200);
    assert_int_equal(access(ckpt_in(fx, 200), R_OK), 0);
    make_model(&b, 4, 1, 99, 0);
    if (checkpoint_load(ckpt_in(fx, 200), &b.cfg, &b.g, &b.o, &st, &text, &err) != FT_OK)
        fail_msg("checkpoint_load: %s", err.msg);
    assert_bits(b.g.params, fx->a.g.params, b.g.n_params, sizeof(float), "params");
    assert_bits(b.g.fbufs, fx->a.g.fbufs, b.g.n_fbufs, sizeof(float), "float buffers");
    assert_bits(b.g.ibufs, fx->a.g.ibufs, b.g.n_ibufs, sizeof(int32_t), "int buffers");
    assert_bits(b.o.m, fx->a.o.m, b.o.n, sizeof(float), "adam m");
    assert_bits(b.o.v, fx->a.o.v, b.o.n, sizeof(float), "adam v");
    assert_bits(b.o.ema_w, fx->a.o.ema_w, b.o.n, sizeof(float), "ema");
    assert_int_equal(b.o.t, 17);
    assert_state_equal(&st, &want);
    assert_non_null(text);
    assert_string_equal(text, fx->a.yaml);
    free(text);

    /* Parameters only: no optimizer, no state, no config text wanted. */
    free_model(&b);
    make_model(&b, 4, 0, 99, 0);
    if (checkpoint_load(ckpt_in(fx, 200), &b.cfg, &b.g, NULL, NULL, NULL, &err) != FT_OK)
        fail_msg("checkpoint_load without optimizer: %s", err.msg);
    assert_bits(b.g.params, fx->a.g.params, b.g.n_params, sizeof(float), "params");
    free_model(&b);
}

/* Every dataset of a file as raw bytes in its stored type, keyed by name. */
struct payload {
    char names[512][128];
    unsigned char *data[512];
    size_t size[512];
    size_t n;
};

static herr_t payload_cb(hid_t root, const char *name, const H5L_info_t *li, void *p_)
{
    struct payload *p = p_;
    (void)li;
    hid_t obj = H5Oopen(root, name, H5P_DEFAULT);
    if (H5Iget_type(obj) == H5I_DATASET) {
        hid_t type = H5Dget_type(obj), space = H5Dget_space(obj);
        size_t size = H5Tget_size(type) * (size_t)H5Sget_simple_extent_npoints(space);
        if (p->n == 512)
            return -1;
        snprintf(p->names[p->n], sizeof p->names[0], "%s", name);
        p->data[p->n] = malloc(size);
        p->size[p->n] = size;
        if (H5Dread(obj, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, p->data[p->n]) < 0)
            return -1;
        p->n++;
        H5Sclose(space);
        H5Tclose(type);
    }
    H5Oclose(obj);
    return 0;
}

static void read_payload(const char *path, struct payload *p, char *format, int64_t *version)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    p->n = 0;
    assert_true(H5Lvisit(f, H5_INDEX_NAME, H5_ITER_INC, payload_cb, p) >= 0);
    assert_int_equal(h5util_read_str_attr(f, "format", format, 64), 1);
    assert_int_equal(h5util_read_i64_attr(f, "format_version", version, 1), 1);
    H5Fclose(f);
}

static void test_resave_identical(void **state)
{
    struct fixture *fx = *state;
    static struct payload p1, p2;
    struct model b;
    struct train_state st;
    struct ckpt_snapshot s2;
    struct ft_err err = {{0}};
    char *text = NULL, f1[64], f2[64], dir2[600], path2[700];
    int64_t v1, v2;
    size_t n_tensor_dsets = 0;

    save(fx, 300);
    make_model(&b, 4, 1, 99, 0);
    if (checkpoint_load(ckpt_in(fx, 300), &b.cfg, &b.g, &b.o, &st, &text, &err) != FT_OK)
        fail_msg("checkpoint_load: %s", err.msg);
    snprintf(dir2, sizeof dir2, "%s/again", fx->dir);
    assert_int_equal(mkdir(dir2, 0755), 0);
    ckpt_snapshot_init(&s2, &b.g, &b.o);
    ckpt_snapshot_take(&s2, &b.g, &b.o, &st, text);
    if (checkpoint_write(dir2, &s2, 3, 0, NULL, &err) != FT_OK)
        fail_msg("checkpoint_write again: %s", err.msg);
    snprintf(path2, sizeof path2, "%s/ckpt-000000300.h5", dir2);
    read_payload(ckpt_in(fx, 300), &p1, f1, &v1);
    read_payload(path2, &p2, f2, &v2);
    assert_string_equal(f1, f2);
    assert_string_equal(f1, CHECKPOINT_FORMAT);
    assert_int_equal(v1, v2);
    assert_int_equal(p1.n, p2.n);
    for (size_t i = 0; i < p1.n; i++) {
        assert_string_equal(p1.names[i], p2.names[i]);
        assert_int_equal(p1.size[i], p2.size[i]);
        if (memcmp(p1.data[i], p2.data[i], p1.size[i]) != 0)
            fail_msg("dataset %s differs after save → load → save", p1.names[i]);
        n_tensor_dsets += strncmp(p1.names[i], "params/", 7) == 0;
        free(p1.data[i]);
        free(p2.data[i]);
    }
    /* every tensor of the table is there, plus config, state and moments */
    assert_int_equal(n_tensor_dsets, fx->a.g.n_tensors);
    ckpt_snapshot_free(&s2);
    free(text);
    free_model(&b);
}

static int exists(struct fixture *fx, uint64_t step)
{
    return access(ckpt_in(fx, step), F_OK) == 0;
}

static void test_retention(void **state)
{
    struct fixture *fx = *state;
    for (uint64_t s = 100; s <= 500; s += 100)
        save_to(fx, fx->dir, s, 2, 0);
    assert_false(exists(fx, 100));
    assert_false(exists(fx, 200));
    assert_false(exists(fx, 300));
    assert_true(exists(fx, 400));
    assert_true(exists(fx, 500));

    /* keep_every 200: multiples of 200 stay forever */
    for (uint64_t s = 600; s <= 1100; s += 100)
        save_to(fx, fx->dir, s, 2, 200);
    for (uint64_t s = 400; s <= 1100; s += 100) {
        int want = s % 200 == 0 || s >= 1000;
        if (exists(fx, s) != want)
            fail_msg("step %llu: exists %d, want %d", (unsigned long long)s, exists(fx, s), want);
    }

    /* A later file (left by a run that fell back past it) is never deleted. */
    save_to(fx, fx->dir, 700, 1, 0);
    assert_true(exists(fx, 700));
    assert_true(exists(fx, 1100));
    assert_false(exists(fx, 500));
}

static void test_truncated_falls_back(void **state)
{
    struct fixture *fx = *state;
    struct model b;
    struct train_state st;
    struct ft_err err = {{0}};
    struct capture cap;
    struct stat sb;
    char path[600];

    save(fx, 100);
    save(fx, 200);
    assert_int_equal(stat(ckpt_in(fx, 200), &sb), 0);
    assert_int_equal(truncate(fx->path, sb.st_size / 2), 0);
    make_model(&b, 4, 1, 99, 0);
    assert_int_equal(checkpoint_load(ckpt_in(fx, 200), &b.cfg, &b.g, &b.o, &st, NULL, &err), FT_ERR_CKPT);
    assert_msg_has(err.msg, "ckpt-000000200.h5: truncated or not HDF5");
    /* a refused file leaves the model untouched */
    for (size_t i = 0; i < b.g.n_params; i++)
        if (b.g.params[i] != 0)
            fail_msg("params[%zu] = %g after a refused load", i, (double)b.g.params[i]);

    capture_begin(&cap, fx);
    int rc = checkpoint_load_latest(fx->dir, &b.cfg, &b.g, &b.o, &st, path, sizeof path, &err);
    const char *text = capture_end(&cap);
    if (rc != FT_OK)
        fail_msg("checkpoint_load_latest: %s", err.msg);
    assert_string_equal(path, ckpt_in(fx, 100));
    assert_int_equal(st.step, 100);
    if (!strstr(text, "warning: checkpoint ") || !strstr(text, "ckpt-000000200.h5: truncated or not HDF5") ||
        !strstr(text, "falling back"))
        fail_msg("the warning does not name the file and the reason: '%s'", text);
    assert_bits(b.g.params, fx->a.g.params, b.g.n_params, sizeof(float), "params");
    free_model(&b);
}

/* Flips one byte in the middle of the first chunk of dataset name. */
static void flip_byte(const char *path, const char *name)
{
    haddr_t addr = 0;
    hsize_t off[4], size = 0;
    unsigned mask = 0;
    uint8_t byte;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    hid_t sp = H5Dget_space(d);
    assert_true(H5Dget_chunk_info(d, sp, 0, off, &mask, &addr, &size) >= 0);
    H5Sclose(sp);
    H5Dclose(d);
    H5Fclose(f);
    assert_true(size > 8);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &byte, 1, (off_t)(addr + size / 2)), 1);
    byte ^= 0x10;
    assert_int_equal(pwrite(fd, &byte, 1, (off_t)(addr + size / 2)), 1);
    close(fd);
}

static void test_flipped_byte_falls_back(void **state)
{
    struct fixture *fx = *state;
    struct model b;
    struct train_state st;
    struct ft_err err = {{0}};
    struct capture cap;
    char path[600], dset[160], want[200];
    const char *conv = NULL;

    for (size_t i = 0; i < fx->a.g.n_tensors && !conv; i++)
        if (strstr(fx->a.g.tensors[i].name, "coupling/conv1/W"))
            conv = fx->a.g.tensors[i].name;
    assert_non_null(conv);
    snprintf(dset, sizeof dset, "params/%s", conv);
    save(fx, 100);
    save(fx, 200);
    flip_byte(ckpt_in(fx, 200), dset);
    make_model(&b, 4, 1, 99, 0);
    assert_int_equal(checkpoint_load(ckpt_in(fx, 200), &b.cfg, &b.g, &b.o, &st, NULL, &err), FT_ERR_CKPT);
    snprintf(want, sizeof want, "ckpt-000000200.h5: dataset %s: read failed", dset);
    assert_msg_has(err.msg, want);
    assert_int_equal(checkpoint_verify(ckpt_in(fx, 200), &err), FT_ERR_CKPT);
    assert_msg_has(err.msg, want);

    capture_begin(&cap, fx);
    int rc = checkpoint_load_latest(fx->dir, &b.cfg, &b.g, &b.o, &st, path, sizeof path, &err);
    const char *text = capture_end(&cap);
    if (rc != FT_OK)
        fail_msg("checkpoint_load_latest: %s", err.msg);
    assert_string_equal(path, ckpt_in(fx, 100));
    if (!strstr(text, want))
        fail_msg("the warning does not name the file and dataset: '%s'", text);
    free_model(&b);
}

static void test_other_shape_refused(void **state)
{
    struct fixture *fx = *state;
    struct model b;
    struct ft_err err = {{0}};
    const struct glow_tensor *first = NULL;

    save(fx, 100);
    make_model(&b, 6, 1, 99, 0);
    /* the first tensor of the table whose shape differs between the two models */
    for (size_t i = 0; i < b.g.n_tensors && !first; i++) {
        const struct glow_tensor *t = &b.g.tensors[i], *u = glow_find(&fx->a.g, t->name);
        assert_non_null(u);
        if (t->ndim != u->ndim || memcmp(t->shape, u->shape, sizeof t->shape) != 0)
            first = t;
    }
    assert_non_null(first);
    assert_int_equal(checkpoint_load(ckpt_in(fx, 100), &b.cfg, &b.g, &b.o, NULL, NULL, &err), FT_ERR_CONFIG);
    char want[300], s1[64], s2[64];
    const struct glow_tensor *old = glow_find(&fx->a.g, first->name);
    size_t a1 = 0, a2 = 0;
    for (int k = 0; k < old->ndim; k++)
        a1 += (size_t)snprintf(s1 + a1, sizeof s1 - a1, "%s%d", k ? "," : "[", old->shape[k]);
    for (int k = 0; k < first->ndim; k++)
        a2 += (size_t)snprintf(s2 + a2, sizeof s2 - a2, "%s%d", k ? "," : "[", first->shape[k]);
    snprintf(want, sizeof want, "tensor params/%s has shape %s] in the checkpoint but %s] in the model",
             first->name, s1, s2);
    assert_msg_has(err.msg, want);
    assert_msg_has(err.msg, "model.width");
    assert_msg_has(err.msg, ckpt_in(fx, 100));
    /* The directory holds another model's run: no fallback, no fresh start. */
    char path[600];
    assert_int_equal(checkpoint_load_latest(fx->dir, &b.cfg, &b.g, &b.o, NULL, path, sizeof path, &err),
                     FT_ERR_CONFIG);
    assert_msg_has(err.msg, want);

    /* Same tensors but another config key of the model: refused naming the key. */
    free_model(&b);
    make_model(&b, 4, 1, 99, 0);
    b.cfg.data.n_bits = 5;
    assert_int_equal(checkpoint_load(ckpt_in(fx, 100), &b.cfg, &b.g, &b.o, NULL, NULL, &err), FT_ERR_CONFIG);
    assert_msg_has(err.msg, "checkpoint of another model: the stored config differs in data.n_bits");
    /* Training fields may change. */
    b.cfg.data.n_bits = 8;
    b.cfg.train.lr = 5e-4;
    if (checkpoint_load(ckpt_in(fx, 100), &b.cfg, &b.g, &b.o, NULL, NULL, &err) != FT_OK)
        fail_msg("a changed training field was refused: %s", err.msg);
    free_model(&b);
}

static void test_stale_tmp_removed(void **state)
{
    struct fixture *fx = *state;
    struct model b;
    struct train_state st;
    struct ft_err err = {{0}};
    char path[600];

    save(fx, 100);
    /* a complete but uncommitted write of a later step: never loaded */
    save_to(fx, fx->dir, 300, 100, 0);
    char committed[600];
    snprintf(committed, sizeof committed, "%s", ckpt_in(fx, 300));
    assert_int_equal(rename(committed, in_dir(fx, ".ckpt-000000300.h5.tmp")), 0);
    FILE *f = fopen(in_dir(fx, ".ckpt-000000400.h5.tmp"), "w");
    assert_non_null(f);
    fputs("half a checkpoint", f);
    fclose(f);
    make_model(&b, 4, 1, 99, 0);
    if (checkpoint_load_latest(fx->dir, &b.cfg, &b.g, &b.o, &st, path, sizeof path, &err) != FT_OK)
        fail_msg("checkpoint_load_latest: %s", err.msg);
    assert_int_equal(st.step, 100);
    assert_int_not_equal(access(in_dir(fx, ".ckpt-000000300.h5.tmp"), F_OK), 0);
    assert_int_not_equal(access(in_dir(fx, ".ckpt-000000400.h5.tmp"), F_OK), 0);
    free_model(&b);
}

static void test_no_checkpoint(void **state)
{
    struct fixture *fx = *state;
    struct model b;
    struct ft_err err = {{0}};
    char path[600], missing[600];

    make_model(&b, 4, 1, 99, 0);
    assert_int_equal(checkpoint_load_latest(fx->dir, &b.cfg, &b.g, &b.o, NULL, path, sizeof path, &err),
                     FT_ERR_CKPT);
    assert_msg_has(err.msg, "no valid checkpoint");
    snprintf(missing, sizeof missing, "%s/nowhere", fx->dir);
    assert_int_equal(checkpoint_load_latest(missing, &b.cfg, &b.g, &b.o, NULL, path, sizeof path, &err),
                     FT_ERR_CKPT);
    assert_msg_has(err.msg, "no valid checkpoint");
    /* writing into a missing directory: FT_ERR_IO naming the file, nothing left behind */
    struct train_state st = make_state(100);
    ckpt_snapshot_take(&fx->snap, &fx->a.g, &fx->a.o, &st, fx->a.yaml);
    assert_int_equal(checkpoint_write(missing, &fx->snap, 3, 0, NULL, &err), FT_ERR_IO);
    assert_msg_has(err.msg, "nowhere/ckpt-000000100.h5: cannot create");
    assert_msg_has(err.msg, "No such file or directory");
    free_model(&b);
}

static void test_version_and_name_checked(void **state)
{
    struct fixture *fx = *state;
    struct ft_err err = {{0}};
    int64_t v2 = 2;
    uint64_t step = 0;

    save(fx, 100);
    save(fx, 200);
    /* a file renamed to another step breaks the naming rule */
    char from[600];
    snprintf(from, sizeof from, "%s", ckpt_in(fx, 100));
    assert_int_equal(rename(from, ckpt_in(fx, 300)), 0);
    assert_int_equal(checkpoint_verify(ckpt_in(fx, 300), &err), FT_ERR_CKPT);
    assert_msg_has(err.msg, "the name says step 300 but state/step is 100");
    /* a newer format version is refused */
    hid_t f = H5Fopen(ckpt_in(fx, 200), H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    assert_true(H5Adelete(f, "format_version") >= 0);
    assert_int_equal(h5util_write_i64_attr(f, "format_version", &v2, 1), 0);
    H5Fclose(f);
    assert_int_equal(checkpoint_verify(ckpt_in(fx, 200), &err), FT_ERR_CONFIG);
    assert_msg_has(err.msg, "ckpt-000000200.h5: format_version 2, this build reads version 1");
    /* the naming rule */
    assert_int_equal(checkpoint_name_step("ckpt-000000042.h5", &step), 1);
    assert_int_equal(step, 42);
    assert_int_equal(checkpoint_name_step("ckpt-1234567890.h5", &step), 1);
    assert_int_equal(step, 1234567890);
    assert_int_equal(checkpoint_name_step("ckpt-42.h5", &step), 0);
    assert_int_equal(checkpoint_name_step(".ckpt-000000042.h5.tmp", &step), 0);
    assert_int_equal(checkpoint_name_step("ckpt-000000042.h5x", &step), 0);
}

/* Saved without EMA, resumed with EMA on: the corrected EMA equals θ. */
static void test_ema_started_from_params(void **state)
{
    struct fixture *fx = *state;
    struct model a, b;
    struct ckpt_snapshot s;
    struct train_state st = make_state(100);
    struct ft_err err = {{0}};

    make_model(&a, 4, 0, 5, 1);
    ckpt_snapshot_init(&s, &a.g, &a.o);
    ckpt_snapshot_take(&s, &a.g, &a.o, &st, a.yaml);
    assert_null(s.ema);
    assert_int_equal(checkpoint_write(fx->dir, &s, 3, 0, NULL, &err), FT_OK);
    make_model(&b, 4, 1, 99, 0);
    if (checkpoint_load(ckpt_in(fx, 100), &b.cfg, &b.g, &b.o, NULL, NULL, &err) != FT_OK)
        fail_msg("checkpoint_load: %s", err.msg);
    float *w = malloc(b.o.n * sizeof *w);
    optim_ema_weights(&b.o, w);
    ft_assert_close(w, b.g.params, b.o.n, 1e-5, 1e-7);   /* one float rounding each way */
    free(w);
    ckpt_snapshot_free(&s);
    free_model(&a);
    free_model(&b);
}

/* Runs $FT_BINARY_DIR/flowinspect on path; output into out. */
static int run_inspect(struct fixture *fx, const char *path, char *out, size_t size)
{
    const char *bin = getenv("FT_BINARY_DIR");
    char exe[600], log[600];
    int status = 0;

    snprintf(exe, sizeof exe, "%s/flowinspect", bin ? bin : "");
    if (!bin || !*bin || access(exe, X_OK) != 0) {
        fprintf(stderr, "skipping: set FT_BINARY_DIR to the build directory holding flowinspect\n");
        skip();
    }
    snprintf(log, sizeof log, "%s/inspect.log", fx->dir);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
        execl(exe, exe, path, (char *)NULL);
        _exit(127);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    FILE *f = fopen(log, "r");
    size_t n = f ? fread(out, 1, size - 1, f) : 0;
    out[n] = '\0';
    if (f)
        fclose(f);
    unlink(log);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void test_flowinspect(void **state)
{
    struct fixture *fx = *state;
    static char out[1 << 16];
    char want[700], step_line[64];
    struct stat sb;

    save(fx, 100);
    int rc = run_inspect(fx, ckpt_in(fx, 100), out, sizeof out);
    if (rc != 0)
        fail_msg("flowinspect exit %d: %s", rc, out);
    snprintf(step_line, sizeof step_line, "  %-20s 100\n", "step");
    const char *needles[] = { "format: flowtrain-checkpoint, version 1", step_line,
                              "model:\n", "adam_v/", "ema/", "verified:" };
    for (size_t i = 0; i < sizeof needles / sizeof needles[0]; i++)
        if (!strstr(out, needles[i]))
            fail_msg("flowinspect output lacks '%s'", needles[i]);
    /* the table row of one tensor: name, dtype, shape and its L2 norm */
    const struct glow_tensor *t = &fx->a.g.tensors[0];
    double l2 = 0;
    for (size_t i = 0; i < t->numel; i++)
        l2 += (double)fx->a.g.params[t->offset + i] * fx->a.g.params[t->offset + i];
    char row[300], *line;
    snprintf(row, sizeof row, "  params/%s ", t->name);
    line = strstr(out, row);
    if (!line)
        fail_msg("flowinspect output lacks the row of params/%s", t->name);
    char dtype[16], shape[64];
    double got = -1;
    assert_int_equal(sscanf(line + strlen(row), "%15s %63s %lg", dtype, shape, &got), 3);
    assert_string_equal(dtype, "float32");
    snprintf(row, sizeof row, "[%d]", t->shape[0]);
    assert_string_equal(shape, row);
    assert_true(fabs(got - sqrt(l2)) <= 1e-8 * sqrt(l2));

    assert_int_equal(stat(ckpt_in(fx, 100), &sb), 0);
    assert_int_equal(truncate(fx->path, sb.st_size - 100), 0);
    assert_int_equal(run_inspect(fx, ckpt_in(fx, 100), out, sizeof out), 1);
    snprintf(want, sizeof want, "flowinspect: %s: truncated or not HDF5", ckpt_in(fx, 100));
    if (strncmp(out, want, strlen(want)) != 0 || strchr(out, '\n') != out + strlen(out) - 1)
        fail_msg("flowinspect on a truncated file printed '%s'", out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resave_identical, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_falls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flipped_byte_falls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_shape_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_tmp_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_checkpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_version_and_name_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ema_started_from_params, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flowinspect, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
