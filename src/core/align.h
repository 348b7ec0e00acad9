/* kiln's one memory alignment: every buffer a kernel reads (arena, plan, scratch, tape, weights)
 * starts at a multiple of KN_ALIGN bytes, a cache line and one AVX-512 vector. */
#ifndef KN_ALIGN_H
#define KN_ALIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define KN_ALIGN 64

/* n rounded up to a multiple of KN_ALIGN in *rounded; false when that overflows. */
static inline bool kn_align_up(size_t n, size_t *rounded) {
    if (n > SIZE_MAX - (KN_ALIGN - 1))
        return false;
    *rounded = (n + KN_ALIGN - 1) & ~(size_t)(KN_ALIGN - 1);
    return true;
}

/* At least `bytes` (0 counts as 1) starting at a multiple of KN_ALIGN, for free(); NULL when out of
 * memory or when the size overflows. aligned_alloc wants a multiple of the alignment: rounded here. */
static inline void *kn_aligned_alloc(size_t bytes) {
    size_t rounded;
    return kn_align_up(bytes ? bytes : 1, &rounded) ? aligned_alloc(KN_ALIGN, rounded) : NULL;
}

#endif
