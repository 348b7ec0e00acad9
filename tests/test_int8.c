/* The integer layers (core/quant.h "Integer layers", kernels/qgemm.h, ops/qlinear.c, the optimizer's
 * KN_OPT_INT8) held against their definition, bit for bit, and against the f32 QDQ graph within the
 * f32 rounding bound.
 *
 * 1. kernels: each int8 kernel set this CPU has (generic, AVX2, AVX-512 VNNI) on products of both
 *    orientations, with row and column tails, u8 / i8 / f32 outputs, Relu, and extreme levels (255 by
 *    -128 over the longest K allowed, which would saturate vpmaddubsw): every output equals the one
 *    computed here from the definition with kn_quant_layer_level, byte for byte.
 * 2. layers: QDQ graphs (QuantizeLinear -> DequantizeLinear -> Conv / Gemm / MatMul with DequantizeLinear
 *    int8 weights per channel [-> Relu] [-> QuantizeLinear -> DequantizeLinear]) on shapes with odd
 *    channels, tails, stride 2, padding, dilation, groups, depthwise and 1x1, u8 and i8 activations:
 *    the optimizer makes them integer layers, whose outputs equal the definition computed here bit for
 *    bit; and the unoptimized graph (f32 Conv between Dequantize and Quantize) is within
 *    (K + 4) * FLT_EPSILON * (sum |x w| + |b|) of the exact value before quantization, so its levels
 *    are at most 1 away.
 *    MaxPool between a layer and its QuantizeLinear: pooling the levels (MaxPoolInteger) equals pooling
 *    the dequantized values, bit for bit, for 2x2 and padded 3x3 windows, u8 and i8.
 *    Per-plan state (kn_op.prepare): for each of those graphs the session, which prepares its integer
 *    layers when it plans, gives the bytes that forward called without a state (preparing on the fly,
 *    as the tape and the reference path call it) gives; and a batch of one after the batch (a new plan),
 *    then the batch again (its cached plan), give the same bytes per sample.
 * 3. a CNN of the Fashion-MNIST spec quantized as `kiln quantize --bits 8` does it (calibrated u8
 *    activations, i8 weights per channel, BatchNormalization kept): the session's integer path and the
 *    f32 QDQ reference path predict the same classes for every sample; and the same with 4-bit weights
 *    written to a .kiln file and read back (W4A8: i4 levels into the int8 layers).
 * 4. ONNX's QLinearConv and QLinearMatMul with constant weights (i8 and u8, zero points per tensor and
 *    per channel, int32 bias, groups, depthwise, stride, rank-3 A): the optimizer makes them integer
 *    layers, and both the optimized session and the reference op (unoptimized) equal the definition
 *    computed here (core/quant.h "ONNX's integer ops") byte for byte; u8 weights whose levels less their
 *    zero point leave i8 stay the reference op and meet the same check.
 * Also QuantizeLinear's vectorized levels (kn_qgemm_quantize) against kn_quant_level on ties, NaN,
 * infinities and denormals.
 * ctest runs this program again with KILN_ISA=avx2 and KILN_ISA=generic, so the layers' other paths
 * meet the same checks.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "support/graph_ids.h"
#include "compress/quantize.h"
#include "core/align.h"
#include "core/quant.h"
#include "core/rng.h"
#include "format/kiln_file.h"
#include "format/storage.h"
#include "kernels/qgemm.h"
#include "ops/op.h"
#include "runtime/optimize.h"
#include "runtime/runtime.h"
#include "support/runtime_models.h"
#include "train/data.h"

#define SHAPE(...) \
    kn_shape_of((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__})

static kn_rng rng;

static int64_t rand_below(int64_t n) { return (int64_t)kn_rng_below(&rng, (uint64_t)n); }
static float rand_in(float lo, float hi) { return lo + (hi - lo) * kn_rng_uniform(&rng); }

/* ---- 1. kernels -------------------------------------------------------------------------------- */

typedef struct kernel_case {
    int64_t R, L, K;
    bool conv; /* weights in B and the image in V, channel per row; else activations in B */
    int y_type;
    bool relu;
    bool extreme; /* activations 255 and weights -128 or 127 */
    bool clip;    /* Clip to [-0.3, 0.4] (after Relu when relu) */
    int residual; /* KN_QRES_*: a residual (R, L) added before Relu and Clip */
} kernel_case;

static void check_kernel_case(const kernel_case *c) {
    int64_t channels = c->conv ? c->R : c->L;
    int8_t *w = malloc((size_t)(channels * c->K));  // (channels, K)
    int64_t x_rows = c->conv ? c->L : c->R;
    uint8_t *x = malloc((size_t)(x_rows * c->K)); // (x_rows, K)
    for (int64_t i = 0; i < channels * c->K; i++)
        w[i] = c->extreme ? (i % 7 ? -128 : 127) : (int8_t)(rand_below(256) - 128);
    for (int64_t i = 0; i < x_rows * c->K; i++)
        x[i] = c->extreme ? 255 : (uint8_t)rand_below(256);
    int32_t z_x = c->extreme ? 0 : (int32_t)rand_below(256);
    int32_t *corr = malloc(sizeof(int32_t) * (size_t)channels);
    float *mult = malloc(sizeof(float) * (size_t)channels), *bias = malloc(sizeof(float) * (size_t)channels);
    for (int64_t ch = 0; ch < channels; ch++) {
        int32_t sum = 0;
        for (int64_t k = 0; k < c->K; k++)
            sum += w[ch * c->K + k];
        corr[ch] = z_x * sum;
        mult[ch] = c->extreme ? 1e-9f : rand_in(1e-5f, 1e-3f);
        bias[ch] = rand_in(-1.0f, 1.0f);
    }
    kn_qepilogue epi = {corr, mult, bias, c->relu, c->y_type, 0.02f, c->y_type == KN_QOUT_I8 ? -3 : 7,
                        c->clip, -0.3f, 0.4f, c->residual, 0.013f, c->residual == KN_QRES_I8 ? -5 : 120,
                        false, false, false, 0.0f, 0.0f, false, 0.0f, 0.0f};
    kn_qepilogue_prepare(&epi, channels);
    size_t r_size = kn_qres_size(c->residual);
    uint8_t *res = malloc((size_t)(c->R * c->L) * (r_size ? r_size : 1)); // (R, L) as y
    for (int64_t i = 0; i < c->R * c->L; i++) {
        if (c->residual == KN_QRES_F32)
            ((float *)res)[i] = rand_in(-2.0f, 2.0f);
        else
            res[i] = (uint8_t)rand_below(256);
    }
    size_t y_size = kn_qout_size(c->y_type);
    // The definition: the exact sum, then kn_quant_layer_level / kn_quant_layer_value.
    uint8_t *want = malloc((size_t)(c->R * c->L) * y_size);
    kn_quant_range range = kn_quant_range_of(8, c->y_type == KN_QOUT_I8);
    for (int64_t r = 0; r < c->R; r++)
        for (int64_t l = 0; l < c->L; l++) {
            int64_t ch = c->conv ? r : l, xr = c->conv ? l : r;
            int64_t acc = 0;
            for (int64_t k = 0; k < c->K; k++)
                acc += ((int64_t)x[xr * c->K + k] - z_x) * w[ch * c->K + k];
            int64_t at = r * c->L + l;
            if (c->y_type == KN_QOUT_I32) { /* the sum itself */
                ((int32_t *)want)[at] = (int32_t)acc;
                continue;
            }
            float v = kn_quant_layer_value((int32_t)acc, mult[ch], bias[ch]);
            if (c->residual == KN_QRES_F32)
                v = kn_quant_add_residual(v, ((const float *)res)[at]);
            else if (c->residual != KN_QRES_NONE)
                v = kn_quant_add_residual(v, kn_quant_value(c->residual == KN_QRES_U8 ? res[at] : (int8_t)res[at],
                                                            epi.r_scale, epi.r_zero_point));
            v = c->relu ? kn_quant_relu(v) : v;
            v = c->clip ? kn_quant_clip(v, epi.clip_lo, epi.clip_hi) : v;
            if (c->y_type == KN_QOUT_F32)
                ((float *)want)[at] = v;
            else
                want[at] = (uint8_t)(kn_quant_level(v, epi.y_scale, epi.y_zero_point, range) & 0xff);
        }
    // Packed operands.
    size_t b_bytes = kn_qgemm_b_bytes(c->R, c->K), v_bytes = kn_qgemm_v_bytes(c->L, c->K);
    uint8_t *b = malloc(b_bytes), *v = malloc(v_bytes);
    if (c->conv) {
        kn_qgemm_pack_weights_b(w, c->R, c->K, c->K, (int8_t *)b);
        memset(v, 0xa5, v_bytes); /* padding may hold anything where the weights are 0 */
        for (int64_t l = 0; l < c->L; l++)
            for (int64_t k = 0; k < c->K; k++)
                v[kn_qgemm_v_index(k, l, c->K)] = x[l * c->K + k];
    } else {
        kn_qgemm_pack_rows_b(x, c->R, c->K, c->K, false, b);
        kn_qgemm_pack_weights_v(w, c->L, c->K, c->K, (int8_t *)v);
    }
    uint8_t *got = malloc((size_t)(c->R * c->L) * y_size);
    for (int path = KN_QGEMM_GENERIC; path <= KN_QGEMM_AVX512_VNNI; path++) {
        const kn_qgemm_kernel *k = kn_qgemm_kernel_for((kn_qgemm_path)path);
        if (!k)
            continue;
        for (int threads = 1; threads <= 2; threads++) {
            memset(got, 0x5a, (size_t)(c->R * c->L) * y_size);
            kn_qgemm_problem p = {c->R, c->L, c->K, b, v, c->conv, c->conv, &epi, got, c->L, r_size ? res : NULL};
            kn_qgemm_run(k, &p, threads);
            CHECK_MSG(memcmp(got, want, (size_t)(c->R * c->L) * y_size) == 0,
                      "%s, %d thread(s): (%lld x %lld, K %lld) %s y_type %d relu %d extreme %d differs from the "
                      "definition", kn_qgemm_kernel_name(k), threads, (long long)c->R, (long long)c->L,
                      (long long)c->K, c->conv ? "conv" : "gemm", c->y_type, c->relu, c->extreme);
        }
    }
    free(w), free(x), free(corr), free(mult), free(bias), free(want), free(b), free(v), free(got), free(res);
}

/* kn_qgemm_depthwise on every path: odd and even tap counts up to the most, run lengths around the
 * vector widths, random and extreme bytes (255 by -128 and 127): each sum equals the exact one. The taps
 * read consecutive runs (apart from one another, as separate rows are) and, in a second pass, overlapping
 * ones one byte apart (a 3x3 kernel row at stride 1, which the VNNI kernel sums 4 taps at a time). */
