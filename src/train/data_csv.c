/* CSV tables: a header row naming the columns, then one sample per row. Every column but the target is a
 * numeric feature; the target is the last column, or the one options->label_column names.
 *
 * Fields follow RFC 4180: separated by commas, optionally in double quotes (which may hold commas, newlines
 * and "" for a quote); rows end in LF or CRLF. Empty lines are skipped. Fields are cut out of the file
 * buffer in place: quotes are removed and each field is NUL-terminated, so field pointers point into it.
 *
 * The target column becomes, in order of preference:
 *   - labels indexing options->class_names, when given and every value is one of those names;
 *   - value targets (width 1) when every value is a number, and also class labels when every value is a
 *     non-negative integer below KN_DATA_MAX_CLASSES (else the first row that is not one is named in
 *     kn_dataset.not_labels); a nan or inf among numbers is an error naming its row and column, not a
 *     reason to read the column as names;
 *   - class labels indexing the sorted unique values, which become the class names.
 * Features are standardised per column, x' = (x - mean) / std (population std; 0 becomes 1), with the
 * statistics of this file or the ones given in the options; not at all with options->raw_features. Mean
 * and std are rounded to float before use, so a model's stored statistics reproduce its training inputs
 * exactly.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "train/data_internal.h"

typedef struct csv_reader {
    const char *path;
    char *text;          // the whole file, NUL-terminated; fields are cut out of it
    size_t size, pos;
    int64_t line;        // 1-based line number at text[pos]
    int64_t record_line; // line where the current record starts
    char **fields;       // (field_count) fields of the current record
    int64_t field_count, field_capacity;
} csv_reader;

/* Everything read from the rows before the target column is interpreted. */
typedef struct csv_rows {
    const char *path;
    int64_t count, capacity;
    int64_t feature_count;
    float *x;              // (capacity, feature_count) raw feature values
    char **target_text;    // (capacity) the target field of each row
    int64_t *line;         // (capacity) line number of each row, for messages
    int64_t target_column; // 0-based, and its header name, for messages
    const char *target_name;
} csv_rows;

static kiln_status csv_add_field(csv_reader *r, char *field) {
    if (r->field_count == r->field_capacity) {
        int64_t capacity = r->field_capacity ? 2 * r->field_capacity : 16;
        char **fields = realloc(r->fields, (size_t)capacity * sizeof *fields);
        if (!fields)
            return kn_data_nomem(r->path, "a row's fields", (size_t)capacity, sizeof *fields);
        r->fields = fields;
        r->field_capacity = capacity;
    }
    r->fields[r->field_count++] = field;
    return KILN_OK;
}

static bool csv_at_line_end(const csv_reader *r, size_t pos) {
    return r->text[pos] == '\n' || (r->text[pos] == '\r' && (pos + 1 == r->size || r->text[pos + 1] == '\n'));
}

/* Cuts the next field out of the text; *record_ended says whether it was the last of its record. */
static kiln_status csv_read_field(csv_reader *r, bool *record_ended) {
    char *start = r->text + r->pos, *end;
    if (r->pos < r->size && *start == '"') {
        int64_t open_line = r->line;
        end = start;
        r->pos++;
        for (;;) {
            if (r->pos >= r->size)
                return kn_fail(KILN_ERR_FORMAT, "%s:%lld: a quoted field is never closed", r->path,
                               (long long)open_line);
            char c = r->text[r->pos++];
            if (c == '"') {
                if (r->pos < r->size && r->text[r->pos] == '"')
                    r->pos++;
                else
                    break;
            } else if (c == '\n') {
                r->line++;
            }
            *end++ = c;
        }
    } else {
        while (r->pos < r->size && r->text[r->pos] != ',' && !csv_at_line_end(r, r->pos))
            r->pos++;
        end = r->text + r->pos;
    }

    /* Step over the separator before end[0] = '\0' may overwrite it. */
    if (r->pos >= r->size) {
        *record_ended = true;
    } else if (r->text[r->pos] == ',') {
        r->pos++;
        *record_ended = false;
    } else if (csv_at_line_end(r, r->pos)) {
        r->pos += r->text[r->pos] == '\r' && r->pos + 1 < r->size ? 2 : 1;
        r->line++;
        *record_ended = true;
    } else {
        char shown[16];
        return kn_fail(KILN_ERR_FORMAT, "%s:%lld: unexpected '%s' after a closing quote (column %lld)", r->path,
                       (long long)r->line, kn_data_snippet(r->text + r->pos, 1, shown, sizeof shown),
                       (long long)r->field_count + 1);
    }
    *end = '\0';
    return csv_add_field(r, start);
}

