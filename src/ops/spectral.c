/* The Fourier transforms of ONNX's signal ops (opset 17), on real tensors whose last dim holds a value's
 * real part (1) or its real and imaginary parts (2):
 *
 *   DFT(input, dft_length?)   input (..., n, 1|2) -> (..., m, 2) along `axis` (default 1, not the last):
 *                             X[k] = sum_j x[j] e^(-2 pi i j k / L), L = dft_length (x zero-padded or
 *                             cut to it) or n; inverse = 1: e^(+...) / L; onesided = 1 keeps k <= L / 2.
 *   STFT(signal, frame_step, window?, frame_length?)
 *                             signal (B, len, 1|2) -> (B, frames, bins, 2): the DFT of each frame of
 *                             frame_length samples (the window's length when it is given) taken every
 *                             frame_step, times the window; frames = (len - frame_length) / frame_step + 1;
 *                             onesided = 1 (the default) keeps frame_length / 2 + 1 bins.
 *
 * dft_length, frame_step and frame_length are read at shape inference (graph inputs make a data-dependent
 * session, runtime/session.c). Direct sums in double, rounded once to f32. No gradient.
 */
#include <math.h>
#include <string.h>

#include "core/status.h"
#include "ops/movement.h"

static const double kn_two_pi = 6.28318530717958647692;

/* One scalar integer input, or `fallback` when it is omitted. */
static kiln_status spectral_int(const kn_tensor *t, const char *what, int64_t fallback, int64_t *v) {
    if (!t) {
        *v = fallback;
        return KILN_OK;
    }
    int64_t got[1];
    int n;
    KN_TRY(kn_read_ints(t, what, got, 1, &n));
    if (n != 1 || got[0] < 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s must be one value >= 1", what);
    *v = got[0];
    return KILN_OK;
}

/* y[k] (k < m) = the transform of length L of x[j] (j < n, complex when x_complex), x read at
 * x + j * x_step (each element 1 or 2 floats), window w (or NULL), y written as (re, im) pairs. */
static void spectral_transform(const float *x, int64_t n, int64_t x_step, bool x_complex, const float *w,
                               int64_t L, int64_t m, bool inverse, float *y) {
    for (int64_t k = 0; k < m; k++) {
        double re = 0.0, im = 0.0;
        for (int64_t j = 0; j < n && j < L; j++) {
            double a = x[j * x_step], b = x_complex ? x[j * x_step + 1] : 0.0, s = w ? w[j] : 1.0;
            uint64_t turn = (uint64_t)j * (uint64_t)k % (uint64_t)L; /* j k mod L: the angle kept small */
            double angle = (inverse ? kn_two_pi : -kn_two_pi) * (double)turn / (double)L;
            double c = cos(angle), sn = sin(angle);
            re += s * (a * c - b * sn);
            im += s * (a * sn + b * c);
        }
        y[2 * k] = (float)(inverse ? re / (double)L : re);
        y[2 * k + 1] = (float)(inverse ? im / (double)L : im);
    }
}

/* ---- DFT ---- */

static kiln_status dft_params(const kn_node *node, const kn_shape *x, const kn_tensor *len_in, int *axis, int64_t *L,
                              int64_t *m) {
    int r = x->ndim;
    if (r < 2 || (x->d[r - 1] != 1 && x->d[r - 1] != 2))
        return kn_fail(KILN_ERR_SHAPE, "input must end in a dim of 1 (real) or 2 (complex), got rank %d", r);
    int64_t a = kn_node_int(node, "axis", 1);
    *axis = kn_axis_normalize(a, r);
    if (*axis < 0 || *axis == r - 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "axis %lld must name a signal dim, not the last", (long long)a);
    KN_TRY(spectral_int(len_in, "dft_length", x->d[*axis], L));
    if (*L < 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "the signal along axis %d is empty", *axis);
    bool onesided = kn_node_int(node, "onesided", 0) != 0;
    if (onesided && kn_node_int(node, "inverse", 0) != 0)
        return kn_fail(KILN_ERR_UNSUPPORTED, "an inverse onesided DFT is not supported");
    *m = onesided ? *L / 2 + 1 : *L;
    return KILN_OK;
}

static kiln_status dft_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    const kn_tensor *x = kn_input_at(inputs.in, inputs.n, 0);
    if (!x || x->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "input must be f32");
    int axis;
    int64_t L, m;
    KN_TRY(dft_params(node, &x->shape, kn_input_at(inputs.in, inputs.n, 1), &axis, &L, &m));
    kn_shape y = x->shape;
    y.d[axis] = m;
    y.d[y.ndim - 1] = 2;
    KN_TRY(kn_shape_check_size(&y));
    kn_set_output(g, node, 0, &y, KN_F32);
    return KILN_OK;
}

