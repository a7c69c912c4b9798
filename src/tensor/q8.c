/* q8.c: 8-bit weights (one F16 scale per block of 32 values) and their
 * decoding kernels.
 *
 * Layout (kernels.h): codes q + 128 as bytes, rows padded to groups of 8
 * blocks (256 values), and inside a group the blocks interleaved 4 bytes at
 * a time; a row of at most 256 values is one group of its own blocks (the
 * stacked adapters' B_cat, rows of k x rank values: 128 for two rank-64
 * adapters would otherwise be padded to 256).  With that order one 32-bit
 * lane of a vector register meets four
 * values of one block, so an integer multiply-add (VNNI vpdpbusd, or
 * pmaddubsw + pmaddwd on AVX2) leaves the 8 block sums of a group in 8 lanes,
 * ready to be scaled, with no horizontal shuffles.  The activation x is
 * quantised the same way once per product (lf_q8_act).
 *
 * Unsigned weight codes suit vpdpbusd (unsigned x signed bytes):
 * sum (q_w + 128) q_x = sum q_w q_x + 128 sum q_x, and the second term
 * depends on x alone (lf_q8_act.corr). */
#include "simd.h"
#include "../core/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef LF_X86
#include <immintrin.h>
#define T_AVX2 __attribute__((target("avx2,fma,f16c")))
#endif

size_t lf_q8_row_bytes(int cols) {
    if (cols <= LF_Q8_GROUP) return ((size_t)cols + LF_Q8_BLOCK - 1) / LF_Q8_BLOCK * LF_Q8_BLOCK;
    return ((size_t)cols + LF_Q8_GROUP - 1) / LF_Q8_GROUP * LF_Q8_GROUP;
}

/* Blocks per interleaved group: 8, or all of a short row's. */
static inline int q8_nbg(int cols) {
    return (int)(lf_q8_row_bytes(cols) < LF_Q8_GROUP ? lf_q8_row_bytes(cols) / LF_Q8_BLOCK : 8);
}

/* A row: codes, then scales, then zeros up to 64 bytes (kernels.h).  In
 * the previous layout (all codes, then all scales) the decoding kernel read
 * two streams per matrix and, four rows side by side, five; rows after one
 * another in one stream drew 57-67 GB/s against 42-47 (2 threads, AMD
 * EPYC guest, 512 MiB of rows of 2048, alternating in one process). */
size_t lf_q8_stride(int cols) {
    size_t rb = lf_q8_row_bytes(cols), b = rb + rb / LF_Q8_BLOCK * sizeof(uint16_t);
    /* short rows (read four at a time, B_cat's) are packed to 8 bytes:
     * 136 bytes for 128 values against 256 in F16, where 64 would make 192 */
    return rb < LF_Q8_GROUP ? (b + 7) & ~(size_t)7 : (b + 63) & ~(size_t)63;
}

size_t lf_q8_bytes(int rows, int cols) {
    return (size_t)rows * lf_q8_stride(cols);
}

/* Byte offset inside a row (groups of nbg blocks) of value c: value
 * j * 32 + ch * 4 + b of a group is its byte (ch * nbg + j) * 4 + b. */
static inline size_t q8_pos(size_t c, int nbg) {
    const size_t G = (size_t)nbg * LF_Q8_BLOCK, g = c / G, v = c % G;
    return g * G + ((v % 32) / 4 * (size_t)nbg + v / 32) * 4 + v % 4;
}

static inline const uint8_t *q8_codes(const lf_mat *W, int r) {
    return (const uint8_t *)W->data + (size_t)r * lf_q8_stride(W->cols);
}

static inline const uint16_t *q8_scales(const lf_mat *W, int r) {
    return (const uint16_t *)(q8_codes(W, r) + lf_q8_row_bytes(W->cols));
}

/* The code of value v at 1 / scale inv: rounded, clamped to +-127; NaN
 * gives 0 (the cast of NaN to int is undefined). */
static inline int q8_code(float v, float inv) {
    const float t = rintf(v * inv);
    return t > 127 ? 127 : t < -127 ? -127 : t == t ? (int)t : 0;
}

/* Quantise one block of up to 32 values: F16 scale, codes + 128. */
static uint16_t quant_block(const float *v, int n, uint8_t *codes_out, size_t block_base, int nbg) {
    float amax = 0;
    for (int i = 0; i < n; i++) amax = fmaxf(amax, fabsf(v[i]));
    float d = amax / 127.0f;
    if (d > 65504.0f) d = 65504.0f;
    uint16_t dh = lf_f32_to_f16(d);
    float dq = lf_f16_to_f32(dh); /* quantise with the scale as stored */
    float inv = dq > 0 ? 1.0f / dq : 0.0f;
    for (int i = 0; i < LF_Q8_BLOCK; i++) {
        const int q = i < n ? q8_code(v[i], inv) : 0;
        codes_out[q8_pos(block_base + (size_t)i, nbg)] = (uint8_t)(q + 128);
    }
    return dh;
}

