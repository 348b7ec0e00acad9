#include "train/tape.h"

#include <stdlib.h>
#include <string.h>

#include "core/align.h"
#include "core/status.h"
#include "ops/movement.h"
#include "ops/pool_2x2.h"

enum { TAPE_ALIGN_FLOATS = KN_ALIGN / sizeof(float) }; /* every buffer starts KN_ALIGN-aligned */

static size_t align_floats(size_t n) { return (n + TAPE_ALIGN_FLOATS - 1) & ~(size_t)(TAPE_ALIGN_FLOATS - 1); }

/* Zeroed KN_ALIGN-aligned floats. */
static float *alloc_floats(size_t n) {
    size_t bytes;
    if (!kn_size_mul(align_floats(n ? n : 1), sizeof(float), &bytes))
        return NULL;
    float *p = kn_aligned_alloc(bytes);
    if (p)
        memset(p, 0, bytes);
    return p;
}

static bool is_output(const kn_graph *g, int v) {
    for (int i = 0; i < g->n_outputs; i++)
        if (g->outputs[i] == v)
            return true;
    return false;
}

static void mark_needs_grad(kn_tape *t) {
    kn_graph *g = t->g;
    for (int v = 0; v < g->n_values; v++)
        t->needs_grad[v] = t->with_grads && g->values[v].kind == KN_VALUE_PARAM;
    for (int i = 0; i < g->n_nodes && t->with_grads; i++) {
        const kn_node *n = &g->nodes[i];
        bool any = false;
        for (int k = 0; k < n->n_in; k++)
            any |= n->in[k] >= 0 && t->needs_grad[n->in[k]];
        for (int k = 0; k < n->n_out; k++)
            t->needs_grad[n->out[k]] = any && g->values[n->out[k]].dtype == KN_F32;
    }
}

/* only_reader[v]: the node whose input slots read value v exactly once, when no other slot reads
 * it; -1 when nothing or several slots read v. reads (n_values) is workspace. */
static void find_only_readers(const kn_graph *g, int *only_reader, int *reads) {
    kn_graph_value_reads(g, reads, only_reader);
    for (int v = 0; v < g->n_values; v++)
        if (reads[v] != 1)
            only_reader[v] = -1;
}

/* grad_storer[v]: the node whose backward stores (rather than adds) the whole gradient of activation
 * or parameter v, or -1 when v's gradient must start at zero. A node qualifies when it is v's only
 * reader, its op honours din_fresh, and all its outputs carry gradients, so that it runs and writes.
 * A parameter's gradient is stored only by the first backward after kn_tape_zero_param_grads: later
 * ones accumulate. */
static void find_grad_storers(kn_tape *t, const int *only_reader) {
    kn_graph *g = t->g;
    for (int v = 0; v < g->n_values; v++) {
        t->grad_storer[v] = -1;
        int i = only_reader[v];
        kn_value_kind kind = g->values[v].kind;
        if (i < 0 || !t->needs_grad[v] || (kind != KN_VALUE_ACT && kind != KN_VALUE_PARAM) || is_output(g, v))
            continue;
        const kn_node *n = &g->nodes[i];
        bool stores = n->op->backward_stores;
        for (int k = 0; k < n->n_out; k++)
            stores &= t->needs_grad[n->out[k]];
        for (int k = 0; k < n->n_in; k++)
            stores &= n->in[k] != v || k < 32; /* din_fresh has 32 bits */
        t->grad_storer[v] = stores ? i : -1;
    }
}

/* Whether value v lives in the activation block: inputs and activations, except those whose data
 * shape inference computed or the caller bound before binding the tape (they keep it in the graph). */
static bool in_act_block(const kn_value *val) {
    return (val->kind == KN_VALUE_ACT || val->kind == KN_VALUE_INPUT) && !val->data_from_inference;
}

/* Whether y can share x's buffer: both activations of the same size bound in the block, y no graph
 * output. */
static bool can_share(const kn_graph *g, int x, int y) {
    const kn_value *xv = &g->values[x], *yv = &g->values[y];
    size_t x_bytes, y_bytes;
    return in_act_block(xv) && in_act_block(yv) && yv->kind == KN_VALUE_ACT && !is_output(g, y) &&
           xv->dtype == yv->dtype && kn_shape_bytes(&xv->shape, xv->dtype, &x_bytes) &&
           kn_shape_bytes(&yv->shape, yv->dtype, &y_bytes) && x_bytes == y_bytes;
}

