/* The byte layout of a .kiln file, shared by its writer and reader (docs/format.md explains it).
 * Every number on disk is little-endian; kiln only builds for little-endian hosts, where the bytes of
 * a number in memory are its bytes on disk, so fields are memcpy'd and weights are used in place. */
#ifndef KN_KILN_FILE_LAYOUT_H
#define KN_KILN_FILE_LAYOUT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/graph.h"
#include "format/storage.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the .kiln reader and writer need a little-endian host (the file is mmapped and used in place)"
#endif

/* PNG-style: a non-ASCII first byte, then the name, then CR LF and ^Z so that a text-mode transfer
 * that rewrites line endings is caught by the magic check. */
#define KN_KILN_MAGIC "\x89KILN\r\n\x1a"
#define KN_KILN_MAGIC_BYTES 8

enum {
    KN_KILN_ALIGN = 64,              /* every section and every tensor starts at a multiple of this */
    KN_KILN_HEADER_BYTES = 64,
    KN_KILN_DIR_ENTRY_BYTES = 32,    /* one section directory entry; the directory follows the header */
    KN_KILN_MAX_SECTIONS = 64,
    KN_KILN_TENSOR_ENTRY_BYTES = 96, /* a tensor-table entry in formats 1.0 to 1.2; later minors may grow it */
    KN_KILN_ENTRY_DIMS = 6,          /* dims slots of a tensor-table entry: stored tensors have rank <= 6 */
};

/* Header fields (byte offsets); the magic and the version never move, so any kiln can say which
 * version a file is before it understands anything else. */
enum {
    KN_KILN_AT_MAJOR = 8,            /* u16 */
    KN_KILN_AT_MINOR = 10,           /* u16 */
    KN_KILN_AT_N_SECTIONS = 12,      /* u32 */
    KN_KILN_AT_FILE_BYTES = 16,      /* u64 */
    KN_KILN_AT_DIRECTORY_CRC = 24,   /* u32, over the whole section directory */
    KN_KILN_AT_RESERVED = 28,        /* zero up to the header CRC; later minors may use it */
    KN_KILN_AT_HEADER_CRC = 60,      /* u32, over header bytes [0, 60) */
};

/* Tensor-table entry flags (a reader rejects the ones it does not know). */
enum {
    /* Format 1.2: the entry's packed codes run on across rows (docs/format.md, "Storage encodings");
     * without it they are 1.1's rows starting on a byte. Set only where the two layouts differ. */
    KN_KILN_FLAG_PACKED_CONTIGUOUS = 0x01,
};

/* "No tensor / no value" in u32 reference fields. */
#define KN_KILN_NONE 0xFFFFFFFFu

/* Section kinds: four ASCII letters read as a little-endian u32 ("GRPH" is the bytes G R P H). */
#define KN_KILN_FOURCC(a, b, c, d) \
    ((uint32_t)(a) | (uint32_t)(b) << 8 | (uint32_t)(c) << 16 | (uint32_t)(d) << 24)
#define KN_KILN_SEC_GRAPH KN_KILN_FOURCC('G', 'R', 'P', 'H')       /* values, nodes, graph inputs/outputs */
#define KN_KILN_SEC_META KN_KILN_FOURCC('M', 'E', 'T', 'A')        /* class names, mean/std, key/values */
#define KN_KILN_SEC_TENSORS KN_KILN_FOURCC('T', 'T', 'A', 'B')     /* tensor table of the initializers */
#define KN_KILN_SEC_DATA KN_KILN_FOURCC('D', 'A', 'T', 'A')        /* initializer bytes */
#define KN_KILN_SEC_EXTRAS KN_KILN_FOURCC('X', 'T', 'A', 'B')      /* tensor table + names of the extras */
#define KN_KILN_SEC_EXTRA_DATA KN_KILN_FOURCC('X', 'D', 'A', 'T')  /* extras bytes */

/* Codes on disk. They are the format's own numbers, mapped to kiln's enums by the functions below, so
 * reordering an enum in the code can never change what a file means. Dtype codes double as the "plain"
 * storage encodings of the tensor table (0-15: raw elements of that dtype). */
