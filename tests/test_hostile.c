/* test_hostile.c: files from strangers, through the library and through the
 * loraflow command line, on a small synthetic model (no ../shared needed).
 *
 * The per-format suites (test_ptzip.c, test_safetensors.c, test_config.c,
 * test_tokenizer.c) check most malformed files field by field; this file
 * adds what they lack: every hostile kind of file driven through the
 * commands users run (an error naming the file, a non-zero exit, never a
 * signal or a hang, never a command executed), the regressions of what the
 * fuzzers found (fuzz/), and inputs that used to cost quadratic time or
 * unbounded memory.  See docs/SECURITY.md. */
#include "common.h"
#include "../src/io/pickle.h"
#include "../src/core/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ helpers */

static const char *tmp(const char *name) {
    static char buf[8][512];
    static int slot;
    char *b = buf[slot++ % 8];
    snprintf(b, sizeof buf[0], "%s/%s", lf_test_tmpdir(), name);
    return b;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Seconds allowed for something that takes well under one; LF_TEST_SLOW
 * multiplies it (make test-valgrind sets it: memcheck is ~50x slower). */
static double time_limit(double s) {
    const char *e = getenv("LF_TEST_SLOW");
    double f = e ? atof(e) : 1;
    return s * (f >= 1 ? f : 1);
}

/* The small model every CLI case starts from: H 16, I 32, 2 layers, a
 * byte-level tokenizer of 300 pieces, two rank-4 LoRAs and a gate. */
static const char *base_model(void) {
    static char dir[512];
    if (dir[0]) return dir;
    snprintf(dir, sizeof dir, "%s/base", lf_test_tmpdir());
    lf_synth_spec sp;
    memset(&sp, 0, sizeof sp);
    sp.cfg = (lf_config){.hidden_size = 16, .intermediate_size = 32, .n_layers = 2, .n_heads = 2,
                         .n_kv_heads = 1, .head_dim = 8, .vocab_size = 300, .max_position_embeddings = 64,
                         .rms_norm_eps = 1e-5f, .rope_theta = 10000.0f, .bos_id = 1, .eos_id = 2};
    sp.dtype = LF_F32;
    sp.n_adapters = 2;
    sp.rank = 4;
    sp.alpha = 8;
    sp.adapter_dtype = LF_F32;
    sp.gate = 1;
    sp.seed = 3;
    if (lf_synth_model(dir, &sp, NULL, NULL) != 0) fail_msg("synth: %s", lf_last_error());
    return dir;
}

/* A copy of the base model folder (symbolic links to its files) named name;
 * returns its path.  Callers then replace the file they make hostile. */
static const char *variant(const char *name) {
    static char dir[8][512];
    static int slot;
    char *d = dir[slot++ % 8];
    snprintf(d, sizeof dir[0], "%s/%s", lf_test_tmpdir(), name);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "rm -rf '%s' && mkdir -p '%s' && cd '%s' && for f in config.json model.safetensors tokenizer.json "
             "gate.safetensors; do ln -s '%s'/$f $f; done && for a in lora_0 lora_1; do mkdir $a && "
             "ln -s '%s'/$a/adapter_config.json $a/ && ln -s '%s'/$a/adapter_model.safetensors $a/; done",
             d, d, d, base_model(), base_model(), base_model());
    assert_int_equal(system(cmd), 0);
    return d;
}

/* Replace dir/rel (a link to the base file) by a new file with these bytes. */
static void put(const char *dir, const char *rel, const void *data, size_t n) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    unlink(p);
    lf_test_write_file(p, data, n);
}

static void put_str(const char *dir, const char *rel, const char *s) { put(dir, rel, s, strlen(s)); }

/* Run `loraflow ARGS` (stderr folded in) under timeout(1); the output is
 * returned in *out.  Returns the exit status. */
static int run_cli(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int run_cli(char **out, const char *fmt, ...) {
    char args[6000], cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "timeout 300 %s %s 2>&1", lf_test_tool(), args);
    return lf_test_run(cmd, out);
}

/* `loraflow ARGS` must fail cleanly: exit status 1..127 (not a signal, not
 * timeout's 124), with every needle in its output. */
