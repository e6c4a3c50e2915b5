/* The flow model's passes (glow-model.md §3, §4, §8–§10) over the stage plan of
 * glow_build.c: each step is [actnorm] → [permutation] → coupling (Glow's,
 * or a masked one), stages are joined by splits with learned priors and
 * squeezes, the last ends in NICE's scaling (optional) and the top prior with
 * its class embedding and classifier head. objective = −D·ln n_bins +
 * Σ log-dets + Σ ln N; reversible mode rebuilds each step's input in backward
 * by inverting the step, so activations stay at one step's worth per stage. */
#include "glow.h"

#include <math.h>
#include <string.h>

#include "classcond.h"
#include "conv2d.h"
#include "diagscale.h"
#include "glow_impl.h"
#include "invconv.h"
#include "masked.h"
#include "permute.h"
#include "prior.h"
#include "squeeze.h"

#define TOP(g) (&(g)->lv[(g)->n_levels - 1])

static struct nn_tensors nn_view(ft_real *base, const struct glow_step *st)
{
    return (struct nn_tensors){
        base + st->nn[0], base + st->nn[1], base + st->nn[2], base + st->nn[3],
        base + st->nn[4], base + st->nn[5], base + st->nn[6], base + st->nn[7],
        base + st->nn[8],
    };
}

static void permutation_setup(struct glow *g, const struct glow_step *st, size_t c,
                              double *ldet, ft_real *w, ft_real *winv, ft_real *wit)
{
    /* Sets *ldet and the matrices the current pass needs (NULL: not needed). */
    *ldet = 0;
    if (st->pk == PERM_INVCONV) {
        int sing = invconv_prepare(ldet, winv, wit, g->params + st->w, c, g->dwork, g->ipiv);
        if (sing)
            *ldet = -INFINITY;  /* non-finite step: skipped by the training loop */
        if (w)
            memcpy(w, g->params + st->w, c * c * sizeof *w);
    } else if (st->pk == PERM_INVCONV_LU) {
        invconv_lu_build(w, winv, ldet, g->ibufs + st->perm, g->params + st->l,
                         g->params + st->u, g->params + st->log_s, g->fbufs + st->sign_s,
                         c, g->dwork);
    }
}

static struct coupling_dims step_dims(const struct glow *g, const struct glow_level *lv, size_t n)
{
    return (struct coupling_dims){ n, lv->h, lv->w, lv->c, g->spec.hidden,
                                   g->spec.coupling, g->spec.scale };
}

static struct coupling_work coupling_work_of(const struct glow *g, const struct work_views *v)
{
    return (struct coupling_work){ v->cols, v->dcols, v->da, v->dh,
                                   g->dwork + glow_acc_offset(g), g->dwork + glow_parts_offset(g),
                                   glow_parts_len(g) };
}

static int fixed_perm(const struct glow_step *st)
{
    return st->pk == PERM_SHUFFLE || st->pk == PERM_REVERSE;
}

/* ---------- steps ---------- */

static void step_forward(struct glow *g, struct glow_level *lv, size_t k, size_t n,
                         const struct ddi *ddi, const struct work_views *v)
{
    struct glow_step *st = &lv->st[k];
    const size_t hw = lv->h * lv->w, c = lv->c, rows = n * hw;
    const ft_real *x = lv->x[k];
    ft_real *y = lv->x[k + 1];
    struct coupling_work wk = coupling_work_of(g, v);
    if (st->actnorm) {
        if (ddi)
            actnorm_ddi(g->params + st->an_b, g->params + st->an_logs, wk.acc, x, rows, c, ddi);
        actnorm_forward(st->xa, g->logdet, x, g->params + st->an_b, g->params + st->an_logs,
                        n, hw, c);
        x = st->xa;
    }
    if (!st->permute) {
        memcpy(y, x, rows * c * sizeof *y);
    } else if (fixed_perm(st)) {
        permute_forward(y, x, g->ibufs + st->perm, rows, c);
    } else {
        double ldet;
        permutation_setup(g, st, c, &ldet, v->wmat, NULL, NULL);
        invconv_forward(y, g->logdet, x, v->wmat, ldet, n, hw, c);
    }
    struct nn_tensors p = nn_view(g->params, st);
    struct coupling_dims d = step_dims(g, lv, n);
    masked_forward(y, g->logdet, &st->acts, &wk, v->xb, &p, ddi, &d, st->mask);
}

