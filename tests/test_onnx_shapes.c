/* ONNX models whose shapes are fixed, symbolic or computed at run time, run through the public C API
 * (kiln_model_load_onnx, then the same models converted to .kiln with kiln_graph_load/kiln_graph_save
 * and loaded with kiln_model_load_file) against PyTorch's outputs (tests/ref/make_onnx_shape_fixtures.py):
 *   - shape_fixed2: exported without dynamic axes at batch 2; the first dim stays 2 and cannot change;
 *   - shape_dynamic: dynamic batch and sequence, reshaped through Shape -> Gather -> Concat -> Reshape;
 *   - shape_input: a Reshape whose target is a graph input; the session plans again only for target
 *     values it has no cached plan for, and bad targets or dtypes get one clear error.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/status.h"
#include "kiln/kiln.h"
#include "kiln/train.h"
#include "runtime/runtime.h"
#include "support/fixture.h"

#define DATA KILN_SOURCE_DIR "/tests/ref/data/"
static const double TOLERANCE = 1e-5;

/* A failing call with `status` whose message names `part`. */
static void check_error(kiln_status got, kiln_status want, const char *part, const char *what) {
    CHECK_MSG(got == want, "%s gave %s, expected %s (%s)", what, kiln_status_name(got), kiln_status_name(want),
              kiln_last_error());
    CHECK_MSG(strstr(kiln_last_error(), part) != NULL, "%s: message '%s' lacks '%s'", what, kiln_last_error(),
              part);
    printf("  %s: %s\n", what, kiln_last_error());
}

/* Output 0 of the last run against `want`: the same shape, every value within TOLERANCE. */
static void check_output(kiln_session *s, const fixture_tensor *want, const char *label) {
    int ndim;
    int64_t dims[KILN_MAX_DIMS];
    const void *data;
    CHECK_OK(kiln_session_output_shape(s, 0, &ndim, dims));
    kn_shape got = kn_shape_of(ndim, dims);
    char a[96], b[96];
    kn_shape_str(&got, a, sizeof a);
    kn_shape_str(&want->shape, b, sizeof b);
    CHECK_MSG(kn_shape_equal(&got, &want->shape), "%s: output %s, expected %s", label, a, b);
    if (!kn_shape_equal(&got, &want->shape) || kiln_session_output(s, 0, &data, NULL) != KILN_OK)
        return;
    double diff = fixture_max_diff(data, want->data, kn_shape_numel(&want->shape));
    CHECK_MSG(diff <= TOLERANCE, "%s: max |kiln - torch| = %g", label, diff);
    printf("  %-36s output %s, max |kiln - torch| %.2g\n", label, a, diff);
}

static kiln_status set_f32(kiln_session *s, int index, const fixture_tensor *t) {
    KN_TRY(kiln_session_resize_input(s, index, t->shape.ndim, t->shape.d));
    return kiln_session_set_input(s, index, KILN_DTYPE_F32, t->data,
                                  sizeof(float) * (size_t)kn_shape_numel(&t->shape));
}

static void test_fixed(const kiln_model *model, const fixture *f, const char *label) {
    kiln_session *s;
    CHECK_OK(kiln_session_create(model, NULL, &s));
    if (!s)
        return;
    int ndim;
    int64_t dims[KILN_MAX_DIMS];
    CHECK_OK(kiln_session_input_shape(s, 0, &ndim, dims));
    CHECK_MSG(ndim == 3 && dims[0] == 2 && dims[1] == 3 && dims[2] == 4, "%s: the input starts at (%lld, ...), "
              "not the model's fixed (2, 3, 4)", label, (long long)dims[0]);
    check_error(kiln_session_resize_input(s, 0, 3, (int64_t[]){1, 3, 4}), KILN_ERR_SHAPE, "fixed at 2",
                "resizing a fixed batch of 2 to 1");
    CHECK_OK(set_f32(s, 0, fixture_find(f, "x")));
    CHECK_OK(kiln_session_run(s));
    check_output(s, fixture_find(f, "y"), label);
    kiln_session_free(s);
}

static void test_dynamic(const kiln_model *model, const fixture *f, const char *label) {
    kiln_session *s;
    CHECK_OK(kiln_session_create(model, NULL, &s));
    if (!s)
        return;
    static const char *const sets[][2] = {{"x_a", "y_a"}, {"x_b", "y_b"}, {"x_a", "y_a"}};
    for (int i = 0; i < 3; i++) {
        char what[96];
        snprintf(what, sizeof what, "%s %s", label, sets[i][0]);
        CHECK_OK(set_f32(s, 0, fixture_find(f, sets[i][0])));
        CHECK_OK(kiln_session_run(s));
        check_output(s, fixture_find(f, sets[i][1]), what);
    }
    int plans = kn_session_plan_count(s);
    CHECK_OK(kiln_session_run(s));
    CHECK_MSG(kn_session_plan_count(s) == plans, "%s: a second run at the same shapes planned again", label);
    kiln_session_free(s);
}

static kiln_status set_shape(kiln_session *s, int64_t a, int64_t b) {
    return kiln_session_set_input(s, 1, KILN_DTYPE_I64, (int64_t[]){a, b}, 2 * sizeof(int64_t));
}

