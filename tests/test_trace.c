/* test_trace.c: CSV, JSON and SVG trace writers on awkward token texts. */
#include "common.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/core/util.h"

/* 3 tokens x 2 layers x 2 adapters; one weight negative, one above 1. */
static const char *LABELS[3] = {" He said \"hi\", ok", "a\nb <&>", ("\xFF" "x")}; /* an invalid byte, then x */
static const char *NAMES[2] = {"math", "code"};
static const float W[12] = {
    0.25f, 0.75f, -0.5f, 1.5f,   /* token 0: layer 0, layer 1 */
    0.1f, 0.9f, 0.3f, 0.7f,      /* token 1 */
    1.0f, 0.0f, 0.125f, 0.875f,  /* token 2 */
};
/* What the writers turn LABELS[2] into: the 0xFF byte becomes U+FFFD. */
#define CLEAN_LABEL2 "\xEF\xBF\xBD" "x"

/* Rects in an SVG besides the cells: background + 64 colour-bar swatches
 * + the colour bar's outline (see BAR_STEPS in trace.c). */
#define SVG_EXTRA_RECTS (1 + 64 + 1)

static lf_trace_view small_view(void) {
    lf_trace_view v = {3, 2, 2, W, LABELS, NAMES};
    return v;
}

static const char *tmp_path(const char *name) {
    static char buf[4][512];
    static int slot = 0;
    char *b = buf[slot++ % 4];
    snprintf(b, 512, "%s/%s", lf_test_tmpdir(), name);
    return b;
}

static char *slurp(const char *path) {
    size_t n;
    char *s = lf_read_file(path, &n, 64u << 20);
    if (!s) print_error("cannot read %s: %s\n", path, lf_last_error());
    assert_non_null(s);
    return s;
}

/* Occurrences of needle.  A plain scan: repeated strstr on a megabyte SVG
 * is quadratic under ASan, whose interceptor measures the whole haystack
 * on every call. */
static size_t count(const char *hay, const char *needle) {
    size_t n = 0, len = strlen(needle);
    for (const char *p = hay; *p; p++)
        if (*p == needle[0] && strncmp(p, needle, len) == 0) { n++; p += len - 1; }
    return n;
}

/* ---- a small RFC 4180 reader, enough to check what we write ---- */

typedef struct {
    char *f[16];
    int nf;
} csv_rec;

/* Parse the whole text into records (fields malloc'd); returns the count. */
static int csv_parse(const char *s, csv_rec *recs, int max) {
    int nr = 0;
    while (*s && nr < max) {
        csv_rec *r = &recs[nr++];
        r->nf = 0;
        for (;;) {
            char *field = malloc(strlen(s) + 1);
            size_t n = 0;
            if (*s == '"') {
                for (s++;; s++) {
                    assert_true(*s != 0);  /* unterminated quote */
                    if (*s == '"') {
                        if (s[1] != '"') { s++; break; }
                        s++;
                    }
                    field[n++] = *s;
                }
            } else {
                while (*s && *s != ',' && *s != '\n') field[n++] = *s++;
            }
            field[n] = 0;
            assert_true(r->nf < 16);
            r->f[r->nf++] = field;
            if (*s == ',') { s++; continue; }
            assert_true(*s == '\n' || *s == 0);
            if (*s) s++;
            break;
        }
    }
    return nr;
}

static void csv_free(csv_rec *recs, int n) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < recs[i].nf; j++) free(recs[i].f[j]);
}

/* ---- tests ---- */

