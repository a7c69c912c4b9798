/* gemm_amx.c: the many-token product y [T, rows] (+)= x W^T (or x W) on
 * Intel AMX tiles, for F16 and BF16 weights, with float32 accuracy kept.
 *
 * AMX multiplies bfloat16 tiles into float32 accumulators, 16 times the
 * multiply-adds per cycle of AVX-512 FMA.  bfloat16 alone would cost
 * precision (8 significant bits), so every operand is split into a sum of
 * two bfloat16 numbers, hi = bf16(v) and lo = bf16(v - hi):
 *   - an F16 weight (11 significant bits) is exactly hi + lo (the
 *     remainder has at most 3 significant bits and F16's exponent range
 *     lies inside bfloat16's); a BF16 weight is exactly hi (lo = 0);
 *   - a float32 activation keeps 16 significant bits (relative error of
 *     x - hi - lo at most 2^-16 of |x|);
 * and y = x_hi W_hi + x_hi W_lo + x_lo W_hi (BF16 weights: the first and
 * third only), accumulated in float32.  The term x_lo W_lo left out is
 * below 2^-16 of each product.  So each product term carries a relative
 * error of order 2^-16 (1.5e-5), against 2^-24 for float32 FMA: far below
 * the F16 weights' own rounding (2^-11), and the tests compare this path
 * with the float32 reference at a stated tolerance.
 *
 * Layout (tiles are 16 rows x 64 bytes):
 *   - x is packed once per product into 16-token tiles of 32 columns,
 *     hi and lo, zero-padded to 32 tokens and 32 columns;
 *   - a thread claims up to GROUP panels of 32 output rows; per slice of KC
 *     columns it converts each panel into the tiles' pair-interleaved
 *     (VNNI) layout, hi and lo (AVX-512: 16 x 16 transposes of value
 *     pairs in registers), then runs every 32-token block over them;
 *   - the micro-kernel keeps a 32 x 32 block of y in four accumulator
 *     tiles over the slice; per 32 columns it loads two x tiles and two
 *     weight tiles per term and issues 12 (BF16: 8) tile products.
 * Used when the CPU and the kernel allow AMX (cpu.c: lf_cpu_amx) and T is
 * large enough for the tiles to pay off; LORAFLOW_AMX=0 turns it off. */
#include "simd.h"
#include "../core/util.h"

#include <stdlib.h>
#include <string.h>

#ifdef LF_X86
#include <immintrin.h>

#define KC 256     /* columns per slice: a 32-row panel's tiles are 32 KiB, x's slice 2 KiB per token */
#define GROUP 8    /* most panels per claim (x is read from L2 or L3 once per claim and slice) */
#define MIN_T 32   /* fewer tokens: the float32 GEMM */
#define MIN_K 128  /* fewer columns (a rank-64 adapter's second product): the float32 GEMM is faster */

#define T_AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c")))

/* Tile configuration: palette 1, eight tiles of 16 rows x 64 bytes. */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg;

T_AMX static void tiles_on(void) {
    tilecfg c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int i = 0; i < 8; i++) {
        c.colsb[i] = 64;
        c.rows[i] = 16;
    }
    _tile_loadconfig(&c);
}

T_AMX static void tiles_off(void) { _tile_release(); }

/* bf16 of 16 floats (round to nearest even) as 32-bit lanes, value in the low half. */
T_AMX static inline __m512i bf16_lanes(__m512 f) {
    return _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(f));
}

/* Back to float32. */
T_AMX static inline __m512 lanes_f32(__m512i b) { return _mm512_castsi512_ps(_mm512_slli_epi32(b, 16)); }

/* f - hi, with 0 where it is not a number (f infinite or NaN: hi carries it). */
T_AMX static inline __m512 remainder_of(__m512 f, __m512i hi) {
    const __m512 d = _mm512_sub_ps(f, lanes_f32(hi));
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(d, d, _CMP_ORD_Q), d);
}

/* 32 values as hi and lo bfloat16, pairs (2i, 2i+1) in 32-bit lane i. */
T_AMX static inline void split32(__m512 f0, __m512 f1, __m512i *hi, __m512i *lo) {
    const __m512i h = (__m512i)_mm512_cvtne2ps_pbh(f1, f0);
    const __m512i h0 = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(h));
    const __m512i h1 = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(h, 1));
    *hi = h;
    *lo = (__m512i)_mm512_cvtne2ps_pbh(remainder_of(f1, h1), remainder_of(f0, h0));
}

