/* ONNX import: the model-level walk. Parses the protobuf, checks the opsets, turns initializers and
 * graph inputs into values, orders the nodes topologically and hands each to its rewrite
 * (onnx_ops.c), then binds the graph outputs.
 *
 * While importing, every node's shapes are inferred as soon as it is added, with dynamic input dims
 * probed as 1: rewrites can then ask for an input's rank, and nodes whose inputs are all constants
 * are computed once and become constants. A failed probe only stops the probing, since the probe dims
 * or input data known only at run time may be what fails; shapes are inferred again, and errors
 * reported naming the node, when the graph is bound.
 */
#include "format/onnx/onnx_import.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "format/onnx/onnx_internal.h"
#include "format/onnx/onnx_metadata.h"
#include "format/storage.h"
#include "ops/op.h"

/* A folded node whose outputs exceed this stays a node: constant folding should shrink a model's
 * work, not blow up its file (ConstantOfShape or Expand of a huge shape). */
enum { FOLD_MAX_BYTES = 64 << 20 };

static const char *str_or_empty(const char *s) { return s ? s : ""; }

/* ---- values ---- */

int kn_onnx_value(kn_onnx_importer *im, const char *name) {
    if (!name || !*name)
        return -2;
    return kn_name_map_get(&im->values, name);
}

/* Adds a value and indexes it under its (arena-copied) name. */
static kiln_status add_named_value(kn_onnx_importer *im, const char *name, kn_value_kind kind, kn_dtype dtype,
                                   const kn_shape *shape, int *id) {
    KN_TRY(kn_graph_add_value(im->g, name, kind, dtype, shape, id));
    return kn_name_map_put(&im->values, im->g->values[*id].name, *id);
}

/* add_named_value's id, or -1 when it failed (the kn_onnx_add_* helpers' contract). */
static int add_named_id(kn_onnx_importer *im, const char *name, kn_value_kind kind, kn_dtype dtype,
                        const kn_shape *shape) {
    int id;
    return add_named_value(im, name, kind, dtype, shape, &id) == KILN_OK ? id : -1;
}

/* A name no ONNX value has and no imported value has: "<base>/<suffix>", then "<base>/<suffix>.N". */
static kiln_status unique_name(kn_onnx_importer *im, const char *base, const char *suffix,
                               char *buf, size_t size) {
    snprintf(buf, size, "%s/%s", base, suffix);
    while (kn_name_map_get(&im->values, buf) >= 0 || kn_name_map_get(&im->produced, buf) >= 0) {
        if (snprintf(buf, size, "%s/%s.%d", base, suffix, ++im->n_made) >= (int)size)
            return kn_fail(KILN_ERR_UNSUPPORTED, "value name '%s' is too long", base);
    }
    return KILN_OK;
}

int kn_onnx_add_temp(kn_onnx_importer *im, const char *base, const char *suffix) {
    char name[512];
    if (unique_name(im, base, suffix, name, sizeof name) != KILN_OK)
        return -1;
    kn_shape scalar = {0};
    return add_named_id(im, name, KN_VALUE_ACT, KN_F32, &scalar);
}

int kn_onnx_add_const(kn_onnx_importer *im, const char *base, const char *suffix, kn_dtype dtype,
                      const kn_shape *shape, const void *data) {
    char name[512];
    if (unique_name(im, base, suffix, name, sizeof name) != KILN_OK)
        return -1;
    int id = add_named_id(im, name, KN_VALUE_CONST, dtype, shape);
    size_t bytes;
    if (id >= 0 && kn_shape_bytes(shape, dtype, &bytes) && bytes)
        memcpy(im->g->values[id].data, data, bytes);
    return id;
}

int kn_onnx_add_output(kn_onnx_importer *im, const kn_onnx_node *n, const char *name) {
    if (!name || !*name)
        return kn_onnx_add_temp(im, n->name, "unused");
    if (kn_name_map_get(&im->values, name) >= 0) {
        kn_fail(KILN_ERR_FORMAT, "output '%s' is already a value of the graph", name);
        return -1;
    }
    kn_shape scalar = {0};
    return add_named_id(im, name, KN_VALUE_ACT, KN_F32, &scalar);
}

bool kn_onnx_is_weight(const kn_onnx_importer *im, int id) {
    return id >= 0 && id < im->weights_cap && im->weights[id];
}

