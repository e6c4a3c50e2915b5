/* Loading, overlay and dump of struct config; the libcyaml schema below is the
 * one table of keys. Each YAML source (defaults file, user file, each --set) is
 * walked with libyaml first, which rejects unknown keys and ill-typed scalars,
 * naming the key, and records which keys the source sets; libcyaml converts it
 * and only those keys are copied over the config. Defaults live only in
 * configs/default.yaml; range checks are in config_check.c. */
#include "config.h"

#include <cyaml/cyaml.h>
#include <yaml.h>

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define TEXT_MAX (1u << 20)    /* a config file above 1 MiB is a mistake */

/* ---- schema ------------------------------------------------------------ */

static const cyaml_strval_t preprocess_str[] = {
    {"glow", PREPROCESS_GLOW}, {"logit", PREPROCESS_LOGIT}};
static const cyaml_strval_t arch_str[] = {
    {"glow", ARCH_GLOW}, {"realnvp", ARCH_REALNVP}, {"nice", ARCH_NICE}};
static const cyaml_strval_t coupling_str[] = {
    {"affine", COUPLING_AFFINE}, {"additive", COUPLING_ADDITIVE}};
static const cyaml_strval_t scale_str[] = {{"sigmoid2", SCALE_SIGMOID2}, {"exp", SCALE_EXP}};
static const cyaml_strval_t perm_str[] = {
    {"invconv", PERM_INVCONV}, {"invconv_lu", PERM_INVCONV_LU},
    {"shuffle", PERM_SHUFFLE}, {"reverse", PERM_REVERSE}};
static const cyaml_strval_t memory_str[] = {
    {"stored", MEMORY_STORED}, {"reversible", MEMORY_REVERSIBLE}};
static const cyaml_strval_t optim_str[] = {{"adamax", OPTIM_ADAMAX}, {"adam", OPTIM_ADAM}};
static const cyaml_strval_t reduce_str[] = {
    {"deterministic", REDUCE_DETERMINISTIC}, {"fast", REDUCE_FAST}};

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))
#define OPT CYAML_FLAG_OPTIONAL
/* STRICT: an enum accepts only its names, not numbers. */
#define OPT_ENUM (CYAML_FLAG_OPTIONAL | CYAML_FLAG_STRICT)

static const cyaml_schema_value_t float_entry = {CYAML_VALUE_FLOAT(CYAML_FLAG_DEFAULT, double)};

static const cyaml_schema_field_t data_fields[] = {
    CYAML_FIELD_STRING("train", OPT, struct config_data, train, 1),
    CYAML_FIELD_STRING("test", OPT, struct config_data, test, 1),
    CYAML_FIELD_UINT("height", OPT, struct config_data, height),
    CYAML_FIELD_UINT("width", OPT, struct config_data, width),
    CYAML_FIELD_UINT("channels", OPT, struct config_data, channels),
    CYAML_FIELD_UINT("n_bits", OPT, struct config_data, n_bits),
    CYAML_FIELD_ENUM("preprocess", OPT_ENUM, struct config_data, preprocess,
                     preprocess_str, N_OF(preprocess_str)),
    CYAML_FIELD_FLOAT("logit_alpha", OPT, struct config_data, logit_alpha),
    CYAML_FIELD_UINT("n_classes", OPT, struct config_data, n_classes),
    CYAML_FIELD_END};

static const cyaml_schema_field_t model_fields[] = {
    CYAML_FIELD_ENUM("arch", OPT_ENUM, struct config_model, arch, arch_str, N_OF(arch_str)),
    CYAML_FIELD_UINT("levels", OPT, struct config_model, levels),
    CYAML_FIELD_UINT("depth", OPT, struct config_model, depth),
    CYAML_FIELD_UINT("width", OPT, struct config_model, width),
    CYAML_FIELD_ENUM("coupling", OPT_ENUM, struct config_model, coupling,
                     coupling_str, N_OF(coupling_str)),
    CYAML_FIELD_ENUM("scale_fn", OPT_ENUM, struct config_model, scale_fn,
                     scale_str, N_OF(scale_str)),
    CYAML_FIELD_ENUM("permutation", OPT_ENUM, struct config_model, permutation,
                     perm_str, N_OF(perm_str)),
    CYAML_FIELD_BOOL("learntop", OPT, struct config_model, learntop),
    CYAML_FIELD_BOOL("ycond", OPT, struct config_model, ycond),
    CYAML_FIELD_FLOAT("weight_y", OPT, struct config_model, weight_y),
    CYAML_FIELD_ENUM("memory", OPT_ENUM, struct config_model, memory,
                     memory_str, N_OF(memory_str)),
    CYAML_FIELD_END};

