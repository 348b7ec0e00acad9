/* Image augmentation for training: each sample of a batch is shown as a random view of itself — moved by
 * up to `shift` pixels along each axis (what moves out is lost, what moves in is 0: pad-and-random-crop
 * with a pad of `shift`) and, with `flip`, mirrored left to right half of the time. Views are made on the
 * batch the trainer copied into the tape, never in the dataset.
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
} kn_augment;

/* The longest text kn_augment_format writes, with its terminating 0. */
#define KN_AUGMENT_TEXT_MAX 32

/* Parses "shift:N", "flip", "shift:N,flip" (either order) or "none" (also NULL or ""). One clear line for
 * anything else, a repeated part, or N outside [1, 4096]. */
kiln_status kn_augment_parse(const char *text, kn_augment *out);
/* The text kn_augment_parse reads back to *a: "none", "shift:N", "flip" or "shift:N,flip". */
void kn_augment_format(const kn_augment *a, char *text, size_t size);
bool kn_augment_on(const kn_augment *a);

/* Whether samples of `sample_shape` can take the augmentation: images (C, H, W) with H and W larger than
 * the shift. KILN_ERR_INVALID_ARG naming the shape otherwise; KILN_OK when augmentation is off. */
kiln_status kn_augment_check(const kn_augment *a, const kn_shape *sample_shape);

/* The view of one sample, as (dy, dx, flip): its content moves dy rows down and dx columns right, after
 * mirroring when flip. Drawn from (seed, epoch, index). */
typedef struct kn_augment_view {
    int64_t dy, dx;
    bool flip;
} kn_augment_view;

kn_augment_view kn_augment_view_of(const kn_augment *a, uint64_t seed, int64_t epoch, int64_t index);

/* Replaces each of the n samples in x (n, C, H, W) by its view; index[i] is sample i's index in the
 * dataset. sample_shape is (C, H, W), checked by kn_augment_check. */
kiln_status kn_augment_batch(const kn_augment *a, float *x, int64_t n, const kn_shape *sample_shape, uint64_t seed,
                             int64_t epoch, const int64_t *index);

#endif
