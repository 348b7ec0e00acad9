/* ReduceMean, ReduceSum, ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2, ReduceSumSquare,
 * ReduceLogSum, ReduceLogSumExp, and the sum over axes that
 * ReduceMean and ReduceSum share with the broadcasting binary ops (ops/reduce.h).
 *
 * Every op takes its axes from the attribute `axes` (ReduceSum before opset 13, the others before
 * 18) or from an optional i64 input 1 whose data shape inference can read (a constant). keepdims
 * (default 1) keeps the reduced dims as 1. No axes means every axis, unless
 * noop_with_empty_axes = 1, which makes the op the identity. Mean-pooling a sequence is (N, T, D)
 * axes=[1] keepdims=0 -> (N, D).
 *
 * ReduceL1 (sum of |x|), ReduceSumSquare, ReduceLogSum (ln of the sum) and ReduceLogSumExp
 * (ln sum e^x, shifted by the max) are forward only, like ReduceProd and ReduceL2.
 *
 * Dtypes: f32 and f64 (computed in double); ReduceMax and ReduceMin also the integers. An empty
 * reduction gives the identity
 * of the operation (sum 0, product 1, max -inf or the dtype's lowest value, min +inf or its
 * highest, L2 0), except the mean, which is NaN as in numpy and PyTorch.
 *
 * Gradients: ReduceMean and ReduceSum spread dY back over the reduced axes; ReduceMax and ReduceMin
 * send each output's dY whole to the first element (in memory order) equal to the output, where
 * PyTorch's amax splits it evenly between ties. ReduceProd and ReduceL2 are forward only.
 */
#include "core/threads.h"
#include "ops/reduce.h"

#include <math.h>
#include <string.h>

#include "core/status.h"
#include "ops/elements.h"
#include "ops/op.h"

/* Below this many elements a loop stays on one thread: waking the team costs more than it saves. */
#define KN_REDUCE_PARALLEL_MIN KN_PARALLEL_MIN_MEMORY
/* The outermost run is cut in slices of about this many elements, one parallel task each... */
#define KN_REDUCE_SLICE_ELEMENTS 16384
/* ...and in at most this many, which bounds the partial-sum buffers. */
#define KN_REDUCE_MAX_SLICES 64

/* x seen as a few "runs": dims of size 1 dropped and neighbours merged when both are summed or both
 * kept, so runs alternate between kept and summed. Sums are taken over whole runs, the walk is in x's
 * memory order, and the split into slices depends on the shape only (never on the thread count). */
typedef struct reduce_plan {
    int ndim;                    /* number of runs, >= 1 */
    int64_t d[KN_MAX_DIMS];      /* run lengths */
    bool summed[KN_MAX_DIMS];
    int64_t x_step[KN_MAX_DIMS]; /* x is contiguous: a run's step is the product of the later runs */
    int64_t y_step[KN_MAX_DIMS]; /* steps in y; 0 for summed runs */
    int64_t x_numel, y_numel;
    int64_t n_slices;            /* slices of the outermost run */
    int64_t n_partials;          /* partial-sum buffers: one per slice when the outermost run is summed
                                    (slices then add into the same y elements), else one */
} reduce_plan;

static void reduce_plan_make(reduce_plan *p, const kn_shape *x_shape, unsigned axes) {
    memset(p, 0, sizeof *p);
    for (int k = 0; k < x_shape->ndim; k++) {
        if (x_shape->d[k] == 1)
            continue;
        bool summed = (axes >> k) & 1u;
        if (p->ndim > 0 && p->summed[p->ndim - 1] == summed) {
            p->d[p->ndim - 1] *= x_shape->d[k];
        } else {
            p->d[p->ndim] = x_shape->d[k];
            p->summed[p->ndim] = summed;
            p->ndim++;
        }
    }
    if (p->ndim == 0) { /* a single element */
        p->ndim = 1;
        p->d[0] = 1;
    }
    int64_t x_step = 1, y_step = 1;
    for (int k = p->ndim - 1; k >= 0; k--) {
        p->x_step[k] = x_step;
        x_step *= p->d[k];
        p->y_step[k] = p->summed[k] ? 0 : y_step;
        if (!p->summed[k])
            y_step *= p->d[k];
    }
    p->x_numel = x_step;
    p->y_numel = y_step;
    int64_t slices = p->x_numel / KN_REDUCE_SLICE_ELEMENTS;
    if (slices > KN_REDUCE_MAX_SLICES)
        slices = KN_REDUCE_MAX_SLICES;
    if (slices > p->d[0])
        slices = p->d[0];
    p->n_slices = slices > 1 ? slices : 1;
    p->n_partials = p->summed[0] ? p->n_slices : 1;
}

