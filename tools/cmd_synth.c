/* loraflow synth: write a random-weight Llama folder with PEFT adapters and
 * a LoRA-Flow gate (for demonstrations, tests and benchmarks). */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: loraflow synth -o DIR [--shape tiny|fixture|1b|7b] [options]\n\n"
    "Writes a Llama model with random weights in Hugging Face layout:\n"
    "DIR/config.json, model.safetensors, a byte-level tokenizer.json, PEFT\n"
    "adapters DIR/lora_0 .. lora_{k-1} and a random LoRA-Flow gate\n"
    "DIR/gate.safetensors.  The text it generates is meaningless: it is for\n"
    "measuring speed and memory and for exercising every code path.\n"
    "  -o DIR            output folder (created)\n"
    "  --shape NAME      tiny (H 256, 4 layers, default), fixture, 1b (TinyLlama-1.1B),\n"
    "                    7b (Llama-2-7B)\n"
    "  --dtype T         base weights: f16 (default), bf16 or f32\n"
    "  --adapters K      number of LoRA adapters (default 2, 0 for none)\n"
    "  --rank R          LoRA rank (default 64)\n"
    "  --alpha A         lora_alpha (default 16)\n"
    "  --adapter-dtype T adapter weights: f16, bf16 or f32 (default f32)\n"
    "  --layers N        override the layer count of the shape\n"
    "  --seed S          random seed (default 1)\n";

static int parse_dtype(const char *s, lf_dtype *t) {
    if (!strcmp(s, "f16")) *t = LF_F16;
    else if (!strcmp(s, "bf16")) *t = LF_BF16;
    else if (!strcmp(s, "f32")) *t = LF_F32;
    else {
        cli_error("synth", "dtype must be f16, bf16 or f32, got '%s'", s);
        return -1;
    }
    return 0;
}

static void progress(size_t done, size_t total, void *user) {
    int *last = user;
    int pct = total ? (int)(100.0 * done / total) : 100;
    if (pct / 10 != *last / 10 || *last < 0) {
        *last = pct;
        fprintf(stderr, "loraflow synth: %3d%% of %.2f GiB\n", pct, total / 1073741824.0);
    }
}

int cmd_synth(int argc, char **argv) {
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'},          {"shape", required_argument, 0, 's'},
        {"dtype", required_argument, 0, 'd'},   {"adapters", required_argument, 0, 'k'},
        {"rank", required_argument, 0, 'r'},    {"alpha", required_argument, 0, 'a'},
        {"adapter-dtype", required_argument, 0, 'D'}, {"layers", required_argument, 0, 'L'},
        {"seed", required_argument, 0, 'S'},    {"output", required_argument, 0, 'o'}, {0, 0, 0, 0},
    };
    lf_synth_spec sp;
    memset(&sp, 0, sizeof sp);
    const char *shape = "tiny", *out = NULL;
    sp.dtype = LF_F16;
    sp.adapter_dtype = LF_F32;
    sp.n_adapters = 2;
    sp.rank = 64;
    sp.alpha = 16;
    sp.gate = 1;
    sp.seed = 1;
    int layers = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":ho:", opts, NULL)) != -1) {
        char *end = NULL;
        errno = 0;
        switch (c) {
        case 'h': fputs(usage, stdout); return 0;
        case 'o': out = optarg; break;
        case 's': shape = optarg; break;
        case 'd': if (parse_dtype(optarg, &sp.dtype)) return 2; break;
        case 'D': if (parse_dtype(optarg, &sp.adapter_dtype)) return 2; break;
        case 'k': sp.n_adapters = (int)strtol(optarg, &end, 10); break;
        case 'r': sp.rank = (int)strtol(optarg, &end, 10); break;
        case 'L': layers = (int)strtol(optarg, &end, 10); break;
        case 'a': sp.alpha = strtof(optarg, &end); break;
        case 'S': sp.seed = strtoull(optarg, &end, 10); break;
        case ':': cli_error("synth", "option %s needs a value", argv[optind - 1]); return 2;
        default: cli_error("synth", "unknown option %s (see --help)", argv[optind - 1]); return 2;
        }
        if (end && (*end || errno)) {
            cli_error("synth", "bad number '%s' for %s", optarg, argv[optind - 1]);
            return 2;
        }
    }
    if (!out) {
        cli_error("synth", "-o DIR is required (see --help)");
        return 2;
    }
    if (lf_synth_shape(shape, &sp.cfg) != 0) {
        cli_error("synth", "%s", lf_last_error());
        return 2;
    }
    if (layers > 0) sp.cfg.n_layers = layers;
    int last = -1;
    if (lf_synth_model(out, &sp, progress, &last) != 0) {
        cli_error("synth", "%s", lf_last_error());
        return 1;
    }
    fprintf(stderr, "loraflow synth: wrote %s (shape %s, %d layers, %d adapters of rank %d)\n", out, shape,
            sp.cfg.n_layers, sp.n_adapters, sp.rank);
    return 0;
}