static void test_csv(void **state) {
    (void)state;
    lf_trace_view v = small_view();
    const char *path = tmp_path("t.csv");
    assert_int_equal(lf_trace_write_csv(path, &v), 0);
    char *s = slurp(path);
    assert_non_null(strstr(s, "\" He said \"\"hi\"\", ok\""));  /* quotes doubled */
    assert_null(strchr(s, '\xFF'));

    csv_rec r[16];
    int n = csv_parse(s, r, 16);
    assert_int_equal(n, 1 + 3 * 2);
    const char *head[] = {"token", "position", "text", "layer", "math", "code"};
    assert_int_equal(r[0].nf, 6);
    for (int j = 0; j < 6; j++) assert_string_equal(r[0].f[j], head[j]);
    for (int i = 1; i < n; i++) {
        int tok = (i - 1) / 2, layer = (i - 1) % 2;
        assert_int_equal(r[i].nf, 6);
        assert_int_equal(atoi(r[i].f[0]), tok);
        assert_int_equal(atoi(r[i].f[1]), tok);
        assert_int_equal(atoi(r[i].f[3]), layer);
        for (int a = 0; a < 2; a++)
            assert_float_equal(strtod(r[i].f[4 + a], NULL), W[(tok * 2 + layer) * 2 + a], 1e-6);
    }
    assert_string_equal(r[1].f[2], LABELS[0]);
    assert_string_equal(r[3].f[2], LABELS[1]);
    assert_string_equal(r[5].f[2], CLEAN_LABEL2);
    assert_string_equal(r[2].f[4], "-0.5");
    csv_free(r, n);
    free(s);
}

static void test_json(void **state) {
    (void)state;
    lf_trace_view v = small_view();
    const char *path = tmp_path("t.json");
    assert_int_equal(lf_trace_write_json(path, &v), 0);
    char *s = slurp(path);
    assert_null(strchr(s, '\xFF'));
    cJSON *root = cJSON_Parse(s);
    assert_non_null(root);

    cJSON *ad = cJSON_GetObjectItemCaseSensitive(root, "adapters");
    assert_int_equal(cJSON_GetArraySize(ad), 2);
    assert_string_equal(cJSON_GetArrayItem(ad, 0)->valuestring, "math");
    assert_string_equal(cJSON_GetArrayItem(ad, 1)->valuestring, "code");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(root, "n_layers")->valueint, 2);

    cJSON *toks = cJSON_GetObjectItemCaseSensitive(root, "tokens");
    assert_int_equal(cJSON_GetArraySize(toks), 3);
    const char *want[3] = {LABELS[0], LABELS[1], CLEAN_LABEL2};
    for (int t = 0; t < 3; t++) {
        cJSON *tok = cJSON_GetArrayItem(toks, t);
        assert_int_equal(cJSON_GetObjectItemCaseSensitive(tok, "position")->valueint, t);
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(tok, "text")->valuestring, want[t]);
        cJSON *rows = cJSON_GetObjectItemCaseSensitive(tok, "weights");
        assert_int_equal(cJSON_GetArraySize(rows), 2);
        for (int l = 0; l < 2; l++) {
            cJSON *row = cJSON_GetArrayItem(rows, l);
            assert_int_equal(cJSON_GetArraySize(row), 2);
            for (int a = 0; a < 2; a++)
                assert_true((float)cJSON_GetArrayItem(row, a)->valuedouble == W[(t * 2 + l) * 2 + a]);
        }
    }
    /* floats are written in their short form, not as widened doubles */
    assert_non_null(strstr(s, "0.1,"));
    cJSON_Delete(root);
    free(s);
}

/* Fails the test unless python3's XML parser accepts the file (skipped
 * quietly when python3 is not installed). */
static void check_xml(const char *path) {
    if (lf_test_run("command -v python3 >/dev/null 2>&1", NULL) != 0) {
        print_message("note: python3 not found, XML well-formedness not checked\n");
        return;
    }
    char cmd[1200];
    snprintf(cmd, sizeof cmd,
             "python3 -c \"import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])\" '%s' 2>&1",
             path);
    char *out = NULL;
    int rc = lf_test_run(cmd, &out);
    if (rc != 0) print_error("%s is not well-formed XML:\n%s\n", path, out);
    free(out);
    assert_int_equal(rc, 0);
}

static void check_svg_frame(const char *s) {
    assert_true(strncmp(s, "<?xml", 5) == 0 || strncmp(s, "<svg", 4) == 0);
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == ' ')) n--;
    assert_true(n >= 6 && strncmp(s + n - 6, "</svg>", 6) == 0);
    assert_null(strchr(s, '\xFF'));
}

