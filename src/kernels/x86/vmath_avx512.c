/* kernels/vmath.h for AVX-512 F: sixteen floats per vector, comparisons into mask registers (CMake
 * sets the flags of *_avx512.c). AVX-512 F has no float and/or (that is DQ), so those go through the
 * integer unit. */
#include <immintrin.h>
#include <stdint.h>

#define VF __m512
#define VI __m512i
#define VM __mmask16
#define V_WIDTH 16
#define V_SET1(c) _mm512_set1_ps(c)
#define V_ISET1(c) _mm512_set1_epi32(c)
#define V_LOAD(p) _mm512_loadu_ps(p)
#define V_STORE(p, v) _mm512_storeu_ps(p, v)
#define V_ADD _mm512_add_ps
#define V_SUB _mm512_sub_ps
#define V_MUL _mm512_mul_ps
#define V_DIV _mm512_div_ps
#define V_FMA _mm512_fmadd_ps
#define V_FNMA _mm512_fnmadd_ps
#define V_AND(a, b) _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_castps_si512(b)))
#define V_OR(a, b) _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(a), _mm512_castps_si512(b)))
#define V_LT(a, b) _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ)
#define V_GT(a, b) _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ)
#define V_SELECT(m, t, f) _mm512_mask_blend_ps(m, f, t)
#define V_AS_INT _mm512_castps_si512
#define V_AS_FLOAT _mm512_castsi512_ps
#define V_IADD _mm512_add_epi32
#define V_ISUB _mm512_sub_epi32
#define V_SRAI _mm512_srai_epi32
#define V_SRLI _mm512_srli_epi32
#define V_SLLI _mm512_slli_epi32
#define KN_VMATH_NAME(f) f##_avx512

#include "kernels/x86/vmath_simd.inc"

const kn_vmath kn_vmath_avx512 = {
    .name = "avx512",
    .exp = exp_avx512, .sigmoid = sigmoid_avx512, .tanh = tanh_avx512, .erf = erf_avx512,
    .gelu = gelu_avx512, .gelu_tanh = gelu_tanh_avx512, .silu = silu_avx512,
};
