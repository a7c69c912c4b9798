/* trace.c: write recorded fusion weights as CSV, JSON or an SVG heatmap.
 *
 * Token texts come straight from the tokenizer and may hold anything:
 * quotes, commas, newlines, markup characters or bytes that are not valid
 * UTF-8 (a token can end in the middle of a multi-byte character).  Every
 * writer therefore cleans the text first: invalid bytes become U+FFFD so
 * that the output stays valid UTF-8, and each format then applies its own
 * quoting.  All files are written through lf_atomic, so a reader never
 * sees a half-written trace. */
#include "loraflow.h"
#include "../core/util.h"
#include "../io/atomic.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* validation                                                           */

static int check_view(const char *path, const lf_trace_view *t, const char *what) {
    if (!path) { lf_set_error("%s trace: no output path given", what); return -1; }
    if (!t) { lf_set_error("%s: no trace given", path); return -1; }
    if (t->n_tokens < 0 || t->n_layers < 1 || t->k < 1) {
        lf_set_error("%s: invalid trace shape: %d tokens, %d layers, %d adapters "
                     "(need tokens >= 0, layers >= 1, adapters >= 1)",
                     path, t->n_tokens, t->n_layers, t->k);
        return -1;
    }
    size_t cells;
    if (lf_mul_overflow((size_t)t->n_tokens, (size_t)t->n_layers, &cells) ||
        lf_mul_overflow(cells, (size_t)t->k, &cells) ||
        lf_mul_overflow(cells, sizeof(float), &cells)) {
        lf_set_error("%s: trace of %d x %d x %d weights is too large", path,
                     t->n_tokens, t->n_layers, t->k);
        return -1;
    }
    if (!t->names) { lf_set_error("%s: no adapter names given", path); return -1; }
    for (int i = 0; i < t->k; i++)
        if (!t->names[i]) { lf_set_error("%s: adapter %d has no name", path, i); return -1; }
    /* With no tokens there is nothing to read, so a NULL weight or label
     * array is what a fresh session legitimately hands over. */
    if (t->n_tokens > 0) {
        if (!t->w) { lf_set_error("%s: no weights given", path); return -1; }
        if (!t->labels) { lf_set_error("%s: no token labels given", path); return -1; }
        for (int i = 0; i < t->n_tokens; i++)
            if (!t->labels[i]) { lf_set_error("%s: token %d has no label", path, i); return -1; }
    }
    return 0;
}

static float weight(const lf_trace_view *t, int tok, int layer, int i) {
    return t->w[((size_t)tok * (size_t)t->n_layers + (size_t)layer) * (size_t)t->k + (size_t)i];
}

/* ------------------------------------------------------------------ */
/* growable byte string                                                 */

typedef struct {
    char *p;
    size_t n, cap;
    int oom;  /* an allocation failed: the content is incomplete */
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1) cap *= 2;
        char *q = lf_realloc(b->p, cap, "text buffer");
        if (!q) { b->oom = 1; return; }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_cp(sbuf *b, uint32_t cp) {
    char u[4];
    size_t n;
    if (cp < 0x80) { u[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { u[0] = (char)(0xC0 | cp >> 6); u[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | cp >> 12); u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F)); n = 3;
    } else {
        u[0] = (char)(0xF0 | cp >> 18); u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); u[3] = (char)(0x80 | (cp & 0x3F)); n = 4;
    }
    sb_put(b, u, n);
}

/* Hand the string over (never NULL unless out of memory). */
static char *sb_take(sbuf *b) {
    if (!b->oom && !b->p) sb_put(b, "", 0);
    if (b->oom) { free(b->p); return NULL; }
    return b->p;
}

/* ------------------------------------------------------------------ */
/* UTF-8                                                                */

#define REPLACEMENT 0xFFFDu

/* Decode the character at s (NUL-terminated).  Returns the bytes it takes;
 * a byte that does not start a valid, shortest-form, non-surrogate scalar
 * value is taken alone and decodes to U+FFFD. */
