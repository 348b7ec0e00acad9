/* Datasets: choosing a loader for a DATA string, splitting off a validation set, and batching. */
#include "train/data.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/graph.h"
#include "core/rng.h"
#include "core/status.h"
#include "train/data_internal.h"

/* "X.npy,Y.npy": splits at the comma and loads the pair. */
static kiln_status load_npy_pair(const char *data, kn_dataset *out) {
    const char *comma = strchr(data, ',');
    if (comma == data || comma[1] == '\0' || strchr(comma + 1, ','))
        return kn_fail(KILN_ERR_INVALID_ARG, "DATA '%s': a numpy pair is written X.npy,Y.npy", data);
    size_t x_length = (size_t)(comma - data);
    char *x_path = malloc(x_length + 1);
    if (!x_path)
        return kn_fail(KILN_ERR_NOMEM, "out of memory");
    memcpy(x_path, data, x_length);
    x_path[x_length] = '\0';
    kiln_status st = kn_data_load_npy(x_path, comma + 1, out);
    free(x_path);
    return st;
}

static kiln_status load_by_form(const char *data, const kn_data_options *options, kn_dataset *out) {
    bool csv = kn_data_ends_with(data, ".csv") || kn_data_ends_with(data, ".csv.gz");
    if (!csv && (options->label_column || options->feature_mean || options->feature_std))
        return kn_fail(KILN_ERR_INVALID_ARG,
                       "DATA '%s': a label column and feature statistics apply only to CSV data", data);
    if (strcmp(data, "fashion-mnist") == 0)
        return kn_data_load_fashion_mnist(false, out);
    if (strcmp(data, "fashion-mnist:test") == 0)
        return kn_data_load_fashion_mnist(true, out);
    if (strchr(data, ','))
        return load_npy_pair(data, out);
    if (csv)
        return kn_data_load_csv(data, options, out);
    if (kn_data_ends_with(data, ".npy"))
        return kn_fail(KILN_ERR_INVALID_ARG, "DATA '%s': numpy data is a pair of inputs and targets, X.npy,Y.npy",
                       data);
    return kn_data_load_idx(data, out);
}

static void print_summary(const kn_dataset *ds, double seconds) {
    char shape[96];
    fprintf(stderr, "data: %s: %lld sample%s of %s", ds->source, (long long)ds->count, ds->count == 1 ? "" : "s",
            kn_shape_str(&ds->sample_shape, shape, sizeof shape));
    if (ds->class_count)
        fprintf(stderr, ", %lld class%s", (long long)ds->class_count, ds->class_count == 1 ? "" : "es");
    if (ds->targets)
        fprintf(stderr, ", targets of width %lld", (long long)ds->target_width);
    fprintf(stderr, " (%.2f s)\n", seconds);
}

kiln_status kn_dataset_load(const char *data, const kn_data_options *options, kn_dataset *out) {
    static const kn_data_options defaults = {0};
    if (!options)
        options = &defaults;
    memset(out, 0, sizeof *out);
    if (!data || !*data)
        return kn_fail(KILN_ERR_INVALID_ARG, "DATA is empty");
    double start = kn_seconds_now();
    kiln_status st = load_by_form(data, options, out);
    if (st == KILN_OK && !(out->source = kn_data_strdup(data)))
        st = kn_fail(KILN_ERR_NOMEM, "out of memory");
    if (st != KILN_OK) {
        kn_dataset_free(out);
        return st;
    }
    if (!options->quiet)
        print_summary(out, kn_seconds_now() - start);
    return KILN_OK;
}

void kn_dataset_free(kn_dataset *ds) {
    free(ds->x);
    free(ds->labels);
    free(ds->targets);
    if (ds->class_names)
        for (int64_t i = 0; i < ds->class_count; i++)
            free(ds->class_names[i]);
    free(ds->class_names);
    free(ds->feature_mean);
    free(ds->feature_std);
    free(ds->source);
    free(ds->not_labels);
    free(ds->columns);
    memset(ds, 0, sizeof *ds);
}

/* ---- splitting ---- */

static void shuffle_indices(int64_t *order, int64_t n, kn_rng *rng) {
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)kn_rng_below(rng, (uint64_t)i + 1);
        int64_t kept = order[i];
        order[i] = order[j];
        order[j] = kept;
    }
}

static kiln_status copy_floats(float **dst, const float *src, size_t count) {
    *dst = NULL;
    if (!src)
        return KILN_OK;
    *dst = kn_data_malloc(count, sizeof **dst);
    if (!*dst)
        return kn_fail(KILN_ERR_NOMEM, "out of memory copying %zu floats", count);
    memcpy(*dst, src, count * sizeof **dst);
    return KILN_OK;
}

