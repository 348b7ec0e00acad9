/* include/kiln/train.h over the trainer, the data loaders and the model files. */
#include "train/api.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/status.h"
#include "core/threads.h"
#include "format/kiln_file.h"
#include "runtime/runtime.h"
#include "train/evaluate.h"
#include "train/spec.h"
#include "train/trainer.h"
#ifdef KILN_HAVE_ONNX
#include "format/onnx/onnx_export.h"
#include "format/onnx/onnx_import.h"
#endif

static bool has_suffix(const char *path, const char *suffix) {
    size_t n = strlen(path), k = strlen(suffix);
    return n >= k && strcasecmp(path + n - k, suffix) == 0;
}

kiln_status kn_graph_load_path(const char *path, uint64_t seed, kn_graph *g, kn_named_tensor **extras,
                               int *n_extras) {
    if (extras) {
        *extras = NULL;
        *n_extras = 0;
    }
    kiln_status st;
    if (has_suffix(path, ".kiln") || has_suffix(path, ".ckpt")) {
        st = kn_kiln_load(path, KN_KILN_LOAD_COPY, g, extras, n_extras);
    } else if (has_suffix(path, ".onnx")) {
#ifdef KILN_HAVE_ONNX
        st = kn_onnx_import_for_training(path, g);
#else
        kn_graph_init(g);
        st = kn_fail(KILN_ERR_UNSUPPORTED, "%s: this kiln was built without ONNX support (it needs protobuf-c; "
                     "see README)", path);
#endif
    } else {
        st = kn_spec_load(path, seed, g);
    }
    /* Every loader initialises g first; some leave a partial graph behind on failure. */
    if (st != KILN_OK)
        kn_graph_free(g);
    return st;
}

kiln_status kn_graph_save_path(const kn_graph *g, const char *path) {
    if (has_suffix(path, ".kiln"))
        return kn_kiln_save(path, g, NULL, 0);
    if (has_suffix(path, ".onnx")) {
#ifdef KILN_HAVE_ONNX
        return kn_onnx_export_file(g, path);
#else
        return kn_fail(KILN_ERR_UNSUPPORTED, "%s: this kiln was built without ONNX support", path);
#endif
    }
    return kn_fail(KILN_ERR_INVALID_ARG, "%s: the output must end in .kiln or .onnx", path);
}

kiln_status kiln_graph_load(const char *path, uint64_t seed, kiln_graph **graph) {
    if (!path || !graph)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_graph_load: NULL argument");
    *graph = NULL;
    kiln_graph *net = calloc(1, sizeof *net);
    if (!net)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for a graph");
    kiln_status st = kn_graph_load_path(path, seed, &net->g, NULL, NULL);
    if (st != KILN_OK) {
        free(net);
        return st;
    }
    *graph = net;
    return KILN_OK;
}

kiln_status kiln_graph_save(const kiln_graph *graph, const char *path) {
    if (!graph || !path)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_graph_save: NULL argument");
    return kn_graph_save_path(&graph->g, path);
}

void kiln_graph_free(kiln_graph *graph) {
    if (!graph)
        return;
    kn_graph_free(&graph->g);
    free(graph);
}

kiln_status kiln_graph_to_model(const kiln_graph *graph, kiln_model **model) {
    if (!graph || !model)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_graph_to_model: NULL argument");
    /* The model gets its own copy, through the file format, so the graph stays the caller's to change. */
    void *buf = NULL;
    size_t size = 0;
    KN_TRY(kn_kiln_save_buffer(&graph->g, NULL, 0, &buf, &size));
    kiln_status st = kiln_model_load_memory(buf, size, model);
    free(buf);
    return st;
}

