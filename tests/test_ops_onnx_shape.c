/* ONNX shape, indexing, conversion and quantization ops: Identity, Shape, Gather, Slice, Split,
 * Squeeze, Unsqueeze, Expand, Tile, Range, ConstantOfShape, Cast, Pad, Resize, QuantizeLinear,
 * DequantizeLinear, and the dtype-generic Flatten, Reshape, Transpose, Concat and Dropout (eval).
 *
 * Forward against hand-worked cases mirrored from the ONNX backend node tests (the literal arrays
 * below come from /usr/share/libonnx-testdata/data/node/test_<op>*) and against naive index loops;
 * backward against finite differences and the accumulate contract; f16 conversion exhaustively; and
 * clear errors on bad input. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "support/graph_ids.h"
#include "core/rng.h"
#include "core/status.h"
#include "core/threads.h"
#include "ops/op.h"
#include "support/opcheck.h"

#define SHAPE(...)                                                                   \
    kn_shape_of((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)),          \
                (int64_t[]){__VA_ARGS__})
#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- graph building ---- */

static int add_value(kn_graph *g, const char *name, kn_value_kind kind, kn_dtype dtype,
                     kn_shape s) {
    int id = test_add_value(g, name, kind, dtype, &s);
    CHECK_MSG(id >= 0, "%s", kiln_last_error());
    return id;
}

/* A trainable f32 input filled with uniform numbers in [-1, 1). */
static int add_param(kn_graph *g, const char *name, kn_shape s, uint64_t seed) {
    int id = add_value(g, name, KN_VALUE_PARAM, KN_F32, s);
    kn_rng rng = kn_rng_seeded(seed);
    float *p = g->values[id].data;
    for (int64_t i = 0; i < kn_shape_numel(&s); i++)
        p[i] = 2 * kn_rng_uniform(&rng) - 1;
    return id;
}

/* A constant holding a copy of `data`. */
static int add_const(kn_graph *g, const char *name, kn_dtype dtype, kn_shape s, const void *data) {
    int id = add_value(g, name, KN_VALUE_CONST, dtype, s);
    size_t bytes = (size_t)kn_shape_numel(&s) * kn_dtype_size(dtype);
    if (bytes)
        memcpy(g->values[id].data, data, bytes);
    return id;
}

static int add_i64(kn_graph *g, const char *name, int n, const int64_t *v) {
    return add_const(g, name, KN_I64, SHAPE(n), v);
}

static int add_output(kn_graph *g, const char *name) {
    return add_value(g, name, KN_VALUE_ACT, KN_F32, kn_shape_of(0, NULL));
}

static int add_node(kn_graph *g, const char *op, int n_in, const int *in, int n_out,
                    const int *out) {
    int node = test_add_node(g, op, "node", n_in, in, n_out, out);
    CHECK_MSG(node == 0, "%s", kiln_last_error());
    return node;
}

static float *data_of(kn_graph *g, int id) { return g->values[id].data; }

/* ---- running the single node ---- */

static kn_tensor *forward(kn_graph *g) {
    kn_tensor *out = opcheck_forward(g, 0, false);
    CHECK_MSG(out != NULL, "forward failed: %s", kiln_last_error());
    return out;
}

static void check_infer_fails(kn_graph *g, kiln_status status, const char *needle) {
    kiln_status st = kn_graph_infer_shapes(g);
    CHECK_MSG(st == status, "expected status %s, got %s (%s)", kiln_status_name(status),
              kiln_status_name(st), kiln_last_error());
    CHECK_MSG(strstr(kiln_last_error(), needle) != NULL, "message '%s' lacks '%s'",
              kiln_last_error(), needle);
    printf("  error as expected: %s\n", kiln_last_error());
}

static void check_shape(const kn_tensor *t, kn_shape expected, const char *what) {
    char got[96], want[96];
    CHECK_MSG(kn_shape_equal(&t->shape, &expected), "%s: shape %s, want %s", what,
              kn_shape_str(&t->shape, got, sizeof got), kn_shape_str(&expected, want, sizeof want));
}

/* Runs node 0 on the graph's current values without re-running shape inference: forward into
 * outputs of the inferred shapes, then backward when dy is given (din[i] NULL: no gradient). out0,
 * when given, receives output 0 as f32. */
static kiln_status run_node(kn_graph *g, float *out0, const float *dy, float *const *din) {
    const kn_node *n = &g->nodes[0];
    kn_tensor in[8], out[8], dx[8], dout;
    kn_tensor *in_p[8] = {0}, *out_p[8] = {0}, *din_p[8] = {0};
    for (int i = 0; i < n->n_in; i++) {
        if (n->in[i] < 0)
            continue;
        const kn_value *v = &g->values[n->in[i]];
        in[i] = (kn_tensor){v->shape, v->dtype, v->data};
        in_p[i] = &in[i];
        if (din && din[i]) {
            dx[i] = (kn_tensor){v->shape, KN_F32, din[i]};
            din_p[i] = &dx[i];
        }
    }
    for (int k = 0; k < n->n_out; k++) {
        const kn_value *v = kn_node_output(g, n, k);
        size_t bytes = (size_t)kn_shape_numel(&v->shape) * kn_dtype_size(v->dtype);
        out[k] = (kn_tensor){v->shape, v->dtype, k == 0 && out0 ? out0 : malloc(bytes + 8)};
        out_p[k] = &out[k];
    }
    dout = (kn_tensor){out[0].shape, KN_F32, (void *)dy};
    const kn_tensor *dout_p[8] = {dy ? &dout : NULL};
    kn_op_ctx ctx = {.seed = 1234, .node_index = 0};
    kn_op_call call = {.node = n, .in = in_p, .out = out_p, .dout = dout_p, .din = din_p, .ctx = &ctx};
    kiln_status st = n->op->forward(&call);
    if (st == KILN_OK && dy)
        st = n->op->backward(&call);
    kn_op_ctx_release(&ctx);
    for (int k = 0; k < n->n_out; k++)
        if (!(k == 0 && out0))
            free(out[k].data);
    return st;
}

static void check_gradients(kn_graph *g, const char *what) {
    printf("%s\n", what);
    opcheck_options options = {0};
    double worst = opcheck_gradients(g, 0, &options);
    CHECK_MSG(worst >= 0 && worst <= 1, "%s: worst |analytic - numeric| / tolerance = %g", what,
              worst);
}

/* Backward ADDS into din: gradients prefilled with 0.5 end 0.5 + the gradient from zero. Where
 * several outputs add into one element the sums associate differently, so "equal" allows float
 * rounding; overwriting would be off by 0.5. */
static void check_backward_accumulates(kn_graph *g, const char *what) {
    CHECK_OK(kn_graph_infer_shapes(g));
    const kn_node *n = &g->nodes[0];
    int64_t ny = kn_shape_numel(&kn_node_output(g, n, 0)->shape);
    int x = n->in[0];
    int64_t nx = kn_shape_numel(&g->values[x].shape);
    float *y = malloc(sizeof(float) * (size_t)(ny + 1)),
          *dy = malloc(sizeof(float) * (size_t)(ny + 1));
    float *from_zero = calloc((size_t)nx + 1, sizeof(float)),
          *from_half = malloc(sizeof(float) * (size_t)(nx + 1));
    kn_rng rng = kn_rng_seeded(5);
    for (int64_t i = 0; i < ny; i++)
        dy[i] = 2 * kn_rng_uniform(&rng) - 1;
    for (int64_t i = 0; i < nx; i++)
        from_half[i] = 0.5f;
    CHECK_OK(run_node(g, y, dy, (float *[8]){from_zero}));
    CHECK_OK(run_node(g, y, dy, (float *[8]){from_half}));
    int mismatches = 0;
    double worst = 0;
    for (int64_t i = 0; i < nx; i++) {
        double diff = fabs((double)from_half[i] - (0.5 + (double)from_zero[i]));
        worst = diff > worst ? diff : worst;
        mismatches += diff > 1e-5;
    }
    CHECK_MSG(mismatches == 0, "%s: backward overwrote instead of adding (%d elements)", what,
              mismatches);
    printf("  backward adds into din: max |(0.5 + dX) - (dX onto 0.5)| = %.3g\n", worst);
    free(y);
    free(dy);
    free(from_zero);
    free(from_half);
}

/* Forward and backward give bit-identical results with 1 and 2 threads. */
static void check_thread_independent(kn_graph *g, const char *what) {
    CHECK_OK(kn_graph_infer_shapes(g));
    const kn_node *n = &g->nodes[0];
    int64_t ny = kn_shape_numel(&kn_node_output(g, n, 0)->shape);
    int64_t nx = kn_shape_numel(&g->values[n->in[0]].shape);
    float *dy = malloc(sizeof(float) * (size_t)ny);
    kn_rng rng = kn_rng_seeded(6);
    for (int64_t i = 0; i < ny; i++)
        dy[i] = 2 * kn_rng_uniform(&rng) - 1;
    float *y[2], *dx[2];
    for (int t = 0; t < 2; t++) {
        y[t] = malloc(sizeof(float) * (size_t)ny);
        dx[t] = calloc((size_t)nx, sizeof(float));
        kn_threads_set(t + 1);
        CHECK_OK(run_node(g, y[t], dy, (float *[8]){dx[t]}));
    }
    kn_threads_set(0);
    bool same = memcmp(y[0], y[1], sizeof(float) * (size_t)ny) == 0 &&
                memcmp(dx[0], dx[1], sizeof(float) * (size_t)nx) == 0;
    CHECK_MSG(same, "%s: 1 and 2 threads differ", what);
    printf("%s: 1 and 2 threads bit-identical (forward and backward): %s\n", what,
           same ? "yes" : "NO");
    for (int t = 0; t < 2; t++) {
        free(y[t]);
        free(dx[t]);
    }
    free(dy);
}

static double max_abs_diff(const float *a, const float *b, int64_t n) {
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= worst))
            worst = d;
    }
    return worst;
}

/* Output 0 of node 0 equals `expected` (n f32 values) within tol; prints the max difference. */
static void check_f32_output(kn_graph *g, kn_shape shape, const float *expected, double tol,
                             const char *what) {
    kn_tensor *out = forward(g);
    if (!out)
        return;
    check_shape(&out[0], shape, what);
    int64_t n = kn_shape_numel(&shape);
    if (out[0].dtype == KN_F32 && kn_numel(&out[0]) == n) {
        double diff = max_abs_diff(kn_f32(&out[0]), expected, n);
        printf("%s: max |kiln - expected| = %.3g\n", what, diff);
        CHECK_MSG(diff <= tol, "%s: max difference %g > %g", what, diff, tol);
    }
    opcheck_free_outputs(out, g->nodes[0].n_out);
}

/* Output k is `expected` byte for byte. */
static void check_bytes(const kn_tensor *out, kn_dtype dtype, kn_shape shape, const void *expected,
                        const char *what) {
    check_shape(out, shape, what);
    CHECK_MSG(out->dtype == dtype, "%s: dtype %s, want %s", what, kn_dtype_name(out->dtype),
              kn_dtype_name(dtype));
    size_t bytes = (size_t)kn_shape_numel(&shape) * kn_dtype_size(dtype);
    CHECK_MSG(kn_shape_equal(&out->shape, &shape) &&
                  (bytes == 0 || memcmp(out->data, expected, bytes) == 0),
              "%s: values differ", what);
}

static void fill_index(float *p, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)i;
}

/* ---- Flatten, Reshape, Identity, Transpose, Concat and Dropout on other dtypes ---- */

/* y[out index] = x[in index], in index[perm[k]] = out index[k], element by element. */
static void transpose_naive(const char *x, const kn_shape *in, const int64_t *perm, size_t esize,
                            char *y) {
    int rank = in->ndim;
    int64_t in_stride[KN_MAX_DIMS], out_dims[KN_MAX_DIMS], index[KN_MAX_DIMS] = {0};
    int64_t stride = 1;
    for (int d = rank - 1; d >= 0; d--) {
        in_stride[d] = stride;
        stride *= in->d[d];
    }
    for (int k = 0; k < rank; k++)
        out_dims[k] = in->d[perm[k]];
    for (int64_t o = 0; o < kn_shape_numel(in); o++) {
        int64_t offset = 0;
        for (int k = 0; k < rank; k++)
            offset += index[k] * in_stride[perm[k]];
        memcpy(y + o * (int64_t)esize, x + offset * (int64_t)esize, esize);
        for (int k = rank - 1; k >= 0 && ++index[k] == out_dims[k]; k--)
            index[k] = 0;
    }
}

