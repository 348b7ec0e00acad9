/* Shape ops: Flatten, Reshape, Identity, Transpose, Concat, for every dtype.
 *
 * Flatten, Reshape and Identity keep the elements in order, so forward is a copy (none when the
 * caller aliases output and input) and backward adds dY viewed in the input's shape. Transpose walks
 * the output in order after merging dims that stay adjacent; Concat copies one block per input per
 * outer index. Data moves by element size; gradients flow for f32 only. None of them does
 * arithmetic, so none has a FLOP count.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "core/threads.h"
#include "ops/movement.h"

enum { TRANSPOSE_TILE = 16 }; /* a 16 x 16 tile of 4-byte elements fits L1 when both sides are strided */

static kiln_status check_input(const kn_value *v, const char *name) {
    if (!v)
        return kn_fail(KILN_ERR_INVALID_ARG, "input %s is missing", name);
    return KILN_OK;
}

static kiln_status set_only_output(kn_graph *g, const kn_node *node, const kn_shape *shape,
                                   kn_dtype dtype) {
    KN_TRY(kn_check_outputs(node, 1));
    kn_set_output(g, node, 0, shape, dtype);
    return KILN_OK;
}

/* ---- Flatten, Reshape and Identity: same elements, new shape ---- */

static kiln_status flatten_infer(kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0);
    KN_TRY(check_input(x, "input"));
    int rank = x->shape.ndim;
    int64_t axis = kn_node_int(node, "axis", 1);
    if (axis < -rank || axis > rank)
        return kn_fail(KILN_ERR_INVALID_ARG, "axis %lld is out of range [%d, %d] for rank %d",
                       (long long)axis, -rank, rank, rank);
    if (axis < 0)
        axis += rank;
    kn_shape y = kn_shape_of(2, (int64_t[]){kn_shape_span(&x->shape, 0, (int)axis),
                                            kn_shape_span(&x->shape, (int)axis, rank)});
    return set_only_output(g, node, &y, x->dtype);
}

/* The output shape of Reshape: target dim 0 copies the input dim at the same place (or, with
 * allowzero, is a dim of size 0), one -1 takes whatever count is left. */
static kiln_status reshape_target(const kn_value *target, const kn_shape *in, bool allowzero,
                                  kn_shape *out) {
    if (!target)
        return kn_fail(KILN_ERR_INVALID_ARG, "input shape is missing");
    if (!target->data)
        return kn_fail(KILN_ERR_UNSUPPORTED,
                       "the target shape '%s' must be a constant (shape inference does not know it; a "
                       "session reads a small one once the run computed it)", target->name);
    if (target->dtype != KN_I64 || target->shape.ndim != 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "the target shape '%s' must be a 1-D i64 tensor, got %s "
                       "of rank %d", target->name, kn_dtype_name(target->dtype), target->shape.ndim);
    int n = (int)target->shape.d[0];
    if (target->shape.d[0] > KN_MAX_DIMS)
        return kn_fail(KILN_ERR_UNSUPPORTED, "the target shape has %lld dims; at most %d supported",
                       (long long)target->shape.d[0], KN_MAX_DIMS);
    const int64_t *dims = target->data;
    char in_str[96], target_str[96];
    kn_shape_str(in, in_str, sizeof in_str);
    kn_shape requested = kn_shape_of(n, dims);
    kn_shape_str(&requested, target_str, sizeof target_str);

    *out = requested;
    int inferred = -1;
    int64_t known = 1;
    for (int i = 0; i < n; i++) {
        if (dims[i] == -1) {
            if (inferred >= 0)
                return kn_fail(KILN_ERR_SHAPE, "target shape %s has more than one -1", target_str);
            inferred = i;
            continue;
        }
        if (dims[i] == 0 && allowzero) {
            out->d[i] = 0;
        } else if (dims[i] == 0) {
            if (i >= in->ndim)
                return kn_fail(KILN_ERR_SHAPE, "target shape %s copies dim %d (0) but the input %s "
                               "has rank %d", target_str, i, in_str, in->ndim);
            out->d[i] = in->d[i];
        } else if (dims[i] < 0) {
            return kn_fail(KILN_ERR_SHAPE, "target shape %s has dim %lld; only -1, 0 and positive "
                           "dims are allowed", target_str, (long long)dims[i]);
        }
        if (__builtin_mul_overflow(known, out->d[i], &known))
            return kn_fail(KILN_ERR_SHAPE, "target shape %s overflows", target_str);
    }
    int64_t count = kn_shape_numel(in);
    if (inferred >= 0 && known == 0)
        return kn_fail(KILN_ERR_SHAPE, "target shape %s has -1 beside a dim of size 0, so the -1 "
                       "could be anything", target_str);
    if (inferred >= 0 && known > 0 && count % known == 0)
        out->d[inferred] = count / known;
    else if (inferred >= 0 || known != count)
        return kn_fail(KILN_ERR_SHAPE, "cannot reshape %s (%lld elements) to %s", in_str,
                       (long long)count, target_str);
    return KILN_OK;
}

