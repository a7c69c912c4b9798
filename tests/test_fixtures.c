/* test_fixtures.c: every mode of shared/fixtures/tiny-loraflow, for every
 * prompt, through the library: logits_last, logsumexp, top_vals,
 * hidden_final, layer_inputs, fusion_weights, gate_logits, and the greedy
 * generations with the KV cache.  Tolerances of the fixture README section 7. */
#include "common.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/core/util.h"
#include "../src/tensor/kernels.h"

#define FIX "fixtures/tiny-loraflow/"

typedef struct {
    lf_model *m;
    lf_gate *gate;
    lf_tensorset inputs, logits, gen;
    cJSON *manifest;
} fixture;

static const lf_tensor *need(const lf_tensorset *s, const char *name) {
    const lf_tensor *t = lf_tensorset_find(s, name);
    if (!t) {
        print_error("expected tensor '%s' missing from the fixture\n", name);
        fail();
    }
    return t;
}

static int setup(void **state) {
    if (!lf_test_shared()) { *state = NULL; return 0; }
    fixture *f = calloc(1, sizeof *f);
    f->m = lf_model_load(lf_test_path(FIX "base"));
    if (!f->m) { fprintf(stderr, "%s\n", lf_last_error()); return -1; }
    if (lf_model_add_adapter(f->m, "lang", lf_test_path(FIX "lora_lang")) != 0 ||
        lf_model_add_adapter(f->m, "task", lf_test_path(FIX "lora_task")) != 1) {
        fprintf(stderr, "%s\n", lf_last_error());
        return -1;
    }
    f->gate = lf_gate_load(lf_test_path(FIX "gate.pt"), f->m);
    if (!f->gate) { fprintf(stderr, "%s\n", lf_last_error()); return -1; }
    lf_tensorset_init(&f->inputs);
    lf_tensorset_init(&f->logits);
    lf_tensorset_init(&f->gen);
    if (lf_safetensors_read(lf_test_path(FIX "expected/inputs.safetensors"), &f->inputs) ||
        lf_safetensors_read(lf_test_path(FIX "expected/logits.safetensors"), &f->logits) ||
        lf_safetensors_read(lf_test_path(FIX "expected/generate.safetensors"), &f->gen)) {
        fprintf(stderr, "%s\n", lf_last_error());
        return -1;
    }
    size_t len;
    char *txt = lf_read_file(lf_test_path(FIX "expected/manifest.json"), &len, 1 << 26);
    f->manifest = txt ? cJSON_Parse(txt) : NULL;
    free(txt);
    if (!f->manifest) return -1;
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    if (!f) return 0;
    lf_gate_free(f->gate);
    lf_model_free(f->m);
    lf_tensorset_free(&f->inputs);
    lf_tensorset_free(&f->logits);
    lf_tensorset_free(&f->gen);
    cJSON_Delete(f->manifest);
    free(f);
    return 0;
}

static int32_t *prompt_ids(fixture *f, const char *p, int *n) {
    char name[64];
    snprintf(name, sizeof name, "prompt.%s.input_ids", p);
    const lf_tensor *t = need(&f->inputs, name);
    *n = (int)t->shape[0];
    int32_t *ids = malloc((size_t)*n * sizeof *ids);
    for (int i = 0; i < *n; i++) ids[i] = (int32_t)((const int64_t *)t->data)[i];
    return ids;
}

/* Put session s in the fusion mode described by the manifest entry. */
static void set_mode(fixture *f, lf_session *s, const cJSON *mode) {
    const char *type = cJSON_GetObjectItem(mode, "type")->valuestring;
    if (!strcmp(type, "static")) {
        float w[2];
        const cJSON *ws = cJSON_GetObjectItem(mode, "weights");
        for (int i = 0; i < 2; i++) w[i] = (float)cJSON_GetArrayItem(ws, i)->valuedouble;
        assert_int_equal(lf_session_set_static(s, w, 2), 0);
    } else {
        float T = (float)cJSON_GetObjectItem(mode, "temperature")->valuedouble;
        assert_int_equal(lf_session_set_gate(s, f->gate, T), 0);
    }
}

static void check_named(fixture *f, const char *name, const float *c, int is_weights) {
    const lf_tensor *t = need(&f->logits, name);
    size_t n = (size_t)lf_tensor_numel(t);
    double tol = is_weights ? 1e-4 : 1e-4 * lf_test_scale(t->data, n);
    lf_test_check_close(name, c, t->data, n, tol);
}

