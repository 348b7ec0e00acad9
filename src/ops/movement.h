/* Helpers shared by the ops that move elements without arithmetic (shape_ops.c, index_ops.c,
 * pad_resize.c): a node's inputs as tensors at shape-inference time, integer parameter inputs
 * (shapes, axes, pads, starts), and copies through strided views. Copies work on every dtype by
 * element size; gradients flow only through f32 tensors.
 */
#ifndef KN_MOVEMENT_H
#define KN_MOVEMENT_H

#include "core/threads.h"
#include "ops/op.h"

enum { KN_MOVE_PARALLEL_MIN = KN_PARALLEL_MIN_MEMORY };     /* fewer elements: threads cost more than they save */
enum { KN_VIEW_MAX_DIMS = 2 * KN_MAX_DIMS }; /* Tile walks (repeat, dim) pairs */
enum { KN_INFER_MAX_INPUTS = 8 };

/* A node's inputs as its forward will see them, for shape inference: in[i] is NULL for an omitted
 * input, and in[i]->data is NULL unless the value's data is known before running (initializers,
 * constants, values computed at shape inference). */
typedef struct kn_infer_inputs {
    int n;
    kn_tensor tensors[KN_INFER_MAX_INPUTS];
    kn_tensor *in[KN_INFER_MAX_INPUTS];
} kn_infer_inputs;

kiln_status kn_infer_inputs_get(const kn_graph *g, const kn_node *node, kn_infer_inputs *inputs);

/* Input i of n inputs, NULL when omitted or past the end (ONNX drops trailing optional inputs). */
static inline const kn_tensor *kn_input_at(kn_tensor *const *in, int n, int i) {
    return i < n ? in[i] : NULL;
}

/* Element i of an integer tensor (i64 or i32) as int64. */
int64_t kn_int_at(const kn_tensor *t, int64_t i);

/* Reads an integer tensor (i64 or i32, a scalar or 1-D, at most max elements) into out and its
 * element count into *n. `what` names the input in errors. Fails with KILN_ERR_UNSUPPORTED when the
 * data is not known, which at shape inference means a shape input computed at run time (a session then
 * makes the node a stage and infers it once a run computed the value: runtime/session.c). */
kiln_status kn_read_ints(const kn_tensor *t, const char *what, int64_t *out, int max, int *n);

/* Fails with KILN_ERR_UNSUPPORTED unless t's data is known (see kn_read_ints). */
kiln_status kn_require_data(const kn_tensor *t, const char *what);

/* Fails unless the node has exactly n outputs. */
kiln_status kn_check_outputs(const kn_node *node, int n);

/* Sets output i of node to (shape, dtype). */
void kn_set_output(kn_graph *g, const kn_node *node, int i, const kn_shape *shape, kn_dtype dtype);

/* Row-major element strides of a shape. */
void kn_shape_strides(const kn_shape *shape, int64_t *strides);

/* A strided walk over a buffer: position (i_0, ..., i_{n-1}) is element
 * offset + sum_k i_k * stride[k]. Strides are in elements and may be 0 (a broadcast dim) or negative
 * (a reversed slice). */
typedef struct kn_view {
    int ndim;
    int64_t dims[KN_VIEW_MAX_DIMS];
    int64_t stride[KN_VIEW_MAX_DIMS];
    int64_t offset;
} kn_view;

/* dst[j] = src[position j] for the view's positions in row-major order; elements of esize bytes. */
void kn_view_copy(void *dst, const void *src, size_t esize, const kn_view *view);

/* dst[position j] += src[j]: the backward of kn_view_copy. Positions that share an element (stride 0)
 * add in row-major order, so the result does not depend on the thread count. */
void kn_view_add(float *dst, const float *src, const kn_view *view);

/* dst[j] = src[j * stride] for n elements of esize bytes. */
void kn_copy_strided(void *dst, const void *src, int64_t n, int64_t stride, size_t esize);

/* Forward and backward of the ops whose output holds the input's elements in order under another
 * shape (Flatten, Reshape, Squeeze, Unsqueeze, Identity): a copy, none when the caller aliased the
 * output to the input, and dX += dY (dX = dY for a fresh dX, see kn_op_call). */
kiln_status kn_copy_forward(const kn_op_call *call);
kiln_status kn_copy_backward(const kn_op_call *call);

/* Fails with KILN_ERR_UNSUPPORTED when a gradient is asked for an input that is not f32. */
kiln_status kn_check_f32_gradient(const kn_op_call *call, int i);

#endif
