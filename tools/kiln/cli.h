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

/* Parses argv[first..] into the options and up to max_positional positional arguments. On a bad
 * option prints one error line and the usage to stderr and returns false. */
bool cli_parse(const char *command, const char *usage, int argc, char **argv, int first, const cli_option *options,
               int n_options, const char **positional, int max_positional, int *n_positional);

void cli_print_help(FILE *out, const char *command, const char *usage, const cli_option *options, int n_options);

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

/* Loads a model by extension: a spec (.txt/.spec: fresh parameters from `seed`) or a .kiln file. The
 * file's extras (checkpoint optimizer state) are returned when extras is not NULL. */
kiln_status cli_load_model(const char *path, uint64_t seed, kn_graph *g, kn_named_tensor **extras, int *n_extras);

#endif