/* ---- x: tiles [tile][slice-relative column block][hi, lo][16][32] ---- */

typedef struct {
    const lf_mat *W;
    const float *x;
    size_t xst, xsk;
    float *y;
    uint16_t *xp; /* packed x: [ntiles16][nkb][2][16][32] */
    int T, rows, cols, nkb, ntiles, nblocks, npanels, accumulate, wtrans, has_lo;
    int nsplit; /* token ranges per group of panels (few output rows: more chunks than groups) */
    const uint16_t *pre; /* or NULL: every panel converted already, [npanels][nkb][4][512] */
    int group;           /* panels per claim, at most GROUP */
} amx_job;

/* Tile t of x (16 tokens), all column blocks. */
T_AMX static void pack_x_tile(void *ctx, int t) {
    const amx_job *g = ctx;
    float *row = NULL;
    if (g->xsk != 1) row = lf_xaligned((size_t)g->cols * sizeof(float));
    for (int i = 0; i < 16; i++) {
        const int tok = t * 16 + i;
        const float *src = NULL;
        if (tok < g->T) {
            if (g->xsk == 1) src = g->x + (size_t)tok * g->xst;
            else {
                for (int c = 0; c < g->cols; c++) row[c] = g->x[(size_t)tok * g->xst + (size_t)c * g->xsk];
                src = row;
            }
        }
        for (int kb = 0; kb < g->nkb; kb++) {
            uint16_t *dst = g->xp + (((size_t)t * g->nkb + kb) * 2 * 16 + i) * 32;
            if (!src) {
                _mm512_store_si512(dst, _mm512_setzero_si512());
                _mm512_store_si512(dst + 16 * 32, _mm512_setzero_si512());
                continue;
            }
            const int c0 = kb * 32, m = g->cols - c0 < 32 ? g->cols - c0 : 32;
            const __mmask16 k0 = (__mmask16)(m >= 16 ? 0xffff : (1u << m) - 1);
            const __mmask16 k1 = (__mmask16)(m >= 32 ? 0xffff : m <= 16 ? 0 : (1u << (m - 16)) - 1);
            __m512i hi, lo;
            split32(_mm512_maskz_loadu_ps(k0, src + c0), _mm512_maskz_loadu_ps(k1, src + c0 + 16), &hi, &lo);
            _mm512_store_si512(dst, hi);
            _mm512_store_si512(dst + 16 * 32, lo);
        }
    }
    free(row);
}

/* ---- weights: panel [kb][hi0, hi1, lo0, lo1][16 pair rows][16 x 2] ---- */

/* 16 values of W (row r, from element index col + r * ld: lf_mat_col; the
 * first m) as float32, 0 past the matrix. */
T_AMX static inline __m512 w16(const lf_mat *W, int r, size_t col, size_t ld, int m) {
    if (r >= W->rows || m <= 0) return _mm512_setzero_ps();
    const __mmask16 k = (__mmask16)(m >= 16 ? 0xffff : (1u << m) - 1);
    const uint16_t *p = (const uint16_t *)W->data + col + (size_t)r * ld;
    const __m256i v = _mm256_maskz_loadu_epi16(k, p);
    if (W->dtype == LF_F16) return _mm512_cvtph_ps(v);
    return lanes_f32(_mm512_cvtepu16_epi32(v));
}

/* Panel of output rows o0 .. o0+31 (W^T: rows of W; W: columns of W),
 * column blocks kb0 .. kb0+nkb-1, into dst. */
