/* Reading `kiln run`'s INPUT files into batches: see inputs.h for what each form gives. */
#include "inputs.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/status.h"
#include "image.h"
#include "train/data.h"
#include "train/npy.h"

void cli_batch_init(cli_batch *b, const char *name, const kn_shape *shape, kn_dtype dtype) {
    memset(b, 0, sizeof *b);
    b->input_name = name;
    b->model_shape = *shape;
    b->model_dtype = dtype;
    b->dtype = dtype;
}

void cli_batch_free(cli_batch *b) {
    for (int64_t i = 0; b->labels && i < b->count; i++)
        free(b->labels[i]);
    free(b->labels);
    free(b->data);
    for (int i = 0; i < b->n_text_blocks; i++)
        free(b->text_blocks[i]);
    free(b->text_blocks);
    memset(b, 0, sizeof *b);
}

kn_shape cli_batch_shape(const cli_batch *b) {
    if (b->whole)
        return (kn_shape){.ndim = 0};
    kn_shape shape = {.ndim = b->sample.ndim + 1, .d = {b->count}};
    memcpy(shape.d + 1, b->sample.d, sizeof(int64_t) * (size_t)b->sample.ndim);
    return shape;
}

/* The model input's shape without its batch dimension; *fixed tells whether no dimension is open. */
static kn_shape model_sample(const cli_batch *b, bool *fixed) {
    kn_shape sample = {.ndim = b->model_shape.ndim > 0 ? b->model_shape.ndim - 1 : 0};
    *fixed = true;
    for (int d = 0; d < sample.ndim; d++) {
        sample.d[d] = b->model_shape.d[d + 1];
        *fixed &= sample.d[d] >= 0;
    }
    return sample;
}

