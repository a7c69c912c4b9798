/* test_safetensors.c: safetensors reading (fixtures, sharded models, hostile
 * files) and writing (round trips of every dtype, with metadata). */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------- helpers ---------------- */

/* "<tmpdir>/<name>" in one of a few rotating buffers. */
static const char *tmp(const char *name) {
    static char buf[8][512];
    static int slot;
    char *b = buf[slot++ % 8];
    snprintf(b, sizeof buf[0], "%s/%s", lf_test_tmpdir(), name);
    return b;
}

static void put_le64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* A safetensors file with the given header length field, header text and
 * data_len bytes of data (byte i = i & 0xff). */
static const char *raw_file_len(const char *name, uint64_t len_field, const char *json, size_t data_len) {
    size_t hl = strlen(json);
    unsigned char *b = malloc(8 + hl + data_len);
    assert_non_null(b);
    put_le64(b, len_field);
    memcpy(b + 8, json, hl);
    for (size_t i = 0; i < data_len; i++) b[8 + hl + i] = (unsigned char)i;
    const char *p = tmp(name);
    lf_test_write_file(p, b, 8 + hl + data_len);
    free(b);
    return p;
}

static const char *raw_file(const char *name, const char *json, size_t data_len) {
    return raw_file_len(name, strlen(json), json, data_len);
}

/* The error message must contain every needle (NULL-terminated list). */
static void check_error_has(const char *what, const char *const *needles) {
    const char *err = lf_last_error();
    for (int i = 0; needles[i]; i++) {
        if (!strstr(err, needles[i])) {
            print_error("%s: error message lacks \"%s\":\n  %s\n", what, needles[i], err);
            fail();
        }
    }
}

/* Reading path must fail, leave the set empty, and name the file (its base
 * name) and every needle. */
static void expect_read_fail(const char *path, int index, const char *n1, const char *n2) {
    lf_tensorset s;
    lf_tensorset_init(&s);
    int rc = index ? lf_safetensors_read_index(path, &s) : lf_safetensors_read(path, &s);
    if (rc != -1) {
        print_error("%s: read succeeded, expected an error\n", path);
        fail();
    }
    if (getenv("LF_TEST_VERBOSE")) print_message("  -> %s\n", lf_last_error());
    assert_int_equal(s.n, 0);
    assert_int_equal(s.nmaps, 0);
    assert_int_equal(s.npaths, 0);
    assert_int_equal(s.nmeta, 0);
    const char *base = strrchr(path, '/');
    const char *needles[] = {base ? base + 1 : path, n1, n2, NULL};
    if (!n1) needles[1] = NULL;
    else if (!n2) needles[2] = NULL;
    check_error_has(path, needles);
    lf_tensorset_free(&s);
}

/* Every tensor's data lies inside one of the set's mappings (not copied). */
static void assert_all_mapped(const lf_tensorset *s) {
    assert_int_equal(s->nowned, 0);
    for (int i = 0; i < s->n; i++) {
        const char *d = s->tensors[i].data;
        int inside = 0;
        for (int m = 0; m < s->nmaps; m++) {
            const char *a = s->maps[m].addr;
            if (d >= a && d + s->tensors[i].nbytes <= a + s->maps[m].size) inside = 1;
        }
        if (!inside) {
            print_error("tensor '%s' data is not inside a file mapping\n", s->tensors[i].name);
            fail();
        }
    }
}

static void assert_shape(const lf_tensor *t, lf_dtype dt, int ndim, int64_t d0, int64_t d1) {
    assert_non_null(t);
    assert_int_equal(t->dtype, dt);
    assert_int_equal(t->ndim, ndim);
    if (ndim > 0) assert_int_equal(t->shape[0], d0);
    if (ndim > 1) assert_int_equal(t->shape[1], d1);
}

/* ---------------- fixtures ---------------- */

