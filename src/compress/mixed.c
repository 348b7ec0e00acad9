/* Mixed precision under an accuracy budget (mixed.h). */
#include "compress/mixed.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "format/kiln_file.h"
#include "train/evaluate.h"

static const int widths[KN_MIXED_WIDTHS] = {8, 4, 2};

void kn_mixed_plan_free(kn_mixed_plan *plan) {
    free(plan->names);
    free(plan->params);
    free(plan->drop);
    free(plan->bits);
    memset(plan, 0, sizeof *plan);
}

/* The model as bytes, and the accuracy of a copy of it quantized with layer_bits (NULL: f32). */
typedef struct mixed_ctx {
    void *bytes;
    size_t size;
    const kn_dataset *calib, *val;
    kn_quant_options options;
    kn_loss loss;
    int evaluations;
} mixed_ctx;

static kiln_status accuracy_with(mixed_ctx *c, const int *layer_bits, bool activations, double *accuracy) {
    kn_graph copy;
    KN_TRY(kn_kiln_load_buffer(c->bytes, c->size, &copy, NULL, NULL));
    kn_quant_options o = c->options;
    o.layer_bits = layer_bits;
    o.weights_only = o.weights_only || !activations;
    /* The search compares nearest rounding, not the repairs (AdaRound in every trial would cost seconds
     * to minutes each); they only improve on the plan in the final model. */
    o.bias_correction = o.recalibrate_bn = o.adaround = false;
    kiln_status st = layer_bits ? kn_quantize(&copy, c->calib, &o, NULL) : KILN_OK;
    kn_eval_result r = {0};
    if (st == KILN_OK)
        st = kn_evaluate(&copy, c->val, &c->loss, 256, &r);
    *accuracy = 100 * r.accuracy;
    if (st == KILN_OK && r.accuracy < 0)
        st = kn_fail(KILN_ERR_INVALID_ARG, "--max-drop needs validation data with class labels");
    c->evaluations++;
    kn_eval_result_free(&r);
    kn_graph_free(&copy);
    return st;
}

static int width_index(int bits) {
    for (int k = 0; k < KN_MIXED_WIDTHS; k++)
        if (widths[k] == bits)
            return k;
    return -1;
}

static kiln_status plan_alloc(kn_mixed_plan *p, int n) {
    p->n_layers = n;
    p->names = calloc((size_t)n + 1, sizeof *p->names);
    p->params = calloc((size_t)n + 1, sizeof *p->params);
    p->drop = calloc((size_t)n + 1, sizeof *p->drop);
    p->bits = calloc((size_t)n + 1, sizeof *p->bits);
    return p->names && p->params && p->drop && p->bits ? KILN_OK : kn_fail(KILN_ERR_NOMEM, "out of memory");
}

/* Step 1: every layer alone at every width. */
static kiln_status measure_sensitivity(mixed_ctx *c, kn_mixed_plan *p) {
    for (int l = 0; l < p->n_layers; l++)
        for (int k = 0; k < KN_MIXED_WIDTHS; k++) {
            memset(p->bits, 0, sizeof *p->bits * (size_t)p->n_layers);
            p->bits[l] = widths[k];
            double accuracy;
            KN_TRY(accuracy_with(c, p->bits, false, &accuracy));
            p->drop[l][k] = p->base_accuracy - accuracy;
        }
    return KILN_OK;
}

/* Steps 2 and 3. */
static kiln_status choose_bits(mixed_ctx *c, kn_mixed_plan *p, double budget) {
    for (int l = 0; l < p->n_layers; l++) {
        p->bits[l] = 0;
        for (int k = 0; k < KN_MIXED_WIDTHS; k++)
            if (p->drop[l][k] <= budget / 2)
                p->bits[l] = widths[k];
    }
    for (;;) {
        KN_TRY(accuracy_with(c, p->bits, true, &p->accuracy));
        if (p->base_accuracy - p->accuracy <= budget)
            return KILN_OK;
        int worst = -1;
        double worst_drop = -INFINITY;
        for (int l = 0; l < p->n_layers; l++) {
            int k = width_index(p->bits[l]);
            if (k >= 0 && p->drop[l][k] > worst_drop) {
                worst_drop = p->drop[l][k];
                worst = l;
            }
        }
        if (worst < 0)
            return KILN_OK; /* every layer is f32: the activations alone cost more than the budget */
        int k = width_index(p->bits[worst]);
        p->bits[worst] = k == 0 ? 0 : widths[k - 1];
    }
}

