/* ONNX import, node by node: most ops map 1:1 onto the kiln op of the same name; the rest are
 * rewritten here into the signatures kiln's ops implement, which are the newest of opsets 7 to 17.
 * docs/onnx.md lists every rewrite; keep the two in step.
 *
 * - Attributes that later opsets turned into inputs (Squeeze axes, Slice starts, Clip min ...) become
 *   constant inputs, by the rules of `attr_inputs` below, when kiln's op takes the input.
 * - Constant becomes a constant value, Identity an alias, Cast's `to` and ConstantOfShape's `value`
 *   kiln's encodings, Upsample a Resize, and Softmax before opset 13 (which flattened the input to
 *   2-D at `axis`) a softmax over the last axis.
 */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "core/status.h"
#include "format/onnx/onnx_import.h"
#include "format/onnx/onnx_internal.h"
#include "ops/op.h"

enum { MAX_NODE_IO = 32 }; /* inputs or outputs of one node, as executors bind them */

static const char *str_or_empty(const char *s) { return s ? s : ""; }

/* ---- attributes that became inputs ---- */

typedef enum attr_form {
    INTS_AS_I64_LIST,  /* ints -> 1-D i64 */
    INT_AS_I64_LIST,   /* one int -> 1-D i64 of one element (TopK k) */
    FLOAT_AS_F32,      /* float -> f32 scalar */
} attr_form;

/* Before opset `since`, op `op` carried input `input` as attribute `attr`. */
typedef struct attr_input_rule {
    const char *op;
    int since;
    const char *attr;
    int input;
    attr_form form;
} attr_input_rule;

static const attr_input_rule attr_inputs[] = {
    {"Squeeze", 13, "axes", 1, INTS_AS_I64_LIST},
    {"Unsqueeze", 13, "axes", 1, INTS_AS_I64_LIST},
    {"ReduceSum", 13, "axes", 1, INTS_AS_I64_LIST},
    /* The other reductions take axes as an input only from opset 18; kiln ops that accept the
     * input form get it, the others keep the attribute. */
    {"ReduceMean", 18, "axes", 1, INTS_AS_I64_LIST},
    {"ReduceMax", 18, "axes", 1, INTS_AS_I64_LIST},
    {"ReduceMin", 18, "axes", 1, INTS_AS_I64_LIST},
    {"ReduceProd", 18, "axes", 1, INTS_AS_I64_LIST},
    {"ReduceL1", 18, "axes", 1, INTS_AS_I64_LIST},
    {"ReduceL2", 18, "axes", 1, INTS_AS_I64_LIST},
    {"ReduceLogSum", 18, "axes", 1, INTS_AS_I64_LIST},
    {"ReduceLogSumExp", 18, "axes", 1, INTS_AS_I64_LIST},
    {"ReduceSumSquare", 18, "axes", 1, INTS_AS_I64_LIST},
    {"Split", 13, "split", 1, INTS_AS_I64_LIST},
    {"Slice", 10, "starts", 1, INTS_AS_I64_LIST},
    {"Slice", 10, "ends", 2, INTS_AS_I64_LIST},
    {"Slice", 10, "axes", 3, INTS_AS_I64_LIST},
    {"Reshape", 5, "shape", 1, INTS_AS_I64_LIST},
    {"Pad", 2, "paddings", 1, INTS_AS_I64_LIST},
    {"Pad", 11, "pads", 1, INTS_AS_I64_LIST},
    {"Pad", 11, "value", 2, FLOAT_AS_F32},
    {"Clip", 11, "min", 1, FLOAT_AS_F32},
    {"Clip", 11, "max", 2, FLOAT_AS_F32},
    {"Dropout", 12, "ratio", 1, FLOAT_AS_F32},
    {"TopK", 10, "k", 1, INT_AS_I64_LIST},
};

/* ---- one kiln node in the making ---- */

typedef struct node_io {
    int in[MAX_NODE_IO], n_in;
    int out[MAX_NODE_IO], n_out;
    const char *consumed[8]; /* ONNX attributes turned into something else: not copied */
    int n_consumed;
} node_io;

static void consume(node_io *io, const char *attr) {
    assert(io->n_consumed < (int)(sizeof io->consumed / sizeof io->consumed[0]));
    io->consumed[io->n_consumed++] = attr;
}

static bool consumed(const node_io *io, const char *attr) {
    for (int i = 0; i < io->n_consumed; i++)
        if (strcmp(io->consumed[i], attr) == 0)
            return true;
    return false;
}

/* The node's ONNX inputs as value ids (-1 for omitted ones, trailing omitted ones dropped). */
static kiln_status resolve_inputs(kn_onnx_importer *im, const kn_onnx_node *n, node_io *io) {
    const Onnx__NodeProto *p = n->proto;
    if (p->n_input > MAX_NODE_IO)
        return kn_fail(KILN_ERR_UNSUPPORTED, "%zu inputs; at most %d supported", p->n_input,
                       MAX_NODE_IO);
    io->n_in = 0;
    for (size_t k = 0; k < p->n_input; k++) {
        int id = kn_onnx_value(im, p->input[k]);
        if (id == -1)
            return kn_fail(KILN_ERR_FORMAT, "input %zu '%s' names no value of the graph", k,
                           p->input[k]);
        io->in[k] = id < 0 ? -1 : id;
        if (id >= 0)
            io->n_in = (int)k + 1;
    }
    return KILN_OK;
}

/* The node's ONNX outputs as new values (trailing unnamed optional outputs dropped). */
static kiln_status make_outputs(kn_onnx_importer *im, const kn_onnx_node *n, node_io *io) {
    const Onnx__NodeProto *p = n->proto;
    if (p->n_output > MAX_NODE_IO)
        return kn_fail(KILN_ERR_UNSUPPORTED, "%zu outputs; at most %d supported", p->n_output,
                       MAX_NODE_IO);
    io->n_out = 0;
    for (size_t k = 0; k < p->n_output; k++)
        if (*str_or_empty(p->output[k]))
            io->n_out = (int)k + 1;
    if (io->n_out == 0)
        return kn_fail(KILN_ERR_FORMAT, "the node has no output");
    for (int k = 0; k < io->n_out; k++) {
        io->out[k] = kn_onnx_add_output(im, n, p->output[k]);
        if (io->out[k] < 0)
            return KILN_ERR_FORMAT;
    }
    return KILN_OK;
}

