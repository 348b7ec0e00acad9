/* Evaluation of a model on a dataset: mean loss, accuracy and the confusion matrix. */
#ifndef KN_EVALUATE_H
#define KN_EVALUATE_H

#include "train/objective.h"
#include "train/tape.h"

typedef struct kn_eval_result {
    int64_t count;
    double loss;          /* mean over samples */
    double accuracy;      /* < 0 when the data has no class labels */
    int64_t class_count;
    int64_t *confusion;   /* (class_count, class_count): row = true class, column = predicted; or NULL */
} kn_eval_result;

/* The loss the model was trained with (its "train.loss" metadata; cross-entropy without it), mean
 * reduction: what evaluation, pruning scores and compression summaries measure it by. */
kiln_status kn_loss_of_model(const kn_graph *g, kn_loss *loss);

/* Evaluates g (inference mode) on ds in batches of `batch`. */
kiln_status kn_evaluate(kn_graph *g, const kn_dataset *ds, const kn_loss *loss, int64_t batch, kn_eval_result *r);
/* The same on an already bound tape and objective (the trainer's validation pass). */
kiln_status kn_evaluate_on_tape(kn_tape *t, kn_objective *o, const kn_dataset *ds, int64_t batch,
                                kn_eval_result *r);
void kn_eval_result_free(kn_eval_result *r);

/* Checks the model's input takes the dataset's samples (same element count); a clear error naming both. */
kiln_status kn_check_input_fits(const kn_graph *g, const kn_dataset *ds);

#endif
