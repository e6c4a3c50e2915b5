/* The glow module's structure (glow-model.md §4, §8, §9, §12): the stage plan
 * of each architecture, the tensor table in §12's names and order (stage by
 * stage, step by step, then its split; NICE's scale, the top prior, y_emb and
 * the classifier last), the arenas sized once, and the parameter init. The
 * passes over this structure are in glow.c. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conv2d.h"
#include "glow_impl.h"
#include "invconv.h"
#include "permute.h"
#include "rng.h"

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

static void build_step(struct builder *bd, struct glow_step *st, const struct glow_level *lv,
                       size_t k, size_t wd, int kw)
{
    const int C = (int)lv->c, W = (int)wd, NO = (int)st->nout, CI = (int)st->cin;
    char pre[64];
    snprintf(pre, sizeof pre, "level%u/%s%0*u", lv->name, lv->word, kw, (unsigned)k);
    st->first = bd->g->n_params;
    if (st->actnorm) {
        st->an_b = ADD(TENSOR_PARAM, "%s/actnorm/b", C), pre);
        st->an_logs = ADD(TENSOR_PARAM, "%s/actnorm/logs", C), pre);
    }
    switch (st->permute ? st->pk : PERM_REVERSE) {
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
    st->nn[0] = ADD(TENSOR_PARAM, "%s/coupling/conv1/W", 3, 3, CI + 1, W), pre);
    st->nn[1] = ADD(TENSOR_PARAM, "%s/coupling/actnorm1/b", W), pre);
    st->nn[2] = ADD(TENSOR_PARAM, "%s/coupling/actnorm1/logs", W), pre);
    st->nn[3] = ADD(TENSOR_PARAM, "%s/coupling/conv2/W", 1, 1, W, W), pre);
    st->nn[4] = ADD(TENSOR_PARAM, "%s/coupling/actnorm2/b", W), pre);
    st->nn[5] = ADD(TENSOR_PARAM, "%s/coupling/actnorm2/logs", W), pre);
    st->nn[6] = ADD(TENSOR_PARAM, "%s/coupling/conv3/W", 3, 3, W + 1, NO), pre);
    st->nn[7] = ADD(TENSOR_PARAM, "%s/coupling/conv3/b", NO), pre);
    st->nn[8] = ADD(TENSOR_PARAM, "%s/coupling/conv3/logs", NO), pre);
}

static void build_top(struct builder *bd, struct glow_level *lv)
{
    const struct glow_spec *s = &bd->g->spec;
    const int C = (int)lv->c, NY = (int)s->n_classes;
    if (lv->has_scale)
        lv->scale_s = ADD(TENSOR_PARAM, "level%u/scale/S", (int)lv->h, (int)lv->w, C), lv->name);
    size_t before = bd->g->n_params;
    if (s->learntop) {
        lv->sp_w = ADD(TENSOR_PARAM, "prior/conv/W", 3, 3, 2 * C + 1, 2 * C));
        lv->sp_b = ADD(TENSOR_PARAM, "prior/conv/b", 2 * C));
        lv->sp_logs = ADD(TENSOR_PARAM, "prior/conv/logs", 2 * C));
    }
    if (s->ycond) {
        lv->y_w = ADD(TENSOR_PARAM, "prior/y_emb/W", NY, 2 * C));
        lv->y_b = ADD(TENSOR_PARAM, "prior/y_emb/b", 2 * C));
        lv->y_logs = ADD(TENSOR_PARAM, "prior/y_emb/logs", 2 * C));
    }
    if (s->weight_y > 0) {
        lv->c_w = ADD(TENSOR_PARAM, "classifier/W", C, NY));
        lv->c_b = ADD(TENSOR_PARAM, "classifier/b", NY));
        lv->c_logs = ADD(TENSOR_PARAM, "classifier/logs", NY));
    }
    lv->top_first = bd->g->n_params > before ? before : SIZE_MAX;
}

static void build_table(struct glow *g, struct builder *bd)
{
    const struct glow_spec *s = &g->spec;
    for (size_t i = 0; i < g->n_levels; i++) {
        struct glow_level *lv = &g->lv[i];
        int kw = lv->n_steps > 100 ? 3 : 2;
        for (size_t k = 0; k < lv->n_steps; k++)
            build_step(bd, &lv->st[k], lv, k, s->hidden, kw);
        int C = (int)lv->c;
        if (lv->split) {
            lv->sp_w = ADD(TENSOR_PARAM, "level%u/split/conv/W", 3, 3, C / 2 + 1, C), lv->name);
            lv->sp_b = ADD(TENSOR_PARAM, "level%u/split/conv/b", C), lv->name);
            lv->sp_logs = ADD(TENSOR_PARAM, "level%u/split/conv/logs", C), lv->name);
        } else if (i + 1 == g->n_levels) {
            build_top(bd, lv);
        }
    }
}

/* ---------- the stage plan ---------- */

