/* Losses against PyTorch (tests/ref/make_loss_fixtures.py: values and gradients computed in float64 on
 * float32 inputs) and against central finite differences, plus the errors for bad labels and shapes. */
#include <math.h>
#include <string.h>

#include "check.h"
#include "core/status.h"
#include "train/loss.h"
#include "train_ref_fixture.h"

enum { N = 4, K = 5 };

static ref_fixture fx;
static double worst_value_rel, worst_grad_rel, worst_fd;

static kn_tensor f32_tensor(const float *data, int64_t n, int64_t k) {
    kn_tensor t = {kn_shape_of(2, (int64_t[]){n, k}), KN_F32, (void *)data};
    return t;
}

static kn_tensor label_tensor(const int64_t *labels, int64_t n) {
    kn_tensor t = {kn_shape_of(1, (int64_t[]){n}), KN_I64, (void *)labels};
    return t;
}

/* Class indices are stored as floats in the fixtures. */
static void fixture_labels(const char *name, int64_t *labels) {
    const float *f = ref_fixture_get(&fx, name, N);
    for (int i = 0; i < N; i++)
        labels[i] = f ? (int64_t)f[i] : 0;
}

/* Value and gradient of `loss` against the fixture pair <prefix>/value, <prefix>/grad. */
static void check_against_torch(const char *prefix, const kn_loss *loss, const kn_tensor *pred, const kn_tensor *target) {
    char name[128];
    snprintf(name, sizeof name, "%s/value", prefix);
    const float *ref_value = ref_fixture_get(&fx, name, 1);
    snprintf(name, sizeof name, "%s/grad", prefix);
    const float *ref_grad = ref_fixture_get(&fx, name, N * K);
    CHECK(ref_value && ref_grad);
    if (!ref_value || !ref_grad)
        return;

    float grad[N * K];
    kn_tensor dpred = f32_tensor(grad, N, K);
    double value = NAN, value_only = NAN;
    CHECK_OK(kn_loss_compute(loss, pred, target, &value, &dpred));
    CHECK_OK(kn_loss_compute(loss, pred, target, &value_only, NULL));
    CHECK(value == value_only);

    double value_rel = fabs(value - ref_value[0]) / fabs(ref_value[0]);
    double grad_max = 0.0, grad_diff = 0.0;
    for (int i = 0; i < N * K; i++) {
        grad_max = fmax(grad_max, fabs(ref_grad[i]));
        grad_diff = fmax(grad_diff, fabs(grad[i] - ref_grad[i]));
    }
    double grad_rel = grad_diff / grad_max;
    /* The references are float32 roundings of exact values: 1e-6 is a few float32 ulps. */
    CHECK_MSG(value_rel <= 1e-6, "%s: value %.9g vs torch %.9g", prefix, value, (double)ref_value[0]);
    CHECK_MSG(grad_rel <= 1e-6, "%s: gradient differs by %.3g (relative to max |grad| %.3g)", prefix, grad_diff, grad_max);
    worst_value_rel = fmax(worst_value_rel, value_rel);
    worst_grad_rel = fmax(worst_grad_rel, grad_rel);
}

/* Central differences of the double-precision loss; the step actually taken (after rounding x +- h to
 * float) divides the difference. Elements within h of an L1 kink are skipped. */
