/* ONNX export (see onnx_export.h): the graph is checked, translated node by node into protobuf-c
 * messages built in one arena, and packed.
 *
 * The messages point into the graph — names, attribute lists and strings, initializer data — so
 * exporting copies no weights; the file is streamed from the graph's own buffers. Everything is written
 * in the graph's order (nodes, initializers by value id, then the constants the rewrites add), so the
 * same graph gives the same bytes, and an exported model imported again exports identically.
 */
#include "format/onnx/onnx_export.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "format/file_write.h"
#include "format/onnx/onnx_internal.h"
#include "format/onnx/onnx_metadata.h"
#include "format/storage.h"
#include "ops/op.h"

enum {
    EXPORT_IR_VERSION = 8,
    GELU_MAX_NODES = 9,  /* ONNX nodes one kiln node becomes at most: Gelu's tanh form */
    MAX_MADE_CONSTS = 4, /* constants one kiln node's rewrite adds at most: Gelu's tanh form */
};

/* protobuf messages, ONNX files among them, are limited to 2 GiB; larger models need external data. */
#define ONNX_MAX_BYTES ((size_t)INT32_MAX)

/* Names the file uses, each once: name -> value (or node) index, -1 for the ones export makes. Open
 * addressing over strings that outlive the table (the graph's and the arena's). */
typedef struct exporter {
    const kn_graph *g;
    kn_arena arena;             /* every message, array and made string of the model */
    const char **names;         /* (g->n_values) each value's name in the file, malloc'ed */
    const char **node_names;    /* (g->n_nodes) each node's name in the file (NULL: none), malloc'ed */
    kn_name_map taken;           /* every value name in the file */
    kn_name_map taken_nodes;     /* every node name in the file */
    Onnx__NodeProto **nodes;    /* (g->n_nodes * GELU_MAX_NODES) */
    size_t n_nodes;
    Onnx__TensorProto **made;   /* (g->n_nodes * MAX_MADE_CONSTS + g->n_values * 3) constants the
                                   rewrites and the dequantizations add */
    size_t n_made;
    bool *dequantized;          /* (g->n_values) initializers exported as a compact initializer and the
                                   node that decodes it (DequantizeLinear, Cast) */
    kn_onnx_export_options options;
    const char *raw_input;      /* the graph input's name when Sub/Div standardise it (its value inside
                                   the graph is then the Div's output), else NULL */
} exporter;

static kiln_status no_memory(void) { return kn_fail(KILN_ERR_NOMEM, "out of memory exporting ONNX"); }

static bool is_initializer(const kn_value *v) {
    return v->kind == KN_VALUE_PARAM || v->kind == KN_VALUE_STATE || v->kind == KN_VALUE_CONST;
}

static int32_t onnx_dtype_of(kn_dtype dtype) {
    static const int32_t types[KN_DTYPE_COUNT] = {
        [KN_F32] = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT,   [KN_I64] = ONNX__TENSOR_PROTO__DATA_TYPE__INT64,
        [KN_I32] = ONNX__TENSOR_PROTO__DATA_TYPE__INT32,   [KN_U8] = ONNX__TENSOR_PROTO__DATA_TYPE__UINT8,
        [KN_I8] = ONNX__TENSOR_PROTO__DATA_TYPE__INT8,     [KN_BOOL] = ONNX__TENSOR_PROTO__DATA_TYPE__BOOL,
        [KN_F16] = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16, [KN_F64] = ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE,
        [KN_I16] = ONNX__TENSOR_PROTO__DATA_TYPE__INT16,   [KN_U16] = ONNX__TENSOR_PROTO__DATA_TYPE__UINT16,
        [KN_U32] = ONNX__TENSOR_PROTO__DATA_TYPE__UINT32,  [KN_U64] = ONNX__TENSOR_PROTO__DATA_TYPE__UINT64,
        [KN_BF16] = ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16, [KN_STRING] = ONNX__TENSOR_PROTO__DATA_TYPE__STRING,
    };
    return dtype >= 0 && dtype < KN_DTYPE_COUNT ? types[dtype] : ONNX__TENSOR_PROTO__DATA_TYPE__UNDEFINED;
}

/* ---- names ---- */

/* "<base><sep><suffix>" in the arena. */
static char *joined_name(exporter *x, const char *base, const char *sep, const char *suffix) {
    size_t size = strlen(base) + strlen(sep) + strlen(suffix) + 1;
    char *name = kn_arena_alloc(&x->arena, size);
    if (name)
        snprintf(name, size, "%s%s%s", base, sep, suffix);
    return name;
}

/* A name not in `t` yet, taken for index `id` (-1: something export makes): `name`, else "<name>.1",
 * "<name>.2" ... NULL when out of memory. */
static const char *take_name(exporter *x, kn_name_map *t, const char *name, int id) {
    const char *chosen = name;
    if (kn_name_map_find(t, name, NULL)) {
        size_t size = strlen(name) + 24;
        char *numbered = kn_arena_alloc(&x->arena, size);
        if (!numbered)
            return NULL;
        int k = 1;
        do
            snprintf(numbered, size, "%s.%d", name, k++);
        while (kn_name_map_find(t, numbered, NULL));
        chosen = numbered;
    }
    return kn_name_map_put(t, chosen, id) == KILN_OK ? chosen : NULL;
}

/* The name of a value a rewrite makes: "<base>/<suffix>", made unique. */
static const char *made_name(exporter *x, const char *base, const char *suffix) {
    const char *name = joined_name(x, base, "/", suffix);
    return name ? take_name(x, &x->taken, name, -1) : NULL;
}

/* The name of a node a rewrite adds: "<node>/<step>", made unique. */
static const char *made_node_name(exporter *x, const char *node, const char *step) {
    const char *name = joined_name(x, node, "/", step);
    return name ? take_name(x, &x->taken_nodes, name, -1) : NULL;
}

static char *value_name(const exporter *x, int id) { return id >= 0 ? (char *)x->names[id] : ""; }

/* ---- checks ---- */

/* ONNX names each value once, and onnxruntime each node; kiln insists on neither (a spec may give two
 * layers one name). The first of a name keeps it; once every first one has, the later ones get
 * "<name>.1", "<name>.2" ..., so a renamed one never takes another's name. Unnamed ("") nodes stay
 * unnamed (names[i] NULL); values need a name. */
static kiln_status assign_names(exporter *x, kn_name_map *t, const char *const *wanted, int n,
                                const char **names) {
    for (int i = 0; i < n; i++) {
        names[i] = NULL;
        if (!*wanted[i] || kn_name_map_find(t, wanted[i], NULL))
            continue;
        if (kn_name_map_put(t, wanted[i], i) != KILN_OK)
            return no_memory();
        names[i] = wanted[i];
    }
    for (int i = 0; i < n; i++)
        if (!names[i] && *wanted[i] && !(names[i] = take_name(x, t, wanted[i], i)))
            return no_memory();
    return KILN_OK;
}

