/* synth.c: random-weight Llama models in Hugging Face layout, with PEFT
 * adapters, a LoRA-Flow gate and a byte-level tokenizer, written as a
 * stream so that a 7B model never has to fit in memory. */
#include "loraflow.h"
#include "../core/util.h"
#include "../io/atomic.h"
#include "../io/tensorset.h"
#include "../tensor/kernels.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int lf_synth_shape(const char *name, lf_config *c) {
    memset(c, 0, sizeof *c);
    c->rms_norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->bos_id = 1;
    c->eos_id = 2;
    if (!strcmp(name, "tiny")) {
        *c = (lf_config){256, 688, 4, 8, 4, 32, 512, 1024, 1e-5f, 10000.0f, 0, 1, 2};
    } else if (!strcmp(name, "fixture")) {
        *c = (lf_config){64, 176, 3, 4, 4, 16, 32000, 256, 1e-5f, 10000.0f, 0, 1, 2};
    } else if (!strcmp(name, "1b")) {
        *c = (lf_config){2048, 5632, 22, 32, 4, 64, 32000, 2048, 1e-5f, 10000.0f, 0, 1, 2};
    } else if (!strcmp(name, "7b")) {
        *c = (lf_config){4096, 11008, 32, 32, 32, 128, 32000, 4096, 1e-5f, 10000.0f, 0, 1, 2};
    } else {
        lf_set_error("unknown shape '%s' (known: tiny, fixture, 1b, 7b)", name);
        return -1;
    }
    return 0;
}

/* ============================ random numbers ============================ */

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Uniform on [-a, a]: the standard deviation is a / sqrt(3). */
static float rng_sym(uint64_t *s, float a) {
    return (float)(((rng_next(s) >> 40) * (1.0 / 16777216.0)) * 2.0 - 1.0) * a;
}

/* ============================ streaming safetensors ============================ */

typedef struct {
    char name[160];
    lf_dtype dtype;
    int ndim;
    int64_t shape[2];
    float std;      /* random values of this standard deviation, or */
    float value;    /* this constant when std == 0 */
    const int32_t (*tie)[2]; /* or NULL: rows (dst, src), dst becomes a copy of src */
    int n_tie;
} synth_tensor;

typedef struct {
    void (*progress)(size_t, size_t, void *);
    void *user;
    size_t done, total;
} synth_progress;

static size_t st_bytes(const synth_tensor *t) {
    size_t n = (size_t)t->shape[0] * (size_t)(t->ndim == 2 ? t->shape[1] : 1);
    return n * lf_dtype_size(t->dtype);
}

static int write_tensors(const char *path, const synth_tensor *t, int n, const char *const *meta, int nmeta,
                         uint64_t *rng, synth_progress *pr) {
    cJSON *h = cJSON_CreateObject();
    cJSON *md = cJSON_AddObjectToObject(h, "__metadata__");
    cJSON_AddStringToObject(md, "format", "pt");
    for (int i = 0; i + 1 < nmeta; i += 2) cJSON_AddStringToObject(md, meta[i], meta[i + 1]);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        cJSON *e = cJSON_AddObjectToObject(h, t[i].name);
        cJSON_AddStringToObject(e, "dtype", lf_dtype_name(t[i].dtype));
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < t[i].ndim; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t[i].shape[d]));
        cJSON *of = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
        off += st_bytes(&t[i]);
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
    }
    char *js = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    if (!js) { lf_set_error("%s: out of memory building the header", path); return -1; }
    size_t hl = strlen(js), padded = (hl + 7) & ~(size_t)7;
    lf_atomic a;
    if (lf_atomic_open(&a, path) != 0) { free(js); return -1; }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)(padded >> (8 * i));
    lf_atomic_write(&a, len8, 8);
    lf_atomic_write(&a, js, hl);
    for (size_t i = hl; i < padded; i++) lf_atomic_write(&a, " ", 1);
    free(js);
    enum { CHUNK = 1 << 20 };
    float *f = lf_malloc(CHUNK * sizeof(float), "synthetic weights");
    uint16_t *h16 = lf_malloc(CHUNK * sizeof(uint16_t), "synthetic weights");
    if (!f || !h16) { free(f); free(h16); lf_atomic_abort(&a); return -1; }
    const float amp_of_std = sqrtf(3.0f);
    for (int i = 0; i < n && !a.failed; i++) {
        size_t total = st_bytes(&t[i]) / lf_dtype_size(t[i].dtype);
        /* with tied rows: the whole tensor drawn first, then the copied rows
         * (from the drawn values), then written like any other */
        float *all = NULL;
        if (t[i].n_tie > 0) {
            const size_t cols = (size_t)t[i].shape[1];
            float *orig = NULL;
            all = lf_malloc(total * sizeof(float), "synthetic weights");
            if (all) orig = lf_malloc(total * sizeof(float), "synthetic weights");
            if (!orig) { free(all); free(f); free(h16); lf_atomic_abort(&a); return -1; }
            for (size_t j = 0; j < total; j++) orig[j] = all[j] = rng_sym(rng, t[i].std * amp_of_std);
            for (int k = 0; k < t[i].n_tie; k++)
                memcpy(all + (size_t)t[i].tie[k][0] * cols, orig + (size_t)t[i].tie[k][1] * cols, cols * sizeof(float));
            free(orig);
        }
        for (size_t done = 0; done < total && !a.failed; done += CHUNK) {
            size_t m = total - done < CHUNK ? total - done : CHUNK;
            const float *v = f;
            if (all) v = all + done;
            else
                for (size_t j = 0; j < m; j++) f[j] = t[i].std > 0 ? rng_sym(rng, t[i].std * amp_of_std) : t[i].value;
            if (t[i].dtype == LF_F32) {
                lf_atomic_write(&a, v, m * 4);
            } else {
                for (size_t j = 0; j < m; j++) h16[j] = t[i].dtype == LF_F16 ? lf_f32_to_f16(v[j]) : lf_f32_to_bf16(v[j]);
                lf_atomic_write(&a, h16, m * 2);
            }
            if (pr && pr->progress) {
                pr->done += m * lf_dtype_size(t[i].dtype);
                pr->progress(pr->done, pr->total, pr->user);
            }
        }
        free(all);
    }
    free(f);
    free(h16);
    return lf_atomic_commit(&a);
}

