/* bench.c: the replication's scoring, LoRA-Hub search and table, on the
 * loraflow library (replication/README.md).
 *
 *   bench score -m BASE [-l NAME=DIR ...] [-w W1,.. | -g GATE] --data TEST.jsonl
 *               --lang-words L2.txt --other-words L1.txt [-n MAX_NEW] -o OUT.jsonl --summary SUM.json
 *   bench hub   -m BASE -l NAME=DIR -l NAME=DIR --data TRAIN.jsonl -o WEIGHTS.txt
 *   bench table --out DIR SEED_DIR...
 *   bench trace TRACE.csv WORDS_L2.txt       (one sentence on a fusion-weight trace)
 *   bench check -m MODEL --data TEST.jsonl   (text prompts tokenize to one id per word)
 */
#include "loraflow.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXA 8

static void die(const char *what) {
    fprintf(stderr, "bench: %s: %s\n", what, lf_last_error());
    exit(1);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "bench: cannot open %s\n", path); exit(1); }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) { fprintf(stderr, "bench: cannot read %s\n", path); exit(1); }
    b[n] = 0;
    fclose(f);
    return b;
}

/* ============================ word sets ============================ */

typedef struct {
    char **w;
    int n;
} wordset;

static wordset load_words(const char *path) {
    wordset s = {0};
    char *b = slurp(path), *save = NULL;
    for (char *t = strtok_r(b, " \t\r\n", &save); t; t = strtok_r(NULL, " \t\r\n", &save)) {
        s.w = realloc(s.w, (size_t)(s.n + 1) * sizeof *s.w);
        s.w[s.n++] = strdup(t);
    }
    free(b);
    return s;
}

static void free_words(wordset *s) {
    for (int i = 0; i < s->n; i++) free(s->w[i]);
    free(s->w);
    s->w = NULL;
    s->n = 0;
}

static int in_set(const wordset *s, const char *w) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->w[i], w)) return 1;
    return 0;
}

/* ============================ common options ============================ */

typedef struct {
    const char *model, *gate, *weights, *data, *out, *summary, *lang_words, *other_words, *outdir;
    const char *an[MAXA], *ad[MAXA];
    int na, max_new, threads;
    char **rest;
    int n_rest;
} opts;

/* The positional arguments of the one command this process runs. */
static char **rest_buf;
static void free_rest(void) { free(rest_buf); }

static void parse(int argc, char **argv, opts *o) {
    memset(o, 0, sizeof *o);
    o->max_new = 48;
    o->threads = 1;
    if (!rest_buf) {
        rest_buf = malloc((size_t)(argc + 1) * sizeof *rest_buf);
        if (!rest_buf) exit(1);
        atexit(free_rest);
    }
    o->rest = rest_buf;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(s, field) else if (!strcmp(a, s) && v) { o->field = v; i++; }
        if (0) {}
        OPT("-m", model) OPT("-g", gate) OPT("-w", weights) OPT("--data", data) OPT("-o", out)
        OPT("--summary", summary) OPT("--lang-words", lang_words) OPT("--other-words", other_words)
        OPT("--out", outdir)
        else if (!strcmp(a, "-n") && v) { o->max_new = atoi(v); i++; }
        else if (!strcmp(a, "-t") && v) { o->threads = atoi(v); i++; }
        else if (!strcmp(a, "-l") && v) {
            char *eq = strchr(v, '=');
            if (!eq || o->na >= MAXA) { fprintf(stderr, "bench: -l NAME=DIR\n"); exit(2); }
            *eq = 0;
            o->an[o->na] = v;
            o->ad[o->na++] = eq + 1;
            i++;
        } else if (a[0] == '-') { fprintf(stderr, "bench: unknown option %s\n", a); exit(2); }
        else o->rest[o->n_rest++] = argv[i];
#undef OPT
    }
    lf_set_threads(o->threads > 0 ? o->threads : 1);
}

static lf_model *load_model(const opts *o) {
    if (!o->model) { fprintf(stderr, "bench: need -m MODEL\n"); exit(2); }
    lf_model *m = lf_model_load(o->model);
    if (!m) die(o->model);
    for (int i = 0; i < o->na; i++)
        if (lf_model_add_adapter(m, o->an[i], o->ad[i]) < 0) die(o->ad[i]);
    return m;
}

