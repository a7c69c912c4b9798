/* hf_json.c: read a Hugging Face tokenizer.json of the Llama (SentencePiece
 * BPE) kind.
 *
 * Used: model.{type, vocab, merges, unk_token, byte_fallback}, added_tokens
 * (which ids are special), and the normalizer / pre_tokenizer, only to learn
 * the two SentencePiece options they encode: the dummy "▁" prefix and spaces
 * as "▁".  Anything else there (Unicode normalization, splitting into words,
 * byte-level BPE) would change the ids, so it is refused with an error
 * instead of being ignored. */
#include "tokenizer_internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/util.h"

#define SPACE_MARK "\xE2\x96\x81" /* U+2581 "▁" */

static const char *json_str(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int json_is_set(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return v && !cJSON_IsNull(v);
}

/* A JSON number that is an integer in [0, LF_TOK_MAX_VOCAB), or -1. */
static int32_t json_id(const cJSON *v) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0 && d < LF_TOK_MAX_VOCAB) || d != floor(d)) return -1;
    return (int32_t)d;
}

/* ---- pre-processing options ---- */

static int read_normalizer(lf_tokenizer *t, const cJSON *n, const char *path) {
    if (!n || cJSON_IsNull(n)) return 0;
    const char *type = json_str(n, "type");
    if (type && strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers"), *e;
        if (!cJSON_IsArray(list)) {
            lf_set_error("%s: normalizer Sequence has no \"normalizers\" list", path);
            return -1;
        }
        cJSON_ArrayForEach(e, list)
            if (read_normalizer(t, e, path) != 0) return -1;
        return 0;
    }
    if (type && strcmp(type, "Prepend") == 0) {
        const char *p = json_str(n, "prepend");
        if (p && strcmp(p, SPACE_MARK) == 0) {
            t->add_dummy_prefix = 1;
            return 0;
        }
    } else if (type && strcmp(type, "Replace") == 0) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
        const char *from = json_str(pat, "String"), *to = json_str(n, "content");
        if (from && to && strcmp(from, " ") == 0 && strcmp(to, SPACE_MARK) == 0) {
            t->escape_spaces = 1;
            return 0;
        }
    }
    lf_set_error("%s: normalizer \"%s\" is not supported (only Prepend \"▁\" and Replace "
                 "\" \" with \"▁\", as in Llama's tokenizer.json)", path, type ? type : "?");
    return -1;
}

static int read_pre_tokenizer(lf_tokenizer *t, const cJSON *p, const char *path) {
    if (!p || cJSON_IsNull(p)) return 0;
    const char *type = json_str(p, "type");
    if (!type || strcmp(type, "Metaspace") != 0) {
        lf_set_error("%s: pre_tokenizer \"%s\" is not supported (only none or Metaspace)", path,
                     type ? type : "?");
        return -1;
    }
    const char *rep = json_str(p, "replacement");
    const cJSON *split = cJSON_GetObjectItemCaseSensitive(p, "split");
    if ((rep && strcmp(rep, SPACE_MARK) != 0) || !cJSON_IsFalse(split)) {
        /* splitting the text into words before BPE changes the ids */
        lf_set_error("%s: Metaspace pre_tokenizer must have replacement \"▁\" and split false",
                     path);
        return -1;
    }
    t->escape_spaces = 1;
    const char *scheme = json_str(p, "prepend_scheme");
    const cJSON *add = cJSON_GetObjectItemCaseSensitive(p, "add_prefix_space");
    if (scheme)
        t->add_dummy_prefix = strcmp(scheme, "never") != 0;
    else
        t->add_dummy_prefix = !cJSON_IsFalse(add);
    return 0;
}

/* Refuse model kinds this encoder would get wrong (checked first, so the
 * error names the real problem). */
static int check_model_kind(const cJSON *model, const char *path) {
    const char *type = json_str(model, "type");
    if (json_is_set(model, "type") && (!type || strcmp(type, "BPE") != 0)) {
        lf_set_error("%s: model.type is \"%s\", only \"BPE\" is supported", path,
                     type ? type : "?");
        return -1;
    }
    static const char *const unsupported[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const char *s = json_str(model, unsupported[i]);
        if (json_is_set(model, unsupported[i]) && !(s && s[0] == 0)) {
            lf_set_error("%s: model.%s is not supported", path, unsupported[i]);
            return -1;
        }
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges"))) {
        lf_set_error("%s: model.ignore_merges is not supported", path);
        return -1;
    }
    return 0;
}

/* ---- vocabulary ---- */

/* Vocabulary size: one more than the largest id in model.vocab and
 * added_tokens (every id below it must then be defined). */
