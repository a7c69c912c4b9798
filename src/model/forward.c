/* forward.c: sessions (KV cache + fusion mode) and the Llama forward pass
 * with k LoRA adapters fused per token and per layer (METHOD.md section 2).
 *
 * Shapes: n = tokens fed in this call, H = hidden size, I = intermediate
 * size, L = layers, k = adapters, qd = n_heads * head_dim,
 * kvd = n_kv_heads * head_dim. */
#include "model.h"
#include "../core/util.h"
#include "../fusion/fusion.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ============================ sessions ============================ */

/* A KV cache of at most KV_HUGE_MAX bytes (keys and values) is placed in
 * transparent huge pages, committed and zeroed at once: when decoding, its
 * rows come from memory at every token, and with 4 KiB pages each block of
 * them also missed the TLB, with page-table entries the weights' streaming
 * had evicted (1b shape after a 512-token prompt, two sessions taking turns
 * token by token: attention 3.0 -> 1.0 ms a token, decoding F16 +5.6%, q8
 * +7%; AMD EPYC guest).  A larger cache (a 7B model's 4096 positions take
 * 4 GiB) keeps small pages, committed as positions fill. */
#define KV_HUGE_MAX ((size_t)1 << 30)

static float *kv_alloc(size_t n, const char *what) {
    size_t bytes;
    if (lf_mul_overflow(n, 2 * sizeof(float), &bytes) || bytes > KV_HUGE_MAX) return lf_calloc(n, sizeof(float), what);
    float *p = lf_huge_alloc(n * sizeof(float));
    if (!p) lf_set_error("out of memory allocating %zu bytes for %s", n * sizeof(float), what);
    else memset(p, 0, n * sizeof(float));
    return p;
}

lf_session *lf_session_new(lf_model *m, int max_ctx) {
    const lf_config *c = &m->cfg;
    if (max_ctx <= 0) max_ctx = c->max_position_embeddings;
    lf_session *s = lf_calloc(1, sizeof *s, "session");
    if (!s) return NULL;
    s->m = m;
    s->max_ctx = max_ctx;
    size_t kv = (size_t)c->n_layers * (size_t)max_ctx * (size_t)(c->n_kv_heads * c->head_dim);
    s->kcache = kv_alloc(kv, "KV cache (keys)");
    s->vcache = kv_alloc(kv, "KV cache (values)");
    s->rope_inv_freq = lf_calloc((size_t)c->head_dim / 2, sizeof(float), "rope table");
    if (!s->kcache || !s->vcache || !s->rope_inv_freq) {
        lf_session_free(s);
        return NULL;
    }
    for (int j = 0; j < c->head_dim / 2; j++)
        s->rope_inv_freq[j] = (float)pow((double)c->rope_theta, -2.0 * j / c->head_dim);
    s->mode = LF_FUSE_BASE;
    return s;
}

void lf_session_free(lf_session *s) {
    if (!s) return;
    free(s->kcache);
    free(s->vcache);
    free(s->rope_inv_freq);
    free(s->trace);
    free(s);
}

void lf_session_set_base(lf_session *s) { s->mode = LF_FUSE_BASE; s->gate = NULL; }

int lf_session_set_static(lf_session *s, const float *w, int k) {
    if (k != s->m->n_adapters) {
        lf_set_error("static fusion: %d weights given for %d adapters", k, s->m->n_adapters);
        return -1;
    }
    for (int i = 0; i < k; i++) s->static_w[i] = w[i];
    s->mode = LF_FUSE_STATIC;
    s->gate = NULL;
    return 0;
}

int lf_session_set_gate(lf_session *s, const lf_gate *g, float T) {
    const lf_config *c = &s->m->cfg;
    if (g->k != s->m->n_adapters || g->L != c->n_layers || g->H != c->hidden_size) {
        lf_set_error("gate has k=%d, %d layers, hidden %d; the model has %d adapters, %d layers, hidden %d",
                     g->k, g->L, g->H, s->m->n_adapters, c->n_layers, c->hidden_size);
        return -1;
    }
    if (!(T > 0)) {
        lf_set_error("gate temperature must be > 0, got %g", (double)T);
        return -1;
    }
    s->gate = g;
    s->temperature = T;
    s->mode = LF_FUSE_GATE;
    return 0;
}

