/* One worker thread per rank for everything that touches HDF5: prefetching the
 * next batch while the current step computes, test batches, and rank 0's
 * checkpoint writes (HDF5 is not thread-safe, so this thread is its only
 * caller; distributed.md §2.5). Jobs run in submission order. The thread blocks
 * SIGUSR1 and SIGTERM so the handlers always run on the main thread. */
#ifndef FT_IOTHREAD_H
#define FT_IOTHREAD_H

#include <pthread.h>
#include <stddef.h>

struct io_job {
    void (*fn)(void *arg);
    void *arg;
    int queued, done;   /* guarded by the thread's mutex */
};

#define IOTHREAD_QUEUE 8

struct iothread {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct io_job *queue[IOTHREAD_QUEUE];
    size_t head, count;
    int stop, running;
};

void iothread_start(struct iothread *t);
/* Queues job (which must stay alive until waited for). */
void iothread_submit(struct iothread *t, struct io_job *job, void (*fn)(void *), void *arg);
/* Blocks until job has run; returns at once for a job never submitted. */
void iothread_wait(struct iothread *t, struct io_job *job);
/* Runs the queued jobs, then joins the thread. */
void iothread_stop(struct iothread *t);

/* Creates a thread with SIGUSR1 and SIGTERM blocked in it. */
void ft_thread_create(pthread_t *th, void *(*fn)(void *), void *arg);

#endif
