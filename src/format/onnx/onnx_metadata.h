/* Model metadata in ONNX files: a graph's class names, input normalisation and notes travel in
 * ModelProto.metadata_props, so an exported model imported again keeps them. The keys (docs/onnx.md):
 *
 *   kiln.class_names   JSON array of strings: ["T-shirt/top","Trouser",...]
 *   kiln.input_mean    JSON array of numbers, one per feature or channel: [0.2860402]
 *   kiln.input_std     JSON array of numbers, as many as kiln.input_mean
 *   kiln.input_standardized  "in the graph": the export standardises its input with Sub/Div nodes, so
 *                      the file carries no kiln.input_mean/std and readers feed raw features (kept by
 *                      the importer as a note like any other key)
 *   any other key      one note of g->meta ("train.optimizer", "producer" ...), as it is
 *
 * The notes onnx.opset and onnx.producer are the importer's record of the file it read: an exported
 * file says its own opset and producer in ModelProto's fields, so export leaves those two notes out.
 */
#ifndef KN_ONNX_METADATA_H
#define KN_ONNX_METADATA_H

#include "core/graph.h"
#include "onnx.pb-c.h"

/* The metadata_props entries for g's metadata, built in `arena` (strings of g are referenced, not
 * copied: g must outlive the entries); the input mean/std only with `with_norm` (without, the graph
 * standardises its input itself). Fails on a note using one of the kiln.* keys above and on a mean or
 * std that is not finite. */
kiln_status kn_onnx_meta_export(const kn_graph *g, bool with_norm, kn_arena *arena,
                                Onnx__StringStringEntryProto ***props, size_t *n_props);

/* Reads the metadata_props of m into g: the kiln.* keys into class_names / input_mean / input_std
 * (a malformed value is KILN_ERR_FORMAT), every other entry into g->meta. */
kiln_status kn_onnx_meta_import(const Onnx__ModelProto *m, kn_graph *g);

#endif