void lf_session_reset(lf_session *s) { s->pos = 0; s->trace_n = 0; }
int lf_session_pos(const lf_session *s) { return s->pos; }
int lf_session_max_ctx(const lf_session *s) { return s->max_ctx; }

void lf_session_set_trace(lf_session *s, int on) { s->trace_on = on; }

const float *lf_session_trace(const lf_session *s, int *n_tokens) {
    if (n_tokens) *n_tokens = s->trace_n;
    return s->trace;
}

/* Append the weights w [L, n, k] of n tokens to the trace as [n][L][k]. */
static int trace_append(lf_session *s, const float *w_all, int n) {
    const int L = s->m->cfg.n_layers, k = s->m->n_adapters;
    if (s->trace_n + n > s->trace_cap) {
        int cap = s->trace_cap ? s->trace_cap : 64;
        while (cap < s->trace_n + n) cap *= 2;
        float *t = lf_realloc(s->trace, (size_t)cap * L * (k ? k : 1) * sizeof(float), "trace");
        if (!t) return -1;
        s->trace = t;
        s->trace_cap = cap;
    }
    for (int t = 0; t < n; t++)
        for (int l = 0; l < L; l++)
            for (int i = 0; i < k; i++)
                s->trace[((size_t)(s->trace_n + t) * L + l) * k + i] = w_all[((size_t)l * n + t) * k + i];
    s->trace_n += n;
    return 0;
}

/* ============================ layers ============================ */

/* Rotary embedding, rotate_half layout: element j pairs with j + d/2. */
static void rope(float *v, int n_heads, int hd, int pos, const float *inv_freq) {
    const int half = hd / 2;
    for (int j = 0; j < half; j++) {
        double a = (double)pos * inv_freq[j];
        float c = (float)cos(a), sn = (float)sin(a);
        for (int h = 0; h < n_heads; h++) {
            float *x = v + h * hd;
            float x0 = x[j], x1 = x[j + half];
            x[j] = x0 * c - x1 * sn;
            x[j + half] = x1 * c + x0 * sn;
        }
    }
}

/* The KV cache of one layer is [n_kv_heads][max_ctx][head_dim]: the keys
 * (and values) of one head are contiguous, so one query's attention is a
 * single pass over two [len, head_dim] blocks (lf_attend). */
static size_t kv_off(const lf_session *s, int l, int kvh, int p) {
    const lf_config *c = &s->m->cfg;
    return (((size_t)l * c->n_kv_heads + kvh) * s->max_ctx + p) * c->head_dim;
}

/* Store the keys and values of the n new tokens (k, v: [n, kvd]). */
static void kv_store(lf_session *s, int l, const float *k, const float *v, int n) {
    const lf_config *c = &s->m->cfg;
    const int hd = c->head_dim, kvd = c->n_kv_heads * hd;
    for (int t = 0; t < n; t++)
        for (int h = 0; h < c->n_kv_heads; h++) {
            memcpy(s->kcache + kv_off(s, l, h, s->pos + t), k + (size_t)t * kvd + (size_t)h * hd, (size_t)hd * sizeof(float));
            memcpy(s->vcache + kv_off(s, l, h, s->pos + t), v + (size_t)t * kvd + (size_t)h * hd, (size_t)hd * sizeof(float));
        }
}

#define ATT_TOKENS 8 /* queries per chunk of work */

typedef struct {
    float *out;
    const float *q;
    const lf_session *s;
    int l, n;
    int parts; /* each group of query heads is cut in this many parts */
} attn_job;

/* The query heads (a part of them) that share key/value head h
 * (grouped-query attention) for tokens t0 .. t0+ATT_TOKENS-1; c counts
 * parts fastest, then key/value heads, then blocks of tokens.  The keys
 * and values are read once per token for all these query heads. */
