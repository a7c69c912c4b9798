/* test_ptzip.c: PyTorch zip checkpoints: the fixtures, write/read round trips,
 * strided views of shared storages, and hostile pickles and zips that must be
 * refused with an error naming the file and what was refused. */
#include "common.h"
#include "../src/io/pickle.h"
#include "../src/core/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------ helpers */

static const char *tmp_path(const char *name) {
    static char buf[4][512];
    static int slot = 0;
    char *b = buf[slot++ % 4];
    snprintf(b, 512, "%s/%s", lf_test_tmpdir(), name);
    return b;
}

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

/* A growable pickle being assembled by hand. */
typedef struct {
    uint8_t *p;
    size_t n, cap;
} pkb;

static void pk_raw(pkb *b, const void *d, size_t n) {
    if (!n) return;
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void pk_op(pkb *b, uint8_t op) { pk_raw(b, &op, 1); }
static void pk_u32(pkb *b, uint32_t v) {
    uint8_t t[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    pk_raw(b, t, 4);
}
static void pk_str(pkb *b, const char *s) { pk_op(b, 'X'); pk_u32(b, (uint32_t)strlen(s)); pk_raw(b, s, strlen(s)); }
static void pk_sstr(pkb *b, const char *s) { pk_op(b, 0x8c); pk_op(b, (uint8_t)strlen(s)); pk_raw(b, s, strlen(s)); }
static void pk_int(pkb *b, int64_t v) {
    if (v >= 0 && v < 256) { pk_op(b, 'K'); pk_op(b, (uint8_t)v); }
    else if (v >= INT32_MIN && v <= INT32_MAX) { pk_op(b, 'J'); pk_u32(b, (uint32_t)v); }
    else { pk_op(b, 0x8a); pk_op(b, 8); pk_u32(b, (uint32_t)v); pk_u32(b, (uint32_t)((uint64_t)v >> 32)); }
}
static void pk_global(pkb *b, const char *mod, const char *name) {
    pk_op(b, 'c');
    pk_raw(b, mod, strlen(mod)); pk_op(b, '\n');
    pk_raw(b, name, strlen(name)); pk_op(b, '\n');
}
static void pk_proto(pkb *b) { pk_op(b, 0x80); pk_op(b, 2); }
static void pk_tuple(pkb *b, const int64_t *v, int n) {
    pk_op(b, '(');
    for (int i = 0; i < n; i++) pk_int(b, v[i]);
    pk_op(b, 't');
}
static void pk_free(pkb *b) { free(b->p); memset(b, 0, sizeof *b); }

/* _rebuild_tensor_v2(('storage', torch.<cls>, key, 'cpu', numel), off, size, stride, False, OrderedDict()) */
static void pk_tensor(pkb *b, const char *cls, const char *key, int64_t numel, int64_t off, int ndim,
                      const int64_t *size, const int64_t *stride) {
    pk_global(b, "torch._utils", "_rebuild_tensor_v2");
    pk_op(b, '(');
    pk_op(b, '(');
    pk_str(b, "storage");
    pk_global(b, "torch", cls);
    pk_str(b, key);
    pk_str(b, "cpu");
    pk_int(b, numel);
    pk_op(b, 't');
    pk_op(b, 'Q');
    pk_int(b, off);
    pk_tuple(b, size, ndim);
    pk_tuple(b, stride, ndim);
    pk_op(b, 0x89);
    pk_global(b, "collections", "OrderedDict");
    pk_op(b, ')');
    pk_op(b, 'R');
    pk_op(b, 't');
    pk_op(b, 'R');
}

/* PROTO 2, {} and MARK: a dict's items follow; pk_dict_end closes it. */
static void pk_dict_begin(pkb *b) { pk_proto(b); pk_op(b, '}'); pk_op(b, '('); }
static void pk_dict_end(pkb *b) { pk_op(b, 'u'); pk_op(b, '.'); }

/* Storage "0": 12 floats 0, 1, ..., 11. */
static const float storage0[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};

/* Zip "archive/data.pkl" + "archive/data/0" (storage0) + version into path. */
static void write_ckpt_top(const char *path, const char *top, const pkb *b) {
    char n0[64], n1[64], n2[64];
    snprintf(n0, sizeof n0, "%s/data.pkl", top);
    snprintf(n1, sizeof n1, "%s/data/0", top);
    snprintf(n2, sizeof n2, "%s/version", top);
    lf_zip_entry e[3] = {{n0, b->p, b->n}, {n1, storage0, sizeof storage0}, {n2, "3\n", 2}};
    assert_int_equal(lf_zip_write(path, e, 3, 0), 0);
}
static void write_ckpt(const char *path, const pkb *b) { write_ckpt_top(path, "archive", b); }

/* lf_pt_read must fail with the path and every given needle in the message,
 * adding nothing to the set. */
static void expect_refused(const char *path, const char *needle1, const char *needle2) {
    lf_tensorset s;
    lf_tensorset_init(&s);
    int rc = lf_pt_read(path, &s);
    const char *err = lf_last_error();
    if (rc != -1 || !strstr(err, path) || (needle1 && !strstr(err, needle1)) || (needle2 && !strstr(err, needle2))) {
        print_error("expected a refusal naming '%s' / '%s' / '%s'; got rc=%d: %s\n", path,
                    needle1 ? needle1 : "", needle2 ? needle2 : "", rc, err);
        lf_tensorset_free(&s);
        fail();
    }
    if (getenv("PTZIP_VERBOSE")) print_message("refused: %s\n", err);
    assert_int_equal(s.n, 0);
    lf_tensorset_free(&s);
}

static void refuse_pickle(pkb *b, const char *needle1, const char *needle2) {
    const char *path = tmp_path("hostile.pt");
    write_ckpt(path, b);
    expect_refused(path, needle1, needle2);
    pk_free(b);
}

static int ptr_in_map(const lf_tensorset *s, const void *p, size_t n) {
    for (int i = 0; i < s->nmaps; i++) {
        const char *a = s->maps[i].addr;
        if ((const char *)p >= a && (const char *)p + n <= a + s->maps[i].size) return 1;
    }
    return 0;
}

static float f32_at(const lf_tensor *t, size_t i) { return ((const float *)t->data)[i]; }

static void check_shape(const lf_tensor *t, int ndim, int64_t d0, int64_t d1) {
    assert_non_null(t);
    assert_int_equal(t->ndim, ndim);
    assert_int_equal(t->shape[0], d0);
    if (ndim > 1) assert_int_equal(t->shape[1], d1);
}

/* --------------------------------------------------------- the fixtures */

/* Expected values below were printed by an independent reader: python3's
 * zipfile + pickle.Unpickler with find_class/persistent_load stubs that
 * decode the storage bytes with struct (no torch, no loraflow code). */
static void test_gate_fixture(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    const char *path = lf_test_path("fixtures/tiny-loraflow/gate.pt");
    lf_tensorset s;
    lf_tensorset_init(&s);
    assert_int_equal(lf_pt_read(path, &s), 0);
    assert_int_equal(s.n, 6);
    assert_int_equal(s.npaths, 1);
    assert_string_equal(s.paths[0], path);
    for (int l = 0; l < 3; l++) {
        char name[96];
        snprintf(name, sizeof name, "encoder.layers.%d.weight_bias", l);
        const lf_tensor *b = lf_tensorset_find(&s, name);
        check_shape(b, 2, 1, 2);
        snprintf(name, sizeof name, "encoder.layers.%d.lora_fusion_gate.weight", l);
        const lf_tensor *w = lf_tensorset_find(&s, name);
        check_shape(w, 2, 2, 64);
        assert_int_equal(b->dtype, LF_F32);
        assert_int_equal(w->dtype, LF_F32);
        assert_int_equal(w->nbytes, 2 * 64 * 4);
        assert_int_equal(w->source, 0);
        assert_true(ptr_in_map(&s, w->data, w->nbytes)); /* mapped, not copied */
        assert_true(ptr_in_map(&s, b->data, b->nbytes));
    }
    assert_string_equal(s.tensors[0].name, "encoder.layers.0.weight_bias"); /* dict order kept */
    const lf_tensor *b0 = lf_tensorset_find(&s, "encoder.layers.0.weight_bias");
    assert_float_equal(f32_at(b0, 0), -0.2660033702850342f, 0);
    assert_float_equal(f32_at(b0, 1), 0.5172548294067383f, 0);
    assert_float_equal(f32_at(lf_tensorset_find(&s, "encoder.layers.2.weight_bias"), 1), 0.49065303802490234f, 0);
    assert_float_equal(f32_at(lf_tensorset_find(&s, "encoder.layers.1.lora_fusion_gate.weight"), 64 + 63),
                       0.21841531991958618f, 0);
    assert_float_equal(f32_at(lf_tensorset_find(&s, "encoder.layers.2.lora_fusion_gate.weight"), 17),
                       -0.015946760773658752f, 0);
    lf_tensorset_free(&s);
}

static void test_adapter_fixture(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    const char *path = lf_test_path("fixtures/tiny-loraflow/lora_task/adapter_model.bin");
    lf_tensorset s;
    lf_tensorset_init(&s);
    assert_int_equal(lf_pt_read(path, &s), 0);
    assert_int_equal(s.n, 42);
    static const struct { const char *mod; int in, out; } mods[] = {
        {"self_attn.q_proj", 64, 64}, {"self_attn.k_proj", 64, 64}, {"self_attn.v_proj", 64, 64},
        {"self_attn.o_proj", 64, 64}, {"mlp.gate_proj", 64, 176},   {"mlp.up_proj", 64, 176},
        {"mlp.down_proj", 176, 64},
    };
    for (int l = 0; l < 3; l++) {
        for (int m = 0; m < 7; m++) {
            char name[160];
            snprintf(name, sizeof name, "base_model.model.model.layers.%d.%s.lora_A.weight", l, mods[m].mod);
            const lf_tensor *a = lf_tensorset_find(&s, name);
            check_shape(a, 2, 16, mods[m].in);
            snprintf(name, sizeof name, "base_model.model.model.layers.%d.%s.lora_B.weight", l, mods[m].mod);
            const lf_tensor *b = lf_tensorset_find(&s, name);
            check_shape(b, 2, mods[m].out, 16);
            assert_int_equal(a->dtype, LF_F32);
            assert_int_equal(b->dtype, LF_F32);
            assert_true(ptr_in_map(&s, a->data, a->nbytes));
            assert_true(ptr_in_map(&s, b->data, b->nbytes));
        }
    }
    const lf_tensor *t = lf_tensorset_find(&s, "base_model.model.model.layers.2.mlp.down_proj.lora_A.weight");
    assert_float_equal(f32_at(t, 15 * 176 + 175), 0.0376233272254467f, 0);
    t = lf_tensorset_find(&s, "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight");
    assert_float_equal(f32_at(t, 5 * 16 + 7), 0.15629535913467407f, 0);
    t = lf_tensorset_find(&s, "base_model.model.model.layers.0.mlp.gate_proj.lora_B.weight");
    assert_float_equal(f32_at(t, 175 * 16 + 15), 0.009074283763766289f, 0);
    lf_tensorset_free(&s);
}

/* Fixture -> lf_pt_write -> lf_pt_read gives the same tensors. */
static void test_fixture_rewrite(void **state) {
    (void)state;
    LF_REQUIRE_SHARED();
    lf_tensorset a, b;
    lf_tensorset_init(&a);
    lf_tensorset_init(&b);
    assert_int_equal(lf_pt_read(lf_test_path("fixtures/tiny-loraflow/lora_task/adapter_model.bin"), &a), 0);
    const char *out = tmp_path("adapter_rewritten.bin");
    assert_int_equal(lf_pt_write(out, "adapter_model", a.tensors, a.n), 0);
    assert_int_equal(lf_pt_read(out, &b), 0);
    assert_int_equal(b.n, a.n);
    for (int i = 0; i < a.n; i++) {
        assert_string_equal(a.tensors[i].name, b.tensors[i].name);
        assert_int_equal(a.tensors[i].nbytes, b.tensors[i].nbytes);
        assert_memory_equal(a.tensors[i].data, b.tensors[i].data, a.tensors[i].nbytes);
    }
    lf_tensorset_free(&a);
    lf_tensorset_free(&b);
}

/* ------------------------------------------------------------ round trips */

static const float rt_f32[6] = {1.5f, -2.25f, 3, 4, 5, 6};
static const uint16_t rt_f16[4] = {0x3c00, 0xc000, 0x3800, 0x7bff};          /* 1, -2, 0.5, 65504 */
static const uint16_t rt_bf16[6] = {0x3f80, 0xbfc0, 0x4000, 0, 0x8000, 0x4040}; /* 1, -1.5, 2, 0, -0, 3 */
static const int64_t rt_i64[2] = {1, -(INT64_C(1) << 40)};
static const int32_t rt_i32[1] = {7};

static int make_rt_tensors(lf_tensor *t) {
    memset(t, 0, 6 * sizeof *t);
    t[0] = (lf_tensor){.name = "w.f32", .dtype = LF_F32, .ndim = 2, .shape = {2, 3}, .data = rt_f32, .nbytes = 24};
    t[1] = (lf_tensor){.name = "w.f16", .dtype = LF_F16, .ndim = 1, .shape = {4}, .data = rt_f16, .nbytes = 8};
    t[2] = (lf_tensor){.name = "w.bf16", .dtype = LF_BF16, .ndim = 3, .shape = {3, 1, 2}, .data = rt_bf16, .nbytes = 12};
    t[3] = (lf_tensor){.name = "i64", .dtype = LF_I64, .ndim = 1, .shape = {2}, .data = rt_i64, .nbytes = 16};
    t[4] = (lf_tensor){.name = "scalar.i32", .dtype = LF_I32, .ndim = 0, .data = rt_i32, .nbytes = 4};
    t[5] = (lf_tensor){.name = "empty", .dtype = LF_F32, .ndim = 2, .shape = {0, 5}, .data = NULL, .nbytes = 0};
    return 6;
}

static void check_rt(const lf_tensorset *s, const lf_tensor *src, int n) {
    assert_int_equal(s->n, n);
    for (int i = 0; i < n; i++) {
        const lf_tensor *t = &s->tensors[i];
        assert_string_equal(t->name, src[i].name);
        assert_int_equal(t->dtype, src[i].dtype);
        assert_int_equal(t->ndim, src[i].ndim);
        for (int d = 0; d < t->ndim; d++) assert_int_equal(t->shape[d], src[i].shape[d]);
        assert_int_equal(t->nbytes, src[i].nbytes);
        if (t->nbytes) {
            assert_memory_equal(t->data, src[i].data, t->nbytes);
            assert_true(ptr_in_map(s, t->data, t->nbytes));
            assert_int_equal((uintptr_t)t->data % 64, 0); /* torch's alignment, and the map is page-aligned */
        }
    }
}

static void test_roundtrip_dtypes(void **state) {
    (void)state;
    lf_tensor t[6];
    int n = make_rt_tensors(t);
    const char *tops[] = {"archive", "gate", "adapter_model"};
    for (int k = 0; k < 3; k++) {
        const char *path = tmp_path("rt.pt");
        assert_int_equal(lf_pt_write(path, tops[k], t, n), 0);
        lf_tensorset s;
        lf_tensorset_init(&s);
        assert_int_equal(lf_pt_read(path, &s), 0);
        check_rt(&s, t, n);
        lf_tensorset_free(&s);
    }
    /* empty dict */
    const char *path = tmp_path("empty.pt");
    assert_int_equal(lf_pt_write(path, "archive", t, 0), 0);
    lf_tensorset s;
    lf_tensorset_init(&s);
    assert_int_equal(lf_pt_read(path, &s), 0);
    assert_int_equal(s.n, 0);
    lf_tensorset_free(&s);
}

/* Many tensors: SETITEMS is batched, so the reader's stack limit is not hit. */
static void test_roundtrip_many(void **state) {
    (void)state;
    enum { N = 3000 };
    lf_tensor *t = calloc(N, sizeof *t);
    char (*names)[24] = calloc(N, 24);
    float *vals = calloc(N, sizeof *vals);
    for (int i = 0; i < N; i++) {
        snprintf(names[i], 24, "t.%d", i);
        vals[i] = (float)i * 0.5f;
        t[i] = (lf_tensor){.name = names[i], .dtype = LF_F32, .ndim = 1, .shape = {1}, .data = &vals[i], .nbytes = 4};
    }
    const char *path = tmp_path("many.pt");
    assert_int_equal(lf_pt_write(path, "archive", t, N), 0);
    lf_tensorset s;
    lf_tensorset_init(&s);
    assert_int_equal(lf_pt_read(path, &s), 0);
    assert_int_equal(s.n, N);
    for (int i = 0; i < N; i++) {
        assert_string_equal(s.tensors[i].name, names[i]);
        assert_float_equal(f32_at(&s.tensors[i], 0), vals[i], 0);
    }
    lf_tensorset_free(&s);
    free(t);
    free(names);
    free(vals);
}

/* The ZIP64 path (sizes and offsets in extra fields), without 4 GB files. */
static void test_zip64_forced(void **state) {
    (void)state;
    pkb b = {0};
    pk_dict_begin(&b);
    pk_str(&b, "x");
    pk_tensor(&b, "FloatStorage", "0", 12, 0, 2, (int64_t[]){3, 4}, (int64_t[]){4, 1});
    pk_dict_end(&b);
    lf_zip_entry e[3] = {{"z/data.pkl", b.p, b.n}, {"z/data/0", storage0, sizeof storage0}, {"z/version", "3\n", 2}};
    const char *path = tmp_path("zip64.pt");
    assert_int_equal(lf_zip_write(path, e, 3, 1), 0);
    lf_tensorset s;
    lf_tensorset_init(&s);
    assert_int_equal(lf_pt_read(path, &s), 0);
    assert_int_equal(s.n, 1);
    check_shape(&s.tensors[0], 2, 3, 4);
    assert_memory_equal(s.tensors[0].data, storage0, sizeof storage0);
    lf_tensorset_free(&s);
    pk_free(&b);
}

/* Several views of one storage: offsets, a transposed view (copied), a
 * parameter, a scalar, memoized persistent ids, OrderedDict container. */
static void test_shared_storage_views(void **state) {
    (void)state;
    pkb b = {0};
    pk_proto(&b);
    pk_global(&b, "collections", "OrderedDict");
    pk_op(&b, ')');
    pk_op(&b, 'R');
    pk_op(&b, '(');
    pk_str(&b, "a");
    pk_tensor(&b, "FloatStorage", "0", 12, 0, 2, (int64_t[]){2, 3}, (int64_t[]){3, 1});
    pk_str(&b, "b");
    pk_tensor(&b, "FloatStorage", "0", 12, 6, 2, (int64_t[]){2, 3}, (int64_t[]){3, 1});
    pk_str(&b, "t");
    pk_tensor(&b, "FloatStorage", "0", 12, 0, 2, (int64_t[]){3, 2}, (int64_t[]){1, 3});
    pk_str(&b, "p");
    pk_global(&b, "torch._utils", "_rebuild_parameter");
    pk_global(&b, "torch._utils", "_rebuild_tensor_v2");
    pk_op(&b, '(');
    pk_op(&b, '(');
    pk_str(&b, "storage");
    pk_global(&b, "torch", "FloatStorage");
    pk_str(&b, "0");
    pk_str(&b, "cuda:0");
    pk_int(&b, 12);
    pk_op(&b, 't');
    pk_op(&b, 'q'); pk_op(&b, 0); /* BINPUT 0: the pid tuple */
    pk_op(&b, 'Q');
    pk_int(&b, 2);
    pk_tuple(&b, (int64_t[]){4}, 1);
    pk_tuple(&b, (int64_t[]){1}, 1);
    pk_op(&b, 0x88);
    pk_op(&b, '}');
    pk_op(&b, 't');
    pk_op(&b, 'R');       /* the tensor */
    pk_op(&b, 0x88);
    pk_op(&b, '}');
    pk_op(&b, 0x87);      /* TUPLE3 (tensor, True, {}) */
    pk_op(&b, 'R');       /* the parameter */
    pk_str(&b, "s");
    pk_global(&b, "torch._utils", "_rebuild_tensor_v2");
    pk_op(&b, '(');
    pk_op(&b, 'h'); pk_op(&b, 0); /* BINGET 0 */
    pk_op(&b, 'Q');
    pk_int(&b, 11);
    pk_op(&b, ')');
    pk_op(&b, ')');
    pk_op(&b, 0x89);
    pk_op(&b, '}');
    pk_op(&b, 'N');       /* 7th argument: metadata */
    pk_op(&b, 't');
    pk_op(&b, 'R');
    pk_op(&b, 'u');
    pk_op(&b, '.');

    const char *path = tmp_path("views.pt");
    write_ckpt(path, &b);
    lf_tensorset s;
    lf_tensorset_init(&s);
    if (lf_pt_read(path, &s)) { print_error("%s\n", lf_last_error()); fail(); }
    assert_int_equal(s.n, 5);
    const lf_tensor *a = lf_tensorset_find(&s, "a"), *bb = lf_tensorset_find(&s, "b");
    const lf_tensor *t = lf_tensorset_find(&s, "t"), *p = lf_tensorset_find(&s, "p");
    const lf_tensor *sc = lf_tensorset_find(&s, "s");
    check_shape(a, 2, 2, 3);
    check_shape(t, 2, 3, 2);
    check_shape(p, 1, 4, 0);
    assert_int_equal(sc->ndim, 0);
    assert_int_equal(sc->nbytes, 4);
    assert_true(ptr_in_map(&s, a->data, 24));
    assert_ptr_equal((const char *)bb->data, (const char *)a->data + 24); /* same storage, offset 6 */
    assert_ptr_equal((const char *)p->data, (const char *)a->data + 8);
    assert_ptr_equal((const char *)sc->data, (const char *)a->data + 44);
    assert_false(ptr_in_map(&s, t->data, 24)); /* strided: copied */
    static const float tv[6] = {0, 3, 1, 4, 2, 5};
    assert_memory_equal(t->data, tv, sizeof tv);
    for (int i = 0; i < 6; i++) assert_float_equal(f32_at(bb, (size_t)i), 6 + i, 0);
    for (int i = 0; i < 4; i++) assert_float_equal(f32_at(p, (size_t)i), 2 + i, 0);
    assert_float_equal(f32_at(sc, 0), 11, 0);
    lf_tensorset_free(&s);

    /* Every truncation of this pickle must be refused (and never crash). */
    for (size_t cut = 0; cut + 1 < b.n; cut++) {
        pkb c = {0};
        pk_raw(&c, b.p, cut);
        const char *tp = tmp_path("trunc.pt");
        write_ckpt(tp, &c);
        expect_refused(tp, "data.pkl", NULL);
        pk_free(&c);
    }
    pk_free(&b);
}

/* torch.save(module.state_dict()): the OrderedDict carries a _metadata
 * attribute set with BUILD (layout copied from a torch 1.13 file). */
static void test_state_dict_metadata(void **state) {
    (void)state;
    pkb b = {0};
    pk_proto(&b);
    pk_global(&b, "collections", "OrderedDict");
    pk_op(&b, 'q'); pk_op(&b, 0);
    pk_op(&b, ')');
    pk_op(&b, 'R');
    pk_op(&b, '(');
    pk_str(&b, "weight");
    pk_tensor(&b, "FloatStorage", "0", 12, 0, 2, (int64_t[]){2, 3}, (int64_t[]){3, 1});
    pk_str(&b, "bias");
    pk_tensor(&b, "FloatStorage", "0", 12, 6, 1, (int64_t[]){2}, (int64_t[]){1});
    pk_op(&b, 'u');
    pk_op(&b, '}');
    pk_str(&b, "_metadata");
    pk_op(&b, 'h'); pk_op(&b, 0);
    pk_op(&b, ')');
    pk_op(&b, 'R');
    pk_str(&b, "");
    pk_op(&b, '}');
    pk_str(&b, "version");
    pk_int(&b, 1);
    pk_op(&b, 's');
    pk_op(&b, 's');
    pk_op(&b, 's');
    pk_op(&b, 'b');
    pk_op(&b, '.');
    const char *path = tmp_path("state_dict.pt");
    write_ckpt_top(path, "linear", &b);
    lf_tensorset s;
    lf_tensorset_init(&s);
    if (lf_pt_read(path, &s)) { print_error("%s\n", lf_last_error()); fail(); }
    assert_int_equal(s.n, 2);
    check_shape(lf_tensorset_find(&s, "weight"), 2, 2, 3);
    check_shape(lf_tensorset_find(&s, "bias"), 1, 2, 0);
    assert_float_equal(f32_at(lf_tensorset_find(&s, "bias"), 1), 7, 0);
    lf_tensorset_free(&s);
    pk_free(&b);
}

/* small.pt, written by torch.save (torch 1.13.1, Debian's python3-torch) from:
 *   m = torch.nn.Linear(3, 2) with torch.manual_seed(1); sd = m.state_dict()  (BUILD of _metadata)
 *   base = torch.arange(12.).reshape(3, 4); sd['view'] = base[1]; sd['t'] = base.t()
 *   sd['h'] = torch.tensor([1.0, -2.5, 0.333], dtype=torch.float16)
 *   sd['bf'] = torch.tensor([[1.0, -3.0]], dtype=torch.bfloat16)
 *   sd['p'] = torch.nn.Parameter(torch.tensor([0.5, 0.25]))
 *   sd['i'] = torch.tensor([7, -(1 << 40)]); sd['s'] = torch.tensor(4.5)
 *   torch.save(sd, 'small.pt')
 * Values checked below were printed by torch itself. */
static const char torch_small_pt[] =
    "\x50\x4b\x03\x04\x00\x00\x08\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x0e\x00\x14\x00\x73\x6d\x61\x6c\x6c\x2f\x64\x61\x74\x61"
    "\x2e\x70\x6b\x6c\x46\x42\x10\x00\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a"
    "\x5a\x5a\x5a\x5a\x80\x02\x63\x63\x6f\x6c\x6c\x65\x63\x74\x69\x6f\x6e\x73\x0a\x4f"
    "\x72\x64\x65\x72\x65\x64\x44\x69\x63\x74\x0a\x71\x00\x29\x52\x71\x01\x28\x58\x06"
    "\x00\x00\x00\x77\x65\x69\x67\x68\x74\x71\x02\x63\x74\x6f\x72\x63\x68\x2e\x5f\x75"
    "\x74\x69\x6c\x73\x0a\x5f\x72\x65\x62\x75\x69\x6c\x64\x5f\x74\x65\x6e\x73\x6f\x72"
    "\x5f\x76\x32\x0a\x71\x03\x28\x28\x58\x07\x00\x00\x00\x73\x74\x6f\x72\x61\x67\x65"
    "\x71\x04\x63\x74\x6f\x72\x63\x68\x0a\x46\x6c\x6f\x61\x74\x53\x74\x6f\x72\x61\x67"
    "\x65\x0a\x71\x05\x58\x01\x00\x00\x00\x30\x71\x06\x58\x03\x00\x00\x00\x63\x70\x75"
    "\x71\x07\x4b\x06\x74\x71\x08\x51\x4b\x00\x4b\x02\x4b\x03\x86\x71\x09\x4b\x03\x4b"
    "\x01\x86\x71\x0a\x89\x68\x00\x29\x52\x71\x0b\x74\x71\x0c\x52\x71\x0d\x58\x04\x00"
    "\x00\x00\x62\x69\x61\x73\x71\x0e\x68\x03\x28\x28\x68\x04\x68\x05\x58\x01\x00\x00"
    "\x00\x31\x71\x0f\x68\x07\x4b\x02\x74\x71\x10\x51\x4b\x00\x4b\x02\x85\x71\x11\x4b"
    "\x01\x85\x71\x12\x89\x68\x00\x29\x52\x71\x13\x74\x71\x14\x52\x71\x15\x58\x04\x00"
    "\x00\x00\x76\x69\x65\x77\x71\x16\x68\x03\x28\x28\x68\x04\x68\x05\x58\x01\x00\x00"
    "\x00\x32\x71\x17\x68\x07\x4b\x0c\x74\x71\x18\x51\x4b\x04\x4b\x04\x85\x71\x19\x4b"
    "\x01\x85\x71\x1a\x89\x68\x00\x29\x52\x71\x1b\x74\x71\x1c\x52\x71\x1d\x58\x01\x00"
    "\x00\x00\x74\x71\x1e\x68\x03\x28\x28\x68\x04\x68\x05\x68\x17\x68\x07\x4b\x0c\x74"
    "\x71\x1f\x51\x4b\x00\x4b\x04\x4b\x03\x86\x71\x20\x4b\x01\x4b\x04\x86\x71\x21\x89"
    "\x68\x00\x29\x52\x71\x22\x74\x71\x23\x52\x71\x24\x58\x01\x00\x00\x00\x68\x71\x25"
    "\x68\x03\x28\x28\x68\x04\x63\x74\x6f\x72\x63\x68\x0a\x48\x61\x6c\x66\x53\x74\x6f"
    "\x72\x61\x67\x65\x0a\x71\x26\x58\x01\x00\x00\x00\x33\x71\x27\x68\x07\x4b\x03\x74"
    "\x71\x28\x51\x4b\x00\x4b\x03\x85\x71\x29\x4b\x01\x85\x71\x2a\x89\x68\x00\x29\x52"
    "\x71\x2b\x74\x71\x2c\x52\x71\x2d\x58\x02\x00\x00\x00\x62\x66\x71\x2e\x68\x03\x28"
    "\x28\x68\x04\x63\x74\x6f\x72\x63\x68\x0a\x42\x46\x6c\x6f\x61\x74\x31\x36\x53\x74"
    "\x6f\x72\x61\x67\x65\x0a\x71\x2f\x58\x01\x00\x00\x00\x34\x71\x30\x68\x07\x4b\x02"
    "\x74\x71\x31\x51\x4b\x00\x4b\x01\x4b\x02\x86\x71\x32\x4b\x02\x4b\x01\x86\x71\x33"
    "\x89\x68\x00\x29\x52\x71\x34\x74\x71\x35\x52\x71\x36\x58\x01\x00\x00\x00\x70\x71"
    "\x37\x63\x74\x6f\x72\x63\x68\x2e\x5f\x75\x74\x69\x6c\x73\x0a\x5f\x72\x65\x62\x75"
    "\x69\x6c\x64\x5f\x70\x61\x72\x61\x6d\x65\x74\x65\x72\x0a\x71\x38\x68\x03\x28\x28"
    "\x68\x04\x68\x05\x58\x01\x00\x00\x00\x35\x71\x39\x68\x07\x4b\x02\x74\x71\x3a\x51"
    "\x4b\x00\x4b\x02\x85\x71\x3b\x4b\x01\x85\x71\x3c\x89\x68\x00\x29\x52\x71\x3d\x74"
    "\x71\x3e\x52\x71\x3f\x88\x68\x00\x29\x52\x71\x40\x87\x71\x41\x52\x71\x42\x58\x01"
    "\x00\x00\x00\x69\x71\x43\x68\x03\x28\x28\x68\x04\x63\x74\x6f\x72\x63\x68\x0a\x4c"
    "\x6f\x6e\x67\x53\x74\x6f\x72\x61\x67\x65\x0a\x71\x44\x58\x01\x00\x00\x00\x36\x71"
    "\x45\x68\x07\x4b\x02\x74\x71\x46\x51\x4b\x00\x4b\x02\x85\x71\x47\x4b\x01\x85\x71"
    "\x48\x89\x68\x00\x29\x52\x71\x49\x74\x71\x4a\x52\x71\x4b\x58\x01\x00\x00\x00\x73"
    "\x71\x4c\x68\x03\x28\x28\x68\x04\x68\x05\x58\x01\x00\x00\x00\x37\x71\x4d\x68\x07"
    "\x4b\x01\x74\x71\x4e\x51\x4b\x00\x29\x29\x89\x68\x00\x29\x52\x71\x4f\x74\x71\x50"
    "\x52\x71\x51\x75\x7d\x71\x52\x58\x09\x00\x00\x00\x5f\x6d\x65\x74\x61\x64\x61\x74"
    "\x61\x71\x53\x68\x00\x29\x52\x71\x54\x58\x00\x00\x00\x00\x71\x55\x7d\x71\x56\x58"
    "\x07\x00\x00\x00\x76\x65\x72\x73\x69\x6f\x6e\x71\x57\x4b\x01\x73\x73\x73\x62\x2e"
    "\x50\x4b\x07\x08\xe3\xe5\xef\x01\x1c\x03\x00\x00\x1c\x03\x00\x00\x50\x4b\x03\x04"
    "\x00\x00\x08\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x0c\x00\x2a\x00\x73\x6d\x61\x6c\x6c\x2f\x64\x61\x74\x61\x2f\x30\x46\x42"
    "\x26\x00\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a"
    "\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a"
    "\x43\x50\x98\x3e\x0e\x79\x82\xbe\x73\x39\xe5\xbd\x3d\xbf\x8a\x3e\x5c\x25\x0b\xbf"
    "\x47\x47\xb1\x3e\x50\x4b\x07\x08\x09\xbc\x0c\x01\x18\x00\x00\x00\x18\x00\x00\x00"
    "\x50\x4b\x03\x04\x00\x00\x08\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x0c\x00\x2e\x00\x73\x6d\x61\x6c\x6c\x2f\x64\x61\x74\x61"
    "\x2f\x31\x46\x42\x2a\x00\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a"
    "\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a"
    "\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x9a\x40\xf3\xbd\xea\x62\x96\x3e\x50\x4b\x07\x08"
    "\x1e\x2b\xd3\xf0\x08\x00\x00\x00\x08\x00\x00\x00\x50\x4b\x03\x04\x00\x00\x08\x08"
    "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x0c\x00"
    "\x3e\x00\x73\x6d\x61\x6c\x6c\x2f\x64\x61\x74\x61\x2f\x32\x46\x42\x3a\x00\x5a\x5a"
    "\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a"
    "\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a"
    "\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x00\x00\x00\x00"
    "\x00\x00\x80\x3f\x00\x00\x00\x40\x00\x00\x40\x40\x00\x00\x80\x40\x00\x00\xa0\x40"
    "\x00\x00\xc0\x40\x00\x00\xe0\x40\x00\x00\x00\x41\x00\x00\x10\x41\x00\x00\x20\x41"
    "\x00\x00\x30\x41\x50\x4b\x07\x08\x78\x7d\x66\x3e\x30\x00\x00\x00\x30\x00\x00\x00"
    "\x50\x4b\x03\x04\x00\x00\x08\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x0c\x00\x16\x00\x73\x6d\x61\x6c\x6c\x2f\x64\x61\x74\x61"
    "\x2f\x33\x46\x42\x12\x00\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a"
    "\x5a\x5a\x5a\x5a\x00\x3c\x00\xc1\x54\x35\x50\x4b\x07\x08\x20\x54\x1a\xcd\x06\x00"
    "\x00\x00\x06\x00\x00\x00\x50\x4b\x03\x04\x00\x00\x08\x08\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x0c\x00\x40\x00\x73\x6d\x61\x6c"
    "\x6c\x2f\x64\x61\x74\x61\x2f\x34\x46\x42\x3c\x00\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a"
    "\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a"
    "\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a"
    "\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x80\x3f\x40\xc0\x50\x4b\x07\x08"
    "\x3f\x46\x37\x88\x04\x00\x00\x00\x04\x00\x00\x00\x50\x4b\x03\x04\x00\x00\x08\x08"
    "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x0c\x00"
    "\x42\x00\x73\x6d\x61\x6c\x6c\x2f\x64\x61\x74\x61\x2f\x35\x46\x42\x3e\x00\x5a\x5a"
    "\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a"
    "\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a"
    "\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a"
    "\x00\x00\x00\x3f\x00\x00\x80\x3e\x50\x4b\x07\x08\xde\x75\xb1\xbc\x08\x00\x00\x00"
    "\x08\x00\x00\x00\x50\x4b\x03\x04\x00\x00\x08\x08\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x0c\x00\x3e\x00\x73\x6d\x61\x6c\x6c\x2f"
    "\x64\x61\x74\x61\x2f\x36\x46\x42\x3a\x00\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a"
    "\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a"
    "\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a"
    "\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x07\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x00\xff\xff\xff\x50\x4b\x07\x08\x32\x95\xfc\x11\x10\x00\x00\x00\x10\x00\x00\x00"
    "\x50\x4b\x03\x04\x00\x00\x08\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x0c\x00\x36\x00\x73\x6d\x61\x6c\x6c\x2f\x64\x61\x74\x61"
    "\x2f\x37\x46\x42\x32\x00\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a"
    "\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a"
    "\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x00\x00\x90\x40"
    "\x50\x4b\x07\x08\x96\x14\xd9\x26\x04\x00\x00\x00\x04\x00\x00\x00\x50\x4b\x03\x04"
    "\x00\x00\x08\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x0d\x00\x41\x00\x73\x6d\x61\x6c\x6c\x2f\x76\x65\x72\x73\x69\x6f\x6e\x46"
    "\x42\x3d\x00\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a"
    "\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a"
    "\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a"
    "\x5a\x5a\x5a\x5a\x33\x0a\x50\x4b\x07\x08\xd1\x9e\x67\x55\x02\x00\x00\x00\x02\x00"
    "\x00\x00\x50\x4b\x01\x02\x00\x00\x00\x00\x08\x08\x00\x00\x00\x00\x00\x00\xe3\xe5"
    "\xef\x01\x1c\x03\x00\x00\x1c\x03\x00\x00\x0e\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x00\x00\x73\x6d\x61\x6c\x6c\x2f\x64\x61\x74\x61\x2e\x70"
    "\x6b\x6c\x50\x4b\x01\x02\x00\x00\x00\x00\x08\x08\x00\x00\x00\x00\x00\x00\x09\xbc"
    "\x0c\x01\x18\x00\x00\x00\x18\x00\x00\x00\x0c\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x6c\x03\x00\x00\x73\x6d\x61\x6c\x6c\x2f\x64\x61\x74\x61\x2f\x30"
    "\x50\x4b\x01\x02\x00\x00\x00\x00\x08\x08\x00\x00\x00\x00\x00\x00\x1e\x2b\xd3\xf0"
    "\x08\x00\x00\x00\x08\x00\x00\x00\x0c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x00\x00\xe8\x03\x00\x00\x73\x6d\x61\x6c\x6c\x2f\x64\x61\x74\x61\x2f\x31\x50\x4b"
    "\x01\x02\x00\x00\x00\x00\x08\x08\x00\x00\x00\x00\x00\x00\x78\x7d\x66\x3e\x30\x00"
    "\x00\x00\x30\x00\x00\x00\x0c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x58\x04\x00\x00\x73\x6d\x61\x6c\x6c\x2f\x64\x61\x74\x61\x2f\x32\x50\x4b\x01\x02"
    "\x00\x00\x00\x00\x08\x08\x00\x00\x00\x00\x00\x00\x20\x54\x1a\xcd\x06\x00\x00\x00"
    "\x06\x00\x00\x00\x0c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x05"
    "\x00\x00\x73\x6d\x61\x6c\x6c\x2f\x64\x61\x74\x61\x2f\x33\x50\x4b\x01\x02\x00\x00"
    "\x00\x00\x08\x08\x00\x00\x00\x00\x00\x00\x3f\x46\x37\x88\x04\x00\x00\x00\x04\x00"
    "\x00\x00\x0c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x56\x05\x00\x00"
    "\x73\x6d\x61\x6c\x6c\x2f\x64\x61\x74\x61\x2f\x34\x50\x4b\x01\x02\x00\x00\x00\x00"
    "\x08\x08\x00\x00\x00\x00\x00\x00\xde\x75\xb1\xbc\x08\x00\x00\x00\x08\x00\x00\x00"
    "\x0c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xd4\x05\x00\x00\x73\x6d"
    "\x61\x6c\x6c\x2f\x64\x61\x74\x61\x2f\x35\x50\x4b\x01\x02\x00\x00\x00\x00\x08\x08"
    "\x00\x00\x00\x00\x00\x00\x32\x95\xfc\x11\x10\x00\x00\x00\x10\x00\x00\x00\x0c\x00"
    "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x58\x06\x00\x00\x73\x6d\x61\x6c"
    "\x6c\x2f\x64\x61\x74\x61\x2f\x36\x50\x4b\x01\x02\x00\x00\x00\x00\x08\x08\x00\x00"
    "\x00\x00\x00\x00\x96\x14\xd9\x26\x04\x00\x00\x00\x04\x00\x00\x00\x0c\x00\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xe0\x06\x00\x00\x73\x6d\x61\x6c\x6c\x2f"
    "\x64\x61\x74\x61\x2f\x37\x50\x4b\x01\x02\x00\x00\x00\x00\x08\x08\x00\x00\x00\x00"
    "\x00\x00\xd1\x9e\x67\x55\x02\x00\x00\x00\x02\x00\x00\x00\x0d\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x00\x00\x54\x07\x00\x00\x73\x6d\x61\x6c\x6c\x2f\x76\x65"
    "\x72\x73\x69\x6f\x6e\x50\x4b\x06\x06\x2c\x00\x00\x00\x00\x00\x00\x00\x1e\x03\x2d"
    "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x0a\x00\x00\x00\x00\x00\x00\x00\x0a\x00\x00"
    "\x00\x00\x00\x00\x00\x47\x02\x00\x00\x00\x00\x00\x00\xd2\x07\x00\x00\x00\x00\x00"
    "\x00\x50\x4b\x06\x07\x00\x00\x00\x00\x19\x0a\x00\x00\x00\x00\x00\x00\x01\x00\x00"
    "\x00\x50\x4b\x05\x06\x00\x00\x00\x00\x0a\x00\x0a\x00\x47\x02\x00\x00\xd2\x07\x00"
    "\x00\x00\x00";

static void test_torch_written(void **state) {
    (void)state;
    const char *path = tmp_path("small.pt");
    lf_test_write_file(path, torch_small_pt, sizeof torch_small_pt - 1);
    lf_tensorset s;
    lf_tensorset_init(&s);
    if (lf_pt_read(path, &s)) { print_error("%s\n", lf_last_error()); fail(); }
    static const char *order[] = {"weight", "bias", "view", "t", "h", "bf", "p", "i", "s"};
    assert_int_equal(s.n, 9);
    for (int i = 0; i < 9; i++) assert_string_equal(s.tensors[i].name, order[i]);
    const lf_tensor *w = lf_tensorset_find(&s, "weight");
    check_shape(w, 2, 2, 3);
    assert_float_equal(f32_at(w, 0), 0.2974873483181f, 0);
    assert_float_equal(f32_at(w, 5), 0.3462469279766083f, 0);
    assert_float_equal(f32_at(lf_tensorset_find(&s, "bias"), 1), 0.2937234044075012f, 0);
    const lf_tensor *v = lf_tensorset_find(&s, "view"), *t = lf_tensorset_find(&s, "t");
    check_shape(v, 1, 4, 0);
    check_shape(t, 2, 4, 3);
    assert_true(ptr_in_map(&s, v->data, v->nbytes));
    static const float vv[4] = {4, 5, 6, 7}, tv[12] = {0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11};
    assert_memory_equal(v->data, vv, sizeof vv);
    assert_memory_equal(t->data, tv, sizeof tv);
    const lf_tensor *h = lf_tensorset_find(&s, "h"), *bf = lf_tensorset_find(&s, "bf");
    static const uint16_t hv[3] = {0x3c00, 0xc100, 0x3554}, bv[2] = {0x3f80, 0xc040};
    assert_int_equal(h->dtype, LF_F16);
    assert_memory_equal(h->data, hv, sizeof hv);
    assert_int_equal(bf->dtype, LF_BF16);
    check_shape(bf, 2, 1, 2);
    assert_memory_equal(bf->data, bv, sizeof bv);
    const lf_tensor *p = lf_tensorset_find(&s, "p"), *ii = lf_tensorset_find(&s, "i");
    assert_float_equal(f32_at(p, 1), 0.25f, 0);
    assert_int_equal(ii->dtype, LF_I64);
    assert_int_equal(((const int64_t *)ii->data)[1], -(INT64_C(1) << 40));
    const lf_tensor *sc = lf_tensorset_find(&s, "s");
    assert_int_equal(sc->ndim, 0);
    assert_float_equal(f32_at(sc, 0), 4.5f, 0);
    lf_tensorset_free(&s);
}

/* A zip as a non-torch writer might make it: no alignment padding, no ZIP64
 * records (independent of lf_zip_write).  Returns malloc'd bytes. */
static uint8_t *raw_zip(const lf_zip_entry *e, int n, size_t *len) {
    size_t cap = 1024;
    for (int i = 0; i < n; i++) cap += 2 * (46 + strlen(e[i].name)) + e[i].size;
    uint8_t *z = calloc(1, cap), *cd = calloc(1, cap);
    size_t o = 0, c = 0;
    for (int i = 0; i < n; i++) {
        size_t nl = strlen(e[i].name);
        uint32_t crc = lf_crc32(0, e[i].data, e[i].size);
        uint8_t *h = z + o, *d = cd + c;
        put32(h, 0x04034b50u); h[4] = 20;
        put32(h + 14, crc); put32(h + 18, (uint32_t)e[i].size); put32(h + 22, (uint32_t)e[i].size);
        h[26] = (uint8_t)nl;
        memcpy(h + 30, e[i].name, nl);
        memcpy(h + 30 + nl, e[i].data, e[i].size);
        put32(d, 0x02014b50u); d[4] = 20; d[6] = 20;
        put32(d + 16, crc); put32(d + 20, (uint32_t)e[i].size); put32(d + 24, (uint32_t)e[i].size);
        d[28] = (uint8_t)nl;
        put32(d + 42, (uint32_t)o);
        memcpy(d + 46, e[i].name, nl);
        o += 30 + nl + e[i].size;
        c += 46 + nl;
    }
    memcpy(z + o, cd, c);
    uint8_t *end = z + o + c;
    put32(end, 0x06054b50u);
    end[8] = end[10] = (uint8_t)n;
    put32(end + 12, (uint32_t)c);
    put32(end + 16, (uint32_t)o);
    *len = o + c + 22;
    free(cd);
    return z;
}

/* Unpadded zip: storage data at an odd address is copied (so it can be read
 * as a float array); otherwise the same tensors come out. */
static void test_unaligned_zip(void **state) {
    (void)state;
    pkb b = {0};
    pk_dict_begin(&b);
    pk_str(&b, "m");
    pk_tensor(&b, "FloatStorage", "0", 12, 2, 2, (int64_t[]){2, 5}, (int64_t[]){5, 1});
    pk_dict_end(&b);
    int copies = 0;
    for (int pad = 0; pad < 4; pad++) {
        static const char zeros[4] = {0};
        lf_zip_entry e[4] = {{"a/data.pkl", b.p, b.n}, {"a/pad", zeros, (size_t)pad},
                             {"a/data/0", storage0, sizeof storage0}, {"a/version", "3\n", 2}};
        size_t len;
        uint8_t *z = raw_zip(e, 4, &len);
        const char *path = tmp_path("unaligned.pt");
        lf_test_write_file(path, z, len);
        free(z);
        lf_tensorset s;
        lf_tensorset_init(&s);
        if (lf_pt_read(path, &s)) { print_error("%s\n", lf_last_error()); fail(); }
        assert_int_equal(s.n, 1);
        const lf_tensor *t = &s.tensors[0];
        check_shape(t, 2, 2, 5);
        assert_memory_equal(t->data, storage0 + 2, 40);
        assert_int_equal((uintptr_t)t->data % 4, 0);
        copies += !ptr_in_map(&s, t->data, 40);
        lf_tensorset_free(&s);
    }
    assert_int_equal(copies, 3); /* three of the four paddings leave the floats misaligned */
    pk_free(&b);
}

/* Optional: python3's zipfile and a restricted pickle.Unpickler read what
 * lf_pt_write wrote (CRCs, 64-byte alignment, version/byteorder records). */
static void test_python_reads_written(void **state) {
    (void)state;
    if (lf_test_run("python3 -c 'import zipfile, pickle' >/dev/null 2>&1", NULL) != 0) {
        print_message("SKIP %s: python3 not available\n", __func__);
        skip();
    }
    static const char *script =
        "import sys, zipfile, pickle, struct, collections\n"
        "path = sys.argv[1]\n"
        "z = zipfile.ZipFile(path)\n"
        "assert z.testzip() is None\n"
        "raw = open(path, 'rb').read()\n"
        "for i in z.infolist():\n"
        "    assert i.compress_type == 0\n"
        "    n, m = struct.unpack_from('<HH', raw, i.header_offset + 26)\n"
        "    assert (i.header_offset + 30 + n + m) % 64 == 0, i.filename\n"
        "top = z.namelist()[0].split('/')[0]\n"
        "assert z.read(top + '/version') == b'3\\n' and z.read(top + '/byteorder') == b'little'\n"
        "codes = {'FloatStorage': ('f', 4), 'HalfStorage': ('e', 2), 'BFloat16Storage': ('H', 2),\n"
        "         'LongStorage': ('q', 8), 'IntStorage': ('i', 4)}\n"
        "def rebuild(st, off, size, stride, rg, hooks, *meta):\n"
        "    cls, key = st\n"
        "    data = z.read(top + '/data/' + key)\n"
        "    code, es = codes[cls]\n"
        "    first = '-'\n"
        "    if all(size):\n"
        "        v = struct.unpack_from('<' + code, data, off * es)[0]\n"
        "        if cls == 'BFloat16Storage': v = struct.unpack('<f', struct.pack('<I', v << 16))[0]\n"
        "        first = '%g' % v\n"
        "    return '%s %s %s' % (cls, ','.join(map(str, size)), first)\n"
        "class U(pickle.Unpickler):\n"
        "    def find_class(self, mod, name):\n"
        "        if (mod, name) == ('collections', 'OrderedDict'): return collections.OrderedDict\n"
        "        if (mod, name) == ('torch._utils', '_rebuild_tensor_v2'): return rebuild\n"
        "        if mod == 'torch' and name in codes: return name\n"
        "        raise pickle.UnpicklingError('refused %s.%s' % (mod, name))\n"
        "    def persistent_load(self, pid):\n"
        "        assert pid[0] == 'storage' and pid[3] == 'cpu'\n"
        "        return (pid[1].__name__ if hasattr(pid[1], '__name__') else pid[1], pid[2])\n"
        "d = U(z.open(top + '/data.pkl')).load()\n"
        "assert type(d) is collections.OrderedDict\n"
        "for k, v in d.items(): print(k, v)\n";
    const char *spath = tmp_path("check.py");
    lf_test_write_file(spath, script, strlen(script));
    lf_tensor t[6];
    int n = make_rt_tensors(t);
    const char *path = tmp_path("py.pt");
    assert_int_equal(lf_pt_write(path, "archive", t, n), 0);
    char cmd[1200], *out = NULL;
    snprintf(cmd, sizeof cmd, "python3 '%s' '%s' 2>&1", spath, path);
    int rc = lf_test_run(cmd, &out);
    const char *expect =
        "w.f32 FloatStorage 2,3 1.5\n"
        "w.f16 HalfStorage 4 1\n"
        "w.bf16 BFloat16Storage 3,1,2 1\n"
        "i64 LongStorage 2 1\n"
        "scalar.i32 IntStorage  7\n"
        "empty FloatStorage 0,5 -\n";
    if (rc != 0 || strcmp(out, expect)) {
        print_error("python3 check failed (rc %d):\n%s\nexpected:\n%s", rc, out, expect);
        free(out);
        fail();
    }
    free(out);
}

/* ------------------------------------------------------------ hostile pickles */

static const char *const evil_globals[][2] = {
    {"os", "system"},         {"builtins", "eval"},     {"builtins", "exec"},   {"subprocess", "Popen"},
    {"posix", "system"},      {"__builtin__", "getattr"}, {"nt", "system"},    {"__main__", "Evil"},
    {"torch.storage", "_load_from_bytes"}, {"torch", "load"}, {"torch", "DoubleStorage"},
    {"torch._utils", "_rebuild_parameter_with_state"}, {"collections", "OrderedDict2"}, {"builtins", "getattr"},
};

static void test_refuses_globals(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof evil_globals / sizeof evil_globals[0]; i++) {
        char want[200];
        snprintf(want, sizeof want, "data.pkl: refusing global '%s %s' (only tensor-rebuilding globals are allowed",
                 evil_globals[i][0], evil_globals[i][1]);
        /* GLOBAL + REDUCE */
        pkb b = {0};
        pk_proto(&b);
        pk_global(&b, evil_globals[i][0], evil_globals[i][1]);
        pk_str(&b, "echo hi");
        pk_op(&b, 0x85);
        pk_op(&b, 'R');
        pk_op(&b, '.');
        refuse_pickle(&b, want, "GLOBAL");
        /* STACK_GLOBAL (protocol 4 style) */
        pk_op(&b, 0x80); pk_op(&b, 4);
        pk_sstr(&b, evil_globals[i][0]);
        pk_sstr(&b, evil_globals[i][1]);
        pk_op(&b, 0x93);
        pk_op(&b, ')');
        pk_op(&b, 'R');
        pk_op(&b, '.');
        refuse_pickle(&b, want, "STACK_GLOBAL");
        /* hidden after a valid tensor, inside the dict */
        pk_dict_begin(&b);
        pk_str(&b, "ok");
        pk_tensor(&b, "FloatStorage", "0", 12, 0, 1, (int64_t[]){12}, (int64_t[]){1});
        pk_str(&b, "evil");
        pk_global(&b, evil_globals[i][0], evil_globals[i][1]);
        pk_op(&b, ')');
        pk_op(&b, 'R');
        pk_dict_end(&b);
        refuse_pickle(&b, want, NULL);
    }
}

/* os.system("touch <file>") must not run: the file stays absent. */
static void test_nothing_executed(void **state) {
    (void)state;
    char victim[512]; /* a copy: tmp_path's buffers are reused */
    snprintf(victim, sizeof victim, "%s", tmp_path("pwned"));
    char cmd[600];
    snprintf(cmd, sizeof cmd, "touch %s", victim);
    const char *mods[][2] = {{"os", "system"}, {"posix", "system"}};
    for (int k = 0; k < 2; k++) {
        pkb b = {0};
        pk_proto(&b);
        pk_global(&b, mods[k][0], mods[k][1]);
        pk_str(&b, cmd);
        pk_op(&b, 0x85);
        pk_op(&b, 'R');
        pk_op(&b, '.');
        refuse_pickle(&b, "refusing global", mods[k][1]);
        assert_int_not_equal(access(victim, F_OK), 0);
        /* INST form: pickle protocol 0 calls os.system via INST */
        pk_op(&b, '(');
        pk_str(&b, cmd);
        pk_op(&b, 'i');
        pk_raw(&b, "os\nsystem\n", 10);
        pk_op(&b, '.');
        refuse_pickle(&b, "INST", NULL);
        assert_int_not_equal(access(victim, F_OK), 0);
    }
}

static void test_refuses_opcodes(void **state) {
    (void)state;
    static const struct { uint8_t op; const char *name; const char *arg; size_t arglen; } ops[] = {
        {'i', "INST", "os\nsystem\n", 10}, {'o', "OBJ", "", 0},        {0x81, "NEWOBJ", "", 0},
        {0x92, "NEWOBJ_EX", "", 0},        {0x82, "EXT1", "\x01", 1},
        {0x83, "EXT2", "\x01\x00", 2},     {0x84, "EXT4", "\x01\0\0\0", 4}, {'P', "PERSID", "0\n", 2},
        {'g', "GET", "0\n", 2},            {'p', "PUT", "0\n", 2},    {'I', "INT", "1\n", 2},
        {0x8f, "EMPTY_SET", "", 0},        {0x96, "BYTEARRAY8", "", 0}, {0x97, "NEXT_BUFFER", "", 0},
        {0xff, "0xff", "", 0},              {0x00, "0x00", "", 0},
    };
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        pkb b = {0};
        pk_proto(&b);
        pk_op(&b, '}');
        pk_op(&b, '}');
        pk_op(&b, '(');
        pk_op(&b, ops[i].op);
        pk_raw(&b, ops[i].arg, ops[i].arglen);
        pk_op(&b, '.');
        refuse_pickle(&b, ops[i].name, "offset 5");
    }
    /* REDUCE on anything but the allowed callables */
    pkb b = {0};
    pk_proto(&b);
    pk_global(&b, "torch", "FloatStorage");
    pk_op(&b, ')');
    pk_op(&b, 'R');
    pk_op(&b, '.');
    refuse_pickle(&b, "REDUCE", "storage class");
    pk_proto(&b);
    pk_op(&b, '}');
    pk_op(&b, ')');
    pk_op(&b, 'R');
    pk_op(&b, '.');
    refuse_pickle(&b, "REDUCE", "not an allowed global");
    pk_proto(&b);
    pk_global(&b, "collections", "OrderedDict");
    pk_op(&b, ']');
    pk_op(&b, 0x85);
    pk_op(&b, 'R');
    pk_op(&b, '.');
    refuse_pickle(&b, "OrderedDict", "arguments");
    /* BUILD is only allowed as state_dict metadata: a dict set on a dict */
    pk_proto(&b); pk_op(&b, ']'); pk_op(&b, '}'); pk_op(&b, 'b'); pk_op(&b, '.');
    refuse_pickle(&b, "BUILD at offset 4", "state of a list");
    pk_proto(&b); pk_op(&b, '}'); pk_op(&b, ')'); pk_op(&b, 'b'); pk_op(&b, '.');
    refuse_pickle(&b, "BUILD at offset 4", "from a tuple");
    pk_proto(&b);
    pk_tensor(&b, "FloatStorage", "0", 12, 0, 1, (int64_t[]){12}, (int64_t[]){1});
    pk_op(&b, '}'); pk_op(&b, 'b'); pk_op(&b, '.');
    refuse_pickle(&b, "BUILD", "state of a tensor");
    pk_proto(&b); pk_op(&b, '}'); pk_op(&b, 'b'); pk_op(&b, '.');
    refuse_pickle(&b, "BUILD", "underflow");
    /* protocol outside 2..5 */
    pk_op(&b, 0x80); pk_op(&b, 9); pk_op(&b, '}'); pk_op(&b, '.');
    refuse_pickle(&b, "PROTO", "protocol 9");
}