static size_t utf8_next(const unsigned char *s, uint32_t *cp) {
    unsigned c = s[0];
    size_t len;
    uint32_t v, min;
    if (c < 0x80) { *cp = c; return 1; }
    if (c >= 0xC2 && c <= 0xDF) { len = 2; v = c & 0x1F; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; v = c & 0x0F; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; v = c & 0x07; min = 0x10000; }
    else { *cp = REPLACEMENT; return 1; }
    for (size_t i = 1; i < len; i++) {
        /* a NUL terminator fails this test too, so we never read past it */
        if ((s[i] & 0xC0) != 0x80) { *cp = REPLACEMENT; return 1; }
        v = v << 6 | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) { *cp = REPLACEMENT; return 1; }
    *cp = v;
    return len;
}

/* Copy of s with invalid UTF-8 replaced by U+FFFD (malloc'd). */
static char *utf8_clean(const char *s) {
    sbuf b = {0};
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        uint32_t cp;
        size_t n = utf8_next(p, &cp);
        if (cp == REPLACEMENT && n == 1) sb_cp(&b, REPLACEMENT);  /* an invalid byte */
        else sb_put(&b, (const char *)p, n);
        p += n;
    }
    char *r = sb_take(&b);
    if (!r) lf_set_error("out of memory cleaning a token text");
    return r;
}

/* ------------------------------------------------------------------ */
/* output helpers                                                       */

static void out_str(lf_atomic *a, const char *s) { lf_atomic_write(a, s, strlen(s)); }

/* printf into the file; the buffer covers every line these writers build. */
static void out_fmt(lf_atomic *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_fmt(lf_atomic *a, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf) {
        if (!a->failed) lf_set_error("%s: internal error formatting a line", a->path);
        a->failed = 1;
        return;
    }
    lf_atomic_write(a, buf, (size_t)n);
}

/* A number printed with %g/%f uses the locale's decimal point; force '.'
 * in case the program switched to a locale with a decimal comma (which
 * would break CSV columns and SVG coordinates). */
static void dot_decimal(char *num) {
    for (char *p = num; *p; p++)
        if (*p == ',') *p = '.';
}

/* Finish: commit, or abort when a write or allocation already failed. */
static int finish(lf_atomic *a, int ok) {
    if (!ok) { lf_atomic_abort(a); return -1; }
    return lf_atomic_commit(a);
}

/* ------------------------------------------------------------------ */
/* CSV                                                                  */

/* RFC 4180: quote a field holding a comma, quote, CR or LF; double quotes. */
static void csv_field(lf_atomic *a, const char *s) {
    if (!strpbrk(s, ",\"\r\n")) { out_str(a, s); return; }
    out_str(a, "\"");
    for (const char *q; (q = strchr(s, '"')); s = q + 1) {
        lf_atomic_write(a, s, (size_t)(q - s) + 1);
        out_str(a, "\"");
    }
    out_str(a, s);
    out_str(a, "\"");
}

/* Clean then quote one text field; 0 when out of memory. */
static int csv_text(lf_atomic *a, const char *s) {
    char *c = utf8_clean(s);
    if (!c) return 0;
    csv_field(a, c);
    free(c);
    return 1;
}

int lf_trace_write_csv(const char *path, const lf_trace_view *t) {
    if (check_view(path, t, "CSV") != 0) return -1;
    lf_atomic a;
    if (lf_atomic_open(&a, path) != 0) return -1;
    int ok = 1;
    out_str(&a, "token,position,text,layer");
    for (int i = 0; i < t->k && ok; i++) {
        out_str(&a, ",");
        ok = csv_text(&a, t->names[i]);
    }
    out_str(&a, "\n");
    for (int tok = 0; tok < t->n_tokens && ok; tok++) {
        /* clean the text once per token, not once per row */
        char *text = utf8_clean(t->labels[tok]);
        if (!text) { ok = 0; break; }
        for (int l = 0; l < t->n_layers; l++) {
            out_fmt(&a, "%d,%d,", tok, tok);
            csv_field(&a, text);
            out_fmt(&a, ",%d", l);
            for (int i = 0; i < t->k; i++) {
                char num[48];
                snprintf(num, sizeof num, "%.6g", (double)weight(t, tok, l, i));
                dot_decimal(num);
                out_fmt(&a, ",%s", num);
            }
            out_str(&a, "\n");
        }
        free(text);
        if (a.failed) break;
    }
    if (!ok) lf_prefix_error("%s: ", path);
    return finish(&a, ok);
}

