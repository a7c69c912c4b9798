/* tokenizer.c: the Llama SentencePiece BPE tokenizer.
 *
 * Encoding (what SentencePiece and the Hugging Face tokenizer both do for
 * Llama, see shared/tokenizers/llama2/testvectors/README.md):
 *   1. spaces become "▁" (U+2581) and one "▁" is prepended to non-empty text;
 *   2. the text is split into characters; a character that is not a piece
 *      becomes its UTF-8 bytes as "<0xXX>" pieces;
 *   3. the adjacent pair with the best merge priority is merged, repeatedly
 *      (leftmost pair on ties);
 *   4. pieces map to ids.
 * Step 3 keeps the symbols in a doubly linked list and the candidate pairs in
 * a binary heap, so a text of n characters costs O(n log n): a merge only
 * creates the two new pairs around it, and stale heap entries are skipped
 * when popped instead of being searched for and removed. */
#include "tokenizer_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/util.h"

/* ------------------------------------------------------------------ */
/* building the vocabulary                                             */

static uint32_t hash_bytes(uint32_t h, const char *s, size_t n) {
    /* FNV-1a: simple, and streaming, so a+b hashes without concatenating */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 16777619u;
    }
    return h;
}
#define HASH_SEED 2166136261u

lf_tokenizer *lf_tok_alloc(int n, const char *path) {
    if (n <= 0 || n > LF_TOK_MAX_VOCAB) {
        lf_set_error("%s: vocabulary size %d is outside 1..%d (LF_TOK_MAX_VOCAB in "
                     "src/tokenizer/tokenizer_internal.h)", path, n, LF_TOK_MAX_VOCAB);
        return NULL;
    }
    lf_tokenizer *t = lf_calloc(1, sizeof *t, "tokenizer");
    if (!t) return NULL;
    t->n_vocab = n;
    t->piece = lf_calloc((size_t)n, sizeof *t->piece, "tokenizer pieces");
    t->piece_len = lf_calloc((size_t)n, sizeof *t->piece_len, "tokenizer piece lengths");
    t->score = lf_calloc((size_t)n, sizeof *t->score, "tokenizer scores");
    t->type = lf_calloc((size_t)n, sizeof *t->type, "tokenizer piece types");
    if (!t->piece || !t->piece_len || !t->score || !t->type) {
        lf_prefix_error("%s: ", path);
        lf_tokenizer_free(t);
        return NULL;
    }
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    t->unk_id = t->bos_id = t->eos_id = -1;
    t->add_dummy_prefix = 1;
    t->escape_spaces = 1;
    return t;
}

int lf_tok_set_piece(lf_tokenizer *t, int32_t id, const char *s, size_t len, float score,
                     int type, const char *path) {
    if (id < 0 || id >= t->n_vocab) {
        lf_set_error("%s: piece id %d is outside 0..%d", path, (int)id, t->n_vocab - 1);
        return -1;
    }
    if (t->piece[id]) {
        lf_set_error("%s: id %d is given twice (\"%.64s\" and \"%.64s\")", path, (int)id,
                     t->piece[id], s);
        return -1;
    }
    if (len == 0) {
        lf_set_error("%s: piece %d is empty", path, (int)id);
        return -1;
    }
    if (len > LF_TOK_MAX_PIECE) {
        lf_set_error("%s: piece %d is %zu bytes long, above the limit of %d (LF_TOK_MAX_PIECE in "
                     "src/tokenizer/tokenizer_internal.h)", path, (int)id, len, LF_TOK_MAX_PIECE);
        return -1;
    }
    if (memchr(s, 0, len)) {
        lf_set_error("%s: piece %d contains a NUL byte", path, (int)id);
        return -1;
    }
    if (type < LF_PIECE_NORMAL || type > LF_PIECE_BYTE) {
        lf_set_error("%s: piece %d has unknown type %d", path, (int)id, type);
        return -1;
    }
    t->piece[id] = lf_strndup(s, len);
    if (!t->piece[id]) return -1;
    t->piece_len[id] = (uint32_t)len;
    t->score[id] = score;
    t->type[id] = (uint8_t)type;
    return 0;
}