static void test_limits(void **state) {
    (void)state;
    pkb b = {0};
    pk_proto(&b);
    for (int i = 0; i < 100000; i++) { pk_op(&b, '('); pk_op(&b, ']'); }
    pk_op(&b, '.');
    refuse_pickle(&b, "nesting depth limit", "MARK");
    pk_proto(&b);
    for (int i = 0; i < 100000; i++) pk_op(&b, ']');
    pk_op(&b, '.');
    refuse_pickle(&b, "stack depth limit", NULL);
    /* a million nested tuples: nothing recurses, so this is just "not a dict" */
    pk_proto(&b);
    pk_op(&b, 'N');
    for (int i = 0; i < 1000000; i++) pk_op(&b, 0x85);
    pk_op(&b, '.');
    refuse_pickle(&b, "holds a tuple, not a dict", NULL);
    /* values created and dropped at once (never more than one on the stack) */
    pk_proto(&b);
    for (int i = 0; i < LF_PK_MAX_OBJECTS + 1; i++) { pk_op(&b, 'N'); pk_op(&b, '0'); }
    pk_op(&b, '.');
    refuse_pickle(&b, "object count limit", "NONE");
    /* memo abuse */
    pk_proto(&b); pk_op(&b, '}'); pk_op(&b, 'h'); pk_op(&b, 5); pk_op(&b, '.');
    refuse_pickle(&b, "BINGET", "never stored");
    pk_proto(&b); pk_op(&b, '}'); pk_op(&b, 'j'); pk_u32(&b, 0xffffffffu); pk_op(&b, '.');
    refuse_pickle(&b, "LONG_BINGET", "never stored");
    pk_proto(&b); pk_op(&b, '}'); pk_op(&b, 'r'); pk_u32(&b, 0xffffffffu); pk_op(&b, '.');
    refuse_pickle(&b, "LONG_BINPUT", "memo size limit");
    pk_proto(&b); pk_op(&b, '}'); pk_op(&b, 'q'); pk_op(&b, 7); pk_op(&b, '.');
    refuse_pickle(&b, "BINPUT", "skips ahead");
    pk_proto(&b); pk_op(&b, 'q'); pk_op(&b, 0); pk_op(&b, '.');
    refuse_pickle(&b, "BINPUT", "underflow");
    /* huge length fields */
    pk_proto(&b); pk_op(&b, 'X'); pk_u32(&b, 0xffffffffu); pk_raw(&b, "abc", 3);
    refuse_pickle(&b, "BINUNICODE", "string length limit");
    pk_proto(&b); pk_op(&b, 0x8d); pk_u32(&b, 0); pk_u32(&b, 0x80000000u); pk_op(&b, '.');
    refuse_pickle(&b, "BINUNICODE8", "string length limit");
    pk_proto(&b); pk_op(&b, 'T'); pk_u32(&b, 0xfffffff0u); pk_op(&b, '.');
    refuse_pickle(&b, "BINSTRING", "negative");
    pk_proto(&b); pk_op(&b, 'X'); pk_u32(&b, 100); pk_raw(&b, "abc.", 4);
    refuse_pickle(&b, "BINUNICODE", "truncated");
    pk_proto(&b); pk_op(&b, 0x8a); pk_op(&b, 200); pk_op(&b, '.');
    refuse_pickle(&b, "LONG1", "64 bits");
    pk_proto(&b); pk_op(&b, 'c'); for (int i = 0; i < 1000; i++) pk_op(&b, 'a');
    pk_raw(&b, "\nb\n.", 4);
    refuse_pickle(&b, "GLOBAL", "length limit");
    pk_proto(&b); pk_op(&b, 0x95); pk_u32(&b, 0xffffffffu); pk_u32(&b, 0xffffffffu); pk_op(&b, '.');
    refuse_pickle(&b, "FRAME", NULL);
    /* stack underflow, missing mark */
    pk_proto(&b); pk_op(&b, 'R'); pk_op(&b, '.');
    refuse_pickle(&b, "REDUCE", "underflow");
    pk_proto(&b); pk_op(&b, 't'); pk_op(&b, '.');
    refuse_pickle(&b, "TUPLE", "MARK");
    pk_proto(&b); pk_op(&b, '}'); pk_op(&b, '('); pk_op(&b, 's'); pk_op(&b, '.');
    refuse_pickle(&b, "SETITEM", "underflow");
    pk_proto(&b); pk_op(&b, '.');
    refuse_pickle(&b, "STOP", "underflow");
    pk_proto(&b); pk_op(&b, '}');
    refuse_pickle(&b, "no STOP", NULL);
    pkb empty = {0};
    pk_raw(&empty, "", 0);
    refuse_pickle(&empty, "no STOP", NULL);
}

