/* safetensors.c: read and write the safetensors format.
 *
 * A file is: an 8-byte little-endian header length N, N bytes of JSON
 *   {"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets"}, ...}
 * (possibly padded with spaces), then the data section.  data_offsets are
 * [begin, end) byte offsets relative to the first byte after the header.
 *
 * Files are untrusted: every field is checked, with overflow-checked
 * arithmetic, before a single pointer into the data is formed.  Tensor data
 * stays in a read-only map of the file; it is copied only when a tensor is
 * not aligned to its element size in the file (see aligned_data). */
#include "tensorset.h"
#include "atomic.h"
#include "../core/util.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The reference implementation refuses headers above 100 MB; so do we, so a
 * hostile length cannot make us parse gigabytes of JSON. */
#define ST_HEADER_LIMIT 100000000ull
#define ST_INDEX_LIMIT ((size_t)100 << 20)
/* Whole numbers above 2^53 are not exact in the double cJSON stores. */
#define ST_JSON_INT_MAX 9007199254740992.0
#define ST_META_KEY "__metadata__"

/* ------------------------------------------------------------------ */
/* small helpers                                                       */
/* ------------------------------------------------------------------ */

static uint64_t read_le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void write_le64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Short text of a JSON value for "found ..." in error messages. */
static const char *json_desc(const cJSON *v, char *buf, size_t n) {
    if (!v) { snprintf(buf, n, "nothing"); return buf; }
    char *s = cJSON_PrintUnformatted(v);
    if (!s) { snprintf(buf, n, "a JSON value"); return buf; }
    if (strlen(s) > 60) snprintf(buf, n, "%.57s...", s);
    else snprintf(buf, n, "%s", s);
    cJSON_free(s);
    return buf;
}

/* A JSON number holding a whole value in [0, 2^53]. */
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0.0 && d <= ST_JSON_INT_MAX) || d != floor(d)) return -1;
    *out = (uint64_t)d;
    return 0;
}

/* The member `key` of object o.  cJSON keeps duplicate keys and its lookup
 * returns the first; a repeated key is reported instead (*dup = 1) because
 * other readers would take the last and see a different file. */
static const cJSON *member(const cJSON *o, const char *key, int *dup) {
    const cJSON *found = NULL;
    *dup = 0;
    for (const cJSON *c = o->child; c; c = c->next) {
        if (c->string && !strcmp(c->string, key)) {
            if (found) { *dup = 1; return found; }
            found = c;
        }
    }
    return found;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorts v and returns the first string that occurs twice, or NULL. */
static const char *first_duplicate(const char **v, size_t n) {
    if (n < 2) return NULL;
    qsort(v, n, sizeof *v, cmp_str);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(v[i - 1], v[i])) return v[i];
    return NULL;
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp((*(const lf_tensor *const *)a)->name, (*(const lf_tensor *const *)b)->name);
}

/* Pointers to s->tensors[0..n) sorted by name, for binary search: keeps
 * duplicate checks O(n log n) even for hostile files with huge headers. */
static const lf_tensor **sorted_tensors(const lf_tensorset *s, int n) {
    const lf_tensor **v = lf_malloc((size_t)n * sizeof *v, "tensor name index");
    if (!v) return NULL;
    for (int i = 0; i < n; i++) v[i] = &s->tensors[i];
    if (n > 1) qsort(v, (size_t)n, sizeof *v, cmp_tensor_name);
    return v;
}

static const lf_tensor *find_sorted(const lf_tensor **v, int n, const char *name) {
    lf_tensor key;
    memset(&key, 0, sizeof key);
    key.name = (char *)name;
    const lf_tensor *kp = &key;
    const lf_tensor **hit = n ? bsearch(&kp, v, (size_t)n, sizeof *v, cmp_tensor_name) : NULL;
    return hit ? *hit : NULL;
}

static const char *source_path(const lf_tensorset *s, const lf_tensor *t) {
    return t->source >= 0 && t->source < s->npaths ? s->paths[t->source] : "another file";
}

/* Undo everything appended to s since the counts in `mark` were taken, so a
 * failed read leaves the set as it was. */
typedef struct { int n, npaths, nmaps, nowned, nmeta; } set_mark;

static set_mark set_mark_take(const lf_tensorset *s) {
    set_mark m = {s->n, s->npaths, s->nmaps, s->nowned, s->nmeta};
    return m;
}

static void set_rollback(lf_tensorset *s, set_mark m) {
    for (int i = m.n; i < s->n; i++) free(s->tensors[i].name);
    s->n = m.n;
    for (int i = m.npaths; i < s->npaths; i++) free(s->paths[i]);
    s->npaths = m.npaths;
    for (int i = m.nmaps; i < s->nmaps; i++) lf_unmap(&s->maps[i]);
    s->nmaps = m.nmaps;
    for (int i = m.nowned; i < s->nowned; i++) free(s->owned[i]);
    s->nowned = m.nowned;
    for (int i = m.nmeta; i < s->nmeta; i++) { free(s->meta[i].key); free(s->meta[i].value); }
    s->nmeta = m.nmeta;
}

