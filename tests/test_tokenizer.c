/* test_tokenizer.c: the Llama SentencePiece BPE tokenizer against every
 * published test vector in shared/tokenizers/llama2/testvectors (llama.cpp,
 * swift-transformers, TinyLlama multilingual), the fixture's prompt and
 * training ids, with both tokenizer.model and tokenizer.json; plus decoding,
 * special-token splitting, hostile files and a speed sanity check. */
#include "common.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../src/core/util.h"

#define TV "tokenizers/llama2/testvectors/"
#define FIX "fixtures/tiny-loraflow/"

/* The four tokenizer files under test: every vector runs through each. */
static const char *const tok_files[] = {
    "tokenizers/llama2/tokenizer.model",
    "tokenizers/llama2/tokenizer.json",
    FIX "base/tokenizer.model",
    FIX "base/tokenizer.json",
};
#define N_TOK 4
static lf_tokenizer *toks[N_TOK];

static int setup(void **state) {
    (void)state;
    if (!lf_test_shared()) return 0;
    for (int i = 0; i < N_TOK; i++) {
        toks[i] = lf_tokenizer_load(lf_test_path(tok_files[i]));
        if (!toks[i]) {
            fprintf(stderr, "loading %s: %s\n", tok_files[i], lf_last_error());
            return -1;
        }
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    for (int i = 0; i < N_TOK; i++) lf_tokenizer_free(toks[i]);
    return 0;
}

/* ---- helpers ---- */

static char *read_text(const char *path, size_t *len) {
    char *s = lf_read_file(path, len, 1u << 28);
    if (!s) {
        print_error("%s\n", lf_last_error());
        fail();
    }
    return s;
}

static cJSON *read_json(const char *rel) {
    size_t len;
    char *s = read_text(lf_test_path(rel), &len);
    cJSON *j = cJSON_ParseWithLength(s, len);
    free(s);
    assert_non_null(j);
    return j;
}

/* ids of a JSON array of integers (malloc'd). */
static int32_t *json_ids(const cJSON *arr, int *n) {
    assert_true(cJSON_IsArray(arr));
    *n = cJSON_GetArraySize(arr);
    int32_t *ids = malloc((size_t)(*n + 1) * sizeof *ids);
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) ids[i++] = (int32_t)e->valuedouble;
    return ids;
}

static void print_ids(const char *label, const int32_t *ids, int n) {
    print_message("    %s (%d):", label, n);
    for (int i = 0; i < n && i < 80; i++) print_message(" %d", (int)ids[i]);
    print_message("%s\n", n > 80 ? " ..." : "");
}

/* Encode text and compare with the expected ids; prints both on mismatch. */
static int encodes_to(const lf_tokenizer *t, const char *text, int flags, const int32_t *want,
                      int n_want, const char *label) {
    int32_t *ids;
    int n;
    if (lf_tokenize(t, text, flags, &ids, &n) != 0) {
        print_message("  %s: lf_tokenize failed: %s\n", label, lf_last_error());
        return 0;
    }
    int ok = n == n_want && (n == 0 || memcmp(ids, want, (size_t)n * sizeof *ids) == 0);
    if (!ok) {
        print_message("  MISMATCH %s: text \"%.200s\"\n", label, text);
        print_ids("got ", ids, n);
        print_ids("want", want, n_want);
    }
    free(ids);
    return ok;
}

/* decode(ids) == want (prints on mismatch). */
static int decodes_to(const lf_tokenizer *t, const int32_t *ids, int n, const char *want,
                      const char *label) {
    char *s = lf_detokenize(t, ids, n);
    if (!s) {
        print_message("  %s: lf_detokenize failed: %s\n", label, lf_last_error());
        return 0;
    }
    int ok = strcmp(s, want) == 0;
    if (!ok) print_message("  DECODE MISMATCH %s:\n    got  \"%s\"\n    want \"%s\"\n", label, s, want);
    free(s);
    return ok;
}

/* decode(encode(text)) == text */
static int round_trips(const lf_tokenizer *t, const char *text, const char *label) {
    int32_t *ids;
    int n;
    if (lf_tokenize(t, text, 0, &ids, &n) != 0) return 0;
    int ok = decodes_to(t, ids, n, text, label);
    free(ids);
    return ok;
}

static const char *short_name(int i) { return tok_files[i]; }

/* ---- published vectors ---- */

/* llama.cpp: 46 strings, ids without BOS. */
static void test_llamacpp_vectors(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    size_t ilen, olen;
    char *inp = read_text(lf_test_path(TV "ggml-vocab-llama-spm.gguf.inp"), &ilen);
    char *out = read_text(lf_test_path(TV "ggml-vocab-llama-spm.gguf.out"), &olen);
    const char *sep = "\n__ggml_vocab_test__\n";
    char *texts[64], *lines[64];
    int nt = 0, nl = 0;
    for (char *p = inp, *q; (q = strstr(p, sep)) && nt < 64; p = q + strlen(sep)) {
        *q = 0;
        texts[nt++] = p;
    }
    for (char *p = out, *q; (q = strchr(p, '\n')) && nl < 64; p = q + 1) {
        *q = 0;
        lines[nl++] = p;
    }
    assert_int_equal(nt, 46);
    assert_int_equal(nl, 46);
    for (int k = 0; k < N_TOK; k++) {
        int pass = 0, rt = 0;
        for (int i = 0; i < nt; i++) {
            int32_t want[512];
            int n = 0;
            for (char *p = lines[i], *e; *p && n < 512; p = e) {
                long v = strtol(p, &e, 10);
                if (e == p) break;
                want[n++] = (int32_t)v;
            }
            char label[64];
            snprintf(label, sizeof label, "llama.cpp #%d", i);
            pass += encodes_to(toks[k], texts[i], 0, want, n, label);
            rt += round_trips(toks[k], texts[i], label);
        }
        print_message("llama.cpp vectors, %s: %d/%d encode, %d/%d decode round trip\n",
                      short_name(k), pass, nt, rt, nt);
        assert_int_equal(pass, nt);
        assert_int_equal(rt, nt);
    }
    free(inp);
    free(out);
}