static void test_fixture_base(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    lf_tensorset s;
    lf_tensorset_init(&s);
    const char *p = lf_test_path("fixtures/tiny-loraflow/base/model.safetensors");
    if (lf_safetensors_read(p, &s) != 0) { print_error("%s\n", lf_last_error()); fail(); }
    assert_int_equal(s.n, 30); /* embed, lm_head, norm + 3 layers x 9 */
    assert_int_equal(s.nmaps, 1);
    assert_int_equal(s.npaths, 1);
    assert_string_equal(s.paths[0], p);
    assert_string_equal(lf_tensorset_meta(&s, "format"), "pt");
    for (int i = 0; i < s.n; i++) {
        assert_int_equal(s.tensors[i].dtype, LF_F32);
        assert_int_equal(s.tensors[i].source, 0);
        assert_int_equal(s.tensors[i].nbytes, (size_t)lf_tensor_numel(&s.tensors[i]) * 4);
    }
    assert_all_mapped(&s);

    const lf_tensor *t = lf_tensorset_find(&s, "lm_head.weight");
    assert_shape(t, LF_F32, 2, 32000, 64);
    const float *f = t->data;
    assert_true(f[0] == 0.1106007844209671f && f[1] == -0.20772424340248108f && f[2] == -0.5532985329627991f);
    assert_shape(lf_tensorset_find(&s, "model.embed_tokens.weight"), LF_F32, 2, 32000, 64);
    assert_shape(lf_tensorset_find(&s, "model.layers.2.mlp.down_proj.weight"), LF_F32, 2, 64, 176);
    assert_shape(lf_tensorset_find(&s, "model.layers.0.mlp.up_proj.weight"), LF_F32, 2, 176, 64);
    t = lf_tensorset_find(&s, "model.norm.weight");
    assert_shape(t, LF_F32, 1, 64, 0);
    f = t->data;
    assert_true(f[0] == 0.996103823184967f && f[1] == 1.0436416864395142f && f[2] == 0.9010373950004578f);
    t = lf_tensorset_find(&s, "model.layers.1.self_attn.q_proj.weight");
    assert_shape(t, LF_F32, 2, 64, 64);
    f = t->data;
    assert_true(f[0] == -0.13377098739147186f && f[1] == -0.2443094551563263f);
    assert_null(lf_tensorset_find(&s, "__metadata__"));
    lf_tensorset_free(&s);
}

static void test_fixture_expected(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    lf_tensorset s;
    lf_tensorset_init(&s);
    /* Several files into one set: sources tell them apart. */
    assert_int_equal(lf_safetensors_read(lf_test_path("fixtures/tiny-loraflow/expected/inputs.safetensors"), &s), 0);
    assert_int_equal(lf_safetensors_read(lf_test_path("fixtures/tiny-loraflow/expected/train.safetensors"), &s), 0);
    assert_int_equal(lf_safetensors_read(lf_test_path("fixtures/tiny-loraflow/expected/logits.safetensors"), &s), 0);
    assert_int_equal(s.n, 3 + 20 + 154);
    assert_int_equal(s.npaths, 3);
    assert_int_equal(s.nmeta, 1); /* "format" kept once */
    assert_all_mapped(&s);

    const lf_tensor *t = lf_tensorset_find(&s, "prompt.en.input_ids");
    assert_shape(t, LF_I64, 1, 13, 0);
    assert_int_equal(t->source, 0);
    const int64_t *ids = t->data;
    const int64_t want[] = {1, 450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278, 17366, 11203, 29889};
    for (int i = 0; i < 13; i++) assert_int_equal(ids[i], want[i]);

    t = lf_tensorset_find(&s, "batch.input_ids");
    assert_shape(t, LF_I64, 2, 2, 68);
    assert_int_equal(t->source, 1);
    ids = t->data;
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], 518);
    assert_int_equal(ids[2], 25580);
    t = lf_tensorset_find(&s, "single.loss");
    assert_shape(t, LF_F32, 1, 1, 0);
    assert_true(*(const float *)t->data == 23.55035400390625f);
    t = lf_tensorset_find(&s, "chat.base.layer_inputs");
    assert_non_null(t);
    assert_int_equal(t->ndim, 3);
    assert_int_equal(t->shape[0], 4);
    assert_int_equal(t->shape[2], 64);
    assert_int_equal(t->source, 2);

    /* The same file again: every name is already in the set. */
    const char *again = lf_test_path("fixtures/tiny-loraflow/expected/inputs.safetensors");
    assert_int_equal(lf_safetensors_read(again, &s), -1);
    const char *needles[] = {"inputs.safetensors", "is also in", NULL};
    check_error_has("reading a file twice", needles);
    assert_int_equal(s.n, 177);
    assert_int_equal(s.npaths, 3);
    lf_tensorset_free(&s);
}

