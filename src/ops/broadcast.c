#include "core/threads.h"
#include "ops/broadcast.h"

/* Below this many output elements a walk stays on one thread: waking the team costs more than it
 * saves. */
#define KN_BROADCAST_PARALLEL_MIN KN_PARALLEL_MIN_MEMORY
/* Rows are processed in stretches of at most this many elements, so one long row (equal shapes, a
 * scalar operand) still spreads over the threads. */
#define KN_BROADCAST_CHUNK 8192

kiln_status kn_broadcast_shape(const kn_shape *a, const kn_shape *b, kn_shape *out) {
    int ndim = a->ndim > b->ndim ? a->ndim : b->ndim;
    kn_shape result = {.ndim = ndim};
    for (int k = 1; k <= ndim; k++) { /* k-th dim from the end */
        int64_t da = k <= a->ndim ? a->d[a->ndim - k] : 1;
        int64_t db = k <= b->ndim ? b->d[b->ndim - k] : 1;
        if (da != db && da != 1 && db != 1) {
            char sa[96], sb[96];
            return kn_fail(KILN_ERR_SHAPE,
                           "shapes %s and %s do not broadcast: dim %d from the end is %lld vs %lld",
                           kn_shape_str(a, sa, sizeof sa), kn_shape_str(b, sb, sizeof sb), k,
                           (long long)da, (long long)db);
        }
        result.d[ndim - k] = da == 1 ? db : da;
    }
    *out = result; /* out may be a or b */
    return KILN_OK;
}

/* Element strides of `x` along each dim of the broadcast shape `out`: 0 where x is broadcast. */
static void broadcast_strides(const kn_shape *x, const kn_shape *out, int64_t *strides) {
    int64_t stride = 1;
    for (int k = out->ndim - 1; k >= 0; k--) {
        int j = k - (out->ndim - x->ndim);
        if (j < 0 || x->d[j] == 1) {
            strides[k] = 0;
        } else {
            strides[k] = stride;
            stride *= x->d[j];
        }
    }
}

unsigned kn_broadcast_axes(const kn_shape *x, const kn_shape *out) {
    unsigned axes = 0;
    for (int k = 0; k < out->ndim; k++) {
        int j = k - (out->ndim - x->ndim);
        if ((j < 0 || x->d[j] == 1) && out->d[k] != 1)
            axes |= 1u << k;
    }
    return axes;
}

void kn_broadcast_plan_make(kn_broadcast_plan *p, int n, const kn_shape *const *shapes,
                            const kn_shape *out) {
    int64_t strides[KN_BROADCAST_MAX_OPERANDS][KN_MAX_DIMS];
    for (int i = 0; i < n; i++)
        broadcast_strides(shapes[i], out, strides[i]);
    p->n_operands = n;
    p->ndim = 0;
    p->numel = kn_shape_numel(out);
    for (int k = 0; k < out->ndim; k++) {
        if (out->d[k] == 1)
            continue;
        int last = p->ndim - 1;
        bool merge = last >= 0;
        for (int i = 0; i < n && merge; i++)
            merge = p->step[i][last] == strides[i][k] * out->d[k];
        if (merge) {
            p->d[last] *= out->d[k];
        } else {
            p->d[p->ndim] = out->d[k];
            p->ndim++;
        }
        for (int i = 0; i < n; i++)
            p->step[i][p->ndim - 1] = strides[i][k];
    }
    if (p->ndim == 0) { /* a single element */
        p->ndim = 1;
        p->d[0] = 1;
        for (int i = 0; i < n; i++)
            p->step[i][0] = 1;
    }
}

/* kn_broadcast_run's tasks: task t is stretch t % chunks_per_row of row t / chunks_per_row. */
typedef struct broadcast_tasks {
    const kn_broadcast_plan *p;
    kn_broadcast_row_fn fn;
    void *ctx;
    int64_t row_len, chunks_per_row;
} broadcast_tasks;

static void broadcast_task_range(void *ctx, int64_t first, int64_t end, int slot) {
    (void)slot;
    const broadcast_tasks *b = ctx;
    const kn_broadcast_plan *p = b->p;
    int last = p->ndim - 1;
    int64_t row_len = b->row_len, chunks_per_row = b->chunks_per_row;
    for (int64_t task = first; task < end; task++) {
        int64_t row_index = task / chunks_per_row;
        int64_t begin = (task % chunks_per_row) * KN_BROADCAST_CHUNK;
        kn_broadcast_row row = {.at = row_index * row_len + begin};
        row.n = row_len - begin < KN_BROADCAST_CHUNK ? row_len - begin : KN_BROADCAST_CHUNK;
        for (int i = 0; i < p->n_operands; i++) {
            row.step[i] = p->step[i][last];
            row.offset[i] = begin * row.step[i];
        }
        int64_t rest = row_index;
        for (int k = last - 1; k >= 0; k--) {
            int64_t index = rest % p->d[k];
            rest /= p->d[k];
            for (int i = 0; i < p->n_operands; i++)
                row.offset[i] += index * p->step[i][k];
        }
        b->fn(&row, b->ctx);
    }
}

void kn_broadcast_run(const kn_broadcast_plan *p, kn_broadcast_row_fn fn, void *ctx) {
    if (p->numel == 0)
        return;
    int64_t row_len = p->d[p->ndim - 1], n_rows = p->numel / row_len;
    broadcast_tasks b = {p, fn, ctx, row_len, (row_len + KN_BROADCAST_CHUNK - 1) / KN_BROADCAST_CHUNK};
    kn_parallel_range(n_rows * b.chunks_per_row, kn_threads_for(p->numel, KN_BROADCAST_PARALLEL_MIN),
                      broadcast_task_range, &b);
}
