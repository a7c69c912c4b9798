/* cpu.c: which instruction-set path the kernels take.
 *
 * Detected once with __builtin_cpu_supports (the default build targets the
 * x86-64 baseline; every fast kernel carries its own target attribute), then
 * capped by the environment (LORAFLOW_NO_SIMD=1, LORAFLOW_ISA=avx2|portable)
 * and by lf_kernels_set_isa, which the tests use to run every path. */
#include "simd.h"

#include <stdlib.h>
#include <string.h>

static int detected = -1; /* best path the CPU has */
static int vnni = 0;      /* AVX512-VNNI */
static int cap = LF_ISA_AVX512;

static void detect(void) {
    if (detected >= 0) return;
    int best = LF_ISA_PORTABLE;
#ifdef LF_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        best = LF_ISA_AVX2; /* F16C comes with every AVX2 CPU */
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
            best = LF_ISA_AVX512;
        vnni = __builtin_cpu_supports("avx512vnni");
    }
#endif
    const char *e = getenv("LORAFLOW_NO_SIMD");
    if (e && *e && strcmp(e, "0")) best = LF_ISA_PORTABLE;
    e = getenv("LORAFLOW_ISA");
    if (e && !strcmp(e, "portable")) best = LF_ISA_PORTABLE;
    if (e && !strcmp(e, "avx2") && best > LF_ISA_AVX2) best = LF_ISA_AVX2;
    detected = best;
}

int lf_isa(void) {
    detect();
    return detected < cap ? detected : cap;
}

int lf_cpu_vnni512(void) { return lf_isa() == LF_ISA_AVX512 && vnni; }

int lf_kernels_set_isa(int isa) {
    int prev = cap;
    cap = isa < LF_ISA_PORTABLE ? LF_ISA_PORTABLE : isa > LF_ISA_AVX512 ? LF_ISA_AVX512 : isa;
    return prev;
}

int lf_kernels_isa(void) { return lf_isa(); }

const char *lf_kernels_isa_name(int isa) {
    switch (isa) {
    case LF_ISA_AVX512: return "avx512";
    case LF_ISA_AVX2: return "avx2";
    default: return "portable";
    }
}
