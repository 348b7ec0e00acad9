/* ONNX shape, indexing and conversion ops (see registry.c): X(id) names `const kn_op kn_op_<id>`. */
#ifndef KN_LIST_ONNX_SHAPE_H
#define KN_LIST_ONNX_SHAPE_H

#define KN_OPS_ONNX_SHAPE(X)

#endif
