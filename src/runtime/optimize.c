#include "runtime/optimize.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/quant.h"
#include "core/status.h"
#include "format/storage.h"
#include "kernels/lowbit.h"
#include "kernels/gemm.h"
#include "kernels/qgemm.h"
#include "kernels/sparse.h"
#include "ops/conv_prepack.h"
#include "ops/conv_winograd.h"
#include "ops/fused_act.h"
#include "ops/op.h"

enum { FOLD_MAX_IO = 32 }; /* inputs or outputs of a node constant folding will run */

/* ---- copying a graph --------------------------------------------------------------------------- */

static kiln_status copy_node(kn_graph *dst, const kn_node *from, kn_node *to) {
    *to = *from;
    to->name = kn_arena_strdup(&dst->arena, from->name);
    to->in = kn_arena_alloc(&dst->arena, sizeof(int) * (size_t)(from->n_in ? from->n_in : 1));
    to->out = kn_arena_alloc(&dst->arena, sizeof(int) * (size_t)(from->n_out ? from->n_out : 1));
    to->attrs = kn_arena_alloc(&dst->arena, sizeof(kn_attr) * (size_t)(from->n_attrs ? from->n_attrs : 1));
    if (!to->name || !to->in || !to->out || !to->attrs)
        return kn_fail(KILN_ERR_NOMEM, "out of memory copying node '%s'", from->name);
    memcpy(to->in, from->in, sizeof(int) * (size_t)from->n_in);
    memcpy(to->out, from->out, sizeof(int) * (size_t)from->n_out);
    for (int a = 0; a < from->n_attrs; a++) {
        kn_attr *attr = &to->attrs[a];
        *attr = from->attrs[a];
        attr->name = kn_arena_strdup(&dst->arena, from->attrs[a].name);
        if (attr->type == KN_ATTR_STRING)
            attr->s = kn_arena_strdup(&dst->arena, from->attrs[a].s);
        if (!attr->name || (attr->type == KN_ATTR_STRING && !attr->s))
            return kn_fail(KILN_ERR_NOMEM, "out of memory copying node '%s'", from->name);
    }
    return KILN_OK;
}

static kiln_status copy_metadata(kn_graph *dst, const kn_graph *src) {
    if (src->class_names) {
        dst->class_names = kn_arena_alloc(&dst->arena, sizeof(char *) * (size_t)(src->n_classes + 1));
        if (!dst->class_names)
            return kn_fail(KILN_ERR_NOMEM, "out of memory copying class names");
        for (int i = 0; i < src->n_classes; i++)
            if (!(dst->class_names[i] = kn_arena_strdup(&dst->arena, src->class_names[i])))
                return kn_fail(KILN_ERR_NOMEM, "out of memory copying class names");
        dst->n_classes = src->n_classes;
    }
    if (src->input_mean && src->input_std) {
        size_t bytes = sizeof(float) * (size_t)src->n_norm;
        dst->input_mean = kn_arena_alloc(&dst->arena, bytes ? bytes : 1);
        dst->input_std = kn_arena_alloc(&dst->arena, bytes ? bytes : 1);
        if (!dst->input_mean || !dst->input_std)
            return kn_fail(KILN_ERR_NOMEM, "out of memory copying the input normalisation");
        memcpy(dst->input_mean, src->input_mean, bytes);
        memcpy(dst->input_std, src->input_std, bytes);
        dst->n_norm = src->n_norm;
    }
    for (int i = 0; i < src->n_meta; i++)
        KN_TRY(kn_graph_set_meta(dst, src->meta[i].key, src->meta[i].value));
    return KILN_OK;
}

/* dst becomes a copy of src whose initializers point at src's data. */
static kiln_status copy_graph(kn_graph *dst, const kn_graph *src) {
    kn_graph_init(dst);
    size_t n_values = (size_t)(src->n_values ? src->n_values : 1);
    size_t n_nodes = (size_t)(src->n_nodes ? src->n_nodes : 1);
    dst->values = malloc(sizeof(kn_value) * n_values);
    dst->nodes = malloc(sizeof(kn_node) * n_nodes);
    if (!dst->values || !dst->nodes)
        return kn_fail(KILN_ERR_NOMEM, "out of memory copying a graph of %d values", src->n_values);
    dst->cap_values = (int)n_values;
    dst->cap_nodes = (int)n_nodes;
    for (int v = 0; v < src->n_values; v++) {
        dst->values[v] = src->values[v];
        if (!(dst->values[v].name = kn_arena_strdup(&dst->arena, src->values[v].name)))
            return kn_fail(KILN_ERR_NOMEM, "out of memory copying value '%s'", src->values[v].name);
        dst->n_values++;
    }
    for (int i = 0; i < src->n_nodes; i++) {
        KN_TRY(copy_node(dst, &src->nodes[i], &dst->nodes[i]));
        dst->n_nodes++;
    }
    memcpy(dst->inputs, src->inputs, sizeof src->inputs);
    memcpy(dst->outputs, src->outputs, sizeof src->outputs);
    dst->n_inputs = src->n_inputs;
    dst->n_outputs = src->n_outputs;
    return copy_metadata(dst, src);
}

/* ---- small helpers ----------------------------------------------------------------------------- */

static bool op_is(const kn_node *n, const kn_op *op) { return n->op == op; }

static bool is_graph_output(const kn_graph *g, int v) {
    for (int i = 0; i < g->n_outputs; i++)
        if (g->outputs[i] == v)
            return true;
    return false;
}

/* Data fixed before the run: parameters, BatchNorm statistics (frozen at inference) and constants. */
static bool is_constant(const kn_graph *g, int v) {
    if (v < 0)
        return false;
    kn_value_kind kind = g->values[v].kind;
    return (kind == KN_VALUE_PARAM || kind == KN_VALUE_STATE || kind == KN_VALUE_CONST) && g->values[v].data;
}

/* Whether value v is an initializer left packed at load (KN_KILN_LOAD_PACKED): storage, no data. */
static bool is_packed(const kn_graph *g, int v) {
    if (v < 0)
        return false;
    kn_value_kind kind = g->values[v].kind;
    return (kind == KN_VALUE_PARAM || kind == KN_VALUE_STATE || kind == KN_VALUE_CONST) && g->values[v].storage &&
           !g->values[v].data;
}

/* Node inputs reading each value, (n_values) malloc'd; NULL when out of memory. */
static int *count_reads(const kn_graph *g) {
    int *reads = malloc(sizeof(int) * (size_t)(g->n_values ? g->n_values : 1));
    if (reads)
        kn_graph_value_reads(g, reads, NULL);
    return reads;
}

/* The node producing value v when v is an activation read by exactly `n_reads` node inputs and not a
 * graph output, so that a fusion of those readers may hide it; NULL otherwise. */
static kn_node *producer_read_by(kn_graph *g, const int *reads, int v, int n_reads) {
    if (v < 0 || g->values[v].kind != KN_VALUE_ACT || g->values[v].producer < 0 || reads[v] != n_reads ||
        is_graph_output(g, v))
        return NULL;
    kn_node *p = &g->nodes[g->values[v].producer];
    return p->op ? p : NULL;
}

static kn_node *sole_producer(kn_graph *g, const int *reads, int v) { return producer_read_by(g, reads, v, 1); }

/* Nodes are removed in two steps: a pass marks them (op = NULL), then this drops them. */
static void mark_removed(kn_node *n) { n->op = NULL; }

static void reset_producers(kn_graph *g) {
    for (int v = 0; v < g->n_values; v++)
        g->values[v].producer = -1;
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_out; k++)
            g->values[g->nodes[i].out[k]].producer = i;
}

static void drop_removed_nodes(kn_graph *g) {
    int kept = 0;
    for (int i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].op)
            g->nodes[kept++] = g->nodes[i];
    g->n_nodes = kept;
    reset_producers(g);
}

/* Every node input reading `from` reads `to` instead. */
static void replace_reads(kn_graph *g, int from, int to) {
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_in; k++)
            if (g->nodes[i].in[k] == from)
                g->nodes[i].in[k] = to;
}

/* Node n writes value `to` where it wrote `from`: it takes over the output of a node removed after it. */
static void take_over_output(kn_graph *g, kn_node *n, int from, int to) {
    for (int k = 0; k < n->n_out; k++)
        if (n->out[k] == from)
            n->out[k] = to;
    g->values[to].producer = (int)(n - g->nodes);
}

/* Gives node n `count` input slots, keeping the ones it has and marking new ones absent. */
static kiln_status widen_inputs(kn_graph *g, kn_node *n, int count) {
    if (n->n_in >= count)
        return KILN_OK;
    int *in = kn_arena_alloc(&g->arena, sizeof(int) * (size_t)count);
    if (!in)
        return kn_fail(KILN_ERR_NOMEM, "out of memory rewriting node '%s'", n->name);
    for (int k = 0; k < count; k++)
        in[k] = k < n->n_in ? n->in[k] : -1;
    n->in = in;
    n->n_in = count;
    return KILN_OK;
}

/* Adds a value with data named "<base>:<suffix>", numbered when that name is taken; its id goes to *id. */
static kiln_status add_derived_value(kn_graph *g, const char *base, const char *suffix, kn_value_kind kind,
                                     kn_dtype dtype, const kn_shape *shape, int *id) {
    char name[256];
    snprintf(name, sizeof name, "%s:%s", base, suffix);
    for (int n = 2; kn_graph_find_value(g, name) >= 0; n++)
        snprintf(name, sizeof name, "%s:%s%d", base, suffix, n);
    return kn_graph_add_value(g, name, kind, dtype, shape, id);
}

static kiln_status add_derived_param(kn_graph *g, const char *base, const char *suffix, const kn_shape *shape,
                                     int *id) {
    return add_derived_value(g, base, suffix, KN_VALUE_PARAM, KN_F32, shape, id);
}

/* ---- dead nodes -------------------------------------------------------------------------------- */

static kiln_status remove_dead_nodes(kn_graph *g, int *removed) {
    bool *needed = calloc((size_t)(g->n_values ? g->n_values : 1), sizeof(bool));
    if (!needed)
        return kn_fail(KILN_ERR_NOMEM, "out of memory finding dead nodes");
    for (int i = 0; i < g->n_outputs; i++)
        needed[g->outputs[i]] = true;
    for (int i = g->n_nodes - 1; i >= 0; i--) {
        kn_node *n = &g->nodes[i];
        bool live = false;
        for (int k = 0; k < n->n_out; k++)
            live |= needed[n->out[k]];
        if (!live) {
            mark_removed(n);
            (*removed)++;
            continue;
        }
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k] >= 0)
                needed[n->in[k]] = true;
    }
    free(needed);
    drop_removed_nodes(g);
    return KILN_OK;
}

/* ---- Identity and Dropout ---------------------------------------------------------------------- */

/* Whether Dropout node n copies its input at inference: no training_mode input, or a constant false
 * one (a true or run-time one may ask it to drop). */
static bool dropout_is_identity(const kn_graph *g, const kn_node *n) {
    if (n->n_in < 3 || n->in[2] < 0)
        return true;
    return is_constant(g, n->in[2]) && *(const uint8_t *)g->values[n->in[2]].data == 0;
}

/* y = Identity(x): consumers of y read x. When y is a graph output it keeps its name: x's producer
 * writes y instead, which needs x to be an activation that is not a graph output itself. */
static kiln_status remove_identities(kn_graph *g, int *removed) {
    for (int i = 0; i < g->n_nodes; i++) {
        kn_node *n = &g->nodes[i];
        bool identity = op_is(n, &kn_op_identity) || (op_is(n, &kn_op_dropout) && dropout_is_identity(g, n));
        if (!identity || n->n_out != 1 || n->in[0] < 0)
            continue;
        int x = n->in[0], y = n->out[0];
        if (!is_graph_output(g, y)) {
            replace_reads(g, y, x);
        } else {
            const kn_value *xv = &g->values[x];
            if (xv->kind != KN_VALUE_ACT || xv->producer < 0 || is_graph_output(g, x))
                continue;
            replace_reads(g, x, y);
            take_over_output(g, &g->nodes[xv->producer], x, y);
        }
        mark_removed(n);
        (*removed)++;
    }
    drop_removed_nodes(g);
    return KILN_OK;
}

/* ---- constant folding -------------------------------------------------------------------------- */

static bool foldable(const kn_graph *g, const kn_node *n) {
    if (n->n_in > FOLD_MAX_IO || n->n_out > FOLD_MAX_IO)
        return false;
    bool any = false;
    for (int k = 0; k < n->n_in; k++) {
        if (n->in[k] < 0)
            continue;
        if (!is_constant(g, n->in[k]))
            return false;
        any = true;
    }
    return any;
}

/* Bytes of the data of value v (0 when its size overflows: such a value cannot have data). */
static size_t value_bytes(const kn_value *v) {
    size_t bytes;
    return kn_shape_bytes(&v->shape, v->dtype, &bytes) ? bytes : 0;
}

/* Folding may add at most FOLD_GROWTH times the graph's constant bytes plus FOLD_SLACK bytes of new
 * constants: enough to widen every weight (int8 DequantizeLinear to f32: 4x) and for shape
 * arithmetic, while a 100-byte file whose ConstantOfShape or Expand asks for gigabytes is not
 * materialised at load. Its arithmetic is bounded the same way, FOLD_GROWTH operations per constant
 * byte plus FOLD_SLACK: a few kilobytes of constants feeding a Conv could otherwise ask for seconds of
 * work at load (a fuzz finding: 58 MFLOP from 3 KB). A node over either budget stays and runs in the
 * session, under its memory limit. */
enum { FOLD_GROWTH = 4 };
#define FOLD_SLACK ((size_t)16 << 20)

typedef struct fold_budget {
    size_t bytes;  /* of new constants */
    size_t flops;  /* as the op table counts them */
} fold_budget;

static size_t grown(size_t constant_bytes) {
    size_t budget;
    if (!kn_size_mul(constant_bytes, FOLD_GROWTH, &budget) || !kn_size_add(budget, FOLD_SLACK, &budget))
        return SIZE_MAX;
    return budget;
}

static fold_budget fold_budget_of(const kn_graph *g) {
    size_t constants = 0;
    for (int v = 0; v < g->n_values; v++)
        if (is_constant(g, v) && !kn_size_add(constants, value_bytes(&g->values[v]), &constants))
            return (fold_budget){SIZE_MAX, SIZE_MAX};
    return (fold_budget){grown(constants), grown(constants)};
}

/* Runs node n once on its constant inputs; its outputs become constants in the graph's arena. Leaves
 * n in place (*folded false) when its outputs or its arithmetic would exceed the budget, else takes
 * them from it. */
