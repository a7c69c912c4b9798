/* gen.c: the synthetic compositional benchmark of replication/README.md.
 *
 *   gen OUTDIR --seed S [--small]
 *
 * Writes, all derived from (GEN_VERSION, S, sizes):
 *   tokenizer.json     word-level Llama BPE tokenizer (one id per word)
 *   config.json        the base model's shape (LlamaForCausalLM)
 *   lang_words.txt     the L2 vocabulary (scoring: share of L2 words)
 *   l1_words.txt       the L1 vocabulary (language-specific words only)
 *   base.jsonl         pre-training text: L1, some L2, L1/L2 parallel, sums
 *   base_dev.jsonl
 *   lang.jsonl         language LoRA: L2 instructions (story questions), L2 answers
 *   lang_dev.jsonl
 *   task.jsonl         task LoRA: L1 word problems with worked answers
 *   task_dev.jsonl
 *   target_train.jsonl 200 L2 word problems with worked L2 answers (gates)
 *   target_dev.jsonl
 *   test.jsonl         held-out L2 word problems {"question","answer","number"}
 *   ties.tsv           "L2 word id <TAB> its L1 translation's id" per line
 *                      (train-base --tie-embeddings)
 *   sizes.txt          the sizes used (part of the cache key)
 * Training files are pre-tokenized {"input_ids","labels"} in the prompt
 * format "<s>[INST] {question} [/INST] {answer} </s>" (loss on the answer),
 * exactly what `loraflow tokenize` gives for that text, so that a test
 * prompt "[INST] {question} [/INST]" fed as text matches training.
 *
 * L1 is English-like (SVO, articles, plural -s).  L2 has its own generated
 * words (a fixed lexicon, the same for every seed), SOV order, adjectives
 * after nouns, postpositions, no articles and no plural.  Names, numbers
 * and symbols are shared. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define GEN_VERSION 3

/* ============================ randomness ============================ */