static char *format_label(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *format_label(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s) {
        va_start(ap, fmt);
        vsnprintf(s, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    return s;
}

/* Appends n samples of `sample` shape from `data`, labelled by the file (one sample), its CSV lines, or
 * its indices ("x.npy[3]"). `whole`: the file is the input's whole value, which no other file can join. */
static kiln_status append(cli_batch *b, const char *path, const kn_shape *sample, kn_dtype dtype, int64_t n,
                          const void *data, const int64_t *lines, bool whole) {
    char have[96], got[96];
    if (b->first_path && (whole || b->whole)) {
        return kn_fail(KILN_ERR_SHAPE, "%s: input '%s' takes one file here: %s is its whole value (a 0-d array, or "
                       "any array for an input of rank 0), not a batch that files can join", path, b->input_name,
                       whole ? path : b->first_path);
    } else if (!b->first_path) {
        b->whole = whole;
        b->first_path = path;
        b->sample = *sample;
        b->dtype = dtype;
    } else if (!kn_shape_equal(sample, &b->sample)) {
        return kn_fail(KILN_ERR_SHAPE, "%s gives samples of %s for input '%s', but the files before gave %s", path,
                       kn_shape_str(sample, got, sizeof got), b->input_name, kn_shape_str(&b->sample, have, sizeof have));
    } else if (dtype != b->dtype) {
        return kn_fail(KILN_ERR_INVALID_ARG, "%s holds %s data for input '%s', but the files before held %s", path,
                       kn_dtype_name(dtype), b->input_name, kn_dtype_name(b->dtype));
    }
    size_t sample_bytes, bytes, total;
    size_t element = dtype == KN_STRING ? sizeof(const char *) : kn_dtype_size(dtype); // strings: a pointer each
    if (kn_shape_numel(sample) < 0 || !kn_size_mul((size_t)kn_shape_numel(sample), element, &sample_bytes) || !kn_size_mul(sample_bytes, (size_t)n, &bytes) ||
        !kn_size_add(b->bytes, bytes, &total))
        return kn_fail(KILN_ERR_NOMEM, "%s: the batch of input '%s' would overflow", path, b->input_name);
    if (total > b->capacity || !b->data) { // allocated even for no bytes: the session takes no NULL data
        size_t capacity = total > 2 * b->capacity ? total : 2 * b->capacity;
        unsigned char *grown = realloc(b->data, capacity ? capacity : 1);
        if (!grown)
            return kn_fail(KILN_ERR_NOMEM, "%s: no memory for a batch of %zu bytes", path, capacity);
        b->data = grown;
        b->capacity = capacity;
    }
    char **labels = realloc(b->labels, sizeof(char *) * (size_t)(b->count + n ? b->count + n : 1));
    if (!labels)
        return kn_fail(KILN_ERR_NOMEM, "%s: no memory for %lld sample labels", path, (long long)(b->count + n));
    b->labels = labels;
    for (int64_t i = 0; i < n; i++) {
        char *label = lines ? format_label("%s:%lld", path, (long long)lines[i])
                      : n == 1 ? format_label("%s", path)
                               : format_label("%s[%lld]", path, (long long)i);
        if (!label)
            return kn_fail(KILN_ERR_NOMEM, "out of memory labelling samples");
        b->labels[b->count++] = label;
    }
    if (bytes) // samples of no elements leave b->data unallocated
        memcpy(b->data + b->bytes, data, bytes);
    b->bytes = total;
    return KILN_OK;
}

/* x' = (x - mean) / std computed in double and rounded once, as kiln's CSV loader standardises. */
static float standardize(float x, float mean, float std) { return (float)(((double)x - mean) / std); }

/* ---- .npy --------------------------------------------------------------------------------------- */

/* The shape of the array's samples and their count; *whole when the array is the input's whole value: a
 * 0-d array, or any array for an input of rank 0, has no batch dimension to stack samples along. */
static kiln_status npy_samples(const cli_batch *b, const char *path, const kn_shape *shape, bool batch_dim,
                               kn_shape *sample, int64_t *n, bool *whole) {
    char have[96], want[96];
    *whole = shape->ndim == 0 || b->model_shape.ndim == 0;
    if (*whole) {
        *n = 1;
        *sample = *shape;
        return KILN_OK;
    }
    if (batch_dim) { // (n, sample...), n may be 0: a batch of no samples
        *n = shape->d[0];
        sample->ndim = shape->ndim - 1;
        memcpy(sample->d, shape->d + 1, sizeof(int64_t) * (size_t)sample->ndim);
        return KILN_OK;
    }
    bool fixed;
    kn_shape expected = model_sample(b, &fixed);
    *n = 1;
    if (shape->ndim == expected.ndim) {
        *sample = *shape;
        return KILN_OK;
    }
    if (fixed && kn_shape_numel(shape) == kn_shape_numel(&expected)) {
        *sample = expected;
        return KILN_OK;
    }
    return kn_fail(KILN_ERR_SHAPE, "%s: an array of %s is not one sample of input '%s' %s (use --batch-dim for an "
                   "array holding a batch)", path, kn_shape_str(shape, have, sizeof have), b->input_name,
                   cli_input_shape_str(&b->model_shape, want, sizeof want));
}

/* Keeps a text array's block (its pointers, then the strings) for as long as the batch points into it. */
static kiln_status keep_text(cli_batch *b, const char *path, void *block) {
    void **grown = realloc(b->text_blocks, sizeof *grown * (size_t)(b->n_text_blocks + 1));
    if (!grown)
        return kn_fail(KILN_ERR_NOMEM, "%s: out of memory keeping its strings", path);
    b->text_blocks = grown;
    b->text_blocks[b->n_text_blocks++] = block;
    return KILN_OK;
}

static kiln_status add_npy(cli_batch *b, const char *path, const cli_input_options *options) {
    kn_tensor t;
    KN_TRY(kn_npy_read(path, &t));
    kiln_status st = KILN_OK;
    if (t.dtype == KN_STRING) { // the batch holds pointers to the strings, which stay in the file's block
        st = keep_text(b, path, t.data);
        if (st != KILN_OK)
            free(t.data);
        kn_shape sample;
        int64_t n = 0;
        bool whole = false;
        if (st == KILN_OK)
            st = npy_samples(b, path, &t.shape, options->batch_dim, &sample, &n, &whole);
        return st == KILN_OK ? append(b, path, &sample, t.dtype, n, t.data, NULL, whole) : st;
    }
    if (t.dtype == KN_U16 && b->model_dtype == KN_BF16)
        t.dtype = KN_BF16; // numpy has no bfloat16: uint16 arrays hold its bit patterns
    // A float input takes any array as kiln's training loader reads it (uint8 pixels scaled by 1/255).
    if (b->model_dtype == KN_F32)
        st = kn_npy_to_f32(path, &t);
    kn_shape sample;
    int64_t n = 0;
    bool whole = false;
    if (st == KILN_OK)
        st = npy_samples(b, path, &t.shape, options->batch_dim, &sample, &n, &whole);
    if (st == KILN_OK)
        st = append(b, path, &sample, t.dtype, n, t.data, NULL, whole);
    free(t.data);
    return st;
}

/* ---- images ------------------------------------------------------------------------------------- */

static kiln_status add_image(cli_batch *b, const char *path, const cli_input_options *options) {
    const kn_shape *m = &b->model_shape;
    char want[96];
    if (m->ndim != 4 || m->d[1] < 1)
        return kn_fail(KILN_ERR_SHAPE, "%s: input '%s' %s is not an image input (N, C, H, W) with a known channel "
                       "count", path, b->input_name, cli_input_shape_str(m, want, sizeof want));
    int64_t channels = m->d[1], height = m->d[2], width = m->d[3];
    float *pixels; // (channels, height, width)
    KN_TRY(cli_image_load(path, channels, &height, &width, &pixels));
    int64_t plane = height * width, size = channels * plane;
    kiln_status st = KILN_OK;
    if (options->n_norm == channels || options->n_norm == size) {
        int64_t per = options->n_norm == channels ? plane : 1; // values sharing one mean/std
        for (int64_t i = 0; i < size; i++)
            pixels[i] = standardize(pixels[i], options->mean[i / per], options->std[i / per]);
    } else if (options->n_norm) {
        st = kn_fail(KILN_ERR_SHAPE, "%s: the model's input statistics have %lld values, but a (%lld, %lld, %lld) "
                     "image needs one per channel or per value", path, (long long)options->n_norm,
                     (long long)channels, (long long)height, (long long)width);
    }
    kn_shape sample = kn_shape_of(3, (int64_t[]){channels, height, width});
    if (st == KILN_OK)
        st = append(b, path, &sample, KN_F32, 1, pixels, NULL, false);
    free(pixels);
    return st;
}

/* ---- CSV ---------------------------------------------------------------------------------------- */

/* Cuts the line at *text off the text in place (without its LF or CRLF) and advances *text past it. */
static char *next_line(char **text) {
    char *line = *text, *end = strchr(line, '\n');
    *text = end ? end + 1 : line + strlen(line);
    if (end) {
        *end = '\0';
        if (end > line && end[-1] == '\r')
            end[-1] = '\0';
    }
    return line;
}

/* Whether the line at `text` holds nothing but spaces. */
static bool blank(const char *text) {
    char next = text[strspn(text, " \t\r")];
    return next == '\n' || next == '\0';
}

/* Cuts the next line of *text into at most max fields in place (trimmed of spaces and surrounding double
 * quotes); returns the field count, which may exceed max. */
static int64_t split_line(char **text, char **fields, int64_t max) {
    char *line = next_line(text);
    int64_t count = 0;
    for (char *field = line; field; count++) {
        char *comma = strchr(field, ',');
        if (comma)
            *comma = '\0';
        while (*field == ' ' || *field == '\t')
            field++;
        size_t len = strlen(field);
        while (len && (field[len - 1] == ' ' || field[len - 1] == '\t'))
            field[--len] = '\0';
        if (len >= 2 && field[0] == '"' && field[len - 1] == '"') {
            field[len - 1] = '\0';
            field++;
        }
        if (count < max)
            fields[count] = field;
        field = comma ? comma + 1 : NULL;
    }
    return count;
}

/* Which column of the header is the target to skip: -1 for none. Only the first features + 1 names of
 * `header` are stored; with more columns this fails before reading them. */
static kiln_status find_target(const char *path, char **header, int64_t columns, int64_t features,
                               const char *label, const char *input_name, int64_t *target) {
    *target = -1;
    if (columns != features && columns != features + 1)
        return kn_fail(KILN_ERR_SHAPE, "%s: %lld columns, but input '%s' takes %lld features (plus an optional "
                       "target column)", path, (long long)columns, input_name, (long long)features);
    if (!label) {
        *target = columns == features + 1 ? columns - 1 : -1;
        return KILN_OK;
    }
    for (int64_t c = 0; c < columns && *target < 0; c++)
        if (strcmp(header[c], label) == 0)
            *target = c;
    if (*target < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s: no column is named '%s'", path, label);
    if (columns != features + 1)
        return kn_fail(KILN_ERR_SHAPE, "%s: without its target column '%s' it has %lld features; input '%s' takes "
                       "%lld", path, label, (long long)columns - 1, input_name, (long long)features);
    return KILN_OK;
}

/* The header's feature columns (all but the target) against the ones the model was trained on. */
static kiln_status check_columns(const char *path, char **header, int64_t columns, int64_t target,
                                 const char *expected) {
    const char **names = malloc(sizeof *names * (size_t)columns);
    if (!names)
        return kn_fail(KILN_ERR_NOMEM, "out of memory reading %s", path);
    int64_t n = 0;
    for (int64_t c = 0; c < columns; c++)
        if (c != target)
            names[n++] = header[c];
    kiln_status st = kn_data_check_columns(path, names, n, expected);
    free(names);
    return st;
}

/* Parses field as a number a float can hold. */
static bool parse_feature(const char *field, float *value) {
    char *end;
    double v = strtod(field, &end);
    *value = (float)v;
    return end != field && *end == '\0' && isfinite(v) && isfinite(*value);
}

typedef struct csv_table {
    float *x;        /* (rows, features) */
    int64_t *lines;  /* (rows) line numbers */
    int64_t rows, capacity;
} csv_table;

static kiln_status read_rows(const char *path, char *text, int64_t features, const cli_input_options *options,
                             const char *input_name, csv_table *t) {
    if (strncmp(text, "\xef\xbb\xbf", 3) == 0) // a UTF-8 byte order mark
        text += 3;
    int64_t line = 1; // of the next line to read
    for (; *text && blank(text); line++)
        next_line(&text);
    if (!*text)
        return kn_fail(KILN_ERR_FORMAT, "%s: empty; a header row and one row per sample are expected", path);
    // The header may name one target column beside the features; more columns are an error.
    char **fields = malloc(sizeof(char *) * (size_t)(features + 1));
    if (!fields)
        return kn_fail(KILN_ERR_NOMEM, "out of memory reading %s", path);
    int64_t columns = split_line(&text, fields, features + 1), target;
    kiln_status st = find_target(path, fields, columns, features, options->label, input_name, &target);
    if (st == KILN_OK && options->columns)
        st = check_columns(path, fields, columns, target, options->columns);
    for (line++; st == KILN_OK && *text; line++) {
        if (blank(text)) {
            next_line(&text);
            continue;
        }
        int64_t count = split_line(&text, fields, columns);
        if (count != columns) {
            st = kn_fail(KILN_ERR_FORMAT, "%s:%lld: %lld fields, but the header has %lld", path, (long long)line,
                         (long long)count, (long long)columns);
            break;
        }
        if (t->rows == t->capacity) {
            t->capacity = t->capacity ? 2 * t->capacity : 64;
            size_t bytes;
            bool fits = kn_size_mul(sizeof(float) * (size_t)t->capacity, (size_t)features, &bytes);
            float *x = fits ? realloc(t->x, bytes) : NULL;
            int64_t *lines = x ? realloc(t->lines, sizeof(int64_t) * (size_t)t->capacity) : NULL;
            t->x = x ? x : t->x;
            t->lines = lines ? lines : t->lines;
            if (!x || !lines) {
                st = kn_fail(KILN_ERR_NOMEM, "%s: no memory for %lld rows", path, (long long)t->capacity);
                break;
            }
        }
        float *row = t->x + t->rows * features;
        for (int64_t c = 0, f = 0; c < columns && st == KILN_OK; c++) {
            if (c == target)
                continue;
            if (!parse_feature(fields[c], &row[f]))
                st = kn_fail(KILN_ERR_FORMAT, "%s:%lld: column %lld: '%.24s' is not a number", path,
                             (long long)line, (long long)c + 1, fields[c]);
            else if (options->n_norm == features)
                row[f] = standardize(row[f], options->mean[f], options->std[f]);
            f++;
        }
        t->lines[t->rows++] = line;
    }
    free(fields);
    if (st == KILN_OK && t->rows == 0)
        st = kn_fail(KILN_ERR_FORMAT, "%s: a header but no rows", path);
    return st;
}

static kiln_status add_csv(cli_batch *b, const char *path, const cli_input_options *options) {
    bool fixed;
    kn_shape sample = model_sample(b, &fixed);
    int64_t features = kn_shape_numel(&sample);
    char want[96];
    if (!fixed || b->model_dtype != KN_F32)
        return kn_fail(KILN_ERR_SHAPE, "%s: CSV rows fill a float input of fixed sample size; input '%s' is %s %s",
                       path, b->input_name, cli_input_shape_str(&b->model_shape, want, sizeof want),
                       kn_dtype_name(b->model_dtype));
    if (options->n_norm && options->n_norm != features)
        return kn_fail(KILN_ERR_SHAPE, "%s: the model's input statistics have %lld values for %lld features", path,
                       (long long)options->n_norm, (long long)features);
    unsigned char *bytes;
    size_t size;
    KN_TRY(cli_read_file(path, &bytes, &size));
    csv_table t = {0};
    kiln_status st = memchr(bytes, '\0', size) ? kn_fail(KILN_ERR_FORMAT, "%s: a binary file, not CSV text", path)
                                               : read_rows(path, (char *)bytes, features, options, b->input_name, &t);
    if (st == KILN_OK)
        st = append(b, path, &sample, KN_F32, t.rows, t.x, t.lines, false);
    free(t.x);
    free(t.lines);
    free(bytes);
    return st;
}

kiln_status cli_batch_add_file(cli_batch *b, const char *path, const cli_input_options *options) {
    if (cli_has_suffix(path, ".npy"))
        return add_npy(b, path, options);
    if (cli_has_suffix(path, ".png") || cli_has_suffix(path, ".jpg") || cli_has_suffix(path, ".jpeg"))
        return add_image(b, path, options);
    if (cli_has_suffix(path, ".csv"))
        return add_csv(b, path, options);
    return kn_fail(KILN_ERR_INVALID_ARG, "%s: kiln run reads .npy, .png, .jpg and .csv inputs", path);
}