/* swift-transformers tokenizer_tests.json, Llama-2 key: 18 cases with BOS. */
static void test_swift_vectors(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    cJSON *j = read_json(TV "swift-transformers/tokenizer_tests.json");
    const cJSON *cases = cJSON_GetObjectItem(j, "coreml-projects/Llama-2-7b-chat-coreml"), *c;
    assert_int_equal(cJSON_GetArraySize(cases), 18);
    for (int k = 0; k < N_TOK; k++) {
        int pass = 0, dec = 0, total = 0;
        cJSON_ArrayForEach(c, cases) {
            const char *text = cJSON_GetObjectItem(c, "input")->valuestring;
            int n;
            int32_t *want = json_ids(cJSON_GetObjectItem(cJSON_GetObjectItem(c, "encoded"),
                                                         "input_ids"), &n);
            char label[64];
            snprintf(label, sizeof label, "swift #%d", total);
            pass += encodes_to(toks[k], text, LF_TOK_BOS, want, n, label);
            dec += decodes_to(toks[k], want, n,
                              cJSON_GetObjectItem(c, "decoded_without_special")->valuestring, label);
            total++;
            free(want);
        }
        print_message("swift-transformers Llama-2 vectors, %s: %d/%d encode, %d/%d decode\n",
                      short_name(k), pass, total, dec, total);
        assert_int_equal(pass, total);
        assert_int_equal(dec, total);
    }
    cJSON_Delete(j);
}

/* llama_encoded.json: one long French paragraph, ids and piece strings. */
static void test_llama_encoded(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    cJSON *j = read_json(TV "swift-transformers/llama_encoded.json");
    const char *text = cJSON_GetObjectItem(j, "text")->valuestring;
    int n;
    int32_t *want = json_ids(cJSON_GetObjectItem(j, "token_ids"), &n);
    const cJSON *pieces = cJSON_GetObjectItem(j, "bpe_tokens");
    assert_int_equal(cJSON_GetArraySize(pieces), n - 1);
    for (int k = 0; k < N_TOK; k++) {
        assert_true(encodes_to(toks[k], text, LF_TOK_BOS, want, n, "llama_encoded"));
        for (int i = 1; i < n; i++)
            assert_string_equal(lf_tokenizer_piece(toks[k], want[i]),
                                cJSON_GetArrayItem(pieces, i - 1)->valuestring);
        assert_true(decodes_to(toks[k], want, n, text, "llama_encoded"));
        print_message("llama_encoded.json, %s: 1/1 (%d ids, pieces and decode match)\n",
                      short_name(k), n);
    }
    free(want);
    cJSON_Delete(j);
}

/* TinyLlama multilingual: 83 inputs joined on id, ids with BOS. */
static void test_multilingual(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    cJSON *in = read_json(TV "swift-transformers/multilingual_inputs.json");
    cJSON *ex = read_json(TV "swift-transformers/tinyllama_multilingual.json");
    const cJSON *entries = cJSON_GetObjectItem(ex, "entries");
    assert_int_equal(cJSON_GetArraySize(entries), 83);
    for (int k = 0; k < N_TOK; k++) {
        int pass = 0, dec = 0, rt = 0, pieces_ok = 0, total = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, entries) {
            const char *id = cJSON_GetObjectItem(e, "id")->valuestring, *text = NULL;
            const cJSON *x;
            cJSON_ArrayForEach(x, in)
                if (strcmp(cJSON_GetObjectItem(x, "id")->valuestring, id) == 0)
                    text = cJSON_GetObjectItem(x, "text")->valuestring;
            assert_non_null(text);
            int n;
            int32_t *want = json_ids(cJSON_GetObjectItem(e, "input_ids"), &n);
            pass += encodes_to(toks[k], text, LF_TOK_BOS, want, n, id);
            rt += round_trips(toks[k], text, id);
            /* HF decodes invalid UTF-8 byte runs to U+FFFD where this library
             * gives the raw bytes, so compare only where HF's text is exact */
            const char *hf = cJSON_GetObjectItem(e, "decoded_skip_special")->valuestring;
            if (strcmp(hf, text) == 0) dec += decodes_to(toks[k], want, n, hf, id);
            else print_message("  (%s: HF decode differs from the input, not compared)\n", id);
            const cJSON *tp = cJSON_GetObjectItem(e, "tokens");
            int same = cJSON_GetArraySize(tp) == n;
            for (int i = 0; same && i < n; i++)
                same = strcmp(lf_tokenizer_piece(toks[k], want[i]),
                              cJSON_GetArrayItem(tp, i)->valuestring) == 0;
            pieces_ok += same;
            total++;
            free(want);
        }
        print_message("multilingual vectors, %s: %d/%d encode, %d/%d round trip, "
                      "%d decode == HF, %d/%d piece strings\n",
                      short_name(k), pass, total, rt, total, dec, pieces_ok, total);
        assert_int_equal(pass, total);
        assert_int_equal(rt, total);
        assert_int_equal(pieces_ok, total);
    }
    cJSON_Delete(in);
    cJSON_Delete(ex);
}

/* ---- the fixture ---- */

static void test_fixture_prompts(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    cJSON *m = read_json(FIX "expected/manifest.json");
    lf_tokenizer *dir_tok = lf_tokenizer_load_dir(lf_test_path(FIX "base"));
    assert_non_null(dir_tok);
    const cJSON *p;
    int total = 0;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(m, "prompts")) {
        const char *name = cJSON_GetObjectItem(p, "name")->valuestring;
        const char *text = cJSON_GetObjectItem(p, "text")->valuestring;
        int n;
        int32_t *want = json_ids(cJSON_GetObjectItem(p, "input_ids"), &n);
        assert_int_equal(n, cJSON_GetObjectItem(p, "n_tokens")->valueint);
        for (int k = 0; k < N_TOK; k++) assert_true(encodes_to(toks[k], text, LF_TOK_BOS, want, n, name));
        assert_true(encodes_to(dir_tok, text, LF_TOK_BOS, want, n, name));
        assert_true(decodes_to(toks[0], want, n, text, name));
        if (strcmp(name, "chat") == 0) {
            /* the same text from the chat template */
            char *chat = lf_chat_prompt("You are a helpful assistant.", "What is 2 + 3?");
            assert_string_equal(chat, text);
            free(chat);
        }
        total++;
        free(want);
    }
    print_message("fixture prompts: %d/3 with all four tokenizer files and load_dir\n", total);
    assert_int_equal(total, 3);
    lf_tokenizer_free(dir_tok);
    cJSON_Delete(m);
}

