/* test_model.c: loading model folders in every layout users have, and
 * refusing the ones that disagree with their config.json. */
#include "common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../src/core/util.h"
#include "../src/model/model.h"
#include "../src/model/train.h"

/* The tiny shape with 2 layers, 2 rank-4 adapters and a gate. */
static void tiny_spec(lf_synth_spec *sp, lf_dtype dt, lf_dtype adapter_dt, uint64_t seed) {
    memset(sp, 0, sizeof *sp);
    assert_int_equal(lf_synth_shape("tiny", &sp->cfg), 0);
    sp->cfg.n_layers = 2;
    sp->dtype = dt;
    sp->n_adapters = 2;
    sp->rank = 4;
    sp->alpha = 8;
    sp->adapter_dtype = adapter_dt;
    sp->gate = 1;
    sp->seed = seed;
}

static void write_model(const char *dir, const lf_synth_spec *sp) {
    if (lf_synth_model(dir, sp, NULL, NULL) != 0) {
        print_error("%s\n", lf_last_error());
        fail();
    }
}

/* A small random model in dir (tiny shape, 2 layers, F16, 2 adapters). */
static void make_model(const char *dir, lf_dtype dt, int tie) {
    lf_synth_spec sp;
    tiny_spec(&sp, dt, LF_BF16, 3);
    sp.cfg.tie_word_embeddings = tie;
    write_model(dir, &sp);
}

static const int32_t ids[] = {1, 50, 300, 7, 411, 99};
#define NIDS 6

/* logits of the last position for ids, in LoRA-Flow mode when gated. */
static float *run(const char *dir, int gated) {
    lf_model *m = lf_model_load(dir);
    if (!m) { print_error("%s\n", lf_last_error()); fail(); }
    lf_session *s = lf_session_new(m, 16);
    lf_gate *g = NULL;
    if (gated) {
        char a[512], b[512], gp[512];
        snprintf(a, sizeof a, "%s/lora_0", dir);
        snprintf(b, sizeof b, "%s/lora_1", dir);
        snprintf(gp, sizeof gp, "%s/gate.safetensors", dir);
        assert_int_equal(lf_model_add_adapter(m, "lora_0", a), 0);
        assert_int_equal(lf_model_add_adapter(m, "lora_1", b), 1);
        g = lf_gate_load(gp, m);
        if (!g) { print_error("%s\n", lf_last_error()); fail(); }
        assert_int_equal(lf_session_set_gate(s, g, 1.0f), 0);
    }
    int V = lf_model_config(m)->vocab_size;
    float *lg = malloc((size_t)V * sizeof(float));
    lf_outputs o = {.last_logits = lg};
    assert_int_equal(lf_session_forward(s, ids, NIDS, &o), 0);
    lf_session_free(s);
    lf_gate_free(g);
    lf_model_free(m);
    return lg;
}

static char *sub(const char *name) {
    static char buf[4][512];
    static int slot;
    char *b = buf[slot++ % 4];
    snprintf(b, 512, "%s/%s", lf_test_tmpdir(), name);
    return b;
}

static void copy_file(const char *from, const char *to) {
    char c[2048];
    snprintf(c, sizeof c, "cp -r '%s' '%s'", from, to);
    assert_int_equal(system(c), 0);
}

/* The same weights as one safetensors file, as shards with an index, and as
 * pytorch_model.bin give the same logits. */
