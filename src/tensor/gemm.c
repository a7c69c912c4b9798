/* gemm.c: y [T, rows] (+)= x [T, cols] W^T for many tokens (prompt
 * processing), cache-blocked, with float32 arithmetic on any weight dtype;
 * the same with W itself in place of W^T and a strided x, for the backward
 * products of training (train_kernels.c).
 *
 * Blocking (the GotoBLAS/BLIS scheme, with the weights in the role of the
 * packed right-hand panels):
 *   - x is packed once into tiles of MR tokens, [KC][MR] per column slice,
 *     so that the micro-kernel broadcasts MR consecutive floats and the
 *     tiles of one slice (reread for every panel) are contiguous (L2);
 *   - a thread takes GROUP panels of NR weight rows at a time; for each
 *     slice of KC columns it converts them to float32 [KC][NR] (F16, BF16,
 *     Q8: once per slice, not once per token; AVX-512 converts and
 *     transposes 16 x 16 in registers), then runs every token tile over
 *     them: the x tile is reused from L1 across the group, and the group's
 *     block of y, summed in a contiguous buffer, stays in L2 from one slice
 *     to the next;
 *   - the micro-kernel keeps an MR x NR block of y in registers for the
 *     whole slice: per column, NR/16 panel loads and MR broadcasts feed
 *     MR * NR / 16 FMAs.
 * The threads claim groups of panels, so each weight is read and converted
 * once per product.  MR x NR: 12 x 32 (AVX-512, 24 accumulators),
 * 6 x 16 (AVX2, 12 accumulators), 4 x 16 (portable C).
 *
 * bfloat16 products (lf_gemm_mode with bf16, on CPUs with AVX512-BF16):
 * the packed x tiles and weight panels are rounded to bfloat16 and stored
 * as pairs of consecutive columns in one 32-bit lane, [kc/2][MR] and
 * [kc/2][NR]; the micro-kernel's vdpbf16ps adds both products of a pair to
 * a float32 accumulator, twice the multiply-adds of an FMA.  x and the
 * F32/F16/BF16 panels are packed straight into pairs (16 x 16 transposes
 * of 32-bit lanes; W^T's panels interleave two rows of W), Q8 through its
 * float32 panels; a training run may convert every panel once ahead
 * (lf_pairs_panels_new). */
#include "simd.h"
#include "../core/util.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#ifdef LF_X86
#include <immintrin.h>
#endif

#define PF_ROWS 16 /* rows of W ahead that the W^T packings request */
#define KC_MAX 256 /* columns per slice: the x slice of 512 tokens is 512 KiB (L2) */
/* Columns per slice when the kernels read x in place (no packed slice to
 * keep in L2): half as many passes over each y block as with 256; the
 * products that take this path ran 0.97-0.98x the time (5632-wide x of
 * the step's down and gate/up products), 1024 no better. */
#define KC_DIRECT 512
#define GROUP 4    /* panels packed together: their y block (512 tokens x 128 rows, 256 KiB) stays in L2
                      across the column slices, and each x tile is reused from L1 for all of them */

void *lf_xaligned(size_t n) {
    void *p = aligned_alloc(64, (n + 63) / 64 * 64);
    if (!p) abort();
    return p;
}

/* Working buffers kept by each thread from one product to the next, one
 * per use (SCRATCH_*), grown as needed and freed when the thread ends.
 * Allocated for every product, a buffer of this size could come from a
 * fresh mapping each time (glibc maps large blocks), whose pages are
 * faulted in at 0.3-0.5 GB/s on the AMD EPYC guest: packing a 512 x 2048
 * x into a new buffer took 16 times as long as into a kept one.  A buffer
 * already in use by this thread (a product inside a product), larger than
 * SCRATCH_KEEP, or wanted when the thread's table cannot be made is
 * allocated and freed as before.  A thread keeps at most SCRATCH_N of
 * them, each at most SCRATCH_KEEP: 64 MiB holds the largest of a training
 * step, the lm_head's input gradient over 256 loss positions (x: 264 x
 * 32000 floats, 33.8 MB; at 32 MiB it was mapped afresh twice a step). */
enum { SCRATCH_XP, SCRATCH_XB, SCRATCH_YB, SCRATCH_TMP, SCRATCH_PANELS, SCRATCH_PAIRS, SCRATCH_N };
#define SCRATCH_KEEP (64u << 20)
typedef struct {
    void *p;
    size_t n;
    int busy;
} scratch_buf;
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_ok;

static void scratch_free(void *arg) {
    scratch_buf *s = arg;
    for (int i = 0; i < SCRATCH_N; i++) free(s[i].p);
    free(s);
}

static void scratch_init(void) { scratch_ok = pthread_key_create(&scratch_key, scratch_free) == 0; }

/* This thread's table, made on first use (NULL when it cannot be). */
static scratch_buf *scratch_table(void) {
    pthread_once(&scratch_once, scratch_init);
    if (!scratch_ok) return NULL;
    scratch_buf *s = pthread_getspecific(scratch_key);
    if (!s && (s = calloc(SCRATCH_N, sizeof *s)) && pthread_setspecific(scratch_key, s)) {
        free(s);
        s = NULL;
    }
    return s;
}

static void *scratch_get(int slot, size_t n) {
    scratch_buf *s = n <= SCRATCH_KEEP ? scratch_table() : NULL, *b = s ? &s[slot] : NULL;
    if (!b || b->busy) return lf_xaligned(n);
    if (b->n < n) {
        free(b->p);
        b->p = lf_xaligned(n);
        b->n = n;
    }
    b->busy = 1;
    return b->p;
}

static void scratch_put(int slot, void *p) {
    if (!p) return;
    scratch_buf *s = scratch_ok ? pthread_getspecific(scratch_key) : NULL;
    if (s && p == s[slot].p) s[slot].busy = 0;
    else free(p);
}

/* ============================ packing ============================ */

/* x [T, cols] into slices of kcmax columns, each [ntiles][kc][mr] (so
 * that one slice, which every panel of the slice reads, is contiguous),
 * zero-padded past T.  This fills tile `tile` of every slice.  Element
 * (t, c) of x is x[t * st + c * sk]: sk = 1 for a row-major x, st = 1 for
 * a transposed one (the weight gradient's dy^T). */
static void pack_x(float *xp, const float *x, size_t st, size_t sk, int T, int cols, int mr, int tile, int ntiles,
                   int kcmax) {
    const int t0 = tile * mr, mv = T - t0 < mr ? T - t0 : mr;
    for (int k0 = 0; k0 < cols; k0 += kcmax) {
        const int kc = cols - k0 < kcmax ? cols - k0 : kcmax;
        float *dst = xp + (size_t)k0 * ntiles * mr + (size_t)tile * kc * mr;
        if (mv < mr) memset(dst, 0, (size_t)kc * mr * sizeof(float));
        if (sk == 1) {
            for (int i = 0; i < mv; i++) {
                const float *src = x + (size_t)(t0 + i) * st + k0;
                for (int c = 0; c < kc; c++) dst[(size_t)c * mr + i] = src[c];
            }
        } else {
            for (int c = 0; c < kc; c++) {
                const float *src = x + (size_t)(k0 + c) * sk + (size_t)t0 * st;
                for (int i = 0; i < mv; i++) dst[(size_t)c * mr + i] = src[(size_t)i * st];
            }
        }
    }
}

/* The panel [kc][nr] of the transposed weights W^T (rows r0.. of W^T are
 * columns of W): row c0 + c of W, columns r0 .. r0+nr-1, converted as they
 * lie, no transposition; zero past W->cols. */
static void pack_trans(float *panel, const lf_mat *W, int r0, int nr, int c0, int kc, float *tmp) {
    (void)tmp;
    const int nv = W->cols - r0 < nr ? W->cols - r0 : nr;
    for (int c = 0; c < kc; c++) {
        float *d = panel + (size_t)c * nr;
        lf_mat_rows_f32(d, nr, W, c0 + c, 1, r0, nv);
        if (nv < nr) memset(d + nv, 0, (size_t)(nr - nv) * sizeof(float));
    }
}

/* tmp [nr][ld] (rows of the panel) transposed into panel [kc][nr]. */
static void transpose_portable(float *panel, const float *tmp, int ld, int nr, int kc) {
    for (int c = 0; c < kc; c++)
        for (int i = 0; i < nr; i++) panel[(size_t)c * nr + i] = tmp[(size_t)i * ld + c];
}

static void pack_portable(float *panel, const lf_mat *W, int r0, int nr, int c0, int kc, float *tmp) {
    lf_mat_rows_f32(tmp, kc, W, r0, nr, c0, kc);
    transpose_portable(panel, tmp, kc, nr, kc);
}

