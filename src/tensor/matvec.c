/* matvec.c: threaded matrix-vector products for decoding.
 *
 * A decoding step is bound by memory bandwidth, and on a few cores one core
 * cannot draw all of it: every product is split between the threads of
 * OpenMP's pool (created once; no thread is started per call).  lf_matvec
 * takes a batch of products (q, k and v; gate and up) and splits the rows
 * of all of them by bytes, so that the team wakes once per batch and each
 * thread streams one contiguous stretch of weights.  A job may carry the
 * stacked adapters' second factor B (same rows): y = W x + B z is then one
 * pass over the rows with no second sweep over y. */
#include "simd.h"
#include "../core/util.h"

#include <omp.h>
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
    size_t cost, first; /* bytes per row, cumulated bytes before the job */
} job_rt;

static int prepare(const lf_matvec_job *j, job_rt *rt, int isa) {
    memset(rt, 0, sizeof *rt);
    rt->dw = lf_rowdot_for(j->W->dtype, isa);
    rt->xw = j->x;
    if (j->W->dtype == LF_Q8) {
        if (lf_q8_act_init(&rt->qw, j->W->cols)) return -1;
        lf_q8_act_quantize(&rt->qw, j->x);
        rt->xw = &rt->qw;
    }
    if (j->B) {
        rt->db = lf_rowdot_for(j->B->dtype, isa);
        rt->xb = j->z;
        if (j->B->dtype == LF_Q8) {
            if (lf_q8_act_init(&rt->qb, j->B->cols)) return -1;
            lf_q8_act_quantize(&rt->qb, j->z);
            rt->xb = &rt->qb;
        }
    }
    rt->cost = row_cost(j);
    return 0;
}

/* Rows r0 .. r1-1 of one job. */
static void run_rows(const lf_matvec_job *j, const job_rt *rt, int r0, int r1) {
    float a[4], b[4] = {0, 0, 0, 0};
    for (int r = r0; r < r1; r += 4) {
        int nr = r1 - r < 4 ? r1 - r : 4;
        rt->dw(j->W, r, nr, rt->xw, a);
        if (j->B) rt->db(j->B, r, nr, rt->xb, b);
        for (int i = 0; i < nr; i++) {
            float v = a[i] + b[i];
            j->y[r + i] = j->accumulate ? j->y[r + i] + v : v;
        }
    }
}

/* First row of job j that thread part p of np starts at (a multiple of 4,
 * so that the 4-row kernels run whole; monotone in p, so the parts tile). */
static int boundary(const lf_matvec_job *j, const job_rt *rt, size_t total, int p, int np) {
    size_t at = (size_t)((double)total * p / np);
    if (at <= rt->first) return 0;
    size_t r = (at - rt->first + rt->cost - 1) / rt->cost;
    r = (r + 2) / 4 * 4;
    return r > (size_t)j->W->rows ? j->W->rows : (int)r;
}

extern int lf_rowdot_nta;
void lf_matvec(const lf_matvec_job *jobs, int n) {
    if (n <= 0) return;
    if (lf_rowdot_nta < 0) lf_rowdot_nta = getenv("LORAFLOW_NTA") != NULL;
    const int isa = lf_isa();
    job_rt stack_rt[8];
    job_rt *rt = n <= 8 ? stack_rt : malloc((size_t)n * sizeof *rt);
    if (!rt) abort();
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        if (prepare(&jobs[i], &rt[i], isa)) abort(); /* a few KiB: out of memory is fatal here */
        rt[i].first = total;
        total += rt[i].cost * (size_t)jobs[i].W->rows;
    }
    const int nt = total >= PARALLEL_MIN_BYTES ? lf_kernels_threads() : 1;
    if (nt <= 1) {
        for (int i = 0; i < n; i++) run_rows(&jobs[i], &rt[i], 0, jobs[i].W->rows);
    } else {
#pragma omp parallel num_threads(nt)
        {
            const int p = omp_get_thread_num(), np = omp_get_num_threads();
            for (int i = 0; i < n; i++) {
                int r0 = boundary(&jobs[i], &rt[i], total, p, np);
                int r1 = p + 1 == np ? jobs[i].W->rows : boundary(&jobs[i], &rt[i], total, p + 1, np);
                if (r1 > r0) run_rows(&jobs[i], &rt[i], r0, r1);
            }
        }
    }
    for (int i = 0; i < n; i++) {
        lf_q8_act_free(&rt[i].qw);
        lf_q8_act_free(&rt[i].qb);
    }
    if (rt != stack_rt) free(rt);
}

/* Few tokens: each group of 4 rows is read from memory once and used for
 * every token while it sits in L1. */
void lf_matmul_rows(float *y, const float *x, const lf_mat *W, int T, int accumulate) {
    const int rows = W->rows, cols = W->cols, isa = lf_isa();
    lf_rowdot_fn dot = lf_rowdot_for(W->dtype, isa);
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
    const int groups = (rows + 3) / 4;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int g = 0; g < groups; g++) {
        const int r = g * 4, nr = rows - r < 4 ? rows - r : 4;
        float a[4];
        for (int t = 0; t < T; t++) {
            dot(W, r, nr, xs[t], a);
            float *o = y + (size_t)t * rows + r;
            for (int i = 0; i < nr; i++) o[i] = accumulate ? o[i] + a[i] : a[i];
        }
    }
    if (qa) {
        for (int t = 0; t < T; t++) lf_q8_act_free(&qa[t]);
        free(qa);
    }
    free(xs);
}
