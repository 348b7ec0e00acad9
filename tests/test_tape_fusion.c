/* The training tape's shortcuts against the plain graph. It runs a Relu that follows a
 * BatchNormalization inside it (kn_op_call.fused_relu), and the backward of a 2x2 MaxPool that follows
 * that Relu inside the BatchNormalization's (kn_op_call.fused_pool_dout).
 * A Dropout of ratio 0 between two of them multiplies by exactly 1 and keeps the pair apart, so the same
 * network with and without that Dropout must give bit-identical logits, parameter gradients and
 * running statistics: the fused path is held to the separate ops. And gradients a backward stores
 * whole (kn_op_call.din_fresh) still accumulate over a second backward. BatchNormalization's batch
 * statistics, kept from forward for backward (kn_op_call.saved), give the gradients that computing them
 * again gives. The buffers the tape shares between a copy op's input and output, and between an Add's
 * output gradient and its inputs', leave a transformer's gradients those of central differences. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "train/loss.h"
#include "train/spec.h"
#include "train/tape.h"

static const char *fused_spec = "input 3 6 6\nconv 4 3 pad=1\nbatchnorm\nrelu\nflatten\ndense 5\n";
static const char *apart_spec = "input 3 6 6\nconv 4 3 pad=1\nbatchnorm\ndropout 0\nrelu\nflatten\ndense 5\n";
/* The pool fused, the pool apart (the Relu still fused), both apart; 70 channels: more than one block
 * of BatchNormalization's channels */
static const char *pool_fused_spec = "input 3 6 6\nconv 70 3 pad=1\nbatchnorm\nrelu\nmaxpool 2\nflatten\ndense 5\n";
static const char *pool_apart_spec =
    "input 3 6 6\nconv 70 3 pad=1\nbatchnorm\nrelu\ndropout 0\nmaxpool 2\nflatten\ndense 5\n";
static const char *all_apart_spec =
    "input 3 6 6\nconv 70 3 pad=1\nbatchnorm\ndropout 0\nrelu\nmaxpool 2\nflatten\ndense 5\n";

/* A small vision transformer: head reshapes (copy ops), bias and residual Adds, attention. */
static const char *vit_spec = "input 1 8 8\npatchify 4\ndense 16\nposembed\ntransformer 16 2 32\nlayernorm\n"
                              "meanpool\ndense 5\n";

enum { BATCH = 4, CLASSES = 5 };

/* Trains one step on fixed data; leaves the tape bound so that gradients can be read. */
static void run_step(kn_graph *g, kn_tape *t, bool training) {
    CHECK_OK(kn_tape_init(t, g, BATCH, true));
    float *x = kn_f32(kn_tape_input(t, 0)); // (BATCH, 3, 6, 6)
    for (int64_t i = 0; i < kn_numel(kn_tape_input(t, 0)); i++)
        x[i] = (float)((i * 37) % 23) / 11.0f - 1.0f;
    CHECK_OK(kn_tape_forward(t, training));
    int64_t labels[BATCH] = {0, 3, 1, 4};
    int64_t batch = BATCH;
    kn_tensor target = {kn_shape_of(1, &batch), KN_I64, labels};
    kn_loss loss = {KN_LOSS_CE, KN_REDUCTION_MEAN, 0.0f};
    double loss_value;
    CHECK_OK(kn_loss_compute(&loss, kn_tape_output(t, 0), &target, &loss_value, kn_tape_output_grad(t, 0)));
    kn_tape_zero_param_grads(t);
    CHECK_OK(kn_tape_backward(t));
}