static void check_transpose_dtype(kn_dtype dtype, kn_shape shape, const int64_t *perm) {
    size_t esize = kn_dtype_size(dtype), bytes = (size_t)kn_shape_numel(&shape) * esize;
    unsigned char *x = malloc(bytes), *want = malloc(bytes);
    kn_rng rng = kn_rng_seeded(21);
    for (size_t i = 0; i < bytes; i++)
        x[i] = (unsigned char)(kn_rng_uniform(&rng) * 256);
    transpose_naive((const char *)x, &shape, perm, esize, (char *)want);
    kn_graph g;
    kn_graph_init(&g);
    int xi = add_const(&g, "X", dtype, shape, x), y = add_output(&g, "Y");
    add_node(&g, "Transpose", 1, &xi, 1, &y);
    CHECK_OK(kn_node_set_ints(&g, 0, "perm", shape.ndim, perm));
    kn_tensor *out = forward(&g);
    kn_shape out_shape = shape;
    for (int k = 0; k < shape.ndim; k++)
        out_shape.d[k] = shape.d[perm[k]];
    char what[128], s[64], p[64];
    kn_shape perm_list = kn_shape_of(shape.ndim, perm);
    snprintf(what, sizeof what, "Transpose %s %s perm %s", kn_dtype_name(dtype),
             kn_shape_str(&shape, s, sizeof s), kn_shape_str(&perm_list, p, sizeof p));
    if (out)
        check_bytes(&out[0], dtype, out_shape, want, what);
    printf("%s: matches the naive loop\n", what);
    opcheck_free_outputs(out, 1);
    kn_graph_free(&g);
    free(x);
    free(want);
}

static void test_generic_dtypes(void) {
    /* Transpose by rows (last dim stays last) and by tiles, for 8-, 1- and 2-byte elements. */
    check_transpose_dtype(KN_I64, SHAPE(2, 3, 4), (int64_t[]){2, 0, 1});
    check_transpose_dtype(KN_I64, SHAPE(2, 3, 4), (int64_t[]){1, 0, 2});
    check_transpose_dtype(KN_U8, SHAPE(3, 37, 41), (int64_t[]){2, 1, 0});
    check_transpose_dtype(KN_F16, SHAPE(5, 33, 2, 17), (int64_t[]){0, 3, 2, 1});
    check_transpose_dtype(KN_BOOL, SHAPE(260, 300), (int64_t[]){1, 0});

    /* Concat of i64 along axis 1 keeps all 8 bytes of every element. */
    kn_graph g;
    kn_graph_init(&g);
    int64_t a[4] = {1, INT64_C(1) << 40, -3, 4}, b[6] = {5, 6, INT64_MIN, 8, 9, INT64_MAX};
    int ia = add_const(&g, "A", KN_I64, SHAPE(2, 2), a),
        ib = add_const(&g, "B", KN_I64, SHAPE(2, 3), b);
    int y = add_output(&g, "Y");
    add_node(&g, "Concat", 2, (int[]){ia, ib}, 1, &y);
    CHECK_OK(kn_node_set_int(&g, 0, "axis", 1));
    kn_tensor *out = forward(&g);
    int64_t want_concat[10] = {1, INT64_C(1) << 40, 5, 6, INT64_MIN, -3, 4, 8, 9, INT64_MAX};
    if (out)
        check_bytes(&out[0], KN_I64, SHAPE(2, 5), want_concat, "Concat i64 axis 1");
    opcheck_free_outputs(out, 1);
    kn_graph_free(&g);

    kn_graph_init(&g);
    ia = add_const(&g, "A", KN_I64, SHAPE(2, 2), a);
    ib = add_const(&g, "B", KN_I32, SHAPE(2, 3), b);
    y = add_output(&g, "Y");
    add_node(&g, "Concat", 2, (int[]){ia, ib}, 1, &y);
    CHECK_OK(kn_node_set_int(&g, 0, "axis", 1));
    check_infer_fails(&g, KILN_ERR_INVALID_ARG, "input 1 has dtype i32, input 0 i64");
    kn_graph_free(&g);

    /* Flatten, Reshape and Identity copy u8, f16 and bool unchanged. */
    static const struct { const char *op; kn_dtype dtype; } copies[] = {
        {"Flatten", KN_U8}, {"Reshape", KN_F16}, {"Identity", KN_BOOL}};
    for (int i = 0; i < COUNT(copies); i++) {
        unsigned char x[48];
        for (int e = 0; e < 48; e++)
            x[e] = (unsigned char)(copies[i].dtype == KN_BOOL ? e % 3 == 0 : 7 * e + 1);
        kn_graph_init(&g);
        int xi = add_const(&g, "X", copies[i].dtype,
                           SHAPE(2, 3, 48 / 6 / (int)kn_dtype_size(copies[i].dtype)), x);
        int in[2] = {xi, add_i64(&g, "shape", 2, (int64_t[]){-1, 2})};
        y = add_output(&g, "Y");
        add_node(&g, copies[i].op, strcmp(copies[i].op, "Reshape") == 0 ? 2 : 1, in, 1, &y);
        out = forward(&g);
        if (out) {
            CHECK(out[0].dtype == copies[i].dtype);
            CHECK_MSG(memcmp(out[0].data, x,
                             (size_t)kn_numel(&out[0]) * kn_dtype_size(out[0].dtype)) == 0 &&
                          kn_numel(&out[0]) * (int64_t)kn_dtype_size(out[0].dtype) == 48,
                      "%s %s changed the data", copies[i].op, kn_dtype_name(copies[i].dtype));
        }
        opcheck_free_outputs(out, 1);
        kn_graph_free(&g);
    }

    /* Reshape allowzero=1: a 0 in the target is a dim of size 0, not a copy of the input dim. */
    kn_graph_init(&g);
    int x0 = add_param(&g, "X", SHAPE(2, 0, 3), 1);
    int target = add_i64(&g, "shape", 3, (int64_t[]){0, 2, 3});
    y = add_output(&g, "Y");
    add_node(&g, "Reshape", 2, (int[]){x0, target}, 1, &y);
    CHECK_OK(kn_node_set_int(&g, 0, "allowzero", 1));
    CHECK_OK(kn_graph_infer_shapes(&g));
    kn_shape zero_dim = SHAPE(0, 2, 3);
    CHECK(kn_shape_equal(&g.values[y].shape, &zero_dim));
    CHECK_OK(kn_node_set_int(&g, 0, "allowzero", 0));
    check_infer_fails(&g, KILN_ERR_SHAPE, "cannot reshape (2, 0, 3) (0 elements) to (0, 2, 3)");
    kn_graph_free(&g);

    /* Dropout in eval copies f16; training needs f32. */
    uint16_t halves[5] = {0x3c00, 0x8001, 0x7bff, 0xfc00, 0x1234};
    kn_graph_init(&g);
    int xh = add_const(&g, "X", KN_F16, SHAPE(5), halves);
    y = add_output(&g, "Y");
    add_node(&g, "Dropout", 1, &xh, 1, &y);
    out = forward(&g);
    if (out)
        check_bytes(&out[0], KN_F16, SHAPE(5), halves, "Dropout eval f16");
    opcheck_free_outputs(out, 1);
    CHECK(opcheck_forward(&g, 0, true) == NULL);
    CHECK_MSG(strstr(kiln_last_error(), "training Dropout on f16 data") != NULL, "%s",
              kiln_last_error());
    printf("  error as expected: %s\n", kiln_last_error());
    kn_graph_free(&g);
}

/* ---- Shape ---- */

static void test_shape(void) {
    /* test_shape*: the dims of a (3, 4, 5) tensor from start to end (opset 15). */
    static const struct {
        bool has_start, has_end;
        int64_t start, end;
        int n;
        int64_t want[3];
    } cases[] = {
        {false, false, 0, 0, 3, {3, 4, 5}}, {true, false, 1, 0, 2, {4, 5}},
        {true, false, -1, 0, 1, {5}},       {true, true, 1, -1, 1, {4}},
        {true, true, 1, 2, 1, {4}},         {false, true, 0, 1, 1, {3}},
        {false, true, 0, -1, 2, {3, 4}},    {true, false, -10, 0, 3, {3, 4, 5}},
        {false, true, 0, 10, 3, {3, 4, 5}}, {true, true, 2, 1, 0, {0}},
    };
    for (int i = 0; i < COUNT(cases); i++) {
        kn_graph g;
        kn_graph_init(&g);
        /* A graph input: Shape needs its shape, never its data. */
        int x = add_value(&g, "x", KN_VALUE_INPUT, KN_F32, SHAPE(3, 4, 5)), y = add_output(&g, "y");
        add_node(&g, "Shape", 1, &x, 1, &y);
        if (cases[i].has_start)
            CHECK_OK(kn_node_set_int(&g, 0, "start", cases[i].start));
        if (cases[i].has_end)
            CHECK_OK(kn_node_set_int(&g, 0, "end", cases[i].end));
        kn_tensor *out = forward(&g);
        char what[64];
        snprintf(what, sizeof what, "Shape case %d", i);
        if (out)
            check_bytes(&out[0], KN_I64, SHAPE(cases[i].n), cases[i].want, what);
        opcheck_free_outputs(out, 1);
        kn_graph_free(&g);
    }
    printf("Shape: %d start/end cases match ONNX's test_shape*\n", COUNT(cases));
}

/* ---- Gather ---- */

static void test_gather_forward(void) {
    /* test_gather_negative_indices */
    kn_graph g;
    kn_graph_init(&g);
    float ten[10];
    fill_index(ten, 10);
    int data = add_const(&g, "data", KN_F32, SHAPE(10), ten);
    int indices = add_i64(&g, "indices", 3, (int64_t[]){0, -9, -10}), y = add_output(&g, "y");
    add_node(&g, "Gather", 2, (int[]){data, indices}, 1, &y);
    check_f32_output(&g, SHAPE(3), (float[]){0, 1, 0}, 0, "Gather test_gather_negative_indices");
    kn_graph_free(&g);

    /* axis 1 of (3, 5, 4) with (2, 3) i32 indices, against y[a, i, j, c] = x[a, idx[i, j], c]. */
    int32_t idx[6] = {4, -1, 0, 2, -5, 3};
    kn_graph_init(&g);
    data = add_param(&g, "data", SHAPE(3, 5, 4), 31);
    indices = add_const(&g, "indices", KN_I32, SHAPE(2, 3), idx);
    y = add_output(&g, "y");
    add_node(&g, "Gather", 2, (int[]){data, indices}, 1, &y);
    CHECK_OK(kn_node_set_int(&g, 0, "axis", -2));
    const float *x = data_of(&g, data);
    float want[3 * 6 * 4];
    for (int a = 0; a < 3; a++)
        for (int k = 0; k < 6; k++)
            for (int c = 0; c < 4; c++)
                want[(a * 6 + k) * 4 + c] = x[(a * 5 + (idx[k] + 5) % 5) * 4 + c];
    check_f32_output(&g, SHAPE(3, 2, 3, 4), want, 0,
                     "Gather (3, 5, 4) axis -2, i32 (2, 3) indices");
    kn_graph_free(&g);

    /* A scalar index drops the axis: row 2 of a (4, 3) i64 matrix. */
    int64_t matrix[12];
    for (int i = 0; i < 12; i++)
        matrix[i] = (int64_t)i << 35;
    kn_graph_init(&g);
    data = add_const(&g, "data", KN_I64, SHAPE(4, 3), matrix);
    indices = add_const(&g, "index", KN_I64, kn_shape_of(0, NULL), (int64_t[]){2});
    y = add_output(&g, "y");
    add_node(&g, "Gather", 2, (int[]){data, indices}, 1, &y);
    kn_tensor *out = forward(&g);
    if (out)
        check_bytes(&out[0], KN_I64, SHAPE(3), matrix + 6, "Gather i64 scalar index");
    opcheck_free_outputs(out, 1);
    kn_graph_free(&g);
}