/* ------------------------------------------------------------------ */
/* JSON                                                                 */

/* The double whose shortest decimal form round-trips the float, so that
 * 0.1f is written as 0.1 rather than 0.100000001490116. */
static double json_value(float v) {
    if (!isfinite(v)) return (double)v;  /* cJSON writes null for these */
    char buf[48];
    for (int p = 6; p <= 9; p++) {  /* 9 digits always round-trip */
        snprintf(buf, sizeof buf, "%.*g", p, (double)v);
        if (strtof(buf, NULL) == v) return strtod(buf, NULL);
    }
    return (double)v;
}

/* {"position": t, "text": ..., "weights": [[k] x L]} for one token. */
static cJSON *json_token(const lf_trace_view *t, int tok) {
    cJSON *o = cJSON_CreateObject();
    char *text = utf8_clean(t->labels[tok]);
    if (!o || !text) goto fail;
    if (!cJSON_AddNumberToObject(o, "position", tok)) goto fail;
    if (!cJSON_AddStringToObject(o, "text", text)) goto fail;
    cJSON *rows = cJSON_AddArrayToObject(o, "weights");
    if (!rows) goto fail;
    for (int l = 0; l < t->n_layers; l++) {
        cJSON *row = cJSON_CreateArray();
        if (!row || !cJSON_AddItemToArray(rows, row)) { cJSON_Delete(row); goto fail; }
        for (int i = 0; i < t->k; i++) {
            cJSON *num = cJSON_CreateNumber(json_value(weight(t, tok, l, i)));
            if (!num || !cJSON_AddItemToArray(row, num)) { cJSON_Delete(num); goto fail; }
        }
    }
    free(text);
    return o;
fail:
    free(text);
    cJSON_Delete(o);
    return NULL;
}

static cJSON *json_names(const lf_trace_view *t) {
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; arr && i < t->k; i++) {
        char *name = utf8_clean(t->names[i]);
        cJSON *s = name ? cJSON_CreateString(name) : NULL;
        free(name);
        if (!s || !cJSON_AddItemToArray(arr, s)) { cJSON_Delete(s); cJSON_Delete(arr); return NULL; }
    }
    return arr;
}

/* Print item compactly into the file; 0 when out of memory. */
static int json_emit(lf_atomic *a, cJSON *item) {
    char *s = item ? cJSON_PrintUnformatted(item) : NULL;
    cJSON_Delete(item);
    if (!s) return 0;
    out_str(a, s);
    cJSON_free(s);
    return 1;
}

/* The document is assembled one token at a time, each on its own line:
 * the file stays readable and we never hold the whole tree in memory. */
int lf_trace_write_json(const char *path, const lf_trace_view *t) {
    if (check_view(path, t, "JSON") != 0) return -1;
    lf_atomic a;
    if (lf_atomic_open(&a, path) != 0) return -1;
    out_str(&a, "{\"adapters\": ");
    int ok = json_emit(&a, json_names(t));
    out_fmt(&a, ", \"n_layers\": %d, \"tokens\": [", t->n_layers);
    for (int tok = 0; tok < t->n_tokens && ok && !a.failed; tok++) {
        out_str(&a, tok ? ",\n  " : "\n  ");
        ok = json_emit(&a, json_token(t, tok));
    }
    out_str(&a, t->n_tokens ? "\n]}\n" : "]}\n");
    if (!ok) lf_set_error("%s: out of memory building the JSON trace", path);
    return finish(&a, ok);
}

/* ------------------------------------------------------------------ */
/* SVG: text                                                            */

static void xml_cp(sbuf *b, uint32_t cp) {
    switch (cp) {
    case '<': sb_str(b, "&lt;"); break;
    case '>': sb_str(b, "&gt;"); break;
    case '&': sb_str(b, "&amp;"); break;
    case '"': sb_str(b, "&quot;"); break;
    case '\'': sb_str(b, "&apos;"); break;
    default: sb_cp(b, cp);
    }
}

/* The visible stand-in for cp, or 0 to keep cp.  XML 1.0 forbids most
 * control characters and U+FFFE/U+FFFF outright; the others would be
 * invisible in a label, so they get a picture. */
