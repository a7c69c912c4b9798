/* test_atomic.c: loraflow's writers never leave a half-written file.
 *
 * Every file loraflow writes goes through src/io/atomic.c: a temporary file
 * beside the target ("<target>.tmp.XXXXXX"), flushed and fsynced, renamed
 * over the target, then the folder fsynced.  Here a child process saves the
 * same target over and over (a large safetensors file, a PyTorch zip, a
 * gate, a trace) and is killed with SIGKILL at random moments; after every
 * kill the target must be a complete file from one of the saves (read fully
 * and checked value by value), the versions must only move forward, and at
 * most one temporary file may be left: the one the killed save was
 * writing.  (Nothing removes that one: loraflow never deletes a file it did
 * not create in this run; docs/SECURITY.md says how to clean up.)
 *
 * A kill cannot show durability (the page cache survives a killed process);
 * the fsyncs are there for power loss and are not tested here.
 *
 * LF_TEST_SEED=N repeats a run's random delays; LF_ATOMIC_KILLS=N sets the
 * kills per writer (default 30). */
#include "common.h"
#include "../src/core/util.h"

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static unsigned rng_state;
static unsigned rnd(void) {
    rng_state = rng_state * 1103515245u + 12345u;
    return rng_state >> 8;
}

/* ------------------------------------------------------------ the writers */

/* One save of version `stamp` to path; 0 on success.  Every writer puts
 * the stamp in every value, so a mixture of versions is detected. */
typedef int (*save_fn)(const char *path, int64_t stamp);
/* Read path completely; its stamp into *stamp, or -1 with a message. */
typedef int (*check_fn)(const char *path, int64_t *stamp, char *why, size_t cap);

#define ST_FLOATS (1 << 20) /* 4 MiB of float32 */
static float *big;

static int save_safetensors(const char *path, int64_t stamp) {
    for (int i = 0; i < ST_FLOATS; i++) big[i] = (float)stamp;
    char s[32];
    snprintf(s, sizeof s, "%lld", (long long)stamp);
    const char *meta[] = {"stamp", s};
    lf_tensor_desc t[2] = {{"big", LF_F32, 2, {1024, ST_FLOATS / 1024}, big}, {"stamp", LF_I64, 1, {1}, &stamp}};
    return lf_write_safetensors(path, t, 2, meta, 1);
}

static int check_safetensors(const char *path, int64_t *stamp, char *why, size_t cap) {
    lf_tensorset s;
    lf_tensorset_init(&s);
    int rc = -1;
    if (lf_safetensors_read(path, &s) != 0) { snprintf(why, cap, "%s", lf_last_error()); goto out; }
    const lf_tensor *b = lf_tensorset_find(&s, "big"), *st = lf_tensorset_find(&s, "stamp");
    const char *m = lf_tensorset_meta(&s, "stamp");
    if (!b || !st || !m || b->nbytes != (size_t)ST_FLOATS * 4) { snprintf(why, cap, "tensors missing"); goto out; }
    *stamp = *(const int64_t *)st->data;
    if (strtoll(m, NULL, 10) != *stamp) { snprintf(why, cap, "metadata stamp %s != tensor %lld", m, (long long)*stamp); goto out; }
    const float *f = b->data;
    for (int i = 0; i < ST_FLOATS; i++) {
        if (f[i] != (float)*stamp) {
            snprintf(why, cap, "value %d is %g, stamp %lld", i, (double)f[i], (long long)*stamp);
            goto out;
        }
    }
    rc = 0;
out:
    lf_tensorset_free(&s);
    return rc;
}

#define PT_FLOATS (1 << 19) /* 2 MiB */

static int save_pt(const char *path, int64_t stamp) {
    for (int i = 0; i < PT_FLOATS; i++) big[i] = (float)stamp;
    lf_tensor t[2] = {
        {.name = "w", .dtype = LF_F32, .ndim = 2, .shape = {512, PT_FLOATS / 512}, .data = big,
         .nbytes = (size_t)PT_FLOATS * 4},
        {.name = "stamp", .dtype = LF_I64, .ndim = 1, .shape = {1}, .data = &stamp, .nbytes = 8},
    };
    return lf_pt_write(path, "archive", t, 2);
}