static int parse_w(const char *s, float *w, int k) {
    int n = 0;
    const char *p = s;
    while (*p && n < k) {
        char *end;
        w[n++] = strtof(p, &end);
        if (end == p) return -1;
        p = *end == ',' ? end + 1 : end;
    }
    return n == k && !*p ? 0 : -1;
}

/* ============================ score ============================ */

/* Words of a text: split on whitespace, lowercased, punctuation stripped at both ends. */
static int next_word(const char **pp, char *buf, int cap) {
    const char *p = *pp;
    while (*p && isspace((unsigned char)*p)) p++;
    if (!*p) return 0;
    int n = 0;
    while (*p && !isspace((unsigned char)*p)) {
        if (n < cap - 1) buf[n++] = (char)tolower((unsigned char)*p);
        p++;
    }
    buf[n] = 0;
    *pp = p;
    char *s = buf;
    while (*s && ispunct((unsigned char)*s)) s++;
    memmove(buf, s, strlen(s) + 1);
    n = (int)strlen(buf);
    while (n && ispunct((unsigned char)buf[n - 1])) buf[--n] = 0;
    return 1;
}

/* The last integer of the text (or 0 found = -1). */
static int last_number(const char *t, long *v) {
    int found = 0;
    for (const char *p = t; *p;) {
        if (isdigit((unsigned char)*p)) {
            char *end;
            *v = strtol(p, &end, 10);
            p = end;
            found = 1;
        } else p++;
    }
    return found;
}

static void json_escape(FILE *f, const char *s) {
    cJSON *j = cJSON_CreateString(s);
    char *o = cJSON_PrintUnformatted(j);
    fputs(o, f);
    free(o);
    cJSON_Delete(j);
}

