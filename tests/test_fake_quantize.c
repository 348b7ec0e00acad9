/* FakeQuantize: the forward against core/quant.h, the straight-through and LSQ gradients against finite
 * differences.
 *
 * The forward is a staircase, so its own finite differences are zero almost everywhere; what the
 * straight-through estimator defines is the gradient of the surrogate in which round(u) is u plus the
 * offset round(u0) - u0 frozen at the point u0 being differentiated (and the clip decision frozen with
 * it). The test differentiates that surrogate numerically in double precision and compares the op's
 * backward with it, for x and the scale, per tensor and per channel. Where the forward itself is smooth in
 * the scale (clipped elements, binary weights) the op's scale gradient is also held to finite differences
 * of the real forward. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "support/graph_ids.h"
#include "core/graph.h"
#include "core/quant.h"
#include "core/rng.h"
#include "ops/fake_quantize.h"
#include "ops/op.h"

/* x (outer, channels, inner) with a scale per channel or one for the tensor. */
typedef struct fq_case {
    kn_graph g;
    int node;
    kn_tensor x, scale, y, dy, dx, ds;
    int64_t n, n_scale;
} fq_case;

static void fq_case_init(fq_case *t, kn_shape shape, int axis, int bits, bool is_signed, int zero_point,
                         bool with_scale, float grad_scale) {
    memset(t, 0, sizeof *t);
    kn_graph_init(&t->g);
    int64_t channels = axis >= 0 ? shape.d[axis] : 1;
    kn_shape scale_shape = kn_shape_of(1, &channels);
    int in[2] = {test_add_value(&t->g, "x", KN_VALUE_PARAM, KN_F32, &shape),
                 with_scale ? test_add_value(&t->g, "s", KN_VALUE_PARAM, KN_F32, &scale_shape) : -1};
    int out = test_add_value(&t->g, "y", KN_VALUE_ACT, KN_F32, &shape);
    t->node = test_add_node(&t->g, "FakeQuantize", "fq", with_scale ? 2 : 1, in, 1, &out);
    CHECK(t->node == 0);
    CHECK_OK(kn_node_set_int(&t->g, t->node, "bits", bits));
    CHECK_OK(kn_node_set_int(&t->g, t->node, "signed", is_signed));
    CHECK_OK(kn_node_set_int(&t->g, t->node, "axis", axis));
    CHECK_OK(kn_node_set_int(&t->g, t->node, "zero_point", zero_point));
    CHECK_OK(kn_node_set_float(&t->g, t->node, "grad_scale", grad_scale));
    CHECK_OK(kn_graph_infer_shapes(&t->g));
    t->n = kn_shape_numel(&shape);
    t->n_scale = channels;
    t->x = (kn_tensor){shape, KN_F32, t->g.values[in[0]].data};
    t->scale = (kn_tensor){scale_shape, KN_F32, with_scale ? t->g.values[in[1]].data : NULL};
    t->y = (kn_tensor){shape, KN_F32, calloc((size_t)t->n, sizeof(float))};
    t->dy = (kn_tensor){shape, KN_F32, calloc((size_t)t->n, sizeof(float))};
    t->dx = (kn_tensor){shape, KN_F32, calloc((size_t)t->n, sizeof(float))};
    t->ds = (kn_tensor){scale_shape, KN_F32, calloc((size_t)channels, sizeof(float))};
}

static void fq_case_free(fq_case *t) {
    free(t->y.data);
    free(t->dy.data);
    free(t->dx.data);
    free(t->ds.data);
    kn_graph_free(&t->g);
}

static kiln_status fq_forward(fq_case *t) {
    kn_tensor *in[2] = {&t->x, t->scale.data ? &t->scale : NULL}, *out[1] = {&t->y};
    kn_op_ctx ctx = {0};
    kn_op_call call = {.node = &t->g.nodes[t->node], .in = in, .out = out, .ctx = &ctx};
    return t->g.nodes[t->node].op->forward(&call);
}

static kiln_status fq_backward(fq_case *t) {
    memset(t->dx.data, 0, sizeof(float) * (size_t)t->n);
    memset(t->ds.data, 0, sizeof(float) * (size_t)t->n_scale);
    kn_tensor *in[2] = {&t->x, t->scale.data ? &t->scale : NULL}, *out[1] = {&t->y};
    const kn_tensor *dout[1] = {&t->dy};
    kn_tensor *din[2] = {&t->dx, t->scale.data ? &t->ds : NULL};
    kn_op_ctx ctx = {0};
    kn_op_call call = {.node = &t->g.nodes[t->node], .in = in, .out = out, .dout = dout, .din = din, .ctx = &ctx};
    return t->g.nodes[t->node].op->backward(&call);
}