/* x[k+1] → x[k]; leaves xa and the coupling acts as forward from x[k] makes them. */
static void step_reverse(struct glow *g, struct glow_level *lv, size_t k, size_t n,
                         const struct work_views *v)
{
    struct glow_step *st = &lv->st[k];
    const size_t hw = lv->h * lv->w, c = lv->c, rows = n * hw;
    ft_real *x = lv->x[k];
    memcpy(x, lv->x[k + 1], rows * c * sizeof *x);
    struct nn_tensors p = nn_view(g->params, st);
    struct coupling_dims d = step_dims(g, lv, n);
    struct coupling_work wk = coupling_work_of(g, v);
    masked_reverse(x, NULL, &st->acts, &wk, v->xb, &p, &d, st->mask);
    /* x holds the permutation's output; its input goes to xa */
    if (!st->permute) {
        memcpy(st->xa, x, rows * c * sizeof *x);
    } else if (fixed_perm(st)) {
        permute_reverse(st->xa, x, g->ibufs + st->perm, rows, c);
    } else {
        double ldet;
        permutation_setup(g, st, c, &ldet, v->wmat, v->wmat2, NULL);
        invconv_reverse(st->xa, NULL, x, v->wmat2, ldet, n, hw, c);
    }
    if (st->actnorm)
        actnorm_reverse(x, NULL, st->xa, g->params + st->an_b, g->params + st->an_logs, n, hw, c);
    else
        memcpy(x, st->xa, rows * c * sizeof *x);
}

/* dy (gradient at x[k+1], consumed) → dx (gradient at x[k]). */
static void step_backward(struct glow *g, struct glow_level *lv, size_t k, size_t n,
                          ft_real *dy, ft_real *dx, const double *gam, const struct work_views *v)
{
    struct glow_step *st = &lv->st[k];
    const size_t hw = lv->h * lv->w, c = lv->c, rows = n * hw;
    struct nn_tensors p = nn_view(g->params, st), gr = nn_view(g->grads, st);
    struct coupling_dims d = step_dims(g, lv, n);
    struct coupling_work wk = coupling_work_of(g, v);
    masked_backward(dy, &gr, &wk, v->xb, v->dxb, lv->x[k + 1], &st->acts, &p, gam, &d, st->mask);
    if (!st->permute) {
        memcpy(dx, dy, rows * c * sizeof *dx);
    } else if (fixed_perm(st)) {
        permute_reverse(dx, dy, g->ibufs + st->perm, rows, c);
    } else if (st->pk == PERM_INVCONV) {
        double ldet;
        permutation_setup(g, st, c, &ldet, v->wmat, NULL, v->wmat2);
        invconv_backward(dx, g->grads + st->w, dy, st->xa, v->wmat, v->wmat2, gam, n, hw, c);
    } else {
        double ldet;
        permutation_setup(g, st, c, &ldet, v->wmat, NULL, NULL);
        invconv_lu_backward(dx, g->grads + st->l, g->grads + st->u, g->grads + st->log_s, dy,
                            st->xa, v->wmat, g->ibufs + st->perm, g->params + st->l,
                            g->params + st->u, g->params + st->log_s, g->fbufs + st->sign_s,
                            gam, n, hw, c, g->dwork);
    }
    if (st->actnorm)
        actnorm_backward(dx, g->grads + st->an_b, g->grads + st->an_logs, wk.acc, dx, st->xa,
                         gam, g->params + st->an_logs, n, hw, c);
}

/* ---------- between stages ---------- */

/* Channels [0, cnt) of src (pixel stride ss) into dst (pixel stride ds). */
static void copy_channels(ft_real *dst, size_t ds, const ft_real *src, size_t ss, size_t rows,
                          size_t cnt)
{
    for (size_t r = 0; r < rows; r++)
        memcpy(dst + r * ds, src + r * ss, cnt * sizeof *dst);
}

/* The kept part of stage lv's output z (pixel stride lv->c) to the next
 * stage's input nx (dir > 0), or back (dir < 0): squeezed or copied. */
static void pass_on(const struct glow_level *lv, const struct glow_level *next, ft_real *z,
                    ft_real *nx, size_t n, int dir)
{
    size_t keep = lv->split ? lv->c / 2 : lv->c;
    if (next->squeeze_in && dir > 0)
        squeeze_forward(nx, z, lv->c, n, lv->h, lv->w, keep);
    else if (next->squeeze_in)
        squeeze_reverse(z, lv->c, nx, n, lv->h, lv->w, keep);
    else if (dir > 0)
        copy_channels(nx, keep, z, lv->c, n * lv->h * lv->w, keep);
    else
        copy_channels(z, lv->c, nx, keep, n * lv->h * lv->w, keep);
}

