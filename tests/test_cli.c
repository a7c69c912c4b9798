/* test_cli.c: the loraflow command line, driven as users and other tools
 * drive it, against the fixture reference outputs. */
#include "common.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/core/util.h"

#define FIX "fixtures/tiny-loraflow/"

static char cmd[8192];

/* Run "loraflow ARGS" (stderr folded into the output). */
static int run_tool(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int run_tool(char **out, const char *fmt, ...) {
    char args[7000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", lf_test_tool(), args);
    return lf_test_run(cmd, out);
}

static void test_help(void **state) {
    (void)state;
    static const char *cmds[] = {"", "generate", "forward", "tokenize", "info"};
    for (int i = 0; i < 5; i++) {
        char *out;
        assert_int_equal(run_tool(&out, "%s --help", cmds[i]), 0);
        assert_non_null(strstr(out, "usage"));
        free(out);
    }
    char *out;
    assert_int_not_equal(run_tool(&out, "frobnicate"), 0);
    assert_non_null(strstr(out, "unknown command"));
    free(out);
    assert_int_not_equal(run_tool(&out, "generate -m x --bogus"), 0);
    assert_non_null(strstr(out, "unknown option"));
    free(out);
}

static void test_tokenize(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    char *out;
    assert_int_equal(run_tool(&out, "tokenize -m %s 'The quick brown fox jumps over the lazy dog.'", lf_test_path(FIX "base")), 0);
    assert_string_equal(out, "1 450 4996 17354 1701 29916 432 17204 975 278 17366 11203 29889\n");
    free(out);
    assert_int_equal(run_tool(&out, "tokenize -m %s --no-bos --special '<s>a</s>'", lf_test_path(FIX "base")), 0);
    assert_string_equal(out, "1 263 2\n");
    free(out);
}

/* info describes the folder without copying it and gives the bytes a
 * generated token reads, as lf_model_decode_bytes counts them, with and
 * without the adapters. */
static void test_info(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    char *out;
    assert_int_equal(run_tool(&out, "info -m %s -l lang=%s -l task=%s", lf_test_path(FIX "base"),
                              lf_test_path(FIX "lora_lang"), lf_test_path(FIX "lora_task")), 0);
    const lf_load_options lo = {.placement = LF_PLACE_MMAP};
    lf_model *m = lf_model_load_opts(lf_test_path(FIX "base"), &lo);
    assert_non_null(m);
    assert_int_equal(lf_model_add_adapter(m, "lang", lf_test_path(FIX "lora_lang")), 0);
    assert_int_equal(lf_model_add_adapter(m, "task", lf_test_path(FIX "lora_task")), 1);
    char want[256];
    snprintf(want, sizeof want, "per token:    %.2f MB of weights read by each generated token, as stored; %.2f MB with the adapters",
             lf_model_decode_bytes(m, 0) / 1e6, lf_model_decode_bytes(m, 1) / 1e6);
    if (!strstr(out, want)) fail_msg("info: no '%s' in:\n%s", want, out);
    assert_true(lf_model_decode_bytes(m, 1) > lf_model_decode_bytes(m, 0));
    assert_non_null(strstr(out, "memory-mapped"));
    assert_non_null(strstr(out, "adapter 1:    task"));
    lf_model_free(m);
    free(out);
}

/* A tuning variable with a value the library does not know is refused by
 * the tool (the library would keep its default: a typo would run another
 * configuration than the one asked for); known values and empty ones run. */
static void test_env_values(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    static const char *bad[] = {"LORAFLOW_QUANTIZE=Q8", "LORAFLOW_QUANTIZE_ADAPTERS=q4", "LORAFLOW_PLACEMENT=disk",
                                "LORAFLOW_PRODUCTS=fp16", "LORAFLOW_ISA=sse", "LORAFLOW_LAYOUT=row"};
    char line[4096], *out;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(line, sizeof line, "%s %s info -m %s 2>&1", bad[i], lf_test_tool(), lf_test_path(FIX "base"));
        assert_int_not_equal(lf_test_run(line, &out), 0);
        if (!strstr(out, bad[i]) || !strstr(out, "expected")) fail_msg("%s: %s", bad[i], out);
        free(out);
    }
    snprintf(line, sizeof line, "LORAFLOW_QUANTIZE=none LORAFLOW_QUANTIZE_ADAPTERS=q8 LORAFLOW_ISA= %s info -m %s 2>&1",
             lf_test_tool(), lf_test_path(FIX "base"));
    assert_int_equal(lf_test_run(line, &out), 0);
    assert_non_null(strstr(out, "per token:"));
    free(out);
}

/* forward in LoRA-Flow mode writes what the fixture holds. */
/* `loraflow forward` on the fixture with both LoRAs and the gate, the en
 * prompt and the extra options; its output file read into got. */
static void forward_gate_cli(const char *extra, const char *path, lf_tensorset *got) {
    char *out;
    int rc = run_tool(&out, "forward -m %s -l lang=%s -l task=%s -g %s %s -p 'The quick brown fox jumps over the lazy dog.' -o %s -t 2",
                      lf_test_path(FIX "base"), lf_test_path(FIX "lora_lang"), lf_test_path(FIX "lora_task"),
                      lf_test_path(FIX "gate.pt"), extra, path);
    if (rc) print_error("%s\n", out);
    assert_int_equal(rc, 0);
    free(out);
    lf_tensorset_init(got);
    assert_int_equal(lf_safetensors_read(path, got), 0);
}

static void test_forward_gate(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    char path[512];
    snprintf(path, sizeof path, "%s/fwd.safetensors", lf_test_tmpdir());
    lf_tensorset got, ref;
    forward_gate_cli("-T 1.1", path, &got);
    lf_tensorset_init(&ref);
    assert_int_equal(lf_safetensors_read(lf_test_path(FIX "expected/logits.safetensors"), &ref), 0);
    const lf_tensor *lg = lf_tensorset_find(&got, "logits");
    assert_non_null(lg);
    assert_int_equal(lg->shape[0], 13);
    assert_int_equal(lg->shape[1], 32000);
    const lf_tensor *r = lf_tensorset_find(&ref, "en.dynamic_t1.1.logits_last");
    const float *last = (const float *)lg->data + 12 * 32000;
    lf_test_check_close("logits_last", last, r->data, 32000, 1e-4 * lf_test_scale(r->data, 32000));
    static const char *names[][2] = {
        {"hidden_final", "en.dynamic_t1.1.hidden_final"},
        {"fusion_weights", "en.dynamic_t1.1.fusion_weights"},
        {"gate_logits", "en.dynamic_t1.1.gate_logits"},
    };
    for (int i = 0; i < 3; i++) {
        const lf_tensor *a = lf_tensorset_find(&got, names[i][0]), *b = lf_tensorset_find(&ref, names[i][1]);
        assert_non_null(a);
        assert_non_null(b);
        assert_int_equal(a->nbytes, b->nbytes);
        size_t n = (size_t)lf_tensor_numel(b);
        double tol = i == 1 ? 1e-4 : 1e-4 * lf_test_scale(b->data, n);
        lf_test_check_close(names[i][0], a->data, b->data, n, tol);
    }
    lf_tensorset_free(&got);
    lf_tensorset_free(&ref);
}

/* --quantize q8 through the CLI: the logits move (the flag reaches the
 * loader) but stay within test_kernels' q8 bound of the float32 reference;
 * --placement mmap gives the reference logits. */
static void test_forward_load_options(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    lf_tensorset ref;
    lf_tensorset_init(&ref);
    assert_int_equal(lf_safetensors_read(lf_test_path(FIX "expected/logits.safetensors"), &ref), 0);
    const lf_tensor *r = lf_tensorset_find(&ref, "en.dynamic_t1.0.logits_last");
    assert_non_null(r);
    const double sc = lf_test_scale(r->data, 32000);
    static const char *opts[] = {"--quantize q8", "--placement mmap", "--placement copy --quantize none",
                                 "--products bf16", "--quantize-adapters q8", "--quantize-adapters none"};
    const int bf16 = lf_set_products(LF_PRODUCTS_BF16) == LF_PRODUCTS_BF16; /* this CPU has them */
    lf_set_products(LF_PRODUCTS_F32);
    for (int i = 0; i < 6; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/fwd_load%d.safetensors", lf_test_tmpdir(), i);
        lf_tensorset got;
        forward_gate_cli(opts[i], path, &got);
        const lf_tensor *lg = lf_tensorset_find(&got, "logits");
        assert_non_null(lg);
        const float *last = (const float *)lg->data + (lg->shape[0] - 1) * 32000;
        double e = lf_test_maxdiff(last, r->data, 32000);
        if (i == 0 || i == 4) {
            if (!(e > 1e-4 * sc && e < 0.06 * sc)) fail_msg("%s: logit error %g (scale %g)", opts[i], e, sc);
        } else if (i == 3) { /* prompt products in bfloat16: a small error, and not none where they run */
            fprintf(stderr, "--products bf16: logit error %g (scale %g)\n", e, sc);
            if (!(e < 0.03 * sc && (!bf16 || e > 1e-6 * sc))) fail_msg("--products bf16: logit error %g (scale %g)", e, sc);
        } else {
            lf_test_check_close(opts[i], last, r->data, 32000, 1e-4 * sc);
        }
        lf_tensorset_free(&got);
    }
    lf_tensorset_free(&ref);
}

/* forward through the CLI in every mode of the fixture, for every prompt
 * (ids from inputs.safetensors): the library and the command line agree
 * with the reference. */
static void test_forward_all_modes(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    static const char *modes[][2] = {
        {"", "base"},
        {"-w 1,0", "only_lora_lang"},
        {"-w 0,1", "only_lora_task"},
        {"-w 0.5,0.5", "static_0.5_0.5"},
        {"-w 0.3,0.9", "static_0.3_0.9"},
        {"-g GATE -T 1.0", "dynamic_t1.0"},
        {"-g GATE -T 1.1", "dynamic_t1.1"},
    };
    static const char *prompts[] = {"en", "zh", "chat"};
    lf_tensorset ref, in;
    lf_tensorset_init(&ref);
    lf_tensorset_init(&in);
    assert_int_equal(lf_safetensors_read(lf_test_path(FIX "expected/logits.safetensors"), &ref), 0);
    assert_int_equal(lf_safetensors_read(lf_test_path(FIX "expected/inputs.safetensors"), &in), 0);
    for (int pi = 0; pi < 3; pi++) {
        char name[128], ids[1024] = "";
        snprintf(name, sizeof name, "prompt.%s.input_ids", prompts[pi]);
        const lf_tensor *t = lf_tensorset_find(&in, name);
        const int T = (int)t->shape[0];
        for (int i = 0; i < T; i++)
            snprintf(ids + strlen(ids), sizeof ids - strlen(ids), "%s%lld", i ? "," : "", (long long)((const int64_t *)t->data)[i]);
        for (int mi = 0; mi < 7; mi++) {
            char path[512], *out, fusion[1024] = "";
            snprintf(path, sizeof path, "%s/fwd_%s_%d.safetensors", lf_test_tmpdir(), prompts[pi], mi);
            if (mi > 0) {
                snprintf(fusion, sizeof fusion, "-l lang=%s -l task=%s ", lf_test_path(FIX "lora_lang"),
                         lf_test_path(FIX "lora_task"));
                const char *g = strstr(modes[mi][0], "GATE");
                if (g) snprintf(fusion + strlen(fusion), sizeof fusion - strlen(fusion), "-g %s%s", lf_test_path(FIX "gate.pt"), g + 4);
                else snprintf(fusion + strlen(fusion), sizeof fusion - strlen(fusion), "%s", modes[mi][0]);
            }
            int rc = run_tool(&out, "forward -m %s %s --ids %s -o %s", lf_test_path(FIX "base"), fusion, ids, path);
            if (rc) print_error("%s\n", out);
            assert_int_equal(rc, 0);
            free(out);
            lf_tensorset got;
            lf_tensorset_init(&got);
            assert_int_equal(lf_safetensors_read(path, &got), 0);
            static const char *fields[][2] = {{"hidden_final", "hidden_final"}, {"fusion_weights", "fusion_weights"},
                                              {"gate_logits", "gate_logits"}, {"logits", "logits_last"}};
            for (int f = 0; f < 4; f++) {
                snprintf(name, sizeof name, "%s.%s.%s", prompts[pi], modes[mi][1], fields[f][1]);
                const lf_tensor *b = lf_tensorset_find(&ref, name), *a = lf_tensorset_find(&got, fields[f][0]);
                if (!b) continue; /* gate_logits only in dynamic modes */
                if (f == 1 && mi == 0) { assert_null(a); continue; } /* base: no adapters, no weights */
                assert_non_null(a);
                size_t n = (size_t)lf_tensor_numel(b);
                const float *c = a->data;
                if (f == 3) c += (size_t)(T - 1) * 32000; /* the last row of [T, V] */
                double tol = f == 1 ? 1e-4 : 1e-4 * lf_test_scale(b->data, n);
                lf_test_check_close(name, c, b->data, n, tol);
            }
            lf_tensorset_free(&got);
        }
    }
    lf_tensorset_free(&ref);
    lf_tensorset_free(&in);
}

/* generate --json --greedy gives the fixture's greedy ids (KV cache). */
static void test_generate_json(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    static const char *prompts[] = {"en", "zh", "chat"};
    lf_tensorset in, gen;
    lf_tensorset_init(&in);
    lf_tensorset_init(&gen);
    assert_int_equal(lf_safetensors_read(lf_test_path(FIX "expected/inputs.safetensors"), &in), 0);
    assert_int_equal(lf_safetensors_read(lf_test_path(FIX "expected/generate.safetensors"), &gen), 0);
    for (int p = 0; p < 3; p++) {
        char name[64], ids[1024] = "";
        snprintf(name, sizeof name, "prompt.%s.input_ids", prompts[p]);
        const lf_tensor *t = lf_tensorset_find(&in, name);
        for (int i = 0; i < t->shape[0]; i++)
            snprintf(ids + strlen(ids), sizeof ids - strlen(ids), "%s%lld", i ? "," : "", (long long)((const int64_t *)t->data)[i]);
        char *out;
        int rc = run_tool(&out, "generate -m %s -l lang=%s -l task=%s -g %s --ids %s -n 16 --greedy --json 2>/dev/null",
                          lf_test_path(FIX "base"), lf_test_path(FIX "lora_lang"), lf_test_path(FIX "lora_task"),
                          lf_test_path(FIX "gate.pt"), ids);
        assert_int_equal(rc, 0);
        /* the JSON object is the line starting with '{' */
        char *js = strchr(out, '{');
        assert_non_null(js);
        cJSON *j = cJSON_Parse(js);
        assert_non_null(j);
        const cJSON *got = cJSON_GetObjectItem(j, "ids");
        snprintf(name, sizeof name, "%s.gen.new_ids", prompts[p]);
        const lf_tensor *want = lf_tensorset_find(&gen, name);
        assert_int_equal(cJSON_GetArraySize(got), want->shape[0]);
        for (int i = 0; i < want->shape[0]; i++)
            assert_int_equal(cJSON_GetArrayItem(got, i)->valueint, ((const int64_t *)want->data)[i]);
        assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "prompt_ids")), t->shape[0]);
        assert_true(cJSON_IsString(cJSON_GetObjectItem(j, "text")));
        cJSON_Delete(j);
        free(out);
    }
    lf_tensorset_free(&in);
    lf_tensorset_free(&gen);
}

