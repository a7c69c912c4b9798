/* lorahub.c: task-level fusion weights by gradient-free search (the
 * LoRA-Hub baseline of the LoRA-Flow paper). */
#include "loraflow.h"
#include "../core/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define W_MAX 1.5f

static uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* A standard normal draw (Box-Muller) from the state s. */
static double gauss(uint64_t *s) {
    *s = mix64(*s);
    double u = ((*s >> 11) + 0.5) * (1.0 / 9007199254740992.0);
    *s = mix64(*s);
    double v = ((*s >> 11) + 0.5) * (1.0 / 9007199254740992.0);
    return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

static int objective(lf_model *m, const lf_dataset *d, const float *w, int k, float reg, double *out) {
    double loss;
    if (lf_eval_loss(m, NULL, 1.0f, w, d, &loss, NULL) != 0) return -1;
    double l1 = 0;
    for (int i = 0; i < k; i++) l1 += fabs(w[i]);
    *out = loss + reg * l1;
    return 0;
}

int lf_search_static_weights(lf_model *m, const lf_dataset *d, int budget, float reg, uint64_t seed, float *w,
                             double *best_obj, lf_search_callback cb, void *user) {
    const int k = lf_model_n_adapters(m);
    if (k < 1) {
        lf_set_error("the weight search needs adapters");
        return -1;
    }
    if (budget < 1) budget = 1;
    float best[16], cand[16];
    for (int i = 0; i < k; i++) best[i] = fminf(W_MAX, fmaxf(-W_MAX, w[i]));
    double fb;
    if (objective(m, d, best, k, reg, &fb) != 0) return -1;
    int evals = 1;
    if (cb) cb(evals, best, k, fb, user);
    uint64_t s = mix64(seed);
    double sigma = 0.5;
    const int lambda = 4;
    while (evals < budget) {
        int improved = 0;
        float gen_best[16];
        double gen_f = INFINITY;
        for (int j = 0; j < lambda && evals < budget; j++) {
            for (int i = 0; i < k; i++) cand[i] = fminf(W_MAX, fmaxf(-W_MAX, (float)(best[i] + sigma * gauss(&s))));
            double f;
            if (objective(m, d, cand, k, reg, &f) != 0) return -1;
            evals++;
            if (f < gen_f) { gen_f = f; memcpy(gen_best, cand, sizeof(float) * (size_t)k); }
        }
        if (gen_f < fb) { fb = gen_f; memcpy(best, gen_best, sizeof(float) * (size_t)k); improved = 1; }
        /* step-size adaptation: widen after a success, narrow after a failure */
        sigma *= improved ? 1.5 : 0.7;
        if (sigma < 0.01) sigma = 0.01;
        if (cb) cb(evals, best, k, fb, user);
    }
    memcpy(w, best, sizeof(float) * (size_t)k);
    *best_obj = fb;
    return 0;
}
