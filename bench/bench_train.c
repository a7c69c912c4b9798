/* bench_train: time of one gate-training step (forward + backward of one
 * sequence, gradients of the LoRA-Flow gates) on a model folder written by
 * `loraflow synth` (DIR/lora_0, DIR/lora_1, DIR/gate.safetensors), and the
 * peak resident memory.
 *
 *   build/bench/bench_train -m DIR [-n 512] [-r 5] [-t THREADS] [--prompt-share 0.25]
 *
 * The sequence is n random token ids; the first prompt-share of them carry
 * the label -100 (a prompt: no loss, so no lm_head product there), the rest
 * are answer tokens.  Two figures, median of r runs [min, max]:
 *   - a training step: lf_train (what `loraflow train-gate` runs) on that
 *     one sequence, batch 1, no dropout, r + 1 steps, each timed from the
 *     end of the previous one (the first, which also prepares the weights
 *     once for the run, is shown apart); it includes the AdamW update;
 *   - one lf_grad_to_file call (what `loraflow grad` does): the same
 *     forward and backward with its own setup, no update, after a warm-up
 *     call.
 * Then the arithmetic of a step's products (from the model's shapes and
 * the adapters' adapter_config.json: the forward and input-gradient
 * products of the layer weights, the adapters' four products per
 * projection, causal attention, lm_head at the loss positions; layers
 * recomputed for lack of memory add a forward pass that is not counted),
 * and the float32 floor it sets at the rate of a register-only FMA loop
 * on the kernel threads (AVX-512 or AVX2 machines). */
#include "loraflow.h"
#include "bench.h"
#include "../src/tensor/kernels.h" /* lf_parallel_for, lf_kernels_isa: the kernel threads */

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_RUNS 32

static void die(const char *what) {
    fprintf(stderr, "bench_train: %s: %s\n", what, lf_last_error());
    exit(1);
}

typedef struct {
    double t[MAX_RUNS + 2]; /* t[0]: start; t[i]: end of step i */
    int n;
    double loss;
} step_times;

static void on_step(const lf_train_report *rep, void *user) {
    step_times *st = user;
    if (st->n + 1 < MAX_RUNS + 2) st->t[++st->n] = bench_now();
    st->loss = rep->loss;
}

/* Rank and projections of the PEFT folder dir (adapter_config.json):
 * *mask gets bit p for each of q, k, v, o, gate, up, down it targets;
 * returns the rank, or 0 when the file cannot be read. */
static int adapter_shape(const char *dir, unsigned *mask) {
    static const char *names[7] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    char path[4200];
    if (snprintf(path, sizeof path, "%s/adapter_config.json", dir) >= (int)sizeof path) return 0;
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char buf[1 << 16];
    const size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *j = cJSON_Parse(buf);
    const cJSON *r = cJSON_GetObjectItem(j, "r"), *tm = cJSON_GetObjectItem(j, "target_modules");
    int rank = cJSON_IsNumber(r) ? r->valueint : 0;
    *mask = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, tm)
        for (int p = 0; p < 7; p++)
            if (cJSON_IsString(t) && !strcmp(t->valuestring, names[p])) *mask |= 1u << p;
    cJSON_Delete(j);
    return rank > 0 && *mask ? rank : 0;
}

/* FLOP of one step's products, T tokens, np loss positions (see above);
 * the parts in part[4]: layer weights, adapters, attention, lm_head. */
static double step_flops(const lf_config *c, int T, int np, const int *rank, const unsigned *mask, int k,
                         double part[4]) {
    const double H = c->hidden_size, I = c->intermediate_size, qd = (double)c->n_heads * c->head_dim,
                 kvd = (double)c->n_kv_heads * c->head_dim, L = c->n_layers;
    const double in[7] = {H, H, H, qd, H, H, I}, out[7] = {qd, kvd, kvd, H, I, I, H};
    double w = 0, a = 0;
    for (int p = 0; p < 7; p++) {
        w += in[p] * out[p];
        for (int i = 0; i < k; i++)
            if (mask[i] >> p & 1) a += (double)rank[i] * (in[p] + out[p]);
    }
    part[0] = 2 * 2.0 * T * w * L;            /* forward and input gradient */
    part[1] = 2 * 2.0 * T * a * L;            /* x A^T, z B^T; dy B, dz A */
    part[2] = 6 * 2.0 * qd * T * T / 2 * L;   /* Q K^T and P V, four backward products, causal halves */
    part[3] = 2 * 2.0 * np * c->vocab_size * H; /* logits and their input gradient */
    return part[0] + part[1] + part[2] + part[3];
}

