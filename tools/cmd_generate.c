/* loraflow generate: stream text from a prompt, in any fusion mode. */
#include "cli.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char usage[] =
    "usage: loraflow generate -m MODEL_DIR (-p TEXT | --ids 1,2,3) [options]\n\n"
    "Generates text, streaming it to stdout as it is produced.\n"
    "input:\n"
    "  -m DIR            Hugging Face Llama folder\n"
    "  -p TEXT           prompt (BOS is prepended)\n"
    "  --ids 1,2,3       prompt as token ids (used as given)\n"
    "  --system TEXT     wrap -p in the Llama-2 chat template with this system prompt\n"
    "fusion (default: the base model alone):\n"
    "  -l NAME=DIR       attach a PEFT LoRA folder; repeat; the order is the gate's row order\n"
    "  -w w1,...,wk      static fusion with these weights (e.g. -w 1 for one LoRA, -w 0.5,0.5)\n"
    "  -g GATE           LoRA-Flow gate (.pt from the authors or loraflow's .safetensors)\n"
    "  -T X              gate temperature (default: stored in the gate file, else 1.0)\n"
    "sampling (default: greedy):\n"
    "  -n N              at most N new tokens (default 128); stops earlier at EOS\n"
    "  --greedy          always the most likely token\n"
    "  --temp X          sample at temperature X (default 0.8 when sampling)\n"
    "  --top-p P         nucleus sampling (default 0.95)\n"
    "  --top-k K         sample from the K most likely tokens (default 40, 0 = all)\n"
    "  --seed S          random seed (default 42)\n"
    "output:\n"
    "  --json            print one JSON object {prompt_ids, ids, text} instead of streaming\n"
    "  --trace FILE      record the fusion weights of every token at every layer (.csv or .json)\n"
    "  --trace-svg FILE  draw them as a heatmap (tokens x layers, one panel per adapter)\n"
    "  --ctx N           context size (default: prompt + N, at most max_position_embeddings)\n"
    "  -t N              threads (default: all cores)\n"
    CLI_LOAD_USAGE;

typedef struct {
    int json;
} stream_state;