#ifdef LF_X86
/* quant_block for the 8 whole blocks of a group, with the same arithmetic
 * (the same bytes): the codes 32 at a time, in order, then interleaved 4
 * bytes at a time (loading a 1b model with --quantize q8 had spent a
 * fifth of its time in the scalar loop and its fmaxf calls). */
T_AVX2 static void quant_group_avx2(const float *v, uint8_t *codes, uint16_t *scales) {
    _Alignas(32) uint8_t blk[LF_Q8_GROUP];
    const __m256 sign = _mm256_set1_ps(-0.0f), lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
    const __m256i off = _mm256_set1_epi32(128), order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int j = 0; j < 8; j++) {
        const float *b = v + j * 32;
        __m256 m = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) m = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(b + 8 * k)), m); /* NaN: skipped, as fmaxf */
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
        float d = _mm_cvtss_f32(h) / 127.0f;
        if (d > 65504.0f) d = 65504.0f;
        const uint16_t dh = lf_f32_to_f16(d);
        const float dq = lf_f16_to_f32(dh);
        const __m256 inv = _mm256_set1_ps(dq > 0 ? 1.0f / dq : 0.0f);
        scales[j] = dh;
        __m256i q[4];
        for (int k = 0; k < 4; k++) {
            __m256 t = _mm256_mul_ps(_mm256_loadu_ps(b + 8 * k), inv);
            t = _mm256_and_ps(t, _mm256_cmp_ps(t, t, _CMP_ORD_Q)); /* NaN: 0 */
            t = _mm256_min_ps(_mm256_max_ps(t, lo), hi);           /* clamp, then round: the same for integer bounds */
            q[k] = _mm256_add_epi32(_mm256_cvtps_epi32(t), off);
        }
        const __m256i p = _mm256_packus_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        _mm256_store_si256((__m256i *)(blk + j * 32), _mm256_permutevar8x32_epi32(p, order));
    }
    for (int ch = 0; ch < 8; ch++)
        for (int j = 0; j < 8; j++) memcpy(codes + (ch * 8 + j) * 4, blk + j * 32 + ch * 4, 4);
}
#endif

void lf_q8_quantize(void *dst, const lf_mat *src, lf_mat *out) {
    const int rows = src->rows, cols = src->cols;
    const size_t rb = lf_q8_row_bytes(cols), nb = rb / LF_Q8_BLOCK, stride = lf_q8_stride(cols);
    const int nbg = q8_nbg(cols);
#pragma omp parallel
    {
        float *row = malloc((size_t)cols * sizeof(float));
        if (!row) abort();
#pragma omp for schedule(static)
        for (int r = 0; r < rows; r++) {
            lf_mat_row_f32(row, src, r);
            uint8_t *cr = (uint8_t *)dst + (size_t)r * stride;
            uint16_t *sr = (uint16_t *)(cr + rb);
            size_t b = 0;
#ifdef LF_X86
            if (nbg == 8 && lf_isa() >= LF_ISA_AVX2)
                for (; (b + 8) * LF_Q8_BLOCK <= (size_t)cols; b += 8)
                    quant_group_avx2(row + b * LF_Q8_BLOCK, cr + b * LF_Q8_BLOCK, sr + b);
#endif
            for (; b < nb; b++) {
                size_t c0 = b * LF_Q8_BLOCK;
                int n = c0 >= (size_t)cols ? 0 : (int)((size_t)cols - c0 < LF_Q8_BLOCK ? (size_t)cols - c0 : LF_Q8_BLOCK);
                sr[b] = quant_block(row + c0, n, cr, c0, nbg);
            }
            memset(sr + nb, 0, stride - rb - nb * sizeof(uint16_t));
        }
        free(row);
    }
    *out = (lf_mat){.dtype = LF_Q8, .data = dst, .rows = rows, .cols = cols};
}

/* One whole group (nbg blocks) of codes and its scales into dst. */
static void dequant_group(float *dst, const uint8_t *q, const uint16_t *s, int nbg) {
    for (int j = 0; j < nbg; j++) {
        const float d = lf_f16_to_f32(s[j]);
        float *o = dst + j * 32;
        for (int ch = 0; ch < 8; ch++) {
            const uint8_t *b = q + (ch * nbg + j) * 4;
            o[ch * 4 + 0] = d * (float)((int)b[0] - 128);
            o[ch * 4 + 1] = d * (float)((int)b[1] - 128);
            o[ch * 4 + 2] = d * (float)((int)b[2] - 128);
            o[ch * 4 + 3] = d * (float)((int)b[3] - 128);
        }
    }
}

