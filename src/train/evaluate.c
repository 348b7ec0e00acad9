#include "train/evaluate.h"

#include <stdlib.h>
#include <string.h>

#include "core/status.h"

kiln_status kn_check_input_fits(const kn_graph *g, const kn_dataset *ds) {
    if (g->n_inputs != 1)
        return kn_fail(KILN_ERR_UNSUPPORTED, "training and evaluation need a model with one input; it has %d",
                       g->n_inputs);
    const kn_value *in = &g->values[g->inputs[0]];
    /* The batcher copies f32 samples into the input's buffer, which is sized by the input's dtype. */
    if (in->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "the model input '%s' is %s; training and evaluation feed f32 samples",
                       in->name, kn_dtype_name(in->dtype));
    int64_t per_sample = kn_shape_span(&in->shape, 1, in->shape.ndim);
    if (per_sample != ds->sample_size) {
        char a[96], b[96];
        kn_shape sample = in->shape;
        sample.ndim--;
        memmove(sample.d, sample.d + 1, sizeof(int64_t) * (size_t)sample.ndim);
        return kn_fail(KILN_ERR_SHAPE, "the model input '%s' takes samples of %s but %s has samples of %s",
                       in->name, kn_shape_str(&sample, a, sizeof a), ds->source,
                       kn_shape_str(&ds->sample_shape, b, sizeof b));
    }
    return KILN_OK;
}

void kn_eval_result_free(kn_eval_result *r) {
    free(r->confusion);
    memset(r, 0, sizeof *r);
}

kiln_status kn_evaluate_on_tape(kn_tape *t, kn_objective *o, const kn_dataset *ds, int64_t batch,
                                kn_eval_result *r) {
    memset(r, 0, sizeof *r);
    r->accuracy = -1;
    if (o->classification) {
        r->class_count = o->class_count > o->width ? o->class_count : o->width;
        r->confusion = calloc((size_t)(r->class_count * r->class_count), sizeof(int64_t));
        if (!r->confusion)
            return kn_fail(KILN_ERR_NOMEM, "out of memory for the confusion matrix");
    }
    double loss_sum = 0;
    int64_t correct_sum = 0;
    for (int64_t start = 0; start < ds->count; start += batch) {
        int64_t n = ds->count - start < batch ? ds->count - start : batch;
        KN_TRY(kn_tape_set_batch(t, n));
        memcpy(kn_tape_input(t, 0)->data, ds->x + start * ds->sample_size, sizeof(float) * (size_t)(n * ds->sample_size));
        KN_TRY(kn_tape_forward(t, false));
        const kn_tensor *pred = kn_tape_output(t, 0);
        const int64_t *labels = ds->labels ? ds->labels + start : NULL;
        const float *targets = ds->targets ? ds->targets + start * ds->target_width : NULL;
        double loss;
        int64_t correct = 0;
        KN_TRY(kn_objective_eval(o, pred, labels, targets, &loss, &correct, NULL));
        /* Per-batch means are weighted back to sums so the total is the mean over all samples. */
        loss_sum += o->loss.reduction == KN_REDUCTION_MEAN ? loss * (double)n : loss;
        correct_sum += correct;
        if (r->confusion) {
            for (int64_t i = 0; i < n; i++) {
                int64_t p = kn_objective_predict(o, pred, i);
                if (labels[i] >= 0 && labels[i] < r->class_count && p >= 0 && p < r->class_count)
                    r->confusion[labels[i] * r->class_count + p]++;
            }
        }
    }
    r->count = ds->count;
    r->loss = ds->count ? loss_sum / (double)ds->count : 0;
    if (o->classification)
        r->accuracy = ds->count ? (double)correct_sum / (double)ds->count : 0;
    return KILN_OK;
}

kiln_status kn_evaluate(kn_graph *g, const kn_dataset *ds, const kn_loss *loss, int64_t batch, kn_eval_result *r) {
    memset(r, 0, sizeof *r);
    if (batch < 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "batch size must be at least 1");
    KN_TRY(kn_check_input_fits(g, ds));
    kn_tape t;
    KN_TRY(kn_tape_init(&t, g, batch, false));
    kn_objective o;
    kiln_status st = kn_objective_init(&o, loss, ds, &kn_tape_output(&t, 0)->shape, batch);
    if (st == KILN_OK) {
        st = kn_evaluate_on_tape(&t, &o, ds, batch, r);
        kn_objective_free(&o);
    }
    kn_tape_free(&t);
    if (st != KILN_OK)
        kn_eval_result_free(r);
    return st;
}

kiln_status kn_loss_of_model(const kn_graph *g, kn_loss *loss) {
    *loss = (kn_loss){.reduction = KN_REDUCTION_MEAN};
    const char *trained = kn_graph_meta(g, "train.loss");
    return kn_loss_parse(trained ? trained : "ce", &loss->kind);
}
