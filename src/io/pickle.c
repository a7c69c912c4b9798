/* pickle.c: a restricted unpickler for PyTorch state dicts, and the pickler
 * that lf_pt_write uses.
 *
 * The unpickler is a small stack machine over a fixed set of opcodes.  It
 * never calls anything: the only "callables" it knows are the allowed globals,
 * and REDUCE on them builds plain descriptions (an empty dict, a tensor view
 * of a storage).  Values live in a registry freed in one sweep at the end, so
 * shared references (memo, DUP) need no reference counting and no code path
 * recurses over a value (a hostile pickle may nest values arbitrarily deep).
 * All reads are bounds-checked against the pickle length; all size arithmetic
 * is overflow-checked. */
#include "pickle.h"
#include "../core/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ values */

typedef enum {
    PK_NONE, PK_BOOL, PK_INT, PK_FLOAT, PK_STR, PK_BYTES,
    PK_TUPLE, PK_LIST, PK_DICT, PK_GLOBAL, PK_STORAGE, PK_TENSOR
} pk_kind;

static const char *kind_name(pk_kind k) {
    static const char *names[] = {"None", "bool", "int", "float", "str", "bytes", "tuple",
                                  "list", "dict", "global", "storage", "tensor"};
    return names[k];
}

/* The allowed globals.  Their order is the G_* index. */
enum {
    G_ODICT, G_REBUILD_V2, G_REBUILD_PARAM,
    G_STORAGE_F32, G_STORAGE_F16, G_STORAGE_BF16, G_STORAGE_I64, G_STORAGE_I32,
    G_COUNT
};
static const struct {
    const char *module, *name;
} allowed_globals[G_COUNT] = {
    [G_ODICT] = {"collections", "OrderedDict"},
    [G_REBUILD_V2] = {"torch._utils", "_rebuild_tensor_v2"},
    [G_REBUILD_PARAM] = {"torch._utils", "_rebuild_parameter"},
    [G_STORAGE_F32] = {"torch", "FloatStorage"},
    [G_STORAGE_F16] = {"torch", "HalfStorage"},
    [G_STORAGE_BF16] = {"torch", "BFloat16Storage"},
    [G_STORAGE_I64] = {"torch", "LongStorage"},
    [G_STORAGE_I32] = {"torch", "IntStorage"},
};

static int global_is_storage(int g) { return g >= G_STORAGE_F32 && g <= G_STORAGE_I32; }

static lf_dtype storage_dtype(int g) {
    switch (g) {
    case G_STORAGE_F16: return LF_F16;
    case G_STORAGE_BF16: return LF_BF16;
    case G_STORAGE_I64: return LF_I64;
    case G_STORAGE_I32: return LF_I32;
    default: return LF_F32;
    }
}

typedef struct pk_obj pk_obj;
struct pk_obj {
    pk_kind kind;
    union {
        int64_t i;                                   /* BOOL, INT */
        double f;                                    /* FLOAT */
        int global;                                  /* GLOBAL: G_* */
        struct { const uint8_t *p; size_t n; } str;  /* STR, BYTES: points into the pickle */
        struct { pk_obj **v; size_t n, cap; } seq;   /* TUPLE, LIST; DICT as k0,v0,k1,v1.. */
        struct {
            lf_dtype dtype;
            const uint8_t *key;
            size_t keylen;
            int64_t numel;
        } storage;
        struct pk_tensor *tensor;                    /* TENSOR: out of line, keeps values small */
    } u;
};

struct pk_tensor {
    const pk_obj *storage;
    int64_t offset;
    int ndim;
    int64_t size[LF_MAX_DIMS], stride[LF_MAX_DIMS];
};

/* ------------------------------------------------------------ the machine */

typedef struct {
    const uint8_t *p;
    size_t len, pos;
    size_t op_off;      /* offset of the opcode being run (errors) */
    uint8_t op;
    pk_obj **stack;
    size_t sp, stack_cap;
    size_t *marks;      /* stack heights at each open MARK */
    size_t nmarks, marks_cap;
    pk_obj **memo;
    size_t nmemo, memo_cap;
    pk_obj **objs;      /* every value created, freed together */
    size_t nobjs, objs_cap;
    size_t ntensors;
    pk_obj *result;
} pk_vm;

/* Names of every pickle opcode, so that refusals can say what they refused. */
static const char *op_name(uint8_t op) {
    switch (op) {
    case '(': return "MARK";          case '.': return "STOP";
    case '0': return "POP";           case '1': return "POP_MARK";
    case '2': return "DUP";           case 'F': return "FLOAT";
    case 'I': return "INT";           case 'J': return "BININT";
    case 'K': return "BININT1";       case 'L': return "LONG";
    case 'M': return "BININT2";       case 'N': return "NONE";
    case 'P': return "PERSID";        case 'Q': return "BINPERSID";
    case 'R': return "REDUCE";        case 'S': return "STRING";
    case 'T': return "BINSTRING";     case 'U': return "SHORT_BINSTRING";
    case 'V': return "UNICODE";       case 'X': return "BINUNICODE";
    case 'a': return "APPEND";        case 'b': return "BUILD";
    case 'c': return "GLOBAL";        case 'd': return "DICT";
    case '}': return "EMPTY_DICT";    case 'e': return "APPENDS";
    case 'g': return "GET";           case 'h': return "BINGET";
    case 'i': return "INST";          case 'j': return "LONG_BINGET";
    case 'l': return "LIST";          case ']': return "EMPTY_LIST";
    case 'o': return "OBJ";           case 'p': return "PUT";
    case 'q': return "BINPUT";        case 'r': return "LONG_BINPUT";
    case 's': return "SETITEM";       case 't': return "TUPLE";
    case ')': return "EMPTY_TUPLE";   case 'u': return "SETITEMS";
    case 'G': return "BINFLOAT";      case 0x80: return "PROTO";
    case 0x81: return "NEWOBJ";       case 0x82: return "EXT1";
    case 0x83: return "EXT2";         case 0x84: return "EXT4";
    case 0x85: return "TUPLE1";       case 0x86: return "TUPLE2";
    case 0x87: return "TUPLE3";       case 0x88: return "NEWTRUE";
    case 0x89: return "NEWFALSE";     case 0x8a: return "LONG1";
    case 0x8b: return "LONG4";        case 'B': return "BINBYTES";
    case 'C': return "SHORT_BINBYTES"; case 0x8c: return "SHORT_BINUNICODE";
    case 0x8d: return "BINUNICODE8";  case 0x8e: return "BINBYTES8";
    case 0x8f: return "EMPTY_SET";    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";    case 0x92: return "NEWOBJ_EX";
    case 0x93: return "STACK_GLOBAL"; case 0x94: return "MEMOIZE";
    case 0x95: return "FRAME";        case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER";  case 0x98: return "READONLY_BUFFER";
    }
    return NULL;
}

