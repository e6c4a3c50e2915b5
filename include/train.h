/* The training loop: data order, DDI, steps with the gradient allreduce and the
 * agreed skip/stop decision, test evaluation, metrics and progress output
 * (glow-model.md §3, §11; distributed.md §2.4, §2.14, §2.15). */
#ifndef FT_TRAIN_H
#define FT_TRAIN_H

#include <stdint.h>
#include <stdio.h>

#include <signal.h>

#include "checkpoint.h"
#include "config.h"
#include "dataset.h"
#include "dist.h"
#include "glow.h"
#include "iothread.h"
#include "optim.h"
#include "reduce.h"
#include "watchdog.h"

/* Dequantization pass of test images: keyed apart from every training epoch,
 * so training's test bpd, floweval and the tests see the same noise. */
#define TEST_PASS (UINT64_C(1) << 62)

/* Exit statuses of a run (distributed.md §1). */
enum {
    FT_EXIT_OK = 0,
    FT_EXIT_USER = 1,
    FT_EXIT_NONFINITE = 4,
    FT_EXIT_TERM = 98,      /* SIGTERM: checkpoint committed, stopping */
    FT_EXIT_REQUEUE = 99,   /* SIGUSR1: checkpoint committed, requeue wanted */
};

/* The signal that asked this process to stop (SIGUSR1 or SIGTERM), or 0. The
 * handlers only store it; the step's small allreduce spreads it to all ranks. */
extern volatile sig_atomic_t ft_stop_signal;
void trainer_install_signals(void);

/* One batch buffer: filled on the I/O thread (read + preprocess). */
struct batch {
    struct trainer *t;
    struct dataset *ds;
    uint64_t pass;           /* dequantization pass: the epoch, or the test pass */
    size_t count;
    uint64_t *idx;           /* global sample indices */
    uint8_t *pixels;         /* (count, D) */
    int32_t *labels;         /* (count) class labels, −1 if the set has none */
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

    /* checkpoints (rank 0 writes from a snapshot on the I/O thread) */
    struct ckpt_snapshot snap;
    struct io_job ckpt_job;
    int ckpt_rc;
    double ckpt_seconds, last_ckpt_time;
    uint64_t ckpt_step;           /* step of the newest snapshot, UINT64_MAX if none */
    struct ft_err ckpt_err;
    char *config_text;            /* the resolved config, as stored */
    double wall_before;           /* training wall time of earlier runs (resume) */
    int stop_sig;                 /* agreed stop request: SIGUSR1, SIGTERM or 0 */

    /* training state (all ranks equal) */
    uint64_t step, epoch, pos, images_seen, skipped, bad_run;
    double best_test_bpd;
    double log_loss, log_count;   /* Σnll and count since the last metrics line */
    double log_bits_y, log_errors;   /* classifier sums since the last metrics line */
    double last_loss_sum, last_count, last_grad_norm, last_lr, last_step_s;
    double last_bits_y, last_errors;   /* classifier head: Σbits_y and errors of the step */
    double test_bits_y, test_err;      /* and their means over the last test evaluation */
    int inject_nan;               /* test hook: the next step's gradient is NaN on rank 1 (or 0) */

    FILE *metrics;                /* rank 0: run.dir/metrics.jsonl, append */
    double t_start;
};

/* Opens the data, builds the model and the optimizer, then either resumes
 * (resume: "auto" = the newest valid checkpoint of run.dir if there is one, a
 * file path, or "none") or initialises the parameters from the seed and runs
 * the distributed DDI pass. FT_OK or an error in err. */
int trainer_init(struct trainer *t, const struct config *cfg, const struct dist *dist,
                 const char *resume, struct ft_err *err);
/* Rank 0: waits for a running checkpoint write, snapshots and queues a new one;
 * wait = 1 also waits for it. Returns the write's status when waited for. */
int trainer_checkpoint(struct trainer *t, int wait);
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
int ft_mkdir_p(const char *path, struct ft_err *err);   /* mkdir -p; errors name run.dir */
uint64_t ft_env_u64(const char *name);                  /* a numeric variable, 0 if unset */

#endif
