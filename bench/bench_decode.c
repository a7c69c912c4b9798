/* bench_decode: prompt processing and generation speed of base, static
 * 2-LoRA and LoRA-Flow 2-LoRA on a model folder written by `loraflow synth`
 * (DIR/lora_0, DIR/lora_1, DIR/gate.safetensors), in the stored precision
 * and optionally with --quantize q8 (--q8-adapters: the adapters in 8
 * bits too, in every sitting); the machine's memory bandwidth, and
 * each generation figure as a fraction of its floor (the bytes of weights
 * one token reads / the read bandwidth, measured by a read loop that takes
 * turns with the generated tokens).  Optionally runs
 * llama.cpp's llama-cli on the same weights converted to GGUF (not part of
 * this repository: give the binary and the folder of converted files) in
 * the same sitting and prints the ratios.
 *
 *   build/bench/bench_decode -m DIR [-p 512] [-n 128] [-r 5] [-t THREADS] [--q8] [--no-f16] [--q8-adapters]
 *                            [--llama-cli PATH --gguf-dir GDIR]
 *
 * GDIR holds base-f16.gguf, base-q8_0.gguf, lora_0-f16.gguf, lora_1-f16.gguf (the names
 * say what the converters were asked for; llama.cpp c392e509's LoRA converter
 * writes F32 tensors whatever --outtype says).
 * Figures: median of r runs [min, max] after a short warm-up.  loraflow's
 * modes take turns: prompts run by run, generated tokens token by token
 * (each mode in its own session) and with the read loop, so that a host
 * whose speed drifts within seconds slows them alike; "vs base" is the
 * median of run i's generation speed over base's run i.  llama.cpp's run
 * i (base, then static 2-LoRA) follows loraflow's run i, so that the two
 * engines too are measured in the same minutes. */
#include "loraflow.h"
#include "bench.h"
#include "../src/tensor/kernels.h" /* lf_parallel_for: the kernel threads */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define MAX_RUNS 32

static void die(const char *what) {
    fprintf(stderr, "bench_decode: %s: %s\n", what, lf_last_error());
    exit(1);
}

static const char *fmt3(char *buf, size_t n, bench_stat s) {
    snprintf(buf, n, "%.2f [%.2f, %.2f]", s.med, s.lo, s.hi);
    return buf;
}

/* ============================ machine ============================ */

static void cpu_name(char *buf, size_t n) {
    snprintf(buf, n, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "model name", 10)) {
            char *p = strchr(line, ':');
            if (p) {
                p += 2;
                p[strcspn(p, "\n")] = 0;
                snprintf(buf, n, "%s", p);
            }
            break;
        }
    }
    fclose(f);
}

typedef struct { double copy, triad, read; } bandwidth;

/* The loops run on loraflow's kernel threads (lf_parallel_for, 4 MiB
 * chunks), the way decoding does, so that a thread the system preempts
 * costs the measurement what it costs decoding. */
#define BW_N ((size_t)1 << 28) /* floats per array: 1 GiB */
#define BW_CHUNK ((size_t)1 << 20)
typedef struct { float *a, *b, *c; size_t n; int op; double sums[BW_N / BW_CHUNK]; } bw_job;

static void bw_chunk(void *ctx, int k) {
    bw_job *j = ctx;
    const size_t i0 = (size_t)k * BW_CHUNK, i1 = i0 + BW_CHUNK;
    if (j->op == 0) {
        for (size_t i = i0; i < i1; i++) j->a[i] = 1, j->b[i] = 2, j->c[i] = 3;
    } else if (j->op == 1) {
        for (size_t i = i0; i < i1; i++) j->c[i] = j->a[i];
    } else if (j->op == 2) {
        for (size_t i = i0; i < i1; i++) j->a[i] = j->b[i] + 1.5f * j->c[i];
    } else { /* SIMD dot of the chunk with itself: every byte read once from memory */
        j->sums[k] = lf_dot_f32(j->b + i0, j->b + i0, (int)BW_CHUNK);
    }
}

static double bw_pass(bw_job *j, int op) {
    j->op = op;
    double t0 = bench_now();
    lf_parallel_for(bw_chunk, j, (int)(j->n / BW_CHUNK));
    return bench_now() - t0;
}

/* An array of the read loops in anonymous memory with huge pages, as the
 * weights are placed; exits when there is no memory. */