/* Reads the next non-empty record into r->fields; *found is false at the end of the file. */
static kiln_status csv_next_record(csv_reader *r, bool *found) {
    while (r->pos < r->size && csv_at_line_end(r, r->pos)) {
        r->pos += r->text[r->pos] == '\r' && r->pos + 1 < r->size ? 2 : 1;
        r->line++;
    }
    r->field_count = 0;
    *found = r->pos < r->size;
    if (!*found)
        return KILN_OK;
    r->record_line = r->line;
    bool record_ended = false;
    while (!record_ended)
        KN_TRY(csv_read_field(r, &record_ended));
    return KILN_OK;
}

/* Parses a whole field as a finite float; spaces around the number are allowed. */
static bool csv_parse_number(const char *field, double *value) {
    char *end;
    *value = strtod(field, &end);
    if (end == field)
        return false;
    while (*end == ' ' || *end == '\t')
        end++;
    return *end == '\0' && isfinite(*value) && isfinite((float)*value);
}

/* The error for a field that is empty or, for a feature, not a number. */
static kiln_status csv_field_error(const csv_reader *r, char **header, int64_t column) {
    char name[48], value[48];
    kn_data_snippet(header[column], strlen(header[column]), name, sizeof name);
    kn_data_snippet(r->fields[column], strlen(r->fields[column]), value, sizeof value);
    if (r->fields[column][0] == '\0')
        return kn_fail(KILN_ERR_FORMAT, "%s:%lld: column %lld ('%s') is empty", r->path, (long long)r->record_line,
                       (long long)column + 1, name);
    return kn_fail(KILN_ERR_FORMAT, "%s:%lld: column %lld ('%s'): '%s' is not a number", r->path,
                   (long long)r->record_line, (long long)column + 1, name, value);
}

static kiln_status csv_rows_grow(csv_rows *rows) {
    int64_t capacity = rows->capacity ? 2 * rows->capacity : 1024;
    size_t x_count, x_bytes;
    if (!kn_size_mul((size_t)capacity, (size_t)rows->feature_count, &x_count) ||
        !kn_size_mul(x_count, sizeof(float), &x_bytes))
        return kn_data_nomem(rows->path, "the rows", (size_t)capacity, (size_t)rows->feature_count);
    float *x = realloc(rows->x, x_bytes);
    if (x)
        rows->x = x;
    char **target_text = realloc(rows->target_text, (size_t)capacity * sizeof *target_text);
    if (target_text)
        rows->target_text = target_text;
    int64_t *line = realloc(rows->line, (size_t)capacity * sizeof *line);
    if (line)
        rows->line = line;
    if (!x || !target_text || !line)
        return kn_data_nomem(rows->path, "the rows", x_count, sizeof(float));
    rows->capacity = capacity;
    return KILN_OK;
}

