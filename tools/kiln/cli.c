#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/status.h"
#include "ops/op.h"
#include "runtime/runtime.h"
#include "train/api.h"

double cli_now(void) { return kn_seconds_now(); }

void cli_print_help(FILE *out, const char *command, const char *usage, const cli_option *options, int n_options) {
    fprintf(out, "usage: kiln %s %s\n", command, usage);
    if (n_options)
        fprintf(out, "options:\n");
    for (int i = 0; i < n_options; i++) {
        const char *arg = options[i].type == CLI_FLAG ? "" : options[i].type == CLI_STRING ? " VALUE" : " N";
        fprintf(out, "  %s%-*s %s\n", options[i].name, (int)(22 - strlen(options[i].name)), arg, options[i].help);
    }
}

/* The options the last cli_parse saw (the process parses one command line). */
static const char *given[64];
static int n_given;

static void note_given(const char *name) {
    if (!cli_was_given(name) && n_given < (int)(sizeof given / sizeof given[0]))
        given[n_given++] = name;
}

bool cli_was_given(const char *name) {
    for (int i = 0; i < n_given; i++)
        if (strcmp(given[i], name) == 0)
            return true;
    return false;
}

static bool set_option(const char *command, const cli_option *o, const char *value) {
    char *end;
    errno = 0;
    switch (o->type) {
    case CLI_STRING:
        *(const char **)o->dest = value;
        return true;
    case CLI_INT: {
        long long v = strtoll(value, &end, 10);
        if (errno || end == value || *end) {
            fprintf(stderr, "kiln %s: error: %s takes an integer, got '%s'\n", command, o->name, value);
            return false;
        }
        if (strcmp(o->name, "--threads") == 0 && (v < 1 || v > CLI_MAX_THREADS)) {
            fprintf(stderr, "kiln %s: error: --threads must be from 1 to %d, got %lld\n", command, CLI_MAX_THREADS, v);
            return false;
        }
        *(int64_t *)o->dest = v;
        return true;
    }
    case CLI_FLOAT: {
        double v = strtod(value, &end);
        if (errno || end == value || *end || !isfinite(v)) {
            fprintf(stderr, "kiln %s: error: %s takes a number, got '%s'\n", command, o->name, value);
            return false;
        }
        *(double *)o->dest = v;
        return true;
    }
    case CLI_FLAG:
        *(bool *)o->dest = true;
        return true;
    }
    return false;
}

/* Levenshtein distance between a[0..na) and b[0..nb), for names of at most 63 bytes (longer: a large number). */
static size_t edit_distance(const char *a, size_t na, const char *b, size_t nb) {
    enum { MAX = 64 };
    if (na >= MAX || nb >= MAX)
        return MAX;
    size_t row[MAX];
    for (size_t j = 0; j <= nb; j++)
        row[j] = j;
    for (size_t i = 1; i <= na; i++) {
        size_t diagonal = row[0];
        row[0] = i;
        for (size_t j = 1; j <= nb; j++) {
            size_t above = row[j];
            size_t best = diagonal + (a[i - 1] != b[j - 1]);
            if (above + 1 < best)
                best = above + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diagonal = above;
        }
    }
    return row[nb];
}

const char *cli_closest(const char *word, size_t len, const char *const *names, int n) {
    const char *best = NULL;
    size_t best_distance = len / 3 > 2 ? len / 3 : 2; /* a suggestion only for a near miss */
    for (int i = 0; i < n; i++) {
        size_t d = edit_distance(word, len, names[i], strlen(names[i]));
        bool prefix = len >= 3 && strncmp(names[i], word, len) == 0;
        if (prefix)
            d = 1;
        if (d <= best_distance && (!best || d < best_distance)) {
            best = names[i];
            best_distance = d;
        }
    }
    return best;
}

/* "unknown option '--epoch' (did you mean --epochs?); see kiln train --help": one line. */
static void print_unknown_option(const char *command, const char *arg, size_t len, const cli_option *options,
                                 int n_options) {
    enum { MAX_NAMES = 128 };
    const char *names[MAX_NAMES];
    int n = 0;
    for (int k = 0; k < n_options && n < MAX_NAMES - 1; k++)
        names[n++] = options[k].name;
    names[n++] = "--help";
    const char *near = cli_closest(arg, len, names, n);
    fprintf(stderr, "kiln %s: error: unknown option '%.*s'", command, (int)len, arg);
    if (near)
        fprintf(stderr, " (did you mean %s?)", near);
    fprintf(stderr, "; kiln %s --help lists the options\n", command);
}