#ifdef LF_X86
#define T_512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define T_AVX2 __attribute__((target("avx2,fma,f16c")))

/* 16 x 16 float transpose in registers: r[i] = row i in, column i out. */
T_512 static inline void tr16_regs(__m512 r[16]) {
    __m512i v[16];
    for (int i = 0; i < 16; i++) v[i] = _mm512_castps_si512(r[i]);
    lf_tr16_epi32(v);
    for (int i = 0; i < 16; i++) r[i] = _mm512_castsi512_ps(v[i]);
}

T_512 static void transpose_avx512(float *panel, const float *tmp, int ld, int nr, int kc) {
    int c = 0;
    for (; c + 16 <= kc; c += 16)
        for (int i = 0; i < nr; i += 16) {
            __m512 r[16];
            for (int j = 0; j < 16; j++) r[j] = _mm512_loadu_ps(tmp + (size_t)(i + j) * ld + c);
            tr16_regs(r);
            for (int j = 0; j < 16; j++) _mm512_storeu_ps(panel + (size_t)(c + j) * nr + i, r[j]);
        }
    for (; c < kc; c++)
        for (int i = 0; i < nr; i++) panel[(size_t)c * nr + i] = tmp[(size_t)i * ld + c];
}

/* pack_x for a row-major x (sk == 1) and mr <= 16: 16 columns of the
 * tile's rows at a time, transposed in registers (the scalar loop took
 * 5-6 % of a training step on an AVX-512 machine without AMX). */
T_512 static void pack_x_avx512(float *xp, const float *x, size_t st, int T, int cols, int mr, int tile, int ntiles,
                                int kcmax) {
    const int t0 = tile * mr, mv = T - t0 < mr ? T - t0 : mr;
    const __mmask16 out = (__mmask16)((1u << mr) - 1);
    for (int k0 = 0; k0 < cols; k0 += kcmax) {
        const int kc = cols - k0 < kcmax ? cols - k0 : kcmax;
        float *dst = xp + (size_t)k0 * ntiles * mr + (size_t)tile * kc * mr;
        for (int c = 0; c < kc; c += 16) {
            const int m = kc - c < 16 ? kc - c : 16;
            const __mmask16 in = (__mmask16)(m >= 16 ? 0xffff : (1u << m) - 1);
            __m512 r[16];
            for (int i = 0; i < 16; i++)
                r[i] = i < mv ? _mm512_maskz_loadu_ps(in, x + (size_t)(t0 + i) * st + k0 + c) : _mm512_setzero_ps();
            tr16_regs(r);
            for (int j = 0; j < m; j++) _mm512_mask_storeu_ps(dst + (size_t)(c + j) * mr, out, r[j]);
        }
    }
}

/* 16 values of W from element index at (lf_mat_col: 16 columns of one
 * block; the first m when m < 16) as float32. */
T_512 static inline __m512 load16_f32(const lf_mat *W, size_t at, int m) {
    const __mmask16 k = (__mmask16)(m >= 16 ? 0xffff : (1u << m) - 1);
    if (W->dtype == LF_F16)
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, (const uint16_t *)W->data + at));
    if (W->dtype == LF_BF16)
        return _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, (const uint16_t *)W->data + at)), 16));
    return _mm512_maskz_loadu_ps(k, (const float *)W->data + at);
}

/* pack_trans on AVX-512: each row of W gives the panel nr consecutive
 * values, a line or two a page or more from the last row's; requested
 * PF_ROWS rows ahead, as the bfloat16 packing does (Q8: pack_trans). */
T_512 static void pack_trans_avx512(float *panel, const lf_mat *W, int r0, int nr, int c0, int kc, float *tmp) {
    if (W->dtype == LF_Q8) {
        pack_trans(panel, W, r0, nr, c0, kc, tmp);
        return;
    }
    const int nv = W->cols - r0 < nr ? W->cols - r0 : nr;
    const size_t esz = W->dtype == LF_F32 ? 4 : 2;
    const char *base = W->data;
    size_t ld;
    const size_t at0 = lf_mat_col(W, r0, &ld); /* r0 .. r0+nr-1: one column block (nr <= 32) */
    for (int c = 0; c < kc; c++) {
        if (c + PF_ROWS < kc)
            for (size_t b = 0; b < (size_t)nv * esz + 63; b += 64)
                _mm_prefetch(base + (at0 + (size_t)(c0 + c + PF_ROWS) * ld) * esz + b, _MM_HINT_T0);
        float *d = panel + (size_t)c * nr;
        for (int j = 0; j < nr; j += 16) {
            const int m = nv - j < 16 ? (nv - j > 0 ? nv - j : 0) : 16;
            _mm512_store_ps(d + j, m ? load16_f32(W, at0 + (size_t)(c0 + c) * ld + j, m) : _mm512_setzero_ps());
        }
    }
}

/* Panel [kc][nr] of rows r0.. and columns c0..: converted and transposed
 * 16 x 16 at a time in registers, straight from the weights (Q8 goes
 * through tmp). */
T_512 static void pack_avx512(float *panel, const lf_mat *W, int r0, int nr, int c0, int kc, float *tmp) {
    if (W->dtype == LF_Q8) {
        lf_mat_rows_f32(tmp, kc, W, r0, nr, c0, kc);
        transpose_avx512(panel, tmp, kc, nr, kc);
        return;
    }
    const size_t esz = W->dtype == LF_F32 ? 4 : 2;
    for (int c = 0; c < kc; c += 16) {
        const int m = kc - c < 16 ? kc - c : 16;
        const int pf = c % 32 == 0 && c + 64 < kc;
        size_t ld, ldp = 0;
        const size_t at = lf_mat_col(W, c0 + c, &ld), atp = pf ? lf_mat_col(W, c0 + c + 64, &ldp) : 0;
        for (int i = 0; i < nr; i += 16) {
            __m512 r[16];
            /* the same rows' line after next: the panel's rows are a page
             * or more apart, a line or two each, which the hardware
             * prefetchers do not follow */
            if (pf)
                for (int j = 0; j < 16 && r0 + i + j < W->rows; j++)
                    _mm_prefetch((const char *)W->data + (atp + (size_t)(r0 + i + j) * ldp) * esz, _MM_HINT_T0);
            for (int j = 0; j < 16; j++)
                r[j] = r0 + i + j < W->rows ? load16_f32(W, at + (size_t)(r0 + i + j) * ld, m) : _mm512_setzero_ps();
            tr16_regs(r);
            for (int j = 0; j < m; j++) _mm512_store_ps(panel + (size_t)(c + j) * nr + i, r[j]);
        }
    }
}

/* 8 x 8 float transpose. */
T_AVX2 static void tr8(float *dst, size_t ld, const float *src, size_t ls) {
    __m256 r[8], t[8];
    for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + i * ls);
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
    }
    for (int s = 0; s < 4; s++) {
        t[s] = _mm256_permute2f128_ps(r[s], r[4 + s], 0x20);
        t[4 + s] = _mm256_permute2f128_ps(r[s], r[4 + s], 0x31);
    }
    for (int c = 0; c < 8; c++) _mm256_storeu_ps(dst + c * ld, t[c]);
}

T_AVX2 static void transpose_avx2(float *panel, const float *tmp, int ld, int nr, int kc);

T_AVX2 static void pack_avx2(float *panel, const lf_mat *W, int r0, int nr, int c0, int kc, float *tmp) {
    lf_mat_rows_f32(tmp, kc, W, r0, nr, c0, kc);
    transpose_avx2(panel, tmp, kc, nr, kc);
}

T_AVX2 static void transpose_avx2(float *panel, const float *tmp, int ld, int nr, int kc) {
    int c = 0;
    for (; c + 8 <= kc; c += 8)
        for (int i = 0; i < nr; i += 8) tr8(panel + (size_t)c * nr + i, (size_t)nr, tmp + (size_t)i * ld + c, (size_t)ld);
    for (; c < kc; c++)
        for (int i = 0; i < nr; i++) panel[(size_t)c * nr + i] = tmp[(size_t)i * ld + c];
}
#endif

/* ============================ micro-kernels ============================ */

/* One MR x NR block of y over kc columns: y[t0+i, o0+j] (+)= sum_k xp[k][i] panel[k][j].
 * mv, nv: valid tokens and rows of the block; load: start from y (else 0). */
typedef void (*ukernel_fn)(int kc, const float *xp, const void *panel, float *y, int ldy, int mv, int nv,
                           int load);