/* Copies the samples i with picked[i] == want (there are `count` of them), keeping their order. */
static kiln_status copy_subset(const kn_dataset *all, const bool *picked, bool want, int64_t count,
                               kn_dataset *out) {
    out->count = count;
    out->sample_shape = all->sample_shape;
    out->sample_size = all->sample_size;
    out->target_width = all->target_width;
    out->x = kn_data_malloc((size_t)count, (size_t)all->sample_size * sizeof(float)); // (count, sample_size)
    if (!out->x)
        return kn_fail(KILN_ERR_NOMEM, "out of memory copying %lld samples", (long long)count);
    if (all->labels && !(out->labels = kn_data_malloc((size_t)count, sizeof(int64_t)))) // (count)
        return kn_fail(KILN_ERR_NOMEM, "out of memory copying %lld labels", (long long)count);
    if (all->targets && !(out->targets = kn_data_malloc((size_t)count, (size_t)all->target_width * sizeof(float))))
        return kn_fail(KILN_ERR_NOMEM, "out of memory copying %lld targets", (long long)count);
    int64_t row = 0;
    for (int64_t i = 0; i < all->count; i++) {
        if (picked[i] != want)
            continue;
        memcpy(out->x + row * all->sample_size, all->x + i * all->sample_size,
               (size_t)all->sample_size * sizeof(float));
        if (out->labels)
            out->labels[row] = all->labels[i];
        if (out->targets)
            memcpy(out->targets + row * all->target_width, all->targets + i * all->target_width,
                   (size_t)all->target_width * sizeof(float));
        row++;
    }
    out->class_count = all->class_count;
    if (all->class_names)
        KN_TRY(kn_data_set_class_names(out, (const char *const *)all->class_names, all->class_count));
    KN_TRY(copy_floats(&out->feature_mean, all->feature_mean, (size_t)all->sample_size));
    KN_TRY(copy_floats(&out->feature_std, all->feature_std, (size_t)all->sample_size));
    if (!(out->source = kn_data_strdup(all->source ? all->source : "")) ||
        (all->not_labels && !(out->not_labels = kn_data_strdup(all->not_labels))) ||
        (all->columns && !(out->columns = kn_data_strdup(all->columns))))
        return kn_fail(KILN_ERR_NOMEM, "out of memory");
    return KILN_OK;
}

kiln_status kn_dataset_split(const kn_dataset *all, double val_fraction, uint64_t seed, kn_dataset *train,
                             kn_dataset *val) {
    memset(train, 0, sizeof *train);
    memset(val, 0, sizeof *val);
    if (!(val_fraction > 0 && val_fraction < 1))
        return kn_fail(KILN_ERR_INVALID_ARG, "validation fraction %g is not between 0 and 1", val_fraction);
    int64_t val_count = (int64_t)llround((double)all->count * val_fraction);
    if (val_count < 1 || val_count >= all->count)
        return kn_fail(KILN_ERR_INVALID_ARG,
                       "validation fraction %g of %lld samples leaves %lld for validation and %lld for training; "
                       "both need at least one",
                       val_fraction, (long long)all->count, (long long)val_count,
                       (long long)(all->count - val_count));

    int64_t *order = kn_data_malloc((size_t)all->count, sizeof *order);
    bool *in_val = calloc((size_t)all->count, sizeof *in_val);
    if (!order || !in_val) {
        free(order);
        free(in_val);
        return kn_fail(KILN_ERR_NOMEM, "out of memory splitting %lld samples", (long long)all->count);
    }
    for (int64_t i = 0; i < all->count; i++)
        order[i] = i;
    kn_rng rng = kn_rng_seeded(seed);
    shuffle_indices(order, all->count, &rng);
    for (int64_t i = all->count - val_count; i < all->count; i++)
        in_val[order[i]] = true;
    free(order);

    kiln_status st = copy_subset(all, in_val, false, all->count - val_count, train);
    if (st == KILN_OK)
        st = copy_subset(all, in_val, true, val_count, val);
    free(in_val);
    if (st != KILN_OK) {
        kn_dataset_free(train);
        kn_dataset_free(val);
    }
    return st;
}

/* ---- batching ---- */

kiln_status kn_batcher_init(kn_batcher *b, const kn_dataset *ds, int64_t batch, bool shuffle, uint64_t seed,
                            int64_t epoch) {
    memset(b, 0, sizeof *b);
    if (batch < 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "batch size %lld is not positive", (long long)batch);
    b->ds = ds;
    b->batch = batch;
    b->order = kn_data_malloc((size_t)ds->count, sizeof *b->order); // (count)
    if (!b->order)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for the order of %lld samples", (long long)ds->count);
    for (int64_t i = 0; i < ds->count; i++)
        b->order[i] = i;
    if (shuffle) {
        /* One stream per (seed, epoch): mixing the seed first keeps nearby seeds and epochs apart. */
        kn_rng rng = kn_rng_seeded(kn_mix64(seed) ^ (uint64_t)epoch);
        shuffle_indices(b->order, ds->count, &rng);
    }
    return KILN_OK;
}