static kiln_status const_from_attr(kn_onnx_importer *im, const kn_onnx_node *n,
                                   const Onnx__AttributeProto *a, attr_form form, int *id) {
    Onnx__AttributeProto__AttributeType type = kn_onnx_attr_type(a);
    kn_shape shape = {0};
    switch (form) {
    case INTS_AS_I64_LIST:
        if (type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS)
            return kn_fail(KILN_ERR_FORMAT, "attribute '%s' must be ints", a->name);
        shape = kn_shape_of(1, (int64_t[]){(int64_t)a->n_ints});
        *id = kn_onnx_add_const(im, n->name, a->name, KN_I64, &shape, a->ints);
        break;
    case INT_AS_I64_LIST:
        if (type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT)
            return kn_fail(KILN_ERR_FORMAT, "attribute '%s' must be an int", a->name);
        shape = kn_shape_of(1, (int64_t[]){1});
        *id = kn_onnx_add_const(im, n->name, a->name, KN_I64, &shape, &a->i);
        break;
    case FLOAT_AS_F32:
        if (type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT)
            return kn_fail(KILN_ERR_FORMAT, "attribute '%s' must be a float", a->name);
        *id = kn_onnx_add_const(im, n->name, a->name, KN_F32, &shape, &a->f);
        break;
    }
    return *id < 0 ? KILN_ERR_NOMEM : KILN_OK;
}

/* Moves attributes that kiln's op `op` takes as inputs into constant inputs. */
static kiln_status attrs_to_inputs(kn_onnx_importer *im, const kn_onnx_node *n, const kn_op *op,
                                   node_io *io) {
    const char *op_type = str_or_empty(n->proto->op_type);
    for (size_t r = 0; r < sizeof attr_inputs / sizeof attr_inputs[0]; r++) {
        const attr_input_rule *rule = &attr_inputs[r];
        const Onnx__AttributeProto *a;
        if (strcmp(rule->op, op_type) != 0 || im->opset >= rule->since ||
            rule->input >= op->max_inputs || !(a = kn_onnx_attr(n->proto, rule->attr)))
            continue;
        if (rule->input < io->n_in && io->in[rule->input] >= 0)
            return kn_fail(KILN_ERR_FORMAT, "'%s' is given both as attribute and as input %d",
                           rule->attr, rule->input);
        while (io->n_in <= rule->input)
            io->in[io->n_in++] = -1;
        KN_TRY(const_from_attr(im, n, a, rule->form, &io->in[rule->input]));
        consume(io, rule->attr);
    }
    return KILN_OK;
}

/* ---- fine-tuning: which initializers are trainable ---- */

typedef struct trainable_slots {
    const char *op;
    unsigned params; /* bit k: input k is a parameter */
    unsigned state;  /* bit k: input k is updated by training without gradients */
} trainable_slots;

static const trainable_slots trainable[] = {
    {"Conv", 0x6, 0},  {"Gemm", 0x6, 0}, {"MatMul", 0x3, 0}, {"Add", 0x3, 0}, {"Mul", 0x3, 0},
    {"BatchNormalization", 0x6, 0x18}, {"LayerNormalization", 0x6, 0},
};

/* Ops that move a weight's elements without computing on them: exporters put them between a
 * parameter and its use (MatMul(x, Transpose(W)), a Slice of a fused q/k/v weight). */
static bool moves_data(const kn_op *op) {
    static const kn_op *const movers[] = {&kn_op_transpose, &kn_op_reshape, &kn_op_flatten, &kn_op_squeeze,
                                           &kn_op_unsqueeze, &kn_op_identity, &kn_op_slice};
    for (size_t i = 0; i < sizeof movers / sizeof movers[0]; i++)
        if (op == movers[i])
            return true;
    return false;
}

/* The value v comes from: itself, or the data input of the data-moving nodes that produce it. */
static int data_source(const kn_graph *g, int v) {
    while (g->values[v].kind == KN_VALUE_ACT && g->values[v].producer >= 0) {
        const kn_node *p = &g->nodes[g->values[v].producer];
        if (!moves_data(p->op) || p->n_in < 1 || p->in[0] < 0)
            break;
        v = p->in[0];
    }
    return v;
}

static void mark_trainable(kn_onnx_importer *im, const char *op, const node_io *io) {
    for (size_t t = 0; t < sizeof trainable / sizeof trainable[0]; t++) {
        if (strcmp(trainable[t].op, op) != 0)
            continue;
        for (int k = 0; k < io->n_in; k++) {
            int id = io->in[k] >= 0 ? data_source(im->g, io->in[k]) : -1;
            kn_value *v = id >= 0 ? &im->g->values[id] : NULL;
            /* Only the file's float initializers: values of Constant nodes stay constants. */
            if (!v || !kn_onnx_is_weight(im, id) || v->kind != KN_VALUE_CONST || v->dtype != KN_F32)
                continue;
            if ((trainable[t].params >> k) & 1u)
                v->kind = KN_VALUE_PARAM;
            else if ((trainable[t].state >> k) & 1u)
                v->kind = KN_VALUE_STATE;
        }
    }
}

/* ---- models older than opset 7 ---- */

/* Attributes of opsets 1-6 that carry nothing for inference: consumed_inputs (in-place hints, every op
 * before opset 6), is_test (BatchNormalization, Dropout: kiln's inference is the test mode) and Gemm's
 * broadcast (opset 7 always broadcasts C). The elementwise ops' broadcast and axis are rewritten by
 * upgrade_legacy_broadcast. */
static bool legacy_attr_dropped(const kn_onnx_importer *im, const char *op, const char *attr) {
    if (im->opset >= 7)
        return false;
    return strcmp(attr, "consumed_inputs") == 0 || strcmp(attr, "is_test") == 0 ||
           (strcmp(op, "Gemm") == 0 && strcmp(attr, "broadcast") == 0);
}

