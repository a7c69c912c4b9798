/* loraflow info: architecture, tensors, dtypes, parameters, memory. */
#include "cli.h"

#include <stdio.h>

static const char usage[] =
    "usage: loraflow info -m MODEL_DIR [-l NAME=DIR ...]\n\n"
    "Describes a Hugging Face Llama folder: architecture, tensor count, dtypes,\n"
    "parameter count, the memory needed to run it and the bytes of weights each\n"
    "generated token reads (with the adapters given by -l, if any).  The weights\n"
    "stay memory-mapped: nothing is copied or quantised.\n";

/* GB with 3 decimals, or MB below 0.1 GB */
static const char *fmt_bytes(char *buf, size_t n, size_t bytes) {
    if (bytes >= 100000000) snprintf(buf, n, "%.3f GB", bytes / 1e9);
    else snprintf(buf, n, "%.2f MB", bytes / 1e6);
    return buf;
}

int cmd_info(int argc, char **argv) {
    cli_opts o;
    int r = cli_parse(argc, argv, OPT_MODEL | OPT_FUSION, &o, usage);
    if (r) return r > 0 ? 0 : 2;
    /* a description needs no copy of the weights (the default placement
     * would copy a model that fits in memory: 13 GB for a 7B one) */
    const lf_load_options lo = {.placement = LF_PLACE_MMAP, .quantize = LF_QUANT_NONE,
                                .quantize_adapters = LF_QUANT_NONE};
    lf_model *m = lf_model_load_opts(o.model_dir, &lo);
    if (!m) {
        cli_error("info", "%s", lf_last_error());
        return 1;
    }
    for (int i = 0; i < o.n_adapters; i++) {
        if (lf_model_add_adapter(m, o.adapter_name[i], o.adapter_dir[i]) < 0) {
            cli_error("info", "%s", lf_last_error());
            lf_model_free(m);
            return 1;
        }
    }
    const lf_config *c = lf_model_config(m);
    lf_model_info in;
    lf_model_get_info(m, &in);
    static const char *dt[5] = {"F32", "F16", "BF16", "I64", "I32"};
    printf("model:        %s\n", o.model_dir);
    printf("architecture: LlamaForCausalLM\n");
    printf("layers:       %d\n", c->n_layers);
    printf("hidden:       %d\n", c->hidden_size);
    printf("intermediate: %d\n", c->intermediate_size);
    printf("heads:        %d (key/value heads %d, head_dim %d)\n", c->n_heads, c->n_kv_heads, c->head_dim);
    printf("vocab:        %d\n", c->vocab_size);
    printf("context:      %d\n", c->max_position_embeddings);
    printf("rope_theta:   %g\nrms_norm_eps: %g\n", (double)c->rope_theta, (double)c->rms_norm_eps);
    printf("tied lm_head: %s\n", c->tie_word_embeddings ? "yes" : "no");
    printf("weights:      %s\n", in.weights_file);
    printf("tensors:      %d (", in.n_tensors);
    int first = 1;
    for (int i = 0; i < 5; i++)
        if (in.n_by_dtype[i]) { printf("%s%d %s", first ? "" : ", ", in.n_by_dtype[i], dt[i]); first = 0; }
    printf(")\n");
    printf("parameters:   %lld (%.3f B)\n", (long long)in.n_params, in.n_params / 1e9);
    printf("weight bytes: %zu (%.2f GiB, memory-mapped)\n", in.weight_bytes, in.weight_bytes / 1073741824.0);
    int ctx = c->max_position_embeddings;
    printf("runtime:      %.2f GiB of KV cache and activations at a context of %d tokens\n",
           lf_model_runtime_bytes(m, ctx) / 1073741824.0, ctx);
    /* the floor of decoding: every weight byte is read once per token */
    char b0[32], b1[32];
    printf("per token:    %s of weights read by each generated token, as stored",
           fmt_bytes(b0, sizeof b0, lf_model_decode_bytes(m, 0)));
    if (lf_model_n_adapters(m)) printf("; %s with the adapters", fmt_bytes(b1, sizeof b1, lf_model_decode_bytes(m, 1)));
    printf(" (--quantize q8, --quantize-adapters q8: 1.06 bytes a value)\n");
    for (int i = 0; i < lf_model_n_adapters(m); i++) printf("adapter %d:    %s\n", i, lf_model_adapter_name(m, i));
    lf_model_free(m);
    return 0;
}
