/* matvec.c: threaded matrix-vector products for decoding.
 *
 * A decoding step is bound by memory bandwidth, and on a few cores one core
 * cannot draw all of it: every product is split between the kernel threads
 * (pool.c; created once, no thread is started per call).  lf_matvec takes a
 * batch of products (q, k and v; gate and up) and cuts the rows of all of
 * them into items of about 64 KiB of weights, in memory order, that the
 * threads run in one range each (lf_parallel_ranges), so that the threads
 * wake once per batch and each reads one run of memory per batch instead
 * of restarting a stream at every chunk it claims; a thread that is done
 * takes over the back half of another's range, so the threads finish
 * within an item of each other.  History: chunks claimed from a shared
 * counter needed to be long (1b F16, 2 threads, tokens/s: 32 KiB chunks
 * 9.6, 512 KiB 11.2 in session 2; 512 KiB 13.63, 2 MiB 14.19 in session
 * 5, with the last job's final chunks cut in four); ranges of 64 KiB
 * items against those 2 MiB chunks, alternating in one process (session
 * 7): base 1.4-3.5 % faster, the 8 MiB o projection 5-7 %, LoRA-Flow
 * 0-2 %; items of 16 or 256 KiB the same within noise.
 *
 * A job may carry the stacked adapters' second factor B (same rows):
 * y = W x + B z is then one pass over the rows with no second sweep over
 * y.  lf_matvec_staged puts the adapters' first factors (z = A_cat x) in
 * the same batch, as a first stage: its items are the first phase of the
 * ranges (each thread reads its own run of A_cat rows), and a thread that
 * reaches rows whose B z needs z before the stage is done reads the W rows
 * first and then waits (the sums are the same, bit for bit).  As a batch
 * of its own the first stage drew 23-24 GB/s against 30 for the base
 * products (1b F16, 88 such batches a token); as items claimed from a
 * shared counter, 18 GB/s per thread against 27-30, in ranges 26.5 (pool.c). */
#include "simd.h"
#include "../core/util.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Below this many weight bytes a batch is not worth waking the team. */
#define PARALLEL_MIN_BYTES (96u << 10)

static size_t elem_bytes(lf_dtype t) {
    switch ((int)t) {
    case LF_F32: return 4;
    case LF_F16: case LF_BF16: return 2;
    case (int)LF_Q8: return 1;
    default: return 4;
    }
}

static size_t row_cost(const lf_matvec_job *j) {
    size_t c = (size_t)j->W->cols * elem_bytes(j->W->dtype) + 64;
    if (j->B) c += (size_t)j->B->cols * elem_bytes(j->B->dtype);
    return c;
}

/* What a job needs at run time: its kernels and its x (quantised for Q8). */
typedef struct {
    lf_rowdot_fn dw, db;
    const void *xw, *xb;
    lf_q8_act qw, qb;
    size_t cost; /* bytes per row */
} job_rt;

/* quant_b: quantise a Q8 B's z now (else after the first stage, which
 * computes it: quantise_bz). */
static int prepare(const lf_matvec_job *jobs, job_rt *rts, int i, int isa, int quant_b) {
    const lf_matvec_job *j = &jobs[i];
    job_rt *rt = &rts[i];
    memset(rt, 0, sizeof *rt);
    rt->dw = lf_rowdot_for(j->W->dtype, isa);
    rt->xw = j->x;
    if (j->W->dtype == LF_Q8) {
        /* jobs of the same x (q, k and v; gate and up) share its 8-bit form */
        for (int k = 0; k < i && rt->xw == j->x; k++)
            if (jobs[k].W->dtype == LF_Q8 && jobs[k].x == j->x && jobs[k].W->cols == j->W->cols) rt->xw = rts[k].xw;
        if (rt->xw == j->x) {
            if (lf_q8_act_init(&rt->qw, j->W->cols)) return -1;
            lf_q8_act_quantize(&rt->qw, j->x);
            rt->xw = &rt->qw;
        }
    }
    if (j->B) {
        rt->db = lf_rowdot_for(j->B->dtype, isa);
        rt->xb = j->z;
        if (j->B->dtype == LF_Q8) {
            if (lf_q8_act_init(&rt->qb, j->B->cols)) return -1;
            if (quant_b) lf_q8_act_quantize(&rt->qb, j->z);
            rt->xb = &rt->qb;
        }
    }
    rt->cost = row_cost(j);
    return 0;
}

