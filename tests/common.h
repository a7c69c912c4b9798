/* common.h: helpers shared by the test programs (cmocka). */
#ifndef LF_TEST_COMMON_H
#define LF_TEST_COMMON_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "loraflow.h"
#include "../src/io/tensorset.h"

/* Folder of the shared test data (../shared beside the repository, or
 * $LORAFLOW_SHARED), or NULL when absent. */
const char *lf_test_shared(void);
/* "<shared>/<rel>" in a static buffer, or NULL when shared/ is absent. */
const char *lf_test_path(const char *rel);

/* Skip the current test with a message when shared/ is absent. */
#define LF_REQUIRE_SHARED()                                                              \
    do {                                                                                 \
        if (!lf_test_shared()) {                                                         \
            print_message("SKIP %s: ../shared not found (set LORAFLOW_SHARED)\n", __func__); \
            skip();                                                                      \
        }                                                                                \
    } while (0)

/* A fresh temporary directory (removed at exit). */
const char *lf_test_tmpdir(void);
/* Write bytes to a file (for hostile-input tests). */
void lf_test_write_file(const char *path, const void *data, size_t n);

/* max |a - b| over n floats. */
double lf_test_maxdiff(const float *a, const float *b, size_t n);
/* max(1, max |ref|). */
double lf_test_scale(const float *ref, size_t n);

/* Assert max|c-ref| <= tol, printing the name and the worst index on failure. */
void lf_test_check_close(const char *name, const float *c, const float *ref, size_t n, double tol);

/* Run cmd through the shell; returns its exit status, captures stdout into
 * *out (malloc'd, may be NULL) when out is non-NULL. */
int lf_test_run(const char *cmd, char **out);
/* Path of the built loraflow tool (from $LORAFLOW_BIN or build/loraflow). */
const char *lf_test_tool(void);

#endif
