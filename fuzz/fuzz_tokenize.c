/* fuzz_tokenize: lf_tokenize / lf_detokenize / lf_token_bytes on arbitrary
 * bytes, with a fixed set of tokenizers that switch on every option of the
 * encoder (tok_build.h) plus the Llama-2 tokenizer.model of the fixtures
 * when ../shared is there ($LORAFLOW_SHARED).
 *
 * Input: byte 0 picks the tokenizer, byte 1 the flags, the rest is the text
 * (up to its first NUL) and, read as little-endian int32s, ids to decode. */
#include "fuzz.h"
#include "tok_build.h"
#include "../src/tokenizer/tokenizer_internal.h"

#define NTOK 6
static lf_tokenizer *tok[NTOK];
static int roundtrip[NTOK]; /* decode(encode(text)) == text holds */

static lf_tokenizer *from_json(char *json) {
    int se = 0;
    lf_tokenizer *t = lf_tok_read_hf_json(json, strlen(json), "built-in tokenizer.json", &se);
    free(json);
    if (!t) fuzz_die("built-in tokenizer.json");
    return t;
}

static lf_tokenizer *from_sp(uint8_t *m, size_t n) {
    lf_tokenizer *t = lf_tok_read_sp_model(m, n, "built-in tokenizer.model");
    free(m);
    if (!t) fuzz_die("built-in tokenizer.model");
    return t;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    size_t n;
    tok[0] = from_json(tb_json(1, 1, 1));
    roundtrip[0] = 1;
    tok[1] = from_json(tb_json(0, 1, 0)); /* no "▁" piece: spaces fall back to bytes */
    tok[2] = from_json(tb_json(1, 0, 1)); /* <unk> instead of byte fallback */
    tok[3] = from_sp(tb_sp_model(1, 1, 1, 1, &n), n);
    tok[4] = from_sp(tb_sp_model(0, 0, 0, 0, &n), n);
    const char *sh = getenv("LORAFLOW_SHARED");
    char p[4200];
    snprintf(p, sizeof p, "%s/fixtures/tiny-loraflow/base/tokenizer.model", sh ? sh : "../shared");
    tok[5] = lf_file_exists(p) ? lf_tokenizer_load(p) : NULL;
    if (!tok[5]) tok[5] = from_json(tb_json(1, 1, 0));
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    const lf_tokenizer *t = tok[data[0] % NTOK];
    int flags = data[1] & 7;
    int V = lf_tokenizer_vocab_size(t);
    char *text = malloc(size - 1);
    if (!text) return 0;
    memcpy(text, data + 2, size - 2);
    text[size - 2] = 0;
    int32_t *ids = NULL;
    int n = -1;
    FUZZ_CHECK(lf_tokenize(t, text, flags, &ids, &n) == 0);
    for (int i = 0; i < n; i++) FUZZ_CHECK(ids[i] >= 0 && ids[i] < V);
    char *back = lf_detokenize(t, ids, n);
    FUZZ_CHECK(back);
    if (roundtrip[data[0] % NTOK] && !(flags & LF_TOK_SPECIAL) && !strstr(text, "\xe2\x96\x81") &&
        strcmp(back, text) != 0) {
        fprintf(stderr, "round trip changed the text: '%s' -> '%s'\n", text, back);
        abort();
    }
    free(back);
    char buf[8];
    for (int i = 0; i < n; i++) FUZZ_CHECK(lf_token_bytes(t, ids[i], buf, (int)sizeof buf) >= 0);
    free(ids);
    /* the same bytes as ids: invalid ones are refused, valid ones decode */
    size_t nid = (size - 2) / 4;
    int32_t *raw = malloc((nid ? nid : 1) * sizeof *raw);
    if (raw) {
        int all_valid = 1;
        for (size_t i = 0; i < nid; i++) {
            uint32_t v = (uint32_t)data[2 + 4 * i] | (uint32_t)data[3 + 4 * i] << 8 |
                         (uint32_t)data[4 + 4 * i] << 16 | (uint32_t)data[5 + 4 * i] << 24;
            raw[i] = (int32_t)v;
            if (raw[i] < 0 || raw[i] >= V) all_valid = 0;
        }
        lf_set_error("%s", "");
        char *s = lf_detokenize(t, raw, (int)nid);
        FUZZ_CHECK(all_valid ? s != NULL : s == NULL);
        if (!s) fuzz_check_error();
        free(s);
        for (size_t i = 0; i < nid; i++) raw[i] = (int32_t)((uint32_t)raw[i] % (uint32_t)V);
        s = lf_detokenize(t, raw, (int)nid);
        FUZZ_CHECK(s);
        free(s);
        free(raw);
    }
    free(text);
    return 0;
}
