#include "core/threads.h"
#include "ops/fused_act.h"

#include <math.h>
#include <string.h>

#include "core/status.h"
#include "kernels/act_rows.h"
#include "kernels/vmath.h"

/* Below this many elements a loop stays on one thread: waking the team costs more than it saves. */
#define KN_FUSED_ACT_PARALLEL_MIN KN_PARALLEL_MIN_COMPUTE


static const struct {
    const char *name;
    kn_act_kind kind;
} fusable[] = {
    {"Relu", KN_ACT_RELU},       {"LeakyRelu", KN_ACT_LEAKYRELU}, {"Clip", KN_ACT_CLIP},
    {"Sigmoid", KN_ACT_SIGMOID}, {"Tanh", KN_ACT_TANH},           {"HardSwish", KN_ACT_HARDSWISH},
    {"Gelu", KN_ACT_GELU},       {"Elu", KN_ACT_ELU},             {"Silu", KN_ACT_SILU},
};

static kn_act_kind kind_of(const char *op_name) {
    for (size_t i = 0; i < sizeof fusable / sizeof fusable[0]; i++)
        if (strcmp(fusable[i].name, op_name) == 0)
            return fusable[i].kind;
    return KN_ACT_NONE;
}

bool kn_fused_act_supported(const char *op_name) { return kind_of(op_name) != KN_ACT_NONE; }

kiln_status kn_fused_act_of(const kn_node *node, kn_fused_act *act) {
    *act = (kn_fused_act){.kind = KN_ACT_NONE, .lo = -INFINITY, .hi = INFINITY};
    const char *name = kn_node_string(node, "kn_activation", NULL);
    if (!name)
        return KILN_OK;
    act->kind = kind_of(name);
    switch (act->kind) {
    case KN_ACT_NONE:
        return kn_fail(KILN_ERR_INVALID_ARG, "fused activation '%s' is not one kiln can fuse", name);
    case KN_ACT_LEAKYRELU:
        act->alpha = kn_node_float(node, "kn_alpha", 0.01f);
        break;
    case KN_ACT_ELU:
        act->alpha = kn_node_float(node, "kn_alpha", 1.0f);
        break;
    case KN_ACT_CLIP:
        act->lo = kn_node_float(node, "kn_min", -INFINITY);
        act->hi = kn_node_float(node, "kn_max", INFINITY);
        if (isnan(act->lo) || isnan(act->hi))
            return kn_fail(KILN_ERR_INVALID_ARG, "fused Clip has a NaN bound");
        break;
    case KN_ACT_GELU: {
        const char *form = kn_node_string(node, "kn_approximate", "none");
        if (strcmp(form, "tanh") == 0)
            act->kind = KN_ACT_GELU_TANH;
        else if (strcmp(form, "none") != 0)
            return kn_fail(KILN_ERR_INVALID_ARG,
                           "fused Gelu has approximate \"%s\"; expected \"none\" or \"tanh\"", form);
        break;
    }
    default:
        break;
    }
    return KILN_OK;
}

/* One activation per function, so that each kind gets its own tight loop below (the piecewise-linear
 * ones are kernels/act_rows.h's). */
static inline float leakyrelu(const kn_fused_act *a, float x) { return x < 0.0f ? a->alpha * x : x; }
static inline float elu(const kn_fused_act *a, float x) { return x < 0.0f ? a->alpha * expm1f(x) : x; }

/* The kernels/vmath function of the transcendental activations (the standalone ops use the same, so
 * fusing changes no bit), NULL for the others. */
static kn_vmath_fn vmath_fn_of(kn_act_kind kind) {
    const kn_vmath *vm = kn_vmath_best();
    switch (kind) {
    case KN_ACT_SIGMOID: return vm->sigmoid;
    case KN_ACT_TANH: return vm->tanh;
    case KN_ACT_GELU: return vm->gelu;
    case KN_ACT_GELU_TANH: return vm->gelu_tanh;
    case KN_ACT_SILU: return vm->silu;
    default: return NULL;
    }
}

/* y[i] = f(act, y[i]) over the n outputs, on the calling thread. */
#define KN_ACT_PASS(f)                                                                              \
    do {                                                                                            \
        for (int64_t i = 0; i < n; i++)                                                             \
            y[i] = f(&a, y[i]);                                                                     \
    } while (0)

