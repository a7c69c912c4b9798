/* loraflow eval: run a test file through greedy generation in any fusion
 * mode and score it (math: the final number; code: the task's unit tests
 * in a python3 subprocess), writing one JSON line per example and a summary. */
#include "cli.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char usage[] =
    "usage: loraflow eval -m MODEL [-l NAME=DIR ... (-w W | -g GATE [-T X])] --data TEST.jsonl [options]\n\n"
    "Generates an answer for every line of TEST.jsonl (greedy) and scores it.\n"
    "  math lines {\"question\", \"answer\"}: exact match of the final number\n"
    "  code lines {\"prompt\", \"test\", \"entry_point\"} (HumanEval): the generated function\n"
    "  runs against the tests with python3 (isolated, no network where possible, time\n"
    "  limit); skipped with a message when python3 is absent\n"
    "Prompts: \"[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{question} [/INST]\" with BOS (without\n"
    "--system: \"[INST] {question} [/INST]\"); code: \"[INST]{system}:\\n{prompt}\\n\\n[/INST]\".\n"
    "options:\n"
    "  --system TEXT | --system-prompts FILE --task KEY   the system prompt (e.g. zh_math)\n"
    "  -n N              at most N new tokens (default 512)\n"
    "  -o FILE.jsonl     one line per example: index, prompt, output, reference, extracted,\n"
    "                    correct (and lang_share with --lang-words)\n"
    "  --summary FILE    the summary JSON (also printed as the last line of stdout)\n"
    "  --lang-words FILE share of the output's words in this word list (language check);\n"
    "                    in_lang = share >= 0.5, strict = correct and in_lang\n"
    "  --limit N         only the first N examples\n"
    "  --timeout S       time limit of one code test run (default 10 s)\n"
    "  -t N              threads (default all cores: examples in parallel on small models)\n"
    "  fusion: -l NAME=DIR (repeat), -w w1,..,wk (static), -g GATE, -T X, as in `loraflow generate`\n"
    CLI_LOAD_USAGE;

typedef struct {
    char *prompt_text;     /* the user part (question or code prompt) */
    char *reference;       /* math answer */
    char *test, *entry;    /* code */
    /* results */
    char *output;
    char extracted[128];
    int correct;           /* 1, 0, or -1 (not scored) */
    double lang_share;
    char why[160];
} item;

typedef struct {
    cli_env *env;
    const char *system;
    int is_code, max_new, n_items, threads_inner;
    item *items;
    const lf_wordset *words;
    double timeout;
    pthread_mutex_t lock;
    int next, done, correct, scored;
    double t0;
    int failed;
    char err[512];
} eval_job;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* "    " -> "\t" as the authors' HumanEval prompts do. */
static char *tabify(const char *s) {
    size_t n = strlen(s);
    char *o = malloc(n + 1), *q = o;
    if (!o) return NULL;
    for (const char *p = s; *p;) {
        if (!strncmp(p, "    ", 4)) { *q++ = '\t'; p += 4; }
        else *q++ = *p++;
    }
    *q = 0;
    return o;
}

static char *build_prompt(const eval_job *j, const item *it) {
    if (!j->is_code) return lf_chat_prompt(j->system, it->prompt_text);
    char *tab = tabify(it->prompt_text);
    if (!tab) return NULL;
    const char *sys = j->system ? j->system : "Create a Python script for this problem";
    size_t n = strlen(tab) + strlen(sys) + 32;
    char *p = malloc(n);
    if (p) snprintf(p, n, "[INST]%s:\n%s\n\n[/INST]", sys, tab);
    free(tab);
    return p;
}

/* The program to test: the first fenced code block of the output if it
 * defines the entry point, else the prompt followed by the output. */
