/* tok_build.h: small tokenizer files built in memory, for the tokenizer
 * fuzz targets and the seed builder: tokenizer.json and tokenizer.model
 * variants that switch on every option the encoder has (byte fallback or
 * <unk>, dummy prefix, spaces as "▁" or not, whitespace clean-up, a
 * vocabulary without "▁"). */
#ifndef LF_TOK_BUILD_H
#define LF_TOK_BUILD_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint8_t *p;
    size_t n, cap;
} tb_buf;

static inline void tb_put(tb_buf *b, const void *d, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
    b->p[b->n] = 0;
}
static inline void tb_str(tb_buf *b, const char *s) { tb_put(b, s, strlen(s)); }
static inline void tb_varint(tb_buf *b, uint64_t v) {
    do {
        uint8_t c = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) c |= 0x80;
        tb_put(b, &c, 1);
    } while (v);
}

/* Pieces of the small vocabularies: <unk> <s> </s>, the 256 byte pieces,
 * then these (scores descending: earlier merges first). */
static const char *const tb_words[] = {
    "\xe2\x96\x81", "a", "b", "c", "e", "h", "l", "o", "t", "w", "r", "d", " ", "ab", "he", "ll", "llo",
    "hello", "\xe2\x96\x81h", "\xe2\x96\x81hello", "\xe2\x96\x81w", "or", "wor", "world", "\xe2\x96\x81world",
    "\xc3\xa9", "\xe4\xb8\xad", "th", "the", "\xe2\x96\x81the", "<s", "s>",
};
#define TB_NWORDS ((int)(sizeof tb_words / sizeof tb_words[0]))

static inline void tb_json_escape(tb_buf *b, const char *s) {
    tb_str(b, "\"");
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') { char t[2] = {'\\', *s}; tb_put(b, t, 2); }
        else if ((unsigned char)*s < 0x20) { char t[8]; snprintf(t, sizeof t, "\\u%04x", (unsigned char)*s); tb_str(b, t); }
        else tb_put(b, s, 1);
    }
    tb_str(b, "\"");
}

/* tokenizer.json.  with_space: include "▁" pieces; byte_fallback: else <unk>
 * handles unknown characters; metaspace: options through a Metaspace
 * pre_tokenizer, else through Prepend/Replace normalizers. */
static inline char *tb_json(int with_space, int byte_fallback, int metaspace) {
    tb_buf b = {0};
    tb_str(&b, "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},"
               "{\"id\":1,\"content\":\"<s>\",\"special\":true},{\"id\":2,\"content\":\"</s>\",\"special\":true}],");
    if (metaspace)
        tb_str(&b, "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\xe2\x96\x81\","
                   "\"add_prefix_space\":true,\"prepend_scheme\":\"first\",\"split\":false},");
    else
        tb_str(&b, "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\xe2\x96\x81\"},"
                   "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xe2\x96\x81\"}]},\"pre_tokenizer\":null,");
    tb_str(&b, "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"fuse_unk\":true,\"byte_fallback\":");
    tb_str(&b, byte_fallback ? "true" : "false");
    tb_str(&b, ",\"vocab\":{\"<unk>\":0,\"<s>\":1,\"</s>\":2");
    int id = 3;
    char t[64];
    for (int i = 0; i < 256; i++) {
        snprintf(t, sizeof t, ",\"<0x%02X>\":%d", i, id++);
        tb_str(&b, t);
    }
    for (int i = 0; i < TB_NWORDS; i++) {
        if (!with_space && strstr(tb_words[i], "\xe2\x96\x81")) continue;
        tb_str(&b, ",");
        tb_json_escape(&b, tb_words[i]);
        snprintf(t, sizeof t, ":%d", id++);
        tb_str(&b, t);
    }
    tb_str(&b, "},\"merges\":[");
    /* every word of 2+ characters that splits into two words of the list */
    int first = 1;
    for (int i = 0; i < TB_NWORDS; i++) {
        const char *w = tb_words[i];
        if (!with_space && strstr(w, "\xe2\x96\x81")) continue;
        size_t n = strlen(w);
        for (size_t cut = 1; cut < n; cut++) {
            int l = -1, r = -1;
            for (int k = 0; k < TB_NWORDS; k++) {
                if (!with_space && strstr(tb_words[k], "\xe2\x96\x81")) continue;
                if (strlen(tb_words[k]) == cut && !memcmp(tb_words[k], w, cut)) l = k;
                if (!strcmp(tb_words[k], w + cut)) r = k;
            }
            if (l < 0 || r < 0 || strchr(tb_words[l], ' ') || strchr(tb_words[r], ' ')) continue;
            if (!first) tb_str(&b, ",");
            first = 0;
            tb_str(&b, "[");
            tb_json_escape(&b, tb_words[l]);
            tb_str(&b, ",");
            tb_json_escape(&b, tb_words[r]);
            tb_str(&b, "]");
        }
    }
    tb_str(&b, "]}}");
    return (char *)b.p;
}

static inline void tb_piece(tb_buf *m, const char *s, float score, int type) {
    tb_buf p = {0};
    tb_varint(&p, 0x0A);
    tb_varint(&p, strlen(s));
    tb_str(&p, s);
    uint32_t bits;
    memcpy(&bits, &score, 4);
    uint8_t f[5] = {0x15, (uint8_t)bits, (uint8_t)(bits >> 8), (uint8_t)(bits >> 16), (uint8_t)(bits >> 24)};
    tb_put(&p, f, 5);
    tb_varint(&p, 0x18);
    tb_varint(&p, (uint64_t)type);
    tb_varint(m, 0x0A);
    tb_varint(m, p.n);
    tb_put(m, p.p, p.n);
    free(p.p);
}

/* tokenizer.model (SentencePiece BPE ModelProto). */
static inline uint8_t *tb_sp_model(int byte_fallback, int dummy_prefix, int remove_ws, int escape, size_t *len) {
    tb_buf m = {0};
    tb_piece(&m, "<unk>", 0, 2);
    tb_piece(&m, "<s>", 0, 3);
    tb_piece(&m, "</s>", 0, 3);
    char t[16];
    for (int i = 0; i < 256; i++) {
        snprintf(t, sizeof t, "<0x%02X>", i);
        tb_piece(&m, t, 0, 6);
    }
    for (int i = 0; i < TB_NWORDS; i++) tb_piece(&m, tb_words[i], -(float)i, 1);
    tb_buf ts = {0}, ns = {0};
    tb_varint(&ts, 3 << 3);
    tb_varint(&ts, 2); /* BPE */
    tb_varint(&ts, 35 << 3);
    tb_varint(&ts, (uint64_t)byte_fallback);
    tb_varint(&m, 0x12);
    tb_varint(&m, ts.n);
    tb_put(&m, ts.p, ts.n);
    tb_varint(&ns, 0x0A);
    tb_varint(&ns, 8);
    tb_str(&ns, "identity");
    tb_varint(&ns, 3 << 3);
    tb_varint(&ns, (uint64_t)dummy_prefix);
    tb_varint(&ns, 4 << 3);
    tb_varint(&ns, (uint64_t)remove_ws);
    tb_varint(&ns, 5 << 3);
    tb_varint(&ns, (uint64_t)escape);
    tb_varint(&m, 0x1A);
    tb_varint(&m, ns.n);
    tb_put(&m, ns.p, ns.n);
    free(ts.p);
    free(ns.p);
    *len = m.n;
    return m.p;
}

#endif
