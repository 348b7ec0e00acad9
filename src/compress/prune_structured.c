/* Structured pruning (prune_structured.h): units, their classes, scores, and the graph surgery. */
#include "compress/prune_structured.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "ops/op.h"
#include "train/tape.h"

#define MAX_PRODUCERS 256

/* Where the channels of the activations come from: ids[v] (dims[axis[v]] of value v, or NULL when
 * untracked) gives for each index along that axis the unit it carries, or -1 for a channel no pruning
 * touches. The axis is 1 for a Conv's channels and a Gemm's neurons, the last for a MatMul's neurons
 * on sequences (batch, tokens, features). */
typedef struct unit_graph {
    kn_graph *g;
    int n_producers;
    int producer_node[MAX_PRODUCERS];
    int64_t base[MAX_PRODUCERS + 1];  /* units of producer p: base[p] .. base[p + 1] */
    int *producer_of_node;            /* (n_nodes) producer index or -1 */
    int32_t **ids;                    /* (n_values) */
    int *axis;                        /* (n_values) the axis ids[v] runs along */
    int32_t *parent;                  /* (units) union-find over units */
    bool *fixed;                      /* (units) per root: a class that must stay */
    int *group;                       /* (n_producers) union-find over producers tied by shared classes */
} unit_graph;

static bool op_is(const kn_node *n, const kn_op *op) { return n->op == op; }

static int32_t find(int32_t *parent, int32_t u) {
    while (parent[u] != u)
        u = parent[u] = parent[parent[u]];
    return u;
}

static int find_group(int *group, int p) {
    while (group[p] != p)
        p = group[p] = group[group[p]];
    return p;
}

static int producer_of_unit(const unit_graph *u, int32_t unit) {
    int p = 0;
    while (u->base[p + 1] <= unit)
        p++;
    return p;
}

static void unite(unit_graph *u, int32_t a, int32_t b) {
    int32_t ra = find(u->parent, a), rb = find(u->parent, b);
    int ga = find_group(u->group, producer_of_unit(u, a)), gb = find_group(u->group, producer_of_unit(u, b));
    u->group[gb] = ga;
    if (ra == rb)
        return;
    u->parent[rb] = ra;
    u->fixed[ra] |= u->fixed[rb];
}

/* How many units value v carries along its tracked axis. */
static int64_t tracked_dim(const unit_graph *u, int v) { return u->g->values[v].shape.d[u->axis[v]]; }

/* Every unit value v carries becomes a class that must stay. */
static void fix_value(unit_graph *u, int v) {
    if (v < 0 || !u->ids[v])
        return;
    for (int64_t c = 0; c < tracked_dim(u, v); c++)
        if (u->ids[v][c] >= 0)
            u->fixed[find(u->parent, u->ids[v][c])] = true;
}

/* ---- which nodes are what ---- */

/* The axis of W holding a layer's outputs and the one holding its inputs (-1: cannot be sliced). */
static void weight_axes(const kn_graph *g, const kn_node *n, int *out_axis, int *in_axis) {
    *out_axis = *in_axis = -1;
    const kn_value *w = kn_node_input(g, n, 1);
    if (!w || w->kind != KN_VALUE_PARAM || w->dtype != KN_F32)
        return;
    if (op_is(n, &kn_op_conv) && kn_node_int(n, "group", 1) == 1) {
        *out_axis = 0;
        *in_axis = 1;
    } else if (op_is(n, &kn_op_gemm) && w->shape.ndim == 2 && kn_node_int(n, "transA", 0) == 0) {
        bool trans_b = kn_node_int(n, "transB", 0) != 0;
        *out_axis = trans_b ? 0 : 1;
        *in_axis = trans_b ? 1 : 0;
    } else if (op_is(n, &kn_op_matmul) && w->shape.ndim == 2 && kn_node_input(g, n, 0)->shape.ndim >= 2) {
        *out_axis = 1;
        *in_axis = 0;
    }
}

/* The axis of a layer's input (and output) that its weight's in_axis (out_axis) contracts (produces):
 * channels of a Conv, features of a Gemm, the last axis of a MatMul. */