static void cli_refuses(const char *n1, const char *n2, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void cli_refuses(const char *n1, const char *n2, const char *fmt, ...) {
    char args[6000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    char *out = NULL;
    int rc = run_cli(&out, "%s", args);
    if (rc <= 0 || rc >= 124 || (n1 && !strstr(out, n1)) || (n2 && !strstr(out, n2))) {
        print_error("`loraflow %s` exited %d (expected an error 1..123 mentioning '%s' and '%s'); output:\n%s\n",
                    args, rc, n1 ? n1 : "", n2 ? n2 : "", out ? out : "");
        free(out);
        fail();
    }
    if (getenv("LF_TEST_VERBOSE")) print_message("  %s\n    -> %s", args, out);
    free(out);
}

/* A growable byte string (pickles, zips, JSON). */
typedef struct {
    uint8_t *p;
    size_t n, cap;
} bytes;

static void b_raw(bytes *b, const void *d, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void b_op(bytes *b, uint8_t op) { b_raw(b, &op, 1); }
static void b_s(bytes *b, const char *s) { b_raw(b, s, strlen(s)); }
static void b_u32(bytes *b, uint32_t v) {
    uint8_t t[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    b_raw(b, t, 4);
}
static void b_free(bytes *b) { free(b->p); memset(b, 0, sizeof *b); }

/* pickle pieces */
static void pk_str(bytes *b, const char *s) { b_op(b, 'X'); b_u32(b, (uint32_t)strlen(s)); b_s(b, s); }
static void pk_int(bytes *b, int64_t v) {
    if (v >= 0 && v < 256) { b_op(b, 'K'); b_op(b, (uint8_t)v); }
    else { b_op(b, 'J'); b_u32(b, (uint32_t)v); }
}
static void pk_global(bytes *b, const char *mod, const char *name) {
    b_op(b, 'c'); b_s(b, mod); b_op(b, '\n'); b_s(b, name); b_op(b, '\n');
}
/* _rebuild_tensor_v2(('storage', FloatStorage, key, 'cpu', numel), off, size, stride, False, {}) */
static void pk_tensor(bytes *b, const char *key, int64_t numel, int64_t off, int nd, const int64_t *size,
                      const int64_t *stride) {
    pk_global(b, "torch._utils", "_rebuild_tensor_v2");
    b_op(b, '(');
    b_op(b, '(');
    pk_str(b, "storage");
    pk_global(b, "torch", "FloatStorage");
    pk_str(b, key);
    pk_str(b, "cpu");
    pk_int(b, numel);
    b_op(b, 't');
    b_op(b, 'Q');
    pk_int(b, off);
    b_op(b, '('); for (int i = 0; i < nd; i++) pk_int(b, size[i]); b_op(b, 't');
    b_op(b, '('); for (int i = 0; i < nd; i++) pk_int(b, stride[i]); b_op(b, 't');
    b_op(b, 0x89);
    b_op(b, '}');
    b_op(b, 't');
    b_op(b, 'R');
}

/* A torch-layout zip "<top>/data.pkl" + storages "<top>/data/<i>" (given). */
static void write_pt(const char *path, const char *top, const bytes *pkl, const float *const *st,
                     const size_t *st_bytes, int nst) {
    char names[10][96];
    lf_zip_entry e[10];
    int n = 0;
    snprintf(names[n], 96, "%s/data.pkl", top);
    e[n] = (lf_zip_entry){names[n], pkl->p, pkl->n};
    n++;
    for (int i = 0; i < nst && n < 9; i++) {
        snprintf(names[n], 96, "%s/data/%d", top, i);
        e[n] = (lf_zip_entry){names[n], st[i], st_bytes[i]};
        n++;
    }
    snprintf(names[n], 96, "%s/version", top);
    e[n] = (lf_zip_entry){names[n], "3\n", 2};
    n++;
    assert_int_equal(lf_zip_write(path, e, n, 0), 0);
}

/* A pickle that calls os.system(cmd) the way torch.load would run it. */
static void evil_pickle(bytes *b, const char *mod, const char *fn, const char *cmd) {
    b_op(b, 0x80); b_op(b, 2);
    pk_global(b, mod, fn);
    pk_str(b, cmd);
    b_op(b, 0x85);
    b_op(b, 'R');
    b_op(b, '.');
}

/* safetensors bytes: 8-byte length + header + data_len bytes. */
static void st_bytes(bytes *b, const char *json, size_t data_len) {
    uint64_t n = strlen(json);
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)(n >> (8 * i));
    b_raw(b, len, 8);
    b_s(b, json);
    for (size_t i = 0; i < data_len; i++) b_op(b, (uint8_t)i);
}

static int expect_lib_error(int rc, const char *n1, const char *n2) {
    const char *e = lf_last_error();
    if (rc == 0 || (n1 && !strstr(e, n1)) || (n2 && !strstr(e, n2))) {
        print_error("expected an error mentioning '%s' and '%s', got rc=%d: %s\n", n1 ? n1 : "", n2 ? n2 : "", rc,
                    e);
        return 0;
    }
    if (getenv("LF_TEST_VERBOSE")) print_message("  -> %s\n", e);
    return 1;
}

/* ============================================ command line: bad arguments */

static void test_cli_ids_and_context(void **state) {
    (void)state;
    const char *m = base_model();
    /* token ids outside the vocabulary */
    cli_refuses("token id 99999999", "outside the vocabulary", "generate -m %s --ids 1,99999999 -n 2", m);
    cli_refuses("token id 300 ", "outside the vocabulary", "generate -m %s --ids 1,300 -n 2", m);
    cli_refuses("outside the vocabulary", NULL, "forward -m %s --ids 300 -o %s", m, tmp("f.safetensors"));
    cli_refuses("--ids", NULL, "generate -m %s --ids 1,-5", m);
    cli_refuses("--ids", NULL, "generate -m %s --ids 1,2147483648", m);
    cli_refuses("--ids", NULL, "generate -m %s --ids 1,99999999999999999999999", m);
    cli_refuses("--ids", NULL, "generate -m %s --ids ,,,", m);
    assert_int_not_equal(access(tmp("f.safetensors"), F_OK), 0); /* nothing written */
    /* prompts longer than the context */
    cli_refuses("more than the context of 4", NULL, "generate -m %s -p 'a prompt of many tokens' --ctx 4", m);
    cli_refuses("more than the context of 2", NULL, "generate -m %s --ids 1,5,6 --ctx 2", m);
    char *longp = malloc(200);
    memset(longp, 'x', 199);
    longp[199] = 0;
    /* without --ctx the context is capped at max_position_embeddings (64) */
    cli_refuses("more than the context of 64", NULL, "generate -m %s -p %s -n 4", m, longp);
    free(longp);
    cli_refuses("--ctx", NULL, "generate -m %s --ids 1 --ctx 0", m);
    cli_refuses("--ctx", NULL, "generate -m %s --ids 1 --ctx 99999999999", m);
    cli_refuses("-n", NULL, "generate -m %s --ids 1 -n -1", m);
    cli_refuses("-t", NULL, "generate -m %s --ids 1 -t 0", m);
    /* a text prompt that is not UTF-8 or holds control bytes is still just bytes */
    char *out = NULL;
    assert_int_equal(run_cli(&out, "tokenize -m %s \"$(printf '\\377\\001\\033[2J\\342\\226')\"", m), 0);
    free(out);
}

/* ============================================ pickles that run code */

static void test_cli_pickle_code(void **state) {
    (void)state;
    const char *victim = tmp("pwned");
    char cmd[600];
    snprintf(cmd, sizeof cmd, "touch %s", victim);
    static const char *const calls[][2] = {
        {"os", "system"}, {"posix", "system"}, {"builtins", "eval"}, {"builtins", "exec"},
        {"subprocess", "check_output"}, {"__main__", "Exploit"}, {"torch", "load"},
    };
    float st[4] = {0};
    const float *sts[1] = {st};
    size_t stn[1] = {sizeof st};
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        bytes b = {0};
        evil_pickle(&b, calls[i][0], calls[i][1], cmd);
        char want[160];
        snprintf(want, sizeof want, "refusing global '%s %s'", calls[i][0], calls[i][1]);
        /* as a gate */
        const char *d = variant("evil");
        char gate[600];
        snprintf(gate, sizeof gate, "%s/gate.pt", d);
        write_pt(gate, "archive", &b, sts, stn, 1);
        cli_refuses(want, "gate.pt", "generate -m %s -l a=%s/lora_0 -l b=%s/lora_1 -g %s --ids 1,5 -n 2", d, d, d,
                    gate);
        /* as an adapter's adapter_model.bin */
        char bin[600];
        snprintf(bin, sizeof bin, "%s/lora_0/adapter_model.bin", d);
        snprintf(cmd + 300, 300, "%s/lora_0/adapter_model.safetensors", d);
        unlink(cmd + 300);
        write_pt(bin, "adapter_model", &b, sts, stn, 1);
        cli_refuses(want, "adapter_model.bin", "generate -m %s -l a=%s/lora_0 -w 1 --ids 1,5 -n 2", d, d);
        /* as the model's pytorch_model.bin */
        char mb[600];
        snprintf(mb, sizeof mb, "%s/pytorch_model.bin", d);
        snprintf(cmd + 300, 300, "%s/model.safetensors", d);
        unlink(cmd + 300);
        write_pt(mb, "pytorch_model", &b, sts, stn, 1);
        cli_refuses(want, "pytorch_model.bin", "info -m %s", d);
        cli_refuses(want, NULL, "generate -m %s --ids 1,5 -n 2", d);
        b_free(&b);
        assert_int_not_equal(access(victim, F_OK), 0);
    }
    /* protocol-0 INST and protocol-2 NEWOBJ/OBJ forms */
    bytes b = {0};
    b_op(&b, '('); pk_str(&b, cmd); b_op(&b, 'i'); b_s(&b, "os\nsystem\n"); b_op(&b, '.');
    const char *d = variant("evil-inst");
    char gate[600];
    snprintf(gate, sizeof gate, "%s/gate.pt", d);
    write_pt(gate, "archive", &b, sts, stn, 1);
    cli_refuses("INST", "not allowed", "generate -m %s -l a=%s/lora_0 -l b=%s/lora_1 -g %s --ids 1 -n 1", d, d, d,
                gate);
    b_free(&b);
    b_op(&b, 0x80); b_op(&b, 2); pk_global(&b, "os", "system"); b_op(&b, ')'); b_op(&b, 0x81); b_op(&b, '.');
    write_pt(gate, "archive", &b, sts, stn, 1);
    cli_refuses("refusing global 'os system'", NULL, "generate -m %s -l a=%s/lora_0 -l b=%s/lora_1 -g %s --ids 1",
                d, d, d, gate);
    b_free(&b);
    assert_int_not_equal(access(victim, F_OK), 0);
}

/* ============================================ pickle structures */

static int pt_read_bytes(const bytes *pkl, const float *st, size_t stn, lf_tensorset *s) {
    const char *p = tmp("h.pt");
    const float *sts[1] = {st};
    write_pt(p, "archive", pkl, sts, &stn, 1);
    lf_tensorset_init(s);
    return lf_pt_read(p, s);
}

static void test_pickle_structures(void **state) {
    (void)state;
    float st[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
    lf_tensorset s;
    bytes b = {0};
    /* a list that contains itself (memo + APPENDS): nothing recurses over it */
    b_op(&b, 0x80); b_op(&b, 2);
    b_op(&b, ']'); b_op(&b, 'q'); b_op(&b, 0);
    b_op(&b, '('); b_op(&b, 'h'); b_op(&b, 0); b_op(&b, 'h'); b_op(&b, 0); b_op(&b, 'e');
    b_op(&b, '.');
    assert_true(expect_lib_error(pt_read_bytes(&b, st, sizeof st, &s), "holds a list, not a dict", NULL));
    lf_tensorset_free(&s);
    b_free(&b);
    /* a dict that is its own value */
    b_op(&b, 0x80); b_op(&b, 2);
    b_op(&b, '}'); b_op(&b, 'q'); b_op(&b, 0);
    pk_str(&b, "self"); b_op(&b, 'h'); b_op(&b, 0); b_op(&b, 's');
    b_op(&b, '.');
    assert_true(expect_lib_error(pt_read_bytes(&b, st, sizeof st, &s), "value of 'self' is a dict", NULL));
    lf_tensorset_free(&s);
    b_free(&b);
    /* a tuple holding itself is impossible to build; one holding a list
     * holding the tuple is, and goes nowhere */
    b_op(&b, 0x80); b_op(&b, 2);
    b_op(&b, ']'); b_op(&b, 'q'); b_op(&b, 0);
    b_op(&b, 'h'); b_op(&b, 0); b_op(&b, 0x85); b_op(&b, 'q'); b_op(&b, 1);
    b_op(&b, 'a'); /* list.append(tuple) */
    b_op(&b, '0'); b_op(&b, '}'); pk_str(&b, "k"); b_op(&b, 'h'); b_op(&b, 1); b_op(&b, 's');
    b_op(&b, '.');
    assert_true(expect_lib_error(pt_read_bytes(&b, st, sizeof st, &s), "value of 'k' is a tuple", NULL));
    lf_tensorset_free(&s);
    b_free(&b);
    /* memo slots overwritten a million times: constant memory */
    b_op(&b, 0x80); b_op(&b, 2); b_op(&b, '}');
    for (int i = 0; i < 1000000; i++) { b_op(&b, 'q'); b_op(&b, 0); }
    b_op(&b, '.');
    assert_int_equal(pt_read_bytes(&b, st, sizeof st, &s), 0);
    assert_int_equal(s.n, 0);
    lf_tensorset_free(&s);
    b_free(&b);
    /* __reduce__ of a class loraflow does not know, with NEWOBJ and BUILD */
    b_op(&b, 0x80); b_op(&b, 2);
    pk_global(&b, "mymodule", "MyModel"); b_op(&b, ')'); b_op(&b, 0x81); b_op(&b, '}'); b_op(&b, 'b'); b_op(&b, '.');
    assert_true(expect_lib_error(pt_read_bytes(&b, st, sizeof st, &s), "refusing global 'mymodule MyModel'", NULL));
    lf_tensorset_free(&s);
    b_free(&b);
    /* STACK_GLOBAL from values that are not strings, and from memo */
    b_op(&b, 0x80); b_op(&b, 4); pk_int(&b, 1); pk_int(&b, 2); b_op(&b, 0x93); b_op(&b, '.');
    assert_true(expect_lib_error(pt_read_bytes(&b, st, sizeof st, &s), "STACK_GLOBAL", "must be strings"));
    lf_tensorset_free(&s);
    b_free(&b);
    b_op(&b, 0x80); b_op(&b, 4); pk_str(&b, "os"); b_op(&b, 0x94); pk_str(&b, "system"); b_op(&b, 0x94);
    b_op(&b, '0'); b_op(&b, '0'); b_op(&b, 'h'); b_op(&b, 0); b_op(&b, 'h'); b_op(&b, 1); b_op(&b, 0x93); b_op(&b, '.');
    assert_true(expect_lib_error(pt_read_bytes(&b, st, sizeof st, &s), "refusing global 'os system'", NULL));
    lf_tensorset_free(&s);
    b_free(&b);
}

/* One tensor object (memo) under a great many keys: contiguous views are
 * free; strided ones would be copied once per key, so their copies are
 * bounded (PT_COPY_LIMIT); both finish quickly (the set used to be searched
 * linearly for each new key: quadratic in the key count). */
static void test_pickle_aliasing(void **state) {
    (void)state;
    float st[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
    const int nkeys = 200000;
    for (int strided = 0; strided < 2; strided++) {
        bytes b = {0};
        b_op(&b, 0x80); b_op(&b, 2); b_op(&b, '}');
        pk_str(&b, "k0");
        if (strided) pk_tensor(&b, "0", 12, 0, 2, (int64_t[]){4, 3}, (int64_t[]){1, 4});
        else pk_tensor(&b, "0", 12, 0, 2, (int64_t[]){3, 4}, (int64_t[]){4, 1});
        b_op(&b, 'q'); b_op(&b, 0);
        b_op(&b, 's');
        for (int i = 1; i < nkeys; i += 1000) {
            b_op(&b, '(');
            for (int k = i; k < i + 1000 && k < nkeys; k++) {
                char key[16];
                snprintf(key, sizeof key, "k%d", k);
                pk_str(&b, key);
                b_op(&b, 'h'); b_op(&b, 0);
            }
            b_op(&b, 'u');
        }
        b_op(&b, '.');
        lf_tensorset s;
        double t0 = now();
        int rc = pt_read_bytes(&b, st, sizeof st, &s);
        double dt = now() - t0;
        print_message("%d keys naming one %s tensor: %s in %.2f s\n", nkeys, strided ? "strided" : "contiguous",
                      rc ? "refused" : "read", dt);
        if (strided) {
            assert_true(expect_lib_error(rc, "PT_COPY_LIMIT", "copies"));
        } else {
            assert_int_equal(rc, 0);
            assert_int_equal(s.n, nkeys);
            assert_ptr_equal(s.tensors[0].data, s.tensors[nkeys - 1].data);
        }
        assert_true(dt < time_limit(30));
        lf_tensorset_free(&s);
        b_free(&b);
    }
}

/* ============================================ zips */

static void test_zip_names(void **state) {
    (void)state;
    /* entry names that would escape a folder if anything extracted them:
     * nothing does; they are outside the checkpoint's folder and refused */
    static const char *const names[] = {"../../etc/passwd", "/etc/passwd", "archive/../../x", "C:\\x",
                                        "archive/data/../../../x"};
    float st[4] = {0};
    bytes pkl = {0};
    b_op(&pkl, 0x80); b_op(&pkl, 2); b_op(&pkl, '}'); b_op(&pkl, '.');
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        lf_zip_entry e[2] = {{"archive/data.pkl", pkl.p, pkl.n}, {names[i], st, sizeof st}};
        const char *p = tmp("names.pt");
        assert_int_equal(lf_zip_write(p, e, 2, 0), 0);
        lf_tensorset s;
        lf_tensorset_init(&s);
        int rc = lf_pt_read(p, &s);
        if (i < 2 || i == 3) assert_true(expect_lib_error(rc, "outside the top-level folder", NULL));
        else assert_int_equal(rc, 0); /* inside "archive/" by name, and never used as a path */
        lf_tensorset_free(&s);
    }
    b_free(&pkl);
    /* a storage key that climbs out of data/: looked up by name, not found */
    bytes b = {0};
    b_op(&b, 0x80); b_op(&b, 2); b_op(&b, '}'); pk_str(&b, "w");
    pk_tensor(&b, "../version", 1, 0, 1, (int64_t[]){1}, (int64_t[]){1});
    b_op(&b, 's'); b_op(&b, '.');
    lf_tensorset s;
    assert_true(expect_lib_error(pt_read_bytes(&b, st, sizeof st, &s), "storage '../version'", "no entry"));
    lf_tensorset_free(&s);
    b_free(&b);
}

/* Hostile zips through the CLI: a compressed entry, an entry pointing
 * outside the file, overlapping entries, sizes that disagree. */
static void test_cli_zip(void **state) {
    (void)state;
    const char *d = variant("zip");
    char gate[600];
    snprintf(gate, sizeof gate, "%s/gate.pt", d);
    /* the gate as a .pt first (valid), then corrupted in place */
    lf_model *m = lf_model_load(base_model());
    assert_non_null(m);
    char l0[600], l1[600], gs[600];
    snprintf(l0, sizeof l0, "%s/lora_0", base_model());
    snprintf(l1, sizeof l1, "%s/lora_1", base_model());
    assert_int_equal(lf_model_add_adapter(m, "lora_0", l0), 0);
    assert_int_equal(lf_model_add_adapter(m, "lora_1", l1), 1);
    snprintf(gs, sizeof gs, "%s/gate.safetensors", base_model());
    lf_gate *g = lf_gate_load(gs, m);
    assert_non_null(g);
    assert_int_equal(lf_gate_save_pt(g, gate), 0);
    lf_gate_free(g);
    lf_model_free(m);
    size_t n;
    uint8_t *orig = (uint8_t *)lf_read_file(gate, &n, 1 << 20), *buf = malloc(n);
    assert_non_null(orig);
    char *out;
    assert_int_equal(run_cli(&out, "generate -m %s -l lora_0=%s/lora_0 -l lora_1=%s/lora_1 -g %s --ids 1,5 -n 2", d,
                             d, d, gate), 0);
    free(out);
    /* the central header of the first storage, "gate/data/0" */
    size_t c = 0;
    for (size_t i = 0; i + 57 <= n; i++)
        if (!memcmp(orig + i, "PK\x01\x02", 4) && !memcmp(orig + i + 46, "gate/data/0", 11)) c = i;
    assert_true(c > 0);
    struct { size_t at; uint32_t v; int width; const char *expect; } cases[] = {
        {c + 10, 8, 2, "compressed (method 8, deflate)"},           /* method */
        {c + 42, 0x7ffffff0u, 4, "outside the file"},               /* local header offset */
        {c + 20, 0x00fffff0u, 4, "compressed size"},                /* compressed size only */
        {c + 42, 0, 4, "different file"},                           /* points at data.pkl's header */
        {c + 8, 1, 2, "encrypted"},                                 /* flags */
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        memcpy(buf, orig, n);
        for (int i = 0; i < cases[k].width; i++) buf[cases[k].at + (size_t)i] = (uint8_t)(cases[k].v >> (8 * i));
        put(d, "gate.pt", buf, n);
        cli_refuses(cases[k].expect, "gate.pt", "generate -m %s -l lora_0=%s/lora_0 -l lora_1=%s/lora_1 -g %s --ids 1",
                    d, d, d, gate);
    }
    /* sizes grown into the next entry (both headers): overlap */
    memcpy(buf, orig, n);
    size_t l = 0;
    for (size_t i = 0; i + 41 <= n; i++)
        if (!memcmp(buf + i, "PK\x03\x04", 4) && !memcmp(buf + i + 30, "gate/data/0", 11)) l = i;
    uint32_t big = 200;
    for (int i = 0; i < 4; i++) {
        buf[c + 20 + i] = buf[c + 24 + i] = (uint8_t)(big >> (8 * i));
        buf[l + 18 + i] = buf[l + 22 + i] = (uint8_t)(big >> (8 * i));
    }
    put(d, "gate.pt", buf, n);
    cli_refuses("overlap", NULL, "generate -m %s -l lora_0=%s/lora_0 -l lora_1=%s/lora_1 -g %s --ids 1", d, d, d, gate);
    /* truncated in the middle */
    put(d, "gate.pt", orig, n / 2);
    cli_refuses("gate.pt", "zip", "generate -m %s -l lora_0=%s/lora_0 -l lora_1=%s/lora_1 -g %s --ids 1", d, d, d,
                gate);
    free(buf);
    free(orig);
}

/* ============================================ safetensors */

static void test_safetensors_overflow(void **state) {
    (void)state;
    static const struct { const char *json; const char *n1, *n2; } cases[] = {
        /* element count fits in 64 bits, times the dtype size it does not */
        {"{\"t\":{\"dtype\":\"I64\",\"shape\":[2147483648,2147483648],\"data_offsets\":[0,8]}}", "tensor 't'",
         "too large (byte size overflows)"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,4]}}", "tensor 't'",
         "non-negative integer"}, /* 2^62: above 2^53, not exact in JSON */
        {"{\"t\":{\"dtype\":\"BF16\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,2]}}", "tensor 't'",
         "too large"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[0,9007199254740992,9007199254740992],\"data_offsets\":[0,0]}}", NULL,
         NULL}, /* empty: zero bytes, valid */
        /* offsets at the edge of what JSON numbers hold */
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[9007199254740984,9007199254740992]}}",
         "tensor 't'", "run past the data section"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[18446744073709551608,0]}}", "tensor 't'",
         "data_offsets"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8e400]}}", "tensor 't'", "data_offsets"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[-0],\"data_offsets\":[0,0]}}", NULL, NULL},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1e-300],\"data_offsets\":[0,0]}}", "tensor 't'", "shape[0]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bytes b = {0};
        st_bytes(&b, cases[i].json, 16);
        const char *p = tmp("ovf.safetensors");
        lf_test_write_file(p, b.p, b.n);
        lf_tensorset s;
        lf_tensorset_init(&s);
        int rc = lf_safetensors_read(p, &s);
        if (cases[i].n1) assert_true(expect_lib_error(rc, cases[i].n1, cases[i].n2));
        else assert_int_equal(rc, 0);
        lf_tensorset_free(&s);
        b_free(&b);
    }
    /* nesting deeper than the JSON parser's limit: the error says so */
    bytes b = {0};
    for (int i = 0; i < 5000; i++) b_op(&b, '[');
    bytes f = {0};
    st_bytes(&f, (const char *)b.p, 0);
    const char *p = tmp("deep.safetensors");
    lf_test_write_file(p, f.p, f.n);
    lf_tensorset s;
    lf_tensorset_init(&s);
    assert_true(expect_lib_error(lf_safetensors_read(p, &s), "nested deeper than 1000 levels", "CJSON_NESTING_LIMIT"));
    lf_tensorset_free(&s);
    b_free(&b);
    b_free(&f);
}

