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

/* One query against len keys and values (rows of hd floats). */
T_AVX2 static void attend_avx2(float *o, const float *q, const float *K, const float *V, int len, int hd,
                               float scale, float *sc) {
    if (hd % 8) { attend_portable(o, q, K, V, len, hd, scale, sc); return; }
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
#endif

static void exp_avx512(float *x, int n);

T_512 static void attend_avx512(float *o, const float *q, const float *K, const float *V, int len, int hd,
                                float scale, float *sc) {
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

void lf_exp_f32(float *x, int n) {
#ifdef LF_X86
    int isa = lf_isa();
    if (isa == LF_ISA_AVX512) { exp_avx512(x, n); return; }
    if (isa == LF_ISA_AVX2) { exp_avx2(x, n); return; }
#endif
    exp_portable(x, n);
}

void lf_attend(float *o, const float *q, const float *K, const float *V, int len, int hd, float scale, float *sc) {
#ifdef LF_X86
    int isa = lf_isa();
    if (isa == LF_ISA_AVX512) { attend_avx512(o, q, K, V, len, hd, scale, sc); return; }
    if (isa == LF_ISA_AVX2) { attend_avx2(o, q, K, V, len, hd, scale, sc); return; }
#endif
    attend_portable(o, q, K, V, len, hd, scale, sc);
}
