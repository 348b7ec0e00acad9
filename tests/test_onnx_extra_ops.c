/* LpNormalization, LpPool, GlobalLpPool, GroupNormalization (per-group and per-channel scale),
 * CenterCropPad, Col2Im and AffineGrid (2-D and 3-D), which the Debian ONNX test data has no tests of:
 * tests/ref/make_onnx_extra_ops_fixture.py's opset-20 model (and an opset-21 one for GroupNormalization's
 * per-channel scale) through the public C API, each output's shape and values against numpy's
 * implementation of onnx's definition (within 1e-5 + 1e-5 |expected|).
 */
#include <math.h>
#include <stdio.h>

#include "check.h"
#include "kiln/kiln.h"
#include "kiln/train.h"
#include "support/fixture.h"

static const char *const models[] = {"extra_ops.onnx", "groupnorm21.onnx"};
enum { N_OUTPUTS = 11 }; /* over both models */

static void compare_output(kiln_session *s, const fixture_tensor *want) {
    int index = kiln_session_output_index(s, want->name), ndim = -1;
    int64_t dims[KILN_MAX_DIMS];
    CHECK_MSG(index >= 0, "output %s", want->name);
    if (index < 0)
        return;
    CHECK_OK(kiln_session_output_shape(s, index, &ndim, dims));
    bool same = ndim == want->shape.ndim;
    for (int d = 0; same && d < ndim; d++)
        same = dims[d] == want->shape.d[d];
    CHECK_MSG(same, "%s: rank %d (numpy's %d), dims differ", want->name, ndim, want->shape.ndim);
    const float *y = NULL;
    size_t bytes = 0;
    CHECK_OK(kiln_session_output(s, index, (const void **)&y, &bytes));
    int64_t n = kn_shape_numel(&want->shape);
    if (!same || !y || bytes != sizeof(float) * (size_t)n)
        return;
    int64_t worst = 0;
    double excess = 0;
    for (int64_t i = 0; i < n; i++) {
        double over = fabs((double)y[i] - want->data[i]) - (1e-5 + 1e-5 * fabs(want->data[i]));
        if (over > excess || isnan(y[i])) {
            excess = isnan(y[i]) ? INFINITY : over;
            worst = i;
        }
    }
    CHECK_MSG(excess <= 0, "%s element %lld: %.9g, numpy %.9g", want->name, (long long)worst, y[worst],
              want->data[worst]);
}

/* Runs tests/ref/data/<file> on the fixture's inputs; compares each of its outputs. Returns how many. */
static int run_model(const char *file, const fixture *fx) {
    char path[512];
    snprintf(path, sizeof path, "%s/tests/ref/data/%s", KILN_SOURCE_DIR, file);
    kiln_model *model = NULL;
    CHECK_OK(kiln_model_load_onnx(path, &model));
    kiln_session *s = NULL;
    if (model)
        CHECK_OK(kiln_session_create(model, NULL, &s));
    int compared = 0;
    for (int i = 0; s && i < kiln_session_input_count(s); i++) {
        const fixture_tensor *x = fixture_find(fx, kiln_session_input_name(s, i));
        CHECK_MSG(x != NULL, "%s: input %s in the fixture", file, kiln_session_input_name(s, i));
        if (x)
            CHECK_OK(kiln_session_set_input(s, i, KILN_DTYPE_F32, x->data,
                                            sizeof(float) * (size_t)kn_shape_numel(&x->shape)));
    }
    if (s && kiln_session_run(s) == KILN_OK) {
        for (int i = 0; i < kiln_session_output_count(s); i++) {
            const fixture_tensor *want = fixture_find(fx, kiln_session_output_name(s, i));
            CHECK_MSG(want != NULL, "%s: output %s in the fixture", file, kiln_session_output_name(s, i));
            if (want)
                compare_output(s, want);
            compared += want != NULL;
        }
    } else {
        CHECK_MSG(false, "%s runs: %s", file, kiln_last_error());
    }
    kiln_session_free(s);
    kiln_model_free(model);
    return compared;
}

int main(void) {
    fixture fx;
    CHECK(fixture_load("extra_ops.bin", &fx));
    int compared = 0;
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++)
        compared += run_model(models[i], &fx);
    CHECK_MSG(compared == N_OUTPUTS, "%d outputs compared, expected %d", compared, N_OUTPUTS);
    fixture_free(&fx);
    return check_finish();
}
