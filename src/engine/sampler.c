/* sampler.c: greedy, temperature, top-k and top-p sampling with a seeded RNG. */
#include "loraflow.h"
#include "../core/util.h"
#include "../tensor/kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct lf_sampler {
    lf_sampling p;
    int V;
    uint64_t state;
    int *idx;     /* candidate ids, sorted by logit */
};

/* xorshift64*: small, fast, and the same stream on every platform. */
static uint64_t rng_next(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

static float rng_uniform(uint64_t *s) { return (float)((rng_next(s) >> 40) * (1.0 / 16777216.0)); }

lf_sampler *lf_sampler_new(const lf_sampling *p, int vocab_size) {
    if (!p->greedy) {
        if (!(p->temperature > 0)) { lf_set_error("temperature must be > 0 (use greedy for 0)"); return NULL; }
        if (!(p->top_p > 0 && p->top_p <= 1)) { lf_set_error("top-p must be in (0, 1], got %g", (double)p->top_p); return NULL; }
        if (p->top_k < 0) { lf_set_error("top-k must be >= 0, got %d", p->top_k); return NULL; }
    }
    lf_sampler *s = lf_calloc(1, sizeof *s, "sampler");
    if (!s) return NULL;
    s->p = *p;
    s->V = vocab_size;
    s->state = p->seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL;
    if (!s->state) s->state = 1;
    s->idx = lf_malloc((size_t)vocab_size * sizeof(int), "sampler");
    if (!s->idx) { free(s); return NULL; }
    return s;
}

void lf_sampler_free(lf_sampler *s) {
    if (!s) return;
    free(s->idx);
    free(s);
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[b]) b = i;
    return b;
}

static const float *sort_logits;
static int by_logit_desc(const void *a, const void *b) {
    float x = sort_logits[*(const int *)a], y = sort_logits[*(const int *)b];
    return (x < y) - (x > y);
}

int32_t lf_sampler_next(lf_sampler *s, float *logits) {
    const int V = s->V;
    if (s->p.greedy) return argmax(logits, V);
    /* Candidates: all, or the top k. */
    int n = V;
    for (int i = 0; i < V; i++) s->idx[i] = i;
    sort_logits = logits;
    qsort(s->idx, (size_t)V, sizeof(int), by_logit_desc);
    if (s->p.top_k > 0 && s->p.top_k < n) n = s->p.top_k;
    /* Softmax over the candidates at temperature T. */
    const float mx = logits[s->idx[0]];
    double sum = 0;
    for (int i = 0; i < n; i++) {
        float e = expf((logits[s->idx[i]] - mx) / s->p.temperature);
        logits[s->idx[i]] = e;
        sum += e;
    }
    /* Nucleus: the smallest prefix whose mass reaches top_p. */
    if (s->p.top_p < 1) {
        double acc = 0;
        for (int i = 0; i < n; i++) {
            acc += logits[s->idx[i]] / sum;
            if (acc >= s->p.top_p) { n = i + 1; break; }
        }
        sum = 0;
        for (int i = 0; i < n; i++) sum += logits[s->idx[i]];
    }
    double r = rng_uniform(&s->state) * sum, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += logits[s->idx[i]];
        if (r < acc) return s->idx[i];
    }
    return s->idx[n - 1];
}
