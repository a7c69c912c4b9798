/* kernels.h: the compute kernels (tensors layer).
 *
 * Every hot loop has a plain reference version (suffix _ref) that the fast
 * version is tested against.  Weights are [rows = out, cols = in] matrices in
 * F32, F16, BF16 or Q8 (int8, see below), converted to float32 on the fly;
 * accumulation is float32.  Fast paths: AVX-512, AVX2 and portable C, chosen
 * at run time (simd.h); the threads of the products are pool.c's (created
 * once), OpenMP's for a few other loops. */
#ifndef LF_KERNELS_H
#define LF_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include "loraflow.h"

/* Internal weight type: 8-bit weights with one scale per block of 32
 * values (the --quantize q8 load option).  Not a file dtype: it never
 * appears in a tensorset, only in an lf_mat. */
#define LF_Q8 ((lf_dtype)16)
#define LF_Q8_BLOCK 32
#define LF_Q8_GROUP 256  /* 8 blocks stored interleaved (see lf_q8_quantize); a row of at most 256
                            values is one group of its own blocks */

/* A weight matrix W [rows, cols], row-major (PyTorch nn.Linear layout), or
 * in column blocks (colblock > 0; F32/F16/BF16): the columns cut into
 * blocks of colblock (the last one narrower), each block stored as a
 * row-major [rows][width] matrix, the blocks one after the other.  A
 * decoding pass then streams one block at a time with only its part of x
 * in L1 (lf_colblock_for says when that pays).  Element (r, c) is at
 * lf_mat_at(W, r, c); a run of columns inside one block is contiguous.
 * Q8: each row is its lf_q8_row_bytes(cols) bytes of codes, then its F16
 * block scales (lf_q8_row_bytes(cols) / 32 of them), padded with zeros to
 * a multiple of 64 bytes (of 8 bytes for rows of fewer than 256 codes):
 * the rows one after the other, so that a decoding pass over a matrix is
 * one stream of memory. */
typedef struct lf_amx_panels lf_amx_panels;

typedef struct {
    lf_dtype dtype;   /* LF_F32, LF_F16, LF_BF16 or LF_Q8 */
    const void *data;
    int rows, cols;
    /* or NULL: this matrix already converted to AMX tiles or bfloat16
     * pairs for the products with W^T ([0]) and with W ([1])
     * (lf_prepack_new); used only while it matches data, rows, cols and
     * dtype, so a view made by copying the struct and changing them does
     * not use it */
    const lf_amx_panels *panels[2];
    int colblock; /* 0: row-major; else columns per block, a multiple of 64 */
} lf_mat;

/* Index of element (0, c) of W (F32/F16/BF16) in its storage, and in *ld
 * the distance from one row to the next there (the width of c's column
 * block, or cols): element (r, c + i), i inside c's block, is at
 * lf_mat_col(W, c, &ld) + r * ld + i.  One division for the many rows of
 * the same columns a packing reads. */
static inline size_t lf_mat_col(const lf_mat *W, int c, size_t *ld) {
    if (!W->colblock) {
        *ld = (size_t)W->cols;
        return (size_t)c;
    }
    const int c0 = c / W->colblock * W->colblock;
    *ld = (size_t)(W->cols - c0 < W->colblock ? W->cols - c0 : W->colblock);
    return (size_t)W->rows * c0 + (size_t)(c - c0);
}
/* Index of element (r, c) of W (F32/F16/BF16) in its storage. */
static inline size_t lf_mat_at(const lf_mat *W, int r, int c) {
    size_t ld;
    const size_t b = lf_mat_col(W, c, &ld);
    return b + (size_t)r * ld;
}
/* Column blocks of W (1 for a row-major W). */
static inline int lf_mat_nblocks(const lf_mat *W) {
    return W->colblock ? (W->cols + W->colblock - 1) / W->colblock : 1;
}
/* Block b of W as a row-major matrix of its own (columns c0 .. c0 +
 * view->cols - 1 of W; *c0 set when c0 is not NULL). */