static int cmd_score(int argc, char **argv) {
    opts o;
    parse(argc, argv, &o);
    if (!o.data || !o.lang_words || !o.other_words || !o.summary) {
        fprintf(stderr, "bench score: need -m, --data, --lang-words, --other-words, --summary\n");
        return 2;
    }
    lf_model *m = load_model(&o);
    lf_tokenizer *tok = lf_tokenizer_load_dir(o.model);
    if (!tok) die(o.model);
    wordset l2 = load_words(o.lang_words), l1 = load_words(o.other_words);
    lf_session *s = lf_session_new(m, 512);
    if (!s) die("session");
    lf_gate *g = NULL;
    float w[MAXA];
    if (o.gate) {
        g = lf_gate_load(o.gate, m);
        if (!g) die(o.gate);
        float T = lf_gate_stored_temperature(g);
        if (lf_session_set_gate(s, g, T > 0 ? T : 1.0f)) die("gate");
    } else if (o.weights) {
        if (parse_w(o.weights, w, o.na)) { fprintf(stderr, "bench: -w needs %d weights\n", o.na); return 2; }
        if (lf_session_set_static(s, w, o.na)) die("weights");
    } else if (o.na) {
        for (int i = 0; i < o.na; i++) w[i] = 1;
        lf_session_set_static(s, w, o.na);
    } else lf_session_set_base(s);
    FILE *out = o.out ? fopen(o.out, "w") : NULL;
    if (o.out && !out) { fprintf(stderr, "bench: cannot write %s\n", o.out); return 1; }
    FILE *in = fopen(o.data, "r");
    if (!in) { fprintf(stderr, "bench: cannot open %s\n", o.data); return 1; }
    char *line = NULL;
    size_t cap = 0;
    int n = 0, correct = 0, in_lang = 0, strict = 0;
    double share_sum = 0;
    while (getline(&line, &cap, in) > 0) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *q = cJSON_GetObjectItemCaseSensitive(j, "question");
        const cJSON *num = cJSON_GetObjectItemCaseSensitive(j, "number");
        if (!cJSON_IsString(q) || !cJSON_IsNumber(num)) { cJSON_Delete(j); continue; }
        char *prompt = lf_chat_prompt(NULL, q->valuestring);
        int32_t *ids, *gen = NULL;
        int np, ng = 0;
        if (lf_tokenize(tok, prompt, LF_TOK_BOS, &ids, &np)) die("tokenize");
        lf_session_reset(s);
        lf_generate_params gp;
        memset(&gp, 0, sizeof gp);
        gp.max_new_tokens = o.max_new;
        gp.stop_at_eos = 1;
        gp.sampling.greedy = 1;
        gp.sampling.temperature = 1;
        gp.sampling.top_p = 1;
        if (lf_generate(s, tok, ids, np, &gp, NULL, NULL, &gen, &ng)) die("generate");
        char *text = lf_detokenize(tok, gen, ng);
        long v = -1;
        int has = last_number(text, &v);
        int ok = has && v == (long)num->valuedouble;
        int c2 = 0, c1 = 0;
        char wb[256];
        const char *p = text;
        while (next_word(&p, wb, sizeof wb)) {
            if (in_set(&l2, wb)) c2++;
            else if (in_set(&l1, wb)) c1++;
        }
        double share = c1 + c2 ? (double)c2 / (c1 + c2) : 0.0;
        int il = share >= 0.5;
        n++;
        correct += ok;
        in_lang += il;
        strict += ok && il;
        share_sum += share;
        if (out) {
            fprintf(out, "{\"index\":%d,\"prompt\":", n - 1);
            json_escape(out, q->valuestring);
            fprintf(out, ",\"output\":");
            json_escape(out, text);
            fprintf(out, ",\"reference\":%ld,\"extracted\":", (long)num->valuedouble);
            if (has) fprintf(out, "%ld", v);
            else fprintf(out, "null");
            fprintf(out, ",\"correct\":%s,\"lang_share\":%.4f,\"in_lang\":%s}\n", ok ? "true" : "false", share,
                    il ? "true" : "false");
        }
        free(text);
        free(gen);
        free(ids);
        free(prompt);
        cJSON_Delete(j);
    }
    free(line);
    fclose(in);
    if (out) fclose(out);
    FILE *sf = fopen(o.summary, "w");
    if (!sf) { fprintf(stderr, "bench: cannot write %s\n", o.summary); return 1; }
    char sum[512];
    snprintf(sum, sizeof sum,
             "{\"n\":%d,\"correct\":%d,\"accuracy\":%.6f,\"lang_share_mean\":%.6f,\"in_lang\":%d,\"in_lang_rate\":%.6f,"
             "\"strict\":%d,\"strict_rate\":%.6f}\n",
             n, correct, n ? (double)correct / n : 0, n ? share_sum / n : 0, in_lang, n ? (double)in_lang / n : 0,
             strict, n ? (double)strict / n : 0);
    fputs(sum, sf);
    fclose(sf);
    fputs(sum, stdout);
    free_words(&l2);
    free_words(&l1);
    lf_gate_free(g);
    lf_session_free(s);
    lf_tokenizer_free(tok);
    lf_model_free(m);
    return 0;
}

/* ============================ hub ============================ */

/* LoRA-Hub's objective: the mean cross-entropy of the examples' answers
 * under static weights w, plus 0.05 * sum |w_i| (LoRA-Hub's L1 term). */
static double hub_obj(lf_model *m, const lf_dataset *d, const float *w, int k) {
    double loss;
    if (lf_eval_loss(m, NULL, 1.0f, w, d, &loss, NULL)) die("eval loss");
    double l1 = 0;
    for (int i = 0; i < k; i++) l1 += fabs(w[i]);
    return loss + 0.05 * l1;
}

