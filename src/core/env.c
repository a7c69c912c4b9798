/* env.c: the LORAFLOW_* environment variables the library reads, their
 * values, and the check that refuses a value it does not know.
 *
 * The variables are read where they act (model.c: the load options;
 * cpu.c: the kernels); this table is the one list of them, which the
 * loraflow tool prints in its --help and which lf_model_load_opts checks,
 * so that a typo (LORAFLOW_QUANTIZE=Q8) is an error and not a run with the
 * default configuration. */
#include "util.h"

#include <stdlib.h>
#include <string.h>

static const lf_env_var env_vars[] = {
    {"LORAFLOW_PLACEMENT", "auto|mmap|copy", "where the weights live, as --placement"},
    {"LORAFLOW_QUANTIZE", "q8|none", "8-bit base weights, as --quantize"},
    {"LORAFLOW_QUANTIZE_ADAPTERS", "q8|none", "8-bit adapters, as --quantize-adapters"},
    {"LORAFLOW_LAYOUT", "auto|rows", "rows: copied weights stay row-major (no column blocks)"},
    {"LORAFLOW_PRODUCTS", "f32|bf16", "many-token products, as --products"},
    {"LORAFLOW_ISA", "avx512|avx2|portable", "the best instruction set the kernels may use"},
    {"LORAFLOW_NO_SIMD", "0|1", "1: portable kernels only"},
    {"LORAFLOW_PREFETCH", "nt|t0|t1|none", "long weight rows prefetched non-temporal, into L1, into L2 or not at all"},
    {"LORAFLOW_AMX", "0|1", "0: no AMX tiles"},
};

const lf_env_var *lf_env_vars(int *n) {
    *n = (int)(sizeof env_vars / sizeof env_vars[0]);
    return env_vars;
}

/* v is one of the '|'-separated words of list. */
static int value_in(const char *v, const char *list) {
    const size_t n = strlen(v);
    for (const char *p = list;;) {
        const char *bar = strchr(p, '|');
        const size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && !strncmp(p, v, n)) return 1;
        if (!bar) return 0;
        p = bar + 1;
    }
}

int lf_env_check(void) {
    for (size_t i = 0; i < sizeof env_vars / sizeof env_vars[0]; i++) {
        const char *v = getenv(env_vars[i].name);
        if (v && *v && !value_in(v, env_vars[i].values)) {
            lf_set_error("%s=%s: expected %s or unset (%s)", env_vars[i].name, v, env_vars[i].values,
                         env_vars[i].what);
            return -1;
        }
    }
    return 0;
}
