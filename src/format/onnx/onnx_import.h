/* ONNX import: an ONNX model (opsets 7 to 17 of the default domain; models of older opsets when
 * their ops have not changed since) becomes a kiln graph.
 *
 * The file is treated as hostile: every name, size, dim and reference is checked before use, and a
 * bad file gives KILN_ERR_FORMAT (or KILN_ERR_UNSUPPORTED for a valid model using something kiln does
 * not have), never a crash. Older-opset forms are rewritten into the signatures kiln's ops implement,
 * constant subgraphs are computed once, and every rewrite is listed in docs/onnx.md.
 *
 * The graph's inputs keep ONNX's dims, with -1 for a dynamic dim (dim_param or unknown): whoever runs
 * the graph binds them and re-infers shapes. Initializers become KN_VALUE_CONST values.
 */
#ifndef KN_ONNX_IMPORT_H
#define KN_ONNX_IMPORT_H

#include <stddef.h>

#include "core/graph.h"

/* Imports the model at `path` into `g` (initialised here; the caller frees it with kn_graph_free,
 * also after a failure). External data is read relative to the model's directory. */
kiln_status kn_onnx_import_file(const char *path, kn_graph *g);

/* The same from memory. base_dir is the directory external data is relative to; NULL when the
 * model may not refer to external data. */
kiln_status kn_onnx_import_buffer(const void *buf, size_t size, const char *base_dir, kn_graph *g);

/* Imports for fine-tuning: float initializers feeding a trainable input become KN_VALUE_PARAM —
 * Conv W and B, Gemm B and C, either constant operand of MatMul, Add and Mul, BatchNormalization
 * scale and B, LayerNormalization scale and B — and BatchNormalization's mean and var become
 * KN_VALUE_STATE. Values of Constant nodes stay constants, and nodes reading a parameter are not
 * folded into constants. */
kiln_status kn_onnx_import_for_training(const char *path, kn_graph *g);

/* Whether the importer can bring in the default-domain op `op_type` in a model of opset `opset`:
 * kiln's op table has it, or the importer rewrites it into ops the table has (Constant, Identity,
 * Upsample ...), the opset is 1 to 21, and the op's form at that opset is one the importer reads
 * (Upsample-1 and Tile-1 are not). */
bool kn_onnx_op_supported(const char *op_type, int64_t opset);

/* The importer's rewrites of `op_type` in one line for docs/ops.md ("opset < 13: axes attribute ->
 * input"), or NULL when it is imported as it is. */
const char *kn_onnx_op_note(const char *op_type);

/* Iterates the ONNX ops the importer translates into other ops or values (Constant, Identity,
 * Upsample): the i-th one's name, NULL past the end. */
const char *kn_onnx_translated_op(int i);
/* Iterates the ONNX ops of opsets 1-21 that kiln does not run, with why (for docs/ops.md and the
 * importer's message): entry i's op name and *reason, NULL past the end. */
const char *kn_onnx_missing_op(int i, const char **reason);

/* Reads one serialized TensorProto (the ONNX backend tests' input_K.pb / output_K.pb files) with the
 * same checks as initializers. f16 stays f16; dtypes kiln has no equivalent for give
 * KILN_ERR_UNSUPPORTED. out->data is malloc'ed (free() it); a STRING tensor's is laid out as the C API
 * takes it, numel `const char *` followed by the strings they point at (kiln_dtype_size bytes per
 * element, not kn_dtype_size); *name, when name is not NULL, gets a
 * malloc'ed copy of the tensor's name. */
kiln_status kn_onnx_read_tensor_file(const char *path, kn_tensor *out, char **name);

#endif
