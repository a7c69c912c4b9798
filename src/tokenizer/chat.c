/* chat.c: the Llama-2 chat template (METHOD.md section 4).
 *
 * The text only: BOS is added as id 1 by lf_tokenize(LF_TOK_BOS), never as
 * the string "<s>", which is why the template here starts at "[INST]". */
#include <string.h>

#include "../core/util.h"

char *lf_chat_prompt(const char *system, const char *user) {
    if (!user) {
        lf_set_error("lf_chat_prompt: user message is NULL");
        return NULL;
    }
    static const char sys_open[] = "[INST] <<SYS>>\n", sys_close[] = "\n<</SYS>>\n\n";
    static const char inst_open[] = "[INST] ", inst_close[] = " [/INST]";
    const char *parts[5];
    int n = 0;
    if (system) {
        parts[n++] = sys_open;
        parts[n++] = system;
        parts[n++] = sys_close;
    } else {
        parts[n++] = inst_open;
    }
    parts[n++] = user;
    parts[n++] = inst_close;
    size_t total = 1; /* the NUL */
    for (int i = 0; i < n; i++)
        if (lf_add_overflow(total, strlen(parts[i]), &total) != 0) {
            lf_set_error("lf_chat_prompt: prompt too long");
            return NULL;
        }
    char *s = lf_malloc(total, "chat prompt");
    if (!s) return NULL;
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        size_t len = strlen(parts[i]);
        memcpy(s + o, parts[i], len);
        o += len;
    }
    s[o] = 0;
    return s;
}