/* ------------------------------------------------------------------ */
/* reading one file                                                    */
/* ------------------------------------------------------------------ */

typedef struct {
    const char *name; /* points into the parsed header */
    lf_dtype dtype;
    int ndim;
    int64_t shape[LF_MAX_DIMS];
    uint64_t begin, end;
    size_t nbytes;
} st_entry;

typedef struct {
    cJSON *root;
    const cJSON *meta; /* __metadata__ object or NULL */
    st_entry *e;
    int ne;
    const unsigned char *data; /* data section */
    size_t data_size;
} st_header;

static void st_header_free(st_header *h) {
    cJSON_Delete(h->root);
    free(h->e);
    memset(h, 0, sizeof *h);
}

/* shape: an array of at most LF_MAX_DIMS whole numbers. */
static int parse_shape(const char *path, const char *name, const cJSON *v, st_entry *e) {
    char d[80];
    if (!cJSON_IsArray(v)) {
        lf_set_error("%s: tensor '%s': 'shape' must be an array of integers, found %s", path, name,
                     json_desc(v, d, sizeof d));
        return -1;
    }
    int nd = cJSON_GetArraySize(v);
    if (nd > LF_MAX_DIMS) {
        lf_set_error("%s: tensor '%s': shape has %d dimensions, at most %d are supported", path, name,
                     nd, LF_MAX_DIMS);
        return -1;
    }
    e->ndim = 0;
    for (const cJSON *c = v->child; c; c = c->next) {
        uint64_t x;
        if (json_uint(c, &x) != 0) {
            lf_set_error("%s: tensor '%s': shape[%d] must be a non-negative integer, found %s", path,
                         name, e->ndim, json_desc(c, d, sizeof d));
            return -1;
        }
        e->shape[e->ndim++] = (int64_t)x;
    }
    return 0;
}

static int parse_offsets(const char *path, const char *name, const cJSON *v, st_entry *e) {
    char d[80];
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2 || json_uint(v->child, &e->begin) != 0 ||
        json_uint(v->child->next, &e->end) != 0) {
        lf_set_error("%s: tensor '%s': 'data_offsets' must be [begin, end] with non-negative "
                     "integers, found %s", path, name, json_desc(v, d, sizeof d));
        return -1;
    }
    return 0;
}

/* Required member of a tensor entry, reporting absence or repetition. */
static const cJSON *entry_field(const char *path, const char *name, const cJSON *item, const char *key) {
    int dup;
    const cJSON *v = member(item, key, &dup);
    if (!v) lf_set_error("%s: tensor '%s': field '%s' missing", path, name, key);
    else if (dup) lf_set_error("%s: tensor '%s': field '%s' appears twice", path, name, key);
    return v && !dup ? v : NULL;
}

/* Checks one tensor entry against itself and the size of the data section. */
static int parse_entry(const char *path, const cJSON *item, size_t data_size, st_entry *e) {
    const char *name = item->string;
    char d[80], sh[160];
    e->name = name;
    if (!cJSON_IsObject(item)) {
        lf_set_error("%s: tensor '%s': entry must be a JSON object, found %s", path, name,
                     json_desc(item, d, sizeof d));
        return -1;
    }
    const cJSON *dt = entry_field(path, name, item, "dtype");
    const cJSON *shape = dt ? entry_field(path, name, item, "shape") : NULL;
    const cJSON *offs = shape ? entry_field(path, name, item, "data_offsets") : NULL;
    if (!offs) return -1;
    if (!cJSON_IsString(dt)) {
        lf_set_error("%s: tensor '%s': 'dtype' must be a string, found %s", path, name,
                     json_desc(dt, d, sizeof d));
        return -1;
    }
    if (lf_dtype_from_name(dt->valuestring, &e->dtype) != 0) {
        lf_set_error("%s: tensor '%s': unsupported dtype '%s' (supported: F32, F16, BF16, I64, I32)",
                     path, name, dt->valuestring);
        return -1;
    }
    if (parse_shape(path, name, shape, e) != 0 || parse_offsets(path, name, offs, e) != 0) return -1;

    lf_shape_str(e->shape, e->ndim, sh, sizeof sh);
    size_t bytes = lf_dtype_size(e->dtype);
    for (int i = 0; i < e->ndim; i++) {
        if (lf_mul_overflow(bytes, (size_t)e->shape[i], &bytes) != 0) {
            lf_set_error("%s: tensor '%s': %s %s is too large (byte size overflows)", path, name,
                         lf_dtype_name(e->dtype), sh);
            return -1;
        }
    }
    e->nbytes = bytes;
    if (e->end < e->begin) {
        lf_set_error("%s: tensor '%s': data_offsets [%llu, %llu] end before they begin", path, name,
                     (unsigned long long)e->begin, (unsigned long long)e->end);
        return -1;
    }
    if (e->end - e->begin != (uint64_t)bytes) {
        lf_set_error("%s: tensor '%s': data_offsets [%llu, %llu] give %llu bytes, expected %zu for %s %s",
                     path, name, (unsigned long long)e->begin, (unsigned long long)e->end,
                     (unsigned long long)(e->end - e->begin), bytes, lf_dtype_name(e->dtype), sh);
        return -1;
    }
    if (e->end > (uint64_t)data_size) {
        lf_set_error("%s: tensor '%s': data_offsets [%llu, %llu] run past the data section of %zu "
                     "bytes (truncated file?)", path, name, (unsigned long long)e->begin,
                     (unsigned long long)e->end, data_size);
        return -1;
    }
    return 0;
}

