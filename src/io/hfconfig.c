/* hfconfig.c: read a Hugging Face LlamaForCausalLM config.json.
 *
 * Only what the Llama computation needs is read.  Settings that would change
 * the computation in ways loraflow does not implement (rope scaling, biases,
 * another activation or model type) are refused with a clear message rather
 * than silently ignored, and every size is bounded so later size arithmetic
 * cannot overflow. */
#include "../core/util.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_FILE_LIMIT ((size_t)16 << 20)

/* Short text of a JSON value for "found ..." in error messages. */
static const char *desc(const cJSON *v, char *buf, size_t n) {
    char *s = cJSON_PrintUnformatted(v);
    if (!s) { snprintf(buf, n, "a JSON value"); return buf; }
    if (strlen(s) > 60) snprintf(buf, n, "%.57s...", s);
    else snprintf(buf, n, "%s", s);
    cJSON_free(s);
    return buf;
}

/* The member `key`; a repeated key is an error since readers disagree on
 * which copy counts.  NULL with *err = 0: absent; JSON null counts as absent
 * (transformers writes null for unset optional fields). */
static const cJSON *field(const char *path, const cJSON *root, const char *key, int *err) {
    const cJSON *found = NULL;
    *err = 0;
    for (const cJSON *c = root->child; c; c = c->next) {
        if (c->string && !strcmp(c->string, key)) {
            if (found) {
                lf_set_error("%s: field '%s' appears twice", path, key);
                *err = 1;
                return NULL;
            }
            found = c;
        }
    }
    return cJSON_IsNull(found) ? NULL : found;
}

/* An integer field in [lo, hi].  When absent: def if optional, else an error. */
static int get_int(const char *path, const cJSON *root, const char *key, int required, int def,
                   int lo, int hi, int *out) {
    int err;
    char d[80];
    const cJSON *v = field(path, root, key, &err);
    if (err) return -1;
    if (!v) {
        if (required) {
            lf_set_error("%s: field '%s' missing", path, key);
            return -1;
        }
        *out = def;
        return 0;
    }
    double x = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(x == floor(x)) || x < lo) {
        lf_set_error("%s: field '%s' must be %s integer, found %s", path, key,
                     lo > 0 ? "a positive" : "a non-negative", desc(v, d, sizeof d));
        return -1;
    }
    if (x > hi) {
        lf_set_error("%s: field '%s' is %s, above the supported limit of %d (loraflow keeps sizes in "
                     "32-bit arithmetic)", path, key, desc(v, d, sizeof d), hi);
        return -1;
    }
    *out = (int)x;
    return 0;
}

/* A positive finite number; def when absent. */
static int get_positive(const char *path, const cJSON *root, const char *key, double def, float *out) {
    int err;
    char d[80];
    const cJSON *v = field(path, root, key, &err);
    if (err) return -1;
    double x = v ? (cJSON_IsNumber(v) ? v->valuedouble : NAN) : def;
    /* Range-check before narrowing: a double beyond FLT_MAX is undefined as float. */
    if (!(x > 0 && x <= FLT_MAX && (float)x > 0)) {
        lf_set_error("%s: field '%s' must be a positive number, found %s", path, key,
                     desc(v, d, sizeof d));
        return -1;
    }
    *out = (float)x;
    return 0;
}

static int get_bool(const char *path, const cJSON *root, const char *key, int def, int *out) {
    int err;
    char d[80];
    const cJSON *v = field(path, root, key, &err);
    if (err) return -1;
    if (!v) { *out = def; return 0; }
    if (!cJSON_IsBool(v)) {
        lf_set_error("%s: field '%s' must be true or false, found %s", path, key, desc(v, d, sizeof d));
        return -1;
    }
    *out = cJSON_IsTrue(v);
    return 0;
}

/* A string field that, when present, must equal `want`. */
static int check_string(const char *path, const cJSON *root, const char *key, const char *want,
                        const char *why) {
    int err;
    char d[80];
    const cJSON *v = field(path, root, key, &err);
    if (err) return -1;
    if (v && !(cJSON_IsString(v) && !strcmp(v->valuestring, want))) {
        lf_set_error("%s: field '%s' is %s, expected \"%s\" (%s)", path, key, desc(v, d, sizeof d),
                     want, why);
        return -1;
    }
    return 0;
}

/* A boolean option loraflow does not implement: absent, null or false. */
static int check_not_true(const char *path, const cJSON *root, const char *key, const char *what) {
    int on;
    if (get_bool(path, root, key, 0, &on) != 0) return -1;
    if (on) {
        lf_set_error("%s: field '%s' is true: %s are not supported", path, key, what);
        return -1;
    }
    return 0;
}

/* A token id, possibly given as a list (then the first is used). */
static int get_token_id(const char *path, const cJSON *root, const char *key, int def, int vocab,
                        int *out) {
    int err;
    char d[80];
    const cJSON *v = field(path, root, key, &err);
    if (err) return -1;
    if (!v) {
        if (def >= vocab) { /* the Llama default must be a token too */
            lf_set_error("%s: field '%s' is missing and its default %d is outside the vocabulary "
                         "of %d tokens", path, key, def, vocab);
            return -1;
        }
        *out = def;
        return 0;
    }
    const cJSON *x = cJSON_IsArray(v) ? v->child : v;
    double id = x && cJSON_IsNumber(x) ? x->valuedouble : NAN;
    if (!(id == floor(id)) || id < 0 || id >= vocab) {
        lf_set_error("%s: field '%s' must be a token id in [0, %d) or a list of them, found %s", path,
                     key, vocab, desc(v, d, sizeof d));
        return -1;
    }
    *out = (int)id;
    return 0;
}

