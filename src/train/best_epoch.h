/* The epoch of lowest validation loss, for early stopping (epochs since it) and for ending a run with its
 * weights (a copy of every parameter and state value taken when it is reached). A checkpoint carries it:
 * the counters as "train.best_*" notes, the copy as extras named "best/<value name>", so a resumed run
 * stops and keeps the same epoch as one that never stopped. */
#ifndef KN_TRAIN_BEST_EPOCH_H
#define KN_TRAIN_BEST_EPOCH_H

#include <stdbool.h>

#include "core/graph.h"
#include "format/kiln_file.h"

typedef struct kn_best_epoch {
    int64_t epoch;        /* from 1; 0: no validation yet */
    double val_loss, val_accuracy;
    int64_t epochs_since; /* validated epochs since the best one */
    float *copy;          /* (sum of the PARAM and STATE values' numel) the best epoch's values, or NULL */
    int64_t copy_count;
} kn_best_epoch;

/* No best epoch yet; with `keep`, room for a copy of g's parameters and state. */
kiln_status kn_best_epoch_init(kn_best_epoch *b, const kn_graph *g, bool keep);
void kn_best_epoch_free(kn_best_epoch *b);

/* Epoch `epoch` validated with this loss: when lower than the best, it becomes the best (copying g's values
 * when keeping them); otherwise one more epoch since the best. */
void kn_best_epoch_update(kn_best_epoch *b, const kn_graph *g, int64_t epoch, double val_loss, double val_accuracy);

/* Puts the best epoch's values back into g (nothing without a copy or a best epoch). */
void kn_best_epoch_restore(const kn_best_epoch *b, kn_graph *g);

/* The counters as g's metadata notes, and back (absent notes: no best epoch yet). */
kiln_status kn_best_epoch_save_meta(const kn_best_epoch *b, kn_graph *g);
kiln_status kn_best_epoch_load_meta(kn_best_epoch *b, const kn_graph *g);

/* The copy as checkpoint extras: appends one "best/<value name>" tensor per value to extras (room for
 * kn_best_epoch_extra_count), names malloc'ed (free them with kn_best_epoch_extras_free), data pointing
 * into the copy. */
int kn_best_epoch_extra_count(const kn_best_epoch *b, const kn_graph *g);
kiln_status kn_best_epoch_extras(const kn_best_epoch *b, const kn_graph *g, kn_named_tensor *extras, int *n);
void kn_best_epoch_extras_free(kn_named_tensor *extras, int n);
/* The copy back from a checkpoint's extras; a best epoch whose values are missing is KILN_ERR_FORMAT. */
kiln_status kn_best_epoch_load_extras(kn_best_epoch *b, const kn_graph *g, const kn_named_tensor *extras, int n);

#endif
