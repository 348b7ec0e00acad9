#include "support/runtime_models.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/threads.h"
#include "runtime/runtime.h"
#include "train/spec.h"
#include "train/tape.h"

static void fill_range(kn_value *v, kn_rng *rng, float lo, float hi) {
    float *p = v->data;
    for (int64_t i = 0; i < kn_shape_numel(&v->shape); i++)
        p[i] = lo + (hi - lo) * kn_rng_uniform(rng);
}

static void randomize_batchnorms(kn_graph *g, uint64_t seed) {
    kn_rng rng = kn_rng_seeded(seed ^ 0xb47c4u);
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        if (strcmp(n->op->name, "BatchNormalization") != 0)
            continue;
        fill_range(&g->values[n->in[1]], &rng, 0.5f, 1.5f);  // scale
        fill_range(&g->values[n->in[2]], &rng, -0.5f, 0.5f); // shift
        fill_range(&g->values[n->in[3]], &rng, -0.5f, 0.5f); // running mean
        fill_range(&g->values[n->in[4]], &rng, 0.5f, 2.0f);  // running variance
    }
}

kiln_status rt_spec_file(const char *file, uint64_t seed, kn_graph *g) {
    char path[512];
    snprintf(path, sizeof path, "%s/examples/specs/%s", KILN_SOURCE_DIR, file);
    kiln_status st = kn_spec_load(path, seed, g);
    if (st == KILN_OK)
        randomize_batchnorms(g, seed);
    return st;
}

kiln_status rt_spec_text(const char *text, uint64_t seed, kn_graph *g) {
    kiln_status st = kn_spec_parse(text, "test spec", seed, g);
    if (st == KILN_OK)
        randomize_batchnorms(g, seed);
    return st;
}

int64_t rt_sample_numel(const kn_graph *g) {
    const kn_shape *s = &g->values[g->inputs[0]].shape;
    return kn_shape_span(s, 1, s->ndim);
}

void rt_fill(float *x, int64_t n, uint64_t seed) {
    kn_rng rng = kn_rng_seeded(seed);
    for (int64_t i = 0; i < n; i++)
        x[i] = 2.0f * kn_rng_uniform(&rng) - 1.0f;
}

kiln_status rt_tape_forward(kn_graph *g, int64_t batch, const float *x, float **y, int64_t *numel) {
    *y = NULL;
    kn_tape tape;
    kiln_status st = kn_tape_init(&tape, g, batch, false);
    if (st != KILN_OK)
        return st;
    kn_tensor *in = kn_tape_input(&tape, 0);
    memcpy(in->data, x, sizeof(float) * (size_t)kn_numel(in));
    st = kn_tape_forward(&tape, false);
    if (st == KILN_OK) {
        const kn_tensor *out = kn_tape_output(&tape, 0);
        *numel = kn_numel(out);
        *y = malloc(sizeof(float) * (size_t)*numel);
        if (*y)
            memcpy(*y, out->data, sizeof(float) * (size_t)*numel);
        else
            st = KILN_ERR_NOMEM;
    }
    kn_tape_free(&tape);
    return st;
}

kiln_session *rt_session_new(const kiln_model *model, bool optimize, int threads, bool profiling) {
    kiln_session_options *o = kiln_session_options_create();
    kiln_session *s = NULL;
    kiln_status st = o ? KILN_OK : KILN_ERR_NOMEM;
    if (st == KILN_OK)
        st = kiln_session_options_set_optimize(o, optimize);
    if (st == KILN_OK)
        st = kiln_session_options_set_threads(o, threads);
    if (st == KILN_OK)
        st = kiln_session_options_set_profiling(o, profiling);
    if (st == KILN_OK)
        st = kiln_session_create(model, o, &s);
    kiln_session_options_free(o);
    if (st != KILN_OK)
        fprintf(stderr, "creating a session: %s\n", kiln_last_error());
    return s;
}

kiln_status rt_session_resize_batch(kiln_session *s, int64_t batch) {
    int ndim;
    int64_t dims[KILN_MAX_DIMS];
    kiln_status st = kiln_session_input_shape(s, 0, &ndim, dims);
    if (st != KILN_OK)
        return st;
    dims[0] = batch;
    return kiln_session_resize_input(s, 0, ndim, dims);
}

