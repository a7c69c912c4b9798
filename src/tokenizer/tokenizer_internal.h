/* tokenizer_internal.h: the in-memory SentencePiece BPE vocabulary shared by
 * the two file readers (sp_model.c, hf_json.c) and the encoder/decoder
 * (tokenizer.c).
 *
 * Both files describe the same thing: a list of pieces indexed by id, each
 * with a type, plus a rule that says which adjacent pair of pieces merges
 * first.  tokenizer.model ranks a merge by the score of the merged piece;
 * tokenizer.json lists the merges in priority order.  The encoder only asks
 * "can these two ids merge, into what, with which priority", so the two
 * sources share one code path. */
#ifndef LF_TOKENIZER_INTERNAL_H
#define LF_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include "loraflow.h"

/* Piece types, numbered as in SentencePiece's ModelProto. */
enum {
    LF_PIECE_NORMAL = 1,
    LF_PIECE_UNKNOWN = 2,
    LF_PIECE_CONTROL = 3,
    LF_PIECE_USER = 4,   /* user-defined: treated like NORMAL here */
    LF_PIECE_UNUSED = 5,
    LF_PIECE_BYTE = 6,   /* "<0xXX>" byte-fallback piece */
};

/* Caps that keep a hostile file from asking for absurd allocations. */
#define LF_TOK_MAX_FILE (512u << 20)   /* bytes of tokenizer.model / .json */
#define LF_TOK_MAX_VOCAB (1 << 22)     /* pieces */
#define LF_TOK_MAX_PIECE 4096          /* bytes in one piece */
#define LF_TOK_MAX_MERGES (1 << 24)    /* tokenizer.json merges */
#define LF_TOK_MAX_TEXT (1u << 28)     /* bytes of text per lf_tokenize (keeps counts in int) */
/* Hash-table probes allowed while building the piece or merge table of n
 * entries (chance gives ~1.5 n at the load used; colliding keys crafted to
 * make loading quadratic hit this instead). */
#define LF_TOK_PROBE_BUDGET(n) (64 * (n) + ((uint64_t)1 << 20))

/* One tokenizer.json merge: (left, right) -> result, rank = list position. */
typedef struct {
    int32_t left, right, result, rank;
} lf_merge;

/* Slot hash of a merge pair (Fibonacci hashing of the two ids). */
static inline uint32_t lf_merge_hash(int32_t left, int32_t right) {
    uint64_t key = ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
    return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32);
}

struct lf_tokenizer {
    int n_vocab;
    char **piece;        /* NUL-terminated UTF-8, owned */
    uint32_t *piece_len; /* bytes, without the NUL */
    float *score;        /* tokenizer.model scores (0 for tokenizer.json) */
    uint8_t *type;       /* LF_PIECE_* */

    /* piece string -> id, open addressing, -1 = empty slot */
    int32_t *piece_slot;
    uint32_t piece_mask;

    /* tokenizer.json only: (left id, right id) -> merge, rank order */
    int use_merges;
    lf_merge *merge_slot; /* open addressing, left = -1 empty slot */
    uint32_t merge_mask;

    int32_t byte_id[256]; /* id of "<0xXX>" or -1 */
    int32_t unk_id, bos_id, eos_id; /* -1 when absent */

    /* pre-processing options from the file */
    int add_dummy_prefix; /* prepend one "▁" to non-empty text */
    int escape_spaces;    /* ' ' -> "▁" */
    int remove_extra_ws;  /* SentencePiece: strip and collapse ' ' runs */
    int byte_fallback;    /* unknown characters -> <0xXX> pieces */
};

/* ---- building (tokenizer.c) ---- */

/* An empty tokenizer with room for n pieces (all NULL) and default options. */
lf_tokenizer *lf_tok_alloc(int n, const char *path);
/* Store piece id (copied); returns 0 or -1 (error names path). */
int lf_tok_set_piece(lf_tokenizer *t, int32_t id, const char *s, size_t len, float score,
                     int type, const char *path);
/* After all pieces are set: check every id is present, no piece repeats,
 * find the special ids and byte pieces, build the piece hash.  0 or -1. */
int lf_tok_finish(lf_tokenizer *t, const char *path);
/* Id of a piece given as the concatenation a+b (b may be empty), or -1. */
int32_t lf_tok_find2(const lf_tokenizer *t, const char *a, size_t alen, const char *b,
                     size_t blen);
/* Byte value of a "<0xXX>" piece, or -1. */
int lf_tok_byte_value(const char *s, size_t len);

/* ---- readers ---- */

/* Parse a SentencePiece ModelProto held in data[0..len). */
lf_tokenizer *lf_tok_read_sp_model(const uint8_t *data, size_t len, const char *path);
/* Parse a Hugging Face tokenizer.json held in text (NUL-terminated).  A JSON
 * syntax error sets *syntax_error = 1 (the caller may then try the protobuf
 * reader: a tokenizer.model can start with bytes that look like "\n{"). */
lf_tokenizer *lf_tok_read_hf_json(const char *text, size_t len, const char *path,
                                  int *syntax_error);

#endif
