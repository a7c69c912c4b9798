/* backward.c: training forward/backward pass of the Llama model with k
 * stacked LoRA adapters fused by fixed weights or by LoRA-Flow gates.
 *
 * Shapes: T tokens of one sequence, H hidden, I intermediate, L layers,
 * k adapters, qd = n_heads * hd, kvd = n_kv_heads * hd, R = summed rank of
 * a projection's stacked adapters.  Every step comes as a forward/backward
 * pair; the names follow METHOD.md (x, s, w, T, A, B, r, c).
 *
 * Checkpointing: the forward pass keeps x_l [T, H] entering every layer
 * (plus the final output); the backward pass recomputes one layer's
 * internals from x_l (layer_forward with a cache) and backpropagates
 * through it (layer_backward).  Dropout masks are a pure function of
 * (seed, layer, projection, adapter, position), so the recomputation sees
 * the same masks. */
#include "train.h"
#include "../core/util.h"
#include "../fusion/fusion.h"
#include "../tensor/kernels.h"
#include "../tensor/train_kernels.h"
#include "../tensor/simd.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ============================ trainable sets ============================ */

typedef struct step_bufs step_bufs;
static void step_bufs_free(step_bufs *b, const lf_model *m);

struct lf_trainable {
    lf_model *m;
    lf_gate *gate;
    int what;
    lf_param *p;
    int n, cap;
    /* gradient locations, NULL where not trained */
    float *d_gate_W, *d_gate_b;               /* [L, k, H], [L, k] */
    float **d_lora_A, **d_lora_B;             /* [L * NPROJ]: [R, in], [out, R] */
    float **d_W;                              /* [L * NPROJ]: [out, in] */
    float **d_attn_norm, **d_ffn_norm;        /* [L]: [H] */
    float *d_embed, *d_lm_head, *d_final_norm;
    /* LF_TRAIN_BASE: the original weights, restored at free */
    lf_mat *saved;                            /* [L * NPROJ + 2] */
    float **owned;
    int n_owned;
    /* weights held as AMX tiles, bfloat16 pairs or their own panels while training (lf_prepack_new) */
    struct {
        lf_mat *W;
        int wtrans;
        lf_amx_panels *p;
    } *panels;
    int n_panels;
    size_t panel_bytes;
    step_bufs *bufs; /* kept from one step to the next */
};

/* Register a parameter; its gradient is grad when given (a view into a
 * shared block), else a new zeroed buffer returned in *grad_out. */
static int add_param(lf_trainable *tr, const char *name, float *w, size_t n, int ndim, int64_t d0, int64_t d1,
                     int decay, float *grad, float **grad_out) {
    if (tr->n == tr->cap) {
        int nc = tr->cap ? tr->cap * 2 : 64;
        lf_param *np = lf_realloc(tr->p, (size_t)nc * sizeof *np, "parameter table");
        if (!np) return -1;
        tr->p = np;
        tr->cap = nc;
    }
    float *g = grad ? grad : lf_calloc(n, sizeof(float), name);
    if (!g) return -1;
    lf_param *p = &tr->p[tr->n++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->w = w;
    p->g = g;
    p->n = n;
    p->ndim = ndim;
    p->shape[0] = d0;
    p->shape[1] = d1;
    p->decay = decay;
    p->own_grad = grad == NULL;
    if (grad_out) *grad_out = g;
    return 0;
}

/* Replace W by an owned float32 copy (LF_TRAIN_BASE). */
static float *own_f32(lf_trainable *tr, lf_mat *W) {
    size_t n = (size_t)W->rows * W->cols;
    float *c = lf_malloc(n * sizeof(float), "trainable weights");
    if (!c) return NULL;
    lf_mat_rows_f32(c, W->cols, W, 0, W->rows, 0, W->cols); /* any layout, row-major copy */
    float **no = lf_realloc(tr->owned, (size_t)(tr->n_owned + 1) * sizeof *no, "weight table");
    if (!no) { free(c); return NULL; }
    tr->owned = no;
    tr->owned[tr->n_owned++] = c;
    W->dtype = LF_F32;
    W->data = c;
    W->colblock = 0;
    return c;
}

/* Convert a stack matrix to float32 in place (the model keeps owning it;
 * 8-bit stacks, --quantize-adapters q8, train from their stored values). */
static float *stack_f32(lf_mat *M) {
    if (M->dtype == LF_F32) return (float *)M->data;
    size_t n = (size_t)M->rows * M->cols;
    float *c = lf_malloc(n * sizeof(float), "stacked adapters");
    if (!c) return NULL;
    for (int r = 0; r < M->rows; r++) lf_mat_row_f32(c + (size_t)r * M->cols, M, r);
    free((void *)M->data);
    M->data = c;
    M->dtype = LF_F32;
    return c;
}

static int setup_base(lf_trainable *tr) {
    lf_model *m = tr->m;
    const lf_config *c = &m->cfg;
    const int L = c->n_layers, H = c->hidden_size;
    char name[192];
    tr->saved = lf_calloc((size_t)L * LF_NPROJ + 2, sizeof *tr->saved, "weight table");
    tr->d_W = lf_calloc((size_t)L * LF_NPROJ, sizeof *tr->d_W, "gradient table");
    tr->d_attn_norm = lf_calloc((size_t)L, sizeof *tr->d_attn_norm, "gradient table");
    tr->d_ffn_norm = lf_calloc((size_t)L, sizeof *tr->d_ffn_norm, "gradient table");
    if (!tr->saved || !tr->d_W || !tr->d_attn_norm || !tr->d_ffn_norm) return -1;
    const int tied = m->lm_head.data == m->embed.data;
    tr->saved[L * LF_NPROJ] = m->embed;
    tr->saved[L * LF_NPROJ + 1] = m->lm_head;
    float *e = own_f32(tr, &m->embed);
    if (!e) return -1;
    if (add_param(tr, "model.embed_tokens.weight", e, (size_t)c->vocab_size * H, 2, c->vocab_size, H, 1, NULL, &tr->d_embed))
        return -1;
    if (tied) {
        m->lm_head = m->embed;
        tr->d_lm_head = tr->d_embed;
    } else {
        float *lm = own_f32(tr, &m->lm_head);
        if (!lm || add_param(tr, "lm_head.weight", lm, (size_t)c->vocab_size * H, 2, c->vocab_size, H, 1, NULL, &tr->d_lm_head))
            return -1;
    }
    if (add_param(tr, "model.norm.weight", m->final_norm, (size_t)H, 1, H, 0, 0, NULL, &tr->d_final_norm)) return -1;
    for (int l = 0; l < L; l++) {
        lf_layer *ly = &m->layers[l];
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        if (add_param(tr, name, ly->attn_norm, (size_t)H, 1, H, 0, 0, NULL, &tr->d_attn_norm[l])) return -1;
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
        if (add_param(tr, name, ly->ffn_norm, (size_t)H, 1, H, 0, 0, NULL, &tr->d_ffn_norm[l])) return -1;
        for (int p = 0; p < LF_NPROJ; p++) {
            tr->saved[l * LF_NPROJ + p] = ly->W[p];
            float *w = own_f32(tr, &ly->W[p]);
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, lf_proj_path[p]);
            if (!w || add_param(tr, name, w, (size_t)ly->W[p].rows * ly->W[p].cols, 2, ly->W[p].rows, ly->W[p].cols, 1, NULL,
                                &tr->d_W[l * LF_NPROJ + p]))
                return -1;
        }
    }
    return 0;
}

static int setup_lora(lf_trainable *tr) {
    lf_model *m = tr->m;
    const int L = m->cfg.n_layers;
    char name[192];
    tr->d_lora_A = lf_calloc((size_t)L * LF_NPROJ, sizeof *tr->d_lora_A, "gradient table");
    tr->d_lora_B = lf_calloc((size_t)L * LF_NPROJ, sizeof *tr->d_lora_B, "gradient table");
    if (!tr->d_lora_A || !tr->d_lora_B) return -1;
    for (int l = 0; l < L; l++) {
        for (int p = 0; p < LF_NPROJ; p++) {
            lf_lora_stack *st = &m->layers[l].lora[p];
            if (!st->R) continue;
            float *A = stack_f32(&st->A), *B = stack_f32(&st->B);
            if (!A || !B) return -1;
            snprintf(name, sizeof name, "layers.%d.%s.lora_A", l, lf_proj_path[p]);
            if (add_param(tr, name, A, (size_t)st->A.rows * st->A.cols, 2, st->A.rows, st->A.cols, 1, NULL,
                          &tr->d_lora_A[l * LF_NPROJ + p]))
                return -1;
            snprintf(name, sizeof name, "layers.%d.%s.lora_B", l, lf_proj_path[p]);
            if (add_param(tr, name, B, (size_t)st->B.rows * st->B.cols, 2, st->B.rows, st->B.cols, 1, NULL,
                          &tr->d_lora_B[l * LF_NPROJ + p]))
                return -1;
        }
    }
    return 0;
}