static kiln_status fold_node(kn_graph *g, kn_node *n, fold_budget *budget, bool *folded) {
    *folded = false;
    kiln_status st = kn_node_infer_shapes(g, n);
    if (st != KILN_OK) {
        kn_error_prefix("constant folding node '%s' (%s): ", n->name, n->op->name);
        return st;
    }
    size_t out_bytes = 0;
    for (int k = 0; k < n->n_out; k++) {
        const kn_value *v = kn_node_output(g, n, k);
        size_t bytes;
        if (!kn_shape_bytes(&v->shape, v->dtype, &bytes) || !kn_size_add(out_bytes, bytes, &out_bytes))
            return KILN_OK; // too large to fold; the session refuses it by its own limits
    }
    int64_t flops = n->op->flops ? n->op->flops(g, n) : 0;
    size_t work = flops > 0 ? (size_t)flops : 0;
    if (out_bytes > budget->bytes || work > budget->flops)
        return KILN_OK;
    budget->bytes -= out_bytes;
    budget->flops -= work;
    kn_tensor in[FOLD_MAX_IO], out[FOLD_MAX_IO];
    kn_tensor *in_ptr[FOLD_MAX_IO], *out_ptr[FOLD_MAX_IO];
    for (int k = 0; k < n->n_in; k++) {
        const kn_value *v = kn_node_input(g, n, k);
        in_ptr[k] = v ? &in[k] : NULL;
        if (v)
            in[k] = (kn_tensor){v->shape, v->dtype, v->data};
    }
    for (int k = 0; k < n->n_out; k++) {
        const kn_value *v = kn_node_output(g, n, k);
        size_t bytes = value_bytes(v); // checked against the budget above
        out[k] = (kn_tensor){v->shape, v->dtype, kn_arena_alloc(&g->arena, bytes ? bytes : 1)};
        out_ptr[k] = &out[k];
        if (!out[k].data)
            return kn_fail(KILN_ERR_NOMEM, "constant folding node '%s': no memory for %zu bytes", n->name,
                           bytes);
    }
    kn_op_ctx ctx = {.training = false};
    kn_op_call call = {.node = n, .in = in_ptr, .out = out_ptr, .ctx = &ctx};
    st = n->op->forward(&call);
    kn_op_ctx_release(&ctx);
    if (st != KILN_OK) {
        kn_error_prefix("constant folding node '%s' (%s): ", n->name, n->op->name);
        return st;
    }
    for (int k = 0; k < n->n_out; k++) {
        kn_value *v = kn_node_output(g, n, k);
        v->kind = KN_VALUE_CONST;
        v->data = out[k].data;
        v->shape = out[k].shape; /* an op that sizes its outputs when it runs has shrunk them */
        v->producer = -1;
    }
    mark_removed(n);
    *folded = true;
    return KILN_OK;
}

static kiln_status fold_constants(kn_graph *g, int *folded) {
    fold_budget budget = fold_budget_of(g);
    for (int i = 0; i < g->n_nodes; i++) {
        if (!foldable(g, &g->nodes[i]))
            continue;
        bool done;
        KN_TRY(fold_node(g, &g->nodes[i], &budget, &done));
        *folded += done;
    }
    drop_removed_nodes(g);
    return KILN_OK;
}

/* ---- integer layers ---------------------------------------------------------------------------- */

/* A DequantizeLinear's constant scale, zero point and input levels, when the scale is one f32 per
 * tensor or per index of `axis` (checked by the caller) and the zero point i8/u8 and constant. Values
 * are held by id: adding values to the graph moves them. */
typedef struct dq_info {
    int node;
    int levels;          /* the value dequantized */
    int scale;           /* f32, numel 1 or 1-D */
    int zero;            /* -1: zero point 0 */
    kn_dtype level_type; /* KN_U8 or KN_I8 */
} dq_info;

static bool dq_info_of(const kn_graph *g, int v, dq_info *d) {
    if (v < 0 || g->values[v].producer < 0)
        return false;
    const kn_node *n = &g->nodes[g->values[v].producer];
    if (!op_is(n, &kn_op_dequantizelinear) || n->in[0] < 0 || !is_constant(g, n->in[1]))
        return false;
    const kn_value *scale = kn_node_input(g, n, 1), *zero = kn_node_input(g, n, 2);
    if (scale->dtype != KN_F32 || scale->shape.ndim > 1 ||
        (zero && (!is_constant(g, n->in[2]) || kn_shape_numel(&zero->shape) != kn_shape_numel(&scale->shape))))
        return false;
    kn_dtype type = zero ? zero->dtype : g->values[n->in[0]].dtype;
    if (type != KN_U8 && type != KN_I8)
        return false;
    for (int64_t i = 0; i < kn_shape_numel(&scale->shape); i++) {
        float si = ((const float *)scale->data)[i];
        if (!(si >= FLT_MIN && si < INFINITY))
            return false;
    }
    *d = (dq_info){g->values[v].producer, n->in[0], n->in[1], zero ? n->in[2] : -1, type};
    return true;
}

static int64_t dq_scale_count(const kn_graph *g, const dq_info *d) {
    return kn_shape_numel(&g->values[d->scale].shape);
}

static float dq_scale(const kn_graph *g, const dq_info *d, int64_t i) {
    return ((const float *)g->values[d->scale].data)[i];
}

static int64_t dq_zero_point(const kn_graph *g, const dq_info *d, int64_t i) {
    if (d->zero < 0)
        return 0;
    const void *z = g->values[d->zero].data;
    return d->level_type == KN_I8 ? ((const int8_t *)z)[i] : ((const uint8_t *)z)[i];
}

/* A layer's weights as int8 levels (rows = output channels, K) with one scale per row. */
typedef struct qweights {
    kn_shape shape; /* of the weight tensor */
    int64_t rows, K;
    int8_t *levels; /* (rows, K) */
    float *scale;   /* (rows) */
} qweights;

static void qweights_free(qweights *w) {
    free(w->levels);
    free(w->scale);
}

/* Flat element i of a weight whose output channels run along `axis` (0: (rows, K), 1: (K, rows)). */
static void qweights_place(const qweights *w, int axis, int64_t i, int64_t *row, int64_t *k) {
    *row = axis == 0 ? i / w->K : i % w->rows;
    *k = axis == 0 ? i % w->K : i / w->rows;
}

/* The levels of weight value `v` (shape (rows, ...) for axis 0, (K, rows) for axis 1): a constant i8
 * tensor through a DequantizeLinear per tensor or per output channel, or an f32 initializer stored as
 * signed affine levels (kiln quantize's weights), both with zero point 0. False when it is neither. */
static bool qweights_of(const kn_graph *g, int v, int axis, qweights *w) {
    const kn_value *wv = v >= 0 ? &g->values[v] : NULL;
    dq_info d;
    bool from_dq = wv && dq_info_of(g, v, &d) && is_constant(g, d.levels) && d.level_type == KN_I8 &&
                   g->values[d.levels].dtype == KN_I8;
    const kn_storage *st = wv && (is_constant(g, v) || is_packed(g, v)) ? wv->storage : NULL;
    bool from_storage = st && (st->encoding == KN_ENC_AFFINE_I8 || st->encoding == KN_ENC_AFFINE_I4 ||
                               st->encoding == KN_ENC_AFFINE_I2) && st->block == 0;
    if (!from_dq && !from_storage)
        return false;
    const kn_shape *shape = from_dq ? &g->values[d.levels].shape : &wv->shape;
    if (shape->ndim < 2 || (axis == 1 && shape->ndim != 2))
        return false;
    w->shape = *shape;
    w->rows = shape->d[axis];
    w->K = kn_shape_numel(shape) / w->rows;
    int64_t groups = from_dq ? dq_scale_count(g, &d) : kn_storage_group_count(st);
    int scale_axis = from_dq ? (int)kn_node_int(&g->nodes[d.node], "axis", 1) : st->axis;
    if (groups != 1 && !(groups == w->rows && scale_axis == axis))
        return false;
    for (int64_t k = 0; k < groups; k++)
        if ((from_dq ? dq_zero_point(g, &d, k) : kn_storage_zero_point(st, k)) != 0)
            return false;
    w->levels = malloc((size_t)(w->rows * w->K));
    w->scale = malloc(sizeof(float) * (size_t)w->rows);
    if (!w->levels || !w->scale) {
        qweights_free(w);
        return false;
    }
    for (int64_t r = 0; r < w->rows; r++)
        w->scale[r] = from_dq ? dq_scale(g, &d, groups == 1 ? 0 : r) : st->scale[groups == 1 ? 0 : r];
    for (int64_t i = 0; i < w->rows * w->K; i++) {
        int64_t row, k;
        qweights_place(w, axis, i, &row, &k);
        w->levels[row * w->K + k] = from_dq ? ((const int8_t *)g->values[d.levels].data)[i]
                                            : (int8_t)kn_storage_level(st, i);
    }
    return true;
}

/* Adds a constant "<node>:<suffix>" of dtype and element count; its id goes to *id. */
static kiln_status add_layer_const(kn_graph *g, const char *node, const char *suffix, kn_dtype dtype, int64_t count,
                                   int *id) {
    char name[256];
    snprintf(name, sizeof name, "%s:%s", node, suffix);
    for (int n = 2; kn_graph_find_value(g, name) >= 0; n++)
        snprintf(name, sizeof name, "%s:%s%d", node, suffix, n);
    kn_shape shape = kn_shape_of(1, &count);
    return kn_graph_add_value(g, name, KN_VALUE_CONST, dtype, &shape, id);
}

/* What a Conv / Gemm / MatMul node must be to become an integer layer, and its weights' layout. */
typedef struct qlayer_plan {
    bool conv;
    int w_axis;     /* output channels of the weight tensor: 0, or 1 for (K, N) */
    int64_t group;  /* Conv */
    int bias_input; /* -1: none */
} qlayer_plan;

static bool qlayer_plan_of(const kn_node *n, qlayer_plan *p) {
    *p = (qlayer_plan){.conv = op_is(n, &kn_op_conv), .group = 1, .bias_input = n->n_in > 2 && n->in[2] >= 0 ? 2 : -1};
    if (kn_node_attr(n, "kn_activation"))
        return false;
    if (p->conv) {
        p->group = kn_node_int(n, "group", 1);
        return p->group >= 1;
    }
    if (op_is(n, &kn_op_gemm)) {
        if (kn_node_int(n, "transA", 0) != 0 || kn_node_float(n, "alpha", 1.0f) != 1.0f ||
            (p->bias_input >= 0 && kn_node_float(n, "beta", 1.0f) != 1.0f))
            return false;
        p->w_axis = kn_node_int(n, "transB", 0) ? 0 : 1;
        return true;
    }
    if (op_is(n, &kn_op_matmul)) {
        p->w_axis = 1;
        return p->bias_input < 0;
    }
    return false;
}

/* The bias per output channel: absent, or a constant f32 of one element or `rows`. */
static bool qlayer_bias_ok(const kn_graph *g, const kn_node *n, const qlayer_plan *p, int64_t rows) {
    if (p->bias_input < 0)
        return true;
    const kn_value *b = kn_node_input(g, n, p->bias_input);
    int64_t numel = kn_shape_numel(&b->shape);
    return is_constant(g, n->in[p->bias_input]) && b->dtype == KN_F32 && (numel == 1 || numel == rows) &&
           (p->conv ? b->shape.ndim == 1 : b->shape.ndim <= 2);
}

/* Writes the layer's constants: packed weights, mult, bias, corr; returns their ids in ids[4]. */
static kiln_status qlayer_constants(kn_graph *g, int node, const qlayer_plan *p, const qweights *w,
                                    const dq_info *x, int ids[4]) {
    const char *name = g->nodes[node].name;
    int64_t rows_per_group = w->rows / p->group;
    size_t packed = p->conv ? kn_qgemm_b_bytes(rows_per_group, w->K) * (size_t)p->group
                            : kn_qgemm_v_bytes(w->rows, w->K);
    KN_TRY(add_layer_const(g, name, "qweight", KN_I8, (int64_t)packed, &ids[0]));
    KN_TRY(add_layer_const(g, name, "qmult", KN_F32, w->rows, &ids[1]));
    KN_TRY(add_layer_const(g, name, "qbias", KN_F32, w->rows, &ids[2]));
    KN_TRY(add_layer_const(g, name, "qcorr", KN_I32, w->rows, &ids[3]));
    int8_t *wp = g->values[ids[0]].data;
    if (p->conv)
        for (int64_t grp = 0; grp < p->group; grp++)
            kn_qgemm_pack_weights_b(w->levels + grp * rows_per_group * w->K, rows_per_group, w->K, w->K,
                                    wp + (size_t)grp * kn_qgemm_b_bytes(rows_per_group, w->K));
    else
        kn_qgemm_pack_weights_v(w->levels, w->rows, w->K, w->K, wp);
    float s_x = dq_scale(g, x, 0);
    int32_t z_x = (int32_t)dq_zero_point(g, x, 0) + (x->level_type == KN_I8 ? 128 : 0); /* u8 form */
    const kn_value *b = p->bias_input >= 0 ? kn_node_input(g, &g->nodes[node], p->bias_input) : NULL;
    int64_t b_numel = b ? kn_shape_numel(&b->shape) : 0;
    float *mult = g->values[ids[1]].data, *bias = g->values[ids[2]].data;
    int32_t *corr = g->values[ids[3]].data;
    for (int64_t r = 0; r < w->rows; r++) {
        int32_t sum = 0;
        for (int64_t k = 0; k < w->K; k++)
            sum += w->levels[r * w->K + k];
        mult[r] = kn_quant_multiplier(s_x, w->scale[r], 1.0);
        bias[r] = b ? ((const float *)b->data)[b_numel == 1 ? 0 : r] : 0.0f;
        corr[r] = z_x * sum;
    }
    return KILN_OK;
}

/* Node `node` becomes the integer layer: reads x's levels and the constants ids[4]. */
static kiln_status qlayer_rewrite(kn_graph *g, int node, const qlayer_plan *p, const qweights *w,
                                  const dq_info *x, const int ids[4]) {
    kn_node *n = &g->nodes[node];
    int *in = kn_arena_alloc(&g->arena, sizeof(int) * 5);
    if (!in)
        return kn_fail(KILN_ERR_NOMEM, "out of memory rewriting node '%s'", n->name);
    in[0] = x->levels;
    memcpy(in + 1, ids, sizeof(int) * 4);
    if (p->conv) {
        KN_TRY(kn_node_set_ints(g, node, "kn_w_shape", 4, w->shape.d));
    } else {
        KN_TRY(kn_node_set_int(g, node, "kn_k", w->K));
        KN_TRY(kn_node_set_int(g, node, "kn_n", w->rows));
    }
    KN_TRY(kn_node_set_int(g, node, "kn_x_signed", x->level_type == KN_I8));
    KN_TRY(kn_node_set_int(g, node, "kn_x_zero_point", dq_zero_point(g, x, 0)));
    n = &g->nodes[node];
    n->op = p->conv ? &kn_op_qlinearconvpacked : &kn_op_qlineargemmpacked;
    n->in = in;
    n->n_in = 5;
    return KILN_OK;
}