#ifdef LF_X86
/* dequant_group for a whole group of 8 blocks: the 8 x 8 grid of 4-byte
 * chunks (chunk ch of block j at byte (ch * 8 + j) * 4) transposed in
 * registers, so that each block's 32 codes come out in order.  Prompts and
 * training on q8 weights dequantise every panel this way (1b q8, a 512-token
 * prompt: the scalar loop was 8% of the samples, a fifth of the GEMM's). */
T_AVX2 static void dequant_group_avx2(float *dst, const uint8_t *q, const uint16_t *s) {
    __m256i r[8], t[8], u[8];
    for (int ch = 0; ch < 8; ch++) r[ch] = _mm256_loadu_si256((const __m256i *)(q + ch * 32));
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);     /* blocks 0, 1 | 4, 5 */
        t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]); /* blocks 2, 3 | 6, 7 */
    }
    for (int h = 0; h < 2; h++) { /* chunks 0-3, then 4-7 */
        const __m256i *a = t + 4 * h;
        u[4 * h + 0] = _mm256_unpacklo_epi64(a[0], a[2]); /* block 0 | 4 */
        u[4 * h + 1] = _mm256_unpackhi_epi64(a[0], a[2]); /* block 1 | 5 */
        u[4 * h + 2] = _mm256_unpacklo_epi64(a[1], a[3]); /* block 2 | 6 */
        u[4 * h + 3] = _mm256_unpackhi_epi64(a[1], a[3]); /* block 3 | 7 */
    }
    const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)s));
    const __m256i off = _mm256_set1_epi32(128);
    for (int j = 0; j < 8; j++) {
        const __m256i b = j < 4 ? _mm256_permute2x128_si256(u[j & 3], u[4 + (j & 3)], 0x20)
                                : _mm256_permute2x128_si256(u[j & 3], u[4 + (j & 3)], 0x31);
        const __m256 dj = _mm256_permutevar8x32_ps(d, _mm256_set1_epi32(j));
        const __m128i lo = _mm256_castsi256_si128(b), hi = _mm256_extracti128_si256(b, 1);
        const __m128i part[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
        for (int k = 0; k < 4; k++) {
            const __m256i v = _mm256_sub_epi32(_mm256_cvtepu8_epi32(part[k]), off);
            _mm256_storeu_ps(dst + j * 32 + k * 8, _mm256_mul_ps(_mm256_cvtepi32_ps(v), dj));
        }
    }
}
#endif

void lf_q8_dequant(float *dst, const lf_mat *W, int r, int c0, int nc) {
    const uint8_t *q = q8_codes(W, r);
    const uint16_t *s = q8_scales(W, r);
    const int nbg = q8_nbg(W->cols);
    if (nbg < 8) { /* a short row (B_cat's): its one group, then the columns asked for */
        float row[LF_Q8_GROUP];
        dequant_group(row, q, s, nbg);
        memcpy(dst, row + c0, (size_t)nc * sizeof(float));
        return;
    }
    int i = 0;
    /* whole groups straight into dst, the ragged ends one value at a time */
    while (i < nc && ((size_t)c0 + i) % LF_Q8_GROUP) {
        size_t c = (size_t)c0 + i;
        dst[i++] = lf_f16_to_f32(s[c / LF_Q8_BLOCK]) * (float)((int)q[q8_pos(c, nbg)] - 128);
    }
#ifdef LF_X86
    if (lf_isa() >= LF_ISA_AVX2)
        for (; i + LF_Q8_GROUP <= nc; i += LF_Q8_GROUP) {
            size_t g = ((size_t)c0 + i) / LF_Q8_GROUP;
            dequant_group_avx2(dst + i, q + g * LF_Q8_GROUP, s + g * 8);
        }
#endif
    for (; i + LF_Q8_GROUP <= nc; i += LF_Q8_GROUP) {
        size_t g = ((size_t)c0 + i) / LF_Q8_GROUP;
        dequant_group(dst + i, q + g * LF_Q8_GROUP, s + g * 8, 8);
    }
    for (; i < nc; i++) {
        size_t c = (size_t)c0 + i;
        dst[i] = lf_f16_to_f32(s[c / LF_Q8_BLOCK]) * (float)((int)q[q8_pos(c, nbg)] - 128);
    }
}

/* ============================ activations ============================ */

