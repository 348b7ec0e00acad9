/* 8-bit integer matrix products with a requantizing epilogue: the kernels of the integer layers
 * (core/quant.h, "Integer layers"; ops/qlinear.c).
 *
 *     acc (R, L) = B (R, K) . V (K, L)        exact int32 sums of u8 x s8 products
 *     y[r][l]    = epilogue(acc[r][l], channel)
 *
 * One operand holds unsigned bytes (the activations' levels, shifted by 128 when they are i8: see
 * kn_qgemm_pack_*) and the other signed bytes (the weights' levels); `v_unsigned` says which. Both are
 * packed so that 4 consecutive k of one row or column sit side by side, the unit of vpdpbusd:
 *   V, the vector operand: panels of 16 columns, panel p = (Kp/4, 16, 4) bytes for columns
 *      [16p, 16p + 16); V[k][l] at ((l/16) * Kp/4 + k/4) * 64 + (l%16) * 4 + k%4.
 *   B, the broadcast operand: slivers of KN_QGEMM_MR rows, sliver s = (Kp/4, MR, 4) bytes;
 *      B[r][k] at ((r/MR) * Kp/4 + k/4) * 4 * MR + (r%MR) * 4 + k%4.
 * Kp is K rounded up to 4. The weights' operand is 0 wherever k >= K or its row/column is past the
 * edge, so the other operand's padding may hold anything.
 *
 * A convolution puts its weights in B (rows = output channels) and the unfolded image in V (columns =
 * output positions), so each output channel's row is contiguous (NCHW); a Gemm puts the activations in
 * B (rows = batch) and the weights in V (columns = output features). `channel_per_row` says where the
 * channel of an output is.
 *
 * Sums must fit int32: K * 255 * 128 < 2^31, i.e. K <= KN_QGEMM_MAX_K (the optimizer checks).
 */
#ifndef KN_QGEMM_H
#define KN_QGEMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KN_QGEMM_MR 4
/* Taps of one depthwise output kn_qgemm_depthwise takes. */
#define KN_QGEMM_DW_MAX_TAPS 64
/* Bytes past a depthwise tap's inputs that kn_qgemm_depthwise may read. */
#define KN_QGEMM_DW_SLACK 3
#define KN_QGEMM_MAX_K 65536

/* The requantizing epilogue for channel c (core/quant.h kn_quant_layer_level):
 *     y = fmaf((float)(acc - corr[c]), mult[c], bias[c]), plus the residual r when there is one
 *     (kn_quant_add_residual: r_type f32 as is, u8 or i8 levels as kn_quant_value(r, r_scale,
 *     r_zero_point)), through Relu when relu, through
 *     kn_quant_clip(y, clip_lo, clip_hi) when clip, then quantized to (y_scale, y_zero_point) as u8
 *     (y_type 1) or i8 (y_type 2), or stored as f32 (0); or, y_type 3, acc - corr[c] itself as int32
 *     (wrapping as int32 arithmetic does: ONNX's MatMulInteger), the rest unused.
 * corr[c] = z_x' * sum_k w[c][k] removes the activations' zero point (z_x' in the u8 representation). */
typedef struct kn_qepilogue {
    const int32_t *corr;
    const float *mult, *bias;
    bool relu;
    int y_type;
    float y_scale;
    int32_t y_zero_point;
    bool clip;
    float clip_lo, clip_hi;
    int r_type; /* KN_QRES_* */
    float r_scale;
    int32_t r_zero_point;
    /* Set by kn_qepilogue_prepare, which every epilogue passes through before it runs: */
    bool finite;       /* no value can be NaN */
    bool short_levels; /* levels out, |y_zero_point| <= KN_QEPI_SHORT_ZERO_POINT */
    bool act_folded;   /* Relu and Clip are in [q_lo, q_hi] */
    float q_lo, q_hi;  /* with short_levels: the bounds of v / y_scale before the rounding */
    /* by_reciprocal: short_levels, y_scale and reciprocal = 1 / y_scale normal, q_lo and q_hi at most 2^16
     * in size. Then v * reciprocal and v / y_scale, each clamped to [q_lo, q_hi], lie within
     * reciprocal_margin of each other (three roundings of 2^-24 relative; clamping does not widen a gap),
     * so where the product less the margin and the product plus it round to the same whole number, so
     * does the quotient: a vector kernel may skip the division there. */
    bool by_reciprocal;
    float reciprocal, reciprocal_margin;
} kn_qepilogue;