static void test_bad_tensors(void **state) {
    (void)state;
    pkb b = {0};
    /* storage key missing from the zip */
    pk_dict_begin(&b);
    pk_str(&b, "w");
    pk_tensor(&b, "FloatStorage", "7", 4, 0, 1, (int64_t[]){4}, (int64_t[]){1});
    pk_dict_end(&b);
    refuse_pickle(&b, "archive/data/7", "'w'");
    /* numel beyond the entry (12 floats stored) */
    pk_dict_begin(&b);
    pk_str(&b, "w");
    pk_tensor(&b, "FloatStorage", "0", 13, 0, 1, (int64_t[]){13}, (int64_t[]){1});
    pk_dict_end(&b);
    refuse_pickle(&b, "claims 13 F32 elements", "48 bytes");
    pk_dict_begin(&b); /* same storage read as int64: 12 elements = 96 bytes > 48 */
    pk_str(&b, "w");
    pk_tensor(&b, "LongStorage", "0", 12, 0, 1, (int64_t[]){12}, (int64_t[]){1});
    pk_dict_end(&b);
    refuse_pickle(&b, "claims 12 I64 elements", NULL);
    /* tensor extent beyond the storage */
    pk_dict_begin(&b);
    pk_str(&b, "w");
    pk_tensor(&b, "FloatStorage", "0", 12, 4, 2, (int64_t[]){3, 3}, (int64_t[]){3, 1});
    pk_dict_end(&b);
    refuse_pickle(&b, "reaches element 12", "holds 12 elements");
    pk_dict_begin(&b);
    pk_str(&b, "w");
    pk_tensor(&b, "FloatStorage", "0", 12, 0, 2, (int64_t[]){2, 2}, (int64_t[]){100, 1});
    pk_dict_end(&b);
    refuse_pickle(&b, "reaches element", NULL);
    pk_dict_begin(&b); /* overflowing extent */
    pk_str(&b, "w");
    pk_tensor(&b, "FloatStorage", "0", 12, 0, 2, (int64_t[]){INT64_C(1) << 62, 2}, (int64_t[]){4, 1});
    pk_dict_end(&b);
    refuse_pickle(&b, "overflows", NULL);
    pk_dict_begin(&b);
    pk_str(&b, "w");
    pk_tensor(&b, "FloatStorage", "0", 12, 0, 2, (int64_t[]){2, 2}, (int64_t[]){INT64_MAX, 1});
    pk_dict_end(&b);
    refuse_pickle(&b, "extent overflows", NULL);
    /* negative size, too many dims, size/stride mismatch */
    pk_dict_begin(&b);
    pk_str(&b, "w");
    pk_tensor(&b, "FloatStorage", "0", 12, 0, 1, (int64_t[]){-1}, (int64_t[]){1});
    pk_dict_end(&b);
    refuse_pickle(&b, "size[0] is negative", NULL);
    pk_dict_begin(&b);
    pk_str(&b, "w");
    pk_tensor(&b, "FloatStorage", "0", 12, 0, 9, (int64_t[]){1, 1, 1, 1, 1, 1, 1, 1, 1},
              (int64_t[]){1, 1, 1, 1, 1, 1, 1, 1, 1});
    pk_dict_end(&b);
    refuse_pickle(&b, "dimension limit", NULL);
    pk_dict_begin(&b);
    pk_str(&b, "w");
    pk_global(&b, "torch._utils", "_rebuild_tensor_v2");
    pk_op(&b, '(');
    pk_op(&b, '('); pk_str(&b, "storage"); pk_global(&b, "torch", "FloatStorage"); pk_str(&b, "0");
    pk_str(&b, "cpu"); pk_int(&b, 12); pk_op(&b, 't'); pk_op(&b, 'Q');
    pk_int(&b, 0);
    pk_tuple(&b, (int64_t[]){12}, 1);
    pk_tuple(&b, (int64_t[]){1, 1}, 2);
    pk_op(&b, 0x89); pk_op(&b, '}'); pk_op(&b, 't'); pk_op(&b, 'R');
    pk_dict_end(&b);
    refuse_pickle(&b, "size has 1 dimensions but stride has 2", NULL);
    /* expanded (stride 0) view: overlapping elements are refused, not copied */
    pk_dict_begin(&b);
    pk_str(&b, "w");
    pk_tensor(&b, "FloatStorage", "0", 12, 0, 2, (int64_t[]){1000000, 12}, (int64_t[]){0, 1});
    pk_dict_end(&b);
    refuse_pickle(&b, "overlap", "'w'");
    /* persistent id forms */
    pk_proto(&b); pk_str(&b, "0"); pk_op(&b, 'Q'); pk_op(&b, '.');
    refuse_pickle(&b, "BINPERSID", "persistent id");
    pk_proto(&b);
    pk_op(&b, '('); pk_str(&b, "storage"); pk_global(&b, "collections", "OrderedDict"); pk_str(&b, "0");
    pk_str(&b, "cpu"); pk_int(&b, 12); pk_op(&b, 't'); pk_op(&b, 'Q'); pk_op(&b, '.');
    refuse_pickle(&b, "BINPERSID", "storage class");
    pk_proto(&b);
    pk_op(&b, '('); pk_str(&b, "module"); pk_global(&b, "torch", "FloatStorage"); pk_str(&b, "0");
    pk_str(&b, "cpu"); pk_int(&b, 12); pk_op(&b, 't'); pk_op(&b, 'Q'); pk_op(&b, '.');
    refuse_pickle(&b, "BINPERSID", "persistent id is not");
    pk_proto(&b);
    pk_op(&b, '('); pk_str(&b, "storage"); pk_global(&b, "torch", "FloatStorage"); pk_str(&b, "");
    pk_str(&b, "cpu"); pk_int(&b, 12); pk_op(&b, 't'); pk_op(&b, 'Q'); pk_op(&b, '.');
    refuse_pickle(&b, "storage key", NULL);
    /* rebuild with wrong arguments */
    pk_proto(&b);
    pk_global(&b, "torch._utils", "_rebuild_tensor_v2");
    pk_int(&b, 1); pk_int(&b, 2); pk_op(&b, 0x86); pk_op(&b, 'R'); pk_op(&b, '.');
    refuse_pickle(&b, "_rebuild_tensor_v2 takes 6 or 7 arguments", NULL);
    pk_proto(&b);
    pk_global(&b, "torch._utils", "_rebuild_parameter");
    pk_op(&b, '}'); pk_op(&b, 0x88); pk_op(&b, '}'); pk_op(&b, 0x87); pk_op(&b, 'R'); pk_op(&b, '.');
    refuse_pickle(&b, "_rebuild_parameter", "not a tensor");
}

