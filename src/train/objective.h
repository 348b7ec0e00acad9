/* What the model is trained to do: the loss plus how a dataset's labels or targets become the loss's
 * target tensor, and how predictions are scored (accuracy, confusion matrix). Shared by the trainer
 * and evaluation so both compute the same numbers. */
#ifndef KN_OBJECTIVE_H
#define KN_OBJECTIVE_H

#include "train/data.h"
#include "train/loss.h"

typedef enum kn_target_source {
    KN_TARGET_LABEL_INDEX,   /* ce: class indices as they are */
    KN_TARGET_LABEL_ONE_HOT, /* bce/mse/mae on K > 1 outputs from class labels */
    KN_TARGET_LABEL_VALUE,   /* bce/mse/mae on one output from class labels (0/1 or the class number) */
    KN_TARGET_VALUES         /* float targets from the data */
} kn_target_source;

typedef struct kn_objective {
    kn_loss loss;
    kn_target_source source;
    int64_t width;           /* K: model outputs per sample */
    bool classification;     /* the data has class labels: accuracy is meaningful */
    int64_t class_count;
    int64_t capacity;        /* batch size the target buffers hold */
    int64_t *label_buf;      /* (capacity) */
    float *target_buf;       /* (capacity, K) */
} kn_objective;

/* Checks that the loss, the data and the model output (N, K) fit together; a clear error otherwise. */
kiln_status kn_objective_init(kn_objective *o, const kn_loss *loss, const kn_dataset *ds,
                              const kn_shape *output_shape, int64_t max_batch);
void kn_objective_free(kn_objective *o);

/* Loss of n predictions pred (n, K) against the batch's labels (n) or targets (n, width). Writes
 * dLoss/dpred into dpred when not NULL and counts correct predictions into *correct when the task is a
 * classification. A non-finite loss gives KILN_ERR_NUMERIC. */
kiln_status kn_objective_eval(kn_objective *o, const kn_tensor *pred, const int64_t *labels,
                              const float *targets, double *loss, int64_t *correct, kn_tensor *dpred);

/* kn_objective_eval on a batch mixed by mixup (train/augment.h): sample i is lambda_i = mix_weight[i] of
 * itself and 1 - lambda_i of sample n-1-i, and so is its target (one-hot rows for class labels, the values
 * for numeric targets). mix_weight NULL: kn_objective_eval. */
kiln_status kn_objective_eval_mixed(kn_objective *o, const kn_tensor *pred, const int64_t *labels,
                                    const float *targets, const float *mix_weight, double *loss, int64_t *correct,
                                    kn_tensor *dpred);

/* The class predicted for row `i` of pred (n, K). */
int64_t kn_objective_predict(const kn_objective *o, const kn_tensor *pred, int64_t i);

#endif
