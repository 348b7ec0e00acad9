/* Ops whose output shape comes from their input values (NonZero, Unique, Compress with a condition
 * computed in the run: kn_op.sizes_at_run), with ops after them shaped and planned from what they gave:
 * tests/ref/make_onnx_dynamic_fixture.py's graph through the public C API, one session run on five
 * inputs in turn (batch 4 three times with different counts, one with none, batch 6), every output's
 * shape and values against numpy's. The same for shapes that follow values computed in the run (Range,
 * ConstantOfShape and TopK sized by a reduction of x: session stages; run_values.onnx from the same
 * script). The same input twice in a row plans nothing new, nor do inputs alternating between two batches
 * once each has run (the session's plan cache). The training tape,
 * which binds shapes before it runs, refuses the graph with a message when the run gives other shapes.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "kiln/kiln.h"
#include "kiln/train.h"
#include "format/onnx/onnx_import.h"
#include "runtime/runtime.h"
#include "train/tape.h"
#include "support/fixture.h"

/* A model, its fixture and its outputs (each fixture holds inputs x<i> and outputs <name><i>). */
typedef struct dyn_model {
    const char *onnx, *fixture;
    const char *outputs[8];
    int n_outputs;
} dyn_model;

static const dyn_model sized_at_run = {"dynamic_shapes.onnx", "dynamic_shapes.bin",
                                       {"doubled", "total", "count", "rows", "row_counts", "kept_mean"}, 6};
static const dyn_model run_values = {"run_values.onnx", "run_values.bin", {"ramp", "ones", "tri", "top"}, 4};
enum { N_CASES = 5 };

/* Sets x to case i's input (resizing the session to its batch) and runs. */
static void run_case(kiln_session *s, const fixture_tensor *x) {
    CHECK_OK(kiln_session_resize_input(s, 0, 2, x->shape.d));
    size_t bytes = sizeof(float) * (size_t)(x->shape.d[0] * x->shape.d[1]);
    CHECK_OK(kiln_session_set_input(s, 0, KILN_DTYPE_F32, x->data, bytes));
    CHECK_OK(kiln_session_run(s));
}

/* Every output of the last run against case i's expected one: shape, then values within 1e-5. */
static void compare_case(kiln_session *s, const dyn_model *m, const fixture *fx, int i) {
    for (int k = 0; k < m->n_outputs; k++) {
        const char *output = m->outputs[k];
        char name[64];
        snprintf(name, sizeof name, "%s%d", output, i);
        const fixture_tensor *want = fixture_find(fx, name);
        int index = kiln_session_output_index(s, output);
        CHECK_MSG(want && index >= 0, "case %d output %s", i, output);
        if (!want || index < 0)
            continue;
        int ndim = -1;
        int64_t dims[KILN_MAX_DIMS];
        CHECK_OK(kiln_session_output_shape(s, index, &ndim, dims));
        bool same_shape = ndim == want->shape.ndim;
        for (int d = 0; same_shape && d < ndim; d++)
            same_shape = dims[d] == want->shape.d[d];
        CHECK_MSG(same_shape, "case %d %s: rank %d, first dim %lld; numpy's rank %d, %lld", i, output, ndim,
                  (long long)(ndim > 0 ? dims[0] : -1), want->shape.ndim,
                  (long long)(want->shape.ndim > 0 ? want->shape.d[0] : -1));
        const void *data = NULL;
        size_t bytes = 0;
        CHECK_OK(kiln_session_output(s, index, &data, &bytes));
        int64_t n = kn_shape_numel(&want->shape);
        CHECK_MSG(bytes == sizeof(float) * (size_t)n, "case %d %s: %zu bytes for %lld elements", i, output,
                  bytes, (long long)n);
        if (!same_shape || bytes != sizeof(float) * (size_t)n)
            continue;
        double diff = fixture_max_diff(data, want->data, n);
        CHECK_MSG(diff <= 1e-5, "case %d %s: max difference %g", i, output, diff);
    }
}