static void fill_uniform(float *p, int64_t n, kn_rng *rng, float lo, float hi) {
    for (int64_t i = 0; i < n; i++)
        p[i] = lo + (hi - lo) * kn_rng_uniform(rng);
}

/* ---- forward ---- */

static void test_forward_matches_core_quant(void) {
    kn_shape shape = kn_shape_of(3, (int64_t[]){2, 3, 5});
    for (int axis = -1; axis <= 1; axis += 2) {
        fq_case t;
        fq_case_init(&t, shape, axis, 4, false, 3, true, 1.0f);
        kn_rng rng = kn_rng_seeded(7);
        fill_uniform(kn_f32(&t.x), t.n, &rng, -1.5f, 2.5f);
        fill_uniform(kn_f32(&t.scale), t.n_scale, &rng, 0.05f, 0.3f);
        CHECK_OK(fq_forward(&t));
        kn_quant_range r = kn_quant_range_of(4, false);
        int mismatches = 0;
        for (int64_t i = 0; i < t.n; i++) {
            int64_t c = axis < 0 ? 0 : i / 5 % 3;
            mismatches += kn_f32(&t.y)[i] != kn_quant_fake(kn_f32(&t.x)[i], kn_f32(&t.scale)[c], 3, r);
        }
        CHECK_MSG(mismatches == 0, "axis %d: %d elements differ from kn_quant_fake", axis, mismatches);
        fq_case_free(&t);
    }
}

/* Without a scale input: each channel's symmetric min/max scale; binary: +-mean|x|. */
static void test_forward_dynamic_and_binary(void) {
    kn_shape shape = kn_shape_of(2, (int64_t[]){4, 6});
    fq_case t;
    fq_case_init(&t, shape, 0, 8, true, 0, false, 1.0f);
    kn_rng rng = kn_rng_seeded(3);
    fill_uniform(kn_f32(&t.x), t.n, &rng, -1.0f, 0.7f);
    CHECK_OK(fq_forward(&t));
    kn_quant_range r = kn_quant_range_of(8, true);
    int bad = 0;
    for (int c = 0; c < 4; c++) {
        const float *x = kn_f32(&t.x) + c * 6;
        float lo = 0, hi = 0, s;
        int32_t zp;
        for (int i = 0; i < 6; i++)
            lo = fminf(lo, x[i]), hi = fmaxf(hi, x[i]);
        kn_quant_params(lo, hi, r, true, &s, &zp);
        for (int i = 0; i < 6; i++)
            bad += kn_f32(&t.y)[c * 6 + i] != kn_quant_fake(x[i], s, zp, r);
    }
    CHECK_MSG(bad == 0, "%d elements differ from per-channel min/max quantization", bad);
    fq_case_free(&t);

    /* kn_fake_quant_mse_scale (QAT's starting scale): quantizes each channel no worse than min/max. */
    float w[4 * 6];
    fill_uniform(w, 24, &rng, -1.0f, 0.7f);
    kn_quant_range r2 = kn_quant_range_of(2, true);
    kn_fake_quant_layout l = {1, 4, 6};
    for (int c = 0; c < 4; c++) {
        const float *x = w + c * 6;
        float s_mse = kn_fake_quant_mse_scale(w, l, c, r2), lo = 0, hi = 0, s_mm;
        int32_t zp;
        for (int i = 0; i < 6; i++)
            lo = fminf(lo, x[i]), hi = fmaxf(hi, x[i]);
        kn_quant_params(lo, hi, r2, true, &s_mm, &zp);
        double err_mse = 0, err_mm = 0;
        for (int i = 0; i < 6; i++) {
            err_mse += pow(x[i] - kn_quant_fake(x[i], s_mse, 0, r2), 2);
            err_mm += pow(x[i] - kn_quant_fake(x[i], s_mm, 0, r2), 2);
        }
        CHECK_MSG(err_mse <= err_mm && s_mse <= s_mm, "channel %d: the mse scale %g (error %g) against min/max's %g "
                  "(error %g)", c, s_mse, err_mse, s_mm, err_mm);
    }

    fq_case_init(&t, shape, 0, 1, true, 0, false, 1.0f);
    fill_uniform(kn_f32(&t.x), t.n, &rng, -1.0f, 0.7f);
    CHECK_OK(fq_forward(&t));
    bad = 0;
    for (int c = 0; c < 4; c++) {
        const float *x = kn_f32(&t.x) + c * 6;
        double abs_sum = 0;
        for (int i = 0; i < 6; i++)
            abs_sum += fabsf(x[i]);
        float alpha = (float)(abs_sum / 6);
        for (int i = 0; i < 6; i++)
            bad += kn_f32(&t.y)[c * 6 + i] != (x[i] >= 0 ? alpha : -alpha);
    }
    CHECK_MSG(bad == 0, "%d binary elements differ from +-mean|x|", bad);
    fq_case_free(&t);
}

