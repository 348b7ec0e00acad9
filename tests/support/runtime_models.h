/* Models and references for the runtime tests: graphs from model specs with BatchNorm statistics that
 * are not the identity (so folding them is tested for real), seeded inputs, the training tape's
 * inference forward as the reference the runtime must reproduce, and sessions to run them. Nothing
 * here asserts (check.h counts per test file): callers check what these return. */
#ifndef KILN_TEST_RUNTIME_MODELS_H
#define KILN_TEST_RUNTIME_MODELS_H

#include <stdint.h>

#include "core/graph.h"
#include "kiln/kiln.h"
#include "runtime/optimize.h"

/* A spec from examples/specs/ (file "fmnist_cnn.txt") or given as text, parsed with `seed`, with every
 * BatchNormalization's scale, shift, running mean and variance drawn from the same seed. */
kiln_status rt_spec_file(const char *file, uint64_t seed, kn_graph *g);
kiln_status rt_spec_text(const char *text, uint64_t seed, kn_graph *g);

/* Elements of one sample of graph input 0 (its shape without the batch dimension). */
int64_t rt_sample_numel(const kn_graph *g);

/* n values uniform in [-1, 1) from `seed`. */
void rt_fill(float *x, int64_t n, uint64_t seed);

/* Output 0 of graph g on input x of `batch` samples, by the training tape in inference mode: a malloc'd
 * copy in *y of *numel floats. g's shapes are left set for `batch`. */
kiln_status rt_tape_forward(kn_graph *g, int64_t batch, const float *x, float **y, int64_t *numel);

/* A session of `model` with these options; NULL (with the error printed) on failure. */
kiln_session *rt_session_new(const kiln_model *model, bool optimize, int threads, bool profiling);

/* Sets the batch dimension of input 0. */
kiln_status rt_session_resize_batch(kiln_session *s, int64_t batch);

/* Runs s on `batch` samples of x (sample floats each); returns output 0 (owned by the session) and
 * its float count, or NULL with the error printed. */
const float *rt_session_forward(kiln_session *s, int64_t batch, const float *x, int64_t sample,
                               int64_t *numel);

/* One batch size of rt_spec_vs_tape: the tape output's largest magnitude and the max differences of the
 * graph as saved and of the optimized graph from it. */
typedef struct rt_batch_result {
    int64_t batch;
    double scale, diff_saved, diff_optimized;
} rt_batch_result;

typedef struct rt_spec_report {
    kn_opt_stats stats;
    int plans;                 /* memory plans the unoptimized session made */
    rt_batch_result runs[3];
} rt_spec_report;

/* A spec (file as for rt_spec_file, else text) run at batch 1, 7 and 64 by the training tape in inference
 * mode and, on 2 threads, by one unoptimized and one optimized session (each resized from batch to batch),
 * on the same seeded inputs. Prints a line per batch; an error (with its message printed) stops it. */
kiln_status rt_spec_vs_tape(const char *label, const char *file, const char *text, rt_spec_report *report);

double rt_max_diff(const float *a, const float *b, int64_t n);
double rt_max_abs(const float *a, int64_t n);

#endif
