/* Sessions: one model graph bound to the buffers of one run, and the executor that runs it.
 *
 * A session keeps its own copy of the graph's value table (the shapes of its current inputs) over the
 * model's nodes, names and weights, which it only reads: many sessions share one model. When input
 * shapes change, the session infers the shapes again, plans the memory (runtime/plan.h), grows its
 * arena and the ops' scratch to what the plan and the ops' `workspace` functions ask for, and points
 * every tensor at its place. A run then calls each node's forward on those tensors, in order, and
 * allocates nothing.
 *
 * The plan cache: what follows the input shapes (and the shape inputs' values, below) - the value
 * table as inferred, the memory plan, the bounds and the stages - is one kn_planned, and a session
 * keeps KN_PLAN_CACHE of them, keyed by those shapes and values. Inputs that change to a key the cache
 * holds make its plan current again: the tensors are pointed at its places, nothing is inferred,
 * planned or allocated. Another key is planned into a free entry or over the least recently used. All
 * plans share the arena and the op scratch, which only grow, so each fits in them.
 *
 * Shapes that depend on input DATA: a model may take a Reshape target, Slice bounds, Resize scales,
 * Range bounds ... as graph inputs. When shape inference fails without input data, the session becomes
 * data-dependent: every input then lives in a buffer of its own (set without a plan), the small inputs
 * of rank 0 or 1 (at most KN_INFER_DATA_MAX_ELEMS elements: the ones that can decide shapes) are bound
 * for shape inference as data (data_from_inference), and the plan is made for their values. It is kept
 * with a copy of those values (its key); a run or an output getter that finds them changed goes back to
 * the cached plan for the new values, or plans (and may allocate) when there is none.
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
 *
 * Batches split: a batch larger than the thread count whose first nodes each compute every image on its
 * own (Conv, activations, pools, elementwise ops with constants that do not broadcast over the batch:
 * separable) runs those nodes a few images (the thread count) at a time, and the nodes after them once
 * on the whole batch. Run layer after layer on the whole batch, a MobileNet's activations (megabytes
 * per image) leave the caches between layers; a few images at a time, they stay: mobilenet_v2 at batch
 * 32 took 1.45 times as long per image as at batch 1. The later nodes (a classifier's Gemm) keep the
 * whole batch, their matrix products' rows. The plan is made for the whole batch as before, except
 * that the values the first nodes hand on (to later nodes, or as graph outputs) live for the whole run
 * (kn_plan_make_keeping), so that no later group of images writes over them; each group's tensors are
 * the values' slices at their planned offsets, its images' share of each buffer. Split only when the
 * first nodes' largest value holds more than KN_SPLIT_MIN_BYTES, and only in sessions whose shapes are
 * all known when planning (no data-dependent shapes, stages or sizes at run).
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
                   (int)KILN_DTYPE_BF16 == (int)KN_BF16 && (int)KILN_DTYPE_STRING == (int)KN_STRING &&
                   (int)KN_DTYPE_COUNT == 14,
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

/* One cached plan: everything that follows the input shapes and the values of the inputs that decide
 * shapes (its key), so that a session alternating among a few keys plans each once (see the top). */
enum { KN_PLAN_CACHE = 4 };
typedef struct kn_planned {
    bool valid;               /* made for its key and not lost since (a failed plan or re-plan) */
    uint64_t last_used;       /* the session's clock when last made current: the least recent goes first */
    kn_shape input_shapes[16]; /* key: the input shapes */
    unsigned char *key;       /* key, data-dependent sessions: the shape inputs' bytes, key_bytes */
    size_t key_bytes;
    kn_value *values;         /* (n_values) the value table inferred for the key; the graph view's when current */
    kn_plan plan;
    size_t workspace_bytes;
    size_t *bound_bytes;      /* (n_values) bytes of the upper bound of such an op's output; 0 elsewhere */
    /* Shapes from values computed in the run (see the top): the stages, in node order. */
    kn_stage stage[KN_MAX_STAGES];
    int n_stages;
    /* Batches split (see the top): */
    int split_nodes;          /* nodes [0, split_nodes) run split_size images at a time; 0: no split */
    int64_t split_batch;      /* the whole batch */
    int64_t split_size;
    int *split_values;        /* (n_values) the values those nodes read or write batched, n_split_values */
    int n_split_values;
    bool *whole_run;          /* (n_values) values the plan keeps for the whole run */
    /* Per-plan op state (kn_op.prepare): node i's at state_of[i], NULL for ops without it, in `prepared`. */
    const void **state_of;    /* (n_nodes) */
    unsigned char *prepared;  /* 64-byte aligned, prepared_cap bytes, grown only */
    size_t prepared_cap;
} kn_planned;