/* Scatters a stage's contiguous ε (n, cnt) into the per-example (n, D) layout. */
static void eps_scatter(ft_real *eps, const ft_real *tmp, size_t n, size_t dim, size_t off, size_t cnt)
{
    for (size_t e = 0; e < n; e++)
        memcpy(eps + e * dim + off, tmp + e * cnt, cnt * sizeof *eps);
}

static void eps_gather(ft_real *tmp, const ft_real *eps, size_t n, size_t dim, size_t off, size_t cnt)
{
    for (size_t e = 0; e < n; e++)
        memcpy(tmp + e * cnt, eps + e * dim + off, cnt * sizeof *tmp);
}

/* ---------- top prior ---------- */

/* μ, ℓ of the top prior for labels y (NULL unless ycond): the learntop conv on
 * zeros (or zeros), the class embedding added per example. Sets *lay; with
 * compute 0 only returns what the last computation left. */
static const ft_real *top_prior_h(struct glow *g, const struct work_views *v, const int32_t *y,
                                  size_t n, struct prior_layout *lay, int compute)
{
    struct glow_level *top = TOP(g);
    const size_t ct = top->c, hw = top->h * top->w, cnt = hw * 2 * ct;
    *lay = prior_top_layout(ct);
    if (g->spec.ycond)
        lay->hn = lay->hp;   /* one h per example */
    if (!compute)
        return g->spec.ycond ? top->hy : top->hs;
    if (!g->spec.learntop) {
        memset(top->hs, 0, cnt * sizeof *top->hs);
    } else {
        memset(v->zeros, 0, cnt * sizeof *v->zeros);
        zeroconv_forward(top->hs, v->cols, v->zeros, 2 * ct, g->params + top->sp_w,
                         g->params + top->sp_b, g->params + top->sp_logs, 1, top->h, top->w,
                         2 * ct, 2 * ct);
    }
    if (!g->spec.ycond)
        return top->hs;
    classcond_emb_forward(top->hy, top->hs, y, g->params + top->y_w, g->params + top->y_b,
                          g->params + top->y_logs, n, hw, 2 * ct, g->spec.n_classes);
    return top->hy;
}

static const int32_t *labels_for(struct glow *g, size_t n, int need)
{
    if (!g->spec.ycond && !(g->spec.weight_y > 0))
        return NULL;
    if (g->labels)
        return g->labels;
    FT_CHECK(!need, "model.ycond / model.weight_y: glow_forward needs g->labels");
    int32_t *y = TOP(g)->ylab;
    for (size_t e = 0; e < n; e++)
        y[e] = (int32_t)(e % g->spec.n_classes);
    return y;
}

static void top_forward(struct glow *g, const struct work_views *v, size_t n)
{
    struct glow_level *top = TOP(g);
    const size_t hw = top->h * top->w, c = top->c;
    const int32_t *y = labels_for(g, n, 1);
    struct prior_layout lay;
    const ft_real *h = top_prior_h(g, v, y, n, &lay, 1);
    gaussian_forward(g->logp, v->eps_tmp, top->z, c, h, &lay, n, hw, c);
    eps_scatter(g->eps, v->eps_tmp, n, g->dim, top->eps_off, hw * c);
    if (g->spec.weight_y > 0)
        classcond_head_forward(g->bits_y, g->pred_y, top->feat, top->logit, top->z, c, y,
                               g->params + top->c_w, g->params + top->c_b,
                               g->params + top->c_logs, n, hw, c, g->spec.n_classes);
}

static void grads_ready(const struct glow *g, size_t offset)
{
    if (g->grads_ready)
        g->grads_ready(g->grads_ready_ctx, offset);
}

