/* ONNX math ops beyond the training set (see registry.c): X(id) names `const kn_op kn_op_<id>`. */
#ifndef KN_LIST_ONNX_MATH_H
#define KN_LIST_ONNX_MATH_H

#define KN_OPS_ONNX_MATH(X)                                                                       \
    X(erf) X(sqrt) X(exp) X(log) X(neg) X(abs) X(reciprocal) X(floor) X(ceil)                     \
    X(hardsigmoid) X(hardswish) X(softplus) X(clip) X(prelu)                                      \
    X(pow) X(equal) X(less) X(greater) X(lessorequal) X(greaterorequal) X(mod)           \
    X(bitshift) X(and) X(or) X(xor) X(not) X(where)                               \
    X(max) X(min) X(sum) X(mean)                                                                  \
    X(reducesum) X(reducemax) X(reducemin) X(reduceprod) X(reducel2)  \
    X(reducel1) X(reducesumsquare) X(reducelogsum) X(reducelogsumexp)                              \
    X(convtranspose)                                                                              \
    X(sin) X(cos) X(tan) X(asin) X(acos) X(atan) X(sinh) X(cosh) X(asinh) X(acosh) X(atanh)       \
    X(sign) X(round) X(softsign) X(selu) X(celu) X(thresholdedrelu) X(shrink) X(isnan) X(isinf) X(mish) X(cumsum)  \
    X(instancenormalization) X(lrn) X(meanvariancenormalization)        \
    X(negativeloglikelihoodloss) X(softmaxcrossentropyloss)                                       \
    X(hannwindow) X(hammingwindow) X(blackmanwindow) X(det) X(einsum) X(rnn) X(gru) X(lstm) X(dft) X(stft) X(melweightmatrix)               \
    X(bitwiseand) X(bitwiseor) X(bitwisexor) X(bitwisenot)                                       \
    X(qlinearconv) X(qlinearmatmul) X(convinteger) X(matmulinteger) X(dynamicquantizelinear)

#endif
