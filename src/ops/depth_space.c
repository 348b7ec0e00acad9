/* DepthToSpace and SpaceToDepth: moving blocks of blocksize x blocksize between the channels and the
 * spatial dims of an (N, C, H, W) tensor.
 *
 *     DepthToSpace  (N, C, H, W) -> (N, C / b^2, H b, W b); mode DCR (default: depth, column, row, as
 *                   (N, b, b, C/b^2, H, W)) or CRD ((N, C/b^2, b, b, H, W))
 *     SpaceToDepth  (N, C, H, W) -> (N, C b^2, H / b, W / b), the inverse of DCR
 *
 * Any dtype, moved by element size. No gradients.
 */
#include <string.h>

#include "core/status.h"
#include "ops/movement.h"

static kiln_status block_check(const kn_value *x, int64_t b) {
    if (!x)
        return kn_fail(KILN_ERR_INVALID_ARG, "input 0 is required");
    if (x->shape.ndim != 4)
        return kn_fail(KILN_ERR_SHAPE, "input '%s' has %d dims; expected (N, C, H, W)", x->name,
                       x->shape.ndim);
    if (b < 1 || b > (INT64_C(1) << 20))
        return kn_fail(KILN_ERR_INVALID_ARG, "blocksize %lld must be between 1 and 2^20", (long long)b);
    return KILN_OK;
}

static kiln_status d2s_mode(const kn_node *node, bool *crd) {
    const char *mode = kn_node_string(node, "mode", "DCR");
    *crd = strcmp(mode, "CRD") == 0;
    if (!*crd && strcmp(mode, "DCR") != 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "mode '%s' is not DCR or CRD", mode);
    return KILN_OK;
}

static kiln_status depth_to_space_infer(kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0);
    int64_t b = kn_node_int(node, "blocksize", 0);
    KN_TRY(block_check(x, b));
    bool crd;
    KN_TRY(d2s_mode(node, &crd));
    if (x->shape.d[1] % (b * b) != 0)
        return kn_fail(KILN_ERR_SHAPE, "%lld channels do not divide into blocks of %lld",
                       (long long)x->shape.d[1], (long long)(b * b));
    kn_shape y = kn_shape_of(4, (int64_t[]){x->shape.d[0], x->shape.d[1] / (b * b),
                                            kn_count_mul(x->shape.d[2], b),
                                            kn_count_mul(x->shape.d[3], b)});
    KN_TRY(kn_shape_check_size(&y));
    kn_set_output(g, node, 0, &y, x->dtype);
    return KILN_OK;
}

/* y[n, c, h b + i, w b + j] = x[n, channel(c, i, j), h, w], channel by the mode. */
static kiln_status depth_to_space_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0];
    int64_t b = kn_node_int(call->node, "blocksize", 0);
    bool crd;
    KN_TRY(d2s_mode(call->node, &crd));
    int64_t n = x->shape.d[0], c = x->shape.d[1], h = x->shape.d[2], w = x->shape.d[3];
    int64_t oc = c / (b * b);
    size_t size = kn_dtype_size(x->dtype);
    const char *src = x->data;
    char *dst = call->out[0]->data; /* (n, oc, h b, w b) */
    for (int64_t in = 0; in < n; in++)
        for (int64_t ic = 0; ic < oc; ic++)
            for (int64_t y = 0; y < h * b; y++)
                for (int64_t xx = 0; xx < w * b; xx++) {
                    int64_t i = y % b, j = xx % b;
                    int64_t ch = crd ? (ic * b + i) * b + j : (i * b + j) * oc + ic;
                    int64_t from = ((in * c + ch) * h + y / b) * w + xx / b;
                    int64_t to = ((in * oc + ic) * h * b + y) * w * b + xx;
                    memcpy(dst + (size_t)to * size, src + (size_t)from * size, size);
                }
    return KILN_OK;
}

static kiln_status space_to_depth_infer(kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0);
    int64_t b = kn_node_int(node, "blocksize", 0);
    KN_TRY(block_check(x, b));
    if (x->shape.d[2] % b != 0 || x->shape.d[3] % b != 0)
        return kn_fail(KILN_ERR_SHAPE, "H %lld and W %lld must be multiples of blocksize %lld",
                       (long long)x->shape.d[2], (long long)x->shape.d[3], (long long)b);
    kn_shape y = kn_shape_of(4, (int64_t[]){x->shape.d[0], kn_count_mul(x->shape.d[1], b * b),
                                            x->shape.d[2] / b, x->shape.d[3] / b});
    KN_TRY(kn_shape_check_size(&y));
    kn_set_output(g, node, 0, &y, x->dtype);
    return KILN_OK;
}

/* y[n, (i b + j) C + c, h, w] = x[n, c, h b + i, w b + j]. */
static kiln_status space_to_depth_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0];
    int64_t b = kn_node_int(call->node, "blocksize", 0);
    int64_t n = x->shape.d[0], c = x->shape.d[1], h = x->shape.d[2], w = x->shape.d[3];
    int64_t oh = h / b, ow = w / b;
    size_t size = kn_dtype_size(x->dtype);
    const char *src = x->data;
    char *dst = call->out[0]->data; /* (n, c b^2, h / b, w / b) */
    for (int64_t in = 0; in < n; in++)
        for (int64_t ic = 0; ic < c; ic++)
            for (int64_t y = 0; y < h; y++)
                for (int64_t xx = 0; xx < w; xx++) {
                    int64_t ch = ((y % b) * b + xx % b) * c + ic;
                    int64_t from = ((in * c + ic) * h + y) * w + xx;
                    int64_t to = ((in * c * b * b + ch) * oh + y / b) * ow + xx / b;
                    memcpy(dst + (size_t)to * size, src + (size_t)from * size, size);
                }
    return KILN_OK;
}

const kn_op kn_op_depthtospace = {.name = "DepthToSpace", .min_inputs = 1, .max_inputs = 1,
                                  .infer = depth_to_space_infer, .forward = depth_to_space_forward};
const kn_op kn_op_spacetodepth = {.name = "SpaceToDepth", .min_inputs = 1, .max_inputs = 1,
                                  .infer = space_to_depth_infer, .forward = space_to_depth_forward};