/* Number of elements that differ between the i-th PARAM (or STATE) values of the two graphs. */
static int64_t count_differences(const kn_graph *a, const kn_graph *b, kn_value_kind kind, kn_tape *ta,
                                 kn_tape *tb, bool grads) {
    int64_t differ = 0;
    int vb = 0;
    for (int va = 0; va < a->n_values; va++) {
        if (a->values[va].kind != kind)
            continue;
        while (vb < b->n_values && b->values[vb].kind != kind)
            vb++;
        CHECK(vb < b->n_values);
        if (vb >= b->n_values)
            return -1;
        const float *pa = grads ? kn_f32(kn_tape_grad(ta, va)) : a->values[va].data;
        const float *pb = grads ? kn_f32(kn_tape_grad(tb, vb)) : b->values[vb].data;
        for (int64_t i = 0; i < kn_shape_numel(&a->values[va].shape); i++)
            differ += pa[i] != pb[i];
        vb++;
    }
    return differ;
}

/* Gives b's parameters and states a's values, in order. */
static void copy_initializers(const kn_graph *a, kn_graph *b) {
    int vb = 0;
    for (int va = 0; va < a->n_values; va++) {
        kn_value_kind kind = a->values[va].kind;
        if (kind != KN_VALUE_PARAM && kind != KN_VALUE_STATE)
            continue;
        while (vb < b->n_values && b->values[vb].kind != KN_VALUE_PARAM && b->values[vb].kind != KN_VALUE_STATE)
            vb++;
        CHECK(vb < b->n_values && kn_shape_numel(&b->values[vb].shape) == kn_shape_numel(&a->values[va].shape));
        if (vb >= b->n_values)
            return;
        memcpy(b->values[vb].data, a->values[va].data, sizeof(float) * (size_t)kn_shape_numel(&a->values[va].shape));
        vb++;
    }
}

static void compare(const char *fused_text, const char *apart_text, bool training) {
    kn_graph fused, apart;
    CHECK_OK(kn_spec_parse(fused_text, "fused", 5, &fused));
    CHECK_OK(kn_spec_parse(apart_text, "apart", 5, &apart));
    copy_initializers(&fused, &apart);
    kn_tape tf, ta;
    run_step(&fused, &tf, training);
    run_step(&apart, &ta, training);
    int pools_fused = 0;
    for (int i = 0; i < fused.n_nodes; i++)
        pools_fused += tf.pool_fused_into[i] == -2;
    CHECK(pools_fused == (strstr(fused_text, "maxpool") ? 1 : 0)); /* the shortcut under test is taken */
    const float *lf = kn_f32(kn_tape_output(&tf, 0)), *la = kn_f32(kn_tape_output(&ta, 0));
    int64_t logits_differ = 0;
    for (int64_t i = 0; i < BATCH * CLASSES; i++)
        logits_differ += lf[i] != la[i];
    int64_t grads_differ = count_differences(&fused, &apart, KN_VALUE_PARAM, &tf, &ta, true);
    int64_t states_differ = count_differences(&fused, &apart, KN_VALUE_STATE, &tf, &ta, false);
    printf("%s, %s: elements differing, fused vs apart: logits %lld, parameter gradients %lld, states %lld\n",
           strstr(fused_text, "maxpool") ? "with a pool" : "Relu", training ? "training" : "eval",
           (long long)logits_differ, (long long)grads_differ,
           (long long)states_differ);
    CHECK(logits_differ == 0);
    CHECK(grads_differ == 0);
    CHECK(states_differ == 0);
    kn_tape_free(&tf);
    kn_tape_free(&ta);
    kn_graph_free(&fused);
    kn_graph_free(&apart);
}

/* A second backward without kn_tape_zero_param_grads adds to the gradients, so they double (up to
 * the rounding of Conv's sums over images), even where the first one stored them whole (Gemm's and
 * BatchNormalization's, MatMul's in a transformer). A second backward that stored would leave them as
 * they were. */
