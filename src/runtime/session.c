/* Sessions: one model graph bound to the buffers of one run, and the executor that runs it.
 *
 * A session keeps its own copy of the graph's value table (the shapes of its current inputs) over the
 * model's nodes, names and weights, which it only reads: many sessions share one model. When input
 * shapes change, the session infers the shapes again, plans the memory (runtime/plan.h), grows its
 * arena and the ops' scratch to what the plan and the ops' `workspace` functions ask for, and points
 * every tensor at its place. A run then calls each node's forward on those tensors, in order, and
 * allocates nothing.
 *
 * Shapes that depend on input DATA: a model may take a Reshape target, Slice bounds, Resize scales,
 * Range bounds ... as graph inputs. When shape inference fails without input data, the session becomes
 * data-dependent: every input then lives in a buffer of its own (set without a plan), the small inputs
 * of rank 0 or 1 (at most KN_INFER_DATA_MAX_ELEMS elements: the ones that can decide shapes) are bound
 * for shape inference as data (data_from_inference), and the plan is made for their values. It is kept
 * with a copy of those values (the key) and made again only when a run or an output getter finds that
 * they changed: such a run may allocate; a run whose shape values did not change does not.
 *
 * Shapes known only when an op runs: NonZero, Unique, NonMaxSuppression and Compress (kn_op.sizes_at_run)
 * size their outputs from their input values. Shape inference gives such an output an upper bound; the
 * plan gives its buffer the bound's bytes (bound_bytes) however small the value's shape. A run checks
 * the actual shapes each such node leaves in its output tensors: when they are the ones planned for,
 * it goes on; when they differ, the node's output values take them, the nodes after it are inferred
 * again, and the memory is planned again for those shapes (relayout), the values still to be read
 * copied into the new arena, and the run goes on from the next node. The plan then holds until the
 * actual shapes (or the input shapes) change again: a run whose data gives the same shapes as the
 * last allocates nothing.
 *
 * Shapes from values computed in the run: a Range limit, a ConstantOfShape shape, a TopK k ... computed
 * from the data by ops before it (ReduceMax -> Floor -> Cast -> Range). Shape inference stops at the
 * first node that fails for want of such a value (small: rank 0 or 1, at most KN_INFER_DATA_MAX_ELEMS
 * elements), which becomes a stage (kn_stage), and the nodes from there on hold no elements. A run that
 * reaches a stage compares the values it computed with the ones the shapes from there on were inferred
 * for (its key): the same, the run goes on; else it copies them into the key, binds them for inference
 * (data_from_inference), infers the rest (which may stop at a later stage) and plans again as above,
 * carrying what it computed. Small graph inputs that may decide shapes are bound first (a data-dependent
 * session); stages cover what remains. Output getters refuse a shape that waits for a stage no run has
 * reached.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/status.h"
#include "core/threads.h"
#include "format/storage.h"
#include "ops/op.h"
#include "runtime/plan.h"
#include "runtime/runtime.h"

_Static_assert((int)KILN_DTYPE_F32 == (int)KN_F32 && (int)KILN_DTYPE_I64 == (int)KN_I64 &&
                   (int)KILN_DTYPE_I32 == (int)KN_I32 && (int)KILN_DTYPE_U8 == (int)KN_U8 &&
                   (int)KILN_DTYPE_I8 == (int)KN_I8 && (int)KILN_DTYPE_BOOL == (int)KN_BOOL &&
                   (int)KILN_DTYPE_F16 == (int)KN_F16 && (int)KILN_DTYPE_F64 == (int)KN_F64 &&
                   (int)KILN_DTYPE_I16 == (int)KN_I16 && (int)KILN_DTYPE_U16 == (int)KN_U16 &&
                   (int)KILN_DTYPE_U32 == (int)KN_U32 && (int)KILN_DTYPE_U64 == (int)KN_U64 &&
                   (int)KILN_DTYPE_BF16 == (int)KN_BF16 && (int)KN_DTYPE_COUNT == 13,
               "kiln_dtype mirrors kn_dtype");
_Static_assert(KILN_MAX_DIMS == KN_MAX_DIMS, "public and internal ranks agree");

struct kiln_session_options {
    int threads;
    bool optimize;
    bool profiling;
    size_t memory_limit; /* bytes of activations + op scratch; 0: none */
};

/* A node whose shapes follow values the run computes before it (see the top). */
enum { KN_MAX_STAGES = 8 };
typedef struct kn_stage {
    int node;           /* inference resumes here */
    int n_values;       /* the small values computed before it that nodes from it on read */
    int value[32];
    unsigned char *key; /* (n_values, KN_INFER_DATA_MAX_ELEMS * 8 bytes) their bytes when last inferred;
                         * each value's data points at its slot */
    bool bound;         /* key holds values of a run: inference went past the node */
} kn_stage;

struct kiln_session {
    const kiln_model *model;  /* one reference held */
    const kn_graph *source;   /* the model graph this session runs */
    kn_graph graph;           /* its view: own `values` (and arena, for labels), the model's nodes */
    kn_shape input_shapes[16];
    bool planned;             /* graph shapes, plan, arena and tensors match input_shapes */
    bool has_run;             /* the outputs hold a run's results for the current plan */
    int plan_count;
    kn_plan plan;
    unsigned char *arena;     /* 64-byte aligned, arena_capacity bytes */
    size_t arena_capacity;
    size_t workspace_bytes;
    kn_op_ctx ctx;            /* inference; its scratch is sized when planning */
    kn_tensor *tensors;       /* (n_values) every value as bound for the current plan */
    kn_tensor **args;         /* node i's inputs then outputs start at args[first_arg[i]] */
    int *first_arg;           /* (n_nodes) */
    int threads;
    bool profiling;
    size_t memory_limit;      /* bytes of activations + op scratch a plan may take; 0: no limit */
    int64_t *node_ns;         /* (n_nodes) time over the profiled runs */
    int64_t profiled_runs;
    const char **labels;      /* (n_nodes) the op with what is fused into it: "Conv+Relu" */
    int *group_of;            /* (n_nodes) index of the node's label among the distinct labels */
    int *group_first;         /* (n_groups) first node of each label */
    int n_groups;
    /* Data-dependent shapes (see the top): */
    bool dynamic;             /* shapes depend on the data of the inputs in shape_inputs */
    unsigned shape_inputs;    /* bit i: input i's data is bound for shape inference */
    void *input_buf[16];      /* dynamic: each input's own buffer, input_cap[i] bytes */
    size_t input_cap[16];
    bool input_set[16];       /* dynamic: input i holds data for its current shape */
    unsigned char *key;       /* dynamic: the shape inputs' bytes the plan was made for, key_bytes */
    size_t key_bytes;
    /* Shapes known when an op runs (see the top): */
    bool sized_at_run;        /* some node's op has sizes_at_run */
    size_t *bound_bytes;      /* (n_values) bytes of the upper bound of such an op's output; 0 elsewhere */
    /* Shapes from values computed in the run (see the top): the stages, in node order. */
    kn_stage stage[KN_MAX_STAGES];
    int n_stages;
};