kiln_status kn_onnx_set_weight(kn_onnx_importer *im, int id) {
    if (id >= im->weights_cap) {
        int cap = im->weights_cap ? im->weights_cap : 64;
        while (cap <= id)
            cap *= 2;
        unsigned char *grown = realloc(im->weights, (size_t)cap);
        if (!grown)
            return kn_fail(KILN_ERR_NOMEM, "out of memory");
        memset(grown + im->weights_cap, 0, (size_t)(cap - im->weights_cap));
        im->weights = grown;
        im->weights_cap = cap;
    }
    im->weights[id] = 1;
    return KILN_OK;
}

kiln_status kn_onnx_bind(kn_onnx_importer *im, const char *name, int value) {
    if (!name || !*name)
        return KILN_OK;
    if (kn_name_map_get(&im->values, name) >= 0)
        return kn_fail(KILN_ERR_FORMAT, "output '%s' is already a value of the graph", name);
    /* The key must outlive the map: the ONNX proto does, until the import ends. */
    return kn_name_map_put(&im->values, name, value);
}

/* ---- attributes ---- */

const Onnx__AttributeProto *kn_onnx_attr(const Onnx__NodeProto *p, const char *name) {
    for (size_t i = 0; i < p->n_attribute; i++)
        if (p->attribute[i]->name && strcmp(p->attribute[i]->name, name) == 0)
            return p->attribute[i];
    return NULL;
}

Onnx__AttributeProto__AttributeType kn_onnx_attr_type(const Onnx__AttributeProto *a) {
    if (a->has_type && a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED)
        return a->type;
    if (a->has_f) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
    if (a->has_i) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
    if (a->has_s) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
    if (a->t) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR;
    if (a->g) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH;
    if (a->n_floats) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS;
    if (a->n_ints) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
    if (a->n_strings) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS;
    return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED;
}

static const char *attr_type_name(Onnx__AttributeProto__AttributeType type) {
    switch (type) {
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT: return "float";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT: return "int";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING: return "string";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR: return "tensor";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH: return "graph";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS: return "floats";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS: return "ints";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS: return "strings";
    default: return "other";
    }
}

kiln_status kn_onnx_copy_attr(kn_onnx_importer *im, const kn_onnx_node *n, int node,
                              const Onnx__AttributeProto *a) {
    const char *name = a->name;
    if (!name || !*name)
        return kn_fail(KILN_ERR_FORMAT, "an attribute has no name");
    Onnx__AttributeProto__AttributeType type = kn_onnx_attr_type(a);
    switch (type) {
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT: return kn_node_set_int(im->g, node, name, a->i);
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT: return kn_node_set_float(im->g, node, name, a->f);
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS:
        if (a->n_ints > KN_MAX_ATTR_INTS)
            return kn_fail(KILN_ERR_UNSUPPORTED, "attribute '%s' has %zu ints; at most %d supported",
                           name, a->n_ints, KN_MAX_ATTR_INTS);
        return kn_node_set_ints(im->g, node, name, (int)a->n_ints, a->ints);
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING: {
        if (a->s.len && memchr(a->s.data, '\0', a->s.len))
            return kn_fail(KILN_ERR_FORMAT, "attribute '%s' holds a NUL byte", name);
        char *s = malloc(a->s.len + 1);
        if (!s)
            return kn_fail(KILN_ERR_NOMEM, "out of memory");
        if (a->s.len)
            memcpy(s, a->s.data, a->s.len);
        s[a->s.len] = '\0';
        kiln_status st = kn_node_set_string(im->g, node, name, s);
        free(s);
        return st;
    }
    default:
        return kn_fail(KILN_ERR_UNSUPPORTED, "attribute '%s' of op '%s' has type %s, which kiln's "
                       "%s does not take", name, str_or_empty(n->proto->op_type), attr_type_name(type),
                       im->g->nodes[node].op->name);
    }
}

/* ---- nodes ---- */

/* Whether the node reads only constants and can be computed at import. Ops that compute differently
 * when training (Dropout, BatchNormalization) stay. When importing for training, a node reading a
 * float initializer is kept too: that initializer may turn out to be a parameter (a transposed
 * weight), which must stay trainable. */
