/* test_grad.c: the backward pass.  The gate gradients and losses of the
 * fixture (tiny-loraflow/expected/train.safetensors), and finite
 * differences for every trainable set (gate, LoRA, all weights) on a small
 * random model with grouped-query attention, with and without dropout. */
#include "common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/core/util.h"
#include "../src/model/train.h"
#include "../src/tensor/simd.h"
#include "../src/tensor/train_kernels.h"

#define FIX "fixtures/tiny-loraflow/"

static uint64_t rng = 0x1234567ULL;
static float frand(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

/* ---------- kernels against their references ---------- */

/* The SwiGLU backward (vector exp, chunks on the kernel threads) against
 * its scalar reference: a partial last chunk and a partial last group of
 * 256, gates from -30 to 30 (the sigmoid's flat ends); the two exps differ
 * by a few ulp, so the bound is relative, 1e-5 of the larger of the value
 * and the product of its factors. */
static void test_swiglu_backward(void **state) {
    (void)state;
    const size_t n = 3 * 16384 + 300;
    float *g = malloc(n * sizeof(float)), *u = malloc(n * sizeof(float)), *da = malloc(n * sizeof(float));
    float *dg = malloc(n * sizeof(float)), *du = malloc(n * sizeof(float));
    float *rg = malloc(n * sizeof(float)), *ru = malloc(n * sizeof(float));
    uint64_t st = 99;
    for (size_t i = 0; i < n; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        g[i] = (float)((double)(st >> 11) / 9007199254740992.0 * 60.0 - 30.0) * (i % 3 ? 0.1f : 1.0f);
        u[i] = (float)(i % 17) / 8.0f - 1.0f;
        da[i] = (float)(i % 29) / 14.0f - 1.0f;
    }
    lf_swiglu_backward_ref(rg, ru, da, g, u, n);
    const int prev = lf_kernels_isa();
    for (int isa = LF_ISA_PORTABLE; isa <= prev; isa++) { /* every instruction set this CPU has */
        lf_kernels_set_isa(isa);
        lf_swiglu_backward(dg, du, da, g, u, n);
        for (size_t i = 0; i < n; i++) {
            const float sg = (float)(fabs((double)da[i] * u[i]) * (1.0 + fabs((double)g[i]))), su = fabsf(da[i] * g[i]);
            if (!(fabsf(dg[i] - rg[i]) <= 1e-5f * fmaxf(fabsf(rg[i]), sg) + 1e-30f) ||
                !(fabsf(du[i] - ru[i]) <= 1e-5f * fmaxf(fabsf(ru[i]), su) + 1e-30f)) {
                fprintf(stderr, "swiglu backward, %s, [%zu] g %g: dg %g vs %g, du %g vs %g\n",
                        lf_kernels_isa_name(isa), i, g[i], dg[i], rg[i], du[i], ru[i]);
                fail();
            }
        }
    }
    lf_kernels_set_isa(prev);
    free(g); free(u); free(da); free(dg); free(du); free(rg); free(ru);
}

static void test_train_kernels(void **state) {
    (void)state;
    const lf_dtype types[] = {LF_F32, LF_F16, LF_BF16};
    /* T below and above the GEMM threshold; shapes that are not multiples
     * of any tile; every instruction set this CPU has */
    static const int shapes[][3] = {{37, 600, 5}, {37, 600, 29}, {100, 33, 131}, {300, 70, 12}};
    const int prev = lf_kernels_isa();
    for (int isa = LF_ISA_PORTABLE; isa <= prev; isa++) {
        lf_kernels_set_isa(isa);
        for (int si = 0; si < 4; si++)
            for (int ti = 0; ti < 3; ti++) {
                const int rows = shapes[si][0], cols = shapes[si][1], T = shapes[si][2];
                void *buf = malloc((size_t)rows * cols * 4);
                for (int i = 0; i < rows * cols; i++) {
                    float v = frand();
                    if (types[ti] == LF_F32) ((float *)buf)[i] = v;
                    else if (types[ti] == LF_F16) ((uint16_t *)buf)[i] = lf_f32_to_f16(v);
                    else ((uint16_t *)buf)[i] = lf_f32_to_bf16(v);
                }
                lf_mat W = {.dtype = types[ti], .data = buf, .rows = rows, .cols = cols};
                float *dy = malloc((size_t)T * rows * 4), *a = malloc((size_t)T * cols * 4),
                      *b = malloc((size_t)T * cols * 4);
                for (int i = 0; i < T * rows; i++) dy[i] = frand();
                for (int acc = 0; acc < 2; acc++) {
                    for (int i = 0; i < T * cols; i++) a[i] = b[i] = frand();
                    lf_matmul_tn_ref(a, dy, &W, T, acc);
                    lf_matmul_tn(b, dy, &W, T, acc);
                    /* float32 sums of `rows` products of values in [-1, 1] */
                    lf_test_check_close("matmul_tn", b, a, (size_t)T * cols, 1e-6 * rows + 1e-6);
                }
                float *x = malloc((size_t)T * cols * 4), *g1 = malloc((size_t)rows * cols * 4),
                      *g2 = malloc((size_t)rows * cols * 4);
                for (int i = 0; i < T * cols; i++) x[i] = frand();
                for (int i = 0; i < rows * cols; i++) g1[i] = g2[i] = frand(); /* it accumulates */
                lf_matmul_wgrad_ref(g1, dy, x, T, rows, cols);
                lf_matmul_wgrad(g2, dy, x, T, rows, cols);
                lf_test_check_close("matmul_wgrad", g2, g1, (size_t)rows * cols, 1e-6 * T + 1e-6);
                free(buf); free(dy); free(a); free(b); free(x); free(g1); free(g2);
            }
    }
    lf_kernels_set_isa(prev);
    /* rmsnorm backward by finite differences (double-checked in float) */
    const int n = 8;
    float x[8], g[8], dy[8], dx[8] = {0}, dg[8] = {0}, y1[8], y2[8];
    for (int i = 0; i < n; i++) { x[i] = frand(); g[i] = frand(); dy[i] = frand(); }
    lf_rmsnorm_backward(dx, dg, dy, x, g, 1, n, 1e-5f);
    for (int i = 0; i < n; i++) {
        const float e = 1e-3f, s = x[i];
        x[i] = s + e; lf_rmsnorm(y1, x, g, 1, n, 1e-5f);
        x[i] = s - e; lf_rmsnorm(y2, x, g, 1, n, 1e-5f);
        x[i] = s;
        double num = 0;
        for (int j = 0; j < n; j++) num += dy[j] * (y1[j] - y2[j]) / (2 * e);
        assert_true(fabs(num - dx[i]) < 1e-3 * (1 + fabs(num)));
    }
    /* many rows without dg go on the kernel threads: the same dx, bit for
     * bit, as with dg (one thread, row by row) */
    {
        const int T = 75, H = 1000;
        float *X = malloc((size_t)T * H * 4), *DY = malloc((size_t)T * H * 4), *G = malloc((size_t)H * 4);
        float *d1 = malloc((size_t)T * H * 4), *d2 = malloc((size_t)T * H * 4), *DG = calloc((size_t)H, 4);
        assert_true(X && DY && G && d1 && d2 && DG);
        for (int i = 0; i < T * H; i++) { X[i] = frand(); DY[i] = frand(); d1[i] = d2[i] = frand(); }
        for (int i = 0; i < H; i++) G[i] = frand();
        lf_rmsnorm_backward(d1, DG, DY, X, G, T, H, 1e-5f);
        lf_rmsnorm_backward(d2, NULL, DY, X, G, T, H, 1e-5f);
        assert_memory_equal(d1, d2, (size_t)T * H * 4);
        free(X); free(DY); free(G); free(d1); free(d2); free(DG);
    }
}

/* ---------- fixture: loss and gate gradients ---------- */

static void check_fixture_group(const char *group, lf_model *m, lf_gate *gate, const lf_tensorset *ref) {
    char name[256];
    snprintf(name, sizeof name, "%s.input_ids", group);
    const lf_tensor *ids_t = lf_tensorset_find(ref, name);
    snprintf(name, sizeof name, "%s.labels", group);
    const lf_tensor *lab_t = lf_tensorset_find(ref, name);
    snprintf(name, sizeof name, "%s.attention_mask", group);
    const lf_tensor *mask_t = lf_tensorset_find(ref, name);
    assert_non_null(ids_t);
    assert_non_null(lab_t);
    const int rows = ids_t->ndim == 2 ? (int)ids_t->shape[0] : 1;
    const int Tmax = (int)ids_t->shape[ids_t->ndim - 1];
    lf_trainable *tr = lf_trainable_new(m, gate, LF_TRAIN_GATE);
    assert_non_null(tr);
    lf_train_mode md = {.mode = LF_FUSE_GATE, .gate = gate, .temperature = 1.0f};
    /* total label tokens of the batch (the loss is their mean) */
    int total = 0;
    for (int r = 0; r < rows; r++)
        for (int t = 1; t < Tmax; t++) total += ((const int64_t *)lab_t->data)[(size_t)r * Tmax + t] != -100;
    double loss = 0;
    int32_t *ids = malloc((size_t)Tmax * 4), *lab = malloc((size_t)Tmax * 4);
    for (int r = 0; r < rows; r++) {
        /* drop the left padding (attention_mask 0): positions count from the first real token */
        int T = 0;
        for (int t = 0; t < Tmax; t++) {
            size_t i = (size_t)r * Tmax + t;
            if (mask_t && ((const int64_t *)mask_t->data)[i] == 0) continue;
            ids[T] = (int32_t)((const int64_t *)ids_t->data)[i];
            lab[T++] = (int32_t)((const int64_t *)lab_t->data)[i];
        }
        double ls;
        int nt;
        assert_int_equal(lf_train_sequence(m, tr, &md, ids, lab, T, 1.0f / total, &ls, &nt, NULL), 0);
        loss += ls;
    }
    loss /= total;
    snprintf(name, sizeof name, "%s.loss", group);
    const float ref_loss = *(const float *)lf_tensorset_find(ref, name)->data;
    if (!(fabs(loss - ref_loss) <= 1e-5 * fabs(ref_loss))) {
        print_error("%s: loss %.8g, expected %.8g\n", group, loss, (double)ref_loss);
        fail();
    }
    /* every gradient tensor, tolerance 1e-4 * the largest |ref| of the group */
    double G = 0;
    for (int i = 0; i < lf_trainable_count(tr); i++) {
        snprintf(name, sizeof name, "%s.grad.%s", group, lf_trainable_param(tr, i)->name);
        const lf_tensor *g = lf_tensorset_find(ref, name);
        assert_non_null(g);
        for (int64_t j = 0; j < lf_tensor_numel(g); j++) G = fmax(G, fabs(((const float *)g->data)[j]));
    }
    for (int i = 0; i < lf_trainable_count(tr); i++) {
        lf_param *p = lf_trainable_param(tr, i);
        snprintf(name, sizeof name, "%s.grad.%s", group, p->name);
        const lf_tensor *g = lf_tensorset_find(ref, name);
        assert_int_equal((size_t)lf_tensor_numel(g), p->n);
        lf_test_check_close(name, p->g, g->data, p->n, 1e-4 * G);
    }
    free(ids);
    free(lab);
    lf_trainable_free(tr);
}

static void test_fixture_gradients(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    lf_model *m = lf_model_load(lf_test_path(FIX "base"));
    assert_non_null(m);
    assert_int_equal(lf_model_add_adapter(m, "lang", lf_test_path(FIX "lora_lang")), 0);
    assert_int_equal(lf_model_add_adapter(m, "task", lf_test_path(FIX "lora_task")), 1);
    lf_gate *gate = lf_gate_load(lf_test_path(FIX "gate.pt"), m);
    assert_non_null(gate);
    lf_tensorset ref;
    lf_tensorset_init(&ref);
    assert_int_equal(lf_safetensors_read(lf_test_path(FIX "expected/train.safetensors"), &ref), 0);
    const int keep_mode = lf_train_checkpoint;
    for (int ck = 0; ck < 2; ck++) { /* kept activations, then checkpointed layers */
        lf_train_checkpoint = ck;
        check_fixture_group("single", m, gate, &ref);
        check_fixture_group("batch", m, gate, &ref);
    }
    lf_train_checkpoint = keep_mode;
    lf_tensorset_free(&ref);
    lf_gate_free(gate);
    lf_model_free(m);
}

/* ---------- finite differences on a small random model ---------- */

/* A random model written by lf_synth_model with its two adapters and gate
 * attached: the small float32 one of the finite differences, or sp. */
static lf_model *synth_model(const char *dir, const lf_synth_spec *spec, lf_gate **gate) {
    lf_synth_spec sp;
    memset(&sp, 0, sizeof sp);
    sp.cfg = (lf_config){32, 48, 2, 4, 2, 8, 64, 64, 1e-5f, 10000.0f, 0, 1, 2};
    sp.dtype = LF_F32;
    sp.adapter_dtype = LF_F32;
    sp.n_adapters = 2;
    sp.rank = 4;
    sp.alpha = 8;
    sp.gate = 1;
    sp.seed = 11;
    if (spec) sp = *spec;
    assert_int_equal(lf_synth_model(dir, &sp, NULL, NULL), 0);
    lf_model *m = lf_model_load(dir);
    assert_non_null(m);
    char p[600];
    snprintf(p, sizeof p, "%s/lora_0", dir);
    assert_int_equal(lf_model_add_adapter(m, "a", p), 0);
    snprintf(p, sizeof p, "%s/lora_1", dir);
    assert_int_equal(lf_model_add_adapter(m, "b", p), 1);
    snprintf(p, sizeof p, "%s/gate.safetensors", dir);
    *gate = lf_gate_load(p, m);
    assert_non_null(*gate);
    return m;
}

/* The small test model in the folder name under the test's temp folder. */
static lf_model *small_model(const char *name, lf_gate **gate) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", lf_test_tmpdir(), name);
    return synth_model(dir, NULL, gate);
}