static int check_metadata(const char *path, const cJSON *m) {
    char d[80];
    if (!cJSON_IsObject(m)) {
        lf_set_error("%s: '__metadata__' must be an object of strings, found %s", path,
                     json_desc(m, d, sizeof d));
        return -1;
    }
    int n = 0;
    for (const cJSON *c = m->child; c; c = c->next) {
        if (!cJSON_IsString(c)) {
            lf_set_error("%s: '__metadata__' value of '%s' must be a string, found %s", path,
                         c->string, json_desc(c, d, sizeof d));
            return -1;
        }
        n++;
    }
    const char **keys = lf_malloc((size_t)n * sizeof *keys, "metadata keys");
    if (!keys) return -1;
    n = 0;
    for (const cJSON *c = m->child; c; c = c->next) keys[n++] = c->string;
    const char *dup = first_duplicate(keys, (size_t)n);
    if (dup) lf_set_error("%s: '__metadata__' key '%s' appears twice", path, dup);
    free(keys);
    return dup ? -1 : 0;
}

static int cmp_entry_name(const void *a, const void *b) {
    return strcmp((*(const st_entry *const *)a)->name, (*(const st_entry *const *)b)->name);
}

static int cmp_entry_begin(const void *a, const void *b) {
    const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Names unique, byte ranges disjoint (empty tensors occupy nothing). */
static int check_entries_together(const char *path, st_header *h) {
    const st_entry **v = lf_malloc((size_t)h->ne * sizeof *v, "tensor index");
    if (!v) return -1;
    for (int i = 0; i < h->ne; i++) v[i] = &h->e[i];
    int rc = 0;
    if (h->ne > 1) qsort(v, (size_t)h->ne, sizeof *v, cmp_entry_name);
    for (int i = 1; i < h->ne && !rc; i++) {
        if (!strcmp(v[i - 1]->name, v[i]->name)) {
            lf_set_error("%s: tensor '%s' appears twice in the header", path, v[i]->name);
            rc = -1;
        }
    }
    if (!rc && h->ne > 1) qsort(v, (size_t)h->ne, sizeof *v, cmp_entry_begin);
    const st_entry *reach = NULL; /* the tensor reaching furthest so far */
    for (int i = 0; i < h->ne && !rc; i++) {
        if (v[i]->nbytes == 0) continue;
        if (reach && v[i]->begin < reach->end) {
            lf_set_error("%s: tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] overlap", path,
                         reach->name, (unsigned long long)reach->begin,
                         (unsigned long long)reach->end, v[i]->name,
                         (unsigned long long)v[i]->begin, (unsigned long long)v[i]->end);
            rc = -1;
        }
        if (!reach || v[i]->end > reach->end) reach = v[i];
    }
    free(v);
    return rc;
}

static const char *json_type_name(const cJSON *v) {
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    return "not an object";
}

/* Parses the header JSON (copied out of the map with a NUL after it, so the
 * parser can never read past it) and leaves a valid object in h->root. */
static int parse_json_header(const char *path, const unsigned char *p, size_t n, st_header *h) {
    char *text = lf_malloc(n + 1, "safetensors header");
    if (!text) return -1;
    memcpy(text, p, n);
    text[n] = 0;
    const char *end = NULL;
    h->root = cJSON_ParseWithLengthOpts(text, n, &end, 0);
    if (!h->root) {
        lf_json_parse_error(path, "header is not valid JSON", text, n, end);
        free(text);
        return -1;
    }
    /* The format pads the header with spaces; anything else after the JSON
     * value means the file is not what it claims. */
    for (const char *q = end; q < text + n; q++) {
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r') {
            lf_set_error("%s: header has unexpected bytes after the JSON object (at byte %zu of %zu)",
                         path, (size_t)(q - text), n);
            free(text);
            return -1;
        }
    }
    free(text);
    if (!cJSON_IsObject(h->root)) {
        lf_set_error("%s: header must be a JSON object, found %s", path, json_type_name(h->root));
        return -1;
    }
    return 0;
}

