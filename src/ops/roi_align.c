/* RoiAlign (opset 16): X (N, C, H, W), rois (R, 4) as (x1, y1, x2, y2) in input coordinates times
 * spatial_scale, batch_indices (R) -> Y (R, C, output_height, output_width). Each output bin averages
 * (mode avg) or takes the largest of (mode max) sampling_ratio x sampling_ratio bilinear samples (0:
 * ceil(roi extent / output extent) per axis), spread evenly over the bin.
 *
 * coordinate_transformation_mode half_pixel (the default) shifts the roi by -0.5 pixel;
 * output_half_pixel (the opset-10 behaviour) does not, and makes every roi at least 1 x 1. A sample
 * more than one pixel outside X counts 0; one at the edge is clamped, as onnxruntime's kernel and
 * onnx's reference do (mode max takes, as they do, the largest of the four weighted corner values).
 * f32, computed in double. No gradient.
 */
#include <math.h>
#include <string.h>

#include "core/status.h"
#include "ops/elements.h"
#include "ops/movement.h"

static kiln_status roi_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    const kn_value *x = kn_node_input(g, node, 0), *rois = kn_node_input(g, node, 1);
    const kn_value *idx = kn_node_input(g, node, 2);
    if (!x || !rois || !idx)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs X, rois and batch_indices are required");
    if (x->dtype != KN_F32 || x->shape.ndim != 4 || rois->dtype != KN_F32 || rois->shape.ndim != 2 ||
        rois->shape.d[1] != 4 || (idx->dtype != KN_I64 && idx->dtype != KN_I32) || idx->shape.ndim != 1 ||
        idx->shape.d[0] != rois->shape.d[0])
        return kn_fail(KILN_ERR_SHAPE, "RoiAlign takes X (N, C, H, W) f32, rois (R, 4) f32 and batch_indices (R)");
    const char *mode = kn_node_string(node, "mode", "avg"),
               *ctm = kn_node_string(node, "coordinate_transformation_mode", "half_pixel");
    if ((strcmp(mode, "avg") != 0 && strcmp(mode, "max") != 0) ||
        (strcmp(ctm, "half_pixel") != 0 && strcmp(ctm, "output_half_pixel") != 0))
        return kn_fail(KILN_ERR_INVALID_ARG, "mode '%s' or coordinate_transformation_mode '%s'", mode, ctm);
    int64_t oh = kn_node_int(node, "output_height", 1), ow = kn_node_int(node, "output_width", 1);
    if (oh < 1 || ow < 1 || kn_node_int(node, "sampling_ratio", 0) < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "output sizes must be >= 1 and sampling_ratio >= 0");
    kn_shape y = kn_shape_of(4, (int64_t[]){rois->shape.d[0], x->shape.d[1], oh, ow});
    KN_TRY(kn_shape_check_size(&y));
    kn_set_output(g, node, 0, &y, KN_F32);
    return KILN_OK;
}

/* The bilinear sample of plane (h, w) at (y, x); *corners gets the four weighted corner values. */
static double roi_sample(const float *plane, int64_t h, int64_t w, double y, double x, double corners[4]) {
    corners[0] = corners[1] = corners[2] = corners[3] = 0.0;
    if (y < -1.0 || y > (double)h || x < -1.0 || x > (double)w)
        return 0.0;
    y = y < 0 ? 0 : y;
    x = x < 0 ? 0 : x;
    int64_t y0 = (int64_t)y, x0 = (int64_t)x, y1, x1;
    if (y0 >= h - 1) {
        y0 = y1 = h - 1;
        y = (double)y0;
    } else {
        y1 = y0 + 1;
    }
    if (x0 >= w - 1) {
        x0 = x1 = w - 1;
        x = (double)x0;
    } else {
        x1 = x0 + 1;
    }
    double ly = y - (double)y0, lx = x - (double)x0, hy = 1.0 - ly, hx = 1.0 - lx;
    corners[0] = hy * hx * plane[y0 * w + x0];
    corners[1] = hy * lx * plane[y0 * w + x1];
    corners[2] = ly * hx * plane[y1 * w + x0];
    corners[3] = ly * lx * plane[y1 * w + x1];
    return corners[0] + corners[1] + corners[2] + corners[3];
}