static void test_layouts(void **state) {
    (void)state;
    const char *a = sub("single");
    make_model(a, LF_F16, 0);
    float *ref = run(a, 1);
    int V = 512;

    /* shards: split the tensors of model.safetensors in two files + index */
    const char *b = sub("sharded");
    copy_file(a, b);
    lf_tensorset ts;
    lf_tensorset_init(&ts);
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors", a);
    assert_int_equal(lf_safetensors_read(p, &ts), 0);
    int half = ts.n / 2;
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", b);
    assert_int_equal(lf_safetensors_write(p, ts.tensors, half, NULL, 0), 0);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", b);
    assert_int_equal(lf_safetensors_write(p, ts.tensors + half, ts.n - half, NULL, 0), 0);
    size_t cap = 1 << 16, len = 0;
    char *idx = malloc(cap);
    len += (size_t)snprintf(idx + len, cap - len, "{\"metadata\": {}, \"weight_map\": {");
    for (int i = 0; i < ts.n; i++)
        len += (size_t)snprintf(idx + len, cap - len, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"", i ? ", " : "",
                                ts.tensors[i].name, i < half ? 1 : 2);
    len += (size_t)snprintf(idx + len, cap - len, "}}");
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", b);
    lf_test_write_file(p, idx, len);
    free(idx);
    snprintf(p, sizeof p, "%s/model.safetensors", b);
    assert_int_equal(unlink(p), 0);
    float *got = run(b, 1);
    lf_test_check_close("sharded", got, ref, (size_t)V, 0);
    free(got);

    /* pytorch_model.bin */
    const char *c = sub("torchbin");
    copy_file(a, c);
    snprintf(p, sizeof p, "%s/pytorch_model.bin", c);
    assert_int_equal(lf_pt_write(p, "archive", ts.tensors, ts.n), 0);
    snprintf(p, sizeof p, "%s/model.safetensors", c);
    assert_int_equal(unlink(p), 0);
    got = run(c, 1);
    lf_test_check_close("pytorch_model.bin", got, ref, (size_t)V, 0);
    free(got);
    lf_tensorset_free(&ts);
    free(ref);
}

/* F32, BF16 and tied embeddings load and run. */
static void test_dtypes_and_tied(void **state) {
    (void)state;
    const char *a = sub("f32");
    make_model(a, LF_F32, 0);
    float *x = run(a, 0);
    free(x);
    const char *b = sub("bf16tied");
    make_model(b, LF_BF16, 1);
    lf_model *m = lf_model_load(b);
    assert_non_null(m);
    assert_int_equal(lf_model_config(m)->tie_word_embeddings, 1);
    lf_model_free(m);
    x = run(b, 1);
    free(x);
}

/* Shape or dtype disagreeing with config.json, missing tensors, missing files. */
static void test_mismatch(void **state) {
    (void)state;
    const char *a = sub("bad");
    make_model(a, LF_F16, 0);
    char p[600];
    /* config says 3 layers, the file has 2 */
    snprintf(p, sizeof p, "%s/config.json", a);
    size_t len;
    char *cfg = lf_read_file(p, &len, 1 << 20);
    assert_non_null(cfg);
    char *bad = malloc(len + 64);
    char *at = strstr(cfg, "\"num_hidden_layers\":\t2");
    if (!at) at = strstr(cfg, "\"num_hidden_layers\": 2");
    assert_non_null(at);
    size_t pre = (size_t)(at - cfg);
    const char *q = strchr(at, '2');
    snprintf(bad, len + 64, "%.*s\"num_hidden_layers\": 3%s", (int)pre, cfg, q + 1);
    lf_test_write_file(p, bad, strlen(bad));
    assert_null(lf_model_load(a));
    assert_non_null(strstr(lf_last_error(), "model.layers.2.input_layernorm.weight"));
    /* hidden size disagreeing: tensors have a different shape */
    char *h = strstr(cfg, "\"intermediate_size\"");
    assert_non_null(h);
    pre = (size_t)(h - cfg);
    const char *num = h + strlen("\"intermediate_size\"");
    while (*num == ':' || *num == ' ' || *num == '\t') num++;
    const char *after = num;
    while (*after >= '0' && *after <= '9') after++;
    snprintf(bad, len + 64, "%.*s\"intermediate_size\": 700%s", (int)pre, cfg, after);
    lf_test_write_file(p, bad, strlen(bad));
    assert_null(lf_model_load(a));
    assert_non_null(strstr(lf_last_error(), "mlp.gate_proj.weight"));
    assert_non_null(strstr(lf_last_error(), "expected [700, 256]"));
    lf_test_write_file(p, cfg, len);
    free(bad);
    free(cfg);

    /* a weight stored as I64 */
    lf_tensorset ts;
    lf_tensorset_init(&ts);
    snprintf(p, sizeof p, "%s/model.safetensors", a);
    assert_int_equal(lf_safetensors_read(p, &ts), 0);
    lf_tensor *copy = malloc((size_t)ts.n * sizeof *copy);
    memcpy(copy, ts.tensors, (size_t)ts.n * sizeof *copy);
    for (int i = 0; i < ts.n; i++) {
        if (!strcmp(copy[i].name, "model.norm.weight")) {
            copy[i].dtype = LF_I64;
            copy[i].shape[0] = copy[i].nbytes / 8;
        }
    }
    const char *d = sub("badtype");
    copy_file(a, d);
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    assert_int_equal(lf_safetensors_write(p, copy, ts.n, NULL, 0), 0);
    assert_null(lf_model_load(d));
    assert_non_null(strstr(lf_last_error(), "model.norm.weight"));
    assert_non_null(strstr(lf_last_error(), "I64"));
    free(copy);
    lf_tensorset_free(&ts);

    /* no weights at all */
    const char *e = sub("noweights");
    copy_file(a, e);
    snprintf(p, sizeof p, "%s/model.safetensors", e);
    assert_int_equal(unlink(p), 0);
    assert_null(lf_model_load(e));
    assert_non_null(strstr(lf_last_error(), "no weights found"));
    assert_null(lf_model_load(sub("does-not-exist")));
    assert_non_null(strstr(lf_last_error(), "does-not-exist"));
}

