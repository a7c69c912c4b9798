/* data.c: training examples and JSONL data sets (the authors' formats and
 * a pre-tokenized form). */
#include "loraflow.h"
#include "../core/util.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LF_MAX_LINE (64u << 20)    /* one JSONL line */
#define LF_MAX_EXAMPLES (1 << 24)

struct lf_dataset {
    lf_example *ex;
    int n, cap;
};

void lf_example_free(lf_example *ex) {
    if (!ex) return;
    free(ex->ids);
    free(ex->labels);
    memset(ex, 0, sizeof *ex);
}

int lf_example_label_count(const lf_example *ex) {
    int n = 0;
    for (int t = 1; t < ex->n; t++) n += ex->labels[t] != -100;
    return n;
}

/* Copy s without leading and trailing whitespace (Python's str.strip). */
static char *strip_dup(const char *s) {
    while (*s && isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) n--;
    return lf_strndup(s, n);
}

int lf_example_build(const lf_tokenizer *tok, const char *system, const char *question, const char *answer,
                     int max_len, lf_example *ex) {
    memset(ex, 0, sizeof *ex);
    char *q = strip_dup(question), *a = strip_dup(answer);
    char *prompt = NULL, *resp = NULL;
    int32_t *pi = NULL, *ri = NULL;
    int np = 0, nr = 0, rc = -1;
    if (!q || !a) goto out;
    size_t plen = strlen(q) + (system ? strlen(system) : 0) + 128;
    prompt = lf_malloc(plen, "prompt");
    resp = lf_malloc(strlen(a) + 8, "response");
    if (!prompt || !resp) goto out;
    if (system) snprintf(prompt, plen, "<s>[INST] <<SYS>>\n%s\n<</SYS>>\n\n%s [/INST]%s", system, q, LF_STEP_BY_STEP);
    else snprintf(prompt, plen, "<s>[INST] %s [/INST]%s", q, LF_STEP_BY_STEP);
    sprintf(resp, "%s </s>", a);
    if (lf_tokenize(tok, prompt, LF_TOK_SPECIAL, &pi, &np) || lf_tokenize(tok, resp, LF_TOK_SPECIAL, &ri, &nr)) goto out;
    int n = np + nr;
    if (max_len > 0 && n > max_len) n = max_len; /* cut at the tail */
    ex->ids = lf_malloc((size_t)(n ? n : 1) * sizeof(int32_t), "example");
    ex->labels = lf_malloc((size_t)(n ? n : 1) * sizeof(int32_t), "example");
    if (!ex->ids || !ex->labels) { lf_example_free(ex); goto out; }
    for (int t = 0; t < n; t++) {
        ex->ids[t] = t < np ? pi[t] : ri[t - np];
        ex->labels[t] = t < np ? -100 : ex->ids[t];
    }
    ex->n = n;
    rc = 0;
out:
    free(q); free(a); free(prompt); free(resp); free(pi); free(ri);
    return rc;
}

/* ============================ JSONL ============================ */

static int dataset_push(lf_dataset *d, lf_example *ex) {
    if (d->n == d->cap) {
        int nc = d->cap ? d->cap * 2 : 256;
        lf_example *ne = lf_realloc(d->ex, (size_t)nc * sizeof *ne, "data set");
        if (!ne) return -1;
        d->ex = ne;
        d->cap = nc;
    }
    d->ex[d->n++] = *ex;
    return 0;
}