static double seq_loss(lf_model *m, const lf_train_mode *md, const int32_t *ids, const int32_t *lab, int T) {
    double ls;
    int nt;
    assert_int_equal(lf_train_sequence(m, NULL, md, ids, lab, T, 1.0f, &ls, &nt, NULL), 0);
    return ls / nt;
}

/* Compare d loss / d theta with central differences on sampled entries of every parameter. */
static void fd_check(lf_model *m, lf_gate *gate, int what, const lf_train_mode *md, const char *label) {
    const int T = 12;
    int32_t ids[12], lab[12];
    for (int t = 0; t < T; t++) {
        ids[t] = 3 + (t * 17) % 60;
        lab[t] = t < 4 ? -100 : (5 + t * 11) % 64;
    }
    lf_trainable *tr = lf_trainable_new(m, gate, what);
    assert_non_null(tr);
    double ls;
    int nt;
    assert_int_equal(lf_train_sequence(m, tr, md, ids, lab, T, 1.0f / 8, &ls, &nt, NULL), 0);
    assert_int_equal(nt, 8);
    int checked = 0, bad = 0;
    double worst = 0;
    for (int i = 0; i < lf_trainable_count(tr); i++) {
        lf_param *p = lf_trainable_param(tr, i);
        for (int s = 0; s < 3; s++) {
            size_t j = (size_t)((frand() * 0.5f + 0.5f) * (float)(p->n - 1));
            const float keep = p->w[j], e = 2e-3f;
            p->w[j] = keep + e;
            double lp = seq_loss(m, md, ids, lab, T);
            p->w[j] = keep - e;
            double lm = seq_loss(m, md, ids, lab, T);
            p->w[j] = keep;
            const double num = (lp - lm) / (2 * e), ana = p->g[j];
            const double err = fabs(num - ana) / (fabs(num) + fabs(ana) + 1e-2);
            if (!(err <= worst)) worst = err; /* NaN counts as the worst */
            if (!(err <= 2e-2)) {
                print_error("%s: %s[%zu]: analytic %.6g, numeric %.6g\n", label, p->name, j, ana, num);
                bad++;
            }
            checked++;
        }
    }
    print_message("%s: %d entries checked, worst relative error %.2g\n", label, checked, worst);
    assert_int_equal(bad, 0);
    lf_trainable_free(tr);
}