static void test_svg(void **state) {
    (void)state;
    lf_trace_view v = small_view();
    const char *path = tmp_path("t.svg");
    assert_int_equal(lf_trace_write_svg(path, &v), 0);
    char *s = slurp(path);
    check_svg_frame(s);
    check_xml(path);
    assert_int_equal(count(s, "<rect class=\"cell\""), 3 * 2 * 2);
    assert_int_equal(count(s, "<rect"), 3 * 2 * 2 + SVG_EXTRA_RECTS);
    assert_int_equal(count(s, "<title>"), 3 * 2 * 2);
    assert_non_null(strstr(s, ">L0<"));
    assert_non_null(strstr(s, ">L1<"));
    assert_non_null(strstr(s, "adapter 0: math"));
    assert_non_null(strstr(s, "adapter 1: code"));
    /* escaped markup, visible leading space and newline, replaced byte */
    assert_non_null(strstr(s, "&lt;&amp;&gt;"));
    assert_non_null(strstr(s, "\xE2\x90\xA3He"));      /* ␣He */
    assert_non_null(strstr(s, "a\xE2\x86\xB5" "b"));   /* a↵b */
    assert_non_null(strstr(s, ">" CLEAN_LABEL2 "<"));
    assert_non_null(strstr(s, "layer 1 adapter math: -0.5000</title>"));
    /* min and max ticks of the shared scale */
    assert_non_null(strstr(s, ">-0.5<"));
    assert_non_null(strstr(s, ">1.5<"));
    free(s);
}

/* Many tokens, deep model, hostile texts: still well-formed, just wider. */
static void test_svg_large(void **state) {
    (void)state;
    enum { T = 600, L = 40, K = 3 };
    float *w = malloc(sizeof(float) * T * L * K);
    char **lab = malloc(sizeof(char *) * T);
    static const char *odd[] = {
        "", "\x01\x02\x7f", "\xC2\x80", "\xEF\xBF\xBE", "  two  spaces ", "\xE4\xBD",
        "a very long token text that must be cut somewhere", "\xF0\x9F\x98\x80", "]]>", "\r\n\t",
    };
    for (int t = 0; t < T; t++) {
        lab[t] = malloc(64);
        snprintf(lab[t], 64, "%s", odd[t % 10]);
        for (int l = 0; l < L; l++)
            for (int i = 0; i < K; i++)
                w[((size_t)t * L + l) * K + i] = (float)(0.5 + 0.5 * sin(t * 0.1 + l * 0.3 + i));
    }
    w[7] = NAN;  /* shown as grey, and must not break the scale */
    const char *names[K] = {"a<b>", "x & \"y\"", "\xFF"};
    lf_trace_view v = {T, L, K, w, (const char *const *)lab, names};
    const char *path = tmp_path("big.svg");
    assert_int_equal(lf_trace_write_svg(path, &v), 0);
    char *s = slurp(path);
    check_svg_frame(s);
    check_xml(path);
    assert_int_equal(count(s, "<rect class=\"cell\""), T * L * K);
    assert_int_equal(count(s, "<rect"), T * L * K + SVG_EXTRA_RECTS);
    int width = 0;
    assert_non_null(strstr(s, "width=\""));
    assert_int_equal(sscanf(strstr(s, "width=\""), "width=\"%d\"", &width), 1);
    assert_true(width >= T * 12);
    /* axis labels are cut to 16 characters; tooltips keep up to 80 */
    assert_non_null(strstr(s, ">a very long tok\xE2\x80\xA6</text>"));
    assert_non_null(strstr(s, "'a very long token text that must be cut somewhere'"));
    assert_non_null(strstr(s, "adapter 0: a&lt;b&gt;"));
    assert_non_null(strstr(s, "nan</title>"));
    free(s);

    /* the same trace through the other writers */
    assert_int_equal(lf_trace_write_json(tmp_path("big.json"), &v), 0);
    s = slurp(tmp_path("big.json"));
    cJSON *root = cJSON_Parse(s);
    assert_non_null(root);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(root, "tokens")), T);
    cJSON_Delete(root);
    free(s);
    assert_int_equal(lf_trace_write_csv(tmp_path("big.csv"), &v), 0);

    for (int t = 0; t < T; t++) free(lab[t]);
    free(lab);
    free(w);
}

