/* The int8 product driver (kernels/qgemm.h): packing, tiles and threads, and the generic kernels,
 * which are the scalar reference every ISA's kernels are tested against bit for bit. */
#include "kernels/qgemm_internal.h"

#include <math.h>
#include <string.h>

#include "core/cpu.h"
#include "core/quant.h"
#include "core/threads.h"

/* ---- packing ----------------------------------------------------------------------------------- */

static int64_t depth_groups(int64_t K) { return (K + 3) / 4; }

size_t kn_qgemm_b_bytes(int64_t R, int64_t K) {
    return (size_t)((R + KN_QGEMM_MR - 1) / KN_QGEMM_MR) * (size_t)depth_groups(K) * 4 * KN_QGEMM_MR;
}

size_t kn_qgemm_v_bytes(int64_t L, int64_t K) { return (size_t)((L + 15) / 16) * (size_t)depth_groups(K) * 64; }

static size_t b_index(int64_t r, int64_t k, int64_t kq) {
    return (size_t)(((r / KN_QGEMM_MR) * kq + k / 4) * 4 * KN_QGEMM_MR + (r % KN_QGEMM_MR) * 4 + k % 4);
}

void kn_qgemm_pack_weights_b(const int8_t *w, int64_t rows, int64_t K, int64_t ld, int8_t *dst) {
    int64_t kq = depth_groups(K);
    memset(dst, 0, kn_qgemm_b_bytes(rows, K));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t k = 0; k < K; k++)
            dst[b_index(r, k, kq)] = w[r * ld + k];
}

void kn_qgemm_pack_weights_v(const int8_t *w, int64_t rows, int64_t K, int64_t ld, int8_t *dst) {
    memset(dst, 0, kn_qgemm_v_bytes(rows, K));
    for (int64_t l = 0; l < rows; l++)
        for (int64_t k = 0; k < K; k++)
            dst[kn_qgemm_v_index(k, l, K)] = w[l * ld + k];
}

void kn_qgemm_pack_rows_b(const uint8_t *x, int64_t R, int64_t K, int64_t ld, bool x_signed, uint8_t *dst) {
    int64_t kq = depth_groups(K);
    size_t bytes = kn_qgemm_b_bytes(R, K);
    memset(dst, 0, bytes);
    for (int64_t r = 0; r < R; r++) {
        uint8_t *d = dst + (size_t)((r / KN_QGEMM_MR) * kq * 4 * KN_QGEMM_MR + (r % KN_QGEMM_MR) * 4);
        for (int64_t g = 0; g < K / 4; g++)
            memcpy(d + g * 4 * KN_QGEMM_MR, x + r * ld + g * 4, 4);
        for (int64_t k = K / 4 * 4; k < K; k++)
            d[(K / 4) * 4 * KN_QGEMM_MR + k % 4] = x[r * ld + k];
    }
    if (x_signed) /* x + 128 as u8; the padding's value does not matter */
        for (size_t i = 0; i < bytes; i++)
            dst[i] ^= 0x80;
}

/* ---- the generic kernels: the reference ---------------------------------------------------------- */

static void micro_generic(int64_t kq, const uint8_t *b, const uint8_t *v, size_t v_panel_bytes, int panels,
                          int rows, bool v_unsigned, bool accumulate, int32_t *acc) {
    for (int i = 0; i < rows; i++)
        for (int l = 0; l < 16 * panels; l++) {
            const uint8_t *vp = v + (size_t)(l / 16) * v_panel_bytes + (l % 16) * 4;
            int32_t sum = accumulate ? acc[i * KN_QGEMM_TILE_COLS + l] : 0;
            for (int64_t g = 0; g < kq; g++)
                for (int j = 0; j < 4; j++) {
                    uint8_t bb = b[g * 4 * KN_QGEMM_MR + i * 4 + j], vb = vp[g * 64 + j];
                    sum += v_unsigned ? (int32_t)vb * (int8_t)bb : (int32_t)bb * (int8_t)vb;
                }
            acc[i * KN_QGEMM_TILE_COLS + l] = sum;
        }
}

/* Residual element i of r (e->r_type) as the value added. */
static float residual_at(const kn_qepilogue *e, const void *r, int i) {
    switch (e->r_type) {
    case KN_QRES_F32: return ((const float *)r)[i];
    case KN_QRES_U8: return kn_quant_value(((const uint8_t *)r)[i], e->r_scale, e->r_zero_point);
    default: return kn_quant_value(((const int8_t *)r)[i], e->r_scale, e->r_zero_point);
    }
}