/* ---------------- writing ---------------- */

static void test_roundtrip_all_dtypes(void **state) {
    (void)state;
    float f32[6] = {1.5f, -2.25f, 3.0f, 0.0f, -0.0f, 1e-30f};
    uint16_t f16[3] = {0x3c00, 0xc000, 0x7bff};
    uint16_t bf16[5] = {0x3f80, 0xbf80, 0x4049, 0x0001, 0x7f80};
    int64_t i64[4] = {1, -2, INT64_MAX, INT64_MIN};
    int32_t i32[4] = {7, -8, INT32_MAX, INT32_MIN};
    float scalar = 42.0f;
    const char *odd = "w\"ei\\rd\n name \xc3\xa9";
    lf_tensor_desc d[] = {
        {"half", LF_F16, 1, {3}, f16},  /* 6 bytes: an odd size before the wider ones */
        {"a.f32", LF_F32, 2, {2, 3}, f32},
        {"b.bf16", LF_BF16, 2, {1, 5}, bf16},
        {"ids", LF_I64, 1, {4}, i64},
        {"i32", LF_I32, 2, {2, 2}, i32},
        {"scalar", LF_F32, 0, {0}, &scalar},
        {"empty", LF_I64, 2, {0, 3}, NULL},
        {odd, LF_F32, 1, {1}, &scalar},
    };
    const int n = (int)(sizeof d / sizeof d[0]);
    const char *meta[] = {"temperature", "1.5", "note", "quote \" and \\ ok"};
    const char *p = tmp("rt.safetensors");
    if (lf_write_safetensors(p, d, n, meta, 2) != 0) { print_error("%s\n", lf_last_error()); fail(); }

    /* The data section starts 8-aligned. */
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    unsigned char len[8];
    assert_int_equal(fread(len, 1, 8, f), 8);
    fclose(f);
    assert_int_equal(len[0] % 8, 0);

    lf_tensorset s;
    lf_tensorset_init(&s);
    if (lf_safetensors_read(p, &s) != 0) { print_error("%s\n", lf_last_error()); fail(); }
    assert_int_equal(s.n, n);
    assert_all_mapped(&s); /* aligned, so nothing was copied */
    for (int i = 0; i < n; i++) {
        /* Entries keep the given order. */
        assert_string_equal(s.tensors[i].name, d[i].name);
        const lf_tensor *t = &s.tensors[i];
        assert_int_equal(t->dtype, d[i].dtype);
        assert_int_equal(t->ndim, d[i].ndim);
        for (int k = 0; k < t->ndim; k++) assert_int_equal(t->shape[k], d[i].shape[k]);
        assert_int_equal((uintptr_t)t->data % lf_dtype_size(t->dtype), 0);
        if (t->nbytes) assert_memory_equal(t->data, d[i].data, t->nbytes);
    }
    assert_int_equal(lf_tensorset_find(&s, "empty")->nbytes, 0);
    assert_int_equal(lf_tensorset_find(&s, "scalar")->nbytes, 4);
    assert_string_equal(lf_tensorset_meta(&s, "temperature"), "1.5");
    assert_string_equal(lf_tensorset_meta(&s, "note"), "quote \" and \\ ok");
    assert_string_equal(lf_tensorset_meta(&s, "format"), "pt");
    assert_int_equal(s.nmeta, 3);

    /* Write the set back through the internal writer: same content. */
    lf_kv kv[] = {{"format", "custom"}};
    const char *p2 = tmp("rt2.safetensors");
    assert_int_equal(lf_safetensors_write(p2, s.tensors, s.n, kv, 1), 0);
    lf_tensorset s2;
    lf_tensorset_init(&s2);
    assert_int_equal(lf_safetensors_read(p2, &s2), 0);
    assert_int_equal(s2.n, n);
    assert_string_equal(lf_tensorset_meta(&s2, "format"), "custom");
    assert_int_equal(s2.nmeta, 1);
    for (int i = 0; i < n; i++) {
        assert_string_equal(s2.tensors[i].name, s.tensors[i].name);
        assert_int_equal(s2.tensors[i].nbytes, s.tensors[i].nbytes);
        if (s.tensors[i].nbytes)
            assert_memory_equal(s2.tensors[i].data, s.tensors[i].data, s.tensors[i].nbytes);
    }
    lf_tensorset_free(&s2);
    lf_tensorset_free(&s);

    /* No tensors at all is a valid file. */
    const char *p3 = tmp("none.safetensors");
    assert_int_equal(lf_write_safetensors(p3, NULL, 0, NULL, 0), 0);
    lf_tensorset_init(&s);
    assert_int_equal(lf_safetensors_read(p3, &s), 0);
    assert_int_equal(s.n, 0);
    assert_string_equal(lf_tensorset_meta(&s, "format"), "pt");
    lf_tensorset_free(&s);
}