static int layer_io_axis(const kn_graph *g, const kn_node *n) {
    return op_is(n, &kn_op_matmul) ? kn_node_input(g, n, 0)->shape.ndim - 1 : 1;
}

static bool is_producer(const kn_graph *g, const kn_node *n, kn_prune_structure s, const int *layer_nodes,
                        int n_layers) {
    int out_axis, in_axis;
    weight_axes(g, n, &out_axis, &in_axis);
    if (out_axis < 0 || (s == KN_PRUNE_CHANNEL) != op_is(n, &kn_op_conv))
        return false;
    const kn_value *bias = kn_node_input(g, n, 2);
    if (bias && (bias->kind == KN_VALUE_ACT || kn_shape_numel(&bias->shape) != kn_node_input(g, n, 1)->shape.d[out_axis]))
        return false;
    int index = (int)(n - g->nodes);
    for (int l = 0; l < n_layers; l++)
        if (layer_nodes[l] == index)
            return true;
    return false; /* skipped */
}

/* Ops that map each element on its own: any tracked axis passes through. */
static bool is_elementwise_unary(const kn_node *n) {
    static const kn_op *const ops[] = {&kn_op_relu, &kn_op_leakyrelu, &kn_op_sigmoid, &kn_op_tanh, &kn_op_elu,
                                       &kn_op_selu, &kn_op_celu, &kn_op_hardsigmoid, &kn_op_hardswish,
                                       &kn_op_softplus, &kn_op_softsign, &kn_op_clip, &kn_op_dropout,
                                       &kn_op_identity, &kn_op_gelu, &kn_op_mish, &kn_op_abs, &kn_op_neg,
                                       &kn_op_erf, &kn_op_exp, &kn_op_log, &kn_op_sqrt, &kn_op_reciprocal,
                                       &kn_op_floor, &kn_op_ceil};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (n->op == ops[i])
            return true;
    return false;
}

/* The nodes reading value v, and whether it is a graph output (counted as a reader). */
static int value_readers(const kn_graph *g, int v) {
    int readers = 0;
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_in; k++)
            readers += g->nodes[i].in[k] == v;
    for (int o = 0; o < g->n_outputs; o++)
        readers += g->outputs[o] == v;
    return readers;
}

/* A depthwise Conv (one filter per channel: group = C_in = C_out, weight (C, 1, ...)) with an f32
 * weight and bias of its own: output channel c is a function of input channel c alone, so the units
 * pass through it and its filters are removed with them. */
static bool is_depthwise(const kn_graph *g, const kn_node *n) {
    if (!op_is(n, &kn_op_conv) || n->n_in < 2)
        return false;
    const kn_value *x = kn_node_input(g, n, 0), *w = kn_node_input(g, n, 1), *b = kn_node_input(g, n, 2);
    int64_t group = kn_node_int(n, "group", 1);
    return x->shape.ndim >= 3 && group > 1 && group == x->shape.d[1] && w->kind == KN_VALUE_PARAM &&
           w->dtype == KN_F32 && w->shape.d[0] == group && w->shape.d[1] == 1 &&
           value_readers(g, n->in[1]) == 1 &&
           (!b || (b->kind == KN_VALUE_PARAM && b->dtype == KN_F32 && value_readers(g, n->in[2]) == 1));
}

/* Ops that work per channel of an (N, C, ...) tensor: axis 1 passes through. */
static bool is_per_channel(const kn_node *n) {
    static const kn_op *const ops[] = {&kn_op_maxpool, &kn_op_averagepool, &kn_op_globalaveragepool,
                                       &kn_op_globalmaxpool, &kn_op_batchnormalization};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (n->op == ops[i])
            return true;
    return false;
}

static bool is_elementwise_binary(const kn_node *n) {
    static const kn_op *const ops[] = {&kn_op_add, &kn_op_sub, &kn_op_mul, &kn_op_div, &kn_op_max, &kn_op_min,
                                       &kn_op_sum, &kn_op_mean};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (n->op == ops[i])
            return true;
    return false;
}

/* For an elementwise binary node with one tracked activation input: the index of the other input when
 * it is an f32 constant of one value per unit (a separate bias, a per-channel scale: shape 1 except
 * dims[axis] once broadcast against the tracked input), read by this node alone, so that it can be
 * sliced with the units; -1 otherwise. */