/* True when nothing is summed: y is x, scaled. */
static bool reduce_plan_is_copy(const reduce_plan *p) { return p->ndim == 1 && !p->summed[0]; }

size_t kn_reduce_sum_workspace(const kn_shape *x_shape, unsigned axes) {
    reduce_plan p;
    reduce_plan_make(&p, x_shape, axes);
    if (p.x_numel == 0 || reduce_plan_is_copy(&p))
        return 0;
    /* n_partials * y_numel <= x_numel, the size of an existing tensor: no overflow */
    return (size_t)(p.n_partials * p.y_numel) * sizeof(float);
}

/* Sum of x[0..n) in 16 interleaved partial sums, added together at the end: the loop vectorises and
 * is not held up by the latency of one running sum, and the order is still fixed. */
static float sum_contiguous(const float *x, int64_t n) {
    enum { LANES = 16 };
    float lanes[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++)
            lanes[l] += x[i + l];
    for (int l = 0; i < n; i++, l++)
        lanes[l] += x[i];
    float s = 0.0f;
    for (int l = 0; l < LANES; l++)
        s += lanes[l];
    return s;
}

/* acc += the sums of x over the summed runs from run k on, for indices [begin, end) of run k.
 * x and acc point at index 0 of run k. */
static void sum_runs(const reduce_plan *p, int k, const float *x, float *acc, int64_t begin,
                     int64_t end) {
    if (k == p->ndim - 1) { /* the innermost run is contiguous in x */
        if (p->summed[k]) {
            acc[0] += sum_contiguous(x + begin, end - begin);
        } else {
            for (int64_t i = begin; i < end; i++)
                acc[i] += x[i];
        }
        return;
    }
    for (int64_t i = begin; i < end; i++)
        sum_runs(p, k + 1, x + i * p->x_step[k], acc + i * p->y_step[k], 0, p->d[k + 1]);
}

/* One sum's loops: y = (store ? 0 : y) + scale * the sums of x, through the partial buffers. */
typedef struct reduce_sum_run {
    const reduce_plan *p;
    const float *x;
    float *y, *partials; /* partials: (n_partials, y_numel) */
    float scale;
    bool store;
} reduce_sum_run;

/* Nothing summed: elements [begin, end) of y from x. */
static void reduce_copy_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const reduce_sum_run *r = ctx;
    const float *x = r->x;
    float *y = r->y;
    const float scale = r->scale; /* locals: a store to y could otherwise alias them */
    const bool store = r->store;
    for (int64_t i = begin; i < end; i++)
        y[i] = (store ? 0.0f : y[i]) + scale * x[i];
}

/* Slice s of the outermost run, into its partial buffer (or its part of the one buffer). */
static void reduce_slice_of(void *ctx, int64_t s, int slot) {
    (void)slot;
    const reduce_sum_run *r = ctx;
    const reduce_plan *p = r->p;
    int64_t begin = p->d[0] * s / p->n_slices, end = p->d[0] * (s + 1) / p->n_slices;
    float *acc = r->partials + (p->summed[0] ? s * p->y_numel : 0);
    sum_runs(p, 0, r->x, acc, begin, end);
}

/* Outputs [begin, end): their partials added in slice order. */
static void reduce_partials_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const reduce_sum_run *r = ctx;
    int64_t n_y = r->p->y_numel, n_partials = r->p->n_partials;
    for (int64_t j = begin; j < end; j++) {
        float s = 0.0f;
        for (int64_t q = 0; q < n_partials; q++)
            s += r->partials[q * n_y + j];
        r->y[j] = (r->store ? 0.0f : r->y[j]) + r->scale * s;
    }
}