void kn_qgemm_epilogue_row_generic(const kn_qepilogue *e, const int32_t *acc, int n, int64_t channel, bool per_lane,
                                   const void *r, void *y) {
    kn_quant_range range = kn_quant_range_of(8, e->y_type == KN_QOUT_I8);
    for (int i = 0; i < n; i++) {
        int64_t c = per_lane ? channel + i : channel;
        // Wraps as the vector kernels' subtraction does: a graph the optimizer made never overflows
        // (|acc - corr| <= K * 255 * 128), a hostile one may, and must not be undefined behaviour.
        int32_t a = (int32_t)((uint32_t)acc[i] - (uint32_t)e->corr[c]);
        if (e->y_type == KN_QOUT_I32) {
            ((int32_t *)y)[i] = a;
            continue;
        }
        float value = kn_quant_layer_value(a, e->mult[c], e->bias[c]);
        if (e->r_type != KN_QRES_NONE)
            value = kn_quant_add_residual(value, residual_at(e, r, i));
        if (e->relu)
            value = kn_quant_relu(value);
        if (e->clip)
            value = kn_quant_clip(value, e->clip_lo, e->clip_hi);
        if (e->y_type == KN_QOUT_F32) {
            ((float *)y)[i] = value;
        } else {
            int32_t level = kn_quant_level(value, e->y_scale, e->y_zero_point, range);
            ((uint8_t *)y)[i] = (uint8_t)(level & 0xff); /* i8 levels keep their two's-complement byte */
        }
    }
}

static bool epilogue_finite(const kn_qepilogue *e, int64_t channels) {
    const float bound = 0x1p64f;
    if (e->r_type == KN_QRES_F32 || (e->r_type != KN_QRES_NONE && !(e->r_scale <= bound)))
        return false;
    for (int64_t c = 0; c < channels; c++)
        if (!(fabsf(e->mult[c]) <= bound && fabsf(e->bias[c]) <= bound)) /* false for NaN */
            return false;
    return true;
}

/* min(max(x, lo), hi), as maxps then minps take it (kn_quant_clip for a number). */
static float clamp_as_vectors(float x, float lo, float hi) {
    float raised = x < lo ? lo : x;
    return raised > hi ? hi : raised;
}

void kn_qepilogue_prepare(kn_qepilogue *e, int64_t channels) {
    kn_quant_range range = kn_quant_range_of(8, e->y_type == KN_QOUT_I8);
    e->finite = epilogue_finite(e, channels);
    e->short_levels = (e->y_type == KN_QOUT_U8 || e->y_type == KN_QOUT_I8) &&
                      e->y_zero_point >= -KN_QEPI_SHORT_ZERO_POINT && e->y_zero_point <= KN_QEPI_SHORT_ZERO_POINT;
    e->act_folded = e->finite && e->short_levels;
    e->q_lo = e->q_hi = 0.0f;
    e->by_reciprocal = false;
    e->reciprocal = e->reciprocal_margin = 0.0f;
    if (!e->short_levels)
        return;
    e->q_lo = (float)(range.qmin - e->y_zero_point);
    e->q_hi = (float)(range.qmax - e->y_zero_point);
    if (e->act_folded) {
        float lo = e->relu ? 0.0f : -INFINITY, hi = INFINITY; /* Relu: y > 0 ? y : 0, then Clip narrows it */
        if (e->clip) {
            float clip_lo = clamp_as_vectors(e->clip_lo, lo, hi), clip_hi = clamp_as_vectors(e->clip_hi, lo, hi);
            lo = clip_lo;
            hi = clip_hi;
        }
        float q_lo = clamp_as_vectors(lo / e->y_scale, e->q_lo, e->q_hi);
        e->q_hi = clamp_as_vectors(hi / e->y_scale, e->q_lo, e->q_hi);
        e->q_lo = q_lo;
    }
    // |v r - v / s| <= 3 * 2^-24 * |v / s| + (subnormal steps), |v / s| <= largest where clamping leaves a
    // gap, and adding or taking the margin rounds by 2^-24 * (largest + margin): 8 units cover all of it.
    float largest = fmaxf(fabsf(e->q_lo), fabsf(e->q_hi));
    e->reciprocal = 1.0f / e->y_scale;
    e->by_reciprocal = isnormal(e->y_scale) && isnormal(e->reciprocal) && largest <= 0x1p16f;
    e->reciprocal_margin = 8.0f * 0x1p-24f * (largest + 1.0f);
}