static int per_unit_constant(const unit_graph *u, const kn_node *n) {
    const kn_graph *g = u->g;
    if (n->n_in != 2 || n->in[0] < 0 || n->in[1] < 0 || !is_elementwise_binary(n) ||
        (u->ids[n->in[0]] != NULL) == (u->ids[n->in[1]] != NULL))
        return -1;
    int t = u->ids[n->in[0]] ? 0 : 1;
    const kn_value *x = &g->values[n->in[t]], *c = &g->values[n->in[1 - t]], *y = &g->values[n->out[0]];
    int axis = u->axis[n->in[t]], at = axis - (x->shape.ndim - c->shape.ndim);
    if (c->kind == KN_VALUE_ACT || c->dtype != KN_F32 || !c->data || c->shape.ndim > x->shape.ndim || at < 0 ||
        c->shape.d[at] != x->shape.d[axis] || kn_shape_numel(&c->shape) != x->shape.d[axis] ||
        !kn_shape_equal(&y->shape, &x->shape) || value_readers(g, n->in[1 - t]) != 1)
        return -1;
    return 1 - t;
}

/* A Concat whose axis is the one every tracked input is tracked along (and not the batch). */
static bool concat_on_tracked_axis(const unit_graph *u, const kn_node *n) {
    int ndim = u->g->values[n->out[0]].shape.ndim;
    int axis = (int)kn_node_int(n, "axis", 0);
    axis = axis < 0 ? axis + ndim : axis;
    if (axis < 1 || axis >= ndim)
        return false;
    for (int k = 0; k < n->n_in; k++)
        if (u->ids[n->in[k]] && u->axis[n->in[k]] != axis)
            return false;
    return true;
}

/* ---- following the units ---- */

static int32_t *new_ids(unit_graph *u, int v, int axis) {
    u->axis[v] = axis;
    int64_t c = u->g->values[v].shape.d[axis];
    u->ids[v] = malloc(sizeof(int32_t) * (size_t)(c > 0 ? c : 1));
    return u->ids[v];
}

/* A copy of value `from`'s ids (and axis) for value `to`. */
static kiln_status pass_ids(unit_graph *u, int from, int to) {
    if (!new_ids(u, to, u->axis[from]))
        return kn_fail(KILN_ERR_NOMEM, "out of memory tracking channels");
    memcpy(u->ids[to], u->ids[from], sizeof(int32_t) * (size_t)tracked_dim(u, from));
    return KILN_OK;
}

