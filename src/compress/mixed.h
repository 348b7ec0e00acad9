/* Mixed precision under an accuracy budget: which weight bits each layer gets so that accuracy on
 * validation data drops at most a given number of points, with the smallest weights.
 *
 * 1. Sensitivity: each layer alone has its weights quantized to 8, 4 and 2 bits (the others f32, no
 *    activation quantization) and the model is evaluated: drop[layer][bits], in points.
 * 2. Start: each layer at the fewest bits whose drop alone is at most half the budget; a layer whose
 *    drop exceeds the whole budget even at 8 bits "breaks" and starts in f32.
 * 3. While the whole configuration (with 8-bit activations unless weights only) drops more than the
 *    budget: the layer whose current width costs the most accuracy alone goes up one step (2 -> 4 ->
 *    8 -> f32), and the model is evaluated again.
 * Each evaluation quantizes a copy of the model (through the .kiln bytes), so g is not changed.
 */
#ifndef KN_COMPRESS_MIXED_H
#define KN_COMPRESS_MIXED_H

#include "compress/quantize.h"

enum { KN_MIXED_WIDTHS = 3 }; /* 8, 4, 2 */

typedef struct kn_mixed_plan {
    int n_layers;
    char (*names)[96];            /* (n_layers) node names */
    int64_t *params;              /* (n_layers) weight elements */
    double (*drop)[KN_MIXED_WIDTHS]; /* (n_layers) accuracy drop in points, alone at 8, 4, 2 bits */
    int *bits;                    /* (n_layers) the chosen weight bits, 0 = f32: kn_quant_options.layer_bits */
    double base_accuracy, accuracy; /* f32, and with the chosen bits */
    int evaluations;
} kn_mixed_plan;

kiln_status kn_mixed_plan_make(const kn_graph *g, const kn_dataset *calib, const kn_dataset *val,
                               const kn_quant_options *o, double max_drop_points, kn_mixed_plan *plan);
void kn_mixed_plan_free(kn_mixed_plan *plan);
/* The sensitivity table, the chosen bits, and the layers that break at 8 bits or at 4. */
void kn_mixed_plan_print(FILE *out, const kn_mixed_plan *plan, double max_drop_points);
/* The same as {"base_accuracy":..., "accuracy":..., "layers":[{"layer":..., "drop_8":..., "bits":...}]}
 * (accuracies in percent, 0 bits = f32). */
void kn_mixed_plan_print_json(FILE *out, const kn_mixed_plan *plan);

#endif