static int cmd_hub(int argc, char **argv) {
    opts o;
    parse(argc, argv, &o);
    if (o.na != 2 || !o.data || !o.out) { fprintf(stderr, "bench hub: need -m, two -l, --data, -o\n"); return 2; }
    lf_model *m = load_model(&o);
    lf_dataset *d = lf_dataset_load(o.data, NULL, NULL, 4096);
    if (!d) die(o.data);
    /* coarse grid over [-0.5, 1.5]^2 (step 0.5), then two rounds of local
     * refinement (steps 0.25 and 0.125) around the best point */
    float best[2] = {0, 0};
    double bo = INFINITY;
    int evals = 0;
    for (int a = 0; a < 5; a++)
        for (int b = 0; b < 5; b++) {
            float w[2] = {-0.5f + 0.5f * a, -0.5f + 0.5f * b};
            double v = hub_obj(m, d, w, 2);
            evals++;
            if (v < bo) { bo = v; best[0] = w[0]; best[1] = w[1]; }
        }
    for (float step = 0.25f; step > 0.1f; step /= 2) {
        float c[2] = {best[0], best[1]};
        for (int a = -1; a <= 1; a++)
            for (int b = -1; b <= 1; b++) {
                if (!a && !b) continue;
                float w[2] = {c[0] + step * a, c[1] + step * b};
                if (w[0] < -0.5f || w[0] > 1.5f || w[1] < -0.5f || w[1] > 1.5f) continue;
                double v = hub_obj(m, d, w, 2);
                evals++;
                if (v < bo) { bo = v; best[0] = w[0]; best[1] = w[1]; }
            }
    }
    FILE *f = fopen(o.out, "w");
    if (!f) { fprintf(stderr, "bench: cannot write %s\n", o.out); return 1; }
    fprintf(f, "%g,%g\n", best[0], best[1]);
    fclose(f);
    fprintf(stderr, "bench hub: %d evaluations, best w = %g,%g (objective %.4f)\n", evals, best[0], best[1], bo);
    lf_dataset_free(d);
    lf_model_free(m);
    return 0;
}

/* ============================ table ============================ */

static const char *METHODS[][2] = {
    {"base", "Base model"},
    {"lang", "Language LoRA alone"},
    {"task", "Task LoRA alone"},
    {"avg", "Average fusion (0.5, 0.5)"},
    {"hub", "Task-level weights (LoRA-Hub search)"},
    {"layer", "Static weights per layer (control)"},
    {"gate1", "Gate over the task LoRA alone (control)"},
    {"flow", "LoRA-Flow (gate)"},
    {"task_l1", "Ceiling: task LoRA on the same problems in L1"},
};
#define NM (int)(sizeof METHODS / sizeof *METHODS)
static const char *METRICS[3][2] = {{"accuracy", "number right"}, {"in_lang_rate", "in L2"}, {"strict_rate", "strict"}};

static void mean_sd(const double *v, int n, double *mean, double *sd) {
    double s = 0, ss = 0;
    for (int i = 0; i < n; i++) s += v[i];
    *mean = n ? s / n : NAN;
    for (int i = 0; i < n; i++) ss += (v[i] - *mean) * (v[i] - *mean);
    *sd = n > 1 ? sqrt(ss / (n - 1)) : 0;
}