static kiln_status name_values_and_nodes(exporter *x) {
    const kn_graph *g = x->g;
    int most = g->n_values > g->n_nodes ? g->n_values : g->n_nodes;
    const char **wanted = malloc(sizeof *wanted * ((size_t)most + 1));
    if (!wanted)
        return no_memory();
    kiln_status st = KILN_OK;
    for (int v = 0; v < g->n_values && st == KILN_OK; v++) {
        wanted[v] = g->values[v].name;
        if (!*wanted[v])
            st = kn_fail(KILN_ERR_INVALID_ARG, "value %d has no name; ONNX values need one", v);
    }
    if (st == KILN_OK)
        st = assign_names(x, &x->taken, wanted, g->n_values, x->names);
    for (int i = 0; i < g->n_nodes; i++)
        wanted[i] = g->nodes[i].name;
    if (st == KILN_OK)
        st = assign_names(x, &x->taken_nodes, wanted, g->n_nodes, x->node_names);
    free(wanted);
    return st;
}

/* The optimizer's fusions have no ONNX form: export takes the graph as trained or imported. Inputs
 * must be graph inputs, initializers with data, or outputs of earlier nodes. */
static kiln_status check_node(const kn_graph *g, int index, const bool *is_graph_input) {
    const kn_node *n = &g->nodes[index];
    for (int i = 0; i < n->n_attrs; i++)
        if (strncmp(n->attrs[i].name, "kn_", 3) == 0)
            return kn_fail(KILN_ERR_UNSUPPORTED, "node '%s' (%s) carries the optimizer's attribute '%s', "
                           "which ONNX has no form for: export the graph before optimizing it", n->name,
                           n->op->name, n->attrs[i].name);
    if (n->op == &kn_op_fakequantize)
        return kn_fail(KILN_ERR_UNSUPPORTED, "node '%s': FakeQuantize is kiln's quantization-aware training op, "
                       "which ONNX has no form for: export the finalized model (kiln train --qat writes it)", n->name);
    if (n->op == &kn_op_matmul && n->n_in > 2)
        return kn_fail(KILN_ERR_UNSUPPORTED, "node '%s': MatMul with a bias input is the optimizer's "
                       "fusion, which ONNX has no form for: export the graph before optimizing it", n->name);
    for (int k = 0; k < n->n_in; k++) {
        if (n->in[k] < 0)
            continue;
        const kn_value *v = &g->values[n->in[k]];
        bool ok = v->kind == KN_VALUE_INPUT ? is_graph_input[n->in[k]]
                  : v->kind == KN_VALUE_ACT ? v->producer >= 0 && v->producer < index
                                            : v->data != NULL;
        if (!ok)
            return kn_fail(KILN_ERR_INVALID_ARG, "node '%s': input '%s' is not a graph input, an "
                           "initializer with data or the output of an earlier node", n->name, v->name);
    }
    return KILN_OK;
}

static kiln_status check_graph(exporter *x) {
    const kn_graph *g = x->g;
    if (g->n_outputs == 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "the graph has no outputs");
    KN_TRY(name_values_and_nodes(x));
    bool *is_graph_input = calloc((size_t)g->n_values + 1, sizeof *is_graph_input);
    if (!is_graph_input)
        return no_memory();
    for (int i = 0; i < g->n_inputs; i++)
        is_graph_input[g->inputs[i]] = true;
    kiln_status st = KILN_OK;
    for (int i = 0; i < g->n_nodes && st == KILN_OK; i++)
        st = check_node(g, i, is_graph_input);
    free(is_graph_input);
    return st;
}

/* ---- messages ---- */

/* A STRING tensor's elements go in string_data (ONNX has no raw form for them), referencing kiln's
 * strings, which live as long as the graph. */
static bool string_elements(exporter *x, Onnx__TensorProto *t, const kn_shape *shape, const kn_string *data) {
    size_t n = (size_t)kn_shape_numel(shape), bytes;
    if (!kn_size_mul(n ? n : 1, sizeof *t->string_data, &bytes) || !(t->string_data = kn_arena_alloc(&x->arena, bytes)))
        return false;
    t->n_string_data = n;
    for (size_t i = 0; i < n; i++) {
        const char *s = kn_string_get(&data[i]);
        t->string_data[i] = (ProtobufCBinaryData){.len = strlen(s), .data = (uint8_t *)s};
    }
    return true;
}

/* A tensor named `name` holding `data` (little-endian, as kiln stores it: the host is, see
 * onnx_internal.h); data is referenced, not copied. */
static Onnx__TensorProto *make_tensor(exporter *x, const char *name, kn_dtype dtype, const kn_shape *shape,
                                      const void *data) {
    static const uint8_t no_bytes[1];
    Onnx__TensorProto *t = kn_arena_alloc(&x->arena, sizeof *t);
    int64_t *dims = kn_arena_alloc(&x->arena, sizeof *dims * (size_t)(shape->ndim + 1));
    size_t bytes;
    if (!t || !dims || !kn_shape_bytes(shape, dtype, &bytes))
        return NULL;
    onnx__tensor_proto__init(t);
    t->name = (char *)name;
    t->has_data_type = true;
    t->data_type = onnx_dtype_of(dtype);
    t->n_dims = (size_t)shape->ndim;
    t->dims = dims;
    memcpy(dims, shape->d, sizeof *dims * (size_t)shape->ndim);
    if (dtype == KN_STRING)
        return string_elements(x, t, shape, data) ? t : NULL;
    t->has_raw_data = true;
    t->raw_data.len = bytes;
    t->raw_data.data = bytes ? (uint8_t *)data : (uint8_t *)no_bytes;
    return t;
}

/* A constant the rewrites need, named "<base>/<suffix>", holding a copy of `data`; returns its name. */
static const char *made_const(exporter *x, const char *base, const char *suffix, kn_dtype dtype,
                              const kn_shape *shape, const void *data) {
    size_t bytes;
    const char *name = made_name(x, base, suffix);
    if (!name || !kn_shape_bytes(shape, dtype, &bytes))
        return NULL;
    void *copy = kn_arena_alloc(&x->arena, bytes ? bytes : 1);
    if (!copy)
        return NULL;
    memcpy(copy, data, bytes);
    Onnx__TensorProto *t = make_tensor(x, name, dtype, shape, copy);
    if (!t)
        return NULL;
    x->made[x->n_made++] = t;
    return name;
}

/* A constant named "<base>/<suffix>" over `data`, which lives in the graph or x->arena (not copied). */
static const char *made_tensor(exporter *x, const char *base, const char *suffix, kn_dtype dtype,
                               const kn_shape *shape, const void *data) {
    const char *name = made_name(x, base, suffix);
    Onnx__TensorProto *t = name ? make_tensor(x, name, dtype, shape, data) : NULL;
    if (!t)
        return NULL;
    x->made[x->n_made++] = t;
    return name;
}

static const char *made_scalar(exporter *x, const char *base, const char *suffix, float value) {
    kn_shape scalar = {0};
    return made_const(x, base, suffix, KN_F32, &scalar, &value);
}

/* A node of ONNX op `op` appended to the graph, with room for the given numbers of inputs, outputs
 * and attributes (filled by the caller). */