int64_t kn_batcher_next(kn_batcher *b, float *x, int64_t *labels, float *targets) {
    const kn_dataset *ds = b->ds;
    int64_t n = ds->count - b->next < b->batch ? ds->count - b->next : b->batch;
    for (int64_t i = 0; i < n; i++) {
        int64_t sample = b->order[b->next + i];
        memcpy(x + i * ds->sample_size, ds->x + sample * ds->sample_size, (size_t)ds->sample_size * sizeof(float));
        if (labels && ds->labels)
            labels[i] = ds->labels[sample];
        if (targets && ds->targets)
            memcpy(targets + i * ds->target_width, ds->targets + sample * ds->target_width,
                   (size_t)ds->target_width * sizeof(float));
    }
    b->next += n;
    return n;
}

void kn_batcher_free(kn_batcher *b) {
    free(b->order);
    memset(b, 0, sizeof *b);
}

kn_data_options kn_data_options_for_model(const kn_graph *g) {
    kn_data_options o = {.quiet = true, .class_names = g->class_names, .class_count = g->n_classes};
    if (g->input_mean && g->input_std) {
        o.feature_mean = g->input_mean;
        o.feature_std = g->input_std;
        o.feature_count = g->n_norm;
    }
    o.columns = kn_graph_meta(g, "train.columns");
    o.raw_features = kn_graph_meta(g, "kiln.input_standardized") != NULL;
    return o;
}

/* ---- CSV column names ---- */

char *kn_data_columns_join(const char *const *names, int64_t n) {
    size_t bytes = 1;
    for (int64_t i = 0; i < n; i++)
        bytes += 2 * strlen(names[i]) + 1; /* every byte escaped at worst, and a separator */
    char *joined = malloc(bytes), *out = joined;
    if (!joined)
        return NULL;
    for (int64_t i = 0; i < n; i++) {
        const char *name = names[i] + strspn(names[i], " \t");
        size_t len = strlen(name);
        while (len && (name[len - 1] == ' ' || name[len - 1] == '\t'))
            len--;
        if (i > 0)
            *out++ = ',';
        for (size_t k = 0; k < len; k++) {
            if (name[k] == ',' || name[k] == '\\')
                *out++ = '\\';
            *out++ = name[k];
        }
    }
    *out = '\0';
    return joined;
}

/* Cuts a joined list into its names in place (escapes removed); returns how many, storing at most max. */
static int64_t split_columns(char *joined, char **names, int64_t max) {
    int64_t n = 0;
    char *out = joined;
    if (max > 0)
        names[0] = out;
    for (const char *p = joined;; p++) {
        char c = *p; /* read before the write below, which may land on it */
        if (c == '\\' && p[1]) {
            *out++ = *++p;
        } else if (c == ',' || c == '\0') {
            *out++ = '\0';
            if (c == '\0')
                return n + 1;
            if (++n < max)
                names[n] = out;
        } else {
            *out++ = c;
        }
    }
}

/* Whether the joined lists `a` and `b` hold the same names, in any order. */
static bool same_names(const char *a, const char *b) {
    char *ca = kn_data_strdup(a), *cb = kn_data_strdup(b);
    size_t most = strlen(a) + strlen(b) + 2;
    char **na = kn_data_malloc(most, sizeof *na), **nb = kn_data_malloc(most, sizeof *nb);
    bool same = ca && cb && na && nb;
    if (same) {
        int64_t count_a = split_columns(ca, na, (int64_t)most), count_b = split_columns(cb, nb, (int64_t)most);
        same = count_a == count_b;
        for (int64_t i = 0; i < count_a && same; i++) {
            bool found = false;
            for (int64_t k = 0; k < count_b && !found; k++)
                found = strcmp(na[i], nb[k]) == 0;
            same = found;
        }
    }
    free(ca);
    free(cb);
    free(na);
    free(nb);
    return same;
}

kiln_status kn_data_check_columns(const char *path, const char *const *names, int64_t n, const char *expected) {
    char *joined = kn_data_columns_join(names, n);
    if (!joined)
        return kn_fail(KILN_ERR_NOMEM, "out of memory");
    if (strcmp(joined, expected) == 0) {
        free(joined);
        return KILN_OK;
    }
    char have[160], want[160];
    kn_data_snippet(joined, strlen(joined), have, sizeof have);
    kn_data_snippet(expected, strlen(expected), want, sizeof want);
    bool reordered = same_names(joined, expected);
    free(joined);
    return kn_fail(KILN_ERR_INVALID_ARG, "%s: the feature columns are %s but the model was trained on %s: %s", path,
                   have, want, reordered ? "the same columns in another order; put them in the model's order"
                                         : "rename or reorder them (or name the target column with --label)");
}
