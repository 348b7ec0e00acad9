/* Conv, ConvTranspose, MaxPool and AveragePool beyond 2-D: 1-D inputs (run by the 2-D code as height
 * 1), 3-D and 4-D inputs (src/ops/conv_nd.c, pool_nd.c), MaxPool's Indices output and u8/i8 input,
 * and the workspace the pools and ConvTranspose declare.
 *
 * 1. forward against naive loops written here from the ONNX definitions (output sizes, pads, auto_pad,
 *    ceil_mode, count_include_pad, output_padding, output_shape, groups): Conv and ConvTranspose within
 *    the float rounding bound (K + 2) * FLT_EPSILON * sum |x w| of each output, pools exactly (MaxPool
 *    values and Indices) or within that bound (AveragePool);
 * 2. every backward against central finite differences (opcheck);
 * 3. the N-D loops give bit-identical results at 1 and 2 threads;
 * 4. an op's declared workspace covers its forward's scratch, so a first run allocates nothing;
 * 5. FLOP counts.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "support/graph_ids.h"
#include "core/graph.h"
#include "core/rng.h"
#include "core/threads.h"
#include "ops/op.h"
#include "support/opcheck.h"

#define MAX_RANK 4
#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const kn_shape scalar_shape = {0};

/* ---- window geometry, as the ONNX spec defines it ---- */

typedef struct window {
    int rank;
    int64_t in[MAX_RANK], kernel[MAX_RANK], strides[MAX_RANK], dilations[MAX_RANK];
    int64_t pads[2 * MAX_RANK]; /* begins, then ends */
    const char *auto_pad;       /* NULL: explicit pads */
} window;

typedef struct axis {
    int64_t in, kernel, stride, dilation, pad_begin, pad_end, out;
} axis;

static int64_t axis_extent(const axis *a) { return (a->kernel - 1) * a->dilation + 1; }

/* The axes of a Conv or pool window: SAME_* pads to ceil(in / stride) outputs, the odd padding at the
 * end for SAME_UPPER; explicit pads give floor (ceil_mode: ceil) of (padded - extent) / stride + 1
 * outputs, dropping with ceil_mode a last window that starts in the end padding. */
static void window_axes(const window *w, bool ceil_mode, axis *axes) {
    for (int i = 0; i < w->rank; i++) {
        axis *a = &axes[i];
        *a = (axis){w->in[i], w->kernel[i], w->strides[i], w->dilations[i], 0, 0, 0};
        if (w->auto_pad && strncmp(w->auto_pad, "SAME", 4) == 0) {
            a->out = (a->in + a->stride - 1) / a->stride;
            int64_t total = (a->out - 1) * a->stride + axis_extent(a) - a->in;
            total = total > 0 ? total : 0;
            bool upper = strcmp(w->auto_pad, "SAME_UPPER") == 0;
            a->pad_begin = upper ? total / 2 : total - total / 2;
            a->pad_end = total - a->pad_begin;
            continue;
        }
        if (!w->auto_pad) {
            a->pad_begin = w->pads[i];
            a->pad_end = w->pads[w->rank + i];
        }
        int64_t span = a->in + a->pad_begin + a->pad_end - axis_extent(a);
        a->out = (ceil_mode ? (span + a->stride - 1) / a->stride : span / a->stride) + 1;
        if (ceil_mode && (a->out - 1) * a->stride >= a->in + a->pad_begin)
            a->out--;
    }
}

static int64_t product(const int64_t *v, int n) {
    int64_t p = 1;
    for (int i = 0; i < n; i++)
        p *= v[i];
    return p;
}

/* Row-major coordinates of flat index i in dims[rank]. */
static void unravel(int64_t i, const int64_t *dims, int rank, int64_t *coords) {
    for (int d = rank - 1; d >= 0; d--) {
        coords[d] = i % dims[d];
        i /= dims[d];
    }
}

/* The input position of output `o` read by tap `k` along axis a (maybe outside [0, in)). */
static int64_t position(const axis *a, int64_t o, int64_t k) {
    return o * a->stride - a->pad_begin + k * a->dilation;
}

static kn_shape shape_of(int64_t n, int64_t c, const int64_t *spatial, int rank) {
    kn_shape s = {.ndim = rank + 2, .d = {n, c}};
    for (int i = 0; i < rank; i++)
        s.d[2 + i] = spatial[i];
    return s;
}

static void set_window_attrs(kn_graph *g, int node, const window *w, bool dilations) {
    kn_node_set_ints(g, node, "kernel_shape", w->rank, w->kernel);
    kn_node_set_ints(g, node, "strides", w->rank, w->strides);
    if (dilations)
        kn_node_set_ints(g, node, "dilations", w->rank, w->dilations);
    if (w->auto_pad)
        kn_node_set_string(g, node, "auto_pad", w->auto_pad);
    else
        kn_node_set_ints(g, node, "pads", 2 * w->rank, w->pads);
}

static int add_param(kn_graph *g, const char *name, kn_shape shape, kn_dtype dtype) {
    return test_add_value(g, name, KN_VALUE_PARAM, dtype, &shape);
}

static float *value_data(kn_graph *g, const char *name) {
    return g->values[kn_graph_find_value(g, name)].data;
}

/* Overwrites f32 value `name` with a seeded shuffle of -1, -1 + 0.01, ...: no two entries are closer
 * than 0.01, ten times the finite-difference step, so no max window has a near tie. */
static void fill_spaced(kn_graph *g, const char *name, uint64_t seed) {
    kn_value *v = &g->values[kn_graph_find_value(g, name)];
    float *x = v->data;
    int64_t n = kn_shape_numel(&v->shape);
    for (int64_t i = 0; i < n; i++)
        x[i] = -1.0f + 0.01f * (float)i;
    kn_rng rng = kn_rng_seeded(seed);
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)kn_rng_below(&rng, (uint64_t)i + 1);
        float t = x[i];
        x[i] = x[j];
        x[j] = t;
    }
}

static void check_gradients(const char *label, kn_graph *g, int node) {
    printf("%s\n", label);
    opcheck_options options = {0};
    double worst = opcheck_gradients(g, node, &options);
    CHECK_MSG(worst >= 0 && worst <= 1, "%s: worst error ratio %.3g", label, worst);
}

