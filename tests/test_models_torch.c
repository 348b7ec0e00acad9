/* Forward and backward of whole models (an MLP, a CNN with BatchNorm and a residual block, a small
 * vision transformer, a CNN with a 16 -> 24 channel 3x3 layer that trains by Winograd) against PyTorch, from fixtures made by tests/ref/make_model_fixtures.py: the
 * spec is parsed by kiln, its parameters replaced by PyTorch's, and logits, loss, every parameter
 * gradient and the BatchNorm running statistics compared. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "support/fixture.h"
#include "train/loss.h"
#include "train/spec.h"
#include "train/tape.h"

/* Differences are relative to the largest magnitude of the reference tensor. */
static const double tolerance = 2e-5;

static void check_close(const char *model, const char *what, const float *got, const fixture_tensor *want) {
    int64_t n = kn_shape_numel(&want->shape);
    double diff = fixture_max_diff(got, want->data, n);
    double scale = fixture_max_abs(want->data, n);
    printf("  %-4s %-36s max |kiln - torch| = %.3g (scale %.3g)\n", model, what, diff, scale);
    CHECK_MSG(diff <= tolerance * (scale > 1 ? scale : 1), "%s %s differs by %g", model, what, diff);
}

static void run_model(const char *name) {
    char file[64];
    snprintf(file, sizeof file, "model_%s.bin", name);
    fixture f;
    if (!fixture_load(file, &f)) {
        CHECK(false);
        return;
    }
    const fixture_tensor *spec_chars = fixture_find(&f, "spec"), *input = fixture_find(&f, "input"),
                         *labels_f = fixture_find(&f, "labels"), *logits = fixture_find(&f, "logits"),
                         *loss_want = fixture_find(&f, "loss");
    CHECK(spec_chars && input && labels_f && logits && loss_want);
    if (!spec_chars || !input || !labels_f || !logits || !loss_want) {
        fixture_free(&f);
        return;
    }
    int64_t spec_len = kn_shape_numel(&spec_chars->shape);
    char *spec = calloc((size_t)spec_len + 1, 1);
    for (int64_t i = 0; i < spec_len; i++)
        spec[i] = (char)spec_chars->data[i];

    kn_graph g;
    CHECK_OK(kn_spec_parse(spec, name, 7, &g));
    int params_matched = 0;
    for (int v = 0; v < g.n_values; v++) {
        kn_value *val = &g.values[v];
        if (val->kind != KN_VALUE_PARAM)
            continue;
        char key[160];
        snprintf(key, sizeof key, "param:%s", val->name);
        const fixture_tensor *p = fixture_find(&f, key);
        CHECK_MSG(p && kn_shape_numel(&p->shape) == kn_shape_numel(&val->shape), "parameter %s missing or misshapen",
                  val->name);
        if (p && kn_shape_numel(&p->shape) == kn_shape_numel(&val->shape)) {
            memcpy(val->data, p->data, sizeof(float) * (size_t)kn_shape_numel(&val->shape));
            params_matched++;
        }
    }
    int params_in_fixture = 0;
    for (int i = 0; i < f.count; i++)
        params_in_fixture += strncmp(f.items[i].name, "param:", 6) == 0;
    CHECK_MSG(params_matched == params_in_fixture, "%d of %d torch parameters matched", params_matched,
              params_in_fixture);

    int64_t batch = input->shape.d[0];
    kn_tape t;
    CHECK_OK(kn_tape_init(&t, &g, batch, true));
    memcpy(kn_tape_input(&t, 0)->data, input->data, sizeof(float) * (size_t)kn_shape_numel(&input->shape));
    CHECK_OK(kn_tape_forward(&t, true));
    check_close(name, "logits", kn_f32(kn_tape_output(&t, 0)), logits);

    int64_t *labels = malloc(sizeof(int64_t) * (size_t)batch);
    for (int64_t i = 0; i < batch; i++)
        labels[i] = (int64_t)labels_f->data[i];
    kn_tensor target = {kn_shape_of(1, &batch), KN_I64, labels};
    kn_loss loss = {KN_LOSS_CE, KN_REDUCTION_MEAN, 0.0f};
    double loss_value;
    CHECK_OK(kn_loss_compute(&loss, kn_tape_output(&t, 0), &target, &loss_value, kn_tape_output_grad(&t, 0)));
    printf("  %-4s %-36s kiln %.7f torch %.7f\n", name, "loss", loss_value, (double)loss_want->data[0]);
    CHECK_NEAR(loss_value, loss_want->data[0], 1e-5);

    kn_tape_zero_param_grads(&t);
    CHECK_OK(kn_tape_backward(&t));
    for (int v = 0; v < g.n_values; v++) {
        char key[160];
        const kn_value *val = &g.values[v];
        if (val->kind == KN_VALUE_PARAM) {
            snprintf(key, sizeof key, "grad:%s", val->name);
            const fixture_tensor *want = fixture_find(&f, key);
            if (want)
                check_close(name, key, kn_f32(kn_tape_grad(&t, v)), want);
        } else if (val->kind == KN_VALUE_STATE) {
            snprintf(key, sizeof key, "state_after:%s", val->name);
            const fixture_tensor *want = fixture_find(&f, key);
            CHECK_MSG(want != NULL, "no fixture for state %s", val->name);
            if (want)
                check_close(name, key, val->data, want);
        }
    }
    free(labels);
    kn_tape_free(&t);
    kn_graph_free(&g);
    free(spec);
    fixture_free(&f);
}

int main(void) {
    run_model("mlp");
    run_model("cnn");
    run_model("vit");
    run_model("cnn_wide"); /* its second convolution trains by Winograd */
    return check_finish();
}
