/* The Glow model driver (glow-model.md §4, §10, §12): builds the tensor table
 * and arenas once, then runs levels × steps of actnorm → permutation → coupling,
 * splits with learned priors and the top prior. objective = −D·ln n_bins +
 * Σ log-dets + Σ ln N; reversible mode rebuilds each step's input in backward
 * by inverting the step, so activations stay at one step's worth per level. */
#include "glow.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conv2d.h"
#include "invconv.h"
#include "permute.h"
#include "prior.h"
#include "rng.h"
#include "squeeze.h"

struct glow_step {
    size_t an_b, an_logs;              /* params offsets */
    size_t w, l, u, log_s;             /* invconv W, or LU's L, U, log_s */
    size_t sign_s;                     /* fbufs offset (LU) */
    size_t perm;                       /* ibufs offset: shuffle/reverse perm or LU's P */
    size_t nn[9];                      /* w1, an1_b, an1_logs, w2, an2_b, an2_logs, w3, b3, logs3 */
    struct coupling_acts acts;
    ft_real *xa;                       /* actnorm output = permutation input */
};

struct glow_level {
    size_t h, w, c;                    /* step shape of this level */
    ft_real **x;                       /* depth + 1 step boundaries */
    struct glow_step *st;
    size_t sp_w, sp_b, sp_logs;        /* split prior (not on the last level) */
    ft_real *hs;                       /* split prior output (N,h,w,c) */
    size_t eps_off;                    /* offset of this level's ε in a D-vector */
};

/* Top prior tensors and buffers live in level L−1's split slots: */
#define TOP(g) (&(g)->lv[(g)->spec.levels - 1])

/* ---------- tensor table ---------- */

struct builder {
    struct glow *g;
    size_t cap;
};

static size_t add_tensor(struct builder *bd, enum tensor_kind kind, int ndim,
                         const int *shape, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static size_t add_tensor(struct builder *bd, enum tensor_kind kind, int ndim,
                         const int *shape, const char *fmt, ...)
{
    struct glow *g = bd->g;
    if (g->n_tensors == bd->cap) {
        bd->cap = bd->cap ? 2 * bd->cap : 64;
        g->tensors = realloc(g->tensors, bd->cap * sizeof *g->tensors);
        FT_CHECK(g->tensors != NULL, "out of memory for the tensor table");
    }
    struct glow_tensor *t = &g->tensors[g->n_tensors++];
    memset(t, 0, sizeof *t);
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    FT_CHECK(len > 0 && (size_t)len < sizeof t->name, "tensor name too long");
    t->kind = kind;
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->numel *= (size_t)shape[i];
    }
    size_t *top = kind == TENSOR_PARAM ? &g->n_params
                : kind == TENSOR_BUF_F32 ? &g->n_fbufs : &g->n_ibufs;
    t->offset = *top;
    /* Align every tensor to 16 elements (64 bytes) for vector loads. */
    *top += (t->numel + 15) / 16 * 16;
    return t->offset;
}

#define SHAPE(...) (int[]){ __VA_ARGS__ }
#define NDIM(...) (int)(sizeof((int[]){ __VA_ARGS__ }) / sizeof(int))
#define ADD(kind, name_fmt, ...) add_tensor(bd, kind, NDIM(__VA_ARGS__), SHAPE(__VA_ARGS__), name_fmt