/* "OPNAME at offset N: message" for the opcode being run; returns -1. */
static int vm_err(pk_vm *vm, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int vm_err(pk_vm *vm, const char *fmt, ...) {
    char msg[LF_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *name = op_name(vm->op);
    lf_set_error("%s at offset %zu: %s", name ? name : "opcode", vm->op_off, msg);
    return -1;
}

/* Room for need items of elsize bytes in p (capacity *cap): returns the
 * array, moved or not, or NULL (p untouched and still owned by the caller). */
static void *grow(void *p, size_t *cap, size_t need, size_t elsize, const char *what) {
    if (need <= *cap) return p;
    size_t nc = *cap ? *cap : 16, bytes;
    while (nc < need)
        if (lf_mul_overflow(nc, 2, &nc)) { lf_set_error("size overflow growing %s", what); return NULL; }
    if (lf_mul_overflow(nc, elsize, &bytes)) { lf_set_error("size overflow growing %s", what); return NULL; }
    void *q = lf_realloc(p, bytes, what);
    if (q) *cap = nc;
    return q;
}

static pk_obj *new_obj(pk_vm *vm, pk_kind kind) {
    if (vm->nobjs >= LF_PK_MAX_OBJECTS) {
        vm_err(vm, "more than %d values: exceeds the object count limit (LF_PK_MAX_OBJECTS in src/io/pickle.h)",
               LF_PK_MAX_OBJECTS);
        return NULL;
    }
    pk_obj **objs = grow(vm->objs, &vm->objs_cap, vm->nobjs + 1, sizeof *objs, "pickle values");
    if (!objs) return NULL;
    vm->objs = objs;
    pk_obj *o = lf_calloc(1, sizeof *o, "pickle value");
    if (!o) return NULL;
    o->kind = kind;
    vm->objs[vm->nobjs++] = o;
    return o;
}

/* Stack access never reaches below the innermost MARK (Python's "fence"). */
static size_t fence(const pk_vm *vm) { return vm->nmarks ? vm->marks[vm->nmarks - 1] : 0; }

static int push(pk_vm *vm, pk_obj *o) {
    if (!o) return -1;
    if (vm->sp >= LF_PK_MAX_STACK)
        return vm_err(vm, "more than %d values on the stack: exceeds the stack depth limit "
                      "(LF_PK_MAX_STACK in src/io/pickle.h)", LF_PK_MAX_STACK);
    pk_obj **st = grow(vm->stack, &vm->stack_cap, vm->sp + 1, sizeof *st, "pickle stack");
    if (!st) return -1;
    vm->stack = st;
    vm->stack[vm->sp++] = o;
    return 0;
}

static pk_obj *pop(pk_vm *vm) {
    if (vm->sp <= fence(vm)) {
        vm_err(vm, "stack underflow%s", vm->nmarks ? " (reaching below a MARK)" : "");
        return NULL;
    }
    return vm->stack[--vm->sp];
}

static pk_obj *top(pk_vm *vm) {
    if (vm->sp <= fence(vm)) {
        vm_err(vm, "stack underflow%s", vm->nmarks ? " (reaching below a MARK)" : "");
        return NULL;
    }
    return vm->stack[vm->sp - 1];
}

/* Close the innermost MARK: the items above it are stack[*first .. sp). */
static int pop_mark(pk_vm *vm, size_t *first) {
    if (!vm->nmarks) return vm_err(vm, "no MARK to close");
    *first = vm->marks[--vm->nmarks];
    return 0;
}

/* New tuple/list/dict holding stack[first .. sp); drops them from the stack. */
static pk_obj *seq_from_stack(pk_vm *vm, pk_kind kind, size_t first) {
    pk_obj *o = new_obj(vm, kind);
    if (!o) return NULL;
    size_t n = vm->sp - first;
    if (n) {
        o->u.seq.v = lf_malloc(n * sizeof *o->u.seq.v, "pickle container");
        if (!o->u.seq.v) return NULL;
        memcpy(o->u.seq.v, vm->stack + first, n * sizeof *o->u.seq.v);
    }
    o->u.seq.n = o->u.seq.cap = n;
    vm->sp = first;
    return o;
}

static int seq_append(pk_obj *o, pk_obj *item) {
    pk_obj **v = grow(o->u.seq.v, &o->u.seq.cap, o->u.seq.n + 1, sizeof *v, "pickle container");
    if (!v) return -1;
    o->u.seq.v = v;
    o->u.seq.v[o->u.seq.n++] = item;
    return 0;
}

/* ---------------------------------------------------------------- reading */

static int need(pk_vm *vm, uint64_t n) {
    if (n > vm->len - vm->pos)
        return vm_err(vm, "truncated pickle: needs %llu more bytes, %zu left",
                      (unsigned long long)n, vm->len - vm->pos);
    return 0;
}

/* Little-endian unsigned integer of n <= 8 bytes (caller checked need()). */
static uint64_t rd_le(pk_vm *vm, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v |= (uint64_t)vm->p[vm->pos + (size_t)i] << (8 * i);
    vm->pos += (size_t)n;
    return v;
}

static int rd_uint(pk_vm *vm, int n, uint64_t *v) {
    if (need(vm, (uint64_t)n)) return -1;
    *v = rd_le(vm, n);
    return 0;
}

/* ------------------------------------------------------------- primitives */

static int push_int(pk_vm *vm, pk_kind kind, int64_t v) {
    pk_obj *o = new_obj(vm, kind);
    if (!o) return -1;
    o->u.i = v;
    return push(vm, o);
}

/* BININT (signed 32), BININT1 (unsigned 8), BININT2 (unsigned 16). */
static int op_binint(pk_vm *vm, int nbytes) {
    uint64_t v = 0;
    if (rd_uint(vm, nbytes, &v)) return -1;
    int64_t x = nbytes == 4 ? (int64_t)(int32_t)(uint32_t)v : (int64_t)v;
    return push_int(vm, PK_INT, x);
}

/* LONG1 / LONG4: little-endian two's complement of any length; we keep
 * int64, which covers every size, stride and offset a real file can have. */
static int op_long(pk_vm *vm, int lenbytes) {
    uint64_t n = 0;
    if (rd_uint(vm, lenbytes, &n)) return -1;
    if (n > 8) return vm_err(vm, "integer of %llu bytes does not fit in 64 bits", (unsigned long long)n);
    if (need(vm, n)) return -1;
    uint64_t v = rd_le(vm, (int)n);
    if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~(uint64_t)0 << (8 * n); /* sign-extend */
    return push_int(vm, PK_INT, (int64_t)v);
}

static int op_binfloat(pk_vm *vm) {
    if (need(vm, 8)) return -1;
    uint64_t bits = 0;
    for (int i = 0; i < 8; i++) bits = bits << 8 | vm->p[vm->pos++]; /* big-endian */
    pk_obj *o = new_obj(vm, PK_FLOAT);
    if (!o) return -1;
    memcpy(&o->u.f, &bits, sizeof bits);
    return push(vm, o);
}

/* A string/bytes whose length field has lenbytes bytes (BINSTRING's is signed). */
static int op_string(pk_vm *vm, int lenbytes, int is_signed, pk_kind kind) {
    uint64_t n = 0;
    if (rd_uint(vm, lenbytes, &n)) return -1;
    if (is_signed && (n & 0x80000000u)) return vm_err(vm, "negative string length");
    if (n > LF_PK_MAX_STRING)
        return vm_err(vm, "string of %llu bytes exceeds the string length limit (%d bytes, LF_PK_MAX_STRING in "
                      "src/io/pickle.h)",
                      (unsigned long long)n, LF_PK_MAX_STRING);
    if (need(vm, n)) return -1;
    pk_obj *o = new_obj(vm, kind);
    if (!o) return -1;
    o->u.str.p = vm->p + vm->pos;
    o->u.str.n = (size_t)n;
    vm->pos += (size_t)n;
    return push(vm, o);
}

/* ---------------------------------------------------------------- globals */

/* Printable copy of an untrusted name for an error message. */
static void sanitize(const uint8_t *s, size_t n, char *out, size_t cap) {
    size_t o = 0, i = 0;
    for (; i < n && o + 8 < cap; i++) {
        if (s[i] >= 0x20 && s[i] < 0x7f) out[o++] = (char)s[i];
        else o += (size_t)snprintf(out + o, cap - o, "\\x%02x", s[i]);
    }
    if (i < n) { memcpy(out + o, "...", 3); o += 3; }
    out[o] = 0;
}

static int name_eq(const uint8_t *s, size_t n, const char *lit) {
    return strlen(lit) == n && !memcmp(s, lit, n);
}

/* Push the allowed global module.name, or refuse it by name. */
static int push_global(pk_vm *vm, const uint8_t *mod, size_t modlen, const uint8_t *name, size_t namelen) {
    for (int g = 0; g < G_COUNT; g++) {
        if (name_eq(mod, modlen, allowed_globals[g].module) && name_eq(name, namelen, allowed_globals[g].name)) {
            pk_obj *o = new_obj(vm, PK_GLOBAL);
            if (!o) return -1;
            o->u.global = g;
            return push(vm, o);
        }
    }
    char m[200], n[200];
    sanitize(mod, modlen, m, sizeof m);
    sanitize(name, namelen, n, sizeof n);
    lf_set_error("refusing global '%s %s' (only tensor-rebuilding globals are allowed; %s at offset %zu)",
                 m, n, op_name(vm->op), vm->op_off);
    return -1;
}

/* One newline-terminated line of GLOBAL's argument. */
static int rd_line(pk_vm *vm, const uint8_t **s, size_t *n) {
    const size_t max = 256; /* longest module or name we accept */
    size_t left = vm->len - vm->pos;
    const uint8_t *start = vm->p + vm->pos;
    const uint8_t *nl = memchr(start, '\n', left < max + 1 ? left : max + 1);
    if (!nl) {
        if (left <= max) return vm_err(vm, "truncated pickle: unterminated name");
        return vm_err(vm, "name longer than %zu bytes exceeds the global name length limit (no allowed "
                      "global is that long)", max);
    }
    *s = start;
    *n = (size_t)(nl - start);
    vm->pos += *n + 1;
    return 0;
}

static int op_global(pk_vm *vm) {
    const uint8_t *mod = NULL, *name = NULL;
    size_t modlen = 0, namelen = 0;
    if (rd_line(vm, &mod, &modlen) || rd_line(vm, &name, &namelen)) return -1;
    return push_global(vm, mod, modlen, name, namelen);
}

static int op_stack_global(pk_vm *vm) {
    pk_obj *name = pop(vm), *mod = name ? pop(vm) : NULL;
    if (!mod) return -1;
    if (mod->kind != PK_STR || name->kind != PK_STR)
        return vm_err(vm, "module and name must be strings, got %s and %s",
                      kind_name(mod->kind), kind_name(name->kind));
    return push_global(vm, mod->u.str.p, mod->u.str.n, name->u.str.p, name->u.str.n);
}

/* ------------------------------------------------------------------- memo */

static int op_put(pk_vm *vm, uint64_t idx) {
    pk_obj *o = top(vm);
    if (!o) return -1;
    if (idx >= LF_PK_MAX_MEMO)
        return vm_err(vm, "memo index %llu exceeds the memo size limit (%d, LF_PK_MAX_MEMO in src/io/pickle.h)",
                      (unsigned long long)idx, LF_PK_MAX_MEMO);
    /* Picklers number memo entries 0, 1, 2, ...; requiring that keeps the
     * memo dense without letting one huge index allocate a huge table. */
    if (idx > vm->nmemo)
        return vm_err(vm, "memo index %llu skips ahead (memo has %zu entries)",
                      (unsigned long long)idx, vm->nmemo);
    if (idx == vm->nmemo) {
        pk_obj **m = grow(vm->memo, &vm->memo_cap, vm->nmemo + 1, sizeof *m, "pickle memo");
        if (!m) return -1;
        vm->memo = m;
        vm->nmemo++;
    }
    vm->memo[idx] = o;
    return 0;
}

static int op_get(pk_vm *vm, uint64_t idx) {
    if (idx >= vm->nmemo)
        return vm_err(vm, "memo index %llu was never stored (memo has %zu entries)",
                      (unsigned long long)idx, vm->nmemo);
    return push(vm, vm->memo[idx]);
}

/* ------------------------------------------------------------- containers */

static int op_mark(pk_vm *vm) {
    if (vm->nmarks >= LF_PK_MAX_MARKS)
        return vm_err(vm, "more than %d open MARKs: exceeds the nesting depth limit (LF_PK_MAX_MARKS in "
                      "src/io/pickle.h)", LF_PK_MAX_MARKS);
    size_t *mk = grow(vm->marks, &vm->marks_cap, vm->nmarks + 1, sizeof *mk, "pickle marks");
    if (!mk) return -1;
    vm->marks = mk;
    vm->marks[vm->nmarks++] = vm->sp;
    return 0;
}

/* TUPLE / LIST / DICT: build from the items above the MARK. */
static int op_build_marked(pk_vm *vm, pk_kind kind) {
    size_t first = 0;
    if (pop_mark(vm, &first)) return -1;
    if (kind == PK_DICT && (vm->sp - first) % 2)
        return vm_err(vm, "odd number of items (%zu) for a dict", vm->sp - first);
    return push(vm, seq_from_stack(vm, kind, first));
}

/* TUPLE1/2/3: the last n items, regardless of MARKs above the fence. */
static int op_tuple_n(pk_vm *vm, size_t n) {
    if (vm->sp - fence(vm) < n) return vm_err(vm, "stack underflow");
    return push(vm, seq_from_stack(vm, PK_TUPLE, vm->sp - n));
}

static int op_empty(pk_vm *vm, pk_kind kind) { return push(vm, new_obj(vm, kind)); }

/* APPEND (marked = 0) / APPENDS (marked = 1). */
static int op_append(pk_vm *vm, int marked) {
    size_t first = 0;
    if (marked) {
        if (pop_mark(vm, &first)) return -1;
    } else {
        if (vm->sp - fence(vm) < 1) return vm_err(vm, "stack underflow");
        first = vm->sp - 1;
    }
    /* the list sits just below the items, and above the enclosing MARK */
    if (first <= fence(vm)) return vm_err(vm, "no list to append to");
    pk_obj *list = vm->stack[first - 1];
    if (list->kind != PK_LIST) return vm_err(vm, "appending to a %s, not a list", kind_name(list->kind));
    for (size_t i = first; i < vm->sp; i++)
        if (seq_append(list, vm->stack[i])) return -1;
    vm->sp = first;
    return 0;
}

/* SETITEM (marked = 0) / SETITEMS (marked = 1).  Keys are kept in order with
 * duplicates; the final check refuses duplicate keys (torch never writes them). */
static int op_setitem(pk_vm *vm, int marked) {
    size_t first = 0;
    if (marked) {
        if (pop_mark(vm, &first)) return -1;
    } else {
        if (vm->sp - fence(vm) < 2) return vm_err(vm, "stack underflow");
        first = vm->sp - 2;
    }
    if ((vm->sp - first) % 2) return vm_err(vm, "odd number of items (%zu) for a dict", vm->sp - first);
    if (first <= fence(vm)) return vm_err(vm, "no dict to set items in");
    pk_obj *dict = vm->stack[first - 1];
    if (dict->kind != PK_DICT) return vm_err(vm, "setting items in a %s, not a dict", kind_name(dict->kind));
    for (size_t i = first; i < vm->sp; i++)
        if (seq_append(dict, vm->stack[i])) return -1;
    vm->sp = first;
    return 0;
}

/* --------------------------------------------------- persistent ids: storages */

static int str_is(const pk_obj *o, const char *lit) {
    return o->kind == PK_STR && name_eq(o->u.str.p, o->u.str.n, lit);
}

/* BINPERSID: only ('storage', <storage class>, key, location, numel). */
static int op_binpersid(pk_vm *vm) {
    pk_obj *pid = pop(vm);
    if (!pid) return -1;
    const char *form = "('storage', <storage class>, key, location, numel)";
    if (pid->kind != PK_TUPLE || pid->u.seq.n != 5 || !str_is(pid->u.seq.v[0], "storage"))
        return vm_err(vm, "persistent id is not %s", form);
    pk_obj **a = pid->u.seq.v;
    if (a[1]->kind != PK_GLOBAL || !global_is_storage(a[1]->u.global))
        return vm_err(vm, "persistent id names a %s, not a storage class (expected %s)",
                      kind_name(a[1]->kind), form);
    if (a[2]->kind != PK_STR || a[3]->kind != PK_STR || a[4]->kind != PK_INT)
        return vm_err(vm, "persistent id has a %s key, %s location and %s numel (expected %s)",
                      kind_name(a[2]->kind), kind_name(a[3]->kind), kind_name(a[4]->kind), form);
    if (a[2]->u.str.n == 0 || a[2]->u.str.n > LF_PK_MAX_KEY || memchr(a[2]->u.str.p, 0, a[2]->u.str.n))
        return vm_err(vm, "storage key of %zu bytes is empty, longer than %d bytes or holds a NUL",
                      a[2]->u.str.n, LF_PK_MAX_KEY);
    if (a[4]->u.i < 0) return vm_err(vm, "negative storage numel %lld", (long long)a[4]->u.i);
    pk_obj *st = new_obj(vm, PK_STORAGE);
    if (!st) return -1;
    st->u.storage.dtype = storage_dtype(a[1]->u.global);
    st->u.storage.key = a[2]->u.str.p;
    st->u.storage.keylen = a[2]->u.str.n;
    st->u.storage.numel = a[4]->u.i;
    return push(vm, st);
}

/* ------------------------------------------------------------ REDUCE targets */

static int is_boolish(const pk_obj *o) { return o->kind == PK_BOOL || o->kind == PK_INT; }

/* A tuple of at most LF_MAX_DIMS ints into dims; returns the count or -1. */
static int int_tuple(pk_vm *vm, const pk_obj *o, const char *what, int64_t *dims) {
    if (o->kind != PK_TUPLE) return vm_err(vm, "%s is a %s, not a tuple", what, kind_name(o->kind));
    if (o->u.seq.n > LF_MAX_DIMS)
        return vm_err(vm, "%s has %zu dimensions: exceeds the dimension limit (%d, LF_MAX_DIMS)", what, o->u.seq.n,
                      LF_MAX_DIMS);
    for (size_t i = 0; i < o->u.seq.n; i++) {
        const pk_obj *d = o->u.seq.v[i];
        if (d->kind != PK_INT) return vm_err(vm, "%s[%zu] is a %s, not an int", what, i, kind_name(d->kind));
        if (d->u.i < 0) return vm_err(vm, "%s[%zu] is negative (%lld)", what, i, (long long)d->u.i);
        dims[i] = d->u.i;
    }
    return (int)o->u.seq.n;
}

/* The tensor must lie inside the numel its storage claims:
 * offset + sum((size_i - 1) * stride_i) < numel (or offset <= numel if empty). */
static int check_extent(pk_vm *vm, const pk_obj *t) {
    int64_t numel = 1, last = t->u.tensor->offset;
    for (int i = 0; i < t->u.tensor->ndim; i++)
        if (__builtin_mul_overflow(numel, t->u.tensor->size[i], &numel))
            return vm_err(vm, "tensor element count overflows");
    int64_t snumel = t->u.tensor->storage->u.storage.numel;
    if (numel == 0) {
        if (last > snumel)
            return vm_err(vm, "storage offset %lld is beyond the storage's %lld elements",
                          (long long)last, (long long)snumel);
        return 0;
    }
    for (int i = 0; i < t->u.tensor->ndim; i++) {
        int64_t step;
        if (__builtin_mul_overflow(t->u.tensor->size[i] - 1, t->u.tensor->stride[i], &step) ||
            __builtin_add_overflow(last, step, &last))
            return vm_err(vm, "tensor extent overflows");
    }
    if (last >= snumel)
        return vm_err(vm, "tensor reaches element %lld of storage '%.*s', which holds %lld elements",
                      (long long)last, (int)t->u.tensor->storage->u.storage.keylen,
                      (const char *)t->u.tensor->storage->u.storage.key, (long long)snumel);
    return 0;
}

/* _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]) */
static int rebuild_tensor(pk_vm *vm, const pk_obj *args) {
    const char *fn = "torch._utils._rebuild_tensor_v2";
    size_t n = args->u.seq.n;
    if (n != 6 && n != 7) return vm_err(vm, "%s takes 6 or 7 arguments, got %zu", fn, n);
    pk_obj **a = args->u.seq.v;
    if (a[0]->kind != PK_STORAGE)
        return vm_err(vm, "%s: storage argument is a %s, not a storage persistent id", fn, kind_name(a[0]->kind));
    if (a[1]->kind != PK_INT || a[1]->u.i < 0)
        return vm_err(vm, "%s: storage offset is a %s or negative", fn, kind_name(a[1]->kind));
    if (!is_boolish(a[4])) return vm_err(vm, "%s: requires_grad is a %s", fn, kind_name(a[4]->kind));
    if (a[5]->kind != PK_DICT || a[5]->u.seq.n)
        return vm_err(vm, "%s: backward hooks must be an empty dict, got a %s", fn, kind_name(a[5]->kind));
    if (n == 7 && a[6]->kind != PK_DICT && a[6]->kind != PK_NONE)
        return vm_err(vm, "%s: metadata is a %s, not a dict", fn, kind_name(a[6]->kind));
    if (vm->ntensors >= LF_PK_MAX_TENSORS)
        return vm_err(vm, "more than %d tensors: exceeds the tensor count limit (LF_PK_MAX_TENSORS in "
                      "src/io/pickle.h)", LF_PK_MAX_TENSORS);
    pk_obj *t = new_obj(vm, PK_TENSOR);
    if (!t || !(t->u.tensor = lf_calloc(1, sizeof *t->u.tensor, "pickle tensor"))) return -1;
    int nd = int_tuple(vm, a[2], "size", t->u.tensor->size);
    if (nd < 0) return -1;
    int ns = int_tuple(vm, a[3], "stride", t->u.tensor->stride);
    if (ns < 0) return -1;
    if (nd != ns) return vm_err(vm, "%s: size has %d dimensions but stride has %d", fn, nd, ns);
    t->u.tensor->storage = a[0];
    t->u.tensor->offset = a[1]->u.i;
    t->u.tensor->ndim = nd;
    if (check_extent(vm, t)) return -1;
    vm->ntensors++;
    return push(vm, t);
}

/* _rebuild_parameter(tensor, requires_grad, hooks): an nn.Parameter is its tensor. */
static int rebuild_parameter(pk_vm *vm, const pk_obj *args) {
    const char *fn = "torch._utils._rebuild_parameter";
    if (args->u.seq.n != 3) return vm_err(vm, "%s takes 3 arguments, got %zu", fn, args->u.seq.n);
    pk_obj **a = args->u.seq.v;
    if (a[0]->kind != PK_TENSOR) return vm_err(vm, "%s: data is a %s, not a tensor", fn, kind_name(a[0]->kind));
    if (!is_boolish(a[1])) return vm_err(vm, "%s: requires_grad is a %s", fn, kind_name(a[1]->kind));
    if (a[2]->kind != PK_DICT || a[2]->u.seq.n)
        return vm_err(vm, "%s: backward hooks must be an empty dict, got a %s", fn, kind_name(a[2]->kind));
    return push(vm, a[0]);
}

/* REDUCE: callable(*args), only for the allowed callables. */
static int op_reduce(pk_vm *vm) {
    pk_obj *args = pop(vm), *fn = args ? pop(vm) : NULL;
    if (!fn) return -1;
    if (fn->kind != PK_GLOBAL)
        return vm_err(vm, "the callable is a %s, not an allowed global", kind_name(fn->kind));
    if (args->kind != PK_TUPLE) return vm_err(vm, "the arguments are a %s, not a tuple", kind_name(args->kind));
    switch (fn->u.global) {
    case G_ODICT:
        if (args->u.seq.n)
            return vm_err(vm, "collections.OrderedDict called with %zu arguments (only OrderedDict() is supported)",
                          args->u.seq.n);
        return op_empty(vm, PK_DICT);
    case G_REBUILD_V2: return rebuild_tensor(vm, args);
    case G_REBUILD_PARAM: return rebuild_parameter(vm, args);
    default:
        return vm_err(vm, "'%s %s' is a storage class and is not called", allowed_globals[fn->u.global].module,
                      allowed_globals[fn->u.global].name);
    }
}

/* BUILD: obj.__setstate__(state) in Python.  Exactly one use is common and
 * harmless: torch.save(module.state_dict()) pickles the OrderedDict's
 * _metadata attribute (per-module versions) this way.  Attributes on a dict
 * add no items, so a dict state on a dict is checked and dropped; BUILD on
 * anything else is refused. */
static int op_build(pk_vm *vm) {
    pk_obj *state = pop(vm), *obj = state ? top(vm) : NULL;
    if (!obj) return -1;
    if (obj->kind != PK_DICT || state->kind != PK_DICT)
        return vm_err(vm, "setting the state of a %s from a %s is not allowed (only a state dict's "
                      "metadata: a dict set on a dict)", kind_name(obj->kind), kind_name(state->kind));
    return 0;
}

/* ------------------------------------------------------------- dispatcher */

static int op_refused(pk_vm *vm) {
    const char *name = op_name(vm->op);
    char ch[8] = "";
    if (vm->op >= 0x20 && vm->op < 0x7f) snprintf(ch, sizeof ch, " '%c'", vm->op);
    if (!name) {
        lf_set_error("unknown opcode 0x%02x%s at offset %zu", vm->op, ch, vm->op_off);
        return -1;
    }
    lf_set_error("opcode %s (0x%02x%s) at offset %zu is not allowed in a tensor checkpoint", name, vm->op, ch,
                 vm->op_off);
    return -1;
}

static int step(pk_vm *vm) {
    uint64_t v = 0;
    switch (vm->op) {
    case 0x80: /* PROTO */
        if (rd_uint(vm, 1, &v)) return -1;
        if (v < 2 || v > 5) return vm_err(vm, "unsupported pickle protocol %llu", (unsigned long long)v);
        return 0;
    case 0x95: /* FRAME: only a read-ahead hint; check it is inside the data */
        if (rd_uint(vm, 8, &v)) return -1;
        if (v > vm->len - vm->pos) return vm_err(vm, "frame of %llu bytes runs past the end", (unsigned long long)v);
        return 0;
    case '(': return op_mark(vm);
    case '0': return pop(vm) ? 0 : -1;
    case '1': { size_t first = 0; if (pop_mark(vm, &first)) return -1; vm->sp = first; return 0; }
    case '2': { pk_obj *o = top(vm); return o ? push(vm, o) : -1; }
    case 'N': return op_empty(vm, PK_NONE);
    case 0x88: return push_int(vm, PK_BOOL, 1);
    case 0x89: return push_int(vm, PK_BOOL, 0);
    case 'J': return op_binint(vm, 4);
    case 'K': return op_binint(vm, 1);
    case 'M': return op_binint(vm, 2);
    case 0x8a: return op_long(vm, 1);
    case 0x8b: return op_long(vm, 4);
    case 'G': return op_binfloat(vm);
    case 'X': return op_string(vm, 4, 0, PK_STR);
    case 0x8c: return op_string(vm, 1, 0, PK_STR);
    case 0x8d: return op_string(vm, 8, 0, PK_STR);
    case 'T': return op_string(vm, 4, 1, PK_STR);
    case 'U': return op_string(vm, 1, 0, PK_STR);
    case 'B': return op_string(vm, 4, 0, PK_BYTES);
    case 'C': return op_string(vm, 1, 0, PK_BYTES);
    case 0x8e: return op_string(vm, 8, 0, PK_BYTES);
    case ')': return op_empty(vm, PK_TUPLE);
    case 't': return op_build_marked(vm, PK_TUPLE);
    case 0x85: return op_tuple_n(vm, 1);
    case 0x86: return op_tuple_n(vm, 2);
    case 0x87: return op_tuple_n(vm, 3);
    case ']': return op_empty(vm, PK_LIST);
    case 'l': return op_build_marked(vm, PK_LIST);
    case 'a': return op_append(vm, 0);
    case 'e': return op_append(vm, 1);
    case '}': return op_empty(vm, PK_DICT);
    case 'd': return op_build_marked(vm, PK_DICT);
    case 's': return op_setitem(vm, 0);
    case 'u': return op_setitem(vm, 1);
    case 'q': return rd_uint(vm, 1, &v) ? -1 : op_put(vm, v);
    case 'r': return rd_uint(vm, 4, &v) ? -1 : op_put(vm, v);
    case 0x94: return op_put(vm, vm->nmemo);
    case 'h': return rd_uint(vm, 1, &v) ? -1 : op_get(vm, v);
    case 'j': return rd_uint(vm, 4, &v) ? -1 : op_get(vm, v);
    case 'c': return op_global(vm);
    case 0x93: return op_stack_global(vm);
    case 'R': return op_reduce(vm);
    case 'b': return op_build(vm);
    case 'Q': return op_binpersid(vm);
    default: return op_refused(vm);
    }
}

static int run(pk_vm *vm) {
    while (vm->pos < vm->len) {
        vm->op_off = vm->pos;
        vm->op = vm->p[vm->pos++];
        if (vm->op == '.') { /* STOP: the value on top is the result */
            vm->result = top(vm);
            return vm->result ? 0 : -1;
        }
        if (step(vm)) return -1;
    }
    lf_set_error("truncated pickle: no STOP opcode in %zu bytes", vm->len);
    return -1;
}

static void vm_free(pk_vm *vm) {
    for (size_t i = 0; i < vm->nobjs; i++) {
        pk_obj *o = vm->objs[i];
        if (o->kind == PK_TUPLE || o->kind == PK_LIST || o->kind == PK_DICT) free(o->u.seq.v);
        if (o->kind == PK_TENSOR) free(o->u.tensor);
        free(o);
    }
    free(vm->objs);
    free(vm->stack);
    free(vm->marks);
    free(vm->memo);
}

/* ---------------------------------------------------------- the result */

static int valid_utf8(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!len || len > n - i) return 0;
        for (size_t k = 1; k < len; k++)
            if ((s[i + k] & 0xc0) != 0x80) return 0;
        i += len;
    }
    return 1;
}

