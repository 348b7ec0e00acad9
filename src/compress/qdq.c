/* QDQ pairs after activations and quantized weight storage: see qdq.h. */
#include "compress/qdq.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/quant.h"
#include "ops/op.h"

/* "<base>/<suffix>" in g's arena, or NULL when out of memory. */
static char *derived_name(kn_graph *g, const char *base, const char *suffix) {
    size_t n = strlen(base) + strlen(suffix) + 2;
    char *name = kn_arena_alloc(&g->arena, n);
    if (name)
        snprintf(name, n, "%s/%s", base, suffix);
    return name;
}

/* Moves the last `count` nodes to index `pos`, shifting the nodes from pos on after them, and
 * recomputes every value's producer. */
static void nodes_move_last_to(kn_graph *g, int count, int pos) {
    kn_node moved[2];
    memcpy(moved, &g->nodes[g->n_nodes - count], sizeof(kn_node) * (size_t)count);
    memmove(&g->nodes[pos + count], &g->nodes[pos], sizeof(kn_node) * (size_t)(g->n_nodes - count - pos));
    memcpy(&g->nodes[pos], moved, sizeof(kn_node) * (size_t)count);
    for (int v = 0; v < g->n_values; v++)
        if (g->values[v].kind == KN_VALUE_ACT)
            g->values[v].producer = -1;
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_out; k++)
            g->values[g->nodes[i].out[k]].producer = i;
}

static kiln_status check_activation_params(const kn_graph *g, int v, float scale, int32_t zero_point,
                                           int bits, bool symmetric) {
    if (v < 0 || v >= g->n_values)
        return kn_fail(KILN_ERR_INVALID_ARG, "value %d does not exist", v);
    const kn_value *value = &g->values[v];
    if (value->dtype != KN_F32)
        return kn_fail(KILN_ERR_INVALID_ARG, "'%s' is %s; only f32 values are quantized", value->name,
                       kn_dtype_name(value->dtype));
    if (bits != 8)
        return kn_fail(KILN_ERR_UNSUPPORTED, "'%s': %d-bit activations; QuantizeLinear stores 8 bits",
                       value->name, bits);
    if (!(isfinite(scale) && scale >= FLT_MIN))
        return kn_fail(KILN_ERR_INVALID_ARG, "'%s': scale %g must be finite and > 0", value->name,
                       (double)scale);
    kn_quant_range r = kn_quant_range_of(bits, symmetric);
    if (symmetric ? zero_point != 0 : (zero_point < r.qmin || zero_point > r.qmax))
        return kn_fail(KILN_ERR_INVALID_ARG, "'%s': zero point %d is outside %s", value->name,
                       (int)zero_point, symmetric ? "{0} (symmetric)" : "[0, 255]");
    if (kn_qdq_dequantized_of(g, v) >= 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "'%s' is already quantized", value->name);
    return KILN_OK;
}

kiln_status kn_qdq_insert_activation(kn_graph *g, int v, float scale, int32_t zero_point, int bits,
                                     bool symmetric) {
    KN_TRY(check_activation_params(g, v, scale, zero_point, bits, symmetric));
    const char *base = g->values[v].name;
    kn_shape shape = g->values[v].shape, scalar = {0};
    kn_dtype level_type = symmetric ? KN_I8 : KN_U8;
    char *names[6] = {derived_name(g, base, "scale"),     derived_name(g, base, "zero_point"),
                      derived_name(g, base, "quantized"), derived_name(g, base, "dequantized"),
                      derived_name(g, base, "quantize"),  derived_name(g, base, "dequantize")};
    for (int i = 0; i < 6; i++)
        if (!names[i])
            return kn_fail(KILN_ERR_NOMEM, "out of memory naming the QDQ pair of '%s'", base);
    for (int i = 0; i < 4; i++)
        if (kn_graph_find_value(g, names[i]) >= 0)
            return kn_fail(KILN_ERR_INVALID_ARG, "a value named '%s' already exists", names[i]);

    int s, z, q, dq;
    KN_TRY(kn_graph_add_value(g, names[0], KN_VALUE_CONST, KN_F32, &scalar, &s));
    KN_TRY(kn_graph_add_value(g, names[1], KN_VALUE_CONST, level_type, &scalar, &z));
    KN_TRY(kn_graph_add_value(g, names[2], KN_VALUE_ACT, level_type, &shape, &q));
    KN_TRY(kn_graph_add_value(g, names[3], KN_VALUE_ACT, KN_F32, &shape, &dq));
    *(float *)g->values[s].data = scale;
    if (symmetric)
        *(int8_t *)g->values[z].data = (int8_t)zero_point;
    else
        *(uint8_t *)g->values[z].data = (uint8_t)zero_point;

    int pos = g->values[v].producer + 1; /* 0 for an input or initializer */
    int readers = g->n_nodes;            /* the nodes before the pair is added */
    int quantize, dequantize;
    KN_TRY(kn_graph_add_node(g, "QuantizeLinear", names[4], 3, (int[]){v, s, z}, 1, &q, &quantize));
    kiln_status st = kn_graph_add_node(g, "DequantizeLinear", names[5], 3, (int[]){q, s, z}, 1, &dq, &dequantize);
    if (st != KILN_OK) {
        g->n_nodes--; /* no half pair */
        return st;
    }
    for (int i = 0; i < readers; i++)
        for (int k = 0; k < g->nodes[i].n_in; k++)
            if (g->nodes[i].in[k] == v)
                g->nodes[i].in[k] = dq;
    nodes_move_last_to(g, 2, pos);
    return KILN_OK;
}

int kn_qdq_dequantized_of(const kn_graph *g, int v) {
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *quantize = &g->nodes[i];
        if (quantize->op != &kn_op_quantizelinear || quantize->in[0] != v)
            continue;
        for (int j = i + 1; j < g->n_nodes; j++)
            if (g->nodes[j].op == &kn_op_dequantizelinear && g->nodes[j].in[0] == quantize->out[0])
                return g->nodes[j].out[0];
    }
    return -1;
}

kiln_status kn_qdq_quantize_weight(kn_graph *g, int id, const kn_storage_spec *spec) {
    if (id < 0 || id >= g->n_values)
        return kn_fail(KILN_ERR_INVALID_ARG, "value %d does not exist", id);
    const kn_value *w = &g->values[id];
    bool initializer = w->kind == KN_VALUE_PARAM || w->kind == KN_VALUE_STATE || w->kind == KN_VALUE_CONST;
    if (!initializer || w->dtype != KN_F32 || !w->data)
        return kn_fail(KILN_ERR_INVALID_ARG, "'%s' is not an f32 initializer; only weights are stored "
                       "quantized", w->name);
    return kn_value_compress(g, id, spec);
}