/* Adapters and gates that do not fit the model are refused, naming what. */
static void test_adapter_gate_errors(void **state) {
    (void)state;
    const char *a = sub("adapters");
    make_model(a, LF_F16, 0);
    lf_model *m = lf_model_load(a);
    assert_non_null(m);
    char p[600], g[600];
    snprintf(g, sizeof g, "%s/gate.safetensors", a);
    /* gate for k = 2 with one adapter */
    snprintf(p, sizeof p, "%s/lora_0", a);
    assert_int_equal(lf_model_add_adapter(m, "x", p), 0);
    assert_null(lf_gate_load(g, m));
    assert_non_null(strstr(lf_last_error(), "k = 2"));
    /* truncated adapter file */
    const char *t = sub("trunc_lora");
    copy_file(p, t);
    char f[700];
    snprintf(f, sizeof f, "%s/adapter_model.safetensors", t);
    assert_int_equal(truncate(f, 5000), 0);
    assert_int_equal(lf_model_add_adapter(m, "t", t), -1);
    assert_non_null(strstr(lf_last_error(), "adapter_model.safetensors"));
    assert_int_equal(lf_model_n_adapters(m), 1);
    lf_model_free(m);

    /* an adapter made for another model: shapes disagree */
    const char *o = sub("other");
    lf_synth_spec sp;
    memset(&sp, 0, sizeof sp);
    assert_int_equal(lf_synth_shape("tiny", &sp.cfg), 0);
    sp.cfg.n_layers = 3;
    sp.cfg.intermediate_size = 320;
    sp.dtype = LF_F32;
    sp.gate = 1;
    sp.n_adapters = 2;
    sp.rank = 4;
    sp.alpha = 8;
    sp.adapter_dtype = LF_F32;
    assert_int_equal(lf_synth_model(o, &sp, NULL, NULL), 0);
    m = lf_model_load(a);
    snprintf(p, sizeof p, "%s/lora_0", o);
    assert_int_equal(lf_model_add_adapter(m, "other", p), -1);
    assert_non_null(strstr(lf_last_error(), "'other'"));
    assert_non_null(strstr(lf_last_error(), "layer 2"));
    const char *o2 = sub("other2");
    sp.cfg.n_layers = 2;
    assert_int_equal(lf_synth_model(o2, &sp, NULL, NULL), 0);
    snprintf(p, sizeof p, "%s/lora_0", o2);
    assert_int_equal(lf_model_add_adapter(m, "other2", p), -1);
    assert_non_null(strstr(lf_last_error(), "'other2'"));
    assert_non_null(strstr(lf_last_error(), "expected [688, 4]"));
    lf_model_free(m);

    /* a gate for another layer count */
    m = lf_model_load(a);
    snprintf(p, sizeof p, "%s/lora_0", a);
    assert_int_equal(lf_model_add_adapter(m, "a", p), 0);
    snprintf(p, sizeof p, "%s/lora_1", a);
    assert_int_equal(lf_model_add_adapter(m, "b", p), 1);
    snprintf(g, sizeof g, "%s/gate.safetensors", o);
    assert_null(lf_gate_load(g, m));
    assert_non_null(strstr(lf_last_error(), "3 layers"));
    /* the same gate file with its adapters given in the wrong order */
    lf_model_free(m);
    m = lf_model_load(a);
    snprintf(p, sizeof p, "%s/lora_1", a);
    assert_int_equal(lf_model_add_adapter(m, "lora_1", p), 0);
    snprintf(p, sizeof p, "%s/lora_0", a);
    assert_int_equal(lf_model_add_adapter(m, "lora_0", p), 1);
    snprintf(g, sizeof g, "%s/gate.safetensors", a);
    assert_null(lf_gate_load(g, m));
    assert_non_null(strstr(lf_last_error(), "order"));
    lf_model_free(m);
}

