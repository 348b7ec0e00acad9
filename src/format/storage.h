/* Compact storage of f32 tensors: f16, bf16, affine integers (i8, u8, i4, i2, i1 with per-tensor,
 * per-channel or per-block scales and zero points), k-means codebooks and sparse (CSR, bitmask) forms.
 *
 * A kn_storage describes how one f32 initializer is stored in a .kiln file (docs/format.md, "Storage
 * encodings"). A value that has one keeps `data` = the f32 tensor the storage decodes to, bit for bit,
 * so ops, the optimizer and the runtime never see the compact form; the writer stores it, and checks
 * that the data still decodes from it. Whatever changes such a value's data must drop the storage
 * (kn_value_drop_storage in core/graph.h). One exception: a graph loaded with KN_KILN_LOAD_PACKED
 * (format/kiln_file.h, for inference) has affine i4 / i2 weights with their storage and no data, which
 * the runtime reads in place (kernels/lowbit.h) or decodes where an op needs floats.
 *
 * The encoders are scalar reference code, deterministic for a given input (and seed): these are the
 * functions model compression (kiln quantize, kiln prune) builds on. Everything a storage points at is
 * owned by the arena it was encoded into, or by the file mapping it was read from.
 */
#ifndef KN_STORAGE_H
#define KN_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/graph.h"
#include "core/half.h" /* the f16 and bf16 conversions the float encodings use */
#include "core/status.h"

typedef enum kn_encoding {
    KN_ENC_F32,            /* raw f32: only as the values of a sparse tensor */
    KN_ENC_F16,            /* IEEE binary16, rounded to nearest even */
    KN_ENC_BF16,           /* the top 16 bits of the f32, rounded to nearest even */
    KN_ENC_AFFINE_I8,      /* x = (q - zero_point) * scale, q in [-128, 127] */
    KN_ENC_AFFINE_U8,      /*                                q in [0, 255] */
    KN_ENC_AFFINE_I4,      /*                                q in [-8, 7], 2 per byte */
    KN_ENC_AFFINE_I2,      /*                                q in [-2, 1], 4 per byte */
    KN_ENC_AFFINE_I1,      /*                                q in {0, 1}, 8 per byte */
    KN_ENC_CODEBOOK,       /* x = centroids[index], index of 1, 2, 4 or 8 bits */
    KN_ENC_SPARSE_CSR,     /* the stored elements of a (dims[0], rest) matrix, CSR row pointers */
    KN_ENC_SPARSE_BITMASK, /* the same with one bit per element marking the stored ones */
} kn_encoding;

typedef struct kn_storage kn_storage;

struct kn_storage {
    kn_encoding encoding;
    kn_shape shape;            /* the logical shape: the value's */
    int axis;                  /* affine, codebook: one scale / codebook per index of this axis; else -1 */
    int64_t block;             /* affine: one scale per `block` elements along the last axis; else 0 */
    int bits;                  /* bits per stored element: 32, 16, 8, 4, 2 or 1 (sparse: 0) */
    const void *payload;       /* the main tensor's bytes: elements, levels, indices or sparse indices */
    size_t payload_bytes;
    const float *scale;        /* affine: kn_storage_group_count() scales, each finite and > 0 */
    const void *zero_point;    /* affine: as many i8 (i8, i4, i2) or u8 (u8, i1) levels; NULL: all 0 */
    const float *centroids;    /* codebook: (channels, k), channels = dims[axis] or 1 */
    int64_t k;                 /* codebook: centroids per codebook, 1 to 2^bits */
    int64_t nnz;               /* sparse: stored elements */
    const kn_storage *values;  /* sparse: the stored elements in row-major order, shape (nnz), dense and
                                  not a codebook: f32, f16, bf16 or affine */
};

