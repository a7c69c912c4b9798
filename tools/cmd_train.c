/* loraflow grad | train-gate | train-lora | train-base: gradients and
 * training (the authors' recipe for LoRA-Flow gates, the same loop for
 * LoRAs and whole models), on one process or data-parallel under mpirun. */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    const char *model_dir, *gate, *data, *dev, *out, *system, *system_file, *task, *format, *checkpoint;
    const char *shape, *config, *tokenizer, *targets, *weights, *ties;
    const char *adapter_name[CLI_MAX_ADAPTERS], *adapter_dir[CLI_MAX_ADAPTERS];
    int n_adapters, init, max_len, threads, rank, resume, checkpoint_every, max_steps, quiet, products;
    float temperature, alpha;
    lf_train_params tp;
} train_opts;

enum { T_INIT = 300, T_DATA, T_DEV, T_SYSTEM, T_SYSFILE, T_TASK, T_MAXLEN, T_LR, T_BATCH, T_ACCUM, T_EPOCHS,
       T_SEED, T_DROPOUT, T_WD, T_FORMAT, T_CKPT, T_CKPT_EVERY, T_RESUME, T_MAXSTEPS, T_RANK, T_ALPHA, T_TARGETS,
       T_SHAPE, T_CONFIG, T_TOKENIZER, T_WARMUP, T_CLIP, T_QUIET, T_TIES, T_PRODUCTS };

static int num_f(const char *s, const char *what, float *out) {
    char *end;
    errno = 0;
    *out = strtof(s, &end);
    if (errno || end == s || *end) {
        fprintf(stderr, "loraflow: %s must be a number, got '%s'\n", what, s);
        return -1;
    }
    return 0;
}