static void test_finite_differences(void **state) {
    (void)state;
    lf_gate *gate;
    lf_model *m = small_model("small", &gate);
    lf_train_mode gm = {.mode = LF_FUSE_GATE, .gate = gate, .temperature = 1.3f};
    fd_check(m, gate, LF_TRAIN_GATE, &gm, "gate");
    lf_train_mode gd = gm;
    gd.dropout = 0.1f;
    gd.seed = 99;
    fd_check(m, gate, LF_TRAIN_GATE, &gd, "gate with dropout");
    fd_check(m, gate, LF_TRAIN_LORA, &gd, "LoRA with dropout, gate mode");
    lf_train_mode st = {.mode = LF_FUSE_STATIC, .static_w = {0.7f, -0.4f}};
    fd_check(m, gate, LF_TRAIN_LORA, &st, "LoRA, static mode");
    fd_check(m, gate, LF_TRAIN_BASE, &gm, "all weights, gate mode");
    lf_train_mode base = {.mode = LF_FUSE_BASE};
    fd_check(m, gate, LF_TRAIN_BASE, &base, "all weights, base mode");
    lf_gate_free(gate);
    lf_model_free(m);
}

/* The attention through the blocked GEMM (what sequences of
 * lf_attn_gemm_min_t tokens and more take) on the same checks: the
 * fixture's reference gradients and finite differences of every weight;
 * all queries at once, and in blocks of 5 (so that most blocks see only a
 * part of the keys and the last block is short). */
