/* The per-rank I/O worker: a FIFO of jobs run one at a time on one thread.
 * A job's done flag and the queue are guarded by one mutex; the condition
 * variable wakes the worker on a submit and the waiters on a completion. */
#include "iothread.h"

#include <signal.h>
#include <string.h>

#include "check.h"

void ft_thread_create(pthread_t *th, void *(*fn)(void *), void *arg)
{
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigaddset(&block, SIGTERM);
    FT_CHECK(pthread_sigmask(SIG_BLOCK, &block, &old) == 0, "pthread_sigmask");
    FT_CHECK(pthread_create(th, NULL, fn, arg) == 0, "cannot start a thread");
    FT_CHECK(pthread_sigmask(SIG_SETMASK, &old, NULL) == 0, "pthread_sigmask");
}

static void *worker(void *arg)
{
    struct iothread *t = arg;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        while (t->count == 0 && !t->stop)
            pthread_cond_wait(&t->cv, &t->mu);
        if (t->count == 0)
            break;
        struct io_job *job = t->queue[t->head];
        pthread_mutex_unlock(&t->mu);
        job->fn(job->arg);
        pthread_mutex_lock(&t->mu);
        t->head = (t->head + 1) % IOTHREAD_QUEUE;
        t->count--;
        job->done = 1;
        pthread_cond_broadcast(&t->cv);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

void iothread_start(struct iothread *t)
{
    memset(t, 0, sizeof *t);
    FT_CHECK(pthread_mutex_init(&t->mu, NULL) == 0, "mutex");
    FT_CHECK(pthread_cond_init(&t->cv, NULL) == 0, "condvar");
    ft_thread_create(&t->th, worker, t);
    t->running = 1;
}

void iothread_submit(struct iothread *t, struct io_job *job, void (*fn)(void *), void *arg)
{
    pthread_mutex_lock(&t->mu);
    while (t->count == IOTHREAD_QUEUE)
        pthread_cond_wait(&t->cv, &t->mu);
    job->fn = fn;
    job->arg = arg;
    job->queued = 1;
    job->done = 0;
    t->queue[(t->head + t->count) % IOTHREAD_QUEUE] = job;
    t->count++;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

void iothread_wait(struct iothread *t, struct io_job *job)
{
    pthread_mutex_lock(&t->mu);
    while (job->queued && !job->done)
        pthread_cond_wait(&t->cv, &t->mu);
    job->queued = 0;
    pthread_mutex_unlock(&t->mu);
}

void iothread_stop(struct iothread *t)
{
    if (!t->running)
        return;
    pthread_mutex_lock(&t->mu);
    t->stop = 1;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->th, NULL);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    t->running = 0;
}
