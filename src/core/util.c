/* util.c: thread-local error messages and checked allocation. */
#include "util.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static _Thread_local char lf_errbuf[LF_ERRMSG_MAX];

void lf_set_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lf_errbuf, sizeof lf_errbuf, fmt, ap);
    va_end(ap);
}

void lf_prefix_error(const char *fmt, ...) {
    char prefix[LF_ERRMSG_MAX], old[LF_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, lf_errbuf, sizeof old);
    size_t n = strlen(prefix);
    if (n >= sizeof lf_errbuf) n = sizeof lf_errbuf - 1;
    memcpy(lf_errbuf, prefix, n);
    size_t m = strnlen(old, sizeof old - 1);
    if (m > sizeof lf_errbuf - 1 - n) m = sizeof lf_errbuf - 1 - n;
    memcpy(lf_errbuf + n, old, m);
    lf_errbuf[n + m] = 0;
}

const char *lf_last_error(void) { return lf_errbuf[0] ? lf_errbuf : "no error"; }

void *lf_malloc(size_t n, const char *what) {
    void *p = malloc(n ? n : 1);
    if (!p) lf_set_error("out of memory allocating %zu bytes for %s", n, what ? what : "data");
    return p;
}

void *lf_calloc(size_t count, size_t size, const char *what) {
    size_t n;
    if (lf_mul_overflow(count, size, &n)) {
        lf_set_error("size overflow allocating %zu x %zu bytes for %s", count, size, what ? what : "data");
        return NULL;
    }
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) lf_set_error("out of memory allocating %zu bytes for %s", n, what ? what : "data");
    return p;
}

void *lf_realloc(void *p, size_t n, const char *what) {
    void *q = realloc(p, n ? n : 1);
    if (!q) lf_set_error("out of memory allocating %zu bytes for %s", n, what ? what : "data");
    return q;
}

char *lf_strdup(const char *s) { return lf_strndup(s, strlen(s)); }

char *lf_strndup(const char *s, size_t n) {
    char *d = lf_malloc(n + 1, "string");
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

char *lf_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = lf_malloc(a + b + 2, "path");
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t o = a;
    if (a && dir[a - 1] != '/') p[o++] = '/';
    memcpy(p + o, name, b + 1);
    return p;
}

int lf_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

char *lf_read_file(const char *path, size_t *len, size_t max_len) {
    return lf_read_file_limit(path, len, max_len, NULL);
}

static void too_large(const char *path, size_t max_len, const char *limit_name) {
    if (limit_name)
        lf_set_error("%s: file larger than the limit of %zu bytes for this kind of file (%s; raise it and "
                     "rebuild if the file is genuine)", path, max_len, limit_name);
    else
        lf_set_error("%s: file larger than the limit of %zu bytes", path, max_len);
}

char *lf_read_file_limit(const char *path, size_t *len, size_t max_len, const char *limit_name) {
    /* O_NONBLOCK: a FIFO (or device) put where a file belongs must not
     * block the open; only regular files are read. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        lf_set_error("%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        lf_set_error("%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        lf_set_error("%s: cannot open: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = lf_malloc(cap, "file contents");
    if (!buf) { fclose(f); return NULL; }
    for (;;) {
        if (n + 1 >= cap) {
            if (cap > max_len) {
                too_large(path, max_len, limit_name);
                free(buf); fclose(f); return NULL;
            }
            char *nb = lf_realloc(buf, cap * 2, "file contents");
            if (!nb) { free(buf); fclose(f); return NULL; }
            buf = nb; cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - 1 - n, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        lf_set_error("%s: read error: %s", path, strerror(errno));
        free(buf); fclose(f); return NULL;
    }
    fclose(f);
    if (n > max_len) {
        too_large(path, max_len, limit_name);
        free(buf); return NULL;
    }
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

void lf_json_parse_error(const char *path, const char *what, const char *text, size_t len, const char *end) {
    size_t at = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
    /* How deep do arrays and objects nest up to the error?  cJSON refuses
     * more than CJSON_NESTING_LIMIT levels (it parses recursively). */
    size_t depth = 0, deepest = 0;
    int in_str = 0;
    for (size_t i = 0; i < at; i++) {
        char c = text[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > deepest) deepest = depth;
        } else if ((c == ']' || c == '}') && depth) {
            depth--;
        }
    }
    if (deepest >= CJSON_NESTING_LIMIT)
        lf_set_error("%s: JSON nested deeper than %d levels near byte %zu of %zu (the limit of the cJSON "
                     "parser, CJSON_NESTING_LIMIT)", path, (int)CJSON_NESTING_LIMIT, at, len);
    else
        lf_set_error("%s: %s (error near byte %zu of %zu)", path, what, at, len);
}

void *lf_huge_alloc(size_t bytes) {
    const size_t huge = 2u << 20, size = ((bytes ? bytes : 1) + huge - 1) / huge * huge;
    void *p = aligned_alloc(huge, size);
    if (p) madvise(p, size, MADV_HUGEPAGE);
    return p;
}

size_t lf_mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    size_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %zu kB", &kb) == 1) break;
    fclose(f);
    return kb * 1024;
}