static int setup_gate(lf_trainable *tr) {
    lf_gate *g = tr->gate;
    char name[192];
    /* one parameter per layer and tensor, under the gate's own names */
    float *dW = lf_calloc((size_t)g->L * g->k * g->H, sizeof(float), "gate gradient");
    float *db = lf_calloc((size_t)g->L * g->k, sizeof(float), "gate gradient");
    if (!dW || !db) { free(dW); free(db); return -1; }
    tr->d_gate_W = dW;
    tr->d_gate_b = db;
    for (int l = 0; l < g->L; l++) {
        snprintf(name, sizeof name, "encoder.layers.%d.lora_fusion_gate.weight", l);
        if (add_param(tr, name, g->W + (size_t)l * g->k * g->H, (size_t)g->k * g->H, 2, g->k, g->H, 1,
                      dW + (size_t)l * g->k * g->H, NULL))
            return -1;
        snprintf(name, sizeof name, "encoder.layers.%d.weight_bias", l);
        if (add_param(tr, name, g->b + (size_t)l * g->k, (size_t)g->k, 2, 1, g->k, 1, db + (size_t)l * g->k, NULL))
            return -1;
    }
    return 0;
}

int lf_train_prepack = -1;

/* Convert the frozen weights into AMX tiles once (or, for the bfloat16
 * products on CPUs without AMX, into the bfloat16 pairs their micro-kernel
 * reads; for float32 products on the AVX-512 and AVX2 paths, into the
 * micro-kernel's panels in their own dtype), for every product of every
 * step to read instead of converting them each time (training multiplies
 * by each weight twice per step: forward and input gradient).  4 bytes per
 * weight and orientation (pairs and F16/BF16 panels: 2); by default as
 * many as fit
 * in half of the memory available beyond 4 GiB (what the activations may
 * take); a product whose weights were not converted converts its own. */
/* Both orientations of W, as far as the budget goes; 0 when memory ran out. */
static int prepack_mat(lf_trainable *tr, lf_mat *W, size_t *budget) {
    for (int wt = 0; wt < 2; wt++) {
        const size_t b = lf_prepack_bytes(W, wt);
        if (!b || b > *budget || W->panels[wt]) continue;
        lf_amx_panels *pp = lf_prepack_new(W, wt);
        if (!pp) return 0;
        W->panels[wt] = pp;
        tr->panels[tr->n_panels].W = W;
        tr->panels[tr->n_panels].wtrans = wt;
        tr->panels[tr->n_panels++].p = pp;
        tr->panel_bytes += b;
        *budget -= b;
    }
    return 1;
}

void lf_trainable_prepack(lf_trainable *tr) {
    lf_model *m = tr->m;
    const int L = m->cfg.n_layers;
    if (lf_train_prepack == 0 || tr->panels) return;
    const size_t avail = lf_mem_available(), reserve = 4ull << 30;
    size_t budget = lf_train_prepack > 0 ? SIZE_MAX : avail > reserve ? (avail - reserve) / 2 : 0;
    tr->panels = calloc((size_t)(L * LF_NPROJ * 3 + 1) * 2, sizeof *tr->panels);
    if (!tr->panels) return;
    const int base = !(tr->what & LF_TRAIN_BASE), lora = !(tr->what & LF_TRAIN_LORA); /* frozen */
    for (int l = 0; l < L; l++)
        for (int p = 0; p < LF_NPROJ; p++) {
            lf_layer *ly = &m->layers[l];
            /* out of memory: the products convert as they go */
            if ((base && !prepack_mat(tr, &ly->W[p], &budget)) ||
                (lora && (!prepack_mat(tr, &ly->lora[p].A, &budget) || !prepack_mat(tr, &ly->lora[p].B, &budget))))
                return;
        }
    if (base) prepack_mat(tr, &m->lm_head, &budget);
}

size_t lf_trainable_panel_bytes(const lf_trainable *tr) { return tr->panel_bytes; }

lf_trainable *lf_trainable_new(lf_model *m, lf_gate *gate, int what) {
    lf_trainable *tr = lf_calloc(1, sizeof *tr, "trainer");
    if (!tr) return NULL;
    tr->m = m;
    tr->gate = gate;
    tr->what = what;
    if ((what & LF_TRAIN_GATE) && !gate) {
        lf_set_error("training the gate needs a gate");
        goto fail;
    }
    if ((what & LF_TRAIN_GATE) && setup_gate(tr)) goto fail;
    if ((what & LF_TRAIN_LORA) && setup_lora(tr)) goto fail;
    if ((what & LF_TRAIN_BASE) && setup_base(tr)) goto fail;
    if (tr->n == 0) {
        lf_set_error("nothing to train");
        goto fail;
    }
    return tr;
fail:
    lf_trainable_free(tr);
    return NULL;
}

void lf_trainable_free(lf_trainable *tr) {
    if (!tr) return;
    lf_model *m = tr->m;
    const int L = m->cfg.n_layers;
    for (int i = 0; i < tr->n_panels; i++) {
        if (tr->panels[i].W->panels[tr->panels[i].wtrans] == tr->panels[i].p)
            tr->panels[i].W->panels[tr->panels[i].wtrans] = NULL;
        lf_amx_panels_free(tr->panels[i].p);
    }
    free(tr->panels);
    if (tr->bufs) step_bufs_free(tr->bufs, m);
    free(tr->bufs);
    if (tr->saved) { /* restore the original (memory-mapped) weights */
        for (int l = 0; l < L; l++)
            for (int p = 0; p < LF_NPROJ; p++) m->layers[l].W[p] = tr->saved[l * LF_NPROJ + p];
        m->embed = tr->saved[L * LF_NPROJ];
        m->lm_head = tr->saved[L * LF_NPROJ + 1];
    }
    for (int i = 0; i < tr->n; i++)
        if (tr->p[i].own_grad) free(tr->p[i].g);
    free(tr->d_gate_W);
    free(tr->d_gate_b);
    free(tr->p);
    free(tr->d_lora_A);
    free(tr->d_lora_B);
    free(tr->d_W);
    free(tr->d_attn_norm);
    free(tr->d_ffn_norm);
    free(tr->saved);
    for (int i = 0; i < tr->n_owned; i++) free(tr->owned[i]);
    free(tr->owned);
    free(tr);
}

int lf_trainable_keep_weights(lf_trainable *tr) {
    lf_model *m = tr->m;
    if (!tr->n_owned) return 0;
    void **no = lf_realloc(m->owned, (size_t)(m->n_owned + tr->n_owned) * sizeof *no, "weight table");
    if (!no) return -1;
    m->owned = no;
    for (int i = 0; i < tr->n_owned; i++) m->owned[m->n_owned++] = tr->owned[i];
    free(tr->owned);
    tr->owned = NULL;
    tr->n_owned = 0;
    free(tr->saved); /* nothing to restore */
    tr->saved = NULL;
    return 0;
}

int lf_trainable_count(const lf_trainable *tr) { return tr->n; }
lf_param *lf_trainable_param(lf_trainable *tr, int i) { return i >= 0 && i < tr->n ? &tr->p[i] : NULL; }

void lf_trainable_zero_grad(lf_trainable *tr) {
    for (int i = 0; i < tr->n; i++) memset(tr->p[i].g, 0, tr->p[i].n * sizeof(float));
}

/* ============================ dropout ============================ */

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* out = u * mask / (1 - p), the mask a pure function of key and index. */
static void dropout(float *out, const float *u, size_t n, float p, uint64_t key) {
    const float keep = 1.0f / (1.0f - p);
    const uint64_t thresh = (uint64_t)((double)p * 18446744073709551615.0);
    for (size_t i = 0; i < n; i++) out[i] = mix64(key + 0x9E3779B97F4A7C15ULL * (i + 1)) < thresh ? 0.0f : u[i] * keep;
}

static uint64_t drop_key(const lf_train_mode *md, int l, int p, int i) {
    return mix64(md->seed ^ mix64(((uint64_t)l << 32) ^ ((uint64_t)p << 16) ^ (uint64_t)i));
}

/* ============================ fused projection ============================ */

/* Stack matrix rows [off, off + r) of A as their own matrix. */
static lf_mat rows_of(const lf_mat *A, int off, int r) {
    lf_mat v = *A;
    v.data = (const uint8_t *)A->data + (size_t)off * A->cols * lf_dtype_size(A->dtype);
    v.rows = r;
    return v;
}

typedef struct {
    float *tmp;    /* [T, max(in, r)] */
    float *z2;     /* [T, R] */
} proj_scratch;

/* y = W0 u + sum_i w_i c_i B_i A_i drop_i(u); z [T, R] receives A_i drop_i(u)
 * (unscaled) for the backward pass.  w: [T, k] or NULL (base only). */
static void proj_forward(float *y, float *z, const float *u, const lf_mat *W, const lf_lora_stack *st, const float *w,
                         int k, int T, const lf_train_mode *md, int l, int p, proj_scratch *s) {
    if (!w || !st->R) {
        lf_matmul(y, u, W, T, 0);
        return;
    }
    const int R = st->R, in = W->cols;
    if (md->dropout > 0) {
        lf_matmul(y, u, W, T, 0);
        /* each adapter sees its own mask: one product per adapter */
        for (int i = 0; i < k; i++) {
            const int r = st->rank[i];
            if (!r) continue;
            dropout(s->tmp, u, (size_t)T * in, md->dropout, drop_key(md, l, p, i));
            lf_mat Ai = rows_of(&st->A, st->off[i], r);
            lf_matmul(s->z2, s->tmp, &Ai, T, 0); /* [T, r] */
            for (int t = 0; t < T; t++)
                memcpy(z + (size_t)t * R + st->off[i], s->z2 + (size_t)t * r, (size_t)r * sizeof(float));
        }
    } else { /* y = u W^T and, all adapters at once, z = u A_cat^T [T, R]: u packed once */
        const lf_product pr[2] = {{y, W, 0, 0}, {z, &st->A, 0, 0}};
        lf_matmul_many(pr, 2, u, T);
    }
    for (int t = 0; t < T; t++)
        for (int i = 0; i < k; i++) {
            const float f = w[(size_t)t * k + i] * st->scale[i];
            for (int j = 0; j < st->rank[i]; j++) s->z2[(size_t)t * R + st->off[i] + j] = z[(size_t)t * R + st->off[i] + j] * f;
        }
    lf_matmul(y, s->z2, &st->B, T, 1);
}