static void test_bad_structure(void **state) {
    (void)state;
    pkb b = {0};
    /* nested dict */
    pk_dict_begin(&b);
    pk_str(&b, "outer");
    pk_op(&b, '}');
    pk_str(&b, "w");
    pk_tensor(&b, "FloatStorage", "0", 12, 0, 1, (int64_t[]){12}, (int64_t[]){1});
    pk_op(&b, 's');
    pk_dict_end(&b);
    refuse_pickle(&b, "value of 'outer' is a dict, not a tensor", NULL);
    /* a list at the top */
    pk_proto(&b); pk_op(&b, ']'); pk_op(&b, '.');
    refuse_pickle(&b, "holds a list, not a dict", NULL);
    /* a non-string key */
    pk_dict_begin(&b);
    pk_int(&b, 3);
    pk_tensor(&b, "FloatStorage", "0", 12, 0, 1, (int64_t[]){12}, (int64_t[]){1});
    pk_dict_end(&b);
    refuse_pickle(&b, "key 0 is a int, not a string", NULL);
    /* a duplicate key */
    pk_dict_begin(&b);
    pk_str(&b, "w");
    pk_tensor(&b, "FloatStorage", "0", 12, 0, 1, (int64_t[]){12}, (int64_t[]){1});
    pk_str(&b, "w");
    pk_tensor(&b, "FloatStorage", "0", 12, 0, 1, (int64_t[]){12}, (int64_t[]){1});
    pk_dict_end(&b);
    refuse_pickle(&b, "'w' appears twice", NULL);
    /* APPENDS onto a dict, SETITEMS onto a list */
    pk_proto(&b); pk_op(&b, '}'); pk_op(&b, '('); pk_op(&b, 'N'); pk_op(&b, 'e'); pk_op(&b, '.');
    refuse_pickle(&b, "APPENDS", "not a list");
    pk_proto(&b); pk_op(&b, ']'); pk_op(&b, '('); pk_op(&b, 'N'); pk_op(&b, 'N'); pk_op(&b, 'u'); pk_op(&b, '.');
    refuse_pickle(&b, "SETITEMS", "not a dict");
    /* a tensor already in the set from another file */
    pk_dict_begin(&b);
    pk_str(&b, "w");
    pk_tensor(&b, "FloatStorage", "0", 12, 0, 1, (int64_t[]){12}, (int64_t[]){1});
    pk_dict_end(&b);
    const char *p1 = tmp_path("one.pt"), *p2 = tmp_path("two.pt");
    write_ckpt(p1, &b);
    write_ckpt(p2, &b);
    lf_tensorset s;
    lf_tensorset_init(&s);
    assert_int_equal(lf_pt_read(p1, &s), 0);
    assert_int_equal(lf_pt_read(p2, &s), -1);
    assert_non_null(strstr(lf_last_error(), "already loaded from"));
    assert_non_null(strstr(lf_last_error(), p1));
    assert_int_equal(s.n, 1);
    lf_tensorset_free(&s);
    pk_free(&b);
}

