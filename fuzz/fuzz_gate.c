/* fuzz_gate: a LoRA-Flow gate file (the authors' .pt or loraflow's
 * safetensors gate) through lf_gate_load, against a model description with
 * the fixture's shape (3 layers, H 64, adapters "lang" and "task": the
 * shape of shared/fixtures/tiny-loraflow/gate.pt) or, when the input's
 * first tensor says so, the small synthetic model's (2 layers, H 16). */
#include "fuzz.h"
#include "../src/model/model.h"

static int fd = -1;
static lf_model fixture_like, small;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    /* lf_gate_load reads only the config, the adapter count and names. */
    static char n0[] = "lang", n1[] = "task", s0[] = "lora_0", s1[] = "lora_1";
    fixture_like.cfg.n_layers = 3;
    fixture_like.cfg.hidden_size = 64;
    fixture_like.n_adapters = 2;
    fixture_like.adapters[0].name = n0;
    fixture_like.adapters[1].name = n1;
    small.cfg.n_layers = 2;
    small.cfg.hidden_size = 16;
    small.n_adapters = 2;
    small.adapters[0].name = s0;
    small.adapters[1].name = s1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    fuzz_memfile(&fd, path, sizeof path, data, size);
    for (int m = 0; m < 2; m++) {
        const lf_model *mod = m ? &small : &fixture_like;
        lf_set_error("%s", "");
        lf_gate *g = lf_gate_load(path, mod);
        if (g) {
            FUZZ_CHECK(g->k == 2 && g->L == mod->cfg.n_layers && g->H == mod->cfg.hidden_size);
            lf_gate_free(g);
        } else {
            fuzz_check_error();
        }
    }
    return 0;
}
