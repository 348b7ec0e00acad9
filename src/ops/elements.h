/* Integer tensor elements of any width seen as int64, for the ops that take several integer dtypes
 * (binary.c, unary_math.c, reduce.c) and would otherwise need one loop per dtype. Integers never go
 * through float math: they are computed in 64 bits and stored truncated to their width, which wraps
 * (two's complement) as numpy does.
 */
#ifndef KN_OPS_ELEMENTS_H
#define KN_OPS_ELEMENTS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/tensor.h"

static inline bool kn_dtype_is_integer(kn_dtype dtype) {
    return dtype == KN_I64 || dtype == KN_I32 || dtype == KN_U8 || dtype == KN_I8;
}

/* Element i of integer (or bool) data, sign- or zero-extended. */
static inline int64_t kn_int_load(const void *data, kn_dtype dtype, int64_t i) {
    switch (dtype) {
    case KN_I64: return ((const int64_t *)data)[i];
    case KN_I32: return ((const int32_t *)data)[i];
    case KN_I8: return ((const int8_t *)data)[i];
    default: return ((const uint8_t *)data)[i]; /* u8, bool */
    }
}

/* Stores v truncated to the dtype's width. */
static inline void kn_int_store(void *data, kn_dtype dtype, int64_t i, int64_t v) {
    switch (dtype) {
    case KN_I64: ((int64_t *)data)[i] = v; break;
    case KN_I32: ((int32_t *)data)[i] = (int32_t)v; break;
    case KN_I8: ((int8_t *)data)[i] = (int8_t)v; break;
    default: ((uint8_t *)data)[i] = (uint8_t)v; break; /* u8, bool */
    }
}

/* The smallest and largest values of an integer dtype. */
static inline int64_t kn_int_lowest(kn_dtype dtype) {
    switch (dtype) {
    case KN_I64: return INT64_MIN;
    case KN_I32: return INT32_MIN;
    case KN_I8: return INT8_MIN;
    default: return 0; /* u8, bool */
    }
}

static inline int64_t kn_int_highest(kn_dtype dtype) {
    switch (dtype) {
    case KN_I64: return INT64_MAX;
    case KN_I32: return INT32_MAX;
    case KN_I8: return INT8_MAX;
    case KN_BOOL: return 1;
    default: return UINT8_MAX; /* u8 */
    }
}

#endif
