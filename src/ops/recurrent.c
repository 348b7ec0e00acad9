/* The recurrent layers RNN, GRU and LSTM (opset 14 forms), with their default activations (RNN: Tanh;
 * GRU: Sigmoid, Tanh; LSTM: Sigmoid, Tanh, Tanh).
 *
 * Inputs X, W, R, then optional B, sequence_lens, initial_h (and LSTM's initial_c, P). G gates per unit
 * (RNN 1; GRU 3 in the order z, r, h; LSTM 4 in the order i, o, f, c) of `hidden_size` H:
 *
 *     X (T, N, I) (layout 1: (N, T, I))   W (D, G*H, I)   R (D, G*H, H)   B (D, 2*G*H): W's biases, then R's
 *     Y (T, D, N, H) (layout 1: (N, T, D, H))   Y_h, Y_c (D, N, H) (layout 1: (N, D, H))
 *
 * D is 2 for direction = bidirectional (forward, then reverse), else 1. With sequence_lens, batch entry n
 * runs its first len[n] steps (the reverse direction from step len[n] - 1 down), Y is 0 past them and Y_h
 * is the state after the last. `clip` bounds every gate's input before its activation; GRU's
 * linear_before_reset = 1 applies the reset gate after R's product. Computed in double, rounded once to
 * f32. No gradient.
 */
#include <math.h>
#include <string.h>

#include "core/status.h"
#include "ops/elements.h"
#include "ops/movement.h"

typedef enum { RNN_PLAIN, RNN_GRU, RNN_LSTM } rnn_kind;

typedef struct rnn_dims {
    rnn_kind kind;
    int gates;                  /* G */
    int64_t T, N, I, H, D;
    bool batch_first;           /* layout 1 */
} rnn_dims;

static rnn_kind rnn_kind_of(const kn_node *node) {
    const char *name = node->op->name;
    return strcmp(name, "GRU") == 0 ? RNN_GRU : strcmp(name, "LSTM") == 0 ? RNN_LSTM : RNN_PLAIN;
}

/* Checks an optional input's shape (and that it is f32, unless it is sequence_lens): NULL (omitted) passes. */
static kiln_status rnn_check(const kn_value *v, const char *what, int ndim, const int64_t *dims) {
    kn_shape want = kn_shape_of(ndim, dims);
    bool lengths = strcmp(what, "sequence_lens") == 0; /* i32 or i64, checked by the caller */
    if (v && (!kn_shape_equal(&v->shape, &want) || (v->dtype != KN_F32 && !lengths))) {
        char got[96], exp[96];
        return kn_fail(KILN_ERR_SHAPE, "%s is %s %s; expected %s f32", what, kn_shape_str(&v->shape, got, sizeof got),
                       kn_dtype_name(v->dtype), kn_shape_str(&want, exp, sizeof exp));
    }
    return KILN_OK;
}

