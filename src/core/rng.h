/* Seeded random numbers. Counter-based (splitmix64 of seed and counter) so that a stream can be
 * split across threads and still give the same numbers whatever the thread count. */
#ifndef KN_RNG_H
#define KN_RNG_H

#include <stdint.h>

typedef struct kn_rng {
    uint64_t state;
} kn_rng;

static inline uint64_t kn_mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static inline kn_rng kn_rng_seeded(uint64_t seed) {
    kn_rng r = {kn_mix64(seed)};
    return r;
}

static inline uint64_t kn_rng_next(kn_rng *r) {
    r->state += 0x9e3779b97f4a7c15ull;
    return kn_mix64(r->state);
}

/* Uniform in [0, 1) with 24 random bits. */
static inline float kn_rng_uniform(kn_rng *r) {
    return (float)(kn_rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

/* The uniform value at position `counter` of stream `key`, without state: for parallel loops. It is
 * the counter-th output of the SplitMix64 generator started at `key`, one mix per value. */
static inline float kn_hash_uniform(uint64_t key, uint64_t counter) {
    return (float)(kn_mix64(key + counter * 0x9e3779b97f4a7c15ull) >> 40) * (1.0f / 16777216.0f);
}

/* The uniform value at position `counter` of stream `key` with 32-bit integer arithmetic only, so
 * that loops over positions vectorize (Dropout's mask): the counter, offset by the key, goes through
 * the MurmurHash3 32-bit finalizer, a bijection, so the 2^32 positions of a stream take distinct
 * values. 24 random bits, as kn_rng_uniform. */
static inline float kn_hash32_uniform(uint64_t key, uint32_t counter) {
    uint32_t h = counter * 0x9e3779b9u + (uint32_t)(key ^ (key >> 32));
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return (float)(int32_t)(h >> 8) * (1.0f / 16777216.0f);
}

/* Uniform integer in [0, n) (n > 0), without modulo bias. */
uint64_t kn_rng_below(kn_rng *r, uint64_t n);
/* Standard normal (Box-Muller). */
float kn_rng_normal(kn_rng *r);

#endif
