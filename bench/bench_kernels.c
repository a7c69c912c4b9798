/* bench_kernels: the machine's memory bandwidth (copy / triad / read
 * loops over 1 GiB arrays, all threads) and the speed of loraflow's
 * kernels on their own: the decoding matrix-vector product (GB/s of
 * weights streamed, against that bandwidth; a wide matrix row-major and in
 * column blocks), the prompt GEMM (GFLOP/s),
 * per weight dtype and instruction-set path, and decoding attention (one
 * token of the 1b shape over 576 cached positions, one thread).
 *
 *   build/bench/bench_kernels [-t THREADS] [-r RUNS] [-isa avx512|avx2|portable]
 */
#include "loraflow.h"
#include "bench.h"
#include "../src/tensor/kernels.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static double median(double *v, int n) {
    return bench_stats(v, n).med;
}

static void *huge_alloc(size_t n) {
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(1); }
    madvise(p, n, MADV_HUGEPAGE);
    return p;
}

/* Copy (c = a), triad (a = b + s c) and read (sum of b) over n floats,
 * STREAM-style byte counts (no write-allocate traffic). */
static void bandwidth(int runs) {
    const size_t n = (size_t)1 << 28; /* 1 GiB per array */
    float *a = huge_alloc(n * 4), *b = huge_alloc(n * 4), *c = huge_alloc(n * 4);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) { a[i] = 1; b[i] = 2; c[i] = 3; }
    double cp[32], tr[32], rd[32];
    for (int r = 0; r < runs; r++) {
        double t0 = bench_now();
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) c[i] = a[i];
        double t1 = bench_now();
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) a[i] = b[i] + 1.5f * c[i];
        double t2 = bench_now();
        float s = 0;
#pragma omp parallel for schedule(static) reduction(+ : s)
        for (size_t i = 0; i < n; i += 16) {
            float p = 0;
            for (int j = 0; j < 16; j++) p += b[i + j];
            s += p;
        }
        double t3 = bench_now();
        if (s == 12345) printf(" ");
        cp[r] = 2.0 * n * 4 / (t1 - t0) / 1e9;
        tr[r] = 3.0 * n * 4 / (t2 - t1) / 1e9;
        rd[r] = 1.0 * n * 4 / (t3 - t2) / 1e9;
    }
    printf("memory bandwidth (1 GiB arrays, %d threads, median of %d): copy %.1f GB/s, triad %.1f GB/s, read %.1f GB/s\n",
           omp_get_max_threads(), runs, median(cp, runs), median(tr, runs), median(rd, runs));
    munmap(a, n * 4); munmap(b, n * 4); munmap(c, n * 4);
}