/* A register-only multiply-add loop on every kernel thread: float32
 * GFLOP/s, or 0 where the kernels have no AVX2/AVX-512 path. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FMA_ITERS 100000000L
__attribute__((target("avx512f"))) static float fma_loop_512(void) {
    __m512 a[12], b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++) a[i] = _mm512_set1_ps((float)i);
    for (long n = 0; n < FMA_ITERS; n++)
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) a[i] = _mm512_fmadd_ps(a[i], b, c);
    for (int i = 1; i < 12; i++) a[0] = _mm512_add_ps(a[0], a[i]);
    return _mm512_reduce_add_ps(a[0]);
}
__attribute__((target("avx2,fma"))) static float fma_loop_256(void) {
    __m256 a[12], b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps((float)i);
    for (long n = 0; n < FMA_ITERS; n++)
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) a[i] = _mm256_fmadd_ps(a[i], b, c);
    float v[8], s = 0;
    for (int i = 1; i < 12; i++) a[0] = _mm256_add_ps(a[0], a[i]);
    _mm256_storeu_ps(v, a[0]);
    for (int i = 0; i < 8; i++) s += v[i];
    return s;
}
static volatile float fma_sink;
static void fma_chunk(void *ctx, int chunk) {
    (void)chunk;
    fma_sink = *(const int *)ctx == LF_ISA_AVX512 ? fma_loop_512() : fma_loop_256();
}
static double fma_gflops(void) {
    int isa = lf_kernels_isa();
    if (isa != LF_ISA_AVX512 && isa != LF_ISA_AVX2) return 0;
    const int nt = lf_get_threads();
    double best = 0;
    for (int rep = 0; rep < 3; rep++) { /* the best of three: a shared host's slow moments are not the CPU's rate */
        const double t0 = bench_now();
        lf_parallel_for(fma_chunk, &isa, nt); /* one chunk per thread */
        const double g = 2.0 * FMA_ITERS * 12 * (isa == LF_ISA_AVX512 ? 16 : 8) * nt / (bench_now() - t0) / 1e9;
        if (g > best) best = g;
    }
    return best;
}
#else
static double fma_gflops(void) { return 0; }
#endif

static void usage(void) {
    fputs("usage: bench_train -m DIR [-n 512] [-r 5] [-t THREADS] [--prompt-share 0.25] [--products f32|bf16]\n"
          "  DIR: a folder written by `loraflow synth` (model, lora_0, lora_1, gate.safetensors)\n"
          "  --products bf16: the products with the weights in bfloat16 (lf_set_products)\n",
          stderr);
    exit(2);
}