/* The piecewise-linear kinds that kernels/act_rows.h computes, vectorized for this CPU: true, with
 * *rows set, for identity (with a bias), Relu, Clip and HardSwish. */
static bool act_rows_of(const kn_fused_act *a, kn_act_rows *rows) {
    static const kn_act_rows_kind kinds[] = {[KN_ACT_NONE] = KN_ACT_ROWS_IDENTITY, [KN_ACT_RELU] = KN_ACT_ROWS_RELU,
                                             [KN_ACT_CLIP] = KN_ACT_ROWS_CLIP, [KN_ACT_HARDSWISH] = KN_ACT_ROWS_HARDSWISH};
    bool suits = a->kind == KN_ACT_NONE || a->kind == KN_ACT_RELU || a->kind == KN_ACT_CLIP || a->kind == KN_ACT_HARDSWISH;
    if (suits)
        *rows = (kn_act_rows){kinds[a->kind], a->lo, a->hi};
    return suits;
}

void kn_fused_act_apply_serial(const kn_fused_act *act, float *y, int64_t n) {
    const kn_fused_act a = *act; // a local copy: the stores into y cannot alias it
    kn_act_rows rows;
    if (a.kind != KN_ACT_NONE && act_rows_of(&a, &rows)) {
        kn_act_rows_best()(&rows, NULL, y, 1, n, n);
        return;
    }
    switch (a.kind) {
    case KN_ACT_NONE:
    case KN_ACT_RELU:
    case KN_ACT_CLIP:
    case KN_ACT_HARDSWISH: break; /* act_rows_of's */
    case KN_ACT_LEAKYRELU: KN_ACT_PASS(leakyrelu); break;
    case KN_ACT_ELU: KN_ACT_PASS(elu); break;
    case KN_ACT_SIGMOID:
    case KN_ACT_TANH:
    case KN_ACT_GELU:
    case KN_ACT_GELU_TANH:
    case KN_ACT_SILU: vmath_fn_of(a.kind)(y, y, n); break;
    }
}

/* Spans of this many outputs go to the threads whole. */
#define KN_FUSED_ACT_SPAN 4096

typedef struct act_spans {
    const kn_fused_act *act;
    float *y;
    int64_t n;
} act_spans;

static void act_span_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const act_spans *a = ctx;
    for (int64_t span = begin; span < end; span++) {
        int64_t start = span * KN_FUSED_ACT_SPAN;
        kn_fused_act_apply_serial(a->act, a->y + start, a->n - start < KN_FUSED_ACT_SPAN ? a->n - start : KN_FUSED_ACT_SPAN);
    }
}

void kn_fused_act_apply(const kn_fused_act *act, float *y, int64_t n) {
    if (act->kind == KN_ACT_NONE)
        return;
    act_spans a = {act, y, n};
    kn_parallel_range((n + KN_FUSED_ACT_SPAN - 1) / KN_FUSED_ACT_SPAN, kn_threads_for(n, KN_FUSED_ACT_PARALLEL_MIN),
                      act_span_range, &a);
}

/* kn_fused_act_apply_rows' pass over a range of rows. */
typedef struct act_rows_pass {
    kn_fused_act act;
    kn_act_rows fast;       /* the kinds act_rows_of takes */
    kn_act_rows_fn fast_fn; /* and their kernel */
    kn_vmath_fn vmath_fn;   /* the transcendental kinds' function */
    const float *bias;
    float *y;
    int64_t cols, ld;
} act_rows_pass;

static void act_rows_fast_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const act_rows_pass *p = ctx;
    for (int64_t r = begin; r < end; r++)
        p->fast_fn(&p->fast, p->bias + r, p->y + r * p->ld, 1, p->cols, p->ld);
}

/* y[r, c] = f(act, y[r, c] + bias[r]) over the rows [begin, end) x cols outputs, rows ld apart. */
#define KN_ACT_ROWS_PASS(f)                                                                         \
    do {                                                                                            \
        for (int64_t r = begin; r < end; r++) {                                                     \
            float *row = y + r * ld, b = bias[r];                                                   \
            for (int64_t c = 0; c < cols; c++)                                                      \
                row[c] = f(&a, row[c] + b);                                                         \
        }                                                                                           \
    } while (0)

