/* The whole pruning job: the optional sensitivity scan, pruning (oneshot or AGP, unstructured or
 * structured), fine-tuning with masks and sparse storage; and the public kiln_prune over it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compress/prune.h"
#include "compress/prune_structured.h"
#include "kiln/compress.h"
#include "train/api.h"
#include "train/evaluate.h"

/* ---- the graph's trainable data, saved and put back between the scan's trials ---- */

typedef struct snapshot {
    int n;
    int *id;
    float **data;
    const kn_storage **storage;
} snapshot;

static kiln_status snapshot_take(const kn_graph *g, snapshot *s) {
    memset(s, 0, sizeof *s);
    s->id = malloc(sizeof(int) * (size_t)g->n_values);
    s->data = calloc((size_t)g->n_values, sizeof *s->data);
    s->storage = calloc((size_t)g->n_values, sizeof *s->storage);
    if (!s->id || !s->data || !s->storage)
        return kn_fail(KILN_ERR_NOMEM, "out of memory saving the weights");
    for (int v = 0; v < g->n_values; v++) {
        const kn_value *val = &g->values[v];
        if ((val->kind != KN_VALUE_PARAM && val->kind != KN_VALUE_STATE) || val->dtype != KN_F32 || !val->data)
            continue;
        size_t bytes = sizeof(float) * (size_t)kn_shape_numel(&val->shape);
        if (!(s->data[s->n] = malloc(bytes ? bytes : 1)))
            return kn_fail(KILN_ERR_NOMEM, "out of memory saving the weights");
        memcpy(s->data[s->n], val->data, bytes);
        s->storage[s->n] = val->storage;
        s->id[s->n++] = v;
    }
    return KILN_OK;
}

static void snapshot_restore(kn_graph *g, const snapshot *s) {
    for (int k = 0; k < s->n; k++) {
        kn_value *val = &g->values[s->id[k]];
        memcpy(val->data, s->data[k], sizeof(float) * (size_t)kn_shape_numel(&val->shape));
        val->storage = s->storage[k];
    }
}

static void snapshot_free(snapshot *s) {
    for (int k = 0; k < s->n; k++)
        free(s->data[k]);
    free(s->id);
    free(s->data);
    free(s->storage);
}

/* ---- the sensitivity scan ---- */

static kiln_status accuracy_of(kn_graph *g, const kn_dataset *val, double *accuracy) {
    kn_loss loss;
    KN_TRY(kn_loss_of_model(g, &loss));
    kn_eval_result r;
    KN_TRY(kn_evaluate(g, val, &loss, 256, &r));
    /* Without class labels, the negated loss ranks trials the same way accuracy would. */
    *accuracy = r.accuracy >= 0 ? r.accuracy : -r.loss;
    kn_eval_result_free(&r);
    return KILN_OK;
}

/* Prunes layer l alone by `amount` (structured: in mask form, which gives the same outputs); *changed
 * says whether anything was removed. */
static kiln_status prune_one_layer(kn_graph *g, const kn_dataset *data, const kn_prune_config *base, int l, int n,
                                   double amount, double *amounts, bool *changed) {
    for (int k = 0; k < n; k++)
        amounts[k] = k == l ? amount : 0;
    kn_prune_config c = *base;
    c.global = false;
    c.target_is_sparsity = false;
    c.layer_amounts = amounts;
    c.amount = 0;
    if (c.structure == KN_PRUNE_UNSTRUCTURED) {
        *changed = true;
        return kn_prune_unstructured(g, data, &c);
    }
    kn_prune_structured_result r;
    KN_TRY(kn_prune_structured(g, data, &c, true, &r));
    *changed = false;
    for (int k = 0; k < r.n_layers; k++)
        *changed |= r.layers[k].after != r.layers[k].before;
    return KILN_OK;
}

/* Greedy choice of per-layer amounts removing `amount` of all the layers' weights. */
static void choose_amounts(kn_prune_sensitivity *s, double amount) {
    int level[256] = {0};
    double total = 0, removed = 0;
    for (int l = 0; l < s->n_layers; l++) {
        total += (double)s->weights[l];
        s->chosen[l] = 0;
    }
    double target = amount * total;
    while (removed < target) {
        int best = -1;
        double best_cost = 0;
        for (int l = 0; l < s->n_layers; l++) {
            if (level[l] == KN_SENSITIVITY_LEVELS || s->weights[l] == 0)
                continue;
            double before = level[l] ? s->accuracy[l][level[l] - 1] : s->base_accuracy;
            double cost = (before - s->accuracy[l][level[l]]) / (0.1 * (double)s->weights[l]);
            if (best < 0 || cost < best_cost) {
                best = l;
                best_cost = cost;
            }
        }
        if (best < 0)
            break; /* every layer at 90%: the most the scan knows about */
        double step = 0.1 * (double)s->weights[best];
        if (removed + step >= target) {
            s->chosen[best] += (target - removed) / (double)s->weights[best];
            break;
        }
        removed += step;
        level[best]++;
        s->chosen[best] = 0.1 * level[best];
    }
}