T_AMX static void pack_panel(uint16_t *dst, const amx_job *g, int o0, int kb0, int nkb) {
    const lf_mat *W = g->W;
    /* The weights come from memory in short runs (64 bytes of each of 32
     * rows, or 64 bytes of each of 256 rows), which the hardware
     * prefetchers do not follow: ask for the next slice's now, into L2. */
    const int cn = (kb0 + nkb) * 32, kdim = g->wtrans ? W->rows : W->cols;
    if (cn < kdim) {
        const char *base = W->data;
        if (!g->wtrans) {
            const int ce = cn + KC < kdim ? cn + KC : kdim;
            for (int c = cn; c < ce; c += 32) {
                size_t ld;
                const size_t at = lf_mat_col(W, c, &ld);
                for (int j = 0; j < 32 && o0 + j < W->rows; j++)
                    _mm_prefetch(base + (at + (size_t)(o0 + j) * ld) * 2, _MM_HINT_T1);
            }
        } else {
            const int re = cn + KC < kdim ? cn + KC : kdim, oe = o0 + 31 < W->cols ? o0 + 31 : W->cols - 1;
            size_t ld; /* o0 .. oe: one column block */
            const size_t a0 = lf_mat_col(W, o0, &ld), ae = a0 + (size_t)(oe - o0);
            for (int r = cn; r < re; r++) {
                _mm_prefetch(base + (a0 + (size_t)r * ld) * 2, _MM_HINT_T1);
                _mm_prefetch(base + (ae + (size_t)r * ld) * 2, _MM_HINT_T1);
            }
        }
    }
    for (int kb = 0; kb < nkb; kb++) {
        const int c0 = (kb0 + kb) * 32;
        uint16_t *tile = dst + (size_t)kb * 4 * 16 * 32;
        for (int half = 0; half < 2; half++) {
            __m512i hi[16], lo[16];
            const int n0 = o0 + half * 16;
            if (!g->wtrans) {
                /* row n0 + j of W gives 16 pairs: lane p = columns c0 + 2p, +1 */
                const int m = W->cols - c0;
                size_t ld; /* c0 .. c0+31: one column block */
                const size_t at = lf_mat_col(W, c0, &ld);
                for (int j = 0; j < 16; j++)
                    split32(w16(W, n0 + j, at, ld, m), w16(W, n0 + j, at + 16, ld, m - 16), &hi[j], &lo[j]);
                lf_tr16_epi32(hi);
                lf_tr16_epi32(lo);
            } else {
                /* pair row p: rows c0 + 2p and c0 + 2p + 1 of W at columns n0 .. n0+15 */
                const int m = W->cols - n0;
                size_t ld = 0; /* n0 .. n0+15: one column block (none past the matrix: w16 gives 0) */
                const size_t at = m > 0 ? lf_mat_col(W, n0, &ld) : 0;
                for (int p = 0; p < 16; p++) {
                    const __m512 a = w16(W, c0 + 2 * p, at, ld, m), b = w16(W, c0 + 2 * p + 1, at, ld, m);
                    const __m512i ha = bf16_lanes(a), hb = bf16_lanes(b);
                    hi[p] = _mm512_or_si512(ha, _mm512_slli_epi32(hb, 16));
                    const __m512i la = bf16_lanes(remainder_of(a, ha)), lb = bf16_lanes(remainder_of(b, hb));
                    lo[p] = _mm512_or_si512(la, _mm512_slli_epi32(lb, 16));
                }
            }
            for (int p = 0; p < 16; p++) {
                _mm512_store_si512(tile + ((size_t)half * 16 + p) * 32, hi[p]);
                _mm512_store_si512(tile + ((size_t)(2 + half) * 16 + p) * 32, lo[p]);
            }
        }
    }
}

/* ---- micro-kernel: 32 tokens x 32 outputs over nkb column blocks ----
 * c: the block's four accumulator tiles, contiguous ([t0 o0, t0 o1, t1 o0,
 * t1 o1][16][16]); in registers tmm0..3.  tmm4, 5: x tiles; tmm6, 7:
 * weight tiles. */
T_AMX static void kernel(int nkb, const uint16_t *xa, const uint16_t *xb, const uint16_t *pw, float *c, int load,
                         int has_lo) {
    if (load) {
        _tile_loadd(0, c, 64);
        _tile_loadd(1, c + 256, 64);
        _tile_loadd(2, c + 512, 64);
        _tile_loadd(3, c + 768, 64);
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }
/* the four accumulators += x tiles (tmm4, 5) times weight tiles (tmm6, 7) */
#define TILE_PRODUCTS()          \
    do {                         \
        _tile_dpbf16ps(0, 4, 6); \
        _tile_dpbf16ps(1, 4, 7); \
        _tile_dpbf16ps(2, 5, 6); \
        _tile_dpbf16ps(3, 5, 7); \
    } while (0)
    for (int kb = 0; kb < nkb; kb++) {
        const uint16_t *w = pw + (size_t)kb * 4 * 512, *a = xa + (size_t)kb * 2 * 512, *b = xb + (size_t)kb * 2 * 512;
        _tile_loadd(4, a, 64); /* x_hi */
        _tile_loadd(5, b, 64);
        if (has_lo) {
            _tile_loadd(6, w + 2 * 512, 64); /* W_lo */
            _tile_loadd(7, w + 3 * 512, 64);
            TILE_PRODUCTS();
        }
        _tile_loadd(6, w, 64); /* W_hi */
        _tile_loadd(7, w + 512, 64);
        TILE_PRODUCTS();
        _tile_loadd(4, a + 512, 64); /* x_lo */
        _tile_loadd(5, b + 512, 64);
        TILE_PRODUCTS();
    }
#undef TILE_PRODUCTS
    _tile_stored(0, c, 64);
    _tile_stored(1, c + 256, 64);
    _tile_stored(2, c + 512, 64);
    _tile_stored(3, c + 768, 64);
}

