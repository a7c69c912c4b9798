/* model.c: loading a Hugging Face Llama folder (config + weights). */
#include "model.h"
#include "../core/util.h"
#include "../fusion/fusion.h"

#include <cjson/cJSON.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

const char *const lf_proj_path[LF_NPROJ] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj",
};
const char *const lf_proj_short[LF_NPROJ] = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
};

/* ============================ threads ============================ */

static int lf_threads = 0;

void lf_set_threads(int n) {
    lf_threads = n > 0 ? n : omp_get_num_procs();
    lf_kernels_set_threads(lf_threads);
}

int lf_get_threads(void) { return lf_threads > 0 ? lf_threads : omp_get_max_threads(); }

/* ============================ weights ============================ */

/* Read the weight files of a folder into ts. */
static int read_weights(const char *dir, lf_tensorset *ts) {
    static const char *single[] = {"model.safetensors", "pytorch_model.bin"};
    static const char *index[] = {"model.safetensors.index.json", "pytorch_model.bin.index.json"};
    for (int i = 0; i < 2; i++) {
        char *p = lf_path_join(dir, single[i]);
        if (!p) return -1;
        if (lf_file_exists(p)) {
            int rc = i == 0 ? lf_safetensors_read(p, ts) : lf_pt_read(p, ts);
            free(p);
            return rc;
        }
        free(p);
    }
    char *p = lf_path_join(dir, index[0]);
    if (!p) return -1;
    if (lf_file_exists(p)) {
        int rc = lf_safetensors_read_index(p, ts);
        free(p);
        return rc;
    }
    free(p);
    /* pytorch_model.bin.index.json: the same weight_map, shards are .bin */
    p = lf_path_join(dir, index[1]);
    if (!p) return -1;
    if (!lf_file_exists(p)) {
        free(p);
        lf_set_error("%s: no weights found (expected model.safetensors, model.safetensors.index.json, "
                     "pytorch_model.bin or pytorch_model.bin.index.json)", dir);
        return -1;
    }
    size_t len;
    char *txt = lf_read_file(p, &len, 64u << 20);
    if (!txt) { free(p); return -1; }
    cJSON *j = cJSON_Parse(txt);
    free(txt);
    cJSON *wm = j ? cJSON_GetObjectItemCaseSensitive(j, "weight_map") : NULL;
    if (!cJSON_IsObject(wm)) {
        lf_set_error("%s: not JSON with a 'weight_map' object", p);
        cJSON_Delete(j); free(p);
        return -1;
    }
    /* Open each distinct shard once. */
    char **seen = NULL;
    int nseen = 0, rc = 0;
    cJSON *it;
    cJSON_ArrayForEach(it, wm) {
        if (!cJSON_IsString(it) || strchr(it->valuestring, '/') || strstr(it->valuestring, "..")) {
            lf_set_error("%s: weight_map['%s'] is not a file name in the same folder", p, it->string);
            rc = -1;
            break;
        }
        int dup = 0;
        for (int i = 0; i < nseen; i++) if (!strcmp(seen[i], it->valuestring)) dup = 1;
        if (dup) continue;
        char **ns = realloc(seen, (size_t)(nseen + 1) * sizeof *ns);
        if (!ns) { lf_set_error("out of memory"); rc = -1; break; }
        seen = ns;
        seen[nseen++] = it->valuestring;
        char *sp = lf_path_join(dir, it->valuestring);
        if (!sp || lf_pt_read(sp, ts) != 0) { free(sp); rc = -1; break; }
        free(sp);
    }
    free(seen);
    cJSON_Delete(j);
    free(p);
    return rc;
}

/* Find a tensor, check it is a float matrix/vector of the expected shape. */
static const lf_tensor *want(const lf_model *m, const char *name, int64_t d0, int64_t d1) {
    const lf_tensor *t = lf_tensorset_find(&m->ts, name);
    if (!t) {
        lf_set_error("%s: tensor '%s' missing from the weights", m->dir, name);
        return NULL;
    }
    if (t->dtype != LF_F32 && t->dtype != LF_F16 && t->dtype != LF_BF16) {
        lf_set_error("%s: tensor '%s' has dtype %s, expected F32, F16 or BF16",
                     m->ts.paths[t->source], name, lf_dtype_name(t->dtype));
        return NULL;
    }
    int ndim = d1 < 0 ? 1 : 2;
    int64_t exp[2] = {d0, d1};
    if (t->ndim != ndim || t->shape[0] != d0 || (ndim == 2 && t->shape[1] != d1)) {
        char a[128], b[128];
        lf_set_error("%s: tensor '%s' has shape %s, expected %s from config.json",
                     m->ts.paths[t->source], name, lf_shape_str(t->shape, t->ndim, a, sizeof a),
                     lf_shape_str(exp, ndim, b, sizeof b));
        return NULL;
    }
    return t;
}