static uint32_t visible(uint32_t cp, int edge_space) {
    if (cp == ' ') return edge_space ? 0x2423 : 0;  /* ␣ */
    if (cp == '\n') return 0x21B5;                  /* ↵ */
    if (cp == '\t') return 0x21E5;                  /* ⇥ */
    if (cp < 0x20) return 0x2400 + cp;              /* ␀ ... ␟ (␍ for CR) */
    if (cp == 0x7F) return 0x2421;                  /* ␡ */
    if ((cp >= 0x80 && cp <= 0x9F) || cp == 0xFFFE || cp == 0xFFFF) return REPLACEMENT;
    return 0;
}

/* s as XML-escaped, readable label text of at most max_chars characters
 * (an ellipsis marks a cut).  Spaces at either end or next to another space
 * are shown as ␣, since SVG would otherwise collapse or hide them; an empty
 * text is shown as ∅.  *width receives the number of characters shown. */
static char *svg_text(const char *s, int max_chars, int *width) {
    /* decode first, so that the space rule can look at both neighbours */
    size_t cap = strlen(s) + 1, n = 0;
    uint32_t *cps = lf_malloc(cap * sizeof *cps, "label characters");
    if (!cps) return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p;) p += utf8_next(p, &cps[n++]);

    sbuf b = {0};
    int shown = 0;
    if (n == 0) { sb_str(&b, "\xE2\x88\x85"); shown = 1; }  /* ∅ */
    for (size_t i = 0; i < n; i++) {
        if (shown == max_chars - 1 && n - i > 1) { sb_str(&b, "\xE2\x80\xA6"); shown++; break; }  /* … */
        int edge = i == 0 || i == n - 1 || cps[i - 1] == ' ' || cps[i + 1] == ' ';
        uint32_t v = visible(cps[i], edge);
        xml_cp(&b, v ? v : cps[i]);
        shown++;
    }
    free(cps);
    if (width) *width = shown;
    char *r = sb_take(&b);
    if (!r) lf_set_error("out of memory preparing a label");
    return r;
}

/* ------------------------------------------------------------------ */
/* SVG: colours                                                         */

typedef struct { unsigned char r, g, b; } rgb;

/* Piecewise-linear colour map through evenly spaced stops; x in [0, 1]. */
static rgb ramp(const rgb *stops, int n, double x) {
    if (!(x > 0)) x = 0;
    if (x > 1) x = 1;
    double pos = x * (n - 1);
    int i = (int)pos;
    if (i >= n - 1) return stops[n - 1];
    double f = pos - i;
    rgb c = {
        (unsigned char)lround(stops[i].r + f * (stops[i + 1].r - stops[i].r)),
        (unsigned char)lround(stops[i].g + f * (stops[i + 1].g - stops[i].g)),
        (unsigned char)lround(stops[i].b + f * (stops[i + 1].b - stops[i].b)),
    };
    return c;
}

/* Blue - white - red, white in the middle (ColorBrewer RdBu, reversed). */
static const rgb DIVERGING[] = {
    {0x05, 0x30, 0x61}, {0x21, 0x66, 0xac}, {0x43, 0x93, 0xc3}, {0x92, 0xc5, 0xde},
    {0xd1, 0xe5, 0xf0}, {0xff, 0xff, 0xff}, {0xfd, 0xdb, 0xc7}, {0xf4, 0xa5, 0x82},
    {0xd6, 0x60, 0x4d}, {0xb2, 0x18, 0x2b}, {0x67, 0x00, 0x1f},
};
/* viridis: perceptually even and readable in greyscale. */
static const rgb SEQUENTIAL[] = {
    {0x44, 0x01, 0x54}, {0x48, 0x28, 0x78}, {0x3e, 0x49, 0x89}, {0x31, 0x68, 0x8e},
    {0x26, 0x82, 0x8e}, {0x1f, 0x9e, 0x89}, {0x35, 0xb7, 0x79}, {0x6e, 0xce, 0x58},
    {0xb5, 0xde, 0x2b}, {0xfd, 0xe7, 0x25},
};
static const rgb MISSING = {0xbb, 0xbb, 0xbb};  /* NaN / inf */

/* One scale for all panels, so that colours compare across adapters. */
typedef struct {
    double lo, hi;  /* finite min and max */
    double m;       /* diverging: max(|lo|, hi) so both sides share a slope */
    int diverging;  /* lo < 0 < hi */
} scale;

