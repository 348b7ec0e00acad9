/* ONNX import: PyTorch exports of the three Fashion-MNIST spec models (tests/ref/make_onnx_fixtures.py)
 * run at batch 1 and 5 against PyTorch's outputs; fine-tuning import; older-opset rewrites and
 * constant folding; and hostile files — every truncation of a small model, flipped bytes, and one
 * model per check the importer makes (bad references, sizes, dims, external data paths ...).
 *
 * The small models are built here with protobuf-c, so each hostile variant is one changed field. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "core/rng.h"
#include "format/onnx/onnx_import.h"
#include "format/onnx/onnx_internal.h"
#include "kiln/train.h"
#include "support/fixture.h"
#include "train/tape.h"

/* ---- building small models ---- */

/* A ModelProto under construction; every allocation is kept in `owned` and freed by mb_free. */
typedef struct model_builder {
    Onnx__ModelProto model;
    Onnx__GraphProto graph;
    Onnx__OperatorSetIdProto opset, *opsets[1];
    Onnx__NodeProto *nodes[16];
    Onnx__TensorProto *inits[16];
    Onnx__ValueInfoProto *inputs[8], *outputs[8];
    void *owned[512];
    int n_owned;
} model_builder;

static void *mb_alloc(model_builder *b, size_t bytes) {
    void *p = calloc(1, bytes);
    if (!p || b->n_owned == (int)(sizeof b->owned / sizeof b->owned[0])) {
        fprintf(stderr, "model builder out of room\n");
        exit(2);
    }
    b->owned[b->n_owned++] = p;
    return p;
}

static char *mb_str(model_builder *b, const char *s) {
    char *copy = mb_alloc(b, strlen(s) + 1);
    strcpy(copy, s);
    return copy;
}

static void mb_init(model_builder *b, int64_t opset) {
    memset(b, 0, sizeof *b);
    onnx__model_proto__init(&b->model);
    onnx__graph_proto__init(&b->graph);
    onnx__operator_set_id_proto__init(&b->opset);
    b->model.has_ir_version = true;
    b->model.ir_version = 8;
    b->opset.has_version = true;
    b->opset.version = opset;
    b->opsets[0] = &b->opset;
    b->model.n_opset_import = 1;
    b->model.opset_import = b->opsets;
    b->model.graph = &b->graph;
    b->graph.node = b->nodes;
    b->graph.initializer = b->inits;
    b->graph.input = b->inputs;
    b->graph.output = b->outputs;
}

static void mb_free(model_builder *b) {
    for (int i = 0; i < b->n_owned; i++)
        free(b->owned[i]);
    b->n_owned = 0;
}

/* A tensor value: dims < 0 become dim_param "N". */
static Onnx__ValueInfoProto *mb_value(model_builder *b, const char *name, int elem_type, int ndim,
                                      const int64_t *dims) {
    Onnx__ValueInfoProto *v = mb_alloc(b, sizeof *v);
    Onnx__TypeProto *tp = mb_alloc(b, sizeof *tp);
    Onnx__TypeProto__Tensor *tt = mb_alloc(b, sizeof *tt);
    Onnx__TensorShapeProto *sp = mb_alloc(b, sizeof *sp);
    onnx__value_info_proto__init(v);
    onnx__type_proto__init(tp);
    onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(sp);
    v->name = mb_str(b, name);
    v->type = tp;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    tt->has_elem_type = true;
    tt->elem_type = elem_type;
    tt->shape = sp;
    sp->n_dim = (size_t)ndim;
    sp->dim = mb_alloc(b, sizeof *sp->dim * (size_t)(ndim ? ndim : 1));
    for (int k = 0; k < ndim; k++) {
        Onnx__TensorShapeProto__Dimension *d = mb_alloc(b, sizeof *d);
        onnx__tensor_shape_proto__dimension__init(d);
        if (dims[k] < 0) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            d->dim_param = mb_str(b, "N");
        } else {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d->dim_value = dims[k];
        }
        sp->dim[k] = d;
    }
    return v;
}

static void mb_input(model_builder *b, const char *name, int ndim, const int64_t *dims) {
    b->inputs[b->graph.n_input++] = mb_value(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, ndim, dims);
}

static void mb_output(model_builder *b, const char *name) {
    b->outputs[b->graph.n_output++] = mb_value(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 0, NULL);
}

static Onnx__TensorProto *mb_tensor(model_builder *b, const char *name, int type, int ndim,
                                    const int64_t *dims, const void *raw, size_t raw_bytes) {
    Onnx__TensorProto *t = mb_alloc(b, sizeof *t);
    onnx__tensor_proto__init(t);
    t->name = mb_str(b, name);
    t->has_data_type = true;
    t->data_type = type;
    t->n_dims = (size_t)ndim;
    t->dims = mb_alloc(b, sizeof(int64_t) * (size_t)(ndim ? ndim : 1));
    if (ndim)
        memcpy(t->dims, dims, sizeof(int64_t) * (size_t)ndim);
    if (raw) {
        t->has_raw_data = true;
        t->raw_data.len = raw_bytes;
        t->raw_data.data = mb_alloc(b, raw_bytes ? raw_bytes : 1);
        memcpy(t->raw_data.data, raw, raw_bytes);
    }
    return t;
}

static Onnx__TensorProto *mb_init_f32(model_builder *b, const char *name, int ndim, const int64_t *dims,
                                      const float *data) {
    int64_t n = 1;
    for (int k = 0; k < ndim; k++)
        n *= dims[k];
    Onnx__TensorProto *t = mb_tensor(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, ndim, dims, data,
                                     sizeof(float) * (size_t)n);
    b->inits[b->graph.n_initializer++] = t;
    return t;
}

