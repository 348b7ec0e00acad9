/* The int8 micro-kernel with AVX-512 VNNI and the AVX-512 requantizing epilogue (kernels/qgemm.h).
 *
 * vpdpbusd adds, in each 32-bit lane, the four products of the lane's 4 unsigned bytes of its first
 * operand by the 4 signed bytes of its second: exactly the packed layout's unit. The tile is MR rows
 * of B (4 bytes of each broadcast to every lane) by up to 4 panels of V (16 lanes each): 16 zmm
 * accumulators, 4 loads and 4 broadcasts per 16 vpdpbusd. The products of u8 and s8 and their sums
 * are exact (|sum| <= K * 255 * 128 < 2^31 for K <= KN_QGEMM_MAX_K).
 */
#include <immintrin.h>
#include <string.h>

#include "core/quant.h"
#include "kernels/qgemm_internal.h"

/* `nv` and `mr` are constants in every caller, so the loops over them unroll fully and the accumulator
 * array lives in registers; GCC needs the pragma for it (without it, GCC 12 copied every accumulator to
 * another register, some to the stack, at each step: a third of vpdpbusd's rate). */
#ifdef __clang__
#define UNROLL
#else
#define UNROLL _Pragma("GCC unroll 16")
#endif

static inline __attribute__((always_inline)) void micro_tile(int64_t kq, const uint8_t *b, const uint8_t *v,
                                                             size_t v_panel_bytes, int nv, int mr,
                                                             bool v_unsigned, bool accumulate, int32_t *acc) {
    __m512i c[KN_QGEMM_MR][KN_QGEMM_NV];
    UNROLL
    for (int i = 0; i < mr; i++) {
        UNROLL
        for (int p = 0; p < nv; p++)
            c[i][p] = _mm512_setzero_si512();
    }
    for (int64_t g = 0; g < kq; g++) {
        __m512i vv[KN_QGEMM_NV];
        UNROLL
        for (int p = 0; p < nv; p++)
            vv[p] = _mm512_loadu_si512(v + (size_t)p * v_panel_bytes + g * 64);
        UNROLL
        for (int i = 0; i < mr; i++) {
            int32_t word;
            memcpy(&word, b + g * 4 * KN_QGEMM_MR + i * 4, 4);
            __m512i bb = _mm512_set1_epi32(word);
            UNROLL
            for (int p = 0; p < nv; p++)
                c[i][p] = v_unsigned ? _mm512_dpbusd_epi32(c[i][p], vv[p], bb)
                                     : _mm512_dpbusd_epi32(c[i][p], bb, vv[p]);
        }
    }
    UNROLL
    for (int i = 0; i < mr; i++) {
        UNROLL
        for (int p = 0; p < nv; p++) {
            int32_t *to = acc + i * KN_QGEMM_TILE_COLS + p * 16;
            _mm512_store_si512(to, accumulate ? _mm512_add_epi32(c[i][p], _mm512_load_si512(to)) : c[i][p]);
        }
    }
}

/* One loop per (panels, rows: 1, 2 or all, operand order), each keeping its accumulators in registers:
 * a Gemm at batch 1 has one row. */
#define MICRO_ROWS(nv, mr)                                                                                \
    (v_unsigned ? micro_tile(kq, b, v, v_panel_bytes, nv, mr, true, accumulate, acc)                     \
                : micro_tile(kq, b, v, v_panel_bytes, nv, mr, false, accumulate, acc))
#define MICRO_PANELS(nv)                                                                                  \
    (rows == 1 ? MICRO_ROWS(nv, 1) : rows == 2 ? MICRO_ROWS(nv, 2) : MICRO_ROWS(nv, KN_QGEMM_MR))

void kn_qgemm_micro_vnni(int64_t kq, const uint8_t *b, const uint8_t *v, size_t v_panel_bytes, int panels,
                         int rows, bool v_unsigned, bool accumulate, int32_t *acc) {
    switch (panels) {
    case 4: MICRO_PANELS(4); break;
    case 3: MICRO_PANELS(3); break;
    case 2: MICRO_PANELS(2); break;
    default: MICRO_PANELS(1); break;
    }
}

/* Each step is one IEEE operation of kn_quant_layer_level in the same order, so the bits are the
 * scalar reference's: cvtdq2ps and roundscale round to nearest even as (float) and nearbyintf do,
 * maxps(y, 0) is kn_quant_relu, and maxps(q, qmin) returns qmin for a NaN q as fmaxf does. */