/* A header of 300000 metadata keys: each key used to be looked up linearly
 * among the ones before it (quadratic), now sorted once. */
static void test_safetensors_many_keys(void **state) {
    (void)state;
    const int n = 300000;
    bytes b = {0};
    b_s(&b, "{\"__metadata__\":{");
    for (int i = 0; i < n; i++) {
        char e[48];
        snprintf(e, sizeof e, "%s\"key%07d\":\"v\"", i ? "," : "", i);
        b_s(&b, e);
    }
    b_s(&b, "},\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}");
    bytes f = {0};
    st_bytes(&f, (const char *)b.p, 4);
    const char *p = tmp("keys.safetensors");
    lf_test_write_file(p, f.p, f.n);
    b_free(&b);
    b_free(&f);
    lf_tensorset s;
    lf_tensorset_init(&s);
    double t0 = now();
    assert_int_equal(lf_safetensors_read(p, &s), 0);
    /* the same file again into the same set (a second shard repeating keys) */
    assert_int_equal(lf_safetensors_read(p, &s), -1); /* tensor 't' twice */
    double dt = now() - t0;
    print_message("%d metadata keys read in %.2f s\n", n, dt);
    assert_int_equal(s.nmeta, n);
    assert_string_equal(lf_tensorset_meta(&s, "key0299999"), "v");
    assert_true(dt < time_limit(30));
    lf_tensorset_free(&s);
}