static void test_depthwise_kernels(void) {
    const int taps_list[] = {1, 2, 3, 9, 25, KN_QGEMM_DW_MAX_TAPS};
    const int64_t lengths[] = {1, 7, 8, 15, 16, 17, 40, 61, 64, 65, 100, 130};
    int checked = 0;
    for (size_t a = 0; a < sizeof taps_list / sizeof taps_list[0]; a++)
        for (size_t b = 0; b < sizeof lengths / sizeof lengths[0]; b++)
            for (int layout = 0; layout < 3; layout++)
                for (int extreme = 0; extreme < 2; extreme++) {
                    int taps = taps_list[a];
                    int64_t n = lengths[b];
                    int64_t apart = layout == 0 ? n : layout; /* runs apart, 1 byte or 2 bytes apart */
                    size_t size = (size_t)((taps - 1) * apart + n + KN_QGEMM_DW_SLACK); // the last tap's slack too
                    uint8_t *bytes = malloc(size);
                    const uint8_t *src[KN_QGEMM_DW_MAX_TAPS];
                    int32_t w[KN_QGEMM_DW_MAX_TAPS], want[130], got[131];
                    for (int t = 0; t < taps; t++) {
                        src[t] = bytes + t * apart;
                        w[t] = extreme ? (t % 3 ? -128 : 127) : (int32_t)rand_below(256) - 128;
                    }
                    for (size_t i = 0; i < size; i++)
                        bytes[i] = extreme ? 255 : (uint8_t)rand_below(256);
                    for (int64_t i = 0; i < n; i++) {
                        int64_t sum = 0;
                        for (int t = 0; t < taps; t++)
                            sum += (int64_t)w[t] * src[t][i];
                        want[i] = (int32_t)sum;
                    }
                    for (int path = KN_QGEMM_GENERIC; path <= KN_QGEMM_AVX512_VNNI; path++) {
                        const kn_qgemm_kernel *k = kn_qgemm_kernel_for((kn_qgemm_path)path);
                        if (!k)
                            continue;
                        memset(got, 0x5a, sizeof got);
                        kn_qgemm_depthwise(k, src, w, taps, n, got);
                        CHECK_MSG(memcmp(got, want, sizeof(int32_t) * (size_t)n) == 0 && got[n] == 0x5a5a5a5a,
                                  "%s depthwise: %d taps %lld bytes apart, %lld outputs, extreme %d differ from the "
                                  "exact sums", kn_qgemm_kernel_name(k), taps, (long long)apart, (long long)n, extreme);
                        checked++;
                    }
                    free(bytes);
                }
    for (int64_t n = 0; n < 70; n += 7) { /* kn_qgemm_deal2: the stride-2 frame's column phases */
        uint8_t row[140], even[70], odd[70];
        for (int64_t i = 0; i < 2 * n; i++)
            row[i] = (uint8_t)rand_below(256);
        for (int path = KN_QGEMM_GENERIC; path <= KN_QGEMM_AVX512_VNNI; path++) {
            const kn_qgemm_kernel *k = kn_qgemm_kernel_for((kn_qgemm_path)path);
            if (!k)
                continue;
            kn_qgemm_deal2(k, row, n, even, odd);
            bool same = true;
            for (int64_t i = 0; i < n; i++)
                same = same && even[i] == row[2 * i] && odd[i] == row[2 * i + 1];
            CHECK_MSG(same, "%s deal2 of %lld pairs", kn_qgemm_kernel_name(k), (long long)n);
        }
    }
    printf("depthwise kernels: %d runs equal the exact sums\n", checked);
}

