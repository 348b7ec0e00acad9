#include "train/loss.h"

#include <math.h>
#include <string.h>

static const char *const kn_loss_names[] = {
    [KN_LOSS_CE] = "ce",
    [KN_LOSS_BCE] = "bce",
    [KN_LOSS_MSE] = "mse",
    [KN_LOSS_MAE] = "mae",
};
enum { KN_LOSS_KIND_COUNT = sizeof kn_loss_names / sizeof kn_loss_names[0] };

kiln_status kn_loss_parse(const char *name, kn_loss_kind *out) {
    for (int kind = 0; name && kind < KN_LOSS_KIND_COUNT; kind++) {
        if (strcmp(name, kn_loss_names[kind]) == 0) {
            *out = (kn_loss_kind)kind;
            return KILN_OK;
        }
    }
    return kn_fail(KILN_ERR_INVALID_ARG, "unknown loss '%s' (valid: ce, bce, mse, mae)", name ? name : "(null)");
}

const char *kn_loss_name(kn_loss_kind kind) {
    if ((int)kind < 0 || (int)kind >= KN_LOSS_KIND_COUNT)
        return "?";
    return kn_loss_names[kind];
}

/* log sum_j exp(x_j) over a row of k logits, shifted by the row's max so that +-100 logits stay finite. */
static double row_log_sum_exp(const float *x, int64_t k) {
    double max = x[0];
    for (int64_t j = 1; j < k; j++)
        max = fmax(max, x[j]);
    double sum_exp = 0.0;
    for (int64_t j = 0; j < k; j++)
        sum_exp += exp(x[j] - max);
    return max + log(sum_exp);
}

/* Cross-entropy of softmax(logits) against the smoothed one-hot target, per row:
 *   lse = log sum_j exp(x_j)   (row_log_sum_exp)
 *   loss = (1 - s) (lse - x_y) + s/K sum_j (lse - x_j)
 *   dloss/dx_j = softmax_j - (1 - s) [j == y] - s/K */
static double kn_ce(const float *logits, const int64_t *labels, int64_t n, int64_t k, double smoothing,
                    double scale, float *dlogits) {
    double total = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float *x = logits + i * k; // (K)
        double lse = row_log_sum_exp(x, k), sum_x = 0.0;
        for (int64_t j = 0; j < k; j++)
            sum_x += x[j];
        int64_t y = labels[i];
        total += (1.0 - smoothing) * (lse - x[y]) + smoothing * (lse - sum_x / (double)k);
        if (dlogits) {
            float *dx = dlogits + i * k; // (K)
            for (int64_t j = 0; j < k; j++) {
                double target = smoothing / (double)k + (j == y ? 1.0 - smoothing : 0.0);
                dx[j] = (float)(scale * (exp(x[j] - lse) - target));
            }
        }
    }
    return total * scale;
}

/* Cross-entropy against class probabilities t (n, K) (PyTorch's CrossEntropyLoss with a probability target),
 * smoothed as PyTorch does, t' = (1 - s) t + s/K, per row:
 *   loss = sum_j t'_j (lse - x_j),  dloss/dx_j = softmax_j sum_i t'_i - t'_j
 * (sum_i t'_i is 1 for rows that sum to 1, as mixed one-hot targets do). */
static double kn_ce_soft(const float *logits, const float *probs, int64_t n, int64_t k, double smoothing,
                         double scale, float *dlogits) {
    double total = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float *x = logits + i * k, *t = probs + i * k; // (K) each
        double lse = row_log_sum_exp(x, k), mass = 0.0;
        for (int64_t j = 0; j < k; j++) {
            double target = (1.0 - smoothing) * t[j] + smoothing / (double)k;
            total += target * (lse - x[j]);
            mass += target;
        }
        if (dlogits) {
            float *dx = dlogits + i * k; // (K)
            for (int64_t j = 0; j < k; j++)
                dx[j] = (float)(scale * (exp(x[j] - lse) * mass - ((1.0 - smoothing) * t[j] + smoothing / (double)k)));
        }
    }
    return total * scale;
}

/* Logistic loss on logits x against probabilities y in the overflow-free form PyTorch uses:
 *   loss = max(x, 0) - x y + log(1 + exp(-|x|)),  dloss/dx = sigmoid(x) - y */
