/* kernels.c: conversions, the reference matmul, the choice between the
 * decoding and the prompt kernels, and the small elementwise kernels.
 * The products themselves: rowdot.c and q8.c (row dot products per
 * instruction set), matvec.c (threaded decoding), gemm.c (blocked GEMM). */
#include "simd.h"
#include "../core/util.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#ifdef LF_X86
#include <immintrin.h>
#endif

/* ============================ conversions ============================ */

float lf_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do { man <<= 1; e++; } while (!(man & 0x400));
            man &= 0x3ff;
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | (man << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    union { uint32_t u; float f; } v = {.u = bits};
    return v.f;
}

uint16_t lf_f32_to_f16(float f) {
    union { float f; uint32_t u; } v = {.f = f};
    uint32_t x = v.u;
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t exp = (x >> 23) & 0xff;
    uint32_t man = x & 0x7fffff;
    if (exp == 0xff) return sign | 0x7c00 | (man ? 0x200 : 0);
    int e = (int)exp - 127 + 15;
    if (e >= 31) return sign | 0x7c00;
    if (e <= 0) {
        if (e < -10) return sign;
        man |= 0x800000;
        int shift = 14 - e;
        uint32_t half = 1u << (shift - 1);
        uint32_t rounded = man >> shift;
        uint32_t rest = man & ((1u << shift) - 1);
        if (rest > half || (rest == half && (rounded & 1))) rounded++;
        return sign | (uint16_t)rounded;
    }
    uint32_t rounded = ((uint32_t)e << 10) | (man >> 13);
    uint32_t rest = man & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (rounded & 1))) rounded++;
    return sign | (uint16_t)rounded; /* a carry into the exponent is correct rounding */
}

uint16_t lf_f32_to_bf16(float f) {
    union { float f; uint32_t u; } v = {.f = f};
    if ((v.u & 0x7fffffff) > 0x7f800000) return (uint16_t)((v.u >> 16) | 0x40); /* NaN */
    uint32_t r = v.u + 0x7fff + ((v.u >> 16) & 1);
    return (uint16_t)(r >> 16);
}

static void f16_row_to_f32(float *dst, const uint16_t *src, size_t n);
static void bf16_row_to_f32(float *dst, const uint16_t *src, size_t n);

void lf_to_f32(float *dst, const void *src, lf_dtype t, size_t i0, size_t n) {
    switch (t) {
    case LF_F32: memcpy(dst, (const float *)src + i0, n * sizeof(float)); break;
    case LF_F16: f16_row_to_f32(dst, (const uint16_t *)src + i0, n); break;
    case LF_BF16: bf16_row_to_f32(dst, (const uint16_t *)src + i0, n); break;
    default: memset(dst, 0, n * sizeof(float)); break;
    }
}

/* ============================ conversions (fast) ============================ */

#ifdef LF_X86
__attribute__((target("avx2,fma,f16c")))
static void f16_row_to_f32_avx2(float *dst, const uint16_t *src, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = lf_f16_to_f32(src[i]);
}

__attribute__((target("avx2,fma,f16c")))
static void bf16_row_to_f32_avx2(float *dst, const uint16_t *src, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + i)));
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
    }
    for (; i < n; i++) dst[i] = lf_bf16_to_f32(src[i]);
}
#endif

static void f16_row_to_f32(float *dst, const uint16_t *src, size_t n) {
#ifdef LF_X86
    if (lf_isa() >= LF_ISA_AVX2) { f16_row_to_f32_avx2(dst, src, n); return; }
#endif
    for (size_t i = 0; i < n; i++) dst[i] = lf_f16_to_f32(src[i]);
}

static void bf16_row_to_f32(float *dst, const uint16_t *src, size_t n) {
#ifdef LF_X86
    if (lf_isa() >= LF_ISA_AVX2) { bf16_row_to_f32_avx2(dst, src, n); return; }
#endif
    for (size_t i = 0; i < n; i++) dst[i] = lf_bf16_to_f32(src[i]);
}

/* ============================ matrices ============================ */

size_t lf_mat_bytes(const lf_mat *W) {
    const size_t n = (size_t)W->rows * W->cols;
    switch ((int)W->dtype) {
    case LF_F32: return n * 4;
    case LF_F16: case LF_BF16: return n * 2;
    case (int)LF_Q8: return lf_q8_bytes(W->rows, W->cols);
    default: return 0;
    }
}

