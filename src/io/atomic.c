/* atomic.c: write beside the target, flush, fsync, rename, fsync the folder. */
#include "atomic.h"
#include "../core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int lf_atomic_open(lf_atomic *a, const char *path) {
    memset(a, 0, sizeof *a);
    a->path = lf_strdup(path);
    size_t n = strlen(path) + 32;
    a->tmp = lf_malloc(n, "temporary path");
    if (!a->path || !a->tmp) { lf_atomic_abort(a); return -1; }
    snprintf(a->tmp, n, "%s.tmp.XXXXXX", path);
    int fd = mkostemp(a->tmp, O_CLOEXEC);
    if (fd < 0) {
        lf_set_error("%s: cannot create a temporary file beside it: %s", path, strerror(errno));
        free(a->tmp); a->tmp = NULL;
        lf_atomic_abort(a);
        return -1;
    }
    fchmod(fd, 0644);
    a->f = fdopen(fd, "wb");
    if (!a->f) {
        lf_set_error("%s: fdopen: %s", a->tmp, strerror(errno));
        close(fd);
        lf_atomic_abort(a);
        return -1;
    }
    return 0;
}

int lf_atomic_write(lf_atomic *a, const void *data, size_t n) {
    if (a->failed) return -1;
    if (n && fwrite(data, 1, n, a->f) != n) {
        lf_set_error("%s: write failed: %s", a->path, strerror(errno));
        a->failed = 1;
        return -1;
    }
    return 0;
}

static void fsync_dir_of(const char *path) {
    char *d = lf_strdup(path);
    if (!d) return;
    int fd = open(dirname(d), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) { fsync(fd); close(fd); }
    free(d);
}

int lf_atomic_commit(lf_atomic *a) {
    if (a->failed) { lf_atomic_abort(a); return -1; }
    int err = 0;
    if (fflush(a->f) != 0 || fsync(fileno(a->f)) != 0) err = errno;
    if (fclose(a->f) != 0 && !err) err = errno;
    a->f = NULL;
    if (err) {
        lf_set_error("%s: write failed: %s", a->path, strerror(err));
        lf_atomic_abort(a);
        return -1;
    }
    if (rename(a->tmp, a->path) != 0) {
        lf_set_error("%s: cannot rename the temporary file into place: %s", a->path, strerror(errno));
        lf_atomic_abort(a);
        return -1;
    }
    fsync_dir_of(a->path);
    free(a->tmp); free(a->path);
    memset(a, 0, sizeof *a);
    return 0;
}

void lf_atomic_abort(lf_atomic *a) {
    if (a->f) fclose(a->f);
    if (a->tmp) unlink(a->tmp);
    free(a->tmp); free(a->path);
    memset(a, 0, sizeof *a);
}
