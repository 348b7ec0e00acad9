#include "core/pool.h"
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

typedef struct fused_act_loop {
    const kn_fused_act *act;
    float *y;
} fused_act_loop;

/* Ranges start on multiples of 16 outputs, so every vector build sees the same tail as one call. */
static void fused_act_range(void *ctx, int64_t begin, int64_t end) {
    const fused_act_loop *loop = ctx;
    kn_fused_act_apply_serial(loop->act, loop->y + begin, end - begin);
}

void kn_fused_act_apply(const kn_fused_act *act, float *y, int64_t n) {
    if (act->kind == KN_ACT_NONE)
        return;
    fused_act_loop loop = {act, y};
    kn_pool_for(n >= KN_FUSED_ACT_PARALLEL_MIN ? kn_threads_get() : 1, n, fused_act_range, &loop);
}

/* One row of kn_fused_act_apply_rows: row[c] = f(act, row[c] + b). */
static void act_row(const kn_fused_act *act, float b, float *row, int64_t cols) {
    const kn_fused_act a = *act; // a local copy: the stores into row cannot alias it
    kn_act_rows fast;
    if (act_rows_of(&a, &fast)) {
        kn_act_rows_best()(&fast, &b, row, 1, cols, cols);
        return;
    }
    switch (a.kind) {
    case KN_ACT_NONE:
    case KN_ACT_RELU:
    case KN_ACT_CLIP:
    case KN_ACT_HARDSWISH: break; /* act_rows_of's */
    case KN_ACT_LEAKYRELU:
        for (int64_t c = 0; c < cols; c++)
            row[c] = leakyrelu(&a, row[c] + b);
        break;
    case KN_ACT_ELU:
        for (int64_t c = 0; c < cols; c++)
            row[c] = elu(&a, row[c] + b);
        break;
    case KN_ACT_SIGMOID:
    case KN_ACT_TANH:
    case KN_ACT_GELU:
    case KN_ACT_GELU_TANH:
    case KN_ACT_SILU:
        for (int64_t c = 0; c < cols; c++)
            row[c] += b;
        vmath_fn_of(a.kind)(row, row, cols);
        break;
    }
}

typedef struct act_rows_loop {
    const kn_fused_act *act;
    const float *bias;
    float *y;
    int64_t cols, ld;
} act_rows_loop;

static void act_rows_range(void *ctx, int64_t begin, int64_t end) {
    const act_rows_loop *loop = ctx;
    for (int64_t r = begin; r < end; r++)
        act_row(loop->act, loop->bias[r], loop->y + r * loop->ld, loop->cols);
}

void kn_fused_act_apply_rows(const kn_fused_act *act, const float *bias, float *y, int64_t rows, int64_t cols,
                             int64_t ld) {
    act_rows_loop loop = {act, bias, y, cols, ld};
    kn_pool_for(rows * cols >= KN_FUSED_ACT_PARALLEL_MIN ? kn_threads_get() : 1, rows, act_rows_range, &loop);
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
