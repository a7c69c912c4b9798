/* ptzip.c: PyTorch zip checkpoints (torch.save since 1.6).
 *
 * Reading: the zip container is parsed from its central directory (the only
 * authoritative index), every entry is checked against its local header, the
 * single top-level folder is found from its "<top>/data.pkl", the pickle goes
 * through the restricted unpickler (pickle.c), and each tensor is checked
 * against the storage entry "<top>/data/<key>" it names.  Tensor data points
 * into the read-only map of the file; only strided (e.g. transposed) or
 * misaligned tensors are copied into buffers the set owns.
 *
 * Only stored (uncompressed) entries are accepted: torch never compresses,
 * and mapping the data in place needs it stored.
 *
 * Writing: an OrderedDict pickle plus one storage entry per tensor, each
 * entry's data aligned to 64 bytes as torch does, written atomically. */
#include "pickle.h"
#include "tensorset.h"
#include "atomic.h"
#include "../core/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ptzip.c maps little-endian tensor data in place and needs a little-endian host"
#endif

/* Limits; each error that hits one names it. */
#define ZIP_MAX_ENTRIES (1 << 20)
/* Strided or misaligned tensors are copied out of the map.  Views share
 * storages, so a small file could otherwise name one large strided view
 * under a million keys and ask for terabytes of copies: all copies of one
 * file together may take at most twice the file's size plus 1 MiB. */
#define PT_COPY_LIMIT(file_size) (2 * (uint64_t)(file_size) + ((uint64_t)1 << 20))
#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_EOCD64 0x06064b50u
#define SIG_LOCATOR64 0x07064b50u
#define U32_SAT 0xffffffffu
#define U16_SAT 0xffffu

/* ================================================================ CRC-32 */