int lf_q8_act_init(lf_q8_act *a, int n) {
    memset(a, 0, sizeof *a);
    a->n = n;
    a->npad = (int)lf_q8_row_bytes(n);
    int nb = a->npad / LF_Q8_BLOCK;
    a->q = aligned_alloc(64, ((size_t)a->npad + 63) & ~(size_t)63);
    a->d = malloc((size_t)nb * sizeof(float));
    a->corr = malloc((size_t)nb * sizeof(int32_t));
    if (!a->q || !a->d || !a->corr) {
        lf_q8_act_free(a);
        lf_set_error("out of memory (q8 activations of %d values)", n);
        return -1;
    }
    return 0;
}

void lf_q8_act_free(lf_q8_act *a) {
    free(a->q);
    free(a->d);
    free(a->corr);
    memset(a, 0, sizeof *a);
}

#ifdef LF_X86
#define T_512Q __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))

/* The whole groups of x (the scalar loop below does the rest): the same
 * arithmetic as that loop, 16 values at a time, so the codes, scales and
 * corrections are the same bit for bit (for finite x; a NaN may make a
 * block's scale NaN here where the scalar loop skips it).  Returns the
 * blocks done.  (Decoding
 * quantises every product's x on the calling thread while the others
 * wait: 1b q8, 2% of a token's time in the scalar loop.) */
T_512Q static int act_quantize_avx512(lf_q8_act *a, const float *x) {
    const int ng = a->n / LF_Q8_GROUP;
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    _Alignas(64) int8_t blk[LF_Q8_GROUP];
    _Alignas(32) float amax[8], inv[8];
    for (int g = 0; g < ng; g++) {
        const float *xg = x + (size_t)g * LF_Q8_GROUP;
        for (int j = 0; j < 8; j++) {
            __m512 m = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(xg + j * 32)), _mm512_abs_ps(_mm512_loadu_ps(xg + j * 32 + 16)));
            amax[j] = _mm512_reduce_max_ps(m);
        }
        const __m256 d = _mm256_div_ps(_mm256_load_ps(amax), _mm256_set1_ps(127.0f));
        const __mmask8 pos = _mm256_cmp_ps_mask(d, _mm256_setzero_ps(), _CMP_GT_OQ);
        _mm256_store_ps(inv, _mm256_maskz_div_ps(pos, _mm256_set1_ps(1.0f), d));
        _mm256_storeu_ps(a->d + g * 8, d);
        for (int j = 0; j < 8; j++) {
            const __m512 s = _mm512_set1_ps(inv[j]);
            __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xg + j * 32), s));
            __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xg + j * 32 + 16), s));
            q0 = _mm512_min_epi32(_mm512_max_epi32(q0, lo), hi);
            q1 = _mm512_min_epi32(_mm512_max_epi32(q1, lo), hi);
            _mm_store_si128((__m128i *)(blk + j * 32), _mm512_cvtepi32_epi8(q0));
            _mm_store_si128((__m128i *)(blk + j * 32 + 16), _mm512_cvtepi32_epi8(q1));
            a->corr[g * 8 + j] = 128 * _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        }
        /* value j * 32 + ch * 4 + b to byte (ch * 8 + j) * 4 + b (kernels.h) */
        int8_t *qg = a->q + (size_t)g * LF_Q8_GROUP;
        for (int ch = 0; ch < 8; ch++)
            for (int j = 0; j < 8; j++) memcpy(qg + (ch * 8 + j) * 4, blk + j * 32 + ch * 4, 4);
    }
    return ng * 8;
}
#endif

void lf_q8_act_quantize(lf_q8_act *a, const float *x) {
    const int nb = a->npad / LF_Q8_BLOCK, nbg = q8_nbg(a->n);
    int b0 = 0;
#ifdef LF_X86
    if (lf_isa() == LF_ISA_AVX512) b0 = act_quantize_avx512(a, x);
#endif
    for (int b = b0; b < nb; b++) {
        const int c0 = b * LF_Q8_BLOCK;
        const int n = c0 >= a->n ? 0 : (a->n - c0 < LF_Q8_BLOCK ? a->n - c0 : LF_Q8_BLOCK);
        float amax = 0;
        for (int i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[c0 + i]));
        const float d = amax / 127.0f, inv = d > 0 ? 1.0f / d : 0.0f;
        int32_t sum = 0;
        for (int i = 0; i < LF_Q8_BLOCK; i++) {
            const int q = i < n ? q8_code(x[c0 + i], inv) : 0;
            a->q[q8_pos((size_t)c0 + i, nbg)] = (int8_t)q;
            sum += q;
        }
        a->d[b] = d;
        a->corr[b] = 128 * sum;
    }
}

/* ============================ dot products ============================ */

