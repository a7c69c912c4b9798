/* train_kernels.c: transposed products, weight gradients and the RMSNorm
 * backward step. */
#include "train_kernels.h"
#include "simd.h"
#include "kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef LF_X86
#include <immintrin.h>
#endif

/* ============================ dx = dy W ============================ */

void lf_matmul_tn_ref(float *dx, const float *dy, const lf_mat *W, int T, int accumulate) {
    const int rows = W->rows, cols = W->cols;
    float *row = malloc((size_t)cols * sizeof(float));
    double *acc = calloc((size_t)T * cols, sizeof(double));
    if (!row || !acc) abort();
    for (int r = 0; r < rows; r++) {
        lf_mat_row_f32(row, W, r);
        for (int t = 0; t < T; t++) {
            const double d = dy[(size_t)t * rows + r];
            for (int c = 0; c < cols; c++) acc[(size_t)t * cols + c] += d * row[c];
        }
    }
    for (size_t i = 0; i < (size_t)T * cols; i++) dx[i] = accumulate ? dx[i] + (float)acc[i] : (float)acc[i];
    free(row);
    free(acc);
}

#define TN_ROWS 32   /* weight rows converted per block */
#define TN_COLS 512  /* output columns per task: a thread owns its columns */

/* From this many tokens on the backward products go through the blocked
 * GEMM (gemm.c); below, the plain loops (few tokens: the weights are read
 * once either way). */
#define GEMM_MIN_T 8

/* dx = dy W is the GEMM with W in place of W^T: its panels are rows of W
 * as they lie.  Few tokens: the kernel threads split the columns of dx
 * (no two write the same value); each converts blocks of TN_ROWS weight
 * rows (its column slice) once and applies them to every token. */
typedef struct {
    float *dx, *dW;
    const float *dy, *x;
    const lf_mat *W;
    int T, rows, cols;
} few_job;

/* Threads for a few-token product of rows x cols x T. */
static int few_threads(int rows, int cols, int T) {
    return (size_t)rows * cols * (size_t)T >= 65536 ? lf_kernels_threads() : 1;
}

static void tn_chunk(void *ctx, int cb) {
    const few_job *j = ctx;
    const int rows = j->rows, cols = j->cols, c0 = cb * TN_COLS, nc = cols - c0 < TN_COLS ? cols - c0 : TN_COLS;
    float *buf = malloc((size_t)TN_ROWS * TN_COLS * sizeof(float));
    if (!buf) abort();
    for (int r0 = 0; r0 < rows; r0 += TN_ROWS) {
        const int nr = rows - r0 < TN_ROWS ? rows - r0 : TN_ROWS;
        lf_mat_rows_f32(buf, nc, j->W, r0, nr, c0, nc);
        for (int t = 0; t < j->T; t++) {
            float *o = j->dx + (size_t)t * cols + c0;
            const float *d = j->dy + (size_t)t * rows + r0;
            for (int i = 0; i < nr; i++) {
                const float di = d[i];
                if (di == 0.0f) continue;
                const float *wr = buf + (size_t)i * nc;
                for (int c = 0; c < nc; c++) o[c] += di * wr[c];
            }
        }
    }
    free(buf);
}

void lf_matmul_tn(float *dx, const float *dy, const lf_mat *W, int T, int accumulate) {
    const int rows = W->rows, cols = W->cols;
    if (T >= GEMM_MIN_T) {
        lf_gemm_mode(dx, dy, (size_t)rows, 1, W, 1, T, accumulate, lf_products_bf16());
        return;
    }
    if (!accumulate) memset(dx, 0, (size_t)T * cols * sizeof(float));
    few_job j = {.dx = dx, .dy = dy, .W = W, .T = T, .rows = rows, .cols = cols};
    lf_parallel_chunks(tn_chunk, &j, (cols + TN_COLS - 1) / TN_COLS, few_threads(rows, cols, T));
}