/* dz (overwritten): the gradient at the top stage's output x[n_steps]. */
static void top_backward(struct glow *g, const struct work_views *v, ft_real *dz,
                         const double *gam, size_t n)
{
    struct glow_level *top = TOP(g);
    const struct glow_spec *s = &g->spec;
    const size_t hw = top->h * top->w, c = top->c, cnt = hw * 2 * c;
    const int32_t *y = labels_for(g, n, 1);
    struct prior_layout lay;
    const ft_real *h = top_prior_h(g, v, y, n, &lay, 0);   /* as the forward left it */
    ft_real *dh0 = v->dht;
    if (s->ycond) {
        dh0 = v->dh0;
        memset(dh0, 0, cnt * sizeof *dh0);
        gaussian_backward(dz, c, v->dht, top->z, c, h, &lay, gam, n, hw, c);
        classcond_emb_backward(s->learntop ? dh0 : NULL, g->grads + top->y_w,
                               g->grads + top->y_b, g->grads + top->y_logs, top->yacc, v->dht,
                               y, g->params + top->y_w, g->params + top->y_b,
                               g->params + top->y_logs, n, hw, 2 * c, s->n_classes);
    } else {
        memset(dh0, 0, cnt * sizeof *dh0);
        gaussian_backward(dz, c, dh0, top->z, c, h, &lay, gam, n, hw, c);
    }
    if (s->learntop) {
        memset(v->zeros, 0, cnt * sizeof *v->zeros);
        zeroconv_backward(NULL, 0, g->grads + top->sp_w, g->grads + top->sp_b,
                          g->grads + top->sp_logs, v->cols, NULL, coupling_work_of(g, v).acc,
                          dh0, top->hs,
                          v->zeros, 2 * c, g->params + top->sp_w, g->params + top->sp_logs,
                          1, top->h, top->w, 2 * c, 2 * c, NULL);
    }
    if (s->weight_y > 0) {
        /* ∂(γ·(objective − weight_y·D·ln 2·bits_y))/∂bits_y */
        for (size_t e = 0; e < n; e++)
            top->u[e] = -gam[e] * (double)g->dim * log(2.0) * s->weight_y;
        classcond_head_backward(dz, c, g->grads + top->c_w, g->grads + top->c_b,
                                g->grads + top->c_logs, top->yacc, top->u, top->feat,
                                top->logit, y, g->params + top->c_w, g->params + top->c_logs,
                                n, hw, c, s->n_classes);
    }
    if (top->top_first != SIZE_MAX)
        grads_ready(g, top->top_first);
    if (top->has_scale) {
        diagscale_backward(dz, g->grads + top->scale_s, top->yacc, dz, top->zs, gam,
                           g->params + top->scale_s, n, hw * c);
        grads_ready(g, top->scale_s);
    }
}

/* ---------- forward ---------- */

void glow_forward(struct glow *g, const ft_real *x, size_t n, const struct ddi *ddi)
{
    FT_CHECK(n >= 1 && n <= g->batch_max, "batch %zu outside 1..%zu", n, g->batch_max);
    struct work_views v = glow_work_views(g);
    g->n_fwd = n;
    memset(g->logdet, 0, n * sizeof *g->logdet);
    memset(g->logp, 0, n * sizeof *g->logp);
    if (g->lv[0].squeeze_in)
        squeeze_forward(g->lv[0].x[0], x, g->spec.channels, n, g->spec.height, g->spec.width,
                        g->spec.channels);
    else
        memcpy(g->lv[0].x[0], x, n * g->dim * sizeof *x);
    for (size_t i = 0; i < g->n_levels; i++) {
        struct glow_level *lv = &g->lv[i];
        const size_t hw = lv->h * lv->w, c = lv->c;
        for (size_t k = 0; k < lv->n_steps; k++)
            step_forward(g, lv, k, n, ddi, &v);
        ft_real *z = lv->x[lv->n_steps];
        if (lv->has_scale)
            diagscale_forward(lv->zs, g->logdet, z, g->params + lv->scale_s, n, hw * c);
        if (lv->split) {
            struct prior_layout lay = prior_split_layout(c / 2);
            zeroconv_forward(lv->hs, v.cols, z, c, g->params + lv->sp_w, g->params + lv->sp_b,
                             g->params + lv->sp_logs, n, lv->h, lv->w, c / 2, c);
            gaussian_forward(g->logp, v.eps_tmp, z + c / 2, c, lv->hs, &lay, n, hw, c / 2);
            eps_scatter(g->eps, v.eps_tmp, n, g->dim, lv->eps_off, hw * c / 2);
        }
        if (i + 1 < g->n_levels)
            pass_on(lv, &g->lv[i + 1], z, g->lv[i + 1].x[0], n, +1);
        else
            top_forward(g, &v, n);
    }
}

double glow_nll(const struct glow *g, size_t i)
{
    FT_CHECK(i < g->n_fwd, "example %zu of a batch of %zu", i, g->n_fwd);
    double obj0 = -(double)g->dim * log((double)(1 << g->spec.n_bits));
    return -(obj0 + g->logdet[i] + g->logp[i]);
}

/* ---------- reverse ---------- */

