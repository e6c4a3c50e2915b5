/* Coupling layers (glow-model.md §7). The network NN(h; n_out):
 *   a1 = relu(actnorm1(conv3x3_edge(h; W1))), a2 = relu(actnorm2(a1·W2)),
 *   out = (conv3x3_edge(a2; W3) + b3)·exp(3·logs3).
 * Affine: t = out[0::2], s = σ(out[1::2] + 2) (or exp), y2 = (z2 + t)·s,
 * log-det Σ ln s. Additive: y2 = z2 + out (n_out = C/2). z1 = x[..., :C/2]. */
#ifndef FT_COUPLING_H
#define FT_COUPLING_H

#include <stddef.h>
#include "actnorm.h"
#include "real.h"

enum coupling_kind { COUPLING_AFFINE = 0, COUPLING_ADDITIVE = 1 };
enum scale_fn { SCALE_SIGMOID2 = 0, SCALE_EXP = 1 };

/* The coupling network's tensors (parameters, or their gradients). */
struct nn_tensors {
    ft_real *w1;              /* [3,3,cin+1,width] */
    ft_real *an1_b, *an1_logs; /* [width] */
    ft_real *w2;              /* [width,width] */
    ft_real *an2_b, *an2_logs; /* [width] */
    ft_real *w3;              /* [3,3,width+1,nout] */
    ft_real *b3, *logs3;      /* [nout] */
};

/* Shapes of one coupling: n examples of h×w pixels, c channels, NN width. */
struct coupling_dims {
    size_t n, h, w, c, width;
    enum coupling_kind kind;
    enum scale_fn scale;
};

/* Saved activations (the only ones backward needs besides y). */
struct coupling_acts {
    ft_real *a1, *a2;  /* (rows, width), after ReLU */
    ft_real *h;        /* (rows, nout), NN output */
    int rebuild_a1;    /* a1 is scratch shared by all steps: nn_backward recomputes
                        * it from z1 (conv1 is the cheapest of the three convs) */
};

/* Workspaces: cols and dcols (coupling_cols_size each), da (2·rows·width),
 * dh (rows·nout), acc (2·max(width, nout) + 1 doubles). */
struct coupling_work {
    ft_real *cols, *dcols, *da, *dh;
    double *acc;
    double *parts;     /* n_parts doubles: coupling_parts_size */
    size_t n_parts;
};

size_t coupling_nout(const struct coupling_dims *d);
/* Sizes (elements) of the workspaces above for these dims. */
size_t coupling_cols_size(const struct coupling_dims *d);
/* Doubles of parts for up to rows_max pixel rows: the per-block sums of the
 * ActNorm2 + ReLU backward that runs as the epilogue of conv3's input gradient. */
size_t coupling_parts_size(size_t rows_max, size_t width);

/* NN forward on z1 (pixel stride xs); fills acts. With ddi, actnorm1 and 2 are
 * initialised (DDI) on the way, modifying p's an*_b / an*_logs. */
void nn_forward(struct coupling_acts *acts, const struct coupling_work *wk,
                const ft_real *z1, size_t xs, const struct nn_tensors *p,
                const struct ddi *ddi, const struct coupling_dims *d, size_t cin, size_t nout);
/* dh is consumed (overwritten). dz1 (pixel stride dxs) += NN input gradient. */
void nn_backward(ft_real *dz1, size_t dxs, const struct nn_tensors *g,
                 const struct coupling_work *wk, ft_real *dh,
                 const struct coupling_acts *acts, const ft_real *z1, size_t xs,
                 const struct nn_tensors *p, const struct coupling_dims *d, size_t cin, size_t nout);

/* In place: on entry y holds the coupling input x, on exit its output.
 * logdet (n) += Σ ln s (affine). */
void coupling_forward(ft_real *y, double *logdet, struct coupling_acts *acts,
                      const struct coupling_work *wk, const struct nn_tensors *p,
                      const struct ddi *ddi, const struct coupling_dims *d);
/* In place: on entry x holds the output y, on exit the input. Fills acts exactly
 * as the forward pass from that input would (so backward can follow).
 * logdet −= Σ ln s unless NULL. */
void coupling_reverse(ft_real *x, double *logdet, struct coupling_acts *acts,
                      const struct coupling_work *wk, const struct nn_tensors *p,
                      const struct coupling_dims *d);
/* In place on dy: on entry the gradient of the output, on exit of the input.
 * y is the forward output; grads are accumulated (+=) into g. dlogdet: n. */
void coupling_backward(ft_real *dy, const struct nn_tensors *g, const struct coupling_work *wk,
                       const ft_real *y, const struct coupling_acts *acts,
                       const struct nn_tensors *p, const double *dlogdet,
                       const struct coupling_dims *d);

#endif