void lf_mat_row_f32(float *dst, const lf_mat *W, int r) {
    if (W->dtype == LF_Q8) lf_q8_dequant(dst, W, r, 0, W->cols);
    else lf_mat_rows_f32(dst, W->cols, W, r, 1, 0, W->cols);
}

void lf_mat_rows_f32(float *dst, int ld, const lf_mat *W, int r0, int nr, int c0, int nc) {
    for (int i = 0; i < nr; i++) {
        float *d = dst + (size_t)i * ld;
        const int r = r0 + i;
        if (r >= W->rows) memset(d, 0, (size_t)nc * sizeof(float));
        else if (W->dtype == LF_Q8) lf_q8_dequant(d, W, r, c0, nc);
        else
            for (int c = c0; c < c0 + nc;) { /* one run per column block */
                const int e = W->colblock ? (c / W->colblock + 1) * W->colblock : c0 + nc;
                const int n = (e < c0 + nc ? e : c0 + nc) - c;
                lf_to_f32(d + (c - c0), W->data, W->dtype, lf_mat_at(W, r, c), (size_t)n);
                c += n;
            }
    }
}

void lf_mat_block(const lf_mat *W, int b, lf_mat *view, int *c0) {
    *view = *W;
    view->colblock = 0;
    view->panels[0] = view->panels[1] = NULL;
    if (!W->colblock) {
        if (c0) *c0 = 0;
        return;
    }
    const int s = b * W->colblock;
    size_t width;
    view->data = (const char *)W->data + lf_mat_col(W, s, &width) * (W->dtype == LF_F32 ? 4 : 2);
    view->cols = (int)width;
    if (c0) *c0 = s;
}

int lf_colblock_for(lf_dtype t, int cols) {
    if ((t != LF_F32 && t != LF_F16 && t != LF_BF16) || (size_t)cols * sizeof(float) <= LF_COLBLOCK_MAX_X) return 0;
    const int maxc = (int)(LF_COLBLOCK_MAX_X / sizeof(float)), nb = (cols + maxc - 1) / maxc;
    return ((cols + nb - 1) / nb + 63) / 64 * 64;
}

void lf_mat_to_colblocks(void *dst, const lf_mat *src, int colblock, lf_mat *out) {
    /* the readers take runs of up to 32 columns at multiples of 16 inside one block */
    if (colblock <= 0 || colblock % 64 || src->colblock || src->dtype == LF_Q8) abort();
    const size_t es = src->dtype == LF_F32 ? 4 : 2;
    lf_mat W = *src;
    W.data = dst;
    W.colblock = colblock;
    const int rows = src->rows, cols = src->cols;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c += colblock) {
            const int n = cols - c < colblock ? cols - c : colblock;
            memcpy((char *)dst + lf_mat_at(&W, r, c) * es, (const char *)src->data + ((size_t)r * cols + c) * es,
                   (size_t)n * es);
        }
    W.panels[0] = W.panels[1] = NULL;
    *out = W;
}

/* ============================ matmul ============================ */

void lf_matmul_ref(float *y, const float *x, const lf_mat *W, int T, int accumulate) {
    float *row = malloc(((size_t)W->cols + 1) * sizeof(float));
    if (!row) abort();
    for (int r = 0; r < W->rows; r++) {
        lf_mat_row_f32(row, W, r);
        for (int t = 0; t < T; t++) {
            double s = 0;
            for (int c = 0; c < W->cols; c++) s += (double)row[c] * x[(size_t)t * W->cols + c];
            float *o = &y[(size_t)t * W->rows + r];
            *o = accumulate ? *o + (float)s : (float)s;
        }
    }
    free(row);
}

/* Up to this many tokens every weight row is read once, straight from its
 * storage, for all tokens (decoding is memory-bound); beyond, the blocked
 * GEMM (gemm.c) converts each weight once per 256-column slice and reuses
 * it for every token from registers (prompt processing is compute-bound). */
#define ROWS_MAX_T 4

void lf_matmul(float *y, const float *x, const lf_mat *W, int T, int accumulate) {
    if (W->rows <= 0 || T <= 0) return;
    if (T == 1) {
        lf_matvec_job j = {W, x, y, accumulate, NULL, NULL};
        lf_matvec(&j, 1);
    } else if (T <= ROWS_MAX_T) lf_matmul_rows(y, x, W, T, accumulate);
    else lf_gemm(y, x, W, T, accumulate);
}

