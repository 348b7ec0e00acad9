#include "core/rng.h"

#include <math.h>

uint64_t kn_rng_below(kn_rng *r, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do
        x = kn_rng_next(r);
    while (x >= limit);
    return x % n;
}

float kn_rng_normal(kn_rng *r) {
    float u1 = kn_rng_uniform(r), u2 = kn_rng_uniform(r);
    if (u1 < 1e-12f)
        u1 = 1e-12f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530718f * u2);
}