/* generate --trace (JSON and CSV) and --trace-svg record the weights the
 * fixture expects for every fed token. */
static void test_trace_files(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    char js[512], csv[512], svg[512], *out;
    snprintf(js, sizeof js, "%s/trace.json", lf_test_tmpdir());
    snprintf(csv, sizeof csv, "%s/trace.csv", lf_test_tmpdir());
    snprintf(svg, sizeof svg, "%s/trace.svg", lf_test_tmpdir());
    const char *ids = "1,450,4996,17354,1701,29916,432,17204,975,278,17366,11203,29889";
    for (int i = 0; i < 2; i++) {
        int rc = run_tool(&out, "generate -m %s -l lang=%s -l task=%s -g %s --ids %s -n 16 --trace %s --trace-svg %s",
                          lf_test_path(FIX "base"), lf_test_path(FIX "lora_lang"), lf_test_path(FIX "lora_task"),
                          lf_test_path(FIX "gate.pt"), ids, i ? csv : js, svg);
        if (rc) print_error("%s\n", out);
        assert_int_equal(rc, 0);
        free(out);
    }
    size_t len;
    char *txt = lf_read_file(js, &len, 1 << 26);
    assert_non_null(txt);
    cJSON *j = cJSON_Parse(txt);
    free(txt);
    assert_non_null(j);
    const cJSON *tokens = cJSON_GetObjectItem(j, "tokens");
    assert_int_equal(cJSON_GetArraySize(tokens), 13 + 15);
    lf_tensorset gen;
    lf_tensorset_init(&gen);
    assert_int_equal(lf_safetensors_read(lf_test_path(FIX "expected/generate.safetensors"), &gen), 0);
    const lf_tensor *ref = lf_tensorset_find(&gen, "en.gen.fusion_weights"); /* [L, 28, k] */
    const float *r = ref->data;
    for (int t = 0; t < 28; t++) {
        const cJSON *w = cJSON_GetObjectItem(cJSON_GetArrayItem(tokens, t), "weights");
        for (int l = 0; l < 3; l++)
            for (int k = 0; k < 2; k++) {
                double c = cJSON_GetArrayItem(cJSON_GetArrayItem(w, l), k)->valuedouble;
                double e = r[((size_t)l * 28 + t) * 2 + k];
                if (!(fabs(c - e) <= 1e-4)) {
                    print_error("trace token %d layer %d adapter %d: %g, expected %g\n", t, l, k, c, e);
                    fail();
                }
            }
    }
    cJSON_Delete(j);
    lf_tensorset_free(&gen);
    txt = lf_read_file(csv, &len, 1 << 26);
    assert_non_null(txt);
    int lines = 0;
    for (size_t i = 0; i < len; i++) lines += txt[i] == '\n';
    assert_int_equal(lines, 1 + 28 * 3);
    assert_true(!strncmp(txt, "token,position,text,layer,lang,task", 35));
    free(txt);
    txt = lf_read_file(svg, &len, 1 << 26);
    assert_non_null(txt);
    assert_non_null(strstr(txt, "<svg"));
    assert_non_null(strstr(txt, "</svg>"));
    free(txt);
}