kiln_status kn_mixed_plan_make(const kn_graph *g, const kn_dataset *calib, const kn_dataset *val,
                               const kn_quant_options *o, double max_drop_points, kn_mixed_plan *plan) {
    memset(plan, 0, sizeof *plan);
    if (!val)
        return kn_fail(KILN_ERR_INVALID_ARG, "--max-drop needs validation data (--val DATA)");
    if (!(max_drop_points >= 0))
        return kn_fail(KILN_ERR_INVALID_ARG, "--max-drop %g: a number of accuracy points >= 0", max_drop_points);
    mixed_ctx c = {.calib = calib, .val = val, .options = *o, .loss = {.kind = KN_LOSS_CE, .reduction = KN_REDUCTION_MEAN}};
    kn_quant_layer *layers = NULL;
    int n = 0;
    kiln_status st = kn_quant_layers_find(g, &layers, &n);
    if (st == KILN_OK)
        st = plan_alloc(plan, n);
    for (int l = 0; l < n && st == KILN_OK; l++) {
        snprintf(plan->names[l], sizeof plan->names[l], "%s", g->nodes[layers[l].node].name);
        plan->params[l] = kn_shape_numel(&g->values[layers[l].weight].shape);
    }
    free(layers);
    if (st == KILN_OK)
        st = kn_kiln_save_buffer(g, NULL, 0, &c.bytes, &c.size);
    if (st == KILN_OK)
        st = accuracy_with(&c, NULL, false, &plan->base_accuracy);
    if (st == KILN_OK)
        st = measure_sensitivity(&c, plan);
    if (st == KILN_OK)
        st = choose_bits(&c, plan, max_drop_points);
    plan->evaluations = c.evaluations;
    free(c.bytes);
    if (st != KILN_OK)
        kn_mixed_plan_free(plan);
    return st;
}

void kn_mixed_plan_print(FILE *out, const kn_mixed_plan *p, double budget) {
    fprintf(out, "per-layer sensitivity: accuracy drop (points) with only this layer's weights quantized\n");
    fprintf(out, "%-24s %10s %8s %8s %8s   %s\n", "layer", "weights", "8-bit", "4-bit", "2-bit", "chosen");
    for (int l = 0; l < p->n_layers; l++) {
        char chosen[16] = "f32";
        if (p->bits[l])
            snprintf(chosen, sizeof chosen, "%d-bit", p->bits[l]);
        const char *note = p->drop[l][0] > budget ? "  <- breaks at 8 bits: kept in f32"
                           : p->drop[l][1] > budget ? "  <- breaks at 4 bits"
                                                    : "";
        fprintf(out, "%-24.24s %10lld %8.2f %8.2f %8.2f   %s%s\n", p->names[l], (long long)p->params[l], p->drop[l][0],
                p->drop[l][1], p->drop[l][2], chosen, note);
    }
    fprintf(out, "accuracy %.2f%% in f32, %.2f%% with these bits (drop %.2f pt, budget %.2f; %d evaluations)\n",
            p->base_accuracy, p->accuracy, p->base_accuracy - p->accuracy, budget, p->evaluations);
}

void kn_mixed_plan_print_json(FILE *out, const kn_mixed_plan *p) {
    fprintf(out, "{\"base_accuracy\":%.4f,\"accuracy\":%.4f,\"evaluations\":%d,\"layers\":[", p->base_accuracy,
            p->accuracy, p->evaluations);
    for (int l = 0; l < p->n_layers; l++) {
        fprintf(out, "%s{\"layer\":", l ? "," : "");
        kn_quant_json_string(out, p->names[l]);
        fprintf(out, ",\"weights\":%lld,\"drop_8\":%.4f,\"drop_4\":%.4f,\"drop_2\":%.4f,\"bits\":%d}",
                (long long)p->params[l], p->drop[l][0], p->drop[l][1], p->drop[l][2], p->bits[l]);
    }
    fprintf(out, "]}");
}
