/* pool.c: the worker threads of the decoding kernels.
 *
 * A decoding step is some two hundred short products (tens of microseconds
 * each).  With OpenMP's fork-join every one of them ends in a barrier that
 * waits for every thread of the team, including one that the operating
 * system has not scheduled yet: on a machine shared with other work a token
 * then takes several times as long as with one thread.  Here the work is
 * cut into chunks that the caller and the workers claim from a shared
 * counter; the caller waits only for chunks that were claimed, so a worker
 * that arrives late finds nothing left and the caller has done its share.
 *
 * The workers are created once (on first use), spin briefly between jobs
 * (jobs come microseconds apart while decoding) and then sleep on a
 * condition variable.  One job at a time: a caller that finds the pool busy
 * (another application thread) runs its chunks itself. */
#include "simd.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#define MAX_WORKERS 63
#define SPIN_ROUNDS 20000 /* pause loops before sleeping: about 0.1-0.5 ms */

static struct {
    pthread_mutex_t busy;        /* held by the caller of the running job */
    pthread_mutex_t lock;        /* sleeping and waking */
    pthread_cond_t wake;
    _Atomic uint64_t claim;      /* generation << 32 | next chunk */
    _Atomic int done;            /* chunks finished in this generation */
    _Atomic uint32_t gen;        /* generation of the posted job */
    int sleeping;                /* workers waiting on `wake` (under lock) */
    lf_chunk_fn fn;
    void *ctx;
    int nchunks, nworkers_job;   /* workers allowed to join this job */
    int nworkers;                /* started */
} P = {.busy = PTHREAD_MUTEX_INITIALIZER, .lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

/* Next chunk of generation g, or -1 when none is left (or g has passed). */
static int claim(uint32_t g) {
    uint64_t w = atomic_load_explicit(&P.claim, memory_order_acquire);
    for (;;) {
        if ((uint32_t)(w >> 32) != g || (int)(uint32_t)w >= P.nchunks) return -1;
        if (atomic_compare_exchange_weak_explicit(&P.claim, &w, w + 1, memory_order_acq_rel, memory_order_acquire))
            return (int)(uint32_t)w;
    }
}

/* Run chunks of generation g until none is left. */
static void work(uint32_t g) {
    int c;
    while ((c = claim(g)) >= 0) {
        P.fn(P.ctx, c); /* fn and ctx cannot change while a chunk of g is unfinished */
        atomic_fetch_add_explicit(&P.done, 1, memory_order_acq_rel);
    }
}

static void *worker(void *arg) {
    const int id = (int)(intptr_t)arg;
    uint32_t seen = atomic_load_explicit(&P.gen, memory_order_acquire);
    for (;;) {
        uint32_t g;
        int spins = 0;
        while ((g = atomic_load_explicit(&P.gen, memory_order_acquire)) == seen && spins < SPIN_ROUNDS) {
            lf_cpu_relax();
            spins++;
        }
        if (g == seen) {
            pthread_mutex_lock(&P.lock);
            P.sleeping++;
            while ((g = atomic_load_explicit(&P.gen, memory_order_acquire)) == seen) pthread_cond_wait(&P.wake, &P.lock);
            P.sleeping--;
            pthread_mutex_unlock(&P.lock);
        }
        seen = g;
        if (id < P.nworkers_job) work(g);
    }
    return NULL;
}

/* Start workers up to n (never stopped: they sleep when idle). */
static void ensure_workers(int n) {
    if (n > MAX_WORKERS) n = MAX_WORKERS;
    while (P.nworkers < n) {
        pthread_t t;
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &a, worker, (void *)(intptr_t)P.nworkers);
        pthread_attr_destroy(&a);
        if (rc != 0) break; /* fewer workers: the caller does the rest */
        P.nworkers++;
    }
}

void lf_parallel_chunks(lf_chunk_fn fn, void *ctx, int nchunks, int nthreads) {
    if (nchunks <= 0) return;
    if (nthreads <= 1 || nchunks == 1 || pthread_mutex_trylock(&P.busy) != 0) {
        for (int c = 0; c < nchunks; c++) fn(ctx, c);
        return;
    }
    ensure_workers(nthreads - 1);
    P.fn = fn;
    P.ctx = ctx;
    P.nchunks = nchunks;
    P.nworkers_job = nthreads - 1;
    atomic_store_explicit(&P.done, 0, memory_order_relaxed);
    const uint32_t g = atomic_load_explicit(&P.gen, memory_order_relaxed) + 1;
    atomic_store_explicit(&P.claim, (uint64_t)g << 32, memory_order_release);
    pthread_mutex_lock(&P.lock);
    atomic_store_explicit(&P.gen, g, memory_order_release);
    if (P.sleeping) pthread_cond_broadcast(&P.wake);
    pthread_mutex_unlock(&P.lock);
    work(g);
    /* wait for the chunks that workers claimed (not for the workers) */
    int spins = 0;
    while (atomic_load_explicit(&P.done, memory_order_acquire) < nchunks) {
        if (++spins < 4096) lf_cpu_relax();
        else sched_yield();
    }
    pthread_mutex_unlock(&P.busy);
}
