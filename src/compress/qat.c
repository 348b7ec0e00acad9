/* Quantization-aware training: kn_qat_prepare and kn_qat_finalize (compress/qat.h says what each does). */
#include "compress/qat.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/quant.h"
#include "format/storage_internal.h"
#include "ops/fake_quantize.h"
#include "ops/op.h"
#include "runtime/optimize.h"
#include "train/evaluate.h"
#include "train/tape.h"

enum { QAT_CALIB_DEFAULT = 512, QAT_CALIB_BATCH = 64 };

static bool op_is(const kn_node *n, const kn_op *op) { return n->op == op; }

static bool is_initializer(const kn_value *v) {
    return (v->kind == KN_VALUE_PARAM || v->kind == KN_VALUE_STATE || v->kind == KN_VALUE_CONST) && v->data;
}

kiln_status kn_qat_config_check(const kn_qat_config *c) {
    if (c->weight_bits != 8 && c->weight_bits != 4 && c->weight_bits != 2 && c->weight_bits != 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "--bits %d: quantization-aware training takes 8, 4, 2 or 1 bits",
                       c->weight_bits);
    if (c->act_bits != 0 && c->act_bits != 8)
        return kn_fail(KILN_ERR_INVALID_ARG, "--act-bits %d: activations are quantized at 8 bits (the "
                       "QuantizeLinear they become stores 8)", c->act_bits);
    return KILN_OK;
}

bool kn_qat_is_prepared(const kn_graph *g) {
    for (int i = 0; i < g->n_nodes; i++)
        if (op_is(&g->nodes[i], &kn_op_fakequantize))
            return true;
    return false;
}

/* ---- graph edits ---- */

static void refresh_producers(kn_graph *g) {
    for (int v = 0; v < g->n_values; v++)
        g->values[v].producer = -1;
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_out; k++)
            g->values[g->nodes[i].out[k]].producer = i;
}

/* Adds a one-output node at position pos (the nodes from pos on move down one); returns pos or -1. */
static int insert_node(kn_graph *g, int pos, const char *op, const char *name, int n_in, const int *in, int out) {
    int i;
    if (kn_graph_add_node(g, op, name, n_in, in, 1, &out, &i) != KILN_OK)
        return -1;
    kn_node node = g->nodes[i];
    memmove(&g->nodes[pos + 1], &g->nodes[pos], sizeof(kn_node) * (size_t)(i - pos));
    g->nodes[pos] = node;
    refresh_producers(g);
    return pos;
}

static void remove_node(kn_graph *g, int pos) {
    memmove(&g->nodes[pos], &g->nodes[pos + 1], sizeof(kn_node) * (size_t)(g->n_nodes - pos - 1));
    g->n_nodes--;
    refresh_producers(g);
}

/* Every node input and graph output reading value `from` reads `to` instead. */
static void replace_uses(kn_graph *g, int from, int to) {
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_in; k++)
            if (g->nodes[i].in[k] == from)
                g->nodes[i].in[k] = to;
    for (int k = 0; k < g->n_outputs; k++)
        if (g->outputs[k] == from)
            g->outputs[k] = to;
}

static int add_named_value(kn_graph *g, const char *base, const char *suffix, kn_value_kind kind, kn_dtype dtype,
                           const kn_shape *shape) {
    char name[512];
    snprintf(name, sizeof name, "%s:%s", base, suffix);
    for (int n = 2; kn_graph_find_value(g, name) >= 0; n++)
        snprintf(name, sizeof name, "%s:%s%d", base, suffix, n);
    int id;
    return kn_graph_add_value(g, name, kind, dtype, shape, &id) == KILN_OK ? id : -1;
}

/* ---- BatchNormalization folding ---- */

/* Folds BatchNormalization into the Conv or Gemm before it, in place: g becomes the runtime optimizer's
 * copy, given its own copy of all the data it shared with the old g. */
static kiln_status fold_batchnorms(kn_graph *g) {
    bool any = false;
    for (int i = 0; i < g->n_nodes; i++)
        any |= op_is(&g->nodes[i], &kn_op_batchnormalization);
    if (!any)
        return KILN_OK;
    kn_graph folded;
    KN_TRY(kn_graph_optimize(g, KN_OPT_BATCHNORM, &folded, NULL));
    for (int v = 0; v < folded.n_values; v++) {
        kn_value *val = &folded.values[v];
        size_t bytes;
        if (!val->data || !kn_shape_bytes(&val->shape, val->dtype, &bytes))
            continue;
        void *own = kn_arena_alloc(&folded.arena, bytes ? bytes : 1);
        if (!own) {
            kn_graph_free(&folded);
            return kn_fail(KILN_ERR_NOMEM, "out of memory copying '%s'", val->name);
        }
        memcpy(own, val->data, bytes);
        val->data = own;
        val->storage = NULL; /* training changes the data; the storage lived in the old arena */
    }
    kn_graph_free(g);
    *g = folded;
    return KILN_OK;
}