/* ============================ small kernels ============================ */

static void rmsnorm_rows(float *y, const float *x, const float *g, int t0, int t1, int n, float eps) {
    for (int t = t0; t < t1; t++) {
        const float *xt = x + (size_t)t * n;
        float *yt = y + (size_t)t * n;
        double ss = 0;
        for (int i = 0; i < n; i++) ss += (double)xt[i] * xt[i];
        float inv = (float)(1.0 / sqrt(ss / n + eps));
        for (int i = 0; i < n; i++) yt[i] = g[i] * (xt[i] * inv);
    }
}

/* Many tokens (a prompt, a training sequence) in chunks of rows on the
 * kernel threads: one thread alone took about 1% of a gate-training step
 * while the other waited.  Each row's sums are the same either way. */
#define ELEM_ROWS 16
#define ELEM_PAR 65536 /* values from which the element-wise kernels go on the threads */

typedef struct {
    float *y;
    const float *x, *g;
    int T, n;
    float eps;
} rmsnorm_job;

static void rmsnorm_chunk(void *ctx, int c) {
    const rmsnorm_job *j = ctx;
    const int t1 = (c + 1) * ELEM_ROWS < j->T ? (c + 1) * ELEM_ROWS : j->T;
    rmsnorm_rows(j->y, j->x, j->g, c * ELEM_ROWS, t1, j->n, j->eps);
}

void lf_rmsnorm(float *y, const float *x, const float *g, int T, int n, float eps) {
    if (T > ELEM_ROWS && (size_t)T * n >= ELEM_PAR) {
        rmsnorm_job j = {y, x, g, T, n, eps};
        lf_parallel_chunks(rmsnorm_chunk, &j, (T + ELEM_ROWS - 1) / ELEM_ROWS, lf_kernels_threads());
        return;
    }
    rmsnorm_rows(y, x, g, 0, T, n, eps);
}

float lf_logsumexp(const float *x, int n) {
    float mx = x[0];
    for (int i = 1; i < n; i++) if (x[i] > mx) mx = x[i];
    double s = 0;
    for (int i = 0; i < n; i++) s += exp((double)x[i] - mx);
    return mx + (float)log(s);
}

/* y = silu(a) b = a b / (1 + exp(-a)) over [i0, i1), exp vectorised 256 at a time. */
static void swiglu_range(float *y, const float *a, const float *b, size_t i0, size_t i1) {
    float e[256];
    for (; i0 < i1; i0 += 256) {
        const int m = i1 - i0 < 256 ? (int)(i1 - i0) : 256;
        for (int i = 0; i < m; i++) e[i] = -a[i0 + i];
        lf_exp_f32(e, m);
        for (int i = 0; i < m; i++) y[i0 + i] = a[i0 + i] / (1.0f + e[i]) * b[i0 + i];
    }
}

#define SWIGLU_CHUNK 16384

typedef struct {
    float *y;
    const float *a, *b;
    size_t n;
} swiglu_job;

static void swiglu_chunk(void *ctx, int c) {
    const swiglu_job *j = ctx;
    const size_t i0 = (size_t)c * SWIGLU_CHUNK, i1 = i0 + SWIGLU_CHUNK < j->n ? i0 + SWIGLU_CHUNK : j->n;
    swiglu_range(j->y, j->a, j->b, i0, i1);
}

void lf_swiglu_to(float *y, const float *a, const float *b, size_t n) {
    if (n >= ELEM_PAR) {
        swiglu_job j = {y, a, b, n};
        lf_parallel_chunks(swiglu_chunk, &j, (int)((n + SWIGLU_CHUNK - 1) / SWIGLU_CHUNK), lf_kernels_threads());
        return;
    }
    swiglu_range(y, a, b, 0, n);
}

void lf_swiglu(float *a, const float *b, size_t n) { lf_swiglu_to(a, a, b, n); }

static int kernel_threads = 0;

void lf_kernels_set_threads(int n) {
    if (n > 0) {
        kernel_threads = n;
        omp_set_num_threads(n);
    }
}

int lf_kernels_threads(void) { return kernel_threads > 0 ? kernel_threads : omp_get_max_threads(); }
