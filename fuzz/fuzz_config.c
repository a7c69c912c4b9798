/* fuzz_config: config.json through lf_config_read.  A config that is read
 * must satisfy what the model code relies on. */
#include "fuzz.h"

static int fd = -1;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    fuzz_memfile(&fd, path, sizeof path, data, size);
    lf_config c;
    lf_set_error("%s", "");
    if (lf_config_read(path, &c) == 0) {
        FUZZ_CHECK(c.hidden_size > 0 && c.intermediate_size > 0 && c.n_layers > 0);
        FUZZ_CHECK(c.n_heads > 0 && c.n_kv_heads > 0 && c.n_heads % c.n_kv_heads == 0);
        FUZZ_CHECK(c.head_dim > 0 && c.head_dim % 2 == 0 && c.vocab_size > 0);
        FUZZ_CHECK(c.bos_id >= 0 && c.bos_id < c.vocab_size && c.eos_id >= 0 && c.eos_id < c.vocab_size);
        FUZZ_CHECK(c.rms_norm_eps > 0 && c.rope_theta > 0 && c.max_position_embeddings > 0);
    } else {
        fuzz_check_error();
    }
    return 0;
}