/* ---- calibration ---- */

/* The range [lo[v], hi[v]] of every value with wanted[v] over the first samples of c->calib, and its
 * elements per sample. */
static kiln_status calibrate_ranges(kn_graph *g, const bool *wanted, const kn_qat_config *c, float *lo, float *hi,
                                    int64_t *per_sample) {
    KN_TRY(kn_check_input_fits(g, c->calib));
    int64_t samples = c->calib_samples > 0 ? c->calib_samples : QAT_CALIB_DEFAULT;
    if (samples > c->calib->count)
        samples = c->calib->count;
    kn_tape tape;
    KN_TRY(kn_tape_init(&tape, g, QAT_CALIB_BATCH, false));
    kn_batcher batcher;
    kiln_status st = kn_batcher_init(&batcher, c->calib, QAT_CALIB_BATCH, false, 0, 0);
    if (st != KILN_OK) {
        kn_tape_free(&tape);
        return st;
    }
    for (int v = 0; v < g->n_values; v++)
        lo[v] = hi[v] = 0;
    for (int64_t seen = 0; seen < samples && st == KILN_OK;) {
        int64_t want = samples - seen < QAT_CALIB_BATCH ? samples - seen : QAT_CALIB_BATCH;
        if (want != tape.batch)
            st = kn_tape_set_batch(&tape, want);
        if (st == KILN_OK)
            kn_batcher_next(&batcher, kn_tape_input(&tape, 0)->data, NULL, NULL);
        if (st == KILN_OK)
            st = kn_tape_forward(&tape, false);
        for (int v = 0; v < g->n_values && st == KILN_OK; v++) {
            if (!wanted[v])
                continue;
            const kn_tensor *t = &tape.values[v];
            int64_t n = kn_numel(t);
            for (int64_t i = 0; i < n; i++) {
                lo[v] = fminf(lo[v], kn_f32(t)[i]);
                hi[v] = fmaxf(hi[v], kn_f32(t)[i]);
            }
            per_sample[v] = n / want;
        }
        seen += want;
    }
    kn_batcher_free(&batcher);
    kn_tape_free(&tape);
    return st;
}

/* ---- inserting FakeQuantize ---- */

/* The axis of a weight's output channels: Conv's W (M, C/g, kh, kw) and Gemm's transposed W (N, K) keep
 * them in rows, Gemm's W (K, N) and MatMul's B (..., K, N) in the last axis. */
static int weight_channel_axis(const kn_graph *g, const kn_node *n, int input) {
    if (op_is(n, &kn_op_conv) || (op_is(n, &kn_op_gemm) && kn_node_int(n, "transB", 0)))
        return 0;
    return g->values[n->in[input]].shape.ndim - 1;
}

/* The starting scale of channel c of w: the scale of least squared error; mean |w| for binary weights
 * (its least-squares alpha). */
static float weight_scale_init(const float *w, kn_fake_quant_layout l, int64_t c, kn_quant_range r, bool binary) {
    if (!binary)
        return kn_fake_quant_mse_scale(w, l, c, r);
    double abs_sum = 0;
    for (int64_t o = 0; o < l.outer; o++)
        for (int64_t i = (o * l.channels + c) * l.inner; i < (o * l.channels + c + 1) * l.inner; i++)
            abs_sum += fabsf(w[i]);
    return fmaxf((float)(abs_sum / (double)(l.outer * l.inner)), KN_FAKE_QUANT_MIN_SCALE);
}