static void test_gather_gradients_and_errors(void) {
    /* Repeated indices add their gradients. */
    int64_t rows[6] = {0, 2, 2, 4, 0, 0}, cols[5] = {1, -1, 1, 0, 1};
    kn_graph g;
    kn_graph_init(&g);
    int data = add_param(&g, "data", SHAPE(5, 3), 32);
    int indices = add_i64(&g, "indices", 6, rows), y = add_output(&g, "y");
    add_node(&g, "Gather", 2, (int[]){data, indices}, 1, &y);
    check_gradients(&g, "Gather (5, 3) axis 0, indices {0, 2, 2, 4, 0, 0}");
    check_backward_accumulates(&g, "Gather axis 0");
    kn_graph_free(&g);

    kn_graph_init(&g);
    data = add_param(&g, "data", SHAPE(2, 3, 4), 33);
    indices = add_i64(&g, "indices", 5, cols);
    y = add_output(&g, "y");
    add_node(&g, "Gather", 2, (int[]){data, indices}, 1, &y);
    CHECK_OK(kn_node_set_int(&g, 0, "axis", 1));
    check_gradients(&g, "Gather (2, 3, 4) axis 1, indices {1, -1, 1, 0, 1}");
    kn_graph_free(&g);

    /* Out of range: caught at shape inference when the indices are constant... */
    kn_graph_init(&g);
    data = add_param(&g, "data", SHAPE(5, 3), 34);
    indices = add_i64(&g, "indices", 2, (int64_t[]){1, 5});
    y = add_output(&g, "y");
    add_node(&g, "Gather", 2, (int[]){data, indices}, 1, &y);
    check_infer_fails(&g, KILN_ERR_INVALID_ARG,
                      "index 5 (element 1 of indices) is out of range [-5, 5)");
    /* ... and at run time when they change after it, with no write out of bounds. */
    ((int64_t *)g.values[indices].data)[1] = 4;
    CHECK_OK(kn_graph_infer_shapes(&g));
    ((int64_t *)g.values[indices].data)[1] = -6;
    float out[6];
    kiln_status st = run_node(&g, out, NULL, NULL);
    CHECK_MSG(st == KILN_ERR_INVALID_ARG && strstr(kiln_last_error(), "index -6"), "%s: %s",
              kiln_status_name(st), kiln_last_error());
    printf("  error as expected: %s\n", kiln_last_error());
    kn_graph_free(&g);

    kn_graph_init(&g);
    data = add_param(&g, "data", SHAPE(5, 3), 35);
    indices = add_const(&g, "indices", KN_F32, SHAPE(1), (float[]){1});
    y = add_output(&g, "y");
    add_node(&g, "Gather", 2, (int[]){data, indices}, 1, &y);
    check_infer_fails(&g, KILN_ERR_INVALID_ARG, "indices must be i64 or i32, got f32");
    kn_graph_free(&g);
}

/* ---- Slice ---- */

/* y[i, j, k] = x[first[0] + i * step[0], first[1] + j * step[1], first[2] + k * step[2]]. */
static void slice_naive(const float *x, const kn_shape *in, const int64_t *first,
                        const int64_t *step, const kn_shape *out, float *y) {
    for (int64_t i = 0; i < out->d[0]; i++)
        for (int64_t j = 0; j < out->d[1]; j++)
            for (int64_t k = 0; k < out->d[2]; k++) {
                int64_t a = first[0] + i * step[0], b = first[1] + j * step[1],
                        c = first[2] + k * step[2];
                y[(i * out->d[1] + j) * out->d[2] + k] = x[(a * in->d[1] + b) * in->d[2] + c];
            }
}

static void test_slice_forward(void) {
    /* Each case: ONNX inputs, then the first index and step per axis and the output shape worked
     * out by hand from ONNX's rules. */
    static const struct {
        const char *name;
        int n;
        int64_t starts[3], ends[3], axes[3], steps[3]; /* axes[0] == 99: no axes input; steps too */
        int64_t first[3], step[3];
        kn_shape out;
    } cases[] = {
        {"test_slice_neg_steps", 3, {20, 10, 4}, {0, 0, 1}, {0, 1, 2}, {-1, -3, -2},
         {19, 9, 4}, {-1, -3, -2}, {3, {19, 3, 2}}},
        {"test_slice_end_out_of_bounds", 1, {1}, {1000}, {1}, {1}, {0, 1, 0}, {1, 1, 1},
         {3, {20, 9, 5}}},
        {"test_slice_start_out_of_bounds", 1, {1000}, {1000}, {1}, {1}, {0, 0, 0}, {1, 1, 1},
         {3, {20, 0, 5}}},
        {"test_slice_neg", 1, {0}, {-1}, {1}, {1}, {0, 0, 0}, {1, 1, 1}, {3, {20, 9, 5}}},
        {"test_slice_default_axes", 3, {0, 0, 3}, {20, 10, 4}, {99}, {99}, {0, 0, 3}, {1, 1, 1},
         {3, {20, 10, 1}}},
        {"negative axis, INT64_MAX end", 1, {1}, {INT64_MAX}, {-1}, {1}, {0, 0, 1}, {1, 1, 1},
         {3, {20, 10, 4}}},
        {"reversed by INT64_MIN end", 1, {-1}, {INT64_MIN}, {0}, {-1}, {19, 0, 0}, {-1, 1, 1},
         {3, {20, 10, 5}}},
        {"step 3 from -8, end clamped", 1, {-8}, {100}, {1}, {3}, {0, 2, 0}, {1, 3, 1},
         {3, {20, 3, 5}}},
        /* start -95 clamps to 0 and end -195 to -1: one element (numpy's rules would give none) */
        {"negative step, both bounds below 0", 1, {-100}, {-200}, {2}, {-1}, {0, 0, 0}, {1, 1, -1},
         {3, {20, 10, 1}}},
    };
    for (int i = 0; i < COUNT(cases); i++) {
        kn_graph g;
        kn_graph_init(&g);
        kn_shape in_shape = SHAPE(20, 10, 5);
        int x = add_param(&g, "x", in_shape, 41);
        int n = cases[i].n, in[5] = {x, -1, -1, -1, -1};
        /* starts as i32 in every other case: both index dtypes are accepted */
        if (i % 2) {
            int32_t starts32[3];
            for (int k = 0; k < n; k++)
                starts32[k] = (int32_t)cases[i].starts[k];
            in[1] = add_const(&g, "starts", KN_I32, SHAPE(n), starts32);
        } else {
            in[1] = add_i64(&g, "starts", n, cases[i].starts);
        }
        in[2] = add_i64(&g, "ends", n, cases[i].ends);
        int n_in = 3;
        if (cases[i].axes[0] != 99) {
            in[3] = add_i64(&g, "axes", n, cases[i].axes);
            in[4] = add_i64(&g, "steps", n, cases[i].steps);
            n_in = 5;
        }
        int y = add_output(&g, "y");
        add_node(&g, "Slice", n_in, in, 1, &y);
        int64_t count = kn_shape_numel(&cases[i].out);
        float *want = malloc(sizeof(float) * (size_t)(count + 1));
        slice_naive(data_of(&g, x), &in_shape, cases[i].first, cases[i].step, &cases[i].out, want);
        char what[96];
        snprintf(what, sizeof what, "Slice %s", cases[i].name);
        check_f32_output(&g, cases[i].out, want, 0, what);
        free(want);
        kn_graph_free(&g);
    }
}

static void test_slice_gradients_and_errors(void) {
    kn_graph g;
    kn_graph_init(&g);
    int x = add_param(&g, "x", SHAPE(4, 6, 5), 42);
    int in[5] = {x, add_i64(&g, "starts", 2, (int64_t[]){0, -1}),
                 add_i64(&g, "ends", 2, (int64_t[]){6, INT64_MIN}),
                 add_i64(&g, "axes", 2, (int64_t[]){1, 2}),
                 add_i64(&g, "steps", 2, (int64_t[]){2, -1})};
    int y = add_output(&g, "y");
    add_node(&g, "Slice", 5, in, 1, &y);
    check_gradients(&g, "Slice (4, 6, 5) axis 1 step 2, axis 2 step -1");
    check_backward_accumulates(&g, "Slice");
    kn_graph_free(&g);

    static const struct {
        int64_t starts[2], ends[2], axes[2], steps[2];
        int n_axes;
        kiln_status status;
        const char *needle;
    } bad[] = {
        {{0, 0}, {2, 2}, {0, 1}, {1, 0}, 2, KILN_ERR_INVALID_ARG, "steps[1] is 0"},
        {{0, 0}, {2, 2}, {1, -2}, {1, 1}, 2, KILN_ERR_INVALID_ARG, "axis -2 appears twice"},
        {{0, 0},
         {2, 2},
         {0, 3},
         {1, 1},
         2,
         KILN_ERR_INVALID_ARG,
         "axis 3 is out of range for rank 3"},
        {{0, 0}, {2, 2}, {0}, {1, 1}, 1, KILN_ERR_INVALID_ARG, "have 2, 2, 1 and 2 elements"},
    };
    for (int i = 0; i < COUNT(bad); i++) {
        kn_graph_init(&g);
        x = add_param(&g, "x", SHAPE(4, 6, 5), 43);
        int in2[5] = {
            x, add_i64(&g, "starts", 2, bad[i].starts), add_i64(&g, "ends", 2, bad[i].ends),
            add_i64(&g, "axes", bad[i].n_axes, bad[i].axes), add_i64(&g, "steps", 2, bad[i].steps)};
        y = add_output(&g, "y");
        add_node(&g, "Slice", 5, in2, 1, &y);
        check_infer_fails(&g, bad[i].status, bad[i].needle);
        kn_graph_free(&g);
    }

    /* starts computed at run time: the output shape cannot be known. */
    kn_graph_init(&g);
    x = add_param(&g, "x", SHAPE(4, 6, 5), 44);
    int starts = add_value(&g, "computed_starts", KN_VALUE_INPUT, KN_I64, SHAPE(1));
    int in3[3] = {x, starts, add_i64(&g, "ends", 1, (int64_t[]){2})};
    y = add_output(&g, "y");
    add_node(&g, "Slice", 3, in3, 1, &y);
    check_infer_fails(&g, KILN_ERR_UNSUPPORTED, "the starts input must be constant");
    kn_graph_free(&g);
}

/* ---- Split ---- */

static void split_outputs(kn_graph *g, int *outs) {
    outs[0] = add_output(g, "output_1");
    outs[1] = add_output(g, "output_2");
    outs[2] = add_output(g, "output_3");
}