static const fixture_tensor *case_input(const fixture *fx, int i) {
    char name[16];
    snprintf(name, sizeof name, "x%d", i);
    return fixture_find(fx, name);
}

/* Alternating between the last case and the latest one of another batch: each batch has its plan in
 * the session's cache, as its last run left it, so after one round of both nothing is planned again
 * and every run still gives numpy's outputs. */
static void alternate_cases(kiln_session *s, const dyn_model *m, const fixture *fx) {
    int last = N_CASES - 1, other = last - 1;
    while (other >= 0 && case_input(fx, other)->shape.d[0] == case_input(fx, last)->shape.d[0])
        other--;
    CHECK_MSG(other >= 0, "%s: no two cases of different batches", m->onnx);
    if (other < 0)
        return;
    int plans = 0;
    for (int round = 0; round < 4; round++) {
        if (round == 1)
            plans = kn_session_plan_count(s);
        for (int k = 0; k < 2; k++) {
            int i = k ? last : other;
            run_case(s, case_input(fx, i));
            compare_case(s, m, fx, i);
        }
    }
    CHECK_MSG(kn_session_plan_count(s) == plans, "%s: alternating cases %d and %d made %d new plans", m->onnx,
              other, last, kn_session_plan_count(s) - plans);
}

/* A session of tests/ref/data/<onnx>, through the public API; NULL (and *model NULL) when either fails. */
static kiln_session *fixture_session(const char *onnx, kiln_model **model) {
    char path[512];
    snprintf(path, sizeof path, "%s/tests/ref/data/%s", KILN_SOURCE_DIR, onnx);
    *model = NULL;
    CHECK_OK(kiln_model_load_onnx(path, model));
    kiln_session *s = NULL;
    if (*model)
        CHECK_OK(kiln_session_create(*model, NULL, &s));
    if (!s) {
        kiln_model_free(*model);
        *model = NULL;
    }
    return s;
}

static void test_runs_follow_the_values(const dyn_model *m) {
    fixture fx;
    CHECK(fixture_load(m->fixture, &fx));
    kiln_model *model;
    kiln_session *s = fixture_session(m->onnx, &model);
    for (int i = 0; s && i < N_CASES; i++) {
        char name[16];
        snprintf(name, sizeof name, "x%d", i);
        const fixture_tensor *x = fixture_find(&fx, name);
        CHECK_MSG(x && x->shape.ndim == 2, "input %s", name);
        if (!x)
            continue;
        run_case(s, x);
        compare_case(s, m, &fx, i);
        /* The same input again: the shapes are the ones planned for, so the run plans nothing. */
        int plans = kn_session_plan_count(s);
        const void *arena = kn_session_arena(s);
        run_case(s, x);
        CHECK_MSG(kn_session_plan_count(s) == plans && kn_session_arena(s) == arena,
                  "%s case %d run again: %d plans, then %d", m->onnx, i, plans, kn_session_plan_count(s));
        compare_case(s, m, &fx, i);
    }
    if (s)
        alternate_cases(s, m, &fx);
    kiln_session_free(s);
    kiln_model_free(model);
    fixture_free(&fx);
}

