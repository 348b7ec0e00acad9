#include "ops/window.h"

#include <assert.h>
#include <string.h>

/* Bounds attribute values so that window arithmetic on int64 cannot overflow. */
#define KN_WINDOW_ATTR_MAX (INT64_C(1) << 30)

/* Reads INTS attribute `name` of a `rank`-D window into v when present: `count` values, or (when
 * full_count is not 0) full_count values of which the last `count` are kept; each in [lowest,
 * KN_WINDOW_ATTR_MAX]. */
static kiln_status read_ints(const kn_node *node, const char *name, int rank, int count,
                             int full_count, int64_t lowest, int64_t *v) {
    const kn_attr *a = kn_node_attr(node, name);
    if (!a)
        return KILN_OK;
    if (a->type != KN_ATTR_INTS)
        return kn_fail(KILN_ERR_INVALID_ARG, "attribute %s must be a list of ints", name);
    if (a->n_ints != count && (full_count == 0 || a->n_ints != full_count))
        return kn_fail(KILN_ERR_INVALID_ARG, "%s has %d values, expected %d for a %d-D window", name,
                       a->n_ints, count, rank);
    int skip = a->n_ints - count;
    for (int i = 0; i < count; i++) {
        int64_t value = a->ints[skip + i];
        if (value < lowest || value > KN_WINDOW_ATTR_MAX)
            return kn_fail(KILN_ERR_INVALID_ARG, "%s[%d] = %lld is outside [%lld, %lld]", name,
                           skip + i, (long long)value, (long long)lowest,
                           (long long)KN_WINDOW_ATTR_MAX);
        v[i] = value;
    }
    return KILN_OK;
}

typedef enum window_pad {
    WINDOW_PAD_NOTSET, WINDOW_PAD_VALID, WINDOW_PAD_SAME_UPPER, WINDOW_PAD_SAME_LOWER
} window_pad;

/* auto_pad, and the explicit pads (2 * rank: all begins, then all ends) it allows. */
static kiln_status read_padding(const kn_node *node, int rank, window_pad *mode, int64_t *pads) {
    const char *auto_pad = kn_node_string(node, "auto_pad", "NOTSET");
    if (strcmp(auto_pad, "NOTSET") == 0)
        *mode = WINDOW_PAD_NOTSET;
    else if (strcmp(auto_pad, "VALID") == 0)
        *mode = WINDOW_PAD_VALID;
    else if (strcmp(auto_pad, "SAME_UPPER") == 0)
        *mode = WINDOW_PAD_SAME_UPPER;
    else if (strcmp(auto_pad, "SAME_LOWER") == 0)
        *mode = WINDOW_PAD_SAME_LOWER;
    else
        return kn_fail(KILN_ERR_INVALID_ARG,
                       "auto_pad '%s' is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER", auto_pad);
    for (int i = 0; i < 2 * rank; i++)
        pads[i] = 0;
    KN_TRY(read_ints(node, "pads", rank, 2 * rank, 0, 0, pads));
    bool any_pad = false;
    for (int i = 0; i < 2 * rank; i++)
        any_pad |= pads[i] != 0;
    if (*mode != WINDOW_PAD_NOTSET && any_pad)
        return kn_fail(KILN_ERR_INVALID_ARG, "pads cannot be set together with auto_pad %s", auto_pad);
    return KILN_OK;
}

static const char *axis_name(int rank, int i) {
    static const char *const names[KN_WINDOW_MAX_RANK][KN_WINDOW_MAX_RANK] = {
        {"length"},
        {"height", "width"},
        {"depth", "height", "width"},
        {"spatial axis 0", "spatial axis 1", "spatial axis 2", "spatial axis 3"},
    };
    return names[rank - 1][i];
}

static kiln_status check_rank(int rank) {
    if (rank < 1 || rank > KN_WINDOW_MAX_RANK)
        return kn_fail(KILN_ERR_SHAPE, "a window has 1 to %d spatial axes, not %d", KN_WINDOW_MAX_RANK,
                       rank);
    return KILN_OK;
}

