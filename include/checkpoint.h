/* Checkpoints (distributed.md §2.7–2.11): one HDF5 file per checkpoint, written by
 * rank 0 from a snapshot taken at a step boundary, committed atomically
 * (.ckpt-<step>.h5.tmp → fsync → rename to ckpt-<step, 9 digits>.h5 → fsync of
 * the directory → reopen and verify), loaded with every name, shape, dtype and
 * Fletcher32 checksum checked. Writing: src/checkpoint.c; reading: src/checkpoint_read.c.
 *
 * File layout (format "flowtrain-checkpoint", format_version 1); every dataset is
 * chunked (≤ 1 Mi elements a chunk) with the Fletcher32 filter, and the file uses
 * library-version bounds 1.8..1.10 so object headers (and attributes) carry checksums:
 *   /               attributes format (string), format_version (int64)
 *   /config         uint8 [len]: the resolved config as YAML (config_dump_string)
 *   /state/<field>  [1] each: the fields of struct train_state (ckpt_state_fields)
 *                   plus config_hash (uint64, FNV-1a 64 of /config, = config_hash())
 *   /params/<name>  every tensor of the model's table with its shape: float32 for
 *                   parameters and float buffers, int32 for int buffers
 *   /adam_m/<name>, /adam_v/<name>   float32, parameters only (when saved with an optimizer)
 *   /ema/<name>     float32, parameters only (when EMA is on)
 */
#ifndef FT_CHECKPOINT_H
#define FT_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "check.h"
#include "config.h"
#include "glow.h"
#include "optim.h"

#define CHECKPOINT_FORMAT "flowtrain-checkpoint"
#define CHECKPOINT_FORMAT_VERSION 1

/* Everything besides tensors that a resume needs (distributed.md §2.9). The LR
 * schedule position is images_seen; RNG keys derive from seed (no stream state). */
struct train_state {
    uint64_t step, epoch, pos, images_seen, skipped, bad_run;
    uint64_t opt_t;                  /* optimizer updates applied */
    uint64_t seed;
    int32_t ddi_done, world_size;
    double best_test_bpd;            /* NAN if none */
    uint64_t slurm_job_id, slurm_restart_count;
    double wall_s;                   /* training wall time so far */
    double log_loss, log_count;      /* Σnll and count since the last metrics line */
    double log_bits_y, log_errors;   /* classifier Σbits_y and errors since then */
};

/* The fields of struct train_state as stored under /state (for readers such as
 * flowinspect): name, type and offset in the struct. */
enum ckpt_field_type { CKPT_U64 = 0, CKPT_I32 = 1, CKPT_F64 = 2 };
struct ckpt_field {
    const char *name;
    enum ckpt_field_type type;
    size_t offset;
};
extern const struct ckpt_field ckpt_state_fields[];
extern const size_t ckpt_n_state_fields;

/* A self-contained copy of what a checkpoint holds, made on rank 0 at a step
 * boundary (one memcpy per arena), so the write can run on another thread while
 * training goes on. The tensor table is the model's (it never changes): the
 * snapshot must not outlive the model. */
struct ckpt_snapshot {
    const struct glow_tensor *tensors;
    size_t n_tensors;
    float *params;              /* n_params (with the arena's alignment padding) */
    float *fbufs;               /* n_fbufs */
    int32_t *ibufs;             /* n_ibufs */
    size_t n_params, n_fbufs, n_ibufs;
    float *m, *v, *ema;         /* n_params each; NULL without an optimizer / without EMA */
    struct train_state state;
    char *config;               /* NUL-terminated YAML */
    size_t config_len, config_cap;
    int taken;                  /* 1 after ckpt_snapshot_take */
};

/* Allocates the copies once (o may be NULL: no moments are saved). */
void ckpt_snapshot_init(struct ckpt_snapshot *s, const struct glow *g, const struct optim *o);
/* Copies the arenas, the state (opt_t from o->t when o is given) and the config
 * text; g and o must be those of init. */
void ckpt_snapshot_take(struct ckpt_snapshot *s, const struct glow *g, const struct optim *o,
                        const struct train_state *st, const char *config_yaml);
void ckpt_snapshot_free(struct ckpt_snapshot *s);