static kiln_status reshape_infer(kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0);
    KN_TRY(check_input(x, "data"));
    bool allowzero = kn_node_int(node, "allowzero", 0) != 0;
    kn_shape y;
    KN_TRY(reshape_target(kn_node_input(g, node, 1), &x->shape, allowzero, &y));
    return set_only_output(g, node, &y, x->dtype);
}

static kiln_status identity_infer(kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0);
    KN_TRY(check_input(x, "input"));
    return set_only_output(g, node, &x->shape, x->dtype);
}

/* ---- Transpose ---- */

/* The perm attribute (default: reversed dims), checked to be a permutation of 0..rank-1. */
static kiln_status transpose_perm(const kn_node *node, int rank, int64_t *perm) {
    int n = kn_node_ints(node, "perm", perm, KN_MAX_DIMS);
    if (n < 0) {
        for (int i = 0; i < rank; i++)
            perm[i] = rank - 1 - i;
        return KILN_OK;
    }
    if (n != rank)
        return kn_fail(KILN_ERR_INVALID_ARG, "perm has %d entries; the input has rank %d",
                       n, rank);
    bool seen[KN_MAX_DIMS] = {false};
    for (int i = 0; i < n; i++) {
        if (perm[i] < 0 || perm[i] >= rank || seen[perm[i]]) {
            char buf[96];
            kn_shape as_list = kn_shape_of(n, perm);
            return kn_fail(KILN_ERR_INVALID_ARG, "perm %s is not a permutation of 0..%d",
                           kn_shape_str(&as_list, buf, sizeof buf), rank - 1);
        }
        seen[perm[i]] = true;
    }
    return KILN_OK;
}

static kiln_status transpose_infer(kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0);
    KN_TRY(check_input(x, "data"));
    int64_t perm[KN_MAX_DIMS];
    KN_TRY(transpose_perm(node, x->shape.ndim, perm));
    kn_shape y = x->shape;
    for (int k = 0; k < y.ndim; k++)
        y.d[k] = x->shape.d[perm[k]];
    return set_only_output(g, node, &y, x->dtype);
}

/* A transpose as a walk over dims: dim k has dims[k] positions and one step along it moves
 * in_stride[k] elements in the input and out_stride[k] in the output. */
typedef struct transpose_plan {
    int ndim;
    int64_t dims[KN_MAX_DIMS];
    int64_t in_stride[KN_MAX_DIMS];
    int64_t out_stride[KN_MAX_DIMS];
} transpose_plan;

/* The output dims in order with their input strides, minus size-1 dims, with neighbours that are
 * also neighbours in the input merged: (N, T, H, Dh) -> (N, H, T, Dh) walks 4 dims, a 2-D transpose
 * of a (1, M, K) batch walks 2, and a transpose that moves only size-1 dims is one straight copy. */
static transpose_plan transpose_plan_make(const kn_shape *in, const int64_t *perm) {
    int64_t in_stride[KN_MAX_DIMS];
    int64_t stride = 1;
    for (int d = in->ndim - 1; d >= 0; d--) {
        in_stride[d] = stride;
        stride *= in->d[d];
    }
    transpose_plan p = {0};
    for (int k = 0; k < in->ndim; k++) {
        int64_t size = in->d[perm[k]], step = in_stride[perm[k]];
        if (size == 1)
            continue;
        if (p.ndim > 0 && p.in_stride[p.ndim - 1] == step * size) {
            p.dims[p.ndim - 1] *= size;
            p.in_stride[p.ndim - 1] = step;
            continue;
        }
        p.dims[p.ndim] = size;
        p.in_stride[p.ndim] = step;
        p.ndim++;
    }
    if (p.ndim == 0) {
        p.ndim = 1;
        p.dims[0] = p.in_stride[0] = 1;
    }
    stride = 1;
    for (int k = p.ndim - 1; k >= 0; k--) {
        p.out_stride[k] = stride;
        stride *= p.dims[k];
    }
    return p;
}

