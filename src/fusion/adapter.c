/* adapter.c: PEFT LoRA folders (adapter_config.json + adapter weights) and
 * the stacked per-projection layout the fused forward pass uses. */
#include "fusion.h"
#include "../core/util.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* ============================ adapter_config.json ============================ */

#define ADAPTER_CONFIG_LIMIT ((size_t)16 << 20) /* bytes of adapter_config.json */

static int json_nonempty_object(const cJSON *o) {
    return cJSON_IsObject(o) && o->child != NULL;
}

/* Which of the seven projections the config targets (target_modules as a
 * list of names or a single name); layers: -1 = all, else bitmap per layer. */
static int read_adapter_config(const char *path, lf_adapter *a, int targets[LF_NPROJ],
                               unsigned char *layer_on, int L, int *has_rank_pattern) {
    size_t len;
    char *txt = lf_read_file_limit(path, &len, ADAPTER_CONFIG_LIMIT, "ADAPTER_CONFIG_LIMIT in src/fusion/adapter.c");
    if (!txt) return -1;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(txt, len, &end, 0);
    if (!j) {
        lf_json_parse_error(path, "not valid JSON", txt, len, end);
        free(txt);
        return -1;
    }
    free(txt);
    if (!cJSON_IsObject(j)) {
        lf_set_error("%s: not a JSON object", path);
        cJSON_Delete(j);
        return -1;
    }
    int rc = -1;
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(j, "peft_type");
    if (pt && !(cJSON_IsString(pt) && !strcmp(pt->valuestring, "LORA"))) {
        lf_set_error("%s: peft_type is %s, expected \"LORA\"", path,
                     cJSON_IsString(pt) ? pt->valuestring : "not a string");
        goto out;
    }
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "r");
    if (!cJSON_IsNumber(r) || r->valuedouble < 1 || r->valuedouble > 65536 || r->valuedouble != (int)r->valuedouble) {
        lf_set_error("%s: field 'r' must be a positive integer", path);
        goto out;
    }
    a->r = (int)r->valuedouble;
    const cJSON *al = cJSON_GetObjectItemCaseSensitive(j, "lora_alpha");
    if (al && !cJSON_IsNumber(al)) {
        lf_set_error("%s: field 'lora_alpha' must be a number", path);
        goto out;
    }
    /* range-checked before narrowing: a double beyond FLT_MAX is undefined as float */
    if (al && !(fabs(al->valuedouble) <= 1e30)) {
        lf_set_error("%s: field 'lora_alpha' is %g, expected a finite number of magnitude at most 1e30", path,
                     al->valuedouble);
        goto out;
    }
    a->alpha = al ? (float)al->valuedouble : 8.0f; /* PEFT's default */
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(j, "use_rslora");
    a->use_rslora = cJSON_IsTrue(rs);
    const cJSON *bias = cJSON_GetObjectItemCaseSensitive(j, "bias");
    if (cJSON_IsString(bias) && strcmp(bias->valuestring, "none")) {
        lf_set_error("%s: bias \"%s\" is not supported (only \"none\")", path, bias->valuestring);
        goto out;
    }
    const cJSON *mts = cJSON_GetObjectItemCaseSensitive(j, "modules_to_save");
    if (mts && !cJSON_IsNull(mts) && !(cJSON_IsArray(mts) && cJSON_GetArraySize(mts) == 0)) {
        lf_set_error("%s: modules_to_save is not supported (it replaces whole base modules)", path);
        goto out;
    }
    if (json_nonempty_object(cJSON_GetObjectItemCaseSensitive(j, "alpha_pattern"))) {
        lf_set_error("%s: alpha_pattern is not supported (per-module lora_alpha)", path);
        goto out;
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "use_dora"))) {
        lf_set_error("%s: use_dora is not supported", path);
        goto out;
    }
    *has_rank_pattern = json_nonempty_object(cJSON_GetObjectItemCaseSensitive(j, "rank_pattern"));

    const cJSON *tm = cJSON_GetObjectItemCaseSensitive(j, "target_modules");
    for (int p = 0; p < LF_NPROJ; p++) targets[p] = 0;
    if (cJSON_IsArray(tm)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, tm) {
            if (!cJSON_IsString(it)) {
                lf_set_error("%s: target_modules must hold strings", path);
                goto out;
            }
            int found = 0;
            for (int p = 0; p < LF_NPROJ; p++)
                if (!strcmp(it->valuestring, lf_proj_short[p])) targets[p] = found = 1;
            if (!found) {
                lf_set_error("%s: target module '%s' is not one of q_proj, k_proj, v_proj, o_proj, "
                             "gate_proj, up_proj, down_proj", path, it->valuestring);
                goto out;
            }
        }
    } else if (cJSON_IsString(tm) && !strcmp(tm->valuestring, "all-linear")) {
        for (int p = 0; p < LF_NPROJ; p++) targets[p] = 1;
    } else if (cJSON_IsString(tm)) {
        /* A single regular expression: decided by the tensors present. */
        for (int p = 0; p < LF_NPROJ; p++) targets[p] = 1;
    } else {
        lf_set_error("%s: field 'target_modules' missing or not a list", path);
        goto out;
    }

    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(j, "layers_to_transform");
    memset(layer_on, 1, (size_t)L);
    if (cJSON_IsNumber(lt) || cJSON_IsArray(lt)) {
        memset(layer_on, 0, (size_t)L);
        const cJSON *it;
        if (cJSON_IsNumber(lt)) {
            if (lt->valueint >= 0 && lt->valueint < L) layer_on[lt->valueint] = 1;
        } else {
            cJSON_ArrayForEach(it, lt) {
                if (!cJSON_IsNumber(it)) {
                    lf_set_error("%s: layers_to_transform must hold integers", path);
                    goto out;
                }
                if (it->valueint >= 0 && it->valueint < L) layer_on[it->valueint] = 1;
            }
        }
    }
    rc = 0;
