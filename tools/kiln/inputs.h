/* `kiln run`'s INPUT files turned into the batch of one model input. Samples are stacked along the batch
 * (first) dimension, read the way `kiln train` reads each form:
 *
 *   .npy        by default one sample: an array shaped like the input without its batch dimension, or
 *               (when the input has no other open dimension) any shape with one sample's element count;
 *               with batch_dim, an array whose first dimension is the batch. A 0-d array (a scalar) is
 *               the whole input, with no batch dimension, and so is any array for an input of rank 0;
 *               no other file can join it. Used as is, except that
 *               uint8 becomes x / 255 for a float input, like the training loader's arrays. A text
 *               array (<U<n> or |S<n>) feeds a string input: the batch holds a `const char *` per
 *               element, as kiln_session_set_input takes strings.
 *   .png .jpg   one sample of an image input (N, C, H, W): gray (C = 1) or RGB (C = 3) ..., resized
 *               bilinearly to H x W, scaled to [0, 1], then standardised by the model's mean/std.
 *   .csv        a header row, then one sample per row: the input's features, plus optionally one target
 *               column (the last, or the one named by `label`) that is skipped; standardised by the
 *               model's statistics as in training. Fields are numbers; quoted fields may not hold commas.
 *               When the model stored its CSV column names, the feature columns must be those, in order.
 *
 * Shapes and dtypes are not checked against the model here beyond what reading needs: the runtime
 * checks them when the batch is set (kiln_session_resize_input, kiln_session_set_input).
 */
#ifndef KILN_CLI_INPUTS_H
#define KILN_CLI_INPUTS_H

#include <stdbool.h>
#include <stddef.h>

#include "core/tensor.h"

/* What reading needs to know of the model and the command line. */
typedef struct cli_input_options {
    bool batch_dim;            /* .npy files hold a batch */
    const char *label;         /* CSV target column to skip, by name; NULL: the last when there is one extra */
    const float *mean, *std;   /* the model's input statistics (n_norm values), or NULL */
    int64_t n_norm;
    const char *columns;       /* CSV: the feature columns the model was trained on (kn_data_columns_join
                                  form), which the header must name in order; NULL: not checked */
} cli_input_options;

typedef struct cli_batch {
    const char *input_name;
    kn_shape model_shape;      /* the input as saved: the batch and any -1 dimension are open */
    kn_dtype model_dtype;
    kn_dtype dtype;            /* of the data read: the first file's */
    kn_shape sample;           /* one sample (the dimensions after the batch), set by the first file */
    bool whole;                /* the first file was a 0-d array: the whole input, with no batch dimension */
    int64_t count;             /* samples */
    unsigned char *data;       /* (count, sample) elements of dtype */
    size_t bytes, capacity;
    char **labels;             /* (count) where each sample came from: "a.png", "x.npy[3]", "rows.csv:7" */
    const char *first_path;    /* the first file read, for messages */
    void **text_blocks;        /* text arrays read (KN_STRING data is a `const char *` per element, pointing */
    int n_text_blocks;         /* into these blocks: kn_npy_read's layout), freed with the batch */
} cli_batch;

/* An empty batch for model input `name` of `shape` and `dtype`. */
void cli_batch_init(cli_batch *b, const char *name, const kn_shape *shape, kn_dtype dtype);
/* Appends the samples of the file at `path`, by its extension. */
kiln_status cli_batch_add_file(cli_batch *b, const char *path, const cli_input_options *options);
/* The batch's full shape: (count, sample...), or () for a whole 0-d input. */
kn_shape cli_batch_shape(const cli_batch *b);
void cli_batch_free(cli_batch *b);

#endif