void lf_pk_tensors_free(lf_pk_tensor *t, int n) {
    if (!t) return;
    for (int i = 0; i < n; i++) { free(t[i].name); free(t[i].storage_key); }
    free(t);
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(const lf_pk_tensor *const *)a)->name, (*(const lf_pk_tensor *const *)b)->name);
}

/* Duplicate keys: Python would keep the last value silently; refuse instead. */
static int check_unique(const lf_pk_tensor *t, int n) {
    if (n < 2) return 0;
    const lf_pk_tensor **idx = lf_malloc((size_t)n * sizeof *idx, "key index");
    if (!idx) return -1;
    for (int i = 0; i < n; i++) idx[i] = &t[i];
    qsort(idx, (size_t)n, sizeof *idx, cmp_name);
    for (int i = 1; i < n; i++) {
        if (!strcmp(idx[i - 1]->name, idx[i]->name)) {
            lf_set_error("key '%s' appears twice in the dict", idx[i]->name);
            free(idx);
            return -1;
        }
    }
    free(idx);
    return 0;
}

static int to_tensors(const pk_obj *d, lf_pk_tensor **out, int *n) {
    if (d->kind != PK_DICT) {
        lf_set_error("the pickle holds a %s, not a dict of tensors", kind_name(d->kind));
        return -1;
    }
    size_t count = d->u.seq.n / 2;
    /* one tensor may be referenced under many keys, so count the keys too */
    if (count > (size_t)LF_PK_MAX_TENSORS) {
        lf_set_error("dict of %zu entries exceeds the tensor count limit (%d, LF_PK_MAX_TENSORS in src/io/pickle.h)",
                     count, LF_PK_MAX_TENSORS);
        return -1;
    }
    lf_pk_tensor *t = lf_calloc(count, sizeof *t, "tensor list"); /* unfilled names stay NULL */
    if (!t) return -1;
    for (size_t i = 0; i < count; i++) {
        const pk_obj *k = d->u.seq.v[2 * i], *v = d->u.seq.v[2 * i + 1];
        if (k->kind != PK_STR) {
            lf_set_error("dict key %zu is a %s, not a string", i, kind_name(k->kind));
            goto fail;
        }
        if (!k->u.str.n || memchr(k->u.str.p, 0, k->u.str.n) || !valid_utf8(k->u.str.p, k->u.str.n)) {
            lf_set_error("dict key %zu is empty, holds a NUL byte or is not UTF-8", i);
            goto fail;
        }
        t[i].name = lf_strndup((const char *)k->u.str.p, k->u.str.n);
        if (!t[i].name) goto fail;
        if (v->kind != PK_TENSOR) {
            lf_set_error("value of '%s' is a %s, not a tensor (nested structures are not supported)",
                         t[i].name, kind_name(v->kind));
            goto fail;
        }
        const pk_obj *st = v->u.tensor->storage;
        t[i].storage_key = lf_strndup((const char *)st->u.storage.key, st->u.storage.keylen);
        if (!t[i].storage_key) goto fail;
        t[i].dtype = st->u.storage.dtype;
        t[i].storage_numel = st->u.storage.numel;
        t[i].offset = v->u.tensor->offset;
        t[i].ndim = v->u.tensor->ndim;
        memcpy(t[i].size, v->u.tensor->size, sizeof t[i].size);
        memcpy(t[i].stride, v->u.tensor->stride, sizeof t[i].stride);
    }
    if (check_unique(t, (int)count)) goto fail;
    *out = t;
    *n = (int)count;
    return 0;
fail:
    lf_pk_tensors_free(t, (int)count);
    return -1;
}