/* Reads every data row: features into rows->x, target fields kept as text. */
static kiln_status csv_read_rows(csv_reader *r, char **header, int64_t column_count, int64_t target_column,
                                 csv_rows *rows) {
    for (;;) {
        bool found;
        KN_TRY(csv_next_record(r, &found));
        if (!found)
            return KILN_OK;
        if (r->field_count != column_count)
            return kn_fail(KILN_ERR_FORMAT, "%s:%lld: the row has %lld field%s but the header has %lld", r->path,
                           (long long)r->record_line, (long long)r->field_count, r->field_count == 1 ? "" : "s",
                           (long long)column_count);
        if (rows->count == rows->capacity)
            KN_TRY(csv_rows_grow(rows));
        float *x = rows->x + rows->count * rows->feature_count;
        for (int64_t column = 0; column < column_count; column++) {
            if (column == target_column)
                continue;
            double value;
            if (!csv_parse_number(r->fields[column], &value))
                return csv_field_error(r, header, column);
            *x++ = (float)value;
        }
        if (r->fields[target_column][0] == '\0')
            return csv_field_error(r, header, target_column);
        rows->target_text[rows->count] = r->fields[target_column];
        rows->line[rows->count] = r->record_line;
        rows->count++;
    }
}

/* ---- the target column ---- */

typedef struct csv_name {
    const char *text;
    int64_t index;
} csv_name;

static int csv_name_compare(const void *a, const void *b) {
    return strcmp(((const csv_name *)a)->text, ((const csv_name *)b)->text);
}

static int64_t csv_name_find(const csv_name *names, int64_t count, const char *text) {
    csv_name key = {text, 0};
    const csv_name *hit = bsearch(&key, names, (size_t)count, sizeof *names, csv_name_compare);
    return hit ? hit->index : -1;
}

/* Labels from the caller's class names; *matched is false (and nothing is set) when some value is not one. */
static kiln_status csv_targets_from_given_names(const csv_rows *rows, const kn_data_options *options,
                                                kn_dataset *out, bool *matched) {
    *matched = false;
    csv_name *names = kn_data_malloc((size_t)options->class_count, sizeof *names);
    int64_t *labels = kn_data_malloc((size_t)rows->count, sizeof *labels);
    if (!names || !labels) {
        free(names);
        free(labels);
        return kn_data_nomem(rows->path, "the class names", (size_t)rows->count, sizeof *labels);
    }
    for (int64_t i = 0; i < options->class_count; i++)
        names[i] = (csv_name){options->class_names[i], i};
    qsort(names, (size_t)options->class_count, sizeof *names, csv_name_compare);
    bool all_known = true;
    for (int64_t row = 0; row < rows->count && all_known; row++) {
        labels[row] = csv_name_find(names, options->class_count, rows->target_text[row]);
        all_known = labels[row] >= 0;
    }
    free(names);
    if (!all_known) {
        free(labels);
        return KILN_OK;
    }
    *matched = true;
    out->labels = labels;
    return kn_data_set_class_names(out, options->class_names, options->class_count);
}

/* Whether the whole field reads as a number, finite or not ("nan", "inf", "1e999" too); spaces after it
 * are allowed. */
static bool csv_is_number(const char *field, double *value) {
    char *end;
    *value = strtod(field, &end);
    if (end == field)
        return false;
    while (*end == ' ' || *end == '\t')
        end++;
    return *end == '\0';
}

/* "d.csv:7: column 5 ('label'): " for the target field of `row`, into buf. */
static const char *csv_target_where(const csv_rows *rows, int64_t row, char *buf, size_t size) {
    char name[48];
    kn_data_snippet(rows->target_name, strlen(rows->target_name), name, sizeof name);
    snprintf(buf, size, "%s:%lld: column %lld ('%s')", rows->path, (long long)rows->line[row],
             (long long)rows->target_column + 1, name);
    return buf;
}

static bool csv_is_class_index(double value) {
    return value >= 0 && value < KN_DATA_MAX_CLASSES && value == floor(value);
}

/* Value targets (and labels when all are class indices, else the first row that is not one goes into
 * out->not_labels); *numeric is false (and nothing is set) when some value is not a number. A value that
 * is a number but not a finite float is an error. */
