/* Codebook storage: x = centroids[index], with indices of 1, 2, 4 or 8 bits packed like affine levels,
 * and one table of k <= 2^bits centroids per tensor or per channel (an index of `axis`).
 *
 * The centroids are 1-D k-means of the values: k-means++ seeding (the first centroid and each next
 * one drawn with probability proportional to the squared distance to the nearest centroid so far,
 * from a seeded generator), then Lloyd iterations until no assignment changes. Everything runs in a
 * fixed order with double sums, so a seed gives the same codebook on every machine and thread count.
 * In 1-D the nearest centroid is found by binary search over the sorted centroids.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "format/storage_internal.h"

enum { LLOYD_MAX_ITERATIONS = 100 };

/* The index of the centroid nearest to v among k sorted ones; a tie goes to the lower. */
static int nearest(const float *centroids, int k, float v) {
    int lo = 0, hi = k; /* the first centroid >= v, by bisection */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (centroids[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == k)
        return k - 1;
    if (lo > 0 && (double)v - centroids[lo - 1] <= (double)centroids[lo] - v)
        return lo - 1;
    return lo;
}

static int compare_floats(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* k-means++ seeding of up to `k_max` centroids from v (n values); returns how many it found, fewer
 * when v has fewer distinct values. distance is (n) scratch. */
static int seed_centroids(const float *v, int64_t n, int k_max, kn_rng *rng, float *centroids, double *distance) {
    if (n == 0)
        return 0;
    centroids[0] = v[kn_rng_below(rng, (uint64_t)n)];
    int k = 1;
    for (int64_t i = 0; i < n; i++)
        distance[i] = ((double)v[i] - centroids[0]) * ((double)v[i] - centroids[0]);
    while (k < k_max) {
        double total = 0;
        for (int64_t i = 0; i < n; i++)
            total += distance[i];
        if (!(total > 0))
            break; /* every value is a centroid already */
        double target = (double)kn_rng_uniform(rng) * total, sum = 0;
        int64_t pick = -1;
        for (int64_t i = 0; i < n && pick < 0; i++) {
            sum += distance[i];
            if (distance[i] > 0 && sum > target)
                pick = i;
        }
        if (pick < 0) /* rounding left the target past the sum: the last value still away from all */
            for (int64_t i = n - 1; i >= 0 && pick < 0; i--)
                if (distance[i] > 0)
                    pick = i;
        float c = centroids[k++] = v[pick];
        for (int64_t i = 0; i < n; i++)
            distance[i] = fmin(distance[i], ((double)v[i] - c) * ((double)v[i] - c));
    }
    return k;
}

/* Lloyd iterations on sorted centroids; assignment (n) ends up the nearest centroid of each value.
 * sum (k) and count (k) are scratch. */
static void lloyd(const float *v, int64_t n, float *centroids, int k, uint8_t *assignment, double *sum,
                  int64_t *count) {
    for (int64_t i = 0; i < n; i++)
        assignment[i] = (uint8_t)nearest(centroids, k, v[i]);
    for (int iteration = 0; iteration < LLOYD_MAX_ITERATIONS; iteration++) {
        memset(sum, 0, sizeof *sum * (size_t)k);
        memset(count, 0, sizeof *count * (size_t)k);
        for (int64_t i = 0; i < n; i++) {
            sum[assignment[i]] += v[i];
            count[assignment[i]]++;
        }
        for (int j = 0; j < k; j++)
            if (count[j]) /* an empty cluster keeps its centroid */
                centroids[j] = (float)(sum[j] / (double)count[j]);
        qsort(centroids, (size_t)k, sizeof *centroids, compare_floats);
        bool changed = false;
        for (int64_t i = 0; i < n; i++) {
            uint8_t j = (uint8_t)nearest(centroids, k, v[i]);
            changed |= j != assignment[i];
            assignment[i] = j;
        }
        if (!changed)
            break;
    }
}

/* Elements of channel ch in flat order: (outer, channels, inner) with the channel axis in the middle. */
static int64_t channel_element(int64_t j, int64_t ch, int64_t channels, int64_t inner) {
    return (j / inner * channels + ch) * inner + j % inner;
}

kiln_status kn_codebook_encode(kn_arena *arena, const float *x, const kn_storage_spec *spec, kn_storage *s) {
    int64_t n = kn_shape_numel(&s->shape), bad = kn_first_non_finite(x, n);
    if (bad >= 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "element %lld is %f; codebooks hold finite values", (long long)bad,
                       (double)x[bad]);
    s->axis = spec->axis;
    s->bits = spec->bits;
    int64_t channels = s->axis >= 0 ? s->shape.d[s->axis] : 1;
    int64_t inner = s->axis >= 0 ? kn_shape_span(&s->shape, s->axis + 1, s->shape.ndim) : 1;
    int64_t per_channel = channels ? n / channels : 0;
    int k_max = 1 << s->bits;
    kn_packed_bytes(n, s->bits, &s->payload_bytes); /* <= the f32 bytes */
    uint8_t *payload = kn_arena_alloc(arena, s->payload_bytes ? s->payload_bytes : 1);
    float *table = malloc(sizeof(float) * (size_t)(channels ? channels : 1) * (size_t)k_max);
    int *found = malloc(sizeof(int) * (size_t)(channels ? channels : 1));
    float *values = malloc(sizeof(float) * (size_t)(per_channel ? per_channel : 1));
    double *distance = malloc(sizeof(double) * (size_t)(per_channel ? per_channel : 1));
    uint8_t *assignment = malloc((size_t)(n ? n : 1));
    double *sum = malloc(sizeof(double) * (size_t)k_max);
    int64_t *count = malloc(sizeof(int64_t) * (size_t)k_max);
    kiln_status st = KILN_OK;
    if (!payload || !table || !found || !values || !distance || !assignment || !sum || !count)
        st = kn_fail(KILN_ERR_NOMEM, "out of memory clustering %lld values", (long long)n);
    kn_rng rng = kn_rng_seeded(spec->seed);
    int k = 1;
    for (int64_t ch = 0; ch < channels && st == KILN_OK; ch++) {
        for (int64_t j = 0; j < per_channel; j++)
            values[j] = x[channel_element(j, ch, channels, inner)];
        float *centroids = table + ch * k_max;
        found[ch] = seed_centroids(values, per_channel, k_max, &rng, centroids, distance);
        if (found[ch] == 0)
            centroids[found[ch]++] = 0.0f; /* an empty channel still gets a (never used) centroid */
        qsort(centroids, (size_t)found[ch], sizeof *centroids, compare_floats);
        lloyd(values, per_channel, centroids, found[ch], assignment + ch * per_channel, sum, count);
        k = found[ch] > k ? found[ch] : k;
    }
    /* One table width for every channel: a channel with fewer centroids repeats its largest. */
    size_t table_floats = (size_t)(channels ? channels : 1) * (size_t)k;
    float *centroids = st == KILN_OK ? kn_arena_alloc(arena, sizeof(float) * table_floats) : NULL;
    if (st == KILN_OK && !centroids)
        st = kn_fail(KILN_ERR_NOMEM, "out of memory for %lld codebooks", (long long)channels);
    for (int64_t ch = 0; ch < channels && st == KILN_OK; ch++) {
        for (int j = 0; j < k; j++)
            centroids[ch * k + j] = table[ch * k_max + (j < found[ch] ? j : found[ch] - 1)];
        for (int64_t j = 0; j < per_channel; j++) {
            int64_t i = channel_element(j, ch, channels, inner);
            kn_packed_put(payload, i, s->bits, assignment[ch * per_channel + j]);
        }
    }
    free(table);
    free(found);
    free(values);
    free(distance);
    free(assignment);
    free(sum);
    free(count);
    if (st != KILN_OK)
        return st;
    s->payload = payload;
    s->centroids = centroids;
    s->k = k;
    return KILN_OK;
}

kiln_status kn_codebook_check(const kn_storage *s) {
    if (s->bits != 1 && s->bits != 2 && s->bits != 4 && s->bits != 8)
        return kn_fail(KILN_ERR_FORMAT, "codebook indices of %d bits; 1, 2, 4 or 8 are allowed", s->bits);
    if (s->block != 0)
        return kn_fail(KILN_ERR_FORMAT, "a codebook has block %lld", (long long)s->block);
    if (s->k < 1 || s->k > (1 << s->bits))
        return kn_fail(KILN_ERR_FORMAT, "%lld centroids for %d-bit indices; 1 to %d are allowed", (long long)s->k,
                       s->bits, 1 << s->bits);
    if (!s->centroids)
        return kn_fail(KILN_ERR_FORMAT, "a codebook without centroids");
    int64_t n = kn_shape_numel(&s->shape);
    size_t bytes;
    if (!kn_packed_bytes(n, s->bits, &bytes) || bytes != s->payload_bytes)
        return kn_fail(KILN_ERR_FORMAT, "%zu bytes of codebook indices; %lld indices need %zu", s->payload_bytes,
                       (long long)n, bytes);
    if (!kn_packed_padding_is_zero(s->payload, n, s->bits))
        return kn_fail(KILN_ERR_FORMAT, "nonzero padding bits after the last codebook index");
    for (int64_t i = 0; i < n; i++) {
        unsigned index = kn_packed_get(s->payload, i, s->bits);
        if (index >= (uint64_t)s->k)
            return kn_fail(KILN_ERR_FORMAT, "element %lld has codebook index %u; there are %lld centroids",
                           (long long)i, index, (long long)s->k);
    }
    return KILN_OK;
}

void kn_codebook_decode(const kn_storage *s, float *out) {
    int64_t n = kn_shape_numel(&s->shape), channels = s->axis >= 0 ? s->shape.d[s->axis] : 1;
    int64_t inner = s->axis >= 0 ? kn_shape_span(&s->shape, s->axis + 1, s->shape.ndim) : 1;
    for (int64_t i = 0; i < n; i++)
        out[i] = s->centroids[i / inner % channels * s->k + kn_packed_get(s->payload, i, s->bits)];
}