/* lf_synth_spec.tie: the tied rows of the input embedding are copies of
 * their source rows as drawn; every other value is what the same seed
 * gives without ties; a pair outside the vocabulary is refused. */
static void test_synth_ties(void **state) {
    (void)state;
    lf_synth_spec sp;
    memset(&sp, 0, sizeof sp);
    assert_int_equal(lf_synth_shape("tiny", &sp.cfg), 0);
    sp.cfg.n_layers = 1;
    sp.dtype = LF_F32;
    sp.seed = 3;
    const char *plain = sub("untied"), *tied = sub("tied");
    assert_int_equal(lf_synth_model(plain, &sp, NULL, NULL), 0);
    static const int32_t pairs[][2] = {{5, 9}, {7, 9}, {100, 3}, {9, 100}};
    sp.tie = pairs;
    sp.n_tie = 4;
    assert_int_equal(lf_synth_model(tied, &sp, NULL, NULL), 0);
    lf_model *a = lf_model_load(plain), *b = lf_model_load(tied);
    assert_non_null(a);
    assert_non_null(b);
    const int V = sp.cfg.vocab_size, H = sp.cfg.hidden_size;
    const float *ea = a->embed.data, *eb = b->embed.data;
    for (int r = 0; r < V; r++) {
        int src = r;
        for (int k = 0; k < 4; k++)
            if (pairs[k][0] == r) src = pairs[k][1];
        assert_memory_equal(eb + (size_t)r * H, ea + (size_t)src * H, (size_t)H * sizeof(float));
    }
    assert_memory_equal(b->lm_head.data, a->lm_head.data, (size_t)V * H * sizeof(float));
    const lf_mat *wa = &a->layers[0].W[LF_PROJ_DOWN], *wb = &b->layers[0].W[LF_PROJ_DOWN];
    assert_memory_equal(wb->data, wa->data, (size_t)wa->rows * wa->cols * sizeof(float));
    lf_model_free(a);
    lf_model_free(b);
    static const int32_t bad[][2] = {{1, 2}, {3, 99999}};
    sp.tie = bad;
    sp.n_tie = 2;
    assert_int_equal(lf_synth_model(sub("badtie"), &sp, NULL, NULL), -1);
    assert_non_null(strstr(lf_last_error(), "tied pair 2 (3, 99999)"));
}

/* A KV cache of at most 1 GiB sits in huge pages, a larger one in calloc'd
 * memory (forward.c): sessions of both kinds give the same logits, for a
 * prompt and for tokens decoded one at a time after it. */
static void test_kv_placement(void **state) {
    (void)state;
    const char *dir = sub("kvmodel");
    make_model(dir, LF_F16, 0);
    lf_model *m = lf_model_load(dir);
    if (!m) { print_error("%s\n", lf_last_error()); fail(); }
    const lf_config *c = lf_model_config(m);
    const size_t per_pos = (size_t)c->n_layers * c->n_kv_heads * c->head_dim * 2 * sizeof(float);
    const int big = (int)(((size_t)1 << 30) / per_pos + 1); /* keys and values just over 1 GiB */
    lf_session *s[2] = {lf_session_new(m, 16), lf_session_new(m, big)};
    if (!s[0] || !s[1]) { print_error("%s\n", lf_last_error()); fail(); }
    const int V = c->vocab_size;
    float *lg[2] = {malloc((size_t)V * sizeof(float)), malloc((size_t)V * sizeof(float))};
    for (int k = 0; k < 2; k++) {
        lf_outputs o = {.last_logits = lg[k]};
        assert_int_equal(lf_session_forward(s[k], ids, NIDS, &o), 0);
    }
    assert_memory_equal(lg[0], lg[1], (size_t)V * sizeof(float));
    for (int t = 0; t < 3; t++) {
        for (int k = 0; k < 2; k++) {
            lf_outputs o = {.last_logits = lg[k]};
            assert_int_equal(lf_session_forward(s[k], &ids[t], 1, &o), 0);
        }
        assert_memory_equal(lg[0], lg[1], (size_t)V * sizeof(float));
    }
    for (int k = 0; k < 2; k++) { lf_session_free(s[k]); free(lg[k]); }
    lf_model_free(m);
}

