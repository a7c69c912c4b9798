/* cli.c: option parsing and model set-up shared by the subcommands. */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cli_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "loraflow %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static int parse_int(const char *s, const char *what, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "loraflow: %s must be an integer in [%ld, %ld], got '%s'\n", what, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_float(const char *s, const char *what, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end) {
        fprintf(stderr, "loraflow: %s must be a number, got '%s'\n", what, s);
        return -1;
    }
    *out = v;
    return 0;
}

enum { O_IDS = 256, O_SYSTEM, O_GREEDY, O_TEMP, O_TOPP, O_TOPK, O_SEED, O_JSON, O_NOBOS, O_SPECIAL,
       O_CTX, O_TRACE, O_TRACESVG, O_QUANT, O_PLACE, O_PRODUCTS, O_QUANT_ADAPTERS };

/* q8 or none (--quantize, --quantize-adapters): LF_QUANT_* into *out. */
static int parse_quant(const char *s, const char *what, int *out) {
    if (!strcmp(s, "q8")) *out = LF_QUANT_Q8;
    else if (!strcmp(s, "none")) *out = LF_QUANT_NONE;
    else {
        fprintf(stderr, "loraflow: %s expects q8 or none, got '%s'\n", what, s);
        return -1;
    }
    return 0;
}

int cli_parse_products(const char *s) {
    if (!strcmp(s, "f32")) return LF_PRODUCTS_F32;
    if (!strcmp(s, "bf16")) return LF_PRODUCTS_BF16;
    fprintf(stderr, "loraflow: --products expects f32 or bf16, got '%s'\n", s);
    return -1;
}

void cli_set_products(int mode) {
    if (lf_set_products(mode) != mode)
        fprintf(stderr, "loraflow: --products bf16: this CPU (or LORAFLOW_ISA) has no AVX512-BF16 path; "
                        "the products stay float32\n");
}