static int write_json(const char *path, cJSON *j) {
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

static int mkdir_p(const char *dir) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        lf_set_error("%s: cannot create the folder: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* ============================ the files ============================ */

static int write_config(const char *dir, const lf_config *c, lf_dtype dt) {
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
    cJSON_AddBoolToObject(j, "tie_word_embeddings", c->tie_word_embeddings);
    cJSON_AddNumberToObject(j, "bos_token_id", c->bos_id);
    cJSON_AddNumberToObject(j, "eos_token_id", c->eos_id);
    cJSON_AddStringToObject(j, "torch_dtype", dt == LF_F32 ? "float32" : dt == LF_F16 ? "float16" : "bfloat16");
    char *p = lf_path_join(dir, "config.json");
    if (!p) { cJSON_Delete(j); return -1; }
    int rc = write_json(p, j);
    free(p);
    return rc;
}

/* A byte-level Llama-style tokenizer.json: <unk>, <s>, </s>, the 256 byte
 * pieces, then printable ASCII characters (space as ▁), then fillers, so
 * that every id of the model's vocabulary has a piece. */
static int write_tokenizer(const char *dir, int V) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "version", "1.0");
    cJSON *added = cJSON_AddArrayToObject(j, "added_tokens");
    static const char *special[3] = {"<unk>", "<s>", "</s>"};
    for (int i = 0; i < 3; i++) {
        cJSON *t = cJSON_CreateObject();
        cJSON_AddNumberToObject(t, "id", i);
        cJSON_AddStringToObject(t, "content", special[i]);
        cJSON_AddBoolToObject(t, "special", 1);
        cJSON_AddItemToArray(added, t);
    }
    cJSON *model = cJSON_AddObjectToObject(j, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddBoolToObject(model, "byte_fallback", V >= 3 + 256); /* a tiny vocabulary has no room for the byte pieces */
    cJSON_AddBoolToObject(model, "fuse_unk", 1);
    cJSON_AddStringToObject(model, "unk_token", "<unk>");
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    cJSON_AddArrayToObject(model, "merges");
    int id = 0;
    for (int i = 0; i < 3 && id < V; i++) cJSON_AddNumberToObject(vocab, special[i], id++);
    for (int b = 0; b < 256 && id < V; b++) {
        char piece[8];
        snprintf(piece, sizeof piece, "<0x%02X>", b);
        cJSON_AddNumberToObject(vocab, piece, id++);
    }
    for (int ch = 0x20; ch < 0x7f && id < V; ch++) {
        char piece[4] = {(char)ch, 0};
        if (ch == ' ') strcpy(piece, "\xe2\x96\x81");
        cJSON_AddNumberToObject(vocab, piece, id++);
    }
    for (int f = 0; id < V; f++) {
        char piece[32];
        snprintf(piece, sizeof piece, "<extra_%d>", f);
        cJSON_AddNumberToObject(vocab, piece, id++);
    }
    char *p = lf_path_join(dir, "tokenizer.json");
    if (!p) { cJSON_Delete(j); return -1; }
    int rc = write_json(p, j);
    free(p);
    return rc;
}

static const char *const proj_path[7] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj",
};