static float *huge_floats(size_t n) {
    float *p = mmap(NULL, n * sizeof(float), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(1); }
    madvise(p, n * sizeof(float), MADV_HUGEPAGE);
    return p;
}

/* STREAM-style copy / triad and a read-only sum over 1 GiB arrays with all
 * threads (bytes counted without write-allocate traffic), at the start of
 * a sitting.  Decoding only reads weights: its floors use the read loop,
 * run again between the generated tokens (run_modes). */
static bandwidth measure_bandwidth(int runs) {
    const size_t bytes = BW_N * sizeof(float);
    static bw_job j;
    j.a = huge_floats(BW_N);
    j.b = huge_floats(BW_N);
    j.c = huge_floats(BW_N);
    j.n = BW_N;
    bw_pass(&j, 0);
    double cp[MAX_RUNS], tr[MAX_RUNS], rd[MAX_RUNS];
    for (int r = 0; r < runs; r++) {
        cp[r] = 2.0 * bytes / bw_pass(&j, 1) / 1e9;
        tr[r] = 3.0 * bytes / bw_pass(&j, 2) / 1e9;
        rd[r] = 1.0 * bytes / bw_pass(&j, 3) / 1e9;
    }
    munmap(j.a, bytes); munmap(j.b, bytes); munmap(j.c, bytes);
    /* the peak resident memory printed later is loraflow's, not these arrays' */
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) { fputs("5", f); fclose(f); }
    return (bandwidth){bench_stats(cp, runs).med, bench_stats(tr, runs).med, bench_stats(rd, runs).med};
}

/* ============================ loraflow ============================ */

typedef struct { bench_stat pp, tg; } result;

/* The read loop that takes turns with the modes: RD_PASSES passes over
 * RD_N floats (1 GiB in all, about what a token reads), so that the floor
 * is measured in the same seconds as the tokens. */
#define RD_N ((size_t)1 << 26) /* 256 MiB */
#define RD_PASSES 4

/* One run of every mode, each in its own session: a prompt of p tokens in
 * one pass (the modes one after the other), then n tokens one at a time,
 * the modes and the read loop taking turns token by token (in a rotating
 * order), so that a host whose speed drifts within seconds slows them
 * alike.  Each mode's generation time is the sum of its own tokens' times;
 * *read is the read loop's GB/s over the run. */
static void run_modes(lf_session *s[3], bw_job *rd, int V, int p, int n, double pp[3], double tg[3], double *read) {
    int32_t *ids = malloc((size_t)p * sizeof *ids);
    float *logits = malloc((size_t)V * sizeof(float));
    if (!ids || !logits) { fprintf(stderr, "bench_decode: out of memory\n"); exit(1); }
    for (int i = 0; i < p; i++) ids[i] = 3 + (i * 7919) % (V - 3);
    lf_outputs o = {.last_logits = logits};
    double gen[4] = {0, 0, 0, 0};
    for (int mode = 0; mode < 3; mode++) {
        lf_session_reset(s[mode]);
        double t0 = bench_now();
        if (lf_session_forward(s[mode], ids, p, &o)) die("prompt");
        pp[mode] = p / (bench_now() - t0);
    }
    for (int i = 0; i < n; i++) {
        int32_t id = 3 + (i * 104729) % (V - 3);
        for (int j = 0; j < 4; j++) {
            const int mode = (i + j) % 4; /* each first, second, ... in turn; 3: the read loop */
            if (mode == 3) {
                for (int q = 0; q < RD_PASSES; q++) gen[3] += bw_pass(rd, 3);
                continue;
            }
            double t0 = bench_now();
            if (lf_session_forward(s[mode], &id, 1, &o)) die("decode");
            gen[mode] += bench_now() - t0;
        }
    }
    for (int mode = 0; mode < 3; mode++) tg[mode] = n / gen[mode];
    *read = (double)n * RD_PASSES * RD_N * sizeof(float) / gen[3] / 1e9;
    free(ids);
    free(logits);
}

static const char *mode_names[3] = {"base", "static 2-LoRA", "LoRA-Flow 2-LoRA"};

/* ============================ llama.cpp ============================ */

/* "... 123.45 tokens per second)" on the line holding key. */
static int parse_tps(const char *line, const char *key, double *v) {
    if (!strstr(line, key)) return 0;
    const char *e = strstr(line, "tokens per second");
    if (!e) return 0;
    const char *b = e;
    while (b > line && b[-1] == ' ') b--;
    while (b > line && (b[-1] == '.' || (b[-1] >= '0' && b[-1] <= '9'))) b--;
    *v = atof(b);
    return 1;
}

