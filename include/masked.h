/* Masked couplings (glow-model.md §8): b[i,j,c] = 1 is copied and seen by the
 * network, 0 is transformed. Checkerboard parity p: b = 1 iff (i+j+p) even, all
 * channels; the NN sees x⊙b with C_in = C, n_out = 2C (affine) or C (additive):
 *   y = b⊙x + (1−b)⊙((x + t)⊙s),  log-det Σ (1−b)⊙ln s.
 * Channel masks use §7.3/§7.4 with C/2 NN inputs: "first" is the Glow coupling
 * (z1 conditions z2), "second" swaps the roles (z2 conditions z1), same order. */
#ifndef FT_MASKED_H
#define FT_MASKED_H

#include <stddef.h>
#include "actnorm.h"
#include "coupling.h"
#include "real.h"

enum mask_kind {
    MASK_CHANNEL_FIRST = 0,   /* = coupling_forward of coupling.h */
    MASK_CHANNEL_SECOND = 1,
    MASK_CHECKER0 = 2,        /* parity 0: b = 1 where i+j is even */
    MASK_CHECKER1 = 3,        /* parity 1: b = 1 where i+j is odd */
};

/* NN input channels and outputs of mask m on d (d->c channels, d->kind). */
size_t masked_cin(enum mask_kind m, size_t c);
size_t masked_nout(enum mask_kind m, const struct coupling_dims *d);
int masked_is_checker(enum mask_kind m);

/* In place on the (n·h·w, c) buffer y: on entry x, on exit the output; acts as
 * coupling_forward (acts->h has masked_nout channels). xb: (n·h·w, c)
 * workspace for the checkerboard NN input x⊙b (unused for channel masks).
 * logdet (n) += Σ (1−b)·ln s unless NULL. With ddi, the NN's actnorms are
 * initialised on the way. wk->cols must fit a 3x3 conv with masked_cin
 * inputs, wk->dh (n·h·w, masked_nout), wk->acc 2·max(width, nout) + 1. */
void masked_forward(ft_real *y, double *logdet, struct coupling_acts *acts,
                    const struct coupling_work *wk, ft_real *xb, const struct nn_tensors *p,
                    const struct ddi *ddi, const struct coupling_dims *d, enum mask_kind m);
/* In place: on entry x holds the output, on exit the input; fills acts as the
 * forward from that input would. logdet −= Σ (1−b)·ln s unless NULL. */
void masked_reverse(ft_real *x, double *logdet, struct coupling_acts *acts,
                    const struct coupling_work *wk, ft_real *xb, const struct nn_tensors *p,
                    const struct coupling_dims *d, enum mask_kind m);
/* In place on dy: on entry the gradient of the output, on exit of the input.
 * y: the forward output; g accumulates (+=); dlogdet: n. xb, dxb: (n·h·w, c)
 * workspaces (checkerboard only). Unused NN outputs (b = 1) get gradient 0. */
void masked_backward(ft_real *dy, const struct nn_tensors *g, const struct coupling_work *wk,
                     ft_real *xb, ft_real *dxb, const ft_real *y,
                     const struct coupling_acts *acts, const struct nn_tensors *p,
                     const double *dlogdet, const struct coupling_dims *d, enum mask_kind m);

#endif
