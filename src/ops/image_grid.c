/* Col2Im and AffineGrid: two ops that lay values out over an image of a size given as an input.
 *
 *     Col2Im(input (N, C * prod(block), L), image_shape, block_shape): the inverse of im2col, adding each
 *         column of L sliding blocks back onto the image (overlaps add): Y (N, C, image...). strides,
 *         dilations and pads as Conv's (no auto_pad); L must be the number of block positions.
 *     AffineGrid(theta (N, 2, 3) or (N, 3, 4), size (N, C, H, W) or (N, C, D, H, W)): the sampling grid
 *         of an affine map, (N, H, W, 2) or (N, D, H, W, 3): each pixel's normalised coordinates
 *         (x, y[, z]) in [-1, 1] (align_corners = 1: the corner pixels' centres; 0, the default: the
 *         corners' outer edges) mapped through theta, as GridSample reads them.
 *
 * image_shape, block_shape and size are i64 or i32 inputs read at shape inference: constants, or small
 * graph inputs, which make a data-dependent session (runtime/session.c). f32. No gradients.
 */
#include "core/status.h"
#include "ops/movement.h"
#include "ops/window.h"

/* ---- Col2Im ---- */

typedef struct col2im {
    int64_t N, C;
    kn_window_nd win; /* axes[i].in: the image, axes[i].out: block positions */
    kn_shape out;
} col2im;

static kiln_status col2im_of(const kn_node *node, const kn_tensor *x, const kn_tensor *image,
                             const kn_tensor *block, col2im *c) {
    if (x->dtype != KN_F32 || x->shape.ndim != 3)
        return kn_fail(KILN_ERR_SHAPE, "input must be f32 (N, C * prod(block_shape), L), got rank %d of %s",
                       x->shape.ndim, kn_dtype_name(x->dtype));
    int64_t dims[KN_WINDOW_MAX_RANK], kernel[KN_WINDOW_MAX_RANK];
    int n_dims, n_kernel;
    KN_TRY(kn_read_ints(image, "image_shape", dims, KN_WINDOW_MAX_RANK, &n_dims));
    KN_TRY(kn_read_ints(block, "block_shape", kernel, KN_WINDOW_MAX_RANK, &n_kernel));
    if (n_dims != n_kernel || n_dims < 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "image_shape and block_shape must give the same number of sizes");
    for (int i = 0; i < n_dims; i++)
        if (dims[i] < 1 || kernel[i] < 1)
            return kn_fail(KILN_ERR_SHAPE, "image and block sizes must be positive");
    c->win.rank = n_dims;
    KN_TRY(kn_window_resolve_nd(node, n_dims, dims, kernel, false, c->win.axes));
    kn_window_nd_sizes(&c->win);
    c->N = x->shape.d[0];
    if (c->win.taps < 1 || x->shape.d[1] % c->win.taps || x->shape.d[2] != c->win.out_size)
        return kn_fail(KILN_ERR_SHAPE, "input (%lld, %lld, %lld) must be (N, C * %lld, %lld): the blocks' "
                       "elements by their %lld positions", (long long)x->shape.d[0], (long long)x->shape.d[1],
                       (long long)x->shape.d[2], (long long)c->win.taps, (long long)c->win.out_size,
                       (long long)c->win.out_size);
    c->C = x->shape.d[1] / c->win.taps;
    c->out = kn_shape_of(2, (int64_t[]){c->N, c->C});
    for (int i = 0; i < n_dims; i++)
        c->out.d[c->out.ndim++] = dims[i];
    return KILN_OK;
}

static kiln_status col2im_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    if (inputs.n != 3 || !inputs.in[0] || !inputs.in[1] || !inputs.in[2])
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs input, image_shape and block_shape are required");
    col2im c;
    KN_TRY(col2im_of(node, inputs.in[0], inputs.in[1], inputs.in[2], &c));
    kn_set_output(g, node, 0, &c.out, KN_F32);
    return KILN_OK;
}

