/* The op table: one entry per op (kann/ggml style) with shape inference, the reference forward,
 * the backward for trainable ops, and a FLOP count. The reference forward is plain C and is the oracle
 * every fast kernel is tested against. Op names are ONNX's where ONNX has the op.
 */
#ifndef KN_OP_H
#define KN_OP_H

#include "core/graph.h"
#include "core/status.h"
#include "ops/list.h"

/* What a running op may know about the run it is part of. */
typedef struct kn_op_ctx {
    bool training;         /* BatchNorm uses batch statistics, Dropout drops */
    uint64_t seed;         /* run seed: Dropout masks derive from (seed, step, node, element) */
    uint64_t step;         /* training step, advanced by the trainer */
    int node_index;        /* index of the node being run, for per-node random streams */
    void *scratch;         /* reusable workspace, grown by kn_op_scratch */
    size_t scratch_bytes;
    void *prepared;        /* the state kn_op_call_prepared makes for a call without one */
    size_t prepared_bytes;
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
    /* With fused_relu, the caller also folds a MaxPool that is the only reader of the Relu's output
     * and pools 2x2 windows at stride 2 tiling it (ops with trains_fused_pool only; kn_maxpool_tiles_2x2):
     * backward gets that pool's output gradient here, (N, C, H/2, W/2), and makes the Relu output's
     * gradient from it plane by plane, as the pool's backward would store it, instead of reading
     * dout[0] (which then holds nothing). The pool's forward runs as usual. NULL otherwise. */
    const kn_tensor *fused_pool_dout;
    /* The training tape's buffer for this node, kn_op.saved_bytes large, kept from forward to the
     * backward of the same step (ops with saved_bytes only): forward writes what backward would
     * otherwise recompute (BatchNormalization's batch statistics). NULL elsewhere: backward recomputes. */
    void *saved;
    /* The node's state from kn_op.prepare, made by the executor when it planned the current shapes (ops
     * with prepare, in a session); NULL otherwise. forward reads it through kn_op_call_prepared, never
     * directly. */
    const void *prepared;
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
    /* Per-plan state: what forward would otherwise work out at every call from the node's attributes
     * and its inputs' shapes and dtypes (parsed attributes, window geometry, tap ranges, epilogue
     * constants). prepared_bytes(call) says how many bytes, then prepare(call, state) writes them
     * (64-byte aligned, never NULL); call is as forward will get it, but only the tensors' shapes and
     * dtypes count: prepare reads no tensor data, so the state holds while the shapes do. The one thing
     * that may change under it is axis 0 of a per_image op's tensors (a session runs such a node on a
     * slice of the batch): forward takes the batch from its tensors. Both or neither are set; an op with
     * them reads the state through kn_op_call_prepared (docs/architecture.md, "Per-plan state"). */
    size_t (*prepared_bytes)(const kn_op_call *call);
    kiln_status (*prepare)(const kn_op_call *call, void *state);
    /* Bytes of kn_op_call.saved forward fills for backward at the node's current shapes; NULL: none. */
    size_t (*saved_bytes)(const kn_graph *g, const kn_node *node);
    /* backward honours kn_op_call.din_fresh, and writes every element of a fresh din[i] whenever
     * every dout is given. */
    bool backward_stores;
    /* forward and backward honour kn_op_call.fused_relu. */
    bool trains_fused_relu;
    /* backward honours kn_op_call.fused_pool_dout. */
    bool trains_fused_pool;

    /* Capabilities: what the planner, shape inference and the importers may assume of forward. Each
     * is false unless the op sets it, and an op sets it only when forward guarantees it
     * (docs/architecture.md, "Capabilities"); tests/test_op_caps.c checks each flag against behaviour. */
    /* out[0][i] is computed from in[0][i] alone, so out[0] may share in[0]'s buffer when both have
     * the same size and dtype: the memory planner then writes it in place. */
    bool in_place;
    /* forward reads its inputs' shapes, never their data (Shape, Size): shape inference computes
     * the node as soon as the input shapes are known. */
    bool reads_only_shapes;
    /* forward computes differently when ctx->training is set (Dropout, BatchNormalization), so the
     * ONNX importer never folds such a node into a constant. */
    bool trains_differently;
    /* The output shapes depend on the input values (NonZero, Unique, NonMaxSuppression, Compress) and
     * are known only once forward ran. infer sets each output to an upper bound, exact when the
     * inputs' values are known at inference; forward writes each output packed at its actual shape
     * and stores that shape in out[k]->shape, which it never reads (its buffer holds the bound). An
     * executor sizes the buffers for the bound and infers the nodes after from the actual shapes
     * (runtime/session.c, docs/runtime.md). */
    bool sizes_at_run;
    /* forward computes image b of out[0] (index b of axis 0) from image b of in[0] and, where the op
     * broadcasts, image b of any other input with the batch axis; inputs without it are constants. So an
     * executor may run a node on a slice of the batch (runtime/session.c, "Batches split"). Holds for a
     * node not in training mode (ONNX training_mode = 1), with one output (MaxPool's Indices count the
     * images before). */
    bool per_image;
};

