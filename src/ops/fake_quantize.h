/* FakeQuantize, kiln's own op for quantization-aware training (no ONNX equivalent; kn_qat_finalize
 * replaces it with stored integer weights and QuantizeLinear/DequantizeLinear pairs).
 *
 *   y = kn_quant_fake(x, scale, zero_point, range)          bits 2..8 (core/quant.h's numbers)
 *   y = x >= 0 ? alpha : -alpha                              bits 1 (binary, alpha = the scale)
 *
 * Inputs: x (f32), scale (optional f32: one element for the whole tensor, or one per index along the
 * `axis` attribute). Without a scale input the op derives it from x on every call: the min/max range of
 * each channel through kn_quant_params (symmetric or not), or mean|x| per channel for binary weights.
 * Attributes: bits (1..8, default 8), signed (default 1: levels [-2^(b-1), 2^(b-1)-1], else [0, 2^b-1]),
 * axis (-1, the default: per tensor), zero_point (default 0, used with a scale input), symmetric
 * (default 1, without a scale input), grad_scale (default 1).
 *
 * Backward (the straight-through estimator, round() taken as the identity):
 *   dx = dy where round(x / s) + z lies in [qmin, qmax], 0 where it is clipped (binary: dx = dy)
 *   ds = grad_scale * sum over the channel of dy * (round(x/s) - x/s   inside,
 *                                                   q_clip - z         clipped)
 * the gradient of Esser et al.'s learned step size (LSQ); binary: ds = grad_scale * sum dy * sign(x).
 * A scale computed from x is treated as a constant (no gradient flows through it).
 */
#ifndef KN_FAKE_QUANTIZE_H
#define KN_FAKE_QUANTIZE_H

#include "core/graph.h"
#include "core/quant.h"

/* Scales at or below this are raised to it, so that a learned scale the optimizer pushed through 0
 * still quantizes (to the extreme levels) instead of dividing by 0. */
#define KN_FAKE_QUANT_MIN_SCALE 1e-8f

/* x seen as (outer, channels, inner): channel c uses scales[c] and zero_points[c]. */
typedef struct kn_fake_quant_layout {
    int64_t outer, channels, inner;
} kn_fake_quant_layout;

/* The node's level range: kn_quant_range_of(bits, signed). */
kn_quant_range kn_fake_quant_range(const kn_node *node);

/* The layout of x (shape `x`) for the node's axis; fails on a bad axis. */
kiln_status kn_fake_quant_layout_of(const kn_node *node, const kn_shape *x, kn_fake_quant_layout *l);

/* Clipping ratios of max|x| tried by kn_fake_quant_mse_scale: k / KN_FAKE_QUANT_MSE_STEPS, k = 1.. */
#define KN_FAKE_QUANT_MSE_STEPS 20

/* The symmetric scale (zero point 0) of channel c of x that quantizes it with the least squared error,
 * over the scales max|x| * k / (KN_FAKE_QUANT_MSE_STEPS qmax) (k = STEPS: min/max); 1 for an all-zero
 * channel. */
float kn_fake_quant_mse_scale(const float *x, kn_fake_quant_layout l, int64_t c, kn_quant_range r);

/* The scale and zero point of every channel (layout.channels of each) that forward uses for x and the
 * optional scale input: exactly the numbers of the forward pass, for kn_qat_finalize to store. */
void kn_fake_quant_params(const kn_node *node, const float *x, const float *scale, kn_fake_quant_layout l,
                          float *scales, int32_t *zero_points);

#endif