static Onnx__NodeProto *add_node(exporter *x, const char *op, const char *name, int max_in, int max_out,
                                 int max_attrs) {
    Onnx__NodeProto *p = kn_arena_alloc(&x->arena, sizeof *p);
    char **in = kn_arena_alloc(&x->arena, sizeof *in * (size_t)(max_in + 1));
    char **out = kn_arena_alloc(&x->arena, sizeof *out * (size_t)(max_out + 1));
    Onnx__AttributeProto **attrs = kn_arena_alloc(&x->arena, sizeof *attrs * (size_t)(max_attrs + 1));
    if (!p || !in || !out || !attrs)
        return NULL;
    onnx__node_proto__init(p);
    p->op_type = (char *)op;
    p->name = name && *name ? (char *)name : NULL;
    p->input = in;
    p->output = out;
    p->attribute = attrs;
    x->nodes[x->n_nodes++] = p;
    return p;
}

static Onnx__AttributeProto *add_attr(exporter *x, Onnx__NodeProto *p, const char *name,
                                      Onnx__AttributeProto__AttributeType type) {
    Onnx__AttributeProto *a = kn_arena_alloc(&x->arena, sizeof *a);
    if (!a)
        return NULL;
    onnx__attribute_proto__init(a);
    a->name = (char *)name;
    a->has_type = true;
    a->type = type;
    p->attribute[p->n_attribute++] = a;
    return a;
}