static int vocab_size(const cJSON *vocab, const cJSON *added, const char *path) {
    int32_t max_id = -1;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        int32_t id = json_id(e);
        if (id < 0) {
            lf_set_error("%s: model.vocab[\"%.64s\"] is not a valid id (an integer 0..%d; "
                         "LF_TOK_MAX_VOCAB in src/tokenizer/tokenizer_internal.h)", path,
                         e->string ? e->string : "", LF_TOK_MAX_VOCAB - 1);
            return -1;
        }
        if (id > max_id) max_id = id;
    }
    cJSON_ArrayForEach(e, added) {
        int32_t id = json_id(cJSON_GetObjectItemCaseSensitive(e, "id"));
        if (id < 0) {
            lf_set_error("%s: an added_tokens entry has no valid \"id\" (an integer 0..%d; "
                         "LF_TOK_MAX_VOCAB in src/tokenizer/tokenizer_internal.h)", path, LF_TOK_MAX_VOCAB - 1);
            return -1;
        }
        if (id > max_id) max_id = id;
    }
    if (max_id < 0) lf_set_error("%s: model.vocab is empty", path);
    return max_id + 1;
}

static int read_vocab(lf_tokenizer *t, const cJSON *vocab, const char *path) {
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        const char *s = e->string ? e->string : "";
        size_t len = strlen(s);
        int type = lf_tok_byte_value(s, len) >= 0 ? LF_PIECE_BYTE : LF_PIECE_NORMAL;
        if (lf_tok_set_piece(t, json_id(e), s, len, 0.0f, type, path) != 0) return -1;
    }
    return 0;
}

/* added_tokens mark ids as special (control), or add pieces outside model.vocab. */
static int read_added_tokens(lf_tokenizer *t, const cJSON *added, const char *path) {
    const cJSON *e;
    cJSON_ArrayForEach(e, added) {
        int32_t id = json_id(cJSON_GetObjectItemCaseSensitive(e, "id"));
        const char *content = json_str(e, "content");
        int special = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special"));
        if (!content) {
            lf_set_error("%s: added token %d has no \"content\"", path, (int)id);
            return -1;
        }
        if (t->piece[id]) {
            if (strcmp(t->piece[id], content) != 0) {
                lf_set_error("%s: added token %d is \"%.64s\" but model.vocab has \"%.64s\"", path,
                             (int)id, content, t->piece[id]);
                return -1;
            }
            if (special) t->type[id] = LF_PIECE_CONTROL;
        } else if (lf_tok_set_piece(t, id, content, strlen(content), 0.0f,
                                    special ? LF_PIECE_CONTROL : LF_PIECE_USER, path) != 0) {
            return -1;
        }
    }
    return 0;
}

/* The unknown piece named by model.unk_token (before the piece hash exists). */
static int mark_unk(lf_tokenizer *t, const cJSON *model, const char *path) {
    const char *unk = json_str(model, "unk_token");
    if (!unk) return 0;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        if (t->piece[id] && strcmp(t->piece[id], unk) == 0) {
            t->type[id] = LF_PIECE_UNKNOWN;
            return 0;
        }
    }
    lf_set_error("%s: model.unk_token \"%.64s\" is not in the vocabulary", path, unk);
    return -1;
}

/* ---- merges ---- */

/* The two sides of merge i: "left right" (one space) or ["left", "right"]. */
static int merge_sides(const cJSON *e, int i, const char **a, size_t *alen, const char **b,
                       size_t *blen, const char *path) {
    if (cJSON_IsString(e)) {
        const char *s = e->valuestring, *sp = strchr(s, ' ');
        if (sp && sp != s && sp[1] && !strchr(sp + 1, ' ')) {
            *a = s;
            *alen = (size_t)(sp - s);
            *b = sp + 1;
            *blen = strlen(sp + 1);
            return 0;
        }
    } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2) {
        const cJSON *l = cJSON_GetArrayItem(e, 0), *r = cJSON_GetArrayItem(e, 1);
        if (cJSON_IsString(l) && cJSON_IsString(r)) {
            *a = l->valuestring;
            *alen = strlen(*a);
            *b = r->valuestring;
            *blen = strlen(*b);
            return 0;
        }
    }
    lf_set_error("%s: model.merges[%d] is not \"left right\" or [\"left\", \"right\"]", path, i);
    return -1;
}

/* Returns 0, or -1 once *probes passes budget (colliding pairs made to
 * turn loading quadratic). */
static int insert_merge(lf_tokenizer *t, const lf_merge *m, uint64_t *probes, uint64_t budget) {
    uint32_t i = lf_merge_hash(m->left, m->right) & t->merge_mask;
    for (; t->merge_slot[i].left >= 0; i = (i + 1) & t->merge_mask) {
        if (t->merge_slot[i].left == m->left && t->merge_slot[i].right == m->right)
            return 0; /* a repeated merge keeps its first (highest) rank */
        if (++*probes > budget) return -1;
    }
    t->merge_slot[i] = *m;
    return 0;
}