/* All modes x all prompts, full forward without cache. */
static void test_modes(void **state) {
    LF_REQUIRE_SHARED();
    fixture *f = *state;
    const lf_config *c = lf_model_config(f->m);
    const int V = c->vocab_size, H = c->hidden_size, L = c->n_layers, k = 2;
    static const char *prompts[] = {"en", "zh", "chat"};
    const cJSON *modes = cJSON_GetObjectItem(f->manifest, "modes");
    int checked = 0;
    for (int pi = 0; pi < 3; pi++) {
        int n;
        int32_t *ids = prompt_ids(f, prompts[pi], &n);
        float *logits = malloc((size_t)n * V * sizeof(float));
        float *hidden = malloc((size_t)n * H * sizeof(float));
        float *layers = malloc((size_t)(L + 1) * n * H * sizeof(float));
        float *fw = malloc((size_t)L * n * k * sizeof(float));
        float *gl = malloc((size_t)L * n * k * sizeof(float));
        float *lse = malloc((size_t)n * sizeof(float));
        float *top = malloc((size_t)n * 8 * sizeof(float));
        float *scratch = malloc((size_t)V * sizeof(float));
        const cJSON *mode;
        cJSON_ArrayForEach(mode, modes) {
            lf_session *s = lf_session_new(f->m, 0);
            assert_non_null(s);
            set_mode(f, s, mode);
            lf_outputs o = {.logits = logits, .hidden_final = hidden, .layer_inputs = layers,
                            .fusion_weights = fw, .gate_logits = gl};
            assert_int_equal(lf_session_forward(s, ids, n, &o), 0);
            for (int t = 0; t < n; t++) {
                float *row = logits + (size_t)t * V;
                lse[t] = lf_logsumexp(row, V);
                /* top 8 values, descending: repeatedly take the max of a copy */
                memcpy(scratch, row, (size_t)V * sizeof(float));
                for (int j = 0; j < 8; j++) {
                    int bi = 0;
                    for (int v = 1; v < V; v++) if (scratch[v] > scratch[bi]) bi = v;
                    top[t * 8 + j] = scratch[bi];
                    scratch[bi] = -INFINITY;
                }
            }
            char name[128];
            const char *mn = mode->string, *pn = prompts[pi];
#define CHECK(field, ptr, w) do { snprintf(name, sizeof name, "%s.%s." field, pn, mn); check_named(f, name, ptr, w); checked++; } while (0)
            CHECK("logits_last", logits + (size_t)(n - 1) * V, 0);
            CHECK("logsumexp", lse, 0);
            CHECK("top_vals", top, 0);
            CHECK("hidden_final", hidden, 0);
            CHECK("layer_inputs", layers, 0);
            CHECK("fusion_weights", fw, 1);
            if (!strcmp(cJSON_GetObjectItem(mode, "type")->valuestring, "dynamic")) CHECK("gate_logits", gl, 0);
            if (!strcmp(pn, "en") && !strcmp(mn, "dynamic_t1.0")) CHECK("logits", logits, 0);
#undef CHECK
            lf_session_free(s);
        }
        free(ids); free(logits); free(hidden); free(layers); free(fw); free(gl); free(lse); free(top); free(scratch);
    }
    print_message("checked %d fixture tensors\n", checked);
    assert_true(checked >= 3 * 7 * 6);
}

