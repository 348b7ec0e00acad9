#include "core/graph.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/status.h"

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

/* Fills the value slot just past the last; the caller counts it in. */
static kiln_status new_value(kn_graph *g, const char *name, kn_value_kind kind, kn_dtype dtype,
                             const kn_shape *shape) {
    kiln_status st = kn_shape_check_size(shape);
    if (st != KILN_OK) {
        kn_error_prefix("value '%s': ", name);
        return st;
    }
    if (!grow((void **)&g->values, &g->cap_values, g->n_values + 1, sizeof(kn_value)))
        return kn_fail(KILN_ERR_NOMEM, "out of memory adding value '%s'", name);
    kn_value *v = &g->values[g->n_values];
    memset(v, 0, sizeof *v);
    v->name = kn_arena_strdup(&g->arena, name);
    v->kind = kind;
    v->dtype = dtype;
    v->shape = *shape;
    v->producer = -1;
    if (!v->name)
        return kn_fail(KILN_ERR_NOMEM, "out of memory adding value '%s'", name);
    if (kind == KN_VALUE_PARAM || kind == KN_VALUE_STATE || kind == KN_VALUE_CONST) {
        size_t bytes;
        if (!kn_shape_bytes(shape, dtype, &bytes))
            return kn_fail(KILN_ERR_NOMEM, "value '%s': size overflows", name);
        v->data = kn_arena_alloc(&g->arena, bytes ? bytes : 1);
        if (!v->data)
            return kn_fail(KILN_ERR_NOMEM, "out of memory for the data of '%s' (%zu bytes)", name, bytes);
    }
    return KILN_OK;
}

kiln_status kn_graph_add_value(kn_graph *g, const char *name, kn_value_kind kind, kn_dtype dtype,
                               const kn_shape *shape, int *id) {
    *id = -1;
    KN_TRY(new_value(g, name, kind, dtype, shape));
    *id = g->n_values++;
    return KILN_OK;
}

int kn_graph_find_value(const kn_graph *g, const char *name) {
    for (int i = 0; i < g->n_values; i++)
        if (strcmp(g->values[i].name, name) == 0)
            return i;
    return -1;
}

/* Fills the node slot just past the last; the caller counts it in. */
static kiln_status new_node(kn_graph *g, const kn_op *op, const char *node_name, int n_in, const int *in, int n_out,
                            const int *out) {
    if (!grow((void **)&g->nodes, &g->cap_nodes, g->n_nodes + 1, sizeof(kn_node)))
        return kn_fail(KILN_ERR_NOMEM, "out of memory adding node '%s'", node_name);
    kn_node *n = &g->nodes[g->n_nodes];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->name = kn_arena_strdup(&g->arena, node_name);
    n->n_in = n_in;
    n->n_out = n_out;
    n->in = kn_arena_alloc(&g->arena, sizeof(int) * (size_t)(n_in ? n_in : 1));
    n->out = kn_arena_alloc(&g->arena, sizeof(int) * (size_t)(n_out ? n_out : 1));
    if (!n->name || !n->in || !n->out)
        return kn_fail(KILN_ERR_NOMEM, "out of memory adding node '%s'", node_name);
    for (int i = 0; i < n_in; i++) {
        if (in[i] < -1 || in[i] >= g->n_values)
            return kn_fail(KILN_ERR_INTERNAL, "node '%s': input %d refers to no value", node_name, i);
        n->in[i] = in[i];
    }
    for (int i = 0; i < n_out; i++) {
        if (out[i] < 0 || out[i] >= g->n_values)
            return kn_fail(KILN_ERR_INTERNAL, "node '%s': output %d refers to no value", node_name, i);
        n->out[i] = out[i];
    }
    return KILN_OK;
}

kiln_status kn_graph_append_node(kn_graph *g, const kn_op *op, const char *node_name, int n_in, const int *in,
                                 int n_out, const int *out, int *index) {
    *index = -1;
    KN_TRY(new_node(g, op, node_name, n_in, in, n_out, out));
    for (int i = 0; i < n_out; i++)
        g->values[out[i]].producer = g->n_nodes;
    *index = g->n_nodes++;
    return KILN_OK;
}

static kiln_status add_io(int *ids, int *n, int value, const char *what) {
    if (*n >= KN_GRAPH_MAX_IO)
        return kn_fail(KILN_ERR_UNSUPPORTED, "more than %d graph %ss", KN_GRAPH_MAX_IO, what);
    ids[(*n)++] = value;
    return KILN_OK;
}

kiln_status kn_graph_add_input(kn_graph *g, int value) {
    return add_io(g->inputs, &g->n_inputs, value, "input");
}

kiln_status kn_graph_add_output(kn_graph *g, int value) {
    return add_io(g->outputs, &g->n_outputs, value, "output");
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

void kn_graph_value_reads(const kn_graph *g, int *reads, int *last) {
    for (int v = 0; v < g->n_values; v++) {
        if (reads)
            reads[v] = 0;
        if (last)
            last[v] = -1;
    }
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_in; k++) {
            int v = g->nodes[i].in[k];
            if (v >= 0 && reads)
                reads[v]++;
            if (v >= 0 && last)
                last[v] = i;
        }
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