static int read_merges(lf_tokenizer *t, const cJSON *merges, const char *path) {
    if (!cJSON_IsArray(merges)) {
        lf_set_error("%s: model.merges is missing or not a list", path);
        return -1;
    }
    int n = cJSON_GetArraySize(merges);
    if (n > LF_TOK_MAX_MERGES) {
        lf_set_error("%s: %d merges exceed the limit of %d (LF_TOK_MAX_MERGES in "
                     "src/tokenizer/tokenizer_internal.h)", path, n, LF_TOK_MAX_MERGES);
        return -1;
    }
    uint32_t cap = 16;
    while (cap < 2u * (uint32_t)n) cap *= 2;
    t->merge_slot = lf_malloc((size_t)cap * sizeof *t->merge_slot, "tokenizer merges");
    if (!t->merge_slot) return -1;
    memset(t->merge_slot, 0xff, (size_t)cap * sizeof *t->merge_slot); /* left = -1: empty */
    t->merge_mask = cap - 1;
    t->use_merges = 1;
    const cJSON *e;
    int i = 0;
    uint64_t probes = 0, budget = LF_TOK_PROBE_BUDGET((uint64_t)n);
    cJSON_ArrayForEach(e, merges) {
        const char *a, *b;
        size_t alen, blen;
        if (merge_sides(e, i, &a, &alen, &b, &blen, path) != 0) return -1;
        lf_merge m = {.left = lf_tok_find2(t, a, alen, "", 0),
                      .right = lf_tok_find2(t, b, blen, "", 0),
                      .result = lf_tok_find2(t, a, alen, b, blen), .rank = i};
        if (m.left < 0 || m.right < 0 || m.result < 0) {
            const char *which = m.left < 0 ? "its left side" : m.right < 0 ? "its right side"
                                                                           : "the merged piece";
            lf_set_error("%s: model.merges[%d] (\"%.*s\" + \"%.*s\"): %s is not in the "
                         "vocabulary", path, i, (int)(alen > 64 ? 64 : alen), a,
                         (int)(blen > 64 ? 64 : blen), b, which);
            return -1;
        }
        if (insert_merge(t, &m, &probes, budget) != 0) {
            lf_set_error("%s: model.merges collide in the merge hash table far beyond chance (%llu probes "
                         "for %d merges; LF_TOK_PROBE_BUDGET): a file made to slow loraflow down?", path,
                         (unsigned long long)probes, n);
            return -1;
        }
        i++;
    }
    return 0;
}

/* ---- tokenizer.json ---- */

static lf_tokenizer *build(const cJSON *root, const char *path) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) {
        lf_set_error("%s: no \"model\" object (not a tokenizer.json?)", path);
        return NULL;
    }
    if (check_model_kind(model, path) != 0) return NULL;
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsObject(vocab)) {
        lf_set_error("%s: model.vocab is missing or not an object", path);
        return NULL;
    }
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (added && !cJSON_IsNull(added) && !cJSON_IsArray(added)) {
        lf_set_error("%s: added_tokens is not a list", path);
        return NULL;
    }
    int n = vocab_size(vocab, added, path);
    if (n <= 0) return NULL;
    lf_tokenizer *t = lf_tok_alloc(n, path);
    if (!t) return NULL;
    /* the options come only from what the file says */
    t->add_dummy_prefix = t->escape_spaces = 0;
    t->byte_fallback = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
    if (read_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), path) != 0 ||
        read_pre_tokenizer(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), path) != 0 ||
        read_vocab(t, vocab, path) != 0 || read_added_tokens(t, added, path) != 0 ||
        mark_unk(t, model, path) != 0 || lf_tok_finish(t, path) != 0 ||
        read_merges(t, cJSON_GetObjectItemCaseSensitive(model, "merges"), path) != 0) {
        lf_tokenizer_free(t);
        return NULL;
    }
    return t;
}

lf_tokenizer *lf_tok_read_hf_json(const char *text, size_t len, const char *path,
                                  int *syntax_error) {
    const char *end = NULL;
    *syntax_error = 0;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        *syntax_error = 1;
        lf_json_parse_error(path, "invalid JSON", text, len, end);
        return NULL;
    }
    lf_tokenizer *t = NULL;
    if (!cJSON_IsObject(root))
        lf_set_error("%s: the top level is not a JSON object", path);
    else
        t = build(root, path);
    cJSON_Delete(root);
    return t;
}
