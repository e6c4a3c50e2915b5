/* A checkpoint's model for the tools (include/tool_model.h): stored config →
 * Glow → parameters, or the EMA weights ema/(1−β^t) with β resolved exactly as
 * src/train.c does (β2 = 1 − 1/⌊N_train/B⌋ when train.beta2 is 0; β = β2 when
 * train.ema_beta is 0); bin-centre encoding u = 1/(2·n_bins) and decoding at
 * T = 1 (glow-model.md §10). */
#include "tool_model.h"

#include <stdlib.h>
#include <string.h>

#include "optim.h"
#include "preprocess.h"

static int file_has_ema(const struct ckpt_info *info)
{
    for (size_t i = 0; i < info->n_entries; i++)
        if (!strncmp(info->entries[i].name, "ema/", 4))
            return 1;
    return 0;
}

int tool_model_open(struct tool_model *m, const char *path, struct ft_err *err)
{
    struct ckpt_info info;
    struct ft_err e;
    int rc;

    memset(m, 0, sizeof *m);
    m->path = path;
    rc = checkpoint_inspect(path, &info, err);
    if (rc != FT_OK)
        return rc;
    rc = config_load_string(&m->cfg, info.config, strlen(info.config), "stored config", &e);
    if (rc != FT_OK) {
        ft_err_set(err, "%s: the stored config does not load (%s)", path, e.msg);
        rc = FT_ERR_CONFIG;
    }
    m->st = info.state;
    m->file_ema = file_has_ema(&info);
    checkpoint_info_free(&info);
    return rc;
}

int tool_model_build(struct tool_model *m, size_t batch_max, struct ft_err *err)
{
    struct glow_spec spec;
    struct ft_err e;

    FT_CHECK(!m->has_g, "the model of %s is already built", m->path);
    config_glow_spec(&m->cfg, &spec);
    if (glow_init(&m->g, &spec, batch_max, m->cfg.model.memory == MEMORY_REVERSIBLE, &e) != FT_OK) {
        ft_err_set(err, "%s: cannot build the stored model (%s)", m->path, e.msg);
        return FT_ERR_CONFIG;
    }
    m->has_g = 1;
    return FT_OK;
}

/* β of the EMA as src/train.c resolves it. */
static int resolve_ema_beta(const struct tool_model *m, double *beta, struct ft_err *err)
{
    const struct config *cfg = &m->cfg;
    const struct config_train *ct = &cfg->train;
    struct dataset ds;
    struct ft_err e;

    if (ct->ema_beta > 0) {
        *beta = ct->ema_beta;
        return FT_OK;
    }
    if (ct->beta2 > 0) {
        *beta = ct->beta2;
        return FT_OK;
    }
    memset(&ds, 0, sizeof ds);
    if (dataset_open(&ds, cfg->data.train, cfg->data.height, cfg->data.width, cfg->data.channels,
                     &e) != FT_OK) {
        ft_err_set(err, "%s: the EMA beta is auto (train.ema_beta and train.beta2 are 0: "
                   "1 - 1/steps per epoch) and counting the training set failed (%s); "
                   "pass --ema-beta B or --no-ema", m->path, e.msg);
        return FT_ERR_DATA;
    }
    const size_t steps = ds.n / ct->batch;
    dataset_close(&ds);
    if (steps == 0) {
        ft_err_set(err, "%s: the training set %s has fewer images than one batch (train.batch %u), "
                   "so the auto EMA beta is undefined; pass --ema-beta B or --no-ema", m->path,
                   cfg->data.train, ct->batch);
        return FT_ERR_DATA;
    }
    *beta = 1.0 - 1.0 / (double)steps;
    return FT_OK;
}

int tool_model_load(struct tool_model *m, enum tool_weights weights, double ema_beta,
                    struct ft_err *err)
{
    struct optim o;
    int rc, has_o = 0;
    const struct config_train *ct = &m->cfg.train;

