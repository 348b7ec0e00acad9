/* The choice of kernels/vmath.h build for this CPU, and the threaded driver. */
#include "core/threads.h"
#include "kernels/vmath.h"

#include <stddef.h>

#include "core/cpu.h"

const kn_vmath *kn_vmath_for(kn_vmath_path path) {
    switch (path) {
    case KN_VMATH_GENERIC:
        return &kn_vmath_generic;
#ifdef KILN_HAVE_X86_KERNELS
    case KN_VMATH_AVX2:
        return kn_cpu()->avx2 ? &kn_vmath_avx2 : NULL;
    case KN_VMATH_AVX512:
        return kn_cpu()->avx512f ? &kn_vmath_avx512 : NULL;
#else
    case KN_VMATH_AVX2:
    case KN_VMATH_AVX512:
        return NULL;
#endif
    }
    return NULL;
}

const kn_vmath *kn_vmath_best(void) {
    const kn_vmath *v = kn_vmath_for(KN_VMATH_AVX512);
    if (!v)
        v = kn_vmath_for(KN_VMATH_AVX2);
    return v ? v : &kn_vmath_generic;
}

/* Below this many elements a call stays on one thread: waking the team costs more than it saves. */
#define KN_VMATH_PARALLEL_MIN KN_PARALLEL_MIN_COMPUTE
/* Spans of this many elements go to the threads whole. */
#define KN_VMATH_SPAN 4096

typedef struct vmath_spans {
    kn_vmath_fn fn;
    float *y;
    const float *x;
    int64_t n;
} vmath_spans;

static void vmath_span_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const vmath_spans *v = ctx;
    for (int64_t span = begin; span < end; span++) {
        int64_t start = span * KN_VMATH_SPAN;
        v->fn(v->y + start, v->x + start, v->n - start < KN_VMATH_SPAN ? v->n - start : KN_VMATH_SPAN);
    }
}

void kn_vmath_run(kn_vmath_fn fn, float *y, const float *x, int64_t n) {
    vmath_spans v = {fn, y, x, n};
    kn_parallel_range((n + KN_VMATH_SPAN - 1) / KN_VMATH_SPAN, kn_threads_for(n, KN_VMATH_PARALLEL_MIN),
                      vmath_span_range, &v);
}
