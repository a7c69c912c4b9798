/* vec.c: short float32 vector kernels for attention and the activations:
 * dot product, y += a x, and exp (for softmax and SiLU).
 *
 * exp is computed as 2^n * p(r) with n = round(x / ln 2), r = x - n ln 2
 * (ln 2 split in two for exactness) and p a degree-7 polynomial (Taylor
 * coefficients, |r| <= ln2 / 2): relative error under 2e-7, about what
 * expf gives, at a fraction of its cost. */
#include "simd.h"

#include <math.h>

#ifdef LF_X86
#include <immintrin.h>
#endif

/* Loops over a register array must be unrolled for the array to stay in
 * registers. */
#define UNROLL _Pragma("GCC unroll 8")

/* Attention takes keys and values in blocks of ATT_BLOCK rows that stay
 * in L1 while every query of a group uses them. */
#define ATT_BLOCK 64

/* While a block is used, the next one (after the last block of keys, the
 * first of values) is requested a few lines per step: when decoding, the
 * cache rows come from memory (the weights streamed in between evicted
 * them), and blocks of 16 KiB are too short for the hardware prefetchers
 * to get going. */
typedef struct {
    const char *p, *end;
    int per_step; /* lines */
} att_prefetch;

/* The rows [r0, r1) of X (rows of hd floats), spread over `steps` steps. */
static inline void att_prefetch_set(att_prefetch *c, const float *X, int r0, int r1, int hd, int steps) {
    c->p = (const char *)(X + (size_t)r0 * hd);
    c->end = (const char *)(X + (size_t)r1 * hd);
    const size_t lines = (size_t)(c->end - c->p + 63) / 64;
    c->per_step = steps > 0 ? (int)((lines + (size_t)steps - 1) / (size_t)steps) : (int)lines;
}

static inline void att_prefetch_step(att_prefetch *c) {
    for (int i = 0; i < c->per_step && c->p < c->end; i++, c->p += 64) __builtin_prefetch(c->p, 0, 3);
}

/* The block after [p0, p1) in the order keys, then values. */
static inline void att_prefetch_next(att_prefetch *c, const float *K, const float *V, int p1, int len, int hd,
                                     int keys, int steps) {
    const int r0 = keys && p1 == len ? 0 : p1;
    att_prefetch_set(c, keys && p1 < len ? K : V, r0, r0 + ATT_BLOCK < len ? r0 + ATT_BLOCK : len, hd, steps);
}

#define EXP_HI 88.7228390520684f /* log(FLT_MAX) */
#define EXP_LO -87.3365447504019f /* below: the result is 0 */
#define LOG2E 1.44269504088896341f
#define LN2_HI 0.693359375f
#define LN2_LO -2.12194440e-4f
/* 1/k! for k = 2 .. 7 */
#define P2 5.0000000000e-1f
#define P3 1.6666666667e-1f
#define P4 4.1666666667e-2f
#define P5 8.3333333333e-3f
#define P6 1.3888888889e-3f
#define P7 1.9841269841e-4f

/* ============================ portable ============================ */

