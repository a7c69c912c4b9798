/* fuzz_jsonl: the training-data reader (lf_dataset_load) on arbitrary
 * bytes, with a small built-in tokenizer so that text lines (query/response,
 * data, question/answer, text, per-line system) are built too.  A data set
 * that is read must hold well-formed examples. */
#define LF_FUZZ_NO_MODEL
#include "fuzz.h"
#include "tok_build.h"
#include "../src/tokenizer/tokenizer_internal.h"

static int fd = -1;
static lf_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    char *json = tb_json(1, 1, 1);
    int se = 0;
    tok = lf_tok_read_hf_json(json, strlen(json), "built-in tokenizer.json", &se);
    free(json);
    if (!tok) fuzz_die("built-in tokenizer.json");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    fuzz_memfile(&fd, path, sizeof path, data, size);
    lf_set_error("%s", "");
    /* byte 0 picks the system prompt and the length cut */
    const char *system = size && (data[0] & 1) ? "be brief" : NULL;
    const int max_len = size && (data[0] & 2) ? 8 : 4096;
    lf_dataset *d = lf_dataset_load(path, tok, system, max_len);
    if (!d) {
        fuzz_check_error();
        return 0;
    }
    FUZZ_CHECK(lf_dataset_size(d) > 0);
    for (int i = 0; i < lf_dataset_size(d); i++) {
        const lf_example *ex = lf_dataset_get(d, i);
        FUZZ_CHECK(ex && ex->n >= 2 && ex->n <= max_len);
        for (int t = 0; t < ex->n; t++) {
            FUZZ_CHECK(ex->ids[t] >= 0);
            FUZZ_CHECK(ex->labels[t] == -100 || ex->labels[t] >= 0);
        }
        FUZZ_CHECK(lf_example_label_count(ex) < ex->n);
    }
    lf_dataset_free(d);
    return 0;
}