#if defined(__GNUC__)
/* With GCC's and Clang's vector types, which compile to the target's own
 * 4-lane registers (NEON on ARM, SSE elsewhere): the block's 16 vectors
 * stay in registers where the target has 32 of them.  Written as plain
 * arrays, GCC kept the block in memory (a load and a store per
 * multiply-add). */
typedef float lf_v4 __attribute__((vector_size(16)));

static void ukernel_portable(int kc, const float *xp, const void *pv, float *y, int ldy, int mv, int nv,
                             int load) {
    enum { MR = 4, NR = 16, NV = NR / 4 };
    const float *panel = pv;
    lf_v4 c[MR][NV];
    float t[MR][NR];
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++) t[i][j] = load && i < mv && j < nv ? y[(size_t)i * ldy + j] : 0.0f;
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) memcpy(&c[i][v], &t[i][4 * v], sizeof(lf_v4));
    for (int k = 0; k < kc; k++) {
        lf_v4 w[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) memcpy(&w[v], panel + (size_t)k * NR + 4 * v, sizeof(lf_v4));
        const float *xk = xp + (size_t)k * MR;
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) {
            const lf_v4 b = {xk[i], xk[i], xk[i], xk[i]};
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) c[i][v] += b * w[v];
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) memcpy(&t[i][4 * v], &c[i][v], sizeof(lf_v4));
    for (int i = 0; i < mv; i++)
        for (int j = 0; j < nv; j++) y[(size_t)i * ldy + j] = t[i][j];
}
#else
static void ukernel_portable(int kc, const float *xp, const void *pv, float *y, int ldy, int mv, int nv,
                             int load) {
    enum { MR = 4, NR = 16 };
    const float *panel = pv;
    float c[MR][NR];
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++) c[i][j] = load && i < mv && j < nv ? y[(size_t)i * ldy + j] : 0.0f;
    for (int k = 0; k < kc; k++) {
        const float *w = panel + (size_t)k * NR, *xk = xp + (size_t)k * MR;
        for (int i = 0; i < MR; i++)
            for (int j = 0; j < NR; j++) c[i][j] += xk[i] * w[j];
    }
    for (int i = 0; i < mv; i++)
        for (int j = 0; j < nv; j++) y[(size_t)i * ldy + j] = c[i][j];
}
#endif

#ifdef LF_X86
/* 8 panel values from element i of a panel of dtype dt, as float32. */
T_AVX2 static inline __attribute__((always_inline)) __m256 panel8(const void *panel, size_t i, lf_dtype dt) {
    if (dt == LF_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)panel + i)));
    if (dt == LF_BF16)
        return _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)panel + i))), 16));
    return _mm256_loadu_ps((const float *)panel + i);
}

/* The 6 x 16 block of y that the AVX2 micro-kernels keep in c0 (rows'
 * first 8 columns) and c1 (the next 8): masks of the nv valid columns, the
 * start (y or 0) and the store of the mv valid rows. */
#define MR_AVX2 6
T_AVX2 static inline __attribute__((always_inline)) void block_start_avx2(__m256 c0[MR_AVX2], __m256 c1[MR_AVX2],
                                                                          __m256i m[2], const float *y, int ldy,
                                                                          int mv, int nv, int load) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    m[0] = _mm256_cmpgt_epi32(_mm256_set1_epi32(nv), lane);
    m[1] = _mm256_cmpgt_epi32(_mm256_set1_epi32(nv - 8), lane);
#pragma GCC unroll 6
    for (int i = 0; i < MR_AVX2; i++) {
        if (load && i < mv) {
            c0[i] = _mm256_maskload_ps(y + (size_t)i * ldy, m[0]);
            c1[i] = _mm256_maskload_ps(y + (size_t)i * ldy + 8, m[1]);
        } else {
            c0[i] = c1[i] = _mm256_setzero_ps();
        }
    }
}

T_AVX2 static inline __attribute__((always_inline)) void block_store_avx2(const __m256 c0[MR_AVX2],
                                                                          const __m256 c1[MR_AVX2], const __m256i m[2],
                                                                          float *y, int ldy, int mv) {
#pragma GCC unroll 6
    for (int i = 0; i < MR_AVX2; i++) {
        if (i < mv) {
            _mm256_maskstore_ps(y + (size_t)i * ldy, m[0], c0[i]);
            _mm256_maskstore_ps(y + (size_t)i * ldy + 8, m[1], c1[i]);
        }
    }
}

/* Every loop over the block's rows unrolled, so that the 12 accumulators
 * stay in registers: with a row loop left rolled (a store path through a
 * stack buffer) GCC kept the arrays in memory as well and stored all 12
 * after every column, which held the kernel to about 40% of the FMA rate.
 * The panel is float32 or, packed once (LF_PANELS_OWN), W's own F16/BF16. */
T_AVX2 static inline __attribute__((always_inline)) void ukernel_avx2_dt(int kc, const float *xp, const void *panel,
                                                                         float *y, int ldy, int mv, int nv, int load,
                                                                         lf_dtype dt) {
    enum { MR = MR_AVX2, NR = 16 };
    __m256 c0[MR], c1[MR];
    __m256i m[2];
    block_start_avx2(c0, c1, m, y, ldy, mv, nv, load);
    for (int k = 0; k < kc; k++) {
        const __m256 w0 = panel8(panel, (size_t)k * NR, dt), w1 = panel8(panel, (size_t)k * NR + 8, dt);
        const float *xk = xp + (size_t)k * MR;
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            __m256 b = _mm256_broadcast_ss(xk + i);
            c0[i] = _mm256_fmadd_ps(w0, b, c0[i]);
            c1[i] = _mm256_fmadd_ps(w1, b, c1[i]);
        }
    }
    block_store_avx2(c0, c1, m, y, ldy, mv);
}

T_AVX2 static void ukernel_avx2(int kc, const float *xp, const void *panel, float *y, int ldy, int mv, int nv,
                                int load) {
    ukernel_avx2_dt(kc, xp, panel, y, ldy, mv, nv, load, LF_F32);
}
T_AVX2 static void ukernel_avx2_f16(int kc, const float *xp, const void *panel, float *y, int ldy, int mv, int nv,
                                    int load) {
    ukernel_avx2_dt(kc, xp, panel, y, ldy, mv, nv, load, LF_F16);
}
T_AVX2 static void ukernel_avx2_bf16w(int kc, const float *xp, const void *panel, float *y, int ldy, int mv, int nv,
                                      int load) {
    ukernel_avx2_dt(kc, xp, panel, y, ldy, mv, nv, load, LF_BF16);
}

typedef void (*ukernel_direct_fn)(int kc, const float *x, size_t st, const void *panel, float *y, int ldy, int mv,
                                  int nv, int load);

/* The n rows of a tile read in place: row i at x + i * st, the rows past
 * the mv valid ones repeating the last (their sums are not stored). */
static inline __attribute__((always_inline)) void tile_rows(const float **r, int n, const float *x, size_t st,
                                                            int mv) {
    for (int i = 0; i < n; i++) r[i] = x + (size_t)(i < mv ? i : mv - 1) * st;
}

/* ukernel_avx2_dt reading x's rows where they lie (see ukernel_direct_dt). */
T_AVX2 static inline __attribute__((always_inline)) void ukernel_avx2_direct_dt(int kc, const float *x, size_t st,
                                                                                const void *panel, float *y, int ldy,
                                                                                int mv, int nv, int load, lf_dtype dt) {
    enum { MR = MR_AVX2, NR = 16 };
    __m256 c0[MR], c1[MR];
    __m256i m[2];
    const float *r[MR];
    tile_rows(r, MR, x, st, mv);
    block_start_avx2(c0, c1, m, y, ldy, mv, nv, load);
    for (int k = 0; k < kc; k++) {
        const __m256 w0 = panel8(panel, (size_t)k * NR, dt), w1 = panel8(panel, (size_t)k * NR + 8, dt);
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            __m256 b = _mm256_broadcast_ss(r[i] + k);
            c0[i] = _mm256_fmadd_ps(w0, b, c0[i]);
            c1[i] = _mm256_fmadd_ps(w1, b, c1[i]);
        }
    }
    block_store_avx2(c0, c1, m, y, ldy, mv);
}
T_AVX2 static void ukernel_avx2_direct_f32(int kc, const float *x, size_t st, const void *panel, float *y, int ldy,
                                           int mv, int nv, int load) {
    ukernel_avx2_direct_dt(kc, x, st, panel, y, ldy, mv, nv, load, LF_F32);
}
T_AVX2 static void ukernel_avx2_direct_f16(int kc, const float *x, size_t st, const void *panel, float *y, int ldy,
                                           int mv, int nv, int load) {
    ukernel_avx2_direct_dt(kc, x, st, panel, y, ldy, mv, nv, load, LF_F16);
}
T_AVX2 static void ukernel_avx2_direct_bf16w(int kc, const float *x, size_t st, const void *panel, float *y, int ldy,
                                             int mv, int nv, int load) {
    ukernel_avx2_direct_dt(kc, x, st, panel, y, ldy, mv, nv, load, LF_BF16);
}