bool cli_parse(const char *command, const char *usage, int argc, char **argv, int first, const cli_option *options,
               int n_options, const char **positional, int max_positional, int *n_positional) {
    *n_positional = 0;
    n_given = 0;
    for (int i = first; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            cli_print_help(stdout, command, usage, options, n_options);
            exit(0);
        }
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            if (*n_positional == max_positional) {
                fprintf(stderr, "kiln %s: error: unexpected argument '%s'; usage: kiln %s %s\n", command, arg,
                        command, usage);
                return false;
            }
            positional[(*n_positional)++] = arg;
            continue;
        }
        const char *eq = strchr(arg, '=');
        size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
        const cli_option *o = NULL;
        for (int k = 0; k < n_options && !o; k++)
            if (strlen(options[k].name) == len && strncmp(options[k].name, arg, len) == 0)
                o = &options[k];
        if (!o) {
            print_unknown_option(command, arg, len, options, n_options);
            return false;
        }
        const char *value = NULL;
        if (o->type != CLI_FLAG) {
            if (eq)
                value = eq + 1;
            else if (i + 1 < argc)
                value = argv[++i];
            else {
                fprintf(stderr, "kiln %s: error: %s needs a value\n", command, o->name);
                return false;
            }
        } else if (eq) {
            fprintf(stderr, "kiln %s: error: %s takes no value\n", command, o->name);
            return false;
        }
        if (!set_option(command, o, value))
            return false;
        note_given(o->name);
    }
    return true;
}

const char *cli_plural(int64_t n) { return n == 1 ? "" : "s"; }

int cli_fail(const char *command, kiln_status status) {
    const char *msg = kiln_last_error();
    fprintf(stderr, "kiln %s: error: %s\n", command, msg[0] ? msg : kiln_status_name(status));
    return 1;
}

int cli_fail_msg(const char *command, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "kiln %s: error: ", command);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return 1;
}

void cli_progress_init(cli_progress *p, bool quiet) {
    p->tty = isatty(STDERR_FILENO);
    p->quiet = quiet;
    p->last_print = 0;
}

void cli_progress_update(cli_progress *p, const char *label, double fraction, const char *detail, bool force) {
    if (p->quiet)
        return;
    double now = cli_now();
    double interval = p->tty ? 0.1 : 5.0;
    if (!force && now - p->last_print < interval)
        return;
    p->last_print = now;
    if (fraction < 0)
        fraction = 0;
    if (fraction > 1)
        fraction = 1;
    if (p->tty) {
        enum { WIDTH = 24 };
        char bar[WIDTH + 1];
        int filled = (int)(fraction * WIDTH);
        for (int i = 0; i < WIDTH; i++)
            bar[i] = i < filled ? '=' : (i == filled ? '>' : ' ');
        bar[WIDTH] = '\0';
        fprintf(stderr, "\r\033[K%s [%s] %3.0f%% %s", label, bar, 100 * fraction, detail);
    } else {
        fprintf(stderr, "%s %3.0f%% %s\n", label, 100 * fraction, detail);
    }
    fflush(stderr);
}

void cli_progress_end_line(cli_progress *p) {
    if (!p->quiet && p->tty) {
        fprintf(stderr, "\r\033[K");
        fflush(stderr);
    }
}

void cli_json_string(FILE *out, const char *s) {
    fputc('"', out);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\')
            fprintf(out, "\\%c", *c);
        else if (*c < 0x20)
            fprintf(out, "\\u%04x", *c);
        else
            fputc(*c, out);
    }
    fputc('"', out);
}

