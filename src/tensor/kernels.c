/* kernels.c: reference and fast compute kernels.
 *
 * The fast matmul converts a block of weight rows to float32 once, into a
 * per-thread buffer, and uses it against every input vector of the batch:
 * in generation (T = 1) this is a single streaming pass over the weights, in
 * prompt processing it amortises the conversion over T tokens.  The dot
 * products are written so that gcc vectorises them; AVX2/FMA/F16C versions
 * are chosen at run time where the CPU has them. */
#include "kernels.h"
#include "../core/util.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define LF_X86 1
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
static void bf16_row_to_f32(float *dst, const uint16_t *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = lf_bf16_to_f32(src[i]);
}

void lf_to_f32(float *dst, const void *src, lf_dtype t, size_t i0, size_t n) {
    switch (t) {
    case LF_F32: memcpy(dst, (const float *)src + i0, n * sizeof(float)); break;
    case LF_F16: f16_row_to_f32(dst, (const uint16_t *)src + i0, n); break;
    case LF_BF16: bf16_row_to_f32(dst, (const uint16_t *)src + i0, n); break;
    default: memset(dst, 0, n * sizeof(float)); break;
    }
}

/* ============================ CPU features ============================ */

static int cpu_avx2 = -1; /* AVX2 + FMA + F16C */

static int have_avx2(void) {
    if (cpu_avx2 < 0) {
#ifdef LF_X86
        __builtin_cpu_init();
        cpu_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                   getenv("LORAFLOW_NO_SIMD") == NULL;
#else
        cpu_avx2 = 0;
#endif
    }
    return cpu_avx2;
}

#ifdef LF_X86
__attribute__((target("avx2,fma,f16c")))
static void f16_row_to_f32_avx2(float *dst, const uint16_t *src, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = lf_f16_to_f32(src[i]);
}

/* Sum of the 8 lanes. */
__attribute__((target("avx2,fma")))
static inline float hsum256(__m256 s) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}

__attribute__((target("avx2,fma")))
static float dot_avx2(const float *a, const float *b, int n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    __m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
    float r = hsum256(s);
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}
#endif

static inline float dot(const float *a, const float *b, int n);

#ifdef LF_X86
/* Dot products straight from F16/BF16 weights: one pass over the weight
 * bytes, no conversion buffer (the decoding path, T small). */
__attribute__((target("avx2,fma,f16c")))
static float dot_f16_avx2(const uint16_t *w, const float *x, int n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i))), _mm256_loadu_ps(x + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i + 8))), _mm256_loadu_ps(x + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i + 16))), _mm256_loadu_ps(x + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i + 24))), _mm256_loadu_ps(x + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i))), _mm256_loadu_ps(x + i), s0);
    __m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
    float r = hsum256(s);
    for (; i < n; i++) r += lf_f16_to_f32(w[i]) * x[i];
    return r;
}

__attribute__((target("avx2,fma")))
static float dot_bf16_avx2(const uint16_t *w, const float *x, int n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i a = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + i)));
        __m256i b = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + i + 8)));
        s0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(a, 16)), _mm256_loadu_ps(x + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(b, 16)), _mm256_loadu_ps(x + i + 8), s1);
    }
    __m256 s = _mm256_add_ps(s0, s1);
    float r = hsum256(s);
    for (; i < n; i++) r += lf_bf16_to_f32(w[i]) * x[i];
    return r;
}
#endif

/* Dot product of weight row r (any dtype) with x. */
static float dot_row(const lf_mat *W, int r, const float *x) {
    const int n = W->cols;
    if (W->dtype == LF_F32) return dot((const float *)W->data + (size_t)r * n, x, n);
    const uint16_t *w = (const uint16_t *)W->data + (size_t)r * n;
#ifdef LF_X86
    if (have_avx2()) return W->dtype == LF_F16 ? dot_f16_avx2(w, x, n) : dot_bf16_avx2(w, x, n);
#endif
    float s = 0;
    if (W->dtype == LF_F16) for (int i = 0; i < n; i++) s += lf_f16_to_f32(w[i]) * x[i];
    else for (int i = 0; i < n; i++) s += lf_bf16_to_f32(w[i]) * x[i];
    return s;
}

static void f16_row_to_f32(float *dst, const uint16_t *src, size_t n) {
#ifdef LF_X86
    if (have_avx2()) { f16_row_to_f32_avx2(dst, src, n); return; }
#endif
    for (size_t i = 0; i < n; i++) dst[i] = lf_f16_to_f32(src[i]);
}

