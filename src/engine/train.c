/* train.c: the training loop (the authors' recipe for LoRA-Flow gates, and
 * the same loop for LoRAs and whole models): shuffled epochs, gradient
 * accumulation, AdamW, warm-up + cosine schedule, global-norm clipping,
 * dev-set selection, atomic checkpoints with exact resume, and data
 * parallelism over MPI.
 *
 * Determinism: the order of epoch e is a permutation drawn from (seed, e),
 * the dropout masks of an example from (seed, step, example), and a step's
 * loss is normalised by the label tokens of the whole global batch.  So a
 * resumed run, or one split over N ranks, follows the same trajectory as an
 * uninterrupted single-process run (up to float32 rounding of the
 * all-reduce). */
#include "loraflow.h"
#include "dist.h"
#include "../core/util.h"
#include "../io/tensorset.h"
#include "../model/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

_Static_assert(LF_TRAIN_GATES == LF_TRAIN_GATE && LF_TRAIN_LORAS == LF_TRAIN_LORA && LF_TRAIN_ALL == LF_TRAIN_BASE,
               "the public and internal trainable-set flags agree");

void lf_train_defaults(lf_train_params *p) {
    memset(p, 0, sizeof *p);
    p->what = LF_TRAIN_GATES;
    p->lr = 1e-3f;
    p->batch = 4;
    p->grad_accum = 1;
    p->epochs = 5;
    p->seed = 42;
    p->dropout = 0.1f;
    p->weight_decay = 0.1f;
    p->beta1 = 0.9f;
    p->beta2 = 0.95f;
    p->eps = 1e-5f;
    p->clip = 1.0f;
    p->warmup = 0.2f;
    p->temperature = 1.0f;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* The order of epoch e: Fisher-Yates driven by (seed, e). */
static void epoch_order(int *order, int n, uint64_t seed, int e) {
    for (int i = 0; i < n; i++) order[i] = i;
    uint64_t s = mix64(seed ^ mix64((uint64_t)e + 1));
    for (int i = n - 1; i > 0; i--) {
        s = mix64(s);
        int j = (int)(s % (uint64_t)(i + 1));
        int t = order[i]; order[i] = order[j]; order[j] = t;
    }
}

/* Linear warm-up then cosine decay to 0 (the learning rate of step s, 0-based). */
static double lr_at(const lf_train_params *p, int s, int total) {
    int warm = (int)(p->warmup * total);
    if (s < warm) return p->lr * (double)s / warm;
    if (total <= warm) return p->lr;
    double progress = (double)(s - warm) / (double)(total - warm);
    return p->lr * 0.5 * (1.0 + cos(M_PI * progress));
}

static void fill_mode(lf_train_mode *md, const lf_model *m, const lf_gate *gate, const lf_train_params *p) {
    memset(md, 0, sizeof *md);
    const int k = lf_model_n_adapters(m);
    if (gate) {
        md->mode = LF_FUSE_GATE;
        md->gate = gate;
        md->temperature = p->temperature > 0 ? p->temperature : 1.0f;
    } else if (k > 0) {
        md->mode = LF_FUSE_STATIC;
        for (int i = 0; i < k; i++) md->static_w[i] = p->static_w ? p->static_w[i] : 1.0f;
    } else {
        md->mode = LF_FUSE_BASE;
    }
}

/* ============================ evaluation ============================ */

static int eval_mode(lf_model *m, const lf_train_mode *md, const lf_dataset *d, double *loss, int *n_tokens) {
    double sums[2] = {0, 0};
    const int rank = lf_dist_rank(), size = lf_dist_size();
    for (int i = rank; i < lf_dataset_size(d); i += size) {
        const lf_example *ex = lf_dataset_get(d, i);
        double ls;
        int nt;
        if (lf_train_sequence(m, NULL, md, ex->ids, ex->labels, ex->n, 1.0f, &ls, &nt, NULL) != 0) return -1;
        sums[0] += ls;
        sums[1] += nt;
    }
    if (lf_dist_allreduce_f64(sums, 2) != 0) return -1;
    *loss = sums[1] > 0 ? sums[0] / sums[1] : NAN;
    if (n_tokens) *n_tokens = (int)sums[1];
    return 0;
}

int lf_eval_loss(lf_model *m, const lf_gate *gate, float temperature, const float *static_w, const lf_dataset *d,
                 double *loss, int *n_tokens) {
    lf_train_params p;
    lf_train_defaults(&p);
    p.temperature = temperature;
    p.static_w = static_w;
    lf_train_mode md;
    fill_mode(&md, m, gate, &p);
    return eval_mode(m, &md, d, loss, n_tokens);
}

/* ============================ optimizer ============================ */

typedef struct {
    lf_trainable *tr;
    float **mom, **vel;  /* AdamW moments per parameter */
    float **best;        /* best dev weights per parameter (or NULL) */
    int n;
} optim;

static void optim_free(optim *o) {
    for (int i = 0; i < o->n; i++) {
        free(o->mom ? o->mom[i] : NULL);
        free(o->vel ? o->vel[i] : NULL);
        free(o->best ? o->best[i] : NULL);
    }
    free(o->mom);
    free(o->vel);
    free(o->best);
    memset(o, 0, sizeof *o);
}

static int optim_init(optim *o, lf_trainable *tr, int want_best) {
    memset(o, 0, sizeof *o);
    o->tr = tr;
    o->n = lf_trainable_count(tr);
    o->mom = lf_calloc((size_t)o->n, sizeof *o->mom, "optimizer");
    o->vel = lf_calloc((size_t)o->n, sizeof *o->vel, "optimizer");
    o->best = lf_calloc((size_t)o->n, sizeof *o->best, "optimizer");
    if (!o->mom || !o->vel || !o->best) return -1;
    for (int i = 0; i < o->n; i++) {
        lf_param *p = lf_trainable_param(tr, i);
        o->mom[i] = lf_calloc(p->n, sizeof(float), "AdamW first moment");
        o->vel[i] = lf_calloc(p->n, sizeof(float), "AdamW second moment");
        if (!o->mom[i] || !o->vel[i]) return -1;
        if (want_best) {
            o->best[i] = lf_malloc(p->n * sizeof(float), "best weights");
            if (!o->best[i]) return -1;
            memcpy(o->best[i], p->w, p->n * sizeof(float));
        }
    }
    return 0;
}

/* Clip the global gradient norm to p->clip, then one AdamW step (t is the
 * 1-based step count for bias correction).  Returns the norm before clipping. */
static double optim_step(optim *o, const lf_train_params *p, double lr, int t) {
    double ss = 0;
    for (int i = 0; i < o->n; i++) {
        const lf_param *q = lf_trainable_param(o->tr, i);
        for (size_t j = 0; j < q->n; j++) ss += (double)q->g[j] * q->g[j];
    }
    const double norm = sqrt(ss);
    const double gscale = p->clip > 0 && norm > p->clip ? p->clip / (norm + 1e-6) : 1.0;
    const double bc1 = 1.0 - pow(p->beta1, t), bc2 = 1.0 - pow(p->beta2, t);
    for (int i = 0; i < o->n; i++) {
        lf_param *q = lf_trainable_param(o->tr, i);
        float *m1 = o->mom[i], *m2 = o->vel[i];
        const double wd = q->decay ? p->weight_decay : 0.0;
        for (size_t j = 0; j < q->n; j++) {
            const double g = q->g[j] * gscale;
            m1[j] = (float)(p->beta1 * m1[j] + (1 - p->beta1) * g);
            m2[j] = (float)(p->beta2 * m2[j] + (1 - p->beta2) * g * g);
            const double mh = m1[j] / bc1, vh = m2[j] / bc2;
            q->w[j] = (float)(q->w[j] - lr * (mh / (sqrt(vh) + p->eps) + wd * q->w[j]));
        }
    }
    return norm;
}

/* ============================ checkpoints ============================ */

/* Everything that must agree between a checkpoint and the run resuming it. */
static void run_signature(char *buf, size_t n, const lf_train_params *p, int n_examples, int n_params) {
    snprintf(buf, n, "what=%d lr=%.9g batch=%d accum=%d epochs=%d seed=%llu dropout=%.9g wd=%.9g betas=%.9g,%.9g "
             "eps=%.9g clip=%.9g warmup=%.9g T=%.9g examples=%d params=%d",
             p->what, (double)p->lr, p->batch, p->grad_accum, p->epochs, (unsigned long long)p->seed,
             (double)p->dropout, (double)p->weight_decay, (double)p->beta1, (double)p->beta2, (double)p->eps,
             (double)p->clip, (double)p->warmup, (double)p->temperature, n_examples, n_params);
}

static int save_checkpoint(const char *path, optim *o, const lf_train_params *p, int n_examples, int step,
                           double best_dev, int best_epoch) {
    const int per = o->best[0] ? 4 : 3;
    lf_tensor *t = lf_calloc((size_t)o->n * per, sizeof *t, "checkpoint");
    char (*names)[224] = lf_calloc((size_t)o->n * per, 224, "checkpoint");
    if (!t || !names) { free(t); free(names); return -1; }
    int k = 0;
    for (int i = 0; i < o->n; i++) {
        const lf_param *q = lf_trainable_param(o->tr, i);
        const float *src[4] = {q->w, o->mom[i], o->vel[i], o->best[i]};
        static const char *pre[4] = {"param.", "adam_m.", "adam_v.", "best."};
        for (int j = 0; j < per; j++) {
            snprintf(names[k], 224, "%s%s", pre[j], q->name);
            t[k] = (lf_tensor){.name = names[k], .dtype = LF_F32, .ndim = 1, .shape = {(int64_t)q->n},
                               .data = src[j], .nbytes = q->n * sizeof(float)};
            k++;
        }
    }
    char sig[512], sstep[32], sbest[48], sbe[16];
    run_signature(sig, sizeof sig, p, n_examples, o->n);
    snprintf(sstep, sizeof sstep, "%d", step);
    snprintf(sbest, sizeof sbest, "%.17g", best_dev);
    snprintf(sbe, sizeof sbe, "%d", best_epoch);
    lf_kv meta[] = {{"format", "pt"}, {"loraflow", "train-checkpoint"}, {"run", sig}, {"step", sstep},
                    {"best_dev_loss", sbest}, {"best_epoch", sbe}};
    int rc = lf_safetensors_write(path, t, k, meta, 6);
    free(t);
    free(names);
    return rc;
}

static int load_checkpoint(const char *path, optim *o, const lf_train_params *p, int n_examples, int *step,
                           double *best_dev, int *best_epoch) {
    lf_tensorset ts;
    lf_tensorset_init(&ts);
    if (lf_safetensors_read(path, &ts) != 0) return -1;
    int rc = -1;
    char sig[512], name[224];
    run_signature(sig, sizeof sig, p, n_examples, o->n);
    const char *kind = lf_tensorset_meta(&ts, "loraflow"), *run = lf_tensorset_meta(&ts, "run");
    const char *st = lf_tensorset_meta(&ts, "step");
    if (!kind || strcmp(kind, "train-checkpoint") || !run || !st) {
        lf_set_error("%s: not a loraflow training checkpoint", path);
        goto out;
    }
    if (strcmp(run, sig)) {
        lf_set_error("%s: the checkpoint belongs to another run (%s); this run is (%s)", path, run, sig);
        goto out;
    }
    *step = atoi(st);
    *best_dev = lf_tensorset_meta(&ts, "best_dev_loss") ? strtod(lf_tensorset_meta(&ts, "best_dev_loss"), NULL) : NAN;
    *best_epoch = lf_tensorset_meta(&ts, "best_epoch") ? atoi(lf_tensorset_meta(&ts, "best_epoch")) : 0;
    for (int i = 0; i < o->n; i++) {
        lf_param *q = lf_trainable_param(o->tr, i);
        float *dst[4] = {q->w, o->mom[i], o->vel[i], o->best[i]};
        static const char *pre[4] = {"param.", "adam_m.", "adam_v.", "best."};
        for (int j = 0; j < 4; j++) {
            if (!dst[j]) continue;
            snprintf(name, sizeof name, "%s%s", pre[j], q->name);
            const lf_tensor *t = lf_tensorset_find(&ts, name);
            if (!t || t->dtype != LF_F32 || t->nbytes != q->n * sizeof(float)) {
                lf_set_error("%s: tensor '%s' missing or of the wrong size", path, name);
                goto out;
            }
            memcpy(dst[j], t->data, t->nbytes);
        }
    }
    rc = 0;
out:
    lf_tensorset_free(&ts);
    return rc;
}

/* ============================ the loop ============================ */

int lf_train(lf_model *m, lf_gate *gate, const lf_dataset *train, const lf_dataset *dev, const lf_train_params *p,
             lf_train_result *res) {
    memset(res, 0, sizeof *res);
    res->best_dev_loss = NAN;
    if (p->batch < 1 || p->grad_accum < 1 || p->epochs < 1 || !(p->lr > 0) || p->dropout < 0 || p->dropout >= 1) {
        lf_set_error("training: need batch >= 1, grad-accum >= 1, epochs >= 1, lr > 0 and 0 <= dropout < 1");
        return -1;
    }
    if ((p->what & LF_TRAIN_GATES) && !gate) {
        lf_set_error("training the gates needs a gate (-g GATE or --init)");
        return -1;
    }
    const int N = lf_dataset_size(train), gb = p->batch * p->grad_accum;
    const int spe = (N + gb - 1) / gb, total = spe * p->epochs;
    const int rank = lf_dist_rank(), size = lf_dist_size();
    lf_train_mode md;
    fill_mode(&md, m, gate, p);
    md.dropout = p->dropout;
    lf_train_mode eval_md = md;
    eval_md.dropout = 0;
    lf_trainable *tr = lf_trainable_new(m, gate, p->what);
    if (!tr) return -1;
    lf_trainable_prepack(tr); /* every step multiplies by the same frozen weights */
    optim o = {0};
    int *order = lf_malloc((size_t)N * sizeof(int), "data order");
    int rc = -1, step = 0, best_epoch = 0;
    double best_dev = NAN;
    if (!order || optim_init(&o, tr, dev != NULL) != 0) goto out;
    if (p->resume) {
        if (!p->checkpoint) {
            lf_set_error("--resume needs a checkpoint file");
            goto out;
        }
        if (load_checkpoint(p->checkpoint, &o, p, N, &step, &best_dev, &best_epoch) != 0) goto out;
    }
    const int stop = p->max_steps > 0 && p->max_steps < total ? p->max_steps : total;
    double t_start = now_s();
    int steps_timed = 0;
    long tokens_timed = 0;
    for (; step < stop; step++) {
        const int epoch = step / spe, first = (step % spe) * gb;
        const int last = first + gb < N ? first + gb : N;
        epoch_order(order, N, p->seed, epoch);
        /* the loss is the mean over the label tokens of the whole global batch */
        int n_labels = 0;
        long n_tok = 0;
        for (int i = first; i < last; i++) {
            n_labels += lf_example_label_count(lf_dataset_get(train, order[i]));
            n_tok += lf_dataset_get(train, order[i])->n;
        }
        lf_trainable_zero_grad(tr);
        double loss = 0;
        for (int i = first + rank; i < last; i += size) {
            const lf_example *ex = lf_dataset_get(train, order[i]);
            double ls;
            int nt;
            md.seed = mix64(p->seed ^ mix64(((uint64_t)step << 32) ^ (uint64_t)order[i]));
            if (lf_train_sequence(m, tr, &md, ex->ids, ex->labels, ex->n, n_labels ? 1.0f / n_labels : 0.0f, &ls, &nt,
                                  NULL) != 0)
                goto out;
            loss += ls;
        }
        if (size > 1) {
            for (int i = 0; i < lf_trainable_count(tr); i++) {
                lf_param *q = lf_trainable_param(tr, i);
                if (lf_dist_allreduce_f32(q->g, q->n) != 0) goto out;
            }
            if (lf_dist_allreduce_f64(&loss, 1) != 0) goto out;
        }
        const double lr = lr_at(p, step, total);
        optim_step(&o, p, lr, step + 1);
        steps_timed++;
        tokens_timed += n_tok;
        const double el = now_s() - t_start;
        lf_train_report r = {.step = step + 1, .total_steps = total, .epoch = epoch + 1, .epochs = p->epochs,
                             .loss = n_labels ? loss / n_labels : NAN, .lr = lr,
                             .tokens_per_s = el > 0 ? tokens_timed / el : 0,
                             .eta_s = el / steps_timed * (stop - step - 1), .dev_loss = NAN};
        res->last_loss = r.loss;
        const int epoch_end = (step + 1) % spe == 0;
        if (epoch_end && dev) {
            double dl;
            if (eval_mode(m, &eval_md, dev, &dl, NULL) != 0) goto out;
            r.epoch_end = 1;
            r.dev_loss = dl;
            if (isnan(best_dev) || dl < best_dev) {
                best_dev = dl;
                best_epoch = epoch + 1;
                r.best = 1;
                for (int i = 0; i < o.n; i++) {
                    lf_param *q = lf_trainable_param(tr, i);
                    memcpy(o.best[i], q->w, q->n * sizeof(float));
                }
            }
        } else if (epoch_end) {
            r.epoch_end = 1;
        }
        if (p->progress && rank == 0) p->progress(&r, p->user);
        const int ck = p->checkpoint && ((p->checkpoint_every > 0 && (step + 1) % p->checkpoint_every == 0) ||
                                         epoch_end || step + 1 == stop);
        if (ck && rank == 0 && save_checkpoint(p->checkpoint, &o, p, N, step + 1, best_dev, best_epoch) != 0) goto out;
    }
    /* leave the best dev weights in place */
    if (dev && !isnan(best_dev))
        for (int i = 0; i < o.n; i++) {
            lf_param *q = lf_trainable_param(tr, i);
            memcpy(q->w, o.best[i], q->n * sizeof(float));
        }
    res->steps_done = step;
    res->best_dev_loss = best_dev;
    res->best_epoch = best_epoch;
    rc = 0;
out:
    optim_free(&o);
    free(order);
    if (p->what & LF_TRAIN_ALL) {
        /* keep the trained float32 weights: detach them from the trainer */
        rc = rc == 0 ? lf_trainable_keep_weights(tr) : rc;
    }
    lf_trainable_free(tr);
    return rc;
}

/* ============================ one batch, no update ============================ */

int lf_grad_to_file(lf_model *m, lf_gate *gate, float temperature, int what, const lf_dataset *d, const char *path,
                    double *loss) {
    lf_train_params p;
    lf_train_defaults(&p);
    p.temperature = temperature;
    p.what = what;
    lf_train_mode md;
    fill_mode(&md, m, gate, &p);
    lf_trainable *tr = lf_trainable_new(m, gate, what);
    if (!tr) return -1;
    if (lf_dataset_size(d) > 1) lf_trainable_prepack(tr); /* converted once, not once per example */
    int n_labels = 0, rc = -1;
    for (int i = 0; i < lf_dataset_size(d); i++) n_labels += lf_example_label_count(lf_dataset_get(d, i));
    double sum = 0;
    lf_tensor *t = NULL;
    for (int i = 0; i < lf_dataset_size(d); i++) {
        const lf_example *ex = lf_dataset_get(d, i);
        double ls;
        int nt;
        if (lf_train_sequence(m, tr, &md, ex->ids, ex->labels, ex->n, n_labels ? 1.0f / n_labels : 0.0f, &ls, &nt,
                              NULL) != 0)
            goto out;
        sum += ls;
    }
    float lossf = n_labels ? (float)(sum / n_labels) : NAN;
    *loss = n_labels ? sum / n_labels : NAN;
    const int n = lf_trainable_count(tr);
    t = lf_calloc((size_t)n + 1, sizeof *t, "gradient tensors");
    if (!t) goto out;
    t[0] = (lf_tensor){.name = "loss", .dtype = LF_F32, .ndim = 1, .shape = {1}, .data = &lossf, .nbytes = 4};
    for (int i = 0; i < n; i++) {
        lf_param *q = lf_trainable_param(tr, i);
        t[i + 1] = (lf_tensor){.name = q->name, .dtype = LF_F32, .ndim = q->ndim, .shape = {q->shape[0], q->shape[1]},
                               .data = q->g, .nbytes = q->n * sizeof(float)};
    }
    char nl[16];
    snprintf(nl, sizeof nl, "%d", n_labels);
    lf_kv meta[] = {{"format", "pt"}, {"loraflow", "gradients"}, {"label_tokens", nl}};
    rc = lf_safetensors_write(path, t, n + 1, meta, 3);
out:
    free(t);
    lf_trainable_free(tr);
    return rc;
}
