/* score.c: scoring generated answers: the final number of a math answer,
 * the share of words in a language, and running generated Python code
 * against its tests. */
#include "loraflow.h"
#include "../core/util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ============================ numbers ============================ */

/* Phrases after which the answer follows (checked case-insensitively for ASCII). */
static const char *const answer_markers[] = {
    "the answer is", "answer:", "final answer",
    "\xe7\xad\x94\xe6\xa1\x88\xe6\x98\xaf",             /* 答案是 */
    "\xe7\xad\x94\xe6\xa1\x88\xef\xbc\x9a",             /* 答案： */
    "\xe7\xad\x94\xe6\xa1\x88\xe4\xb8\xba",             /* 答案为 */
    "\xe7\xad\x94\xe6\xa1\x88:",                        /* 答案: */
    "\xd0\xbe\xd1\x82\xd0\xb2\xd0\xb5\xd1\x82:",        /* ответ: */
    "\xd0\x9e\xd1\x82\xd0\xb2\xd0\xb5\xd1\x82:",        /* Ответ: */
    "\xd0\xbe\xd1\x82\xd0\xb2\xd0\xb5\xd1\x82 -",       /* ответ - */
    "\xd0\xbe\xd1\x82\xd0\xb2\xd0\xb5\xd1\x82 \xe2\x80\x94", /* ответ — */
    "\xd0\xbe\xd1\x82\xd0\xb2\xd0\xb5\xd1\x82 \xd1\x80\xd0\xb0\xd0\xb2\xd0\xb5\xd0\xbd", /* ответ равен */
    "la respuesta es", "respuesta:", "respuesta final",
};

/* Case-insensitive (ASCII) search for the last occurrence of needle. */
static const char *find_last(const char *hay, const char *needle) {
    const char *last = NULL;
    size_t n = strlen(needle);
    for (const char *p = hay; *p; p++)
        if (!strncasecmp(p, needle, n)) last = p + n;
    return last;
}

/* Parse a number at p ("-1,234.50", "$12", "12%" handled by the caller
 * skipping non-digits).  Writes the normalised form into buf; returns the
 * end of the number, or NULL when p does not start one. */
static const char *parse_number(const char *p, char *buf, size_t n) {
    size_t o = 0;
    const char *s = p;
    int neg = 0;
    if (*s == '-' && isdigit((unsigned char)s[1])) { neg = 1; s++; }
    if (!isdigit((unsigned char)*s)) return NULL;
    char digits[128];
    size_t d = 0;
    /* European form "1.234.567" or "1.500,25": '.' separates thousands and
     * ',' is the decimal point (Spanish, Russian writing) */
    {
        const char *q = s;
        int groups = 0;
        while (isdigit((unsigned char)*q)) q++;
        if (q - s <= 3)
            while (q[0] == '.' && isdigit((unsigned char)q[1]) && isdigit((unsigned char)q[2]) &&
                   isdigit((unsigned char)q[3]) && !isdigit((unsigned char)q[4])) { q += 4; groups++; }
        if (groups >= 2 || (groups == 1 && q[0] == ',' && isdigit((unsigned char)q[1]))) {
            for (; s < q && d < sizeof digits - 2; s++) if (*s != '.') digits[d++] = *s;
            if (*s == ',' && isdigit((unsigned char)s[1])) {
                digits[d++] = '.';
                for (s++; isdigit((unsigned char)*s) && d < sizeof digits - 1; s++) digits[d++] = *s;
                while (d && digits[d - 1] == '0') d--;
                if (d && digits[d - 1] == '.') d--;
            }
            goto done;
        }
    }
    /* integer part with optional thousands separators ("1,234" or "1 234") */
    while (*s && d < sizeof digits - 2) {
        if (isdigit((unsigned char)*s)) digits[d++] = *s++;
        else if ((*s == ',' || *s == ' ') && isdigit((unsigned char)s[1]) && isdigit((unsigned char)s[2]) &&
                 isdigit((unsigned char)s[3]) && !isdigit((unsigned char)s[4]))
            s++;
        else break;
    }
    if (*s == '.' && isdigit((unsigned char)s[1])) {
        digits[d++] = *s++;
        while (isdigit((unsigned char)*s) && d < sizeof digits - 1) digits[d++] = *s++;
        /* "12.50" -> "12.5", "12.0" -> "12" */
        while (d && digits[d - 1] == '0') d--;
        if (d && digits[d - 1] == '.') d--;
    }
done:
    digits[d] = 0;
    /* leading zeros of the integer part */
    const char *q = digits;
    while (q[0] == '0' && q[1] && q[1] != '.') q++;
    if (neg && o + 1 < n) buf[o++] = '-';
    for (; *q && o + 1 < n; q++) buf[o++] = *q;
    buf[o] = 0;
    if (neg && !strcmp(buf, "-0")) strcpy(buf, "0");
    return s;
}

/* The first number at or after p, or the last one of the text when last. */
static int scan_number(const char *p, int last, char *buf, size_t n) {
    int found = 0;
    char tmp[128];
    while (*p) {
        if (isdigit((unsigned char)*p) || (*p == '-' && isdigit((unsigned char)p[1]))) {
            const char *e = parse_number(p, tmp, sizeof tmp);
            if (e) {
                snprintf(buf, n, "%s", tmp);
                found = 1;
                if (!last) return 0;
                p = e;
                continue;
            }
        }
        p++;
    }
    return found ? 0 : -1;
}

