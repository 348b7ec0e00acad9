/* Training data: loading a DATA string into memory, splitting it, and batching it.
 *
 * DATA is one of (see docs/data.md):
 *   fashion-mnist, fashion-mnist:test   the installed Fashion-MNIST train / test set
 *   path/to/...-images-idx3-ubyte[.gz]  an IDX images file; the labels file beside it is found by name
 *   path/to/table.csv[.gz]              a CSV table with a header row
 *   X.npy,Y.npy                         a pair of numpy arrays: inputs and targets
 * Every loader treats its file as hostile: a truncated, corrupt or oversized file gives one clear line
 * naming the file (and line and column for CSV), never a crash.
 */
#ifndef KN_TRAIN_DATA_H
#define KN_TRAIN_DATA_H

#include <stdbool.h>
#include <stdint.h>

#include "core/graph.h"
#include "core/tensor.h"
#include "kiln/kiln.h"

/* Integer targets at or above this are not treated as class indices. */
#define KN_DATA_MAX_CLASSES (1 << 24)

typedef struct kn_dataset {
    int64_t count;            /* samples */
    kn_shape sample_shape;    /* per-sample shape: (1, 28, 28) for images, (F) for tabular */
    int64_t sample_size;      /* numel of sample_shape */
    float *x;                 /* (count, sample_size) */
    int64_t *labels;          /* (count) class indices, or NULL when the target is not a class */
    float *targets;           /* (count, target_width) float targets, or NULL */
    int64_t target_width;
    int64_t class_count;      /* number of classes (max label + 1, or names count); 0 when not classes */
    char **class_names;       /* class_count names or NULL */
    float *feature_mean, *feature_std; /* (sample_size) when the data was standardised (CSV), else NULL */
    char *source;             /* the DATA string it came from */
    /* When the targets are numbers but not class labels: why, naming the first row that is not one
     * ("d.csv:5: column 5 ('y'): -1 is not a class index ..."), for a loss that needs labels. Else NULL. */
    char *not_labels;
    /* CSV: the feature columns' names in file order, as kn_data_columns_join writes them; else NULL. */
    char *columns;
} kn_dataset;

typedef struct kn_data_options {
    const char *label_column; /* CSV: target column name; NULL = last */
    /* CSV: standardise with these statistics (a trained model's) instead of computing them */
    const float *feature_mean, *feature_std;
    int64_t feature_count;
    /* CSV: a trained model's class names. When every target value is one of them, the labels index this
     * list, so that a file missing some classes still maps each name to the model's class. */
    const char *const *class_names;
    int64_t class_count;
    /* CSV: leave the features as they are (the model standardises them itself: an ONNX export) */
    bool raw_features;
    /* CSV: the feature columns a model was trained on (kn_data_columns_join form): the file's feature
     * columns must be the same, in the same order (KILN_ERR_INVALID_ARG naming both lists otherwise). */
    const char *columns;
    bool quiet;               /* no progress output (otherwise one summary line on stderr) */
} kn_data_options;

/* Options that load data the way model g expects it: with its input standardisation, class names and CSV
 * feature columns (the "train.columns" note) when it has them (quiet, the last column the target). */
kn_data_options kn_data_options_for_model(const kn_graph *g);

/* Column names as one string, the form models store them in ("train.columns"): each name trimmed of
 * spaces and tabs, ',' and '\\' escaped with '\\', joined with ','. malloc'ed; NULL when out of memory. */
char *kn_data_columns_join(const char *const *names, int64_t n);
/* Whether the n feature columns `names` of the CSV at `path` are `expected` (joined): KILN_OK, or
 * KILN_ERR_INVALID_ARG showing both lists and whether they differ only in order. */
kiln_status kn_data_check_columns(const char *path, const char *const *names, int64_t n, const char *expected);

/* Loads DATA into `out` (zeroed first; freed again on failure). `options` may be NULL. */
kiln_status kn_dataset_load(const char *data, const kn_data_options *options, kn_dataset *out);
void kn_dataset_free(kn_dataset *ds);

/* Deterministic split: shuffles indices with `seed`, the last round(count * val_fraction) go to val.
 * Both parts keep file order and must be non-empty. Copies data (statistics and class names too). */
kiln_status kn_dataset_split(const kn_dataset *all, double val_fraction, uint64_t seed, kn_dataset *train,
                             kn_dataset *val);

/* Batching: an epoch's order is a seeded Fisher-Yates permutation (seed and epoch number -> same order every
 * run); shuffle=false keeps file order. The last partial batch is included. */
typedef struct kn_batcher {
    const kn_dataset *ds;
    int64_t *order; /* (ds->count) sample indices in epoch order */
    int64_t batch, next;
} kn_batcher;

kiln_status kn_batcher_init(kn_batcher *b, const kn_dataset *ds, int64_t batch, bool shuffle, uint64_t seed,
                            int64_t epoch);
/* Copies the next batch: x (n, sample_size), labels (n) if ds->labels and labels != NULL, targets (n, width)
 * if ds->targets and targets != NULL. Returns the number of samples n (0 at the end of the epoch). */
int64_t kn_batcher_next(kn_batcher *b, float *x, int64_t *labels, float *targets);
void kn_batcher_free(kn_batcher *b);

#endif