static kiln_status follow_node(unit_graph *u, int i) {
    kn_graph *g = u->g;
    const kn_node *n = &g->nodes[i];
    int out = n->n_out > 0 ? n->out[0] : -1;
    bool any = false;
    for (int k = 0; k < n->n_in; k++)
        any |= n->in[k] >= 0 && u->ids[n->in[k]] != NULL;
    int p = u->producer_of_node[i];
    if (any) {
        int out_axis, in_axis;
        weight_axes(g, n, &out_axis, &in_axis);
        const kn_value *x = kn_node_input(g, n, 0);
        bool x_tracked = n->in[0] >= 0 && u->ids[n->in[0]] != NULL;
        int x_axis = x_tracked ? u->axis[n->in[0]] : -1;
        if (in_axis >= 0 && x_tracked && x_axis == layer_io_axis(g, n) && !(n->n_in > 1 && u->ids[n->in[1]]) &&
            !(n->n_in > 2 && n->in[2] >= 0 && u->ids[n->in[2]])) {
            /* A layer reading tracked channels: its input weights shrink with them. */
        } else if (x_tracked &&
                   (is_elementwise_unary(n) || ((is_per_channel(n) || is_depthwise(g, n)) && x_axis == 1)) &&
                   g->values[out].shape.ndim > x_axis && g->values[out].shape.d[x_axis] == x->shape.d[x_axis]) {
            for (int k = 1; k < n->n_in; k++)
                fix_value(u, n->in[k]);
            KN_TRY(pass_ids(u, n->in[0], out));
        } else if (op_is(n, &kn_op_flatten) && kn_node_int(n, "axis", 1) == 1 && x_tracked && x_axis == 1) {
            int64_t c = x->shape.d[1], spatial = kn_shape_span(&x->shape, 2, x->shape.ndim);
            if (!new_ids(u, out, 1))
                return kn_fail(KILN_ERR_NOMEM, "out of memory tracking channels");
            for (int64_t k = 0; k < c * spatial; k++)
                u->ids[out][k] = u->ids[n->in[0]][k / spatial];
        } else if (is_elementwise_binary(n) && n->n_in == 2) {
            const kn_value *a = kn_node_input(g, n, 0), *b = kn_node_input(g, n, 1);
            bool scalar_other = (a->kind != KN_VALUE_ACT && kn_shape_numel(&a->shape) == 1) ||
                                (b->kind != KN_VALUE_ACT && kn_shape_numel(&b->shape) == 1);
            int ia_axis = u->ids[n->in[0]] ? u->axis[n->in[0]] : -1;
            int ib_axis = u->ids[n->in[1]] ? u->axis[n->in[1]] : -1;
            if (scalar_other || per_unit_constant(u, n) >= 0) {
                /* x op scalar, or x op one constant per unit (sliced with the units). */
                KN_TRY(pass_ids(u, u->ids[n->in[0]] ? n->in[0] : n->in[1], out));
            } else if (kn_shape_equal(&a->shape, &b->shape) && a->shape.ndim >= 2 &&
                       (ia_axis < 0 || ib_axis < 0 || ia_axis == ib_axis)) {
                /* A residual join: channel c of both sides is one class. */
                const int32_t *ia = u->ids[n->in[0]], *ib = u->ids[n->in[1]];
                int axis = ia ? ia_axis : ib_axis;
                if (!new_ids(u, out, axis))
                    return kn_fail(KILN_ERR_NOMEM, "out of memory tracking channels");
                for (int64_t c = 0; c < a->shape.d[axis]; c++) {
                    int32_t ua = ia ? ia[c] : -1, ub = ib ? ib[c] : -1;
                    if (ua >= 0 && ub >= 0)
                        unite(u, ua, ub);
                    else if (ua >= 0 || ub >= 0)
                        u->fixed[find(u->parent, ua >= 0 ? ua : ub)] = true;
                    u->ids[out][c] = ua >= 0 ? ua : ub;
                }
            } else {
                fix_value(u, n->in[0]);
                fix_value(u, n->in[1]);
            }
        } else if (op_is(n, &kn_op_concat) && concat_on_tracked_axis(u, n)) {
            int axis = (int)kn_node_int(n, "axis", 0);
            axis = axis < 0 ? axis + g->values[out].shape.ndim : axis;
            if (!new_ids(u, out, axis))
                return kn_fail(KILN_ERR_NOMEM, "out of memory tracking channels");
            int64_t at = 0;
            for (int k = 0; k < n->n_in; k++) {
                int64_t c = g->values[n->in[k]].shape.d[axis];
                for (int64_t j = 0; j < c; j++)
                    u->ids[out][at + j] = u->ids[n->in[k]] ? u->ids[n->in[k]][j] : -1;
                at += c;
            }
        } else {
            for (int k = 0; k < n->n_in; k++)
                fix_value(u, n->in[k]);
        }
    }
    if (p >= 0) {
        /* The layer's own outputs: fresh units. */
        if (!new_ids(u, out, layer_io_axis(g, n)))
            return kn_fail(KILN_ERR_NOMEM, "out of memory tracking channels");
        for (int64_t c = 0; c < u->base[p + 1] - u->base[p]; c++)
            u->ids[out][c] = (int32_t)(u->base[p] + c);
    }
    return KILN_OK;
}

static void unit_graph_free(unit_graph *u) {
    for (int v = 0; u->ids && v < u->g->n_values; v++)
        free(u->ids[v]);
    free(u->ids);
    free(u->axis);
    free(u->parent);
    free(u->fixed);
    free(u->group);
    free(u->producer_of_node);
}