static bool foldable(const kn_onnx_importer *im, const kn_node *node) {
    int present = 0;
    /* A DequantizeLinear of initializers, or a Cast of an f16 one, becomes a weight with compact
     * storage (storage_of_folded), which stays trainable. */
    bool decodes = node->op == &kn_op_dequantizelinear ||
                   (node->op == &kn_op_cast && node->in[0] >= 0 && im->g->values[node->in[0]].storage);
    for (int k = 0; k < node->n_in; k++) {
        if (node->in[k] < 0)
            continue;
        const kn_value *v = &im->g->values[node->in[k]];
        if (v->kind != KN_VALUE_CONST ||
            (im->for_training && !decodes && kn_onnx_is_weight(im, node->in[k]) && v->dtype == KN_F32))
            return false;
        present++;
    }
    return present > 0 && !node->op->trains_differently;
}

/* The compact storage a folded node's output keeps: DequantizeLinear of int8/uint8 initializers is
 * affine i8/u8 storage (per tensor, or per channel of `axis`), Cast to f32 of an f16 initializer keeps
 * its f16 storage, so a quantized model goes .kiln -> .onnx -> .kiln without growing. NULL when the node is
 * neither, or its inputs do not fit a storage. The caller checks the storage decodes to the output. */
static const kn_storage *storage_of_folded(kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0), *y = kn_node_output(g, node, 0);
    if (node->op == &kn_op_cast && x && x->storage && x->storage->encoding == KN_ENC_F16 &&
        y->dtype == KN_F32)
        return x->storage;
    kn_storage *s = kn_arena_alloc(&g->arena, sizeof *s);
    size_t bytes;
    if (node->op != &kn_op_dequantizelinear || !x || !x->data || !s ||
        !kn_shape_bytes(&x->shape, x->dtype, &bytes))
        return NULL;
    *s = (kn_storage){.shape = x->shape, .axis = -1, .bits = 8, .payload = x->data, .payload_bytes = bytes};
    const kn_value *scale = kn_node_input(g, node, 1), *zero_point = kn_node_input(g, node, 2);
    if ((x->dtype != KN_I8 && x->dtype != KN_U8) || !scale || !scale->data || scale->dtype != KN_F32 ||
        scale->shape.ndim > 1 || (zero_point && (!zero_point->data || zero_point->dtype != x->dtype)))
        return NULL;
    s->encoding = x->dtype == KN_I8 ? KN_ENC_AFFINE_I8 : KN_ENC_AFFINE_U8;
    if (kn_shape_numel(&scale->shape) != 1)
        s->axis = kn_axis_normalize(kn_node_int(node, "axis", 1), x->shape.ndim);
    s->scale = scale->data;
    s->zero_point = zero_point ? zero_point->data : NULL;
    /* The scale (and zero point) must have the granularity's shape: a 1-element 1-D scale is per tensor. */
    kn_shape groups = kn_storage_scale_shape(s);
    if (s->axis < -1 || kn_shape_numel(&groups) != kn_shape_numel(&scale->shape))
        return NULL;
    return kn_storage_check(s) == KILN_OK ? s : NULL;
}

/* Runs the last node once and turns its outputs into constants; the node goes away. Leaves the node
 * in place when the outputs would be too large to store. */
static kiln_status fold_last_node(kn_onnx_importer *im) {
    kn_graph *g = im->g;
    kn_node *node = &g->nodes[g->n_nodes - 1];
    if (node->n_out > 32)
        return KILN_OK;
    size_t total = 0;
    for (int k = 0; k < node->n_out; k++) {
        size_t bytes;
        kn_value *y = &g->values[node->out[k]];
        if (!kn_shape_bytes(&y->shape, y->dtype, &bytes) || !kn_size_add(total, bytes, &total) ||
            total > FOLD_MAX_BYTES)
            return KILN_OK;
    }
    void *out_data[32];
    for (int k = 0; k < node->n_out; k++) {
        kn_value *y = &g->values[node->out[k]];
        size_t bytes;
        kn_shape_bytes(&y->shape, y->dtype, &bytes);
        out_data[k] = kn_arena_alloc(&g->arena, bytes ? bytes : 1);
        if (!out_data[k])
            return kn_fail(KILN_ERR_NOMEM, "out of memory folding '%s' (%zu bytes)", y->name, bytes);
    }
    kiln_status st = kn_graph_run_node(g, node, out_data);
    if (st != KILN_OK) {
        kn_error_prefix("%s: ", node->op->name);
        return st;
    }
    const kn_storage *storage = storage_of_folded(g, node);
    kn_error_clear(); /* a node without a storage form is not an error */
    for (int k = 0; k < node->n_out; k++) {
        kn_value *y = &g->values[node->out[k]];
        y->kind = KN_VALUE_CONST;
        y->data = out_data[k];
        y->data_from_inference = false;
        y->producer = -1;
    }
    if (storage) {
        kn_value *y = &g->values[node->out[0]];
        size_t bytes;
        kn_shape_bytes(&y->shape, KN_F32, &bytes);
        float *decoded = malloc(bytes ? bytes : 1);
        if (!decoded)
            return kn_fail(KILN_ERR_NOMEM, "out of memory checking the storage of '%s'", y->name);
        kn_storage_decode(storage, decoded);
        if (memcmp(decoded, y->data, bytes) == 0)
            y->storage = storage;
        free(decoded);
        if (y->storage)
            KN_TRY(kn_onnx_set_weight(im, node->out[0]));
    }
    g->n_nodes--;
    return KILN_OK;
}

