/* The one definition of kiln's affine quantization, the arithmetic of ONNX QuantizeLinear and
 * DequantizeLinear:
 *
 *     q  = clamp(round_half_even(x / scale) + zero_point, qmin, qmax)
 *     x' = (q - zero_point) * scale
 *
 * Every path that quantizes — the QuantizeLinear op, the .kiln affine encodings, post-training
 * quantization, fake quantization in QAT, the integer kernels' reference — computes exactly these
 * numbers through these functions, so a model gives the same outputs whichever path ran it.
 *
 * Choosing a scale and zero point from a range [lo, hi] (which always includes 0, so that 0 is exact):
 *   symmetric:  zero_point 0, scale = max(|lo|, |hi|) / qmax
 *   asymmetric: scale = (hi - lo) / (qmax - qmin), zero_point = qmin - round(lo / scale), clamped
 * A scale that would be 0 or subnormal (an all-zero range) becomes 1: every element quantizes to 0.
 */
#ifndef KN_QUANT_H
#define KN_QUANT_H

#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>

/* The integer range of a `bits`-wide level: signed [-2^(b-1), 2^(b-1) - 1] or unsigned [0, 2^b - 1]. */
typedef struct kn_quant_range {
    int32_t qmin, qmax;
} kn_quant_range;

static inline kn_quant_range kn_quant_range_of(int bits, bool is_signed) {
    if (is_signed)
        return (kn_quant_range){-(1 << (bits - 1)), (1 << (bits - 1)) - 1};
    return (kn_quant_range){0, (int32_t)((1u << bits) - 1)};
}

/* q clamped to [qmin, qmax]; NaN gives qmin (fmaxf returns the number). Also for the continuous
 * levels of learned rounding (AdaRound's soft quantization). */
static inline float kn_quant_clamp(float q, kn_quant_range r) {
    return fminf(fmaxf(q, (float)r.qmin), (float)r.qmax);
}

/* The level of x: clamp(round_half_even(x / scale) + zero_point, qmin, qmax). */
static inline int32_t kn_quant_level(float x, float scale, int32_t zero_point, kn_quant_range r) {
    return (int32_t)kn_quant_clamp(nearbyintf(x / scale) + (float)zero_point, r);
}

/* x / scale rounded down: the grid point learned rounding starts from (it adds 0 or 1, then the zero
 * point, and clamps). */
static inline float kn_quant_floor(float x, float scale) { return floorf(x / scale); }

static inline float kn_quant_value(int32_t level, float scale, int32_t zero_point) {
    return (float)(level - zero_point) * scale;
}

/* x quantized and dequantized: what a QuantizeLinear -> DequantizeLinear pair gives. */
static inline float kn_quant_fake(float x, float scale, int32_t zero_point, kn_quant_range r) {
    return kn_quant_value(kn_quant_level(x, scale, zero_point, r), scale, zero_point);
}

/* Scale and zero point for the range [lo, hi] (widened to include 0), as described above. */
static inline void kn_quant_params(float lo, float hi, kn_quant_range r, bool symmetric, float *scale,
                                   int32_t *zero_point) {
    double lo_d = fmin((double)lo, 0.0), hi_d = fmax((double)hi, 0.0);
    double s = symmetric ? fmax(-lo_d, hi_d) / r.qmax : (hi_d - lo_d) / (double)(r.qmax - r.qmin);
    *scale = (float)s;
    if (!(*scale >= FLT_MIN))
        *scale = 1.0f;
    *zero_point = 0;
    if (!symmetric) {
        double zp = (double)r.qmin - nearbyint(lo_d / (double)*scale);
        *zero_point = (int32_t)fmin(fmax(zp, (double)r.qmin), (double)r.qmax);
    }
}