/* A Conv, Gemm or MatMul whose input is a per-tensor DequantizeLinear and whose weights are int8
 * levels with zero point 0 (qweights_of) becomes QLinearConvPacked / QLinearGemmPacked (ops/qlinear.c)
 * with f32 output; the passes after fold a BatchNormalization, a Relu and a QuantizeLinear into it. */
static kiln_status make_integer_layers(kn_graph *g, int *made) {
    kiln_status st = KILN_OK;
    for (int i = 0; i < g->n_nodes && st == KILN_OK; i++) {
        qlayer_plan p;
        dq_info x;
        qweights w;
        kn_node *n = &g->nodes[i];
        if (!(op_is(n, &kn_op_conv) || op_is(n, &kn_op_gemm) || op_is(n, &kn_op_matmul)) || n->n_in < 2 ||
            !qlayer_plan_of(n, &p) || !dq_info_of(g, n->in[0], &x) || dq_scale_count(g, &x) != 1)
            continue;
        if (!qweights_of(g, n->in[1], p.w_axis, &w))
            continue;
        bool fits = w.K <= KN_QGEMM_MAX_K && w.rows % p.group == 0 && (!p.conv || w.shape.ndim == 4) &&
                    qlayer_bias_ok(g, n, &p, w.rows);
        int ids[4];
        if (fits && (st = qlayer_constants(g, i, &p, &w, &x, ids)) == KILN_OK)
            st = qlayer_rewrite(g, i, &p, &w, &x, ids);
        *made += fits && st == KILN_OK;
        qweights_free(&w);
    }
    return st;
}

/* ---- ONNX's QLinearConv / QLinearMatMul onto the integer layers ---------------------------------
 *
 * Their definition (core/quant.h, "ONNX's integer ops") is the integer layers' with bias 0, output
 * scale 1 and multiplier s_x * s_w / s_y; the int32 bias goes into the zero-point correction, which the
 * kernels subtract from the sum in int32. So a QLinearConv (2-D) or QLinearMatMul (B of rank 2) whose
 * weights and scales are constants, x's parameters per tensor, and whose weight levels less their zero
 * points fit i8 becomes QLinearConvPacked / QLinearGemmPacked and gives the same numbers. */

/* Constant input i of node n, or NULL when it is absent or not constant. */
static const kn_value *qonnx_const(const kn_graph *g, const kn_node *n, int i) {
    return i < n->n_in && is_constant(g, n->in[i]) ? &g->values[n->in[i]] : NULL;
}

/* Scale or zero point i of node n: a constant of `count` elements or one (rank <= 1), of dtype `type`
 * (a zero point: the levels' type; absent means 0). */
static bool qonnx_param_ok(const kn_graph *g, const kn_node *n, int i, kn_dtype type, int64_t count, bool optional) {
    if (optional && (i >= n->n_in || n->in[i] < 0))
        return true;
    const kn_value *v = qonnx_const(g, n, i);
    int64_t numel = v ? kn_shape_numel(&v->shape) : 0;
    return v && v->dtype == type && v->shape.ndim <= 1 && (numel == 1 || numel == count);
}

static float qonnx_scale(const kn_graph *g, const kn_node *n, int i, int64_t index) {
    const kn_value *v = &g->values[n->in[i]];
    return ((const float *)v->data)[kn_shape_numel(&v->shape) == 1 ? 0 : index];
}

static int32_t qonnx_zero(const kn_graph *g, const kn_node *n, int i, int64_t index) {
    if (i >= n->n_in || n->in[i] < 0)
        return 0;
    const kn_value *v = &g->values[n->in[i]];
    int64_t at = kn_shape_numel(&v->shape) == 1 ? 0 : index;
    return v->dtype == KN_I8 ? ((const int8_t *)v->data)[at] : ((const uint8_t *)v->data)[at];
}

/* The layer a QLinearConv / QLinearMatMul node n can become: its weights' levels less their zero points
 * (rows = output channels) and scales, and the int32 bias. False when it cannot. Inputs: x 0, x_scale 1,
 * x_zero_point 2, w 3, w_scale 4, w_zero_point 5, y_scale 6, y_zero_point 7, B 8 (QLinearConv). */
static bool qonnx_layer_of(const kn_graph *g, const kn_node *n, qweights *w, const int32_t **bias) {
    bool conv = op_is(n, &kn_op_qlinearconv);
    const kn_value *x = n->n_in > 0 && n->in[0] >= 0 ? kn_node_input(g, n, 0) : NULL, *wv = qonnx_const(g, n, 3);
    if (!x || (x->dtype != KN_U8 && x->dtype != KN_I8) || !wv || (wv->dtype != KN_U8 && wv->dtype != KN_I8) ||
        (conv ? x->shape.ndim != 4 || wv->shape.ndim != 4 : x->shape.ndim < 2 || wv->shape.ndim != 2))
        return false;
    int axis = conv ? 0 : 1;
    if (conv && kn_node_int(n, "group", 1) < 1)
        return false;
    *w = (qweights){.shape = wv->shape, .rows = wv->shape.d[axis]};
    w->K = kn_shape_numel(&wv->shape) / w->rows;
    const kn_value *y_zero = n->n_in > 7 && n->in[7] >= 0 ? &g->values[n->in[7]] : NULL;
    const kn_value *b = conv && n->n_in > 8 && n->in[8] >= 0 ? qonnx_const(g, n, 8) : NULL;
    if (!qonnx_param_ok(g, n, 1, KN_F32, 1, false) || !qonnx_param_ok(g, n, 2, x->dtype, 1, true) ||
        !qonnx_param_ok(g, n, 4, KN_F32, w->rows, false) || !qonnx_param_ok(g, n, 5, wv->dtype, w->rows, true) ||
        !qonnx_param_ok(g, n, 6, KN_F32, 1, false) ||
        (y_zero && !qonnx_param_ok(g, n, 7, y_zero->dtype, 1, false)) ||
        (y_zero && y_zero->dtype != KN_U8 && y_zero->dtype != KN_I8) ||
        (conv && n->n_in > 8 && n->in[8] >= 0 && (!b || b->dtype != KN_I32 || kn_shape_numel(&b->shape) != w->rows)) ||
        w->K > KN_QGEMM_MAX_K)
        return false;
    static const int scale_inputs[] = {1, 4, 6};
    for (int i = 0; i < 3; i++)
        for (int64_t r = 0; r < w->rows; r++) {
            float s = qonnx_scale(g, n, scale_inputs[i], r);
            if (!(s >= FLT_MIN && s < INFINITY))
                return false;
        }
    *bias = b ? b->data : NULL;
    // |sum - corr| <= K * 255 * 128 + |B|, which must stay in int32 for the kernels' wrapping sum.
    for (int64_t r = 0; *bias && r < w->rows; r++)
        if (llabs((long long)(*bias)[r]) > (long long)INT32_MAX - (long long)w->K * 255 * 128)
            return false;
    w->levels = malloc((size_t)(w->rows * w->K));
    w->scale = malloc(sizeof(float) * (size_t)w->rows);
    if (!w->levels || !w->scale) {
        qweights_free(w);
        return false;
    }
    for (int64_t i = 0; i < w->rows * w->K; i++) {
        int64_t row, k;
        qweights_place(w, axis, i, &row, &k);
        int32_t level = wv->dtype == KN_I8 ? ((const int8_t *)wv->data)[i] : ((const uint8_t *)wv->data)[i];
        level -= qonnx_zero(g, n, 5, row);
        if (level < -128 || level > 127) {
            qweights_free(w);
            return false;
        }
        w->levels[row * w->K + k] = (int8_t)level;
    }
    for (int64_t r = 0; r < w->rows; r++)
        w->scale[r] = qonnx_scale(g, n, 4, r);
    return true;
}

/* Writes the layer's constants (packed weights, mult, bias 0, corr with the int32 bias in it) and makes
 * node `node` the integer layer. */
static kiln_status qonnx_rewrite(kn_graph *g, int node, const qweights *w, const int32_t *b) {
    kn_node *n = &g->nodes[node];
    bool conv = op_is(n, &kn_op_qlinearconv);
    float s_x = qonnx_scale(g, n, 1, 0), s_y = qonnx_scale(g, n, 6, 0);
    int32_t z_x = qonnx_zero(g, n, 2, 0), z_y = qonnx_zero(g, n, 7, 0);
    bool x_signed = g->values[n->in[0]].dtype == KN_I8;
    bool y_signed = n->n_in > 7 && n->in[7] >= 0 && g->values[n->in[7]].dtype == KN_I8;
    int32_t *bias = NULL;
    if (b) { /* the graph's values may move as constants are added */
        if (!(bias = malloc(sizeof(int32_t) * (size_t)w->rows)))
            return kn_fail(KILN_ERR_NOMEM, "out of memory rewriting node '%s'", n->name);
        memcpy(bias, b, sizeof(int32_t) * (size_t)w->rows);
    }
    float *mult_of = malloc(sizeof(float) * (size_t)w->rows);
    if (!mult_of) {
        free(bias);
        return kn_fail(KILN_ERR_NOMEM, "out of memory rewriting node '%s'", n->name);
    }
    for (int64_t r = 0; r < w->rows; r++)
        mult_of[r] = kn_quant_requant_multiplier(s_x, w->scale[r], s_y);
    int x = n->in[0];
    const char *name = n->name;
    int64_t group = conv ? kn_node_int(n, "group", 1) : 1, rows_per_group = w->rows / group;
    size_t packed = conv ? kn_qgemm_b_bytes(rows_per_group, w->K) * (size_t)group : kn_qgemm_v_bytes(w->rows, w->K);
    int ids[4];
    kiln_status st = add_layer_const(g, name, "qweight", KN_I8, (int64_t)packed, &ids[0]);
    if (st == KILN_OK)
        st = add_layer_const(g, name, "qmult", KN_F32, w->rows, &ids[1]);
    if (st == KILN_OK)
        st = add_layer_const(g, name, "qbias", KN_F32, w->rows, &ids[2]);
    if (st == KILN_OK)
        st = add_layer_const(g, name, "qcorr", KN_I32, w->rows, &ids[3]);
    int *in = st == KILN_OK ? kn_arena_alloc(&g->arena, sizeof(int) * 5) : NULL;
    if (!in) {
        free(bias), free(mult_of);
        return st != KILN_OK ? st : kn_fail(KILN_ERR_NOMEM, "out of memory rewriting node '%s'", g->nodes[node].name);
    }
    int8_t *wp = g->values[ids[0]].data;
    for (int64_t grp = 0; conv && grp < group; grp++)
        kn_qgemm_pack_weights_b(w->levels + grp * rows_per_group * w->K, rows_per_group, w->K, w->K,
                                wp + (size_t)grp * kn_qgemm_b_bytes(rows_per_group, w->K));
    if (!conv)
        kn_qgemm_pack_weights_v(w->levels, w->rows, w->K, w->K, wp);
    float *mult = g->values[ids[1]].data, *zero_bias = g->values[ids[2]].data;
    int32_t *corr = g->values[ids[3]].data;
    int64_t z_x_u8 = z_x + (x_signed ? 128 : 0); /* the kernels' u8 form of x */
    for (int64_t r = 0; r < w->rows; r++) {
        int64_t sum = 0;
        for (int64_t k = 0; k < w->K; k++)
            sum += w->levels[r * w->K + k];
        mult[r] = mult_of[r];
        zero_bias[r] = 0.0f;
        corr[r] = (int32_t)(uint32_t)(uint64_t)(z_x_u8 * sum - (bias ? bias[r] : 0)); /* mod 2^32, as the kernels */
    }
    free(bias), free(mult_of);
    in[0] = x;
    memcpy(in + 1, ids, sizeof ids);
    if (conv) {
        KN_TRY(kn_node_set_ints(g, node, "kn_w_shape", 4, w->shape.d));
    } else {
        KN_TRY(kn_node_set_int(g, node, "kn_k", w->K));
        KN_TRY(kn_node_set_int(g, node, "kn_n", w->rows));
    }
    KN_TRY(kn_node_set_int(g, node, "kn_x_signed", x_signed));
    KN_TRY(kn_node_set_int(g, node, "kn_x_zero_point", z_x));
    KN_TRY(kn_node_set_int(g, node, "kn_y_type", y_signed ? KN_QOUT_I8 : KN_QOUT_U8));
    KN_TRY(kn_node_set_float(g, node, "kn_y_scale", 1.0f));
    KN_TRY(kn_node_set_int(g, node, "kn_y_zero_point", z_y));
    n = &g->nodes[node];
    n->op = kn_op_find(conv ? "QLinearConvPacked" : "QLinearGemmPacked");
    n->in = in;
    n->n_in = 5;
    return KILN_OK;
}

/* QLinearConv and QLinearMatMul nodes that qonnx_layer_of accepts become integer layers. */
static kiln_status make_qlinear_layers(kn_graph *g, int *made) {
    kiln_status st = KILN_OK;
    for (int i = 0; i < g->n_nodes && st == KILN_OK; i++) {
        kn_node *n = &g->nodes[i];
        qweights w;
        const int32_t *bias;
        if (!(op_is(n, &kn_op_qlinearconv) || op_is(n, &kn_op_qlinearmatmul)) || !qonnx_layer_of(g, n, &w, &bias))
            continue;
        bool fits = !op_is(n, &kn_op_qlinearconv) || w.rows % kn_node_int(n, "group", 1) == 0;
        if (fits && (st = qonnx_rewrite(g, i, &w, bias)) == KILN_OK)
            (*made)++;
        qweights_free(&w);
    }
    return st;
}

/* ---- ONNX's MatMulInteger onto the integer layers --------------------------------------------------
 *
 * MatMulInteger(A, B, a_zero_point, b_zero_point) with B a constant (K, N) whose levels less their zero
 * points fit i8 is the packed product with the int32 output (KN_QOUT_I32): the same exact sums, wrapping
 * the same way. A's zero point (per tensor) may be a constant, or computed at run time (a dynamically
 * quantized model's DynamicQuantizeLinear gives it): then the layer takes it as input 6 and its input 4
 * holds B's column sums, from which each run makes its correction. */

/* B's levels less their zero points as qweights (rows = columns of B), or false. Inputs: A 0, B 1,
 * a_zero_point 2, b_zero_point 3. */
static bool qinteger_weights_of(const kn_graph *g, const kn_node *n, qweights *w) {
    const kn_value *a = n->n_in > 0 && n->in[0] >= 0 ? kn_node_input(g, n, 0) : NULL, *b = qonnx_const(g, n, 1);
    const kn_value *za = n->n_in > 2 && n->in[2] >= 0 ? kn_node_input(g, n, 2) : NULL;
    if (!a || (a->dtype != KN_U8 && a->dtype != KN_I8) || a->shape.ndim < 2 || !b ||
        (b->dtype != KN_U8 && b->dtype != KN_I8) || b->shape.ndim != 2 ||
        (za && (za->dtype != a->dtype || kn_shape_numel(&za->shape) != 1)))
        return false;
    *w = (qweights){.shape = b->shape, .rows = b->shape.d[1], .K = b->shape.d[0]};
    if (w->K > KN_QGEMM_MAX_K || !qonnx_param_ok(g, n, 3, b->dtype, w->rows, true))
        return false;
    w->levels = malloc((size_t)(w->rows * w->K));
    w->scale = NULL;
    if (!w->levels)
        return false;
    for (int64_t i = 0; i < w->rows * w->K; i++) {
        int64_t row, k;
        qweights_place(w, 1, i, &row, &k);
        int32_t level = (b->dtype == KN_I8 ? ((const int8_t *)b->data)[i] : ((const uint8_t *)b->data)[i]) -
                        qonnx_zero(g, n, 3, row);
        if (level < -128 || level > 127) {
            qweights_free(w);
            return false;
        }
        w->levels[row * w->K + k] = (int8_t)level;
    }
    return true;
}