/* ---- dtypes ------------------------------------------------------------------------------------ */

static bool dtype_valid(kiln_dtype dtype) { return (int)dtype >= 0 && (int)dtype < KN_DTYPE_COUNT; }

const char *kiln_dtype_name(kiln_dtype dtype) {
    return dtype_valid(dtype) ? kn_dtype_name((kn_dtype)dtype) : "?";
}

size_t kiln_dtype_size(kiln_dtype dtype) { return dtype_valid(dtype) ? kn_dtype_size((kn_dtype)dtype) : 0; }

/* ---- options ----------------------------------------------------------------------------------- */

static const kiln_session_options default_options = {.threads = 0, .optimize = true, .profiling = false};

kiln_session_options *kiln_session_options_create(void) {
    kiln_session_options *o = malloc(sizeof *o);
    if (!o) {
        kn_fail(KILN_ERR_NOMEM, "out of memory creating session options");
        return NULL;
    }
    *o = default_options;
    return o;
}

kiln_status kiln_session_options_set_threads(kiln_session_options *options, int threads) {
    if (!options)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_session_options_set_threads: options is NULL");
    if (threads < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "thread count %d is negative (0 means all cores)", threads);
    options->threads = threads;
    return KILN_OK;
}

kiln_status kiln_session_options_set_optimize(kiln_session_options *options, int enabled) {
    if (!options)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_session_options_set_optimize: options is NULL");
    options->optimize = enabled != 0;
    return KILN_OK;
}

kiln_status kiln_session_options_set_profiling(kiln_session_options *options, int enabled) {
    if (!options)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_session_options_set_profiling: options is NULL");
    options->profiling = enabled != 0;
    return KILN_OK;
}

kiln_status kiln_session_options_set_memory_limit(kiln_session_options *options, size_t bytes) {
    if (!options)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_session_options_set_memory_limit: options is NULL");
    options->memory_limit = bytes;
    return KILN_OK;
}

void kiln_session_options_free(kiln_session_options *options) { free(options); }

/* ---- creating a session ------------------------------------------------------------------------ */

/* The session's view of the model graph: a private value table over the shared nodes. Inputs start
 * with their open dimensions (kn_graph_input_dim_open: a -1, or the batch of a trained model, which
 * stores its last training batch) at 1 and their fixed ones at the model's values; *open tells whether
 * any dimension but the first of an input of rank 2 or more (a batch) is open. */
/* Weights a model keeps packed (KN_KILN_LOAD_PACKED) are read in place by the optimized graph's
 * LowbitGemm; a session of the graph as loaded, whose ops want floats, decodes them into its own arena. */
static kiln_status decode_packed_weights(kn_graph *g) {
    for (int v = 0; v < g->n_values; v++) {
        kn_value *x = &g->values[v];
        size_t bytes;
        if (!x->storage || x->data || x->kind == KN_VALUE_INPUT || x->kind == KN_VALUE_ACT)
            continue;
        if (!kn_shape_bytes(&x->shape, KN_F32, &bytes) || !(x->data = kn_arena_alloc(&g->arena, bytes ? bytes : 1)))
            return kn_fail(KILN_ERR_NOMEM, "out of memory decoding the weight '%s'", x->name);
        kn_storage_decode(x->storage, x->data);
    }
    return KILN_OK;
}

static kiln_status make_view(kiln_session *s, bool *open) {
    const kn_graph *src = s->source;
    s->graph = *src;
    memset(&s->graph.arena, 0, sizeof s->graph.arena);
    s->graph.mapping = NULL;
    s->graph.mapping_bytes = 0;
    s->graph.values = malloc(sizeof(kn_value) * (size_t)(src->n_values ? src->n_values : 1));
    if (!s->graph.values)
        return kn_fail(KILN_ERR_NOMEM, "out of memory creating a session of %d values", src->n_values);
    memcpy(s->graph.values, src->values, sizeof(kn_value) * (size_t)src->n_values);
    s->graph.cap_values = src->n_values;
    KN_TRY(decode_packed_weights(&s->graph));
    *open = false;
    for (int i = 0; i < src->n_inputs; i++) {
        kn_shape shape = src->values[src->inputs[i]].shape;
        for (int d = 0; d < shape.ndim; d++) {
            bool dim_open = kn_graph_input_dim_open(src, i, d);
            *open |= dim_open && (d > 0 || shape.ndim < 2);
            shape.d[d] = dim_open ? 1 : shape.d[d];
        }
        s->input_shapes[i] = shape;
    }
    return KILN_OK;
}

/* Each node's call arguments point at the session's tensors once and for all; planning only changes
 * what those tensors hold. */
static kiln_status bind_arguments(kiln_session *s) {
    const kn_graph *g = &s->graph;
    size_t n_args = 0;
    for (int i = 0; i < g->n_nodes; i++)
        n_args += (size_t)(g->nodes[i].n_in + g->nodes[i].n_out);
    s->tensors = calloc((size_t)(g->n_values ? g->n_values : 1), sizeof(kn_tensor));
    s->args = calloc(n_args ? n_args : 1, sizeof(kn_tensor *));
    s->first_arg = calloc((size_t)(g->n_nodes ? g->n_nodes : 1), sizeof(int));
    if (!s->tensors || !s->args || !s->first_arg)
        return kn_fail(KILN_ERR_NOMEM, "out of memory binding %d nodes", g->n_nodes);
    int next = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        s->first_arg[i] = next;
        for (int k = 0; k < n->n_in; k++)
            s->args[next++] = n->in[k] >= 0 ? &s->tensors[n->in[k]] : NULL;
        for (int k = 0; k < n->n_out; k++)
            s->args[next++] = &s->tensors[n->out[k]];
    }
    return KILN_OK;
}

/* "Conv", "Conv+Relu", "MatMul+Add+Gelu": the op with what the optimizer fused into it. */
static const char *node_label(kn_graph *view, const kn_node *n) {
    const char *act = kn_node_string(n, "kn_activation", NULL);
    bool bias = n->op == &kn_op_matmul && n->n_in > 2 && n->in[2] >= 0;
    if (!act && !bias)
        return n->op->name;
    char label[128];
    snprintf(label, sizeof label, "%s%s%s%s", n->op->name, bias ? "+Add" : "", act ? "+" : "",
             act ? act : "");
    return kn_arena_strdup(&view->arena, label);
}