static float dot_portable(const float *a, const float *b, int n) {
    float s[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += a[i + j] * b[i + j];
    float r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}

static void axpy_portable(float *y, float a, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

static void exp_portable(float *x, int n) {
    for (int i = 0; i < n; i++) x[i] = expf(x[i]);
}

/* exp(sc - max) in place; returns 1 / sum, which the caller folds into
 * the weights of the values. */
static float softmax_unnorm(float *sc, int len, void (*expf_n)(float *, int)) {
    float mx = sc[0];
    for (int p = 1; p < len; p++) mx = sc[p] > mx ? sc[p] : mx;
    for (int p = 0; p < len; p++) sc[p] -= mx;
    expf_n(sc, len);
    double sum = 0;
    for (int p = 0; p < len; p++) sum += sc[p];
    return (float)(1.0 / sum);
}

static void attend_portable(float *o, const float *q, const float *K, const float *V, int len, int hd,
                            float scale, float *sc) {
    for (int p = 0; p < len; p++) sc[p] = dot_portable(q, K + (size_t)p * hd, hd) * scale;
    const float inv = softmax_unnorm(sc, len, exp_portable);
    for (int j = 0; j < hd; j++) o[j] = 0;
    for (int p = 0; p < len; p++) axpy_portable(o, sc[p] * inv, V + (size_t)p * hd, hd);
}

#ifdef LF_X86
/* ============================ AVX2 ============================ */
#define T_AVX2 __attribute__((target("avx2,fma,f16c")))

T_AVX2 static float dot_avx2(const float *a, const float *b, int n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    __m256 s = _mm256_add_ps(s0, s1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    float r = _mm_cvtss_f32(h);
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}

T_AVX2 static void axpy_avx2(float *y, float a, const float *x, int n) {
    const __m256 av = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

T_AVX2 static __m256 exp8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(EXP_LO);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(EXP_HI));
    __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(LN2_HI), x);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(LN2_LO), r);
    __m256 p = _mm256_set1_ps(P7);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P5));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P2));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    /* 2^k in two halves so that k = 128 (x near EXP_HI) does not overflow the exponent field */
    __m256i ki = _mm256_cvtps_epi32(k);
    __m256i k1 = _mm256_srai_epi32(ki, 1), k2 = _mm256_sub_epi32(ki, k1);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k1, _mm256_set1_epi32(127)), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k2, _mm256_set1_epi32(127)), 23));
    return _mm256_andnot_ps(under, _mm256_mul_ps(_mm256_mul_ps(p, s1), s2));
}

T_AVX2 static void exp_avx2(float *x, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, exp8(_mm256_loadu_ps(x + i)));
    if (i < n) {
        float t[8] = {0};
        for (int j = 0; j < n - i; j++) t[j] = x[i + j];
        _mm256_storeu_ps(t, exp8(_mm256_loadu_ps(t)));
        for (int j = 0; j < n - i; j++) x[i + j] = t[j];
    }
}

static void exp_avx2(float *x, int n);

/* exp(sc - mx) in place (mx: the largest score); returns 1 / sum. */
T_AVX2 static float softmax_avx2(float *sc, int len, float mx) {
    const __m256 m = _mm256_set1_ps(mx);
    __m256 sum = _mm256_setzero_ps();
    int p = 0;
    for (; p + 8 <= len; p += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(sc + p), m));
        _mm256_storeu_ps(sc + p, e);
        sum = _mm256_add_ps(sum, e);
    }
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    float total = _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)));
    if (p < len) {
        float t[8];
        for (int j = 0; j < 8; j++) t[j] = p + j < len ? sc[p + j] - mx : -INFINITY;
        _mm256_storeu_ps(t, exp8(_mm256_loadu_ps(t)));
        for (int j = 0; p + j < len; j++) { sc[p + j] = t[j]; total += t[j]; }
    }
    return 1.0f / total;
}

/* The sums of four vectors, one in each lane of the result. */
T_AVX2 static inline __m128 hsum4_avx2(__m256 a, __m256 b, __m256 c, __m256 d) {
    const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

/* q . k over hd floats (a multiple of 16), in two chains. */
T_AVX2 static inline __m256 dot16_avx2(const float *q, const float *k, int hd) {
    __m256 a = _mm256_mul_ps(_mm256_loadu_ps(q), _mm256_loadu_ps(k));
    __m256 b = _mm256_mul_ps(_mm256_loadu_ps(q + 8), _mm256_loadu_ps(k + 8));
    for (int i = 16; i < hd; i += 16) {
        a = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(k + i), a);
        b = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), _mm256_loadu_ps(k + i + 8), b);
    }
    return _mm256_add_ps(a, b);
}

/* lf_attend_group for hd a multiple of 32 and G <= 64, as the AVX-512
 * kernel below (blocks of keys in L1, four keys per reduction, values in
 * two interleaved sets of accumulators), with the query read from L1 (16
 * registers hold no 64-float query beside the work) and the values done
 * 32 columns at a time. */
