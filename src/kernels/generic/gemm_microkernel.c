/* Portable kernels for CPUs without AVX2, written so the compiler can vectorize them for whatever the
 * baseline ISA offers (SSE2 on x86-64, NEON on arm64). */
#include <string.h>

#include "kernels/gemm_internal.h"

#define MR KN_GEMM_GENERIC_MR
#define NR KN_GEMM_GENERIC_NR

/* Computes the full MR x NR tile (short slivers are zero-padded, or B has nr readable columns) and
 * stores the m x n corner. */
void kn_gemm_microkernel_generic(int64_t kc, int m, int n, const float *a, const float *b, int64_t ldb,
                                 float alpha, float beta, float *c, int64_t ldc) {
    float acc[MR][NR] = {{0.0f}};
    for (int64_t k = 0; k < kc; k++) {
        const float *a_col = a + k * MR, *b_row = b + k * ldb;
        for (int i = 0; i < MR; i++)
            for (int j = 0; j < NR; j++)
                acc[i][j] += a_col[i] * b_row[j];
    }
    for (int i = 0; i < m; i++) {
        float *c_row = c + i * ldc;
        if (beta == 0.0f) {
            for (int j = 0; j < n; j++)
                c_row[j] = alpha * acc[i][j];
        } else {
            for (int j = 0; j < n; j++)
                c_row[j] = alpha * acc[i][j] + beta * c_row[j];
        }
    }
}

/* Rows are read four at a time so that each step stores four adjacent floats. */
void kn_gemm_pack_columns_generic(const float *src, int64_t ld, int64_t kc, int count, int width,
                                  float *dst) {
    if (count < width)
        memset(dst, 0, (size_t)(kc * width) * sizeof(float));
    int x = 0;
    for (; x + 4 <= count; x += 4) {
        const float *s0 = src + x * ld, *s1 = s0 + ld, *s2 = s1 + ld, *s3 = s2 + ld;
        float *d = dst + x;
        for (int64_t k = 0; k < kc; k++, d += width) {
            d[0] = s0[k];
            d[1] = s1[k];
            d[2] = s2[k];
            d[3] = s3[k];
        }
    }
    for (; x < count; x++) {
        const float *s = src + x * ld;
        float *d = dst + x;
        for (int64_t k = 0; k < kc; k++, d += width)
            *d = s[k];
    }
}

/* Sum of x[k] * y[k] in DOT_LANES independent partial sums (lane l takes k = l mod DOT_LANES), which
 * vectorize without reassociating anything, folded in lane order at the end. */
#define DOT_LANES 8
static float dot(int64_t K, const float *x, const float *y) {
    float lanes[DOT_LANES] = {0.0f};
    int64_t k = 0;
    for (; k + DOT_LANES <= K; k += DOT_LANES)
        for (int l = 0; l < DOT_LANES; l++)
            lanes[l] += x[k + l] * y[k + l];
    for (int l = 0; k + l < K; l++)
        lanes[l] += x[k + l] * y[k + l];
    float sum = 0.0f;
    for (int l = 0; l < DOT_LANES; l++)
        sum += lanes[l];
    return sum;
}

void kn_gemm_dotkernel_generic(int64_t K, int m, int n, const float *a, int64_t lda, const float *b,
                               int64_t ldb, float alpha, float beta, float *c, int64_t ldc) {
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
            float sum = dot(K, a + i * lda, b + j * ldb);
            float *c_ij = c + i * ldc + j;
            *c_ij = beta == 0.0f ? alpha * sum : alpha * sum + beta * *c_ij;
        }
    }
}