static int on_token(int32_t id, const char *text, void *user) {
    stream_state *st = user;
    (void)id;
    if (!st->json && text[0]) {
        fputs(text, stdout);
        fflush(stdout);
    }
    return 0;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* Write the trace of the fed tokens (prompt + generated, as fed). */
static int write_traces(const cli_opts *o, cli_env *env, const int32_t *fed, int n_fed) {
    int n;
    const float *w = lf_session_trace(env->session, &n);
    if (n > n_fed) n = n_fed;
    int k = lf_model_n_adapters(env->model);
    char **labels = calloc((size_t)(n ? n : 1), sizeof *labels);
    const char *names[CLI_MAX_ADAPTERS];
    for (int i = 0; i < k; i++) names[i] = lf_model_adapter_name(env->model, i);
    int rc = 0;
    for (int t = 0; labels && t < n; t++) {
        char buf[256];
        int len = lf_token_bytes(env->tok, fed[t], buf, (int)sizeof buf - 1);
        if (len < 0) len = 0;
        if (len == 0) {
            const char *p = lf_tokenizer_piece(env->tok, fed[t]);
            snprintf(buf, sizeof buf, "%s", p ? p : "?");
            len = (int)strlen(buf);
        }
        buf[len] = 0;
        labels[t] = strdup(buf);
    }
    lf_trace_view v = {n, lf_model_config(env->model)->n_layers, k, w, (const char *const *)labels, names};
    if (!labels) rc = -1;
    if (!rc && o->trace) {
        rc = ends_with(o->trace, ".json") ? lf_trace_write_json(o->trace, &v) : lf_trace_write_csv(o->trace, &v);
        if (rc) cli_error("generate", "%s", lf_last_error());
        else fprintf(stderr, "trace: %s (%d tokens x %d layers x %d adapters)\n", o->trace, n, v.n_layers, k);
    }
    if (!rc && o->trace_svg) {
        rc = lf_trace_write_svg(o->trace_svg, &v);
        if (rc) cli_error("generate", "%s", lf_last_error());
        else fprintf(stderr, "heatmap: %s\n", o->trace_svg);
    }
    for (int t = 0; labels && t < n; t++) free(labels[t]);
    free(labels);
    return rc;
}

int cmd_generate(int argc, char **argv) {
    cli_opts o;
    int r = cli_parse(argc, argv, OPT_MODEL | OPT_THREADS | OPT_FUSION | OPT_INPUT | OPT_GEN | OPT_TRACE | OPT_LOAD, &o, usage);
    if (r) return r > 0 ? 0 : 2;
    if ((o.trace || o.trace_svg) && o.n_adapters == 0) {
        cli_error("generate", "--trace needs adapters (-l) and a fusion mode (-g or -w)");
        return 2;
    }
    cli_env env = {0};
    /* The tokenizer first (for the prompt), then the context it needs. */
    lf_tokenizer *tok = lf_tokenizer_load_dir(o.model_dir);
    if (!tok) {
        cli_error("generate", "%s", lf_last_error());
        return 1;
    }
    int32_t *prompt = NULL, *new_ids = NULL;
    int n_prompt = 0, n_new = 0, rc = 1;
    int prc = cli_prompt_ids(&o, tok, &prompt, &n_prompt);
    lf_tokenizer_free(tok);
    if (prc != 0) return 2;
    lf_config cfg;
    char cfg_path[4096];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", o.model_dir);
    if (lf_config_read(cfg_path, &cfg) != 0) {
        cli_error("generate", "%s", lf_last_error());
        free(prompt);
        return 1;
    }
    int ctx = o.ctx ? o.ctx : n_prompt + o.n_predict;
    if (!o.ctx && ctx > cfg.max_position_embeddings) ctx = cfg.max_position_embeddings;
    if (cli_setup(&o, 1, ctx, &env) != 0) { free(prompt); return 1; }
    if (n_prompt > ctx) {
        cli_error("generate", "the prompt has %d tokens, more than the context of %d", n_prompt, ctx);
        goto out;
    }
    if (o.trace || o.trace_svg) lf_session_set_trace(env.session, 1);
    lf_generate_params gp = {
        .max_new_tokens = o.n_predict, .stop_at_eos = 1,
        .sampling = {.greedy = o.greedy || !o.sampling_given, .temperature = o.temp, .top_p = o.top_p,
                     .top_k = o.top_k, .seed = o.seed},
    };
    stream_state st = {o.json};
    double t0 = now();
    if (lf_generate(env.session, env.tok, prompt, n_prompt, &gp, on_token, &st, &new_ids, &n_new) != 0) {
        if (!o.json) printf("\n");
        cli_error("generate", "%s", lf_last_error());
        goto out;
    }
    double t1 = now();
    if (o.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON *pa = cJSON_AddArrayToObject(j, "prompt_ids");
        for (int i = 0; i < n_prompt; i++) cJSON_AddItemToArray(pa, cJSON_CreateNumber(prompt[i]));
        cJSON *ia = cJSON_AddArrayToObject(j, "ids");
        for (int i = 0; i < n_new; i++) cJSON_AddItemToArray(ia, cJSON_CreateNumber(new_ids[i]));
        char *text = lf_detokenize(env.tok, new_ids, n_new);
        cJSON_AddStringToObject(j, "text", text ? text : "");
        free(text);
        char *s = cJSON_PrintUnformatted(j);
        printf("%s\n", s);
        free(s);
        cJSON_Delete(j);
    } else {
        printf("\n");
    }
    fflush(stdout);
    fprintf(stderr, "loraflow: %d prompt tokens, %d new tokens in %.2f s (%.2f tokens/s overall)\n",
            n_prompt, n_new, t1 - t0, (t1 - t0) > 0 ? n_new / (t1 - t0) : 0.0);
    if (o.trace || o.trace_svg) {
        /* tokens fed: the prompt and every generated token but the last */
        int n_fed = n_prompt + (n_new > 0 ? n_new - 1 : 0);
        int32_t *fed = malloc((size_t)(n_fed ? n_fed : 1) * sizeof *fed);
        if (!fed) goto out;
        memcpy(fed, prompt, (size_t)n_prompt * sizeof *fed);
        if (n_new > 1) memcpy(fed + n_prompt, new_ids, (size_t)(n_new - 1) * sizeof *fed);
        int trc = write_traces(&o, &env, fed, n_fed);
        free(fed);
        if (trc) goto out;
    }
    rc = 0;
out:
    free(prompt);
    free(new_ids);
    cli_teardown(&env);
    return rc;
}