T_AVX2 static void attend_group_avx2(float *o, const float *q, int G, const float *K, const float *V, int len, int hd,
                                     float scale, float *sc) {
    float mx[64], inv[64];
    att_prefetch pf;
    for (int g = 0; g < G; g++) mx[g] = -INFINITY;
    for (int p0 = 0; p0 < len; p0 += ATT_BLOCK) {
        const int p1 = p0 + ATT_BLOCK < len ? p0 + ATT_BLOCK : len;
        att_prefetch_next(&pf, K, V, p1, len, hd, 1, G * ((p1 - p0) / 4));
        for (int g = 0; g < G; g++) {
            const float *qg = q + (size_t)g * hd;
            float *s = sc + (size_t)g * len;
            __m128 mx4 = _mm_set1_ps(-INFINITY);
            int p = p0;
            for (; p + 4 <= p1; p += 4) {
                att_prefetch_step(&pf);
                const float *kr = K + (size_t)p * hd;
                const __m128 r = _mm_mul_ps(hsum4_avx2(dot16_avx2(qg, kr, hd), dot16_avx2(qg, kr + hd, hd),
                                                       dot16_avx2(qg, kr + 2 * (size_t)hd, hd),
                                                       dot16_avx2(qg, kr + 3 * (size_t)hd, hd)),
                                            _mm_set1_ps(scale));
                mx4 = _mm_max_ps(mx4, r);
                _mm_storeu_ps(s + p, r);
            }
            for (; p < p1; p++) {
                const __m256 d = dot16_avx2(qg, K + (size_t)p * hd, hd);
                s[p] = _mm_cvtss_f32(hsum4_avx2(d, d, d, d)) * scale;
                mx[g] = s[p] > mx[g] ? s[p] : mx[g];
            }
            mx4 = _mm_max_ps(mx4, _mm_movehl_ps(mx4, mx4));
            mx4 = _mm_max_ss(mx4, _mm_shuffle_ps(mx4, mx4, 1));
            if (_mm_cvtss_f32(mx4) > mx[g]) mx[g] = _mm_cvtss_f32(mx4);
        }
    }
    for (int g = 0; g < G; g++) inv[g] = softmax_avx2(sc + (size_t)g * len, len, mx[g]);
    for (int p0 = 0; p0 < len; p0 += ATT_BLOCK) {
        const int p1 = p0 + ATT_BLOCK < len ? p0 + ATT_BLOCK : len;
        att_prefetch_next(&pf, K, V, p1, len, hd, 0, G * (hd / 32) * ((p1 - p0) / 2));
        for (int g = 0; g < G; g++) {
            const float *s = sc + (size_t)g * len;
            const __m256 iv = _mm256_set1_ps(p1 == len ? inv[g] : 1.0f);
            for (int j0 = 0; j0 < hd; j0 += 32) {
                float *og = o + (size_t)g * hd + j0;
                __m256 a0[4], a1[4];
                UNROLL for (int i = 0; i < 4; i++) {
                    a0[i] = p0 ? _mm256_loadu_ps(og + 8 * i) : _mm256_setzero_ps();
                    a1[i] = _mm256_setzero_ps();
                }
                int p = p0;
                for (; p + 2 <= p1; p += 2) {
                    att_prefetch_step(&pf);
                    const __m256 w0 = _mm256_set1_ps(s[p]), w1 = _mm256_set1_ps(s[p + 1]);
                    const float *v0 = V + (size_t)p * hd + j0, *v1 = v0 + hd;
                    UNROLL for (int i = 0; i < 4; i++) {
                        a0[i] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(v0 + 8 * i), a0[i]);
                        a1[i] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(v1 + 8 * i), a1[i]);
                    }
                }
                if (p < p1) {
                    const __m256 w0 = _mm256_set1_ps(s[p]);
                    UNROLL for (int i = 0; i < 4; i++)
                        a0[i] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(V + (size_t)p * hd + j0 + 8 * i), a0[i]);
                }
                UNROLL for (int i = 0; i < 4; i++) _mm256_storeu_ps(og + 8 * i, _mm256_mul_ps(_mm256_add_ps(a0[i], a1[i]), iv));
            }
        }
    }
}