/* Shapes at batch 1 for every activation (a tape binds them), then the units and their classes. */
static kiln_status unit_graph_build(unit_graph *u, kn_graph *g, const kn_prune_config *c) {
    memset(u, 0, sizeof *u);
    u->g = g;
    kn_tape t;
    KN_TRY(kn_tape_init(&t, g, 1, false));
    kn_tape_free(&t);
    kn_prune_layer layers[MAX_PRODUCERS * 4];
    int n_layers, layer_nodes[MAX_PRODUCERS * 4];
    KN_TRY(kn_prune_layers(g, c, layers, MAX_PRODUCERS * 4, &n_layers));
    for (int l = 0; l < n_layers; l++)
        layer_nodes[l] = layers[l].node;
    u->producer_of_node = malloc(sizeof(int) * (size_t)g->n_nodes);
    u->ids = calloc((size_t)g->n_values, sizeof *u->ids);
    u->axis = calloc((size_t)g->n_values, sizeof *u->axis);
    if (!u->producer_of_node || !u->ids || !u->axis)
        return kn_fail(KILN_ERR_NOMEM, "out of memory tracking channels");
    for (int i = 0; i < g->n_nodes; i++) {
        u->producer_of_node[i] = -1;
        const kn_node *n = &g->nodes[i];
        if (!is_producer(g, n, c->structure, layer_nodes, n_layers) || u->n_producers == MAX_PRODUCERS)
            continue;
        int out_axis, in_axis;
        weight_axes(g, n, &out_axis, &in_axis);
        u->producer_of_node[i] = u->n_producers;
        u->producer_node[u->n_producers] = i;
        u->base[u->n_producers + 1] = u->base[u->n_producers] + kn_node_input(g, n, 1)->shape.d[out_axis];
        u->n_producers++;
    }
    if (u->n_producers == 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "the model has no %s to prune (after --skip)",
                       c->structure == KN_PRUNE_CHANNEL ? "Conv layer whose output channels" :
                                                          "Gemm or MatMul layer whose neurons");
    int64_t units = u->base[u->n_producers];
    u->parent = malloc(sizeof(int32_t) * (size_t)units);
    u->fixed = calloc((size_t)units, sizeof(bool));
    u->group = malloc(sizeof(int) * (size_t)u->n_producers);
    if (!u->parent || !u->fixed || !u->group)
        return kn_fail(KILN_ERR_NOMEM, "out of memory tracking channels");
    for (int64_t k = 0; k < units; k++)
        u->parent[k] = (int32_t)k;
    for (int p = 0; p < u->n_producers; p++)
        u->group[p] = p;
    for (int i = 0; i < g->n_nodes; i++)
        KN_TRY(follow_node(u, i));
    for (int o = 0; o < g->n_outputs; o++)
        fix_value(u, g->outputs[o]);
    return KILN_OK;
}

/* ---- scores and the choice of classes ---- */

/* The score of every unit: the norm (or summed element scores) of its slice of the layer's weight. */
static kiln_status unit_scores(unit_graph *u, const kn_dataset *data, const kn_prune_config *c, double *score) {
    kn_graph *g = u->g;
    float **element = NULL;
    kn_prune_layer layers[MAX_PRODUCERS];
    bool per_element = c->method == KN_PRUNE_TAYLOR || c->method == KN_PRUNE_HESSIAN;
    kiln_status st = KILN_OK;
    if (per_element) {
        element = calloc((size_t)u->n_producers, sizeof *element);
        if (!element)
            return kn_fail(KILN_ERR_NOMEM, "out of memory for scores");
        for (int p = 0; p < u->n_producers; p++) {
            layers[p] = (kn_prune_layer){.node = u->producer_node[p], .weight = g->nodes[u->producer_node[p]].in[1]};
            if (!(element[p] = malloc(sizeof(float) * (size_t)kn_shape_numel(&g->values[layers[p].weight].shape))))
                st = kn_fail(KILN_ERR_NOMEM, "out of memory for scores");
        }
        if (st == KILN_OK)
            st = kn_prune_scores(g, layers, u->n_producers, c, data, element);
    }
    kn_rng rng = kn_rng_seeded(c->seed);
    for (int p = 0; st == KILN_OK && p < u->n_producers; p++) {
        const kn_node *n = &g->nodes[u->producer_node[p]];
        const kn_value *w = kn_node_input(g, n, 1);
        int out_axis, in_axis;
        weight_axes(g, n, &out_axis, &in_axis);
        int64_t units = w->shape.d[out_axis], inner = kn_shape_span(&w->shape, out_axis + 1, w->shape.ndim);
        int64_t outer = kn_shape_span(&w->shape, 0, out_axis);
        const float *x = w->data;
        for (int64_t k = 0; k < units; k++) {
            double s = 0;
            for (int64_t o = 0; o < outer; o++)
                for (int64_t j = 0; j < inner; j++) {
                    int64_t at = (o * units + k) * inner + j;
                    s += c->method == KN_PRUNE_L1 ? fabs(x[at]) : c->method == KN_PRUNE_L2 ? (double)x[at] * x[at]
                         : per_element ? element[p][at] : 0;
                }
            score[u->base[p] + k] = c->method == KN_PRUNE_L2 ? sqrt(s)
                                    : c->method == KN_PRUNE_RANDOM ? kn_rng_uniform(&rng) : s;
        }
    }
    for (int p = 0; element && p < u->n_producers; p++)
        free(element[p]);
    free(element);
    return st;
}