void glow_reverse(struct glow *g, ft_real *x, const ft_real *eps, size_t n, double temperature)
{
    const struct glow_spec *s = &g->spec;
    FT_CHECK(n >= 1 && n <= g->batch_max, "batch %zu outside 1..%zu", n, g->batch_max);
    struct work_views v = glow_work_views(g);
    for (size_t i = g->n_levels; i-- > 0;) {
        struct glow_level *lv = &g->lv[i];
        const size_t hw = lv->h * lv->w, c = lv->c;
        ft_real *z = lv->x[lv->n_steps];
        if (i + 1 == g->n_levels) {
            struct prior_layout lay;
            const ft_real *h = top_prior_h(g, &v, labels_for(g, n, 0), n, &lay, 1);
            eps_gather(v.eps_tmp, eps, n, g->dim, lv->eps_off, hw * c);
            gaussian_sample(lv->z, c, v.eps_tmp, temperature, h, &lay, n, hw, c);
            if (lv->has_scale)
                diagscale_reverse(z, NULL, lv->zs, g->params + lv->scale_s, n, hw * c);
        } else {
            pass_on(lv, &g->lv[i + 1], z, g->lv[i + 1].x[0], n, -1);
        }
        if (lv->split) {
            struct prior_layout lay = prior_split_layout(c / 2);
            zeroconv_forward(lv->hs, v.cols, z, c, g->params + lv->sp_w, g->params + lv->sp_b,
                             g->params + lv->sp_logs, n, lv->h, lv->w, c / 2, c);
            eps_gather(v.eps_tmp, eps, n, g->dim, lv->eps_off, hw * c / 2);
            gaussian_sample(z + c / 2, c, v.eps_tmp, temperature, lv->hs, &lay, n, hw, c / 2);
        }
        for (size_t k = lv->n_steps; k-- > 0;)
            step_reverse(g, lv, k, n, &v);
    }
    if (g->lv[0].squeeze_in)
        squeeze_reverse(x, s->channels, g->lv[0].x[0], n, s->height, s->width, s->channels);
    else
        memcpy(x, g->lv[0].x[0], n * g->dim * sizeof *x);
}

/* ---------- backward ---------- */

void glow_backward(struct glow *g, double gamma)
{
    const struct glow_spec *s = &g->spec;
    const size_t n = g->n_fwd;
    FT_CHECK(n >= 1, "glow_backward before glow_forward");
    struct work_views v = glow_work_views(g);
    double *gam = g->dwork + g->n_dwork - 4 * g->batch_max;
    double *acc = coupling_work_of(g, &v).acc;
    for (size_t e = 0; e < n; e++)
        gam[e] = gamma;
    int cur = 0;
    for (size_t i = g->n_levels; i-- > 0;) {
        struct glow_level *lv = &g->lv[i];
        const size_t hw = lv->h * lv->w, c = lv->c;
        ft_real *z = lv->x[lv->n_steps];
        if (i + 1 == g->n_levels) {
            top_backward(g, &v, v.dbuf[cur], gam, n);
        } else {
            /* dbuf[cur] holds the gradient at stage i+1's input: unsqueeze (or
             * copy) it into the kept part, then add the split prior's paths. */
            ft_real *dz = v.dbuf[1 - cur];
            pass_on(lv, &g->lv[i + 1], dz, v.dbuf[cur], n, -1);
            if (lv->split) {
                struct prior_layout lay = prior_split_layout(c / 2);
                gaussian_backward(dz + c / 2, c, v.dhs, z + c / 2, c, lv->hs, &lay, gam, n, hw,
                                  c / 2);
                zeroconv_backward(dz, c, g->grads + lv->sp_w, g->grads + lv->sp_b,
                                  g->grads + lv->sp_logs, v.cols, v.dcols, acc, v.dhs, lv->hs, z,
                                  c, g->params + lv->sp_w, g->params + lv->sp_logs, n, lv->h,
                                  lv->w, c / 2, c, NULL);
                grads_ready(g, lv->sp_w);
            }
            cur = 1 - cur;
        }
        for (size_t k = lv->n_steps; k-- > 0;) {
            if (g->reversible)
                step_reverse(g, lv, k, n, &v);
            step_backward(g, lv, k, n, v.dbuf[cur], v.dbuf[1 - cur], gam, &v);
            grads_ready(g, lv->st[k].first);
            cur = 1 - cur;
        }
    }
    if (g->lv[0].squeeze_in)
        squeeze_reverse(g->dx, s->channels, v.dbuf[cur], n, s->height, s->width, s->channels);
    else
        memcpy(g->dx, v.dbuf[cur], n * g->dim * sizeof *g->dx);
}