void lf_rowdot_portable_q8(const lf_mat *W, int r0, int nr, const void *xv, float *out) {
    const lf_q8_act *x = xv;
    const int nbg = q8_nbg(W->cols), G = nbg * LF_Q8_BLOCK, ng = x->npad / G;
    for (int i = 0; i < nr; i++) {
        const uint8_t *q = q8_codes(W, r0 + i);
        const uint16_t *s = q8_scales(W, r0 + i);
        float acc = 0;
        for (int g = 0; g < ng; g++) {
            int32_t blk[8] = {0};
            const uint8_t *qg = q + (size_t)g * G;
            const int8_t *xg = x->q + (size_t)g * G;
            for (int ch = 0; ch < 8; ch++)
                for (int j = 0; j < nbg; j++)
                    for (int b = 0; b < 4; b++) {
                        int k = (ch * nbg + j) * 4 + b;
                        blk[j] += ((int)qg[k] - 128) * xg[k];
                    }
            for (int j = 0; j < nbg; j++)
                acc += lf_f16_to_f32(s[g * nbg + j]) * x->d[g * nbg + j] * (float)blk[j];
        }
        out[i] = acc;
    }
}

#ifdef LF_X86
T_AVX2 static inline float hsum8(__m256 s) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}

/* The 8 block sums of one group (AVX2, no VNNI): signed codes by flipping
 * the top bit, then |x| (unsigned) times sign-adjusted w (signed) so that
 * pmaddubsw cannot saturate (2 * 127 * 127 < 32768). */
T_AVX2 static inline __m256i group_sums_avx2(const uint8_t *w, const int8_t *x) {
    const __m256i flip = _mm256_set1_epi8((char)0x80), ones = _mm256_set1_epi16(1);
    __m256i acc = _mm256_setzero_si256();
    for (int ch = 0; ch < 8; ch++) {
        __m256i wv = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(w + ch * 32)), flip);
        __m256i xv = _mm256_loadu_si256((const __m256i *)(x + ch * 32));
        __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(xv), _mm256_sign_epi8(wv, xv));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
    }
    return acc;
}

/* Lane sums of 32 bytes of codes w and activations x (as group_sums_avx2). */
T_AVX2 static inline __m256i lanes_avx2(const uint8_t *w, const int8_t *x) {
    const __m256i flip = _mm256_set1_epi8((char)0x80), ones = _mm256_set1_epi16(1);
    __m256i wv = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)w), flip);
    __m256i xv = _mm256_loadu_si256((const __m256i *)x);
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(xv), _mm256_sign_epi8(wv, xv)), ones);
}

/* Lane l of a short row's codes (its bytes 4l .. 4l+3) belongs to block
 * l % nbg: the block numbers of lanes first .. first+7, without a division
 * ((l + 0.5) / nbg is at least 1 / 14 from an integer). */
T_AVX2 static inline __m256i lanes_block_avx2(int first, int nbg) {
    const __m256i l = _mm256_add_epi32(_mm256_set1_epi32(first), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256i q = _mm256_cvttps_epi32(_mm256_mul_ps(_mm256_add_ps(_mm256_cvtepi32_ps(l), _mm256_set1_ps(0.5f)),
                                                        _mm256_set1_ps(1.0f / (float)nbg)));
    return _mm256_sub_epi32(l, _mm256_mullo_epi32(q, _mm256_set1_epi32(nbg)));
}

/* Rows of one group of nbg < 8 blocks (kernels.h): each 32-byte chunk's
 * lanes are scaled by their blocks' scales, gathered with a permutation. */
T_AVX2 static void short_rows_avx2(const lf_mat *W, int r0, int nr, const lf_q8_act *x, float *out) {
    const int nbg = x->npad / LF_Q8_BLOCK;
    _Alignas(32) int32_t ix[56];
    _Alignas(32) float dx[8] = {0};
    for (int k = 0; k < nbg; k++) _mm256_store_si256((__m256i *)(ix + 8 * k), lanes_block_avx2(8 * k, nbg));
    memcpy(dx, x->d, (size_t)nbg * sizeof(float));
    const __m256 vdx = _mm256_load_ps(dx);
    for (int i = 0; i < nr; i++) {
        const uint8_t *q = q8_codes(W, r0 + i);
        uint16_t sh[8] = {0};
        memcpy(sh, q8_scales(W, r0 + i), (size_t)nbg * sizeof(uint16_t));
        const __m256 sd = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)sh)), vdx);
        __m256 acc = _mm256_setzero_ps();
        for (int k = 0; k < nbg; k++) {
            __m256 p = _mm256_cvtepi32_ps(lanes_avx2(q + 32 * k, x->q + 32 * k));
            acc = _mm256_fmadd_ps(p, _mm256_permutevar8x32_ps(sd, _mm256_load_si256((const __m256i *)(ix + 8 * k))), acc);
        }
        out[i] = hsum8(acc);
    }
}