/* Backward of proj_forward: du = d/du (acc: du += d/du), dw [T, k] +=
 * d/dw, and the parameter gradients of the trained sets.  g: scratch
 * [T, R]. */
static void proj_backward(float *du, int acc, float *dw, const float *dy, const float *u, const float *z, const lf_mat *W,
                          const lf_lora_stack *st, const float *w, int k, int T, const lf_train_mode *md, int l, int p,
                          float *dW, float *dA, float *dB, proj_scratch *s, float *g) {
    const int in = W->cols, out = W->rows;
    if (dW) lf_matmul_wgrad(dW, dy, u, T, out, in);
    if (!w || !st->R) {
        lf_matmul_tn(du, dy, W, T, acc);
        return;
    }
    const int R = st->R;
    /* du (+)= dy W and g = B_cat^T dy [T, R]: dy packed once */
    const lf_product pr[2] = {{du, W, 1, acc}, {g, &st->B, 1, 0}};
    lf_matmul_many(pr, 2, dy, T);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < k; i++) {
            if (!st->rank[i]) continue;
            double sum = 0;
            for (int j = 0; j < st->rank[i]; j++) sum += (double)g[(size_t)t * R + st->off[i] + j] * z[(size_t)t * R + st->off[i] + j];
            dw[(size_t)t * k + i] += (float)(st->scale[i] * sum);
        }
    if (dB) { /* dB += dy^T (w c z) */
        for (int t = 0; t < T; t++)
            for (int i = 0; i < k; i++) {
                const float f = w[(size_t)t * k + i] * st->scale[i];
                for (int j = 0; j < st->rank[i]; j++) s->z2[(size_t)t * R + st->off[i] + j] = z[(size_t)t * R + st->off[i] + j] * f;
            }
        lf_matmul_wgrad(dB, dy, s->z2, T, out, R);
    }
    /* gs = g scaled by w c: the gradient of A_i drop_i(u) */
    for (int t = 0; t < T; t++)
        for (int i = 0; i < k; i++) {
            const float f = w[(size_t)t * k + i] * st->scale[i];
            for (int j = 0; j < st->rank[i]; j++) g[(size_t)t * R + st->off[i] + j] *= f;
        }
    if (md->dropout <= 0) { /* all adapters at once */
        if (dA) lf_matmul_wgrad(dA, g, u, T, R, in);
        lf_matmul_tn(du, g, &st->A, T, 1);
        return;
    }
    for (int i = 0; i < k; i++) {
        const int r = st->rank[i];
        if (!r) continue;
        for (int t = 0; t < T; t++) memcpy(s->z2 + (size_t)t * r, g + (size_t)t * R + st->off[i], (size_t)r * sizeof(float));
        lf_mat Ai = rows_of(&st->A, st->off[i], r);
        if (dA) {
            dropout(s->tmp, u, (size_t)T * in, md->dropout, drop_key(md, l, p, i));
            lf_matmul_wgrad(dA + (size_t)st->off[i] * in, s->z2, s->tmp, T, r, in);
        }
        /* du += drop_i(A_i^T gs_i): the same mask applied to the gradient */
        lf_matmul_tn(s->tmp, s->z2, &Ai, T, 0);
        const float *masked = s->tmp;
        const float keep = 1.0f / (1.0f - md->dropout);
        const uint64_t key = drop_key(md, l, p, i);
        const uint64_t thresh = (uint64_t)((double)md->dropout * 18446744073709551615.0);
        for (size_t q = 0; q < (size_t)T * in; q++)
            du[q] += mix64(key + 0x9E3779B97F4A7C15ULL * (q + 1)) < thresh ? 0.0f : masked[q] * keep;
    }
}

/* ============================ gate ============================ */

/* w [T, k] = softmax(s / Tm) + b with s = x W_gate^T; p [T, k] keeps the softmax. */
static void gate_forward(float *w, float *p, float *s_out, const lf_gate *g, int l, const float *x, int T, float Tm) {
    const int k = g->k;
    for (int t = 0; t < T; t++) {
        lf_gate_weights(g, l, x + (size_t)t * g->H, Tm, w + (size_t)t * k, s_out ? s_out + (size_t)t * k : NULL);
        for (int i = 0; i < k; i++) p[(size_t)t * k + i] = w[(size_t)t * k + i] - g->b[(size_t)l * k + i];
    }
}

/* dx += ds W_gate, dW_gate += ds^T x, db += sum_t dw,  ds = softmax' (dw) / Tm. */
static void gate_backward(float *dx, float *dWg, float *dbg, const float *dw, const float *p, const lf_gate *g, int l,
                          const float *x, int T, float Tm) {
    const int k = g->k, H = g->H;
    for (int t = 0; t < T; t++) {
        const float *pt = p + (size_t)t * k, *dwt = dw + (size_t)t * k;
        double dot = 0;
        for (int i = 0; i < k; i++) dot += (double)pt[i] * dwt[i];
        for (int i = 0; i < k; i++) {
            const float ds = (float)(pt[i] * (dwt[i] - dot) / Tm);
            if (dbg) dbg[(size_t)l * k + i] += dwt[i];
            const float *row = g->W + ((size_t)l * k + i) * H;
            float *dxt = dx + (size_t)t * H;
            const float *xt = x + (size_t)t * H;
            for (int j = 0; j < H; j++) dxt[j] += ds * row[j];
            if (dWg) {
                float *drow = dWg + ((size_t)l * k + i) * H;
                for (int j = 0; j < H; j++) drow[j] += ds * xt[j];
            }
        }
    }
}

/* ============================ rope and attention ============================ */

/* Rotate each head vector by +angle (dir = 1) or -angle (dir = -1, the
 * backward).  rope: [T][hd], position t's cosines in its first half and
 * sines in its second (rope_table). */
static void rope_apply(float *v, int T, int n_heads, int hd, const float *rope, int dir) {
    const int half = hd / 2;
    for (int t = 0; t < T; t++) {
        const float *c = rope + (size_t)t * hd, *sn = c + half;
        for (int h = 0; h < n_heads; h++) {
            float *x = v + ((size_t)t * n_heads + h) * hd;
            for (int j = 0; j < half; j++) {
                const float x0 = x[j], x1 = x[j + half], s = dir * sn[j];
                x[j] = x0 * c[j] - x1 * s;
                x[j + half] = x1 * c[j] + x0 * s;
            }
        }
    }
}

/* Short sequences: the attention one query row at a time, on the kernel
 * threads (chunks: a query head's block of 8 rows forward, a key/value
 * head with its group backward). */
typedef struct {
    float *out, *dq, *dk, *dv;
    const float *q, *k, *v, *dout;
    const lf_config *c;
    int T;
} attn_rows_job;

#define ATTN_ROWS 8

static void attn_forward_chunk(void *ctx, int ch) {
    const attn_rows_job *b = ctx;
    const lf_config *c = b->c;
    const int hd = c->head_dim, nh = c->n_heads, kvd = c->n_kv_heads * hd, group = nh / c->n_kv_heads;
    const int nblk = (b->T + ATTN_ROWS - 1) / ATTN_ROWS, h = ch / nblk, t0 = ch % nblk * ATTN_ROWS;
    const int t1 = t0 + ATTN_ROWS < b->T ? t0 + ATTN_ROWS : b->T, kh = h / group;
    const float scale = 1.0f / sqrtf((float)hd);
    float *sc = malloc((size_t)t1 * sizeof(float));
    if (!sc) abort();
    for (int t = t0; t < t1; t++) {
        const float *qt = b->q + (size_t)t * nh * hd + (size_t)h * hd;
        for (int j = 0; j <= t; j++) sc[j] = lf_dot_f32(qt, b->k + (size_t)j * kvd + (size_t)kh * hd, hd) * scale;
        lf_softmax(sc, t + 1);
        float *o = b->out + (size_t)t * nh * hd + (size_t)h * hd;
        memset(o, 0, (size_t)hd * sizeof(float));
        for (int j = 0; j <= t; j++) lf_axpy_f32(o, sc[j], b->v + (size_t)j * kvd + (size_t)kh * hd, hd);
    }
    free(sc);
}

/* out [T, qd] = causal softmax(q k^T / sqrt(hd)) v, per query head. */
static void attn_forward(float *out, const float *q, const float *k, const float *v, const lf_config *c, int T) {
    attn_rows_job b = {.out = out, .q = q, .k = k, .v = v, .c = c, .T = T};
    lf_parallel_chunks(attn_forward_chunk, &b, c->n_heads * ((T + ATTN_ROWS - 1) / ATTN_ROWS), lf_kernels_threads());
}

