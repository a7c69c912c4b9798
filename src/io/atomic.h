/* atomic.h: durable, all-or-nothing file writes.
 *
 * The data goes to a temporary file beside the target; commit flushes it,
 * fsyncs it, renames it over the target and fsyncs the folder.  A crash at
 * any moment leaves either the old complete file or the new complete one. */
#ifndef LF_ATOMIC_H
#define LF_ATOMIC_H

#include <stdio.h>
#include <stddef.h>

typedef struct {
    FILE *f;
    char *tmp;   /* temporary path */
    char *path;  /* target path */
    int failed;  /* a write failed: commit will refuse */
} lf_atomic;

int lf_atomic_open(lf_atomic *a, const char *path);
/* fwrite that records failure (checked at commit). */
int lf_atomic_write(lf_atomic *a, const void *data, size_t n);
int lf_atomic_commit(lf_atomic *a);
void lf_atomic_abort(lf_atomic *a);

#endif