typedef struct class_rank {
    double score;
    int32_t root;
} class_rank;

static int compare_class(const void *pa, const void *pb) {
    const class_rank *a = pa, *b = pb;
    if (a->score != b->score)
        return a->score < b->score ? -1 : 1;
    return (a->root > b->root) - (a->root < b->root);
}

/* Marks removed[root] for the classes to remove: per group `amount` of its free classes (the group's
 * first layer's entry of config->layer_amounts when given), or the lowest normalised scores across
 * all groups; every group keeps at least one class. */
static kiln_status choose_classes(unit_graph *u, const kn_prune_config *c, const double *score, bool *removed,
                                  const kn_prune_layer *layers, int n_layers) {
    int64_t units = u->base[u->n_producers];
    double *class_score = calloc((size_t)units, sizeof(double));
    double *group_sum = calloc((size_t)u->n_producers, sizeof(double));
    int64_t *group_classes = calloc((size_t)u->n_producers, sizeof(int64_t));
    class_rank *ranks = malloc(sizeof(class_rank) * (size_t)units);
    kiln_status st = KILN_OK;
    if (!class_score || !group_sum || !group_classes || !ranks) {
        st = kn_fail(KILN_ERR_NOMEM, "out of memory choosing channels");
        goto done;
    }
    for (int64_t k = 0; k < units; k++)
        class_score[find(u->parent, (int32_t)k)] += score[k];
    for (int64_t k = 0; k < units; k++) {
        if (find(u->parent, (int32_t)k) != k)
            continue;
        int grp = find_group(u->group, producer_of_unit(u, (int32_t)k));
        group_classes[grp]++;
        group_sum[grp] += class_score[k];
    }
    for (int grp = 0; grp < u->n_producers; grp++) {
        if (find_group(u->group, grp) != grp)
            continue;
        int64_t n = 0;
        double amount = c->amount;
        for (int l = 0; c->layer_amounts && l < n_layers; l++) {
            int p = u->producer_of_node[layers[l].node];
            if (p >= 0 && find_group(u->group, p) == grp) {
                amount = c->layer_amounts[l];
                break;
            }
        }
        double mean = group_classes[grp] ? group_sum[grp] / (double)group_classes[grp] : 1;
        for (int64_t k = 0; k < units; k++)
            if (find(u->parent, (int32_t)k) == k && !u->fixed[k] &&
                find_group(u->group, producer_of_unit(u, (int32_t)k)) == grp)
                ranks[n++] = (class_rank){c->global ? class_score[k] / (mean > 0 ? mean : 1) : class_score[k],
                                          (int32_t)k};
        if (c->global)
            continue;
        qsort(ranks, (size_t)n, sizeof *ranks, compare_class);
        int64_t count = (int64_t)llround(amount * (double)group_classes[grp]);
        if (count > n)
            count = n;
        if (count >= group_classes[grp])
            count = group_classes[grp] - 1;
        for (int64_t j = 0; j < count; j++)
            removed[ranks[j].root] = true;
    }
    if (c->global) {
        int64_t n = 0, classes = 0;
        for (int64_t k = 0; k < units; k++)
            if (find(u->parent, (int32_t)k) == k) {
                classes++;
                if (!u->fixed[k]) {
                    int grp = find_group(u->group, producer_of_unit(u, (int32_t)k));
                    double mean = group_sum[grp] / (double)group_classes[grp];
                    ranks[n++] = (class_rank){class_score[k] / (mean > 0 ? mean : 1), (int32_t)k};
                }
            }
        qsort(ranks, (size_t)n, sizeof *ranks, compare_class);
        int64_t count = (int64_t)llround(c->amount * (double)classes);
        for (int64_t j = 0; j < n && count > 0; j++) {
            int grp = find_group(u->group, producer_of_unit(u, ranks[j].root));
            if (group_classes[grp] <= 1)
                continue; /* the group's last class stays */
            removed[ranks[j].root] = true;
            group_classes[grp]--;
            count--;
        }
    }
done:
    free(class_score);
    free(group_sum);
    free(group_classes);
    free(ranks);
    return st;
}