int cli_parse(int argc, char **argv, unsigned allowed, cli_opts *o, const char *usage) {
    static const struct option longopts[] = {
        {"help", no_argument, 0, 'h'},       {"model", required_argument, 0, 'm'},
        {"threads", required_argument, 0, 't'}, {"lora", required_argument, 0, 'l'},
        {"gate", required_argument, 0, 'g'}, {"weights", required_argument, 0, 'w'},
        {"temperature", required_argument, 0, 'T'}, {"prompt", required_argument, 0, 'p'},
        {"ids", required_argument, 0, O_IDS}, {"system", required_argument, 0, O_SYSTEM},
        {"output", required_argument, 0, 'o'}, {"n-predict", required_argument, 0, 'n'},
        {"greedy", no_argument, 0, O_GREEDY}, {"temp", required_argument, 0, O_TEMP},
        {"top-p", required_argument, 0, O_TOPP}, {"top-k", required_argument, 0, O_TOPK},
        {"seed", required_argument, 0, O_SEED}, {"json", no_argument, 0, O_JSON},
        {"no-bos", no_argument, 0, O_NOBOS}, {"special", no_argument, 0, O_SPECIAL},
        {"ctx", required_argument, 0, O_CTX}, {"trace", required_argument, 0, O_TRACE},
        {"trace-svg", required_argument, 0, O_TRACESVG}, {"quantize", required_argument, 0, O_QUANT},
        {"placement", required_argument, 0, O_PLACE}, {"products", required_argument, 0, O_PRODUCTS},
        {"quantize-adapters", required_argument, 0, O_QUANT_ADAPTERS},
        {0, 0, 0, 0},
    };
    memset(o, 0, sizeof *o);
    o->n_predict = 128;
    o->temp = 0.8f;
    o->top_p = 0.95f;
    o->top_k = 40;
    o->seed = 42;
    /* unset: the library's default (LORAFLOW_QUANTIZE/PLACEMENT/QUANTIZE_ADAPTERS) */
    o->quantize = o->placement = o->quantize_adapters = -1;
    o->products = -1;                /* unset: LORAFLOW_PRODUCTS or float32 */
    optind = 1;
    opterr = 0;
    int c;
    long v;
    while ((c = getopt_long(argc, argv, ":hm:t:l:g:w:T:p:o:n:", longopts, NULL)) != -1) {
        unsigned need = 0;
        switch (c) {
        case 'h': fputs(usage, stdout); return 1;
        case 'm': need = OPT_MODEL; o->model_dir = optarg; break;
        case 't': need = OPT_THREADS; if (parse_int(optarg, "-t", 1, 4096, &v)) return -1; o->threads = (int)v; break;
        case 'l': {
            need = OPT_FUSION;
            char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg || !eq[1]) {
                fprintf(stderr, "loraflow: -l expects NAME=DIR, got '%s'\n", optarg);
                return -1;
            }
            if (o->n_adapters >= CLI_MAX_ADAPTERS) {
                fprintf(stderr, "loraflow: at most %d adapters\n", CLI_MAX_ADAPTERS);
                return -1;
            }
            *eq = 0;
            o->adapter_name[o->n_adapters] = optarg;
            o->adapter_dir[o->n_adapters++] = eq + 1;
            break;
        }
        case 'g': need = OPT_FUSION; o->gate = optarg; break;
        case 'w': need = OPT_FUSION; o->weights = optarg; break;
        case 'T': need = OPT_FUSION; if (parse_float(optarg, "-T", &o->temperature)) return -1;
            if (!(o->temperature > 0)) { fprintf(stderr, "loraflow: -T must be > 0\n"); return -1; }
            break;
        case 'p': need = OPT_INPUT; o->prompt = optarg; break;
        case O_IDS: need = OPT_INPUT; o->ids = optarg; break;
        case O_SYSTEM: need = OPT_INPUT; o->system = optarg; break;
        case 'o': need = OPT_OUT; o->out = optarg; break;
        case 'n': need = OPT_GEN; if (parse_int(optarg, "-n", 0, 1 << 24, &v)) return -1; o->n_predict = (int)v; break;
        case O_GREEDY: need = OPT_GEN; o->greedy = 1; break;
        case O_TEMP: need = OPT_GEN; if (parse_float(optarg, "--temp", &o->temp)) return -1; o->sampling_given = 1; break;
        case O_TOPP: need = OPT_GEN; if (parse_float(optarg, "--top-p", &o->top_p)) return -1; o->sampling_given = 1; break;
        case O_TOPK: need = OPT_GEN; if (parse_int(optarg, "--top-k", 0, 1 << 30, &v)) return -1; o->top_k = (int)v; o->sampling_given = 1; break;
        case O_SEED: {
            need = OPT_GEN;
            char *end;
            errno = 0;
            unsigned long long sd = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end) { fprintf(stderr, "loraflow: --seed must be an integer\n"); return -1; }
            o->seed = sd;
            break;
        }
        case O_JSON: need = OPT_GEN; o->json = 1; break;
        case O_NOBOS: need = OPT_TOK; o->no_bos = 1; break;
        case O_SPECIAL: need = OPT_TOK; o->special = 1; break;
        case O_CTX: need = OPT_GEN | OPT_OUT; if (parse_int(optarg, "--ctx", 1, 1 << 24, &v)) return -1; o->ctx = (int)v; break;
        case O_TRACE: need = OPT_TRACE; o->trace = optarg; break;
        case O_TRACESVG: need = OPT_TRACE; o->trace_svg = optarg; break;
        case O_QUANT:
            need = OPT_LOAD;
            if (parse_quant(optarg, "--quantize", &o->quantize)) return -1;
            break;
        case O_QUANT_ADAPTERS:
            need = OPT_LOAD;
            if (parse_quant(optarg, "--quantize-adapters", &o->quantize_adapters)) return -1;
            break;
        case O_PLACE:
            need = OPT_LOAD;
            if (!strcmp(optarg, "auto")) o->placement = LF_PLACE_AUTO;
            else if (!strcmp(optarg, "mmap")) o->placement = LF_PLACE_MMAP;
            else if (!strcmp(optarg, "copy")) o->placement = LF_PLACE_COPY;
            else { fprintf(stderr, "loraflow: --placement expects auto, mmap or copy, got '%s'\n", optarg); return -1; }
            break;
        case O_PRODUCTS:
            need = OPT_LOAD;
            if ((o->products = cli_parse_products(optarg)) < 0) return -1;
            break;
        case ':': fprintf(stderr, "loraflow: option %s needs a value (see --help)\n", argv[optind - 1]); return -1;
        default: fprintf(stderr, "loraflow: unknown option %s (see --help)\n", argv[optind - 1]); return -1;
        }
        if (!(need & allowed)) {
            fprintf(stderr, "loraflow: option %s does not apply to this command (see --help)\n", argv[optind - 1]);
            return -1;
        }
    }
    if (optind < argc) {
        if (!(allowed & OPT_POSITIONAL) || optind + 1 < argc) {
            fprintf(stderr, "loraflow: unexpected argument '%s' (see --help)\n", argv[optind]);
            return -1;
        }
        o->positional = argv[optind];
    }
    if ((allowed & OPT_MODEL) && !o->model_dir) {
        fprintf(stderr, "loraflow: -m MODEL_DIR is required (see --help)\n");
        return -1;
    }
    if (o->gate && o->weights) {
        fprintf(stderr, "loraflow: give either -g GATE (LoRA-Flow) or -w WEIGHTS (static fusion), not both\n");
        return -1;
    }
    if ((o->gate || o->weights) && o->n_adapters == 0) {
        fprintf(stderr, "loraflow: %s needs adapters: add -l NAME=DIR for each LoRA\n", o->gate ? "-g" : "-w");
        return -1;
    }
    if (o->temperature > 0 && !o->gate) {
        fprintf(stderr, "loraflow: -T (gate temperature) needs -g GATE\n");
        return -1;
    }
    if (o->threads) lf_set_threads(o->threads);
    if (o->products >= 0) cli_set_products(o->products);
    return 0;
}