/* Labels per node and the distinct labels, for the profile by op. */
static kiln_status make_profile(kiln_session *s) {
    kn_graph *g = &s->graph;
    size_t n = (size_t)(g->n_nodes ? g->n_nodes : 1);
    s->node_ns = calloc(n, sizeof(int64_t));
    s->labels = calloc(n, sizeof(char *));
    s->group_of = calloc(n, sizeof(int));
    s->group_first = calloc(n, sizeof(int));
    if (!s->node_ns || !s->labels || !s->group_of || !s->group_first)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for the profile of %d nodes", g->n_nodes);
    for (int i = 0; i < g->n_nodes; i++) {
        if (!(s->labels[i] = node_label(g, &g->nodes[i])))
            return kn_fail(KILN_ERR_NOMEM, "out of memory naming node '%s'", g->nodes[i].name);
        int group = 0;
        while (group < s->n_groups && strcmp(s->labels[s->group_first[group]], s->labels[i]) != 0)
            group++;
        if (group == s->n_groups)
            s->group_first[s->n_groups++] = i;
        s->group_of[i] = group;
    }
    return KILN_OK;
}

/* Whether some node sizes its outputs when it runs; such a session keeps their upper bounds. */
static kiln_status find_sized_at_run(kiln_session *s) {
    const kn_graph *g = &s->graph;
    for (int i = 0; i < g->n_nodes; i++)
        s->sized_at_run |= g->nodes[i].op->sizes_at_run;
    if (!s->sized_at_run)
        return KILN_OK;
    s->bound_bytes = calloc((size_t)(g->n_values ? g->n_values : 1), sizeof(size_t));
    if (!s->bound_bytes)
        return kn_fail(KILN_ERR_NOMEM, "out of memory creating a session of %d values", g->n_values);
    return KILN_OK;
}