/* Zero points up to this size let the levels be nearbyint(clamp(v / s, qmin - z, qmax - z)) + z. */
#define KN_QEPI_SHORT_ZERO_POINT (1 << 20)

/* Sets the derived fields of e, whose channels are [0, channels):
 *   finite        no value can be NaN: every channel's mult and bias finite and at most 2^64 in size, and
 *                 the residual (if any) levels with r_scale at most 2^64, so fmaf(acc, mult, bias) plus the
 *                 residual stays finite for every int32 acc
 *   short_levels  kn_quant_level is clamp(nearbyint(v / s) + z, qmin, qmax) with the sum in f32; for small
 *                 z that is nearbyint(clamp(v / s, qmin - z, qmax - z)) + z: the bounds are whole numbers,
 *                 so clamping commutes with the rounding, and the f32 sum is exact wherever it is not
 *                 clamped away (a NaN v / s goes to the lower bound, as fmaxf takes q to qmin)
 *   act_folded    finite and short_levels: Relu and Clip clamp v to [lo, hi] when v is not NaN, and v / s is
 *                 non-decreasing in v, so they clamp v / s to [lo / s, hi / s]; that clamp and the levels'
 *                 make one clamp to [q_lo, q_hi] */
void kn_qepilogue_prepare(kn_qepilogue *e, int64_t channels);

enum { KN_QOUT_F32 = 0, KN_QOUT_U8 = 1, KN_QOUT_I8 = 2, KN_QOUT_I32 = 3 };

/* Bytes of one output of type y_type. */
static inline size_t kn_qout_size(int y_type) {
    return y_type == KN_QOUT_F32 || y_type == KN_QOUT_I32 ? 4 : 1;
}
enum { KN_QRES_NONE = 0, KN_QRES_F32, KN_QRES_U8, KN_QRES_I8 };

/* Bytes of one residual element of type r_type (0 for none). */
static inline size_t kn_qres_size(int r_type) {
    return r_type == KN_QRES_F32 ? sizeof(float) : r_type == KN_QRES_NONE ? 0 : 1;
}

typedef struct kn_qgemm_problem {
    int64_t R, L, K;
    const uint8_t *b; /* packed B slivers */
    const uint8_t *v; /* packed V panels */
    bool v_unsigned;  /* V holds the u8 operand (a convolution's image), else B does */
    bool channel_per_row;
    const kn_qepilogue *epi;
    void *y;         /* (R, L) outputs, rows ldy elements apart: u8, i8 or f32 as epi->y_type */
    int64_t ldy;
    const void *r;   /* the residual, laid out as y (as epi->r_type), or NULL */
} kn_qgemm_problem;

/* A kernel set: the micro-kernel and the epilogue of one ISA. */
typedef struct kn_qgemm_kernel kn_qgemm_kernel;

typedef enum kn_qgemm_path { KN_QGEMM_GENERIC, KN_QGEMM_AVX2, KN_QGEMM_AVX512_VNNI } kn_qgemm_path;

/* The kernels of one path, or NULL when this CPU (or KILN_ISA) does not have it. */
const kn_qgemm_kernel *kn_qgemm_kernel_for(kn_qgemm_path path);
/* The fastest path this CPU has. */
const kn_qgemm_kernel *kn_qgemm_kernel_best(void);
const char *kn_qgemm_kernel_name(const kn_qgemm_kernel *k);

/* Runs the product with the given kernels, on `threads` threads (1: the caller alone). The result
 * does not depend on the kernels or the thread count. */
void kn_qgemm_run(const kn_qgemm_kernel *k, const kn_qgemm_problem *p, int threads);

/* acc[0..n) = sum over taps t < taps of w[t] * src[t][i]: n sums of a depthwise layer whose taps' inputs
 * (u8, the kernels' form) lie contiguous; w in [-128, 127]. Exact int32. The kernels may read up to
 * KN_QGEMM_DW_SLACK bytes past each tap's run (src[t] + n), and multiply them by 0. */
void kn_qgemm_depthwise(const kn_qgemm_kernel *k, const uint8_t *const *src, const int32_t *w, int taps, int64_t n,
                        int32_t *acc);

/* even[k] = row[2k], odd[k] = row[2k + 1] for k < n: a framed row split into its two column phases
 * (a stride-2 depthwise layer's frame). */
void kn_qgemm_deal2(const kn_qgemm_kernel *k, const uint8_t *row, int64_t n, uint8_t *even, uint8_t *odd);

