/* tensorset.c: the in-memory set of named tensors shared by all readers. */
#include "tensorset.h"
#include "../core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

size_t lf_dtype_size(lf_dtype t) {
    switch (t) {
    case LF_F32: return 4;
    case LF_F16: return 2;
    case LF_BF16: return 2;
    case LF_I64: return 8;
    case LF_I32: return 4;
    }
    return 0;
}

const char *lf_dtype_name(lf_dtype t) {
    switch (t) {
    case LF_F32: return "F32";
    case LF_F16: return "F16";
    case LF_BF16: return "BF16";
    case LF_I64: return "I64";
    case LF_I32: return "I32";
    }
    return "?";
}

int lf_dtype_from_name(const char *s, lf_dtype *out) {
    static const struct { const char *n; lf_dtype t; } tab[] = {
        {"F32", LF_F32}, {"F16", LF_F16}, {"BF16", LF_BF16}, {"I64", LF_I64}, {"I32", LF_I32},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (!strcmp(s, tab[i].n)) { *out = tab[i].t; return 0; }
    return -1;
}

int64_t lf_tensor_numel(const lf_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

const char *lf_shape_str(const int64_t *shape, int ndim, char *buf, size_t n) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, n - o, "[");
    for (int i = 0; i < ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
    return buf;
}

void lf_tensorset_init(lf_tensorset *s) { memset(s, 0, sizeof *s); }

void lf_tensorset_free(lf_tensorset *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++) free(s->tensors[i].name);
    free(s->tensors);
    for (int i = 0; i < s->npaths; i++) free(s->paths[i]);
    free(s->paths);
    for (int i = 0; i < s->nmaps; i++) lf_unmap(&s->maps[i]);
    free(s->maps);
    for (int i = 0; i < s->nowned; i++) free(s->owned[i]);
    free(s->owned);
    for (int i = 0; i < s->nmeta; i++) { free(s->meta[i].key); free(s->meta[i].value); }
    free(s->meta);
    free(s->name_index);
    memset(s, 0, sizeof *s);
}

/* Sorting tensor indices by name (then index, so the first of equal names
 * comes first); qsort has no context argument, hence the static. */
static _Thread_local const lf_tensor *sort_base;
static int cmp_index(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    int c = strcmp(sort_base[x].name, sort_base[y].name);
    return c ? c : (x > y) - (x < y);
}

int lf_tensorset_index(lf_tensorset *s) {
    s->name_index_n = -1;
    if (s->n == 0) return 0;
    int *idx = lf_realloc(s->name_index, (size_t)s->n * sizeof *idx, "tensor name index");
    if (!idx) return -1;
    s->name_index = idx;
    for (int i = 0; i < s->n; i++) idx[i] = i;
    sort_base = s->tensors;
    qsort(idx, (size_t)s->n, sizeof *idx, cmp_index);
    s->name_index_n = s->n;
    return 0;
}

const lf_tensor *lf_tensorset_find(const lf_tensorset *s, const char *name) {
    if (s->name_index && s->name_index_n == s->n && s->n > 0) {
        /* lower bound: the first (lowest index) of the equal names */
        int lo = 0, hi = s->n;
        while (lo < hi) {
            int mid = lo + (hi - lo) / 2;
            if (strcmp(s->tensors[s->name_index[mid]].name, name) < 0) lo = mid + 1;
            else hi = mid;
        }
        if (lo < s->n && !strcmp(s->tensors[s->name_index[lo]].name, name)) return &s->tensors[s->name_index[lo]];
        return NULL;
    }
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->tensors[i].name, name)) return &s->tensors[i];
    return NULL;
}

const char *lf_tensorset_meta(const lf_tensorset *s, const char *key) {
    for (int i = 0; i < s->nmeta; i++)
        if (!strcmp(s->meta[i].key, key)) return s->meta[i].value;
    return NULL;
}

lf_tensor *lf_tensorset_add(lf_tensorset *s, const char *name) {
    s->name_index_n = -1; /* the name index no longer covers the set */
    if (s->n == s->cap) {
        int nc = s->cap ? s->cap * 2 : 64;
        lf_tensor *nt = lf_realloc(s->tensors, (size_t)nc * sizeof *nt, "tensor table");
        if (!nt) return NULL;
        s->tensors = nt;
        s->cap = nc;
    }
    lf_tensor *t = &s->tensors[s->n];
    memset(t, 0, sizeof *t);
    t->name = lf_strdup(name);
    if (!t->name) return NULL;
    s->n++;
    return t;
}

/* Appends item to arr[count].  The capacity is implicit: the next power of
 * two at or above count, so the array is reallocated (doubled) only when
 * count is 0 or a power of two.  (Growing by one element each time made a
 * checkpoint with many copied tensors cost quadratic time.)  Rollbacks only
 * lower count, which keeps the implicit capacity within the real one. */
#define GROW_APPEND(arr, count, item, what)                                              \
    do {                                                                                 \
        if ((count) >= INT32_MAX / 2) { lf_set_error("too many entries in %s", what); return -1; } \
        if (((count) & ((count) - 1)) == 0) {                                            \
            size_t cap_ = (count) ? 2 * (size_t)(count) : 1;                              \
            void *np_ = lf_realloc((arr), cap_ * sizeof *(arr), what);                    \
            if (!np_) return -1;                                                         \
            (arr) = np_;                                                                 \
        }                                                                                \
        (arr)[(count)] = (item);                                                         \
        return (count)++;                                                                \
    } while (0)

int lf_tensorset_add_path(lf_tensorset *s, const char *path) {
    char *p = lf_strdup(path);
    if (!p) return -1;
    GROW_APPEND(s->paths, s->npaths, p, "path table");
}

int lf_tensorset_add_map(lf_tensorset *s, void *addr, size_t size) {
    lf_mapping m = {addr, size};
    GROW_APPEND(s->maps, s->nmaps, m, "mapping table");
}

int lf_tensorset_own(lf_tensorset *s, void *buf) {
    GROW_APPEND(s->owned, s->nowned, buf, "buffer table");
}

int lf_map_file(const char *path, lf_mapping *m) {
    m->addr = NULL;
    m->size = 0;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC); /* a FIFO must not block the open */
    if (fd < 0) {
        lf_set_error("%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        lf_set_error("%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        lf_set_error("%s: not a regular file", path);
        close(fd);
        return -1;
    }
    if (st.st_size == 0) { close(fd); return 0; }
    void *a = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (a == MAP_FAILED) {
        lf_set_error("%s: cannot map %lld bytes: %s", path, (long long)st.st_size, strerror(errno));
        return -1;
    }
    m->addr = a;
    m->size = (size_t)st.st_size;
    return 0;
}

void lf_unmap(lf_mapping *m) {
    if (m->addr) munmap(m->addr, m->size);
    m->addr = NULL;
    m->size = 0;
}
