/* Class-conditional top prior and classifier head (glow-model.md §9):
 *   h += (onehot(y)·W_y + b_y)⊙e^{3·logs_y}   (broadcast over H_t, W_t)
 *   logits = (mean_hw(z_top)·W_c + b_c)⊙e^{3·logs_c},  bits_y = −ln softmax[y]/ln 2
 * Both are zero-initialised, so at init the prior is unchanged and
 * bits_y = log2 n_y. Sums over examples and pixels accumulate in double. */
#include "classcond.h"

#include <math.h>
#include <string.h>

#include "check.h"

static const double LN2 = 0.69314718055994530942;

void classcond_emb_forward(ft_real *h, const ft_real *h0, const int32_t *y,
                           const ft_real *w, const ft_real *b, const ft_real *logs,
                           size_t n, size_t hw, size_t c2, size_t ny)
{
    for (size_t e = 0; e < n; e++) {
        FT_CHECK(y[e] >= 0 && (size_t)y[e] < ny, "label %d of example %zu outside 0..%zu",
                 (int)y[e], e, ny - 1);
        const ft_real *wy = w + (size_t)y[e] * c2;
        for (size_t k = 0; k < c2; k++) {
            double v = ((double)wy[k] + b[k]) * exp(3.0 * logs[k]);
            for (size_t p = 0; p < hw; p++)
                h[(e * hw + p) * c2 + k] = (ft_real)((h0 ? (double)h0[p * c2 + k] : 0.0) + v);
        }
    }
}

void classcond_emb_backward(ft_real *dh0, ft_real *dw, ft_real *db, ft_real *dlogs, double *acc,
                            const ft_real *dh, const int32_t *y, const ft_real *w,
                            const ft_real *b, const ft_real *logs,
                            size_t n, size_t hw, size_t c2, size_t ny)
{
    double *aw = acc, *ab = acc + ny * c2, *al = ab + c2, *de = al + c2;
    memset(acc, 0, (ny + 2) * c2 * sizeof *acc);
    for (size_t e = 0; e < n; e++) {
        const size_t cls = (size_t)y[e];
        memset(de, 0, c2 * sizeof *de);
        for (size_t p = 0; p < hw; p++)
            for (size_t k = 0; k < c2; k++)
                de[k] += dh[(e * hw + p) * c2 + k];
        for (size_t k = 0; k < c2; k++) {
            double s = exp(3.0 * logs[k]), pre = (double)w[cls * c2 + k] + b[k];
            aw[cls * c2 + k] += de[k] * s;
            ab[k] += de[k] * s;
            al[k] += 3.0 * de[k] * pre * s;
        }
    }
    for (size_t j = 0; j < ny * c2; j++)
        dw[j] += (ft_real)aw[j];
    for (size_t k = 0; k < c2; k++) {
        db[k] += (ft_real)ab[k];
        dlogs[k] += (ft_real)al[k];
    }
    if (!dh0)
        return;
    for (size_t p = 0; p < hw; p++)
        for (size_t k = 0; k < c2; k++) {
            double t = 0;
            for (size_t e = 0; e < n; e++)
                t += dh[(e * hw + p) * c2 + k];
            dh0[p * c2 + k] += (ft_real)t;
        }
}

void classcond_head_forward(double *bits, int32_t *pred, double *feat, double *logit,
                            const ft_real *z, size_t zs, const int32_t *y,
                            const ft_real *w, const ft_real *b, const ft_real *logs,
                            size_t n, size_t hw, size_t c, size_t ny)
{
    for (size_t e = 0; e < n; e++) {
        double *f = feat + e * c, *lg = logit + e * ny;
        for (size_t k = 0; k < c; k++)
            f[k] = 0;
        for (size_t p = 0; p < hw; p++)
            for (size_t k = 0; k < c; k++)
                f[k] += z[(e * hw + p) * zs + k];
        for (size_t k = 0; k < c; k++)
            f[k] /= (double)hw;
        size_t best = 0;
        double mx = -INFINITY;
        for (size_t j = 0; j < ny; j++) {
            double pre = b[j];
            for (size_t k = 0; k < c; k++)
                pre += f[k] * w[k * ny + j];
            lg[j] = pre * exp(3.0 * logs[j]);
            if (lg[j] > mx) {
                mx = lg[j];
                best = j;
            }
        }
        if (pred)
            pred[e] = (int32_t)best;
        if (!y)
            continue;
        FT_CHECK(y[e] >= 0 && (size_t)y[e] < ny, "label %d of example %zu outside 0..%zu",
                 (int)y[e], e, ny - 1);
        double se = 0;
        for (size_t j = 0; j < ny; j++)
            se += exp(lg[j] - mx);
        bits[e] = (mx + log(se) - lg[y[e]]) / LN2;
    }
}

void classcond_head_backward(ft_real *dz, size_t dzs, ft_real *dw, ft_real *db, ft_real *dlogs,
                             double *acc, const double *u, const double *feat,
                             const double *logit, const int32_t *y, const ft_real *w,
                             const ft_real *logs, size_t n, size_t hw, size_t c, size_t ny)
{
    double *aw = acc, *ab = acc + c * ny, *al = ab + ny, *df = al + ny;
    memset(acc, 0, ((c + 2) * ny) * sizeof *acc);
    for (size_t e = 0; e < n; e++) {
        const double *lg = logit + e * ny, *f = feat + e * c;
        double mx = -INFINITY, se = 0;
        for (size_t j = 0; j < ny; j++)
            mx = fmax(mx, lg[j]);
        for (size_t j = 0; j < ny; j++)
            se += exp(lg[j] - mx);
        memset(df, 0, c * sizeof *df);
        for (size_t j = 0; j < ny; j++) {
            double pj = exp(lg[j] - mx) / se;
            double dl = u[e] * (pj - (j == (size_t)y[e])) / LN2;   /* ∂L/∂logit */
            double dpre = dl * exp(3.0 * logs[j]);
            al[j] += 3.0 * dl * lg[j];
            ab[j] += dpre;
            for (size_t k = 0; k < c; k++) {
                aw[k * ny + j] += f[k] * dpre;
                df[k] += dpre * w[k * ny + j];
            }
        }
        for (size_t p = 0; p < hw; p++)
            for (size_t k = 0; k < c; k++)
                dz[(e * hw + p) * dzs + k] += (ft_real)(df[k] / (double)hw);
    }
    for (size_t j = 0; j < c * ny; j++)
        dw[j] += (ft_real)aw[j];
    for (size_t j = 0; j < ny; j++) {
        db[j] += (ft_real)ab[j];
        dlogs[j] += (ft_real)al[j];
    }
}
