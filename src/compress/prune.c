/* Unstructured pruning: the prunable layers, zeroing the lowest-scored weights per layer or with one
 * global threshold, sparse storage, and fine-tuning that keeps the zeros (oneshot or AGP). */
#include "compress/prune.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "format/storage.h"
#include "ops/op.h"

kn_prune_config kn_prune_config_default(void) {
    return (kn_prune_config){.method = KN_PRUNE_L1, .amount = 0.5, .calib_batches = 8, .calib_batch = 64,
                             .seed = 1, .schedule = KN_SCHEDULE_ONESHOT, .steps = 10};
}

static const char *const method_names[] = {"l1", "l2", "random", "taylor", "hessian"};

kiln_status kn_prune_method_parse(const char *name, kn_prune_method *out) {
    for (int m = 0; m < (int)(sizeof method_names / sizeof method_names[0]); m++)
        if (strcmp(name, method_names[m]) == 0) {
            *out = (kn_prune_method)m;
            return KILN_OK;
        }
    return kn_fail(KILN_ERR_INVALID_ARG, "unknown pruning method '%s' (l1, l2, random, taylor or hessian)", name);
}

const char *kn_prune_method_name(kn_prune_method m) { return method_names[m]; }

kiln_status kn_prune_structure_parse(const char *name, kn_prune_structure *out) {
    if (strcmp(name, "channel") == 0 || strcmp(name, "filter") == 0)
        *out = KN_PRUNE_CHANNEL;
    else if (strcmp(name, "neuron") == 0)
        *out = KN_PRUNE_NEURON;
    else
        return kn_fail(KILN_ERR_INVALID_ARG, "unknown structure '%s' (channel, filter or neuron)", name);
    return KILN_OK;
}

/* ---- which layers ---- */

/* The weight of a Conv, Gemm or MatMul node when it is a trainable f32 matrix or kernel; else -1. */
static int layer_weight(const kn_graph *g, const kn_node *n) {
    if (n->op != &kn_op_conv && n->op != &kn_op_gemm && n->op != &kn_op_matmul)
        return -1;
    if (n->n_in < 2 || n->in[1] < 0)
        return -1;
    const kn_value *w = &g->values[n->in[1]];
    return w->kind == KN_VALUE_PARAM && w->dtype == KN_F32 && w->shape.ndim >= 2 ? n->in[1] : -1;
}

static bool skipped(const kn_prune_config *c, const kn_graph *g, const kn_node *n, int weight, bool *used) {
    bool hit = false;
    for (int s = 0; s < c->n_skip; s++)
        if (strcmp(c->skip[s], g->values[weight].name) == 0 || (n->name && strcmp(c->skip[s], n->name) == 0)) {
            used[s] = true;
            hit = true;
        }
    return hit;
}

kiln_status kn_prune_layers(const kn_graph *g, const kn_prune_config *c, kn_prune_layer *layers, int max, int *n) {
    bool used[KN_PRUNE_MAX_SKIP] = {false};
    *n = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        int w = layer_weight(g, &g->nodes[i]);
        if (w < 0 || skipped(c, g, &g->nodes[i], w, used))
            continue;
        bool seen = false; /* a weight shared by two nodes is one layer */
        for (int k = 0; k < *n; k++)
            seen |= layers[k].weight == w;
        if (seen)
            continue;
        if (*n == max)
            return kn_fail(KILN_ERR_INVALID_ARG, "more than %d prunable layers", max);
        layers[(*n)++] = (kn_prune_layer){.node = i, .weight = w};
    }
    for (int s = 0; s < c->n_skip; s++)
        if (!used[s])
            return kn_fail(KILN_ERR_INVALID_ARG, "--skip %s: no prunable layer has a weight or node of that name",
                           c->skip[s]);
    return KILN_OK;
}

void kn_prune_count(const kn_graph *g, const kn_prune_layer *layers, int n, int64_t *zeros, int64_t *total) {
    *zeros = *total = 0;
    for (int l = 0; l < n; l++) {
        const kn_value *w = &g->values[layers[l].weight];
        const float *x = w->data;
        int64_t count = kn_shape_numel(&w->shape);
        *total += count;
        for (int64_t i = 0; i < count; i++)
            *zeros += x[i] == 0.0f;
    }
}

