#include "opcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "ops/op.h"

void opcheck_fill_uniform(kn_graph *g, unsigned long long seed, float lo, float hi) {
    kn_rng rng = kn_rng_seeded(seed);
    for (int v = 0; v < g->n_values; v++) {
        kn_value *val = &g->values[v];
        if (val->kind != KN_VALUE_PARAM || val->dtype != KN_F32)
            continue;
        float *p = val->data;
        for (int64_t i = 0; i < kn_shape_numel(&val->shape); i++)
            p[i] = lo + (hi - lo) * kn_rng_uniform(&rng);
    }
}

typedef struct bound_node {
    kn_tensor in[16], out[16], dout[16], din[16];
    kn_tensor *in_p[16], *out_p[16], *din_p[16];
    const kn_tensor *dout_p[16];
} bound_node;

static bool bind(kn_graph *g, const kn_node *n, bound_node *b) {
    memset(b, 0, sizeof *b);
    for (int i = 0; i < n->n_in; i++) {
        if (n->in[i] < 0)
            continue;
        kn_value *v = &g->values[n->in[i]];
        b->in[i] = (kn_tensor){v->shape, v->dtype, v->data};
        b->in_p[i] = &b->in[i];
    }
    for (int i = 0; i < n->n_out; i++) {
        kn_value *v = &g->values[n->out[i]];
        size_t bytes;
        if (!kn_shape_bytes(&v->shape, v->dtype, &bytes))
            return false;
        b->out[i] = (kn_tensor){v->shape, v->dtype, calloc(1, bytes + 4)};
        b->out_p[i] = &b->out[i];
    }
    return true;
}

static void unbind(bound_node *b, int n_out) {
    for (int i = 0; i < n_out; i++)
        free(b->out[i].data);
}

static double weighted_sum(const kn_tensor *out, const float *r) {
    double s = 0;
    const float *o = out->data;
    for (int64_t i = 0; i < kn_numel(out); i++)
        s += (double)o[i] * r[i];
    return s;
}

kn_tensor *opcheck_forward(kn_graph *g, int node, bool training) {
    if (kn_graph_infer_shapes(g) != KILN_OK)
        return NULL;
    const kn_node *n = &g->nodes[node];
    bound_node b;
    if (!bind(g, n, &b))
        return NULL;
    kn_op_ctx ctx = {.training = training, .seed = 1234, .node_index = node};
    kn_op_call call = {.node = n, .in = b.in_p, .out = b.out_p, .ctx = &ctx};
    kiln_status st = n->op->forward(&call);
    kn_op_ctx_release(&ctx);
    if (st != KILN_OK) {
        unbind(&b, n->n_out);
        return NULL;
    }
    kn_tensor *outs = calloc((size_t)n->n_out, sizeof *outs);
    memcpy(outs, b.out, sizeof(kn_tensor) * (size_t)n->n_out);
    return outs;
}

void opcheck_free_outputs(kn_tensor *outs, int n) {
    if (!outs)
        return;
    for (int i = 0; i < n; i++)
        free(outs[i].data);
    free(outs);
}

/* L = sum over outputs of sum(out_k * r_k), recomputed after perturbing an input. */
static double loss_at(const kn_node *n, bound_node *b, float **r, kn_op_ctx *ctx) {
    kn_op_call call = {.node = n, .in = b->in_p, .out = b->out_p, .ctx = ctx};
    if (n->op->forward(&call) != KILN_OK)
        return NAN;
    double s = 0;
    for (int k = 0; k < n->n_out; k++)
        if (b->out[k].dtype == KN_F32)
            s += weighted_sum(&b->out[k], r[k]);
    return s;
}

/* For an op with backward_stores: a second backward into NaN-filled buffers marked fresh must store
 * exactly the gradients the first one added to zeros. */
static bool fresh_gradients_match(const kn_node *n, bound_node *b, kn_op_ctx *ctx) {
    kn_tensor fresh[16];
    kn_tensor *fresh_p[16] = {0};
    unsigned mask = 0;
    for (int i = 0; i < n->n_in; i++) {
        if (!b->din_p[i])
            continue;
        int64_t cnt = kn_numel(&b->din[i]);
        fresh[i] = (kn_tensor){b->din[i].shape, KN_F32, malloc(sizeof(float) * (size_t)(cnt ? cnt : 1))};
        for (int64_t e = 0; e < cnt; e++)
            kn_f32(&fresh[i])[e] = NAN;
        fresh_p[i] = &fresh[i];
        mask |= 1u << i;
    }
    kn_op_call call = {.node = n, .in = b->in_p, .out = b->out_p, .dout = b->dout_p, .din = fresh_p, .ctx = ctx,
                       .din_fresh = mask};
    bool ok = n->op->backward(&call) == KILN_OK;
    if (!ok)
        fprintf(stderr, "opcheck: backward into fresh buffers failed: %s\n", kiln_last_error());
    for (int i = 0; i < n->n_in; i++) {
        if (!fresh_p[i])
            continue;
        for (int64_t e = 0; ok && e < kn_numel(&fresh[i]); e++) {
            float stored = kn_f32(&fresh[i])[e], added = kn_f32(&b->din[i])[e];
            if (stored != added && !(isnan(stored) && isnan(added))) {
                fprintf(stderr, "  %s input %d element %lld: stored %.9g into a fresh buffer, added %.9g\n",
                        n->op->name, i, (long long)e, stored, added);
                ok = false;
            }
        }
        free(fresh[i].data);
    }
    return ok;
}