kiln_status kn_onnx_finish_node(kn_onnx_importer *im, int node) {
    kn_graph *g = im->g;
    kn_node *n = &g->nodes[node];
    bool fold = node == g->n_nodes - 1 && foldable(im, n);
    if (!fold && !im->shapes_known)
        return KILN_OK;
    if (kn_graph_infer_node(g, node) != KILN_OK) {
        /* The probe dims, or input data only known when the graph runs, may be what fails: the
         * shapes the graph is bound with decide, and that error names the node. */
        kn_error_clear();
        if (!fold)
            im->shapes_known = false;
        return KILN_OK;
    }
    return fold ? fold_last_node(im) : KILN_OK;
}

/* ---- the graph ---- */

static kiln_status import_initializers(kn_onnx_importer *im, const Onnx__GraphProto *gp) {
    if (gp->n_sparse_initializer)
        return kn_fail(KILN_ERR_UNSUPPORTED, "sparse initializers are not supported");
    for (size_t i = 0; i < gp->n_initializer; i++) {
        const Onnx__TensorProto *t = gp->initializer[i];
        const char *name = str_or_empty(t->name);
        if (!*name)
            return kn_fail(KILN_ERR_FORMAT, "initializer %zu has no name", i);
        if (kn_name_map_get(&im->values, name) >= 0)
            return kn_fail(KILN_ERR_FORMAT, "initializer '%s' is given twice", name);
        kn_dtype dtype;
        kn_shape shape;
        kiln_status st = kn_onnx_tensor_header(t, true, &dtype, &shape);
        if (st == KILN_OK)
            st = kn_onnx_tensor_check_data(t, im->base_dir, kn_shape_numel(&shape));
        if (st == KILN_OK) {
            int id;
            st = add_named_value(im, name, KN_VALUE_CONST, dtype, &shape, &id);
            if (st == KILN_OK)
                st = kn_onnx_set_weight(im, id);
            if (st == KILN_OK)
                st = kn_onnx_tensor_fill(t, im->base_dir, dtype, kn_shape_numel(&shape),
                                         im->g->values[id].data, &im->g->arena);
            /* An f16 initializer is computed with as f32; it keeps its f16 form as storage (exact: every
             * f16 is an f32), which a Cast to f32 of it hands on (storage_of_folded). */
            if (st == KILN_OK && t->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16 && dtype == KN_F32)
                st = kn_value_compress(im->g, id, &(kn_storage_spec){.encoding = KN_ENC_F16});
        }
        if (st != KILN_OK) {
            kn_error_prefix("initializer '%s': ", name);
            return st;
        }
    }
    return KILN_OK;
}

/* The dtype and shape a graph input declares; dynamic dims (dim_param or no value) are -1. */
static kiln_status input_type(const Onnx__ValueInfoProto *vi, kn_dtype *dtype, kn_shape *shape) {
    const Onnx__TypeProto *tp = vi->type;
    if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type)
        return kn_fail(KILN_ERR_UNSUPPORTED, "only tensor inputs are supported");
    const Onnx__TypeProto__Tensor *tt = tp->tensor_type;
    char buf[32];
    int32_t type = tt->has_elem_type ? tt->elem_type : 0;
    if (!kn_onnx_dtype_to_kiln(type, dtype))
        return kn_fail(KILN_ERR_UNSUPPORTED, "data type %s is not supported",
                       kn_onnx_dtype_name(type, buf, sizeof buf));
    if (!tt->shape)
        return kn_fail(KILN_ERR_UNSUPPORTED, "the input has no shape (its rank must be known)");
    if (tt->shape->n_dim > KN_MAX_DIMS)
        return kn_fail(KILN_ERR_UNSUPPORTED, "rank %zu is above kiln's maximum of %d",
                       tt->shape->n_dim, KN_MAX_DIMS);
    shape->ndim = (int)tt->shape->n_dim;
    for (int k = 0; k < shape->ndim; k++) {
        const Onnx__TensorShapeProto__Dimension *d = tt->shape->dim[k];
        shape->d[k] = -1;
        if (d->value_case != ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE)
            continue;
        if (d->dim_value < 0)
            return kn_fail(KILN_ERR_FORMAT, "dim %d is negative (%lld)", k, (long long)d->dim_value);
        shape->d[k] = d->dim_value;
    }
    return kn_shape_check_size(shape);
}