void lf_mat_block(const lf_mat *W, int b, lf_mat *view, int *c0);
/* The column block width for a decoding layout of a [rows, cols] matrix
 * of dtype t, or 0 to keep it row-major: blocks when x (cols floats) is
 * more than LF_COLBLOCK_MAX_X bytes, as equal as multiples of 64 allow. */
#define LF_COLBLOCK_MAX_X (8u << 10)
int lf_colblock_for(lf_dtype t, int cols);
/* Copy the row-major src into dst (lf_mat_bytes(src) bytes) in column
 * blocks of colblock and set out (which may be src) as that matrix. */
void lf_mat_to_colblocks(void *dst, const lf_mat *src, int colblock, lf_mat *out);

/* ---- scalar conversions ---- */
float lf_f16_to_f32(uint16_t h);
uint16_t lf_f32_to_f16(float f);
static inline float lf_bf16_to_f32(uint16_t b) {
    union { uint32_t u; float f; } v = {.u = (uint32_t)b << 16};
    return v.f;
}
uint16_t lf_f32_to_bf16(float f); /* round to nearest even */

/* Convert n values of dtype t starting at element i0 of src into dst (F32). */
void lf_to_f32(float *dst, const void *src, lf_dtype t, size_t i0, size_t n);

/* Bytes of the storage of W (any dtype, Q8 scales included). */
size_t lf_mat_bytes(const lf_mat *W);
/* Row r of W as float32 (any dtype) into dst [W->cols]. */
void lf_mat_row_f32(float *dst, const lf_mat *W, int r);
/* Columns c0 .. c0+nc-1 of rows r0 .. r0+nr-1 of W (any dtype) as float32
 * into dst [nr][ld]; rows past W->rows are zero. */
void lf_mat_rows_f32(float *dst, int ld, const lf_mat *W, int r0, int nr, int c0, int nc);

/* ---- 8-bit weights ----
 * Each block of 32 values gets a scale d = max|w| / 127 (stored as F16) and
 * codes q = round(w / d) in [-127, 127], stored as q + 128 (unsigned: the
 * operand order of the VNNI instruction).  A row is padded with zero blocks
 * to a multiple of LF_Q8_GROUP; inside each group of 8 blocks the codes are
 * interleaved 4 at a time (byte (c * 8 + j) * 4 + b is value j * 32 + c * 4 + b)
 * so that one vector lane accumulates one block.  A row of at most 256
 * values (the stacked adapters' B_cat) is padded to whole blocks only and
 * is one group of its nbg blocks (byte (c * nbg + j) * 4 + b). */
size_t lf_q8_row_bytes(int cols);  /* codes per row: cols rounded up to LF_Q8_GROUP (to 32 up to 256) */
size_t lf_q8_stride(int cols);     /* bytes from one row to the next */
size_t lf_q8_bytes(int rows, int cols);
/* Quantise src (F32/F16/BF16 [rows, cols]) into dst (lf_q8_bytes) and set
 * out as the Q8 matrix over dst. */
void lf_q8_quantize(void *dst, const lf_mat *src, lf_mat *out);

/* ---- matrix products ---- */
/* y[t, r] (+)= sum_c W[r, c] * x[t, c] for t < T.
 * x: [T, W->cols], y: [T, W->rows].  accumulate: add to y instead of overwriting. */
void lf_matmul(float *y, const float *x, const lf_mat *W, int T, int accumulate);
/* One of several products of the same x (lf_matmul_many, lf_gemm_many):
 * y (+)= x W^T (wtrans 0) or x W (wtrans 1). */
typedef struct {
    float *y;
    const lf_mat *W;
    int wtrans, accumulate;
} lf_product;
/* Products of one x [T, in] with several matrices: y_i (+)= x W_i^T
 * (wtrans 0: lf_matmul) or x W_i (wtrans 1: lf_matmul_tn), every W_i with
 * input width in.  From as many tokens as the GEMM takes, x is packed once
 * and the products run as one job (lf_gemm_many); the results are those
 * of the calls one by one, bit for bit (train_kernels.c). */
