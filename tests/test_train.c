/* test_train.c: data building, `loraflow grad` against the fixture (from
 * ids and from texts), and the training commands: the loss falls, a run
 * interrupted (by --max-steps and by SIGKILL) and resumed ends with the same
 * gate as an uninterrupted one, two MPI ranks equal one, and trained LoRAs
 * and models load back. */
#include "common.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../src/core/util.h"

#define FIX "fixtures/tiny-loraflow/"

static char cmdbuf[16384];

static int run_tool(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int run_tool(char **out, const char *fmt, ...) {
    char args[12000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmdbuf, sizeof cmdbuf, "%s %s 2>&1", lf_test_tool(), args);
    int rc = lf_test_run(cmdbuf, out);
    if (rc != 0) print_error("`%s` exited %d:\n%s\n", cmdbuf, rc, out ? *out : "");
    return rc;
}

static const char *tmp(const char *name) {
    static char buf[8][600];
    static int slot;
    char *b = buf[slot++ % 8];
    snprintf(b, 600, "%s/%s", lf_test_tmpdir(), name);
    return b;
}

static int files_equal(const char *a, const char *b) {
    size_t la, lb;
    char *x = lf_read_file(a, &la, 1 << 28), *y = lf_read_file(b, &lb, 1 << 28);
    int eq = x && y && la == lb && memcmp(x, y, la) == 0;
    free(x);
    free(y);
    return eq;
}

/* ---------- the fixture: grad from ids and from texts ---------- */

static void write_ids_line(FILE *f, const lf_tensor *ids, const lf_tensor *lab, const lf_tensor *mask, int row) {
    const int T = (int)ids->shape[ids->ndim - 1];
    const int64_t *I = (const int64_t *)ids->data + (size_t)row * T, *Lb = (const int64_t *)lab->data + (size_t)row * T;
    fprintf(f, "{\"input_ids\": [");
    for (int t = 0; t < T; t++) fprintf(f, "%s%lld", t ? "," : "", (long long)I[t]);
    fprintf(f, "], \"labels\": [");
    for (int t = 0; t < T; t++) fprintf(f, "%s%lld", t ? "," : "", (long long)Lb[t]);
    if (mask) {
        const int64_t *M = (const int64_t *)mask->data + (size_t)row * T;
        fprintf(f, "], \"attention_mask\": [");
        for (int t = 0; t < T; t++) fprintf(f, "%s%lld", t ? "," : "", (long long)M[t]);
    }
    fprintf(f, "]}\n");
}

/* Compare a `loraflow grad` output with group (single/batch) of train.safetensors. */
static void compare_grads(const char *path, const lf_tensorset *ref, const char *group) {
    lf_tensorset got;
    lf_tensorset_init(&got);
    assert_int_equal(lf_safetensors_read(path, &got), 0);
    char name[256];
    snprintf(name, sizeof name, "%s.loss", group);
    const float rl = *(const float *)lf_tensorset_find(ref, name)->data;
    const lf_tensor *gl = lf_tensorset_find(&got, "loss");
    assert_non_null(gl);
    const float cl = *(const float *)gl->data;
    if (!(fabs(cl - rl) <= 1e-5 * fabs(rl))) {
        print_error("%s: loss %.8g, expected %.8g\n", group, (double)cl, (double)rl);
        fail();
    }
    double G = 0;
    int n = 0;
    for (int i = 0; i < ref->n; i++) {
        snprintf(name, sizeof name, "%s.grad.", group);
        if (strncmp(ref->tensors[i].name, name, strlen(name))) continue;
        for (int64_t j = 0; j < lf_tensor_numel(&ref->tensors[i]); j++) G = fmax(G, fabs(((const float *)ref->tensors[i].data)[j]));
    }
    for (int i = 0; i < ref->n; i++) {
        snprintf(name, sizeof name, "%s.grad.", group);
        if (strncmp(ref->tensors[i].name, name, strlen(name))) continue;
        const lf_tensor *c = lf_tensorset_find(&got, ref->tensors[i].name + strlen(name));
        assert_non_null(c);
        assert_int_equal(c->nbytes, ref->tensors[i].nbytes);
        lf_test_check_close(ref->tensors[i].name, c->data, ref->tensors[i].data, (size_t)lf_tensor_numel(c), 1e-4 * G);
        n++;
    }
    assert_int_equal(n, 6);
    lf_tensorset_free(&got);
}

static void test_grad_fixture(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    lf_tensorset ref;
    lf_tensorset_init(&ref);
    assert_int_equal(lf_safetensors_read(lf_test_path(FIX "expected/train.safetensors"), &ref), 0);
    const char *adapters = NULL;
    char fusion[2048];
    snprintf(fusion, sizeof fusion, "-m %s -l lang=%s -l task=%s -g %s", lf_test_path(FIX "base"),
             lf_test_path(FIX "lora_lang"), lf_test_path(FIX "lora_task"), lf_test_path(FIX "gate.pt"));
    (void)adapters;
    /* from pre-tokenized ids: single, and the left-padded batch with its mask */
    FILE *f = fopen(tmp("single_ids.jsonl"), "w");
    write_ids_line(f, lf_tensorset_find(&ref, "single.input_ids"), lf_tensorset_find(&ref, "single.labels"), NULL, 0);
    fclose(f);
    f = fopen(tmp("batch_ids.jsonl"), "w");
    for (int r = 0; r < 2; r++)
        write_ids_line(f, lf_tensorset_find(&ref, "batch.input_ids"), lf_tensorset_find(&ref, "batch.labels"),
                       lf_tensorset_find(&ref, "batch.attention_mask"), r);
    fclose(f);
    char *out;
    assert_int_equal(run_tool(&out, "grad %s --data %s -o %s", fusion, tmp("single_ids.jsonl"), tmp("g1.safetensors")), 0);
    free(out);
    compare_grads(tmp("g1.safetensors"), &ref, "single");
    assert_int_equal(run_tool(&out, "grad %s --data %s -o %s", fusion, tmp("batch_ids.jsonl"), tmp("g2.safetensors")), 0);
    free(out);
    compare_grads(tmp("g2.safetensors"), &ref, "batch");

    /* from the example texts (the data builder), as the authors' files hold them */
    size_t len;
    char *txt = lf_read_file(lf_test_path(FIX "expected/manifest.json"), &len, 1 << 26);
    cJSON *man = cJSON_Parse(txt);
    free(txt);
    const cJSON *exs = cJSON_GetObjectItem(cJSON_GetObjectItem(man, "training"), "examples");
    f = fopen(tmp("batch_text.jsonl"), "w");
    FILE *f1 = fopen(tmp("single_text.jsonl"), "w");
    for (int i = 0; i < cJSON_GetArraySize(exs); i++) {
        const char *p = cJSON_GetObjectItem(cJSON_GetArrayItem(exs, i), "prompt_text")->valuestring;
        const char *rsp = cJSON_GetObjectItem(cJSON_GetArrayItem(exs, i), "response_text")->valuestring;
        /* recover (system, question, answer) from the built texts */
        cJSON *line = cJSON_CreateObject();
        const char *sys = strstr(p, "<<SYS>>\n");
        const char *q0, *q1 = strstr(p, " [/INST]");
        if (sys) {
            const char *se = strstr(sys, "\n<</SYS>>\n\n");
            char *s = lf_strndup(sys + 8, (size_t)(se - sys - 8));
            cJSON_AddStringToObject(line, "system", s);
            free(s);
            q0 = se + strlen("\n<</SYS>>\n\n");
        } else {
            cJSON_AddNullToObject(line, "system");
            q0 = p + strlen("<s>[INST] ");
        }
        char *q = lf_strndup(q0, (size_t)(q1 - q0));
        char *a = lf_strndup(rsp, strlen(rsp) - strlen(" </s>"));
        cJSON_AddStringToObject(line, "query", q);
        cJSON_AddStringToObject(line, "response", a);
        free(q);
        free(a);
        char *s = cJSON_PrintUnformatted(line);
        fprintf(f, "%s\n", s);
        if (i == 0) fprintf(f1, "%s\n", s);
        free(s);
        cJSON_Delete(line);
    }
    fclose(f);
    fclose(f1);
    cJSON_Delete(man);
    assert_int_equal(run_tool(&out, "grad %s --data %s -o %s", fusion, tmp("single_text.jsonl"), tmp("g3.safetensors")), 0);
    free(out);
    compare_grads(tmp("g3.safetensors"), &ref, "single");
    assert_int_equal(run_tool(&out, "grad %s --data %s -o %s", fusion, tmp("batch_text.jsonl"), tmp("g4.safetensors")), 0);
    free(out);
    compare_grads(tmp("g4.safetensors"), &ref, "batch");
    lf_tensorset_free(&ref);
}

/* The data builder gives the fixture's ids and labels for ex_a. */
static void test_example_builder(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    lf_tokenizer *tok = lf_tokenizer_load(lf_test_path(FIX "base/tokenizer.model"));
    assert_non_null(tok);
    lf_example ex;
    assert_int_equal(lf_example_build(tok, "Be brief.", "  What is 3 + 2?\n", "3 + 2 = 5. The answer is 5.", 4096, &ex), 0);
    lf_tensorset ref;
    lf_tensorset_init(&ref);
    assert_int_equal(lf_safetensors_read(lf_test_path(FIX "expected/train.safetensors"), &ref), 0);
    const lf_tensor *ids = lf_tensorset_find(&ref, "single.input_ids"), *lab = lf_tensorset_find(&ref, "single.labels");
    assert_int_equal(ex.n, ids->shape[0]);
    for (int t = 0; t < ex.n; t++) {
        assert_int_equal(ex.ids[t], ((const int64_t *)ids->data)[t]);
        assert_int_equal(ex.labels[t], ((const int64_t *)lab->data)[t]);
    }
    assert_int_equal(lf_example_label_count(&ex), 17);
    lf_example_free(&ex);
    /* tail truncation */
    assert_int_equal(lf_example_build(tok, "Be brief.", "What is 3 + 2?", "3 + 2 = 5. The answer is 5.", 20, &ex), 0);
    assert_int_equal(ex.n, 20);
    assert_int_equal(lf_example_label_count(&ex), 0);
    lf_example_free(&ex);
    lf_tensorset_free(&ref);
    lf_tokenizer_free(tok);
}

/* Malformed data lines: errors name the file and the line. */
static void test_data_errors(void **state) {
    (void)state;
    static const char *bad[] = {
        "{\"input_ids\": [1, 2, 3], \"labels\": [1, 2]}\n",
        "{\"input_ids\": [1, -5, 3]}\n",
        "not json\n",
        "{\"data\": [\"only one\"]}\n",
        "{\"unknown\": 1}\n",
        "{\"input_ids\": [1]}\n",
        /* fuzz finds: out-of-range numbers must be refused before any conversion */
        "{\"input_ids\": [1, 1e20, 3]}\n",
        "{\"input_ids\": [1, 2, 3], \"labels\": [-100, -1e300, 3]}\n",
        "{\"input_ids\": [1, 2.5, 3]}\n",
        "{\"input_ids\": [1, 2, 3], \"labels\": [-100, 4294967296, 3]}\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *p = tmp("bad.jsonl");
        char content[256];
        snprintf(content, sizeof content, "{\"input_ids\": [1, 5, 6], \"labels\": [-100, 5, 6]}\n%s", bad[i]);
        lf_test_write_file(p, content, strlen(content));
        lf_dataset *d = lf_dataset_load(p, NULL, NULL, 0);
        assert_null(d);
        assert_non_null(strstr(lf_last_error(), "bad.jsonl:2"));
    }
}

/* ---------- training runs on a small random model ---------- */

static const char *small_model(void) {
    static char dir[600];
    if (dir[0]) return dir;
    snprintf(dir, sizeof dir, "%s/small", lf_test_tmpdir());
    lf_synth_spec sp;
    memset(&sp, 0, sizeof sp);
    sp.cfg = (lf_config){48, 96, 2, 4, 2, 12, 64, 128, 1e-5f, 10000.0f, 0, 1, 2};
    sp.dtype = LF_F32;
    sp.adapter_dtype = LF_F32;
    sp.n_adapters = 2;
    sp.rank = 4;
    sp.alpha = 8;
    sp.gate = 1;
    sp.seed = 5;
    assert_int_equal(lf_synth_model(dir, &sp, NULL, NULL), 0);
    /* a learnable data set: sequences counting up by a fixed step */
    char path[700];
    snprintf(path, sizeof path, "%s/data.jsonl", dir);
    FILE *f = fopen(path, "w");
    for (int e = 0; e < 24; e++) {
        fprintf(f, "{\"input_ids\": [1");
        for (int t = 1; t < 16; t++) fprintf(f, ",%d", 3 + (e + t * 3) % 60);
        fprintf(f, "], \"labels\": [-100,-100,-100,-100");
        for (int t = 4; t < 16; t++) fprintf(f, ",%d", 3 + (e + t * 3) % 60);
        fprintf(f, "]}\n");
    }
    fclose(f);
    return dir;
}

static void train_gate_cmd(char *buf, size_t n, const char *out, const char *extra) {
    const char *d = small_model();
    int w = snprintf(buf, n,
             "train-gate -m %s -l a=%s/lora_0 -l b=%s/lora_1 --data %s/data.jsonl --dev %s/data.jsonl -o %s "
             "--lr 2e-2 --dropout 0 --batch 2 --grad-accum 2 --epochs 3 --seed 7 -t 1 --quiet %s",
             d, d, d, d, d, out, extra);
    assert_true(w > 0 && (size_t)w < n);
}

/* The gate's dev loss falls; interrupting and resuming changes nothing. */
static void test_train_gate_resume(void **state) {
    (void)state;
    char c[4096], *out;
    train_gate_cmd(c, sizeof c, tmp("gate_full.safetensors"), "");
    assert_int_equal(run_tool(&out, "%s", c), 0);
    /* "epoch 1/3: dev loss X" ... falls over the epochs */
    double first = NAN, last = NAN;
    for (char *p = out; (p = strstr(p, "/3: dev loss ")); p++) {
        double v = strtod(p + 13, NULL);
        if (isnan(first)) first = v;
        last = v;
    }
    print_message("dev loss %.4f -> %.4f\n", first, last);
    if (!(last < first - 0.01)) print_message("%s\n", out);
    assert_true(last < first - 0.01);
    free(out);

    /* stop after 4 of the 18 steps, then resume from the checkpoint */
    char extra[1024];
    snprintf(extra, sizeof extra, "--checkpoint %s --checkpoint-every 1 --max-steps 4", tmp("ck.safetensors"));
    train_gate_cmd(c, sizeof c, tmp("gate_part.safetensors"), extra);
    assert_int_equal(run_tool(&out, "%s", c), 0);
    free(out);
    snprintf(extra, sizeof extra, "--checkpoint %s --checkpoint-every 1 --resume", tmp("ck.safetensors"));
    train_gate_cmd(c, sizeof c, tmp("gate_resumed.safetensors"), extra);
    assert_int_equal(run_tool(&out, "%s", c), 0);
    free(out);
    assert_true(files_equal(tmp("gate_full.safetensors"), tmp("gate_resumed.safetensors")));

    /* SIGKILL at random moments, resume until done: always the same gate */
    srand((unsigned)time(NULL));
    for (int attempt = 0; attempt < 3; attempt++) {
        unlink(tmp("ck2.safetensors"));
        snprintf(extra, sizeof extra, "--checkpoint %s --checkpoint-every 1", tmp("ck2.safetensors"));
        train_gate_cmd(c, sizeof c, tmp("gate_killed.safetensors"), extra);
        char full[8192];
        snprintf(full, sizeof full, "exec %s %s >/dev/null 2>&1", lf_test_tool(), c);
        pid_t pid = fork();
        if (pid == 0) {
            execl("/bin/sh", "sh", "-c", full, (char *)NULL);
            _exit(127);
        }
        usleep((useconds_t)(50000 + rand() % 400000));
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        const char *res = access(tmp("ck2.safetensors"), F_OK) == 0 ? "--resume" : "";
        snprintf(extra, sizeof extra, "--checkpoint %s --checkpoint-every 1 %s", tmp("ck2.safetensors"), res);
        train_gate_cmd(c, sizeof c, tmp("gate_killed.safetensors"), extra);
        assert_int_equal(run_tool(&out, "%s", c), 0);
        free(out);
        assert_true(files_equal(tmp("gate_full.safetensors"), tmp("gate_killed.safetensors")));
    }
    /* a checkpoint of another run is refused */
    train_gate_cmd(c, sizeof c, tmp("gate_x.safetensors"), "");
    char other[8192];
    snprintf(other, sizeof other, "%s --lr 1e-2 --checkpoint %s --resume 2>&1", c, tmp("ck.safetensors"));
    snprintf(cmdbuf, sizeof cmdbuf, "%s %s", lf_test_tool(), other);
    assert_int_not_equal(lf_test_run(cmdbuf, &out), 0);
    assert_non_null(strstr(out, "another run"));
    free(out);
    /* the trained gate loads and drives generation; --format pt writes the authors' layout */
    const char *d = small_model();
    assert_int_equal(run_tool(&out, "generate -m %s -l a=%s/lora_0 -l b=%s/lora_1 -g %s --ids 1,5,9 -n 4", d, d, d,
                              tmp("gate_full.safetensors")), 0);
    free(out);
    train_gate_cmd(c, sizeof c, tmp("gate.pt"), "--format pt --max-steps 2");
    assert_int_equal(run_tool(&out, "%s", c), 0);
    free(out);
    lf_tensorset pt;
    lf_tensorset_init(&pt);
    assert_int_equal(lf_pt_read(tmp("gate.pt"), &pt), 0);
    assert_non_null(lf_tensorset_find(&pt, "encoder.layers.1.lora_fusion_gate.weight"));
    assert_non_null(lf_tensorset_find(&pt, "encoder.layers.0.weight_bias"));
    lf_tensorset_free(&pt);
}

/* Two MPI ranks give the gate of one process with the same global batch. */
static void test_mpi(void **state) {
    (void)state;
    char *out;
    if (lf_test_run("command -v mpirun >/dev/null 2>&1", NULL) != 0) {
        print_message("SKIP test_mpi: mpirun not found (install openmpi-bin libopenmpi-dev)\n");
        skip();
    }
    if (lf_test_run("nm build/loraflow 2>/dev/null | grep -q MPI_Allreduce", NULL) != 0 &&
        lf_test_run("ldd build/loraflow 2>/dev/null | grep -q libmpi", NULL) != 0) {
        print_message("SKIP test_mpi: loraflow was built without Open MPI\n");
        skip();
    }
    char c[4096], full[8192];
    train_gate_cmd(c, sizeof c, tmp("gate_r1.safetensors"), "");
    assert_int_equal(run_tool(&out, "%s", c), 0);
    free(out);
    train_gate_cmd(c, sizeof c, tmp("gate_r2.safetensors"), "");
    snprintf(full, sizeof full, "mpirun --allow-run-as-root --oversubscribe -x ASAN_OPTIONS=detect_leaks=0 -np 2 %s %s 2>&1", lf_test_tool(), c);
    int rc = lf_test_run(full, &out);
    if (rc) print_error("%s\n", out);
    assert_int_equal(rc, 0);
    free(out);
    lf_tensorset a, b;
    lf_tensorset_init(&a);
    lf_tensorset_init(&b);
    assert_int_equal(lf_safetensors_read(tmp("gate_r1.safetensors"), &a), 0);
    assert_int_equal(lf_safetensors_read(tmp("gate_r2.safetensors"), &b), 0);
    assert_int_equal(a.n, b.n);
    for (int i = 0; i < a.n; i++) {
        const lf_tensor *t = lf_tensorset_find(&b, a.tensors[i].name);
        assert_non_null(t);
        size_t n = (size_t)lf_tensor_numel(t);
        lf_test_check_close(t->name, t->data, a.tensors[i].data, n, 1e-4 * lf_test_scale(a.tensors[i].data, n));
    }
    lf_tensorset_free(&a);
    lf_tensorset_free(&b);
}

/* train-lora writes a PEFT folder that loads; train-base a model that loads;
 * both lower the loss of their data. */
static void test_train_lora_and_base(void **state) {
    (void)state;
    const char *d = small_model();
    char data[700], *out;
    snprintf(data, sizeof data, "%s/data.jsonl", d);
    lf_dataset *ds = lf_dataset_load(data, NULL, NULL, 0);
    assert_non_null(ds);
    lf_model *m = lf_model_load(d);
    double before, after;
    assert_int_equal(lf_eval_loss(m, NULL, 1, NULL, ds, &before, NULL), 0);
    lf_model_free(m);

    assert_int_equal(run_tool(&out, "train-lora -m %s --data %s -o %s --rank 4 --alpha 8 --targets q_proj,v_proj,down_proj "
                              "--lr 2e-2 --epochs 3 --batch 4 --quiet -t 1", d, data, tmp("newlora")), 0);
    free(out);
    m = lf_model_load(d);
    assert_int_equal(lf_model_add_adapter(m, "new", tmp("newlora")), 0);
    float w1 = 1;
    assert_int_equal(lf_eval_loss(m, NULL, 1, &w1, ds, &after, NULL), 0);
    print_message("train-lora: loss %.4f -> %.4f\n", before, after);
    assert_true(after < before - 0.05);
    lf_model_free(m);

    /* search-weights (LoRA-Hub) puts weight on the trained LoRA, none on a random one */
    assert_int_equal(run_tool(&out, "search-weights -m %s -l new=%s -l rnd=%s/lora_0 --data %s --budget 24 --seed 3 -t 1",
                              d, tmp("newlora"), d, data), 0);
    char *w = strstr(out, "-w ");
    assert_non_null(w);
    double ws0 = strtod(w + 3, &w), ws1 = strtod(w + 1, NULL);
    print_message("search-weights: w = %.3f, %.3f\n", ws0, ws1);
    assert_true(ws0 > 0.3);
    assert_true(fabs(ws1) < ws0);
    free(out);

    assert_int_equal(run_tool(&out, "train-base -m %s --data %s -o %s --lr 1e-2 --epochs 2 --batch 4 --quiet -t 1", d, data,
                              tmp("newbase")), 0);
    free(out);
    m = lf_model_load(tmp("newbase"));
    assert_non_null(m);
    assert_int_equal(lf_eval_loss(m, NULL, 1, NULL, ds, &after, NULL), 0);
    print_message("train-base: loss %.4f -> %.4f\n", before, after);
    assert_true(after < before - 0.05);
    lf_model_free(m);
    lf_dataset_free(ds);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_example_builder),   cmocka_unit_test(test_data_errors),
        cmocka_unit_test(test_grad_fixture),      cmocka_unit_test(test_train_gate_resume),
        cmocka_unit_test(test_mpi),               cmocka_unit_test(test_train_lora_and_base),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