static uint64_t rng_s;
static uint64_t rnd64(void) {
    uint64_t z = (rng_s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static int rnd(int n) { return (int)(rnd64() % (uint64_t)n); }
static int rrange(int lo, int hi) { return lo + rnd(hi - lo + 1); }
#define PICK(a) (a)[rnd((int)(sizeof(a) / sizeof((a)[0])))]

/* ============================ lexicon ============================ */

static const char *NAMES_M[] = {"tom", "bob", "sam", "max", "ben", "leo"};
static const char *NAMES_F[] = {"ann", "eve", "lia", "kim", "zoe", "mia"};
static const char *PERSONS[] = {"farmer", "baker", "child", "teacher", "king", "girl", "boy", "cook"};
/* countable objects: singular, plural */
static const char *OBJS[][2] = {{"apple", "apples"}, {"egg", "eggs"}, {"book", "books"}, {"coin", "coins"},
                                {"stone", "stones"}, {"cake", "cakes"}, {"fish", "fishes"}, {"shell", "shells"},
                                {"box", "boxes"}, {"cup", "cups"}};
static const char *ADJS[] = {"red", "big", "small", "old", "green", "happy", "blue", "new"};
static const char *PLACES[] = {"river", "house", "market", "forest", "hill", "garden"};
static const char *VERBS[] = {"sees", "finds", "likes", "carries", "wants", "makes", "paints", "holds"};
static const char *PREPS[] = {"near", "in", "behind"};
static const char *GAIN[] = {"buys", "finds", "gets"};
static const char *LOSE[] = {"gives", "loses", "sells"};
/* the other L1 words (every L1 word gets an L2 word) */
static const char *FUNC[] = {"the", "a", "he", "she", "has", "more", "to", "how", "many", "does", "have",
                             "now", "so", "answer", "is", "where", "what", "who", "then", "and", "sings", "sleeps",
                             "walks", "today"};
/* shared words: symbols and markers (not counted in either language) */
static const char *SHARED[] = {".", ",", "?", "+", "-", "=", "[INST]", "[/INST]"};
#define MAXNUM 40

typedef struct {
    const char *w;
    char l2[16];
} entry;
static entry lex[256];
static int n_lex;

static const char *l2_of(const char *w) {
    for (int i = 0; i < n_lex; i++)
        if (!strcmp(lex[i].w, w)) return lex[i].l2;
    return NULL;
}

static int l2_taken(const char *s) {
    for (int i = 0; i < n_lex; i++)
        if (!strcmp(lex[i].l2, s) || !strcmp(lex[i].w, s)) return 1;
    return 0;
}

static void add_l1(const char *w) {
    if (l2_of(w)) return;
    lex[n_lex].w = w;
    lex[n_lex].l2[0] = 0;
    n_lex++;
}

/* The L2 lexicon: fixed (seed 12345), CV(C) syllables, two or three of them. */
static void build_lexicon(void) {
    for (size_t i = 0; i < sizeof PERSONS / sizeof *PERSONS; i++) add_l1(PERSONS[i]);
    for (size_t i = 0; i < sizeof OBJS / sizeof *OBJS; i++) { add_l1(OBJS[i][0]); add_l1(OBJS[i][1]); }
    for (size_t i = 0; i < sizeof ADJS / sizeof *ADJS; i++) add_l1(ADJS[i]);
    for (size_t i = 0; i < sizeof PLACES / sizeof *PLACES; i++) add_l1(PLACES[i]);
    for (size_t i = 0; i < sizeof VERBS / sizeof *VERBS; i++) add_l1(VERBS[i]);
    for (size_t i = 0; i < sizeof PREPS / sizeof *PREPS; i++) add_l1(PREPS[i]);
    for (size_t i = 0; i < sizeof GAIN / sizeof *GAIN; i++) add_l1(GAIN[i]);
    for (size_t i = 0; i < sizeof LOSE / sizeof *LOSE; i++) add_l1(LOSE[i]);
    for (size_t i = 0; i < sizeof FUNC / sizeof *FUNC; i++) add_l1(FUNC[i]);
    static const char C[] = "bdgklmnprstvz", V[] = "aeiou";
    uint64_t save = rng_s;
    rng_s = 12345;
    for (int i = 0; i < n_lex; i++) {
        /* a plural has the same L2 word as its singular */
        int shared = 0;
        for (size_t o = 0; o < sizeof OBJS / sizeof *OBJS; o++)
            if (!strcmp(lex[i].w, OBJS[o][1])) {
                strcpy(lex[i].l2, l2_of(OBJS[o][0]));
                shared = 1;
            }
        if (shared) continue;
        char s[16];
        do {
            int n = 0, syl = rrange(2, 3);
            for (int k = 0; k < syl; k++) {
                s[n++] = C[rnd(13)];
                s[n++] = V[rnd(5)];
            }
            if (rnd(3) == 0) s[n++] = "nkrs"[rnd(4)];
            s[n] = 0;
        } while (l2_taken(s));
        strcpy(lex[i].l2, s);
    }
    rng_s = save;
}

/* ============================ sentences ============================ */

/* A sentence under construction: up to 96 words. */
typedef struct {
    const char *w[96];
    int n;
} sent;
static void put(sent *s, const char *w) {
    if (s->n < 96) s->w[s->n++] = w;
}
static void put_num(sent *s, int v) {
    static char nums[MAXNUM + 1][12]; /* room for any int: gcc -O1 cannot see i <= 40 */
    if (!nums[0][0])
        for (int i = 0; i <= MAXNUM; i++) snprintf(nums[i], sizeof nums[i], "%d", i);
    put(s, nums[v < 0 ? 0 : v > MAXNUM ? MAXNUM : v]);
}
/* --l2-order: 1 = L2 puts words in its own order (SOV, adjectives after
 * nouns, postpositions); 0 = L2 keeps L1's order and only its words differ */
static int l2_sov = 0;
#define L1ORDER(lang) ((lang) == 1 || !l2_sov)

/* word w in language lang (1 or 2) */
static const char *tr(const char *w, int lang) {
    if (lang == 1) return w;
    const char *t = l2_of(w);
    return t ? t : w;
}
static void putl(sent *s, const char *w, int lang) { put(s, tr(w, lang)); }

/* A noun phrase (person or object, optional adjective). */
typedef struct {
    const char *name, *noun, *adj;
    int num; /* > 0: counted object, plural */
    int plural_idx;
} np;

static void put_np(sent *s, const np *p, int lang, const char *det) {
    if (p->name) { put(s, p->name); return; }
    if (L1ORDER(lang)) {
        if (p->num > 0) put_num(s, p->num);
        else if (det) putl(s, det, lang);
        if (p->adj) putl(s, p->adj, lang);
        putl(s, p->num > 1 ? OBJS[p->plural_idx][1] : p->noun, lang);
    } else {
        if (p->num > 0) put_num(s, p->num);
        putl(s, p->noun, 2);
        if (p->adj) putl(s, p->adj, 2);
    }
}

static np rand_subject(void) {
    np p = {0};
    if (rnd(2)) p.name = rnd(2) ? PICK(NAMES_M) : PICK(NAMES_F);
    else {
        p.noun = PICK(PERSONS);
        if (rnd(2)) p.adj = PICK(ADJS);
    }
    return p;
}

static np rand_object(void) {
    np p = {0};
    int o = rnd((int)(sizeof OBJS / sizeof *OBJS));
    p.noun = OBJS[o][0];
    p.plural_idx = o;
    if (rnd(3) == 0) p.num = rrange(2, 9);
    else if (rnd(2)) p.adj = PICK(ADJS);
    return p;
}

/* "SUBJ VERB OBJ [PREP the PLACE] ." (L1) / "SUBJ [PLACE PREP] OBJ VERB ." (L2) */
static void general_sentence(sent *s, int lang, const np *subj, const char *verb, const np *obj, const char *prep,
                             const char *place) {
    if (L1ORDER(lang)) {
        put_np(s, subj, lang, "the");
        putl(s, verb, lang);
        put_np(s, obj, lang, "a");
        if (prep) { putl(s, prep, lang); putl(s, "the", lang); putl(s, place, lang); }
    } else {
        put_np(s, subj, 2, NULL);
        if (prep) { putl(s, place, 2); putl(s, prep, 2); }
        put_np(s, obj, 2, NULL);
        putl(s, verb, 2);
    }
    put(s, ".");
}

static void rand_general(sent *l1, sent *l2) {
    np subj = rand_subject(), obj = rand_object();
    const char *verb = PICK(VERBS);
    const char *prep = NULL, *place = NULL;
    if (rnd(2)) { prep = PICK(PREPS); place = PICK(PLACES); }
    if (rnd(8) == 0) { /* intransitive */
        const char *v = rnd(2) ? "sings" : rnd(2) ? "sleeps" : "walks";
        put_np(l1, &subj, 1, "the"); put(l1, v);
        if (prep) { put(l1, prep); put(l1, "the"); put(l1, place); }
        if (l2_sov) {
            put_np(l2, &subj, 2, NULL);
            if (prep) { putl(l2, place, 2); putl(l2, prep, 2); }
            putl(l2, v, 2);
        } else {
            for (int i = 0; i < l1->n; i++) putl(l2, l1->w[i], 2);
        }
        put(l1, "."); put(l2, ".");
        return;
    }
    general_sentence(l1, 1, &subj, verb, &obj, prep, place);
    general_sentence(l2, 2, &subj, verb, &obj, prep, place);
}

/* ============================ word problems ============================ */

typedef struct {
    sent q[2], a[2]; /* question and worked answer, per language (index lang-1) */
    int answer;
} problem;

static int n_steps = 1; /* --steps: operations per word problem */

static void rand_problem(problem *p) {
    memset(p, 0, sizeof *p);
    int male = rnd(2);
    const char *name = male ? PICK(NAMES_M) : PICK(NAMES_F);
    const char *other;
    do other = rnd(2) ? PICK(NAMES_M) : PICK(NAMES_F); while (other == name);
    const char *pron = male ? "he" : "she";
    int o = rnd((int)(sizeof OBJS / sizeof *OBJS));
    const char *sing = OBJS[o][0], *plur = OBJS[o][1];
    int a = rrange(2, 12), x = a;
    int steps = n_steps, ops[3], vals[3], res[3];
    const char *verbs[3];
    for (int k = 0; k < steps; k++) {
        int gain = x < 3 ? 1 : x > 14 ? 0 : rnd(2);
        int v = gain ? rrange(1, 6) : rrange(1, x < 6 ? x : 6);
        ops[k] = gain;
        vals[k] = v;
        verbs[k] = gain ? GAIN[rnd(3)] : LOSE[rnd(3)];
        x = gain ? x + v : x - v;
        res[k] = x;
    }
    p->answer = x;
    for (int lang = 1; lang <= 2; lang++) {
        sent *q = &p->q[lang - 1], *an = &p->a[lang - 1];
        /* NAME has A OBJS . */
        if (L1ORDER(lang)) { put(q, name); putl(q, "has", lang); put_num(q, a); putl(q, a == 1 ? sing : plur, lang); }
        else { put(q, name); put_num(q, a); putl(q, sing, 2); putl(q, "has", 2); }
        put(q, ".");
        for (int k = 0; k < steps; k++) {
            const char *v = verbs[k];
            int to = !strcmp(v, "gives");
            if (L1ORDER(lang)) {
                putl(q, pron, lang); putl(q, v, lang); put_num(q, vals[k]);
                if (ops[k]) putl(q, "more", lang);
                if (to) { putl(q, "to", lang); put(q, other); }
            } else {
                putl(q, pron, 2);
                if (to) { put(q, other); putl(q, "to", 2); }
                put_num(q, vals[k]);
                if (ops[k]) putl(q, "more", 2);
                putl(q, v, 2);
            }
            put(q, ".");
        }
        /* how many OBJS does NAME have now ? */
        if (L1ORDER(lang)) {
            putl(q, "how", lang); putl(q, "many", lang); putl(q, plur, lang); putl(q, "does", lang); put(q, name);
            putl(q, "have", lang); putl(q, "now", lang);
        } else {
            put(q, name); putl(q, plur, 2); putl(q, "how", 2); putl(q, "many", 2); putl(q, "now", 2);
            putl(q, "have", 2);
        }
        put(q, "?");
        /* worked answer: "PRON VERB V , so X op V = Y ." per step, then "the answer is Y ." */
        int cur = a;
        for (int k = 0; k < steps; k++) {
            if (L1ORDER(lang)) { putl(an, pron, lang); putl(an, verbs[k], lang); put_num(an, vals[k]); }
            else { putl(an, pron, 2); put_num(an, vals[k]); putl(an, verbs[k], 2); }
            put(an, ",");
            putl(an, "so", lang);
            put_num(an, cur); put(an, ops[k] ? "+" : "-"); put_num(an, vals[k]); put(an, "="); put_num(an, res[k]);
            put(an, ".");
            cur = res[k];
        }
        if (L1ORDER(lang)) { putl(an, "the", lang); putl(an, "answer", lang); putl(an, "is", lang); put_num(an, x); }
        else { putl(an, "answer", 2); put_num(an, x); putl(an, "is", 2); }
        put(an, ".");
    }
}

/* L2 instruction data: a short story, a question about it, the answer
 * restating the relevant sentence (all in L2). */
static void rand_story_qa(sent *q, sent *a, int lang) {
    np subj[3], obj[3];
    const char *verb[3], *prep[3], *place[3];
    int n = rrange(1, 3);
    for (int i = 0; i < n; i++) {
        subj[i] = rand_subject();
        subj[i].name = rnd(2) ? PICK(NAMES_M) : PICK(NAMES_F);
        obj[i] = rand_object();
        verb[i] = PICK(VERBS);
        prep[i] = PICK(PREPS);
        place[i] = PICK(PLACES);
        general_sentence(q, lang, &subj[i], verb[i], &obj[i], prep[i], place[i]);
    }
    int k = rnd(n);
    int kind = rnd(3);
    /* where does NAME VERB ... ? / what does NAME VERB ? / who VERB ... ? */
    if (L1ORDER(lang)) {
        const int g = lang;
        if (kind == 0) { putl(q, "where", g); putl(q, "does", g); put(q, subj[k].name); putl(q, verb[k], g); put_np(q, &obj[k], g, "the"); }
        else if (kind == 1) { putl(q, "what", g); putl(q, "does", g); put(q, subj[k].name); putl(q, verb[k], g); putl(q, prep[k], g); putl(q, "the", g); putl(q, place[k], g); }
        else { putl(q, "who", g); putl(q, verb[k], g); put_np(q, &obj[k], g, "the"); }
    } else {
        if (kind == 0) { put(q, subj[k].name); put_np(q, &obj[k], 2, NULL); putl(q, "where", 2); putl(q, verb[k], 2); }
        else if (kind == 1) { put(q, subj[k].name); putl(q, place[k], 2); putl(q, prep[k], 2); putl(q, "what", 2); putl(q, verb[k], 2); }
        else { putl(q, "who", 2); put_np(q, &obj[k], 2, NULL); putl(q, verb[k], 2); }
    }
    put(q, "?");
    general_sentence(a, lang, &subj[k], verb[k], &obj[k], prep[k], place[k]);
    /* ", so the answer is X ." (L2: ", so answer X is .") */
    a->n--;
    put(a, ",");
    putl(a, "so", lang);
    if (L1ORDER(lang)) { putl(a, "the", lang); putl(a, "answer", lang); putl(a, "is", lang); }
    else putl(a, "answer", 2);
    if (kind == 0) putl(a, place[k], lang);
    else if (kind == 1) putl(a, obj[k].noun, lang);
    else put(a, subj[k].name);
    if (!L1ORDER(lang)) putl(a, "is", 2);
    put(a, ".");
}

/* ============================ tokenizer ============================ */

typedef struct {
    char **piece;
    int n, cap;
} vocab;
static vocab V;
/* open-addressing index piece -> id */
static int *vidx;
static int vidx_cap;

static unsigned hash_str(const char *s) {
    unsigned h = 2166136261u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}
static int vocab_find(const char *p) {
    for (unsigned h = hash_str(p) & (unsigned)(vidx_cap - 1);; h = (h + 1) & (unsigned)(vidx_cap - 1)) {
        if (vidx[h] < 0) return -1;
        if (!strcmp(V.piece[vidx[h]], p)) return vidx[h];
    }
}
static int vocab_add(const char *p) {
    int id = vocab_find(p);
    if (id >= 0) return id;
    if (V.n == V.cap) {
        V.cap = V.cap ? 2 * V.cap : 1024;
        V.piece = realloc(V.piece, (size_t)V.cap * sizeof *V.piece);
    }
    V.piece[V.n] = strdup(p);
    unsigned h = hash_str(p) & (unsigned)(vidx_cap - 1);
    while (vidx[h] >= 0) h = (h + 1) & (unsigned)(vidx_cap - 1);
    vidx[h] = V.n;
    return V.n++;
}

/* merges in order of creation ("left right") */
static char **merges;
static int n_merges, cap_merges;

#define SP "\xe2\x96\x81" /* ▁ */

/* Add "▁word" and every prefix chain "▁" + c1, "▁c1" + c2, ... */
static void add_word(const char *w) {
    char cur[96], ch[2] = {0, 0};
    snprintf(cur, sizeof cur, "%s", SP);
    vocab_add(cur);
    for (const char *p = w; *p; p++) {
        ch[0] = *p;
        vocab_add(ch);
        char next[96];
        size_t l = strlen(cur);
        if (l + 2 > sizeof next) { fprintf(stderr, "gen: word too long\n"); exit(1); }
        memcpy(next, cur, l);
        next[l] = *p;
        next[l + 1] = 0;
        if (vocab_find(next) < 0) {
            vocab_add(next);
            if (n_merges == cap_merges) {
                cap_merges = cap_merges ? 2 * cap_merges : 1024;
                merges = realloc(merges, (size_t)cap_merges * sizeof *merges);
            }
            char m[160];
            snprintf(m, sizeof m, "%s %c", cur, *p);
            merges[n_merges++] = strdup(m);
        }
        strcpy(cur, next);
    }
}

static int word_id(const char *w) {
    char p[96];
    snprintf(p, sizeof p, "%s%s", SP, w);
    int id = vocab_find(p);
    if (id < 0) { fprintf(stderr, "gen: word '%s' not in the vocabulary\n", w); exit(1); }
    return id;
}

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static void build_vocab(void) {
    vidx_cap = 8192;
    vidx = malloc((size_t)vidx_cap * sizeof *vidx);
    for (int i = 0; i < vidx_cap; i++) vidx[i] = -1;
    vocab_add("<unk>");
    vocab_add("<s>");
    vocab_add("</s>");
    /* words of every length first: shorter merges get lower ranks below */
    for (int i = 0; i < n_lex; i++) { add_word(lex[i].w); add_word(lex[i].l2); }
    for (size_t i = 0; i < sizeof NAMES_M / sizeof *NAMES_M; i++) { add_word(NAMES_M[i]); add_word(NAMES_F[i]); }
    for (size_t i = 0; i < sizeof SHARED / sizeof *SHARED; i++) add_word(SHARED[i]);
    for (int i = 0; i <= MAXNUM; i++) { char b[12]; snprintf(b, sizeof b, "%d", i); add_word(b); }
}

static int count_chars(const char *m) { return (int)strlen(m); }
static int merge_cmp(const void *a, const void *b) {
    int la = count_chars(*(char *const *)a), lb = count_chars(*(char *const *)b);
    return la - lb; /* a chain's merges only apply in order anyway; shorter first */
}

static int write_tokenizer(const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    qsort(merges, (size_t)n_merges, sizeof *merges, merge_cmp);
    fprintf(f, "{\"version\":\"1.0\",\"added_tokens\":[");
    for (int i = 0; i < 3; i++)
        fprintf(f, "%s{\"id\":%d,\"content\":\"%s\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,"
                   "\"normalized\":false,\"special\":true}", i ? "," : "", i, V.piece[i]);
    fprintf(f, "],\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"" SP "\"},"
               "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"" SP "\"}]},"
               "\"pre_tokenizer\":null,\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\","
               "\"pattern\":{\"String\":\"" SP "\"},\"content\":\" \"},{\"type\":\"Fuse\"},{\"type\":\"Strip\","
               "\"content\":\" \",\"start\":1,\"stop\":0}]},"
               "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":\"<unk>\",\"fuse_unk\":true,"
               "\"byte_fallback\":false,\"vocab\":{");
    for (int i = 0; i < V.n; i++) {
        fprintf(f, "%s", i ? "," : "");
        json_str(f, V.piece[i]);
        fprintf(f, ":%d", i);
    }
    fprintf(f, "},\"merges\":[");
    for (int i = 0; i < n_merges; i++) {
        fprintf(f, "%s", i ? "," : "");
        json_str(f, merges[i]);
    }
    fprintf(f, "]}}\n");
    return fclose(f);
}

/* ============================ output ============================ */

static FILE *open_out(const char *dir, const char *name) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (!f) { fprintf(stderr, "gen: cannot write %s\n", p); exit(1); }
    return f;
}

static void put_ids(FILE *f, const sent *s, int *first) {
    for (int i = 0; i < s->n; i++) {
        fprintf(f, "%s%d", *first ? "" : ",", word_id(s->w[i]));
        *first = 0;
    }
}

/* {"text"-like} pre-tokenized: BOS + words + EOS, all labels */
static void write_text(FILE *f, const sent *parts, int n) {
    fprintf(f, "{\"input_ids\":[1");
    int first = 0;
    for (int i = 0; i < n; i++) put_ids(f, &parts[i], &first);
    fprintf(f, ",2]}\n");
}

/* chat: <s> [INST] q [/INST] a </s>, labels on a and </s> */
static void write_chat(FILE *f, const sent *q, const sent *a) {
    int ids[256], n = 0, np_ = 0;
    ids[n++] = 1;
    ids[n++] = word_id("[INST]");
    for (int i = 0; i < q->n && n < 250; i++) ids[n++] = word_id(q->w[i]);
    ids[n++] = word_id("[/INST]");
    np_ = n;
    for (int i = 0; i < a->n && n < 254; i++) ids[n++] = word_id(a->w[i]);
    ids[n++] = 2;
    fprintf(f, "{\"input_ids\":[");
    for (int i = 0; i < n; i++) fprintf(f, "%s%d", i ? "," : "", ids[i]);
    fprintf(f, "],\"labels\":[");
    for (int i = 0; i < n; i++) fprintf(f, "%s%d", i ? "," : "", i < np_ ? -100 : ids[i]);
    fprintf(f, "]}\n");
}

static void sent_text(const sent *s, char *buf, size_t cap) {
    size_t o = 0;
    buf[0] = 0;
    for (int i = 0; i < s->n; i++) o += (size_t)snprintf(buf + o, cap - o, "%s%s", i ? " " : "", s->w[i]);
}

/* ============================ main ============================ */

typedef struct {
    int base_docs, base_dev, lang, lang_dev, task, task_dev, target, target_dev, test;
    int hidden, layers, heads, ffn;
} sizes;

/* pre-training mix (--mix): documents of L1 text, L2 text, parallel text
 * and arithmetic, in these proportions; --par-problems: the share of
 * parallel documents that are word problems (question in L1, then in L2) */
static int mix[4] = {7, 3, 3, 7};
static int par_problems = 50; /* percent */
/* --code-switch: percent of L1 text sentences in which every word is
 * replaced by its L2 translation with probability 1/2 (L1 word order only) */
static int code_switch = 0;
/* --task-l2-questions: percent of the task LoRA's examples whose question
 * is posed in L2 (the worked answer stays in L1) */
static int task_l2 = 0;

static void switch_words(sent *s) {
    for (int i = 0; i < s->n; i++)
        if (rnd(2)) s->w[i] = tr(s->w[i], 2);
}

static void make_base_doc(sent *parts, int *np_) {
    const int tot = mix[0] + mix[1] + mix[2] + mix[3];
    int kind = rnd(tot), n = 0;
    kind = kind < mix[0] ? 0 : kind < mix[0] + mix[1] ? 7 : kind < mix[0] + mix[1] + mix[2] ? 10 : 13;
    int len = rrange(2, 5);
    if (kind < 7) { /* L1 text: general sentences and possession stories */
        for (int i = 0; i < len; i++) {
            sent l1 = {0}, l2 = {0};
            if (rnd(3) == 0) { problem p; rand_problem(&p); parts[n++] = p.q[0]; }
            else { rand_general(&l1, &l2); parts[n++] = l1; }
            if (code_switch > 0 && !l2_sov && rnd(100) < code_switch) switch_words(&parts[n - 1]);
        }
    } else if (kind < 10) { /* L2 text */
        for (int i = 0; i < len; i++) {
            sent l1 = {0}, l2 = {0};
            if (rnd(3) == 0) { problem p; rand_problem(&p); parts[n++] = p.q[1]; }
            else { rand_general(&l1, &l2); parts[n++] = l2; }
        }
    } else if (kind < 13) { /* parallel: each L1 sentence (or problem) followed by its L2 translation */
        for (int i = 0; i < len && n + 2 <= 8; i++) {
            sent l1 = {0}, l2 = {0};
            if (rnd(100) < par_problems) {
                problem p;
                rand_problem(&p);
                parts[n++] = p.q[0];
                parts[n++] = p.q[1];
                continue;
            }
            rand_general(&l1, &l2);
            parts[n++] = l1;
            parts[n++] = l2;
        }
    } else { /* sums and differences (L1 knowledge, as a base model knows arithmetic) */
        for (int i = 0; i < 8; i++) {
            sent s = {0};
            int a = rrange(0, 20), b = rrange(1, 6), add = rnd(2);
            if (!add && b > a) { int t = a; a = b; b = t; }
            put_num(&s, a); put(&s, add ? "+" : "-"); put_num(&s, b); put(&s, "="); put_num(&s, add ? a + b : a - b);
            put(&s, ".");
            parts[n++] = s;
        }
    }
    *np_ = n;
}

int main(int argc, char **argv) {
    const char *out = NULL;
    unsigned long long seed = 1;
    int small = 0, o_hidden = 0, o_layers = 0, o_heads = 0, o_docs = 0, o_lora = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--small")) small = 1;
        else if (!strcmp(argv[i], "--version")) { printf("%d\n", GEN_VERSION); return 0; }
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) n_steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--par-problems") && i + 1 < argc) par_problems = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--code-switch") && i + 1 < argc) code_switch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--task-l2-questions") && i + 1 < argc) task_l2 = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--l2-order") && i + 1 < argc) {
            const char *o = argv[++i];
            if (!strcmp(o, "sov")) l2_sov = 1;
            else if (!strcmp(o, "l1")) l2_sov = 0;
            else { fprintf(stderr, "gen: --l2-order expects sov or l1\n"); return 2; }
        }
        else if (!strcmp(argv[i], "--mix") && i + 1 < argc) {
            if (sscanf(argv[++i], "%d,%d,%d,%d", &mix[0], &mix[1], &mix[2], &mix[3]) != 4 || mix[0] < 0 ||
                mix[1] < 0 || mix[2] < 0 || mix[3] < 0 || mix[0] + mix[1] + mix[2] + mix[3] <= 0) {
                fprintf(stderr, "gen: --mix expects four non-negative weights L1,L2,PARALLEL,ARITHMETIC\n");
                return 2;
            }
        }
        else if (!strcmp(argv[i], "--hidden") && i + 1 < argc) o_hidden = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--layers") && i + 1 < argc) o_layers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--heads") && i + 1 < argc) o_heads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--base-docs") && i + 1 < argc) o_docs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--lora-examples") && i + 1 < argc) o_lora = atoi(argv[++i]);
        else if (argv[i][0] != '-' && !out) out = argv[i];
        else {
            fprintf(stderr, "usage: gen OUTDIR [--seed S] [--small] | gen --version\n");
            return 2;
        }
    }
    if (!out) { fprintf(stderr, "usage: gen OUTDIR [--seed S] [--small] | gen --version\n"); return 2; }
    mkdir(out, 0777);
    sizes z = {.base_docs = 8000, .base_dev = 100, .lang = 1500, .lang_dev = 100, .task = 1500, .task_dev = 100,
               .target = 200, .target_dev = 100, .test = 1000, .hidden = 128, .layers = 4, .heads = 4, .ffn = 344};
    if (small) z = (sizes){.base_docs = 200, .base_dev = 10, .lang = 40, .lang_dev = 10, .task = 40, .task_dev = 10,
                           .target = 20, .target_dev = 10, .test = 12, .hidden = 16, .layers = 2, .heads = 2, .ffn = 32};
    if (n_steps < 1 || n_steps > 3) { fprintf(stderr, "gen: --steps must be 1, 2 or 3\n"); return 2; }
    if (o_hidden > 0) { z.hidden = o_hidden; z.ffn = (8 * o_hidden / 3 + 3) / 4 * 4; }
    if (o_layers > 0) z.layers = o_layers;
    if (o_heads > 0) z.heads = o_heads;
    if (o_docs > 0) z.base_docs = o_docs;
    if (o_lora > 0) z.lang = z.task = o_lora;
    build_lexicon();
    build_vocab();
    char p[4096];
    snprintf(p, sizeof p, "%s/tokenizer.json", out);
    if (write_tokenizer(p)) { fprintf(stderr, "gen: cannot write %s\n", p); return 1; }
    FILE *f = open_out(out, "config.json");
    fprintf(f, "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"hidden_act\":\"silu\","
               "\"hidden_size\":%d,\"intermediate_size\":%d,\"num_hidden_layers\":%d,\"num_attention_heads\":%d,"
               "\"num_key_value_heads\":%d,\"vocab_size\":%d,\"max_position_embeddings\":512,\"rms_norm_eps\":1e-05,"
               "\"rope_theta\":10000.0,\"tie_word_embeddings\":false,\"bos_token_id\":1,\"eos_token_id\":2,"
               "\"torch_dtype\":\"float32\"}\n", z.hidden, z.ffn, z.layers, z.heads, z.heads, V.n);
    fclose(f);
    f = open_out(out, "lang_words.txt");
    for (int i = 0; i < n_lex; i++)
        if (!i || strcmp(lex[i].l2, lex[i - 1].l2)) fprintf(f, "%s\n", lex[i].l2);
    fclose(f);
    f = open_out(out, "l1_words.txt");
    for (int i = 0; i < n_lex; i++) fprintf(f, "%s\n", lex[i].w);
    fclose(f);
    /* L2 word id and the id of its L1 translation (a plural's L2 word: its
     * singular), for `train-base --tie-embeddings` */
    f = open_out(out, "ties.tsv");
    for (int i = 0; i < n_lex; i++)
        if (!i || strcmp(lex[i].l2, lex[i - 1].l2)) fprintf(f, "%d\t%d\n", word_id(lex[i].l2), word_id(lex[i].w));
    fclose(f);
    f = open_out(out, "sizes.txt");
    fprintf(f, "gen_version %d\nseed %llu\nbase_docs %d\nlang %d\ntask %d\ntarget %d\ntarget_dev %d\ntest %d\n"
               "hidden %d\nlayers %d\nvocab %d\n", GEN_VERSION, seed, z.base_docs, z.lang, z.task, z.target,
            z.target_dev, z.test, z.hidden, z.layers, V.n);
    fclose(f);

    /* every file draws from its own stream of (seed, file) */
    sent parts[16];
    int np_;
    static const char *bname[2] = {"base.jsonl", "base_dev.jsonl"};
    for (int d = 0; d < 2; d++) {
        rng_s = seed * 1000003ULL + 11 + (uint64_t)d;
        f = open_out(out, bname[d]);
        for (int i = 0; i < (d ? z.base_dev : z.base_docs); i++) {
            memset(parts, 0, sizeof parts);
            make_base_doc(parts, &np_);
            write_text(f, parts, np_);
        }
        fclose(f);
    }
    static const char *lname[2] = {"lang.jsonl", "lang_dev.jsonl"};
    for (int d = 0; d < 2; d++) {
        rng_s = seed * 1000003ULL + 21 + (uint64_t)d;
        f = open_out(out, lname[d]);
        for (int i = 0; i < (d ? z.lang_dev : z.lang); i++) {
            sent q = {0}, a = {0};
            rand_story_qa(&q, &a, 2);
            write_chat(f, &q, &a);
        }
        fclose(f);
    }
    static const char *tname[2] = {"task.jsonl", "task_dev.jsonl"};
    for (int d = 0; d < 2; d++) {
        rng_s = seed * 1000003ULL + 31 + (uint64_t)d;
        f = open_out(out, tname[d]);
        for (int i = 0; i < (d ? z.task_dev : z.task); i++) {
            problem pr;
            rand_problem(&pr);
            const int l2q = task_l2 > 0 && rnd(100) < task_l2; /* --task-l2-questions */
            write_chat(f, &pr.q[l2q], &pr.a[0]);
        }
        fclose(f);
    }
    static const char *gname[2] = {"target_train.jsonl", "target_dev.jsonl"};
    for (int d = 0; d < 2; d++) {
        rng_s = seed * 1000003ULL + 41 + (uint64_t)d;
        f = open_out(out, gname[d]);
        for (int i = 0; i < (d ? z.target_dev : z.target); i++) {
            problem pr;
            rand_problem(&pr);
            write_chat(f, &pr.q[1], &pr.a[1]);
        }
        fclose(f);
    }
    rng_s = seed * 1000003ULL + 51;
    f = open_out(out, "test.jsonl");
    char qb[2048], ab[2048];
    problem pr;
    for (int i = 0; i < z.test; i++) {
        rand_problem(&pr);
        sent_text(&pr.q[1], qb, sizeof qb);
        sent_text(&pr.a[1], ab, sizeof ab);
        fprintf(f, "{\"question\":");
        json_str(f, qb);
        fprintf(f, ",\"answer\":");
        json_str(f, ab);
        fprintf(f, ",\"number\":%d}\n", pr.answer);
    }
    fclose(f);
    /* the skill's ceiling: the same kind of problems in L1 (task LoRA alone) */
    rng_s = seed * 1000003ULL + 52;
    f = open_out(out, "l1_test.jsonl");
    for (int i = 0; i < (small ? 10 : 200); i++) {
        rand_problem(&pr);
        sent_text(&pr.q[0], qb, sizeof qb);
        sent_text(&pr.a[0], ab, sizeof ab);
        fprintf(f, "{\"question\":");
        json_str(f, qb);
        fprintf(f, ",\"answer\":");
        json_str(f, ab);
        fprintf(f, ",\"number\":%d}\n", pr.answer);
    }
    fclose(f);
    /* one example of each kind, for the README */
    rng_s = seed * 1000003ULL + 61;
    f = open_out(out, "examples.txt");
    rand_problem(&pr);
    for (int l = 0; l < 2; l++) {
        sent_text(&pr.q[l], qb, sizeof qb);
        sent_text(&pr.a[l], ab, sizeof ab);
        fprintf(f, "L%d problem: %s\nL%d answer:  %s\n", l + 1, qb, l + 1, ab);
    }
    sent q = {0}, a = {0};
    rand_story_qa(&q, &a, 2);
    sent_text(&q, qb, sizeof qb);
    sent_text(&a, ab, sizeof ab);
    fprintf(f, "L2 instruction: %s\nL2 response:    %s\n", qb, ab);
    fclose(f);
    return 0;
}
