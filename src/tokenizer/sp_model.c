/* sp_model.c: read a SentencePiece tokenizer.model (a ModelProto protobuf).
 *
 * Only the wire format is needed, not a protobuf library: varints,
 * length-delimited fields and fixed32.  The fields used are
 *   ModelProto      1: repeated SentencePiece  2: TrainerSpec  3: NormalizerSpec
 *   SentencePiece   1: piece (string)  2: score (float)  3: type (enum)
 *   TrainerSpec     3: model_type (2 = BPE)  24: treat_whitespace_as_suffix
 *                   35: byte_fallback
 *   NormalizerSpec  1: name  2: precompiled_charsmap  3: add_dummy_prefix
 *                   4: remove_extra_whitespaces  5: escape_whitespaces
 * The file is untrusted: every length is checked against the bytes that are
 * really there before anything is read. */
#include "tokenizer_internal.h"

#include <math.h>
#include <string.h>

#include "../core/util.h"

enum { PB_VARINT = 0, PB_FIXED64 = 1, PB_BYTES = 2, PB_FIXED32 = 5 };

typedef struct {
    const uint8_t *p, *end; /* unread part of the current message */
    const uint8_t *base;    /* start of the file, for byte offsets in errors */
} pb_reader;

typedef struct {
    uint32_t num;
    int wire;
    uint64_t value;      /* varint and fixed values */
    const uint8_t *data; /* PB_BYTES payload */
    size_t len;
} pb_field;

static size_t pb_offset(const pb_reader *r) { return (size_t)(r->p - r->base); }

static int pb_varint(pb_reader *r, uint64_t *v) {
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end) {
            lf_set_error("truncated varint at byte %zu", pb_offset(r));
            return -1;
        }
        uint8_t b = *r->p++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    lf_set_error("varint longer than 10 bytes at byte %zu", pb_offset(r));
    return -1;
}

/* Take n bytes of payload, after checking they are there. */
static int pb_take(pb_reader *r, uint64_t n, const uint8_t **data) {
    size_t left = (size_t)(r->end - r->p);
    if (n > left) {
        lf_set_error("truncated at byte %zu (needs %llu bytes, %zu left)", pb_offset(r),
                     (unsigned long long)n, left);
        return -1;
    }
    *data = r->p;
    r->p += n;
    return 0;
}

/* Next field of the message: 1, 0 at its end, -1 on malformed input (the
 * message says what and where; the caller adds which field it was in). */
static int pb_next(pb_reader *r, pb_field *f) {
    memset(f, 0, sizeof *f);
    if (r->p >= r->end) return 0;
    uint64_t key;
    if (pb_varint(r, &key) != 0) return -1;
    f->num = (uint32_t)(key >> 3);
    f->wire = (int)(key & 7);
    if ((key >> 3) == 0 || (key >> 3) > 0x1FFFFFFF) {
        lf_set_error("invalid field number %llu at byte %zu", (unsigned long long)(key >> 3),
                     pb_offset(r));
        return -1;
    }
    const uint8_t *d;
    switch (f->wire) {
    case PB_VARINT:
        return pb_varint(r, &f->value) == 0 ? 1 : -1;
    case PB_FIXED64:
        if (pb_take(r, 8, &d) != 0) return -1;
        for (int i = 7; i >= 0; i--) f->value = f->value << 8 | d[i];
        return 1;
    case PB_FIXED32:
        if (pb_take(r, 4, &d) != 0) return -1;
        for (int i = 3; i >= 0; i--) f->value = f->value << 8 | d[i];
        return 1;
    case PB_BYTES: {
        uint64_t n;
        if (pb_varint(r, &n) != 0 || pb_take(r, n, &f->data) != 0) return -1;
        f->len = (size_t)n;
        return 1;
    }
    default:
        lf_set_error("unsupported wire type %d (field %u) at byte %zu", f->wire, f->num,
                     pb_offset(r));
        return -1;
    }
}