/* ---- Integer layers: the QDQ semantics of Conv / Gemm / MatMul between quantized values ----------
 *
 * A Conv, Gemm or MatMul whose input x and weight w are both DequantizeLinear outputs (per-tensor x:
 * s_x, z_x; w with zero point 0 and one scale per output channel c: s_w[c]) is defined, in kiln, as
 *
 *     acc[c] = sum_k (qx_k - z_x) * qw_{c,k}                 exact, in int32
 *     y[c]   = fmaf((float)acc[c], mult[c], bias[c])         one rounding: the multiply-add is fused
 *     y[c]   = kn_quant_add_residual(y[c], r)                when an Add of a residual r is fused
 *     y[c]   = act(y[c])                                     Relu: y > 0 ? y : +0 (NaN gives +0);
 *                                                            Clip: kn_quant_clip
 *     q[c]   = kn_quant_level(y[c], s_y, z_y, range)         when a QuantizeLinear follows
 *
 * with mult[c] = s_x * s_w[c] (times a folded BatchNormalization's factor) rounded once from double,
 * (float)acc rounded to nearest even, and the bias in f32. The integer kernels compute exactly these
 * numbers (kernels/qgemm.h; tests/test_int8.c checks each ISA bit for bit against
 * kn_quant_layer_level). Running the same graph unfused (DequantizeLinear, an f32 Conv, QuantizeLinear)
 * computes the sum in f32 instead: each product is exact but the sum rounds, so y differs by at most
 * about K * 2^-24 * sum_k |x_k w_k| and a level by at most 1 where y falls near a rounding boundary
 * (docs/runtime.md, "Integer layers"). */

/* acc's multiplier: s_x * s_w * extra (extra = 1, or a folded BatchNormalization scale). */
static inline float kn_quant_multiplier(float s_x, float s_w, double extra) {
    return (float)((double)s_x * (double)s_w * extra);
}

/* y of an integer layer before the activation: fmaf((float)acc, mult, bias). */
static inline float kn_quant_layer_value(int32_t acc, float mult, float bias) {
    return fmaf((float)acc, mult, bias);
}

/* Relu as the integer layers apply it: y > 0 ? y : +0, so NaN and -0 give +0 (what maxps(y, 0) does). */
static inline float kn_quant_relu(float y) { return y > 0.0f ? y : 0.0f; }

/* A residual added to an integer layer's value (a ResNet block's Add, fused): y + r, one f32 addition,
 * with r an f32 tensor's element or a level's kn_quant_value (what the DequantizeLinear it came through
 * gives). It comes before the layer's Relu or Clip, as the Add came before them. */
static inline float kn_quant_add_residual(float y, float r) { return y + r; }

/* Relu as the Relu op computes it (x < 0 ? 0 : x: -0 and NaN pass), for the integer Add, which replaces
 * that op. */
static inline float kn_quant_relu_op(float y) { return y < 0.0f ? 0.0f : y; }

/* Clip (ReLU6 and the like) as the ONNX op computes it: raised to lo, then lowered to hi; NaN passes
 * (what minps(hi, maxps(lo, y)) does). An integer layer applies it after Relu, when it has one. */
static inline float kn_quant_clip(float y, float lo, float hi) {
    float raised = y < lo ? lo : y;
    return raised > hi ? hi : raised;
}

/* The level an integer layer writes: its value, through Relu when `relu`, quantized to (s_y, z_y). */
static inline int32_t kn_quant_layer_level(int32_t acc, float mult, float bias, bool relu, float s_y,
                                           int32_t z_y, kn_quant_range r) {
    float y = kn_quant_layer_value(acc, mult, bias);
    if (relu)
        y = kn_quant_relu(y);
    return kn_quant_level(y, s_y, z_y, r);
}

/* ---- ONNX's integer ops: QLinearConv and QLinearMatMul -------------------------------------------
 *
 * Levels x (s_x, z_x), weights w (s_w[c], z_w[c] per output channel c or per tensor), an optional int32
 * bias B[c] on the accumulator's scale, output (s_y, z_y):
 *
 *     acc[c] = sum_k (x_k - z_x) * (w_{c,k} - z_w[c]) + B[c]   exact (saturated to int32, which real
 *                                                               layers never reach)
 *     q[c]   = clamp(round_half_even((float)acc[c] * mult[c]) + z_y, qmin, qmax)
 *     mult[c] = s_x * s_w[c] / s_y, rounded once from double (kn_quant_requant_multiplier)
 *
 * (float)acc * mult is one rounded f32 product. This is the integer layers' level with bias 0, no
 * activation and output scale 1 (kn_quant_layer_level), so the packed kernels compute it exactly: the
 * optimizer gives them mult as the multiplier and puts B into the zero-point correction. */

static inline float kn_quant_requant_multiplier(float s_x, float s_w, float s_y) {
    return (float)((double)s_x * (double)s_w / (double)s_y);
}

static inline int32_t kn_quant_requant_level(int32_t acc, float mult, int32_t z_y, kn_quant_range r) {
    return kn_quant_layer_level(acc, mult, 0.0f, false, 1.0f, z_y, r);
}

#endif
