/* tensorset.h: a set of named tensors read from a file (formats layer).
 *
 * safetensors files (one or sharded) and PyTorch zip checkpoints are both
 * read into an lf_tensorset.  Tensor data is contiguous, row-major and
 * little-endian, and points either into a read-only memory map of the file
 * (never copied) or, for the rare tensors that need rearranging (a PyTorch
 * tensor with non-contiguous strides), into a buffer the set owns.
 * The reader knows nothing about models. */
#ifndef LF_TENSORSET_H
#define LF_TENSORSET_H

#include <stddef.h>
#include <stdint.h>
#include "loraflow.h"

#define LF_MAX_DIMS 8

typedef struct {
    char *name;
    lf_dtype dtype;
    int ndim;
    int64_t shape[LF_MAX_DIMS];
    const void *data;  /* contiguous row-major little-endian */
    size_t nbytes;     /* = numel * dtype size */
    int source;        /* index of the file in the set it came from */
} lf_tensor;

typedef struct {
    void *addr;
    size_t size;
} lf_mapping;

typedef struct {
    char *key, *value;
} lf_kv;

typedef struct lf_tensorset {
    lf_tensor *tensors;
    int n, cap;
    char **paths;       /* files the tensors came from (error messages) */
    int npaths;
    lf_mapping *maps;   /* to munmap */
    int nmaps;
    void **owned;       /* buffers to free */
    int nowned;
    lf_kv *meta;        /* safetensors __metadata__ (string map) */
    int nmeta;
    /* tensors[name_index[i]] sorted by name, for lf_tensorset_find; valid
     * while name_index_n == n (lf_tensorset_add invalidates it; the readers
     * rebuild it after each file). */
    int *name_index;
    int name_index_n;
} lf_tensorset;

/* Size in bytes of one element; 0 for an unknown dtype. */
size_t lf_dtype_size(lf_dtype t);
const char *lf_dtype_name(lf_dtype t);  /* "F32", "F16", "BF16", "I64", "I32" */
int lf_dtype_from_name(const char *s, lf_dtype *out); /* 0 ok, -1 unknown */

int64_t lf_tensor_numel(const lf_tensor *t);
/* "[32000, 64]" into buf. */
const char *lf_shape_str(const int64_t *shape, int ndim, char *buf, size_t n);

void lf_tensorset_init(lf_tensorset *s);
void lf_tensorset_free(lf_tensorset *s);
/* The first tensor named name, or NULL: O(log n) while the name index is
 * valid (after a reader), else a linear search. */
const lf_tensor *lf_tensorset_find(const lf_tensorset *s, const char *name);
/* (Re)build the name index (0, or -1 when out of memory: finds stay linear). */
int lf_tensorset_index(lf_tensorset *s);
const char *lf_tensorset_meta(const lf_tensorset *s, const char *key);
/* Append a tensor (name copied).  Returns the new tensor or NULL. */
lf_tensor *lf_tensorset_add(lf_tensorset *s, const char *name);
int lf_tensorset_add_path(lf_tensorset *s, const char *path); /* returns index */
int lf_tensorset_add_map(lf_tensorset *s, void *addr, size_t size);
int lf_tensorset_own(lf_tensorset *s, void *buf);

/* Read-only memory map of a whole file.  An empty file maps to addr=NULL,size=0. */
int lf_map_file(const char *path, lf_mapping *m);
void lf_unmap(lf_mapping *m);

/* ---- safetensors (src/io/safetensors.c) ---- */
/* Open one .safetensors file, appending its tensors to s. */
int lf_safetensors_read(const char *path, lf_tensorset *s);
/* Open model.safetensors.index.json and every shard it names. */
int lf_safetensors_read_index(const char *index_path, lf_tensorset *s);
/* Write tensors (and optional metadata) atomically to path. */
int lf_safetensors_write(const char *path, const lf_tensor *tensors, int n,
                         const lf_kv *meta, int nmeta);

/* ---- PyTorch zip checkpoints (src/io/ptzip.c + src/io/pickle.c) ---- */
/* Read a torch.save'd zip file holding a dict/OrderedDict of tensors through
 * the restricted unpickler; any global outside the tensor-rebuilding set is
 * refused with an error naming it. */
int lf_pt_read(const char *path, lf_tensorset *s);
/* Write a dict of F32/F16/BF16 tensors as a PyTorch zip checkpoint
 * (pickle protocol 2, stored entries) that torch.load and lf_pt_read read.
 * top is the top-level folder name inside the zip (e.g. "archive"). */
int lf_pt_write(const char *path, const char *top, const lf_tensor *tensors, int n);

#endif