static pb_reader pb_sub(const pb_reader *parent, const pb_field *f) {
    return (pb_reader){.p = f->data, .end = f->data + f->len, .base = parent->base};
}

static int want_wire(const pb_field *f, int wire, const char *name) {
    if (f->wire == wire) return 0;
    lf_set_error("field %u (%s) has wire type %d, expected %d", f->num, name, f->wire, wire);
    return -1;
}

/* ---- SentencePiece ---- */

static int read_piece(lf_tokenizer *t, const pb_reader *top, const pb_field *msg, int id,
                      const char *path) {
    pb_reader r = pb_sub(top, msg);
    pb_field f;
    const uint8_t *s = NULL;
    size_t len = 0;
    float score = 0;
    int type = LF_PIECE_NORMAL; /* the protobuf default */
    int rc;
    while ((rc = pb_next(&r, &f)) == 1) {
        if (f.num == 1) {
            if (want_wire(&f, PB_BYTES, "piece") != 0) break;
            s = f.data;
            len = f.len;
        } else if (f.num == 2) {
            if (want_wire(&f, PB_FIXED32, "score") != 0) break;
            uint32_t bits = (uint32_t)f.value;
            memcpy(&score, &bits, sizeof score);
        } else if (f.num == 3) {
            if (want_wire(&f, PB_VARINT, "type") != 0) break;
            type = f.value > 100 ? -1 : (int)f.value;
        }
    }
    if (rc != 0) {
        lf_prefix_error("%s: piece %d: ", path, id);
        return -1;
    }
    if (!isfinite(score)) {
        lf_set_error("%s: piece %d has a non-finite score", path, id);
        return -1;
    }
    if (!s) {
        lf_set_error("%s: piece %d has no piece string", path, id);
        return -1;
    }
    return lf_tok_set_piece(t, id, (const char *)s, len, score, type, path);
}

/* ---- TrainerSpec and NormalizerSpec ---- */

typedef struct {
    uint64_t model_type; /* 1 unigram, 2 BPE, 3 word, 4 char */
    uint64_t byte_fallback, whitespace_suffix;
    uint64_t add_dummy_prefix, remove_extra_ws, escape_ws;
    const uint8_t *name, *charsmap;
    size_t name_len, charsmap_len;
} sp_options;

static int read_trainer_spec(const pb_reader *top, const pb_field *msg, sp_options *o) {
    pb_reader r = pb_sub(top, msg);
    pb_field f;
    int rc;
    while ((rc = pb_next(&r, &f)) == 1) {
        uint64_t *dst = f.num == 3 ? &o->model_type
                      : f.num == 24 ? &o->whitespace_suffix
                      : f.num == 35 ? &o->byte_fallback : NULL;
        if (!dst) continue;
        if (want_wire(&f, PB_VARINT, "trainer option") != 0) return -1;
        *dst = f.value;
    }
    return rc;
}

static int read_normalizer_spec(const pb_reader *top, const pb_field *msg, sp_options *o) {
    pb_reader r = pb_sub(top, msg);
    pb_field f;
    int rc;
    while ((rc = pb_next(&r, &f)) == 1) {
        if (f.num == 1 || f.num == 2) {
            if (want_wire(&f, PB_BYTES, f.num == 1 ? "name" : "precompiled_charsmap") != 0)
                return -1;
            *(f.num == 1 ? &o->name : &o->charsmap) = f.data;
            *(f.num == 1 ? &o->name_len : &o->charsmap_len) = f.len;
            continue;
        }
        uint64_t *dst = f.num == 3 ? &o->add_dummy_prefix
                      : f.num == 4 ? &o->remove_extra_ws
                      : f.num == 5 ? &o->escape_ws : NULL;
        if (!dst) continue;
        if (want_wire(&f, PB_VARINT, "normalizer option") != 0) return -1;
        *dst = f.value;
    }
    return rc;
}

/* Refuse what this encoder would get wrong rather than tokenize differently
 * from SentencePiece. */
