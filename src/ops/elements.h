/* Integer tensor elements of any width seen as int64, for the ops that take several integer dtypes
 * (binary.c, unary_math.c, reduce.c) and would otherwise need one loop per dtype. Integers never go
 * through float math: they are computed in 64 bits and stored truncated to their width, which wraps
 * (two's complement) as numpy does. u64 elements are held as their bit pattern in an int64: sums,
 * differences and products wrap the same way, while comparisons, division and remainders go through
 * kn_int_less / the callers' u64 cases.
 */
#ifndef KN_OPS_ELEMENTS_H
#define KN_OPS_ELEMENTS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/tensor.h"

static inline bool kn_dtype_is_integer(kn_dtype dtype) {
    return dtype == KN_I64 || dtype == KN_I32 || dtype == KN_U8 || dtype == KN_I8 || dtype == KN_I16 ||
           dtype == KN_U16 || dtype == KN_U32 || dtype == KN_U64;
}

/* a < b for elements loaded by kn_int_load: unsigned for u64, whose large values load negative. */
static inline bool kn_int_less(kn_dtype dtype, int64_t a, int64_t b) {
    return dtype == KN_U64 ? (uint64_t)a < (uint64_t)b : a < b;
}

/* Element i of integer (or bool) data, sign- or zero-extended. */
static inline int64_t kn_int_load(const void *data, kn_dtype dtype, int64_t i) {
    switch (dtype) {
    case KN_I64: return ((const int64_t *)data)[i];
    case KN_I32: return ((const int32_t *)data)[i];
    case KN_I8: return ((const int8_t *)data)[i];
    case KN_I16: return ((const int16_t *)data)[i];
    case KN_U16: return ((const uint16_t *)data)[i];
    case KN_U32: return ((const uint32_t *)data)[i];
    case KN_U64: return (int64_t)((const uint64_t *)data)[i];
    default: return ((const uint8_t *)data)[i]; /* u8, bool */
    }
}

/* Stores v truncated to the dtype's width. */
static inline void kn_int_store(void *data, kn_dtype dtype, int64_t i, int64_t v) {
    switch (dtype) {
    case KN_I64: ((int64_t *)data)[i] = v; break;
    case KN_I32: ((int32_t *)data)[i] = (int32_t)v; break;
    case KN_I8: ((int8_t *)data)[i] = (int8_t)v; break;
    case KN_I16: ((int16_t *)data)[i] = (int16_t)v; break;
    case KN_U16: ((uint16_t *)data)[i] = (uint16_t)v; break;
    case KN_U32: ((uint32_t *)data)[i] = (uint32_t)v; break;
    case KN_U64: ((uint64_t *)data)[i] = (uint64_t)v; break;
    default: ((uint8_t *)data)[i] = (uint8_t)v; break; /* u8, bool */
    }
}

/* The smallest and largest values of an integer dtype (u64's largest as its bit pattern, -1). */
static inline int64_t kn_int_lowest(kn_dtype dtype) {
    switch (dtype) {
    case KN_I64: return INT64_MIN;
    case KN_I32: return INT32_MIN;
    case KN_I8: return INT8_MIN;
    case KN_I16: return INT16_MIN;
    default: return 0; /* unsigned, bool */
    }
}

static inline int64_t kn_int_highest(kn_dtype dtype) {
    switch (dtype) {
    case KN_I64: return INT64_MAX;
    case KN_I32: return INT32_MAX;
    case KN_I8: return INT8_MAX;
    case KN_I16: return INT16_MAX;
    case KN_U16: return UINT16_MAX;
    case KN_U32: return UINT32_MAX;
    case KN_U64: return -1;
    case KN_BOOL: return 1;
    default: return UINT8_MAX; /* u8 */
    }
}

#endif