/* [out, in] of projection p. */
static void proj_shape(const lf_config *c, int p, int64_t *out, int64_t *in) {
    const int64_t H = c->hidden_size, I = c->intermediate_size;
    const int64_t qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
    const int64_t s[7][2] = {{qd, H}, {kvd, H}, {kvd, H}, {H, qd}, {I, H}, {I, H}, {H, I}};
    *out = s[p][0];
    *in = s[p][1];
}

static int write_base(const char *dir, const lf_synth_spec *sp, uint64_t *rng, synth_progress *pr) {
    const lf_config *c = &sp->cfg;
    int n = 0, cap = 3 + c->n_layers * 9;
    synth_tensor *t = lf_calloc((size_t)cap, sizeof *t, "tensor list");
    if (!t) return -1;
    const float std = 0.02f;
    t[n++] = (synth_tensor){"model.embed_tokens.weight", sp->dtype, 2, {c->vocab_size, c->hidden_size}, 1.0f, 0,
                            sp->tie, sp->tie ? sp->n_tie : 0};
    for (int l = 0; l < c->n_layers; l++) {
        snprintf(t[n].name, sizeof t[n].name, "model.layers.%d.input_layernorm.weight", l);
        t[n].dtype = sp->dtype; t[n].ndim = 1; t[n].shape[0] = c->hidden_size; t[n].value = 1.0f; n++;
        for (int p = 0; p < 7; p++) {
            snprintf(t[n].name, sizeof t[n].name, "model.layers.%d.%s.weight", l, proj_path[p]);
            t[n].dtype = sp->dtype; t[n].ndim = 2;
            proj_shape(c, p, &t[n].shape[0], &t[n].shape[1]);
            t[n].std = 1.0f / sqrtf((float)t[n].shape[1]);
            n++;
            if (p == 3) {
                snprintf(t[n].name, sizeof t[n].name, "model.layers.%d.post_attention_layernorm.weight", l);
                t[n].dtype = sp->dtype; t[n].ndim = 1; t[n].shape[0] = c->hidden_size; t[n].value = 1.0f; n++;
            }
        }
    }
    t[n++] = (synth_tensor){.name = "model.norm.weight", .dtype = sp->dtype, .ndim = 1, .shape = {c->hidden_size, 0},
                            .value = 1.0f};
    if (!c->tie_word_embeddings)
        t[n++] = (synth_tensor){.name = "lm_head.weight", .dtype = sp->dtype, .ndim = 2,
                                .shape = {c->vocab_size, c->hidden_size}, .std = std * 4};
    char *p = lf_path_join(dir, "model.safetensors");
    int rc = p ? write_tensors(p, t, n, NULL, 0, rng, pr) : -1;
    free(p);
    free(t);
    return rc;
}

static int write_adapter(const char *dir, int idx, const lf_synth_spec *sp, uint64_t *rng, synth_progress *pr) {
    const lf_config *c = &sp->cfg;
    char sub[64];
    snprintf(sub, sizeof sub, "lora_%d", idx);
    char *ad = lf_path_join(dir, sub);
    if (!ad || mkdir_p(ad) != 0) { free(ad); return -1; }
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "peft_type", "LORA");
    cJSON_AddNumberToObject(j, "r", sp->rank);
    cJSON_AddNumberToObject(j, "lora_alpha", sp->alpha);
    cJSON_AddBoolToObject(j, "use_rslora", 0);
    cJSON_AddBoolToObject(j, "fan_in_fan_out", 0);
    cJSON_AddStringToObject(j, "bias", "none");
    cJSON_AddStringToObject(j, "task_type", "CAUSAL_LM");
    cJSON *tm = cJSON_AddArrayToObject(j, "target_modules");
    static const char *mods[7] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    for (int p = 0; p < 7; p++) cJSON_AddItemToArray(tm, cJSON_CreateString(mods[p]));
    char *cp = lf_path_join(ad, "adapter_config.json");
    int rc = cp ? write_json(cp, j) : -1;
    free(cp);
    if (rc) { free(ad); return -1; }
    int n = 0;
    synth_tensor *t = lf_calloc((size_t)c->n_layers * 14, sizeof *t, "tensor list");
    if (!t) { free(ad); return -1; }
    for (int l = 0; l < c->n_layers; l++) {
        for (int p = 0; p < 7; p++) {
            int64_t out, in;
            proj_shape(c, p, &out, &in);
            t[n] = (synth_tensor){.dtype = sp->adapter_dtype, .ndim = 2, .shape = {sp->rank, in},
                                  .std = 1.0f / sqrtf((float)in)};
            snprintf(t[n].name, sizeof t[n].name, "base_model.model.model.layers.%d.%s.lora_A.weight", l, proj_path[p]);
            n++;
            t[n] = (synth_tensor){.dtype = sp->adapter_dtype, .ndim = 2, .shape = {out, sp->rank},
                                  .std = 1.0f / sqrtf((float)sp->rank)};
            snprintf(t[n].name, sizeof t[n].name, "base_model.model.model.layers.%d.%s.lora_B.weight", l, proj_path[p]);
            n++;
        }
    }
    char *wp = lf_path_join(ad, "adapter_model.safetensors");
    rc = wp ? write_tensors(wp, t, n, NULL, 0, rng, pr) : -1;
    free(wp);
    free(t);
    free(ad);
    return rc;
}

