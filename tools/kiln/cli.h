/* Shared plumbing for kiln's subcommands: option parsing, error lines, progress display, JSON. */
#ifndef KILN_CLI_H
#define KILN_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/graph.h"
#include "format/kiln_file.h"
#include "kiln/kiln.h"

typedef enum cli_type { CLI_STRING, CLI_INT, CLI_FLOAT, CLI_FLAG } cli_type;

typedef struct cli_option {
    const char *name;  /* "--epochs" */
    cli_type type;
    void *dest;        /* const char **, int64_t *, double *, bool * */
    const char *help;
} cli_option;

/* The most --threads any command takes (cli_parse refuses an integer option --threads outside 1..this). */
#define CLI_MAX_THREADS 1024

/* Parses argv[first..] into the options and up to max_positional positional arguments. On a bad
 * option prints one error line to stderr (an unknown one with the nearest known name, "did you mean
 * --epochs?", and a pointer to --help) and returns false. */
bool cli_parse(const char *command, const char *usage, int argc, char **argv, int first, const cli_option *options,
               int n_options, const char **positional, int max_positional, int *n_positional);

void cli_print_help(FILE *out, const char *command, const char *usage, const cli_option *options, int n_options);

/* The one of names[0..n) nearest to word[0..len) (edit distance, or a prefix of at least 3 bytes) when it
 * is a near miss, else NULL: for "did you mean ...?". */
const char *cli_closest(const char *word, size_t len, const char *const *names, int n);

/* "s" unless n is 1: "1 thread", "2 threads". */
const char *cli_plural(int64_t n);

/* Whether the last cli_parse saw option `name` ("--batch") on the command line (a default and an explicit
 * value that equals it differ here: resuming refuses only what the user asked for). */
bool cli_was_given(const char *name);

/* "kiln <command>: error: <kiln_last_error()>" on stderr; returns the exit code 1. */
int cli_fail(const char *command, kiln_status status);
/* Same with a message of the command's own. */
int cli_fail_msg(const char *command, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Progress on stderr: a redrawn bar on a terminal, a plain line every few seconds otherwise. */
typedef struct cli_progress {
    bool tty;
    bool quiet;
    double last_print;
} cli_progress;

void cli_progress_init(cli_progress *p, bool quiet);
/* fraction in [0, 1]; label like "epoch 2/5"; detail like "loss 0.41 acc 0.85 ...". */
void cli_progress_update(cli_progress *p, const char *label, double fraction, const char *detail, bool force);
/* Ends a bar line (on a terminal) so the next output starts on a fresh line. */
void cli_progress_end_line(cli_progress *p);

/* Writes s as a JSON string literal. */
void cli_json_string(FILE *out, const char *s);
/* "1:02:03" or "2:03". */
void cli_format_duration(double seconds, char *buf, size_t size);
double cli_now(void);

/* The op types of g in order of first use with their node counts: "Conv 2, Relu 3", or as a JSON
 * object {"Conv":2,"Relu":3}. */
void cli_print_op_counts(FILE *out, const kn_graph *g, bool json);

/* A model input's declared shape (kn_graph_input_declared: open dimensions are -1) as shown to users:
 * an open first dimension is the batch N, other open ones are ?, fixed ones their size: "(N, 1, 28, 28)",
 * "(N, ?, 16)", "(2, 3)". Returns buf. */
char *cli_input_shape_str(const kn_shape *shape, char *buf, size_t size);

/* "1.6 MiB", "312 B". */
void cli_format_bytes(double bytes, char *buf, size_t size);
/* Whether `path` ends in `suffix`, ignoring case. */
bool cli_has_suffix(const char *path, const char *suffix);
/* The size of the file at `path`, or -1 when it cannot be read. */
int64_t cli_file_size(const char *path);
/* Whether `output` names the same file as `input` (same device and inode; false when either does not
 * exist), so a command can refuse to overwrite what it reads. */
bool cli_same_file(const char *output, const char *input);
/* The whole regular file at `path` in a new buffer (free() it) of *size bytes plus a NUL byte. */
kiln_status cli_read_file(const char *path, unsigned char **bytes, size_t *size);

/* Loads a model graph by extension: a .kiln model or checkpoint, an ONNX model (imported for training:
 * its float weights become trainable parameters, so one graph serves fine-tuning, conversion and
 * inference), or a spec (.txt/.spec: fresh parameters from `seed`). The file's extras (checkpoint
 * optimizer state) are returned when extras is not NULL. */
kiln_status cli_load_model(const char *path, uint64_t seed, kn_graph *g, kn_named_tensor **extras, int *n_extras);

/* Loads a model for inference: a .kiln file through kiln_model_load_file (weights mapped in place),
 * anything cli_load_model reads through its graph. */
kiln_status cli_open_model(const char *path, kiln_model **model);

#endif