static void test_attention_gemm_path(void **state) {
    const int keep = lf_attn_gemm_min_t, keep_block = lf_attn_query_block;
    lf_attn_gemm_min_t = 1;
    for (int bi = 0; bi < 2; bi++) {
        lf_attn_query_block = bi ? 5 : 0;
        test_fixture_gradients(state);
        lf_gate *gate;
        lf_model *m = small_model("small3", &gate);
        lf_train_mode gm = {.mode = LF_FUSE_GATE, .gate = gate, .temperature = 1.3f};
        fd_check(m, gate, LF_TRAIN_BASE, &gm, bi ? "all weights, gate mode, GEMM attention in query blocks"
                                                 : "all weights, gate mode, GEMM attention");
        const int keep_mode = lf_train_checkpoint;
        lf_train_checkpoint = 1;
        fd_check(m, gate, LF_TRAIN_BASE, &gm, "all weights, gate mode, GEMM attention, checkpointed");
        lf_train_checkpoint = keep_mode;
        lf_gate_free(gate);
        lf_model_free(m);
    }
    lf_attn_gemm_min_t = keep;
    lf_attn_query_block = keep_block;
}

/* One step of a fresh trainable: loss and every gradient, appended to out. */
static size_t one_step(lf_trainable *tr, lf_model *m, const lf_train_mode *md, const int32_t *ids,
                       const int32_t *lab, int T, double *loss, float *out) {
    int nt;
    lf_trainable_zero_grad(tr);
    assert_int_equal(lf_train_sequence(m, tr, md, ids, lab, T, 0.1f, loss, &nt, NULL), 0);
    size_t n = 0;
    for (int i = 0; i < lf_trainable_count(tr); i++) {
        lf_param *p = lf_trainable_param(tr, i);
        memcpy(out + n, p->g, p->n * sizeof(float));
        n += p->n;
    }
    return n;
}

