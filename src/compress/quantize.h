/* Post-training quantization: what `kiln quantize` and kiln_quantize() do to a graph.
 *
 * Which values are quantized: the weight (input 1) of every Conv, ConvTranspose, Gemm and MatMul whose
 * weight is an f32 initializer — the layers that hold almost all parameters and do almost all the
 * arithmetic — stored compactly (format/storage.h), and, unless weights_only, the data input of each
 * of those layers, through a QuantizeLinear -> DequantizeLinear pair (compress/qdq.h) with a per-tensor
 * scale from calibration. Biases, BatchNormalization and LayerNorm parameters stay f32: they are a few
 * hundred numbers per layer (no size to gain), an integer kernel adds the bias to its int32 accumulator
 * at the scale of input * weight where f32 loses nothing, and a quantized bias or normalisation scale
 * moves every output of the channel at once.
 *
 * Weights: per tensor, per output channel (Conv axis 0, ConvTranspose axis 1, Gemm axis 0 with transB
 * else 1, MatMul the last axis) or per block of N along the last axis; symmetric by default (zero
 * point 0, as integer kernels want), activations asymmetric (u8) by default. At 1 bit the weights are
 * a 2-entry codebook {-a, +a} per channel with a = mean |w| (affine i1 has levels {0, s} or {-s, 0}
 * and cannot express +-a); at 2 bits symmetric the i2 levels in use are {-1, 0, +1}: ternary weights.
 */
#ifndef KN_COMPRESS_QUANTIZE_H
#define KN_COMPRESS_QUANTIZE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "compress/adaround.h"
#include "compress/calibrate.h"
#include "core/graph.h"
#include "format/storage.h"
#include "train/data.h"

typedef enum kn_quant_granularity {
    KN_QUANT_PER_TENSOR,
    KN_QUANT_PER_CHANNEL,
    KN_QUANT_PER_BLOCK,
} kn_quant_granularity;

/* How one weight tensor is quantized. */
typedef struct kn_weight_quant {
    int bits;             /* 16, 8, 4, 2 or 1 */
    bool bf16;            /* bits 16: bf16, else f16 */
    bool symmetric;
    int axis;             /* per channel along this axis; -1 per tensor or per block */
    int64_t block;        /* per block of this many elements along the last axis; 0 none */
    bool mse_clip;        /* clip each group's range to the one minimising the squared error */
    int codebook;         /* > 0: a k-means codebook of this many entries (2, 4, 16 or 256) */
    bool log2;            /* power-of-two levels {0, +-2^e} stored as a codebook */
    uint64_t seed;        /* k-means++ seeding */
} kn_weight_quant;

/* One line of the per-layer report: a quantized weight or activation. */
typedef struct kn_quant_stat {
    char name[96];        /* the value's name */
    char layer[96];       /* the node that reads it */
    bool is_weight;
    char encoding[48];    /* "affine i8 per-channel", "u8 QDQ", "codebook 4-bit per-tensor" ... */
    int bits;
    double lo, hi;        /* the range of the values (activations: seen in calibration) */
    double scale_min, scale_max; /* affine: the smallest and largest scale; 0 otherwise */
    double clip_fraction; /* elements outside the representable range (by more than half a step) */
    double sqnr_db;       /* 10 log10(sum x^2 / sum (x - q(x))^2); INFINITY without error */
    int64_t count;        /* elements (activations: over the calibration samples) */
    bool adaround;        /* the weight's rounding was learned (AdaRound): the three below are set */
    double round_nearest_mse, round_learned_mse; /* the layer output's error on calibration data */
    int64_t round_flipped; /* weights rounded the other way than to nearest */
} kn_quant_stat;

typedef struct kn_quant_report {
    kn_quant_stat *stats;
    int n, cap;
} kn_quant_report;

void kn_quant_report_free(kn_quant_report *r);

/* Quantizes weight value `id` of g as q says (its data becomes what its storage decodes to) and, when
 * stat is not NULL, fills the weight's line of the report. */
kiln_status kn_quant_weight(kn_graph *g, int id, const kn_weight_quant *q, kn_quant_stat *stat);

/* Fills the report line of quantized weight w (storage and data set) from its values before, orig. */
void kn_quant_weight_stat(kn_quant_stat *stat, const kn_value *w, const float *orig);

/* A quantizable layer: its node, weight, the output-channel axis of the weight, and its data input. */
typedef struct kn_quant_layer {
    int node, weight, axis, input;
    int bits;             /* this layer's weight bits; 0: keep it in f32 (not quantized) */
} kn_quant_layer;

/* The quantizable layers of g in node order, into a malloc'd array (*layers, *n). */
kiln_status kn_quant_layers_find(const kn_graph *g, kn_quant_layer **layers, int *n);

typedef struct kn_quant_options {
    int bits;                      /* 16, 8, 4, 2 or 1 */
    bool bf16;
    bool weights_only;             /* no activation quantization (always so at 16 bits) */
    kn_quant_granularity granularity;
    int64_t block;
    int symmetric;                 /* -1: weights symmetric, activations asymmetric; 0: both asymmetric; 1: both symmetric */
    int weight_clip;               /* -1: MSE at 4 bits and below, min-max above; 0: min-max; 1: MSE */
    int codebook;                  /* > 0: k-means codebook of K entries instead of affine */
    bool log2;
    kn_calib_config calib;         /* activations */
    int64_t calib_samples;         /* <= 0: 512 */
    bool bias_correction;
    bool recalibrate_bn;
    bool adaround;                 /* learn each affine weight's rounding on calib (compress/adaround.h) */
    kn_adaround_options adaround_options;
    uint64_t seed;
    const char *const *skip;       /* node names left in f32 */
    int n_skip;
    const int *layer_bits;         /* (number of layers) per-layer weight bits overriding `bits`, 0 = f32; or NULL */
} kn_quant_options;

kn_quant_options kn_quant_options_default(void);

/* Checks the options alone (bits, granularity, codebook size, method): KILN_ERR_INVALID_ARG naming the
 * bad one. */
kiln_status kn_quant_options_check(const kn_quant_options *o);

/* Quantizes g in place: weights, then (unless weights only) activations calibrated on the first
 * calib_samples samples of `calib` (needed then; its samples must fit g's input). Fills `report` (may
 * be NULL) with one line per quantized value. */
kiln_status kn_quantize(kn_graph *g, const kn_dataset *calib, const kn_quant_options *o, kn_quant_report *report);

/* The report as a table or a JSON array. */
void kn_quant_report_print(FILE *out, const kn_quant_report *r);
void kn_quant_report_print_json(FILE *out, const kn_quant_report *r);
/* s as a JSON string literal. */
void kn_quant_json_string(FILE *out, const char *s);

#endif