static int check_pt(const char *path, int64_t *stamp, char *why, size_t cap) {
    lf_tensorset s;
    lf_tensorset_init(&s);
    int rc = -1;
    if (lf_pt_read(path, &s) != 0) { snprintf(why, cap, "%s", lf_last_error()); goto out; }
    const lf_tensor *w = lf_tensorset_find(&s, "w"), *st = lf_tensorset_find(&s, "stamp");
    if (!w || !st || w->nbytes != (size_t)PT_FLOATS * 4) { snprintf(why, cap, "tensors missing"); goto out; }
    *stamp = *(const int64_t *)st->data;
    const float *f = w->data;
    for (int i = 0; i < PT_FLOATS; i++) {
        if (f[i] != (float)*stamp) { snprintf(why, cap, "value %d is %g", i, (double)f[i]); goto out; }
    }
    rc = 0;
out:
    lf_tensorset_free(&s);
    return rc;
}

/* A gate through lf_gate_save (safetensors + metadata), on a model struct
 * built by the test (the writer reads only the adapter names). */
#include "../src/model/model.h"
static lf_model gate_model;
static lf_gate gate_obj;

static int save_gate(const char *path, int64_t stamp) {
    size_t n = (size_t)gate_obj.L * gate_obj.k * gate_obj.H;
    for (size_t i = 0; i < n; i++) gate_obj.W[i] = (float)stamp;
    for (int i = 0; i < gate_obj.L * gate_obj.k; i++) gate_obj.b[i] = (float)stamp;
    return lf_gate_save(&gate_obj, &gate_model, (float)stamp, path);
}

static int check_gate(const char *path, int64_t *stamp, char *why, size_t cap) {
    lf_gate *g = lf_gate_load(path, &gate_model);
    if (!g) { snprintf(why, cap, "%s", lf_last_error()); return -1; }
    *stamp = (int64_t)lf_gate_stored_temperature(g);
    int rc = 0;
    size_t n = (size_t)g->L * g->k * g->H;
    for (size_t i = 0; i < n && !rc; i++)
        if (g->W[i] != (float)*stamp) { snprintf(why, cap, "W[%zu] is %g", i, (double)g->W[i]); rc = -1; }
    for (int i = 0; i < g->L * g->k && !rc; i++)
        if (g->b[i] != (float)*stamp) { snprintf(why, cap, "b[%d] is %g", i, (double)g->b[i]); rc = -1; }
    lf_gate_free(g);
    return rc;
}

/* A trace CSV: 2000 tokens x 8 layers x 2 adapters, every token labelled
 * "stamp<N>". */
enum { TR_T = 2000, TR_L = 8, TR_K = 2 };
static float tr_w[TR_T * TR_L * TR_K];

static int save_trace(const char *path, int64_t stamp) {
    char label[32];
    snprintf(label, sizeof label, "stamp%lld", (long long)stamp);
    static const char *labels[TR_T];
    for (int i = 0; i < TR_T; i++) labels[i] = label;
    for (int i = 0; i < TR_T * TR_L * TR_K; i++) tr_w[i] = 0.25f;
    const char *names[TR_K] = {"lang", "task"};
    lf_trace_view v = {TR_T, TR_L, TR_K, tr_w, labels, names};
    return lf_trace_write_csv(path, &v);
}

