/* rowdot.c: dot products of up to 4 weight rows with one float32 vector,
 * straight from the weights' storage (F32, F16, BF16): the decoding kernel.
 *
 * Decoding reads every weight byte once per token, so these loops are bound
 * by memory bandwidth: they only have to convert and multiply faster than
 * the bytes arrive, and keep the memory system streaming.  Short rows go
 * four at a time, sharing each load of x; long rows go one at a time in
 * memory order (see below).  The Q8 rows are in q8.c. */
#include "simd.h"

#include <string.h>

#ifdef LF_X86
#include <immintrin.h>
#endif

/* ============================ portable ============================ */

static inline float ld_f32(const void *p, size_t i) { return ((const float *)p)[i]; }
static inline float ld_f16(const void *p, size_t i) { return lf_f16_to_f32(((const uint16_t *)p)[i]); }
static inline float ld_bf16(const void *p, size_t i) { return lf_bf16_to_f32(((const uint16_t *)p)[i]); }

/* Eight partial sums per row so that the compiler may vectorise. */
#define PORTABLE_ROWDOT(NAME, ES, LD)                                                  \
    void NAME(const lf_mat *W, int r0, int nr, const void *xv, float *out) {          \
        const int n = W->cols;                                                         \
        const float *x = xv;                                                           \
        for (int i = 0; i < nr; i++) {                                                 \
            const void *w = (const char *)W->data + ((size_t)r0 + i) * n * (ES);       \
            float s[8] = {0};                                                          \
            int c = 0;                                                                 \
            for (; c + 8 <= n; c += 8)                                                 \
                for (int j = 0; j < 8; j++) s[j] += LD(w, (size_t)c + j) * x[c + j];   \
            float r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])); \
            for (; c < n; c++) r += LD(w, (size_t)c) * x[c];                           \
            out[i] = r;                                                                \
        }                                                                              \
    }

PORTABLE_ROWDOT(lf_rowdot_portable_f32, 4, ld_f32)
PORTABLE_ROWDOT(lf_rowdot_portable_f16, 2, ld_f16)
PORTABLE_ROWDOT(lf_rowdot_portable_bf16, 2, ld_bf16)

#ifdef LF_X86
/* Rows longer than LF_SHORT_ROW bytes (the base weights) are read one at a
 * time, in memory order, 64 columns per step, with the bytes LF_LONG_AHEAD
 * further on requested as they go: a single sequential stream reads faster
 * than four rows side by side, which the hardware prefetchers treat as four
 * streams that each stop at a 4 KiB page (1 GiB of F16 rows of 2048 on two
 * Sapphire Rapids cores, AVX-512: 30.7 GB/s against 28.3, where a plain
 * read loop draws 34-35; 1b F16 decoding on the AVX2 path: 12.99 -> 14.56
 * tokens/s).  Shorter rows (the adapters' B_cat) go four at a time,
 * sharing the loads of x, and ask for the group after next at the start.
 * Where lf_cpu_prefetch() says so (AMD), the AVX-512 path asks
 * LF_LONG_AHEAD_NT ahead, as non-temporal (a weight byte is read once per
 * token): its lines then leave L1 first and x stays there, which matters
 * for long rows (x of the down projection is 22 KiB; on an AMD EPYC
 * guest, 2 threads, 2048 x 5632 F16 rows drew 46 GB/s against 60 for
 * 5632 x 2048, and 52-58 this way; the other shapes 1-5 % more,
 * alternating in one process; 1b decoding +1-2 %).  On Sapphire Rapids
 * non-temporal prefetches 2 KiB ahead cut 1b decoding from 13.6 to 5.6
 * tokens/s (session 5): the lines left L1 before they were used.  On AMD
 * Zen 4 (a guest, 2 threads) prefetches into L1 or non-temporal ones read
 * slower than none at all, and none slower than asking into L2 only, 8,
 * 16 and 24 KiB ahead (LF_LONG_AHEAD_T1, LF_LONG_REACH_T1; cpu.c gives the
 * figures): the hardware prefetchers then bring the lines from L2 to L1,
 * and those into L2 run further ahead of them; a line asked for once,
 * 8 or 16 KiB ahead, is read slower than one asked for at both (perhaps
 * some of the requests are dropped when the queues are full).  B_cat's
 * four-row groups read the same with the group after next asked for into
 * L1 or L2; asking into L2 for the groups 4, 8 and 12 after them as well
 * (LF_SHORT_REACH_T1) made LoRA-Flow's decoding 0.99-1.04x faster, median
 * 1.025x (8 runs taking turns token by token; base, which has no short
 * rows, 0.97-1.02x in the same runs). */