T_AVX2 void lf_rowdot_avx2_q8(const lf_mat *W, int r0, int nr, const void *xv, float *out) {
    const lf_q8_act *x = xv;
    const int ng = x->npad / LF_Q8_GROUP;
    if (x->npad < LF_Q8_GROUP) {
        short_rows_avx2(W, r0, nr, x, out);
        return;
    }
    for (int i = 0; i < nr; i++) {
        const uint8_t *q = q8_codes(W, r0 + i);
        const uint16_t *s = q8_scales(W, r0 + i);
        __m256 acc = _mm256_setzero_ps();
        for (int g = 0; g < ng; g++) {
            __m256i blk = group_sums_avx2(q + (size_t)g * LF_Q8_GROUP, x->q + (size_t)g * LF_Q8_GROUP);
            __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + g * 8)));
            __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(blk), dw);
            acc = _mm256_fmadd_ps(f, _mm256_loadu_ps(x->d + g * 8), acc);
        }
        out[i] = hsum8(acc);
    }
}

#define T_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))

/* One group of one row: vpdpbusd in two chains leave chunk pairs in the
 * two halves, which one add folds into the 8 block sums. */
T_VNNI static inline __m256 group_vnni(const uint8_t *w, const __m512i x[4], const uint16_t *s,
                                       __m256i corr, __m256 dx, __m256 acc) {
    __m512i a = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_loadu_si512((const void *)w), x[0]);
    __m512i b = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_loadu_si512((const void *)(w + 64)), x[1]);
    a = _mm512_dpbusd_epi32(a, _mm512_loadu_si512((const void *)(w + 128)), x[2]);
    b = _mm512_dpbusd_epi32(b, _mm512_loadu_si512((const void *)(w + 192)), x[3]);
    a = _mm512_add_epi32(a, b);
    __m256i blk = _mm256_add_epi32(_mm512_castsi512_si256(a), _mm512_extracti64x4_epi64(a, 1));
    blk = _mm256_sub_epi32(blk, corr);
    __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)s));
    return _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(blk), dw), dx, acc);
}

/* Group g of the activation: codes, corrections and scales. */
T_VNNI static inline void act_group(const lf_q8_act *x, int g, __m512i xq[4], __m256i *corr, __m256 *dx) {
    const int8_t *xg = x->q + (size_t)g * LF_Q8_GROUP;
    for (int k = 0; k < 4; k++) xq[k] = _mm512_loadu_si512((const void *)(xg + 64 * k));
    *corr = _mm256_loadu_si256((const __m256i *)(x->corr + g * 8));
    *dx = _mm256_loadu_ps(x->d + g * 8);
}

/* Rows of more than LF_SHORT_ROW bytes of codes (the base weights) are read
 * one at a time, in memory order, with the bytes AHEAD further on
 * requested as they go, as rowdot.c does for F16 rows: a matrix is then one
 * stream (1b q8 shapes, 2 threads, AMD EPYC guest, alternating in one
 * process: 512 MiB of rows of 2048 at 57-67 GB/s, against 42-47 four rows
 * side by side).  Non-temporal and 6 KiB ahead, 8, 16 and 24 KiB into
 * L2, not at all, or 2 KiB into L1, as lf_cpu_prefetch() says, for the
 * reasons given there.
 * Shorter rows go four at a time, sharing the loads of x. */

#define VNNI_LONGROW(NAME, AHEAD, REACH, HINT)                                           \
    T_VNNI static float NAME(const uint8_t *q, const lf_q8_act *x, int ng, size_t rb, size_t stride) { \
        const uint16_t *s = (const uint16_t *)(q + rb);                                  \
        /* this row's scales and padding, k AHEAD on (the groups ask for its codes) */ \
        for (int k = 1; k <= (REACH); k++)                                               \
            for (size_t o = rb; o < stride; o += 64) _mm_prefetch((const char *)q + o + k * (AHEAD), HINT); \
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, dx;                                    \
        __m512i xq[4];                                                                   \
        __m256i corr;                                                                    \
        for (int g = 0; g < ng; g++) {                                                   \
            for (int k = 1; k <= (REACH); k++) {                                         \
                const char *p = (const char *)q + (size_t)g * LF_Q8_GROUP + k * (AHEAD); \
                _mm_prefetch(p, HINT);                                                   \
                _mm_prefetch(p + 64, HINT);                                              \
                _mm_prefetch(p + 128, HINT);                                             \
                _mm_prefetch(p + 192, HINT);                                             \
            }                                                                            \
            act_group(x, g, xq, &corr, &dx);                                             \
            if (g & 1) a1 = group_vnni(q + (size_t)g * LF_Q8_GROUP, xq, s + g * 8, corr, dx, a1); \
            else a0 = group_vnni(q + (size_t)g * LF_Q8_GROUP, xq, s + g * 8, corr, dx, a0); \
        }                                                                                \
        return hsum8(_mm256_add_ps(a0, a1));                                             \
    }