/* |diff| as a fraction of the rounding bound of a float sum of `terms` products whose magnitudes
 * add up to `magnitude`. */
static double rounding_ratio(double diff, int64_t terms, double magnitude) {
    return diff / ((double)(terms + 2) * FLT_EPSILON * magnitude + FLT_MIN);
}

/* Worst rounding ratio of y against ref, whose sums had `terms` terms of magnitudes mag. */
static double compare_sums(const float *y, const double *ref, const double *mag, int64_t n, int64_t terms,
                           double *worst_diff) {
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double diff = fabs(y[i] - ref[i]);
        *worst_diff = fmax(*worst_diff, diff);
        worst = fmax(worst, rounding_ratio(diff, terms, mag[i]));
    }
    return worst;
}

/* ---- Conv ---- */

typedef struct conv_case {
    const char *label;
    window w;
    int64_t N, C, M, group;
    bool bias;
} conv_case;

static const conv_case conv_cases[] = {
    {"Conv 1-D k3 pad 1 bias", {1, {9}, {3}, {1}, {1}, {1, 1}, NULL}, 2, 3, 4, 1, true},
    {"Conv 1-D k3 stride 2 dilation 2 pads (2, 1)", {1, {11}, {3}, {2}, {2}, {2, 1}, NULL}, 1, 2, 3, 1,
     false},
    {"Conv 1-D 2 groups", {1, {8}, {3}, {1}, {1}, {0, 0}, NULL}, 2, 4, 6, 2, true},
    {"Conv 1-D depthwise stride 2", {1, {9}, {3}, {2}, {1}, {1, 1}, NULL}, 1, 3, 3, 3, true},
    {"Conv 1-D pointwise", {1, {7}, {1}, {1}, {1}, {0, 0}, NULL}, 2, 3, 2, 1, true},
    {"Conv 1-D SAME_LOWER k4 stride 3", {1, {10}, {4}, {3}, {1}, {0}, "SAME_LOWER"}, 1, 2, 2, 1, true},
    {"Conv 3-D 3x3x3 pad 1 bias", {3, {4, 5, 4}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1, 1, 1, 1}, NULL},
     2, 2, 3, 1, true},
    {"Conv 3-D strides (2,1,2) dilations (1,2,1) pads (0,2,1, 1,0,0)",
     {3, {5, 6, 5}, {2, 2, 3}, {2, 1, 2}, {1, 2, 1}, {0, 2, 1, 1, 0, 0}, NULL}, 1, 2, 2, 1, false},
    {"Conv 3-D 2 groups", {3, {3, 4, 4}, {2, 3, 2}, {1, 1, 1}, {1, 1, 1}, {0, 1, 0, 0, 1, 1}, NULL}, 1, 4,
     4, 2, true},
    {"Conv 3-D SAME_UPPER stride 2", {3, {4, 5, 3}, {3, 2, 3}, {2, 2, 2}, {1, 1, 1}, {0}, "SAME_UPPER"},
     1, 2, 3, 1, true},
    {"Conv 3-D VALID", {3, {4, 4, 5}, {2, 3, 2}, {1, 1, 2}, {1, 1, 1}, {0}, "VALID"}, 2, 1, 2, 1, true},
    {"Conv 4-D (rank 6)", {4, {3, 3, 4, 3}, {2, 2, 2, 2}, {1, 1, 2, 1}, {1, 1, 1, 1},
                           {1, 0, 1, 0, 0, 1, 0, 1}, NULL}, 1, 2, 2, 1, true},
};

static int build_conv(kn_graph *g, const conv_case *c) {
    kn_graph_init(g);
    int in[3] = {add_param(g, "X", shape_of(c->N, c->C, c->w.in, c->w.rank), KN_F32),
                 add_param(g, "W", shape_of(c->M, c->C / c->group, c->w.kernel, c->w.rank), KN_F32),
                 c->bias ? add_param(g, "B", kn_shape_of(1, &c->M), KN_F32) : -1};
    int y = test_add_value(g, "Y", KN_VALUE_ACT, KN_F32, &scalar_shape);
    int node = test_add_node(g, "Conv", "conv", c->bias ? 3 : 2, in, 1, &y);
    kn_node_set_int(g, node, "group", c->group);
    set_window_attrs(g, node, &c->w, true);
    return node;
}

/* ref, mag (N, M, out...): Y's sums and the sums of their terms' magnitudes; returns the terms per sum. */
static int64_t conv_reference(const conv_case *c, const float *x, const float *w, const float *b,
                              double *ref, double *mag) {
    axis ax[MAX_RANK];
    window_axes(&c->w, false, ax);
    int rank = c->w.rank;
    int64_t out_dims[MAX_RANK];
    for (int d = 0; d < rank; d++)
        out_dims[d] = ax[d].out;
    int64_t out_size = product(out_dims, rank), in_size = product(c->w.in, rank);
    int64_t taps = product(c->w.kernel, rank), Cg = c->C / c->group, Mg = c->M / c->group;
    for (int64_t i = 0; i < c->N * c->M * out_size; i++) {
        int64_t n = i / (c->M * out_size), m = i / out_size % c->M, o[MAX_RANK];
        unravel(i % out_size, out_dims, rank, o);
        double sum = b ? b[m] : 0, magnitude = b ? fabs(b[m]) : 0;
        for (int64_t cg = 0; cg < Cg; cg++) {
            int64_t ch = m / Mg * Cg + cg;
            for (int64_t t = 0; t < taps; t++) {
                int64_t k[MAX_RANK], at = 0;
                unravel(t, c->w.kernel, rank, k);
                bool inside = true;
                for (int d = 0; d < rank; d++) {
                    int64_t p = position(&ax[d], o[d], k[d]);
                    inside &= p >= 0 && p < ax[d].in;
                    at = at * ax[d].in + p;
                }
                if (!inside)
                    continue;
                double term = (double)w[(m * Cg + cg) * taps + t] * x[(n * c->C + ch) * in_size + at];
                sum += term;
                magnitude += fabs(term);
            }
        }
        ref[i] = sum;
        mag[i] = magnitude;
    }
    return Cg * taps + 1;
}