/* The GEMM attention runs whole key/value heads per thread when there
 * are at least as many as threads, else every product on all threads:
 * the loss and every gradient are the same, bit for bit, with 1, 2 and 3
 * threads (the test model has 2 key/value heads), in one query block and
 * in blocks of 5. */
static void test_attention_threads(void **state) {
    (void)state;
    lf_gate *gate;
    lf_model *m = small_model("small_threads", &gate);
    const int keep = lf_attn_gemm_min_t, keep_block = lf_attn_query_block, keep_threads = lf_get_threads();
    lf_attn_gemm_min_t = 1;
    const lf_train_mode md = {.mode = LF_FUSE_GATE, .gate = gate, .temperature = 1.3f};
    enum { T = 23, NMAX = 1 << 16 };
    int32_t ids[T], lab[T];
    for (int t = 0; t < T; t++) { ids[t] = 3 + (t * 29) % 60; lab[t] = t < 4 ? -100 : (5 + t * 11) % 64; }
    float *g0 = malloc(NMAX * sizeof(float)), *g1 = malloc(NMAX * sizeof(float));
    for (int bi = 0; bi < 2; bi++) {
        lf_attn_query_block = bi ? 5 : 0;
        size_t n0 = 0;
        double l0 = 0;
        for (int threads = 1; threads <= 3; threads++) {
            lf_set_threads(threads);
            lf_trainable *tr = lf_trainable_new(m, gate, LF_TRAIN_BASE);
            assert_non_null(tr);
            double l;
            size_t n = 0;
            for (int i = 0; i < lf_trainable_count(tr); i++) n += lf_trainable_param(tr, i)->n;
            assert_true(n <= NMAX);
            n = one_step(tr, m, &md, ids, lab, T, &l, threads == 1 ? g0 : g1);
            lf_trainable_free(tr);
            if (threads == 1) {
                n0 = n;
                l0 = l;
                continue;
            }
            assert_int_equal(n, n0);
            assert_true(l == l0);
            assert_memory_equal(g0, g1, n * sizeof(float));
        }
    }
    free(g0);
    free(g1);
    lf_set_threads(keep_threads);
    lf_attn_gemm_min_t = keep;
    lf_attn_query_block = keep_block;
    lf_gate_free(gate);
    lf_model_free(m);
}