static void test_kernels(void) {
    const kernel_case cases[] = {
        {1, 1, 1, true, KN_QOUT_U8, false, false, false, 0},    {5, 17, 9, true, KN_QOUT_U8, true, false, false, 0},
        {7, 70, 27, true, KN_QOUT_I8, false, false, false, 0},  {33, 130, 288, true, KN_QOUT_F32, true, false, false, 0},
        {4, 64, 4, true, KN_QOUT_F32, false, false, false, 0},  {1, 10, 3136, false, KN_QOUT_F32, false, false, false, 0},
        {3, 70, 37, false, KN_QOUT_U8, true, false, false, 0},  {9, 5, 6, false, KN_QOUT_I8, false, false, false, 0},
        {6, 129, 101, false, KN_QOUT_F32, true, false, false, 0}, {2, 33, KN_QGEMM_MAX_K, true, KN_QOUT_F32, false, true, false, 0},
        {3, 18, 4097, false, KN_QOUT_F32, false, true, false, 0}, {5, 70, 27, true, KN_QOUT_U8, false, false, true, 0},
        {3, 37, 19, false, KN_QOUT_F32, true, false, true, 0}, {6, 40, 9, true, KN_QOUT_I8, true, false, true, 0},
        {5, 70, 27, true, KN_QOUT_U8, true, false, false, KN_QRES_U8}, {7, 33, 18, true, KN_QOUT_F32, false, false, false, KN_QRES_F32},
        {3, 40, 30, false, KN_QOUT_I8, true, false, true, KN_QRES_I8}, {2, 19, 64, false, KN_QOUT_U8, false, false, false, KN_QRES_F32},
        {5, 70, 27, false, KN_QOUT_I32, false, false, false, 0}, {3, 37, 300, true, KN_QOUT_I32, false, false, false, 0},
        {2, 21, KN_QGEMM_MAX_K, false, KN_QOUT_I32, false, true, false, 0},
        {70, 150, 1000, true, KN_QOUT_U8, true, false, false, 0}, /* slivers in 3 groups, depth in 3 blocks */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_kernel_case(&cases[i]);
    printf("kernels: %zu cases on", sizeof cases / sizeof cases[0]);
    for (int path = KN_QGEMM_GENERIC; path <= KN_QGEMM_AVX512_VNNI; path++)
        if (kn_qgemm_kernel_for((kn_qgemm_path)path))
            printf(" %s", kn_qgemm_kernel_name(kn_qgemm_kernel_for((kn_qgemm_path)path)));
    printf(" (the layers use %s)\n", kn_qgemm_kernel_name(kn_qgemm_kernel_best()));
}

/* One output of the epilogue by the definition (core/quant.h): element i of row `row`, channel c. */
static void epilogue_definition(const kn_qepilogue *e, int32_t acc, int64_t c, const void *r, int64_t at, void *y) {
    int32_t a = (int32_t)((uint32_t)acc - (uint32_t)e->corr[c]);
    if (e->y_type == KN_QOUT_I32) {
        ((int32_t *)y)[at] = a;
        return;
    }
    float v = kn_quant_layer_value(a, e->mult[c], e->bias[c]);
    if (e->r_type == KN_QRES_F32)
        v = kn_quant_add_residual(v, ((const float *)r)[at]);
    else if (e->r_type != KN_QRES_NONE)
        v = kn_quant_add_residual(v, kn_quant_value(e->r_type == KN_QRES_U8 ? ((const uint8_t *)r)[at]
                                                                          : ((const int8_t *)r)[at],
                                                    e->r_scale, e->r_zero_point));
    v = e->relu ? kn_quant_relu(v) : v;
    v = e->clip ? kn_quant_clip(v, e->clip_lo, e->clip_hi) : v;
    if (e->y_type == KN_QOUT_F32)
        ((float *)y)[at] = v;
    else
        ((uint8_t *)y)[at] = (uint8_t)(kn_quant_level(v, e->y_scale, e->y_zero_point,
                                                       kn_quant_range_of(8, e->y_type == KN_QOUT_I8)) & 0xff);
}

/* Equal outputs, any NaN matching any NaN for f32 (the payload is not part of the contract). */
static bool same_outputs(int y_type, const uint8_t *a, const uint8_t *b, size_t count) {
    if (y_type != KN_QOUT_F32)
        return memcmp(a, b, count * kn_qout_size(y_type)) == 0;
    for (size_t i = 0; i < count; i++) {
        float x, y;
        memcpy(&x, a + 4 * i, 4);
        memcpy(&y, b + 4 * i, 4);
        if (!(isnan(x) && isnan(y)) && memcmp(&x, &y, 4) != 0)
            return false;
    }
    return true;
}

/* Whether kn_qgemm_epilogue_rows on kernel k writes `want` into `got` (size bytes, set to 0xa5 first, so
 * that bytes it should leave alone are checked too). */
static bool epilogue_gives(const kn_qgemm_kernel *k, const kn_qepilogue *e, const kn_qepilogue_block *b, uint8_t *got,
                           size_t size, const uint8_t *want) {
    memset(got, 0xa5, size);
    kn_qgemm_epilogue_rows(k, e, b);
    return same_outputs(e->y_type, got, want, size / kn_qout_size(e->y_type));
}

/* kn_qgemm_epilogue_rows on every path against the definition on edge values: sums at the int32 extremes,
 * multipliers and biases that make values of +-inf and NaN, ties of the rounding (odd sums times 0.25
 * over the scale 0.5), zero points far outside the levels (2^20 + 1, 2^24 + 1 and -2^30, past the
 * vector kernels' short quantization), every output type, Relu, Clip and residuals; rows apart (a
 * convolution tile's, a channel per row; a Gemm tile's, a channel per element) and back to back (a
 * depthwise plane's, whose tails the AVX-512 epilogue may store whole): outputs equal, and the bytes
 * between and after the rows untouched. */
static void test_epilogue_edges(void) {
    enum { ROWS = 5, MAXN = 40, LD = MAXN + 9, C = 64 };
    const int32_t zero_points[] = {0, 7, -128, 255, 1 << 20, (1 << 20) + 1, (1 << 24) + 1, -(1 << 30)};
    const int lengths[] = {1, 7, 16, 17, 40};
    int32_t acc[ROWS * MAXN + 16], corr[C]; // the last row read in whole vectors too (acc_whole)
    float mult[C], bias[C];
    uint8_t res[ROWS * LD * 4], want[ROWS * LD * 4 + 64], got[ROWS * LD * 4 + 64];
    // mult and bias with +-inf and NaN values, and the same with finite ones only (kn_qepilogue_prepare:
    // the shortcuts that fold Relu and Clip into the levels' bounds)
    const float mults[] = {0.25f, 1e-3f, -0.25f, 3e30f, NAN, 0.0f, 1e-30f, 7.5e-4f};
    const float biases[] = {0.0f, 0.5f, -INFINITY, 1.0f, -0.75f, NAN, 0.125f, 0.0f};
    float finite_mult[C], finite_bias[C];
    for (int c = 0; c < C; c++) {
        corr[c] = c % 5 == 0 ? INT32_MIN : (int32_t)rand_below(2001) - 1000;
        mult[c] = mults[c % 8];
        bias[c] = biases[(c / 8) % 8];
        finite_mult[c] = isfinite(mult[c]) && fabsf(mult[c]) < 1.0f ? mult[c] : 0.5f;
        finite_bias[c] = isfinite(bias[c]) ? bias[c] : -2.5f;
    }
    for (int i = 0; i < ROWS * MAXN + 16; i++)
        acc[i] = i % 11 == 0 ? INT32_MAX : i % 13 == 0 ? INT32_MIN : (int32_t)rand_below(200001) - 100000;
    for (size_t i = 0; i < sizeof res; i++)
        res[i] = (uint8_t)rand_below(256);
    for (int i = 0; i < ROWS * LD; i += 7) /* some residuals of +-inf and NaN among the f32 ones */
        memcpy(res + 4 * i, &(float[]){INFINITY, NAN, -INFINITY}[i % 3], 4);
    int cases = 0;
    for (int finite = 0; finite < 2; finite++)
    for (size_t z = 0; z < sizeof zero_points / sizeof zero_points[0]; z++)
        for (int y_type = KN_QOUT_F32; y_type <= KN_QOUT_I32; y_type++)
            for (int act = 0; act < 4; act++)
                for (int r_type = KN_QRES_NONE; r_type <= KN_QRES_I8; r_type++)
                    for (int layout = 0; layout < 3; layout++)
                        for (size_t l = 0; l < sizeof lengths / sizeof lengths[0]; l++) {
                            int n = lengths[l];
                            // Clip to [-0.3, 90], or to [5, 2] (a hostile Clip: always 2) for odd zero points
                            kn_qepilogue e = {corr, finite ? finite_mult : mult, finite ? finite_bias : bias, act & 1,
                                              y_type, 0.5f, zero_points[z], (act & 2) != 0, z % 2 ? 5.0f : -0.3f,
                                              z % 2 ? 2.0f : 90.0f, r_type, 0.0173f, r_type == KN_QRES_I8 ? -5 : 120,
                                              false, false, false, 0.0f, 0.0f, false, 0.0f, 0.0f};
                            kn_qepilogue_prepare(&e, C);
                            CHECK(e.finite == (finite && r_type != KN_QRES_F32));
                            // layout 0: a channel per row, rows LD apart; 1: one channel, rows back to back;
                            // 2: a channel per element, rows LD apart
                            kn_qepilogue_block b = {acc, MAXN, layout != 1, ROWS, n, layout == 2 ? 3 : 2, layout == 0,
                                                    layout == 2, r_type ? res : NULL, got, layout == 1 ? n : LD};
                            size_t y_size = kn_qout_size(y_type), r_size = kn_qres_size(r_type);
                            memset(want, 0xa5, sizeof want);
                            for (int row = 0; row < ROWS; row++)
                                for (int i = 0; i < n; i++)
                                    epilogue_definition(&e, acc[row * MAXN + i],
                                                        b.channel + row * b.channel_step + (layout == 2 ? i : 0),
                                                        r_type ? res + (size_t)(row * b.ld) * r_size : NULL, i,
                                                        want + (size_t)(row * b.ld) * y_size);
                            for (int path = KN_QGEMM_GENERIC; path <= KN_QGEMM_AVX512_VNNI; path++) {
                                const kn_qgemm_kernel *k = kn_qgemm_kernel_for((kn_qgemm_path)path);
                                if (!k)
                                    continue;
                                CHECK_MSG(epilogue_gives(k, &e, &b, got, sizeof got, want),
                                          "%s epilogue: zero point %d, y_type %d, act %d, residual %d, layout %d, "
                                          "n %d differs from the definition", kn_qgemm_kernel_name(k),
                                          (int)zero_points[z], y_type, act, r_type, layout, n);
                                cases++;
                            }
                        }
    printf("epilogue edges: %d blocks equal the definition\n", cases);
}

/* kn_qgemm_maxpool2x2 on every path against the 2x2 maxima computed here: 1 to 70 outputs a row (every
 * chunking: pieces of 8, 16 and 32 input bytes and their overlapping last pieces, and the scalar rows
 * below 4 outputs), 1 to 3 row pairs, rows exactly 2 * cols bytes apart or wider, u8 and i8 compared as
 * such; x is allocated to the last byte the windows cover (ASan sees a read past it) and nothing is
 * written past y's outputs. */
static void test_maxpool2x2_kernels(void) {
    int cases = 0;
    for (int64_t cols = 1; cols <= 70; cols++)
        for (int64_t rows = 1; rows <= 3; rows++)
            for (int64_t extra = 0; extra <= 5; extra += 5)
                for (int is_signed = 0; is_signed <= 1; is_signed++) {
                    const int64_t in_w = 2 * cols + extra, bytes = (2 * rows - 1) * in_w + 2 * cols;
                    uint8_t *x = malloc((size_t)bytes), want[3 * 70 + 16], got[3 * 70 + 16];
                    for (int64_t i = 0; i < bytes; i++)
                        x[i] = (uint8_t)rand_below(256);
                    memset(want, 0x5a, sizeof want);
                    for (int64_t i = 0; i < rows; i++)
                        for (int64_t j = 0; j < cols; j++) {
                            const uint8_t *p = x + 2 * i * in_w + 2 * j;
                            int best = is_signed ? (int8_t)p[0] : p[0];
                            const uint8_t others[3] = {p[1], p[in_w], p[in_w + 1]};
                            for (int t = 0; t < 3; t++) {
                                int v = is_signed ? (int8_t)others[t] : others[t];
                                best = v > best ? v : best;
                            }
                            want[i * cols + j] = (uint8_t)best;
                        }
                    for (int path = KN_QGEMM_GENERIC; path <= KN_QGEMM_AVX512_VNNI; path++) {
                        const kn_qgemm_kernel *k = kn_qgemm_kernel_for((kn_qgemm_path)path);
                        if (!k)
                            continue;
                        memset(got, 0x5a, sizeof got);
                        kn_qgemm_maxpool2x2(k, x, rows, in_w, cols, is_signed, got);
                        CHECK_MSG(memcmp(got, want, sizeof got) == 0,
                                  "%s maxpool2x2 %lld rows of %lld outputs, rows %lld bytes apart, %s differs",
                                  kn_qgemm_kernel_name(k), (long long)rows, (long long)cols, (long long)in_w,
                                  is_signed ? "i8" : "u8");
                        cases++;
                    }
                    free(x);
                }
    printf("maxpool2x2 kernels: %d cases equal the 2x2 maxima\n", cases);
}

/* kn_qgemm_interleave on every path against the packed layout written out here (V[k][l] at
 * kn_qgemm_v_index): 1 to 9 panels (the AVX-512 build's groups of 4 and the rest), u8 and flipped i8
 * bytes, panels apart by more than 64 bytes; nothing else written. */
static void test_interleave_kernels(void) {
    enum { MAXP = 9, STRIDE = 80 };
    uint8_t rows[4][MAXP * 16], want[MAXP * STRIDE], got[MAXP * STRIDE];
    int cases = 0;
    for (int panels = 1; panels <= MAXP; panels++)
        for (int flip = 0; flip <= 0x80; flip += 0x80) {
            for (int r = 0; r < 4; r++)
                for (int i = 0; i < MAXP * 16; i++)
                    rows[r][i] = (uint8_t)rand_below(256);
            memset(want, 0x5a, sizeof want);
            for (int p = 0; p < panels; p++)
                for (int l = 0; l < 16; l++)
                    for (int r = 0; r < 4; r++)
                        want[p * STRIDE + l * 4 + r] = (uint8_t)(rows[r][p * 16 + l] ^ flip);
            const uint8_t *const from[4] = {rows[0], rows[1], rows[2], rows[3]};
            for (int path = KN_QGEMM_GENERIC; path <= KN_QGEMM_AVX512_VNNI; path++) {
                const kn_qgemm_kernel *k = kn_qgemm_kernel_for((kn_qgemm_path)path);
                if (!k)
                    continue;
                memset(got, 0x5a, sizeof got);
                kn_qgemm_interleave(k, from, panels, (uint8_t)flip, got, STRIDE);
                CHECK_MSG(memcmp(got, want, sizeof got) == 0, "%s interleave of %d panels, flip %d differs",
                          kn_qgemm_kernel_name(k), panels, flip);
                cases++;
            }
        }
    printf("interleave kernels: %d cases equal the packed layout\n", cases);
}

/* The levels' quotient v / s near its rounding boundaries, where a vector epilogue that multiplies by
 * 1 / s instead must fall back to the division: scales whose reciprocals round (0.0173, 1/3, 3.7e-3, 7,
 * 0.1), mult = s * 2^-10 so that sums 512 * (2j + 1) + d, d in [-3, 3], give v / s within a few units
 * of the last place of a half (j + 0.5), and some exactly on it, under u8 and i8 zero points, with
 * Relu, Clip and the bounds of the levels in play: every path's levels equal the definition's. */
static void test_epilogue_quotients(void) {
    enum { N = 48, ROWS = 4 };
    const float scales[] = {0.0173f, 1.0f / 3.0f, 3.7e-3f, 7.0f, 0.1f};
    int32_t acc[ROWS * N], corr[1] = {0};
    uint8_t want[ROWS * N + 16], got[ROWS * N + 16];
    int cases = 0, mismatches = 0;
    for (size_t si = 0; si < sizeof scales / sizeof scales[0]; si++)
        for (int y_type = KN_QOUT_U8; y_type <= KN_QOUT_I8; y_type++)
            for (int act = 0; act < 4; act++)
                for (int round = 0; round < 8; round++) {
                    float s = scales[si], mult[1] = {s * 0x1p-10f}, bias[1] = {round % 2 ? 0.0f : s * 0.25f};
                    for (int i = 0; i < ROWS * N; i++) {
                        int64_t j = rand_below(600) - 300, d = rand_below(7) - 3;
                        acc[i] = (int32_t)(512 * (2 * j + 1) + d);
                    }
                    kn_qepilogue e = {corr, mult, bias, act & 1, y_type, s, y_type == KN_QOUT_I8 ? -7 : 121,
                                      (act & 2) != 0, -40.0f * s, 200.0f * s, KN_QRES_NONE, 0.0f, 0,
                                      false, false, false, 0.0f, 0.0f, false, 0.0f, 0.0f};
                    kn_qepilogue_prepare(&e, 1);
                    kn_qepilogue_block b = {acc, N, true, ROWS, N, 0, 0, false, NULL, got, N};
                    memset(want, 0xa5, sizeof want);
                    for (int i = 0; i < ROWS * N; i++)
                        epilogue_definition(&e, acc[i], 0, NULL, i, want);
                    for (int path = KN_QGEMM_GENERIC; path <= KN_QGEMM_AVX512_VNNI; path++) {
                        const kn_qgemm_kernel *k = kn_qgemm_kernel_for((kn_qgemm_path)path);
                        if (!k)
                            continue;
                        bool same = epilogue_gives(k, &e, &b, got, sizeof got, want);
                        mismatches += !same;
                        CHECK_MSG(same, "%s epilogue: scale %g, y_type %d, act %d: levels near halves differ from "
                                  "the definition", kn_qgemm_kernel_name(k), (double)s, y_type, act);
                        cases++;
                    }
                }
    printf("epilogue quotients near halves: %d blocks, %d differ from the definition\n", cases, mismatches);
}

/* kn_qgemm_depthwise_plane on every path against the definition: planes of 3x3 taps at stride 1 (taps a
 * byte apart) and stride 2 (phases), rows of 1 to 40 outputs with pitches just above them and far above
 * (the positions between rows are dropped), residuals of each type, Relu and Clip, u8 and i8 outputs:
 * the levels equal, and nothing is written past the plane. */
static void test_depthwise_planes(void) {
    enum { MAXR = 9, MAXC = 40, PITCH = 60, C = 3 };
    const int64_t shapes[][3] = {{1, 1, 3}, {7, 7, 9}, {7, 7, 60}, {4, 16, 18}, {9, 14, 16}, {3, 40, 42}, {5, 17, 19},
                                 {2, 33, 33}};
    int32_t corr[C] = {-300, 17, 5000}, w[9];
    float mult[C] = {0.01f, 0.003f, -0.02f}, bias[C] = {0.5f, -1.0f, 0.25f};
    uint8_t frame[2 * MAXR * PITCH + 64], res[MAXR * MAXC * 4], want[MAXR * MAXC * 4 + 32], got[MAXR * MAXC * 4 + 32];
    int32_t acc[MAXR * PITCH + 64];
    for (size_t i = 0; i < sizeof frame; i++)
        frame[i] = (uint8_t)rand_below(256);
    for (size_t i = 0; i < sizeof res; i++)
        res[i] = (uint8_t)rand_below(256);
    int cases = 0;
    for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++)
        for (int stride2 = 0; stride2 < 2; stride2++)
            for (int r_type = KN_QRES_NONE; r_type <= KN_QRES_I8; r_type++)
                for (int act = 0; act < 4; act++)
                    for (int y_type = KN_QOUT_U8; y_type <= KN_QOUT_I8; y_type++) {
                        int64_t rows = shapes[sh][0], cols = shapes[sh][1], pitch = shapes[sh][2];
                        const uint8_t *src[9];
                        for (int t = 0; t < 9; t++) { /* stride 2: taps 0 and 2 of a row share a phase */
                            int64_t i = t / 3, j = t % 3;
                            src[t] = frame + i * pitch + (stride2 ? (j % 2) * MAXR * PITCH + j / 2 : j);
                            w[t] = (int32_t)rand_below(256) - 128;
                        }
                        kn_qepilogue e = {corr, mult, bias, act & 1, y_type, 0.05f, y_type == KN_QOUT_I8 ? -4 : 9,
                                          (act & 2) != 0, -0.5f, 3.0f, r_type, 0.02f, 11, false, false, false, 0.0f,
                                          0.0f, false, 0.0f, 0.0f};
                        kn_qepilogue_prepare(&e, C);
                        kn_qdw_plane p = {src, w, 9, rows, cols, pitch, 1, r_type ? res : NULL, got, acc};
                        memset(want, 0xa5, sizeof want);
                        for (int64_t i = 0; i < rows; i++)
                            for (int64_t j = 0; j < cols; j++) {
                                int32_t sum = 0;
                                for (int t = 0; t < 9; t++)
                                    sum += w[t] * src[t][i * pitch + j];
                                epilogue_definition(&e, sum, 1, res, i * cols + j, want);
                            }
                        for (int path = KN_QGEMM_GENERIC; path <= KN_QGEMM_AVX512_VNNI; path++) {
                            const kn_qgemm_kernel *k = kn_qgemm_kernel_for((kn_qgemm_path)path);
                            if (!k)
                                continue;
                            memset(got, 0xa5, sizeof got);
                            kn_qgemm_depthwise_plane(k, &e, &p);
                            CHECK_MSG(memcmp(got, want, sizeof got) == 0,
                                      "%s depthwise plane %lldx%lld pitch %lld, stride2 %d, residual %d, act %d, "
                                      "y_type %d differs from the definition", kn_qgemm_kernel_name(k),
                                      (long long)rows, (long long)cols, (long long)pitch, stride2, r_type, act, y_type);
                            cases++;
                        }
                    }
    printf("depthwise planes: %d equal the definition\n", cases);
}

