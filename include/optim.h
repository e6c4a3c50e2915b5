/* Optimizer on the flat parameter arena (glow-model.md §11): Adamax with
 * openai's bias correction (default) or Adam, α_t = lr_t·√(1−β2^t)/(1−β1^t),
 * linear warmup by images, global-norm clipping after the allreduce, and an
 * EMA of the weights read back as ema/(1−β^t). State mirrors the arena 1:1. */
#ifndef FT_OPTIM_H
#define FT_OPTIM_H

#include <stddef.h>
#include <stdint.h>

enum optim_kind { OPTIM_ADAMAX = 0, OPTIM_ADAM = 1 };

/* The checkpointed state is m, v, t and ema_w; the rest comes from the config. */
struct optim {
    enum optim_kind kind;
    double lr, beta1, beta2, eps;   /* lr: base rate (before warmup); eps = 1e-8 */
    double clip_norm;               /* global-norm clip; 0 = off */
    int ema;                        /* EMA on (1) or off (0) */
    double ema_beta;
    uint64_t t;                     /* updates applied; t = 1 on the first update */
    size_t n;                       /* parameter count */
    float *m, *v, *ema_w;           /* n each (ema_w NULL unless ema), 64-byte aligned, zeroed */
};

/* Allocates the state once; FT_CHECKs the ranges (β in [0,1), lr, clip ≥ 0). */
void optim_init(struct optim *o, enum optim_kind kind, size_t n, double lr, double beta1,
                double beta2, double clip_norm, int ema, double ema_beta);
void optim_free(struct optim *o);

/* lr·min(1, images_seen/warmup_images); warmup_images = 0 means no warmup.
 * images_seen counts the images BEFORE this step, so step 1 gets lr 0. */
double optim_lr_at(double lr, uint64_t images_seen, uint64_t warmup_images);

/* √(Σ g²) summed in double in a fixed order; NaN or Inf in g gives a non-finite
 * result (the caller's skip flag, distributed.md §2.14). n = 0 gives 0. */
double optim_grad_norm(const float *g, size_t n);

/* One update. grad_norm is the global norm of the reduced gradient (finite: a
 * non-finite step is skipped by the caller and never reaches here). If
 * clip_norm > 0 and grad_norm > clip_norm, grads is scaled in place by
 * clip_norm/grad_norm. Then t += 1, the Adamax/Adam update with rate lr_t
 * (from optim_lr_at), and ema = β·ema + (1−β)·θ on the new θ. */
void optim_step(struct optim *o, float *params, float *grads, double grad_norm, double lr_t);

/* The EMA weights used for evaluation and sampling: ema/(1−β^t), into out (n).
 * Needs ema on and t ≥ 1. */
void optim_ema_weights(const struct optim *o, float *out);

#endif