/* Key/value head kh of attn_backward. */
static void attn_backward_chunk(void *ctx, int kh) {
    const attn_rows_job *b = ctx;
    const lf_config *c = b->c;
    const int hd = c->head_dim, nh = c->n_heads, kvd = c->n_kv_heads * hd, group = nh / c->n_kv_heads, T = b->T;
    const float scale = 1.0f / sqrtf((float)hd);
    float *pr = malloc((size_t)T * sizeof(float)), *dp = malloc((size_t)T * sizeof(float));
    if (!pr || !dp) abort();
    for (int h = kh * group; h < (kh + 1) * group; h++) {
        for (int t = 0; t < T; t++) {
            const float *qt = b->q + (size_t)t * nh * hd + (size_t)h * hd;
            const float *dot_ = b->dout + (size_t)t * nh * hd + (size_t)h * hd;
            for (int j = 0; j <= t; j++) pr[j] = lf_dot_f32(qt, b->k + (size_t)j * kvd + (size_t)kh * hd, hd) * scale;
            lf_softmax(pr, t + 1);
            double sum = 0;
            for (int j = 0; j <= t; j++) {
                const float d = lf_dot_f32(dot_, b->v + (size_t)j * kvd + (size_t)kh * hd, hd);
                dp[j] = d;
                sum += (double)pr[j] * d;
            }
            float *dqt = b->dq + (size_t)t * nh * hd + (size_t)h * hd;
            for (int j = 0; j <= t; j++) {
                const float ds = pr[j] * (dp[j] - (float)sum) * scale;
                const size_t off = (size_t)j * kvd + (size_t)kh * hd;
                lf_axpy_f32(dqt, ds, b->k + off, hd);
                lf_axpy_f32(b->dk + off, ds, qt, hd);
                lf_axpy_f32(b->dv + off, pr[j], dot_, hd);
            }
        }
    }
    free(pr);
    free(dp);
}

/* Backward of attn_forward: dq, dk, dv (+)= from dout.  The probabilities are
 * recomputed row by row; a chunk owns one key/value head (and its group of
 * query heads), so no two threads write the same dk/dv. */
static void attn_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                          const float *v, const lf_config *c, int T) {
    attn_rows_job b = {.dq = dq, .dk = dk, .dv = dv, .q = q, .k = k, .v = v, .dout = dout, .c = c, .T = T};
    lf_parallel_chunks(attn_backward_chunk, &b, c->n_kv_heads, lf_kernels_threads());
}

/* ---- the same through the blocked GEMM (long sequences) ----
 * Per key/value head: K_h, V_h copied into contiguous [T, hd] matrices;
 * per query head of its group: S = Q_h K_h^T [T, T] (the whole square,
 * the masked half is overwritten: a GEMM at full speed beats a triangle at
 * a tenth of it), P = causal softmax(S / sqrt(hd)), O_h = P V_h. */

int lf_attn_gemm_min_t = 64;

#define LF_MAX_THREADS_ATTN 64 /* scratch sets, one per thread running a head */

typedef struct {
    float *s, *s2, *kc, *vc, *qc, *oc, *dkc, *dvc;
} attn_bufs;

static void attn_bufs_free(attn_bufs *b) {
    free(b->s); free(b->s2); free(b->kc); free(b->vc); free(b->qc); free(b->oc); free(b->dkc); free(b->dvc);
}

static void attn_bufs_alloc(attn_bufs *b, int T, int hd) {
    const size_t sq = (size_t)T * T * sizeof(float), th = (size_t)T * hd * sizeof(float);
    b->s = malloc(sq); b->s2 = malloc(sq);
    b->kc = malloc(th); b->vc = malloc(th); b->qc = malloc(th); b->oc = malloc(th);
    b->dkc = malloc(th); b->dvc = malloc(th);
    if (!b->s || !b->s2 || !b->kc || !b->vc || !b->qc || !b->oc || !b->dkc || !b->dvc) abort();
}

/* column block [T, hd] at offset off of rows of length ld <-> contiguous */
static void gather(float *dst, const float *src, int T, int hd, size_t ld, size_t off) {
    for (int t = 0; t < T; t++) memcpy(dst + (size_t)t * hd, src + (size_t)t * ld + off, (size_t)hd * sizeof(float));
}
static void scatter_add(float *dst, const float *src, int T, int hd, size_t ld, size_t off) {
    for (int t = 0; t < T; t++) lf_axpy_f32(dst + (size_t)t * ld + off, 1.0f, src + (size_t)t * hd, hd);
}

/* Rows r0 .. r0+nb-1 of P = causal softmax(S * scale), in place: s holds
 * them as [nb][n], n = r0 + nb (the keys a query of the block can see). */
/* Rows of a query block, 8 at a time on the kernel threads (the same
 * threads as the products around them: an OpenMP team of its own would
 * spin on the cores the products' threads need, and they on its). */
#define ROW_CHUNK 8
typedef struct {
    float *s, *d; /* [nb][n]: P, and dP for softmax_backward_rows */
    int r0, nb, n;
    float scale;
} rows_job;

static void softmax_rows(void *ctx, int c) {
    const rows_job *b = ctx;
    const int i1 = (c + 1) * ROW_CHUNK < b->nb ? (c + 1) * ROW_CHUNK : b->nb;
    for (int i = c * ROW_CHUNK; i < i1; i++) {
        float *r = b->s + (size_t)i * b->n;
        const int t = b->r0 + i;
        for (int j = 0; j <= t; j++) r[j] *= b->scale;
        lf_softmax(r, t + 1);
        memset(r + t + 1, 0, (size_t)(b->n - 1 - t) * sizeof(float));
    }
}

static void causal_softmax(float *s, int r0, int nb, float scale) {
    rows_job b = {s, NULL, r0, nb, r0 + nb, scale};
    lf_parallel_chunks(softmax_rows, &b, (nb + ROW_CHUNK - 1) / ROW_CHUNK, lf_kernels_threads());
}

/* dS = P * (dP - rowsum(P * dP)) * scale, in place over dP, rows of a
 * query block (the softmax's backward). */
static void softmax_backward_rows(void *ctx, int c) {
    const rows_job *b = ctx;
    const int i1 = (c + 1) * ROW_CHUNK < b->nb ? (c + 1) * ROW_CHUNK : b->nb;
    for (int i = c * ROW_CHUNK; i < i1; i++) {
        const int t = b->r0 + i;
        const float *pr = b->s + (size_t)i * b->n;
        float *d = b->d + (size_t)i * b->n;
        const float sum = lf_dot_f32(pr, d, t + 1);
        for (int j = 0; j <= t; j++) d[j] = pr[j] * (d[j] - sum) * b->scale;
        memset(d + t + 1, 0, (size_t)(b->n - 1 - t) * sizeof(float));
    }
}

/* Query block [r0, r0+nb) of head h: S = Q_b K[0:n]^T (Q read in place
 * from q), then P; s: [nb][n]. */
static void attn_probs(float *s, const float *q, const lf_mat *K, int r0, int nb, size_t qld, size_t qoff,
                       float scale) {
    lf_mat Kn = *K;
    Kn.rows = r0 + nb;
    lf_gemm_ex(s, q + (size_t)r0 * qld + qoff, qld, 1, &Kn, 0, nb, 0);
    causal_softmax(s, r0, nb, scale);
}

/* Queries are taken lf_attn_query_block at a time: block b sees the first
 * (b + 1) * block keys only, so the masked part of S is mostly not
 * computed (5/8 of the square with four blocks). */
int lf_attn_query_block = 128;

/* The first n rows of a contiguous [T, hd] matrix, and rows r0 .. r0+n-1. */
static lf_mat first_rows(const lf_mat *M, int n) {
    lf_mat v = *M;
    v.rows = n;
    return v;
}
static lf_mat row_range(const lf_mat *M, int r0, int n) {
    lf_mat v = *M;
    v.data = (const float *)M->data + (size_t)r0 * M->cols;
    v.rows = n;
    return v;
}

/* One attention call's operands, and its scratch: one set of buffers per
 * thread that may run a key/value head at once (slots taken and given back
 * by the heads). */
typedef struct attn_job attn_job;
struct attn_job {
    float *out, *dq, *dk, *dv;
    const float *dout, *q, *k, *v;
    const lf_config *c;
    void (*run)(const attn_job *j, int kh, attn_bufs *b); /* attn_forward_kv or attn_backward_kv */
    /* the shapes (attn_gemm_run): head size, query heads per key/value
     * head, query block; row lengths of q and of k/v */
    int T, hd, group, qb, nslots;
    size_t qd, kvd;
    float scale;
    attn_bufs *slots;
    _Atomic int *busy;
};

static attn_bufs *slot_take(const attn_job *j) {
    for (;;)
        for (int i = 0; i < j->nslots; i++)
            if (!atomic_exchange_explicit(&j->busy[i], 1, memory_order_acquire)) return &j->slots[i];
}

static void slot_give(const attn_job *j, const attn_bufs *b) {
    atomic_store_explicit(&j->busy[b - j->slots], 0, memory_order_release);
}

/* A contiguous [T, hd] scratch of b as a matrix. */
static lf_mat head_mat(const attn_job *j, float *data) {
    return (lf_mat){.dtype = LF_F32, .data = data, .rows = j->T, .cols = j->hd};
}