static void test_conv(void) {
    double worst_ratio = 0, worst_diff = 0;
    for (int k = 0; k < COUNT(conv_cases); k++) {
        const conv_case *c = &conv_cases[k];
        kn_graph g;
        int node = build_conv(&g, c);
        opcheck_fill_uniform(&g, 100 + (uint64_t)k, -1, 1);
        kn_tensor *out = opcheck_forward(&g, node, false);
        CHECK_MSG(out != NULL, "%s: %s", c->label, kiln_last_error());
        if (out) {
            int64_t n = kn_numel(&out[0]);
            double *ref = malloc(sizeof(double) * (size_t)n), *mag = malloc(sizeof(double) * (size_t)n);
            int64_t terms = conv_reference(c, value_data(&g, "X"), value_data(&g, "W"),
                                           c->bias ? value_data(&g, "B") : NULL, ref, mag);
            double ratio = compare_sums(kn_f32(&out[0]), ref, mag, n, terms, &worst_diff);
            CHECK_MSG(ratio <= 1, "%s: %.3g of the rounding bound", c->label, ratio);
            worst_ratio = fmax(worst_ratio, ratio);
            free(ref);
            free(mag);
        }
        opcheck_free_outputs(out, 1);
        char label[160];
        snprintf(label, sizeof label, "%s: gradients", c->label);
        check_gradients(label, &g, node);
        kn_graph_free(&g);
    }
    printf("Conv 1-D/3-D/4-D forward vs naive loops: max |diff| = %.3g (%.3g of the rounding bound)\n",
           worst_diff, worst_ratio);
}

/* A fused Relu (set by the inference optimizer) on a 3-D Conv: Y = max(0, conv). */
static void test_conv_fused_relu(void) {
    const conv_case *c = &conv_cases[6];
    kn_graph g;
    int node = build_conv(&g, c);
    opcheck_fill_uniform(&g, 150, -1, 1);
    kn_node_set_string(&g, node, "kn_activation", "Relu");
    kn_tensor *out = opcheck_forward(&g, node, false);
    CHECK_MSG(out != NULL, "fused Relu: %s", kiln_last_error());
    if (out) {
        int64_t n = kn_numel(&out[0]), negatives = 0;
        double *ref = malloc(sizeof(double) * (size_t)n), *mag = malloc(sizeof(double) * (size_t)n);
        int64_t terms =
            conv_reference(c, value_data(&g, "X"), value_data(&g, "W"), value_data(&g, "B"), ref, mag);
        for (int64_t i = 0; i < n; i++) {
            negatives += ref[i] < 0;
            ref[i] = fmax(ref[i], 0.0);
        }
        double diff = 0, ratio = compare_sums(kn_f32(&out[0]), ref, mag, n, terms, &diff);
        printf("Conv 3-D with a fused Relu (%lld of %lld outputs clipped): max |diff| = %.3g\n",
               (long long)negatives, (long long)n, diff);
        CHECK(negatives > 0);
        CHECK_MSG(ratio <= 1, "fused Relu: %.3g of the rounding bound", ratio);
        free(ref);
        free(mag);
    }
    opcheck_free_outputs(out, 1);
    // Fused nodes are inference-only: backward refuses them.
    printf("Conv 3-D with a fused Relu: backward must refuse (opcheck reports the failure)\n");
    CHECK(opcheck_gradients(&g, node, &(opcheck_options){0}) < 0);
    kn_graph_free(&g);
}

/* ---- ConvTranspose ---- */

typedef struct convt_case {
    const char *label;
    window w; /* in: X's spatial dims */
    int64_t N, C, M, group;
    bool bias;
    int64_t output_padding[MAX_RANK];
    int64_t output_shape[MAX_RANK]; /* 0: none */
} convt_case;

static const convt_case convt_cases[] = {
    {"ConvTranspose 1-D k3 stride 2 pads (1, 0)", {1, {4}, {3}, {2}, {1}, {1, 0}, NULL}, 2, 2, 3, 1, true,
     {0}, {0}},
    {"ConvTranspose 1-D dilation 2 output_padding 1 stride 2", {1, {5}, {3}, {2}, {2}, {0, 0}, NULL}, 1, 2,
     2, 1, false, {1}, {0}},
    {"ConvTranspose 1-D 2 groups SAME_UPPER stride 2", {1, {4}, {4}, {2}, {1}, {0}, "SAME_UPPER"}, 1, 4, 4,
     2, true, {0}, {0}},
    {"ConvTranspose 1-D output_shape 10", {1, {4}, {3}, {3}, {1}, {0, 0}, NULL}, 1, 2, 2, 1, true, {0},
     {10}},
    {"ConvTranspose 3-D k2 stride 2", {3, {2, 3, 2}, {2, 2, 2}, {2, 2, 2}, {1, 1, 1}, {0}, NULL}, 2, 2, 3, 1,
     true, {0}, {0}},
    {"ConvTranspose 3-D pads, dilations (1,2,1), output_padding (1,0,0)",
     {3, {3, 2, 3}, {3, 2, 2}, {2, 1, 1}, {1, 2, 1}, {1, 0, 1, 0, 1, 0}, NULL}, 1, 2, 2, 1, true, {1, 0, 0},
     {0}},
    {"ConvTranspose 3-D 2 groups SAME_LOWER", {3, {2, 3, 3}, {2, 3, 2}, {1, 2, 1}, {1, 1, 1}, {0},
                                               "SAME_LOWER"}, 1, 2, 4, 2, false, {0}, {0}},
    {"ConvTranspose 3-D output_shape (4, 5, 6)", {3, {2, 2, 3}, {2, 2, 2}, {2, 2, 2}, {1, 1, 1}, {0}, NULL},
     1, 1, 2, 1, true, {0}, {4, 5, 6}},
};

static int build_convt(kn_graph *g, const convt_case *c) {
    kn_graph_init(g);
    int in[3] = {add_param(g, "X", shape_of(c->N, c->C, c->w.in, c->w.rank), KN_F32),
                 add_param(g, "W", shape_of(c->C, c->M / c->group, c->w.kernel, c->w.rank), KN_F32),
                 c->bias ? add_param(g, "B", kn_shape_of(1, &c->M), KN_F32) : -1};
    int y = test_add_value(g, "Y", KN_VALUE_ACT, KN_F32, &scalar_shape);
    int node = test_add_node(g, "ConvTranspose", "convt", c->bias ? 3 : 2, in, 1, &y);
    kn_node_set_int(g, node, "group", c->group);
    set_window_attrs(g, node, &c->w, true);
    kn_node_set_ints(g, node, "output_padding", c->w.rank, c->output_padding);
    if (c->output_shape[0])
        kn_node_set_ints(g, node, "output_shape", c->w.rank, c->output_shape);
    return node;
}