/* LeakyRelu and Elu, each in its own loop. */
static void act_rows_pass_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const act_rows_pass *p = ctx;
    const kn_fused_act a = p->act; // a local copy: the stores into y cannot alias it
    const float *bias = p->bias;
    float *y = p->y;
    const int64_t cols = p->cols, ld = p->ld;
    if (a.kind == KN_ACT_LEAKYRELU)
        KN_ACT_ROWS_PASS(leakyrelu);
    else
        KN_ACT_ROWS_PASS(elu);
}

static void act_rows_vmath_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const act_rows_pass *p = ctx;
    const float *bias = p->bias;
    float *y = p->y;
    const int64_t cols = p->cols, ld = p->ld;
    for (int64_t r = begin; r < end; r++) {
        float *row = y + r * ld, b = bias[r];
        for (int64_t c = 0; c < cols; c++)
            row[c] += b;
        p->vmath_fn(row, row, cols);
    }
}

typedef void (*act_rows_range_fn)(void *ctx, int64_t begin, int64_t end, int slot);

/* Sets up p (its act, bias, y, cols and ld filled in) for act's kind and gives the function that
 * applies it to a range of rows, or NULL when there is nothing to do. */
static act_rows_range_fn act_rows_setup(act_rows_pass *p) {
    if (act_rows_of(&p->act, &p->fast)) {
        p->fast_fn = kn_act_rows_best();
        return act_rows_fast_range;
    }
    switch (p->act.kind) {
    case KN_ACT_NONE:
    case KN_ACT_RELU:
    case KN_ACT_CLIP:
    case KN_ACT_HARDSWISH: break; /* act_rows_of's */
    case KN_ACT_LEAKYRELU:
    case KN_ACT_ELU: return act_rows_pass_range;
    case KN_ACT_SIGMOID:
    case KN_ACT_TANH:
    case KN_ACT_GELU:
    case KN_ACT_GELU_TANH:
    case KN_ACT_SILU: p->vmath_fn = vmath_fn_of(p->act.kind); return act_rows_vmath_range;
    }
    return NULL;
}

void kn_fused_act_apply_rows(const kn_fused_act *act, const float *bias, float *y, int64_t rows, int64_t cols,
                             int64_t ld) {
    act_rows_pass p = {.act = *act, .bias = bias, .y = y, .cols = cols, .ld = ld};
    act_rows_range_fn range = act_rows_setup(&p);
    if (range)
        kn_parallel_range(rows, kn_threads_for(rows * cols, KN_FUSED_ACT_PARALLEL_MIN), range, &p);
}

void kn_fused_act_tiles_init(const kn_fused_act *act, kn_fused_act_tiles *tiles) {
    tiles->act = *act;
    tiles->rows_fn = act_rows_of(act, &tiles->rows) ? kn_act_rows_best() : NULL;
}

void kn_fused_act_tiles_apply(const kn_fused_act_tiles *tiles, const float *bias, float *y, int64_t rows,
                              int64_t cols, int64_t ld) {
    if (tiles->rows_fn) {
        tiles->rows_fn(&tiles->rows, bias, y, rows, cols, ld);
        return;
    }
    if (!bias) {
        for (int64_t r = 0; r < rows; r++)
            kn_fused_act_apply_serial(&tiles->act, y + r * ld, cols);
        return;
    }
    act_rows_pass p = {.act = tiles->act, .bias = bias, .y = y, .cols = cols, .ld = ld};
    act_rows_range_fn range = act_rows_setup(&p);
    if (range)
        range(&p, 0, rows, 0);
}

kiln_status kn_fused_refuse_backward(const kn_node *node, bool has_fused_bias) {
    const char *act = kn_node_string(node, "kn_activation", NULL);
    if (act || has_fused_bias)
        return kn_fail(KILN_ERR_UNSUPPORTED,
                       "node '%s' has a fused %s set by the inference optimizer; fused nodes have no "
                       "backward (train the unoptimized graph)",
                       node->name, act ? act : "bias");
    return KILN_OK;
}
