/* Finite-difference gradient checks for one op.
 *
 * Build a graph with kn_graph_add_value (every input as KN_VALUE_PARAM so it holds data) and one node,
 * fill the inputs (opcheck_fill_uniform), then call opcheck_gradients: it runs the op forward, sets
 * the loss L = sum(out * r) for a fixed random r, runs backward, and compares each requested input's
 * gradient with central differences (L(x + eps) - L(x - eps)) / 2 eps in double precision.
 */
#ifndef KILN_TEST_OPCHECK_H
#define KILN_TEST_OPCHECK_H

#include <stdbool.h>

#include "core/graph.h"

typedef struct opcheck_options {
    double eps;          /* finite-difference step; default 1e-3 */
    double atol, rtol;   /* |analytic - numeric| <= atol + rtol * |numeric|; default 1e-2 both */
    int max_elements;    /* elements checked per input (evenly spread); default 64 */
    bool training;       /* run the op in training mode */
    unsigned grad_mask;  /* bit i: check input i; 0 means every float PARAM input */
} opcheck_options;

/* Fills every PARAM value of kind f32 with uniform numbers in [lo, hi), from `seed`. */
void opcheck_fill_uniform(kn_graph *g, unsigned long long seed, float lo, float hi);

/* Returns the largest |analytic - numeric| / (atol + rtol * |numeric|) seen: <= 1 passes. Prints one
 * line per input with the max abs difference. Returns a negative number when the op failed to run. */
double opcheck_gradients(kn_graph *g, int node, const opcheck_options *options);

/* Runs the graph's single node forward; outputs land in buffers owned by the returned array of
 * tensors (out[i].data malloc'd; free with opcheck_free_outputs). NULL on failure. */
kn_tensor *opcheck_forward(kn_graph *g, int node, bool training);
void opcheck_free_outputs(kn_tensor *outs, int n);

#endif