static void check_finite_differences(const char *label, const kn_loss *loss, const float *pred_data,
                                     const kn_tensor *target) {
    float x[N * K], grad[N * K];
    memcpy(x, pred_data, sizeof x);
    kn_tensor pred = f32_tensor(x, N, K), dpred = f32_tensor(grad, N, K);
    double value;
    CHECK_OK(kn_loss_compute(loss, &pred, target, &value, &dpred));
    const double h = 1e-3;
    double worst = 0.0;
    for (int i = 0; i < N * K; i++) {
        if (loss->kind == KN_LOSS_MAE && fabs((double)x[i] - kn_f32(target)[i]) <= 2 * h)
            continue;
        float saved = x[i];
        double plus, minus;
        x[i] = (float)(saved + h);
        double x_plus = x[i];
        CHECK_OK(kn_loss_compute(loss, &pred, target, &plus, NULL));
        x[i] = (float)(saved - h);
        double x_minus = x[i];
        CHECK_OK(kn_loss_compute(loss, &pred, target, &minus, NULL));
        x[i] = saved;
        double numeric = (plus - minus) / (x_plus - x_minus);
        double err = fabs(grad[i] - numeric) / (1e-3 + fabs(numeric));
        worst = fmax(worst, err);
    }
    /* Truncation error h^2 f'''/6 is ~1e-7 here; the analytic gradient is float-rounded (6e-8). */
    CHECK_MSG(worst <= 2e-6, "%s: finite differences differ by %.3g (relative)", label, worst);
    worst_fd = fmax(worst_fd, worst);
}

static void test_cross_entropy(void) {
    static const char *cases[] = {"normal", "large"};
    for (int c = 0; c < 2; c++) {
        char name[128];
        snprintf(name, sizeof name, "ce/%s/logits", cases[c]);
        const float *logits = ref_fixture_get(&fx, name, N * K);
        int64_t labels[N];
        snprintf(name, sizeof name, "ce/%s/labels", cases[c]);
        fixture_labels(name, labels);
        CHECK(logits != NULL);
        if (!logits)
            continue;
        kn_tensor pred = f32_tensor(logits, N, K), target = label_tensor(labels, N);
        for (int r = 0; r < 2; r++)
            for (int s = 0; s < 2; s++) {
                kn_loss loss = {KN_LOSS_CE, r ? KN_REDUCTION_SUM : KN_REDUCTION_MEAN, s ? 0.1f : 0.0f};
                snprintf(name, sizeof name, "ce/%s/%s/ls%s", cases[c], r ? "sum" : "mean", s ? "0.1" : "0");
                check_against_torch(name, &loss, &pred, &target);
                check_finite_differences(name, &loss, logits, &target);
            }
    }
}

/* Class-probability targets (mixup's mixed one-hot rows) against PyTorch's cross_entropy with a probability
 * target, and a one-hot row against the class-index form. */
static void test_cross_entropy_probabilities(void) {
    const float *logits = ref_fixture_get(&fx, "ce_prob/logits", N * K);
    const float *probs = ref_fixture_get(&fx, "ce_prob/target", N * K);
    CHECK(logits && probs);
    if (!logits || !probs)
        return;
    kn_tensor pred = f32_tensor(logits, N, K), target = f32_tensor(probs, N, K);
    char name[128];
    for (int r = 0; r < 2; r++)
        for (int s = 0; s < 2; s++) {
            kn_loss loss = {KN_LOSS_CE, r ? KN_REDUCTION_SUM : KN_REDUCTION_MEAN, s ? 0.1f : 0.0f};
            snprintf(name, sizeof name, "ce_prob/%s/ls%s", r ? "sum" : "mean", s ? "0.1" : "0");
            check_against_torch(name, &loss, &pred, &target);
            check_finite_differences(name, &loss, logits, &target);
        }
    int64_t labels[N] = {2, 0, 4, 1};
    float one_hot[N * K] = {0}, grad_hot[N * K], grad_index[N * K];
    for (int i = 0; i < N; i++)
        one_hot[i * K + labels[i]] = 1.0f;
    kn_tensor hot = f32_tensor(one_hot, N, K), index = label_tensor(labels, N);
    kn_tensor d_hot = f32_tensor(grad_hot, N, K), d_index = f32_tensor(grad_index, N, K);
    kn_loss ce = {KN_LOSS_CE, KN_REDUCTION_MEAN, 0.1f};
    double v_hot = NAN, v_index = NAN;
    CHECK_OK(kn_loss_compute(&ce, &pred, &hot, &v_hot, &d_hot));
    CHECK_OK(kn_loss_compute(&ce, &pred, &index, &v_index, &d_index));
    CHECK_NEAR(v_hot, v_index, 1e-12 * fabs(v_index));
    for (int i = 0; i < N * K; i++)
        CHECK_NEAR(grad_hot[i], grad_index[i], 1e-7);
}

