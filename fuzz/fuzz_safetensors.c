/* fuzz_safetensors: one .safetensors file through lf_safetensors_read.
 * A successful read must describe tensors whose bytes lie inside the set's
 * buffers and match dtype x shape. */
#include "fuzz.h"
#include "../src/io/tensorset.h"

static int fd = -1;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    fuzz_memfile(&fd, path, sizeof path, data, size);
    lf_tensorset s;
    lf_tensorset_init(&s);
    lf_set_error("%s", "");
    if (lf_safetensors_read(path, &s) == 0) {
        for (int i = 0; i < s.n; i++) {
            const lf_tensor *t = &s.tensors[i];
            size_t bytes = lf_dtype_size(t->dtype);
            FUZZ_CHECK(bytes > 0 && t->ndim >= 0 && t->ndim <= LF_MAX_DIMS);
            for (int d = 0; d < t->ndim; d++) {
                FUZZ_CHECK(t->shape[d] >= 0);
                FUZZ_CHECK(!lf_mul_overflow(bytes, (size_t)t->shape[d], &bytes));
            }
            FUZZ_CHECK(bytes == t->nbytes);
            FUZZ_CHECK(t->nbytes <= size);
            FUZZ_CHECK(lf_tensorset_find(&s, t->name) != NULL);
            /* touch every byte: out-of-bounds data shows up under ASan or as SIGSEGV */
            volatile uint8_t sum = 0;
            for (size_t b = 0; b < t->nbytes; b++) sum ^= ((const uint8_t *)t->data)[b];
            (void)sum;
        }
    } else {
        fuzz_check_error();
        FUZZ_CHECK(s.n == 0 && s.nmaps == 0 && s.npaths == 0 && s.nmeta == 0);
    }
    lf_tensorset_free(&s);
    return 0;
}
