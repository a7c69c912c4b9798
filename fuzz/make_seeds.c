/* make_seeds: writes the seed corpora of the fuzz targets.
 *
 *   make_seeds OUT_DIR [SHARED_DIR]
 *
 * OUT_DIR/<target>/ receives small valid (and a few nearly valid) inputs:
 * files made here with loraflow's own writers and the tok_build.h
 * tokenizers, plus, when SHARED_DIR (the ../shared folder) exists, copies of
 * the tiny-loraflow fixture files and pieces cut out of them (safetensors
 * headers, the data.pkl of each PyTorch zip).  Nothing is written into the
 * repository: OUT_DIR is fuzz-out/seeds, which git ignores. */
#include "fuzz.h"
#include "tok_build.h"
#include "../src/io/pickle.h"
#include "../src/io/tensorset.h"

#include <sys/stat.h>

static const char *out_root;
static int n_written;

static void seed(const char *target, const char *name, const void *data, size_t n) {
    char dir[1024], path[1200];
    snprintf(dir, sizeof dir, "%s/%s", out_root, target);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "make_seeds: cannot write %s\n", path);
        exit(1);
    }
    n_written++;
}

static void seed_str(const char *target, const char *name, const char *s) { seed(target, name, s, strlen(s)); }

static char *slurp(const char *path, size_t *n) {
    char *d = lf_read_file(path, n, (size_t)64 << 20);
    if (!d) fprintf(stderr, "make_seeds: skipping %s: %s\n", path, lf_last_error());
    return d;
}

static void seed_file(const char *target, const char *name, const char *path) {
    size_t n;
    char *d = slurp(path, &n);
    if (d) seed(target, name, d, n);
    free(d);
}

/* The data.pkl entry of a stored zip, found through its central directory. */
static void seed_pickle_of(const char *name, const uint8_t *z, size_t n) {
    for (size_t i = n >= 22 ? n - 22 : 0; i + 22 <= n && i + 65557 >= n; i--) {
        if (!(z[i] == 'P' && z[i + 1] == 'K' && z[i + 2] == 5 && z[i + 3] == 6)) {
            if (i == 0) break;
            continue;
        }
        uint32_t cd = (uint32_t)z[i + 16] | (uint32_t)z[i + 17] << 8 | (uint32_t)z[i + 18] << 16 |
                      (uint32_t)z[i + 19] << 24;
        size_t pos = cd;
        while (pos + 46 <= i && z[pos] == 'P' && z[pos + 1] == 'K' && z[pos + 2] == 1 && z[pos + 3] == 2) {
            size_t nl = (size_t)(z[pos + 28] | z[pos + 29] << 8), xl = (size_t)(z[pos + 30] | z[pos + 31] << 8),
                   cl = (size_t)(z[pos + 32] | z[pos + 33] << 8);
            uint32_t size = (uint32_t)z[pos + 24] | (uint32_t)z[pos + 25] << 8 | (uint32_t)z[pos + 26] << 16 |
                            (uint32_t)z[pos + 27] << 24;
            uint32_t off = (uint32_t)z[pos + 42] | (uint32_t)z[pos + 43] << 8 | (uint32_t)z[pos + 44] << 16 |
                           (uint32_t)z[pos + 45] << 24;
            if (nl >= 8 && pos + 46 + nl <= n && !memcmp(z + pos + 46 + nl - 8, "data.pkl", 8) && off + 30 <= n) {
                size_t data = off + 30 + (size_t)(z[off + 26] | z[off + 27] << 8) + (size_t)(z[off + 28] | z[off + 29] << 8);
                if (data + size <= n) seed("pickle", name, z + data, size);
                return;
            }
            pos += 46 + nl + xl + cl;
        }
        return;
    }
}

static void seed_zip(const char *name, const char *path) {
    size_t n;
    char *d = slurp(path, &n);
    if (!d) return;
    seed("ptzip", name, d, n);
    seed_pickle_of(name, (const uint8_t *)d, n);
    free(d);
}