/* Greedy generation with the KV cache in mode dynamic_t1.0. */
static void test_generate(void **state) {
    LF_REQUIRE_SHARED();
    fixture *f = *state;
    const lf_config *c = lf_model_config(f->m);
    const int V = c->vocab_size, L = c->n_layers, k = 2;
    static const char *prompts[] = {"en", "zh", "chat"};
    for (int pi = 0; pi < 3; pi++) {
        int n;
        int32_t *ids = prompt_ids(f, prompts[pi], &n);
        char name[128];
        snprintf(name, sizeof name, "%s.gen.new_ids", prompts[pi]);
        const lf_tensor *want = need(&f->gen, name);
        const int steps = (int)want->shape[0];
        lf_session *s = lf_session_new(f->m, n + steps);
        assert_int_equal(lf_session_set_gate(s, f->gate, 1.0f), 0);
        lf_session_set_trace(s, 1);
        float *logits = malloc((size_t)V * sizeof(float));
        float *lse = malloc((size_t)steps * sizeof(float));
        float *top1 = malloc((size_t)steps * sizeof(float));
        lf_outputs o = {.last_logits = logits};
        assert_int_equal(lf_session_forward(s, ids, n, &o), 0);
        for (int st = 0; st < steps; st++) {
            int best = 0;
            for (int v = 1; v < V; v++) if (logits[v] > logits[best]) best = v;
            lse[st] = lf_logsumexp(logits, V);
            top1[st] = logits[best];
            assert_int_equal(best, (int)((const int64_t *)want->data)[st]);
            if (st + 1 < steps) {
                int32_t id = best;
                assert_int_equal(lf_session_forward(s, &id, 1, &o), 0);
            }
        }
        snprintf(name, sizeof name, "%s.gen.step_logsumexp", prompts[pi]);
        const lf_tensor *rl = need(&f->gen, name);
        lf_test_check_close(name, lse, rl->data, (size_t)steps, 1e-4 * lf_test_scale(rl->data, (size_t)steps));
        snprintf(name, sizeof name, "%s.gen.step_top_vals", prompts[pi]);
        const lf_tensor *rt = need(&f->gen, name);
        float *ref_top1 = malloc((size_t)steps * sizeof(float));
        for (int st = 0; st < steps; st++) ref_top1[st] = ((const float *)rt->data)[st * 8];
        lf_test_check_close(name, top1, ref_top1, (size_t)steps, 1e-4 * lf_test_scale(rt->data, (size_t)steps * 8));
        /* fusion weights of every fed token: [L, T+steps-1, k] vs trace [T][L][k] */
        int nt;
        const float *tr = lf_session_trace(s, &nt);
        assert_int_equal(nt, n + steps - 1);
        snprintf(name, sizeof name, "%s.gen.fusion_weights", prompts[pi]);
        const lf_tensor *rw = need(&f->gen, name);
        float *fw = malloc((size_t)L * nt * k * sizeof(float));
        for (int t = 0; t < nt; t++)
            for (int l = 0; l < L; l++)
                for (int i = 0; i < k; i++) fw[((size_t)l * nt + t) * k + i] = tr[((size_t)t * L + l) * k + i];
        lf_test_check_close(name, fw, rw->data, (size_t)L * nt * k, 1e-4);
        free(fw); free(ref_top1); free(logits); free(lse); free(top1); free(ids);
        lf_session_free(s);
    }
}

/* Incremental decoding (one token at a time, and in uneven chunks) gives the
 * logits of recomputing the whole sequence. */
static void test_kv_cache(void **state) {
    LF_REQUIRE_SHARED();
    fixture *f = *state;
    const int V = lf_model_config(f->m)->vocab_size;
    int n;
    int32_t *ids = prompt_ids(f, "chat", &n);
    float *full = malloc((size_t)n * V * sizeof(float));
    float *step = malloc((size_t)V * sizeof(float));
    lf_session *s = lf_session_new(f->m, n);
    assert_int_equal(lf_session_set_gate(s, f->gate, 1.1f), 0);
    lf_outputs o = {.logits = full};
    assert_int_equal(lf_session_forward(s, ids, n, &o), 0);
    const int chunks[] = {1, 3, 7};
    for (int ci = 0; ci < 3; ci++) {
        lf_session_reset(s);
        for (int t = 0; t < n; t += chunks[ci]) {
            int m = t + chunks[ci] <= n ? chunks[ci] : n - t;
            lf_outputs oi = {.last_logits = step};
            assert_int_equal(lf_session_forward(s, ids + t, m, &oi), 0);
            const float *ref = full + (size_t)(t + m - 1) * V;
            lf_test_check_close("incremental logits", step, ref, (size_t)V, 1e-4 * lf_test_scale(ref, (size_t)V));
        }
    }
    /* the context limit is an error, not an overflow */
    int32_t one = 5;
    assert_int_equal(lf_session_forward(s, &one, 1, &(lf_outputs){0}), -1);
    assert_non_null(strstr(lf_last_error(), "context"));
    lf_session_free(s);
    free(full); free(step); free(ids);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_modes),
        cmocka_unit_test(test_generate),
        cmocka_unit_test(test_kv_cache),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