static const cyaml_schema_field_t train_fields[] = {
    CYAML_FIELD_UINT("seed", OPT, struct config_train, seed),
    CYAML_FIELD_UINT("batch", OPT, struct config_train, batch),
    CYAML_FIELD_ENUM("optimizer", OPT_ENUM, struct config_train, optimizer,
                     optim_str, N_OF(optim_str)),
    CYAML_FIELD_FLOAT("lr", OPT, struct config_train, lr),
    CYAML_FIELD_FLOAT("beta1", OPT, struct config_train, beta1),
    CYAML_FIELD_FLOAT("beta2", OPT, struct config_train, beta2),
    CYAML_FIELD_UINT("warmup_images", OPT, struct config_train, warmup_images),
    CYAML_FIELD_FLOAT("clip_norm", OPT, struct config_train, clip_norm),
    CYAML_FIELD_BOOL("ema", OPT, struct config_train, ema),
    CYAML_FIELD_FLOAT("ema_beta", OPT, struct config_train, ema_beta),
    CYAML_FIELD_UINT("ddi_images", OPT, struct config_train, ddi_images),
    CYAML_FIELD_UINT("max_steps", OPT, struct config_train, max_steps),
    CYAML_FIELD_FLOAT("max_minutes", OPT, struct config_train, max_minutes),
    CYAML_FIELD_UINT("epochs", OPT, struct config_train, epochs),
    CYAML_FIELD_UINT("eval_every", OPT, struct config_train, eval_every),
    CYAML_FIELD_UINT("log_every", OPT, struct config_train, log_every),
    CYAML_FIELD_UINT("max_bad_steps", OPT, struct config_train, max_bad_steps),
    CYAML_FIELD_ENUM("reduce_mode", OPT_ENUM, struct config_train, reduce_mode,
                     reduce_str, N_OF(reduce_str)),
    CYAML_FIELD_UINT("reduce_group", OPT, struct config_train, reduce_group),
    CYAML_FIELD_UINT("bucket_mb", OPT, struct config_train, bucket_mb),
    CYAML_FIELD_END};

static const cyaml_schema_field_t run_fields[] = {
    CYAML_FIELD_STRING("dir", OPT, struct config_run, dir, 1),
    CYAML_FIELD_UINT("checkpoint_every", OPT, struct config_run, checkpoint_every),
    CYAML_FIELD_FLOAT("checkpoint_minutes", OPT, struct config_run, checkpoint_minutes),
    CYAML_FIELD_UINT("keep_last", OPT, struct config_run, keep_last),
    CYAML_FIELD_UINT("keep_every", OPT, struct config_run, keep_every),
    CYAML_FIELD_UINT("sample_every", OPT, struct config_run, sample_every),
    CYAML_FIELD_SEQUENCE("sample_temperatures", OPT | CYAML_FLAG_FLOW, struct config_run,
                         sample_temperatures, &float_entry, 1, FT_CONFIG_MAX_TEMPS),
    CYAML_FIELD_UINT("sample_grid", OPT, struct config_run, sample_grid),
    CYAML_FIELD_UINT("watchdog_min_s", OPT, struct config_run, watchdog_min_s),
    CYAML_FIELD_UINT("hash_every", OPT, struct config_run, hash_every),
    CYAML_FIELD_END};

static const cyaml_schema_field_t top_fields[] = {
    CYAML_FIELD_MAPPING("data", OPT, struct config, data, data_fields),
    CYAML_FIELD_MAPPING("model", OPT, struct config, model, model_fields),
    CYAML_FIELD_MAPPING("train", OPT, struct config, train, train_fields),
    CYAML_FIELD_MAPPING("run", OPT, struct config, run, run_fields),
    CYAML_FIELD_END};

static const cyaml_schema_value_t top_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, struct config, top_fields)};

/* ---- keys: one leaf of the schema ---------------------------------------- */

struct leaf {
    const cyaml_schema_field_t *sec;  /* entry of top_fields */
    const cyaml_schema_field_t *f;    /* entry of the section's fields */
    size_t index;                     /* position over all keys, schema order */
};