/* A safetensors file's 8-byte length and JSON header, with little or no data. */
static void seed_st_header(const char *target, const char *name, const char *path, size_t extra) {
    size_t n;
    char *d = slurp(path, &n);
    if (!d) return;
    uint64_t hl = 0;
    for (int i = 7; n >= 8 && i >= 0; i--) hl = hl << 8 | (uint8_t)d[i];
    if (n >= 8 && hl <= n - 8) seed(target, name, d, (size_t)hl + 8 + (extra < n - 8 - hl ? extra : n - 8 - hl));
    free(d);
}

static void die(const char *what) {
    fprintf(stderr, "make_seeds: %s: %s\n", what, lf_last_error());
    exit(1);
}

static void synthetic_safetensors(const char *scratch) {
    float f[6] = {0, 1.5f, -2, 3, 1e-8f, 65504};
    uint16_t h[4] = {0x3c00, 0xc000, 0x7bff, 0x0001};
    int64_t l[2] = {-1, INT64_MAX};
    int32_t i32[3] = {1, -2, 3};
    lf_tensor_desc all[] = {
        {"f32", LF_F32, 2, {2, 3}, f},   {"f16", LF_F16, 1, {4}, h},  {"bf16", LF_BF16, 2, {2, 2}, h},
        {"i64", LF_I64, 1, {2}, l},      {"i32", LF_I32, 1, {3}, i32}, {"scalar", LF_F32, 0, {0}, f},
        {"empty", LF_F32, 2, {0, 5}, f}, {"model.layers.0.self_attn.q_proj.weight", LF_F32, 1, {1}, f},
    };
    const char *meta[] = {"format", "pt", "loraflow", "gate", "temperature", "1.1", "note", "\xc3\xa9\"\\\n"};
    char p[1024];
    snprintf(p, sizeof p, "%s/all.safetensors", scratch);
    if (lf_write_safetensors(p, all, 8, meta, 4) != 0) die(p);
    seed_file("safetensors", "all-dtypes.safetensors", p);
    if (lf_write_safetensors(p, all, 1, NULL, 0) != 0) die(p);
    seed_file("safetensors", "one.safetensors", p);
    if (lf_write_safetensors(p, NULL, 0, NULL, 0) != 0) die(p);
    seed_file("safetensors", "none.safetensors", p);
    /* hand-written layouts other writers produce: holes, padding, misalignment */
    static const char odd[] = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]},"
                              "\"b\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[8,16]}}   ";
    uint8_t buf[8 + sizeof odd + 16];
    uint64_t hl = sizeof odd - 1;
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(hl >> (8 * i));
    memcpy(buf + 8, odd, hl);
    memset(buf + 8 + hl, 0x3f, 16);
    seed("safetensors", "odd-layout.safetensors", buf, 8 + hl + 16);
}

static void synthetic_pt(const char *scratch) {
    float f[12];
    for (int i = 0; i < 12; i++) f[i] = (float)i;
    uint16_t h[4] = {0x3c00, 0xc000, 0x7bff, 0x0001};
    lf_tensor t[4] = {
        {.name = "w", .dtype = LF_F32, .ndim = 2, .shape = {3, 4}, .data = f, .nbytes = 48},
        {.name = "b", .dtype = LF_BF16, .ndim = 1, .shape = {4}, .data = h, .nbytes = 8},
        {.name = "s", .dtype = LF_F16, .ndim = 0, .data = h, .nbytes = 2},
        {.name = "e", .dtype = LF_F32, .ndim = 1, .shape = {0}, .data = f, .nbytes = 0},
    };
    char p[1024];
    snprintf(p, sizeof p, "%s/t.pt", scratch);
    if (lf_pt_write(p, "archive", t, 4) != 0) die(p);
    seed_zip("synthetic.pt", p);
    /* a pickle with a strided view and a memo'd storage, written by hand */
    static const uint8_t strided[] =
        "\x80\x02}q\x00(X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\nq\x01((X\x07\x00\x00\x00storage"
        "ctorch\nFloatStorage\nq\x02X\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpuK\x0c" "tQK\x00K\x04K\x03\x86K\x01K\x04\x86"
        "\x89" "ccollections\nOrderedDict\n)RtRX\x01\x00\x00\x00vh\x01((X\x07\x00\x00\x00storageh\x02X\x01\x00\x00\x00"
        "0X\x03\x00\x00\x00" "cpuK\x0c" "tQK\x02K\x05\x85K\x02\x85\x89}tRu}b.";
    seed("pickle", "strided.pkl", strided, sizeof strided - 1);
    lf_zip_entry e[3] = {{"archive/data.pkl", strided, sizeof strided - 1}, {"archive/data/0", f, 48},
                         {"archive/version", "3\n", 2}};
    if (lf_zip_write(p, e, 3, 1) != 0) die(p);
    seed_file("ptzip", "strided-zip64.pt", p);
}