enum {
    KN_KILN_DT_F32 = 0, KN_KILN_DT_I64 = 1, KN_KILN_DT_I32 = 2, KN_KILN_DT_U8 = 3, KN_KILN_DT_F16 = 4, KN_KILN_DT_BF16 = 5,
    KN_KILN_DT_I8 = 6, KN_KILN_DT_BOOL = 7, KN_KILN_DT_F64 = 8, KN_KILN_DT_I16 = 9, KN_KILN_DT_U16 = 10,
    KN_KILN_DT_U32 = 11, KN_KILN_DT_U64 = 12
};
enum { KN_KILN_KIND_INPUT = 0, KN_KILN_KIND_PARAM, KN_KILN_KIND_STATE, KN_KILN_KIND_CONST, KN_KILN_KIND_ACT };
enum { KN_KILN_ATTR_INT = 0, KN_KILN_ATTR_FLOAT, KN_KILN_ATTR_INTS, KN_KILN_ATTR_STRING };

static inline uint32_t kn_kiln_dtype_code(kn_dtype dtype) {
    switch (dtype) {
    case KN_F32: return KN_KILN_DT_F32;
    case KN_I64: return KN_KILN_DT_I64;
    case KN_I32: return KN_KILN_DT_I32;
    case KN_U8: return KN_KILN_DT_U8;
    case KN_I8: return KN_KILN_DT_I8;
    case KN_BOOL: return KN_KILN_DT_BOOL;
    case KN_F16: return KN_KILN_DT_F16;
    case KN_F64: return KN_KILN_DT_F64;
    case KN_I16: return KN_KILN_DT_I16;
    case KN_U16: return KN_KILN_DT_U16;
    case KN_U32: return KN_KILN_DT_U32;
    case KN_U64: return KN_KILN_DT_U64;
    case KN_BF16: return KN_KILN_DT_BF16;
    case KN_STRING: break; /* not stored: kiln_file_write.c refuses it by name */
    case KN_DTYPE_COUNT: break;
    }
    return KN_KILN_NONE;
}

static inline bool kn_kiln_dtype_from_code(uint32_t code, kn_dtype *dtype) {
    switch (code) {
    case KN_KILN_DT_F32: *dtype = KN_F32; return true;
    case KN_KILN_DT_I64: *dtype = KN_I64; return true;
    case KN_KILN_DT_I32: *dtype = KN_I32; return true;
    case KN_KILN_DT_U8: *dtype = KN_U8; return true;
    case KN_KILN_DT_I8: *dtype = KN_I8; return true;
    case KN_KILN_DT_BOOL: *dtype = KN_BOOL; return true;
    case KN_KILN_DT_F16: *dtype = KN_F16; return true;
    case KN_KILN_DT_F64: *dtype = KN_F64; return true;
    case KN_KILN_DT_I16: *dtype = KN_I16; return true;
    case KN_KILN_DT_U16: *dtype = KN_U16; return true;
    case KN_KILN_DT_U32: *dtype = KN_U32; return true;
    case KN_KILN_DT_U64: *dtype = KN_U64; return true;
    case KN_KILN_DT_BF16: *dtype = KN_BF16; return true;
    }
    return false;
}

/* Storage encodings beyond the plain dtypes (docs/format.md, "Storage encodings"). */
enum {
    KN_KILN_ENC_BF16 = 5,
    KN_KILN_ENC_AFFINE_I8 = 16,
    KN_KILN_ENC_AFFINE_U8 = 17,
    KN_KILN_ENC_AFFINE_I4 = 18,
    KN_KILN_ENC_AFFINE_I2 = 19,
    KN_KILN_ENC_AFFINE_I1 = 20,
    KN_KILN_ENC_CODEBOOK = 32,
    KN_KILN_ENC_SPARSE_CSR = 48,
    KN_KILN_ENC_SPARSE_BITMASK = 49,
};

static inline uint32_t kn_kiln_encoding_code(kn_encoding e) {
    switch (e) {
    case KN_ENC_F32: return KN_KILN_DT_F32;
    case KN_ENC_F16: return KN_KILN_DT_F16;
    case KN_ENC_BF16: return KN_KILN_ENC_BF16;
    case KN_ENC_AFFINE_I8: return KN_KILN_ENC_AFFINE_I8;
    case KN_ENC_AFFINE_U8: return KN_KILN_ENC_AFFINE_U8;
    case KN_ENC_AFFINE_I4: return KN_KILN_ENC_AFFINE_I4;
    case KN_ENC_AFFINE_I2: return KN_KILN_ENC_AFFINE_I2;
    case KN_ENC_AFFINE_I1: return KN_KILN_ENC_AFFINE_I1;
    case KN_ENC_CODEBOOK: return KN_KILN_ENC_CODEBOOK;
    case KN_ENC_SPARSE_CSR: return KN_KILN_ENC_SPARSE_CSR;
    case KN_ENC_SPARSE_BITMASK: return KN_KILN_ENC_SPARSE_BITMASK;
    }
    return KN_KILN_NONE;
}