static void test_empty(void **state) {
    (void)state;
    lf_trace_view v = {0, 2, 2, NULL, NULL, NAMES};
    assert_int_equal(lf_trace_write_csv(tmp_path("e.csv"), &v), 0);
    assert_int_equal(lf_trace_write_json(tmp_path("e.json"), &v), 0);
    assert_int_equal(lf_trace_write_svg(tmp_path("e.svg"), &v), 0);
    char *s = slurp(tmp_path("e.csv"));
    assert_string_equal(s, "token,position,text,layer,math,code\n");
    free(s);
    s = slurp(tmp_path("e.json"));
    cJSON *root = cJSON_Parse(s);
    assert_non_null(root);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(root, "tokens")), 0);
    cJSON_Delete(root);
    free(s);
    s = slurp(tmp_path("e.svg"));
    check_svg_frame(s);
    check_xml(tmp_path("e.svg"));
    free(s);
}

typedef int (*writer)(const char *, const lf_trace_view *);
static const writer WRITERS[3] = {lf_trace_write_csv, lf_trace_write_json, lf_trace_write_svg};

static void expect_fail(writer wr, const char *path, const lf_trace_view *v) {
    assert_int_equal(wr(path, v), -1);
    assert_true(strlen(lf_last_error()) > 0);
    if (path) assert_false(lf_file_exists(path));
}

static void test_bad_args(void **state) {
    (void)state;
    const char *bad_labels[3] = {"a", NULL, "c"};
    const char *bad_names[2] = {"math", NULL};
    const char *path = tmp_path("bad.out");
    for (int i = 0; i < 3; i++) {
        lf_trace_view v = small_view();
        expect_fail(WRITERS[i], NULL, &v);
        expect_fail(WRITERS[i], path, NULL);
        v.n_tokens = -1; expect_fail(WRITERS[i], path, &v);
        v = small_view(); v.n_layers = 0; expect_fail(WRITERS[i], path, &v);
        v = small_view(); v.k = 0; expect_fail(WRITERS[i], path, &v);
        v = small_view(); v.w = NULL; expect_fail(WRITERS[i], path, &v);
        v = small_view(); v.labels = NULL; expect_fail(WRITERS[i], path, &v);
        v = small_view(); v.names = NULL; expect_fail(WRITERS[i], path, &v);
        v = small_view(); v.labels = bad_labels; expect_fail(WRITERS[i], path, &v);
        v = small_view(); v.names = bad_names; expect_fail(WRITERS[i], path, &v);
        /* shape error names what was wrong */
        v = small_view(); v.k = 0;
        WRITERS[i](path, &v);
        assert_non_null(strstr(lf_last_error(), "adapters"));
    }
}

static void test_missing_dir(void **state) {
    (void)state;
    lf_trace_view v = small_view();
    const char *path = tmp_path("no/such/dir/trace.out");
    for (int i = 0; i < 3; i++) {
        assert_int_equal(WRITERS[i](path, &v), -1);
        if (!strstr(lf_last_error(), path)) print_error("error lacks the path: %s\n", lf_last_error());
        assert_non_null(strstr(lf_last_error(), path));
    }
}

/* Rewriting replaces the file whole and leaves no temporary files. */
static void test_overwrite(void **state) {
    (void)state;
    lf_trace_view v = small_view();
    const char *path = tmp_path("over.csv");
    lf_test_write_file(path, "old", 3);
    assert_int_equal(lf_trace_write_csv(path, &v), 0);
    v.n_tokens = 1;
    assert_int_equal(lf_trace_write_csv(path, &v), 0);
    char *s = slurp(path);
    assert_int_equal(count(s, "\n"), 1 + 2 + 0);  /* header + 2 layers, text has no LF */
    free(s);
    DIR *d = opendir(lf_test_tmpdir());
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));) assert_null(strstr(e->d_name, ".tmp."));
    closedir(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_csv),        cmocka_unit_test(test_json),
        cmocka_unit_test(test_svg),        cmocka_unit_test(test_svg_large),
        cmocka_unit_test(test_empty),      cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_missing_dir), cmocka_unit_test(test_overwrite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
