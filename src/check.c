/* Invariant failures, allocation, error records and logging (house-style §2.4).
 * ft_fail ends every rank through MPI_Abort when MPI is running, so no rank is
 * left waiting in a collective; without MPI it exits with the same code 3. */
#include "check.h"

#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int mpi_running(void)
{
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    return init && !fin;
}

int ft_rank(void)
{
    int r = 0;
    if (mpi_running())
        MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}

_Noreturn void ft_fail(const char *file, int line, const char *expr, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "flowtrain: rank %d: %s:%d: check failed (%s): %s\n",
            ft_rank(), file, line, expr, msg);
    fflush(stderr);
    if (mpi_running())
        MPI_Abort(MPI_COMM_WORLD, 3);
    _exit(3);
}

void *ft_malloc(size_t n)
{
    void *p = calloc(n ? n : 1, 1);
    FT_CHECK(p != NULL, "out of memory allocating %zu bytes", n);
    return p;
}

void *ft_malloc_aligned(size_t n)
{
    size_t sz = (n + 63) / 64 * 64;
    void *p = NULL;
    FT_CHECK(posix_memalign(&p, 64, sz ? sz : 64) == 0, "out of memory allocating %zu bytes", n);
    memset(p, 0, sz ? sz : 64);
    return p;
}

void ft_err_set(struct ft_err *err, const char *fmt, ...)
{
    if (!err)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
}

void ft_log(const char *fmt, ...)
{
    if (ft_rank() != 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

void ft_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "flowtrain: rank %d: warning: ", ft_rank());
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}