/* ---- gradients ---- */

/* L = sum r * y of the straight-through surrogate at (x, s), with the rounding offsets and the clip
 * decisions of the base point (x0, s0), in double precision. */
static double surrogate_loss(const fq_case *t, const float *x0, const float *s0, const double *x, const double *s,
                             int axis_inner, int channels, int bits, bool is_signed, int zp, const float *r) {
    kn_quant_range q = kn_quant_range_of(bits, is_signed);
    double loss = 0;
    for (int64_t i = 0; i < t->n; i++) {
        int64_t c = channels == 1 ? 0 : i / axis_inner % channels;
        float u0 = x0[i] / s0[c];
        float level0 = nearbyintf(u0) + (float)zp;
        double y;
        if (bits == 1)
            y = (x0[i] >= 0 ? s[c] : -s[c]) + (x[i] - x0[i]); /* the identity straight through */
        else if (level0 < (float)q.qmin || level0 > (float)q.qmax)
            y = ((level0 < (float)q.qmin ? q.qmin : q.qmax) - zp) * s[c];
        else
            y = (x[i] / s[c] + (double)(nearbyintf(u0) - u0)) * s[c];
        loss += r[i] * y;
    }
    return loss;
}

/* The op's dx and dscale against central differences of the surrogate, with L = sum r * y. */
static void check_gradients(int axis, int bits, bool is_signed, int zp, float grad_scale, float x_lo, float x_hi) {
    kn_shape shape = kn_shape_of(3, (int64_t[]){3, 4, 5});
    int axis_inner = axis == 1 ? 5 : 20, channels = axis < 0 ? 1 : (int)shape.d[axis];
    fq_case t;
    fq_case_init(&t, shape, axis, bits, is_signed, zp, true, grad_scale);
    kn_rng rng = kn_rng_seeded((uint64_t)(bits * 100 + axis + 10));
    fill_uniform(kn_f32(&t.x), t.n, &rng, x_lo, x_hi);
    fill_uniform(kn_f32(&t.scale), t.n_scale, &rng, 0.1f, 0.4f);
    fill_uniform(kn_f32(&t.dy), t.n, &rng, -1.0f, 1.0f);
    CHECK_OK(fq_forward(&t));
    CHECK_OK(fq_backward(&t));
    const float *x0 = kn_f32(&t.x), *s0 = kn_f32(&t.scale), *r = kn_f32(&t.dy);
    double *x = malloc(sizeof(double) * (size_t)t.n), *s = malloc(sizeof(double) * (size_t)t.n_scale);
    for (int64_t i = 0; i < t.n; i++)
        x[i] = x0[i];
    for (int64_t c = 0; c < t.n_scale; c++)
        s[c] = s0[c];
    const double eps = 1e-4;
    double worst_x = 0, worst_s = 0;
    int clipped = 0;
    for (int64_t i = 0; i < t.n; i++) {
        x[i] += eps;
        double up = surrogate_loss(&t, x0, s0, x, s, axis_inner, channels, bits, is_signed, zp, r);
        x[i] -= 2 * eps;
        double down = surrogate_loss(&t, x0, s0, x, s, axis_inner, channels, bits, is_signed, zp, r);
        x[i] = x0[i];
        double numeric = (up - down) / (2 * eps);
        worst_x = fmax(worst_x, fabs(numeric - kn_f32(&t.dx)[i]));
        clipped += numeric == 0;
    }
    for (int64_t c = 0; c < t.n_scale; c++) {
        s[c] += eps;
        double up = surrogate_loss(&t, x0, s0, x, s, axis_inner, channels, bits, is_signed, zp, r);
        s[c] -= 2 * eps;
        double down = surrogate_loss(&t, x0, s0, x, s, axis_inner, channels, bits, is_signed, zp, r);
        s[c] = s0[c];
        double numeric = grad_scale * (up - down) / (2 * eps);
        worst_s = fmax(worst_s, fabs(numeric - kn_f32(&t.ds)[c]) / (1 + fabs(numeric)));
    }
    CHECK_MSG(worst_x < 1e-3 && worst_s < 1e-3, "bits %d axis %d: dx off by %g, dscale by %g (relative)", bits,
              axis, worst_x, worst_s);
    /* The data must exercise both sides of the clip (not binary, where nothing is clipped). */
    if (bits > 1)
        CHECK_MSG(clipped > 0 && clipped < t.n, "bits %d: %d of %lld elements clipped", bits, clipped, (long long)t.n);
    free(x);
    free(s);
    fq_case_free(&t);
}