static kiln_status csv_targets_from_numbers(const csv_rows *rows, kn_dataset *out, bool *numeric) {
    *numeric = false;
    for (int64_t row = 0; row < rows->count; row++) {
        double value;
        if (!csv_is_number(rows->target_text[row], &value))
            return KILN_OK;
    }
    float *targets = kn_data_malloc((size_t)rows->count, sizeof *targets); // (count, 1)
    if (!targets)
        return kn_data_nomem(rows->path, "the targets", (size_t)rows->count, sizeof *targets);
    int64_t first_not_class = -1;
    char where[256], shown[48];
    for (int64_t row = 0; row < rows->count; row++) {
        double value;
        csv_is_number(rows->target_text[row], &value);
        targets[row] = (float)value;
        if (!isfinite(targets[row])) {
            free(targets);
            const char *text = rows->target_text[row];
            return kn_fail(KILN_ERR_FORMAT, "%s: the target '%s' is not a finite number",
                           csv_target_where(rows, row, where, sizeof where),
                           kn_data_snippet(text, strlen(text), shown, sizeof shown));
        }
        if (first_not_class < 0 && !csv_is_class_index(value))
            first_not_class = row;
    }
    *numeric = true;
    out->targets = targets;
    out->target_width = 1;
    if (first_not_class >= 0) {
        const char *text = rows->target_text[first_not_class];
        char message[512];
        snprintf(message, sizeof message, "%s: %s is not a class index (a whole number from 0 to %d)",
                 csv_target_where(rows, first_not_class, where, sizeof where),
                 kn_data_snippet(text, strlen(text), shown, sizeof shown), KN_DATA_MAX_CLASSES - 1);
        if (!(out->not_labels = kn_data_strdup(message)))
            return kn_fail(KILN_ERR_NOMEM, "out of memory");
        return KILN_OK;
    }
    out->labels = kn_data_malloc((size_t)rows->count, sizeof *out->labels); // (count)
    if (!out->labels)
        return kn_data_nomem(rows->path, "the labels", (size_t)rows->count, sizeof *out->labels);
    for (int64_t row = 0; row < rows->count; row++)
        out->labels[row] = (int64_t)targets[row];
    out->class_count = kn_data_class_count(out->labels, rows->count);
    return KILN_OK;
}

/* Labels indexing the sorted unique target values, which become the class names. */
static kiln_status csv_targets_from_strings(const csv_rows *rows, kn_dataset *out) {
    csv_name *sorted = kn_data_malloc((size_t)rows->count, sizeof *sorted);
    const char **unique = kn_data_malloc((size_t)rows->count, sizeof *unique);
    out->labels = kn_data_malloc((size_t)rows->count, sizeof *out->labels); // (count)
    if (!sorted || !unique || !out->labels) {
        free(sorted);
        free(unique);
        return kn_data_nomem(rows->path, "the class names", (size_t)rows->count, sizeof *sorted);
    }
    for (int64_t row = 0; row < rows->count; row++)
        sorted[row] = (csv_name){rows->target_text[row], row};
    qsort(sorted, (size_t)rows->count, sizeof *sorted, csv_name_compare);
    int64_t class_count = 0;
    for (int64_t i = 0; i < rows->count; i++) {
        if (class_count == 0 || strcmp(unique[class_count - 1], sorted[i].text) != 0)
            unique[class_count++] = sorted[i].text;
        out->labels[sorted[i].index] = class_count - 1;
    }
    kiln_status st = kn_data_set_class_names(out, unique, class_count);
    free(sorted);
    free(unique);
    return st;
}

static kiln_status csv_fill_targets(const csv_rows *rows, const kn_data_options *options, kn_dataset *out) {
    bool done = false;
    if (options->class_names && options->class_count > 0)
        KN_TRY(csv_targets_from_given_names(rows, options, out, &done));
    if (!done)
        KN_TRY(csv_targets_from_numbers(rows, out, &done));
    if (!done)
        KN_TRY(csv_targets_from_strings(rows, out));
    return KILN_OK;
}

/* ---- standardisation ---- */

