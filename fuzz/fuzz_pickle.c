/* fuzz_pickle: bytes straight into the restricted unpickler (the data.pkl of
 * a PyTorch zip), without the zip layer, so every mutation reaches it. */
#include "fuzz.h"
#include "../src/io/pickle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lf_pk_tensor *t = NULL;
    int n = -1;
    lf_set_error("%s", "");
    if (lf_pickle_load_tensors(data, size, &t, &n) == 0) {
        FUZZ_CHECK(n >= 0 && n <= LF_PK_MAX_TENSORS);
        for (int i = 0; i < n; i++) {
            FUZZ_CHECK(t[i].name && t[i].name[0] && t[i].storage_key && t[i].storage_key[0]);
            FUZZ_CHECK(t[i].ndim >= 0 && t[i].ndim <= LF_MAX_DIMS);
            FUZZ_CHECK(t[i].offset >= 0 && t[i].storage_numel >= 0);
            for (int d = 0; d < t[i].ndim; d++) FUZZ_CHECK(t[i].size[d] >= 0 && t[i].stride[d] >= 0);
        }
        /* what was read can be written again and reads back the same */
        uint8_t *out = NULL;
        size_t len = 0;
        if (lf_pickle_dump_tensors(t, n, &out, &len) == 0) {
            lf_pk_tensor *t2 = NULL;
            int n2 = -1;
            FUZZ_CHECK(lf_pickle_load_tensors(out, len, &t2, &n2) == 0);
            FUZZ_CHECK(n2 == n);
            for (int i = 0; i < n; i++) {
                FUZZ_CHECK(!strcmp(t[i].name, t2[i].name) && !strcmp(t[i].storage_key, t2[i].storage_key));
                FUZZ_CHECK(t[i].ndim == t2[i].ndim && t[i].offset == t2[i].offset && t[i].dtype == t2[i].dtype);
            }
            lf_pk_tensors_free(t2, n2);
            free(out);
        }
        lf_pk_tensors_free(t, n);
    } else {
        fuzz_check_error();
        FUZZ_CHECK(t == NULL && n == 0);
    }
    return 0;
}