/* One llama-cli run: prompt file of p tokens (BOS + p-1 words), n new. */
static int llama_once(const char *cli, const char *gdir, const char *base, int lora, const char *prompt, int n,
                      int threads, double *pp, double *tg) {
    char cmd[8192];
    int k = snprintf(cmd, sizeof cmd, "'%s' -m '%s/%s' -f '%s' -n %d --ignore-eos -no-cnv --no-mmap -t %d -c %d "
                                     "-b 512 -ub 512 --temp 0 -s 1",
                     cli, gdir, base, prompt, n, threads, 2048);
    if (lora)
        k += snprintf(cmd + k, sizeof cmd - (size_t)k,
                      " --lora-scaled '%s/lora_0-f16.gguf' 0.5 --lora-scaled '%s/lora_1-f16.gguf' 0.5", gdir, gdir);
    snprintf(cmd + k, sizeof cmd - (size_t)k, " 2>&1 </dev/null");
    FILE *f = popen(cmd, "r");
    if (!f) return -1;
    char line[4096];
    int got = 0;
    while (fgets(line, sizeof line, f)) {
        if (!strstr(line, "llama_perf_context_print")) continue;
        if (parse_tps(line, "prompt eval time", pp)) got |= 1;
        else if (parse_tps(line, "eval time", tg)) got |= 2;
    }
    int rc = pclose(f);
    return got == 3 && rc == 0 ? 0 : -1;
}

/* llama.cpp's side of a sitting: the binary, the converted files, the
 * prompt file and the threads. */
typedef struct {
    const char *cli, *gdir, *prompt;
    int threads;
} llama_args;

/* Write a prompt of p tokens for llama-cli (BOS + p - 1 words) into a new
 * temporary file; returns its name in buf. */
static void llama_prompt(char *buf, size_t n, int p) {
    snprintf(buf, n, "/tmp/bench_decode_promptXXXXXX");
    int fd = mkstemp(buf);
    if (fd < 0) { perror("mkstemp"); exit(1); }
    FILE *pf = fdopen(fd, "w");
    for (int i = 0; i + 1 < p; i++) fputs(i ? " a" : "a", pf); /* one token per word, after BOS */
    fclose(pf);
}

/* Run i of llama.cpp's base and static 2-LoRA. */
static void llama_run(const llama_args *ll, int q8, int n, double pp[2], double tg[2]) {
    for (int mode = 0; mode < 2; mode++)
        if (llama_once(ll->cli, ll->gdir, q8 ? "base-q8_0.gguf" : "base-f16.gguf", mode, ll->prompt, n, ll->threads,
                       &pp[mode], &tg[mode])) {
            fprintf(stderr, "bench_decode: llama-cli failed or printed no timings (mode %s)\n", mode_names[mode]);
            exit(1);
        }
}

static void llama_print(const llama_args *ll, int q8, double pp[2][MAX_RUNS], double tg[2][MAX_RUNS], int r,
                        result out[2]) {
    printf("\nllama.cpp (%s), %s base, the LoRAs of lora_0/1-f16.gguf (tensor types as its converter wrote them) "
           "applied unmerged at scale 0.5 (--lora-scaled), --no-mmap; its runs alternate with loraflow's\n", ll->cli,
           q8 ? "Q8_0" : "F16");
    printf("%-18s %24s %24s\n", "mode", "prompt tok/s", "generate tok/s");
    for (int mode = 0; mode < 2; mode++) {
        out[mode].pp = bench_stats(pp[mode], r);
        out[mode].tg = bench_stats(tg[mode], r);
        char b1[64], b2[64];
        printf("%-18s %24s %24s\n", mode_names[mode], fmt3(b1, sizeof b1, out[mode].pp), fmt3(b2, sizeof b2, out[mode].tg));
    }
    fflush(stdout);
}

/* ============================ a sitting ============================ */

/* Load DIR with its two adapters and gate, run the three modes (and
 * llama.cpp's two when ll is set). */