/* The 12 x 32 block of y that the AVX-512 micro-kernels keep in c0 (rows'
 * first 16 columns) and c1 (the next 16): masks of the nv valid columns,
 * the start (y or 0) and the store of the mv valid rows. */
#define MR512 12
T_512 static inline __attribute__((always_inline)) void block_start(__m512 c0[MR512], __m512 c1[MR512], __mmask16 m[2],
                                                                     const float *y, int ldy, int mv, int nv, int load) {
    m[0] = (__mmask16)(nv >= 16 ? 0xffff : (1u << nv) - 1);
    m[1] = (__mmask16)(nv >= 32 ? 0xffff : nv <= 16 ? 0 : (1u << (nv - 16)) - 1);
#pragma GCC unroll 12
    for (int i = 0; i < MR512; i++) {
        if (load && i < mv) {
            c0[i] = _mm512_maskz_loadu_ps(m[0], y + (size_t)i * ldy);
            c1[i] = _mm512_maskz_loadu_ps(m[1], y + (size_t)i * ldy + 16);
        } else {
            c0[i] = c1[i] = _mm512_setzero_ps();
        }
    }
}

T_512 static inline __attribute__((always_inline)) void block_store(const __m512 c0[MR512], const __m512 c1[MR512],
                                                                     const __mmask16 m[2], float *y, int ldy, int mv) {
#pragma GCC unroll 12
    for (int i = 0; i < MR512; i++) {
        if (i < mv) {
            _mm512_mask_storeu_ps(y + (size_t)i * ldy, m[0], c0[i]);
            _mm512_mask_storeu_ps(y + (size_t)i * ldy + 16, m[1], c1[i]);
        }
    }
}

/* 16 panel values from element i of a panel of dtype dt, as float32
 * (F16 and BF16 widen exactly). */
T_512 static inline __attribute__((always_inline)) __m512 panel16(const void *panel, size_t i, lf_dtype dt) {
    if (dt == LF_F16) return _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)((const uint16_t *)panel + i)));
    if (dt == LF_BF16)
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_load_si256((const __m256i *)((const uint16_t *)panel + i))), 16));
    return _mm512_load_ps((const float *)panel + i);
}

/* The MR x NR block over kc columns: a panel of float32 (packed as the
 * product goes) or of the weights' own F16/BF16 values (packed once,
 * LF_PANELS_OWN), widened in registers on ports the FMAs do not use. */
T_512 static inline __attribute__((always_inline)) void ukernel_avx512_dt(int kc, const float *xp, const void *panel,
                                                                          float *y, int ldy, int mv, int nv, int load,
                                                                          lf_dtype dt) {
    enum { MR = MR512, NR = 32 };
    __m512 c0[MR], c1[MR];
    __mmask16 m[2];
    block_start(c0, c1, m, y, ldy, mv, nv, load);
    for (int k = 0; k < kc; k++) {
        const __m512 w0 = panel16(panel, (size_t)k * NR, dt), w1 = panel16(panel, (size_t)k * NR + 16, dt);
        const float *xk = xp + (size_t)k * MR;
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            __m512 b = _mm512_set1_ps(xk[i]);
            c0[i] = _mm512_fmadd_ps(w0, b, c0[i]);
            c1[i] = _mm512_fmadd_ps(w1, b, c1[i]);
        }
    }
    block_store(c0, c1, m, y, ldy, mv);
}

T_512 static void ukernel_avx512(int kc, const float *xp, const void *panel, float *y, int ldy, int mv, int nv,
                                 int load) {
    ukernel_avx512_dt(kc, xp, panel, y, ldy, mv, nv, load, LF_F32);
}
T_512 static void ukernel_avx512_f16(int kc, const float *xp, const void *panel, float *y, int ldy, int mv, int nv,
                                     int load) {
    ukernel_avx512_dt(kc, xp, panel, y, ldy, mv, nv, load, LF_F16);
}
T_512 static void ukernel_avx512_bf16w(int kc, const float *xp, const void *panel, float *y, int ldy, int mv, int nv,
                                       int load) {
    ukernel_avx512_dt(kc, xp, panel, y, ldy, mv, nv, load, LF_BF16);
}

/* The same block reading x's rows where they lie (tile_rows) instead of
 * a packed tile: see use_direct. */
T_512 static inline __attribute__((always_inline)) void ukernel_direct_dt(int kc, const float *x, size_t st,
                                                                          const void *panel, float *y, int ldy, int mv,
                                                                          int nv, int load, lf_dtype dt) {
    enum { MR = MR512, NR = 32 };
    __m512 c0[MR], c1[MR];
    __mmask16 m[2];
    const float *r[MR];
    tile_rows(r, MR, x, st, mv);
    block_start(c0, c1, m, y, ldy, mv, nv, load);
    for (int k = 0; k < kc; k++) {
        const __m512 w0 = panel16(panel, (size_t)k * NR, dt), w1 = panel16(panel, (size_t)k * NR + 16, dt);
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            __m512 b = _mm512_set1_ps(r[i][k]);
            c0[i] = _mm512_fmadd_ps(w0, b, c0[i]);
            c1[i] = _mm512_fmadd_ps(w1, b, c1[i]);
        }
    }
    block_store(c0, c1, m, y, ldy, mv);
}
T_512 static void ukernel_direct_f32(int kc, const float *x, size_t st, const void *panel, float *y, int ldy, int mv,
                                     int nv, int load) {
    ukernel_direct_dt(kc, x, st, panel, y, ldy, mv, nv, load, LF_F32);
}
T_512 static void ukernel_direct_f16(int kc, const float *x, size_t st, const void *panel, float *y, int ldy, int mv,
                                     int nv, int load) {
    ukernel_direct_dt(kc, x, st, panel, y, ldy, mv, nv, load, LF_F16);
}
T_512 static void ukernel_direct_bf16w(int kc, const float *x, size_t st, const void *panel, float *y, int ldy,
                                       int mv, int nv, int load) {
    ukernel_direct_dt(kc, x, st, panel, y, ldy, mv, nv, load, LF_BF16);
}
/* The direct micro-kernel of path isa (AVX-512 or AVX2) for panels of dtype dt. */
static ukernel_direct_fn ukernel_direct(int isa, lf_dtype dt) {
    if (isa == LF_ISA_AVX512)
        return dt == LF_F16 ? ukernel_direct_f16 : dt == LF_BF16 ? ukernel_direct_bf16w : ukernel_direct_f32;
    return dt == LF_F16 ? ukernel_avx2_direct_f16 : dt == LF_BF16 ? ukernel_avx2_direct_bf16w : ukernel_avx2_direct_f32;
}

/* The micro-kernel of path isa (AVX-512 or AVX2) for W's own panels of dtype dt. */
static ukernel_fn ukernel_own(int isa, lf_dtype dt) {
    if (isa == LF_ISA_AVX512)
        return dt == LF_F16 ? ukernel_avx512_f16 : dt == LF_BF16 ? ukernel_avx512_bf16w : ukernel_avx512;
    return dt == LF_F16 ? ukernel_avx2_f16 : dt == LF_BF16 ? ukernel_avx2_bf16w : ukernel_avx2;
}

#define T_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c")))

/* Rows 2p and 2p+1 of src [k][n] (float32) as pairs of bfloat16 (round to
 * nearest even): dst [(k + 1) / 2][n], the even row's value in the low
 * half of each 32-bit lane; a missing last odd row counts as 0. */
T_BF16 static void pair_rows(uint32_t *dst, const float *src, int k, int n) {
    const __m512i inter = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22,
                                           6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    for (int p = 0; p < (k + 1) / 2; p++) {
        const float *e = src + (size_t)2 * p * n, *o = e + n;
        const int odd = 2 * p + 1 < k;
        for (int j = 0; j < n; j += 16) {
            const __mmask16 m = (__mmask16)(n - j >= 16 ? 0xffff : (1u << (n - j)) - 1);
            const __m512 a = _mm512_maskz_loadu_ps(m, e + j);
            const __m512 b = odd ? _mm512_maskz_loadu_ps(m, o + j) : _mm512_setzero_ps();
            const __m512i ab = (__m512i)_mm512_cvtne2ps_pbh(b, a); /* a in the low 16 halves, b in the high */
            _mm512_mask_storeu_epi32(dst + (size_t)p * n + j, m, _mm512_permutexvar_epi16(inter, ab));
        }
    }
}

