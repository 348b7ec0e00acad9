/* Every op kiln has, in the order docs and listings show them: X(id) names `const kn_op kn_op_<id>`,
 * where id is the op's name in lower case. Each family's list lives in its own header
 * (src/ops/list_*.h) beside the op files it names; src/ops/registry.c makes the table from KN_OPS and
 * src/ops/op.h declares every entry, so that code compares ops by pointer (n->op == &kn_op_relu). */
#ifndef KN_LIST_H
#define KN_LIST_H

#include "ops/list_onnx_math.h"
#include "ops/list_onnx_shape.h"

#define KN_OPS_TRAIN(X)                                                                           \
    X(gemm) X(matmul) X(conv) X(maxpool) X(averagepool) X(globalaveragepool) X(globalmaxpool)     \
    X(relu) X(sigmoid) X(tanh) X(leakyrelu) X(elu) X(gelu) X(softmax) X(logsoftmax)              \
    X(add) X(sub) X(mul) X(div) X(reducemean)                                                    \
    X(batchnormalization) X(layernormalization) X(dropout)                                       \
    X(flatten) X(reshape) X(transpose) X(concat) X(fakequantize)

/* kiln's own inference forms, written by the optimizer (src/runtime/optimize.c); not in ONNX files:
 * the integer layers (ops/qlinear.c), sparse weights (ops/sparse_gemm.c), packed 4-bit and 2-bit
 * weights (ops/lowbit_gemm.c), Winograd convolutions (ops/conv_winograd.c), convolutions with packed
 * weights (ops/conv.c) and Gemm / MatMul with packed weights (ops/gemm.c, ops/matmul.c). */
#define KN_OPS_INFERENCE(X) X(qlinearconvpacked) X(qlineargemmpacked) X(maxpoolinteger) X(addinteger) X(sparsegemm) X(lowbitgemm) X(convwinograd) X(convpacked) X(gemmpacked) X(matmulpacked)

#define KN_OPS(X) KN_OPS_TRAIN(X) KN_OPS_ONNX_MATH(X) KN_OPS_ONNX_SHAPE(X) KN_OPS_INFERENCE(X)

#endif