/* Element (i, o) of a 32 x 32 block held as four contiguous tiles. */
static inline size_t at_block(int i, int o) { return (size_t)((i >> 4) * 2 + (o >> 4)) * 256 + (i & 15) * 16 + (o & 15); }

/* g->group panels of 32 output rows and one range of tokens (one chunk): the y block is
 * accumulated in a contiguous buffer of tiles (y's own rows lie rows * 4
 * bytes apart: tile loads and stores there collide in the cache), copied
 * in and out once. */
T_AMX static void panels_chunk(void *ctx, int chunk) {
    const amx_job *g = ctx;
    const int grp = chunk / g->nsplit, part = chunk % g->nsplit;
    const int p0 = grp * g->group, np = g->npanels - p0 < g->group ? g->npanels - p0 : g->group;
    const int b0 = (int)((long)g->nblocks * part / g->nsplit), b1 = (int)((long)g->nblocks * (part + 1) / g->nsplit);
    const int kbs = KC / 32;
    uint16_t *panels = g->pre ? NULL : lf_xaligned((size_t)GROUP * kbs * 4 * 512 * sizeof(uint16_t));
    float *cbuf = lf_xaligned((size_t)(b1 - b0) * np * 1024 * sizeof(float));
    if (g->accumulate)
        for (int b = b0; b < b1; b++)
            for (int j = 0; j < np; j++) {
                float *c = cbuf + ((size_t)(b - b0) * np + j) * 1024;
                const int t0 = b * 32, o0 = (p0 + j) * 32;
                const int mv = g->T - t0 < 32 ? g->T - t0 : 32, nv = g->rows - o0 < 32 ? g->rows - o0 : 32;
                for (int i = 0; i < 32; i++)
                    for (int o = 0; o < 32; o++)
                        c[at_block(i, o)] = i < mv && o < nv ? g->y[(size_t)(t0 + i) * g->rows + o0 + o] : 0.0f;
            }
    tiles_on();
    for (int kb0 = 0; kb0 < g->nkb; kb0 += kbs) {
        const int nkb = g->nkb - kb0 < kbs ? g->nkb - kb0 : kbs;
        const int load = g->accumulate || kb0 > 0;
        const uint16_t *pw[GROUP];
        for (int j = 0; j < np; j++) {
            if (g->pre) {
                pw[j] = g->pre + ((size_t)(p0 + j) * g->nkb + kb0) * 4 * 512;
            } else {
                pack_panel(panels + (size_t)j * kbs * 4 * 512, g, (p0 + j) * 32, kb0, nkb);
                pw[j] = panels + (size_t)j * kbs * 4 * 512;
            }
        }
        for (int b = b0; b < b1; b++) {
            const uint16_t *xa = g->xp + ((size_t)(2 * b) * g->nkb + kb0) * 2 * 512;
            const uint16_t *xb = g->xp + ((size_t)(2 * b + 1) * g->nkb + kb0) * 2 * 512;
            for (int j = 0; j < np; j++)
                kernel(nkb, xa, xb, pw[j], cbuf + ((size_t)(b - b0) * np + j) * 1024, load, g->has_lo);
        }
    }
    tiles_off();
    for (int b = b0; b < b1; b++)
        for (int j = 0; j < np; j++) {
            const float *c = cbuf + ((size_t)(b - b0) * np + j) * 1024;
            const int t0 = b * 32, o0 = (p0 + j) * 32;
            const int mv = g->T - t0 < 32 ? g->T - t0 : 32, nv = g->rows - o0 < 32 ? g->rows - o0 : 32;
            for (int i = 0; i < mv; i++) {
                float *yr = g->y + (size_t)(t0 + i) * g->rows + o0;
                memcpy(yr, c + at_block(i, 0), (size_t)(nv < 16 ? nv : 16) * sizeof(float));
                if (nv > 16) memcpy(yr + 16, c + at_block(i, 16), (size_t)(nv - 16) * sizeof(float));
            }
        }
    free(panels);
    free(cbuf);
}