/* ---- surgery ---- */

/* Keeps the indices i of axis `axis` of initializer v with keep[i] (or zeroes the others, mask_only). */
static kiln_status slice_axis(kn_graph *g, int v, int axis, const bool *keep, bool mask_only) {
    kn_value *val = &g->values[v];
    int64_t dim = val->shape.d[axis], outer = kn_shape_span(&val->shape, 0, axis);
    int64_t inner = kn_shape_span(&val->shape, axis + 1, val->shape.ndim), kept = 0;
    for (int64_t k = 0; k < dim; k++)
        kept += keep[k];
    kn_value_drop_storage(val);
    const float *x = val->data;
    if (mask_only) {
        for (int64_t o = 0; o < outer; o++)
            for (int64_t k = 0; k < dim; k++)
                if (!keep[k])
                    memset((float *)val->data + (o * dim + k) * inner, 0, sizeof(float) * (size_t)inner);
        return KILN_OK;
    }
    int64_t count = outer * kept * inner;
    float *y = kn_arena_alloc(&g->arena, sizeof(float) * (size_t)(count > 0 ? count : 1));
    if (!y)
        return kn_fail(KILN_ERR_NOMEM, "out of memory shrinking %s", val->name);
    float *at = y;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t k = 0; k < dim; k++)
            if (keep[k]) {
                memcpy(at, x + (o * dim + k) * inner, sizeof(float) * (size_t)inner);
                at += inner;
            }
    val->data = y;
    val->shape.d[axis] = kept;
    return KILN_OK;
}

/* keep (dims[axis[v]] of value v): channel k of v stays unless its class is removed. */
static void channel_keep(const unit_graph *u, int v, const bool *removed, bool *keep) {
    for (int64_t k = 0; k < tracked_dim(u, v); k++)
        keep[k] = u->ids[v][k] < 0 || !removed[find(u->parent, u->ids[v][k])];
}

static kiln_status shrink_node(unit_graph *u, int i, const bool *removed, bool mask_only, bool *keep) {
    kn_graph *g = u->g;
    const kn_node *n = &g->nodes[i];
    int out_axis, in_axis;
    weight_axes(g, n, &out_axis, &in_axis);
    int p = u->producer_of_node[i];
    int x_axis = n->n_in > 0 && n->in[0] >= 0 && u->ids[n->in[0]] ? u->axis[n->in[0]] : -1;
    int constant = per_unit_constant(u, n);
    if (in_axis >= 0 && x_axis >= 0 && x_axis == layer_io_axis(g, n)) {
        channel_keep(u, n->in[0], removed, keep);
        KN_TRY(slice_axis(g, n->in[1], in_axis, keep, mask_only));
    } else if (op_is(n, &kn_op_batchnormalization) && x_axis == 1 && !mask_only) {
        channel_keep(u, n->in[0], removed, keep);
        for (int k = 1; k < n->n_in && k < 5; k++)
            KN_TRY(slice_axis(g, n->in[k], 0, keep, false));
    } else if (is_depthwise(g, n) && x_axis == 1 && !mask_only) {
        /* One filter per kept channel, and as many groups. */
        channel_keep(u, n->in[0], removed, keep);
        int64_t kept = 0;
        for (int64_t k = 0; k < tracked_dim(u, n->in[0]); k++)
            kept += keep[k];
        KN_TRY(slice_axis(g, n->in[1], 0, keep, false));
        if (kn_node_input(g, n, 2))
            KN_TRY(slice_axis(g, n->in[2], 0, keep, false));
        KN_TRY(kn_node_set_int(g, i, "group", kept));
    } else if (constant >= 0 && !mask_only) {
        /* The constant's units follow the tracked input's (its dims are 1 but for that axis). */
        int t = n->in[1 - constant], c = n->in[constant];
        channel_keep(u, t, removed, keep);
        KN_TRY(slice_axis(g, c, u->axis[t] - (g->values[t].shape.ndim - g->values[c].shape.ndim), keep, false));
    }
    if (p >= 0) {
        channel_keep(u, n->out[0], removed, keep);
        KN_TRY(slice_axis(g, n->in[1], out_axis, keep, mask_only));
        const kn_value *bias = kn_node_input(g, n, 2);
        if (bias)
            KN_TRY(slice_axis(g, n->in[2], bias->shape.ndim - 1, keep, mask_only));
    }
    return KILN_OK;
}

