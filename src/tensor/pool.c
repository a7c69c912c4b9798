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
 * (another application thread) runs its chunks itself.
 *
 * lf_parallel_ranges keeps each thread on consecutive items: the items are
 * cut into one range per thread, which its thread takes from the front in
 * memory order, so that a thread streams one run of weights per batch
 * instead of restarting at every chunk it claims; a thread whose range is
 * empty takes the back half of the fullest other range (the last item
 * alone when one is left).  A range is one 64-bit word (generation, front,
 * back) changed only by compare-and-swap, so a thread that arrives late or
 * is preempted holds back at most the item it is running.  A job may have
 * two phases, each cut in ranges this way: a thread turns to the second
 * only when nothing of the first is left to take (the first stage of a
 * LoRA-Flow batch, the adapters' A_cat x, then the weights' rows).  As
 * chunks from the shared counter, the first phase's items alternated
 * between the threads and each started a new stream: they drew 18 GB/s
 * per thread against 27-30 for the ranged rows (1b F16, AMD EPYC guest,
 * 2 threads); in ranges 26.5, and LoRA-Flow decoding 21.83 -> 22.52
 * tokens/s alternating in one process (base unchanged). */
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
    /* lf_parallel_ranges: items [0, nfirst) in nranges ranges from
     * range[FIRST], then items [nfirst, nitems) in nranges ranges from
     * range[0]; nranges == 0 for chunks from the counter */
    int nitems, nranges, nfirst;
    struct {
        _Alignas(64) _Atomic uint64_t w; /* RGEN | front | back */
    } range[2 * (MAX_WORKERS + 1)]; /* the second phase's, then the first's */
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

/* A range word: 20 bits of generation, then front and back (22 bits each;
 * items up to 4M). */
#define RBITS 22
#define RMASK ((1u << RBITS) - 1)
#define RGEN(g) ((uint64_t)((g) & 0xfffffu) << (2 * RBITS))
static inline uint64_t rword(uint32_t g, uint32_t f, uint32_t b) {
    return RGEN(g) | (uint64_t)f << RBITS | b;
}
static inline uint32_t rfront(uint64_t w) { return (uint32_t)(w >> RBITS) & RMASK; }
static inline uint32_t rback(uint64_t w) { return (uint32_t)w & RMASK; }
static inline int rlive(uint64_t w, uint32_t g) {
    return (w & RGEN(0xfffffu)) == RGEN(g) && rfront(w) < rback(w);
}

/* The next item of range s from its front, or -1 when it is empty. */
static int take_front(int s, uint32_t g) {
    uint64_t w = atomic_load_explicit(&P.range[s].w, memory_order_acquire);
    while (rlive(w, g))
        if (atomic_compare_exchange_weak_explicit(&P.range[s].w, &w, w + ((uint64_t)1 << RBITS),
                                                  memory_order_acq_rel, memory_order_acquire))
            return (int)rfront(w);
    return -1;
}

/* Where the first phase's ranges start in P.range. */
#define FIRST (MAX_WORKERS + 1)

/* Take work from the fullest other range of the phase whose ranges start
 * at range[base]: its back half becomes range s (and its first item is
 * returned), or its one item is returned; -1 when every range of the
 * phase is empty. */
static int steal(int base, int s, uint32_t g) {
    for (;;) {
        int v = -1;
        uint32_t most = 0;
        uint64_t wv = 0;
        for (int i = 0; i < P.nranges; i++) {
            uint64_t w = atomic_load_explicit(&P.range[base + i].w, memory_order_acquire);
            if (i != s && rlive(w, g) && rback(w) - rfront(w) > most) {
                v = i;
                most = rback(w) - rfront(w);
                wv = w;
            }
        }
        if (v < 0) return -1;
        const uint32_t f = rfront(wv), b = rback(wv), mid = most == 1 ? f : f + most / 2;
        if (!atomic_compare_exchange_strong_explicit(&P.range[base + v].w, &wv, rword(g, f, mid), memory_order_acq_rel,
                                                     memory_order_acquire))
            continue;
        /* range s is empty, and no other thread changes an empty range */
        if (b - mid > 1) atomic_store_explicit(&P.range[base + s].w, rword(g, mid + 1, b), memory_order_release);
        return (int)mid;
    }
}