static kiln_status dft_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0];
    int axis;
    int64_t L, m;
    KN_TRY(dft_params(call->node, &x->shape, kn_input_at(call->in, call->node->n_in, 1), &axis, &L, &m));
    int r = x->shape.ndim;
    int64_t c = x->shape.d[r - 1], n = x->shape.d[axis];
    int64_t outer = kn_shape_span(&x->shape, 0, axis), inner = kn_shape_span(&x->shape, axis + 1, r - 1);
    bool inverse = kn_node_int(call->node, "inverse", 0) != 0;
    float *y = kn_f32(call->out[0]); /* (outer, m, inner, 2) */
    float *row = kn_op_scratch(call->ctx, sizeof(float) * 2 * (size_t)m); /* (m, 2) */
    if (!row)
        return kn_fail(KILN_ERR_NOMEM, "DFT: no memory for %lld bins", (long long)m);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const float *xs = kn_f32(x) + ((o * n) * inner + i) * c;
            spectral_transform(xs, n, inner * c, c == 2, NULL, L, m, inverse, row);
            for (int64_t k = 0; k < m; k++)
                memcpy(y + ((o * m + k) * inner + i) * 2, row + 2 * k, 2 * sizeof(float));
        }
    return KILN_OK;
}

static size_t dft_workspace(const kn_graph *g, const kn_node *node) {
    const kn_value *y = kn_node_output(g, node, 0);
    int axis = kn_axis_normalize(kn_node_int(node, "axis", 1), y->shape.ndim);
    return axis >= 0 ? sizeof(float) * 2 * (size_t)y->shape.d[axis] : 0;
}

/* ---- STFT ---- */

static kiln_status stft_params(const kn_node *node, kn_tensor *const *in, int n_in, int64_t *step, int64_t *fl,
                               int64_t *frames, int64_t *bins) {
    const kn_tensor *x = in[0], *window = kn_input_at(in, n_in, 2);
    if (x->shape.ndim != 3 || (x->shape.d[2] != 1 && x->shape.d[2] != 2))
        return kn_fail(KILN_ERR_SHAPE, "signal must be (batch, length, 1 or 2)");
    KN_TRY(spectral_int(kn_input_at(in, n_in, 1), "frame_step", 0, step));
    if (*step < 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "frame_step is required");
    if (window && (window->shape.ndim != 1 || window->dtype != KN_F32))
        return kn_fail(KILN_ERR_SHAPE, "window must be 1-D f32");
    KN_TRY(spectral_int(kn_input_at(in, n_in, 3), "frame_length", window ? window->shape.d[0] : 0, fl));
    if (*fl < 1 || (window && window->shape.d[0] != *fl) || *fl > x->shape.d[1])
        return kn_fail(KILN_ERR_INVALID_ARG, "frame_length %lld must match the window and fit the signal's %lld",
                       (long long)*fl, (long long)x->shape.d[1]);
    *frames = (x->shape.d[1] - *fl) / *step + 1;
    *bins = kn_node_int(node, "onesided", 1) != 0 ? *fl / 2 + 1 : *fl;
    return KILN_OK;
}

static kiln_status stft_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    if (!inputs.in[0] || inputs.in[0]->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "signal must be f32");
    int64_t step, fl, frames, bins;
    KN_TRY(stft_params(node, inputs.in, inputs.n, &step, &fl, &frames, &bins));
    kn_shape y = kn_shape_of(4, (int64_t[]){inputs.in[0]->shape.d[0], frames, bins, 2});
    KN_TRY(kn_shape_check_size(&y));
    kn_set_output(g, node, 0, &y, KN_F32);
    return KILN_OK;
}

static kiln_status stft_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0], *window = kn_input_at(call->in, call->node->n_in, 2);
    int64_t step, fl, frames, bins;
    KN_TRY(stft_params(call->node, call->in, call->node->n_in, &step, &fl, &frames, &bins));
    int64_t batch = x->shape.d[0], len = x->shape.d[1], c = x->shape.d[2];
    float *y = kn_f32(call->out[0]); /* (batch, frames, bins, 2) */
    for (int64_t b = 0; b < batch; b++)
        for (int64_t f = 0; f < frames; f++)
            spectral_transform(kn_f32(x) + (b * len + f * step) * c, fl, c, c == 2, window ? kn_f32(window) : NULL, fl,
                               bins, false, y + (b * frames + f) * bins * 2);
    return KILN_OK;
}

const kn_op kn_op_dft = {.name = "DFT", .min_inputs = 1, .max_inputs = 2, .infer = dft_infer,
                         .forward = dft_forward, .workspace = dft_workspace};
const kn_op kn_op_stft = {.name = "STFT", .min_inputs = 2, .max_inputs = 4, .infer = stft_infer,
                          .forward = stft_forward};
