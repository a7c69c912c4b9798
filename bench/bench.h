/* bench.h: timing, statistics and model loading shared by the benchmark
 * programs (header-only: every .c file under bench/ is a program of its own). */
#ifndef LF_BENCH_H
#define LF_BENCH_H

#include "loraflow.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* Monotonic seconds. */
static inline double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static inline int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median [min, max] of r figures (v is sorted in place). */
typedef struct { double med, lo, hi; } bench_stat;

static inline bench_stat bench_stats(double *v, int r) {
    qsort(v, (size_t)r, sizeof *v, bench_cmp_double);
    return (bench_stat){v[r / 2], v[0], v[r - 1]};
}

/* Peak resident memory of this process (VmHWM), in GB; 0 when unknown. */
static inline double bench_peak_rss_gb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &kb) == 1) break;
    fclose(f);
    return kb * 1024.0 / 1e9;
}

/* Attach DIR/lora_0 and DIR/lora_1 (what `loraflow synth` writes) to m and
 * load DIR/gate.safetensors; exits with a message on failure. */
static inline lf_gate *bench_attach_synth(lf_model *m, const char *dir, const char *prog) {
    char a0[4096], a1[4096], gp[4096];
    snprintf(a0, sizeof a0, "%s/lora_0", dir);
    snprintf(a1, sizeof a1, "%s/lora_1", dir);
    snprintf(gp, sizeof gp, "%s/gate.safetensors", dir);
    lf_gate *g = NULL;
    if (lf_model_add_adapter(m, "lora_0", a0) < 0 || lf_model_add_adapter(m, "lora_1", a1) < 0 ||
        !(g = lf_gate_load(gp, m))) {
        fprintf(stderr, "%s: %s: %s\n", prog, dir, lf_last_error());
        exit(1);
    }
    return g;
}

#endif