int main(int argc, char **argv) {
    const char *dir = NULL;
    int n = 512, r = 5, threads = 0, products = LF_PRODUCTS_F32;
    double prompt_share = 0.25;
    for (int i = 1; i < argc; i += 2) { /* flag, value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) usage();
        if (!v) usage();
        if (!strcmp(a, "-m")) dir = v;
        else if (!strcmp(a, "-n")) n = atoi(v);
        else if (!strcmp(a, "-r")) r = atoi(v);
        else if (!strcmp(a, "-t")) threads = atoi(v);
        else if (!strcmp(a, "--prompt-share")) prompt_share = atof(v);
        else if (!strcmp(a, "--products") && (!strcmp(v, "f32") || !strcmp(v, "bf16")))
            products = strcmp(v, "bf16") ? LF_PRODUCTS_F32 : LF_PRODUCTS_BF16;
        else usage();
    }
    if (!dir || n < 2 || r < 1 || r > MAX_RUNS || !(prompt_share >= 0 && prompt_share < 1)) usage();
    if (threads > 0) lf_set_threads(threads);
    if (lf_set_products(products) != products) {
        fprintf(stderr, "bench_train: bfloat16 products are not available on this CPU\n");
        return 2;
    }

    double t0 = bench_now();
    lf_model *m = lf_model_load(dir);
    if (!m) die(dir);
    char data[4096], out[4096];
    lf_gate *g = bench_attach_synth(m, dir, "bench_train");
    const lf_config *c = lf_model_config(m);
    printf("model %s: H=%d I=%d L=%d heads=%d/%d V=%d, loaded in %.1f s; %d threads\n", dir, c->hidden_size,
           c->intermediate_size, c->n_layers, c->n_heads, c->n_kv_heads,
           c->vocab_size, bench_now() - t0, lf_get_threads());

    /* one pre-tokenized sequence */
    const char *tmpdir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(data, sizeof data, "%s/bench_train.%d.jsonl", tmpdir, (int)getpid());
    snprintf(out, sizeof out, "%s/bench_train.%d.safetensors", tmpdir, (int)getpid());
    const int n_prompt = (int)(prompt_share * n);
    int *ids = malloc((size_t)n * sizeof *ids);
    if (!ids) return 1;
    uint64_t st = 12345;
    for (int t = 0; t < n; t++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        ids[t] = t == 0 ? 1 : 3 + (int)((st >> 33) % (uint64_t)(c->vocab_size - 3));
    }
    FILE *f = fopen(data, "w");
    if (!f) { perror(data); return 1; }
    fputs("{\"input_ids\": [", f);
    for (int t = 0; t < n; t++) fprintf(f, "%s%d", t ? ", " : "", ids[t]);
    fputs("], \"labels\": [", f);
    for (int t = 0; t < n; t++) fprintf(f, "%s%d", t ? ", " : "", t < n_prompt ? -100 : ids[t]);
    fputs("]}\n", f);
    if (fclose(f)) { perror(data); return 1; }
    free(ids);
    lf_dataset *d = lf_dataset_load(data, NULL, NULL, 0);
    if (!d) die(data);

    printf("one step: %d tokens (%d prompt tokens with label -100), forward + backward, gradients of the "
           "%d gates only; products %s\n", n, n_prompt, c->n_layers,
           lf_get_products() == LF_PRODUCTS_BF16 ? "in bfloat16 (--products bf16)" : "in float32");
    step_times st_t = {.n = 0};
    lf_train_params tp;
    lf_train_defaults(&tp);
    tp.what = LF_TRAIN_GATES;
    tp.batch = 1;
    tp.dropout = 0;
    tp.epochs = r + 1;
    tp.progress = on_step;
    tp.user = &st_t;
    lf_train_result res;
    st_t.t[0] = bench_now();
    if (lf_train(m, g, d, NULL, &tp, &res)) die("training");
    double s[MAX_RUNS], loss;
    for (int i = 0; i < r; i++) s[i] = st_t.t[i + 2] - st_t.t[i + 1];
    bench_stat sec = bench_stats(s, r);
    const double med_step = sec.med;
    printf("gate-training step (lf_train): %.2f s median of %d [%.2f, %.2f]; first step %.2f s "
           "(with the weights' one-time preparation); loss %.4f\n",
           sec.med, r, sec.lo, sec.hi, st_t.t[1] - st_t.t[0], st_t.loss);
    if (lf_grad_to_file(m, g, 1.0f, LF_TRAIN_GATES, d, out, &loss)) die("warm-up step");
    for (int i = 0; i < r; i++) {
        double a = bench_now();
        if (lf_grad_to_file(m, g, 1.0f, LF_TRAIN_GATES, d, out, &loss)) die("step");
        s[i] = bench_now() - a;
    }
    sec = bench_stats(s, r);
    printf("one lf_grad_to_file call (loraflow grad): %.2f s median of %d [%.2f, %.2f]; loss %.4f\n", sec.med, r,
           sec.lo, sec.hi, loss);
    printf("peak resident memory %.2f GB\n", bench_peak_rss_gb());

    int rank[2] = {0, 0};
    unsigned mask[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        char ad[4096];
        snprintf(ad, sizeof ad, "%s/lora_%d", dir, i);
        rank[i] = adapter_shape(ad, &mask[i]);
    }
    if (rank[0] && rank[1]) {
        double part[4];
        const double fl = step_flops(c, n, n - 1 - (n_prompt > 0 ? n_prompt - 1 : 0), rank, mask, 2, part);
        const double peak = fma_gflops();
        printf("products of a step: %.3g TFLOP (layer weights %.3g, adapters %.3g, attention %.3g, lm_head %.3g; "
               "recomputed layers not counted): %.0f GFLOP/s in a training step",
               fl / 1e12, part[0] / 1e12, part[1] / 1e12, part[2] / 1e12, part[3] / 1e12, fl / med_step / 1e9);
        if (peak > 0 && lf_get_products() == LF_PRODUCTS_F32)
            printf(";\n  a float32 FMA loop on %d threads: %.0f GFLOP/s, so the products alone take at least %.3g s "
                   "(the step at %.0f %% of that rate)", lf_get_threads(), peak, fl / peak / 1e9,
                   100 * fl / med_step / 1e9 / peak);
        printf("\n");
    }
    unlink(data);
    unlink(out);
    lf_dataset_free(d);
    lf_gate_free(g);
    lf_model_free(m);
    return 0;
}