static void attend_chunk(void *ctx, int c) {
    const attn_job *a = ctx;
    const lf_config *cf = &a->s->m->cfg;
    const int hd = cf->head_dim, nh = cf->n_heads, nkv = cf->n_kv_heads, group = nh / nkv;
    const int part = c % a->parts, h = c / a->parts % nkv, t0 = c / a->parts / nkv * ATT_TOKENS;
    const int t1 = t0 + ATT_TOKENS < a->n ? t0 + ATT_TOKENS : a->n;
    const int g0 = group * part / a->parts, g1 = group * (part + 1) / a->parts;
    const size_t need = (size_t)(g1 - g0) * (a->s->pos + t1);
    float stack_sc[4096];
    float *sc = need <= 4096 ? stack_sc : malloc(need * sizeof(float));
    if (!sc) abort();
    const size_t at = kv_off(a->s, a->l, h, 0);
    for (int t = t0; t < t1; t++) {
        const size_t o = (size_t)t * nh * hd + ((size_t)h * group + g0) * hd;
        lf_attend_group(a->out + o, a->q + o, g1 - g0, a->s->kcache + at, a->s->vcache + at, a->s->pos + t + 1, hd,
                        1.0f / sqrtf((float)hd), sc);
    }
    if (sc != stack_sc) free(sc);
}

/* Causal grouped-query attention of the n new queries q [n, qd] over the
 * cache of layer l (positions 0 .. pos + t for query t).  out: [n, qd].
 * The kernel threads take (part of a key/value head's query heads, block
 * of tokens) chunks; the groups are cut in parts when there are fewer of
 * them than twice the threads. */
static void attention(float *out, const float *q, const lf_session *s, int l, int n) {
    const lf_config *c = &s->m->cfg;
    const int nh = c->n_heads, nkv = c->n_kv_heads, group = nh / nkv;
    int parts = (2 * lf_kernels_threads() + nkv - 1) / nkv;
    if (parts > group) parts = group;
    const int nchunks = (n + ATT_TOKENS - 1) / ATT_TOKENS * nkv * parts;
    attn_job a = {out, q, s, l, n, parts};
    if ((size_t)n * nh * (s->pos + n) * c->head_dim > 65536) lf_parallel_for(attend_chunk, &a, nchunks);
    else for (int i = 0; i < nchunks; i++) attend_chunk(&a, i);
}

/* Fusion weights w [n, k] of layer l for the n inputs x [n, H]; gate logits
 * s / T into s_out [n, k] when non-NULL (gate mode). */
static void fusion_weights(const lf_session *s, int l, const float *x, int n, float *w, float *s_out) {
    const int k = s->m->n_adapters, H = s->m->cfg.hidden_size;
    for (int t = 0; t < n; t++) {
        float *wt = w + (size_t)t * k;
        if (s->mode == LF_FUSE_BASE) {
            for (int i = 0; i < k; i++) wt[i] = 0;
        } else if (s->mode == LF_FUSE_STATIC) {
            for (int i = 0; i < k; i++) wt[i] = s->static_w[i];
        } else {
            lf_gate_weights(s->gate, l, x + (size_t)t * H, s->temperature, wt, s_out ? s_out + (size_t)t * k : NULL);
        }
    }
}

/* ============================ forward ============================ */

typedef struct {
    float *x, *h, *q, *k, *v, *att, *tmp, *g, *u, *w, *z, *wall, *sall;
    int R; /* largest stacked rank: b.z holds 3 blocks of n * R */
} scratch;

static void scratch_free(scratch *b) {
    free(b->x); free(b->h); free(b->q); free(b->k); free(b->v); free(b->att); free(b->tmp);
    free(b->g); free(b->u); free(b->w); free(b->z); free(b->wall); free(b->sall);
}