/* One query against len keys and values (rows of hd floats). */
T_AVX2 static void attend_avx2(float *o, const float *q, const float *K, const float *V, int len, int hd,
                               float scale, float *sc) {
    if (hd % 8) { attend_portable(o, q, K, V, len, hd, scale, sc); return; }
    if (hd % 32 == 0) { attend_group_avx2(o, q, 1, K, V, len, hd, scale, sc); return; }
    for (int p = 0; p < len; p++) sc[p] = dot_avx2(q, K + (size_t)p * hd, hd) * scale;
    const float inv = softmax_unnorm(sc, len, exp_avx2);
    for (int j0 = 0; j0 < hd; j0 += 32) {
        const int nv = hd - j0 < 32 ? (hd - j0) / 8 : 4;
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int p = 0; p < len; p++) {
            const __m256 a = _mm256_set1_ps(sc[p] * inv);
            const float *v = V + (size_t)p * hd + j0;
            for (int i = 0; i < nv; i++) acc[i] = _mm256_fmadd_ps(a, _mm256_loadu_ps(v + 8 * i), acc[i]);
        }
        for (int i = 0; i < nv; i++) _mm256_storeu_ps(o + j0 + 8 * i, acc[i]);
    }
}

/* ============================ AVX-512 ============================ */
#define T_512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

T_512 static float dot_avx512(const float *a, const float *b, int n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, a + i), _mm512_maskz_loadu_ps(k, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

T_512 static void axpy_avx512(float *y, float a, const float *x, int n) {
    const __m512 av = _mm512_set1_ps(a);
    int i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(av, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, k, _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(k, x + i), _mm512_maskz_loadu_ps(k, y + i)));
    }
}

T_512 static __m512 exp16(__m512 x) {
    const __m512 lo = _mm512_set1_ps(EXP_LO);
    __mmask16 ok = _mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ);
    x = _mm512_min_ps(_mm512_max_ps(x, lo), _mm512_set1_ps(EXP_HI));
    __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(LN2_HI), x);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(LN2_LO), r);
    __m512 p = _mm512_set1_ps(P7);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P5));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P2));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_maskz_mov_ps(ok, _mm512_scalef_ps(p, k)); /* scalef: p * 2^k without overflow of k */
}

T_512 static void exp_avx512(float *x, int n) {
    int i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, exp16(_mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(x + i, k, exp16(_mm512_maskz_loadu_ps(k, x + i)));
    }
}

/* exp(sc - mx) in place (mx: the largest score); returns 1 / sum. */
T_512 static float softmax_avx512(float *sc, int len, float mx) {
    const __m512 m = _mm512_set1_ps(mx);
    __m512 sum = _mm512_setzero_ps();
    int p = 0;
    for (; p + 16 <= len; p += 16) {
        const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(sc + p), m));
        _mm512_storeu_ps(sc + p, e);
        sum = _mm512_add_ps(sum, e);
    }
    if (p < len) {
        const __mmask16 k = (__mmask16)((1u << (len - p)) - 1);
        const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, sc + p), m));
        _mm512_mask_storeu_ps(sc + p, k, e);
        sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(k, e));
    }
    return 1.0f / _mm512_reduce_add_ps(sum);
}

/* The sums of four vectors, one in each lane of the result: the 128-bit
 * quarters are added across the vectors first, then within them. */
T_512 static inline __m128 hsum4_avx512(__m512 a, __m512 b, __m512 c, __m512 d) {
    const __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
    const __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xEE));
    __m512 t = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD));
    t = _mm512_add_ps(t, _mm512_permute_ps(t, 0x4E));
    t = _mm512_add_ps(t, _mm512_permute_ps(t, 0xB1));
    return _mm512_castps512_ps128(_mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), t));
}

/* lf_attend_group with hd <= 16 * NV (NV a constant, so that a query and
 * the accumulators stay in registers): keys and values in blocks of
 * ATT_BLOCK rows (16 KiB of each at hd 64), every block used by all G
 * queries while it is in L1.  Scores first (sc [G, len]), four keys per
 * reduction, the largest found on the way; then the values, in two
 * interleaved sets of accumulators so that consecutive keys do not wait
 * on each other's additions, accumulated into o across the blocks and
 * scaled by 1 / sum once at the end. */