/* A trainable keeps its step buffers from one step to the next, and does
 * not clear them: steps of 12, 7, 12 and 16 tokens with kept activations,
 * checkpointed layers and the default in turn give, bit for bit, the loss
 * and the gradients of a new trainable per step (stale values from an
 * earlier, longer step or from the other layout would show); again with
 * the kept buffers filled with NaN before every step (lf_train_poison: a
 * value read before the step writes it would turn the loss or a gradient
 * into NaN); for the gate with the adapters, and for the gate with the
 * base weights. */
static void test_step_buffers_reused(void **state) {
    (void)state;
    lf_gate *gate;
    lf_model *m = small_model("small4", &gate);
    lf_train_mode md = {.mode = LF_FUSE_GATE, .gate = gate, .temperature = 1.3f, .dropout = 0.1f, .seed = 5};
    int32_t ids[16], lab[16];
    for (int t = 0; t < 16; t++) { ids[t] = 3 + (t * 23) % 60; lab[t] = t < 3 ? -100 : (7 + t * 13) % 64; }
    const int Ts[] = {12, 7, 12, 16, 7}, ck[] = {0, 0, 1, -1, 0};
    const int whats[] = {LF_TRAIN_GATE | LF_TRAIN_LORA, LF_TRAIN_GATE | LF_TRAIN_BASE};
    const int keep_mode = lf_train_checkpoint;
    for (int run = 0; run < 4; run++) {
        const int what = whats[run / 2];
        lf_train_poison = run % 2;
        lf_trainable *kept = lf_trainable_new(m, gate, what);
        assert_non_null(kept);
        size_t total = 0;
        for (int i = 0; i < lf_trainable_count(kept); i++) total += lf_trainable_param(kept, i)->n;
        float *a = malloc(total * sizeof(float)), *b = malloc(total * sizeof(float));
        assert_non_null(a);
        assert_non_null(b);
        for (int s = 0; s < 5; s++) {
            lf_train_checkpoint = ck[s];
            double la, lb;
            const size_t na = one_step(kept, m, &md, ids, lab, Ts[s], &la, a);
            lf_trainable *fresh = lf_trainable_new(m, gate, what);
            assert_non_null(fresh);
            const size_t nb = one_step(fresh, m, &md, ids, lab, Ts[s], &lb, b);
            lf_trainable_free(fresh);
            assert_int_equal(na, total);
            assert_int_equal(nb, total);
            assert_true(isfinite(lb));
            assert_true(la == lb);
            assert_int_equal(memcmp(a, b, total * sizeof(float)), 0);
        }
        free(a);
        free(b);
        lf_trainable_free(kept);
    }
    lf_train_poison = 0;
    lf_train_checkpoint = keep_mode;
    lf_gate_free(gate);
    lf_model_free(m);
}

/* The training forward pass gives the loss of the inference forward pass. */
static void test_loss_matches_inference(void **state) {
    (void)state;
    lf_gate *gate;
    lf_model *m = small_model("small2", &gate);
    const int T = 10;
    int32_t ids[10], lab[10];
    for (int t = 0; t < T; t++) { ids[t] = 3 + (t * 29) % 60; lab[t] = ids[t]; }
    lf_train_mode md = {.mode = LF_FUSE_GATE, .gate = gate, .temperature = 1.0f};
    double ls = seq_loss(m, &md, ids, lab, T) * (T - 1);
    lf_session *s = lf_session_new(m, T);
    assert_int_equal(lf_session_set_gate(s, gate, 1.0f), 0);
    float logits[10 * 64];
    lf_outputs o = {.logits = logits};
    assert_int_equal(lf_session_forward(s, ids, T, &o), 0);
    double ref = 0;
    for (int t = 0; t + 1 < T; t++) ref += lf_logsumexp(logits + t * 64, 64) - logits[t * 64 + ids[t + 1]];
    assert_true(fabs(ls - ref) < 1e-4 * fabs(ref));
    lf_session_free(s);
    lf_gate_free(gate);
    lf_model_free(m);
}

