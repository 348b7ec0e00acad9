/* The memory planner: places every buffer a graph run needs (its inputs and the activations its nodes
 * write) at an offset in ONE arena, for the graph's current shapes.
 *
 * Each buffer lives from the node that writes it to the last node that reads it; inputs and graph
 * outputs live for the whole run (the caller writes the one before and reads the other after). Buffers
 * whose lifetimes do not overlap may share memory: they are placed largest first, each into the
 * smallest gap that fits among the buffers already placed that are alive at the same time (greedy
 * best fit), else past them. Optionally an elementwise unary op (Relu, Sigmoid ... Dropout) writes its
 * output over its input when the input dies at that node. Offsets are multiples of 64 bytes.
 */
#ifndef KN_PLAN_H
#define KN_PLAN_H

#include <stddef.h>

#include "core/align.h"
#include "core/graph.h"

enum { KN_PLAN_ALIGN = KN_ALIGN };

typedef struct kn_plan {
    int n_values;
    int64_t *offset;      /* (n_values) byte offset into the arena; -1 for values without a buffer
                           * (initializers, constants, values no node writes) */
    size_t arena_bytes;   /* the arena size the offsets need: the plan's peak */
    size_t naive_bytes;   /* one buffer per value, no reuse (same 64-byte rounding) */
    int n_buffers;        /* distinct buffers placed */
    int n_in_place;       /* values written over their input */
} kn_plan;

/* Plans g at its current (inferred) shapes. min_bytes (n_values), when not NULL, gives each value's
 * buffer at least that many bytes: the upper bound of an output sized when its op runs
 * (kn_op.sizes_at_run), whose value holds the smaller shape of the last run. Free with kn_plan_free. */
kiln_status kn_plan_make(const kn_graph *g, bool in_place, const size_t *min_bytes, kn_plan *plan);
/* kn_plan_make where each value v with whole_run[v] (n_values, or NULL for none) lives for the whole
 * run, like an input, so that no other buffer shares its memory: a session that runs the first nodes a
 * few images at a time keeps there what the later nodes read (runtime/session.c). */
kiln_status kn_plan_make_keeping(const kn_graph *g, bool in_place, const size_t *min_bytes, const bool *whole_run,
                                 kn_plan *plan);
void kn_plan_free(kn_plan *plan);

#endif
