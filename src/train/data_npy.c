/* DATA "X.npy,Y.npy" (arrays read by train/npy.h, the reader `kiln run` uses too): X holds the inputs,
 * (N, ...) -> N samples of shape (...), or (N) -> samples of shape (1). float32 is used as is, float16
 * and integers are cast to float, uint8 is scaled by 1/255 into [0, 1] like IDX pixels. Y holds the
 * targets: integers or booleans (N) or (N, 1) are class indices, floats (N) or (N, K) are value targets of
 * width 1 or K.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "train/data_internal.h"
#include "train/npy.h"

/* X becomes the dataset's inputs (its buffer taken over). */
static kiln_status npy_fill_inputs(const char *path, kn_tensor *a, kn_dataset *out) {
    if (a->shape.ndim < 1)
        return kn_fail(KILN_ERR_SHAPE, "%s: X is a scalar; it needs a first dimension of samples", path);
    if (kn_shape_numel(&a->shape) == 0)
        return kn_fail(KILN_ERR_FORMAT, "%s: the array is empty", path);
    KN_TRY(kn_npy_to_f32(path, a));
    out->count = a->shape.d[0];
    out->sample_shape = a->shape.ndim == 1 ? kn_shape_of(1, (int64_t[]){1})
                                           : kn_shape_of(a->shape.ndim - 1, a->shape.d + 1);
    out->sample_size = kn_shape_numel(&out->sample_shape);
    out->x = a->data; // (count, sample_size)
    a->data = NULL;
    return KILN_OK;
}

/* Element i of an integer or boolean array (a uint64 beyond int64's range as -1: never a class). */
static int64_t npy_label_at(const kn_tensor *a, size_t i) {
    switch (a->dtype) {
    case KN_I64: return ((const int64_t *)a->data)[i];
    case KN_I32: return ((const int32_t *)a->data)[i];
    case KN_I16: return ((const int16_t *)a->data)[i];
    case KN_I8: return ((const int8_t *)a->data)[i];
    case KN_U16: return ((const uint16_t *)a->data)[i];
    case KN_U32: return ((const uint32_t *)a->data)[i];
    case KN_U64: return ((const uint64_t *)a->data)[i] > INT64_MAX ? -1 : (int64_t)((const uint64_t *)a->data)[i];
    default: return ((const uint8_t *)a->data)[i];
    }
}

static kiln_status npy_fill_labels(const char *path, const kn_tensor *a, kn_dataset *out) {
    if (a->shape.ndim > 2 || (a->shape.ndim == 2 && a->shape.d[1] != 1)) {
        char shape[96];
        return kn_fail(KILN_ERR_SHAPE, "%s: integer targets are class indices of shape (N) or (N, 1), not %s",
                       path, kn_shape_str(&a->shape, shape, sizeof shape));
    }
    size_t numel = (size_t)kn_shape_numel(&a->shape);
    out->labels = kn_data_malloc(numel, sizeof(int64_t)); // (count)
    if (!out->labels)
        return kn_data_nomem(path, "the labels", numel, sizeof(int64_t));
    for (size_t i = 0; i < numel; i++) {
        int64_t label = npy_label_at(a, i);
        if (label < 0 || label >= KN_DATA_MAX_CLASSES)
            return kn_fail(KILN_ERR_FORMAT, "%s: label %lld at index %zu is not a class index in [0, %d)", path,
                           (long long)label, i, KN_DATA_MAX_CLASSES);
        out->labels[i] = label;
    }
    out->class_count = kn_data_class_count(out->labels, out->count);
    return KILN_OK;
}

/* Float Y becomes the dataset's targets (its buffer taken over). */
static kiln_status npy_fill_values(const char *path, kn_tensor *a, kn_dataset *out) {
    if (a->shape.ndim > 2) {
        char shape[96];
        return kn_fail(KILN_ERR_SHAPE, "%s: float targets have shape (N) or (N, K), not %s", path,
                       kn_shape_str(&a->shape, shape, sizeof shape));
    }
    out->target_width = a->shape.ndim == 2 ? a->shape.d[1] : 1;
    if (out->target_width == 0)
        return kn_fail(KILN_ERR_SHAPE, "%s: the targets are empty (width 0)", path);
    KN_TRY(kn_npy_to_f32(path, a));
    out->targets = a->data; // (count, target_width)
    a->data = NULL;
    return KILN_OK;
}

static kiln_status npy_fill_targets(const char *path, kn_tensor *a, const char *x_path, kn_dataset *out) {
    if (a->shape.ndim < 1 || a->shape.d[0] != out->count)
        return kn_fail(KILN_ERR_SHAPE, "%s has %lld samples but %s has %lld", x_path, (long long)out->count,
                       path, a->shape.ndim < 1 ? 0ll : (long long)a->shape.d[0]);
    if (a->dtype == KN_F32 || a->dtype == KN_F16 || a->dtype == KN_F64)
        return npy_fill_values(path, a, out);
    return npy_fill_labels(path, a, out);
}

kiln_status kn_data_load_npy(const char *x_path, const char *y_path, kn_dataset *out) {
    kn_tensor x, y = {0};
    kiln_status st = kn_npy_read(x_path, &x);
    if (st == KILN_OK)
        st = kn_npy_read(y_path, &y);
    for (int i = 0; st == KILN_OK && i < 2; i++)
        if ((i ? y : x).dtype == KN_STRING)
            st = kn_fail(KILN_ERR_INVALID_ARG, "%s holds text; training data are numbers", i ? y_path : x_path);
    if (st == KILN_OK)
        st = kn_npy_check_finite(x_path, &x);
    if (st == KILN_OK)
        st = kn_npy_check_finite(y_path, &y);
    if (st == KILN_OK)
        st = npy_fill_inputs(x_path, &x, out);
    if (st == KILN_OK)
        st = npy_fill_targets(y_path, &y, x_path, out);
    free(x.data);
    free(y.data);
    return st;
}
