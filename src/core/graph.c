#include "core/graph.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/status.h"
#include "ops/op.h"

void kn_graph_init(kn_graph *g) { memset(g, 0, sizeof *g); }

void kn_graph_free(kn_graph *g) {
    if (g->mapping)
        munmap(g->mapping, g->mapping_bytes);
    kn_arena_free(&g->arena);
    free(g->values);
    free(g->nodes);
    memset(g, 0, sizeof *g);
}

static bool grow(void **items, int *cap, int need, size_t item_size) {
    if (need <= *cap)
        return true;
    int cap2 = *cap ? *cap * 2 : 64;
    while (cap2 < need)
        cap2 *= 2;
    void *p = realloc(*items, (size_t)cap2 * item_size);
    if (!p)
        return false;
    *items = p;
    *cap = cap2;
    return true;
}

int kn_graph_add_value(kn_graph *g, const char *name, kn_value_kind kind, kn_dtype dtype,
                       const kn_shape *shape) {
    if (kn_shape_check_size(shape) != KILN_OK) {
        kn_error_prefix("value '%s': ", name);
        return -1;
    }
    if (!grow((void **)&g->values, &g->cap_values, g->n_values + 1, sizeof(kn_value))) {
        kn_fail(KILN_ERR_NOMEM, "out of memory adding value '%s'", name);
        return -1;
    }
    kn_value *v = &g->values[g->n_values];
    memset(v, 0, sizeof *v);
    v->name = kn_arena_strdup(&g->arena, name);
    v->kind = kind;
    v->dtype = dtype;
    v->shape = *shape;
    v->producer = -1;
    if (!v->name) {
        kn_fail(KILN_ERR_NOMEM, "out of memory adding value '%s'", name);
        return -1;
    }
    if (kind == KN_VALUE_PARAM || kind == KN_VALUE_STATE || kind == KN_VALUE_CONST) {
        size_t bytes;
        if (!kn_shape_bytes(shape, dtype, &bytes)) {
            kn_fail(KILN_ERR_NOMEM, "value '%s': size overflows", name);
            return -1;
        }
        v->data = kn_arena_alloc(&g->arena, bytes ? bytes : 1);
        if (!v->data) {
            kn_fail(KILN_ERR_NOMEM, "out of memory for the data of '%s' (%zu bytes)", name, bytes);
            return -1;
        }
    }
    return g->n_values++;
}

int kn_graph_find_value(const kn_graph *g, const char *name) {
    for (int i = 0; i < g->n_values; i++)
        if (strcmp(g->values[i].name, name) == 0)
            return i;
    return -1;
}

int kn_graph_add_node(kn_graph *g, const char *op_name, const char *node_name, int n_in,
                      const int *in, int n_out, const int *out) {
    const kn_op *op = kn_op_find(op_name);
    if (!op) {
        kn_fail(KILN_ERR_UNSUPPORTED, "node '%s': op '%s' is not supported", node_name, op_name);
        return -1;
    }
    if (!grow((void **)&g->nodes, &g->cap_nodes, g->n_nodes + 1, sizeof(kn_node))) {
        kn_fail(KILN_ERR_NOMEM, "out of memory adding node '%s'", node_name);
        return -1;
    }
    kn_node *n = &g->nodes[g->n_nodes];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->name = kn_arena_strdup(&g->arena, node_name);
    n->n_in = n_in;
    n->n_out = n_out;
    n->in = kn_arena_alloc(&g->arena, sizeof(int) * (size_t)(n_in ? n_in : 1));
    n->out = kn_arena_alloc(&g->arena, sizeof(int) * (size_t)(n_out ? n_out : 1));
    if (!n->name || !n->in || !n->out) {
        kn_fail(KILN_ERR_NOMEM, "out of memory adding node '%s'", node_name);
        return -1;
    }
    for (int i = 0; i < n_in; i++) {
        if (in[i] < -1 || in[i] >= g->n_values) {
            kn_fail(KILN_ERR_INTERNAL, "node '%s': input %d refers to no value", node_name, i);
            return -1;
        }
        n->in[i] = in[i];
    }
    for (int i = 0; i < n_out; i++) {
        if (out[i] < 0 || out[i] >= g->n_values) {
            kn_fail(KILN_ERR_INTERNAL, "node '%s': output %d refers to no value", node_name, i);
            return -1;
        }
        n->out[i] = out[i];
        g->values[out[i]].producer = g->n_nodes;
    }
    return g->n_nodes++;
}