/* A model of 2000 layers whose weight file puts 200000 other tensors
 * first: binding the 18000 weights searched the set linearly each time
 * (quadratic); readers now leave a name index (lf_tensorset_find). */
static void test_model_many_tensors(void **state) {
    (void)state;
    const int L = 2000, njunk = 200000;
    char dir[600];
    snprintf(dir, sizeof dir, "%s/deep-model", lf_test_tmpdir());
    mkdir(dir, 0755);
    char cfg[700];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    char json[512];
    snprintf(json, sizeof json, "{\"hidden_size\":2,\"intermediate_size\":1,\"num_hidden_layers\":%d,"
             "\"num_attention_heads\":1,\"vocab_size\":3}", L);
    lf_test_write_file(cfg, json, strlen(json));
    int n = njunk + 3 + 9 * L;
    lf_tensor *t = calloc((size_t)n, sizeof *t);
    char (*names)[64] = calloc((size_t)n, sizeof *names);
    static const float z[8];
    assert_non_null(t);
    assert_non_null(names);
    int k = 0;
    for (int i = 0; i < njunk; i++, k++) {
        snprintf(names[k], 64, "a.junk.%07d", i);
        t[k] = (lf_tensor){.name = names[k], .dtype = LF_F32, .ndim = 1, .shape = {0}, .data = z};
    }
#define W(nm, d0, d1)                                                                                   \
    do {                                                                                               \
        snprintf(names[k], 64, "%s", nm);                                                              \
        t[k] = (lf_tensor){.name = names[k], .dtype = LF_F32, .ndim = (d1) ? 2 : 1, .shape = {d0, d1}, \
                           .data = z, .nbytes = (size_t)(d0) * ((d1) ? (d1) : 1) * 4};                  \
        k++;                                                                                           \
    } while (0)
    W("model.embed_tokens.weight", 3, 2);
    W("lm_head.weight", 3, 2);
    W("model.norm.weight", 2, 0);
    static const char *const proj[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                        "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
    static const int shape[7][2] = {{2, 2}, {2, 2}, {2, 2}, {2, 2}, {1, 2}, {1, 2}, {2, 1}};
    for (int l = 0; l < L; l++) {
        char nm[64];
        snprintf(nm, sizeof nm, "model.layers.%d.input_layernorm.weight", l);
        W(nm, 2, 0);
        snprintf(nm, sizeof nm, "model.layers.%d.post_attention_layernorm.weight", l);
        W(nm, 2, 0);
        for (int p = 0; p < 7; p++) {
            snprintf(nm, sizeof nm, "model.layers.%d.%s.weight", l, proj[p]);
            W(nm, shape[p][0], shape[p][1]);
        }
    }
#undef W
    char wp[700];
    snprintf(wp, sizeof wp, "%s/model.safetensors", dir);
    assert_int_equal(lf_safetensors_write(wp, t, k, NULL, 0), 0);
    free(t);
    free(names);
    double t0 = now();
    lf_model *m = lf_model_load(dir);
    double dt = now() - t0;
    if (!m) fail_msg("%s", lf_last_error());
    print_message("model of %d layers behind %d other tensors loaded in %.2f s\n", L, njunk, dt);
    assert_int_equal(lf_model_config(m)->n_layers, L);
    assert_true(dt < time_limit(30));
    lf_model_free(m);
}

/* Hostile weights through the CLI. */
static void test_cli_safetensors(void **state) {
    (void)state;
    const char *d = variant("st");
    bytes b = {0};
    st_bytes(&b, "{\"model.embed_tokens.weight\":{\"dtype\":\"I64\",\"shape\":[2147483648,2147483648],"
                 "\"data_offsets\":[0,8]}}", 8);
    put(d, "model.safetensors", b.p, b.n);
    cli_refuses("model.embed_tokens.weight", "overflows", "info -m %s", d);
    cli_refuses("model.safetensors", "overflows", "generate -m %s --ids 1", d);
    b_free(&b);
    /* a header length far past the end of the file */
    uint8_t hl[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}'};
    put(d, "model.safetensors", hl, 10);
    cli_refuses("header length", "past the end", "info -m %s", d);
    /* a weight of the wrong shape for config.json */
    lf_tensorset s;
    char mp[600];
    snprintf(mp, sizeof mp, "%s/model.safetensors", base_model());
    lf_tensorset_init(&s);
    assert_int_equal(lf_safetensors_read(mp, &s), 0);
    lf_tensor *t = (lf_tensor *)lf_tensorset_find(&s, "model.norm.weight");
    t->shape[0] = 8; /* 16 in the model */
    t->nbytes = 32;
    snprintf(mp, sizeof mp, "%s/model.safetensors", d);
    unlink(mp);
    assert_int_equal(lf_safetensors_write(mp, s.tensors, s.n, NULL, 0), 0);
    lf_tensorset_free(&s);
    cli_refuses("model.norm.weight", "expected [16]", "generate -m %s --ids 1", d);
    /* the data truncated after a valid header */
    char bp[600];
    snprintf(bp, sizeof bp, "%s/model.safetensors", base_model());
    size_t n;
    char *whole = lf_read_file(bp, &n, 64 << 20);
    assert_non_null(whole);
    put(d, "model.safetensors", whole, n - 100);
    cli_refuses("model.safetensors", "truncated file?", "info -m %s", d);
    free(whole);
    /* a sharded index naming a shard outside the folder */
    unlink(mp);
    put_str(d, "model.safetensors.index.json", "{\"weight_map\":{\"model.norm.weight\":\"../base/model.safetensors\"}}");
    cli_refuses("shard names must be plain file names", NULL, "info -m %s", d);
}

/* ============================================ configs and adapters */

static void test_cli_config(void **state) {
    (void)state;
    const char *d = variant("cfg");
    static const struct { const char *json; const char *n1, *n2; } cases[] = {
        {"{\"hidden_size\":16,\"intermediate_size\":32,\"num_hidden_layers\":1000000000,\"num_attention_heads\":2,"
         "\"vocab_size\":300}", "num_hidden_layers", "above the supported limit"},
        {"{\"hidden_size\":16,\"intermediate_size\":32,\"num_hidden_layers\":2,\"num_attention_heads\":2,"
         "\"vocab_size\":300,\"rope_scaling\":{\"type\":\"linear\",\"factor\":2}}", "rope_scaling", "not supported"},
        {"{\"hidden_size\":16,\"intermediate_size\":32,\"num_hidden_layers\":2,\"num_attention_heads\":2,"
         "\"vocab_size\":2}", "eos_token_id", "outside the vocabulary"}, /* fuzz: default id >= vocab */
        {"{\"hidden_size\":1e400}", "hidden_size", NULL},
        {"[[[[[[[[[[", "config.json", "not valid JSON"},
        {"", "config.json", "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        put_str(d, "config.json", cases[i].json);
        cli_refuses(cases[i].n1, cases[i].n2, "generate -m %s --ids 1", d);
    }
    /* JSON nested past the parser's limit */
    char *deep = malloc(3003);
    for (int i = 0; i < 3000; i++) deep[i] = i % 2 ? '[' : '[';
    deep[3000] = 0;
    put_str(d, "config.json", deep);
    free(deep);
    cli_refuses("nested deeper than 1000 levels", "config.json", "info -m %s", d);
    /* a config.json larger than its limit (a sparse file: nothing to write) */
    char p[600];
    snprintf(p, sizeof p, "%s/config.json", d);
    unlink(p);
    lf_test_write_file(p, "{", 1);
    assert_int_equal(truncate(p, (off_t)17 << 20), 0);
    cli_refuses("CONFIG_FILE_LIMIT", "config.json", "info -m %s", d);
}

static void test_cli_adapter(void **state) {
    (void)state;
    const char *d = variant("adapter");
    static const struct { const char *json; const char *n1, *n2; } cases[] = {
        {"{\"r\":4,\"lora_alpha\":1e300,\"target_modules\":[\"q_proj\"]}", "lora_alpha", "1e+300"}, /* float overflow */
        {"{\"r\":4,\"lora_alpha\":-1e39,\"target_modules\":\"all-linear\"}", "lora_alpha", NULL},
        {"{\"r\":0,\"target_modules\":[\"q_proj\"]}", "'r'", "positive integer"},
        {"{\"r\":4.5,\"target_modules\":[\"q_proj\"]}", "'r'", NULL},
        {"{\"r\":1e300,\"target_modules\":[\"q_proj\"]}", "'r'", NULL},
        {"{\"r\":4,\"target_modules\":[\"q_proj\",\"evil\"]}", "target module 'evil'", NULL},
        {"{\"r\":4,\"target_modules\":\"all-linear\",\"layers_to_transform\":[99999999999,-5]}", "does not target",
         NULL},
        {"{\"r\":4,\"target_modules\":\"all-linear\",\"peft_type\":\"PREFIX_TUNING\"}", "peft_type", NULL},
        {"{\"r\":4,\"target_modules\":\"all-linear\",\"modules_to_save\":[\"lm_head\"]}", "modules_to_save", NULL},
        {"{\"r\":4,", "adapter_config.json", "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        put_str(d, "lora_0/adapter_config.json", cases[i].json);
        cli_refuses(cases[i].n1, cases[i].n2, "generate -m %s -l a=%s/lora_0 -w 1 --ids 1", d, d);
    }
    /* a rank_pattern makes lora_A's rows the rank: zero rows are refused
     * (the scale alpha / r would divide by zero) */
    put_str(d, "lora_0/adapter_config.json", "{\"r\":4,\"target_modules\":[\"q_proj\"],\"rank_pattern\":{\"q_proj\":0}}");
    float z[16];
    memset(z, 0, sizeof z);
    lf_tensor t[2] = {
        {.name = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", .dtype = LF_F32, .ndim = 2,
         .shape = {0, 16}, .data = z, .nbytes = 0},
        {.name = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", .dtype = LF_F32, .ndim = 2,
         .shape = {16, 0}, .data = z, .nbytes = 0},
    };
    char p[600];
    snprintf(p, sizeof p, "%s/lora_0/adapter_model.safetensors", d);
    unlink(p);
    assert_int_equal(lf_safetensors_write(p, t, 2, NULL, 0), 0);
    cli_refuses("lora_A.weight has shape [0, 16]", "rank", "generate -m %s -l a=%s/lora_0 -w 1 --ids 1", d, d);
    /* adapter weights whose names claim a layer far beyond the model */
    put_str(d, "lora_0/adapter_config.json", "{\"r\":4,\"target_modules\":\"all-linear\"}");
    t[0].name = "base_model.model.model.layers.999999.self_attn.q_proj.lora_A.weight";
    unlink(p);
    assert_int_equal(lf_safetensors_write(p, t, 1, NULL, 0), 0);
    cli_refuses("layer 999999", "2 layers", "generate -m %s -l a=%s/lora_0 -w 1 --ids 1", d, d);
}

/* ============================================ gates */

static void test_gate_files(void **state) {
    (void)state;
    lf_model *m = lf_model_load(base_model());
    assert_non_null(m);
    char l0[600], l1[600];
    snprintf(l0, sizeof l0, "%s/lora_0", base_model());
    snprintf(l1, sizeof l1, "%s/lora_1", base_model());
    assert_int_equal(lf_model_add_adapter(m, "lora_0", l0), 0);
    assert_int_equal(lf_model_add_adapter(m, "lora_1", l1), 1);
    float w[2 * 16], bias[2];
    for (int i = 0; i < 32; i++) w[i] = 0.01f * (float)i;
    bias[0] = -0.5f;
    bias[1] = 0.5f;
    /* valid gate tensors plus 200000 unrelated ones: loads in O(n log n) */
    const int njunk = 200000, nlayers = 100000;
    lf_tensor *t = calloc((size_t)njunk + 4, sizeof *t);
    char (*names)[64] = calloc((size_t)njunk + 4, sizeof *names);
    assert_non_null(t);
    assert_non_null(names);
    int n = 0;
    for (int l = 0; l < 2; l++) {
        snprintf(names[n], 64, "encoder.layers.%d.lora_fusion_gate.weight", l);
        t[n] = (lf_tensor){.name = names[n], .dtype = LF_F32, .ndim = 2, .shape = {2, 16}, .data = w, .nbytes = 128};
        n++;
        snprintf(names[n], 64, "encoder.layers.%d.weight_bias", l);
        t[n] = (lf_tensor){.name = names[n], .dtype = LF_F32, .ndim = 2, .shape = {1, 2}, .data = bias, .nbytes = 8};
        n++;
    }
    for (int i = 0; i < njunk; i++, n++) {
        snprintf(names[n], 64, "junk.%07d", i);
        t[n] = (lf_tensor){.name = names[n], .dtype = LF_F32, .ndim = 1, .shape = {0}, .data = w, .nbytes = 0};
    }
    const char *p = tmp("many.safetensors");
    assert_int_equal(lf_safetensors_write(p, t, n, NULL, 0), 0);
    double t0 = now();
    lf_gate *g = lf_gate_load(p, m);
    double dt = now() - t0;
    print_message("gate with %d extra tensors loaded in %.2f s\n", njunk, dt);
    assert_non_null(g);
    assert_true(dt < time_limit(30));
    lf_gate_free(g);
    /* a gate of 100000 layers (counting them was quadratic) */
    for (int i = 0; i < nlayers; i++) {
        snprintf(names[4 + i], 64, "encoder.layers.%d.lora_fusion_gate.weight", 2 + i);
        t[4 + i] = (lf_tensor){.name = names[4 + i], .dtype = LF_F32, .ndim = 1, .shape = {0}, .data = w, .nbytes = 0};
    }
    assert_int_equal(lf_safetensors_write(p, t, 4 + nlayers, NULL, 0), 0);
    t0 = now();
    assert_null(lf_gate_load(p, m));
    dt = now() - t0;
    print_message("gate of %d layers refused in %.2f s\n", nlayers + 2, dt);
    assert_true(expect_lib_error(-1, "the gate has 100002 layers", "the model has 2"));
    assert_true(dt < time_limit(30));
    /* layer numbers that do not fit an int are named, not wrapped */
    snprintf(names[4], 64, "encoder.layers.99999999999999999999.weight_bias");
    assert_int_equal(lf_safetensors_write(p, t, 5, NULL, 0), 0);
    assert_null(lf_gate_load(p, m));
    assert_true(expect_lib_error(-1, "encoder.layers.99999999999999999999.weight_bias", "is for layer"));
    snprintf(names[4], 64, "encoder.layers.2.lora_fusion_gate.weight");
    assert_int_equal(lf_safetensors_write(p, t, 5, NULL, 0), 0);
    assert_null(lf_gate_load(p, m));
    assert_true(expect_lib_error(-1, "the gate has 3 layers", "the model has 2"));
    /* a stored temperature that is not a number */
    static const char *const temps[] = {"nan", "inf", "-1", "1e999", "abc", ""};
    for (size_t i = 0; i < sizeof temps / sizeof temps[0]; i++) {
        lf_kv meta[1] = {{"temperature", (char *)temps[i]}};
        assert_int_equal(lf_safetensors_write(p, t, 4, meta, 1), 0);
        assert_null(lf_gate_load(p, m));
        assert_true(expect_lib_error(-1, "metadata 'temperature'", "expected a number"));
    }
    lf_kv ok[1] = {{"temperature", "1.1"}};
    assert_int_equal(lf_safetensors_write(p, t, 4, ok, 1), 0);
    g = lf_gate_load(p, m);
    assert_non_null(g);
    assert_float_equal(lf_gate_stored_temperature(g), 1.1f, 1e-6);
    lf_gate_free(g);
    free(t);
    free(names);
    lf_model_free(m);
}

/* ============================================ tokenizers */

/* tokenizer.json with byte fallback and a dummy "▁" prefix but no "▁"
 * piece: every space becomes three byte pieces.  The encoder sized its
 * symbol array at one per input byte and wrote past it (found by
 * fuzz_tokenize and fuzz_tokenizer_load). */
static char *no_space_piece_json(void) {
    bytes b = {0};
    b_s(&b, "{\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},{\"id\":1,\"content\":\"<s>\","
             "\"special\":true},{\"id\":2,\"content\":\"</s>\",\"special\":true}],"
             "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\xe2\x96\x81\"},"
             "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xe2\x96\x81\"}]},"
             "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"byte_fallback\":true,\"vocab\":{\"<unk>\":0,"
             "\"<s>\":1,\"</s>\":2");
    for (int i = 0; i < 256; i++) {
        char e[32];
        snprintf(e, sizeof e, ",\"<0x%02X>\":%d", i, 3 + i);
        b_s(&b, e);
    }
    b_s(&b, ",\"a\":259},\"merges\":[]}}");
    return (char *)b.p;
}

static void test_tokenizer_regressions(void **state) {
    (void)state;
    char *json = no_space_piece_json();
    const char *p = tmp("tokenizer.json");
    lf_test_write_file(p, json, strlen(json));
    free(json);
    lf_tokenizer *t = lf_tokenizer_load(p);
    assert_non_null(t);
    static const char *const texts[] = {" ", "  ", "a", " a ", "                                        "};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        int32_t *ids;
        int n;
        assert_int_equal(lf_tokenize(t, texts[i], 0, &ids, &n), 0);
        /* dummy prefix + each space: 3 byte pieces; 'a' one piece */
        size_t spaces = 0, as = 0;
        for (const char *c = texts[i]; *c; c++) spaces += *c == ' ', as += *c == 'a';
        assert_int_equal(n, (int)(3 * (spaces + 1) + as));
        char *back = lf_detokenize(t, ids, n);
        assert_non_null(back);
        free(back);
        free(ids);
    }
    /* a long run of spaces (the overflow grew with the text) */
    char *spaces = malloc(100001);
    memset(spaces, ' ', 100000);
    spaces[100000] = 0;
    int32_t *ids;
    int n;
    assert_int_equal(lf_tokenize(t, spaces, LF_TOK_BOS | LF_TOK_EOS | LF_TOK_SPECIAL, &ids, &n), 0);
    assert_int_equal(n, 3 * 100001 + 2);
    free(ids);
    free(spaces);
    /* ids outside the vocabulary are refused, not read */
    int32_t bad[3] = {1, 260, 2};
    assert_null(lf_detokenize(t, bad, 3));
    assert_true(expect_lib_error(-1, "token id 260", "outside the vocabulary"));
    bad[1] = INT32_MIN;
    assert_null(lf_detokenize(t, bad, 3));
    char buf[8];
    assert_int_equal(lf_token_bytes(t, -1, buf, 8), -1);
    assert_int_equal(lf_token_bytes(t, 99999999, buf, 8), -1);
    assert_null(lf_tokenizer_piece(t, 260));
    lf_tokenizer_free(t);
    /* the same tokenizer in a model folder, through the CLI */
    const char *d = variant("tok");
    json = no_space_piece_json();
    put_str(d, "tokenizer.json", json);
    free(json);
    char *out;
    assert_int_equal(run_cli(&out, "tokenize -m %s '   a   '", d), 0);
    free(out);
    /* hostile tokenizer files through the CLI */
    put_str(d, "tokenizer.json", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"<s>\":4194303},\"merges\":[]}}");
    cli_refuses("tokenizer.json", "no piece with id 0", "generate -m %s -p hello", d);
    put_str(d, "tokenizer.json", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"<s>\":4194304},\"merges\":[]}}");
    cli_refuses("tokenizer.json", "LF_TOK_MAX_VOCAB", "generate -m %s -p hello", d);
    put_str(d, "tokenizer.json", "{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}");
    cli_refuses("tokenizer.json", "only \"BPE\"", "generate -m %s -p hello", d);
    put(d, "tokenizer.model", "\x0a\xff\xff\xff\xff\x0f", 6);
    cli_refuses("tokenizer.model", "truncated", "generate -m %s -p hello", d);
}

/* Pieces chosen to collide in the piece hash table (FNV-1a, linear probing)
 * would make loading quadratic; the table's probe budget refuses them. */
static uint32_t fnv1a(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static void test_tokenizer_hash_flood(void **state) {
    (void)state;
    const int n = 20000;
    const uint32_t mask = 65535; /* the table of 2n..4n slots the loader picks for ~n pieces */
    bytes b = {0};
    b_s(&b, "{\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"vocab\":{\"<unk>\":0,\"<s>\":1,\"</s>\":2");
    int id = 3;
    char piece[32], e[64];
    for (uint64_t k = 0; id < n; k++) {
        snprintf(piece, sizeof piece, "p%llu", (unsigned long long)k);
        if ((fnv1a(piece) & mask) >= 64) continue; /* all in 64 neighbouring slots */
        snprintf(e, sizeof e, ",\"%s\":%d", piece, id++);
        b_s(&b, e);
    }
    b_s(&b, "},\"merges\":[]}}");
    const char *p = tmp("flood.json");
    lf_test_write_file(p, b.p, b.n);
    b_free(&b);
    double t0 = now();
    lf_tokenizer *t = lf_tokenizer_load(p);
    double dt = now() - t0;
    print_message("%d colliding pieces refused in %.2f s\n", n, dt);
    assert_null(t);
    assert_true(expect_lib_error(-1, "collide", "LF_TOK_PROBE_BUDGET"));
    assert_true(dt < time_limit(30));
}

/* ============================================ files that are not files */

/* A FIFO (or a device) where a file belongs must be refused at once: opening
 * a FIFO for reading blocks until a writer comes, which would hang loraflow
 * forever on a folder unpacked from an archive. */
static void test_cli_fifos(void **state) {
    (void)state;
    /* files that are looked for are "not found" unless they are regular files */
    static const char *const files[][2] = {
        {"config.json", "not a regular file"},
        {"tokenizer.json", "no tokenizer.model or tokenizer.json"},
        {"model.safetensors", "no weights found"},
        {"lora_0/adapter_config.json", "adapter_config.json not found"},
        {"lora_0/adapter_model.safetensors", "neither adapter_model.safetensors nor adapter_model.bin"},
        {"gate.safetensors", "not a regular file"},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        const char *d = variant("fifo");
        char p[700];
        snprintf(p, sizeof p, "%s/%s", d, files[i][0]);
        assert_int_equal(unlink(p), 0);
        assert_int_equal(mkfifo(p, 0644), 0);
        double t0 = now();
        cli_refuses(files[i][1], NULL,
                    "generate -m %s -l lora_0=%s/lora_0 -l lora_1=%s/lora_1 -g %s/gate.safetensors -p hi -n 1", d, d,
                    d, d);
        assert_true(now() - t0 < time_limit(60));
    }
    /* /dev/zero (endless) as config.json: not a regular file either */
    const char *d = variant("dev");
    char p[700];
    snprintf(p, sizeof p, "%s/config.json", d);
    unlink(p);
    assert_int_equal(symlink("/dev/zero", p), 0);
    cli_refuses("not a regular file", "config.json", "generate -m %s -p hi", d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cli_ids_and_context),
        cmocka_unit_test(test_cli_pickle_code),
        cmocka_unit_test(test_pickle_structures),
        cmocka_unit_test(test_pickle_aliasing),
        cmocka_unit_test(test_zip_names),
        cmocka_unit_test(test_cli_zip),
        cmocka_unit_test(test_safetensors_overflow),
        cmocka_unit_test(test_safetensors_many_keys),
        cmocka_unit_test(test_model_many_tensors),
        cmocka_unit_test(test_cli_safetensors),
        cmocka_unit_test(test_cli_config),
        cmocka_unit_test(test_cli_adapter),
        cmocka_unit_test(test_gate_files),
        cmocka_unit_test(test_tokenizer_regressions),
        cmocka_unit_test(test_tokenizer_hash_flood),
        cmocka_unit_test(test_cli_fifos),
    };
    return cmocka_run_group_tests_name("hostile", tests, NULL, NULL);
}