/* The storage encodings an f32 value can have besides plain f32 (and f32, the sparse values'). */
static inline bool kn_kiln_encoding_from_code(uint32_t code, kn_encoding *e) {
    switch (code) {
    case KN_KILN_DT_F32: *e = KN_ENC_F32; return true;
    case KN_KILN_DT_F16: *e = KN_ENC_F16; return true;
    case KN_KILN_ENC_BF16: *e = KN_ENC_BF16; return true;
    case KN_KILN_ENC_AFFINE_I8: *e = KN_ENC_AFFINE_I8; return true;
    case KN_KILN_ENC_AFFINE_U8: *e = KN_ENC_AFFINE_U8; return true;
    case KN_KILN_ENC_AFFINE_I4: *e = KN_ENC_AFFINE_I4; return true;
    case KN_KILN_ENC_AFFINE_I2: *e = KN_ENC_AFFINE_I2; return true;
    case KN_KILN_ENC_AFFINE_I1: *e = KN_ENC_AFFINE_I1; return true;
    case KN_KILN_ENC_CODEBOOK: *e = KN_ENC_CODEBOOK; return true;
    case KN_KILN_ENC_SPARSE_CSR: *e = KN_ENC_SPARSE_CSR; return true;
    case KN_KILN_ENC_SPARSE_BITMASK: *e = KN_ENC_SPARSE_BITMASK; return true;
    }
    return false;
}

static inline uint32_t kn_kiln_kind_code(kn_value_kind kind) {
    switch (kind) {
    case KN_VALUE_INPUT: return KN_KILN_KIND_INPUT;
    case KN_VALUE_PARAM: return KN_KILN_KIND_PARAM;
    case KN_VALUE_STATE: return KN_KILN_KIND_STATE;
    case KN_VALUE_CONST: return KN_KILN_KIND_CONST;
    case KN_VALUE_ACT: return KN_KILN_KIND_ACT;
    }
    return KN_KILN_NONE;
}

static inline bool kn_kiln_kind_from_code(uint32_t code, kn_value_kind *kind) {
    switch (code) {
    case KN_KILN_KIND_INPUT: *kind = KN_VALUE_INPUT; return true;
    case KN_KILN_KIND_PARAM: *kind = KN_VALUE_PARAM; return true;
    case KN_KILN_KIND_STATE: *kind = KN_VALUE_STATE; return true;
    case KN_KILN_KIND_CONST: *kind = KN_VALUE_CONST; return true;
    case KN_KILN_KIND_ACT: *kind = KN_VALUE_ACT; return true;
    }
    return false;
}

static inline uint32_t kn_kiln_attr_code(kn_attr_type type) {
    switch (type) {
    case KN_ATTR_INT: return KN_KILN_ATTR_INT;
    case KN_ATTR_FLOAT: return KN_KILN_ATTR_FLOAT;
    case KN_ATTR_INTS: return KN_KILN_ATTR_INTS;
    case KN_ATTR_STRING: return KN_KILN_ATTR_STRING;
    }
    return KN_KILN_NONE;
}

static inline bool kn_kiln_attr_from_code(uint32_t code, kn_attr_type *type) {
    switch (code) {
    case KN_KILN_ATTR_INT: *type = KN_ATTR_INT; return true;
    case KN_KILN_ATTR_FLOAT: *type = KN_ATTR_FLOAT; return true;
    case KN_KILN_ATTR_INTS: *type = KN_ATTR_INTS; return true;
    case KN_KILN_ATTR_STRING: *type = KN_ATTR_STRING; return true;
    }
    return false;
}

static inline bool kn_kiln_is_initializer(kn_value_kind kind) {
    return kind == KN_VALUE_PARAM || kind == KN_VALUE_STATE || kind == KN_VALUE_CONST;
}

static inline uint64_t kn_kiln_align(uint64_t offset) {
    return (offset + KN_KILN_ALIGN - 1) & ~(uint64_t)(KN_KILN_ALIGN - 1);
}

#endif
