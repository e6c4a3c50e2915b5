/* Gradient reduction over ranks (distributed.md §2.1, §2.6). Buckets are
 * contiguous slices of the gradient arena cut at tensor boundaries from the end
 * of the table, the order backward finishes them. Fast mode starts an
 * MPI_Iallreduce per bucket as soon as backward has finished it. Deterministic
 * mode combines per-group gradients along one fixed binary tree over group
 * index, so the reduced gradient has the bits of the 1-rank tree for any R. */
#ifndef FT_REDUCE_H
#define FT_REDUCE_H

#include <mpi.h>
#include <stddef.h>

#include "glow.h"

struct reducer {
    int rank, size;
    size_t n;              /* arena length in floats */
    size_t n_buckets;
    size_t *lo;            /* bucket b covers [lo[b], hi[b]); b = 0 is the arena's end */
    size_t *hi;
    MPI_Request *req;
    size_t started;        /* buckets [0, started) have their allreduce running */
    float *arena;          /* what is being reduced (fast mode) */
    float *tmp;            /* deterministic mode: one bucket from the partner */
    double *acc;           /* deterministic fallback: double sums on rank 0 */
    double t_wait;         /* seconds spent waiting for reductions after backward */
};

/* Cuts buckets of at most bucket_bytes (capped so there are at least 8 when
 * the table allows), from the tensor table and the size only. */
void reducer_init(struct reducer *r, const struct glow *g, size_t bucket_bytes);
void reducer_free(struct reducer *r);

/* Fast mode: reducer_begin before backward, with g->grads_ready = reducer_ready
 * and g->grads_ready_ctx = r; reducer_finish after it leaves the summed
 * gradient in arena on every rank. */
void reducer_begin(struct reducer *r, float *arena);
void reducer_ready(void *ctx, size_t offset);
void reducer_finish(struct reducer *r);

/* Deterministic mode, after each rank summed its own groups along the tree:
 * partial ← the sum over all ranks' partials along the fixed tree. When R and
 * groups_per_rank are powers of two each partial is an aligned subtree and
 * recursive doubling rebuilds the 1-rank tree bit for bit; otherwise the
 * partials are gathered to rank 0 in rank order, added in double and broadcast
 * (repeatable at fixed R, within rounding across R). */
void reducer_tree(struct reducer *r, float *partial, size_t groups_per_rank);

#endif