/* LF_LAYOUT_AUTO: a copied model keeps its projections and untied lm_head
 * of more than 2048 columns in column blocks (the down projection of 2176
 * columns: two of 1088; with a hidden size of 2112, every other
 * projection and lm_head), the others and the embeddings row-major;
 * LF_LAYOUT_ROWS (LORAFLOW_LAYOUT=rows) none.  A prompt (the blocked GEMM)
 * and the gates' gradients give the row-major model's results bit for bit;
 * decoding adds the blocks' sums in block order, within rounding of them. */
static void colblock_model(int wide_hidden) {
    const char *dir = sub(wide_hidden ? "cbmodel_h" : "cbmodel_i");
    lf_synth_spec sp;
    tiny_spec(&sp, LF_F16, LF_F16, 5);
    if (wide_hidden) {
        sp.cfg.n_layers = 1;
        sp.cfg.hidden_size = 2112;
        sp.cfg.n_heads = 33;
        sp.cfg.n_kv_heads = 3;
        sp.cfg.head_dim = 64;
        sp.cfg.intermediate_size = 64;
    } else {
        sp.cfg.intermediate_size = 2176;
    }
    write_model(dir, &sp);
    lf_model *m[2];
    lf_gate *g[2];
    lf_session *s[2];
    float *lg[2];
    const int32_t seq[12] = {1, 50, 300, 7, 411, 99, 12, 13, 200, 5, 77, 301};
    for (int k = 0; k < 2; k++) {
        lf_load_options o;
        lf_load_options_default(&o);
        o.placement = LF_PLACE_COPY;
        o.layout = k ? LF_LAYOUT_ROWS : LF_LAYOUT_AUTO;
        m[k] = lf_model_load_opts(dir, &o);
        if (!m[k]) { print_error("%s\n", lf_last_error()); fail(); }
        const lf_layer *ly = &m[k]->layers[sp.cfg.n_layers - 1];
        for (int p = 0; p < LF_NPROJ; p++)
            assert_int_equal(ly->W[p].colblock, !k && (wide_hidden ? p != LF_PROJ_DOWN : p == LF_PROJ_DOWN) ? 1088 : 0);
        assert_int_equal(m[k]->lm_head.colblock, !k && wide_hidden ? 1088 : 0);
        assert_int_equal(m[k]->embed.colblock, 0);
        char a[512], gp[512];
        for (int i = 0; i < 2; i++) {
            snprintf(a, sizeof a, "%s/lora_%d", dir, i);
            assert_int_equal(lf_model_add_adapter(m[k], i ? "lora_1" : "lora_0", a), i);
        }
        snprintf(gp, sizeof gp, "%s/gate.safetensors", dir);
        g[k] = lf_gate_load(gp, m[k]);
        if (!g[k]) { print_error("%s\n", lf_last_error()); fail(); }
        s[k] = lf_session_new(m[k], 32);
        assert_int_equal(lf_session_set_gate(s[k], g[k], 1.0f), 0);
        lg[k] = malloc((size_t)sp.cfg.vocab_size * 8 * sizeof(float));
        lf_outputs out = {.logits = lg[k]}; /* all 8 positions: lm_head by the GEMM too */
        assert_int_equal(lf_session_forward(s[k], seq, 8, &out), 0);
    }
    assert_memory_equal(lg[0], lg[1], (size_t)sp.cfg.vocab_size * 8 * sizeof(float));
    for (int t = 8; t < 12; t++) {
        for (int k = 0; k < 2; k++) {
            lf_outputs out = {.last_logits = lg[k]};
            assert_int_equal(lf_session_forward(s[k], &seq[t], 1, &out), 0);
        }
        double mx = 0;
        for (int i = 0; i < sp.cfg.vocab_size; i++) mx = fabs(lg[1][i]) > mx ? fabs(lg[1][i]) : mx;
        lf_test_check_close("decoding over column blocks", lg[0], lg[1], (size_t)sp.cfg.vocab_size, 1e-5 * mx + 1e-6);
    }
    /* the gates' gradients over the sequence (the backward products read the blocks) */
    float *grad[2];
    int n = 0;
    for (int k = 0; k < 2; k++) {
        lf_trainable *tr = lf_trainable_new(m[k], g[k], LF_TRAIN_GATE);
        assert_non_null(tr);
        lf_train_mode md = {.mode = LF_FUSE_GATE, .gate = g[k], .temperature = 1.0f};
        double loss;
        int nt;
        assert_int_equal(lf_train_sequence(m[k], tr, &md, seq, seq, 12, 1.0f, &loss, &nt, NULL), 0);
        n = 0;
        for (int i = 0; i < lf_trainable_count(tr); i++) n += (int)lf_trainable_param(tr, i)->n;
        grad[k] = malloc((size_t)n * sizeof(float));
        for (int i = 0, at = 0; i < lf_trainable_count(tr); i++) {
            const lf_param *p = lf_trainable_param(tr, i);
            memcpy(grad[k] + at, p->g, p->n * sizeof(float));
            at += (int)p->n;
        }
        lf_trainable_free(tr);
    }
    assert_memory_equal(grad[0], grad[1], (size_t)n * sizeof(float));
    for (int k = 0; k < 2; k++) {
        free(grad[k]);
        free(lg[k]);
        lf_session_free(s[k]);
        lf_gate_free(g[k]);
        lf_model_free(m[k]);
    }
}