/* Rows r0 .. r1-1 of one job; wx: their W x when already computed, or
 * NULL. */
static void run_rows(const lf_matvec_job *j, const job_rt *rt, int r0, int r1, const float *wx) {
    float a[4], b[4] = {0, 0, 0, 0};
    for (int r = r0; r < r1; r += 4) {
        int nr = r1 - r < 4 ? r1 - r : 4;
        const float *w = a;
        if (wx) w = wx + (r - r0);
        else rt->dw(j->W, r, nr, rt->xw, a);
        if (j->B) rt->db(j->B, r, nr, rt->xb, b);
        for (int i = 0; i < nr; i++) {
            float v = w[i] + b[i];
            j->y[r + i] = j->accumulate ? j->y[r + i] + v : v;
        }
    }
}

/* Work items: ITEM_BYTES of weights; the first stage's are smaller
 * (a share of its bytes), so that its ranges can be evened out finely. */
#define ITEM_BYTES (64u << 10)
#define PRE_ITEM_MIN (16u << 10)
#define PRE_ITEMS_PER_THREAD 8
#define MAX_JOBS 12 /* 8 jobs and 4 first-stage jobs (before column blocks are split) */

typedef struct {
    const lf_matvec_job *jobs; /* the first stage's jobs, then the others */
    job_rt *rt;
    int n, npre;
    int *first;    /* [n + 1]: first item of each job; first[n] = all items */
    int *rows_per; /* [n] */
    /* first stage: items of the first npre jobs not yet finished; ready
     * once the last of them is done and after_pre has run */
    _Atomic int pre_left, ready;
    void (*after_pre)(void *ctx);
    void *after_ctx;
} batch;

/* Rows r0 .. r1-1 of a job whose B z must wait for the first stage: W x
 * first, then (once the stage is done) the rest of run_rows. */
static void run_rows_waiting(const lf_matvec_job *j, const job_rt *rt, int r0, int r1, batch *b) {
    float *wx = malloc((size_t)(r1 - r0) * sizeof(float));
    if (!wx) abort(); /* a few KiB */
    for (int r = r0; r < r1; r += 4) rt->dw(j->W, r, r1 - r < 4 ? r1 - r : 4, rt->xw, wx + (r - r0));
    for (int spins = 0; !atomic_load_explicit(&b->ready, memory_order_acquire); spins++)
        if (spins < 4096) lf_cpu_relax();
        else sched_yield();
    run_rows(j, rt, r0, r1, wx);
    free(wx);
}

/* After the first stage (and after_pre, which scales z): the 8-bit z of
 * the jobs whose B is Q8 (the stacked adapters with --quantize-adapters). */
static void quantise_bz(batch *b) {
    for (int i = b->npre; i < b->n; i++)
        if (b->jobs[i].B && b->jobs[i].B->dtype == LF_Q8) lf_q8_act_quantize(&b->rt[i].qb, b->jobs[i].z);
}

static void run_chunk(void *ctx, int c) {
    batch *b = ctx;
    int j = 0;
    while (c >= b->first[j + 1]) j++;
    int r0 = (c - b->first[j]) * b->rows_per[j], r1 = r0 + b->rows_per[j];
    if (r1 > b->jobs[j].W->rows) r1 = b->jobs[j].W->rows;
    if (j < b->npre) {
        run_rows(&b->jobs[j], &b->rt[j], r0, r1, NULL);
        if (atomic_fetch_sub_explicit(&b->pre_left, 1, memory_order_acq_rel) == 1) {
            if (b->after_pre) b->after_pre(b->after_ctx);
            quantise_bz(b);
            atomic_store_explicit(&b->ready, 1, memory_order_release);
        }
    } else if (b->npre && !atomic_load_explicit(&b->ready, memory_order_acquire)) {
        run_rows_waiting(&b->jobs[j], &b->rt[j], r0, r1, b);
    } else {
        run_rows(&b->jobs[j], &b->rt[j], r0, r1, NULL);
    }
}

void lf_parallel_for(void (*fn)(void *ctx, int chunk), void *ctx, int nchunks) {
    lf_parallel_chunks(fn, ctx, nchunks, lf_kernels_threads());
}

