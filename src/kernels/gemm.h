/* Single-precision matrix multiply, row-major:
 *     C (M, N) = alpha * op(A) (M, K) @ op(B) (K, N) + beta * C
 * op(A) is A (M, K) with leading dimension lda, or A^T when trans_a (A stored (K, M)); likewise B.
 * beta == 0 overwrites C without reading it (C may hold NaN garbage).
 *
 * kn_sgemm picks the fastest kernel this CPU has (see kernels/x86) and runs on kiln's thread count;
 * kn_sgemm_ref is the plain-C oracle every fast kernel is tested against. */
#ifndef KN_GEMM_H
#define KN_GEMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

void kn_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
              int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* Bytes of workspace kn_sgemm_ws needs for this product at kiln's current thread count (0: none;
 * SIZE_MAX on overflow). */
size_t kn_sgemm_workspace(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K);

/* Whether kn_sgemm_ws computes this product, at kiln's current thread count, without touching any
 * workspace (the kernels that read A and B where they lie), so that such products can run side by
 * side on one shared (or no) workspace. kn_sgemm_workspace still sizes what the blocked path would
 * need, which the packed entry points below always take. */
bool kn_sgemm_uses_no_workspace(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K);

/* kn_sgemm with packing buffers taken from `workspace` (64-byte aligned, workspace_bytes long) instead
 * of allocated, so an inference run allocates nothing; a NULL or too small workspace falls back to
 * allocating. */
void kn_sgemm_ws(void *workspace, size_t workspace_bytes, bool trans_a, bool trans_b, int64_t M, int64_t N,
                 int64_t K, float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                 float *C, int64_t ldc);

/* A matrix multiplied many times (a layer's weights) can be packed once: kn_sgemm_pack_a writes op(A) (M, K)
 * — A (M, K), or A^T when trans_a (A stored (K, M)) — into kn_sgemm_packed_a_floats(M, K) floats (0 when
 * M or K is not positive, or on overflow) in the layout the kernels this CPU runs read, and
 * kn_sgemm_ws_packed is kn_sgemm_ws(trans_a, trans_b = false) reading that instead of packing A: the
 * same result, bit for bit. The layout depends on the CPU (and KILN_ISA), so packed data lives in memory
 * only, never in files. */
size_t kn_sgemm_packed_a_floats(int64_t M, int64_t K);
void kn_sgemm_pack_a(bool trans_a, int64_t M, int64_t K, const float *A, int64_t lda, float *packed);
/* kn_sgemm_ws_packed takes an epilogue (or NULL): work done on each tile of C as soon as the tile is
 * final, while it is in L1, instead of in a second pass over C (a convolution's bias and activation).
 * fn(ctx, i, j, m, n, c, ldc) gets the m x n tile at C[i][j] (c points at it, rows ldc apart); the tiles
 * cover C once each, in any order and on any thread, so fn must only touch its own tile. */
typedef struct kn_sgemm_epilogue {
    void (*fn)(const void *ctx, int64_t i, int64_t j, int m, int n, float *c, int64_t ldc);
    const void *ctx;
} kn_sgemm_epilogue;
void kn_sgemm_ws_packed(void *workspace, size_t workspace_bytes, const float *a_packed, int64_t M, int64_t N,
                        int64_t K, float alpha, const float *B, int64_t ldb, float beta, float *C, int64_t ldc,
                        const kn_sgemm_epilogue *epilogue);

/* Likewise a B multiplied many times: kn_sgemm_pack_b writes op(B) (K, N) — B (K, N), or B^T when
 * trans_b (B stored (N, K)) — into kn_sgemm_packed_b_floats(K, N) floats, and kn_sgemm_ws_packed_b is
 * kn_sgemm_ws with that op(B) (trans_b = false) reading it: the same result, bit for bit, as kn_sgemm_ws
 * with B (K, N) stored plainly. */
size_t kn_sgemm_packed_b_floats(int64_t K, int64_t N);
/* Whether kn_sgemm would pack op(B) (or read B in place) on its blocked path, where a B packed once can
 * stand in, rather than take dot products of A's rows and B^T's (trans_b with few rows of A, or fewer
 * columns than a tile), which read B^T as it is. */
bool kn_sgemm_packs_b(bool trans_b, int64_t M, int64_t N);
void kn_sgemm_pack_b(bool trans_b, int64_t K, int64_t N, const float *B, int64_t ldb, float *packed);
void kn_sgemm_ws_packed_b(void *workspace, size_t workspace_bytes, bool trans_a, int64_t M, int64_t N, int64_t K,
                          float alpha, const float *A, int64_t lda, const float *b_packed, float beta, float *C,
                          int64_t ldc);

void kn_sgemm_ref(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                  int64_t ldc);

#endif