static int cmd_table(int argc, char **argv) {
    opts o;
    parse(argc, argv, &o);
    if (!o.outdir || o.n_rest < 1) { fprintf(stderr, "bench table: --out DIR SEED_DIR...\n"); return 2; }
    const int S = o.n_rest;
    double *val = calloc((size_t)NM * 4 * S, sizeof *val); /* [method][metric(3)+share][seed] */
    int *have = calloc(NM, sizeof *have), *ntest = calloc(NM, sizeof *ntest);
    char p[4096];
    for (int mi = 0; mi < NM; mi++) {
        have[mi] = 1;
        for (int si = 0; si < S; si++) {
            snprintf(p, sizeof p, "%s/scores/%s.json", o.rest[si], METHODS[mi][0]);
            FILE *f = fopen(p, "r");
            if (!f) { have[mi] = 0; break; }
            fclose(f);
            char *b = slurp(p);
            cJSON *j = cJSON_Parse(b);
            free(b);
            for (int k = 0; k < 3; k++) {
                const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, METRICS[k][0]);
                val[(mi * 4 + k) * S + si] = cJSON_IsNumber(x) ? 100.0 * x->valuedouble : NAN;
            }
            const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, "lang_share_mean");
            val[(mi * 4 + 3) * S + si] = cJSON_IsNumber(x) ? 100.0 * x->valuedouble : NAN;
            x = cJSON_GetObjectItemCaseSensitive(j, "n");
            ntest[mi] = cJSON_IsNumber(x) ? x->valueint : 0;
            cJSON_Delete(j);
        }
    }
    /* results.json */
    cJSON *root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "seeds", S);
    cJSON *seeds = cJSON_AddArrayToObject(root, "seed_dirs");
    for (int si = 0; si < S; si++) cJSON_AddItemToArray(seeds, cJSON_CreateString(o.rest[si]));
    cJSON *arr = cJSON_AddArrayToObject(root, "methods");
    static const char *jkeys[4] = {"accuracy", "in_lang", "strict", "lang_share"};
    for (int mi = 0; mi < NM; mi++) {
        if (!have[mi]) continue;
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "id", METHODS[mi][0]);
        cJSON_AddStringToObject(m, "name", METHODS[mi][1]);
        cJSON_AddNumberToObject(m, "n_test", ntest[mi]);
        for (int k = 0; k < 4; k++) {
            cJSON *e = cJSON_AddObjectToObject(m, jkeys[k]);
            cJSON *per = cJSON_AddArrayToObject(e, "per_seed");
            for (int si = 0; si < S; si++) cJSON_AddItemToArray(per, cJSON_CreateNumber(val[(mi * 4 + k) * S + si]));
            double mean, sd;
            mean_sd(&val[(mi * 4 + k) * S], S, &mean, &sd);
            cJSON_AddNumberToObject(e, "mean", mean);
            cJSON_AddNumberToObject(e, "spread", sd);
        }
        cJSON_AddItemToArray(arr, m);
    }
    char *js = cJSON_Print(root);
    snprintf(p, sizeof p, "%s/results.json", o.outdir);
    FILE *f = fopen(p, "w");
    if (!f) { fprintf(stderr, "bench: cannot write %s\n", p); return 1; }
    fprintf(f, "%s\n", js);
    fclose(f);
    free(js);
    cJSON_Delete(root);
    /* results.md, also printed */
    snprintf(p, sizeof p, "%s/results.md", o.outdir);
    f = fopen(p, "w");
    if (!f) { fprintf(stderr, "bench: cannot write %s\n", p); return 1; }
    for (int pass = 0; pass < 2; pass++) {
        FILE *t = pass ? stdout : f;
        fprintf(t, "| method | number right (%%) | in L2 (%%) | strict (%%) | L2 word share (%%) |\n");
        fprintf(t, "|---|---|---|---|---|\n");
        for (int mi = 0; mi < NM; mi++) {
            if (!have[mi]) continue;
            fprintf(t, "| %s |", METHODS[mi][1]);
            for (int k = 0; k < 4; k++) {
                double mean, sd;
                mean_sd(&val[(mi * 4 + k) * S], S, &mean, &sd);
                fprintf(t, " %.1f ± %.1f |", mean, sd);
            }
            fprintf(t, "\n");
        }
        fprintf(t, "\nHeld-out test: %d L2 word problems per seed (the ceiling row: %d L1 problems); "
                   "mean ± standard deviation over %d seed%s.\n", ntest[NM - 2], ntest[NM - 1], S, S > 1 ? "s" : "");
    }
    fclose(f);
    free(val);
    free(have);
    free(ntest);
    return 0;
}

/* ============================ trace ============================ */

/* Mean fusion weights of the trace, split by kind of token: L2 words,
 * numbers and symbols (digits, + - = . ,), other; printed as one sentence. */
