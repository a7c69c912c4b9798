/* model.h: the Llama model, its attached LoRA adapters and fusion gates
 * (internal layout shared by model/, fusion/ and engine/). */
#ifndef LF_MODEL_H
#define LF_MODEL_H

#include "loraflow.h"
#include "../io/tensorset.h"
#include "../tensor/kernels.h"

#define LF_MAX_ADAPTERS 16

/* The seven adapted projections of a decoder layer, in METHOD.md order. */
enum { LF_PROJ_Q, LF_PROJ_K, LF_PROJ_V, LF_PROJ_O, LF_PROJ_GATE, LF_PROJ_UP, LF_PROJ_DOWN, LF_NPROJ };
/* "self_attn.q_proj", ..., "mlp.down_proj" */
extern const char *const lf_proj_path[LF_NPROJ];
/* "q_proj", ..., "down_proj" */
extern const char *const lf_proj_short[LF_NPROJ];

/* The k adapters of one projection, stacked (METHOD.md section 2):
 * A_cat [R, in] and B_cat [out, R] with R = sum of the ranks of the adapters
 * that target this projection.  Adapter i owns columns off[i] .. off[i]+rank[i]
 * of B_cat and the same rows of A_cat; rank[i] = 0 when it does not target it. */
typedef struct {
    int R;
    lf_mat A;        /* [R, in]  */
    lf_mat B;        /* [out, R] */
    int off[LF_MAX_ADAPTERS];
    int rank[LF_MAX_ADAPTERS];
    float scale[LF_MAX_ADAPTERS]; /* c_i = alpha_i / r_i (or / sqrt(r_i)) */
} lf_lora_stack;

typedef struct {
    float *attn_norm;  /* [H] input_layernorm (float32 copy) */
    float *ffn_norm;   /* [H] post_attention_layernorm */
    lf_mat W[LF_NPROJ];
    lf_lora_stack lora[LF_NPROJ];
} lf_layer;

/* One PEFT LoRA adapter as read from its folder.  A[l * LF_NPROJ + p] and
 * B[...] point into ts (NULL where the adapter does not target that module);
 * scale[...] is c_i of that module. */
typedef struct {
    char *name;
    char *dir;
    int r;
    float alpha;
    int use_rslora;
    lf_tensorset ts;
    const lf_tensor **A, **B;
    float *scale;
} lf_adapter;

struct lf_model {
    lf_config cfg;
    char *dir;
    lf_tensorset ts;       /* memory-mapped weights */
    lf_mat embed;          /* [V, H] */
    lf_mat lm_head;        /* [V, H] (= embed when tied) */
    float *final_norm;     /* [H] */
    lf_layer *layers;      /* [L] */
    lf_adapter adapters[LF_MAX_ADAPTERS];
    int n_adapters;
    int adapter_quant;     /* LF_QUANT_*: how lf_fusion_restack stores the stacks */
    void **owned;          /* buffers the model frees (weights made by training) */
    int n_owned;
};

struct lf_gate {
    int k, L, H;
    float *W;            /* [L, k, H]: lora_fusion_gate.weight of each layer */
    float *b;            /* [L, k]: weight_bias of each layer */
    float temperature;   /* stored in the file, or 0 */
};

/* Fusion mode of a session. */
enum { LF_FUSE_BASE, LF_FUSE_STATIC, LF_FUSE_GATE };

struct lf_session {
    lf_model *m;
    int max_ctx, pos;
    float *kcache, *vcache;   /* [L, max_ctx, n_kv_heads * head_dim], keys after RoPE */
    int mode;
    float static_w[LF_MAX_ADAPTERS];
    const lf_gate *gate;
    float temperature;
    float *rope_inv_freq;     /* [head_dim / 2] */
    int trace_on;
    float *trace;             /* [trace_n][L][k] */
    int trace_n, trace_cap;
};

#endif