int lf_math_extract(const char *text, char *buf, size_t n) {
    const char *best = NULL;
    for (size_t i = 0; i < sizeof answer_markers / sizeof answer_markers[0]; i++) {
        const char *at = find_last(text, answer_markers[i]);
        if (at && (!best || at > best)) best = at;
    }
    if (best && scan_number(best, 0, buf, n) == 0) return 0;
    return scan_number(text, 1, buf, n);
}

int lf_math_equal(const char *a, const char *b) {
    char x[128], y[128];
    if (scan_number(a, 0, x, sizeof x) || scan_number(b, 0, y, sizeof y)) return 0;
    if (!strcmp(x, y)) return 1;
    double u = strtod(x, NULL), v = strtod(y, NULL);
    return fabs(u - v) <= 1e-6 * fmax(1.0, fabs(v));
}

/* ============================ words ============================ */

struct lf_wordset {
    char **w;
    size_t n;
};

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

lf_wordset *lf_wordset_load(const char *path) {
    size_t len;
    char *txt = lf_read_file(path, &len, 256u << 20);
    if (!txt) return NULL;
    lf_wordset *w = lf_calloc(1, sizeof *w, "word list");
    size_t cap = 0;
    char *save = NULL;
    for (char *t = w ? strtok_r(txt, " \t\r\n", &save) : NULL; t; t = strtok_r(NULL, " \t\r\n", &save)) {
        if (w->n == cap) {
            cap = cap ? cap * 2 : 1024;
            char **nw = lf_realloc(w->w, cap * sizeof *nw, "word list");
            if (!nw) { lf_wordset_free(w); free(txt); return NULL; }
            w->w = nw;
        }
        for (char *c = t; *c; c++) *c = (char)tolower((unsigned char)*c);
        if (!(w->w[w->n++] = lf_strdup(t))) { lf_wordset_free(w); free(txt); return NULL; }
    }
    free(txt);
    if (w && w->n == 0) {
        lf_set_error("%s: no words", path);
        lf_wordset_free(w);
        return NULL;
    }
    if (w) qsort(w->w, w->n, sizeof *w->w, cmp_str);
    return w;
}

void lf_wordset_free(lf_wordset *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n; i++) free(w->w[i]);
    free(w->w);
    free(w);
}

double lf_wordset_share(const lf_wordset *w, const char *text) {
    size_t total = 0, hits = 0;
    char word[256];
    const char *p = text;
    while (*p) {
        while (*p && isspace((unsigned char)*p)) p++;
        size_t n = 0;
        while (*p && !isspace((unsigned char)*p)) {
            if (n < sizeof word - 1) word[n++] = (char)tolower((unsigned char)*p);
            p++;
        }
        /* strip ASCII punctuation at both ends */
        size_t a = 0;
        while (a < n && ispunct((unsigned char)word[a])) a++;
        while (n > a && ispunct((unsigned char)word[n - 1])) n--;
        if (n <= a) continue;
        word[n] = 0;
        const char *wd = word + a;
        int numeric = 1;
        for (const char *c = wd; *c; c++) if (!isdigit((unsigned char)*c) && *c != '.' && *c != ',') numeric = 0;
        if (numeric) continue;
        total++;
        if (bsearch(&wd, w->w, w->n, sizeof *w->w, cmp_str)) hits++;
    }
    return total ? (double)hits / total : -1.0;
}

/* ============================ code ============================ */

static int have_python3(void) {
    static int cached = -1;
    if (cached < 0) cached = system("command -v python3 >/dev/null 2>&1") == 0;
    return cached;
}

/* Whether `unshare -n` works here (a new network namespace: no network). */
static int have_unshare(void) {
    static int cached = -1;
    if (cached < 0) cached = system("unshare -n true >/dev/null 2>&1") == 0;
    return cached;
}

int lf_code_check(const char *program, double timeout_s, char *why, size_t n) {
    if (why && n) why[0] = 0;
    if (!have_python3()) return -1;
    char path[] = "/tmp/loraflow-code-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) { snprintf(why, n, "cannot create a temporary file: %s", strerror(errno)); return 0; }
    size_t len = strlen(program);
    int ok = write(fd, program, len) == (ssize_t)len;
    close(fd);
    if (!ok) { unlink(path); snprintf(why, n, "cannot write the program"); return 0; }
    pid_t pid = fork();
    if (pid < 0) { unlink(path); snprintf(why, n, "fork failed"); return 0; }
    if (pid == 0) {
        setpgid(0, 0);
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) { dup2(devnull, 0); dup2(devnull, 1); dup2(devnull, 2); }
        if (have_unshare()) execlp("unshare", "unshare", "-n", "python3", "-I", path, (char *)NULL);
        execlp("python3", "python3", "-I", path, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) break;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) * 1e-9 > timeout_s) {
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            unlink(path);
            snprintf(why, n, "timed out after %.0f s", timeout_s);
            return 0;
        }
        usleep(2000);
    }
    unlink(path);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return 1;
    if (WIFEXITED(st)) snprintf(why, n, "exit status %d", WEXITSTATUS(st));
    else snprintf(why, n, "killed by signal %d", WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    return 0;
}