static void synthetic_model(const char *scratch) {
    char dir[1024], p[1200];
    snprintf(dir, sizeof dir, "%s/model", scratch);
    lf_synth_spec sp = fuzz_small_spec();
    if (lf_synth_model(dir, &sp, NULL, NULL) != 0) die("lf_synth_model");
    snprintf(p, sizeof p, "%s/config.json", dir);
    seed_file("config", "synthetic.json", p);
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    seed_file("tokenizer_load", "synthetic-small-vocab.json", p);
    snprintf(p, sizeof p, "%s/lora_0/adapter_config.json", dir);
    seed_file("adapter_config", "synthetic.json", p);
    snprintf(p, sizeof p, "%s/lora_0/adapter_model.safetensors", dir);
    seed_file("adapter_weights", "synthetic.safetensors", p);
    seed_file("safetensors", "adapter.safetensors", p);
    /* the same weights as a PyTorch zip (adapter_model.bin) */
    lf_tensorset s;
    lf_tensorset_init(&s);
    if (lf_safetensors_read(p, &s) != 0) die(p);
    snprintf(p, sizeof p, "%s/adapter.bin", scratch);
    if (lf_pt_write(p, "adapter_model", s.tensors, s.n) != 0) die(p);
    seed_file("adapter_weights", "synthetic.bin", p);
    lf_tensorset_free(&s);
    snprintf(p, sizeof p, "%s/gate.safetensors", dir);
    seed_file("gate", "synthetic-small.safetensors", p);
    seed_file("safetensors", "gate.safetensors", p);
    /* the gate again as the authors' .pt layout */
    lf_model *m = lf_model_load(dir);
    if (!m) die(dir);
    char l0[1200], l1[1200];
    snprintf(l0, sizeof l0, "%s/lora_0", dir);
    snprintf(l1, sizeof l1, "%s/lora_1", dir);
    if (lf_model_add_adapter(m, "lora_0", l0) < 0 || lf_model_add_adapter(m, "lora_1", l1) < 0) die("adapters");
    snprintf(p, sizeof p, "%s/gate.safetensors", dir);
    lf_gate *g = lf_gate_load(p, m);
    if (!g) die(p);
    snprintf(p, sizeof p, "%s/gate.pt", scratch);
    if (lf_gate_save_pt(g, p) != 0) die(p);
    seed_file("gate", "synthetic-small.pt", p);
    seed_zip("gate.pt", p);
    lf_gate_free(g);
    lf_model_free(m);
}