static int check_trace(const char *path, int64_t *stamp, char *why, size_t cap) {
    size_t n;
    char *text = lf_read_file(path, &n, 64 << 20);
    if (!text) { snprintf(why, cap, "%s", lf_last_error()); return -1; }
    int rc = -1, rows = 0;
    char want[48] = "";
    *stamp = -1;
    if (n == 0 || text[n - 1] != '\n') { snprintf(why, cap, "does not end with a newline"); goto out; }
    for (char *line = strchr(text, '\n') + 1; line < text + n; line = strchr(line, '\n') + 1) {
        char *st = strstr(line, "stamp");
        char *nl = strchr(line, '\n');
        if (!st || st > nl) { snprintf(why, cap, "row %d has no stamp", rows); goto out; }
        if (!want[0]) {
            *stamp = strtoll(st + 5, NULL, 10);
            snprintf(want, sizeof want, "stamp%lld,", (long long)*stamp);
        }
        if (strncmp(st, want, strlen(want)) != 0) { snprintf(why, cap, "row %d: mixed stamps", rows); goto out; }
        rows++;
    }
    if (rows != TR_T * TR_L) { snprintf(why, cap, "%d rows, expected %d", rows, TR_T * TR_L); goto out; }
    rc = 0;
out:
    free(text);
    return rc;
}

/* ------------------------------------------------------------ the harness */

/* Files in dir whose name starts with "<base>.tmp." (temporaries of base);
 * removes them when remove_them. */
static int count_temps(const char *dir, const char *base, int remove_them) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    char prefix[256];
    snprintf(prefix, sizeof prefix, "%s.tmp.", base);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0) continue;
        n++;
        if (remove_them) {
            char p[1024];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
    }
    closedir(d);
    return n;
}

static int kills_per_writer(void) {
    const char *e = getenv("LF_ATOMIC_KILLS");
    int n = e ? atoi(e) : 30;
    return n > 0 ? n : 30;
}

static void kill_during_saves(const char *what, const char *name, save_fn save, check_fn check) {
    char dir[512], path[600], why[512];
    snprintf(dir, sizeof dir, "%s/%s.d", lf_test_tmpdir(), what);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    /* version 0, complete, and how long one save takes */
    double t0 = now();
    assert_int_equal(save(path, 0), 0);
    double t_save = now() - t0;
    int64_t stamp = -1, last = 0;
    assert_int_equal(check(path, &stamp, why, sizeof why), 0);
    assert_int_equal(stamp, 0);
    int kills = kills_per_writer(), same = 0, leftover = 0;
    for (int it = 1; it <= kills; it++) {
        int64_t base = (int64_t)it * 1000;
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            for (int k = 1; k < 1000; k++)
                if (save(path, base + k) != 0) _exit(3);
            _exit(0);
        }
        /* a random moment within the first few saves */
        double delay = t_save * 3.0 * (double)(rnd() % 1000) / 1000.0;
        struct timespec ts = {(time_t)delay, (long)((delay - (double)(time_t)delay) * 1e9)};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)) {
            print_error("%s: the saving child ended by itself (status %d)\n", what, st);
            fail();
        }
        if (check(path, &stamp, why, sizeof why) != 0) {
            print_error("%s: after a kill at %.1f ms the target is not a complete file: %s\n", what, delay * 1e3,
                        why);
            fail();
        }
        /* the old file (no save finished) or a newer complete one */
        if (!(stamp == last || (stamp > base && stamp < base + 1000))) {
            print_error("%s: the target holds version %lld, expected %lld or one of %lld..%lld\n", what,
                        (long long)stamp, (long long)last, (long long)base + 1, (long long)base + 999);
            fail();
        }
        if (stamp == last) same++;
        last = stamp;
        int temps = count_temps(dir, name, 1);
        if (temps > 1) {
            print_error("%s: %d temporary files after one kill (at most the one being written)\n", what, temps);
            fail();
        }
        leftover += temps;
    }
    print_message("%s: %d kills (one save %.1f ms): target complete every time, %d times still the previous "
                  "version, %d killed saves left their temporary file\n",
                  what, kills, t_save * 1e3, same, leftover);
    assert_int_equal(count_temps(dir, name, 0), 0);
}

static void test_kill_safetensors(void **state) {
    (void)state;
    kill_during_saves("safetensors", "model.safetensors", save_safetensors, check_safetensors);
}

static void test_kill_pt(void **state) {
    (void)state;
    kill_during_saves("pt", "adapter_model.bin", save_pt, check_pt);
}

