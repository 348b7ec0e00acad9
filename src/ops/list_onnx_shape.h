/* ONNX shape, indexing and conversion ops (see registry.c): X(id) names `const kn_op kn_op_<id>`. */
#ifndef KN_LIST_ONNX_SHAPE_H
#define KN_LIST_ONNX_SHAPE_H

#define KN_OPS_ONNX_SHAPE(X)                                                                     \
    X(identity) X(shape) X(size) X(gather) X(gatherelements) X(scatterelements) X(gathernd) X(scatternd) X(trilu)           \
    X(argmax) X(argmin) X(hardmax) X(depthtospace) X(spacetodepth) X(slice) X(split) X(squeeze) X(unsqueeze) X(expand) X(tile)   \
    X(range) X(cast) X(constantofshape) X(eyelike) X(pad) X(resize) X(quantizelinear) X(dequantizelinear)    \
    X(topk) X(onehot) X(compress) X(reversesequence) X(maxunpool) X(gridsample) X(roialign)     \
    X(nonzero) X(unique) X(nonmaxsuppression) \
    X(lpnormalization) X(lppool) X(globallppool) X(groupnormalization) X(centercroppad) \
    X(col2im) X(affinegrid)

#endif