/* I64 tensor `name` of a safetensors file as int32 (malloc'd); a minimal
 * reader so this test does not depend on the io module. */
static int32_t *safetensors_i64(const char *path, const char *name, int *n) {
    size_t len;
    char *f = read_text(path, &len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | (uint8_t)f[i];
    assert_true(hlen + 8 <= len);
    cJSON *h = cJSON_ParseWithLength(f + 8, (size_t)hlen);
    assert_non_null(h);
    const cJSON *t = cJSON_GetObjectItem(h, name);
    assert_non_null(t);
    assert_string_equal(cJSON_GetObjectItem(t, "dtype")->valuestring, "I64");
    const cJSON *off = cJSON_GetObjectItem(t, "data_offsets");
    size_t a = (size_t)cJSON_GetArrayItem(off, 0)->valuedouble;
    size_t b = (size_t)cJSON_GetArrayItem(off, 1)->valuedouble;
    assert_true(a <= b && 8 + hlen + b <= len);
    *n = (int)((b - a) / 8);
    int32_t *ids = malloc((size_t)*n * sizeof *ids + 1);
    for (int i = 0; i < *n; i++) {
        int64_t v;
        memcpy(&v, f + 8 + hlen + a + (size_t)i * 8, 8);
        ids[i] = (int32_t)v;
    }
    cJSON_Delete(h);
    free(f);
    return ids;
}

/* Training examples: prompt and response tokenized separately with the
 * literal <s>/</s> split out, as the authors' trainer does. */
static void test_fixture_training(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    cJSON *m = read_json(FIX "expected/manifest.json");
    const char *st = lf_test_path(FIX "expected/train.safetensors");
    int n_single, n_batch;
    int32_t *single = safetensors_i64(st, "single.input_ids", &n_single);
    int32_t *batch = safetensors_i64(st, "batch.input_ids", &n_batch);
    const cJSON *ex;
    int row = 0, checked = 0;
    cJSON_ArrayForEach(ex, cJSON_GetObjectItem(cJSON_GetObjectItem(m, "training"), "examples")) {
        const char *prompt = cJSON_GetObjectItem(ex, "prompt_text")->valuestring;
        const char *resp = cJSON_GetObjectItem(ex, "response_text")->valuestring;
        int n_tokens = cJSON_GetObjectItem(ex, "n_tokens")->valueint;
        int n_prompt = cJSON_GetObjectItem(ex, "n_prompt_tokens")->valueint;
        /* batch rows are left-padded to the longest example */
        int width = n_batch / 2;
        const int32_t *want = batch + (size_t)row * width + (width - n_tokens);
        if (row == 0) {
            assert_int_equal(n_single, n_tokens);
            assert_memory_equal(single, want, (size_t)n_tokens * sizeof *want);
        }
        for (int k = 0; k < N_TOK; k++) {
            int32_t *a, *b;
            int na, nb;
            assert_int_equal(lf_tokenize(toks[k], prompt, LF_TOK_SPECIAL, &a, &na), 0);
            assert_int_equal(lf_tokenize(toks[k], resp, LF_TOK_SPECIAL, &b, &nb), 0);
            assert_int_equal(na, n_prompt);
            assert_int_equal(na + nb, n_tokens);
            assert_memory_equal(a, want, (size_t)na * sizeof *a);
            assert_memory_equal(b, want + na, (size_t)nb * sizeof *b);
            assert_int_equal(b[nb - 2], 29871); /* "▁" of the trailing space */
            assert_int_equal(b[nb - 1], 2);
            free(a);
            free(b);
            checked++;
        }
        row++;
    }
    print_message("training examples: %d/2, each with the four tokenizer files\n", checked / N_TOK);
    assert_int_equal(checked, 2 * N_TOK);
    free(single);
    free(batch);
    cJSON_Delete(m);
}

/* ---- behaviour ---- */

static void test_empty_and_flags(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    for (int k = 0; k < N_TOK; k++) {
        const lf_tokenizer *t = toks[k];
        assert_true(encodes_to(t, "", 0, NULL, 0, "empty"));
        assert_true(encodes_to(t, "", LF_TOK_BOS, (int32_t[]){1}, 1, "empty+bos"));
        assert_true(encodes_to(t, "", LF_TOK_BOS | LF_TOK_EOS, (int32_t[]){1, 2}, 2, "empty+bos+eos"));
        assert_true(encodes_to(t, "Hello world", LF_TOK_BOS | LF_TOK_EOS,
                               (int32_t[]){1, 15043, 3186, 2}, 4, "hello+eos"));
        assert_true(encodes_to(t, " ", 0, (int32_t[]){259}, 1, "one space"));
        int32_t *ids = (int32_t *)1;
        int n = 7;
        assert_int_equal(lf_tokenize(t, "x", 64, &ids, &n), -1); /* unknown flag */
        assert_null(ids);
        assert_int_equal(n, 0);
        assert_int_equal(lf_tokenize(t, NULL, 0, &ids, &n), -1);
        char *s = lf_detokenize(t, NULL, 0);
        assert_string_equal(s, "");
        free(s);
    }
}

static void test_special_split(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    for (int k = 0; k < N_TOK; k++) {
        const lf_tokenizer *t = toks[k];
        int32_t *a, *b, *c;
        int na, nb, nc;
        /* with the flag: each piece has its own dummy prefix */
        assert_int_equal(lf_tokenize(t, "Hi<s>there</s> x", LF_TOK_SPECIAL, &a, &na), 0);
        assert_int_equal(lf_tokenize(t, "Hi", 0, &b, &nb), 0);
        assert_int_equal(lf_tokenize(t, "there", 0, &c, &nc), 0);
        int32_t *d;
        int nd;
        assert_int_equal(lf_tokenize(t, " x", 0, &d, &nd), 0); /* "▁▁x": ▁ + ▁x */
        int32_t want[64];
        int n = 0;
        memcpy(want + n, b, (size_t)nb * 4), n += nb;
        want[n++] = 1;
        memcpy(want + n, c, (size_t)nc * 4), n += nc;
        want[n++] = 2;
        memcpy(want + n, d, (size_t)nd * 4), n += nd;
        free(a);
        free(b);
        free(c);
        free(d);
        assert_true(encodes_to(t, "Hi<s>there</s> x", LF_TOK_SPECIAL, want, n, "split"));
        /* only specials, adjacent specials, specials at the ends */
        assert_true(encodes_to(t, "<s>", LF_TOK_SPECIAL, (int32_t[]){1}, 1, "<s>"));
        assert_true(encodes_to(t, "<s></s>", LF_TOK_SPECIAL | LF_TOK_BOS, (int32_t[]){1, 1, 2}, 3, "<s></s>"));
        assert_true(encodes_to(t, " </s>", LF_TOK_SPECIAL, (int32_t[]){259, 2}, 2, "space </s>"));
        /* an incomplete special is text */
        assert_int_equal(lf_tokenize(t, "a</s", LF_TOK_SPECIAL, &a, &na), 0);
        for (int i = 0; i < na; i++) assert_true(a[i] != 1 && a[i] != 2);
        free(a);
        /* without the flag the literal is ordinary text */
        assert_int_equal(lf_tokenize(t, "x<s>y</s>", 0, &a, &na), 0);
        for (int i = 0; i < na; i++) assert_true(a[i] != 1 && a[i] != 2);
        assert_true(decodes_to(t, a, na, "x<s>y</s>", "literal specials"));
        free(a);
    }
}

static void test_decode(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    for (int k = 0; k < N_TOK; k++) {
        const lf_tokenizer *t = toks[k];
        assert_int_equal(lf_tokenizer_vocab_size(t), 32000);
        assert_string_equal(lf_tokenizer_piece(t, 0), "<unk>");
        assert_string_equal(lf_tokenizer_piece(t, 1), "<s>");
        assert_string_equal(lf_tokenizer_piece(t, 2), "</s>");
        assert_string_equal(lf_tokenizer_piece(t, 13), "<0x0A>");
        assert_string_equal(lf_tokenizer_piece(t, 29871), "\xE2\x96\x81");
        assert_null(lf_tokenizer_piece(t, -1));
        assert_null(lf_tokenizer_piece(t, 32000));
        /* control tokens vanish, one leading space goes, bytes are bytes */
        assert_true(decodes_to(t, (int32_t[]){1, 15043, 3186, 2}, 4, "Hello world", "controls"));
        assert_true(decodes_to(t, (int32_t[]){0, 15043}, 2, "Hello", "unk"));
        assert_true(decodes_to(t, (int32_t[]){259, 15043}, 2, "  Hello", "spaces")); /* ▁▁ ▁Hello */
        assert_true(decodes_to(t, (int32_t[]){15043, 13, 3186}, 3, "Hello\n world", "newline"));
        assert_true(decodes_to(t, (int32_t[]){29871, 235, 179, 158}, 4, "\xE8\xB0\x9B", "bytes"));
        assert_null(lf_detokenize(t, (int32_t[]){15043, 32000}, 2));
        assert_non_null(strstr(lf_last_error(), "32000"));
        /* one token's raw bytes */
        char buf[64];
        assert_int_equal(lf_token_bytes(t, 278, buf, sizeof buf), 4);
        assert_memory_equal(buf, " the", 4);
        assert_int_equal(lf_token_bytes(t, 13, buf, sizeof buf), 1);
        assert_int_equal(buf[0], '\n');
        assert_int_equal(lf_token_bytes(t, 1, buf, sizeof buf), 0);
        assert_int_equal(lf_token_bytes(t, 2, buf, sizeof buf), 0);
        assert_int_equal(lf_token_bytes(t, 29871, buf, sizeof buf), 1);
        assert_int_equal(buf[0], ' ');
        assert_int_equal(lf_token_bytes(t, 278, buf, 2), 2); /* truncated to cap */
        assert_memory_equal(buf, " t", 2);
        assert_int_equal(lf_token_bytes(t, -1, buf, sizeof buf), -1);
        assert_int_equal(lf_token_bytes(t, 32000, buf, sizeof buf), -1);
        /* streaming: token bytes concatenated == decode (+ the leading space) */
        int32_t *ids;
        int n;
        const char *text = "Streaming 生活的真谛是 €4 ₣7 \n\tdone";
        assert_int_equal(lf_tokenize(t, text, LF_TOK_BOS, &ids, &n), 0);
        char all[512];
        int o = 0;
        for (int i = 0; i < n; i++) o += lf_token_bytes(t, ids[i], all + o, (int)sizeof all - o);
        all[o] = 0;
        assert_int_equal(all[0], ' ');
        assert_string_equal(all + 1, text);
        free(ids);
    }
}

static void test_byte_fallback(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    for (int k = 0; k < N_TOK; k++) {
        const lf_tokenizer *t = toks[k];
        /* 谛 (E8 B0 9B) is not a piece: byte ids are 3 + byte */
        assert_true(encodes_to(t, "\xE8\xB0\x9B", 0, (int32_t[]){29871, 3 + 0xE8, 3 + 0xB0, 3 + 0x9B},
                               4, "byte fallback"));
        /* invalid UTF-8 goes through byte by byte and decodes back unchanged */
        const char *bad = "a\xFF\xC3(b\xE2\x82";
        int32_t *ids;
        int n;
        assert_int_equal(lf_tokenize(t, bad, 0, &ids, &n), 0);
        int seen_ff = 0;
        for (int i = 0; i < n; i++) seen_ff |= ids[i] == 3 + 0xFF;
        assert_true(seen_ff);
        assert_true(decodes_to(t, ids, n, bad, "invalid utf-8"));
        free(ids);
        /* an emoji with a ZWJ sequence and a 4-byte character round trip */
        assert_true(round_trips(t, "👩‍💻 𝄞 \x01\x7F", "emoji"));
    }
}

static void test_chat_prompt(void **state) {
    (void)state;
    char *s = lf_chat_prompt("SYS", "Q?");
    assert_string_equal(s, "[INST] <<SYS>>\nSYS\n<</SYS>>\n\nQ? [/INST]");
    free(s);
    s = lf_chat_prompt(NULL, "Q?");
    assert_string_equal(s, "[INST] Q? [/INST]");
    free(s);
    s = lf_chat_prompt("", "");
    assert_string_equal(s, "[INST] <<SYS>>\n\n<</SYS>>\n\n [/INST]");
    free(s);
    assert_null(lf_chat_prompt("x", NULL));
}

/* 50 KB of mixed text: must not be quadratic; both files agree. */
static void test_speed(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    static const char *const parts[] = {
        "The quick brown fox jumps over the lazy dog. ",
        "小明有三个苹果，又买了两个。生活的真谛是 ",
        "Привет, как дела?   \n\n\t",
        "def main():\n    return [x**2 for x in range(10)]  # 👩‍💻\n",
        "café résumé naïve façade — crème brûlée 3333333 ",
    };
    size_t cap = 50 * 1024, len = 0;
    char *text = malloc(cap + 128);
    for (int i = 0; len < cap; i++) {
        const char *p = parts[(i * 7 + i / 5) % 5];
        memcpy(text + len, p, strlen(p));
        len += strlen(p);
    }
    text[len] = 0;
    int32_t *ids[N_TOK];
    int n[N_TOK];
    for (int k = 0; k < N_TOK; k++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        assert_int_equal(lf_tokenize(toks[k], text, LF_TOK_BOS, &ids[k], &n[k]), 0);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        print_message("encode %zu bytes -> %d ids with %s: %.1f ms\n", len, n[k], short_name(k), ms);
        assert_true(decodes_to(toks[k], ids[k], n[k], text, "50 KB"));
    }
    for (int k = 1; k < N_TOK; k++) {
        assert_int_equal(n[k], n[0]);
        assert_memory_equal(ids[k], ids[0], (size_t)n[0] * sizeof *ids[0]);
    }
    for (int k = 0; k < N_TOK; k++) free(ids[k]);
    free(text);
}

/* ---- tiny hand-made vocabularies ---- */

typedef struct {
    uint8_t *b;
    size_t n, cap;
} buf;

static void put(buf *o, const void *p, size_t n) {
    if (o->n + n > o->cap) {
        o->cap = (o->n + n) * 2 + 64;
        o->b = realloc(o->b, o->cap);
    }
    memcpy(o->b + o->n, p, n);
    o->n += n;
}
static void put_varint(buf *o, uint64_t v) {
    do {
        uint8_t c = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) c |= 0x80;
        put(o, &c, 1);
    } while (v);
}
static void put_key(buf *o, int field, int wire) { put_varint(o, (uint64_t)field << 3 | (uint64_t)wire); }
static void put_bytes(buf *o, int field, const void *p, size_t n) {
    put_key(o, field, 2);
    put_varint(o, n);
    put(o, p, n);
}