/* Parse "w1,w2,..." into exactly k floats. */
static int parse_weights(const char *s, float *w, int k) {
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        float v = strtof(p, &end);
        if (errno || end == p || (*end && *end != ',')) {
            fprintf(stderr, "loraflow: -w expects comma-separated numbers, got '%s'\n", s);
            return -1;
        }
        if (n == k) { n++; break; }
        w[n++] = v;
        p = *end ? end + 1 : end;
    }
    if (n != k) {
        fprintf(stderr, "loraflow: -w gives %d weights for %d adapters\n", n, k);
        return -1;
    }
    return 0;
}

int cli_setup(const cli_opts *o, int need_tok, int ctx, cli_env *env) {
    memset(env, 0, sizeof *env);
    lf_load_options lo;
    lf_load_options_default(&lo); /* the environment's, then the flags given */
    if (o->placement >= 0) lo.placement = o->placement;
    if (o->quantize >= 0) lo.quantize = o->quantize;
    if (o->quantize_adapters >= 0) lo.quantize_adapters = o->quantize_adapters;
    env->model = lf_model_load_opts(o->model_dir, &lo);
    if (!env->model) { fprintf(stderr, "loraflow: %s\n", lf_last_error()); return -1; }
    if (need_tok) {
        env->tok = lf_tokenizer_load_dir(o->model_dir);
        if (!env->tok) { fprintf(stderr, "loraflow: %s\n", lf_last_error()); goto fail; }
    }
    for (int i = 0; i < o->n_adapters; i++) {
        if (lf_model_add_adapter(env->model, o->adapter_name[i], o->adapter_dir[i]) < 0) {
            fprintf(stderr, "loraflow: %s\n", lf_last_error());
            goto fail;
        }
    }
    env->session = lf_session_new(env->model, ctx);
    if (!env->session) { fprintf(stderr, "loraflow: %s\n", lf_last_error()); goto fail; }
    if (o->gate) {
        env->gate = lf_gate_load(o->gate, env->model);
        if (!env->gate) { fprintf(stderr, "loraflow: %s\n", lf_last_error()); goto fail; }
        float T = o->temperature > 0 ? o->temperature : lf_gate_stored_temperature(env->gate);
        if (!(T > 0)) T = 1.0f;
        env->temperature = T;
        if (lf_session_set_gate(env->session, env->gate, T) != 0) {
            fprintf(stderr, "loraflow: %s\n", lf_last_error());
            goto fail;
        }
    } else if (o->weights) {
        float *w = env->static_w;
        if (parse_weights(o->weights, w, o->n_adapters) != 0) goto fail;
        env->static_w_set = 1;
        if (lf_session_set_static(env->session, w, o->n_adapters) != 0) {
            fprintf(stderr, "loraflow: %s\n", lf_last_error());
            goto fail;
        }
    } else if (o->n_adapters > 0) {
        fprintf(stderr, "loraflow: adapters given without -g GATE or -w WEIGHTS; use -w 1 (k = 1) for one LoRA "
                        "alone, or -w 0.5,0.5 for average fusion\n");
        goto fail;
    }
    return 0;
fail:
    cli_teardown(env);
    return -1;
}

void cli_teardown(cli_env *env) {
    lf_session_free(env->session);
    lf_gate_free(env->gate);
    lf_tokenizer_free(env->tok);
    lf_model_free(env->model);
    memset(env, 0, sizeof *env);
}

int cli_prompt_ids(const cli_opts *o, const lf_tokenizer *tok, int32_t **ids, int *n) {
    *ids = NULL;
    *n = 0;
    if (!!o->prompt + !!o->ids != 1) {
        fprintf(stderr, "loraflow: give the input as -p TEXT or --ids 1,2,3 (exactly one)\n");
        return -1;
    }
    if (o->ids) {
        if (o->system) {
            fprintf(stderr, "loraflow: --system applies to -p TEXT, not to --ids\n");
            return -1;
        }
        int cap = 16, k = 0;
        int32_t *v = malloc((size_t)cap * sizeof *v);
        const char *p = o->ids;
        while (v && *p) {
            char *end;
            errno = 0;
            long x = strtol(p, &end, 10);
            if (errno || end == p || (*end && *end != ',') || x < 0 || x > INT32_MAX) {
                fprintf(stderr, "loraflow: --ids expects comma-separated non-negative integers, got '%s'\n", o->ids);
                free(v);
                return -1;
            }
            if (k == cap) { int32_t *nv = realloc(v, (size_t)(cap *= 2) * sizeof *v); if (!nv) { free(v); v = NULL; break; } v = nv; }
            v[k++] = (int32_t)x;
            p = *end ? end + 1 : end;
        }
        if (!v) { fprintf(stderr, "loraflow: out of memory\n"); return -1; }
        if (k == 0) { fprintf(stderr, "loraflow: --ids is empty\n"); free(v); return -1; }
        *ids = v;
        *n = k;
        return 0;
    }
    char *text = o->system ? lf_chat_prompt(o->system, o->prompt) : strdup(o->prompt);
    if (!text) { fprintf(stderr, "loraflow: out of memory\n"); return -1; }
    int rc = lf_tokenize(tok, text, LF_TOK_BOS, ids, n);
    free(text);
    if (rc != 0) { fprintf(stderr, "loraflow: %s\n", lf_last_error()); return -1; }
    return 0;
}
