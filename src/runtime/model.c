/* Models: a loaded graph and its inference-optimized copy, immutable once made, shared by sessions
 * through a reference count. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "format/kiln_file.h"
#include "runtime/runtime.h"

struct kiln_model {
    kn_graph source;    /* as loaded: owns the file mapping and the weights */
    kn_graph optimized; /* shares the weights no pass changed with source */
    kn_opt_stats stats;
    atomic_int refs;
};

static void model_destroy(kiln_model *m) {
    kn_graph_free(&m->optimized);
    kn_graph_free(&m->source);
    free(m);
}

kiln_status kn_model_from_graph(kn_graph *g, kiln_model **model) {
    *model = NULL;
    kiln_model *m = calloc(1, sizeof *m);
    if (!m) {
        kn_graph_free(g);
        return kn_fail(KILN_ERR_NOMEM, "out of memory creating a model");
    }
    m->source = *g;
    kn_graph_init(g);
    atomic_init(&m->refs, 1);
    if (m->source.n_outputs < 1) {
        model_destroy(m);
        return kn_fail(KILN_ERR_INVALID_ARG, "the model has no outputs");
    }
    kiln_status st = kn_graph_optimize(&m->source, KN_OPT_ALL, &m->optimized, &m->stats);
    if (st != KILN_OK) {
        model_destroy(m);
        return st;
    }
    *model = m;
    return KILN_OK;
}

kiln_status kiln_model_load_file(const char *path, kiln_model **model) {
    if (!model)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_model_load_file: model is NULL");
    *model = NULL;
    if (!path)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_model_load_file: path is NULL");
    kn_graph g;
    KN_TRY(kn_kiln_load(path, KN_KILN_LOAD_PACKED, &g, NULL, NULL));
    kiln_status st = kn_model_from_graph(&g, model);
    if (st != KILN_OK)
        kn_error_prefix("%s: ", path);
    return st;
}

kiln_status kiln_model_load_memory(const void *data, size_t size, kiln_model **model) {
    if (!model)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_model_load_memory: model is NULL");
    *model = NULL;
    if (!data)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_model_load_memory: data is NULL");
    kn_graph g;
    KN_TRY(kn_kiln_load_buffer_packed(data, size, &g));
    return kn_model_from_graph(&g, model);
}

void kn_model_retain(const kiln_model *model) {
    // The count is the one mutable part of a model; models are always allocated writable.
    atomic_fetch_add(&((kiln_model *)model)->refs, 1);
}

void kiln_model_free(kiln_model *model) {
    if (model && atomic_fetch_sub(&model->refs, 1) == 1)
        model_destroy(model);
}

const kn_graph *kn_model_graph(const kiln_model *model, bool optimized) {
    return optimized ? &model->optimized : &model->source;
}

const kn_opt_stats *kn_model_opt_stats(const kiln_model *model) { return &model->stats; }

int kiln_model_class_count(const kiln_model *model) {
    return model && model->source.class_names ? model->source.n_classes : 0;
}

const char *kiln_model_class_name(const kiln_model *model, int index) {
    if (index < 0 || index >= kiln_model_class_count(model)) {
        kn_fail(KILN_ERR_INVALID_ARG, "class %d does not exist (the model has %d class names)", index,
                kiln_model_class_count(model));
        return NULL;
    }
    return model->source.class_names[index];
}

int64_t kiln_model_input_norm(const kiln_model *model, const float **mean, const float **std) {
    bool has = model && model->source.input_mean && model->source.input_std;
    if (mean)
        *mean = has ? model->source.input_mean : NULL;
    if (std)
        *std = has ? model->source.input_std : NULL;
    return has ? model->source.n_norm : 0;
}

const char *kiln_model_metadata(const kiln_model *model, const char *key) {
    return model && key ? kn_graph_meta(&model->source, key) : NULL;
}

int64_t kiln_model_param_count(const kiln_model *model) {
    return model ? kn_graph_param_count(&model->source) : 0;
}