typedef struct {
    const char *piece;
    float score;
    int type;
} sp;

/* A tokenizer.model with the given pieces (plus, when with_bytes, the 256
 * byte pieces right after the first three) and BPE / byte-fallback specs. */
static buf make_model_ws(const sp *pieces, int n, int with_bytes, int model_type, int remove_ws) {
    buf o = {0};
    for (int i = 0; i < n; i++) {
        buf m = {0};
        put_bytes(&m, 1, pieces[i].piece, strlen(pieces[i].piece));
        put_key(&m, 2, 5);
        put(&m, &pieces[i].score, 4);
        if (pieces[i].type != 1) {
            put_key(&m, 3, 0);
            put_varint(&m, (uint64_t)pieces[i].type);
        }
        put_bytes(&o, 1, m.b, m.n);
        free(m.b);
        if (i == 2 && with_bytes) {
            for (int b = 0; b < 256; b++) {
                char s[8];
                snprintf(s, sizeof s, "<0x%02X>", b);
                sp bp = {s, 0, 6};
                buf mb = {0};
                put_bytes(&mb, 1, bp.piece, strlen(bp.piece));
                put_key(&mb, 3, 0);
                put_varint(&mb, 6);
                put_bytes(&o, 1, mb.b, mb.n);
                free(mb.b);
            }
        }
    }
    buf ts = {0};
    put_key(&ts, 3, 0);
    put_varint(&ts, (uint64_t)model_type);
    put_key(&ts, 35, 0);
    put_varint(&ts, with_bytes);
    put_bytes(&o, 2, ts.b, ts.n);
    buf ns = {0};
    put_bytes(&ns, 1, "identity", 8);
    put_key(&ns, 3, 0);
    put_varint(&ns, 1);
    put_key(&ns, 4, 0);
    put_varint(&ns, (uint64_t)remove_ws);
    put_bytes(&o, 3, ns.b, ns.n);
    free(ts.b);
    free(ns.b);
    return o;
}

