/* pickle.h: the restricted unpickler (and a small pickler) for PyTorch zip
 * checkpoints, plus the stored-zip writer they share with their tests.
 *
 * torch.load runs whatever callables a pickle names, so a checkpoint from the
 * internet is a program.  This reader is not a general unpickler: it knows a
 * handful of opcodes and exactly the globals that rebuild a dict of tensors
 * (collections.OrderedDict, torch._utils._rebuild_tensor_v2,
 * torch._utils._rebuild_parameter and the Float/Half/BFloat16/Long/Int
 * storage classes).  Anything else is refused the moment it is named, with
 * an error naming it; nothing is ever executed.  The result is a plain list
 * of tensor descriptions (storage key, offset, size, stride); the zip layer
 * (ptzip.c) checks them against the storages in the archive. */
#ifndef LF_PICKLE_H
#define LF_PICKLE_H

#include <stddef.h>
#include <stdint.h>
#include "tensorset.h"

/* Limits of the unpickler; each error that hits one names it. */
#define LF_PK_MAX_STACK    65536      /* values on the stack */
#define LF_PK_MAX_MARKS    1024       /* open MARKs (nesting depth) */
#define LF_PK_MAX_MEMO     (1 << 20)  /* memo entries */
#define LF_PK_MAX_STRING   (1 << 20)  /* bytes in one string */
#define LF_PK_MAX_TENSORS  (1 << 20)  /* tensors rebuilt */
#define LF_PK_MAX_OBJECTS  (1 << 21)  /* values created in all (~40 bytes each) */
#define LF_PK_MAX_KEY      255        /* bytes in a storage key */

/* One tensor of the unpickled state dict, as the pickle describes it. */
typedef struct {
    char *name;            /* dict key, NUL-terminated */
    lf_dtype dtype;        /* from the storage class */
    char *storage_key;     /* "<top>/data/<storage_key>" holds the bytes */
    int64_t storage_numel; /* elements the storage claims to hold */
    int64_t offset;        /* storage_offset, in elements */
    int ndim;
    int64_t size[LF_MAX_DIMS];
    int64_t stride[LF_MAX_DIMS]; /* in elements */
} lf_pk_tensor;

/* Unpickle data (a whole data.pkl) that must hold a dict or OrderedDict of
 * str -> tensor.  On success *out holds *n tensors in dict order (free with
 * lf_pk_tensors_free).  Checks done here: opcodes, globals, limits, that every
 * tensor lies inside the numel its storage claims, unique keys.  Errors do
 * not name the file (the caller prefixes it). */
int lf_pickle_load_tensors(const uint8_t *data, size_t len, lf_pk_tensor **out, int *n);
void lf_pk_tensors_free(lf_pk_tensor *t, int n);

/* Pickle (protocol 2, as torch.save writes it) an OrderedDict of tensors into
 * a malloc'd buffer. */
int lf_pickle_dump_tensors(const lf_pk_tensor *t, int n, uint8_t **out, size_t *len);

/* ---- stored-zip writer (ptzip.c), internal; tests build hostile files with it ---- */
typedef struct {
    const char *name;
    const void *data;
    size_t size;
} lf_zip_entry;

/* CRC-32 (zip / IEEE polynomial) of n bytes, continuing from crc (0 to start). */
uint32_t lf_crc32(uint32_t crc, const void *data, size_t n);
/* Write entries as an uncompressed zip, atomically; each entry's data starts
 * at a multiple of 64 bytes (padding in a local-header extra field, as torch
 * does).  force_zip64 writes ZIP64 extra fields even for small entries (to
 * test that path without 4 GB files). */
int lf_zip_write(const char *path, const lf_zip_entry *e, int n, int force_zip64);

#endif