/* The layer's constants as vectors, set once per block. */
typedef struct epi_consts {
    __m512 scale, zero_point, qmin, qmax, clip_lo, clip_hi, r_scale;
    __m512 low, high; /* qmin and qmax less the zero point */
    __m512i zero_point_i, r_zero_point;
    bool by_reciprocal; /* kn_qepilogue's */
    __m512 reciprocal, margin;
} epi_consts;

/* (float)levels * scale, rounded on its own: the asm barrier keeps the compiler (gnu11 contracts floating
 * point expressions) from fusing the product into the addition that follows, which would round once
 * where kn_quant_value and kn_quant_add_residual round twice. */
static inline __m512 residual_values(__m512i levels, __m512 scale) {
    __m512 product = _mm512_mul_ps(_mm512_cvtepi32_ps(levels), scale);
    __asm__("" : "+v"(product));
    return product;
}

/* The residual elements r[i, i + count) (r_type), count <= 16, under mask m as the values added:
 * (float)(level - zero) * scale for levels (a short tail of bytes is copied: AVX-512F has no byte
 * masked load). */
static inline __attribute__((always_inline)) __m512 residual16(int r_type, const epi_consts *k, const void *r, int i,
                                                               int count, __mmask16 m) {
    if (r_type == KN_QRES_F32)
        return _mm512_maskz_loadu_ps(m, (const float *)r + i);
    __m128i bytes;
    if (count == 16) {
        bytes = _mm_loadu_si128((const __m128i *)((const uint8_t *)r + i));
    } else {
        uint8_t tail[16] = {0};
        memcpy(tail, (const uint8_t *)r + i, (size_t)count);
        bytes = _mm_loadu_si128((const __m128i *)tail);
    }
    __m512i levels = r_type == KN_QRES_U8 ? _mm512_cvtepu8_epi32(bytes) : _mm512_cvtepi8_epi32(bytes);
    return residual_values(_mm512_sub_epi32(levels, k->r_zero_point), k->r_scale);
}

/* The levels of 16 values, as int32: with short_levels (kn_qepilogue_prepare), nearbyint(clamp(v / s,
 * q_lo, q_hi)) + z; else the steps of kn_quant_level one by one. A division keeps the divider busy for
 * about 10 cycles a vector, more than the rest of the epilogue: with by_reciprocal the product by 1 / s,
 * less and plus the margin, is rounded instead, and where both agree in every lane (all but about one
 * vector in a hundred) that is the level (kn_qepilogue.by_reciprocal); else the division decides. */
static inline __attribute__((always_inline)) __m512i levels16(const epi_consts *k, __m512 value, bool short_levels) {
    if (short_levels && k->by_reciprocal) {
        __m512 q = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(value, k->reciprocal), k->low), k->high);
        __m512i down = _mm512_cvt_roundps_epi32(_mm512_sub_ps(q, k->margin), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512i up = _mm512_cvt_roundps_epi32(_mm512_add_ps(q, k->margin), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        if (!_mm512_cmpneq_epi32_mask(down, up))
            return _mm512_add_epi32(down, k->zero_point_i);
    }
    if (short_levels) {
        __m512 q = _mm512_min_ps(_mm512_max_ps(_mm512_div_ps(value, k->scale), k->low), k->high);
        __m512i rounded = _mm512_cvt_roundps_epi32(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        return _mm512_add_epi32(rounded, k->zero_point_i);
    }
    __m512 q = _mm512_roundscale_ps(_mm512_div_ps(value, k->scale), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_add_ps(q, k->zero_point), k->qmin), k->qmax));
}

/* The first count (< 16) bytes of v at y, in pieces of 8, 4, 2 and 1: a masked vpmovdb to memory is
 * slow on some CPUs, and AVX-512F has no masked byte store. */
static inline void store_bytes(uint8_t *y, __m128i v, int count) {
    uint64_t part = (uint64_t)_mm_cvtsi128_si64(v);
    if (count & 8) {
        memcpy(y, &part, 8);
        y += 8;
        part = (uint64_t)_mm_extract_epi64(v, 1);
    }
    if (count & 4) {
        uint32_t word = (uint32_t)part;
        memcpy(y, &word, 4);
        y += 4;
        part >>= 32;
    }
    if (count & 2) {
        uint16_t half = (uint16_t)part;
        memcpy(y, &half, 2);
        y += 2;
        part >>= 16;
    }
    if (count & 1)
        *y = (uint8_t)part;
}