static char *code_program(const item *it) {
    const char *code = it->output, *end = NULL;
    char *block = NULL;
    const char *f = strstr(it->output, "```");
    if (f) {
        const char *s = strchr(f + 3, '\n');
        if (s && (end = strstr(s + 1, "```"))) block = strndup(s + 1, (size_t)(end - s - 1));
    }
    char def[256];
    snprintf(def, sizeof def, "def %s", it->entry ? it->entry : "");
    const char *body = block && strstr(block, def) ? block : NULL;
    size_t n = strlen(it->prompt_text) + strlen(code) + strlen(it->test) + strlen(def) + 64;
    char *prog = malloc(n);
    if (prog) {
        if (body) snprintf(prog, n, "%s\n\n%s\n\ncheck(%s)\n", body, it->test, it->entry);
        else snprintf(prog, n, "%s%s\n\n%s\n\ncheck(%s)\n", it->prompt_text, block ? block : code, it->test, it->entry);
    }
    free(block);
    return prog;
}

static int run_item(eval_job *j, lf_session *s, item *it) {
    char *text = build_prompt(j, it);
    if (!text) return -1;
    int32_t *ids = NULL, *new_ids = NULL;
    int n = 0, nn = 0;
    int rc = lf_tokenize(j->env->tok, text, LF_TOK_BOS, &ids, &n);
    free(text);
    if (rc) return -1;
    lf_session_reset(s);
    lf_generate_params gp = {.max_new_tokens = j->max_new, .stop_at_eos = 1, .sampling = {.greedy = 1}};
    if (n >= lf_session_max_ctx(s)) {
        free(ids);
        it->output = strdup("");
        snprintf(it->why, sizeof it->why, "prompt of %d tokens does not fit the context", n);
    } else {
        rc = lf_generate(s, j->env->tok, ids, n, &gp, NULL, NULL, &new_ids, &nn);
        free(ids);
        if (rc) return -1;
        it->output = lf_detokenize(j->env->tok, new_ids, nn);
        free(new_ids);
        if (!it->output) return -1;
    }
    it->correct = 0;
    if (!j->is_code) {
        if (lf_math_extract(it->output, it->extracted, sizeof it->extracted) == 0)
            it->correct = lf_math_equal(it->extracted, it->reference);
    } else {
        char *prog = code_program(it);
        if (!prog) return -1;
        it->correct = lf_code_check(prog, j->timeout, it->why, sizeof it->why);
        free(prog);
    }
    it->lang_share = j->words ? lf_wordset_share(j->words, it->output) : NAN;
    return 0;
}

static void *worker(void *arg) {
    eval_job *j = arg;
    if (j->threads_inner) lf_set_threads(j->threads_inner);
    const lf_config *c = lf_model_config(j->env->model);
    lf_session *s = lf_session_new(j->env->model, c->max_position_embeddings);
    if (s && j->env->gate) lf_session_set_gate(s, j->env->gate, j->env->temperature);
    else if (s && j->env->static_w_set) lf_session_set_static(s, j->env->static_w, lf_model_n_adapters(j->env->model));
    for (;;) {
        pthread_mutex_lock(&j->lock);
        int i = j->failed || !s ? j->n_items : j->next++;
        pthread_mutex_unlock(&j->lock);
        if (i >= j->n_items) break;
        int rc = run_item(j, s, &j->items[i]);
        pthread_mutex_lock(&j->lock);
        if (rc) {
            if (!j->failed) snprintf(j->err, sizeof j->err, "example %d: %s", i + 1, lf_last_error());
            j->failed = 1;
        } else {
            j->done++;
            if (j->items[i].correct >= 0) { j->scored++; j->correct += j->items[i].correct == 1; }
            const double el = now_s() - j->t0;
            if (j->done == j->n_items || j->done % 10 == 0 || j->done < 4)
                fprintf(stderr, "eval: %d/%d done, %d correct (%.1f%%), %.2f examples/s, about %.0f s left\n", j->done,
                        j->n_items, j->correct, j->scored ? 100.0 * j->correct / j->scored : 0.0, j->done / el,
                        el / j->done * (j->n_items - j->done));
        }
        pthread_mutex_unlock(&j->lock);
    }
    if (!s) {
        pthread_mutex_lock(&j->lock);
        if (!j->failed) snprintf(j->err, sizeof j->err, "%s", lf_last_error());
        j->failed = 1;
        pthread_mutex_unlock(&j->lock);
    }
    lf_session_free(s);
    return NULL;
}

