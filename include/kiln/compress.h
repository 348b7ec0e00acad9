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

/* What kiln_prune does (docs/compress.md, "Pruning"): the prunable layers are the weights of Conv, Gemm
 * and MatMul nodes (never biases or normalisation parameters). */
typedef struct kiln_prune_config {
    const char *method;          /* l1|l2|random|taylor|hessian, default l1 */
    const char *structured;      /* NULL: single weights; channel|filter (Conv outputs) or neuron (Gemm) */
    double amount;               /* fraction of the prunable weights (units) to remove, [0, 1); default 0.5 */
    bool target_sparsity;        /* amount is the sparsity wanted over all parameters instead */
    bool global;                 /* one threshold across layers (default: amount of every layer) */
    const char *const *skip;     /* n_skip weight or node names left alone */
    int n_skip;
    int64_t calib_batches;       /* taylor, hessian: batches of `data` to score on (default 8) */
    uint64_t seed;               /* random scores, batch order (default 1) */
    bool sensitivity;            /* per-layer scan on `val` choosing per-layer amounts */
    const char *schedule;        /* oneshot (default) or agp (gradual, during fine-tuning) */
    int64_t steps;               /* agp: pruning events (default 10) */
    int64_t finetune_epochs;     /* 0: no fine-tuning */
    kiln_train_config train;     /* fine-tuning options (its epochs are finetune_epochs) */
} kiln_prune_config;

kiln_prune_config kiln_prune_config_default(void);

/* Prunes graph in place: scores on `data` (taylor, hessian), scans on `val` (sensitivity), fine-tunes on
 * `data` validating on `val` (either may be NULL when not needed) keeping pruned weights at zero, and
 * leaves unstructured layers in sparse storage so kiln_graph_save writes a smaller file. */
kiln_status kiln_prune(kiln_graph *graph, const kiln_dataset *data, const kiln_dataset *val,
                       const kiln_prune_config *config);

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
