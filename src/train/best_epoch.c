/* The best epoch by validation loss (see best_epoch.h). */
#include "train/best_epoch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"

/* The values a copy holds: what training changes, parameters and state (BatchNorm statistics). */
static bool copied(const kn_value *v) {
    return (v->kind == KN_VALUE_PARAM || v->kind == KN_VALUE_STATE) && v->dtype == KN_F32 && v->data;
}

kiln_status kn_best_epoch_init(kn_best_epoch *b, const kn_graph *g, bool keep) {
    *b = (kn_best_epoch){.val_loss = INFINITY, .val_accuracy = -1};
    if (!keep)
        return KILN_OK;
    for (int v = 0; v < g->n_values; v++)
        if (copied(&g->values[v]))
            b->copy_count += kn_shape_numel(&g->values[v].shape);
    b->copy = malloc(sizeof(float) * (size_t)(b->copy_count ? b->copy_count : 1));
    if (!b->copy)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for a copy of the best epoch's %lld values",
                       (long long)b->copy_count);
    return KILN_OK;
}

void kn_best_epoch_free(kn_best_epoch *b) {
    free(b->copy);
    b->copy = NULL;
}

/* Copies between g's values and the copy, in value order. */
static void transfer(const kn_best_epoch *b, const kn_graph *g, bool into_copy) {
    int64_t at = 0;
    for (int v = 0; v < g->n_values; v++) {
        const kn_value *value = &g->values[v];
        if (!copied(value))
            continue;
        size_t bytes = sizeof(float) * (size_t)kn_shape_numel(&value->shape);
        if (into_copy)
            memcpy(b->copy + at, value->data, bytes);
        else
            memcpy(value->data, b->copy + at, bytes);
        at += kn_shape_numel(&value->shape);
    }
}

void kn_best_epoch_update(kn_best_epoch *b, const kn_graph *g, int64_t epoch, double val_loss, double val_accuracy) {
    if (!(val_loss < b->val_loss)) {
        b->epochs_since++;
        return;
    }
    b->epoch = epoch;
    b->val_loss = val_loss;
    b->val_accuracy = val_accuracy;
    b->epochs_since = 0;
    if (b->copy)
        transfer(b, g, true);
}

void kn_best_epoch_restore(const kn_best_epoch *b, kn_graph *g) {
    if (b->copy && b->epoch > 0)
        transfer(b, g, false);
}

static kiln_status set_number(kn_graph *g, const char *key, const char *format, double v) {
    char text[64];
    snprintf(text, sizeof text, format, v);
    return kn_graph_set_meta(g, key, text);
}

kiln_status kn_best_epoch_save_meta(const kn_best_epoch *b, kn_graph *g) {
    if (b->epoch == 0)
        return KILN_OK;
    KN_TRY(set_number(g, "train.best_epoch", "%.0f", (double)b->epoch));
    KN_TRY(set_number(g, "train.best_val_loss", "%.17g", b->val_loss));
    KN_TRY(set_number(g, "train.best_val_accuracy", "%.17g", b->val_accuracy));
    return set_number(g, "train.epochs_since_best", "%.0f", (double)b->epochs_since);
}

/* A note that must be a number (finite, and a whole one >= 0 when `whole`). */
static kiln_status get_number(const kn_graph *g, const char *key, bool whole, double *v) {
    const char *text = kn_graph_meta(g, key);
    char *end;
    *v = text ? strtod(text, &end) : NAN;
    if (!text || *end || !isfinite(*v) || (whole && (*v < 0 || *v != floor(*v) || *v > 1e15)))
        return kn_fail(KILN_ERR_FORMAT, "not a checkpoint: metadata '%s' is %s", key, text ? "invalid" : "missing");
    return KILN_OK;
}

kiln_status kn_best_epoch_load_meta(kn_best_epoch *b, const kn_graph *g) {
    if (!kn_graph_meta(g, "train.best_epoch"))
        return KILN_OK;
    double epoch, since;
    KN_TRY(get_number(g, "train.best_epoch", true, &epoch));
    KN_TRY(get_number(g, "train.best_val_loss", false, &b->val_loss));
    KN_TRY(get_number(g, "train.best_val_accuracy", false, &b->val_accuracy));
    KN_TRY(get_number(g, "train.epochs_since_best", true, &since));
    b->epoch = (int64_t)epoch;
    b->epochs_since = (int64_t)since;
    return KILN_OK;
}

int kn_best_epoch_extra_count(const kn_best_epoch *b, const kn_graph *g) {
    int n = 0;
    for (int v = 0; b->copy && v < g->n_values; v++)
        n += copied(&g->values[v]);
    return n;
}

/* "best/<name>", malloc'ed. */
static char *extra_name(const char *name) {
    size_t size = strlen(name) + 6;
    char *s = malloc(size);
    if (s)
        snprintf(s, size, "best/%s", name);
    return s;
}

kiln_status kn_best_epoch_extras(const kn_best_epoch *b, const kn_graph *g, kn_named_tensor *extras, int *n) {
    int64_t at = 0;
    for (int v = 0; b->copy && v < g->n_values; v++) {
        const kn_value *value = &g->values[v];
        if (!copied(value))
            continue;
        kn_named_tensor *e = &extras[(*n)++];
        e->shape = value->shape;
        e->data = b->copy + at;
        if (!(e->name = extra_name(value->name)))
            return kn_fail(KILN_ERR_NOMEM, "out of memory writing the checkpoint");
        at += kn_shape_numel(&value->shape);
    }
    return KILN_OK;
}

void kn_best_epoch_extras_free(kn_named_tensor *extras, int n) {
    for (int i = 0; i < n; i++)
        free(extras[i].name);
}

kiln_status kn_best_epoch_load_extras(kn_best_epoch *b, const kn_graph *g, const kn_named_tensor *extras, int n) {
    if (!b->copy || b->epoch == 0)
        return KILN_OK;
    int64_t at = 0;
    for (int v = 0; v < g->n_values; v++) {
        const kn_value *value = &g->values[v];
        if (!copied(value))
            continue;
        int64_t numel = kn_shape_numel(&value->shape);
        int found = -1;
        for (int k = 0; k < n && found < 0; k++)
            if (strncmp(extras[k].name, "best/", 5) == 0 && strcmp(extras[k].name + 5, value->name) == 0)
                found = k;
        if (found < 0 || kn_shape_numel(&extras[found].shape) != numel)
            return kn_fail(KILN_ERR_FORMAT, "the checkpoint lacks the best epoch's '%s' (%lld values)", value->name,
                           (long long)numel);
        memcpy(b->copy + at, extras[found].data, sizeof(float) * (size_t)numel);
        at += numel;
    }
    return KILN_OK;
}