static kn_attr *attr_slot(kn_graph *g, int node, const char *name) {
    kn_node *n = &g->nodes[node];
    for (int i = 0; i < n->n_attrs; i++)
        if (strcmp(n->attrs[i].name, name) == 0)
            return &n->attrs[i];
    kn_attr *attrs = kn_arena_alloc(&g->arena, sizeof(kn_attr) * (size_t)(n->n_attrs + 1));
    if (!attrs)
        return NULL;
    if (n->n_attrs)
        memcpy(attrs, n->attrs, sizeof(kn_attr) * (size_t)n->n_attrs);
    n->attrs = attrs;
    kn_attr *a = &attrs[n->n_attrs++];
    a->name = kn_arena_strdup(&g->arena, name);
    return a->name ? a : NULL;
}

kiln_status kn_node_set_int(kn_graph *g, int node, const char *name, int64_t v) {
    kn_attr *a = attr_slot(g, node, name);
    if (!a)
        return kn_fail(KILN_ERR_NOMEM, "out of memory setting attribute '%s'", name);
    a->type = KN_ATTR_INT;
    a->i = v;
    return KILN_OK;
}

kiln_status kn_node_set_float(kn_graph *g, int node, const char *name, float v) {
    kn_attr *a = attr_slot(g, node, name);
    if (!a)
        return kn_fail(KILN_ERR_NOMEM, "out of memory setting attribute '%s'", name);
    a->type = KN_ATTR_FLOAT;
    a->f = v;
    return KILN_OK;
}

kiln_status kn_node_set_ints(kn_graph *g, int node, const char *name, int n, const int64_t *v) {
    if (n < 0 || n > KN_MAX_ATTR_INTS)
        return kn_fail(KILN_ERR_UNSUPPORTED, "attribute '%s' has %d ints; at most %d supported", name,
                       n, KN_MAX_ATTR_INTS);
    kn_attr *a = attr_slot(g, node, name);
    if (!a)
        return kn_fail(KILN_ERR_NOMEM, "out of memory setting attribute '%s'", name);
    a->type = KN_ATTR_INTS;
    a->n_ints = n;
    for (int i = 0; i < n; i++)
        a->ints[i] = v[i];
    return KILN_OK;
}

kiln_status kn_node_set_string(kn_graph *g, int node, const char *name, const char *v) {
    kn_attr *a = attr_slot(g, node, name);
    const char *copy = a ? kn_arena_strdup(&g->arena, v) : NULL;
    if (!copy)
        return kn_fail(KILN_ERR_NOMEM, "out of memory setting attribute '%s'", name);
    a->type = KN_ATTR_STRING;
    a->s = copy;
    return KILN_OK;
}

const kn_attr *kn_node_attr(const kn_node *n, const char *name) {
    for (int i = 0; i < n->n_attrs; i++)
        if (strcmp(n->attrs[i].name, name) == 0)
            return &n->attrs[i];
    return NULL;
}

int64_t kn_node_int(const kn_node *n, const char *name, int64_t fallback) {
    const kn_attr *a = kn_node_attr(n, name);
    if (!a)
        return fallback;
    return a->type == KN_ATTR_FLOAT ? (int64_t)a->f : a->i;
}

float kn_node_float(const kn_node *n, const char *name, float fallback) {
    const kn_attr *a = kn_node_attr(n, name);
    if (!a)
        return fallback;
    return a->type == KN_ATTR_INT ? (float)a->i : a->f;
}

int kn_node_ints(const kn_node *n, const char *name, int64_t *out, int max) {
    const kn_attr *a = kn_node_attr(n, name);
    if (!a || a->type != KN_ATTR_INTS)
        return -1;
    for (int i = 0; i < a->n_ints && i < max; i++)
        out[i] = a->ints[i];
    return a->n_ints;
}

const char *kn_node_string(const kn_node *n, const char *name, const char *fallback) {
    const kn_attr *a = kn_node_attr(n, name);
    return (a && a->type == KN_ATTR_STRING) ? a->s : fallback;
}

/* Shape and Size read only their input's shape, which inference knows without the input's data. */
static bool reads_only_shapes(const kn_op *op) {
    return strcmp(op->name, "Shape") == 0 || strcmp(op->name, "Size") == 0;
}

static bool shape_known(const kn_shape *s) {
    for (int k = 0; k < s->ndim; k++)
        if (s->d[k] < 0)
            return false;
    return true;
}

/* Whether node n's outputs can be computed now: small outputs of the dtypes shape computations use,
 * from inputs that are all constants or themselves computed at inference. Parameters do not count:
 * they change every training step, inference does not. */
