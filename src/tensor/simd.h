/* simd.h: instruction-set dispatch and the per-ISA kernels behind
 * lf_matmul / lf_matvec (internal to src/tensor).
 *
 * Three paths: portable C (any CPU; LORAFLOW_NO_SIMD=1 forces it),
 * AVX2+FMA+F16C, and AVX-512 (F, BW, VL, DQ; the q8 kernel also wants
 * AVX512-VNNI and falls back to AVX2 without it).  The choice is made once
 * at run time with __builtin_cpu_supports; the default build has no -march
 * flag, each kernel carries its own target attribute. */
#ifndef LF_SIMD_H
#define LF_SIMD_H

#include <stddef.h>
#include <stdint.h>
#include "kernels.h"

#if defined(__x86_64__)
#define LF_X86 1
#endif

/* A pause in a spin-wait loop. */
#if defined(__x86_64__) || defined(__i386__)
#define lf_cpu_relax() __builtin_ia32_pause()
#else
#define lf_cpu_relax() ((void)0)
#endif

/* 64-byte aligned scratch of n bytes (rounded up); aborts when out of
 * memory (the GEMMs' packing buffers: a few hundred KiB). */
void *lf_xaligned(size_t n);

/* ---- which path ---- */
int lf_isa(void);         /* current LF_ISA_* (detected once, capped by the env and by lf_kernels_set_isa) */
int lf_cpu_vnni512(void); /* AVX512-VNNI present (and the AVX-512 path selected) */
int lf_cpu_amx(void);     /* AMX tiles usable (and the AVX-512 path selected, not turned off) */
int lf_cpu_bf16(void);    /* AVX512-BF16 present (and the AVX-512 path selected) */
int lf_products_bf16(void); /* products with stored matrices in bfloat16 (lf_set_products, and the CPU has them) */
int lf_cpu_l1d_ways(void); /* ways of the L1 data cache (0: not known) */
int lf_cpu_prefetch(void); /* LF_PREFETCH_*: how the AVX-512 path asks for long weight rows (rowdot.c, q8.c) */

#ifdef LF_X86
#include <immintrin.h>
/* 16 x 16 transpose of 32-bit lanes in registers: r[i] is row i in,
 * column i out (the weight panels of gemm.c and gemm_amx.c). */
__attribute__((target("avx512f"))) static inline void lf_tr16_epi32(__m512i r[16]) {
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    /* r[4q + s] now holds, in 128-bit lane L, column 4L + s of rows 4q .. 4q+3 */
    for (int i = 0; i < 16; i++) t[i] = r[i];
    for (int s = 0; s < 4; s++) {
        const __m512i a = _mm512_shuffle_i32x4(t[s], t[4 + s], 0x88); /* lanes 0, 2 of rows 0-3 and 4-7 */
        const __m512i b = _mm512_shuffle_i32x4(t[s], t[4 + s], 0xdd); /* lanes 1, 3 */
        const __m512i c = _mm512_shuffle_i32x4(t[8 + s], t[12 + s], 0x88);
        const __m512i d = _mm512_shuffle_i32x4(t[8 + s], t[12 + s], 0xdd);
        r[s] = _mm512_shuffle_i32x4(a, c, 0x88);     /* column s */
        r[8 + s] = _mm512_shuffle_i32x4(a, c, 0xdd); /* column 8 + s */
        r[4 + s] = _mm512_shuffle_i32x4(b, d, 0x88); /* column 4 + s */
        r[12 + s] = _mm512_shuffle_i32x4(b, d, 0xdd); /* column 12 + s */
    }
}
#endif

/* ---- row dot products (decoding) ----
 * out[i] = sum_c W[r0 + i, c] * x[c] for i < nr (nr <= 4), reading each
 * weight byte once.  x is float32 for F32/F16/BF16 rows, a quantised
 * activation (lf_q8_act) for Q8 rows. */
typedef void (*lf_rowdot_fn)(const lf_mat *W, int r0, int nr, const void *x, float *out);
/* Rows of more than LF_SHORT_ROW bytes of weights are read one at a time,
 * asking for the bytes LF_LONG_AHEAD further on into L1, LF_LONG_AHEAD_NT
 * further on as non-temporal, k LF_LONG_AHEAD_T1 further on for k = 1 ..
 * LF_LONG_REACH_T1 into L2 (each line asked for that many times), or not
 * asking, as lf_cpu_prefetch() says (rowdot.c gives the measurements; q8.c
 * reads its rows the same way). */