/* 32 consecutive floats (the first m) as 16 pairs of bfloat16 in 32-bit lanes. */
T_BF16 static inline __m512i pairs_of(__m512 lo, __m512 hi) { return (__m512i)_mm512_cvtne2ps_pbh(hi, lo); }

/* Tile `tile` of every slice of a row-major x straight into bfloat16 pairs
 * (xb's layout: [ntiles][(kc + 1) / 2][mr] per slice), 32 columns of the
 * tile's rows at a time, transposed 16 x 16 in registers (mr <= 16). */
T_BF16 static void pack_xb_avx512(uint32_t *xb, const float *x, size_t st, int T, int cols, int mr, int tile,
                                  int ntiles, int kcmax) {
    const int t0 = tile * mr, mv = T - t0 < mr ? T - t0 : mr;
    const __mmask16 out = (__mmask16)((1u << mr) - 1);
    for (int k0 = 0; k0 < cols; k0 += kcmax) {
        const int kc = cols - k0 < kcmax ? cols - k0 : kcmax, kp = (kc + 1) / 2;
        uint32_t *dst = xb + (size_t)k0 / 2 * ntiles * mr + (size_t)tile * kp * mr;
        for (int c = 0; c < kc; c += 32) {
            const int m = kc - c < 32 ? kc - c : 32;
            const __mmask16 in0 = (__mmask16)(m >= 16 ? 0xffff : (1u << m) - 1);
            const __mmask16 in1 = (__mmask16)(m >= 32 ? 0xffff : m <= 16 ? 0 : (1u << (m - 16)) - 1);
            __m512i r[16];
            for (int i = 0; i < 16; i++) {
                if (i < mv) {
                    const float *src = x + (size_t)(t0 + i) * st + k0 + c;
                    r[i] = pairs_of(_mm512_maskz_loadu_ps(in0, src), _mm512_maskz_loadu_ps(in1, src + 16));
                } else {
                    r[i] = _mm512_setzero_si512();
                }
            }
            lf_tr16_epi32(r);
            for (int j = 0; j < (m + 1) / 2; j++) _mm512_mask_storeu_epi32(dst + (size_t)(c / 2 + j) * mr, out, r[j]);
        }
    }
}

/* The panel of rows r0 .. r0+nr-1 (nr a multiple of 16) and columns
 * c0 .. c0+kc-1 of W (F32, F16 or BF16) as bfloat16 pairs [(kc + 1) / 2][nr]:
 * 32 columns of 16 rows at a time, transposed in registers. */
T_BF16 static void pack_pairs_avx512(uint32_t *pb, const lf_mat *W, int r0, int nr, int c0, int kc) {
    const size_t esz = W->dtype == LF_F32 ? 4 : 2;
    for (int c = 0; c < kc; c += 32) {
        const int m = kc - c < 32 ? kc - c : 32;
        /* the two runs of 16 may lie in two column blocks */
        size_t ld0, ld1 = 0, ldp = 0;
        const size_t a0 = lf_mat_col(W, c0 + c, &ld0), a1 = m > 16 ? lf_mat_col(W, c0 + c + 16, &ld1) : 0;
        const size_t atp = c + 64 < kc ? lf_mat_col(W, c0 + c + 64, &ldp) : 0;
        for (int i = 0; i < nr; i += 16) {
            __m512i r[16];
            if (c + 64 < kc) /* the same rows' next lines but one */
                for (int j = 0; j < 16 && r0 + i + j < W->rows; j++)
                    _mm_prefetch((const char *)W->data + (atp + (size_t)(r0 + i + j) * ldp) * esz, _MM_HINT_T0);
            for (int j = 0; j < 16; j++) {
                const size_t row = (size_t)(r0 + i + j);
                r[j] = row < (size_t)W->rows
                           ? pairs_of(load16_f32(W, a0 + row * ld0, m),
                                      m > 16 ? load16_f32(W, a1 + row * ld1, m - 16) : _mm512_setzero_ps())
                           : _mm512_setzero_si512();
            }
            lf_tr16_epi32(r);
            for (int j = 0; j < (m + 1) / 2; j++) _mm512_store_si512(pb + (size_t)(c / 2 + j) * nr + i, r[j]);
        }
    }
}

/* The same panel of W^T (its rows r0.. are columns of W, its columns c0..
 * rows of W): pair p is rows c0+2p and c0+2p+1 of W, whose nr consecutive
 * values are interleaved without a transposition; 0 past W->cols. */
T_BF16 static void pack_pairs_trans_avx512(uint32_t *pb, const lf_mat *W, int r0, int nr, int c0, int kc) {
    const __m512i inter = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22,
                                           6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const int nv = W->cols - r0 < nr ? W->cols - r0 : nr;
    const size_t esz = W->dtype == LF_F32 ? 4 : 2;
    const char *base = W->data;
    size_t ld;
    const size_t at0 = lf_mat_col(W, r0, &ld); /* r0 .. r0+nr-1: one column block (nr <= 32) */
    for (int p = 0; p < (kc + 1) / 2; p++) {
        const int odd = 2 * p + 1 < kc;
        /* each row gives this panel one cache line or two, 4 KiB or more
         * from the last: requested PF_ROWS rows ahead, or each waits for
         * memory (a fifth of the product's time without) */
        if (2 * p + PF_ROWS + 1 < kc)
            for (int q = 0; q < 2; q++)
                for (size_t b = 0; b < nr * esz; b += 64)
                    _mm_prefetch(base + (at0 + (size_t)(c0 + 2 * p + PF_ROWS + q) * ld) * esz + b, _MM_HINT_T0);
        for (int j = 0; j < nr; j += 16) {
            const int m = nv - j < 16 ? (nv - j > 0 ? nv - j : 0) : 16;
            const size_t at = at0 + (size_t)(c0 + 2 * p) * ld + j;
            const __m512 a = m ? load16_f32(W, at, m) : _mm512_setzero_ps();
            const __m512 b = m && odd ? load16_f32(W, at + ld, m) : _mm512_setzero_ps();
            _mm512_store_si512(pb + (size_t)p * nr + j, _mm512_permutexvar_epi16(inter, pairs_of(a, b)));
        }
    }
}

/* Slice k0 (kc columns) of panel r0 of W (wtrans: of W^T) as bfloat16
 * pairs pb [(kc + 1) / 2][32]; Q8 through its float32 panel (fbuf and
 * tmp: 32 x KC_MAX floats each). */
T_BF16 static void pairs_panel(uint32_t *pb, const lf_mat *W, int wtrans, int r0, int k0, int kc, float *fbuf,
                               float *tmp) {
    if (W->dtype == LF_Q8) {
        if (wtrans) pack_trans(fbuf, W, r0, 32, k0, kc, tmp);
        else pack_avx512(fbuf, W, r0, 32, k0, kc, tmp);
        pair_rows(pb, fbuf, kc, 32);
    } else if (wtrans) {
        pack_pairs_trans_avx512(pb, W, r0, 32, k0, kc);
    } else {
        pack_pairs_avx512(pb, W, r0, 32, k0, kc);
    }
}

/* ukernel_avx512 over kp column pairs in bfloat16: xb [kp][MR], pb [kp][NR]. */
T_BF16 static void ukernel_bf16(int kp, const uint32_t *xb, const uint32_t *pb, float *y, int ldy, int mv, int nv,
                                int load) {
    enum { MR = MR512, NR = 32 };
    __m512 c0[MR], c1[MR];
    __mmask16 m[2];
    block_start(c0, c1, m, y, ldy, mv, nv, load);
    for (int k = 0; k < kp; k++) {
        const __m512bh w0 = (__m512bh)_mm512_load_si512(pb + (size_t)k * NR);
        const __m512bh w1 = (__m512bh)_mm512_load_si512(pb + (size_t)k * NR + 16);
        const uint32_t *xk = xb + (size_t)k * MR;
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            const __m512bh b = (__m512bh)_mm512_set1_epi32((int)xk[i]);
            c0[i] = _mm512_dpbf16_ps(c0[i], w0, b);
            c1[i] = _mm512_dpbf16_ps(c1[i], w1, b);
        }
    }
    block_store(c0, c1, m, y, ldy, mv);
}
#endif

/* ============================ driver ============================ */

/* Columns per slice: equal slices of at most kmax (KC_MAX, or KC_DIRECT
 * when the kernels read x in place), a multiple of 16. */