static int want_mat(const lf_model *m, const char *name, int rows, int cols, lf_mat *out) {
    const lf_tensor *t = want(m, name, rows, cols);
    if (!t) return -1;
    out->dtype = t->dtype;
    out->data = t->data;
    out->rows = rows;
    out->cols = cols;
    return 0;
}

static float *want_vec(const lf_model *m, const char *name, int n) {
    const lf_tensor *t = want(m, name, n, -1);
    if (!t) return NULL;
    float *v = lf_malloc((size_t)n * sizeof(float), name);
    if (v) lf_to_f32(v, t->data, t->dtype, 0, (size_t)n);
    return v;
}

static int bind_weights(lf_model *m) {
    const lf_config *c = &m->cfg;
    const int H = c->hidden_size, I = c->intermediate_size;
    const int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    char name[256];
    if (want_mat(m, "model.embed_tokens.weight", c->vocab_size, H, &m->embed)) return -1;
    if (c->tie_word_embeddings && !lf_tensorset_find(&m->ts, "lm_head.weight")) {
        m->lm_head = m->embed;
    } else if (want_mat(m, "lm_head.weight", c->vocab_size, H, &m->lm_head)) {
        return -1;
    }
    if (!(m->final_norm = want_vec(m, "model.norm.weight", H))) return -1;
    m->layers = lf_calloc((size_t)c->n_layers, sizeof *m->layers, "layers");
    if (!m->layers) return -1;
    const int shape[LF_NPROJ][2] = {
        {qd, H}, {kvd, H}, {kvd, H}, {H, qd}, {I, H}, {I, H}, {H, I},
    };
    for (int l = 0; l < c->n_layers; l++) {
        lf_layer *ly = &m->layers[l];
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        if (!(ly->attn_norm = want_vec(m, name, H))) return -1;
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
        if (!(ly->ffn_norm = want_vec(m, name, H))) return -1;
        for (int p = 0; p < LF_NPROJ; p++) {
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, lf_proj_path[p]);
            if (want_mat(m, name, shape[p][0], shape[p][1], &ly->W[p])) return -1;
        }
    }
    return 0;
}

/* ============================ weight placement ============================ */

/* Every matrix the forward pass streams, and whether it may be quantised
 * (the embeddings are read one row at a time and stay as stored). */
static int collect_mats(lf_model *m, lf_mat **mats, int *quantizable) {
    int n = 0;
    mats[n] = &m->embed; quantizable[n++] = 0;
    if (m->lm_head.data != m->embed.data || m->lm_head.dtype != m->embed.dtype) {
        mats[n] = &m->lm_head; quantizable[n++] = 1;
    } else {
        mats[n] = &m->lm_head; quantizable[n++] = 2; /* tied: shares embed unless quantised */
    }
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int p = 0; p < LF_NPROJ; p++) { mats[n] = &m->layers[l].W[p]; quantizable[n++] = 1; }
    return n;
}

/* Drop the pages of [p, p + n) from this process's memory map: they were
 * copied, and a later access would read them again from the file. */