/* Writes dir/.ckpt-<step>.h5.tmp, closes and fsyncs it, renames it to
 * dir/ckpt-<step>.h5, fsyncs dir, reopens and verifies it (reads every dataset),
 * then deletes older checkpoints beyond the newest keep_last (≥ 1), keeping those
 * whose step is a multiple of keep_every (> 0). Files of a later step than the
 * snapshot's (left by a run that fell back past them) are never touched. Uses
 * HDF5: call it from the rank's one HDF5 thread (distributed.md §2.5). *seconds
 * (may be NULL) gets the wall time of the whole commit. FT_OK, or FT_ERR_IO with
 * a message naming the file (the temporary file is removed). */
int checkpoint_write(const char *dir, const struct ckpt_snapshot *s, unsigned keep_last,
                     uint64_t keep_every, double *seconds, struct ft_err *err);

/* Validates path and loads it into g (parameters and buffers), o (m, v, ema and t;
 * o may be NULL) and st (may be NULL); *cfg_text (cfg_text may be NULL) receives
 * the stored config (malloc'd, NUL-terminated). Checks the format and version,
 * the stored config (it must load, its hash match, and the file name's step equal
 * state/step), every tensor's name, dtype and shape against g's table (a mismatch
 * names the first mismatching tensor and both shapes), config_model_equal against
 * model_cfg (NULL: not checked; training fields may differ and are logged) and
 * every dataset's checksum, all before g, o or st are written. With EMA on in o
 * but none in the file, ema starts as θ·(1−β^t) so the corrected EMA is θ.
 * FT_OK; FT_ERR_CKPT for a damaged file (missing, truncated, not HDF5, checksum,
 * missing or ill-typed state); FT_ERR_CONFIG for an intact file the run cannot
 * use (another model: tensor or config mismatch; another format_version; a stored
 * config this build cannot load; no moments when o is given). err: "<path>: <reason>". */
int checkpoint_load(const char *path, const struct config *model_cfg, struct glow *g,
                    struct optim *o, struct train_state *st, char **cfg_text, struct ft_err *err);

/* Removes stale dir/.ckpt-*.h5.tmp files, then loads the newest checkpoint of dir
 * that loads, trying newer first; each damaged file (FT_ERR_CKPT) is reported with
 * ft_warn("checkpoint <path>: <reason>; falling back ...") and the previous one
 * tried. Returns FT_OK and the file in path; FT_ERR_CKPT "no valid checkpoint"
 * when none loads (the caller starts fresh); or FT_ERR_CONFIG at the first intact
 * checkpoint of another model or format (a user error: the caller stops, since
 * starting fresh would mix two runs in one directory). */
int checkpoint_load_latest(const char *dir, const struct config *model_cfg, struct glow *g,
                           struct optim *o, struct train_state *st, char *path, size_t path_size,
                           struct ft_err *err);

/* 1 and the step if name (a base name) follows the naming rule "ckpt-" followed
 * by at least 9 decimal digits and ".h5"; else 0. */
int checkpoint_name_step(const char *name, uint64_t *step);

/* FNV-1a 64 of a config dump's text: equal to config_hash() of the config. */
uint64_t checkpoint_text_hash(const char *text, size_t len);

/* One dataset of a checkpoint as checkpoint_inspect saw it. */
struct ckpt_entry {
    char name[128];             /* "params/level0/step0/actnorm/b" */
    char dtype[16];             /* "float32", "int32", "uint64", "float64", "uint8" */
    int ndim;
    uint64_t shape[4];          /* shape[0..ndim) (ndim ≤ 4; larger ranks are refused) */
    double l2;                  /* √Σx², summed in double */
};

struct ckpt_info {
    int64_t format_version;
    struct train_state state;
    uint64_t config_hash;
    char *config;               /* malloc'd, NUL-terminated */
    struct ckpt_entry *entries; /* every dataset, in name order */
    size_t n_entries;
};

/* Verification without a model (flowinspect): opens, checks the format, version,
 * stored config, state and naming rule, that every moment and EMA dataset has a
 * parameter of the same shape, and reads every dataset (checksums). info (may be
 * NULL) receives what was read; free it with checkpoint_info_free. */
int checkpoint_inspect(const char *path, struct ckpt_info *info, struct ft_err *err);
void checkpoint_info_free(struct ckpt_info *info);
/* checkpoint_inspect without the info. */
int checkpoint_verify(const char *path, struct ft_err *err);

#endif