/* ---------------------------------------------------------------- hostile zips */

/* Offset of the local (central = 0) or central (central = 1) header of name. */
static size_t find_hdr(const uint8_t *buf, size_t n, int central, const char *name) {
    uint32_t sig = central ? 0x02014b50u : 0x04034b50u;
    size_t fixed = central ? 46 : 30, lenat = central ? 28 : 26, nl = strlen(name);
    for (size_t i = 0; i + fixed + nl <= n; i++) {
        uint32_t v = (uint32_t)buf[i] | (uint32_t)buf[i + 1] << 8 | (uint32_t)buf[i + 2] << 16 |
                     (uint32_t)buf[i + 3] << 24;
        if (v == sig && (size_t)(buf[i + lenat] | buf[i + lenat + 1] << 8) == nl && !memcmp(buf + i + fixed, name, nl))
            return i;
    }
    fail_msg("header of %s not found", name);
    return 0;
}

/* A valid small checkpoint's bytes (malloc'd). */
static uint8_t *valid_file(size_t *n) {
    pkb b = {0};
    pk_dict_begin(&b);
    pk_str(&b, "w");
    pk_tensor(&b, "FloatStorage", "0", 12, 0, 2, (int64_t[]){3, 4}, (int64_t[]){4, 1});
    pk_dict_end(&b);
    const char *path = tmp_path("valid.pt");
    write_ckpt(path, &b);
    pk_free(&b);
    uint8_t *buf = (uint8_t *)lf_read_file(path, n, 1 << 20);
    assert_non_null(buf);
    lf_tensorset s;
    lf_tensorset_init(&s);
    assert_int_equal(lf_pt_read(path, &s), 0);
    lf_tensorset_free(&s);
    return buf;
}