/* The output axes: the full extent stride (in - 1) + output_padding + (kernel - 1) dilation + 1, less
 * the pads; with output_shape or SAME_* the output size is given (SAME: in * stride) and the difference
 * is cut from the begin by total / 2 for SAME_UPPER, total - total / 2 otherwise. Here the axis is that
 * of the output: `in` is X's size and `out` Y's. */
static void convt_axes(const convt_case *c, axis *ax) {
    const window *w = &c->w;
    for (int i = 0; i < w->rank; i++) {
        axis *a = &ax[i];
        *a = (axis){w->in[i], w->kernel[i], w->strides[i], w->dilations[i], 0, 0, 0};
        int64_t full = a->stride * (a->in - 1) + c->output_padding[i] + axis_extent(a);
        int64_t given = c->output_shape[0] ? c->output_shape[i]
                        : w->auto_pad && strncmp(w->auto_pad, "SAME", 4) == 0 ? a->in * a->stride
                                                                               : -1;
        if (given >= 0) {
            int64_t total = full - given;
            bool upper = w->auto_pad && strcmp(w->auto_pad, "SAME_UPPER") == 0;
            a->pad_begin = total < 0 ? 0 : upper ? total / 2 : total - total / 2;
            a->out = given;
        } else {
            a->pad_begin = w->auto_pad ? 0 : w->pads[i];
            a->out = full - a->pad_begin - (w->auto_pad ? 0 : w->pads[w->rank + i]);
        }
    }
}

/* Y (N, M, out...) as sums scattered from every (input position, tap) pair. */
static int64_t convt_reference(const convt_case *c, const float *x, const float *w, const float *b,
                               double *ref, double *mag) {
    axis ax[MAX_RANK];
    convt_axes(c, ax);
    int rank = c->w.rank;
    int64_t out_dims[MAX_RANK];
    for (int d = 0; d < rank; d++)
        out_dims[d] = ax[d].out;
    int64_t out_size = product(out_dims, rank), in_size = product(c->w.in, rank);
    int64_t taps = product(c->w.kernel, rank), Cg = c->C / c->group, Mg = c->M / c->group;
    for (int64_t i = 0; i < c->N * c->M * out_size; i++) {
        int64_t m = i / out_size % c->M;
        ref[i] = b ? b[m] : 0;
        mag[i] = b ? fabs(b[m]) : 0;
    }
    for (int64_t n = 0; n < c->N; n++)
        for (int64_t ch = 0; ch < c->C; ch++)
            for (int64_t i = 0; i < in_size; i++) {
                int64_t q[MAX_RANK];
                unravel(i, c->w.in, rank, q);
                for (int64_t mg = 0; mg < Mg; mg++) {
                    int64_t m = ch / Cg * Mg + mg;
                    for (int64_t t = 0; t < taps; t++) {
                        int64_t k[MAX_RANK], at = 0;
                        unravel(t, c->w.kernel, rank, k);
                        bool inside = true;
                        for (int d = 0; d < rank; d++) {
                            int64_t p = position(&ax[d], q[d], k[d]);
                            inside &= p >= 0 && p < ax[d].out;
                            at = at * ax[d].out + p;
                        }
                        if (!inside)
                            continue;
                        double term =
                            (double)x[(n * c->C + ch) * in_size + i] * w[(ch * Mg + mg) * taps + t];
                        ref[(n * c->M + m) * out_size + at] += term;
                        mag[(n * c->M + m) * out_size + at] += fabs(term);
                    }
                }
            }
    return Cg * taps + 1;
}

static void test_convtranspose(void) {
    double worst_ratio = 0, worst_diff = 0;
    for (int k = 0; k < COUNT(convt_cases); k++) {
        const convt_case *c = &convt_cases[k];
        kn_graph g;
        int node = build_convt(&g, c);
        opcheck_fill_uniform(&g, 200 + (uint64_t)k, -1, 1);
        kn_tensor *out = opcheck_forward(&g, node, false);
        CHECK_MSG(out != NULL, "%s: %s", c->label, kiln_last_error());
        if (out) {
            axis ax[MAX_RANK];
            convt_axes(c, ax);
            kn_shape want = {.ndim = c->w.rank + 2, .d = {c->N, c->M}};
            for (int d = 0; d < c->w.rank; d++)
                want.d[2 + d] = ax[d].out;
            CHECK_MSG(kn_shape_equal(&out[0].shape, &want), "%s: wrong output shape", c->label);
            int64_t n = kn_numel(&out[0]);
            double *ref = malloc(sizeof(double) * (size_t)n), *mag = malloc(sizeof(double) * (size_t)n);
            int64_t terms = convt_reference(c, value_data(&g, "X"), value_data(&g, "W"),
                                            c->bias ? value_data(&g, "B") : NULL, ref, mag);
            double ratio = compare_sums(kn_f32(&out[0]), ref, mag, n, terms, &worst_diff);
            CHECK_MSG(ratio <= 1, "%s: %.3g of the rounding bound", c->label, ratio);
            worst_ratio = fmax(worst_ratio, ratio);
            free(ref);
            free(mag);
        }
        opcheck_free_outputs(out, 1);
        char label[160];
        snprintf(label, sizeof label, "%s: gradients", c->label);
        check_gradients(label, &g, node);
        kn_graph_free(&g);
    }
    printf("ConvTranspose 1-D/3-D forward vs naive loops: max |diff| = %.3g (%.3g of the rounding bound)\n",
           worst_diff, worst_ratio);
}

/* ---- MaxPool, AveragePool ---- */

typedef struct pool_case {
    const char *op, *label;
    window w;
    int64_t N, C;
    int ceil_mode, count_include_pad;
    kn_dtype dtype;
    int indices; /* -1: no Indices output, else the storage_order */
} pool_case;