/* "input (7, 1, 28, 28), mask (7, 28)" for messages. */
static void describe_inputs(const kiln_session *s, char *buf, size_t size) {
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < s->graph.n_inputs && used < size; i++) {
        char shape[96];
        int n = snprintf(buf + used, size - used, "%s%s %s", i ? ", " : "",
                         s->graph.values[s->graph.inputs[i]].name,
                         kn_shape_str(&s->input_shapes[i], shape, sizeof shape));
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

/* ---- data-dependent shapes --------------------------------------------------------------------- */

/* Bytes of input i at its current shape. */
static size_t input_bytes(const kiln_session *s, int i) {
    size_t bytes = 0;
    kn_shape_bytes(&s->input_shapes[i], s->graph.values[s->graph.inputs[i]].dtype, &bytes);
    return bytes;
}

/* Input i's own buffer (data-dependent sessions), grown to at least `bytes`. */
static kiln_status grow_input(kiln_session *s, int i, size_t bytes) {
    if (s->input_buf[i] && bytes <= s->input_cap[i])
        return KILN_OK;
    void *grown = realloc(s->input_buf[i], bytes ? bytes : 1);
    if (!grown)
        return kn_fail(KILN_ERR_NOMEM, "no memory for the %zu bytes of input '%s'", bytes,
                       s->graph.values[s->graph.inputs[i]].name);
    s->input_buf[i] = grown;
    s->input_cap[i] = bytes ? bytes : 1;
    return KILN_OK;
}

/* Whether input i can decide shapes: rank 0 or 1, few elements, a dtype shape inference computes. */
static bool may_decide_shapes(const kiln_session *s, int i) {
    kn_dtype dtype = s->graph.values[s->graph.inputs[i]].dtype;
    return s->input_shapes[i].ndim <= 1 && kn_shape_numel(&s->input_shapes[i]) <= KN_INFER_DATA_MAX_ELEMS &&
           (dtype == KN_I64 || dtype == KN_I32 || dtype == KN_F32 || dtype == KN_BOOL);
}

/* After shape inference failed without input data: the session's shapes depend on the data of the
 * inputs that can decide them, if it has any. */
static bool become_dynamic(kiln_session *s) {
    unsigned mask = 0;
    for (int i = 0; i < s->graph.n_inputs; i++)
        mask |= may_decide_shapes(s, i) ? 1u << i : 0;
    s->dynamic = mask != 0;
    s->shape_inputs = mask;
    return s->dynamic;
}

/* Whether the shape inputs hold the values the plan was made for. */
static bool key_matches(const kiln_session *s) {
    size_t at = 0;
    for (int i = 0; i < s->graph.n_inputs; i++) {
        if (!(s->shape_inputs >> i & 1u))
            continue;
        size_t n = input_bytes(s, i);
        if (at + n > s->key_bytes || (n && memcmp(s->key + at, s->input_buf[i], n) != 0))
            return false;
        at += n;
    }
    return at == s->key_bytes;
}

/* Keeps the shape inputs' values as the key of the plan made for them. */
static kiln_status make_key(kiln_session *s) {
    size_t total = 0;
    for (int i = 0; i < s->graph.n_inputs; i++)
        total += s->shape_inputs >> i & 1u ? input_bytes(s, i) : 0;
    unsigned char *key = realloc(s->key, total ? total : 1);
    if (!key)
        return kn_fail(KILN_ERR_NOMEM, "out of memory keeping the shape inputs' values");
    s->key = key;
    s->key_bytes = 0;
    for (int i = 0; i < s->graph.n_inputs; i++) {
        if (!(s->shape_inputs >> i & 1u))
            continue;
        size_t n = input_bytes(s, i);
        if (n)
            memcpy(s->key + s->key_bytes, s->input_buf[i], n);
        s->key_bytes += n;
    }
    return KILN_OK;
}

/* Binds each shape input's data for shape inference; every one must have been set. */
static kiln_status bind_shape_data(kiln_session *s) {
    kn_graph *g = &s->graph;
    for (int i = 0; i < g->n_inputs; i++) {
        if (!(s->shape_inputs >> i & 1u))
            continue;
        kn_value *v = &g->values[g->inputs[i]];
        if (!s->input_set[i])
            return kn_fail(KILN_ERR_INVALID_ARG, "input '%s' decides shapes (the model reads its values to size "
                           "what follows): set it (kiln_session_set_input) before running or asking for output "
                           "shapes", v->name);
        v->data = s->input_buf[i];
        v->data_from_inference = true;
    }
    return KILN_OK;
}

/* ---- shapes from values computed in the run ------------------------------------------------------ */

enum { STAGE_SLOT = KN_INFER_DATA_MAX_ELEMS * 8 }; /* bytes of one value in a stage's key */

/* Whether value v is small data a run computes that shape inference could read once known: an
 * activation of rank 0 or 1, at most KN_INFER_DATA_MAX_ELEMS elements, of a dtype shape inference
 * computes with, whose data inference does not know. */
static bool run_value_may_decide(const kn_graph *g, int v) {
    const kn_value *val = &g->values[v];
    return val->kind == KN_VALUE_ACT && !val->data_from_inference && val->shape.ndim <= 1 &&
           kn_shape_numel(&val->shape) <= KN_INFER_DATA_MAX_ELEMS &&
           (val->dtype == KN_I64 || val->dtype == KN_I32 || val->dtype == KN_F32 || val->dtype == KN_BOOL);
}

/* Whether node j reads such a value. */
static bool reads_run_value(const kn_graph *g, int j) {
    const kn_node *n = &g->nodes[j];
    for (int k = 0; k < n->n_in; k++)
        if (n->in[k] >= 0 && run_value_may_decide(g, n->in[k]))
            return true;
    return false;
}

/* Forgets the stages from index `from` on; their values lose the data bound for inference. */
static void drop_stages(kiln_session *s, int from) {
    for (int t = from; t < s->n_stages; t++) {
        for (int k = 0; k < s->stage[t].n_values; k++) {
            kn_value *v = &s->graph.values[s->stage[t].value[k]];
            v->data = NULL;
            v->data_from_inference = false;
        }
        free(s->stage[t].key);
        s->stage[t] = (kn_stage){0};
    }
    if (from < s->n_stages)
        s->n_stages = from;
}

/* Shape inference stopped at node j for want of values the run computes before it: j becomes a stage,
 * whose values are the small ones computed before j that j or a later node reads. The outputs of j and
 * of every node after it hold no elements until a run gets there (enter_stage). */
static kiln_status add_stage(kiln_session *s, int j) {
    kn_graph *g = &s->graph;
    if (s->n_stages == KN_MAX_STAGES)
        return kn_fail(KILN_ERR_UNSUPPORTED, "more than %d nodes whose shapes follow values computed in the run",
                       KN_MAX_STAGES);
    kn_stage *t = &s->stage[s->n_stages];
    *t = (kn_stage){.node = j};
    for (int i = j; i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        for (int k = 0; k < n->n_in; k++) {
            int v = n->in[k];
            bool listed = false;
            for (int m = 0; v >= 0 && m < t->n_values; m++)
                listed |= t->value[m] == v;
            if (v < 0 || listed || g->values[v].producer >= j || !run_value_may_decide(g, v))
                continue;
            if (t->n_values == (int)(sizeof t->value / sizeof t->value[0]))
                return kn_fail(KILN_ERR_UNSUPPORTED, "node '%s' (%s) and those after it read more than %d values "
                               "computed in the run to size their outputs", g->nodes[j].name, g->nodes[j].op->name,
                               t->n_values);
            t->value[t->n_values++] = v;
        }
    }
    t->key = calloc((size_t)(t->n_values ? t->n_values : 1), STAGE_SLOT);
    if (!t->key)
        return kn_fail(KILN_ERR_NOMEM, "out of memory keeping the values node '%s' reads", g->nodes[j].name);
    s->n_stages++;
    for (int i = j; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_out; k++) {
            kn_value *y = &g->values[g->nodes[i].out[k]];
            y->shape = kn_shape_of(1, (int64_t[]){0});
            y->data = y->data_from_inference ? NULL : y->data;
            y->data_from_inference = false;
        }
    return KILN_OK;
}

/* Shape inference from node `first` on. With `defer`, a node that fails for want of small values the
 * run computes before it becomes a stage, and inference stops there. */
static kiln_status infer_from(kiln_session *s, int first, bool defer) {
    kn_graph *g = &s->graph;
    for (int j = first; j < g->n_nodes; j++) {
        kiln_status st = kn_graph_infer_node(g, j);
        if (st == KILN_OK)
            continue;
        if (defer && st == KILN_ERR_UNSUPPORTED && reads_run_value(g, j)) {
            kn_error_clear();
            return add_stage(s, j);
        }
        kn_error_prefix("node '%s' (%s): ", g->nodes[j].name, g->nodes[j].op->name);
        return st;
    }
    return KILN_OK;
}

/* Whether value v's shape waits for a stage no run has reached yet. */
static bool shape_pending(const kiln_session *s, int v) {
    int producer = s->graph.values[v].producer;
    for (int t = 0; t < s->n_stages; t++)
        if (!s->stage[t].bound && producer >= s->stage[t].node)
            return true;
    return false;
}

/* ---- planning ---------------------------------------------------------------------------------- */

/* Keeps the upper bound that shape inference gave each output of the nodes from `first` on whose op
 * sizes its outputs when it runs. */
static void keep_bounds(kiln_session *s, int first) {
    const kn_graph *g = &s->graph;
    for (int i = first; s->sized_at_run && i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        for (int k = 0; n->op->sizes_at_run && k < n->n_out; k++) {
            size_t bytes = 0;
            kn_shape_bytes(&g->values[n->out[k]].shape, g->values[n->out[k]].dtype, &bytes);
            s->bound_bytes[n->out[k]] = bytes;
        }
    }
}

/* A new activation arena of `bytes`, zeroed; the old one, left at *old, is the caller's to free. */
static kiln_status new_arena(kiln_session *s, size_t bytes, unsigned char **old) {
    *old = s->arena;
    s->arena = kn_aligned_alloc(bytes);
    s->arena_capacity = s->arena ? bytes : 0;
    if (!s->arena)
        return kn_fail(KILN_ERR_NOMEM, "no memory for the %zu-byte activation arena", bytes);
    memset(s->arena, 0, bytes);
    return KILN_OK;
}

/* Whether value v, computed by node `ran` or before it, is still read after it: by a later node, or
 * as a graph output. */
static bool read_after(const kn_graph *g, int v, int ran) {
    for (int o = 0; o < g->n_outputs; o++)
        if (g->outputs[o] == v)
            return true;
    for (int i = ran + 1; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_in; k++)
            if (g->nodes[i].in[k] == v)
                return true;
    return false;
}

/* Copies the inputs (the caller's data, which later runs read again unless it sets them anew) and the
 * values a run computed up to node `ran` that the rest of the run reads, from their places in `old`
 * (the previous plan's arena, at `old_offset`) to their places in the new one. Each keeps the shape
 * its tensor has: an output sized at run its actual shape. Inputs of a data-dependent session live in
 * buffers of their own and stay there. */
static void carry_values(kiln_session *s, const unsigned char *old, const int64_t *old_offset, int ran) {
    const kn_graph *g = &s->graph;
    for (int v = 0; v < g->n_values; v++) {
        const kn_value *val = &g->values[v];
        bool keep = (val->kind == KN_VALUE_INPUT && !s->dynamic) ||
                    (val->kind == KN_VALUE_ACT && val->producer <= ran && read_after(g, v, ran));
        size_t bytes = 0;
        if (!keep || old_offset[v] < 0 || s->plan.offset[v] < 0 ||
            !kn_shape_bytes(&s->tensors[v].shape, s->tensors[v].dtype, &bytes) || !bytes)
            continue;
        memcpy(s->arena + s->plan.offset[v], old + old_offset[v], bytes);
    }
}

/* Memory plan, arena, scratch and tensors for the graph's current shapes. ran < 0: before a run; else
 * in the middle of one, after node `ran`, whose computed values the new arena takes over. */
static kiln_status lay_out(kiln_session *s, int ran) {
    kn_graph *g = &s->graph;
    kn_plan old_plan = s->plan;
    memset(&s->plan, 0, sizeof s->plan);
    kiln_status st = kn_plan_make(g, true, s->bound_bytes, &s->plan);
    if (st != KILN_OK) {
        kn_plan_free(&old_plan);
        return st;
    }
    size_t workspace = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        size_t bytes = n->op->workspace ? n->op->workspace(g, n) : 0;
        workspace = bytes > workspace ? bytes : workspace;
    }
    /* Checked before anything is allocated: a model file declares its sizes, and an embedding program
     * may bound what any model can make it allocate. */
    if (s->memory_limit && (workspace > s->memory_limit || s->plan.arena_bytes > s->memory_limit - workspace))
        st = kn_fail(KILN_ERR_NOMEM, "the session needs %zu bytes at these input shapes (activations %zu, op "
                     "scratch %zu), more than its memory limit of %zu", s->plan.arena_bytes + workspace,
                     s->plan.arena_bytes, workspace, s->memory_limit);
    if (st == KILN_OK && workspace && !kn_op_scratch(&s->ctx, workspace))
        st = kn_fail(KILN_ERR_NOMEM, "no memory for %zu bytes of op workspace", workspace);
    s->workspace_bytes = workspace;

    // The arena only grows: going back to a smaller batch reuses it. In a run, values move to a new one.
    unsigned char *old = NULL;
    if (st == KILN_OK && (ran >= 0 || s->plan.arena_bytes > s->arena_capacity)) {
        size_t bytes = s->plan.arena_bytes > s->arena_capacity ? s->plan.arena_bytes : s->arena_capacity;
        st = new_arena(s, bytes, &old);
    }
    if (st == KILN_OK && ran >= 0)
        carry_values(s, old, old_plan.offset, ran);
    free(old);
    kn_plan_free(&old_plan);
    KN_TRY(st);
    for (int v = 0; v < g->n_values; v++) {
        const kn_value *val = &g->values[v];
        void *data = s->plan.offset[v] >= 0 ? s->arena + s->plan.offset[v] : val->data;
        s->tensors[v] = (kn_tensor){val->shape, val->dtype, data};
    }
    for (int i = 0; s->dynamic && i < g->n_inputs; i++) {
        KN_TRY(grow_input(s, i, input_bytes(s, i)));
        s->tensors[g->inputs[i]].data = s->input_buf[i];
    }
    if (s->dynamic)
        KN_TRY(make_key(s));
    s->planned = true;
    s->plan_count++;
    return KILN_OK;
}