/* (LF_SHORT_ROW and the LF_LONG_AHEAD distances in simd.h) */

/* ============================ AVX2 ============================ */

#define T_AVX2 __attribute__((target("avx2,fma,f16c")))

T_AVX2 static inline __m256 v8_f32(const void *p, size_t i) { return _mm256_loadu_ps((const float *)p + i); }
T_AVX2 static inline __m256 v8_f16(const void *p, size_t i) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
}
T_AVX2 static inline __m256 v8_bf16(const void *p, size_t i) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

T_AVX2 static inline float hsum8(__m256 s) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}

/* One long row: sum_c w[c] x[c]. */
#define AVX2_LONGROW(NAME, ES, V8, LD)                                                 \
    T_AVX2 static float NAME(const char *w, const float *x, int n) {                   \
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                    \
        __m256 a4 = a0, a5 = a0, a6 = a0, a7 = a0;                                     \
        int c = 0;                                                                     \
        for (; c + 64 <= n; c += 64) {                                                 \
            for (int q = 0; q < (ES); q++)                                             \
                _mm_prefetch(w + (size_t)c * (ES) + LF_LONG_AHEAD + 64 * q, _MM_HINT_T0); \
            a0 = _mm256_fmadd_ps(V8(w, c), _mm256_loadu_ps(x + c), a0);                \
            a1 = _mm256_fmadd_ps(V8(w, c + 8), _mm256_loadu_ps(x + c + 8), a1);        \
            a2 = _mm256_fmadd_ps(V8(w, c + 16), _mm256_loadu_ps(x + c + 16), a2);      \
            a3 = _mm256_fmadd_ps(V8(w, c + 24), _mm256_loadu_ps(x + c + 24), a3);      \
            a4 = _mm256_fmadd_ps(V8(w, c + 32), _mm256_loadu_ps(x + c + 32), a4);      \
            a5 = _mm256_fmadd_ps(V8(w, c + 40), _mm256_loadu_ps(x + c + 40), a5);      \
            a6 = _mm256_fmadd_ps(V8(w, c + 48), _mm256_loadu_ps(x + c + 48), a6);      \
            a7 = _mm256_fmadd_ps(V8(w, c + 56), _mm256_loadu_ps(x + c + 56), a7);      \
        }                                                                              \
        for (; c + 8 <= n; c += 8) a0 = _mm256_fmadd_ps(V8(w, c), _mm256_loadu_ps(x + c), a0); \
        a0 = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));              \
        a4 = _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7));              \
        float s = hsum8(_mm256_add_ps(a0, a4));                                        \
        for (; c < n; c++) s += LD(w, (size_t)c) * x[c];                               \
        return s;                                                                      \
    }

AVX2_LONGROW(longrow8_f32, 4, v8_f32, ld_f32)
AVX2_LONGROW(longrow8_f16, 2, v8_f16, ld_f16)
AVX2_LONGROW(longrow8_bf16, 2, v8_bf16, ld_bf16)

/* Long rows one at a time (above); four short rows (nr == 4) share the
 * loads of x; fewer go one at a time. */