void lf_matvec_staged(const lf_matvec_job *pre, int npre, void (*after_pre)(void *ctx), void *after_ctx,
                      const lf_matvec_job *jobs, int n) {
    if (n <= 0 && npre <= 0) return;
    if (n > 8 || npre > MAX_JOBS - 8) {
        /* more jobs than one batch holds: the first stage as a batch of its own */
        if (npre > 0) lf_matvec_staged(NULL, 0, NULL, NULL, pre, npre);
        if (after_pre) after_pre(after_ctx);
        if (n > 8) {
            lf_matvec_staged(NULL, 0, NULL, NULL, jobs, 8);
            lf_matvec_staged(NULL, 0, NULL, NULL, jobs + 8, n - 8);
        } else if (n > 0) {
            lf_matvec_staged(NULL, 0, NULL, NULL, jobs, n);
        }
        return;
    }
    /* A matrix in column blocks is one job per block, each over its part
     * of x into its own partial sums (B z goes with the last block), added
     * up in block order once the batch is done; the blocks lie one after
     * the other, so a thread's range is still one run of memory. */
    int nall = npre;
    size_t npart = 0;
    for (int i = 0; i < npre; i++)
        if (pre[i].W->colblock) abort(); /* first-stage jobs are the adapters' A_cat, never in blocks */
    for (int i = 0; i < n; i++) {
        const int nb = lf_mat_nblocks(jobs[i].W);
        nall += nb;
        if (nb > 1) npart += (size_t)nb * jobs[i].W->rows;
    }
    lf_matvec_job *all = malloc((size_t)nall * sizeof *all);
    lf_mat *views = malloc((size_t)nall * sizeof *views);
    job_rt *rt = malloc((size_t)nall * sizeof *rt);
    int *first = calloc((size_t)nall + 1, sizeof *first), *rows_per = malloc((size_t)nall * sizeof *rows_per);
    float *part = npart ? malloc(npart * sizeof *part) : NULL;
    if (!all || !views || !rt || !first || !rows_per || (npart && !part)) abort(); /* a few KiB */
    for (int i = 0; i < npre; i++) all[i] = pre[i];
    float *pp = part;
    for (int i = 0, k = npre; i < n; i++) {
        const int nb = lf_mat_nblocks(jobs[i].W);
        if (nb == 1) {
            all[k++] = jobs[i];
            continue;
        }
        for (int q = 0; q < nb; q++, k++) {
            int c0;
            lf_mat_block(jobs[i].W, q, &views[k], &c0);
            all[k] = (lf_matvec_job){&views[k], jobs[i].x + c0, pp + (size_t)q * jobs[i].W->rows, 0,
                                     q == nb - 1 ? jobs[i].B : NULL, jobs[i].z};
        }
        pp += (size_t)nb * jobs[i].W->rows;
    }
    const int isa = lf_isa();
    /* the threads touch these only in items, all done before
     * lf_parallel_ranges returns */
    batch bt = {.jobs = all, .rt = rt, .n = nall, .npre = npre, .first = first, .rows_per = rows_per,
                .after_pre = after_pre, .after_ctx = after_ctx};
    batch *b = &bt;
    size_t total = 0, total_pre = 0;
    for (int i = 0; i < nall; i++) {
        /* the second stage's z is the first stage's output: quantised by quantise_bz */
        if (prepare(all, rt, i, isa, npre == 0 || i < npre)) abort(); /* a few KiB: out of memory is fatal here */
        total += rt[i].cost * (size_t)all[i].W->rows;
        if (i < npre) total_pre += rt[i].cost * (size_t)all[i].W->rows;
    }
    const int nt = total >= PARALLEL_MIN_BYTES ? lf_kernels_threads() : 1;
    size_t pre_item = total_pre / ((size_t)nt * PRE_ITEMS_PER_THREAD);
    if (pre_item > ITEM_BYTES) pre_item = ITEM_BYTES;
    if (pre_item < PRE_ITEM_MIN) pre_item = PRE_ITEM_MIN;
    for (int i = 0; i < nall; i++) {
        size_t per = (i < npre ? pre_item : ITEM_BYTES) / rt[i].cost / 4 * 4;
        b->rows_per[i] = per < 4 ? 4 : (int)per;
        b->first[i + 1] = b->first[i] + (all[i].W->rows + b->rows_per[i] - 1) / b->rows_per[i];
    }
    atomic_init(&b->pre_left, b->first[npre]);
    atomic_init(&b->ready, npre == 0);
    if (npre > 0 && b->first[npre] == 0) { /* a first stage without rows */
        if (after_pre) after_pre(after_ctx);
        quantise_bz(b);
        atomic_store(&b->ready, 1);
    }
    lf_parallel_ranges(run_chunk, b, b->first[npre], b->first[nall], nt);
    for (int i = 0; i < nall; i++) {
        lf_q8_act_free(&rt[i].qw);
        lf_q8_act_free(&rt[i].qb);
    }
    pp = part;
    for (int i = 0; i < n; i++) { /* the blocks' partial sums, in block order */
        const int nb = lf_mat_nblocks(jobs[i].W), rows = jobs[i].W->rows;
        if (nb == 1) continue;
        float *y = jobs[i].y;
        for (int r = 0; r < rows; r++) {
            float v = pp[r];
            for (int q = 1; q < nb; q++) v += pp[(size_t)q * rows + r];
            y[r] = jobs[i].accumulate ? y[r] + v : v;
        }
        pp += (size_t)nb * rows;
    }
    free(all);
    free(views);
    free(rt);
    free(first);
    free(rows_per);
    free(part);
}