void lf_matmul_many(const lf_product *o, int n, const float *x, int T);
void lf_matmul_ref(float *y, const float *x, const lf_mat *W, int T, int accumulate);

/* ---- elementwise and normalisation ---- */
/* y[t] = g * x[t] / sqrt(mean(x[t]^2) + eps), x,y: [T, n]. */
void lf_rmsnorm(float *y, const float *x, const float *g, int T, int n, float eps);
/* In place softmax of n values. */
void lf_softmax(float *x, int n);
/* log(sum(exp(x))) computed stably. */
float lf_logsumexp(const float *x, int n);
/* silu(a) * b into a, n values (lf_swiglu_to: into y, which may be a).
 * RMSNorm of many tokens and SwiGLU of many values run on the kernel
 * threads, with the same sums. */
void lf_swiglu(float *a, const float *b, size_t n);
void lf_swiglu_to(float *y, const float *a, const float *b, size_t n);
/* Short vectors (vec.c, SIMD): a . b; y += a x; x = exp(x) in place
 * (relative error under 2e-7, 0 below -87.3). */
float lf_dot_f32(const float *a, const float *b, int n);
void lf_axpy_f32(float *y, float a, const float *x, int n);
void lf_exp_f32(float *x, int n);
/* Attention of one query q [hd] over len keys K and values V ([len, hd]
 * each, contiguous): o [hd] = softmax(K q * scale) V.  sc: scratch [len]. */
void lf_attend(float *o, const float *q, const float *K, const float *V, int len, int hd, float scale, float *sc);
/* lf_attend for the G queries q [G, hd] that share K and V (grouped-query
 * attention), into o [G, hd]: each block of keys and values is read once
 * from memory for all G.  sc: scratch [G * len]. */
void lf_attend_group(float *o, const float *q, int G, const float *K, const float *V, int len, int hd, float scale,
                     float *sc);

/* One matrix-vector product of a batch (decoding, one token):
 * y (+)= W x, and then y += B z when B is set (B [W->rows, R], z [R]):
 * the base projection and the stacked adapters' second factor in one pass
 * over the rows.  y must not alias x or z. */
typedef struct {
    const lf_mat *W;
    const float *x;
    float *y;
    int accumulate;
    const lf_mat *B;   /* or NULL */
    const float *z;
} lf_matvec_job;
/* Run the jobs on the kernel threads, the rows of all of them cut into
 * items of about 64 KiB of weights, one range of items per thread (one
 * wake-up for several matrices; matvec.c).  A W in column blocks runs as
 * one job per block; each row's sum is its blocks' sums added in block
 * order (lf_matmul_rows adds them the same way). */
void lf_matvec(const lf_matvec_job *jobs, int n);
/* lf_matvec in two stages within one batch: the jobs pre[0..npre-1] (no
 * B; at most 4) first, then after_pre(ctx) once, by the thread that
 * finishes the last of them; the other jobs' W x rows start at once, and
 * their B z waits for after_pre (z is what the first stage writes).  Saves
 * the threads' wake-up, the stream restarts and the uneven finish of a
 * batch of its own for the adapters' small first factors. */
void lf_matvec_staged(const lf_matvec_job *pre, int npre, void (*after_pre)(void *ctx), void *after_ctx,
                      const lf_matvec_job *jobs, int n);
/* fn(ctx, c) for c < nchunks on the kernel threads (pool.c: no barrier
 * waits for a thread that took no chunk); for short parallel steps. */
void lf_parallel_for(void (*fn)(void *ctx, int chunk), void *ctx, int nchunks);

/* Threads used by the kernels (OpenMP). */
void lf_kernels_set_threads(int n);
int lf_kernels_threads(void);