static void json_seeds(void) {
    seed_str("config", "minimal.json",
             "{\"hidden_size\":8,\"intermediate_size\":16,\"num_hidden_layers\":1,\"num_attention_heads\":2,"
             "\"vocab_size\":4}");
    seed_str("config", "full.json",
             "{\"model_type\":\"llama\",\"hidden_act\":\"silu\",\"hidden_size\":64,\"intermediate_size\":176,"
             "\"num_hidden_layers\":3,\"num_attention_heads\":4,\"num_key_value_heads\":2,\"head_dim\":32,"
             "\"vocab_size\":32000,\"max_position_embeddings\":4096,\"rms_norm_eps\":1e-06,\"rope_theta\":500000.0,"
             "\"tie_word_embeddings\":true,\"bos_token_id\":1,\"eos_token_id\":[2,3],\"rope_scaling\":null,"
             "\"attention_bias\":false,\"mlp_bias\":false,\"torch_dtype\":\"bfloat16\"}");
    seed_str("adapter_config", "minimal.json", "{\"r\":4,\"target_modules\":[\"q_proj\"]}");
    seed_str("adapter_config", "options.json",
             "{\"peft_type\":\"LORA\",\"r\":4,\"lora_alpha\":16.5,\"use_rslora\":true,\"bias\":\"none\","
             "\"target_modules\":\"all-linear\",\"layers_to_transform\":[0,1],\"rank_pattern\":{\"q_proj\":4},"
             "\"alpha_pattern\":{},\"modules_to_save\":null,\"use_dora\":false}");
    seed_str("adapter_config", "regex.json",
             "{\"r\":4,\"lora_alpha\":8,\"target_modules\":\".*proj\",\"layers_to_transform\":1}");
    seed_str("st_index", "valid.json",
             "{\"metadata\":{\"total_size\":32},\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
             "\"b\":\"model-00001-of-00002.safetensors\",\"c\":\"model-00002-of-00002.safetensors\"}}");
    seed_str("st_index", "one-shard.json", "{\"weight_map\":{\"c\":\"model-00002-of-00002.safetensors\"}}");
    seed_str("st_index", "junk-shard.json", "{\"weight_map\":{\"a\":\"junk.safetensors\"}}");
}

/* Training data (fuzz_jsonl): one line of each form lf_dataset_load knows. */
static void jsonl_seeds(void) {
    seed_str("jsonl", "forms.jsonl",
             "{\"query\": \"What is 2 + 3?\", \"response\": \"5\"}\n"
             "{\"question\": \"hello\", \"answer\": \"world\", \"system\": null}\n"
             "{\"text\": \"write code\", \"code\": \"def f():\\r\\n  return 1\"}\n"
             "{\"data\": [\"q\", \"a\"], \"system\": \"be brief\"}\n"
             "{\"text\": \"plain text \\u00e9\\n\"}\n"
             "{\"input_ids\": [1, 5, 6, 2], \"labels\": [-100, 5, 6, 2], \"attention_mask\": [1, 1, 1, 0]}\n");
    seed_str("jsonl", "ids.jsonl", "{\"input_ids\": [1, 2, 3]}\n\n{\"input_ids\": [4, 5], \"labels\": [4, -100]}\n");
}

/* The first lines of the shared data sets, as they come. */
static void jsonl_fixture_seeds(const char *shared) {
    static const char *const files[] = {"train/zh_math_train.jsonl", "train/es_code_train.jsonl",
                                        "dev/ru_math_dev.jsonl", "test/zh_code_test.jsonl"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char p[4400], name[64];
        snprintf(p, sizeof p, "%s/data/loraflow/%s", shared, files[i]);
        FILE *f = fopen(p, "rb");
        if (!f) continue;
        char buf[8192];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        size_t cut = 0; /* up to the end of the last whole line (two at most) */
        for (size_t k = 0, lines = 0; k < n && lines < 2; k++)
            if (buf[k] == '\n') cut = k + 1, lines++;
        snprintf(name, sizeof name, "shared-%zu.jsonl", i);
        if (cut) seed("jsonl", name, buf, cut);
    }
}