/* Inserts FakeQuantize on input `input` (a parameter) of node *index; *index moves past it. */
static kiln_status quantize_weight(kn_graph *g, int *index, int input, const kn_qat_config *c) {
    const kn_node *n = &g->nodes[*index];
    int w = n->in[input], axis = weight_channel_axis(g, n, input);
    char base[256];
    snprintf(base, sizeof base, "%s", g->values[w].name);
    kn_shape w_shape = g->values[w].shape;
    kn_fake_quant_layout l = {kn_shape_span(&w_shape, 0, axis), w_shape.d[axis],
                              kn_shape_span(&w_shape, axis + 1, w_shape.ndim)};
    kn_quant_range r = kn_quant_range_of(c->weight_bits, true);
    /* Scales: learned (LSQ) from the scale of least squared error; without --lsq that scale stays fixed at
     * 4 bits and below, where min/max wastes levels on the extreme weights (at 2 bits qmax = 1 would put
     * the only positive level at max |w|); 8-bit and binary scales follow the weights (min/max, mean|w|). */
    bool fixed = !c->lsq && c->weight_bits > 1 && c->weight_bits <= 4;
    int in[2] = {w, -1};
    if (c->lsq || fixed) {
        kn_shape s_shape = kn_shape_of(1, &l.channels);
        kn_value_kind kind = c->lsq ? KN_VALUE_PARAM : KN_VALUE_CONST;
        if ((in[1] = add_named_value(g, base, "qscale", kind, KN_F32, &s_shape)) < 0)
            return KILN_ERR_NOMEM;
        for (int64_t ch = 0; ch < l.channels; ch++)
            ((float *)g->values[in[1]].data)[ch] = weight_scale_init(g->values[w].data, l, ch, r, c->weight_bits == 1);
    }
    int out = add_named_value(g, base, "fq", KN_VALUE_ACT, KN_F32, &w_shape);
    char name[300];
    snprintf(name, sizeof name, "%s/fake_quantize", base);
    int fq = out < 0 ? -1 : insert_node(g, *index, "FakeQuantize", name, in[1] >= 0 ? 2 : 1, in, out);
    if (fq < 0)
        return KILN_ERR_NOMEM;
    double grad_scale = 1.0 / sqrt((double)(l.outer * l.inner) * (double)(r.qmax > 0 ? r.qmax : 1));
    KN_TRY(kn_node_set_int(g, fq, "bits", c->weight_bits));
    KN_TRY(kn_node_set_int(g, fq, "axis", axis));
    if (c->lsq)
        KN_TRY(kn_node_set_float(g, fq, "grad_scale", (float)grad_scale));
    (*index)++;
    g->nodes[*index].in[input] = out;
    return KILN_OK;
}

/* Inserts FakeQuantize on activation v, read by node *index (its first quantized reader), with the range
 * [lo, hi] from calibration; *index moves past it. Returns the new value in *out. */
static kiln_status quantize_activation(kn_graph *g, int *index, int v, float lo, float hi, int64_t per_sample,
                                       const kn_qat_config *c, int *out) {
    kn_quant_range r = kn_quant_range_of(c->act_bits, false);
    float scale;
    int32_t zero_point;
    kn_quant_params(lo, hi, r, false, &scale, &zero_point);
    char base[256];
    snprintf(base, sizeof base, "%s", g->values[v].name);
    kn_shape v_shape = g->values[v].shape, scalar = {0};
    int in[2] = {v, add_named_value(g, base, "qscale", c->lsq ? KN_VALUE_PARAM : KN_VALUE_CONST, KN_F32, &scalar)};
    if (in[1] < 0)
        return KILN_ERR_NOMEM;
    *(float *)g->values[in[1]].data = scale;
    *out = add_named_value(g, base, "fq", KN_VALUE_ACT, KN_F32, &v_shape);
    char name[300];
    snprintf(name, sizeof name, "%s/fake_quantize", base);
    int fq = *out < 0 ? -1 : insert_node(g, *index, "FakeQuantize", name, 2, in, *out);
    if (fq < 0)
        return KILN_ERR_NOMEM;
    KN_TRY(kn_node_set_int(g, fq, "bits", c->act_bits));
    KN_TRY(kn_node_set_int(g, fq, "signed", 0));
    KN_TRY(kn_node_set_int(g, fq, "zero_point", zero_point));
    if (c->lsq)
        KN_TRY(kn_node_set_float(g, fq, "grad_scale", (float)(1.0 / sqrt((double)per_sample * r.qmax))));
    (*index)++;
    return KILN_OK;
}

static bool is_quantized_op(const kn_node *n) {
    return op_is(n, &kn_op_conv) || op_is(n, &kn_op_gemm) || op_is(n, &kn_op_matmul);
}

/* The weight input of a quantized node: a parameter read as W (Conv, Gemm) or B (MatMul); -1 if none. */
static int weight_input(const kn_graph *g, const kn_node *n) {
    const kn_value *w = kn_node_input(g, n, 1);
    return w && w->kind == KN_VALUE_PARAM && w->dtype == KN_F32 && w->shape.ndim >= 1 ? 1 : -1;
}

