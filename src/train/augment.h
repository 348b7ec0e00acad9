/* Augmentation for training: each sample of a batch is shown as a random view of itself — moved by
 * up to `shift` pixels along each axis (what moves out is lost, what moves in is 0: pad-and-random-crop
 * with a pad of `shift`) and, with `flip`, mirrored left to right half of the time. Views are made on the
 * batch the trainer copied into the tape, never in the dataset.
 *
 * With `mixup` (Zhang et al. 2018) each sample i of a batch of n is then mixed with its partner, the sample
 * at n - 1 - i (the batch reversed): x_i <- lambda_i x_i + (1 - lambda_i) x_{n-1-i}, lambda_i drawn from
 * Beta(mixup, mixup). The trainer trains on the mixed one-hot targets (kn_objective_eval_mixed);
 * distillation has the teacher label the mixed sample (Beyer et al. 2022's function matching). Mixing
 * works on any samples; shift and flip need images.
 *
 * A sample's view depends only on (seed, epoch, the sample's index in the dataset): a run repeats exactly,
 * whatever the batch order, thread count or an interruption and resumption mid-epoch, and each epoch shows
 * every sample in a new view. Samples must be images, (C, H, W).
 */
#ifndef KN_TRAIN_AUGMENT_H
#define KN_TRAIN_AUGMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/tensor.h"
#include "kiln/kiln.h"

typedef struct kn_augment {
    int64_t shift; /* largest move along each axis, in pixels; 0: none */
    bool flip;     /* mirror left to right with probability 1/2 */
    float mixup;   /* A of the Beta(A, A) mixing weights, in (0, 100]; 0: no mixing */
} kn_augment;

/* The longest text kn_augment_format writes, with its terminating 0. */
#define KN_AUGMENT_TEXT_MAX 64

/* Parses "none" (also NULL or "") or a comma-joined list, in any order, of "shift:N", "flip" and
 * "mixup:A". One clear line for anything else, a repeated part, N outside [1, 4096] or A outside (0, 100]. */
kiln_status kn_augment_parse(const char *text, kn_augment *out);
/* The text kn_augment_parse reads back to *a: "none", or its parts in the order shift, flip, mixup. */
void kn_augment_format(const kn_augment *a, char *text, size_t size);
bool kn_augment_on(const kn_augment *a);
/* Whether samples are moved or mirrored (shift or flip), which needs images. */
bool kn_augment_views_on(const kn_augment *a);

/* Whether samples of `sample_shape` can take the augmentation: with shift or flip, images (C, H, W) with
 * H and W larger than the shift. KILN_ERR_INVALID_ARG naming the shape otherwise; KILN_OK when off. */
kiln_status kn_augment_check(const kn_augment *a, const kn_shape *sample_shape);

/* The view of one sample, as (dy, dx, flip): its content moves dy rows down and dx columns right, after
 * mirroring when flip. Drawn from (seed, epoch, index). */
typedef struct kn_augment_view {
    int64_t dy, dx;
    bool flip;
} kn_augment_view;

kn_augment_view kn_augment_view_of(const kn_augment *a, uint64_t seed, int64_t epoch, int64_t index);

/* The mixing weight lambda of one sample, from Beta(a->mixup, a->mixup), drawn from (seed, epoch, index) on
 * a stream of its own (apart from the view's). 1 when mixing is off. */
float kn_augment_mix_weight(const kn_augment *a, uint64_t seed, int64_t epoch, int64_t index);
/* The sample that sample i of a batch of n is mixed with: the batch reversed. */
static inline int64_t kn_augment_mix_partner(int64_t i, int64_t n) { return n - 1 - i; }

/* Mixup's mix of a pair of partners' rows (width floats each), in place: a <- wa a + (1 - wa) b and
 * b <- wb b + (1 - wb) a, both from the rows as they were; a == b for the middle row of an odd batch, its
 * own partner. Partners pair up, so a batch (or its targets) mixes pair by pair with no copy. */
void kn_augment_mix_pair(float *a, float *b, int64_t width, float wa, float wb);

/* Replaces each of the n samples in x (n, sample_shape) by its view, then, with mixup, by its mix with its
 * partner's view; index[i] is sample i's index in the dataset. sample_shape is checked by kn_augment_check.
 * mix_weight (n), when not NULL, receives each sample's lambda (1 without mixup). */
kiln_status kn_augment_batch(const kn_augment *a, float *x, int64_t n, const kn_shape *sample_shape, uint64_t seed,
                             int64_t epoch, const int64_t *index, float *mix_weight);

#endif
