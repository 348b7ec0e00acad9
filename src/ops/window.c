#include "ops/window.h"

#include <string.h>

/* Bounds attribute values so that window arithmetic on int64 cannot overflow. */
#define KN_WINDOW_ATTR_MAX (INT64_C(1) << 30)

/* Reads INTS attribute `name` into v[count] when present, checking its length and range. */
static kiln_status read_ints(const kn_node *node, const char *name, int count, int64_t lowest,
                             int64_t *v) {
    const kn_attr *a = kn_node_attr(node, name);
    if (!a)
        return KILN_OK;
    if (a->type != KN_ATTR_INTS)
        return kn_fail(KILN_ERR_INVALID_ARG, "attribute %s must be a list of ints", name);
    if (a->n_ints != count)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s has %d values, expected %d for a 2-D window", name,
                       a->n_ints, count);
    for (int i = 0; i < count; i++) {
        if (a->ints[i] < lowest || a->ints[i] > KN_WINDOW_ATTR_MAX)
            return kn_fail(KILN_ERR_INVALID_ARG, "%s[%d] = %lld is outside [%lld, %lld]", name, i,
                           (long long)a->ints[i], (long long)lowest, (long long)KN_WINDOW_ATTR_MAX);
        v[i] = a->ints[i];
    }
    return KILN_OK;
}

/* Output size with explicit pads: floor (or ceil) of (padded input - extent) / stride, plus one. */
static kiln_status axis_output_explicit(kn_window_axis *a, bool ceil_mode, const char *axis_name) {
    int64_t extent = kn_window_extent(a);
    int64_t span = a->in + a->pad_begin + a->pad_end - extent;
    if (span < 0)
        return kn_fail(KILN_ERR_SHAPE,
                       "kernel extent %lld along %s (kernel %lld, dilation %lld) is larger than the "
                       "padded input %lld (input %lld, pads %lld + %lld)",
                       (long long)extent, axis_name, (long long)a->kernel, (long long)a->dilation,
                       (long long)(a->in + a->pad_begin + a->pad_end), (long long)a->in,
                       (long long)a->pad_begin, (long long)a->pad_end);
    a->out = (ceil_mode ? (span + a->stride - 1) / a->stride : span / a->stride) + 1;
    if (ceil_mode && (a->out - 1) * a->stride >= a->in + a->pad_begin)
        a->out--;
    return KILN_OK;
}

/* SAME_*: output = ceil(in / stride); the padding needed to get there is split evenly, the odd
 * element going to the end (SAME_UPPER) or the beginning (SAME_LOWER). */
static void axis_output_same(kn_window_axis *a, bool upper) {
    a->out = (a->in + a->stride - 1) / a->stride;
    int64_t total = (a->out - 1) * a->stride + kn_window_extent(a) - a->in;
    if (total < 0)
        total = 0;
    a->pad_begin = upper ? total / 2 : total - total / 2;
    a->pad_end = total - a->pad_begin;
}

kiln_status kn_window_resolve(const kn_node *node, const int64_t in[2], const int64_t kernel[2],
                              bool ceil_mode, kn_window_axis axes[2]) {
    int64_t strides[2] = {1, 1}, dilations[2] = {1, 1}, pads[4] = {0, 0, 0, 0};
    KN_TRY(read_ints(node, "strides", 2, 1, strides));
    KN_TRY(read_ints(node, "dilations", 2, 1, dilations));
    KN_TRY(read_ints(node, "pads", 4, 0, pads));
    const char *auto_pad = kn_node_string(node, "auto_pad", "NOTSET");
    bool explicit_pads = strcmp(auto_pad, "NOTSET") == 0;
    bool valid = strcmp(auto_pad, "VALID") == 0;
    bool same_upper = strcmp(auto_pad, "SAME_UPPER") == 0;
    bool same_lower = strcmp(auto_pad, "SAME_LOWER") == 0;
    if (!explicit_pads && !valid && !same_upper && !same_lower)
        return kn_fail(KILN_ERR_INVALID_ARG,
                       "auto_pad '%s' is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER", auto_pad);
    bool any_pad = pads[0] || pads[1] || pads[2] || pads[3];
    if (!explicit_pads && any_pad)
        return kn_fail(KILN_ERR_INVALID_ARG, "pads cannot be set together with auto_pad %s", auto_pad);

    static const char *const axis_names[2] = {"height", "width"};
    for (int i = 0; i < 2; i++) {
        if (in[i] < 1)
            return kn_fail(KILN_ERR_SHAPE, "input %s is %lld", axis_names[i], (long long)in[i]);
        if (kernel[i] < 1 || kernel[i] > KN_WINDOW_ATTR_MAX)
            return kn_fail(KILN_ERR_SHAPE, "kernel %s is %lld", axis_names[i], (long long)kernel[i]);
        kn_window_axis *a = &axes[i];
        *a = (kn_window_axis){.in = in[i], .kernel = kernel[i], .stride = strides[i],
                              .dilation = dilations[i], .pad_begin = pads[i], .pad_end = pads[i + 2]};
        if (same_upper || same_lower)
            axis_output_same(a, same_upper);
        else
            KN_TRY(axis_output_explicit(a, ceil_mode && explicit_pads, axis_names[i]));
    }
    return KILN_OK;
}

void kn_window_tap_range(const kn_window_axis *a, int64_t tap, int64_t *lo, int64_t *hi) {
    /* Tap `tap` of output o reads position o * stride + offset. */
    int64_t offset = tap * a->dilation - a->pad_begin;
    int64_t first = offset >= 0 ? 0 : (-offset + a->stride - 1) / a->stride;
    int64_t last_room = a->in - 1 - offset;
    int64_t end = last_room >= 0 ? last_room / a->stride + 1 : 0;
    if (end > a->out)
        end = a->out;
    if (first > end)
        first = end;
    *lo = first;
    *hi = end;
}

void kn_window_taps_inside(const kn_window_axis *a, int64_t o, int64_t *lo, int64_t *hi) {
    int64_t start = kn_window_start(a, o);
    int64_t first = start >= 0 ? 0 : (-start + a->dilation - 1) / a->dilation;
    int64_t last_room = a->in - 1 - start;
    int64_t end = last_room >= 0 ? last_room / a->dilation + 1 : 0;
    if (end > a->kernel)
        end = a->kernel;
    if (first > end)
        first = end;
    *lo = first;
    *hi = end;
}