/* A set of matrices larger than any cache, as decoding sees them. */
static void matvec_speed(lf_dtype t, const char *name, int runs) {
    const int rows = 5632, cols = 2048, nmat = 48; /* 48 x 23 MB (F16) */
    lf_mat src = {.dtype = LF_F32, .data = NULL, .rows = rows, .cols = cols};
    float *f = malloc((size_t)rows * cols * sizeof(float));
    for (size_t i = 0; i < (size_t)rows * cols; i++) f[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    src.data = f;
    lf_mat W[48];
    size_t bytes = 0;
    for (int i = 0; i < nmat; i++) {
        if (t == LF_Q8) {
            void *d = huge_alloc(lf_q8_bytes(rows, cols));
            lf_q8_quantize(d, &src, &W[i]);
        } else {
            size_t es = t == LF_F32 ? 4 : 2;
            uint16_t *d = huge_alloc((size_t)rows * cols * es);
            for (size_t j = 0; j < (size_t)rows * cols; j++) {
                if (t == LF_F32) ((float *)d)[j] = f[j];
                else d[j] = t == LF_F16 ? lf_f32_to_f16(f[j]) : lf_f32_to_bf16(f[j]);
            }
            W[i] = (lf_mat){.dtype = t, .data = d, .rows = rows, .cols = cols};
        }
        bytes += lf_mat_bytes(&W[i]);
    }
    float *x = malloc((size_t)cols * sizeof(float)), *y = malloc((size_t)rows * sizeof(float));
    for (int i = 0; i < cols; i++) x[i] = 0.01f * (float)(i % 100);
    double gbs[32];
    for (int r = 0; r < runs; r++) {
        double t0 = bench_now();
        for (int i = 0; i < nmat; i++) {
            lf_matvec_job j = {&W[i], x, y, 0, NULL, NULL};
            lf_matvec(&j, 1);
        }
        gbs[r] = bytes / (bench_now() - t0) / 1e9;
    }
    printf("  matvec %-5s %5d x %d, %.2f GB of weights: %6.1f GB/s\n", name, rows, cols, bytes / 1e9, median(gbs, runs));
    for (int i = 0; i < nmat; i++) munmap((void *)W[i].data, lf_mat_bytes(&W[i]));
    free(f); free(x); free(y);
}

/* The down projection's shape (x of 22 KiB), row-major against column
 * blocks (the layout a copied model gives it, kernels.h), the two taking
 * turns run by run: the ratio is the median of the runs' ratios. */
static void colblock_speed(int runs) {
    const int rows = 2048, cols = 5632, nmat = 48, cb = lf_colblock_for(LF_F16, cols);
    lf_mat W[48], Wb[48];
    size_t bytes = 0;
    for (int i = 0; i < nmat; i++) {
        uint16_t *d = huge_alloc((size_t)rows * cols * 2);
        for (size_t j = 0; j < (size_t)rows * cols; j++) d[j] = lf_f32_to_f16((float)((j * 2654435761u) % 1000) / 1000.0f - 0.5f);
        W[i] = (lf_mat){.dtype = LF_F16, .data = d, .rows = rows, .cols = cols};
        lf_mat_to_colblocks(huge_alloc((size_t)rows * cols * 2), &W[i], cb, &Wb[i]);
        bytes += lf_mat_bytes(&W[i]);
    }
    float *x = malloc((size_t)cols * sizeof(float)), *y = malloc((size_t)rows * sizeof(float));
    for (int i = 0; i < cols; i++) x[i] = 0.01f * (float)(i % 100);
    double g[2][32], ratio[32];
    for (int r = 0; r < runs; r++) {
        for (int k = 0; k < 2; k++) {
            const lf_mat *M = (r + k) % 2 ? Wb : W;
            double t0 = bench_now();
            for (int i = 0; i < nmat; i++) {
                lf_matvec_job j = {&M[i], x, y, 0, NULL, NULL};
                lf_matvec(&j, 1);
            }
            g[M == Wb][r] = bytes / (bench_now() - t0) / 1e9;
        }
        ratio[r] = g[1][r] / g[0][r];
    }
    printf("  matvec F16    %d x %d (x of %d KiB), %.2f GB: row-major %6.1f GB/s, column blocks of %d %6.1f GB/s (%.2fx)\n",
           rows, cols, cols * 4 / 1024, bytes / 1e9, median(g[0], runs), cb, median(g[1], runs), median(ratio, runs));
    for (int i = 0; i < nmat; i++) {
        munmap((void *)W[i].data, lf_mat_bytes(&W[i]));
        munmap((void *)Wb[i].data, lf_mat_bytes(&W[i]));
    }
    free(x); free(y);
}

static void gemm_speed(lf_dtype t, const char *name, int runs) {
    const int rows = 2048, cols = 2048, T = 512;
    float *f = malloc((size_t)rows * cols * sizeof(float));
    for (size_t i = 0; i < (size_t)rows * cols; i++) f[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    lf_mat src = {.dtype = LF_F32, .data = f, .rows = rows, .cols = cols}, W;
    void *d;
    if (t == LF_Q8) {
        d = malloc(lf_q8_bytes(rows, cols));
        lf_q8_quantize(d, &src, &W);
    } else {
        size_t es = t == LF_F32 ? 4 : 2;
        d = malloc((size_t)rows * cols * es);
        for (size_t j = 0; j < (size_t)rows * cols; j++) {
            if (t == LF_F32) ((float *)d)[j] = f[j];
            else ((uint16_t *)d)[j] = t == LF_F16 ? lf_f32_to_f16(f[j]) : lf_f32_to_bf16(f[j]);
        }
        W = (lf_mat){.dtype = t, .data = d, .rows = rows, .cols = cols};
    }
    float *x = malloc((size_t)T * cols * sizeof(float)), *y = malloc((size_t)T * rows * sizeof(float));
    for (size_t i = 0; i < (size_t)T * cols; i++) x[i] = 0.01f * (float)(i % 100);
    double gf[32];
    lf_matmul(y, x, &W, T, 0);
    for (int r = 0; r < runs; r++) {
        double t0 = bench_now();
        lf_matmul(y, x, &W, T, 0);
        gf[r] = 2.0 * T * rows * cols / (bench_now() - t0) / 1e9;
    }
    printf("  gemm   %-5s %d tokens x %d x %d: %6.1f GFLOP/s\n", name, T, rows, cols, median(gf, runs));
    free(f); free(d); free(x); free(y);
}

/* One decoded token's attention in the 1b shape (22 layers, 32 query
 * heads in 4 groups of 8, head size 64) over `len` cached positions (26 MB
 * of float32 keys and values at 576, more than the caches hold), on one
 * thread: the query groups together (lf_attend_group, what decoding
 * runs), one query at a time (lf_attend), and the portable path. */
static double attention_ms(int grouped, int len, float *K, float *V, const float *q, float *o, float *sc, int runs,
                           const float *evict, size_t nevict) {
    const int L = 22, nkv = 4, G = 8, hd = 64;
    double ms[32];
    volatile float sink = 0;
    for (int r = 0; r < runs; r++) {
        double t = 0;
        for (int l = 0; l < L; l++) {
            /* evict: a read of more than the last-level cache between the
             * layers, as the weights' streaming does when decoding */
            if (evict) sink += lf_dot_f32(evict, evict, (int)nevict);
            double t0 = bench_now();
            for (int h = 0; h < nkv; h++) {
                const size_t at = ((size_t)l * nkv + h) * len * hd;
                if (grouped) lf_attend_group(o + h * G * hd, q + h * G * hd, G, K + at, V + at, len, hd, 0.125f, sc);
                else
                    for (int g = 0; g < G; g++)
                        lf_attend(o + (h * G + g) * hd, q + (h * G + g) * hd, K + at, V + at, len, hd, 0.125f, sc);
            }
            t += bench_now() - t0;
        }
        ms[r] = t * 1e3;
    }
    (void)sink;
    return median(ms, runs);
}

static void attention_speed(int runs) {
    const int len = 576, L = 22, nkv = 4, nh = 32, hd = 64;
    const size_t n = (size_t)L * nkv * len * hd;
    float *K = malloc(n * sizeof(float)), *V = malloc(n * sizeof(float));
    float *q = malloc((size_t)nh * hd * sizeof(float)), *o = malloc((size_t)nh * hd * sizeof(float));
    float *sc = malloc((size_t)8 * len * sizeof(float));
    if (!K || !V || !q || !o || !sc) { fprintf(stderr, "bench_kernels: out of memory\n"); exit(1); }
    for (size_t i = 0; i < n; i++) { K[i] = 0.01f * (float)(i % 97) - 0.5f; V[i] = 0.02f * (float)(i % 89) - 0.9f; }
    for (int i = 0; i < nh * hd; i++) q[i] = 0.03f * (float)(i % 31) - 0.4f;
    const size_t nevict = (size_t)64 << 20; /* 256 MiB */
    float *evict = malloc(nevict * sizeof(float));
    if (!evict) { fprintf(stderr, "bench_kernels: out of memory\n"); exit(1); }
    for (size_t i = 0; i < nevict; i++) evict[i] = 1.0f;
    const double grouped = attention_ms(1, len, K, V, q, o, sc, runs, NULL, 0);
    const double cold = attention_ms(1, len, K, V, q, o, sc, runs, evict, nevict);
    const double single = attention_ms(0, len, K, V, q, o, sc, runs, NULL, 0);
    const int prev = lf_kernels_set_isa(LF_ISA_PORTABLE);
    const double portable = attention_ms(1, len, K, V, q, o, sc, runs > 3 ? 3 : runs, NULL, 0);
    lf_kernels_set_isa(prev);
    printf("attention, 1b shape, one token over %d positions, 1 thread: grouped %.2f ms (keys and values from memory, as "
           "when decoding: %.2f ms), one query at a time %.2f ms (%.2fx), portable %.2f ms (%.2fx)\n",
           len, grouped, cold, single, single / grouped, portable, portable / grouped);
    free(K); free(V); free(q); free(o); free(sc); free(evict);
}

int main(int argc, char **argv) {
    int runs = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-t") && i + 1 < argc) lf_set_threads(atoi(argv[++i]));
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-isa") && i + 1 < argc) {
            const char *s = argv[++i];
            lf_kernels_set_isa(!strcmp(s, "portable") ? LF_ISA_PORTABLE : !strcmp(s, "avx2") ? LF_ISA_AVX2 : LF_ISA_AVX512);
        } else {
            fprintf(stderr, "usage: bench_kernels [-t THREADS] [-r RUNS] [-isa avx512|avx2|portable]\n");
            return 2;
        }
    }
    if (runs < 1 || runs > 32) runs = 5;
    printf("kernels: %s path, %d threads\n", lf_kernels_isa_name(lf_kernels_isa()), lf_get_threads());
    bandwidth(runs);
    const lf_dtype types[] = {LF_F16, LF_BF16, LF_F32, LF_Q8};
    const char *names[] = {"F16", "BF16", "F32", "Q8"};
    for (int i = 0; i < 4; i++) matvec_speed(types[i], names[i], runs);
    colblock_speed(runs);
    for (int i = 0; i < 4; i++) gemm_speed(types[i], names[i], runs > 3 ? 3 : runs);
    /* the same products in bfloat16 (--products bf16), where the CPU has them */
    if (lf_set_products(LF_PRODUCTS_BF16) == LF_PRODUCTS_BF16) {
        gemm_speed(LF_F16, "F16 bf16-products", runs > 3 ? 3 : runs);
        gemm_speed(LF_BF16, "BF16 bf16-products", runs > 3 ? 3 : runs);
    }
    lf_set_products(LF_PRODUCTS_F32);
    attention_speed(runs);
    return 0;
}
