/* MPI world wrapper and reductions (distributed.md §2). Sums are split into
 * chunks below 2^31 elements; every call is checked with FT_MPI so a failed
 * collective ends the job instead of leaving ranks waiting. */
#include "dist.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define CHUNK ((size_t)1 << 30)

void dist_init(struct dist *d, int *argc, char ***argv)
{
    int provided = 0;
    FT_MPI(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided));
    FT_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &d->rank));
    FT_MPI(MPI_Comm_size(MPI_COMM_WORLD, &d->size));
}

void dist_finalize(void)
{
    MPI_Finalize();
}

void dist_allreduce_sum_f32(float *buf, size_t n)
{
    for (size_t o = 0; o < n; o += CHUNK) {
        size_t m = n - o < CHUNK ? n - o : CHUNK;
        FT_MPI(MPI_Allreduce(MPI_IN_PLACE, buf + o, (int)m, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD));
    }
}

void dist_allreduce_sum_f64(double *buf, size_t n)
{
    for (size_t o = 0; o < n; o += CHUNK) {
        size_t m = n - o < CHUNK ? n - o : CHUNK;
        FT_MPI(MPI_Allreduce(MPI_IN_PLACE, buf + o, (int)m, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
    }
}

void dist_ddi_sum(double *buf, size_t len, void *ctx)
{
    (void)ctx;
    dist_allreduce_sum_f64(buf, len);
}

int dist_any(int flag)
{
    int out = 0;
    FT_MPI(MPI_Allreduce(&flag, &out, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD));
    return out;
}

void dist_barrier(void)
{
    FT_MPI(MPI_Barrier(MPI_COMM_WORLD));
}

void dist_bcast(void *buf, size_t n)
{
    for (size_t o = 0; o < n; o += CHUNK) {
        size_t m = n - o < CHUNK ? n - o : CHUNK;
        FT_MPI(MPI_Bcast((char *)buf + o, (int)m, MPI_BYTE, 0, MPI_COMM_WORLD));
    }
}

int dist_agree_error(int failed, const char *msg)
{
    int size = 1, rank = 0;
    FT_MPI(MPI_Comm_size(MPI_COMM_WORLD, &size));
    FT_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    if (!dist_any(failed))
        return 0;
    enum { LEN = 512 };
    char mine[LEN] = "";
    if (failed && msg)   /* an empty message: this rank only follows another's failure */
        snprintf(mine, sizeof mine, "%s", msg);
    char *all = rank == 0 ? ft_malloc((size_t)size * LEN) : NULL;
    FT_MPI(MPI_Gather(mine, LEN, MPI_CHAR, all, LEN, MPI_CHAR, 0, MPI_COMM_WORLD));
    if (rank == 0) {
        int n_failed = 0;
        for (int r = 0; r < size; r++)
            n_failed += all[r * LEN] != '\0';
        for (int r = 0; r < size; r++) {
            const char *m = all + (size_t)r * LEN;
            if (!*m)
                continue;
            int seen = 0;   /* print a message shared by several ranks once */
            for (int q = 0; q < r && !seen; q++)
                seen = strcmp(all + (size_t)q * LEN, m) == 0;
            if (seen)
                continue;
            if (n_failed == size)
                fprintf(stderr, "flowtrain: %s\n", m);
            else
                fprintf(stderr, "flowtrain: rank %d: %s\n", r, m);
        }
        fflush(stderr);
        free(all);
    }
    return 1;
}

uint64_t dist_hash(const void *p, size_t bytes)
{
    /* FNV-1a over 64-bit words (then the tail bytes): fast, and any changed
     * bit changes the result with overwhelming probability. */
    const unsigned char *c = p;
    uint64_t h = 0xcbf29ce484222325ULL;
    size_t i = 0;
    for (; i + 8 <= bytes; i += 8) {
        uint64_t w;
        memcpy(&w, c + i, 8);
        h = (h ^ w) * 0x100000001b3ULL;
        h ^= h >> 29;
    }
    for (; i < bytes; i++)
        h = (h ^ c[i]) * 0x100000001b3ULL;
    return h;
}

void dist_check_replicas(uint64_t h, uint64_t step)
{
    int size = 1, rank = 0;
    FT_MPI(MPI_Comm_size(MPI_COMM_WORLD, &size));
    FT_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    if (size == 1)
        return;
    uint64_t *all = ft_malloc((size_t)size * sizeof *all);
    FT_MPI(MPI_Allgather(&h, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, MPI_COMM_WORLD));
    int bad = 0;
    for (int r = 1; r < size; r++)
        bad |= all[r] != all[0];
    if (bad && rank == 0) {
        char list[256] = "";
        for (int r = 1; r < size && strlen(list) < 200; r++)
            if (all[r] != all[0])
                snprintf(list + strlen(list), sizeof list - strlen(list), " %d", r);
        fprintf(stderr, "flowtrain: replica divergence at step %llu: parameters of rank(s)%s "
                "differ from rank 0\n", (unsigned long long)step, list);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 3);
    }
    free(all);
    if (bad)   /* the other ranks wait for rank 0's abort */
        FT_MPI(MPI_Barrier(MPI_COMM_WORLD));
}