static void build_step(struct builder *bd, struct glow_step *st, size_t i, size_t k,
                       size_t c, size_t wd, size_t nout, enum perm_kind perm, int kw)
{
    const int C = (int)c, W = (int)wd, NO = (int)nout;
    char pre[64];
    snprintf(pre, sizeof pre, "level%u/step%0*u", (unsigned)i, kw, (unsigned)k);
    st->an_b = ADD(TENSOR_PARAM, "%s/actnorm/b", C), pre);
    st->an_logs = ADD(TENSOR_PARAM, "%s/actnorm/logs", C), pre);
    switch (perm) {
    case PERM_INVCONV:
        st->w = ADD(TENSOR_PARAM, "%s/invconv/W", C, C), pre);
        break;
    case PERM_INVCONV_LU:
        st->l = ADD(TENSOR_PARAM, "%s/invconv/L", C, C), pre);
        st->u = ADD(TENSOR_PARAM, "%s/invconv/U", C, C), pre);
        st->log_s = ADD(TENSOR_PARAM, "%s/invconv/log_s", C), pre);
        st->perm = ADD(TENSOR_BUF_I32, "%s/invconv/P", C), pre);
        st->sign_s = ADD(TENSOR_BUF_F32, "%s/invconv/sign_s", C), pre);
        break;
    case PERM_SHUFFLE:
        st->perm = ADD(TENSOR_BUF_I32, "%s/shuffle/perm", C), pre);
        break;
    case PERM_REVERSE:
        st->perm = 0;  /* the shared reverse permutation, see glow_init */
        break;
    }
    st->nn[0] = ADD(TENSOR_PARAM, "%s/coupling/conv1/W", 3, 3, C / 2 + 1, W), pre);
    st->nn[1] = ADD(TENSOR_PARAM, "%s/coupling/actnorm1/b", W), pre);
    st->nn[2] = ADD(TENSOR_PARAM, "%s/coupling/actnorm1/logs", W), pre);
    st->nn[3] = ADD(TENSOR_PARAM, "%s/coupling/conv2/W", 1, 1, W, W), pre);
    st->nn[4] = ADD(TENSOR_PARAM, "%s/coupling/actnorm2/b", W), pre);
    st->nn[5] = ADD(TENSOR_PARAM, "%s/coupling/actnorm2/logs", W), pre);
    st->nn[6] = ADD(TENSOR_PARAM, "%s/coupling/conv3/W", 3, 3, W + 1, NO), pre);
    st->nn[7] = ADD(TENSOR_PARAM, "%s/coupling/conv3/b", NO), pre);
    st->nn[8] = ADD(TENSOR_PARAM, "%s/coupling/conv3/logs", NO), pre);
}

static struct nn_tensors nn_view(ft_real *base, const struct glow_step *st)
{
    return (struct nn_tensors){
        base + st->nn[0], base + st->nn[1], base + st->nn[2], base + st->nn[3],
        base + st->nn[4], base + st->nn[5], base + st->nn[6], base + st->nn[7],
        base + st->nn[8],
    };
}

/* ---------- init / free ---------- */

static int check_spec(const struct glow_spec *s, struct ft_err *err)
{
    if (s->levels < 1 || s->levels > 8) {
        ft_err_set(err, "model.levels: must be 1..8, got %zu", s->levels);
        return FT_ERR_CONFIG;
    }
    if (s->depth < 1 || s->depth > 999) {
        ft_err_set(err, "model.depth: must be 1..999, got %zu", s->depth);
        return FT_ERR_CONFIG;
    }
    if (s->hidden < 1) {
        ft_err_set(err, "model.width: must be >= 1, got %zu", s->hidden);
        return FT_ERR_CONFIG;
    }
    if (s->channels < 1) {
        ft_err_set(err, "data.channels: must be >= 1, got %zu", s->channels);
        return FT_ERR_CONFIG;
    }
    size_t f = (size_t)1 << s->levels;
    if (s->height == 0 || s->height % f != 0) {
        ft_err_set(err, "data.height: %zu is not divisible by 2^model.levels = %zu "
                   "(each level squeezes by 2)", s->height, f);
        return FT_ERR_CONFIG;
    }
    if (s->width == 0 || s->width % f != 0) {
        ft_err_set(err, "data.width: %zu is not divisible by 2^model.levels = %zu "
                   "(each level squeezes by 2)", s->width, f);
        return FT_ERR_CONFIG;
    }
    if (s->n_bits < 1 || s->n_bits > 8) {
        ft_err_set(err, "data.n_bits: must be 1..8, got %d", s->n_bits);
        return FT_ERR_CONFIG;
    }
    return FT_OK;
}

static void build_table(struct glow *g, struct builder *bd)
{
    const struct glow_spec *s = &g->spec;
    int kw = s->depth > 100 ? 3 : 2;
    for (size_t i = 0; i < s->levels; i++) {
        struct glow_level *lv = &g->lv[i];
        for (size_t k = 0; k < s->depth; k++) {
            size_t nout = s->coupling == COUPLING_AFFINE ? lv->c : lv->c / 2;
            build_step(bd, &lv->st[k], i, k, lv->c, s->hidden, nout, s->perm, kw);
        }
        int C = (int)lv->c;
        if (i + 1 < s->levels) {
            lv->sp_w = ADD(TENSOR_PARAM, "level%zu/split/conv/W", 3, 3, C / 2 + 1, C), i);
            lv->sp_b = ADD(TENSOR_PARAM, "level%zu/split/conv/b", C), i);
            lv->sp_logs = ADD(TENSOR_PARAM, "level%zu/split/conv/logs", C), i);
        } else if (s->learntop) {
            lv->sp_w = ADD(TENSOR_PARAM, "prior/conv/W", 3, 3, 2 * C + 1, 2 * C));
            lv->sp_b = ADD(TENSOR_PARAM, "prior/conv/b", 2 * C));
            lv->sp_logs = ADD(TENSOR_PARAM, "prior/conv/logs", 2 * C));
        }
    }
}