/* The items of range base + s of generation g, then what can be taken
 * from the phase's other ranges; returns how many ran. */
static int run_ranges(int base, int s, uint32_t g) {
    int c, ran = 0;
    while ((c = take_front(base + s, g)) >= 0 || (c = steal(base, s, g)) >= 0) {
        P.fn(P.ctx, c); /* fn and ctx cannot change while an item of g is unfinished */
        ran++;
    }
    return ran;
}

/* Run chunks of generation g until none is left; or, for a job with
 * ranges, the first phase's items of range s and what can be taken from
 * the others, then the same in the second phase. */
static void work(uint32_t g, int s) {
    int c, ran = 0;
    if (P.nranges == 0) {
        while ((c = claim(g)) >= 0) {
            P.fn(P.ctx, c);
            ran++;
        }
    } else if (s < P.nranges) {
        if (P.nfirst > 0) ran += run_ranges(FIRST, s, g);
        ran += run_ranges(0, s, g);
    }
    if (ran) atomic_fetch_add_explicit(&P.done, ran, memory_order_acq_rel);
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
        if (id < P.nworkers_job) work(g, id + 1);
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

/* The items [r0, r1) cut into one range per thread, at range[base]. */
static void cut_ranges(int base, uint32_t g, int r0, int r1, int nthreads) {
    for (int i = 0; i < nthreads; i++) {
        uint32_t f = (uint32_t)(r0 + (int64_t)(r1 - r0) * i / nthreads);
        uint32_t b = (uint32_t)(r0 + (int64_t)(r1 - r0) * (i + 1) / nthreads);
        atomic_store_explicit(&P.range[base + i].w, rword(g, f, b), memory_order_relaxed);
    }
}

/* Items [0, nitems): chunks from the shared counter (ranged == 0), or the
 * items [0, nfirst) and then [nfirst, nitems) in nthreads ranges each. */
static void run_job(lf_chunk_fn fn, void *ctx, int ranged, int nfirst, int nitems, int nthreads) {
    if (nitems <= 0) return;
    if (nthreads > MAX_WORKERS + 1) nthreads = MAX_WORKERS + 1;
    if (nthreads <= 1 || nitems == 1 || pthread_mutex_trylock(&P.busy) != 0) {
        for (int c = 0; c < nitems; c++) fn(ctx, c);
        return;
    }
    ensure_workers(nthreads - 1);
    P.fn = fn;
    P.ctx = ctx;
    P.nchunks = ranged ? 0 : nitems;
    P.nitems = nitems;
    P.nworkers_job = nthreads - 1;
    atomic_store_explicit(&P.done, 0, memory_order_relaxed);
    const uint32_t g = atomic_load_explicit(&P.gen, memory_order_relaxed) + 1;
    P.nranges = ranged ? nthreads : 0;
    P.nfirst = ranged ? nfirst : 0;
    if (ranged) {
        cut_ranges(0, g, nfirst, nitems, nthreads);
        cut_ranges(FIRST, g, 0, nfirst, nthreads);
    }
    atomic_store_explicit(&P.claim, (uint64_t)g << 32, memory_order_release);
    pthread_mutex_lock(&P.lock);
    atomic_store_explicit(&P.gen, g, memory_order_release);
    if (P.sleeping) pthread_cond_broadcast(&P.wake);
    pthread_mutex_unlock(&P.lock);
    work(g, 0);
    /* wait for the items that workers claimed (not for the workers) */
    int spins = 0;
    while (atomic_load_explicit(&P.done, memory_order_acquire) < nitems) {
        if (++spins < 4096) lf_cpu_relax();
        else sched_yield();
    }
    pthread_mutex_unlock(&P.busy);
}

void lf_parallel_chunks(lf_chunk_fn fn, void *ctx, int nchunks, int nthreads) {
    run_job(fn, ctx, 0, 0, nchunks, nthreads);
}

void lf_parallel_ranges(lf_chunk_fn fn, void *ctx, int nfirst, int nitems, int nthreads) {
    /* more items than a range word counts: chunks from the counter, in
     * order, so the first phase's are still taken before the others */
    run_job(fn, ctx, nitems <= (int)RMASK, nfirst, nitems, nthreads);
}