/* The activation input of a quantized node (input 0 when it is not an initializer); -1 if none. */
static int activation_input(const kn_graph *g, const kn_node *n) {
    const kn_value *x = kn_node_input(g, n, 0);
    return x && !is_initializer(x) && x->dtype == KN_F32 ? 0 : -1;
}

static kiln_status insert_fake_quant(kn_graph *g, const kn_qat_config *c, const float *lo, const float *hi,
                                     const int64_t *per_sample, int *fq_of) {
    int n_old = g->n_values, quantized = 0;
    for (int v = 0; v < n_old; v++)
        fq_of[v] = -1;
    for (int i = 0; i < g->n_nodes; i++) {
        if (!is_quantized_op(&g->nodes[i]))
            continue;
        int w = weight_input(g, &g->nodes[i]), a = c->act_bits ? activation_input(g, &g->nodes[i]) : -1;
        if (a >= 0) {
            int v = g->nodes[i].in[a];
            if (fq_of[v] < 0)
                KN_TRY(quantize_activation(g, &i, v, lo[v], hi[v], per_sample[v], c, &fq_of[v]));
            g->nodes[i].in[a] = fq_of[v];
        }
        if (w >= 0) {
            /* A weight read by several nodes (tied weights) gets one FakeQuantize, so one set of levels. */
            int v = g->nodes[i].in[w];
            if (fq_of[v] < 0) {
                KN_TRY(quantize_weight(g, &i, w, c));
                fq_of[v] = g->nodes[i].in[w];
            }
            g->nodes[i].in[w] = fq_of[v];
            quantized++;
        }
    }
    if (quantized == 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "the model has no Conv, Gemm or MatMul weights to quantize");
    return KILN_OK;
}

kiln_status kn_qat_prepare(kn_graph *g, const kn_qat_config *c) {
    KN_TRY(kn_qat_config_check(c));
    if (c->act_bits && !c->calib)
        return kn_fail(KILN_ERR_INVALID_ARG, "quantizing activations needs calibration data");
    if (kn_qat_is_prepared(g))
        return kn_fail(KILN_ERR_INVALID_ARG, "the model is already prepared for quantization-aware training");
    KN_TRY(fold_batchnorms(g));
    size_t n = (size_t)(g->n_values ? g->n_values : 1);
    float *lo = calloc(2 * n, sizeof(float));
    int64_t *per_sample = calloc(n, sizeof(int64_t));
    int *fq_of = calloc(n, sizeof(int));
    bool *wanted = calloc(n, sizeof(bool));
    kiln_status st = lo && per_sample && fq_of && wanted ? KILN_OK : kn_fail(KILN_ERR_NOMEM, "out of memory");
    for (int i = 0; i < g->n_nodes && st == KILN_OK && c->act_bits; i++) {
        int a = is_quantized_op(&g->nodes[i]) ? activation_input(g, &g->nodes[i]) : -1;
        if (a >= 0)
            wanted[g->nodes[i].in[a]] = true;
    }
    if (st == KILN_OK && c->act_bits)
        st = calibrate_ranges(g, wanted, c, lo, lo + n, per_sample);
    if (st == KILN_OK)
        st = insert_fake_quant(g, c, lo, lo + n, per_sample, fq_of);
    if (st == KILN_OK)
        st = kn_graph_infer_shapes(g);
    free(lo);
    free(per_sample);
    free(fq_of);
    free(wanted);
    return st;
}

/* ---- finalizing ---- */

/* The affine encoding of signed levels of `bits`. */
static kn_encoding affine_encoding(int bits) {
    return bits == 8 ? KN_ENC_AFFINE_I8 : bits == 4 ? KN_ENC_AFFINE_I4 : KN_ENC_AFFINE_I2;
}

/* Stores weight w (layout l along `axis`) at the levels FakeQuantize node n gives it: affine with the
 * node's scales, or a {-alpha, +alpha} codebook per channel for binary weights. */