static void drop_mapped(const void *p, size_t n) {
    const uintptr_t pg = 4096, a = ((uintptr_t)p + pg - 1) & ~(pg - 1), b = ((uintptr_t)p + n) & ~(pg - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

/* Bytes a matrix takes once placed (64-byte aligned). */
static size_t placed_bytes(const lf_mat *W, int q8) {
    size_t b = q8 ? lf_q8_bytes(W->rows, W->cols) : lf_mat_bytes(W);
    return (b + 63) & ~(size_t)63;
}

/* Copy (or quantise) the weights into one block of anonymous memory
 * backed by transparent huge pages: the TLB then covers 2 MiB per entry
 * instead of 4 KiB, and decoding streams every weight once per token. */
static int copy_weights(lf_model *m, int q8, int layout) {
    const int nmax = 2 + m->cfg.n_layers * LF_NPROJ;
    lf_mat **mats = lf_calloc((size_t)nmax, sizeof *mats, "weight list");
    int *qz = lf_calloc((size_t)nmax, sizeof *qz, "weight list");
    if (!mats || !qz) { free(mats); free(qz); return -1; }
    const int n = collect_mats(m, mats, qz);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        if (qz[i] == 2 && !q8) continue;
        total += placed_bytes(mats[i], q8 && qz[i]);
    }
    void **own = lf_realloc(m->owned, (size_t)(m->n_owned + 1) * sizeof *own, "weights");
    uint8_t *arena = NULL;
    if (own) {
        m->owned = own;
        arena = lf_huge_alloc(total);
    }
    if (!arena) {
        lf_set_error("%s: out of memory copying %.2f GiB of weights (use the memory-mapped placement)", m->dir,
                     total / 1073741824.0);
        free(mats); free(qz);
        return -1;
    }
    m->owned[m->n_owned++] = arena;
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        lf_mat *W = mats[i];
        if (qz[i] == 2 && !q8) { *W = m->embed; continue; } /* tied lm_head: embed was placed first */
        const void *src = W->data;
        const size_t src_bytes = lf_mat_bytes(W);
        uint8_t *dst = arena + at;
        /* the projections and an untied lm_head; the embeddings are read one row at a time */
        const int cb = layout == LF_LAYOUT_AUTO && qz[i] == 1 ? lf_colblock_for(W->dtype, W->cols) : 0;
        if (q8 && qz[i]) {
            lf_q8_quantize(dst, W, W);
        } else if (cb) {
            lf_mat_to_colblocks(dst, W, cb, W);
        } else {
#pragma omp parallel for schedule(static)
            for (size_t c = 0; c < src_bytes; c += (1u << 20))
                memcpy(dst + c, (const uint8_t *)src + c, src_bytes - c < (1u << 20) ? src_bytes - c : (1u << 20));
            W->data = dst;
        }
        at += placed_bytes(W, W->dtype == LF_Q8);
        if (qz[i] != 2) drop_mapped(src, src_bytes); /* keeps resident memory at one copy */
    }
    free(mats);
    free(qz);
    return 0;
}

static int place_weights(lf_model *m, const lf_load_options *o) {
    int placement = o->placement;
    const int q8 = o->quantize == LF_QUANT_Q8;
    if (q8) placement = LF_PLACE_COPY;
    if (placement == LF_PLACE_AUTO) {
        /* Copy when the weights fit with 2 GiB to spare (the page cache of
         * the file is reclaimable and does not count against this). */
        size_t bytes = 0;
        for (int i = 0; i < m->ts.n; i++) bytes += m->ts.tensors[i].nbytes;
        size_t avail = lf_mem_available();
        placement = avail && bytes + (2ull << 30) <= avail ? LF_PLACE_COPY : LF_PLACE_MMAP;
    }
    if (placement != LF_PLACE_COPY) return 0;
    return copy_weights(m, q8, o->layout);
}

void lf_load_options_default(lf_load_options *o) {
    memset(o, 0, sizeof *o);
    const char *e = getenv("LORAFLOW_PLACEMENT");
    if (e && !strcmp(e, "mmap")) o->placement = LF_PLACE_MMAP;
    if (e && !strcmp(e, "copy")) o->placement = LF_PLACE_COPY;
    e = getenv("LORAFLOW_QUANTIZE");
    if (e && !strcmp(e, "q8")) o->quantize = LF_QUANT_Q8;
    e = getenv("LORAFLOW_QUANTIZE_ADAPTERS");
    if (e && !strcmp(e, "q8")) o->quantize_adapters = LF_QUANT_Q8;
    e = getenv("LORAFLOW_LAYOUT");
    if (e && !strcmp(e, "rows")) o->layout = LF_LAYOUT_ROWS;
    if (e && !strcmp(e, "auto")) o->layout = LF_LAYOUT_AUTO;
}

lf_model *lf_model_load(const char *dir) { return lf_model_load_opts(dir, NULL); }