static void test_split(void) {
    /* test_split_variable_parts_2d */
    kn_graph g;
    kn_graph_init(&g);
    float twelve[12];
    for (int i = 0; i < 12; i++)
        twelve[i] = (float)(i + 1);
    int x = add_const(&g, "input", KN_F32, SHAPE(2, 6), twelve);
    int split = add_i64(&g, "split", 2, (int64_t[]){2, 4});
    int outs[3];
    split_outputs(&g, outs);
    add_node(&g, "Split", 2, (int[]){x, split}, 2, outs);
    CHECK_OK(kn_node_set_int(&g, 0, "axis", 1));
    kn_tensor *out = forward(&g);
    if (out) {
        check_bytes(&out[0], KN_F32, SHAPE(2, 2), (float[]){1, 2, 7, 8},
                    "Split test_split_variable_parts_2d 1");
        check_bytes(&out[1], KN_F32, SHAPE(2, 4), (float[]){3, 4, 5, 6, 9, 10, 11, 12},
                    "Split test_split_variable_parts_2d 2");
    }
    opcheck_free_outputs(out, 2);
    kn_graph_free(&g);

    /* test_split_equal_parts_1d: no split input, three equal parts */
    kn_graph_init(&g);
    x = add_const(&g, "input", KN_F32, SHAPE(6), twelve);
    split_outputs(&g, outs);
    add_node(&g, "Split", 1, &x, 3, outs);
    out = forward(&g);
    if (out)
        for (int k = 0; k < 3; k++)
            check_bytes(&out[k], KN_F32, SHAPE(2), twelve + 2 * k,
                        "Split test_split_equal_parts_1d");
    opcheck_free_outputs(out, 3);
    kn_graph_free(&g);

    /* test_split_zero_size_splits */
    kn_graph_init(&g);
    x = add_const(&g, "input", KN_F32, SHAPE(0), twelve);
    split = add_i64(&g, "split", 3, (int64_t[]){0, 0, 0});
    split_outputs(&g, outs);
    add_node(&g, "Split", 2, (int[]){x, split}, 3, outs);
    out = forward(&g);
    if (out)
        for (int k = 0; k < 3; k++)
            check_bytes(&out[k], KN_F32, SHAPE(0), twelve, "Split test_split_zero_size_splits");
    opcheck_free_outputs(out, 3);
    kn_graph_free(&g);

    kn_graph_init(&g);
    x = add_param(&g, "input", SHAPE(3, 7, 2), 51);
    split = add_i64(&g, "split", 3, (int64_t[]){3, 0, 4});
    split_outputs(&g, outs);
    add_node(&g, "Split", 2, (int[]){x, split}, 3, outs);
    CHECK_OK(kn_node_set_int(&g, 0, "axis", 1));
    check_gradients(&g, "Split (3, 7, 2) axis 1 into {3, 0, 4}");
    kn_graph_free(&g);

    kn_graph_init(&g);
    x = add_param(&g, "input", SHAPE(3, 2, 6), 52);
    split_outputs(&g, outs);
    add_node(&g, "Split", 1, &x, 3, outs);
    CHECK_OK(kn_node_set_int(&g, 0, "axis", -1));
    check_gradients(&g, "Split (3, 2, 6) axis -1 into 3 equal parts");
    kn_graph_free(&g);

    static const struct {
        int n_split;
        int64_t split[3];
        int64_t dim;
        kiln_status status;
        const char *needle;
    } bad[] = {
        {3, {2, 3, 0}, 6, KILN_ERR_SHAPE, "split sizes sum to 5 but axis 0 has size 6"},
        {3, {2, -1, 5}, 6, KILN_ERR_SHAPE, "split size -1 (output 1) is outside [0, 6]"},
        {2, {3, 3}, 6, KILN_ERR_INVALID_ARG, "one size per output (3), got 2 sizes"},
        {0, {0}, 7, KILN_ERR_SHAPE, "cannot split a dim of 7 into 3 equal parts"},
    };
    for (int i = 0; i < COUNT(bad); i++) {
        kn_graph_init(&g);
        x = add_param(&g, "input", SHAPE(bad[i].dim), 53);
        int in[2] = {x, bad[i].n_split ? add_i64(&g, "split", bad[i].n_split, bad[i].split) : -1};
        split_outputs(&g, outs);
        add_node(&g, "Split", bad[i].n_split ? 2 : 1, in, 3, outs);
        check_infer_fails(&g, bad[i].status, bad[i].needle);
        kn_graph_free(&g);
    }
}

/* ---- Squeeze and Unsqueeze ---- */

static void check_reshaped(const char *op, kn_shape in, int n_axes, const int64_t *axes,
                           kn_shape want) {
    kn_graph g;
    kn_graph_init(&g);
    int x = add_param(&g, "x", in, 61), y = add_output(&g, "y");
    int inputs[2] = {x, n_axes >= 0 ? add_i64(&g, "axes", n_axes, axes) : -1};
    add_node(&g, op, n_axes >= 0 ? 2 : 1, inputs, 1, &y);
    char what[96], a[64], b[64];
    snprintf(what, sizeof what, "%s %s -> %s", op, kn_shape_str(&in, a, sizeof a),
             kn_shape_str(&want, b, sizeof b));
    check_f32_output(&g, want, data_of(&g, x), 0, what);
    check_gradients(&g, what);
    kn_graph_free(&g);
}

static void test_squeeze_unsqueeze(void) {
    check_reshaped("Squeeze", SHAPE(1, 3, 1, 5), 1, (int64_t[]){-2},
                   SHAPE(1, 3, 5)); /* test_squeeze_negative_axes */
    check_reshaped("Squeeze", SHAPE(1, 3, 1, 5), -1, NULL, SHAPE(3, 5));
    check_reshaped("Unsqueeze", SHAPE(3, 4, 5), 3, (int64_t[]){5, 4, 2},
                   SHAPE(3, 4, 1, 5, 1, 1)); /* test_unsqueeze_unsorted_axes */
    check_reshaped("Unsqueeze", SHAPE(1, 3, 1, 5), 1, (int64_t[]){-2},
                   SHAPE(1, 3, 1, 1, 5)); /* test_unsqueeze_negative_axes */

    static const struct {
        const char *op;
        kn_shape in;
        int n_axes;
        int64_t axes[3];
        kiln_status status;
        const char *needle;
    } bad[] = {
        {"Squeeze", {3, {1, 3, 1}}, 1, {1}, KILN_ERR_SHAPE, "cannot squeeze axis 1 of size 3"},
        {"Squeeze",
         {3, {1, 3, 1}},
         1,
         {3},
         KILN_ERR_INVALID_ARG,
         "axis 3 is out of range for rank 3"},
        {"Unsqueeze", {2, {3, 4}}, 2, {1, 1}, KILN_ERR_INVALID_ARG, "axis 1 appears twice"},
        {"Unsqueeze", {6, {3, 4, 5, 6, 1, 1}}, 3, {0, 1, 2}, KILN_ERR_UNSUPPORTED, "rank 9; at most 8"},
    };
    for (int i = 0; i < COUNT(bad); i++) {
        kn_graph g;
        kn_graph_init(&g);
        int in[2] = {add_param(&g, "x", bad[i].in, 62),
                     add_i64(&g, "axes", bad[i].n_axes, bad[i].axes)};
        int y = add_output(&g, "y");
        add_node(&g, bad[i].op, 2, in, 1, &y);
        check_infer_fails(&g, bad[i].status, bad[i].needle);
        kn_graph_free(&g);
    }
}

/* ---- Expand and Tile ---- */

static void test_expand(void) {
    /* test_expand_dim_changed */
    kn_graph g;
    kn_graph_init(&g);
    int x = add_const(&g, "data", KN_F32, SHAPE(3, 1), (float[]){1, 2, 3});
    int shape = add_i64(&g, "new_shape", 3, (int64_t[]){2, 1, 6}), y = add_output(&g, "expanded");
    add_node(&g, "Expand", 2, (int[]){x, shape}, 1, &y);
    float want[36];
    for (int i = 0; i < 36; i++)
        want[i] = (float)((i / 6) % 3 + 1);
    check_f32_output(&g, SHAPE(2, 3, 6), want, 0, "Expand test_expand_dim_changed");
    kn_graph_free(&g);

    /* A shape dim of 1 keeps the input's dim: (3, 4) by (2, 1, 1) gives (2, 3, 4). i64 data. */
    int64_t v[12];
    for (int i = 0; i < 12; i++)
        v[i] = ((int64_t)i << 33) - i;
    kn_graph_init(&g);
    x = add_const(&g, "data", KN_I64, SHAPE(3, 4), v);
    shape = add_i64(&g, "new_shape", 3, (int64_t[]){2, 1, 1});
    y = add_output(&g, "expanded");
    add_node(&g, "Expand", 2, (int[]){x, shape}, 1, &y);
    int64_t want64[24];
    for (int i = 0; i < 24; i++)
        want64[i] = v[i % 12];
    kn_tensor *out = forward(&g);
    if (out)
        check_bytes(&out[0], KN_I64, SHAPE(2, 3, 4), want64, "Expand i64 (3, 4) by (2, 1, 1)");
    opcheck_free_outputs(out, 1);
    kn_graph_free(&g);

    kn_graph_init(&g);
    x = add_param(&g, "data", SHAPE(3, 1, 4), 71);
    shape = add_i64(&g, "new_shape", 4, (int64_t[]){2, 3, 5, 4});
    y = add_output(&g, "expanded");
    add_node(&g, "Expand", 2, (int[]){x, shape}, 1, &y);
    check_gradients(&g, "Expand (3, 1, 4) to (2, 3, 5, 4)");
    check_backward_accumulates(&g, "Expand");
    kn_graph_free(&g);

    kn_graph_init(&g);
    x = add_param(&g, "data", SHAPE(3, 4), 72);
    shape = add_i64(&g, "new_shape", 2, (int64_t[]){2, 3});
    y = add_output(&g, "expanded");
    add_node(&g, "Expand", 2, (int[]){x, shape}, 1, &y);
    check_infer_fails(&g, KILN_ERR_SHAPE, "cannot expand (3, 4) to (2, 3)");
    kn_graph_free(&g);
}

static void test_tile(void) {
    /* test_tile_precomputed */
    kn_graph g;
    kn_graph_init(&g);
    int x = add_const(&g, "x", KN_F32, SHAPE(2, 2), (float[]){0, 1, 2, 3});
    int repeats = add_i64(&g, "y", 2, (int64_t[]){2, 2}), y = add_output(&g, "z");
    add_node(&g, "Tile", 2, (int[]){x, repeats}, 1, &y);
    check_f32_output(&g, SHAPE(4, 4), (float[]){0, 1, 0, 1, 2, 3, 2, 3, 0, 1, 0, 1, 2, 3, 2, 3}, 0,
                     "Tile test_tile_precomputed");
    kn_graph_free(&g);

    kn_graph_init(&g);
    x = add_param(&g, "x", SHAPE(2, 3, 4), 73);
    repeats = add_i64(&g, "repeats", 3, (int64_t[]){3, 1, 2});
    y = add_output(&g, "z");
    add_node(&g, "Tile", 2, (int[]){x, repeats}, 1, &y);
    const float *xs = data_of(&g, x);
    float want[6 * 3 * 8];
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 8; k++)
                want[(i * 3 + j) * 8 + k] = xs[((i % 2) * 3 + j) * 4 + k % 4];
    check_f32_output(&g, SHAPE(6, 3, 8), want, 0, "Tile (2, 3, 4) by (3, 1, 2), naive");
    check_gradients(&g, "Tile (2, 3, 4) by (3, 1, 2)");
    kn_graph_free(&g);

    kn_graph_init(&g);
    x = add_param(&g, "x", SHAPE(2, 3), 74);
    repeats = add_i64(&g, "repeats", 1, (int64_t[]){2});
    y = add_output(&g, "z");
    add_node(&g, "Tile", 2, (int[]){x, repeats}, 1, &y);
    check_infer_fails(&g, KILN_ERR_INVALID_ARG, "repeats has 1 elements; the input has rank 2");
    kn_graph_free(&g);
}

/* ---- Range and ConstantOfShape ---- */

static kn_tensor *range_run(kn_graph *g, bool expect_ok, kn_dtype dtype, const void *start,
                            const void *limit, const void *delta) {
    kn_graph_init(g);
    kn_shape scalar = kn_shape_of(0, NULL);
    int in[3] = {add_const(g, "start", dtype, scalar, start),
                 add_const(g, "limit", dtype, scalar, limit),
                 add_const(g, "delta", dtype, scalar, delta)};
    int y = add_output(g, "output");
    add_node(g, "Range", 3, in, 1, &y);
    return expect_ok ? forward(g) : opcheck_forward(g, 0, false);
}