static int check_options(const sp_options *o, const char *path) {
    if (o->model_type != 2) {
        lf_set_error("%s: model_type %llu is not BPE (2): only SentencePiece BPE models are "
                     "supported", path, (unsigned long long)o->model_type);
        return -1;
    }
    if (o->whitespace_suffix) {
        lf_set_error("%s: treat_whitespace_as_suffix is not supported", path);
        return -1;
    }
    if (o->charsmap_len > 0) {
        lf_set_error("%s: normalizer \"%.*s\" has character-mapping rules, which are not "
                     "supported (only \"identity\")", path, (int)(o->name_len > 64 ? 64 : o->name_len),
                     o->name ? (const char *)o->name : "");
        return -1;
    }
    return 0;
}

/* ---- ModelProto ---- */

/* Pass 1: check the top-level framing, count the pieces, read the options. */
static int scan_model(const uint8_t *data, size_t len, const char *path, int *n_pieces,
                      sp_options *o) {
    pb_reader r = {.p = data, .end = data + len, .base = data};
    pb_field f;
    int n = 0, rc;
    while ((rc = pb_next(&r, &f)) == 1) {
        if (f.num == 1) {
            if (want_wire(&f, PB_BYTES, "pieces") != 0) return -1;
            if (++n > LF_TOK_MAX_VOCAB) {
                lf_set_error("%s: more than %d pieces (LF_TOK_MAX_VOCAB in "
                             "src/tokenizer/tokenizer_internal.h)", path, LF_TOK_MAX_VOCAB);
                return -1;
            }
        } else if (f.num == 2 || f.num == 3) {
            if (want_wire(&f, PB_BYTES, f.num == 2 ? "trainer_spec" : "normalizer_spec") != 0 ||
                (f.num == 2 ? read_trainer_spec(&r, &f, o) : read_normalizer_spec(&r, &f, o)) != 0) {
                lf_prefix_error("%s: %s: ", path, f.num == 2 ? "trainer_spec" : "normalizer_spec");
                return -1;
            }
        }
    }
    if (rc != 0) {
        /* pb_next fills f.num once the field key was read */
        if (f.num == 1)
            lf_prefix_error("%s: piece %d: ", path, n);
        else if (f.num == 2 || f.num == 3)
            lf_prefix_error("%s: %s: ", path, f.num == 2 ? "trainer_spec" : "normalizer_spec");
        else if (f.num > 0)
            lf_prefix_error("%s: field %u: ", path, f.num);
        else
            lf_prefix_error("%s: not a SentencePiece model: ", path);
        return -1;
    }
    if (n == 0) {
        lf_set_error("%s: not a SentencePiece model: no pieces", path);
        return -1;
    }
    *n_pieces = n;
    return 0;
}

lf_tokenizer *lf_tok_read_sp_model(const uint8_t *data, size_t len, const char *path) {
    /* protobuf defaults where the file leaves a field out */
    sp_options o = {.model_type = 1, .add_dummy_prefix = 1, .remove_extra_ws = 1, .escape_ws = 1};
    int n;
    if (scan_model(data, len, path, &n, &o) != 0 || check_options(&o, path) != 0) return NULL;
    lf_tokenizer *t = lf_tok_alloc(n, path);
    if (!t) return NULL;
    t->add_dummy_prefix = o.add_dummy_prefix != 0;
    t->remove_extra_ws = o.remove_extra_ws != 0;
    t->escape_spaces = o.escape_ws != 0;
    t->byte_fallback = o.byte_fallback != 0;

    /* Pass 2: the pieces, in id order.  Framing was checked in pass 1. */
    pb_reader r = {.p = data, .end = data + len, .base = data};
    pb_field f;
    int id = 0;
    while (pb_next(&r, &f) == 1) {
        if (f.num != 1) continue;
        if (read_piece(t, &r, &f, id, path) != 0) goto fail;
        id++;
    }
    if (lf_tok_finish(t, path) != 0) goto fail;
    return t;
fail:
    lf_tokenizer_free(t);
    return NULL;
}