static int leaf_first(struct leaf *l)
{
    l->sec = top_fields;
    l->f = top_fields[0].value.mapping.fields;
    l->index = 0;
    return 1;
}

static int leaf_next(struct leaf *l)
{
    l->f++;
    l->index++;
    FT_CHECK(l->index < FT_CONFIG_MAX_KEYS, "config schema has more than %d keys", FT_CONFIG_MAX_KEYS);
    if (l->f->key)
        return 1;
    l->sec++;
    if (!l->sec->key)
        return 0;
    l->f = l->sec->value.mapping.fields;
    return 1;
}

/* Finds the key "section.name". */
static int leaf_find(struct leaf *l, const char *dotted)
{
    for (int ok = leaf_first(l); ok; ok = leaf_next(l)) {
        size_t n = strlen(l->sec->key);
        if (strncmp(dotted, l->sec->key, n) == 0 && dotted[n] == '.' &&
            strcmp(dotted + n + 1, l->f->key) == 0)
            return 1;
    }
    return 0;
}

static char *leaf_ptr(const struct config *c, const struct leaf *l)
{
    return (char *)c + l->sec->data_offset + l->f->data_offset;
}

static uint32_t *leaf_count_ptr(const struct config *c, const struct leaf *l)
{
    FT_CHECK(l->f->count_size == sizeof(uint32_t), "config key %s: count must be uint32_t",
             l->f->key);
    return (uint32_t *)((char *)c + l->sec->data_offset + l->f->count_offset);
}

static void leaf_copy(struct config *dst, const struct config *src, const struct leaf *l)
{
    const cyaml_schema_value_t *v = &l->f->value;
    int seq = v->type == CYAML_SEQUENCE;
    memcpy(leaf_ptr(dst, l), leaf_ptr(src, l), v->data_size * (seq ? v->sequence.max : 1));
    if (seq)
        *leaf_count_ptr(dst, l) = *leaf_count_ptr(src, l);
}

static int leaf_equal(const struct config *a, const struct config *b, const struct leaf *l)
{
    const cyaml_schema_value_t *v = &l->f->value;
    if (v->type == CYAML_STRING)
        return strncmp(leaf_ptr(a, l), leaf_ptr(b, l), v->data_size) == 0;
    if (v->type == CYAML_SEQUENCE) {
        uint32_t n = *leaf_count_ptr(a, l);
        return n == *leaf_count_ptr(b, l) &&
               memcmp(leaf_ptr(a, l), leaf_ptr(b, l), (size_t)n * v->data_size) == 0;
    }
    return memcmp(leaf_ptr(a, l), leaf_ptr(b, l), v->data_size) == 0;
}

/* ---- scalar syntax: stricter than libcyaml 1.3, which reads "64abc" as 64,
 * "010" as 8 and "maybe" as true ------------------------------------------ */

/* NULL if s is a valid value of type v; else a message in buf. */
static const char *scalar_problem(const cyaml_schema_value_t *v, const char *s, int quoted,
                                  char *buf, size_t n)
{
    size_t len = strlen(s);
    if (v->type == CYAML_STRING) {
        if (len < v->string.min)
            snprintf(buf, n, "must not be empty");
        else if (len > v->string.max)
            snprintf(buf, n, "is longer than %" PRIu32 " bytes", v->string.max);
        else
            return NULL;
        return buf;
    }
    if (v->type == CYAML_ENUM) {
        size_t k = (size_t)snprintf(buf, n, "expected one of");
        for (uint32_t i = 0; i < v->enumeration.count; i++) {
            if (strcmp(s, v->enumeration.strings[i].str) == 0)
                return NULL;
            if (k < n)
                k += (size_t)snprintf(buf + k, n - k, "%s %s", i ? "," : "",
                                      v->enumeration.strings[i].str);
        }
        if (k < n)
            snprintf(buf + k, n - k, "; got '%s'", s);
        return buf;
    }
    const char *what = v->type == CYAML_UINT    ? "an unsigned integer"
                       : v->type == CYAML_FLOAT ? "a number"
                       : v->type == CYAML_BOOL  ? "true or false"
                                                : NULL;
    FT_CHECK(what != NULL, "config schema: unsupported cyaml type %d", (int)v->type);
    if (quoted) {
        snprintf(buf, n, "expected %s, got the quoted string \"%s\"", what, s);
        return buf;
    }
    if (len == 0) {
        snprintf(buf, n, "has no value (expected %s)", what);
        return buf;
    }
    int ok = 0;
    char *end = NULL;
    errno = 0;
    if (v->type == CYAML_BOOL) {
        ok = strcmp(s, "true") == 0 || strcmp(s, "false") == 0;
    } else if (v->type == CYAML_UINT) {
        uintmax_t max = v->data_size >= 8 ? UINT64_MAX : (UINT64_C(1) << (8 * v->data_size)) - 1;
        ok = strspn(s, "0123456789") == len && (s[0] != '0' || len == 1);
        if (ok && (strtoumax(s, &end, 10) > max || errno == ERANGE)) {
            snprintf(buf, n, "%s is out of range (max %ju)", s, max);
            return buf;
        }
    } else {
        ok = strspn(s, "0123456789+-.eE") == len;
        if (ok) {
            double x = strtod(s, &end);
            ok = *end == '\0';
            if (ok && (errno == ERANGE || !isfinite(x))) {
                snprintf(buf, n, "%s is out of range for a double", s);
                return buf;
            }
        }
    }
    if (ok)
        return NULL;
    snprintf(buf, n, "expected %s, got '%s'", what, s);
    return buf;
}