static kiln_status csv_compute_stats(const csv_rows *rows, float *mean, float *std) {
    int64_t n = rows->count, features = rows->feature_count;
    double *sum = calloc((size_t)features, sizeof *sum);
    double *squares = calloc((size_t)features, sizeof *squares);
    if (!sum || !squares) {
        free(sum);
        free(squares);
        return kn_data_nomem(rows->path, "the feature statistics", (size_t)features, 2 * sizeof *sum);
    }
    for (int64_t row = 0; row < n; row++)
        for (int64_t f = 0; f < features; f++)
            sum[f] += rows->x[row * features + f];
    for (int64_t f = 0; f < features; f++)
        mean[f] = (float)(sum[f] / (double)n);
    for (int64_t row = 0; row < n; row++)
        for (int64_t f = 0; f < features; f++) {
            double centred = rows->x[row * features + f] - (double)mean[f];
            squares[f] += centred * centred;
        }
    for (int64_t f = 0; f < features; f++) {
        std[f] = (float)sqrt(squares[f] / (double)n);
        if (!(std[f] > 0))
            std[f] = 1; /* a constant column: centre it, do not divide by zero */
    }
    free(sum);
    free(squares);
    return KILN_OK;
}

static kiln_status csv_check_given_stats(const char *path, const kn_data_options *options, int64_t features) {
    if (!options->feature_mean || !options->feature_std)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s: feature statistics need both a mean and a std", path);
    if (options->feature_count != features)
        return kn_fail(KILN_ERR_SHAPE, "%s: has %lld features but the given statistics are for %lld", path,
                       (long long)features, (long long)options->feature_count);
    for (int64_t f = 0; f < features; f++)
        if (!isfinite(options->feature_mean[f]) || !(options->feature_std[f] > 0) ||
            !isfinite(options->feature_std[f]))
            return kn_fail(KILN_ERR_INVALID_ARG, "%s: given statistics for feature %lld are mean %g, std %g", path,
                           (long long)f + 1, (double)options->feature_mean[f], (double)options->feature_std[f]);
    return KILN_OK;
}

static kiln_status csv_standardise(const csv_rows *rows, const kn_data_options *options, const char *path,
                                   kn_dataset *out) {
    int64_t features = rows->feature_count;
    out->feature_mean = kn_data_malloc((size_t)features, sizeof(float)); // (features)
    out->feature_std = kn_data_malloc((size_t)features, sizeof(float));  // (features)
    if (!out->feature_mean || !out->feature_std)
        return kn_data_nomem(path, "the feature statistics", (size_t)features, sizeof(float));
    if (options->feature_mean || options->feature_std) {
        KN_TRY(csv_check_given_stats(path, options, features));
        memcpy(out->feature_mean, options->feature_mean, (size_t)features * sizeof(float));
        memcpy(out->feature_std, options->feature_std, (size_t)features * sizeof(float));
    } else {
        KN_TRY(csv_compute_stats(rows, out->feature_mean, out->feature_std));
    }
    for (int64_t row = 0; row < rows->count; row++) {
        float *x = rows->x + row * features;
        for (int64_t f = 0; f < features; f++) {
            x[f] = (float)(((double)x[f] - out->feature_mean[f]) / out->feature_std[f]);
            if (!isfinite(x[f]))
                return kn_fail(KILN_ERR_NUMERIC, "%s:%lld: feature %lld overflows a float once standardised",
                               path, (long long)rows->line[row], (long long)f + 1);
        }
    }
    return KILN_OK;
}

/* ---- the loader ---- */