static void tokenizer_seeds(void) {
    for (int v = 0; v < 8; v++) {
        char name[64], *j = tb_json(v & 1, (v >> 1) & 1, (v >> 2) & 1);
        snprintf(name, sizeof name, "built-%d.json", v);
        seed_str("tokenizer_load", name, j);
        free(j);
    }
    for (int v = 0; v < 16; v += 3) {
        size_t n;
        char name[64];
        uint8_t *m = tb_sp_model(v & 1, (v >> 1) & 1, (v >> 2) & 1, (v >> 3) & 1, &n);
        snprintf(name, sizeof name, "built-%d.model", v);
        seed("tokenizer_load", name, m, n);
        free(m);
    }
    static const char *const texts[] = {
        "Hello world", " hello  world ", "the wor\xc3\xa9ld \xe4\xb8\xad", "<s>a</s>b", "\xff\xfe abc",
        "\xe2\x96\x81\xe2\x96\x81x", "  ", "aaaa bbbb cccc",
    };
    for (int t = 0; t < 6; t++) {
        for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
            char name[64], buf[128];
            buf[0] = (char)t;
            buf[1] = (char)(i % 8);
            size_t n = strlen(texts[i]);
            memcpy(buf + 2, texts[i], n);
            snprintf(name, sizeof name, "tok%d-text%zu", t, i);
            seed("tokenize", name, buf, n + 2);
        }
    }
}

static void fixture_seeds(const char *shared) {
    char fx[4200], p[4400];
    snprintf(fx, sizeof fx, "%s/fixtures/tiny-loraflow", shared);
    struct stat st;
    if (stat(fx, &st) != 0) {
        fprintf(stderr, "make_seeds: %s not found: only the built-in seeds\n", fx);
        return;
    }
    snprintf(p, sizeof p, "%s/base/config.json", fx);
    seed_file("config", "fixture.json", p);
    snprintf(p, sizeof p, "%s/lora_lang/adapter_config.json", fx);
    seed_file("adapter_config", "fixture-lang.json", p);
    snprintf(p, sizeof p, "%s/lora_task/adapter_config.json", fx);
    seed_file("adapter_config", "fixture-task.json", p);
    snprintf(p, sizeof p, "%s/gate.pt", fx);
    seed_file("gate", "fixture.pt", p);
    seed_zip("fixture-gate.pt", p);
    snprintf(p, sizeof p, "%s/lora_task/adapter_model.bin", fx);
    seed_zip("fixture-adapter.bin", p);
    snprintf(p, sizeof p, "%s/lora_lang/adapter_model.safetensors", fx);
    seed_file("safetensors", "fixture-adapter.safetensors", p);
    static const char *const small[] = {"inputs", "generate", "train"};
    for (int i = 0; i < 3; i++) {
        char name[64];
        snprintf(p, sizeof p, "%s/expected/%s.safetensors", fx, small[i]);
        snprintf(name, sizeof name, "fixture-%s.safetensors", small[i]);
        seed_file("safetensors", name, p);
    }
    snprintf(p, sizeof p, "%s/base/model.safetensors", fx);
    seed_st_header("safetensors", "fixture-model-header.safetensors", p, 64);
    snprintf(p, sizeof p, "%s/expected/logits.safetensors", fx);
    seed_st_header("safetensors", "fixture-logits-header.safetensors", p, 64);
    snprintf(p, sizeof p, "%s/base/tokenizer.model", fx);
    seed_file("tokenizer_load", "llama2.model", p);
    snprintf(p, sizeof p, "%s/base/tokenizer.json", fx);
    seed_file("tokenizer_load", "llama2.json", p);
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: make_seeds OUT_DIR [SHARED_DIR]\n");
        return 2;
    }
    out_root = argv[1];
    mkdir(out_root, 0755);
    const char *scratch = fuzz_dir();
    synthetic_safetensors(scratch);
    synthetic_pt(scratch);
    synthetic_model(scratch);
    json_seeds();
    jsonl_seeds();
    tokenizer_seeds();
    if (argc == 3) {
        fixture_seeds(argv[2]);
        jsonl_fixture_seeds(argv[2]);
    }
    printf("make_seeds: %d seed files in %s\n", n_written, out_root);
    return 0;
}