/* One row's outputs [i, i + count) (count <= 16, mask m): corr, mult and bias hold the row's channel, or
 * are loaded here when per_lane. The row's main loop calls it with count 16, so that whole vectors run
 * without the tail's tests. */
typedef struct epi_row {
    const int32_t *acc;
    const void *r;
    void *y;
    int64_t channel, spare; /* spare: bytes after the row that later rows write (a tail may store 16) */
    __m512i corr;
    __m512 mult, bias;
} epi_row;

static inline __attribute__((always_inline)) void epilogue_vector(const kn_qepilogue *e, const epi_consts *k,
                                                                  const kn_qepilogue_block *b, const epi_row *w,
                                                                  int i, int count, __mmask16 m, int y_type,
                                                                  int r_type, bool relu, bool clip,
                                                                  bool short_levels) {
    __m512i corr = w->corr;
    __m512 mult = w->mult, bias = w->bias;
    if (b->per_lane) {
        corr = _mm512_maskz_loadu_epi32(m, e->corr + w->channel + i);
        mult = _mm512_maskz_loadu_ps(m, e->mult + w->channel + i);
        bias = _mm512_maskz_loadu_ps(m, e->bias + w->channel + i);
    }
    // A whole vector's load, not a masked one: the sums were just stored, and a masked load
    // waits for the store to reach the cache rather than taking the data forwarded from it.
    __m512i sums = count == 16 || b->acc_whole ? _mm512_loadu_si512(w->acc + i) : _mm512_maskz_loadu_epi32(m, w->acc + i);
    __m512i a = _mm512_sub_epi32(sums, corr);
    if (y_type == KN_QOUT_I32) {
        _mm512_mask_storeu_epi32((int32_t *)w->y + i, m, a);
        return;
    }
    __m512 value = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), mult, bias);
    if (r_type != KN_QRES_NONE)
        value = _mm512_add_ps(value, residual16(r_type, k, w->r, i, count, m));
    if (relu)
        value = _mm512_max_ps(value, _mm512_setzero_ps());
    if (clip) /* lo > y ? lo : y, then hi < y ? hi : y: kn_quant_clip */
        value = _mm512_min_ps(k->clip_hi, _mm512_max_ps(k->clip_lo, value));
    if (y_type == KN_QOUT_F32) {
        _mm512_mask_storeu_ps((float *)w->y + i, m, value);
        return;
    }
    __m128i bytes = _mm512_cvtepi32_epi8(levels16(k, value, short_levels));
    if (count == 16 || (int64_t)(16 - count) <= w->spare)
        _mm_storeu_si128((__m128i *)((uint8_t *)w->y + i), bytes);
    else
        store_bytes((uint8_t *)w->y + i, bytes, count);
}

/* The block's rows with the epilogue's choices as arguments, so that each call with constants below
 * compiles to a loop without them. y_type is KN_QOUT_U8 for levels of either type (qmin and qmax in k
 * tell them apart). A row whose outputs are followed by bytes that later rows of the block write (rows
 * back to back, a depthwise plane's) stores a tail as 16 bytes when they fit. */
static inline __attribute__((always_inline)) void epilogue_block(const kn_qepilogue *e, const epi_consts *k,
                                                                 const kn_qepilogue_block *b, int y_type, int r_type,
                                                                 bool relu, bool clip, bool short_levels) {
    const size_t y_size = kn_qout_size(y_type), r_size = kn_qres_size(r_type);
    const int n = b->n, whole = n / 16 * 16;
    const bool run = b->ld == n && y_size == 1;
    for (int row = 0; row < b->rows; row++) {
        const int64_t channel = b->channel + row * b->channel_step;
        epi_row w = {
            .acc = b->acc + row * b->acc_ld, .r = r_size ? (const char *)b->r + (size_t)(row * b->ld) * r_size : NULL,
            .y = (char *)b->y + (size_t)(row * b->ld) * y_size, .channel = channel,
            .spare = run ? (int64_t)(b->rows - 1 - row) * n : 0, .corr = _mm512_set1_epi32(e->corr[channel]),
            .mult = _mm512_set1_ps(e->mult[channel]), .bias = _mm512_set1_ps(e->bias[channel]),
        };
        for (int i = 0; i < whole; i += 16)
            epilogue_vector(e, k, b, &w, i, 16, 0xffff, y_type, r_type, relu, clip, short_levels);
        if (whole < n)
            epilogue_vector(e, k, b, &w, whole, n - whole, (__mmask16)((1u << (n - whole)) - 1), y_type, r_type,
                            relu, clip, short_levels);
    }
}

