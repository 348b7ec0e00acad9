/* GridSample (opset 16, 2-D): Y[n, c, h, w] samples X[n, c] at grid[n, h, w] = (x, y), coordinates
 * normalized to [-1, 1] over the width and height (align_corners = 1: -1 and 1 are the centres of the
 * corner pixels; 0: their outer edges). X (N, C, H, W), grid (N, Ho, Wo, 2) -> Y (N, C, Ho, Wo).
 *
 *     mode           bilinear (default), nearest (round half to even), bicubic (A = -0.75)
 *     padding_mode   zeros (default: outside reads 0), border (clamped to the edge), reflection
 *                    (mirrored at the edges, then clamped)
 *
 * As PyTorch's grid_sample, which onnx's reference follows: bilinear and nearest pad the sampling point,
 * bicubic pads each of its 16 taps. f32, computed in double. No gradient.
 */
#include <math.h>
#include <string.h>

#include "core/status.h"
#include "ops/movement.h"

typedef enum { GS_BILINEAR, GS_NEAREST, GS_BICUBIC } gs_mode;
typedef enum { GS_ZEROS, GS_BORDER, GS_REFLECTION } gs_padding;

typedef struct gs_params {
    gs_mode mode;
    gs_padding padding;
    bool align_corners;
} gs_params;

static kiln_status gs_read_params(const kn_node *node, gs_params *p) {
    const char *mode = kn_node_string(node, "mode", "bilinear"), *pad = kn_node_string(node, "padding_mode", "zeros");
    p->align_corners = kn_node_int(node, "align_corners", 0) != 0;
    if (strcmp(mode, "bilinear") == 0 || strcmp(mode, "linear") == 0)
        p->mode = GS_BILINEAR;
    else if (strcmp(mode, "nearest") == 0)
        p->mode = GS_NEAREST;
    else if (strcmp(mode, "bicubic") == 0 || strcmp(mode, "cubic") == 0)
        p->mode = GS_BICUBIC;
    else
        return kn_fail(KILN_ERR_UNSUPPORTED, "mode '%s'; GridSample takes bilinear, nearest or bicubic", mode);
    if (strcmp(pad, "zeros") == 0)
        p->padding = GS_ZEROS;
    else if (strcmp(pad, "border") == 0)
        p->padding = GS_BORDER;
    else if (strcmp(pad, "reflection") == 0)
        p->padding = GS_REFLECTION;
    else
        return kn_fail(KILN_ERR_UNSUPPORTED, "padding_mode '%s'; GridSample takes zeros, border or reflection", pad);
    return KILN_OK;
}

static kiln_status gs_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    const kn_value *x = kn_node_input(g, node, 0), *grid = kn_node_input(g, node, 1);
    if (!x || !grid)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs X and grid are required");
    gs_params p;
    KN_TRY(gs_read_params(node, &p));
    if (x->dtype != KN_F32 || grid->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "X and grid must be f32");
    if (x->shape.ndim != 4 || grid->shape.ndim != 4 || grid->shape.d[3] != 2 || grid->shape.d[0] != x->shape.d[0]) {
        char xs[96], gs[96];
        return kn_fail(KILN_ERR_SHAPE, "X %s and grid %s are not (N, C, H, W) and (N, Ho, Wo, 2): kiln samples 2-D "
                       "grids", kn_shape_str(&x->shape, xs, sizeof xs), kn_shape_str(&grid->shape, gs, sizeof gs));
    }
    kn_shape y = kn_shape_of(4, (int64_t[]){x->shape.d[0], x->shape.d[1], grid->shape.d[1], grid->shape.d[2]});
    kn_set_output(g, node, 0, &y, KN_F32);
    return KILN_OK;
}

/* A normalized coordinate in pixels along an axis of `size`. */
static double gs_unnormalize(double v, int64_t size, bool align_corners) {
    return align_corners ? (v + 1.0) / 2.0 * (double)(size - 1) : ((v + 1.0) * (double)size - 1.0) / 2.0;
}

/* Mirrors v into [twice_low / 2, twice_high / 2]. */
static double gs_reflect(double v, double twice_low, double twice_high) {
    if (twice_low == twice_high)
        return 0.0;
    double low = twice_low / 2.0, span = (twice_high - twice_low) / 2.0;
    v = fabs(v - low);
    double extra = fmod(v, span), flips = floor(v / span);
    return fmod(flips, 2.0) == 0.0 ? extra + low : span - extra + low;
}

