#include "train/objective.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "train/augment.h"

kiln_status kn_objective_init(kn_objective *o, const kn_loss *loss, const kn_dataset *ds,
                              const kn_shape *output_shape, int64_t max_batch) {
    memset(o, 0, sizeof *o);
    o->loss = *loss;
    char s[96];
    if (output_shape->ndim != 2)
        return kn_fail(KILN_ERR_SHAPE, "the model output %s must be (batch, outputs) for training",
                       kn_shape_str(output_shape, s, sizeof s));
    int64_t k = output_shape->d[1];
    o->width = k;
    o->classification = ds->labels != NULL;
    o->class_count = ds->class_count;
    const char *name = kn_loss_name(loss->kind);
    if (loss->kind == KN_LOSS_CE) {
        if (!ds->labels && ds->not_labels)
            return kn_fail(KILN_ERR_INVALID_ARG, "--loss ce needs class labels: %s (numeric targets train with "
                           "--loss mse or mae)", ds->not_labels);
        if (!ds->labels)
            return kn_fail(KILN_ERR_INVALID_ARG, "--loss ce needs class labels, but %s has numeric targets",
                           ds->source);
        if (k < ds->class_count || k < 2)
            return kn_fail(KILN_ERR_SHAPE, "the model has %lld outputs but %s has %lld classes",
                           (long long)k, ds->source, (long long)ds->class_count);
        o->source = KN_TARGET_LABEL_INDEX;
    } else if (ds->targets && ds->target_width == k) {
        o->source = KN_TARGET_VALUES;
    } else if (ds->labels && k > 1) {
        if (k != ds->class_count)
            return kn_fail(KILN_ERR_SHAPE, "--loss %s on class labels needs one output per class: the model has "
                           "%lld, %s has %lld classes", name, (long long)k, ds->source, (long long)ds->class_count);
        o->source = KN_TARGET_LABEL_ONE_HOT;
    } else if (ds->labels && k == 1) {
        if (loss->kind == KN_LOSS_BCE && ds->class_count > 2)
            return kn_fail(KILN_ERR_INVALID_ARG, "--loss bce with one output needs 2 classes; %s has %lld",
                           ds->source, (long long)ds->class_count);
        o->source = KN_TARGET_LABEL_VALUE;
    } else {
        return kn_fail(KILN_ERR_SHAPE, "the model has %lld outputs but %s has %lld targets per sample",
                       (long long)k, ds->source, (long long)ds->target_width);
    }
    o->capacity = max_batch;
    size_t rows = (size_t)(max_batch > 0 ? max_batch : 1);
    o->label_buf = malloc(rows * sizeof(int64_t));
    o->target_buf = malloc(rows * (size_t)k * sizeof(float));
    if (!o->label_buf || !o->target_buf) {
        kn_objective_free(o);
        return kn_fail(KILN_ERR_NOMEM, "out of memory for targets");
    }
    return KILN_OK;
}

void kn_objective_free(kn_objective *o) {
    free(o->label_buf);
    free(o->target_buf);
    memset(o, 0, sizeof *o);
}

int64_t kn_objective_predict(const kn_objective *o, const kn_tensor *pred, int64_t i) {
    const float *row = kn_f32(pred) + i * o->width;
    if (o->width == 1) {
        if (o->loss.kind == KN_LOSS_BCE)
            return row[0] > 0.0f;
        double c = nearbyint((double)row[0]);
        return c < 0 ? 0 : (int64_t)c;
    }
    int64_t best = 0;
    for (int64_t k = 1; k < o->width; k++)
        if (row[k] > row[best])
            best = k;
    return best;
}

/* t (n, k) = the one-hot rows of the labels (a row of zeros for a label outside [0, k)). */
static void one_hot_rows(float *t, const int64_t *labels, int64_t n, int64_t k) {
    memset(t, 0, sizeof(float) * (size_t)(n * k));
    for (int64_t i = 0; i < n; i++)
        if (labels[i] >= 0 && labels[i] < k)
            t[i * k + labels[i]] = 1.0f;
}