static kiln_status store_weight(kn_graph *g, const kn_node *n, int w, int axis, kn_fake_quant_layout l,
                                const float *scales, const int32_t *zero_points) {
    kn_value *v = &g->values[w];
    int bits = (int)kn_node_int(n, "bits", 8);
    bool binary = bits == 1;
    if (!binary && (!kn_node_int(n, "signed", 1) || (bits != 8 && bits != 4 && bits != 2)))
        return kn_fail(KILN_ERR_UNSUPPORTED, "weight '%s' is fake-quantized as %s %d-bit levels, which no "
                       "storage encoding holds", v->name, kn_node_int(n, "signed", 1) ? "signed" : "unsigned", bits);
    kn_storage *s = kn_arena_alloc(&g->arena, sizeof *s);
    if (!s)
        return KILN_ERR_NOMEM;
    *s = (kn_storage){.encoding = binary ? KN_ENC_CODEBOOK : affine_encoding(bits), .shape = v->shape,
                      .axis = axis, .bits = bits};
    int64_t numel = kn_shape_numel(&v->shape);
    kn_packed_bytes(numel, bits, &s->payload_bytes);
    uint8_t *payload = kn_arena_alloc(&g->arena, s->payload_bytes ? s->payload_bytes : 1);
    float *stored_scales = kn_arena_alloc(&g->arena, sizeof(float) * (size_t)l.channels * (binary ? 2 : 1));
    int8_t *stored_zps = kn_arena_alloc(&g->arena, (size_t)l.channels);
    if (!payload || !stored_scales || !stored_zps)
        return KILN_ERR_NOMEM;
    kn_quant_range r = kn_quant_range_of(bits, true);
    bool any_zero_point = false;
    for (int64_t c = 0; c < l.channels; c++) {
        if (binary) {
            stored_scales[2 * c] = -scales[c];
            stored_scales[2 * c + 1] = scales[c];
        } else {
            stored_scales[c] = scales[c];
            stored_zps[c] = (int8_t)zero_points[c];
            any_zero_point |= zero_points[c] != 0;
        }
    }
    const float *x = v->data; // (numel) = (outer, channels, inner)
    for (int64_t i = 0; i < numel; i++) {
        int64_t c = i / l.inner % l.channels;
        unsigned code = binary ? x[i] >= 0.0f : (unsigned)kn_quant_level(x[i], scales[c], zero_points[c], r);
        kn_packed_put(payload, i, bits, code);
    }
    s->payload = payload;
    if (binary) {
        s->centroids = stored_scales;
        s->k = 2;
    } else {
        s->scale = stored_scales;
        s->zero_point = any_zero_point ? stored_zps : NULL;
    }
    kiln_status st = kn_storage_check(s);
    if (st != KILN_OK) {
        kn_error_prefix("storing weight '%s': ", v->name);
        return st;
    }
    kn_storage_decode(s, v->data);
    v->storage = s;
    return KILN_OK;
}

/* The per-channel scales and zero points FakeQuantize node n uses (one malloc'd block, scales first). */
static kiln_status node_params(const kn_graph *g, const kn_node *n, kn_fake_quant_layout *l, float **scales,
                               int32_t **zero_points) {
    const kn_value *x = kn_node_input(g, n, 0), *scale = kn_node_input(g, n, 1);
    KN_TRY(kn_fake_quant_layout_of(n, &x->shape, l));
    *scales = malloc((sizeof(float) + sizeof(int32_t)) * (size_t)l->channels);
    if (!*scales)
        return kn_fail(KILN_ERR_NOMEM, "out of memory");
    *zero_points = (int32_t *)(*scales + l->channels);
    kn_fake_quant_params(n, x->data, scale ? scale->data : NULL, *l, *scales, *zero_points);
    return KILN_OK;
}

/* Weight FakeQuantize node i: the weight keeps the quantized values with their storage, its readers read
 * it directly, and the node goes. */
static kiln_status finalize_weight(kn_graph *g, int i) {
    const kn_node *n = &g->nodes[i];
    int w = n->in[0], y = n->out[0], axis = (int)kn_node_int(n, "axis", -1);
    kn_fake_quant_layout l;
    float *scales;
    int32_t *zero_points;
    KN_TRY(node_params(g, n, &l, &scales, &zero_points));
    kiln_status st = store_weight(g, n, w, axis, l, scales, zero_points);
    free(scales);
    if (st != KILN_OK)
        return st;
    replace_uses(g, y, w);
    remove_node(g, i);
    return KILN_OK;
}