out:
    cJSON_Delete(j);
    return rc;
}

/* ============================ tensor names ============================ */

/* Parse "base_model.model.model.layers.{l}.{self_attn|mlp}.{proj}.lora_{A|B}[.default].weight".
 * Returns 0 and sets l, p, isB; -1 when the name has another form. */
static int parse_lora_name(const char *name, int *l, int *p, int *isB) {
    const char *pre = "base_model.model.model.layers.";
    size_t n = strlen(pre);
    if (strncmp(name, pre, n)) return -1;
    const char *s = name + n;
    char *end;
    long li = strtol(s, &end, 10);
    if (end == s || *end != '.' || li < 0 || li > 1000000) return -1;
    s = end + 1;
    for (int q = 0; q < LF_NPROJ; q++) {
        size_t m = strlen(lf_proj_path[q]);
        if (strncmp(s, lf_proj_path[q], m) || s[m] != '.') continue;
        const char *rest = s + m + 1;
        static const char *forms[4] = {"lora_A.weight", "lora_B.weight", "lora_A.default.weight",
                                       "lora_B.default.weight"};
        for (int f = 0; f < 4; f++) {
            if (!strcmp(rest, forms[f])) {
                *l = (int)li;
                *p = q;
                *isB = f & 1;
                return 0;
            }
        }
        return -1;
    }
    return -1;
}

/* ============================ loading ============================ */

static void adapter_free(lf_adapter *a, int keep_name) {
    if (!keep_name) { free(a->name); free(a->dir); }
    lf_tensorset_free(&a->ts);
    free(a->A); free(a->B); free(a->scale);
    memset(a, 0, sizeof *a);
}

