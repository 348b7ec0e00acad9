/* BitwiseAnd, BitwiseOr, BitwiseXor (two broadcast inputs of one integer dtype) and BitwiseNot (one),
 * opset 18: the bits of the integers, as numpy's bitwise_and / _or / _xor / invert. Every integer dtype
 * (i8 to i64, u8 to u64). No gradient.
 */
#include <string.h>

#include "core/status.h"
#include "ops/broadcast.h"
#include "ops/elements.h"
#include "ops/movement.h"

typedef enum { BIT_AND, BIT_OR, BIT_XOR, BIT_NOT } bit_kind;

static bit_kind bit_kind_of(const kn_node *node) {
    const char *name = node->op->name;
    return strcmp(name, "BitwiseAnd") == 0  ? BIT_AND
           : strcmp(name, "BitwiseOr") == 0 ? BIT_OR
           : strcmp(name, "BitwiseXor") == 0 ? BIT_XOR
                                             : BIT_NOT;
}

static kiln_status bit_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    int n = bit_kind_of(node) == BIT_NOT ? 1 : 2;
    if (node->n_in != n)
        return kn_fail(KILN_ERR_INVALID_ARG, "%d inputs; %s takes %d", node->n_in, node->op->name, n);
    const kn_value *a = kn_node_input(g, node, 0);
    kn_shape shape = a ? a->shape : (kn_shape){0};
    for (int i = 0; i < n; i++) {
        const kn_value *v = kn_node_input(g, node, i);
        if (!v || !kn_dtype_is_integer(v->dtype) || v->dtype != a->dtype)
            return kn_fail(KILN_ERR_UNSUPPORTED, "%s takes inputs of one integer dtype", node->op->name);
        if (i > 0)
            KN_TRY(kn_broadcast_shape(&shape, &v->shape, &shape));
    }
    kn_set_output(g, node, 0, &shape, a->dtype);
    return KILN_OK;
}

typedef struct bit_args {
    bit_kind kind;
    kn_dtype dtype;
    const void *a, *b;
    void *y;
} bit_args;

static void bit_row(const kn_broadcast_row *row, void *ctx) {
    const bit_args *args = ctx;
    for (int64_t i = 0; i < row->n; i++) {
        uint64_t u = (uint64_t)kn_int_load(args->a, args->dtype, row->offset[0] + i * row->step[0]);
        uint64_t v = (uint64_t)kn_int_load(args->b, args->dtype, row->offset[1] + i * row->step[1]);
        uint64_t r = args->kind == BIT_AND ? (u & v) : args->kind == BIT_OR ? (u | v) : (u ^ v);
        kn_int_store(args->y, args->dtype, row->at + i, (int64_t)r); /* stored truncated to the width */
    }
}

static kiln_status bit_forward(const kn_op_call *call) {
    bit_kind kind = bit_kind_of(call->node);
    const kn_tensor *x = call->in[0], *y = call->out[0];
    if (kind == BIT_NOT) {
        for (int64_t i = 0; i < kn_numel(y); i++)
            kn_int_store(y->data, y->dtype, i, (int64_t)~(uint64_t)kn_int_load(x->data, x->dtype, i));
        return KILN_OK;
    }
    const kn_shape *shapes[2] = {&x->shape, &call->in[1]->shape};
    kn_broadcast_plan p;
    kn_broadcast_plan_make(&p, 2, shapes, &y->shape);
    bit_args args = {kind, y->dtype, x->data, call->in[1]->data, y->data};
    kn_broadcast_run(&p, bit_row, &args);
    return KILN_OK;
}

#define BIT_OP(id, onnx_name, n)                                                                   \
    const kn_op kn_op_##id = {.name = onnx_name, .min_inputs = n, .max_inputs = n,                 \
                              .infer = bit_infer, .forward = bit_forward}

BIT_OP(bitwiseand, "BitwiseAnd", 2);
BIT_OP(bitwiseor, "BitwiseOr", 2);
BIT_OP(bitwisexor, "BitwiseXor", 2);
BIT_OP(bitwisenot, "BitwiseNot", 1);
