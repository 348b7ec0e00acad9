/* Products with a weight of packed 4-bit or 2-bit affine levels (format/storage.h's "affine i4" and
 * "affine i2"), read where they lie — in the model file's mapping — and turned into floats inside the
 * product, so that no f32 copy of the weight exists (LowbitGemm, src/ops/lowbit_gemm.c).
 *
 * The stored matrix S (rows, cols) holds rows * cols codes of `bits` bits in flat order, the first in
 * the least significant bits of its byte (docs/format.md, "Storage encodings"); element (r, c) is
 *     S[r][c] = (float)(level(r * cols + c) - zero_point[g]) * scale[g],
 * exactly what kn_storage_decode writes, with g its scale group: 0 (per tensor), r (axis 0), c (axis 1)
 * or r * ceil(cols / block) + c / block (per block along the rows). The product's weight W (K, N) is S
 * itself (a MatMul's B) or S^T (a Gemm with transB, S = (N, K)).
 *
 * kn_lowbit_matmul computes Y (M, N) = A (M, K) W + bias:
 *  - one or two rows of A (a layer at batch 1: a matrix-vector product, bound by reading the weight):
 *    each row reads every code once and multiplies it in registers. S = (N, K) takes dot products along
 *    its rows; S = (K, N) sweeps 32 columns at a time down the rows (an axpy per row of S). The sums
 *    are x * (level - zero point) added up and scaled once per group: the same terms as the f32
 *    product over the decoded weight in another order, so within float rounding of it;
 *  - more rows: a panel of W (about 512 KiB of columns) is decoded into the workspace and given to
 *    kn_sgemm, a panel at a time, so only that panel ever exists in f32. Decoding writes the very floats
 *    kn_storage_decode does.
 * A matrix in the sliver layout (below), which the optimizer writes where it is faster, goes to
 * kn_lowbit_matmul_slivers instead.
 *
 * The inner loops (kn_lowbit_kernels) need whole units of 8 bytes, each row of S starting on a byte
 * (cols * bits a multiple of 8; a row's last codes are padded to a unit) and one scale group per unit
 * (per row, per tensor, or blocks of a multiple of 32 along the rows for S = (N, K); per row, per
 * column, per tensor or such blocks for S = (K, N), whose last columns short of 32 go one by one). Other
 * layouts (scales per column of S = (N, K), odd blocks, rows that end inside a byte) take plain loops
 * over the decoded elements. The generic build is the reference: plain C, index order.
 */
#ifndef KN_KERNELS_LOWBIT_H
#define KN_KERNELS_LOWBIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    KN_LOWBIT_CHUNK = 32,   /* codes the vector builds unpack at once */
    KN_LOWBIT_DOT_ROWS = 4  /* rows of S one dot call takes, sharing the loads of x */
};

typedef struct kn_lowbit_matrix {
    const uint8_t *codes;     /* rows * cols codes, packed */
    const float *scale;       /* one per group, finite and > 0 */
    const int8_t *zero_point; /* one per group, in the level range; NULL: all 0 */
    int bits;                 /* 4 or 2: levels in [-8, 7] or [-2, 1] */
    int64_t rows, cols;       /* S */
    bool transposed;          /* W = S^T: S is (N, K) */
    int axis;                 /* -1 (per tensor or per block), 0 or 1 */
    int64_t block;            /* > 0 with axis -1: groups of `block` along each row */
    bool slivers;             /* codes in the sliver layout below (then S = W, 4 bits, axis -1 or 1; a
                                 block runs down the columns of W) */
    bool from_rows;           /* slivers of a Gemm's S = (N, K): where kn_sgemm would take dot products
                                 of A's rows and S's (kn_sgemm_packs_b), so does the product, for the
                                 bits of the f32 model */
} kn_lowbit_matrix;