/* Validates the whole file image; on success h describes every tensor. */
static int parse_file(const char *path, const unsigned char *file, size_t size, st_header *h) {
    memset(h, 0, sizeof *h);
    if (size < 8) {
        lf_set_error("%s: file is %zu bytes, too short for the 8-byte header length (not a "
                     "safetensors file?)", path, size);
        return -1;
    }
    uint64_t n = read_le64(file);
    if (n > (uint64_t)(size - 8)) {
        lf_set_error("%s: header length %llu runs past the end of the file (%zu bytes follow the "
                     "length field)", path, (unsigned long long)n, size - 8);
        return -1;
    }
    if (n > ST_HEADER_LIMIT) {
        lf_set_error("%s: header length %llu exceeds the limit of %llu bytes (ST_HEADER_LIMIT, the limit "
                     "of the safetensors format itself)", path, (unsigned long long)n, ST_HEADER_LIMIT);
        return -1;
    }
    h->data = file + 8 + n;
    h->data_size = size - 8 - (size_t)n;
    if (parse_json_header(path, file + 8, (size_t)n, h) != 0) goto fail;

    int count = cJSON_GetArraySize(h->root);
    h->e = lf_calloc((size_t)count + 1, sizeof *h->e, "tensor entries");
    if (!h->e) goto fail;
    for (const cJSON *c = h->root->child; c; c = c->next) {
        if (!strcmp(c->string, ST_META_KEY)) {
            if (h->meta) {
                lf_set_error("%s: '__metadata__' appears twice in the header", path);
                goto fail;
            }
            if (check_metadata(path, c) != 0) goto fail;
            h->meta = c;
            continue;
        }
        if (parse_entry(path, c, h->data_size, &h->e[h->ne]) != 0) goto fail;
        h->ne++;
    }
    if (check_entries_together(path, h) != 0) goto fail;
    return 0;
fail:
    st_header_free(h);
    return -1;
}

/* Tensor data is used as float/int64 arrays, so it must be aligned to its
 * element size.  Files from current writers always are (the header is padded
 * to 8 bytes and tensors are laid out largest dtype first); a misaligned
 * tensor (old or odd writers) is copied into an aligned buffer the set owns
 * rather than handed out as a pointer that is undefined behaviour to use. */
static const void *aligned_data(lf_tensorset *s, const unsigned char *p, size_t nbytes, size_t align) {
    if (nbytes == 0 || (uintptr_t)p % align == 0) return p;
    void *buf = lf_malloc(nbytes, "realigned tensor");
    if (!buf) return NULL;
    memcpy(buf, p, nbytes);
    if (lf_tensorset_own(s, buf) < 0) { free(buf); return NULL; }
    return buf;
}

/* Refuses names the set already holds (a tensor in two shards). */
static int check_against_set(const char *path, const lf_tensorset *s, const st_header *h) {
    if (s->n == 0) return 0;
    const lf_tensor **v = sorted_tensors(s, s->n);
    if (!v) return -1;
    int rc = 0;
    for (int i = 0; i < h->ne && !rc; i++) {
        const lf_tensor *t = find_sorted(v, s->n, h->e[i].name);
        if (t) {
            lf_set_error("%s: tensor '%s' is also in %s", path, h->e[i].name, source_path(s, t));
            rc = -1;
        }
    }
    free(v);
    return rc;
}

static int cmp_kv_key(const void *a, const void *b) {
    return strcmp(((const lf_kv *)a)->key, ((const lf_kv *)b)->key);
}

/* Appends the file's metadata to s.  The keys of one file are unique
 * (check_metadata); against the keys earlier shards brought, a sorted copy
 * keeps this O(m log m) for a header of millions of keys. */
static int add_meta(lf_tensorset *s, const cJSON *meta) {
    if (!meta) return 0;
    const int n0 = s->nmeta;
    lf_kv *old = NULL;
    if (n0 > 0) {
        old = lf_malloc((size_t)n0 * sizeof *old, "metadata index");
        if (!old) return -1;
        memcpy(old, s->meta, (size_t)n0 * sizeof *old);
        qsort(old, (size_t)n0, sizeof *old, cmp_kv_key);
    }
    int rc = 0;
    for (const cJSON *c = meta->child; c && !rc; c = c->next) {
        /* Shards each repeat e.g. "format": the first file's value is kept. */
        lf_kv key = {c->string, NULL};
        if (n0 > 0 && bsearch(&key, old, (size_t)n0, sizeof *old, cmp_kv_key)) continue;
        /* capacity: the next power of two at or above nmeta (doubling) */
        if ((s->nmeta & (s->nmeta - 1)) == 0) {
            size_t cap = s->nmeta ? 2 * (size_t)s->nmeta : 1;
            lf_kv *nm = lf_realloc(s->meta, cap * sizeof *nm, "metadata table");
            if (!nm) { rc = -1; break; }
            s->meta = nm;
        }
        char *k = lf_strdup(c->string), *v = k ? lf_strdup(c->valuestring) : NULL;
        if (!v) { free(k); rc = -1; break; }
        s->meta[s->nmeta].key = k;
        s->meta[s->nmeta].value = v;
        s->nmeta++;
    }
    free(old);
    return rc;
}