/* Key/value head kh's keys and values, contiguous in b->kc and b->vc. */
static void kv_gather(const attn_job *j, int kh, attn_bufs *b) {
    gather(b->kc, j->k, j->T, j->hd, j->kvd, (size_t)kh * j->hd);
    gather(b->vc, j->v, j->T, j->hd, j->kvd, (size_t)kh * j->hd);
}

/* The query heads of key/value head kh, forward. */
static void attn_forward_kv(const attn_job *j, int kh, attn_bufs *b) {
    const int T = j->T, hd = j->hd, group = j->group, qb = j->qb;
    const size_t qd = j->qd;
    const float scale = j->scale;
    const lf_mat K = head_mat(j, b->kc), Vm = head_mat(j, b->vc);
    kv_gather(j, kh, b);
    for (int h = kh * group; h < (kh + 1) * group; h++) {
        for (int r0 = 0; r0 < T; r0 += qb) {
            const int nb = T - r0 < qb ? T - r0 : qb, n = r0 + nb;
            attn_probs(b->s, j->q, &K, r0, nb, qd, (size_t)h * hd, scale);
            const lf_mat Vn = first_rows(&Vm, n);
            lf_gemm_ex(b->oc + (size_t)r0 * hd, b->s, (size_t)n, 1, &Vn, 1, nb, 0); /* O_b = P_b V[0:n] */
        }
        for (int t = 0; t < T; t++)
            memcpy(j->out + (size_t)t * qd + (size_t)h * hd, b->oc + (size_t)t * hd, (size_t)hd * sizeof(float));
    }
}

/* Per query block: dP = dO_b V^T; dS = P * (dP - rowsum(P * dP)) * scale;
 * dQ_b = dS K; dK += dS^T Q_b; dV += P^T dO_b (over the keys the block sees). */
static void attn_backward_kv(const attn_job *j, int kh, attn_bufs *b) {
    const int T = j->T, hd = j->hd, group = j->group, qb = j->qb;
    const size_t qd = j->qd, kvd = j->kvd;
    const float scale = j->scale;
    const lf_mat K = head_mat(j, b->kc), Vm = head_mat(j, b->vc), Q = head_mat(j, b->qc), dO = head_mat(j, b->oc);
    kv_gather(j, kh, b);
    memset(b->dkc, 0, (size_t)T * hd * sizeof(float));
    memset(b->dvc, 0, (size_t)T * hd * sizeof(float));
    for (int h = kh * group; h < (kh + 1) * group; h++) {
        gather(b->qc, j->q, T, hd, qd, (size_t)h * hd);
        gather(b->oc, j->dout, T, hd, qd, (size_t)h * hd);
        for (int r0 = 0; r0 < T; r0 += qb) {
            const int nb = T - r0 < qb ? T - r0 : qb, n = r0 + nb;
            float *P = b->s, *dS = b->s2;
            attn_probs(P, j->q, &K, r0, nb, qd, (size_t)h * hd, scale);
            const lf_mat Vn = first_rows(&Vm, n), Kn = first_rows(&K, n);
            const lf_mat Qb = row_range(&Q, r0, nb), dOb = row_range(&dO, r0, nb);
            lf_gemm_ex(dS, b->oc + (size_t)r0 * hd, (size_t)hd, 1, &Vn, 0, nb, 0); /* dP [nb, n] */
            rows_job rb = {P, dS, r0, nb, n, scale};
            lf_parallel_chunks(softmax_backward_rows, &rb, (nb + ROW_CHUNK - 1) / ROW_CHUNK, lf_kernels_threads());
            lf_gemm_ex(b->dkc, dS, 1, (size_t)n, &Qb, 1, n, 1); /* dK[0:n] += dS^T Q_b */
            lf_gemm_ex(b->dvc, P, 1, (size_t)n, &dOb, 1, n, 1); /* dV[0:n] += P^T dO_b */
            /* dQ_b = dS K[0:n], into a scratch of its own (qc still holds Q) */
            lf_gemm_ex(b->s, dS, (size_t)n, 1, &Kn, 1, nb, 0);
            scatter_add(j->dq + (size_t)r0 * qd, b->s, nb, hd, qd, (size_t)h * hd);
        }
    }
    scatter_add(j->dk, b->dkc, T, hd, kvd, (size_t)kh * hd);
    scatter_add(j->dv, b->dvc, T, hd, kvd, (size_t)kh * hd);
}

static void attn_kv_chunk(void *ctx, int kh) {
    const attn_job *j = ctx;
    attn_bufs *b = slot_take(j);
    j->run(j, kh, b);
    slot_give(j, b);
}

/* With at least as many key/value heads as threads, each thread takes
 * whole heads and runs their products and softmax rows alone (the calls
 * inside run on the calling thread while the pool is busy): the products
 * of a head are small (64-wide), and split between the threads each
 * cost two wake-ups and waits (80-170 GFLOP/s).  Otherwise the heads go
 * one after another, each product on all threads. */
static void attn_gemm_run(attn_job *j) {
    const lf_config *c = j->c;
    const int nkv = c->n_kv_heads, nt = lf_kernels_threads();
    j->hd = c->head_dim;
    j->group = c->n_heads / nkv;
    j->qb = lf_attn_query_block > 0 ? lf_attn_query_block : j->T;
    j->qd = (size_t)c->n_heads * j->hd;
    j->kvd = (size_t)nkv * j->hd;
    j->scale = 1.0f / sqrtf((float)j->hd);
    j->nslots = nt > 1 && nkv >= nt ? nt : 1;
    attn_bufs slots[LF_MAX_THREADS_ATTN];
    _Atomic int busy[LF_MAX_THREADS_ATTN];
    if (j->nslots > LF_MAX_THREADS_ATTN) j->nslots = LF_MAX_THREADS_ATTN;
    for (int i = 0; i < j->nslots; i++) {
        attn_bufs_alloc(&slots[i], j->T, j->hd);
        atomic_init(&busy[i], 0);
    }
    j->slots = slots;
    j->busy = busy;
    if (j->nslots > 1) lf_parallel_chunks(attn_kv_chunk, j, nkv, j->nslots);
    else
        for (int kh = 0; kh < nkv; kh++) attn_kv_chunk(j, kh);
    for (int i = 0; i < j->nslots; i++) attn_bufs_free(&slots[i]);
    j->slots = NULL;
    j->busy = NULL;
}

static void attn_forward_gemm(float *out, const float *q, const float *k, const float *v, const lf_config *c,
                              int T) {
    attn_job j = {.out = out, .q = q, .k = k, .v = v, .c = c, .run = attn_forward_kv, .T = T};
    attn_gemm_run(&j);
}

static void attn_backward_gemm(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                               const float *v, const lf_config *c, int T) {
    attn_job j = {.dq = dq, .dk = dk, .dv = dv, .dout = dout, .q = q, .k = k, .v = v, .c = c,
                  .run = attn_backward_kv, .T = T};
    attn_gemm_run(&j);
}

static void attention_forward(float *out, const float *q, const float *k, const float *v, const lf_config *c,
                              int T) {
    if (T >= lf_attn_gemm_min_t) attn_forward_gemm(out, q, k, v, c, T);
    else attn_forward(out, q, k, v, c, T);
}

static void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                               const float *v, const lf_config *c, int T) {
    if (T >= lf_attn_gemm_min_t) attn_backward_gemm(dq, dk, dv, dout, q, k, v, c, T);
    else attn_backward(dq, dk, dv, dout, q, k, v, c, T);
}

/* ============================ one layer ============================ */

typedef struct {
    float *h1, *q, *k, *v, *att, *xm, *h2, *g, *u, *act;   /* activations */
    float *w, *p;                                          /* fusion weights, gate softmax [T, k] */
    float *z[LF_NPROJ];                                    /* A_i drop_i(u) [T, R] */
    /* gradients */
    float *dh, *dq, *dk, *dv, *datt, *dxm, *dg, *du, *dact, *dw, *gR;
    proj_scratch ps;
} layer_cache;

/* Every buffer of a full layer cache and its size in floats. */
#define CACHE_MAX (25 + LF_NPROJ)
#define ACT_MAX (12 + LF_NPROJ) /* the first ACT_MAX are activations (act_list) */
static size_t max_rank(const lf_model *m) {
    size_t R = 1;
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int p = 0; p < LF_NPROJ; p++)
            if ((size_t)m->layers[l].lora[p].R > R) R = (size_t)m->layers[l].lora[p].R;
    return R;
}

/* (m NULL: the pointers only, sizes 0) */
static int cache_list(layer_cache *c, const lf_model *m, int T, float **ptr[CACHE_MAX], size_t n[CACHE_MAX]) {
    size_t H = 0, I = 0, qd = 0, kvd = 0, k = 0, R = 0, wide = 0;
    const size_t t = m ? (size_t)T : 0;
    if (m) {
        const lf_config *cf = &m->cfg;
        H = (size_t)cf->hidden_size, I = (size_t)cf->intermediate_size;
        qd = (size_t)cf->n_heads * cf->head_dim, kvd = (size_t)cf->n_kv_heads * cf->head_dim;
        k = (size_t)(m->n_adapters ? m->n_adapters : 1), R = max_rank(m);
        wide = I > qd ? I : qd;
        if (H > wide) wide = H;
    }
    int i = 0;
#define BUF(F, N) (ptr[i] = &c->F, n[i++] = t * (N))
    BUF(h1, H); BUF(q, qd); BUF(k, kvd); BUF(v, kvd); BUF(att, qd); BUF(xm, H); BUF(h2, H);
    BUF(g, I); BUF(u, I); BUF(act, I); BUF(w, k); BUF(p, k);
    for (int p = 0; p < LF_NPROJ; p++) BUF(z[p], R);
    BUF(dh, H); BUF(dq, qd); BUF(dk, kvd); BUF(dv, kvd); BUF(datt, qd); BUF(dxm, H);
    BUF(dg, I); BUF(du, I); BUF(dact, I); BUF(dw, k); BUF(gR, R); BUF(ps.tmp, wide); BUF(ps.z2, R);
#undef BUF
    return i;
}

