/* The flow model (glow-model.md §4, §8–§10, §12): Glow's levels × steps of
 * actnorm → permutation → coupling with splits and learned priors, or the
 * RealNVP (masked couplings) and NICE variants, optionally class-conditional
 * with a classifier head; one tensor table over one parameter arena and a
 * mirrored gradient arena; activations and workspaces in arenas sized once. */
#ifndef FT_GLOW_H
#define FT_GLOW_H

#include <stddef.h>
#include <stdint.h>
#include "actnorm.h"
#include "check.h"
#include "coupling.h"
#include "real.h"

enum perm_kind { PERM_INVCONV = 0, PERM_INVCONV_LU = 1, PERM_SHUFFLE = 2, PERM_REVERSE = 3 };
enum arch_kind { ARCH_GLOW = 0, ARCH_REALNVP = 1, ARCH_NICE = 2 };     /* §4, §8 */

/* The model-shape fields of the config: a checkpoint must match all of them. */
struct glow_spec {
    size_t height, width, channels;  /* image, after padding */
    size_t levels, depth, hidden;    /* L, K, coupling width */
    enum coupling_kind coupling;
    enum scale_fn scale;
    enum perm_kind perm;
    int learntop;
    int n_bits;
    /* Variants (zero = plain Glow). realnvp: levels = scales S, depth and perm
     * unused (§8 fixes the layers); nice: levels 1, additive, perm and
     * learntop unused (reverse permutation, prior N(0, I)). */
    enum arch_kind arch;
    int ycond;                       /* class-conditional top prior (§9) */
    size_t n_classes;                /* n_y, with ycond or weight_y > 0 */
    double weight_y;                 /* > 0: classifier head, loss += weight_y·bits_y */
};

enum tensor_kind { TENSOR_PARAM = 0, TENSOR_BUF_F32 = 1, TENSOR_BUF_I32 = 2 };

struct glow_tensor {
    char name[64];          /* "level1/step07/coupling/conv1/W" */
    enum tensor_kind kind;  /* params/grads arena, f32 buffers or i32 buffers */
    size_t offset;          /* in its arena; params and grads share offsets */
    size_t numel;
    int ndim, shape[4];
};

struct glow_step;   /* per-step views, private to glow.c */
struct glow_level;

struct glow {
    struct glow_spec spec;
    size_t batch_max;       /* activations are sized for this many examples */
    size_t dim;             /* D = H·W·C */
    int reversible;         /* 1: backward rebuilds step inputs by reversing */

    struct glow_tensor *tensors;
    size_t n_tensors;
    ft_real *params, *grads;  /* n_params each, same layout */
    size_t n_params;
    ft_real *fbufs;           /* fixed float buffers (sign_s) */
    int32_t *ibufs;           /* fixed int buffers (perm, P) */
    size_t n_fbufs, n_ibufs;

    ft_real *acts;  size_t n_acts;   /* activation arena */
    ft_real *work;  size_t n_work;   /* float workspace arena */
    double *dwork;  size_t n_dwork;  /* double workspace arena */

    struct glow_level *lv;  /* n_levels stages (glow: spec.levels) */
    size_t n_levels;
    int *ipiv;              /* LAPACK pivots, max channel count */
    ft_real *dx;            /* (N,H,W,C) gradient of the input after backward */
    ft_real *eps;           /* (N, D) standardised latents ε_0 … ε_top after forward */
    double *logdet, *logp;  /* (N) per example, after forward */
    size_t n_fwd;           /* batch of the last forward */

    /* Labels (N int32 in 0..n_classes−1) of the batch, set by the caller before
     * glow_forward and kept valid through glow_backward when spec.ycond or
     * spec.weight_y > 0 (ignored otherwise). glow_reverse uses them too; NULL
     * there samples example e of each call as class e mod n_classes. */
    const int32_t *labels;
    double *bits_y;         /* (N) classifier bits_y after forward (weight_y > 0) */
    int32_t *pred_y;        /* (N) its argmax class (error rate = pred ≠ label) */

    /* Optional: called during glow_backward each time every gradient at arena
     * offsets ≥ offset is final. Backward finishes tensors in exactly reverse
     * table order, so the bucketed allreduce can start early (distributed.md §2.6). */
    void (*grads_ready)(void *ctx, size_t offset);
    void *grads_ready_ctx;
};

/* Checks the spec (naming the field on error) and allocates every arena. */
int glow_init(struct glow *g, const struct glow_spec *spec, size_t batch_max,
              int reversible, struct ft_err *err);
void glow_free(struct glow *g);

/* Parameter count of a spec without allocating (the formula of glow-model.md §12
 * is what the tests compare it with). Returns 0 for an invalid spec. */
size_t glow_param_count(const struct glow_spec *spec);

/* Random and zero init from the seed (keyed by tensor name); actnorms b = 0,
 * logs = 0 until DDI. */
void glow_init_params(struct glow *g, uint64_t seed);

const struct glow_tensor *glow_find(const struct glow *g, const char *name);
/* Pointer to a tensor's data in params (or the buffer arenas). */
void *glow_tensor_data(const struct glow *g, const struct glow_tensor *t);

/* Forward (encode) n ≤ batch_max preprocessed images x (N,H,W,C). Fills g->logdet,
 * g->logp and g->eps. With ddi, every actnorm is initialised on this batch as the
 * pass reaches it (glow-model.md §5). */
void glow_forward(struct glow *g, const ft_real *x, size_t n, const struct ddi *ddi);
/* Per-example NLL in nats of the last forward: −(−D·ln n_bins + logdet + logp).
 * With ycond it is −ln p(x|y); the classifier's bits_y is separate (g->bits_y). */
double glow_nll(const struct glow *g, size_t i);
/* Backward of Σ_n γ·(objective_n − weight_y·D·ln 2·bits_y_n) for the last
 * forward, so γ = −1/(B·D·ln 2) gives the gradient of the loss
 * (1/B)·Σ_n (bits_x_n + weight_y·bits_y_n) of glow-model.md §3. Adds into
 * g->grads and writes g->dx. */
void glow_backward(struct glow *g, double gamma);
void glow_zero_grad(struct glow *g);

/* Reverse (decode): x (N,H,W,C) from eps (N,D) with every prior std × temperature;
 * temperature 1 with the encoder's eps reproduces the input. */
void glow_reverse(struct glow *g, ft_real *x, const ft_real *eps, size_t n, double temperature);

/* For tests and tools: the step shape and step count of a stage (level <
 * g->n_levels; Glow: the level), and (stored mode, after a forward) the output
 * of a step's ActNorm, (n, h, w, c). */
void glow_level_shape(const struct glow *g, size_t level, size_t *h, size_t *w, size_t *c);
size_t glow_level_steps(const struct glow *g, size_t level);
const ft_real *glow_actnorm_output(const struct glow *g, size_t level, size_t step);
/* A stage's input buffer, (n, h, w, c) of glow_level_shape for the n of the last
 * forward: the squeezed (or copied) image for stage 0, the kept part of the
 * previous stage's output after it. Stored mode: it holds that input from
 * glow_forward on (backward only reads it; glow_reverse overwrites it).
 * Reversible mode: the step boundaries take turns in this buffer and one other,
 * so after glow_forward it holds a later step's output; after glow_backward it
 * holds the input rebuilt by reversing the stage's steps from its own forward
 * output (errors build up over one stage's steps, not across stages). */
const ft_real *glow_stage_input(const struct glow *g, size_t level);

#endif