static int slice_cols_max(int cols, int kmax) {
    const int nslices = (cols + kmax - 1) / kmax;
    return ((cols + nslices - 1) / nslices + 15) / 16 * 16;
}
static int slice_cols(int cols) { return slice_cols_max(cols, KC_MAX); }

typedef struct {
    int mr, nr;
    ukernel_fn kernel;
    void (*pack)(float *panel, const lf_mat *W, int r0, int nr, int c0, int kc, float *tmp);  /* W^T's panels */
    void (*packt)(float *panel, const lf_mat *W, int r0, int nr, int c0, int kc, float *tmp); /* W's */
} gemm_shape;

static gemm_shape shape_for(int isa) {
#ifdef LF_X86
    if (isa == LF_ISA_AVX512) return (gemm_shape){12, 32, ukernel_avx512, pack_avx512, pack_trans_avx512};
    if (isa == LF_ISA_AVX2) return (gemm_shape){6, 16, ukernel_avx2, pack_avx2, pack_trans};
#else
    (void)isa;
#endif
    return (gemm_shape){4, 16, ukernel_portable, pack_portable, pack_trans};
}

/* One product of a job: y (+)= x W^T (wtrans 0) or x W (1); its chunks
 * of group panels are the job's chunks first .. the next product's first. */
typedef struct {
    const lf_mat *W;
    float *y;
    void (*pack)(float *panel, const lf_mat *W, int r0, int nr, int c0, int kc, float *tmp);
    /* or NULL: every panel converted already: bf16, pairs [npanels][kp_all][NR] of uint32; float32
     * (AVX-512, AVX2), W's own values [npanels][cols][NR] (LF_PANELS_OWN) */
    const void *pre;
    int rows, npanels, group, first, accumulate, wtrans;
} gemm_prod;

typedef struct {
    gemm_shape sh;
    const float *x;
    size_t xst, xsk; /* strides of x: element (t, c) is x[t * xst + c * xsk] */
    float *xp;
    uint32_t *xb; /* bf16: xp's tiles as bfloat16 pairs, [kcmax/2][ntiles][MR] per slice */
    int kp_all;   /* column pairs of all slices */
    int T, cols, ntiles, kcmax, isa, bf16, n;
    int direct; /* the kernels read x where it lies (ukernel_direct): no xp */
    gemm_prod p[LF_GEMM_MANY_MAX + 1]; /* p[n].first: all chunks */
} gemm_job;

static void pack_x_chunk(void *ctx, int t) {
    const gemm_job *g = ctx;
    const int mr = g->sh.mr;
#ifdef LF_X86
    if (g->bf16 && g->xsk == 1) {
        pack_xb_avx512(g->xb, g->x, g->xst, g->T, g->cols, mr, t, g->ntiles, g->kcmax);
        return;
    }
    if (g->isa == LF_ISA_AVX512 && g->xsk == 1 && mr <= 16)
        pack_x_avx512(g->xp, g->x, g->xst, g->T, g->cols, mr, t, g->ntiles, g->kcmax);
    else
#endif
        pack_x(g->xp, g->x, g->xst, g->xsk, g->T, g->cols, mr, t, g->ntiles, g->kcmax);
#ifdef LF_X86
    if (g->bf16) /* a strided x: paired from its float32 tiles */
        for (int k0 = 0; k0 < g->cols; k0 += g->kcmax) {
            const int kc = g->cols - k0 < g->kcmax ? g->cols - k0 : g->kcmax;
            pair_rows(g->xb + (size_t)k0 / 2 * g->ntiles * mr + (size_t)t * ((kc + 1) / 2) * mr,
                      g->xp + (size_t)k0 * g->ntiles * mr + (size_t)t * kc * mr, kc, mr);
        }
#endif
}

/* g->group panels of rows (one chunk): every column slice, every token tile. */
static void panels_chunk(void *ctx, int chunk) {
    const gemm_job *g = ctx;
    int pi = 0;
    while (chunk >= g->p[pi + 1].first) pi++;
    const gemm_prod *q = &g->p[pi];
    chunk -= q->first;
    const int mr = g->sh.mr, nr = g->sh.nr, rows = q->rows, T = g->T;
    const int g0 = chunk * q->group, ng = q->npanels - g0 < q->group ? q->npanels - g0 : q->group;
    float *tmp = scratch_get(SCRATCH_TMP, (size_t)nr * g->kcmax * sizeof(float));
    float *panels = scratch_get(SCRATCH_PANELS, (size_t)GROUP * nr * g->kcmax * sizeof(float));
    uint32_t *pairs =
        g->bf16 && !q->pre ? scratch_get(SCRATCH_PAIRS, (size_t)GROUP * nr * (g->kcmax / 2) * sizeof(uint32_t)) : NULL;
    /* With more than one slice the group's block of y is summed in a
     * contiguous buffer, rows ng * nr floats apart, and written to y once:
     * y's own rows are rows floats apart (8 KiB for 2048), so the block's
     * lines fell into a sixteenth of L2's sets and went to L3 and back at
     * every slice. */
    const int ldb = ng * nr, nslices = (g->cols + g->kcmax - 1) / g->kcmax;
    float *yb = nslices > 1 ? scratch_get(SCRATCH_YB, (size_t)g->ntiles * mr * ldb * sizeof(float)) : NULL;
    float *yo = yb ? yb : q->y + (size_t)g0 * nr;
    const int ldo = yb ? ldb : rows, nvg = rows - g0 * nr < ldb ? rows - g0 * nr : ldb;
    if (yb && q->accumulate)
        for (int t = 0; t < T; t++) memcpy(yb + (size_t)t * ldb, q->y + (size_t)t * rows + g0 * nr, nvg * sizeof(float));
    for (int k0 = 0; k0 < g->cols; k0 += g->kcmax) {
        const int kc = g->cols - k0 < g->kcmax ? g->cols - k0 : g->kcmax;
        const int load = q->accumulate || k0 > 0;
#ifdef LF_X86
        if (g->bf16) {
            const int kp = (kc + 1) / 2;
            const uint32_t *pw[GROUP];
            for (int j = 0; j < ng; j++) {
                if (q->pre) { /* converted before (lf_pairs_panels_new) */
                    pw[j] = (const uint32_t *)q->pre + ((size_t)(g0 + j) * g->kp_all + k0 / 2) * nr;
                } else {
                    pairs_panel(pairs + (size_t)j * nr * kp, q->W, q->wtrans, (g0 + j) * nr, k0, kc, panels, tmp);
                    pw[j] = pairs + (size_t)j * nr * kp;
                }
            }
            const uint32_t *xs = g->xb + (size_t)k0 / 2 * g->ntiles * mr;
            for (int t = 0; t < g->ntiles; t++) {
                const int mv = T - t * mr < mr ? T - t * mr : mr;
                for (int j = 0; j < ng; j++) {
                    const int o0 = (g0 + j) * nr, nv = rows - o0 < nr ? rows - o0 : nr;
                    ukernel_bf16(kp, xs + (size_t)t * kp * mr, pw[j], yo + (size_t)t * mr * ldo + j * nr, ldo, mv,
                                 nv, load);
                }
            }
            continue;
        }
#endif
        /* float32 panels packed now, or W's own panels (lf_own_panels_new): nothing to convert */
        ukernel_fn kernel = g->sh.kernel;
#ifdef LF_X86
        if (q->pre) kernel = ukernel_own(g->isa, q->W->dtype);
#endif
        const void *pw[GROUP];
        for (int j = 0; j < ng; j++) {
            if (q->pre) {
                const size_t esz = q->W->dtype == LF_F32 ? 4 : 2;
                pw[j] = (const char *)q->pre + ((size_t)(g0 + j) * g->cols + k0) * nr * esz;
            } else {
                q->pack(panels + (size_t)j * nr * kc, q->W, (g0 + j) * nr, nr, k0, kc, tmp);
                pw[j] = panels + (size_t)j * nr * kc;
            }
        }
#ifdef LF_X86
        if (g->direct) {
            const ukernel_direct_fn dk = ukernel_direct(g->isa, q->pre ? q->W->dtype : LF_F32); /* packed now: float32 panels */
            for (int t = 0; t < g->ntiles; t++) {
                const int mv = T - t * mr < mr ? T - t * mr : mr;
                const float *xt = g->x + (size_t)t * mr * g->xst + k0;
                for (int j = 0; j < ng; j++) {
                    const int o0 = (g0 + j) * nr, nv = rows - o0 < nr ? rows - o0 : nr;
                    dk(kc, xt, g->xst, pw[j], yo + (size_t)t * mr * ldo + j * nr, ldo, mv, nv, load);
                }
            }
            continue;
        }
#endif
        const float *xs = g->xp + (size_t)k0 * g->ntiles * mr;
        for (int t = 0; t < g->ntiles; t++) {
            const int mv = T - t * mr < mr ? T - t * mr : mr;
            for (int j = 0; j < ng; j++) {
                const int o0 = (g0 + j) * nr, nv = rows - o0 < nr ? rows - o0 : nr;
                kernel(kc, xs + (size_t)t * kc * mr, pw[j], yo + (size_t)t * mr * ldo + j * nr, ldo, mv, nv, load);
            }
        }
    }
    if (yb)
        for (int t = 0; t < T; t++) memcpy(q->y + (size_t)t * rows + g0 * nr, yb + (size_t)t * ldb, nvg * sizeof(float));
    scratch_put(SCRATCH_YB, yb);
    scratch_put(SCRATCH_TMP, tmp);
    scratch_put(SCRATCH_PANELS, panels);
    scratch_put(SCRATCH_PAIRS, pairs);
}