static void level_shapes(struct glow *g)
{
    const struct glow_spec *s = &g->spec;
    size_t eps_off = 0;
    for (size_t i = 0; i < s->levels; i++) {
        struct glow_level *lv = &g->lv[i];
        lv->h = s->height >> (i + 1);
        lv->w = s->width >> (i + 1);
        lv->c = 4 * s->channels << i;
        lv->eps_off = eps_off;
        eps_off += lv->h * lv->w * (i + 1 < s->levels ? lv->c / 2 : lv->c);
    }
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

size_t glow_param_count(const struct glow_spec *spec)
{
    struct glow g;
    memset(&g, 0, sizeof g);
    if (check_spec(spec, NULL) != FT_OK)
        return 0;
    g.spec = *spec;
    g.lv = ft_malloc(spec->levels * sizeof *g.lv);
    for (size_t i = 0; i < spec->levels; i++)
        g.lv[i].st = ft_malloc(spec->depth * sizeof *g.lv[i].st);
    level_shapes(&g);
    struct builder bd = { &g, 0 };
    build_table(&g, &bd);
    size_t n = 0;
    for (size_t t = 0; t < g.n_tensors; t++) {
        const struct glow_tensor *gt = &g.tensors[t];
        if (gt->kind != TENSOR_PARAM)
            continue;
        /* LU's L and U count only their free strict triangles (§12) */
        int tri = ends_with(gt->name, "/invconv/L") || ends_with(gt->name, "/invconv/U");
        n += tri ? (size_t)gt->shape[0] * (gt->shape[0] - 1) / 2 : gt->numel;
    }
    for (size_t i = 0; i < spec->levels; i++)
        free(g.lv[i].st);
    free(g.lv);
    free(g.tensors);
    return n;
}

/* A bump allocator over one arena, for the sizing pass and the real pass. */
struct bump {
    ft_real *base;
    size_t used;
};

static ft_real *take(struct bump *b, size_t n)
{
    ft_real *p = b->base ? b->base + b->used : NULL;
    b->used += (n + 15) / 16 * 16;
    return p;
}

static size_t maxz(size_t a, size_t b) { return a > b ? a : b; }

/* Work arena layout, shared by forward, backward and reverse. */
struct work_views {
    ft_real *cols, *dcols, *da, *dh, *dhs, *dbuf[2], *wmat, *wmat2, *eps_tmp, *zeros, *dht;
};

static size_t layout_acts(struct glow *g, ft_real *base)
{
    const struct glow_spec *s = &g->spec;
    const size_t n = g->batch_max, wd = s->hidden;
    struct bump b = { base, 0 };
    struct glow_step shared;
    memset(&shared, 0, sizeof shared);
    if (g->reversible) {
        size_t rows0 = n * g->lv[0].h * g->lv[0].w;  /* level 0 has the most rows */
        size_t cmax = 0;
        for (size_t i = 0; i < s->levels; i++)
            cmax = maxz(cmax, g->lv[i].h * g->lv[i].w * g->lv[i].c);
        shared.xa = take(&b, n * cmax);
        shared.acts.a1 = take(&b, rows0 * wd);
        shared.acts.a2 = take(&b, rows0 * wd);
        shared.acts.h = take(&b, n * cmax);
    }
    for (size_t i = 0; i < s->levels; i++) {
        struct glow_level *lv = &g->lv[i];
        size_t rows = n * lv->h * lv->w, nout = s->coupling == COUPLING_AFFINE ? lv->c : lv->c / 2;
        for (size_t k = 0; k <= s->depth; k++)
            lv->x[k] = (g->reversible && k >= 2) ? lv->x[k % 2] : take(&b, rows * lv->c);
        for (size_t k = 0; k < s->depth; k++) {
            struct glow_step *st = &lv->st[k];
            if (g->reversible) {
                st->xa = shared.xa;
                st->acts = shared.acts;
                continue;
            }
            st->xa = take(&b, rows * lv->c);
            st->acts.a1 = take(&b, rows * wd);
            st->acts.a2 = take(&b, rows * wd);
            st->acts.h = take(&b, rows * nout);
        }
        /* the last level's slot holds the top prior's h (one example) */
        lv->hs = i + 1 < s->levels ? take(&b, rows * lv->c) : take(&b, lv->h * lv->w * 2 * lv->c);
    }
    return b.used;
}

static size_t layout_work(const struct glow *g, ft_real *base, struct work_views *v)
{
    const struct glow_spec *s = &g->spec;
    const size_t n = g->batch_max, wd = s->hidden;
    size_t cols = 0, rc = 0, rw = 0, cmax = 0;
    for (size_t i = 0; i < s->levels; i++) {
        const struct glow_level *lv = &g->lv[i];
        size_t rows = n * lv->h * lv->w;
        size_t cin = maxz(lv->c / 2, wd);
        cols = maxz(cols, conv3x3_cols_size(n, lv->h, lv->w, cin));
        rc = maxz(rc, rows * lv->c);
        rw = maxz(rw, rows * wd);
        cmax = maxz(cmax, lv->c);
    }
    const struct glow_level *top = &g->lv[s->levels - 1];
    size_t ht = top->h * top->w * 2 * top->c;
    cols = maxz(cols, conv3x3_cols_size(1, top->h, top->w, 2 * top->c));
    struct bump b = { base, 0 };
    v->cols = take(&b, cols);
    v->dcols = take(&b, cols);
    v->da = take(&b, 2 * rw);
    v->dh = take(&b, rc);
    v->dhs = take(&b, rc);
    v->dbuf[0] = take(&b, rc);
    v->dbuf[1] = take(&b, rc);
    v->wmat = take(&b, cmax * cmax);
    v->wmat2 = take(&b, cmax * cmax);
    v->eps_tmp = take(&b, rc);
    v->zeros = take(&b, ht);
    v->dht = take(&b, ht);
    return b.used;
}

static struct work_views work_views(const struct glow *g)
{
    struct work_views v;
    layout_work(g, g->work, &v);
    return v;
}

int glow_init(struct glow *g, const struct glow_spec *spec, size_t batch_max,
              int reversible, struct ft_err *err)
{
    memset(g, 0, sizeof *g);
    int rc = check_spec(spec, err);
    if (rc != FT_OK)
        return rc;
    FT_CHECK(batch_max >= 1, "batch_max must be >= 1");
    g->spec = *spec;
    g->batch_max = batch_max;
    g->reversible = reversible;
    g->dim = spec->height * spec->width * spec->channels;
    g->lv = ft_malloc(spec->levels * sizeof *g->lv);
    for (size_t i = 0; i < spec->levels; i++) {
        g->lv[i].st = ft_malloc(spec->depth * sizeof *g->lv[i].st);
        g->lv[i].x = ft_malloc((spec->depth + 1) * sizeof *g->lv[i].x);
    }
    level_shapes(g);
    struct builder bd = { g, 0 };
    build_table(g, &bd);
    size_t cmax = g->lv[spec->levels - 1].c;
    if (spec->perm == PERM_REVERSE)   /* implied by the name, so not in the table */
        for (size_t i = 0; i < spec->levels; i++) {
            for (size_t k = 0; k < spec->depth; k++)
                g->lv[i].st[k].perm = g->n_ibufs;
            g->n_ibufs += (g->lv[i].c + 15) / 16 * 16;
        }
    g->params = ft_malloc_aligned(g->n_params * sizeof *g->params);
    g->grads = ft_malloc_aligned(g->n_params * sizeof *g->grads);
    g->fbufs = ft_malloc_aligned((g->n_fbufs + 1) * sizeof *g->fbufs);
    g->ibufs = ft_malloc_aligned((g->n_ibufs + 1) * sizeof *g->ibufs);
    if (spec->perm == PERM_REVERSE)
        for (size_t i = 0; i < spec->levels; i++)
            permute_init_reverse(g->ibufs + g->lv[i].st[0].perm, g->lv[i].c);

    g->n_acts = layout_acts(g, NULL);
    g->acts = ft_malloc_aligned(g->n_acts * sizeof *g->acts);
    layout_acts(g, g->acts);
    struct work_views v;
    g->n_work = layout_work(g, NULL, &v);
    g->work = ft_malloc_aligned(g->n_work * sizeof *g->work);
    g->n_dwork = invconv_work_size(cmax) + 2 * maxz(spec->hidden, 2 * cmax) + 1 + 4 * batch_max;
    g->dwork = ft_malloc_aligned(g->n_dwork * sizeof *g->dwork);
    g->ipiv = ft_malloc(cmax * sizeof *g->ipiv);
    g->dx = ft_malloc_aligned(batch_max * g->dim * sizeof *g->dx);
    g->eps = ft_malloc_aligned(batch_max * g->dim * sizeof *g->eps);
    g->logdet = ft_malloc(batch_max * sizeof *g->logdet);
    g->logp = ft_malloc(batch_max * sizeof *g->logp);
    return FT_OK;
}

void glow_free(struct glow *g)
{
    if (g->lv)
        for (size_t i = 0; i < g->spec.levels; i++) {
            free(g->lv[i].st);
            free(g->lv[i].x);
        }
    free(g->lv);
    free(g->tensors);
    free(g->params);
    free(g->grads);
    free(g->fbufs);
    free(g->ibufs);
    free(g->acts);
    free(g->work);
    free(g->dwork);
    free(g->ipiv);
    free(g->dx);
    free(g->eps);
    free(g->logdet);
    free(g->logp);
    memset(g, 0, sizeof *g);
}

const struct glow_tensor *glow_find(const struct glow *g, const char *name)
{
    for (size_t i = 0; i < g->n_tensors; i++)
        if (strcmp(g->tensors[i].name, name) == 0)
            return &g->tensors[i];
    return NULL;
}

void *glow_tensor_data(const struct glow *g, const struct glow_tensor *t)
{
    switch (t->kind) {
    case TENSOR_PARAM: return g->params + t->offset;
    case TENSOR_BUF_F32: return g->fbufs + t->offset;
    case TENSOR_BUF_I32: return g->ibufs + t->offset;
    }
    return NULL;
}

const ft_real *glow_actnorm_output(const struct glow *g, size_t level, size_t step)
{
    FT_CHECK(!g->reversible, "step activations are kept only in stored mode");
    FT_CHECK(level < g->spec.levels && step < g->spec.depth, "no step %zu/%zu", level, step);
    return g->lv[level].st[step].xa;
}

void glow_level_shape(const struct glow *g, size_t level, size_t *h, size_t *w, size_t *c)
{
    FT_CHECK(level < g->spec.levels, "no level %zu", level);
    *h = g->lv[level].h;
    *w = g->lv[level].w;
    *c = g->lv[level].c;
}

void glow_zero_grad(struct glow *g)
{
    memset(g->grads, 0, g->n_params * sizeof *g->grads);
}

/* ---------- parameter init ---------- */

static struct rng_key name_key(uint64_t seed, const char *name)
{
    return rng_key(seed, RNG_PARAM_INIT, rng_hash_str(name), 0);
}

void glow_init_params(struct glow *g, uint64_t seed)
{
    memset(g->params, 0, g->n_params * sizeof *g->params);
    double *work = g->dwork;
    for (size_t i = 0; i < g->n_tensors; i++) {
        const struct glow_tensor *t = &g->tensors[i];
        ft_real *p = g->params + t->offset;
        size_t c = (size_t)t->shape[0];
        if (ends_with(t->name, "/coupling/conv1/W") || ends_with(t->name, "/coupling/conv2/W")) {
            struct rng_key key = name_key(seed, t->name);
            for (size_t e = 0; e < t->numel; e++)
                p[e] = (ft_real)(0.05 * rng_normal(key, e));
        } else if (ends_with(t->name, "/invconv/W")) {
            invconv_init_qr(p, name_key(seed, t->name), c, work);
        } else if (ends_with(t->name, "/invconv/L")) {
            /* LU of the same QR draw the plain form would make (keyed by .../W) */
            char pre[64], wname[80];
            size_t pl = strlen(t->name) - 2;   /* "…/invconv" without "/L" */
            memcpy(pre, t->name, pl);
            pre[pl] = '\0';
            snprintf(wname, sizeof wname, "%s/W", pre);
            ft_real *w0 = g->work;  /* c·c scratch; the work arena is free here */
            invconv_init_qr(w0, name_key(seed, wname), c, work);
            char nm[4][80];
            const char *sfx[4] = { "U", "log_s", "P", "sign_s" };
            for (int j = 0; j < 4; j++)
                snprintf(nm[j], sizeof nm[j], "%s/%s", pre, sfx[j]);
            invconv_lu_init(glow_tensor_data(g, glow_find(g, nm[2])), p,
                            glow_tensor_data(g, glow_find(g, nm[0])),
                            glow_tensor_data(g, glow_find(g, nm[1])),
                            glow_tensor_data(g, glow_find(g, nm[3])), w0, c, work, g->ipiv);
        } else if (ends_with(t->name, "/shuffle/perm")) {
            permute_init_shuffle(g->ibufs + t->offset, name_key(seed, t->name), c);
        }
        /* everything else (actnorms before DDI, zero layers) stays 0 */
    }
}

/* ---------- forward ---------- */

static void permutation_setup(struct glow *g, const struct glow_step *st, size_t c,
                              double *ldet, ft_real *w, ft_real *winv, ft_real *wit)
{
    /* Sets *ldet and the matrices the current pass needs (NULL: not needed). */
    const struct glow_spec *s = &g->spec;
    *ldet = 0;
    if (s->perm == PERM_INVCONV) {
        int sing = invconv_prepare(ldet, winv, wit, g->params + st->w, c, g->dwork, g->ipiv);
        if (sing)
            *ldet = -INFINITY;  /* non-finite step: skipped by the training loop */
        if (w)
            memcpy(w, g->params + st->w, c * c * sizeof *w);
    } else if (s->perm == PERM_INVCONV_LU) {
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
                                   g->dwork + invconv_work_size(g->lv[g->spec.levels - 1].c) };
}

static void step_forward(struct glow *g, struct glow_level *lv, size_t k, size_t n,
                         const struct ddi *ddi, const struct work_views *v)
{
    struct glow_step *st = &lv->st[k];
    const size_t hw = lv->h * lv->w, c = lv->c, rows = n * hw;
    const ft_real *x = lv->x[k];
    ft_real *y = lv->x[k + 1];
    struct coupling_work wk = coupling_work_of(g, v);
    if (ddi)
        actnorm_ddi(g->params + st->an_b, g->params + st->an_logs, wk.acc, x, rows, c, ddi);
    actnorm_forward(st->xa, g->logdet, x, g->params + st->an_b, g->params + st->an_logs, n, hw, c);
    if (g->spec.perm == PERM_SHUFFLE || g->spec.perm == PERM_REVERSE) {
        permute_forward(y, st->xa, g->ibufs + st->perm, rows, c);
    } else {
        double ldet;
        permutation_setup(g, st, c, &ldet, v->wmat, NULL, NULL);
        invconv_forward(y, g->logdet, st->xa, v->wmat, ldet, n, hw, c);
    }
    struct nn_tensors p = nn_view(g->params, st);
    struct coupling_dims d = step_dims(g, lv, n);
    coupling_forward(y, g->logdet, &st->acts, &wk, &p, ddi, &d);
}

/* Scatters a level's contiguous ε (n, cnt) into the per-example (n, D) layout. */
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

/* h of the top prior (one example: it does not depend on the data). */
static void top_prior_h(struct glow *g, const struct work_views *v)
{
    struct glow_level *top = TOP(g);
    size_t ct = top->c, cnt = top->h * top->w * 2 * ct;
    if (!g->spec.learntop) {
        memset(top->hs, 0, cnt * sizeof *top->hs);
        return;
    }
    memset(v->zeros, 0, cnt * sizeof *v->zeros);
    zeroconv_forward(top->hs, v->cols, v->zeros, 2 * ct, g->params + top->sp_w,
                     g->params + top->sp_b, g->params + top->sp_logs, 1, top->h, top->w,
                     2 * ct, 2 * ct);
}

void glow_forward(struct glow *g, const ft_real *x, size_t n, const struct ddi *ddi)
{
    const struct glow_spec *s = &g->spec;
    FT_CHECK(n >= 1 && n <= g->batch_max, "batch %zu outside 1..%zu", n, g->batch_max);
    struct work_views v = work_views(g);
    g->n_fwd = n;
    memset(g->logdet, 0, n * sizeof *g->logdet);
    memset(g->logp, 0, n * sizeof *g->logp);
    squeeze_forward(g->lv[0].x[0], x, s->channels, n, s->height, s->width, s->channels);
    for (size_t i = 0; i < s->levels; i++) {
        struct glow_level *lv = &g->lv[i];
        const size_t hw = lv->h * lv->w, c = lv->c;
        for (size_t k = 0; k < s->depth; k++)
            step_forward(g, lv, k, n, ddi, &v);
        ft_real *z = lv->x[s->depth];
        if (i + 1 < s->levels) {
            struct prior_layout lay = prior_split_layout(c / 2);
            zeroconv_forward(lv->hs, v.cols, z, c, g->params + lv->sp_w, g->params + lv->sp_b,
                             g->params + lv->sp_logs, n, lv->h, lv->w, c / 2, c);
            gaussian_forward(g->logp, v.eps_tmp, z + c / 2, c, lv->hs, &lay, n, hw, c / 2);
            eps_scatter(g->eps, v.eps_tmp, n, g->dim, lv->eps_off, hw * c / 2);
            squeeze_forward(g->lv[i + 1].x[0], z, c, n, lv->h, lv->w, c / 2);
        } else {
            struct prior_layout lay = prior_top_layout(c);
            top_prior_h(g, &v);
            gaussian_forward(g->logp, v.eps_tmp, z, c, lv->hs, &lay, n, hw, c);
            eps_scatter(g->eps, v.eps_tmp, n, g->dim, lv->eps_off, hw * c);
        }
    }
}

double glow_nll(const struct glow *g, size_t i)
{
    FT_CHECK(i < g->n_fwd, "example %zu of a batch of %zu", i, g->n_fwd);
    double obj0 = -(double)g->dim * log((double)(1 << g->spec.n_bits));
    return -(obj0 + g->logdet[i] + g->logp[i]);
}

/* ---------- reverse ---------- */

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
    coupling_reverse(x, NULL, &st->acts, &wk, &p, &d);
    if (g->spec.perm == PERM_SHUFFLE || g->spec.perm == PERM_REVERSE) {
        permute_reverse(st->xa, x, g->ibufs + st->perm, rows, c);
    } else {
        double ldet;
        permutation_setup(g, st, c, &ldet, v->wmat, v->wmat2, NULL);
        invconv_reverse(st->xa, NULL, x, v->wmat2, ldet, n, hw, c);
    }
    actnorm_reverse(x, NULL, st->xa, g->params + st->an_b, g->params + st->an_logs, n, hw, c);
}