kiln_status kiln_model_load_onnx(const char *path, kiln_model **model) {
    if (!path || !model)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_model_load_onnx: NULL argument");
    *model = NULL;
#ifdef KILN_HAVE_ONNX
    kn_graph g;
    kiln_status st = kn_onnx_import_file(path, &g);
    if (st != KILN_OK) {
        kn_graph_free(&g);
        return st;
    }
    st = kn_model_from_graph(&g, model);
    if (st != KILN_OK)
        kn_error_prefix("%s: ", path);
    return st;
#else
    return kn_fail(KILN_ERR_UNSUPPORTED, "%s: this kiln was built without ONNX support", path);
#endif
}

int64_t kiln_graph_param_count(const kiln_graph *graph) { return graph ? kn_graph_param_count(&graph->g) : 0; }

kiln_status kiln_dataset_load(const char *data, const kiln_graph *graph, kiln_dataset **dataset) {
    if (!data || !dataset)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_dataset_load: NULL argument");
    *dataset = NULL;
    kn_data_options options = graph ? kn_data_options_for_model(&graph->g) : (kn_data_options){.quiet = true};
    kiln_dataset *ds = calloc(1, sizeof *ds);
    if (!ds)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for a dataset");
    kiln_status st = kn_dataset_load(data, &options, &ds->d);
    if (st != KILN_OK) {
        free(ds);
        return st;
    }
    *dataset = ds;
    return KILN_OK;
}

int64_t kiln_dataset_count(const kiln_dataset *dataset) { return dataset ? dataset->d.count : 0; }

void kiln_dataset_free(kiln_dataset *dataset) {
    if (!dataset)
        return;
    kn_dataset_free(&dataset->d);
    free(dataset);
}

kiln_train_config kiln_train_config_default(void) {
    return (kiln_train_config){.epochs = 5, .batch = 64, .optimizer = "adam", .loss = "ce", .seed = 1};
}

kiln_status kn_train_options_from_config(const kiln_train_config *c, kn_train_options *o) {
    memset(o, 0, sizeof *o);
    kn_optim_kind optim;
    KN_TRY(kn_optim_parse(c->optimizer ? c->optimizer : "adam", &optim));
    o->optim = kn_optim_defaults(optim);
    if (c->lr > 0) {
        o->optim.lr = c->lr;
        o->optim.relative_step = false;
    }
    o->optim.momentum = c->momentum;
    o->optim.weight_decay = c->weight_decay;
    KN_TRY(kn_loss_parse(c->loss ? c->loss : "ce", &o->loss.kind));
    o->loss.reduction = KN_REDUCTION_MEAN;
    o->epochs = c->epochs;
    o->batch = c->batch;
    o->seed = c->seed;
    o->checkpoint_path = c->checkpoint;
    o->log_path = c->log;
    return kn_augment_parse(c->augment, &o->augment);
}

kiln_status kiln_train(kiln_graph *graph, const kiln_dataset *train, const kiln_dataset *val,
                       const kiln_train_config *config, kiln_metrics *final) {
    if (!graph || !train || !config)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_train: NULL argument");
    kn_train_options o;
    KN_TRY(kn_train_options_from_config(config, &o));
    if (config->threads > 0)
        kn_threads_set(config->threads);
    kn_train_result r;
    KN_TRY(kn_train(&graph->g, &train->d, val ? &val->d : NULL, &o, NULL, 0, &r));
    if (final) {
        final->count = val ? val->d.count : train->d.count;
        final->loss = r.has_val ? r.val_loss : r.train_loss;
        final->accuracy = r.has_val ? r.val_accuracy : r.train_accuracy;
    }
    return KILN_OK;
}

kiln_status kiln_evaluate(kiln_graph *graph, const kiln_dataset *dataset, int64_t batch, kiln_metrics *metrics) {
    if (!graph || !dataset || !metrics)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_evaluate: NULL argument");
    kn_loss loss;
    KN_TRY(kn_loss_of_model(&graph->g, &loss));
    kn_eval_result r;
    KN_TRY(kn_evaluate(&graph->g, &dataset->d, &loss, batch > 0 ? batch : 256, &r));
    metrics->count = r.count;
    metrics->loss = r.loss;
    metrics->accuracy = r.accuracy;
    kn_eval_result_free(&r);
    return KILN_OK;
}