/* Output size with explicit pads: floor (or ceil) of (padded input - extent) / stride, plus one. */
static kiln_status axis_output_explicit(kn_window_axis *a, bool ceil_mode, const char *name) {
    int64_t extent = kn_window_extent(a);
    int64_t span = a->in + a->pad_begin + a->pad_end - extent;
    if (span < 0)
        return kn_fail(KILN_ERR_SHAPE,
                       "kernel extent %lld along %s (kernel %lld, dilation %lld) is larger than the "
                       "padded input %lld (input %lld, pads %lld + %lld)",
                       (long long)extent, name, (long long)a->kernel, (long long)a->dilation,
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

kiln_status kn_window_resolve_nd(const kn_node *node, int rank, const int64_t *in,
                                 const int64_t *kernel, bool ceil_mode, kn_window_axis *axes) {
    KN_TRY(check_rank(rank));
    int64_t strides[KN_WINDOW_MAX_RANK], dilations[KN_WINDOW_MAX_RANK], pads[2 * KN_WINDOW_MAX_RANK];
    for (int i = 0; i < rank; i++)
        strides[i] = dilations[i] = 1;
    KN_TRY(read_ints(node, "strides", rank, rank, 0, 1, strides));
    KN_TRY(read_ints(node, "dilations", rank, rank, 0, 1, dilations));
    window_pad mode = WINDOW_PAD_NOTSET;
    KN_TRY(read_padding(node, rank, &mode, pads));
    for (int i = 0; i < rank; i++) {
        const char *name = axis_name(rank, i);
        if (in[i] < 1)
            return kn_fail(KILN_ERR_SHAPE, "input %s is %lld", name, (long long)in[i]);
        if (kernel[i] < 1 || kernel[i] > KN_WINDOW_ATTR_MAX)
            return kn_fail(KILN_ERR_SHAPE, "kernel %s is %lld", name, (long long)kernel[i]);
        kn_window_axis *a = &axes[i];
        *a = (kn_window_axis){.in = in[i], .kernel = kernel[i], .stride = strides[i],
                              .dilation = dilations[i], .pad_begin = pads[i], .pad_end = pads[rank + i]};
        if (mode == WINDOW_PAD_SAME_UPPER || mode == WINDOW_PAD_SAME_LOWER)
            axis_output_same(a, mode == WINDOW_PAD_SAME_UPPER);
        else
            KN_TRY(axis_output_explicit(a, ceil_mode && mode == WINDOW_PAD_NOTSET, name));
    }
    return KILN_OK;
}

kiln_status kn_window_resolve(const kn_node *node, const int64_t in[2], const int64_t kernel[2],
                              bool ceil_mode, kn_window_axis axes[2]) {
    return kn_window_resolve_nd(node, 2, in, kernel, ceil_mode, axes);
}

/* A 1-D window's one axis moves to the width, under a height axis that reads its one row. */
static void window_as_2d(int rank, kn_window_axis axes[2]) {
    assert(rank == 1 || rank == 2);
    if (rank == 2)
        return;
    axes[1] = axes[0];
    axes[0] = (kn_window_axis){.in = 1, .kernel = 1, .stride = 1, .dilation = 1, .out = 1};
}

kiln_status kn_window_resolve_as_2d(const kn_node *node, int rank, const int64_t *in,
                                    const int64_t *kernel, bool ceil_mode, kn_window_axis axes[2]) {
    KN_TRY(kn_window_resolve_nd(node, rank, in, kernel, ceil_mode, axes));
    window_as_2d(rank, axes);
    return KILN_OK;
}

/* One axis of ConvTranspose. Its output size is the full extent stride (x - 1) + output_padding +
 * (kernel - 1) dilation + 1, less pads[begin] + pads[end]. With auto_pad SAME_UPPER / SAME_LOWER it is
 * x * stride, and with output_shape (`output` >= 0) as given; the difference from the full extent is
 * then cut from the two sides as the ONNX spec says: the odd element at the end for SAME_UPPER, at the
 * beginning otherwise. An output_shape larger than the full extent (ONNX's own test
 * convtranspose_output_shape) leaves zeros (plus bias) at the end, as onnxruntime does: pad_end is
 * then negative. */
static kiln_status axis_transposed(kn_window_axis *a, int64_t x, int64_t output_padding,
                                   int64_t output, window_pad mode, const char *name) {
    a->out = x;
    /* x may be as large as a tensor: the output size saturates instead of overflowing, and the
     * output shape's size check rejects it. */
    int64_t full = kn_count_add(kn_count_mul(a->stride, x - 1), output_padding + kn_window_extent(a));
    bool same = mode == WINDOW_PAD_SAME_UPPER || mode == WINDOW_PAD_SAME_LOWER;
    if (output < 0 && same)
        output = kn_count_mul(x, a->stride);
    int64_t pad_begin = a->pad_begin, pad_end = a->pad_end;
    if (output >= 0) {
        int64_t total = full - output;
        a->pad_begin = total < 0 ? 0 : mode == WINDOW_PAD_SAME_UPPER ? total / 2 : total - total / 2;
        a->in = output;
    } else {
        a->in = full - a->pad_begin - a->pad_end;
    }
    a->pad_end = full - a->in - a->pad_begin;
    if (a->in < 1)
        return kn_fail(KILN_ERR_SHAPE,
                       "output %s is %lld: full extent %lld (input %lld, stride %lld, kernel %lld, "
                       "dilation %lld, output_padding %lld) less pads %lld + %lld",
                       name, (long long)a->in, (long long)full, (long long)x, (long long)a->stride,
                       (long long)a->kernel, (long long)a->dilation, (long long)output_padding,
                       (long long)pad_begin, (long long)pad_end);
    return KILN_OK;
}

kiln_status kn_window_resolve_transposed_nd(const kn_node *node, int rank, const int64_t *x,
                                            const int64_t *kernel, kn_window_axis *axes) {
    KN_TRY(check_rank(rank));
    int64_t strides[KN_WINDOW_MAX_RANK], dilations[KN_WINDOW_MAX_RANK], pads[2 * KN_WINDOW_MAX_RANK];
    int64_t output_padding[KN_WINDOW_MAX_RANK], output_shape[KN_WINDOW_MAX_RANK];
    for (int i = 0; i < rank; i++) {
        strides[i] = dilations[i] = 1;
        output_padding[i] = 0;
        output_shape[i] = -1;
    }
    KN_TRY(read_ints(node, "strides", rank, rank, 0, 1, strides));
    KN_TRY(read_ints(node, "dilations", rank, rank, 0, 1, dilations));
    KN_TRY(read_ints(node, "output_padding", rank, rank, 0, 0, output_padding));
    // output_shape may also be given in full, (N, M, spatial...)
    KN_TRY(read_ints(node, "output_shape", rank, rank, rank + 2, 1, output_shape));
    window_pad mode = WINDOW_PAD_NOTSET;
    KN_TRY(read_padding(node, rank, &mode, pads));
    for (int i = 0; i < rank; i++) {
        const char *name = axis_name(rank, i);
        if (x[i] < 1)
            return kn_fail(KILN_ERR_SHAPE, "input %s is %lld", name, (long long)x[i]);
        if (kernel[i] < 1 || kernel[i] > KN_WINDOW_ATTR_MAX)
            return kn_fail(KILN_ERR_SHAPE, "kernel %s is %lld", name, (long long)kernel[i]);
        bool explicit_pads = mode == WINDOW_PAD_NOTSET;
        axes[i] = (kn_window_axis){.kernel = kernel[i], .stride = strides[i], .dilation = dilations[i],
                                   .pad_begin = explicit_pads ? pads[i] : 0,
                                   .pad_end = explicit_pads ? pads[rank + i] : 0};
        KN_TRY(axis_transposed(&axes[i], x[i], output_padding[i], output_shape[i], mode, name));
    }
    return KILN_OK;
}

kiln_status kn_window_resolve_transposed_as_2d(const kn_node *node, int rank, const int64_t *x,
                                               const int64_t *kernel, kn_window_axis axes[2]) {
    KN_TRY(kn_window_resolve_transposed_nd(node, rank, x, kernel, axes));
    window_as_2d(rank, axes);
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

static bool window_reads_input(const kn_window_axis *a, int64_t o) {
    int64_t lo, hi;
    kn_window_taps_inside(a, o, &lo, &hi);
    return lo < hi;
}

/* The smallest x >= 0 with a * x mod m in [lo, hi], or -1 when there is none; 0 <= a < m,
 * 0 <= lo <= hi < m, m <= 2^31. Euclid's descent: when no multiple of a lands in [lo, hi] directly,
 * the x that does after y wraps past m comes from the smallest y with m * y mod a in the interval
 * that [lo, hi] leaves modulo a, a smaller problem of the same form. O(log m). */
static int64_t first_multiple_in(int64_t a, int64_t m, int64_t lo, int64_t hi) {
    if (lo == 0)
        return 0;
    if (a == 0)
        return -1;
    int64_t x = (lo + a - 1) / a;
    if (a * x <= hi)
        return x;
    /* No multiple of a lies in [lo, hi], so lo % a and hi % a are in one block of a. */
    int64_t y = first_multiple_in(m % a, a, a - hi % a, a - lo % a);
    return y < 0 ? -1 : (lo + m * y + a - 1) / a;
}

/* The first window of axis a that reads no input position, or -1 when every window reads one.
 * O(log dilation), however many windows there are. */
static int64_t axis_first_miss(const kn_window_axis *a) {
    if (a->out == 0)
        return -1;
    /* Window starts grow with o: windows wholly before the input come first, so window 0 is one if
     * any is, and windows wholly after it come last, from the first that starts past it. */
    if (!window_reads_input(a, 0))
        return 0;
    int64_t past_input = (a->in + a->pad_begin + a->stride - 1) / a->stride;
    int64_t miss = past_input < a->out ? past_input : -1;
    /* Between them a window misses only by stepping over the whole input between two taps, which
     * needs taps farther apart than the input is long. Such a window starts in the begin padding,
     * before past_input; its first tap past the padding is at its start modulo the dilation,
     * r(o) = (o stride - pad_begin) mod dilation, and it misses when r(o) >= in. */
    if (a->dilation <= a->in || a->kernel == 1)
        return miss;
    int64_t in_padding = (a->pad_begin + a->stride - 1) / a->stride;
    int64_t d = a->dilation, step = a->stride % d, first = (d - a->pad_begin % d) % d;
    /* r(o) in [in, d - 1]: o stride mod d in [in - first, d - 1 - first]; window 0 reads the input,
     * so r(0) = first < in and that interval lies in [1, d - 1]. */
    int64_t o = first_multiple_in(step, d, a->in - first, d - 1 - first);
    return o >= 0 && o < in_padding && o < a->out ? o : miss;
}

kiln_status kn_window_check_reads_input(const kn_window_axis *axes, int rank) {
    for (int i = 0; i < rank; i++) {
        const kn_window_axis *a = &axes[i];
        int64_t o = axis_first_miss(a);
        if (o >= 0)
            return kn_fail(KILN_ERR_SHAPE,
                           "window %lld along %s covers only padding (pads %lld + %lld, "
                           "kernel %lld, dilation %lld)",
                           (long long)o, axis_name(rank, i), (long long)a->pad_begin,
                           (long long)a->pad_end, (long long)a->kernel, (long long)a->dilation);
    }
    return KILN_OK;
}

/* ---- N-D windows ---- */

void kn_window_nd_sizes(kn_window_nd *win) {
    win->in_size = win->out_size = win->taps = 1;
    for (int d = 0; d < win->rank; d++) {
        /* Saturating: shape inference resolves windows before any size check, and a pool's kernel
         * is an attribute of up to 2^30 per axis. */
        win->in_size = kn_count_mul(win->in_size, win->axes[d].in);
        win->out_size = kn_count_mul(win->out_size, win->axes[d].out);
        win->taps = kn_count_mul(win->taps, win->axes[d].kernel);
    }
}

/* Sets tap and at from the current tap of each axis. */
static void walk_locate(kn_window_walk *w) {
    const kn_window_nd *win = w->win;
    w->tap = 0;
    w->at = 0;
    for (int d = 0; d < win->rank; d++) {
        const kn_window_axis *a = &win->axes[d];
        w->tap = w->tap * a->kernel + w->k[d];
        w->at = w->at * a->in + w->start[d] + w->k[d] * a->dilation;
    }
}

void kn_window_walk_begin(kn_window_walk *w, const kn_window_nd *win, int64_t out_index) {
    w->win = win;
    w->done = false;
    for (int d = win->rank - 1; d >= 0; d--) {
        const kn_window_axis *a = &win->axes[d];
        int64_t o = out_index % a->out;
        out_index /= a->out;
        w->start[d] = kn_window_start(a, o);
        kn_window_taps_inside(a, o, &w->lo[d], &w->hi[d]);
        w->k[d] = w->lo[d];
        w->done |= w->lo[d] == w->hi[d];
    }
    if (!w->done)
        walk_locate(w);
}

void kn_window_walk_next(kn_window_walk *w) {
    for (int d = w->win->rank - 1; d >= 0; d--) {
        if (++w->k[d] < w->hi[d]) {
            walk_locate(w);
            return;
        }
        w->k[d] = w->lo[d];
    }
    w->done = true;
}