/* The plan without dims `skip_a` and `skip_b` (-1 for none): the outer loops around an inner kernel. */
static transpose_plan transpose_plan_outer(const transpose_plan *p, int skip_a, int skip_b) {
    transpose_plan outer = {0};
    for (int k = 0; k < p->ndim; k++) {
        if (k == skip_a || k == skip_b)
            continue;
        outer.dims[outer.ndim] = p->dims[k];
        outer.in_stride[outer.ndim] = p->in_stride[k];
        outer.out_stride[outer.ndim] = p->out_stride[k];
        outer.ndim++;
    }
    return outer;
}

static int64_t transpose_plan_count(const transpose_plan *p) {
    int64_t count = 1;
    for (int k = 0; k < p->ndim; k++)
        count *= p->dims[k];
    return count;
}

/* A position in a plan's walk, with its input and output offsets. */
typedef struct transpose_walk {
    int64_t index[KN_MAX_DIMS];
    int64_t in, out;
} transpose_walk;

static transpose_walk transpose_walk_at(const transpose_plan *p, int64_t position) {
    transpose_walk w = {{0}, 0, 0};
    for (int k = p->ndim - 1; k >= 0; k--) {
        w.index[k] = position % p->dims[k];
        position /= p->dims[k];
        w.in += w.index[k] * p->in_stride[k];
        w.out += w.index[k] * p->out_stride[k];
    }
    return w;
}

static void transpose_walk_next(transpose_walk *w, const transpose_plan *p) {
    for (int k = p->ndim - 1; k >= 0; k--) {
        w->in += p->in_stride[k];
        w->out += p->out_stride[k];
        if (++w->index[k] < p->dims[k])
            return;
        w->in -= p->in_stride[k] * p->dims[k];
        w->out -= p->out_stride[k] * p->dims[k];
        w->index[k] = 0;
    }
}

/* n elements from src (stride src_stride) to contiguous dst: copied, or added when accumulating
 * (f32 gradients). */
static void transpose_move(char *dst, const char *src, int64_t n, int64_t src_stride, size_t esize,
                           bool accumulate) {
    if (!accumulate) {
        kn_copy_strided(dst, src, n, src_stride, esize);
        return;
    }
    float *d = (float *)dst;
    const float *s = (const float *)src;
    for (int64_t j = 0; j < n; j++)
        d[j] += s[j * src_stride];
}

/* A transpose's loop for kn_parallel_range: the walk of the outer dims around its inner kernel, which
 * moves rows of `length` elements (transpose_rows) or the tiles of one tile row of q (transpose_tiles). */
typedef struct transpose_loop {
    const char *x;
    char *y;
    size_t esize;
    bool accumulate;
    transpose_plan outer;
    int64_t length;                                     /* rows */
    int64_t nq, nj, q_out_stride, j_in_stride, q_tiles; /* tiles */
} transpose_loop;

static void transpose_rows_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const transpose_loop *t = ctx;
    int64_t e = (int64_t)t->esize;
    transpose_walk w = transpose_walk_at(&t->outer, begin);
    for (int64_t r = begin; r < end; r++) {
        transpose_move(t->y + w.out * e, t->x + w.in * e, t->length, 1, t->esize, t->accumulate);
        transpose_walk_next(&w, &t->outer);
    }
}

/* The last dim is contiguous on both sides: copy (or add) rows of dims[last] elements. */
static void transpose_rows(const char *x, char *y, size_t esize, const transpose_plan *p,
                           bool accumulate) {
    int last = p->ndim - 1;
    transpose_loop t = {.x = x, .y = y, .esize = esize, .accumulate = accumulate,
                        .outer = transpose_plan_outer(p, last, -1), .length = p->dims[last]};
    int64_t rows = transpose_plan_count(&t.outer);
    kn_parallel_range(rows, kn_threads_for(rows * t.length, KN_MOVE_PARALLEL_MIN), transpose_rows_range, &t);
}

static void transpose_tiles_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const transpose_loop *t = ctx;
    int64_t e = (int64_t)t->esize;
    transpose_walk w = transpose_walk_at(&t->outer, begin / t->q_tiles);
    int64_t tile = begin % t->q_tiles;
    for (int64_t item = begin; item < end; item++) {
        int64_t q0 = tile * TRANSPOSE_TILE;
        int64_t q1 = q0 + TRANSPOSE_TILE < t->nq ? q0 + TRANSPOSE_TILE : t->nq;
        for (int64_t j0 = 0; j0 < t->nj; j0 += TRANSPOSE_TILE) {
            int64_t j1 = j0 + TRANSPOSE_TILE < t->nj ? j0 + TRANSPOSE_TILE : t->nj;
            for (int64_t i = q0; i < q1; i++) {
                const char *src = t->x + (w.in + i + j0 * t->j_in_stride) * e;
                char *dst = t->y + (w.out + i * t->q_out_stride + j0) * e;
                transpose_move(dst, src, j1 - j0, t->j_in_stride, t->esize, t->accumulate);
            }
        }
        if (++tile == t->q_tiles) {
            tile = 0;
            transpose_walk_next(&w, &t->outer);
        }
    }
}

