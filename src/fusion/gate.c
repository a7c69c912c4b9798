/* gate.c: LoRA-Flow fusion gates: the authors' .pt layout and loraflow's
 * safetensors gate file (same tensor names plus metadata). */
#include "fusion.h"
#include "../core/util.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static lf_gate *gate_alloc(int k, int L, int H) {
    lf_gate *g = lf_calloc(1, sizeof *g, "gate");
    if (!g) return NULL;
    g->k = k; g->L = L; g->H = H;
    g->W = lf_calloc((size_t)L * k * H, sizeof(float), "gate weights");
    g->b = lf_calloc((size_t)L * k, sizeof(float), "gate bias");
    if (!g->W || !g->b) { lf_gate_free(g); return NULL; }
    return g;
}

void lf_gate_free(lf_gate *g) {
    if (!g) return;
    free(g->W);
    free(g->b);
    free(g);
}

int lf_gate_k(const lf_gate *g) { return g->k; }
float lf_gate_stored_temperature(const lf_gate *g) { return g->temperature; }

lf_gate *lf_gate_new_init(const lf_model *m) {
    const int k = m->n_adapters;
    if (k < 1) {
        lf_set_error("a gate needs at least one adapter");
        return NULL;
    }
    lf_gate *g = gate_alloc(k, m->cfg.n_layers, m->cfg.hidden_size);
    if (!g) return NULL;
    /* The authors' init: W = 0, b = [-0.5, 0.5] (k = 2), so w = [0, 1] at the start. */
    for (int l = 0; l < g->L; l++)
        for (int i = 0; i < k; i++)
            g->b[(size_t)l * k + i] = k == 1 ? 0.5f : -0.5f + (float)i / (float)(k - 1);
    return g;
}

static int is_zip(const char *path) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC); /* a FIFO must not block */
    if (fd < 0) return 0;
    unsigned char h[4] = {0};
    ssize_t n = read(fd, h, 4);
    close(fd);
    return n == 4 && h[0] == 'P' && h[1] == 'K' && h[2] == 3 && h[3] == 4;
}

/* Validate the stored adapter order against the model's adapters: a file
 * whose names are the model's names in another order is certainly misused. */
static int check_adapter_order(const char *path, const char *names, const lf_model *m) {
    if (!names || !*names) return 0;
    char *copy = lf_strdup(names);
    if (!copy) return -1;
    int same_set = 1, same_order = 1, i = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save), i++) {
        if (i >= m->n_adapters) { same_set = 0; break; }
        if (strcmp(tok, m->adapters[i].name)) same_order = 0;
        int found = 0;
        for (int j = 0; j < m->n_adapters; j++) if (!strcmp(tok, m->adapters[j].name)) found = 1;
        if (!found) same_set = 0;
    }
    free(copy);
    if (same_set && i == m->n_adapters && !same_order) {
        lf_set_error("%s: the gate was trained with the adapters in the order %s; give the -l flags in that order",
                     path, names);
        return -1;
    }
    return 0;
}

static int cmp_tensor_ptr(const void *a, const void *b) {
    return strcmp((*(const lf_tensor *const *)a)->name, (*(const lf_tensor *const *)b)->name);
}

/* Lookup in the tensors sorted by name: a hostile file may hold a million
 * tensors, and one linear search per layer would then take hours. */
static const lf_tensor *find_sorted(const lf_tensor **idx, int n, const char *name) {
    lf_tensor key;
    memset(&key, 0, sizeof key);
    key.name = (char *)name;
    const lf_tensor *kp = &key;
    const lf_tensor **hit = n ? bsearch(&kp, idx, (size_t)n, sizeof *idx, cmp_tensor_ptr) : NULL;
    return hit ? *hit : NULL;
}

/* The layer number of "encoder.layers.<l>.<rest>", or -1 for other names
 * (and LONG_MAX-like values beyond int for absurd numbers). */
static long name_layer(const char *name) {
    static const char pre[] = "encoder.layers.";
    if (strncmp(name, pre, sizeof pre - 1) != 0) return -1;
    const char *p = name + sizeof pre - 1;
    if (*p < '0' || *p > '9') return -1;
    long v = 0;
    for (; *p >= '0' && *p <= '9'; p++) v = v > 100000000L ? v : v * 10 + (*p - '0');
    return *p == '.' && p[1] ? v : -1;
}