static void test_accumulation(const char *spec) {
    kn_graph g;
    CHECK_OK(kn_spec_parse(spec, "accumulate", 5, &g));
    kn_tape t;
    run_step(&g, &t, true);
    int64_t total = 0, not_doubled = 0;
    float *first[16] = {0};
    int params = 0;
    for (int v = 0; v < g.n_values && params < 16; v++) {
        if (g.values[v].kind != KN_VALUE_PARAM)
            continue;
        int64_t n = kn_shape_numel(&g.values[v].shape);
        first[params] = malloc(sizeof(float) * (size_t)n);
        memcpy(first[params++], kn_f32(kn_tape_grad(&t, v)), sizeof(float) * (size_t)n);
    }
    CHECK_OK(kn_tape_backward(&t));
    params = 0;
    for (int v = 0; v < g.n_values && params < 16; v++) {
        if (g.values[v].kind != KN_VALUE_PARAM)
            continue;
        const float *now = kn_f32(kn_tape_grad(&t, v));
        int64_t n = kn_shape_numel(&g.values[v].shape);
        float scale = 0.0f; /* sums over images round relative to the tensor's largest elements */
        for (int64_t i = 0; i < n; i++)
            scale = fmaxf(scale, fabsf(first[params][i]));
        for (int64_t i = 0; i < n; i++, total++)
            not_doubled += fabsf(now[i] - 2.0f * first[params][i]) > 1e-5f * scale;
        free(first[params++]);
    }
    printf("two backwards without zeroing: %lld of %lld parameter gradient elements not doubled\n",
           (long long)not_doubled, (long long)total);
    CHECK(total > 0 && not_doubled == 0);
    kn_tape_free(&t);
    kn_graph_free(&g);
}

/* Every parameter gradient of the tape, one after another, in a new buffer of *n floats. */
static float *param_grads(const kn_graph *g, kn_tape *t, int64_t *n) {
    *n = 0;
    for (int v = 0; v < g->n_values; v++)
        *n += g->values[v].kind == KN_VALUE_PARAM ? kn_shape_numel(&g->values[v].shape) : 0;
    float *all = malloc(sizeof(float) * (size_t)(*n ? *n : 1)), *at = all;
    for (int v = 0; all && v < g->n_values; v++) {
        if (g->values[v].kind != KN_VALUE_PARAM)
            continue;
        int64_t count = kn_shape_numel(&g->values[v].shape);
        memcpy(at, kn_f32(kn_tape_grad(t, v)), sizeof(float) * (size_t)count);
        at += count;
    }
    return all;
}

static int64_t count_unequal(const float *a, const float *b, int64_t n) {
    int64_t differ = 0;
    for (int64_t i = 0; i < n; i++)
        differ += a[i] != b[i];
    return differ;
}

/* Backward with the statistics forward kept, without them (recomputed from X), and with them changed:
 * the first two give the same bits, the third does not (backward reads what was kept). */
static void test_saved_statistics(void) {
    kn_graph g;
    CHECK_OK(kn_spec_parse(fused_spec, "saved", 5, &g));
    kn_tape t;
    run_step(&g, &t, true);
    int bn = -1;
    for (int i = 0; i < g.n_nodes; i++)
        bn = g.nodes[i].op == &kn_op_batchnormalization ? i : bn;
    CHECK(bn >= 0 && t.saved && t.saved[bn]);
    if (bn < 0 || !t.saved || !t.saved[bn]) {
        kn_tape_free(&t);
        kn_graph_free(&g);
        return;
    }
    int64_t n;
    float *kept = param_grads(&g, &t, &n);
    void **saved = t.saved;
    t.saved = NULL; /* backward as without a buffer: the statistics computed again */
    kn_tape_zero_param_grads(&t);
    CHECK_OK(kn_tape_backward(&t));
    float *recomputed = param_grads(&g, &t, &n);
    t.saved = saved;
    ((double *)t.saved[bn])[0] += 0.5; /* channel 0's mean */
    kn_tape_zero_param_grads(&t);
    CHECK_OK(kn_tape_backward(&t));
    float *changed = param_grads(&g, &t, &n);
    int64_t same_differ = count_unequal(kept, recomputed, n), changed_differ = count_unequal(kept, changed, n);
    printf("saved statistics: %lld of %lld gradient elements differ from recomputing; %lld with a changed mean\n",
           (long long)same_differ, (long long)n, (long long)changed_differ);
    CHECK(n > 0 && same_differ == 0 && changed_differ > 0);
    free(kept);
    free(recomputed);
    free(changed);
    kn_tape_free(&t);
    kn_graph_free(&g);
}