/* The ops that before opset 7 broadcast only with broadcast = 1, aligning B with A from `axis` on. */
static bool legacy_broadcasts(const char *op) {
    static const char *const names[] = {"Add", "Sub", "Mul", "Div", "Pow", "And", "Or", "Xor",
                                        "Equal", "Less", "Greater", "PRelu"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(op, names[i]) == 0)
            return true;
    return false;
}

/* Input 1 (B) lined up with input 0 (A) from A's dim `axis` on, as opsets 1-6 broadcast: B gets
 * trailing 1-dims by an Unsqueeze so that numpy broadcasting (opset 7) lines them up the same way. */
static kiln_status align_from_axis(kn_onnx_importer *im, const kn_onnx_node *n, node_io *io,
                                   int64_t axis) {
    const kn_value *a = &im->g->values[io->in[0]], *b = &im->g->values[io->in[1]];
    bool ranks_known = im->shapes_known || (a->kind != KN_VALUE_ACT && b->kind != KN_VALUE_ACT);
    if (!ranks_known)
        return kn_fail(KILN_ERR_UNSUPPORTED, "broadcast from an axis (opset %lld) needs the ranks "
                       "of both inputs", (long long)im->opset);
    int rank_a = a->shape.ndim, rank_b = b->shape.ndim;
    int64_t at = axis < 0 ? axis + rank_a : axis;
    if (at < 0 || at + rank_b > rank_a)
        return kn_fail(KILN_ERR_INVALID_ARG, "broadcast axis %lld does not place a %d-D input in a "
                       "%d-D one", (long long)axis, rank_b, rank_a);
    int trailing = rank_a - (int)at - rank_b;
    if (trailing == 0)
        return KILN_OK;
    int64_t axes[KN_MAX_DIMS];
    for (int k = 0; k < trailing; k++)
        axes[k] = rank_b + k;
    kn_shape axes_shape = kn_shape_of(1, (int64_t[]){trailing});
    int axes_id = kn_onnx_add_const(im, n->name, "broadcast_axes", KN_I64, &axes_shape, axes);
    int aligned = kn_onnx_add_temp(im, n->name, "aligned");
    if (axes_id < 0 || aligned < 0)
        return KILN_ERR_NOMEM;
    char name[512];
    snprintf(name, sizeof name, "%s/align", n->name);
    int node;
    KN_TRY(kn_graph_add_node(im->g, "Unsqueeze", name, 2, (int[]){io->in[1], axes_id}, 1, &aligned,
                             &node));
    KN_TRY(kn_onnx_finish_node(im, node));
    io->in[1] = aligned;
    return KILN_OK;
}

/* Opsets 1-6: A op B with broadcast = 1 and axis lines B up from `axis`; without axis, or with
 * broadcast = 0 (equal shapes), the newer op computes the same. PRelu-6's 1-D slope of more than
 * one value holds one slope per channel (dim 1). */
static kiln_status upgrade_legacy_broadcast(kn_onnx_importer *im, const kn_onnx_node *n,
                                            node_io *io) {
    if (io->n_in != 2 || io->in[0] < 0 || io->in[1] < 0)
        return KILN_OK;
    if (strcmp(str_or_empty(n->proto->op_type), "PRelu") == 0) {
        const kn_value *slope = &im->g->values[io->in[1]];
        bool per_channel = slope->kind != KN_VALUE_ACT && slope->shape.ndim == 1 &&
                           slope->shape.d[0] > 1;
        return per_channel ? align_from_axis(im, n, io, 1) : KILN_OK;
    }
    const Onnx__AttributeProto *broadcast = kn_onnx_attr(n->proto, "broadcast");
    const Onnx__AttributeProto *axis = kn_onnx_attr(n->proto, "axis");
    consume(io, "broadcast");
    consume(io, "axis");
    if (!broadcast || broadcast->i == 0 || !axis)
        return KILN_OK;
    return align_from_axis(im, n, io, axis->i);
}

/* Adds kiln node `op` with io's values and every ONNX attribute not consumed; returns its index
 * in *node for the caller to add attributes, then kn_onnx_finish_node. */
static kiln_status add_node(kn_onnx_importer *im, const kn_onnx_node *n, const char *op,
                            const char *name, const node_io *io, int *node) {
    if (im->for_training)
        mark_trainable(im, op, io);
    KN_TRY(kn_graph_add_node(im->g, op, name, io->n_in, io->in, io->n_out, io->out, node));
    const Onnx__NodeProto *p = n->proto;
    for (size_t i = 0; i < p->n_attribute; i++) {
        const Onnx__AttributeProto *a = p->attribute[i];
        if (a->name && (consumed(io, a->name) ||
                        legacy_attr_dropped(im, str_or_empty(p->op_type), a->name)))
            continue;
        KN_TRY(kn_onnx_copy_attr(im, n, *node, a));
    }
    return KILN_OK;
}

/* ONNX ops kiln does not run, and why. */
#define KN_NO_SUBGRAPHS "control flow: kiln's graphs have no nested subgraphs"
#define KN_NO_SEQUENCES "sequence and optional values: kiln's values are tensors"
#define KN_NO_STRINGS "string ops: kiln's string tensors only cross the boundary (Cast, ops that move data)"
#define KN_RANDOM "random draws: the expected values are numpy's generator's, which kiln's counter-based stream does not reproduce"
#define KN_TRAINING_DOMAIN "ai.onnx.preview.training: kiln trains with its own optimizers (kiln train)"
#define KN_NOT_YET "not implemented yet"
static const struct { const char *op, *reason; } missing_ops[] = {
    {"If", KN_NO_SUBGRAPHS}, {"Loop", KN_NO_SUBGRAPHS}, {"Scan", KN_NO_SUBGRAPHS},
    {"SequenceAt", KN_NO_SEQUENCES}, {"SequenceConstruct", KN_NO_SEQUENCES},
    {"SequenceEmpty", KN_NO_SEQUENCES}, {"SequenceErase", KN_NO_SEQUENCES},
    {"SequenceInsert", KN_NO_SEQUENCES}, {"SequenceLength", KN_NO_SEQUENCES},
    {"SequenceMap", KN_NO_SEQUENCES}, {"SplitToSequence", KN_NO_SEQUENCES},
    {"ConcatFromSequence", KN_NO_SEQUENCES}, {"Optional", KN_NO_SEQUENCES},
    {"OptionalGetElement", KN_NO_SEQUENCES}, {"OptionalHasElement", KN_NO_SEQUENCES},
    {"StringNormalizer", KN_NO_STRINGS}, {"TfIdfVectorizer", KN_NO_STRINGS},
    {"RegexFullMatch", KN_NO_STRINGS}, {"StringConcat", KN_NO_STRINGS}, {"StringSplit", KN_NO_STRINGS},
    {"Bernoulli", KN_RANDOM}, {"RandomNormal", KN_RANDOM},
    {"RandomNormalLike", KN_RANDOM}, {"RandomUniform", KN_RANDOM}, {"RandomUniformLike", KN_RANDOM},
    {"Multinomial", KN_RANDOM},

    {"DeformConv", KN_NOT_YET}, {"ImageDecoder", KN_NOT_YET},
    {"Gradient", KN_TRAINING_DOMAIN}, {"Adagrad", KN_TRAINING_DOMAIN}, {"Adam", KN_TRAINING_DOMAIN},
    {"Momentum", KN_TRAINING_DOMAIN},
};