static void cache_free(layer_cache *c) {
    float **ptr[CACHE_MAX];
    size_t n[CACHE_MAX];
    const int nb = cache_list(c, NULL, 0, ptr, n);
    for (int i = 0; i < nb; i++) { free(*ptr[i]); *ptr[i] = NULL; }
}

/* Zero n floats on the kernel threads, 1 MiB a chunk: a step's new
 * buffers are about 1.5 GB (1b, 512 tokens), one thread writing while the
 * other waited. */
#define ZERO_CHUNK (256u << 10)
typedef struct {
    float *p;
    size_t n;
} zero_job;

static void zero_chunk(void *ctx, int c) {
    const zero_job *z = ctx;
    const size_t i0 = (size_t)c * ZERO_CHUNK, m = z->n - i0 < ZERO_CHUNK ? z->n - i0 : ZERO_CHUNK;
    memset(z->p + i0, 0, m * sizeof(float));
}

static void zero_floats(float *p, size_t n) {
    if (n <= ZERO_CHUNK) {
        memset(p, 0, n * sizeof(float));
        return;
    }
    zero_job z = {p, n};
    lf_parallel_chunks(zero_chunk, &z, (int)((n + ZERO_CHUNK - 1) / ZERO_CHUNK), lf_kernels_threads());
}

/* A zeroed buffer of a step: from 2 MiB on in transparent huge pages,
 * zeroed on the kernel threads.  New 4 KiB pages are faulted in at
 * 0.3-0.5 GB/s on the AMD EPYC guest (1 and 2 threads), huge ones at
 * 10-20 GB/s once the kernel has them free; a step's first use of its
 * 1.5 GB (1b, 512 tokens: a `loraflow grad` call, a training run's first
 * step) had paid several seconds for it.  Freed with free(). */
static float *step_calloc(size_t n, const char *what) {
    const size_t bytes = (n ? n : 1) * sizeof(float);
    if (bytes < (2u << 20)) return lf_calloc(n ? n : 1, sizeof(float), what);
    float *p = lf_huge_alloc(bytes);
    if (!p) {
        lf_set_error("out of memory (%s: %zu bytes)", what, bytes);
        return NULL;
    }
    zero_floats(p, n);
    return p;
}

static int cache_alloc(layer_cache *c, const lf_model *m, int T) {
    float **ptr[CACHE_MAX];
    size_t n[CACHE_MAX];
    memset(c, 0, sizeof *c);
    const int nb = cache_list(c, m, T, ptr, n);
    for (int i = 0; i < nb; i++)
        if (!(*ptr[i] = step_calloc(n[i], i < ACT_MAX ? "activations" : "gradients"))) {
            cache_free(c);
            return -1;
        }
    return 0;
}

/* The activation buffers of a layer cache (what a layer's backward step
 * reads from its forward step): the first ACT_MAX of cache_list; the
 * gradient and scratch buffers are the rest. */
static int act_list(layer_cache *c, const lf_model *m, int T, float **ptr[ACT_MAX], size_t n[ACT_MAX]) {
    float **all[CACHE_MAX];
    size_t na[CACHE_MAX];
    cache_list(c, m, T, all, na);
    for (int i = 0; i < ACT_MAX; i++) ptr[i] = all[i], n[i] = na[i];
    return ACT_MAX;
}

/* Per-layer caches for a training step that keeps every layer's
 * activations (no recomputation in the backward pass): layer 0 owns a full
 * cache, the others their own activation buffers and layer 0's gradient
 * and scratch buffers. */
static void caches_free(layer_cache *cs, const lf_model *m, int T) {
    if (!cs) return;
    for (int l = 1; l < m->cfg.n_layers; l++) {
        float **ptr[ACT_MAX];
        size_t n[ACT_MAX];
        const int na = act_list(&cs[l], m, T, ptr, n);
        for (int i = 0; i < na; i++) free(*ptr[i]);
    }
    cache_free(&cs[0]);
    free(cs);
}

static layer_cache *caches_alloc(const lf_model *m, int T) {
    const int L = m->cfg.n_layers;
    layer_cache *cs = calloc((size_t)L, sizeof *cs);
    if (!cs || cache_alloc(&cs[0], m, T)) {
        free(cs);
        return NULL;
    }
    float **ptr[ACT_MAX];
    size_t n[ACT_MAX];
    for (int l = 1; l < L; l++) { /* layer 0's buffers, then none of their own yet */
        cs[l] = cs[0];
        const int na = act_list(&cs[l], m, T, ptr, n);
        for (int i = 0; i < na; i++) *ptr[i] = NULL;
    }
    for (int l = 1; l < L; l++) {
        const int na = act_list(&cs[l], m, T, ptr, n);
        for (int i = 0; i < na; i++)
            if (!(*ptr[i] = step_calloc(n[i], "kept activations"))) {
                caches_free(cs, m, T);
                return NULL;
            }
    }
    return cs;
}

int lf_train_checkpoint = -1;

/* Bytes of activations one layer keeps for T tokens. */
static size_t act_bytes(const lf_model *m, int T) {
    layer_cache c;
    memset(&c, 0, sizeof c);
    float **ptr[ACT_MAX];
    size_t n[ACT_MAX], b = 0;
    const int na = act_list(&c, m, T, ptr, n);
    for (int i = 0; i < na; i++) b += n[i] * sizeof(float);
    return b;
}

/* Keep every layer's activations when they fit in a quarter of the
 * available memory and at most 4 GiB; else checkpoint (recompute each
 * layer in the backward pass). */
static int keep_activations(const lf_model *m, int T) {
    if (lf_train_checkpoint >= 0) return !lf_train_checkpoint;
    const size_t need = act_bytes(m, T) * (size_t)(m->cfg.n_layers - 1), avail = lf_mem_available();
    return m->cfg.n_layers > 1 && need <= (4ull << 30) && avail && need <= avail / 4;
}

/* cos and sin of every rotary angle of positions 0 .. T-1 ([T][hd], as
 * rope_apply reads them): computed once per buffer set instead of at
 * every rotation (4 per layer, on one thread). */
static float *rope_table(const lf_config *c, int T) {
    const int hd = c->head_dim, half = hd / 2;
    float *f = lf_malloc((size_t)T * hd * sizeof(float), "rope table");
    double *inv = lf_malloc((size_t)(half ? half : 1) * sizeof(double), "rope table");
    if (f && inv) {
        /* each frequency rounded to float, as the float inv_freq array this
         * table replaced held it: the same angles, bit for bit */
        for (int j = 0; j < half; j++) inv[j] = (float)pow((double)c->rope_theta, -2.0 * j / hd);
        for (int t = 0; t < T; t++)
            for (int j = 0; j < half; j++) {
                const double a = (double)t * inv[j];
                f[(size_t)t * hd + j] = (float)cos(a);
                f[(size_t)t * hd + half + j] = (float)sin(a);
            }
    } else {
        free(f);
        f = NULL;
    }
    free(inv);
    return f;
}

/* Fusion weights of layer l into c->w (and the gate softmax into c->p). */
static void layer_weights(layer_cache *c, const lf_train_mode *md, int l, const float *x, int T, int k, float *s_out) {
    for (int t = 0; t < T; t++)
        for (int i = 0; i < k; i++) {
            c->w[(size_t)t * k + i] = md->mode == LF_FUSE_STATIC ? md->static_w[i] : 0.0f;
            c->p[(size_t)t * k + i] = 0;
        }
    if (md->mode == LF_FUSE_GATE) gate_forward(c->w, c->p, s_out, md->gate, l, x, T, md->temperature);
}