static epi_consts epi_consts_of(const kn_qepilogue *e) {
    kn_quant_range range = kn_quant_range_of(8, e->y_type == KN_QOUT_I8);
    return (epi_consts){
        .by_reciprocal = e->by_reciprocal, .reciprocal = _mm512_set1_ps(e->reciprocal),
        .margin = _mm512_set1_ps(e->reciprocal_margin), .scale = _mm512_set1_ps(e->y_scale), .zero_point = _mm512_set1_ps((float)e->y_zero_point),
        .qmin = _mm512_set1_ps((float)range.qmin), .qmax = _mm512_set1_ps((float)range.qmax),
        .clip_lo = _mm512_set1_ps(e->clip_lo), .clip_hi = _mm512_set1_ps(e->clip_hi),
        .r_scale = _mm512_set1_ps(e->r_scale), .low = _mm512_set1_ps(e->q_lo), .high = _mm512_set1_ps(e->q_hi),
        .zero_point_i = _mm512_set1_epi32(e->y_zero_point), .r_zero_point = _mm512_set1_epi32(e->r_zero_point),
    };
}

void kn_qgemm_epilogue_avx512(const kn_qepilogue *e, const kn_qepilogue_block *b) {
    epi_consts k = epi_consts_of(e);
    // Activations folded into the bounds: a loop per residual type; the rest one with every choice.
    if (e->act_folded && e->r_type == KN_QRES_NONE)
        epilogue_block(e, &k, b, KN_QOUT_U8, KN_QRES_NONE, false, false, true);
    else if (e->act_folded && e->r_type == KN_QRES_U8)
        epilogue_block(e, &k, b, KN_QOUT_U8, KN_QRES_U8, false, false, true);
    else if (e->act_folded)
        epilogue_block(e, &k, b, KN_QOUT_U8, e->r_type, false, false, true);
    else
        epilogue_block(e, &k, b, e->y_type == KN_QOUT_U8 || e->y_type == KN_QOUT_I8 ? KN_QOUT_U8 : e->y_type,
                       e->r_type, e->relu, e->clip, e->short_levels);
}

void kn_qgemm_quantize_avx512(const float *x, int64_t n, float scale, int32_t zero_point, bool is_signed,
                              uint8_t *y) {
    kn_quant_range range = kn_quant_range_of(8, is_signed);
    __m512 s = _mm512_set1_ps(scale), zp = _mm512_set1_ps((float)zero_point);
    __m512 lo = _mm512_set1_ps((float)range.qmin), hi = _mm512_set1_ps((float)range.qmax);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 q = _mm512_roundscale_ps(_mm512_div_ps(_mm512_maskz_loadu_ps(m, x + i), s),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(q, zp), lo), hi);
        _mm512_mask_cvtepi32_storeu_epi8(y + i, m, _mm512_cvtps_epi32(q));
    }
}

/* ---- depthwise sums ----
 * vpdpbusd sums, in each 32-bit lane, 4 consecutive bytes times 4 weights. Taps whose inputs start
 * within 4 bytes of each other (a 3x3 kernel row at stride 1: x[o], x[o + 1], x[o + 2]; at stride 2 the
 * two taps of a row that share a column phase) make one group: one weight byte per tap at its offset,
 * 0 elsewhere. A 64-byte load at base + o0 + k gives lane j the 4 bytes of output o0 + 4j + k, so four
 * loads at o0 .. o0 + 3 cover 64 consecutive outputs, each group one vpdpbusd per load; the sums come out
 * with outputs dealt round-robin over the four accumulators and are put back in order before the store.
 * The products of u8 by s8 and their sums are exact, so the order of the taps does not matter. */

typedef struct dw_group {
    const uint8_t *base;
    int32_t weights; /* the weight of the tap at base + d in byte d */
    unsigned used;   /* bit d: byte d has a tap */
} dw_group;

/* The taps in groups of up to 4 within 4 bytes; returns the number of groups. A tap joins one of the
 * last two groups (a kernel row's taps come one after another, at stride 2 alternating between two
 * column phases), or starts a group. */
