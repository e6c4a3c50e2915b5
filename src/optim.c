/* Adamax / Adam on the flat parameter arena, warmup, global-norm clipping and
 * EMA (glow-model.md §11). Owns the moment and EMA arenas (1:1 with params).
 *   α_t = lr_t·√(1−β2^t)/(1−β1^t);  m = β1·m + (1−β1)·g
 *   Adamax: v = max(β2·v, |g|);  θ −= α_t·m/(v + ε)
 *   Adam:   v = β2·v + (1−β2)·g²; θ −= α_t·m/(√v + ε);  ema = β·ema + (1−β)·θ */
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "check.h"

/* Precision: the state (m, v, ema) is float32 like the parameters (openai kept
 * float32 slots too), and the per-element update runs in float32. The scalar
 * coefficients (α_t with its β^t powers, 1−β, the clip scale) are computed once
 * per step in double and rounded once to float, so no error builds up in β^t.
 * Only the gradient norm is summed in double (it decides clipping and skips). */
struct coef {
    float alpha, b1, c1, b2, c2, eps, scale, eb, ec;   /* c = 1 − b; scale: clip factor */
};

void optim_init(struct optim *o, enum optim_kind kind, size_t n, double lr, double beta1,
                double beta2, double clip_norm, int ema, double ema_beta)
{
    FT_CHECK(kind == OPTIM_ADAMAX || kind == OPTIM_ADAM, "unknown optimizer kind %d", (int)kind);
    FT_CHECK(isfinite(lr) && lr >= 0, "learning rate %g must be finite and >= 0", lr);
    FT_CHECK(beta1 >= 0 && beta1 < 1, "beta1 %g must be in [0, 1)", beta1);
    FT_CHECK(beta2 >= 0 && beta2 < 1, "beta2 %g must be in [0, 1)", beta2);
    FT_CHECK(isfinite(clip_norm) && clip_norm >= 0, "clip norm %g must be >= 0 (0 = off)",
             clip_norm);
    FT_CHECK(ema == 0 || ema == 1, "ema flag %d must be 0 or 1", ema);
    FT_CHECK(!ema || (ema_beta >= 0 && ema_beta < 1), "ema beta %g must be in [0, 1)", ema_beta);
    memset(o, 0, sizeof *o);
    o->kind = kind;
    o->lr = lr;
    o->beta1 = beta1;
    o->beta2 = beta2;
    o->eps = 1e-8;
    o->clip_norm = clip_norm;
    o->ema = ema;
    o->ema_beta = ema ? ema_beta : 0.0;
    o->t = 0;
    o->n = n;
    FT_CHECK(n <= SIZE_MAX / sizeof(float), "parameter count %zu overflows", n);
    o->m = ft_malloc_aligned(n * sizeof(float));
    o->v = ft_malloc_aligned(n * sizeof(float));
    o->ema_w = ema ? ft_malloc_aligned(n * sizeof(float)) : NULL;
}

void optim_free(struct optim *o)
{
    free(o->m);
    free(o->v);
    free(o->ema_w);
    o->m = o->v = o->ema_w = NULL;
    o->n = 0;
}

double optim_lr_at(double lr, uint64_t images_seen, uint64_t warmup_images)
{
    if (warmup_images == 0 || images_seen >= warmup_images)
        return lr;
    return lr * ((double)images_seen / (double)warmup_images);
}

/* Eight double partial sums in a fixed pattern: the order is part of the
 * result's bits (identical on every rank for the same reduced gradient) and
 * lets the compiler vectorize without reassociating on its own. The array is
 * cut into FT_NORM_PARTS ranges that depend only on n, summed in parallel
 * and added in range order, so the bits do not depend on the thread count. */
#define FT_NORM_LANES 8
#define FT_NORM_PARTS 16

