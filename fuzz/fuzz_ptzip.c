/* fuzz_ptzip: one PyTorch zip checkpoint through lf_pt_read (zip container,
 * restricted unpickler, storages). */
#include "fuzz.h"
#include "../src/io/tensorset.h"

static int fd = -1;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    fuzz_memfile(&fd, path, sizeof path, data, size);
    lf_tensorset s;
    lf_tensorset_init(&s);
    lf_set_error("%s", "");
    if (lf_pt_read(path, &s) == 0) {
        for (int i = 0; i < s.n; i++) {
            const lf_tensor *t = &s.tensors[i];
            int64_t numel = lf_tensor_numel(t);
            FUZZ_CHECK(numel >= 0 && (size_t)numel * lf_dtype_size(t->dtype) == t->nbytes);
            volatile uint8_t sum = 0;
            for (size_t b = 0; b < t->nbytes; b++) sum ^= ((const uint8_t *)t->data)[b];
            (void)sum;
        }
    } else {
        fuzz_check_error();
        FUZZ_CHECK(s.n == 0);
    }
    lf_tensorset_free(&s);
    return 0;
}