/* QuantizeLinear's vectorized levels against kn_quant_level, on ties, NaN, infinities, denormals and
 * values far outside the range, at lengths that end in every tail. */
static void test_quantize_kernels(void) {
    enum { N = 1000 };
    float x[N];
    const float scale = 0.05f;
    for (int i = 0; i < N; i++) {
        switch (i % 8) {
        case 0: x[i] = ((float)(i % 600) - 300.0f + 0.5f) * scale; break; /* ties */
        case 1: x[i] = i % 16 == 1 ? NAN : -INFINITY; break;
        case 2: x[i] = i % 16 == 2 ? INFINITY : 1e-40f; break;
        case 3: x[i] = rand_in(-1e6f, 1e6f); break;
        default: x[i] = rand_in(-8.0f, 8.0f); break;
        }
    }
    for (int is_signed = 0; is_signed <= 1; is_signed++) {
        int32_t zp = is_signed ? -7 : 131;
        uint8_t want[N], got[N];
        kn_quant_range r = kn_quant_range_of(8, is_signed);
        for (int i = 0; i < N; i++)
            want[i] = (uint8_t)(kn_quant_level(x[i], scale, zp, r) & 0xff);
        for (int path = KN_QGEMM_GENERIC; path <= KN_QGEMM_AVX512_VNNI; path++) {
            const kn_qgemm_kernel *k = kn_qgemm_kernel_for((kn_qgemm_path)path);
            for (int n = N - 17; k && n <= N; n++) {
                memset(got, 0, sizeof got);
                kn_qgemm_quantize(k, x, n, scale, zp, is_signed, got);
                CHECK_MSG(memcmp(got, want, (size_t)n) == 0, "%s quantize, n %d, signed %d",
                          kn_qgemm_kernel_name(k), n, is_signed);
            }
        }
    }
}

/* ---- 2. layers --------------------------------------------------------------------------------- */

typedef struct layer_case {
    const char *label;
    const char *op;            /* "Conv", "Gemm", "MatMul" */
    int64_t N, C, H, W;        /* Conv input; Gemm/MatMul: (N, C) or MatMul (N, H, C) when H > 0 */
    int64_t M, kh, kw, stride, pad, dilation, group;
    bool trans_b;              /* Gemm */
    bool x_signed, bias, relu;
    int y;                     /* 0: f32 output, 1: QuantizeLinear u8, 2: i8 */
    bool clip;                 /* Clip to [-0.2, 0.25] after the layer (and its Relu) */
    int residual;              /* Add(layer, r) before Relu and Clip, r of x's shape: 1 x itself (f32),
                                  2 x's QuantizeLinear -> DequantizeLinear (a ResNet shortcut) */
} layer_case;

typedef struct layer_data {
    float s_x, s_y;
    int32_t z_x, z_y;
    float *s_w;      /* (M) */
    int8_t *w;       /* the weight tensor's levels, in its own layout */
    float *b;        /* (M) */
    int64_t K, w_numel;
} layer_data;

static int add_const(kn_graph *g, const char *name, kn_dtype dtype, kn_shape shape) {
    return test_add_value(g, name, KN_VALUE_CONST, dtype, &shape);
}

static int add_node(kn_graph *g, const char *op, int n_in, const int *in, const char *out_name) {
    kn_shape empty = {0};
    int y = test_add_value(g, out_name, KN_VALUE_ACT, KN_F32, &empty);
    CHECK_MSG(test_add_node(g, op, out_name, n_in, in, 1, &y) >= 0, "%s", kiln_last_error());
    return y;
}

/* QuantizeLinear(x) -> DequantizeLinear with scale s and zero point z of type u8 or i8; returns the
 * dequantized value, and the levels' in *levels. */
static int add_qdq(kn_graph *g, int x, const char *name, float s, int32_t z, bool is_signed, int *levels) {
    char buf[64];
    snprintf(buf, sizeof buf, "%s.s", name);
    int sv = add_const(g, buf, KN_F32, (kn_shape){0});
    *(float *)g->values[sv].data = s;
    snprintf(buf, sizeof buf, "%s.z", name);
    int zv = add_const(g, buf, is_signed ? KN_I8 : KN_U8, (kn_shape){0});
    *(uint8_t *)g->values[zv].data = (uint8_t)(z & 0xff);
    snprintf(buf, sizeof buf, "%s.q", name);
    int q = add_node(g, "QuantizeLinear", 3, (int[]){x, sv, zv}, buf);
    g->values[q].dtype = is_signed ? KN_I8 : KN_U8; /* as an imported or loaded graph has it */
    if (levels)
        *levels = q;
    snprintf(buf, sizeof buf, "%s.dq", name);
    return add_node(g, "DequantizeLinear", 3, (int[]){q, sv, zv}, buf);
}

static int64_t layer_rows(const layer_case *c) { return c->N * (strcmp(c->op, "MatMul") == 0 && c->H ? c->H : 1); }

/* The graph of case c with data d; the output is its only output. */
static void build_layer(const layer_case *c, layer_data *d, kn_graph *g) {
    kn_graph_init(g);
    bool conv = strcmp(c->op, "Conv") == 0;
    kn_shape xs = conv ? SHAPE(c->N, c->C, c->H, c->W)
                       : (c->H && strcmp(c->op, "MatMul") == 0 ? SHAPE(c->N, c->H, c->C) : SHAPE(c->N, c->C));
    int x = test_add_value(g, "x", KN_VALUE_INPUT, KN_F32, &xs);
    g->inputs[g->n_inputs++] = x;
    int xdq = add_qdq(g, x, "x", d->s_x, d->z_x, c->x_signed, NULL);
    kn_shape ws = conv        ? SHAPE(c->M, c->C / c->group, c->kh, c->kw)
                  : c->trans_b ? SHAPE(c->M, c->C)
                               : SHAPE(c->C, c->M);
    int wq = add_const(g, "w.q", KN_I8, ws);
    memcpy(g->values[wq].data, d->w, (size_t)d->w_numel);
    int sw = add_const(g, "w.s", KN_F32, SHAPE(c->M));
    memcpy(g->values[sw].data, d->s_w, sizeof(float) * (size_t)c->M);
    int wdq = add_node(g, "DequantizeLinear", 2, (int[]){wq, sw}, "w.dq");
    CHECK_OK(kn_node_set_int(g, g->n_nodes - 1, "axis", conv || c->trans_b ? 0 : 1));
    int b = -1;
    if (c->bias) {
        kn_shape bs = SHAPE(c->M);
        b = test_add_value(g, "b", KN_VALUE_PARAM, KN_F32, &bs);
        memcpy(g->values[b].data, d->b, sizeof(float) * (size_t)c->M);
    }
    int y = add_node(g, c->op, c->bias ? 3 : 2, (int[]){xdq, wdq, b}, "y");
    int node = g->n_nodes - 1;
    if (c->residual)
        y = add_node(g, "Add", 2, (int[]){y, c->residual == 1 ? x : xdq}, "y.add");
    if (conv) {
        CHECK_OK(kn_node_set_ints(g, node, "strides", 2, (int64_t[]){c->stride, c->stride}));
        CHECK_OK(kn_node_set_ints(g, node, "pads", 4, (int64_t[]){c->pad, c->pad, c->pad, c->pad}));
        CHECK_OK(kn_node_set_ints(g, node, "dilations", 2, (int64_t[]){c->dilation, c->dilation}));
        CHECK_OK(kn_node_set_int(g, node, "group", c->group));
    } else if (strcmp(c->op, "Gemm") == 0) {
        CHECK_OK(kn_node_set_int(g, node, "transB", c->trans_b));
    }
    if (c->relu)
        y = add_node(g, "Relu", 1, &y, "y.relu");
    if (c->clip) {
        int lo = add_const(g, "clip.lo", KN_F32, (kn_shape){0}), hi = add_const(g, "clip.hi", KN_F32, (kn_shape){0});
        *(float *)g->values[lo].data = -0.2f;
        *(float *)g->values[hi].data = 0.25f;
        y = add_node(g, "Clip", 3, (int[]){y, lo, hi}, "y.clip");
    }
    if (c->y)
        y = add_qdq(g, y, "y", d->s_y, d->z_y, c->y == 2, NULL);
    g->outputs[g->n_outputs++] = y;
}

static void make_layer_data(const layer_case *c, layer_data *d) {
    bool conv = strcmp(c->op, "Conv") == 0;
    d->K = conv ? c->C / c->group * c->kh * c->kw : c->C;
    d->w_numel = c->M * d->K;
    d->s_x = rand_in(0.01f, 0.03f);
    d->z_x = c->x_signed ? (int32_t)rand_below(21) - 10 : (int32_t)rand_below(40) + 100;
    d->s_y = rand_in(0.02f, 0.1f);
    d->z_y = c->y == 2 ? (int32_t)rand_below(11) - 5 : (int32_t)rand_below(30) + 20;
    d->s_w = malloc(sizeof(float) * (size_t)c->M);
    d->b = malloc(sizeof(float) * (size_t)c->M);
    d->w = malloc((size_t)d->w_numel);
    for (int64_t m = 0; m < c->M; m++) {
        d->s_w[m] = rand_in(0.002f, 0.01f);
        d->b[m] = rand_in(-0.5f, 0.5f);
    }
    for (int64_t i = 0; i < d->w_numel; i++)
        d->w[i] = (int8_t)(rand_below(255) - 127);
}

/* Weight level of output channel m, input channel (within the group) and tap, or of (m, k) for Gemm. */
static int32_t weight_at(const layer_case *c, const layer_data *d, int64_t m, int64_t k) {
    if (strcmp(c->op, "Conv") == 0 || (strcmp(c->op, "Gemm") == 0 && c->trans_b))
        return d->w[m * d->K + k];
    return d->w[k * c->M + m];
}

/* The definition (core/quant.h) from the input levels: out (rows of M outputs, in the graph's output
 * layout) and, for the bound, the exact pre-quantization value and sum |x w| + |b| of each output. */
static void layer_definition(const layer_case *c, const layer_data *d, const float *x, int64_t x_numel, float *out,
                             double *exact, double *magnitude) {
    kn_quant_range xr = kn_quant_range_of(8, c->x_signed), yr = kn_quant_range_of(8, c->y == 2);
    int32_t *qx = malloc(sizeof(int32_t) * (size_t)x_numel);
    for (int64_t i = 0; i < x_numel; i++)
        qx[i] = kn_quant_level(x[i], d->s_x, d->z_x, xr) - d->z_x;
    bool conv = strcmp(c->op, "Conv") == 0;
    int64_t oh = conv ? (c->H + 2 * c->pad - c->dilation * (c->kh - 1) - 1) / c->stride + 1 : 1;
    int64_t ow = conv ? (c->W + 2 * c->pad - c->dilation * (c->kw - 1) - 1) / c->stride + 1 : 1;
    int64_t rows = conv ? c->N : layer_rows(c), Cg = conv ? c->C / c->group : c->C;
    int64_t Mg = c->M / (conv ? c->group : 1);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t m = 0; m < c->M; m++)
            for (int64_t p = 0; p < oh * ow; p++) {
                int64_t acc = 0;
                double mag = 0;
                for (int64_t k = 0; k < d->K; k++) {
                    int32_t xv;
                    if (conv) {
                        int64_t ci = (m / Mg) * Cg + k / (c->kh * c->kw), tap = k % (c->kh * c->kw);
                        int64_t ih = (p / ow) * c->stride - c->pad + (tap / c->kw) * c->dilation;
                        int64_t iw = (p % ow) * c->stride - c->pad + (tap % c->kw) * c->dilation;
                        bool in = ih >= 0 && ih < c->H && iw >= 0 && iw < c->W;
                        xv = in ? qx[((r * c->C + ci) * c->H + ih) * c->W + iw] : 0;
                    } else {
                        xv = qx[r * c->C + k];
                    }
                    int32_t wv = weight_at(c, d, m, k);
                    acc += (int64_t)xv * wv;
                    mag += fabs((double)xv * d->s_x * wv * d->s_w[m]);
                }
                float mult = kn_quant_multiplier(d->s_x, d->s_w[m], 1.0), bias = c->bias ? d->b[m] : 0.0f;
                float value = kn_quant_layer_value((int32_t)acc, mult, bias);
                int64_t at = conv ? (r * c->M + m) * oh * ow + p : r * c->M + m;
                float residual = c->residual == 1 ? x[at] : c->residual == 2 ? (float)qx[at] * d->s_x : 0.0f;
                if (c->residual)
                    value = kn_quant_add_residual(value, residual);
                if (c->relu)
                    value = kn_quant_relu(value);
                if (c->clip)
                    value = kn_quant_clip(value, -0.2f, 0.25f);
                if (c->y)
                    out[at] = kn_quant_value(kn_quant_level(value, d->s_y, d->z_y, yr), d->s_y, d->z_y);
                else
                    out[at] = value;
                double e = (double)acc * d->s_x * d->s_w[m] + bias + residual;
                e = c->relu && e < 0 ? 0 : e;
                exact[at] = c->clip ? fmin(fmax(e, -0.2), 0.25) : e;
                magnitude[at] = mag + fabs(bias) + fabs(residual);
            }
    free(qx);
}

