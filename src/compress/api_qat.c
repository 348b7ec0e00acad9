/* The public quantization-aware training and gradient quantization functions of include/kiln/compress.h:
 * thin wrappers over compress/qat.h and compress/grad_quant.h. */
#include "compress/qat.h"
#include "core/status.h"
#include "kiln/compress.h"
#include "train/api.h"

kiln_status kiln_qat_prepare(kiln_graph *graph, const kiln_qat_config *config) {
    if (!graph || !config)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_qat_prepare: NULL argument");
    kn_qat_config c = {.weight_bits = config->weight_bits, .act_bits = config->act_bits, .lsq = config->lsq != 0,
                       .calib = config->calib ? &config->calib->d : NULL, .calib_samples = config->calib_samples};
    return kn_qat_prepare(&graph->g, &c);
}

kiln_status kiln_qat_finalize(kiln_graph *graph) {
    if (!graph)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_qat_finalize: NULL argument");
    return kn_qat_finalize(&graph->g);
}