static int cmd_trace(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "bench trace TRACE.csv L2_WORDS.txt\n"); return 2; }
    wordset l2 = load_words(argv[1]);
    FILE *f = fopen(argv[0], "r");
    if (!f) { fprintf(stderr, "bench: cannot open %s\n", argv[0]); return 1; }
    char *line = NULL;
    size_t cap = 0;
    double sum[3][2] = {{0}}; /* kind x adapter */
    int cnt[3] = {0};
    char n0[64] = "lora_0", n1[64] = "lora_1";
    int first = 1;
    while (getline(&line, &cap, f) > 0) {
        /* token,position,text,layer,w0,w1 (text may be quoted) */
        if (first) {
            first = 0;
            char *c = strrchr(line, ',');
            if (c) {
                *c = 0;
                char *b = strrchr(line, ',');
                if (b) {
                    snprintf(n0, sizeof n0, "%s", b + 1);
                    snprintf(n1, sizeof n1, "%.*s", (int)strcspn(c + 1, "\r\n"), c + 1);
                }
            }
            continue;
        }
        char *e1 = strrchr(line, ',');
        if (!e1) continue;
        *e1 = 0;
        char *e0 = strrchr(line, ',');
        if (!e0) continue;
        *e0 = 0;
        double w1 = atof(e1 + 1), w0 = atof(e0 + 1);
        char *lay = strrchr(line, ',');
        if (!lay) continue;
        *lay = 0;
        /* text: after the second comma */
        char *t = strchr(line, ',');
        t = t ? strchr(t + 1, ',') : NULL;
        if (!t) continue;
        t++;
        char w[128];
        int k = 0;
        for (char *q = t; *q && k < 127; q++)
            if (*q != '"' && *q != ' ') w[k++] = *q;
        w[k] = 0;
        int kind = in_set(&l2, w) ? 0 : (w[0] && (isdigit((unsigned char)w[0]) || strchr("+-=.,?", w[0]))) ? 1 : 2;
        sum[kind][0] += w0;
        sum[kind][1] += w1;
        cnt[kind]++;
    }
    free(line);
    fclose(f);
    for (int k = 0; k < 3; k++)
        if (cnt[k]) { sum[k][0] /= cnt[k]; sum[k][1] /= cnt[k]; }
    printf("Averaged over layers, the gate gives the %s LoRA a weight of %.2f (and the %s LoRA %.2f) on L2 words, "
           "against %.2f (%s %.2f) on numbers and arithmetic symbols: ",
           n0, sum[0][0], n1, sum[0][1], sum[1][0], n1, sum[1][1]);
    double d0 = sum[0][0] - sum[1][0], d1 = sum[1][1] - sum[0][1];
    if (d0 > 0.02 && d1 > 0.02)
        printf("the language LoRA leads on the words and the task LoRA on the arithmetic, token by token.\n");
    else if (fabs(d0) < 0.02 && fabs(d1) < 0.02)
        printf("in this example the weights barely change between words and numbers; they differ mostly by layer.\n");
    else
        printf("the weights move between words and numbers, but not simply as 'language on words, task on numbers'.\n");
    free_words(&l2);
    return 0;
}

/* ============================ check ============================ */

static int cmd_check(int argc, char **argv) {
    opts o;
    parse(argc, argv, &o);
    lf_tokenizer *tok = lf_tokenizer_load_dir(o.model);
    if (!tok || !o.data) { fprintf(stderr, "bench check: -m MODEL --data TEST.jsonl\n"); return 2; }
    FILE *in = fopen(o.data, "r");
    if (!in) return 1;
    char *line = NULL;
    size_t cap = 0;
    int bad = 0, n = 0;
    while (getline(&line, &cap, in) > 0 && n < 50) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *q = cJSON_GetObjectItemCaseSensitive(j, "question");
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "answer");
        for (int k = 0; k < 2; k++) {
            const char *t = k ? a->valuestring : q->valuestring;
            int32_t *ids;
            int ni;
            if (lf_tokenize(tok, t, 0, &ids, &ni)) die("tokenize");
            int words = 0;
            char wb[256];
            const char *p = t;
            while (next_word(&p, wb, sizeof wb)) words++;
            for (int i = 0; i < ni; i++) bad += ids[i] == 0;
            if (ni != words) { fprintf(stderr, "bench check: %d ids for %d words: %s\n", ni, words, t); bad++; }
            free(ids);
        }
        cJSON_Delete(j);
        n++;
    }
    free(line);
    fclose(in);
    lf_tokenizer_free(tok);
    printf("bench check: %d lines, %s\n", n, bad ? "MISMATCH" : "one id per word");
    return bad ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench score|hub|table|trace|check ...\n");
        return 2;
    }
    if (!strcmp(argv[1], "score")) return cmd_score(argc - 2, argv + 2);
    if (!strcmp(argv[1], "hub")) return cmd_hub(argc - 2, argv + 2);
    if (!strcmp(argv[1], "table")) return cmd_table(argc - 2, argv + 2);
    if (!strcmp(argv[1], "trace")) return cmd_trace(argc - 2, argv + 2);
    if (!strcmp(argv[1], "check")) return cmd_check(argc - 2, argv + 2);
    fprintf(stderr, "bench: unknown command %s\n", argv[1]);
    return 2;
}