/* ---- libyaml walk: key names, value kinds and scalars; records presence ---- */

struct walk {
    yaml_parser_t parser;
    yaml_event_t ev;
    int have_ev;
    const char *source;
    int lines;                  /* add "(line N)": files yes, --set no */
    unsigned char *present;     /* [FT_CONFIG_MAX_KEYS] */
    struct ft_err *err;
};

static int walk_fail(struct walk *w, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int walk_fail(struct walk *w, const char *key, const char *fmt, ...)
{
    char msg[400], where[32] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (w->lines && w->have_ev)
        snprintf(where, sizeof where, " (line %zu)", w->ev.start_mark.line + 1);
    ft_err_set(w->err, "config: %s: %s%s%s%s", w->source, key ? key : "", key ? ": " : "",
               msg, where);
    return FT_ERR_CONFIG;
}

static int walk_next(struct walk *w)
{
    if (w->have_ev)
        yaml_event_delete(&w->ev);
    w->have_ev = 0;
    if (!yaml_parser_parse(&w->parser, &w->ev)) {
        const char *ctx = w->parser.context;
        ft_err_set(w->err, "config: %s: YAML syntax error at line %zu, column %zu: %s%s%s",
                   w->source, w->parser.problem_mark.line + 1, w->parser.problem_mark.column + 1,
                   w->parser.problem ? w->parser.problem : "unknown", ctx ? " " : "",
                   ctx ? ctx : "");
        return FT_ERR_CONFIG;
    }
    w->have_ev = 1;
    return FT_OK;
}

static const char *ev_scalar(const struct walk *w)
{
    return (const char *)w->ev.data.scalar.value;
}

static int ev_quoted(const struct walk *w)
{
    return w->ev.data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
}

static int walk_value(struct walk *w, const char *key, const cyaml_schema_value_t *v)
{
    char msg[320];
    if (v->type == CYAML_SEQUENCE) {
        uint32_t n = 0;
        if (w->ev.type != YAML_SEQUENCE_START_EVENT)
            return walk_fail(w, key, "expected a list such as [0, 0.5, 1]");
        for (;;) {
            if (walk_next(w) < 0)
                return FT_ERR_CONFIG;
            if (w->ev.type == YAML_SEQUENCE_END_EVENT)
                break;
            if (w->ev.type != YAML_SCALAR_EVENT)
                return walk_fail(w, key, "list entry %" PRIu32 " must be a single value", n);
            if (scalar_problem(v->sequence.entry, ev_scalar(w), ev_quoted(w), msg, sizeof msg))
                return walk_fail(w, key, "list entry %" PRIu32 ": %s", n, msg);
            n++;
        }
        if (n < v->sequence.min || n > v->sequence.max)
            return walk_fail(w, key, "expected %" PRIu32 " to %" PRIu32 " entries, got %" PRIu32,
                             v->sequence.min, v->sequence.max, n);
        return FT_OK;
    }
    if (w->ev.type != YAML_SCALAR_EVENT)
        return walk_fail(w, key, "expected a single value, not a list or mapping");
    if (scalar_problem(v, ev_scalar(w), ev_quoted(w), msg, sizeof msg))
        return walk_fail(w, key, "%s", msg);
    return FT_OK;
}

static int walk_section(struct walk *w, const cyaml_schema_field_t *sec)
{
    char key[FT_CONFIG_KEY_MAX + 64];
    struct leaf l;
    if (w->ev.type != YAML_MAPPING_START_EVENT)
        return walk_fail(w, sec->key, "expected a mapping of keys (write '%s: {}' for none)",
                         sec->key);
    for (;;) {
        if (walk_next(w) < 0)
            return FT_ERR_CONFIG;
        if (w->ev.type == YAML_MAPPING_END_EVENT)
            return FT_OK;
        if (w->ev.type != YAML_SCALAR_EVENT)
            return walk_fail(w, sec->key, "keys must be plain names");
        snprintf(key, sizeof key, "%s.%s", sec->key, ev_scalar(w));
        if (!leaf_find(&l, key))
            return walk_fail(w, key, "unknown key");
        if (w->present[l.index])
            return walk_fail(w, key, "duplicate key");
        w->present[l.index] = 1;
        if (walk_next(w) < 0 || walk_value(w, key, &l.f->value) < 0)
            return FT_ERR_CONFIG;
    }
}

static int walk_root(struct walk *w)
{
    unsigned seen = 0;
    if (walk_next(w) < 0 || walk_next(w) < 0)   /* stream start, then document start */
        return FT_ERR_CONFIG;
    if (w->ev.type == YAML_STREAM_END_EVENT)
        return FT_OK;                           /* empty or comments only */
    if (walk_next(w) < 0)
        return FT_ERR_CONFIG;
    if (w->ev.type == YAML_SCALAR_EVENT && !ev_quoted(w) && w->ev.data.scalar.length == 0) {
        /* "---" alone: an empty document */
    } else if (w->ev.type != YAML_MAPPING_START_EVENT) {
        return walk_fail(w, NULL, "expected a mapping of sections (data, model, train, run)");
    } else {
        for (;;) {
            const cyaml_schema_field_t *sec = top_fields;
            if (walk_next(w) < 0)
                return FT_ERR_CONFIG;
            if (w->ev.type == YAML_MAPPING_END_EVENT)
                break;
            if (w->ev.type != YAML_SCALAR_EVENT)
                return walk_fail(w, NULL, "section names must be plain names");
            while (sec->key && strcmp(sec->key, ev_scalar(w)) != 0)
                sec++;
            if (!sec->key)
                return walk_fail(w, ev_scalar(w),
                                 "unknown section (expected data, model, train or run)");
            if (seen & (1u << (sec - top_fields)))
                return walk_fail(w, sec->key, "duplicate section");
            seen |= 1u << (sec - top_fields);
            if (walk_next(w) < 0 || walk_section(w, sec) < 0)
                return FT_ERR_CONFIG;
        }
    }
    if (walk_next(w) < 0 || walk_next(w) < 0)   /* document end, then stream end */
        return FT_ERR_CONFIG;
    if (w->ev.type != YAML_STREAM_END_EVENT)
        return walk_fail(w, NULL, "only one YAML document is allowed");
    return FT_OK;
}

/* ---- applying a source ------------------------------------------------- */

static void cyaml_capture(cyaml_log_t level, void *ctx, const char *fmt, va_list args)
{
    char *buf = ctx;
    if (level < CYAML_LOG_ERROR || buf[0])
        return;                                 /* keep the first error only */
    vsnprintf(buf, 256, fmt, args);
    buf[strcspn(buf, "\n")] = '\0';
}

/* Walks text, then copies the keys it sets (marked in present) into cfg. */
static int apply_text(struct config *cfg, const char *text, size_t len, const char *source,
                      int lines, unsigned char *present, struct ft_err *err)
{
    int rc = FT_ERR_CONFIG;
    struct config *tmp = NULL;
    char log[256] = "";
    const cyaml_config_t cc = {.log_fn = cyaml_capture, .log_ctx = log, .mem_fn = cyaml_mem,
                               .log_level = CYAML_LOG_ERROR, .flags = CYAML_CFG_NO_ALIAS};
    struct walk w = {.source = source, .lines = lines, .present = present, .err = err};
    struct leaf l;
    size_t n_set = 0;

    memset(present, 0, FT_CONFIG_MAX_KEYS);
    if (!yaml_parser_initialize(&w.parser)) {
        ft_err_set(err, "config: %s: cannot initialise the YAML parser", source);
        return FT_ERR_CONFIG;
    }
    yaml_parser_set_input_string(&w.parser, (const unsigned char *)text, len);
    rc = walk_root(&w);
    if (w.have_ev)
        yaml_event_delete(&w.ev);
    yaml_parser_delete(&w.parser);
    if (rc < 0)
        return rc;
    for (int ok = leaf_first(&l); ok; ok = leaf_next(&l))
        n_set += present[l.index];
    if (n_set == 0)
        return FT_OK;
    cyaml_err_t ce = cyaml_load_data((const uint8_t *)text, len, &cc, &top_schema,
                                     (cyaml_data_t **)&tmp, NULL);
    if (ce != CYAML_OK || tmp == NULL) {
        /* The walk should have caught it: report libcyaml's own words. */
        ft_err_set(err, "config: %s: %s (%s)", source, log[0] ? log : "rejected by libcyaml",
                   cyaml_strerror(ce));
        rc = FT_ERR_CONFIG;
        goto cleanup;
    }
    for (int ok = leaf_first(&l); ok; ok = leaf_next(&l))
        if (present[l.index])
            leaf_copy(cfg, tmp, &l);
    rc = FT_OK;
cleanup:
    if (tmp)
        cyaml_free(&cc, &top_schema, tmp, 0);
    return rc;
}

/* A base (defaults file or a dump) must set every key: defaults live nowhere else. */
static int apply_base(struct config *cfg, const char *text, size_t len, const char *source,
                      unsigned char *present, struct ft_err *err)
{
    struct leaf l;
    int rc = apply_text(cfg, text, len, source, 1, present, err);
    if (rc < 0)
        return rc;
    for (int ok = leaf_first(&l); ok; ok = leaf_next(&l))
        if (!present[l.index]) {
            ft_err_set(err, "config: %s: %s.%s: missing (a base config must set every key)",
                       source, l.sec->key, l.f->key);
            return FT_ERR_CONFIG;
        }
    return FT_OK;
}

static int read_text(const char *path, char **text, size_t *len, struct ft_err *err)
{
    int rc = FT_ERR_CONFIG;
    size_t cap = 4096, n = 0;
    char *buf = ft_malloc(cap);
    FILE *f = fopen(path, "rb");
    if (!f) {
        ft_err_set(err, "config: %s: cannot open: %s", path, strerror(errno));
        goto cleanup;
    }
    for (;;) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        if (cap >= TEXT_MAX) {
            ft_err_set(err, "config: %s: larger than %u bytes; not a config file", path, TEXT_MAX);
            goto cleanup;
        }
        cap *= 2;
        char *nb = realloc(buf, cap);
        FT_CHECK(nb != NULL, "out of memory reading %s", path);
        buf = nb;
    }
    if (ferror(f)) {
        ft_err_set(err, "config: %s: read error", path);
        goto cleanup;
    }
    *text = buf;
    *len = n;
    buf = NULL;
    rc = FT_OK;
cleanup:
    if (f)
        fclose(f);
    free(buf);
    return rc;
}