static int scratch_alloc(scratch *b, const lf_model *m, int n) {
    const lf_config *c = &m->cfg;
    const size_t H = (size_t)c->hidden_size, I = (size_t)c->intermediate_size;
    const size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    const size_t k = (size_t)(m->n_adapters ? m->n_adapters : 1);
    size_t R = 1;
    for (int l = 0; l < c->n_layers; l++)
        for (int p = 0; p < LF_NPROJ; p++)
            if ((size_t)m->layers[l].lora[p].R > R) R = (size_t)m->layers[l].lora[p].R;
    size_t wide = H > qd ? H : qd;
    memset(b, 0, sizeof *b);
    b->x = lf_calloc((size_t)n * H, sizeof(float), "activations");
    b->h = lf_calloc((size_t)n * H, sizeof(float), "activations");
    b->q = lf_calloc((size_t)n * qd, sizeof(float), "activations");
    b->k = lf_calloc((size_t)n * kvd, sizeof(float), "activations");
    b->v = lf_calloc((size_t)n * kvd, sizeof(float), "activations");
    b->att = lf_calloc((size_t)n * qd, sizeof(float), "activations");
    b->tmp = lf_calloc((size_t)n * wide, sizeof(float), "activations");
    b->g = lf_calloc((size_t)n * I, sizeof(float), "activations");
    b->u = lf_calloc((size_t)n * I, sizeof(float), "activations");
    b->w = lf_calloc((size_t)n * k, sizeof(float), "fusion weights");
    b->z = lf_calloc((size_t)n * R * 3, sizeof(float), "adapter activations"); /* q, k, v at once */
    b->R = (int)R;
    b->wall = lf_calloc((size_t)c->n_layers * n * k, sizeof(float), "fusion weights");
    b->sall = lf_calloc((size_t)c->n_layers * n * k, sizeof(float), "gate logits");
    if (!b->x || !b->h || !b->q || !b->k || !b->v || !b->att || !b->tmp || !b->g || !b->u ||
        !b->w || !b->z || !b->wall || !b->sall) {
        scratch_free(b);
        return -1;
    }
    return 0;
}

/* Rotary embeddings of the n new queries and keys. */
static void rope_all(const lf_session *s, float *q, float *kk, int n) {
    const lf_config *c = &s->m->cfg;
    const int kvd = c->n_kv_heads * c->head_dim;
    for (int t = 0; t < n; t++) {
        rope(q + (size_t)t * c->n_heads * c->head_dim, c->n_heads, c->head_dim, s->pos + t, s->rope_inv_freq);
        rope(kk + (size_t)t * kvd, c->n_kv_heads, c->head_dim, s->pos + t, s->rope_inv_freq);
    }
}

/* One job of a decoding batch: y (+)= W u, plus B_cat z when adapters are
 * on (z already scaled). */
static lf_matvec_job proj_job(const lf_layer *ly, int p, const float *u, float *y, int accumulate,
                              const float *w, const float *z) {
    const lf_lora_stack *st = &ly->lora[p];
    return (lf_matvec_job){&ly->W[p], u, y, accumulate, w && st->R ? &st->B : NULL, z};
}

/* The adapters' first factors of the projections p[0..np-1], which share
 * the input u: z_j = A_cat u into z + j * R, then scaled by w * c. */
typedef struct {
    const lf_layer *ly;
    const int *p;
    int np, k, R;
    const float *w;
    float *z;
} lora_stage;

static void lora_scale_stage(void *ctx) {
    const lora_stage *st = ctx;
    for (int j = 0; j < st->np; j++)
        if (st->ly->lora[st->p[j]].R) lf_lora_scale(st->z + (size_t)j * st->R, &st->ly->lora[st->p[j]], st->w, st->k, 1);
}

/* The projections jobs[0..n-1] of the inputs u, and, when w is set, the
 * adapters' first factors of p[0..np-1] as the batch's first stage (their
 * B_cat z is fused into the jobs' rows and waits for it). */
static void project_decode(const lf_layer *ly, const int *p, int np, const float *u, const float *w, int k, float *z,
                           int R, const lf_matvec_job *jobs, int n) {
    if (!w) {
        lf_matvec(jobs, n);
        return;
    }
    lf_matvec_job pre[3] = {{0}};
    int npre = 0;
    for (int j = 0; j < np; j++)
        if (ly->lora[p[j]].R) pre[npre++] = (lf_matvec_job){&ly->lora[p[j]].A, u, z + (size_t)j * R, 0, NULL, NULL};
    lora_stage st = {ly, p, np, k, R, w, z};
    lf_matvec_staged(pre, npre, lora_scale_stage, &st, jobs, n);
}

