/* kernels/vmath.h for AVX2 + FMA: eight floats per vector (CMake sets the flags of *_avx2.c). */
#include <immintrin.h>
#include <stdint.h>

#define VF __m256
#define VI __m256i
#define VM __m256
#define V_WIDTH 8
#define V_SET1(c) _mm256_set1_ps(c)
#define V_ISET1(c) _mm256_set1_epi32(c)
#define V_LOAD(p) _mm256_loadu_ps(p)
#define V_STORE(p, v) _mm256_storeu_ps(p, v)
#define V_ADD _mm256_add_ps
#define V_SUB _mm256_sub_ps
#define V_MUL _mm256_mul_ps
#define V_DIV _mm256_div_ps
#define V_FMA _mm256_fmadd_ps
#define V_FNMA _mm256_fnmadd_ps
#define V_AND _mm256_and_ps
#define V_OR _mm256_or_ps
#define V_LT(a, b) _mm256_cmp_ps(a, b, _CMP_LT_OQ)
#define V_GT(a, b) _mm256_cmp_ps(a, b, _CMP_GT_OQ)
#define V_SELECT(m, t, f) _mm256_blendv_ps(f, t, m)
#define V_AS_INT _mm256_castps_si256
#define V_AS_FLOAT _mm256_castsi256_ps
#define V_IADD _mm256_add_epi32
#define V_ISUB _mm256_sub_epi32
#define V_SRAI _mm256_srai_epi32
#define V_SRLI _mm256_srli_epi32
#define V_SLLI _mm256_slli_epi32
#define KN_VMATH_NAME(f) f##_avx2

#include "kernels/x86/vmath_simd.inc"

const kn_vmath kn_vmath_avx2 = {
    .name = "avx2",
    .exp = exp_avx2, .sigmoid = sigmoid_avx2, .tanh = tanh_avx2, .erf = erf_avx2,
    .gelu = gelu_avx2, .gelu_tanh = gelu_tanh_avx2, .silu = silu_avx2,
};