const float *rt_session_forward(kiln_session *s, int64_t batch, const float *x, int64_t sample,
                               int64_t *numel) {
    const void *y = NULL;
    size_t bytes = 0;
    kiln_status st = rt_session_resize_batch(s, batch);
    if (st == KILN_OK)
        st = kiln_session_set_input(s, 0, KILN_DTYPE_F32, x, sizeof(float) * (size_t)(batch * sample));
    if (st == KILN_OK)
        st = kiln_session_run(s);
    if (st == KILN_OK)
        st = kiln_session_output(s, 0, &y, &bytes);
    if (st != KILN_OK)
        fprintf(stderr, "running a session at batch %lld: %s\n", (long long)batch, kiln_last_error());
    *numel = (int64_t)(bytes / sizeof(float));
    return st == KILN_OK ? y : NULL;
}

double rt_max_diff(const float *a, const float *b, int64_t n) {
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > worst || isnan(d))
            worst = isnan(d) ? INFINITY : d;
    }
    return worst;
}

double rt_max_abs(const float *a, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fmax(m, fabs((double)a[i]));
    return m;
}

/* One batch size: the tape, then both sessions, on the same input. */
static kiln_status compare_batch(kn_graph *ref, kiln_session *saved, kiln_session *optimized, int64_t batch,
                                 uint64_t seed, rt_batch_result *r) {
    int64_t sample = rt_sample_numel(ref), n_ref = 0, n_saved = 0, n_optimized = 0;
    float *x = malloc(sizeof(float) * (size_t)(batch * sample)), *y_ref = NULL;
    if (!x)
        return KILN_ERR_NOMEM;
    rt_fill(x, batch * sample, seed + (uint64_t)batch);
    kn_threads_set(2);
    kiln_status st = rt_tape_forward(ref, batch, x, &y_ref, &n_ref);
    const float *y_saved = st == KILN_OK ? rt_session_forward(saved, batch, x, sample, &n_saved) : NULL;
    const float *y_optimized = y_saved ? rt_session_forward(optimized, batch, x, sample, &n_optimized) : NULL;
    if (st == KILN_OK && (!y_optimized || n_saved != n_ref || n_optimized != n_ref))
        st = KILN_ERR_INTERNAL;
    if (st == KILN_OK) {
        *r = (rt_batch_result){.batch = batch,
                               .scale = rt_max_abs(y_ref, n_ref),
                               .diff_saved = rt_max_diff(y_saved, y_ref, n_ref),
                               .diff_optimized = rt_max_diff(y_optimized, y_ref, n_ref)};
    }
    free(x);
    free(y_ref);
    return st;
}

kiln_status rt_spec_vs_tape(const char *label, const char *file, const char *text, rt_spec_report *report) {
    const uint64_t seed = 11;
    static const int64_t batches[3] = {1, 7, 64};
    memset(report, 0, sizeof *report);
    kn_graph ref, g;
    kiln_model *model = NULL;
    kiln_session *saved = NULL, *optimized = NULL;
    kiln_status st = file ? rt_spec_file(file, seed, &ref) : rt_spec_text(text, seed, &ref);
    if (st != KILN_OK) {
        fprintf(stderr, "%s: %s\n", label, kiln_last_error());
        return st;
    }
    st = file ? rt_spec_file(file, seed, &g) : rt_spec_text(text, seed, &g);
    if (st == KILN_OK)
        st = kn_model_from_graph(&g, &model);
    if (st == KILN_OK) {
        report->stats = *kn_model_opt_stats(model);
        const kn_opt_stats *o = &report->stats;
        printf("%s: optimizer %d -> %d nodes (dead %d, identity/dropout %d, folded %d, batchnorm %d, bias %d, "
               "activation %d)\n",
               label, o->nodes_before, o->nodes_after, o->dead_removed, o->identities_removed, o->nodes_folded,
               o->batchnorms_folded, o->biases_fused, o->activations_fused);
        saved = rt_session_new(model, false, 2, false);
        optimized = rt_session_new(model, true, 2, false);
        st = saved && optimized ? KILN_OK : KILN_ERR_INTERNAL;
    }
    for (int b = 0; b < 3 && st == KILN_OK; b++) {
        rt_batch_result *r = &report->runs[b];
        st = compare_batch(&ref, saved, optimized, batches[b], seed, r);
        if (st == KILN_OK)
            printf("%s batch %2lld: |tape| %.3g, as saved max diff %.3g, optimized max diff %.3g "
                   "(%.2g relative)\n",
                   label, (long long)r->batch, r->scale, r->diff_saved, r->diff_optimized,
                   r->diff_optimized / r->scale);
    }
    if (st != KILN_OK)
        fprintf(stderr, "%s: %s\n", label, kiln_last_error());
    report->plans = saved ? kn_session_plan_count(saved) : 0;
    kiln_session_free(saved);
    kiln_session_free(optimized);
    kiln_model_free(model);
    kn_graph_free(&ref);
    return st;
}
