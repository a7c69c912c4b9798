/* train.h: the training forward/backward pass over one sequence
 * (model layer, internal).  Layers are checkpointed when memory is short:
 * the forward pass keeps only the residual stream entering each layer and
 * the backward pass recomputes one layer's internals at a time and
 * backpropagates through it; otherwise every layer keeps its internals
 * (lf_train_checkpoint). */
#ifndef LF_TRAIN_H
#define LF_TRAIN_H

#include "model.h"

/* What gets gradients. */
enum { LF_TRAIN_GATE = 1, LF_TRAIN_LORA = 2, LF_TRAIN_BASE = 4 };

/* One trainable tensor: the value (float32, updated in place) and its gradient. */
typedef struct {
    char name[192];
    float *w, *g;
    size_t n;
    int ndim;
    int64_t shape[2];
    int decay;           /* weight decay applies (not to norms or biases) */
    int own_grad;        /* g was allocated for this parameter alone */
} lf_param;

typedef struct lf_trainable lf_trainable;

/* Make the chosen set trainable.  LF_TRAIN_GATE needs gate (updated in
 * place); LF_TRAIN_LORA converts the stacked adapters to float32 in place;
 * LF_TRAIN_BASE makes float32 copies of every base weight (the model uses
 * them until lf_trainable_free restores the originals). */
lf_trainable *lf_trainable_new(lf_model *m, lf_gate *gate, int what);
void lf_trainable_free(lf_trainable *tr);
/* LF_TRAIN_BASE: hand the trained float32 weights to the model (they stay
 * in use after lf_trainable_free instead of the originals). */
int lf_trainable_keep_weights(lf_trainable *tr);
int lf_trainable_count(const lf_trainable *tr);
lf_param *lf_trainable_param(lf_trainable *tr, int i);
void lf_trainable_zero_grad(lf_trainable *tr);
/* Convert the frozen weights once into the panels their products read
 * (lf_prepack_new: AMX tiles, bfloat16 pairs, or on the AVX-512 and AVX2
 * paths their own values in the float32 micro-kernel's layout), for a caller
 * that runs many sequences (each would convert them again): as many as
 * fit in half of the memory available beyond
 * 4 GiB (lf_train_prepack: -1 that, the default; 0 none; 1 all); the
 * others are converted product by product as before.  Results are the
 * same bit for bit.  lf_trainable_panel_bytes: the bytes they take. */
void lf_trainable_prepack(lf_trainable *tr);
size_t lf_trainable_panel_bytes(const lf_trainable *tr);
extern int lf_train_prepack;

/* The fusion mode used during training (as lf_session_set_*). */
typedef struct {
    int mode;                       /* LF_FUSE_BASE, LF_FUSE_STATIC, LF_FUSE_GATE */
    float static_w[LF_MAX_ADAPTERS];
    const lf_gate *gate;
    float temperature;
    float dropout;                  /* LoRA dropout on the adapters' inputs (0 = off) */
    uint64_t seed;                  /* dropout masks: a function of (seed, layer, projection, adapter) */
} lf_train_mode;

/* Forward and backward over one sequence ids [T] with labels [T] (-100 =
 * ignored; position t predicts labels[t + 1]).  Accumulates into the
 * gradients of tr the gradient of scale * (sum of the cross-entropies), and
 * returns that sum (unscaled) in *loss_sum and the number of label tokens in
 * *n_tokens.  tr may be NULL (loss only).  fusion_weights: NULL or [L, T, k]. */
int lf_train_sequence(lf_model *m, lf_trainable *tr, const lf_train_mode *mode, const int32_t *ids,
                      const int32_t *labels, int T, float scale, double *loss_sum, int *n_tokens,
                      float *fusion_weights);

/* Sequences of at least this many tokens take the attention through the
 * blocked GEMM (per head: S = Q K^T, P V, and the four backward products);
 * shorter ones the row-by-row loops.  Tests lower it to check one path
 * against the other. */
extern int lf_attn_gemm_min_t;
/* The GEMM attention takes this many queries at a time, each block over
 * the keys it can see only (0: all queries at once; tests lower it). */
extern int lf_attn_query_block;

/* A training step keeps every layer's activations (no recomputation) when
 * they fit in a quarter of the available memory and 4 GiB; else it
 * checkpoints.  -1: that choice (default); 1: always checkpoint; 0: never. */
extern int lf_train_checkpoint;

/* Tests: a trainable's kept step buffers are filled with NaN before each
 * step (a value a step reads before writing it would show in its loss and
 * gradients); 0, the default: they are left as the last step left them. */
extern int lf_train_poison;

#endif
