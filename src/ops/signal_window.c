/* The window functions of ONNX's signal ops (opset 17): HannWindow, HammingWindow, BlackmanWindow.
 * Input `size` is one integer (i32 or i64); the output is 1-D of `size` elements,
 *
 *     w[n] = a0 - a1 cos(2 pi n / N) + a2 cos(4 pi n / N),   n = 0 .. size - 1,
 *
 * with N = size (periodic = 1, the default) or size - 1 (periodic = 0, symmetric), and
 * (a0, a1, a2) = (0.5, 0.5, 0) for Hann, (25/46, 21/46, 0) for Hamming, (0.42, 0.5, 0.08) for Blackman,
 * as onnx's reference computes them. Shape inference reads size, so a size given as a graph input makes
 * a data-dependent session (runtime/session.c). The output dtype is attribute "dtype" (a kn_dtype code,
 * imported from ONNX's output_datatype): f32 (the default) or f64, computed in double and rounded once.
 * No gradient.
 */
#include <math.h>
#include <string.h>

#include "core/status.h"
#include "ops/movement.h"

/* The op's coefficients, by its name. */
static void window_coefficients(const kn_node *node, double *a0, double *a1, double *a2) {
    const char *name = node->op->name;
    *a2 = 0.0;
    if (strcmp(name, "HammingWindow") == 0) {
        *a0 = 25.0 / 46.0;
        *a1 = 1.0 - *a0;
    } else if (strcmp(name, "BlackmanWindow") == 0) {
        *a0 = 0.42;
        *a1 = 0.5;
        *a2 = 0.08;
    } else {
        *a0 = *a1 = 0.5;
    }
}

static kiln_status window_size(const kn_tensor *size_in, int64_t *size) {
    int64_t v[1];
    int n;
    KN_TRY(kn_read_ints(size_in, "size", v, 1, &n));
    if (n != 1 || v[0] < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "size must be one value >= 0, got %s%lld", n == 1 ? "" : "none: ",
                       n == 1 ? (long long)v[0] : 0LL);
    *size = v[0];
    return KILN_OK;
}

static kiln_status window_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    const kn_tensor *size_in = kn_input_at(inputs.in, inputs.n, 0);
    if (!size_in)
        return kn_fail(KILN_ERR_INVALID_ARG, "input size is required");
    int64_t dtype = kn_node_int(node, "dtype", KN_F32);
    if (dtype != KN_F32 && dtype != KN_F64)
        return kn_fail(KILN_ERR_UNSUPPORTED, "output dtype %s; the windows are f32 or f64",
                       dtype >= 0 && dtype < KN_DTYPE_COUNT ? kn_dtype_name((kn_dtype)dtype) : "unknown");
    int64_t size = 0;
    KN_TRY(window_size(size_in, &size));
    kn_shape y = kn_shape_of(1, &size);
    KN_TRY(kn_shape_check_size(&y));
    kn_set_output(g, node, 0, &y, (kn_dtype)dtype);
    return KILN_OK;
}

static kiln_status window_forward(const kn_op_call *call) {
    kn_tensor *y = call->out[0];
    int64_t size = 0;
    KN_TRY(window_size(call->in[0], &size));
    if (y->shape.ndim != 1 || y->shape.d[0] != size)
        return kn_fail(KILN_ERR_SHAPE, "%s: the output was not sized for size %lld", call->node->op->name,
                       (long long)size);
    double a0, a1, a2;
    window_coefficients(call->node, &a0, &a1, &a2);
    bool periodic = kn_node_int(call->node, "periodic", 1) != 0;
    double n_div = (double)(periodic ? size : size - 1), two_pi = 2.0 * 3.14159265358979323846;
    for (int64_t n = 0; n < size; n++) {
        double w = a0 - a1 * cos(two_pi * (double)n / n_div) + a2 * cos(2.0 * two_pi * (double)n / n_div);
        if (y->dtype == KN_F32)
            kn_f32(y)[n] = (float)w;
        else
            ((double *)y->data)[n] = w;
    }
    return KILN_OK;
}

#define WINDOW_OP(id, onnx_name)                                                                  \
    const kn_op kn_op_##id = {.name = onnx_name, .min_inputs = 1, .max_inputs = 1,                \
                              .infer = window_infer, .forward = window_forward}

WINDOW_OP(hannwindow, "HannWindow");
WINDOW_OP(hammingwindow, "HammingWindow");
WINDOW_OP(blackmanwindow, "BlackmanWindow");
