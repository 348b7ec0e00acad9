/* Graphs through the op table (ops/op.h): nodes added by op name, shape inference, and running one
 * node, which the graph IR (core/graph.c) leaves to the layer that knows the ops. */
#include "core/status.h"
#include "ops/movement.h"
#include "ops/op.h"

kiln_status kn_graph_add_node(kn_graph *g, const char *op_name, const char *node_name, int n_in,
                              const int *in, int n_out, const int *out, int *index) {
    *index = -1;
    const kn_op *op = kn_op_find(op_name);
    if (!op)
        return kn_fail(KILN_ERR_UNSUPPORTED, "node '%s': op '%s' is not supported", node_name, op_name);
    return kn_graph_append_node(g, op, node_name, n_in, in, n_out, out, index);
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
    bool only_shapes = n->op->reads_only_shapes; /* inference knows shapes without data */
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

/* String tensors reach only the ops that cope with them: Cast, which converts them, the ops that copy
 * their input's bytes in order (kn_copy_forward: Identity, Reshape, Flatten, Squeeze, Unsqueeze; a
 * kn_string element copies whole) and those that read only shapes (Shape, Size). Any other op would
 * read a kn_string's bytes as numbers, so it refuses them here, for every op at once. */
static bool takes_strings(const kn_op *op) {
    return op == &kn_op_cast || op->forward == kn_copy_forward || op->reads_only_shapes;
}

/* Before inference the inputs (the outputs still hold the last inference's dtypes), after it all. */
static kiln_status check_strings(const kn_graph *g, const kn_node *n, bool outputs) {
    if (takes_strings(n->op))
        return KILN_OK;
    for (int k = 0; k < n->n_in + (outputs ? n->n_out : 0); k++) {
        int v = k < n->n_in ? n->in[k] : n->out[k - n->n_in];
        if (v >= 0 && g->values[v].dtype == KN_STRING)
            return kn_fail(KILN_ERR_UNSUPPORTED, "%s '%s' is a string tensor: %s does not take strings "
                           "(only Cast and the ops that move data do)", k < n->n_in ? "input" : "output",
                           g->values[v].name, n->op->name);
    }
    return KILN_OK;
}

kiln_status kn_node_infer_shapes(kn_graph *g, const kn_node *n) {
    KN_TRY(check_strings(g, n, false));
    KN_TRY(n->op->infer(g, n));
    KN_TRY(check_strings(g, n, true)); /* and the dtype an attribute chose (ConstantOfShape, EyeLike ...) */
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