/* The F16 model of the AMX and bfloat16 tests (H 128, two rank-64 F16
 * adapters and a gate) in the test folder sub, for contexts up to ctx. */
static lf_model *f16_model(const char *sub, int ctx, uint64_t seed, lf_gate **gate) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", lf_test_tmpdir(), sub);
    lf_synth_spec sp;
    memset(&sp, 0, sizeof sp);
    sp.cfg = (lf_config){128, 256, 2, 4, 2, 32, 64, ctx, 1e-5f, 10000.0f, 0, 1, 2};
    sp.dtype = sp.adapter_dtype = LF_F16;
    sp.n_adapters = 2;
    sp.rank = 64;
    sp.alpha = 16;
    sp.gate = 1;
    sp.seed = seed;
    return synth_model(dir, &sp, gate);
}

/* Weights converted once for the run (lf_trainable_prepack: AMX tiles,
 * bfloat16 pairs for the bfloat16 products, or the weights' own panels
 * for float32 ones) give the gradients of weights converted product by
 * product, bit for bit, on the CPU's path and on the AVX2 path; the
 * trainer takes them away again when it is freed.  Where none applies
 * nothing is converted and the two runs are the same path. */
static void test_prepacked_weights(void **state) {
    (void)state;
    lf_gate *gate;
    lf_model *m = f16_model("f16", 128, 5, &gate);
    enum { T = 70 };
    int32_t ids[T], lab[T];
    for (int t = 0; t < T; t++) {
        ids[t] = 3 + (t * 13) % 60;
        lab[t] = t < 20 ? -100 : (7 + t * 5) % 64;
    }
    const lf_train_mode md = {.mode = LF_FUSE_GATE, .gate = gate, .temperature = 1.0f};
    const int keep = lf_train_prepack;
    int prev_isa = -1; /* pass 1: the AVX2 path, on a CPU that has AVX-512 (and so AVX2) */
    for (int pass = 0; pass < 2; pass++)
    for (int prod = LF_PRODUCTS_F32; prod <= LF_PRODUCTS_BF16; prod++) {
        if (pass == 1 && prev_isa < 0) {
            if (lf_kernels_isa() != LF_ISA_AVX512) break;
            prev_isa = lf_kernels_set_isa(LF_ISA_AVX2);
        }
        /* float32: AMX tiles where the CPU has AMX, the weights' own panels
         * on the other AVX-512 and AVX2 paths; bfloat16 products: AMX tiles
         * there, bfloat16 pairs on CPUs with AVX512-BF16 alone */
        const int bf16 = lf_set_products(prod) == LF_PRODUCTS_BF16;
        const int converts =
            lf_kernels_amx() || bf16 || lf_kernels_isa() == LF_ISA_AVX512 || lf_kernels_isa() == LF_ISA_AVX2;
        float *g[2] = {NULL, NULL};
        size_t n = 0;
        double loss[2];
        for (int run = 0; run < 2; run++) {
            lf_train_prepack = run; /* 0: none; 1: every weight */
            lf_trainable *tr = lf_trainable_new(m, gate, LF_TRAIN_GATE);
            assert_non_null(tr);
            lf_trainable_prepack(tr);
            if (run == 0 || !converts) assert_int_equal(lf_trainable_panel_bytes(tr), 0);
            else assert_true(lf_trainable_panel_bytes(tr) > 0);
            int nt;
            assert_int_equal(lf_train_sequence(m, tr, &md, ids, lab, T, 0.02f, &loss[run], &nt, NULL), 0);
            n = 0;
            for (int i = 0; i < lf_trainable_count(tr); i++) n += lf_trainable_param(tr, i)->n;
            g[run] = malloc(n * sizeof(float));
            size_t at = 0;
            for (int i = 0; i < lf_trainable_count(tr); i++) {
                const lf_param *q = lf_trainable_param(tr, i);
                memcpy(g[run] + at, q->g, q->n * sizeof(float));
                at += q->n;
            }
            lf_trainable_free(tr);
            for (int l = 0; l < 2; l++) /* nothing left pointing at freed panels */
                for (int q = 0; q < LF_NPROJ; q++)
                    for (int wt = 0; wt < 2; wt++)
                        assert_true(!m->layers[l].W[q].panels[wt] && !m->layers[l].lora[q].A.panels[wt] &&
                                    !m->layers[l].lora[q].B.panels[wt]);
        }
        assert_true(loss[0] == loss[1]);
        assert_memory_equal(g[0], g[1], n * sizeof(float));
        free(g[0]);
        free(g[1]);
    }
    if (prev_isa >= 0) lf_kernels_set_isa(prev_isa);
    lf_set_products(LF_PRODUCTS_F32);
    lf_train_prepack = keep;
    lf_gate_free(gate);
    lf_model_free(m);
}