static kiln_status add_int_attr(exporter *x, Onnx__NodeProto *p, const char *name, int64_t v) {
    Onnx__AttributeProto *a = add_attr(x, p, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    if (!a)
        return no_memory();
    a->has_i = true;
    a->i = v;
    return KILN_OK;
}

static kiln_status copy_attr(exporter *x, Onnx__NodeProto *p, const kn_attr *k) {
    static const Onnx__AttributeProto__AttributeType types[] = {
        [KN_ATTR_INT] = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT,
        [KN_ATTR_FLOAT] = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT,
        [KN_ATTR_INTS] = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS,
        [KN_ATTR_STRING] = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING,
    };
    Onnx__AttributeProto *a = add_attr(x, p, k->name, types[k->type]);
    if (!a)
        return no_memory();
    switch (k->type) {
    case KN_ATTR_INT: a->has_i = true; a->i = k->i; break;
    case KN_ATTR_FLOAT: a->has_f = true; a->f = k->f; break;
    case KN_ATTR_INTS: a->n_ints = (size_t)k->n_ints; a->ints = (int64_t *)k->ints; break;
    case KN_ATTR_STRING:
        a->has_s = true;
        a->s.len = strlen(k->s);
        a->s.data = (uint8_t *)k->s;
        break;
    }
    return KILN_OK;
}

/* ---- Gelu ---- */

/* op(a, b) -> y, b NULL for a unary op. A NULL name or a, y is a failed allocation. */
static kiln_status add_elementwise(exporter *x, const char *op, const char *name, const char *a,
                                   const char *b, const char *y) {
    Onnx__NodeProto *p = name && a && y ? add_node(x, op, name, 2, 1, 0) : NULL;
    if (!p)
        return no_memory();
    p->input[p->n_input++] = (char *)a;
    if (b)
        p->input[p->n_input++] = (char *)b;
    p->output[p->n_output++] = (char *)y;
    return KILN_OK;
}

/* Gelu is an ONNX op only from opset 20: it is written as the ops kiln's Gelu computes, in the same
 * order and with the same float constants, so the exported model gives kiln's numbers:
 *   exact: y = (x * 0.5) * (Erf(x * 0.70710677) + 1)
 *   tanh:  y = (x * 0.5) * (Tanh((x + ((x * 0.044715) * x) * x) * 0.7978846) + 1)
 * The last Mul keeps the node's name and output; the other nodes are named "<node>/<step>", their
 * values "<output>/<step>" (an unnamed Gelu gives its nodes "<output>/..." names). */
static kiln_status export_gelu(exporter *x, int index) {
    const kn_node *n = &x->g->nodes[index];
    const char *form = kn_node_string(n, "approximate", "none");
    bool tanh_form = strcmp(form, "tanh") == 0;
    if (!tanh_form && strcmp(form, "none") != 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "approximate is '%s'; expected 'none' or 'tanh'", form);
    const char *in = value_name(x, n->in[0]), *out = value_name(x, n->out[0]);
    const char *node = x->node_names[index] ? x->node_names[index] : out; /* base of the step names */
    const char *last = x->node_names[index] ? x->node_names[index] : made_node_name(x, out, "gelu");
    const char *cdf_arg; /* the value Erf or Tanh reads */
    if (tanh_form) {
        const char *cubic = made_scalar(x, out, "cubic_coefficient", 0.044715f);
        const char *scale = made_scalar(x, out, "sqrt_2_over_pi", 0.79788456080286535588f);
        const char *cx = made_name(x, out, "cubic_x"), *cx2 = made_name(x, out, "cubic_x2");
        const char *cx3 = made_name(x, out, "cubic_x3"), *sum = made_name(x, out, "x_plus_cubic");
        cdf_arg = made_name(x, out, "tanh_input");
        if (!cubic || !scale)
            return no_memory();
        KN_TRY(add_elementwise(x, "Mul", made_node_name(x, node, "cubic_x"), in, cubic, cx));
        KN_TRY(add_elementwise(x, "Mul", made_node_name(x, node, "cubic_x2"), cx, in, cx2));
        KN_TRY(add_elementwise(x, "Mul", made_node_name(x, node, "cubic_x3"), cx2, in, cx3));
        KN_TRY(add_elementwise(x, "Add", made_node_name(x, node, "x_plus_cubic"), in, cx3, sum));
        KN_TRY(add_elementwise(x, "Mul", made_node_name(x, node, "tanh_input"), sum, scale, cdf_arg));
    } else {
        const char *scale = made_scalar(x, out, "sqrt1_2", 0.70710678118654752440f);
        cdf_arg = made_name(x, out, "erf_input");
        if (!scale)
            return no_memory();
        KN_TRY(add_elementwise(x, "Mul", made_node_name(x, node, "erf_input"), in, scale, cdf_arg));
    }
    const char *one = made_scalar(x, out, "one", 1.0f), *half = made_scalar(x, out, "half", 0.5f);
    const char *shape = made_name(x, out, tanh_form ? "tanh" : "erf");
    const char *plus_one = made_name(x, out, "plus_one"), *half_x = made_name(x, out, "half_x");
    if (!one || !half)
        return no_memory();
    const char *cdf_op = tanh_form ? "Tanh" : "Erf";
    KN_TRY(add_elementwise(x, cdf_op, made_node_name(x, node, tanh_form ? "tanh" : "erf"), cdf_arg, NULL,
                           shape));
    KN_TRY(add_elementwise(x, "Add", made_node_name(x, node, "plus_one"), shape, one, plus_one));
    KN_TRY(add_elementwise(x, "Mul", made_node_name(x, node, "half_x"), in, half, half_x));
    return add_elementwise(x, "Mul", last, half_x, plus_one, out);
}

/* ---- ops whose kiln form is not opset 17's ---- */

/* Dropout: opset 13 takes the ratio as input 1, where kiln also accepts an attribute. */
static kiln_status dropout_ratio_input(exporter *x, const kn_node *n, Onnx__NodeProto *p) {
    const kn_attr *ratio = kn_node_attr(n, "ratio");
    if ((n->n_in > 1 && n->in[1] >= 0) || !ratio)
        return KILN_OK; /* the input wins over the attribute; without either, both default to 0.5 */
    const char *name = made_scalar(x, value_name(x, n->out[0]), "ratio", kn_node_float(n, "ratio", 0.5f));
    if (!name)
        return no_memory();
    if (p->n_input < 2)
        p->input[p->n_input++] = (char *)name;
    else
        p->input[1] = (char *)name;
    return KILN_OK;
}

static kiln_status dtype_code(const kn_node *n, const char *attr, kn_dtype fallback, kn_dtype *dtype) {
    const kn_attr *a = kn_node_attr(n, attr);
    *dtype = fallback;
    if (!a)
        return KILN_OK;
    if (a->type != KN_ATTR_INT || a->i < 0 || a->i >= KN_DTYPE_COUNT)
        return kn_fail(KILN_ERR_INVALID_ARG, "'%s' is not a kiln dtype code", attr);
    *dtype = (kn_dtype)a->i;
    return KILN_OK;
}

/* Cast: kiln's `to` holds a kn_dtype code, ONNX's a TensorProto data type. */
static kiln_status cast_to_onnx_type(exporter *x, const kn_node *n, Onnx__NodeProto *p) {
    if (!kn_node_attr(n, "to"))
        return kn_fail(KILN_ERR_INVALID_ARG, "attribute 'to' is missing");
    kn_dtype to;
    KN_TRY(dtype_code(n, "to", KN_F32, &to));
    return add_int_attr(x, p, "to", onnx_dtype_of(to));
}

/* ConstantOfShape: kiln's number `value` and dtype code `dtype` become ONNX's one-element tensor. The
 * element is computed by kiln's own op (a scalar output), so it is exactly what kiln fills with. */
static kiln_status fill_value_tensor(exporter *x, const kn_node *n, Onnx__NodeProto *p) {
    kn_dtype dtype;
    KN_TRY(dtype_code(n, "dtype", KN_F32, &dtype));
    if (!kn_node_attr(n, "value") && dtype == KN_F32)
        return KILN_OK; /* ONNX's default: a float 0 */
    int64_t no_dims[1];
    kn_tensor empty_shape = {kn_shape_of(1, (int64_t[]){0}), KN_I64, no_dims};
    kn_tensor *in[1] = {&empty_shape};
    kn_shape one_element = kn_shape_of(1, (int64_t[]){1});
    unsigned char *element = kn_arena_alloc(&x->arena, sizeof(int64_t));
    if (!element)
        return no_memory();
    kn_tensor scalar = {{0}, dtype, element};
    kn_tensor *out[1] = {&scalar};
    kn_op_ctx ctx = {0};
    kn_op_call call = {.node = n, .in = in, .out = out, .ctx = &ctx};
    kiln_status st = n->op->forward(&call);
    kn_op_ctx_release(&ctx);
    KN_TRY(st);
    Onnx__AttributeProto *a = add_attr(x, p, "value", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR);
    if (!a || !(a->t = make_tensor(x, NULL, dtype, &one_element, element)))
        return no_memory();
    return KILN_OK;
}

/* Reductions other than ReduceSum take axes as an attribute until opset 18; kiln's take input 1 as
 * well. A constant input becomes the attribute; one computed at run time has no opset 17 form. */
static kiln_status axes_to_attribute(exporter *x, const kn_node *n, Onnx__NodeProto *p) {
    if (kn_node_int(n, "noop_with_empty_axes", 0))
        return kn_fail(KILN_ERR_UNSUPPORTED, "noop_with_empty_axes needs opset 18; kiln exports opset %d",
                       KN_ONNX_EXPORT_OPSET);
    if (n->n_in < 2 || n->in[1] < 0)
        return KILN_OK;
    if (kn_node_attr(n, "axes"))
        return kn_fail(KILN_ERR_INVALID_ARG, "axes given both as attribute and as input 1");
    const kn_value *axes = &x->g->values[n->in[1]];
    if (!is_initializer(axes) || axes->dtype != KN_I64 || axes->shape.ndim > 1)
        return kn_fail(KILN_ERR_UNSUPPORTED, "axes input '%s' is not a constant 1-D i64 tensor; as an "
                       "input it needs opset 18, and kiln exports opset %d", axes->name,
                       KN_ONNX_EXPORT_OPSET);
    Onnx__AttributeProto *a = add_attr(x, p, "axes", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    if (!a)
        return no_memory();
    a->n_ints = (size_t)kn_shape_numel(&axes->shape);
    a->ints = axes->data;
    p->n_input = 1;
    return KILN_OK;
}

/* Split's num_outputs (opset 18) as opset 13's split input: the sizes the outputs have along the axis,
 * which must be known. */
static kiln_status num_outputs_to_split(exporter *x, const kn_node *n, Onnx__NodeProto *p) {
    if (!kn_node_attr(n, "num_outputs"))
        return KILN_OK;
    const kn_value *in = &x->g->values[n->in[0]];
    int axis = kn_axis_normalize(kn_node_int(n, "axis", 0), in->shape.ndim);
    int64_t sizes[32];
    if (axis < 0 || n->n_out > 32)
        return kn_fail(KILN_ERR_INVALID_ARG, "Split's axis or output count is out of range");
    for (int k = 0; k < n->n_out; k++) {
        sizes[k] = x->g->values[n->out[k]].shape.d[axis];
        if (sizes[k] < 0)
            return kn_fail(KILN_ERR_UNSUPPORTED, "Split with num_outputs over a dimension of unknown size "
                           "needs opset 18; kiln exports opset %d", KN_ONNX_EXPORT_OPSET);
    }
    kn_shape shape = kn_shape_of(1, (int64_t[]){n->n_out});
    const char *name = made_const(x, value_name(x, n->out[0]), "split", KN_I64, &shape, sizes);
    if (!name)
        return no_memory();
    p->input[p->n_input++] = (char *)name;
    return KILN_OK;
}

/* Pad's axes input (opset 18) folded into pads for every dim: both must be constants. */
static kiln_status pad_axes_to_pads(exporter *x, const kn_node *n, Onnx__NodeProto *p) {
    if (n->n_in < 4 || n->in[3] < 0)
        return KILN_OK;
    const kn_value *data = &x->g->values[n->in[0]], *pads = &x->g->values[n->in[1]];
    const kn_value *axes = &x->g->values[n->in[3]];
    int rank = data->shape.ndim;
    int64_t n_axes = kn_shape_numel(&axes->shape);
    if (!is_initializer(pads) || !is_initializer(axes) || pads->dtype != KN_I64 || axes->dtype != KN_I64 ||
        n_axes > rank || kn_shape_numel(&pads->shape) != 2 * n_axes)
        return kn_fail(KILN_ERR_UNSUPPORTED, "Pad's axes input needs opset 18 unless pads and axes are "
                       "constant i64 tensors; kiln exports opset %d", KN_ONNX_EXPORT_OPSET);
    int64_t full[2 * KN_MAX_DIMS] = {0};
    for (int64_t i = 0; i < n_axes; i++) {
        int a = kn_axis_normalize(((const int64_t *)axes->data)[i], rank);
        if (a < 0)
            return kn_fail(KILN_ERR_INVALID_ARG, "Pad axis out of range");
        full[a] = ((const int64_t *)pads->data)[i];
        full[a + rank] = ((const int64_t *)pads->data)[i + n_axes];
    }
    kn_shape shape = kn_shape_of(1, (int64_t[]){2 * rank});
    const char *name = made_const(x, value_name(x, n->out[0]), "pads", KN_I64, &shape, full);
    if (!name)
        return no_memory();
    p->input[1] = (char *)name;
    p->n_input = 3;
    if (n->in[2] < 0) /* an omitted constant_value stays omitted: drop the trailing "" */
        p->n_input = 2;
    return KILN_OK;
}

/* Forms of opsets 18-19 that opset 17 cannot say: refused by name. */
static kiln_status refuse_newer_forms(exporter *x, const kn_node *n, Onnx__NodeProto *p) {
    (void)x, (void)p; /* the rewrite signature; nothing is written */
    const char *op = n->op->name;
    bool newer = (n->op == &kn_op_resize &&
                  (kn_node_attr(n, "axes") || kn_node_int(n, "antialias", 0) ||
                   strcmp(kn_node_string(n, "keep_aspect_ratio_policy", "stretch"), "stretch") != 0)) ||
                 (n->op == &kn_op_pad && strcmp(kn_node_string(n, "mode", "constant"), "wrap") == 0) ||
                 (n->op == &kn_op_scatterelements &&
                  (strcmp(kn_node_string(n, "reduction", "none"), "max") == 0 ||
                   strcmp(kn_node_string(n, "reduction", "none"), "min") == 0)) ||
                 n->op == &kn_op_mish;
    if (newer)
        return kn_fail(KILN_ERR_UNSUPPORTED, "this %s uses a form of opset 18 or later; kiln exports "
                       "opset %d", op, KN_ONNX_EXPORT_OPSET);
    return KILN_OK;
}

static kiln_status pad_for_opset_17(exporter *x, const kn_node *n, Onnx__NodeProto *p) {
    KN_TRY(refuse_newer_forms(x, n, p));
    return pad_axes_to_pads(x, n, p);
}

/* A rewrite runs after the node's inputs, outputs and attributes are copied, minus the attributes it
 * replaces. */
typedef struct op_rewrite {
    const kn_op *op;
    const char *replaced[2];
    kiln_status (*rewrite)(exporter *x, const kn_node *n, Onnx__NodeProto *p);
} op_rewrite;

static const op_rewrite rewrites[] = {
    {&kn_op_dropout, {"ratio"}, dropout_ratio_input},
    {&kn_op_cast, {"to"}, cast_to_onnx_type},
    {&kn_op_constantofshape, {"value", "dtype"}, fill_value_tensor},
    {&kn_op_reducemean, {"noop_with_empty_axes"}, axes_to_attribute},
    {&kn_op_reducemax, {"noop_with_empty_axes"}, axes_to_attribute},
    {&kn_op_reducemin, {"noop_with_empty_axes"}, axes_to_attribute},
    {&kn_op_reduceprod, {"noop_with_empty_axes"}, axes_to_attribute},
    {&kn_op_reducel1, {"noop_with_empty_axes"}, axes_to_attribute},
    {&kn_op_reducel2, {"noop_with_empty_axes"}, axes_to_attribute},
    {&kn_op_reducelogsum, {"noop_with_empty_axes"}, axes_to_attribute},
    {&kn_op_reducelogsumexp, {"noop_with_empty_axes"}, axes_to_attribute},
    {&kn_op_reducesumsquare, {"noop_with_empty_axes"}, axes_to_attribute},
    {&kn_op_split, {"num_outputs"}, num_outputs_to_split},
    {&kn_op_pad, {NULL}, pad_for_opset_17},
    {&kn_op_resize, {NULL}, refuse_newer_forms},
    {&kn_op_scatterelements, {NULL}, refuse_newer_forms},
    {&kn_op_mish, {NULL}, refuse_newer_forms},
};

static bool replaced_by(const op_rewrite *r, const char *attr) {
    for (size_t i = 0; r && i < sizeof r->replaced / sizeof r->replaced[0]; i++)
        if (r->replaced[i] && strcmp(r->replaced[i], attr) == 0)
            return true;
    return false;
}

static int compare_attr_names(const void *a, const void *b) {
    return strcmp((*(Onnx__AttributeProto *const *)a)->name, (*(Onnx__AttributeProto *const *)b)->name);
}

/* Attributes are written sorted by name: their order in the graph depends on how the node was made
 * (the importer sets the ones it rewrites last), the file's must not. */
static kiln_status export_node(exporter *x, int index) {
    const kn_node *n = &x->g->nodes[index];
    if (n->op == &kn_op_gelu)
        return export_gelu(x, index);
    const op_rewrite *r = NULL;
    for (size_t i = 0; i < sizeof rewrites / sizeof rewrites[0] && !r; i++)
        if (rewrites[i].op == n->op)
            r = &rewrites[i];
    int n_in = n->n_in;
    while (n_in > 0 && n->in[n_in - 1] < 0)
        n_in--; /* trailing omitted inputs are left out, middle ones are "" */
    Onnx__NodeProto *p = add_node(x, n->op->name, x->node_names[index], n_in + 1, n->n_out, n->n_attrs + 1);
    if (!p)
        return no_memory();
    for (int k = 0; k < n_in; k++)
        p->input[p->n_input++] = value_name(x, n->in[k]);
    for (int k = 0; k < n->n_out; k++)
        p->output[p->n_output++] = value_name(x, n->out[k]);
    for (int i = 0; i < n->n_attrs; i++)
        if (!replaced_by(r, n->attrs[i].name))
            KN_TRY(copy_attr(x, p, &n->attrs[i]));
    if (r)
        KN_TRY(r->rewrite(x, n, p));
    qsort(p->attribute, p->n_attribute, sizeof *p->attribute, compare_attr_names);
    return KILN_OK;
}

/* ---- compact storage: QDQ and Cast ---- */

/* The int8 form of an affine storage as ONNX's opset-17 DequantizeLinear takes it: levels q of
 * (q - zero_point) * scale with one scale per tensor (axis -1) or per index of `axis`. */
typedef struct qdq_form {
    kn_dtype dtype;             /* KN_I8 or KN_U8 */
    const void *levels;         /* numel */
    const float *scale;         /* (groups) */
    const void *zero_point;     /* (groups) or NULL */
    int axis;                   /* -1 per tensor */
    int64_t groups;
} qdq_form;

/* Per-block scales fit one of those forms when all blocks share their scale and zero point (per
 * tensor), or the blocks of each row do and the rows are dims[0] (per channel of axis 0). */
static bool blocks_as_groups(const kn_storage *s, qdq_form *q) {
    int64_t rows = s->shape.ndim ? kn_shape_span(&s->shape, 0, s->shape.ndim - 1) : 1;
    int64_t per_row = kn_storage_group_count(s) / (rows ? rows : 1);
    const uint8_t *zp = s->zero_point; /* equal bytes are equal zero points, signed or not */
    bool tensor_wide = true, row_wide = true;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t b = 0; b < per_row; b++) {
            int64_t k = r * per_row + b, first = r * per_row;
            row_wide &= s->scale[k] == s->scale[first] && (!zp || zp[k] == zp[first]);
            tensor_wide &= s->scale[k] == s->scale[0] && (!zp || zp[k] == zp[0]);
        }
    if (tensor_wide || rows == 0) {
        q->axis = -1;
        q->groups = 1;
    } else if (row_wide && s->shape.ndim >= 2 && rows == s->shape.d[0]) {
        q->axis = 0;
        q->groups = rows;
    } else {
        return false;
    }
    return true;
}

/* Whether the storage has an opset-17 DequantizeLinear form, and that form (i4, i2 and i1 levels
 * widened to bytes, per-block scales gathered per row, in x->arena). */
static kiln_status qdq_form_of(exporter *x, const kn_storage *s, qdq_form *q, bool *ok) {
    *ok = false;
    if (!kn_encoding_is_affine(s->encoding))
        return KILN_OK;
    bool is_unsigned = s->encoding == KN_ENC_AFFINE_U8 || s->encoding == KN_ENC_AFFINE_I1;
    *q = (qdq_form){is_unsigned ? KN_U8 : KN_I8, s->payload, s->scale, s->zero_point, s->axis,
                    kn_storage_group_count(s)};
    if (s->block > 0 && !blocks_as_groups(s, q))
        return KILN_OK;
    int64_t n = kn_shape_numel(&s->shape);
    if (s->bits < 8) { /* i4, i2, i1: one level a byte */
        int8_t *levels = kn_arena_alloc(&x->arena, (size_t)(n ? n : 1));
        if (!levels)
            return no_memory();
        for (int64_t i = 0; i < n; i++)
            levels[i] = (int8_t)kn_storage_level(s, i);
        q->levels = levels;
    }
    if (s->block > 0) { /* the first block of each row (or of the tensor) speaks for the others */
        int64_t per_row = kn_storage_group_count(s) / (q->groups ? q->groups : 1);
        float *scale = kn_arena_alloc(&x->arena, sizeof(float) * (size_t)(q->groups + 1));
        uint8_t *zero_point = kn_arena_alloc(&x->arena, (size_t)(q->groups + 1));
        if (!scale || !zero_point)
            return no_memory();
        for (int64_t r = 0; r < q->groups; r++) {
            scale[r] = s->scale[r * per_row];
            zero_point[r] = s->zero_point ? ((const uint8_t *)s->zero_point)[r * per_row] : 0;
        }
        q->scale = scale;
        q->zero_point = s->zero_point ? zero_point : NULL;
    }
    *ok = true;
    return KILN_OK;
}

/* Value v as int8/uint8 levels, scale and zero point initializers and the DequantizeLinear that
 * gives v: "<v>/quantized", "<v>/scale", "<v>/zero_point", node "<v>/dequantize". */
static kiln_status export_dequantize(exporter *x, int v, const kn_value *value, const qdq_form *q) {
    const char *name = x->names[v];
    kn_shape groups = q->axis >= 0 ? kn_shape_of(1, &q->groups) : kn_shape_of(0, NULL);
    const char *levels = made_tensor(x, name, "quantized", q->dtype, &value->shape, q->levels);
    const char *scale = made_tensor(x, name, "scale", KN_F32, &groups, q->scale);
    const char *zero_point = q->zero_point ? made_tensor(x, name, "zero_point", q->dtype, &groups, q->zero_point)
                                           : NULL;
    const char *node = made_node_name(x, name, "dequantize");
    Onnx__NodeProto *p = levels && scale && (zero_point || !q->zero_point) && node
                             ? add_node(x, "DequantizeLinear", node, 3, 1, 1)
                             : NULL;
    if (!p)
        return no_memory();
    p->input[p->n_input++] = (char *)levels;
    p->input[p->n_input++] = (char *)scale;
    if (zero_point)
        p->input[p->n_input++] = (char *)zero_point;
    p->output[p->n_output++] = (char *)name;
    if (q->axis >= 0)
        KN_TRY(add_int_attr(x, p, "axis", q->axis));
    return KILN_OK;
}

/* Value v as an f16 initializer "<v>/f16" and the Cast to f32 that gives v. */
static kiln_status export_half(exporter *x, int v, const kn_value *value) {
    const char *name = x->names[v];
    const char *half = made_tensor(x, name, "f16", KN_F16, &value->shape, value->storage->payload);
    const char *node = made_node_name(x, name, "cast");
    Onnx__NodeProto *p = half && node ? add_node(x, "Cast", node, 1, 1, 1) : NULL;
    if (!p)
        return no_memory();
    p->input[p->n_input++] = (char *)half;
    p->output[p->n_output++] = (char *)name;
    return add_int_attr(x, p, "to", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
}

/* Initializers some node reads (or graph outputs) that are stored compactly: affine storage with an
 * opset-17 form becomes QDQ, f16 storage an f16 initializer and a Cast; the other encodings (bf16,
 * codebook, sparse, and affine without such a form) are written as their decoded f32 values. These
 * nodes come first: they read only initializers. */
static kiln_status export_compact_initializers(exporter *x) {
    const kn_graph *g = x->g;
    int *reads = malloc(sizeof *reads * ((size_t)g->n_values + 1));
    if (!reads)
        return no_memory();
    kn_graph_value_reads(g, reads, NULL);
    for (int i = 0; i < g->n_outputs; i++)
        reads[g->outputs[i]]++;
    kiln_status st = KILN_OK;
    for (int v = 0; v < g->n_values && st == KILN_OK; v++) {
        const kn_value *value = &g->values[v];
        if (!reads[v] || !is_initializer(value) || !value->storage)
            continue;
        qdq_form q;
        bool has_qdq = false;
        if (value->storage->encoding == KN_ENC_F16) {
            st = export_half(x, v, value);
            x->dequantized[v] = st == KILN_OK;
        } else if ((st = qdq_form_of(x, value->storage, &q, &has_qdq)) == KILN_OK && has_qdq) {
            st = export_dequantize(x, v, value, &q);
            x->dequantized[v] = st == KILN_OK;
        }
    }
    free(reads);
    return st;
}

/* ---- input standardisation ---- */

/* The shape of the mean/std constants for an input of shape `in`: n_norm values over the leading sample
 * dims whose product it is (all of them for a CSV row, the channels of an image), then 1s, so they
 * broadcast over the rest as kiln's loaders apply them. False when no leading dims multiply to n_norm. */
static bool norm_shape_of(const kn_shape *in, int64_t n_norm, kn_shape *shape) {
    *shape = (kn_shape){.ndim = in->ndim - 1};
    int64_t product = 1;
    int k = 1;
    while (product < n_norm && k < in->ndim && in->d[k] > 0)
        product *= in->d[k++];
    if (product != n_norm)
        return false;
    for (int i = 1; i < in->ndim; i++)
        shape->d[i - 1] = i < k ? in->d[i] : 1;
    return true;
}

/* x_std = (x - mean) / std at the graph's first input, as kiln standardises what it feeds a model trained
 * on standardised data: Sub and Div named "<input>/standardize/...". The graph input keeps its name;
 * every node that read it reads "<input>/standardized" instead. */
static kiln_status export_standardization(exporter *x) {
    const kn_graph *g = x->g;
    int in = g->inputs[0];
    const char *raw = x->names[in];
    kn_shape shape;
    if (!norm_shape_of(&g->values[in].shape, g->n_norm, &shape))
        return kn_fail(KILN_ERR_UNSUPPORTED, "input '%s': its %lld standardisation values (mean/std) match no "
                       "leading dims of its shape; export with the standardisation as metadata instead",
                       raw, (long long)g->n_norm);
    const char *mean = made_tensor(x, raw, "mean", KN_F32, &shape, g->input_mean);
    const char *std = made_tensor(x, raw, "std", KN_F32, &shape, g->input_std);
    const char *centered = made_name(x, raw, "centered");
    const char *standardized = made_name(x, raw, "standardized");
    if (!mean || !std || !standardized)
        return no_memory();
    KN_TRY(add_elementwise(x, "Sub", made_node_name(x, raw, "standardize/sub"), raw, mean, centered));
    KN_TRY(add_elementwise(x, "Div", made_node_name(x, raw, "standardize/div"), centered, std, standardized));
    x->raw_input = raw;
    x->names[in] = standardized;
    return KILN_OK;
}

/* ---- the graph ---- */

/* Whether value `id` is a graph input whose first dim is fixed (kn_graph_input_dim_open). */
static bool fixed_first_dim(const kn_graph *g, int id) {
    for (int i = 0; i < g->n_inputs; i++)
        if (g->inputs[i] == id)
            return g->values[id].shape.ndim > 0 && !kn_graph_input_dim_open(g, i, 0);
    return false;
}

/* A graph input's or output's type. Dim 0 is the batch, "batch", unless an input fixes it; an input's
 * other dynamic dims (-1) are named "<input>_dim<k>". For outputs, known_dims false leaves dims past 0 unset: they follow the
 * inputs' dynamic dims, whose values the graph's shapes do not tell. */
static Onnx__ValueInfoProto *make_value_info(exporter *x, int id, bool known_dims) {
    const kn_value *v = &x->g->values[id];
    Onnx__ValueInfoProto *info = kn_arena_alloc(&x->arena, sizeof *info);
    Onnx__TypeProto *type = kn_arena_alloc(&x->arena, sizeof *type);
    Onnx__TypeProto__Tensor *tensor = kn_arena_alloc(&x->arena, sizeof *tensor);
    Onnx__TensorShapeProto *shape = kn_arena_alloc(&x->arena, sizeof *shape);
    Onnx__TensorShapeProto__Dimension *dims = kn_arena_alloc(&x->arena, sizeof *dims * KN_MAX_DIMS);
    Onnx__TensorShapeProto__Dimension **dim_list = kn_arena_alloc(&x->arena, sizeof *dim_list * KN_MAX_DIMS);
    if (!info || !type || !tensor || !shape || !dims || !dim_list)
        return NULL;
    onnx__value_info_proto__init(info);
    onnx__type_proto__init(type);
    onnx__type_proto__tensor__init(tensor);
    onnx__tensor_shape_proto__init(shape);
    info->name = value_name(x, id);
    info->type = type;
    type->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    type->tensor_type = tensor;
    tensor->has_elem_type = true;
    tensor->elem_type = onnx_dtype_of(v->dtype);
    tensor->shape = shape;
    shape->n_dim = (size_t)v->shape.ndim;
    shape->dim = dim_list;
    for (int k = 0; k < v->shape.ndim; k++) {
        Onnx__TensorShapeProto__Dimension *d = &dims[k];
        onnx__tensor_shape_proto__dimension__init(d);
        dim_list[k] = d;
        int64_t extent = v->shape.d[k];
        if (k == 0 && !fixed_first_dim(x->g, id)) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            d->dim_param = "batch";
        } else if (v->kind == KN_VALUE_INPUT && extent < 0) {
            char suffix[16];
            snprintf(suffix, sizeof suffix, "dim%d", k);
            if (!(d->dim_param = joined_name(x, info->name, "_", suffix)))
                return NULL;
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
        } else if (known_dims && extent >= 0) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d->dim_value = extent;
        }
    }
    return info;
}