static void test_range(void) {
    kn_graph g;
    kn_tensor *out = range_run(&g, true, KN_I32, (int32_t[]){10}, (int32_t[]){6}, (int32_t[]){-3});
    if (out) /* test_range_int32_type_negative_delta */
        check_bytes(&out[0], KN_I32, SHAPE(2), (int32_t[]){10, 7},
                    "Range test_range_int32_type_negative_delta");
    opcheck_free_outputs(out, 1);
    kn_graph_free(&g);

    out = range_run(&g, true, KN_F32, (float[]){1}, (float[]){5}, (float[]){2});
    if (out) /* test_range_float_type_positive_delta */
        check_bytes(&out[0], KN_F32, SHAPE(2), (float[]){1, 3},
                    "Range test_range_float_type_positive_delta");
    opcheck_free_outputs(out, 1);
    kn_graph_free(&g);

    /* start + i * delta, not a running sum: 0.1 * 7 and 0.1 + ... + 0.1 differ in f32. */
    out = range_run(&g, true, KN_F32, (float[]){0}, (float[]){1}, (float[]){0.1f});
    if (out) {
        check_shape(&out[0], SHAPE(10), "Range f32 0 to 1 by 0.1");
        CHECK(kn_numel(&out[0]) == 10 && kn_f32(&out[0])[7] == 7.0f * 0.1f);
    }
    opcheck_free_outputs(out, 1);
    kn_graph_free(&g);

    int64_t big = INT64_C(1) << 40;
    out = range_run(&g, true, KN_I64, (int64_t[]){big}, (int64_t[]){big + 10}, (int64_t[]){4});
    if (out)
        check_bytes(&out[0], KN_I64, SHAPE(3), (int64_t[]){big, big + 4, big + 8}, "Range i64");
    opcheck_free_outputs(out, 1);
    kn_graph_free(&g);

    out = range_run(&g, true, KN_I64, (int64_t[]){3}, (int64_t[]){3}, (int64_t[]){1});
    if (out)
        check_shape(&out[0], SHAPE(0), "Range empty");
    opcheck_free_outputs(out, 1);
    kn_graph_free(&g);

    CHECK(range_run(&g, false, KN_I32, (int32_t[]){0}, (int32_t[]){5}, (int32_t[]){0}) == NULL);
    CHECK_MSG(strstr(kiln_last_error(), "delta is 0"), "%s", kiln_last_error());
    printf("  error as expected: %s\n", kiln_last_error());
    kn_graph_free(&g);

    kn_graph_init(&g);
    kn_shape scalar = kn_shape_of(0, NULL);
    int in[3] = {add_const(&g, "start", KN_I64, scalar, (int64_t[]){0}),
                 add_value(&g, "limit", KN_VALUE_INPUT, KN_I64, scalar),
                 add_const(&g, "delta", KN_I64, scalar, (int64_t[]){1})};
    int y = add_output(&g, "output");
    add_node(&g, "Range", 3, in, 1, &y);
    check_infer_fails(&g, KILN_ERR_UNSUPPORTED, "the limit input must be constant");
    kn_graph_free(&g);
}