/* Activation FakeQuantize node i becomes QuantizeLinear -> DequantizeLinear with its scale and zero point. */
static kiln_status finalize_activation(kn_graph *g, int i) {
    kn_node *n = &g->nodes[i];
    int bits = (int)kn_node_int(n, "bits", 8), x = n->in[0], y = n->out[0];
    bool is_signed = kn_node_int(n, "signed", 1) != 0;
    if (bits != 8 || n->n_in < 2 || n->in[1] < 0)
        return kn_fail(KILN_ERR_UNSUPPORTED, "activation '%s' is fake-quantized at %d bits%s; QuantizeLinear "
                       "takes 8 bits with a scale", g->values[x].name, bits, n->n_in < 2 ? " without a scale" : "");
    kn_fake_quant_layout l;
    float *scales;
    int32_t *zero_points;
    KN_TRY(node_params(g, n, &l, &scales, &zero_points));
    int64_t axis = kn_node_int(n, "axis", -1);
    kn_shape p_shape = l.channels == 1 && axis < 0 ? (kn_shape){0} : kn_shape_of(1, &l.channels);
    char base[256];
    snprintf(base, sizeof base, "%s", g->values[x].name);
    int in[3] = {x, add_named_value(g, base, "scale", KN_VALUE_CONST, KN_F32, &p_shape),
                 add_named_value(g, base, "zero_point", KN_VALUE_CONST, is_signed ? KN_I8 : KN_U8, &p_shape)};
    int q = add_named_value(g, base, "quantized", KN_VALUE_ACT, is_signed ? KN_I8 : KN_U8, &g->values[x].shape);
    if (in[1] < 0 || in[2] < 0 || q < 0) {
        free(scales);
        return KILN_ERR_NOMEM;
    }
    for (int64_t c = 0; c < l.channels; c++) {
        ((float *)g->values[in[1]].data)[c] = scales[c];
        ((uint8_t *)g->values[in[2]].data)[c] = (uint8_t)(zero_points[c] & 0xff);
    }
    free(scales);
    char name[300];
    snprintf(name, sizeof name, "%s/dequantize", base);
    int deq_in[3] = {q, in[1], in[2]};
    if (insert_node(g, i + 1, "DequantizeLinear", name, 3, deq_in, y) < 0)
        return KILN_ERR_NOMEM;
    snprintf(name, sizeof name, "%s/quantize", base);
    if (insert_node(g, i + 1, "QuantizeLinear", name, 3, in, q) < 0)
        return KILN_ERR_NOMEM;
    for (int k = i + 1; k <= i + 2 && axis >= 0; k++)
        KN_TRY(kn_node_set_int(g, k, "axis", axis));
    remove_node(g, i); /* the FakeQuantize: the pair now writes y */
    return KILN_OK;
}

/* Drops the values only FakeQuantize nodes used (their scales and outputs), now unreferenced. */
static void drop_unused(kn_graph *g, const bool *was_fq_value, int n_marked) {
    int *new_id = calloc((size_t)(g->n_values ? g->n_values : 1), sizeof(int));
    if (!new_id)
        return; /* they stay: harmless */
    for (int v = 0; v < g->n_values; v++)
        new_id[v] = v < n_marked && was_fq_value[v] ? -1 : v;
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_in; k++)
            if (g->nodes[i].in[k] >= 0)
                new_id[g->nodes[i].in[k]] = g->nodes[i].in[k];
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_out; k++)
            new_id[g->nodes[i].out[k]] = g->nodes[i].out[k];
    for (int k = 0; k < g->n_inputs; k++)
        new_id[g->inputs[k]] = g->inputs[k];
    for (int k = 0; k < g->n_outputs; k++)
        new_id[g->outputs[k]] = g->outputs[k];
    kn_graph_drop_values(g, new_id);
    free(new_id);
}

kiln_status kn_qat_finalize(kn_graph *g) {
    int n_marked = g->n_values;
    bool *was_fq_value = calloc((size_t)(n_marked ? n_marked : 1), sizeof(bool));
    if (!was_fq_value)
        return kn_fail(KILN_ERR_NOMEM, "out of memory");
    kiln_status st = KILN_OK;
    for (int i = 0; i < g->n_nodes && st == KILN_OK;) {
        const kn_node *n = &g->nodes[i];
        if (!op_is(n, &kn_op_fakequantize)) {
            i++;
            continue;
        }
        for (int k = 1; k < n->n_in; k++)
            if (n->in[k] >= 0)
                was_fq_value[n->in[k]] = true;
        was_fq_value[n->out[0]] = true;
        if (is_initializer(&g->values[n->in[0]])) {
            st = finalize_weight(g, i);
        } else {
            st = finalize_activation(g, i);
            i += 2;
        }
    }
    if (st == KILN_OK) {
        drop_unused(g, was_fq_value, n_marked);
        st = kn_graph_infer_shapes(g);
    }
    free(was_fq_value);
    return st;
}
