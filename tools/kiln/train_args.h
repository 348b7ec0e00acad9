/* The training options of `kiln train`, shared by every command that trains: prune --finetune,
 * quantize --qat, distill. One option table, one translation to kn_train_options, one data loader and
 * one progress display, so each command takes and prints them the same way. */
#ifndef KILN_TRAIN_ARGS_H
#define KILN_TRAIN_ARGS_H

#include "cli.h"
#include "train/trainer.h"

#define CLI_TRAIN_OPTION_COUNT 28

typedef struct cli_train_args {
    const char *data, *val, *log, *optimizer, *loss, *schedule, *label, *augment;
    int64_t epochs, batch, seed, threads, warmup, step_size, early_stop;
    double lr, momentum, dampening, weight_decay, val_split, clip_norm, label_smoothing, gamma, min_lr;
    bool nesterov, save_best, json, quiet;
} cli_train_args;

/* The defaults of `kiln train`, with `epochs` epochs. */
cli_train_args cli_train_args_defaults(int64_t epochs);

/* Writes the training options (--data, --val, --epochs, --optimizer, ...) bound to `a` into
 * options[0..]; returns how many (at most CLI_TRAIN_OPTION_COUNT). */
int cli_train_option_table(cli_train_args *a, cli_option *options);

/* kn_train_options from the parsed arguments (paths, progress and hooks left for the caller). On a bad
 * value prints the error as `command` and returns its exit code; 0 on success. */
int cli_train_build_options(const char *command, const cli_train_args *a, kn_train_options *o);

/* Resuming: o (built from `a`) takes the options the checkpoint g recorded for its run — seed, batch,
 * epochs, optimizer and its parameters, schedule, loss, clipping, augmentation — so the run goes on as it began. An
 * option the command line sets to another value is refused, naming it, unless `override` (--epochs may
 * always change: it is how a finished run is trained further). A checkpoint that recorded none leaves o
 * as built. The values o ends with are written back into a (seed, batch, epochs, optimizer) for the
 * data split and the messages. Prints the error as `command` and returns its exit code; 0 on success. */
int cli_train_resume_options(const char *command, cli_train_args *a, const kn_graph *g, bool override,
                             kn_train_options *o);

/* The training data and validation data (--val, or --val-split of --data), loaded the way the model g
 * expects them (its input standardisation and class names, when it has them). */
typedef struct cli_train_data {
    kn_dataset all, train, val;
    bool split, has_val;
} cli_train_data;

kiln_status cli_train_data_load(const cli_train_args *a, const kn_graph *g, cli_train_data *d);
const kn_dataset *cli_train_data_train(const cli_train_data *d);
const kn_dataset *cli_train_data_val(const cli_train_data *d); /* NULL without validation */
void cli_train_data_free(cli_train_data *d);

/* Refuses, before any work, an output (--out, --checkpoint, --log; NULL entries skipped) that is one of
 * the inputs (the model, and every file of --data/--val, whose "X.npy,Y.npy" form names two) — the same
 * file by device and inode, so links count — or whose folder is not writable. Prints the error as
 * `command` and returns its exit code; 0 when all is well. */
int cli_check_outputs(const char *command, const char *const *outputs, int n_outputs, const char *const *inputs,
                      int n_inputs);

/* Progress of kn_train: a bar per epoch on stderr and one line per finished epoch on stdout. */
typedef struct cli_train_progress {
    cli_progress bar;
    bool json;
} cli_train_progress;

void cli_train_progress_init(cli_train_progress *p, const cli_train_args *a);
void cli_train_on_progress(const kn_train_progress *p, void *user); /* user: cli_train_progress */

#endif