/* Buffers shared instead of copied (value_alias, grad_alias):
 *  - the output of an op that only copies its input's elements in order (Reshape, Flatten, Squeeze,
 *    Unsqueeze, Identity: kn_copy_forward) shares the input's buffer, so forward copies nothing; its
 *    gradient shares the input's when this node stores the input's whole gradient (grad_storer);
 *  - an input of Add (or the first of Sub) of the output's shape, whose gradient the node stores
 *    whole, shares the output's gradient: that gradient is the output's, so backward copies nothing.
 * Nothing writes a value once computed, nor a gradient once its last reader's backward ran, so a
 * shared buffer always holds both. Graph outputs keep their own buffers. The ops' backwards skip a
 * copy onto itself. An alias points at an earlier value (copy) or a later one (Add), never round. */
static void find_buffer_aliases(kn_tape *t) {
    kn_graph *g = t->g;
    for (int v = 0; v < g->n_values; v++)
        t->value_alias[v] = t->grad_alias[v] = -1;
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        if (n->op->forward != kn_copy_forward || n->n_in < 1 || n->n_out != 1 || n->in[0] < 0)
            continue;
        int x = n->in[0], y = n->out[0];
        if (!can_share(g, x, y))
            continue;
        t->value_alias[y] = x;
        if (t->needs_grad[x] && t->needs_grad[y] && t->grad_storer[x] == i && g->values[x].kind == KN_VALUE_ACT)
            t->grad_alias[y] = x;
    }
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        if ((n->op != &kn_op_add && n->op != &kn_op_sub) || n->n_in != 2 || n->n_out != 1)
            continue;
        int y = n->out[0];
        for (int k = 0; k < (n->op == &kn_op_add ? 2 : 1); k++) {
            int x = n->in[k];
            if (x >= 0 && t->grad_alias[x] < 0 && t->needs_grad[x] && t->needs_grad[y] && t->grad_storer[x] == i &&
                g->values[x].kind == KN_VALUE_ACT && can_share(g, y, x) &&
                kn_shape_equal(&g->values[x].shape, &g->values[y].shape))
                t->grad_alias[x] = y;
        }
    }
}

/* relu_fused_into[i]: for a node whose op trains with a fused Relu, the Relu node that is the only
 * reader of its only output; -1 otherwise. relu_fused_into[j] = -2 marks that Relu node, which then
 * never runs on its own (the producer writes its output and takes its gradient). */
static void find_fused_relus(kn_tape *t, const int *only_reader) {
    kn_graph *g = t->g;
    for (int i = 0; i < g->n_nodes; i++)
        t->relu_fused_into[i] = -1;
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        if (!n->op->trains_fused_relu || n->n_out != 1 || is_output(g, n->out[0]))
            continue;
        int y = n->out[0], reader = only_reader[y];
        if (reader >= 0 && g->nodes[reader].op == &kn_op_relu && g->nodes[reader].in[0] == y &&
            t->needs_grad[y] == t->needs_grad[g->nodes[reader].out[0]]) {
            t->relu_fused_into[i] = reader;
            t->relu_fused_into[reader] = -2;
        }
    }
}

/* pool_fused_into[i]: for a node that runs a fused Relu and whose op trains with a fused pool, the
 * MaxPool node that is the only reader of the Relu's output and whose 2x2 windows tile it
 * (kn_maxpool_tiles_2x2); -1 otherwise. pool_fused_into[j] = -2 marks that MaxPool, whose backward then
 * never runs on its own (the producer makes the Relu output's gradient from the pool's). */
static void find_fused_pools(kn_tape *t, const int *only_reader) {
    kn_graph *g = t->g;
    for (int i = 0; i < g->n_nodes; i++)
        t->pool_fused_into[i] = -1;
    for (int i = 0; i < g->n_nodes; i++) {
        int relu = t->relu_fused_into[i];
        if (relu < 0 || !g->nodes[i].op->trains_fused_pool)
            continue;
        int y = g->nodes[relu].out[0], reader = only_reader[y];
        if (reader >= 0 && !is_output(g, y) && kn_maxpool_tiles_2x2(g, &g->nodes[reader]) &&
            t->needs_grad[y] == t->needs_grad[g->nodes[reader].out[0]]) {
            t->pool_fused_into[i] = reader;
            t->pool_fused_into[reader] = -2;
        }
    }
}

