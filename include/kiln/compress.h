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
    int adaround;              /* learn each affine weight's rounding (up or down) on calib: AdaRound */
    int64_t adaround_iters;    /* AdaRound steps per layer; <= 0: 500 */
    float adaround_lambda;     /* weight of its rounding regulariser; < 0: 0.01 */
    float adaround_lr;         /* its Adam learning rate; <= 0: 0.01 */
    uint64_t seed;             /* k-means++ seed, default 1 */
} kiln_quantize_config;

kiln_quantize_config kiln_quantize_config_default(void);

/* Quantizes graph in place. calib may be NULL only with weights_only and without bias correction,
 * BatchNormalization re-estimation or AdaRound. On failure the graph may be partly quantized: load it again. */
kiln_status kiln_quantize(kiln_graph *graph, const kiln_dataset *calib, const kiln_quantize_config *config);

/* ---- quantization-aware training, gradient quantization ------------------------------------------- */

/* Quantization-aware training (docs/compress.md): kiln_qat_prepare folds BatchNormalization into the
 * Conv/Gemm before it and puts fake quantization on the weights of Conv, Gemm and MatMul (symmetric, per
 * output channel) and, with act_bits, on their activation inputs (per tensor, ranges from `calib`); train
 * the graph with kiln_train, then kiln_qat_finalize writes the real quantized model: weights stored at
 * their trained levels and scales, activations as QuantizeLinear/DequantizeLinear pairs, computing the same
 * outputs as the fake-quantized graph. */
typedef struct kiln_qat_config {
    int weight_bits;              /* 8, 4, 2, or 1 (binary weights +-alpha, stored as a 2-entry codebook) */
    int act_bits;                 /* 0: weights only; 8 */
    int lsq;                      /* nonzero: learned scales (LSQ), else min/max scales */
    const kiln_dataset *calib;    /* activation calibration data (needed with act_bits) */
    int64_t calib_samples;        /* <= 0: 512 */
} kiln_qat_config;

kiln_status kiln_qat_prepare(kiln_graph *graph, const kiln_qat_config *config);
kiln_status kiln_qat_finalize(kiln_graph *graph);

/* ---- distillation ----------------------------------------------------------------------------------- */

/* Knowledge distillation (Hinton et al. 2015; docs/compress.md): trains `student` like kiln_train on
 * (1 - alpha) * CE + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)), the teacher run in
 * inference mode on every batch (its logits kept per sample: it runs once per sample; with
 * config->augment it labels each augmented view the student trains on, every step). Teacher and
 * student take the same input and give the same number of outputs per sample (else KILN_ERR_SHAPE); a
 * teacher with its own input standardisation gets it. `final` as in kiln_train (may be NULL). */
typedef struct kiln_distill_config {
    float temperature;            /* > 0; kiln distill's default 2 (docs/compress.md: higher lost accuracy) */
    float alpha;                  /* weight of the soft term in [0, 1]; kiln distill's default 0.5 */
    /* Optional hidden-feature matching: activation names in teacher and student (NULL: none); a learned
     * 1x1 projection maps the student's to the teacher's channels, trained on match_weight * MSE and
     * removed from the student afterwards. */
    const char *match_teacher, *match_student;
    float match_weight;
} kiln_distill_config;

kiln_status kiln_distill(kiln_graph *student, kiln_graph *teacher, const kiln_dataset *train, const kiln_dataset *val,
                         const kiln_train_config *config, const kiln_distill_config *distill, kiln_metrics *final);

#ifdef __cplusplus
}
#endif

#endif