static int num_i(const char *s, const char *what, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "loraflow: %s must be an integer in [%ld, %ld], got '%s'\n", what, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse(int argc, char **argv, train_opts *o, const char *usage) {
    static const struct option lo[] = {
        {"help", no_argument, 0, 'h'}, {"model", required_argument, 0, 'm'}, {"lora", required_argument, 0, 'l'},
        {"gate", required_argument, 0, 'g'}, {"temperature", required_argument, 0, 'T'},
        {"weights", required_argument, 0, 'w'}, {"output", required_argument, 0, 'o'},
        {"threads", required_argument, 0, 't'}, {"init", no_argument, 0, T_INIT}, {"data", required_argument, 0, T_DATA},
        {"dev", required_argument, 0, T_DEV}, {"system", required_argument, 0, T_SYSTEM},
        {"system-prompts", required_argument, 0, T_SYSFILE}, {"task", required_argument, 0, T_TASK},
        {"max-len", required_argument, 0, T_MAXLEN}, {"lr", required_argument, 0, T_LR},
        {"batch", required_argument, 0, T_BATCH}, {"grad-accum", required_argument, 0, T_ACCUM},
        {"epochs", required_argument, 0, T_EPOCHS}, {"seed", required_argument, 0, T_SEED},
        {"dropout", required_argument, 0, T_DROPOUT}, {"weight-decay", required_argument, 0, T_WD},
        {"warmup", required_argument, 0, T_WARMUP}, {"clip", required_argument, 0, T_CLIP},
        {"format", required_argument, 0, T_FORMAT}, {"checkpoint", required_argument, 0, T_CKPT},
        {"checkpoint-every", required_argument, 0, T_CKPT_EVERY}, {"resume", no_argument, 0, T_RESUME},
        {"max-steps", required_argument, 0, T_MAXSTEPS}, {"rank", required_argument, 0, T_RANK},
        {"alpha", required_argument, 0, T_ALPHA}, {"targets", required_argument, 0, T_TARGETS},
        {"shape", required_argument, 0, T_SHAPE}, {"config", required_argument, 0, T_CONFIG},
        {"tokenizer", required_argument, 0, T_TOKENIZER}, {"quiet", no_argument, 0, T_QUIET},
        {"tie-embeddings", required_argument, 0, T_TIES}, {"products", required_argument, 0, T_PRODUCTS},
        {0, 0, 0, 0},
    };
    optind = 1;
    opterr = 0;
    o->products = -1;
    int c;
    while ((c = getopt_long(argc, argv, ":hm:l:g:T:w:o:t:", lo, NULL)) != -1) {
        switch (c) {
        case 'h': fputs(usage, stdout); return 1;
        case 'm': o->model_dir = optarg; break;
        case 'l': {
            char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg || !eq[1] || o->n_adapters >= CLI_MAX_ADAPTERS) {
                fprintf(stderr, "loraflow: -l expects NAME=DIR (at most %d), got '%s'\n", CLI_MAX_ADAPTERS, optarg);
                return -1;
            }
            *eq = 0;
            o->adapter_name[o->n_adapters] = optarg;
            o->adapter_dir[o->n_adapters++] = eq + 1;
            break;
        }
        case 'g': o->gate = optarg; break;
        case 'T': if (num_f(optarg, "-T", &o->temperature) || !(o->temperature > 0)) return -1; break;
        case 'w': o->weights = optarg; break;
        case 'o': o->out = optarg; break;
        case 't': if (num_i(optarg, "-t", 1, 4096, &o->threads)) return -1; break;
        case T_INIT: o->init = 1; break;
        case T_DATA: o->data = optarg; break;
        case T_DEV: o->dev = optarg; break;
        case T_SYSTEM: o->system = optarg; break;
        case T_SYSFILE: o->system_file = optarg; break;
        case T_TASK: o->task = optarg; break;
        case T_MAXLEN: if (num_i(optarg, "--max-len", 2, 1 << 24, &o->max_len)) return -1; break;
        case T_LR: if (num_f(optarg, "--lr", &o->tp.lr)) return -1; break;
        case T_BATCH: if (num_i(optarg, "--batch", 1, 1 << 20, &o->tp.batch)) return -1; break;
        case T_ACCUM: if (num_i(optarg, "--grad-accum", 1, 1 << 20, &o->tp.grad_accum)) return -1; break;
        case T_EPOCHS: if (num_i(optarg, "--epochs", 1, 1 << 20, &o->tp.epochs)) return -1; break;
        case T_SEED: {
            char *end;
            errno = 0;
            o->tp.seed = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end) { fprintf(stderr, "loraflow: --seed must be an integer\n"); return -1; }
            break;
        }
        case T_DROPOUT: if (num_f(optarg, "--dropout", &o->tp.dropout)) return -1; break;
        case T_WD: if (num_f(optarg, "--weight-decay", &o->tp.weight_decay)) return -1; break;
        case T_WARMUP: if (num_f(optarg, "--warmup", &o->tp.warmup)) return -1; break;
        case T_CLIP: if (num_f(optarg, "--clip", &o->tp.clip)) return -1; break;
        case T_FORMAT: o->format = optarg; break;
        case T_CKPT: o->checkpoint = optarg; break;
        case T_CKPT_EVERY: if (num_i(optarg, "--checkpoint-every", 1, 1 << 30, &o->checkpoint_every)) return -1; break;
        case T_RESUME: o->resume = 1; break;
        case T_MAXSTEPS: if (num_i(optarg, "--max-steps", 1, 1 << 30, &o->max_steps)) return -1; break;
        case T_RANK: if (num_i(optarg, "--rank", 1, 65536, &o->rank)) return -1; break;
        case T_ALPHA: if (num_f(optarg, "--alpha", &o->alpha)) return -1; break;
        case T_TARGETS: o->targets = optarg; break;
        case T_SHAPE: o->shape = optarg; break;
        case T_CONFIG: o->config = optarg; break;
        case T_TOKENIZER: o->tokenizer = optarg; break;
        case T_QUIET: o->quiet = 1; break;
        case T_TIES: o->ties = optarg; break;
        case T_PRODUCTS: if ((o->products = cli_parse_products(optarg)) < 0) return -1; break;
        case ':': fprintf(stderr, "loraflow: option %s needs a value (see --help)\n", argv[optind - 1]); return -1;
        default: fprintf(stderr, "loraflow: unknown option %s (see --help)\n", argv[optind - 1]); return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "loraflow: unexpected argument '%s' (see --help)\n", argv[optind]);
        return -1;
    }
    if (o->threads) lf_set_threads(o->threads);
    if (o->products >= 0) cli_set_products(o->products);
    return 0;
}

