/* The library side of include/kiln/train.h: what the opaque handles hold, for src/compress and the
 * kiln command, which work on the kn_ structures inside them. */
#ifndef KN_TRAIN_API_H
#define KN_TRAIN_API_H

#include "core/graph.h"
#include "format/kiln_file.h"
#include "kiln/train.h"
#include "train/data.h"
#include "train/trainer.h"

struct kiln_graph {
    kn_graph g;
};

struct kiln_dataset {
    kn_dataset d;
};

/* Loads a model graph by extension: a .kiln model or checkpoint (its extras, a checkpoint's optimizer
 * state, returned when extras is not NULL), an ONNX model imported for training, or a spec (fresh
 * parameters from `seed`). g is left empty on failure. */
kiln_status kn_graph_load_path(const char *path, uint64_t seed, kn_graph *g, kn_named_tensor **extras,
                               int *n_extras);
/* Writes g as .kiln or .onnx by the extension of path; any other extension is an error. */
kiln_status kn_graph_save_path(const kn_graph *g, const char *path);

/* The kn_train_options a public config asks for (paths as given; no progress, no hooks). */
kiln_status kn_train_options_from_config(const kiln_train_config *c, kn_train_options *o);

#endif