struct kiln_session {
    const kiln_model *model;  /* one reference held */
    const kn_graph *source;   /* the model graph this session runs */
    kn_graph graph;           /* its view: the current plan's `values` (and arena, for labels), the model's nodes */
    kn_shape input_shapes[16];
    bool planned;             /* cur was made for input_shapes (and the shape inputs' values); tensors bound */
    bool has_run;             /* the outputs hold a run's results for the current plan */
    int plan_count;
    kn_planned cache[KN_PLAN_CACHE]; /* the first n_cached hold value tables */
    int n_cached;
    kn_planned *cur;          /* the plan the tensors are bound for */
    uint64_t clock;
    unsigned char *arena;     /* 64-byte aligned, arena_capacity bytes: every cached plan fits */
    size_t arena_capacity;
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
    /* Shapes known when an op runs (see the top): */
    bool sized_at_run;        /* some node's op has sizes_at_run */
    void **decoded;           /* (n_values) or NULL: packed weights decoded into graph.arena (make_view) */
    /* String tensors (see "Strings" below): */
    char *input_text[16];     /* a string input's strings too long for a kn_string, input_text_bytes[i] */
    size_t input_text_bytes[16];
    const char **output_text[16]; /* a string output as the API hands it out: output_text_cap[i] pointers */
    size_t output_text_cap[16];
};

/* ---- dtypes ------------------------------------------------------------------------------------ */

static bool dtype_valid(kiln_dtype dtype) { return (int)dtype >= 0 && (int)dtype < KN_DTYPE_COUNT; }

const char *kiln_dtype_name(kiln_dtype dtype) {
    return dtype_valid(dtype) ? kn_dtype_name((kn_dtype)dtype) : "?";
}

/* A string element crosses the API as a pointer; inside, it is a kn_string. */
size_t kiln_dtype_size(kiln_dtype dtype) {
    if (dtype == KILN_DTYPE_STRING)
        return sizeof(const char *);
    return dtype_valid(dtype) ? kn_dtype_size((kn_dtype)dtype) : 0;
}

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
 * LowbitGemm; a session of the graph as loaded, whose ops want floats, decodes them once into its own
 * arena, and every cached plan's value table points at them (add_cache_entry). */
static kiln_status decode_packed_weights(kiln_session *s) {
    const kn_graph *src = s->source;
    for (int v = 0; v < src->n_values; v++) {
        const kn_value *x = &src->values[v];
        size_t bytes;
        if (!x->storage || x->data || x->kind == KN_VALUE_INPUT || x->kind == KN_VALUE_ACT)
            continue;
        if (!s->decoded && !(s->decoded = calloc((size_t)src->n_values, sizeof(void *))))
            return kn_fail(KILN_ERR_NOMEM, "out of memory decoding the weights");
        if (!kn_shape_bytes(&x->shape, KN_F32, &bytes) ||
            !(s->decoded[v] = kn_arena_alloc(&s->graph.arena, bytes ? bytes : 1)))
            return kn_fail(KILN_ERR_NOMEM, "out of memory decoding the weight '%s'", x->name);
        kn_storage_decode(x->storage, s->decoded[v]);
    }
    return KILN_OK;
}

