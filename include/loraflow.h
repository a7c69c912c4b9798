/* loraflow.h: the public interface of libloraflow.
 *
 * loraflow runs Llama-family models from Hugging Face folders on a CPU and
 * fuses several PEFT LoRA adapters per token and per layer with LoRA-Flow
 * fusion gates (Wang et al., ACL 2024), or with static weights.
 *
 * Conventions: functions that can fail return -1 or NULL and leave a message
 * for lf_last_error() (thread-local) that names the file, the tensor or field,
 * and what was expected versus found.  Arrays are row-major float32 unless
 * stated otherwise.  Nothing here prints. */
#ifndef LORAFLOW_H
#define LORAFLOW_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LORAFLOW_VERSION "0.1.0"

/* ============================ basics ============================ */

typedef enum { LF_F32 = 0, LF_F16, LF_BF16, LF_I64, LF_I32 } lf_dtype;

const char *lf_last_error(void);

/* Worker threads of the compute kernels (default: all cores). */
void lf_set_threads(int n);
int lf_get_threads(void);

/* Precision of the products of many tokens with the model's weights and
 * adapters (prompt processing, and training's forward and backward passes;
 * decoding one token at a time and the attention products are float32
 * whatever the mode). */
#define LF_PRODUCTS_F32 0  /* float32 arithmetic (the default) */
#define LF_PRODUCTS_BF16 1 /* both factors rounded to bfloat16 (8 significant bits), the sums kept in
                              float32 (as PyTorch's bfloat16 autocast): about twice the multiply rate
                              on CPUs with AVX512-BF16; on CPUs with AMX, the products AMX takes stay
                              float32-accurate */
/* Set the mode for this process; returns the mode now in effect
 * (LF_PRODUCTS_F32 where the CPU lacks AVX512-BF16), or -1 for an unknown
 * mode.  LORAFLOW_PRODUCTS=bf16 sets the initial mode. */
int lf_set_products(int mode);
int lf_get_products(void);

/* The environment variables the library reads: name, the values it
 * accepts ("a|b|c"; unset or empty: the default) and what they set. */
typedef struct {
    const char *name, *values, *what;
} lf_env_var;
const lf_env_var *lf_env_vars(int *n);
/* 0 when each of them is unset, empty or one of its values; else -1, and
 * lf_last_error() names the variable, its value and the values it takes.
 * lf_model_load_opts (and lf_model_load) fail on such a value rather than
 * run with the default in its place. */
int lf_env_check(void);

/* A tensor to write (lf_write_safetensors). */
typedef struct {
    const char *name;
    lf_dtype dtype;
    int ndim;
    int64_t shape[8];
    const void *data;
} lf_tensor_desc;

/* Write tensors to a safetensors file atomically (temporary file beside the
 * target, flushed, then renamed).  meta: NULL or n_meta key/value pairs
 * (keys at even, values at odd indices) stored under __metadata__. */
int lf_write_safetensors(const char *path, const lf_tensor_desc *t, int n,
                         const char *const *meta, int n_meta);

/* ============================ config ============================ */

typedef struct {
    int hidden_size;          /* H */
    int intermediate_size;    /* I */
    int n_layers;             /* L */
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int vocab_size;           /* V */
    int max_position_embeddings;
    float rms_norm_eps;
    float rope_theta;
    int tie_word_embeddings;
    int bos_id, eos_id;
} lf_config;

/* Read a LlamaForCausalLM config.json. */
int lf_config_read(const char *path, lf_config *c);

/* ============================ tokenizer ============================ */

typedef struct lf_tokenizer lf_tokenizer;

/* Load a Llama SentencePiece BPE tokenizer from tokenizer.model (protobuf)
 * or tokenizer.json (Hugging Face); both give the same ids. */
lf_tokenizer *lf_tokenizer_load(const char *path);
/* From a model folder: tokenizer.model if present, else tokenizer.json. */
lf_tokenizer *lf_tokenizer_load_dir(const char *dir);
void lf_tokenizer_free(lf_tokenizer *t);
int lf_tokenizer_vocab_size(const lf_tokenizer *t);
/* The piece of an id as stored in the vocabulary ("▁the", "<0x0A>"), or NULL. */
const char *lf_tokenizer_piece(const lf_tokenizer *t, int32_t id);

#define LF_TOK_BOS 1     /* prepend <s> (id 1) */
#define LF_TOK_EOS 2     /* append </s> (id 2) */
#define LF_TOK_SPECIAL 4 /* the literal strings <s> and </s> in the text become ids 1 and 2;
                            each text piece between them is encoded on its own, with its own
                            dummy prefix (as the Hugging Face slow tokenizer does) */

/* Encode UTF-8 text.  *ids is malloc'd (free it); *n its length. */
int lf_tokenize(const lf_tokenizer *t, const char *text, int flags, int32_t **ids, int *n);
/* Decode ids to UTF-8 text: control tokens are skipped, byte pieces become
 * bytes, "▁" becomes a space, and one leading space is dropped.  malloc'd. */
char *lf_detokenize(const lf_tokenizer *t, const int32_t *ids, int n);
/* Raw bytes of one token as it appears inside a longer text ("▁the" gives
 * " the", "<0x0A>" gives "\n", control tokens give "").  Writes up to cap
 * bytes into buf and returns the byte count (or -1 for a bad id). */
int lf_token_bytes(const lf_tokenizer *t, int32_t id, char *buf, int cap);

/* The Llama-2 chat template of METHOD.md section 4 (without BOS):
 * "[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST]", or
 * "[INST] {user} [/INST]" when system is NULL.  malloc'd. */
char *lf_chat_prompt(const char *system, const char *user);

/* ============================ model ============================ */

typedef struct lf_model lf_model;

/* Load a Hugging Face Llama folder: config.json and model.safetensors,
 * sharded safetensors with model.safetensors.index.json, or pytorch_model.bin
 * (+ index).  Weights stay memory-mapped (F32, F16 or BF16); computation is
 * float32. */
lf_model *lf_model_load(const char *dir);
void lf_model_free(lf_model *m);

/* Where the weights live while the model runs. */
#define LF_PLACE_AUTO 0 /* copy when the weights fit in the available memory with room to spare, else map */
#define LF_PLACE_MMAP 1 /* read-only memory map of the files (4 KiB pages, shared with the page cache) */
#define LF_PLACE_COPY 2 /* anonymous memory with transparent huge pages, filled once at load */
/* Base-weight formats chosen at load. */
#define LF_QUANT_NONE 0 /* as stored (F32, F16 or BF16) */
#define LF_QUANT_Q8 1   /* 8-bit codes with one F16 scale per block of 32 values (implies a copy) */
/* How a copy (LF_PLACE_COPY) lays out the projections' weights. */
#define LF_LAYOUT_AUTO 0 /* the projections and an untied lm_head of more than 2048 columns in column blocks
                            (a decoding pass keeps its part of x in L1), the others row-major; prompts and
                            training give the same sums either way */
#define LF_LAYOUT_ROWS 1 /* row-major, as stored */

typedef struct {
    int placement; /* LF_PLACE_* */
    int quantize;  /* LF_QUANT_*: the projections and lm_head (embeddings, norms and adapters stay as stored) */
    /* LF_QUANT_*: the adapters attached later (lf_model_add_adapter), as
     * the fused products read them: each projection's stacked lora_A and
     * lora_B (independent of quantize) */
    int quantize_adapters;
    int layout; /* LF_LAYOUT_* */
} lf_load_options;

/* The defaults: LF_PLACE_AUTO, nothing quantised, LF_LAYOUT_AUTO, unless
 * the environment variables LORAFLOW_PLACEMENT=mmap|copy,
 * LORAFLOW_QUANTIZE=q8, LORAFLOW_QUANTIZE_ADAPTERS=q8 and
 * LORAFLOW_LAYOUT=rows say otherwise (a value lf_env_check refuses leaves
 * the default here, and makes lf_model_load_opts fail). */
void lf_load_options_default(lf_load_options *o);
/* lf_model_load with options (NULL: lf_load_options_default's); fails
 * when lf_env_check does. */
lf_model *lf_model_load_opts(const char *dir, const lf_load_options *o);
/* LF_PLACE_MMAP or LF_PLACE_COPY: where the weights ended up. */
int lf_model_placement(const lf_model *m);
/* Bytes of weights one decoding step reads: every projection of every
 * layer and lm_head (one embedding row aside), plus the stacked adapters
 * when with_adapters. */
size_t lf_model_decode_bytes(const lf_model *m, int with_adapters);
const lf_config *lf_model_config(const lf_model *m);

typedef struct {
    int n_tensors;
    int64_t n_params;
    size_t weight_bytes;      /* bytes of all weight tensors as stored */
    int n_by_dtype[5];        /* tensor count per lf_dtype */
    const char *weights_file; /* first weight file */
} lf_model_info;
void lf_model_get_info(const lf_model *m, lf_model_info *info);
/* Bytes of KV cache and activations for a context of ctx tokens. */
size_t lf_model_runtime_bytes(const lf_model *m, int ctx);

/* ====================== adapters and fusion ====================== */

/* Attach a PEFT LoRA folder (adapter_config.json + adapter_model.safetensors
 * or adapter_model.bin).  Adapters keep the order they were added in; that is
 * the order of the gate's rows.  Returns the adapter index or -1. */
int lf_model_add_adapter(lf_model *m, const char *name, const char *dir);
int lf_model_n_adapters(const lf_model *m);
const char *lf_model_adapter_name(const lf_model *m, int i);

/* A LoRA-Flow fusion gate: per layer W_gate [k, H] and bias b [k]. */
typedef struct lf_gate lf_gate;
/* Read a gate from the authors' .pt files or loraflow's safetensors gate file.
 * k must equal the model's adapter count, the layer count and H must match. */
lf_gate *lf_gate_load(const char *path, const lf_model *m);
/* The authors' initial gate: weights zero, bias [-0.5, 0.5] for k = 2
 * (generally: evenly spaced from -0.5 to 0.5). */
lf_gate *lf_gate_new_init(const lf_model *m);
void lf_gate_free(lf_gate *g);
int lf_gate_k(const lf_gate *g);
/* Temperature stored in the gate file, or 0 if none. */
float lf_gate_stored_temperature(const lf_gate *g);
/* Save in loraflow's gate format (safetensors + metadata). */
int lf_gate_save(const lf_gate *g, const lf_model *m, float temperature, const char *path);
/* Save as a PyTorch zip checkpoint in the authors' layout. */
int lf_gate_save_pt(const lf_gate *g, const char *path);

/* ============================ sessions ============================ */

/* A session holds a KV cache and the fusion mode of one sequence. */
typedef struct lf_session lf_session;

lf_session *lf_session_new(lf_model *m, int max_ctx);
void lf_session_free(lf_session *s);
/* Base model: no adapter contributes (the default). */
void lf_session_set_base(lf_session *s);
/* Static fusion: the same weights w[0..k-1] for every token and layer. */
int lf_session_set_static(lf_session *s, const float *w, int k);
/* LoRA-Flow: weights from the gate with temperature T.  The session keeps a
 * pointer: the gate must outlive it. */
int lf_session_set_gate(lf_session *s, const lf_gate *g, float T);
/* Forget all tokens (the fusion mode stays). */
void lf_session_reset(lf_session *s);
int lf_session_pos(const lf_session *s);
int lf_session_max_ctx(const lf_session *s);

/* What lf_session_forward should write; NULL members are not computed.
 * n = number of tokens fed, L layers, k adapters. */
typedef struct {
    float *logits;         /* [n, V]: logits of every fed position */
    float *last_logits;    /* [V]: logits of the last fed position */
    float *hidden_final;   /* [n, H]: output of the final norm */
    float *layer_inputs;   /* [L+1, n, H]: residual stream entering each layer, then the last layer's output */
    float *fusion_weights; /* [L, n, k]: the weights w used (k = adapters) */
    float *gate_logits;    /* [L, n, k]: x W_gate^T before / T (gate mode only) */
} lf_outputs;

/* Feed n tokens after the ones already in the cache. */
int lf_session_forward(lf_session *s, const int32_t *ids, int n, const lf_outputs *out);

/* Record the fusion weights of every token fed from now on (trace). */
void lf_session_set_trace(lf_session *s, int on);
/* Trace so far: [n_tokens][L][k] floats, owned by the session. */
const float *lf_session_trace(const lf_session *s, int *n_tokens);

/* ============================ generation ============================ */

typedef struct {
    int greedy;          /* argmax (ignores the rest) */
    float temperature;   /* > 0 */
    float top_p;         /* 0 < p <= 1 (1 = off) */
    int top_k;           /* 0 = off */
    uint64_t seed;
} lf_sampling;

typedef struct lf_sampler lf_sampler;
lf_sampler *lf_sampler_new(const lf_sampling *p, int vocab_size);
void lf_sampler_free(lf_sampler *s);
/* Choose the next id from logits (logits may be overwritten). */
int32_t lf_sampler_next(lf_sampler *s, float *logits);

/* Called with every new token and the UTF-8 text it completes (possibly
 * empty while a multi-byte character is incomplete).  Return non-zero to stop. */
typedef int (*lf_token_callback)(int32_t id, const char *text, void *user);

typedef struct {
    int max_new_tokens;  /* -n */
    int stop_at_eos;     /* stop after </s> (it is not printed) */
    lf_sampling sampling;
} lf_generate_params;

/* Feed the prompt, then sample up to max_new_tokens.  *new_ids (malloc'd)
 * receives the generated ids, including a final EOS if one was produced. */
int lf_generate(lf_session *s, const lf_tokenizer *tok, const int32_t *prompt, int n_prompt,
                const lf_generate_params *p, lf_token_callback cb, void *user,
                int32_t **new_ids, int *n_new);

/* ============================ synthetic models ============================ */

/* A random-weight Llama in Hugging Face layout, with PEFT adapters and a
 * LoRA-Flow gate: for demonstrations, tests and benchmarks of any shape. */
typedef struct {
    lf_config cfg;
    lf_dtype dtype;      /* base weights: LF_F32, LF_F16 or LF_BF16 */
    int n_adapters;      /* PEFT folders lora_0 .. lora_{n-1} (0 = none) */
    int rank;            /* LoRA rank r */
    float alpha;         /* lora_alpha */
    lf_dtype adapter_dtype;
    int gate;            /* also write gate.safetensors (random, for the adapters) */
    uint64_t seed;
    /* or NULL: n_tie pairs (dst, src) of token ids; the input embedding of
     * dst starts as a copy of src's (a from-scratch model told that two
     * words mean the same; the other values are as without it) */
    const int32_t (*tie)[2];
    int n_tie;
} lf_synth_spec;

/* Named shapes: "tiny" (H 256, 4 layers, vocab 512), "fixture" (the
 * tiny-loraflow shape), "1b" (TinyLlama-1.1B), "7b" (Llama-2-7B). */
int lf_synth_shape(const char *name, lf_config *cfg);
/* Write dir/config.json, model.safetensors, a byte-level tokenizer.json,
 * lora_i/ folders and gate.safetensors.  Streams the weights (a 7B model
 * never sits in memory).  progress (may be NULL) is called with the bytes
 * written so far and the total. */
int lf_synth_model(const char *dir, const lf_synth_spec *spec,
                   void (*progress)(size_t done, size_t total, void *user), void *user);

/* ============================ training data ============================ */

/* One training sequence: ids [n] and labels [n] (-100 where no loss;
 * position t is trained to predict labels[t + 1]). */
typedef struct {
    int32_t *ids, *labels;
    int n;
} lf_example;

typedef struct lf_dataset lf_dataset;

/* The step-by-step suffix the authors' trainer appends to every prompt. */
#define LF_STEP_BY_STEP "\xe8\xae\xa9\xe6\x88\x91\xe4\xbb\xac\xe4\xb8\x80\xe6\xad\xa5\xe4\xb8\x80\xe6\xad\xa5\xe5\x9c\xb0\xe6\x80\x9d\xe8\x80\x83\xe3\x80\x82"

/* Build one example as the authors' data builder does (METHOD.md section 4):
 * prompt "<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{question} [/INST]" + LF_STEP_BY_STEP
 * (or "<s>[INST] {question} [/INST]" + suffix without a system prompt),
 * response "{answer} </s>", each piece tokenized with LF_TOK_SPECIAL;
 * labels -100 on the prompt; cut at the tail to max_len tokens. */
int lf_example_build(const lf_tokenizer *tok, const char *system, const char *question, const char *answer,
                     int max_len, lf_example *ex);
void lf_example_free(lf_example *ex);

/* Read a JSONL file, one example per line, in any of these forms:
 *   {"query": Q, "response": A}            (the authors' math files)
 *   {"data": [Q, A]}                       (the authors' code files)
 *   {"question": Q, "answer": A}           (dev files with worked answers)
 *   {"text": T}                            (plain text: BOS + T + EOS, every token a label)
 *   {"input_ids": [...], "labels": [...]}  (pre-tokenized; an "attention_mask" drops padding)
 * A line may carry its own "system" (a string, or null for none) instead of
 * the file-wide one.  tok may be NULL for pre-tokenized files.  Errors name
 * the file and line. */
lf_dataset *lf_dataset_load(const char *path, const lf_tokenizer *tok, const char *system, int max_len);
int lf_dataset_size(const lf_dataset *d);
const lf_example *lf_dataset_get(const lf_dataset *d, int i);
/* Number of label tokens (positions with a loss) of example i. */
int lf_example_label_count(const lf_example *ex);
void lf_dataset_free(lf_dataset *d);
/* A new data set holding copies of the first n examples of d. */
lf_dataset *lf_dataset_head(const lf_dataset *d, int n);

/* The system prompt stored under key in a JSON object file such as the
 * authors' system_prompts.json (malloc'd). */
char *lf_system_prompt_from_file(const char *path, const char *key);

/* ============================ training ============================ */

/* What a training run updates (the rest stays frozen). */
#define LF_TRAIN_GATES 1 /* the LoRA-Flow gates (W_gate and bias of every layer) */
#define LF_TRAIN_LORAS 2 /* the A and B matrices of the attached adapters */
#define LF_TRAIN_ALL 4   /* every weight of the base model */

typedef struct {
    int step, total_steps, epoch, epochs;
    double loss;           /* mean cross-entropy of this step's batch */
    double lr;
    double tokens_per_s;
    double eta_s;          /* estimated seconds left */
    int epoch_end;         /* this report closes an epoch */
    double dev_loss;       /* at an epoch end with a dev set, else NaN */
    int best;              /* the dev loss is the best so far */
} lf_train_report;

typedef void (*lf_train_callback)(const lf_train_report *r, void *user);

typedef struct {
    int what;              /* LF_TRAIN_GATES, LF_TRAIN_LORAS or LF_TRAIN_ALL */
    float lr;              /* peak learning rate (1e-3) */
    int batch;             /* examples per micro-batch (4) */
    int grad_accum;        /* micro-batches per optimizer step (1) */
    int epochs;            /* passes over the data (5) */
    uint64_t seed;         /* data order and dropout masks */
    float dropout;         /* LoRA dropout during training (0.1) */
    float weight_decay;    /* AdamW (0.1) */
    float beta1, beta2, eps; /* AdamW (0.9, 0.95, 1e-5) */
    float clip;            /* global gradient norm clip (1.0; 0 = off) */
    float warmup;          /* share of the steps with linear warm-up (0.2), then cosine decay */
    float temperature;     /* gate temperature during training (1.0) */
    const float *static_w; /* fusion weights when no gate is trained (NULL: 1 for every adapter) */
    const char *checkpoint;/* checkpoint file (NULL: none), written atomically */
    int checkpoint_every;  /* steps between checkpoints (0: at epoch ends only) */
    int resume;            /* continue from the checkpoint file */
    int max_steps;         /* stop after this many steps of the schedule (0: run to the end) */
    lf_train_callback progress;
    void *user;
} lf_train_params;

/* The authors' recipe (METHOD.md section 5) for training the gates. */
void lf_train_defaults(lf_train_params *p);

typedef struct {
    int steps_done;
    double last_loss;
    double best_dev_loss;  /* NaN without a dev set */
    int best_epoch;        /* 1-based, 0 without a dev set */
} lf_train_result;

/* Train on train (and evaluate on dev each epoch, keeping the best weights:
 * at the end the model/gate hold the best dev weights, or the last ones
 * without dev).  gate: the gate to train (LF_TRAIN_GATES) or to fuse with
 * while training LoRAs or weights (may be NULL).  Under MPI (lf_dist_init)
 * every rank calls this with the same data and the global batch is split
 * over the ranks. */
int lf_train(lf_model *m, lf_gate *gate, const lf_dataset *train, const lf_dataset *dev,
             const lf_train_params *p, lf_train_result *res);

/* Mean cross-entropy over the label tokens of a data set (no dropout). */
int lf_eval_loss(lf_model *m, const lf_gate *gate, float temperature, const float *static_w,
                 const lf_dataset *d, double *loss, int *n_tokens);

/* Loss and gradients of one batch (every example of d), no update: the
 * gradient of the mean cross-entropy with respect to every tensor of the
 * chosen set, written to a safetensors file as F32 under the tensors' own
 * names, with "loss" [1]. */
int lf_grad_to_file(lf_model *m, lf_gate *gate, float temperature, int what, const lf_dataset *d,
                    const char *path, double *loss);

/* Attach a new adapter with fresh weights (A uniform in +-1/sqrt(in), B zero,
 * as PEFT initialises them) on the projections in target_mask (bit p = the
 * p-th of q,k,v,o,gate,up,down). */
int lf_model_new_adapter(lf_model *m, const char *name, int r, float alpha, unsigned target_mask, uint64_t seed);
/* Save adapter i as a PEFT folder (adapter_config.json + adapter_model.safetensors). */
int lf_adapter_save(const lf_model *m, int i, const char *dir);
/* Save the model as a Hugging Face folder (config.json + model.safetensors, F32). */
int lf_model_save(const lf_model *m, const char *dir);

/* Data parallelism over MPI (a no-op single process without Open MPI or
 * outside mpirun). */
int lf_dist_init(int *argc, char ***argv);
int lf_dist_rank(void);
int lf_dist_size(void);
void lf_dist_finalize(void);

/* ============================ task-level weights ============================ */

/* LoRA-Hub's baseline: one weight per adapter for a whole task, found by a
 * gradient-free search (a seeded (1+lambda) evolution strategy with step-size
 * adaptation, inside [-1.5, 1.5]^k) minimising the mean cross-entropy on d
 * plus reg * sum |w_i| (LoRA-Hub's L1 term), in budget loss evaluations.
 * w: in = the starting point, out = the best weights found. */
typedef void (*lf_search_callback)(int evals, const float *w, int k, double objective, void *user);
int lf_search_static_weights(lf_model *m, const lf_dataset *d, int budget, float reg, uint64_t seed, float *w,
                             double *objective, lf_search_callback cb, void *user);

/* ============================ evaluation ============================ */

/* The final number of a math answer: the first number after the last
 * "The answer is" (or its Chinese, Russian and Spanish forms) when there is
 * one, else the last number of the text.  Normalised: thousands separators
 * and a trailing ".0" removed ("1,234.50" gives "1234.5").  Returns 0, or -1
 * when the text holds no number. */
int lf_math_extract(const char *text, char *buf, size_t n);
/* Whether two answers are the same number (normalised, compared as values). */
int lf_math_equal(const char *a, const char *b);

/* A word list (whitespace-separated file) for "which language is this?". */
typedef struct lf_wordset lf_wordset;
lf_wordset *lf_wordset_load(const char *path);
void lf_wordset_free(lf_wordset *w);
/* Share of the words of text (split on whitespace, punctuation stripped,
 * lowercased, numbers ignored) found in the list; -1 when it has no words. */
double lf_wordset_share(const lf_wordset *w, const char *text);

/* Run a Python program (a solution followed by its tests) with python3 in a
 * subprocess: isolated mode, no network where the system allows it (a new
 * network namespace), killed after timeout_s.  Returns 1 if it exits 0, 0 if
 * it fails (why says how), -1 if python3 is not available. */
int lf_code_check(const char *program, double timeout_s, char *why, size_t n);

/* ============================ traces ============================ */

/* The fusion weights of n tokens at every layer, as lf_session_trace gives
 * them: w[(t * n_layers + l) * k + i].  labels[t]: the text of token t;
 * names[i]: the name of adapter i. */
typedef struct {
    int n_tokens, n_layers, k;
    const float *w;
    const char *const *labels;
    const char *const *names;
} lf_trace_view;

/* CSV: token,position,text,layer,<name_0>,...  (one row per token and layer). */
int lf_trace_write_csv(const char *path, const lf_trace_view *t);
/* JSON: {"adapters": [...], "tokens": [{"text": ..., "weights": [[...k] x L]}]}. */
int lf_trace_write_json(const char *path, const lf_trace_view *t);
/* SVG heatmap: tokens along x (labelled), layers along y, one panel per
 * adapter, with a colour scale. */
int lf_trace_write_svg(const char *path, const lf_trace_view *t);

#ifdef __cplusplus
}
#endif
#endif
