/* The training loop: data order, DDI, steps with the gradient allreduce and the
 * agreed skip/stop decision, test evaluation, metrics and progress output
 * (glow-model.md §3, §11; distributed.md §2.4, §2.14, §2.15). */
#ifndef FT_TRAIN_H
#define FT_TRAIN_H

#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "dataset.h"
#include "dist.h"
#include "glow.h"
#include "iothread.h"
#include "optim.h"
#include "reduce.h"
#include "watchdog.h"

/* Exit statuses of a run (distributed.md §1). */
enum {
    FT_EXIT_OK = 0,
    FT_EXIT_USER = 1,
    FT_EXIT_NONFINITE = 4,
};

/* One batch buffer: filled on the I/O thread (read + preprocess). */
struct batch {
    struct trainer *t;
    struct dataset *ds;
    uint64_t pass;           /* dequantization pass: the epoch, or the test pass */
    size_t count;
    uint64_t *idx;           /* global sample indices */
    uint8_t *pixels;         /* (count, D) */
    ft_real *x;              /* (count, D) model input */
    double *obj0;            /* (count) −D·ln n_bins (+ logit terms) */
    struct io_job job;
};

struct trainer {
    const struct config *cfg;
    const struct dist *dist;
    struct glow g;
    struct optim opt;
    struct dataset train, test;
    int has_test;
    struct iothread io;
    struct watchdog wd;
    struct reducer red;

    size_t dim, batch, local;     /* D, global batch B, this rank's b = B/R */
    size_t n_train, steps_per_epoch;
    uint64_t *order;              /* the permutation of [0, n_train) of order_epoch */
    uint64_t order_epoch;
    struct batch bat[2];          /* double buffer: bat[cur] is this step's */
    int cur;

    /* deterministic reduction: groups of `group` samples, summed along a tree */
    int deterministic;
    size_t group, n_groups;       /* samples per group, groups per rank */
    float **tree;                 /* tree_depth + 2 gradient arenas */
    size_t tree_depth;
    float *grads_own;             /* the model's own gradient arena */

    /* training state (all ranks equal) */
    uint64_t step, epoch, pos, images_seen, skipped, bad_run;
    double last_loss_sum, last_count, last_grad_norm, last_lr, last_step_s;
    int inject_nan;               /* test hook: the next step's gradient is NaN on rank 1 (or 0) */

    FILE *metrics;                /* rank 0: run.dir/metrics.jsonl, append */
    double t_start;
};

/* Opens the data, builds the model and the optimizer, initialises the parameters
 * from the seed and runs the distributed DDI pass. FT_OK or an error in err. */
int trainer_init(struct trainer *t, const struct config *cfg, const struct dist *dist,
                 struct ft_err *err);
void trainer_free(struct trainer *t);

/* One global step. Returns FT_OK, or FT_EXIT_NONFINITE after
 * train.max_bad_steps consecutive skipped steps. */
int trainer_step(struct trainer *t);

/* Exact test bits/dim over the whole test set (each image once, one noise draw),
 * with the EMA weights when enabled. */
double trainer_eval(struct trainer *t);

/* The whole run: steps until a limit, logging and evaluating on the way.
 * Returns an exit status (FT_EXIT_*). */
int trainer_run(struct trainer *t);

double ft_now(void);  /* monotonic seconds */

#endif
