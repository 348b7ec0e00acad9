/* Quantization written into a graph, the two forms every quantized model takes:
 *
 *  - activations: a QuantizeLinear -> DequantizeLinear pair after the value, with a per-tensor scale and
 *    zero point. The graph then defines the numbers (core/quant.h), so kiln, the exported ONNX and any
 *    engine that reads QDQ ONNX compute the same model.
 *  - weights: the initializer keeps a compact storage (format/storage.h: affine or codebook) and data
 *    equal to what that storage decodes to; ONNX export writes affine storage as a DequantizeLinear of
 *    int8 levels.
 *
 * Shared by post-training quantization (compress/quantize.c) and quantization-aware training.
 */
#ifndef KN_COMPRESS_QDQ_H
#define KN_COMPRESS_QDQ_H

#include <stdbool.h>
#include <stdint.h>

#include "core/graph.h"
#include "format/storage.h"

/* Inserts QuantizeLinear -> DequantizeLinear after value `v` (all its readers then read the
 * dequantized value; graph outputs stay outputs) with a per-tensor scale/zero point of `bits`
 * (8: u8 when !symmetric, i8 when symmetric).
 *
 * The new values are "<v>/scale", "<v>/zero_point" (constants), "<v>/quantized" and "<v>/dequantized";
 * the nodes "<v>/quantize" and "<v>/dequantize" follow v's producer (or come first when v is an input
 * or initializer), so the node order stays topological. Only 8 bits: opset-13 QuantizeLinear has no
 * narrower type (KILN_ERR_UNSUPPORTED). A symmetric zero point must be 0, and scale finite and > 0
 * (KILN_ERR_INVALID_ARG); a value that already has a pair fails too. */
kiln_status kn_qdq_insert_activation(kn_graph *g, int v, float scale, int32_t zero_point, int bits, bool symmetric);

/* Stores weight value `id` quantized as spec (affine/codebook via kn_value_compress). `id` must be an
 * f32 initializer with finite data (KILN_ERR_INVALID_ARG naming it otherwise). */
kiln_status kn_qdq_quantize_weight(kn_graph *g, int id, const kn_storage_spec *spec);

/* The value a QDQ pair inserted after `v` produced ("<v>/dequantized"), or -1 when v has none. */
int kn_qdq_dequantized_of(const kn_graph *g, int v);

#endif