static void refuse_bytes(const uint8_t *buf, size_t n, const char *needle1, const char *needle2) {
    const char *path = tmp_path("bad.pt");
    lf_test_write_file(path, buf, n);
    expect_refused(path, needle1, needle2);
}

static void test_zip_truncated_and_flipped(void **state) {
    (void)state;
    size_t n;
    uint8_t *buf = valid_file(&n);
    for (size_t cut = 0; cut < n; cut++) refuse_bytes(buf, cut, NULL, NULL);
    /* every single-byte corruption: refused or read, never a crash */
    const char *path = tmp_path("flip.pt");
    int ok = 0;
    for (size_t i = 0; i < n; i++) {
        buf[i] ^= 0xff;
        lf_test_write_file(path, buf, n);
        lf_tensorset s;
        lf_tensorset_init(&s);
        if (lf_pt_read(path, &s) == 0) {
            ok++;
            assert_int_equal(s.n, 1);
            assert_int_equal(s.tensors[0].nbytes, 48);
        } else {
            assert_non_null(strstr(lf_last_error(), path));
        }
        lf_tensorset_free(&s);
        buf[i] ^= 0xff;
    }
    print_message("byte flips: %d of %zu still read (storage bytes, padding, dates)\n", ok, n);
    free(buf);
    if (lf_test_shared()) { /* the fixture's truncations too */
        size_t g;
        uint8_t *gate = (uint8_t *)lf_read_file(lf_test_path("fixtures/tiny-loraflow/gate.pt"), &g, 1 << 20);
        assert_non_null(gate);
        for (size_t cut = 0; cut < g; cut += 7) refuse_bytes(gate, cut, NULL, NULL);
        free(gate);
    }
}