/* A session made before any run reports the bound of a value-sized output, and the actual shape after. */
static void test_output_shape_before_and_after(void) {
    kiln_model *model;
    kiln_session *s = fixture_session("dynamic_shapes.onnx", &model);
    if (!s)
        return;
    int64_t dims[2] = {2, 5};
    CHECK_OK(kiln_session_resize_input(s, 0, 2, dims));
    int index = kiln_session_output_index(s, "doubled"), ndim = 0;
    int64_t shape[KILN_MAX_DIMS];
    CHECK_OK(kiln_session_output_shape(s, index, &ndim, shape));
    CHECK_MSG(ndim == 1 && shape[0] == 10, "before a run: rank %d, %lld (the bound: all 10 elements)", ndim,
              (long long)shape[0]);
    float x[10] = {0.9f, 0, 0, 0, 0, 0, 0, 0.7f, 0, 0};
    CHECK_OK(kiln_session_set_input(s, 0, KILN_DTYPE_F32, x, sizeof x));
    CHECK_OK(kiln_session_run(s));
    CHECK_OK(kiln_session_output_shape(s, index, &ndim, shape));
    CHECK_MSG(ndim == 1 && shape[0] == 2, "after the run: rank %d, %lld", ndim, (long long)shape[0]);
    const float *y = NULL;
    size_t bytes = 0;
    CHECK_OK(kiln_session_output(s, index, (const void **)&y, &bytes));
    CHECK(bytes == 2 * sizeof(float) && y && fabsf(y[0] - 1.8f) < 1e-6f && fabsf(y[1] - 1.4f) < 1e-6f);
    /* The input is still there for a second run after the plan changed under it. */
    CHECK_OK(kiln_session_run(s));
    CHECK_OK(kiln_session_output(s, index, (const void **)&y, &bytes));
    CHECK(bytes == 2 * sizeof(float) && y && fabsf(y[0] - 1.8f) < 1e-6f);
    kiln_session_free(s);
    kiln_model_free(model);
}

/* The tape (training, calibration) runs the graph at the bounds: NonZero gives fewer elements, which it
 * refuses with an error naming the node, instead of reading past what the op wrote. */
static void test_tape_refuses_run_shapes(void) {
    kn_graph g;
    kn_graph_init(&g);
    CHECK_OK(kn_onnx_import_file(KILN_SOURCE_DIR "/tests/ref/data/dynamic_shapes.onnx", &g));
    kn_shape shape = kn_shape_of(2, (int64_t[]){2, 5});
    kn_tape t;
    CHECK_OK(kn_tape_init_shapes(&t, &g, &shape, false));
    float *x = t.values[g.inputs[0]].data;
    for (int i = 0; x && i < 10; i++)
        x[i] = i == 3 ? 0.9f : 0.1f;
    kiln_status st = kn_tape_forward(&t, false);
    CHECK_MSG(st == KILN_ERR_UNSUPPORTED && strstr(kiln_last_error(), "NonZero") &&
                  strstr(kiln_last_error(), "(2, 1)"),
              "status %d: %s", (int)st, kiln_last_error());
    kn_tape_free(&t);
    kn_graph_free(&g);
}

/* Before a run, an output sized by values the run computes has no shape yet: asking is an error that
 * says so; after the run it is known. */
static void test_run_values_known_after_run(void) {
    kiln_model *model;
    kiln_session *s = fixture_session("run_values.onnx", &model);
    if (!s)
        return;
    int64_t dims[2] = {1, 4};
    CHECK_OK(kiln_session_resize_input(s, 0, 2, dims));
    int index = kiln_session_output_index(s, "ramp"), ndim = 0;
    int64_t shape[KILN_MAX_DIMS];
    kiln_status st = kiln_session_output_shape(s, index, &ndim, shape);
    CHECK_MSG(st == KILN_ERR_INVALID_ARG && strstr(kiln_last_error(), "known after kiln_session_run"), "%s",
              kiln_last_error());
    float x[4] = {2.5f, 0.1f, 0.2f, 0.3f};
    CHECK_OK(kiln_session_set_input(s, 0, KILN_DTYPE_F32, x, sizeof x));
    CHECK_OK(kiln_session_run(s));
    CHECK_OK(kiln_session_output_shape(s, index, &ndim, shape));
    CHECK_MSG(ndim == 1 && shape[0] == 2, "ramp after the run: rank %d, %lld", ndim, (long long)shape[0]);
    kiln_session_free(s);
    kiln_model_free(model);
}

int main(void) {
    test_runs_follow_the_values(&sized_at_run);
    test_runs_follow_the_values(&run_values);
    test_run_values_known_after_run();
    test_output_shape_before_and_after();
    test_tape_refuses_run_shapes();
    return check_finish();
}
