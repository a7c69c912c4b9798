/* loraflow info: architecture, tensors, dtypes, parameters, memory. */
#include "cli.h"

#include <stdio.h>

static const char usage[] =
    "usage: loraflow info -m MODEL_DIR [-l NAME=DIR ...]\n\n"
    "Describes a Hugging Face Llama folder: architecture, tensor count, dtypes,\n"
    "parameter count and the memory needed to run it.\n";

int cmd_info(int argc, char **argv) {
    cli_opts o;
    int r = cli_parse(argc, argv, OPT_MODEL | OPT_FUSION, &o, usage);
    if (r) return r > 0 ? 0 : 2;
    lf_model *m = lf_model_load(o.model_dir);
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
    for (int i = 0; i < lf_model_n_adapters(m); i++) printf("adapter %d:    %s\n", i, lf_model_adapter_name(m, i));
    lf_model_free(m);
    return 0;
}