#define AVX2_ROWDOT(NAME, ES, V8, LD, LONGROW)                                         \
    T_AVX2 void NAME(const lf_mat *W, int r0, int nr, const void *xv, float *out) {   \
        const int n = W->cols;                                                         \
        const float *x = xv;                                                           \
        const size_t ld = (size_t)n * (ES);                                            \
        const char *w0 = (const char *)W->data + (size_t)r0 * ld;                      \
        if (ld > LF_SHORT_ROW) {                                                          \
            for (int i = 0; i < nr; i++) out[i] = LONGROW(w0 + (size_t)i * ld, x, n);  \
            return;                                                                    \
        }                                                                              \
        if (nr == 4) {                                                                 \
            const char *w1 = w0 + ld, *w2 = w1 + ld, *w3 = w2 + ld;                    \
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                \
            __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;                                 \
            int c = 0;                                                                 \
            for (; c + 16 <= n; c += 16) {                                             \
                __m256 x0 = _mm256_loadu_ps(x + c), x1 = _mm256_loadu_ps(x + c + 8);   \
                a0 = _mm256_fmadd_ps(V8(w0, c), x0, a0);                               \
                a1 = _mm256_fmadd_ps(V8(w1, c), x0, a1);                               \
                a2 = _mm256_fmadd_ps(V8(w2, c), x0, a2);                               \
                a3 = _mm256_fmadd_ps(V8(w3, c), x0, a3);                               \
                b0 = _mm256_fmadd_ps(V8(w0, c + 8), x1, b0);                           \
                b1 = _mm256_fmadd_ps(V8(w1, c + 8), x1, b1);                           \
                b2 = _mm256_fmadd_ps(V8(w2, c + 8), x1, b2);                           \
                b3 = _mm256_fmadd_ps(V8(w3, c + 8), x1, b3);                           \
            }                                                                          \
            for (; c + 8 <= n; c += 8) {                                               \
                __m256 x0 = _mm256_loadu_ps(x + c);                                    \
                a0 = _mm256_fmadd_ps(V8(w0, c), x0, a0);                               \
                a1 = _mm256_fmadd_ps(V8(w1, c), x0, a1);                               \
                a2 = _mm256_fmadd_ps(V8(w2, c), x0, a2);                               \
                a3 = _mm256_fmadd_ps(V8(w3, c), x0, a3);                               \
            }                                                                          \
            float s0 = hsum8(_mm256_add_ps(a0, b0)), s1 = hsum8(_mm256_add_ps(a1, b1)); \
            float s2 = hsum8(_mm256_add_ps(a2, b2)), s3 = hsum8(_mm256_add_ps(a3, b3)); \
            for (; c < n; c++) {                                                       \
                s0 += LD(w0, (size_t)c) * x[c];                                        \
                s1 += LD(w1, (size_t)c) * x[c];                                        \
                s2 += LD(w2, (size_t)c) * x[c];                                        \
                s3 += LD(w3, (size_t)c) * x[c];                                        \
            }                                                                          \
            out[0] = s0; out[1] = s1; out[2] = s2; out[3] = s3;                        \
            return;                                                                    \
        }                                                                              \
        for (int i = 0; i < nr; i++) {                                                 \
            const char *w = w0 + (size_t)i * ld;                                       \
            __m256 a = _mm256_setzero_ps(), b = a;                                     \
            int c = 0;                                                                 \
            for (; c + 16 <= n; c += 16) {                                             \
                a = _mm256_fmadd_ps(V8(w, c), _mm256_loadu_ps(x + c), a);              \
                b = _mm256_fmadd_ps(V8(w, c + 8), _mm256_loadu_ps(x + c + 8), b);      \
            }                                                                          \
            for (; c + 8 <= n; c += 8) a = _mm256_fmadd_ps(V8(w, c), _mm256_loadu_ps(x + c), a); \
            float s = hsum8(_mm256_add_ps(a, b));                                      \
            for (; c < n; c++) s += LD(w, (size_t)c) * x[c];                           \
            out[i] = s;                                                                \
        }                                                                              \
    }

AVX2_ROWDOT(lf_rowdot_avx2_f32, 4, v8_f32, ld_f32, longrow8_f32)
AVX2_ROWDOT(lf_rowdot_avx2_f16, 2, v8_f16, ld_f16, longrow8_f16)
AVX2_ROWDOT(lf_rowdot_avx2_bf16, 2, v8_bf16, ld_bf16, longrow8_bf16)

/* ============================ AVX-512 ============================ */

#define T_512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

/* The four sums of a0 .. a3 at once (short rows, such as the adapters'
 * B_cat of rank 128, spend as long in the sums as in the products). */
T_512 static inline __m128 hsum4x16(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
    __m256 s0 = _mm256_add_ps(_mm512_castps512_ps256(a0), _mm512_extractf32x8_ps(a0, 1));
    __m256 s1 = _mm256_add_ps(_mm512_castps512_ps256(a1), _mm512_extractf32x8_ps(a1, 1));
    __m256 s2 = _mm256_add_ps(_mm512_castps512_ps256(a2), _mm512_extractf32x8_ps(a2, 1));
    __m256 s3 = _mm256_add_ps(_mm512_castps512_ps256(a3), _mm512_extractf32x8_ps(a3, 1));
    __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(s0, s1), _mm256_hadd_ps(s2, s3));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* Loads of 16 values; the masked forms read only the first k (tails). */
T_512 static inline __m512 v16_f32(const void *p, size_t i) { return _mm512_loadu_ps((const float *)p + i); }
T_512 static inline __m512 v16_f16(const void *p, size_t i) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)p + i)));
}
T_512 static inline __m512 v16_bf16(const void *p, size_t i) {
    __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)p + i)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}