void lf_matmul_many(const lf_product *o, int n, const float *x, int T) {
    if (n <= 0) return;
    if (T >= GEMM_MIN_T) {
        lf_gemm_many(o, n, x, (size_t)(o[0].wtrans ? o[0].W->rows : o[0].W->cols), 1, T, lf_products_bf16());
        return;
    }
    for (int i = 0; i < n; i++) {
        if (o[i].wtrans) lf_matmul_tn(o[i].y, x, o[i].W, T, o[i].accumulate);
        else lf_matmul(o[i].y, x, o[i].W, T, o[i].accumulate);
    }
}

/* ============================ dW += dy^T x ============================ */

void lf_matmul_wgrad_ref(float *dW, const float *dy, const float *x, int T, int rows, int cols) {
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            double s = 0;
            for (int t = 0; t < T; t++) s += (double)dy[(size_t)t * rows + r] * x[(size_t)t * cols + c];
            dW[(size_t)r * cols + c] += (float)s;
        }
}

/* dW += dy^T x is the GEMM whose "tokens" are the rows of dW: the left
 * operand dy^T is dy read with transposed strides, the right one x [T, cols]
 * taken as W with W in place of W^T.  Few tokens: the kernel threads split
 * the rows of dW, WG_ROWS at a time; each row is an axpy over the tokens. */
#define WG_ROWS 16

static void wgrad_chunk(void *ctx, int c) {
    const few_job *j = ctx;
    const int r1 = (c + 1) * WG_ROWS < j->rows ? (c + 1) * WG_ROWS : j->rows;
    for (int r = c * WG_ROWS; r < r1; r++) {
        float *o = j->dW + (size_t)r * j->cols;
        for (int t = 0; t < j->T; t++) {
            const float d = j->dy[(size_t)t * j->rows + r];
            if (d == 0.0f) continue;
            const float *xt = j->x + (size_t)t * j->cols;
            for (int k = 0; k < j->cols; k++) o[k] += d * xt[k];
        }
    }
}

void lf_matmul_wgrad(float *dW, const float *dy, const float *x, int T, int rows, int cols) {
    if (T >= GEMM_MIN_T) {
        const lf_mat X = {.dtype = LF_F32, .data = x, .rows = T, .cols = cols};
        lf_gemm_ex(dW, dy, 1, (size_t)rows, &X, 1, rows, 1);
        return;
    }
    few_job j = {.dW = dW, .dy = dy, .x = x, .T = T, .rows = rows, .cols = cols};
    lf_parallel_chunks(wgrad_chunk, &j, (rows + WG_ROWS - 1) / WG_ROWS, few_threads(rows, cols, T));
}

/* ============================ RMSNorm ============================ */

/* y_i = g_i x_i inv;  dx_j = inv (g_j dy_j) - x_j inv^3 / n * sum_i g_i dy_i x_i */
/* Rows t0 .. t1-1 of lf_rmsnorm_backward. */
static void rmsnorm_backward_rows(float *dx, float *dg, const float *dy, const float *x, const float *g, int t0,
                                  int t1, int n, float eps) {
    for (int t = t0; t < t1; t++) {
        const float *xt = x + (size_t)t * n, *dyt = dy + (size_t)t * n;
        float *dxt = dx + (size_t)t * n;
        double ss = 0, dot = 0;
        for (int i = 0; i < n; i++) {
            ss += (double)xt[i] * xt[i];
            dot += (double)g[i] * dyt[i] * xt[i];
        }
        const double inv = 1.0 / sqrt(ss / n + eps);
        const double k = dot * inv * inv * inv / n;
        for (int i = 0; i < n; i++) dxt[i] += (float)(inv * g[i] * dyt[i] - k * xt[i]);
        if (dg)
            for (int i = 0; i < n; i++) dg[i] += (float)(dyt[i] * xt[i] * inv);
    }
}

#define RMS_ROWS 16

typedef struct {
    float *dx;
    const float *dy, *x, *g;
    int T, n;
    float eps;
} rms_job;

static void rms_chunk(void *ctx, int c) {
    const rms_job *j = ctx;
    const int t1 = (c + 1) * RMS_ROWS < j->T ? (c + 1) * RMS_ROWS : j->T;
    rmsnorm_backward_rows(j->dx, NULL, j->dy, j->x, j->g, c * RMS_ROWS, t1, j->n, j->eps);
}

/* Without dg (the norm's weight frozen) the rows are independent and go
 * on the kernel threads; dg sums over the rows, in order, on one. */