/* One decoder layer for one token: every projection is a batch of
 * lf_matvec jobs (q/k/v together, gate/up together), the adapters' first
 * factors A_cat in a batch before, their second factors B_cat fused into
 * the base rows, and the residual added by the o and down products
 * themselves.  Each weight and adapter byte is read once. */
static void layer_decode(lf_session *s, int l, scratch *b, const float *w) {
    const lf_model *m = s->m;
    const lf_config *c = &m->cfg;
    const lf_layer *ly = &m->layers[l];
    const int H = c->hidden_size, k = m->n_adapters, R = b->R;
    float *z = b->z;

    lf_rmsnorm(b->h, b->x, ly->attn_norm, 1, H, c->rms_norm_eps);
    static const int qkv[3] = {LF_PROJ_Q, LF_PROJ_K, LF_PROJ_V};
    lf_matvec_job jobs[3] = {
        proj_job(ly, LF_PROJ_Q, b->h, b->q, 0, w, z),
        proj_job(ly, LF_PROJ_K, b->h, b->k, 0, w, z + R),
        proj_job(ly, LF_PROJ_V, b->h, b->v, 0, w, z + 2 * (size_t)R),
    };
    project_decode(ly, qkv, 3, b->h, w, k, z, R, jobs, 3);
    rope_all(s, b->q, b->k, 1);
    kv_store(s, l, b->k, b->v, 1);
    attention(b->att, b->q, s, l, 1);

    static const int o[1] = {LF_PROJ_O};
    jobs[0] = proj_job(ly, LF_PROJ_O, b->att, b->x, 1, w, z); /* x += o_proj(att) */
    project_decode(ly, o, 1, b->att, w, k, z, R, jobs, 1);

    lf_rmsnorm(b->h, b->x, ly->ffn_norm, 1, H, c->rms_norm_eps);
    static const int gu[2] = {LF_PROJ_GATE, LF_PROJ_UP};
    jobs[0] = proj_job(ly, LF_PROJ_GATE, b->h, b->g, 0, w, z);
    jobs[1] = proj_job(ly, LF_PROJ_UP, b->h, b->u, 0, w, z + R);
    project_decode(ly, gu, 2, b->h, w, k, z, R, jobs, 2);
    lf_swiglu(b->g, b->u, (size_t)c->intermediate_size);

    static const int d[1] = {LF_PROJ_DOWN};
    jobs[0] = proj_job(ly, LF_PROJ_DOWN, b->g, b->x, 1, w, z); /* x += down_proj(act) */
    project_decode(ly, d, 1, b->g, w, k, z, R, jobs, 1);
}

/* One decoder layer for n tokens (prompt processing): blocked GEMMs
 * (lf_project), the same arithmetic as layer_decode. */
static void layer_batch(lf_session *s, int l, scratch *b, int n, const float *w) {
    const lf_model *m = s->m;
    const lf_config *c = &m->cfg;
    const lf_layer *ly = &m->layers[l];
    const int H = c->hidden_size, k = m->n_adapters;

    lf_rmsnorm(b->h, b->x, ly->attn_norm, n, H, c->rms_norm_eps);
    lf_project(b->q, b->h, &ly->W[LF_PROJ_Q], &ly->lora[LF_PROJ_Q], w, k, n, b->z);
    lf_project(b->k, b->h, &ly->W[LF_PROJ_K], &ly->lora[LF_PROJ_K], w, k, n, b->z);
    lf_project(b->v, b->h, &ly->W[LF_PROJ_V], &ly->lora[LF_PROJ_V], w, k, n, b->z);
    rope_all(s, b->q, b->k, n);
    kv_store(s, l, b->k, b->v, n);
    attention(b->att, b->q, s, l, n);
    lf_project(b->tmp, b->att, &ly->W[LF_PROJ_O], &ly->lora[LF_PROJ_O], w, k, n, b->z);
    for (size_t i = 0; i < (size_t)n * H; i++) b->x[i] += b->tmp[i];

    lf_rmsnorm(b->h, b->x, ly->ffn_norm, n, H, c->rms_norm_eps);
    lf_project(b->g, b->h, &ly->W[LF_PROJ_GATE], &ly->lora[LF_PROJ_GATE], w, k, n, b->z);
    lf_project(b->u, b->h, &ly->W[LF_PROJ_UP], &ly->lora[LF_PROJ_UP], w, k, n, b->z);
    lf_swiglu(b->g, b->u, (size_t)n * c->intermediate_size);
    lf_project(b->tmp, b->g, &ly->W[LF_PROJ_DOWN], &ly->lora[LF_PROJ_DOWN], w, k, n, b->z);
    for (size_t i = 0; i < (size_t)n * H; i++) b->x[i] += b->tmp[i];
}

