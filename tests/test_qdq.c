/* compress/qdq: a QuantizeLinear -> DequantizeLinear pair inserted after an input and after an
 * activation that is also a graph output; the runtime's outputs against the same arithmetic computed
 * here with core/quant.h, the node order, and the refusals. Weights stored quantized keep data equal
 * to their per-channel fake quantization. */
#include <string.h>

#include "check.h"
#include "support/graph_ids.h"
#include "compress/qdq.h"
#include "core/quant.h"
#include "runtime/runtime.h"

enum { ROWS = 3, IN = 5, OUT = 4 };

/* x (3, 5) -> Relu -> r -> Gemm(w (4, 5), b (4), transB) -> y; outputs y and r. */
static void build(kn_graph *g, int *x, int *r, int *w, int *b) {
    kn_graph_init(g);
    kn_shape none = {0};
    *x = test_add_value(g, "x", KN_VALUE_INPUT, KN_F32, &(kn_shape){2, {ROWS, IN}});
    *r = test_add_value(g, "r", KN_VALUE_ACT, KN_F32, &none);
    *w = test_add_value(g, "w", KN_VALUE_PARAM, KN_F32, &(kn_shape){2, {OUT, IN}});
    *b = test_add_value(g, "b", KN_VALUE_PARAM, KN_F32, &(kn_shape){1, {OUT}});
    int y = test_add_value(g, "y", KN_VALUE_ACT, KN_F32, &none);
    float *wd = g->values[*w].data, *bd = g->values[*b].data;
    for (int i = 0; i < OUT * IN; i++)
        wd[i] = 0.37f * (float)((i * 7) % 11) - 1.6f;
    for (int i = 0; i < OUT; i++)
        bd[i] = 0.25f * (float)i - 0.3f;
    test_add_node(g, "Relu", "relu", 1, x, 1, r);
    int gemm = test_add_node(g, "Gemm", "gemm", 3, (int[]){*r, *w, *b}, 1, &y);
    kn_node_set_int(g, gemm, "transB", 1);
    g->inputs[g->n_inputs++] = *x;
    g->outputs[g->n_outputs++] = y;
    g->outputs[g->n_outputs++] = *r;
    CHECK_OK(kn_graph_infer_shapes(g));
}

static int node_index(const kn_graph *g, const char *name) {
    for (int i = 0; i < g->n_nodes; i++)
        if (strcmp(g->nodes[i].name, name) == 0)
            return i;
    return -1;
}

static void check_refusals(void) {
    kn_graph g;
    int x, r, w, b;
    build(&g, &x, &r, &w, &b);
    CHECK(kn_qdq_insert_activation(&g, r, 0.1f, 0, 4, false) == KILN_ERR_UNSUPPORTED);
    CHECK(kn_qdq_insert_activation(&g, r, 0.0f, 0, 8, false) == KILN_ERR_INVALID_ARG);
    CHECK(kn_qdq_insert_activation(&g, r, INFINITY, 0, 8, false) == KILN_ERR_INVALID_ARG);
    CHECK(kn_qdq_insert_activation(&g, r, 0.1f, 3, 8, true) == KILN_ERR_INVALID_ARG);
    CHECK(kn_qdq_insert_activation(&g, r, 0.1f, 256, 8, false) == KILN_ERR_INVALID_ARG);
    CHECK(kn_qdq_insert_activation(&g, 99, 0.1f, 0, 8, false) == KILN_ERR_INVALID_ARG);
    CHECK(g.n_nodes == 2 && g.n_values == 5); /* refusals add nothing */
    CHECK_OK(kn_qdq_insert_activation(&g, r, 0.1f, 0, 8, false));
    CHECK(kn_qdq_insert_activation(&g, r, 0.2f, 0, 8, false) == KILN_ERR_INVALID_ARG);
    CHECK(kn_qdq_quantize_weight(&g, r, &(kn_storage_spec){.encoding = KN_ENC_AFFINE_I8, .axis = 0})
          == KILN_ERR_INVALID_ARG);
    float *wd = g.values[w].data;
    wd[3] = NAN;
    CHECK(kn_qdq_quantize_weight(&g, w, &(kn_storage_spec){.encoding = KN_ENC_AFFINE_I8, .axis = 0})
          == KILN_ERR_INVALID_ARG);
    CHECK(g.values[w].storage == NULL);
    kn_graph_free(&g);
}