/* Products in bfloat16 (lf_set_products) in a training step: the same
 * step twice gives the same loss and gradients bit for bit (as it does in
 * float32: the threads' shares are fixed, so are the sums); the gradients
 * stay within a few percent of the float32 ones (each factor rounded to 8
 * significant bits); and they differ from them where the CPU has the
 * bfloat16 products. */
static void test_bf16_products(void **state) {
    (void)state;
    lf_gate *gate;
    lf_model *m = f16_model("f16b", 512, 9, &gate);
    enum { T = 300 };
    int32_t ids[T], lab[T];
    for (int t = 0; t < T; t++) {
        ids[t] = 3 + (t * 13) % 60;
        lab[t] = t < 40 ? -100 : (7 + t * 5) % 64;
    }
    const lf_train_mode md = {.mode = LF_FUSE_GATE, .gate = gate, .temperature = 1.0f};
    lf_trainable *tr = lf_trainable_new(m, gate, LF_TRAIN_GATE);
    assert_non_null(tr);
    size_t n = 0;
    for (int i = 0; i < lf_trainable_count(tr); i++) n += lf_trainable_param(tr, i)->n;
    float *g[4];
    double loss[4];
    for (int run = 0; run < 4; run++) { /* f32, f32, bf16, bf16 */
        const int want = run < 2 ? LF_PRODUCTS_F32 : LF_PRODUCTS_BF16;
        const int got = lf_set_products(want);
        assert_int_equal(got, lf_cpu_bf16() ? want : LF_PRODUCTS_F32);
        g[run] = malloc(n * sizeof(float));
        assert_non_null(g[run]);
        assert_int_equal(one_step(tr, m, &md, ids, lab, T, &loss[run], g[run]), n);
    }
    lf_set_products(LF_PRODUCTS_F32);
    for (int run = 0; run < 4; run += 2) {
        assert_true(loss[run] == loss[run + 1]);
        assert_memory_equal(g[run], g[run + 1], n * sizeof(float));
    }
    double d2 = 0, f2 = 0;
    for (size_t i = 0; i < n; i++) {
        d2 += ((double)g[2][i] - g[0][i]) * ((double)g[2][i] - g[0][i]);
        f2 += (double)g[0][i] * g[0][i];
    }
    const double rel = sqrt(d2 / f2), lrel = fabs(loss[2] - loss[0]) / fabs(loss[0]);
    fprintf(stderr, "bf16 products: loss %.6f vs %.6f (float32), gradient difference %.2e of its norm\n", loss[2],
            loss[0], rel);
    assert_true(f2 > 0);
    assert_true(rel < 0.06 && lrel < 1e-3);
    if (lf_cpu_bf16()) assert_true(rel > 0);
    else assert_true(rel == 0);
    for (int run = 0; run < 4; run++) free(g[run]);
    lf_trainable_free(tr);
    lf_gate_free(gate);
    lf_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_train_kernels),
        cmocka_unit_test(test_swiglu_backward),
        cmocka_unit_test(test_fixture_gradients),
        cmocka_unit_test(test_finite_differences),
        cmocka_unit_test(test_attention_gemm_path),
        cmocka_unit_test(test_attention_threads),
        cmocka_unit_test(test_step_buffers_reused),
        cmocka_unit_test(test_loss_matches_inference),
        cmocka_unit_test(test_prepacked_weights),
        cmocka_unit_test(test_bf16_products),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
