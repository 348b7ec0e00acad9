/* Knowledge distillation (Hinton, Vinyals & Dean 2015): the student trains on
 *
 *     L = (1 - alpha) * CE(z_s, y) + alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))
 *
 * averaged over the batch, where z_t are the teacher's logits on the same batch. The T^2 keeps the soft
 * term's gradient, alpha * T * (softmax(z_s/T) - softmax(z_t/T)) / n, on the scale of the hard term's as
 * T changes. The soft term is PyTorch's kl_div(log_softmax(z_s/T), softmax(z_t/T), 'batchmean') * T^2.
 *
 * It joins the training loop as kn_train_hooks.on_loss: the objective has put the hard loss and its
 * gradient in place; the hook runs the teacher (inference mode) on the tape's input 0 and mixes in the
 * soft term. The teacher reads the student's batch, so both must take the same input. Its standardisation
 * may differ: a model trained on CSV data carries the per-feature mean and std it was trained with, and
 * the data the student trains on is standardised with the student's own (or its own); kn_distill_bind_data
 * then maps each batch back to raw features and through the teacher's standardisation.
 *
 * Without augmentation the teacher's logits are a function of the sample alone (inference mode), so
 * they are kept, keyed by two 64-bit hashes of the sample's input: from the second epoch on the teacher
 * does not run, and distilling for E epochs costs one teacher pass, not E. The cache
 * holds up to KN_DISTILL_CACHE_BYTES of logits; samples beyond it run the teacher each time. Matching
 * needs the teacher's hidden value every step and runs it every step. With augmentation
 * (kn_distill_config.views_change) every epoch brings new views whose logits would never be asked for
 * again: the teacher runs every step on the augmented batch (Beyer et al. 2022's "function matching":
 * teacher and student see the same view) and the cache stays empty.
 *
 * Hidden-feature matching (FitNets, Romero et al. 2015), optional: a student activation S (N, Cs, ...)
 * goes through a learned 1x1 projection P (a Conv of W (Ct, Cs, 1, 1), or a MatMul by (Cs, Ct) for
 * (N, Cs) features) to the channels of a teacher activation T, and the loss gains
 * match_weight * mean((P(S) - T)^2). The projection trains with the student and is removed by
 * kn_distill_finish.
 */
#ifndef KN_COMPRESS_DISTILL_H
#define KN_COMPRESS_DISTILL_H

#include "core/graph.h"
#include "train/data.h"
#include "train/tape.h"

typedef struct kn_distill_config {
    float temperature; /* > 0; Hinton et al. use 2 to 20 */
    float alpha;       /* weight of the soft term, in [0, 1] */
    /* Hidden-feature matching: value names in the teacher and the student graphs; NULL: none. */
    const char *match_teacher, *match_student;
    float match_weight; /* >= 0 */
    /* The student sees each sample in a new view every epoch (kn_train_options.augment): the teacher labels
     * the very view the student trains on, each batch, and no logits are kept. */
    bool views_change;
} kn_distill_config;

/* The teacher's logits of the samples seen, in an open-addressing table of (hash a, hash b) keys. */
#define KN_DISTILL_CACHE_BYTES ((size_t)256 << 20)
typedef struct kn_distill_cache {
    uint64_t *keys;    /* (capacity, 2); a slot whose first key is 0 is empty (hashes are made nonzero) */
    int64_t *row;      /* (capacity) the slot's row in logits */
    float *logits;     /* (rows_cap, c) */
    int64_t capacity, count, rows_cap, c;
    int64_t hits, misses; /* samples served from the cache / by running the teacher */
} kn_distill_cache;

typedef struct kn_distill {
    kn_distill_config c;
    kn_tape teacher;   /* inference only */
    kn_distill_cache cache;
    /* The teacher's input from the student's: x_t = x * in_scale + in_shift per feature; NULL: the same. */
    float *in_scale, *in_shift; /* (sample_size) */
    int64_t in_features;
    double last_soft_loss, last_match_loss;
    /* Matching: the projection's node, weight and output in the student (its graph output 1), and the
     * teacher value as the teacher's graph output 1; -1 without matching. */
    int proj_node, proj_weight, proj_out;
    kn_graph *teacher_graph;
} kn_distill;

/* The soft term of n rows of c logits: loss = T^2 KL(softmax(zt/T) || softmax(zs/T)) / n, and its
 * gradient with respect to zs into grad (n, c), stored (not added). */
void kn_distill_soft_loss(const float *zs, const float *zt, int64_t n, int64_t c, float temperature, double *loss,
                          float *grad);

/* Binds the teacher (which must outlive d) for batches of up to `batch`, after checking it against the
 * student: one input of the same per-sample shape, and an output of the same per-sample shape. With
 * matching it adds the projection to the student and makes the two values graph outputs 1. */
kiln_status kn_distill_init(kn_distill *d, kn_graph *teacher, kn_graph *student, const kn_distill_config *c,
                            int64_t batch);
/* Maps the batches of `train` (standardised with train->feature_mean/std, or raw without them) to the
 * input standardisation the teacher graph was trained with (its input_mean/std, or raw without them). */
kiln_status kn_distill_bind_data(kn_distill *d, const kn_dataset *train);
/* Removes the matching projection from the trained student and the teacher's extra output (nothing to do
 * without matching). */
void kn_distill_finish(kn_distill *d, kn_graph *student);
void kn_distill_free(kn_distill *d);

/* kn_train_hooks.on_loss; user is the kn_distill. */
kiln_status kn_distill_on_loss(void *user, kn_tape *tape, const int64_t *labels, double *loss);

#endif