static Onnx__NodeProto *mb_node(model_builder *b, const char *op, const char *name, int n_in,
                                const char *const *in, int n_out, const char *const *out) {
    Onnx__NodeProto *n = mb_alloc(b, sizeof *n);
    onnx__node_proto__init(n);
    n->op_type = mb_str(b, op);
    n->name = mb_str(b, name);
    n->n_input = (size_t)n_in;
    n->input = mb_alloc(b, sizeof(char *) * (size_t)(n_in ? n_in : 1));
    for (int i = 0; i < n_in; i++)
        n->input[i] = mb_str(b, in[i]);
    n->n_output = (size_t)n_out;
    n->output = mb_alloc(b, sizeof(char *) * (size_t)(n_out ? n_out : 1));
    for (int i = 0; i < n_out; i++)
        n->output[i] = mb_str(b, out[i]);
    n->attribute = mb_alloc(b, sizeof(Onnx__AttributeProto *) * 8);
    b->nodes[b->graph.n_node++] = n;
    return n;
}

static Onnx__AttributeProto *mb_attr(model_builder *b, Onnx__NodeProto *n, const char *name,
                                     Onnx__AttributeProto__AttributeType type) {
    Onnx__AttributeProto *a = mb_alloc(b, sizeof *a);
    onnx__attribute_proto__init(a);
    a->name = mb_str(b, name);
    a->has_type = true;
    a->type = type;
    n->attribute[n->n_attribute++] = a;
    return a;
}

static void mb_attr_int(model_builder *b, Onnx__NodeProto *n, const char *name, int64_t v) {
    Onnx__AttributeProto *a = mb_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    a->has_i = true;
    a->i = v;
}

static void mb_attr_float(model_builder *b, Onnx__NodeProto *n, const char *name, float v) {
    Onnx__AttributeProto *a = mb_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    a->has_f = true;
    a->f = v;
}

static void mb_attr_ints(model_builder *b, Onnx__NodeProto *n, const char *name, int count,
                         const int64_t *v) {
    Onnx__AttributeProto *a = mb_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    a->n_ints = (size_t)count;
    a->ints = mb_alloc(b, sizeof(int64_t) * (size_t)count);
    memcpy(a->ints, v, sizeof(int64_t) * (size_t)count);
}

static unsigned char *mb_pack(model_builder *b, size_t *size) {
    *size = onnx__model_proto__get_packed_size(&b->model);
    unsigned char *bytes = malloc(*size);
    onnx__model_proto__pack(&b->model, bytes);
    return bytes;
}

/* x (N, 4) -> Gemm(W (3, 4), B (3), transB) -> Relu -> y (N, 3). */
static const float gemm_w[12] = {0.5f, -1, 2, 0.25f, -0.5f, 1, 0, 1.5f, 1, 1, -1, -2};
static const float gemm_b[3] = {0.1f, -0.2f, 0.3f};

static void mb_gemm_relu(model_builder *b, int64_t opset) {
    mb_init(b, opset);
    mb_input(b, "x", 2, (int64_t[]){-1, 4});
    mb_init_f32(b, "W", 2, (int64_t[]){3, 4}, gemm_w);
    mb_init_f32(b, "B", 1, (int64_t[]){3}, gemm_b);
    Onnx__NodeProto *gemm = mb_node(b, "Gemm", "fc", 3, (const char *[]){"x", "W", "B"}, 1,
                                    (const char *[]){"h"});
    mb_attr_int(b, gemm, "transB", 1);
    mb_node(b, "Relu", "act", 1, (const char *[]){"h"}, 1, (const char *[]){"y"});
    mb_output(b, "y");
}

/* Imports the builder's model, expecting `want`; when `fragment` is not NULL the error message must
 * contain it. */
static void expect_import(model_builder *b, const char *base_dir, kiln_status want, const char *fragment,
                          const char *what) {
    size_t size;
    unsigned char *bytes = mb_pack(b, &size);
    kn_graph g;
    kiln_status st = kn_onnx_import_buffer(bytes, size, base_dir, &g);
    CHECK_MSG(st == want, "%s: status %s, expected %s (%s)", what, kiln_status_name(st),
              kiln_status_name(want), kiln_last_error());
    if (fragment)
        CHECK_MSG(strstr(kiln_last_error(), fragment) != NULL, "%s: message '%s' lacks '%s'", what,
                  kiln_last_error(), fragment);
    if (st != KILN_OK)
        printf("  %-44s -> %s\n", what, kiln_last_error());
    kn_graph_free(&g);
    free(bytes);
}

/* Imports the builder's model into g, checking it succeeds. */
static bool import_built(model_builder *b, kn_graph *g) {
    size_t size;
    unsigned char *bytes = mb_pack(b, &size);
    kiln_status st = kn_onnx_import_buffer(bytes, size, NULL, g);
    free(bytes);
    CHECK_MSG(st == KILN_OK, "%s", kiln_last_error());
    return st == KILN_OK;
}

/* Runs g forward at `batch` on input (batch rows) and returns output 0 in *out (a view into the tape,
 * valid until kn_tape_free). */
static bool run_batch(kn_graph *g, kn_tape *t, int64_t batch, const float *input,
                      const kn_tensor **out) {
    kiln_status st = kn_tape_init(t, g, batch, false);
    CHECK_MSG(st == KILN_OK, "bind: %s", kiln_last_error());
    if (st != KILN_OK)
        return false;
    kn_tensor *x = kn_tape_input(t, 0);
    memcpy(x->data, input, sizeof(float) * (size_t)kn_numel(x));
    st = kn_tape_forward(t, false);
    CHECK_MSG(st == KILN_OK, "forward: %s", kiln_last_error());
    *out = kn_tape_output(t, 0);
    return st == KILN_OK;
}

/* ---- PyTorch exports ---- */