void cli_format_duration(double seconds, char *buf, size_t size) {
    if (!(seconds >= 0) || seconds > 1e7)
        seconds = 0;
    long s = (long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(buf, size, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else
        snprintf(buf, size, "%ld:%02ld", s / 60, s % 60);
}

void cli_print_op_counts(FILE *out, const kn_graph *g, bool json) {
    fputs(json ? "{" : "", out);
    bool first = true;
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_op *op = g->nodes[i].op;
        bool seen = false;
        for (int j = 0; j < i && !seen; j++)
            seen = g->nodes[j].op == op;
        if (seen)
            continue;
        int count = 0;
        for (int j = i; j < g->n_nodes; j++)
            count += g->nodes[j].op == op;
        if (json) {
            fputs(first ? "" : ",", out);
            cli_json_string(out, op->name);
            fprintf(out, ":%d", count);
        } else {
            fprintf(out, "%s%s %d", first ? "" : ", ", op->name, count);
        }
        first = false;
    }
    fputs(json ? "}" : "", out);
}

char *cli_input_shape_str(const kn_shape *shape, char *buf, size_t size) {
    size_t used = 0;
    buf[0] = '\0';
    for (int d = 0; d < shape->ndim && used < size; d++) {
        const char *sep = d ? ", " : "(";
        int n = shape->d[d] >= 0 ? snprintf(buf + used, size - used, "%s%lld", sep, (long long)shape->d[d])
                                 : snprintf(buf + used, size - used, "%s%s", sep, d == 0 ? "N" : "?");
        used += n > 0 ? (size_t)n : 0;
    }
    if (used < size)
        snprintf(buf + used, size - used, shape->ndim ? ")" : "()");
    return buf;
}

void cli_format_bytes(double bytes, char *buf, size_t size) {
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int unit = 0;
    while (bytes >= 1024 && unit < 4) {
        bytes /= 1024;
        unit++;
    }
    snprintf(buf, size, unit ? "%.2f %s" : "%.0f %s", bytes, units[unit]);
}

bool cli_has_suffix(const char *path, const char *suffix) {
    size_t n = strlen(path), k = strlen(suffix);
    return n >= k && strcasecmp(path + n - k, suffix) == 0;
}

int64_t cli_file_size(const char *path) {
    struct stat info;
    return stat(path, &info) == 0 ? (int64_t)info.st_size : -1;
}

kiln_status cli_read_file(const char *path, unsigned char **bytes, size_t *size) {
    *bytes = NULL;
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer before fstat could
     * refuse it. A regular file reads the same either way. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return kn_fail(KILN_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat info;
    kiln_status st = KILN_OK;
    if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode))
        st = kn_fail(KILN_ERR_IO, "%s: not a regular file", path);
    else if ((uint64_t)info.st_size >= SIZE_MAX || !(*bytes = malloc((size_t)info.st_size + 1)))
        st = kn_fail(KILN_ERR_NOMEM, "%s: no memory to read %lld bytes", path, (long long)info.st_size);
    size_t done = 0;
    while (st == KILN_OK && done < (size_t)info.st_size) {
        ssize_t got = read(fd, *bytes + done, (size_t)info.st_size - done);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            st = kn_fail(KILN_ERR_IO, "%s: read error%s", path, got < 0 ? "" : " (the file shrank)");
        else
            done += (size_t)got;
    }
    close(fd);
    if (st != KILN_OK) {
        free(*bytes);
        *bytes = NULL;
        return st;
    }
    (*bytes)[info.st_size] = '\0';
    *size = (size_t)info.st_size;
    return KILN_OK;
}

bool cli_same_file(const char *output, const char *input) {
    struct stat a, b;
    return stat(output, &a) == 0 && stat(input, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

kiln_status cli_load_model(const char *path, uint64_t seed, kn_graph *g, kn_named_tensor **extras, int *n_extras) {
    return kn_graph_load_path(path, seed, g, extras, n_extras);
}

kiln_status cli_open_model(const char *path, kiln_model **model) {
    if (cli_has_suffix(path, ".kiln") || cli_has_suffix(path, ".ckpt"))
        return kiln_model_load_file(path, model);
    if (cli_has_suffix(path, ".onnx"))
        return kiln_model_load_onnx(path, model);
    kn_graph g;
    KN_TRY(cli_load_model(path, 1, &g, NULL, NULL));
    kiln_status st = kn_model_from_graph(&g, model);
    if (st != KILN_OK)
        kn_error_prefix("%s: ", path);
    return st;
}
