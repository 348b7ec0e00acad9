/* ReverseSequence(input, sequence_lens): for each batch entry b (along batch_axis, default 1), the first
 * sequence_lens[b] elements along time_axis (default 0) in reverse order, the rest as they are. The
 * axes are 0 and 1, in either order, of an input of rank >= 2; sequence_lens is i64 (batch), each in
 * [0, time]. Any dtype (elements are copied). No gradient.
 */
#include <string.h>

#include "core/status.h"
#include "ops/elements.h"
#include "ops/movement.h"

static kiln_status revseq_axes(const kn_node *node, int *batch_axis, int *time_axis) {
    int64_t b = kn_node_int(node, "batch_axis", 1), t = kn_node_int(node, "time_axis", 0);
    if (!((b == 0 && t == 1) || (b == 1 && t == 0)))
        return kn_fail(KILN_ERR_INVALID_ARG, "batch_axis %lld and time_axis %lld must be 0 and 1, in either order",
                       (long long)b, (long long)t);
    *batch_axis = (int)b;
    *time_axis = (int)t;
    return KILN_OK;
}

static kiln_status revseq_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    const kn_value *x = kn_node_input(g, node, 0), *lens = kn_node_input(g, node, 1);
    if (!x || !lens)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs input and sequence_lens are required");
    int batch_axis = 1, time_axis = 0;
    KN_TRY(revseq_axes(node, &batch_axis, &time_axis));
    if (x->shape.ndim < 2)
        return kn_fail(KILN_ERR_SHAPE, "input has rank %d; ReverseSequence needs 2 or more", x->shape.ndim);
    if ((lens->dtype != KN_I64 && lens->dtype != KN_I32) || lens->shape.ndim != 1 ||
        lens->shape.d[0] != x->shape.d[batch_axis])
        return kn_fail(KILN_ERR_SHAPE, "sequence_lens must be i64 of the batch's %lld entries",
                       (long long)x->shape.d[batch_axis]);
    kn_set_output(g, node, 0, &x->shape, x->dtype);
    return KILN_OK;
}

static kiln_status revseq_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0], *lens = call->in[1];
    int batch_axis = 1, time_axis = 0;
    KN_TRY(revseq_axes(call->node, &batch_axis, &time_axis));
    /* x as (d0, d1, inner): one of d0, d1 is the batch, the other the time; a row holds inner elements. */
    int64_t d1 = x->shape.d[1], inner = kn_shape_span(&x->shape, 2, x->shape.ndim);
    int64_t batch = x->shape.d[batch_axis], time = x->shape.d[time_axis];
    size_t row = kn_dtype_size(x->dtype) * (size_t)inner;
    const char *src = x->data;
    char *dst = call->out[0]->data;
    for (int64_t b = 0; b < batch; b++) {
        int64_t len = kn_int_load(lens->data, lens->dtype, b);
        if (len < 0 || len > time)
            return kn_fail(KILN_ERR_INVALID_ARG, "sequence_lens[%lld] is %lld; the time axis has %lld",
                           (long long)b, (long long)len, (long long)time);
        for (int64_t t = 0; t < time; t++) {
            int64_t from_t = t < len ? len - 1 - t : t;
            int64_t to = batch_axis == 0 ? b * d1 + t : t * d1 + b;
            int64_t from = batch_axis == 0 ? b * d1 + from_t : from_t * d1 + b;
            memcpy(dst + (size_t)to * row, src + (size_t)from * row, row);
        }
    }
    return KILN_OK;
}

const kn_op kn_op_reversesequence = {.name = "ReverseSequence", .min_inputs = 2, .max_inputs = 2,
                                     .infer = revseq_infer, .forward = revseq_forward};
