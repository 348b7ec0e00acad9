/* The inference graph optimizer: writes a copy of a graph that computes the same outputs with fewer
 * nodes and fewer passes over memory.
 *
 * For inference only: Dropout disappears and BatchNormalization is frozen into weights with its
 * running statistics, so a graph that is still to be trained must never be optimized (the fused ops'
 * backward refuses to run).
 *
 * Passes, in this order, each one switched on by its flag:
 *   KN_OPT_DEAD        removes nodes that no graph output depends on
 *   KN_OPT_IDENTITY    removes Identity and Dropout, wiring their input straight to their consumers
 *                      (a Dropout whose training_mode input is not a constant false stays)
 *   KN_OPT_FOLD        constant folding: a node whose inputs are all constant data is run once, and its
 *                      outputs become constants
 *   KN_OPT_BATCHNORM   folds BatchNormalization into the Conv or Gemm before it (scale into W, shift
 *                      into the bias, which is created when absent); not one with training_mode = 1,
 *                      which normalises with batch statistics
 *   KN_OPT_COMPOSE     rewrites ops that exporters write out as several into the one op: LayerNormalization
 *                      from ReduceMean, Sub, Pow 2, ReduceMean, Add eps, Sqrt, Div, Mul scale, Add bias
 *                      over the last axis (PyTorch before opset 17); Gelu from x * (1 + Erf(x / sqrt 2))
 *                      * 0.5 in either order; HardSwish from Mul(x, HardSigmoid(x) with alpha 1/6,
 *                      beta 1/2) (PyTorch before opset 14). The new node takes the last node's place
 *                      and output; the others go when their outputs have no other reader
 *   KN_OPT_BIAS        fuses MatMul followed by an Add of a constant row into MatMul with a bias
 *   KN_OPT_ACTIVATION  fuses Relu, LeakyRelu, Clip, Sigmoid, Tanh, HardSwish, Gelu or Elu into the
 *                      Conv, Gemm or MatMul before it (ops/fused_act.h), and SiLU written as
 *                      Mul(x, Sigmoid(x)): both nodes go, when x is read by those two alone
 *   KN_OPT_INT8        integer layers (runs before folding, which would decode the weights to f32):
 *                      a Conv, Gemm or MatMul reading a per-tensor DequantizeLinear, with int8 weights
 *                      of zero point 0 (a DequantizeLinear of constant levels, or affine i8/i4/i2
 *                      storage) becomes QLinearConvPacked / QLinearGemmPacked (ops/qlinear.c) with
 *                      its weights packed once; BATCHNORM and ACTIVATION (Relu) then fold into it, and
 *                      at the end a per-tensor QuantizeLinear after it becomes its output's
 *                      quantization, so activations stay 8-bit from layer to layer. The numbers are
 *                      core/quant.h's "Integer layers" (docs/runtime.md)
 *   KN_OPT_SPARSE      a Gemm or MatMul whose constant weight has at most KN_SPARSE_MAX_DENSITY of
 *                      nonzeros (an unstructured-pruned layer) becomes SparseGemm (ops/sparse_gemm.c),
 *                      which skips the zeros
 *   KN_OPT_WINOGRAD    a 3x3, stride-1 Conv of one group with a constant weight and enough channels
 *                      (kn_conv_winograd_suits) becomes ConvWinograd (ops/conv_winograd.c), its weight
 *                      transformed once; runs after ACTIVATION, whose fused activation it keeps
 *   KN_OPT_PREPACK     any other Conv whose products run through kn_sgemm (kn_conv_prepack_suits)
 *                      becomes ConvPacked (ops/conv_prepack.h), a Gemm with a constant B of at least
 *                      4096 values GemmPacked (ops/gemm.c), and a MatMul with such a 2-D B
 *                      MatMulPacked (ops/matmul.c): their weights packed once for this CPU, so that no
 *                      run packs them again
 *   KN_OPT_LOWBIT      a Gemm or MatMul whose weight is still packed affine i4 or i2 storage (a model
 *                      loaded with KN_KILN_LOAD_PACKED leaves those undecoded: no data, only storage)
 *                      becomes LowbitGemm (ops/lowbit_gemm.c), which reads the codes in place, or
 *                      (4-bit, per output column, per tensor or per block of a Gemm's S; AVX-512) from
 *                      a copy in the sliver layout of kernels/lowbit.h, written here, of the same size
 * Packed weights that LOWBIT cannot take (a Conv's, one read by another op) are decoded into dst's
 * arena before any pass, so that the passes treat them as the f32 weights they decode to (a 4-bit
 * conv's BatchNormalization folds, it goes Winograd); those LOWBIT then did not take are decoded last,
 * so every initializer dst's nodes read has data.
 * A fusion needs the first node's output to have no other consumer and not to be a graph output.
 * Afterwards values nothing refers to are dropped.
 *
 * The passes look only at the shapes of initializers and constants, never at activation shapes: those
 * depend on the input sizes, which a model may leave open (-1) until a session sets them. One choice
 * of speed only reads them when the graph has them: PREPACK packs a layer's weights for the transposed
 * products when its output image is small (kn_conv_prepack_transposes); the runs follow the recorded
 * choice whatever the input size.
 */
#ifndef KN_OPTIMIZE_H
#define KN_OPTIMIZE_H

#include "core/graph.h"

enum {
    KN_OPT_DEAD = 1 << 0,
    KN_OPT_IDENTITY = 1 << 1,
    KN_OPT_FOLD = 1 << 2,
    KN_OPT_BATCHNORM = 1 << 3,
    KN_OPT_BIAS = 1 << 4,
    KN_OPT_ACTIVATION = 1 << 5,
    KN_OPT_INT8 = 1 << 6,
    KN_OPT_SPARSE = 1 << 7,
    KN_OPT_COMPOSE = 1 << 8,
    KN_OPT_WINOGRAD = 1 << 9,
    KN_OPT_PREPACK = 1 << 10,
    KN_OPT_LOWBIT = 1 << 11,
    KN_OPT_ALL = (1 << 12) - 1
};

/* The largest fraction of nonzeros at which KN_OPT_SPARSE rewrites a weight. */
#define KN_SPARSE_MAX_DENSITY 0.3

/* What the passes did. */
typedef struct kn_opt_stats {
    int nodes_before, nodes_after;
    int dead_removed, identities_removed, nodes_folded, batchnorms_folded, biases_fused,
        activations_fused, integer_layers, quantizes_fused, residuals_fused, weights_sparsified, ops_composed,
        convs_winograd, convs_packed, gemms_packed, lowbit_layers;
} kn_opt_stats;

/* Writes the optimized copy of `src` into `dst` (initialized here). Initializer data that no pass
 * changes is shared with src, not copied, so src must outlive dst; new data (folded weights and
 * constants) lives in dst's arena. Activation shapes in dst are stale: shape inference for actual input
 * sizes is the executor's. On error dst is left freed. stats may be NULL. */
kiln_status kn_graph_optimize(const kn_graph *src, unsigned passes, kn_graph *dst, kn_opt_stats *stats);

#endif
