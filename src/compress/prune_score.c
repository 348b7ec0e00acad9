/* Importance scores of single weights: magnitude, random, and the two that need the loss's gradient,
 * first-order Taylor and the OBD diagonal-Hessian estimate. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compress/prune.h"
#include "core/rng.h"
#include "train/evaluate.h"
#include "train/objective.h"
#include "train/tape.h"

/* Sums over `batches` calibration batches of |w * g_b| (taylor) or g_b^2 (hessian), g_b the gradient of
 * the batch's mean loss, into sums[i] (layer i's weight numel). The model runs in inference mode (its
 * running statistics are used and left alone), so the gradient is that of the model as deployed. */
static kiln_status gradient_sums(kn_graph *g, const kn_prune_layer *layers, int n, const kn_prune_config *c,
                                 const kn_dataset *data, float **sums, int64_t *batches_done) {
    if (!data)
        return kn_fail(KILN_ERR_INVALID_ARG, "--method %s needs calibration data (--data)",
                       kn_prune_method_name(c->method));
    int64_t batch = c->calib_batch > 0 ? c->calib_batch : 64;
    if (batch > data->count)
        batch = data->count;
    if (batch < 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s has no samples to score the weights on", data->source);
    KN_TRY(kn_check_input_fits(g, data));
    kn_loss loss;
    KN_TRY(kn_loss_of_model(g, &loss));
    kn_tape tape;
    KN_TRY(kn_tape_init(&tape, g, batch, true));
    kn_objective objective;
    kiln_status st = kn_objective_init(&objective, &loss, data, &kn_tape_output(&tape, 0)->shape, batch);
    if (st != KILN_OK) {
        kn_tape_free(&tape);
        return st;
    }
    kn_batcher batcher;
    st = kn_batcher_init(&batcher, data, batch, true, c->seed, 0);
    int64_t *labels = malloc(sizeof(int64_t) * (size_t)batch);
    float *targets = data->targets ? malloc(sizeof(float) * (size_t)(batch * data->target_width)) : NULL;
    if (st == KILN_OK && (!labels || (data->targets && !targets)))
        st = kn_fail(KILN_ERR_NOMEM, "out of memory for a calibration batch");
    int64_t wanted = c->calib_batches > 0 ? c->calib_batches : 8;
    *batches_done = 0;
    while (st == KILN_OK && *batches_done < wanted) {
        /* Only full batches, so every batch's gradient has the same weight in the average. */
        if (kn_batcher_next(&batcher, kn_tape_input(&tape, 0)->data, data->labels ? labels : NULL, targets) < batch)
            break;
        double batch_loss;
        int64_t correct;
        if ((st = kn_tape_forward(&tape, false)) != KILN_OK)
            break;
        st = kn_objective_eval(&objective, kn_tape_output(&tape, 0), data->labels ? labels : NULL, targets,
                               &batch_loss, &correct, kn_tape_output_grad(&tape, 0));
        if (st != KILN_OK)
            break;
        kn_tape_zero_param_grads(&tape);
        if ((st = kn_tape_backward(&tape)) != KILN_OK)
            break;
        for (int l = 0; l < n; l++) {
            const kn_value *w = &g->values[layers[l].weight];
            const float *x = w->data, *grad = kn_tape_grad(&tape, layers[l].weight)->data;
            int64_t count = kn_shape_numel(&w->shape);
            for (int64_t i = 0; i < count; i++)
                sums[l][i] += c->method == KN_PRUNE_TAYLOR ? fabsf(x[i] * grad[i]) : grad[i] * grad[i];
        }
        (*batches_done)++;
    }
    if (st == KILN_OK && *batches_done == 0)
        st = kn_fail(KILN_ERR_INVALID_ARG, "%s has fewer than one calibration batch of %lld samples", data->source,
                     (long long)batch);
    free(labels);
    free(targets);
    kn_batcher_free(&batcher);
    kn_objective_free(&objective);
    kn_tape_free(&tape);
    return st;
}

kiln_status kn_prune_scores(kn_graph *g, const kn_prune_layer *layers, int n, const kn_prune_config *c,
                            const kn_dataset *data, float **scores) {
    for (int l = 0; l < n; l++)
        memset(scores[l], 0, sizeof(float) * (size_t)kn_shape_numel(&g->values[layers[l].weight].shape));
    int64_t batches = 1;
    if (c->method == KN_PRUNE_TAYLOR || c->method == KN_PRUNE_HESSIAN)
        KN_TRY(gradient_sums(g, layers, n, c, data, scores, &batches));
    kn_rng rng = kn_rng_seeded(c->seed);
    for (int l = 0; l < n; l++) {
        const kn_value *w = &g->values[layers[l].weight];
        const float *x = w->data;
        float *s = scores[l];
        int64_t count = kn_shape_numel(&w->shape);
        for (int64_t i = 0; i < count; i++) {
            switch (c->method) {
            case KN_PRUNE_L1: s[i] = fabsf(x[i]); break;
            case KN_PRUNE_L2: s[i] = x[i] * x[i]; break;
            case KN_PRUNE_RANDOM: s[i] = kn_rng_uniform(&rng); break;
            case KN_PRUNE_TAYLOR: s[i] /= (float)batches; break;
            /* OBD: deleting w_i raises the loss by about 1/2 H_ii w_i^2; H_ii ~ the mean squared gradient. */
            case KN_PRUNE_HESSIAN: s[i] = 0.5f * (s[i] / (float)batches) * x[i] * x[i]; break;
            }
        }
    }
    return KILN_OK;
}