void kn_qgemm_epilogue_generic(const kn_qepilogue *e, const kn_qepilogue_block *b) {
    size_t y_size = kn_qout_size(e->y_type), r_size = kn_qres_size(e->r_type);
    for (int i = 0; i < b->rows; i++)
        kn_qgemm_epilogue_row_generic(e, b->acc + i * b->acc_ld, b->n, b->channel + i * b->channel_step, b->per_lane,
                                      b->r ? (const char *)b->r + (size_t)(i * b->ld) * r_size : NULL,
                                      (char *)b->y + (size_t)(i * b->ld) * y_size);
}

void kn_qgemm_quantize_generic(const float *x, int64_t n, float scale, int32_t zero_point, bool is_signed,
                               uint8_t *y) {
    kn_quant_range range = kn_quant_range_of(8, is_signed);
    for (int64_t i = 0; i < n; i++)
        y[i] = (uint8_t)(kn_quant_level(x[i], scale, zero_point, range) & 0xff);
}

void kn_qgemm_depthwise_generic(const uint8_t *const *src, const int32_t *w, int taps, int64_t n, int32_t *acc) {
    for (int64_t i = 0; i < n; i++) {
        int32_t sum = 0;
        for (int t = 0; t < taps; t++)
            sum += w[t] * src[t][i];
        acc[i] = sum;
    }
}

void kn_qgemm_depthwise(const kn_qgemm_kernel *k, const uint8_t *const *src, const int32_t *w, int taps, int64_t n,
                        int32_t *acc) {
    k->depthwise(src, w, taps, n, acc);
}

void kn_qgemm_depthwise_plane(const kn_qgemm_kernel *k, const kn_qepilogue *e, const kn_qdw_plane *p) {
    if (k->depthwise_plane && k->depthwise_plane(e, p))
        return;
    k->depthwise(p->src, p->w, p->taps, (p->rows - 1) * p->pitch + p->cols, p->acc);
    kn_qepilogue_block rows = {.acc = p->acc, .acc_ld = p->pitch, .rows = (int)p->rows, .n = (int)p->cols,
                               .channel = p->channel, .channel_step = 0, .per_lane = false, .r = p->r, .y = p->y,
                               .ld = p->cols};
    k->epilogue(e, &rows);
}

void kn_qgemm_deal2_generic(const uint8_t *row, int64_t n, uint8_t *even, uint8_t *odd) {
    for (int64_t k = 0; k < n; k++) {
        even[k] = row[2 * k];
        odd[k] = row[2 * k + 1];
    }
}

void kn_qgemm_deal2(const kn_qgemm_kernel *k, const uint8_t *row, int64_t n, uint8_t *even, uint8_t *odd) {
    k->deal2(row, n, even, odd);
}

void kn_qgemm_maxpool2x2_generic(const uint8_t *x, int64_t rows, int64_t in_w, int64_t cols, bool is_signed,
                                 uint8_t *y) {
    const uint8_t flip = is_signed ? 0x80 : 0; /* i8 order is u8 order with the top bit flipped */
    for (int64_t i = 0; i < rows; i++) {
        const uint8_t *r0 = x + 2 * i * in_w, *r1 = r0 + in_w;
        for (int64_t j = 0; j < cols; j++) {
            uint8_t best = r0[2 * j] ^ flip;
            best = (r0[2 * j + 1] ^ flip) > best ? r0[2 * j + 1] ^ flip : best;
            best = (r1[2 * j] ^ flip) > best ? r1[2 * j] ^ flip : best;
            best = (r1[2 * j + 1] ^ flip) > best ? r1[2 * j + 1] ^ flip : best;
            y[i * cols + j] = best ^ flip;
        }
    }
}

void kn_qgemm_maxpool2x2(const kn_qgemm_kernel *k, const uint8_t *x, int64_t rows, int64_t in_w, int64_t cols,
                         bool is_signed, uint8_t *y) {
    k->maxpool2x2(x, rows, in_w, cols, is_signed, y);
}

void kn_qgemm_epilogue_rows(const kn_qgemm_kernel *k, const kn_qepilogue *e, const kn_qepilogue_block *b) {
    k->epilogue(e, b);
}

void kn_qgemm_quantize(const kn_qgemm_kernel *k, const float *x, int64_t n, float scale, int32_t zero_point,
                       bool is_signed, uint8_t *y) {
    k->quantize(x, n, scale, zero_point, is_signed, y);
}