static kiln_status col2im_forward(const kn_op_call *call) {
    col2im c;
    KN_TRY(col2im_of(call->node, call->in[0], call->in[1], call->in[2], &c));
    const float *x = call->in[0]->data;
    float *y = call->out[0]->data;
    int64_t planes = c.N * c.C;
    for (int64_t i = 0; i < planes * c.win.in_size; i++)
        y[i] = 0;
    /* Plane p's column rows are p * taps .. p * taps + taps - 1, each of out_size block positions. */
    for (int64_t p = 0; p < planes; p++)
        for (int64_t o = 0; o < c.win.out_size; o++) {
            kn_window_walk walk;
            for (kn_window_walk_begin(&walk, &c.win, o); !walk.done; kn_window_walk_next(&walk))
                y[p * c.win.in_size + walk.at] += x[(p * c.win.taps + walk.tap) * c.win.out_size + o];
        }
    return KILN_OK;
}

const kn_op kn_op_col2im = {.name = "Col2Im", .min_inputs = 3, .max_inputs = 3, .infer = col2im_infer,
                            .forward = col2im_forward};

/* ---- AffineGrid ---- */

/* The spatial sizes (D,) H, W of `size`, checked against theta; *rank is 2 or 3. */
static kiln_status affinegrid_of(const kn_tensor *theta, const kn_tensor *size, int *rank, int64_t *dims,
                                 kn_shape *out) {
    int64_t s[5];
    int n;
    KN_TRY(kn_read_ints(size, "size", s, 5, &n));
    if (n != 4 && n != 5)
        return kn_fail(KILN_ERR_INVALID_ARG, "size must be (N, C, H, W) or (N, C, D, H, W), got %d values", n);
    *rank = n - 2;
    if (theta->dtype != KN_F32 || theta->shape.ndim != 3 || theta->shape.d[0] != s[0] ||
        theta->shape.d[1] != *rank || theta->shape.d[2] != *rank + 1)
        return kn_fail(KILN_ERR_SHAPE, "theta must be f32 (N, %d, %d) with N = %lld", *rank, *rank + 1,
                       (long long)s[0]);
    *out = kn_shape_of(1, s);
    for (int i = 0; i < *rank; i++) {
        if (s[2 + i] < 0)
            return kn_fail(KILN_ERR_SHAPE, "size %lld is negative", (long long)s[2 + i]);
        dims[i] = s[2 + i];
        out->d[out->ndim++] = s[2 + i];
    }
    out->d[out->ndim++] = *rank;
    return KILN_OK;
}

static kiln_status affinegrid_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    if (inputs.n != 2 || !inputs.in[0] || !inputs.in[1])
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs theta and size are required");
    int rank;
    int64_t dims[3];
    kn_shape out;
    KN_TRY(affinegrid_of(inputs.in[0], inputs.in[1], &rank, dims, &out));
    kn_set_output(g, node, 0, &out, KN_F32);
    return KILN_OK;
}

/* Normalised coordinate of pixel i of n along one axis. */
static double grid_coordinate(int64_t i, int64_t n, bool align_corners) {
    if (align_corners)
        return n > 1 ? -1.0 + 2.0 * (double)i / (double)(n - 1) : 0.0;
    return (2.0 * (double)i + 1.0) / (double)n - 1.0;
}

static kiln_status affinegrid_forward(const kn_op_call *call) {
    int rank;
    int64_t dims[3];
    kn_shape out;
    KN_TRY(affinegrid_of(call->in[0], call->in[1], &rank, dims, &out));
    bool align = kn_node_int(call->node, "align_corners", 0) != 0;
    const float *theta = call->in[0]->data;
    float *y = call->out[0]->data;
    int64_t pixels = 1;
    for (int i = 0; i < rank; i++)
        pixels *= dims[i];
    for (int64_t n = 0; n < out.d[0]; n++) {
        const float *t = theta + n * rank * (rank + 1);
        for (int64_t p = 0; p < pixels; p++) {
            /* Coordinates (x, y[, z]): x along the last axis (W), y along H, z along D. */
            double coord[4] = {0, 0, 0, 1.0};
            int64_t rest = p;
            for (int a = rank - 1; a >= 0; a--) {
                coord[rank - 1 - a] = grid_coordinate(rest % dims[a], dims[a], align);
                rest /= dims[a];
            }
            coord[rank] = 1.0;
            for (int r = 0; r < rank; r++) {
                double v = 0;
                for (int k = 0; k <= rank; k++)
                    v += (double)t[r * (rank + 1) + k] * coord[k];
                y[(n * pixels + p) * rank + r] = (float)v;
            }
        }
    }
    return KILN_OK;
}

const kn_op kn_op_affinegrid = {.name = "AffineGrid", .min_inputs = 2, .max_inputs = 2, .infer = affinegrid_infer,
                                .forward = affinegrid_forward};