/* kn_reduce_sum_add, or kn_reduce_sum_store when `store`. */
static void reduce_sum(const float *x, const kn_shape *x_shape, unsigned axes, float scale, float *y, float *workspace,
                       bool store) {
    reduce_plan p;
    reduce_plan_make(&p, x_shape, axes);
    if (p.x_numel == 0) {
        if (store) /* sums of nothing */
            memset(y, 0, sizeof(float) * (size_t)p.y_numel);
        return;
    }
    reduce_sum_run r = {.p = &p, .x = x, .y = y, .partials = workspace, .scale = scale, .store = store};
    if (reduce_plan_is_copy(&p)) {
        int64_t n = p.x_numel;
        kn_parallel_range(n, kn_threads_for(n, KN_REDUCE_PARALLEL_MIN), reduce_copy_range, &r);
        return;
    }
    /* Each slice sums into its own partial buffer (or its own part of the one buffer), then the
     * partials are added in slice order: a fixed order whatever the thread count. */
    memset(r.partials, 0, sizeof(float) * (size_t)(p.n_partials * p.y_numel));
    kn_parallel_for(p.n_slices, kn_threads_get(), reduce_slice_of, &r);
    int64_t n_y = p.y_numel, n_partials = p.n_partials;
    kn_parallel_range(n_y, kn_threads_for(n_y * n_partials, KN_REDUCE_PARALLEL_MIN), reduce_partials_range, &r);
}

void kn_reduce_sum_add(const float *x, const kn_shape *x_shape, unsigned axes, float scale, float *y,
                       float *workspace) {
    reduce_sum(x, x_shape, axes, scale, y, workspace, false);
}

void kn_reduce_sum_store(const float *x, const kn_shape *x_shape, unsigned axes, float scale, float *y,
                         float *workspace) {
    reduce_sum(x, x_shape, axes, scale, y, workspace, true);
}

/* dx += scale * dy spread back over the summed runs, for indices [begin, end) of run k: the
 * transpose of sum_runs. dx and dy point at index 0 of run k. */
static void spread_runs(const reduce_plan *p, int k, const float *dy, float *dx, float scale,
                        int64_t begin, int64_t end) {
    if (k == p->ndim - 1) {
        if (p->summed[k]) {
            float v = scale * dy[0];
            for (int64_t i = begin; i < end; i++)
                dx[i] += v;
        } else {
            for (int64_t i = begin; i < end; i++)
                dx[i] += scale * dy[i];
        }
        return;
    }
    for (int64_t i = begin; i < end; i++)
        spread_runs(p, k + 1, dy + i * p->y_step[k], dx + i * p->x_step[k], scale, 0, p->d[k + 1]);
}

/* A spread's operands, for its slices. */
typedef struct spread_run {
    const reduce_plan *p;
    const float *dy;
    float *dx;
    float scale;
} spread_run;

static void spread_slice_of(void *ctx, int64_t s, int slot) {
    (void)slot;
    const spread_run *r = ctx;
    const reduce_plan *p = r->p;
    int64_t begin = p->d[0] * s / p->n_slices, end = p->d[0] * (s + 1) / p->n_slices;
    spread_runs(p, 0, r->dy, r->dx, r->scale, begin, end);
}

/* dx += scale * dy spread back over the summed axes: the backward of a sum. Slices of the outermost
 * run write disjoint parts of dx. */
static void spread_add(const float *dy, const kn_shape *x_shape, unsigned axes, float scale,
                       float *dx) {
    reduce_plan p;
    reduce_plan_make(&p, x_shape, axes);
    if (p.x_numel == 0)
        return;
    spread_run r = {.p = &p, .dy = dy, .dx = dx, .scale = scale};
    kn_parallel_for(p.n_slices, kn_threads_get(), spread_slice_of, &r);
}

/* ---- walking each output's elements: ReduceMax, ReduceMin, ReduceProd, ReduceL2 ---- */

/* The runs of a reduce_plan split into the kept ones, which place an output element, and the
 * summed ones, which list the elements reduced into it. Each output is computed alone, in x's
 * memory order, so the result does not depend on the thread count. */
