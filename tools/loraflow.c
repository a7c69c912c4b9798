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

/* A LORAFLOW_* variable with a value the library does not know: refused
 * before any command runs (lf_env_check). */
static int check_env(void) {
    if (!lf_env_check()) return 0;
    fprintf(stderr, "loraflow: %s\n", lf_last_error());
    return -1;
}

static void usage(FILE *f) {
    fprintf(f, "loraflow %s: dynamic LoRA fusion (LoRA-Flow) for Llama models on a CPU\n\n"
               "usage: loraflow COMMAND [options]     (loraflow COMMAND --help for its options)\n\n"
               "commands:\n", LORAFLOW_VERSION);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\nenvironment (a flag given overrides its variable):\n");
    int nv;
    const lf_env_var *v = lf_env_vars(&nv);
    for (int i = 0; i < nv; i++) fprintf(f, "  %-27s %-21s %s\n", v[i].name, v[i].values, v[i].what);
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