static scale make_scale(const lf_trace_view *t) {
    scale s = {0, 0, 0, 0};
    int any = 0;
    size_t n = (size_t)t->n_tokens * (size_t)t->n_layers * (size_t)t->k;
    for (size_t i = 0; i < n; i++) {
        double v = t->w[i];
        if (!isfinite(v)) continue;
        if (!any || v < s.lo) s.lo = v;
        if (!any || v > s.hi) s.hi = v;
        any = 1;
    }
    s.diverging = s.lo < 0 && s.hi > 0;
    s.m = fmax(-s.lo, s.hi);
    return s;
}

static rgb colour_of(const scale *s, double v) {
    if (!isfinite(v)) return MISSING;
    int nd = (int)(sizeof DIVERGING / sizeof *DIVERGING);
    int ns = (int)(sizeof SEQUENTIAL / sizeof *SEQUENTIAL);
    if (s->diverging) return ramp(DIVERGING, nd, 0.5 + 0.5 * v / s->m);
    if (s->hi > s->lo) return ramp(SEQUENTIAL, ns, (v - s->lo) / (s->hi - s->lo));
    return ramp(SEQUENTIAL, ns, 0.5);  /* all weights equal */
}

/* ------------------------------------------------------------------ */
/* SVG: layout                                                          */

enum {
    CELL_W = 16,        /* wide enough for one rotated 11px label per column */
    MARGIN_LEFT = 64,   /* room for "layer" and "L127" */
    MARGIN_RIGHT = 40,  /* layer labels repeated on the right */
    TOP = 112,          /* title, subtitle and colour bar above the panels */
    PANEL_TITLE = 26,   /* panel title above each grid */
    PANEL_GAP = 28,
    LABEL_FONT = 11,
    LABEL_CHARS = 16,   /* longer token texts are cut with an ellipsis */
    TIP_CHARS = 80,     /* token text in a tooltip */
    NAME_CHARS = 60,    /* adapter name in titles and tooltips */
    BAR_STEPS = 64,     /* colour bar: BAR_STEPS swatches + one outline rect */
    BAR_STEP_W = 4,
    BAR_H = 12,
    BAR_Y = 64,
    MIN_WIDTH = 600,
};

/* Row height: generous for small models, compact for deep ones. */
static int cell_h(int n_layers) { return n_layers <= 32 ? 14 : n_layers <= 64 ? 8 : 4; }

typedef struct {
    const lf_trace_view *t;
    scale sc;
    char **label;      /* [n_tokens] escaped axis labels */
    char **tip;        /* [n_tokens] escaped tooltip texts */
    char **name;       /* [k] escaped adapter names */
    int label_h;       /* height reserved for the rotated labels */
    int ch;            /* cell height */
    long long width, panel_h;
} svg_ctx;

static void svg_ctx_free(svg_ctx *c) {
    for (int i = 0; c->label && i < c->t->n_tokens; i++) free(c->label[i]);
    for (int i = 0; c->tip && i < c->t->n_tokens; i++) free(c->tip[i]);
    for (int i = 0; c->name && i < c->t->k; i++) free(c->name[i]);
    free(c->label); free(c->tip); free(c->name);
}

/* Prepare every text once (panels repeat them) and size the canvas. */
static int svg_ctx_init(svg_ctx *c, const lf_trace_view *t) {
    memset(c, 0, sizeof *c);
    c->t = t;
    c->sc = make_scale(t);
    c->ch = cell_h(t->n_layers);
    c->label = lf_calloc((size_t)t->n_tokens, sizeof *c->label, "token labels");
    c->tip = lf_calloc((size_t)t->n_tokens, sizeof *c->tip, "token tooltips");
    c->name = lf_calloc((size_t)t->k, sizeof *c->name, "adapter names");
    if (!c->label || !c->tip || !c->name) return -1;
    int longest = 1;
    for (int i = 0; i < t->n_tokens; i++) {
        int w = 0;
        c->label[i] = svg_text(t->labels[i], LABEL_CHARS, &w);
        c->tip[i] = svg_text(t->labels[i], TIP_CHARS, NULL);
        if (!c->label[i] || !c->tip[i]) return -1;
        if (w > longest) longest = w;
    }
    for (int i = 0; i < t->k; i++)
        if (!(c->name[i] = svg_text(t->names[i], NAME_CHARS, NULL))) return -1;
    /* about 6.5px per character at 11px, so short tokens waste no space */
    c->label_h = 10 + (13 * longest + 1) / 2;
    c->panel_h = PANEL_TITLE + (long long)t->n_layers * c->ch + c->label_h + PANEL_GAP;
    c->width = MARGIN_LEFT + (long long)t->n_tokens * CELL_W + MARGIN_RIGHT;
    if (c->width < MIN_WIDTH) c->width = MIN_WIDTH;
    return 0;
}