static const pool_case pool_cases[] = {
    {"MaxPool", "MaxPool 1-D k3 stride 2 pad 1", {1, {9}, {3}, {2}, {1}, {1, 1}, NULL}, 2, 2, 0, 0, KN_F32,
     -1},
    {"MaxPool", "MaxPool 1-D k2 dilation 3 ceil_mode", {1, {10}, {2}, {2}, {3}, {0, 1}, NULL}, 1, 2, 1, 0,
     KN_F32, -1},
    {"MaxPool", "MaxPool 1-D SAME_UPPER k4", {1, {7}, {4}, {2}, {1}, {0}, "SAME_UPPER"}, 1, 2, 0, 0, KN_F32,
     -1},
    {"MaxPool", "MaxPool 3-D 2x2x2 stride 2", {3, {4, 4, 5}, {2, 2, 2}, {2, 2, 2}, {1, 1, 1}, {0}, NULL}, 2,
     2, 0, 0, KN_F32, -1},
    {"MaxPool", "MaxPool 3-D pads (1,0,1, 0,1,1) dilations (1,2,1) ceil_mode",
     {3, {4, 5, 4}, {2, 2, 3}, {2, 1, 2}, {1, 2, 1}, {1, 0, 1, 0, 1, 1}, NULL}, 1, 2, 1, 0, KN_F32, -1},
    {"MaxPool", "MaxPool 4-D (rank 6)", {4, {3, 3, 4, 3}, {2, 2, 2, 2}, {1, 2, 2, 1}, {1, 1, 1, 1},
                                         {0, 1, 0, 0, 1, 0, 1, 1}, NULL}, 1, 2, 0, 0, KN_F32, -1},
    {"MaxPool", "MaxPool 2-D Indices row-major", {2, {5, 6}, {3, 2}, {2, 2}, {1, 1}, {1, 0, 1, 1}, NULL}, 2,
     3, 0, 0, KN_F32, 0},
    {"MaxPool", "MaxPool 2-D Indices column-major", {2, {5, 6}, {3, 2}, {2, 2}, {1, 1}, {1, 0, 1, 1}, NULL},
     2, 3, 0, 0, KN_F32, 1},
    {"MaxPool", "MaxPool 1-D Indices", {1, {9}, {3}, {2}, {1}, {1, 1}, NULL}, 2, 2, 0, 0, KN_F32, 0},
    {"MaxPool", "MaxPool 3-D Indices column-major", {3, {3, 4, 5}, {2, 2, 2}, {1, 2, 2}, {1, 1, 1},
                                                     {0, 1, 1, 1, 0, 0}, NULL}, 2, 2, 0, 0, KN_F32, 1},
    {"MaxPool", "MaxPool 2-D u8 with Indices", {2, {6, 5}, {3, 3}, {2, 1}, {1, 1}, {1, 1, 1, 1}, NULL}, 2, 2,
     0, 0, KN_U8, 0},
    {"MaxPool", "MaxPool 1-D i8", {1, {12}, {3}, {2}, {2}, {1, 2}, NULL}, 1, 3, 1, 0, KN_I8, -1},
    {"MaxPool", "MaxPool 3-D u8", {3, {3, 4, 4}, {2, 2, 2}, {1, 2, 2}, {1, 1, 1}, {0}, NULL}, 1, 2, 0, 0,
     KN_U8, -1},
    {"AveragePool", "AveragePool 1-D k3 stride 2 pad 1", {1, {9}, {3}, {2}, {1}, {1, 1}, NULL}, 2, 2, 0, 0,
     KN_F32, -1},
    {"AveragePool", "AveragePool 1-D k3 pad 1 count_include_pad ceil_mode", {1, {8}, {3}, {2}, {1}, {1, 1},
                                                                             NULL}, 1, 2, 1, 1, KN_F32, -1},
    {"AveragePool", "AveragePool 1-D SAME_LOWER k2", {1, {7}, {2}, {2}, {1}, {0}, "SAME_LOWER"}, 1, 1, 0, 0,
     KN_F32, -1},
    {"AveragePool", "AveragePool 3-D 2x2x2", {3, {4, 4, 4}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, {0}, NULL}, 1, 2,
     0, 0, KN_F32, -1},
    {"AveragePool", "AveragePool 3-D pad 1 stride 2 count_include_pad",
     {3, {5, 4, 5}, {3, 3, 2}, {2, 2, 2}, {1, 1, 1}, {1, 1, 0, 1, 1, 1}, NULL}, 1, 2, 0, 1, KN_F32, -1},
    {"AveragePool", "AveragePool 3-D pads ceil_mode", {3, {5, 5, 4}, {3, 2, 3}, {2, 2, 2}, {1, 1, 1},
                                                       {1, 0, 1, 1, 1, 0}, NULL}, 2, 1, 1, 0, KN_F32, -1},
    {"AveragePool", "AveragePool 3-D ceil_mode count_include_pad", {3, {5, 5, 4}, {3, 2, 3}, {2, 2, 2},
                                                                    {1, 1, 1}, {1, 0, 1, 1, 1, 0}, NULL},
     1, 2, 1, 1, KN_F32, -1},
};

static int build_pool(kn_graph *g, const pool_case *c) {
    kn_graph_init(g);
    int x = add_param(g, "X", shape_of(c->N, c->C, c->w.in, c->w.rank), c->dtype);
    int outs[2] = {test_add_value(g, "Y", KN_VALUE_ACT, c->dtype, &scalar_shape),
                   test_add_value(g, "Indices", KN_VALUE_ACT, KN_I64, &scalar_shape)};
    int node = test_add_node(g, c->op, "pool", 1, &x, c->indices >= 0 ? 2 : 1, outs);
    bool max = strcmp(c->op, "MaxPool") == 0;
    set_window_attrs(g, node, &c->w, max);
    kn_node_set_int(g, node, "ceil_mode", c->ceil_mode);
    if (max && c->indices >= 0)
        kn_node_set_int(g, node, "storage_order", c->indices);
    if (!max)
        kn_node_set_int(g, node, "count_include_pad", c->count_include_pad);
    return node;
}

/* X as floats: f32 spaced values, u8 and i8 seeded bytes (with ties). */
static void fill_pool_input(kn_graph *g, const pool_case *c, uint64_t seed) {
    if (c->dtype == KN_F32) {
        fill_spaced(g, "X", seed);
        return;
    }
    kn_value *v = &g->values[kn_graph_find_value(g, "X")];
    kn_rng rng = kn_rng_seeded(seed);
    unsigned char *bytes = v->data;
    for (int64_t i = 0; i < kn_shape_numel(&v->shape); i++)
        bytes[i] = (unsigned char)kn_rng_below(&rng, 256);
}