static buf make_model(const sp *pieces, int n, int with_bytes, int model_type) {
    return make_model_ws(pieces, n, with_bytes, model_type, 0);
}

static lf_tokenizer *load_bytes(const char *name, const void *data, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", lf_test_tmpdir(), name);
    lf_test_write_file(path, data, n);
    return lf_tokenizer_load(path);
}

/* Scores decide the merge order; ties go to the leftmost pair. */
static void test_small_model(void **state) {
    (void)state;
    const sp pieces[] = {
        {"<unk>", 0, 2}, {"<s>", 0, 3}, {"</s>", 0, 3},
        {"\xE2\x96\x81", -1e9f, 1}, {"a", -1, 1}, {"b", -2, 1}, {"aa", -3, 1},
        {"ab", -0.5f, 1}, {"\xE2\x96\x81" "a", -4, 1}, {"\xE2\x96\x81\xE2\x96\x81", -1e9f, 1},
    };
    buf m = make_model(pieces, 10, 1, 2);
    lf_tokenizer *t = load_bytes("small.model", m.b, m.n);
    if (!t) print_error("%s\n", lf_last_error());
    assert_non_null(t);
    assert_int_equal(lf_tokenizer_vocab_size(t), 266);
    const int A = 260, B = 261, AA = 262, AB = 263, _A = 264, __ = 265, _ = 259;
    /* "▁aab": ab (-0.5) first; then "▁" + "a" -> ▁a (-4); "a" + "ab" is no piece */
    assert_true(encodes_to(t, "aab", 0, (int32_t[]){_A, AB}, 2, "aab"));
    /* "▁aaa": aa at the leftmost tie, then ▁ + aa is not a piece */
    assert_true(encodes_to(t, "aaa", 0, (int32_t[]){_, AA, A}, 3, "aaa"));
    assert_true(encodes_to(t, "b", 0, (int32_t[]){_, B}, 2, "b"));
    /* all-▁ pieces merge last: "▁ a" -> ▁ ▁a, not ▁▁ a */
    assert_true(encodes_to(t, " a", 0, (int32_t[]){_, _A}, 2, "space a"));
    assert_true(encodes_to(t, " ", 0, (int32_t[]){__}, 1, "space"));
    assert_true(encodes_to(t, "c", 0, (int32_t[]){_, 3 + 'c'}, 2, "byte c"));
    lf_tokenizer_free(t);
    free(m.b);

    /* SentencePiece's remove_extra_whitespaces, honoured when a file sets it */
    m = make_model_ws(pieces, 10, 1, 2, 1);
    t = load_bytes("ws.model", m.b, m.n);
    assert_non_null(t);
    assert_true(encodes_to(t, "  b   a  ", 0, (int32_t[]){_, B, _A}, 3, "extra spaces"));
    assert_true(encodes_to(t, "   ", 0, NULL, 0, "only spaces"));
    lf_tokenizer_free(t);
    free(m.b);

    /* the same vocabulary as tokenizer.json, merges ranked by those scores */
    const char *json =
        "{\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\xE2\x96\x81\"},"
        "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xE2\x96\x81\"}]},"
        "\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},{\"id\":1,\"content\":\"<s>\",\"special\":true},"
        "{\"id\":2,\"content\":\"</s>\",\"special\":true}],"
        "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"byte_fallback\":false,"
        "\"vocab\":{\"<unk>\":0,\"<s>\":1,\"</s>\":2,\"\xE2\x96\x81\":3,\"a\":4,\"b\":5,\"aa\":6,\"ab\":7,"
        "\"\xE2\x96\x81" "a\":8,\"\xE2\x96\x81\xE2\x96\x81\":9},"
        "\"merges\":[\"a b\",\"a a\",[\"\xE2\x96\x81\",\"a\"],\"\xE2\x96\x81 \xE2\x96\x81\"]}}";
    t = load_bytes("small.json", json, strlen(json));
    if (!t) print_error("%s\n", lf_last_error());
    assert_non_null(t);
    assert_true(encodes_to(t, "aab", 0, (int32_t[]){8, 7}, 2, "json aab"));
    assert_true(encodes_to(t, "aaa", 0, (int32_t[]){3, 6, 4}, 3, "json aaa"));
    assert_true(encodes_to(t, " a", 0, (int32_t[]){3, 8}, 2, "json space a"));
    /* no byte fallback: unknown characters become one <unk> per run */
    assert_true(encodes_to(t, "xyz b", 0, (int32_t[]){3, 0, 3, 5}, 4, "json unk"));
    assert_true(decodes_to(t, (int32_t[]){3, 0, 3, 5}, 4, " b", "json unk decode"));
    lf_tokenizer_free(t);
}