/* Every entry of the table, by id: kn_op_relu, kn_op_conv ... (src/ops/list.h). Code that must know
 * which op a node applies compares its op with these; what an op allows is a flag of its entry. */
#define KN_OP_DECLARE(id) extern const kn_op kn_op_##id;
KN_OPS(KN_OP_DECLARE)
#undef KN_OP_DECLARE

/* The op table entry named `name`, or NULL. */
const kn_op *kn_op_find(const char *name);
/* Iterates the table: returns entry i, NULL past the end. */
const kn_op *kn_op_at(int i);

/* A workspace of at least `bytes` for the running op, reused between calls; NULL when out of memory.
 * Valid until the next kn_op_scratch call on the same context. */
void *kn_op_scratch(kn_op_ctx *ctx, size_t bytes);
void kn_op_ctx_release(kn_op_ctx *ctx);

/* The state forward of an op with `prepare` reads, to *state: call->prepared when the executor
 * prepared the node (a session does whenever it plans), else the op's prepare run now into the
 * context's own buffer (ctx->prepared, apart from the scratch, valid until the next call here on that
 * context). The one place that stands in for an executor that does not prepare: the training tape,
 * the reference path, shape inference's runs and every caller of forward outside the session. */
kiln_status kn_op_call_prepared(const kn_op_call *call, const void **state);

/* ---- graphs through the op table ----------------------------------------------------------------
 * The graph IR (core/graph.h) stores a node's op and knows nothing of what it does; adding nodes by
 * name, shape inference and running a node go through the table, here. */

/* Adds a node applying the op named `op_name` (an ONNX name: "Conv", "Relu" ...); its index goes to
 * *index. Fails (KILN_ERR_UNSUPPORTED for an unknown op, or as kn_graph_append_node) with *index -1. */
kiln_status kn_graph_add_node(kn_graph *g, const char *op_name, const char *node_name, int n_in,
                              const int *in, int n_out, const int *out, int *index);

/* Runs every node's shape inference in order; a failure names the node. */
kiln_status kn_graph_infer_shapes(kn_graph *g);

/* Runs node n's op's shape inference, then checks each output's size (kn_shape_check_size): an op
 * computes output dims from attributes and data, which a hostile file sets. */
kiln_status kn_node_infer_shapes(kn_graph *g, const kn_node *n);

/* Node i's shape inference, without the node's name in a failure's message. Afterwards, when every
 * output is an f32, i64, i32 or bool tensor of at most KN_INFER_DATA_MAX_ELEMS elements and every
 * input has data (an op that reads_only_shapes: its input has a fully known shape), the node is run
 * right away and its outputs get data_from_inference: so ops that need data at inference time (a
 * Reshape target) can use values computed from shapes. Outputs that stop qualifying lose their data. */
kiln_status kn_graph_infer_node(kn_graph *g, int i);

/* Runs node n's forward once (not training), reading each input's value->data and writing output k
 * into out_data[k], sized for the output's current shape: computing what does not depend on the
 * graph's inputs, at import or shape inference. An op that sizes its outputs when it runs
 * (kn_op.sizes_at_run) leaves their actual shapes in the output values. */
kiln_status kn_graph_run_node(kn_graph *g, const kn_node *n, void *const *out_data);

#endif