/* Shapes, memory plan, arena, scratch and tensors for the current input shapes (and, in a
 * data-dependent session, the shape inputs' current values). */
static kiln_status plan_session(kiln_session *s) {
    kn_graph *g = &s->graph;
    kn_threads_set(s->threads); /* workspaces hold per-thread buffers: size them for this count */
    s->planned = false;
    s->has_run = false;
    drop_stages(s, 0);
    for (int i = 0; i < g->n_inputs; i++)
        g->values[g->inputs[i]].shape = s->input_shapes[i];
    if (s->dynamic)
        KN_TRY(bind_shape_data(s));
    /* Small graph inputs that may decide shapes are bound first (become_dynamic); only then do values
     * computed in the run make stages. */
    bool shape_inputs = false;
    for (int i = 0; i < g->n_inputs; i++)
        shape_inputs |= may_decide_shapes(s, i);
    kiln_status st = infer_from(s, 0, s->dynamic || !shape_inputs);
    if (st != KILN_OK && !s->dynamic && become_dynamic(s))
        return bind_shape_data(s); /* no input has data yet: says which to set */
    if (st != KILN_OK) {
        char inputs[512];
        describe_inputs(s, inputs, sizeof inputs);
        kn_error_prefix("with inputs %s: ", inputs);
        return st;
    }
    keep_bounds(s, 0);
    return lay_out(s, -1);
}

/* After node i, whose op sized its outputs as it ran, left their actual shapes in its output tensors:
 * when they are not the shapes planned for, the nodes after it are inferred again from them and the
 * memory planned again, carrying over what the run computed so far. */
static kiln_status follow_run_shapes(kiln_session *s, int i) {
    kn_graph *g = &s->graph;
    const kn_node *n = &g->nodes[i];
    bool changed = false;
    for (int k = 0; k < n->n_out; k++) {
        kn_value *y = &g->values[n->out[k]];
        changed |= !kn_shape_equal(&y->shape, &s->tensors[n->out[k]].shape);
        y->shape = s->tensors[n->out[k]].shape;
    }
    if (!changed)
        return KILN_OK;
    int later = 0; /* the stages after node i are found again */
    while (later < s->n_stages && s->stage[later].node <= i)
        later++;
    drop_stages(s, later);
    kiln_status st = infer_from(s, i + 1, true);
    if (st != KILN_OK) {
        kn_error_prefix("at the shapes node '%s' (%s) gave: ", n->name, n->op->name);
        s->planned = false;
        return st;
    }
    keep_bounds(s, i + 1);
    st = lay_out(s, i);
    if (st != KILN_OK)
        s->planned = false;
    return st;
}

/* Before node t->node, a stage: the values it reads were computed by this run. When they are the ones
 * the shapes from there on were inferred for, the run goes on; else they are bound for inference (each
 * value's data points at its slot of the key), the nodes from there on inferred again, and the memory
 * planned again, carrying over what the run computed so far. */
static kiln_status enter_stage(kiln_session *s, int index) {
    kn_graph *g = &s->graph;
    kn_stage *t = &s->stage[index];
    bool same = t->bound;
    for (int k = 0; same && k < t->n_values; k++) {
        const kn_tensor *x = &s->tensors[t->value[k]];
        size_t bytes = 0;
        kn_shape_bytes(&x->shape, x->dtype, &bytes);
        same = !bytes || memcmp(t->key + (size_t)k * STAGE_SLOT, x->data, bytes) == 0;
    }
    if (same)
        return KILN_OK;
    drop_stages(s, index + 1);
    for (int k = 0; k < t->n_values; k++) {
        const kn_tensor *x = &s->tensors[t->value[k]];
        size_t bytes = 0;
        kn_shape_bytes(&x->shape, x->dtype, &bytes);
        unsigned char *slot = t->key + (size_t)k * STAGE_SLOT;
        if (bytes)
            memcpy(slot, x->data, bytes);
        g->values[t->value[k]].data = slot;
        g->values[t->value[k]].data_from_inference = true;
    }
    t->bound = true;
    kiln_status st = infer_from(s, t->node, true);
    if (st == KILN_OK) {
        keep_bounds(s, t->node);
        st = lay_out(s, t->node - 1);
    }
    if (st != KILN_OK)
        s->planned = false;
    return st;
}