/* Moves the validated tensors (and the map, which the set then owns) into s. */
static int commit(const char *path, lf_tensorset *s, const st_header *h, lf_mapping *map) {
    set_mark mark = set_mark_take(s);
    if (lf_tensorset_add_map(s, map->addr, map->size) < 0) return -1;
    map->addr = NULL; /* owned by the set now (and unmapped by a rollback) */
    map->size = 0;
    int src = lf_tensorset_add_path(s, path);
    if (src < 0) goto fail;
    for (int i = 0; i < h->ne; i++) {
        const st_entry *e = &h->e[i];
        lf_tensor *t = lf_tensorset_add(s, e->name);
        if (!t) goto fail;
        t->dtype = e->dtype;
        t->ndim = e->ndim;
        memcpy(t->shape, e->shape, sizeof t->shape);
        t->nbytes = e->nbytes;
        t->source = src;
        t->data = aligned_data(s, h->data + e->begin, e->nbytes, lf_dtype_size(e->dtype));
        if (!t->data) goto fail;
    }
    if (add_meta(s, h->meta) != 0) goto fail;
    return 0;
fail:
    lf_prefix_error("%s: ", path);
    set_rollback(s, mark);
    return -1;
}

int lf_safetensors_read(const char *path, lf_tensorset *s) {
    lf_mapping map;
    if (lf_map_file(path, &map) != 0) return -1;
    st_header h;
    int rc = parse_file(path, map.addr, map.size, &h);
    if (rc == 0) rc = check_against_set(path, s, &h);
    if (rc == 0) rc = commit(path, s, &h, &map);
    if (h.root || h.e) st_header_free(&h);
    lf_unmap(&map); /* no-op once the set owns it */
    if (rc == 0) lf_tensorset_index(s); /* fast lookups (out of memory: linear ones) */
    return rc;
}

/* ------------------------------------------------------------------ */
/* sharded models: model.safetensors.index.json                         */
/* ------------------------------------------------------------------ */

/* Shard names come from an untrusted file and are joined to the index's
 * folder: only plain file names may pass, never a way out of it. */
static int plain_file_name(const char *n) {
    return n[0] && !strchr(n, '/') && !strchr(n, '\\') && !strstr(n, "..");
}

static char *parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return lf_strdup(".");
    if (slash == path) return lf_strdup("/");
    return lf_strndup(path, (size_t)(slash - path));
}

/* weight_map: a non-empty object of tensor name -> plain shard file name. */
static const cJSON *index_weight_map(const char *path, const cJSON *root) {
    char d[80];
    int dup;
    if (!cJSON_IsObject(root)) {
        lf_set_error("%s: index must be a JSON object, found %s", path, json_type_name(root));
        return NULL;
    }
    const cJSON *wm = member(root, "weight_map", &dup);
    if (!wm) { lf_set_error("%s: field 'weight_map' missing", path); return NULL; }
    if (dup) { lf_set_error("%s: field 'weight_map' appears twice", path); return NULL; }
    if (!cJSON_IsObject(wm) || !wm->child) {
        lf_set_error("%s: 'weight_map' must be a non-empty object of tensor name -> shard file, "
                     "found %s", path, json_desc(wm, d, sizeof d));
        return NULL;
    }
    for (const cJSON *c = wm->child; c; c = c->next) {
        if (!cJSON_IsString(c)) {
            lf_set_error("%s: weight_map: tensor '%s' must map to a shard file name, found %s", path,
                         c->string, json_desc(c, d, sizeof d));
            return NULL;
        }
        if (!plain_file_name(c->valuestring)) {
            lf_set_error("%s: weight_map: tensor '%s' maps to shard '%s'; shard names must be plain "
                         "file names in the index's folder (no '/' or '..')", path, c->string,
                         c->valuestring);
            return NULL;
        }
    }
    return wm;
}

