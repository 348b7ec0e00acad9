/* The op table: one entry per op (kann/ggml style) with shape inference, the reference forward,
 * the backward for trainable ops, and a FLOP count. The reference forward is plain C and is the oracle
 * every fast kernel is tested against. Op names are ONNX's where ONNX has the op.
 */
#ifndef KN_OP_H
#define KN_OP_H

#include "core/graph.h"
#include "core/status.h"

/* What a running op may know about the run it is part of. */
typedef struct kn_op_ctx {
    bool training;         /* BatchNorm uses batch statistics, Dropout drops */
    uint64_t seed;         /* run seed: Dropout masks derive from (seed, step, node, element) */
    uint64_t step;         /* training step, advanced by the trainer */
    int node_index;        /* index of the node being run, for per-node random streams */
    void *scratch;         /* reusable workspace, grown by kn_op_scratch */
    size_t scratch_bytes;
} kn_op_ctx;

/* One call of an op. Tensors are views onto buffers owned by the caller.
 * forward:  reads in[0..n_in), writes out[0..n_out). in[i] is NULL for an omitted optional input.
 *           Stateful ops (BatchNormalization in training) update their state inputs in place.
 * backward: reads in, out and dout (gradients of the outputs; NULL where none flows) and ADDS the
 *           gradient of each input into din[i]; din[i] is NULL where no gradient is wanted.
 *           Exception, for ops with backward_stores only: where bit i of din_fresh is set, din[i]
 *           holds no gradient yet and its contents are undefined, so the op STORES the gradient
 *           into every element instead of adding. The training tape sets the bit for an activation
 *           whose gradient has this one contribution, which saves zeroing it and reading it back. */
typedef struct kn_op_call {
    const kn_node *node;
    kn_tensor *const *in;
    kn_tensor *const *out;
    const kn_tensor *const *dout;
    kn_tensor *const *din;
    kn_op_ctx *ctx;
    unsigned din_fresh;
    /* The caller folds a Relu that is the only reader of output 0 into this call (ops with
     * trains_fused_relu only, single-output nodes): forward writes relu(y) to out[0], and backward
     * gets out[0] = relu(y) and dout[0] = the gradient of relu(y). Saves the training tape a pass
     * over the activation each way. */
    bool fused_relu;
} kn_op_call;

static inline bool kn_din_fresh(const kn_op_call *call, int i) { return (call->din_fresh >> i) & 1u; }

struct kn_op {
    const char *name;
    int min_inputs, max_inputs;
    /* Checks input shapes and attributes; sets the node's output shapes and dtypes. Re-run whenever
     * input shapes change (a new batch size). Errors through kn_fail; the caller adds the node name. */
    kiln_status (*infer)(kn_graph *g, const kn_node *node);
    kiln_status (*forward)(const kn_op_call *call);
    kiln_status (*backward)(const kn_op_call *call); /* NULL: not differentiable */
    int64_t (*flops)(const kn_graph *g, const kn_node *node); /* NULL: counted as 0 */
    /* Bytes of ctx scratch (kn_op_scratch) forward asks for at the node's current shapes, so that an
     * executor can allocate it before running. NULL: forward needs none, or sizes it on first use. */
    size_t (*workspace)(const kn_graph *g, const kn_node *node);
    /* backward honours kn_op_call.din_fresh, and writes every element of a fresh din[i] whenever
     * every dout is given. */
    bool backward_stores;
    /* forward and backward honour kn_op_call.fused_relu. */
    bool trains_fused_relu;
    /* The output shapes depend on the input values (NonZero, Unique, NonMaxSuppression, Compress) and
     * are known only once forward ran. infer sets each output to an upper bound, exact when the
     * inputs' values are known at inference; forward writes each output packed at its actual shape
     * and stores that shape in out[k]->shape, which it never reads (its buffer holds the bound). An
     * executor sizes the buffers for the bound and infers the nodes after from the actual shapes
     * (runtime/session.c, docs/runtime.md). */
    bool sizes_at_run;
};

/* The op table entry named `name`, or NULL. */
const kn_op *kn_op_find(const char *name);
/* Iterates the table: returns entry i, NULL past the end. */
const kn_op *kn_op_at(int i);

/* A workspace of at least `bytes` for the running op, reused between calls; NULL when out of memory.
 * Valid until the next kn_op_scratch call on the same context. */
void *kn_op_scratch(kn_op_ctx *ctx, size_t bytes);
void kn_op_ctx_release(kn_op_ctx *ctx);

#endif