/* The stage at node i, or -1. */
static int stage_at(const kiln_session *s, int i) {
    for (int t = 0; t < s->n_stages; t++)
        if (s->stage[t].node == i)
            return t;
    return -1;
}

/* Plans when the input shapes, or the values of a data-dependent session's shape inputs, changed. */
static kiln_status ensure_planned(kiln_session *s) {
    if (s->planned && s->dynamic && !key_matches(s))
        s->planned = false;
    return s->planned ? KILN_OK : plan_session(s);
}

kiln_status kiln_session_create(const kiln_model *model, const kiln_session_options *options,
                                kiln_session **session) {
    if (!session)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_session_create: session is NULL");
    *session = NULL;
    if (!model)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_session_create: model is NULL");
    const kiln_session_options *o = options ? options : &default_options;
    kiln_session *s = calloc(1, sizeof *s);
    if (!s)
        return kn_fail(KILN_ERR_NOMEM, "out of memory creating a session");
    kn_model_retain(model);
    s->model = model;
    s->source = kn_model_graph(model, o->optimize);
    s->threads = o->threads;
    s->profiling = o->profiling;
    s->memory_limit = o->memory_limit;
    bool open_dims = false;
    kiln_status st = make_view(s, &open_dims);
    if (st == KILN_OK)
        st = bind_arguments(s);
    if (st == KILN_OK)
        st = make_profile(s);
    if (st == KILN_OK)
        st = find_sized_at_run(s);
    // With every input dimension known the plan is made now, so that a model that cannot run fails here;
    // with open ones the caller resizes first.
    if (st == KILN_OK && !open_dims)
        st = plan_session(s);
    if (st != KILN_OK && s->dynamic)
        st = KILN_OK; /* the shapes wait for the values of the inputs that decide them */
    if (st != KILN_OK) {
        kiln_session_free(s);
        return st;
    }
    *session = s;
    return KILN_OK;
}

void kiln_session_free(kiln_session *session) {
    if (!session)
        return;
    drop_stages(session, 0); /* first: it clears the values' bindings */
    free(session->graph.values);
    kn_arena_free(&session->graph.arena);
    kn_plan_free(&session->plan);
    free(session->arena);
    kn_op_ctx_release(&session->ctx);
    free(session->tensors);
    free(session->args);
    free(session->first_arg);
    free(session->node_ns);
    free(session->labels);
    free(session->group_of);
    free(session->group_first);
    for (int i = 0; i < 16; i++)
        free(session->input_buf[i]);
    free(session->key);
    free(session->bound_bytes);
    // The session's reference; a model is always allocated writable.
    kiln_model_free((kiln_model *)session->model);
    free(session);
}

/* ---- inputs and outputs ------------------------------------------------------------------------ */

static kiln_status check_index(const kiln_session *s, int index, bool input, const char *fn) {
    if (!s)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s: session is NULL", fn);
    int count = input ? s->graph.n_inputs : s->graph.n_outputs;
    if (index < 0 || index >= count)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s: %s %d does not exist (the model has %d)", fn,
                       input ? "input" : "output", index, count);
    return KILN_OK;
}

static int value_of(const kiln_session *s, int index, bool input) {
    return input ? s->graph.inputs[index] : s->graph.outputs[index];
}

int kiln_session_input_count(const kiln_session *session) { return session ? session->graph.n_inputs : 0; }

int kiln_session_output_count(const kiln_session *session) { return session ? session->graph.n_outputs : 0; }

static const char *io_name(const kiln_session *s, int index, bool input, const char *fn) {
    if (check_index(s, index, input, fn) != KILN_OK)
        return NULL;
    return s->graph.values[value_of(s, index, input)].name;
}

const char *kiln_session_input_name(const kiln_session *session, int index) {
    return io_name(session, index, true, "kiln_session_input_name");
}

const char *kiln_session_output_name(const kiln_session *session, int index) {
    return io_name(session, index, false, "kiln_session_output_name");
}

static int io_index(const kiln_session *s, const char *name, bool input) {
    const char *what = input ? "input" : "output";
    if (!s || !name) {
        kn_fail(KILN_ERR_INVALID_ARG, "kiln_session_%s_index: %s is NULL", what, s ? "name" : "session");
        return -1;
    }
    int count = input ? s->graph.n_inputs : s->graph.n_outputs;
    char known[512] = "";
    size_t used = 0;
    for (int i = 0; i < count; i++) {
        const char *n = s->graph.values[value_of(s, i, input)].name;
        if (strcmp(n, name) == 0)
            return i;
        int w = snprintf(known + used, sizeof known - used, "%s'%s'", i ? ", " : "", n);
        if (w > 0 && (size_t)w < sizeof known - used)
            used += (size_t)w;
    }
    kn_fail(KILN_ERR_INVALID_ARG, "the model has no %s named '%s' (its %ss: %s)", what, name, what, known);
    return -1;
}

int kiln_session_input_index(const kiln_session *session, const char *name) {
    return io_index(session, name, true);
}

int kiln_session_output_index(const kiln_session *session, const char *name) {
    return io_index(session, name, false);
}

static kiln_status copy_shape(const kn_shape *shape, int *ndim, int64_t *dims, const char *fn) {
    if (!ndim || !dims)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s: ndim and dims must not be NULL", fn);
    *ndim = shape->ndim;
    memcpy(dims, shape->d, sizeof(int64_t) * (size_t)shape->ndim);
    return KILN_OK;
}

kiln_status kiln_session_input_shape(const kiln_session *session, int index, int *ndim, int64_t *dims) {
    KN_TRY(check_index(session, index, true, "kiln_session_input_shape"));
    return copy_shape(&session->input_shapes[index], ndim, dims, "kiln_session_input_shape");
}

/* An output whose shape waits for values the run computes is known only after a run. */
static kiln_status check_output_known(const kiln_session *s, int index, const char *fn) {
    int v = value_of(s, index, false);
    if (!shape_pending(s, v))
        return KILN_OK;
    return kn_fail(KILN_ERR_INVALID_ARG, "%s: output '%s' is sized by values the model computes as it runs: "
                   "known after kiln_session_run", fn, s->graph.values[v].name);
}

kiln_status kiln_session_output_shape(kiln_session *session, int index, int *ndim, int64_t *dims) {
    KN_TRY(check_index(session, index, false, "kiln_session_output_shape"));
    KN_TRY(ensure_planned(session));
    KN_TRY(check_output_known(session, index, "kiln_session_output_shape"));
    const kn_shape *shape = &session->graph.values[value_of(session, index, false)].shape;
    return copy_shape(shape, ndim, dims, "kiln_session_output_shape");
}

