/* bench.h: timing and statistics shared by the benchmark programs
 * (header-only: every .c file under bench/ is a program of its own). */
#ifndef LF_BENCH_H
#define LF_BENCH_H

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

#endif