/* "section.key=value": scalars are checked here, then the value goes through
 * the same YAML path as a file (strings double-quoted so nothing in them is
 * YAML syntax; lists such as [0, 0.5] verbatim). */
static int apply_set(struct config *cfg, const char *assign, unsigned char *present,
                     struct ft_err *err)
{
    char key[FT_CONFIG_KEY_MAX], msg[320];
    const char *eq = strchr(assign, '='), *value = eq ? eq + 1 : NULL;
    struct leaf l;
    if (!eq) {
        ft_err_set(err, "config: --set: '%s': expected key=value, e.g. train.lr=5e-4", assign);
        return FT_ERR_CONFIG;
    }
    size_t klen = (size_t)(eq - assign);
    snprintf(key, sizeof key, "%.*s", (int)klen, assign);
    if (klen >= sizeof key || !leaf_find(&l, key)) {
        ft_err_set(err, "config: --set: %.*s: unknown key", (int)klen, assign);
        return FT_ERR_CONFIG;
    }
    if (strpbrk(value, "\n\r")) {
        ft_err_set(err, "config: --set: %s: the value must be one line", key);
        return FT_ERR_CONFIG;
    }
    const cyaml_schema_value_t *v = &l.f->value;
    if (v->type != CYAML_SEQUENCE && scalar_problem(v, value, 0, msg, sizeof msg)) {
        ft_err_set(err, "config: --set: %s: %s", key, msg);
        return FT_ERR_CONFIG;
    }
    size_t cap = strlen(key) + 2 * strlen(value) + 16, n;
    char *text = ft_malloc(cap);
    n = (size_t)snprintf(text, cap, "%s:\n  %s: ", l.sec->key, l.f->key);
    if (v->type == CYAML_STRING) {
        text[n++] = '"';
        for (const char *p = value; *p; p++) {
            if (*p == '"' || *p == '\\')
                text[n++] = '\\';
            text[n++] = *p;
        }
        text[n++] = '"';
    } else {
        n += (size_t)snprintf(text + n, cap - n, "%s", value);
    }
    text[n++] = '\n';
    int rc = apply_text(cfg, text, n, "--set", 0, present, err);
    free(text);
    if (rc == FT_OK && !present[l.index]) {
        ft_err_set(err, "config: --set: %s: invalid value '%s'", key, value);
        rc = FT_ERR_CONFIG;
    } else if (rc < 0 && err && !strstr(err->msg, key)) {   /* a YAML syntax error */
        snprintf(msg, sizeof msg, "%s", err->msg + strlen("config: --set: "));
        ft_err_set(err, "config: --set: %s: invalid value '%s': %s", key, value, msg);
    }
    return rc;
}

