#include <string.h>

#include "ops/op.h"

/* Every op kiln has, in the order docs and listings show them. Each family's list lives in its own
 * header (src/ops/list_*.h) beside the op files it names. */
#include "ops/list_onnx_math.h"
#include "ops/list_onnx_shape.h"

#define KN_OPS_TRAIN(X)                                                                           \
    X(gemm) X(matmul) X(conv) X(maxpool) X(averagepool) X(globalaveragepool) X(globalmaxpool)     \
    X(relu) X(sigmoid) X(tanh) X(leakyrelu) X(elu) X(gelu) X(softmax) X(logsoftmax)              \
    X(add) X(sub) X(mul) X(div) X(reducemean)                                                    \
    X(batchnormalization) X(layernormalization) X(dropout)                                       \
    X(flatten) X(reshape) X(transpose) X(concat) X(fakequantize)

/* kiln's own inference forms, written by the optimizer (src/runtime/optimize.c); not in ONNX files:
 * the integer layers (ops/qlinear.c) and sparse weights (ops/sparse_gemm.c). */
#define KN_OPS_INFERENCE(X) X(qlinearconvpacked) X(qlineargemmpacked) X(maxpoolinteger) X(addinteger) X(sparsegemm)

#define KN_OPS(X) KN_OPS_TRAIN(X) KN_OPS_ONNX_MATH(X) KN_OPS_ONNX_SHAPE(X) KN_OPS_INFERENCE(X)

#define KN_DECLARE(id) extern const kn_op kn_op_##id;
KN_OPS(KN_DECLARE)
#define KN_ENTRY(id) &kn_op_##id,
static const kn_op *const kn_op_table[] = {KN_OPS(KN_ENTRY)};

const kn_op *kn_op_at(int i) {
    int n = (int)(sizeof kn_op_table / sizeof kn_op_table[0]);
    return (i >= 0 && i < n) ? kn_op_table[i] : NULL;
}

const kn_op *kn_op_find(const char *name) {
    const kn_op *op;
    for (int i = 0; (op = kn_op_at(i)); i++)
        if (strcmp(op->name, name) == 0)
            return op;
    return NULL;
}