static void check_torch_model(const char *name, int64_t params) {
    char path[1024], file[64];
    snprintf(path, sizeof path, "%s/tests/ref/data/onnx_%s.onnx", KILN_SOURCE_DIR, name);
    snprintf(file, sizeof file, "onnx_%s.bin", name);
    fixture f;
    if (!fixture_load(file, &f)) {
        CHECK(false);
        return;
    }
    const fixture_tensor *input = fixture_find(&f, "input"), *output = fixture_find(&f, "output");
    kn_graph g;
    kiln_status st = kn_onnx_import_file(path, &g);
    CHECK_MSG(st == KILN_OK && input && output, "%s: %s", name, kiln_last_error());
    if (st == KILN_OK && input && output) {
        const kn_value *x = &g.values[g.inputs[0]];
        CHECK_MSG(x->shape.ndim == 4 && x->shape.d[0] == -1 && x->shape.d[1] == 1 && x->shape.d[2] == 28,
                  "%s: the input keeps its dynamic batch dim", name);
        int64_t classes = output->shape.d[1];
        for (int64_t batch = 1; batch <= 5; batch += 4) {
            kn_tape t;
            const kn_tensor *y;
            if (run_batch(&g, &t, batch, input->data, &y)) {
                CHECK(y->shape.ndim == 2 && y->shape.d[0] == batch && y->shape.d[1] == classes);
                double diff = fixture_max_diff(kn_f32(y), output->data, batch * classes);
                double scale = fixture_max_abs(output->data, batch * classes);
                int known = 0;
                for (int i = 0; i < g.n_nodes; i++)
                    known += g.values[g.nodes[i].out[0]].data_from_inference;
                printf("  %s batch %lld: max |kiln - torch| = %.3g (outputs up to %.3g; %d nodes, %d "
                       "of them computed by shape inference)\n", name, (long long)batch, diff, scale,
                       g.n_nodes, known);
                CHECK_MSG(diff <= 1e-5 * (scale > 1 ? scale : 1), "%s batch %lld differs by %g", name,
                          (long long)batch, diff);
                kn_tape_free(&t);
            }
        }
    }
    kn_graph_free(&g);

    /* The user's path: kiln_model_load_onnx and a session, whose optimizer rewrites the graph (the ViT's
     * LayerNormalization and GELU, exported as several nodes each, become one op each). */
    kiln_model *model = NULL;
    kiln_session *session = NULL;
    st = kiln_model_load_onnx(path, &model);
    if (st == KILN_OK)
        st = kiln_session_create(model, NULL, &session);
    CHECK_MSG(st == KILN_OK, "%s through the C API: %s", name, kiln_last_error());
    if (st == KILN_OK && input && output) {
        int64_t dims[4] = {5, 1, 28, 28};
        const float *y = NULL;
        size_t bytes = 0;
        st = kiln_session_resize_input(session, 0, 4, dims);
        if (st == KILN_OK)
            st = kiln_session_set_input(session, 0, KILN_DTYPE_F32, input->data, sizeof(float) * 5 * 784);
        if (st == KILN_OK)
            st = kiln_session_run(session);
        if (st == KILN_OK)
            st = kiln_session_output(session, 0, (const void **)&y, &bytes);
        CHECK_MSG(st == KILN_OK && bytes == sizeof(float) * (size_t)kn_shape_numel(&output->shape),
                  "%s session: %s", name, kiln_last_error());
        if (st == KILN_OK && y) {
            int64_t n = kn_shape_numel(&output->shape);
            double diff = fixture_max_diff(y, output->data, n), scale = fixture_max_abs(output->data, n);
            printf("  %s session, batch 5: max |kiln - torch| = %.3g\n", name, diff);
            CHECK_MSG(diff <= 1e-5 * (scale > 1 ? scale : 1), "%s session differs by %g", name, diff);
        }
    }
    kiln_session_free(session);
    kiln_model_free(model);

    /* Fine-tuning: PyTorch's parameters become kiln parameters, BatchNorm statistics state. */
    st = kn_onnx_import_for_training(path, &g);
    CHECK_MSG(st == KILN_OK, "%s for training: %s", name, kiln_last_error());
    if (st == KILN_OK) {
        int n_state = 0;
        for (int v = 0; v < g.n_values; v++)
            n_state += g.values[v].kind == KN_VALUE_STATE;
        printf("  %s for training: %lld parameters (PyTorch: %lld), %d state tensors\n", name,
               (long long)kn_graph_param_count(&g), (long long)params, n_state);
        CHECK(kn_graph_param_count(&g) == params);
        CHECK(n_state == (strcmp(name, "cnn") == 0 ? 4 : 0));
        /* MatMul(x, Transpose(W)) became MatMul(x, W) with W transposed at import: every Linear weight
         * is a plain parameter input of its layer (10 in the ViT, 3 in the MLP, 2 in the CNN), so kiln
         * prune and kiln quantize find it; the outputs stay PyTorch's. */
        int layer_params = 0, weight_transposes = 0;
        for (int i = 0; i < g.n_nodes; i++) {
            const kn_node *n = &g.nodes[i];
            const kn_value *w = kn_node_input(&g, n, strcmp(n->op->name, "Transpose") == 0 ? 0 : 1);
            bool is_param = w && w->kind == KN_VALUE_PARAM;
            layer_params += is_param && (strcmp(n->op->name, "MatMul") == 0 || strcmp(n->op->name, "Gemm") == 0);
            weight_transposes += is_param && strcmp(n->op->name, "Transpose") == 0;
        }
        int want = strcmp(name, "vit") == 0 ? 10 : strcmp(name, "mlp") == 0 ? 3 : 2;
        CHECK_MSG(layer_params == want && weight_transposes == 0, "%s: %d MatMul/Gemm weights are parameters "
                  "(want %d), %d Transposes of parameters are left", name, layer_params, want, weight_transposes);
        kn_tape run;
        const kn_tensor *y;
        if (run_batch(&g, &run, 5, input->data, &y)) {
            double diff = fixture_max_diff(kn_f32(y), output->data, kn_numel(y));
            double scale = fixture_max_abs(output->data, kn_numel(y));
            printf("  %s for training: %d layer weights are parameters; max |kiln - torch| = %.3g\n", name,
                   layer_params, diff);
            CHECK(kn_numel(y) == kn_shape_numel(&output->shape) && diff <= 1e-5 * (scale > 1 ? scale : 1));
            kn_tape_free(&run);
        }
        kn_tape t;
        st = kn_tape_init(&t, &g, 2, true);
        CHECK_MSG(st == KILN_OK, "%s: %s", name, kiln_last_error());
        if (st == KILN_OK) {
            memcpy(kn_tape_input(&t, 0)->data, input->data, sizeof(float) * 2 * 784);
            CHECK_OK(kn_tape_forward(&t, false));
            kn_tensor *dy = kn_tape_output_grad(&t, 0);
            for (int64_t i = 0; i < kn_numel(dy); i++)
                kn_f32(dy)[i] = 1.0f;
            kn_tape_zero_param_grads(&t);
            CHECK_OK(kn_tape_backward(&t));
            int with_gradient = 0, n_params = 0;
            for (int v = 0; v < g.n_values; v++) {
                if (g.values[v].kind != KN_VALUE_PARAM)
                    continue;
                n_params++;
                const kn_tensor *gr = kn_tape_grad(&t, v);
                double m = gr->data ? fixture_max_abs(kn_f32(gr), kn_numel(gr)) : 0;
                with_gradient += m > 0;
            }
            CHECK_MSG(with_gradient == n_params, "%s: %d of %d parameters get a gradient", name,
                      with_gradient, n_params);
            kn_tape_free(&t);
        }
    }
    kn_graph_free(&g);
    fixture_free(&f);
}