/* Parameter gradients live in their own block, allocated once. */
static kiln_status alloc_param_grads(kn_tape *t) {
    kn_graph *g = t->g;
    size_t total = 0;
    for (int v = 0; v < g->n_values; v++)
        if (g->values[v].kind == KN_VALUE_PARAM && t->needs_grad[v])
            total += align_floats((size_t)kn_shape_numel(&g->values[v].shape));
    t->param_grad_block = alloc_floats(total);
    if (!t->param_grad_block)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for %zu parameter gradients", total);
    size_t offset = 0;
    for (int v = 0; v < g->n_values; v++) {
        kn_value *val = &g->values[v];
        if (val->kind != KN_VALUE_PARAM || !t->needs_grad[v])
            continue;
        t->grads[v] = (kn_tensor){val->shape, KN_F32, t->param_grad_block + offset};
        offset += align_floats((size_t)kn_shape_numel(&val->shape));
    }
    return KILN_OK;
}

/* Lays out activation (and activation-gradient) buffers for the current shapes in one block. */
static kiln_status bind_activations(kn_tape *t) {
    kn_graph *g = t->g;
    find_buffer_aliases(t);
    size_t total = 0;
    for (int v = 0; v < g->n_values; v++) {
        kn_value *val = &g->values[v];
        if (!in_act_block(val))
            continue;
        size_t bytes;
        if (!kn_shape_bytes(&val->shape, val->dtype, &bytes))
            return kn_fail(KILN_ERR_NOMEM, "value '%s' is too large", val->name);
        size_t floats = align_floats((bytes + sizeof(float) - 1) / sizeof(float));
        size_t copies = (t->value_alias[v] < 0) +
                        (t->needs_grad[v] && val->kind == KN_VALUE_ACT && t->grad_alias[v] < 0);
        if (!kn_size_add(total, floats * copies, &total))
            return kn_fail(KILN_ERR_NOMEM, "activations overflow the address space");
    }
    size_t bytes;
    if (!kn_size_mul(total, sizeof(float), &bytes))
        return kn_fail(KILN_ERR_NOMEM, "activations overflow the address space");
    if (!t->act_block || bytes > t->act_block_bytes) {
        free(t->act_block);
        t->act_block = alloc_floats(total);
        t->act_block_bytes = t->act_block ? bytes : 0;
        if (!t->act_block)
            return kn_fail(KILN_ERR_NOMEM, "out of memory for activations (%zu MiB)", bytes >> 20);
    }
    size_t offset = 0;
    for (int v = 0; v < g->n_values; v++) {
        kn_value *val = &g->values[v];
        if (!in_act_block(val)) {
            t->values[v] = (kn_tensor){val->shape, val->dtype, val->data};
            continue;
        }
        size_t bytes_v;
        kn_shape_bytes(&val->shape, val->dtype, &bytes_v);
        size_t floats = align_floats((bytes_v + sizeof(float) - 1) / sizeof(float));
        t->values[v] = (kn_tensor){val->shape, val->dtype, NULL};
        if (t->value_alias[v] < 0) {
            t->values[v].data = t->act_block + offset;
            offset += floats;
        }
        if (t->needs_grad[v] && val->kind == KN_VALUE_ACT) {
            t->grads[v] = (kn_tensor){val->shape, KN_F32, NULL};
            if (t->grad_alias[v] < 0) {
                t->grads[v].data = t->act_block + offset;
                offset += floats;
            }
        }
    }
    // Each alias takes the buffer at the end of its chain, which has one of its own.
    for (int v = 0; v < g->n_values; v++) {
        int root = v;
        while (t->value_alias[root] >= 0)
            root = t->value_alias[root];
        t->values[v].data = t->values[root].data;
        for (root = v; t->grad_alias[root] >= 0;)
            root = t->grad_alias[root];
        t->grads[v].data = t->grads[root].data;
    }
    return KILN_OK;
}