const char *kn_onnx_missing_op(int i, const char **reason) {
    if (i < 0 || i >= (int)(sizeof missing_ops / sizeof missing_ops[0]))
        return NULL;
    *reason = missing_ops[i].reason;
    return missing_ops[i].op;
}

static kiln_status unsupported(const kn_onnx_importer *im, const kn_onnx_node *n) {
    const char *op_type = str_or_empty(n->proto->op_type), *reason = NULL, *name;
    for (int i = 0; (name = kn_onnx_missing_op(i, &reason)); i++)
        if (strcmp(name, op_type) == 0)
            return kn_fail(KILN_ERR_UNSUPPORTED, "op '%s' (opset %lld) is not supported: %s",
                           op_type, (long long)im->opset, reason);
    return kn_fail(KILN_ERR_UNSUPPORTED, "op '%s' (opset %lld) is not supported", op_type,
                   (long long)im->opset);
}

/* The 1:1 mapping: same op name, attributes copied, attribute-inputs moved. */
static kiln_status import_mapped(kn_onnx_importer *im, const kn_onnx_node *n) {
    const kn_op *op = kn_op_find(str_or_empty(n->proto->op_type));
    if (!op)
        return unsupported(im, n);
    node_io io = {0};
    KN_TRY(resolve_inputs(im, n, &io));
    KN_TRY(attrs_to_inputs(im, n, op, &io));
    if (im->opset < 7 && legacy_broadcasts(op->name))
        KN_TRY(upgrade_legacy_broadcast(im, n, &io));
    KN_TRY(make_outputs(im, n, &io));
    int node;
    KN_TRY(add_node(im, n, op->name, n->name, &io, &node));
    /* Concat before opset 4 joined along axis 1 when no axis was given. */
    if (im->opset < 4 && op == &kn_op_concat && !kn_onnx_attr(n->proto, "axis"))
        KN_TRY(kn_node_set_int(im->g, node, "axis", 1));
    return kn_onnx_finish_node(im, node);
}

/* ---- rewrites ---- */

static kiln_status import_constant(kn_onnx_importer *im, const kn_onnx_node *n) {
    const Onnx__NodeProto *p = n->proto;
    if (p->n_attribute != 1 || p->n_output != 1 || !*str_or_empty(p->output[0]))
        return kn_fail(KILN_ERR_FORMAT, "Constant needs exactly one attribute and one output");
    const Onnx__AttributeProto *a = p->attribute[0];
    const char *attr = str_or_empty(a->name), *out = p->output[0];
    kn_shape scalar = {0}, list;
    int id;
    if (strcmp(attr, "value") == 0 && a->t) {
        kn_dtype dtype;
        kn_shape shape;
        KN_TRY(kn_onnx_tensor_header(a->t, true, &dtype, &shape));
        KN_TRY(kn_onnx_tensor_check_data(a->t, im->base_dir, kn_shape_numel(&shape)));
        KN_TRY(kn_graph_add_value(im->g, out, KN_VALUE_CONST, dtype, &shape, &id));
        KN_TRY(kn_onnx_tensor_fill(a->t, im->base_dir, dtype, kn_shape_numel(&shape),
                                   im->g->values[id].data, &im->g->arena));
    } else if (strcmp(attr, "value_float") == 0 && a->has_f) {
        KN_TRY(kn_graph_add_value(im->g, out, KN_VALUE_CONST, KN_F32, &scalar, &id));
        *(float *)im->g->values[id].data = a->f;
    } else if (strcmp(attr, "value_int") == 0 && a->has_i) {
        KN_TRY(kn_graph_add_value(im->g, out, KN_VALUE_CONST, KN_I64, &scalar, &id));
        *(int64_t *)im->g->values[id].data = a->i;
    } else if (strcmp(attr, "value_floats") == 0) {
        list = kn_shape_of(1, (int64_t[]){(int64_t)a->n_floats});
        KN_TRY(kn_graph_add_value(im->g, out, KN_VALUE_CONST, KN_F32, &list, &id));
        if (a->n_floats)
            memcpy(im->g->values[id].data, a->floats, a->n_floats * sizeof(float));
    } else if (strcmp(attr, "value_ints") == 0) {
        list = kn_shape_of(1, (int64_t[]){(int64_t)a->n_ints});
        KN_TRY(kn_graph_add_value(im->g, out, KN_VALUE_CONST, KN_I64, &list, &id));
        if (a->n_ints)
            memcpy(im->g->values[id].data, a->ints, a->n_ints * sizeof(int64_t));
    } else {
        return kn_fail(KILN_ERR_UNSUPPORTED, "Constant with attribute '%s' is not supported "
                       "(value, value_float(s) and value_int(s) are)", attr);
    }
    return kn_onnx_bind(im, out, id);
}

/* Identity: kiln's Identity op when the table has one, else its output is its input. Exporters
 * store equal initializers once and recreate the others with Identity (PyTorch does for every
 * LayerNorm's ones and zeros): for fine-tuning such a copy is a weight of its own, not a tied one. */