/* The scan travels with the model as metadata "compress.sensitivity", which `kiln report` draws:
 * "LAYER:AMOUNT=ACCURACY,...;LAYER:..." (amount 0 is the unpruned model). */
static kiln_status record_sensitivity(kn_graph *g, const kn_prune_sensitivity *s) {
    size_t size = 1;
    for (int l = 0; l < s->n_layers; l++)
        size += strlen(s->names[l]) + 2 + (KN_SENSITIVITY_LEVELS + 1) * 24;
    char *text = malloc(size), *p = text;
    if (!text)
        return kn_fail(KILN_ERR_NOMEM, "out of memory recording the sensitivity scan");
    *p = 0;
    for (int l = 0; l < s->n_layers; l++) {
        p += sprintf(p, "%s%s:0=%.4f", l ? ";" : "", s->names[l], s->base_accuracy);
        for (int k = 0; k < KN_SENSITIVITY_LEVELS; k++)
            p += sprintf(p, ",%.1f=%.4f", 0.1 * (k + 1), s->accuracy[l][k]);
    }
    kiln_status st = kn_graph_set_meta(g, "compress.sensitivity", text);
    free(text);
    return st;
}

kiln_status kn_prune_sensitivity_scan(kn_graph *g, const kn_dataset *data, const kn_dataset *val,
                                      const kn_prune_config *c, kn_prune_sensitivity *s) {
    if (!val)
        return kn_fail(KILN_ERR_INVALID_ARG, "--sensitivity needs evaluation data (--val)");
    kn_prune_layer layers[256];
    int n;
    KN_TRY(kn_prune_layers(g, c, layers, 256, &n));
    s->n_layers = n;
    for (int l = 0; l < n; l++) {
        s->names[l] = g->values[layers[l].weight].name;
        s->weights[l] = kn_shape_numel(&g->values[layers[l].weight].shape);
    }
    KN_TRY(accuracy_of(g, val, &s->base_accuracy));
    snapshot saved;
    double amounts[256];
    kiln_status st = snapshot_take(g, &saved);
    for (int l = 0; st == KILN_OK && l < n; l++) {
        for (int a = 0; st == KILN_OK && a < KN_SENSITIVITY_LEVELS; a++) {
            bool changed = false;
            st = prune_one_layer(g, data, c, l, n, 0.1 * (a + 1), amounts, &changed);
            if (st == KILN_OK && !changed)
                s->weights[l] = 0; /* nothing of it can go (it feeds an output): not a choice */
            if (st == KILN_OK && changed)
                st = accuracy_of(g, val, &s->accuracy[l][a]);
            else
                s->accuracy[l][a] = s->base_accuracy;
            snapshot_restore(g, &saved);
        }
    }
    snapshot_free(&saved);
    if (st == KILN_OK)
        choose_amounts(s, c->amount);
    return st;
}

/* ---- the job ---- */