/* The loss of the fixed batch run_step trains on, at the graph's current parameters. */
static double vit_loss(kn_tape *t) {
    CHECK_OK(kn_tape_forward(t, true));
    int64_t labels[BATCH] = {0, 3, 1, 4}, batch = BATCH;
    kn_tensor target = {kn_shape_of(1, &batch), KN_I64, labels};
    kn_loss loss = {KN_LOSS_CE, KN_REDUCTION_MEAN, 0.0f};
    double value = 0.0;
    CHECK_OK(kn_loss_compute(&loss, kn_tape_output(t, 0), &target, &value, kn_tape_output_grad(t, 0)));
    return value;
}

/* Buffers the tape shares instead of copying (kn_tape.value_alias, grad_alias: copy ops' outputs, Add
 * inputs' gradients) are taken in a transformer, and its parameter gradients still match central
 * differences of the loss, and still double over a second backward without zeroing. */
static void test_shared_buffers(void) {
    kn_graph g;
    CHECK_OK(kn_spec_parse(vit_spec, "shared", 5, &g));
    kn_tape t;
    run_step(&g, &t, true);
    int values_shared = 0, grads_shared = 0;
    for (int v = 0; v < g.n_values; v++) {
        values_shared += t.value_alias[v] >= 0 && t.values[v].data == t.values[t.value_alias[v]].data;
        grads_shared += t.grad_alias[v] >= 0 && t.grads[v].data && t.grads[v].data == t.grads[t.grad_alias[v]].data;
    }
    printf("transformer: %d activations and %d gradients share another's buffer\n", values_shared, grads_shared);
    CHECK(values_shared >= 6 && grads_shared >= 10); /* the head reshapes; the bias, residual Adds and reshapes */

    int64_t n;
    float *grads = param_grads(&g, &t, &n);
    const float eps = 1e-2f;
    double worst = 0.0, largest = 0.0;
    int64_t at = 0, checked = 0;
    for (int v = 0; v < g.n_values; v++) {
        if (g.values[v].kind != KN_VALUE_PARAM)
            continue;
        int64_t count = kn_shape_numel(&g.values[v].shape);
        float *p = g.values[v].data;
        for (int64_t i = 0; i < count; i += count / 3 + 1, checked++) { /* three elements of each */
            float kept = p[i];
            p[i] = kept + eps;
            double up = vit_loss(&t);
            p[i] = kept - eps;
            double down = vit_loss(&t);
            p[i] = kept;
            double numeric = (up - down) / (2.0 * eps);
            worst = fmax(worst, fabs(numeric - grads[at + i]));
            largest = fmax(largest, fabs(numeric));
        }
        at += count;
    }
    printf("transformer: %lld parameter gradient elements against central differences: max |diff| %.3g "
           "(largest %.3g)\n", (long long)checked, worst, largest);
    CHECK(checked > 30 && largest > 1e-2 && worst <= 2e-4);
    free(grads);
    kn_tape_free(&t);
    kn_graph_free(&g);
}

int main(void) {
    test_shared_buffers();
    test_saved_statistics();
    compare(fused_spec, apart_spec, true);
    compare(fused_spec, apart_spec, false);
    compare(pool_fused_spec, pool_apart_spec, true);
    compare(pool_fused_spec, all_apart_spec, true);
    compare(pool_fused_spec, pool_apart_spec, false);
    test_accumulation(fused_spec);
    test_accumulation(vit_spec);
    return check_finish();
}