kiln_status kn_tape_set_batch(kn_tape *t, int64_t batch) {
    kn_graph *g = t->g;
    if (batch < 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "batch size must be at least 1, got %lld", (long long)batch);
    for (int i = 0; i < g->n_inputs; i++) {
        kn_value *in = &g->values[g->inputs[i]];
        if (in->shape.ndim < 1)
            return kn_fail(KILN_ERR_SHAPE, "input '%s' has no batch dimension", in->name);
        in->shape.d[0] = batch;
    }
    /* Every first dim now holds a batch, which any batch may replace. */
    KN_TRY(kn_graph_set_dims_declared(g, false));
    KN_TRY(kn_graph_infer_shapes(g));
    t->batch = batch;
    return bind_activations(t);
}

kiln_status kn_tape_set_input_shapes(kn_tape *t, const kn_shape *shapes) {
    kn_graph *g = t->g;
    for (int i = 0; i < g->n_inputs; i++) {
        kn_value *in = &g->values[g->inputs[i]];
        char buf[96];
        for (int k = 0; k < shapes[i].ndim; k++)
            if (shapes[i].d[k] < 0)
                return kn_fail(KILN_ERR_INVALID_ARG, "input '%s': shape %s has an unknown dim",
                               in->name, kn_shape_str(&shapes[i], buf, sizeof buf));
        if (shapes[i].ndim != in->shape.ndim)
            return kn_fail(KILN_ERR_SHAPE, "input '%s' has rank %d; shape %s was given", in->name,
                           in->shape.ndim, kn_shape_str(&shapes[i], buf, sizeof buf));
        in->shape = shapes[i];
    }
    KN_TRY(kn_graph_infer_shapes(g));
    t->batch = g->n_inputs && shapes[0].ndim ? shapes[0].d[0] : 1;
    return bind_activations(t);
}

/* Everything but the shapes: per-value tables, gradient marks, parameter gradients. */
static kiln_status tape_prepare(kn_tape *t, kn_graph *g, bool with_grads) {
    memset(t, 0, sizeof *t);
    t->g = g;
    t->with_grads = with_grads;
    size_t n = (size_t)(g->n_values ? g->n_values : 1);
    t->values = calloc(n, sizeof(kn_tensor));
    t->grads = calloc(n, sizeof(kn_tensor));
    t->needs_grad = calloc(n, sizeof(bool));
    t->grad_storer = calloc(n, sizeof(int));
    t->value_alias = calloc(n, sizeof(int));
    t->grad_alias = calloc(n, sizeof(int));
    t->relu_fused_into = calloc((size_t)(g->n_nodes ? g->n_nodes : 1), sizeof(int));
    t->pool_fused_into = calloc((size_t)(g->n_nodes ? g->n_nodes : 1), sizeof(int));
    if (!t->values || !t->grads || !t->needs_grad || !t->grad_storer || !t->value_alias || !t->grad_alias ||
        !t->relu_fused_into || !t->pool_fused_into) {
        kn_tape_free(t);
        return kn_fail(KILN_ERR_NOMEM, "out of memory binding the graph");
    }
    mark_needs_grad(t);
    int *only_reader = malloc(sizeof(int) * n * 2); /* and the reads find_only_readers counts */
    if (!only_reader) {
        kn_tape_free(t);
        return kn_fail(KILN_ERR_NOMEM, "out of memory binding the graph");
    }
    find_only_readers(g, only_reader, only_reader + n);
    find_grad_storers(t, only_reader);
    find_fused_relus(t, only_reader);
    find_fused_pools(t, only_reader);
    free(only_reader);
    kiln_status st = alloc_param_grads(t);
    if (st != KILN_OK)
        kn_tape_free(t);
    return st;
}

kiln_status kn_tape_init(kn_tape *t, kn_graph *g, int64_t batch, bool with_grads) {
    KN_TRY(tape_prepare(t, g, with_grads));
    kiln_status st = kn_tape_set_batch(t, batch);
    if (st != KILN_OK)
        kn_tape_free(t);
    return st;
}

kiln_status kn_tape_init_shapes(kn_tape *t, kn_graph *g, const kn_shape *shapes, bool with_grads) {
    KN_TRY(tape_prepare(t, g, with_grads));
    kiln_status st = kn_tape_set_input_shapes(t, shapes);
    if (st != KILN_OK)
        kn_tape_free(t);
    return st;
}

