/* The run configuration: struct config, read from YAML with libcyaml, every key
 * range-checked. Defaults live in one place, configs/default.yaml: loading parses
 * it (it must set every key), overlays the user's file, then each --set
 * key=value, then validates (house-style §1: no silent defaults). Ranges below;
 * default values are in configs/default.yaml only. Loading, overlay and dump:
 * src/config.c; range and cross-field checks: src/config_check.c. */
#ifndef FT_CONFIG_H
#define FT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "check.h"
#include "coupling.h"
#include "glow.h"
#include "optim.h"
#include "preprocess.h"

/* Where main looks for the shipped defaults unless told otherwise (--defaults).
 * The build may define it as an absolute path into the source tree. */
#ifndef FT_DEFAULT_CONFIG
#define FT_DEFAULT_CONFIG "configs/default.yaml"
#endif

#define FT_CONFIG_PATH_MAX 1024   /* bytes of a path, with the NUL */
#define FT_CONFIG_MAX_TEMPS 16    /* run.sample_temperatures entries */
#define FT_CONFIG_KEY_MAX 64      /* bytes of a dotted key such as "train.lr" */
#define FT_CONFIG_MAX_KEYS 96     /* bound on the number of keys */

enum memory_mode { MEMORY_STORED = 0, MEMORY_REVERSIBLE = 1 };
enum reduce_mode { REDUCE_DETERMINISTIC = 0, REDUCE_FAST = 1 };         /* distributed.md §2.1 */

struct config_data {
    char train[FT_CONFIG_PATH_MAX];  /* HDF5 file or glob, non-empty */
    char test[FT_CONFIG_PATH_MAX];
    uint32_t height, width;          /* image the model sees (after padding), 1..8192 */
    uint32_t channels;               /* 1..4 */
    uint32_t n_bits;                 /* 1..8 */
    enum preprocess_kind preprocess; /* glow | logit */
    double logit_alpha;              /* (0, 1) */
    uint32_t n_classes;              /* labels 0..n−1, 2..65536; used by model.ycond/weight_y */
};

struct config_model {
    enum arch_kind arch;             /* glow | realnvp | nice */
    uint32_t levels;                 /* L, 1..10; H, W divisible by 2^L (glow) */
    uint32_t depth;                  /* K steps per level, 1..1024 */
    uint32_t width;                  /* coupling hidden width, 1..65536 */
    enum coupling_kind coupling;     /* affine | additive (nice: additive) */
    enum scale_fn scale_fn;          /* sigmoid2 | exp */
    enum perm_kind permutation;      /* invconv | invconv_lu | shuffle | reverse */
    bool learntop, ycond;
    double weight_y;                 /* ≥ 0; > 0 adds the classifier head */
    enum memory_mode memory;         /* stored | reversible activations */
};

struct config_train {
    uint64_t seed;
    uint32_t batch;                  /* global batch B, 1..1048576 */
    enum optim_kind optimizer;       /* adamax | adam */
    double lr;                       /* (0, 1] */
    double beta1;                    /* [0, 1) */
    double beta2;                    /* 0 = 1 − 1/iters_per_epoch, else (0, 1) */
    uint64_t warmup_images;          /* 0 = no warmup */
    double clip_norm;                /* global-norm clip, 0 = off */
    bool ema;
    double ema_beta;                 /* 0 = beta2, else (0, 1) */
    uint32_t ddi_images;             /* ≥ 1 */
    uint64_t max_steps;              /* limits: 0 = unlimited, at least one set; */
    double max_minutes;              /* training stops at the first one reached */
    uint32_t epochs;
    uint32_t eval_every;             /* steps; 0 = only at the end */
    uint32_t log_every;              /* steps, ≥ 1 */
    uint32_t max_bad_steps;          /* consecutive non-finite steps before exit 4, ≥ 1 */
    enum reduce_mode reduce_mode;    /* deterministic | fast */
    uint32_t reduce_group;           /* samples per fixed reduction group, divides batch */
    uint32_t bucket_mb;              /* allreduce bucket, MiB, 1..4096 */
};

struct config_run {
    char dir[FT_CONFIG_PATH_MAX];    /* run directory, non-empty */
    uint32_t checkpoint_every;       /* steps, 0 = no step trigger */
    double checkpoint_minutes;       /* 0 = no time trigger */
    uint32_t keep_last;              /* ≥ 1 */
    uint32_t keep_every;             /* steps; multiples are kept forever; 0 = none */
    uint32_t sample_every;           /* steps, 0 = never */
    double sample_temperatures[FT_CONFIG_MAX_TEMPS];  /* each in [0, 4] */
    uint32_t sample_temperatures_count;              /* 1..FT_CONFIG_MAX_TEMPS */
    uint32_t sample_grid;            /* images per temperature row, 1..64 */
    uint32_t watchdog_min_s;         /* 1..86400 */
    uint32_t hash_every;             /* replica hash interval in steps, ≥ 1 */
};

struct config {
    struct config_data data;
    struct config_model model;
    struct config_train train;
    struct config_run run;
};

/* Loads defaults_path (which must set every key), overlays path (NULL: none),
 * then sets[0..n_sets) ("train.lr=5e-4"), then validates. Errors name the file
 * (or "--set") that gave the offending value, and the key:
 *   config: configs/x.yaml: train.lr: must be > 0, got -1 */
int config_load(struct config *cfg, const char *defaults_path, const char *path,
                const char *const *sets, size_t n_sets, struct ft_err *err);

/* Loads a complete config from text (e.g. a dump stored in a checkpoint) and
 * validates it; source names it in messages. */
int config_load_string(struct config *cfg, const char *text, size_t len,
                       const char *source, struct ft_err *err);

/* Every key has an index in schema order (data, model, train, run). */
int config_key_index(const char *key);   /* "train.lr" → its index; -1 if not a key */

/* Where each key's value came from, by key index: the file path or "--set", and
 * its precedence (0 defaults, 1 config file, 2 --set). */
struct config_origin {
    const char *source[FT_CONFIG_MAX_KEYS];
    unsigned char rank[FT_CONFIG_MAX_KEYS];
};

/* Range and cross-field checks (config_load runs them). An error names the key
 * and the source that set it (origin), or source when origin is NULL; of two keys
 * in a cross-field error it names the one from the later source. */
int config_validate(const struct config *cfg, const struct config_origin *origin,
                    const char *source, struct ft_err *err);

/* The resolved config as YAML, every key, so a dump is itself a complete base
 * (config_load_string, or defaults_path of config_load) and gives an equal
 * struct. The string is NUL-terminated, owned by the caller (free()). */
char *config_dump_string(const struct config *cfg, size_t *len);
int config_dump(const struct config *cfg, FILE *f);      /* FT_OK or FT_ERR_IO */
uint64_t config_hash(const struct config *cfg);          /* FNV-1a 64 of the dump */

/* 1 if a and b are equal; else 0 and the first differing dotted key in key. */
int config_equal(const struct config *a, const struct config *b, char *key, size_t size);
/* 1 if a and b define the same model (shapes, preprocessing, architecture), so a
 * checkpoint of one loads into the other; else 0 and the first differing key.
 * Training and run fields (and model.memory) are ignored. */
int config_model_equal(const struct config *a, const struct config *b, char *key, size_t size);

/* The model-shape fields as a glow_spec (arch, ycond, n_classes and weight_y
 * included; preprocessing is not part of the model). */
void config_glow_spec(const struct config *cfg, struct glow_spec *spec);

#endif