typedef struct reduce_walk {
    int n_kept, n_summed;                  /* n_summed >= 1 */
    int64_t kept_d[KN_MAX_DIMS], kept_step[KN_MAX_DIMS];
    int64_t d[KN_MAX_DIMS], step[KN_MAX_DIMS]; /* the summed runs, outermost first */
    int64_t count;                         /* elements reduced into each output */
    int64_t y_numel;
} reduce_walk;

static void reduce_walk_make(reduce_walk *w, const kn_shape *x_shape, unsigned axes) {
    reduce_plan p;
    reduce_plan_make(&p, x_shape, axes);
    memset(w, 0, sizeof *w);
    w->count = 1;
    for (int k = 0; k < p.ndim; k++) {
        if (p.summed[k]) {
            w->d[w->n_summed] = p.d[k];
            w->step[w->n_summed++] = p.x_step[k];
            w->count *= p.d[k];
        } else {
            w->kept_d[w->n_kept] = p.d[k];
            w->kept_step[w->n_kept++] = p.x_step[k];
        }
    }
    if (w->n_summed == 0) { /* only size-1 axes reduced: each output reduces one element */
        w->d[0] = 1;
        w->n_summed = 1;
    }
    w->y_numel = p.y_numel;
}

/* Offset in x of the first element reduced into output j. */
static int64_t reduce_walk_base(const reduce_walk *w, int64_t j) {
    int64_t base = 0;
    for (int k = w->n_kept - 1; k >= 0; k--) {
        base += (j % w->kept_d[k]) * w->kept_step[k];
        j /= w->kept_d[k];
    }
    return base;
}

/* An odometer over the summed runs; offset is the current element's, from the output's base. */
typedef struct reduce_cursor {
    int64_t index[KN_MAX_DIMS];
    int64_t offset;
} reduce_cursor;

static inline void reduce_cursor_next(const reduce_walk *w, reduce_cursor *c) {
    for (int k = w->n_summed - 1; k >= 0; k--) {
        c->offset += w->step[k];
        if (++c->index[k] < w->d[k])
            return;
        c->offset -= w->step[k] * w->d[k];
        c->index[k] = 0;
    }
}

typedef enum reduce_kind {
    REDUCE_MEAN, REDUCE_SUM, REDUCE_MAX, REDUCE_MIN, REDUCE_PROD, REDUCE_L2, REDUCE_L1,
    REDUCE_SUM_SQUARE, REDUCE_LOG_SUM, REDUCE_LOG_SUM_EXP
} reduce_kind;

/* The op entries at the end of this file share one infer, forward and backward, which tell the
 * reductions apart by the node's entry. */
extern const kn_op kn_op_reducemean, kn_op_reducesum, kn_op_reducemax, kn_op_reducemin,
    kn_op_reduceprod, kn_op_reducel2, kn_op_reducel1, kn_op_reducesumsquare, kn_op_reducelogsum,
    kn_op_reducelogsumexp;

static reduce_kind reduce_kind_of(const kn_node *node) {
    const kn_op *op = node->op;
    return op == &kn_op_reducemean ? REDUCE_MEAN
           : op == &kn_op_reducesum ? REDUCE_SUM
           : op == &kn_op_reducemax ? REDUCE_MAX
           : op == &kn_op_reducemin ? REDUCE_MIN
           : op == &kn_op_reduceprod ? REDUCE_PROD
           : op == &kn_op_reducel1 ? REDUCE_L1
           : op == &kn_op_reducesumsquare ? REDUCE_SUM_SQUARE
           : op == &kn_op_reducelogsum ? REDUCE_LOG_SUM
           : op == &kn_op_reducelogsumexp ? REDUCE_LOG_SUM_EXP
                                     : REDUCE_L2;
}

/* Element i of f32 or f64 data, as a double. */
static inline double float_at(const void *x, bool is_f64, int64_t i) {
    return is_f64 ? ((const double *)x)[i] : ((const float *)x)[i];
}

/* The largest of x's elements reduced into one output (-inf for none): LogSumExp's shift. */
static double reduce_float_max(const reduce_walk *w, const void *x, bool is_f64) {
    double m = -INFINITY;
    reduce_cursor c = {{0}, 0};
    for (int64_t r = 0; r < w->count; r++, reduce_cursor_next(w, &c)) {
        double v = float_at(x, is_f64, c.offset);
        m = v > m ? v : m;
    }
    return m;
}