/* Whether every graph input's dims past the batch are known, so the outputs' dims past 0 are too. */
static bool sample_shapes_known(const kn_graph *g) {
    for (int i = 0; i < g->n_inputs; i++) {
        const kn_shape *s = &g->values[g->inputs[i]].shape;
        for (int k = 1; k < s->ndim; k++)
            if (s->d[k] < 0)
                return false;
    }
    return true;
}

/* The graph's initializers some exported node or graph output names, in value id order, then the
 * constants the rewrites made. */
static kiln_status collect_initializers(exporter *x, Onnx__GraphProto *graph) {
    const kn_graph *g = x->g;
    bool *named = calloc((size_t)g->n_values + 1, sizeof *named);
    graph->initializer = kn_arena_alloc(&x->arena, sizeof *graph->initializer *
                                                       ((size_t)g->n_values + x->n_made + 1));
    if (!named || !graph->initializer) {
        free(named);
        return no_memory();
    }
    for (size_t i = 0; i < x->n_nodes; i++) {
        for (size_t k = 0; k < x->nodes[i]->n_input; k++) {
            int id;
            if (kn_name_map_find(&x->taken, x->nodes[i]->input[k], &id) && id >= 0)
                named[id] = true;
        }
    }
    for (int i = 0; i < g->n_outputs; i++)
        named[g->outputs[i]] = true;
    kiln_status st = KILN_OK;
    for (int v = 0; v < g->n_values && st == KILN_OK; v++) {
        const kn_value *value = &g->values[v];
        if (!named[v] || !is_initializer(value) || x->dequantized[v])
            continue;
        Onnx__TensorProto *t = make_tensor(x, x->names[v], value->dtype, &value->shape, value->data);
        if (t)
            graph->initializer[graph->n_initializer++] = t;
        else
            st = no_memory();
    }
    free(named);
    for (size_t i = 0; i < x->n_made; i++)
        graph->initializer[graph->n_initializer++] = x->made[i];
    return st;
}