    FT_CHECK(m->has_g, "tool_model_load before tool_model_build");
    const int use_ema = weights == TOOL_WEIGHTS_EMA
                        || (weights == TOOL_WEIGHTS_AUTO && ct->ema && m->st.opt_t > 0);
    if (weights == TOOL_WEIGHTS_EMA && !m->file_ema) {
        ft_err_set(err, "%s: has no EMA weights (no ema/ datasets; train.ema was %s)", m->path,
                   ct->ema ? "on, but none were saved" : "off");
        return FT_ERR_CONFIG;
    }
    if (use_ema && m->st.opt_t == 0) {
        ft_err_set(err, "%s: no optimizer update was applied yet, so there are no EMA weights "
                   "(use --no-ema)", m->path);
        return FT_ERR_CONFIG;
    }
    double beta = ema_beta;
    if (use_ema && !(beta > 0)) {
        rc = resolve_ema_beta(m, &beta, err);
        if (rc != FT_OK)
            return rc;
    }
    if (use_ema) {
        optim_init(&o, ct->optimizer, m->g.n_params, ct->lr, ct->beta1, ct->beta2, ct->clip_norm, 1,
                   beta);
        has_o = 1;
    }
    rc = checkpoint_load(m->path, &m->cfg, &m->g, has_o ? &o : NULL, NULL, NULL, err);
    if (rc == FT_OK && use_ema) {
#ifdef FT_REAL_DOUBLE   /* the optimizer's state is float32 in every build */
        float *w = ft_malloc(m->g.n_params * sizeof *w);
        optim_ema_weights(&o, w);
        for (size_t i = 0; i < m->g.n_params; i++)
            m->g.params[i] = w[i];
        free(w);
#else
        optim_ema_weights(&o, m->g.params);
#endif
        m->ema = 1;
        m->ema_beta = beta;
    }
    if (has_o)
        optim_free(&o);
    return rc;
}

void tool_model_free(struct tool_model *m)
{
    if (m->has_g)
        glow_free(&m->g);
    m->has_g = 0;
}

int tool_model_open_data(const struct config *cfg, struct dataset *ds, const char *path,
                         struct ft_err *err)
{
    const struct config_data *cd = &cfg->data;
    memset(ds, 0, sizeof *ds);
    int rc = dataset_open(ds, path, 0, 0, 0, err);
    if (rc != FT_OK)
        return rc;
    if (ds->h != cd->height || ds->w != cd->width || ds->c != cd->channels) {
        ft_err_set(err, "%s: images are %zux%zux%zu (HxWxC) but the checkpoint's model takes "
                   "%ux%ux%u (data.height, data.width, data.channels)", path, ds->h, ds->w, ds->c,
                   cd->height, cd->width, cd->channels);
        dataset_close(ds);
        return FT_ERR_DATA;
    }
    return FT_OK;
}

void tool_model_encode(struct tool_model *m, ft_real *e, ft_real *x, const uint8_t *imgs,
                       size_t n)
{
    const struct config_data *cd = &m->cfg.data;
    const size_t dim = m->g.dim;
    double *obj0 = ft_malloc(n * sizeof *obj0);
    preprocess_batch(x, obj0, imgs, NULL, n, dim, (int)cd->n_bits, cd->preprocess,
                     cd->logit_alpha, 0, 0, 1);
    glow_forward(&m->g, x, n, NULL);
    memcpy(e, m->g.eps, n * dim * sizeof *e);
    free(obj0);
}

void tool_model_decode(struct tool_model *m, uint8_t *imgs, ft_real *x, const ft_real *e,
                       size_t n)
{
    const struct config_data *cd = &m->cfg.data;
    const size_t dim = m->g.dim, b = m->g.batch_max;
    for (size_t i = 0; i < n; i += b) {
        const size_t k = n - i < b ? n - i : b;
        glow_reverse(&m->g, x + i * dim, e + i * dim, k, 1.0);
    }
    postprocess_batch(imgs, x, n, dim, (int)cd->n_bits, cd->preprocess, cd->logit_alpha);
}
