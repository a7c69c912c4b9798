/* test_config.c: reading Hugging Face LlamaForCausalLM config.json files. */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Writes json to "<tmpdir>/config.json" and returns the path. */
static const char *write_config(const char *json) {
    static char path[512];
    snprintf(path, sizeof path, "%s/config.json", lf_test_tmpdir());
    lf_test_write_file(path, json, strlen(json));
    return path;
}

static void read_ok(const char *json, lf_config *c) {
    memset(c, 0x5a, sizeof *c);
    if (lf_config_read(write_config(json), c) != 0) {
        print_error("config should be accepted: %s\n", lf_last_error());
        fail();
    }
}

/* The config must be refused with a message naming config.json and holding
 * both needles; the output struct must stay untouched. */
static void read_fail(const char *json, const char *n1, const char *n2) {
    lf_config c;
    memset(&c, 0x5a, sizeof c);
    lf_config before = c;
    if (lf_config_read(write_config(json), &c) != -1) {
        print_error("config should be refused (expected \"%s\"):\n%s\n", n1, json);
        fail();
    }
    assert_memory_equal(&c, &before, sizeof c);
    const char *err = lf_last_error();
    if (getenv("LF_TEST_VERBOSE")) print_message("  -> %s\n", err);
    const char *needles[] = {"config.json: ", n1, n2};
    for (int i = 0; i < 3; i++) {
        if (needles[i] && !strstr(err, needles[i])) {
            print_error("error lacks \"%s\":\n  %s\n", needles[i], err);
            fail();
        }
    }
}

/* The required fields of a small valid config, to splice others after. */
#define BASE_FIELDS                                                                      \
    "\"hidden_size\": 64, \"intermediate_size\": 176, \"num_hidden_layers\": 3, "        \
    "\"num_attention_heads\": 4, \"vocab_size\": 32000"

static void test_fixture(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    lf_config c;
    const char *p = lf_test_path("fixtures/tiny-loraflow/base/config.json");
    if (lf_config_read(p, &c) != 0) { print_error("%s\n", lf_last_error()); fail(); }
    assert_int_equal(c.hidden_size, 64);
    assert_int_equal(c.intermediate_size, 176);
    assert_int_equal(c.n_layers, 3);
    assert_int_equal(c.n_heads, 4);
    assert_int_equal(c.n_kv_heads, 4);
    assert_int_equal(c.head_dim, 16);
    assert_int_equal(c.vocab_size, 32000);
    assert_int_equal(c.max_position_embeddings, 256);
    assert_true(c.rms_norm_eps == 1e-5f);
    assert_true(c.rope_theta == 10000.0f);
    assert_int_equal(c.tie_word_embeddings, 0);
    assert_int_equal(c.bos_id, 1);
    assert_int_equal(c.eos_id, 2);
}

static void test_llama2_7b(void **state) {
    (void)state;
    lf_config c;
    read_ok("{\n"
            "  \"architectures\": [\"LlamaForCausalLM\"],\n"
            "  \"bos_token_id\": 1,\n"
            "  \"eos_token_id\": 2,\n"
            "  \"hidden_act\": \"silu\",\n"
            "  \"hidden_size\": 4096,\n"
            "  \"initializer_range\": 0.02,\n"
            "  \"intermediate_size\": 11008,\n"
            "  \"max_position_embeddings\": 4096,\n"
            "  \"model_type\": \"llama\",\n"
            "  \"num_attention_heads\": 32,\n"
            "  \"num_hidden_layers\": 32,\n"
            "  \"pad_token_id\": 0,\n"
            "  \"pretraining_tp\": 1,\n"
            "  \"rms_norm_eps\": 1e-05,\n"
            "  \"rope_scaling\": null,\n"
            "  \"tie_word_embeddings\": false,\n"
            "  \"torch_dtype\": \"float16\",\n"
            "  \"transformers_version\": \"4.31.0.dev0\",\n"
            "  \"use_cache\": true,\n"
            "  \"vocab_size\": 32000\n"
            "}\n",
            &c);
    assert_int_equal(c.hidden_size, 4096);
    assert_int_equal(c.intermediate_size, 11008);
    assert_int_equal(c.n_layers, 32);
    assert_int_equal(c.n_heads, 32);
    assert_int_equal(c.n_kv_heads, 32); /* defaults to the head count */
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.vocab_size, 32000);
    assert_int_equal(c.max_position_embeddings, 4096);
    assert_true(c.rms_norm_eps == 1e-5f);
    assert_true(c.rope_theta == 10000.0f); /* default */
    assert_int_equal(c.tie_word_embeddings, 0);
    assert_int_equal(c.bos_id, 1);
    assert_int_equal(c.eos_id, 2);
}

