#include "runtime/plan.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "ops/op.h"

/* One block of the arena and the span of nodes it must survive: [first, last], where node index
 * n_nodes stands for "after the run". */
typedef struct plan_buffer {
    size_t size;
    int first, last;
    size_t offset;
} plan_buffer;

/* Value v's buffer: its bytes at its shape, at least min_bytes, rounded up to the alignment. */
static kiln_status buffer_size(const kn_value *v, size_t min_bytes, size_t *size) {
    size_t bytes;
    char shape[96];
    if (kn_shape_bytes(&v->shape, v->dtype, &bytes)) {
        bytes = bytes > min_bytes ? bytes : min_bytes;
        if (kn_align_up(bytes ? bytes : 1, size))
            return KILN_OK;
    }
    return kn_fail(KILN_ERR_NOMEM, "value '%s' of shape %s has no representable size", v->name,
                   kn_shape_str(&v->shape, shape, sizeof shape));
}

/* The last node reading each value; n_nodes for graph inputs and outputs, -1 for values never read. */
static void last_reads(const kn_graph *g, int *last) {
    kn_graph_value_reads(g, NULL, last);
    for (int i = 0; i < g->n_inputs; i++)
        last[g->inputs[i]] = g->n_nodes;
    for (int i = 0; i < g->n_outputs; i++)
        last[g->outputs[i]] = g->n_nodes;
}

typedef struct plan_work {
    const size_t *min_bytes; /* (n_values) or NULL */
    const bool *whole_run;   /* (n_values) or NULL */
    plan_buffer *buffers;
    int n_buffers;
    int *buffer_of; /* (n_values) buffer index, -1 for none */
    int *last;      /* (n_values) */
} plan_work;

static void new_buffer(plan_work *w, int v, size_t size, int first) {
    int last = w->last[v] > first ? w->last[v] : first;
    w->buffers[w->n_buffers] = (plan_buffer){.size = size, .first = first, .last = last};
    w->buffer_of[v] = w->n_buffers++;
}

/* Node i's output v may take the buffer of its input x when the op allows it and that buffer, of the
 * same size, is not read after node i. */
static bool can_write_over_input(const kn_graph *g, const plan_work *w, int i, int v, size_t size) {
    const kn_node *n = &g->nodes[i];
    int x = n->n_in > 0 ? n->in[0] : -1;
    if (x < 0 || n->out[0] != v || !n->op->in_place || w->buffer_of[x] < 0 ||
        g->values[x].kind != KN_VALUE_ACT || g->values[x].dtype != g->values[v].dtype)
        return false;
    const plan_buffer *b = &w->buffers[w->buffer_of[x]];
    return b->last == i && b->size == size;
}

/* Lifetimes: one buffer per input and per activation, except outputs written in place. */
static kiln_status assign_buffers(const kn_graph *g, bool in_place, plan_work *w, kn_plan *plan) {
    for (int i = 0; i < g->n_inputs; i++) {
        int v = g->inputs[i];
        size_t size = 0;
        KN_TRY(buffer_size(&g->values[v], w->min_bytes ? w->min_bytes[v] : 0, &size));
        if (!kn_size_add(plan->naive_bytes, size, &plan->naive_bytes))
            return kn_fail(KILN_ERR_NOMEM, "the graph's buffers overflow the address space");
        new_buffer(w, v, size, 0);
    }
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        for (int k = 0; k < n->n_out; k++) {
            int v = n->out[k];
            if (w->buffer_of[v] >= 0)
                continue;
            size_t size = 0;
            KN_TRY(buffer_size(&g->values[v], w->min_bytes ? w->min_bytes[v] : 0, &size));
            if (!kn_size_add(plan->naive_bytes, size, &plan->naive_bytes))
                return kn_fail(KILN_ERR_NOMEM, "the graph's buffers overflow the address space");
            bool whole = w->whole_run && w->whole_run[v];
            if (whole) {
                new_buffer(w, v, size, 0);
                w->buffers[w->buffer_of[v]].last = g->n_nodes;
            } else if (in_place && can_write_over_input(g, w, i, v, size)) {
                int b = w->buffer_of[n->in[0]];
                w->buffer_of[v] = b;
                if (w->last[v] > w->buffers[b].last)
                    w->buffers[b].last = w->last[v];
                plan->n_in_place++;
            } else {
                new_buffer(w, v, size, i);
            }
        }
    }
    return KILN_OK;
}

typedef struct placement_key {
    size_t size;
    int first, index;
} placement_key;