lf_gate *lf_gate_load(const char *path, const lf_model *m) {
    lf_tensorset ts;
    lf_tensorset_init(&ts);
    int rc = is_zip(path) ? lf_pt_read(path, &ts) : lf_safetensors_read(path, &ts);
    if (rc != 0) { lf_tensorset_free(&ts); return NULL; }
    const int L = m->cfg.n_layers, H = m->cfg.hidden_size;
    lf_gate *g = NULL;
    char name[128], s1[96];
    const lf_tensor **idx = lf_malloc((size_t)(ts.n ? ts.n : 1) * sizeof *idx, "gate tensor index");
    if (!idx) goto fail;
    for (int i = 0; i < ts.n; i++) idx[i] = &ts.tensors[i];
    if (ts.n > 1) qsort(idx, (size_t)ts.n, sizeof *idx, cmp_tensor_ptr);
    /* k from layer 0 */
    const lf_tensor *w0 = find_sorted(idx, ts.n, "encoder.layers.0.lora_fusion_gate.weight");
    if (!w0) {
        lf_set_error("%s: tensor 'encoder.layers.0.lora_fusion_gate.weight' missing: not a LoRA-Flow gate", path);
        goto fail;
    }
    if (w0->ndim != 2 || w0->shape[0] < 1 || w0->shape[0] > LF_MAX_ADAPTERS) {
        lf_set_error("%s: 'encoder.layers.0.lora_fusion_gate.weight' has shape %s, expected [k, %d]",
                     path, lf_shape_str(w0->shape, w0->ndim, s1, sizeof s1), H);
        goto fail;
    }
    const int k = (int)w0->shape[0];
    if (k != m->n_adapters) {
        lf_set_error("%s: the gate fuses k = %d adapters, but %d %s given with -l", path, k, m->n_adapters,
                     m->n_adapters == 1 ? "is" : "are");
        goto fail;
    }
    /* layer count: every layer present, no extra */
    int nl = 0;
    for (; nl < ts.n; nl++) { /* O(n log n) in all, however many tensors */
        snprintf(name, sizeof name, "encoder.layers.%d.lora_fusion_gate.weight", nl);
        if (!find_sorted(idx, ts.n, name)) break;
    }
    if (nl != L) {
        lf_set_error("%s: the gate has %d layers, the model has %d", path, nl, L);
        goto fail;
    }
    for (int i = 0; i < ts.n; i++) {
        long li = name_layer(ts.tensors[i].name);
        if (li >= L) {
            lf_set_error("%s: tensor '%s' is for layer %ld, the model has %d layers", path, ts.tensors[i].name,
                         li, L);
            goto fail;
        }
    }
    if (!(g = gate_alloc(k, L, H))) goto fail;
    for (int l = 0; l < L; l++) {
        snprintf(name, sizeof name, "encoder.layers.%d.lora_fusion_gate.weight", l);
        const lf_tensor *w = find_sorted(idx, ts.n, name);
        snprintf(name, sizeof name, "encoder.layers.%d.weight_bias", l);
        const lf_tensor *b = find_sorted(idx, ts.n, name);
        if (!b) {
            lf_set_error("%s: tensor '%s' missing", path, name);
            goto fail;
        }
        if (w->ndim != 2 || w->shape[0] != k || w->shape[1] != H) {
            lf_set_error("%s: 'encoder.layers.%d.lora_fusion_gate.weight' has shape %s, expected [%d, %d]",
                         path, l, lf_shape_str(w->shape, w->ndim, s1, sizeof s1), k, H);
            goto fail;
        }
        int bok = (b->ndim == 2 && b->shape[0] == 1 && b->shape[1] == k) || (b->ndim == 1 && b->shape[0] == k);
        if (!bok) {
            lf_set_error("%s: '%s' has shape %s, expected [1, %d]", path, name,
                         lf_shape_str(b->shape, b->ndim, s1, sizeof s1), k);
            goto fail;
        }
        if ((w->dtype != LF_F32 && w->dtype != LF_F16 && w->dtype != LF_BF16) ||
            (b->dtype != LF_F32 && b->dtype != LF_F16 && b->dtype != LF_BF16)) {
            lf_set_error("%s: gate tensors of layer %d must be F32, F16 or BF16", path, l);
            goto fail;
        }
        lf_to_f32(g->W + (size_t)l * k * H, w->data, w->dtype, 0, (size_t)k * H);
        lf_to_f32(g->b + (size_t)l * k, b->data, b->dtype, 0, (size_t)k);
    }
    const char *tmeta = lf_tensorset_meta(&ts, "temperature");
    if (tmeta) {
        char *end;
        double T = strtod(tmeta, &end);
        if (end == tmeta || *end || !(T >= 0 && T <= 1e30)) { /* also refuses NaN and inf */
            lf_set_error("%s: metadata 'temperature' is '%.40s', expected a number >= 0", path, tmeta);
            goto fail;
        }
        g->temperature = (float)T;
    }
    if (check_adapter_order(path, lf_tensorset_meta(&ts, "adapters"), m) != 0) goto fail;
    free(idx);
    lf_tensorset_free(&ts);
    return g;
fail:
    free(idx);
    lf_gate_free(g);
    lf_tensorset_free(&ts);
    return NULL;
}

