/* The graph IR shared by training, conversion, compression and inference.
 *
 * A graph is a list of values (tensors: inputs, parameters, constants, activations) and a list of
 * nodes in topological order. Each node applies one op from the op table to input values and writes
 * output values. Everything a graph holds (names, attributes, initializer data) lives in its arena,
 * freed at once by kn_graph_free.
 */
#ifndef KN_GRAPH_H
#define KN_GRAPH_H

#include "core/arena.h"
#include "core/tensor.h"

typedef struct kn_op kn_op;
typedef struct kn_storage kn_storage; /* format/storage.h */

typedef enum kn_value_kind {
    KN_VALUE_INPUT,  /* fed by the caller */
    KN_VALUE_PARAM,  /* trainable initializer */
    KN_VALUE_STATE,  /* initializer updated by training but not by gradients (BatchNorm running stats) */
    KN_VALUE_CONST,  /* constant data (a Reshape target, a scale) */
    KN_VALUE_ACT     /* produced by a node */
} kn_value_kind;

typedef struct kn_value {
    const char *name;
    kn_value_kind kind;
    kn_dtype dtype;
    kn_shape shape;   /* for activations: set by shape inference for the current batch size */
    void *data;       /* initializers: 64-byte aligned, owned by the graph arena; NULL otherwise */
    int producer;     /* node index, -1 for inputs and initializers */
    /* An activation whose data shape inference computed (data != NULL): a small result of a shape
     * computation such as Shape -> Gather -> Concat -> Reshape target, valid for the shapes of the
     * last kn_graph_infer_shapes. Executors may skip nodes whose outputs all have it. An executor may
     * also set it on an input whose data it binds before inferring shapes (a shape input). */
    bool data_from_inference;
    /* An f32 initializer may carry the compact form it is stored in (f16, bf16, affine integers,
     * codebook, sparse: format/storage.h), arena-owned. `data` is then exactly what the storage decodes
     * to, which the .kiln writer checks: whatever changes data must drop the storage first. (A graph
     * loaded with KN_KILN_LOAD_PACKED has affine i4 / i2 weights with storage and no data.) */
    const kn_storage *storage;
} kn_value;

/* Forgets v's compact storage, before something changes its data (training updates parameters and
 * running statistics in place): the value is then stored as plain f32 again. */
static inline void kn_value_drop_storage(kn_value *v) { v->storage = NULL; }

/* Shape inference computes the data of activations of at most this many elements (see
 * kn_graph_infer_node in ops/op.h). */
#define KN_INFER_DATA_MAX_ELEMS 64

typedef enum kn_attr_type { KN_ATTR_INT, KN_ATTR_FLOAT, KN_ATTR_INTS, KN_ATTR_STRING } kn_attr_type;

#define KN_MAX_ATTR_INTS 16

typedef struct kn_attr {
    const char *name;
    kn_attr_type type;
    int n_ints;
    int64_t i;
    float f;
    int64_t ints[KN_MAX_ATTR_INTS];
    const char *s;
} kn_attr;

typedef struct kn_node {
    const kn_op *op;
    const char *name;
    int n_in, n_out;
    int *in;   /* value ids; -1 for an omitted optional input */
    int *out;  /* value ids */
    int n_attrs;
    kn_attr *attrs;
} kn_node;

/* A graph has at most this many inputs and this many outputs. */
#define KN_GRAPH_MAX_IO 16

/* A free-form "key" = "value" note carried with the model: training provenance and the like. */
typedef struct kn_meta_entry {
    const char *key, *value;
} kn_meta_entry;

typedef struct kn_graph {
    kn_arena arena;
    kn_value *values;
    int n_values, cap_values;
    kn_node *nodes;
    int n_nodes, cap_nodes;
    int inputs[KN_GRAPH_MAX_IO], n_inputs;
    int outputs[KN_GRAPH_MAX_IO], n_outputs;

    /* Model metadata (all in the arena). */
    const char **class_names;  /* n_classes names for the output classes, or NULL */
    int n_classes;
    float *input_mean;         /* (n_norm) preprocessing: the model input is (x - mean) / std per */
    float *input_std;          /* feature (vector input) or per channel (image input); NULL = none */
    int64_t n_norm;
    kn_meta_entry *meta;
    int n_meta;

    /* The read-only file mapping that initializer data points into when loaded by mmap, unmapped by
     * kn_graph_free; NULL when every initializer lives in the arena. */
    void *mapping;
    size_t mapping_bytes;
} kn_graph;

void kn_graph_init(kn_graph *g);
void kn_graph_free(kn_graph *g);

