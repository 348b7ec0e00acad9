/* Sparse-weight products for SparseGemm (src/ops/sparse_gemm.c), y = W a + bias for a weight W (N, K)
 * that is mostly zeros, in two layouts:
 *
 * Compressed sparse rows, for a block of input rows: row j's nonzeros are values[start[j] ..
 * start[j + 1]) at columns col[...].
 *   rows:  y[r, j] = bias[j] + sum_p values[p] at[col[p], r], for rows <= KN_SPARSE_ROW_BLOCK input
 *          rows given transposed, at (K, KN_SPARSE_ROW_BLOCK) with zeros past `rows`; y is (rows, N)
 *
 * Lanes, for one input row (batch 1), where a gather per nonzero would cost more than the dense product:
 * W's rows in groups of KN_SPARSE_LANES, its columns in slabs of KN_SPARSE_SLAB. Group g and slab s own
 * steps offsets[g * slabs + s] .. offsets[g * slabs + s + 1); step t gives each row of the group one
 * (column within the slab, value) pair, lane_col[t][i] and lane_val[t][i], value 0 (column 0) where
 * that row has fewer nonzeros in the slab. A SIMD build keeps the slab of `a` in registers and permutes
 * it by lane_col: one multiply-add serves 16 rows.
 *   lanes: y[16 g + i] = bias + sum over slabs s, their steps t: lane_val[t][i] a[32 s + lane_col[t][i]]
 *   Each group is summed on its own, so a call on groups g0.. (offsets + g0 * slabs, bias and y from row
 *   16 g0, N the rows from there; the steps' indices stay absolute) gives those rows' very outputs: the
 *   threads share a layer that way.
 *
 * bias may be NULL (0). The generic builds are the reference; the AVX-512 builds sum in the same order
 * (fused multiply-adds aside), so they agree within float rounding (test_fast_paths).
 */
#ifndef KN_KERNELS_SPARSE_H
#define KN_KERNELS_SPARSE_H

#include <stdint.h>

enum {
    KN_SPARSE_ROW_BLOCK = 16, /* input rows the rows kernel takes at once */
    KN_SPARSE_LANES = 16,     /* weight rows per group in the lanes layout */
    KN_SPARSE_SLAB = 32       /* weight columns per slab in the lanes layout */
};

typedef struct kn_sparse_kernels {
    const char *name; /* "generic", "avx512" */
    void (*lanes)(const float *a, int64_t K, const int64_t *offsets, const uint8_t *lane_col, const float *lane_val,
                  const float *bias, float *y, int64_t N);
    void (*rows)(const float *at, int64_t rows, const float *values, const int32_t *col, const int64_t *start,
                 const float *bias, float *y, int64_t N);
} kn_sparse_kernels;

extern const kn_sparse_kernels kn_sparse_generic;
#ifdef KILN_HAVE_X86_KERNELS
/* Only after kn_cpu() reports avx512f. */
extern const kn_sparse_kernels kn_sparse_avx512;
#endif
/* The fastest build this CPU (and KILN_ISA) allows. */
const kn_sparse_kernels *kn_sparse_best(void);

/* The lanes layout of a CSR weight: fills offsets (groups * slabs + 1) and returns the number of steps;
 * then kn_sparse_lanes_fill writes lane_col and lane_val, (steps, KN_SPARSE_LANES) each, zeroed by the
 * caller. */
int64_t kn_sparse_lanes_offsets(const int32_t *col, const int64_t *start, int64_t N, int64_t K, int64_t *offsets);
void kn_sparse_lanes_fill(const float *values, const int32_t *col, const int64_t *start, int64_t N, int64_t K,
                          const int64_t *offsets, uint8_t *lane_col, float *lane_val);

#endif