/* Graph inputs that are not initializers; their dynamic dims are probed as 1 (declared keeps -1). */
static kiln_status import_inputs(kn_onnx_importer *im, const Onnx__GraphProto *gp, kn_shape *declared) {
    kn_graph *g = im->g;
    for (size_t i = 0; i < gp->n_input; i++) {
        const char *name = str_or_empty(gp->input[i]->name);
        if (!*name)
            return kn_fail(KILN_ERR_FORMAT, "graph input %zu has no name", i);
        int existing = kn_name_map_get(&im->values, name);
        if (kn_onnx_is_weight(im, existing))
            continue; /* an initializer listed as input (IR < 4) stays an initializer */
        if (existing >= 0)
            return kn_fail(KILN_ERR_FORMAT, "graph input '%s' is listed twice", name);
        if (g->n_inputs == (int)(sizeof g->inputs / sizeof g->inputs[0]))
            return kn_fail(KILN_ERR_UNSUPPORTED, "more than %d graph inputs",
                           (int)(sizeof g->inputs / sizeof g->inputs[0]));
        kn_dtype dtype;
        kn_shape shape;
        kiln_status st = input_type(gp->input[i], &dtype, &shape);
        if (st != KILN_OK) {
            kn_error_prefix("graph input '%s': ", name);
            return st;
        }
        declared[g->n_inputs] = shape;
        for (int k = 0; k < shape.ndim; k++) {
            if (shape.d[k] < 0)
                shape.d[k] = 1;
        }
        int id;
        KN_TRY(add_named_value(im, name, KN_VALUE_INPUT, dtype, &shape, &id));
        KN_TRY(kn_graph_add_input(g, id));
    }
    return KILN_OK;
}

/* Indexes every node output name -> node index, rejecting names produced twice. */
static kiln_status index_producers(kn_onnx_importer *im, const Onnx__GraphProto *gp) {
    for (size_t i = 0; i < gp->n_node; i++) {
        const Onnx__NodeProto *p = gp->node[i];
        for (size_t k = 0; k < p->n_output; k++) {
            const char *name = str_or_empty(p->output[k]);
            if (!*name)
                continue;
            if (kn_name_map_get(&im->values, name) >= 0)
                return kn_fail(KILN_ERR_FORMAT, "node '%s' (index %zu) writes '%s', which is a graph "
                               "input or initializer", str_or_empty(p->name), i, name);
            int other = kn_name_map_get(&im->produced, name);
            if (other >= 0)
                return kn_fail(KILN_ERR_FORMAT, "value '%s' is produced twice (nodes %d and %zu)",
                               name, other, i);
            KN_TRY(kn_name_map_put(&im->produced, name, (int)i));
        }
    }
    return KILN_OK;
}

/* A topological order of the nodes (depth first from each node in file order, so a sorted file keeps
 * its order); a cycle is an error. Iterative, so a long chain cannot overflow the C stack. */
static kiln_status sort_nodes(kn_onnx_importer *im, const Onnx__GraphProto *gp, int *order) {
    int n = (int)gp->n_node;
    unsigned char *state = calloc((size_t)n + 1, 1); /* 0 new, 1 on the stack, 2 placed */
    int *stack = malloc(((size_t)n + 1) * sizeof *stack);
    size_t *next_input = malloc(((size_t)n + 1) * sizeof *next_input);
    kiln_status st = KILN_OK;
    if (!state || !stack || !next_input)
        st = kn_fail(KILN_ERR_NOMEM, "out of memory sorting nodes");
    int placed = 0;
    for (int root = 0; root < n && st == KILN_OK; root++) {
        if (state[root])
            continue;
        int depth = 0;
        stack[depth++] = root;
        state[root] = 1;
        next_input[root] = 0;
        while (depth > 0 && st == KILN_OK) {
            int u = stack[depth - 1];
            const Onnx__NodeProto *p = gp->node[u];
            if (next_input[u] == p->n_input) {
                state[u] = 2;
                order[placed++] = u;
                depth--;
                continue;
            }
            const char *input = str_or_empty(p->input[next_input[u]++]);
            int producer = *input ? kn_name_map_get(&im->produced, input) : -1;
            if (producer < 0 || state[producer] == 2)
                continue;
            if (state[producer] == 1)
                st = kn_fail(KILN_ERR_FORMAT, "the graph has a cycle: node '%s' (index %d) depends "
                             "on its own output through '%s'", str_or_empty(p->name), u, input);
            else {
                state[producer] = 1;
                next_input[producer] = 0;
                stack[depth++] = producer;
            }
        }
    }
    free(state);
    free(stack);
    free(next_input);
    return st;
}

