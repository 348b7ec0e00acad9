/* Private to the GEMM kernels: the contracts between gemm.c (the driver: blocking, packing, threads)
 * and the per-ISA kernels, and a way for tests and benchmarks to run the driver with a chosen kernel. */
#ifndef KN_GEMM_INTERNAL_H
#define KN_GEMM_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

/* Micro-kernel: updates the m x n corner (m <= mr, n <= nr) of the C tile at c (row stride ldc):
 *     c[i * ldc + j] = alpha * sum_k a[k * mr + i] * b[k * ldb + j] + beta * c[i * ldc + j]
 * summing k = 0 .. kc-1 in an order that depends only on kc and m, so a tile always gets the same bits.
 * beta == 0 must not read c; nothing outside the corner is touched.
 *     a: a packed (kc, mr) sliver of op(A), rows past the matrix edge zero.
 *     b: kc rows of nr floats, ldb apart (any alignment): either a packed (kc, nr) sliver (ldb = nr,
 *        columns past the edge zero) or op(B) read in place. A kernel reads all nr columns of each row,
 *        so it may compute full tiles and store only the corner. */
typedef void (*kn_gemm_microkernel_fn)(int64_t kc, int m, int n, const float *a, const float *b,
                                       int64_t ldb, float alpha, float beta, float *c, int64_t ldc);

/* Direct kernel (optional): the micro-kernel's contract, the same bits, with op(A) read where it lies,
 * op(A)[i][k] = a[i * a_rs + k * a_cs], instead of from a packed sliver, and only the n columns of
 * each row of b read (b is never a packed sliver). For products small enough to sit in L1, where
 * packing A and allocating its buffer cost more than the product (attention's per-head matrices). */
typedef void (*kn_gemm_directkernel_fn)(int64_t kc, int m, int n, const float *a, int64_t a_rs, int64_t a_cs,
                                        const float *b, int64_t ldb, float alpha, float beta, float *c,
                                        int64_t ldc);

/* Dot kernel, for op(B) = B^T with few rows of op(A): both operands are then rows contiguous in k,
 * and C is a grid of dot products. Updates the m x n corner (m <= dot_mr, n <= dot_nr) at c:
 *     c[i * ldc + j] = alpha * sum_k a[i * lda + k] * b[j * ldb + k] + beta * c[i * ldc + j]
 * over k = 0 .. K-1, in an order that depends only on K. beta == 0 must not read c. Reads only
 * the m rows of a and n rows of b. */
typedef void (*kn_gemm_dotkernel_fn)(int64_t K, int m, int n, const float *a, int64_t lda, const float *b,
                                     int64_t ldb, float alpha, float beta, float *c, int64_t ldc);

/* Packs a (kc, width) sliver whose column x is src row x (rows ld apart, contiguous in k), zero past
 * `count` columns: dst[k * width + x] = src[x * ld + k]. This is how op(A) = A and op(B) = B^T are
 * packed; the transpose is worth ISA-specific code. */
typedef void (*kn_gemm_pack_fn)(const float *src, int64_t ld, int64_t kc, int count, int width, float *dst);

#define KN_GEMM_GENERIC_MR 4
#define KN_GEMM_GENERIC_NR 8
#define KN_GEMM_GENERIC_DOT_MR 1
#define KN_GEMM_GENERIC_DOT_NR 4
void kn_gemm_microkernel_generic(int64_t kc, int m, int n, const float *a, const float *b, int64_t ldb,
                                 float alpha, float beta, float *c, int64_t ldc);
void kn_gemm_pack_columns_generic(const float *src, int64_t ld, int64_t kc, int count, int width,
                                  float *dst);
void kn_gemm_dotkernel_generic(int64_t K, int m, int n, const float *a, int64_t lda, const float *b,
                               int64_t ldb, float alpha, float beta, float *c, int64_t ldc);

