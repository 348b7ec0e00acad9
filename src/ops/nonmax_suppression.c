/* NonMaxSuppression(boxes, scores, max_output_boxes_per_class, iou_threshold, score_threshold):
 * per batch and class, greedy selection of boxes by decreasing score (equal scores: the lower box
 * index first), dropping each box whose intersection over union with a box already selected exceeds
 * iou_threshold, up to max_output_boxes_per_class boxes (absent or 0: none). With score_threshold,
 * only boxes scoring above it are candidates. The output lists the selections as rows
 * [batch, class, box] (i64), by batch, then class, then selection order: onnxruntime's order.
 *
 * boxes (B, N, 4) f32: [y1, x1, y2, x2] corners in either order (center_point_box = 0), or
 * [x_center, y_center, width, height] (center_point_box = 1); scores (B, C, N) f32; the three
 * thresholds one-element tensors. A box pair whose intersection or either area is not positive never
 * suppresses.
 *
 * The number of rows comes from the values: the op sizes its output when it runs (kn_op.sizes_at_run);
 * shape inference gives the bound B * C * N. No gradient.
 */
#include <math.h>
#include <stdlib.h>

#include "core/status.h"
#include "ops/movement.h"

typedef struct nms_candidate {
    float score;
    int64_t box;
} nms_candidate;

/* Higher score first, then the lower box index. */
static int by_score(const void *pa, const void *pb) {
    const nms_candidate *a = pa, *b = pb;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    return (a->box > b->box) - (a->box < b->box);
}

/* A box as its extent along each axis: lo <= hi. */
typedef struct nms_box {
    float y_lo, x_lo, y_hi, x_hi;
} nms_box;

static nms_box box_at(const float *b, bool center_point) {
    if (center_point)
        return (nms_box){b[1] - b[3] / 2, b[0] - b[2] / 2, b[1] + b[3] / 2, b[0] + b[2] / 2};
    return (nms_box){fminf(b[0], b[2]), fminf(b[1], b[3]), fmaxf(b[0], b[2]), fmaxf(b[1], b[3])};
}

/* Whether box a suppresses box b: their intersection over union is above the threshold. */
static bool suppresses(nms_box a, nms_box b, float iou_threshold) {
    float y_lo = fmaxf(a.y_lo, b.y_lo), x_lo = fmaxf(a.x_lo, b.x_lo);
    float y_hi = fminf(a.y_hi, b.y_hi), x_hi = fminf(a.x_hi, b.x_hi);
    float inter = fmaxf(0.0f, y_hi - y_lo) * fmaxf(0.0f, x_hi - x_lo);
    if (inter <= 0)
        return false;
    float area_a = (a.y_hi - a.y_lo) * (a.x_hi - a.x_lo), area_b = (b.y_hi - b.y_lo) * (b.x_hi - b.x_lo);
    float uni = area_a + area_b - inter;
    if (area_a <= 0 || area_b <= 0 || uni <= 0)
        return false;
    return inter / uni > iou_threshold;
}

static kiln_status nms_check(const kn_shape *boxes, const kn_shape *scores, kn_dtype boxes_dtype,
                             kn_dtype scores_dtype) {
    if (boxes_dtype != KN_F32 || scores_dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "boxes and scores must be f32, got %s and %s",
                       kn_dtype_name(boxes_dtype), kn_dtype_name(scores_dtype));
    if (boxes->ndim != 3 || boxes->d[2] != 4 || scores->ndim != 3 || scores->d[0] != boxes->d[0] ||
        scores->d[2] != boxes->d[1]) {
        char b[96], s[96];
        return kn_fail(KILN_ERR_SHAPE, "boxes %s and scores %s: expected (B, N, 4) and (B, C, N)",
                       kn_shape_str(boxes, b, sizeof b), kn_shape_str(scores, s, sizeof s));
    }
    return KILN_OK;
}

static kiln_status nms_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    const kn_value *boxes = kn_node_input(g, node, 0), *scores = kn_node_input(g, node, 1);
    if (!boxes || !scores)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs boxes and scores are required");
    KN_TRY(nms_check(&boxes->shape, &scores->shape, boxes->dtype, scores->dtype));
    /* At most every box of every class: the size check after inference refuses an absurd count. */
    int64_t rows = kn_count_mul(kn_count_mul(scores->shape.d[0], scores->shape.d[1]), scores->shape.d[2]);
    kn_shape y = kn_shape_of(2, (int64_t[]){rows, 3});
    kn_set_output(g, node, 0, &y, KN_I64);
    return KILN_OK;
}