VNNI_LONGROW(longrow_q8, LF_LONG_AHEAD, 1, _MM_HINT_T0)
VNNI_LONGROW(longrow_nt_q8, LF_LONG_AHEAD_NT, 1, _MM_HINT_NTA)
VNNI_LONGROW(longrow_np_q8, 0, 0, _MM_HINT_T0)
VNNI_LONGROW(longrow_t1_q8, LF_LONG_AHEAD_T1, LF_LONG_REACH_T1, _MM_HINT_T1)

/* Rows of one group of nbg < 8 blocks (kernels.h; B_cat's): 64 bytes a
 * step, each lane's sum less its 128 * sum of x and scaled by its block's
 * scales, gathered with a permutation; the last step masked (the row ends
 * there, or the matrix).  The next four rows are requested at the start. */
T_VNNI static void short_rows_vnni(const lf_mat *W, int r0, int nr, const lf_q8_act *x, float *out) {
    const int nbg = x->npad / LF_Q8_BLOCK, nc = (32 * nbg + 63) / 64;
    const size_t stride = lf_q8_stride(W->cols);
    const uint8_t *q0 = q8_codes(W, r0);
    for (size_t o = 0; o < 4 * stride; o += 64) _mm_prefetch((const char *)q0 + 4 * stride + o, _MM_HINT_T0);
    const __mmask16 ms = (__mmask16)((1u << nbg) - 1);
    const __m512 dx = _mm512_maskz_loadu_ps(ms, x->d);
    __m512i xq[4], corr[4], ix[4];
    __m512 dxl[4];
    __mmask64 mk[4];
    for (int k = 0; k < nc; k++) {
        mk[k] = 32 * nbg - 64 * k >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << 32) - 1;
        xq[k] = _mm512_maskz_loadu_epi8(mk[k], x->q + 64 * k);
        corr[k] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)0x80), xq[k]);
        /* lane l's block, l % nbg (lanes_block_avx2, 16 lanes) */
        ix[k] = _mm512_inserti64x4(_mm512_castsi256_si512(lanes_block_avx2(16 * k, nbg)), lanes_block_avx2(16 * k + 8, nbg), 1);
        dxl[k] = _mm512_permutexvar_ps(ix[k], dx);
    }
    for (int i = 0; i < nr; i++) {
        const uint8_t *q = q0 + (size_t)i * stride;
        const __m512 sw = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(ms, q + 32 * nbg));
        __m512 acc = _mm512_setzero_ps();
        for (int k = 0; k < nc; k++) {
            __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_maskz_loadu_epi8(mk[k], q + 64 * k), xq[k]);
            __m512 sc = _mm512_mul_ps(_mm512_permutexvar_ps(ix[k], sw), dxl[k]);
            acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(p, corr[k])), sc, acc);
        }
        out[i] = _mm512_reduce_add_ps(acc);
    }
}

/* Short rows of 1, 2 or 4 blocks (rank x k of 32, 64 or 128: two rank-64
 * adapters' B_cat): a lane's block is l % nbg, the same for lanes l,
 * l + 4, l + 8, ..., so the integer sums of a row fold into 4 lanes before
 * they are scaled, and four rows' 4 lanes add up together (1b q8, 22
 * layers of B_cat, 2 threads: 1.5 ms a token with short_rows_vnni's lane
 * scaling and a reduction per row). */