T_512 static inline __m512 m16_f32(const void *p, size_t i, __mmask16 k) {
    return _mm512_maskz_loadu_ps(k, (const float *)p + i);
}
T_512 static inline __m512 m16_f16(const void *p, size_t i, __mmask16 k) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, (const uint16_t *)p + i));
}
T_512 static inline __m512 m16_bf16(const void *p, size_t i, __mmask16 k) {
    __m512i v = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, (const uint16_t *)p + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

/* One long row: sum_c w[c] x[c], asking for the bytes AHEAD, 2 AHEAD, ..
 * REACH AHEAD further on with prefetch hint HINT (REACH 0: not asking). */
#define AVX512_LONGROW(NAME, ES, V16, M16, AHEAD, REACH, HINT)                         \
    T_512 static float NAME(const char *w, const float *x, int n, __mmask16 km) {      \
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                    \
        int c = 0;                                                                     \
        for (; c + 64 <= n; c += 64) {                                                 \
            for (int k = 1; k <= (REACH); k++)                                         \
                for (int q = 0; q < (ES); q++)                                         \
                    _mm_prefetch(w + (size_t)c * (ES) + k * (AHEAD) + 64 * q, HINT);   \
            a0 = _mm512_fmadd_ps(V16(w, c), _mm512_loadu_ps(x + c), a0);               \
            a1 = _mm512_fmadd_ps(V16(w, c + 16), _mm512_loadu_ps(x + c + 16), a1);     \
            a2 = _mm512_fmadd_ps(V16(w, c + 32), _mm512_loadu_ps(x + c + 32), a2);     \
            a3 = _mm512_fmadd_ps(V16(w, c + 48), _mm512_loadu_ps(x + c + 48), a3);     \
        }                                                                              \
        for (; c + 16 <= n; c += 16) a0 = _mm512_fmadd_ps(V16(w, c), _mm512_loadu_ps(x + c), a0); \
        if (c < n) a1 = _mm512_fmadd_ps(M16(w, c, km), _mm512_maskz_loadu_ps(km, x + c), a1); \
        return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3))); \
    }

AVX512_LONGROW(longrow_f32, 4, v16_f32, m16_f32, LF_LONG_AHEAD, 1, _MM_HINT_T0)
AVX512_LONGROW(longrow_f16, 2, v16_f16, m16_f16, LF_LONG_AHEAD, 1, _MM_HINT_T0)
AVX512_LONGROW(longrow_bf16, 2, v16_bf16, m16_bf16, LF_LONG_AHEAD, 1, _MM_HINT_T0)
AVX512_LONGROW(longrow_nt_f32, 4, v16_f32, m16_f32, LF_LONG_AHEAD_NT, 1, _MM_HINT_NTA)
AVX512_LONGROW(longrow_nt_f16, 2, v16_f16, m16_f16, LF_LONG_AHEAD_NT, 1, _MM_HINT_NTA)
AVX512_LONGROW(longrow_nt_bf16, 2, v16_bf16, m16_bf16, LF_LONG_AHEAD_NT, 1, _MM_HINT_NTA)
AVX512_LONGROW(longrow_np_f32, 4, v16_f32, m16_f32, 0, 0, _MM_HINT_T0)
AVX512_LONGROW(longrow_np_f16, 2, v16_f16, m16_f16, 0, 0, _MM_HINT_T0)
AVX512_LONGROW(longrow_np_bf16, 2, v16_bf16, m16_bf16, 0, 0, _MM_HINT_T0)
AVX512_LONGROW(longrow_t1_f32, 4, v16_f32, m16_f32, LF_LONG_AHEAD_T1, LF_LONG_REACH_T1, _MM_HINT_T1)
AVX512_LONGROW(longrow_t1_f16, 2, v16_f16, m16_f16, LF_LONG_AHEAD_T1, LF_LONG_REACH_T1, _MM_HINT_T1)
AVX512_LONGROW(longrow_t1_bf16, 2, v16_bf16, m16_bf16, LF_LONG_AHEAD_T1, LF_LONG_REACH_T1, _MM_HINT_T1)

/* SHORT_REACH: the four-row groups of short rows also ask for the groups
 * 4, 8, .. 4 SHORT_REACH after them into L2 (0: not). */
