/* loraflow search-weights: task-level static weights (LoRA-Hub baseline). */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: loraflow search-weights -m MODEL -l NAME=DIR ... --data TRAIN.jsonl [options]\n\n"
    "Finds one weight per adapter for a whole task, as the LoRA-Hub baseline does: a\n"
    "gradient-free search (a (1+4) evolution strategy with step-size adaptation, in\n"
    "[-1.5, 1.5]^k) minimising the mean cross-entropy on the data plus REG * sum |w|.\n"
    "Prints the weights as `-w w1,...,wk` for generate/eval.\n"
    "  --budget N        loss evaluations (default 40, LoRA-Hub's default)\n"
    "  --reg X           L1 regularisation (default 0.05, LoRA-Hub's default)\n"
    "  --start w1,..,wk  starting point (default 0 for every adapter, as LoRA-Hub)\n"
    "  --seed S          random seed (default 42)\n"
    "  --limit N         use only the first N examples (speed)\n"
    "  --system TEXT | --system-prompts FILE --task KEY  --max-len N   as in train-gate\n"
    "  -t N              threads\n";

static void on_eval(int evals, const float *w, int k, double obj, void *user) {
    (void)user;
    fprintf(stderr, "search: %d evaluations, best objective %.4f at w =", evals, obj);
    for (int i = 0; i < k; i++) fprintf(stderr, "%s%.4f", i ? "," : " ", (double)w[i]);
    fputc('\n', stderr);
}

int cmd_search_weights(int argc, char **argv) {
    const char *data = NULL, *start = NULL, *sysfile = NULL, *task = NULL;
    int budget = 40, limit = 0, max_len = 4096;
    float reg = 0.05f;
    unsigned long long seed = 42;
    char **rest = malloc(sizeof(char *) * (size_t)(argc + 1));
    int nrest = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "--data") && has) data = argv[++i];
        else if (!strcmp(a, "--budget") && has) budget = atoi(argv[++i]);
        else if (!strcmp(a, "--reg") && has) reg = strtof(argv[++i], NULL);
        else if (!strcmp(a, "--start") && has) start = argv[++i];
        else if (!strcmp(a, "--seed") && has) seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--limit") && has) limit = atoi(argv[++i]);
        else if (!strcmp(a, "--max-len") && has) max_len = atoi(argv[++i]);
        else if (!strcmp(a, "--system-prompts") && has) sysfile = argv[++i];
        else if (!strcmp(a, "--task") && has) task = argv[++i];
        else rest[nrest++] = argv[i];
    }
    rest[nrest] = NULL;
    cli_opts o;
    int r = cli_parse(nrest, rest, OPT_MODEL | OPT_THREADS | OPT_FUSION | OPT_INPUT, &o, usage);
    free(rest);
    if (r) return r > 0 ? 0 : 2;
    if (!data || o.n_adapters == 0 || o.gate || o.weights || budget < 1 || reg < 0) {
        cli_error("search-weights", "need -m, -l NAME=DIR for each adapter and --data (no -g/-w); budget >= 1, reg >= 0");
        return 2;
    }
    char *system = NULL;
    if (sysfile) {
        if (!task) { cli_error("search-weights", "--system-prompts needs --task KEY"); return 2; }
        if (!(system = lf_system_prompt_from_file(sysfile, task))) { cli_error("search-weights", "%s", lf_last_error()); return 1; }
    } else if (o.system) {
        system = strdup(o.system);
    }
    int rc = 1;
    lf_model *m = lf_model_load(o.model_dir);
    lf_tokenizer *tok = m ? lf_tokenizer_load_dir(o.model_dir) : NULL;
    lf_dataset *d = NULL;
    if (!m) { cli_error("search-weights", "%s", lf_last_error()); goto out; }
    for (int i = 0; i < o.n_adapters; i++)
        if (lf_model_add_adapter(m, o.adapter_name[i], o.adapter_dir[i]) < 0) {
            cli_error("search-weights", "%s", lf_last_error());
            goto out;
        }
    d = lf_dataset_load(data, tok, system, max_len);
    if (!d) { cli_error("search-weights", "%s", lf_last_error()); goto out; }
    float w[CLI_MAX_ADAPTERS] = {0};
    if (start) {
        const char *p = start;
        for (int i = 0; i < o.n_adapters; i++) {
            char *end;
            w[i] = strtof(p, &end);
            if (end == p) { cli_error("search-weights", "--start needs %d numbers", o.n_adapters); goto out; }
            p = *end == ',' ? end + 1 : end;
        }
    }
    double obj;
    const lf_dataset *use = d;
    lf_dataset *sub = NULL;
    if (limit > 0 && limit < lf_dataset_size(d)) {
        sub = lf_dataset_head(d, limit);
        if (!sub) { cli_error("search-weights", "%s", lf_last_error()); goto out; }
        use = sub;
    }
    int sr = lf_search_static_weights(m, use, budget, reg, seed, w, &obj, on_eval, NULL);
    lf_dataset_free(sub);
    if (sr) { cli_error("search-weights", "%s", lf_last_error()); goto out; }
    printf("-w ");
    for (int i = 0; i < o.n_adapters; i++) printf("%s%.4f", i ? "," : "", (double)w[i]);
    printf("\n");
    rc = 0;
out:
    lf_dataset_free(d);
    lf_tokenizer_free(tok);
    lf_model_free(m);
    free(system);
    return rc;
}
