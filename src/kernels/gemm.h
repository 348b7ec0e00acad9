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
#include <stdint.h>

void kn_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
              int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

void kn_sgemm_ref(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                  int64_t ldc);

#endif