static int read_items(const char *path, int limit, item **out, int *n_out, int *is_code) {
    FILE *f = fopen(path, "r");
    if (!f) { fprintf(stderr, "loraflow eval: %s: cannot open: %s\n", path, strerror(errno)); return -1; }
    char *line = NULL;
    size_t cap = 0;
    int n = 0, icap = 0, lineno = 0;
    item *items = NULL;
    *is_code = -1;
    while (getline(&line, &cap, f) >= 0 && (limit <= 0 || n < limit)) {
        lineno++;
        if (strspn(line, " \t\r\n") == strlen(line)) continue;
        cJSON *j = cJSON_Parse(line);
        if (!cJSON_IsObject(j)) {
            fprintf(stderr, "loraflow eval: %s:%d: not a JSON object\n", path, lineno);
            cJSON_Delete(j);
            goto fail;
        }
        if (n == icap) { icap = icap ? icap * 2 : 256; items = realloc(items, (size_t)icap * sizeof *items); }
        item *it = &items[n];
        memset(it, 0, sizeof *it);
        it->correct = -1;
        const cJSON *q = cJSON_GetObjectItem(j, "question"), *a = cJSON_GetObjectItem(j, "answer");
        const cJSON *p = cJSON_GetObjectItem(j, "prompt"), *t = cJSON_GetObjectItem(j, "test");
        const cJSON *e = cJSON_GetObjectItem(j, "entry_point");
        int code = cJSON_IsString(p) && cJSON_IsString(t) && cJSON_IsString(e);
        int math = cJSON_IsString(q) && (cJSON_IsString(a) || cJSON_IsNumber(a));
        if (!code && !math) {
            fprintf(stderr, "loraflow eval: %s:%d: expected {question, answer} (math) or {prompt, test, entry_point} (code)\n",
                    path, lineno);
            cJSON_Delete(j);
            goto fail;
        }
        if (*is_code >= 0 && *is_code != code) {
            fprintf(stderr, "loraflow eval: %s:%d: math and code lines mixed in one file\n", path, lineno);
            cJSON_Delete(j);
            goto fail;
        }
        *is_code = code;
        if (code) {
            it->prompt_text = strdup(p->valuestring);
            it->test = strdup(t->valuestring);
            it->entry = strdup(e->valuestring);
        } else {
            it->prompt_text = strdup(q->valuestring);
            if (cJSON_IsString(a)) it->reference = strdup(a->valuestring);
            else { char b[64]; snprintf(b, sizeof b, "%.17g", a->valuedouble); it->reference = strdup(b); }
        }
        n++;
        cJSON_Delete(j);
    }
    free(line);
    fclose(f);
    if (n == 0) { fprintf(stderr, "loraflow eval: %s: no examples\n", path); free(items); return -1; }
    *out = items;
    *n_out = n;
    return 0;
fail:
    free(line);
    fclose(f);
    for (int i = 0; i < n; i++) { free(items[i].prompt_text); free(items[i].reference); free(items[i].test); free(items[i].entry); }
    free(items);
    return -1;
}