static double sum_squares(const float *g, size_t n)
{
    double acc[FT_NORM_LANES] = { 0 };
    size_t i = 0;
    for (; i + FT_NORM_LANES <= n; i += FT_NORM_LANES)
        for (size_t k = 0; k < FT_NORM_LANES; k++) {
            double x = g[i + k];
            acc[k] += x * x;
        }
    for (size_t k = 0; i < n; i++, k++) {
        double x = g[i];
        acc[k] += x * x;
    }
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

double optim_grad_norm(const float *g, size_t n)
{
    if (n == 0)
        return 0.0;
    double part[FT_NORM_PARTS];
    const int par = n >= (1u << 16);
#pragma omp parallel for num_threads(ft_threads()) schedule(static) if (par)
    for (size_t p = 0; p < FT_NORM_PARTS; p++) {
        size_t i0 = n * p / FT_NORM_PARTS, i1 = n * (p + 1) / FT_NORM_PARTS;
        part[p] = sum_squares(g + i0, i1 - i0);
    }
    double s = 0;
    for (size_t p = 0; p < FT_NORM_PARTS; p++)
        s += part[p];
    return sqrt(s);
}

/* One fused pass: clip (written back only when clipping), moments, parameter,
 * EMA. Inlined with constant flags below, so each of the eight versions is a
 * branch-free loop the compiler vectorizes (Adam's sqrtf needs -fno-math-errno
 * for that; Adamax needs nothing). */
static inline __attribute__((always_inline)) void
update_pass(const int adam, const int clip, const int ema, float *restrict p,
            float *restrict g, float *restrict m, float *restrict v, float *restrict e,
            size_t n, const struct coef *c)
{
    const struct coef k = *c;
    /* elementwise: the same bits on any number of threads */
    const int par = n >= (1u << 16);
#pragma omp parallel for num_threads(ft_threads()) schedule(static) if (par)
    for (size_t i = 0; i < n; i++) {
        float gi = g[i];
        if (clip) {
            gi *= k.scale;
            g[i] = gi;
        }
        float mi = k.b1 * m[i] + k.c1 * gi;
        float vi, den;
        if (adam) {
            vi = k.b2 * v[i] + k.c2 * (gi * gi);
            den = sqrtf(vi) + k.eps;
        } else {
            float bv = k.b2 * v[i], ag = fabsf(gi);
            vi = bv > ag ? bv : ag;           /* max; inputs are finite (skip policy) */
            den = vi + k.eps;
        }
        float pi = p[i] - k.alpha * (mi / den);
        m[i] = mi;
        v[i] = vi;
        p[i] = pi;
        if (ema)
            e[i] = k.eb * e[i] + k.ec * pi;
    }
}

static void update_dispatch(int adam, int clip, int ema, float *p, float *g, float *m,
                            float *v, float *e, size_t n, const struct coef *c)
{
    switch ((adam ? 4 : 0) | (clip ? 2 : 0) | (ema ? 1 : 0)) {
    case 0: update_pass(0, 0, 0, p, g, m, v, e, n, c); break;
    case 1: update_pass(0, 0, 1, p, g, m, v, e, n, c); break;
    case 2: update_pass(0, 1, 0, p, g, m, v, e, n, c); break;
    case 3: update_pass(0, 1, 1, p, g, m, v, e, n, c); break;
    case 4: update_pass(1, 0, 0, p, g, m, v, e, n, c); break;
    case 5: update_pass(1, 0, 1, p, g, m, v, e, n, c); break;
    case 6: update_pass(1, 1, 0, p, g, m, v, e, n, c); break;
    default: update_pass(1, 1, 1, p, g, m, v, e, n, c); break;
    }
}

void optim_step(struct optim *o, float *params, float *grads, double grad_norm, double lr_t)
{
    FT_CHECK(o->n == 0 || (params && grads && o->m && o->v), "optimizer step on NULL arrays");
    FT_CHECK(isfinite(grad_norm) && grad_norm >= 0,
             "gradient norm %g is not finite: non-finite steps must be skipped, not applied",
             grad_norm);
    FT_CHECK(isfinite(lr_t) && lr_t >= 0, "learning rate %g must be finite and >= 0", lr_t);

    int clip = o->clip_norm > 0 && grad_norm > o->clip_norm;
    o->t += 1;
    double t = (double)o->t;
    struct coef c = {
        .alpha = (float)(lr_t * sqrt(1.0 - pow(o->beta2, t)) / (1.0 - pow(o->beta1, t))),
        .b1 = (float)o->beta1,
        .c1 = (float)(1.0 - o->beta1),
        .b2 = (float)o->beta2,
        .c2 = (float)(1.0 - o->beta2),
        .eps = (float)o->eps,
        .scale = clip ? (float)(o->clip_norm / grad_norm) : 1.0f,
        .eb = (float)o->ema_beta,
        .ec = (float)(1.0 - o->ema_beta),
    };
    update_dispatch(o->kind == OPTIM_ADAM, clip, o->ema, params, grads, o->m, o->v,
                    o->ema_w, o->n, &c);
}

void optim_ema_weights(const struct optim *o, float *out)
{
    FT_CHECK(o->ema && o->ema_w, "EMA weights requested but EMA is off");
    FT_CHECK(o->t >= 1, "EMA weights requested before the first update (use the parameters)");
    /* Per element in double: this runs once per evaluation, not per step. */
    double denom = 1.0 - pow(o->ema_beta, (double)o->t);
    for (size_t i = 0; i < o->n; i++)
        out[i] = (float)((double)o->ema_w[i] / denom);
}