static kiln_status rnn_dims_get(const kn_graph *g, const kn_node *node, rnn_dims *d) {
    d->kind = rnn_kind_of(node);
    d->gates = d->kind == RNN_PLAIN ? 1 : d->kind == RNN_GRU ? 3 : 4;
    const kn_value *x = kn_node_input(g, node, 0);
    if (!x || !kn_node_input(g, node, 1) || !kn_node_input(g, node, 2))
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs X, W and R are required");
    const char *direction = kn_node_string(node, "direction", "forward");
    if (strcmp(direction, "forward") != 0 && strcmp(direction, "reverse") != 0 &&
        strcmp(direction, "bidirectional") != 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "direction '%s'", direction);
    if (kn_node_attr(node, "activations") || kn_node_attr(node, "activation_alpha") ||
        kn_node_attr(node, "activation_beta"))
        return kn_fail(KILN_ERR_UNSUPPORTED, "activations other than the defaults are not supported");
    if (d->kind == RNN_LSTM && kn_node_int(node, "input_forget", 0) != 0)
        return kn_fail(KILN_ERR_UNSUPPORTED, "input_forget = 1 is not supported");
    d->D = strcmp(direction, "bidirectional") == 0 ? 2 : 1;
    d->H = kn_node_int(node, "hidden_size", -1);
    d->batch_first = kn_node_int(node, "layout", 0) != 0;
    if (x->shape.ndim != 3 || x->dtype != KN_F32 || d->H < 1)
        return kn_fail(KILN_ERR_SHAPE, "X must be 3-D f32 and hidden_size at least 1");
    d->T = x->shape.d[d->batch_first ? 1 : 0];
    d->N = x->shape.d[d->batch_first ? 0 : 1];
    d->I = x->shape.d[2];
    int64_t GH = d->gates * d->H;
    KN_TRY(rnn_check(kn_node_input(g, node, 1), "W", 3, (int64_t[]){d->D, GH, d->I}));
    KN_TRY(rnn_check(kn_node_input(g, node, 2), "R", 3, (int64_t[]){d->D, GH, d->H}));
    KN_TRY(rnn_check(kn_node_input(g, node, 3), "B", 2, (int64_t[]){d->D, 2 * GH}));
    KN_TRY(rnn_check(kn_node_input(g, node, 4), "sequence_lens", 1, (int64_t[]){d->N}));
    const kn_value *lens = kn_node_input(g, node, 4);
    if (lens && lens->dtype != KN_I32 && lens->dtype != KN_I64)
        return kn_fail(KILN_ERR_INVALID_ARG, "sequence_lens must be i32 or i64");
    int64_t state[3] = {d->batch_first ? d->N : d->D, d->batch_first ? d->D : d->N, d->H};
    KN_TRY(rnn_check(kn_node_input(g, node, 5), "initial_h", 3, state));
    if (d->kind == RNN_LSTM) {
        KN_TRY(rnn_check(kn_node_input(g, node, 6), "initial_c", 3, state));
        KN_TRY(rnn_check(kn_node_input(g, node, 7), "P", 2, (int64_t[]){d->D, 3 * d->H}));
    }
    return KILN_OK;
}

static kiln_status rnn_infer(kn_graph *g, const kn_node *node) {
    rnn_dims d;
    KN_TRY(rnn_dims_get(g, node, &d));
    int max_out = d.kind == RNN_LSTM ? 3 : 2;
    if (node->n_out < 1 || node->n_out > max_out)
        return kn_fail(KILN_ERR_INVALID_ARG, "%d outputs; %s has 1 to %d", node->n_out, node->op->name, max_out);
    kn_shape y = d.batch_first ? kn_shape_of(4, (int64_t[]){d.N, d.T, d.D, d.H})
                               : kn_shape_of(4, (int64_t[]){d.T, d.D, d.N, d.H});
    kn_shape state = kn_shape_of(3, d.batch_first ? (int64_t[]){d.N, d.D, d.H} : (int64_t[]){d.D, d.N, d.H});
    KN_TRY(kn_shape_check_size(&y));
    kn_set_output(g, node, 0, &y, KN_F32);
    for (int i = 1; i < node->n_out; i++)
        kn_set_output(g, node, i, &state, KN_F32);
    return KILN_OK;
}

static size_t rnn_workspace(const kn_graph *g, const kn_node *node) {
    rnn_dims d;
    if (rnn_dims_get(g, node, &d) != KILN_OK)
        return 0;
    return sizeof(double) * (size_t)(2 * d.N * d.H + 2 * d.gates * d.H + d.H);
}

static double sigmoid(double v) { return 1.0 / (1.0 + exp(-v)); }

/* Element (a, b, c) of a state tensor of either layout. */
static int64_t state_at(const rnn_dims *d, int64_t dir, int64_t n, int64_t h) {
    return d->batch_first ? (n * d->D + dir) * d->H + h : (dir * d->N + n) * d->H + h;
}