int lf_session_forward(lf_session *s, const int32_t *ids, int n, const lf_outputs *out) {
    lf_model *m = s->m;
    const lf_config *c = &m->cfg;
    const int H = c->hidden_size, L = c->n_layers, k = m->n_adapters;
    if (n <= 0) {
        lf_set_error("forward: no tokens given");
        return -1;
    }
    if (n > s->max_ctx - s->pos) {
        lf_set_error("context full: %d tokens already in the cache + %d new exceed the context of %d "
                     "(raise it, at most max_position_embeddings = %d)",
                     s->pos, n, s->max_ctx, c->max_position_embeddings);
        return -1;
    }
    for (int t = 0; t < n; t++) {
        if (ids[t] < 0 || ids[t] >= c->vocab_size) {
            lf_set_error("token id %d at position %d is outside the vocabulary [0, %d)", ids[t], t, c->vocab_size);
            return -1;
        }
    }
    if (s->mode == LF_FUSE_GATE && (!s->gate || s->gate->k != k)) {
        lf_set_error("the gate does not match the %d attached adapters", k);
        return -1;
    }
    scratch b;
    if (scratch_alloc(&b, m, n) != 0) return -1;

    for (int t = 0; t < n; t++)
        lf_to_f32(b.x + (size_t)t * H, m->embed.data, m->embed.dtype, (size_t)ids[t] * H, (size_t)H);

    const int fuse = s->mode != LF_FUSE_BASE && k > 0;
    for (int l = 0; l < L; l++) {
        if (out && out->layer_inputs)
            memcpy(out->layer_inputs + (size_t)l * n * H, b.x, (size_t)n * H * sizeof(float));
        /* LoRA-Flow: w = softmax(W_gate x / T) + b, from the layer input x */
        fusion_weights(s, l, b.x, n, b.w, s->mode == LF_FUSE_GATE ? b.sall + (size_t)l * n * k : NULL);
        memcpy(b.wall + (size_t)l * n * k, b.w, (size_t)n * k * sizeof(float));
        if (n == 1) layer_decode(s, l, &b, fuse ? b.w : NULL);
        else layer_batch(s, l, &b, n, fuse ? b.w : NULL);
    }
    if (out && out->layer_inputs)
        memcpy(out->layer_inputs + (size_t)L * n * H, b.x, (size_t)n * H * sizeof(float));

    lf_rmsnorm(b.h, b.x, m->final_norm, n, H, c->rms_norm_eps);
    if (out) {
        if (out->hidden_final) memcpy(out->hidden_final, b.h, (size_t)n * H * sizeof(float));
        if (out->logits) lf_matmul(out->logits, b.h, &m->lm_head, n, 0);
        if (out->last_logits) lf_matmul(out->last_logits, b.h + (size_t)(n - 1) * H, &m->lm_head, 1, 0);
        if (out->fusion_weights) memcpy(out->fusion_weights, b.wall, (size_t)L * n * k * sizeof(float));
        if (out->gate_logits) memcpy(out->gate_logits, b.sall, (size_t)L * n * k * sizeof(float));
    }
    int rc = 0;
    if (s->trace_on && k > 0) rc = trace_append(s, b.wall, n);
    s->pos += n;
    scratch_free(&b);
    return rc;
}
