/* The training executor: runs a graph forward keeping every activation, then backward through the
 * op table's backward functions in reverse node order (a static autograd tape: the graph is the tape).
 *
 * Buffers: one block for activations and their gradients, sized for the largest batch seen and reused
 * for smaller ones; one block for parameter gradients that never moves, so optimizers can hold
 * pointers into it. */
#ifndef KN_TAPE_H
#define KN_TAPE_H

#include "core/graph.h"
#include "ops/op.h"

typedef struct kn_tape {
    kn_graph *g;
    bool with_grads;
    int64_t batch;
    kn_tensor *values;   /* (n_values) views: initializers onto the graph's data, activations onto the block */
    kn_tensor *grads;    /* (n_values) gradient views; data NULL where no gradient flows */
    bool *needs_grad;    /* (n_values) a parameter, or computed from one */
    int *grad_storer;    /* (n_values) node whose backward stores the value's whole gradient, or -1 */
    int *value_alias;    /* (n_values) the value whose buffer this one shares (a copy op's input), or -1 */
    int *grad_alias;     /* (n_values) likewise for the gradient buffer, or -1 */
    int *relu_fused_into;/* (n_nodes) the Relu node run inside this node, -1 none, -2 for that Relu */
    int *pool_fused_into;/* (n_nodes) the MaxPool whose backward runs inside this node's, -1 none, -2 for
                            that MaxPool (its forward runs on its own) */
    bool param_grads_zero; /* parameter gradients are zero (some only logically: see grad_storer) */
    float *act_block;
    size_t act_block_bytes;
    float *param_grad_block;
    void **saved;        /* (n_nodes) what node i's forward keeps for its backward (kn_op.saved_bytes) */
    size_t *saved_cap;   /* (n_nodes) bytes allocated at saved[i] */
    kn_op_ctx ctx;
} kn_tape;

/* Binds the graph for `batch` samples. with_grads allocates gradients for every parameter and every
 * activation that depends on one. The graph must outlive the tape. */
kiln_status kn_tape_init(kn_tape *t, kn_graph *g, int64_t batch, bool with_grads);
void kn_tape_free(kn_tape *t);

/* Re-infers shapes for a new batch size; reuses the buffers when they are large enough. */
kiln_status kn_tape_set_batch(kn_tape *t, int64_t batch);

/* kn_tape_init and kn_tape_set_batch for graphs whose inputs have other dynamic dims than the batch,
 * or no batch dim: shapes[i] is the full shape of graph input i, every dim known. */
kiln_status kn_tape_init_shapes(kn_tape *t, kn_graph *g, const kn_shape *shapes, bool with_grads);
kiln_status kn_tape_set_input_shapes(kn_tape *t, const kn_shape *shapes);

/* The i-th graph input / output as bound for the current batch. */
kn_tensor *kn_tape_input(kn_tape *t, int i);
const kn_tensor *kn_tape_output(const kn_tape *t, int i);
/* Gradient of the loss w.r.t. output i: the caller fills it before kn_tape_backward. */
kn_tensor *kn_tape_output_grad(kn_tape *t, int i);
/* Gradient buffer of value `v` (NULL data when none flows). */
static inline kn_tensor *kn_tape_grad(kn_tape *t, int v) { return &t->grads[v]; }

/* Runs every node except those whose outputs shape inference already computed
 * (kn_value.data_from_inference). */
kiln_status kn_tape_forward(kn_tape *t, bool training);
/* Zeroes every parameter gradient (those the next backward stores whole are zero in effect: it
 * overwrites them before anything reads them). */
void kn_tape_zero_param_grads(kn_tape *t);
/* Backpropagates from the output gradients, ADDING into parameter gradients (so they accumulate until
 * kn_tape_zero_param_grads). Activation gradients are zeroed first. */
kiln_status kn_tape_backward(kn_tape *t);

#endif
