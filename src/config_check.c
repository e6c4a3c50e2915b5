/* Validation of struct config (part of the config module, include/config.h):
 * every key range-checked, then the cross-field rules that need no model code,
 * e.g. H and W divisible by 2^L (glow-model.md §4); and the split of model-shape
 * keys from training keys for checkpoint compatibility. Messages name the key
 * and the source that set it: "config: x.yaml: train.lr: must be > 0, got -1". */
#include "config.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

static const char *const arch_names[] = {"glow", "realnvp", "nice"};

struct vctx {
    const struct config_origin *origin;  /* or NULL: every key from source */
    const char *source;
    struct ft_err *err;
};

static size_t key_index(const char *key)
{
    int i = config_key_index(key);
    FT_CHECK(i >= 0, "config key %s is not in the schema", key);
    return (size_t)i;
}

/* Of two keys in a cross-field error, the one set by the later source (a on a
 * tie): the message names it and that source, which is the one to fix. */
static const char *later(const struct vctx *v, const char *a, const char *b)
{
    return v->origin && v->origin->rank[key_index(b)] > v->origin->rank[key_index(a)] ? b : a;
}

static int bad(const struct vctx *v, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int bad(const struct vctx *v, const char *key, const char *fmt, ...)
{
    char msg[400];
    const char *src = v->origin ? v->origin->source[key_index(key)] : v->source;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ft_err_set(v->err, "config: %s: %s: %s", src, key, msg);
    return FT_ERR_CONFIG;
}

static int range_u(const struct vctx *v, const char *key, uintmax_t x, uintmax_t lo, uintmax_t hi)
{
    if (x >= lo && x <= hi)
        return FT_OK;
    if (hi == UINTMAX_MAX)
        return bad(v, key, "must be >= %ju, got %ju", lo, x);
    return bad(v, key, "must be in %ju..%ju, got %ju", lo, hi, x);
}

/* lo < x (lo_open) or lo <= x; x < 1 if below_one; NaN and ±inf fail. */
static int range_d(const struct vctx *v, const char *key, double x, double lo, int lo_open,
                   int below_one)
{
    int ok = isfinite(x) && (lo_open ? x > lo : x >= lo) && (!below_one || x < 1);
    if (ok)
        return FT_OK;
    if (below_one)
        return bad(v, key, "must be in %s%g, 1), got %g", lo_open ? "(" : "[", lo, x);
    return bad(v, key, "must be %s %g, got %g", lo_open ? ">" : ">=", lo, x);
}

static int check_path(const struct vctx *v, const char *key, const char *s)
{
    if (!memchr(s, '\0', FT_CONFIG_PATH_MAX))
        return bad(v, key, "is not terminated");
    return s[0] ? FT_OK : bad(v, key, "must not be empty");
}

static int check_data_model(const struct vctx *v, const struct config *c)
{
    const struct config_data *d = &c->data;
    const struct config_model *m = &c->model;
    if (check_path(v, "data.train", d->train) < 0 || check_path(v, "data.test", d->test) < 0 ||
        range_u(v, "data.height", d->height, 1, 8192) < 0 ||
        range_u(v, "data.width", d->width, 1, 8192) < 0 ||
        range_u(v, "data.channels", d->channels, 1, 4) < 0 ||
        range_u(v, "data.n_bits", d->n_bits, 1, 8) < 0 ||
        range_u(v, "data.preprocess", d->preprocess, 0, PREPROCESS_LOGIT) < 0 ||
        range_d(v, "data.logit_alpha", d->logit_alpha, 0, 1, 1) < 0 ||
        range_u(v, "data.n_classes", d->n_classes, 2, 65536) < 0 ||
        range_u(v, "model.arch", m->arch, 0, ARCH_NICE) < 0 ||
        range_u(v, "model.levels", m->levels, 1, 10) < 0 ||
        range_u(v, "model.depth", m->depth, 1, 1024) < 0 ||
        range_u(v, "model.width", m->width, 1, 65536) < 0 ||
        range_u(v, "model.coupling", m->coupling, 0, COUPLING_ADDITIVE) < 0 ||
        range_u(v, "model.scale_fn", m->scale_fn, 0, SCALE_EXP) < 0 ||
        range_u(v, "model.permutation", m->permutation, 0, PERM_REVERSE) < 0 ||
        range_d(v, "model.weight_y", m->weight_y, 0, 0, 0) < 0 ||
        range_u(v, "model.memory", m->memory, 0, MEMORY_REVERSIBLE) < 0)
        return FT_ERR_CONFIG;
    /* Squeezes per image side: glow squeezes once per level (§4), realnvp once
     * per scale after the first (§8), nice once. */
    uint32_t squeezes = m->arch == ARCH_GLOW ? m->levels : m->arch == ARCH_REALNVP ? m->levels - 1 : 1;
    if (m->arch == ARCH_NICE && m->levels != 1)
        return bad(v, later(v, "model.levels", "model.arch"),
                   "arch nice has one level: model.levels must be 1, got %" PRIu32, m->levels);
    if (m->arch == ARCH_NICE && m->coupling != COUPLING_ADDITIVE)
        return bad(v, later(v, "model.coupling", "model.arch"),
                   "arch nice uses additive coupling: model.coupling must be additive");
    uint32_t div = 1u << squeezes;
    if (d->height % div || d->width % div)
        return bad(v, later(v, "model.levels", later(v, "data.height", "data.width")),
                   "%" PRIu32 " levels (model.levels, arch %s) need data.height and data.width "
                   "divisible by %" PRIu32 ", got %" PRIu32 "x%" PRIu32,
                   m->levels, arch_names[m->arch], div, d->height, d->width);
    /* realnvp's last scale is all checkerboard: it needs two pixels (§8) */
    if (m->arch == ARCH_REALNVP && (d->height / div) * (d->width / div) < 2)
        return bad(v, later(v, "model.levels", later(v, "data.height", "data.width")),
                   "arch realnvp's last scale would be %" PRIu32 "x%" PRIu32 " (model.levels "
                   "%" PRIu32 "), and a checkerboard mask needs at least 2 pixels",
                   d->height / div, d->width / div, m->levels);
    return FT_OK;
}

static int check_train(const struct vctx *v, const struct config_train *t)
{
    if (range_u(v, "train.batch", t->batch, 1, 1u << 20) < 0 ||
        range_u(v, "train.optimizer", t->optimizer, 0, OPTIM_ADAM) < 0 ||
        range_d(v, "train.lr", t->lr, 0, 1, 0) < 0 ||
        range_d(v, "train.beta1", t->beta1, 0, 0, 1) < 0 ||
        range_d(v, "train.beta2", t->beta2, 0, 0, 1) < 0 ||
        range_d(v, "train.clip_norm", t->clip_norm, 0, 0, 0) < 0 ||
        range_d(v, "train.ema_beta", t->ema_beta, 0, 0, 1) < 0 ||
        range_u(v, "train.ddi_images", t->ddi_images, 1, 1u << 20) < 0 ||
        range_d(v, "train.max_minutes", t->max_minutes, 0, 0, 0) < 0 ||
        range_u(v, "train.log_every", t->log_every, 1, UINTMAX_MAX) < 0 ||
        range_u(v, "train.max_bad_steps", t->max_bad_steps, 1, 1000000) < 0 ||
        range_u(v, "train.reduce_mode", t->reduce_mode, 0, REDUCE_FAST) < 0 ||
        range_u(v, "train.reduce_group", t->reduce_group, 1, t->batch) < 0 ||
        range_u(v, "train.bucket_mb", t->bucket_mb, 1, 4096) < 0)
        return FT_ERR_CONFIG;
    if (t->batch % t->reduce_group) {
        if (strcmp(later(v, "train.reduce_group", "train.batch"), "train.batch") == 0)
            return bad(v, "train.batch", "must be a multiple of train.reduce_group (%" PRIu32
                       "), got %" PRIu32, t->reduce_group, t->batch);
        return bad(v, "train.reduce_group", "must divide train.batch (%" PRIu32 "), got %" PRIu32,
                   t->batch, t->reduce_group);
    }
    if (t->max_steps == 0 && t->max_minutes == 0 && t->epochs == 0)
        return bad(v, later(v, "train.epochs", later(v, "train.max_steps", "train.max_minutes")),
                   "no stopping limit: set train.max_steps, train.max_minutes or train.epochs "
                   "above 0");
    return FT_OK;
}

static int check_run(const struct vctx *v, const struct config_run *r)
{
    if (check_path(v, "run.dir", r->dir) < 0 ||
        range_d(v, "run.checkpoint_minutes", r->checkpoint_minutes, 0, 0, 0) < 0 ||
        range_u(v, "run.keep_last", r->keep_last, 1, 1000000) < 0 ||
        range_u(v, "run.sample_temperatures", r->sample_temperatures_count, 1,
                FT_CONFIG_MAX_TEMPS) < 0 ||
        range_u(v, "run.sample_grid", r->sample_grid, 1, 64) < 0 ||
        range_u(v, "run.watchdog_min_s", r->watchdog_min_s, 1, 86400) < 0 ||
        range_u(v, "run.hash_every", r->hash_every, 1, UINTMAX_MAX) < 0)
        return FT_ERR_CONFIG;
    for (uint32_t i = 0; i < r->sample_temperatures_count; i++) {
        double x = r->sample_temperatures[i];
        if (!(x >= 0 && x <= 4))
            return bad(v, "run.sample_temperatures", "entry %" PRIu32 " must be in [0, 4], got %g",
                       i, x);
    }
    const char *k = later(v, "run.keep_every", "run.checkpoint_every");
    if (r->keep_every && !r->checkpoint_every)
        return bad(v, k, "run.keep_every (%" PRIu32 ") needs run.checkpoint_every > 0",
                   r->keep_every);
    if (r->keep_every && r->keep_every % r->checkpoint_every)
        return bad(v, k, "run.keep_every (%" PRIu32 ") must be a multiple of "
                   "run.checkpoint_every (%" PRIu32 ")", r->keep_every, r->checkpoint_every);
    return FT_OK;
}

int config_validate(const struct config *c, const struct config_origin *origin,
                    const char *source, struct ft_err *err)
{
    const struct vctx v = {.origin = origin, .source = source, .err = err};
    if (check_data_model(&v, c) < 0 || check_train(&v, &c->train) < 0 || check_run(&v, &c->run) < 0)
        return FT_ERR_CONFIG;
    return FT_OK;
}

static int differ(int cond, const char *name, char *key, size_t size)
{
    if (cond && key && size)
        snprintf(key, size, "%s", name);
    return cond;
}

/* The keys that define the function and the tensor table; a few matter only in
 * context. Training and run keys, model.memory and the data paths do not. */
int config_model_equal(const struct config *a, const struct config *b, char *key, size_t size)
{
    const struct config_data *da = &a->data, *db = &b->data;
    const struct config_model *ma = &a->model, *mb = &b->model;
    int alpha_used = da->preprocess == PREPROCESS_LOGIT;
    int perm_used = ma->arch == ARCH_GLOW;   /* realnvp and nice have none (§8) */
    if (differ(da->height != db->height, "data.height", key, size) ||
        differ(da->width != db->width, "data.width", key, size) ||
        differ(da->channels != db->channels, "data.channels", key, size) ||
        differ(da->n_bits != db->n_bits, "data.n_bits", key, size) ||
        differ(da->preprocess != db->preprocess, "data.preprocess", key, size) ||
        differ(alpha_used && da->logit_alpha != db->logit_alpha, "data.logit_alpha", key, size) ||
        differ(ma->arch != mb->arch, "model.arch", key, size) ||
        differ(ma->levels != mb->levels, "model.levels", key, size) ||
        differ(ma->depth != mb->depth, "model.depth", key, size) ||
        differ(ma->width != mb->width, "model.width", key, size) ||
        differ(ma->coupling != mb->coupling, "model.coupling", key, size) ||
        differ(ma->scale_fn != mb->scale_fn, "model.scale_fn", key, size) ||
        differ(perm_used && ma->permutation != mb->permutation, "model.permutation", key, size) ||
        /* nice's prior is N(0, I) whatever learntop says (§8) */
        differ(ma->arch != ARCH_NICE && ma->learntop != mb->learntop, "model.learntop", key,
               size) ||
        differ(ma->ycond != mb->ycond, "model.ycond", key, size) ||
        differ((ma->ycond || ma->weight_y > 0) && da->n_classes != db->n_classes,
               "data.n_classes", key, size) ||
        /* weight_y > 0 adds the classifier head's tensors; its value is a loss weight */
        differ((ma->weight_y > 0) != (mb->weight_y > 0), "model.weight_y", key, size))
        return 0;
    return 1;
}

void config_glow_spec(const struct config *cfg, struct glow_spec *spec)
{
    memset(spec, 0, sizeof *spec);
    spec->height = cfg->data.height;
    spec->width = cfg->data.width;
    spec->channels = cfg->data.channels;
    spec->levels = cfg->model.levels;
    spec->depth = cfg->model.depth;
    spec->hidden = cfg->model.width;
    spec->coupling = cfg->model.coupling;
    spec->scale = cfg->model.scale_fn;
    spec->perm = cfg->model.permutation;
    spec->learntop = cfg->model.learntop;
    spec->n_bits = (int)cfg->data.n_bits;
    spec->arch = cfg->model.arch;
    spec->ycond = cfg->model.ycond;
    spec->n_classes = cfg->data.n_classes;
    spec->weight_y = cfg->model.weight_y;
}
