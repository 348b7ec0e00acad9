/* Activations fused into the op that produces their input (Conv, Gemm, MatMul).
 *
 * The inference optimizer (src/runtime/optimize.c) removes an activation node that follows one of these
 * ops and records it in attributes of the producer, which then applies it to its output right after
 * computing it, while the values are still in cache:
 *
 *   kn_activation    "Relu" "LeakyRelu" "Clip" "Sigmoid" "Tanh" "HardSwish" "Gelu" "Elu", and "Silu":
 *                    x sigmoid(x), which ONNX writes as Mul(x, Sigmoid(x)) and the optimizer fuses whole
 *   kn_alpha         LeakyRelu's slope (default 0.01), Elu's alpha (default 1)
 *   kn_min, kn_max   Clip's bounds (default -inf, +inf)
 *   kn_approximate   Gelu's form: "none" (erf, default) or "tanh"
 *
 * The formulas are those of the standalone ops (src/ops/activation.c, ONNX for Clip and HardSwish); the
 * transcendental ones call kernels/vmath as the standalone ops do, so fusing changes no bit (Silu's
 * vmath function is x times the same sigmoid, rounded as Mul rounds it).
 * Fused nodes exist for inference only: training graphs are never optimized, and backward refuses them.
 */
#ifndef KN_FUSED_ACT_H
#define KN_FUSED_ACT_H

#include "core/graph.h"
#include "kernels/act_rows.h"

typedef enum kn_act_kind {
    KN_ACT_NONE,
    KN_ACT_RELU,
    KN_ACT_LEAKYRELU,
    KN_ACT_CLIP,
    KN_ACT_SIGMOID,
    KN_ACT_TANH,
    KN_ACT_HARDSWISH,
    KN_ACT_GELU,
    KN_ACT_GELU_TANH,
    KN_ACT_ELU,
    KN_ACT_SILU
} kn_act_kind;

typedef struct kn_fused_act {
    kn_act_kind kind;
    float alpha;   /* LeakyRelu, Elu */
    float lo, hi;  /* Clip */
} kn_fused_act;

/* True when an activation op of this name can be fused ("Relu", "Clip" ...). */
bool kn_fused_act_supported(const char *op_name);

/* Reads the node's fused activation (KN_ACT_NONE when it has none); an unknown name or a bad
 * attribute gives KILN_ERR_INVALID_ARG. */
kiln_status kn_fused_act_of(const kn_node *node, kn_fused_act *act);

/* Applies the activation in place to y[0..n). */
void kn_fused_act_apply(const kn_fused_act *act, float *y, int64_t n);
/* The same without opening a parallel region: for a small span inside the caller's own parallel
 * loop, where even an inactive region costs more than the span. */
void kn_fused_act_apply_serial(const kn_fused_act *act, float *y, int64_t n);

/* y (rows, cols), rows ld apart, = act(y + bias[row]) in place: a bias per row (Conv's per output
 * channel) and the activation in one pass over y. */
void kn_fused_act_apply_rows(const kn_fused_act *act, const float *bias, float *y, int64_t rows, int64_t cols,
                             int64_t ld);

/* An activation prepared for many small calls on the calling thread alone: the tiles of a product's
 * output, each finished while it is in L1 (the GEMM epilogue of Conv's products). */
typedef struct kn_fused_act_tiles {
    kn_fused_act act;
    kn_act_rows rows;       /* Relu, Clip, HardSwish or none, in the act_rows kernels' terms */
    kn_act_rows_fn rows_fn; /* their kernel; NULL for the other kinds */
} kn_fused_act_tiles;

void kn_fused_act_tiles_init(const kn_fused_act *act, kn_fused_act_tiles *tiles);

/* kn_fused_act_apply_rows on the calling thread, bias NULL for none: the same bits. */
void kn_fused_act_tiles_apply(const kn_fused_act_tiles *tiles, const float *bias, float *y, int64_t rows,
                              int64_t cols, int64_t ld);

/* KILN_ERR_UNSUPPORTED, naming the node, when `node` carries anything the optimizer fused into it
 * (an activation, or for MatMul a bias); called first by backward. */
kiln_status kn_fused_refuse_backward(const kn_node *node, bool has_fused_bias);

/* ONNX HardSigmoid, max(0, min(1, alpha x + beta)), written with comparisons so that loops vectorize;
 * the HardSigmoid and HardSwish ops compute it here, and the fused HardSwish the same formula in
 * kernels/act_rows.inc (vectorized for the CPU, without contracted multiply-adds: the same bits). */
static inline float kn_hard_sigmoid(float x, float alpha, float beta) {
    float t = alpha * x + beta;
    return t < 0.0f ? 0.0f : t > 1.0f ? 1.0f : t;
}

#endif