static kiln_status roi_forward(const kn_op_call *call) {
    const kn_node *node = call->node;
    const kn_tensor *x = call->in[0], *rois = call->in[1], *idx = call->in[2];
    int64_t N = x->shape.d[0], C = x->shape.d[1], H = x->shape.d[2], W = x->shape.d[3];
    int64_t R = rois->shape.d[0], oh = call->out[0]->shape.d[2], ow = call->out[0]->shape.d[3];
    bool half_pixel = strcmp(kn_node_string(node, "coordinate_transformation_mode", "half_pixel"), "half_pixel") == 0;
    bool max_mode = strcmp(kn_node_string(node, "mode", "avg"), "max") == 0;
    double scale = kn_node_float(node, "spatial_scale", 1.0f), offset = half_pixel ? 0.5 : 0.0;
    int64_t ratio = kn_node_int(node, "sampling_ratio", 0);
    float *y = kn_f32(call->out[0]); /* (R, C, oh, ow) */
    for (int64_t r = 0; r < R; r++) {
        int64_t b = kn_int_load(idx->data, idx->dtype, r);
        if (b < 0 || b >= N)
            return kn_fail(KILN_ERR_INVALID_ARG, "batch_indices[%lld] is %lld; X has %lld", (long long)r,
                           (long long)b, (long long)N);
        const float *box = kn_f32(rois) + r * 4;
        double x0 = box[0] * scale - offset, y0 = box[1] * scale - offset;
        double rw = box[2] * scale - offset - x0, rh = box[3] * scale - offset - y0;
        if (!half_pixel) {
            rw = rw > 1.0 ? rw : 1.0;
            rh = rh > 1.0 ? rh : 1.0;
        }
        double bin_h = rh / (double)oh, bin_w = rw / (double)ow;
        double gh_d = ratio > 0 ? (double)ratio : ceil(rh / (double)oh);
        double gw_d = ratio > 0 ? (double)ratio : ceil(rw / (double)ow);
        if (!isfinite(gh_d) || !isfinite(gw_d) || gh_d > 1e6 || gw_d > 1e6)
            return kn_fail(KILN_ERR_INVALID_ARG, "roi %lld is not a finite box of usable size", (long long)r);
        int64_t gh = (int64_t)gh_d, gw = (int64_t)gw_d, count = gh * gw > 1 ? gh * gw : 1;
        for (int64_t c = 0; c < C; c++) {
            const float *plane = kn_f32(x) + (b * C + c) * H * W;
            for (int64_t ph = 0; ph < oh; ph++)
                for (int64_t pw = 0; pw < ow; pw++) {
                    double acc = 0.0, best = -INFINITY, corners[4];
                    for (int64_t iy = 0; iy < gh; iy++)
                        for (int64_t ix = 0; ix < gw; ix++) {
                            double sy = y0 + (double)ph * bin_h + ((double)iy + 0.5) * bin_h / (double)gh;
                            double sx = x0 + (double)pw * bin_w + ((double)ix + 0.5) * bin_w / (double)gw;
                            acc += roi_sample(plane, H, W, sy, sx, corners);
                            for (int k = 0; k < 4; k++)
                                best = corners[k] > best ? corners[k] : best;
                        }
                    double v = max_mode ? (gh > 0 && gw > 0 ? best : 0.0) : acc / (double)count;
                    y[((r * C + c) * oh + ph) * ow + pw] = (float)v;
                }
        }
    }
    return KILN_OK;
}

const kn_op kn_op_roialign = {.name = "RoiAlign", .min_inputs = 3, .max_inputs = 3, .infer = roi_infer,
                              .forward = roi_forward};
