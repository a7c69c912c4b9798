/* project.c: a linear layer with k LoRA adapters fused by per-token weights. */
#include "fusion.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void lf_lora_scale(float *z, const lf_lora_stack *st, const float *w, int k, int n) {
    const int R = st->R;
    for (int t = 0; t < n; t++) {
        for (int i = 0; i < k; i++) {
            if (!st->rank[i]) continue;
            const float f = w[(size_t)t * k + i] * st->scale[i];
            float *zi = z + (size_t)t * R + st->off[i];
            for (int j = 0; j < st->rank[i]; j++) zi[j] *= f;
        }
    }
}

void lf_project(float *y, const float *u, const lf_mat *W, const lf_lora_stack *st,
                const float *w, int k, int n, float *z) {
    if (!w || st->R == 0) {
        lf_matmul(y, u, W, n, 0);
        return;
    }
    /* y = u W^T and z = A_cat u [n, R], u packed once */
    const lf_product pr[2] = {{y, W, 0, 0}, {z, &st->A, 0, 0}};
    lf_matmul_many(pr, 2, u, n);
    lf_lora_scale(z, st, w, k, n);
    lf_matmul(y, z, &st->B, n, 1); /* y += B_cat z */
}

void lf_project_ref(float *y, const float *u, const lf_mat *W, const lf_lora_stack *st,
                    const float *w, int k, int n) {
    lf_matmul_ref(y, u, W, n, 0);
    if (!w) return;
    const int in = W->cols, out = W->rows;
    for (int i = 0; i < k; i++) {
        const int r = st->rank[i];
        if (!r) continue;
        for (int t = 0; t < n; t++) {
            const float *ut = u + (size_t)t * in;
            for (int o = 0; o < out; o++) {
                double acc = 0;
                for (int j = 0; j < r; j++) {
                    double a = 0;
                    for (int c = 0; c < in; c++) {
                        float av;
                        lf_to_f32(&av, st->A.data, st->A.dtype, (size_t)(st->off[i] + j) * in + c, 1);
                        a += (double)av * ut[c];
                    }
                    float bv;
                    lf_to_f32(&bv, st->B.data, st->B.dtype, (size_t)o * st->R + st->off[i] + j, 1);
                    acc += (double)bv * a;
                }
                y[(size_t)t * out + o] += (float)(w[(size_t)t * k + i] * st->scale[i] * acc);
            }
        }
    }
}

void lf_gate_weights(const lf_gate *g, int l, const float *x, float T, float *w, float *s_out) {
    const int k = g->k, H = g->H;
    float s[LF_MAX_ADAPTERS];
    for (int i = 0; i < k; i++) {
        const float *row = g->W + ((size_t)l * k + i) * H;
        /* four partial sums: one chain of dependent double additions took
         * 3 us per layer and token (65 us of a 1b decoding step's 40 ms on
         * an AMD EPYC guest), four 1 us */
        double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        int j = 0;
        for (; j + 4 <= H; j += 4) {
            a0 += (double)row[j] * x[j];
            a1 += (double)row[j + 1] * x[j + 1];
            a2 += (double)row[j + 2] * x[j + 2];
            a3 += (double)row[j + 3] * x[j + 3];
        }
        for (; j < H; j++) a0 += (double)row[j] * x[j];
        s[i] = (float)((a0 + a1) + (a2 + a3));
        if (s_out) s_out[i] = s[i];
        w[i] = s[i] / T;
    }
    lf_softmax(w, k);
    for (int i = 0; i < k; i++) w[i] += g->b[(size_t)l * k + i];
}