/* ---- rewrites and folding ---- */

static void test_folding_and_constants(void) {
    /* y = Reshape(x @ Transpose(W0), Constant [-1, 3, 1]): the Transpose and the Constant are gone. */
    model_builder b;
    mb_init(&b, 13);
    mb_input(&b, "x", 2, (int64_t[]){-1, 4});
    mb_init_f32(&b, "W0", 2, (int64_t[]){3, 4}, gemm_w);
    mb_node(&b, "Transpose", "t", 1, (const char *[]){"W0"}, 1, (const char *[]){"WT"});
    mb_node(&b, "MatMul", "mm", 2, (const char *[]){"x", "WT"}, 1, (const char *[]){"h"});
    Onnx__NodeProto *c = mb_node(&b, "Constant", "c", 0, NULL, 1, (const char *[]){"target"});
    Onnx__AttributeProto *a = mb_attr(&b, c, "value_ints", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    a->n_ints = 3;
    a->ints = mb_alloc(&b, 3 * sizeof(int64_t));
    memcpy(a->ints, (int64_t[]){-1, 3, 1}, 3 * sizeof(int64_t));
    mb_node(&b, "Reshape", "r", 2, (const char *[]){"h", "target"}, 1, (const char *[]){"y"});
    mb_output(&b, "y");
    kn_graph g;
    if (import_built(&b, &g)) {
        CHECK_MSG(g.n_nodes == 2, "Transpose folded, Constant a value: %d nodes", g.n_nodes);
        int wt = kn_graph_find_value(&g, "WT");
        CHECK(wt >= 0 && g.values[wt].kind == KN_VALUE_CONST && g.values[wt].shape.d[0] == 4);
        const float x[8] = {1, 2, 3, 4, -1, 0.5f, 0, 2};
        kn_tape t;
        const kn_tensor *y;
        if (run_batch(&g, &t, 2, x, &y)) {
            CHECK(y->shape.ndim == 3 && y->shape.d[0] == 2 && y->shape.d[1] == 3 && y->shape.d[2] == 1);
            double diff = 0;
            for (int n = 0; n < 2; n++)
                for (int o = 0; o < 3; o++) {
                    float want = 0;
                    for (int k = 0; k < 4; k++)
                        want += x[n * 4 + k] * gemm_w[o * 4 + k];
                    diff = fmax(diff, fabs(kn_f32(y)[n * 3 + o] - want));
                }
            printf("  folded transpose + MatMul: max diff %.3g\n", diff);
            CHECK(diff < 1e-6);
            kn_tape_free(&t);
        }
    }
    kn_graph_free(&g);
    mb_free(&b);
}

static void test_old_opsets(void) {
    /* Opset 11: Softmax's axis 1 of a 2-D input is the last axis; ReduceMean and Dropout take their
     * axes and ratio as inputs. Nodes listed out of order are sorted. */
    model_builder b;
    mb_init(&b, 11);
    mb_input(&b, "x", 2, (int64_t[]){-1, 3});
    mb_node(&b, "Softmax", "sm", 1, (const char *[]){"p"}, 1, (const char *[]){"y"});
    Onnx__NodeProto *drop = mb_node(&b, "Dropout", "drop", 1, (const char *[]){"x"}, 1,
                                    (const char *[]){"d"});
    mb_attr_float(&b, drop, "ratio", 0.25f);
    Onnx__NodeProto *mean = mb_node(&b, "ReduceMean", "mean", 1, (const char *[]){"d"}, 1,
                                    (const char *[]){"m"});
    mb_attr_ints(&b, mean, "axes", 1, (int64_t[]){1});
    mb_node(&b, "Sub", "center", 2, (const char *[]){"d", "m"}, 1, (const char *[]){"p"});
    mb_output(&b, "y");
    kn_graph g;
    if (import_built(&b, &g)) {
        CHECK(g.n_nodes == 4 && strcmp(g.nodes[0].op->name, "Dropout") == 0 &&
              strcmp(g.nodes[3].op->name, "Softmax") == 0);
        const kn_node *d = &g.nodes[0], *m = &g.nodes[1], *sm = &g.nodes[3];
        CHECK(d->n_in == 2 && g.values[d->in[1]].kind == KN_VALUE_CONST &&
              *(float *)g.values[d->in[1]].data == 0.25f && !kn_node_attr(d, "ratio"));
        CHECK(m->n_in == 2 && g.values[m->in[1]].dtype == KN_I64 && !kn_node_attr(m, "axes"));
        CHECK(kn_node_int(sm, "axis", 0) == -1);
        const float x[6] = {1, 2, 3, -1, 0, 4};
        kn_tape t;
        const kn_tensor *y;
        if (run_batch(&g, &t, 2, x, &y)) {
            double diff = 0;
            for (int n = 0; n < 2; n++) {
                double sum = 0;
                for (int k = 0; k < 3; k++)
                    sum += exp(x[n * 3 + k]);
                for (int k = 0; k < 3; k++)
                    diff = fmax(diff, fabs(kn_f32(y)[n * 3 + k] - exp(x[n * 3 + k]) / sum));
            }
            printf("  opset 11 Softmax/ReduceMean/Dropout: max diff %.3g\n", diff);
            CHECK(diff < 1e-6);
            kn_tape_free(&t);
        }
    }
    kn_graph_free(&g);
    mb_free(&b);
}

static void test_initializer_encodings(void) {
    /* W in float16 raw_data (widened to f32), B in double_data (kept as f64, exactly), an initializer
     * also listed as a graph input (IR 3). */
    model_builder b;
    mb_gemm_relu(&b, 13);
    static const uint16_t halves[12] = {0x3800, 0xbc00, 0x4000, 0x3400, 0xb800, 0x3c00, /* gemm_w */
                                        0x0000, 0x3e00, 0x3c00, 0x3c00, 0xbc00, 0xc000};
    b.inits[0] = mb_tensor(&b, "W", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16, 2, (int64_t[]){3, 4},
                           halves, sizeof halves);
    Onnx__TensorProto *bias = mb_tensor(&b, "B", ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE, 1,
                                        (int64_t[]){3}, NULL, 0);
    bias->n_double_data = 3;
    bias->double_data = mb_alloc(&b, 3 * sizeof(double));
    for (int i = 0; i < 3; i++)
        bias->double_data[i] = gemm_b[i];
    b.inits[1] = bias;
    b.inputs[b.graph.n_input++] = mb_value(&b, "W", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16, 2,
                                           (int64_t[]){3, 4});
    kn_graph g;
    if (import_built(&b, &g)) {
        int w = kn_graph_find_value(&g, "W"), bi = kn_graph_find_value(&g, "B");
        CHECK(g.n_inputs == 1 && w >= 0 && bi >= 0);
        CHECK(g.values[w].dtype == KN_F32 && g.values[w].kind == KN_VALUE_CONST &&
              memcmp(g.values[w].data, gemm_w, sizeof gemm_w) == 0);
        CHECK(g.values[bi].dtype == KN_F64);
        for (int i = 0; i < 3 && g.values[bi].dtype == KN_F64; i++)
            CHECK(((const double *)g.values[bi].data)[i] == (double)gemm_b[i]);
    }
    kn_graph_free(&g);
    mb_free(&b);
}

static void mb_init_i64(model_builder *b, const char *name, int ndim, const int64_t *dims,
                        const int64_t *data) {
    int64_t n = 1;
    for (int k = 0; k < ndim; k++)
        n *= dims[k];
    b->inits[b->graph.n_initializer++] = mb_tensor(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__INT64, ndim,
                                                   dims, data, sizeof(int64_t) * (size_t)n);
}

static void test_shape_data(void) {
    /* PyTorch's x.reshape(x.shape[0], -1): Shape -> Gather -> Unsqueeze (opset 11: axes attribute)
     * -> Concat -> Reshape. The target is computed when shapes are inferred, for each batch size. */
    model_builder b;
    mb_init(&b, 11);
    mb_input(&b, "x", 3, (int64_t[]){-1, 2, 3});
    mb_init_i64(&b, "zero", 0, NULL, (int64_t[]){0});
    mb_init_i64(&b, "rest", 1, (int64_t[]){1}, (int64_t[]){-1});
    mb_node(&b, "Shape", "shape", 1, (const char *[]){"x"}, 1, (const char *[]){"s"});
    mb_node(&b, "Gather", "batch", 2, (const char *[]){"s", "zero"}, 1, (const char *[]){"n"});
    Onnx__NodeProto *u = mb_node(&b, "Unsqueeze", "unsq", 1, (const char *[]){"n"}, 1,
                                 (const char *[]){"n1"});
    mb_attr_ints(&b, u, "axes", 1, (int64_t[]){0});
    Onnx__NodeProto *cat = mb_node(&b, "Concat", "cat", 2, (const char *[]){"n1", "rest"}, 1,
                                   (const char *[]){"target"});
    mb_attr_int(&b, cat, "axis", 0);
    mb_node(&b, "Reshape", "flat", 2, (const char *[]){"x", "target"}, 1, (const char *[]){"y"});
    mb_output(&b, "y");
    kn_graph g;
    if (import_built(&b, &g)) {
        int target = kn_graph_find_value(&g, "target");
        CHECK(g.n_nodes == 5 && target >= 0 && !g.values[target].data);
        for (int64_t batch = 4; batch >= 2; batch -= 2) {
            float x[24];
            for (int i = 0; i < 24; i++)
                x[i] = (float)i;
            kn_tape t;
            const kn_tensor *y;
            if (run_batch(&g, &t, batch, x, &y)) {
                const kn_value *tv = &g.values[target];
                const int64_t *dims = tv->data;
                CHECK_MSG(tv->data_from_inference && dims && dims[0] == batch && dims[1] == -1,
                          "the Reshape target is computed at shape inference for batch %lld",
                          (long long)batch);
                CHECK(y->shape.ndim == 2 && y->shape.d[0] == batch && y->shape.d[1] == 6);
                CHECK(memcmp(y->data, x, sizeof(float) * (size_t)(batch * 6)) == 0);
                kn_tape_free(&t);
            }
        }
    }
    kn_graph_free(&g);
    mb_free(&b);

    /* Opset 11 Softmax over axis 1 of a 3-D input normalises over dims 1 and 2 together. */
    mb_init(&b, 11);
    mb_input(&b, "x", 3, (int64_t[]){-1, 2, 3});
    Onnx__NodeProto *sm = mb_node(&b, "Softmax", "sm", 1, (const char *[]){"x"}, 1,
                                  (const char *[]){"y"});
    mb_attr_int(&b, sm, "axis", 1);
    mb_output(&b, "y");
    if (import_built(&b, &g)) {
        CHECK_MSG(g.n_nodes == 4, "Shape, Flatten, Softmax, Reshape: %d nodes", g.n_nodes);
        const float x[12] = {1, 2, 3, 4, 5, 6, -1, 0, 1, 0.5f, 0.25f, 2};
        kn_tape t;
        const kn_tensor *y;
        if (run_batch(&g, &t, 2, x, &y)) {
            double diff = 0;
            for (int n = 0; n < 2; n++) {
                double sum = 0;
                for (int k = 0; k < 6; k++)
                    sum += exp(x[n * 6 + k]);
                for (int k = 0; k < 6; k++)
                    diff = fmax(diff, fabs(kn_f32(y)[n * 6 + k] - exp(x[n * 6 + k]) / sum));
            }
            printf("  opset 11 Softmax over a leading axis: max diff %.3g\n", diff);
            CHECK(y->shape.ndim == 3 && diff < 1e-6);
            kn_tape_free(&t);
        }
    }
    kn_graph_free(&g);
    mb_free(&b);

    /* ConstantOfShape of a constant shape is folded; Cast's `to` becomes a kn_dtype code. */
    mb_init(&b, 13);
    mb_input(&b, "x", 2, (int64_t[]){2, 3});
    mb_init_i64(&b, "dims", 1, (int64_t[]){2}, (int64_t[]){2, 3});
    Onnx__NodeProto *fill = mb_node(&b, "ConstantOfShape", "fill", 1, (const char *[]){"dims"}, 1,
                                    (const char *[]){"ones"});
    Onnx__AttributeProto *a = mb_attr(&b, fill, "value", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR);
    a->t = mb_tensor(&b, "v", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 1, (int64_t[]){1}, (float[]){1.5f},
                     sizeof(float));
    mb_node(&b, "Add", "add", 2, (const char *[]){"x", "ones"}, 1, (const char *[]){"sum"});
    Onnx__NodeProto *cast = mb_node(&b, "Cast", "cast", 1, (const char *[]){"sum"}, 1,
                                    (const char *[]){"y"});
    mb_attr_int(&b, cast, "to", ONNX__TENSOR_PROTO__DATA_TYPE__INT32);
    mb_output(&b, "y");
    if (import_built(&b, &g)) {
        int ones = kn_graph_find_value(&g, "ones");
        CHECK(g.n_nodes == 2 && ones >= 0 && g.values[ones].kind == KN_VALUE_CONST &&
              ((float *)g.values[ones].data)[5] == 1.5f);
        CHECK(kn_node_int(&g.nodes[1], "to", -1) == KN_I32);
    }
    kn_graph_free(&g);
    mb_free(&b);
}

/* ---- hostile files ---- */

static void test_truncations_and_flips(void) {
    model_builder b;
    mb_gemm_relu(&b, 13);
    size_t size;
    unsigned char *bytes = mb_pack(&b, &size);
    kn_graph g;
    CHECK_OK(kn_onnx_import_buffer(bytes, size, NULL, &g));
    kn_graph_free(&g);
    int accepted = 0;
    for (size_t len = 0; len < size; len++) {
        kiln_status st = kn_onnx_import_buffer(bytes, len, NULL, &g);
        accepted += st == KILN_OK;
        kn_graph_free(&g);
    }
    printf("  %zu truncations of a %zu-byte model: %d accepted\n", size, size, accepted);
    CHECK(accepted == 0);

    /* Every byte inverted, then random single-bit flips: whatever imports must also bind and run. */
    int imported = 0, ran = 0, tries = 0;
    uint64_t rng = 12345;
    for (size_t i = 0; i < size + 3000; i++, tries++) {
        unsigned char *mutated = malloc(size);
        memcpy(mutated, bytes, size);
        if (i < size) {
            mutated[i] ^= 0xff;
        } else {
            rng = kn_mix64(rng + i);
            mutated[rng % size] ^= (unsigned char)(1u << ((rng >> 32) % 8));
        }
        if (kn_onnx_import_buffer(mutated, size, NULL, &g) == KILN_OK) {
            imported++;
            kn_tape t;
            if (g.n_inputs == 1 && kn_tape_init(&t, &g, 2, false) == KILN_OK) {
                kn_tensor *x = kn_tape_input(&t, 0);
                if (x->dtype == KN_F32)
                    for (int64_t k = 0; k < kn_numel(x); k++)
                        kn_f32(x)[k] = 0.5f;
                ran += kn_tape_forward(&t, false) == KILN_OK;
                kn_tape_free(&t);
            }
        }
        kn_graph_free(&g);
        free(mutated);
    }
    printf("  %d mutated models: %d imported, %d ran\n", tries, imported, ran);
    CHECK(imported < tries);
    free(bytes);
    mb_free(&b);
}

static void test_bad_models(void) {
    model_builder b;

    mb_gemm_relu(&b, 13);
    expect_import(&b, NULL, KILN_OK, NULL, "the reference model");
    mb_free(&b);

    mb_gemm_relu(&b, 13);
    mb_node(&b, "FancyOp", "fancy", 1, (const char *[]){"y"}, 1, (const char *[]){"z"});
    expect_import(&b, NULL, KILN_ERR_UNSUPPORTED,
                  "node 'fancy' (index 2): op 'FancyOp' (opset 13) is not supported", "unsupported op");
    mb_free(&b);

    mb_gemm_relu(&b, 13);
    b.nodes[1]->domain = mb_str(&b, "com.microsoft");
    expect_import(&b, NULL, KILN_ERR_UNSUPPORTED, "domain 'com.microsoft'", "op of another domain");
    mb_free(&b);

    mb_gemm_relu(&b, 13);
    b.nodes[1]->input[0] = mb_str(&b, "nowhere");
    expect_import(&b, NULL, KILN_ERR_FORMAT, "'nowhere' names no value", "input naming no value");
    mb_free(&b);

    mb_gemm_relu(&b, 13);
    b.nodes[1]->output[0] = mb_str(&b, "h");
    expect_import(&b, NULL, KILN_ERR_FORMAT, "produced twice", "duplicate output");
    mb_free(&b);

    mb_gemm_relu(&b, 13);
    b.nodes[1]->output[0] = mb_str(&b, "W");
    expect_import(&b, NULL, KILN_ERR_FORMAT, "initializer", "output overwriting an initializer");
    mb_free(&b);

    mb_gemm_relu(&b, 13);
    b.nodes[0]->input[0] = mb_str(&b, "y");
    expect_import(&b, NULL, KILN_ERR_FORMAT, "cycle", "cycle");
    mb_free(&b);

    mb_gemm_relu(&b, 13);
    b.inits[0]->raw_data.len -= 4;
    expect_import(&b, NULL, KILN_ERR_FORMAT, "raw_data has 44 bytes", "raw_data too short");
    mb_free(&b);

    mb_gemm_relu(&b, 13);
    b.inits[0]->dims[0] = -3;
    expect_import(&b, NULL, KILN_ERR_FORMAT, "negative", "negative initializer dim");
    mb_free(&b);

    mb_gemm_relu(&b, 13);
    b.inputs[0]->type->tensor_type->shape->dim[1]->dim_value = -4;
    expect_import(&b, NULL, KILN_ERR_FORMAT, "negative", "negative input dim");
    mb_free(&b);

    mb_gemm_relu(&b, 13);
    b.inits[0]->dims[0] = (int64_t)1 << 40;
    b.inits[0]->dims[1] = (int64_t)1 << 40;
    expect_import(&b, NULL, KILN_ERR_SHAPE, "has more than 2^62 elements", "overflowing dims");
    mb_free(&b);

    mb_gemm_relu(&b, 13);
    b.inits[0] = mb_tensor(&b, "W", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 9,
                           (int64_t[]){1, 1, 1, 3, 1, 1, 4, 1, 1}, gemm_w, sizeof gemm_w);
    expect_import(&b, NULL, KILN_ERR_UNSUPPORTED, "rank 9", "rank 9");
    mb_free(&b);

    mb_gemm_relu(&b, 13);
    b.inits[0]->has_raw_data = false;
    b.inits[0]->n_float_data = 11;
    b.inits[0]->float_data = mb_alloc(&b, 11 * sizeof(float));
    expect_import(&b, NULL, KILN_ERR_FORMAT, "typed data field holds 11", "typed field count");
    mb_free(&b);

    mb_gemm_relu(&b, 13);
    b.inits[1]->n_int64_data = 3;
    b.inits[1]->int64_data = mb_alloc(&b, 3 * sizeof(int64_t));
    expect_import(&b, NULL, KILN_ERR_FORMAT, "int64_data is set in a FLOAT tensor",
                  "typed field of another type");
    mb_free(&b);

    mb_gemm_relu(&b, 13);
    Onnx__TensorProto *flag = mb_tensor(&b, "flag", ONNX__TENSOR_PROTO__DATA_TYPE__BOOL, 1,
                                        (int64_t[]){2}, NULL, 0);
    flag->n_int32_data = 2;
    flag->int32_data = mb_alloc(&b, 2 * sizeof(int32_t));
    flag->int32_data[1] = 2;
    b.inits[b.graph.n_initializer++] = flag;
    expect_import(&b, NULL, KILN_ERR_FORMAT, "does not fit data type BOOL", "bool out of range");
    mb_free(&b);

    mb_gemm_relu(&b, 6);
    b.nodes[1]->op_type = mb_str(&b, "Upsample");
    expect_import(&b, NULL, KILN_ERR_UNSUPPORTED, "op 'Upsample' (opset 6) is not supported: kiln "
                  "reads its form of opset 7 and later", "opset 6 and an op kiln does not upgrade");
    mb_free(&b);

    mb_gemm_relu(&b, 6);
    b.nodes[0]->op_type = mb_str(&b, "MatMul");
    b.nodes[0]->n_input = 2;
    b.nodes[0]->n_attribute = 0;
    b.inits[0]->dims[0] = 4;
    b.inits[0]->dims[1] = 3;
    expect_import(&b, NULL, KILN_OK, NULL, "opset 6, ops unchanged since");
    mb_free(&b);

    mb_gemm_relu(&b, 0);
    expect_import(&b, NULL, KILN_ERR_UNSUPPORTED, "opset 0 of the default domain", "opset 0");
    mb_free(&b);

    mb_gemm_relu(&b, 22);
    expect_import(&b, NULL, KILN_ERR_UNSUPPORTED, "opset 22 of the default domain is not supported "
                  "(kiln reads opsets 1 to 21)", "opset 22");
    mb_free(&b);

    mb_gemm_relu(&b, 13);
    b.opset.domain = mb_str(&b, "ai.onnx.ml");
    expect_import(&b, NULL, KILN_ERR_FORMAT, "no opset of the default", "no default-domain opset");
    mb_free(&b);

    mb_gemm_relu(&b, 13);
    b.outputs[0]->name = mb_str(&b, "ghost");
    expect_import(&b, NULL, KILN_ERR_FORMAT, "'ghost' is produced by no node",
                  "output produced by nothing");
    mb_free(&b);

    mb_gemm_relu(&b, 13);
    Onnx__NodeProto *c = mb_node(&b, "Constant", "c", 0, NULL, 1, (const char *[]){"k"});
    mb_attr(&b, c, "sparse_value", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSOR);
    expect_import(&b, NULL, KILN_ERR_UNSUPPORTED, "sparse_value", "sparse Constant");
    mb_free(&b);

    kn_graph g;
    CHECK(kn_onnx_import_buffer("", 0, NULL, &g) == KILN_ERR_FORMAT);
    kn_graph_free(&g);
    CHECK(kn_onnx_import_buffer("\xff\xff\xff\xff garbage", 13, NULL, &g) == KILN_ERR_FORMAT);
    kn_graph_free(&g);
    CHECK(kn_onnx_import_file("/nonexistent/model.onnx", &g) == KILN_ERR_IO);
    kn_graph_free(&g);
}

/* W stored in `location`: `offset` and `length` as strings, or NULL to leave them out. */
static void set_external(model_builder *b, const char *location, const char *offset,
                         const char *length) {
    Onnx__TensorProto *w = b->inits[0];
    w->has_raw_data = false;
    w->has_data_location = true;
    w->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    const char *keys[] = {"location", "offset", "length"}, *values[] = {location, offset, length};
    w->external_data = mb_alloc(b, 3 * sizeof *w->external_data);
    for (int i = 0; i < 3; i++) {
        if (!values[i])
            continue;
        Onnx__StringStringEntryProto *e = mb_alloc(b, sizeof *e);
        onnx__string_string_entry_proto__init(e);
        e->key = mb_str(b, keys[i]);
        e->value = mb_str(b, values[i]);
        w->external_data[w->n_external_data++] = e;
    }
}

static void write_file(const char *path, const void *data, size_t size) {
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(data, 1, size, f) == size);
    if (f)
        fclose(f);
}