int lf_pickle_load_tensors(const uint8_t *data, size_t len, lf_pk_tensor **out, int *n) {
    *out = NULL;
    *n = 0;
    pk_vm vm;
    memset(&vm, 0, sizeof vm);
    vm.p = data;
    vm.len = len;
    int rc = run(&vm);
    if (rc == 0) rc = to_tensors(vm.result, out, n);
    vm_free(&vm);
    return rc;
}

/* ================================================================ pickler */

typedef struct {
    uint8_t *p;
    size_t n, cap;
    int failed;
    int memo_of[G_COUNT]; /* memo index of each global once written, else -1 */
    int nmemo;
} pk_buf;

static void put(pk_buf *b, const void *data, size_t n) {
    if (b->failed) return;
    size_t need_n = 0;
    uint8_t *p = NULL;
    if (lf_add_overflow(b->n, n, &need_n) || !(p = grow(b->p, &b->cap, need_n, 1, "pickle output"))) {
        b->failed = 1;
        return;
    }
    b->p = p;
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

static void put_byte(pk_buf *b, uint8_t c) { put(b, &c, 1); }

static void put_le(pk_buf *b, uint64_t v, int n) {
    uint8_t tmp[8];
    for (int i = 0; i < n; i++) tmp[i] = (uint8_t)(v >> (8 * i));
    put(b, tmp, (size_t)n);
}

/* The shortest encoding, as Python's pickler chooses it. */
static void put_int(pk_buf *b, int64_t v) {
    if (v >= 0 && v < 256) { put_byte(b, 'K'); put_le(b, (uint64_t)v, 1); }
    else if (v >= 0 && v < 65536) { put_byte(b, 'M'); put_le(b, (uint64_t)v, 2); }
    else if (v >= INT32_MIN && v <= INT32_MAX) { put_byte(b, 'J'); put_le(b, (uint64_t)v, 4); }
    else {
        /* LONG1: minimal little-endian two's complement */
        int n = 8;
        while (n > 1) {
            int64_t hi = v >> (8 * (n - 1) - 1); /* top byte plus the sign bit below it */
            if (hi != 0 && hi != -1) break;
            n--;
        }
        put_byte(b, 0x8a);
        put_byte(b, (uint8_t)n);
        put_le(b, (uint64_t)v, n);
    }
}

static void put_str(pk_buf *b, const char *s) {
    size_t n = strlen(s);
    if (n > UINT32_MAX) { lf_set_error("string too long to pickle"); b->failed = 1; return; }
    put_byte(b, 'X');
    put_le(b, n, 4);
    put(b, s, n);
}

/* GLOBAL the first time (memoized), BINGET afterwards. */
static void put_global(pk_buf *b, int g) {
    if (b->memo_of[g] >= 0) {
        put_byte(b, 'h');
        put_byte(b, (uint8_t)b->memo_of[g]);
        return;
    }
    put_byte(b, 'c');
    put(b, allowed_globals[g].module, strlen(allowed_globals[g].module));
    put_byte(b, '\n');
    put(b, allowed_globals[g].name, strlen(allowed_globals[g].name));
    put_byte(b, '\n');
    b->memo_of[g] = b->nmemo++; /* fewer than 256 globals: BINPUT suffices */
    put_byte(b, 'q');
    put_byte(b, (uint8_t)b->memo_of[g]);
}

static void put_tuple(pk_buf *b, const int64_t *v, int n) {
    static const uint8_t small[] = {')', 0x85, 0x86, 0x87};
    if (n > 3) put_byte(b, '(');
    for (int i = 0; i < n; i++) put_int(b, v[i]);
    put_byte(b, n > 3 ? 't' : small[n]);
}

static int storage_global(lf_dtype t) {
    switch (t) {
    case LF_F32: return G_STORAGE_F32;
    case LF_F16: return G_STORAGE_F16;
    case LF_BF16: return G_STORAGE_BF16;
    case LF_I64: return G_STORAGE_I64;
    case LF_I32: return G_STORAGE_I32;
    }
    return -1;
}

/* _rebuild_tensor_v2(persid(storage), offset, size, stride, False, OrderedDict()) */
static void put_tensor(pk_buf *b, const lf_pk_tensor *t) {
    put_global(b, G_REBUILD_V2);
    put_byte(b, '(');
    put_byte(b, '(');
    put_str(b, "storage");
    put_global(b, storage_global(t->dtype));
    put_str(b, t->storage_key);
    put_str(b, "cpu");
    put_int(b, t->storage_numel);
    put_byte(b, 't');
    put_byte(b, 'Q');
    put_int(b, t->offset);
    put_tuple(b, t->size, t->ndim);
    put_tuple(b, t->stride, t->ndim);
    put_byte(b, 0x89);
    put_global(b, G_ODICT);
    put_byte(b, ')');
    put_byte(b, 'R');
    put_byte(b, 't');
    put_byte(b, 'R');
}

int lf_pickle_dump_tensors(const lf_pk_tensor *t, int n, uint8_t **out, size_t *len) {
    *out = NULL;
    *len = 0;
    pk_buf b;
    memset(&b, 0, sizeof b);
    for (int g = 0; g < G_COUNT; g++) b.memo_of[g] = -1;
    for (int i = 0; i < n; i++) {
        if (storage_global(t[i].dtype) < 0 || t[i].ndim < 0 || t[i].ndim > LF_MAX_DIMS) {
            lf_set_error("tensor '%s': cannot pickle dtype %d with %d dimensions", t[i].name, (int)t[i].dtype,
                         t[i].ndim);
            return -1;
        }
    }
    put_byte(&b, 0x80);
    put_byte(&b, 2);
    put_global(&b, G_ODICT);
    put_byte(&b, ')');
    put_byte(&b, 'R');
    /* SETITEMS in batches of 1000 pairs, as Python does: keeps the reader's
     * stack small whatever the number of tensors. */
    for (int i = 0; i < n; i += 1000) {
        put_byte(&b, '(');
        for (int k = i; k < n && k < i + 1000; k++) {
            put_str(&b, t[k].name);
            put_tensor(&b, &t[k]);
        }
        put_byte(&b, 'u');
    }
    put_byte(&b, '.');
    if (b.failed) {
        free(b.p);
        return -1;
    }
    *out = b.p;
    *len = b.n;
    return 0;
}