/* ---- zeroing the lowest scores ---- */

typedef struct ranked {
    float score;
    int layer;
    int64_t index;
} ranked;

/* Lowest score first; ties by layer and position, so the choice is the same on every machine. */
static int compare_ranked(const void *pa, const void *pb) {
    const ranked *a = pa, *b = pb;
    if (a->score != b->score)
        return a->score < b->score ? -1 : 1;
    if (a->layer != b->layer)
        return a->layer < b->layer ? -1 : 1;
    return (a->index > b->index) - (a->index < b->index);
}

/* Zeroes the `count` lowest-ranked of r[0..n) (sorted in place). */
static void zero_lowest(kn_graph *g, const kn_prune_layer *layers, ranked *r, int64_t n, int64_t count) {
    qsort(r, (size_t)n, sizeof *r, compare_ranked);
    for (int64_t k = 0; k < count && k < n; k++) {
        kn_value *w = &g->values[layers[r[k].layer].weight];
        kn_value_drop_storage(w);
        ((float *)w->data)[r[k].index] = 0.0f;
    }
}

/* Appends layer l's weights to r with their scores; zeros rank below everything (scores are >= 0). */
static int64_t rank_layer(const kn_graph *g, const kn_prune_layer *layers, int l, const float *scores, ranked *r) {
    const kn_value *w = &g->values[layers[l].weight];
    const float *x = w->data;
    int64_t count = kn_shape_numel(&w->shape);
    for (int64_t i = 0; i < count; i++)
        r[i] = (ranked){.score = x[i] == 0.0f ? -1.0f : scores[i], .layer = l, .index = i};
    return count;
}

kiln_status kn_prune_apply_scores(kn_graph *g, const kn_prune_layer *layers, int n, float *const *scores,
                                  const double *amounts, bool global, double amount) {
    int64_t zeros, total;
    kn_prune_count(g, layers, n, &zeros, &total);
    ranked *r = malloc(sizeof(ranked) * (size_t)(total ? total : 1));
    if (!r)
        return kn_fail(KILN_ERR_NOMEM, "out of memory ranking %lld weights", (long long)total);
    if (global) {
        int64_t at = 0;
        for (int l = 0; l < n; l++)
            at += rank_layer(g, layers, l, scores[l], r + at);
        zero_lowest(g, layers, r, total, (int64_t)llround(amount * (double)total));
    } else {
        for (int l = 0; l < n; l++) {
            int64_t count = rank_layer(g, layers, l, scores[l], r);
            double a = amounts ? amounts[l] : amount;
            zero_lowest(g, layers, r, count, (int64_t)llround(a * (double)count));
        }
    }
    free(r);
    return KILN_OK;
}

kiln_status kn_prune_amount_for_sparsity(const kn_graph *g, const kn_prune_layer *layers, int n, double sparsity,
                                         double *amount) {
    int64_t zeros, prunable, params = 0, param_zeros = 0;
    kn_prune_count(g, layers, n, &zeros, &prunable);
    for (int v = 0; v < g->n_values; v++) {
        const kn_value *val = &g->values[v];
        if (val->kind != KN_VALUE_PARAM || val->dtype != KN_F32)
            continue;
        int64_t count = kn_shape_numel(&val->shape);
        params += count;
        for (int64_t i = 0; i < count; i++)
            param_zeros += ((const float *)val->data)[i] == 0.0f;
    }
    /* Zeros outside the prunable weights stay as they are: the prunable ones make up the rest. */
    double wanted = sparsity * (double)params - (double)(param_zeros - zeros);
    if (prunable == 0 || wanted > (double)prunable)
        return kn_fail(KILN_ERR_INVALID_ARG, "a sparsity of %g is out of reach: only %lld of %lld parameters are "
                       "prunable", sparsity, (long long)prunable, (long long)params);
    *amount = wanted < 0 ? 0 : wanted / (double)prunable;
    return KILN_OK;
}

/* ---- the whole step ---- */