#define ATTEND_GROUP_AVX512(NAME, NV)                                                                      \
    T_512 static void NAME(float *o, const float *q, int G, const float *K, const float *V, int len, int hd, \
                           float scale, float *sc) {                                                        \
        __mmask16 km[NV];                                                                                   \
        UNROLL for (int i = 0; i < NV; i++) {                                                               \
            const int m = hd - 16 * i;                                                                      \
            km[i] = (__mmask16)(m >= 16 ? 0xffff : m <= 0 ? 0 : (1u << m) - 1);                             \
        }                                                                                                   \
        float mx[64], inv[64]; /* G <= 64 (lf_attend_group) */                                              \
        att_prefetch pf;                                                                                    \
        for (int g = 0; g < G; g++) mx[g] = -INFINITY;                                                      \
        for (int p0 = 0; p0 < len; p0 += ATT_BLOCK) {                                                       \
            const int p1 = p0 + ATT_BLOCK < len ? p0 + ATT_BLOCK : len;                                     \
            att_prefetch_next(&pf, K, V, p1, len, hd, 1, G * ((p1 - p0) / 4));                              \
            for (int g = 0; g < G; g++) {                                                                   \
                __m512 qv[NV];                                                                              \
                UNROLL for (int i = 0; i < NV; i++) qv[i] = _mm512_maskz_loadu_ps(km[i], q + (size_t)g * hd + 16 * i); \
                float *s = sc + (size_t)g * len;                                                            \
                __m128 mx4 = _mm_set1_ps(-INFINITY);                                                        \
                int p = p0;                                                                                 \
                for (; p + 4 <= p1; p += 4) {                                                               \
                    att_prefetch_step(&pf);                                                                 \
                    __m512 d[4];                                                                            \
                    UNROLL for (int k = 0; k < 4; k++) {                                                    \
                        const float *kr = K + (size_t)(p + k) * hd;                                         \
                        __m512 a = _mm512_mul_ps(qv[0], _mm512_maskz_loadu_ps(km[0], kr));                  \
                        __m512 b = _mm512_mul_ps(qv[1], _mm512_maskz_loadu_ps(km[1], kr + 16));             \
                        UNROLL for (int i = 2; i < NV; i += 2) {                                            \
                            a = _mm512_fmadd_ps(qv[i], _mm512_maskz_loadu_ps(km[i], kr + 16 * i), a);       \
                            b = _mm512_fmadd_ps(qv[i + 1], _mm512_maskz_loadu_ps(km[i + 1], kr + 16 * i + 16), b); \
                        }                                                                                   \
                        d[k] = _mm512_add_ps(a, b);                                                         \
                    }                                                                                       \
                    const __m128 r = _mm_mul_ps(hsum4_avx512(d[0], d[1], d[2], d[3]), _mm_set1_ps(scale)); \
                    mx4 = _mm_max_ps(mx4, r);                                                               \
                    _mm_storeu_ps(s + p, r);                                                                \
                }                                                                                           \
                for (; p < p1; p++) {                                                                       \
                    const float *kr = K + (size_t)p * hd;                                                   \
                    __m512 a = _mm512_mul_ps(qv[0], _mm512_maskz_loadu_ps(km[0], kr));                      \
                    UNROLL for (int i = 1; i < NV; i++) a = _mm512_fmadd_ps(qv[i], _mm512_maskz_loadu_ps(km[i], kr + 16 * i), a); \
                    s[p] = _mm512_reduce_add_ps(a) * scale;                                                 \
                    mx[g] = s[p] > mx[g] ? s[p] : mx[g];                                                    \
                }                                                                                           \
                mx4 = _mm_max_ps(mx4, _mm_movehl_ps(mx4, mx4));                                             \
                mx4 = _mm_max_ss(mx4, _mm_shuffle_ps(mx4, mx4, 1));                                         \
                if (_mm_cvtss_f32(mx4) > mx[g]) mx[g] = _mm_cvtss_f32(mx4);                                 \
            }                                                                                               \
        }                                                                                                   \
        for (int g = 0; g < G; g++) inv[g] = softmax_avx512(sc + (size_t)g * len, len, mx[g]);             \
        for (int p0 = 0; p0 < len; p0 += ATT_BLOCK) {                                                       \
            const int p1 = p0 + ATT_BLOCK < len ? p0 + ATT_BLOCK : len;                                     \
            att_prefetch_next(&pf, K, V, p1, len, hd, 0, G * ((p1 - p0) / 2));                              \
            for (int g = 0; g < G; g++) {                                                                   \
                const float *s = sc + (size_t)g * len;                                                      \
                float *og = o + (size_t)g * hd;                                                             \
                __m512 a0[NV], a1[NV];                                                                      \
                UNROLL for (int i = 0; i < NV; i++) {                                                       \
                    a0[i] = p0 ? _mm512_maskz_loadu_ps(km[i], og + 16 * i) : _mm512_setzero_ps();           \
                    a1[i] = _mm512_setzero_ps();                                                            \
                }                                                                                           \
                int p = p0;                                                                                 \
                for (; p + 2 <= p1; p += 2) {                                                               \
                    att_prefetch_step(&pf);                                                                 \
                    const __m512 w0 = _mm512_set1_ps(s[p]), w1 = _mm512_set1_ps(s[p + 1]);                  \
                    const float *v0 = V + (size_t)p * hd, *v1 = v0 + hd;                                    \
                    UNROLL for (int i = 0; i < NV; i++) {                                                   \
                        a0[i] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(km[i], v0 + 16 * i), a0[i]);      \
                        a1[i] = _mm512_fmadd_ps(w1, _mm512_maskz_loadu_ps(km[i], v1 + 16 * i), a1[i]);      \
                    }                                                                                       \
                }                                                                                           \
                if (p < p1) {                                                                               \
                    const __m512 w0 = _mm512_set1_ps(s[p]);                                                 \
                    UNROLL for (int i = 0; i < NV; i++)                                                     \
                        a0[i] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(km[i], V + (size_t)p * hd + 16 * i), a0[i]); \
                }                                                                                           \
                const __m512 iv = _mm512_set1_ps(p1 == len ? inv[g] : 1.0f);                                \
                UNROLL for (int i = 0; i < NV; i++)                                                         \
                    _mm512_mask_storeu_ps(og + 16 * i, km[i], _mm512_mul_ps(_mm512_add_ps(a0[i], a1[i]), iv)); \
            }                                                                                               \
        }                                                                                                   \
    }