static void test_kill_gate(void **state) {
    (void)state;
    kill_during_saves("gate", "gate.safetensors", save_gate, check_gate);
}

static void test_kill_trace(void **state) {
    (void)state;
    kill_during_saves("trace", "trace.csv", save_trace, check_trace);
}

/* Two processes saving the same target at once: each has its own
 * temporary, the last rename wins, the target is complete. */
static void test_concurrent_saves(void **state) {
    (void)state;
    char path[600], why[512];
    snprintf(path, sizeof path, "%s/both.safetensors", lf_test_tmpdir());
    pid_t p[2];
    for (int c = 0; c < 2; c++) {
        p[c] = fork();
        assert_true(p[c] >= 0);
        if (p[c] == 0) {
            for (int k = 1; k <= 10; k++)
                if (save_safetensors(path, (c + 1) * 100 + k) != 0) _exit(3);
            _exit(0);
        }
    }
    for (int c = 0; c < 2; c++) {
        int st;
        assert_int_equal(waitpid(p[c], &st, 0), p[c]);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    int64_t stamp;
    if (check_safetensors(path, &stamp, why, sizeof why) != 0) fail_msg("%s", why);
    assert_true(stamp == 110 || stamp == 210);
    assert_int_equal(count_temps(lf_test_tmpdir(), "both.safetensors", 0), 0);
}

/* A save that fails part-way (the file size limit makes write() fail, as a
 * full disk would) leaves the old file and no temporary. */
static void test_failed_write(void **state) {
    (void)state;
    char path[600], why[512];
    snprintf(path, sizeof path, "%s/full.safetensors", lf_test_tmpdir());
    assert_int_equal(save_safetensors(path, 7), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {1 << 20, 1 << 20}; /* 1 MiB: the 4 MiB save fails */
        setrlimit(RLIMIT_FSIZE, &rl);
        int rc = save_safetensors(path, 8);
        const char *e = lf_last_error();
        _exit(rc == -1 && strstr(e, "full.safetensors") && strstr(e, "write") ? 0 : 1);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    int64_t stamp;
    if (check_safetensors(path, &stamp, why, sizeof why) != 0) fail_msg("%s", why);
    assert_int_equal(stamp, 7);
    assert_int_equal(count_temps(lf_test_tmpdir(), "full.safetensors", 0), 0);
    /* a target in a folder that does not exist: an error, nothing created */
    char bad[700];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.safetensors", lf_test_tmpdir());
    assert_int_equal(save_safetensors(bad, 1), -1);
    assert_non_null(strstr(lf_last_error(), "no/such/dir/x.safetensors"));
}

static int setup(void **state) {
    (void)state;
    const char *s = getenv("LF_TEST_SEED");
    rng_state = s ? (unsigned)strtoul(s, NULL, 10) : (unsigned)time(NULL);
    print_message("LF_TEST_SEED=%u\n", rng_state);
    big = malloc((size_t)ST_FLOATS * sizeof *big);
    static char n0[] = "lang", n1[] = "task";
    gate_model.cfg.n_layers = 32;
    gate_model.cfg.hidden_size = 4096;
    gate_model.n_adapters = 2;
    gate_model.adapters[0].name = n0;
    gate_model.adapters[1].name = n1;
    gate_obj.k = 2;
    gate_obj.L = 32;
    gate_obj.H = 4096; /* the 7B shape: 1 MiB of gate weights */
    gate_obj.W = calloc((size_t)32 * 2 * 4096, sizeof(float));
    gate_obj.b = calloc(64, sizeof(float));
    return big && gate_obj.W && gate_obj.b ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    free(big);
    free(gate_obj.W);
    free(gate_obj.b);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill_safetensors), cmocka_unit_test(test_kill_pt),
        cmocka_unit_test(test_kill_gate),        cmocka_unit_test(test_kill_trace),
        cmocka_unit_test(test_concurrent_saves), cmocka_unit_test(test_failed_write),
    };
    return cmocka_run_group_tests_name("atomic", tests, setup, teardown);
}
