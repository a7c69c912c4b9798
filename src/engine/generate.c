/* generate.c: prompt processing, then token-by-token decoding with the KV
 * cache, streaming the text as complete UTF-8 characters. */
#include "loraflow.h"
#include "../core/util.h"
#include "../model/model.h"

#include <stdlib.h>
#include <string.h>

/* Length of the longest prefix of buf[0..n) that ends on a UTF-8 character
 * boundary (an incomplete multi-byte sequence at the end is held back). */
static int utf8_complete(const char *buf, int n) {
    int i = n - 1, back = 0;
    while (i >= 0 && back < 4 && ((unsigned char)buf[i] & 0xC0) == 0x80) { i--; back++; }
    if (i < 0) return n;
    unsigned char c = (unsigned char)buf[i];
    int need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return (n - i) < need ? i : n;
}

int lf_generate(lf_session *s, const lf_tokenizer *tok, const int32_t *prompt, int n_prompt,
                const lf_generate_params *p, lf_token_callback cb, void *user,
                int32_t **new_ids, int *n_new) {
    *new_ids = NULL;
    *n_new = 0;
    if (n_prompt <= 0) {
        lf_set_error("generate: empty prompt");
        return -1;
    }
    const int V = lf_model_config(s->m)->vocab_size;
    const int eos = lf_model_config(s->m)->eos_id;
    int max_new = p->max_new_tokens;
    if (max_new < 0) max_new = 0;
    if (max_new > lf_session_max_ctx(s) - lf_session_pos(s) - n_prompt + 1)
        max_new = lf_session_max_ctx(s) - lf_session_pos(s) - n_prompt + 1;
    if (max_new < 0) {
        lf_set_error("the prompt (%d tokens) does not fit the context of %d tokens", n_prompt, lf_session_max_ctx(s));
        return -1;
    }
    float *logits = lf_malloc((size_t)V * sizeof(float), "logits");
    int32_t *ids = lf_malloc((size_t)(max_new > 0 ? max_new : 1) * sizeof(int32_t), "generated ids");
    lf_sampler *sm = lf_sampler_new(&p->sampling, V);
    /* pending: bytes of the text not yet passed to the callback */
    int pcap = 256, plen = 0, started = 0;
    char *pending = lf_malloc((size_t)pcap, "text buffer");
    int rc = -1, n = 0;
    if (!logits || !ids || !sm || !pending) goto out;
    lf_outputs o = {.last_logits = logits};
    if (lf_session_forward(s, prompt, n_prompt, &o) != 0) goto out;
    while (n < max_new) {
        int32_t id = lf_sampler_next(sm, logits);
        ids[n++] = id;
        int stop = p->stop_at_eos && id == eos;
        if (cb && !stop) {
            char piece[256];
            int len = tok ? lf_token_bytes(tok, id, piece, (int)sizeof piece - 1) : 0;
            if (len < 0) len = 0;
            int skip = 0;
            if (!started && len > 0) { started = 1; if (piece[0] == ' ') skip = 1; } /* as lf_detokenize */
            if (plen + len + 1 > pcap) {
                char *np = lf_realloc(pending, (size_t)(pcap = (plen + len + 1) * 2), "text buffer");
                if (!np) goto out;
                pending = np;
            }
            memcpy(pending + plen, piece + skip, (size_t)(len - skip));
            plen += len - skip;
            int ready = utf8_complete(pending, plen);
            char save = pending[ready];
            pending[ready] = 0;
            int want_stop = cb(id, pending, user);
            pending[ready] = save;
            memmove(pending, pending + ready, (size_t)(plen - ready));
            plen -= ready;
            if (want_stop) break;
        }
        if (stop || n >= max_new) break;
        if (lf_session_forward(s, &id, 1, &o) != 0) goto out;
    }
    if (cb && plen > 0) { pending[plen] = 0; cb(-1, pending, user); }
    *new_ids = ids;
    *n_new = n;
    ids = NULL;
    rc = 0;
out:
    free(logits);
    free(ids);
    free(pending);
    lf_sampler_free(sm);
    return rc;
}