/* The input's contiguous dim q is not the output's last: move square tiles of (q, last) so both the
 * strided reads and the strided writes of a tile stay in cache. One item is one outer position and
 * one tile row of q. */
static void transpose_tiles(const char *x, char *y, size_t esize, const transpose_plan *p, int q,
                            bool accumulate) {
    int last = p->ndim - 1;
    transpose_loop t = {.x = x, .y = y, .esize = esize, .accumulate = accumulate,
                        .outer = transpose_plan_outer(p, q, last), .nq = p->dims[q], .nj = p->dims[last],
                        .q_out_stride = p->out_stride[q], .j_in_stride = p->in_stride[last]};
    t.q_tiles = (t.nq + TRANSPOSE_TILE - 1) / TRANSPOSE_TILE;
    int64_t items = transpose_plan_count(&t.outer) * t.q_tiles;
    kn_parallel_range(items, kn_threads_for(transpose_plan_count(p), KN_MOVE_PARALLEL_MIN), transpose_tiles_range,
                      &t);
}

/* y = transpose(x, perm), or y += it when accumulating (f32 only). */
static void transpose_run(const kn_tensor *x, void *y, const int64_t *perm, bool accumulate) {
    if (kn_numel(x) == 0)
        return;
    transpose_plan p = transpose_plan_make(&x->shape, perm);
    size_t esize = kn_dtype_size(x->dtype);
    int q = 0;
    while (p.in_stride[q] != 1)
        q++;
    if (q == p.ndim - 1)
        transpose_rows(x->data, y, esize, &p, accumulate);
    else
        transpose_tiles(x->data, y, esize, &p, q, accumulate);
}

static kiln_status transpose_forward(const kn_op_call *call) {
    int64_t perm[KN_MAX_DIMS];
    KN_TRY(transpose_perm(call->node, call->in[0]->shape.ndim, perm));
    transpose_run(call->in[0], call->out[0]->data, perm, false);
    return KILN_OK;
}

/* dX = transpose(dY, inverse perm), stored when fresh. */
static kiln_status transpose_backward(const kn_op_call *call) {
    if (!call->dout[0] || !call->din[0])
        return KILN_OK;
    KN_TRY(kn_check_f32_gradient(call, 0));
    int rank = call->in[0]->shape.ndim;
    int64_t perm[KN_MAX_DIMS], inverse[KN_MAX_DIMS];
    KN_TRY(transpose_perm(call->node, rank, perm));
    for (int k = 0; k < rank; k++)
        inverse[perm[k]] = k;
    transpose_run(call->dout[0], kn_f32(call->din[0]), inverse, !kn_din_fresh(call, 0));
    return KILN_OK;
}

/* ---- Concat ---- */

static kiln_status concat_infer(kn_graph *g, const kn_node *node) {
    if (node->n_in < 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "needs at least one input");
    for (int i = 0; i < node->n_in; i++) {
        char name[32];
        snprintf(name, sizeof name, "%d", i);
        KN_TRY(check_input(kn_node_input(g, node, i), name));
    }
    const kn_value *x0 = kn_node_input(g, node, 0);
    const kn_shape *first = &x0->shape;
    int64_t axis_attr = kn_node_int(node, "axis", 0);
    int axis = kn_axis_normalize(axis_attr, first->ndim);
    if (axis < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "axis %lld is out of range for inputs of rank %d",
                       (long long)axis_attr, first->ndim);
    kn_shape y = *first;
    for (int i = 1; i < node->n_in; i++) {
        const kn_value *x = kn_node_input(g, node, i);
        const kn_shape *s = &x->shape;
        if (x->dtype != x0->dtype)
            return kn_fail(KILN_ERR_INVALID_ARG, "input %d has dtype %s, input 0 %s; they must agree",
                           i, kn_dtype_name(x->dtype), kn_dtype_name(x0->dtype));
        char a[96], b[96];
        bool fits = s->ndim == first->ndim;
        for (int d = 0; fits && d < s->ndim; d++)
            fits = d == axis || s->d[d] == first->d[d];
        if (!fits)
            return kn_fail(KILN_ERR_SHAPE, "input %d has shape %s, input 0 %s; they must agree "
                           "except on axis %d", i, kn_shape_str(s, a, sizeof a),
                           kn_shape_str(first, b, sizeof b), axis);
        y.d[axis] = kn_count_add(y.d[axis], s->d[axis]); /* inputs of up to 2^62 elements each */
    }
    return set_only_output(g, node, &y, x0->dtype);
}

