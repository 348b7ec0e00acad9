/* The dimensions of a numpy / ONNX matmul, shared by MatMul (matmul.c) and the integer products
 * QLinearMatMul and MatMulInteger (qlinear_onnx.c): A (..., M, K) @ B (..., K, N) -> Y (..., M, N).
 * A 1-D A is the row (1, K) and a 1-D B the column (K, 1); the added dimension is dropped from Y. The
 * leading (batch) dimensions broadcast against each other, numpy style. Empty dimensions are allowed
 * (Y is empty, or with K = 0 a product of nothing). */
#ifndef KN_OPS_MATMUL_DIMS_H
#define KN_OPS_MATMUL_DIMS_H

#include "core/status.h"
#include "core/graph.h"
#include "core/tensor.h"

typedef struct kn_matmul_dims {
    int64_t M, N, K;
    kn_shape batch;                                   /* Y's batch dims */
    int64_t n_batch;                                  /* product of batch's dims */
    /* Matrices of A / B between consecutive matrices along each batch dim of Y; 0 where that input is
     * broadcast along it. */
    int64_t a_step[KN_MAX_DIMS], b_step[KN_MAX_DIMS];
    int64_t a_matrices, b_matrices;                   /* matrices stored in A / B */
    kn_shape out;                                     /* Y */
} kn_matmul_dims;

/* d = the dimensions of A @ B; KILN_ERR_SHAPE naming both shapes when they do not multiply or broadcast. */
kiln_status kn_matmul_dims_of(const kn_shape *a, const kn_shape *b, kn_matmul_dims *d);

/* The indices of the matrices of A (*a) and B (*b) that make Y's matrix `index` (< n_batch). */
void kn_matmul_matrices(const kn_matmul_dims *d, int64_t index, int64_t *a, int64_t *b);

/* Multiply-adds of the product, 2 M N K per matrix of Y (saturating: kn_count_mul). */
int64_t kn_matmul_flops(const kn_matmul_dims *d);

/* OK when P, the packed-B input of GemmPacked / MatMulPacked, is the 1-D f32 tensor kn_sgemm_pack_b writes
 * for a (K, N) op(B); KILN_ERR_SHAPE otherwise. */
kiln_status kn_matmul_check_packed_b(const kn_value *p, int64_t K, int64_t N);

#endif