/* Node `node` becomes QLinearGemmPacked with int32 output over the weights w. */
static kiln_status qinteger_rewrite(kn_graph *g, int node, const qweights *w) {
    kn_node *n = &g->nodes[node];
    const char *name = n->name;
    int a = n->in[0], za = n->n_in > 2 ? n->in[2] : -1;
    bool x_signed = g->values[a].dtype == KN_I8, z_constant = za < 0 || is_constant(g, za);
    const void *z_data = za >= 0 && z_constant ? g->values[za].data : NULL;
    int64_t z = !z_data ? 0 : x_signed ? *(const int8_t *)z_data : *(const uint8_t *)z_data;
    int ids[4];
    KN_TRY(add_layer_const(g, name, "qweight", KN_I8, (int64_t)kn_qgemm_v_bytes(w->rows, w->K), &ids[0]));
    KN_TRY(add_layer_const(g, name, "qmult", KN_F32, w->rows, &ids[1]));
    KN_TRY(add_layer_const(g, name, "qbias", KN_F32, w->rows, &ids[2]));
    KN_TRY(add_layer_const(g, name, "qcorr", KN_I32, w->rows, &ids[3]));
    int *in = kn_arena_alloc(&g->arena, sizeof(int) * 7);
    if (!in)
        return kn_fail(KILN_ERR_NOMEM, "out of memory rewriting node '%s'", g->nodes[node].name);
    kn_qgemm_pack_weights_v(w->levels, w->rows, w->K, w->K, g->values[ids[0]].data);
    float *mult = g->values[ids[1]].data, *bias = g->values[ids[2]].data;
    int32_t *corr = g->values[ids[3]].data;
    for (int64_t r = 0; r < w->rows; r++) {
        int64_t sum = 0;
        for (int64_t k = 0; k < w->K; k++)
            sum += w->levels[r * w->K + k];
        mult[r] = 1.0f; /* unused by the int32 output */
        bias[r] = 0.0f;
        // A constant zero point makes the correction now; a run-time one, from these sums each run.
        corr[r] = (int32_t)(uint32_t)(uint64_t)(z_constant ? (z + (x_signed ? 128 : 0)) * sum : sum);
    }
    in[0] = a;
    memcpy(in + 1, ids, sizeof ids);
    in[5] = -1;
    in[6] = z_constant ? -1 : za;
    KN_TRY(kn_node_set_int(g, node, "kn_k", w->K));
    KN_TRY(kn_node_set_int(g, node, "kn_n", w->rows));
    KN_TRY(kn_node_set_int(g, node, "kn_x_signed", x_signed));
    KN_TRY(kn_node_set_int(g, node, "kn_x_zero_point", z_constant ? z : 0));
    KN_TRY(kn_node_set_int(g, node, "kn_y_type", KN_QOUT_I32));
    n = &g->nodes[node];
    n->op = &kn_op_qlineargemmpacked;
    n->in = in;
    n->n_in = z_constant ? 5 : 7;
    return KILN_OK;
}

static kiln_status make_matmulinteger_layers(kn_graph *g, int *made) {
    kiln_status st = KILN_OK;
    for (int i = 0; i < g->n_nodes && st == KILN_OK; i++) {
        qweights w;
        if (!op_is(&g->nodes[i], &kn_op_matmulinteger) || !qinteger_weights_of(g, &g->nodes[i], &w))
            continue;
        if ((st = qinteger_rewrite(g, i, &w)) == KILN_OK)
            (*made)++;
        qweights_free(&w);
    }
    return st;
}

static bool is_integer_layer(const kn_node *n) {
    return op_is(n, &kn_op_qlinearconvpacked) || op_is(n, &kn_op_qlineargemmpacked);
}

/* ---- residual Adds into integer layers ----------------------------------------------------------
 *
 * Add(layer, r) [-> Relu] [-> QuantizeLinear], a ResNet block's shortcut: when one input of an Add is the
 * f32 output of an integer layer that only the Add reads (no activation or residual yet) and the other,
 * r, has the same shape, the layer adds r in its epilogue (core/quant.h kn_quant_add_residual: the same
 * f32 addition) and the passes after fuse the Relu and the QuantizeLinear into it as before. When r is a
 * per-tensor DequantizeLinear of u8/i8 levels the layer reads the levels (dequantizing them exactly as
 * the DequantizeLinear does), so the shortcut stays 8-bit; otherwise it reads r in f32. The layer takes
 * the Add's place in the node order, where r has been computed.
 * The graph's activation shapes are stale here, and an Add may broadcast: r and the layer's output must
 * have the same shape by shape inference with the open input dims at 1 and at 2 (a batch), or the Add
 * stays. */

/* Every value's shape with the graph's open input dims at `open`: shape inference on a view of g that
 * shares its nodes and data, as a session's does. (n_values) malloc'd; NULL when inference fails (the
 * error is dropped: the caller only fuses less) or out of memory. */
static kn_shape *shapes_with_open_dims(const kn_graph *g, int64_t open) {
    kn_graph view = *g;
    memset(&view.arena, 0, sizeof view.arena);
    view.mapping = NULL;
    view.mapping_bytes = 0;
    view.values = malloc(sizeof(kn_value) * (size_t)(g->n_values ? g->n_values : 1));
    kn_shape *shapes = malloc(sizeof(kn_shape) * (size_t)(g->n_values ? g->n_values : 1));
    if (!view.values || !shapes) {
        free(view.values);
        free(shapes);
        return NULL;
    }
    memcpy(view.values, g->values, sizeof(kn_value) * (size_t)g->n_values);
    view.cap_values = g->n_values;
    for (int v = 0; v < g->n_values; v++) { /* g's inferred data stays g's: the view computes its own */
        if (view.values[v].data_from_inference) {
            view.values[v].data = NULL;
            view.values[v].data_from_inference = false;
        }
    }
    for (int i = 0; i < g->n_inputs; i++) {
        kn_shape *s = &view.values[g->inputs[i]].shape;
        for (int d = 0; d < s->ndim; d++)
            s->d[d] = kn_graph_input_dim_open(g, i, d) ? open : s->d[d];
    }
    if (kn_graph_infer_shapes(&view) == KILN_OK) {
        for (int v = 0; v < g->n_values; v++)
            shapes[v] = view.values[v].shape;
    } else {
        free(shapes);
        shapes = NULL;
    }
    free(view.values);
    kn_arena_free(&view.arena);
    return shapes;
}

/* Whether values a and b have the same shape in both inferences. */
static bool same_shapes(kn_shape *const at[2], int a, int b) {
    return kn_shape_equal(&at[0][a], &at[0][b]) && kn_shape_equal(&at[1][a], &at[1][b]);
}

/* The integer layer whose f32 output v only an Add reads and which may take a residual, or NULL. */
static kn_node *residual_taker(kn_graph *g, const int *reads, int v) {
    kn_node *p = sole_producer(g, reads, v);
    return p && is_integer_layer(p) && p->n_in == 5 && kn_node_int(p, "kn_y_type", 0) == KN_QOUT_F32 &&
                   !kn_node_attr(p, "kn_activation")
               ? p
               : NULL;
}

/* Add node `add` becomes `layer` with residual r (its levels, when r is a DequantizeLinear's output). */
static kiln_status fuse_residual(kn_graph *g, int add, kn_node *layer, int r) {
    dq_info d;
    bool levels = dq_info_of(g, r, &d) && dq_scale_count(g, &d) == 1 && g->values[d.levels].dtype == d.level_type;
    int *in = kn_arena_alloc(&g->arena, sizeof(int) * 6);
    if (!in)
        return kn_fail(KILN_ERR_NOMEM, "out of memory fusing Add '%s'", g->nodes[add].name);
    memcpy(in, layer->in, sizeof(int) * 5);
    in[5] = levels ? d.levels : r;
    int *out = g->nodes[add].out;
    g->nodes[add] = *layer;
    g->nodes[add].in = in;
    g->nodes[add].n_in = 6;
    g->nodes[add].out = out;
    mark_removed(layer);
    if (levels) {
        KN_TRY(kn_node_set_float(g, add, "kn_r_scale", dq_scale(g, &d, 0)));
        KN_TRY(kn_node_set_int(g, add, "kn_r_zero_point", dq_zero_point(g, &d, 0)));
    }
    return KILN_OK;
}

static kiln_status fuse_residuals(kn_graph *g, int *fused) {
    int *reads = count_reads(g);
    bool any = false; /* an Add after an integer layer: only then is shape inference worth its time */
    for (int i = 0; reads && i < g->n_nodes && !any; i++) {
        const kn_node *n = &g->nodes[i];
        any = op_is(n, &kn_op_add) && n->n_in == 2 &&
              (residual_taker(g, reads, n->in[0]) || residual_taker(g, reads, n->in[1]));
    }
    if (!any) {
        free(reads);
        return KILN_OK;
    }
    kn_shape *shapes[2] = {shapes_with_open_dims(g, 1), shapes_with_open_dims(g, 2)};
    if (!shapes[0] || !shapes[1]) {
        free(shapes[0]), free(shapes[1]), free(reads);
        return KILN_OK; /* shapes unknown (or no memory): the Adds stay */
    }
    kiln_status st = KILN_OK;
    for (int i = 0; i < g->n_nodes && st == KILN_OK; i++) {
        kn_node *add = &g->nodes[i];
        if (!op_is(add, &kn_op_add) || add->n_in != 2 || add->n_out != 1 || add->in[0] < 0 || add->in[1] < 0 ||
            add->in[0] == add->in[1])
            continue;
        const kn_value *a = &g->values[add->in[0]], *b = &g->values[add->in[1]];
        if (a->dtype != KN_F32 || b->dtype != KN_F32 || !same_shapes(shapes, add->in[0], add->in[1]))
            continue;
        // The layer whose other input is a DequantizeLinear's output first: its residual stays 8-bit.
        dq_info d;
        int side = residual_taker(g, reads, add->in[1]) && dq_info_of(g, add->in[0], &d) ? 1 : 0;
        kn_node *layer = residual_taker(g, reads, add->in[side]);
        if (!layer && (layer = residual_taker(g, reads, add->in[1 - side])))
            side = 1 - side;
        if (!layer)
            continue;
        st = fuse_residual(g, i, layer, add->in[1 - side]);
        *fused += st == KILN_OK;
    }
    free(shapes[0]), free(shapes[1]), free(reads);
    drop_removed_nodes(g);
    return st;
}

/* The per-tensor quantization of QuantizeLinear node q: false unless its scale and zero point are
 * constant scalars (the zero point u8 or i8) and the scale finite and > 0. */
static bool quantize_params(const kn_graph *g, const kn_node *q, float *scale, int64_t *zero, int *y_type) {
    const kn_value *s = kn_node_input(g, q, 1), *z = kn_node_input(g, q, 2);
    if (q->n_out != 1 || !is_constant(g, q->in[1]) || s->dtype != KN_F32 || kn_shape_numel(&s->shape) != 1 ||
        (z && (!is_constant(g, q->in[2]) || kn_shape_numel(&z->shape) != 1 ||
               (z->dtype != KN_U8 && z->dtype != KN_I8))))
        return false;
    *scale = *(const float *)s->data;
    bool is_signed = z && z->dtype == KN_I8;
    *zero = !z ? 0 : is_signed ? *(const int8_t *)z->data : *(const uint8_t *)z->data;
    *y_type = is_signed ? KN_QOUT_I8 : KN_QOUT_U8;
    return *scale >= FLT_MIN && *scale < INFINITY;
}

/* Whether node n passes levels through unchanged in meaning: a MaxPool with one output (it becomes
 * MaxPoolInteger: QuantizeLinear is non-decreasing, so it commutes with max) or a Flatten. */
static bool commutes_with_quantize(const kn_node *n) {
    return (op_is(n, &kn_op_maxpool) && n->n_out == 1) || op_is(n, &kn_op_flatten);
}

/* QuantizeLinear (per tensor) after an integer layer with f32 output, directly or through MaxPool and
 * Flatten nodes that nothing else reads: the layer writes the levels, the MaxPools become
 * MaxPoolInteger, and the QuantizeLinear goes. */
static kiln_status absorb_quantize(kn_graph *g, int *absorbed) {
    int *reads = count_reads(g);
    if (!reads)
        return kn_fail(KILN_ERR_NOMEM, "out of memory fusing QuantizeLinear");
    kiln_status st = KILN_OK;
    for (int i = 0; i < g->n_nodes && st == KILN_OK; i++) {
        kn_node *q = &g->nodes[i];
        float s_y;
        int64_t z_y;
        int y_type;
        if (!op_is(q, &kn_op_quantizelinear) || !quantize_params(g, q, &s_y, &z_y, &y_type))
            continue;
        kn_node *chain[8], *layer = sole_producer(g, reads, q->in[0]);
        int n_chain = 0;
        while (layer && commutes_with_quantize(layer) && n_chain < 8) {
            chain[n_chain++] = layer;
            layer = sole_producer(g, reads, layer->in[0]);
        }
        if (!layer || !is_integer_layer(layer) || kn_node_int(layer, "kn_y_type", 0) != KN_QOUT_F32)
            continue;
        int index = (int)(layer - g->nodes);
        st = kn_node_set_int(g, index, "kn_y_type", y_type);
        if (st == KILN_OK)
            st = kn_node_set_float(g, index, "kn_y_scale", s_y);
        if (st == KILN_OK)
            st = kn_node_set_int(g, index, "kn_y_zero_point", z_y);
        if (st != KILN_OK)
            break;
        for (int c = 0; c < n_chain; c++)
            if (op_is(chain[c], &kn_op_maxpool))
                chain[c]->op = &kn_op_maxpoolinteger;
        kn_node *last = n_chain ? chain[0] : &g->nodes[index];
        take_over_output(g, last, q->in[0], q->out[0]);
        mark_removed(q);
        (*absorbed)++;
    }
    free(reads);
    drop_removed_nodes(g);
    return st;
}

/* ---- Adds of two quantized tensors ---------------------------------------------------------------
 *
 * Add(DequantizeLinear(a), DequantizeLinear(b)) [-> Relu] -> QuantizeLinear, all per tensor, a and b
 * levels of one shape (by shape inference at open dims 1 and 2), becomes AddInteger (ops/qlinear.c),
 * which computes the same f32 operations from the levels: a QDQ model's residual Add from another tool
 * (both inputs quantized) reads and writes 8-bit levels. It takes the QuantizeLinear's place; the
 * DequantizeLinears go when nothing else reads them. */