void glow_reverse(struct glow *g, ft_real *x, const ft_real *eps, size_t n, double temperature)
{
    const struct glow_spec *s = &g->spec;
    FT_CHECK(n >= 1 && n <= g->batch_max, "batch %zu outside 1..%zu", n, g->batch_max);
    struct work_views v = work_views(g);
    for (size_t i = s->levels; i-- > 0;) {
        struct glow_level *lv = &g->lv[i];
        const size_t hw = lv->h * lv->w, c = lv->c;
        ft_real *z = lv->x[s->depth];
        if (i + 1 == s->levels) {
            struct prior_layout lay = prior_top_layout(c);
            top_prior_h(g, &v);
            eps_gather(v.eps_tmp, eps, n, g->dim, lv->eps_off, hw * c);
            gaussian_sample(z, c, v.eps_tmp, temperature, lv->hs, &lay, n, hw, c);
        } else {
            struct prior_layout lay = prior_split_layout(c / 2);
            squeeze_reverse(z, c, g->lv[i + 1].x[0], n, lv->h, lv->w, c / 2);
            zeroconv_forward(lv->hs, v.cols, z, c, g->params + lv->sp_w, g->params + lv->sp_b,
                             g->params + lv->sp_logs, n, lv->h, lv->w, c / 2, c);
            eps_gather(v.eps_tmp, eps, n, g->dim, lv->eps_off, hw * c / 2);
            gaussian_sample(z + c / 2, c, v.eps_tmp, temperature, lv->hs, &lay, n, hw, c / 2);
        }
        for (size_t k = s->depth; k-- > 0;)
            step_reverse(g, lv, k, n, &v);
    }
    squeeze_reverse(x, s->channels, g->lv[0].x[0], n, s->height, s->width, s->channels);
}