int lf_gemm_direct_x = -1;
#define DIRECT_ROWS 512
#define DIRECT_ROWS_FEW_WAYS 128

/* Whether the job's kernels read x where it lies instead of packing it
 * into tiles: float32 products on AVX-512 or AVX2 (W's own panels packed
 * once, or float32 panels packed as the product goes), x row-major, and
 * either its rows are not a multiple of 4 KiB apart or the job has few
 * rows.  Rows 4 KiB apart share one set of L1 lines: a tile's mr rows
 * then fit in L1 only with at least mr ways.  5632 columns apart the
 * kernel ran faster than from packed tiles, whose packing (11.5 MB of x)
 * is itself slow; 2048 columns apart (8 KiB) it lost up to a tenth on
 * the 2048-row products, and on a job of few rows packing x cost much of
 * the time (a 128-row product alone about half, a 384-row job a fifth).
 * "Few" is at most DIRECT_ROWS rows where a tile's rows fit in a set
 * (Zen 5's 12 ways; a 384-row job 0.79x the time), at most
 * DIRECT_ROWS_FEW_WAYS where they do not (the AVX-512 tile's 12 rows in
 * Zen 4's 8 ways, 2048-wide products taking turns in one process: 64-128
 * rows 0.5-0.9x, 192 rows 0.96-1.30x, 256 rows 1.03-1.05x, 384 rows
 * 1.09-1.15x; the forward key or value job of the 1b shape, 256 + 128
 * rows, 1.10-1.13x).  (Measured on AVX-512; the AVX2 path under the same
 * rule, on Zen 5: a layer's products 0.965x the time.)
 * lf_gemm_direct_x: -1 chooses so, 0 never, 1 wherever the rest allows. */
static int use_direct(const gemm_job *g) {
#ifdef LF_X86
    if (!lf_gemm_direct_x || g->bf16 || (g->isa != LF_ISA_AVX512 && g->isa != LF_ISA_AVX2) || g->xsk != 1) return 0;
    if (lf_gemm_direct_x > 0 || (g->xst * sizeof(float)) % 4096 != 0) return 1;
    const int ways = lf_cpu_l1d_ways(), few = !ways || ways >= g->sh.mr ? DIRECT_ROWS : DIRECT_ROWS_FEW_WAYS;
    int rows = 0;
    for (int i = 0; i < g->n; i++) rows += g->p[i].rows;
    return rows <= few;
#else
    (void)g; /* no direct micro-kernels here */
    return 0;
#endif
}

int lf_gemm_balance = 1;

/* The panels of a job cost the same (one x, one width), and the threads
 * claim its chunks in order: when their number is not a multiple of the
 * threads, one thread may run the last chunk while the others wait.  The
 * last product's chunks are then made smaller, all of one size, the
 * fewest that make the count a multiple; left as they are when no such
 * split exists.  A key or value projection of a training step (256 rows)
 * and its adapters' 128 were 2 + 1 chunks of four panels on two threads;
 * with the adapters' as two chunks of two the job takes 0.81x the time.
 * (The 16 + 1 chunks of a 2048-row projection and its adapters' measured
 * the same either way.) */
static void balance_tail(gemm_job *g, int nt) {
    gemm_prod *q = &g->p[g->n - 1];
    const int n = q->npanels, before = q->first, c0 = (n + q->group - 1) / q->group;
    if (nt <= 1 || (before + c0) % nt == 0) return;
    for (int c = c0 + 1; c <= n; c++) {
        const int grp = (n + c - 1) / c;
        if ((n + grp - 1) / grp != c || (before + c) % nt) continue;
        q->group = grp;
        g->p[g->n].first = before + c;
        return;
    }
}

void lf_gemm_many(const lf_product *o, int n, const float *x, size_t xst, size_t xsk, int T, int bf16) {
    if (n <= 0 || T <= 0) return;
    if (n > LF_GEMM_MANY_MAX) {
        lf_gemm_many(o, LF_GEMM_MANY_MAX, x, xst, xsk, T, bf16);
        lf_gemm_many(o + LF_GEMM_MANY_MAX, n - LF_GEMM_MANY_MAX, x, xst, xsk, T, bf16);
        return;
    }
    const int isa = lf_isa(), cols = o[0].wtrans ? o[0].W->rows : o[0].W->cols;
    gemm_job g = {.sh = shape_for(isa), .isa = isa, .bf16 = bf16 && lf_cpu_bf16(), .x = x, .xst = xst, .xsk = xsk,
                  .T = T, .cols = cols};
    g.ntiles = (T + g.sh.mr - 1) / g.sh.mr;
    g.kcmax = slice_cols(cols);
    g.kp_all = (cols + 1) / 2; /* every slice but the last has an even width */
    double flops = 0;
    int total = 0;
    for (int i = 0; i < n; i++) {
        const lf_mat *W = o[i].W;
        const int wt = o[i].wtrans, rows = wt ? W->cols : W->rows;
        if ((wt ? W->rows : W->cols) != cols) abort(); /* the products share x: a caller's mistake */
        if (rows <= 0) continue;
        if (cols <= 0) {
            if (!o[i].accumulate) memset(o[i].y, 0, (size_t)T * rows * sizeof(float));
            continue;
        }
        if (lf_gemm_amx(o[i].y, x, xst, xsk, W, wt, T, o[i].accumulate)) continue;
        gemm_prod *q = &g.p[g.n++];
        *q = (gemm_prod){.W = W, .y = o[i].y, .pack = wt ? g.sh.packt : g.sh.pack, .rows = rows,
                         .npanels = (rows + g.sh.nr - 1) / g.sh.nr, .accumulate = o[i].accumulate, .wtrans = wt};
#ifdef LF_X86
        const lf_amx_panels *pp = W->panels[wt ? 1 : 0];
        if (g.bf16 ? lf_panels_match(pp, W, wt, LF_PANELS_PAIRS)
                   : lf_panels_match(pp, W, wt, LF_PANELS_OWN) && pp->nr == g.sh.nr &&
                         (isa == LF_ISA_AVX512 || isa == LF_ISA_AVX2))
            q->pre = pp->p;
#endif
        flops += 2.0 * T * rows * cols;
        total += q->npanels;
    }
    if (!g.n) return;
    g.direct = use_direct(&g);
    if (g.direct) g.kcmax = slice_cols_max(cols, KC_DIRECT);
    g.xp = (g.bf16 && xsk == 1) || g.direct ? NULL
                                            : scratch_get(SCRATCH_XP, (size_t)g.ntiles * cols * g.sh.mr * sizeof(float));
    g.xb = g.bf16 ? scratch_get(SCRATCH_XB, (size_t)g.ntiles * (cols + 1) * g.sh.mr * sizeof(uint32_t) / 2 + 64) : NULL;
    /* The kernel threads claim tiles, then groups of panels (pool.c): a
     * thread the system preempts delays only the chunk it holds. */
    const int nt = flops >= 4e6 ? lf_kernels_threads() : 1;
    if (!g.direct) lf_parallel_chunks(pack_x_chunk, &g, g.ntiles, nt);
    /* GROUP panels per chunk, fewer when that would leave a thread without
     * work (an adapter's 128 rows are four panels: one chunk of four kept
     * one of two threads idle) */
    for (int i = 0; i < g.n; i++) {
        gemm_prod *q = &g.p[i];
        q->group = total >= GROUP * nt ? (q->npanels < GROUP ? q->npanels : GROUP) : (q->npanels + nt - 1) / nt;
        g.p[i + 1].first = q->first + (q->npanels + q->group - 1) / q->group;
    }
    if (lf_gemm_balance) balance_tail(&g, nt);
    lf_parallel_chunks(panels_chunk, &g, g.p[g.n].first, nt);
    scratch_put(SCRATCH_XP, g.xp);
    scratch_put(SCRATCH_XB, g.xb);
}