static int load_adapter(lf_model *m, lf_adapter *a, const char *name, const char *dir) {
    const lf_config *c = &m->cfg;
    const int L = c->n_layers;
    int targets[LF_NPROJ], has_rank_pattern = 0;
    unsigned char *layer_on = lf_calloc((size_t)L, 1, "layer list");
    char *cfg = lf_path_join(dir, "adapter_config.json");
    a->name = lf_strdup(name);
    a->dir = lf_strdup(dir);
    a->A = lf_calloc((size_t)L * LF_NPROJ, sizeof *a->A, "adapter table");
    a->B = lf_calloc((size_t)L * LF_NPROJ, sizeof *a->B, "adapter table");
    a->scale = lf_calloc((size_t)L * LF_NPROJ, sizeof *a->scale, "adapter table");
    lf_tensorset_init(&a->ts);
    int rc = -1;
    if (!layer_on || !cfg || !a->name || !a->dir || !a->A || !a->B || !a->scale) goto out;
    if (!lf_file_exists(cfg)) {
        lf_set_error("%s: adapter_config.json not found (expected a PEFT LoRA folder)", dir);
        goto out;
    }
    if (read_adapter_config(cfg, a, targets, layer_on, L, &has_rank_pattern) != 0) goto out;

    char *st = lf_path_join(dir, "adapter_model.safetensors");
    char *bin = lf_path_join(dir, "adapter_model.bin");
    if (!st || !bin) { free(st); free(bin); goto out; }
    int r;
    if (lf_file_exists(st)) r = lf_safetensors_read(st, &a->ts);
    else if (lf_file_exists(bin)) r = lf_pt_read(bin, &a->ts);
    else { lf_set_error("%s: neither adapter_model.safetensors nor adapter_model.bin found", dir); r = -1; }
    free(st); free(bin);
    if (r != 0) goto out;

    for (int i = 0; i < a->ts.n; i++) {
        const lf_tensor *t = &a->ts.tensors[i];
        const char *file = a->ts.paths[t->source];
        int l, p, isB;
        if (parse_lora_name(t->name, &l, &p, &isB) != 0) {
            lf_set_error("%s: adapter '%s': tensor '%s' is not a LoRA weight of a Llama decoder projection "
                         "(only lora_A/lora_B of q,k,v,o,gate,up,down_proj are supported)", file, name, t->name);
            goto out;
        }
        if (l >= L) {
            lf_set_error("%s: adapter '%s': tensor '%s' is for layer %d, but the model has %d layers",
                         file, name, t->name, l, L);
            goto out;
        }
        if (t->dtype != LF_F32 && t->dtype != LF_F16 && t->dtype != LF_BF16) {
            lf_set_error("%s: adapter '%s': tensor '%s' has dtype %s, expected F32, F16 or BF16",
                         file, name, t->name, lf_dtype_name(t->dtype));
            goto out;
        }
        const lf_tensor **slot = isB ? &a->B[l * LF_NPROJ + p] : &a->A[l * LF_NPROJ + p];
        if (*slot) {
            lf_set_error("%s: adapter '%s': tensor '%s' appears twice", file, name, t->name);
            goto out;
        }
        *slot = t;
    }
    int any = 0;
    for (int l = 0; l < L; l++) {
        for (int p = 0; p < LF_NPROJ; p++) {
            const lf_tensor *A = a->A[l * LF_NPROJ + p], *B = a->B[l * LF_NPROJ + p];
            if (!A && !B) continue;
            const char *file = a->ts.paths[(A ? A : B)->source];
            if (!A || !B) {
                lf_set_error("%s: adapter '%s': layer %d %s has lora_%s but no lora_%s", file, name, l,
                             lf_proj_short[p], A ? "A" : "B", A ? "B" : "A");
                goto out;
            }
            if (!targets[p] || !layer_on[l]) {
                lf_set_error("%s: adapter '%s': layer %d %s has weights but adapter_config.json does not "
                             "target it", file, name, l, lf_proj_short[p]);
                goto out;
            }
            const lf_mat *W = &m->layers[l].W[p];
            /* with a rank_pattern the rank of each module is its lora_A's row count */
            int rank = A->ndim == 2 && A->shape[0] >= 1 && A->shape[0] <= 65536 ? (int)A->shape[0] : -1;
            if (!has_rank_pattern) rank = a->r;
            if (rank < 0) {
                char s0[96];
                lf_set_error("%s: adapter '%s': %s has shape %s; with a rank_pattern its first dimension is "
                             "the rank, which must be 1..65536", file, name, A->name,
                             lf_shape_str(A->shape, A->ndim, s0, sizeof s0));
                goto out;
            }
            int64_t ea[2] = {rank, W->cols}, eb[2] = {W->rows, rank};
            char s1[96], s2[96];
            if (A->ndim != 2 || A->shape[0] != ea[0] || A->shape[1] != ea[1]) {
                lf_set_error("%s: adapter '%s': %s has shape %s, expected %s (r = %d, in = %d)", file, name,
                             A->name, lf_shape_str(A->shape, A->ndim, s1, sizeof s1),
                             lf_shape_str(ea, 2, s2, sizeof s2), rank, W->cols);
                goto out;
            }
            if (B->ndim != 2 || B->shape[0] != eb[0] || B->shape[1] != eb[1]) {
                lf_set_error("%s: adapter '%s': %s has shape %s, expected %s (out = %d, r = %d)", file, name,
                             B->name, lf_shape_str(B->shape, B->ndim, s1, sizeof s1),
                             lf_shape_str(eb, 2, s2, sizeof s2), W->rows, rank);
                goto out;
            }
            a->scale[l * LF_NPROJ + p] = a->use_rslora ? a->alpha / sqrtf((float)rank) : a->alpha / (float)rank;
            any = 1;
        }
    }
    if (!any) {
        lf_set_error("%s: adapter '%s' holds no LoRA weights", dir, name);
        goto out;
    }
    rc = 0;
out:
    free(layer_on);
    free(cfg);
    return rc;
}