#ifdef KILN_HAVE_X86_KERNELS
/* Only call these after kn_cpu() reports avx2 / avx512f. */
#define KN_GEMM_AVX2_MR 6
#define KN_GEMM_AVX2_NR 16
#define KN_GEMM_AVX2_DOT_MR 2
#define KN_GEMM_AVX2_DOT_NR 4
void kn_gemm_microkernel_avx2(int64_t kc, int m, int n, const float *a, const float *b, int64_t ldb,
                              float alpha, float beta, float *c, int64_t ldc);
void kn_gemm_pack_columns_avx2(const float *src, int64_t ld, int64_t kc, int count, int width,
                               float *dst);
void kn_gemm_dotkernel_avx2(int64_t K, int m, int n, const float *a, int64_t lda, const float *b,
                            int64_t ldb, float alpha, float beta, float *c, int64_t ldc);

#define KN_GEMM_AVX512_MR 14
#define KN_GEMM_AVX512_NR 32
#define KN_GEMM_AVX512_DOT_MR 4
#define KN_GEMM_AVX512_DOT_NR 4
void kn_gemm_microkernel_avx512(int64_t kc, int m, int n, const float *a, const float *b, int64_t ldb,
                                float alpha, float beta, float *c, int64_t ldc);
void kn_gemm_pack_columns_avx512(const float *src, int64_t ld, int64_t kc, int count, int width,
                                 float *dst);
void kn_gemm_dotkernel_avx512(int64_t K, int m, int n, const float *a, int64_t lda, const float *b,
                              int64_t ldb, float alpha, float beta, float *c, int64_t ldc);
void kn_gemm_directkernel_avx512(int64_t kc, int m, int n, const float *a, int64_t a_rs, int64_t a_cs,
                                 const float *b, int64_t ldb, float alpha, float beta, float *c, int64_t ldc);
#endif

/* One ISA's kernels and the sizes the driver uses with them. Micro-kernel tile mr x nr; cache blocks:
 * a (mc, kc) block of packed A stays in L2 while a (kc, nr) sliver of B stays in L1; nc bounds the
 * packed B panel (kc, nc); mc and nc are multiples of mr and nr. Products with op(B) = B^T and at most
 * dot_max_rows rows, or fewer than nr columns, go to the dot kernel (tile dot_mr x dot_nr) instead:
 * packing B would cost more than the product, or most of each tile would be wasted. */
typedef struct kn_gemm_kernel {
    const char *name;
    int mr, nr;
    int64_t mc, kc, nc;
    kn_gemm_microkernel_fn micro;
    kn_gemm_pack_fn pack_columns;
    int dot_mr, dot_nr;
    int64_t dot_max_rows;
    kn_gemm_dotkernel_fn dot;
    kn_gemm_directkernel_fn direct; /* NULL: small products are packed like the rest */
} kn_gemm_kernel;

typedef enum kn_gemm_path { KN_GEMM_PATH_GENERIC, KN_GEMM_PATH_AVX2, KN_GEMM_PATH_AVX512 } kn_gemm_path;

/* The kernels for `path`, or NULL when this build or this CPU does not have them. */
const kn_gemm_kernel *kn_gemm_kernel_for(kn_gemm_path path);
/* The fastest kernels this CPU has (what kn_sgemm uses). */
const kn_gemm_kernel *kn_gemm_kernel_best(void);

/* The depth blocks (kc deep, the last perhaps shallower) a product over K uses with `kernel`: the
 * blocking of kn_sgemm_pack_a's layout, and the order in which every element of C sums its terms. */
int64_t kn_gemm_depth_block(const kn_gemm_kernel *kernel, int64_t K);

/* Whether kn_sgemm runs this product (on one thread) on the direct kernel; for tests. */
bool kn_sgemm_takes_direct(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K);

/* kn_sgemm with the given kernels (from kn_gemm_kernel_for, so the CPU supports them). */
void kn_sgemm_with(const kn_gemm_kernel *kernel, void *workspace, size_t workspace_bytes, bool trans_a,
                   bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                   const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

#endif