kiln_status kiln_session_input_dtype(const kiln_session *session, int index, kiln_dtype *dtype) {
    KN_TRY(check_index(session, index, true, "kiln_session_input_dtype"));
    if (!dtype)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_session_input_dtype: dtype is NULL");
    *dtype = (kiln_dtype)session->graph.values[value_of(session, index, true)].dtype;
    return KILN_OK;
}

/* Output dtypes, like shapes, come from shape inference: the session plans first. */
kiln_status kiln_session_output_dtype(kiln_session *session, int index, kiln_dtype *dtype) {
    KN_TRY(check_index(session, index, false, "kiln_session_output_dtype"));
    if (!dtype)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_session_output_dtype: dtype is NULL");
    KN_TRY(ensure_planned(session));
    KN_TRY(check_output_known(session, index, "kiln_session_output_dtype"));
    *dtype = (kiln_dtype)session->graph.values[value_of(session, index, false)].dtype;
    return KILN_OK;
}

kiln_status kiln_session_resize_input(kiln_session *session, int index, int ndim, const int64_t *dims) {
    KN_TRY(check_index(session, index, true, "kiln_session_resize_input"));
    const kn_value *in = &session->source->values[session->source->inputs[index]];
    kn_shape declared = kn_graph_input_declared(session->source, index);
    char saved[96];
    kn_shape_str(&declared, saved, sizeof saved);
    if (!dims)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_session_resize_input: dims is NULL");
    if (ndim != in->shape.ndim)
        return kn_fail(KILN_ERR_SHAPE, "input '%s' %s has %d dimensions, got %d", in->name, saved,
                       in->shape.ndim, ndim);
    for (int d = 0; d < ndim; d++) {
        if (dims[d] < 0)
            return kn_fail(KILN_ERR_SHAPE, "input '%s': dimension %d is %lld; a dimension cannot be negative",
                           in->name, d, (long long)dims[d]);
        if (declared.d[d] >= 0 && dims[d] != declared.d[d])
            return kn_fail(KILN_ERR_SHAPE,
                           "input '%s' %s: dimension %d is fixed at %lld by the model, got %lld (only its open "
                           "dimensions, shown as -1, may change)",
                           in->name, saved, d, (long long)declared.d[d], (long long)dims[d]);
    }
    kn_shape shape = kn_shape_of(ndim, dims);
    if (kn_shape_equal(&shape, &session->input_shapes[index]))
        return KILN_OK;
    session->input_shapes[index] = shape;
    session->planned = false;
    session->has_run = false;
    session->input_set[index] = false;
    return KILN_OK;
}

/* The bound tensor of input `index` at the current shapes (planning first). */
static kiln_status planned_input(kiln_session *s, int index, const char *fn, kn_tensor **tensor,
                                 size_t *bytes) {
    KN_TRY(check_index(s, index, true, fn));
    KN_TRY(ensure_planned(s));
    *tensor = &s->tensors[value_of(s, index, true)];
    if (!kn_shape_bytes(&(*tensor)->shape, (*tensor)->dtype, bytes))
        return kn_fail(KILN_ERR_INTERNAL, "%s: a planned input has no size", fn);
    return KILN_OK;
}

/* Whether input `index` lives in a buffer of its own: in a data-dependent session, which it may become
 * here when its shapes cannot be planned without input data. */
static bool own_input_buffer(kiln_session *s, int index, const char *fn, kiln_status *st) {
    *st = check_index(s, index, true, fn);
    if (*st != KILN_OK)
        return false;
    if (!s->dynamic) {
        *st = ensure_planned(s);
        if (*st != KILN_OK && s->dynamic)
            *st = KILN_OK; /* it just became data-dependent: taking data needs no plan */
    }
    return *st == KILN_OK && s->dynamic;
}

/* kiln_session_set_input in a data-dependent session: into the input's own buffer, no plan needed. */
static kiln_status set_own_input(kiln_session *s, int index, kiln_dtype dtype, const void *data, size_t bytes) {
    const kn_value *v = &s->graph.values[value_of(s, index, true)];
    size_t need = input_bytes(s, index);
    if (!data)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_session_set_input: data for input '%s' is NULL", v->name);
    if ((int)dtype != (int)v->dtype)
        return kn_fail(KILN_ERR_INVALID_ARG, "input '%s' is %s, got %s data", v->name, kn_dtype_name(v->dtype),
                       kiln_dtype_name(dtype));
    if (bytes != need) {
        char shape[96];
        return kn_fail(KILN_ERR_SHAPE, "input '%s' %s %s takes %zu bytes, got %zu (resize it for another shape)",
                       v->name, kn_shape_str(&s->input_shapes[index], shape, sizeof shape),
                       kn_dtype_name(v->dtype), need, bytes);
    }
    KN_TRY(grow_input(s, index, need));
    if (need)
        memcpy(s->input_buf[index], data, need);
    s->input_set[index] = true;
    return KILN_OK;
}

kiln_status kiln_session_set_input(kiln_session *session, int index, kiln_dtype dtype, const void *data,
                                   size_t bytes) {
    kiln_status own;
    if (own_input_buffer(session, index, "kiln_session_set_input", &own))
        return set_own_input(session, index, dtype, data, bytes);
    KN_TRY(own);
    kn_tensor *t;
    size_t need;
    KN_TRY(planned_input(session, index, "kiln_session_set_input", &t, &need));
    const char *name = session->graph.values[value_of(session, index, true)].name;
    if (!data)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_session_set_input: data for input '%s' is NULL", name);
    if ((int)dtype != (int)t->dtype)
        return kn_fail(KILN_ERR_INVALID_ARG, "input '%s' is %s, got %s data", name, kn_dtype_name(t->dtype),
                       kiln_dtype_name(dtype));
    if (bytes != need) {
        char shape[96];
        return kn_fail(KILN_ERR_SHAPE,
                       "input '%s' %s %s takes %zu bytes, got %zu (resize it for another batch)", name,
                       kn_shape_str(&t->shape, shape, sizeof shape), kn_dtype_name(t->dtype), need, bytes);
    }
    memcpy(t->data, data, bytes);
    return KILN_OK;
}

kiln_status kiln_session_input_data(kiln_session *session, int index, void **data, size_t *bytes) {
    kiln_status own;
    if (own_input_buffer(session, index, "kiln_session_input_data", &own)) {
        if (!data)
            return kn_fail(KILN_ERR_INVALID_ARG, "kiln_session_input_data: data is NULL");
        size_t need = input_bytes(session, index);
        KN_TRY(grow_input(session, index, need));
        session->input_set[index] = true; /* the caller writes it in place */
        *data = session->input_buf[index];
        if (bytes)
            *bytes = need;
        return KILN_OK;
    }
    KN_TRY(own);
    kn_tensor *t;
    size_t size;
    KN_TRY(planned_input(session, index, "kiln_session_input_data", &t, &size));
    if (!data)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_session_input_data: data is NULL");
    *data = t->data;
    if (bytes)
        *bytes = size;
    return KILN_OK;
}