/* The distinct shard names, sorted (so shards load in file-name order). */
static const char **distinct_shards(const cJSON *wm, int *n_out) {
    int n = cJSON_GetArraySize(wm);
    const char **v = lf_malloc((size_t)n * sizeof *v, "shard list");
    if (!v) return NULL;
    n = 0;
    for (const cJSON *c = wm->child; c; c = c->next) v[n++] = c->valuestring;
    qsort(v, (size_t)n, sizeof *v, cmp_str);
    int m = 0;
    for (int i = 0; i < n; i++)
        if (m == 0 || strcmp(v[m - 1], v[i])) v[m++] = v[i];
    *n_out = m;
    return v;
}

static int check_no_duplicate_keys(const char *path, const cJSON *wm) {
    int n = cJSON_GetArraySize(wm);
    const char **v = lf_malloc((size_t)n * sizeof *v, "weight_map keys");
    if (!v) return -1;
    n = 0;
    for (const cJSON *c = wm->child; c; c = c->next) v[n++] = c->string;
    const char *dup = first_duplicate(v, (size_t)n);
    if (dup) lf_set_error("%s: weight_map names tensor '%s' twice", path, dup);
    free(v);
    return dup ? -1 : 0;
}

/* Every tensor of weight_map must be in the shard it is mapped to. */
static int check_weight_map(const char *path, const lf_tensorset *s, const cJSON *wm, const char *dir) {
    const lf_tensor **v = sorted_tensors(s, s->n);
    if (!v) return -1;
    int rc = 0;
    for (const cJSON *c = wm->child; c && !rc; c = c->next) {
        const lf_tensor *t = find_sorted(v, s->n, c->string);
        char *want = lf_path_join(dir, c->valuestring);
        if (!want) { rc = -1; break; }
        if (!t) {
            lf_set_error("%s: weight_map maps tensor '%s' to shard '%s', which does not contain it",
                         path, c->string, c->valuestring);
            rc = -1;
        } else if (strcmp(source_path(s, t), want) != 0) {
            lf_set_error("%s: weight_map maps tensor '%s' to shard '%s', but it is in %s", path,
                         c->string, c->valuestring, source_path(s, t));
            rc = -1;
        }
        free(want);
    }
    free(v);
    return rc;
}

int lf_safetensors_read_index(const char *index_path, lf_tensorset *s) {
    size_t len;
    char *text = lf_read_file_limit(index_path, &len, ST_INDEX_LIMIT, "ST_INDEX_LIMIT in src/io/safetensors.c");
    if (!text) return -1;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        lf_json_parse_error(index_path, "not valid JSON", text, len, end);
        free(text);
        return -1;
    }
    end += strspn(end, " \t\r\n");
    if (end != text + len) {
        lf_set_error("%s: not valid JSON (unexpected bytes after the object at byte %zu)",
                     index_path, (size_t)(end - text));
        cJSON_Delete(root);
        free(text);
        return -1;
    }
    set_mark mark = set_mark_take(s);
    int rc = -1, nshards = 0;
    const char **shards = NULL;
    char *dir = NULL;
    const cJSON *wm = index_weight_map(index_path, root);
    if (!wm || check_no_duplicate_keys(index_path, wm) != 0) goto done;
    shards = distinct_shards(wm, &nshards);
    dir = parent_dir(index_path);
    if (!shards || !dir) goto done;
    for (int i = 0; i < nshards; i++) {
        char *p = lf_path_join(dir, shards[i]);
        if (!p) goto done;
        int r = lf_safetensors_read(p, s);
        free(p);
        if (r != 0) {
            lf_prefix_error("%s: shard '%s': ", index_path, shards[i]);
            goto done;
        }
    }
    rc = check_weight_map(index_path, s, wm, dir);
done:
    if (rc != 0) set_rollback(s, mark);
    free(dir);
    free(shards);
    cJSON_Delete(root);
    free(text);
    return rc;
}

/* ------------------------------------------------------------------ */
/* writing                                                             */
/* ------------------------------------------------------------------ */

/* A growable byte buffer; after an allocation failure it only records it. */
typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->cap - b->n < n + 1) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc - b->n < n + 1) {
            if (lf_mul_overflow(nc, 2, &nc) != 0) { b->oom = 1; return; }
        }
        char *np = lf_realloc(b->p, nc, "safetensors header");
        if (!np) { b->oom = 1; return; }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_u64(sbuf *b, uint64_t v) {
    char t[24];
    snprintf(t, sizeof t, "%llu", (unsigned long long)v);
    sb_puts(b, t);
}

/* A JSON string literal: quotes, backslashes and control bytes escaped;
 * other bytes (valid UTF-8, checked by the caller) pass through. */
static void sb_json_str(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char t[8];
        if (*p == '"' || *p == '\\') { t[0] = '\\'; t[1] = (char)*p; sb_put(b, t, 2); }
        else if (*p < 0x20) { snprintf(t, sizeof t, "\\u%04x", *p); sb_put(b, t, 6); }
        else sb_put(b, (const char *)p, 1);
    }
    sb_put(b, "\"", 1);
}