static int bad(struct ft_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int bad(struct ft_err *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return FT_ERR_CONFIG;
}

static size_t n_squeezes(const struct glow_spec *s)
{
    return s->arch == ARCH_GLOW ? s->levels : s->arch == ARCH_REALNVP ? s->levels - 1 : 1;
}

static int check_spec(const struct glow_spec *s, struct ft_err *err)
{
    if ((unsigned)s->arch > ARCH_NICE)
        return bad(err, "model.arch: unknown architecture %d (glow, realnvp, nice)", (int)s->arch);
    if (s->levels < 1 || s->levels > 8)
        return bad(err, "model.levels: must be 1..8, got %zu", s->levels);
    if (s->depth < 1 || s->depth > 999)
        return bad(err, "model.depth: must be 1..999, got %zu", s->depth);
    if (s->hidden < 1)
        return bad(err, "model.width: must be >= 1, got %zu", s->hidden);
    if (s->channels < 1)
        return bad(err, "data.channels: must be >= 1, got %zu", s->channels);
    if (s->arch == ARCH_NICE && s->levels != 1)
        return bad(err, "model.levels: arch nice has one level, got %zu", s->levels);
    if (s->arch == ARCH_NICE && s->coupling != COUPLING_ADDITIVE)
        return bad(err, "model.coupling: arch nice uses additive coupling");
    size_t f = (size_t)1 << n_squeezes(s);
    const char *why = s->arch == ARCH_GLOW ? "each level squeezes by 2"
                    : s->arch == ARCH_REALNVP ? "arch realnvp squeezes model.levels-1 times"
                                              : "arch nice squeezes once";
    if (s->height == 0 || s->height % f != 0)
        return bad(err, "data.height: %zu is not divisible by %s = %zu (%s)", s->height,
                   s->arch == ARCH_GLOW ? "2^model.levels" : "2^squeezes", f, why);
    if (s->width == 0 || s->width % f != 0)
        return bad(err, "data.width: %zu is not divisible by %s = %zu (%s)", s->width,
                   s->arch == ARCH_GLOW ? "2^model.levels" : "2^squeezes", f, why);
    if (s->arch == ARCH_REALNVP && (s->height / f) * (s->width / f) < 2)
        return bad(err, "model.levels: realnvp's last scale is %zux%zu, and a checkerboard mask "
                   "needs at least 2 pixels (fewer levels or a larger image)",
                   s->height / f, s->width / f);
    if (s->n_bits < 1 || s->n_bits > 8)
        return bad(err, "data.n_bits: must be 1..8, got %d", s->n_bits);
    if (!(s->weight_y >= 0) || !isfinite(s->weight_y))
        return bad(err, "model.weight_y: must be >= 0, got %g", s->weight_y);
    if ((s->ycond || s->weight_y > 0) && (s->n_classes < 2 || s->n_classes > 65536))
        return bad(err, "data.n_classes: model.ycond and model.weight_y need 2..65536 classes, "
                   "got %zu", s->n_classes);
    return FT_OK;
}

static void set_step(struct glow_step *st, const struct glow_spec *s, size_t c, int actnorm,
                     int permute, enum perm_kind pk, enum mask_kind mask)
{
    memset(st, 0, sizeof *st);
    st->actnorm = actnorm;
    st->permute = permute;
    st->pk = pk;
    st->mask = mask;
    struct coupling_dims d = { 1, 1, 1, c, s->hidden, s->coupling, s->scale };
    st->cin = masked_cin(mask, c);
    st->nout = masked_nout(mask, &d);
}

/* Allocates g->lv (and each stage's steps) and fills shapes, kinds and ε offsets. */
static void plan(struct glow *g)
{
    const struct glow_spec *s = &g->spec;
    static const enum mask_kind chan[3] = { MASK_CHANNEL_FIRST, MASK_CHANNEL_SECOND,
                                            MASK_CHANNEL_FIRST };
    g->n_levels = s->arch == ARCH_REALNVP ? 2 * s->levels - 1 : s->arch == ARCH_NICE ? 1 : s->levels;
    g->lv = ft_malloc(g->n_levels * sizeof *g->lv);
    size_t h = s->height, w = s->width, c = s->channels, eps_off = 0;
    for (size_t i = 0; i < g->n_levels; i++) {
        struct glow_level *lv = &g->lv[i];
        int last = i + 1 == g->n_levels;
        lv->word = "step";
        lv->name = (unsigned)i;
        lv->n_steps = s->depth;
        if (s->arch == ARCH_GLOW) {
            lv->squeeze_in = 1;
            lv->split = !last;
        } else if (s->arch == ARCH_NICE) {
            lv->squeeze_in = 1;
            lv->has_scale = 1;
        } else {   /* realnvp: even stages checkerboard, odd ones channel + split */
            lv->name = (unsigned)(i / 2);
            lv->squeeze_in = lv->split = i % 2;
            lv->word = i % 2 ? "channel" : "checker";
            lv->n_steps = i % 2 ? 3 : last ? 4 : 3;
        }
        if (lv->squeeze_in) {
            h /= 2;
            w /= 2;
            c *= 4;
        }
        lv->h = h;
        lv->w = w;
        lv->c = c;
        lv->st = ft_malloc(lv->n_steps * sizeof *lv->st);
        for (size_t k = 0; k < lv->n_steps; k++) {
            struct glow_step *st = &lv->st[k];
            if (s->arch == ARCH_GLOW)
                set_step(st, s, c, 1, 1, s->perm, MASK_CHANNEL_FIRST);
            else if (s->arch == ARCH_NICE)
                set_step(st, s, c, 0, 1, PERM_REVERSE, MASK_CHANNEL_FIRST);
            else if (i % 2)
                set_step(st, s, c, 1, 0, PERM_REVERSE, chan[k]);
            else
                set_step(st, s, c, 1, 0, PERM_REVERSE, k % 2 ? MASK_CHECKER1 : MASK_CHECKER0);
            FT_CHECK(masked_is_checker(st->mask) || c % 2 == 0,
                     "stage %zu: a channel coupling needs even C, got %zu", i, c);
        }
        lv->eps_off = eps_off;
        lv->top_first = SIZE_MAX;
        eps_off += h * w * (lv->split ? c / 2 : last ? c : 0);
        if (lv->split)
            c /= 2;
    }
    FT_CHECK(eps_off == s->height * s->width * s->channels, "latents %zu != D", eps_off);
}

static void free_plan(struct glow *g)
{
    if (g->lv)
        for (size_t i = 0; i < g->n_levels; i++) {
            free(g->lv[i].st);
            free(g->lv[i].x);
        }
    free(g->lv);
    g->lv = NULL;
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
    g.spec.learntop = spec->learntop && spec->arch != ARCH_NICE;   /* NICE: N(0, I) */
    plan(&g);
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
    free_plan(&g);
    free(g.tensors);
    return n;
}

/* ---------- arenas ---------- */

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

/* Largest per-batch sizes over all stages and steps. */
struct maxima {
    size_t rc, rn, rows, cmax, ckr;   /* rows·c, rows·nout, rows, C, checker rows·c */
    size_t cols, dcols;               /* conv workspaces */
};

/* Every 3x3 conv of the model passes here with its dims. */
static void conv_need(struct maxima *m, size_t n, size_t h, size_t w, size_t cin, size_t cout)
{
    m->cols = maxz(m->cols, conv3x3_work_size(n, h, w, cin, cout));
    m->dcols = maxz(m->dcols, conv3x3_dwork_size(n, h, w, cin, cout));
}

static struct maxima maxima(const struct glow *g, size_t n)
{
    struct maxima m = { 0, 0, 0, 0, 0, 0, 0 };
    const size_t wd = g->spec.hidden;
    for (size_t i = 0; i < g->n_levels; i++) {
        const struct glow_level *lv = &g->lv[i];
        size_t rows = n * lv->h * lv->w;
        m.rc = maxz(m.rc, rows * lv->c);
        m.rows = maxz(m.rows, rows);
        m.cmax = maxz(m.cmax, lv->c);
        if (lv->split)
            conv_need(&m, n, lv->h, lv->w, lv->c / 2, lv->c);
        for (size_t k = 0; k < lv->n_steps; k++) {
            const struct glow_step *st = &lv->st[k];
            m.rn = maxz(m.rn, rows * st->nout);
            conv_need(&m, n, lv->h, lv->w, st->cin, wd);
            conv_need(&m, n, lv->h, lv->w, wd, st->nout);
            if (masked_is_checker(st->mask))
                m.ckr = maxz(m.ckr, rows * lv->c);
        }
    }
    return m;
}

static size_t layout_acts(struct glow *g, ft_real *base)
{
    const size_t n = g->batch_max, wd = g->spec.hidden;
    const struct maxima m = maxima(g, n);
    struct bump b = { base, 0 };
    struct glow_step shared;
    memset(&shared, 0, sizeof shared);
    /* Reversible: one step's activations, rebuilt step by step in backward.
     * Stored: every step keeps xa, a2 and h, and a1 too unless conv1 costs at
     * most 1/8 of conv2 (9·(cin+1) ≤ width/8): then backward recomputes a1 from
     * the step's output, which halves the hidden activations kept for about 3%
     * more time (measured on config L; on S, where the rule keeps a1, it would
     * cost 9%). */
    int have_a1 = g->reversible;
    if (g->reversible) {
        shared.acts.a1 = take(&b, m.rows * wd);
        shared.xa = take(&b, m.rc);
        shared.acts.a2 = take(&b, m.rows * wd);
        shared.acts.h = take(&b, m.rn);
    }
    for (size_t i = 0; i < g->n_levels; i++) {
        struct glow_level *lv = &g->lv[i];
        size_t rows = n * lv->h * lv->w;
        for (size_t k = 0; k <= lv->n_steps; k++)
            lv->x[k] = (g->reversible && k >= 2) ? lv->x[k % 2] : take(&b, rows * lv->c);
        for (size_t k = 0; k < lv->n_steps; k++) {
            struct glow_step *st = &lv->st[k];
            if (g->reversible) {
                st->xa = shared.xa;
                st->acts = shared.acts;
                continue;
            }
            st->xa = take(&b, rows * lv->c);
            st->acts.rebuild_a1 = 72 * (st->cin + 1) <= wd;
            if (st->acts.rebuild_a1 && !have_a1) {
                shared.acts.a1 = take(&b, m.rows * wd);
                have_a1 = 1;
            }
            st->acts.a1 = st->acts.rebuild_a1 ? shared.acts.a1 : take(&b, rows * wd);
            st->acts.a2 = take(&b, rows * wd);
            st->acts.h = take(&b, rows * st->nout);
        }
        lv->z = lv->x[lv->n_steps];
        if (lv->split) {
            lv->hs = take(&b, rows * lv->c);
            continue;
        }
        if (i + 1 < g->n_levels)
            continue;
        /* the top prior's h (one example), and its per-example form with ycond */
        lv->hs = take(&b, lv->h * lv->w * 2 * lv->c);
        if (g->spec.ycond)
            lv->hy = take(&b, rows * 2 * lv->c);
        if (lv->has_scale)
            lv->z = lv->zs = take(&b, rows * lv->c);
    }
    return b.used;
}

static size_t layout_work(const struct glow *g, ft_real *base, struct work_views *v)
{
    const size_t n = g->batch_max, wd = g->spec.hidden;
    const struct glow_level *top = &g->lv[g->n_levels - 1];
    size_t ht = top->h * top->w * 2 * top->c;
    struct maxima m = maxima(g, n);
    conv_need(&m, 1, top->h, top->w, 2 * top->c, 2 * top->c);   /* learnt top prior */
    struct bump b = { base, 0 };
    v->cols = take(&b, m.cols);
    v->dcols = take(&b, m.dcols);
    v->da = take(&b, 2 * m.rows * wd);
    v->dh = take(&b, maxz(m.rn, m.rc));
    v->dhs = take(&b, m.rc);
    v->dbuf[0] = take(&b, m.rc);
    v->dbuf[1] = take(&b, m.rc);
    v->wmat = take(&b, m.cmax * m.cmax);
    v->wmat2 = take(&b, m.cmax * m.cmax);
    v->eps_tmp = take(&b, m.rc);
    v->zeros = take(&b, ht);
    v->dht = take(&b, g->spec.ycond ? n * ht : ht);
    v->dh0 = take(&b, ht);
    v->xb = take(&b, m.ckr);
    v->dxb = take(&b, m.ckr);
    return b.used;
}

struct work_views glow_work_views(const struct glow *g)
{
    struct work_views v;
    layout_work(g, g->work, &v);
    return v;
}

static size_t cmax_of(const struct glow *g)
{
    size_t c = 0;
    for (size_t i = 0; i < g->n_levels; i++)
        c = maxz(c, g->lv[i].c);
    return c;
}

size_t glow_acc_offset(const struct glow *g)
{
    return invconv_work_size(cmax_of(g));
}

size_t glow_parts_offset(const struct glow *g)
{
    return glow_acc_offset(g) + 2 * maxz(g->spec.hidden, 2 * cmax_of(g)) + 1;
}

size_t glow_parts_len(const struct glow *g)
{
    size_t len = 0;
    for (size_t i = 0; i < g->n_levels; i++)
        len = maxz(len, coupling_parts_size(g->batch_max * g->lv[i].h * g->lv[i].w,
                                            g->spec.hidden));
    return len;
}

/* dwork: invconv work | coupling acc | coupling parts | classifier, embedding
 * and scale | γ (4·N). */
static size_t layout_dwork(struct glow *g)
{
    const struct glow_spec *s = &g->spec;
    const size_t n = g->batch_max;
    struct glow_level *top = &g->lv[g->n_levels - 1];
    const size_t ct = top->c, ny = s->n_classes, hw = top->h * top->w;
    size_t off = glow_parts_offset(g) + glow_parts_len(g);
    size_t feat = off, logit = feat + n * ct, u = logit + n * ny, acc = u + n;
    size_t nacc = maxz(maxz((ny + 3) * 2 * ct, (ct + 2) * ny + ct), hw * ct);
    size_t total = acc + nacc + 4 * n;
    if (g->dwork) {
        top->feat = g->dwork + feat;
        top->logit = g->dwork + logit;
        top->u = g->dwork + u;
        top->yacc = g->dwork + acc;
    }
    return total;
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
    g->spec.learntop = spec->learntop && spec->arch != ARCH_NICE;   /* NICE: N(0, I) */
    g->batch_max = batch_max;
    g->reversible = reversible;
    g->dim = spec->height * spec->width * spec->channels;
    plan(g);
    for (size_t i = 0; i < g->n_levels; i++)
        g->lv[i].x = ft_malloc((g->lv[i].n_steps + 1) * sizeof *g->lv[i].x);
    struct builder bd = { g, 0 };
    build_table(g, &bd);
    /* The reverse permutation is implied by the name, so it is not in the table:
     * one shared array per stage that uses it. */
    size_t rev_off[16];
    FT_CHECK(g->n_levels <= 16, "too many stages");
    for (size_t i = 0; i < g->n_levels; i++) {
        struct glow_level *lv = &g->lv[i];
        rev_off[i] = SIZE_MAX;
        for (size_t k = 0; k < lv->n_steps; k++)
            if (lv->st[k].permute && lv->st[k].pk == PERM_REVERSE) {
                if (rev_off[i] == SIZE_MAX) {
                    rev_off[i] = g->n_ibufs;
                    g->n_ibufs += (lv->c + 15) / 16 * 16;
                }
                lv->st[k].perm = rev_off[i];
            }
    }
    g->params = ft_malloc_aligned(g->n_params * sizeof *g->params);
    g->grads = ft_malloc_aligned(g->n_params * sizeof *g->grads);
    g->fbufs = ft_malloc_aligned((g->n_fbufs + 1) * sizeof *g->fbufs);
    g->ibufs = ft_malloc_aligned((g->n_ibufs + 1) * sizeof *g->ibufs);
    for (size_t i = 0; i < g->n_levels; i++)
        if (rev_off[i] != SIZE_MAX)
            permute_init_reverse(g->ibufs + rev_off[i], g->lv[i].c);

    g->n_acts = layout_acts(g, NULL);
    g->acts = ft_malloc_aligned(g->n_acts * sizeof *g->acts);
    layout_acts(g, g->acts);
    struct work_views v;
    g->n_work = layout_work(g, NULL, &v);
    g->work = ft_malloc_aligned(g->n_work * sizeof *g->work);
    g->n_dwork = layout_dwork(g);
    g->dwork = ft_malloc_aligned(g->n_dwork * sizeof *g->dwork);
    layout_dwork(g);
    g->ipiv = ft_malloc(cmax_of(g) * sizeof *g->ipiv);
    g->dx = ft_malloc_aligned(batch_max * g->dim * sizeof *g->dx);
    g->eps = ft_malloc_aligned(batch_max * g->dim * sizeof *g->eps);
    g->logdet = ft_malloc(batch_max * sizeof *g->logdet);
    g->logp = ft_malloc(batch_max * sizeof *g->logp);
    g->bits_y = ft_malloc(batch_max * sizeof *g->bits_y);
    g->pred_y = ft_malloc(batch_max * sizeof *g->pred_y);
    g->lv[g->n_levels - 1].ylab = ft_malloc(batch_max * sizeof(int32_t));
    return FT_OK;
}

void glow_free(struct glow *g)
{
    if (g->lv)
        free(g->lv[g->n_levels - 1].ylab);
    free_plan(g);
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
    free(g->bits_y);
    free(g->pred_y);
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
    FT_CHECK(level < g->n_levels && step < g->lv[level].n_steps, "no step %zu/%zu", level, step);
    FT_CHECK(g->lv[level].st[step].actnorm, "step %zu/%zu has no actnorm", level, step);
    return g->lv[level].st[step].xa;
}

const ft_real *glow_stage_input(const struct glow *g, size_t level)
{
    FT_CHECK(level < g->n_levels, "no level %zu", level);
    return g->lv[level].x[0];
}

void glow_level_shape(const struct glow *g, size_t level, size_t *h, size_t *w, size_t *c)
{
    FT_CHECK(level < g->n_levels, "no level %zu", level);
    *h = g->lv[level].h;
    *w = g->lv[level].w;
    *c = g->lv[level].c;
}

size_t glow_level_steps(const struct glow *g, size_t level)
{
    FT_CHECK(level < g->n_levels, "no level %zu", level);
    return g->lv[level].n_steps;
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
        /* everything else (actnorms before DDI, zero layers, S, y_emb,
         * classifier) stays 0 */
    }
}