/* One output of a float reduction, x pointing at its first element (f32, or f64 with is_f64). Max /
 * min keep the first NaN they meet, as numpy does. Products, sums of squares and the other sums
 * accumulate in double. LogSumExp sums e^(v - max) so that e^v cannot overflow. Sum and mean come
 * here for f64 only (f32 takes kn_reduce_sum_add). */
static double reduce_float_one(const reduce_walk *w, reduce_kind kind, const void *x, bool is_f64) {
    double acc = kind == REDUCE_MAX ? -INFINITY : kind == REDUCE_MIN ? INFINITY
                 : kind == REDUCE_PROD ? 1.0 : 0.0;
    double shift = kind == REDUCE_LOG_SUM_EXP ? reduce_float_max(w, x, is_f64) : 0.0;
    if (isinf(shift))
        shift = 0.0; /* all -inf (or empty): the sum is 0 and the log -inf; +inf stays +inf */
    reduce_cursor c = {{0}, 0};
    for (int64_t r = 0; r < w->count; r++, reduce_cursor_next(w, &c)) {
        double v = float_at(x, is_f64, c.offset);
        switch (kind) {
        case REDUCE_SUM:
        case REDUCE_MEAN: acc += v; break;
        case REDUCE_MAX: acc = (v > acc || isnan(v)) ? v : acc; break;
        case REDUCE_MIN: acc = (v < acc || isnan(v)) ? v : acc; break;
        case REDUCE_PROD: acc *= v; break;
        case REDUCE_L1: acc += fabs(v); break;
        case REDUCE_LOG_SUM: acc += v; break;
        case REDUCE_LOG_SUM_EXP: acc += exp(v - shift); break;
        default: acc += v * v; break; /* REDUCE_L2, REDUCE_SUM_SQUARE */
        }
    }
    switch (kind) {
    case REDUCE_MEAN: return acc / (double)w->count; /* 0 / 0 = NaN for an empty mean */
    case REDUCE_L2: return sqrt(acc);
    case REDUCE_LOG_SUM: return log(acc);
    case REDUCE_LOG_SUM_EXP: return log(acc) + shift;
    default: return acc;
    }
}

/* Integer max / min (the only integer reductions); an empty reduction gives the dtype's lowest
 * (max) or highest (min) value. */
static int64_t reduce_int_one(const reduce_walk *w, reduce_kind kind, const void *x, kn_dtype dtype,
                              int64_t base) {
    int64_t acc = kind == REDUCE_MAX ? kn_int_lowest(dtype) : kn_int_highest(dtype);
    reduce_cursor c = {{0}, 0};
    for (int64_t r = 0; r < w->count; r++, reduce_cursor_next(w, &c)) {
        int64_t v = kn_int_load(x, dtype, base + c.offset);
        acc = (kind == REDUCE_MAX ? kn_int_less(dtype, acc, v) : kn_int_less(dtype, v, acc)) ? v : acc;
    }
    return acc;
}

/* A walk's outputs, forward (x to y) or ReduceMax / ReduceMin backward (x, y and dy to dx), for
 * kn_parallel_range. */
typedef struct reduce_walk_run {
    const reduce_walk *w;
    reduce_kind kind;
    const kn_tensor *x;
    kn_tensor *y;
    const float *ys, *dy; /* backward's */
    float *dx;
} reduce_walk_run;

/* Whether a walk's outputs are worth the threads. */
static int reduce_walk_threads(const reduce_walk *w) {
    return kn_threads_for(w->y_numel * w->count, KN_REDUCE_PARALLEL_MIN);
}

static void reduce_walk_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const reduce_walk_run *r = ctx;
    const kn_tensor *x = r->x;
    kn_tensor *y = r->y;
    for (int64_t j = begin; j < end; j++) {
        int64_t base = reduce_walk_base(r->w, j);
        if (x->dtype == KN_F32)
            kn_f32(y)[j] = (float)reduce_float_one(r->w, r->kind, kn_f32(x) + base, false);
        else if (x->dtype == KN_F64)
            ((double *)y->data)[j] = reduce_float_one(r->w, r->kind, (const double *)x->data + base, true);
        else
            kn_int_store(y->data, y->dtype, j, reduce_int_one(r->w, r->kind, x->data, x->dtype, base));
    }
}

