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

/* ---- quantization-aware training, gradient quantization ------------------------------------------- */

/* ---- distillation ----------------------------------------------------------------------------------- */

#ifdef __cplusplus
}
#endif

#endif