uint32_t lf_crc32(uint32_t crc, const void *data, size_t n) {
    /* A 1 KB table built per call: no shared state, and negligible next to
     * the data it is used on. */
    uint32_t table[256];
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
    const uint8_t *p = data;
    uint32_t c = crc ^ 0xffffffffu;
    for (size_t i = 0; i < n; i++) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

/* ============================================================ zip reading */

typedef struct {
    const char *name; /* into the map, not NUL-terminated */
    size_t namelen;
    uint64_t local_off, data_off, size;
    uint32_t crc;
} zentry;

typedef struct {
    const char *path;
    const uint8_t *base;
    size_t size;
    zentry *e;  /* sorted by name after zip_open */
    size_t n;
    uint64_t cd_off, cd_size;
} zarchive;

static int zerr(const zarchive *z, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int zerr(const zarchive *z, const char *fmt, ...) {
    char msg[LF_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lf_set_error("%s: %s", z->path, msg);
    return -1;
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)rd16(p) | (uint32_t)rd16(p + 2) << 16; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

/* Does [off, off + len) lie inside the file? */
static int in_file(const zarchive *z, uint64_t off, uint64_t len) {
    return off <= z->size && len <= z->size - off;
}

/* Entry name for messages (names are untrusted: keep them printable). */
static const char *ename(const zentry *e, char *buf, size_t cap) {
    size_t o = 0;
    for (size_t i = 0; i < e->namelen && o + 5 < cap; i++) {
        unsigned char c = (unsigned char)e->name[i];
        if (c >= 0x20 && c < 0x7f) buf[o++] = (char)c;
        else o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
    }
    buf[o] = 0;
    return buf;
}

/* End-of-central-directory: the last 22+ bytes, before a comment of at most
 * 64 KB; the record must end exactly at the end of the file. */
static int find_eocd(const zarchive *z, uint64_t *eocd) {
    if (z->size < 22) {
        if (z->size >= 2 && z->base[0] == 0x80)
            return zerr(z, "a legacy (pre-zip) torch.save file; re-save it with torch >= 1.6");
        return zerr(z, "not a zip file (%zu bytes, too small for an end-of-central-directory record)", z->size);
    }
    size_t lo = z->size > 22 + 65535 ? z->size - 22 - 65535 : 0;
    for (size_t off = z->size - 22 + 1; off-- > lo;) {
        const uint8_t *p = z->base + off;
        if (rd32(p) == SIG_EOCD && off + 22 + rd16(p + 20) == z->size) {
            *eocd = off;
            return 0;
        }
    }
    if (z->base[0] == 0x80)
        return zerr(z, "a legacy (pre-zip) torch.save file; re-save it with torch >= 1.6");
    return zerr(z, "not a zip file (no end-of-central-directory record)");
}

/* Reads the EOCD (and the ZIP64 EOCD when its locator is present) into
 * z->cd_off, z->cd_size and *count; *cd_limit is where the directory must end. */
static int read_eocd(zarchive *z, uint64_t *count, uint64_t *cd_limit) {
    uint64_t eo = 0;
    if (find_eocd(z, &eo)) return -1;
    const uint8_t *p = z->base + eo;
    uint64_t disk = rd16(p + 4), cd_disk = rd16(p + 6), n_disk = rd16(p + 8), n = rd16(p + 10);
    uint64_t cd_size = rd32(p + 12), cd_off = rd32(p + 16);
    *cd_limit = eo;
    if (eo >= 20 && rd32(z->base + eo - 20) == SIG_LOCATOR64) {
        const uint8_t *l = z->base + eo - 20;
        uint64_t o64 = rd64(l + 8);
        if (rd32(l + 4) != 0 || rd32(l + 16) > 1) return zerr(z, "multi-disk zip archives are not supported");
        if (o64 > eo - 20 || eo - 20 - o64 < 56 || rd32(z->base + o64) != SIG_EOCD64)
            return zerr(z, "ZIP64 end-of-central-directory record missing or outside the file (offset %llu)",
                        (unsigned long long)o64);
        const uint8_t *q = z->base + o64;
        uint64_t d64 = rd32(q + 16), cdd64 = rd32(q + 20), nd64 = rd64(q + 24), n64 = rd64(q + 32);
        uint64_t size64 = rd64(q + 40), off64 = rd64(q + 48);
        /* The 32-bit fields must agree with the 64-bit ones unless saturated. */
        if ((disk != U16_SAT && disk != d64) || (cd_disk != U16_SAT && cd_disk != cdd64) ||
            (n_disk != U16_SAT && n_disk != nd64) || (n != U16_SAT && n != n64) ||
            (cd_size != U32_SAT && cd_size != size64) || (cd_off != U32_SAT && cd_off != off64))
            return zerr(z, "end-of-central-directory and ZIP64 end-of-central-directory records disagree");
        disk = d64, cd_disk = cdd64, n_disk = nd64, n = n64, cd_size = size64, cd_off = off64;
        *cd_limit = o64;
    }
    if (disk != 0 || cd_disk != 0 || n_disk != n) return zerr(z, "multi-disk zip archives are not supported");
    if (n > ZIP_MAX_ENTRIES)
        return zerr(z, "%llu entries exceed the zip entry count limit (%d, ZIP_MAX_ENTRIES in src/io/ptzip.c)",
                    (unsigned long long)n, ZIP_MAX_ENTRIES);
    if (cd_off > *cd_limit || cd_size > *cd_limit - cd_off)
        return zerr(z, "central directory (offset %llu, %llu bytes) lies outside the file",
                    (unsigned long long)cd_off, (unsigned long long)cd_size);
    z->cd_off = cd_off;
    z->cd_size = cd_size;
    *count = n;
    return 0;
}

/* Finds the extra field with this id in extra[0..len); 0 found, 1 absent, -1 malformed. */
static int find_extra(const uint8_t *extra, size_t len, uint16_t id, const uint8_t **data, size_t *dlen) {
    size_t o = 0;
    while (o < len) {
        if (len - o < 4) return -1;
        size_t fl = rd16(extra + o + 2);
        if (fl > len - o - 4) return -1;
        if (rd16(extra + o) == id) {
            *data = extra + o + 4;
            *dlen = fl;
            return 0;
        }
        o += 4 + fl;
    }
    return 1;
}

/* ZIP64 extra of a central header: 64-bit values for the saturated fields,
 * in the order uncompressed size, compressed size, local header offset. */
static int central_zip64(const zarchive *z, const zentry *e, const uint8_t *extra, size_t len, uint64_t *usize,
                         uint64_t *csize, uint64_t *off) {
    uint64_t *fields[3] = {usize, csize, off};
    int want = 0;
    for (int i = 0; i < 3; i++) want += *fields[i] == U32_SAT;
    if (!want) return 0;
    const uint8_t *d = NULL;
    size_t dl = 0;
    char nb[300];
    int r = find_extra(extra, len, 0x0001, &d, &dl);
    if (r < 0) return zerr(z, "entry '%s': malformed extra field", ename(e, nb, sizeof nb));
    if (r > 0 || dl < 8u * (size_t)want)
        return zerr(z, "entry '%s': sizes or offset need a ZIP64 extra field, which is missing or short",
                    ename(e, nb, sizeof nb));
    for (int i = 0, k = 0; i < 3; i++)
        if (*fields[i] == U32_SAT) *fields[i] = rd64(d + 8 * k++);
    return 0;
}

static const char *method_name(unsigned m) {
    switch (m) {
    case 8: return "deflate";
    case 9: return "deflate64";
    case 12: return "bzip2";
    case 14: return "lzma";
    case 93: return "zstd";
    case 95: return "xz";
    }
    return "unknown";
}

/* One central directory header at *pos; advances *pos. */
static int read_central(zarchive *z, uint64_t *pos, uint64_t end, zentry *e) {
    if (end - *pos < 46 || rd32(z->base + *pos) != SIG_CENTRAL)
        return zerr(z, "central directory entry %zu at offset %llu is malformed or truncated", z->n,
                    (unsigned long long)*pos);
    const uint8_t *p = z->base + *pos;
    unsigned flags = rd16(p + 8), method = rd16(p + 10), disk = rd16(p + 34);
    uint64_t csize = rd32(p + 20), usize = rd32(p + 24), off = rd32(p + 42);
    size_t nl = rd16(p + 28), xl = rd16(p + 30), cl = rd16(p + 32);
    if (end - *pos - 46 < nl + xl + cl)
        return zerr(z, "central directory entry %zu runs past the directory", z->n);
    e->name = (const char *)p + 46;
    e->namelen = nl;
    e->crc = rd32(p + 16);
    char nb[300];
    if (!nl || memchr(e->name, 0, nl)) return zerr(z, "central directory entry %zu has an empty or NUL-holding name", z->n);
    if (flags & 0x41) return zerr(z, "entry '%s' is encrypted", ename(e, nb, sizeof nb));
    if (method != 0)
        return zerr(z, "entry '%s' is compressed (method %u, %s); only stored entries are supported",
                    ename(e, nb, sizeof nb), method, method_name(method));
    if (central_zip64(z, e, p + 46 + nl, xl, &usize, &csize, &off)) return -1;
    if (disk != 0 && disk != U16_SAT) return zerr(z, "multi-disk zip archives are not supported");
    if (csize != usize)
        return zerr(z, "stored entry '%s' has compressed size %llu but size %llu", ename(e, nb, sizeof nb),
                    (unsigned long long)csize, (unsigned long long)usize);
    e->size = usize;
    e->local_off = off;
    *pos += 46 + nl + xl + cl;
    return 0;
}

/* The local header must agree with the central one; sets e->data_off. */
static int check_local(const zarchive *z, zentry *e) {
    char nb[300];
    if (!in_file(z, e->local_off, 30) || rd32(z->base + e->local_off) != SIG_LOCAL)
        return zerr(z, "entry '%s': no local header at offset %llu (outside the file or corrupt)",
                    ename(e, nb, sizeof nb), (unsigned long long)e->local_off);
    const uint8_t *p = z->base + e->local_off;
    unsigned flags = rd16(p + 6), method = rd16(p + 8);
    uint64_t crc = rd32(p + 14), csize = rd32(p + 18), usize = rd32(p + 22);
    size_t nl = rd16(p + 26), xl = rd16(p + 28);
    if (!in_file(z, e->local_off + 30, nl + xl))
        return zerr(z, "entry '%s': local header runs past the end of the file", ename(e, nb, sizeof nb));
    if (nl != e->namelen || memcmp(p + 30, e->name, nl))
        return zerr(z, "entry '%s': local header names a different file", ename(e, nb, sizeof nb));
    if (method != 0 || (flags & 0x41))
        return zerr(z, "entry '%s': local header says compressed or encrypted", ename(e, nb, sizeof nb));
    /* With a data descriptor (flag bit 3, as torch writes) the local CRC and
     * sizes may be zero; otherwise they must match the central directory. */
    int deferred = (flags & 8) && crc == 0 && csize == 0 && usize == 0;
    if (!deferred) {
        if (usize == U32_SAT || csize == U32_SAT) {
            const uint8_t *d = NULL;
            size_t dl = 0;
            if (find_extra(p + 30 + nl, xl, 0x0001, &d, &dl) != 0 || dl < 16)
                return zerr(z, "entry '%s': local header lacks its ZIP64 sizes", ename(e, nb, sizeof nb));
            usize = rd64(d);
            csize = rd64(d + 8);
        }
        if (usize != e->size || csize != e->size || crc != e->crc)
            return zerr(z, "entry '%s': local header size %llu / CRC %08llx disagree with the central directory "
                        "(%llu / %08lx)", ename(e, nb, sizeof nb), (unsigned long long)usize,
                        (unsigned long long)crc, (unsigned long long)e->size, (unsigned long)e->crc);
    }
    e->data_off = e->local_off + 30 + nl + xl;
    if (!in_file(z, e->data_off, e->size) || e->data_off + e->size > z->cd_off)
        return zerr(z, "entry '%s': data (%llu bytes at offset %llu) lies outside the file's data area",
                    ename(e, nb, sizeof nb), (unsigned long long)e->size, (unsigned long long)e->data_off);
    return 0;
}

static int cmp_offset(const void *a, const void *b) {
    const zentry *x = *(const zentry *const *)a, *y = *(const zentry *const *)b;
    return x->local_off < y->local_off ? -1 : x->local_off > y->local_off;
}

static int cmp_name(const void *a, const void *b) {
    const zentry *x = a, *y = b;
    size_t n = x->namelen < y->namelen ? x->namelen : y->namelen;
    int c = memcmp(x->name, y->name, n);
    return c ? c : (x->namelen > y->namelen) - (x->namelen < y->namelen);
}

/* No two entries (local header + data) may share bytes: overlapping entries
 * are how "zip bombs" and parser-confusion files are built. */
static int check_overlap(const zarchive *z) {
    if (z->n < 2) return 0;
    const zentry **by = lf_malloc(z->n * sizeof *by, "zip entry index");
    if (!by) return -1;
    for (size_t i = 0; i < z->n; i++) by[i] = &z->e[i];
    qsort(by, z->n, sizeof *by, cmp_offset);
    for (size_t i = 1; i < z->n; i++) {
        if (by[i - 1]->data_off + by[i - 1]->size > by[i]->local_off) {
            char a[300], b[300];
            zerr(z, "entries '%s' and '%s' overlap", ename(by[i - 1], a, sizeof a), ename(by[i], b, sizeof b));
            free(by);
            return -1;
        }
    }
    free(by);
    return 0;
}

static int zip_open(zarchive *z) {
    uint64_t count = 0, cd_limit = 0;
    if (read_eocd(z, &count, &cd_limit)) return -1;
    if (count > z->cd_size / 46)
        return zerr(z, "central directory of %llu bytes cannot hold %llu entries",
                    (unsigned long long)z->cd_size, (unsigned long long)count);
    z->e = lf_calloc(count ? count : 1, sizeof *z->e, "zip entries");
    if (!z->e) return -1;
    uint64_t pos = z->cd_off, end = z->cd_off + z->cd_size;
    for (z->n = 0; z->n < count; z->n++)
        if (read_central(z, &pos, end, &z->e[z->n])) return -1;
    if (pos != end)
        return zerr(z, "central directory holds %llu bytes after its %llu entries",
                    (unsigned long long)(end - pos), (unsigned long long)count);
    for (size_t i = 0; i < z->n; i++)
        if (check_local(z, &z->e[i])) return -1;
    if (check_overlap(z)) return -1;
    qsort(z->e, z->n, sizeof *z->e, cmp_name);
    for (size_t i = 1; i < z->n; i++) {
        if (!cmp_name(&z->e[i - 1], &z->e[i])) {
            char nb[300];
            return zerr(z, "entry '%s' appears twice", ename(&z->e[i], nb, sizeof nb));
        }
    }
    return 0;
}

static const zentry *zip_find(const zarchive *z, const char *name) {
    zentry key = {.name = name, .namelen = strlen(name)};
    return bsearch(&key, z->e, z->n, sizeof *z->e, cmp_name);
}

/* ===================================================== checkpoint layout */

/* The one top-level folder: the X of the only "X/data.pkl" (X without '/'),
 * and every entry must live under it.  Returns a malloc'd "X". */
static char *find_top(const zarchive *z) {
    const char *suffix = "/data.pkl";
    size_t sl = strlen(suffix);
    const zentry *found = NULL;
    char a[300], b[300];
    for (size_t i = 0; i < z->n; i++) {
        const zentry *e = &z->e[i];
        if (e->namelen <= sl || memcmp(e->name + e->namelen - sl, suffix, sl)) continue;
        if (memchr(e->name, '/', e->namelen - sl)) continue; /* deeper than one folder */
        if (found) {
            zerr(z, "two top-level folders hold a data.pkl ('%s' and '%s')", ename(found, a, sizeof a),
                 ename(e, b, sizeof b));
            return NULL;
        }
        found = e;
    }
    if (!found) {
        zerr(z, "no '<folder>/data.pkl' entry: not a PyTorch zip checkpoint");
        return NULL;
    }
    size_t tl = found->namelen - sl;
    if (tl > 255) { /* keeps "<top>/data/<key>" lookups in a fixed buffer */
        zerr(z, "top-level folder name of %zu bytes is longer than 255 bytes", tl);
        return NULL;
    }
    for (size_t i = 0; i < z->n; i++) {
        const zentry *e = &z->e[i];
        if (e->namelen <= tl + 1 || memcmp(e->name, found->name, tl) || e->name[tl] != '/') {
            zerr(z, "entry '%s' is outside the top-level folder '%.*s'", ename(e, a, sizeof a), (int)tl,
                 found->name);
            return NULL;
        }
    }
    return lf_strndup(found->name, tl);
}

static const zentry *find_in_top(const zarchive *z, const char *top, const char *rest) {
    char name[600];
    int w = snprintf(name, sizeof name, "%s/%s", top, rest);
    if (w < 0 || (size_t)w >= sizeof name) return NULL;
    return zip_find(z, name);
}

/* Data is little-endian unless a "byteorder" record says otherwise. */
static int check_byteorder(const zarchive *z, const char *top) {
    const zentry *e = find_in_top(z, top, "byteorder");
    if (!e) return 0;
    const char *v = (const char *)z->base + e->data_off;
    if (e->size == 6 && !memcmp(v, "little", 6)) return 0;
    return zerr(z, "%s/byteorder is '%.*s'; only little-endian checkpoints are supported", top,
                (int)(e->size < 16 ? e->size : 16), v);
}

/* ============================================================ tensors */

static int is_contiguous(const lf_pk_tensor *t) {
    int64_t expect = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->size[i] != 1 && t->stride[i] != expect) return 0; /* size-1 strides never matter */
        expect *= t->size[i]; /* cannot overflow: the element count was checked */
    }
    return 1;
}

/* Gathers a strided view into a new contiguous buffer. */
static void *gather(const uint8_t *storage, const lf_pk_tensor *t, size_t es, size_t numel) {
    uint8_t *dst = lf_malloc(numel * es, "strided tensor copy");
    if (!dst) return NULL;
    int64_t idx[LF_MAX_DIMS] = {0}, off = t->offset;
    for (size_t k = 0; k < numel; k++) {
        memcpy(dst + k * es, storage + (size_t)off * es, es);
        for (int d = t->ndim - 1; d >= 0; d--) { /* odometer over the dimensions */
            off += t->stride[d];
            if (++idx[d] < t->size[d]) break;
            off -= t->stride[d] * t->size[d];
            idx[d] = 0;
        }
    }
    return dst;
}

/* Pre-flight for one tensor: its storage entry exists and is large enough. */
static int check_storage(const zarchive *z, const char *top, const lf_pk_tensor *t, const zentry **out) {
    char rest[LF_PK_MAX_KEY + 8];
    snprintf(rest, sizeof rest, "data/%s", t->storage_key);
    const zentry *e = find_in_top(z, top, rest);
    if (!e)
        return zerr(z, "tensor '%s': storage '%s' has no entry '%s/%s' in the zip", t->name, t->storage_key, top,
                    rest);
    size_t es = lf_dtype_size(t->dtype), bytes;
    if (lf_mul_overflow((size_t)t->storage_numel, es, &bytes) || bytes > e->size)
        return zerr(z, "tensor '%s': storage '%s' claims %lld %s elements but its entry holds %llu bytes",
                    t->name, t->storage_key, (long long)t->storage_numel, lf_dtype_name(t->dtype),
                    (unsigned long long)e->size);
    *out = e;
    return 0;
}

/* Fills dst from one unpickled tensor: a pointer into the map when the tensor
 * is contiguous and aligned, else a copy owned by s (counted in *copied). */
static int make_tensor(const zarchive *z, lf_tensorset *s, const lf_pk_tensor *t, const zentry *e, lf_tensor *dst,
                       uint64_t *copied) {
    size_t es = lf_dtype_size(t->dtype);
    const uint8_t *storage = z->base + e->data_off;
    int64_t numel = 1, span = 1;
    for (int i = 0; i < t->ndim; i++) {
        numel *= t->size[i]; /* the unpickler checked these products for overflow */
        span += (t->size[i] - 1) * t->stride[i];
    }
    dst->dtype = t->dtype;
    dst->ndim = t->ndim;
    memcpy(dst->shape, t->size, sizeof dst->shape);
    dst->nbytes = (size_t)numel * es; /* <= the storage bytes, checked below or by contiguity */
    const uint8_t *first = storage + (size_t)t->offset * es;
    if (numel == 0) { dst->data = first; dst->nbytes = 0; return 0; }
    int contiguous = is_contiguous(t);
    if (contiguous && (uintptr_t)first % es == 0) { dst->data = first; return 0; }
    /* A view with overlapping elements (e.g. an expanded, stride-0 tensor)
     * would turn a small storage into an arbitrarily large copy. */
    if (!contiguous && numel > span)
        return zerr(z, "tensor '%s': strides overlap (%lld elements over a span of %lld); not supported",
                    t->name, (long long)numel, (long long)span);
    *copied += dst->nbytes;
    if (*copied > PT_COPY_LIMIT(z->size))
        return zerr(z, "tensor '%s': strided or misaligned tensors need %llu bytes of copies in all, more than "
                    "twice the file's size plus 1 MiB (the limit PT_COPY_LIMIT in src/io/ptzip.c; many keys "
                    "naming strided views of one storage?)", t->name, (unsigned long long)*copied);
    void *copy;
    if (contiguous) { /* misaligned for its type (not torch-written): copy so it can be read as an array */
        copy = lf_malloc(dst->nbytes, "misaligned tensor copy");
        if (copy) memcpy(copy, first, dst->nbytes);
    } else {
        copy = gather(storage, t, es, (size_t)numel);
    }
    if (!copy) return zerr(z, "tensor '%s': %s", t->name, lf_last_error());
    if (lf_tensorset_own(s, copy) < 0) { free(copy); return -1; }
    dst->data = copy;
    return 0;
}

/* Removes tensors [n0, s->n) again after a failure part-way. */
static void rollback(lf_tensorset *s, int n0) {
    for (int i = n0; i < s->n; i++) free(s->tensors[i].name);
    s->n = n0;
}

static int cmp_tensor_ptr(const void *a, const void *b) {
    return strcmp((*(const lf_tensor *const *)a)->name, (*(const lf_tensor *const *)b)->name);
}

/* A tensor of the first n of s named like t, or NULL; idx: those n sorted by name. */
static const lf_tensor *already_loaded(const lf_tensor **idx, int n, const char *name) {
    lf_tensor key;
    memset(&key, 0, sizeof key);
    key.name = (char *)name;
    const lf_tensor *kp = &key;
    const lf_tensor **hit = n ? bsearch(&kp, idx, (size_t)n, sizeof *idx, cmp_tensor_ptr) : NULL;
    return hit ? *hit : NULL;
}

static int add_tensors(const zarchive *z, lf_tensorset *s, const lf_pk_tensor *pt, int n, const zentry **ent,
                       int source) {
    int n0 = s->n;
    uint64_t copied = 0;
    /* The pickle's keys are unique (the unpickler checked); against the
     * tensors already in the set, a sorted index keeps this O(n log n)
     * even for a dict of a million keys. */
    const lf_tensor **idx = lf_malloc((size_t)(n0 ? n0 : 1) * sizeof *idx, "tensor name index");
    if (!idx) return -1;
    for (int i = 0; i < n0; i++) idx[i] = &s->tensors[i];
    if (n0 > 1) qsort(idx, (size_t)n0, sizeof *idx, cmp_tensor_ptr);
    for (int i = 0; i < n; i++) {
        const lf_tensor *dup = already_loaded(idx, n0, pt[i].name);
        if (dup) {
            zerr(z, "tensor '%s' is already loaded from %s", pt[i].name,
                 dup->source >= 0 && dup->source < s->npaths ? s->paths[dup->source] : "another file");
            goto fail;
        }
    }
    free(idx); /* s->tensors may move from here on */
    idx = NULL;
    for (int i = 0; i < n; i++) {
        lf_tensor *t = lf_tensorset_add(s, pt[i].name);
        if (!t) goto fail;
        t->source = source;
        if (make_tensor(z, s, &pt[i], ent[i], t, &copied)) goto fail;
    }
    return 0;
fail:
    free(idx);
    rollback(s, n0);
    return -1;
}

static int read_checkpoint(zarchive *z, lf_tensorset *s, lf_mapping *m) {
    char *top = NULL;
    lf_pk_tensor *pt = NULL;
    const zentry **ent = NULL;
    int npt = 0, rc = -1;
    if (zip_open(z) || !(top = find_top(z)) || check_byteorder(z, top)) goto out;
    const zentry *pkl = find_in_top(z, top, "data.pkl"); /* exists: find_top found it */
    if (!pkl) goto out;
    const uint8_t *pdata = z->base + pkl->data_off;
    if (lf_crc32(0, pdata, pkl->size) != pkl->crc) {
        zerr(z, "%s/data.pkl fails its CRC check (corrupt file)", top);
        goto out;
    }
    if (lf_pickle_load_tensors(pdata, pkl->size, &pt, &npt)) {
        lf_prefix_error("%s: data.pkl: ", z->path);
        goto out;
    }
    ent = lf_calloc(npt ? (size_t)npt : 1, sizeof *ent, "storage index");
    if (!ent) goto out;
    for (int i = 0; i < npt; i++)
        if (check_storage(z, top, &pt[i], &ent[i])) goto out;
    /* Everything checked: hand the map to the set, then add the tensors. */
    int source = lf_tensorset_add_path(s, z->path);
    if (source < 0) goto out;
    if (m->addr && lf_tensorset_add_map(s, m->addr, m->size) < 0) goto out;
    m->addr = NULL; /* owned by the set now */
    rc = add_tensors(z, s, pt, npt, ent, source);
out:
    free(ent);
    lf_pk_tensors_free(pt, npt);
    free(top);
    free(z->e);
    return rc;
}

int lf_pt_read(const char *path, lf_tensorset *s) {
    lf_mapping m;
    if (lf_map_file(path, &m)) return -1;
    zarchive z = {.path = path, .base = m.addr, .size = m.size};
    int rc = read_checkpoint(&z, s, &m);
    if (m.addr) lf_unmap(&m); /* still ours: a failure before the set took it */
    if (rc == 0) lf_tensorset_index(s); /* fast lookups (out of memory: linear ones) */
    return rc;
}

/* ============================================================ zip writing */

typedef struct {
    uint8_t *p;
    size_t n, cap;
    int failed;
} wbuf;

static void wput(wbuf *b, const void *data, size_t n) {
    if (b->failed) return;
    if (b->cap - b->n < n) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc - b->n < n) nc *= 2;
        uint8_t *p = lf_realloc(b->p, nc, "zip directory");
        if (!p) { b->failed = 1; return; }
        b->p = p;
        b->cap = nc;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

static void w16(wbuf *b, uint64_t v) { uint8_t t[2] = {(uint8_t)v, (uint8_t)(v >> 8)}; wput(b, t, 2); }
static void w32(wbuf *b, uint64_t v) { w16(b, v & 0xffff); w16(b, (v >> 16) & 0xffff); }
static void w64(wbuf *b, uint64_t v) { w32(b, v & U32_SAT); w32(b, v >> 32); }
static uint64_t sat32(uint64_t v, int big) { return big || v >= U32_SAT ? U32_SAT : v; }

enum { DOS_DATE_1980_01_01 = 0x21, ZIP_FLAG_UTF8 = 0x0800 };

/* Local header (+ ZIP64 sizes when big, + "FB" padding so the data lands on a
 * multiple of 64 bytes, as torch aligns it) into b. */
static void local_header(wbuf *b, uint64_t off, const char *name, uint64_t size, uint32_t crc, int big) {
    size_t nl = strlen(name), z64 = big ? 20 : 0;
    uint64_t end = off + 30 + nl + z64;
    size_t pad = (size_t)((64 - end % 64) % 64);
    if (pad && pad < 4) pad += 64; /* an extra field needs at least its 4-byte header */
    w32(b, SIG_LOCAL);
    w16(b, big ? 45 : 20);
    w16(b, ZIP_FLAG_UTF8);
    w16(b, 0); /* stored */
    w16(b, 0);
    w16(b, DOS_DATE_1980_01_01);
    w32(b, crc);
    w32(b, sat32(size, big));
    w32(b, sat32(size, big));
    w16(b, nl);
    w16(b, z64 + pad);
    wput(b, name, nl);
    if (big) { w16(b, 0x0001); w16(b, 16); w64(b, size); w64(b, size); }
    if (pad) {
        static const uint8_t zeros[128];
        w16(b, 0x4246); /* "FB": the id torch uses for its alignment padding */
        w16(b, pad - 4);
        wput(b, zeros, pad - 4);
    }
}

static void central_header(wbuf *b, const char *name, uint64_t size, uint32_t crc, uint64_t off, int force) {
    size_t nl = strlen(name);
    int big_size = force || size >= U32_SAT, big_off = force || off >= U32_SAT;
    size_t z64 = (size_t)(big_size ? 16 : 0) + (big_off ? 8 : 0);
    w32(b, SIG_CENTRAL);
    w16(b, 45);                   /* made by: zip 4.5 */
    w16(b, z64 ? 45 : 20);        /* needed */
    w16(b, ZIP_FLAG_UTF8);
    w16(b, 0);
    w16(b, 0);
    w16(b, DOS_DATE_1980_01_01);
    w32(b, crc);
    w32(b, sat32(size, big_size));
    w32(b, sat32(size, big_size));
    w16(b, nl);
    w16(b, z64 ? z64 + 4 : 0);
    w16(b, 0); /* comment */
    w16(b, 0); /* disk */
    w16(b, 0); /* internal attributes */
    w32(b, 0); /* external attributes */
    w32(b, sat32(off, big_off));
    wput(b, name, nl);
    if (z64) {
        w16(b, 0x0001);
        w16(b, z64);
        if (big_size) { w64(b, size); w64(b, size); }
        if (big_off) w64(b, off);
    }
}

/* ZIP64 end record + locator (always, as torch writes them) + classic end record. */
static void end_records(wbuf *b, uint64_t n, uint64_t cd_off, uint64_t cd_size) {
    uint64_t eocd64 = cd_off + cd_size;
    w32(b, SIG_EOCD64);
    w64(b, 44);
    w16(b, 45);
    w16(b, 45);
    w32(b, 0);
    w32(b, 0);
    w64(b, n);
    w64(b, n);
    w64(b, cd_size);
    w64(b, cd_off);
    w32(b, SIG_LOCATOR64);
    w32(b, 0);
    w64(b, eocd64);
    w32(b, 1);
    w32(b, SIG_EOCD);
    w16(b, 0);
    w16(b, 0);
    w16(b, n >= U16_SAT ? U16_SAT : n);
    w16(b, n >= U16_SAT ? U16_SAT : n);
    w32(b, sat32(cd_size, 0));
    w32(b, sat32(cd_off, 0));
    w16(b, 0);
}

int lf_zip_write(const char *path, const lf_zip_entry *e, int n, int force_zip64) {
    if (n < 0) { lf_set_error("%s: negative entry count", path); return -1; }
    for (int i = 0; i < n; i++) {
        if (!e[i].name || !e[i].name[0] || strlen(e[i].name) > 0xfff0 || (e[i].size && !e[i].data)) {
            lf_set_error("%s: zip entry %d has a bad name or no data", path, i);
            return -1;
        }
    }
    wbuf cd = {0}, hdr = {0};
    uint32_t *crcs = lf_calloc(n ? (size_t)n : 1, sizeof *crcs, "zip CRCs");
    uint64_t *offs = lf_calloc(n ? (size_t)n : 1, sizeof *offs, "zip offsets");
    lf_atomic a;
    int opened = 0, rc = -1;
    if (!crcs || !offs || lf_atomic_open(&a, path)) goto out;
    opened = 1;
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        crcs[i] = lf_crc32(0, e[i].data, e[i].size);
        offs[i] = off;
        hdr.n = 0;
        local_header(&hdr, off, e[i].name, e[i].size, crcs[i], force_zip64 || e[i].size >= U32_SAT);
        if (hdr.failed || lf_atomic_write(&a, hdr.p, hdr.n) || lf_atomic_write(&a, e[i].data, e[i].size)) goto out;
        off += hdr.n + e[i].size;
    }
    for (int i = 0; i < n; i++) central_header(&cd, e[i].name, e[i].size, crcs[i], offs[i], force_zip64);
    size_t cd_size = cd.n;
    end_records(&cd, (uint64_t)n, off, cd_size);
    if (cd.failed || lf_atomic_write(&a, cd.p, cd.n)) goto out;
    opened = 0;
    rc = lf_atomic_commit(&a);
out:
    if (opened) lf_atomic_abort(&a);
    free(cd.p);
    free(hdr.p);
    free(crcs);
    free(offs);
    return rc;
}