static void hex(char out[8], rgb c) { snprintf(out, 8, "#%02x%02x%02x", c.r, c.g, c.b); }

/* Horizontal colour bar from lo to hi with min, max (and 0) ticks. */
static void svg_colour_bar(lf_atomic *a, const scale *s) {
    int x0 = MARGIN_LEFT, w = BAR_STEPS * BAR_STEP_W;
    out_fmt(a, "<g class=\"colourbar\">\n<text x=\"%d\" y=\"%d\" font-size=\"11\">weight "
               "(one scale for all panels%s)</text>\n<g shape-rendering=\"crispEdges\">\n",
            x0, BAR_Y - 6, s->diverging ? "; white = 0" : "");
    for (int i = 0; i < BAR_STEPS; i++) {
        double v = s->lo + (s->hi - s->lo) * (i + 0.5) / BAR_STEPS;
        char col[8];
        hex(col, colour_of(s, v));
        out_fmt(a, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\"/>\n",
                x0 + i * BAR_STEP_W, BAR_Y, BAR_STEP_W, BAR_H, col);
    }
    out_fmt(a, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" "
               "stroke=\"#444\" stroke-width=\"0.5\"/>\n</g>\n", x0, BAR_Y, w, BAR_H);

    /* ticks: min at the left end, max at the right, 0 where it falls */
    double ticks[3] = {s->lo, s->hi, 0};
    int nt = s->diverging ? 3 : 2;
    for (int i = 0; i < nt; i++) {
        double f = s->hi > s->lo ? (ticks[i] - s->lo) / (s->hi - s->lo) : i;
        double x = x0 + f * w;
        char num[48], xs[48];
        snprintf(num, sizeof num, "%.4g", ticks[i]);
        dot_decimal(num);
        snprintf(xs, sizeof xs, "%.1f", x);
        dot_decimal(xs);
        const char *anchor = i == 0 ? "start" : i == 1 ? "end" : "middle";
        if (i == 2 && (f < 0.12 || f > 0.88)) continue;  /* would overprint min/max */
        out_fmt(a, "<path d=\"M%s %dv4\" stroke=\"#444\"/>\n", xs, BAR_Y + BAR_H);
        out_fmt(a, "<text x=\"%s\" y=\"%d\" font-size=\"11\" text-anchor=\"%s\">%s</text>\n",
                xs, BAR_Y + BAR_H + 15, anchor, num);
    }
    out_str(a, "</g>\n");
}