/* The per-tensor DequantizeLinear of levels (not constants) that value v comes from, or false. */
static bool dq_levels_of(const kn_graph *g, int v, dq_info *d) {
    return dq_info_of(g, v, d) && dq_scale_count(g, d) == 1 && !is_constant(g, d->levels) &&
           g->values[d->levels].dtype == d->level_type;
}

static kiln_status fuse_integer_add(kn_graph *g, kn_node *add, kn_node *relu, kn_node *q, const dq_info *da,
                                    const dq_info *db, float s_y, int64_t z_y, int y_type) {
    int index = (int)(q - g->nodes);
    int *in = kn_arena_alloc(&g->arena, sizeof(int) * 2);
    if (!in)
        return kn_fail(KILN_ERR_NOMEM, "out of memory fusing Add '%s'", add->name);
    in[0] = da->levels;
    in[1] = db->levels;
    KN_TRY(kn_node_set_float(g, index, "kn_a_scale", dq_scale(g, da, 0)));
    KN_TRY(kn_node_set_int(g, index, "kn_a_zero_point", dq_zero_point(g, da, 0)));
    KN_TRY(kn_node_set_float(g, index, "kn_b_scale", dq_scale(g, db, 0)));
    KN_TRY(kn_node_set_int(g, index, "kn_b_zero_point", dq_zero_point(g, db, 0)));
    KN_TRY(kn_node_set_int(g, index, "kn_y_type", y_type));
    KN_TRY(kn_node_set_float(g, index, "kn_y_scale", s_y));
    KN_TRY(kn_node_set_int(g, index, "kn_y_zero_point", z_y));
    if (relu)
        KN_TRY(kn_node_set_string(g, index, "kn_activation", "Relu"));
    q = &g->nodes[index];
    q->op = &kn_op_addinteger;
    q->in = in;
    q->n_in = 2;
    mark_removed(add);
    if (relu)
        mark_removed(relu);
    return KILN_OK;
}

static kiln_status fuse_integer_adds(kn_graph *g, int *fused) {
    bool any = false; /* an Add of two DequantizeLinears: only then is shape inference worth its time */
    for (int i = 0; i < g->n_nodes && !any; i++) {
        const kn_node *n = &g->nodes[i];
        dq_info d;
        any = op_is(n, &kn_op_add) && n->n_in == 2 && dq_levels_of(g, n->in[0], &d) && dq_levels_of(g, n->in[1], &d);
    }
    if (!any)
        return KILN_OK;
    kn_shape *shapes[2] = {shapes_with_open_dims(g, 1), shapes_with_open_dims(g, 2)};
    int *reads = count_reads(g);
    if (!shapes[0] || !shapes[1] || !reads) {
        free(shapes[0]), free(shapes[1]), free(reads);
        return KILN_OK; /* shapes unknown (or no memory): the Adds stay */
    }
    kiln_status st = KILN_OK;
    for (int i = 0; i < g->n_nodes && st == KILN_OK; i++) {
        kn_node *add = &g->nodes[i];
        dq_info da, db;
        if (!op_is(add, &kn_op_add) || add->n_in != 2 || add->n_out != 1 || !dq_levels_of(g, add->in[0], &da) ||
            !dq_levels_of(g, add->in[1], &db) || !same_shapes(shapes, add->in[0], add->in[1]) ||
            !same_shapes(shapes, da.levels, db.levels))
            continue;
        // The Add's only reader: a QuantizeLinear, or a Relu whose only reader is one.
        int out = add->out[0];
        if (producer_read_by(g, reads, out, 1) != add)
            continue;
        kn_node *next = NULL, *relu = NULL;
        for (int k = 0; k < g->n_nodes && !next; k++)
            for (int j = 0; j < g->nodes[k].n_in && !next; j++)
                if (g->nodes[k].op && g->nodes[k].in[j] == out)
                    next = &g->nodes[k];
        if (next && op_is(next, &kn_op_relu) && next->n_out == 1 && producer_read_by(g, reads, next->out[0], 1) == next) {
            relu = next;
            next = NULL;
            for (int k = 0; k < g->n_nodes && !next; k++)
                if (g->nodes[k].op && g->nodes[k].n_in > 0 && g->nodes[k].in[0] == relu->out[0])
                    next = &g->nodes[k];
        }
        float s_y;
        int64_t z_y;
        int y_type;
        if (!next || !op_is(next, &kn_op_quantizelinear) || next->in[0] != (relu ? relu->out[0] : out) ||
            !quantize_params(g, next, &s_y, &z_y, &y_type))
            continue;
        st = fuse_integer_add(g, add, relu, next, &da, &db, s_y, z_y, y_type);
        *fused += st == KILN_OK;
    }
    free(shapes[0]), free(shapes[1]), free(reads);
    drop_removed_nodes(g);
    return st;
}

/* ---- BatchNormalization into Conv / Gemm ------------------------------------------------------- */

/* BN(y) = s * y + t per channel, with s = scale / sqrt(var + eps) and t = B - mean * s. */
typedef struct bn_affine {
    int64_t channels;
    double *s, *t;
} bn_affine;

static kiln_status bn_affine_of(const kn_graph *g, const kn_node *bn, bn_affine *a) {
    const float *scale = kn_node_input(g, bn, 1)->data, *shift = kn_node_input(g, bn, 2)->data;
    const float *mean = kn_node_input(g, bn, 3)->data, *var = kn_node_input(g, bn, 4)->data;
    double epsilon = kn_node_float(bn, "epsilon", 1e-5f);
    a->channels = kn_node_input(g, bn, 1)->shape.d[0];
    a->s = malloc(sizeof(double) * (size_t)a->channels);
    a->t = malloc(sizeof(double) * (size_t)a->channels);
    if (!a->s || !a->t) {
        free(a->s);
        free(a->t);
        return kn_fail(KILN_ERR_NOMEM, "out of memory folding BatchNormalization '%s'", bn->name);
    }
    for (int64_t c = 0; c < a->channels; c++) {
        a->s[c] = scale[c] / sqrt((double)var[c] + epsilon);
        a->t[c] = shift[c] - mean[c] * a->s[c];
    }
    return KILN_OK;
}

/* Gemm's C can take the shift only when it is one row broadcast down Y (a scalar, (N) or (1, N)). */
static bool gemm_bias_is_row(const kn_graph *g, const kn_node *gemm, int64_t n_out) {
    const kn_value *c = kn_node_input(g, gemm, 2);
    if (!c)
        return true;
    int64_t numel = kn_shape_numel(&c->shape);
    return is_constant(g, gemm->in[2]) && c->dtype == KN_F32 && c->shape.ndim <= 2 &&
           (numel == 1 || (numel == n_out && c->shape.d[c->shape.ndim - 1] == n_out));
}

/* Whether BatchNormalization node bn can fold into prod, the Conv or Gemm writing its input. Only
 * initializer shapes are used: activation shapes depend on the input sizes, unknown here. */
static bool bn_foldable(const kn_graph *g, const kn_node *prod, const kn_node *bn) {
    if (kn_node_int(bn, "training_mode", 0) != 0) /* batch statistics: no fixed map to fold */
        return false;
    for (int k = 1; k <= 4; k++)
        if (!is_constant(g, bn->in[k]))
            return false;
    if (kn_node_attr(prod, "kn_activation") || !is_constant(g, prod->in[1]))
        return false;
    int64_t channels = kn_node_input(g, bn, 1)->shape.d[0];
    const kn_shape *w = &kn_node_input(g, prod, 1)->shape;
    if (op_is(prod, &kn_op_conv))
        return w->ndim >= 1 && w->d[0] == channels &&
               (!kn_node_input(g, prod, 2) || is_constant(g, prod->in[2]));
    // Gemm's Y (M, N) has N = rows of W with transB, else its columns.
    int64_t n_out = kn_node_int(prod, "transB", 0) ? w->d[0] : w->d[1];
    return op_is(prod, &kn_op_gemm) && w->ndim == 2 && n_out == channels && gemm_bias_is_row(g, prod, channels);
}

/* W' = W * s along W's output-channel axis: Conv (M, C/group, kH, kW) and Gemm with transB (N, K) keep
 * output channels in rows, Gemm without transB (K, N) in columns. */
static void scale_weights(const float *w, float *w_new, const kn_shape *shape, bool channels_in_columns,
                          const bn_affine *a) {
    int64_t numel = kn_shape_numel(shape);
    if (channels_in_columns) {
        for (int64_t i = 0; i < numel; i++)
            w_new[i] = (float)(w[i] * a->s[i % a->channels]);
    } else {
        int64_t per_channel = numel / a->channels;
        for (int64_t i = 0; i < numel; i++)
            w_new[i] = (float)(w[i] * a->s[i / per_channel]);
    }
}

static kiln_status fold_batchnorm(kn_graph *g, kn_node *prod, kn_node *bn) {
    bool gemm = op_is(prod, &kn_op_gemm);
    int prod_index = (int)(prod - g->nodes);
    // Gemm: Y = alpha op(A) op(W) + beta C, so with beta set to 1 the new C is s * beta * C + t.
    double c_gain = gemm ? kn_node_float(prod, "beta", 1.0f) : 1.0;
    bool channels_in_columns = gemm && kn_node_int(prod, "transB", 0) == 0;
    int w_old = prod->in[1], b_old = prod->n_in > 2 ? prod->in[2] : -1;
    bn_affine a;
    KN_TRY(bn_affine_of(g, bn, &a));
    kn_shape w_shape = g->values[w_old].shape, b_shape = kn_shape_of(1, &a.channels);
    // Adding values may move g->values: values are looked up by id after these calls.
    int w_new, b_new = -1;
    kiln_status st = add_derived_param(g, g->values[w_old].name, "bn", &w_shape, &w_new);
    if (st == KILN_OK)
        st = add_derived_param(g, prod->name, "bias_bn", &b_shape, &b_new);
    if (st == KILN_OK)
        st = widen_inputs(g, prod, 3);
    if (st == KILN_OK && gemm)
        st = kn_node_set_float(g, prod_index, "beta", 1.0f);
    if (st == KILN_OK) {
        scale_weights(g->values[w_old].data, g->values[w_new].data, &w_shape, channels_in_columns, &a);
        const float *b = b_old >= 0 ? g->values[b_old].data : NULL; // (channels), or one value for Gemm
        int64_t b_numel = b ? kn_shape_numel(&g->values[b_old].shape) : 0;
        float *bias = g->values[b_new].data;                         // (channels)
        for (int64_t c = 0; c < a.channels; c++) {
            double old = b ? b[b_numel == 1 ? 0 : c] : 0.0;
            bias[c] = (float)(a.s[c] * c_gain * old + a.t[c]);
        }
        prod->in[1] = w_new;
        prod->in[2] = b_new;
        take_over_output(g, prod, bn->in[0], bn->out[0]);
        mark_removed(bn);
    }
    free(a.s);
    free(a.t);
    return st;
}

/* BatchNormalization after an integer layer: mult[c] *= s[c], bias[c] = s[c] * bias[c] + t[c]. The
 * constants are the layer's own, made in this graph by make_integer_layers. */
static kiln_status fold_batchnorm_integer(kn_graph *g, kn_node *layer, kn_node *bn) {
    bn_affine a;
    KN_TRY(bn_affine_of(g, bn, &a));
    float *mult = g->values[layer->in[2]].data, *bias = g->values[layer->in[3]].data;
    for (int64_t c = 0; c < a.channels; c++) {
        mult[c] = (float)((double)mult[c] * a.s[c]);
        bias[c] = (float)(a.s[c] * bias[c] + a.t[c]);
    }
    free(a.s);
    free(a.t);
    take_over_output(g, layer, bn->in[0], bn->out[0]);
    mark_removed(bn);
    return KILN_OK;
}

static bool bn_foldable_integer(const kn_graph *g, const kn_node *layer, const kn_node *bn) {
    if (!op_is(layer, &kn_op_qlinearconvpacked) || kn_node_int(bn, "training_mode", 0) != 0 ||
        kn_node_attr(layer, "kn_activation") || kn_node_int(layer, "kn_y_type", 0) != 0)
        return false;
    for (int k = 1; k <= 4; k++)
        if (!is_constant(g, bn->in[k]) || kn_node_input(g, bn, k)->dtype != KN_F32)
            return false;
    return kn_shape_numel(&kn_node_input(g, bn, 1)->shape) == kn_shape_numel(&kn_node_input(g, layer, 2)->shape);
}

static kiln_status fold_batchnorms(kn_graph *g, int *folded) {
    int *reads = count_reads(g);
    if (!reads)
        return kn_fail(KILN_ERR_NOMEM, "out of memory folding BatchNormalization");
    kiln_status st = KILN_OK;
    for (int i = 0; i < g->n_nodes && st == KILN_OK; i++) {
        kn_node *bn = &g->nodes[i];
        if (!op_is(bn, &kn_op_batchnormalization))
            continue;
        kn_node *prod = sole_producer(g, reads, bn->in[0]);
        if (prod && bn_foldable_integer(g, prod, bn)) {
            st = fold_batchnorm_integer(g, prod, bn);
            *folded += st == KILN_OK;
            continue;
        }
        if (!prod || !(op_is(prod, &kn_op_conv) || op_is(prod, &kn_op_gemm)) || !bn_foldable(g, prod, bn))
            continue;
        st = fold_batchnorm(g, prod, bn);
        *folded += st == KILN_OK;
    }
    free(reads);
    drop_removed_nodes(g);
    return st;
}

/* ---- MatMul + Add of a bias row ---------------------------------------------------------------- */

/* Whether adding the constant c to Y = MatMul(A, B) adds one row to every row of Y without broadcasting
 * Y any further: with B an initializer of rank r >= 2 and N columns, Y has rank >= r - 1 and N columns, so
 * c must be (N) or (1, ..., 1, N) of rank <= r - 1. (Only initializer shapes are used: activation shapes
 * depend on the input sizes, unknown here.) */
static bool is_bias_row(const kn_graph *g, const kn_node *matmul, int c) {
    /* an omitted B is not constant; a packed one (KN_KILN_LOAD_PACKED) has its shape */
    if (!(is_constant(g, matmul->in[1]) || is_packed(g, matmul->in[1])) || !is_constant(g, c))
        return false;
    const kn_shape *bs = &kn_node_input(g, matmul, 1)->shape, *cs = &g->values[c].shape;
    if (g->values[c].dtype != KN_F32 ||
        bs->ndim < 2 || cs->ndim < 1 || cs->ndim > bs->ndim - 1 || cs->d[cs->ndim - 1] != bs->d[bs->ndim - 1])
        return false;
    for (int d = 0; d < cs->ndim - 1; d++)
        if (cs->d[d] != 1)
            return false;
    return true;
}