void lf_rmsnorm_backward(float *dx, float *dg, const float *dy, const float *x, const float *g,
                         int T, int n, float eps) {
    if (!dg && (size_t)T * n >= 65536) {
        rms_job j = {dx, dy, x, g, T, n, eps};
        lf_parallel_chunks(rms_chunk, &j, (T + RMS_ROWS - 1) / RMS_ROWS, lf_kernels_threads());
        return;
    }
    rmsnorm_backward_rows(dx, dg, dy, x, g, 0, T, n, eps);
}

/* ============================ SwiGLU backward ============================ */

void lf_swiglu_backward_ref(float *dg, float *du, const float *dact, const float *g, const float *u, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const float gi = g[i], sg = 1.0f / (1.0f + expf(-gi));
        du[i] = dact[i] * gi * sg;
        dg[i] = dact[i] * u[i] * sg * (1.0f + gi * (1.0f - sg));
    }
}

/* The sigmoid through lf_exp_f32 (the forward pass's exp), 256 values at
 * a time, in chunks on the kernel threads: a scalar expf over the
 * 2.9 million values of a 512-token layer of the 1b shape, on one thread
 * while the other waited, was 2-4% of a gate-training step. */
#define SWIGLU_CHUNK 16384

typedef struct {
    float *dg, *du;
    const float *dact, *g, *u;
    size_t n;
} swiglu_job;

/* The loop after the exps, 16 values at a time (the same operations in
 * the same order as the scalar loop). */
#ifdef LF_X86
__attribute__((target("avx512f"))) static int swiglu_grad_avx512(float *dg, float *du, const float *da,
                                                                  const float *g, const float *u, const float *e,
                                                                  int m) {
    const __m512 one = _mm512_set1_ps(1.0f);
    int i = 0;
    for (; i + 16 <= m; i += 16) {
        const __m512 gi = _mm512_loadu_ps(g + i), d = _mm512_loadu_ps(da + i);
        const __m512 sg = _mm512_div_ps(one, _mm512_add_ps(one, _mm512_loadu_ps(e + i)));
        _mm512_storeu_ps(du + i, _mm512_mul_ps(_mm512_mul_ps(d, gi), sg));
        const __m512 t = _mm512_add_ps(one, _mm512_mul_ps(gi, _mm512_sub_ps(one, sg)));
        _mm512_storeu_ps(dg + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(d, _mm512_loadu_ps(u + i)), sg), t));
    }
    return i;
}
#endif

static void swiglu_chunk(void *ctx, int c) {
    const swiglu_job *j = ctx;
    const size_t i1 = ((size_t)c + 1) * SWIGLU_CHUNK < j->n ? ((size_t)c + 1) * SWIGLU_CHUNK : j->n;
    float e[256];
    for (size_t i0 = (size_t)c * SWIGLU_CHUNK; i0 < i1; i0 += 256) {
        const int m = i1 - i0 < 256 ? (int)(i1 - i0) : 256;
        const float *restrict g = j->g + i0, *restrict u = j->u + i0, *restrict da = j->dact + i0;
        float *restrict dg = j->dg + i0, *restrict du = j->du + i0;
        for (int i = 0; i < m; i++) e[i] = -g[i];
        lf_exp_f32(e, m);
        int i0v = 0;
#ifdef LF_X86
        if (lf_isa() == LF_ISA_AVX512) i0v = swiglu_grad_avx512(dg, du, da, g, u, e, m);
#endif
        for (int i = i0v; i < m; i++) {
            const float gi = g[i], sg = 1.0f / (1.0f + e[i]);
            du[i] = da[i] * gi * sg;
            dg[i] = da[i] * u[i] * sg * (1.0f + gi * (1.0f - sg));
        }
    }
}

void lf_swiglu_backward(float *dg, float *du, const float *dact, const float *g, const float *u, size_t n) {
    swiglu_job j = {dg, du, dact, g, u, n};
    const size_t nch = (n + SWIGLU_CHUNK - 1) / SWIGLU_CHUNK;
    lf_parallel_chunks(swiglu_chunk, &j, (int)nch, nch > 1 ? lf_kernels_threads() : 1);
}
