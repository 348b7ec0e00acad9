/* The runtime's internal side of include/kiln/kiln.h: how kiln's own tools and tests reach the graphs
 * behind the opaque model and session handles. */
#ifndef KN_RUNTIME_H
#define KN_RUNTIME_H

#include "core/graph.h"
#include "kiln/kiln.h"
#include "runtime/optimize.h"

/* Makes a model of graph g (from the spec parser, ONNX import ...), taking over its contents: g is left
 * empty (kn_graph_init) whether or not this succeeds. The graph is optimized here; the model keeps both
 * graphs. Ownership of *model as for kiln_model_load_file. */
kiln_status kn_model_from_graph(kn_graph *g, kiln_model **model);

/* The graph as loaded, or its optimized copy; owned by the model. Their activation shapes are those of
 * the last shape inference on them and are not a session's: sessions infer on their own copies. */
const kn_graph *kn_model_graph(const kiln_model *model, bool optimized);
const kn_opt_stats *kn_model_opt_stats(const kiln_model *model);

/* Takes one more reference (a session does); kiln_model_free drops one. */
void kn_model_retain(const kiln_model *model);

/* The session's graph view: the model graph it runs, with the shapes of its current inputs
 * (planning first if a resize is pending). NULL when planning fails. */
const kn_graph *kn_session_graph(kiln_session *session);

/* What tests check to see that runs allocate nothing: the arena and the op scratch the plan made, and
 * how many times the session has planned. */
const void *kn_session_arena(const kiln_session *session);
const void *kn_session_scratch(const kiln_session *session);
int kn_session_plan_count(const kiln_session *session);
/* How many first nodes the current plan runs a few images at a time (session.c, batches split); 0 when
 * the batch runs whole. */
int kn_session_split_nodes(const kiln_session *session);

/* Whether the session's shapes follow the values of some inputs (a Reshape target given as an input):
 * known once a plan was tried (kiln_session_memory, an output getter). */
bool kn_session_shapes_from_values(const kiln_session *session);

/* What the planned shape of output `index` says before a run: KN_OUTPUT_PLANNED, its shape at the
 * current inputs; KN_OUTPUT_RUN_MAY_CHANGE, an op before it sizes its output when it runs (NonZero ...)
 * and the shape is that op's bound; KN_OUTPUT_AFTER_RUN, it follows values the run computes: its shape
 * and dtype are known after a run. Plans first, as the output getters do. */
typedef enum kn_output_shaping { KN_OUTPUT_PLANNED, KN_OUTPUT_RUN_MAY_CHANGE, KN_OUTPUT_AFTER_RUN } kn_output_shaping;
kn_output_shaping kn_session_output_shaping(kiln_session *session, int index);

/* Every input of s at `batch` (its first dimension; other open dimensions stay at 1), filled with
 * seeded uniform [0, 1) floats (integer and bool inputs with zeros, valid indices for any Gather). A
 * scalar input, which has no batch dimension, is an error. */
kiln_status kn_session_fill_uniform(kiln_session *s, int64_t batch);
/* Sorts v (n values) ascending and returns its median (0 for none). */
double kn_sort_median(double *v, int64_t n);

#endif