/* x_out = layer l (x), keeping the internals in c. */
static void layer_forward(float *x_out, const float *x, lf_model *m, int l, const lf_train_mode *md, layer_cache *c,
                          int T, const float *rope) {
    const lf_config *cf = &m->cfg;
    const lf_layer *ly = &m->layers[l];
    const int H = cf->hidden_size, k = m->n_adapters;
    const float *w = md->mode != LF_FUSE_BASE && k > 0 ? c->w : NULL;
    layer_weights(c, md, l, x, T, k, NULL);
    lf_rmsnorm(c->h1, x, ly->attn_norm, T, H, cf->rms_norm_eps);
    proj_forward(c->q, c->z[LF_PROJ_Q], c->h1, &ly->W[LF_PROJ_Q], &ly->lora[LF_PROJ_Q], w, k, T, md, l, LF_PROJ_Q, &c->ps);
    proj_forward(c->k, c->z[LF_PROJ_K], c->h1, &ly->W[LF_PROJ_K], &ly->lora[LF_PROJ_K], w, k, T, md, l, LF_PROJ_K, &c->ps);
    proj_forward(c->v, c->z[LF_PROJ_V], c->h1, &ly->W[LF_PROJ_V], &ly->lora[LF_PROJ_V], w, k, T, md, l, LF_PROJ_V, &c->ps);
    rope_apply(c->q, T, cf->n_heads, cf->head_dim, rope, 1);
    rope_apply(c->k, T, cf->n_kv_heads, cf->head_dim, rope, 1);
    attention_forward(c->att, c->q, c->k, c->v, cf, T);
    proj_forward(c->xm, c->z[LF_PROJ_O], c->att, &ly->W[LF_PROJ_O], &ly->lora[LF_PROJ_O], w, k, T, md, l, LF_PROJ_O, &c->ps);
    for (size_t i = 0; i < (size_t)T * H; i++) c->xm[i] += x[i];
    lf_rmsnorm(c->h2, c->xm, ly->ffn_norm, T, H, cf->rms_norm_eps);
    proj_forward(c->g, c->z[LF_PROJ_GATE], c->h2, &ly->W[LF_PROJ_GATE], &ly->lora[LF_PROJ_GATE], w, k, T, md, l, LF_PROJ_GATE, &c->ps);
    proj_forward(c->u, c->z[LF_PROJ_UP], c->h2, &ly->W[LF_PROJ_UP], &ly->lora[LF_PROJ_UP], w, k, T, md, l, LF_PROJ_UP, &c->ps);
    const size_t nI = (size_t)T * cf->intermediate_size;
    lf_swiglu_to(c->act, c->g, c->u, nI);
    proj_forward(x_out, c->z[LF_PROJ_DOWN], c->act, &ly->W[LF_PROJ_DOWN], &ly->lora[LF_PROJ_DOWN], w, k, T, md, l, LF_PROJ_DOWN, &c->ps);
    for (size_t i = 0; i < (size_t)T * H; i++) x_out[i] += c->xm[i];
}

/* Given dx_out (gradient of the layer output), dx = gradient of its input
 * (overwritten); parameter gradients accumulate into tr. */
static void layer_backward(float *dx, const float *dx_out, const float *x, lf_model *m, int l, const lf_train_mode *md,
                           layer_cache *c, int T, const float *rope, lf_trainable *tr) {
    const lf_config *cf = &m->cfg;
    const lf_layer *ly = &m->layers[l];
    const int H = cf->hidden_size, I = cf->intermediate_size, k = m->n_adapters;
    const size_t nH = (size_t)T * H, nI = (size_t)T * I;
    const size_t nq = (size_t)T * cf->n_heads * cf->head_dim, nkv = (size_t)T * cf->n_kv_heads * cf->head_dim;
    const float *w = md->mode != LF_FUSE_BASE && k > 0 ? c->w : NULL;
    const int base = tr && (tr->what & LF_TRAIN_BASE), lora = tr && (tr->what & LF_TRAIN_LORA);
#define PGRADS(P) base ? tr->d_W[l * LF_NPROJ + (P)] : NULL, lora ? tr->d_lora_A[l * LF_NPROJ + (P)] : NULL, \
                  lora ? tr->d_lora_B[l * LF_NPROJ + (P)] : NULL
    memset(c->dw, 0, (size_t)T * (k ? k : 1) * sizeof(float));

    /* MLP: x_out = xm + down(silu(g) * u) */
    proj_backward(c->dact, 0, c->dw, dx_out, c->act, c->z[LF_PROJ_DOWN], &ly->W[LF_PROJ_DOWN], &ly->lora[LF_PROJ_DOWN], w, k,
                  T, md, l, LF_PROJ_DOWN, PGRADS(LF_PROJ_DOWN), &c->ps, c->gR);
    lf_swiglu_backward(c->dg, c->du, c->dact, c->g, c->u, nI); /* d gate, d up */
    proj_backward(c->dh, 0, c->dw, c->dg, c->h2, c->z[LF_PROJ_GATE], &ly->W[LF_PROJ_GATE], &ly->lora[LF_PROJ_GATE], w, k, T,
                  md, l, LF_PROJ_GATE, PGRADS(LF_PROJ_GATE), &c->ps, c->gR);
    proj_backward(c->dh, 1, c->dw, c->du, c->h2, c->z[LF_PROJ_UP], &ly->W[LF_PROJ_UP], &ly->lora[LF_PROJ_UP], w, k, T, md, l,
                  LF_PROJ_UP, PGRADS(LF_PROJ_UP), &c->ps, c->gR);
    memcpy(c->dxm, dx_out, nH * sizeof(float));
    lf_rmsnorm_backward(c->dxm, base ? tr->d_ffn_norm[l] : NULL, c->dh, c->xm, ly->ffn_norm, T, H, cf->rms_norm_eps);

    /* attention: xm = x + o(attn(rope(q), rope(k), v)) */
    proj_backward(c->datt, 0, c->dw, c->dxm, c->att, c->z[LF_PROJ_O], &ly->W[LF_PROJ_O], &ly->lora[LF_PROJ_O], w, k, T, md, l,
                  LF_PROJ_O, PGRADS(LF_PROJ_O), &c->ps, c->gR);
    memset(c->dq, 0, nq * sizeof(float));
    memset(c->dk, 0, nkv * sizeof(float));
    memset(c->dv, 0, nkv * sizeof(float));
    attention_backward(c->dq, c->dk, c->dv, c->datt, c->q, c->k, c->v, cf, T);
    rope_apply(c->dq, T, cf->n_heads, cf->head_dim, rope, -1);
    rope_apply(c->dk, T, cf->n_kv_heads, cf->head_dim, rope, -1);
    proj_backward(c->dh, 0, c->dw, c->dq, c->h1, c->z[LF_PROJ_Q], &ly->W[LF_PROJ_Q], &ly->lora[LF_PROJ_Q], w, k, T, md, l,
                  LF_PROJ_Q, PGRADS(LF_PROJ_Q), &c->ps, c->gR);
    proj_backward(c->dh, 1, c->dw, c->dk, c->h1, c->z[LF_PROJ_K], &ly->W[LF_PROJ_K], &ly->lora[LF_PROJ_K], w, k, T, md, l,
                  LF_PROJ_K, PGRADS(LF_PROJ_K), &c->ps, c->gR);
    proj_backward(c->dh, 1, c->dw, c->dv, c->h1, c->z[LF_PROJ_V], &ly->W[LF_PROJ_V], &ly->lora[LF_PROJ_V], w, k, T, md, l,
                  LF_PROJ_V, PGRADS(LF_PROJ_V), &c->ps, c->gR);
#undef PGRADS
    memcpy(dx, c->dxm, nH * sizeof(float));
    lf_rmsnorm_backward(dx, base ? tr->d_attn_norm[l] : NULL, c->dh, x, ly->attn_norm, T, H, cf->rms_norm_eps);

    /* the gate reads x: its gradient flows into x and into W_gate, b */
    if (md->mode == LF_FUSE_GATE) {
        const int gt = tr && (tr->what & LF_TRAIN_GATE);
        gate_backward(dx, gt ? tr->d_gate_W : NULL, gt ? tr->d_gate_b : NULL, c->dw, c->p, md->gate, l, x, T,
                      md->temperature);
    }
}

/* ============================ the whole sequence ============================ */

#define CE_CHUNK 256 /* loss positions whose logits are held at once (32 MB of logits for a 32k vocabulary) */

/* One row of a chunk's logits: its loss term, and the row replaced by
 * d loss / d logits = (softmax - onehot) * scale.  Rows on the kernel
 * threads (the scalar exps of 384 x 32000 logits had run on one thread
 * while the other waited, about 1 % of a 1b step). */
typedef struct {
    float *logits;
    const int *pos;
    const int32_t *labels;
    int V;
    float scale;
    double *loss;
} ce_job;

static void ce_row(void *ctx, int i) {
    const ce_job *j = ctx;
    float *lg = j->logits + (size_t)i * j->V;
    const int y = j->labels[j->pos[i] + 1];
    const float lse = lf_logsumexp(lg, j->V);
    j->loss[i] = lse - lg[y];
    for (int v = 0; v < j->V; v++) lg[v] = expf(lg[v] - lse) * j->scale;
    lg[y] -= j->scale;
}

/* The buffers of one step (activations, gradients, logits).  A trainable
 * keeps them from one step to the next: allocated afresh, a 512-token step
 * on the 1b shape faults in about 1.5 GB of new pages, which cost more
 * than a tenth of the step.  A step writes every value before it reads
 * it (test_grad poisons the kept buffers with NaN to show it), so they are
 * not cleared between steps: clearing 1.5 GB took 2 % of a step. */
struct step_bufs {
    int T, keep; /* capacity in tokens; every layer keeps its activations (else one cache, recomputed) */
    const lf_model *m;
    size_t R, k; /* the shapes they were made for (adapters may change between steps) */
    layer_cache c, *cs;
    float *xs, *hf, *dxa, *dxb, *rope, *rows, *drows, *logits;
};

/* The step's own buffers (beside the layer caches) and their sizes in
 * floats for T tokens (m NULL: the pointers only). */