static kiln_status make_view(kiln_session *s, bool *open) {
    const kn_graph *src = s->source;
    s->graph = *src;
    memset(&s->graph.arena, 0, sizeof s->graph.arena);
    s->graph.mapping = NULL;
    s->graph.mapping_bytes = 0;
    s->graph.values = NULL; /* each cached plan has its own (add_cache_entry) */
    s->graph.cap_values = src->n_values;
    KN_TRY(decode_packed_weights(s));
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
static void find_sized_at_run(kiln_session *s) {
    const kn_graph *g = &s->graph;
    for (int i = 0; i < g->n_nodes; i++)
        s->sized_at_run |= g->nodes[i].op->sizes_at_run;
}

/* One more cache entry, not yet valid, with a value table of its own: the model's, without the data
 * the model's last shape inference computed (those buffers are the model's; inference gives this table
 * buffers of its own, in the view's arena, and reuses them at every plan made in it). */
static kiln_status add_cache_entry(kiln_session *s) {
    const kn_graph *src = s->source;
    size_t n = (size_t)(src->n_values ? src->n_values : 1);
    kn_planned *e = &s->cache[s->n_cached];
    *e = (kn_planned){0};
    e->values = malloc(sizeof(kn_value) * n);
    e->bound_bytes = s->sized_at_run ? calloc(n, sizeof(size_t)) : NULL;
    if (!e->values || (s->sized_at_run && !e->bound_bytes)) {
        free(e->values);
        free(e->bound_bytes);
        *e = (kn_planned){0};
        return kn_fail(KILN_ERR_NOMEM, "out of memory for a plan of %d values", src->n_values);
    }
    memcpy(e->values, src->values, sizeof(kn_value) * (size_t)src->n_values);
    for (int v = 0; v < src->n_values; v++) {
        if (s->decoded && s->decoded[v])
            e->values[v].data = s->decoded[v];
        if (e->values[v].data_from_inference) {
            e->values[v].data = NULL;
            e->values[v].data_from_inference = false;
        }
    }
    s->n_cached++;
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

/* Whether the shape inputs hold the values plan e was made for; an input not set matches nothing. */
static bool key_matches(const kiln_session *s, const kn_planned *e) {
    size_t at = 0;
    for (int i = 0; i < s->graph.n_inputs; i++) {
        if (!(s->shape_inputs >> i & 1u))
            continue;
        size_t n = input_bytes(s, i);
        if (!s->input_set[i] || n > s->input_cap[i] || at + n > e->key_bytes ||
            (n && memcmp(e->key + at, s->input_buf[i], n) != 0))
            return false;
        at += n;
    }
    return at == e->key_bytes;
}

/* Keeps the shape inputs' values as the key of the plan made for them. */
static kiln_status make_key(kiln_session *s) {
    size_t total = 0;
    for (int i = 0; i < s->graph.n_inputs; i++)
        total += s->shape_inputs >> i & 1u ? input_bytes(s, i) : 0;
    unsigned char *key = realloc(s->cur->key, total ? total : 1);
    if (!key)
        return kn_fail(KILN_ERR_NOMEM, "out of memory keeping the shape inputs' values");
    s->cur->key = key;
    s->cur->key_bytes = 0;
    for (int i = 0; i < s->graph.n_inputs; i++) {
        if (!(s->shape_inputs >> i & 1u))
            continue;
        size_t n = input_bytes(s, i);
        if (n)
            memcpy(s->cur->key + s->cur->key_bytes, s->input_buf[i], n);
        s->cur->key_bytes += n;
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
    for (int t = from; t < s->cur->n_stages; t++) {
        for (int k = 0; k < s->cur->stage[t].n_values; k++) {
            kn_value *v = &s->graph.values[s->cur->stage[t].value[k]];
            v->data = NULL;
            v->data_from_inference = false;
        }
        free(s->cur->stage[t].key);
        s->cur->stage[t] = (kn_stage){0};
    }
    if (from < s->cur->n_stages)
        s->cur->n_stages = from;
}

/* Shape inference stopped at node j for want of values the run computes before it: j becomes a stage,
 * whose values are the small ones computed before j that j or a later node reads. The outputs of j and
 * of every node after it hold no elements until a run gets there (enter_stage). */
static kiln_status add_stage(kiln_session *s, int j) {
    kn_graph *g = &s->graph;
    if (s->cur->n_stages == KN_MAX_STAGES)
        return kn_fail(KILN_ERR_UNSUPPORTED, "more than %d nodes whose shapes follow values computed in the run",
                       KN_MAX_STAGES);
    kn_stage *t = &s->cur->stage[s->cur->n_stages];
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
    s->cur->n_stages++;
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

/* Whether node i's shapes wait for a stage no run has reached yet (see the top). */
static bool node_pending(const kiln_session *s, int i) {
    for (int t = 0; t < s->cur->n_stages; t++)
        if (!s->cur->stage[t].bound && i >= s->cur->stage[t].node)
            return true;
    return false;
}

/* Whether value v's shape waits for a stage no run has reached yet (a graph input's or a constant's,
 * producer -1, never does). */
static bool shape_pending(const kiln_session *s, int v) { return node_pending(s, s->graph.values[v].producer); }

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
            s->cur->bound_bytes[n->out[k]] = bytes;
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
        if (!keep || old_offset[v] < 0 || s->cur->plan.offset[v] < 0 ||
            !kn_shape_bytes(&s->tensors[v].shape, s->tensors[v].dtype, &bytes) || !bytes)
            continue;
        memcpy(s->arena + s->cur->plan.offset[v], old + old_offset[v], bytes);
    }
}

/* Points every tensor at its place in the arena for the current plan, initializers at the model's
 * weights and, in a data-dependent session, each input at its own buffer (grown to its shape: the one
 * allocation, when the caller resized an input without setting it). */
static kiln_status bind_tensors(kiln_session *s) {
    const kn_graph *g = &s->graph;
    for (int v = 0; v < g->n_values; v++) {
        const kn_value *val = &g->values[v];
        void *data = s->cur->plan.offset[v] >= 0 ? s->arena + s->cur->plan.offset[v] : val->data;
        s->tensors[v] = (kn_tensor){val->shape, val->dtype, data};
    }
    for (int i = 0; s->dynamic && i < g->n_inputs; i++) {
        KN_TRY(grow_input(s, i, input_bytes(s, i)));
        s->tensors[g->inputs[i]].data = s->input_buf[i];
    }
    return KILN_OK;
}

/* Node i's call as a run makes it, without the per-plan state. */
static kn_op_call node_call(kiln_session *s, int i) {
    const kn_node *n = &s->graph.nodes[i];
    kn_tensor **args = s->args + s->first_arg[i];
    return (kn_op_call){.node = n, .in = args, .out = args + n->n_in, .ctx = &s->ctx};
}

/* Bytes node i's per-plan state takes in the plan's block, rounded up to the alignment; 0 without one. */
static size_t node_state_bytes(kiln_session *s, int i) {
    const kn_op *op = s->graph.nodes[i].op;
    if (!op->prepare || node_pending(s, i))
        return 0;
    kn_op_call call = node_call(s, i);
    size_t bytes = op->prepared_bytes(&call), rounded = 0;
    return kn_align_up(bytes ? bytes : 1, &rounded) ? rounded : SIZE_MAX;
}

/* Every node's per-plan state (kn_op.prepare) at the shapes the tensors are bound for, into the plan's
 * block: every size asked for once, first, then each state prepared in place. Nodes whose shapes wait
 * for a stage get theirs when a run reaches it (it plans again). */
static kiln_status prepare_nodes(kiln_session *s) {
    const kn_graph *g = &s->graph;
    kn_planned *e = s->cur;
    if (!e->state_of && !(e->state_of = malloc(sizeof(void *) * (size_t)(g->n_nodes ? g->n_nodes : 1))))
        return kn_fail(KILN_ERR_NOMEM, "out of memory for the nodes' prepared states");
    size_t total = 0, *bytes_of = malloc(sizeof(size_t) * (size_t)(g->n_nodes ? g->n_nodes : 1));
    if (!bytes_of)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for the nodes' prepared states");
    for (int i = 0; i < g->n_nodes; i++)
        if (!kn_size_add(total, bytes_of[i] = node_state_bytes(s, i), &total)) {
            free(bytes_of);
            return kn_fail(KILN_ERR_NOMEM, "the nodes' prepared states overflow the address space");
        }
    if (total > e->prepared_cap) {
        free(e->prepared);
        e->prepared = kn_aligned_alloc(total);
        e->prepared_cap = e->prepared ? total : 0;
        if (!e->prepared) {
            free(bytes_of);
            return kn_fail(KILN_ERR_NOMEM, "no memory for %zu bytes of the nodes' prepared states", total);
        }
    }
    kiln_status st = KILN_OK;
    size_t at = 0;
    for (int i = 0; i < g->n_nodes && st == KILN_OK; i++) {
        e->state_of[i] = NULL;
        if (!bytes_of[i])
            continue;
        kn_op_call call = node_call(s, i);
        st = g->nodes[i].op->prepare(&call, e->prepared + at);
        if (st != KILN_OK) {
            kn_error_prefix("node '%s' (%s): ", g->nodes[i].name, g->nodes[i].op->name);
            break;
        }
        e->state_of[i] = e->prepared + at;
        at += bytes_of[i];
    }
    free(bytes_of);
    return st;
}

/* ---- batches split ------------------------------------------------------------------------------- */

/* The first nodes' largest value must hold more than this for a split to pay: below, the whole
 * batch's values stay in the caches anyway. */
#define KN_SPLIT_MIN_BYTES ((size_t)8 << 20)

/* Whether value v is data of the run with the batch first: a graph input or a node's output. */
static bool batched(const kn_graph *g, int v, int64_t batch) {
    const kn_value *x = &g->values[v];
    return (x->kind == KN_VALUE_INPUT || x->kind == KN_VALUE_ACT) && x->shape.ndim >= 1 && x->shape.d[0] == batch;
}

/* Whether node n computes each of `batch` images from that image alone: a per_image op (op.h) whose output
 * and first input are batched, all of one rank; its other inputs constants (weights, bounds), or for the
 * elementwise ops batched values of that rank or constants that do not reach the batch axis when
 * broadcast. */
static bool node_separable(const kn_graph *g, const kn_node *n, int64_t batch) {
    if (!n->op->per_image || n->n_in < 1 || n->in[0] < 0 || n->n_out != 1 ||
        (n->op->trains_differently && kn_node_int(n, "training_mode", 0)))
        return false;
    bool elementwise = n->op == &kn_op_add || n->op == &kn_op_sub || n->op == &kn_op_mul || n->op == &kn_op_div;
    int rank = g->values[n->out[0]].shape.ndim;
    for (int k = 0; k < n->n_out; k++)
        if (n->out[k] < 0 || !batched(g, n->out[k], batch) || g->values[n->out[k]].shape.ndim != rank)
            return false;
    for (int k = 0; k < n->n_in; k++) {
        int v = n->in[k];
        if (v < 0)
            continue;
        const kn_value *x = &g->values[v];
        bool data = x->kind == KN_VALUE_INPUT || x->kind == KN_VALUE_ACT;
        if (data && (!batched(g, v, batch) || x->shape.ndim != rank || (k > 0 && !elementwise)))
            return false;
        if (!data && elementwise && x->shape.ndim == rank && x->shape.d[0] != 1)
            return false;
    }
    return true;
}

/* Lists the values nodes [0, k) read or write batched, each once, in split_values. */
static void list_split_values(kiln_session *s, int k, int64_t batch, bool *listed) {
    const kn_graph *g = &s->graph;
    s->cur->n_split_values = 0;
    for (int i = 0; i < k; i++) {
        const kn_node *n = &g->nodes[i];
        for (int a = 0; a < n->n_in + n->n_out; a++) {
            int v = a < n->n_in ? n->in[a] : n->out[a - n->n_in];
            if (v >= 0 && batched(g, v, batch) && !listed[v]) {
                listed[v] = true;
                s->cur->split_values[s->cur->n_split_values++] = v;
            }
        }
    }
}

/* Decides the split for the current shapes (none: split_nodes 0) and which values the plan keeps for
 * the whole run: the outputs of the split nodes that later nodes or the caller read. */
static kiln_status choose_split(kiln_session *s) {
    const kn_graph *g = &s->graph;
    s->cur->split_nodes = 0;
    int threads = s->threads > 0 ? s->threads : kn_threads_get();
    if (s->dynamic || s->sized_at_run || s->cur->n_stages > 0 || g->n_inputs < 1)
        return KILN_OK;
    const kn_value *first = &g->values[g->inputs[0]];
    int64_t batch = first->shape.ndim >= 1 ? first->shape.d[0] : 0;
    if (batch <= threads)
        return KILN_OK;
    int k = 0;
    size_t largest = 0;
    for (; k < g->n_nodes && node_separable(g, &g->nodes[k], batch); k++) {
        const kn_node *n = &g->nodes[k];
        for (int o = 0; o < n->n_out; o++) {
            size_t bytes = 0;
            if (kn_shape_bytes(&g->values[n->out[o]].shape, g->values[n->out[o]].dtype, &bytes))
                largest = bytes > largest ? bytes : largest;
        }
    }
    if (k == 0 || largest <= KN_SPLIT_MIN_BYTES)
        return KILN_OK;
    free(s->cur->whole_run);
    free(s->cur->split_values);
    s->cur->whole_run = calloc((size_t)g->n_values, sizeof(bool));
    s->cur->split_values = malloc(sizeof(int) * (size_t)g->n_values);
    int *last = malloc(sizeof(int) * (size_t)g->n_values);
    if (!s->cur->whole_run || !s->cur->split_values || !last) {
        free(last);
        return kn_fail(KILN_ERR_NOMEM, "out of memory splitting the batch");
    }
    list_split_values(s, k, batch, s->cur->whole_run); /* whole_run marks the listed values for now */
    memset(s->cur->whole_run, 0, sizeof(bool) * (size_t)g->n_values);
    kn_graph_value_reads(g, NULL, last);
    for (int i = 0; i < g->n_outputs; i++)
        last[g->outputs[i]] = g->n_nodes;
    for (int i = 0; i < k; i++)
        for (int o = 0; o < g->nodes[i].n_out; o++)
            s->cur->whole_run[g->nodes[i].out[o]] = last[g->nodes[i].out[o]] >= k;
    free(last);
    s->cur->split_nodes = k;
    s->cur->split_batch = batch;
    s->cur->split_size = threads;
    return KILN_OK;
}

/* Points the split values' tensors at images [first, first + count) of their buffers. */
static void split_slice(kiln_session *s, int64_t first, int64_t count) {
    for (int k = 0; k < s->cur->n_split_values; k++) {
        int v = s->cur->split_values[k];
        kn_tensor *t = &s->tensors[v];
        size_t bytes = 0;
        kn_shape_bytes(&s->graph.values[v].shape, t->dtype, &bytes);
        size_t image = bytes / (size_t)s->cur->split_batch;
        t->shape.d[0] = count;
        t->data = s->arena + s->cur->plan.offset[v] + (size_t)first * image;
    }
}

/* Memory plan, arena, scratch and tensors for the graph's current shapes. ran < 0: before a run; else
 * in the middle of one, after node `ran`, whose computed values the new arena takes over. */
static kiln_status lay_out(kiln_session *s, int ran) {
    kn_graph *g = &s->graph;
    kn_plan old_plan = s->cur->plan;
    memset(&s->cur->plan, 0, sizeof s->cur->plan);
    kiln_status st = ran < 0 ? choose_split(s) : KILN_OK;
    if (st == KILN_OK)
        st = kn_plan_make_keeping(g, true, s->cur->bound_bytes, s->cur->split_nodes ? s->cur->whole_run : NULL,
                                  &s->cur->plan);
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
    if (s->memory_limit && (workspace > s->memory_limit || s->cur->plan.arena_bytes > s->memory_limit - workspace))
        st = kn_fail(KILN_ERR_NOMEM, "the session needs %zu bytes at these input shapes (activations %zu, op "
                     "scratch %zu), more than its memory limit of %zu", s->cur->plan.arena_bytes + workspace,
                     s->cur->plan.arena_bytes, workspace, s->memory_limit);
    if (st == KILN_OK && workspace && !kn_op_scratch(&s->ctx, workspace))
        st = kn_fail(KILN_ERR_NOMEM, "no memory for %zu bytes of op workspace", workspace);
    s->cur->workspace_bytes = workspace;

    // The arena only grows: going back to a smaller batch reuses it. In a run, values move to a new one.
    unsigned char *old = NULL;
    if (st == KILN_OK && (ran >= 0 || s->cur->plan.arena_bytes > s->arena_capacity)) {
        size_t bytes = s->cur->plan.arena_bytes > s->arena_capacity ? s->cur->plan.arena_bytes : s->arena_capacity;
        st = new_arena(s, bytes, &old);
    }
    if (st == KILN_OK && ran >= 0)
        carry_values(s, old, old_plan.offset, ran);
    free(old);
    kn_plan_free(&old_plan);
    KN_TRY(st);
    KN_TRY(bind_tensors(s));
    KN_TRY(prepare_nodes(s));
    if (s->dynamic && ran < 0)
        KN_TRY(make_key(s));
    s->cur->valid = true;
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
    s->cur->valid = false;
    memcpy(s->cur->input_shapes, s->input_shapes, sizeof s->input_shapes);
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
    if (st != KILN_OK && !s->dynamic && become_dynamic(s)) {
        for (int i = 0; i < s->n_cached; i++)
            s->cache[i].valid = false; /* made without the shape inputs' values, which are keys now */
        return bind_shape_data(s);     /* no input has data yet: says which to set */
    }
    if (st != KILN_OK) {
        char inputs[512];
        describe_inputs(s, inputs, sizeof inputs);
        kn_error_prefix("with inputs %s: ", inputs);
        return st;
    }
    keep_bounds(s, 0);
    return lay_out(s, -1);
}

/* A re-plan inside a run failed: the current plan holds shapes of no key; the next call plans anew. */
static void plan_lost(kiln_session *s) {
    s->planned = false;
    s->cur->valid = false;
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
    while (later < s->cur->n_stages && s->cur->stage[later].node <= i)
        later++;
    drop_stages(s, later);
    kiln_status st = infer_from(s, i + 1, true);
    if (st != KILN_OK) {
        kn_error_prefix("at the shapes node '%s' (%s) gave: ", n->name, n->op->name);
        plan_lost(s);
        return st;
    }
    keep_bounds(s, i + 1);
    st = lay_out(s, i);
    if (st != KILN_OK)
        plan_lost(s);
    return st;
}

/* Before node t->node, a stage: the values it reads were computed by this run. When they are the ones
 * the shapes from there on were inferred for, the run goes on; else they are bound for inference (each
 * value's data points at its slot of the key), the nodes from there on inferred again, and the memory
 * planned again, carrying over what the run computed so far. */
static kiln_status enter_stage(kiln_session *s, int index) {
    kn_graph *g = &s->graph;
    kn_stage *t = &s->cur->stage[index];
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
        plan_lost(s);
    return st;
}

/* The stage at node i, or -1. */
static int stage_at(const kiln_session *s, int i) {
    for (int t = 0; t < s->cur->n_stages; t++)
        if (s->cur->stage[t].node == i)
            return t;
    return -1;
}

/* ---- the plan cache ----------------------------------------------------------------------------- */

/* The valid cached plan made for the current input shapes (and shape inputs' values), or NULL. */
static kn_planned *find_plan(const kiln_session *s) {
    for (int i = 0; i < s->n_cached; i++) {
        kn_planned *e = (kn_planned *)&s->cache[i];
        bool same = e->valid;
        for (int k = 0; same && k < s->graph.n_inputs; k++)
            same = kn_shape_equal(&e->input_shapes[k], &s->input_shapes[k]);
        if (same && (!s->dynamic || key_matches(s, e)))
            return e;
    }
    return NULL;
}

/* Makes e the current plan: the view reads its value table. */
static void make_current(kiln_session *s, kn_planned *e) {
    s->cur = e;
    s->graph.values = e->values;
    e->last_used = ++s->clock;
}

/* Goes back to a cached plan: no inference, no planning. Its shape inputs' values point at the
 * inputs' buffers again (a buffer may have moved since), and the tensors at the places it chose; the
 * arena and the op scratch, which only grow, already hold what it needs. */
static kiln_status use_plan(kiln_session *s, kn_planned *e) {
    make_current(s, e);
    s->has_run = false;
    if (s->dynamic)
        KN_TRY(bind_shape_data(s));
    KN_TRY(bind_tensors(s));
    s->planned = true;
    return KILN_OK;
}

/* Makes current the entry a new plan goes into: one not valid, else a new one while the cache has
 * room, else the least recently used (never the current one, which is the most recent). */
static kiln_status take_entry(kiln_session *s) {
    kn_planned *pick = NULL;
    for (int i = 0; !pick && i < s->n_cached; i++)
        pick = s->cache[i].valid ? NULL : &s->cache[i];
    if (!pick && s->n_cached < KN_PLAN_CACHE) {
        KN_TRY(add_cache_entry(s));
        pick = &s->cache[s->n_cached - 1];
    }
    if (!pick) { /* full, every entry valid: the least recently used goes */
        pick = &s->cache[0];
        for (int i = 1; i < s->n_cached; i++)
            pick = s->cache[i].last_used < pick->last_used ? &s->cache[i] : pick;
    }
    make_current(s, pick);
    return KILN_OK;
}

/* Frees what entry e holds: its stages' keys first (they clear its values' bindings). */
static void free_cache_entry(kiln_session *s, kn_planned *e) {
    make_current(s, e);
    drop_stages(s, 0);
    free(e->values);
    kn_plan_free(&e->plan);
    free(e->bound_bytes);
    free(e->key);
    free(e->split_values);
    free(e->whole_run);
    free(e->state_of);
    free(e->prepared);
    *e = (kn_planned){0};
}

/* Plans when the input shapes, or the values of a data-dependent session's shape inputs, changed:
 * back to a cached plan made for them, else a new plan in the cache. */
static kiln_status ensure_planned(kiln_session *s) {
    if (s->planned && s->dynamic && !key_matches(s, s->cur))
        s->planned = false;
    if (s->planned)
        return KILN_OK;
    kn_planned *cached = find_plan(s);
    if (cached)
        return use_plan(s, cached);
    KN_TRY(take_entry(s));
    return plan_session(s);
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
    find_sized_at_run(s);
    if (st == KILN_OK)
        st = add_cache_entry(s);
    if (st == KILN_OK) {
        make_current(s, &s->cache[0]);
        st = bind_arguments(s);
    }
    if (st == KILN_OK)
        st = make_profile(s);
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
    for (int i = 0; i < session->n_cached; i++)
        free_cache_entry(session, &session->cache[i]);
    kn_arena_free(&session->graph.arena);
    free(session->arena);
    kn_op_ctx_release(&session->ctx);
    free(session->tensors);
    free(session->args);
    free(session->first_arg);
    free(session->node_ns);
    free(session->labels);
    free(session->group_of);
    free(session->group_first);
    for (int i = 0; i < 16; i++) {
        free(session->input_buf[i]);
        free(session->input_text[i]);
        free(session->output_text[i]);
    }
    free(session->decoded);
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

/* ---- strings ---------------------------------------------------------------------------------------
 * A string tensor holds kn_string elements (core/tensor.h); the API passes `const char *` per element.
 * kiln_session_set_input copies the caller's strings: short ones into the elements, the others into
 * one block per input (input_text), replaced by the next set. After a run each string output gets a
 * table of pointers (output_text) into its elements, the inputs' blocks and the model's constants:
 * valid until the next run, set of a string input, resize or free. */

/* Bytes of a tensor as the API passes it: kiln_dtype_size per element. */
static size_t api_bytes(const kn_shape *shape, kn_dtype dtype) {
    size_t bytes = 0;
    kn_size_mul((size_t)kn_shape_numel(shape), kiln_dtype_size((kiln_dtype)dtype), &bytes);
    return bytes;
}

/* Copies the caller's strings (`strings`, one per element of dst) into input `index`'s elements dst. */
static kiln_status set_strings(kiln_session *s, int index, kn_string *dst, const void *strings) {
    const char *const *src = strings;
    const kn_value *v = &s->graph.values[value_of(s, index, true)];
    int64_t n = kn_shape_numel(&s->input_shapes[index]);
    size_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!src[i])
            return kn_fail(KILN_ERR_INVALID_ARG, "input '%s': string %lld is NULL", v->name, (long long)i);
        size_t len = strlen(src[i]);
        if (len >= KN_STRING_SMALL && !kn_size_add(total, len + 1, &total))
            return kn_fail(KILN_ERR_NOMEM, "input '%s': its strings' sizes overflow", v->name);
    }
    char *text = total ? malloc(total) : NULL;
    if (total && !text)
        return kn_fail(KILN_ERR_NOMEM, "no memory for the %zu bytes of the strings of input '%s'", total, v->name);
    char *at = text;
    for (int64_t i = 0; i < n; i++) {
        size_t len = strlen(src[i]);
        if (len >= KN_STRING_SMALL) {
            memcpy(at, src[i], len + 1);
            kn_string_set(&dst[i], at, len);
            at += len + 1;
        } else {
            kn_string_set(&dst[i], src[i], len);
        }
    }
    free(s->input_text[index]);
    s->input_text[index] = text;
    s->input_text_bytes[index] = total;
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
    size_t given = v->dtype == KN_STRING ? api_bytes(&s->input_shapes[index], v->dtype) : need;
    if (!data)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_session_set_input: data for input '%s' is NULL", v->name);
    if ((int)dtype != (int)v->dtype)
        return kn_fail(KILN_ERR_INVALID_ARG, "input '%s' is %s, got %s data", v->name, kn_dtype_name(v->dtype),
                       kiln_dtype_name(dtype));
    if (bytes != given) {
        char shape[96];
        return kn_fail(KILN_ERR_SHAPE, "input '%s' %s %s takes %zu bytes, got %zu (resize it for another shape)",
                       v->name, kn_shape_str(&s->input_shapes[index], shape, sizeof shape),
                       kn_dtype_name(v->dtype), given, bytes);
    }
    KN_TRY(grow_input(s, index, need));
    if (v->dtype == KN_STRING)
        KN_TRY(set_strings(s, index, s->input_buf[index], data));
    else if (need)
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
    if (t->dtype == KN_STRING)
        need = api_bytes(&t->shape, t->dtype);
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
    if (t->dtype == KN_STRING)
        return set_strings(session, index, t->data, data);
    memcpy(t->data, data, bytes);
    return KILN_OK;
}

kiln_status kiln_session_input_data(kiln_session *session, int index, void **data, size_t *bytes) {
    KN_TRY(check_index(session, index, true, "kiln_session_input_data"));
    const kn_value *v = &session->graph.values[value_of(session, index, true)];
    if (v->dtype == KN_STRING)
        return kn_fail(KILN_ERR_UNSUPPORTED, "kiln_session_input_data: input '%s' is a string tensor, which "
                       "kiln_session_set_input copies in (its buffer holds kiln's own form)", v->name);
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
    *data = t->dtype == KN_STRING ? (const void *)session->output_text[index] : t->data;
    if (t->dtype == KN_STRING && bytes)
        *bytes = api_bytes(&t->shape, t->dtype);
    else if (bytes && !kn_shape_bytes(&t->shape, t->dtype, bytes))
        return kn_fail(KILN_ERR_INTERNAL, "kiln_session_output: a planned output has no size");
    return KILN_OK;
}

/* ---- running ----------------------------------------------------------------------------------- */

/* Makes every element of every string input one kiln_session_set_input wrote, or else the empty
 * string: an input never set, or set at another shape, may hold any bytes, which must not be read as
 * pointers. */
static void clear_unset_strings(kiln_session *s) {
    for (int i = 0; i < s->graph.n_inputs; i++) {
        const kn_tensor *t = &s->tensors[value_of(s, i, true)];
        if (t->dtype != KN_STRING)
            continue;
        kn_string *str = t->data;
        uintptr_t text = (uintptr_t)s->input_text[i]; /* addresses: a stray pointer may point anywhere */
        for (int64_t k = 0, n = kn_numel(t); k < n; k++) {
            uintptr_t at = (uintptr_t)str[k].ptr;
            bool set = at ? text && at >= text && at < text + s->input_text_bytes[i]
                          : memchr(str[k].small, '\0', KN_STRING_SMALL) != NULL;
            if (!set)
                memset(&str[k], 0, sizeof str[k]);
        }
    }
}

/* String outputs as the API hands them out: a pointer per element, into the session's tensors and
 * strings (see "Strings" above). The tables grow on the first run that needs more. */
static kiln_status publish_string_outputs(kiln_session *s) {
    for (int i = 0; i < s->graph.n_outputs; i++) {
        const kn_tensor *t = &s->tensors[value_of(s, i, false)];
        if (t->dtype != KN_STRING)
            continue;
        size_t n = (size_t)kn_numel(t);
        if (n > s->output_text_cap[i] || !s->output_text[i]) {
            const char **grown = realloc(s->output_text[i], (n ? n : 1) * sizeof *grown);
            if (!grown)
                return kn_fail(KILN_ERR_NOMEM, "no memory for the %zu strings of output '%s'", n,
                               s->graph.values[value_of(s, i, false)].name);
            s->output_text[i] = grown;
            s->output_text_cap[i] = n ? n : 1;
        }
        const kn_string *str = t->data;
        for (size_t k = 0; k < n; k++)
            s->output_text[i][k] = kn_string_get(&str[k]);
    }
    return KILN_OK;
}

/* Nodes [first, last) on the tensors as they are bound. */
static kiln_status run_nodes(kiln_session *s, int first, int last) {
    const kn_graph *g = &s->graph;
    for (int i = first; i < last; i++) {
        const kn_node *n = &g->nodes[i];
        kn_tensor **args = s->args + s->first_arg[i];
        int stage = stage_at(s, i);
        if (stage >= 0)
            KN_TRY(enter_stage(s, stage));
        kn_op_call call = {.node = n, .in = args, .out = args + n->n_in, .ctx = &s->ctx,
                           .prepared = s->cur->state_of[i]};
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
    return KILN_OK;
}

/* The split nodes a group of images at a time (see the top); their tensors are bound whole again after. */
static kiln_status run_split(kiln_session *s) {
    kiln_status st = KILN_OK;
    for (int64_t first = 0; first < s->cur->split_batch && st == KILN_OK; first += s->cur->split_size) {
        int64_t count = s->cur->split_batch - first < s->cur->split_size ? s->cur->split_batch - first : s->cur->split_size;
        split_slice(s, first, count);
        st = run_nodes(s, 0, s->cur->split_nodes);
    }
    split_slice(s, 0, s->cur->split_batch);
    return st;
}

kiln_status kiln_session_run(kiln_session *session) {
    if (!session)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_session_run: session is NULL");
    kiln_session *s = session;
    KN_TRY(ensure_planned(s));
    kn_threads_set(s->threads);
    s->has_run = false;
    s->ctx.training = false;
    clear_unset_strings(s);
    if (s->cur->split_nodes)
        KN_TRY(run_split(s));
    KN_TRY(run_nodes(s, s->cur->split_nodes, s->graph.n_nodes));
    KN_TRY(publish_string_outputs(s));
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
        .arena_bytes = session->cur->plan.arena_bytes,
        .naive_bytes = session->cur->plan.naive_bytes,
        .workspace_bytes = session->cur->workspace_bytes,
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

int kn_session_split_nodes(const kiln_session *session) { return session->cur ? session->cur->split_nodes : 0; }

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