static void test_zip_hostile(void **state) {
    (void)state;
    size_t n;
    uint8_t *orig = valid_file(&n), *buf = malloc(n);
    const char *pkl = "archive/data.pkl", *st = "archive/data/0";
#define RESET() memcpy(buf, orig, n)
    /* compressed entry */
    RESET();
    buf[find_hdr(buf, n, 1, st) + 10] = 8;
    buf[find_hdr(buf, n, 0, st) + 8] = 8;
    refuse_bytes(buf, n, "'archive/data/0' is compressed (method 8, deflate)", NULL);
    /* encrypted */
    RESET();
    buf[find_hdr(buf, n, 1, pkl) + 8] |= 1;
    refuse_bytes(buf, n, "'archive/data.pkl' is encrypted", NULL);
    /* local header offset outside the file */
    RESET();
    put32(buf + find_hdr(buf, n, 1, st) + 42, 0x7ffffff0u);
    refuse_bytes(buf, n, "archive/data/0", "outside the file");
    /* central size beyond the file (both size fields) */
    RESET();
    put32(buf + find_hdr(buf, n, 1, st) + 20, 0x10000000u);
    put32(buf + find_hdr(buf, n, 1, st) + 24, 0x10000000u);
    refuse_bytes(buf, n, "archive/data/0", NULL);
    /* compressed size != size for a stored entry */
    RESET();
    put32(buf + find_hdr(buf, n, 1, st) + 20, 40);
    refuse_bytes(buf, n, "compressed size 40 but size 48", NULL);
    /* central and local sizes disagree */
    RESET();
    put32(buf + find_hdr(buf, n, 0, st) + 18, 44);
    put32(buf + find_hdr(buf, n, 0, st) + 22, 44);
    refuse_bytes(buf, n, "archive/data/0", "disagree");
    /* overlapping entries: the storage's sizes (both headers) grow into the next entry */
    RESET();
    {
        size_t c = find_hdr(buf, n, 1, st), l = find_hdr(buf, n, 0, st);
        uint32_t big = 48 + 80;
        put32(buf + c + 20, big); put32(buf + c + 24, big);
        put32(buf + l + 18, big); put32(buf + l + 22, big);
    }
    refuse_bytes(buf, n, "overlap", "archive/data/0");
    /* two central entries pointing at one local header */
    RESET();
    {
        size_t c = find_hdr(buf, n, 1, "archive/version");
        size_t l0 = find_hdr(buf, n, 0, pkl);
        put32(buf + c + 42, (uint32_t)l0);
    }
    refuse_bytes(buf, n, "archive/version", "different file");
    /* data.pkl CRC mismatch (a byte of the pickle changed) */
    RESET();
    {
        size_t l = find_hdr(buf, n, 0, pkl);
        size_t data = l + 30 + (size_t)(buf[l + 26] | buf[l + 27] << 8) + (size_t)(buf[l + 28] | buf[l + 29] << 8);
        buf[data + 4] ^= 0x20;
    }
    refuse_bytes(buf, n, "CRC", NULL);
    /* central directory claims more entries than it holds */
    RESET();
    for (size_t i = n - 22; i > 0; i--) {
        if (buf[i] == 0x50 && buf[i + 1] == 0x4b && buf[i + 2] == 5 && buf[i + 3] == 6) {
            buf[i + 8] = buf[i + 10] = 200;
            break;
        }
    }
    refuse_bytes(buf, n, "disagree", NULL); /* with the ZIP64 record */
    /* ZIP64 locator pointing outside the file */
    RESET();
    for (size_t i = n - 22; i > 0; i--) {
        if (buf[i] == 0x50 && buf[i + 1] == 0x4b && buf[i + 2] == 6 && buf[i + 3] == 7) {
            put32(buf + i + 8, 0xfffffff0u);
            break;
        }
    }
    refuse_bytes(buf, n, "ZIP64", NULL);
    /* trailing garbage / no end record / not a zip / legacy format / empty */
    RESET();
    refuse_bytes(buf, n - 1, "not a zip file", NULL);
    refuse_bytes((const uint8_t *)"hello world, this is not a zip archive", 38, "not a zip file", NULL);
    refuse_bytes((const uint8_t *)"\x80\x02\x8a\x0alegacy-pickle-magic-number-and-more-bytes", 40, "legacy", NULL);
    refuse_bytes((const uint8_t *)"", 0, "not a zip file", NULL);
    free(buf);
    free(orig);
#undef RESET
}