ATTEND_GROUP_AVX512(attend_group64_avx512, 4)
ATTEND_GROUP_AVX512(attend_group128_avx512, 8)

T_512 static void attend_avx512(float *o, const float *q, const float *K, const float *V, int len, int hd,
                                float scale, float *sc) {
    if (hd <= 64) { attend_group64_avx512(o, q, 1, K, V, len, hd, scale, sc); return; }
    if (hd <= 128) { attend_group128_avx512(o, q, 1, K, V, len, hd, scale, sc); return; }
    for (int p = 0; p < len; p++) sc[p] = dot_avx512(q, K + (size_t)p * hd, hd) * scale;
    const float inv = softmax_unnorm(sc, len, exp_avx512);
    for (int j0 = 0; j0 < hd; j0 += 64) {
        const int left = hd - j0 < 64 ? hd - j0 : 64, nv = (left + 15) / 16;
        __mmask16 km[4];
        for (int i = 0; i < 4; i++) {
            int m = left - 16 * i;
            km[i] = (__mmask16)(m >= 16 ? 0xffff : m <= 0 ? 0 : (1u << m) - 1);
        }
        __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
        for (int p = 0; p < len; p++) {
            const __m512 a = _mm512_set1_ps(sc[p] * inv);
            const float *v = V + (size_t)p * hd + j0;
            for (int i = 0; i < nv; i++) acc[i] = _mm512_fmadd_ps(a, _mm512_maskz_loadu_ps(km[i], v + 16 * i), acc[i]);
        }
        for (int i = 0; i < nv; i++) _mm512_mask_storeu_ps(o + j0 + 16 * i, km[i], acc[i]);
    }
}