static void bench_loraflow(const char *dir, int q8, int q8a, int p, int n, int r, result out[3], const llama_args *ll,
                           result ll_out[2]) {
    lf_load_options lo; /* LORAFLOW_LAYOUT=rows applies (A/B of the column blocks) */
    lf_load_options_default(&lo);
    lo.placement = LF_PLACE_AUTO;
    lo.quantize = q8 ? LF_QUANT_Q8 : LF_QUANT_NONE;
    lo.quantize_adapters = q8a ? LF_QUANT_Q8 : LF_QUANT_NONE;
    double t0 = bench_now();
    lf_model *m = lf_model_load_opts(dir, &lo);
    if (!m) die(dir);
    lf_gate *g = bench_attach_synth(m, dir, "bench_decode");
    const double load_s = bench_now() - t0;
    const lf_config *c = lf_model_config(m);
    const double base_b = (double)lf_model_decode_bytes(m, 0), lora_b = (double)lf_model_decode_bytes(m, 1);
    printf("\nloraflow, %s weights (%s), loaded in %.1f s; one token reads %.3f GB (base) / %.3f GB (with the adapters)\n",
           q8 ? (q8a ? "q8 (--quantize q8; adapters q8, --quantize-adapters q8)" : "q8 (--quantize q8; adapters F16)")
              : (q8a ? "stored (F16; adapters q8, --quantize-adapters q8)" : "stored (F16)"),
           lf_model_placement(m) != LF_PLACE_COPY ? "memory-mapped"
           : q8 || lo.layout == LF_LAYOUT_ROWS   ? "copied to anonymous memory, huge pages"
                                                 : "copied to anonymous memory, huge pages; column blocks past 2048 columns",
           load_s,
           base_b / 1e9, lora_b / 1e9);
    printf("%-18s %24s %24s %8s %10s\n", "mode", "prompt tok/s", "generate tok/s", "vs base", "of floor");
    lf_session *s[3];
    float w[2] = {0.5f, 0.5f};
    for (int mode = 0; mode < 3; mode++)
        if (!(s[mode] = lf_session_new(m, p + n))) die("session");
    lf_session_set_base(s[0]);
    if (lf_session_set_static(s[1], w, 2)) die("static");
    if (lf_session_set_gate(s[2], g, 1.0f)) die("gate");
    static bw_job rd;
    rd.n = RD_N;
    rd.b = huge_floats(RD_N);
    for (size_t i = 0; i < RD_N; i++) rd.b[i] = 1;
    double pp[3][MAX_RUNS], tg[3][MAX_RUNS], rdbw[MAX_RUNS], x[3], y[3];
    run_modes(s, &rd, c->vocab_size, p < 16 ? p : 16, 4, x, y, &rdbw[0]); /* warm-up */
    double llpp[2][MAX_RUNS], lltg[2][MAX_RUNS];
    for (int i = 0; i < r; i++) {
        run_modes(s, &rd, c->vocab_size, p, n, x, y, &rdbw[i]);
        for (int mode = 0; mode < 3; mode++) pp[mode][i] = x[mode], tg[mode][i] = y[mode];
        if (ll) { /* llama.cpp's run i next, in the same minutes */
            double a[2], b[2];
            llama_run(ll, q8, n, a, b);
            for (int mode = 0; mode < 2; mode++) llpp[mode][i] = a[mode], lltg[mode][i] = b[mode];
        }
    }
    const bench_stat rds = bench_stats(rdbw, r);
    const double bw = rds.med;
    double ratio[3][MAX_RUNS]; /* paired, before bench_stats sorts the runs */
    for (int mode = 0; mode < 3; mode++)
        for (int i = 0; i < r; i++) ratio[mode][i] = tg[mode][i] / tg[0][i];
    for (int mode = 0; mode < 3; mode++) {
        out[mode].pp = bench_stats(pp[mode], r);
        out[mode].tg = bench_stats(tg[mode], r);
        const double floor_tps = bw * 1e9 / (mode == 0 ? base_b : lora_b);
        char b1[64], b2[64];
        printf("%-18s %24s %24s %7.3fx %9.0f%%\n", mode_names[mode], fmt3(b1, sizeof b1, out[mode].pp),
               fmt3(b2, sizeof b2, out[mode].tg), bench_stats(ratio[mode], r).med, 100.0 * out[mode].tg.med / floor_tps);
    }
    char b3[64];
    printf("(floor: %.1f tok/s base, %.1f tok/s with the adapters, at the read loop's %s GB/s between the tokens;\n"
           " peak resident %.2f GB, of which %.2f GB the read loop's array)\n",
           bw * 1e9 / base_b, bw * 1e9 / lora_b, fmt3(b3, sizeof b3, rds), bench_peak_rss_gb(),
           RD_N * sizeof(float) / 1e9);
    fflush(stdout);
    munmap(rd.b, RD_N * sizeof(float));
    if (ll) llama_print(ll, q8, llpp, lltg, r, ll_out);
    for (int mode = 0; mode < 3; mode++) lf_session_free(s[mode]);
    lf_gate_free(g);
    lf_model_free(m);
}

