/* test_eval.c: answer extraction on real-looking outputs in English,
 * Chinese, Russian and Spanish; the language share; running generated code;
 * and `loraflow eval` end to end on the authors' zh_math test file with the
 * fixture model (its answers are nonsense: the pipeline is what is tested). */
#include "common.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/core/util.h"

#define FIX "fixtures/tiny-loraflow/"

static void expect_extract(const char *text, const char *want) {
    char buf[128];
    int rc = lf_math_extract(text, buf, sizeof buf);
    if (!want) {
        if (rc == 0) { print_error("expected no number in \"%s\", got %s\n", text, buf); fail(); }
        return;
    }
    if (rc != 0 || strcmp(buf, want)) {
        print_error("from \"%s\": got %s, expected %s\n", text, rc ? "(none)" : buf, want);
        fail();
    }
}

static void test_extract(void **state) {
    (void)state;
    /* English forms */
    expect_extract("Janet sells 16 - 3 - 4 = 9 eggs, 9 * 2 = 18 dollars. The answer is 18.", "18");
    expect_extract("The answer is: $1,234.", "1234");
    expect_extract("So she makes 18.0 dollars.", "18");
    expect_extract("The answer is 12.50 and not 3", "12.5");
    expect_extract("He lost -5 points in total", "-5");
    expect_extract("no numbers here", NULL);
    /* Chinese (MGSM zh) */
    expect_extract("珍妮特每天剩下 16 - 3 - 4 = 9 颗鸭蛋，9 * 2 = 18 美元。答案是 18。", "18");
    expect_extract("一共需要 2 + 1 = 3 匹布料。\n答案：3", "3");
    expect_extract("所以他赚了 70,000 美元。答案为70000美元", "70000");
    expect_extract("让我们一步一步地思考。他跑了 3 次，每次 60 米，共 180 米。", "180");
    /* Russian (MGSM ru) */
    expect_extract("Джанет продаёт 16 - 3 - 4 = 9 яиц по 2 доллара, то есть 18 долларов. Ответ: 18", "18");
    expect_extract("Всего 2 + 1 = 3 рулона. Ответ — 3.", "3");
    expect_extract("Он заработал 70 000 долларов. Ответ: 70 000 долларов.", "70000");
    expect_extract("Итого 540 метров в неделю. ответ равен 540", "540");
    /* Spanish (MGSM es) */
    expect_extract("Janet vende 9 huevos a 2 dólares cada uno, es decir, 18 dólares. La respuesta es 18.", "18");
    expect_extract("Se necesitan 2 + 1 = 3 rollos en total. Respuesta: 3", "3");
    expect_extract("La respuesta es 1.500,0", "1500");
    expect_extract("Gana 1.234.567 pesos en total.", "1234567");
    expect_extract("Cuesta 3,75 dólares; la respuesta es 2.5", "2.5");
    /* the last "answer is" wins over earlier numbers */
    expect_extract("The answer is 5? No, recompute: 6. The answer is 7.", "7");

    assert_true(lf_math_equal("18", "18.0"));
    assert_true(lf_math_equal("1,234", "1234"));
    assert_true(lf_math_equal("-5", "-5.00"));
    assert_false(lf_math_equal("18", "19"));
    assert_false(lf_math_equal("abc", "18"));
}

static void test_wordset(void **state) {
    (void)state;
    const char *p = "/tmp/lf_words.txt";
    char path[600];
    snprintf(path, sizeof path, "%s/words.txt", lf_test_tmpdir());
    (void)p;
    const char *words = "zum brak\nfel  Tor\n";
    lf_test_write_file(path, words, strlen(words));
    lf_wordset *w = lf_wordset_load(path);
    assert_non_null(w);
    assert_true(fabs(lf_wordset_share(w, "Zum brak, fel tor!") - 1.0) < 1e-9);
    assert_true(fabs(lf_wordset_share(w, "zum the 12 apples tor") - 0.5) < 1e-9); /* numbers ignored */
    assert_true(lf_wordset_share(w, "  42 ... ") < 0);
    lf_wordset_free(w);
}

static void test_code_check(void **state) {
    (void)state;
    char why[160];
    int r = lf_code_check("def f(x):\n    return x + 1\nassert f(1) == 2\n", 10, why, sizeof why);
    if (r < 0) {
        print_message("SKIP test_code_check: python3 not found\n");
        skip();
    }
    assert_int_equal(r, 1);
    assert_int_equal(lf_code_check("assert 1 == 2\n", 10, why, sizeof why), 0);
    assert_non_null(strstr(why, "exit status"));
    assert_int_equal(lf_code_check("while True: pass\n", 1, why, sizeof why), 0);
    assert_non_null(strstr(why, "timed out"));
    /* no network: a connection attempt fails (in a new network namespace, or
     * refused by this machine's closed network) */
    assert_int_equal(lf_code_check("import socket\nsocket.create_connection(('8.8.8.8', 53), timeout=2)\n", 10, why,
                                   sizeof why), 0);
}

/* `loraflow eval` on the authors' zh_math test file with the fixture model. */
static void test_eval_cli(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    char out_path[600], sum_path[600], cmd[8192], *out;
    snprintf(out_path, sizeof out_path, "%s/eval.jsonl", lf_test_tmpdir());
    snprintf(sum_path, sizeof sum_path, "%s/eval.json", lf_test_tmpdir());
    snprintf(cmd, sizeof cmd,
             "%s eval -m %s -l lang=%s -l task=%s -g %s --data %s --system 'Be brief.' -n 8 -o %s --summary %s 2>&1",
             lf_test_tool(), lf_test_path(FIX "base"), lf_test_path(FIX "lora_lang"), lf_test_path(FIX "lora_task"),
             lf_test_path(FIX "gate.pt"), lf_test_path("data/loraflow/test/zh_math_test.jsonl"), out_path, sum_path);
    int rc = lf_test_run(cmd, &out);
    if (rc) print_error("%s\n", out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "250/250 done"));
    free(out);
    size_t len;
    char *txt = lf_read_file(sum_path, &len, 1 << 20);
    cJSON *s = cJSON_Parse(txt);
    free(txt);
    assert_non_null(s);
    assert_int_equal(cJSON_GetObjectItem(s, "n")->valueint, 250);
    assert_true(cJSON_GetObjectItem(s, "accuracy")->valuedouble >= 0);
    cJSON_Delete(s);
    txt = lf_read_file(out_path, &len, 1 << 26);
    int lines = 0;
    for (char *p = txt, *e; (e = strchr(p, '\n')); p = e + 1, lines++) {
        *e = 0;
        cJSON *o = cJSON_Parse(p);
        assert_non_null(o);
        assert_true(cJSON_IsString(cJSON_GetObjectItem(o, "prompt")));
        assert_true(cJSON_IsString(cJSON_GetObjectItem(o, "output")));
        assert_true(cJSON_IsString(cJSON_GetObjectItem(o, "reference")));
        assert_non_null(cJSON_GetObjectItem(o, "extracted"));
        assert_true(cJSON_IsBool(cJSON_GetObjectItem(o, "correct")));
        cJSON_Delete(o);
    }
    assert_int_equal(lines, 250);
    free(txt);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_extract),
        cmocka_unit_test(test_wordset),
        cmocka_unit_test(test_code_check),
        cmocka_unit_test(test_eval_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
