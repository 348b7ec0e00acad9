/* Shapes, dtypes and tensor views. A kn_tensor never owns its data. */
#ifndef KN_TENSOR_H
#define KN_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/kiln.h"

#define KN_MAX_DIMS 8

typedef enum kn_dtype {
    KN_F32 = 0,
    KN_I64,
    KN_I32,
    KN_U8,
    KN_I8,
    KN_BOOL,   /* one byte, 0 or 1 */
    KN_F16,    /* IEEE half: stored, converted to f32 for compute */
    KN_F64,    /* the ONNX boundary's wider types: ops that take them compute in their own arithmetic */
    KN_I16,
    KN_U16,
    KN_U32,
    KN_U64,
    KN_BF16,   /* bfloat16: the top half of an f32 */
    KN_STRING, /* a kn_string per element: ONNX's STRING at the boundary (Cast and data movement only) */
    KN_DTYPE_COUNT
} kn_dtype;

/* One element of a KN_STRING tensor: a NUL-terminated string. One shorter than KN_STRING_SMALL bytes
 * lives in `small` (ptr NULL), so that copying the element copies the string: data movement ops and
 * the memory planner treat string tensors as plain bytes. A longer one points at storage that outlives
 * every tensor holding the element: the graph arena for constants, the session's copy for an input
 * (runtime/session.c). Zeroed memory is the empty string. */
#define KN_STRING_SMALL 32
typedef struct kn_string {
    const char *ptr;
    char small[KN_STRING_SMALL];
} kn_string;

static inline const char *kn_string_get(const kn_string *s) { return s->ptr ? s->ptr : s->small; }

/* Makes *s hold the len bytes at text (no NUL among them): in place when short, else pointing at
 * `text` itself, which must then outlive *s and end with a NUL at text[len]. */
void kn_string_set(kn_string *s, const char *text, size_t len);

typedef struct kn_shape {
    int ndim;
    int64_t d[KN_MAX_DIMS];
} kn_shape;

typedef struct kn_tensor {
    kn_shape shape;
    kn_dtype dtype;
    void *data;
} kn_tensor;

size_t kn_dtype_size(kn_dtype dtype);
const char *kn_dtype_name(kn_dtype dtype);

/* The most elements a tensor may have: far enough below INT64_MAX that element counts, spans and
 * sums of a few of them are representable. Every shape a graph takes in or infers is checked against
 * it (kn_shape_check_size), so element arithmetic on checked shapes needs no overflow checks. Byte
 * sizes still do (kn_shape_bytes): 2^62 elements of 8 bytes are 2^65 bytes. */
#define KN_MAX_ELEMENTS (INT64_C(1) << 62)

/* kn_shape_of(3, (int64_t[]){N, C, HW}) */
kn_shape kn_shape_of(int ndim, const int64_t *dims);
/* Product of all dims. On shapes that passed kn_shape_check_size it is exact; on others it saturates
 * at INT64_MAX rather than overflow. */
int64_t kn_shape_numel(const kn_shape *shape);
bool kn_shape_equal(const kn_shape *a, const kn_shape *b);
/* Writes "(64, 1, 28, 28)" into buf; returns buf. */
char *kn_shape_str(const kn_shape *shape, char *buf, size_t size);
/* Product of dims [from, to); saturates as kn_shape_numel does. */
int64_t kn_shape_span(const kn_shape *shape, int from, int to);
/* KILN_ERR_SHAPE "the shape (...) has more than 2^62 elements" when the dims, a 0 or an unknown (-1)
 * one counted as 1, multiply to more than KN_MAX_ELEMENTS: then no span of the shape can overflow
 * either, whatever the other dims. */
kiln_status kn_shape_check_size(const kn_shape *shape);

/* Count arithmetic that must not overflow: a + b and a * b, saturating at INT64_MAX / INT64_MIN.
 * For dims computed from untrusted values (attributes, data read from a file), which
 * kn_shape_check_size then rejects, and for FLOP counts, which multiply a checked element count by
 * more. */
int64_t kn_count_add(int64_t a, int64_t b);
int64_t kn_count_mul(int64_t a, int64_t b);

/* Overflow-checked size arithmetic: false on overflow. */
bool kn_size_mul(size_t a, size_t b, size_t *out);
bool kn_size_add(size_t a, size_t b, size_t *out);
/* bytes rounded up to a multiple of 64, where buffers that share a block start; for sizes well below
 * SIZE_MAX (those of tensors that exist). */
static inline size_t kn_round_up_64(size_t bytes) { return (bytes + 63) & ~(size_t)63; }
/* numel * dtype size, false on overflow or negative dims. */
bool kn_shape_bytes(const kn_shape *shape, kn_dtype dtype, size_t *out);

static inline float *kn_f32(const kn_tensor *t) { return (float *)t->data; }
static inline int64_t kn_numel(const kn_tensor *t) { return kn_shape_numel(&t->shape); }

/* Normalises a possibly negative axis into [0, ndim); -1 when out of range. */
int kn_axis_normalize(int64_t axis, int ndim);

#endif