static kiln_status import_identity(kn_onnx_importer *im, const kn_onnx_node *n) {
    const Onnx__NodeProto *p = n->proto;
    if (p->n_input != 1 || p->n_output != 1 || !*str_or_empty(p->output[0]))
        return kn_fail(KILN_ERR_FORMAT, "Identity needs one input and one output");
    int x = kn_onnx_value(im, p->input[0]);
    if (x < 0)
        return kn_fail(KILN_ERR_FORMAT, "input '%s' names no value of the graph",
                       str_or_empty(p->input[0]));
    const kn_value *v = &im->g->values[x];
    if (im->for_training && kn_onnx_is_weight(im, x) && v->dtype == KN_F32) {
        kn_shape shape = v->shape;
        int copy;
        KN_TRY(kn_graph_add_value(im->g, p->output[0], KN_VALUE_CONST, KN_F32, &shape, &copy));
        memcpy(im->g->values[copy].data, im->g->values[x].data,
               sizeof(float) * (size_t)kn_shape_numel(&shape));
        KN_TRY(kn_onnx_set_weight(im, copy));
        return kn_onnx_bind(im, p->output[0], copy);
    }
    if (kn_op_find("Identity"))
        return import_mapped(im, n);
    return kn_onnx_bind(im, p->output[0], x);
}

/* Cast: `to` holds an ONNX data type; kiln's Cast takes the kn_dtype code. */
static kiln_status import_cast(kn_onnx_importer *im, const kn_onnx_node *n) {
    const kn_op *op = kn_op_find("Cast");
    const Onnx__AttributeProto *to = kn_onnx_attr(n->proto, "to");
    if (!op)
        return unsupported(im, n);
    if (!to || kn_onnx_attr_type(to) != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT)
        return kn_fail(KILN_ERR_FORMAT, "Cast needs an int attribute 'to'");
    kn_dtype dtype;
    char buf[32];
    if (to->i < INT32_MIN || to->i > INT32_MAX || !kn_onnx_dtype_to_kiln((int32_t)to->i, &dtype))
        return kn_fail(KILN_ERR_UNSUPPORTED, "Cast to %s is not supported",
                       kn_onnx_dtype_name((int32_t)to->i, buf, sizeof buf));
    node_io io = {0};
    KN_TRY(resolve_inputs(im, n, &io));
    KN_TRY(make_outputs(im, n, &io));
    consume(&io, "to");
    int node;
    KN_TRY(add_node(im, n, op->name, n->name, &io, &node));
    KN_TRY(kn_node_set_int(im->g, node, "to", dtype));
    return kn_onnx_finish_node(im, node);
}

/* CastLike (opset 15): Cast to the dtype of input 1, which only lends its type. */
static kiln_status import_castlike(kn_onnx_importer *im, const kn_onnx_node *n) {
    if (!kn_op_find("Cast"))
        return unsupported(im, n);
    node_io io = {0};
    KN_TRY(resolve_inputs(im, n, &io));
    if (io.n_in != 2 || io.in[0] < 0 || io.in[1] < 0)
        return kn_fail(KILN_ERR_FORMAT, "CastLike needs inputs input and target_type");
    kn_dtype to = im->g->values[io.in[1]].dtype;
    io.n_in = 1;
    KN_TRY(make_outputs(im, n, &io));
    consume(&io, "saturate"); /* opset 19: float8 targets only, which kiln lacks */
    int node;
    KN_TRY(add_node(im, n, "Cast", n->name, &io, &node));
    KN_TRY(kn_node_set_int(im->g, node, "to", to));
    return kn_onnx_finish_node(im, node);
}

/* Scatter (opsets 9-10) is ScatterElements without a reduction. */
static kiln_status import_scatter(kn_onnx_importer *im, const kn_onnx_node *n) {
    if (!kn_op_find("ScatterElements"))
        return unsupported(im, n);
    node_io io = {0};
    KN_TRY(resolve_inputs(im, n, &io));
    KN_TRY(make_outputs(im, n, &io));
    int node;
    KN_TRY(add_node(im, n, "ScatterElements", n->name, &io, &node));
    return kn_onnx_finish_node(im, node);
}

/* The node as the same kiln op, except that the optional ONNX data type attribute `attr` becomes kiln's
 * "dtype" attribute, a kn_dtype code. */
static kiln_status import_dtype_attr(kn_onnx_importer *im, const kn_onnx_node *n, const char *attr) {
    const char *op_type = str_or_empty(n->proto->op_type);
    const Onnx__AttributeProto *a = kn_onnx_attr(n->proto, attr);
    kn_dtype dtype = KN_F32;
    char buf[32];
    if (!kn_op_find(op_type))
        return unsupported(im, n);
    if (a && (kn_onnx_attr_type(a) != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT || a->i < INT32_MIN ||
              a->i > INT32_MAX || !kn_onnx_dtype_to_kiln((int32_t)a->i, &dtype)))
        return kn_fail(KILN_ERR_UNSUPPORTED, "%s of %s %s is not supported", op_type, attr,
                       kn_onnx_dtype_name(a->i >= INT32_MIN && a->i <= INT32_MAX ? (int32_t)a->i : -1,
                                          buf, sizeof buf));
    node_io io = {0};
    KN_TRY(resolve_inputs(im, n, &io));
    KN_TRY(make_outputs(im, n, &io));
    consume(&io, attr);
    int node;
    KN_TRY(add_node(im, n, op_type, n->name, &io, &node));
    if (a)
        KN_TRY(kn_node_set_int(im->g, node, "dtype", dtype));
    return kn_onnx_finish_node(im, node);
}

/* EyeLike: `dtype` (optional) holds an ONNX data type. */
static kiln_status import_eyelike(kn_onnx_importer *im, const kn_onnx_node *n) {
    return import_dtype_attr(im, n, "dtype");
}

/* The window functions (HannWindow, ...) and MelWeightMatrix: `output_datatype` (optional) holds an ONNX
 * data type. */
static kiln_status import_window(kn_onnx_importer *im, const kn_onnx_node *n) {
    return import_dtype_attr(im, n, "output_datatype");
}

