/* The MPI world of a run: rank, size and the reductions training needs. The
 * only module (with check.c) that calls MPI; everything else gets a struct dist. */
#ifndef FT_DIST_H
#define FT_DIST_H

#include <stddef.h>
#include <stdint.h>

struct dist {
    int rank, size;
};

/* MPI_Init_thread asking for MPI_THREAD_MULTIPLE; fills d. */
void dist_init(struct dist *d, int *argc, char ***argv);
void dist_finalize(void);
/* In-place element-wise sums over all ranks. */
void dist_allreduce_sum_f32(float *buf, size_t n);
void dist_allreduce_sum_f64(double *buf, size_t n);
/* The DDI reduction callback (struct ddi): ctx unused. */
void dist_ddi_sum(double *buf, size_t len, void *ctx);
/* 1 if any rank passes a non-zero flag. */
int dist_any(int flag);
void dist_barrier(void);
/* Broadcast of n bytes from rank 0. */
void dist_bcast(void *buf, size_t n);

/* Agrees a recoverable failure across ranks: returns 1 on every rank if any
 * rank failed, after rank 0 printed "flowtrain: <msg>" once per distinct
 * message (prefixed with the rank when only some ranks failed). Ranks that
 * failed only because another did pass an empty message. */
int dist_agree_error(int failed, const char *msg);

/* 64-bit hash of a byte range (replica checks). */
uint64_t dist_hash(const void *p, size_t bytes);
/* Allgathers h; on a mismatch rank 0 prints the step and the ranks that differ
 * from rank 0, and the job ends through MPI_Abort (exit 3). */
void dist_check_replicas(uint64_t h, uint64_t step);

#endif