kiln_status kn_prune_structured(kn_graph *g, const kn_dataset *data, const kn_prune_config *c, bool mask_only,
                                kn_prune_structured_result *result) {
    if (!(c->amount >= 0 && c->amount < 1))
        return kn_fail(KILN_ERR_INVALID_ARG, "the amount must be in [0, 1), got %g", c->amount);
    if (c->target_is_sparsity)
        return kn_fail(KILN_ERR_INVALID_ARG, "structured pruning takes --amount (a fraction of the units), "
                       "not --target-sparsity");
    unit_graph u;
    kn_prune_layer layers[MAX_PRODUCERS * 4];
    int n_layers = 0;
    kiln_status st = unit_graph_build(&u, g, c);
    if (st == KILN_OK)
        st = kn_prune_layers(g, c, layers, MAX_PRODUCERS * 4, &n_layers);
    int64_t units = u.n_producers ? u.base[u.n_producers] : 0, widest = 1;
    for (int v = 0; v < g->n_values; v++)
        for (int d = 0; d < g->values[v].shape.ndim; d++)
            widest = g->values[v].shape.d[d] > widest ? g->values[v].shape.d[d] : widest;
    double *score = st == KILN_OK ? malloc(sizeof(double) * (size_t)units) : NULL;
    bool *removed = st == KILN_OK ? calloc((size_t)units, sizeof(bool)) : NULL;
    bool *keep = st == KILN_OK ? malloc(sizeof(bool) * (size_t)widest) : NULL;
    if (st == KILN_OK && (!score || !removed || !keep))
        st = kn_fail(KILN_ERR_NOMEM, "out of memory choosing channels");
    if (st == KILN_OK)
        st = unit_scores(&u, data, c, score);
    if (st == KILN_OK)
        st = choose_classes(&u, c, score, removed, layers, n_layers);
    if (st == KILN_OK && result) {
        result->n_layers = 0;
        for (int p = 0; p < u.n_producers && p < 256; p++) {
            kn_prune_unit_count *r = &result->layers[result->n_layers++];
            r->name = g->values[g->nodes[u.producer_node[p]].in[1]].name;
            r->before = u.base[p + 1] - u.base[p];
            r->after = 0;
            for (int64_t k = u.base[p]; k < u.base[p + 1]; k++)
                r->after += !removed[find(u.parent, (int32_t)k)];
        }
    }
    for (int i = 0; st == KILN_OK && i < g->n_nodes; i++)
        st = shrink_node(&u, i, removed, mask_only, keep);
    if (st == KILN_OK) {
        kn_tape t; /* re-infers every shape and checks the shrunken graph fits together */
        st = kn_tape_init(&t, g, 1, false);
        if (st == KILN_OK)
            kn_tape_free(&t);
        else
            kn_error_prefix("the pruned graph does not fit together (a kiln bug): ");
    }
    free(score);
    free(removed);
    free(keep);
    unit_graph_free(&u);
    return st;
}