#define STEP_MAX 7
static void step_list(step_bufs *b, const lf_model *m, int T, float **ptr[STEP_MAX], size_t n[STEP_MAX]) {
    const size_t H = m ? (size_t)m->cfg.hidden_size : 0, nH = m ? (size_t)T * H : 0;
    const size_t L = m ? (size_t)m->cfg.n_layers : 0, V = m ? (size_t)m->cfg.vocab_size : 0;
    float **p[STEP_MAX] = {&b->xs, &b->hf, &b->dxa, &b->dxb, &b->rows, &b->drows, &b->logits};
    const size_t s[STEP_MAX] = {(L + 1) * nH, nH, nH, nH, CE_CHUNK * H, CE_CHUNK * H, CE_CHUNK * V};
    for (int i = 0; i < STEP_MAX; i++) ptr[i] = p[i], n[i] = s[i];
}

static void step_bufs_free(step_bufs *b, const lf_model *m) {
    float **ptr[STEP_MAX];
    size_t n[STEP_MAX];
    if (b->keep) caches_free(b->cs, m, b->T);
    else cache_free(&b->c);
    step_list(b, NULL, 0, ptr, n);
    for (int i = 0; i < STEP_MAX; i++) free(*ptr[i]);
    free(b->rope);
    memset(b, 0, sizeof *b);
}

int lf_train_poison = 0;

static void poison_floats(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = NAN;
}

static void poison_bufs(layer_cache *c, const lf_model *m, int T, int all) {
    float **ptr[CACHE_MAX];
    size_t n[CACHE_MAX];
    const int nb = all ? cache_list(c, m, T, ptr, n) : act_list(c, m, T, ptr, n);
    for (int i = 0; i < nb; i++) poison_floats(*ptr[i], n[i]);
}

/* Buffers for T tokens in *b: kept ones when large enough and laid out
 * the same way (every layer's activations kept, or one cache recomputed
 * per layer), else new ones.  grad: a backward pass follows. */
static int step_bufs_ready(step_bufs *b, const lf_model *m, int T, int grad) {
    const lf_config *cf = &m->cfg;
    const size_t R = max_rank(m), k = (size_t)m->n_adapters;
    float **ptr[STEP_MAX];
    size_t n[STEP_MAX];
    const int fits = b->xs && b->T >= T && b->m == m && b->R == R && b->k == k;
    /* kept activations stay kept (the memory check would count them as taken) */
    const int keep = grad && (fits && b->keep && lf_train_checkpoint < 0 ? 1 : keep_activations(m, T));
    if (fits && b->keep == keep) {
        if (lf_train_poison) {
            if (keep)
                for (int l = 0; l < cf->n_layers; l++) poison_bufs(&b->cs[l], m, b->T, l == 0);
            else
                poison_bufs(&b->c, m, b->T, 1);
            step_list(b, m, b->T, ptr, n);
            for (int i = 0; i < STEP_MAX; i++) poison_floats(*ptr[i], n[i]);
        }
        return 0;
    }
    step_bufs_free(b, b->m ? b->m : m);
    b->T = T;
    b->keep = keep;
    b->m = m;
    b->R = R;
    b->k = k;
    static const char *what[STEP_MAX] = {"layer inputs (checkpoints)", "final hidden", "gradients", "gradients",
                                         "loss rows", "loss rows", "logits"};
    step_list(b, m, T, ptr, n);
    int bad = !(b->rope = rope_table(cf, T));
    for (int i = 0; i < STEP_MAX && !bad; i++) bad = !(*ptr[i] = step_calloc(n[i], what[i]));
    if (!bad) bad = keep ? !(b->cs = caches_alloc(m, T)) : cache_alloc(&b->c, m, T) != 0;
    if (bad) {
        step_bufs_free(b, m);
        return -1;
    }
    return 0;
}

int lf_train_sequence(lf_model *m, lf_trainable *tr, const lf_train_mode *md, const int32_t *ids,
                      const int32_t *labels, int T, float scale, double *loss_sum, int *n_tokens,
                      float *fusion_weights) {
    const lf_config *cf = &m->cfg;
    const int H = cf->hidden_size, L = cf->n_layers, V = cf->vocab_size, k = m->n_adapters;
    *loss_sum = 0;
    *n_tokens = 0;
    if (T < 1) {
        lf_set_error("training example with no tokens");
        return -1;
    }
    if (md->mode == LF_FUSE_GATE && (!md->gate || md->gate->k != k)) {
        lf_set_error("the gate does not match the %d attached adapters", k);
        return -1;
    }
    for (int t = 0; t < T; t++) {
        if (ids[t] < 0 || ids[t] >= V) {
            lf_set_error("token id %d at position %d is outside the vocabulary [0, %d)", ids[t], t, V);
            return -1;
        }
        if (labels[t] != -100 && (labels[t] < 0 || labels[t] >= V)) {
            lf_set_error("label %d at position %d is outside the vocabulary [0, %d) (use -100 to ignore)", labels[t], t, V);
            return -1;
        }
    }
    /* loss positions: t predicts labels[t + 1] */
    int *pos = lf_malloc((size_t)T * sizeof(int), "loss positions");
    if (!pos) return -1;
    int np = 0;
    for (int t = 0; t + 1 < T; t++)
        if (labels[t + 1] != -100) pos[np++] = t;

    const size_t nH = (size_t)T * H;
    if (tr && !tr->bufs && !(tr->bufs = lf_calloc(1, sizeof *tr->bufs, "step buffers"))) {
        free(pos);
        return -1;
    }
    step_bufs local = {0}, *sb = tr ? tr->bufs : &local;
    if (step_bufs_ready(sb, m, T, tr != NULL)) {
        free(pos);
        return -1;
    }
    float *xs = sb->xs, *hf = sb->hf, *dxa = sb->dxa, *dxb = sb->dxb, *rope = sb->rope;
    float *rows = sb->rows, *drows = sb->drows, *logits = sb->logits;
    const int keep = sb->keep;
    layer_cache *cs = sb->cs, c = sb->c;
    int rc = -1;
#define CACHE(l) (keep ? &cs[l] : &c)

    /* forward, keeping every layer's input */
    for (int t = 0; t < T; t++) lf_to_f32(xs + (size_t)t * H, m->embed.data, m->embed.dtype, (size_t)ids[t] * H, (size_t)H);
    for (int l = 0; l < L; l++) {
        layer_forward(xs + (size_t)(l + 1) * nH, xs + (size_t)l * nH, m, l, md, CACHE(l), T, rope);
        if (fusion_weights && k) memcpy(fusion_weights + (size_t)l * T * k, CACHE(l)->w, (size_t)T * k * sizeof(float));
    }
    const float *xL = xs + (size_t)L * nH;
    lf_rmsnorm(hf, xL, m->final_norm, T, H, cf->rms_norm_eps);

    /* cross-entropy over the loss positions, in chunks; dhf = d loss / d hf */
    double row_loss[CE_CHUNK];
    float *dhf = dxa;
    memset(dhf, 0, nH * sizeof(float));
    const int base = tr && (tr->what & LF_TRAIN_BASE);
    double loss = 0;
    for (int c0 = 0; c0 < np; c0 += CE_CHUNK) {
        const int nc = np - c0 < CE_CHUNK ? np - c0 : CE_CHUNK;
        for (int i = 0; i < nc; i++) memcpy(rows + (size_t)i * H, hf + (size_t)pos[c0 + i] * H, (size_t)H * sizeof(float));
        lf_matmul(logits, rows, &m->lm_head, nc, 0);
        ce_job ce = {.logits = logits, .pos = pos + c0, .labels = labels, .V = V, .scale = scale, .loss = row_loss};
        lf_parallel_chunks(ce_row, &ce, nc, lf_kernels_threads());
        for (int i = 0; i < nc; i++) loss += row_loss[i]; /* in order: the same sum on any number of threads */
        if (tr) {
            lf_matmul_tn(drows, logits, &m->lm_head, nc, 0);
            for (int i = 0; i < nc; i++) {
                float *d = dhf + (size_t)pos[c0 + i] * H;
                for (int j = 0; j < H; j++) d[j] += drows[(size_t)i * H + j];
            }
            if (base) lf_matmul_wgrad(tr->d_lm_head, logits, rows, nc, V, H);
        }
    }
    *loss_sum = loss;
    *n_tokens = np;
    if (!tr) { rc = 0; goto out; }

    /* backward: final norm, then the layers from the last, recomputing each */
    float *dcur = dxb;
    memset(dcur, 0, nH * sizeof(float));
    lf_rmsnorm_backward(dcur, base ? tr->d_final_norm : NULL, dhf, xL, m->final_norm, T, H, cf->rms_norm_eps);
    float *dnext = dxa;
    float *scratch_out = hf; /* the recomputed layer output is not needed */
    for (int l = L - 1; l >= 0; l--) {
        const float *xl = xs + (size_t)l * nH;
        if (!keep) layer_forward(scratch_out, xl, m, l, md, &c, T, rope);
        layer_backward(dnext, dcur, xl, m, l, md, CACHE(l), T, rope, tr);
        float *sw = dcur; dcur = dnext; dnext = sw;
    }
    if (base)
        for (int t = 0; t < T; t++) {
            float *de = tr->d_embed + (size_t)ids[t] * H;
            const float *d = dcur + (size_t)t * H;
            for (int j = 0; j < H; j++) de[j] += d[j];
        }
    rc = 0;
out:
#undef CACHE
    if (!tr) step_bufs_free(&local, m);
    free(pos);
    return rc;
}