static kiln_status fuse_biases(kn_graph *g, int *fused) {
    int *reads = count_reads(g);
    if (!reads)
        return kn_fail(KILN_ERR_NOMEM, "out of memory fusing biases");
    kiln_status st = KILN_OK;
    for (int i = 0; i < g->n_nodes && st == KILN_OK; i++) {
        kn_node *add = &g->nodes[i];
        if (!op_is(add, &kn_op_add) || add->n_in != 2)
            continue;
        for (int side = 0; side < 2; side++) {
            int x = add->in[side], c = add->in[1 - side];
            kn_node *matmul = sole_producer(g, reads, x);
            if (!matmul || !op_is(matmul, &kn_op_matmul) || matmul->n_in != 2 ||
                kn_node_attr(matmul, "kn_activation") || !is_bias_row(g, matmul, c))
                continue;
            st = widen_inputs(g, matmul, 3);
            if (st != KILN_OK)
                break;
            matmul->in[2] = c;
            take_over_output(g, matmul, x, add->out[0]);
            mark_removed(add);
            (*fused)++;
            break;
        }
    }
    free(reads);
    drop_removed_nodes(g);
    return st;
}

/* ---- ops exported as several nodes -------------------------------------------------------------- */

/* Constant f32 scalar value v near `want` (exporters write sqrt(2), 1/6 and the like to f32). */
static bool is_scalar_near(const kn_graph *g, int v, float want) {
    if (!is_constant(g, v) || g->values[v].dtype != KN_F32 || kn_shape_numel(&g->values[v].shape) != 1)
        return false;
    float x = *(const float *)g->values[v].data;
    return fabsf(x - want) <= 1e-6f * fabsf(want);
}

/* The node producing v when it applies `op` and v has no reader but one node input; NULL otherwise. */
static kn_node *sole_producer_op(kn_graph *g, const int *reads, int v, const kn_op *op) {
    kn_node *p = sole_producer(g, reads, v);
    return p && op_is(p, op) && p->n_out == 1 ? p : NULL;
}

/* Node n becomes `op` on the given inputs, keeping its output; its attributes go. */
static kiln_status become(kn_graph *g, kn_node *n, const kn_op *op, int n_in, const int *in) {
    n->op = op;
    n->n_attrs = 0;
    n->n_in = 0;
    KN_TRY(widen_inputs(g, n, n_in));
    for (int k = 0; k < n_in; k++)
        n->in[k] = in[k];
    return KILN_OK;
}

/* 1 + Erf(x / sqrt 2) (or Erf(x * (1 / sqrt 2))) as value `a`, each step read once: x, else -1. The
 * nodes are put in steps[0..2]. */
static int erf_plus_one_of(kn_graph *g, const int *reads, int a, kn_node **steps) {
    kn_node *add = sole_producer_op(g, reads, a, &kn_op_add);
    if (!add)
        return -1;
    int e = is_scalar_near(g, add->in[0], 1.0f) ? add->in[1] : is_scalar_near(g, add->in[1], 1.0f) ? add->in[0] : -1;
    kn_node *erf = e >= 0 ? sole_producer_op(g, reads, e, &kn_op_erf) : NULL;
    kn_node *scale = erf ? sole_producer(g, reads, erf->in[0]) : NULL;
    if (!scale || scale->n_in != 2)
        return -1;
    bool divides = op_is(scale, &kn_op_div) && is_scalar_near(g, scale->in[1], 1.41421356f);
    bool multiplies = op_is(scale, &kn_op_mul) && (is_scalar_near(g, scale->in[1], 0.70710678f) ||
                                               is_scalar_near(g, scale->in[0], 0.70710678f));
    if (!divides && !multiplies)
        return -1;
    steps[0] = add;
    steps[1] = erf;
    steps[2] = scale;
    return divides || !is_constant(g, scale->in[0]) ? scale->in[0] : scale->in[1];
}

/* Exact GELU, x * (1 + Erf(x / sqrt 2)) * 0.5, as PyTorch writes it (Mul(Mul(x, A), 0.5)) or as
 * 0.5 * x first (Mul(Mul(x, 0.5), A)), ending at Mul node `last`: becomes Gelu(x). */
static kiln_status compose_gelu(kn_graph *g, const int *reads, kn_node *last, int *composed) {
    if (!op_is(last, &kn_op_mul) || last->n_in != 2 || last->n_out != 1)
        return KILN_OK;
    for (int k = 0; k < 2; k++) {
        kn_node *inner = sole_producer_op(g, reads, last->in[k], &kn_op_mul), *steps[3] = {NULL, NULL, NULL};
        if (!inner || inner->n_in != 2)
            continue;
        int half_outside = is_scalar_near(g, last->in[1 - k], 0.5f);
        for (int j = 0; j < 2; j++) {
            int x = inner->in[j];
            int a = half_outside ? inner->in[1 - j] : last->in[1 - k];
            if (!half_outside && !is_scalar_near(g, inner->in[1 - j], 0.5f))
                continue;
            if (erf_plus_one_of(g, reads, a, steps) != x)
                continue;
            for (int s = 0; s < 3; s++)
                mark_removed(steps[s]);
            mark_removed(inner);
            KN_TRY(become(g, last, &kn_op_gelu, 1, &x));
            (*composed)++;
            return KILN_OK;
        }
    }
    return KILN_OK;
}

/* Mul(x, HardSigmoid(x)) with HardSwish's alpha 1/6 and beta 1/2: becomes HardSwish(x). */
static kiln_status compose_hardswish(kn_graph *g, const int *reads, kn_node *mul, int *composed) {
    if (!op_is(mul, &kn_op_mul) || mul->n_in != 2 || mul->n_out != 1)
        return KILN_OK;
    for (int k = 0; k < 2; k++) {
        kn_node *h = sole_producer_op(g, reads, mul->in[k], &kn_op_hardsigmoid);
        if (!h || h->in[0] != mul->in[1 - k] || fabsf(kn_node_float(h, "alpha", 0.2f) - 1.0f / 6) > 1e-6f ||
            fabsf(kn_node_float(h, "beta", 0.5f) - 0.5f) > 1e-6f)
            continue;
        int x = h->in[0];
        mark_removed(h);
        KN_TRY(become(g, mul, &kn_op_hardswish, 1, &x));
        (*composed)++;
        return KILN_OK;
    }
    return KILN_OK;
}

/* A ReduceMean over the last axis alone, keeping it: the form LayerNormalization's statistics take. */
static bool is_mean_over_last_axis(const kn_graph *g, const kn_node *n) {
    if (!op_is(n, &kn_op_reducemean) || kn_node_int(n, "keepdims", 1) != 1)
        return false;
    int64_t axes[2];
    if (n->n_in == 1)
        return kn_node_ints(n, "axes", axes, 2) == 1 && axes[0] == -1;
    const kn_value *a = kn_node_input(g, n, 1);
    return n->n_in == 2 && is_constant(g, n->in[1]) && a->dtype == KN_I64 && kn_shape_numel(&a->shape) == 1 &&
           *(const int64_t *)a->data == -1;
}

/* A constant 1-D f32 vector of more than one value (one value would broadcast over any width). */
static int64_t affine_length(const kn_graph *g, int v) {
    if (!is_constant(g, v) || g->values[v].dtype != KN_F32 || g->values[v].shape.ndim != 1)
        return -1;
    int64_t n = g->values[v].shape.d[0];
    return n > 1 ? n : -1;
}

/* LayerNormalization as PyTorch exports it before opset 17, ending at Add node `last`:
 *   m = ReduceMean(x), d = x - m, v = ReduceMean(d ^ 2), y = d / Sqrt(v + eps) * scale + bias
 * (each ReduceMean over the last axis only). Becomes LayerNormalization(x, scale, bias). */
static kiln_status compose_layernorm(kn_graph *g, const int *reads, kn_node *last, int *composed) {
    if (!op_is(last, &kn_op_add) || last->n_in != 2 || last->n_out != 1)
        return KILN_OK;
    kn_node *steps[8]; /* Mul, Div, Sqrt, Add, ReduceMean, Pow, Sub, ReduceMean: removed on a match */
    int k = sole_producer_op(g, reads, last->in[0], &kn_op_mul) ? 0 : 1;
    int bias = last->in[1 - k];
    kn_node *mul = steps[0] = sole_producer_op(g, reads, last->in[k], &kn_op_mul);
    if (!mul || mul->n_in != 2)
        return KILN_OK;
    int j = sole_producer_op(g, reads, mul->in[0], &kn_op_div) ? 0 : 1;
    int scale = mul->in[1 - j];
    kn_node *div = steps[1] = sole_producer_op(g, reads, mul->in[j], &kn_op_div);
    if (!div || div->n_in != 2 || affine_length(g, scale) < 0 || affine_length(g, scale) != affine_length(g, bias))
        return KILN_OK;
    kn_node *sqrt = steps[2] = sole_producer_op(g, reads, div->in[1], &kn_op_sqrt);
    kn_node *add_eps = steps[3] = sqrt ? sole_producer_op(g, reads, sqrt->in[0], &kn_op_add) : NULL;
    if (!add_eps || add_eps->n_in != 2)
        return KILN_OK;
    int e = is_constant(g, add_eps->in[1]) ? 1 : 0;
    const kn_value *eps = &g->values[add_eps->in[e]];
    if (!is_constant(g, add_eps->in[e]) || eps->dtype != KN_F32 || kn_shape_numel(&eps->shape) != 1)
        return KILN_OK;
    kn_node *var = steps[4] = sole_producer_op(g, reads, add_eps->in[1 - e], &kn_op_reducemean);
    kn_node *pow = steps[5] = var ? sole_producer_op(g, reads, var->in[0], &kn_op_pow) : NULL;
    if (!pow || pow->n_in != 2 || !is_scalar_near(g, pow->in[1], 2.0f) || pow->in[0] != div->in[0])
        return KILN_OK;
    kn_node *sub = steps[6] = producer_read_by(g, reads, div->in[0], 2);
    if (!sub || !op_is(sub, &kn_op_sub) || sub->n_in != 2)
        return KILN_OK;
    int x = sub->in[0];
    kn_node *mean = steps[7] = sole_producer_op(g, reads, sub->in[1], &kn_op_reducemean);
    if (!mean || mean->in[0] != x || !is_mean_over_last_axis(g, mean) || !is_mean_over_last_axis(g, var))
        return KILN_OK;
    float epsilon = *(const float *)eps->data;
    for (int s = 0; s < 8; s++)
        mark_removed(steps[s]);
    int node = (int)(last - g->nodes);
    KN_TRY(become(g, last, &kn_op_layernormalization, 3, (int[]){x, scale, bias}));
    KN_TRY(kn_node_set_int(g, node, "axis", -1));
    KN_TRY(kn_node_set_float(g, node, "epsilon", epsilon));
    (*composed)++;
    return KILN_OK;
}

static kiln_status compose_ops(kn_graph *g, int *composed) {
    int *reads = count_reads(g);
    if (!reads)
        return kn_fail(KILN_ERR_NOMEM, "out of memory composing ops");
    kiln_status st = KILN_OK;
    for (int i = 0; i < g->n_nodes && st == KILN_OK; i++) {
        kn_node *n = &g->nodes[i];
        if (!n->op)
            continue;
        if (op_is(n, &kn_op_add))
            st = compose_layernorm(g, reads, n, composed);
        else if (op_is(n, &kn_op_mul))
            st = compose_gelu(g, reads, n, composed);
        if (st == KILN_OK && op_is(n, &kn_op_mul))
            st = compose_hardswish(g, reads, n, composed);
    }
    free(reads);
    drop_removed_nodes(g);
    return st;
}

/* ---- activations into Conv / Gemm / MatMul ----------------------------------------------------- */

/* A Clip bound must be absent or one constant f32 to become an attribute. */
static bool clip_bound_ok(const kn_graph *g, const kn_node *clip, int k) {
    const kn_value *v = kn_node_input(g, clip, k);
    return !v || (is_constant(g, clip->in[k]) && v->dtype == KN_F32 && kn_shape_numel(&v->shape) == 1);
}

/* Records activation node `act` as attributes of node `prod` (ops/fused_act.h). */
static kiln_status record_activation(kn_graph *g, int prod, const kn_node *act) {
    KN_TRY(kn_node_set_string(g, prod, "kn_activation", act->op->name));
    if (op_is(act, &kn_op_leakyrelu))
        KN_TRY(kn_node_set_float(g, prod, "kn_alpha", kn_node_float(act, "alpha", 0.01f)));
    if (op_is(act, &kn_op_elu))
        KN_TRY(kn_node_set_float(g, prod, "kn_alpha", kn_node_float(act, "alpha", 1.0f)));
    if (op_is(act, &kn_op_gelu))
        KN_TRY(kn_node_set_string(g, prod, "kn_approximate", kn_node_string(act, "approximate", "none")));
    if (op_is(act, &kn_op_clip)) {
        const kn_value *lo = kn_node_input(g, act, 1), *hi = kn_node_input(g, act, 2);
        if (lo)
            KN_TRY(kn_node_set_float(g, prod, "kn_min", *(const float *)lo->data));
        if (hi)
            KN_TRY(kn_node_set_float(g, prod, "kn_max", *(const float *)hi->data));
    }
    return KILN_OK;
}

/* A node that can apply a fused activation to its output and has none yet. */
static bool takes_activation(const kn_node *prod) {
    return prod && (op_is(prod, &kn_op_conv) || op_is(prod, &kn_op_gemm) || op_is(prod, &kn_op_matmul)) &&
           !kn_node_attr(prod, "kn_activation");
}

/* The Sigmoid node of SiLU written as Mul(x, Sigmoid(x)) (either order) when `mul` is that Mul and the
 * Sigmoid's output is read by it alone; NULL otherwise. */
static kn_node *silu_sigmoid(kn_graph *g, const int *reads, const kn_node *mul) {
    if (!op_is(mul, &kn_op_mul) || mul->n_in != 2 || mul->n_out != 1)
        return NULL;
    for (int k = 0; k < 2; k++) {
        kn_node *sig = sole_producer(g, reads, mul->in[k]);
        if (sig && op_is(sig, &kn_op_sigmoid) && sig->n_out == 1 && sig->in[0] == mul->in[1 - k])
            return sig;
    }
    return NULL;
}

/* Conv/Gemm/MatMul -> x, Mul(x, Sigmoid(x)) -> y becomes the producer with a fused "Silu" writing y,
 * when x and the Sigmoid's output have no other reader. */
static kiln_status fuse_silu(kn_graph *g, int *reads, kn_node *mul, int *fused) {
    kn_node *sig = silu_sigmoid(g, reads, mul);
    if (!sig)
        return KILN_OK;
    int x = sig->in[0];
    kn_node *prod = producer_read_by(g, reads, x, 2);
    if (!takes_activation(prod))
        return KILN_OK;
    KN_TRY(kn_node_set_string(g, (int)(prod - g->nodes), "kn_activation", "Silu"));
    take_over_output(g, prod, x, mul->out[0]);
    mark_removed(sig);
    mark_removed(mul);
    (*fused)++;
    return KILN_OK;
}