lf_model *lf_model_load_opts(const char *dir, const lf_load_options *opts) {
    if (lf_env_check()) return NULL;
    lf_load_options o;
    if (opts) o = *opts;
    else lf_load_options_default(&o);
    if (o.placement < LF_PLACE_AUTO || o.placement > LF_PLACE_COPY || o.quantize < LF_QUANT_NONE ||
        o.quantize > LF_QUANT_Q8 || o.quantize_adapters < LF_QUANT_NONE || o.quantize_adapters > LF_QUANT_Q8 ||
        o.layout < LF_LAYOUT_AUTO || o.layout > LF_LAYOUT_ROWS) {
        lf_set_error("load options: placement %d / quantize %d / quantize_adapters %d / layout %d out of range",
                     o.placement, o.quantize, o.quantize_adapters, o.layout);
        return NULL;
    }
    lf_model *m = lf_calloc(1, sizeof *m, "model");
    if (!m) return NULL;
    lf_tensorset_init(&m->ts);
    m->dir = lf_strdup(dir);
    m->adapter_quant = o.quantize_adapters;
    char *cfg = lf_path_join(dir, "config.json");
    if (!m->dir || !cfg) goto fail;
    if (lf_config_read(cfg, &m->cfg) != 0) { free(cfg); goto fail; }
    free(cfg);
    if (m->cfg.head_dim % 2) {
        lf_set_error("%s: head_dim %d is odd; rotary embeddings need an even head_dim", dir, m->cfg.head_dim);
        goto fail;
    }
    if (read_weights(dir, &m->ts) != 0) goto fail;
    if (bind_weights(m) != 0) goto fail;
    if (place_weights(m, &o) != 0) goto fail;
    return m;
fail:
    lf_model_free(m);
    return NULL;
}

int lf_model_placement(const lf_model *m) {
    const uint8_t *p = m->layers && m->cfg.n_layers ? m->layers[0].W[0].data : m->embed.data;
    for (int i = 0; i < m->ts.nmaps; i++) {
        const uint8_t *a = m->ts.maps[i].addr;
        if (a && p >= a && p < a + m->ts.maps[i].size) return LF_PLACE_MMAP;
    }
    return LF_PLACE_COPY;
}

size_t lf_model_decode_bytes(const lf_model *m, int with_adapters) {
    size_t b = lf_mat_bytes(&m->lm_head);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        for (int p = 0; p < LF_NPROJ; p++) {
            b += lf_mat_bytes(&m->layers[l].W[p]);
            if (with_adapters && m->layers[l].lora[p].R)
                b += lf_mat_bytes(&m->layers[l].lora[p].A) + lf_mat_bytes(&m->layers[l].lora[p].B);
        }
    }
    return b;
}

static void free_stack(lf_lora_stack *s) {
    free((void *)s->A.data);
    free((void *)s->B.data);
    memset(s, 0, sizeof *s);
}

void lf_model_free(lf_model *m) {
    if (!m) return;
    if (m->layers) {
        for (int l = 0; l < m->cfg.n_layers; l++) {
            free(m->layers[l].attn_norm);
            free(m->layers[l].ffn_norm);
            for (int p = 0; p < LF_NPROJ; p++) free_stack(&m->layers[l].lora[p]);
        }
    }
    free(m->layers);
    free(m->final_norm);
    lf_adapters_free(m);
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    lf_tensorset_free(&m->ts);
    free(m->dir);
    free(m);
}

const lf_config *lf_model_config(const lf_model *m) { return &m->cfg; }

void lf_model_get_info(const lf_model *m, lf_model_info *info) {
    memset(info, 0, sizeof *info);
    info->n_tensors = m->ts.n;
    for (int i = 0; i < m->ts.n; i++) {
        const lf_tensor *t = &m->ts.tensors[i];
        info->n_params += lf_tensor_numel(t);
        info->weight_bytes += t->nbytes;
        if ((int)t->dtype >= 0 && (int)t->dtype < 5) info->n_by_dtype[t->dtype]++;
    }
    info->weights_file = m->ts.npaths ? m->ts.paths[0] : "";
}

size_t lf_model_runtime_bytes(const lf_model *m, int ctx) {
    const lf_config *c = &m->cfg;
    size_t kv = 2ull * c->n_layers * (size_t)ctx * c->n_kv_heads * c->head_dim * sizeof(float);
    size_t act = ((size_t)c->hidden_size * 6 + (size_t)c->intermediate_size * 2 + c->vocab_size) * sizeof(float);
    return kv + act;
}

int lf_model_n_adapters(const lf_model *m) { return m->n_adapters; }

const char *lf_model_adapter_name(const lf_model *m, int i) {
    return i >= 0 && i < m->n_adapters ? m->adapters[i].name : NULL;
}
