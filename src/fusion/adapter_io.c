/* adapter_io.c: new adapters with fresh weights (to train), and saving
 * adapters as PEFT folders that PEFT and loraflow load. */
#include "fusion.h"
#include "../core/util.h"
#include "../io/atomic.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Add a float32 tensor owned by the set. */
static lf_tensor *owned_tensor(lf_tensorset *ts, const char *name, int rows, int cols) {
    float *buf = lf_calloc((size_t)rows * cols, sizeof(float), name);
    if (!buf) return NULL;
    if (lf_tensorset_own(ts, buf) < 0) { free(buf); return NULL; }
    lf_tensor *t = lf_tensorset_add(ts, name);
    if (!t) return NULL;
    t->dtype = LF_F32;
    t->ndim = 2;
    t->shape[0] = rows;
    t->shape[1] = cols;
    t->data = buf;
    t->nbytes = (size_t)rows * cols * sizeof(float);
    return t;
}

int lf_model_new_adapter(lf_model *m, const char *name, int r, float alpha, unsigned target_mask, uint64_t seed) {
    const int L = m->cfg.n_layers;
    if (m->n_adapters >= LF_MAX_ADAPTERS) {
        lf_set_error("at most %d adapters can be attached", LF_MAX_ADAPTERS);
        return -1;
    }
    if (r < 1 || r > 65536 || !(alpha > 0) || !(target_mask & ((1u << LF_NPROJ) - 1))) {
        lf_set_error("new adapter '%s': need r >= 1, lora_alpha > 0 and at least one target module", name);
        return -1;
    }
    for (int i = 0; i < m->n_adapters; i++)
        if (!strcmp(m->adapters[i].name, name)) {
            lf_set_error("adapter name '%s' used twice", name);
            return -1;
        }
    lf_adapter *a = &m->adapters[m->n_adapters];
    memset(a, 0, sizeof *a);
    lf_tensorset_init(&a->ts);
    a->name = lf_strdup(name);
    a->dir = lf_strdup("(new)");
    a->r = r;
    a->alpha = alpha;
    a->A = lf_calloc((size_t)L * LF_NPROJ, sizeof *a->A, "adapter table");
    a->B = lf_calloc((size_t)L * LF_NPROJ, sizeof *a->B, "adapter table");
    a->scale = lf_calloc((size_t)L * LF_NPROJ, sizeof *a->scale, "adapter table");
    if (!a->name || !a->dir || !a->A || !a->B || !a->scale) goto fail;
    uint64_t s = mix64(seed);
    char tn[192];
    for (int l = 0; l < L; l++) {
        for (int p = 0; p < LF_NPROJ; p++) {
            if (!(target_mask & (1u << p))) continue;
            const lf_mat *W = &m->layers[l].W[p];
            snprintf(tn, sizeof tn, "base_model.model.model.layers.%d.%s.lora_A.weight", l, lf_proj_path[p]);
            lf_tensor *A = owned_tensor(&a->ts, tn, r, W->cols);
            if (!A) goto fail;
            /* PEFT: kaiming_uniform(a = sqrt(5)) = uniform(-1/sqrt(in), 1/sqrt(in)); B = 0 */
            const float bound = 1.0f / sqrtf((float)W->cols);
            float *av = (float *)A->data;
            for (size_t i = 0; i < (size_t)r * W->cols; i++) {
                s = mix64(s);
                av[i] = (float)(((s >> 40) * (1.0 / 16777216.0)) * 2.0 - 1.0) * bound;
            }
            snprintf(tn, sizeof tn, "base_model.model.model.layers.%d.%s.lora_B.weight", l, lf_proj_path[p]);
            lf_tensor *B = owned_tensor(&a->ts, tn, W->rows, r);
            if (!B) goto fail;
            a->scale[l * LF_NPROJ + p] = alpha / (float)r;
        }
    }
    /* the table pointers are set once every tensor exists (the table moves
     * while it grows); the tensors were added as A, B per targeted (l, p) */
    int idx = 0;
    for (int l = 0; l < L; l++)
        for (int p = 0; p < LF_NPROJ; p++) {
            if (!(target_mask & (1u << p))) continue;
            a->A[l * LF_NPROJ + p] = &a->ts.tensors[idx++];
            a->B[l * LF_NPROJ + p] = &a->ts.tensors[idx++];
        }
    m->n_adapters++;
    if (lf_fusion_restack(m) != 0) {
        m->n_adapters--;
        goto fail;
    }
    return m->n_adapters - 1;
fail:
    free(a->name); free(a->dir); free(a->A); free(a->B); free(a->scale);
    lf_tensorset_free(&a->ts);
    memset(a, 0, sizeof *a);
    return -1;
}