static void test_defaults(void **state) {
    (void)state;
    lf_config c;
    read_ok("{" BASE_FIELDS "}", &c);
    assert_int_equal(c.n_kv_heads, 4);
    assert_int_equal(c.head_dim, 16);
    assert_true(c.rms_norm_eps == 1e-6f);
    assert_true(c.rope_theta == 10000.0f);
    assert_int_equal(c.tie_word_embeddings, 0);
    assert_int_equal(c.max_position_embeddings, 2048);
    assert_int_equal(c.bos_id, 1);
    assert_int_equal(c.eos_id, 2);
    /* JSON null counts as absent. */
    read_ok("{" BASE_FIELDS ", \"num_key_value_heads\": null, \"head_dim\": null, "
            "\"bos_token_id\": null}", &c);
    assert_int_equal(c.n_kv_heads, 4);
    assert_int_equal(c.head_dim, 16);
    assert_int_equal(c.bos_id, 1);
}

static void test_options(void **state) {
    (void)state;
    lf_config c;
    /* head_dim given wins over hidden_size / heads; GQA; tied; list of eos. */
    read_ok("{\"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, "
            "\"num_attention_heads\": 8, \"num_key_value_heads\": 2, \"head_dim\": 32, "
            "\"vocab_size\": 128256, \"rope_theta\": 500000.0, \"tie_word_embeddings\": true, "
            "\"bos_token_id\": 128000, \"eos_token_id\": [128001, 128008, 128009], "
            "\"max_position_embeddings\": 131072, \"rms_norm_eps\": 1e-5}", &c);
    assert_int_equal(c.n_heads, 8);
    assert_int_equal(c.n_kv_heads, 2);
    assert_int_equal(c.head_dim, 32);
    assert_true(c.rope_theta == 500000.0f);
    assert_int_equal(c.tie_word_embeddings, 1);
    assert_int_equal(c.bos_id, 128000);
    assert_int_equal(c.eos_id, 128001);
    assert_int_equal(c.max_position_embeddings, 131072);
    /* head_dim given makes an indivisible hidden_size acceptable. */
    read_ok("{\"hidden_size\": 60, \"intermediate_size\": 128, \"num_hidden_layers\": 2, "
            "\"num_attention_heads\": 8, \"head_dim\": 8, \"vocab_size\": 100}", &c);
    assert_int_equal(c.head_dim, 8);
    /* Whole numbers written as floats are fine. */
    read_ok("{" BASE_FIELDS ", \"max_position_embeddings\": 512.0}", &c);
    assert_int_equal(c.max_position_embeddings, 512);
}