int lf_tok_byte_value(const char *s, size_t len) {
    /* exactly "<0xHH>" with upper- or lower-case hex digits */
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0'
              : c >= 'A' && c <= 'F' ? c - 'A' + 10
              : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

int32_t lf_tok_find2(const lf_tokenizer *t, const char *a, size_t alen, const char *b,
                     size_t blen) {
    if (!t->piece_slot) return -1;
    uint32_t h = hash_bytes(hash_bytes(HASH_SEED, a, alen), b, blen);
    for (uint32_t i = h & t->piece_mask;; i = (i + 1) & t->piece_mask) {
        int32_t id = t->piece_slot[i];
        if (id < 0) return -1;
        if (t->piece_len[id] == alen + blen && memcmp(t->piece[id], a, alen) == 0 &&
            (blen == 0 || memcmp(t->piece[id] + alen, b, blen) == 0))
            return id;
    }
}

static int32_t find_piece(const lf_tokenizer *t, const char *s) {
    return lf_tok_find2(t, s, strlen(s), "", 0);
}

/* Fill the piece hash; a repeated piece is an error (the encoder could not
 * tell which id to give it). */
static int build_piece_hash(lf_tokenizer *t, const char *path) {
    uint32_t cap = 16;
    while (cap < 2u * (uint32_t)t->n_vocab) cap *= 2;
    t->piece_slot = lf_malloc((size_t)cap * sizeof *t->piece_slot, "tokenizer piece hash");
    if (!t->piece_slot) return -1;
    memset(t->piece_slot, 0xff, (size_t)cap * sizeof *t->piece_slot); /* all -1 */
    t->piece_mask = cap - 1;
    /* Linear probing costs ~1.5 probes per piece at this load; pieces chosen
     * to collide could make building the table quadratic (hours for a large
     * vocabulary), so the probes have a budget far above chance. */
    uint64_t probes = 0, budget = LF_TOK_PROBE_BUDGET((uint64_t)t->n_vocab);
    for (int32_t id = 0; id < t->n_vocab; id++) {
        uint32_t h = hash_bytes(HASH_SEED, t->piece[id], t->piece_len[id]);
        uint32_t i = h & t->piece_mask;
        for (; t->piece_slot[i] >= 0; i = (i + 1) & t->piece_mask) {
            if (++probes > budget) {
                lf_set_error("%s: the pieces collide in the piece hash table far beyond chance (%llu probes "
                             "for %d pieces; LF_TOK_PROBE_BUDGET): a file made to slow loraflow down?", path,
                             (unsigned long long)probes, t->n_vocab);
                return -1;
            }
            int32_t o = t->piece_slot[i];
            if (t->piece_len[o] == t->piece_len[id] &&
                memcmp(t->piece[o], t->piece[id], t->piece_len[id]) == 0) {
                lf_set_error("%s: piece \"%.64s\" appears twice (ids %d and %d)", path,
                             t->piece[id], (int)o, (int)id);
                return -1;
            }
        }
        t->piece_slot[i] = id;
    }
    return 0;
}

/* Byte pieces, <unk>, <s> and </s>. */
static int find_special_ids(lf_tokenizer *t, const char *path) {
    for (int32_t id = 0; id < t->n_vocab; id++) {
        if (t->type[id] == LF_PIECE_BYTE) {
            int b = lf_tok_byte_value(t->piece[id], t->piece_len[id]);
            if (b < 0) {
                lf_set_error("%s: piece %d (\"%.64s\") has type BYTE but is not <0xXX>", path,
                             (int)id, t->piece[id]);
                return -1;
            }
            if (t->byte_id[b] >= 0) {
                lf_set_error("%s: byte piece <0x%02X> appears twice (ids %d and %d)", path, b,
                             (int)t->byte_id[b], (int)id);
                return -1;
            }
            t->byte_id[b] = id;
        } else if (t->type[id] == LF_PIECE_UNKNOWN) {
            if (t->unk_id >= 0) {
                lf_set_error("%s: two unknown pieces (ids %d and %d)", path, (int)t->unk_id,
                             (int)id);
                return -1;
            }
            t->unk_id = id;
        }
    }
    t->bos_id = find_piece(t, "<s>");
    t->eos_id = find_piece(t, "</s>");
    if (t->bos_id < 0 || t->eos_id < 0) {
        lf_set_error("%s: the vocabulary has no %s piece", path, t->bos_id < 0 ? "<s>" : "</s>");
        return -1;
    }
    if (t->byte_fallback) {
        for (int b = 0; b < 256; b++) {
            if (t->byte_id[b] < 0) {
                lf_set_error("%s: byte_fallback is on but the byte piece <0x%02X> is missing",
                             path, b);
                return -1;
            }
        }
    } else if (t->unk_id < 0) {
        lf_set_error("%s: no <unk> piece and no byte fallback: unknown characters could not "
                     "be encoded", path);
        return -1;
    }
    return 0;
}

int lf_tok_finish(lf_tokenizer *t, const char *path) {
    for (int32_t id = 0; id < t->n_vocab; id++) {
        if (!t->piece[id]) {
            lf_set_error("%s: the vocabulary has no piece with id %d (ids must run 0..%d "
                         "without gaps)", path, (int)id, t->n_vocab - 1);
            return -1;
        }
    }
    if (build_piece_hash(t, path) != 0) return -1;
    return find_special_ids(t, path);
}

/* ------------------------------------------------------------------ */
/* loading                                                             */

void lf_tokenizer_free(lf_tokenizer *t) {
    if (!t) return;
    if (t->piece)
        for (int i = 0; i < t->n_vocab; i++) free(t->piece[i]);
    free(t->piece);
    free(t->piece_len);
    free(t->score);
    free(t->type);
    free(t->piece_slot);
    free(t->merge_slot);
    free(t);
}

/* tokenizer.json is text that starts with '{' (or '[' for a wrong one, so it
 * gets a JSON error); tokenizer.model is a protobuf, whose first byte is 0x0A
 * (field 1, length-delimited). */
static int looks_like_json(const char *s, size_t len) {
    size_t i = 0;
    if (len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) i = 3; /* UTF-8 BOM */
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
    return i < len && (s[i] == '{' || s[i] == '[');
}

lf_tokenizer *lf_tokenizer_load(const char *path) {
    if (!path) {
        lf_set_error("lf_tokenizer_load: path is NULL");
        return NULL;
    }
    size_t len = 0;
    char *data = lf_read_file_limit(path, &len, LF_TOK_MAX_FILE,
                                    "LF_TOK_MAX_FILE in src/tokenizer/tokenizer_internal.h");
    if (!data) return NULL;
    lf_tokenizer *t = NULL;
    if (len == 0) {
        lf_set_error("%s: empty file (expected tokenizer.model or tokenizer.json)", path);
    } else if (looks_like_json(data, len)) {
        int syntax_error = 0;
        t = lf_tok_read_hf_json(data, len, path, &syntax_error);
        /* "\n{" can also open a protobuf (a first piece of 123 bytes) */
        if (!t && syntax_error && data[0] == 0x0A) {
            char json_err[LF_ERRMSG_MAX];
            snprintf(json_err, sizeof json_err, "%s", lf_last_error());
            t = lf_tok_read_sp_model((const uint8_t *)data, len, path);
            if (!t) lf_set_error("%s", json_err);
        }
    } else {
        t = lf_tok_read_sp_model((const uint8_t *)data, len, path);
    }
    free(data);
    return t;
}

lf_tokenizer *lf_tokenizer_load_dir(const char *dir) {
    if (!dir) {
        lf_set_error("lf_tokenizer_load_dir: dir is NULL");
        return NULL;
    }
    static const char *const names[] = {"tokenizer.model", "tokenizer.json"};
    for (int i = 0; i < 2; i++) {
        char *p = lf_path_join(dir, names[i]);
        if (!p) return NULL;
        if (lf_file_exists(p)) {
            lf_tokenizer *t = lf_tokenizer_load(p);
            free(p);
            return t;
        }
        free(p);
    }
    lf_set_error("%s: no tokenizer.model or tokenizer.json in this folder", dir);
    return NULL;
}

int lf_tokenizer_vocab_size(const lf_tokenizer *t) { return t ? t->n_vocab : 0; }

const char *lf_tokenizer_piece(const lf_tokenizer *t, int32_t id) {
    if (!t || id < 0 || id >= t->n_vocab) return NULL;
    return t->piece[id];
}

/* ------------------------------------------------------------------ */
/* encoding                                                            */

typedef struct {
    int32_t id;         /* current piece; -1 once merged into its left neighbour */
    int32_t prev, next; /* neighbours in the list, -1 at the ends */
    uint8_t can_merge;  /* 0 for byte-fallback and <unk> symbols */
} symbol;

/* A candidate merge of symbols left and right.  left_id/right_id record the
 * pieces at push time: if either symbol has changed since, the entry is stale. */
typedef struct {
    double prio; /* higher merges first */
    int32_t left, right, left_id, right_id, result;
} candidate;

typedef struct {
    symbol *sym;
    int n_sym, cap_sym;
    candidate *heap;
    int n_heap, cap_heap;
    int32_t *out;
    int n_out, cap_out;
} workspace;

/* Which piece, if any, do adjacent pieces a and b merge into, and how
 * urgently?  tokenizer.model: the merged string must be a normal piece and its
 * score is the priority.  tokenizer.json: the pair must be in the merges
 * list and earlier entries go first. */
static int pair_merge(const lf_tokenizer *t, int32_t a, int32_t b, int32_t *result,
                      double *prio) {
    if (t->use_merges) {
        for (uint32_t i = lf_merge_hash(a, b) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
            const lf_merge *m = &t->merge_slot[i];
            if (m->left < 0) return 0;
            if (m->left == a && m->right == b) {
                *result = m->result;
                *prio = -(double)m->rank;
                return 1;
            }
        }
    }
    int32_t r = lf_tok_find2(t, t->piece[a], t->piece_len[a], t->piece[b], t->piece_len[b]);
    if (r < 0 || (t->type[r] != LF_PIECE_NORMAL && t->type[r] != LF_PIECE_USER)) return 0;
    *result = r;
    *prio = t->score[r];
    return 1;
}

static int cand_before(const candidate *x, const candidate *y) {
    if (x->prio != y->prio) return x->prio > y->prio;
    return x->left < y->left; /* leftmost first on ties */
}

static int heap_push(workspace *w, const candidate *c) {
    if (w->n_heap == w->cap_heap) {
        int cap = w->cap_heap ? 2 * w->cap_heap : 64;
        candidate *h = lf_realloc(w->heap, (size_t)cap * sizeof *h, "tokenizer merge queue");
        if (!h) return -1;
        w->heap = h;
        w->cap_heap = cap;
    }
    int i = w->n_heap++;
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (!cand_before(c, &w->heap[parent])) break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = *c;
    return 0;
}

static candidate heap_pop(workspace *w) {
    candidate top = w->heap[0];
    candidate last = w->heap[--w->n_heap];
    int i = 0, n = w->n_heap;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && cand_before(&w->heap[c + 1], &w->heap[c])) c++;
        if (!cand_before(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n > 0) w->heap[i] = last;
    return top;
}

/* Queue the pair (left, left's next) if those two pieces can merge. */
static int push_pair(const lf_tokenizer *t, workspace *w, int32_t left) {
    if (left < 0) return 0;
    int32_t right = w->sym[left].next;
    if (right < 0 || !w->sym[left].can_merge || !w->sym[right].can_merge) return 0;
    candidate c = {.left = left, .right = right, .left_id = w->sym[left].id,
                   .right_id = w->sym[right].id};
    if (!pair_merge(t, c.left_id, c.right_id, &c.result, &c.prio)) return 0;
    return heap_push(w, &c);
}

static int add_symbol(workspace *w, int32_t id, int can_merge) {
    /* Usually one symbol per input byte, but a space whose "▁" is not a
     * piece falls back to its 3 bytes, so the array grows when needed. */
    if (w->n_sym == w->cap_sym) {
        if (w->cap_sym > INT32_MAX / 2) {
            lf_set_error("lf_tokenize: more than %d symbols", (int)(INT32_MAX / 2));
            return -1;
        }
        int cap = 2 * w->cap_sym;
        symbol *s = lf_realloc(w->sym, (size_t)cap * sizeof *s, "tokenizer symbols");
        if (!s) return -1;
        w->sym = s;
        w->cap_sym = cap;
    }
    int i = w->n_sym++;
    w->sym[i] = (symbol){.id = id, .prev = i - 1, .next = -1, .can_merge = (uint8_t)can_merge};
    if (i > 0) w->sym[i - 1].next = i;
    return 0;
}

/* Length of the UTF-8 character at s (n bytes left); 1 for an invalid
 * sequence, whose byte then goes through byte fallback on its own. */
static int utf8_char_len(const unsigned char *s, size_t n) {
    int len = s[0] < 0x80 ? 1 : (s[0] >> 5) == 0x6 ? 2 : (s[0] >> 4) == 0xE ? 3
            : (s[0] >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || (size_t)len > n) return 1;
    for (int i = 1; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 1;
    return len;
}

/* One character (the bytes s[0..len)) becomes one symbol, or its bytes as
 * <0xXX> symbols when it is not a piece, or <unk> without byte fallback. */
static int add_char(const lf_tokenizer *t, workspace *w, const char *s, size_t len) {
    int32_t id = lf_tok_find2(t, s, len, "", 0);
    if (id >= 0 && (t->type[id] == LF_PIECE_NORMAL || t->type[id] == LF_PIECE_USER))
        return add_symbol(w, id, 1);
    if (t->byte_fallback) {
        for (size_t i = 0; i < len; i++)
            if (add_symbol(w, t->byte_id[(uint8_t)s[i]], 0) != 0) return -1;
        return 0;
    }
    if (!(w->n_sym > 0 && w->sym[w->n_sym - 1].id == t->unk_id))
        return add_symbol(w, t->unk_id, 0); /* runs of unknown characters give one <unk> */
    return 0;
}

/* Split a text piece into symbols, with the SentencePiece pre-processing:
 * optional whitespace clean-up, dummy prefix, spaces as "▁". */
static int split_symbols(const lf_tokenizer *t, workspace *w, const char *s, size_t n) {
    static const char space_mark[] = "\xE2\x96\x81"; /* U+2581 "▁" */
    if (t->remove_extra_ws) {
        while (n > 0 && s[0] == ' ') s++, n--;
        while (n > 0 && s[n - 1] == ' ') n--;
    }
    w->n_sym = 0;
    if (n == 0) return 0; /* empty text: no dummy prefix, no tokens */
    const char *space = t->escape_spaces ? space_mark : " ";
    size_t space_len = strlen(space);
    if (t->add_dummy_prefix && add_char(t, w, space, space_len) != 0) return -1;
    for (size_t i = 0; i < n;) {
        if (s[i] == ' ') {
            if (!(t->remove_extra_ws && i > 0 && s[i - 1] == ' ') && add_char(t, w, space, space_len) != 0)
                return -1;
            i++;
            continue;
        }
        int len = utf8_char_len((const unsigned char *)s + i, n - i);
        if (add_char(t, w, s + i, (size_t)len) != 0) return -1;
        i += (size_t)len;
    }
    return 0;
}

static int out_push(workspace *w, int32_t id) {
    if (w->n_out == w->cap_out) {
        int cap = w->cap_out ? 2 * w->cap_out : 64;
        int32_t *o = lf_realloc(w->out, (size_t)cap * sizeof *o, "token ids");
        if (!o) return -1;
        w->out = o;
        w->cap_out = cap;
    }
    w->out[w->n_out++] = id;
    return 0;
}

/* Encode one text piece (no special strings inside) and append its ids. */
static int encode_piece(const lf_tokenizer *t, workspace *w, const char *s, size_t n) {
    if (split_symbols(t, w, s, n) != 0) return -1;
    w->n_heap = 0;
    for (int32_t i = 0; i < w->n_sym; i++)
        if (push_pair(t, w, i) != 0) return -1;
    while (w->n_heap > 0) {
        candidate c = heap_pop(w);
        symbol *l = &w->sym[c.left], *r = &w->sym[c.right];
        if (l->id != c.left_id || r->id != c.right_id || l->next != c.right) continue; /* stale */
        l->id = c.result;
        l->next = r->next;
        if (r->next >= 0) w->sym[r->next].prev = c.left;
        r->id = -1;
        if (push_pair(t, w, l->prev) != 0 || push_pair(t, w, c.left) != 0) return -1;
    }
    /* merges keep the left symbol, so symbol 0 still starts the list */
    for (int32_t i = w->n_sym > 0 ? 0 : -1; i >= 0; i = w->sym[i].next)
        if (out_push(w, w->sym[i].id) != 0) return -1;
    return 0;
}

/* With LF_TOK_SPECIAL: the next "<s>" or "</s>" at or after s, or NULL. */
static const char *next_special(const lf_tokenizer *t, const char *s, int32_t *id,
                                size_t *len) {
    const int32_t ids[2] = {t->bos_id, t->eos_id};
    for (; *s; s++) {
        for (int k = 0; k < 2; k++) {
            size_t pl = t->piece_len[ids[k]];
            if (*s == t->piece[ids[k]][0] && strncmp(s, t->piece[ids[k]], pl) == 0) {
                *id = ids[k];
                *len = pl;
                return s;
            }
        }
    }
    return NULL;
}

static int encode_text(const lf_tokenizer *t, workspace *w, const char *text, int flags) {
    if (flags & LF_TOK_BOS)
        if (out_push(w, t->bos_id) != 0) return -1;
    const char *s = text;
    if (flags & LF_TOK_SPECIAL) {
        int32_t id;
        size_t len;
        const char *sp;
        while ((sp = next_special(t, s, &id, &len)) != NULL) {
            if (encode_piece(t, w, s, (size_t)(sp - s)) != 0 || out_push(w, id) != 0) return -1;
            s = sp + len;
        }
    }
    if (encode_piece(t, w, s, strlen(s)) != 0) return -1;
    if (flags & LF_TOK_EOS)
        if (out_push(w, t->eos_id) != 0) return -1;
    return 0;
}

int lf_tokenize(const lf_tokenizer *t, const char *text, int flags, int32_t **ids, int *n) {
    if (ids) *ids = NULL;
    if (n) *n = 0;
    if (!t || !text || !ids || !n) {
        lf_set_error("lf_tokenize: NULL argument");
        return -1;
    }
    if (flags & ~(LF_TOK_BOS | LF_TOK_EOS | LF_TOK_SPECIAL)) {
        lf_set_error("lf_tokenize: unknown flags 0x%x", (unsigned)flags);
        return -1;
    }
    size_t len = strlen(text);
    if (len > LF_TOK_MAX_TEXT) {
        lf_set_error("lf_tokenize: text of %zu bytes is longer than the limit of %u (LF_TOK_MAX_TEXT "
                     "in src/tokenizer/tokenizer_internal.h)", len, LF_TOK_MAX_TEXT);
        return -1;
    }
    workspace w = {0};
    /* usually one symbol per input byte, plus the dummy prefix (add_symbol
     * grows the array for spaces that fall back to the bytes of "▁") */
    w.cap_sym = (int)len + 4;
    w.sym = lf_malloc((size_t)w.cap_sym * sizeof *w.sym, "tokenizer symbols");
    int rc = w.sym ? encode_text(t, &w, text, flags) : -1;
    free(w.sym);
    free(w.heap);
    if (rc != 0) {
        free(w.out);
        return -1;
    }
    if (!w.out) w.out = lf_malloc(sizeof *w.out, "token ids"); /* empty: still free()-able */
    if (!w.out) return -1;
    *ids = w.out;
    *n = w.n_out;
    return 0;
}

/* ------------------------------------------------------------------ */
/* decoding                                                            */

/* Bytes of one token inside a longer text: "▁" is a space, a byte piece is
 * its byte, control and unknown tokens are empty.  dst NULL: just count. */
static size_t token_text(const lf_tokenizer *t, int32_t id, char *dst) {
    int type = t->type[id];
    if (type == LF_PIECE_CONTROL || type == LF_PIECE_UNKNOWN) return 0;
    const char *p = t->piece[id];
    size_t n = t->piece_len[id];
    if (type == LF_PIECE_BYTE) {
        if (dst) dst[0] = (char)lf_tok_byte_value(p, n);
        return 1;
    }
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (i + 3 <= n && memcmp(p + i, "\xE2\x96\x81", 3) == 0) {
            if (dst) dst[o] = ' ';
            o++;
            i += 3;
        } else {
            if (dst) dst[o] = p[i];
            o++;
            i++;
        }
    }
    return o;
}

static int check_id(const lf_tokenizer *t, int32_t id, const char *fn) {
    if (id < 0 || id >= t->n_vocab) {
        lf_set_error("%s: token id %d is outside the vocabulary 0..%d", fn, (int)id,
                     t->n_vocab - 1);
        return -1;
    }
    return 0;
}

char *lf_detokenize(const lf_tokenizer *t, const int32_t *ids, int n) {
    if (!t || (n > 0 && !ids) || n < 0) {
        lf_set_error("lf_detokenize: bad arguments");
        return NULL;
    }
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        if (check_id(t, ids[i], "lf_detokenize") != 0) return NULL;
        total += token_text(t, ids[i], NULL);
    }
    char *s = lf_malloc(total + 1, "decoded text");
    if (!s) return NULL;
    size_t o = 0;
    for (int i = 0; i < n; i++) o += token_text(t, ids[i], s + o);
    s[o] = 0;
    /* the dummy prefix of the first word is not part of the text */
    if (t->add_dummy_prefix && o > 0 && s[0] == ' ') memmove(s, s + 1, o);
    return s;
}

int lf_token_bytes(const lf_tokenizer *t, int32_t id, char *buf, int cap) {
    if (!t || (!buf && cap > 0) || cap < 0) {
        lf_set_error("lf_token_bytes: bad arguments");
        return -1;
    }
    if (check_id(t, id, "lf_token_bytes") != 0) return -1;
    char tmp[LF_TOK_MAX_PIECE];
    size_t n = token_text(t, id, tmp);
    if (n > (size_t)cap) n = (size_t)cap; /* truncated to what fits */
    if (n > 0) memcpy(buf, tmp, n);
    if (n < (size_t)cap) buf[n] = 0; /* a courtesy terminator, not counted */
    return (int)n;
}