void kn_qgemm_interleave_generic(const uint8_t *const rows[4], int64_t panels, uint8_t flip, uint8_t *dst,
                                 size_t stride) {
    for (int64_t p = 0; p < panels; p++)
        for (int l = 0; l < 16; l++)
            for (int j = 0; j < 4; j++)
                dst[(size_t)p * stride + (size_t)(l * 4 + j)] = rows[j][p * 16 + l] ^ flip;
}

void kn_qgemm_interleave(const kn_qgemm_kernel *k, const uint8_t *const rows[4], int64_t panels, uint8_t flip,
                         uint8_t *dst, size_t stride) {
    k->interleave(rows, panels, flip, dst, stride);
}

static const kn_qgemm_kernel generic_kernel = {"generic", micro_generic, kn_qgemm_epilogue_generic,
                                               kn_qgemm_quantize_generic, kn_qgemm_interleave_generic,
                                               kn_qgemm_depthwise_generic, kn_qgemm_deal2_generic,
                                               kn_qgemm_maxpool2x2_generic, NULL};
#ifdef KILN_HAVE_X86_KERNELS
static const kn_qgemm_kernel avx2_kernel = {"avx2", kn_qgemm_micro_avx2, kn_qgemm_epilogue_avx2,
                                            kn_qgemm_quantize_avx2, kn_qgemm_interleave_avx2,
                                            kn_qgemm_depthwise_avx2, kn_qgemm_deal2_avx2,
                                            kn_qgemm_maxpool2x2_avx2, NULL};
// kn_cpu reports AVX-512 only along with AVX2, whose interleave (SSE2 unpacks) is as fast as it gets.
static const kn_qgemm_kernel vnni_kernel = {"avx512vnni", kn_qgemm_micro_vnni, kn_qgemm_epilogue_avx512,
                                            kn_qgemm_quantize_avx512, kn_qgemm_interleave_avx2,
                                            kn_qgemm_depthwise_vnni, kn_qgemm_deal2_avx2,
                                            kn_qgemm_maxpool2x2_avx2, kn_qgemm_depthwise_plane_vnni};
#endif

const kn_qgemm_kernel *kn_qgemm_kernel_for(kn_qgemm_path path) {
    switch (path) {
    case KN_QGEMM_GENERIC:
        return &generic_kernel;
#ifdef KILN_HAVE_X86_KERNELS
    case KN_QGEMM_AVX2:
        return kn_cpu()->avx2 ? &avx2_kernel : NULL;
    case KN_QGEMM_AVX512_VNNI:
        return kn_cpu()->avx512vnni ? &vnni_kernel : NULL;
#else
    case KN_QGEMM_AVX2:
    case KN_QGEMM_AVX512_VNNI:
        return NULL;
#endif
    }
    return NULL;
}

const kn_qgemm_kernel *kn_qgemm_kernel_best(void) {
    const kn_qgemm_kernel *k = kn_qgemm_kernel_for(KN_QGEMM_AVX512_VNNI);
    if (!k)
        k = kn_qgemm_kernel_for(KN_QGEMM_AVX2);
    return k ? k : &generic_kernel;
}

const char *kn_qgemm_kernel_name(const kn_qgemm_kernel *k) { return k->name; }

/* ---- the driver -------------------------------------------------------------------------------- */

/* Below this many multiply-adds a product runs on the calling thread alone. */
#define KN_QGEMM_PARALLEL_MIN KN_PARALLEL_MIN_INTEGER

/* Slivers of B whose tiles pass through the epilogue in one call: the epilogue's set-up (its constants
 * as vectors, the loop's entry) then serves 32 rows instead of 4. */
#define KN_QGEMM_EPILOGUE_SLIVERS 8

/* Depth groups (of 4) per block: a block of a V tile, 4 panels x 96 x 64 bytes = 24 KiB, stays in the L1
 * cache while the group's slivers pass over it; a deeper tile (K > 384: ResNet's 3x3 layers past the
 * first stage) would be read from L2 by every sliver. */
#define KN_QGEMM_DEPTH_GROUPS 96

/* The shape of a product in tiles: depth groups, slivers of B (in groups of KN_QGEMM_EPILOGUE_SLIVERS),
 * and the 16-column panels of V. */
typedef struct qgemm_tiling {
    int64_t kq, slivers, groups, panels_total;
    size_t v_panel_bytes, y_size, r_size;
} qgemm_tiling;

/* Tile t of the product: a group of slivers of B over a tile of V's columns, through the epilogue.
 * Column tiles outer: one tile of V (the larger operand, a convolution's image) stays in cache while
 * every sliver of B passes over it. */