static int check_unsupported(const char *path, const cJSON *root) {
    int err;
    char d[80];
    if (check_string(path, root, "model_type", "llama", "only Llama models are supported") != 0 ||
        check_string(path, root, "hidden_act", "silu", "the Llama MLP uses SiLU") != 0 ||
        check_not_true(path, root, "attention_bias", "attention projection biases") != 0 ||
        check_not_true(path, root, "mlp_bias", "MLP biases") != 0)
        return -1;
    const cJSON *rs = field(path, root, "rope_scaling", &err);
    if (err) return -1;
    if (rs) {
        lf_set_error("%s: field 'rope_scaling' is %s: rope scaling is not supported (only plain "
                     "RoPE; expected null or absent)", path, desc(rs, d, sizeof d));
        return -1;
    }
    return 0;
}

static int read_sizes(const char *path, const cJSON *root, lf_config *c) {
    if (get_int(path, root, "hidden_size", 1, 0, 1, (1 << 20) - 1, &c->hidden_size) != 0 ||
        get_int(path, root, "intermediate_size", 1, 0, 1, (1 << 22) - 1, &c->intermediate_size) != 0 ||
        get_int(path, root, "num_hidden_layers", 1, 0, 1, 9999, &c->n_layers) != 0 ||
        get_int(path, root, "num_attention_heads", 1, 0, 1, 1 << 16, &c->n_heads) != 0 ||
        get_int(path, root, "num_key_value_heads", 0, c->n_heads, 1, 1 << 16, &c->n_kv_heads) != 0 ||
        get_int(path, root, "vocab_size", 1, 0, 1, (1 << 24) - 1, &c->vocab_size) != 0 ||
        get_int(path, root, "max_position_embeddings", 0, 2048, 1, 1 << 24,
                &c->max_position_embeddings) != 0)
        return -1;
    /* head_dim defaults to hidden_size / heads, which must then divide. */
    int err;
    if (!field(path, root, "head_dim", &err) && !err && c->hidden_size % c->n_heads != 0) {
        lf_set_error("%s: hidden_size %d is not divisible by num_attention_heads %d (and no "
                     "head_dim is given)", path, c->hidden_size, c->n_heads);
        return -1;
    }
    if (err || get_int(path, root, "head_dim", 0, c->hidden_size / c->n_heads, 1, 1 << 16,
                       &c->head_dim) != 0)
        return -1;
    return 0;
}

static int check_shapes(const char *path, const lf_config *c) {
    if (c->n_heads % c->n_kv_heads != 0) {
        lf_set_error("%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", path,
                     c->n_heads, c->n_kv_heads);
        return -1;
    }
    /* rotate_half pairs element j with j + head_dim/2. */
    if (c->head_dim % 2 != 0) {
        lf_set_error("%s: head_dim %d must be even for rotary embeddings", path, c->head_dim);
        return -1;
    }
    if ((int64_t)c->n_heads * c->head_dim >= (1 << 20)) {
        lf_set_error("%s: num_attention_heads %d x head_dim %d is above the supported limit of %d",
                     path, c->n_heads, c->head_dim, (1 << 20) - 1);
        return -1;
    }
    return 0;
}

static int read_config(const char *path, const cJSON *root, lf_config *c) {
    if (!cJSON_IsObject(root)) {
        lf_set_error("%s: must hold a JSON object, found %s", path,
                     cJSON_IsArray(root) ? "an array" : "a single value");
        return -1;
    }
    if (check_unsupported(path, root) != 0 || read_sizes(path, root, c) != 0 ||
        check_shapes(path, c) != 0 ||
        get_positive(path, root, "rms_norm_eps", 1e-6, &c->rms_norm_eps) != 0 ||
        get_positive(path, root, "rope_theta", 10000.0, &c->rope_theta) != 0 ||
        get_bool(path, root, "tie_word_embeddings", 0, &c->tie_word_embeddings) != 0 ||
        get_token_id(path, root, "bos_token_id", 1, c->vocab_size, &c->bos_id) != 0 ||
        get_token_id(path, root, "eos_token_id", 2, c->vocab_size, &c->eos_id) != 0)
        return -1;
    return 0;
}

int lf_config_read(const char *path, lf_config *out) {
    size_t len;
    char *text = lf_read_file_limit(path, &len, CONFIG_FILE_LIMIT, "CONFIG_FILE_LIMIT in src/io/hfconfig.c");
    if (!text) return -1;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        lf_json_parse_error(path, "not valid JSON", text, len, end);
        free(text);
        return -1;
    }
    /* cJSON stops after the first value; anything but whitespace after it
     * means the file is not one JSON document. */
    end += strspn(end, " \t\r\n");
    if (end != text + len) {
        lf_set_error("%s: not valid JSON (unexpected bytes after the object at byte %zu)", path,
                     (size_t)(end - text));
        cJSON_Delete(root);
        free(text);
        return -1;
    }
    lf_config c;
    memset(&c, 0, sizeof c);
    int rc = read_config(path, root, &c);
    if (rc == 0) *out = c; /* *out is untouched on failure */
    cJSON_Delete(root);
    free(text);
    return rc;
}