/* Instruction-set paths.  lf_kernels_set_isa caps the path (tests run
 * every path in one process); it returns the previous cap.  The
 * environment variable LORAFLOW_NO_SIMD=1 forces LF_ISA_PORTABLE and
 * LORAFLOW_ISA=avx2|portable caps the detected path. */
enum { LF_ISA_PORTABLE = 0, LF_ISA_AVX2 = 1, LF_ISA_AVX512 = 2 };
int lf_kernels_set_isa(int isa);
/* AMX tiles for the many-token products of F16/BF16 weights (gemm_amx.c),
 * when the CPU and kernel allow them; on by default, LORAFLOW_AMX=0 turns
 * them off.  lf_kernels_set_amx(0) turns them off in this process (tests);
 * it returns the previous setting.  lf_kernels_amx: in use now. */
int lf_kernels_set_amx(int on);
int lf_kernels_amx(void);
/* How the AVX-512 matrix-vector kernels prefetch long weight rows
 * (LF_PREFETCH_*), or -1: by the CPU.  Into L2 on AMD Zen 4 (family 19h
 * with AVX-512), where prefetches into L1 or non-temporal ones read
 * slower than none and those into L2 faster; non-temporal on other AMD
 * CPUs (on Zen 5 faster than into L1); into L1 elsewhere (on Sapphire
 * Rapids non-temporal lines left L1 before use).
 * LORAFLOW_PREFETCH=nt|t0|t1|none sets it from the environment.
 * Returns the previous setting; the sums do not depend on it. */
#define LF_PREFETCH_T0 0
#define LF_PREFETCH_NT 1
#define LF_PREFETCH_NONE 2
#define LF_PREFETCH_T1 3
int lf_kernels_set_prefetch(int mode);
/* W converted once into the tiles its AMX products with W^T (wtrans 0) or
 * with W (wtrans 1) read, 4 bytes per weight (bfloat16 hi and lo), for a
 * caller that multiplies by the same weights many times (training): the
 * products skip their conversion while W->panels[wtrans] holds it.  NULL
 * when those products would not use AMX (CPU, dtype, shape) or memory is
 * short.  lf_amx_panels_bytes: the size it would take, 0 when NULL. */
lf_amx_panels *lf_amx_panels_new(const lf_mat *W, int wtrans);
size_t lf_amx_panels_bytes(const lf_mat *W, int wtrans);
void lf_amx_panels_free(lf_amx_panels *p);
/* The same for the products in bfloat16 (lf_set_products) on CPUs without
 * AMX: W's panels as the bfloat16 pairs the micro-kernel reads, 2 bytes
 * per weight (gemm.c).  NULL when those products are off or memory is
 * short; lf_pairs_panels_bytes: 0 then.  Freed with lf_amx_panels_free. */
lf_amx_panels *lf_pairs_panels_new(const lf_mat *W, int wtrans);
size_t lf_pairs_panels_bytes(const lf_mat *W, int wtrans);
/* The same for the float32 products on the AVX-512 and AVX2 paths
 * without AMX: W's own F32/F16/BF16 values in the path's micro-kernel
 * panel layout (its element size per weight), so that its products skip
 * the packing (a transposition and conversion of every weight at every
 * product) and widen F16/BF16 in registers; the sums are the same bit for
 * bit.  NULL when those products are off (bfloat16, AMX, another path, Q8
 * weights) or memory is short; lf_own_panels_bytes: 0 then.  Freed with
 * lf_amx_panels_free. */
lf_amx_panels *lf_own_panels_new(const lf_mat *W, int wtrans);
size_t lf_own_panels_bytes(const lf_mat *W, int wtrans);
/* Whichever of the three W's products with wtrans would read (AMX first,
 * then bfloat16 pairs, then its own panels). */
lf_amx_panels *lf_prepack_new(const lf_mat *W, int wtrans);
size_t lf_prepack_bytes(const lf_mat *W, int wtrans);
int lf_kernels_isa(void);
const char *lf_kernels_isa_name(int isa);

#endif
