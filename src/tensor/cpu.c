/* cpu.c: which instruction-set path the kernels take.
 *
 * Detected once with __builtin_cpu_supports (the default build targets the
 * x86-64 baseline; every fast kernel carries its own target attribute), then
 * capped by the environment (LORAFLOW_NO_SIMD=1, LORAFLOW_ISA=avx2|portable)
 * and by lf_kernels_set_isa, which the tests use to run every path.
 *
 * AMX (the many-token products of gemm_amx.c) needs three things: the CPU
 * (AMX-TILE, AMX-BF16 and AVX512-BF16), the kernel's saving of tile state
 * (XCR0 bits 17 and 18) and this process's permission to use it, asked
 * once with arch_prctl(ARCH_REQ_XCOMP_PERM).  LORAFLOW_AMX=0 turns it off,
 * and so does any cap below AVX-512.
 *
 * Products in bfloat16 (lf_set_products, LORAFLOW_PRODUCTS=bf16) need
 * AVX512-BF16 on the AVX-512 path; elsewhere the float32 products stay. */
#include "simd.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef LF_X86
#include <cpuid.h>
#include <sys/syscall.h>
#endif

static int detected = -1; /* best path the CPU has */
static int vnni = 0;      /* AVX512-VNNI */
static int cap = LF_ISA_AVX512;
static int amx = 0;       /* AMX usable (CPU, kernel and permission) */
static int amx_cap = 1;   /* lf_kernels_set_amx */
static int bf16 = 0;      /* AVX512-BF16 (vdpbf16ps) */
static int products = -1; /* LF_PRODUCTS_* asked for (-1: not yet read from the environment) */
static int amd = 0;       /* an AMD CPU */
static int prefetch = -1; /* LF_PREFETCH_*: lf_kernels_set_prefetch, LORAFLOW_PREFETCH (-1: by the CPU) */
static int zen4 = 0;      /* AMD family 19h (Zen 3 and 4; with AVX-512, Zen 4) */
static int l1d_ways = 0;  /* the L1 data cache's associativity (0: not known) */

#ifdef LF_X86
static int amx_usable(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    if (!(d & (1u << 24)) || !(d & (1u << 22))) return 0; /* AMX-TILE, AMX-BF16 */
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d) || !(a & (1u << 5))) return 0; /* AVX512-BF16 */
    if (!__get_cpuid_count(1, 0, &a, &b, &c, &d) || !(c & (1u << 27))) return 0; /* OSXSAVE */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & (3u << 17)) != (3u << 17)) return 0; /* XTILECFG, XTILEDATA enabled */
    /* ARCH_REQ_XCOMP_PERM (0x1023) for XFEATURE_XTILEDATA (18) */
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
}
#endif

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
        unsigned a7, b7, c7, d7;
        bf16 = __get_cpuid_count(7, 1, &a7, &b7, &c7, &d7) && (a7 & (1u << 5)); /* AVX512-BF16 */
    }
    amd = __builtin_cpu_is("amd");
    unsigned a1, b1, c1, d1;
    if (amd && __get_cpuid(1, &a1, &b1, &c1, &d1))
        zen4 = ((a1 >> 8) & 0xf) + ((a1 >> 20) & 0xff) == 0x19 && best == LF_ISA_AVX512;
    const char *a = getenv("LORAFLOW_AMX");
    if (best == LF_ISA_AVX512 && !(a && !strcmp(a, "0"))) amx = amx_usable();
#endif
#ifdef _SC_LEVEL1_DCACHE_ASSOC
    const long ways = sysconf(_SC_LEVEL1_DCACHE_ASSOC); /* glibc reads it from cpuid; 0 or -1 when it cannot tell */
    l1d_ways = ways > 0 && ways <= 256 ? (int)ways : 0;
#endif
    const char *e = getenv("LORAFLOW_NO_SIMD");
    if (e && *e && strcmp(e, "0")) best = LF_ISA_PORTABLE;
    e = getenv("LORAFLOW_PREFETCH");
    if (e && !strcmp(e, "nt")) prefetch = LF_PREFETCH_NT;
    if (e && !strcmp(e, "t0")) prefetch = LF_PREFETCH_T0;
    if (e && !strcmp(e, "none")) prefetch = LF_PREFETCH_NONE;
    if (e && !strcmp(e, "t1")) prefetch = LF_PREFETCH_T1;
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

int lf_cpu_amx(void) { return lf_isa() == LF_ISA_AVX512 && amx && amx_cap; }

static int products_asked(void) {
    if (products < 0) {
        const char *e = getenv("LORAFLOW_PRODUCTS");
        products = e && !strcmp(e, "bf16") ? LF_PRODUCTS_BF16 : LF_PRODUCTS_F32;
    }
    return products;
}

int lf_cpu_bf16(void) { return lf_isa() == LF_ISA_AVX512 && bf16; }

int lf_products_bf16(void) { return products_asked() == LF_PRODUCTS_BF16 && lf_cpu_bf16(); }

int lf_set_products(int mode) {
    if (mode != LF_PRODUCTS_F32 && mode != LF_PRODUCTS_BF16) return -1;
    products = mode;
    return lf_get_products();
}

int lf_get_products(void) { return lf_products_bf16() ? LF_PRODUCTS_BF16 : LF_PRODUCTS_F32; }

int lf_cpu_l1d_ways(void) {
    detect();
    return l1d_ways;
}

/* 1b F16 decoding on a Zen 4 guest, 2 threads, the ways taking turns
 * token by token in one process: without software prefetches 1.27-1.29x
 * the tokens/s of non-temporal ones 6 KiB ahead (into L1, 2 KiB ahead:
 * the same as non-temporal).  Into L2, against none: 8 KiB ahead, median
 * 1.01x for the base model and 1.10x with two LoRAs fused (9 runs);
 * asking for each line again 16 KiB ahead, another 1.03-1.14x, and 24
 * KiB ahead another 1.03-1.06x (6 and 5 runs; 32 KiB, or every 4 KiB
 * from 8 to 24, no better); the three, against none: base 1.00-1.19x,
 * LoRA-Flow 1.05-1.21x (4 runs), q8 1.17-1.37x and 1.27-1.41x (3 runs).
 * On Zen 5 non-temporal ones were 1-2 % faster than those into L1
 * (rowdot.c); none and L2 were not measured there. */
int lf_cpu_prefetch(void) {
    if (lf_isa() != LF_ISA_AVX512) return LF_PREFETCH_T0;
    if (prefetch >= 0) return prefetch;
    return zen4 ? LF_PREFETCH_T1 : amd ? LF_PREFETCH_NT : LF_PREFETCH_T0;
}

int lf_kernels_set_prefetch(int mode) {
    detect(); /* so that LORAFLOW_PREFETCH is read before, not over, this */
    int prev = prefetch;
    prefetch = mode >= LF_PREFETCH_T0 && mode <= LF_PREFETCH_T1 ? mode : -1;
    return prev;
}

int lf_kernels_set_amx(int on) {
    int prev = amx_cap;
    amx_cap = on != 0;
    return prev;
}

int lf_kernels_amx(void) { return lf_cpu_amx(); }

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