static kiln_status import_nodes(kn_onnx_importer *im, const Onnx__GraphProto *gp) {
    if (gp->n_node > INT_MAX / 4)
        return kn_fail(KILN_ERR_UNSUPPORTED, "%zu nodes is too many", gp->n_node);
    KN_TRY(index_producers(im, gp));
    int *order = malloc((gp->n_node + 1) * sizeof *order);
    if (!order)
        return kn_fail(KILN_ERR_NOMEM, "out of memory sorting nodes");
    kiln_status st = sort_nodes(im, gp, order);
    char fallback[96];
    for (size_t i = 0; i < gp->n_node && st == KILN_OK; i++) {
        const Onnx__NodeProto *p = gp->node[order[i]];
        kn_onnx_node n = {.proto = p, .index = order[i], .name = str_or_empty(p->name)};
        if (!*n.name) {
            snprintf(fallback, sizeof fallback, "%.64s_%d", str_or_empty(p->op_type), n.index);
            n.name = fallback;
        }
        st = kn_onnx_import_node(im, &n);
        if (st != KILN_OK)
            kn_error_prefix("node '%s' (index %d): ", n.name, n.index);
    }
    free(order);
    return st;
}

static kiln_status import_outputs(kn_onnx_importer *im, const Onnx__GraphProto *gp) {
    kn_graph *g = im->g;
    if (gp->n_output == 0)
        return kn_fail(KILN_ERR_FORMAT, "the graph has no outputs");
    if (gp->n_output > sizeof g->outputs / sizeof g->outputs[0])
        return kn_fail(KILN_ERR_UNSUPPORTED, "%zu graph outputs; at most %d supported", gp->n_output,
                       (int)(sizeof g->outputs / sizeof g->outputs[0]));
    for (size_t i = 0; i < gp->n_output; i++) {
        const char *name = str_or_empty(gp->output[i]->name);
        int id = kn_name_map_get(&im->values, name);
        if (id < 0)
            return kn_fail(KILN_ERR_FORMAT, "graph output '%s' is produced by no node", name);
        KN_TRY(kn_graph_add_output(g, id));
    }
    return KILN_OK;
}

/* Whether initializer v only fed a folded DequantizeLinear or Cast whose output kept it as storage:
 * its data is that storage's payload, scale or zero point, or its storage is that storage, and nothing
 * else reads it. */
static bool only_in_storage(const kn_graph *g, int v, const int *reads) {
    const void *data = g->values[v].data;
    if (reads[v] || g->values[v].kind != KN_VALUE_CONST || !data)
        return false;
    for (int i = 0; i < g->n_values; i++) {
        const kn_storage *s = g->values[i].storage;
        if (i != v && s && (s->payload == data || (const void *)s->scale == data || s->zero_point == data ||
                            s == g->values[v].storage))
            return true;
    }
    return false;
}

/* Drops the initializers only_in_storage finds, renumbering the other values in order: the quantized
 * levels, scales and zero points now live in the storage of the value they decode to, and must not be
 * stored twice. */
static kiln_status drop_folded_initializers(kn_graph *g) {
    int *reads = malloc(sizeof *reads * ((size_t)g->n_values + 1));
    int *new_id = malloc(sizeof *new_id * ((size_t)g->n_values + 1));
    if (!reads || !new_id) {
        free(reads);
        free(new_id);
        return kn_fail(KILN_ERR_NOMEM, "out of memory");
    }
    kn_graph_value_reads(g, reads, NULL);
    for (int i = 0; i < g->n_outputs; i++)
        reads[g->outputs[i]]++;
    for (int i = 0; i < g->n_inputs; i++)
        reads[g->inputs[i]]++;
    for (int v = 0; v < g->n_values; v++)
        new_id[v] = only_in_storage(g, v, reads) ? -1 : v;
    kn_graph_drop_values(g, new_id);
    free(reads);
    free(new_id);
    return KILN_OK;
}

