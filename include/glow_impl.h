/* Private to the glow module (src/glow_build.c: plan, tensor table, arenas;
 * src/glow.c: forward, reverse, backward). Other code uses glow.h only.
 * A model is a list of stages ("levels" of glow-model.md §4, §8): each takes
 * its input from the previous stage's kept output, squeezed or not, runs its
 * flow steps, and either splits (a learned prior on the second half) or
 * passes everything on; the last stage ends in the top prior. Glow: L stages,
 * each squeezed and split but the last. RealNVP with S scales: per scale a
 * checkerboard stage (no squeeze, no split) and a channel stage (squeezed,
 * split), then a last checkerboard stage. NICE: one squeezed stage and the
 * diagonal scaling. */
#ifndef FT_GLOW_IMPL_H
#define FT_GLOW_IMPL_H

#include <stddef.h>
#include "coupling.h"
#include "glow.h"
#include "masked.h"
#include "real.h"

struct glow_step {
    int actnorm;                       /* 1: an ActNorm with log-det comes first */
    int permute;                       /* 0: no permutation (masked couplings) */
    enum perm_kind pk;                 /* the permutation when permute */
    enum mask_kind mask;               /* MASK_CHANNEL_FIRST: the Glow coupling */
    size_t cin, nout;                  /* coupling network inputs and outputs */
    size_t first;                      /* offset of its first parameter (grads_ready) */
    size_t an_b, an_logs;              /* params offsets */
    size_t w, l, u, log_s;             /* invconv W, or LU's L, U, log_s */
    size_t sign_s;                     /* fbufs offset (LU) */
    size_t perm;                       /* ibufs offset: shuffle/reverse perm or LU's P */
    size_t nn[9];                      /* w1, an1_b, an1_logs, w2, an2_b, an2_logs, w3, b3, logs3 */
    struct coupling_acts acts;
    ft_real *xa;                       /* actnorm output = permutation input */
};

struct glow_level {
    size_t h, w, c;                    /* step shape of this stage */
    unsigned name;                     /* s of "level{s}" in tensor names */
    const char *word;                  /* step names: "step", "checker", "channel" */
    int squeeze_in;                    /* input = squeeze of the previous output */
    int split;                         /* the second half is factored out at the end */
    size_t n_steps;
    ft_real **x;                       /* n_steps + 1 step boundaries */
    struct glow_step *st;
    size_t sp_w, sp_b, sp_logs;        /* split prior, or the top prior conv (learntop) */
    ft_real *hs;                       /* split prior output (N,h,w,c), or top h (1,h,w,2c) */
    size_t eps_off;                    /* offset of this stage's ε in a D-vector */
    ft_real *z;                        /* output the prior sees: x[n_steps], or zs */
    /* last stage only */
    int has_scale;                     /* NICE's z ← z⊙e^S */
    size_t scale_s;
    ft_real *zs;                       /* (N,h,w,c) scaled output */
    size_t top_first;                  /* first prior/classifier tensor, or SIZE_MAX */
    size_t y_w, y_b, y_logs;           /* prior/y_emb (ycond) */
    size_t c_w, c_b, c_logs;           /* classifier (weight_y > 0) */
    ft_real *hy;                       /* (N,h,w,2c) per-example top h (ycond) */
    double *feat, *logit, *u;          /* classifier: (N,c), (N,n_y), (N) in dwork */
    double *yacc;                      /* classifier / embedding / scale sums in dwork */
    int32_t *ylab;                     /* (N) labels cycled for unlabelled reverse */
};

/* Work arena views, shared by forward, backward and reverse. */
struct work_views {
    ft_real *cols, *dcols, *da, *dh, *dhs, *dbuf[2], *wmat, *wmat2, *eps_tmp, *zeros, *dht,
        *dh0, *xb, *dxb;
};

struct work_views glow_work_views(const struct glow *g);
/* Offsets of the coupling accumulators and block parts in dwork, and the
 * parts' length (doubles). */
size_t glow_acc_offset(const struct glow *g);
size_t glow_parts_offset(const struct glow *g);
size_t glow_parts_len(const struct glow *g);

#endif