void lf_matvec(const lf_matvec_job *jobs, int n) {
    lf_matvec_staged(NULL, 0, NULL, NULL, jobs, n);
}

/* Few tokens: each group of 4 rows is read from memory once and used for
 * every token while it sits in L1; the groups go in ranges, as a batch's
 * rows do. */
typedef struct {
    float *y;
    const lf_mat *W;
    const void **xs;
    lf_rowdot_fn dot;
    int T, accumulate;
    /* a W in column blocks: its nb blocks as matrices of their own, block q
     * from column q * W->colblock */
    const lf_mat *blocks;
    int nb;
} rows_ctx;

#define ROWS_ITEM 16 /* rows */

static void rows_item(void *ctx, int c) {
    const rows_ctx *b = ctx;
    const int rows = b->W->rows, r1 = (c + 1) * ROWS_ITEM < rows ? (c + 1) * ROWS_ITEM : rows;
    for (int r = c * ROWS_ITEM; r < r1; r += 4) {
        const int nr = r1 - r < 4 ? r1 - r : 4;
        float a[4], p[4];
        for (int t = 0; t < b->T; t++) {
            if (!b->nb) {
                b->dot(b->W, r, nr, b->xs[t], a);
            } else { /* column blocks: their sums added in block order, as lf_matvec does */
                for (int q = 0; q < b->nb; q++) {
                    b->dot(&b->blocks[q], r, nr, (const float *)b->xs[t] + (size_t)q * b->W->colblock, q ? p : a);
                    for (int i = 0; q && i < nr; i++) a[i] += p[i];
                }
            }
            float *o = b->y + (size_t)t * rows + r;
            for (int i = 0; i < nr; i++) o[i] = b->accumulate ? o[i] + a[i] : a[i];
        }
    }
}

void lf_matmul_rows(float *y, const float *x, const lf_mat *W, int T, int accumulate) {
    const int rows = W->rows, cols = W->cols, isa = lf_isa();
    lf_q8_act *qa = NULL;
    const void **xs = malloc((size_t)T * sizeof *xs);
    if (!xs) abort();
    if (W->dtype == LF_Q8) {
        qa = calloc((size_t)T, sizeof *qa);
        if (!qa) abort();
        for (int t = 0; t < T; t++) {
            if (lf_q8_act_init(&qa[t], cols)) abort();
            lf_q8_act_quantize(&qa[t], x + (size_t)t * cols);
            xs[t] = &qa[t];
        }
    } else {
        for (int t = 0; t < T; t++) xs[t] = x + (size_t)t * cols;
    }
    const size_t bytes = (size_t)rows * cols * elem_bytes(W->dtype);
    const int nt = bytes >= PARALLEL_MIN_BYTES ? lf_kernels_threads() : 1;
    rows_ctx b = {y, W, xs, lf_rowdot_for(W->dtype, isa), T, accumulate, NULL, 0};
    lf_mat *blocks = NULL;
    if (W->colblock) {
        b.nb = lf_mat_nblocks(W);
        blocks = malloc((size_t)b.nb * sizeof *blocks);
        if (!blocks) abort();
        for (int q = 0; q < b.nb; q++) lf_mat_block(W, q, &blocks[q], NULL);
        b.blocks = blocks;
    }
    lf_parallel_ranges(rows_item, &b, 0, (rows + ROWS_ITEM - 1) / ROWS_ITEM, nt);
    free(blocks);
    if (qa) {
        for (int t = 0; t < T; t++) lf_q8_act_free(&qa[t]);
        free(qa);
    }
    free(xs);
}