/* How many node inputs, graph inputs and graph outputs name value v. */
static int value_uses(const kn_graph *g, int v) {
    int n = 0;
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_in; k++)
            n += g->nodes[i].in[k] == v;
    for (int i = 0; i < g->n_inputs; i++)
        n += g->inputs[i] == v;
    for (int i = 0; i < g->n_outputs; i++)
        n += g->outputs[i] == v;
    return n;
}

static bool is_graph_output(const kn_graph *g, int v) {
    for (int i = 0; i < g->n_outputs; i++)
        if (g->outputs[i] == v)
            return true;
    return false;
}

/* Whether node n is Transpose(W) of a 2-D f32 initializer of the file that nothing else reads, into a
 * value that is no graph output: what PyTorch exports for a Linear without constant folding,
 * MatMul(x, Transpose(W)). (A weight shared with another node, such as an embedding tied to the output
 * layer, stays as it is: folding would untie it.) */
static bool transposes_weight(const kn_onnx_importer *im, const kn_node *n) {
    const kn_graph *g = im->g;
    if (n->op != &kn_op_transpose || n->n_in != 1 || n->in[0] < 0 || n->n_out != 1)
        return false;
    const kn_value *w = &g->values[n->in[0]];
    int64_t perm[2];
    int n_perm = kn_node_ints(n, "perm", perm, 2);
    return kn_onnx_is_weight(im, n->in[0]) && (w->kind == KN_VALUE_PARAM || w->kind == KN_VALUE_CONST) &&
           w->dtype == KN_F32 && w->data && !w->storage && w->shape.ndim == 2 &&
           (n_perm < 0 || (n_perm == 2 && perm[0] == 1 && perm[1] == 0)) && value_uses(g, n->in[0]) == 1 &&
           !is_graph_output(g, n->out[0]);
}

/* Folds every Transpose(W) that transposes_weight finds into W itself: W's data and shape become the
 * transpose's, its readers read W, and the node and its output go. The layer then has a plain weight
 * under the file's name, which kiln prune and kiln quantize find like any Linear's; training keeps it a
 * parameter. (Importing for inference folds such a Transpose into a constant of its own already.) */
static kiln_status fold_weight_transposes(kn_onnx_importer *im) {
    kn_graph *g = im->g;
    int *new_id = malloc(sizeof *new_id * ((size_t)g->n_values + 1));
    if (!new_id)
        return kn_fail(KILN_ERR_NOMEM, "out of memory");
    for (int v = 0; v < g->n_values; v++)
        new_id[v] = v;
    int kept = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        kn_node *n = &g->nodes[i];
        if (!transposes_weight(im, n)) {
            g->nodes[kept++] = *n;
            continue;
        }
        kn_value *w = &g->values[n->in[0]];
        int64_t rows = w->shape.d[0], cols = w->shape.d[1], numel = rows * cols;
        const float *x = w->data; // (rows, cols)
        float *t = kn_arena_alloc(&g->arena, sizeof(float) * (size_t)(numel > 0 ? numel : 1)); // (cols, rows)
        if (!t) {
            free(new_id);
            return kn_fail(KILN_ERR_NOMEM, "out of memory transposing weight '%s'", w->name);
        }
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++)
                t[c * rows + r] = x[r * cols + c];
        w->data = t;
        w->shape = kn_shape_of(2, (int64_t[]){cols, rows});
        int from = n->out[0], to = n->in[0];
        for (int j = i + 1; j < g->n_nodes; j++)
            for (int k = 0; k < g->nodes[j].n_in; k++)
                if (g->nodes[j].in[k] == from)
                    g->nodes[j].in[k] = to;
        new_id[from] = -1;
    }
    g->n_nodes = kept;
    kn_graph_drop_values(g, new_id); /* also recomputes the producers */
    free(new_id);
    return KILN_OK;
}

