/* kiln — public training API: an editable model (kiln_graph), data (kiln_dataset), training and
 * evaluation. include/kiln/compress.h builds pruning, quantization and distillation on these handles.
 *
 *     kiln_graph *net;
 *     kiln_dataset *train, *test;
 *     kiln_graph_load("examples/specs/fmnist_cnn.txt", 1, &net);      // a spec, .kiln or .onnx
 *     kiln_dataset_load("fashion-mnist", net, &train);
 *     kiln_dataset_load("fashion-mnist:test", net, &test);
 *     kiln_train_config config = kiln_train_config_default();
 *     config.epochs = 5;
 *     kiln_train(net, train, test, &config, NULL);
 *     kiln_graph_save(net, "cnn.kiln");                                // or "cnn.onnx"
 *
 * Errors and ownership as in kiln.h: every function that can fail returns a kiln_status and leaves a
 * message in kiln_last_error(); handles are opaque and freed by their own _free function (NULL is fine).
 * A kiln_graph is changed in place by training and compression, and used by one thread at a time.
 */
#ifndef KILN_TRAIN_H
#define KILN_TRAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "kiln/kiln.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_graph kiln_graph;
typedef struct kiln_dataset kiln_dataset;

/* Loads a model to train or compress: a spec (.txt, fresh parameters from `seed`), a .kiln model or
 * checkpoint, or an .onnx model (its float weights become trainable). *graph is the caller's. */
KILN_API kiln_status kiln_graph_load(const char *path, uint64_t seed, kiln_graph **graph);
/* Writes the model by the extension of `path`: .kiln or .onnx (atomically: a failure leaves no file). */
KILN_API kiln_status kiln_graph_save(const kiln_graph *graph, const char *path);
KILN_API void kiln_graph_free(kiln_graph *graph);
/* A runnable model (kiln.h) of the graph as it is now; the graph is unchanged. *model is the caller's. */
KILN_API kiln_status kiln_graph_to_model(const kiln_graph *graph, kiln_model **model);
/* Loads an .onnx model to run (kiln.h), as `kiln run` does: constant subgraphs folded, nothing made
 * trainable. Its inputs keep the model's dims: a fixed dim stays fixed, a symbolic one (dim_param or
 * none) is open and starts at 1 in a session. KILN_ERR_UNSUPPORTED when kiln was built without ONNX.
 * *model is the caller's (kiln_model_free); NULL on failure. */
KILN_API kiln_status kiln_model_load_onnx(const char *path, kiln_model **model);
KILN_API int64_t kiln_graph_param_count(const kiln_graph *graph);

/* Loads DATA (fashion-mnist, fashion-mnist:test, an IDX, CSV or X.npy,Y.npy path; docs/data.md) the way
 * `graph` expects it: with its input standardisation and class names when it has them (graph may be
 * NULL). *dataset is the caller's. */
KILN_API kiln_status kiln_dataset_load(const char *data, const kiln_graph *graph, kiln_dataset **dataset);
KILN_API int64_t kiln_dataset_count(const kiln_dataset *dataset);
KILN_API void kiln_dataset_free(kiln_dataset *dataset);

typedef struct kiln_train_config {
    int64_t epochs;          /* default 5 */
    int64_t batch;           /* default 64 */
    const char *optimizer;   /* sgd|adam|adamw|adagrad|adafactor, default adam */
    float lr;                /* <= 0: the optimizer's default */
    float momentum;          /* sgd */
    float weight_decay;
    const char *loss;        /* ce|bce|mse|mae, default ce */
    uint64_t seed;           /* default 1 */
    int threads;             /* <= 0: all cores */
    const char *checkpoint;  /* written after every epoch; NULL: none */
    const char *log;         /* per-epoch metrics CSV; NULL: none */
    /* Each sample seen as a random view, new each epoch, drawn from `seed`, parts joined by commas: for
     * image samples (C, H, W) "shift:N" (moved by up to N pixels along each axis, 0 filling in) and "flip"
     * (mirrored left to right half of the time); for any samples "mixup:A" (then mixed with the batch's
     * reversed partner by a Beta(A, A) weight, targets alike); NULL or "none": the samples as they are. */
    const char *augment;
} kiln_train_config;

KILN_API kiln_train_config kiln_train_config_default(void);

typedef struct kiln_metrics {
    int64_t count;           /* samples evaluated */
    double loss;
    double accuracy;         /* < 0 when the data has no class labels */
} kiln_metrics;

/* Trains graph in place on `train`, validating on `val` (may be NULL) after every epoch. `final` (may be
 * NULL) receives the last epoch's validation metrics, or its training metrics without `val`. */
KILN_API kiln_status kiln_train(kiln_graph *graph, const kiln_dataset *train, const kiln_dataset *val,
                       const kiln_train_config *config, kiln_metrics *final);

/* Loss and accuracy of graph on dataset (inference mode, batches of `batch`, <= 0: 256). */
KILN_API kiln_status kiln_evaluate(kiln_graph *graph, const kiln_dataset *dataset, int64_t batch, kiln_metrics *metrics);

#ifdef __cplusplus
}
#endif

#endif