/* The padding mode applied to a pixel coordinate along an axis of `size`. */
static double gs_pad(double v, int64_t size, const gs_params *p) {
    double high = (double)(size - 1);
    if (p->padding == GS_REFLECTION)
        v = p->align_corners ? gs_reflect(v, 0.0, 2.0 * high) : gs_reflect(v, -1.0, 2.0 * (double)size - 1.0);
    if (p->padding == GS_BORDER || p->padding == GS_REFLECTION)
        v = v < 0.0 ? 0.0 : v > high ? high : v;
    return v;
}

/* plane[y][x], 0 outside. */
static double gs_at(const float *plane, int64_t h, int64_t w, int64_t y, int64_t x) {
    return y >= 0 && y < h && x >= 0 && x < w ? plane[y * w + x] : 0.0;
}

static void gs_cubic_weights(double t, double *c) {
    const double a = -0.75;
    double x1 = t + 1.0, x2 = t, x3 = 1.0 - t, x4 = 2.0 - t;
    c[0] = ((a * x1 - 5.0 * a) * x1 + 8.0 * a) * x1 - 4.0 * a;
    c[1] = ((a + 2.0) * x2 - (a + 3.0)) * x2 * x2 + 1.0;
    c[2] = ((a + 2.0) * x3 - (a + 3.0)) * x3 * x3 + 1.0;
    c[3] = ((a * x4 - 5.0 * a) * x4 + 8.0 * a) * x4 - 4.0 * a;
}

static double gs_sample(const float *plane, int64_t h, int64_t w, double gx, double gy, const gs_params *p) {
    double ix = gs_unnormalize(gx, w, p->align_corners), iy = gs_unnormalize(gy, h, p->align_corners);
    if (!isfinite(ix) || !isfinite(iy) || fabs(ix) > 0x1p52 || fabs(iy) > 0x1p52)
        return 0.0; /* no pixel: and no integer conversion out of range */
    if (p->mode == GS_BICUBIC) {
        double x0 = floor(ix), y0 = floor(iy), cx[4], cy[4], sum = 0.0;
        gs_cubic_weights(ix - x0, cx);
        gs_cubic_weights(iy - y0, cy);
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) {
                double ty = gs_pad(y0 - 1 + i, h, p), tx = gs_pad(x0 - 1 + j, w, p);
                sum += cy[i] * cx[j] * gs_at(plane, h, w, (int64_t)ty, (int64_t)tx);
            }
        return sum;
    }
    ix = gs_pad(ix, w, p);
    iy = gs_pad(iy, h, p);
    if (p->mode == GS_NEAREST)
        return gs_at(plane, h, w, (int64_t)nearbyint(iy), (int64_t)nearbyint(ix));
    double x0 = floor(ix), y0 = floor(iy), fx = ix - x0, fy = iy - y0;
    int64_t xi = (int64_t)x0, yi = (int64_t)y0;
    return (1 - fy) * ((1 - fx) * gs_at(plane, h, w, yi, xi) + fx * gs_at(plane, h, w, yi, xi + 1)) +
           fy * ((1 - fx) * gs_at(plane, h, w, yi + 1, xi) + fx * gs_at(plane, h, w, yi + 1, xi + 1));
}

static kiln_status gs_forward(const kn_op_call *call) {
    gs_params p;
    KN_TRY(gs_read_params(call->node, &p));
    const kn_tensor *x = call->in[0], *grid = call->in[1];
    int64_t n = x->shape.d[0], c = x->shape.d[1], h = x->shape.d[2], w = x->shape.d[3];
    int64_t ho = grid->shape.d[1], wo = grid->shape.d[2];
    const float *g = kn_f32(grid); /* (N, Ho, Wo, 2) */
    float *y = kn_f32(call->out[0]); /* (N, C, Ho, Wo) */
    for (int64_t b = 0; b < n; b++)
        for (int64_t ch = 0; ch < c; ch++) {
            const float *plane = kn_f32(x) + (b * c + ch) * h * w;
            for (int64_t i = 0; i < ho * wo; i++) {
                const float *at = g + (b * ho * wo + i) * 2;
                y[(b * c + ch) * ho * wo + i] = (float)gs_sample(plane, h, w, at[0], at[1], &p);
            }
        }
    return KILN_OK;
}

const kn_op kn_op_gridsample = {.name = "GridSample", .min_inputs = 2, .max_inputs = 2, .infer = gs_infer,
                                .forward = gs_forward};
