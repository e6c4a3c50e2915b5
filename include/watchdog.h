/* No silent hangs (distributed.md §2.13): the main thread reports a heartbeat
 * (phase, step, start time); a watchdog thread checks it every second and ends
 * the whole job through MPI_Abort with one line naming the rank, step, phase
 * and time when a phase outlives its limit. A step's limit is
 * max(10 × median recent step time, watchdog_min_s). */
#ifndef FT_WATCHDOG_H
#define FT_WATCHDOG_H

#include <pthread.h>
#include <stdint.h>

#define WATCHDOG_HIST 16

struct watchdog {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int rank, running, stop;
    double min_s;
    char phase[64];
    uint64_t step;
    double t_phase, limit;       /* limit 0: the step limit */
    double hist[WATCHDOG_HIST];  /* recent step times */
    size_t n_hist;
};

void watchdog_start(struct watchdog *w, int rank, double min_s);
/* Heartbeat: phase starts now. limit_s 0 uses the step limit. */
void watchdog_phase(struct watchdog *w, const char *phase, uint64_t step, double limit_s);
/* Records one step's duration for the median. */
void watchdog_step_time(struct watchdog *w, double seconds);
void watchdog_stop(struct watchdog *w);

#endif
