/* test_replication.c: the replication pipeline (replication/run.sh) in its
 * small mode (tiny sizes, one seed): it must train every piece with
 * loraflow, score every method and write a well-formed table, results.json
 * and heatmap; a second run must come entirely from the cache.  The
 * accuracies of the small mode mean nothing and are not checked. */
#include "common.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/core/util.h"

static const char *build_dir(void) {
    const char *b = getenv("BUILD");
    return b && *b ? b : "build";
}

static char *read_all(const char *path) {
    size_t n;
    return lf_read_file(path, &n, 64u << 20);
}

static const char *METHOD_IDS[] = {"base", "lang", "task", "avg", "hub", "layer", "gate1", "flow", "task_l1"};

static void test_small_pipeline(void **state) {
    (void)state;
    const char *out = lf_test_tmpdir();
    char cmd[4096], path[4096];
    snprintf(cmd, sizeof cmd, "replication/run.sh %s --small --seeds 1 --jobs 2 --out %s/demo 2>&1", build_dir(), out);
    char *log = NULL;
    int rc = lf_test_run(cmd, &log);
    if (rc != 0) print_message("%s\n", log ? log : "");
    assert_int_equal(rc, 0);
    /* the printed table: a header and one row per method */
    assert_non_null(strstr(log, "| method | number right (%) | in L2 (%) | strict (%) |"));
    assert_non_null(strstr(log, "| LoRA-Flow (gate) |"));
    free(log);

    snprintf(path, sizeof path, "%s/demo/results.md", out);
    char *md = read_all(path);
    assert_non_null(md);
    int rows = 0;
    for (const char *p = md; (p = strstr(p, "\n| ")); p++) rows++;
    assert_int_equal(rows, 9); /* header first, then the "|---" separator, then one row per method */
    assert_non_null(strstr(md, "| Task-level weights (LoRA-Hub search) |"));
    assert_non_null(strstr(md, "| Static weights per layer (control) |"));
    assert_non_null(strstr(md, "| Gate over the task LoRA alone (control) |"));
    assert_non_null(strstr(md, "Fusion weights of LoRA-Flow"));
    free(md);

    snprintf(path, sizeof path, "%s/demo/results.json", out);
    char *js = read_all(path);
    assert_non_null(js);
    cJSON *j = cJSON_Parse(js);
    free(js);
    assert_non_null(j);
    const cJSON *methods = cJSON_GetObjectItemCaseSensitive(j, "methods");
    assert_true(cJSON_IsArray(methods));
    assert_int_equal(cJSON_GetArraySize(methods), 9);
    for (int i = 0; i < 9; i++) {
        const cJSON *m = cJSON_GetArrayItem(methods, i);
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "id");
        assert_true(cJSON_IsString(id));
        assert_string_equal(id->valuestring, METHOD_IDS[i]);
        assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(m, "name")));
        static const char *keys[3] = {"accuracy", "in_lang", "strict"};
        for (int k = 0; k < 3; k++) {
            const cJSON *e = cJSON_GetObjectItemCaseSensitive(m, keys[k]);
            const cJSON *per = cJSON_GetObjectItemCaseSensitive(e, "per_seed");
            const cJSON *mean = cJSON_GetObjectItemCaseSensitive(e, "mean");
            const cJSON *spread = cJSON_GetObjectItemCaseSensitive(e, "spread");
            assert_true(cJSON_IsArray(per));
            assert_int_equal(cJSON_GetArraySize(per), 1);
            assert_true(cJSON_IsNumber(mean) && cJSON_IsNumber(spread));
            assert_true(mean->valuedouble >= 0 && mean->valuedouble <= 100);
            assert_true(spread->valuedouble == 0); /* one seed */
        }
    }
    cJSON_Delete(j);

    snprintf(path, sizeof path, "%s/demo/fusion.svg", out);
    char *svg = read_all(path);
    assert_non_null(svg);
    assert_non_null(strstr(svg, "<svg"));
    assert_non_null(strstr(svg, "</svg>"));
    free(svg);

    /* a second run trains nothing: everything comes from the cache */
    log = NULL;
    assert_int_equal(lf_test_run(cmd, &log), 0);
    assert_null(strstr(log, "training the base model"));
    assert_null(strstr(log, "LoRA-Flow gate:"));
    assert_non_null(strstr(log, "| LoRA-Flow (gate) |"));
    free(log);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_pipeline),
    };
    return cmocka_run_group_tests_name("replication", tests, NULL, NULL);
}
