/* common.c: helpers shared by the test programs. */
#include "common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int dir_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

const char *lf_test_shared(void) {
    static char path[4096];
    static int done = 0;
    if (done) return path[0] ? path : NULL;
    done = 1;
    const char *env = getenv("LORAFLOW_SHARED");
    const char *cands[] = {env, "../shared", "../../shared", NULL};
    for (int i = 0; i < 3; i++) {
        if (!cands[i]) continue;
        char probe[4300];
        if (strlen(cands[i]) > 4000) continue;
        memcpy(probe, cands[i], strlen(cands[i]) + 1);
        strcat(probe, "/fixtures");
        if (dir_exists(probe)) {
            snprintf(path, sizeof path, "%s", cands[i]);
            return path;
        }
    }
    return NULL;
}

const char *lf_test_path(const char *rel) {
    static _Thread_local char buf[8][8300];
    static _Thread_local int slot = 0;
    const char *s = lf_test_shared();
    if (!s) return NULL;
    char *b = buf[slot++ % 8];
    snprintf(b, 8300, "%s/%s", s, rel);
    return b;
}

static char tmpdir[256];
static void rm_tmpdir(void) {
    if (tmpdir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    }
}

const char *lf_test_tmpdir(void) {
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/lftest.XXXXXX");
        if (!mkdtemp(tmpdir)) { perror("mkdtemp"); abort(); }
        atexit(rm_tmpdir);
    }
    return tmpdir;
}

void lf_test_write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

double lf_test_maxdiff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d; /* NaN propagates as a failure */
    }
    return m;
}

double lf_test_scale(const float *ref, size_t n) {
    double m = 1.0;
    for (size_t i = 0; i < n; i++) if (fabs(ref[i]) > m) m = fabs(ref[i]);
    return m;
}

void lf_test_check_close(const char *name, const float *c, const float *ref, size_t n, double tol) {
    double worst = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)c[i] - (double)ref[i]);
        if (!(d <= worst)) { worst = d; wi = i; }
    }
    if (!(worst <= tol)) {
        print_error("%s: max |c - ref| = %.3g > tolerance %.3g at index %zu (c=%.7g ref=%.7g)\n",
                    name, worst, tol, wi, (double)c[wi], (double)ref[wi]);
        fail();
    }
}

int lf_test_run(const char *cmd, char **out) {
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += got;
        if (cap - n < 2) { cap *= 2; buf = realloc(buf, cap); }
    }
    buf[n] = 0;
    int st = pclose(p);
    if (out) *out = buf; else free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

const char *lf_test_tool(void) {
    const char *e = getenv("LORAFLOW_BIN");
    return e ? e : "build/loraflow";
}