/* ---- public ------------------------------------------------------------ */

int config_key_index(const char *key)
{
    struct leaf l;
    return leaf_find(&l, key) ? (int)l.index : -1;
}

int config_load(struct config *cfg, const char *defaults_path, const char *path,
                const char *const *sets, size_t n_sets, struct ft_err *err)
{
    struct config_origin o = {.rank = {0}};
    unsigned char present[FT_CONFIG_MAX_KEYS];
    char *text = NULL;
    size_t len = 0;
    int rc;

    FT_CHECK(defaults_path != NULL, "config_load needs the defaults file");
    memset(cfg, 0, sizeof *cfg);
    rc = read_text(defaults_path, &text, &len, err);
    if (rc < 0)
        goto cleanup;
    rc = apply_base(cfg, text, len, defaults_path, present, err);
    if (rc < 0)
        goto cleanup;
    for (size_t i = 0; i < FT_CONFIG_MAX_KEYS; i++)
        o.source[i] = defaults_path;
    if (path) {
        free(text);
        text = NULL;
        rc = read_text(path, &text, &len, err);
        if (rc < 0)
            goto cleanup;
        rc = apply_text(cfg, text, len, path, 1, present, err);
        if (rc < 0)
            goto cleanup;
        for (size_t i = 0; i < FT_CONFIG_MAX_KEYS; i++)
            if (present[i]) {
                o.source[i] = path;
                o.rank[i] = 1;
            }
    }
    for (size_t s = 0; s < n_sets; s++) {
        rc = apply_set(cfg, sets[s], present, err);
        if (rc < 0)
            goto cleanup;
        for (size_t i = 0; i < FT_CONFIG_MAX_KEYS; i++)
            if (present[i]) {
                o.source[i] = "--set";
                o.rank[i] = 2;
            }
    }
    rc = config_validate(cfg, &o, defaults_path, err);
cleanup:
    free(text);
    if (rc < 0)
        memset(cfg, 0, sizeof *cfg);
    return rc;
}

