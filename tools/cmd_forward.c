/* loraflow forward: one forward pass over the input, every output written
 * to a safetensors file. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: loraflow forward -m MODEL_DIR (-p TEXT | --ids 1,2,3) -o OUT.safetensors [fusion options]\n\n"
    "Runs the model over the whole input in one pass and writes (F32):\n"
    "  logits          [T, V]  logits at every position\n"
    "  hidden_final    [T, H]  output of the final norm\n"
    "  layer_inputs    [L+1, T, H]  residual stream entering each layer, then the last output\n"
    "  fusion_weights  [L, T, k]  the adapter weights used (when adapters are attached)\n"
    "  gate_logits     [L, T, k]  raw gate logits x W_gate^T (LoRA-Flow mode)\n"
    "  input_ids       [T] (I64)\n"
    "options:\n"
    "  -m DIR, -p TEXT, --ids, --system   as in `loraflow generate`\n"
    "  -l NAME=DIR (repeat), -w w1,..,wk, -g GATE, -T X   fusion, as in `loraflow generate`\n"
    "  -o FILE         output safetensors file (written atomically)\n"
    "  -t N            threads (default: all cores)\n"
    CLI_LOAD_USAGE;

int cmd_forward(int argc, char **argv) {
    cli_opts o;
    int r = cli_parse(argc, argv, OPT_MODEL | OPT_THREADS | OPT_FUSION | OPT_INPUT | OPT_OUT | OPT_LOAD, &o, usage);
    if (r) return r > 0 ? 0 : 2;
    if (!o.out) {
        cli_error("forward", "-o OUT.safetensors is required (see --help)");
        return 2;
    }
    cli_env env = {0};
    int32_t *ids = NULL;
    int n = 0, rc = 1;
    float *logits = NULL, *hidden = NULL, *layers = NULL, *fw = NULL, *gl = NULL;
    int64_t *ids64 = NULL;
    lf_tokenizer *tok = NULL;
    if (o.prompt) {
        tok = lf_tokenizer_load_dir(o.model_dir);
        if (!tok) { cli_error("forward", "%s", lf_last_error()); return 1; }
    }
    int prc = cli_prompt_ids(&o, tok, &ids, &n);
    lf_tokenizer_free(tok);
    if (prc != 0) return 2;
    if (cli_setup(&o, 0, n, &env) != 0) goto out;
    const lf_config *c = lf_model_config(env.model);
    const int V = c->vocab_size, H = c->hidden_size, L = c->n_layers, k = lf_model_n_adapters(env.model);
    logits = malloc((size_t)n * V * sizeof(float));
    hidden = malloc((size_t)n * H * sizeof(float));
    layers = malloc((size_t)(L + 1) * n * H * sizeof(float));
    fw = malloc((size_t)L * n * (k ? k : 1) * sizeof(float));
    gl = malloc((size_t)L * n * (k ? k : 1) * sizeof(float));
    ids64 = malloc((size_t)n * sizeof(int64_t));
    if (!logits || !hidden || !layers || !fw || !gl || !ids64) {
        cli_error("forward", "out of memory for the outputs of %d tokens", n);
        goto out;
    }
    lf_outputs out = {.logits = logits, .hidden_final = hidden, .layer_inputs = layers,
                      .fusion_weights = fw, .gate_logits = gl};
    if (lf_session_forward(env.session, ids, n, &out) != 0) {
        cli_error("forward", "%s", lf_last_error());
        goto out;
    }
    for (int i = 0; i < n; i++) ids64[i] = ids[i];
    lf_tensor_desc t[6];
    int nt = 0;
    t[nt++] = (lf_tensor_desc){"logits", LF_F32, 2, {n, V}, logits};
    t[nt++] = (lf_tensor_desc){"hidden_final", LF_F32, 2, {n, H}, hidden};
    t[nt++] = (lf_tensor_desc){"layer_inputs", LF_F32, 3, {L + 1, n, H}, layers};
    if (k > 0) t[nt++] = (lf_tensor_desc){"fusion_weights", LF_F32, 3, {L, n, k}, fw};
    if (env.gate) t[nt++] = (lf_tensor_desc){"gate_logits", LF_F32, 3, {L, n, k}, gl};
    t[nt++] = (lf_tensor_desc){"input_ids", LF_I64, 1, {n}, ids64};
    if (lf_write_safetensors(o.out, t, nt, NULL, 0) != 0) {
        cli_error("forward", "%s", lf_last_error());
        goto out;
    }
    fprintf(stderr, "loraflow: wrote %s (%d tokens)\n", o.out, n);
    rc = 0;
out:
    free(ids); free(logits); free(hidden); free(layers); free(fw); free(gl); free(ids64);
    cli_teardown(&env);
    return rc;
}
