/* Watchdog thread (distributed.md §2.13). It only reads the heartbeat under a
 * mutex and, on expiry, prints and calls MPI_Abort, which Open MPI allows from
 * any thread once MPI_THREAD_MULTIPLE is granted; otherwise it _exits(3) and
 * the launcher ends the job. */
#include "watchdog.h"

#include <errno.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "iothread.h"
#include "train.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double step_limit(const struct watchdog *w)
{
    if (w->n_hist == 0)
        return w->min_s;
    double h[WATCHDOG_HIST];
    size_t n = w->n_hist < WATCHDOG_HIST ? w->n_hist : WATCHDOG_HIST;
    memcpy(h, w->hist, n * sizeof *h);
    qsort(h, n, sizeof *h, cmp_double);
    double lim = 10.0 * h[n / 2];
    return lim > w->min_s ? lim : w->min_s;
}

static void *watch(void *arg)
{
    struct watchdog *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&w->cv, &w->mu, &ts);
        if (w->stop)
            break;
        double limit = w->limit > 0 ? w->limit : step_limit(w);
        double stuck = ft_now() - w->t_phase;
        if (stuck > limit) {
            fprintf(stderr, "flowtrain: rank %d: watchdog: step %llu stuck %.0f s in %s "
                    "(limit %.0f s); aborting the job\n", w->rank,
                    (unsigned long long)w->step, stuck, w->phase, limit);
            fflush(stderr);
            int provided = 0;
            MPI_Query_thread(&provided);
            if (provided == MPI_THREAD_MULTIPLE)
                MPI_Abort(MPI_COMM_WORLD, 3);
            _exit(3);
        }
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

void watchdog_start(struct watchdog *w, int rank, double min_s)
{
    memset(w, 0, sizeof *w);
    w->rank = rank;
    w->min_s = min_s;
    snprintf(w->phase, sizeof w->phase, "start-up");
    w->t_phase = ft_now();
    w->limit = min_s > 600 ? min_s : 600;
    FT_CHECK(pthread_mutex_init(&w->mu, NULL) == 0, "mutex");
    FT_CHECK(pthread_cond_init(&w->cv, NULL) == 0, "condvar");
    ft_thread_create(&w->th, watch, w);
    w->running = 1;
}

void watchdog_phase(struct watchdog *w, const char *phase, uint64_t step, double limit_s)
{
    if (!w->running)
        return;
    pthread_mutex_lock(&w->mu);
    snprintf(w->phase, sizeof w->phase, "%s", phase);
    w->step = step;
    w->limit = limit_s;
    w->t_phase = ft_now();
    pthread_mutex_unlock(&w->mu);
}

void watchdog_step_time(struct watchdog *w, double seconds)
{
    if (!w->running)
        return;
    pthread_mutex_lock(&w->mu);
    w->hist[w->n_hist++ % WATCHDOG_HIST] = seconds;
    pthread_mutex_unlock(&w->mu);
}

void watchdog_stop(struct watchdog *w)
{
    if (!w->running)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->th, NULL);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    w->running = 0;
}