kiln_status kiln_session_output(const kiln_session *session, int index, const void **data, size_t *bytes) {
    KN_TRY(check_index(session, index, false, "kiln_session_output"));
    if (!data)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_session_output: data is NULL");
    *data = NULL;
    if (!session->has_run)
        return kn_fail(KILN_ERR_INVALID_ARG,
                       "output '%s' has no value: kiln_session_run has not run since the session was "
                       "created or its inputs resized",
                       session->graph.values[value_of(session, index, false)].name);
    const kn_tensor *t = &session->tensors[value_of(session, index, false)];
    *data = t->data;
    if (bytes && !kn_shape_bytes(&t->shape, t->dtype, bytes))
        return kn_fail(KILN_ERR_INTERNAL, "kiln_session_output: a planned output has no size");
    return KILN_OK;
}

/* ---- running ----------------------------------------------------------------------------------- */

kiln_status kiln_session_run(kiln_session *session) {
    if (!session)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_session_run: session is NULL");
    kiln_session *s = session;
    KN_TRY(ensure_planned(s));
    kn_threads_set(s->threads);
    s->has_run = false;
    s->ctx.training = false;
    const kn_graph *g = &s->graph;
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        kn_tensor **args = s->args + s->first_arg[i];
        int stage = stage_at(s, i);
        if (stage >= 0)
            KN_TRY(enter_stage(s, stage));
        kn_op_call call = {.node = n, .in = args, .out = args + n->n_in, .ctx = &s->ctx};
        s->ctx.node_index = i;
        int64_t start = s->profiling ? kn_nanoseconds_now() : 0;
        kiln_status st = n->op->forward(&call);
        if (s->profiling)
            s->node_ns[i] += kn_nanoseconds_now() - start;
        if (st != KILN_OK) {
            kn_error_prefix("node '%s' (%s): ", n->name, n->op->name);
            return st;
        }
        if (n->op->sizes_at_run)
            KN_TRY(follow_run_shapes(s, i));
    }
    s->profiled_runs += s->profiling;
    s->has_run = true;
    return KILN_OK;
}

/* ---- memory and profile ------------------------------------------------------------------------ */

kiln_status kiln_session_memory(kiln_session *session, kiln_memory_info *info) {
    if (!session || !info)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_session_memory: %s is NULL", session ? "info" : "session");
    KN_TRY(ensure_planned(session));
    const kn_graph *g = &session->graph;
    size_t weights = 0;
    for (int v = 0; v < g->n_values; v++) {
        size_t bytes;
        if (g->values[v].data && g->values[v].kind != KN_VALUE_ACT && g->values[v].kind != KN_VALUE_INPUT &&
            kn_shape_bytes(&g->values[v].shape, g->values[v].dtype, &bytes))
            weights += bytes;
    }
    *info = (kiln_memory_info){
        .arena_bytes = session->plan.arena_bytes,
        .naive_bytes = session->plan.naive_bytes,
        .workspace_bytes = session->workspace_bytes,
        .weight_bytes = weights,
    };
    return KILN_OK;
}

int kiln_session_profile_count(const kiln_session *session, kiln_profile_by by) {
    if (!session)
        return 0;
    return by == KILN_PROFILE_BY_OP ? session->n_groups : session->graph.n_nodes;
}

static int64_t node_flops(const kiln_session *s, int i) {
    const kn_node *n = &s->graph.nodes[i];
    return s->planned && n->op->flops ? n->op->flops(&s->graph, n) : 0;
}

kiln_status kiln_session_profile_entry(const kiln_session *session, kiln_profile_by by, int index,
                                       kiln_profile_entry *entry) {
    int count = kiln_session_profile_count(session, by);
    if (!session || !entry)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_session_profile_entry: %s is NULL",
                       session ? "entry" : "session");
    if (index < 0 || index >= count)
        return kn_fail(KILN_ERR_INVALID_ARG, "profile entry %d does not exist (there are %d)", index, count);
    const kiln_session *s = session;
    *entry = (kiln_profile_entry){.runs = s->profiled_runs};
    if (by == KILN_PROFILE_BY_NODE) {
        entry->name = s->graph.nodes[index].name;
        entry->op = s->labels[index];
        entry->nodes = 1;
        entry->seconds = (double)s->node_ns[index] * 1e-9;
        entry->flops = node_flops(s, index);
        return KILN_OK;
    }
    entry->name = entry->op = s->labels[s->group_first[index]];
    for (int i = 0; i < s->graph.n_nodes; i++) {
        if (s->group_of[i] != index)
            continue;
        entry->nodes++;
        entry->seconds += (double)s->node_ns[i] * 1e-9;
        entry->flops = kn_count_add(entry->flops, node_flops(s, i));
    }
    return KILN_OK;
}

void kiln_session_profile_reset(kiln_session *session) {
    if (!session)
        return;
    memset(session->node_ns, 0, sizeof(int64_t) * (size_t)session->graph.n_nodes);
    session->profiled_runs = 0;
}

/* ---- internal ---------------------------------------------------------------------------------- */

const kn_graph *kn_session_graph(kiln_session *session) {
    return ensure_planned(session) == KILN_OK ? &session->graph : NULL;
}

const void *kn_session_arena(const kiln_session *session) { return session->arena; }

const void *kn_session_scratch(const kiln_session *session) { return session->ctx.scratch; }

int kn_session_plan_count(const kiln_session *session) { return session->plan_count; }

bool kn_session_shapes_from_values(const kiln_session *session) { return session->dynamic; }

kn_output_shaping kn_session_output_shaping(kiln_session *session, int index) {
    if (check_index(session, index, false, "kn_session_output_shaping") != KILN_OK ||
        ensure_planned(session) != KILN_OK)
        return KN_OUTPUT_PLANNED;
    const kn_graph *g = &session->graph;
    int v = value_of(session, index, false);
    if (shape_pending(session, v))
        return KN_OUTPUT_AFTER_RUN;
    /* Whether v is computed from an output of an op that sizes it when it runs: a pass in node order. */
    bool *from_run = calloc((size_t)(g->n_values ? g->n_values : 1), sizeof(bool));
    if (!from_run)
        return KN_OUTPUT_PLANNED;
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        bool tainted = n->op->sizes_at_run;
        for (int k = 0; k < n->n_in; k++)
            tainted |= n->in[k] >= 0 && from_run[n->in[k]];
        for (int k = 0; k < n->n_out; k++)
            from_run[n->out[k]] = tainted;
    }
    bool may_change = from_run[v];
    free(from_run);
    return may_change ? KN_OUTPUT_RUN_MAY_CHANGE : KN_OUTPUT_PLANNED;
}