static void test_bce(void) {
    static const char *cases[] = {"normal", "large"};
    for (int c = 0; c < 2; c++) {
        char name[128];
        snprintf(name, sizeof name, "bce/%s/logits", cases[c]);
        const float *logits = ref_fixture_get(&fx, name, N * K);
        snprintf(name, sizeof name, "bce/%s/target", cases[c]);
        const float *probs = ref_fixture_get(&fx, name, N * K);
        CHECK(logits && probs);
        if (!logits || !probs)
            continue;
        kn_tensor pred = f32_tensor(logits, N, K), target = f32_tensor(probs, N, K);
        for (int r = 0; r < 2; r++) {
            kn_loss loss = {KN_LOSS_BCE, r ? KN_REDUCTION_SUM : KN_REDUCTION_MEAN, 0.0f};
            snprintf(name, sizeof name, "bce/%s/%s", cases[c], r ? "sum" : "mean");
            check_against_torch(name, &loss, &pred, &target);
            check_finite_differences(name, &loss, logits, &target);
        }
    }
}

static void test_regression(void) {
    const float *pred_data = ref_fixture_get(&fx, "regression/pred", N * K);
    const float *target_data = ref_fixture_get(&fx, "regression/target", N * K);
    CHECK(pred_data && target_data);
    if (!pred_data || !target_data)
        return;
    kn_tensor pred = f32_tensor(pred_data, N, K), target = f32_tensor(target_data, N, K);
    for (int kind = KN_LOSS_MSE; kind <= KN_LOSS_MAE; kind++)
        for (int r = 0; r < 2; r++) {
            kn_loss loss = {(kn_loss_kind)kind, r ? KN_REDUCTION_SUM : KN_REDUCTION_MEAN, 0.0f};
            char name[128];
            snprintf(name, sizeof name, "%s/%s", kn_loss_name(loss.kind), r ? "sum" : "mean");
            check_against_torch(name, &loss, &pred, &target);
            check_finite_differences(name, &loss, pred_data, &target);
        }

    /* The fixtures hold two ties; L1's subgradient there is exactly 0. */
    float grad[N * K];
    kn_tensor dpred = f32_tensor(grad, N, K);
    kn_loss mae = {KN_LOSS_MAE, KN_REDUCTION_SUM, 0.0f};
    double value;
    CHECK_OK(kn_loss_compute(&mae, &pred, &target, &value, &dpred));
    int ties = 0;
    for (int i = 0; i < N * K; i++)
        if (pred_data[i] == target_data[i]) {
            ties++;
            CHECK(grad[i] == 0.0f);
        } else {
            CHECK(fabsf(grad[i]) == 1.0f);
        }
    CHECK(ties == 2);
}