/* A block of rows for the epilogue: row i < rows has n sums at acc + i * acc_ld, and its residual (when
 * the epilogue has one) at r + i * ld and its outputs at y + i * ld, counted in elements of their types.
 * Row i's outputs are of channel channel + i * channel_step, plus the element's index in the row when
 * per_lane (a Gemm's columns). With acc_whole, the sums of a row may be read up to n rounded up to 16. */
typedef struct kn_qepilogue_block {
    const int32_t *acc;
    int64_t acc_ld;
    bool acc_whole; /* each row's sums may be read in whole vectors of 16, past n */
    int rows, n;
    int64_t channel, channel_step;
    bool per_lane;
    const void *r;
    void *y;
    int64_t ld;
} kn_qepilogue_block;

/* The epilogue of a block of sums computed outside kn_qgemm_run (a depthwise plane's rows). */
void kn_qgemm_epilogue_rows(const kn_qgemm_kernel *k, const kn_qepilogue *e, const kn_qepilogue_block *b);

/* One output plane of a depthwise layer: the sums of kn_qgemm_depthwise over the taps' runs of
 * (rows - 1) * pitch + cols positions, output (i, j) being the sum at position i * pitch + j (the others
 * fall between rows and are dropped), through the epilogue of `channel` into y (rows, cols), with the
 * residual r of y's layout when the epilogue has one. acc is a scratch of rows * pitch sums. */
typedef struct kn_qdw_plane {
    const uint8_t *const *src;
    const int32_t *w;
    int taps;
    int64_t rows, cols, pitch, channel;
    const void *r;
    void *y;
    int32_t *acc;
} kn_qdw_plane;

void kn_qgemm_depthwise_plane(const kn_qgemm_kernel *k, const kn_qepilogue *e, const kn_qdw_plane *p);

/* The 2x2 maximum at stride 2 of `rows` pairs of rows `in_w` bytes apart: y[i * cols + j] = the largest
 * of x[2i][2j], x[2i][2j + 1], x[2i + 1][2j] and x[2i + 1][2j + 1] (rows of x at x + r * in_w), for
 * i < rows, j < cols (2 * cols <= in_w), compared as i8 when is_signed, else as u8. Reads only those
 * bytes of x and writes only y[0, rows * cols). */
void kn_qgemm_maxpool2x2(const kn_qgemm_kernel *k, const uint8_t *x, int64_t rows, int64_t in_w, int64_t cols,
                         bool is_signed, uint8_t *y);

/* y[0..n) = QuantizeLinear of x[0..n) (kn_quant_level) with the given kernels' vector units: u8 levels,
 * or i8 levels as their two's-complement bytes. */
void kn_qgemm_quantize(const kn_qgemm_kernel *k, const float *x, int64_t n, float scale, int32_t zero_point,
                       bool is_signed, uint8_t *y);

/* One depth group of V from four rows of a column matrix: for each panel p < panels, the 64 bytes at
 * dst + p * stride get column l's bytes rows[0][16p + l] ... rows[3][16p + l] (each ^ flip) at l * 4.
 * rows hold 16 * panels bytes each. */
typedef void (*kn_qgemm_interleave_fn)(const uint8_t *const rows[4], int64_t panels, uint8_t flip, uint8_t *dst,
                                       size_t stride);
void kn_qgemm_interleave(const kn_qgemm_kernel *k, const uint8_t *const rows[4], int64_t panels, uint8_t flip,
                         uint8_t *dst, size_t stride);

/* Bytes of packed B for R rows and of packed V for L columns, both of depth K. */
size_t kn_qgemm_b_bytes(int64_t R, int64_t K);
size_t kn_qgemm_v_bytes(int64_t L, int64_t K);

/* Packs signed weights w (rows, K), rows ld apart, as B or as V (rows of w become V's columns);
 * padding is 0. */
void kn_qgemm_pack_weights_b(const int8_t *w, int64_t rows, int64_t K, int64_t ld, int8_t *dst);
void kn_qgemm_pack_weights_v(const int8_t *w, int64_t rows, int64_t K, int64_t ld, int8_t *dst);
/* Packs activation levels x (R, K), rows ld apart, as B, flipping the top bit when they are i8
 * (x + 128 as u8). */
void kn_qgemm_pack_rows_b(const uint8_t *x, int64_t R, int64_t K, int64_t ld, bool x_signed, uint8_t *dst);

/* Offset of V[k][l] in a packed V of depth K. */
static inline size_t kn_qgemm_v_index(int64_t k, int64_t l, int64_t K) {
    int64_t kq = (K + 3) / 4;
    return (size_t)((((l >> 4) * kq + (k >> 2)) << 6) + ((l & 15) << 2) + (k & 3));
}

#endif