static void test_write_errors(void **state) {
    (void)state;
    float x[2] = {1, 2};
    const char *p = tmp("bad-write.safetensors");
    lf_tensor_desc dup[] = {{"a", LF_F32, 1, {2}, x}, {"a", LF_F32, 1, {2}, x}};
    assert_int_equal(lf_write_safetensors(p, dup, 2, NULL, 0), -1);
    const char *n1[] = {"bad-write.safetensors", "'a' given twice", NULL};
    check_error_has("duplicate names", n1);

    lf_tensor_desc bad_dtype[] = {{"a", (lf_dtype)99, 1, {2}, x}};
    assert_int_equal(lf_write_safetensors(p, bad_dtype, 1, NULL, 0), -1);
    const char *n2[] = {"tensor 'a'", "unknown dtype 99", NULL};
    check_error_has("bad dtype", n2);

    lf_tensor_desc no_data[] = {{"a", LF_F32, 1, {2}, NULL}};
    assert_int_equal(lf_write_safetensors(p, no_data, 1, NULL, 0), -1);
    lf_tensor_desc neg[] = {{"a", LF_F32, 1, {-2}, x}};
    assert_int_equal(lf_write_safetensors(p, neg, 1, NULL, 0), -1);
    lf_tensor_desc meta_name[] = {{"__metadata__", LF_F32, 1, {2}, x}};
    assert_int_equal(lf_write_safetensors(p, meta_name, 1, NULL, 0), -1);
    lf_tensor_desc ok[] = {{"a", LF_F32, 1, {2}, x}};
    const char *dup_meta[] = {"k", "1", "k", "2"};
    assert_int_equal(lf_write_safetensors(p, ok, 1, dup_meta, 2), -1);
    const char *n3[] = {"metadata key 'k' given twice", NULL};
    check_error_has("duplicate metadata", n3);
    /* Nothing was left behind by the failed writes. */
    assert_int_equal(access(p, F_OK), -1);
}

/* A misaligned tensor (header length not a multiple of 4) is still read
 * correctly, through an aligned copy. */
static void test_misaligned_copy(void **state) {
    (void)state;
    const char *json = "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}} ";
    assert_int_not_equal(strlen(json) % 4, 0);
    float v[2] = {3.5f, -1.0f};
    size_t hl = strlen(json);
    unsigned char b[128];
    put_le64(b, hl);
    memcpy(b + 8, json, hl);
    memcpy(b + 8 + hl, v, 8);
    const char *p = tmp("misaligned.safetensors");
    lf_test_write_file(p, b, 8 + hl + 8);
    lf_tensorset s;
    lf_tensorset_init(&s);
    assert_int_equal(lf_safetensors_read(p, &s), 0);
    const lf_tensor *t = lf_tensorset_find(&s, "t");
    assert_non_null(t);
    assert_int_equal((uintptr_t)t->data % 4, 0);
    assert_memory_equal(t->data, v, 8);
    assert_int_equal(s.nowned, 1);
    lf_tensorset_free(&s);
}

/* ---------------- sharded models ---------------- */

static void write_index(const char *path, const char *weight_map_json) {
    char buf[1024];
    snprintf(buf, sizeof buf, "{\"metadata\": {\"total_size\": 40}, \"weight_map\": %s}\n", weight_map_json);
    lf_test_write_file(path, buf, strlen(buf));
}