static void reduce_walk_forward(const kn_tensor *x, unsigned axes, reduce_kind kind, kn_tensor *y) {
    reduce_walk w;
    reduce_walk_make(&w, &x->shape, axes);
    reduce_walk_run r = {.w = &w, .kind = kind, .x = x, .y = y};
    kn_parallel_range(w.y_numel, reduce_walk_threads(&w), reduce_walk_range, &r);
}

static void reduce_extremum_grad_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const reduce_walk_run *r = ctx;
    const reduce_walk *w = r->w;
    const float *xs = kn_f32(r->x);
    for (int64_t j = begin; j < end; j++) {
        int64_t base = reduce_walk_base(w, j);
        reduce_cursor c = {{0}, 0};
        for (int64_t k = 0; k < w->count; k++, reduce_cursor_next(w, &c)) {
            if (xs[base + c.offset] == r->ys[j]) {
                r->dx[base + c.offset] += r->dy[j];
                break;
            }
        }
    }
}

/* ReduceMax / ReduceMin backward: each output's gradient goes whole to the first element (in x's
 * memory order) equal to the output; a NaN output passes none. */
static void reduce_extremum_backward(const kn_tensor *x, unsigned axes, const float *y,
                                     const float *dy, float *dx) {
    reduce_walk w;
    reduce_walk_make(&w, &x->shape, axes);
    reduce_walk_run r = {.w = &w, .x = x, .ys = y, .dy = dy, .dx = dx};
    kn_parallel_range(w.y_numel, reduce_walk_threads(&w), reduce_extremum_grad_range, &r);
}

/* ---- the Reduce ops ---- */

/* The dims an op reduces over, as a bit mask over the input's `ndim` dims; 0 for the identity.
 * `axes_input` is input 1 (NULL when absent). */
static kiln_status reduce_axes(const kn_node *node, const kn_tensor *axes_input, int ndim,
                               unsigned *mask) {
    const kn_attr *attr = kn_node_attr(node, "axes");
    const int64_t *axes = NULL;
    int64_t n_axes = 0;
    if (attr && axes_input)
        return kn_fail(KILN_ERR_INVALID_ARG, "axes given both as an attribute and as input 1");
    if (axes_input) {
        if (axes_input->dtype != KN_I64 || axes_input->shape.ndim > 1)
            return kn_fail(KILN_ERR_INVALID_ARG, "axes input is %s with %d dims; expected 1-D i64",
                           kn_dtype_name(axes_input->dtype), axes_input->shape.ndim);
        axes = axes_input->data;
        n_axes = kn_numel(axes_input);
    } else if (attr) {
        if (attr->type != KN_ATTR_INTS)
            return kn_fail(KILN_ERR_INVALID_ARG, "attribute axes must be a list of ints");
        axes = attr->ints;
        n_axes = attr->n_ints;
    }
    *mask = 0;
    for (int64_t i = 0; i < n_axes; i++) {
        int axis = kn_axis_normalize(axes[i], ndim);
        if (axis < 0)
            return kn_fail(KILN_ERR_INVALID_ARG, "axis %lld is out of range for a %d-D input",
                           (long long)axes[i], ndim);
        if ((*mask >> axis) & 1u)
            return kn_fail(KILN_ERR_INVALID_ARG, "axis %lld is repeated in axes", (long long)axes[i]);
        *mask |= 1u << axis;
    }
    if (n_axes == 0 && !kn_node_int(node, "noop_with_empty_axes", 0))
        *mask = (1u << ndim) - 1u;
    return KILN_OK;
}

/* The reduced dims' product: the divisor of the mean. */
static int64_t reduced_count(const kn_shape *x_shape, unsigned mask) {
    int64_t count = 1;
    for (int k = 0; k < x_shape->ndim; k++)
        if ((mask >> k) & 1u)
            count *= x_shape->d[k];
    return count;
}

static const kn_tensor *axes_input_of(const kn_op_call *call) {
    return call->node->n_in > 1 ? call->in[1] : NULL;
}

