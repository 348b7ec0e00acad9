/* kiln — public model-compression API: pruning, quantization (post-training with calibration, and
 * quantization-aware training), distillation, and the before/after reports they print.
 *
 * Every function works on a kiln_graph (include/kiln/train.h: an editable model loaded from a spec, a
 * .kiln or an .onnx file) in place, and data from a kiln_dataset; the `kiln prune`, `kiln quantize` and
 * `kiln distill` commands are thin layers over these functions. Errors as in kiln.h: a kiln_status, with
 * the message in kiln_last_error().
 */
#ifndef KILN_COMPRESS_H
#define KILN_COMPRESS_H

#include "kiln/train.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- pruning ---------------------------------------------------------------------------------------- */

/* ---- quantization ----------------------------------------------------------------------------------- */

/* Post-training quantization (docs/compress.md, "Quantization"): the weights of every Conv,
 * ConvTranspose, Gemm and MatMul stored in 16 to 1 bits, and (unless weights_only) the inputs of those
 * layers quantized to 8 bits through QuantizeLinear/DequantizeLinear pairs whose scales come from
 * calibration on `calib`. Biases and normalisation parameters stay f32. */
typedef struct kiln_quantize_config {
    int bits;                  /* weight bits: 16, 8 (default), 4, 2 or 1 (binary, +-a per channel) */
    int bf16;                  /* bits 16: bf16 instead of f16 */
    int weights_only;          /* no activation quantization (no calibration data needed) */
    const char *granularity;   /* weight scales: "tensor", "channel" (default), "block:N" */
    int symmetric;             /* -1 (default): symmetric weights, asymmetric (u8) activations; 0: all
                                  asymmetric; 1: all symmetric */
    const char *weight_clip;   /* "minmax", "mse"; NULL (default): mse at 4 bits and below */
    const char *calib_method;  /* "minmax" (default), "percentile:P", "kl", "mse" */
    int64_t calib_samples;     /* the first N samples of calib; default 512 */
    int codebook;              /* K = 2, 4, 16 or 256: k-means codebook weights; 0: affine */
    int log2;                  /* power-of-two weight levels */
    int bias_correction;       /* correct biases for the mean output shift of the weight rounding */
    int recalibrate_bn;        /* re-estimate BatchNormalization statistics on calib */
    uint64_t seed;             /* k-means++ seed, default 1 */
} kiln_quantize_config;

kiln_quantize_config kiln_quantize_config_default(void);

/* Quantizes graph in place. calib may be NULL only with weights_only and without bias correction or
 * BatchNormalization re-estimation. On failure the graph may be partly quantized: load it again. */
kiln_status kiln_quantize(kiln_graph *graph, const kiln_dataset *calib, const kiln_quantize_config *config);

/* ---- quantization-aware training, gradient quantization ------------------------------------------- */

/* ---- distillation ----------------------------------------------------------------------------------- */

#ifdef __cplusplus
}
#endif

#endif