/* ---------- backward ---------- */

static void grads_ready(const struct glow *g, size_t offset)
{
    if (g->grads_ready)
        g->grads_ready(g->grads_ready_ctx, offset);
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
    coupling_backward(dy, &gr, &wk, lv->x[k + 1], &st->acts, &p, gam, &d);
    switch (g->spec.perm) {
    case PERM_SHUFFLE:
    case PERM_REVERSE:
        permute_reverse(dx, dy, g->ibufs + st->perm, rows, c);
        break;
    case PERM_INVCONV: {
        double ldet;
        permutation_setup(g, st, c, &ldet, v->wmat, NULL, v->wmat2);
        invconv_backward(dx, g->grads + st->w, dy, st->xa, v->wmat, v->wmat2, gam, n, hw, c);
        break;
    }
    case PERM_INVCONV_LU: {
        double ldet;
        permutation_setup(g, st, c, &ldet, v->wmat, NULL, NULL);
        invconv_lu_backward(dx, g->grads + st->l, g->grads + st->u, g->grads + st->log_s, dy,
                            st->xa, v->wmat, g->ibufs + st->perm, g->params + st->l,
                            g->params + st->u, g->params + st->log_s, g->fbufs + st->sign_s,
                            gam, n, hw, c, g->dwork);
        break;
    }
    }
    actnorm_backward(dx, g->grads + st->an_b, g->grads + st->an_logs, wk.acc, dx, st->xa, gam,
                     g->params + st->an_logs, n, hw, c);
}

