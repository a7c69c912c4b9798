/* loraflow: the command-line tool.  One subcommand per file, each built on
 * the public header only. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    int (*run)(int, char **);
    const char *help;
} commands[] = {
    {"generate", cmd_generate, "generate text (base, static fusion or LoRA-Flow)"},
    {"forward", cmd_forward, "run one forward pass and write logits, hidden states and fusion weights"},
    {"tokenize", cmd_tokenize, "print the token ids of a text"},
    {"info", cmd_info, "describe a model folder"},
    {"eval", cmd_eval, "generate answers for a test file and score them (math, code)"},
    {"search-weights", cmd_search_weights, "task-level static weights by gradient-free search (LoRA-Hub baseline)"},
    {"grad", cmd_grad, "loss and gate gradients of one batch, no update"},
    {"train-gate", cmd_train_gate, "train LoRA-Flow fusion gates (the authors' recipe)"},
    {"train-lora", cmd_train_lora, "train a LoRA adapter, saved as a PEFT folder"},
    {"train-base", cmd_train_base, "train every weight of a (small) Llama model"},
    {"synth", cmd_synth, "write a random-weight model with adapters and a gate (demos, benchmarks)"},
};

/* The environment variables the library reads, and their values.  The
 * library ignores a value it does not know (it keeps its default); the
 * tool refuses it, so that a typo (LORAFLOW_QUANTIZE=Q8) does not run a
 * different configuration than the one asked for. */
static const struct {
    const char *name, *values, *what;
} env_vars[] = {
    {"LORAFLOW_PLACEMENT", "auto|mmap|copy", "where the weights live, as --placement"},
    {"LORAFLOW_QUANTIZE", "q8|none", "8-bit base weights, as --quantize"},
    {"LORAFLOW_QUANTIZE_ADAPTERS", "q8|none", "8-bit adapters, as --quantize-adapters"},
    {"LORAFLOW_LAYOUT", "auto|rows", "rows: copied weights stay row-major (no column blocks)"},
    {"LORAFLOW_PRODUCTS", "f32|bf16", "many-token products, as --products"},
    {"LORAFLOW_ISA", "avx512|avx2|portable", "the best instruction set the kernels may use"},
    {"LORAFLOW_NO_SIMD", "0|1", "1: portable kernels only"},
    {"LORAFLOW_PREFETCH", "nt|t0", "long weight rows prefetched non-temporal or into L1"},
    {"LORAFLOW_AMX", "0|1", "0: no AMX tiles"},
};

static int value_in(const char *v, const char *list) {
    const size_t n = strlen(v);
    for (const char *p = list;; p++) {
        const char *bar = strchr(p, '|');
        const size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && !strncmp(p, v, n)) return 1;
        if (!bar) return 0;
        p = bar;
    }
}

static int check_env(void) {
    for (size_t i = 0; i < sizeof env_vars / sizeof env_vars[0]; i++) {
        const char *v = getenv(env_vars[i].name);
        if (v && *v && !value_in(v, env_vars[i].values)) {
            fprintf(stderr, "loraflow: %s=%s: expected %s or unset (%s)\n", env_vars[i].name, v,
                    env_vars[i].values, env_vars[i].what);
            return -1;
        }
    }
    return 0;
}

static void usage(FILE *f) {
    fprintf(f, "loraflow %s: dynamic LoRA fusion (LoRA-Flow) for Llama models on a CPU\n\n"
               "usage: loraflow COMMAND [options]     (loraflow COMMAND --help for its options)\n\n"
               "commands:\n", LORAFLOW_VERSION);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\nenvironment (a flag given overrides its variable):\n");
    for (size_t i = 0; i < sizeof env_vars / sizeof env_vars[0]; i++)
        fprintf(f, "  %-27s %-21s %s\n", env_vars[i].name, env_vars[i].values, env_vars[i].what);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("loraflow %s\n", LORAFLOW_VERSION);
        return 0;
    }
    if (check_env()) return 2;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "loraflow: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
