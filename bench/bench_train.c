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
 *     call. */
#include "loraflow.h"
#include "bench.h"

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
    unlink(data);
    unlink(out);
    lf_dataset_free(d);
    lf_gate_free(g);
    lf_model_free(m);
    return 0;
}