int lf_model_add_adapter(lf_model *m, const char *name, const char *dir) {
    if (m->n_adapters >= LF_MAX_ADAPTERS) {
        lf_set_error("at most %d adapters can be attached", LF_MAX_ADAPTERS);
        return -1;
    }
    for (int i = 0; i < m->n_adapters; i++) {
        if (!strcmp(m->adapters[i].name, name)) {
            lf_set_error("adapter name '%s' used twice", name);
            return -1;
        }
    }
    lf_adapter *a = &m->adapters[m->n_adapters];
    memset(a, 0, sizeof *a);
    if (load_adapter(m, a, name, dir) != 0) {
        adapter_free(a, 0);
        return -1;
    }
    m->n_adapters++;
    if (lf_fusion_restack(m) != 0) {
        m->n_adapters--;
        adapter_free(a, 0);
        lf_fusion_restack(m);
        return -1;
    }
    return m->n_adapters - 1;
}

void lf_adapters_free(lf_model *m) {
    for (int i = 0; i < m->n_adapters; i++) adapter_free(&m->adapters[i], 0);
    m->n_adapters = 0;
}

/* ============================ stacking ============================ */

/* Zeroed memory for one stacked factor, freed with free().  Decoding
 * streams every stack once per token right after megabytes of base
 * weights, which evict the page-table entries of 4 KiB pages: the stacks
 * then read at half the speed of the base weights.  Stacks of 256 KiB and
 * more therefore get their own transparent huge pages (rounded up to
 * 2 MiB: about 1.6x the stacks' size in memory, 0.5 GB for two rank-64
 * adapters on a 7B model). */
static void *stack_alloc(size_t bytes, const char *what) {
    if (bytes < (256u << 10)) return lf_calloc(bytes ? bytes : 1, 1, what);
    void *p = lf_huge_alloc(bytes);
    if (!p) {
        lf_set_error("out of memory (%s: %zu bytes)", what, bytes);
        return NULL;
    }
    memset(p, 0, bytes);
    return p;
}

/* A stack in 8 bits (--quantize-adapters q8): the layout of the Q8 base
 * weights, whose rows of at most 256 values (B_cat's k x rank) are one
 * group of their own blocks: 136 bytes a row of 128 against 256 in F16. */
static int quantize_stack(lf_mat *M) {
    void *q = stack_alloc(lf_q8_bytes(M->rows, M->cols), "8-bit stacked adapters");
    if (!q) return -1;
    lf_mat Q;
    lf_q8_quantize(q, M, &Q);
    free((void *)M->data);
    *M = Q;
    return 0;
}