static kiln_status build_graph(exporter *x, Onnx__GraphProto *graph) {
    const kn_graph *g = x->g;
    onnx__graph_proto__init(graph);
    graph->name = "kiln";
    if (g->input_mean && g->input_std && g->n_norm > 0 && g->n_inputs > 0 && !x->options.norm_as_metadata)
        KN_TRY(export_standardization(x));
    KN_TRY(export_compact_initializers(x));
    for (int i = 0; i < g->n_nodes; i++) {
        kiln_status st = export_node(x, i);
        if (st != KILN_OK) {
            kn_error_prefix("node '%s' (%s): ", g->nodes[i].name, g->nodes[i].op->name);
            return st;
        }
    }
    graph->node = x->nodes;
    graph->n_node = x->n_nodes;
    KN_TRY(collect_initializers(x, graph));
    graph->input = kn_arena_alloc(&x->arena, sizeof *graph->input * (size_t)(g->n_inputs + 1));
    graph->output = kn_arena_alloc(&x->arena, sizeof *graph->output * (size_t)(g->n_outputs + 1));
    if (!graph->input || !graph->output)
        return no_memory();
    if (x->raw_input) /* the nodes read the standardised value; the file's input is the raw one */
        x->names[g->inputs[0]] = x->raw_input;
    for (int i = 0; i < g->n_inputs; i++)
        if (!(graph->input[graph->n_input++] = make_value_info(x, g->inputs[i], true)))
            return no_memory();
    bool known = sample_shapes_known(g);
    for (int i = 0; i < g->n_outputs; i++)
        if (!(graph->output[graph->n_output++] = make_value_info(x, g->outputs[i], known)))
            return no_memory();
    return KILN_OK;
}

