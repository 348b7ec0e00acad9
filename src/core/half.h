/* IEEE binary16 (f16) and bfloat16 (bf16) <-> f32: one implementation for the ops (Cast), the ONNX
 * importer and the .kiln storage encodings. Rounding to nearest, ties to even; NaN stays NaN (quiet),
 * overflow goes to infinity, f16 subnormals are exact both ways. */
#ifndef KN_HALF_H
#define KN_HALF_H

#include <stdint.h>

uint16_t kn_f32_to_f16(float x);
float kn_f16_to_f32(uint16_t h);
uint16_t kn_f32_to_bf16(float x);
float kn_bf16_to_f32(uint16_t h);

#endif