static void make_shards(void) {
    float a[4] = {1, 2, 3, 4}, b[2] = {5, 6}, c[4] = {7, 8, 9, 10};
    lf_tensor_desc s1[] = {{"a", LF_F32, 2, {2, 2}, a}, {"b", LF_F32, 1, {2}, b}};
    lf_tensor_desc s2[] = {{"c", LF_BF16, 1, {4}, c}};
    assert_int_equal(lf_write_safetensors(tmp("model-00001-of-00002.safetensors"), s1, 2, NULL, 0), 0);
    assert_int_equal(lf_write_safetensors(tmp("model-00002-of-00002.safetensors"), s2, 1, NULL, 0), 0);
}

static void test_sharded(void **state) {
    (void)state;
    make_shards();
    const char *idx = tmp("model.safetensors.index.json");
    write_index(idx, "{\"a\": \"model-00001-of-00002.safetensors\", \"c\": \"model-00002-of-00002.safetensors\","
                     " \"b\": \"model-00001-of-00002.safetensors\"}");
    lf_tensorset s;
    lf_tensorset_init(&s);
    if (lf_safetensors_read_index(idx, &s) != 0) { print_error("%s\n", lf_last_error()); fail(); }
    assert_int_equal(s.n, 3);
    assert_int_equal(s.npaths, 2);
    assert_int_equal(s.nmaps, 2);
    assert_all_mapped(&s);
    const lf_tensor *a = lf_tensorset_find(&s, "a"), *b = lf_tensorset_find(&s, "b"),
                    *c = lf_tensorset_find(&s, "c");
    assert_shape(a, LF_F32, 2, 2, 2);
    assert_shape(b, LF_F32, 1, 2, 0);
    assert_shape(c, LF_BF16, 1, 4, 0);
    assert_true(((const float *)a->data)[3] == 4.0f);
    assert_true(((const float *)b->data)[1] == 6.0f);
    assert_int_equal(a->source, b->source);
    assert_int_not_equal(a->source, c->source);
    assert_non_null(strstr(s.paths[c->source], "model-00002-of-00002.safetensors"));
    lf_tensorset_free(&s);
}

static void test_index_errors(void **state) {
    (void)state;
    make_shards();
    const char *idx = tmp("bad.index.json");

    write_index(idx, "{\"a\": \"model-00001-of-00002.safetensors\", \"z\": \"nope.safetensors\"}");
    expect_read_fail(idx, 1, "nope.safetensors", "cannot open");

    write_index(idx, "{\"a\": \"../x\"}");
    expect_read_fail(idx, 1, "'../x'", "no '/' or '..'");
    write_index(idx, "{\"a\": \"/etc/passwd\"}");
    expect_read_fail(idx, 1, "/etc/passwd", "plain file names");

    /* b is in shard 1, not in shard 2 where the index says it is. */
    write_index(idx, "{\"a\": \"model-00001-of-00002.safetensors\", \"b\": \"model-00002-of-00002.safetensors\"}");
    expect_read_fail(idx, 1, "tensor 'b'", "but it is in");

    /* A tensor neither shard holds. */
    write_index(idx, "{\"a\": \"model-00001-of-00002.safetensors\", \"q\": \"model-00002-of-00002.safetensors\"}");
    expect_read_fail(idx, 1, "tensor 'q' to shard 'model-00002-of-00002.safetensors'", "does not contain it");

    /* The same tensor in two shards. */
    float x[2] = {1, 2};
    lf_tensor_desc again[] = {{"a", LF_F32, 1, {2}, x}};
    assert_int_equal(lf_write_safetensors(tmp("other.safetensors"), again, 1, NULL, 0), 0);
    write_index(idx, "{\"a\": \"model-00001-of-00002.safetensors\", \"x\": \"other.safetensors\"}");
    expect_read_fail(idx, 1, "tensor 'a' is also in", "model-00001-of-00002.safetensors");

    write_index(idx, "{\"a\": \"model-00001-of-00002.safetensors\", \"a\": \"model-00002-of-00002.safetensors\"}");
    expect_read_fail(idx, 1, "names tensor 'a' twice", NULL);
    write_index(idx, "{}");
    expect_read_fail(idx, 1, "'weight_map'", "non-empty");
    write_index(idx, "{\"a\": 3}");
    expect_read_fail(idx, 1, "tensor 'a' must map to a shard", "found 3");
    lf_test_write_file(idx, "{\"weight_map\": ", 15);
    expect_read_fail(idx, 1, "not valid JSON", NULL);
    lf_test_write_file(idx, "{\"x\": 1}", 8);
    expect_read_fail(idx, 1, "field 'weight_map' missing", NULL);
}