/* The system prompt: --system TEXT, or --system-prompts FILE --task KEY. */
static int system_prompt(const train_opts *o, char **out) {
    *out = NULL;
    if (o->system && o->system_file) {
        fprintf(stderr, "loraflow: give --system or --system-prompts, not both\n");
        return -1;
    }
    if (o->system_file) {
        if (!o->task) {
            fprintf(stderr, "loraflow: --system-prompts needs --task KEY (e.g. zh_math)\n");
            return -1;
        }
        *out = lf_system_prompt_from_file(o->system_file, o->task);
        if (!*out) { fprintf(stderr, "loraflow: %s\n", lf_last_error()); return -1; }
    } else if (o->system) {
        *out = strdup(o->system);
    }
    return 0;
}

/* Load the data sets (text examples need the tokenizer of tok_dir). */
static int load_data(const train_opts *o, const char *tok_dir, lf_tokenizer **tok, lf_dataset **train,
                     lf_dataset **dev) {
    char *sys = NULL;
    if (system_prompt(o, &sys)) return -1;
    *tok = tok_dir ? lf_tokenizer_load_dir(tok_dir) : NULL;
    if (!*tok && tok_dir) *tok = lf_tokenizer_load(tok_dir);
    /* pre-tokenized files need no tokenizer: a missing one is reported if text lines need it */
    const int max_len = o->max_len ? o->max_len : 4096;
    *train = lf_dataset_load(o->data, *tok, sys, max_len);
    if (!*train) { fprintf(stderr, "loraflow: %s\n", lf_last_error()); free(sys); return -1; }
    if (o->dev) {
        *dev = lf_dataset_load(o->dev, *tok, sys, max_len);
        if (!*dev) { fprintf(stderr, "loraflow: %s\n", lf_last_error()); free(sys); return -1; }
    }
    free(sys);
    return 0;
}