kiln_status kn_prune_run(kn_graph *g, const kn_prune_job *job, kn_prune_report *report) {
    kn_prune_config c = job->config;
    if (!(c.amount >= 0 && c.amount < 1))
        return kn_fail(KILN_ERR_INVALID_ARG, "the amount must be in [0, 1), got %g", c.amount);
    if (c.schedule == KN_SCHEDULE_AGP && (c.structure != KN_PRUNE_UNSTRUCTURED || !job->finetune))
        return kn_fail(KILN_ERR_INVALID_ARG, "the agp schedule prunes unstructured weights while fine-tuning "
                       "(give --finetune E)");
    if (job->sensitivity && c.schedule == KN_SCHEDULE_AGP)
        return kn_fail(KILN_ERR_INVALID_ARG, "--sensitivity chooses oneshot per-layer amounts; it does not combine "
                       "with the agp schedule");
    if (job->sensitivity && job->resume)
        return kn_fail(KILN_ERR_INVALID_ARG, "a resumed fine-tune does not scan again");
    if (job->sensitivity) {
        if (!report->sensitivity)
            return kn_fail(KILN_ERR_INVALID_ARG, "a sensitivity scan needs somewhere to report to");
        if (c.structure == KN_PRUNE_UNSTRUCTURED && c.target_is_sparsity) {
            kn_prune_layer layers[256];
            int n;
            KN_TRY(kn_prune_layers(g, &c, layers, 256, &n));
            KN_TRY(kn_prune_amount_for_sparsity(g, layers, n, c.amount, &c.amount));
            c.target_is_sparsity = false;
        }
        KN_TRY(kn_prune_sensitivity_scan(g, job->data, job->val, &c, report->sensitivity));
        KN_TRY(record_sensitivity(g, report->sensitivity));
        c.layer_amounts = report->sensitivity->chosen;
        c.global = false;
    }
    if (!job->resume && c.schedule == KN_SCHEDULE_ONESHOT) {
        if (c.structure == KN_PRUNE_UNSTRUCTURED)
            KN_TRY(kn_prune_unstructured(g, job->data, &c));
        else
            KN_TRY(kn_prune_structured(g, job->data, &c, false, report->structured));
    }
    report->finetuned = job->finetune != NULL;
    if (job->finetune) {
        if (!job->data)
            return kn_fail(KILN_ERR_INVALID_ARG, "fine-tuning needs training data");
        /* Structured pruning left a smaller dense model: nothing to hold at zero, so no layers to mask. */
        kn_prune_config mask = c;
        if (c.structure != KN_PRUNE_UNSTRUCTURED) {
            kn_train_options o = *job->finetune;
            o.hooks = NULL;
            KN_TRY(kn_train(g, job->data, job->val, &o, job->optim_state, job->n_optim_state, &report->train));
        } else {
            KN_TRY(kn_prune_finetune(g, job->data, job->val, &mask, job->finetune, job->optim_state,
                                     job->n_optim_state, &report->train));
        }
    }
    if (c.structure == KN_PRUNE_UNSTRUCTURED) {
        kn_prune_layer layers[1024];
        int n;
        KN_TRY(kn_prune_layers(g, &c, layers, 1024, &n));
        KN_TRY(kn_prune_store_sparse(g, layers, n));
    }
    return KILN_OK;
}

/* ---- the public API ---- */

kiln_prune_config kiln_prune_config_default(void) {
    return (kiln_prune_config){.method = "l1", .amount = 0.5, .calib_batches = 8, .seed = 1,
                               .schedule = "oneshot", .steps = 10, .train = kiln_train_config_default()};
}

/* The kn_prune_config a public one asks for. */
static kiln_status config_from_public(const kiln_prune_config *p, kn_prune_config *c) {
    *c = kn_prune_config_default();
    KN_TRY(kn_prune_method_parse(p->method ? p->method : "l1", &c->method));
    if (p->structured)
        KN_TRY(kn_prune_structure_parse(p->structured, &c->structure));
    if (p->schedule && strcmp(p->schedule, "agp") == 0)
        c->schedule = KN_SCHEDULE_AGP;
    else if (p->schedule && strcmp(p->schedule, "oneshot") != 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "unknown schedule '%s' (oneshot or agp)", p->schedule);
    if (p->n_skip < 0 || p->n_skip > KN_PRUNE_MAX_SKIP)
        return kn_fail(KILN_ERR_INVALID_ARG, "at most %d names to skip", KN_PRUNE_MAX_SKIP);
    for (int s = 0; s < p->n_skip; s++)
        c->skip[c->n_skip++] = p->skip[s];
    c->amount = p->amount;
    c->target_is_sparsity = p->target_sparsity;
    c->global = p->global;
    c->calib_batches = p->calib_batches;
    c->seed = p->seed;
    c->steps = p->steps;
    return KILN_OK;
}

kiln_status kiln_prune(kiln_graph *graph, const kiln_dataset *data, const kiln_dataset *val,
                       const kiln_prune_config *config) {
    if (!graph || !config)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_prune: NULL argument");
    kn_prune_job job = {.data = data ? &data->d : NULL, .val = val ? &val->d : NULL,
                        .sensitivity = config->sensitivity};
    KN_TRY(config_from_public(config, &job.config));
    kn_train_options finetune;
    if (config->finetune_epochs > 0) {
        kiln_train_config t = config->train;
        t.epochs = config->finetune_epochs;
        KN_TRY(kn_train_options_from_config(&t, &finetune));
        job.finetune = &finetune;
    }
    kn_prune_sensitivity *scan = config->sensitivity ? malloc(sizeof *scan) : NULL;
    if (config->sensitivity && !scan)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for the sensitivity scan");
    kn_prune_report report = {.sensitivity = scan};
    kiln_status st = kn_prune_run(&graph->g, &job, &report);
    free(scan);
    return st;
}