static double kn_bce(const float *logits, const float *target, int64_t count, double scale, float *dlogits) {
    double total = 0.0;
    for (int64_t i = 0; i < count; i++) {
        double x = logits[i], y = target[i];
        total += fmax(x, 0.0) - x * y + log1p(exp(-fabs(x)));
        if (dlogits) {
            double e = exp(-fabs(x)); // sigmoid without overflow on either side
            double sigmoid = x >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
            dlogits[i] = (float)(scale * (sigmoid - y));
        }
    }
    return total * scale;
}

static double kn_mse(const float *pred, const float *target, int64_t count, double scale, float *dpred) {
    double total = 0.0;
    for (int64_t i = 0; i < count; i++) {
        double diff = (double)pred[i] - target[i];
        total += diff * diff;
        if (dpred)
            dpred[i] = (float)(scale * 2.0 * diff);
    }
    return total * scale;
}

/* L1: the subgradient at a tie is 0, as torch.sign gives. */
static double kn_mae(const float *pred, const float *target, int64_t count, double scale, float *dpred) {
    double total = 0.0;
    for (int64_t i = 0; i < count; i++) {
        double diff = (double)pred[i] - target[i];
        total += fabs(diff);
        if (dpred)
            dpred[i] = (float)(scale * (double)((diff > 0.0) - (diff < 0.0)));
    }
    return total * scale;
}

static kiln_status kn_loss_check_shapes(const kn_loss *loss, const kn_tensor *pred, const kn_tensor *target,
                                        const kn_tensor *dpred) {
    const char *name = kn_loss_name(loss->kind);
    char pred_shape[64], other_shape[64];
    kn_shape_str(&pred->shape, pred_shape, sizeof pred_shape);
    if (pred->dtype != KN_F32 || !pred->data)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s loss: predictions must be f32 data, got %s", name,
                       kn_dtype_name(pred->dtype));
    if (kn_shape_numel(&pred->shape) <= 0)
        return kn_fail(KILN_ERR_SHAPE, "%s loss: empty predictions %s", name, pred_shape);
    if (dpred && (dpred->dtype != KN_F32 || !dpred->data || !kn_shape_equal(&dpred->shape, &pred->shape)))
        return kn_fail(KILN_ERR_SHAPE, "%s loss: gradient must be f32 shaped like the predictions %s, got %s %s",
                       name, pred_shape, kn_dtype_name(dpred->dtype),
                       kn_shape_str(&dpred->shape, other_shape, sizeof other_shape));
    kn_shape_str(&target->shape, other_shape, sizeof other_shape);
    if (!target->data)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s loss: target has no data", name);
    if (loss->kind == KN_LOSS_CE) {
        if (pred->shape.ndim != 2)
            return kn_fail(KILN_ERR_SHAPE, "ce loss: logits must be (N, K), got %s", pred_shape);
        if (target->dtype == KN_F32 && kn_shape_equal(&target->shape, &pred->shape))
            return KILN_OK; /* class probabilities */
        if (target->dtype != KN_I64 || target->shape.ndim != 1 || target->shape.d[0] != pred->shape.d[0])
            return kn_fail(KILN_ERR_SHAPE, "ce loss: target must be i64 class indices (%lld) or f32 class "
                           "probabilities shaped like the logits %s, got %s %s",
                           (long long)pred->shape.d[0], pred_shape, kn_dtype_name(target->dtype), other_shape);
        return KILN_OK;
    }
    if (target->dtype != KN_F32 || !kn_shape_equal(&target->shape, &pred->shape))
        return kn_fail(KILN_ERR_SHAPE, "%s loss: target must be f32 shaped like the predictions %s, got %s %s", name,
                       pred_shape, kn_dtype_name(target->dtype), other_shape);
    return KILN_OK;
}

