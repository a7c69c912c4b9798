/* fuzz_tokenizer_load: tokenizer.model (protobuf) or tokenizer.json through
 * lf_tokenizer_load (the format is chosen from the content, as for real
 * files).  A tokenizer that loads is then used: a few texts are encoded with
 * every flag combination and decoded, and every id (up to a bound) is
 * decoded on its own. */
#include "fuzz.h"

static int fd = -1;

static const char *const texts[] = {
    "", " ", "  a  b ", "Hello world", "<s>x</s> y", "\xff\xfe\x80", "\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80",
    "\xe2\x96\x81", "<0x41>", "\n\t", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
};

static void use(const lf_tokenizer *t) {
    int V = lf_tokenizer_vocab_size(t);
    FUZZ_CHECK(V > 0);
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        for (int flags = 0; flags < 8; flags++) {
            int32_t *ids = NULL;
            int n = -1;
            FUZZ_CHECK(lf_tokenize(t, texts[i], flags, &ids, &n) == 0);
            FUZZ_CHECK(ids && n >= 0);
            for (int k = 0; k < n; k++) FUZZ_CHECK(ids[k] >= 0 && ids[k] < V);
            char *s = lf_detokenize(t, ids, n);
            FUZZ_CHECK(s);
            free(s);
            free(ids);
        }
    }
    char buf[16];
    int lim = V < 4096 ? V : 4096;
    for (int id = 0; id < lim; id++) {
        FUZZ_CHECK(lf_tokenizer_piece(t, id) != NULL);
        int n = lf_token_bytes(t, id, buf, (int)sizeof buf);
        FUZZ_CHECK(n >= 0 && n <= (int)sizeof buf);
        char *s = lf_detokenize(t, &id, 1);
        FUZZ_CHECK(s);
        free(s);
    }
    int32_t bad[2] = {V, -1};
    FUZZ_CHECK(lf_detokenize(t, bad, 1) == NULL && lf_detokenize(t, bad + 1, 1) == NULL);
    FUZZ_CHECK(lf_token_bytes(t, V, buf, (int)sizeof buf) == -1);
    FUZZ_CHECK(lf_tokenizer_piece(t, V) == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    fuzz_memfile(&fd, path, sizeof path, data, size);
    lf_set_error("%s", "");
    lf_tokenizer *t = lf_tokenizer_load(path);
    if (t) {
        use(t);
        lf_tokenizer_free(t);
    } else {
        fuzz_check_error();
    }
    return 0;
}