static void qgemm_tile(const kn_qgemm_kernel *k, const kn_qgemm_problem *p, const qgemm_tiling *q, int64_t t) {
    int64_t ct = t / q->groups, s0 = t % q->groups * KN_QGEMM_EPILOGUE_SLIVERS;
    int64_t s1 = s0 + KN_QGEMM_EPILOGUE_SLIVERS < q->slivers ? s0 + KN_QGEMM_EPILOGUE_SLIVERS : q->slivers;
    int64_t panel0 = ct * KN_QGEMM_NV;
    int panels = (int)(q->panels_total - panel0 < KN_QGEMM_NV ? q->panels_total - panel0 : KN_QGEMM_NV);
    _Alignas(64) int32_t acc[KN_QGEMM_EPILOGUE_SLIVERS * KN_QGEMM_MR * KN_QGEMM_TILE_COLS];
    const uint8_t *v_tile = p->v + (size_t)panel0 * q->v_panel_bytes;
    for (int64_t g0 = 0; g0 < q->kq; g0 += KN_QGEMM_DEPTH_GROUPS) {
        int64_t groups = q->kq - g0 < KN_QGEMM_DEPTH_GROUPS ? q->kq - g0 : KN_QGEMM_DEPTH_GROUPS;
        for (int64_t s = s0; s < s1; s++) {
            int rows = (int)(p->R - s * KN_QGEMM_MR < KN_QGEMM_MR ? p->R - s * KN_QGEMM_MR : KN_QGEMM_MR);
            const uint8_t *sliver = p->b + ((size_t)s * (size_t)q->kq + (size_t)g0) * 4 * KN_QGEMM_MR;
            k->micro(groups, sliver, v_tile + (size_t)g0 * 64, q->v_panel_bytes, panels, rows, p->v_unsigned,
                     g0 > 0, acc + (s - s0) * KN_QGEMM_MR * KN_QGEMM_TILE_COLS);
        }
    }
    int64_t col0 = ct * KN_QGEMM_TILE_COLS, r0 = s0 * KN_QGEMM_MR, r1 = s1 * KN_QGEMM_MR < p->R ? s1 * KN_QGEMM_MR : p->R;
    kn_qepilogue_block block = {
        .acc = acc, .acc_ld = KN_QGEMM_TILE_COLS, .acc_whole = true, .rows = (int)(r1 - r0),
        .n = (int)(p->L - col0 < KN_QGEMM_TILE_COLS ? p->L - col0 : KN_QGEMM_TILE_COLS),
        .channel = p->channel_per_row ? r0 : col0, .channel_step = p->channel_per_row,
        .per_lane = !p->channel_per_row,
        .r = q->r_size ? (const char *)p->r + (size_t)(r0 * p->ldy + col0) * q->r_size : NULL,
        .y = (char *)p->y + (size_t)(r0 * p->ldy + col0) * q->y_size, .ld = p->ldy,
    };
    k->epilogue(p->epi, &block);
}

typedef struct qgemm_run {
    const kn_qgemm_kernel *k;
    const kn_qgemm_problem *p;
    const qgemm_tiling *q;
} qgemm_run;

static void qgemm_tile_of(void *ctx, int64_t t, int thread) {
    (void)thread;
    const qgemm_run *run = ctx;
    qgemm_tile(run->k, run->p, run->q, t);
}

void kn_qgemm_run(const kn_qgemm_kernel *k, const kn_qgemm_problem *p, int threads) {
    qgemm_tiling q = {
        .kq = depth_groups(p->K), .slivers = (p->R + KN_QGEMM_MR - 1) / KN_QGEMM_MR,
        .panels_total = (p->L + 15) / 16, .y_size = kn_qout_size(p->epi->y_type), .r_size = kn_qres_size(p->epi->r_type),
    };
    q.groups = (q.slivers + KN_QGEMM_EPILOGUE_SLIVERS - 1) / KN_QGEMM_EPILOGUE_SLIVERS;
    q.v_panel_bytes = (size_t)q.kq * 64;
    int64_t tiles = q.groups * ((p->L + KN_QGEMM_TILE_COLS - 1) / KN_QGEMM_TILE_COLS);
    qgemm_run run = {k, p, &q};
    kn_parallel_for(tiles, p->R * p->L * p->K >= KN_QGEMM_PARALLEL_MIN ? threads : 1, qgemm_tile_of, &run);
}