static int write_gate(const char *dir, const lf_synth_spec *sp, uint64_t *rng) {
    const lf_config *c = &sp->cfg;
    const int k = sp->n_adapters;
    synth_tensor *t = lf_calloc((size_t)c->n_layers * 2, sizeof *t, "tensor list");
    if (!t) return -1;
    int n = 0;
    for (int l = 0; l < c->n_layers; l++) {
        t[n] = (synth_tensor){.dtype = LF_F32, .ndim = 2, .shape = {k, c->hidden_size}, .std = 1.0f};
        snprintf(t[n].name, sizeof t[n].name, "encoder.layers.%d.lora_fusion_gate.weight", l);
        n++;
        t[n] = (synth_tensor){.dtype = LF_F32, .ndim = 2, .shape = {1, k}, .std = 0.1f};
        snprintf(t[n].name, sizeof t[n].name, "encoder.layers.%d.weight_bias", l);
        n++;
    }
    char names[16 * 12] = "", kb[16], lb[16], hb[16];
    for (int i = 0; i < k; i++)
        snprintf(names + strlen(names), sizeof names - strlen(names), "%slora_%d", i ? "," : "", i);
    snprintf(kb, sizeof kb, "%d", k);
    snprintf(lb, sizeof lb, "%d", c->n_layers);
    snprintf(hb, sizeof hb, "%d", c->hidden_size);
    const char *meta[] = {"loraflow", "gate", "adapters", names, "temperature", "1", "k", kb,
                          "num_layers", lb, "hidden_size", hb};
    char *p = lf_path_join(dir, "gate.safetensors");
    int rc = p ? write_tensors(p, t, n, meta, 12, rng, NULL) : -1;
    free(p);
    free(t);
    return rc;
}

int lf_synth_model(const char *dir, const lf_synth_spec *sp,
                   void (*progress)(size_t, size_t, void *), void *user) {
    const lf_config *c = &sp->cfg;
    if (c->hidden_size <= 0 || c->n_layers <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 ||
        c->n_heads % c->n_kv_heads || c->head_dim <= 0 || c->vocab_size < 3 || c->intermediate_size <= 0) {
        lf_set_error("synthetic model: inconsistent shape");
        return -1;
    }
    if (sp->n_adapters < 0 || sp->n_adapters > 16 || (sp->n_adapters && sp->rank <= 0)) {
        lf_set_error("synthetic model: need 0..16 adapters and a positive rank");
        return -1;
    }
    for (int k = 0; sp->tie && k < sp->n_tie; k++)
        if (sp->tie[k][0] < 0 || sp->tie[k][0] >= c->vocab_size || sp->tie[k][1] < 0 ||
            sp->tie[k][1] >= c->vocab_size) {
            lf_set_error("synthetic model: tied pair %d (%d, %d) is outside the vocabulary [0, %d)", k + 1,
                         sp->tie[k][0], sp->tie[k][1], c->vocab_size);
            return -1;
        }
    if (mkdir_p(dir) != 0) return -1;
    uint64_t rng = sp->seed * 0x2545F4914F6CDD1DULL + 1;
    synth_progress pr = {progress, user, 0, 0};
    /* total bytes, for the progress callback */
    size_t per_layer = 0, adapter = 0;
    for (int p = 0; p < 7; p++) {
        int64_t out, in;
        proj_shape(c, p, &out, &in);
        per_layer += (size_t)(out * in) * lf_dtype_size(sp->dtype);
        adapter += (size_t)(sp->rank * (in + out)) * lf_dtype_size(sp->adapter_dtype);
    }
    pr.total = (size_t)c->n_layers * per_layer +
               (size_t)c->vocab_size * c->hidden_size * lf_dtype_size(sp->dtype) * (c->tie_word_embeddings ? 1 : 2) +
               (size_t)sp->n_adapters * c->n_layers * adapter;
    if (write_config(dir, c, sp->dtype) || write_tokenizer(dir, c->vocab_size) || write_base(dir, sp, &rng, &pr))
        return -1;
    for (int i = 0; i < sp->n_adapters; i++)
        if (write_adapter(dir, i, sp, &rng, &pr)) return -1;
    if (sp->n_adapters > 0 && sp->gate && write_gate(dir, sp, &rng)) return -1;
    return 0;
}
