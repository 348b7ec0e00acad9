#include "ops/matmul_dims.h"

#include "kernels/gemm.h"
#include "ops/broadcast.h"
#include "ops/op.h"

/* Steps along Y's batch dims through the batch dims `own` (right-aligned against them) of one operand;
 * returns how many matrices the operand stores. */
static int64_t batch_steps(const kn_shape *own, const kn_shape *batch, int64_t *step) {
    int64_t stride = 1;
    for (int i = batch->ndim - 1; i >= 0; i--) {
        int k = i - (batch->ndim - own->ndim);
        int64_t dim = k >= 0 ? own->d[k] : 1;
        step[i] = dim == 1 ? 0 : stride;
        stride = kn_count_mul(stride, dim);
    }
    return stride;
}

kiln_status kn_matmul_dims_of(const kn_shape *a, const kn_shape *b, kn_matmul_dims *d) {
    char sa[96], sb[96];
    if (a->ndim < 1 || b->ndim < 1)
        return kn_fail(KILN_ERR_SHAPE, "A %s and B %s must have at least one dimension",
                       kn_shape_str(a, sa, sizeof sa), kn_shape_str(b, sb, sizeof sb));
    for (int i = 0; i < a->ndim; i++)
        if (a->d[i] < 0)
            return kn_fail(KILN_ERR_SHAPE, "A %s has a negative dimension", kn_shape_str(a, sa, sizeof sa));
    for (int i = 0; i < b->ndim; i++)
        if (b->d[i] < 0)
            return kn_fail(KILN_ERR_SHAPE, "B %s has a negative dimension", kn_shape_str(b, sb, sizeof sb));
    int a_matrix_rank = a->ndim == 1 ? 1 : 2, b_matrix_rank = b->ndim == 1 ? 1 : 2;
    d->M = a->ndim == 1 ? 1 : a->d[a->ndim - 2];
    d->K = a->d[a->ndim - 1];
    int64_t k_of_b = b->ndim == 1 ? b->d[0] : b->d[b->ndim - 2];
    d->N = b->ndim == 1 ? 1 : b->d[b->ndim - 1];
    if (k_of_b != d->K)
        return kn_fail(KILN_ERR_SHAPE, "A %s has %lld columns but B %s has %lld rows", kn_shape_str(a, sa, sizeof sa),
                       (long long)d->K, kn_shape_str(b, sb, sizeof sb), (long long)k_of_b);
    kn_shape a_batch = kn_shape_of(a->ndim - a_matrix_rank, a->d), b_batch = kn_shape_of(b->ndim - b_matrix_rank, b->d);
    if (kn_broadcast_shape(&a_batch, &b_batch, &d->batch) != KILN_OK)
        return kn_fail(KILN_ERR_SHAPE, "batch dimensions of A %s and B %s do not broadcast",
                       kn_shape_str(a, sa, sizeof sa), kn_shape_str(b, sb, sizeof sb));
    d->n_batch = 1;
    for (int i = 0; i < d->batch.ndim; i++)
        d->n_batch = kn_count_mul(d->n_batch, d->batch.d[i]); /* A and B broadcast past 2^62 */
    d->a_matrices = batch_steps(&a_batch, &d->batch, d->a_step);
    d->b_matrices = batch_steps(&b_batch, &d->batch, d->b_step);
    d->out = d->batch;
    if (a->ndim > 1)
        d->out.d[d->out.ndim++] = d->M;
    if (b->ndim > 1)
        d->out.d[d->out.ndim++] = d->N;
    return KILN_OK;
}

void kn_matmul_matrices(const kn_matmul_dims *d, int64_t index, int64_t *a, int64_t *b) {
    *a = *b = 0;
    for (int i = d->batch.ndim - 1; i >= 0; i--) {
        int64_t coord = index % d->batch.d[i];
        index /= d->batch.d[i];
        *a += coord * d->a_step[i];
        *b += coord * d->b_step[i];
    }
}

int64_t kn_matmul_flops(const kn_matmul_dims *d) {
    return kn_count_mul(2, kn_count_mul(kn_count_mul(d->n_batch, d->M), kn_count_mul(d->N, d->K)));
}

kiln_status kn_matmul_check_packed_b(const kn_value *p, int64_t K, int64_t N) {
    size_t floats = kn_sgemm_packed_b_floats(K, N);
    if (!p || p->dtype != KN_F32 || p->shape.ndim != 1 || floats == 0 || (size_t)p->shape.d[0] != floats)
        return kn_fail(KILN_ERR_SHAPE, "P must hold the %zu floats of op(B) packed", floats);
    return KILN_OK;
}
