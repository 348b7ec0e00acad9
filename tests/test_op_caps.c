/* The op table's capability flags (kn_op.in_place, reads_only_shapes, trains_differently, per_image), and
 * which ops have the per-plan state hook (kn_op.prepare).
 *
 * 0. Each entry kn_op_<id> is the op named <id> (any case), as comparisons by pointer assume.
 * 1. Each flag is set on exactly the ops the name lists it replaced named (in the planner, shape
 *    inference and the ONNX importer): the lists are written below once, as the oracle, so an op that
 *    loses its flag, or gains one nobody checked, fails here.
 * 2. Each flag holds for what the op does: an in-place op run with its output over its input gives
 *    the same bits as run into a separate buffer; a shapes-only op gives the same output when its
 *    input has no data at all; a per-image op gives each image of a batch the bits it gives that image
 *    alone.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "check.h"
#include "core/rng.h"
#include "ops/op.h"

#define SHAPE(...) \
    kn_shape_of((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__})

static bool named(const kn_op *op, const char *const *names, int n) {
    for (int i = 0; i < n; i++)
        if (strcmp(op->name, names[i]) == 0)
            return true;
    return false;
}

/* The name lists as they stood before the flags (plan.c, core/graph.c, onnx_import.c). */
static void test_flags_match_the_old_lists(void) {
    static const char *const in_place[] = {"Relu", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Gelu", "Dropout"};
    static const char *const shapes_only[] = {"Shape", "Size"};
    static const char *const training[] = {"Dropout", "BatchNormalization"};
    /* and the list the session's batch split began with (runtime/session.c) */
    static const char *const per_image[] = {"Conv", "ConvPacked", "Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh",
                                            "HardSigmoid", "HardSwish", "Add", "Sub", "Mul", "Div",
                                            "GlobalAveragePool", "GlobalMaxPool", "MaxPool", "AveragePool",
                                            "BatchNormalization", "Identity"};
    int n_in_place = 0, n_shapes_only = 0, n_training = 0, n_per_image = 0;
    const kn_op *op;
    for (int i = 0; (op = kn_op_at(i)); i++) {
        CHECK_MSG(op->in_place == named(op, in_place, 7), "%s: in_place %d", op->name, op->in_place);
        CHECK_MSG(op->reads_only_shapes == named(op, shapes_only, 2), "%s: reads_only_shapes %d", op->name,
                  op->reads_only_shapes);
        CHECK_MSG(op->trains_differently == named(op, training, 2), "%s: trains_differently %d", op->name,
                  op->trains_differently);
        n_in_place += op->in_place;
        n_shapes_only += op->reads_only_shapes;
        CHECK_MSG(op->per_image == named(op, per_image, 19), "%s: per_image %d", op->name, op->per_image);
        n_training += op->trains_differently;
        n_per_image += op->per_image;
    }
    /* Every name in the lists is in the table. */
    CHECK(n_in_place == 7 && n_shapes_only == 2 && n_training == 2 && n_per_image == 19);
}

/* x of `shape` and `dtype` -> op -> y, shapes inferred; y's id in *y. */
static kiln_status one_node_graph_shaped(kn_graph *g, const kn_op *op, kn_shape shape, kn_dtype dtype, int *x,
                                         int *y) {
    kn_graph_init(g);
    kn_shape unknown = kn_shape_of(0, NULL);
    int node;
    KN_TRY(kn_graph_add_value(g, "x", KN_VALUE_INPUT, dtype, &shape, x));
    KN_TRY(kn_graph_add_value(g, "y", KN_VALUE_ACT, KN_F32, &unknown, y));
    KN_TRY(kn_graph_add_node(g, op->name, "n", 1, x, 1, y, &node));
    KN_TRY(kn_graph_add_input(g, *x));
    KN_TRY(kn_graph_add_output(g, *y));
    return kn_graph_infer_shapes(g);
}

/* x (2, 3, 5) of `dtype` -> op -> y. */
static kiln_status one_node_graph(kn_graph *g, const kn_op *op, kn_dtype dtype, int *x, int *y) {
    return one_node_graph_shaped(g, op, SHAPE(2, 3, 5), dtype, x, y);
}

static void fill_random(float *x, int64_t n, uint64_t seed) {
    kn_rng rng = kn_rng_seeded(seed);
    for (int64_t i = 0; i < n; i++)
        x[i] = 6.0f * kn_rng_uniform(&rng) - 3.0f;
}

static void test_in_place_ops_give_the_same_bits(void) {
    const kn_op *op;
    int checked = 0;
    for (int i = 0; (op = kn_op_at(i)); i++) {
        if (!op->in_place)
            continue;
        kn_graph g;
        int x, y;
        CHECK_OK(one_node_graph(&g, op, KN_F32, &x, &y));
        const kn_value *xv = &g.values[x], *yv = &g.values[y];
        int64_t n = kn_shape_numel(&xv->shape);
        /* The planner shares buffers of one size and dtype only; an in-place op keeps them. */
        CHECK_MSG(kn_shape_equal(&xv->shape, &yv->shape) && yv->dtype == KN_F32, "%s changes its shape", op->name);
        float input[30], separate[30], shared[30]; /* (2, 3, 5) */
        fill_random(input, n, 7 + (uint64_t)i);
        memcpy(shared, input, sizeof input);
        g.values[x].data = input;
        void *out_separate[1] = {separate}, *out_shared[1] = {shared};
        CHECK_OK(kn_graph_run_node(&g, &g.nodes[0], out_separate));
        g.values[x].data = shared;
        CHECK_OK(kn_graph_run_node(&g, &g.nodes[0], out_shared));
        CHECK_MSG(memcmp(separate, shared, sizeof separate) == 0, "%s in place differs", op->name);
        g.values[x].data = NULL; /* the caller's buffers, not the graph's */
        kn_graph_free(&g);
        checked++;
    }
    printf("%d in-place ops give the same bits in place\n", checked);
    CHECK(checked > 0);
}

static void test_shapes_only_ops_need_no_data(void) {
    const kn_op *op;
    int checked = 0;
    for (int i = 0; (op = kn_op_at(i)); i++) {
        if (!op->reads_only_shapes)
            continue;
        kn_graph g;
        int x, y;
        CHECK_OK(one_node_graph(&g, op, KN_F32, &x, &y));
        float input[30];
        fill_random(input, 30, 11);
        int64_t with_data[KN_MAX_DIMS] = {0}, without_data[KN_MAX_DIMS] = {0};
        void *out_with[1] = {with_data}, *out_without[1] = {without_data};
        CHECK(kn_shape_numel(&g.values[y].shape) <= KN_MAX_DIMS && g.values[y].dtype == KN_I64);
        g.values[x].data = input;
        CHECK_OK(kn_graph_run_node(&g, &g.nodes[0], out_with));
        g.values[x].data = NULL;
        CHECK_OK(kn_graph_run_node(&g, &g.nodes[0], out_without));
        CHECK_MSG(memcmp(with_data, without_data, sizeof with_data) == 0, "%s reads data", op->name);
        /* Shape inference computes it from the shape alone. */
        CHECK_OK(kn_graph_infer_shapes(&g));
        CHECK(g.values[y].data_from_inference &&
              memcmp(g.values[y].data, with_data, sizeof(int64_t) * (size_t)kn_shape_numel(&g.values[y].shape)) == 0);
        kn_graph_free(&g);
        checked++;
    }
    CHECK(checked == 2);
}

/* Each per-image op that takes one input and needs no attribute, run on a batch of 2 (2, 3, 4, 5) and on
 * each image alone: the batch's output holds each image's bits. (The others, and the batch split itself,
 * are held by test_runtime's test_batch_split.) */
static void test_per_image_ops_compute_images_alone(void) {
    const kn_op *op;
    int checked = 0;
    for (int i = 0; (op = kn_op_at(i)); i++) {
        kn_graph both, alone;
        int x, y, xa, ya;
        if (!op->per_image || op->min_inputs != 1 ||
            one_node_graph_shaped(&both, op, SHAPE(2, 3, 4, 5), KN_F32, &x, &y) != KILN_OK) {
            if (op->per_image && op->min_inputs == 1)
                kn_graph_free(&both);
            continue;
        }
        CHECK_OK(one_node_graph_shaped(&alone, op, SHAPE(1, 3, 4, 5), KN_F32, &xa, &ya));
        int64_t image_out = kn_shape_numel(&alone.values[ya].shape);
        CHECK(kn_shape_numel(&both.values[y].shape) == 2 * image_out && image_out <= 60);
        float input[120], batch_out[120], image_result[60]; /* (2, 3, 4, 5) */
        fill_random(input, 120, 13 + (uint64_t)i);
        both.values[x].data = input;
        void *out_batch[1] = {batch_out}, *out_image[1] = {image_result};
        CHECK_OK(kn_graph_run_node(&both, &both.nodes[0], out_batch));
        for (int b = 0; b < 2; b++) {
            alone.values[xa].data = input + 60 * b;
            CHECK_OK(kn_graph_run_node(&alone, &alone.nodes[0], out_image));
            CHECK_MSG(memcmp(image_result, batch_out + image_out * b, sizeof(float) * (size_t)image_out) == 0,
                      "%s: image %d differs alone", op->name, b);
        }
        both.values[x].data = alone.values[xa].data = NULL; /* the caller's buffers, not the graphs' */
        kn_graph_free(&both);
        kn_graph_free(&alone);
        checked++;
    }
    printf("%d per-image ops give each image the bits it gets alone\n", checked);
    CHECK(checked >= 10);
}

/* The per-plan state hook (kn_op.prepared_bytes, prepare): both or neither, on exactly the ops listed
 * here (a new one is added deliberately, with a check of its prepared forward against the unprepared
 * one, as tests/test_int8.c has for these); and kn_op_call_prepared hands forward the executor's state
 * itself when the call carries one. */
static void test_prepare_hooks(void) {
    static const char *const prepared[] = {"QLinearConvPacked", "QLinearGemmPacked", "MaxPoolInteger"};
    int n_prepared = 0;
    const kn_op *op;
    for (int i = 0; (op = kn_op_at(i)); i++) {
        CHECK_MSG((op->prepare == NULL) == (op->prepared_bytes == NULL), "%s: prepare and prepared_bytes differ",
                  op->name);
        CHECK_MSG((op->prepare != NULL) == named(op, prepared, 3), "%s: prepare %d", op->name, op->prepare != NULL);
        n_prepared += op->prepare != NULL;
    }
    CHECK(n_prepared == 3);
    kn_node node = {.op = &kn_op_maxpoolinteger, .name = "pool"};
    kn_op_ctx ctx = {0};
    _Alignas(64) unsigned char state[64] = {0};
    kn_op_call call = {.node = &node, .ctx = &ctx, .prepared = state};
    const void *got = NULL;
    CHECK_OK(kn_op_call_prepared(&call, &got));
    CHECK_MSG(got == state && ctx.prepared == NULL, "kn_op_call_prepared must hand over the call's own state");
    kn_op_ctx_release(&ctx);
}

/* Every entry's id (kn_op_<id>, which code compares nodes' ops with) is its name in lower case. */
static void test_entries_are_named_by_id(void) {
#define KN_OP_ID(id) {&kn_op_##id, #id},
    static const struct {
        const kn_op *op;
        const char *id;
    } entries[] = {KN_OPS(KN_OP_ID)};
#undef KN_OP_ID
    int n = (int)(sizeof entries / sizeof entries[0]);
    for (int i = 0; i < n; i++)
        CHECK_MSG(strcasecmp(entries[i].op->name, entries[i].id) == 0 && kn_op_at(i) == entries[i].op &&
                      kn_op_find(entries[i].op->name) == entries[i].op,
                  "kn_op_%s is named %s", entries[i].id, entries[i].op->name);
    CHECK(kn_op_at(n) == NULL);
}

int main(void) {
    test_entries_are_named_by_id();
    test_flags_match_the_old_lists();
    test_prepare_hooks();
    test_in_place_ops_give_the_same_bits();
    test_shapes_only_ops_need_no_data();
    test_per_image_ops_compute_images_alone();
    return check_finish();
}
