/* A checkpoint's model for the tools (flowsample, floweval): the stored config
 * (checkpoint_inspect → config_load_string), a Glow built from it, its parameters
 * (checkpoint_load) and, when chosen, the EMA weights ema/(1−β^t) with β resolved
 * as training resolves it: train.ema_beta, else train.beta2, else
 * 1 − 1/⌊N_train/B⌋ (optim.h; glow-model.md §11). Also the image-level helpers
 * the tools share: bin-centre encoding (§10) and decoding to uint8 (§2). */
#ifndef FT_TOOL_MODEL_H
#define FT_TOOL_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "checkpoint.h"
#include "config.h"
#include "dataset.h"
#include "glow.h"

/* Which weights evaluate and sample. AUTO is what training used for its test
 * bits/dim and sample grids: the EMA when train.ema is on and at least one update
 * was applied, else the parameters. */
enum tool_weights { TOOL_WEIGHTS_AUTO = 0, TOOL_WEIGHTS_EMA = 1, TOOL_WEIGHTS_PARAMS = 2 };

struct tool_model {
    const char *path;           /* the checkpoint (the caller keeps it alive) */
    struct config cfg;          /* the stored config */
    struct train_state st;      /* the stored training state */
    int file_ema;               /* the file has ema/ datasets */
    struct glow g;              /* built by tool_model_build; loaded weights */
    int has_g;                  /* g is allocated (tool_model_free frees it) */
    int ema;                    /* 1 if g.params hold the EMA weights */
    double ema_beta;            /* β used (when ema) */
};

/* Verifies path (every checksum, checkpoint_inspect) and reads its config and
 * state into m (memset first). FT_OK, FT_ERR_CKPT (missing, truncated, damaged)
 * or FT_ERR_CONFIG (another format version, a config this build cannot load),
 * with err "<path>: <reason>". Under MPI rank 0 calls it and broadcasts cfg and st. */
int tool_model_open(struct tool_model *m, const char *path, struct ft_err *err);
/* Builds the Glow of m->cfg for batch_max examples (FT_ERR_CONFIG if it cannot). */
int tool_model_build(struct tool_model *m, size_t batch_max, struct ft_err *err);
/* Loads the weights (checkpoint_load against m->cfg) and, when chosen, replaces
 * them by the EMA weights. ema_beta > 0 overrides the β resolution, needed only
 * when train.ema_beta and train.beta2 are both 0 and the training set named by
 * the stored config cannot be read to count its steps per epoch. */
int tool_model_load(struct tool_model *m, enum tool_weights weights, double ema_beta,
                    struct ft_err *err);
void tool_model_free(struct tool_model *m);

/* Opens a data set for the model of cfg and checks its image shape against
 * data.height × data.width × data.channels, naming both shapes on a mismatch.
 * FT_OK or FT_ERR_DATA ("<path>: ..."); on error ds is closed. */
int tool_model_open_data(const struct config *cfg, struct dataset *ds, const char *path,
                         struct ft_err *err);

/* Encodes imgs (n ≤ batch_max, D uint8 each) at the bin centres
 * u = 1/(2·n_bins) (glow-model.md §10) into e (n, D): ε_0 … ε_{L−2}, ε_top,
 * each in NHWC order (the layout of g->eps). x: scratch of n·D. */
void tool_model_encode(struct tool_model *m, ft_real *e, ft_real *x, const uint8_t *imgs,
                       size_t n);
/* Decodes e (n, D), any n, in chunks of batch_max at temperature 1 and
 * postprocesses to imgs (n, D) uint8. x: scratch of n·D. */
void tool_model_decode(struct tool_model *m, uint8_t *imgs, ft_real *x, const ft_real *e,
                       size_t n);

#endif
