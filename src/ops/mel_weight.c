/* MelWeightMatrix (opset 17): the (dft_length / 2 + 1, num_mel_bins) matrix that maps a onesided
 * spectrum's bins to mel bands: triangles between num_mel_bins + 2 points spaced evenly on the mel scale
 * (mel = 2595 log10(1 + hz / 700)) from lower_edge_hertz to upper_edge_hertz, each point at spectrum bin
 * floor((dft_length + 1) hz / sample_rate), as onnx's reference builds it (its step divides the mel
 * range by num_mel_bins + 2). Inputs: num_mel_bins, dft_length, sample_rate (integers), lower and upper
 * edge (floats), all scalars read at shape inference (graph inputs make a data-dependent session).
 * Output dtype: attribute "dtype" (from ONNX's output_datatype), f32 (default) or f64. No gradient.
 */
#include <math.h>
#include <string.h>

#include "core/status.h"
#include "ops/elements.h"
#include "ops/movement.h"

typedef struct mel_params {
    int64_t mel_bins, dft_length, spectrum_bins;
    double sample_rate, lower_hz, upper_hz;
} mel_params;

/* Input i as one number (any integer or float dtype), which must be known. */
static kiln_status mel_number(kn_tensor *const *in, int n_in, int i, const char *what, double *v) {
    const kn_tensor *t = kn_input_at(in, n_in, i);
    if (!t || kn_numel(t) != 1 || t->shape.ndim > 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s must be one number", what);
    KN_TRY(kn_require_data(t, what));
    if (t->dtype == KN_F32)
        *v = kn_f32(t)[0];
    else if (t->dtype == KN_F64)
        *v = ((const double *)t->data)[0];
    else if (kn_dtype_is_integer(t->dtype) && t->dtype != KN_U64)
        *v = (double)kn_int_load(t->data, t->dtype, 0);
    else
        return kn_fail(KILN_ERR_INVALID_ARG, "%s is %s; a number is expected", what, kn_dtype_name(t->dtype));
    return KILN_OK;
}

static kiln_status mel_read(kn_tensor *const *in, int n_in, mel_params *p) {
    double bins = 0, length = 0;
    KN_TRY(mel_number(in, n_in, 0, "num_mel_bins", &bins));
    KN_TRY(mel_number(in, n_in, 1, "dft_length", &length));
    KN_TRY(mel_number(in, n_in, 2, "sample_rate", &p->sample_rate));
    KN_TRY(mel_number(in, n_in, 3, "lower_edge_hertz", &p->lower_hz));
    KN_TRY(mel_number(in, n_in, 4, "upper_edge_hertz", &p->upper_hz));
    if (!(bins >= 1 && bins < 0x1p31 && length >= 1 && length < 0x1p31 && p->sample_rate > 0 &&
          p->lower_hz >= 0 && p->upper_hz > p->lower_hz && isfinite(p->upper_hz)))
        return kn_fail(KILN_ERR_INVALID_ARG, "num_mel_bins %g, dft_length %g, sample_rate %g and edges %g to %g do "
                       "not make a mel matrix", bins, length, p->sample_rate, p->lower_hz, p->upper_hz);
    p->mel_bins = (int64_t)bins;
    p->dft_length = (int64_t)length;
    p->spectrum_bins = p->dft_length / 2 + 1;
    return KILN_OK;
}

static kiln_status mel_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    int64_t dtype = kn_node_int(node, "dtype", KN_F32);
    if (dtype != KN_F32 && dtype != KN_F64)
        return kn_fail(KILN_ERR_UNSUPPORTED, "output dtype code %lld; MelWeightMatrix is f32 or f64", (long long)dtype);
    mel_params p;
    KN_TRY(mel_read(inputs.in, inputs.n, &p));
    kn_shape y = kn_shape_of(2, (int64_t[]){p.spectrum_bins, p.mel_bins});
    KN_TRY(kn_shape_check_size(&y));
    kn_set_output(g, node, 0, &y, (kn_dtype)dtype);
    return KILN_OK;
}

static void mel_store(kn_tensor *y, int64_t at, double v) {
    if (y->dtype == KN_F32)
        kn_f32(y)[at] = (float)v;
    else
        ((double *)y->data)[at] = v;
}

static kiln_status mel_forward(const kn_op_call *call) {
    mel_params p;
    KN_TRY(mel_read(call->in, call->node->n_in, &p));
    kn_tensor *y = call->out[0]; /* (spectrum_bins, mel_bins) */
    int64_t M = p.mel_bins, S = p.spectrum_bins;
    if (y->shape.ndim != 2 || y->shape.d[0] != S || y->shape.d[1] != M)
        return kn_fail(KILN_ERR_SHAPE, "MelWeightMatrix: the output was not sized for these inputs");
    memset(y->data, 0, kn_dtype_size(y->dtype) * (size_t)(S * M));
    double low = 2595.0 * log10(1.0 + p.lower_hz / 700.0), high = 2595.0 * log10(1.0 + p.upper_hz / 700.0);
    double step = (high - low) / (double)(M + 2);
    int64_t *point = kn_op_scratch(call->ctx, sizeof(int64_t) * (size_t)(M + 2)); /* (M + 2) spectrum bins */
    if (!point)
        return kn_fail(KILN_ERR_NOMEM, "MelWeightMatrix: no memory for %lld points", (long long)M + 2);
    for (int64_t i = 0; i < M + 2; i++) {
        double hz = 700.0 * (pow(10.0, ((double)i * step + low) / 2595.0) - 1.0);
        point[i] = (int64_t)floor((double)(p.dft_length + 1) * hz / p.sample_rate);
    }
    for (int64_t i = 0; i < M; i++) {
        int64_t left = point[i], centre = point[i + 1], right = point[i + 2];
        if (centre == left && centre >= 0 && centre < S)
            mel_store(y, centre * M + i, 1.0);
        for (int64_t j = left; centre > left && j <= centre; j++)
            if (j >= 0 && j < S)
                mel_store(y, j * M + i, (double)(j - left) / (double)(centre - left));
        for (int64_t j = centre; right > centre && j < right; j++)
            if (j >= 0 && j < S)
                mel_store(y, j * M + i, (double)(right - j) / (double)(right - centre));
    }
    return KILN_OK;
}

static size_t mel_workspace(const kn_graph *g, const kn_node *node) {
    const kn_value *y = kn_node_output(g, node, 0);
    return y->shape.ndim == 2 ? sizeof(int64_t) * (size_t)(y->shape.d[1] + 2) : 0;
}

const kn_op kn_op_melweightmatrix = {.name = "MelWeightMatrix", .min_inputs = 5, .max_inputs = 5,
                                     .infer = mel_infer, .forward = mel_forward, .workspace = mel_workspace};