/* Largest first; ties by first use, then by index, so the plan is the same every time. */
static int compare_keys(const void *pa, const void *pb) {
    const placement_key *a = pa, *b = pb;
    if (a->size != b->size)
        return a->size > b->size ? -1 : 1;
    if (a->first != b->first)
        return a->first < b->first ? -1 : 1;
    return a->index - b->index;
}

static bool lifetimes_overlap(const plan_buffer *a, const plan_buffer *b) {
    return a->first <= b->last && b->first <= a->last;
}

/* Greedy best fit. `placed` holds the placed buffers in increasing offset. */
static kiln_status place_buffers(plan_work *w, kn_plan *plan) {
    placement_key *keys = malloc(sizeof(placement_key) * (size_t)(w->n_buffers ? w->n_buffers : 1));
    int *placed = malloc(sizeof(int) * (size_t)(w->n_buffers ? w->n_buffers : 1));
    if (!keys || !placed) {
        free(keys);
        free(placed);
        return kn_fail(KILN_ERR_NOMEM, "out of memory planning %d buffers", w->n_buffers);
    }
    for (int b = 0; b < w->n_buffers; b++)
        keys[b] = (placement_key){w->buffers[b].size, w->buffers[b].first, b};
    qsort(keys, (size_t)w->n_buffers, sizeof *keys, compare_keys);
    kiln_status st = KILN_OK;
    int n_placed = 0;
    for (int k = 0; k < w->n_buffers && st == KILN_OK; k++) {
        plan_buffer *b = &w->buffers[keys[k].index];
        size_t cursor = 0, best = SIZE_MAX, best_gap = SIZE_MAX;
        int insert_at = n_placed;
        for (int p = 0; p < n_placed; p++) {
            const plan_buffer *q = &w->buffers[placed[p]];
            if (!lifetimes_overlap(b, q))
                continue;
            if (q->offset > cursor) {
                size_t gap = q->offset - cursor;
                if (gap >= b->size && gap < best_gap) {
                    best = cursor;
                    best_gap = gap;
                }
            }
            if (q->offset + q->size > cursor)
                cursor = q->offset + q->size;
        }
        b->offset = best != SIZE_MAX ? best : cursor;
        size_t end;
        if (!kn_size_add(b->offset, b->size, &end)) {
            st = kn_fail(KILN_ERR_NOMEM, "the planned arena overflows the address space");
            break;
        }
        if (end > plan->arena_bytes)
            plan->arena_bytes = end;
        while (insert_at > 0 && w->buffers[placed[insert_at - 1]].offset > b->offset)
            insert_at--;
        memmove(placed + insert_at + 1, placed + insert_at, sizeof(int) * (size_t)(n_placed - insert_at));
        placed[insert_at] = keys[k].index;
        n_placed++;
    }
    free(keys);
    free(placed);
    return st;
}

kiln_status kn_plan_make(const kn_graph *g, bool in_place, const size_t *min_bytes, kn_plan *plan) {
    return kn_plan_make_keeping(g, in_place, min_bytes, NULL, plan);
}

kiln_status kn_plan_make_keeping(const kn_graph *g, bool in_place, const size_t *min_bytes, const bool *whole_run,
                                 kn_plan *plan) {
    memset(plan, 0, sizeof *plan);
    size_t n = (size_t)(g->n_values ? g->n_values : 1);
    plan_work w = {
        .min_bytes = min_bytes,
        .whole_run = whole_run,
        .buffers = malloc(sizeof(plan_buffer) * n),
        .buffer_of = malloc(sizeof(int) * n),
        .last = malloc(sizeof(int) * n),
    };
    plan->offset = malloc(sizeof(int64_t) * n);
    plan->n_values = g->n_values;
    kiln_status st = KILN_OK;
    if (!w.buffers || !w.buffer_of || !w.last || !plan->offset)
        st = kn_fail(KILN_ERR_NOMEM, "out of memory planning %d values", g->n_values);
    if (st == KILN_OK) {
        for (int v = 0; v < g->n_values; v++)
            w.buffer_of[v] = -1;
        last_reads(g, w.last);
        st = assign_buffers(g, in_place, &w, plan);
    }
    if (st == KILN_OK)
        st = place_buffers(&w, plan);
    if (st == KILN_OK) {
        for (int v = 0; v < g->n_values; v++)
            plan->offset[v] = w.buffer_of[v] >= 0 ? (int64_t)w.buffers[w.buffer_of[v]].offset : -1;
        plan->n_buffers = w.n_buffers;
    }
    free(w.buffers);
    free(w.buffer_of);
    free(w.last);
    if (st != KILN_OK)
        kn_plan_free(plan);
    return st;
}

void kn_plan_free(kn_plan *plan) {
    free(plan->offset);
    memset(plan, 0, sizeof *plan);
}