static void test_errors(void) {
    float logits[N * K] = {0};
    int64_t labels[N] = {0, 1, 5, 2};
    float grad[N * K];
    kn_tensor pred = f32_tensor(logits, N, K), target = label_tensor(labels, N), dpred = f32_tensor(grad, N, K);
    kn_loss ce = {KN_LOSS_CE, KN_REDUCTION_MEAN, 0.0f};
    double value = 0.0;

    CHECK(kn_loss_compute(&ce, &pred, &target, &value, &dpred) == KILN_ERR_INVALID_ARG);
    CHECK_MSG(strstr(kiln_last_error(), "sample 2") && strstr(kiln_last_error(), "label 5"), "%s", kiln_last_error());
    labels[2] = -1;
    CHECK(kn_loss_compute(&ce, &pred, &target, &value, NULL) == KILN_ERR_INVALID_ARG);
    CHECK_MSG(strstr(kiln_last_error(), "label -1"), "%s", kiln_last_error());
    labels[2] = 4;
    CHECK_OK(kn_loss_compute(&ce, &pred, &target, &value, &dpred));
    CHECK_NEAR(value, log((double)K), 1e-12); /* uniform logits */

    ce.label_smoothing = 1.5f;
    CHECK(kn_loss_compute(&ce, &pred, &target, &value, NULL) == KILN_ERR_INVALID_ARG);
    ce.label_smoothing = 0.0f;
    kn_tensor short_target = label_tensor(labels, N - 1);
    CHECK(kn_loss_compute(&ce, &pred, &short_target, &value, NULL) == KILN_ERR_SHAPE);
    kn_tensor bad_dpred = f32_tensor(grad, K, N);
    CHECK(kn_loss_compute(&ce, &pred, &target, &value, &bad_dpred) == KILN_ERR_SHAPE);

    logits[7] = NAN;
    CHECK(kn_loss_compute(&ce, &pred, &target, &value, &dpred) == KILN_ERR_NUMERIC);
    logits[7] = INFINITY;
    CHECK(kn_loss_compute(&ce, &pred, &target, &value, &dpred) == KILN_ERR_NUMERIC);
    logits[7] = 0.0f;

    float probs[N * K] = {0};
    probs[13] = 1.5f;
    kn_tensor prob_target = f32_tensor(probs, N, K);
    kn_loss bce = {KN_LOSS_BCE, KN_REDUCTION_MEAN, 0.0f};
    CHECK(kn_loss_compute(&bce, &pred, &prob_target, &value, &dpred) == KILN_ERR_INVALID_ARG);
    CHECK_MSG(strstr(kiln_last_error(), "sample 2"), "%s", kiln_last_error());
    probs[13] = 1.0f;
    CHECK_OK(kn_loss_compute(&bce, &pred, &prob_target, &value, &dpred));
    CHECK(kn_loss_compute(&bce, &pred, &target, &value, NULL) == KILN_ERR_SHAPE); /* i64 labels for bce */

    /* ce's class probabilities must lie in [0, 1]. */
    probs[13] = -0.25f;
    CHECK(kn_loss_compute(&ce, &pred, &prob_target, &value, &dpred) == KILN_ERR_INVALID_ARG);
    CHECK_MSG(strstr(kiln_last_error(), "sample 2") && strstr(kiln_last_error(), "class 3"), "%s", kiln_last_error());
    probs[13] = 1.0f;
    kn_tensor wrong_shape = f32_tensor(probs, N, K - 1);
    CHECK(kn_loss_compute(&ce, &pred, &wrong_shape, &value, NULL) == KILN_ERR_SHAPE);

    kn_loss mse = {KN_LOSS_MSE, KN_REDUCTION_MEAN, 0.1f};
    CHECK(kn_loss_compute(&mse, &pred, &prob_target, &value, NULL) == KILN_ERR_INVALID_ARG);

    kn_loss_kind kind;
    CHECK_OK(kn_loss_parse("mae", &kind));
    CHECK(kind == KN_LOSS_MAE && strcmp(kn_loss_name(kind), "mae") == 0);
    CHECK(kn_loss_parse("xent", &kind) == KILN_ERR_INVALID_ARG);
    CHECK_MSG(strstr(kiln_last_error(), "xent") && strstr(kiln_last_error(), "ce, bce, mse, mae"), "%s",
              kiln_last_error());
}

int main(void) {
    CHECK(ref_fixture_load(&fx, "losses"));
    if (fx.data) {
        test_cross_entropy();
        test_cross_entropy_probabilities();
        test_bce();
        test_regression();
    }
    test_errors();
    printf("vs PyTorch: max relative value difference %.3g, max gradient difference %.3g (relative to max |grad|)\n",
           worst_value_rel, worst_grad_rel);
    printf("vs finite differences: max relative gradient difference %.3g\n", worst_fd);
    ref_fixture_free(&fx);
    return check_finish();
}
