/* Private to the int8 kernels: the contract between qgemm.c (packing, tiles, threads) and each ISA's
 * micro-kernel and epilogue. */
#ifndef KN_QGEMM_INTERNAL_H
#define KN_QGEMM_INTERNAL_H

#include "kernels/qgemm.h"

/* Panels (of 16 columns) in one micro tile: a tile is KN_QGEMM_MR rows by 16 * KN_QGEMM_NV columns. */
#define KN_QGEMM_NV 4
#define KN_QGEMM_TILE_COLS (16 * KN_QGEMM_NV)

/* acc (MR, KN_QGEMM_TILE_COLS) = the tile of one B sliver (kq groups of MR x 4 bytes) by `panels` V
 * panels (kq groups of 64 bytes each, v_panel_bytes apart), or acc += it when `accumulate` (a product
 * whose depth runs in blocks: each block's b and v start at its first group); only the first `rows` rows
 * (1 to MR) are needed, and columns past the panels are not written. Exact int32 sums. */
typedef void (*kn_qgemm_micro_fn)(int64_t kq, const uint8_t *b, const uint8_t *v, size_t v_panel_bytes,
                                  int panels, int rows, bool v_unsigned, bool accumulate, int32_t *acc);

/* The epilogue of a block of rows (kn_qepilogue_block); y is u8, i8, f32 or i32 as e->y_type. */
typedef void (*kn_qgemm_epilogue_fn)(const kn_qepilogue *e, const kn_qepilogue_block *b);

/* y[0..n) = kn_quant_level(x[i], scale, zero_point, range) as bytes (i8 levels as their
 * two's-complement byte). */
typedef void (*kn_qgemm_quantize_fn)(const float *x, int64_t n, float scale, int32_t zero_point, bool is_signed,
                                     uint8_t *y);

/* kn_qgemm_depthwise, kn_qgemm_deal2. */
typedef void (*kn_qgemm_depthwise_fn)(const uint8_t *const *src, const int32_t *w, int taps, int64_t n, int32_t *acc);
typedef void (*kn_qgemm_deal2_fn)(const uint8_t *row, int64_t n, uint8_t *even, uint8_t *odd);
typedef void (*kn_qgemm_maxpool2x2_fn)(const uint8_t *x, int64_t rows, int64_t in_w, int64_t cols, bool is_signed,
                                       uint8_t *y);
/* kn_qgemm_depthwise_plane in one pass, for the epilogues it takes; false (nothing written) for the others. */
typedef bool (*kn_qgemm_depthwise_plane_fn)(const kn_qepilogue *e, const kn_qdw_plane *p);

struct kn_qgemm_kernel {
    const char *name;
    kn_qgemm_micro_fn micro;
    kn_qgemm_epilogue_fn epilogue;
    kn_qgemm_quantize_fn quantize;
    kn_qgemm_interleave_fn interleave;
    kn_qgemm_depthwise_fn depthwise;
    kn_qgemm_deal2_fn deal2;
    kn_qgemm_maxpool2x2_fn maxpool2x2;
    kn_qgemm_depthwise_plane_fn depthwise_plane; /* or NULL: sums, then the epilogue */
};

/* The reference epilogue, and that of one row: y[0..n) from acc[0..n), channel `channel` for every
 * element, or channel + i for element i when per_lane; the ISA epilogues use it for their tails. */
void kn_qgemm_epilogue_generic(const kn_qepilogue *e, const kn_qepilogue_block *b);
void kn_qgemm_epilogue_row_generic(const kn_qepilogue *e, const int32_t *acc, int n, int64_t channel, bool per_lane,
                                   const void *r, void *y);
void kn_qgemm_quantize_generic(const float *x, int64_t n, float scale, int32_t zero_point, bool is_signed,
                               uint8_t *y);
void kn_qgemm_quantize_avx2(const float *x, int64_t n, float scale, int32_t zero_point, bool is_signed,
                            uint8_t *y);
void kn_qgemm_quantize_avx512(const float *x, int64_t n, float scale, int32_t zero_point, bool is_signed,
                              uint8_t *y);
void kn_qgemm_depthwise_generic(const uint8_t *const *src, const int32_t *w, int taps, int64_t n, int32_t *acc);
void kn_qgemm_deal2_generic(const uint8_t *row, int64_t n, uint8_t *even, uint8_t *odd);
void kn_qgemm_deal2_avx2(const uint8_t *row, int64_t n, uint8_t *even, uint8_t *odd);
void kn_qgemm_maxpool2x2_generic(const uint8_t *x, int64_t rows, int64_t in_w, int64_t cols, bool is_signed,
                                 uint8_t *y);
void kn_qgemm_maxpool2x2_avx2(const uint8_t *x, int64_t rows, int64_t in_w, int64_t cols, bool is_signed,
                              uint8_t *y);
void kn_qgemm_depthwise_avx2(const uint8_t *const *src, const int32_t *w, int taps, int64_t n, int32_t *acc);
void kn_qgemm_interleave_generic(const uint8_t *const rows[4], int64_t panels, uint8_t flip, uint8_t *dst,
                                 size_t stride);
void kn_qgemm_interleave_avx2(const uint8_t *const rows[4], int64_t panels, uint8_t flip, uint8_t *dst,
                              size_t stride);
void kn_qgemm_micro_avx2(int64_t kq, const uint8_t *b, const uint8_t *v, size_t v_panel_bytes, int panels,
                         int rows, bool v_unsigned, bool accumulate, int32_t *acc);
void kn_qgemm_epilogue_avx2(const kn_qepilogue *e, const kn_qepilogue_block *b);
void kn_qgemm_micro_vnni(int64_t kq, const uint8_t *b, const uint8_t *v, size_t v_panel_bytes, int panels,
                         int rows, bool v_unsigned, bool accumulate, int32_t *acc);
bool kn_qgemm_depthwise_plane_vnni(const kn_qepilogue *e, const kn_qdw_plane *p);
void kn_qgemm_depthwise_vnni(const uint8_t *const *src, const int32_t *w, int taps, int64_t n, int32_t *acc);
void kn_qgemm_epilogue_avx512(const kn_qepilogue *e, const kn_qepilogue_block *b);

#endif