/* The newer tokenizer.json layout (Metaspace pre-tokenizer instead of the
 * normalizer, merges as pairs) gives the same ids. */
static void test_json_variants(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    cJSON *j = read_json("tokenizers/llama2/tokenizer.json");
    cJSON_ReplaceItemInObject(j, "normalizer", cJSON_CreateNull());
    cJSON *meta = cJSON_CreateObject();
    cJSON_AddStringToObject(meta, "type", "Metaspace");
    cJSON_AddStringToObject(meta, "replacement", "\xE2\x96\x81");
    cJSON_AddStringToObject(meta, "prepend_scheme", "first");
    cJSON_AddFalseToObject(meta, "split");
    cJSON_ReplaceItemInObject(j, "pre_tokenizer", meta);
    cJSON *merges = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "model"), "merges");
    cJSON *pairs = cJSON_CreateArray();
    const cJSON *e;
    cJSON_ArrayForEach(e, merges) {
        char *sp_ = strchr(e->valuestring, ' ');
        *sp_ = 0;
        const char *two[2] = {e->valuestring, sp_ + 1};
        cJSON_AddItemToArray(pairs, cJSON_CreateStringArray(two, 2));
    }
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(j, "model"), "merges", pairs);
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    lf_tokenizer *t = load_bytes("metaspace.json", text, strlen(text));
    free(text);
    if (!t) print_error("%s\n", lf_last_error());
    assert_non_null(t);
    cJSON *ex = read_json(TV "swift-transformers/tokenizer_tests.json");
    int pass = 0, total = 0;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(ex, "coreml-projects/Llama-2-7b-chat-coreml")) {
        int n;
        int32_t *want = json_ids(cJSON_GetObjectItem(cJSON_GetObjectItem(e, "encoded"), "input_ids"), &n);
        pass += encodes_to(t, cJSON_GetObjectItem(e, "input")->valuestring, LF_TOK_BOS, want, n, "metaspace");
        total++;
        free(want);
    }
    print_message("Metaspace + pair-merges tokenizer.json: %d/%d swift vectors\n", pass, total);
    assert_int_equal(pass, total);
    cJSON_Delete(ex);
    lf_tokenizer_free(t);
}

