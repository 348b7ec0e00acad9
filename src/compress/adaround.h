/* Learned rounding of quantized weights: AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding
 * for Post-Training Quantization").
 *
 * Rounding each weight to the nearest level minimises each weight's own error, not the error of the
 * layer's output; AdaRound chooses, per weight, floor(w / s) or floor(w / s) + 1 so that the layer's
 * output on calibration data stays close to the float layer's. Per layer, with the scale s and zero
 * point z of every weight already fixed (by nearest-rounding quantization: min-max or MSE clipping), a
 * continuous variable V per weight gives the soft rounding
 *
 *     h(V) = clamp(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)     zeta = 1.1, gamma = -0.1
 *     W~   = s * (clamp(floor(w / s) + h(V) + z, qmin, qmax) - z)
 *
 * and Adam minimises, over random batches of the calibration samples,
 *
 *     mean over samples of sum over outputs (layer(x~, W~) - layer(x, W))^2
 *       + lambda * sum over weights (1 - |2 h(V) - 1|^beta)
 *
 * where x~ is the layer's input in the model whose earlier layers are already quantized (their weights;
 * activations are calibrated after all weights) and x its input in the float model: the paper's
 * asymmetric reconstruction, so each layer also corrects the error its predecessors left. The
 * regulariser is off for the first 20% of the steps (warm-up), then beta falls linearly from 20 to 2,
 * pushing every h(V) to 0 or 1. V starts where h(V) = frac(w / s) (W~ = w). At the end each weight is
 * floor(w / s) + (h(V) >= 0.5) (+ z, clamped): always the level below or above w / s. The bias (and
 * Gemm's C) is the same in both outputs, so it is left out.
 *
 * The paper runs 10k-20k steps of 32 samples per layer; the defaults here (500 steps) take seconds per
 * layer on small models. If the learned rounding reconstructs the layer worse than nearest rounding on
 * the calibration inputs (possible with very few steps), nearest rounding is kept.
 */
#ifndef KN_COMPRESS_ADAROUND_H
#define KN_COMPRESS_ADAROUND_H

#include <stdint.h>

#include "core/graph.h"
#include "train/data.h"

typedef struct kn_adaround_options {
    int64_t iters;     /* Adam steps per layer (default 500) */
    float lambda;      /* weight of the rounding regulariser (default 0.01) */
    float lr;          /* Adam's learning rate on V (default 1e-2) */
    int64_t batch;     /* calibration samples per step (default 32) */
    uint64_t seed;     /* batch order */
} kn_adaround_options;

kn_adaround_options kn_adaround_options_default(void);

/* Checks the options: KILN_ERR_INVALID_ARG naming the bad one. */
kiln_status kn_adaround_options_check(const kn_adaround_options *o);

/* The inputs of one layer on the calibration samples. */
typedef struct kn_adaround_inputs {
    const float *quantized;   /* (samples, sample_shape) from the model with earlier layers quantized */
    const float *original;    /* (samples, sample_shape) from the float model (may equal quantized) */
    int64_t samples;
    kn_shape sample_shape;    /* one sample's input: the layer input's shape without its batch dim */
} kn_adaround_inputs;

/* What the rounding did to one layer: the mean squared error of its output per element on the
 * calibration inputs with nearest and with learned rounding, and the weights it rounded the other way. */
typedef struct kn_adaround_result {
    double nearest_mse, learned_mse;
    int64_t flipped;
    bool kept_nearest;        /* learned rounding was not better: the nearest levels stayed */
} kn_adaround_result;

/* Collects value v of g over the samples of calib (inference mode) into a malloc'd *x (samples,
 * sample shape); *sample_shape gets the shape without the batch dim. */
kiln_status kn_adaround_collect(kn_graph *g, const kn_dataset *calib, int v, float **x, kn_shape *sample_shape);

/* Re-rounds weight `weight` of node `node` of g, whose affine storage (dense, from nearest rounding of
 * w_float) fixes the scales and zero points: the storage gets the learned levels and the data what it
 * decodes to. w_float is the weight before quantization. */
kiln_status kn_adaround_weight(kn_graph *g, int node, int weight, const float *w_float, const kn_adaround_inputs *in,
                               const kn_adaround_options *o, kn_adaround_result *result);

#endif