#define AVX512_ROWDOT(NAME, ES, V16, M16, LONGROW, SHORT_REACH)                        \
    T_512 void NAME(const lf_mat *W, int r0, int nr, const void *xv, float *out) {    \
        const int n = W->cols;                                                         \
        const float *x = xv;                                                           \
        const size_t ld = (size_t)n * (ES);                                            \
        const char *w0 = (const char *)W->data + (size_t)r0 * ld;                      \
        const int tail = n & 15;                                                       \
        const __mmask16 km = (__mmask16)((1u << tail) - 1);                            \
        if (ld > LF_SHORT_ROW) {                                                          \
            for (int i = 0; i < nr; i++) out[i] = LONGROW(w0 + (size_t)i * ld, x, n, km); \
            return;                                                                    \
        }                                                                              \
        if (nr == 4) {                                                                 \
            const char *w1 = w0 + ld, *w2 = w1 + ld, *w3 = w2 + ld;                    \
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                \
            __m512 b0 = a0, b1 = a0, b2 = a0, b3 = a0;                                 \
            int c = 0;                                                                 \
            for (size_t o = 0; o < 4 * ld; o += 64) /* the group after next */         \
                _mm_prefetch(w0 + 8 * ld + o, _MM_HINT_T0);                            \
            for (int k = 1; k <= (SHORT_REACH); k++)                                   \
                for (size_t o = 0; o < 4 * ld; o += 64)                                \
                    _mm_prefetch(w0 + 16 * k * ld + o, _MM_HINT_T1);                   \
            for (; c + 32 <= n; c += 32) {                                             \
                __m512 x0 = _mm512_loadu_ps(x + c), x1 = _mm512_loadu_ps(x + c + 16); \
                a0 = _mm512_fmadd_ps(V16(w0, c), x0, a0);                              \
                a1 = _mm512_fmadd_ps(V16(w1, c), x0, a1);                              \
                a2 = _mm512_fmadd_ps(V16(w2, c), x0, a2);                              \
                a3 = _mm512_fmadd_ps(V16(w3, c), x0, a3);                              \
                b0 = _mm512_fmadd_ps(V16(w0, c + 16), x1, b0);                         \
                b1 = _mm512_fmadd_ps(V16(w1, c + 16), x1, b1);                         \
                b2 = _mm512_fmadd_ps(V16(w2, c + 16), x1, b2);                         \
                b3 = _mm512_fmadd_ps(V16(w3, c + 16), x1, b3);                         \
            }                                                                          \
            for (; c + 16 <= n; c += 16) {                                             \
                __m512 x0 = _mm512_loadu_ps(x + c);                                    \
                a0 = _mm512_fmadd_ps(V16(w0, c), x0, a0);                              \
                a1 = _mm512_fmadd_ps(V16(w1, c), x0, a1);                              \
                a2 = _mm512_fmadd_ps(V16(w2, c), x0, a2);                              \
                a3 = _mm512_fmadd_ps(V16(w3, c), x0, a3);                              \
            }                                                                          \
            if (tail) {                                                                \
                __m512 x0 = _mm512_maskz_loadu_ps(km, x + c);                          \
                b0 = _mm512_fmadd_ps(M16(w0, c, km), x0, b0);                          \
                b1 = _mm512_fmadd_ps(M16(w1, c, km), x0, b1);                          \
                b2 = _mm512_fmadd_ps(M16(w2, c, km), x0, b2);                          \
                b3 = _mm512_fmadd_ps(M16(w3, c, km), x0, b3);                          \
            }                                                                          \
            _mm_storeu_ps(out, hsum4x16(_mm512_add_ps(a0, b0), _mm512_add_ps(a1, b1),   \
                                        _mm512_add_ps(a2, b2), _mm512_add_ps(a3, b3)));  \
            return;                                                                    \
        }                                                                              \
        for (int i = 0; i < nr; i++) {                                                 \
            const char *w = w0 + (size_t)i * ld;                                       \
            __m512 a = _mm512_setzero_ps(), b = a;                                     \
            int c = 0;                                                                 \
            for (; c + 32 <= n; c += 32) {                                             \
                a = _mm512_fmadd_ps(V16(w, c), _mm512_loadu_ps(x + c), a);             \
                b = _mm512_fmadd_ps(V16(w, c + 16), _mm512_loadu_ps(x + c + 16), b);  \
            }                                                                          \
            for (; c + 16 <= n; c += 16) a = _mm512_fmadd_ps(V16(w, c), _mm512_loadu_ps(x + c), a); \
            if (tail) b = _mm512_fmadd_ps(M16(w, c, km), _mm512_maskz_loadu_ps(km, x + c), b); \
            out[i] = _mm512_reduce_add_ps(_mm512_add_ps(a, b));                        \
        }                                                                              \
    }