/* Score arrays for the layers (each the numel of its weight); freed by free_scores. */
static kiln_status alloc_scores(const kn_graph *g, const kn_prune_layer *layers, int n, float ***out) {
    float **scores = calloc((size_t)(n ? n : 1), sizeof *scores);
    if (!scores)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for pruning scores");
    *out = scores;
    for (int l = 0; l < n; l++)
        if (!(scores[l] = malloc(sizeof(float) * (size_t)kn_shape_numel(&g->values[layers[l].weight].shape))))
            return kn_fail(KILN_ERR_NOMEM, "out of memory for pruning scores");
    return KILN_OK;
}

static void free_scores(float **scores, int n) {
    for (int l = 0; scores && l < n; l++)
        free(scores[l]);
    free(scores);
}

/* Scores the layers and zeroes `amount` (or per-layer amounts) of them. */
static kiln_status prune_to(kn_graph *g, const kn_prune_layer *layers, int n, const kn_dataset *data,
                            const kn_prune_config *c, double amount) {
    float **scores = NULL;
    kiln_status st = alloc_scores(g, layers, n, &scores);
    if (st == KILN_OK)
        st = kn_prune_scores(g, layers, n, c, data, scores);
    if (st == KILN_OK)
        st = kn_prune_apply_scores(g, layers, n, scores, c->layer_amounts, c->global, amount);
    free_scores(scores, n);
    return st;
}

#define MAX_LAYERS 1024

static kiln_status find_layers(const kn_graph *g, const kn_prune_config *c, kn_prune_layer **layers, int *n) {
    *layers = malloc(sizeof(kn_prune_layer) * MAX_LAYERS);
    if (!*layers)
        return kn_fail(KILN_ERR_NOMEM, "out of memory listing layers");
    KN_TRY(kn_prune_layers(g, c, *layers, MAX_LAYERS, n));
    if (*n == 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "the model has no prunable layer (a Conv, Gemm or MatMul with a "
                       "trainable weight) left after --skip");
    return KILN_OK;
}

static kiln_status resolve_amount(const kn_graph *g, const kn_prune_layer *layers, int n, const kn_prune_config *c,
                                  double *amount) {
    if (!(c->amount >= 0 && c->amount < 1))
        return kn_fail(KILN_ERR_INVALID_ARG, "the amount must be in [0, 1), got %g", c->amount);
    *amount = c->amount;
    if (c->target_is_sparsity)
        KN_TRY(kn_prune_amount_for_sparsity(g, layers, n, c->amount, amount));
    return KILN_OK;
}

kiln_status kn_prune_unstructured(kn_graph *g, const kn_dataset *data, const kn_prune_config *c) {
    kn_prune_layer *layers;
    int n = 0;
    double amount = 0;
    kiln_status st = find_layers(g, c, &layers, &n);
    if (st == KILN_OK)
        st = resolve_amount(g, layers, n, c, &amount);
    if (st == KILN_OK)
        st = prune_to(g, layers, n, data, c, amount);
    free(layers);
    return st;
}

kiln_status kn_prune_store_sparse(kn_graph *g, const kn_prune_layer *layers, int n) {
    for (int l = 0; l < n; l++) {
        kn_value *w = &g->values[layers[l].weight];
        int64_t zeros = 0, count = kn_shape_numel(&w->shape);
        for (int64_t i = 0; i < count; i++)
            zeros += ((const float *)w->data)[i] == 0.0f;
        int64_t nnz = count - zeros, rows = w->shape.d[0], cols = count / (rows ? rows : 1);
        int64_t bitmask = rows * ((cols + 7) / 8) + 4 * nnz, csr = 4 * (rows + 1) + 8 * nnz;
        if ((bitmask < csr ? bitmask : csr) >= 4 * count)
            continue;
        kn_storage_spec spec = {.encoding = bitmask <= csr ? KN_ENC_SPARSE_BITMASK : KN_ENC_SPARSE_CSR, .axis = -1,
                                .values = KN_ENC_F32};
        kiln_status st = kn_value_compress(g, layers[l].weight, &spec);
        if (st != KILN_OK) {
            kn_error_prefix("%s: ", w->name);
            return st;
        }
    }
    return KILN_OK;
}