void kn_tape_free(kn_tape *t) {
    free(t->values);
    free(t->grads);
    free(t->needs_grad);
    free(t->grad_storer);
    free(t->value_alias);
    free(t->grad_alias);
    free(t->relu_fused_into);
    free(t->pool_fused_into);
    free(t->act_block);
    free(t->param_grad_block);
    for (int i = 0; t->saved && t->g && i < t->g->n_nodes; i++)
        free(t->saved[i]);
    free(t->saved);
    free(t->saved_cap);
    kn_op_ctx_release(&t->ctx);
    memset(t, 0, sizeof *t);
}

kn_tensor *kn_tape_input(kn_tape *t, int i) { return &t->values[t->g->inputs[i]]; }

const kn_tensor *kn_tape_output(const kn_tape *t, int i) { return &t->values[t->g->outputs[i]]; }

kn_tensor *kn_tape_output_grad(kn_tape *t, int i) { return &t->grads[t->g->outputs[i]]; }

/* Pointer arrays for one node's call; optional inputs that are absent stay NULL. */
typedef struct node_binding {
    kn_tensor *in[32], *out[32], *din[32];
    const kn_tensor *dout[32];
} node_binding;

static kiln_status bind_node(kn_tape *t, const kn_node *n, node_binding *b, bool backward) {
    if (n->n_in > 32 || n->n_out > 32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "node '%s' has more than 32 inputs or outputs", n->name);
    for (int k = 0; k < n->n_in; k++) {
        int v = n->in[k];
        b->in[k] = v >= 0 ? &t->values[v] : NULL;
        b->din[k] = (backward && v >= 0 && t->needs_grad[v]) ? &t->grads[v] : NULL;
    }
    for (int k = 0; k < n->n_out; k++) {
        int v = n->out[k];
        b->out[k] = &t->values[v];
        b->dout[k] = (backward && t->needs_grad[v]) ? &t->grads[v] : NULL;
    }
    int relu = t->relu_fused_into[n - t->g->nodes];
    if (relu >= 0) { /* output 0 is the fused Relu's output, see kn_op_call.fused_relu */
        int v = t->g->nodes[relu].out[0];
        b->out[0] = &t->values[v];
        b->dout[0] = (backward && t->needs_grad[v]) ? &t->grads[v] : NULL;
    }
    return KILN_OK;
}

static bool outputs_known(const kn_graph *g, const kn_node *n) {
    for (int k = 0; k < n->n_out; k++)
        if (!g->values[n->out[k]].data_from_inference)
            return false;
    return true;
}

/* The tape binds every activation at its inferred shape before running. An op that sizes its outputs
 * when it runs (kn_op.sizes_at_run) fits only when it gives exactly those shapes: its inputs' values
 * were known at inference (a constant Compress condition). Otherwise only sessions run it. */
static kiln_status check_run_shapes(const kn_graph *g, const kn_node *n, node_binding *b) {
    kiln_status st = KILN_OK;
    for (int k = 0; k < n->n_out; k++) {
        const kn_shape *planned = &g->values[n->out[k]].shape;
        if (st == KILN_OK && !kn_shape_equal(&b->out[k]->shape, planned)) {
            char got[96], bound[96];
            st = kn_fail(KILN_ERR_UNSUPPORTED, "output %d is %s by its input values, not %s as bound before the "
                         "run: training and calibration run graphs whose shapes are known before the run "
                         "(kiln run and sessions run this one)", k,
                         kn_shape_str(&b->out[k]->shape, got, sizeof got), kn_shape_str(planned, bound, sizeof bound));
        }
        b->out[k]->shape = *planned; /* the tape's tensors keep their bound shapes */
    }
    return st;
}

/* Node i's saved buffer (kn_op_call.saved), grown to what its op asks at the current shapes; NULL when the
 * op keeps nothing. Grows only when the shapes do (a larger batch), like the activation block. */
static kiln_status saved_buffer(kn_tape *t, int i, void **buf) {
    const kn_node *n = &t->g->nodes[i];
    *buf = NULL;
    size_t bytes = n->op->saved_bytes ? n->op->saved_bytes(t->g, n) : 0;
    if (!bytes)
        return KILN_OK;
    if (!t->saved) {
        t->saved = calloc((size_t)t->g->n_nodes, sizeof(void *));
        t->saved_cap = calloc((size_t)t->g->n_nodes, sizeof(size_t));
        if (!t->saved || !t->saved_cap)
            return kn_fail(KILN_ERR_NOMEM, "out of memory for the tape's saved values");
    }
    if (t->saved_cap[i] < bytes) {
        void *grown = realloc(t->saved[i], bytes);
        if (!grown)
            return kn_fail(KILN_ERR_NOMEM, "out of memory for %zu bytes node '%s' keeps for backward", bytes, n->name);
        t->saved[i] = grown;
        t->saved_cap[i] = bytes;
    }
    *buf = t->saved[i];
    return KILN_OK;
}