/* Scratch: the candidates and the selected boxes of one class. */
static size_t nms_workspace(const kn_graph *g, const kn_node *node) {
    const kn_value *boxes = kn_node_input(g, node, 0);
    int64_t n = boxes && boxes->shape.ndim == 3 ? boxes->shape.d[1] : 0;
    return (sizeof(nms_candidate) + sizeof(nms_box)) * (size_t)(n ? n : 1);
}

/* Optional one-element input i: its value, or `absent`. */
static kiln_status scalar_input(const kn_op_call *call, int i, const char *what, double absent, double *value) {
    const kn_tensor *t = call->node->n_in > i ? call->in[i] : NULL;
    *value = absent;
    if (!t)
        return KILN_OK;
    if (kn_shape_numel(&t->shape) != 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s must hold one value", what);
    if (t->dtype == KN_F32)
        *value = ((const float *)t->data)[0];
    else if (t->dtype == KN_I64 || t->dtype == KN_I32)
        *value = (double)kn_int_at(t, 0);
    else
        return kn_fail(KILN_ERR_INVALID_ARG, "%s is %s", what, kn_dtype_name(t->dtype));
    return KILN_OK;
}

static kiln_status nms_forward(const kn_op_call *call) {
    const kn_tensor *boxes = call->in[0], *scores = call->in[1];
    KN_TRY(nms_check(&boxes->shape, &scores->shape, boxes->dtype, scores->dtype));
    double max_out, iou, score_min;
    KN_TRY(scalar_input(call, 2, "max_output_boxes_per_class", 0, &max_out));
    KN_TRY(scalar_input(call, 3, "iou_threshold", 0, &iou));
    KN_TRY(scalar_input(call, 4, "score_threshold", -INFINITY, &score_min));
    bool has_score_min = call->node->n_in > 4 && call->in[4];
    bool center_point = kn_node_int(call->node, "center_point_box", 0) != 0;
    int64_t n_batch = scores->shape.d[0], n_class = scores->shape.d[1], n = scores->shape.d[2];
    nms_candidate *cand = kn_op_scratch(call->ctx, (sizeof(nms_candidate) + sizeof(nms_box)) * (size_t)(n ? n : 1));
    if (!cand)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for NonMaxSuppression's scratch");
    nms_box *kept = (nms_box *)(cand + n);
    int64_t *out = call->out[0]->data, rows = 0;
    for (int64_t b = 0; b < n_batch; b++) {
        const float *bx = (const float *)boxes->data + b * n * 4;
        for (int64_t c = 0; c < n_class; c++) {
            const float *sc = (const float *)scores->data + (b * n_class + c) * n;
            int64_t n_cand = 0, n_kept = 0;
            for (int64_t i = 0; i < n; i++)
                if (!has_score_min || sc[i] > score_min)
                    cand[n_cand++] = (nms_candidate){sc[i], i};
            qsort(cand, (size_t)n_cand, sizeof *cand, by_score);
            for (int64_t k = 0; k < n_cand && n_kept < max_out; k++) {
                nms_box box = box_at(bx + cand[k].box * 4, center_point);
                bool dropped = false;
                for (int64_t s = 0; s < n_kept && !dropped; s++)
                    dropped = suppresses(kept[s], box, (float)iou);
                if (dropped)
                    continue;
                kept[n_kept++] = box;
                out[rows * 3] = b;
                out[rows * 3 + 1] = c;
                out[rows * 3 + 2] = cand[k].box;
                rows++;
            }
        }
    }
    call->out[0]->shape = kn_shape_of(2, (int64_t[]){rows, 3});
    return KILN_OK;
}

const kn_op kn_op_nonmaxsuppression = {.name = "NonMaxSuppression", .min_inputs = 2, .max_inputs = 5,
                                       .infer = nms_infer, .forward = nms_forward,
                                       .workspace = nms_workspace, .sizes_at_run = true};