static void print_ratios(const char *what, const result lf[3], const result ll[2]) {
    printf("\n%s: loraflow / llama.cpp (medians)\n", what);
    printf("  generation: base %.2fx, static 2-LoRA %.2fx, LoRA-Flow vs llama.cpp static %.2fx\n",
           lf[0].tg.med / ll[0].tg.med, lf[1].tg.med / ll[1].tg.med, lf[2].tg.med / ll[1].tg.med);
    printf("  prompt:     base %.2fx, static 2-LoRA %.2fx, LoRA-Flow vs llama.cpp static %.2fx\n",
           lf[0].pp.med / ll[0].pp.med, lf[1].pp.med / ll[1].pp.med, lf[2].pp.med / ll[1].pp.med);
}

int main(int argc, char **argv) {
    const char *dir = NULL, *cli = NULL, *gdir = NULL;
    int p = 512, n = 128, r = 5, threads = 0, q8 = 0, f16 = 1, q8a = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-m") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "-p") && i + 1 < argc) p = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-n") && i + 1 < argc) n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) r = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-t") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--q8")) q8 = 1;
        else if (!strcmp(argv[i], "--no-f16")) f16 = 0;
        else if (!strcmp(argv[i], "--q8-adapters")) q8a = 1;
        else if (!strcmp(argv[i], "--llama-cli") && i + 1 < argc) cli = argv[++i];
        else if (!strcmp(argv[i], "--gguf-dir") && i + 1 < argc) gdir = argv[++i];
        else {
            fprintf(stderr, "usage: bench_decode -m DIR [-p PROMPT_TOKENS] [-n NEW_TOKENS] [-r RUNS] [-t THREADS] [--q8] "
                            "[--no-f16] [--q8-adapters] [--llama-cli PATH --gguf-dir GDIR]\n"
                            "DIR is a folder written by `loraflow synth` (lora_0, lora_1, gate.safetensors)\n");
            return 2;
        }
    }
    if (!dir || p < 2 || n < 1 || r < 1 || r > MAX_RUNS || (!cli != !gdir)) {
        fprintf(stderr, "bench_decode: -m DIR is required; p >= 2; 1 <= r <= %d; --llama-cli goes with --gguf-dir\n",
                MAX_RUNS);
        return 2;
    }
    if (threads) lf_set_threads(threads);
    char cpu[256];
    cpu_name(cpu, sizeof cpu);
    printf("machine: %s, %d threads, kernels: %s (lf_kernels); model %s\n", cpu, lf_get_threads(),
           getenv("LORAFLOW_NO_SIMD") ? "portable" : "best available", dir);
    printf("prompt %d tokens in one pass, then %d generated one by one; median of %d runs [min, max]\n", p, n, r);
    bandwidth bw = measure_bandwidth(r < 3 ? 3 : r);
    printf("memory bandwidth (1 GiB arrays, %d threads): copy %.1f GB/s, triad %.1f GB/s, read %.1f GB/s\n"
           "(the floors use the read loop again, run between the generated tokens)\n",
           lf_get_threads(), bw.copy, bw.triad, bw.read);
    result lf16[3], lf8[3], ll16[2], ll8[2];
    char prompt[64];
    llama_args la = {cli, gdir, prompt, lf_get_threads()};
    if (cli) llama_prompt(prompt, sizeof prompt, p);
    if (f16) bench_loraflow(dir, 0, q8a, p, n, r, lf16, cli ? &la : NULL, ll16);
    if (q8) bench_loraflow(dir, 1, q8a, p, n, r, lf8, cli ? &la : NULL, ll8);
    if (cli) {
        remove(prompt);
        if (f16) print_ratios("F16", lf16, ll16);
        if (q8) print_ratios("q8 (llama.cpp Q8_0)", lf8, ll8);
    }
    return 0;
}