/* Tensor descriptions of a gate under the authors' names (names in buf). */
static int gate_tensors(const lf_gate *g, lf_tensor *t, char (*names)[96]) {
    int n = 0;
    for (int l = 0; l < g->L; l++) {
        snprintf(names[n], 96, "encoder.layers.%d.lora_fusion_gate.weight", l);
        t[n] = (lf_tensor){.name = names[n], .dtype = LF_F32, .ndim = 2, .shape = {g->k, g->H},
                           .data = g->W + (size_t)l * g->k * g->H, .nbytes = (size_t)g->k * g->H * 4};
        n++;
        snprintf(names[n], 96, "encoder.layers.%d.weight_bias", l);
        t[n] = (lf_tensor){.name = names[n], .dtype = LF_F32, .ndim = 2, .shape = {1, g->k},
                           .data = g->b + (size_t)l * g->k, .nbytes = (size_t)g->k * 4};
        n++;
    }
    return n;
}

int lf_gate_save(const lf_gate *g, const lf_model *m, float temperature, const char *path) {
    lf_tensor *t = lf_calloc((size_t)g->L * 2, sizeof *t, "gate tensors");
    char (*names)[96] = lf_calloc((size_t)g->L * 2, 96, "gate tensor names");
    if (!t || !names) { free(t); free(names); return -1; }
    int n = gate_tensors(g, t, names);
    char adapters[LF_MAX_ADAPTERS * 64] = "", tbuf[32], kbuf[16], lbuf[16], hbuf[16];
    for (int i = 0; m && i < m->n_adapters; i++) {
        if (i) strncat(adapters, ",", sizeof adapters - strlen(adapters) - 1);
        strncat(adapters, m->adapters[i].name, sizeof adapters - strlen(adapters) - 1);
    }
    snprintf(tbuf, sizeof tbuf, "%.9g", (double)temperature);
    snprintf(kbuf, sizeof kbuf, "%d", g->k);
    snprintf(lbuf, sizeof lbuf, "%d", g->L);
    snprintf(hbuf, sizeof hbuf, "%d", g->H);
    lf_kv meta[] = {
        {"format", "pt"}, {"loraflow", "gate"}, {"adapters", adapters}, {"temperature", tbuf},
        {"k", kbuf}, {"num_layers", lbuf}, {"hidden_size", hbuf},
    };
    int rc = lf_safetensors_write(path, t, n, meta, (int)(sizeof meta / sizeof meta[0]));
    free(t);
    free(names);
    return rc;
}

int lf_gate_save_pt(const lf_gate *g, const char *path) {
    lf_tensor *t = lf_calloc((size_t)g->L * 2, sizeof *t, "gate tensors");
    char (*names)[96] = lf_calloc((size_t)g->L * 2, 96, "gate tensor names");
    if (!t || !names) { free(t); free(names); return -1; }
    int n = gate_tensors(g, t, names);
    int rc = lf_pt_write(path, "gate", t, n);
    free(t);
    free(names);
    return rc;
}