/* JSON must be UTF-8; other readers reject a header that is not. */
static int valid_utf8(const char *str) {
    const unsigned char *s = (const unsigned char *)str;
    while (*s) {
        unsigned c = *s;
        int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!len || (len == 2 && c < 0xc2) || (len == 4 && c > 0xf4)) return 0;
        uint32_t cp = len == 1 ? c : c & (0x7fu >> len);
        for (int i = 1; i < len; i++) {
            if ((s[i] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (s[i] & 0x3fu);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
        s += len;
    }
    return 1;
}

/* Bytes of t computed from dtype and shape, checking everything a reader
 * would check. */
static int check_write_tensor(const char *path, const lf_tensor *t, size_t *bytes) {
    if (!t->name) { lf_set_error("%s: a tensor has no name", path); return -1; }
    if (!strcmp(t->name, ST_META_KEY) || !valid_utf8(t->name)) {
        lf_set_error("%s: tensor '%s': invalid tensor name", path, t->name);
        return -1;
    }
    size_t b = lf_dtype_size(t->dtype);
    if (!b) {
        lf_set_error("%s: tensor '%s': unknown dtype %d", path, t->name, (int)t->dtype);
        return -1;
    }
    if (t->ndim < 0 || t->ndim > LF_MAX_DIMS) {
        lf_set_error("%s: tensor '%s': %d dimensions, expected 0 to %d", path, t->name, t->ndim,
                     LF_MAX_DIMS);
        return -1;
    }
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] < 0 || (double)t->shape[i] > ST_JSON_INT_MAX ||
            lf_mul_overflow(b, (size_t)t->shape[i], &b) != 0) {
            lf_set_error("%s: tensor '%s': invalid dimension %lld at index %d", path, t->name,
                         (long long)t->shape[i], i);
            return -1;
        }
    }
    if (t->nbytes && t->nbytes != b) {
        char sh[160];
        lf_set_error("%s: tensor '%s': nbytes is %zu, expected %zu for %s %s", path, t->name,
                     t->nbytes, b, lf_dtype_name(t->dtype), lf_shape_str(t->shape, t->ndim, sh, sizeof sh));
        return -1;
    }
    if (b && !t->data) {
        lf_set_error("%s: tensor '%s': no data", path, t->name);
        return -1;
    }
    *bytes = b;
    return 0;
}

static int check_write_meta(const char *path, const lf_kv *meta, int nmeta) {
    if (nmeta < 0 || (nmeta > 0 && !meta)) {
        lf_set_error("%s: invalid metadata count %d", path, nmeta);
        return -1;
    }
    const char **keys = lf_malloc((size_t)nmeta * sizeof *keys, "metadata keys");
    if (!keys) return -1;
    int rc = 0;
    for (int i = 0; i < nmeta && !rc; i++) {
        if (!meta[i].key || !meta[i].value || !valid_utf8(meta[i].key) || !valid_utf8(meta[i].value)) {
            lf_set_error("%s: metadata entry %d: key and value must be UTF-8 strings", path, i);
            rc = -1;
        }
        keys[i] = meta[i].key;
    }
    const char *dup = rc ? NULL : first_duplicate(keys, (size_t)nmeta);
    if (dup) { lf_set_error("%s: metadata key '%s' given twice", path, dup); rc = -1; }
    free(keys);
    return rc;
}

/* Layout order: larger elements first (stable), so with the data section
 * starting 8-aligned every tensor is aligned to its element size without
 * gaps (other readers refuse gaps between tensors). */
typedef struct { size_t elem; int index; } layout_key;