static void fmt_time(double s, char *buf, size_t n) {
    if (!(s >= 0) || s > 1e8) snprintf(buf, n, "?");
    else if (s < 60) snprintf(buf, n, "%.0fs", s);
    else if (s < 3600) snprintf(buf, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(buf, n, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

static void on_progress(const lf_train_report *r, void *user) {
    const train_opts *o = user;
    char eta[32];
    fmt_time(r->eta_s, eta, sizeof eta);
    if (!o->quiet)
        fprintf(stderr, "step %d/%d  epoch %d/%d  loss %.4f  lr %.3g  %.0f tok/s  left %s\n", r->step, r->total_steps,
                r->epoch, r->epochs, r->loss, r->lr, r->tokens_per_s, eta);
    if (r->epoch_end && !isnan(r->dev_loss))
        fprintf(stderr, "epoch %d/%d: dev loss %.4f%s\n", r->epoch, r->epochs, r->dev_loss, r->best ? " (best so far)" : "");
}

static int parse_static(const char *s, float *w, int k) {
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        float v = strtof(p, &end);
        if (end == p || (*end && *end != ',') || n >= k) { n = -1; break; }
        w[n++] = v;
        p = *end ? end + 1 : end;
    }
    if (n != k) {
        fprintf(stderr, "loraflow: -w needs %d comma-separated weights, got '%s'\n", k, s);
        return -1;
    }
    return 0;
}

/* Load -m with its -l adapters. */
static lf_model *load_model(const train_opts *o) {
    lf_model *m = lf_model_load(o->model_dir);
    if (!m) { fprintf(stderr, "loraflow: %s\n", lf_last_error()); return NULL; }
    for (int i = 0; i < o->n_adapters; i++)
        if (lf_model_add_adapter(m, o->adapter_name[i], o->adapter_dir[i]) < 0) {
            fprintf(stderr, "loraflow: %s\n", lf_last_error());
            lf_model_free(m);
            return NULL;
        }
    return m;
}

/* ============================ grad ============================ */

static const char grad_usage[] =
    "usage: loraflow grad -m MODEL -l NAME=DIR ... (-g GATE | --init) [-T X] --data FILE.jsonl -o OUT.safetensors\n\n"
    "Loss and gate gradients of one batch (all lines of FILE), without an update.\n"
    "Writes loss [1] (the mean cross-entropy over every label token of the batch) and\n"
    "the gradient of every gate tensor under its own name\n"
    "(encoder.layers.{i}.lora_fusion_gate.weight, encoder.layers.{i}.weight_bias), F32.\n"
    "  --init                start from the authors' initial gate (W = 0, bias [-0.5, 0.5])\n"
    "  -T X                  gate temperature (default 1.0, as in training)\n"
    "  --system TEXT | --system-prompts FILE --task KEY   system prompt of text examples\n"
    "  --max-len N           cut examples at the tail to N tokens (default 4096)\n"
    CLI_PRODUCTS_USAGE
    "  -t N                  threads\n"
    "Data lines: {query, response} | {data: [q, a]} | {question, answer} | {text} |\n"
    "{input_ids, labels[, attention_mask]} (see the README).\n";

int cmd_grad(int argc, char **argv) {
    train_opts o;
    memset(&o, 0, sizeof o);
    lf_train_defaults(&o.tp);
    int r = parse(argc, argv, &o, grad_usage);
    if (r) return r > 0 ? 0 : 2;
    if (!o.model_dir || !o.data || !o.out || o.n_adapters == 0 || (!o.gate == !o.init)) {
        cli_error("grad", "need -m, -l NAME=DIR (one per gate row), exactly one of -g GATE or --init, --data and -o");
        return 2;
    }
    lf_model *m = load_model(&o);
    if (!m) return 1;
    lf_tokenizer *tok = NULL;
    lf_dataset *train = NULL, *dev = NULL;
    lf_gate *g = NULL;
    int rc = 1;
    if (load_data(&o, o.model_dir, &tok, &train, &dev)) goto out;
    g = o.init ? lf_gate_new_init(m) : lf_gate_load(o.gate, m);
    if (!g) { cli_error("grad", "%s", lf_last_error()); goto out; }
    double loss;
    if (lf_grad_to_file(m, g, o.temperature > 0 ? o.temperature : 1.0f, LF_TRAIN_GATES, train, o.out, &loss) != 0) {
        cli_error("grad", "%s", lf_last_error());
        goto out;
    }
    fprintf(stderr, "loraflow grad: %d examples, loss %.6f, gradients written to %s\n", lf_dataset_size(train), loss, o.out);
    rc = 0;
out:
    lf_gate_free(g);
    lf_dataset_free(train);
    lf_dataset_free(dev);
    lf_tokenizer_free(tok);
    lf_model_free(m);
    return rc;
}

/* ============================ common training flow ============================ */

static const char common_train_help[] =
    "data:\n"
    "  --data FILE.jsonl     training examples; --dev FILE.jsonl: loss each epoch, best weights kept\n"
    "  --system TEXT | --system-prompts FILE --task KEY   system prompt of the chat template\n"
    "  --max-len N           cut examples at the tail to N tokens (default 4096)\n"
    "recipe (defaults: the authors' LoRA-Flow recipe):\n"
    "  --lr X (1e-3)  --batch N (4)  --grad-accum N (1)  --epochs N (5)  --seed S (42)\n"
    "  --dropout P (0.1, LoRA dropout)  --weight-decay X (0.1)  --warmup F (0.2)  --clip X (1.0)\n"
    "  AdamW (0.9, 0.95, eps 1e-5), linear warm-up over F of the steps, then cosine decay\n"
    "checkpoints:\n"
    "  --checkpoint FILE     weights + optimizer state + position, written atomically at every\n"
    "                        epoch end and every --checkpoint-every N steps\n"
    "  --resume              continue from --checkpoint exactly where it stopped\n"
    "  --max-steps N         stop after N steps of the schedule (the schedule stays the full one)\n"
    "speed:\n"
    CLI_PRODUCTS_USAGE
    "  -t N                  threads; under `mpirun -np R` the global batch is split over R ranks\n";

static void print_result(const char *what, const lf_train_result *res, const char *out) {
    fprintf(stderr, "loraflow %s: %d steps, last loss %.4f", what, res->steps_done, res->last_loss);
    if (res->best_epoch) fprintf(stderr, ", best dev loss %.4f (epoch %d)", res->best_dev_loss, res->best_epoch);
    fprintf(stderr, "; wrote %s\n", out);
}

static void fill_train_params(train_opts *o) {
    o->tp.checkpoint = o->checkpoint;
    o->tp.checkpoint_every = o->checkpoint_every;
    o->tp.resume = o->resume;
    o->tp.max_steps = o->max_steps;
    o->tp.progress = on_progress;
    o->tp.user = o;
    if (o->temperature > 0) o->tp.temperature = o->temperature;
}

/* ============================ train-gate ============================ */

static const char gate_usage_head[] =
    "usage: loraflow train-gate -m MODEL -l NAME=DIR ... --data TRAIN.jsonl -o GATE [options]\n\n"
    "Trains the LoRA-Flow fusion gates (base model and LoRAs frozen), starting from the\n"
    "authors' initial gate (or -g GATE), and writes the gate in loraflow's format\n"
    "(safetensors with the adapter names and temperature) or, with --format pt, as a\n"
    "PyTorch file in the authors' layout.\n"
    "  -l NAME=DIR           the adapters, in the order of the gate's rows (language, task)\n"
    "  -g GATE               start from this gate instead of the initial one\n"
    "  -T X                  temperature during training (1.0) and stored in the gate\n"
    "  --format safetensors|pt\n";

int cmd_train_gate(int argc, char **argv) {
    char usage[4096];
    snprintf(usage, sizeof usage, "%s%s", gate_usage_head, common_train_help);
    train_opts o;
    memset(&o, 0, sizeof o);
    lf_train_defaults(&o.tp);
    int r = parse(argc, argv, &o, usage);
    if (r) return r > 0 ? 0 : 2;
    if (!o.model_dir || !o.data || !o.out || o.n_adapters == 0) {
        cli_error("train-gate", "need -m MODEL, -l NAME=DIR for each LoRA, --data and -o (see --help)");
        return 2;
    }
    if (o.format && strcmp(o.format, "pt") && strcmp(o.format, "safetensors")) {
        cli_error("train-gate", "--format must be safetensors or pt");
        return 2;
    }
    if (lf_dist_init(&argc, &argv) != 0) { cli_error("train-gate", "%s", lf_last_error()); return 1; }
    fill_train_params(&o);
    o.tp.what = LF_TRAIN_GATES;
    lf_model *m = load_model(&o);
    lf_tokenizer *tok = NULL;
    lf_dataset *train = NULL, *dev = NULL;
    lf_gate *g = NULL;
    int rc = 1;
    if (!m || load_data(&o, o.model_dir, &tok, &train, &dev)) goto out;
    g = o.gate ? lf_gate_load(o.gate, m) : lf_gate_new_init(m);
    if (!g) { cli_error("train-gate", "%s", lf_last_error()); goto out; }
    if (lf_dist_rank() == 0)
        fprintf(stderr, "loraflow train-gate: %d examples, %d adapters, %d ranks\n", lf_dataset_size(train),
                lf_model_n_adapters(m), lf_dist_size());
    lf_train_result res;
    if (lf_train(m, g, train, dev, &o.tp, &res) != 0) { cli_error("train-gate", "%s", lf_last_error()); goto out; }
    if (lf_dist_rank() == 0) {
        int sr = o.format && !strcmp(o.format, "pt") ? lf_gate_save_pt(g, o.out) : lf_gate_save(g, m, o.tp.temperature, o.out);
        if (sr) { cli_error("train-gate", "%s", lf_last_error()); goto out; }
        print_result("train-gate", &res, o.out);
    }
    rc = 0;
out:
    lf_gate_free(g);
    lf_dataset_free(train);
    lf_dataset_free(dev);
    lf_tokenizer_free(tok);
    lf_model_free(m);
    lf_dist_finalize();
    return rc;
}

/* ============================ train-lora ============================ */

static const char lora_usage_head[] =
    "usage: loraflow train-lora -m MODEL --data TRAIN.jsonl -o ADAPTER_DIR [options]\n\n"
    "Trains a LoRA adapter (base model frozen) and saves it as a PEFT folder.  A new\n"
    "adapter starts as PEFT initialises one (A uniform, B zero); with -l NAME=DIR the\n"
    "given adapters are trained further instead (all of them, fused with -w or 1 each;\n"
    "-o then names the folder of the first).\n"
    "  --rank R (8)  --alpha A (16)  --targets q_proj,k_proj,... (all seven projections)\n"
    "  -l NAME=DIR  -w w1,...,wk   adapters to continue training and their fusion weights\n";

static unsigned parse_targets(const char *s) {
    static const char *names[7] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    if (!s) return 0x7f;
    unsigned mask = 0;
    char *copy = strdup(s), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int found = 0;
        for (int p = 0; p < 7; p++)
            if (!strcmp(t, names[p])) { mask |= 1u << p; found = 1; }
        if (!found) { free(copy); return 0; }
    }
    free(copy);
    return mask;
}

int cmd_train_lora(int argc, char **argv) {
    char usage[4096];
    snprintf(usage, sizeof usage, "%s%s", lora_usage_head, common_train_help);
    train_opts o;
    memset(&o, 0, sizeof o);
    lf_train_defaults(&o.tp);
    o.tp.lr = 1e-4f;
    o.rank = 8;
    o.alpha = 16;
    int r = parse(argc, argv, &o, usage);
    if (r) return r > 0 ? 0 : 2;
    if (!o.model_dir || !o.data || !o.out) {
        cli_error("train-lora", "need -m MODEL, --data and -o ADAPTER_DIR (see --help)");
        return 2;
    }
    unsigned targets = parse_targets(o.targets);
    if (!targets) {
        cli_error("train-lora", "--targets: a comma-separated list of q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj");
        return 2;
    }
    if (lf_dist_init(&argc, &argv) != 0) { cli_error("train-lora", "%s", lf_last_error()); return 1; }
    fill_train_params(&o);
    o.tp.what = LF_TRAIN_LORAS;
    lf_model *m = load_model(&o);
    lf_tokenizer *tok = NULL;
    lf_dataset *train = NULL, *dev = NULL;
    float w[CLI_MAX_ADAPTERS];
    int rc = 1;
    if (!m || load_data(&o, o.model_dir, &tok, &train, &dev)) goto out;
    if (o.n_adapters == 0 &&
        lf_model_new_adapter(m, "lora", o.rank, o.alpha, targets, o.tp.seed) < 0) {
        cli_error("train-lora", "%s", lf_last_error());
        goto out;
    }
    if (o.weights) {
        if (parse_static(o.weights, w, lf_model_n_adapters(m))) goto out;
        o.tp.static_w = w;
    }
    lf_train_result res;
    if (lf_train(m, NULL, train, dev, &o.tp, &res) != 0) { cli_error("train-lora", "%s", lf_last_error()); goto out; }
    if (lf_dist_rank() == 0) {
        if (lf_adapter_save(m, 0, o.out) != 0) { cli_error("train-lora", "%s", lf_last_error()); goto out; }
        print_result("train-lora", &res, o.out);
    }
    rc = 0;
out:
    lf_dataset_free(train);
    lf_dataset_free(dev);
    lf_tokenizer_free(tok);
    lf_model_free(m);
    lf_dist_finalize();
    return rc;
}

/* ============================ train-base ============================ */

static const char base_usage_head[] =
    "usage: loraflow train-base (-m MODEL | --shape NAME --tokenizer TOK) --data TRAIN.jsonl -o MODEL_DIR [options]\n\n"
    "Trains every weight of a Llama model and saves it as a Hugging Face folder\n"
    "(config.json, model.safetensors in F32, the tokenizer files).  -m continues from a\n"
    "model; --shape starts from random weights of a named shape (tiny, fixture, 1b, 7b)\n"
    "or --config CONFIG.json, with the tokenizer folder or file --tokenizer.\n"
    "  --tie-embeddings FILE  with --shape/--config: lines 'DST SRC' of token ids; the\n"
    "                        input embedding of DST starts as a copy of SRC's (tell a\n"
    "                        model trained from scratch that two words mean the same)\n";

/* Read --tie-embeddings: lines "DST SRC" (token ids; blank lines and '#'
 * comments skipped). */
static int read_ties(const char *path, int32_t (**out)[2], int *n) {
    *out = NULL;
    *n = 0;
    FILE *f = fopen(path, "r");
    if (!f) { fprintf(stderr, "loraflow train-base: %s: %s\n", path, strerror(errno)); return -1; }
    char line[256];
    int cap = 0, ln = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        ln++;
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (*p == '#' || *p == '\n' || *p == '\r' || !*p) continue;
        long a, b;
        char *e1, *e2;
        errno = 0;
        a = strtol(p, &e1, 10);
        b = e1 != p ? strtol(e1, &e2, 10) : 0;
        if (errno || e1 == p || e2 == e1 || a < 0 || b < 0 || a > INT32_MAX || b > INT32_MAX ||
            strspn(e2, " \t\r\n") != strlen(e2)) {
            fprintf(stderr, "loraflow train-base: %s:%d: expected two token ids 'DST SRC'\n", path, ln);
            rc = -1;
            break;
        }
        if (*n == cap) {
            cap = cap ? 2 * cap : 256;
            int32_t(*t)[2] = realloc(*out, (size_t)cap * sizeof **out);
            if (!t) { fprintf(stderr, "loraflow train-base: out of memory\n"); rc = -1; break; }
            *out = t;
        }
        (*out)[*n][0] = (int32_t)a;
        (*out)[*n][1] = (int32_t)b;
        (*n)++;
    }
    if (!rc && ferror(f)) { fprintf(stderr, "loraflow train-base: %s: read error\n", path); rc = -1; }
    fclose(f);
    if (rc) { free(*out); *out = NULL; *n = 0; }
    return rc;
}