static kiln_status import_opset(kn_onnx_importer *im, const Onnx__ModelProto *m) {
    bool found = false;
    for (size_t i = 0; i < m->n_opset_import; i++) {
        const char *domain = str_or_empty(m->opset_import[i]->domain);
        if (*domain && strcmp(domain, "ai.onnx") != 0)
            continue; /* other domains matter only if a node uses them; nodes are checked one by one */
        if (found)
            return kn_fail(KILN_ERR_FORMAT, "the default domain's opset is imported twice");
        found = true;
        im->opset = m->opset_import[i]->version;
    }
    if (!found)
        return kn_fail(KILN_ERR_FORMAT, "the model imports no opset of the default ONNX domain");
    /* Below opset 7 each node is checked: its op must not have changed since the model's opset. */
    if (im->opset < 1 || im->opset > KN_ONNX_MAX_OPSET)
        return kn_fail(KILN_ERR_UNSUPPORTED, "opset %lld of the default domain is not supported "
                       "(kiln reads opsets %d to %d)", (long long)im->opset, KN_ONNX_MIN_OPSET,
                       KN_ONNX_MAX_OPSET);
    return KILN_OK;
}

static kiln_status import_model(kn_onnx_importer *im, const Onnx__ModelProto *m) {
    KN_TRY(import_opset(im, m));
    const Onnx__GraphProto *gp = m->graph;
    if (!gp)
        return kn_fail(KILN_ERR_FORMAT, "the model has no graph");
    kn_shape declared[sizeof im->g->inputs / sizeof im->g->inputs[0]];
    im->shapes_known = true;
    KN_TRY(import_initializers(im, gp));
    KN_TRY(import_inputs(im, gp, declared));
    KN_TRY(import_nodes(im, gp));
    KN_TRY(import_outputs(im, gp));

    /* Hand over the declared dims; data computed for the probe dims would be stale. */
    kn_graph *g = im->g;
    for (int i = 0; i < g->n_inputs; i++)
        g->values[g->inputs[i]].shape = declared[i];
    for (int v = 0; v < g->n_values; v++) {
        if (g->values[v].data_from_inference) {
            g->values[v].data = NULL;
            g->values[v].data_from_inference = false;
        }
    }
    KN_TRY(fold_weight_transposes(im));
    KN_TRY(drop_folded_initializers(g));
    KN_TRY(kn_onnx_meta_import(m, g));
    KN_TRY(kn_graph_set_dims_declared(g, true)); /* only dim_params and unknown dims are open */
    char opset[24];
    snprintf(opset, sizeof opset, "%lld", (long long)im->opset);
    KN_TRY(kn_graph_set_meta(g, "onnx.opset", opset));
    if (m->producer_name && *m->producer_name) {
        char producer[256];
        snprintf(producer, sizeof producer, "%.120s %.120s", m->producer_name,
                 str_or_empty(m->producer_version));
        KN_TRY(kn_graph_set_meta(g, "onnx.producer", producer));
    }
    return KILN_OK;
}

static kiln_status import_buffer(const void *buf, size_t size, const char *base_dir, bool for_training,
                                 kn_graph *g) {
    kn_graph_init(g);
    Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, size, buf);
    if (!m)
        return kn_fail(KILN_ERR_FORMAT, "not a valid ONNX model (the protobuf does not parse; %zu "
                       "bytes)", size);
    kn_onnx_importer im = {.g = g, .base_dir = base_dir, .for_training = for_training};
    kiln_status st = import_model(&im, m);
    kn_name_map_free(&im.values);
    kn_name_map_free(&im.produced);
    free(im.weights);
    onnx__model_proto__free_unpacked(m, NULL);
    return st;
}

kiln_status kn_onnx_import_buffer(const void *buf, size_t size, const char *base_dir, kn_graph *g) {
    return import_buffer(buf, size, base_dir, false, g);
}

static kiln_status import_file(const char *path, bool for_training, kn_graph *g) {
    kn_graph_init(g);
    unsigned char *bytes;
    size_t size;
    KN_TRY(kn_onnx_read_whole_file(path, &bytes, &size));
    size_t path_len = strlen(path);
    char *dir = malloc(path_len + 2);
    kiln_status st = dir ? KILN_OK : kn_fail(KILN_ERR_NOMEM, "out of memory");
    if (st == KILN_OK) {
        memcpy(dir, path, path_len + 1);
        st = import_buffer(bytes, size, kn_onnx_dirname(dir), for_training, g);
    }
    if (st != KILN_OK)
        kn_error_prefix("%s: ", path);
    free(dir);
    free(bytes);
    return st;
}

kiln_status kn_onnx_import_file(const char *path, kn_graph *g) { return import_file(path, false, g); }

kiln_status kn_onnx_import_for_training(const char *path, kn_graph *g) {
    return import_file(path, true, g);
}
