/* Sums of float arrays in KN_SUM_LANES independent partial sums, which compilers vectorize (a single
 * running sum is one long dependency chain and does not). Lane k takes the elements i = k mod
 * KN_SUM_LANES of the whole blocks; the tail and then the lanes, in order, are added in double, so
 * the result does not depend on the thread count or the vector width.
 */
#ifndef KN_OPS_LANE_SUM_H
#define KN_OPS_LANE_SUM_H

#include <stdint.h>

enum { KN_SUM_LANES = 16 };

static inline double kn_lane_sum(const float *x, int64_t n) {
    float lane[KN_SUM_LANES] = {0};
    int64_t i = 0;
    for (; i + KN_SUM_LANES <= n; i += KN_SUM_LANES)
        for (int k = 0; k < KN_SUM_LANES; k++)
            lane[k] += x[i + k];
    double s = 0;
    for (; i < n; i++)
        s += x[i];
    for (int k = 0; k < KN_SUM_LANES; k++)
        s += lane[k];
    return s;
}

/* sum_i (x[i] - c)^2, in the same lanes and order as kn_lane_sum. */
static inline double kn_lane_sum_squares(const float *x, float c, int64_t n) {
    float lane[KN_SUM_LANES] = {0};
    int64_t i = 0;
    for (; i + KN_SUM_LANES <= n; i += KN_SUM_LANES)
        for (int k = 0; k < KN_SUM_LANES; k++)
            lane[k] += (x[i + k] - c) * (x[i + k] - c);
    double s = 0;
    for (; i < n; i++)
        s += ((double)x[i] - c) * ((double)x[i] - c);
    for (int k = 0; k < KN_SUM_LANES; k++)
        s += lane[k];
    return s;
}

/* sum_i x[i] y[i], in the same lanes and order as kn_lane_sum. */
static inline double kn_lane_dot(const float *x, const float *y, int64_t n) {
    float lane[KN_SUM_LANES] = {0};
    int64_t i = 0;
    for (; i + KN_SUM_LANES <= n; i += KN_SUM_LANES)
        for (int k = 0; k < KN_SUM_LANES; k++)
            lane[k] += x[i + k] * y[i + k];
    double s = 0;
    for (; i < n; i++)
        s += (double)x[i] * y[i];
    for (int k = 0; k < KN_SUM_LANES; k++)
        s += lane[k];
    return s;
}

#endif
