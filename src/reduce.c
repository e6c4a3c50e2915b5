/* Gradient buckets and their reduction (distributed.md §2.1, §2.6). Bucket
 * bounds depend only on the tensor table and the bucket size, never on timing,
 * so runs repeat bitwise. Open MPI progresses nonblocking collectives only in
 * MPI calls, hence the MPI_Testall at every readiness report. */
#include "reduce.h"

#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "train.h"

void reducer_init(struct reducer *r, const struct glow *g, size_t bucket_bytes)
{
    memset(r, 0, sizeof *r);
    FT_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &r->rank));
    FT_MPI(MPI_Comm_size(MPI_COMM_WORLD, &r->size));
    r->n = g->n_params;
    size_t cap = bucket_bytes / sizeof(float);
    if (cap > r->n / 8)
        cap = r->n / 8;
    if (cap < 1)
        cap = 1;
    r->lo = ft_malloc((g->n_tensors + 1) * sizeof *r->lo);
    r->hi = ft_malloc((g->n_tensors + 1) * sizeof *r->hi);
    size_t hi = r->n;
    for (size_t i = g->n_tensors; i-- > 0;) {
        const struct glow_tensor *t = &g->tensors[i];
        if (t->kind != TENSOR_PARAM)
            continue;
        if (hi - t->offset >= cap || t->offset == 0) {
            r->lo[r->n_buckets] = t->offset;
            r->hi[r->n_buckets] = hi;
            r->n_buckets++;
            hi = t->offset;
        }
    }
    FT_CHECK(hi == 0, "buckets do not cover the arena");
    r->req = ft_malloc(r->n_buckets * sizeof *r->req);
    size_t biggest = 0;
    for (size_t b = 0; b < r->n_buckets; b++)
        if (r->hi[b] - r->lo[b] > biggest)
            biggest = r->hi[b] - r->lo[b];
    r->tmp = ft_malloc_aligned(biggest * sizeof *r->tmp);
}

void reducer_free(struct reducer *r)
{
    free(r->lo);
    free(r->hi);
    free(r->req);
    free(r->tmp);
    free(r->acc);
    memset(r, 0, sizeof *r);
}

void reducer_begin(struct reducer *r, float *arena)
{
    r->arena = arena;
    r->started = 0;
}

static void start_bucket(struct reducer *r, size_t b)
{
    size_t lo = r->lo[b], len = r->hi[b] - lo;
    FT_CHECK(len < ((size_t)1 << 31), "bucket of %zu floats", len);
    FT_MPI(MPI_Iallreduce(MPI_IN_PLACE, r->arena + lo, (int)len, MPI_FLOAT, MPI_SUM,
                          MPI_COMM_WORLD, &r->req[b]));
}

void reducer_ready(void *ctx, size_t offset)
{
    struct reducer *r = ctx;
    if (r->size == 1)
        return;
    while (r->started < r->n_buckets && r->lo[r->started] >= offset)
        start_bucket(r, r->started++);
    if (r->started > 0) {
        int flag;
        FT_MPI(MPI_Testall((int)r->started, r->req, &flag, MPI_STATUSES_IGNORE));
    }
}

void reducer_finish(struct reducer *r)
{
    if (r->size == 1)
        return;
    reducer_ready(r, 0);
    double t0 = ft_now();
    FT_MPI(MPI_Waitall((int)r->n_buckets, r->req, MPI_STATUSES_IGNORE));
    r->t_wait += ft_now() - t0;
}

static int pow2(size_t x)
{
    return x && !(x & (x - 1));
}

void reducer_tree(struct reducer *r, float *partial, size_t groups_per_rank)
{
    if (r->size == 1)
        return;
    double t0 = ft_now();
    if (pow2((size_t)r->size) && pow2(groups_per_rank)) {
        for (size_t b = 0; b < r->n_buckets; b++) {
            float *p = partial + r->lo[b];
            size_t len = r->hi[b] - r->lo[b];
            for (int d = 1; d < r->size; d <<= 1) {
                int partner = r->rank ^ d;
                FT_MPI(MPI_Sendrecv(p, (int)len, MPI_FLOAT, partner, 17, r->tmp, (int)len,
                                    MPI_FLOAT, partner, 17, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
                /* lower subtree + higher subtree; IEEE addition of two values is
                 * commutative, so both partners get the same bits */
                for (size_t i = 0; i < len; i++)
                    p[i] = p[i] + r->tmp[i];
            }
        }
    } else {
        if (r->rank == 0 && !r->acc)
            r->acc = ft_malloc(r->n * sizeof *r->acc);
        for (size_t b = 0; b < r->n_buckets; b++) {
            float *p = partial + r->lo[b];
            size_t len = r->hi[b] - r->lo[b];
            if (r->rank == 0) {
                double *acc = r->acc + r->lo[b];
                for (size_t i = 0; i < len; i++)
                    acc[i] = p[i];
                for (int q = 1; q < r->size; q++) {
                    FT_MPI(MPI_Recv(r->tmp, (int)len, MPI_FLOAT, q, 18, MPI_COMM_WORLD,
                                    MPI_STATUS_IGNORE));
                    for (size_t i = 0; i < len; i++)
                        acc[i] += r->tmp[i];
                }
                for (size_t i = 0; i < len; i++)
                    p[i] = (float)acc[i];
            } else {
                FT_MPI(MPI_Send(p, (int)len, MPI_FLOAT, 0, 18, MPI_COMM_WORLD));
            }
            FT_MPI(MPI_Bcast(p, (int)len, MPI_FLOAT, 0, MPI_COMM_WORLD));
        }
    }
    r->t_wait += ft_now() - t0;
}
