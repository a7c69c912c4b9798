/* fuzz_st_index: model.safetensors.index.json through
 * lf_safetensors_read_index, in a folder holding two small valid shards
 * ("model-00001-of-00002.safetensors": a, b; "...00002...": c) and one
 * file that is not a safetensors file ("junk.safetensors"). */
#include "fuzz.h"
#include "../src/io/tensorset.h"

static const char *dir;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    dir = fuzz_dir();
    static const float a[4] = {1, 2, 3, 4}, c[2] = {5, 6};
    static const int64_t b = 7;
    lf_tensor_desc s1[] = {{"a", LF_F32, 2, {2, 2}, a}, {"b", LF_I64, 0, {0}, &b}};
    lf_tensor_desc s2[] = {{"c", LF_F32, 1, {2}, c}};
    char p[512];
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    if (lf_write_safetensors(p, s1, 2, NULL, 0) != 0) fuzz_die(p);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    if (lf_write_safetensors(p, s2, 1, NULL, 0) != 0) fuzz_die(p);
    fuzz_write(dir, "junk.safetensors", "\x08\0\0\0\0\0\0\0{\"a\":1} ", 16);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_write(dir, "model.safetensors.index.json", data, size);
    char p[512];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    lf_tensorset s;
    lf_tensorset_init(&s);
    lf_set_error("%s", "");
    if (lf_safetensors_read_index(p, &s) == 0) {
        FUZZ_CHECK(s.n >= 1 && s.n <= 3 && s.npaths >= 1 && s.npaths <= 2);
        for (int i = 0; i < s.npaths; i++) FUZZ_CHECK(!strncmp(s.paths[i], dir, strlen(dir)));
    } else {
        fuzz_check_error();
        FUZZ_CHECK(s.n == 0 && s.nmaps == 0 && s.npaths == 0);
    }
    lf_tensorset_free(&s);
    return 0;
}
