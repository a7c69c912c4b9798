/* cli.h: option parsing and model set-up shared by the loraflow subcommands.
 * Built only on the public header. */
#ifndef LF_CLI_H
#define LF_CLI_H

#include "loraflow.h"

#define CLI_MAX_ADAPTERS 16

typedef struct {
    const char *model_dir;        /* -m */
    int threads;                  /* -t */
    const char *adapter_name[CLI_MAX_ADAPTERS], *adapter_dir[CLI_MAX_ADAPTERS]; /* -l NAME=DIR */
    int n_adapters;
    const char *gate;             /* -g */
    const char *weights;          /* -w w1,...,wk */
    float temperature;            /* -T (0 = unset) */
    const char *prompt;           /* -p */
    const char *ids;              /* --ids */
    const char *system;           /* --system */
    const char *out;              /* -o */
    int n_predict;                /* -n */
    int greedy;
    float temp;                   /* --temp */
    float top_p;
    int top_k;
    uint64_t seed;
    int json;
    int no_bos, special;
    int ctx;                      /* --ctx */
    const char *trace, *trace_svg;
    const char *positional;       /* TEXT */
    int sampling_given;
    int quantize;                 /* --quantize: LF_QUANT_* */
    int quantize_adapters;        /* --quantize-adapters: LF_QUANT_* */
    int placement;                /* --placement: LF_PLACE_* */
    int products;                 /* --products: LF_PRODUCTS_* (-1 = unset) */
} cli_opts;

/* Options a subcommand accepts (bit mask). */
enum {
    OPT_MODEL = 1 << 0, OPT_THREADS = 1 << 1, OPT_FUSION = 1 << 2, OPT_INPUT = 1 << 3,
    OPT_OUT = 1 << 4, OPT_GEN = 1 << 5, OPT_TOK = 1 << 6, OPT_TRACE = 1 << 7, OPT_POSITIONAL = 1 << 8,
    OPT_LOAD = 1 << 9, /* --quantize, --quantize-adapters, --placement, --products */
};

/* The lines of --help that describe OPT_LOAD. */
#define CLI_LOAD_USAGE \
    "  --quantize q8     8-bit weights (one F16 scale per 32 values) for the projections and\n" \
    "                    lm_head, made at load time: about half the memory traffic per token\n" \
    "                    (docs/PERFORMANCE.md gives the logit error); default: as stored\n" \
    "  --quantize-adapters q8  the same for the LoRA adapters' stacked A and B factors\n" \
    "                    (independent of --quantize); default: as stored\n" \
    "  --placement P     auto (default: copy into memory with huge pages when it fits), mmap, copy\n" \
    "  --products P      f32 (default) or bf16: prompt products with both factors rounded to\n" \
    "                    bfloat16, sums in float32 (faster on CPUs with AVX512-BF16)\n"

/* The lines of --help that describe --products. */
#define CLI_PRODUCTS_USAGE \
    "  --products P          f32 (default) or bf16: the products of many tokens with the weights\n" \
    "                        (prompt, training) with both factors rounded to bfloat16, sums in\n" \
    "                        float32; on CPUs with AVX512-BF16 and no AMX, training steps about\n" \
    "                        1.9x faster (docs/PERFORMANCE.md); a CPU without it keeps float32\n"

/* --products: LF_PRODUCTS_* of "f32" or "bf16", or -1 (message printed). */
int cli_parse_products(const char *s);
/* lf_set_products, with a note on stderr when bf16 is not available here. */
void cli_set_products(int mode);

/* Parse argv (after the subcommand).  Returns 0, 1 for --help (usage printed), -1 on error (printed). */
int cli_parse(int argc, char **argv, unsigned allowed, cli_opts *o, const char *usage);

/* A loaded model with its adapters, gate and fusion mode applied to a session. */
typedef struct {
    lf_model *model;
    lf_tokenizer *tok;
    lf_gate *gate;
    lf_session *session;
    float temperature;
    float static_w[CLI_MAX_ADAPTERS];  /* -w, when static_w_set */
    int static_w_set;
} cli_env;

/* Load the model (and tokenizer when need_tok), attach -l adapters, read -g
 * or -w, and create a session of ctx tokens with that fusion mode. */
int cli_setup(const cli_opts *o, int need_tok, int ctx, cli_env *env);
void cli_teardown(cli_env *env);

/* Prompt ids from -p/--ids/--system (BOS added to text prompts). malloc'd. */
int cli_prompt_ids(const cli_opts *o, const lf_tokenizer *tok, int32_t **ids, int *n);

/* Print "loraflow CMD: message" to stderr. */
void cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

int cmd_tokenize(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_forward(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_grad(int argc, char **argv);
int cmd_train_gate(int argc, char **argv);
int cmd_train_lora(int argc, char **argv);
int cmd_train_base(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_search_weights(int argc, char **argv);

#endif