#endif /* LF_X86 */

/* ============================ dispatch ============================ */

float lf_dot_f32(const float *a, const float *b, int n) {
#ifdef LF_X86
    int isa = lf_isa();
    if (isa == LF_ISA_AVX512) return dot_avx512(a, b, n);
    if (isa == LF_ISA_AVX2) return dot_avx2(a, b, n);
#endif
    return dot_portable(a, b, n);
}

void lf_axpy_f32(float *y, float a, const float *x, int n) {
#ifdef LF_X86
    int isa = lf_isa();
    if (isa == LF_ISA_AVX512) { axpy_avx512(y, a, x, n); return; }
    if (isa == LF_ISA_AVX2) { axpy_avx2(y, a, x, n); return; }
#endif
    axpy_portable(y, a, x, n);
}

#ifdef LF_X86
/* The largest of x[0 .. n-1] (n >= 1). */
T_AVX2 static float max_avx2(const float *x, int n) {
    __m256 m = _mm256_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    float mx = _mm_cvtss_f32(_mm_max_ss(h, _mm_shuffle_ps(h, h, 1)));
    for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    return mx;
}

T_512 static float max_avx512(const float *x, int n) {
    __m512 m = _mm512_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 16 <= n; i += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
    if (i < n) {
        const __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        m = _mm512_mask_max_ps(m, k, m, _mm512_maskz_loadu_ps(k, x + i));
    }
    return _mm512_reduce_max_ps(m);
}
#endif

/* x = softmax(x) (n >= 1; the training attention's rows). */
void lf_softmax(float *x, int n) {
    if (n <= 0) return;
    float inv;
#ifdef LF_X86
    const int isa = lf_isa();
    if (isa == LF_ISA_AVX512) inv = softmax_avx512(x, n, max_avx512(x, n));
    else if (isa == LF_ISA_AVX2) inv = softmax_avx2(x, n, max_avx2(x, n));
    else
#endif
        inv = softmax_unnorm(x, n, exp_portable);
    for (int i = 0; i < n; i++) x[i] *= inv;
}

void lf_exp_f32(float *x, int n) {
#ifdef LF_X86
    int isa = lf_isa();
    if (isa == LF_ISA_AVX512) { exp_avx512(x, n); return; }
    if (isa == LF_ISA_AVX2) { exp_avx2(x, n); return; }
#endif
    exp_portable(x, n);
}

void lf_attend_group(float *o, const float *q, int G, const float *K, const float *V, int len, int hd, float scale,
                     float *sc) {
#ifdef LF_X86
    void (*fn)(float *, const float *, int, const float *, const float *, int, int, float, float *) = NULL;
    const int isa = lf_isa();
    if (isa == LF_ISA_AVX512 && hd <= 64) fn = attend_group64_avx512;
    else if (isa == LF_ISA_AVX512 && hd <= 128) fn = attend_group128_avx512;
    else if (isa == LF_ISA_AVX2 && hd % 32 == 0) fn = attend_group_avx2;
    if (fn && len > 0) {
        for (int g = 0; g < G; g += 64) { /* the kernels' per-query arrays hold 64 */
            const int n = G - g < 64 ? G - g : 64;
            fn(o + (size_t)g * hd, q + (size_t)g * hd, n, K, V, len, hd, scale, sc);
        }
        return;
    }
#endif
    for (int g = 0; g < G; g++) lf_attend(o + (size_t)g * hd, q + (size_t)g * hd, K, V, len, hd, scale, sc);
}

void lf_attend(float *o, const float *q, const float *K, const float *V, int len, int hd, float scale, float *sc) {
#ifdef LF_X86
    int isa = lf_isa();
    if (isa == LF_ISA_AVX512) { attend_avx512(o, q, K, V, len, hd, scale, sc); return; }
    if (isa == LF_ISA_AVX2) { attend_avx2(o, q, K, V, len, hd, scale, sc); return; }
#endif
    attend_portable(o, q, K, V, len, hd, scale, sc);
}