static void test_external_data(void) {
    char dir[] = "/tmp/kiln_onnx_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(false);
        return;
    }
    char weights[256], outside[256], link[256], model_path[256], sub[256];
    snprintf(weights, sizeof weights, "%s/weights.bin", dir);
    snprintf(outside, sizeof outside, "%s.outside", dir);
    snprintf(link, sizeof link, "%s/link.bin", dir);
    snprintf(model_path, sizeof model_path, "%s/model.onnx", dir);
    snprintf(sub, sizeof sub, "%s/sub", dir);
    unsigned char blob[16 + sizeof gemm_w + 8] = {0};
    memcpy(blob + 16, gemm_w, sizeof gemm_w);
    write_file(weights, blob, sizeof blob);
    write_file(outside, blob, sizeof blob);
    CHECK(symlink(outside, link) == 0);
    CHECK(mkdir(sub, 0700) == 0);

    model_builder b;
    mb_gemm_relu(&b, 13);
    set_external(&b, "weights.bin", "16", "48");
    expect_import(&b, dir, KILN_OK, NULL, "external data");
    size_t size;
    unsigned char *bytes = mb_pack(&b, &size);
    write_file(model_path, bytes, size);
    free(bytes);
    kn_graph g;
    CHECK_OK(kn_onnx_import_file(model_path, &g));
    int w = kn_graph_find_value(&g, "W");
    CHECK(w >= 0 && memcmp(g.values[w].data, gemm_w, sizeof gemm_w) == 0);
    kn_graph_free(&g);
    expect_import(&b, NULL, KILN_ERR_UNSUPPORTED, "needs the model's directory",
                  "external data from memory");
    mb_free(&b);

    struct { const char *location, *offset, *length, *fragment; kiln_status want; } bad[] = {
        {"../weights.bin", "16", "48", "leaves the model's directory", KILN_ERR_FORMAT},
        {"sub/../../weights.bin", "16", "48", "leaves the model's directory", KILN_ERR_FORMAT},
        {"/etc/passwd", NULL, NULL, "leaves the model's directory", KILN_ERR_FORMAT},
        {"link.bin", "16", "48", "outside the model's directory", KILN_ERR_FORMAT},
        {"weights.bin", "40", "48", "48 bytes at offset 40", KILN_ERR_FORMAT},
        {"weights.bin", "16", "44", "44 bytes at offset 16", KILN_ERR_FORMAT},
        {"weights.bin", "999999", NULL, "past its end", KILN_ERR_FORMAT},
        {"weights.bin", "-1", NULL, "not a number", KILN_ERR_FORMAT},
        {"weights.bin", "18446744073709551616", NULL, "not a number", KILN_ERR_FORMAT},
        {"weights.bin", NULL, NULL, "72 bytes at offset 0", KILN_ERR_FORMAT},
        {"missing.bin", NULL, NULL, "cannot find external data", KILN_ERR_IO},
        {"sub", NULL, NULL, "not a regular file", KILN_ERR_FORMAT},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mb_gemm_relu(&b, 13);
        set_external(&b, bad[i].location, bad[i].offset, bad[i].length);
        char what[96];
        snprintf(what, sizeof what, "external '%s' +%s", bad[i].location,
                 bad[i].offset ? bad[i].offset : "0");
        expect_import(&b, dir, bad[i].want, bad[i].fragment, what);
        mb_free(&b);
    }
    unlink(link);
    unlink(weights);
    unlink(outside);
    unlink(model_path);
    rmdir(sub);
    rmdir(dir);
}

int main(void) {
    printf("PyTorch exports (opset 13, dynamic batch):\n");
    check_torch_model("mlp", 52650);
    check_torch_model("cnn", 26746);
    check_torch_model("vit", 5706);
    printf("rewrites:\n");
    test_folding_and_constants();
    test_old_opsets();
    test_initializer_encodings();
    test_shape_data();
    printf("hostile files:\n");
    test_truncations_and_flips();
    test_bad_models();
    test_external_data();
    return check_finish();
}