static void test_shape_input(const kiln_model *model, const fixture *f, const char *label) {
    kiln_session *s;
    CHECK_OK(kiln_session_create(model, NULL, &s));
    if (!s)
        return;
    const fixture_tensor *data = fixture_find(f, "data");
    CHECK_OK(set_f32(s, 0, data));
    int ndim;
    int64_t dims[KILN_MAX_DIMS];
    check_error(kiln_session_output_shape(s, 0, &ndim, dims), KILN_ERR_INVALID_ARG, "'shape' decides shapes",
                "output shape before the shape input is set");
    CHECK_OK(set_shape(s, 3, 4));
    CHECK_OK(kiln_session_run(s));
    check_output(s, fixture_find(f, "y"), label);

    // The same values again: no new plan; other values: one new plan, then the first values again.
    int plans = kn_session_plan_count(s);
    CHECK_OK(set_shape(s, 3, 4));
    CHECK_OK(kiln_session_run(s));
    CHECK_MSG(kn_session_plan_count(s) == plans, "%s: the same target planned again", label);
    CHECK_OK(set_shape(s, 4, 3));
    CHECK_OK(kiln_session_run(s));
    CHECK_OK(kiln_session_output_shape(s, 0, &ndim, dims));
    CHECK_MSG(ndim == 2 && dims[0] == 4 && dims[1] == 3, "%s: target (4, 3) gave (%lld, %lld)", label,
              (long long)dims[0], (long long)dims[1]);
    CHECK_MSG(kn_session_plan_count(s) == plans + 1, "%s: a new target made %d plans, expected 1", label,
              kn_session_plan_count(s) - plans);

    // Alternating between the two targets: each has its plan in the session's cache, so nothing is
    // planned again, and each run gives its target's shape with numpy's values (a Reshape keeps the
    // row-major order, so (4, 3) holds y's values).
    fixture_tensor tall = *fixture_find(f, "y");
    tall.shape = kn_shape_of(2, (int64_t[]){4, 3});
    for (int i = 0; i < 6; i++) {
        bool wide = i % 2 == 0;
        char what[96];
        snprintf(what, sizeof what, "%s alternating, target %s", label, wide ? "(3, 4)" : "(4, 3)");
        CHECK_OK(set_shape(s, wide ? 3 : 4, wide ? 4 : 3));
        CHECK_OK(kiln_session_run(s));
        check_output(s, wide ? fixture_find(f, "y") : &tall, what);
    }
    CHECK_MSG(kn_session_plan_count(s) == plans + 1, "%s: alternating cached targets made %d new plans", label,
              kn_session_plan_count(s) - plans - 1);

    // Bad values: one clear error each, and the session still runs with good ones afterwards.
    CHECK_OK(set_shape(s, -5, 3));
    check_error(kiln_session_run(s), KILN_ERR_SHAPE, "Reshape", "target (-5, 3)");
    CHECK_OK(set_shape(s, (int64_t)1 << 40, (int64_t)1 << 40));
    kiln_status st = kiln_session_run(s);
    check_error(st, st == KILN_ERR_NOMEM ? KILN_ERR_NOMEM : KILN_ERR_SHAPE, "Reshape", "target (2^40, 2^40)");
    CHECK_OK(set_shape(s, 4, 6));
    check_error(kiln_session_run(s), KILN_ERR_SHAPE, "Reshape", "target (4, 6) for 12 elements");
    check_error(kiln_session_set_input(s, 1, KILN_DTYPE_I32, (int32_t[]){3, 4}, 2 * sizeof(int32_t)),
                KILN_ERR_INVALID_ARG, "i64", "an i32 target for an i64 input");
    check_error(kiln_session_set_input(s, 0, KILN_DTYPE_I64, (int64_t[12]){0}, 12 * sizeof(int64_t)),
                KILN_ERR_INVALID_ARG, "f32", "i64 data for an f32 input");
    CHECK_OK(set_shape(s, 3, 4));
    CHECK_OK(kiln_session_run(s));
    check_output(s, fixture_find(f, "y"), "shape_input after bad targets");
    kiln_session_free(s);
}

typedef void (*model_test)(const kiln_model *model, const fixture *f, const char *label);

/* The model as .onnx, then converted to .kiln through the public API. */
static void run_both(const char *name, model_test test) {
    fixture f;
    char path[512], bundle[64], kiln_path[512], label[96];
    snprintf(bundle, sizeof bundle, "%s.bin", name);
    if (!fixture_load(bundle, &f)) {
        CHECK_MSG(false, "%s: fixture missing", name);
        return;
    }
    snprintf(path, sizeof path, DATA "%s.onnx", name);
    kiln_model *model;
    kiln_status st = kiln_model_load_onnx(path, &model);
    CHECK_MSG(st == KILN_OK, "%s: %s", path, kiln_last_error());
    if (st == KILN_OK) {
        snprintf(label, sizeof label, "%s.onnx", name);
        test(model, &f, label);
        kiln_model_free(model);
    }
    kiln_graph *graph;
    snprintf(kiln_path, sizeof kiln_path, "test_onnx_shapes_%s_%d.kiln", name, (int)getpid());
    st = kiln_graph_load(path, 1, &graph);
    if (st == KILN_OK) {
        st = kiln_graph_save(graph, kiln_path);
        kiln_graph_free(graph);
    }
    if (st == KILN_OK)
        st = kiln_model_load_file(kiln_path, &model);
    CHECK_MSG(st == KILN_OK, "%s converted to .kiln: %s", name, kiln_last_error());
    if (st == KILN_OK) {
        snprintf(label, sizeof label, "%s.kiln", name);
        test(model, &f, label);
        kiln_model_free(model);
    }
    remove(kiln_path);
    fixture_free(&f);
}

int main(void) {
    run_both("shape_fixed2", test_fixed);
    run_both("shape_dynamic", test_dynamic);
    run_both("shape_input", test_shape_input);
    return check_finish();
}