static int count_op(const kn_graph *g, const char *name) {
    int n = 0;
    for (int i = 0; i < g->n_nodes; i++)
        n += strcmp(g->nodes[i].op->name, name) == 0;
    return n;
}

/* Output 0 of the optimized graph `model` (input 0 f32 x, at the input shape the graph declares) computed
 * node by node through forward with no prepared state, as every executor but the session calls it: the
 * integer layers then prepare their state on the fly (kn_op_call_prepared). The shapes are inferred on
 * a view with a value table of its own, as a session's; each activation gets a buffer of its own,
 * 64-byte aligned and rounded up as the planner places them. A malloc'd copy of *numel floats, or NULL. */
static float *unprepared_forward(const kn_graph *model, const float *x, int64_t *numel) {
    kn_graph view = *model, *g = &view;
    memset(&view.arena, 0, sizeof view.arena);
    view.values = malloc(sizeof(kn_value) * (size_t)model->n_values);
    kn_tensor *t = calloc((size_t)g->n_values, sizeof *t);
    void **owned = calloc((size_t)g->n_values, sizeof *owned);
    float *y = NULL;
    kn_op_ctx ctx = {0};
    bool ok = view.values && t && owned;
    if (ok) {
        memcpy(view.values, model->values, sizeof(kn_value) * (size_t)model->n_values);
        for (int v = 0; v < g->n_values; v++)
            if (view.values[v].data_from_inference) {
                view.values[v].data = NULL;
                view.values[v].data_from_inference = false;
            }
        ok = kn_graph_infer_shapes(g) == KILN_OK;
    }
    for (int v = 0; ok && v < g->n_values; v++) {
        const kn_value *val = &g->values[v];
        size_t bytes = 0;
        t[v] = (kn_tensor){val->shape, val->dtype, val->data};
        if (val->kind == KN_VALUE_INPUT)
            t[v].data = (void *)x;
        else if (val->kind == KN_VALUE_ACT)
            ok = kn_shape_bytes(&val->shape, val->dtype, &bytes) && kn_align_up(bytes ? bytes : 1, &bytes) &&
                 (t[v].data = owned[v] = kn_aligned_alloc(bytes)); /* whole vectors, as the session's arena */
    }
    for (int i = 0; ok && i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        kn_tensor *args[32];
        for (int k = 0; k < n->n_in + n->n_out && k < 32; k++) {
            int v = k < n->n_in ? n->in[k] : n->out[k - n->n_in];
            args[k] = v >= 0 ? &t[v] : NULL;
        }
        kn_op_call call = {.node = n, .in = args, .out = args + n->n_in, .ctx = &ctx};
        ok = n->n_in + n->n_out <= 32 && n->op->forward(&call) == KILN_OK;
    }
    const kn_tensor *out = ok ? &t[g->outputs[0]] : NULL;
    if (out && out->dtype == KN_F32 && (y = malloc(sizeof(float) * (size_t)kn_numel(out))) != NULL) {
        memcpy(y, out->data, sizeof(float) * (size_t)kn_numel(out));
        *numel = kn_numel(out);
    }
    for (int v = 0; owned && v < g->n_values; v++)
        free(owned[v]);
    free(owned);
    free(t);
    kn_op_ctx_release(&ctx);
    kn_arena_free(&view.arena);
    free(view.values);
    return y;
}

/* The session (which prepares every integer layer when it plans) against unprepared_forward, byte for
 * byte, on `batch` samples of x; then the session again on the first sample alone (a new plan) and on
 * the whole batch (its cached plan), which must give the same bytes per sample. */
static void check_prepared(const char *label, const kiln_model *model, const float *x, int64_t batch, int64_t sample) {
    const kn_graph *opt = kn_model_graph(model, true);
    int64_t n_direct = 0, n_batch = 0, n_one = 0;
    float *direct = unprepared_forward(opt, x, &n_direct);
    kiln_session *s = rt_session_new(model, true, 1, false);
    const float *y = s ? rt_session_forward(s, batch, x, sample, &n_batch) : NULL;
    float *whole = y ? malloc(sizeof(float) * (size_t)n_batch) : NULL;
    if (whole)
        memcpy(whole, y, sizeof(float) * (size_t)n_batch);
    const float *one = whole ? rt_session_forward(s, 1, x, sample, &n_one) : NULL;
    bool same_one = one && n_one * batch == n_batch && memcmp(one, whole, sizeof(float) * (size_t)n_one) == 0;
    y = one ? rt_session_forward(s, batch, x, sample, &n_batch) : NULL;
    CHECK_MSG(direct && whole && n_direct == n_batch && memcmp(direct, whole, sizeof(float) * (size_t)n_batch) == 0,
              "%s: the session's prepared layers differ from forward preparing on the fly", label);
    CHECK_MSG(same_one, "%s: one sample after the batch differs from its row of the batch", label);
    CHECK_MSG(y && memcmp(y, whole, sizeof(float) * (size_t)n_batch) == 0,
              "%s: the batch again (the cached plan) differs from its first run", label);
    kiln_session_free(s);
    free(direct);
    free(whole);
}

static void check_layer_case(const layer_case *c) {
    layer_data d;
    make_layer_data(c, &d);
    kn_graph g;
    build_layer(c, &d, &g);
    int64_t x_numel = kn_shape_numel(&g.values[g.inputs[0]].shape);
    float *x = malloc(sizeof(float) * (size_t)x_numel);
    for (int64_t i = 0; i < x_numel; i++) // beyond the levels' range at both ends
        x[i] = rand_in(-1.2f, 1.2f) * 128.0f * d.s_x + (float)(d.z_x - (c->x_signed ? 0 : 128)) * d.s_x;
    kiln_model *model = NULL;
    CHECK_OK(kn_model_from_graph(&g, &model));
    if (!model)
        return;
    const kn_graph *opt = kn_model_graph(model, true);
    if (getenv("INT8_DEBUG"))
        for (int i = 0; i < opt->n_nodes; i++)
            fprintf(stderr, "  %s: %s\n", c->label, opt->nodes[i].op->name);
    bool conv = strcmp(c->op, "Conv") == 0;
    CHECK_MSG(count_op(opt, conv ? "QLinearConvPacked" : "QLinearGemmPacked") == 1 &&
                  count_op(opt, c->op) == 0 && count_op(opt, "Relu") == 0 && count_op(opt, "Clip") == 0 &&
                  count_op(opt, "Add") == 0,
              "%s: the optimizer did not make one integer layer", c->label);
    CHECK_MSG(!c->y || count_op(opt, "QuantizeLinear") == 1, "%s: the output QuantizeLinear stays", c->label);
    CHECK_MSG(c->residual != 2 || count_op(opt, "DequantizeLinear") == (c->y ? 1 : 0),
              "%s: the shortcut must be read as levels (its DequantizeLinear gone)", c->label);
    kiln_session *fast = rt_session_new(model, true, 2, false), *ref = rt_session_new(model, false, 1, false);
    int64_t sample = x_numel / c->N, n_fast = 0, n_ref = 0;
    const float *y_fast = fast ? rt_session_forward(fast, c->N, x, sample, &n_fast) : NULL;
    const float *y_ref = ref ? rt_session_forward(ref, c->N, x, sample, &n_ref) : NULL;
    if (y_fast && y_ref && n_fast == n_ref) {
        float *want = malloc(sizeof(float) * (size_t)n_fast);
        double *exact = malloc(sizeof(double) * (size_t)n_fast), *mag = malloc(sizeof(double) * (size_t)n_fast);
        layer_definition(c, &d, x, x_numel, want, exact, mag);
        int64_t bits_differ = 0, over_bound = 0, levels_differ = 0;
        for (int64_t i = 0; i < n_fast; i++) {
            bits_differ += memcmp(&y_fast[i], &want[i], sizeof(float)) != 0;
            double bound = (double)(d.K + 4) * FLT_EPSILON * mag[i] + 1e-30;
            if (c->y) {
                double step = fabs((double)y_ref[i] - y_fast[i]) / d.s_y;
                levels_differ += step > 0.5;
                over_bound += step > 1.5; /* a level off only where f32 rounding crossed a boundary */
            } else {
                over_bound += fabs((double)y_ref[i] - exact[i]) > bound;
            }
        }
        printf("layer %-42s %6lld outputs, integer path vs definition: %lld differ; f32 QDQ graph: %lld "
               "levels off by 1, %lld outside the bound\n", c->label, (long long)n_fast, (long long)bits_differ,
               (long long)levels_differ, (long long)over_bound);
        CHECK_MSG(bits_differ == 0, "%s: %lld outputs of the integer path differ from the definition", c->label,
                  (long long)bits_differ);
        CHECK_MSG(over_bound == 0, "%s: the f32 QDQ graph is outside the bound at %lld outputs", c->label,
                  (long long)over_bound);
        check_prepared(c->label, model, x, c->N, sample);
        free(want), free(exact), free(mag);
    } else {
        CHECK_MSG(false, "%s: no comparable outputs", c->label);
    }
    kiln_session_free(fast);
    kiln_session_free(ref);
    kiln_model_free(model);
    free(x), free(d.s_w), free(d.b), free(d.w);
}

/* An Add that broadcasts (a conv's output plus the input's GlobalAveragePool, (N, C, 1, 1)) is no
 * shortcut: the optimizer leaves it, and the optimized graph computes what the graph as built does. */
static void test_broadcast_add_stays(void) {
    layer_case c = {"broadcast add", "Conv", 2, 4, 5, 5, 4, 3, 3, 1, 1, 1, 1, false, false, true, false, 0, false, 0};
    layer_data d;
    make_layer_data(&c, &d);
    kn_graph g;
    build_layer(&c, &d, &g);
    int pooled = add_node(&g, "GlobalAveragePool", 1, &g.inputs[0], "x.gap");
    g.outputs[0] = add_node(&g, "Add", 2, (int[]){g.outputs[0], pooled}, "y.add");
    kiln_model *model = NULL;
    CHECK_OK(kn_model_from_graph(&g, &model));
    if (!model)
        return;
    const kn_graph *opt = kn_model_graph(model, true);
    CHECK_MSG(count_op(opt, "QLinearConvPacked") == 1 && count_op(opt, "Add") == 1,
              "the broadcasting Add must stay beside the integer layer");
    int64_t x_numel = c.N * c.C * c.H * c.W, n_fast = 0, n_ref = 0;
    float *x = malloc(sizeof(float) * (size_t)x_numel);
    for (int64_t i = 0; i < x_numel; i++)
        x[i] = rand_in(-1.0f, 1.0f);
    kiln_session *fast = rt_session_new(model, true, 1, false), *ref = rt_session_new(model, false, 1, false);
    const float *y_fast = fast ? rt_session_forward(fast, c.N, x, x_numel / c.N, &n_fast) : NULL;
    const float *y_ref = ref ? rt_session_forward(ref, c.N, x, x_numel / c.N, &n_ref) : NULL;
    CHECK_MSG(y_fast && y_ref && n_fast == n_ref && n_fast == c.N * c.M * c.H * c.W &&
                  rt_max_diff(y_fast, y_ref, n_fast) < 1e-4,
              "the graph with a broadcasting Add runs optimized as built");
    kiln_session_free(fast);
    kiln_session_free(ref);
    kiln_model_free(model);
    free(x), free(d.s_w), free(d.b), free(d.w);
}