/* Fills the loss's target tensor for n rows. */
static void build_target(kn_objective *o, int64_t n, const int64_t *labels, const float *targets,
                         kn_tensor *target) {
    int64_t k = o->width;
    switch (o->source) {
    case KN_TARGET_LABEL_INDEX:
        memcpy(o->label_buf, labels, sizeof(int64_t) * (size_t)n);
        *target = (kn_tensor){kn_shape_of(1, &n), KN_I64, o->label_buf};
        return;
    case KN_TARGET_LABEL_ONE_HOT:
        one_hot_rows(o->target_buf, labels, n, k);
        break;
    case KN_TARGET_LABEL_VALUE:
        for (int64_t i = 0; i < n; i++)
            o->target_buf[i] = (float)labels[i];
        break;
    case KN_TARGET_VALUES:
        memcpy(o->target_buf, targets, sizeof(float) * (size_t)(n * k));
        break;
    }
    *target = (kn_tensor){kn_shape_of(2, (int64_t[]){n, k}), KN_F32, o->target_buf};
}

/* Mixes each row of the target (n, K) with its partner's: t_i <- lambda_i t_i + (1 - lambda_i) t_partner(i).
 * Class indices are first written as one-hot rows (f32), which the ce loss takes as probabilities. */
static kiln_status mix_target(kn_objective *o, int64_t n, const float *mix_weight, kn_tensor *target) {
    int64_t k = target->dtype == KN_I64 ? o->width : kn_shape_numel(&target->shape) / n;
    if (target->dtype == KN_I64) {
        for (int64_t i = 0; i < n; i++) {
            if (o->label_buf[i] < 0 || o->label_buf[i] >= k)
                return kn_fail(KILN_ERR_INVALID_ARG, "ce loss: sample %lld has label %lld, outside the %lld classes "
                               "[0, %lld)", (long long)i, (long long)o->label_buf[i], (long long)k, (long long)k);
        }
        one_hot_rows(o->target_buf, o->label_buf, n, k);
        *target = (kn_tensor){kn_shape_of(2, (int64_t[]){n, k}), KN_F32, o->target_buf};
    }
    for (int64_t i = 0; i <= kn_augment_mix_partner(i, n); i++) {
        int64_t p = kn_augment_mix_partner(i, n);
        kn_augment_mix_pair(o->target_buf + i * k, o->target_buf + p * k, k, mix_weight[i], mix_weight[p]);
    }
    return KILN_OK;
}

kiln_status kn_objective_eval(kn_objective *o, const kn_tensor *pred, const int64_t *labels,
                              const float *targets, double *loss, int64_t *correct, kn_tensor *dpred) {
    return kn_objective_eval_mixed(o, pred, labels, targets, NULL, loss, correct, dpred);
}

kiln_status kn_objective_eval_mixed(kn_objective *o, const kn_tensor *pred, const int64_t *labels,
                                    const float *targets, const float *mix_weight, double *loss, int64_t *correct,
                                    kn_tensor *dpred) {
    int64_t n = pred->shape.d[0];
    if (n > o->capacity)
        return kn_fail(KILN_ERR_INTERNAL, "batch of %lld exceeds the objective's %lld", (long long)n,
                       (long long)o->capacity);
    kn_tensor target;
    build_target(o, n, labels, targets, &target);
    if (mix_weight)
        KN_TRY(mix_target(o, n, mix_weight, &target));
    KN_TRY(kn_loss_compute(&o->loss, pred, &target, loss, dpred));
    if (correct && o->classification) {
        /* A mixed sample counts as right when the prediction is its larger part's class. */
        int64_t hits = 0;
        for (int64_t i = 0; i < n; i++)
            hits += kn_objective_predict(o, pred, i) == labels[mix_weight && mix_weight[i] < 0.5f ? kn_augment_mix_partner(i, n) : i];
        *correct = hits;
    }
    return KILN_OK;
}