/* Portable dot product: 8 partial sums so that the compiler can vectorise. */
static float dot_portable(const float *a, const float *b, int n) {
    float s[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += a[i + j] * b[i + j];
    float r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}

static inline float dot(const float *a, const float *b, int n) {
#ifdef LF_X86
    if (have_avx2()) return dot_avx2(a, b, n);
#endif
    return dot_portable(a, b, n);
}

/* ============================ matmul ============================ */

void lf_matmul_ref(float *y, const float *x, const lf_mat *W, int T, int accumulate) {
    float *row = malloc((size_t)W->cols * sizeof(float));
    if (!row) abort();
    for (int r = 0; r < W->rows; r++) {
        lf_to_f32(row, W->data, W->dtype, (size_t)r * W->cols, (size_t)W->cols);
        for (int t = 0; t < T; t++) {
            double s = 0;
            for (int c = 0; c < W->cols; c++) s += (double)row[c] * x[(size_t)t * W->cols + c];
            float *o = &y[(size_t)t * W->rows + r];
            *o = accumulate ? *o + (float)s : (float)s;
        }
    }
    free(row);
}

#define ROWS_PER_BLOCK 16
#define TOKENS_PER_BLOCK 64

/* Few tokens (decoding): each weight row is read once, straight from its
 * storage, and used for every token while it sits in L1. */
#define DIRECT_MAX_T 4

static void matmul_direct(float *y, const float *x, const lf_mat *W, int T, int accumulate) {
    const int rows = W->rows, cols = W->cols;
#pragma omp parallel for schedule(static) if ((size_t)rows * cols >= 32768)
    for (int r = 0; r < rows; r++) {
        for (int t = 0; t < T; t++) {
            float s = dot_row(W, r, x + (size_t)t * cols);
            float *o = &y[(size_t)t * rows + r];
            *o = accumulate ? *o + s : s;
        }
    }
}

void lf_matmul(float *y, const float *x, const lf_mat *W, int T, int accumulate) {
    const int rows = W->rows, cols = W->cols;
    if (rows == 0 || T == 0) return;
    if (T <= DIRECT_MAX_T) {
        matmul_direct(y, x, W, T, accumulate);
        return;
    }
    const int nblocks = (rows + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK;
    /* Small products are not worth waking the thread team. */
    const int parallel = (size_t)rows * cols * (size_t)T >= 32768;
#pragma omp parallel if (parallel)
    {
        float *buf = NULL;
        if (W->dtype != LF_F32) {
            buf = malloc((size_t)ROWS_PER_BLOCK * cols * sizeof(float));
            if (!buf) abort();
        }
#pragma omp for schedule(static)
        for (int b = 0; b < nblocks; b++) {
            int r0 = b * ROWS_PER_BLOCK;
            int nr = rows - r0 < ROWS_PER_BLOCK ? rows - r0 : ROWS_PER_BLOCK;
            const float *wr;
            if (W->dtype == LF_F32) {
                wr = (const float *)W->data + (size_t)r0 * cols;
            } else {
                lf_to_f32(buf, W->data, W->dtype, (size_t)r0 * cols, (size_t)nr * cols);
                wr = buf;
            }
            for (int t0 = 0; t0 < T; t0 += TOKENS_PER_BLOCK) {
                int t1 = t0 + TOKENS_PER_BLOCK < T ? t0 + TOKENS_PER_BLOCK : T;
                for (int i = 0; i < nr; i++) {
                    const float *wi = wr + (size_t)i * cols;
                    for (int t = t0; t < t1; t++) {
                        float s = dot(wi, x + (size_t)t * cols, cols);
                        float *o = &y[(size_t)t * rows + r0 + i];
                        *o = accumulate ? *o + s : s;
                    }
                }
            }
        }
        free(buf);
    }
}

/* ============================ small kernels ============================ */

void lf_rmsnorm(float *y, const float *x, const float *g, int T, int n, float eps) {
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * n;
        float *yt = y + (size_t)t * n;
        double ss = 0;
        for (int i = 0; i < n; i++) ss += (double)xt[i] * xt[i];
        float inv = (float)(1.0 / sqrt(ss / n + eps));
        for (int i = 0; i < n; i++) yt[i] = g[i] * (xt[i] * inv);
    }
}

void lf_softmax(float *x, int n) {
    float mx = x[0];
    for (int i = 1; i < n; i++) if (x[i] > mx) mx = x[i];
    double s = 0;
    for (int i = 0; i < n; i++) { x[i] = expf(x[i] - mx); s += x[i]; }
    float inv = (float)(1.0 / s);
    for (int i = 0; i < n; i++) x[i] *= inv;
}

float lf_logsumexp(const float *x, int n) {
    float mx = x[0];
    for (int i = 1; i < n; i++) if (x[i] > mx) mx = x[i];
    double s = 0;
    for (int i = 0; i < n; i++) s += exp((double)x[i] - mx);
    return mx + (float)log(s);
}

void lf_swiglu(float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++) a[i] = a[i] / (1.0f + expf(-a[i])) * b[i];
}

void lf_kernels_set_threads(int n) {
    if (n > 0) omp_set_num_threads(n);
}