static void test_malformed(void **state) {
    (void)state;
    read_fail("{\"hidden_size\": 64, \"intermediate_size\": 176, \"num_attention_heads\": 4, "
              "\"vocab_size\": 32000}", "field 'num_hidden_layers' missing", NULL);
    read_fail("{\"hidden_size\": 64, \"intermediate_size\": 176, \"num_hidden_layers\": -3, "
              "\"num_attention_heads\": 4, \"vocab_size\": 32000}",
              "field 'num_hidden_layers' must be a positive integer, found -3", NULL);
    read_fail("{\"hidden_size\": 0, \"intermediate_size\": 176, \"num_hidden_layers\": 3, "
              "\"num_attention_heads\": 4, \"vocab_size\": 32000}",
              "field 'hidden_size' must be a positive integer, found 0", NULL);
    read_fail("{\"hidden_size\": \"64\", \"intermediate_size\": 176, \"num_hidden_layers\": 3, "
              "\"num_attention_heads\": 4, \"vocab_size\": 32000}",
              "field 'hidden_size' must be a positive integer, found \"64\"", NULL);
    read_fail("{\"hidden_size\": 64.5, \"intermediate_size\": 176, \"num_hidden_layers\": 3, "
              "\"num_attention_heads\": 4, \"vocab_size\": 32000}",
              "field 'hidden_size' must be a positive integer, found 64.5", NULL);
    read_fail("{\"hidden_size\": 4194304, \"intermediate_size\": 176, \"num_hidden_layers\": 3, "
              "\"num_attention_heads\": 4, \"vocab_size\": 32000}",
              "field 'hidden_size' is 4194304, above the supported limit", NULL);
    read_fail("{" BASE_FIELDS ", \"num_hidden_layers\": 3}", "field 'num_hidden_layers' appears twice", NULL);
    read_fail("{\"hidden_size\": 64, \"intermediate_size\": 176, \"num_hidden_layers\": 100000, "
              "\"num_attention_heads\": 4, \"vocab_size\": 32000}", "'num_hidden_layers' is 100000", "limit");
    read_fail("{\"hidden_size\": 64, \"intermediate_size\": 176, \"num_hidden_layers\": 3, "
              "\"num_attention_heads\": 4, \"vocab_size\": 33554432}", "'vocab_size' is 33554432", "limit");
    read_fail("{" BASE_FIELDS ", \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}}",
              "rope_scaling", "rope scaling is not supported");
    read_fail("{" BASE_FIELDS ", \"num_key_value_heads\": 3}",
              "num_attention_heads 4 is not a multiple of num_key_value_heads 3", NULL);
    read_fail("{\"hidden_size\": 66, \"intermediate_size\": 176, \"num_hidden_layers\": 3, "
              "\"num_attention_heads\": 4, \"vocab_size\": 32000}",
              "hidden_size 66 is not divisible by num_attention_heads 4", NULL);
    read_fail("{" BASE_FIELDS ", \"head_dim\": 15}", "head_dim 15 must be even", NULL);
    read_fail("{" BASE_FIELDS ", \"model_type\": \"mistral\"}", "'model_type' is \"mistral\"",
              "expected \"llama\"");
    read_fail("{" BASE_FIELDS ", \"hidden_act\": \"gelu\"}", "'hidden_act' is \"gelu\"", "expected \"silu\"");
    read_fail("{" BASE_FIELDS ", \"attention_bias\": true}", "'attention_bias' is true", "not supported");
    read_fail("{" BASE_FIELDS ", \"tie_word_embeddings\": \"yes\"}",
              "'tie_word_embeddings' must be true or false, found \"yes\"", NULL);
    read_fail("{" BASE_FIELDS ", \"rms_norm_eps\": -1e-5}", "'rms_norm_eps' must be a positive number", NULL);
    read_fail("{" BASE_FIELDS ", \"rope_theta\": \"big\"}", "'rope_theta' must be a positive number", NULL);
    read_fail("{" BASE_FIELDS ", \"rope_theta\": 1e39}", "'rope_theta' must be a positive number", "1e+39");
    read_fail("{" BASE_FIELDS ", \"eos_token_id\": []}", "'eos_token_id' must be a token id", "found []");
    read_fail("{" BASE_FIELDS ", \"eos_token_id\": 32000}", "'eos_token_id' must be a token id in [0, 32000)", NULL);
    read_fail("{" BASE_FIELDS ", \"bos_token_id\": -1}", "'bos_token_id'", "found -1");
    read_fail("{\"hidden_size\": 64,", "not valid JSON", NULL);
    read_fail("", "not valid JSON", NULL);
    read_fail("{" BASE_FIELDS "} {}", "not valid JSON", "unexpected bytes");
    read_fail("[1, 2]", "must hold a JSON object", NULL);
}

static void test_missing_file(void **state) {
    (void)state;
    char p[600];
    snprintf(p, sizeof p, "%s/nothing/config.json", lf_test_tmpdir());
    lf_config c;
    assert_int_equal(lf_config_read(p, &c), -1);
    assert_non_null(strstr(lf_last_error(), "config.json: cannot open"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture),
        cmocka_unit_test(test_llama2_7b),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_missing_file),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