/* Bad labels are the caller's data, so they get an error naming the sample rather than an assert. */
static kiln_status kn_loss_check_targets(const kn_loss *loss, const kn_tensor *pred, const kn_tensor *target) {
    if (loss->kind == KN_LOSS_CE && target->dtype == KN_F32) {
        const float *t = kn_f32(target);
        int64_t k = pred->shape.d[1];
        for (int64_t i = 0; i < kn_numel(target); i++)
            if (!(t[i] >= 0.0f && t[i] <= 1.0f))
                return kn_fail(KILN_ERR_INVALID_ARG, "ce loss: sample %lld has class probability %g (class %lld), "
                               "outside [0, 1]", (long long)(i / k), (double)t[i], (long long)(i % k));
    } else if (loss->kind == KN_LOSS_CE) {
        const int64_t *labels = target->data;
        int64_t k = pred->shape.d[1];
        for (int64_t i = 0; i < target->shape.d[0]; i++)
            if (labels[i] < 0 || labels[i] >= k)
                return kn_fail(KILN_ERR_INVALID_ARG, "ce loss: sample %lld has label %lld, outside the %lld classes [0, %lld)",
                               (long long)i, (long long)labels[i], (long long)k, (long long)k);
    }
    if (loss->kind == KN_LOSS_BCE) {
        const float *y = kn_f32(target);
        int64_t per_sample = pred->shape.ndim > 1 ? kn_shape_span(&pred->shape, 1, pred->shape.ndim) : 1;
        for (int64_t i = 0; i < kn_numel(target); i++)
            if (!(y[i] >= 0.0f && y[i] <= 1.0f))
                return kn_fail(KILN_ERR_INVALID_ARG, "bce loss: sample %lld has target %g (element %lld), outside [0, 1]",
                               (long long)(i / per_sample), (double)y[i], (long long)i);
    }
    return KILN_OK;
}

kiln_status kn_loss_compute(const kn_loss *loss, const kn_tensor *pred, const kn_tensor *target, double *value,
                            kn_tensor *dpred) {
    if (!loss || !pred || !target || !value)
        return kn_fail(KILN_ERR_INVALID_ARG, "loss: NULL argument");
    if ((int)loss->kind < 0 || (int)loss->kind >= KN_LOSS_KIND_COUNT)
        return kn_fail(KILN_ERR_INVALID_ARG, "loss: unknown kind %d", (int)loss->kind);
    if (loss->reduction != KN_REDUCTION_MEAN && loss->reduction != KN_REDUCTION_SUM)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s loss: unknown reduction %d", kn_loss_name(loss->kind),
                       (int)loss->reduction);
    double smoothing = loss->label_smoothing;
    if (!(smoothing >= 0.0 && smoothing <= 1.0))
        return kn_fail(KILN_ERR_INVALID_ARG, "%s loss: label smoothing %g is outside [0, 1]", kn_loss_name(loss->kind),
                       smoothing);
    if (smoothing != 0.0 && loss->kind != KN_LOSS_CE)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s loss: label smoothing (%g) applies only to the ce loss",
                       kn_loss_name(loss->kind), smoothing);
    KN_TRY(kn_loss_check_shapes(loss, pred, target, dpred));
    KN_TRY(kn_loss_check_targets(loss, pred, target));

    int64_t count = kn_numel(pred);
    float *grad = dpred ? kn_f32(dpred) : NULL;
    double result = 0.0;
    if (loss->kind == KN_LOSS_CE) {
        int64_t n = pred->shape.d[0], k = pred->shape.d[1];
        double scale = loss->reduction == KN_REDUCTION_MEAN ? 1.0 / (double)n : 1.0;
        result = target->dtype == KN_F32 ? kn_ce_soft(kn_f32(pred), kn_f32(target), n, k, smoothing, scale, grad)
                                         : kn_ce(kn_f32(pred), target->data, n, k, smoothing, scale, grad);
    } else {
        double scale = loss->reduction == KN_REDUCTION_MEAN ? 1.0 / (double)count : 1.0;
        if (loss->kind == KN_LOSS_BCE)
            result = kn_bce(kn_f32(pred), kn_f32(target), count, scale, grad);
        else if (loss->kind == KN_LOSS_MSE)
            result = kn_mse(kn_f32(pred), kn_f32(target), count, scale, grad);
        else
            result = kn_mae(kn_f32(pred), kn_f32(target), count, scale, grad);
    }
    if (!isfinite(result))
        return kn_fail(KILN_ERR_NUMERIC, "%s loss is %g: the predictions or targets hold NaN or infinite values",
                       kn_loss_name(loss->kind), result);
    *value = result;
    return KILN_OK;
}