/* Add(DequantizeLinear(a), DequantizeLinear(b)) [-> Relu] -> QuantizeLinear, a QDQ model's residual Add
 * from another tool: the optimizer makes it AddInteger over the levels, whose output must equal the graph
 * as built bit for bit (the same f32 operations), for u8 and i8 levels, with and without Relu. */
static void test_integer_add(void) {
    for (int variant = 0; variant < 4; variant++) {
        bool relu = variant & 1, signed_levels = variant & 2;
        kn_graph g;
        kn_graph_init(&g);
        kn_shape xs = SHAPE(2, 5, 7, 9);
        int x = test_add_value(&g, "x", KN_VALUE_INPUT, KN_F32, &xs);
        g.inputs[g.n_inputs++] = x;
        int a = add_qdq(&g, x, "a", 0.011f, signed_levels ? -3 : 120, signed_levels, NULL);
        int b = add_qdq(&g, x, "b", 0.017f, signed_levels ? 5 : 131, false, NULL);
        int y = add_node(&g, "Add", 2, (int[]){a, b}, "sum");
        if (relu)
            y = add_node(&g, "Relu", 1, &y, "sum.relu");
        g.outputs[g.n_outputs++] = add_qdq(&g, y, "y", 0.023f, signed_levels ? 2 : 100, signed_levels, NULL);
        kiln_model *model = NULL;
        CHECK_OK(kn_model_from_graph(&g, &model));
        if (!model)
            return;
        const kn_graph *opt = kn_model_graph(model, true);
        CHECK_MSG(count_op(opt, "AddInteger") == 1 && count_op(opt, "Add") == 0 && count_op(opt, "Relu") == 0,
                  "variant %d: the optimizer did not make the Add an AddInteger", variant);
        int64_t n = kn_shape_numel(&xs), n_fast = 0, n_ref = 0;
        float *in = malloc(sizeof(float) * (size_t)n);
        for (int64_t i = 0; i < n; i++)
            in[i] = rand_in(-2.5f, 2.5f);
        kiln_session *fast = rt_session_new(model, true, 2, false), *ref = rt_session_new(model, false, 1, false);
        const float *y_fast = fast ? rt_session_forward(fast, 2, in, n / 2, &n_fast) : NULL;
        const float *y_ref = ref ? rt_session_forward(ref, 2, in, n / 2, &n_ref) : NULL;
        CHECK_MSG(y_fast && y_ref && n_fast == n && n_ref == n && memcmp(y_fast, y_ref, sizeof(float) * (size_t)n) == 0,
                  "variant %d: AddInteger differs from the QDQ graph", variant);
        kiln_session_free(fast);
        kiln_session_free(ref);
        kiln_model_free(model);
        free(in);
    }
    printf("AddInteger: u8 and i8, with and without Relu, equal to the QDQ Add bit for bit\n");
}

