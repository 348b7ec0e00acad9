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

static inline __attribute__((always_inline)) void micro_tile(int64_t kq, const uint8_t *b, const uint8_t *v,
                                                             size_t v_panel_bytes, int nv, int mr,
                                                             bool v_unsigned, int32_t *acc) {
    __m512i c[KN_QGEMM_MR][KN_QGEMM_NV];
    for (int i = 0; i < mr; i++)
        for (int p = 0; p < nv; p++)
            c[i][p] = _mm512_setzero_si512();
    for (int64_t g = 0; g < kq; g++) {
        __m512i vv[KN_QGEMM_NV];
        for (int p = 0; p < nv; p++)
            vv[p] = _mm512_loadu_si512(v + (size_t)p * v_panel_bytes + g * 64);
        for (int i = 0; i < mr; i++) {
            int32_t word;
            memcpy(&word, b + g * 4 * KN_QGEMM_MR + i * 4, 4);
            __m512i bb = _mm512_set1_epi32(word);
            for (int p = 0; p < nv; p++)
                c[i][p] = v_unsigned ? _mm512_dpbusd_epi32(c[i][p], vv[p], bb)
                                     : _mm512_dpbusd_epi32(c[i][p], bb, vv[p]);
        }
    }
    for (int i = 0; i < mr; i++)
        for (int p = 0; p < nv; p++)
            _mm512_store_si512(acc + i * KN_QGEMM_TILE_COLS + p * 16, c[i][p]);
}

/* One loop per (panels, rows: 1, 2 or all, operand order), each keeping its accumulators in registers:
 * a Gemm at batch 1 has one row. */
#define MICRO_ROWS(nv, mr)                                                                                \
    (v_unsigned ? micro_tile(kq, b, v, v_panel_bytes, nv, mr, true, acc)                                 \
                : micro_tile(kq, b, v, v_panel_bytes, nv, mr, false, acc))
#define MICRO_PANELS(nv)                                                                                  \
    (rows == 1 ? MICRO_ROWS(nv, 1) : rows == 2 ? MICRO_ROWS(nv, 2) : MICRO_ROWS(nv, KN_QGEMM_MR))

void kn_qgemm_micro_vnni(int64_t kq, const uint8_t *b, const uint8_t *v, size_t v_panel_bytes, int panels,
                         int rows, bool v_unsigned, int32_t *acc) {
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
/* The residual elements r[i, i + count) (e->r_type), count <= 16, under mask m as the values added:
 * (float)(level - zero) * scale for levels (a short tail of bytes is copied: AVX-512F has no byte
 * masked load). */
static inline __m512 residual16(const kn_qepilogue *e, const void *r, int i, int count, __mmask16 m) {
    if (e->r_type == KN_QRES_F32)
        return _mm512_maskz_loadu_ps(m, (const float *)r + i);
    __m128i bytes;
    if (count == 16) {
        bytes = _mm_loadu_si128((const __m128i *)((const uint8_t *)r + i));
    } else {
        uint8_t tail[16] = {0};
        memcpy(tail, (const uint8_t *)r + i, (size_t)count);
        bytes = _mm_loadu_si128((const __m128i *)tail);
    }
    __m512i levels = e->r_type == KN_QRES_U8 ? _mm512_cvtepu8_epi32(bytes) : _mm512_cvtepi8_epi32(bytes);
    levels = _mm512_sub_epi32(levels, _mm512_set1_epi32(e->r_zero_point));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(levels), _mm512_set1_ps(e->r_scale));
}

void kn_qgemm_epilogue_avx512(const kn_qepilogue *e, const int32_t *acc, int n, int64_t channel,
                              bool per_lane, const void *r, void *y) {
    kn_quant_range range = kn_quant_range_of(8, e->y_type == KN_QOUT_I8);
    __m512 scale = _mm512_set1_ps(e->y_scale), zp = _mm512_set1_ps((float)e->y_zero_point);
    __m512 lo = _mm512_set1_ps((float)range.qmin), hi = _mm512_set1_ps((float)range.qmax);
    __m512i corr = _mm512_set1_epi32(e->corr[channel]);
    __m512 mult = _mm512_set1_ps(e->mult[channel]), bias = _mm512_set1_ps(e->bias[channel]);
    __m512 clip_lo = _mm512_set1_ps(e->clip_lo), clip_hi = _mm512_set1_ps(e->clip_hi);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        if (per_lane) {
            corr = _mm512_maskz_loadu_epi32(m, e->corr + channel + i);
            mult = _mm512_maskz_loadu_ps(m, e->mult + channel + i);
            bias = _mm512_maskz_loadu_ps(m, e->bias + channel + i);
        }
        __m512i a = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(m, acc + i), corr);
        if (e->y_type == KN_QOUT_I32) {
            _mm512_mask_storeu_epi32((int32_t *)y + i, m, a);
            continue;
        }
        __m512 value = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), mult, bias);
        if (e->r_type != KN_QRES_NONE)
            value = _mm512_add_ps(value, residual16(e, r, i, n - i < 16 ? n - i : 16, m));
        if (e->relu)
            value = _mm512_max_ps(value, _mm512_setzero_ps());
        if (e->clip) /* lo > y ? lo : y, then hi < y ? hi : y: kn_quant_clip */
            value = _mm512_min_ps(clip_hi, _mm512_max_ps(clip_lo, value));
        if (e->y_type == KN_QOUT_F32) {
            _mm512_mask_storeu_ps((float *)y + i, m, value);
            continue;
        }
        __m512 q = _mm512_roundscale_ps(_mm512_div_ps(value, scale), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(q, zp), lo), hi);
        _mm512_mask_cvtepi32_storeu_epi8((uint8_t *)y + i, m, _mm512_cvtps_epi32(q));
    }
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
