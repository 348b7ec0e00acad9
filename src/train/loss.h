/* Training losses with their gradients, matching PyTorch's definitions:
 *   ce   CrossEntropyLoss (log-softmax over K classes, optional label smoothing)
 *   bce  BCEWithLogitsLoss
 *   mse  MSELoss
 *   mae  L1Loss
 * Values are accumulated in double in a fixed order, so a loss is bit-identical run to run.
 */
#ifndef KN_TRAIN_LOSS_H
#define KN_TRAIN_LOSS_H

#include "core/status.h"
#include "core/tensor.h"

typedef enum kn_loss_kind { KN_LOSS_CE, KN_LOSS_BCE, KN_LOSS_MSE, KN_LOSS_MAE } kn_loss_kind;
typedef enum kn_reduction { KN_REDUCTION_MEAN, KN_REDUCTION_SUM } kn_reduction;

typedef struct kn_loss {
    kn_loss_kind kind;
    kn_reduction reduction;
    float label_smoothing; /* ce only, in [0, 1]: the target is (1 - s) onehot + s / K */
} kn_loss;

/* "ce" "bce" "mse" "mae"; an unknown name gives KILN_ERR_INVALID_ARG listing the valid ones. */
kiln_status kn_loss_parse(const char *name, kn_loss_kind *out);
const char *kn_loss_name(kn_loss_kind kind);

/* pred (N, K): logits for ce and bce, predictions for mse/mae (the elementwise losses also take any
 * other shape). target: for ce a KN_I64 tensor (N) of class indices, or a KN_F32 tensor (N, K) of class
 * probabilities in [0, 1] (PyTorch's probability targets; mixup's mixed one-hot rows); for bce/mse/mae a KN_F32 tensor
 * of the same shape as pred (bce targets in [0, 1]).
 * Sets *value to the loss. If dpred is not NULL (a KN_F32 tensor shaped like pred) it is overwritten
 * with dLoss/dpred. Mean reduction divides by N for ce and by the element count otherwise, as PyTorch.
 * Errors: a label outside [0, K) or a bce target outside [0, 1] -> KILN_ERR_INVALID_ARG naming the
 * sample; shapes that do not fit -> KILN_ERR_SHAPE; a non-finite loss -> KILN_ERR_NUMERIC (dpred is
 * then unspecified). */
kiln_status kn_loss_compute(const kn_loss *loss, const kn_tensor *pred, const kn_tensor *target,
                            double *value, kn_tensor *dpred);

#endif