static void test_constantofshape(void) {
    static const struct {
        const char *name;
        int n;
        int64_t shape[3];
        bool has_dtype;
        kn_dtype dtype;
        int value_type; /* 0: none, 1: float, 2: int */
        double value;
        kn_shape want_shape;
        unsigned char element[8];
    } cases[] = {
        {"test_constantofshape_float_ones",
         3,
         {4, 3, 2},
         false,
         KN_F32,
         1,
         1.0,
         {3, {4, 3, 2}},
         {0x00, 0x00, 0x80, 0x3f}},
        {"test_constantofshape_int_zeros", 2, {10, 6}, true, KN_I32, 2, 0, {2, {10, 6}}, {0}},
        {"test_constantofshape_int_shape_zero", 1, {0}, true, KN_I32, 2, 0, {1, {0}}, {0}},
        {"default: f32 zeros", 1, {5}, false, KN_F32, 0, 0, {1, {5}}, {0}},
        {"empty shape: a scalar",
         0,
         {0},
         true,
         KN_I64,
         2,
         -2,
         {0, {0}},
         {0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
        {"f16 1.5", 1, {3}, true, KN_F16, 1, 1.5, {1, {3}}, {0x00, 0x3e}},
        {"bool from 0.25", 2, {2, 2}, true, KN_BOOL, 1, 0.25, {2, {2, 2}}, {1}},
        {"i64 2^40 + 1 kept exact by an int value",
         1,
         {2},
         true,
         KN_I64,
         2,
         1099511627777.0,
         {1, {2}},
         {0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00}},
    };
    for (int i = 0; i < COUNT(cases); i++) {
        kn_graph g;
        kn_graph_init(&g);
        int shape = add_i64(&g, "x", cases[i].n, cases[i].shape), y = add_output(&g, "y");
        add_node(&g, "ConstantOfShape", 1, &shape, 1, &y);
        if (cases[i].has_dtype)
            CHECK_OK(kn_node_set_int(&g, 0, "dtype", cases[i].dtype));
        if (cases[i].value_type == 1)
            CHECK_OK(kn_node_set_float(&g, 0, "value", (float)cases[i].value));
        if (cases[i].value_type == 2)
            CHECK_OK(kn_node_set_int(&g, 0, "value", (int64_t)cases[i].value));
        kn_tensor *out = forward(&g);
        size_t esize = kn_dtype_size(cases[i].dtype);
        int64_t count = kn_shape_numel(&cases[i].want_shape);
        unsigned char *want = malloc((size_t)count * esize + 1);
        for (int64_t e = 0; e < count; e++)
            memcpy(want + (size_t)e * esize, cases[i].element, esize);
        char what[96];
        snprintf(what, sizeof what, "ConstantOfShape %s", cases[i].name);
        if (out)
            check_bytes(&out[0], cases[i].dtype, cases[i].want_shape, want, what);
        opcheck_free_outputs(out, 1);
        free(want);
        kn_graph_free(&g);
    }
    printf("ConstantOfShape: %d cases match\n", COUNT(cases));

    kn_graph g;
    kn_graph_init(&g);
    int shape = add_i64(&g, "x", 1, (int64_t[]){3}), y = add_output(&g, "y");
    add_node(&g, "ConstantOfShape", 1, &shape, 1, &y);
    CHECK_OK(kn_node_set_int(&g, 0, "dtype", KN_DTYPE_COUNT));
    check_infer_fails(&g, KILN_ERR_INVALID_ARG, "attribute 'dtype' = 14 is not a kiln dtype code");
    CHECK_OK(kn_node_set_int(&g, 0, "dtype", KN_STRING)); /* a kn_string is no number to fill with */
    check_infer_fails(&g, KILN_ERR_UNSUPPORTED, "output 'y' is a string tensor: ConstantOfShape does not take strings");
    CHECK_OK(kn_node_set_int(&g, 0, "dtype", KN_F32));
    ((int64_t *)g.values[shape].data)[0] = -3;
    check_infer_fails(&g, KILN_ERR_INVALID_ARG, "shape[0] is -3");
    kn_graph_free(&g);
}

/* ---- Cast ---- */

static kn_tensor *cast_run(kn_graph *g, kn_dtype from, int64_t n, const void *x, int64_t to) {
    kn_graph_init(g);
    int xi = add_const(g, "input", from, SHAPE(n), x), y = add_output(g, "output");
    add_node(g, "Cast", 1, &xi, 1, &y);
    CHECK_OK(kn_node_set_int(g, 0, "to", to));
    return forward(g);
}

static void check_cast(kn_dtype from, int n, const void *x, kn_dtype to, const void *want) {
    kn_graph g;
    kn_tensor *out = cast_run(&g, from, n, x, to);
    char what[64];
    snprintf(what, sizeof what, "Cast %s -> %s", kn_dtype_name(from), kn_dtype_name(to));
    if (out)
        check_bytes(&out[0], to, SHAPE(n), want, what);
    printf("%s: %d values as expected\n", what, n);
    opcheck_free_outputs(out, 1);
    kn_graph_free(&g);
}

/* The value of an f16 code, decoded independently of kiln; 0x7c00 (inf) counts as 65536, where the
 * next binade would start, so rounding up past 65504 lands on it. */
static double f16_value(uint16_t h) {
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : 65536.0) : ldexp(1024 + m, e - 25);
    return (h & 0x8000) ? -v : v;
}

/* The nearest f16 code of f, ties to the even code, by binary search over the positive codes. */
static uint16_t f16_nearest(float f) {
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    double a = fabs((double)f);
    if (a >= 65536.0)
        return sign | 0x7c00;
    uint16_t lo = 0, hi = 0x7c00; /* f16_value(lo) <= a < f16_value(hi) */
    while (hi - lo > 1) {
        uint16_t mid = (uint16_t)((lo + hi) / 2);
        if (f16_value(mid) <= a)
            lo = mid;
        else
            hi = mid;
    }
    double below = a - f16_value(lo), above = f16_value(hi) - a;
    return sign | (below < above ? lo : above < below ? hi : (lo & 1) ? hi : lo);
}

static void test_cast_f16(void) {
    /* test_cast_FLOAT_to_FLOAT16 and test_cast_FLOAT16_to_FLOAT, bit for bit */
    static const uint32_t f32_in[12] = {0x3f0c7f0b, 0x3f3716a6, 0x3f1a4eb3, 0x3f0b7d77, 0x3ed8e948,
                                        0x3f255951, 0x3ee00b6e, 0x3f644b3c, 0x3f76b29a, 0x3ec45272,
                                        0x3f4aae7e, 0x3f0765a8};
    static const uint16_t f16_out[12] = {0x3864, 0x39b9, 0x38d2, 0x385c, 0x36c7, 0x392b,
                                         0x3700, 0x3b22, 0x3bb6, 0x3623, 0x3a55, 0x383b};
    static const uint16_t f16_in[12] = {0x2f92, 0x391f, 0x3096, 0x3b8f, 0x382d, 0x36a2,
                                        0x343c, 0x3a32, 0x374c, 0x388c, 0x24cf, 0x38f1};
    static const uint32_t f32_out[12] = {0x3df24000, 0x3f23e000, 0x3e12c000, 0x3f71e000, 0x3f05a000,
                                         0x3ed44000, 0x3e878000, 0x3f464000, 0x3ee98000, 0x3f118000,
                                         0x3c99e000, 0x3f1e2000};
    check_cast(KN_F32, 12, f32_in, KN_F16, f16_out);
    check_cast(KN_F16, 12, f16_in, KN_F32, f32_out);

    /* Every f16 code to f32 and back. */
    enum { CODES = 65536 };
    uint16_t *codes = malloc(sizeof(uint16_t) * CODES);
    for (int h = 0; h < CODES; h++)
        codes[h] = (uint16_t)h;
    kn_graph g, back;
    kn_tensor *wide = cast_run(&g, KN_F16, CODES, codes, KN_F32);
    int wrong_value = 0, wrong_back = 0;
    if (wide) {
        const float *w = kn_f32(&wide[0]);
        for (int h = 0; h < CODES; h++) {
            double want = (h & 0x7c00) == 0x7c00 && !(h & 0x3ff)
                              ? ((h & 0x8000) ? -INFINITY : INFINITY)
                              : f16_value((uint16_t)h);
            bool ok =
                isnan(want) ? isnan(w[h]) : (double)w[h] == want && !signbit(w[h]) == !(h & 0x8000);
            wrong_value += !ok;
        }
        kn_tensor *narrow = cast_run(&back, KN_F32, CODES, w, KN_F16);
        if (narrow) {
            const uint16_t *n = narrow[0].data;
            for (int h = 0; h < CODES; h++) {
                bool is_nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
                wrong_back += is_nan ? !((n[h] & 0x7c00) == 0x7c00 && (n[h] & 0x3ff)) : n[h] != h;
            }
        }
        opcheck_free_outputs(narrow, 1);
        kn_graph_free(&back);
    }
    CHECK_MSG(wrong_value == 0 && wrong_back == 0,
              "f16 codes: %d decoded wrong, %d not round-tripped", wrong_value, wrong_back);
    printf("Cast f16 -> f32 -> f16: all %d codes exact (%d wrong values, %d wrong round trips)\n",
           CODES, wrong_value, wrong_back);
    opcheck_free_outputs(wide, 1);
    kn_graph_free(&g);
    free(codes);

    /* f32 -> f16 rounds to nearest, ties to even: random floats over the whole f16 range and beyond
     * (subnormals, overflow), and exact midpoints between neighbouring codes. */
    enum { RANDOM = 40000, TIES = 4000, N = RANDOM + TIES };
    float *f = malloc(sizeof(float) * N);
    kn_rng rng = kn_rng_seeded(81);
    for (int i = 0; i < RANDOM; i++) {
        uint32_t sign = kn_rng_uniform(&rng) < 0.5f ? 0x80000000u : 0;
        uint32_t exponent = 127 - 27 + (uint32_t)(kn_rng_uniform(&rng) * 45); /* 2^-27 .. 2^17 */
        uint32_t mantissa = (uint32_t)(kn_rng_uniform(&rng) * 8388608.0f) & 0x7fffff;
        uint32_t bits = sign | exponent << 23 | mantissa;
        memcpy(&f[i], &bits, sizeof bits);
    }
    for (int i = 0; i < TIES; i++) {
        uint16_t h = (uint16_t)(kn_rng_uniform(&rng) * 0x7bff);
        f[RANDOM + i] =
            (float)((f16_value(h) + f16_value((uint16_t)(h + 1))) / 2) * (i % 2 ? -1.0f : 1.0f);
    }
    kn_tensor *out = cast_run(&g, KN_F32, N, f, KN_F16);
    int wrong = 0;
    if (out)
        for (int i = 0; i < N; i++) {
            uint16_t got = ((uint16_t *)out[0].data)[i], want = f16_nearest(f[i]);
            if (got != want && wrong++ < 5)
                fprintf(stderr, "  f32 %.9g -> f16 0x%04x, want 0x%04x\n", f[i], got, want);
        }
    CHECK_MSG(wrong == 0, "%d of %d f32 -> f16 conversions are not the nearest-even code", wrong,
              N);
    printf("Cast f32 -> f16: %d random values and %d ties round to nearest even (%d wrong)\n",
           RANDOM, TIES, wrong);
    opcheck_free_outputs(out, 1);
    kn_graph_free(&g);
    free(f);
}

static void test_cast_pairs(void) {
    float nan = NAN;
    /* float -> integer truncates toward zero; out of range saturates to i64 then keeps low bits */
    check_cast(KN_F32, 5, (float[]){-1.7f, 2.9f, -0.0f, 1e10f, nan}, KN_I32,
               (int32_t[]){-1, 2, 0, 1410065408, 0});
    check_cast(KN_F32, 4, (float[]){300.0f, -1.0f, 255.9f, 0.5f}, KN_U8,
               (uint8_t[]){44, 255, 255, 0});
    check_cast(KN_F32, 3, (float[]){127.9f, -128.5f, 200.0f}, KN_I8, (int8_t[]){127, -128, -56});
    check_cast(KN_F32, 3, (float[]){-3.99f, 1e20f, -1e20f}, KN_I64,
               (int64_t[]){-3, INT64_MAX, INT64_MIN});
    /* anything -> bool is x != 0 (NaN is not 0) */
    check_cast(KN_F32, 5, (float[]){0.0f, -0.0f, 0.5f, -2.0f, nan}, KN_BOOL,
               (uint8_t[]){0, 0, 1, 1, 1});
    check_cast(KN_I32, 3, (int32_t[]){0, -5, 1 << 30}, KN_BOOL, (uint8_t[]){0, 1, 1});
    check_cast(KN_F16, 3, (uint16_t[]){0x8000, 0x0001, 0x3c00}, KN_BOOL, (uint8_t[]){0, 1, 1});
    /* bool -> anything is 0 or 1 */
    check_cast(KN_BOOL, 2, (uint8_t[]){0, 1}, KN_F32, (float[]){0.0f, 1.0f});
    check_cast(KN_BOOL, 2, (uint8_t[]){1, 0}, KN_I64, (int64_t[]){1, 0});
    check_cast(KN_BOOL, 2, (uint8_t[]){1, 0}, KN_F16, (uint16_t[]){0x3c00, 0x0000});
    /* integer -> narrower integer wraps */
    check_cast(KN_I64, 3, (int64_t[]){(INT64_C(1) << 32) + 5, -1, INT64_C(1) << 31}, KN_I32,
               (int32_t[]){5, -1, INT32_MIN});
    check_cast(KN_U8, 2, (uint8_t[]){200, 127}, KN_I8, (int8_t[]){-56, 127});
    check_cast(KN_I8, 2, (int8_t[]){-1, -128}, KN_U8, (uint8_t[]){255, 128});
    check_cast(KN_I32, 2, (int32_t[]){-7, 70000}, KN_I64, (int64_t[]){-7, 70000});
    /* integer -> float rounds to nearest even */
    check_cast(KN_I64, 2, (int64_t[]){(INT64_C(1) << 53) + 1, 16777217}, KN_F32,
               (float[]){9007199254740992.0f, 16777216.0f});
    check_cast(KN_I64, 5, (int64_t[]){2049, 2051, 65519, 65520, -3}, KN_F16,
               (uint16_t[]){0x6800, 0x6802, 0x7bff, 0x7c00, 0xc200});
    check_cast(KN_U8, 2, (uint8_t[]){255, 3}, KN_F16, (uint16_t[]){0x5bf8, 0x4200});
    /* f16 -> integer truncates */
    check_cast(KN_F16, 3, (uint16_t[]){0x4100, 0xc100, 0x5bf8}, KN_I32, (int32_t[]){2, -2, 255});
    /* same dtype: a copy */
    check_cast(KN_I8, 2, (int8_t[]){-3, 4}, KN_I8, (int8_t[]){-3, 4});

    kn_graph g;
    kn_graph_init(&g);
    int x = add_param(&g, "input", SHAPE(3), 82), y = add_output(&g, "output");
    add_node(&g, "Cast", 1, &x, 1, &y);
    check_infer_fails(&g, KILN_ERR_INVALID_ARG, "attribute 'to' is missing");
    CHECK_OK(kn_node_set_int(&g, 0, "to", KN_DTYPE_COUNT));
    check_infer_fails(&g, KILN_ERR_INVALID_ARG,
                      "attribute 'to' = 14 is not a kiln dtype code (0 to 13)");
    CHECK_OK(kn_node_set_int(&g, 0, "to", -1));
    check_infer_fails(&g, KILN_ERR_INVALID_ARG, "'to' = -1 is not a kiln dtype code");
    kn_graph_free(&g);
}

/* ---- Pad ---- */

/* The input index an output index reads, by folding at the ends until it lands inside (reflect) or
 * clamping (edge); -1 for the constant. Written independently of kiln's periodic formula. */
static int64_t pad_naive_source(int64_t o, int64_t begin, int64_t dim, const char *mode) {
    int64_t i = o - begin;
    if (i >= 0 && i < dim)
        return i;
    if (strcmp(mode, "constant") == 0)
        return -1;
    if (strcmp(mode, "edge") == 0 || dim == 1)
        return i < 0 ? 0 : dim - 1;
    while (i < 0 || i >= dim)
        i = i < 0 ? -i : 2 * (dim - 1) - i;
    return i;
}

/* y = pad(x) for a 3-D x, element by element. */
static void pad_naive(const float *x, const kn_shape *in, const int64_t *pads, const char *mode,
                      float value, const kn_shape *out, float *y) {
    for (int64_t a = 0; a < out->d[0]; a++)
        for (int64_t b = 0; b < out->d[1]; b++)
            for (int64_t c = 0; c < out->d[2]; c++) {
                int64_t i = pad_naive_source(a, pads[0], in->d[0], mode);
                int64_t j = pad_naive_source(b, pads[1], in->d[1], mode);
                int64_t k = pad_naive_source(c, pads[2], in->d[2], mode);
                y[(a * out->d[1] + b) * out->d[2] + c] =
                    i < 0 || j < 0 || k < 0 ? value : x[(i * in->d[1] + j) * in->d[2] + k];
            }
}

static int pad_build(kn_graph *g, kn_shape in, int n_pads, const int64_t *pads, const char *mode,
                     const float *value) {
    kn_graph_init(g);
    int x = add_param(g, "x", in, 91);
    int inputs[3] = {x, add_i64(g, "pads", n_pads, pads),
                     value ? add_const(g, "value", KN_F32, kn_shape_of(0, NULL), value) : -1};
    int y = add_output(g, "y");
    add_node(g, "Pad", value ? 3 : 2, inputs, 1, &y);
    if (mode)
        CHECK_OK(kn_node_set_string(g, 0, "mode", mode));
    return x;
}

static void test_pad_forward(void) {
    /* test_reflect_pad and test_edge_pad: i32 data, channel 1 of the official (1, 3, 4, 5) input,
     * one pad on each side of H and W */
    static const int32_t reflect_in[20] = {-1, 0, 0, -1, 1,
                                           1,  1, 0, -1, 1,
                                           0,  1, 0, 0,  0,
                                           0,  0, 1, 0,  0};
    static const int32_t reflect_out[42] = {1, 1,  1, 0, -1, 1, -1,
                                            0, -1, 0, 0, -1, 1, -1,
                                            1, 1,  1, 0, -1, 1, -1,
                                            1, 0,  1, 0, 0,  0, 0,
                                            0, 0,  0, 1, 0,  0, 0,
                                            1, 0,  1, 0, 0,  0, 0};
    static const int32_t edge_in[20] = {-2, 0, 0, 0,  2,
                                        -1, 0, 0, 1,  1,
                                        0,  0, 0, -1, 0,
                                        0,  1, 1, 0,  0};
    static const int32_t edge_out[42] = {-2, -2, 0, 0, 0,  2, 2,
                                         -2, -2, 0, 0, 0,  2, 2,
                                         -1, -1, 0, 0, 1,  1, 1,
                                         0,  0,  0, 0, -1, 0, 0,
                                         0,  0,  1, 1, 0,  0, 0,
                                         0,  0,  1, 1, 0,  0, 0};
    static const struct { const char *mode; const int32_t *in, *out; } official[] = {
        {"reflect", reflect_in, reflect_out}, {"edge", edge_in, edge_out}};
    for (int i = 0; i < COUNT(official); i++) {
        kn_graph g;
        kn_graph_init(&g);
        int x = add_const(&g, "x", KN_I32, SHAPE(1, 1, 4, 5), official[i].in);
        int pads = add_i64(&g, "pads", 8, (int64_t[]){0, 0, 1, 1, 0, 0, 1, 1}),
            y = add_output(&g, "y");
        add_node(&g, "Pad", 2, (int[]){x, pads}, 1, &y);
        CHECK_OK(kn_node_set_string(&g, 0, "mode", official[i].mode));
        kn_tensor *out = forward(&g);
        char what[64];
        snprintf(what, sizeof what, "Pad test_%s_pad (i32)", official[i].mode);
        if (out)
            check_bytes(&out[0], KN_I32, SHAPE(1, 1, 6, 7), official[i].out, what);
        printf("%s: matches\n", what);
        opcheck_free_outputs(out, 1);
        kn_graph_free(&g);
    }

    /* test_constant_pad's shapes and value, then crops, big reflections and a scalar, naive. */
    static const struct {
        const char *mode;
        kn_shape in;
        int64_t pads[6];
        bool has_value;
    } cases[] = {
        {"constant", {3, {3, 4, 5}}, {0, 1, 3, 0, 2, 4}, true},
        {NULL, {3, {3, 4, 5}}, {1, -1, 2, -2, 0, -3}, false},
        {"reflect", {3, {2, 3, 4}}, {1, 7, 3, 0, 6, 5}, false},
        {"reflect", {3, {1, 4, 5}}, {2, -1, 0, 1, 2, -2}, false},
        {"edge", {3, {2, 3, 4}}, {3, 0, -2, 1, 4, 2}, false},
    };
    for (int i = 0; i < COUNT(cases); i++) {
        kn_graph g;
        float value = 1.2f;
        int x = pad_build(&g, cases[i].in, 6, cases[i].pads, cases[i].mode,
                          cases[i].has_value ? &value : NULL);
        kn_shape out = cases[i].in;
        for (int k = 0; k < 3; k++)
            out.d[k] += cases[i].pads[k] + cases[i].pads[k + 3];
        float *want = malloc(sizeof(float) * (size_t)(kn_shape_numel(&out) + 1));
        pad_naive(data_of(&g, x), &cases[i].in, cases[i].pads,
                  cases[i].mode ? cases[i].mode : "constant", cases[i].has_value ? value : 0.0f,
                  &out, want);
        char what[96], s[64];
        snprintf(what, sizeof what, "Pad %s %s, naive", cases[i].mode ? cases[i].mode : "(default)",
                 kn_shape_str(&out, s, sizeof s));
        check_f32_output(&g, out, want, 0, what);
        free(want);
        kn_graph_free(&g);
    }

    kn_graph g;
    float seven = 7;
    kn_graph_init(&g);
    int x = add_const(&g, "x", KN_F32, kn_shape_of(0, NULL), &seven);
    int pads = add_i64(&g, "pads", 0, NULL), y = add_output(&g, "y");
    add_node(&g, "Pad", 2, (int[]){x, pads}, 1, &y);
    check_f32_output(&g, kn_shape_of(0, NULL), &seven, 0, "Pad of a scalar");
    kn_graph_free(&g);
}

static void test_pad_gradients_and_errors(void) {
    static const struct { const char *mode; int64_t pads[6]; } cases[] = {
        {"constant", {0, 1, 2, 1, 0, 1}}, {"constant", {1, -1, 0, 0, 2, -2}},
        {"reflect", {0, 2, 3, 1, 4, 1}},  {"edge", {1, 2, 0, 0, 3, 2}}};
    for (int i = 0; i < COUNT(cases); i++) {
        kn_graph g;
        pad_build(&g, SHAPE(2, 3, 4), 6, cases[i].pads, cases[i].mode, NULL);
        char what[96];
        snprintf(what, sizeof what, "Pad %s (2, 3, 4) pads {%lld, %lld, %lld, %lld, %lld, %lld}",
                 cases[i].mode, (long long)cases[i].pads[0], (long long)cases[i].pads[1],
                 (long long)cases[i].pads[2], (long long)cases[i].pads[3],
                 (long long)cases[i].pads[4], (long long)cases[i].pads[5]);
        check_gradients(&g, what);
        check_backward_accumulates(&g, what);
        kn_graph_free(&g);
    }
    kn_graph g;
    pad_build(&g, SHAPE(8, 16, 34, 34), 8, (int64_t[]){0, 0, 1, 1, 0, 0, 1, 1}, "constant", NULL);
    check_thread_independent(&g, "Pad constant (8, 16, 34, 34)");
    kn_graph_free(&g);

    static const struct {
        int n;
        int64_t pads[6];
        const char *mode;
        kiln_status status;
        const char *needle;
    } bad[] = {
        {4, {1, 1, 1, 1}, "constant", KILN_ERR_INVALID_ARG,
         "pads has 4 elements; 3 axes need 6"},
        {6, {0, 0, 0, 0, 0, 0}, "symmetric", KILN_ERR_UNSUPPORTED, "mode 'symmetric'"},
        {6, {0, -3, 0, 0, -2, 0}, "constant", KILN_ERR_SHAPE,
         "leave no valid size for dim 1 of size 3"},
    };
    for (int i = 0; i < COUNT(bad); i++) {
        pad_build(&g, SHAPE(2, 3, 4), bad[i].n, bad[i].pads, bad[i].mode, NULL);
        check_infer_fails(&g, bad[i].status, bad[i].needle);
        kn_graph_free(&g);
    }

    kn_graph_init(&g);
    int x = add_param(&g, "x", SHAPE(2, 3), 92);
    int pads = add_value(&g, "pads", KN_VALUE_INPUT, KN_I64, SHAPE(4)), y = add_output(&g, "y");
    add_node(&g, "Pad", 2, (int[]){x, pads}, 1, &y);
    check_infer_fails(&g, KILN_ERR_UNSUPPORTED, "the pads input must be constant");
    kn_graph_free(&g);

    kn_graph_init(&g);
    x = add_param(&g, "x", SHAPE(0, 3), 93);
    pads = add_i64(&g, "pads", 4, (int64_t[]){1, 0, 0, 0});
    y = add_output(&g, "y");
    add_node(&g, "Pad", 2, (int[]){x, pads}, 1, &y);
    CHECK_OK(kn_node_set_string(&g, 0, "mode", "edge"));
    check_infer_fails(&g, KILN_ERR_SHAPE, "cannot pad the empty dim 0 in edge mode");
    kn_graph_free(&g);
}

/* ---- Resize ---- */

typedef struct resize_case {
    const char *name, *mode, *coord, *nearest;
    kn_shape in;
    int n_scales, n_sizes; /* one of them is 4 */
    float scales[4];
    int64_t sizes[4];
} resize_case;

/* X (filled 1, 2, 3, ... when `counting`, else uniform), roi omitted, then scales or sizes. */
static int resize_build(kn_graph *g, const resize_case *c, bool counting) {
    kn_graph_init(g);
    int x = add_param(g, "X", c->in, 101);
    if (counting)
        for (int64_t i = 0; i < kn_shape_numel(&c->in); i++)
            data_of(g, x)[i] = (float)(i + 1);
    int in[4] = {x, -1, -1, -1};
    if (c->n_scales)
        in[2] = add_const(g, "scales", KN_F32, SHAPE(c->n_scales), c->scales);
    if (c->n_sizes)
        in[3] = add_i64(g, "sizes", c->n_sizes, c->sizes);
    int y = add_output(g, "Y");
    add_node(g, "Resize", c->n_sizes ? 4 : 3, in, 1, &y);
    if (c->mode)
        CHECK_OK(kn_node_set_string(g, 0, "mode", c->mode));
    if (c->coord)
        CHECK_OK(kn_node_set_string(g, 0, "coordinate_transformation_mode", c->coord));
    if (c->nearest)
        CHECK_OK(kn_node_set_string(g, 0, "nearest_mode", c->nearest));
    return x;
}

static void test_resize_forward(void) {
    /* The official test_resize_* inputs are 1, 2, 3, ... */
    static const float upsample_linear[16] = {1, 1.25f, 1.75f, 2, 1.5f, 1.75f, 2.25f, 2.5f,
                                              2.5f, 2.75f, 3.25f, 3.5f, 3, 3.25f, 3.75f, 4};
    static const float nearest_ceil[64] = {1,  2,  2,  3,  3,  4,  4,  4,
                                           5,  6,  6,  7,  7,  8,  8,  8,
                                           5,  6,  6,  7,  7,  8,  8,  8,
                                           9,  10, 10, 11, 11, 12, 12, 12,
                                           9,  10, 10, 11, 11, 12, 12, 12,
                                           13, 14, 14, 15, 15, 16, 16, 16,
                                           13, 14, 14, 15, 15, 16, 16, 16,
                                           13, 14, 14, 15, 15, 16, 16, 16};
    static const float nearest_floor_align[64] = {1,  1,  1,  2,  2,  3,  3,  4,
                                                  1,  1,  1,  2,  2,  3,  3,  4,
                                                  1,  1,  1,  2,  2,  3,  3,  4,
                                                  5,  5,  5,  6,  6,  7,  7,  8,
                                                  5,  5,  5,  6,  6,  7,  7,  8,
                                                  9,  9,  9,  10, 10, 11, 11, 12,
                                                  9,  9,  9,  10, 10, 11, 11, 12,
                                                  13, 13, 13, 14, 14, 15, 15, 16};
    static const float upsample_nearest[24] = {1, 1, 1, 2, 2, 2, 1, 1, 1, 2, 2, 2,
                                               3, 3, 3, 4, 4, 4, 3, 3, 3, 4, 4, 4};
    const struct {
        resize_case c;
        kn_shape out;
        const float *want;
    } cases[] = {
        {{"test_resize_upsample_scales_linear", "linear", NULL, NULL, {4, {1, 1, 2, 2}}, 4, 0,
          {1, 1, 2, 2}, {0}},
         {4, {1, 1, 4, 4}}, upsample_linear},
        {{"test_resize_downsample_scales_linear_align_corners", "linear", "align_corners", NULL,
          {4, {1, 1, 2, 4}}, 4, 0, {1, 1, 0.6f, 0.6f}, {0}},
         {4, {1, 1, 1, 2}}, (const float[]){1, 3.142857f}},
        {{"test_resize_downsample_scales_linear", "linear", NULL, NULL, {4, {1, 1, 2, 4}}, 4, 0,
          {1, 1, 0.6f, 0.6f}, {0}},
         {4, {1, 1, 1, 2}}, (const float[]){2.6666665f, 4.333333f}},
        {{"test_resize_downsample_sizes_linear_pytorch_half_pixel", "linear", "pytorch_half_pixel",
          NULL, {4, {1, 1, 4, 4}}, 0, 4, {0}, {1, 1, 3, 1}},
         {4, {1, 1, 3, 1}}, (const float[]){1.6666666f, 7, 12.333333f}},
        {{"test_resize_upsample_sizes_nearest_ceil_half_pixel", "nearest", "half_pixel", "ceil",
          {4, {1, 1, 4, 4}}, 0, 4, {0}, {1, 1, 8, 8}},
         {4, {1, 1, 8, 8}}, nearest_ceil},
        {{"test_resize_upsample_sizes_nearest_round_prefer_ceil_asymmetric", "nearest",
          "asymmetric", "round_prefer_ceil", {4, {1, 1, 4, 4}}, 0, 4, {0}, {1, 1, 8, 8}},
         {4, {1, 1, 8, 8}}, nearest_ceil},
        {{"test_resize_upsample_sizes_nearest_floor_align_corners", "nearest", "align_corners",
          "floor", {4, {1, 1, 4, 4}}, 0, 4, {0}, {1, 1, 8, 8}},
         {4, {1, 1, 8, 8}}, nearest_floor_align},
        {{"test_resize_upsample_scales_nearest", NULL, NULL, NULL, {4, {1, 1, 2, 2}}, 4, 0,
          {1, 1, 2, 3}, {0}},
         {4, {1, 1, 4, 6}}, upsample_nearest},
        {{"test_resize_downsample_scales_nearest", "nearest", NULL, NULL, {4, {1, 1, 2, 4}}, 4, 0,
          {1, 1, 0.6f, 0.6f}, {0}},
         {4, {1, 1, 1, 2}}, (const float[]){1, 3}},
    };
    for (int i = 0; i < COUNT(cases); i++) {
        kn_graph g;
        resize_build(&g, &cases[i].c, true);
        char what[96];
        snprintf(what, sizeof what, "Resize %s", cases[i].c.name);
        check_f32_output(&g, cases[i].out, cases[i].want, 1e-6, what);
        kn_graph_free(&g);
    }

    /* Nearest moves u8 pixels like f32 ones. */
    resize_case c = {"u8", "nearest", "asymmetric", "floor", {4, {2, 3, 5, 7}}, 0, 4, {0},
                     {2, 3, 9, 4}};
    kn_graph g;
    int x = resize_build(&g, &c, false);
    kn_tensor *as_f32 = forward(&g);
    unsigned char pixels[2 * 3 * 5 * 7];
    for (int i = 0; i < COUNT(pixels); i++)
        pixels[i] = (unsigned char)(data_of(&g, x)[i] * 100 + 100);
    g.values[x].dtype = KN_U8;
    memcpy(g.values[x].data, pixels, sizeof pixels);
    kn_tensor *as_u8 = forward(&g);
    int mismatches = 0;
    if (as_f32 && as_u8) {
        check_shape(&as_u8[0], SHAPE(2, 3, 9, 4), "Resize nearest u8");
        CHECK(as_u8[0].dtype == KN_U8);
        for (int64_t i = 0; i < kn_numel(&as_u8[0]); i++)
            mismatches +=
                ((uint8_t *)as_u8[0].data)[i] != (unsigned char)(kn_f32(&as_f32[0])[i] * 100 + 100);
    }
    CHECK_MSG(mismatches == 0, "Resize nearest u8 and f32 disagree at %d pixels", mismatches);
    printf("Resize nearest u8 (2, 3, 5, 7) -> (2, 3, 9, 4): same pixels as f32 (%d mismatches)\n",
           mismatches);
    opcheck_free_outputs(as_f32, 1);
    opcheck_free_outputs(as_u8, 1);
    kn_graph_free(&g);
}

static void test_resize_gradients_and_errors(void) {
    static const resize_case cases[] = {
        {"linear half_pixel up", "linear", NULL, NULL, {4, {2, 3, 4, 5}}, 0, 4, {0}, {2, 3, 7, 9}},
        {"linear align_corners down", "linear", "align_corners", NULL, {4, {2, 3, 4, 5}}, 0, 4,
         {0}, {2, 3, 3, 2}},
        {"linear asymmetric scales", "linear", "asymmetric", NULL, {4, {1, 2, 4, 6}}, 4, 0,
         {1, 1, 1.5f, 0.5f}, {0}},
        {"linear pytorch_half_pixel", "linear", "pytorch_half_pixel", NULL, {3, {3, 5, 4}}, 0, 3,
         {0}, {3, 1, 7}},
        {"nearest round_prefer_ceil up", "nearest", NULL, "round_prefer_ceil", {4, {2, 3, 4, 5}},
         4, 0, {1, 1, 2, 1.5f}, {0}},
        {"nearest down", "nearest", "asymmetric", NULL, {4, {2, 3, 5, 6}}, 0, 4, {0}, {2, 3, 2, 4}},
    };
    for (int i = 0; i < COUNT(cases); i++) {
        kn_graph g;
        resize_build(&g, &cases[i], false);
        char what[96];
        snprintf(what, sizeof what, "Resize %s", cases[i].name);
        check_gradients(&g, what);
        check_backward_accumulates(&g, what);
        kn_graph_free(&g);
    }
    kn_graph g;
    resize_case big = {"big", "linear", NULL, NULL, {4, {4, 16, 24, 24}}, 4, 0, {1, 1, 2, 2}, {0}};
    resize_build(&g, &big, false);
    check_thread_independent(&g, "Resize linear (4, 16, 24, 24) x2");
    kn_graph_free(&g);

    static const struct {
        resize_case c;
        kiln_status status;
        const char *needle;
    } bad[] = {
        {{"", "bicubic", NULL, NULL, {4, {1, 1, 2, 2}}, 4, 0, {1, 1, 2, 2}, {0}},
         KILN_ERR_INVALID_ARG, "unknown mode 'bicubic'"},
        {{"", "linear", "tf_crop_and_resize", NULL, {4, {1, 1, 2, 2}}, 4, 0, {1, 1, 2, 2}, {0}},
         KILN_ERR_INVALID_ARG, "tf_crop_and_resize needs the roi input"},
        {{"", NULL, NULL, NULL, {4, {1, 1, 2, 2}}, 4, 4, {1, 1, 2, 2}, {1, 1, 4, 4}},
         KILN_ERR_INVALID_ARG, "exactly one of scales and sizes must be given (got both)"},
        {{"", NULL, NULL, NULL, {4, {1, 3, 2, 2}}, 0, 4, {0}, {1, 6, 4, 4}}, KILN_ERR_UNSUPPORTED,
         "resizing dim 1 (3 -> 6) is not supported"},
        {{"", NULL, NULL, NULL, {4, {1, 1, 2, 2}}, 4, 0, {1, 1, 0, 2}, {0}}, KILN_ERR_INVALID_ARG,
         "scales[2] is 0"},
        {{"", NULL, NULL, NULL, {4, {1, 1, 2, 2}}, 0, 3, {0}, {1, 1, 4}}, KILN_ERR_INVALID_ARG,
         "sizes has 3 elements; X has rank 4"},
        {{"", NULL, NULL, "nearest_even", {4, {1, 1, 2, 2}}, 0, 4, {0}, {1, 1, 4, 4}},
         KILN_ERR_INVALID_ARG, "unknown nearest_mode 'nearest_even'"},
    };
    for (int i = 0; i < COUNT(bad); i++) {
        resize_build(&g, &bad[i].c, false);
        check_infer_fails(&g, bad[i].status, bad[i].needle);
        kn_graph_free(&g);
    }

    kn_graph_init(&g);
    int in[4] = {add_value(&g, "X", KN_VALUE_INPUT, KN_U8, SHAPE(1, 1, 2, 2)), -1, -1,
                 add_value(&g, "sizes", KN_VALUE_INPUT, KN_I64, SHAPE(4))};
    int y = add_output(&g, "Y");
    add_node(&g, "Resize", 4, in, 1, &y);
    check_infer_fails(&g, KILN_ERR_UNSUPPORTED, "the sizes input must be constant");
    CHECK_OK(kn_node_set_string(&g, 0, "mode", "linear"));
    check_infer_fails(&g, KILN_ERR_UNSUPPORTED, "linear Resize of u8 data; only f32 is supported");
    kn_graph_free(&g);
}

/* ---- QuantizeLinear and DequantizeLinear ---- */

static kn_tensor *quant_run(kn_graph *g, bool expect_ok, const char *op, kn_dtype x_dtype,
                            kn_shape x_shape, const void *x, kn_shape param_shape,
                            const float *scale, kn_dtype zp_dtype, const void *zp, int64_t axis) {
    kn_graph_init(g);
    int in[3] = {add_const(g, "x", x_dtype, x_shape, x),
                 add_const(g, "scale", KN_F32, param_shape, scale),
                 zp ? add_const(g, "zero_point", zp_dtype, param_shape, zp) : -1};
    int y = add_output(g, "y");
    add_node(g, op, zp ? 3 : 2, in, 1, &y);
    if (axis != 99)
        CHECK_OK(kn_node_set_int(g, 0, "axis", axis));
    return expect_ok ? forward(g) : opcheck_forward(g, 0, false);
}

static void test_quantize(void) {
    kn_shape scalar = kn_shape_of(0, NULL);
    kn_graph g;
    /* test_quantizelinear */
    kn_tensor *out = quant_run(&g, true, "QuantizeLinear", KN_F32, SHAPE(6),
                               (float[]){0, 2, 3, 1000, -254, -1000}, scalar, (float[]){2}, KN_U8,
                               (uint8_t[]){128}, 99);
    if (out)
        check_bytes(&out[0], KN_U8, SHAPE(6), (uint8_t[]){128, 129, 130, 255, 1, 0},
                    "QuantizeLinear test_quantizelinear");
    opcheck_free_outputs(out, 1);
    kn_graph_free(&g);

    /* test_quantizelinear_axis and test_dequantizelinear_axis: per channel along the default axis
     * 1 */
    static const float real[18] = {-162, 10, -100, 232, -20, -50, -76, 0, 0, 252, 32, -44,
                                   245, -485, -960, -270, -375, -470};
    static const uint8_t levels[18] = {3,  89, 34, 200, 74, 59, 5,   24,  24,
                                       87, 32, 13, 245, 99, 4,  142, 121, 102};
    static const float scales[3] = {2, 4, 5};
    static const uint8_t zero_points[3] = {84, 24, 196};
    out = quant_run(&g, true, "QuantizeLinear", KN_F32, SHAPE(1, 3, 3, 2), real, SHAPE(3), scales,
                    KN_U8, zero_points, 99);
    if (out)
        check_bytes(&out[0], KN_U8, SHAPE(1, 3, 3, 2), levels,
                    "QuantizeLinear test_quantizelinear_axis");
    opcheck_free_outputs(out, 1);
    kn_graph_free(&g);
    out = quant_run(&g, true, "DequantizeLinear", KN_U8, SHAPE(1, 3, 3, 2), levels, SHAPE(3),
                    scales, KN_U8, zero_points, 99);
    if (out)
        check_bytes(&out[0], KN_F32, SHAPE(1, 3, 3, 2), real,
                    "DequantizeLinear test_dequantizelinear_axis");
    opcheck_free_outputs(out, 1);
    kn_graph_free(&g);

    /* test_dequantizelinear */
    out = quant_run(&g, true, "DequantizeLinear", KN_U8, SHAPE(4), (uint8_t[]){0, 3, 128, 255},
                    scalar, (float[]){2}, KN_U8, (uint8_t[]){128}, 99);
    if (out)
        check_bytes(&out[0], KN_F32, SHAPE(4), (float[]){-256, -250, 0, 254},
                    "DequantizeLinear test_dequantizelinear");
    opcheck_free_outputs(out, 1);
    kn_graph_free(&g);

    /* i8, ties to even, saturation, NaN to the lowest level, no zero point */
    out = quant_run(&g, true, "QuantizeLinear", KN_F32, SHAPE(9),
                    (float[]){0.5f, 1.5f, 2.5f, -0.5f, -1.5f, 300, -300, -2.6f, NAN}, scalar,
                    (float[]){1}, KN_I8, (int8_t[]){0}, 99);
    if (out)
        check_bytes(&out[0], KN_I8, SHAPE(9), (int8_t[]){0, 2, 2, 0, -2, 127, -128, -3, -128},
                    "QuantizeLinear i8 ties to even");
    opcheck_free_outputs(out, 1);
    kn_graph_free(&g);
    out = quant_run(&g, true, "QuantizeLinear", KN_F32, SHAPE(3), (float[]){1, -1, 700}, scalar,
                    (float[]){2}, KN_U8, NULL, 99);
    if (out)
        check_bytes(&out[0], KN_U8, SHAPE(3), (uint8_t[]){0, 0, 255},
                    "QuantizeLinear without a zero point");
    opcheck_free_outputs(out, 1);
    kn_graph_free(&g);

    /* per axis 0 with i8, and back */
    int8_t zp8[2] = {-3, 5};
    float x2[6] = {-1.0f, 0.24f, 1.0f, -0.5f, 0.0f, 0.75f}, s2[2] = {0.25f, 0.125f};
    out =
        quant_run(&g, true, "QuantizeLinear", KN_F32, SHAPE(2, 3), x2, SHAPE(2), s2, KN_I8, zp8, 0);
    int8_t q2[6] = {-7, -2, 1, 1, 5, 11};
    if (out)
        check_bytes(&out[0], KN_I8, SHAPE(2, 3), q2, "QuantizeLinear i8 axis 0");
    opcheck_free_outputs(out, 1);
    kn_graph_free(&g);
    out = quant_run(&g, true, "DequantizeLinear", KN_I8, SHAPE(2, 3), q2, SHAPE(2), s2, KN_I8, zp8,
                    -2);
    if (out)
        check_bytes(&out[0], KN_F32, SHAPE(2, 3), (float[]){-1.0f, 0.25f, 1.0f, -0.5f, 0.0f, 0.75f},
                    "DequantizeLinear i8 axis -2");
    opcheck_free_outputs(out, 1);
    kn_graph_free(&g);
    out = quant_run(&g, true, "DequantizeLinear", KN_I32, SHAPE(3), (int32_t[]){-100000, 0, 7},
                    scalar, (float[]){0.5f}, KN_I32, NULL, 99);
    if (out)
        check_bytes(&out[0], KN_F32, SHAPE(3), (float[]){-50000, 0, 3.5f}, "DequantizeLinear i32");
    opcheck_free_outputs(out, 1);
    kn_graph_free(&g);

    /* errors */
    CHECK(quant_run(&g, false, "QuantizeLinear", KN_F32, SHAPE(2, 3), x2, SHAPE(2), s2, KN_I8, zp8,
                    1) == NULL);
    CHECK_MSG(strstr(kiln_last_error(), "2 scales for axis 1 of size 3"), "%s", kiln_last_error());
    printf("  error as expected: %s\n", kiln_last_error());
    kn_graph_free(&g);
    CHECK(quant_run(&g, false, "QuantizeLinear", KN_F32, SHAPE(2, 3), x2, scalar, s2, KN_I32,
                    (int32_t[]){0}, 99) == NULL);
    CHECK_MSG(strstr(kiln_last_error(), "the zero point has dtype i32; u8 and i8 are supported"),
              "%s", kiln_last_error());
    printf("  error as expected: %s\n", kiln_last_error());
    kn_graph_free(&g);
    CHECK(quant_run(&g, false, "DequantizeLinear", KN_U8, SHAPE(3), levels, scalar, s2, KN_I8, zp8,
                    99) == NULL);
    CHECK_MSG(strstr(kiln_last_error(), "the zero point has dtype i8 but x u8"), "%s",
              kiln_last_error());
    printf("  error as expected: %s\n", kiln_last_error());
    kn_graph_free(&g);
}

/* ---- the table ---- */

static void test_registered(void) {
    static const char *const names[] = {
        "Identity",  "Shape",  "Gather",         "Slice",           "Split",           "Squeeze",
        "Unsqueeze", "Expand", "Tile",           "Range",           "ConstantOfShape", "Cast",
        "Pad",       "Resize", "QuantizeLinear", "DequantizeLinear"};
    for (int i = 0; i < COUNT(names); i++)
        CHECK_MSG(kn_op_find(names[i]) != NULL, "op %s is not in the table", names[i]);
}

int main(void) {
    test_registered();
    test_generic_dtypes();
    test_shape();
    test_gather_forward();
    test_gather_gradients_and_errors();
    test_slice_forward();
    test_slice_gradients_and_errors();
    test_split();
    test_squeeze_unsqueeze();
    test_expand();
    test_tile();
    test_range();
    test_constantofshape();
    test_cast_f16();
    test_cast_pairs();
    test_pad_forward();
    test_pad_gradients_and_errors();
    test_resize_forward();
    test_resize_gradients_and_errors();
    test_quantize();
    return check_finish();
}