int main(void) {
    check_refusals();

    kn_graph g;
    int x, r, w, b;
    build(&g, &x, &r, &w, &b);
    const float x_scale = 0.05f, r_scale = 0.02f;
    const int32_t x_zero = 3;
    CHECK_OK(kn_qdq_insert_activation(&g, r, r_scale, 0, 8, true));
    CHECK_OK(kn_qdq_insert_activation(&g, x, x_scale, x_zero, 8, false));
    CHECK_OK(kn_qdq_quantize_weight(&g, w, &(kn_storage_spec){.encoding = KN_ENC_AFFINE_I8, .symmetric = true,
                                                              .axis = 0}));

    /* Order: x's pair first, then relu, r's pair, gemm; gemm reads r's dequantized value, the graph
     * output is still r. */
    int xq = node_index(&g, "x/quantize"), xdq = node_index(&g, "x/dequantize");
    int relu = node_index(&g, "relu"), rq = node_index(&g, "r/quantize"), rdq = node_index(&g, "r/dequantize");
    int gemm = node_index(&g, "gemm");
    CHECK(g.n_nodes == 6 && xq == 0 && xdq == 1 && relu == 2 && rq == 3 && rdq == 4 && gemm == 5);
    int r_dq = kn_qdq_dequantized_of(&g, r);
    CHECK(r_dq >= 0 && strcmp(g.values[r_dq].name, "r/dequantized") == 0);
    CHECK(g.nodes[gemm].in[0] == r_dq && g.nodes[relu].in[0] == kn_qdq_dequantized_of(&g, x));
    CHECK(g.outputs[1] == r && g.values[r_dq].producer == rdq && g.values[r].producer == relu);
    CHECK(g.values[kn_graph_find_value(&g, "x/zero_point")].dtype == KN_U8);
    CHECK(g.values[kn_graph_find_value(&g, "r/zero_point")].dtype == KN_I8);
    CHECK_OK(kn_graph_infer_shapes(&g));

    /* The expected outputs, computed with the stored weight and core/quant.h. */
    float xs[ROWS * IN], expect_y[ROWS * OUT], expect_r[ROWS * IN];
    const float *wd = g.values[w].data, *bd = g.values[b].data;
    CHECK(g.values[w].storage != NULL);
    for (int i = 0; i < ROWS * IN; i++)
        xs[i] = 0.13f * (float)((i * 5) % 13) - 0.9f + (i == 4 ? 0.025f : 0.0f); /* one tie */
    float rq_values[ROWS * IN];
    kn_quant_range u8 = kn_quant_range_of(8, false), i8 = kn_quant_range_of(8, true);
    for (int i = 0; i < ROWS * IN; i++) {
        expect_r[i] = fmaxf(kn_quant_fake(xs[i], x_scale, x_zero, u8), 0.0f);
        rq_values[i] = kn_quant_fake(expect_r[i], r_scale, 0, i8);
    }
    for (int n = 0; n < ROWS; n++)
        for (int o = 0; o < OUT; o++) {
            double sum = bd[o];
            for (int k = 0; k < IN; k++)
                sum += (double)rq_values[n * IN + k] * wd[o * IN + k];
            expect_y[n * OUT + o] = (float)sum;
        }

    kiln_model *model = NULL;
    kiln_session *session = NULL;
    CHECK_OK(kn_model_from_graph(&g, &model));
    CHECK_OK(kiln_session_create(model, NULL, &session));
    CHECK_OK(kiln_session_resize_input(session, 0, 2, (int64_t[]){ROWS, IN}));
    CHECK_OK(kiln_session_set_input(session, 0, KILN_DTYPE_F32, xs, sizeof xs));
    CHECK_OK(kiln_session_run(session));
    const void *y_data = NULL, *r_data = NULL;
    CHECK_OK(kiln_session_output(session, 0, &y_data, NULL));
    CHECK_OK(kiln_session_output(session, 1, &r_data, NULL));
    double worst_y = 0, worst_r = 0;
    for (int i = 0; y_data && i < ROWS * OUT; i++)
        worst_y = fmax(worst_y, fabs(((const float *)y_data)[i] - expect_y[i]));
    for (int i = 0; r_data && i < ROWS * IN; i++)
        worst_r = fmax(worst_r, fabs(((const float *)r_data)[i] - expect_r[i]));
    printf("largest difference from the reference: y %.3g, r %.3g\n", worst_y, worst_r);
    CHECK(y_data && r_data && worst_y <= 1e-5 && worst_r == 0);
    kiln_session_free(session);
    kiln_model_free(model);
    return check_finish();
}