/* ConstantOfShape: the one-element tensor `value` becomes a float "value" and an int "dtype". */
static kiln_status import_constant_of_shape(kn_onnx_importer *im, const kn_onnx_node *n) {
    const kn_op *op = kn_op_find("ConstantOfShape");
    if (!op)
        return unsupported(im, n);
    const Onnx__AttributeProto *a = kn_onnx_attr(n->proto, "value");
    kn_dtype dtype = KN_F32;
    float value = 0;
    if (a) {
        if (!a->t)
            return kn_fail(KILN_ERR_FORMAT, "attribute 'value' must be a tensor");
        kn_shape shape;
        KN_TRY(kn_onnx_tensor_header(a->t, false, &dtype, &shape));
        if (kn_shape_numel(&shape) != 1)
            return kn_fail(KILN_ERR_FORMAT, "attribute 'value' must hold one element, not %lld",
                           (long long)kn_shape_numel(&shape));
        union { float f; double f64; int64_t i64; int32_t i32; uint8_t u8; int8_t i8; uint16_t u16;
                int16_t i16; uint32_t u32; } element;
        if (kn_dtype_size(dtype) > sizeof element)
            return kn_fail(KILN_ERR_UNSUPPORTED, "ConstantOfShape of dtype %s is not supported",
                           kn_dtype_name(dtype));
        KN_TRY(kn_onnx_tensor_fill(a->t, im->base_dir, dtype, 1, &element, NULL));
        switch (dtype) {
        case KN_F32: value = element.f; break;
        case KN_F64: value = (float)element.f64; break;
        case KN_I64: value = (float)element.i64; break;
        case KN_I32: value = (float)element.i32; break;
        case KN_I16: value = element.i16; break;
        case KN_U16: value = element.u16; break;
        case KN_U32: value = (float)element.u32; break;
        case KN_U8: case KN_BOOL: value = element.u8; break;
        case KN_I8: value = element.i8; break;
        default: return kn_fail(KILN_ERR_UNSUPPORTED, "ConstantOfShape of dtype %s is not supported",
                                kn_dtype_name(dtype));
        }
    }
    node_io io = {0};
    KN_TRY(resolve_inputs(im, n, &io));
    KN_TRY(make_outputs(im, n, &io));
    consume(&io, "value");
    int node;
    KN_TRY(add_node(im, n, op->name, n->name, &io, &node));
    KN_TRY(kn_node_set_float(im->g, node, "value", value));
    KN_TRY(kn_node_set_int(im->g, node, "dtype", dtype));
    return kn_onnx_finish_node(im, node);
}

/* Softmax, LogSoftmax and Hardmax before opset 13 flatten the input to 2-D at `axis` (default 1) and
 * normalise each row. When axis is the last dim that is the newer op; otherwise the rewrite is
 * Flatten(axis) -> op(axis = -1) -> Reshape back to Shape(x). */
static kiln_status import_softmax_family(kn_onnx_importer *im, const kn_onnx_node *n) {
    const char *op_type = str_or_empty(n->proto->op_type);
    const kn_op *op = kn_op_find(op_type);
    if (!op)
        return unsupported(im, n);
    if (im->opset >= 13)
        return import_mapped(im, n);
    node_io io = {0};
    KN_TRY(resolve_inputs(im, n, &io));
    if (io.n_in != 1 || n->proto->n_output != 1)
        return kn_fail(KILN_ERR_FORMAT, "%s needs one input and one output", op_type);
    const Onnx__AttributeProto *a = kn_onnx_attr(n->proto, "axis");
    if (a && kn_onnx_attr_type(a) != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT)
        return kn_fail(KILN_ERR_FORMAT, "attribute 'axis' must be an int");
    int64_t axis = a ? a->i : 1;
    const kn_value *x = &im->g->values[io.in[0]];
    int rank = x->shape.ndim;
    bool rank_known = im->shapes_known || x->kind != KN_VALUE_ACT;
    if (rank_known && (axis < -rank || axis >= (rank ? rank : 1)))
        return kn_fail(KILN_ERR_INVALID_ARG, "axis %lld is out of range for rank %d", (long long)axis,
                       rank);
    consume(&io, "axis");
    KN_TRY(make_outputs(im, n, &io));
    int node;
    if (rank_known && (axis < 0 ? axis + rank : axis) >= rank - 1) {
        KN_TRY(add_node(im, n, op->name, n->name, &io, &node));
        KN_TRY(kn_node_set_int(im->g, node, "axis", -1));
        return kn_onnx_finish_node(im, node);
    }
    if (!kn_op_find("Shape") || !kn_op_find("Flatten") || !kn_op_find("Reshape"))
        return kn_fail(KILN_ERR_UNSUPPORTED, "%s before opset 13 over a leading axis needs kiln's "
                       "Shape, Flatten and Reshape ops", op_type);
    int y = io.out[0];
    int shape = kn_onnx_add_temp(im, n->name, "shape");
    int flat = kn_onnx_add_temp(im, n->name, "flat");
    int normalized = kn_onnx_add_temp(im, n->name, "normalized");
    if (shape < 0 || flat < 0 || normalized < 0)
        return KILN_ERR_NOMEM;
    char name[512];
    snprintf(name, sizeof name, "%s/shape", n->name);
    KN_TRY(kn_graph_add_node(im->g, "Shape", name, 1, &io.in[0], 1, &shape, &node));
    KN_TRY(kn_onnx_finish_node(im, node));
    snprintf(name, sizeof name, "%s/flatten", n->name);
    KN_TRY(kn_graph_add_node(im->g, "Flatten", name, 1, &io.in[0], 1, &flat, &node));
    KN_TRY(kn_node_set_int(im->g, node, "axis", axis));
    KN_TRY(kn_onnx_finish_node(im, node));
    io.in[0] = flat;
    io.out[0] = normalized;
    KN_TRY(add_node(im, n, op->name, n->name, &io, &node));
    KN_TRY(kn_node_set_int(im->g, node, "axis", -1));
    KN_TRY(kn_onnx_finish_node(im, node));
    snprintf(name, sizeof name, "%s/reshape", n->name);
    KN_TRY(kn_graph_add_node(im->g, "Reshape", name, 2, (int[]){normalized, shape}, 1, &y, &node));
    return kn_onnx_finish_node(im, node);
}