/* ---- hostile input ---- */

/* Loading must fail with a message naming the file, not crash. */
static void expect_load_error(const char *name, const void *data, size_t n, const char *what) {
    lf_tokenizer *t = load_bytes(name, data, n);
    if (t) {
        print_error("%s: loaded, expected an error\n", what);
        lf_tokenizer_free(t);
        fail();
    }
    const char *e = lf_last_error();
    if (getenv("LF_TEST_VERBOSE")) print_message("  %s -> %s\n", what, e);
    if (!strstr(e, name)) {
        print_error("%s: the error does not name the file: %s\n", what, e);
        fail();
    }
}

static void test_malformed_model(void **state) {
    (void)state;
    /* hand-made: gaps are impossible in a protobuf list, but duplicates,
     * bad types, other model types and missing specials are not */
    const sp base[] = {{"<unk>", 0, 2}, {"<s>", 0, 3}, {"</s>", 0, 3}, {"a", 0, 1}, {"a", 0, 1}};
    buf m = make_model(base, 5, 0, 2);
    expect_load_error("dup.model", m.b, m.n, "duplicate piece");
    assert_non_null(strstr(lf_last_error(), "twice"));
    free(m.b);
    m = make_model(base, 4, 0, 1);
    expect_load_error("unigram.model", m.b, m.n, "unigram model");
    free(m.b);
    const sp nobos[] = {{"<unk>", 0, 2}, {"a", 0, 1}};
    m = make_model(nobos, 2, 0, 2);
    expect_load_error("nobos.model", m.b, m.n, "no <s>");
    free(m.b);
    const sp badtype[] = {{"<unk>", 0, 2}, {"<s>", 0, 3}, {"</s>", 0, 3}, {"x", 0, 9}};
    m = make_model(badtype, 4, 0, 2);
    expect_load_error("type.model", m.b, m.n, "bad piece type");
    free(m.b);
    const sp badbyte[] = {{"<unk>", 0, 2}, {"<s>", 0, 3}, {"</s>", 0, 3}, {"<0xZZ>", 0, 6}};
    m = make_model(badbyte, 4, 0, 2);
    expect_load_error("byte.model", m.b, m.n, "bad byte piece");
    free(m.b);
    const uint8_t garbage[] = {0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01};
    expect_load_error("varint.model", garbage, sizeof garbage, "11-byte varint");
    expect_load_error("group.model", "\x0B\x0C", 2, "group wire type");
    expect_load_error("empty.model", "", 0, "empty file");

    if (!lf_test_shared()) return;
    size_t len;
    char *full = read_text(lf_test_path("tokenizers/llama2/tokenizer.model"), &len);
    /* every truncation is an error: pieces come before the specs */
    size_t cuts[] = {1, 2, 10, 100, 1000, len / 2, len - 200, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++)
        expect_load_error("trunc.model", full, cuts[i], "truncated");
    expect_load_error("trunc.model", full, 1000, "truncated");
    print_message("truncated at 1000 bytes: %s\n", lf_last_error());
    /* random corruption: may load or not, must never crash */
    unsigned seed = 12345;
    int loaded = 0;
    for (int it = 0; it < 60; it++) {
        char *c = malloc(len);
        memcpy(c, full, len);
        for (int j = 0; j < 8; j++) {
            seed = seed * 1103515245u + 12345u;
            size_t pos = (seed >> 8) % (it < 30 ? 4000 : len);
            c[pos] = (char)(seed >> 24);
        }
        lf_tokenizer *t = load_bytes("fuzz.model", c, len);
        if (t) {
            int32_t *ids;
            int n;
            if (lf_tokenize(t, "Hello, wörld 生活 👩‍💻", LF_TOK_BOS, &ids, &n) == 0) free(ids);
            loaded++;
        }
        lf_tokenizer_free(t);
        free(c);
    }
    print_message("60 corrupted tokenizer.model files: %d still loaded, none crashed\n", loaded);
    /* random bytes */
    for (int it = 0; it < 20; it++) {
        uint8_t g[4096];
        for (size_t j = 0; j < sizeof g; j++) {
            seed = seed * 1103515245u + 12345u;
            g[j] = (uint8_t)(seed >> 24);
        }
        lf_tokenizer *t = load_bytes("random.model", g, sizeof g);
        assert_null(t);
    }
    free(full);
}