/* {"input_ids": [...], "labels": [...], "attention_mask": [...]?} */
static int read_pretokenized(const cJSON *j, lf_example *ex, int max_len) {
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(j, "input_ids");
    const cJSON *lab = cJSON_GetObjectItemCaseSensitive(j, "labels");
    const cJSON *mask = cJSON_GetObjectItemCaseSensitive(j, "attention_mask");
    if (!cJSON_IsArray(ids) || (lab && !cJSON_IsArray(lab)) || (mask && !cJSON_IsArray(mask))) {
        lf_set_error("'input_ids', 'labels' and 'attention_mask' must be arrays");
        return -1;
    }
    const int n = cJSON_GetArraySize(ids);
    if ((lab && cJSON_GetArraySize(lab) != n) || (mask && cJSON_GetArraySize(mask) != n)) {
        lf_set_error("'input_ids' has %d entries but 'labels' or 'attention_mask' another count", n);
        return -1;
    }
    ex->ids = lf_malloc((size_t)(n ? n : 1) * sizeof(int32_t), "example");
    ex->labels = lf_malloc((size_t)(n ? n : 1) * sizeof(int32_t), "example");
    if (!ex->ids || !ex->labels) return -1;
    int m = 0;
    for (int t = 0; t < n; t++) {
        const cJSON *it = cJSON_GetArrayItem(ids, t);
        const cJSON *lt = lab ? cJSON_GetArrayItem(lab, t) : it;
        const cJSON *mt = mask ? cJSON_GetArrayItem(mask, t) : NULL;
        if (!cJSON_IsNumber(it) || !cJSON_IsNumber(lt) || (mt && !cJSON_IsNumber(mt))) {
            lf_set_error("entry %d is not a number", t);
            return -1;
        }
        double id = it->valuedouble, l = lt->valuedouble;
        /* range first: converting an out-of-range double to int32 is undefined */
        if (!(id >= 0 && id <= INT32_MAX) || id != floor(id) ||
            !((l >= 0 && l <= INT32_MAX) || l == -100) || l != floor(l)) {
            lf_set_error("entry %d: ids must be non-negative integers and labels integers or -100", t);
            return -1;
        }
        if (mt && mt->valuedouble == 0) continue; /* padding */
        ex->ids[m] = (int32_t)id;
        ex->labels[m++] = (int32_t)l;
    }
    ex->n = max_len > 0 && m > max_len ? max_len : m;
    return 0;
}

/* {"text": T}: BOS + T + EOS, every token a label. */
static int read_text(const lf_tokenizer *tok, const char *text, lf_example *ex, int max_len) {
    int32_t *ids;
    int n;
    if (lf_tokenize(tok, text, LF_TOK_BOS | LF_TOK_EOS, &ids, &n)) return -1;
    if (max_len > 0 && n > max_len) n = max_len;
    ex->ids = ids;
    ex->labels = lf_malloc((size_t)(n ? n : 1) * sizeof(int32_t), "example");
    if (!ex->labels) return -1;
    memcpy(ex->labels, ids, (size_t)n * sizeof(int32_t));
    ex->n = n;
    return 0;
}

static const char *str_field(const cJSON *j, const char *name) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, name);
    return cJSON_IsString(f) ? f->valuestring : NULL;
}

static int read_line(const cJSON *j, const lf_tokenizer *tok, const char *system, int max_len, lf_example *ex) {
    if (!cJSON_IsObject(j)) {
        lf_set_error("not a JSON object");
        return -1;
    }
    if (cJSON_GetObjectItemCaseSensitive(j, "input_ids")) return read_pretokenized(j, ex, max_len);
    if (!tok) {
        lf_set_error("text examples need a tokenizer");
        return -1;
    }
    /* a line may carry its own system prompt ("system": null for none) */
    const cJSON *sy = cJSON_GetObjectItemCaseSensitive(j, "system");
    if (cJSON_IsString(sy)) system = sy->valuestring;
    else if (cJSON_IsNull(sy)) system = NULL;
    else if (sy) {
        lf_set_error("'system' must be a string or null");
        return -1;
    }
    static const char *pairs[][2] = {{"query", "response"}, {"question", "answer"}, {"text", "code"}};
    for (size_t p = 0; p < sizeof pairs / sizeof pairs[0]; p++) {
        const char *q = str_field(j, pairs[p][0]), *a = str_field(j, pairs[p][1]);
        if (q && a) return lf_example_build(tok, system, q, a, max_len, ex);
    }
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(j, "data");
    if (data) {
        if (!cJSON_IsArray(data) || cJSON_GetArraySize(data) != 2 || !cJSON_IsString(cJSON_GetArrayItem(data, 0)) ||
            !cJSON_IsString(cJSON_GetArrayItem(data, 1))) {
            lf_set_error("'data' must be a list of two strings [question, answer]");
            return -1;
        }
        return lf_example_build(tok, system, cJSON_GetArrayItem(data, 0)->valuestring,
                                cJSON_GetArrayItem(data, 1)->valuestring, max_len, ex);
    }
    const char *text = str_field(j, "text");
    if (text) return read_text(tok, text, ex, max_len);
    lf_set_error("no known fields (expected query/response, data, question/answer, text or input_ids/labels)");
    return -1;
}

