/* ONNX math ops beyond the training set (see registry.c): X(id) names `const kn_op kn_op_<id>`. */
#ifndef KN_LIST_ONNX_MATH_H
#define KN_LIST_ONNX_MATH_H

#define KN_OPS_ONNX_MATH(X)                                                                       \
    X(erf) X(sqrt) X(exp) X(log) X(neg) X(abs) X(reciprocal) X(floor) X(ceil)                     \
    X(hardsigmoid) X(hardswish) X(softplus) X(clip) X(prelu)                                      \
    X(pow) X(equal) X(less) X(greater) X(and) X(or) X(not) X(where)                               \
    X(max) X(min) X(sum) X(mean)                                                                  \
    X(reducesum) X(reducemax) X(reducemin) X(reduceprod) X(reducel2)                              \
    X(convtranspose)

#endif