/* Copy a file atomically (temporary file beside the target, then rename). */
static int copy_file(const char *from, const char *to) {
    FILE *in = fopen(from, "rb");
    if (!in) return -1;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", to, (int)getpid());
    FILE *out = fopen(tmp, "wb");
    if (!out) { fclose(in); return -1; }
    char buf[65536];
    size_t n;
    int ok = 1;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) ok &= fwrite(buf, 1, n, out) == n;
    ok &= !ferror(in);
    fclose(in);
    ok &= fflush(out) == 0 && fsync(fileno(out)) == 0;
    ok &= fclose(out) == 0;
    if (!ok || rename(tmp, to) != 0) { unlink(tmp); return -1; }
    return 0;
}

/* Copy tokenizer.model / tokenizer.json (whichever exist) from src (a folder or a file). */
static int copy_tokenizer(const char *src, const char *dir) {
    static const char *names[] = {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"};
    int copied = 0;
    char a[4200], b[4200];
    for (int i = 0; i < 4; i++) {
        snprintf(a, sizeof a, "%s/%s", src, names[i]);
        snprintf(b, sizeof b, "%s/%s", dir, names[i]);
        if (access(a, R_OK) == 0) {
            if (copy_file(a, b)) return -1;
            copied++;
        }
    }
    if (!copied) { /* src is a tokenizer file */
        const char *base = strrchr(src, '/');
        base = base ? base + 1 : src;
        snprintf(b, sizeof b, "%s/%s", dir, strstr(base, ".json") ? "tokenizer.json" : "tokenizer.model");
        if (copy_file(src, b)) return -1;
    }
    return 0;
}

int cmd_train_base(int argc, char **argv) {
    char usage[4096];
    snprintf(usage, sizeof usage, "%s%s", base_usage_head, common_train_help);
    train_opts o;
    memset(&o, 0, sizeof o);
    lf_train_defaults(&o.tp);
    o.tp.lr = 3e-3f;
    o.tp.dropout = 0;
    o.tp.weight_decay = 0.0f;
    int r = parse(argc, argv, &o, usage);
    if (r) return r > 0 ? 0 : 2;
    if (!o.data || !o.out || (!o.model_dir == !(o.shape || o.config)) || (!o.model_dir && !o.tokenizer)) {
        cli_error("train-base", "need --data, -o, and either -m MODEL or --shape/--config with --tokenizer (see --help)");
        return 2;
    }
    if (o.ties && o.model_dir) {
        cli_error("train-base", "--tie-embeddings sets the random initial weights: use it with --shape/--config, not -m");
        return 2;
    }
    if (lf_dist_init(&argc, &argv) != 0) { cli_error("train-base", "%s", lf_last_error()); return 1; }
    fill_train_params(&o);
    o.tp.what = LF_TRAIN_ALL;
    const char *tok_src = o.model_dir ? o.model_dir : o.tokenizer;
    char init_dir[4200] = "";
    int32_t(*ties)[2] = NULL;
    lf_model *m = NULL;
    lf_tokenizer *tok = NULL;
    lf_dataset *train = NULL, *dev = NULL;
    int rc = 1;
    if (!o.model_dir) {
        /* random initial weights, written beside the output and loaded like any model */
        lf_synth_spec sp;
        memset(&sp, 0, sizeof sp);
        if (o.shape && lf_synth_shape(o.shape, &sp.cfg)) { cli_error("train-base", "%s", lf_last_error()); goto out; }
        if (o.config && lf_config_read(o.config, &sp.cfg)) { cli_error("train-base", "%s", lf_last_error()); goto out; }
        lf_tokenizer *t = lf_tokenizer_load_dir(tok_src);
        if (!t) t = lf_tokenizer_load(tok_src);
        if (!t) { cli_error("train-base", "%s", lf_last_error()); goto out; }
        if (o.shape) sp.cfg.vocab_size = lf_tokenizer_vocab_size(t);
        lf_tokenizer_free(t);
        sp.dtype = LF_F32;
        sp.seed = o.tp.seed;
        if (o.ties && read_ties(o.ties, &ties, &sp.n_tie)) goto out;
        sp.tie = (const int32_t(*)[2])ties;
        snprintf(init_dir, sizeof init_dir, "%s.init", o.out);
        if (lf_synth_model(init_dir, &sp, NULL, NULL)) { /* every rank writes the same bytes, atomically */
            cli_error("train-base", "%s", lf_last_error());
            goto out;
        }
        o.model_dir = init_dir;
    }
    m = load_model(&o);
    if (!m || load_data(&o, tok_src, &tok, &train, &dev)) goto out;
    lf_train_result res;
    if (lf_train(m, NULL, train, dev, &o.tp, &res) != 0) { cli_error("train-base", "%s", lf_last_error()); goto out; }
    if (lf_dist_rank() == 0) {
        if (lf_model_save(m, o.out) != 0 || copy_tokenizer(tok_src, o.out) != 0) {
            cli_error("train-base", "%s", lf_last_error());
            goto out;
        }
        print_result("train-base", &res, o.out);
    }
    rc = 0;
out:
    free(ties);
    lf_dataset_free(train);
    lf_dataset_free(dev);
    lf_tokenizer_free(tok);
    lf_model_free(m);
    lf_dist_finalize();
    return rc;
}