kiln_status kn_tape_forward(kn_tape *t, bool training) {
    kn_graph *g = t->g;
    t->ctx.training = training;
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        if (outputs_known(g, n) || t->relu_fused_into[i] == -2)
            continue;
        node_binding b;
        KN_TRY(bind_node(t, n, &b, false));
        t->ctx.node_index = i;
        kn_op_call call = {.node = n, .in = b.in, .out = b.out, .ctx = &t->ctx,
                           .fused_relu = t->relu_fused_into[i] >= 0};
        KN_TRY(saved_buffer(t, i, &call.saved));
        kiln_status st = n->op->forward(&call);
        if (st == KILN_OK && n->op->sizes_at_run)
            st = check_run_shapes(g, n, &b);
        if (st != KILN_OK) {
            kn_error_prefix("node '%s' (%s): ", n->name, n->op->name);
            return st;
        }
    }
    return KILN_OK;
}

/* Gradients the next backward stores whole are left as they are: it writes them before any use. */
void kn_tape_zero_param_grads(kn_tape *t) {
    for (int v = 0; v < t->g->n_values; v++)
        if (t->g->values[v].kind == KN_VALUE_PARAM && t->grads[v].data && t->grad_storer[v] < 0)
            memset(t->grads[v].data, 0, sizeof(float) * (size_t)kn_numel(&t->grads[v]));
    t->param_grads_zero = true;
}

kiln_status kn_tape_backward(kn_tape *t) {
    kn_graph *g = t->g;
    if (!t->with_grads)
        return kn_fail(KILN_ERR_INTERNAL, "backward on a tape bound without gradients");
    const bool params_fresh = t->param_grads_zero; /* later backwards add to what this one stores */
    t->param_grads_zero = false;
    for (int v = 0; v < g->n_values; v++)
        if (g->values[v].kind == KN_VALUE_ACT && t->grads[v].data && !is_output(g, v) && t->grad_storer[v] < 0)
            memset(t->grads[v].data, 0, sizeof(float) * (size_t)kn_numel(&t->grads[v]));
    for (int i = g->n_nodes - 1; i >= 0; i--) {
        const kn_node *n = &g->nodes[i];
        if (t->relu_fused_into[i] == -2 || t->pool_fused_into[i] == -2)
            continue;
        node_binding b;
        KN_TRY(bind_node(t, n, &b, true));
        bool flows_out = false, flows_in = false;
        for (int k = 0; k < n->n_out; k++)
            flows_out |= b.dout[k] != NULL;
        for (int k = 0; k < n->n_in; k++)
            flows_in |= b.din[k] != NULL;
        if (!flows_out || !flows_in)
            continue;
        if (!n->op->backward)
            return kn_fail(KILN_ERR_UNSUPPORTED, "node '%s': op %s has no gradient; it cannot be trained through",
                           n->name, n->op->name);
        t->ctx.node_index = i;
        kn_op_call call = {.node = n, .in = b.in, .out = b.out, .dout = b.dout, .din = b.din, .ctx = &t->ctx,
                           .fused_relu = t->relu_fused_into[i] >= 0,
                           .saved = t->saved && n->op->saved_bytes ? t->saved[i] : NULL};
        int pool = t->pool_fused_into[i];
        if (pool >= 0) /* a gradient flows into the pool's output: it flows into the Relu's (find_fused_pools) */
            call.fused_pool_dout = &t->grads[g->nodes[pool].out[0]];
        for (int k = 0; k < n->n_in; k++) {
            int v = n->in[k];
            if (v >= 0 && t->grad_storer[v] == i && (g->values[v].kind == KN_VALUE_ACT || params_fresh))
                call.din_fresh |= 1u << k;
        }
        kiln_status st = n->op->backward(&call);
        if (st != KILN_OK) {
            kn_error_prefix("backward of node '%s' (%s): ", n->name, n->op->name);
            return st;
        }
    }
    return KILN_OK;
}