static void test_layers(void) {
    const layer_case cases[] = {
        // label                                     op      N  C   H   W   M  kh kw st pad dil grp transB signed bias relu y clip res
        {"conv 3x3 pad 1, odd channels, u8 out",   "Conv", 2, 3, 7, 7, 5, 3, 3, 1, 1, 1, 1, false, false, true, true, 1, false, 0},
        {"conv 3x3 stride 2, tails, f32 out",      "Conv", 1, 5, 9, 8, 7, 3, 3, 2, 1, 1, 1, false, false, true, false, 0, false, 0},
        {"conv groups 3, i8 in and out",           "Conv", 2, 6, 6, 5, 9, 3, 3, 1, 1, 1, 3, false, true, true, true, 2, false, 0},
        {"conv depthwise 8, relu f32",             "Conv", 1, 8, 10, 10, 8, 3, 3, 1, 1, 1, 8, false, false, false, true, 0, false, 0},
        {"conv 1x1, 17 -> 33 channels",            "Conv", 1, 17, 5, 5, 33, 1, 1, 1, 0, 1, 1, false, false, true, false, 1, false, 0},
        {"conv 1x1 stride 2, i8 in",               "Conv", 3, 4, 9, 9, 6, 1, 1, 2, 0, 1, 1, false, true, false, false, 0, false, 0},
        {"conv 5x5 dilation 2 no pad, 70 out",     "Conv", 1, 3, 16, 15, 70, 5, 5, 1, 0, 2, 1, false, false, true, true, 1, false, 0},
        {"conv 3x3 20x20, 64 -> 19",               "Conv", 1, 64, 20, 20, 19, 3, 3, 1, 1, 1, 1, false, false, true, true, 1, false, 0},
        {"conv 3x3 30x30: blocks of output rows",  "Conv", 2, 3, 30, 30, 10, 3, 3, 1, 1, 1, 1, false, false, true, true, 1, false, 0},
        {"conv 7x7 stride 2 pad 3, 64x70, blocks",  "Conv", 1, 3, 64, 70, 8, 7, 7, 2, 3, 1, 1, false, true, true, true, 2, false, 0},
        {"conv 3x3 dilation 2 pad 2, 40x21, blocks", "Conv", 2, 5, 40, 21, 7, 3, 3, 1, 2, 2, 1, false, false, true, true, 1, false, 0},
        {"conv 5x5 pad 2 groups 2, 33x33, blocks", "Conv", 1, 4, 33, 33, 6, 5, 5, 1, 2, 1, 2, false, true, true, false, 2, false, 0},
        {"gemm transB, relu, u8 out",              "Gemm", 3, 37, 0, 0, 70, 0, 0, 0, 0, 0, 1, true, false, true, true, 1, false, 0},
        {"gemm (K, N) weights, f32 out",           "Gemm", 5, 130, 0, 0, 10, 0, 0, 0, 0, 0, 1, false, false, true, false, 0, false, 0},
        {"gemm i8 in, i8 out, no bias",            "Gemm", 1, 19, 0, 0, 33, 0, 0, 0, 0, 0, 1, true, true, false, false, 2, false, 0},
        {"matmul rank 3 input, f32 out",           "MatMul", 2, 24, 3, 0, 17, 0, 0, 0, 0, 0, 1, false, false, false, false, 0, false, 0},
        {"conv 3x3 + Clip, u8 out",                "Conv", 1, 5, 8, 8, 6, 3, 3, 1, 1, 1, 1, false, false, true, false, 1, true, 0},
        {"conv depthwise stride 2 + Clip, f32 out", "Conv", 2, 6, 7, 9, 6, 3, 3, 2, 1, 1, 6, false, true, true, false, 0, true, 0},
        {"conv depthwise 5x5 stride 2 pad 2, i8 in", "Conv", 2, 7, 13, 11, 7, 5, 5, 2, 2, 1, 7, false, true, true, false, 1, false, 0},
        {"conv depthwise 4x4 stride 3 pad 1, odd",  "Conv", 1, 3, 17, 23, 3, 4, 4, 3, 1, 1, 3, false, true, true, true, 1, false, 0},
        {"conv depthwise 3x3 stride 2, 40x40",     "Conv", 2, 4, 40, 40, 4, 3, 3, 2, 1, 1, 4, false, false, true, true, 1, false, 0},
        {"conv depthwise 3x3 dilation 2 pad 2",    "Conv", 1, 5, 9, 37, 5, 3, 3, 1, 2, 2, 5, false, false, true, true, 2, false, 0},
        {"gemm + Clip, i8 out",                    "Gemm", 4, 30, 0, 0, 20, 0, 0, 0, 0, 0, 1, true, false, true, false, 2, true, 0},
        {"conv 3x3 + shortcut levels + Relu, u8",  "Conv", 2, 6, 7, 7, 6, 3, 3, 1, 1, 1, 1, false, false, true, true, 1, false, 2},
        {"conv 1x1 + f32 shortcut, f32 out",       "Conv", 1, 5, 6, 9, 5, 1, 1, 1, 0, 1, 1, false, false, true, false, 0, false, 1},
        {"conv depthwise + shortcut, i8 in and out", "Conv", 1, 8, 9, 20, 8, 3, 3, 1, 1, 1, 8, false, true, true, false, 2, false, 2},
        {"gemm + shortcut levels + Clip, u8",      "Gemm", 3, 20, 0, 0, 20, 0, 0, 0, 0, 0, 1, true, false, true, false, 1, true, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_layer_case(&cases[i]);
}

/* Conv -> Relu -> MaxPool -> QuantizeLinear -> DequantizeLinear: the optimizer moves the quantization
 * onto the integer layer and pools levels (MaxPoolInteger). Its output must equal, bit for bit, that of
 * the same layer quantized before an f32 MaxPool (Conv -> Relu -> Q -> DQ -> MaxPool), since
 * quantizing and dequantizing are both non-decreasing. */
static int pool_graph(kn_graph *g, const layer_case *c, const layer_data *d, bool pool_first, int64_t k, int64_t s,
                      int64_t pad) {
    layer_case conv = *c;
    conv.y = 0;
    build_layer(&conv, (layer_data *)d, g);
    int y = g->outputs[0];
    g->n_outputs = 0;
    if (!pool_first)
        y = add_qdq(g, y, "y", d->s_y, d->z_y, c->y == 2, NULL);
    y = add_node(g, "MaxPool", 1, &y, "pool");
    CHECK_OK(kn_node_set_ints(g, g->n_nodes - 1, "kernel_shape", 2, (int64_t[]){k, k}));
    CHECK_OK(kn_node_set_ints(g, g->n_nodes - 1, "strides", 2, (int64_t[]){s, s}));
    CHECK_OK(kn_node_set_ints(g, g->n_nodes - 1, "pads", 4, (int64_t[]){pad, pad, pad, pad}));
    if (pool_first)
        y = add_qdq(g, y, "y", d->s_y, d->z_y, c->y == 2, NULL);
    g->outputs[g->n_outputs++] = y;
    return y;
}

static void test_maxpool_integer(void) {
    // 9x9 planes, and 10x1100 ones whose 2x2 pooling takes its rows a few at a time (KN_QMAXPOOL_CHUNK)
    const layer_case bases[] = {
        {"pool", "Conv", 2, 5, 9, 9, 6, 3, 3, 1, 1, 1, 1, false, false, true, true, 1, false, 0},
        {"wide pool", "Conv", 1, 2, 10, 1100, 3, 3, 3, 1, 1, 1, 1, false, false, true, true, 1, false, 0},
    };
    const int64_t windows[][3] = {{2, 2, 0}, {3, 2, 1}, {3, 1, 1}, {3, 3, 1}, {5, 2, 2}};
    for (size_t shape = 0; shape < sizeof bases / sizeof bases[0]; shape++)
    for (int signed_out = 0; signed_out <= 1; signed_out++)
        for (size_t w = 0; w < (shape ? 1 : sizeof windows / sizeof windows[0]); w++) {
            layer_case c = bases[shape];
            const int64_t sample = c.C * c.H * c.W;
            c.y = signed_out ? 2 : 1;
            c.relu = !signed_out;
            layer_data d;
            make_layer_data(&c, &d);
            float *x = malloc(sizeof(float) * (size_t)(c.N * sample)); // (N, C, H, W)
            for (int64_t i = 0; i < c.N * sample; i++)
                x[i] = rand_in(-2.0f, 2.0f);
            const float *y[2] = {NULL, NULL};
            int64_t n[2] = {0, 0};
            kiln_model *models[2] = {NULL, NULL};
            kiln_session *sessions[2] = {NULL, NULL};
            for (int pool_first = 0; pool_first <= 1; pool_first++) {
                kn_graph g;
                pool_graph(&g, &c, &d, pool_first, windows[w][0], windows[w][1], windows[w][2]);
                CHECK_OK(kn_model_from_graph(&g, &models[pool_first]));
                if (!models[pool_first])
                    continue;
                if (pool_first)
                    CHECK_MSG(count_op(kn_model_graph(models[1], true), "MaxPoolInteger") == 1 &&
                                  count_op(kn_model_graph(models[1], true), "QuantizeLinear") == 1,
                              "MaxPool %lld: the QuantizeLinear was not moved onto the layer",
                              (long long)windows[w][0]);
                if (pool_first)
                    check_prepared("MaxPoolInteger", models[1], x, c.N, sample);
                sessions[pool_first] = rt_session_new(models[pool_first], true, 1, false);
                if (sessions[pool_first])
                    y[pool_first] = rt_session_forward(sessions[pool_first], c.N, x, sample, &n[pool_first]);
            }
            CHECK_MSG(y[0] && y[1] && n[0] == n[1] && memcmp(y[0], y[1], sizeof(float) * (size_t)n[0]) == 0,
                      "MaxPool %lld stride %lld pad %lld, %s levels: pooling levels differs from pooling values",
                      (long long)windows[w][0], (long long)windows[w][1], (long long)windows[w][2],
                      signed_out ? "i8" : "u8");
            for (int i = 0; i < 2; i++) {
                kiln_session_free(sessions[i]);
                kiln_model_free(models[i]);
            }
            free(d.s_w), free(d.b), free(d.w), free(x);
        }
    printf("MaxPoolInteger: %zu windows, u8 and i8, equal to pooling the dequantized values\n",
           sizeof windows / sizeof windows[0]);
}

/* ---- 3. a quantized CNN ------------------------------------------------------------------------ */

/* Smooth images in [0, 1]: random blobs, so that the calibrated ranges look like real data's. */
static void fill_images(float *x, int64_t count) {
    for (int64_t n = 0; n < count; n++) {
        float cx = rand_in(6, 22), cy = rand_in(6, 22), r = rand_in(3, 10), level = rand_in(0.3f, 1.0f);
        for (int64_t i = 0; i < 28; i++)
            for (int64_t j = 0; j < 28; j++) {
                float d2 = ((float)i - cy) * ((float)i - cy) + ((float)j - cx) * ((float)j - cx);
                x[n * 784 + i * 28 + j] = d2 < r * r ? level : rand_in(0, 0.1f);
            }
    }
}

static int64_t argmax(const float *v, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return best;
}

/* bits 4: W4A8, the i4 levels of the 3x3 kernels read back from a .kiln file (rows of 9 levels packed
 * without gaps) into the integer layers' int8 weights. */
static void test_quantized_cnn(int bits) {
    kn_graph g;
    CHECK_OK(rt_spec_file("fmnist_cnn.txt", 7, &g));
    enum { CALIB = 64, BATCH = 48 };
    kn_dataset calib = {.count = CALIB, .sample_shape = SHAPE(1, 28, 28), .sample_size = 784};
    calib.x = malloc(sizeof(float) * CALIB * 784);
    fill_images(calib.x, CALIB);
    kn_quant_options o = kn_quant_options_default();
    o.bits = bits;
    o.calib_samples = CALIB;
    CHECK_OK(kn_quantize(&g, &calib, &o, NULL));
    if (bits == 4) {
        void *file;
        size_t size;
        CHECK_OK(kn_kiln_save_buffer(&g, NULL, 0, &file, &size));
        kn_graph_free(&g);
        CHECK_OK(kn_kiln_load_buffer(file, size, &g, NULL, NULL));
        free(file);
        int conv_i4 = 0;
        for (int v = 0; v < g.n_values; v++)
            conv_i4 += g.values[v].storage && g.values[v].storage->encoding == KN_ENC_AFFINE_I4 &&
                       g.values[v].shape.ndim == 4 && kn_storage_rows_share_bytes(g.values[v].storage);
        CHECK_MSG(conv_i4 == 2, "%d conv weights stored as packed i4 codes, not 2", conv_i4);
    }
    kiln_model *model = NULL;
    CHECK_OK(kn_model_from_graph(&g, &model));
    if (!model) {
        free(calib.x);
        return;
    }
    const kn_graph *opt = kn_model_graph(model, true);
    CHECK_MSG(count_op(opt, "QLinearConvPacked") == 2 && count_op(opt, "QLinearGemmPacked") == 2 &&
                  count_op(opt, "BatchNormalization") == 0 && count_op(opt, "DequantizeLinear") == 0,
              "the CNN's four layers are not all integer layers");
    float *x = malloc(sizeof(float) * BATCH * 784);
    fill_images(x, BATCH);
    kiln_session *fast = rt_session_new(model, true, 1, false), *ref = rt_session_new(model, false, 1, false);
    int64_t n_fast = 0, n_ref = 0;
    const float *y_fast = fast ? rt_session_forward(fast, BATCH, x, 784, &n_fast) : NULL;
    const float *y_ref = ref ? rt_session_forward(ref, BATCH, x, 784, &n_ref) : NULL;
    if (y_fast && y_ref && n_fast == n_ref && n_fast == BATCH * 10) {
        int same = 0;
        double diff = 0, scale = 0;
        for (int64_t n = 0; n < BATCH; n++) {
            same += argmax(y_fast + n * 10, 10) == argmax(y_ref + n * 10, 10);
            for (int k = 0; k < 10; k++) {
                diff = fmax(diff, fabs(y_fast[n * 10 + k] - y_ref[n * 10 + k]));
                scale = fmax(scale, fabs(y_ref[n * 10 + k]));
            }
        }
        printf("quantized CNN (%d-bit weights): %d of %d predictions equal, logits max diff %.3g (|logit| %.3g)\n",
               bits, same, BATCH, diff, scale);
        CHECK_MSG(same == BATCH, "%d of %d predictions differ", BATCH - same, BATCH);
    } else {
        CHECK_MSG(false, "the quantized CNN gave no comparable outputs");
    }
    kiln_session_free(fast);
    kiln_session_free(ref);
    kiln_model_free(model);
    free(x);
    free(calib.x);
}

/* ---- 4. ONNX's QLinearConv and QLinearMatMul --------------------------------------------------- */

/* A QLinearConv (x (N, C, H, W), w (M, C/group, kh, kw)) or QLinearMatMul (A (N, H, C) or (N, C) when H
 * is 0, B (C, M)) with constant weights; w_zero: the weights' zero points are nonzero (per channel when
 * per_channel), with levels drawn so that w - z_w still fits i8 unless `wide`, which draws u8 weights over
 * their whole range (the layer then stays the reference op). */
typedef struct qonnx_case {
    const char *label;
    bool conv;
    int64_t N, C, H, W, M, kh, kw, stride, pad, group;
    bool x_signed, w_signed, y_signed, per_channel, w_zero, bias, wide;
} qonnx_case;

typedef struct qonnx_data {
    float s_x, s_y, *s_w;     /* s_w (M) */
    int32_t z_x, z_y, *z_w;   /* z_w (M) */
    int32_t *w, *b;           /* w in the weight tensor's layout; b (M) */
    int64_t x_numel, w_numel, K;
    uint8_t *x;               /* levels as stored */
} qonnx_data;

static void make_qonnx_data(const qonnx_case *c, qonnx_data *d) {
    d->K = c->conv ? c->C / c->group * c->kh * c->kw : c->C;
    d->w_numel = c->M * d->K;
    d->x_numel = c->N * c->C * (c->conv ? c->H * c->W : (c->H ? c->H : 1));
    d->s_x = rand_in(0.005f, 0.03f);
    d->s_y = rand_in(0.05f, 0.5f);
    d->z_x = c->x_signed ? (int32_t)rand_below(41) - 20 : (int32_t)rand_below(60) + 100;
    d->z_y = c->y_signed ? (int32_t)rand_below(21) - 10 : (int32_t)rand_below(40) + 100;
    d->s_w = malloc(sizeof(float) * (size_t)c->M);
    d->z_w = malloc(sizeof(int32_t) * (size_t)c->M);
    d->b = malloc(sizeof(int32_t) * (size_t)c->M);
    d->w = malloc(sizeof(int32_t) * (size_t)d->w_numel);
    d->x = malloc((size_t)d->x_numel);
    int32_t shared_zero = c->w_signed ? (int32_t)rand_below(41) - 20 : (int32_t)rand_below(40) + 108;
    for (int64_t m = 0; m < c->M; m++) {
        d->s_w[m] = c->per_channel || m == 0 ? rand_in(0.002f, 0.02f) : d->s_w[0];
        int32_t z = c->per_channel ? (c->w_signed ? (int32_t)rand_below(41) - 20 : (int32_t)rand_below(40) + 108)
                                   : shared_zero;
        d->z_w[m] = !c->w_zero ? (c->w_signed ? 0 : 128) : z;
        d->b[m] = (int32_t)rand_below(40001) - 20000;
    }
    for (int64_t i = 0; i < d->w_numel; i++) {
        int64_t m = c->conv ? i / d->K : i % c->M;
        int32_t lo = c->w_signed ? -128 : 0, hi = c->w_signed ? 127 : 255;
        if (!c->wide) { /* w - z_w within i8 */
            lo = lo > d->z_w[m] - 128 ? lo : d->z_w[m] - 128;
            hi = hi < d->z_w[m] + 127 ? hi : d->z_w[m] + 127;
        }
        d->w[i] = lo + (int32_t)rand_below(hi - lo + 1);
    }
    if (c->wide) { /* at least one level whose distance to its zero point leaves i8 (none can around 128) */
        d->z_w[0] = d->z_w[0] == 128 ? 127 : d->z_w[0];
        d->w[0] = d->z_w[0] < 128 ? 255 : 0;
    }
    for (int64_t i = 0; i < d->x_numel; i++)
        d->x[i] = (uint8_t)rand_below(256);
}

static int add_qparam(kn_graph *g, const char *name, kn_dtype dtype, int64_t count, const void *values) {
    int v = add_const(g, name, dtype, count ? SHAPE(count) : (kn_shape){0});
    memcpy(g->values[v].data, values, (size_t)(count ? count : 1) * kn_dtype_size(dtype));
    return v;
}

static void build_qonnx(const qonnx_case *c, const qonnx_data *d, kn_graph *g) {
    kn_graph_init(g);
    kn_dtype xt = c->x_signed ? KN_I8 : KN_U8, wt = c->w_signed ? KN_I8 : KN_U8, yt = c->y_signed ? KN_I8 : KN_U8;
    kn_shape xs = c->conv ? SHAPE(c->N, c->C, c->H, c->W) : c->H ? SHAPE(c->N, c->H, c->C) : SHAPE(c->N, c->C);
    int x = test_add_value(g, "x", KN_VALUE_INPUT, xt, &xs);
    g->inputs[g->n_inputs++] = x;
    uint8_t zx = (uint8_t)(d->z_x & 0xff), zy = (uint8_t)(d->z_y & 0xff), zw[256];
    int64_t wcount = c->per_channel ? c->M : 0;
    for (int64_t m = 0; m < c->M; m++)
        zw[m] = (uint8_t)(d->z_w[m] & 0xff);
    int w = add_const(g, "w", wt, c->conv ? SHAPE(c->M, c->C / c->group, c->kh, c->kw) : SHAPE(c->C, c->M));
    for (int64_t i = 0; i < d->w_numel; i++)
        ((uint8_t *)g->values[w].data)[i] = (uint8_t)(d->w[i] & 0xff);
    int in[9] = {x, add_qparam(g, "x.s", KN_F32, 0, &d->s_x), add_qparam(g, "x.z", xt, 0, &zx), w,
                 add_qparam(g, "w.s", KN_F32, wcount, d->s_w), add_qparam(g, "w.z", wt, wcount, zw),
                 add_qparam(g, "y.s", KN_F32, 0, &d->s_y), add_qparam(g, "y.z", yt, 0, &zy),
                 c->bias ? add_qparam(g, "b", KN_I32, c->M, d->b) : -1};
    kn_shape empty = {0};
    int y = test_add_value(g, "y", KN_VALUE_ACT, yt, &empty);
    int node = test_add_node(g, c->conv ? "QLinearConv" : "QLinearMatMul", "layer", c->bias ? 9 : 8, in, 1, &y);
    CHECK_MSG(node >= 0, "%s", kiln_last_error());
    if (c->conv) {
        CHECK_OK(kn_node_set_ints(g, node, "strides", 2, (int64_t[]){c->stride, c->stride}));
        CHECK_OK(kn_node_set_ints(g, node, "pads", 4, (int64_t[]){c->pad, c->pad, c->pad, c->pad}));
        CHECK_OK(kn_node_set_int(g, node, "group", c->group));
    }
    g->outputs[g->n_outputs++] = y;
}

/* The definition (core/quant.h, "ONNX's integer ops") from the levels: want (the graph's output). */
static void qonnx_definition(const qonnx_case *c, const qonnx_data *d, uint8_t *want) {
    kn_quant_range yr = kn_quant_range_of(8, c->y_signed);
    int64_t oh = c->conv ? (c->H + 2 * c->pad - c->kh) / c->stride + 1 : 1;
    int64_t ow = c->conv ? (c->W + 2 * c->pad - c->kw) / c->stride + 1 : 1;
    int64_t rows = c->conv ? c->N : c->N * (c->H ? c->H : 1), Cg = c->C / (c->conv ? c->group : 1);
    int64_t Mg = c->M / (c->conv ? c->group : 1);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t m = 0; m < c->M; m++)
            for (int64_t p = 0; p < oh * ow; p++) {
                int64_t acc = c->bias ? d->b[m] : 0;
                for (int64_t k = 0; k < d->K; k++) {
                    int64_t xi = -1;
                    if (c->conv) {
                        int64_t ci = (m / Mg) * Cg + k / (c->kh * c->kw), tap = k % (c->kh * c->kw);
                        int64_t ih = (p / ow) * c->stride - c->pad + tap / c->kw;
                        int64_t iw = (p % ow) * c->stride - c->pad + tap % c->kw;
                        if (ih >= 0 && ih < c->H && iw >= 0 && iw < c->W)
                            xi = ((r * c->C + ci) * c->H + ih) * c->W + iw;
                    } else {
                        xi = r * c->C + k;
                    }
                    int32_t xv = xi < 0 ? 0 : (c->x_signed ? (int8_t)d->x[xi] : d->x[xi]) - d->z_x;
                    int32_t wv = d->w[c->conv ? m * d->K + k : k * c->M + m] - d->z_w[m];
                    acc += (int64_t)xv * wv;
                }
                float mult = kn_quant_requant_multiplier(d->s_x, d->s_w[m], d->s_y);
                int32_t q = kn_quant_requant_level((int32_t)acc, mult, d->z_y, yr);
                want[c->conv ? (r * c->M + m) * oh * ow + p : r * c->M + m] = (uint8_t)(q & 0xff);
            }
}

/* Output 0 of `model` on the levels x, optimized or not, into out (bytes). */
static bool qonnx_run(const kiln_model *model, bool optimize, const qonnx_data *d, int64_t batch, kiln_dtype xt,
                      uint8_t *out, size_t bytes) {
    kiln_session *s = rt_session_new(model, optimize, 2, false);
    const void *y = NULL;
    size_t y_bytes = 0;
    bool ok = s && rt_session_resize_batch(s, batch) == KILN_OK && kiln_session_set_input(s, 0, xt, d->x, (size_t)d->x_numel) == KILN_OK &&
              kiln_session_run(s) == KILN_OK && kiln_session_output(s, 0, &y, &y_bytes) == KILN_OK &&
              y_bytes == bytes;
    CHECK_MSG(ok, "running the model: %s", kiln_last_error());
    if (ok)
        memcpy(out, y, bytes);
    kiln_session_free(s);
    return ok;
}

static void check_qonnx_case(const qonnx_case *c) {
    qonnx_data d;
    make_qonnx_data(c, &d);
    kn_graph g;
    build_qonnx(c, &d, &g);
    kiln_model *model = NULL;
    CHECK_OK(kn_model_from_graph(&g, &model));
    if (!model)
        return;
    const kn_graph *opt = kn_model_graph(model, true);
    const char *packed = c->conv ? "QLinearConvPacked" : "QLinearGemmPacked";
    CHECK_MSG(count_op(opt, packed) == !c->wide, "%s: %s expected %d time(s)", c->label, packed, !c->wide);
    int64_t oh = c->conv ? (c->H + 2 * c->pad - c->kh) / c->stride + 1 : 1;
    int64_t ow = c->conv ? (c->W + 2 * c->pad - c->kw) / c->stride + 1 : 1;
    size_t n = (size_t)((c->conv ? c->N : c->N * (c->H ? c->H : 1)) * c->M * oh * ow);
    uint8_t *want = malloc(n), *fast = malloc(n), *ref = malloc(n);
    qonnx_definition(c, &d, want);
    kiln_dtype xt = c->x_signed ? KILN_DTYPE_I8 : KILN_DTYPE_U8;
    if (qonnx_run(model, true, &d, c->N, xt, fast, n) && qonnx_run(model, false, &d, c->N, xt, ref, n)) {
        size_t fast_differ = 0, ref_differ = 0;
        for (size_t i = 0; i < n; i++) {
            fast_differ += fast[i] != want[i];
            ref_differ += ref[i] != want[i];
        }
        printf("onnx %-44s %6zu outputs; optimized (%s) / reference op vs definition: %zu / %zu differ\n", c->label,
               n, c->wide ? "reference op" : packed, fast_differ, ref_differ);
        CHECK_MSG(fast_differ == 0 && ref_differ == 0, "%s: %zu optimized and %zu reference outputs differ", c->label,
                  fast_differ, ref_differ);
    }
    kiln_model_free(model);
    free(want), free(fast), free(ref);
    free(d.s_w), free(d.z_w), free(d.b), free(d.w), free(d.x);
}

/* A dynamically quantized matrix product, as onnxruntime's quantize_dynamic writes it:
 * DynamicQuantizeLinear(x) -> MatMulInteger(levels, B, zero point) -> int32 sums, against the formula
 * computed here (ONNX's, in f32); and an all-zero x, whose scale and zero point are 0. The optimizer makes
 * the MatMulInteger a packed layer with int32 output and the zero point given at run time; the optimized
 * and the unoptimized sessions (the reference op) must both give the formula's sums. */
static void test_dynamic_matmul(void) {
    const int64_t R = 3, K = 20, N = 7;
    for (int zeros = 0; zeros < 2; zeros++) {
        kn_graph g;
        kn_graph_init(&g);
        kn_shape xs_shape = SHAPE(R, K);
        int x = test_add_value(&g, "x", KN_VALUE_INPUT, KN_F32, &xs_shape);
        g.inputs[g.n_inputs++] = x;
        int b = add_const(&g, "b", KN_I8, SHAPE(K, N));
        int8_t *bs = g.values[b].data;
        for (int64_t i = 0; i < K * N; i++)
            bs[i] = (int8_t)(rand_below(256) - 128);
        kn_shape empty = {0};
        int q[3] = {test_add_value(&g, "x.q", KN_VALUE_ACT, KN_U8, &xs_shape),
                    test_add_value(&g, "x.s", KN_VALUE_ACT, KN_F32, &empty),
                    test_add_value(&g, "x.z", KN_VALUE_ACT, KN_U8, &empty)};
        CHECK(test_add_node(&g, "DynamicQuantizeLinear", "dq", 1, &x, 3, q) >= 0);
        int y = test_add_value(&g, "y", KN_VALUE_ACT, KN_I32, &empty);
        CHECK(test_add_node(&g, "MatMulInteger", "mm", 3, (int[]){q[0], b, q[2]}, 1, &y) >= 0);
        g.outputs[g.n_outputs++] = y;
        float xs[3 * 20];
        for (int64_t i = 0; i < R * K; i++)
            xs[i] = zeros ? 0.0f : rand_in(-1.5f, 2.5f);
        // The formula.
        float lo = 0.0f, hi = 0.0f;
        for (int64_t i = 0; i < R * K; i++) {
            lo = xs[i] < lo ? xs[i] : lo;
            hi = xs[i] > hi ? xs[i] : hi;
        }
        kn_quant_range u8 = kn_quant_range_of(8, false);
        float scale = (hi - lo) / 255.0f;
        int32_t zero = (int32_t)nearbyintf(kn_quant_clamp(0.0f - lo / scale, u8));
        int32_t want[3 * 7];
        for (int64_t r = 0; r < R; r++)
            for (int64_t n = 0; n < N; n++) {
                int32_t sum = 0;
                for (int64_t k = 0; k < K; k++)
                    sum += (kn_quant_level(xs[r * K + k], scale, zero, u8) - zero) * bs[k * N + n];
                want[r * N + n] = sum;
            }
        kiln_model *model = NULL;
        CHECK_OK(kn_model_from_graph(&g, &model));
        if (!model)
            return;
        CHECK_MSG(count_op(kn_model_graph(model, true), "QLinearGemmPacked") == 1,
                  "the MatMulInteger must become a packed layer");
        for (int optimize = 0; optimize < 2; optimize++) {
            kiln_session *s = rt_session_new(model, optimize, 1, false);
            const void *out = NULL;
            size_t bytes = 0;
            bool ran = s && rt_session_resize_batch(s, R) == KILN_OK &&
                       kiln_session_set_input(s, 0, KILN_DTYPE_F32, xs, sizeof xs) == KILN_OK &&
                       kiln_session_run(s) == KILN_OK && kiln_session_output(s, 0, &out, &bytes) == KILN_OK;
            CHECK_MSG(ran && bytes == sizeof want && memcmp(out, want, sizeof want) == 0,
                      "DynamicQuantizeLinear -> MatMulInteger (%s x, %s) differs from the formula: %s",
                      zeros ? "zero" : "random", optimize ? "packed" : "reference op", ran ? "wrong sums" : kiln_last_error());
            kiln_session_free(s);
        }
        CHECK_MSG(!zeros || (scale == 0.0f && zero == 0 && want[0] == 0), "an all-zero x has scale and zero point 0");
        kiln_model_free(model);
    }
    printf("onnx DynamicQuantizeLinear -> MatMulInteger equals the formula, also on an all-zero x\n");
}

static void test_qlinear_onnx(void) {
    const qonnx_case cases[] = {
        // label                                      conv  N  C   H   W   M  kh kw st pad grp  x_s    w_s    y_s    per_ch w_zero bias  wide
        {"qlinearconv 3x3 pad 1, u8 in/out, bias",   true, 2, 3, 9, 8, 5, 3, 3, 1, 1, 1, false, true, false, true, false, true, false},
        {"qlinearconv groups 2 stride 2, u8 w z 128", true, 1, 4, 11, 10, 6, 3, 3, 2, 1, 2, true, false, true, false, false, true, false},
        {"qlinearconv depthwise, w zero points",     true, 1, 8, 7, 7, 8, 3, 3, 1, 1, 8, false, true, false, true, true, false, false},
        {"qlinearconv 1x1, 40 -> 70, i8 out",        true, 2, 40, 5, 6, 70, 1, 1, 1, 0, 1, false, true, true, true, false, true, false},
        {"qlinearconv u8 w over 0..255: reference",  true, 1, 3, 6, 6, 4, 3, 3, 1, 1, 1, false, false, false, true, true, true, true},
        {"qlinearmatmul rank 3, per column",         false, 2, 37, 3, 0, 19, 0, 0, 0, 0, 1, false, true, false, true, false, false, false},
        {"qlinearmatmul i8 A, u8 B z 128, i8 out",   false, 5, 64, 0, 0, 33, 0, 0, 0, 0, 1, true, false, true, false, false, false, false},
        {"qlinearmatmul w zero points per column",   false, 3, 20, 0, 0, 17, 0, 0, 0, 0, 1, false, true, false, true, true, false, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_qonnx_case(&cases[i]);
}

int main(void) {
    rng = kn_rng_seeded(9);
    test_kernels();
    test_depthwise_kernels();
    test_epilogue_edges();
    test_epilogue_quotients();
    test_maxpool2x2_kernels();
    test_interleave_kernels();
    test_depthwise_planes();
    test_quantize_kernels();
    test_layers();
    test_broadcast_add_stays();
    test_integer_add();
    test_maxpool_integer();
    test_quantized_cnn(8);
    test_quantized_cnn(4);
    test_qlinear_onnx();
    test_dynamic_matmul();
    return check_finish();
}
