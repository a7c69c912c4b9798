/* loraflow tokenize: print the ids of a text. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>

static const char usage[] =
    "usage: loraflow tokenize -m MODEL_DIR [--no-bos] [--special] TEXT\n\n"
    "Prints the token ids of TEXT separated by spaces, with BOS (id 1) first.\n"
    "  -m DIR      model folder holding tokenizer.model or tokenizer.json\n"
    "              (or the path of one of those files)\n"
    "  --no-bos    do not prepend BOS\n"
    "  --special   turn the literal strings <s> and </s> into ids 1 and 2\n"
    "              (each piece of text between them gets its own dummy prefix)\n";

int cmd_tokenize(int argc, char **argv) {
    cli_opts o;
    int r = cli_parse(argc, argv, OPT_MODEL | OPT_TOK | OPT_POSITIONAL | OPT_INPUT, &o, usage);
    if (r) return r > 0 ? 0 : 2;
    const char *text = o.positional ? o.positional : o.prompt;
    if (!text) {
        cli_error("tokenize", "no TEXT given (see --help)");
        return 2;
    }
    lf_tokenizer *tok = lf_tokenizer_load_dir(o.model_dir);
    if (!tok) tok = lf_tokenizer_load(o.model_dir);
    if (!tok) {
        cli_error("tokenize", "%s", lf_last_error());
        return 1;
    }
    int32_t *ids;
    int n;
    int flags = (o.no_bos ? 0 : LF_TOK_BOS) | (o.special ? LF_TOK_SPECIAL : 0);
    if (lf_tokenize(tok, text, flags, &ids, &n) != 0) {
        cli_error("tokenize", "%s", lf_last_error());
        lf_tokenizer_free(tok);
        return 1;
    }
    for (int i = 0; i < n; i++) printf("%s%d", i ? " " : "", ids[i]);
    printf("\n");
    free(ids);
    lf_tokenizer_free(tok);
    return 0;
}