/* ---------------- hostile single files ---------------- */

static void test_short_files(void **state) {
    (void)state;
    const char *p = tmp("empty.safetensors");
    lf_test_write_file(p, "", 0);
    expect_read_fail(p, 0, "0 bytes", "too short");
    p = tmp("five.safetensors");
    lf_test_write_file(p, "abcde", 5);
    expect_read_fail(p, 0, "5 bytes", "too short");
    expect_read_fail(tmp("does-not-exist.safetensors"), 0, "cannot open", NULL);
}

static void test_header_length(void **state) {
    (void)state;
    const char *json = "{}";
    expect_read_fail(raw_file_len("beyond.safetensors", 1000, json, 10), 0,
                     "header length 1000 runs past the end of the file", "12 bytes follow");
    expect_read_fail(raw_file_len("huge.safetensors", (uint64_t)1 << 63, json, 10), 0,
                     "header length 9223372036854775808", "past the end");
    expect_read_fail(raw_file_len("max.safetensors", UINT64_MAX, json, 0), 0,
                     "header length 18446744073709551615", NULL);

    /* A header above the limit in a (sparse) file long enough to hold it. */
    const char *p = raw_file_len("limit.safetensors", 100000001ull, "{", 0);
    assert_int_equal(truncate(p, 8 + 100000001 + 16), 0);
    expect_read_fail(p, 0, "header length 100000001", "exceeds the limit of 100000000 bytes");
    unlink(p);
}

typedef struct {
    const char *what;
    const char *json;
    size_t data;
    const char *n1, *n2;
} bad_case;