int lf_fusion_restack(lf_model *m) {
    const lf_config *c = &m->cfg;
    for (int l = 0; l < c->n_layers; l++) {
        for (int p = 0; p < LF_NPROJ; p++) {
            lf_lora_stack *st = &m->layers[l].lora[p];
            const lf_mat *W = &m->layers[l].W[p];
            free((void *)st->A.data);
            free((void *)st->B.data);
            memset(st, 0, sizeof *st);
            int R = 0;
            for (int i = 0; i < m->n_adapters; i++) {
                const lf_tensor *A = m->adapters[i].A[l * LF_NPROJ + p];
                st->off[i] = R;
                st->rank[i] = A ? (int)A->shape[0] : 0;
                st->scale[i] = A ? m->adapters[i].scale[l * LF_NPROJ + p] : 0.0f;
                R += st->rank[i];
            }
            st->R = R;
            if (R == 0) continue;
            /* Keep the adapters' own dtype when they share one (half the
             * memory for F16/BF16 adapters); mixed dtypes stack as F32. */
            lf_dtype dt = LF_F32;
            int first = 1, mixed = 0;
            for (int i = 0; i < m->n_adapters; i++) {
                const lf_tensor *A = m->adapters[i].A[l * LF_NPROJ + p];
                const lf_tensor *B = m->adapters[i].B[l * LF_NPROJ + p];
                if (!A) continue;
                if (first) { dt = A->dtype; first = 0; }
                if (A->dtype != dt || B->dtype != dt) mixed = 1;
            }
            if (mixed) dt = LF_F32;
            const size_t es = lf_dtype_size(dt);
            uint8_t *Ac = stack_alloc((size_t)R * W->cols * es, "stacked lora_A");
            uint8_t *Bc = stack_alloc((size_t)W->rows * R * es, "stacked lora_B");
            if (!Ac || !Bc) { free(Ac); free(Bc); st->R = 0; return -1; }
            for (int i = 0; i < m->n_adapters; i++) {
                const lf_tensor *A = m->adapters[i].A[l * LF_NPROJ + p];
                const lf_tensor *B = m->adapters[i].B[l * LF_NPROJ + p];
                if (!A) continue;
                const int r = st->rank[i];
                if (dt == A->dtype) {
                    memcpy(Ac + (size_t)st->off[i] * W->cols * es, A->data, (size_t)r * W->cols * es);
                    for (int o = 0; o < W->rows; o++)
                        memcpy(Bc + ((size_t)o * R + st->off[i]) * es, (const uint8_t *)B->data + (size_t)o * r * es,
                               (size_t)r * es);
                } else {
                    lf_to_f32((float *)Ac + (size_t)st->off[i] * W->cols, A->data, A->dtype, 0, (size_t)r * W->cols);
                    for (int o = 0; o < W->rows; o++)
                        lf_to_f32((float *)Bc + (size_t)o * R + st->off[i], B->data, B->dtype, (size_t)o * r, (size_t)r);
                }
            }
            st->A = (lf_mat){.dtype = dt, .data = Ac, .rows = R, .cols = W->cols};
            st->B = (lf_mat){.dtype = dt, .data = Bc, .rows = W->rows, .cols = R};
            if (m->adapter_quant == LF_QUANT_Q8 && (quantize_stack(&st->A) || quantize_stack(&st->B))) return -1;
        }
    }
    /* The stacks are copies: let the adapter files' pages leave this
     * process's resident memory (read again from the file if needed). */
    for (int i = 0; i < m->n_adapters; i++)
        for (int k = 0; k < m->adapters[i].ts.nmaps; k++)
            if (m->adapters[i].ts.maps[k].addr && m->adapters[i].ts.maps[k].size)
                madvise(m->adapters[i].ts.maps[k].addr, m->adapters[i].ts.maps[k].size, MADV_DONTNEED);
    return 0;
}