static void test_colblock_model(void **state) {
    (void)state;
    colblock_model(0);
    colblock_model(1);
}

/* name's value (a copy, or NULL when unset), and putting it back (freed). */
static char *env_save(const char *name) {
    const char *v = getenv(name);
    return v ? strdup(v) : NULL;
}

static void env_restore(const char *name, char *saved) {
    if (saved) setenv(name, saved, 1);
    else unsetenv(name);
    free(saved);
}

/* Every LORAFLOW_* variable of lf_env_vars takes each of its values and
 * the empty string; any other value makes lf_env_check fail, naming the
 * variable, and a model load fail with it (LORAFLOW_LAYOUT=row would have
 * loaded with the default layout), with or without explicit options. */
static void test_env_check(void **state) {
    (void)state;
    const char *dir = sub("envmodel");
    make_model(dir, LF_F16, 0);
    int n;
    const lf_env_var *v = lf_env_vars(&n);
    assert_true(n >= 9);
    for (int i = 0; i < n; i++) {
        assert_int_equal(strncmp(v[i].name, "LORAFLOW_", 9), 0);
        char *keep = env_save(v[i].name), word[64];
        for (const char *p = v[i].values;;) { /* each accepted word */
            const size_t len = strcspn(p, "|");
            assert_true(len > 0 && len < sizeof word);
            memcpy(word, p, len);
            word[len] = 0;
            setenv(v[i].name, word, 1);
            if (lf_env_check()) { print_error("%s\n", lf_last_error()); fail(); }
            if (!p[len]) break;
            p += len + 1;
        }
        setenv(v[i].name, "", 1);
        assert_int_equal(lf_env_check(), 0);
        setenv(v[i].name, "Bogus", 1);
        assert_int_equal(lf_env_check(), -1);
        assert_non_null(strstr(lf_last_error(), v[i].name));
        assert_non_null(strstr(lf_last_error(), "=Bogus"));
        env_restore(v[i].name, keep);
    }
    char *keep = env_save("LORAFLOW_LAYOUT");
    setenv("LORAFLOW_LAYOUT", "row", 1);
    lf_load_options o;
    lf_load_options_default(&o);
    assert_null(lf_model_load(dir));
    assert_non_null(strstr(lf_last_error(), "LORAFLOW_LAYOUT=row: expected auto|rows"));
    assert_null(lf_model_load_opts(dir, &o));
    setenv("LORAFLOW_LAYOUT", "rows", 1);
    lf_model *m = lf_model_load(dir);
    if (!m) { print_error("%s\n", lf_last_error()); fail(); }
    lf_model_free(m);
    env_restore("LORAFLOW_LAYOUT", keep);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layouts),
        cmocka_unit_test(test_dtypes_and_tied),
        cmocka_unit_test(test_mismatch),
        cmocka_unit_test(test_adapter_gate_errors),
        cmocka_unit_test(test_synth_ties),
        cmocka_unit_test(test_kv_placement),
        cmocka_unit_test(test_colblock_model),
        cmocka_unit_test(test_env_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