static bool computable_at_inference(const kn_graph *g, const kn_node *n) {
    if (n->n_in == 0 || n->n_in > 32 || n->n_out > 32)
        return false;
    for (int k = 0; k < n->n_out; k++) {
        const kn_value *y = &g->values[n->out[k]];
        bool small_dtype = y->dtype == KN_I64 || y->dtype == KN_I32 || y->dtype == KN_BOOL ||
                           y->dtype == KN_F32;
        if (!small_dtype || !shape_known(&y->shape) ||
            kn_shape_numel(&y->shape) > KN_INFER_DATA_MAX_ELEMS)
            return false;
    }
    bool only_shapes = reads_only_shapes(n->op);
    for (int k = 0; k < n->n_in; k++) {
        if (n->in[k] < 0)
            continue;
        const kn_value *x = &g->values[n->in[k]];
        bool known = x->kind == KN_VALUE_CONST || x->data_from_inference;
        if (only_shapes ? !shape_known(&x->shape) : !(known && x->data))
            return false;
    }
    return true;
}

kiln_status kn_graph_run_node(kn_graph *g, const kn_node *n, void *const *out_data) {
    kn_tensor in_views[32], out_views[32];
    kn_tensor *in[32], *out[32];
    if (n->n_in > 32 || n->n_out > 32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "node '%s' has more than 32 inputs or outputs", n->name);
    for (int k = 0; k < n->n_in; k++) {
        in[k] = NULL;
        if (n->in[k] < 0)
            continue;
        const kn_value *x = &g->values[n->in[k]];
        in_views[k] = (kn_tensor){x->shape, x->dtype, x->data};
        in[k] = &in_views[k];
    }
    for (int k = 0; k < n->n_out; k++) {
        const kn_value *y = &g->values[n->out[k]];
        out_views[k] = (kn_tensor){y->shape, y->dtype, out_data[k]};
        out[k] = &out_views[k];
    }
    kn_op_ctx ctx = {0};
    kn_op_call call = {.node = n, .in = in, .out = out, .ctx = &ctx};
    kiln_status st = n->op->forward(&call);
    kn_op_ctx_release(&ctx);
    for (int k = 0; st == KILN_OK && n->op->sizes_at_run && k < n->n_out; k++)
        g->values[n->out[k]].shape = out_views[k].shape;
    return st;
}

/* Runs node n into its outputs' inference buffers (buffers[k], one per output, holding
 * KN_INFER_DATA_MAX_ELEMS elements of 8 bytes, allocated here when NULL). */
static kiln_status compute_at_inference(kn_graph *g, const kn_node *n, void **buffers) {
    for (int k = 0; k < n->n_out; k++) {
        if (!buffers[k])
            buffers[k] = kn_arena_alloc(&g->arena, KN_INFER_DATA_MAX_ELEMS * sizeof(int64_t));
        if (!buffers[k])
            return kn_fail(KILN_ERR_NOMEM, "out of memory computing '%s' at shape inference",
                           g->values[n->out[k]].name);
    }
    KN_TRY(kn_graph_run_node(g, n, buffers));
    for (int k = 0; k < n->n_out; k++) {
        kn_value *y = &g->values[n->out[k]];
        y->data = buffers[k];
        y->data_from_inference = true;
    }
    return KILN_OK;
}

kiln_status kn_node_infer_shapes(kn_graph *g, const kn_node *n) {
    KN_TRY(n->op->infer(g, n));
    for (int k = 0; k < n->n_out; k++) {
        kiln_status st = kn_shape_check_size(&g->values[n->out[k]].shape);
        if (st != KILN_OK) {
            kn_error_prefix("output '%s': ", g->values[n->out[k]].name);
            return st;
        }
    }
    return KILN_OK;
}

kiln_status kn_graph_infer_node(kn_graph *g, int i) {
    kn_node *n = &g->nodes[i];
    if (n->n_in < n->op->min_inputs || n->n_in > n->op->max_inputs)
        return kn_fail(KILN_ERR_INVALID_ARG, "%d inputs, expected %d to %d", n->n_in,
                       n->op->min_inputs, n->op->max_inputs);
    for (int k = 0; k < n->n_in; k++) {
        if (n->in[k] < 0)
            continue;
        const kn_value *v = &g->values[n->in[k]];
        if (v->kind == KN_VALUE_ACT && v->producer < 0)
            return kn_fail(KILN_ERR_INVALID_ARG, "input '%s' is never produced", v->name);
    }
    /* Data computed for the previous shapes is stale; its buffers are reused. */
    void *buffers[32] = {NULL};
    for (int k = 0; k < n->n_out; k++) {
        kn_value *y = &g->values[n->out[k]];
        if (!y->data_from_inference)
            continue;
        if (k < 32)
            buffers[k] = y->data;
        y->data = NULL;
        y->data_from_inference = false;
    }
    KN_TRY(kn_node_infer_shapes(g, n));
    if (computable_at_inference(g, n))
        return compute_at_inference(g, n, buffers);
    return KILN_OK;
}