static kiln_status call_axes(const kn_op_call *call, unsigned *mask) {
    return reduce_axes(call->node, axes_input_of(call), call->in[0]->shape.ndim, mask);
}

static kiln_status reduce_infer(kn_graph *g, const kn_node *node) {
    reduce_kind kind = reduce_kind_of(node);
    const kn_value *x = kn_node_input(g, node, 0);
    if (!x)
        return kn_fail(KILN_ERR_INVALID_ARG, "input 0 is required");
    bool takes_integers = kind == REDUCE_MAX || kind == REDUCE_MIN;
    if (x->dtype != KN_F32 && x->dtype != KN_F64 && !(takes_integers && kn_dtype_is_integer(x->dtype)))
        return kn_fail(KILN_ERR_UNSUPPORTED, "input '%s' is %s; supported: %s", x->name,
                       kn_dtype_name(x->dtype), takes_integers ? "f32, f64 and the integers" : "f32, f64");
    const kn_value *axes_value = kn_node_input(g, node, 1);
    kn_tensor axes_view;
    if (axes_value) {
        if (!axes_value->data)
            return kn_fail(KILN_ERR_UNSUPPORTED,
                           "axes input '%s' is not known at shape inference; it must be a constant",
                           axes_value->name);
        axes_view = (kn_tensor){axes_value->shape, axes_value->dtype, axes_value->data};
    }
    unsigned mask;
    KN_TRY(reduce_axes(node, axes_value ? &axes_view : NULL, x->shape.ndim, &mask));
    bool keepdims = kn_node_int(node, "keepdims", 1) != 0;
    kn_value *y = kn_node_output(g, node, 0);
    y->dtype = x->dtype;
    y->shape.ndim = 0;
    for (int k = 0; k < x->shape.ndim; k++) {
        if (!((mask >> k) & 1u))
            y->shape.d[y->shape.ndim++] = x->shape.d[k];
        else if (keepdims)
            y->shape.d[y->shape.ndim++] = 1;
    }
    return KILN_OK;
}

/* y = scale * (x summed over the axes). */
static kiln_status reduce_sum_forward(const kn_op_call *call, unsigned mask, float scale) {
    const kn_tensor *x = call->in[0];
    size_t work_bytes = kn_reduce_sum_workspace(&x->shape, mask);
    float *work = kn_op_scratch(call->ctx, work_bytes);
    if (work_bytes && !work)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for a %zu-byte reduction workspace", work_bytes);
    memset(call->out[0]->data, 0, sizeof(float) * (size_t)kn_numel(call->out[0]));
    kn_reduce_sum_add(kn_f32(x), &x->shape, mask, scale, kn_f32(call->out[0]), work);
    return KILN_OK;
}

static kiln_status reduce_forward(const kn_op_call *call) {
    reduce_kind kind = reduce_kind_of(call->node);
    unsigned mask;
    KN_TRY(call_axes(call, &mask));
    if (call->in[0]->dtype == KN_F64) {
        reduce_walk_forward(call->in[0], mask, kind, call->out[0]);
        return KILN_OK;
    }
    if (kind == REDUCE_SUM)
        return reduce_sum_forward(call, mask, 1.0f);
    if (kind == REDUCE_MEAN) {
        int64_t count = reduced_count(&call->in[0]->shape, mask);
        if (count > 0)
            return reduce_sum_forward(call, mask, 1.0f / (float)count);
        float *y = kn_f32(call->out[0]); /* the mean of nothing: NaN, as numpy and PyTorch give */
        for (int64_t j = 0; j < kn_numel(call->out[0]); j++)
            y[j] = NAN;
        return KILN_OK;
    }
    reduce_walk_forward(call->in[0], mask, kind, call->out[0]);
    return KILN_OK;
}