/* Inside a chunk the vector builds take the codes in the order they fall out of the bytes: 8 bytes
 * widened to 8 lanes, then each lane's codes by shifts, so lane i of the j-th vector holds code
 * i * (8 / bits) + j of those 8 bytes. Position p of a chunk holds code kn_lowbit_order(bits, p); the
 * vectors the codes meet (x of a dot, the accumulators of a sweep) come in that order, which saves
 * putting the codes back in place.
 *
 * One ISA's inner loops over whole chunks of KN_LOWBIT_CHUNK codes, each chunk starting on a byte:
 *  dot:    for 4 rows r at once, n_runs runs j of run_units units of 8 bytes (half a chunk of 4-bit
 *          codes, a whole one of 2-bit) from codes[r], one scale group each:
 *          out[r] = sum_j scale[r][j] * sum over the run's codes i of xi[i] (level(code at position i)
 *          - zero_point[r][j]), zero_point[r] NULL for 0; xi_sums[j] is the sum of run j's xi
 *  sweep:  acc[p] (32) += sum over k < K of xs[k] * (level(k, order(p)) - zr[k] - zc[p]), code (k, j) at
 *          bit j * bits of codes + k * stride bytes; zr (K) and zc (32, positions) may be NULL (0)
 *  decode: out[i] (32) = (float)(level_i - z[i]) * s[i] for the chunk at `codes`, in code order
 * The vector dot and sweep multiply the unsigned fields u = code ^ sign (sign = 2^(bits - 1), level =
 * u - sign) and take (sign + zero point) times the sum of x off at the end: a mask and a shift per
 * field instead of a sign extension. That sum cancels part of the other, so their error is bounded by
 * the float rounding of sum |x| (|u| + sign + |zero point|) rather than sum |x| |level - zero point|. */
typedef struct kn_lowbit_kernels {
    const char *name; /* "generic", "avx2" */
    void (*dot)(const uint8_t *const codes[KN_LOWBIT_DOT_ROWS], int64_t n_runs, int64_t run_units, int bits,
                const int8_t *const zero_point[KN_LOWBIT_DOT_ROWS], const float *const scale[KN_LOWBIT_DOT_ROWS],
                const float *xi, const float *xi_sums, float out[KN_LOWBIT_DOT_ROWS]);
    void (*sweep)(const uint8_t *codes, int64_t stride, int64_t K, int bits, const float *xs, const int8_t *zr,
                  const int8_t *zc, float *acc);
    void (*decode)(const uint8_t *codes, int bits, const int8_t *z, const float *s, float *out);
} kn_lowbit_kernels;

extern const kn_lowbit_kernels kn_lowbit_generic;
#ifdef KILN_HAVE_X86_KERNELS
/* Only after kn_cpu() reports avx2. */
extern const kn_lowbit_kernels kn_lowbit_avx2;
#endif
/* The fastest build this CPU (and KILN_ISA) allows. */
const kn_lowbit_kernels *kn_lowbit_best(void);

/* The sliver layout: W (K, N) as ceil(N / 32) slivers of 32 columns, each K rows of 16 bytes; byte b
 * of row k holds u = level + 8 of W[k][32 s + b] in its low 4 bits and of W[k][32 s + 16 + b] in its
 * high ones (u = 8 past N). Unpacking a row is then a mask and a shift, with the columns in order: the
 * row of a GEMM micro-kernel's (kc, 32) sliver of B, or 32 accumulators of a matrix-vector product. The
 * optimizer writes it once (kn_lowbit_slivers_write) for 4-bit weights with a scale per column of W,
 * per tensor, or (S = (N, K) with blocks) per block of `block` rows of W in each column, then group
 * (k / block) * N + c: the storage's scales (and zero points) transposed to (blocks, N), so that a
 * sliver's 32 are adjacent (kn_lowbit_slivers_write_groups), when the GEMM's tile is 32 columns wide
 * (kn_lowbit_slivers_suit).
 *  sweep:  acc[c] (32) = sum over k < K of x[k] * u(k, c), the K rows of a sliver at `codes`
 *  decode: out[k * 32 + c] = (float)(u(k, c) - zu[c]) * s[c] for k < depth, zu = 8 + zero point:
 *          exactly kn_storage_decode's floats */