void lf_gemm_mode(float *y, const float *x, size_t xst, size_t xsk, const lf_mat *W, int wtrans, int T,
                  int accumulate, int bf16) {
    const lf_product o = {.y = y, .W = W, .wtrans = wtrans, .accumulate = accumulate};
    lf_gemm_many(&o, 1, x, xst, xsk, T, bf16);
}

void lf_gemm_ex(float *y, const float *x, size_t xst, size_t xsk, const lf_mat *W, int wtrans, int T,
                int accumulate) {
    lf_gemm_mode(y, x, xst, xsk, W, wtrans, T, accumulate, 0);
}

void lf_gemm(float *y, const float *x, const lf_mat *W, int T, int accumulate) {
    lf_gemm_mode(y, x, (size_t)W->cols, 1, W, 0, T, accumulate, lf_products_bf16());
}

/* ======================= bfloat16 pairs, converted once ======================= */

#ifdef LF_X86
typedef struct {
    const lf_mat *W;
    int wtrans, cols, kcmax, kp_all;
    uint32_t *p;
} pairs_prepack_job;

static void pairs_prepack_panel(void *ctx, int panel) {
    const pairs_prepack_job *j = ctx;
    float *fbuf = lf_xaligned((size_t)32 * j->kcmax * sizeof(float));
    float *tmp = lf_xaligned((size_t)32 * j->kcmax * sizeof(float));
    for (int k0 = 0; k0 < j->cols; k0 += j->kcmax) {
        const int kc = j->cols - k0 < j->kcmax ? j->cols - k0 : j->kcmax;
        pairs_panel(j->p + ((size_t)panel * j->kp_all + k0 / 2) * 32, j->W, j->wtrans, panel * 32, k0, kc, fbuf, tmp);
    }
    free(fbuf);
    free(tmp);
}
#endif

size_t lf_pairs_panels_bytes(const lf_mat *W, int wtrans) {
    if (!lf_products_bf16() || lf_cpu_amx()) return 0;
    const int rows = wtrans ? W->cols : W->rows, cols = wtrans ? W->rows : W->cols;
    if (rows <= 0 || cols <= 0) return 0;
    return (size_t)(rows + 31) / 32 * 32 * (size_t)((cols + 1) / 2) * sizeof(uint32_t);
}

lf_amx_panels *lf_pairs_panels_new(const lf_mat *W, int wtrans) {
#ifdef LF_X86
    const size_t bytes = lf_pairs_panels_bytes(W, wtrans);
    if (!bytes) return NULL;
    lf_amx_panels *pp = lf_panels_alloc(W, wtrans, LF_PANELS_PAIRS, bytes);
    if (!pp) return NULL;
    pairs_prepack_job j = {.W = W, .wtrans = wtrans, .cols = wtrans ? W->rows : W->cols, .p = pp->p};
    j.kcmax = slice_cols(j.cols);
    j.kp_all = (j.cols + 1) / 2;
    lf_parallel_chunks(pairs_prepack_panel, &j, ((wtrans ? W->cols : W->rows) + 31) / 32, lf_kernels_threads());
    return pp;
#else
    (void)W, (void)wtrans;
    return NULL;
#endif
}

/* ===================== W's own panels, packed once ===================== */

#ifdef LF_X86
typedef struct {
    const lf_mat *W;
    gemm_shape sh;
    int wtrans, cols;
    void *p;
} own_prepack_job;

/* n float32 values (a multiple of 8) that came from F16 or BF16, back to
 * that dtype: exact. */
T_AVX2 static void narrow_own(uint16_t *h, const float *f, size_t n, lf_dtype dt) {
    for (size_t i = 0; i < n; i += 8) {
        const __m256 v = _mm256_loadu_ps(f + i);
        __m128i r;
        if (dt == LF_F16) {
            r = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        } else {
            const __m256i b = _mm256_srli_epi32(_mm256_castps_si256(v), 16);
            r = _mm_packus_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
        }
        _mm_storeu_si128((__m128i *)(h + i), r);
    }
}

/* Panel `panel` of every column slice, through the float32 packing the
 * products of this path use, stored back in W's dtype: the values widened
 * from F16 or BF16 narrow back exactly, so the products' sums do not
 * change. */
static void own_prepack_panel(void *ctx, int panel) {
    const own_prepack_job *j = ctx;
    const lf_dtype dt = j->W->dtype;
    const int nr = j->sh.nr, kcmax = slice_cols(j->cols);
    float *fbuf = lf_xaligned((size_t)nr * kcmax * sizeof(float));
    float *tmp = lf_xaligned((size_t)nr * kcmax * sizeof(float));
    for (int k0 = 0; k0 < j->cols; k0 += kcmax) {
        const int kc = j->cols - k0 < kcmax ? j->cols - k0 : kcmax;
        const size_t at = ((size_t)panel * j->cols + k0) * nr;
        float *f = dt == LF_F32 ? (float *)j->p + at : fbuf;
        (j->wtrans ? j->sh.packt : j->sh.pack)(f, j->W, panel * nr, nr, k0, kc, tmp);
        if (dt != LF_F32) narrow_own((uint16_t *)j->p + at, f, (size_t)kc * nr, dt);
    }
    free(fbuf);
    free(tmp);
}
#endif

/* The panel width of W's own panels on the current path; 0: none there. */
static int own_nr(const lf_mat *W) {
    if (lf_products_bf16() || lf_cpu_amx()) return 0;
    if (W->dtype != LF_F32 && W->dtype != LF_F16 && W->dtype != LF_BF16) return 0;
    const int isa = lf_isa();
    return isa == LF_ISA_AVX512 || isa == LF_ISA_AVX2 ? shape_for(isa).nr : 0;
}

size_t lf_own_panels_bytes(const lf_mat *W, int wtrans) {
    const int nr = own_nr(W), rows = wtrans ? W->cols : W->rows, cols = wtrans ? W->rows : W->cols;
    if (!nr || rows <= 0 || cols <= 0) return 0;
    return (size_t)(rows + nr - 1) / nr * nr * (size_t)cols * (W->dtype == LF_F32 ? 4 : 2);
}

lf_amx_panels *lf_own_panels_new(const lf_mat *W, int wtrans) {
#ifdef LF_X86
    const size_t bytes = lf_own_panels_bytes(W, wtrans);
    if (!bytes) return NULL;
    lf_amx_panels *pp = lf_panels_alloc(W, wtrans, LF_PANELS_OWN, bytes);
    if (!pp) return NULL;
    own_prepack_job j = {.W = W, .sh = shape_for(lf_isa()), .wtrans = wtrans, .cols = wtrans ? W->rows : W->cols,
                         .p = pp->p};
    pp->nr = j.sh.nr;
    lf_parallel_chunks(own_prepack_panel, &j, ((wtrans ? W->cols : W->rows) + j.sh.nr - 1) / j.sh.nr,
                       lf_kernels_threads());
    return pp;
#else
    (void)W, (void)wtrans;
    return NULL;
#endif
}

lf_amx_panels *lf_panels_alloc(const lf_mat *W, int wtrans, int form, size_t bytes) {
    lf_amx_panels *pp = calloc(1, sizeof *pp);
    void *p = pp ? lf_huge_alloc(bytes) : NULL;
    if (!p) {
        free(pp);
        return NULL;
    }
    *pp = (lf_amx_panels){.data = W->data, .dtype = W->dtype, .rows = W->rows, .cols = W->cols,
                          .wtrans = wtrans ? 1 : 0, .form = form, .p = p};
    return pp;
}

void lf_amx_panels_free(lf_amx_panels *p) {
    if (!p) return;
    free(p->p);
    free(p);
}

size_t lf_prepack_bytes(const lf_mat *W, int wtrans) {
    size_t b = lf_amx_panels_bytes(W, wtrans);
    if (!b) b = lf_pairs_panels_bytes(W, wtrans);
    return b ? b : lf_own_panels_bytes(W, wtrans);
}

lf_amx_panels *lf_prepack_new(const lf_mat *W, int wtrans) {
    if (lf_amx_panels_bytes(W, wtrans)) return lf_amx_panels_new(W, wtrans);
    if (lf_pairs_panels_bytes(W, wtrans)) return lf_pairs_panels_new(W, wtrans);
    return lf_own_panels_new(W, wtrans);
}