/* The products with W (wtrans) run on AMX tiles from MIN_T tokens on. */
static int amx_shape(const lf_mat *W, int wtrans) {
    if ((W->dtype != LF_F16 && W->dtype != LF_BF16) || !lf_cpu_amx()) return 0;
    const int rows = wtrans ? W->cols : W->rows, cols = wtrans ? W->rows : W->cols;
    /* fewer than MIN_K columns: too few tile products per block to pay for packing x and y's tiles */
    return rows > 0 && cols >= MIN_K;
}

size_t lf_amx_panels_bytes(const lf_mat *W, int wtrans) {
    if (!amx_shape(W, wtrans)) return 0;
    const size_t rows = (size_t)(wtrans ? W->cols : W->rows), cols = (size_t)(wtrans ? W->rows : W->cols);
    return (rows + 31) / 32 * ((cols + 31) / 32) * 4 * 512 * sizeof(uint16_t);
}

typedef struct {
    amx_job g;
    uint16_t *p;
} prepack_job;

T_AMX static void prepack_panel(void *ctx, int panel) {
    const prepack_job *j = ctx;
    pack_panel(j->p + (size_t)panel * j->g.nkb * 4 * 512, &j->g, panel * 32, 0, j->g.nkb);
}

lf_amx_panels *lf_amx_panels_new(const lf_mat *W, int wtrans) {
    const size_t bytes = lf_amx_panels_bytes(W, wtrans);
    if (!bytes) return NULL;
    lf_amx_panels *pp = lf_panels_alloc(W, wtrans, LF_PANELS_AMX, bytes);
    if (!pp) return NULL;
    prepack_job j = {.g = {.W = W, .wtrans = wtrans}, .p = pp->p};
    j.g.rows = wtrans ? W->cols : W->rows;
    j.g.cols = wtrans ? W->rows : W->cols;
    j.g.nkb = (j.g.cols + 31) / 32;
    lf_parallel_chunks(prepack_panel, &j, (j.g.rows + 31) / 32, lf_kernels_threads());
    return pp;
}

int lf_gemm_amx(float *y, const float *x, size_t xst, size_t xsk, const lf_mat *W, int wtrans, int T,
                int accumulate) {
    if (T < MIN_T || !amx_shape(W, wtrans)) return 0;
    const int rows = wtrans ? W->cols : W->rows, cols = wtrans ? W->rows : W->cols;
    amx_job g = {.W = W, .x = x, .xst = xst, .xsk = xsk, .y = y, .T = T, .rows = rows, .cols = cols,
                 .accumulate = accumulate, .wtrans = wtrans, .has_lo = W->dtype == LF_F16};
    const lf_amx_panels *pp = W->panels[wtrans ? 1 : 0];
    if (lf_panels_match(pp, W, wtrans, LF_PANELS_AMX)) g.pre = pp->p;
    g.nkb = (cols + 31) / 32;
    g.nblocks = (T + 31) / 32;
    g.ntiles = 2 * g.nblocks;
    g.npanels = (rows + 31) / 32;
    g.xp = lf_xaligned((size_t)g.ntiles * g.nkb * 2 * 512 * sizeof(uint16_t));
    /* x is read once per claim and slice: the more panels a claim holds, the
     * less it is read, as long as their y blocks (4 KiB per 32 x 32) stay
     * within about 1 MiB of L2 */
    g.group = GROUP;
    while (g.group > 1 && (size_t)g.nblocks * g.group * 4096 > (1u << 20)) g.group /= 2;
    const int nt = lf_kernels_threads(), ngroups = (g.npanels + g.group - 1) / g.group;
    /* at least two chunks per thread: few groups share out their tokens */
    g.nsplit = ngroups >= 2 * nt ? 1 : (2 * nt + ngroups - 1) / ngroups;
    if (g.nsplit > g.nblocks) g.nsplit = g.nblocks;
    lf_parallel_chunks(pack_x_tile, &g, g.ntiles, nt);
    lf_parallel_chunks(panels_chunk, &g, ngroups * g.nsplit, nt);
    free(g.xp);
    return 1;
}

#else

lf_amx_panels *lf_amx_panels_new(const lf_mat *W, int wtrans) {
    (void)W, (void)wtrans;
    return NULL;
}
size_t lf_amx_panels_bytes(const lf_mat *W, int wtrans) {
    (void)W, (void)wtrans;
    return 0;
}

int lf_gemm_amx(float *y, const float *x, size_t xst, size_t xsk, const lf_mat *W, int wtrans, int T,
                int accumulate) {
    (void)y, (void)x, (void)xst, (void)xsk, (void)W, (void)wtrans, (void)T, (void)accumulate;
    return 0;
}

#endif