static double element(const void *data, kn_dtype dtype, int64_t i) {
    switch (dtype) {
    case KN_U8: return ((const unsigned char *)data)[i];
    case KN_I8: return ((const signed char *)data)[i];
    default: return ((const float *)data)[i];
    }
}

/* One pool output against its window, read by the definitions: MaxPool's first largest value and its
 * flattened index (row- or column-major spatial position, plus the plane's offset), AveragePool's
 * mean over the real positions or, with count_include_pad, over the positions inside the padded
 * input. Returns the worst rounding ratio (pools with Indices: 0 or infinity). */
static double pool_check_output(const pool_case *c, const axis *ax, const void *x, int64_t plane,
                                int64_t o_flat, const int64_t *out_dims, const kn_tensor *out,
                                double *worst_diff) {
    int rank = c->w.rank;
    int64_t in_size = product(c->w.in, rank), taps = product(c->w.kernel, rank), o[MAX_RANK];
    unravel(o_flat, out_dims, rank, o);
    double best = -INFINITY, sum = 0, magnitude = 0;
    int64_t best_at = -1, best_coords[MAX_RANK] = {0}, count = 0, padded_count = 1;
    for (int d = 0; d < rank; d++) {
        int64_t inside = 0;
        for (int64_t k = 0; k < ax[d].kernel; k++) {
            int64_t p = position(&ax[d], o[d], k);
            inside += p >= -ax[d].pad_begin && p < ax[d].in + ax[d].pad_end;
        }
        padded_count *= inside;
    }
    for (int64_t t = 0; t < taps; t++) {
        int64_t k[MAX_RANK], p[MAX_RANK], at = 0;
        unravel(t, c->w.kernel, rank, k);
        bool inside = true;
        for (int d = 0; d < rank; d++) {
            p[d] = position(&ax[d], o[d], k[d]);
            inside &= p[d] >= 0 && p[d] < ax[d].in;
            at = at * ax[d].in + p[d];
        }
        if (!inside)
            continue;
        double v = element(x, c->dtype, plane * in_size + at);
        count++;
        sum += v;
        magnitude += fabs(v);
        if (v > best) {
            best = v;
            best_at = at;
            memcpy(best_coords, p, sizeof p);
        }
    }
    int64_t out_size = product(out_dims, rank), i = plane * out_size + o_flat;
    double got = element(out[0].data, c->dtype, i);
    if (strcmp(c->op, "MaxPool") == 0) {
        bool ok = got == best;
        if (c->indices >= 0) {
            int64_t index = 0;
            for (int j = 0; j < rank; j++) {
                int d = c->indices ? rank - 1 - j : j; // column-major: the first axis fastest
                index = index * ax[d].in + best_coords[d];
            }
            ok &= best_at >= 0 && ((const int64_t *)out[1].data)[i] == plane * in_size + index;
        }
        *worst_diff = fmax(*worst_diff, fabs(got - best));
        return ok ? 0 : INFINITY;
    }
    double mean = sum / (double)(c->count_include_pad ? padded_count : count);
    double diff = fabs(got - mean);
    *worst_diff = fmax(*worst_diff, diff);
    return rounding_ratio(diff, count + 1, magnitude / (double)count);
}

static void test_pools(void) {
    double worst_max = 0, worst_avg = 0, worst_avg_ratio = 0;
    int64_t indices_checked = 0;
    for (int k = 0; k < COUNT(pool_cases); k++) {
        const pool_case *c = &pool_cases[k];
        kn_graph g;
        int node = build_pool(&g, c);
        fill_pool_input(&g, c, 300 + (uint64_t)k);
        kn_tensor *out = opcheck_forward(&g, node, false);
        CHECK_MSG(out != NULL, "%s: %s", c->label, kiln_last_error());
        int n_out = c->indices >= 0 ? 2 : 1;
        if (out) {
            axis ax[MAX_RANK];
            window_axes(&c->w, c->ceil_mode, ax);
            int64_t out_dims[MAX_RANK];
            for (int d = 0; d < c->w.rank; d++)
                out_dims[d] = ax[d].out;
            kn_shape want = shape_of(c->N, c->C, out_dims, c->w.rank);
            CHECK_MSG(kn_shape_equal(&out[0].shape, &want), "%s: wrong output shape", c->label);
            CHECK(out[0].dtype == c->dtype);
            CHECK(n_out == 1 || (out[1].dtype == KN_I64 && kn_shape_equal(&out[1].shape, &want)));
            bool max = strcmp(c->op, "MaxPool") == 0;
            double worst = 0;
            int64_t out_size = product(out_dims, c->w.rank);
            const void *x = g.values[kn_graph_find_value(&g, "X")].data;
            for (int64_t plane = 0; plane < c->N * c->C; plane++)
                for (int64_t o = 0; o < out_size; o++)
                    worst = fmax(worst, pool_check_output(c, ax, x, plane, o, out_dims, out,
                                                          max ? &worst_max : &worst_avg));
            indices_checked += n_out == 2 ? c->N * c->C * out_size : 0;
            CHECK_MSG(worst <= 1, "%s: worst %.3g", c->label, worst);
            if (!max)
                worst_avg_ratio = fmax(worst_avg_ratio, worst);
        }
        opcheck_free_outputs(out, n_out);
        if (c->dtype == KN_F32 && n_out == 1) {
            char label[160];
            snprintf(label, sizeof label, "%s: gradients", c->label);
            check_gradients(label, &g, node);
        }
        kn_graph_free(&g);
    }
    printf("MaxPool 1-D/3-D/4-D, u8, i8 vs naive loops: max |diff| = %.3g; %lld Indices exact\n",
           worst_max, (long long)indices_checked);
    printf("AveragePool 1-D/3-D vs naive loops: max |diff| = %.3g (%.3g of the rounding bound)\n", worst_avg,
           worst_avg_ratio);
}

/* MaxPool with Indices still trains through its Values output, in 2-D (pool.c's backward) and 3-D. */
static void test_maxpool_indices_gradients(void) {
    const int cases[] = {6, 9};
    for (int k = 0; k < COUNT(cases); k++) {
        const pool_case *c = &pool_cases[cases[k]];
        kn_graph g;
        int node = build_pool(&g, c);
        fill_pool_input(&g, c, 350 + (uint64_t)k);
        printf("%s: gradient of Y\n", c->label);
        opcheck_options options = {.grad_mask = 1};
        double worst = opcheck_gradients(&g, node, &options);
        CHECK_MSG(worst >= 0 && worst <= 1, "%s: worst error ratio %.3g", c->label, worst);
        kn_graph_free(&g);
    }
}