lf_dataset *lf_dataset_load(const char *path, const lf_tokenizer *tok, const char *system, int max_len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        lf_set_error("%s: cannot open", path);
        return NULL;
    }
    lf_dataset *d = lf_calloc(1, sizeof *d, "data set");
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    if (!d) goto fail;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if ((size_t)len > LF_MAX_LINE) {
            lf_set_error("%s:%ld: line longer than %u bytes", path, lineno, LF_MAX_LINE);
            goto fail;
        }
        const char *p = line;
        while (*p && isspace((unsigned char)*p)) p++;
        if (!*p) continue; /* blank line */
        if (d->n >= LF_MAX_EXAMPLES) {
            lf_set_error("%s: more than %d examples", path, LF_MAX_EXAMPLES);
            goto fail;
        }
        cJSON *j = cJSON_ParseWithLength(line, (size_t)len);
        if (!j) {
            lf_set_error("%s:%ld: not valid JSON", path, lineno);
            goto fail;
        }
        lf_example ex = {0};
        int rc = read_line(j, tok, system, max_len, &ex);
        cJSON_Delete(j);
        if (rc == 0 && ex.n < 2) {
            lf_set_error("fewer than 2 tokens");
            rc = -1;
        }
        if (rc != 0 || dataset_push(d, &ex) != 0) {
            lf_example_free(&ex);
            lf_prefix_error("%s:%ld: ", path, lineno);
            goto fail;
        }
    }
    if (ferror(f)) {
        lf_set_error("%s: read error", path);
        goto fail;
    }
    if (d->n == 0) {
        lf_set_error("%s: no examples", path);
        goto fail;
    }
    free(line);
    fclose(f);
    return d;
fail:
    free(line);
    fclose(f);
    lf_dataset_free(d);
    return NULL;
}

int lf_dataset_size(const lf_dataset *d) { return d->n; }
const lf_example *lf_dataset_get(const lf_dataset *d, int i) { return i >= 0 && i < d->n ? &d->ex[i] : NULL; }

void lf_dataset_free(lf_dataset *d) {
    if (!d) return;
    for (int i = 0; i < d->n; i++) lf_example_free(&d->ex[i]);
    free(d->ex);
    free(d);
}

lf_dataset *lf_dataset_head(const lf_dataset *d, int n) {
    if (n > d->n) n = d->n;
    lf_dataset *h = lf_calloc(1, sizeof *h, "data set");
    if (!h) return NULL;
    for (int i = 0; i < n; i++) {
        const lf_example *src = &d->ex[i];
        lf_example ex = {0};
        ex.ids = lf_malloc((size_t)src->n * sizeof(int32_t), "example");
        ex.labels = lf_malloc((size_t)src->n * sizeof(int32_t), "example");
        if (!ex.ids || !ex.labels || dataset_push(h, &ex) != 0) {
            lf_example_free(&ex);
            lf_dataset_free(h);
            return NULL;
        }
        memcpy(ex.ids, src->ids, (size_t)src->n * sizeof(int32_t));
        memcpy(ex.labels, src->labels, (size_t)src->n * sizeof(int32_t));
        h->ex[h->n - 1].n = src->n;
    }
    return h;
}

char *lf_system_prompt_from_file(const char *path, const char *key) {
    size_t len;
    char *txt = lf_read_file(path, &len, 16u << 20);
    if (!txt) return NULL;
    cJSON *j = cJSON_Parse(txt);
    free(txt);
    const cJSON *v = cJSON_IsObject(j) ? cJSON_GetObjectItemCaseSensitive(j, key) : NULL;
    char *out = NULL;
    if (!cJSON_IsObject(j)) lf_set_error("%s: not a JSON object", path);
    else if (!cJSON_IsString(v)) lf_set_error("%s: no string under key '%s'", path, key);
    else out = lf_strdup(v->valuestring);
    cJSON_Delete(j);
    return out;
}
