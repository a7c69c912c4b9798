/* kernels.h: the compute kernels (tensors layer).
 *
 * Every hot loop has a plain reference version (suffix _ref) that the fast
 * version is tested against.  Weights are [rows = out, cols = in] matrices in
 * F32, F16 or BF16, converted to float32 on the fly; accumulation is float32. */
#ifndef LF_KERNELS_H
#define LF_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include "loraflow.h"

/* A weight matrix W [rows, cols], row-major (PyTorch nn.Linear layout). */
typedef struct {
    lf_dtype dtype;   /* LF_F32, LF_F16 or LF_BF16 */
    const void *data;
    int rows, cols;
} lf_mat;

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

/* ---- matrix products ---- */
/* y[t, r] (+)= sum_c W[r, c] * x[t, c] for t < T.
 * x: [T, W->cols], y: [T, W->rows].  accumulate: add to y instead of overwriting. */
void lf_matmul(float *y, const float *x, const lf_mat *W, int T, int accumulate);
void lf_matmul_ref(float *y, const float *x, const lf_mat *W, int T, int accumulate);

/* ---- elementwise and normalisation ---- */
/* y[t] = g * x[t] / sqrt(mean(x[t]^2) + eps), x,y: [T, n]. */
void lf_rmsnorm(float *y, const float *x, const float *g, int T, int n, float eps);
/* In place softmax of n values. */
void lf_softmax(float *x, int n);
/* log(sum(exp(x))) computed stably. */
float lf_logsumexp(const float *x, int n);
/* silu(a) * b into a, n values. */
void lf_swiglu(float *a, const float *b, size_t n);

/* Threads used by the kernels (OpenMP). */
void lf_kernels_set_threads(int n);

#endif