#define LF_SHORT_ROW 1024
#define LF_LONG_AHEAD 2048
#define LF_LONG_AHEAD_NT 6144
#define LF_LONG_AHEAD_T1 8192
#define LF_LONG_REACH_T1 3
/* With those, the four-row groups of short rows (B_cat) ask for the groups
 * 4, 8, .. 4 LF_SHORT_REACH_T1 after them into L2 too. */
#define LF_SHORT_REACH_T1 3
lf_rowdot_fn lf_rowdot_for(lf_dtype t, int isa);

void lf_rowdot_portable_f32(const lf_mat *W, int r0, int nr, const void *x, float *out);
void lf_rowdot_portable_f16(const lf_mat *W, int r0, int nr, const void *x, float *out);
void lf_rowdot_portable_bf16(const lf_mat *W, int r0, int nr, const void *x, float *out);
void lf_rowdot_portable_q8(const lf_mat *W, int r0, int nr, const void *x, float *out);
#ifdef LF_X86
void lf_rowdot_avx2_f32(const lf_mat *W, int r0, int nr, const void *x, float *out);
void lf_rowdot_avx2_f16(const lf_mat *W, int r0, int nr, const void *x, float *out);
void lf_rowdot_avx2_bf16(const lf_mat *W, int r0, int nr, const void *x, float *out);
void lf_rowdot_avx2_q8(const lf_mat *W, int r0, int nr, const void *x, float *out);
void lf_rowdot_avx512_f32(const lf_mat *W, int r0, int nr, const void *x, float *out);
void lf_rowdot_avx512_f16(const lf_mat *W, int r0, int nr, const void *x, float *out);
void lf_rowdot_avx512_bf16(const lf_mat *W, int r0, int nr, const void *x, float *out);
void lf_rowdot_avx512nt_f32(const lf_mat *W, int r0, int nr, const void *x, float *out);
void lf_rowdot_avx512nt_f16(const lf_mat *W, int r0, int nr, const void *x, float *out);
void lf_rowdot_avx512nt_bf16(const lf_mat *W, int r0, int nr, const void *x, float *out);
void lf_rowdot_avx512_q8(const lf_mat *W, int r0, int nr, const void *x, float *out);
void lf_rowdot_avx512nt_q8(const lf_mat *W, int r0, int nr, const void *x, float *out);
void lf_rowdot_avx512np_q8(const lf_mat *W, int r0, int nr, const void *x, float *out);
void lf_rowdot_avx512t1_q8(const lf_mat *W, int r0, int nr, const void *x, float *out);
#endif

/* ---- q8 internals ---- */
/* A float vector quantised to int8 blocks of 32 in the weights' interleaved
 * order (see kernels.h), for the integer dot products. */
typedef struct {
    int n, npad;      /* values, padded as a Q8 row of n values is (lf_q8_row_bytes) */
    int8_t *q;        /* [npad] interleaved like a Q8 weight row */
    float *d;         /* [npad / 32] block scales */
    int32_t *corr;    /* [npad / 32] 128 * sum of the block's q (the unsigned-weight offset) */
} lf_q8_act;
int lf_q8_act_init(lf_q8_act *a, int n);    /* 0 or -1 (out of memory) */
void lf_q8_act_free(lf_q8_act *a);
void lf_q8_act_quantize(lf_q8_act *a, const float *x);
/* Values c0 .. c0+nc-1 of row r of a Q8 matrix as float32. */
void lf_q8_dequant(float *dst, const lf_mat *W, int r, int c0, int nc);

/* ---- worker threads (pool.c) ---- */
/* Run fn(ctx, c) for c < nchunks on up to nthreads threads (the caller is
 * one): chunks are claimed from a shared counter and the call returns when
 * every chunk is done, without waiting for threads that took none. */
typedef void (*lf_chunk_fn)(void *ctx, int chunk);
void lf_parallel_chunks(lf_chunk_fn fn, void *ctx, int nchunks, int nthreads);
/* The same for items [0, nitems) in two phases, [0, nfirst) and then
 * [nfirst, nitems): each phase's items are cut in one range per thread
 * that its thread runs in order, taking over the back halves of the
 * others' ranges when its own is done; a thread turns to the second phase
 * only when every item of the first has been taken (pool.c). */