static void test_bad_headers(void **state) {
    (void)state;
    static const bad_case cases[] = {
        {"not JSON", "{not json", 0, "header is not valid JSON", NULL},
        {"empty header", "", 0, "header is not valid JSON", NULL},
        {"array header", "[1, 2]", 0, "header must be a JSON object", "found an array"},
        {"string header", "\"x\"", 0, "header must be a JSON object", "found a string"},
        {"trailing bytes", "{} x", 0, "unexpected bytes after the JSON object", NULL},
        {"entry not object", "{\"t\": 5}", 0, "tensor 't'", "must be a JSON object, found 5"},
        {"missing data_offsets", "{\"t\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4,
         "tensor 't'", "field 'data_offsets' missing"},
        {"missing dtype", "{\"t\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
         "tensor 't'", "field 'dtype' missing"},
        {"missing shape", "{\"t\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4,
         "tensor 't'", "field 'shape' missing"},
        {"repeated field", "{\"t\": {\"dtype\": \"F32\", \"dtype\": \"I64\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
         "tensor 't'", "field 'dtype' appears twice"},
        {"bad dtype", "{\"t\": {\"dtype\": \"F64\", \"shape\": [1], \"data_offsets\": [0, 8]}}", 8,
         "tensor 't'", "unsupported dtype 'F64'"},
        {"dtype not string", "{\"t\": {\"dtype\": 5, \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
         "tensor 't'", "'dtype' must be a string, found 5"},
        {"negative dim", "{\"t\": {\"dtype\": \"F32\", \"shape\": [2, -1], \"data_offsets\": [0, 4]}}", 4,
         "tensor 't'", "shape[1] must be a non-negative integer, found -1"},
        {"fractional dim", "{\"t\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", 4,
         "tensor 't'", "shape[0] must be a non-negative integer, found 1.5"},
        {"string dim", "{\"t\": {\"dtype\": \"F32\", \"shape\": [\"2\"], \"data_offsets\": [0, 8]}}", 8,
         "tensor 't'", "found \"2\""},
        {"shape not array", "{\"t\": {\"dtype\": \"F32\", \"shape\": 4, \"data_offsets\": [0, 16]}}", 16,
         "tensor 't'", "'shape' must be an array"},
        {"too many dims", "{\"t\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 4]}}", 4,
         "tensor 't'", "9 dimensions, at most 8"},
        {"shape overflow", "{\"t\": {\"dtype\": \"F32\", \"shape\": [1099511627776, 1099511627776, 1099511627776], \"data_offsets\": [0, 4]}}", 4,
         "tensor 't'", "F32 [1099511627776, 1099511627776, 1099511627776] is too large"},
        {"huge dim", "{\"t\": {\"dtype\": \"F32\", \"shape\": [1e300], \"data_offsets\": [0, 4]}}", 4,
         "tensor 't'", "shape[0] must be a non-negative integer"},
        {"offsets beyond data", "{\"t\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]}}", 8,
         "tensor 't'", "data_offsets [8, 16] run past the data section of 8 bytes"},
        {"end before begin", "{\"t\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 4]}}", 8,
         "tensor 't'", "data_offsets [8, 4] end before they begin"},
        {"offsets vs shape", "{\"lm_head.weight\": {\"dtype\": \"F32\", \"shape\": [32], \"data_offsets\": [100, 200]}}", 300,
         "tensor 'lm_head.weight'", "data_offsets [100, 200] give 100 bytes, expected 128 for F32 [32]"},
        {"one offset", "{\"t\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", 4,
         "tensor 't'", "'data_offsets' must be [begin, end]"},
        {"negative offset", "{\"t\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}}", 4,
         "tensor 't'", "'data_offsets' must be [begin, end]"},
        {"overlap", "{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]},"
                    " \"b\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [8, 24]}}", 24,
         "tensors 'a' [0, 16] and 'b' [8, 24] overlap", NULL},
        {"nested overlap", "{\"a\": {\"dtype\": \"F32\", \"shape\": [8], \"data_offsets\": [0, 32]},"
                           " \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]},"
                           " \"c\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [12, 16]}}", 32,
         "'a' [0, 32] and 'b' [4, 8] overlap", NULL},
        {"duplicate names", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
                            " \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 8,
         "tensor 'a' appears twice", NULL},
        {"truncated data", "{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]},"
                           " \"b\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [16, 32]}}", 20,
         "tensor 'b'", "run past the data section of 20 bytes"},
        {"metadata not object", "{\"__metadata__\": [1]}", 0, "'__metadata__' must be an object", NULL},
        {"metadata value", "{\"__metadata__\": {\"format\": \"pt\", \"x\": 1}}", 0,
         "'__metadata__' value of 'x' must be a string", "found 1"},
        {"metadata twice", "{\"__metadata__\": {}, \"__metadata__\": {}}", 0, "'__metadata__' appears twice", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "bad-%zu.safetensors", i);
        print_message("case: %s\n", cases[i].what);
        expect_read_fail(raw_file(name, cases[i].json, cases[i].data), 0, cases[i].n1, cases[i].n2);
    }
}

/* Holes between tensors, trailing bytes and space padding are accepted;
 * empty tensors may sit anywhere. */
static void test_lenient_layouts(void **state) {
    (void)state;
    const char *json =
        "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]},"
        " \"e\": {\"dtype\": \"F32\", \"shape\": [0, 5], \"data_offsets\": [10, 10]},"
        " \"b\": {\"dtype\": \"I32\", \"shape\": [], \"data_offsets\": [0, 4]}}       ";
    lf_tensorset s;
    lf_tensorset_init(&s);
    assert_int_equal(lf_safetensors_read(raw_file("holes.safetensors", json, 40), &s), 0);
    assert_int_equal(s.n, 3);
    const lf_tensor *b = lf_tensorset_find(&s, "b");
    assert_int_equal(b->ndim, 0);
    assert_int_equal(b->nbytes, 4);
    assert_int_equal(lf_tensorset_find(&s, "e")->nbytes, 0);
    lf_tensorset_free(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_base),
        cmocka_unit_test(test_fixture_expected),
        cmocka_unit_test(test_roundtrip_all_dtypes),
        cmocka_unit_test(test_write_errors),
        cmocka_unit_test(test_misaligned_copy),
        cmocka_unit_test(test_sharded),
        cmocka_unit_test(test_index_errors),
        cmocka_unit_test(test_short_files),
        cmocka_unit_test(test_header_length),
        cmocka_unit_test(test_bad_headers),
        cmocka_unit_test(test_lenient_layouts),
    };
    return cmocka_run_group_tests_name("safetensors", tests, NULL, NULL);
}