static int cmp_layout(const void *a, const void *b) {
    const layout_key *x = a, *y = b;
    if (x->elem != y->elem) return x->elem > y->elem ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

/* Header JSON with entries in the given order, padded with spaces to a
 * multiple of 8 bytes. */
static void build_header(sbuf *b, const lf_tensor *t, int n, const uint64_t *begin,
                         const size_t *bytes, const lf_kv *meta, int nmeta) {
    int has_format = 0;
    sb_puts(b, "{\"" ST_META_KEY "\":{");
    for (int i = 0; i < nmeta; i++) {
        if (i) sb_puts(b, ",");
        sb_json_str(b, meta[i].key);
        sb_puts(b, ":");
        sb_json_str(b, meta[i].value);
        if (!strcmp(meta[i].key, "format")) has_format = 1;
    }
    if (!has_format) sb_puts(b, nmeta ? ",\"format\":\"pt\"" : "\"format\":\"pt\"");
    sb_puts(b, "}");
    for (int i = 0; i < n; i++) {
        sb_puts(b, ",");
        sb_json_str(b, t[i].name);
        sb_puts(b, ":{\"dtype\":\"");
        sb_puts(b, lf_dtype_name(t[i].dtype));
        sb_puts(b, "\",\"shape\":[");
        for (int d = 0; d < t[i].ndim; d++) {
            if (d) sb_puts(b, ",");
            sb_u64(b, (uint64_t)t[i].shape[d]);
        }
        sb_puts(b, "],\"data_offsets\":[");
        sb_u64(b, begin[i]);
        sb_puts(b, ",");
        sb_u64(b, begin[i] + bytes[i]);
        sb_puts(b, "]}");
    }
    sb_puts(b, "}");
    while (!b->oom && b->n % 8) sb_puts(b, " ");
}

static int write_file(const char *path, const sbuf *hdr, const lf_tensor *t, const layout_key *order,
                      const size_t *bytes, int n) {
    lf_atomic a;
    if (lf_atomic_open(&a, path) != 0) return -1;
    unsigned char len[8];
    write_le64(len, hdr->n);
    lf_atomic_write(&a, len, 8);
    lf_atomic_write(&a, hdr->p, hdr->n);
    for (int k = 0; k < n; k++) {
        int i = order[k].index;
        lf_atomic_write(&a, t[i].data, bytes[i]);
    }
    return lf_atomic_commit(&a); /* aborts (and removes the temporary) on failure */
}

int lf_safetensors_write(const char *path, const lf_tensor *tensors, int n, const lf_kv *meta,
                         int nmeta) {
    if (n < 0 || (n > 0 && !tensors)) {
        lf_set_error("%s: invalid tensor count %d", path, n);
        return -1;
    }
    if (check_write_meta(path, meta, nmeta) != 0) return -1;
    int rc = -1;
    size_t *bytes = lf_calloc((size_t)n + 1, sizeof *bytes, "tensor sizes");
    uint64_t *begin = lf_calloc((size_t)n + 1, sizeof *begin, "tensor offsets");
    layout_key *order = lf_calloc((size_t)n + 1, sizeof *order, "tensor order");
    const char **names = lf_calloc((size_t)n + 1, sizeof *names, "tensor names");
    sbuf hdr = {0};
    if (!bytes || !begin || !order || !names) goto done;
    for (int i = 0; i < n; i++) {
        if (check_write_tensor(path, &tensors[i], &bytes[i]) != 0) goto done;
        names[i] = tensors[i].name;
        order[i].elem = lf_dtype_size(tensors[i].dtype);
        order[i].index = i;
    }
    const char *dup = first_duplicate(names, (size_t)n);
    if (dup) {
        lf_set_error("%s: tensor '%s' given twice", path, dup);
        goto done;
    }
    qsort(order, (size_t)n, sizeof *order, cmp_layout);
    size_t off = 0;
    for (int k = 0; k < n; k++) {
        int i = order[k].index;
        begin[i] = off;
        if (lf_add_overflow(off, bytes[i], &off) != 0) {
            lf_set_error("%s: total tensor size overflows", path);
            goto done;
        }
    }
    build_header(&hdr, tensors, n, begin, bytes, meta, nmeta);
    if (hdr.oom) {
        lf_prefix_error("%s: ", path);
        goto done;
    }
    rc = write_file(path, &hdr, tensors, order, bytes, n);
done:
    free(hdr.p);
    free(names);
    free(order);
    free(begin);
    free(bytes);
    return rc;
}

int lf_write_safetensors(const char *path, const lf_tensor_desc *t, int n, const char *const *meta,
                         int n_meta) {
    if (n < 0 || (n > 0 && !t) || n_meta < 0 || (n_meta > 0 && !meta)) {
        lf_set_error("%s: invalid arguments (%d tensors, %d metadata pairs)", path, n, n_meta);
        return -1;
    }
    lf_tensor *ts = lf_calloc((size_t)n + 1, sizeof *ts, "tensor list");
    lf_kv *kv = lf_calloc((size_t)n_meta + 1, sizeof *kv, "metadata list");
    int rc = -1;
    if (!ts || !kv) goto done;
    for (int i = 0; i < n; i++) {
        /* The internal writer only reads through these pointers. */
        ts[i].name = (char *)t[i].name;
        ts[i].dtype = t[i].dtype;
        ts[i].ndim = t[i].ndim;
        memcpy(ts[i].shape, t[i].shape, sizeof ts[i].shape);
        ts[i].data = t[i].data;
        ts[i].nbytes = 0; /* computed from dtype and shape */
    }
    for (int i = 0; i < n_meta; i++) {
        kv[i].key = (char *)meta[2 * i];
        kv[i].value = (char *)meta[2 * i + 1];
    }
    rc = lf_safetensors_write(path, ts, n, kv, n_meta);
done:
    free(kv);
    free(ts);
    return rc;
}