/* acc[j] = sum_k m[j, k] v[k] for m (rows, cols) f32. */
static void matvec(const float *m, const double *v, int64_t rows, int64_t cols, double *acc) {
    for (int64_t j = 0; j < rows; j++) {
        double s = 0.0;
        for (int64_t k = 0; k < cols; k++)
            s += (double)m[j * cols + k] * v[k];
        acc[j] = s;
    }
}

static kiln_status rnn_forward(const kn_op_call *call) {
    rnn_dims d;
    const kn_node *node = call->node;
    const kn_tensor *x = call->in[0], *w = call->in[1], *r = call->in[2];
    const kn_tensor *b = kn_input_at(call->in, node->n_in, 3), *lens = kn_input_at(call->in, node->n_in, 4);
    const kn_tensor *h0 = kn_input_at(call->in, node->n_in, 5), *c0 = kn_input_at(call->in, node->n_in, 6);
    const kn_tensor *p = kn_input_at(call->in, node->n_in, 7);
    d.kind = rnn_kind_of(node);
    d.gates = d.kind == RNN_PLAIN ? 1 : d.kind == RNN_GRU ? 3 : 4;
    d.batch_first = kn_node_int(node, "layout", 0) != 0;
    d.H = kn_node_int(node, "hidden_size", 1);
    d.D = w->shape.d[0];
    d.T = x->shape.d[d.batch_first ? 1 : 0];
    d.N = x->shape.d[d.batch_first ? 0 : 1];
    d.I = x->shape.d[2];
    if (d.kind != RNN_LSTM)
        c0 = p = NULL;
    const kn_attr *clip_attr = kn_node_attr(node, "clip");
    double clip = clip_attr ? clip_attr->f : INFINITY;
    bool reverse_only = strcmp(kn_node_string(node, "direction", "forward"), "reverse") == 0;
    bool linear_before_reset = kn_node_int(node, "linear_before_reset", 0) != 0;
    int64_t H = d.H, GH = d.gates * H;
    double *h = kn_op_scratch(call->ctx, sizeof(double) * (size_t)(2 * d.N * H + 2 * GH + H));
    if (!h)
        return kn_fail(KILN_ERR_NOMEM, "%s: no memory for its state", node->op->name);
    double *c = h + d.N * H, *gx = c + d.N * H, *gh = gx + GH, *xt = gh + GH; /* (N,H) (N,H) (GH) (GH) (H) */
    float *y = kn_f32(call->out[0]);
    memset(y, 0, sizeof(float) * (size_t)kn_numel(call->out[0]));
    for (int64_t dir = 0; dir < d.D; dir++) {
        bool backward = reverse_only || dir == 1;
        const float *W = kn_f32(w) + dir * GH * d.I, *R = kn_f32(r) + dir * GH * H;
        const float *Wb = b ? kn_f32(b) + dir * 2 * GH : NULL, *Rb = Wb ? Wb + GH : NULL;
        const float *P = p ? kn_f32(p) + dir * 3 * H : NULL;
        for (int64_t n = 0; n < d.N; n++)
            for (int64_t j = 0; j < H; j++) {
                h[n * H + j] = h0 ? kn_f32(h0)[state_at(&d, dir, n, j)] : 0.0;
                c[n * H + j] = c0 ? kn_f32(c0)[state_at(&d, dir, n, j)] : 0.0;
            }
        for (int64_t n = 0; n < d.N; n++) {
            int64_t len = lens ? kn_int_load(lens->data, lens->dtype, n) : d.T;
            if (len < 0 || len > d.T)
                return kn_fail(KILN_ERR_INVALID_ARG, "sequence_lens[%lld] is %lld; X has %lld steps", (long long)n,
                               (long long)len, (long long)d.T);
            double *hn = h + n * H, *cn = c + n * H;
            for (int64_t s = 0; s < len; s++) {
                int64_t t = backward ? len - 1 - s : s;
                const float *xv = kn_f32(x) + (d.batch_first ? (n * d.T + t) : (t * d.N + n)) * d.I;
                /* gx = W x_t + Wb, gh = R h + Rb: the gates' two products. */
                for (int64_t j = 0; j < GH; j++) {
                    double s_x = Wb ? Wb[j] : 0.0;
                    for (int64_t k = 0; k < d.I; k++)
                        s_x += (double)W[j * d.I + k] * xv[k];
                    gx[j] = s_x;
                }
                matvec(R, hn, GH, H, gh);
                for (int64_t j = 0; Rb && j < GH; j++)
                    gh[j] += Rb[j];
                for (int64_t k = 0; d.kind == RNN_GRU && k < H; k++) /* the reset gate, over gx's r block */
                    gx[H + k] = sigmoid(fmin(fmax(gx[H + k] + gh[H + k], -clip), clip));
                for (int64_t j = 0; j < H; j++) {
                    double v;
                    if (d.kind == RNN_PLAIN) {
                        v = tanh(fmin(fmax(gx[j] + gh[j], -clip), clip));
                        xt[j] = v;
                    } else if (d.kind == RNN_GRU) {
                        double z = sigmoid(fmin(fmax(gx[j] + gh[j], -clip), clip));
                        double rg = gx[H + j];
                        double pre;
                        if (linear_before_reset) {
                            pre = gx[2 * H + j] + rg * gh[2 * H + j];
                        } else { /* (r . h) R_h^T + Rb_h */
                            double acc = Rb ? Rb[2 * H + j] : 0.0;
                            for (int64_t k = 0; k < H; k++)
                                acc += (double)R[(2 * H + j) * H + k] * hn[k] * gx[H + k];
                            pre = gx[2 * H + j] + acc;
                        }
                        double hh = tanh(fmin(fmax(pre, -clip), clip));
                        xt[j] = (1.0 - z) * hh + z * hn[j];
                    } else {
                        double ig = gx[j] + gh[j] + (P ? P[j] * cn[j] : 0.0);
                        double fg = gx[2 * H + j] + gh[2 * H + j] + (P ? P[2 * H + j] * cn[j] : 0.0);
                        double cc = tanh(fmin(fmax(gx[3 * H + j] + gh[3 * H + j], -clip), clip));
                        double ct = sigmoid(fmin(fmax(fg, -clip), clip)) * cn[j] +
                                    sigmoid(fmin(fmax(ig, -clip), clip)) * cc;
                        double og = gx[H + j] + gh[H + j] + (P ? P[H + j] * ct : 0.0);
                        cn[j] = ct;
                        xt[j] = sigmoid(fmin(fmax(og, -clip), clip)) * tanh(ct);
                    }
                }
                memcpy(hn, xt, sizeof(double) * (size_t)H);
                for (int64_t j = 0; j < H; j++) {
                    int64_t at = d.batch_first ? ((n * d.T + t) * d.D + dir) * H + j
                                               : ((t * d.D + dir) * d.N + n) * H + j;
                    y[at] = (float)hn[j];
                }
            }
        }
        for (int o = 1; o < node->n_out; o++)
            for (int64_t n = 0; n < d.N; n++)
                for (int64_t j = 0; j < H; j++)
                    kn_f32(call->out[o])[state_at(&d, dir, n, j)] = (float)(o == 1 ? h : c)[n * H + j];
    }
    return KILN_OK;
}

#define RNN_OP(id, onnx_name, max_in)                                                              \
    const kn_op kn_op_##id = {.name = onnx_name, .min_inputs = 3, .max_inputs = max_in,           \
                              .infer = rnn_infer, .forward = rnn_forward, .workspace = rnn_workspace}

RNN_OP(rnn, "RNN", 6);
RNN_OP(gru, "GRU", 6);
RNN_OP(lstm, "LSTM", 8);