static kiln_status csv_find_target(const csv_reader *r, char **header, int64_t column_count,
                                   const char *label_column, int64_t *target_column) {
    if (!label_column) {
        *target_column = column_count - 1;
        return KILN_OK;
    }
    *target_column = -1;
    for (int64_t column = 0; column < column_count; column++) {
        if (strcmp(header[column], label_column) != 0)
            continue;
        if (*target_column >= 0)
            return kn_fail(KILN_ERR_INVALID_ARG, "%s: the header names column '%s' twice (columns %lld and %lld)",
                           r->path, label_column, (long long)*target_column + 1, (long long)column + 1);
        *target_column = column;
    }
    if (*target_column < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s: the header has no column named '%s'", r->path, label_column);
    return KILN_OK;
}

/* The feature columns' names (the header without the target) into out->columns, checked against the ones a
 * model was trained on when the options give them. */
static kiln_status csv_take_columns(const char *path, char **header, int64_t column_count, int64_t target_column,
                                    const kn_data_options *options, kn_dataset *out) {
    const char **names = kn_data_malloc((size_t)column_count, sizeof *names);
    if (!names)
        return kn_data_nomem(path, "the header", (size_t)column_count, sizeof *names);
    int64_t n = 0;
    for (int64_t column = 0; column < column_count; column++)
        if (column != target_column)
            names[n++] = header[column];
    kiln_status st = options->columns ? kn_data_check_columns(path, names, n, options->columns) : KILN_OK;
    if (st == KILN_OK && !(out->columns = kn_data_columns_join(names, n)))
        st = kn_data_nomem(path, "the column names", (size_t)n, sizeof *names);
    free(names);
    return st;
}

/* Reads the header and rows and fills `out`; `r` holds the file text. */
static kiln_status csv_load_text(csv_reader *r, const kn_data_options *options, csv_rows *rows,
                                 kn_dataset *out) {
    /* Fields are C strings: a NUL byte would silently cut one short. */
    const char *nul = memchr(r->text, '\0', r->size);
    if (nul) {
        int64_t line = 1;
        for (const char *p = r->text; p < nul; p++)
            line += *p == '\n';
        return kn_fail(KILN_ERR_FORMAT, "%s:%lld: NUL byte in the text (is this a binary file?)", r->path,
                       (long long)line);
    }
    /* A UTF-8 byte order mark (spreadsheet exports) is not part of the first column's name. */
    if (r->size >= 3 && memcmp(r->text, "\xEF\xBB\xBF", 3) == 0)
        r->pos = 3;
    bool found;
    KN_TRY(csv_next_record(r, &found));
    if (!found)
        return kn_fail(KILN_ERR_FORMAT, "%s: the file is empty; a CSV needs a header row and data rows", r->path);
    int64_t column_count = r->field_count;
    if (column_count < 2)
        return kn_fail(KILN_ERR_FORMAT, "%s:%lld: the header has %lld column; kiln needs features and a target",
                       r->path, (long long)r->record_line, (long long)column_count);
    char **header = kn_data_malloc((size_t)column_count, sizeof *header);
    if (!header)
        return kn_data_nomem(r->path, "the header", (size_t)column_count, sizeof *header);
    memcpy(header, r->fields, (size_t)column_count * sizeof *header);

    int64_t target_column;
    kiln_status st = csv_find_target(r, header, column_count, options->label_column, &target_column);
    rows->feature_count = column_count - 1;
    rows->target_column = target_column;
    rows->target_name = st == KILN_OK ? header[target_column] : NULL;
    if (st == KILN_OK)
        st = csv_take_columns(r->path, header, column_count, target_column, options, out);
    if (st == KILN_OK)
        st = csv_read_rows(r, header, column_count, target_column, rows);
    free(header);
    KN_TRY(st);
    if (rows->count == 0)
        return kn_fail(KILN_ERR_FORMAT, "%s: the file has a header but no data rows", r->path);

    out->count = rows->count;
    out->sample_shape = kn_shape_of(1, (int64_t[]){rows->feature_count});
    out->sample_size = rows->feature_count;
    KN_TRY(csv_fill_targets(rows, options, out));
    if (!options->raw_features)
        KN_TRY(csv_standardise(rows, options, r->path, out));
    out->x = rows->x; // (count, feature_count)
    rows->x = NULL;
    return KILN_OK;
}

kiln_status kn_data_load_csv(const char *path, const kn_data_options *options, kn_dataset *out) {
    csv_reader r = {.path = path, .line = 1};
    KN_TRY(kn_data_file_slurp(path, &r.text, &r.size));
    csv_rows rows = {.path = path};
    kiln_status st = csv_load_text(&r, options, &rows, out);
    free(rows.x);
    free(rows.target_text);
    free(rows.line);
    free(r.fields);
    free(r.text);
    return st;
}
