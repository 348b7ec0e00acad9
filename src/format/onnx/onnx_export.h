/* ONNX export: a kiln graph becomes an ONNX model — IR version 8, opset 17 of the default domain,
 * producer "kiln" — that the importer reads back to the same graph (docs/onnx.md, "Export").
 *
 * Graph inputs get a symbolic batch dim "batch" as dim 0; initializers (parameters, state, constants
 * that some node reads) are written as little-endian raw_data; nodes keep their names, inputs and
 * attributes. Where kiln's form of an op is not opset 17's the node is rewritten: Gelu (an ONNX op only
 * from opset 20) becomes the elementwise ops kiln's Gelu computes, in the same order; Dropout's ratio
 * attribute becomes its input; Cast's `to` and ConstantOfShape's `value`/`dtype` go back to ONNX's
 * encodings; the axes input of the reductions other than ReduceSum becomes their attribute.
 * A graph with input standardisation (mean/std, from CSV training) gets it as nodes at its first input,
 * Sub(mean) then Div(std), so onnxruntime on raw features gives what `kiln run` gives; the mean/std then
 * stay out of the metadata (an importer applying them too would standardise twice). With
 * norm_as_metadata they are metadata only (kiln.input_mean/std) and the caller standardises.
 * Class names and notes go into metadata_props (keys in onnx_metadata.h).
 *
 * Export works on the graph as trained or imported, not on the optimizer's output: a graph carrying
 * optimizer-internal attributes ("kn_..." fused activations) or a MatMul with a bias input gives
 * KILN_ERR_UNSUPPORTED. The same graph always gives the same bytes.
 */
#ifndef KN_ONNX_EXPORT_H
#define KN_ONNX_EXPORT_H

#include <stdbool.h>
#include <stddef.h>

#include "core/graph.h"

/* The opset of the default domain export writes. */
#define KN_ONNX_EXPORT_OPSET 17

typedef struct kn_onnx_export_options {
    bool norm_as_metadata; /* input standardisation as kiln.input_mean/std metadata, not Sub/Div nodes */
} kn_onnx_export_options;

/* Writes g to `path` atomically: a temporary file beside it, fsynced, renamed over `path`. On failure
 * an existing `path` is untouched. Output dtypes and shapes are those g's last shape inference gave. */
kiln_status kn_onnx_export_file(const kn_graph *g, const char *path);

/* kn_onnx_export_file with options (NULL: the defaults, all false). */
kiln_status kn_onnx_export_file_with(const kn_graph *g, const char *path, const kn_onnx_export_options *options);

/* The same into a malloc'ed buffer (*buf, *size); the caller frees *buf. */
kiln_status kn_onnx_export_buffer(const kn_graph *g, void **buf, size_t *size);
kiln_status kn_onnx_export_buffer_with(const kn_graph *g, void **buf, size_t *size,
                                       const kn_onnx_export_options *options);

#endif