int config_load_string(struct config *cfg, const char *text, size_t len, const char *source,
                       struct ft_err *err)
{
    unsigned char present[FT_CONFIG_MAX_KEYS];
    memset(cfg, 0, sizeof *cfg);
    int rc = apply_base(cfg, text, len, source, present, err);
    if (rc == FT_OK)
        rc = config_validate(cfg, NULL, source, err);
    if (rc < 0)
        memset(cfg, 0, sizeof *cfg);
    return rc;
}

/* Shortest of %.15g..%.17g that reads back to the same double. */
static void dump_double(FILE *f, double x)
{
    char s[40];
    FT_CHECK(isfinite(x), "cannot dump a non-finite config value");
    for (int p = 15; p <= 17; p++) {
        snprintf(s, sizeof s, "%.*g", p, x);
        if (strtod(s, NULL) == x)
            break;
    }
    fputs(s, f);
}

static void dump_value(FILE *f, const cyaml_schema_value_t *v, const char *p)
{
    uint64_t u64;
    uint32_t u32;
    int e;
    double d;
    switch (v->type) {
    case CYAML_UINT:
        FT_CHECK(v->data_size == 4 || v->data_size == 8, "config dump: uint size %u",
                 (unsigned)v->data_size);
        if (v->data_size == 4)
            memcpy(&u32, p, 4);
        else
            memcpy(&u64, p, 8);
        fprintf(f, "%" PRIu64, v->data_size == 4 ? (uint64_t)u32 : u64);
        break;
    case CYAML_FLOAT:
        FT_CHECK(v->data_size == sizeof d, "config dump: float size %u", (unsigned)v->data_size);
        memcpy(&d, p, sizeof d);
        dump_double(f, d);
        break;
    case CYAML_BOOL:
        fputs(*(const bool *)p ? "true" : "false", f);
        break;
    case CYAML_ENUM: {
        uint32_t i = 0;
        FT_CHECK(v->data_size == sizeof e, "config dump: enum size %u", (unsigned)v->data_size);
        memcpy(&e, p, sizeof e);
        while (i < v->enumeration.count && v->enumeration.strings[i].val != e)
            i++;
        FT_CHECK(i < v->enumeration.count, "config dump: enum value %d has no name", e);
        fputs(v->enumeration.strings[i].str, f);
        break;
    }
    case CYAML_STRING:   /* double-quoted: nothing in a path is YAML syntax */
        fputc('"', f);
        for (const unsigned char *c = (const unsigned char *)p; *c; c++) {
            if (*c == '"' || *c == '\\')
                fprintf(f, "\\%c", *c);
            else if (*c < 0x20 || *c == 0x7f)
                fprintf(f, "\\x%02x", *c);
            else
                fputc(*c, f);
        }
        fputc('"', f);
        break;
    default:
        FT_CHECK(0, "config dump: unsupported cyaml type %d", (int)v->type);
    }
}