static int write_json_file(const char *path, cJSON *j) {
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    if (!s) { lf_set_error("%s: out of memory", path); return -1; }
    lf_atomic a;
    if (lf_atomic_open(&a, path) != 0) { free(s); return -1; }
    lf_atomic_write(&a, s, strlen(s));
    lf_atomic_write(&a, "\n", 1);
    free(s);
    return lf_atomic_commit(&a);
}

int lf_make_dir(const char *dir) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        lf_set_error("%s: cannot create the folder: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* The weights of adapter i as the model uses them now (the stacks hold the
 * trained values), unstacked into PEFT's [r, in] / [out, r] tensors. */
int lf_adapter_save(const lf_model *m, int i, const char *dir) {
    if (i < 0 || i >= m->n_adapters) {
        lf_set_error("no adapter %d", i);
        return -1;
    }
    const lf_adapter *a = &m->adapters[i];
    const int L = m->cfg.n_layers;
    if (lf_make_dir(dir) != 0) return -1;
    lf_tensor *t = lf_calloc((size_t)L * LF_NPROJ * 2, sizeof *t, "adapter tensors");
    char (*names)[192] = lf_calloc((size_t)L * LF_NPROJ * 2, 192, "adapter tensor names");
    int n = 0, rc = -1;
    unsigned targets = 0;
    if (!t || !names) goto out;
    for (int l = 0; l < L; l++) {
        for (int p = 0; p < LF_NPROJ; p++) {
            const lf_lora_stack *st = &m->layers[l].lora[p];
            const int r = st->rank[i];
            if (!r) continue;
            targets |= 1u << p;
            const lf_mat *W = &m->layers[l].W[p];
            float *A = lf_malloc((size_t)r * W->cols * sizeof(float), "adapter");
            float *B = lf_malloc((size_t)W->rows * r * sizeof(float), "adapter");
            if (!A || !B) { free(A); free(B); goto out; }
            /* any stack dtype, 8-bit ones (--quantize-adapters q8) included */
            lf_mat_rows_f32(A, W->cols, &st->A, st->off[i], r, 0, W->cols);
            lf_mat_rows_f32(B, r, &st->B, 0, W->rows, st->off[i], r);
            snprintf(names[n], 192, "base_model.model.model.layers.%d.%s.lora_A.weight", l, lf_proj_path[p]);
            t[n] = (lf_tensor){.name = names[n], .dtype = LF_F32, .ndim = 2, .shape = {r, W->cols}, .data = A,
                               .nbytes = (size_t)r * W->cols * 4};
            n++;
            snprintf(names[n], 192, "base_model.model.model.layers.%d.%s.lora_B.weight", l, lf_proj_path[p]);
            t[n] = (lf_tensor){.name = names[n], .dtype = LF_F32, .ndim = 2, .shape = {W->rows, r}, .data = B,
                               .nbytes = (size_t)W->rows * r * 4};
            n++;
        }
    }
    char *wp = lf_path_join(dir, "adapter_model.safetensors");
    if (!wp) goto out;
    rc = lf_safetensors_write(wp, t, n, NULL, 0);
    free(wp);
    if (rc) goto out;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "peft_type", "LORA");
    cJSON_AddStringToObject(j, "task_type", "CAUSAL_LM");
    cJSON_AddNumberToObject(j, "r", a->r);
    cJSON_AddNumberToObject(j, "lora_alpha", a->alpha);
    cJSON_AddBoolToObject(j, "use_rslora", a->use_rslora);
    cJSON_AddBoolToObject(j, "fan_in_fan_out", 0);
    cJSON_AddStringToObject(j, "bias", "none");
    cJSON_AddNumberToObject(j, "lora_dropout", 0.0);
    cJSON_AddNullToObject(j, "modules_to_save");
    cJSON_AddNullToObject(j, "layers_to_transform");
    cJSON_AddBoolToObject(j, "inference_mode", 1);
    cJSON *tm = cJSON_AddArrayToObject(j, "target_modules");
    for (int p = 0; p < LF_NPROJ; p++)
        if (targets & (1u << p)) cJSON_AddItemToArray(tm, cJSON_CreateString(lf_proj_short[p]));
    char *cp = lf_path_join(dir, "adapter_config.json");
    rc = cp ? write_json_file(cp, j) : -1;
    if (!cp) cJSON_Delete(j);
    free(cp);
out:
    for (int q = 0; q < n; q++) free((void *)t[q].data);
    free(t);
    free(names);
    return rc;
}

/* ============================ whole models ============================ */

