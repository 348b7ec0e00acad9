#include "kernels/sparse.h"

#include "core/cpu.h"

static void sparse_lanes_generic(const float *a, int64_t K, const int64_t *offsets, const uint8_t *lane_col,
                                 const float *lane_val, const float *bias, float *y, int64_t N) {
    int64_t slabs = (K + KN_SPARSE_SLAB - 1) / KN_SPARSE_SLAB;
    for (int64_t g = 0; g * KN_SPARSE_LANES < N; g++) {
        float acc[KN_SPARSE_LANES] = {0};
        for (int64_t s = 0; s < slabs; s++) {
            const float *slab = a + s * KN_SPARSE_SLAB;
            for (int64_t t = offsets[g * slabs + s]; t < offsets[g * slabs + s + 1]; t++)
                for (int i = 0; i < KN_SPARSE_LANES; i++)
                    acc[i] += lane_val[t * KN_SPARSE_LANES + i] * slab[lane_col[t * KN_SPARSE_LANES + i]];
        }
        for (int64_t i = 0; i < KN_SPARSE_LANES && g * KN_SPARSE_LANES + i < N; i++)
            y[g * KN_SPARSE_LANES + i] = (bias ? bias[g * KN_SPARSE_LANES + i] : 0.0f) + acc[i];
    }
}

/* How many of a row's nonzeros from *p on (up to end) lie below column hi; advances *p past them. */
static int64_t row_count_below(const int32_t *col, int64_t *p, int64_t end, int64_t hi) {
    int64_t count = 0;
    for (; *p < end && col[*p] < hi; (*p)++)
        count++;
    return count;
}

int64_t kn_sparse_lanes_offsets(const int32_t *col, const int64_t *start, int64_t N, int64_t K, int64_t *offsets) {
    int64_t slabs = (K + KN_SPARSE_SLAB - 1) / KN_SPARSE_SLAB, groups = (N + KN_SPARSE_LANES - 1) / KN_SPARSE_LANES;
    int64_t steps = 0;
    for (int64_t g = 0; g < groups; g++) {
        int64_t p[KN_SPARSE_LANES]; // each row's next nonzero
        for (int i = 0; i < KN_SPARSE_LANES; i++)
            p[i] = g * KN_SPARSE_LANES + i < N ? start[g * KN_SPARSE_LANES + i] : 0;
        for (int64_t s = 0; s < slabs; s++) {
            offsets[g * slabs + s] = steps;
            int64_t most = 0;
            for (int i = 0; i < KN_SPARSE_LANES && g * KN_SPARSE_LANES + i < N; i++) {
                int64_t n = row_count_below(col, &p[i], start[g * KN_SPARSE_LANES + i + 1], (s + 1) * KN_SPARSE_SLAB);
                most = n > most ? n : most;
            }
            steps += most;
        }
    }
    offsets[groups * slabs] = steps;
    return steps;
}

void kn_sparse_lanes_fill(const float *values, const int32_t *col, const int64_t *start, int64_t N, int64_t K,
                          const int64_t *offsets, uint8_t *lane_col, float *lane_val) {
    int64_t slabs = (K + KN_SPARSE_SLAB - 1) / KN_SPARSE_SLAB;
    for (int64_t j = 0; j < N; j++) {
        int64_t g = j / KN_SPARSE_LANES, i = j % KN_SPARSE_LANES, p = start[j];
        for (int64_t s = 0; s < slabs; s++)
            for (int64_t t = offsets[g * slabs + s]; p < start[j + 1] && col[p] < (s + 1) * KN_SPARSE_SLAB; t++, p++) {
                lane_col[t * KN_SPARSE_LANES + i] = (uint8_t)(col[p] - s * KN_SPARSE_SLAB);
                lane_val[t * KN_SPARSE_LANES + i] = values[p];
            }
    }
}

static void sparse_rows_generic(const float *at, int64_t rows, const float *values, const int32_t *col, const int64_t *start,
                    const float *bias, float *y, int64_t N) {
    for (int64_t j = 0; j < N; j++) {
        float acc[KN_SPARSE_ROW_BLOCK] = {0}; // a whole block, so that the loop below is one vector wide
        for (int64_t p = start[j]; p < start[j + 1]; p++) {
            const float w = values[p], *a = at + (int64_t)col[p] * KN_SPARSE_ROW_BLOCK;
            for (int r = 0; r < KN_SPARSE_ROW_BLOCK; r++)
                acc[r] += w * a[r];
        }
        for (int64_t r = 0; r < rows; r++)
            y[r * N + j] = (bias ? bias[j] : 0.0f) + acc[r];
    }
}

const kn_sparse_kernels kn_sparse_generic = {.name = "generic", .lanes = sparse_lanes_generic, .rows = sparse_rows_generic};

const kn_sparse_kernels *kn_sparse_best(void) {
#ifdef KILN_HAVE_X86_KERNELS
    if (kn_cpu()->avx512f)
        return &kn_sparse_avx512;
#endif
    return &kn_sparse_generic;
}