/* One panel: title, layer labels, the cells, and the token labels below. */
static void svg_panel(lf_atomic *a, const svg_ctx *c, int i, long long y0) {
    const lf_trace_view *t = c->t;
    int L = t->n_layers, ch = c->ch;
    long long gy = y0 + PANEL_TITLE, gh = (long long)L * ch;
    out_fmt(a, "<g class=\"panel\">\n<text x=\"%d\" y=\"%lld\" font-size=\"14\" "
               "font-weight=\"bold\">adapter %d: ", MARGIN_LEFT, y0 + 17, i);
    out_str(a, c->name[i]);
    out_str(a, "</text>\n");

    /* layer axis: layer 0 at the bottom, as in the usual network drawings;
     * labelled on both sides so that a wide trace stays readable when
     * scrolled to its end */
    int step = (10 + ch - 1) / ch;  /* keep labels >= 10px apart */
    long long right = MARGIN_LEFT + (long long)t->n_tokens * CELL_W + 4;
    for (int l = 0; l < L; l += step) {
        long long y = gy + (long long)(L - 1 - l) * ch + ch / 2;
        int fs = ch < 10 ? 9 : 10;
        out_fmt(a, "<text x=\"%d\" y=\"%lld\" font-size=\"%d\" text-anchor=\"end\" "
                   "dominant-baseline=\"central\">L%d</text>\n", MARGIN_LEFT - 4, y, fs, l);
        out_fmt(a, "<text x=\"%lld\" y=\"%lld\" font-size=\"%d\" "
                   "dominant-baseline=\"central\">L%d</text>\n", right, y, fs, l);
    }
    out_fmt(a, "<text transform=\"translate(14,%lld) rotate(-90)\" font-size=\"11\" "
               "text-anchor=\"middle\">layer</text>\n", gy + gh / 2);

    out_str(a, "<g shape-rendering=\"crispEdges\">\n");
    for (int tok = 0; tok < t->n_tokens && !a->failed; tok++) {
        long long x = MARGIN_LEFT + (long long)tok * CELL_W;
        for (int l = 0; l < L; l++) {
            float v = weight(t, tok, l, i);
            char col[8], num[48];
            hex(col, colour_of(&c->sc, v));
            snprintf(num, sizeof num, "%.4f", (double)v);
            dot_decimal(num);
            out_fmt(a, "<rect class=\"cell\" x=\"%lld\" y=\"%lld\" width=\"%d\" height=\"%d\" "
                       "fill=\"%s\"><title>",
                    x, gy + (long long)(L - 1 - l) * ch, CELL_W, ch, col);
            /* texts go separately: they can be longer than out_fmt's buffer */
            out_fmt(a, "token %d '", tok);
            out_str(a, c->tip[tok]);
            out_fmt(a, "' layer %d adapter ", l);
            out_str(a, c->name[i]);
            out_fmt(a, ": %s</title></rect>\n", num);
        }
    }
    out_str(a, "</g>\n");

    /* token labels, read bottom to top, ending just under their column */
    for (int tok = 0; tok < t->n_tokens && !a->failed; tok++) {
        long long x = MARGIN_LEFT + (long long)tok * CELL_W + CELL_W / 2 + LABEL_FONT * 4 / 11;
        out_fmt(a, "<text transform=\"translate(%lld,%lld) rotate(-90)\" font-size=\"%d\" "
                   "text-anchor=\"end\">", x, gy + gh + 5, LABEL_FONT);
        out_str(a, c->label[tok]);
        out_str(a, "</text>\n");
    }
    out_str(a, "</g>\n");
}

int lf_trace_write_svg(const char *path, const lf_trace_view *t) {
    if (check_view(path, t, "SVG") != 0) return -1;
    svg_ctx c;
    if (svg_ctx_init(&c, t) != 0) {
        lf_prefix_error("%s: ", path);
        svg_ctx_free(&c);
        return -1;
    }
    lf_atomic a;
    if (lf_atomic_open(&a, path) != 0) { svg_ctx_free(&c); return -1; }

    long long height = TOP + (long long)t->k * c.panel_h;
    out_fmt(&a, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%lld\" height=\"%lld\" "
                "viewBox=\"0 0 %lld %lld\" font-family=\"DejaVu Sans, Verdana, Arial, sans-serif\">\n",
            c.width, height, c.width, height);
    out_str(&a, "<style>rect.cell:hover{stroke:#000;stroke-width:1.5}</style>\n");
    out_str(&a, "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n");
    out_fmt(&a, "<text x=\"%d\" y=\"24\" font-size=\"17\" font-weight=\"bold\">"
                "LoRA-Flow fusion weights</text>\n", MARGIN_LEFT);
    out_fmt(&a, "<text x=\"%d\" y=\"40\" font-size=\"11\" fill=\"#555\">%d tokens \xC3\x97 %d layers "
                "\xC3\x97 %d adapters; hover a cell for its value</text>\n",
            MARGIN_LEFT, t->n_tokens, t->n_layers, t->k);
    svg_colour_bar(&a, &c.sc);
    for (int i = 0; i < t->k && !a.failed; i++) svg_panel(&a, &c, i, TOP + (long long)i * c.panel_h);
    out_str(&a, "</svg>\n");
    svg_ctx_free(&c);
    return finish(&a, 1);
}
