/* The hand-written opset-18 model (tests/ref/make_opset18_model.py: ReduceX axes inputs, Split num_outputs,
 * Pad axes, Resize axes + keep_aspect_ratio_policy) through the public C API, at batch 2 and batch 1: every
 * output within 1e-5 of onnxruntime 1.30's (tests/ref/data/opset18_ort.bin). tests/cli_onnx_opset18.sh runs it
 * through kiln run, info and convert (.kiln).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "kiln/kiln.h"
#include "kiln/train.h"
#include "support/fixture.h"

static const char *const outputs[] = {"mean_h", "resized", "max_c", "lse_w"};

/* Runs the model on the first `batch` samples of x and compares each output with the same samples of
 * onnxruntime's. */
static void run_and_compare(const kiln_model *model, const fixture *fx, int64_t batch) {
    const fixture_tensor *x = fixture_find(fx, "x");
    kiln_session *session = NULL;
    CHECK_OK(kiln_session_create(model, NULL, &session));
    if (!session || !x)
        return;
    int64_t dims[4] = {batch, x->shape.d[1], x->shape.d[2], x->shape.d[3]};
    CHECK_OK(kiln_session_resize_input(session, 0, 4, dims));
    size_t sample = (size_t)(x->shape.d[1] * x->shape.d[2] * x->shape.d[3]);
    CHECK_OK(kiln_session_set_input(session, 0, KILN_DTYPE_F32, x->data, sizeof(float) * sample * (size_t)batch));
    CHECK_OK(kiln_session_run(session));
    for (size_t i = 0; i < sizeof outputs / sizeof outputs[0]; i++) {
        const fixture_tensor *want = fixture_find(fx, outputs[i]);
        int index = kiln_session_output_index(session, outputs[i]);
        CHECK_MSG(want && index >= 0, "output %s", outputs[i]);
        if (!want || index < 0)
            continue;
        int ndim = 0;
        int64_t shape[8];
        CHECK_OK(kiln_session_output_shape(session, index, &ndim, shape));
        CHECK_MSG(ndim == want->shape.ndim && shape[0] == batch, "%s: rank %d, batch %lld", outputs[i], ndim,
                  (long long)shape[0]);
        int64_t n = batch;
        for (int k = 1; k < ndim && k < want->shape.ndim; k++) {
            CHECK_MSG(shape[k] == want->shape.d[k], "%s dim %d: %lld vs %lld", outputs[i], k,
                      (long long)shape[k], (long long)want->shape.d[k]);
            n *= want->shape.d[k];
        }
        const void *data = NULL;
        size_t bytes = 0;
        CHECK_OK(kiln_session_output(session, index, &data, &bytes));
        CHECK_MSG(bytes == sizeof(float) * (size_t)n, "%s: %zu bytes", outputs[i], bytes);
        if (data && bytes == sizeof(float) * (size_t)n) {
            double diff = fixture_max_diff(data, want->data, n);
            CHECK_MSG(diff <= 1e-5, "%s at batch %lld: max |kiln - onnxruntime| = %g", outputs[i],
                      (long long)batch, diff);
        }
    }
    kiln_session_free(session);
}

int main(void) {
    fixture fx = {0};
    CHECK(fixture_load("opset18_ort.bin", &fx));
    /* An .onnx file reaches the runtime as a kiln_graph turned into a model (include/kiln/train.h). */
    kiln_graph *graph = NULL;
    kiln_model *model = NULL;
    CHECK_OK(kiln_graph_load(KILN_SOURCE_DIR "/tests/ref/data/opset18.onnx", 1, &graph));
    if (graph)
        CHECK_OK(kiln_graph_to_model(graph, &model));
    kiln_graph_free(graph);
    if (model && fx.count) {
        run_and_compare(model, &fx, 2);
        run_and_compare(model, &fx, 1);
    }
    kiln_model_free(model);
    fixture_free(&fx);
    return check_finish();
}