static kiln_status fuse_activations(kn_graph *g, int *fused) {
    int *reads = count_reads(g);
    if (!reads)
        return kn_fail(KILN_ERR_NOMEM, "out of memory fusing activations");
    kiln_status st = KILN_OK;
    for (int i = 0; i < g->n_nodes && st == KILN_OK; i++) {
        kn_node *act = &g->nodes[i];
        if (!act->op)
            continue;
        if (op_is(act, &kn_op_mul)) {
            st = fuse_silu(g, reads, act, fused);
            continue;
        }
        if (!kn_fused_act_supported(act->op->name) || act->n_out != 1)
            continue;
        if (op_is(act, &kn_op_clip) && !(clip_bound_ok(g, act, 1) && clip_bound_ok(g, act, 2)))
            continue;
        kn_node *prod = sole_producer(g, reads, act->in[0]);
        bool integer_relu = prod && is_integer_layer(prod) && (op_is(act, &kn_op_relu) || op_is(act, &kn_op_clip)) &&
                            kn_node_int(prod, "kn_y_type", 0) == KN_QOUT_F32 && !kn_node_attr(prod, "kn_activation");
        if (!takes_activation(prod) && !integer_relu)
            continue;
        st = record_activation(g, (int)(prod - g->nodes), act);
        if (st != KILN_OK)
            break;
        take_over_output(g, prod, act->in[0], act->out[0]);
        mark_removed(act);
        (*fused)++;
    }
    free(reads);
    drop_removed_nodes(g);
    return st;
}

/* ---- sparse weights ----------------------------------------------------------------------------- */

/* The weight of a Gemm or MatMul as the SparseGemm rewrite sees it: W (N, K) = op(B)^T, scaled by
 * alpha, and the bias row it adds (NULL for none; Gemm's beta * C or MatMul's fused bias). */
typedef struct dense_weight {
    const float *b; /* B's data */
    bool b_is_w;     /* B is (N, K) already: Gemm with transB */
    int64_t N, K;
    float alpha, beta;
    const float *bias; /* 1 or N values (bias_n), or NULL; data, not the value: adding values moves those */
    int64_t bias_n;
} dense_weight;

/* Whether node n is a Gemm (transA 0; C absent, one value or a row) or a MatMul (B 2-D, a fused bias
 * or none) with a constant f32 weight; fills *w. */
static bool dense_weight_of(const kn_graph *g, const kn_node *n, dense_weight *w) {
    bool gemm = op_is(n, &kn_op_gemm);
    if (!(gemm || op_is(n, &kn_op_matmul)) || n->n_in < 2 || !is_constant(g, n->in[1]))
        return false;
    const kn_value *b = &g->values[n->in[1]], *bias = kn_node_input(g, n, 2);
    if (b->dtype != KN_F32 || b->shape.ndim != 2 || (bias && (!is_constant(g, n->in[2]) || bias->dtype != KN_F32)))
        return false;
    *w = (dense_weight){.b = b->data, .alpha = 1.0f, .beta = 1.0f, .bias = bias ? bias->data : NULL,
                        .bias_n = bias ? kn_shape_numel(&bias->shape) : 0};
    w->b_is_w = gemm && kn_node_int(n, "transB", 0) != 0;
    w->N = w->b_is_w ? b->shape.d[0] : b->shape.d[1];
    w->K = w->b_is_w ? b->shape.d[1] : b->shape.d[0];
    if (gemm) {
        if (kn_node_int(n, "transA", 0) != 0)
            return false;
        w->alpha = kn_node_float(n, "alpha", 1.0f);
        w->beta = kn_node_float(n, "beta", 1.0f);
    }
    bool bias_is_row = w->bias_n == 1 || (w->bias_n == w->N && bias->shape.d[bias->shape.ndim - 1] == w->N);
    return w->N >= 1 && w->K >= 1 && (!bias || bias_is_row);
}

static float dense_weight_at(const dense_weight *w, int64_t j, int64_t k) {
    return w->b_is_w ? w->b[j * w->K + k] : w->b[k * w->N + j];
}

/* The new inputs of a SparseGemm: its weight in both layouts of kernels/sparse.h, and the bias row. */
typedef struct sparse_inputs {
    int values, columns, row_start, lane_offsets, lane_columns, lane_values, bias;
} sparse_inputs;

/* Adds the weight's compressed sparse rows (alpha applied) and the bias row (beta applied). */
static kiln_status add_sparse_rows(kn_graph *g, const char *name, const dense_weight *w, int64_t nnz,
                                   sparse_inputs *in) {
    kn_shape nnz_shape = kn_shape_of(1, (int64_t[]){nnz}), n_shape = kn_shape_of(1, (int64_t[]){w->N});
    kn_shape start_shape = kn_shape_of(1, (int64_t[]){w->N + 1});
    KN_TRY(add_derived_value(g, name, "sparse_values", KN_VALUE_CONST, KN_F32, &nnz_shape, &in->values));
    KN_TRY(add_derived_value(g, name, "sparse_columns", KN_VALUE_CONST, KN_I32, &nnz_shape, &in->columns));
    KN_TRY(add_derived_value(g, name, "sparse_row_start", KN_VALUE_CONST, KN_I64, &start_shape, &in->row_start));
    in->bias = -1;
    if (w->bias)
        KN_TRY(add_derived_value(g, name, "sparse_bias", KN_VALUE_CONST, KN_F32, &n_shape, &in->bias));
    float *v = g->values[in->values].data;      // (nnz)
    int32_t *col = g->values[in->columns].data; // (nnz)
    int64_t *start = g->values[in->row_start].data, p = 0; // (N + 1)
    for (int64_t j = 0; j < w->N; j++) {
        start[j] = p;
        for (int64_t k = 0; k < w->K; k++) {
            float x = dense_weight_at(w, j, k);
            if (x != 0.0f) {
                v[p] = w->alpha * x;
                col[p++] = (int32_t)k;
            }
        }
    }
    start[w->N] = p;
    if (w->bias) {
        float *row = g->values[in->bias].data; // (N)
        for (int64_t j = 0; j < w->N; j++)
            row[j] = w->beta * w->bias[w->bias_n == 1 ? 0 : j];
    }
    return KILN_OK;
}

/* Adds the same weight in the lanes layout, from its sparse rows. */
static kiln_status add_sparse_lanes(kn_graph *g, const char *name, int64_t N, int64_t K, sparse_inputs *in) {
    int64_t groups = (N + KN_SPARSE_LANES - 1) / KN_SPARSE_LANES, slabs = (K + KN_SPARSE_SLAB - 1) / KN_SPARSE_SLAB;
    kn_shape offsets_shape = kn_shape_of(1, (int64_t[]){groups * slabs + 1});
    KN_TRY(add_derived_value(g, name, "sparse_lane_offsets", KN_VALUE_CONST, KN_I64, &offsets_shape,
                             &in->lane_offsets));
    int64_t *offsets = g->values[in->lane_offsets].data;
    const int32_t *col = g->values[in->columns].data;
    const int64_t *start = g->values[in->row_start].data;
    int64_t steps = kn_sparse_lanes_offsets(col, start, N, K, offsets);
    kn_shape lanes_shape = kn_shape_of(2, (int64_t[]){steps, KN_SPARSE_LANES});
    KN_TRY(add_derived_value(g, name, "sparse_lane_columns", KN_VALUE_CONST, KN_U8, &lanes_shape, &in->lane_columns));
    KN_TRY(add_derived_value(g, name, "sparse_lane_values", KN_VALUE_CONST, KN_F32, &lanes_shape, &in->lane_values));
    kn_sparse_lanes_fill(g->values[in->values].data, g->values[in->columns].data, g->values[in->row_start].data, N,
                         K, g->values[in->lane_offsets].data, g->values[in->lane_columns].data,
                         g->values[in->lane_values].data);
    return KILN_OK;
}

/* Gemm / MatMul whose constant weight has at most KN_SPARSE_MAX_DENSITY of nonzeros becomes SparseGemm
 * (ops/sparse_gemm.c): the weight's nonzeros in both layouts, the bias as a row, the fused activation
 * kept. */
static kiln_status sparsify_node(kn_graph *g, int node, const dense_weight *w, int64_t nnz) {
    const char *name = g->nodes[node].name;
    sparse_inputs s;
    KN_TRY(add_sparse_rows(g, name, w, nnz, &s));
    KN_TRY(add_sparse_lanes(g, name, w->N, w->K, &s));
    kn_node *n = &g->nodes[node];
    int *in = kn_arena_alloc(&g->arena, sizeof(int) * 8);
    if (!in)
        return kn_fail(KILN_ERR_NOMEM, "out of memory rewriting node '%s'", n->name);
    memcpy(in, (int[]){n->in[0], s.values, s.columns, s.row_start, s.lane_offsets, s.lane_columns, s.lane_values,
                       s.bias},
           sizeof(int) * 8);
    n->in = in;
    n->n_in = s.bias >= 0 ? 8 : 7;
    n->op = &kn_op_sparsegemm;
    return KILN_OK;
}

static kiln_status sparsify_weights(kn_graph *g, int *sparsified) {
    for (int i = 0; i < g->n_nodes; i++) {
        dense_weight w;
        if (!dense_weight_of(g, &g->nodes[i], &w) || w.K > INT32_MAX)
            continue;
        int64_t nnz = 0;
        for (int64_t j = 0; j < w.N; j++)
            for (int64_t k = 0; k < w.K; k++)
                nnz += dense_weight_at(&w, j, k) != 0.0f;
        if ((double)nnz > KN_SPARSE_MAX_DENSITY * (double)w.N * (double)w.K)
            continue;
        KN_TRY(sparsify_node(g, i, &w, nnz));
        (*sparsified)++;
    }
    return KILN_OK;
}

/* ---- packed low-bit weights -------------------------------------------------------------------- */

/* A Gemm (transA 0, alpha 1, beta 1 when C is given, C a row of N) or MatMul (a fused bias or none)
 * whose B is a packed 2-D affine i4 or i2 weight. */
static bool lowbit_suits(const kn_graph *g, const kn_node *n) {
    bool gemm = op_is(n, &kn_op_gemm);
    if (!(gemm || op_is(n, &kn_op_matmul)) || n->n_in < 2 || !is_packed(g, n->in[1]))
        return false;
    const kn_value *b = &g->values[n->in[1]], *bias = kn_node_input(g, n, 2);
    kn_encoding e = b->storage->encoding;
    if ((e != KN_ENC_AFFINE_I4 && e != KN_ENC_AFFINE_I2) || b->shape.ndim != 2 || b->dtype != KN_F32)
        return false;
    if (gemm && (kn_node_int(n, "transA", 0) != 0 || kn_node_float(n, "alpha", 1.0f) != 1.0f ||
                 (bias && kn_node_float(n, "beta", 1.0f) != 1.0f)))
        return false;
    int64_t N = gemm && kn_node_int(n, "transB", 0) != 0 ? b->shape.d[0] : b->shape.d[1];
    return !bias || (is_constant(g, n->in[2]) && bias->dtype == KN_F32 && bias->shape.ndim >= 1 &&
                     kn_shape_numel(&bias->shape) == N && bias->shape.d[bias->shape.ndim - 1] == N);
}

/* A constant "<node>:<suffix>" over bytes that already exist (the storage's, in the file mapping or the
 * source graph's arena): nothing is copied. */
static kiln_status add_view_const(kn_graph *g, const char *node, const char *suffix, kn_dtype dtype, int64_t count,
                                  const void *data, int *id) {
    kn_shape shape = kn_shape_of(1, &count);
    KN_TRY(add_derived_value(g, node, suffix, KN_VALUE_ACT, dtype, &shape, id)); /* an activation gets no data */
    g->values[*id].kind = KN_VALUE_CONST;
    g->values[*id].data = (void *)data; /* only read: a model never changes its weights */
    return KILN_OK;
}

/* Gemm / MatMul -> LowbitGemm over the storage's codes, scales and zero points. */
static kiln_status make_lowbit_layer(kn_graph *g, int node) {
    const kn_node *n = &g->nodes[node];
    const kn_storage *st = g->values[n->in[1]].storage;
    kn_shape shape = g->values[n->in[1]].shape;
    bool transposed = op_is(n, &kn_op_gemm) && kn_node_int(n, "transB", 0) != 0;
    int bias = n->n_in > 2 ? n->in[2] : -1;
    int64_t groups = kn_storage_group_count(st);
    int codes, scale, zero_point = -1;
    kn_lowbit_matrix w = {.codes = st->payload, .scale = st->scale, .zero_point = st->zero_point, .bits = st->bits,
                          .rows = shape.d[0], .cols = shape.d[1], .transposed = transposed, .axis = st->axis,
                          .block = st->block};
    bool slivers = kn_lowbit_slivers_suit(&w);
    if (slivers) { /* written once here, in the layout the kernels read fastest (kernels/lowbit.h) */
        int64_t K = transposed ? shape.d[1] : shape.d[0], N = transposed ? shape.d[0] : shape.d[1];
        size_t bytes = kn_lowbit_sliver_bytes(K, N);
        if (bytes == SIZE_MAX || bytes > INT64_MAX)
            return kn_fail(KILN_ERR_NOMEM, "'%s': the weight is too large", n->name);
        kn_shape code_shape = kn_shape_of(1, (int64_t[]){(int64_t)bytes});
        KN_TRY(add_derived_value(g, n->name, "slivers", KN_VALUE_CONST, KN_U8, &code_shape, &codes));
        kn_lowbit_slivers_write(&w, g->values[codes].data);
        shape = kn_shape_of(2, (int64_t[]){K, N});
        transposed = false;
    } else {
        KN_TRY(add_view_const(g, n->name, "codes", KN_U8, (int64_t)st->payload_bytes, st->payload, &codes));
    }
    if (slivers && st->block > 0) { /* the groups in the order the sliver layout reads them */
        kn_shape group_shape = kn_shape_of(1, &groups);
        KN_TRY(add_derived_value(g, g->nodes[node].name, "slivers_scale", KN_VALUE_CONST, KN_F32, &group_shape,
                                 &scale));
        if (st->zero_point)
            KN_TRY(add_derived_value(g, g->nodes[node].name, "slivers_zero_point", KN_VALUE_CONST, KN_I8,
                                     &group_shape, &zero_point));
        kn_lowbit_slivers_write_groups(&w, g->values[scale].data, zero_point >= 0 ? g->values[zero_point].data : NULL);
    } else {
        KN_TRY(add_view_const(g, g->nodes[node].name, "scale", KN_F32, groups, st->scale, &scale));
        if (st->zero_point)
            KN_TRY(add_view_const(g, g->nodes[node].name, "zero_point", KN_I8, groups, st->zero_point, &zero_point));
    }
    KN_TRY(widen_inputs(g, &g->nodes[node], 5));
    kn_node *m = &g->nodes[node];
    int in[5] = {m->in[0], codes, scale, zero_point, bias};
    memcpy(m->in, in, sizeof in);
    m->n_in = bias >= 0 ? 5 : zero_point >= 0 ? 4 : 3;
    m->op = &kn_op_lowbitgemm;
    KN_TRY(kn_node_set_int(g, node, "kn_bits", st->bits));
    KN_TRY(kn_node_set_int(g, node, "kn_rows", shape.d[0]));
    KN_TRY(kn_node_set_int(g, node, "kn_cols", shape.d[1]));
    KN_TRY(kn_node_set_int(g, node, "kn_transposed", transposed));
    KN_TRY(kn_node_set_int(g, node, "kn_axis", slivers && st->axis >= 0 ? 1 : st->axis));
    KN_TRY(kn_node_set_int(g, node, "kn_slivers", slivers));
    KN_TRY(kn_node_set_int(g, node, "kn_from_rows", slivers && w.transposed));
    return kn_node_set_int(g, node, "kn_block", st->block);
}