AVX512_ROWDOT(lf_rowdot_avx512_f32, 4, v16_f32, m16_f32, longrow_f32, 0)
AVX512_ROWDOT(lf_rowdot_avx512_f16, 2, v16_f16, m16_f16, longrow_f16, 0)
AVX512_ROWDOT(lf_rowdot_avx512_bf16, 2, v16_bf16, m16_bf16, longrow_bf16, 0)
AVX512_ROWDOT(lf_rowdot_avx512nt_f32, 4, v16_f32, m16_f32, longrow_nt_f32, 0)
AVX512_ROWDOT(lf_rowdot_avx512nt_f16, 2, v16_f16, m16_f16, longrow_nt_f16, 0)
AVX512_ROWDOT(lf_rowdot_avx512nt_bf16, 2, v16_bf16, m16_bf16, longrow_nt_bf16, 0)
AVX512_ROWDOT(lf_rowdot_avx512np_f32, 4, v16_f32, m16_f32, longrow_np_f32, 0)
AVX512_ROWDOT(lf_rowdot_avx512np_f16, 2, v16_f16, m16_f16, longrow_np_f16, 0)
AVX512_ROWDOT(lf_rowdot_avx512np_bf16, 2, v16_bf16, m16_bf16, longrow_np_bf16, 0)
AVX512_ROWDOT(lf_rowdot_avx512t1_f32, 4, v16_f32, m16_f32, longrow_t1_f32, LF_SHORT_REACH_T1)
AVX512_ROWDOT(lf_rowdot_avx512t1_f16, 2, v16_f16, m16_f16, longrow_t1_f16, LF_SHORT_REACH_T1)
AVX512_ROWDOT(lf_rowdot_avx512t1_bf16, 2, v16_bf16, m16_bf16, longrow_t1_bf16, LF_SHORT_REACH_T1)
#endif

lf_rowdot_fn lf_rowdot_for(lf_dtype t, int isa) {
#ifdef LF_X86
    if (isa == LF_ISA_AVX512) {
        const int pf = lf_cpu_prefetch();
        /* [pf][F32, F16, BF16, Q8] */
        static const lf_rowdot_fn by_pf[4][4] = {
            [LF_PREFETCH_T0] = {lf_rowdot_avx512_f32, lf_rowdot_avx512_f16, lf_rowdot_avx512_bf16, lf_rowdot_avx512_q8},
            [LF_PREFETCH_NT] = {lf_rowdot_avx512nt_f32, lf_rowdot_avx512nt_f16, lf_rowdot_avx512nt_bf16, lf_rowdot_avx512nt_q8},
            [LF_PREFETCH_NONE] = {lf_rowdot_avx512np_f32, lf_rowdot_avx512np_f16, lf_rowdot_avx512np_bf16, lf_rowdot_avx512np_q8},
            [LF_PREFETCH_T1] = {lf_rowdot_avx512t1_f32, lf_rowdot_avx512t1_f16, lf_rowdot_avx512t1_bf16, lf_rowdot_avx512t1_q8},
        };
        switch ((int)t) {
        case LF_F32: return by_pf[pf][0];
        case LF_F16: return by_pf[pf][1];
        case LF_BF16: return by_pf[pf][2];
        case (int)LF_Q8: return lf_cpu_vnni512() ? by_pf[pf][3] : lf_rowdot_avx2_q8;
        default: return NULL;
        }
    }
    if (isa == LF_ISA_AVX2) {
        switch ((int)t) {
        case LF_F32: return lf_rowdot_avx2_f32;
        case LF_F16: return lf_rowdot_avx2_f16;
        case LF_BF16: return lf_rowdot_avx2_bf16;
        case (int)LF_Q8: return lf_rowdot_avx2_q8;
        default: return NULL;
        }
    }
#else
    (void)isa;
#endif
    switch ((int)t) {
    case LF_F32: return lf_rowdot_portable_f32;
    case LF_F16: return lf_rowdot_portable_f16;
    case LF_BF16: return lf_rowdot_portable_bf16;
    case (int)LF_Q8: return lf_rowdot_portable_q8;
    default: return NULL;
    }
}