static void test_zip_layout(void **state) {
    (void)state;
    const char *path = tmp_path("layout.pt");
    /* no data.pkl */
    lf_zip_entry e1[2] = {{"archive/version", "3\n", 2}, {"archive/data/0", storage0, 48}};
    assert_int_equal(lf_zip_write(path, e1, 2, 0), 0);
    expect_refused(path, "data.pkl", "not a PyTorch zip checkpoint");
    /* data.pkl nested two folders deep only */
    lf_zip_entry e2[1] = {{"a/b/data.pkl", "\x80\x02}.", 4}};
    assert_int_equal(lf_zip_write(path, e2, 1, 0), 0);
    expect_refused(path, "data.pkl", NULL);
    /* two top folders */
    lf_zip_entry e3[2] = {{"a/data.pkl", "\x80\x02}.", 4}, {"b/data.pkl", "\x80\x02}.", 4}};
    assert_int_equal(lf_zip_write(path, e3, 2, 0), 0);
    expect_refused(path, "two top-level folders", NULL);
    /* an entry outside the top folder */
    lf_zip_entry e4[2] = {{"a/data.pkl", "\x80\x02}.", 4}, {"elsewhere.txt", "x", 1}};
    assert_int_equal(lf_zip_write(path, e4, 2, 0), 0);
    expect_refused(path, "'elsewhere.txt' is outside the top-level folder 'a'", NULL);
    /* duplicate entry names */
    lf_zip_entry e5[2] = {{"a/data.pkl", "\x80\x02}.", 4}, {"a/data.pkl", "\x80\x02}.", 4}};
    assert_int_equal(lf_zip_write(path, e5, 2, 0), 0);
    expect_refused(path, "appears twice", NULL);
    /* big-endian data */
    lf_zip_entry e6[2] = {{"a/data.pkl", "\x80\x02}.", 4}, {"a/byteorder", "big", 3}};
    assert_int_equal(lf_zip_write(path, e6, 2, 0), 0);
    expect_refused(path, "byteorder is 'big'", NULL);
    /* an absurdly long top-level folder name */
    char longname[400];
    memset(longname, 'x', 300);
    snprintf(longname + 300, 100, "/data.pkl");
    lf_zip_entry e8[1] = {{longname, "\x80\x02}.", 4}};
    assert_int_equal(lf_zip_write(path, e8, 1, 0), 0);
    expect_refused(path, "longer than 255 bytes", NULL);
    /* the minimal valid one */
    lf_zip_entry e7[2] = {{"a/data.pkl", "\x80\x02}.", 4}, {"a/byteorder", "little", 6}};
    assert_int_equal(lf_zip_write(path, e7, 2, 0), 0);
    lf_tensorset s;
    lf_tensorset_init(&s);
    assert_int_equal(lf_pt_read(path, &s), 0);
    assert_int_equal(s.n, 0);
    lf_tensorset_free(&s);
    /* missing file */
    lf_tensorset_init(&s);
    assert_int_equal(lf_pt_read(tmp_path("does-not-exist.pt"), &s), -1);
    assert_non_null(strstr(lf_last_error(), "does-not-exist.pt"));
    lf_tensorset_free(&s);
}

static void test_writer_errors(void **state) {
    (void)state;
    lf_tensor t[6];
    int n = make_rt_tensors(t);
    const char *path = tmp_path("w.pt");
    assert_int_equal(lf_pt_write(path, "a/b", t, n), -1);
    assert_non_null(strstr(lf_last_error(), "top-level folder"));
    assert_int_equal(lf_pt_write(path, "", t, n), -1);
    assert_int_equal(lf_pt_write(path, "..", t, n), -1);
    lf_tensor d[2] = {t[0], t[0]};
    assert_int_equal(lf_pt_write(path, "archive", d, 2), -1);
    assert_non_null(strstr(lf_last_error(), "'w.f32' appears twice"));
    lf_tensor bad = t[0];
    bad.nbytes = 20;
    assert_int_equal(lf_pt_write(path, "archive", &bad, 1), -1);
    assert_non_null(strstr(lf_last_error(), "w.f32"));
    assert_int_not_equal(access(path, F_OK), 0); /* nothing written */
    assert_int_equal(lf_pt_write("/nonexistent-dir/x.pt", "archive", t, n), -1);
    assert_non_null(strstr(lf_last_error(), "/nonexistent-dir/x.pt"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gate_fixture),
        cmocka_unit_test(test_adapter_fixture),
        cmocka_unit_test(test_fixture_rewrite),
        cmocka_unit_test(test_roundtrip_dtypes),
        cmocka_unit_test(test_roundtrip_many),
        cmocka_unit_test(test_zip64_forced),
        cmocka_unit_test(test_shared_storage_views),
        cmocka_unit_test(test_state_dict_metadata),
        cmocka_unit_test(test_torch_written),
        cmocka_unit_test(test_unaligned_zip),
        cmocka_unit_test(test_python_reads_written),
        cmocka_unit_test(test_refuses_globals),
        cmocka_unit_test(test_nothing_executed),
        cmocka_unit_test(test_refuses_opcodes),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_bad_tensors),
        cmocka_unit_test(test_bad_structure),
        cmocka_unit_test(test_zip_truncated_and_flipped),
        cmocka_unit_test(test_zip_hostile),
        cmocka_unit_test(test_zip_layout),
        cmocka_unit_test(test_writer_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