int lf_model_save(const lf_model *m, const char *dir) {
    const lf_config *c = &m->cfg;
    const int L = c->n_layers, H = c->hidden_size;
    if (lf_make_dir(dir) != 0) return -1;
    const int cap = 3 + L * (LF_NPROJ + 2);
    lf_tensor *t = lf_calloc((size_t)cap, sizeof *t, "model tensors");
    char (*names)[192] = lf_calloc((size_t)cap, 192, "model tensor names");
    float **bufs = lf_calloc((size_t)cap, sizeof *bufs, "model tensors");
    int n = 0, rc = -1;
    if (!t || !names || !bufs) goto out;
#define ADD_MAT(NAME, M)                                                                                   \
    do {                                                                                                   \
        snprintf(names[n], 192, "%s", NAME);                                                               \
        size_t cnt_ = (size_t)(M).rows * (M).cols;                                                         \
        bufs[n] = lf_malloc(cnt_ * sizeof(float), "model tensor");                                         \
        if (!bufs[n]) goto out;                                                                            \
        lf_mat_rows_f32(bufs[n], (M).cols, &(M), 0, (M).rows, 0, (M).cols); /* any layout */              \
        t[n] = (lf_tensor){.name = names[n], .dtype = LF_F32, .ndim = 2, .shape = {(M).rows, (M).cols},    \
                           .data = bufs[n], .nbytes = cnt_ * 4};                                           \
        n++;                                                                                               \
    } while (0)
#define ADD_VEC(NAME, V)                                                                                   \
    do {                                                                                                   \
        snprintf(names[n], 192, "%s", NAME);                                                               \
        t[n] = (lf_tensor){.name = names[n], .dtype = LF_F32, .ndim = 1, .shape = {H}, .data = (V),        \
                           .nbytes = (size_t)H * 4};                                                       \
        n++;                                                                                               \
    } while (0)
    char nm[192];
    ADD_MAT("model.embed_tokens.weight", m->embed);
    for (int l = 0; l < L; l++) {
        snprintf(nm, sizeof nm, "model.layers.%d.input_layernorm.weight", l);
        ADD_VEC(nm, m->layers[l].attn_norm);
        snprintf(nm, sizeof nm, "model.layers.%d.post_attention_layernorm.weight", l);
        ADD_VEC(nm, m->layers[l].ffn_norm);
        for (int p = 0; p < LF_NPROJ; p++) {
            snprintf(nm, sizeof nm, "model.layers.%d.%s.weight", l, lf_proj_path[p]);
            ADD_MAT(nm, m->layers[l].W[p]);
        }
    }
    ADD_VEC("model.norm.weight", m->final_norm);
    const int tied = c->tie_word_embeddings && m->lm_head.data == m->embed.data;
    if (!tied) ADD_MAT("lm_head.weight", m->lm_head);
#undef ADD_MAT
#undef ADD_VEC
    char *wp = lf_path_join(dir, "model.safetensors");
    if (!wp) goto out;
    rc = lf_safetensors_write(wp, t, n, NULL, 0);
    free(wp);
    if (rc) goto out;
    cJSON *j = cJSON_CreateObject();
    cJSON *ar = cJSON_AddArrayToObject(j, "architectures");
    cJSON_AddItemToArray(ar, cJSON_CreateString("LlamaForCausalLM"));
    cJSON_AddStringToObject(j, "model_type", "llama");
    cJSON_AddStringToObject(j, "hidden_act", "silu");
    cJSON_AddNumberToObject(j, "hidden_size", c->hidden_size);
    cJSON_AddNumberToObject(j, "intermediate_size", c->intermediate_size);
    cJSON_AddNumberToObject(j, "num_hidden_layers", c->n_layers);
    cJSON_AddNumberToObject(j, "num_attention_heads", c->n_heads);
    cJSON_AddNumberToObject(j, "num_key_value_heads", c->n_kv_heads);
    if (c->head_dim != c->hidden_size / c->n_heads) cJSON_AddNumberToObject(j, "head_dim", c->head_dim);
    cJSON_AddNumberToObject(j, "vocab_size", c->vocab_size);
    cJSON_AddNumberToObject(j, "max_position_embeddings", c->max_position_embeddings);
    cJSON_AddNumberToObject(j, "rms_norm_eps", c->rms_norm_eps);
    cJSON_AddNumberToObject(j, "rope_theta", c->rope_theta);
    cJSON_AddBoolToObject(j, "tie_word_embeddings", tied);
    cJSON_AddNumberToObject(j, "bos_token_id", c->bos_id);
    cJSON_AddNumberToObject(j, "eos_token_id", c->eos_id);
    cJSON_AddStringToObject(j, "torch_dtype", "float32");
    char *cp = lf_path_join(dir, "config.json");
    rc = cp ? write_json_file(cp, j) : -1;
    if (!cp) cJSON_Delete(j);
    free(cp);
out:
    for (int q = 0; bufs && q < n; q++) free(bufs[q]);
    free(bufs);
    free(t);
    free(names);
    return rc;
}