/* BatchNormalization: opset 7-8's `spatial` (1 = per-channel statistics, kiln's only form) carries
 * no information; opset 14's training_mode is kiln's op's own attribute. */
static kiln_status import_batchnorm(kn_onnx_importer *im, const kn_onnx_node *n) {
    const Onnx__AttributeProto *spatial = kn_onnx_attr(n->proto, "spatial");
    if (spatial && spatial->i != 1)
        return kn_fail(KILN_ERR_UNSUPPORTED, "BatchNormalization with spatial=%lld (per-activation "
                       "statistics) is not supported", (long long)spatial->i);
    node_io io = {0};
    KN_TRY(resolve_inputs(im, n, &io));
    KN_TRY(make_outputs(im, n, &io));
    consume(&io, "spatial");
    consume(&io, "consumed_inputs");
    int node;
    KN_TRY(add_node(im, n, "BatchNormalization", n->name, &io, &node));
    return kn_onnx_finish_node(im, node);
}

/* Upsample (opsets 7-9) is Resize with asymmetric coordinates (nearest: floor), scales from the
 * attribute (opset 7-8) or input 1 (opset 9). */
static kiln_status import_upsample(kn_onnx_importer *im, const kn_onnx_node *n) {
    if (!kn_op_find("Resize"))
        return unsupported(im, n);
    node_io io = {0};
    KN_TRY(resolve_inputs(im, n, &io));
    int scales = io.n_in > 1 ? io.in[1] : -1;
    const Onnx__AttributeProto *a = kn_onnx_attr(n->proto, "scales");
    if (a) {
        if (scales >= 0 || kn_onnx_attr_type(a) != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS)
            return kn_fail(KILN_ERR_FORMAT, "Upsample's scales must be one floats attribute or input 1");
        kn_shape shape = kn_shape_of(1, (int64_t[]){(int64_t)a->n_floats});
        scales = kn_onnx_add_const(im, n->name, "scales", KN_F32, &shape, a->floats);
        if (scales < 0)
            return KILN_ERR_NOMEM;
        consume(&io, "scales");
    }
    if (scales < 0)
        return kn_fail(KILN_ERR_FORMAT, "Upsample has no scales");
    io.in[1] = -1; /* roi */
    io.in[2] = scales;
    io.n_in = 3;
    KN_TRY(make_outputs(im, n, &io));
    int node;
    KN_TRY(add_node(im, n, "Resize", n->name, &io, &node));
    KN_TRY(kn_node_set_string(im->g, node, "coordinate_transformation_mode", "asymmetric"));
    KN_TRY(kn_node_set_string(im->g, node, "nearest_mode", "floor"));
    return kn_onnx_finish_node(im, node);
}

/* Resize-10 took (X, scales) with Upsample's asymmetric coordinates; from opset 11 roi sits between. */
static kiln_status import_resize(kn_onnx_importer *im, const kn_onnx_node *n) {
    if (im->opset >= 11)
        return import_mapped(im, n);
    if (!kn_op_find("Resize"))
        return unsupported(im, n);
    node_io io = {0};
    KN_TRY(resolve_inputs(im, n, &io));
    if (io.n_in != 2)
        return kn_fail(KILN_ERR_FORMAT, "Resize-10 needs inputs X and scales");
    io.in[2] = io.in[1];
    io.in[1] = -1;
    io.n_in = 3;
    KN_TRY(make_outputs(im, n, &io));
    int node;
    KN_TRY(add_node(im, n, "Resize", n->name, &io, &node));
    KN_TRY(kn_node_set_string(im->g, node, "coordinate_transformation_mode", "asymmetric"));
    KN_TRY(kn_node_set_string(im->g, node, "nearest_mode", "floor"));
    return kn_onnx_finish_node(im, node);
}

/* ---- old forms kiln does not upgrade ---- */

/* Ops whose definition before opset `since` kiln cannot translate: Upsample-1 (width_scale and
 * height_scale), Tile-1 (tiles and axis inputs), and the recurrent ops, which kiln lacks anyway. */
static const struct { const char *op; int since; } not_upgraded[] = {
    {"Upsample", 7}, {"Tile", 6},
};

/* The opset from which kiln reads `op`: 1 unless its older form is in not_upgraded. */
static int first_readable_opset(const char *op) {
    for (size_t i = 0; i < sizeof not_upgraded / sizeof not_upgraded[0]; i++)
        if (strcmp(not_upgraded[i].op, op) == 0)
            return not_upgraded[i].since;
    return 1;
}

/* ---- the table ---- */

typedef struct op_rewrite {
    const char *op;
    kiln_status (*import)(kn_onnx_importer *im, const kn_onnx_node *n);
    const char *needs; /* the kiln op the rewrite produces; NULL: none */
    const char *note;  /* for docs/ops.md */
} op_rewrite;