static void test_malformed_json(void **state) {
    (void)state;
    static const struct {
        const char *what, *json, *expect;
    } cases[] = {
        {"syntax error", "{\"model\": {\"vocab\": {", "invalid JSON"},
        {"not an object", "{\"model\": 3}", "model"},
        {"no vocab", "{\"model\": {\"type\": \"BPE\", \"merges\": []}}", "model.vocab"},
        {"vocab gap", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"<unk>\":0,\"<s>\":1,\"</s>\":3}, \"merges\": []}}", "id 2"},
        {"bad id", "{\"model\": {\"vocab\": {\"<unk>\":0,\"<s>\":-1}, \"merges\": []}}", "not a valid id"},
        {"fractional id", "{\"model\": {\"vocab\": {\"<unk>\":0.5}, \"merges\": []}}", "not a valid id"},
        {"huge id", "{\"model\": {\"vocab\": {\"<unk>\":1e12}, \"merges\": []}}", "not a valid id"},
        {"dup id", "{\"model\": {\"vocab\": {\"<unk>\":0,\"<s>\":1,\"</s>\":1}, \"merges\": []}}", "twice"},
        {"unigram", "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", "BPE"},
        {"no merges", "{\"model\": {\"unk_token\":\"<unk>\",\"vocab\": {\"<unk>\":0,\"<s>\":1,\"</s>\":2}}}", "merges"},
        {"bad merge", "{\"model\": {\"unk_token\":\"<unk>\",\"vocab\": {\"<unk>\":0,\"<s>\":1,\"</s>\":2,\"a\":3}, \"merges\": [\"a b\"]}}", "merges[0]"},
        {"merge format", "{\"model\": {\"unk_token\":\"<unk>\",\"vocab\": {\"<unk>\":0,\"<s>\":1,\"</s>\":2}, \"merges\": [\"ab\"]}}", "merges[0]"},
        {"byte fallback without bytes", "{\"model\": {\"byte_fallback\": true, \"vocab\": {\"<unk>\":0,\"<s>\":1,\"</s>\":2}, \"merges\": []}}", "<0x00>"},
        {"no unk, no bytes", "{\"model\": {\"vocab\": {\"<unk>\":0,\"<s>\":1,\"</s>\":2}, \"merges\": []}}", "unknown"},
        {"nfkc", "{\"normalizer\": {\"type\": \"NFKC\"}, \"model\": {\"unk_token\":\"<unk>\",\"vocab\": {\"<unk>\":0,\"<s>\":1,\"</s>\":2}, \"merges\": []}}", "NFKC"},
        {"byte level", "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"unk_token\":\"<unk>\",\"vocab\": {\"<unk>\":0,\"<s>\":1,\"</s>\":2}, \"merges\": []}}", "ByteLevel"},
        {"added token conflict", "{\"added_tokens\":[{\"id\":1,\"content\":\"<x>\",\"special\":true}], \"model\": {\"unk_token\":\"<unk>\",\"vocab\": {\"<unk>\":0,\"<s>\":1,\"</s>\":2}, \"merges\": []}}", "added token 1"},
        {"unk not in vocab", "{\"model\": {\"unk_token\":\"<zz>\",\"vocab\": {\"<unk>\":0,\"<s>\":1,\"</s>\":2}, \"merges\": []}}", "unk_token"},
        {"top-level array", "  [1, 2]", "not a JSON object"},
        {"top-level object without model", "{}", "model"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        expect_load_error("bad.json", cases[i].json, strlen(cases[i].json), cases[i].what);
        if (!strstr(lf_last_error(), cases[i].expect)) {
            print_error("%s: expected \"%s\" in: %s\n", cases[i].what, cases[i].expect, lf_last_error());
            fail();
        }
    }
    /* a minimal valid one loads (so the cases above fail for their reason) */
    const char *ok = "{\"model\": {\"unk_token\":\"<unk>\",\"vocab\": {\"<unk>\":0,\"<s>\":1,\"</s>\":2}, \"merges\": []}}";
    lf_tokenizer *t = load_bytes("ok.json", ok, strlen(ok));
    assert_non_null(t);
    lf_tokenizer_free(t);

    if (!lf_test_shared()) return;
    /* corrupted copies of the real tokenizer.json must not crash */
    size_t len;
    char *full = read_text(lf_test_path("tokenizers/llama2/tokenizer.json"), &len);
    unsigned seed = 777;
    int loaded = 0;
    for (int it = 0; it < 12; it++) {
        char *c = malloc(len);
        memcpy(c, full, len);
        for (int j = 0; j < 4; j++) {
            seed = seed * 1103515245u + 12345u;
            c[(seed >> 4) % len] = "\"{}[]:,0a\\ "[(seed >> 20) % 11];
        }
        lf_tokenizer *tk = load_bytes("fuzz.json", c, it < 6 ? len : (seed >> 3) % len);
        loaded += tk != NULL;
        lf_tokenizer_free(tk);
        free(c);
    }
    print_message("12 corrupted tokenizer.json files: %d still loaded, none crashed\n", loaded);
    free(full);
}

static void test_load_dir(void **state) {
    (void)state;
    char dir[600];
    snprintf(dir, sizeof dir, "%s/emptydir", lf_test_tmpdir());
    char cmd[700];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    assert_int_equal(system(cmd), 0);
    assert_null(lf_tokenizer_load_dir(dir));
    assert_non_null(strstr(lf_last_error(), "tokenizer.model"));
    assert_null(lf_tokenizer_load(dir)); /* a folder is not a file */
    assert_non_null(strstr(lf_last_error(), dir));
    assert_null(lf_tokenizer_load("/nonexistent/tokenizer.model"));
    assert_non_null(strstr(lf_last_error(), "/nonexistent/tokenizer.model"));
    if (!lf_test_shared()) return;
    /* only tokenizer.json in the folder: it is used */
    snprintf(cmd, sizeof cmd, "cp '%s' '%s/tokenizer.json'",
             lf_test_path("tokenizers/llama2/tokenizer.json"), dir);
    assert_int_equal(system(cmd), 0);
    lf_tokenizer *t = lf_tokenizer_load_dir(dir);
    assert_non_null(t);
    assert_true(encodes_to(t, "Hello world", 0, (int32_t[]){15043, 3186}, 2, "load_dir json"));
    lf_tokenizer_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llamacpp_vectors),
        cmocka_unit_test(test_swift_vectors),
        cmocka_unit_test(test_llama_encoded),
        cmocka_unit_test(test_multilingual),
        cmocka_unit_test(test_fixture_prompts),
        cmocka_unit_test(test_fixture_training),
        cmocka_unit_test(test_empty_and_flags),
        cmocka_unit_test(test_special_split),
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_byte_fallback),
        cmocka_unit_test(test_chat_prompt),
        cmocka_unit_test(test_speed),
        cmocka_unit_test(test_small_model),
        cmocka_unit_test(test_json_variants),
        cmocka_unit_test(test_malformed_model),
        cmocka_unit_test(test_malformed_json),
        cmocka_unit_test(test_load_dir),
    };
    return cmocka_run_group_tests_name("tokenizer", tests, setup, teardown);
}
