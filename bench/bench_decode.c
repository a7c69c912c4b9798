/* bench_decode: prompt-processing and decoding speed of base, static
 * 2-LoRA and LoRA-Flow 2-LoRA on one model folder written by
 * `loraflow synth` (DIR/lora_0, DIR/lora_1, DIR/gate.safetensors).
 *
 *   build/bench/bench_decode -m DIR [-p 64] [-n 32] [-r 3] [-t threads]
 *
 * Prints tokens per second (median of r runs, with min and max) and the
 * ratio of each mode to the base model. */
#include "loraflow.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void die(const char *what) {
    fprintf(stderr, "bench_decode: %s: %s\n", what, lf_last_error());
    exit(1);
}

typedef struct { double pp[16], tg[16]; } runs;

/* One run: a prompt of p tokens in one pass, then n tokens one at a time. */
static void run_once(lf_session *s, int V, int p, int n, double *pp, double *tg) {
    int32_t *ids = malloc((size_t)p * sizeof *ids);
    float *logits = malloc((size_t)V * sizeof(float));
    for (int i = 0; i < p; i++) ids[i] = 3 + (i * 7919) % (V - 3);
    lf_session_reset(s);
    lf_outputs o = {.last_logits = logits};
    double t0 = now();
    if (lf_session_forward(s, ids, p, &o)) die("prompt");
    double t1 = now();
    for (int i = 0; i < n; i++) {
        int32_t id = 3 + (i * 104729) % (V - 3);
        if (lf_session_forward(s, &id, 1, &o)) die("decode");
    }
    double t2 = now();
    *pp = p / (t1 - t0);
    *tg = n / (t2 - t1);
    free(ids);
    free(logits);
}

int main(int argc, char **argv) {
    const char *dir = NULL;
    int p = 64, n = 32, r = 3, threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-m") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "-p") && i + 1 < argc) p = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-n") && i + 1 < argc) n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) r = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-t") && i + 1 < argc) threads = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_decode -m DIR [-p PROMPT_TOKENS] [-n NEW_TOKENS] [-r RUNS] [-t THREADS]\n"
                            "DIR is a folder written by `loraflow synth` (lora_0, lora_1, gate.safetensors)\n");
            return 2;
        }
    }
    if (!dir || p < 1 || n < 1 || r < 1 || r > 16) {
        fprintf(stderr, "bench_decode: -m DIR is required; 1 <= r <= 16\n");
        return 2;
    }
    if (threads) lf_set_threads(threads);
    lf_model *m = lf_model_load(dir);
    if (!m) die(dir);
    char a0[4096], a1[4096], gp[4096];
    snprintf(a0, sizeof a0, "%s/lora_0", dir);
    snprintf(a1, sizeof a1, "%s/lora_1", dir);
    snprintf(gp, sizeof gp, "%s/gate.safetensors", dir);
    if (lf_model_add_adapter(m, "lora_0", a0) < 0 || lf_model_add_adapter(m, "lora_1", a1) < 0) die("adapters");
    lf_gate *g = lf_gate_load(gp, m);
    if (!g) die(gp);
    const lf_config *c = lf_model_config(m);
    lf_model_info info;
    lf_model_get_info(m, &info);
    lf_session *s = lf_session_new(m, p + n);
    if (!s) die("session");
    printf("model %s: H=%d I=%d L=%d heads=%d/%d V=%d, %.2f GiB of weights; %d threads\n", dir, c->hidden_size,
           c->intermediate_size, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size,
           info.weight_bytes / 1073741824.0, lf_get_threads());
    printf("prompt %d tokens, then %d generated; median of %d runs [min, max]\n\n", p, n, r);
    printf("%-22s %22s %22s %8s\n", "mode", "prompt tok/s", "generate tok/s", "vs base");
    static const char *names[3] = {"base", "static 2-LoRA", "LoRA-Flow 2-LoRA"};
    double base_tg = 0;
    for (int mode = 0; mode < 3; mode++) {
        float w[2] = {0.5f, 0.5f};
        if (mode == 0) lf_session_set_base(s);
        else if (mode == 1) lf_session_set_static(s, w, 2);
        else lf_session_set_gate(s, g, 1.0f);
        runs x;
        run_once(s, c->vocab_size, p < 8 ? p : 8, 2, &x.pp[0], &x.tg[0]); /* warm-up: page in the weights */
        for (int i = 0; i < r; i++) run_once(s, c->vocab_size, p, n, &x.pp[i], &x.tg[i]);
        qsort(x.pp, (size_t)r, sizeof(double), cmp_double);
        qsort(x.tg, (size_t)r, sizeof(double), cmp_double);
        double tg = x.tg[r / 2];
        if (mode == 0) base_tg = tg;
        char b1[64], b2[64];
        snprintf(b1, sizeof b1, "%.2f [%.2f, %.2f]", x.pp[r / 2], x.pp[0], x.pp[r - 1]);
        snprintf(b2, sizeof b2, "%.2f [%.2f, %.2f]", tg, x.tg[0], x.tg[r - 1]);
        printf("%-22s %22s %22s %7.2fx\n", names[mode], b1, b2, tg / base_tg);
        fflush(stdout);
    }
    lf_session_free(s);
    lf_gate_free(g);
    lf_model_free(m);
    return 0;
}