/* Adds a value; its id goes to *id. Fails when out of memory or when the shape, its unknown (-1)
 * dims counted as 1, has more than KN_MAX_ELEMENTS elements; *id is then -1. For
 * KN_VALUE_PARAM/STATE/CONST the data is allocated zeroed in the arena. */
kiln_status kn_graph_add_value(kn_graph *g, const char *name, kn_value_kind kind, kn_dtype dtype,
                               const kn_shape *shape, int *id);
/* Looks a value up by name; -1 when absent. */
int kn_graph_find_value(const kn_graph *g, const char *name);

/* Adds a node applying op table entry `op`; its index goes to *index. Fails (KILN_ERR_NOMEM, or
 * KILN_ERR_INTERNAL for an input or output id that names no value) with *index -1. Output values get
 * the node as producer. The graph IR only stores `op`: builders look ops up by name with
 * kn_graph_add_node (ops/op.h). */
kiln_status kn_graph_append_node(kn_graph *g, const kn_op *op, const char *node_name, int n_in, const int *in,
                                 int n_out, const int *out, int *index);

/* Appends value `value` to the graph's inputs / outputs; fails when it has KN_GRAPH_MAX_IO already. */
kiln_status kn_graph_add_input(kn_graph *g, int value);
kiln_status kn_graph_add_output(kn_graph *g, int value);

kiln_status kn_node_set_int(kn_graph *g, int node, const char *name, int64_t v);
kiln_status kn_node_set_float(kn_graph *g, int node, const char *name, float v);
kiln_status kn_node_set_ints(kn_graph *g, int node, const char *name, int n, const int64_t *v);
kiln_status kn_node_set_string(kn_graph *g, int node, const char *name, const char *v);

const kn_attr *kn_node_attr(const kn_node *n, const char *name);
int64_t kn_node_int(const kn_node *n, const char *name, int64_t fallback);
float kn_node_float(const kn_node *n, const char *name, float fallback);
/* Copies up to `max` ints into out; returns how many the attribute has, or -1 when absent. */
int kn_node_ints(const kn_node *n, const char *name, int64_t *out, int max);
const char *kn_node_string(const kn_node *n, const char *name, const char *fallback);

/* The shape of a node's i-th input / output value. */
static inline kn_value *kn_node_input(const kn_graph *g, const kn_node *n, int i) {
    return (i < n->n_in && n->in[i] >= 0) ? &g->values[n->in[i]] : NULL;
}
static inline kn_value *kn_node_output(const kn_graph *g, const kn_node *n, int i) {
    return &g->values[n->out[i]];
}

/* Which nodes read each value: reads[v] (n_values) counts the node input slots holding value v, and
 * last[v] is the last node with such a slot, -1 when none. Either array may be NULL. Graph outputs
 * are not reads: a caller that keeps them adds them. */
void kn_graph_value_reads(const kn_graph *g, int *reads, int *last);

/* Drops every value v with new_id[v] < 0 and renumbers the others in order, in the values array and
 * in every node, graph input and output; the values dropped must be referenced by none of them.
 * new_id (n_values) is overwritten with the new ids. Producers are recomputed. */
void kn_graph_drop_values(kn_graph *g, int *new_id);

/* Adds (or replaces) a metadata entry; strings are copied into the arena. */
kiln_status kn_graph_set_meta(kn_graph *g, const char *key, const char *value);
/* The value of a metadata entry, or NULL. */
const char *kn_graph_meta(const kn_graph *g, const char *key);

/* Which input dims a caller may choose (open dims) is told by the metadata entry KN_META_INPUT_DIMS.
 * "declared": exactly the dims that are -1 (ONNX imports): a fixed dim keeps its value. Absent (or any
 * other value): also the first dim of every input, whatever it holds: graphs built from specs and
 * trained ones, whose first dim holds the last batch, and every .kiln file written before the entry. */
#define KN_META_INPUT_DIMS "kiln.input_dims"

/* Marks g's input dims as declared (true) or its first dims as batches (false). */
kiln_status kn_graph_set_dims_declared(kn_graph *g, bool declared);

/* Whether dim d of graph input `input` is open: one a caller may set. */
bool kn_graph_input_dim_open(const kn_graph *g, int input, int d);

/* Graph input `input`'s shape with every open dim as -1. */
kn_shape kn_graph_input_declared(const kn_graph *g, int input);

/* Number of scalar parameters in KN_VALUE_PARAM values. */
int64_t kn_graph_param_count(const kn_graph *g);

#endif
