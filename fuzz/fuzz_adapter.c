/* fuzz_adapter: a PEFT adapter folder through lf_model_add_adapter, on a
 * small synthetic model (fuzz_small_spec).  Built twice from this file:
 *   fuzz_adapter_config  - the input is adapter_config.json (the weights are
 *                          the synthetic model's valid lora_0 weights);
 *   fuzz_adapter_weights - the input is the weight file (adapter_config.json
 *                          valid): adapter_model.bin when it starts with
 *                          "PK", else adapter_model.safetensors.
 * After a successful attach the adapter is used in one forward pass. */
#include "fuzz.h"
#include "../src/fusion/fusion.h"

static lf_model *model;
static lf_session *session;
static char adir[512];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    const char *dir = fuzz_dir();
    lf_set_threads(1);
    lf_synth_spec sp = fuzz_small_spec();
    if (lf_synth_model(dir, &sp, NULL, NULL) != 0) fuzz_die("lf_synth_model");
    model = lf_model_load(dir);
    if (!model) fuzz_die("lf_model_load");
    session = lf_session_new(model, 8);
    if (!session) fuzz_die("lf_session_new");
    snprintf(adir, sizeof adir, "%s/lora_0", dir);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
#ifdef FUZZ_ADAPTER_WEIGHTS
    int pt = size >= 2 && data[0] == 'P' && data[1] == 'K';
    fuzz_unlink(adir, pt ? "adapter_model.safetensors" : "adapter_model.bin");
    fuzz_write(adir, pt ? "adapter_model.bin" : "adapter_model.safetensors", data, size);
#else
    fuzz_write(adir, "adapter_config.json", data, size);
#endif
    lf_set_error("%s", "");
    int idx = lf_model_add_adapter(model, "fuzz", adir);
    if (idx >= 0) {
        FUZZ_CHECK(idx == 0 && lf_model_n_adapters(model) == 1);
        const lf_adapter *a = &model->adapters[0];
        FUZZ_CHECK(a->r >= 1);
        for (int i = 0; i < model->cfg.n_layers * LF_NPROJ; i++)
            if (a->A[i]) FUZZ_CHECK(a->scale[i] == a->scale[i]); /* not NaN */
        float w = 1.0f;
        int32_t ids[2] = {1, 5};
        float logits[2 * 8];
        lf_outputs o = {.logits = logits};
        lf_session_reset(session);
        FUZZ_CHECK(lf_session_set_static(session, &w, 1) == 0);
        FUZZ_CHECK(lf_session_forward(session, ids, 2, &o) == 0);
        lf_session_set_base(session);
        lf_adapters_free(model);
        FUZZ_CHECK(lf_fusion_restack(model) == 0);
    } else {
        fuzz_check_error();
        FUZZ_CHECK(lf_model_n_adapters(model) == 0);
    }
    return 0;
}