static kiln_status reduce_backward(const kn_op_call *call) {
    reduce_kind kind = reduce_kind_of(call->node);
    const kn_tensor *x = call->in[0];
    if (!call->dout[0] || !call->din[0] || x->dtype != KN_F32)
        return KILN_OK;
    unsigned mask;
    KN_TRY(call_axes(call, &mask));
    const float *dy = kn_f32(call->dout[0]);
    float *dx = kn_f32(call->din[0]);
    if (kind == REDUCE_SUM) {
        spread_add(dy, &x->shape, mask, 1.0f, dx);
    } else if (kind == REDUCE_MEAN) {
        int64_t count = reduced_count(&x->shape, mask);
        if (count > 0)
            spread_add(dy, &x->shape, mask, 1.0f / (float)count, dx);
    } else { /* REDUCE_MAX, REDUCE_MIN */
        reduce_extremum_backward(x, mask, kn_f32(call->out[0]), dy, dx);
    }
    return KILN_OK;
}

/* ReduceSum and ReduceMean take their partial sums from ctx scratch: its size at the current shapes,
 * so that a session can allocate it before the first run. */
static size_t reduce_sum_workspace(const kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0);
    const kn_value *axes_value = kn_node_input(g, node, 1);
    kn_tensor axes_view;
    if (axes_value) {
        if (!axes_value->data)
            return 0;
        axes_view = (kn_tensor){axes_value->shape, axes_value->dtype, axes_value->data};
    }
    unsigned mask;
    if (reduce_axes(node, axes_value ? &axes_view : NULL, x->shape.ndim, &mask) != KILN_OK)
        return 0;
    return kn_reduce_sum_workspace(&x->shape, mask);
}

/* One add, compare or multiply per input element; ReduceL2 also squares. */
static int64_t reduce_flops(const kn_graph *g, const kn_node *node) {
    return kn_shape_numel(&kn_node_input(g, node, 0)->shape);
}
static int64_t reducel2_flops(const kn_graph *g, const kn_node *node) {
    return kn_count_mul(2, reduce_flops(g, node));
}

const kn_op kn_op_reducemean = {.name = "ReduceMean", .min_inputs = 1, .max_inputs = 2,
                                .infer = reduce_infer, .forward = reduce_forward,
                                .backward = reduce_backward, .flops = reduce_flops,
                                .workspace = reduce_sum_workspace};
const kn_op kn_op_reducesum = {.name = "ReduceSum", .min_inputs = 1, .max_inputs = 2,
                               .infer = reduce_infer, .forward = reduce_forward,
                               .backward = reduce_backward, .flops = reduce_flops,
                               .workspace = reduce_sum_workspace};
const kn_op kn_op_reducemax = {.name = "ReduceMax", .min_inputs = 1, .max_inputs = 2,
                               .infer = reduce_infer, .forward = reduce_forward,
                               .backward = reduce_backward, .flops = reduce_flops};
const kn_op kn_op_reducemin = {.name = "ReduceMin", .min_inputs = 1, .max_inputs = 2,
                               .infer = reduce_infer, .forward = reduce_forward,
                               .backward = reduce_backward, .flops = reduce_flops};
const kn_op kn_op_reduceprod = {.name = "ReduceProd", .min_inputs = 1, .max_inputs = 2,
                                .infer = reduce_infer, .forward = reduce_forward,
                                .flops = reduce_flops};
const kn_op kn_op_reducel2 = {.name = "ReduceL2", .min_inputs = 1, .max_inputs = 2,
                              .infer = reduce_infer, .forward = reduce_forward,
                              .flops = reducel2_flops};
const kn_op kn_op_reducel1 = {.name = "ReduceL1", .min_inputs = 1, .max_inputs = 2,
                              .infer = reduce_infer, .forward = reduce_forward,
                              .flops = reducel2_flops};
const kn_op kn_op_reducesumsquare = {.name = "ReduceSumSquare", .min_inputs = 1, .max_inputs = 2,
                                     .infer = reduce_infer, .forward = reduce_forward,
                                     .flops = reducel2_flops};
const kn_op kn_op_reducelogsum = {.name = "ReduceLogSum", .min_inputs = 1, .max_inputs = 2,
                                  .infer = reduce_infer, .forward = reduce_forward,
                                  .flops = reduce_flops};
const kn_op kn_op_reducelogsumexp = {.name = "ReduceLogSumExp", .min_inputs = 1, .max_inputs = 2,
                                     .infer = reduce_infer, .forward = reduce_forward,
                                     .flops = reducel2_flops};