/* ============================================================ lf_pt_write */

static int valid_top(const char *top) {
    size_t n = strlen(top);
    if (!n || n > 200 || !strcmp(top, ".") || !strcmp(top, "..")) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = top[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Names present, unique; shapes, sizes and dtypes consistent. */
static int check_write_input(const char *path, const lf_tensor *t, int n) {
    for (int i = 0; i < n; i++) {
        if (!t[i].name || !t[i].name[0]) { lf_set_error("%s: tensor %d has no name", path, i); return -1; }
        size_t es = lf_dtype_size(t[i].dtype), numel = 1, bytes;
        if (!es || t[i].ndim < 0 || t[i].ndim > LF_MAX_DIMS) {
            lf_set_error("%s: tensor '%s': bad dtype or %d dimensions", path, t[i].name, t[i].ndim);
            return -1;
        }
        for (int d = 0; d < t[i].ndim; d++) {
            if (t[i].shape[d] < 0 || lf_mul_overflow(numel, (size_t)t[i].shape[d], &numel)) {
                lf_set_error("%s: tensor '%s': bad shape", path, t[i].name);
                return -1;
            }
        }
        if (lf_mul_overflow(numel, es, &bytes) || bytes != t[i].nbytes || (bytes && !t[i].data)) {
            lf_set_error("%s: tensor '%s': %zu bytes given, shape and dtype need %zu", path, t[i].name,
                         t[i].nbytes, bytes);
            return -1;
        }
    }
    if (n < 2) return 0;
    const char **names = lf_malloc((size_t)n * sizeof *names, "name index");
    if (!names) return -1;
    for (int i = 0; i < n; i++) names[i] = t[i].name;
    qsort(names, (size_t)n, sizeof *names, cmp_str_ptr);
    for (int i = 1; i < n; i++) {
        if (!strcmp(names[i - 1], names[i])) {
            lf_set_error("%s: tensor name '%s' appears twice", path, names[i]);
            free(names);
            return -1;
        }
    }
    free(names);
    return 0;
}

/* One storage per tensor, keyed "0", "1", ...; contiguous, offset 0. */
static lf_pk_tensor *describe(const lf_tensor *t, int n) {
    lf_pk_tensor *pt = lf_calloc(n ? (size_t)n : 1, sizeof *pt, "tensor descriptions");
    if (!pt) return NULL;
    for (int i = 0; i < n; i++) {
        char key[16];
        snprintf(key, sizeof key, "%d", i);
        pt[i].name = lf_strdup(t[i].name);
        pt[i].storage_key = lf_strdup(key);
        if (!pt[i].name || !pt[i].storage_key) { lf_pk_tensors_free(pt, n); return NULL; }
        pt[i].dtype = t[i].dtype;
        pt[i].ndim = t[i].ndim;
        int64_t stride = 1;
        for (int d = t[i].ndim - 1; d >= 0; d--) {
            pt[i].size[d] = t[i].shape[d];
            pt[i].stride[d] = stride;
            stride *= t[i].shape[d] ? t[i].shape[d] : 1;
        }
        pt[i].storage_numel = (int64_t)(t[i].nbytes / lf_dtype_size(t[i].dtype));
    }
    return pt;
}

int lf_pt_write(const char *path, const char *top, const lf_tensor *tensors, int n) {
    if (!top || !valid_top(top)) {
        lf_set_error("%s: top-level folder name '%s' must be 1-200 characters of [A-Za-z0-9._-]", path,
                     top ? top : "(null)");
        return -1;
    }
    if (n < 0 || n > LF_PK_MAX_TENSORS) {
        lf_set_error("%s: %d tensors: outside 0..%d", path, n, LF_PK_MAX_TENSORS);
        return -1;
    }
    if (check_write_input(path, tensors, n)) return -1;
    int rc = -1, nent = n + 3;
    uint8_t *pkl = NULL;
    size_t pkl_len = 0;
    lf_zip_entry *ent = lf_calloc((size_t)nent, sizeof *ent, "zip entries");
    char **names = lf_calloc((size_t)nent, sizeof *names, "zip entry names");
    lf_pk_tensor *pt = describe(tensors, n);
    if (!ent || !names || !pt) goto out;
    if (lf_pickle_dump_tensors(pt, n, &pkl, &pkl_len)) { lf_prefix_error("%s: ", path); goto out; }
    size_t tl = strlen(top) + 32;
    for (int i = 0; i < nent; i++)
        if (!(names[i] = lf_malloc(tl, "zip entry name"))) goto out;
    /* torch's order: data.pkl, byteorder, the storages, version. */
    snprintf(names[0], tl, "%s/data.pkl", top);
    ent[0] = (lf_zip_entry){names[0], pkl, pkl_len};
    snprintf(names[1], tl, "%s/byteorder", top);
    ent[1] = (lf_zip_entry){names[1], "little", 6};
    for (int i = 0; i < n; i++) {
        snprintf(names[2 + i], tl, "%s/data/%d", top, i);
        ent[2 + i] = (lf_zip_entry){names[2 + i], tensors[i].data, tensors[i].nbytes};
    }
    snprintf(names[n + 2], tl, "%s/version", top);
    ent[n + 2] = (lf_zip_entry){names[n + 2], "3\n", 2};
    rc = lf_zip_write(path, ent, nent, 0);
out:
    if (names)
        for (int i = 0; i < nent; i++) free(names[i]);
    free(names);
    free(ent);
    free(pkl);
    lf_pk_tensors_free(pt, n);
    return rc;
}
