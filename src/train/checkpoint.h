/* What a checkpoint remembers of its run besides the weights and the optimizer state: every training
 * option that decides the numbers (epochs, batch, seed, optimizer and all its parameters, schedule,
 * loss, clipping, early stopping, keeping the best epoch, and augmentation, whose note "train.augment" is
 * written only when it is on, or was already there), as "train.*" metadata notes of the graph,
 * so a resumed run continues the same run without the user repeating them, and the final model records
 * the options that made it.
 *
 * Floats are written with 9 significant digits and integers in full, so reading gives the same bits.
 */
#ifndef KN_TRAIN_CHECKPOINT_H
#define KN_TRAIN_CHECKPOINT_H

#include <stdbool.h>

#include "core/graph.h"
#include "train/trainer.h"

/* Records o's training options in g's metadata (paths, progress and hooks are not options of the run). */
kiln_status kn_checkpoint_options_save(kn_graph *g, const kn_train_options *o);

/* One recorded option, by its key ("train.batch"): o's value as the metadata writes it, and its copy from
 * src into dst. KILN_ERR_INVALID_ARG for a key that is not an option. */
kiln_status kn_checkpoint_option_text(const kn_train_options *o, const char *key, char *text, size_t size);
kiln_status kn_checkpoint_option_copy(kn_train_options *dst, const kn_train_options *src, const char *key);

/* Reads the options kn_checkpoint_options_save recorded into o's training fields; o's paths, progress
 * and hooks are left as they are. *found is false (and o untouched) when g records none (a checkpoint
 * written before kiln stored them); a recorded value that does not parse is KILN_ERR_FORMAT. */
kiln_status kn_checkpoint_options_load(const kn_graph *g, kn_train_options *o, bool *found);

#endif