void glow_backward(struct glow *g, double gamma)
{
    const struct glow_spec *s = &g->spec;
    const size_t n = g->n_fwd;
    FT_CHECK(n >= 1, "glow_backward before glow_forward");
    struct work_views v = work_views(g);
    double *gam = g->dwork + g->n_dwork - 4 * g->batch_max;
    double *acc = coupling_work_of(g, &v).acc;
    for (size_t e = 0; e < n; e++)
        gam[e] = gamma;
    int cur = 0;
    for (size_t i = s->levels; i-- > 0;) {
        struct glow_level *lv = &g->lv[i];
        const size_t hw = lv->h * lv->w, c = lv->c;
        ft_real *z = lv->x[s->depth];
        if (i + 1 == s->levels) {
            struct glow_level *top = lv;
            size_t cnt = hw * 2 * c;
            struct prior_layout lay = prior_top_layout(c);
            memset(v.dht, 0, cnt * sizeof *v.dht);
            gaussian_backward(v.dbuf[cur], c, v.dht, z, c, top->hs, &lay, gam, n, hw, c);
            if (s->learntop) {
                memset(v.zeros, 0, cnt * sizeof *v.zeros);
                zeroconv_backward(NULL, 0, g->grads + top->sp_w, g->grads + top->sp_b,
                                  g->grads + top->sp_logs, v.cols, NULL, acc, v.dht, top->hs,
                                  v.zeros, 2 * c, g->params + top->sp_w,
                                  g->params + top->sp_logs, 1, lv->h, lv->w, 2 * c, 2 * c);
                grads_ready(g, top->sp_w);
            }
        } else {
            /* dbuf[cur] holds the gradient at level i+1's input: unsqueeze it into
             * the kept half z1, then add the split prior's paths. */
            ft_real *dz = v.dbuf[1 - cur];
            struct prior_layout lay = prior_split_layout(c / 2);
            squeeze_reverse(dz, c, v.dbuf[cur], n, lv->h, lv->w, c / 2);
            gaussian_backward(dz + c / 2, c, v.dhs, z + c / 2, c, lv->hs, &lay, gam, n, hw, c / 2);
            zeroconv_backward(dz, c, g->grads + lv->sp_w, g->grads + lv->sp_b,
                              g->grads + lv->sp_logs, v.cols, v.dcols, acc, v.dhs, lv->hs, z, c,
                              g->params + lv->sp_w, g->params + lv->sp_logs, n, lv->h, lv->w,
                              c / 2, c);
            grads_ready(g, lv->sp_w);
            cur = 1 - cur;
        }
        for (size_t k = s->depth; k-- > 0;) {
            if (g->reversible)
                step_reverse(g, lv, k, n, &v);
            step_backward(g, lv, k, n, v.dbuf[cur], v.dbuf[1 - cur], gam, &v);
            grads_ready(g, lv->st[k].an_b);
            cur = 1 - cur;
        }
    }
    squeeze_reverse(g->dx, s->channels, v.dbuf[cur], n, s->height, s->width, s->channels);
}
