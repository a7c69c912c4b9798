/* util.h: errors, checked allocation and overflow-safe size arithmetic.
 *
 * Every library function that can fail returns -1 (or NULL) and leaves a
 * message in a thread-local buffer that lf_last_error() returns.  Messages
 * name the file, the tensor or field and what was expected versus found. */
#ifndef LF_UTIL_H
#define LF_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include "loraflow.h"

#define LF_ERRMSG_MAX 1024

void lf_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prepend "prefix: " to the current error message (to add the file name). */
void lf_prefix_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Allocation that reports the size asked for and what it was for. */
void *lf_malloc(size_t n, const char *what);
void *lf_calloc(size_t count, size_t size, const char *what);
void *lf_realloc(void *p, size_t n, const char *what);
char *lf_strdup(const char *s);
char *lf_strndup(const char *s, size_t n);
char *lf_path_join(const char *dir, const char *name); /* malloc'd */
int lf_file_exists(const char *path);

/* Overflow-checked arithmetic: return 0 on success, -1 on overflow. */
static inline int lf_mul_overflow(size_t a, size_t b, size_t *out) {
    return __builtin_mul_overflow(a, b, out) ? -1 : 0;
}
static inline int lf_add_overflow(size_t a, size_t b, size_t *out) {
    return __builtin_add_overflow(a, b, out) ? -1 : 0;
}

/* Whole file into memory (NUL-terminated; *len excludes the NUL). */
char *lf_read_file(const char *path, size_t *len, size_t max_len);
/* The same; a file above max_len is refused with an error naming the limit
 * (e.g. "CONFIG_FILE_LIMIT in src/io/hfconfig.c"). */
char *lf_read_file_limit(const char *path, size_t *len, size_t max_len, const char *limit_name);

/* Sets the error for a failed cJSON parse of text[0..len), where end is
 * cJSON's error position: "<path>: <what> (error near byte N of M)" (what:
 * e.g. "not valid JSON"), or, when arrays and objects nest deeper than cJSON
 * allows, says that this limit was hit. */
void lf_json_parse_error(const char *path, const char *what, const char *text, size_t len, const char *end);

/* bytes (at least 1) rounded up to whole 2 MiB pages, aligned to them,
 * with transparent huge pages asked for (large buffers streamed every
 * token or step: fewer TLB misses); NULL when out of memory, no error set.
 * Contents undefined; free() releases it. */
void *lf_huge_alloc(size_t bytes);

/* MemAvailable of /proc/meminfo in bytes, or 0 when unknown. */
size_t lf_mem_available(void);

#endif