/* Write the per-example lines: a temporary file beside the target, renamed at the end. */
static int write_results(const char *path, const eval_job *j) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) { fprintf(stderr, "loraflow eval: %s: cannot write: %s\n", path, strerror(errno)); return -1; }
    for (int i = 0; i < j->n_items; i++) {
        const item *it = &j->items[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "index", i);
        cJSON_AddStringToObject(o, "prompt", it->prompt_text);
        cJSON_AddStringToObject(o, "output", it->output ? it->output : "");
        if (!j->is_code) {
            cJSON_AddStringToObject(o, "reference", it->reference);
            if (it->extracted[0]) cJSON_AddStringToObject(o, "extracted", it->extracted);
            else cJSON_AddNullToObject(o, "extracted");
        }
        if (it->correct >= 0) cJSON_AddBoolToObject(o, "correct", it->correct == 1);
        else cJSON_AddNullToObject(o, "correct");
        if (it->why[0]) cJSON_AddStringToObject(o, "note", it->why);
        if (!isnan(it->lang_share)) cJSON_AddNumberToObject(o, "lang_share", it->lang_share);
        char *s = cJSON_PrintUnformatted(o);
        fprintf(f, "%s\n", s);
        free(s);
        cJSON_Delete(o);
    }
    int ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok &= fclose(f) == 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        fprintf(stderr, "loraflow eval: %s: write failed\n", path);
        return -1;
    }
    return 0;
}