/* The model's messages, all in x->arena (and pointing into g). */
static kiln_status build_model(exporter *x, const kn_graph *g, const kn_onnx_export_options *options,
                               Onnx__ModelProto **model) {
    *x = (exporter){.g = g, .options = options ? *options : (kn_onnx_export_options){0}};
    size_t node_slots = (size_t)g->n_nodes + 1;
    x->names = malloc(sizeof *x->names * ((size_t)g->n_values + 1));
    x->node_names = malloc(sizeof *x->node_names * node_slots);
    size_t value_slots = (size_t)g->n_values + 1;
    x->nodes = kn_arena_alloc(&x->arena, sizeof *x->nodes * (node_slots * GELU_MAX_NODES + value_slots));
    x->made = kn_arena_alloc(&x->arena, sizeof *x->made * (node_slots * MAX_MADE_CONSTS + 3 * value_slots));
    x->dequantized = kn_arena_alloc(&x->arena, sizeof *x->dequantized * value_slots);
    Onnx__ModelProto *m = kn_arena_alloc(&x->arena, sizeof *m);
    Onnx__GraphProto *graph = kn_arena_alloc(&x->arena, sizeof *graph);
    Onnx__OperatorSetIdProto *opset = kn_arena_alloc(&x->arena, sizeof *opset);
    Onnx__OperatorSetIdProto **opsets = kn_arena_alloc(&x->arena, sizeof *opsets);
    if (!x->names || !x->node_names || !x->nodes || !x->made || !x->dequantized || !m || !graph || !opset ||
        !opsets)
        return no_memory();
    KN_TRY(check_graph(x));
    KN_TRY(build_graph(x, graph));
    onnx__operator_set_id_proto__init(opset);
    opset->has_version = true;
    opset->version = KN_ONNX_EXPORT_OPSET;
    opsets[0] = opset;
    onnx__model_proto__init(m);
    m->has_ir_version = true;
    m->ir_version = EXPORT_IR_VERSION;
    m->n_opset_import = 1;
    m->opset_import = opsets;
    m->producer_name = "kiln";
    m->producer_version = KILN_VERSION_STRING;
    m->graph = graph;
    KN_TRY(kn_onnx_meta_export(g, !x->raw_input, &x->arena, &m->metadata_props, &m->n_metadata_props));
    size_t bytes = onnx__model_proto__get_packed_size(m);
    if (bytes > ONNX_MAX_BYTES)
        return kn_fail(KILN_ERR_UNSUPPORTED, "the model takes %zu bytes as ONNX; protobuf files are "
                       "limited to 2 GiB and kiln does not write external data yet", bytes);
    *model = m;
    return KILN_OK;
}