/* ---- fine-tuning with masks ---- */

double kn_prune_agp_sparsity(double final, int64_t k, int64_t n) {
    if (k >= n)
        return final;
    double left = 1.0 - (double)k / (double)n;
    return final * (1.0 - left * left * left);
}

typedef struct mask_hook {
    const kn_prune_config *config;
    const kn_dataset *data;
    kn_prune_layer *layers;
    int n;
    uint8_t **keep;          /* (n)(numel of the layer's weight): 1 = trainable, 0 = held at zero */
    int64_t every;           /* agp: steps between pruning events */
    double amount;           /* agp: the final amount */
} mask_hook;

static void masks_from_zeros(mask_hook *h, const kn_graph *g) {
    for (int l = 0; l < h->n; l++) {
        const kn_value *w = &g->values[h->layers[l].weight];
        const float *x = w->data;
        for (int64_t i = 0; i < kn_shape_numel(&w->shape); i++)
            h->keep[l][i] = x[i] != 0.0f;
    }
}

/* After every optimizer step: the masked weights go back to exactly zero; an AGP event prunes more. */
static kiln_status mask_on_step(void *user, kn_graph *g, int64_t step) {
    mask_hook *h = user;
    for (int l = 0; l < h->n; l++) {
        kn_value *w = &g->values[h->layers[l].weight];
        float *x = w->data;
        for (int64_t i = 0; i < kn_shape_numel(&w->shape); i++)
            if (!h->keep[l][i])
                x[i] = 0.0f;
    }
    if (h->config->schedule != KN_SCHEDULE_AGP || step % h->every != 0 || step / h->every > h->config->steps)
        return KILN_OK;
    KN_TRY(prune_to(g, h->layers, h->n, h->data, h->config,
                    kn_prune_agp_sparsity(h->amount, step / h->every, h->config->steps)));
    masks_from_zeros(h, g);
    return KILN_OK;
}

kiln_status kn_prune_finetune(kn_graph *g, const kn_dataset *train, const kn_dataset *val, const kn_prune_config *c,
                              const kn_train_options *options, const kn_named_tensor *optim_state, int n_optim_state,
                              kn_train_result *result) {
    mask_hook h = {.config = c, .data = train};
    kiln_status st = find_layers(g, c, &h.layers, &h.n);
    if (st == KILN_OK && c->schedule == KN_SCHEDULE_AGP) {
        st = resolve_amount(g, h.layers, h.n, c, &h.amount);
        if (st == KILN_OK && c->steps < 1)
            st = kn_fail(KILN_ERR_INVALID_ARG, "--steps must be at least 1");
        int64_t batch = options->batch > 0 ? options->batch : 1;
        int64_t total = (train->count + batch - 1) / batch * options->epochs;
        /* Pruning events over the first half of the run; the second half recovers at the final sparsity. */
        h.every = total / 2 / (c->steps > 0 ? c->steps : 1);
        if (st == KILN_OK && h.every < 1)
            st = kn_fail(KILN_ERR_INVALID_ARG, "%lld fine-tuning steps are too few for %lld AGP pruning steps",
                         (long long)total, (long long)c->steps);
    }
    h.keep = st == KILN_OK ? calloc((size_t)h.n, sizeof *h.keep) : NULL;
    if (st == KILN_OK && !h.keep)
        st = kn_fail(KILN_ERR_NOMEM, "out of memory for pruning masks");
    for (int l = 0; st == KILN_OK && l < h.n; l++)
        if (!(h.keep[l] = malloc((size_t)kn_shape_numel(&g->values[h.layers[l].weight].shape))))
            st = kn_fail(KILN_ERR_NOMEM, "out of memory for pruning masks");
    if (st == KILN_OK) {
        masks_from_zeros(&h, g);
        kn_train_hooks hooks = {.user = &h, .on_step = mask_on_step};
        kn_train_options o = *options;
        o.hooks = &hooks;
        st = kn_train(g, train, val, &o, optim_state, n_optim_state, result);
    }
    for (int l = 0; h.keep && l < h.n; l++)
        free(h.keep[l]);
    free(h.keep);
    free(h.layers);
    return st;
}