/* What to encode a tensor as. */
typedef struct kn_storage_spec {
    kn_encoding encoding;
    bool symmetric;            /* affine: zero point 0 and scale = max|x| / largest level */
    int axis;                  /* affine, codebook: per channel along this axis; -1: per tensor */
    int64_t block;             /* affine: per block of this many elements along the last axis; 0: none */
    int bits;                  /* codebook: index bits, 1, 2, 4 or 8 */
    uint64_t seed;             /* codebook: seeds k-means++ */
    kn_encoding values;        /* sparse: how the stored elements are kept (f32, f16, bf16, affine) */
    bool values_symmetric;     /* sparse with affine values: per-tensor symmetric, else asymmetric */
} kn_storage_spec;

/* Encodes x (numel(shape) floats) as `spec` says into a storage allocated in `arena`. Affine and
 * codebook encodings need finite x (KILN_ERR_INVALID_ARG names the first element that is not). */
kiln_status kn_storage_encode(kn_arena *arena, const float *x, const kn_shape *shape,
                              const kn_storage_spec *spec, kn_storage **out);

/* Checks every field of a storage as untrusted input (sizes, granularity, packed padding bits, CSR
 * structure, codebook indices, scales, zero point ranges), so that decoding it is safe:
 * KILN_ERR_FORMAT with a message naming the field. */
kiln_status kn_storage_check(const kn_storage *s);

/* Writes the numel(s->shape) floats s decodes to. s must have passed kn_storage_check. */
void kn_storage_decode(const kn_storage *s, float *out);

/* Scales (and zero points) of an affine storage, and the shape the file gives them: () per tensor,
 * (dims[axis]) per channel, (rows, ceil(cols / block)) per block. */
int64_t kn_storage_group_count(const kn_storage *s);
kn_shape kn_storage_scale_shape(const kn_storage *s);

/* For an affine storage: the scale group of flat element i, the level q stored for it, and the zero
 * point of group k (0 without zero points), so that element i is (q - zero_point) * scale[group]. */
int64_t kn_storage_group_of(const kn_storage *s, int64_t i);
int kn_storage_level(const kn_storage *s, int64_t i);
int kn_storage_zero_point(const kn_storage *s, int64_t k);

/* Packed codes (docs/format.md, "Storage encodings"): affine levels of 1, 2 or 4 bits, codebook indices
 * of 1, 2 or 4 bits and bitmasks hold every element's code in flat order with no gaps. Whether s has
 * them, and whether the row layout of format 1.1 (each row along the last axis, a bitmask's rows of
 * its 2-D view, starting on a byte) would differ: more than one row, some ending inside a byte. */
bool kn_storage_has_packed_codes(const kn_storage *s);
bool kn_storage_rows_share_bytes(const kn_storage *s);

/* Reads a format 1.1 payload of packed codes, rows starting on a byte, for s (whose shape, bits and
 * encoding are set) as untrusted input: its size and the padding bits after each row are checked
 * (KILN_ERR_FORMAT), then the codes are copied contiguously into the arena as s->payload. */
kiln_status kn_storage_repack_rows(kn_arena *arena, kn_storage *s, const void *rows_payload, size_t bytes);

/* Bytes the storage takes in a file: payload plus scales, zero points, centroids and sparse values
 * (without the alignment padding between them). */
int64_t kn_storage_bytes(const kn_storage *s);

/* "bf16", "affine i4 per-channel", "affine u8 per-block", "codebook 4-bit per-tensor",
 * "sparse CSR (affine i8 values)" ... into buf; returns buf. */
char *kn_storage_describe(const kn_storage *s, char *buf, size_t size);

/* Stores f32 initializer `id` of g as `spec`: encodes its data into g's arena, replaces the data with
 * what the storage decodes to (so data == decode(storage) from then on) and attaches the storage. */
kiln_status kn_value_compress(kn_graph *g, int id, const kn_storage_spec *spec);

/* bits of the stored elements of a dense encoding (f32 32, f16/bf16 16, affine 8/4/2/1); 0 otherwise. */
int kn_encoding_bits(kn_encoding e);
bool kn_encoding_is_affine(kn_encoding e);
bool kn_encoding_is_sparse(kn_encoding e);
/* "affine i4" ... the name docs/format.md gives the encoding. */
const char *kn_encoding_name(kn_encoding e);

#endif