static void test_ste_and_lsq_gradients(void) {
    check_gradients(-1, 4, true, 0, 1.0f, -2.0f, 2.0f);   /* per tensor, signed int4 */
    check_gradients(0, 2, true, 0, 1.0f, -1.0f, 1.0f);    /* per channel (axis 0), int2 */
    check_gradients(1, 8, false, 5, 1.0f, -3.0f, 60.0f);  /* per channel (axis 1), u8 with a zero point */
    check_gradients(1, 4, false, 2, 0.25f, -1.0f, 3.0f);  /* LSQ's gradient scale multiplies ds */
    check_gradients(0, 1, true, 0, 1.0f, -1.0f, 1.0f);    /* binary: dalpha = sum dy sign(x) */
}

/* The real forward is linear in the scale for clipped and binary elements: there its finite differences
 * are the op's scale gradient exactly (up to rounding). */
static void test_scale_gradient_where_forward_is_smooth(void) {
    for (int bits = 1; bits <= 2; bits++) {
        kn_shape shape = kn_shape_of(1, (int64_t[]){8});
        fq_case t;
        fq_case_init(&t, shape, -1, bits, true, 0, true, 1.0f);
        const float xs[8] = {5, -6, 7.5f, -9, 4.25f, -4.5f, 8, -5.5f}; /* |x| / s >= 4: clipped at 2 bits */
        memcpy(t.x.data, xs, sizeof xs);
        kn_f32(&t.scale)[0] = 0.5f;
        for (int i = 0; i < 8; i++)
            kn_f32(&t.dy)[i] = 0.25f * (float)(i + 1);
        CHECK_OK(fq_backward(&t));
        double loss[2];
        for (int k = 0; k < 2; k++) {
            kn_f32(&t.scale)[0] = 0.5f + (k ? -1e-3f : 1e-3f);
            CHECK_OK(fq_forward(&t));
            loss[k] = 0;
            for (int i = 0; i < 8; i++)
                loss[k] += (double)kn_f32(&t.dy)[i] * kn_f32(&t.y)[i];
        }
        double numeric = (loss[0] - loss[1]) / (2 * (double)1e-3f);
        CHECK_NEAR(kn_f32(&t.ds)[0], numeric, 1e-3 * (1 + fabs(numeric)));
        for (int i = 0; i < 8 && bits == 2; i++)
            CHECK(kn_f32(&t.dx)[i] == 0.0f); /* every element clipped: no gradient to x */
        fq_case_free(&t);
    }
}

static void test_bad_attributes(void) {
    kn_shape shape = kn_shape_of(1, (int64_t[]){4});
    const struct {
        const char *attr;
        int64_t value;
    } bad[] = {{"bits", 9}, {"bits", 0}, {"axis", 3}, {"zero_point", 300}};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        kn_graph g;
        kn_graph_init(&g);
        int x = test_add_value(&g, "x", KN_VALUE_PARAM, KN_F32, &shape);
        int y = test_add_value(&g, "y", KN_VALUE_ACT, KN_F32, &shape);
        int node = test_add_node(&g, "FakeQuantize", "fq", 1, &x, 1, &y);
        CHECK_OK(kn_node_set_int(&g, node, bad[k].attr, bad[k].value));
        CHECK_MSG(kn_graph_infer_shapes(&g) != KILN_OK, "%s = %lld accepted", bad[k].attr, (long long)bad[k].value);
        kn_graph_free(&g);
    }
}

int main(void) {
    CHECK(kn_op_find("FakeQuantize") != NULL);
    test_forward_matches_core_quant();
    test_forward_dynamic_and_binary();
    test_ste_and_lsq_gradients();
    test_scale_gradient_where_forward_is_smooth();
    test_bad_attributes();
    return check_finish();
}
