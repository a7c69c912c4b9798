/* fusion.h: applying k stacked LoRA adapters with per-token weights, and the
 * LoRA-Flow gates that produce those weights (fusion layer). */
#ifndef LF_FUSION_H
#define LF_FUSION_H

#include "../model/model.h"

/* y [n, out] = u W0^T + sum_i w[t, i] * c_i * B_i (A_i u), with the k adapters
 * stacked (one pass over A_cat and one over B_cat).  w: [n, k] or NULL for
 * the base projection only.  z: scratch of at least n * stack->R floats. */
void lf_project(float *y, const float *u, const lf_mat *W, const lf_lora_stack *stack,
                const float *w, int k, int n, float *z);
/* The same, computing every adapter separately (reference for tests). */
void lf_project_ref(float *y, const float *u, const lf_mat *W, const lf_lora_stack *stack,
                    const float *w, int k, int n);

/* Scale z [n, R] (= A_cat u) in place: block i of token t by w[t, i] * c_i
 * (the step of lf_project between its two adapter products). */
void lf_lora_scale(float *z, const lf_lora_stack *st, const float *w, int k, int n);

/* w [k] = softmax(W_gate[l] x / T) + b[l] for one token x [H];
 * s_out [k] (optional) receives the raw gate logits W_gate[l] x. */
void lf_gate_weights(const lf_gate *g, int l, const float *x, float T, float *w, float *s_out);

/* Rebuild the stacked A_cat/B_cat of every layer and projection from the
 * attached adapters (after an adapter was added). */
int lf_fusion_restack(lf_model *m);
/* Release every attached adapter (lf_model_free). */
void lf_adapters_free(lf_model *m);
/* mkdir that accepts an existing folder. */
int lf_make_dir(const char *dir);

#endif
