/* train_kernels.h: the products and elementwise steps of the backward pass
 * (tensors layer).  Same conventions as kernels.h: W is [rows = out,
 * cols = in], row-major, F32/F16/BF16; accumulation in float32.  Each fast
 * kernel has a plain reference version (suffix _ref) it is tested against. */
#ifndef LF_TRAIN_KERNELS_H
#define LF_TRAIN_KERNELS_H

#include "kernels.h"

/* dx[t, c] (+)= sum_r W[r, c] * dy[t, r]: the input gradient of y = x W^T.
 * dy: [T, W->rows], dx: [T, W->cols]. */
void lf_matmul_tn(float *dx, const float *dy, const lf_mat *W, int T, int accumulate);
void lf_matmul_tn_ref(float *dx, const float *dy, const lf_mat *W, int T, int accumulate);

/* dW[r, c] += sum_t dy[t, r] * x[t, c]: the weight gradient of y = x W^T.
 * dW: [rows, cols] float32, dy: [T, rows], x: [T, cols]. */
void lf_matmul_wgrad(float *dW, const float *dy, const float *x, int T, int rows, int cols);
void lf_matmul_wgrad_ref(float *dW, const float *dy, const float *x, int T, int rows, int cols);

/* RMSNorm backward for y = g * x * inv, inv = 1 / sqrt(mean(x^2) + eps):
 * dx (+)= d/dx, dg (if non-NULL) += sum_t dy * x * inv.  x, dy, dx: [T, n]. */
void lf_rmsnorm_backward(float *dx, float *dg, const float *dy, const float *x, const float *g,
                         int T, int n, float eps);

/* The backward of act = silu(g) * u: du = dact * silu(g), dg = dact * u *
 * silu'(g), with silu'(g) = s (1 + g (1 - s)), s = sigmoid(g); n values. */
void lf_swiglu_backward(float *dg, float *du, const float *dact, const float *g, const float *u, size_t n);
void lf_swiglu_backward_ref(float *dg, float *du, const float *dact, const float *g, const float *u, size_t n);

#endif