double opcheck_gradients(kn_graph *g, int node, const opcheck_options *options) {
    opcheck_options o = {1e-3, 1e-2, 1e-2, 64, false, 0};
    if (options) {
        o = *options;
        if (o.eps <= 0) o.eps = 1e-3;
        if (o.atol <= 0) o.atol = 1e-2;
        if (o.rtol <= 0) o.rtol = 1e-2;
        if (o.max_elements <= 0) o.max_elements = 64;
    }
    if (kn_graph_infer_shapes(g) != KILN_OK) {
        fprintf(stderr, "opcheck: shape inference failed: %s\n", kiln_last_error());
        return -1;
    }
    const kn_node *n = &g->nodes[node];
    if (!n->op->backward) {
        fprintf(stderr, "opcheck: op %s has no backward\n", n->op->name);
        return -1;
    }
    bound_node b;
    if (!bind(g, n, &b))
        return -1;
    kn_op_ctx ctx = {.training = o.training, .seed = 1234, .step = 7, .node_index = node};
    float *r[16] = {0};
    kn_rng rng = kn_rng_seeded(99);
    for (int k = 0; k < n->n_out; k++) {
        int64_t cnt = kn_numel(&b.out[k]);
        r[k] = malloc(sizeof(float) * (size_t)(cnt ? cnt : 1));
        for (int64_t i = 0; i < cnt; i++)
            r[k][i] = 2.0f * kn_rng_uniform(&rng) - 1.0f;
        b.dout[k] = (kn_tensor){b.out[k].shape, KN_F32, r[k]};
        b.dout_p[k] = b.out[k].dtype == KN_F32 ? &b.dout[k] : NULL;
    }
    double worst = 0;
    if (isnan(loss_at(n, &b, r, &ctx))) {
        fprintf(stderr, "opcheck: forward failed: %s\n", kiln_last_error());
        worst = -1;
        goto done;
    }
    for (int i = 0; i < n->n_in; i++) {
        bool wanted = o.grad_mask ? (o.grad_mask >> i) & 1u
                                  : (b.in_p[i] && g->values[n->in[i]].kind == KN_VALUE_PARAM &&
                                     b.in[i].dtype == KN_F32);
        if (wanted && b.in_p[i]) {
            int64_t cnt = kn_numel(&b.in[i]);
            b.din[i] = (kn_tensor){b.in[i].shape, KN_F32, calloc((size_t)(cnt ? cnt : 1), sizeof(float))};
            b.din_p[i] = &b.din[i];
        }
    }
    kn_op_call call = {.node = n, .in = b.in_p, .out = b.out_p, .dout = b.dout_p, .din = b.din_p, .ctx = &ctx};
    if (n->op->backward(&call) != KILN_OK) {
        fprintf(stderr, "opcheck: backward failed: %s\n", kiln_last_error());
        worst = -1;
        goto done;
    }
    if (n->op->backward_stores && !fresh_gradients_match(n, &b, &ctx)) {
        worst = INFINITY;
        goto done;
    }
    for (int i = 0; i < n->n_in; i++) {
        if (!b.din_p[i])
            continue;
        float *x = b.in[i].data;
        const float *analytic = b.din[i].data;
        int64_t cnt = kn_numel(&b.in[i]);
        int64_t stride = cnt > o.max_elements ? cnt / o.max_elements : 1;
        double max_diff = 0;
        for (int64_t e = 0; e < cnt; e += stride) {
            float saved = x[e];
            x[e] = (float)(saved + o.eps);
            double up = loss_at(n, &b, r, &ctx);
            x[e] = (float)(saved - o.eps);
            double down = loss_at(n, &b, r, &ctx);
            x[e] = saved;
            double numeric = (up - down) / (2 * o.eps);
            double diff = fabs(analytic[e] - numeric);
            double ratio = diff / (o.atol + o.rtol * fabs(numeric));
            if (diff > max_diff)
                max_diff = diff;
            if (ratio > worst)
                worst = ratio;
            if (ratio > 1)
                fprintf(stderr, "  %s input %d element %lld: analytic %.6g numeric %.6g\n", n->op->name,
                        i, (long long)e, analytic[e], numeric);
        }
        printf("  %-20s input %d (%s): max |analytic - numeric| = %.3g\n", n->op->name, i,
               g->values[n->in[i]].name, max_diff);
    }
    loss_at(n, &b, r, &ctx); /* leave the outputs as of the unperturbed inputs */
done:
    for (int k = 0; k < n->n_out; k++)
        free(r[k]);
    for (int i = 0; i < n->n_in; i++)
        free(b.din[i].data);
    unbind(&b, n->n_out);
    kn_op_ctx_release(&ctx);
    return worst;
}