static int dw_groups_of(const uint8_t *const *src, const int32_t *w, int taps, dw_group *groups) {
    int n = 0;
    for (int t = 0; t < taps; t++) {
        int g = n > 2 ? n - 2 : 0;
        uintptr_t d = 0;
        for (; g < n; g++) { /* addresses compared as integers: the taps may lie in different buffers */
            d = (uintptr_t)src[t] - (uintptr_t)groups[g].base;
            if (d < 4 && !(groups[g].used & (1u << d)))
                break;
        }
        if (g == n) {
            groups[n++] = (dw_group){src[t], 0, 0};
            d = 0;
        }
        groups[g].weights = (int32_t)((uint32_t)groups[g].weights | ((uint32_t)(w[t] & 0xff) << (8 * d)));
        groups[g].used |= 1u << d;
    }
    return n;
}

/* The accumulators a[k], whose lane j holds output 4j + k of 64, as v[q] = outputs 16q .. 16q + 15 in
 * order. Within each 128-bit lane L a 4x4 transpose of dwords leaves u[m] with outputs 16L + 4m ..
 * 16L + 4m + 3; a 4x4 transpose of the 128-bit lanes then gives outputs 16L .. 16L + 15. */
static inline void dw_in_order(const __m512i a[4], __m512i v[4]) {
    __m512i t0 = _mm512_unpacklo_epi32(a[0], a[1]), t1 = _mm512_unpackhi_epi32(a[0], a[1]);
    __m512i t2 = _mm512_unpacklo_epi32(a[2], a[3]), t3 = _mm512_unpackhi_epi32(a[2], a[3]);
    __m512i u0 = _mm512_unpacklo_epi64(t0, t2), u1 = _mm512_unpackhi_epi64(t0, t2);
    __m512i u2 = _mm512_unpacklo_epi64(t1, t3), u3 = _mm512_unpackhi_epi64(t1, t3);
    __m512i s0 = _mm512_shuffle_i32x4(u0, u1, 0x44), s1 = _mm512_shuffle_i32x4(u2, u3, 0x44);
    __m512i s2 = _mm512_shuffle_i32x4(u0, u1, 0xee), s3 = _mm512_shuffle_i32x4(u2, u3, 0xee);
    v[0] = _mm512_shuffle_i32x4(s0, s1, 0x88);
    v[1] = _mm512_shuffle_i32x4(s0, s1, 0xdd);
    v[2] = _mm512_shuffle_i32x4(s2, s3, 0x88);
    v[3] = _mm512_shuffle_i32x4(s2, s3, 0xdd);
}

/* Lanes j < 16 with start + 4j < n, as a mask. */
static inline __mmask16 dw_lanes_below(int64_t start, int64_t n) {
    int64_t count = start >= n ? 0 : (n - start + 3) / 4;
    return count >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << count) - 1);
}