int cmd_eval(int argc, char **argv) {
    /* eval's own options, then the shared fusion options through cli_parse */
    const char *data = NULL, *out = NULL, *summary = NULL, *words_path = NULL, *sysfile = NULL, *task = NULL;
    int limit = 0, max_new = 512;
    double timeout = 10;
    char **rest = malloc(sizeof(char *) * (size_t)(argc + 1));
    int nrest = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
#define VAL() (i + 1 < argc ? argv[++i] : (fprintf(stderr, "loraflow eval: %s needs a value\n", a), exit(2), ""))
        if (!strcmp(a, "--data")) data = VAL();
        else if (!strcmp(a, "--summary")) summary = VAL();
        else if (!strcmp(a, "--lang-words")) words_path = VAL();
        else if (!strcmp(a, "--system-prompts")) sysfile = VAL();
        else if (!strcmp(a, "--task")) task = VAL();
        else if (!strcmp(a, "--limit")) limit = atoi(VAL());
        else if (!strcmp(a, "--timeout")) timeout = atof(VAL());
        else if (!strcmp(a, "-o")) out = VAL();
        else if (!strcmp(a, "-n")) max_new = atoi(VAL());
        else rest[nrest++] = argv[i];
#undef VAL
    }
    rest[nrest] = NULL;
    cli_opts o;
    int r = cli_parse(nrest, rest, OPT_MODEL | OPT_THREADS | OPT_FUSION | OPT_INPUT | OPT_LOAD, &o, usage);
    free(rest);
    if (r) return r > 0 ? 0 : 2;
    if (!data) { cli_error("eval", "--data TEST.jsonl is required (see --help)"); return 2; }
    if (o.prompt || o.ids) { cli_error("eval", "-p/--ids do not apply: the prompts come from --data"); return 2; }
    if (max_new < 1 || !(timeout > 0)) { cli_error("eval", "-n and --timeout must be positive"); return 2; }
    char *system = NULL;
    if (sysfile) {
        if (!task) { cli_error("eval", "--system-prompts needs --task KEY (e.g. zh_math)"); return 2; }
        if (o.system) { cli_error("eval", "give --system or --system-prompts, not both"); return 2; }
        system = lf_system_prompt_from_file(sysfile, task);
        if (!system) { cli_error("eval", "%s", lf_last_error()); return 1; }
    } else if (o.system) {
        system = strdup(o.system);
    }
    eval_job j;
    memset(&j, 0, sizeof j);
    cli_env env;
    lf_wordset *words = NULL;
    int rc = 1;
    if (read_items(data, limit, &j.items, &j.n_items, &j.is_code)) { free(system); return 1; }
    if (words_path && !(words = lf_wordset_load(words_path))) { cli_error("eval", "%s", lf_last_error()); goto out_items; }
    if (cli_setup(&o, 1, 0, &env) != 0) goto out_items;
    if (j.is_code && lf_code_check("pass\n", 10, NULL, 0) < 0)
        fprintf(stderr, "loraflow eval: python3 not found: code answers are generated but not run (correct = null)\n");
    j.env = &env;
    j.system = system;
    j.max_new = max_new;
    j.words = words;
    j.timeout = timeout;
    pthread_mutex_init(&j.lock, NULL);
    /* Small models: examples in parallel, one thread each; large ones: one
     * example at a time with every thread in the kernels. */
    lf_model_info info;
    lf_model_get_info(env.model, &info);
    int threads = o.threads ? o.threads : lf_get_threads();
    int workers = info.weight_bytes < (512u << 20) ? threads : 1;
    if (workers > j.n_items) workers = j.n_items;
    j.threads_inner = workers > 1 ? 1 : 0;
    fprintf(stderr, "loraflow eval: %d %s examples, %d worker%s\n", j.n_items, j.is_code ? "code" : "math", workers,
            workers > 1 ? "s" : "");
    j.t0 = now_s();
    pthread_t th[256];
    if (workers > 256) workers = 256;
    for (int i = 0; i < workers; i++) pthread_create(&th[i], NULL, worker, &j);
    for (int i = 0; i < workers; i++) pthread_join(th[i], NULL);
    if (j.failed) { cli_error("eval", "%s", j.err); goto out_env; }
    if (out && write_results(out, &j)) goto out_env;
    /* summary */
    int in_lang = 0, strict = 0, with_share = 0;
    double share_sum = 0;
    for (int i = 0; i < j.n_items; i++) {
        const item *it = &j.items[i];
        if (!isnan(it->lang_share) && it->lang_share >= 0) { share_sum += it->lang_share; with_share++; }
        int il = !isnan(it->lang_share) && it->lang_share >= 0.5;
        in_lang += il;
        strict += il && it->correct == 1;
    }
    cJSON *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "data", data);
    cJSON_AddStringToObject(s, "task", j.is_code ? "code" : "math");
    cJSON_AddNumberToObject(s, "n", j.n_items);
    cJSON_AddNumberToObject(s, "scored", j.scored);
    cJSON_AddNumberToObject(s, "correct", j.correct);
    cJSON_AddNumberToObject(s, "accuracy", j.scored ? (double)j.correct / j.scored : 0);
    if (words) {
        cJSON_AddNumberToObject(s, "lang_share_mean", with_share ? share_sum / with_share : 0);
        cJSON_AddNumberToObject(s, "in_lang", in_lang);
        cJSON_AddNumberToObject(s, "in_lang_rate", (double)in_lang / j.n_items);
        cJSON_AddNumberToObject(s, "strict", strict);
        cJSON_AddNumberToObject(s, "strict_accuracy", (double)strict / j.n_items);
    }
    cJSON_AddNumberToObject(s, "seconds", now_s() - j.t0);
    char *js = cJSON_PrintUnformatted(s);
    cJSON_Delete(s);
    if (summary) {
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s.tmp.%d", summary, (int)getpid());
        FILE *f = fopen(tmp, "w");
        int ok = f && fprintf(f, "%s\n", js) > 0 && fflush(f) == 0 && fsync(fileno(f)) == 0;
        if (f) ok &= fclose(f) == 0;
        if (!ok || rename(tmp, summary) != 0) {
            unlink(tmp);
            cli_error("eval", "%s: cannot write the summary", summary);
            free(js);
            goto out_env;
        }
    }
    printf("%s\n", js);
    free(js);
    rc = 0;
out_env:
    pthread_mutex_destroy(&j.lock);
    cli_teardown(&env);
out_items:
    for (int i = 0; i < j.n_items; i++) {
        item *it = &j.items[i];
        free(it->prompt_text); free(it->reference); free(it->test); free(it->entry); free(it->output);
    }
    free(j.items);
    lf_wordset_free(words);
    free(system);
    return rc;
}