static const op_rewrite rewrites[] = {
    {"Constant", import_constant, NULL,
     "becomes a constant value (value, value_float(s), value_int(s))"},
    {"Identity", import_identity, NULL,
     "kiln's Identity when the op table has it, else an alias of its input; tensors only (kiln has no "
     "sequence or optional values)"},
    {"Cast", import_cast, "Cast",
     "`to` becomes the kn_dtype code; to and from STRING as numpy's astype (docs/onnx.md, Strings)"},
    {"CastLike", import_castlike, "Cast",
     "becomes Cast to the dtype of input 1, STRING included"},
    {"EyeLike", import_eyelike, "EyeLike", "`dtype` becomes the kn_dtype code"},
    {"HannWindow", import_window, "HannWindow", "`output_datatype` becomes `dtype`, a kn_dtype code"},
    {"HammingWindow", import_window, "HammingWindow", "`output_datatype` becomes `dtype`, a kn_dtype code"},
    {"BlackmanWindow", import_window, "BlackmanWindow", "`output_datatype` becomes `dtype`, a kn_dtype code"},
    {"MelWeightMatrix", import_window, "MelWeightMatrix", "`output_datatype` becomes `dtype`, a kn_dtype code"},
    {"Scatter", import_scatter, "ScatterElements", "becomes ScatterElements (opsets 9-10)"},
    {"ConstantOfShape", import_constant_of_shape, "ConstantOfShape",
     "tensor `value` becomes float `value` + int `dtype`"},
    {"Softmax", import_softmax_family, "Softmax",
     "opset < 13: axis = last, or Flatten + Softmax + Reshape"},
    {"LogSoftmax", import_softmax_family, "LogSoftmax",
     "opset < 13: axis = last, or Flatten + LogSoftmax + Reshape"},
    {"Hardmax", import_softmax_family, "Hardmax",
     "opset < 13: axis = last, or Flatten + Hardmax + Reshape"},
    {"BatchNormalization", import_batchnorm, "BatchNormalization",
     "spatial=1 dropped; spatial=0 unsupported"},
    {"Dropout", NULL, NULL, "opset < 12: ratio attribute -> input"},
    {"Upsample", import_upsample, "Resize", "becomes Resize (asymmetric, nearest floor)"},
    {"Resize", import_resize, "Resize", "opset 10: (X, scales) -> (X, roi = none, scales), asymmetric"},
    {"Squeeze", NULL, NULL, "opset < 13: axes attribute -> input"},
    {"Unsqueeze", NULL, NULL, "opset < 13: axes attribute -> input"},
    {"ReduceSum", NULL, NULL, "opset < 13: axes attribute -> input"},
    {"ReduceMean", NULL, NULL, "axes attribute -> input"},
    {"ReduceMax", NULL, NULL, "axes attribute -> input"},
    {"ReduceMin", NULL, NULL, "axes attribute -> input"},
    {"ReduceProd", NULL, NULL, "axes attribute -> input"},
    {"ReduceL1", NULL, NULL, "axes attribute -> input"},
    {"ReduceL2", NULL, NULL, "axes attribute -> input"},
    {"ReduceLogSum", NULL, NULL, "axes attribute -> input"},
    {"ReduceLogSumExp", NULL, NULL, "axes attribute -> input"},
    {"ReduceSumSquare", NULL, NULL, "axes attribute -> input"},
    {"Split", NULL, NULL, "opset < 13: split attribute -> input"},
    {"Slice", NULL, NULL, "opset < 10: starts/ends/axes attributes -> inputs"},
    {"Pad", NULL, NULL, "opset < 11: pads/value attributes -> inputs"},
    {"Clip", NULL, NULL, "opset < 11: min/max attributes -> inputs"},
    {"TopK", NULL, NULL, "opset < 10: k attribute -> input"},
};

static const op_rewrite *find_rewrite(const char *op) {
    for (size_t i = 0; i < sizeof rewrites / sizeof rewrites[0]; i++)
        if (strcmp(rewrites[i].op, op) == 0)
            return &rewrites[i];
    return NULL;
}

bool kn_onnx_op_supported(const char *op_type, int64_t opset) {
    if (opset < KN_ONNX_MIN_OPSET || opset > KN_ONNX_MAX_OPSET || opset < first_readable_opset(op_type))
        return false;
    const op_rewrite *r = find_rewrite(op_type);
    if (r && r->import)
        return !r->needs || kn_op_find(r->needs);
    return kn_op_find(op_type) != NULL;
}

const char *kn_onnx_op_note(const char *op_type) {
    const op_rewrite *r = find_rewrite(op_type);
    return r ? r->note : NULL;
}

const char *kn_onnx_translated_op(int i) {
    for (size_t r = 0; r < sizeof rewrites / sizeof rewrites[0]; r++) {
        const op_rewrite *w = &rewrites[r];
        bool translated = w->import && (!w->needs || strcmp(w->needs, w->op) != 0);
        if (translated && i-- == 0)
            return rewrites[r].op;
    }
    return NULL;
}

/* Attributes of newer opsets whose only value kiln implements is the default: a model giving
 * another value is refused by name rather than run with a different meaning. */
static const struct { const char *op, *attr; int64_t only; } default_only[] = {
    {"QuantizeLinear", "block_size", 0},  /* opset 21: blocked quantization */
    {"DequantizeLinear", "block_size", 0},
    {"QuantizeLinear", "output_dtype", 0}, /* opset 21: the dtype comes from the zero point */
};

static kiln_status check_default_only(const kn_onnx_node *n) {
    const char *op_type = str_or_empty(n->proto->op_type);
    for (size_t r = 0; r < sizeof default_only / sizeof default_only[0]; r++) {
        const Onnx__AttributeProto *a;
        if (strcmp(default_only[r].op, op_type) != 0 ||
            !(a = kn_onnx_attr(n->proto, default_only[r].attr)))
            continue;
        bool is_default = kn_onnx_attr_type(a) == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS
                              ? true
                              : a->i == default_only[r].only;
        for (size_t k = 0; k < a->n_ints; k++)
            is_default = is_default && a->ints[k] == default_only[r].only;
        if (!is_default)
            return kn_fail(KILN_ERR_UNSUPPORTED, "%s with %s other than %lld is not supported",
                           op_type, default_only[r].attr, (long long)default_only[r].only);
    }
    return KILN_OK;
}

kiln_status kn_onnx_import_node(kn_onnx_importer *im, const kn_onnx_node *n) {
    const char *domain = str_or_empty(n->proto->domain);
    const char *op_type = str_or_empty(n->proto->op_type);
    if (*domain && strcmp(domain, "ai.onnx") != 0)
        return kn_fail(KILN_ERR_UNSUPPORTED, "op '%s' of domain '%s' is not supported (kiln reads "
                       "the default ONNX domain)", op_type, domain);
    KN_TRY(check_default_only(n));
    int since = first_readable_opset(op_type);
    if (im->opset < since)
        return kn_fail(KILN_ERR_UNSUPPORTED, "op '%s' (opset %lld) is not supported: kiln reads its "
                       "form of opset %d and later", op_type, (long long)im->opset, since);
    const op_rewrite *r = find_rewrite(op_type);
    return r && r->import ? r->import(im, n) : import_mapped(im, n);
}