/* Block YAML in schema order; libcyaml's own writer would print 0.05 as
 * 5.0000000000000003e-02, so values are written here (shortest exact form). */
char *config_dump_string(const struct config *cfg, size_t *len)
{
    char *s = NULL;
    size_t n = 0;
    struct leaf l;
    FILE *f = open_memstream(&s, &n);
    FT_CHECK(f != NULL, "open_memstream failed");
    for (int ok = leaf_first(&l); ok; ok = leaf_next(&l)) {
        const cyaml_schema_value_t *v = &l.f->value;
        if (l.f == l.sec->value.mapping.fields)
            fprintf(f, "%s:\n", l.sec->key);
        fprintf(f, "  %s: ", l.f->key);
        if (v->type == CYAML_SEQUENCE) {
            uint32_t count = *leaf_count_ptr(cfg, &l);
            fputc('[', f);
            for (uint32_t i = 0; i < count; i++) {
                fputs(i ? ", " : "", f);
                dump_value(f, v->sequence.entry, leaf_ptr(cfg, &l) + (size_t)i * v->data_size);
            }
            fputc(']', f);
        } else {
            dump_value(f, v, leaf_ptr(cfg, &l));
        }
        fputc('\n', f);
    }
    FT_CHECK(fclose(f) == 0 && s != NULL, "config dump: out of memory");
    if (len)
        *len = n;
    return s;
}

int config_dump(const struct config *cfg, FILE *f)
{
    size_t n = 0;
    char *s = config_dump_string(cfg, &n);
    int rc = fwrite(s, 1, n, f) == n && fflush(f) == 0 ? FT_OK : FT_ERR_IO;
    free(s);
    return rc;
}

uint64_t config_hash(const struct config *cfg)
{
    size_t n = 0;
    char *s = config_dump_string(cfg, &n);
    uint64_t h = UINT64_C(14695981039346656037);   /* FNV-1a 64 */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * UINT64_C(1099511628211);
    free(s);
    return h;
}

int config_equal(const struct config *a, const struct config *b, char *key, size_t size)
{
    struct leaf l;
    for (int ok = leaf_first(&l); ok; ok = leaf_next(&l))
        if (!leaf_equal(a, b, &l)) {
            if (key && size)
                snprintf(key, size, "%s.%s", l.sec->key, l.f->key);
            return 0;
        }
    return 1;
}