/* The sums of positions o .. o + 63 (those below n; the rest are 0) in order, as v[0..4). */
static inline void dw_sums64(const dw_group *groups, int count, int64_t o, int64_t n, __m512i v[4]) {
    __mmask16 load[4];
    for (int k = 0; k < 4; k++)
        load[k] = dw_lanes_below(o + k, n);
    __m512i a[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
    for (int g = 0; g < count; g++) {
        __m512i weights = _mm512_set1_epi32(groups[g].weights);
        for (int k = 0; k < 4; k++)
            a[k] = _mm512_dpbusd_epi32(a[k], _mm512_maskz_loadu_epi32(load[k], groups[g].base + o + k), weights);
    }
    dw_in_order(a, v);
}

/* The first count (<= 16) lanes, as a mask. */
static inline __mmask16 lanes_first(int64_t count) {
    return count >= 16 ? (__mmask16)0xffff : count <= 0 ? (__mmask16)0 : (__mmask16)((1u << count) - 1);
}

void kn_qgemm_depthwise_vnni(const uint8_t *const *src, const int32_t *w, int taps, int64_t n, int32_t *acc) {
    dw_group groups[KN_QGEMM_DW_MAX_TAPS];
    int count = dw_groups_of(src, w, taps, groups);
    for (int64_t o = 0; o < n; o += 64) {
        __m512i v[4];
        dw_sums64(groups, count, o, n, v);
        for (int q = 0; q < 4; q++)
            _mm512_mask_storeu_epi32(acc + o + 16 * q, lanes_first(n - o - 16 * q), v[q]);
    }
}

/* The plane in one pass: each vector of 16 positions goes through the epilogue as it comes from the sums,
 * and its outputs (the positions whose column is below cols) are packed together by vpcompressd and
 * stored after those before: 16 bytes, or the exact count at the plane's end. col holds each lane's
 * position modulo pitch. Levels only, with a zero point that levels16 takes short, and no f32 residual. */
static inline __attribute__((always_inline)) void dw_plane_levels(const kn_qepilogue *e, const epi_consts *k,
                                                                  const kn_qdw_plane *p, int r_type, bool relu,
                                                                  bool clip) {
    dw_group groups[KN_QGEMM_DW_MAX_TAPS];
    int count = dw_groups_of(p->src, p->w, p->taps, groups);
    const int64_t n = (p->rows - 1) * p->pitch + p->cols, outputs = p->rows * p->cols;
    __m512i corr = _mm512_set1_epi32(e->corr[p->channel]);
    __m512 mult = _mm512_set1_ps(e->mult[p->channel]), bias = _mm512_set1_ps(e->bias[p->channel]);
    const __m512i pitch = _mm512_set1_epi32((int32_t)p->pitch), cols = _mm512_set1_epi32((int32_t)p->cols);
    __m512i col = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    // Stepping 16 positions on, a lane's column passes pitch at most ceil(16 / pitch) times.
    const int wraps = (int)((16 + p->pitch - 1) / p->pitch);
    for (int w = 0; w < wraps; w++)
        col = _mm512_mask_sub_epi32(col, _mm512_cmpge_epi32_mask(col, pitch), col, pitch);
    uint8_t *y = p->y;
    const uint8_t *r = p->r;
    int64_t done = 0; /* outputs stored */
    for (int64_t o = 0; o < n; o += 64) {
        __m512i v[4];
        dw_sums64(groups, count, o, n, v);
        for (int q = 0; q < 4 && o + 16 * q < n; q++) {
            __mmask16 keep = _mm512_mask_cmplt_epi32_mask(lanes_first(n - o - 16 * q), col, cols);
            int kept = __builtin_popcount(keep);
            __m512 value = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(v[q], corr)), mult, bias);
            if (r_type != KN_QRES_NONE) { /* the residuals of the kept outputs, spread to their lanes */
                __m128i bytes;
                if (outputs - done >= 16) {
                    bytes = _mm_loadu_si128((const __m128i *)(r + done));
                } else {
                    uint8_t tail[16] = {0};
                    memcpy(tail, r + done, (size_t)kept);
                    bytes = _mm_loadu_si128((const __m128i *)tail);
                }
                __m512i levels = r_type == KN_QRES_U8 ? _mm512_cvtepu8_epi32(bytes) : _mm512_cvtepi8_epi32(bytes);
                levels = _mm512_maskz_expand_epi32(keep, _mm512_sub_epi32(levels, k->r_zero_point));
                value = _mm512_add_ps(value, residual_values(levels, k->r_scale));
            }
            if (relu)
                value = _mm512_max_ps(value, _mm512_setzero_ps());
            if (clip)
                value = _mm512_min_ps(k->clip_hi, _mm512_max_ps(k->clip_lo, value));
            __m512i levels = _mm512_maskz_compress_epi32(keep, levels16(k, value, true));
            __m128i bytes = _mm512_cvtepi32_epi8(levels);
            if (outputs - done >= 16)
                _mm_storeu_si128((__m128i *)(y + done), bytes);
            else
                store_bytes(y + done, bytes, kept);
            done += kept;
            col = _mm512_add_epi32(col, _mm512_set1_epi32(16));
            for (int w = 0; w < wraps; w++) /* a fixed count, not a data-dependent loop the CPU mispredicts */
                col = _mm512_mask_sub_epi32(col, _mm512_cmpge_epi32_mask(col, pitch), col, pitch);
        }
    }
}

bool kn_qgemm_depthwise_plane_vnni(const kn_qepilogue *e, const kn_qdw_plane *p) {
    if (!e->short_levels || e->r_type == KN_QRES_F32 || p->pitch > (1 << 30))
        return false;
    epi_consts k = epi_consts_of(e);
    if (e->act_folded && e->r_type == KN_QRES_NONE) /* MobileNet's */
        dw_plane_levels(e, &k, p, KN_QRES_NONE, false, false);
    else if (e->act_folded)
        dw_plane_levels(e, &k, p, e->r_type, false, false);
    else
        dw_plane_levels(e, &k, p, e->r_type, e->relu, e->clip);
    return true;
}
