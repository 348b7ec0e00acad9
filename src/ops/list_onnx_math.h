/* ONNX math ops beyond the training set (see registry.c): X(id) names `const kn_op kn_op_<id>`. */
#ifndef KN_LIST_ONNX_MATH_H
#define KN_LIST_ONNX_MATH_H

#define KN_OPS_ONNX_MATH(X)

#endif