T_VNNI static void short_rows_vnni4(const lf_mat *W, int r0, int nr, const lf_q8_act *x, float *out) {
    const int nbg = x->npad / LF_Q8_BLOCK, nc = (32 * nbg + 63) / 64;
    const size_t stride = lf_q8_stride(W->cols);
    const uint8_t *q0 = q8_codes(W, r0);
    for (size_t o = 0; o < 4 * stride; o += 64) _mm_prefetch((const char *)q0 + 4 * stride + o, _MM_HINT_T0);
    const __mmask64 mk = 32 * nbg >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << (32 * nbg)) - 1;
    __m512i xq[2], corr = _mm512_setzero_si512();
    for (int k = 0; k < nc; k++) {
        xq[k] = _mm512_maskz_loadu_epi8(mk, x->q + 64 * k);
        corr = _mm512_dpbusd_epi32(corr, _mm512_set1_epi8((char)0x80), xq[k]);
    }
    const __m128i ix = _mm_setr_epi32(0, 1 % nbg, 2 % nbg, 3 % nbg);
    _Alignas(16) float dx4[4] = {0};
    memcpy(dx4, x->d, (size_t)nbg * sizeof(float));
    const __m128 dxl = _mm_permutevar_ps(_mm_load_ps(dx4), ix);
    __m128 r[4];
    for (int i = 0; i < 4; i++) {
        r[i] = _mm_setzero_ps();
        if (i >= nr) continue;
        const uint8_t *q = q0 + (size_t)i * stride;
        __m512i a = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_maskz_loadu_epi8(mk, q), xq[0]);
        if (nc > 1) a = _mm512_dpbusd_epi32(a, _mm512_loadu_si512((const void *)(q + 64)), xq[1]);
        a = _mm512_sub_epi32(a, corr);
        __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(a), _mm512_extracti64x4_epi64(a, 1));
        __m128i f = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
        /* the scales: 8 bytes past the codes are in the row (stride, 8-byte padded) */
        const __m128 sw = _mm_permutevar_ps(_mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)(q + 32 * nbg))), ix);
        r[i] = _mm_mul_ps(_mm_cvtepi32_ps(f), _mm_mul_ps(sw, dxl));
    }
    _Alignas(16) float o4[4];
    _mm_store_ps(o4, _mm_hadd_ps(_mm_hadd_ps(r[0], r[1]), _mm_hadd_ps(r[2], r[3])));
    for (int i = 0; i < nr; i++) out[i] = o4[i];
}

#define VNNI_ROWDOT(NAME, LONGROW)                                                       \
    T_VNNI void NAME(const lf_mat *W, int r0, int nr, const void *xv, float *out) {     \
        const lf_q8_act *x = xv;                                                         \
        const int ng = x->npad / LF_Q8_GROUP;                                            \
        const size_t rb = lf_q8_row_bytes(W->cols), stride = lf_q8_stride(W->cols);     \
        const uint8_t *q0 = q8_codes(W, r0);                                             \
        if (rb < LF_Q8_GROUP) {                                                          \
            if (4 % (rb / LF_Q8_BLOCK) == 0) short_rows_vnni4(W, r0, nr, x, out);        \
            else short_rows_vnni(W, r0, nr, x, out);                                     \
            return;                                                                      \
        }                                                                                \
        if (rb > LF_SHORT_ROW) {                                                         \
            for (int i = 0; i < nr; i++) out[i] = LONGROW(q0 + (size_t)i * stride, x, ng, rb, stride); \
            return;                                                                      \
        }                                                                                \
        __m256 acc[4];                                                                   \
        for (int i = 0; i < 4; i++) acc[i] = _mm256_setzero_ps();                        \
        /* the next four rows (the next call's, in run_rows' order) are requested       \
         * as these go, a group's share of their bytes per group: four rows side       \
         * by side are four streams that the hardware prefetchers follow poorly */     \
        const char *next = (const char *)(q0 + 4 * stride);                              \
        const size_t total = 4 * stride;                                                 \
        for (int g = 0; g < ng; g++) {                                                   \
            const size_t o1 = g + 1 == ng ? total : (size_t)(g + 1) * total / (size_t)ng & ~(size_t)63; \
            for (size_t o = (size_t)g * total / (size_t)ng & ~(size_t)63; o < o1; o += 64) \
                _mm_prefetch(next + o, _MM_HINT_T0);                                     \
            __m512i xq[4];                                                               \
            __m256i corr;                                                                \
            __m256 dx;                                                                   \
            act_group(x, g, xq, &corr, &dx);                                             \
            for (int i = 0; i < nr; i++) {                                               \
                const uint8_t *qi = q0 + (size_t)i * stride;                             \
                acc[i] = group_vnni(qi + (size_t)g * LF_Q8_GROUP, xq, (const uint16_t *)(qi + rb) + g * 8, \
                                    corr, dx, acc[i]);                                   \
            }                                                                            \
        }                                                                                \
        for (int i = 0; i < nr; i++) out[i] = hsum8(acc[i]);                             \
    }

VNNI_ROWDOT(lf_rowdot_avx512_q8, longrow_q8)
VNNI_ROWDOT(lf_rowdot_avx512nt_q8, longrow_nt_q8)
VNNI_ROWDOT(lf_rowdot_avx512np_q8, longrow_np_q8)
VNNI_ROWDOT(lf_rowdot_avx512t1_q8, longrow_t1_q8)
#endif
