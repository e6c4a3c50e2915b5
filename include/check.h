/* Invariant checks, recoverable-error records and rank-0 logging.
 * A failed FT_CHECK / FT_MPI / ft_malloc is a bug: it prints one line naming the
 * rank, file and line, then ends the whole job (MPI_Abort, exit code 3). What a
 * user can cause is reported through struct ft_err and a negative status. */
#ifndef FT_CHECK_H
#define FT_CHECK_H

#include <stddef.h>

enum {
    FT_OK = 0,
    FT_ERR_CONFIG = -1,   /* bad config value, unknown key, shape that cannot work */
    FT_ERR_DATA = -2,     /* missing, corrupt or mismatched dataset */
    FT_ERR_IO = -3,       /* file system error */
    FT_ERR_CKPT = -4,     /* missing, corrupt or incompatible checkpoint */
    FT_ERR_PEER = -5,     /* another rank failed; it reports why (err left empty) */
};

struct ft_err {
    char msg[512];
};

_Noreturn void ft_fail(const char *file, int line, const char *expr, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define FT_CHECK(cond, ...) \
    do { if (!(cond)) ft_fail(__FILE__, __LINE__, #cond, __VA_ARGS__); } while (0)

/* Wraps an MPI call; any return other than MPI_SUCCESS ends the job. */
#define FT_MPI(call) \
    do { int ft_mpi_rc_ = (call); \
         if (ft_mpi_rc_ != 0) ft_fail(__FILE__, __LINE__, #call, "MPI error %d", ft_mpi_rc_); } while (0)

void *ft_malloc(size_t n);          /* never returns NULL; zero-filled */
void *ft_malloc_aligned(size_t n);  /* 64-byte aligned, zero-filled, free() it */

/* Fills err->msg (printf-style); returns the status passed for `return ft_err_set(...)`. */
void ft_err_set(struct ft_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Rank of this process in MPI_COMM_WORLD, or 0 before MPI_Init / without MPI. */
int ft_rank(void);

/* Logging: ft_log prints on rank 0 only, ft_warn on every rank with its rank. */
void ft_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void ft_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