/* ---- determinism, workspace, FLOPs ---- */

/* The node's inputs bound to their values' data and fresh outputs sized by shape inference; `dout`
 * ones-and-twos patterns and zeroed `din` for a backward pass. */
typedef struct bound {
    kn_tensor in[3], out[2], dout[2], din[3];
    kn_tensor *in_p[3], *out_p[2], *din_p[3];
    const kn_tensor *dout_p[2];
} bound;

static void bind_node(kn_graph *g, const kn_node *n, bound *b) {
    memset(b, 0, sizeof *b);
    for (int i = 0; i < n->n_in; i++) {
        kn_value *v = &g->values[n->in[i]];
        b->in[i] = (kn_tensor){v->shape, v->dtype, v->data};
        b->din[i] = (kn_tensor){v->shape, v->dtype, calloc((size_t)kn_shape_numel(&v->shape), 4)};
        b->in_p[i] = &b->in[i];
        b->din_p[i] = &b->din[i];
    }
    for (int i = 0; i < n->n_out; i++) {
        kn_value *v = &g->values[n->out[i]];
        int64_t numel = kn_shape_numel(&v->shape);
        b->out[i] = (kn_tensor){v->shape, v->dtype, calloc((size_t)numel, kn_dtype_size(v->dtype))};
        float *dy = calloc((size_t)numel, sizeof(float));
        for (int64_t e = 0; e < numel; e++)
            dy[e] = 0.25f * (float)(e % 7) - 0.5f;
        b->dout[i] = (kn_tensor){v->shape, KN_F32, dy};
        b->out_p[i] = &b->out[i];
        b->dout_p[i] = &b->dout[i];
    }
}

static void unbind_node(const kn_node *n, bound *b) {
    for (int i = 0; i < n->n_in; i++)
        free(b->din[i].data);
    for (int i = 0; i < n->n_out; i++) {
        free(b->out[i].data);
        free(b->dout[i].data);
    }
}

/* Forward and backward of a 3-D Conv and ConvTranspose (large enough for the loops to go parallel)
 * at 1 and 2 threads: every output and gradient bit-identical. */
static void test_threads(void) {
    const conv_case conv = {"", {3, {6, 8, 8}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1, 1, 1, 1}, NULL},
                            2, 4, 4, 2, true};
    const convt_case convt = {"", {3, {4, 6, 6}, {3, 3, 3}, {2, 1, 2}, {1, 1, 1}, {1, 1, 1, 1, 1, 1}, NULL},
                              2, 4, 4, 2, true, {1, 0, 1}, {0}};
    for (int which = 0; which < 2; which++) {
        kn_graph g;
        int node = which == 0 ? build_conv(&g, &conv) : build_convt(&g, &convt);
        opcheck_fill_uniform(&g, 500 + (uint64_t)which, -1, 1);
        CHECK_OK(kn_graph_infer_shapes(&g));
        const kn_node *n = &g.nodes[node];
        bound runs[2];
        for (int r = 0; r < 2; r++) {
            kn_threads_set(r + 1);
            bind_node(&g, n, &runs[r]);
            kn_op_ctx ctx = {0};
            kn_op_call call = {.node = n, .in = runs[r].in_p, .out = runs[r].out_p,
                               .dout = runs[r].dout_p, .din = runs[r].din_p, .ctx = &ctx};
            CHECK_OK(n->op->forward(&call));
            CHECK_OK(n->op->backward(&call));
            kn_op_ctx_release(&ctx);
        }
        size_t y_bytes = sizeof(float) * (size_t)kn_numel(&runs[0].out[0]);
        bool same = memcmp(runs[0].out[0].data, runs[1].out[0].data, y_bytes) == 0;
        for (int i = 0; i < n->n_in; i++) {
            size_t bytes = sizeof(float) * (size_t)kn_numel(&runs[0].din[i]);
            same &= memcmp(runs[0].din[i].data, runs[1].din[i].data, bytes) == 0;
        }
        printf("%s 3-D forward + backward at 1 and 2 threads: %s\n", n->op->name,
               same ? "bit-identical" : "DIFFERENT");
        CHECK(same);
        for (int r = 0; r < 2; r++)
            unbind_node(n, &runs[r]);
        kn_graph_free(&g);
    }
    kn_threads_set(0);
}

/* The scratch a forward takes fits in what the op's workspace declared: sized up front, a first run
 * does not grow it. */
static void check_workspace(const char *label, kn_graph *g, int node, bool expect_some) {
    CHECK_OK(kn_graph_infer_shapes(g));
    const kn_node *n = &g->nodes[node];
    size_t declared = n->op->workspace ? n->op->workspace(g, n) : 0;
    kn_op_ctx ctx = {0};
    void *before = declared ? kn_op_scratch(&ctx, declared) : NULL;
    size_t bytes_before = ctx.scratch_bytes;
    bound b;
    bind_node(g, n, &b);
    kn_op_call call = {.node = n, .in = b.in_p, .out = b.out_p, .ctx = &ctx};
    CHECK_OK(n->op->forward(&call));
    printf("%-44s workspace %zu bytes, scratch after the first run %zu bytes\n", label, declared,
           ctx.scratch_bytes);
    CHECK_MSG(ctx.scratch == before && ctx.scratch_bytes == bytes_before, "%s: forward grew the scratch",
              label);
    CHECK_MSG(!expect_some || declared > 0, "%s declares no workspace", label);
    unbind_node(n, &b);
    kn_op_ctx_release(&ctx);
}