static kiln_status make_lowbit_layers(kn_graph *g, int *made) {
    for (int i = 0; i < g->n_nodes; i++) {
        if (!lowbit_suits(g, &g->nodes[i]))
            continue;
        KN_TRY(make_lowbit_layer(g, i));
        (*made)++;
    }
    return KILN_OK;
}

/* Whether packed value v may become a LowbitGemm's weight: 2-D affine i4 or i2, and read only as the B
 * of Gemms and MatMuls (read_elsewhere[v] false; lowbit_suits decides for each of them later, once biases
 * are fused). */
static bool lowbit_candidate(const kn_graph *g, int v, const bool *read_elsewhere) {
    const kn_value *x = &g->values[v];
    kn_encoding e = x->storage->encoding;
    return (e == KN_ENC_AFFINE_I4 || e == KN_ENC_AFFINE_I2) && x->shape.ndim == 2 && !is_graph_output(g, v) &&
           !read_elsewhere[v];
}

/* Decodes packed value v into g's arena. */
static kiln_status decode_value(kn_graph *g, int v) {
    size_t bytes;
    if (!kn_shape_bytes(&g->values[v].shape, KN_F32, &bytes))
        return kn_fail(KILN_ERR_NOMEM, "'%s' is too large to decode", g->values[v].name);
    float *data = kn_arena_alloc(&g->arena, bytes ? bytes : 1);
    if (!data)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for the %zu decoded bytes of '%s'", bytes, g->values[v].name);
    kn_storage_decode(g->values[v].storage, data);
    g->values[v].data = data;
    return KILN_OK;
}

/* Decodes packed weights into g's arena, so that every initializer a node reads has data: with
 * keep_lowbit, only those that cannot become a LowbitGemm's weight. Run first, that gives the folding,
 * Winograd and prepacking passes the very f32 weights of a model loaded decoded (a 4-bit conv's
 * BatchNormalization folds into it, as in the f32 model); run last, it decodes what no pass took. */
static kiln_status decode_packed(kn_graph *g, bool keep_lowbit) {
    // read_elsewhere[v]: some node reads value v other than as a Gemm's or MatMul's B (one pass over the
    // nodes for all values)
    bool *read_elsewhere = calloc((size_t)(g->n_values ? g->n_values : 1), sizeof(bool));
    if (!read_elsewhere)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for the packed weights' readers");
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        bool takes_b = op_is(n, &kn_op_gemm) || op_is(n, &kn_op_matmul);
        for (int j = 0; j < n->n_in; j++)
            if (n->in[j] >= 0 && (j != 1 || !takes_b))
                read_elsewhere[n->in[j]] = true;
    }
    kiln_status st = KILN_OK;
    for (int v = 0; v < g->n_values && st == KILN_OK; v++)
        if (is_packed(g, v) && !(keep_lowbit && lowbit_candidate(g, v, read_elsewhere)))
            st = decode_value(g, v);
    free(read_elsewhere);
    return st;
}

/* ---- Winograd convolutions --------------------------------------------------------------------- */

/* Adds U (36, C, M), the Winograd transform of Conv node i's weight; its id in *u. */
static kiln_status add_winograd_weights(kn_graph *g, int i, int *u) {
    const kn_value *w = kn_node_input(g, &g->nodes[i], 1);
    int64_t M = w->shape.d[0], C = w->shape.d[1];
    kn_shape shape = kn_shape_of(3, (int64_t[]){KN_WINOGRAD_POINTS, C, M});
    KN_TRY(add_derived_value(g, g->nodes[i].name, "winograd_weight", KN_VALUE_CONST, KN_F32, &shape, u));
    kn_conv_winograd_weights(g->values[g->nodes[i].in[1]].data, M, C, g->values[*u].data);
    return KILN_OK;
}

/* Conv -> ConvWinograd where it suits (ops/conv_winograd.h): the weight replaced by its transform.
 * With `prepack`, a Conv that runs faster directly at small batches (kn_conv_winograd_by_batch) is
 * left for prepack_convs, which makes it a ConvPacked carrying U too. */
static kiln_status winograd_convs(kn_graph *g, bool prepack, int *made) {
    for (int i = 0; i < g->n_nodes; i++) {
        if (!kn_conv_winograd_suits(g, &g->nodes[i]) || (prepack && kn_conv_winograd_by_batch(g, &g->nodes[i])))
            continue;
        int u;
        KN_TRY(add_winograd_weights(g, i, &u));
        kn_node *n = &g->nodes[i];
        int *in = kn_arena_alloc(&g->arena, sizeof(int) * (size_t)n->n_in);
        if (!in)
            return kn_fail(KILN_ERR_NOMEM, "out of memory rewriting node '%s'", n->name);
        memcpy(in, n->in, sizeof(int) * (size_t)n->n_in);
        in[1] = u;
        n->in = in;
        n->op = &kn_op_convwinograd;
        (*made)++;
    }
    return KILN_OK;
}

/* Conv -> ConvPacked where it suits (ops/conv_prepack.h): P, the packed weights, appended as input 3,
 * and with `winograd`, U for the batches Winograd runs faster (kn_conv_winograd_by_batch) as input 4. */
static kiln_status prepack_convs(kn_graph *g, bool winograd, int *made) {
    for (int i = 0; i < g->n_nodes; i++) {
        if (!kn_conv_prepack_suits(g, &g->nodes[i]))
            continue;
        int u = -1;
        if (winograd && kn_conv_winograd_by_batch(g, &g->nodes[i]))
            KN_TRY(add_winograd_weights(g, i, &u));
        const kn_value *w = kn_node_input(g, &g->nodes[i], 1);
        int64_t dims[4] = {w->shape.d[0], w->shape.d[1], w->shape.d[2], w->shape.d[3]};
        int64_t group = kn_node_int(&g->nodes[i], "group", 1);
        bool transposed = kn_conv_prepack_transposes(g, &g->nodes[i]);
        kn_shape shape = kn_shape_of(1, (int64_t[]){(int64_t)kn_conv_prepack_floats(dims, group, transposed)});
        int p;
        KN_TRY(add_derived_value(g, g->nodes[i].name, "packed_weight", KN_VALUE_CONST, KN_F32, &shape, &p));
        kn_node *n = &g->nodes[i];
        kn_conv_prepack_weights(g->values[n->in[1]].data, dims, group, transposed, g->values[p].data);
        if (transposed)
            KN_TRY(kn_node_set_int(g, i, KN_CONV_PACK_TRANSPOSED, 1));
        KN_TRY(widen_inputs(g, n, u >= 0 ? 5 : 4)); // an absent bias stays absent (-1)
        n->in[3] = p;
        if (u >= 0)
            n->in[4] = u;
        n->op = &kn_op_convpacked;
        (*made)++;
    }
    return KILN_OK;
}

/* Below this many weights a Gemm packs them at every run for next to nothing, and stays Gemm. */
#define GEMM_PREPACK_MIN_WEIGHTS 4096

/* Gemm with a constant f32 B (2-D, at least GEMM_PREPACK_MIN_WEIGHTS values) -> GemmPacked (ops/gemm.c),
 * and MatMul with such a B -> MatMulPacked (ops/matmul.c): P, op(B) packed once, appended as input 3. */
static kiln_status prepack_gemms(kn_graph *g, int *made) {
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        bool gemm = n->op == &kn_op_gemm, matmul = n->op == &kn_op_matmul;
        const kn_value *b = (gemm || matmul) && n->n_out == 1 ? kn_node_input(g, n, 1) : NULL;
        if (!b || !b->data || b->kind == KN_VALUE_INPUT || b->kind == KN_VALUE_ACT || b->dtype != KN_F32 ||
            b->shape.ndim != 2 || b->shape.d[0] < 1 || b->shape.d[1] < 1 ||
            kn_shape_numel(&b->shape) < GEMM_PREPACK_MIN_WEIGHTS)
            continue;
        bool trans_b = gemm && kn_node_int(n, "transB", 0) != 0;
        int64_t K = trans_b ? b->shape.d[1] : b->shape.d[0], N = trans_b ? b->shape.d[0] : b->shape.d[1];
        size_t floats = kn_sgemm_packed_b_floats(K, N);
        if (floats == 0)
            continue;
        kn_shape shape = kn_shape_of(1, (int64_t[]){(int64_t)floats});
        int p;
        KN_TRY(add_derived_value(g, n->name, "packed_weight", KN_VALUE_CONST, KN_F32, &shape, &p));
        kn_node *m = &g->nodes[i];
        const kn_value *w = &g->values[m->in[1]];
        kn_sgemm_pack_b(trans_b, K, N, w->data, w->shape.d[1], g->values[p].data);
        KN_TRY(widen_inputs(g, m, 4)); // an absent C or bias stays absent (-1)
        m->in[3] = p;
        m->op = gemm ? &kn_op_gemmpacked : &kn_op_matmulpacked;
        (*made)++;
    }
    return KILN_OK;
}

/* ---- the optimizer ----------------------------------------------------------------------------- */

/* Drops values no node, input or output refers to, renumbering the rest in order. */
static kiln_status drop_unused_values(kn_graph *g) {
    int *new_id = malloc(sizeof(int) * (size_t)(g->n_values ? g->n_values : 1));
    if (!new_id)
        return kn_fail(KILN_ERR_NOMEM, "out of memory compacting the graph");
    for (int v = 0; v < g->n_values; v++)
        new_id[v] = -1;
    for (int i = 0; i < g->n_nodes; i++) {
        for (int k = 0; k < g->nodes[i].n_in; k++)
            if (g->nodes[i].in[k] >= 0)
                new_id[g->nodes[i].in[k]] = 0;
        for (int k = 0; k < g->nodes[i].n_out; k++)
            new_id[g->nodes[i].out[k]] = 0;
    }
    for (int i = 0; i < g->n_inputs; i++)
        new_id[g->inputs[i]] = 0;
    for (int i = 0; i < g->n_outputs; i++)
        new_id[g->outputs[i]] = 0;
    kn_graph_drop_values(g, new_id);
    free(new_id);
    return KILN_OK;
}

/* Every node has as many inputs as its op takes: the rewrites read the inputs their patterns name, so
 * this is checked once, before any of them runs, whichever loader made the graph. */
static kiln_status check_arity(const kn_graph *g) {
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        if (n->n_in < n->op->min_inputs || n->n_in > n->op->max_inputs)
            return kn_fail(KILN_ERR_FORMAT, "node '%s' (%s) has %d inputs; %s takes %d to %d", n->name,
                           n->op->name, n->n_in, n->op->name, n->op->min_inputs, n->op->max_inputs);
    }
    return KILN_OK;
}

kiln_status kn_graph_optimize(const kn_graph *src, unsigned passes, kn_graph *dst, kn_opt_stats *stats) {
    kn_opt_stats s = {.nodes_before = src->n_nodes};
    kn_graph_init(dst);
    KN_TRY(check_arity(src));
    kiln_status st = copy_graph(dst, src);
    if (st == KILN_OK)
        st = decode_packed(dst, (passes & KN_OPT_LOWBIT) != 0);
    if (st == KILN_OK && (passes & KN_OPT_DEAD))
        st = remove_dead_nodes(dst, &s.dead_removed);
    if (st == KILN_OK && (passes & KN_OPT_IDENTITY))
        st = remove_identities(dst, &s.identities_removed);
    if (st == KILN_OK && (passes & KN_OPT_INT8))
        st = make_integer_layers(dst, &s.integer_layers);
    if (st == KILN_OK && (passes & KN_OPT_INT8))
        st = make_qlinear_layers(dst, &s.integer_layers);
    if (st == KILN_OK && (passes & KN_OPT_INT8))
        st = make_matmulinteger_layers(dst, &s.integer_layers);
    if (st == KILN_OK && (passes & KN_OPT_FOLD))
        st = fold_constants(dst, &s.nodes_folded);
    if (st == KILN_OK && (passes & KN_OPT_BATCHNORM))
        st = fold_batchnorms(dst, &s.batchnorms_folded);
    if (st == KILN_OK && (passes & KN_OPT_COMPOSE))
        st = compose_ops(dst, &s.ops_composed);
    if (st == KILN_OK && (passes & KN_OPT_BIAS))
        st = fuse_biases(dst, &s.biases_fused);
    if (st == KILN_OK && (passes & KN_OPT_INT8))
        st = fuse_residuals(dst, &s.residuals_fused);
    if (st == KILN_OK && (passes & KN_OPT_ACTIVATION))
        st = fuse_activations(dst, &s.activations_fused);
    if (st == KILN_OK && (passes & KN_OPT_INT8))
        st = absorb_quantize(dst, &s.quantizes_fused);
    if (st == KILN_OK && (passes & KN_OPT_INT8))
        st = fuse_integer_adds(dst, &s.residuals_fused);
    if (st == KILN_OK && (passes & KN_OPT_INT8))
        st = remove_dead_nodes(dst, &s.dead_removed);
    if (st == KILN_OK && (passes & KN_OPT_SPARSE))
        st = sparsify_weights(dst, &s.weights_sparsified);
    if (st == KILN_OK && (passes & KN_OPT_LOWBIT))
        st = make_lowbit_layers(dst, &s.lowbit_layers);
    if (st == KILN_OK && (passes & KN_OPT_WINOGRAD))
        st = winograd_convs(dst, (passes & KN_OPT_PREPACK) != 0, &s.convs_winograd);
    if (st == KILN_OK && (passes & KN_OPT_PREPACK))
        st = prepack_convs(dst, (passes & KN_OPT_WINOGRAD) != 0, &s.convs_packed);
    if (st == KILN_OK && (passes & KN_OPT_PREPACK))
        st = prepack_gemms(dst, &s.gemms_packed);
    if (st == KILN_OK)
        st = drop_unused_values(dst);
    if (st == KILN_OK)
        st = decode_packed(dst, false);
    if (st != KILN_OK) {
        kn_error_prefix("optimizing the graph: ");
        kn_graph_free(dst);
        return st;
    }
    s.nodes_after = dst->n_nodes;
    if (stats)
        *stats = s;
    return KILN_OK;
}