static void exporter_free(exporter *x) {
    free(x->names);
    free(x->node_names);
    kn_name_map_free(&x->taken);
    kn_name_map_free(&x->taken_nodes);
    kn_arena_free(&x->arena);
}

kiln_status kn_onnx_export_buffer(const kn_graph *g, void **buf, size_t *size) {
    return kn_onnx_export_buffer_with(g, buf, size, NULL);
}

kiln_status kn_onnx_export_buffer_with(const kn_graph *g, void **buf, size_t *size,
                                       const kn_onnx_export_options *options) {
    *buf = NULL;
    *size = 0;
    exporter x;
    Onnx__ModelProto *m;
    kiln_status st = build_model(&x, g, options, &m);
    if (st == KILN_OK) {
        *size = onnx__model_proto__get_packed_size(m);
        *buf = malloc(*size ? *size : 1);
        if (*buf)
            onnx__model_proto__pack(m, *buf);
        else
            st = kn_fail(KILN_ERR_NOMEM, "out of memory for a %zu-byte ONNX buffer", *size);
    }
    exporter_free(&x);
    return st;
}

/* ---- streaming to a file ---- */

/* protobuf-c packs through many small appends: they are gathered into large writes. The first
 * failure is kept and later appends are dropped. */
typedef struct file_sink {
    ProtobufCBuffer base;
    int fd;
    uint64_t pos;
    kiln_status status;
    size_t n;
    unsigned char stage[1 << 16];
} file_sink;

static void sink_flush(file_sink *s) {
    if (s->status == KILN_OK && s->n)
        s->status = kn_file_write_all(s->fd, s->stage, s->n, &s->pos);
    s->n = 0;
}

static void sink_append(ProtobufCBuffer *buffer, size_t len, const uint8_t *data) {
    file_sink *s = (file_sink *)buffer;
    if (s->n + len > sizeof s->stage)
        sink_flush(s);
    if (s->status != KILN_OK)
        return;
    if (len >= sizeof s->stage) {
        s->status = kn_file_write_all(s->fd, data, len, &s->pos);
        return;
    }
    memcpy(s->stage + s->n, data, len);
    s->n += len;
}

static kiln_status emit_model(int fd, void *model) {
    file_sink *s = malloc(sizeof *s);
    if (!s)
        return no_memory();
    s->base.append = sink_append;
    s->fd = fd;
    s->pos = 0;
    s->status = KILN_OK;
    s->n = 0;
    onnx__model_proto__pack_to_buffer(model, &s->base);
    sink_flush(s);
    kiln_status st = s->status;
    free(s);
    return st;
}

kiln_status kn_onnx_export_file(const kn_graph *g, const char *path) {
    return kn_onnx_export_file_with(g, path, NULL);
}

kiln_status kn_onnx_export_file_with(const kn_graph *g, const char *path, const kn_onnx_export_options *options) {
    exporter x;
    Onnx__ModelProto *m;
    kiln_status st = build_model(&x, g, options, &m);
    if (st == KILN_OK)
        st = kn_file_write_atomic(path, emit_model, m);
    exporter_free(&x);
    if (st != KILN_OK)
        kn_error_prefix("%s: ", path);
    return st;
}
