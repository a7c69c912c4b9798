/* fuzz.h: helpers shared by the libFuzzer targets (fuzz/fuzz_*.c).
 *
 * Every reader of loraflow takes a path, so each input is put in a file
 * first: an anonymous memory file (memfd) reached as /proc/self/fd/N, which
 * costs no disk I/O and is mapped like any regular file.  Readers that work
 * on a folder (adapters, sharded indexes) get a scratch folder in /dev/shm
 * (or $TMPDIR) that is removed at exit.
 *
 * A target returns 0 whatever the reader says; a crash, a sanitizer report,
 * a leak or a timeout is what libFuzzer looks for.  Each target also checks
 * a few invariants of a successful read and aborts when one is broken. */
#ifndef LF_FUZZ_H
#define LF_FUZZ_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loraflow.h"
#include "../src/core/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_CHECK(cond)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "fuzz invariant broken at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

static inline void fuzz_die(const char *what) {
    fprintf(stderr, "fuzz set-up failed: %s: %s (%s)\n", what, strerror(errno), lf_last_error());
    abort();
}

/* Write all of data to fd at offset 0 and cut the file there. */
static inline void fuzz_fill_fd(int fd, const uint8_t *data, size_t size) {
    if (ftruncate(fd, 0) != 0) fuzz_die("ftruncate");
    size_t done = 0;
    while (done < size) {
        ssize_t w = pwrite(fd, data + done, size - done, (off_t)done);
        if (w <= 0) fuzz_die("pwrite");
        done += (size_t)w;
    }
}

/* A memory file holding data; returns its path (static buffer, one per call
 * site through *fd: pass the same int each time to reuse the file). */
static inline const char *fuzz_memfile(int *fd, char *path, size_t cap, const uint8_t *data, size_t size) {
    if (*fd < 0) {
        *fd = memfd_create("lf-fuzz", MFD_CLOEXEC);
        if (*fd < 0) fuzz_die("memfd_create");
    }
    fuzz_fill_fd(*fd, data, size);
    snprintf(path, cap, "/proc/self/fd/%d", *fd);
    return path;
}

/* A scratch folder, removed (with its files) at exit. */
static char fuzz_dir_path[256];
static inline void fuzz_rm_dir(void) {
    if (!fuzz_dir_path[0]) return;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fuzz_dir_path);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", fuzz_dir_path);
}
static inline const char *fuzz_dir(void) {
    if (fuzz_dir_path[0]) return fuzz_dir_path;
    struct stat st;
    const char *base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0
                           ? "/dev/shm"
                           : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    snprintf(fuzz_dir_path, sizeof fuzz_dir_path, "%s/lf-fuzz.XXXXXX", base);
    if (!mkdtemp(fuzz_dir_path)) fuzz_die("mkdtemp");
    atexit(fuzz_rm_dir);
    return fuzz_dir_path;
}

/* Write data to dir/name (plain write: the target is scratch). */
static inline void fuzz_write(const char *dir, const char *name, const void *data, size_t size) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) fuzz_die(p);
    fuzz_fill_fd(fd, data, size);
    close(fd);
}

static inline void fuzz_unlink(const char *dir, const char *name) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    unlink(p);
}

/* The error message must be a non-empty, NUL-terminated string that is not
 * the "no error" placeholder: every failure explains itself. */
static inline void fuzz_check_error(void) {
    const char *e = lf_last_error();
    FUZZ_CHECK(e && e[0] && strcmp(e, "no error") != 0);
    FUZZ_CHECK(strlen(e) < 1024);
}

#endif

#ifndef LF_FUZZ_NO_MODEL
/* The small synthetic model the adapter and gate targets load (and the seed
 * builder writes adapters for): H 16, I 32, 2 layers, 2 heads of 8 (1 KV
 * head), vocabulary 8, one LoRA of rank 4 on every projection. */
static inline lf_synth_spec fuzz_small_spec(void) {
    lf_synth_spec sp;
    memset(&sp, 0, sizeof sp);
    sp.cfg = (lf_config){.hidden_size = 16, .intermediate_size = 32, .n_layers = 2, .n_heads = 2,
                         .n_kv_heads = 1, .head_dim = 8, .vocab_size = 8, .max_position_embeddings = 64,
                         .rms_norm_eps = 1e-5f, .rope_theta = 10000.0f, .bos_id = 1, .eos_id = 2};
    sp.dtype = LF_F32;
    sp.n_adapters = 2;
    sp.rank = 4;
    sp.alpha = 8;
    sp.adapter_dtype = LF_F32;
    sp.gate = 1;
    sp.seed = 1;
    return sp;
}
#endif