static void test_workspace(void) {
    const pool_case pools[] = {
        {"MaxPool", "MaxPool 2-D", {2, {7, 6}, {3, 3}, {2, 2}, {1, 1}, {1, 1, 1, 1}, NULL}, 1, 2, 0, 0, KN_F32,
         -1},
        {"AveragePool", "AveragePool 1-D", {1, {9}, {3}, {2}, {1}, {1, 1}, NULL}, 1, 2, 0, 1, KN_F32, -1},
        {"MaxPool", "MaxPool 3-D", {3, {4, 4, 4}, {2, 2, 2}, {2, 2, 2}, {1, 1, 1}, {0}, NULL}, 1, 2, 0, 0,
         KN_F32, -1},
    };
    for (int k = 0; k < COUNT(pools); k++) {
        kn_graph g;
        int node = build_pool(&g, &pools[k]);
        check_workspace(pools[k].label, &g, node, pools[k].w.rank <= 2);
        kn_graph_free(&g);
    }
    const convt_case convts[] = {
        {"ConvTranspose 2-D stride 2", {2, {4, 5}, {3, 3}, {2, 2}, {1, 1}, {1, 1, 1, 1}, NULL}, 2, 3, 4, 1,
         true, {1, 1}, {0}},
        {"ConvTranspose 1-D", {1, {6}, {3}, {2}, {1}, {1, 0}, NULL}, 1, 2, 2, 1, false, {0}, {0}},
        {"ConvTranspose 2-D pointwise", {2, {4, 5}, {1, 1}, {1, 1}, {1, 1}, {0, 0, 0, 0}, NULL}, 2, 3, 4, 1,
         true, {0, 0}, {0}},
        {"ConvTranspose 3-D", {3, {2, 3, 3}, {2, 2, 2}, {2, 2, 2}, {1, 1, 1}, {0}, NULL}, 1, 2, 2, 1, true,
         {0}, {0}},
    };
    for (int k = 0; k < COUNT(convts); k++) {
        kn_graph g;
        int node = build_convt(&g, &convts[k]);
        opcheck_fill_uniform(&g, 600 + (uint64_t)k, -1, 1);
        check_workspace(convts[k].label, &g, node, k < 2);
        kn_graph_free(&g);
    }
    kn_graph g;
    int node = build_conv(&g, &conv_cases[0]);
    check_workspace("Conv 1-D", &g, node, true);
    kn_graph_free(&g);
}

static void test_flops(void) {
    kn_graph g;
    int node = build_conv(&g, &conv_cases[6]); // (2,2,4,5,4) * (3,2,3,3,3), pad 1: Y (2,3,4,5,4)
    CHECK_OK(kn_graph_infer_shapes(&g));
    int64_t outputs = 2 * 3 * 4 * 5 * 4;
    CHECK(g.nodes[node].op->flops(&g, &g.nodes[node]) == 2 * outputs * 2 * 27 + outputs);
    kn_graph_free(&g);

    node = build_conv(&g, &conv_cases[0]); // (2,3,9) * (4,3,3), pad 1: Y (2,4,9)
    CHECK_OK(kn_graph_infer_shapes(&g));
    CHECK(g.nodes[node].op->flops(&g, &g.nodes[node]) == 2 * (2 * 4 * 9) * 3 * 3 + 2 * 4 * 9);
    kn_graph_free(&g);

    node = build_convt(&g, &convt_cases[4]); // X (2,2,2,3,2), W (2,3,2,2,2): Y (2,3,4,6,4)
    CHECK_OK(kn_graph_infer_shapes(&g));
    CHECK(g.nodes[node].op->flops(&g, &g.nodes[node]) == 2 * (2 * 2 * 12) * 3 * 8 + 2 * 3 * 96);
    kn_graph_free(&g);

    node = build_pool(&g, &pool_cases[3]); // (2,2,4,4,5), 2x2x2 stride 2: Y (2,2,2,2,2)
    CHECK_OK(kn_graph_infer_shapes(&g));
    CHECK(g.nodes[node].op->flops(&g, &g.nodes[node]) == 2 * 2 * 8 * 8);
    kn_graph_free(&g);
}

static void expect_error(const char *label, kn_graph *g, kiln_status expected) {
    kiln_status st = kn_graph_infer_shapes(g);
    printf("%-44s -> %s: %s\n", label, kiln_status_name(st), kiln_last_error());
    CHECK_MSG(st == expected, "%s: got %s, expected %s", label, kiln_status_name(st),
              kiln_status_name(expected));
    kn_graph_free(g);
}

static void test_errors(void) {
    kn_graph g;
    conv_case conv = conv_cases[6];
    build_conv(&g, &conv);
    kn_node_set_ints(&g, 0, "strides", 2, (int64_t[]){1, 1});
    expect_error("Conv 3-D with 2 strides", &g, KILN_ERR_INVALID_ARG);

    build_conv(&g, &conv);
    kn_node_set_ints(&g, 0, "kernel_shape", 3, (int64_t[]){3, 3, 2});
    expect_error("Conv 3-D kernel_shape differs from W", &g, KILN_ERR_SHAPE);

    conv.w.kernel[0] = 7;
    build_conv(&g, &conv);
    expect_error("Conv 3-D kernel deeper than the input", &g, KILN_ERR_SHAPE);

    conv = conv_cases[8];
    conv.group = 3;
    build_conv(&g, &conv);
    expect_error("Conv 3-D group 3 does not divide C 4", &g, KILN_ERR_SHAPE);

    convt_case convt = convt_cases[4];
    convt.w.pads[0] = convt.w.pads[3] = 4;
    build_convt(&g, &convt);
    expect_error("ConvTranspose 3-D pads past the output", &g, KILN_ERR_SHAPE);

    pool_case pool = pool_cases[3];
    pool.w.pads[0] = 2;
    build_pool(&g, &pool);
    expect_error("MaxPool 3-D window over padding only", &g, KILN_ERR_SHAPE);

    pool = pool_cases[13];
    pool.dtype = KN_U8;
    build_pool(&g, &pool);
    expect_error("AveragePool on u8", &g, KILN_ERR_UNSUPPORTED);

    pool = pool_cases[0];
    pool.dtype = KN_I32;
    build_pool(&g, &pool);
    expect_error("MaxPool on i32", &g, KILN_ERR_UNSUPPORTED);

    pool = pool_cases[13];
    pool.indices = 0;
    build_pool(&g, &pool);
    expect_error("AveragePool with a second output", &g, KILN_ERR_INVALID_ARG);
}

int main(void) {
    test_conv();
    test_conv_fused_relu();
    test_convtranspose();
    test_pools();
    test_maxpool_indices_gradients();
    test_threads();
    test_workspace();
    test_flops();
    test_errors();
    return check_finish();
}