void lf_parallel_ranges(lf_chunk_fn fn, void *ctx, int nfirst, int nitems, int nthreads);

/* ---- products over many tokens ---- */
/* Weights converted once for many products (kernels.h: lf_prepack_new),
 * for the products with W^T (wtrans 0) or W (wtrans 1) of the matrix they
 * were made from, in one of three forms: */
enum {
    LF_PANELS_AMX,   /* AMX tiles [npanels][nkb][4][512] of uint16 (gemm_amx.c) */
    LF_PANELS_PAIRS, /* bfloat16 pairs [npanels][kp][32] of uint32 (gemm.c, bfloat16 products) */
    LF_PANELS_OWN    /* W's own values, F32/F16/BF16 as W stores them, in the float32 micro-kernel's
                        panels [npanels][cols][nr] (gemm.c; nr 32 for AVX-512, 16 for AVX2) */
};
struct lf_amx_panels {
    const void *data; /* the matrix it was made from */
    lf_dtype dtype;
    int rows, cols, wtrans;
    int form; /* LF_PANELS_* */
    int nr;   /* LF_PANELS_OWN: the panels' width, which the path reading them must have */
    void *p;
};
/* A new object for W's products with wtrans in the given form, with
 * bytes of 2 MiB-aligned storage in p (huge pages) to fill; NULL when out
 * of memory.  lf_amx_panels_free releases any form. */
struct lf_amx_panels *lf_panels_alloc(const lf_mat *W, int wtrans, int form, size_t bytes);
/* Whether pp was made from W for the products with wtrans, in that form. */
static inline int lf_panels_match(const struct lf_amx_panels *pp, const lf_mat *W, int wtrans, int form) {
    return pp && pp->data == W->data && pp->dtype == W->dtype && pp->rows == W->rows && pp->cols == W->cols &&
           pp->wtrans == (wtrans ? 1 : 0) && pp->form == form;
}

/* y [T, rows] (+)= x [T, cols] W^T, cache-blocked (gemm.c); any T. */
void lf_gemm(float *y, const float *x, const lf_mat *W, int T, int accumulate);
/* General form: element (t, c) of x is x[t * xst + c * xsk]; wtrans: the
 * product is with W (y [T, W->cols] (+)= x [T, W->rows] W) instead of W^T. */
void lf_gemm_ex(float *y, const float *x, size_t xst, size_t xsk, const lf_mat *W, int wtrans, int T,
                int accumulate);
/* lf_gemm_ex with both factors rounded to bfloat16 and the sums kept in
 * float32 when bf16 is non-zero and the CPU has AVX512-BF16 (gemm.c);
 * lf_gemm_ex otherwise.  The products with stored matrices (lf_matmul,
 * lf_matmul_tn) pass lf_products_bf16(). */
void lf_gemm_mode(float *y, const float *x, size_t xst, size_t xsk, const lf_mat *W, int wtrans, int T,
                  int accumulate, int bf16);
/* The same on AMX tiles (gemm_amx.c) when the CPU has them, W is F16 or
 * BF16 and T is large enough; returns 0, having done nothing, otherwise. */
int lf_gemm_amx(float *y, const float *x, size_t xst, size_t xsk, const lf_mat *W, int wtrans, int T,
                int accumulate);
/* The same with each weight row read once for all T tokens (small T). */
void lf_matmul_rows(float *y, const float *x, const lf_mat *W, int T, int accumulate);
/* Several products of one x, each y_i (+)= x W_i^T (wtrans 0) or x W_i
 * (1), every W_i of the same input width: x is packed once and the
 * products' panels are one job for the threads (a small product, such as
 * the adapters' 128 rows, fills a thread's time beside a large one instead
 * of being split in two).  The same sums, bit for bit, as one lf_gemm_mode
 * call per product. */
#define LF_GEMM_MANY_MAX 4
void lf_gemm_many(const lf_product *o, int n, const float *x, size_t xst, size_t xsk, int T, int bf16);
/* -1 (default): the float32 AVX-512 and AVX2 products read x where it lies when
 * its rows are not a multiple of 4 KiB apart or the job has few rows; 0:
 * never; 1: wherever possible (gemm.c, use_direct; for tests). */
extern int lf_gemm_direct_x;
/* 1 (default): a job's last product is cut into smaller chunks when its
 * chunks would not share out evenly between the threads (gemm.c,
 * balance_tail); 0: not (for measurements). */
extern int lf_gemm_balance;

#endif
