/* include/kiln/compress.h, quantization: kiln_quantize over kn_quantize. */
#include <stdlib.h>
#include <string.h>

#include "compress/quantize.h"
#include "core/status.h"
#include "kiln/compress.h"
#include "train/api.h"

kiln_quantize_config kiln_quantize_config_default(void) {
    kn_adaround_options ada = kn_adaround_options_default();
    return (kiln_quantize_config){.bits = 8, .symmetric = -1, .calib_samples = 512, .adaround_iters = ada.iters,
                                  .adaround_lambda = ada.lambda, .adaround_lr = ada.lr, .seed = 1};
}

/* "tensor", "channel" or "block:N" into o. */
static kiln_status granularity_parse(const char *text, kn_quant_options *o) {
    char *end = NULL;
    if (!text || strcmp(text, "channel") == 0)
        o->granularity = KN_QUANT_PER_CHANNEL;
    else if (strcmp(text, "tensor") == 0)
        o->granularity = KN_QUANT_PER_TENSOR;
    else if (strncmp(text, "block:", 6) == 0 && (o->block = strtoll(text + 6, &end, 10), end != text + 6 && !*end))
        o->granularity = KN_QUANT_PER_BLOCK;
    else
        return kn_fail(KILN_ERR_INVALID_ARG, "granularity '%s': tensor, channel or block:N", text);
    return KILN_OK;
}

kiln_status kiln_quantize(kiln_graph *graph, const kiln_dataset *calib, const kiln_quantize_config *config) {
    if (!graph || !config)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_quantize: NULL argument");
    kn_quant_options o = kn_quant_options_default();
    o.bits = config->bits;
    o.bf16 = config->bf16;
    o.weights_only = config->weights_only || config->bits == 16;
    o.symmetric = config->symmetric;
    o.calib_samples = config->calib_samples;
    o.codebook = config->codebook;
    o.log2 = config->log2;
    o.bias_correction = config->bias_correction;
    o.recalibrate_bn = config->recalibrate_bn;
    o.adaround = config->adaround;
    if (config->adaround_iters > 0)
        o.adaround_options.iters = config->adaround_iters;
    if (config->adaround_lambda >= 0)
        o.adaround_options.lambda = config->adaround_lambda;
    if (config->adaround_lr > 0)
        o.adaround_options.lr = config->adaround_lr;
    o.seed = config->seed;
    KN_TRY(granularity_parse(config->granularity, &o));
    if (config->weight_clip && strcmp(config->weight_clip, "minmax") != 0 && strcmp(config->weight_clip, "mse") != 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "weight_clip '%s': minmax or mse", config->weight_clip);
    if (config->weight_clip)
        o.weight_clip = strcmp(config->weight_clip, "mse") == 0;
    if (config->calib_method)
        KN_TRY(kn_calib_method_parse(config->calib_method, &o.calib));
    return kn_quantize(&graph->g, calib ? &calib->d : NULL, &o, NULL);
}
