/* Quantization-aware training: fake quantization (the FakeQuantize op, ops/fake_quantize.h) on the weights
 * and activation inputs of Conv, Gemm and MatMul, trained by the ordinary training loop, then the real
 * quantized model.
 *
 * kn_qat_prepare:
 *   1. folds every BatchNormalization that follows a Conv or Gemm into it, with its running statistics
 *      (the runtime's KN_OPT_BATCHNORM pass): the weights quantized during training are then the weights
 *      deployed, where a BatchNormalization kept for training would be folded at deployment into
 *      weights that are no longer on the quantization grid. Fine-tuning runs without batch statistics,
 *      which is sound from a trained model (Jacob et al. freeze them too after a few epochs);
 *   2. weights (parameters read as a Conv's or Gemm's W, or a MatMul's B): symmetric, per output channel,
 *      at `weight_bits` (8, 4, 2; 1 = binary +-alpha). With `lsq` the scales are parameters learned by LSQ
 *      (initialised to the per-channel scale of least squared error, gradient scale 1/sqrt(n Qp));
 *      otherwise at 4 and 2 bits that scale stays fixed, and at 8 bits (min/max) and 1 bit (alpha =
 *      mean|w|) each forward takes it from the current weights;
 *   3. activations (the data input of those nodes) with `act_bits` > 0: per tensor, unsigned levels with
 *      a zero point, scales and zero points from the min/max seen on `calib_samples` samples of `calib`
 *      (fixed, or learned by LSQ with the zero point fixed).
 * kn_qat_finalize replaces every FakeQuantize: a weight's becomes the weight itself stored at its final
 * levels and scales (affine i8/i4/i2 per channel, or a 2-entry codebook per channel for binary weights),
 * an activation's a QuantizeLinear -> DequantizeLinear pair with its scale and zero point (8 bits only:
 * QuantizeLinear has no narrower type). The finalized model computes exactly the prepared model's
 * inference outputs: both go through core/quant.h with the same numbers.
 */
#ifndef KN_COMPRESS_QAT_H
#define KN_COMPRESS_QAT_H

#include "core/graph.h"
#include "train/data.h"

typedef struct kn_qat_config {
    int weight_bits;           /* 8, 4, 2 or 1 */
    int act_bits;              /* 0: weights only; 8 */
    bool lsq;                  /* learned scales */
    const kn_dataset *calib;   /* activation ranges (act_bits > 0) */
    int64_t calib_samples;     /* <= 0: 512 */
} kn_qat_config;

/* Checks the bit widths of a configuration (kn_qat_prepare also needs `calib` with act_bits). */
kiln_status kn_qat_config_check(const kn_qat_config *c);

/* Rewrites g for quantization-aware training as described above. g must have no FakeQuantize yet. */
kiln_status kn_qat_prepare(kn_graph *g, const kn_qat_config *c);

/* Whether g has FakeQuantize nodes (was prepared and not finalized): a QAT checkpoint. */
bool kn_qat_is_prepared(const kn_graph *g);

/* Replaces every FakeQuantize of g by the quantized form described above. */
kiln_status kn_qat_finalize(kn_graph *g);

#endif