/* Wrong inputs: a clear message and a non-zero exit. */
static void test_errors(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    const char *base = lf_test_path(FIX "base"), *lang = lf_test_path(FIX "lora_lang");
    const char *gate = lf_test_path(FIX "gate.pt");
    struct { const char *args; const char *expect; } cases[] = {
        {"generate -m /nonexistent -p hi", "/nonexistent"},
        {"generate -m BASE --ids 1,99999", "outside the vocabulary"},
        {"generate -m BASE -l lang=LANG -g GATE --ids 1,2", "k = 2"},
        {"generate -m BASE -l lang=LANG -w 0.5,0.5 --ids 1,2", "2 weights for 1 adapters"},
        {"generate -m BASE -l lang=/nonexistent -w 1 --ids 1,2", "adapter_config.json"},
        {"generate -m BASE -g GATE --ids 1,2", "needs adapters"},
        {"forward -m BASE --ids 1,2", "-o"},
        {"generate -m BASE --ids 1,x", "--ids"},
        {"generate -m BASE --ids 1,2 --ctx 1", "context"},
        {"generate -m BASE --ids 1,2 --quantize q4", "--quantize expects q8 or none"},
        {"generate -m BASE --ids 1,2 --quantize-adapters f16", "--quantize-adapters expects q8 or none"},
        {"tokenize -m BASE --quantize-adapters q8 hello", "does not apply"},
        {"forward -m BASE --ids 1,2 --placement disk -o /dev/null", "--placement expects"},
        {"tokenize -m BASE --quantize q8 hello", "does not apply"},
        {"forward -m BASE --ids 1,2 --products f16 -o /dev/null", "--products expects f32 or bf16"},
        {"grad -m BASE -l lang=LANG --init --products fp8 --data x.jsonl -o /dev/null", "--products expects f32 or bf16"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char args[2048] = "";
        for (const char *p = cases[i].args; *p;) {
            if (!strncmp(p, "BASE", 4)) { strcat(args, base); p += 4; }
            else if (!strncmp(p, "LANG", 4)) { strcat(args, lang); p += 4; }
            else if (!strncmp(p, "GATE", 4)) { strcat(args, gate); p += 4; }
            else { size_t l = strlen(args); args[l] = *p++; args[l + 1] = 0; }
        }
        char *out;
        int rc = run_tool(&out, "%s", args);
        if (rc == 0 || !strstr(out, cases[i].expect)) {
            print_error("`loraflow %s` exited %d, output:\n%s\n(expected a failure mentioning '%s')\n", args, rc, out,
                        cases[i].expect);
            fail();
        }
        assert_true(rc > 0 && rc < 128); /* an error, not a crash */
        free(out);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help),          cmocka_unit_test(test_tokenize), cmocka_unit_test(test_info),
        cmocka_unit_test(test_env_values),
        cmocka_unit_test(test_forward_gate),  cmocka_unit_test(test_forward_load_options),
        cmocka_unit_test(test_forward_all_modes),
        cmocka_unit_test(test_generate_json), cmocka_unit_test(test_trace_files), cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