typedef struct kn_lowbit_sliver_kernels {
    const char *name; /* "generic", "avx512" */
    void (*sweep)(const uint8_t *codes, int64_t K, const float *x, float acc[32]);
    void (*decode)(const uint8_t *codes, int64_t depth, const int32_t zu[32], const float s[32], float *out);
} kn_lowbit_sliver_kernels;

extern const kn_lowbit_sliver_kernels kn_lowbit_slivers_generic;
#ifdef KILN_HAVE_X86_KERNELS
/* Only after kn_cpu() reports avx512f. */
extern const kn_lowbit_sliver_kernels kn_lowbit_slivers_avx512;
#endif
const kn_lowbit_sliver_kernels *kn_lowbit_slivers_best(void);

/* Whether w (read in place: slivers false) may be rewritten in the sliver layout, and that is the
 * faster layout on this CPU. */
bool kn_lowbit_slivers_suit(const kn_lowbit_matrix *w);
/* Bytes of the sliver layout of a (K, N) weight (SIZE_MAX on overflow). */
size_t kn_lowbit_sliver_bytes(int64_t K, int64_t N);
/* Writes w's codes in the sliver layout: out holds kn_lowbit_sliver_bytes(K, N); w's scales and zero
 * points serve as they are (a scale per column of W, or one). */
void kn_lowbit_slivers_write(const kn_lowbit_matrix *w, uint8_t *out);
/* For S = (N, K) with blocks: w's scales and zero points (zero_point NULL when w has none) as the sliver
 * layout reads them, (blocks, N) from the storage's (N, blocks). */
void kn_lowbit_slivers_write_groups(const kn_lowbit_matrix *w, float *scale, int8_t *zero_point);

/* kn_lowbit_matmul for a matrix in the sliver layout, with the sliver kernels k: one or two rows of A by
 * sweeps (x times the fields, the zero points and scales applied once per column), more by decoding each
 * (kc, 32) sliver of W into a thread's buffer for kn_sgemm's micro-kernel, so the same bits as kn_sgemm
 * over the decoded W; or, from_rows where kn_sgemm takes dot products over S = W^T, by decoding all of
 * a sliver and transposing it into 32 rows of S for kn_sgemm's dot kernel: the same bits again. */
void kn_lowbit_matmul_slivers(const kn_lowbit_sliver_kernels *k, const kn_lowbit_matrix *w, int64_t M,
                              const float *a, const float *bias, float *y, void *workspace);

/* The code at position p (< 32) of a chunk; xi = x with each chunk of 32 in that order, zeros past n
 * (ceil(n / 32) chunks). */
int kn_lowbit_order(int bits, int p);
void kn_lowbit_interleave(int bits, const float *x, int64_t n, float *xi);

/* The level of code i (sign-extended) and the scale group of element (r, c). */
int kn_lowbit_level(const uint8_t *codes, int64_t i, int bits);
int64_t kn_lowbit_group(const kn_lowbit_matrix *w, int64_t r, int64_t c);

/* Workspace bytes kn_lowbit_matmul needs for M rows of A at kiln's current thread count (SIZE_MAX on
 * overflow). */
size_t kn_lowbit_workspace(const kn_lowbit_matrix *w, int64_t M);

/* Y (M, N) = A (M, K) W + bias (N, or NULL) with the kernels k; workspace holds kn_lowbit_workspace
 * bytes, 64-byte aligned. Runs on kiln's thread count. */
void kn_lowbit_matmul(const kn_lowbit_kernels *k, const kn_lowbit_matrix *w, int64_t M, const float *a,
                      const float *bias, float *y, void *workspace);

#endif