/* The output as (outer, axis, inner): each input fills a block of (its axis dim) * inner elements in
 * every one of the outer rows. */
static void concat_layout(const kn_op_call *call, int *axis, int64_t *outer, int64_t *inner) {
    const kn_shape *y = &call->out[0]->shape;
    *axis = kn_axis_normalize(kn_node_int(call->node, "axis", 0), y->ndim);
    *outer = kn_shape_span(y, 0, *axis);
    *inner = kn_shape_span(y, *axis + 1, y->ndim);
}

/* Concat's outer rows [begin, end) of `row` output elements, forward (the inputs to y) or backward (dy to
 * the inputs' gradients), for kn_parallel_range. */
typedef struct concat_rows {
    const kn_op_call *call;
    int axis;
    int64_t inner, row;
} concat_rows;

static void concat_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const concat_rows *c = ctx;
    const kn_op_call *call = c->call;
    size_t esize = kn_dtype_size(call->out[0]->dtype);
    char *y = call->out[0]->data; // (outer, row)
    for (int64_t o = begin; o < end; o++) {
        char *dst = y + (size_t)(o * c->row) * esize;
        for (int i = 0; i < call->node->n_in; i++) {
            size_t block = (size_t)(call->in[i]->shape.d[c->axis] * c->inner) * esize;
            if (block > 0)
                memcpy(dst, (const char *)call->in[i]->data + (size_t)o * block, block);
            dst += block;
        }
    }
}

static kiln_status concat_forward(const kn_op_call *call) {
    concat_rows c = {.call = call};
    int64_t outer;
    concat_layout(call, &c.axis, &outer, &c.inner);
    c.row = call->out[0]->shape.d[c.axis] * c.inner;
    kn_parallel_range(outer, kn_threads_for(outer * c.row, KN_MOVE_PARALLEL_MIN), concat_range, &c);
    return KILN_OK;
}

static void concat_grad_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const concat_rows *c = ctx;
    const kn_op_call *call = c->call;
    const float *dy = kn_f32(call->dout[0]); // (outer, row)
    for (int64_t o = begin; o < end; o++) {
        const float *src = dy + o * c->row;
        for (int i = 0; i < call->node->n_in; i++) {
            int64_t block = call->in[i]->shape.d[c->axis] * c->inner;
            if (call->din[i]) {
                float *dx = kn_f32(call->din[i]) + o * block;
                for (int64_t j = 0; j < block; j++)
                    dx[j] += src[j];
            }
            src += block;
        }
    }
}

static kiln_status concat_backward(const kn_op_call *call) {
    if (!call->dout[0])
        return KILN_OK;
    for (int i = 0; i < call->node->n_in; i++)
        KN_TRY(kn_check_f32_gradient(call, i));
    concat_rows c = {.call = call};
    int64_t outer;
    concat_layout(call, &c.axis, &outer, &c.inner);
    c.row = call->out[0]->shape.d[c.axis] * c.inner;
    kn_parallel_range(outer, kn_threads_for(outer * c.row, KN_MOVE_PARALLEL_MIN), concat_grad_range, &c);
    return KILN_OK;
}

const kn_op kn_op_flatten = {
    .name = "Flatten",
    .min_inputs = 1,
    .max_inputs = 1,
    .infer = flatten_infer,
    .forward = kn_copy_forward,
    .backward = kn_copy_backward,
    .backward_stores = true,
};

const kn_op kn_op_reshape = {
    .name = "Reshape",
    .min_inputs = 2,
    .max_inputs = 2,
    .infer = reshape_infer,
    .forward = kn_copy_forward,
    .backward = kn_copy_backward,
    .backward_stores = true,
};

const kn_op kn_op_identity = {
    .name = "Identity", .per_image = true,
    .min_inputs = 1,
    .max_inputs = 1,
    .infer = identity_infer,
    .forward = kn_copy_forward,
    .backward = kn_copy_backward,
    .backward_stores = true,
};

const kn_op kn_op_transpose = {
    .name = "Transpose",
    .min_inputs = 1,
    .max_inputs = 1,
    .infer = transpose_infer,
    .forward = transpose_forward,
    .backward = transpose_backward,
    .backward_stores = true,
};

const kn_op kn_op_concat = {
    .name = "Concat",
    .min_inputs = 1,
    .max_inputs = INT_MAX,
    .infer = concat_infer,
    .forward = concat_forward,
    .backward = concat_backward,
};