kiln_status kn_graph_infer_shapes(kn_graph *g) {
    for (int i = 0; i < g->n_nodes; i++) {
        kiln_status st = kn_graph_infer_node(g, i);
        if (st != KILN_OK) {
            kn_error_prefix("node '%s' (%s): ", g->nodes[i].name, g->nodes[i].op->name);
            return st;
        }
    }
    return KILN_OK;
}

kiln_status kn_graph_set_dims_declared(kn_graph *g, bool declared) {
    const char *want = declared ? "declared" : "batch", *now = kn_graph_meta(g, KN_META_INPUT_DIMS);
    if (now && strcmp(now, want) == 0)
        return KILN_OK; /* the trainer marks every batch change: the arena need not grow each time */
    return kn_graph_set_meta(g, KN_META_INPUT_DIMS, want);
}

bool kn_graph_input_dim_open(const kn_graph *g, int input, int d) {
    const char *dims = kn_graph_meta(g, KN_META_INPUT_DIMS);
    bool declared = dims && strcmp(dims, "declared") == 0;
    return g->values[g->inputs[input]].shape.d[d] < 0 || (d == 0 && !declared);
}

kn_shape kn_graph_input_declared(const kn_graph *g, int input) {
    kn_shape shape = g->values[g->inputs[input]].shape;
    for (int d = 0; d < shape.ndim; d++)
        shape.d[d] = kn_graph_input_dim_open(g, input, d) ? -1 : shape.d[d];
    return shape;
}

int64_t kn_graph_param_count(const kn_graph *g) {
    int64_t n = 0;
    for (int i = 0; i < g->n_values; i++)
        if (g->values[i].kind == KN_VALUE_PARAM)
            n += kn_shape_numel(&g->values[i].shape);
    return n;
}

kiln_status kn_graph_set_meta(kn_graph *g, const char *key, const char *value) {
    const char *v = kn_arena_strdup(&g->arena, value);
    if (!v)
        return kn_fail(KILN_ERR_NOMEM, "out of memory setting metadata '%s'", key);
    for (int i = 0; i < g->n_meta; i++) {
        if (strcmp(g->meta[i].key, key) == 0) {
            g->meta[i].value = v;
            return KILN_OK;
        }
    }
    kn_meta_entry *meta = kn_arena_alloc(&g->arena, sizeof(kn_meta_entry) * (size_t)(g->n_meta + 1));
    const char *k = kn_arena_strdup(&g->arena, key);
    if (!meta || !k)
        return kn_fail(KILN_ERR_NOMEM, "out of memory setting metadata '%s'", key);
    if (g->n_meta)
        memcpy(meta, g->meta, sizeof(kn_meta_entry) * (size_t)g->n_meta);
    meta[g->n_meta].key = k;
    meta[g->n_meta].value = v;
    g->meta = meta;
    g->n_meta++;
    return KILN_OK;
}

const char *kn_graph_meta(const kn_graph *g, const char *key) {
    for (int i = 0; i < g->n_meta; i++)
        if (strcmp(g->meta[i].key, key) == 0)
            return g->meta[i].value;
    return NULL;
}

void kn_graph_drop_values(kn_graph *g, int *new_id) {
    int kept = 0;
    for (int v = 0; v < g->n_values; v++) {
        if (new_id[v] < 0)
            continue;
        new_id[v] = kept;
        g->values[kept++] = g->values[v];
    }
    g->n_values = kept;
    for (int i = 0; i < g->n_nodes; i++) {
        for (int k = 0; k < g->nodes[i].n_in; k++)
            if (g->nodes[i].in[k] >= 0)
                g->nodes[i].in[k] = new_id[g->nodes[i].in[k]];
        for (int k = 0; k < g->nodes[i].n_out; k++)
            g->nodes[i].out[k] = new_id[g->nodes[i].out[k]];
    }
    for (int i = 0; i < g->n_inputs; i++)
        g->inputs[i] = new_id[g->inputs[i]];
    for (int i = 0; i < g->n_outputs; i++)
        g->outputs[i] = new_id[g->outputs[i]];
    for (int v = 0; v < g->n_values; v++)
        g->values[v].producer = -1;
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_out; k++)
            g->values[g->nodes[i].out[k]].producer = i;
}
