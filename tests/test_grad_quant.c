/* Gradient quantization (compress/grad_quant.h): levels and scales per bit width, stochastic rounding
 * unbiased (the mean over many steps converges to the gradient), error feedback keeping the sum of the
 * quantized gradients within one step's error of the true sum, the residuals through a checkpoint's
 * extras, and the bit widths refused. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "compress/grad_quant.h"
#include "core/rng.h"

enum { N = 64 };

static void make_gradient(float *g) {
    kn_rng rng = kn_rng_seeded(9);
    for (int i = 0; i < N; i++)
        g[i] = 0.02f * (kn_rng_uniform(&rng) - 0.5f) * (float)(1 + i % 5);
}

/* One step's quantization of g into q. */
static void quantize_once(kn_grad_quant *gq, const float *g, float *q, int64_t step) {
    memcpy(q, g, sizeof(float) * N);
    kn_param_ref p = {"w", NULL, q, kn_shape_of(1, (int64_t[]){N})};
    CHECK_OK(kn_grad_quant_apply(gq, &p, 1, step));
}

static void test_levels_and_unbiased(int bits) {
    float g[N], q[N];
    double mean[N] = {0};
    make_gradient(g);
    float max_abs = 0;
    for (int i = 0; i < N; i++)
        max_abs = fmaxf(max_abs, fabsf(g[i]));
    int qmax = (1 << (bits - 1)) - 1;
    float s = max_abs / (float)qmax;
    kn_grad_quant gq;
    CHECK_OK(kn_grad_quant_init(&gq, bits, false, 3));
    const int steps = 4000;
    int off_grid = 0, too_far = 0;
    for (int step = 0; step < steps; step++) {
        quantize_once(&gq, g, q, step);
        for (int i = 0; i < N; i++) {
            float level = q[i] / s;
            off_grid += fabsf(level - nearbyintf(level)) > 1e-4f || fabsf(level) > (float)qmax + 1e-4f;
            too_far += fabsf(q[i] - g[i]) > s * 1.0001f; /* stochastic rounding picks a neighbouring level */
            mean[i] += q[i] / (double)steps;
        }
    }
    CHECK_MSG(off_grid == 0 && too_far == 0, "%d bits: %d values off the grid, %d further than one level", bits,
              off_grid, too_far);
    double worst = 0;
    for (int i = 0; i < N; i++)
        worst = fmax(worst, fabs(mean[i] - g[i]) / s);
    /* The mean of 4000 draws of a two-point variable: its standard error is at most 0.5 / sqrt(4000) levels. */
    CHECK_MSG(worst < 0.04, "%d bits: the mean over %d steps is %g levels from the gradient", bits, steps, worst);
    kn_grad_quant_free(&gq);
}

static void test_binary(void) {
    float g[N], q[N];
    make_gradient(g);
    double abs_sum = 0;
    for (int i = 0; i < N; i++)
        abs_sum += fabsf(g[i]);
    float alpha = (float)(abs_sum / N);
    kn_grad_quant gq;
    CHECK_OK(kn_grad_quant_init(&gq, 1, false, 0));
    quantize_once(&gq, g, q, 0);
    int bad = 0;
    for (int i = 0; i < N; i++)
        bad += q[i] != (g[i] >= 0 ? alpha : -alpha);
    CHECK_MSG(bad == 0, "%d values are not sign(g) * mean|g|", bad);
    kn_grad_quant_free(&gq);
}

/* With error feedback the quantized gradients of K steps sum to K g up to the one residual left over;
 * without it the 1-bit error grows with K. */
static void test_error_feedback(int bits) {
    float g[N], q[N];
    double sum_ef[N] = {0}, sum_plain[N] = {0};
    make_gradient(g);
    kn_grad_quant ef, plain;
    CHECK_OK(kn_grad_quant_init(&ef, bits, true, 1));
    CHECK_OK(kn_grad_quant_init(&plain, bits, false, 1));
    const int steps = 800;
    for (int step = 0; step < steps; step++) {
        quantize_once(&ef, g, q, step);
        for (int i = 0; i < N; i++)
            sum_ef[i] += q[i];
        quantize_once(&plain, g, q, step);
        for (int i = 0; i < N; i++)
            sum_plain[i] += q[i];
    }
    double err_ef = 0, err_plain = 0, max_abs = 0;
    for (int i = 0; i < N; i++) {
        err_ef = fmax(err_ef, fabs(sum_ef[i] - steps * (double)g[i]));
        err_plain = fmax(err_plain, fabs(sum_plain[i] - steps * (double)g[i]));
        max_abs = fmax(max_abs, fabsf(g[i]));
    }
    /* With levels (2 bits and up) the residual carried stays within a few levels of the largest gradient;
     * 1 bit's residual is larger (the sign of the sum with the residual decides), but it does not grow
     * with K as the plain error does. */
    CHECK_MSG(bits == 1 || err_ef <= 4 * max_abs, "%d bits with error feedback: the sum is off by %g (max |g| %g)", bits, err_ef,
              max_abs);
    if (bits == 1)
        CHECK_MSG(err_plain > 10 * err_ef && err_ef < 20 * max_abs, "1 bit: error feedback does not help (%g vs %g)", err_ef, err_plain);
    kn_grad_quant_free(&ef);
    kn_grad_quant_free(&plain);
}

/* The residuals through a checkpoint's extras: a run that stops after 5 steps and continues in a fresh
 * kn_grad_quant restored from kn_grad_quant_state quantizes steps 5 to 9 exactly as one that never
 * stopped; a state without residuals (an old checkpoint) starts them at zero, one with a part of them
 * is refused. */
static void test_state_round_trip(void) {
    float g[N], q_straight[N], q_resumed[N];
    make_gradient(g);
    kn_grad_quant straight, first, resumed;
    CHECK_OK(kn_grad_quant_init(&straight, 2, true, 4));
    CHECK_OK(kn_grad_quant_init(&first, 2, true, 4));
    CHECK_OK(kn_grad_quant_init(&resumed, 2, true, 4));
    kn_param_ref p = {"w", NULL, NULL, kn_shape_of(1, (int64_t[]){N})};
    kn_named_tensor *state;
    int n_state;
    CHECK_OK(kn_grad_quant_state(&first, &p, 1, &state, &n_state)); /* before any step: zeros */
    CHECK(n_state == 1 && strcmp(state[0].name, "grad_quant.residual/w") == 0 && state[0].data[0] == 0.0f);
    free(state);
    for (int step = 0; step < 5; step++) {
        quantize_once(&straight, g, q_straight, step);
        quantize_once(&first, g, q_resumed, step);
    }
    CHECK_OK(kn_grad_quant_state(&first, &p, 1, &state, &n_state));
    float nonzero = 0;
    for (int i = 0; i < N; i++)
        nonzero = fmaxf(nonzero, fabsf(state[0].data[i]));
    CHECK(n_state == 1 && state[0].shape.ndim == 1 && state[0].shape.d[0] == N && nonzero > 0);
    CHECK_OK(kn_grad_quant_restore(&resumed, &p, 1, state, n_state));
    int differ = 0;
    for (int step = 5; step < 10; step++) {
        quantize_once(&straight, g, q_straight, step);
        quantize_once(&resumed, g, q_resumed, step);
        differ += memcmp(q_straight, q_resumed, sizeof q_straight) != 0;
    }
    CHECK_MSG(differ == 0, "%d of 5 resumed steps differ from the uninterrupted run", differ);

    kn_grad_quant fresh;
    CHECK_OK(kn_grad_quant_init(&fresh, 2, true, 4));
    kn_named_tensor other = {"adam.m/w", state[0].shape, state[0].data};
    CHECK_OK(kn_grad_quant_restore(&fresh, &p, 1, &other, 1)); /* no residuals: they stay zero */
    CHECK(fresh.residual && fresh.residual[0][0] == 0.0f);
    kn_param_ref two[2] = {p, {"b", NULL, NULL, kn_shape_of(1, (int64_t[]){3})}};
    kn_grad_quant partial;
    CHECK_OK(kn_grad_quant_init(&partial, 2, true, 4));
    CHECK(kn_grad_quant_restore(&partial, two, 2, state, n_state) == KILN_ERR_FORMAT &&
          strstr(kiln_last_error(), "lacks error-feedback residual 'grad_quant.residual/b' (3 values)"));
    kn_named_tensor short_one = {state[0].name, kn_shape_of(1, (int64_t[]){N - 1}), state[0].data};
    CHECK(kn_grad_quant_restore(&fresh, &p, 1, &short_one, 1) == KILN_ERR_FORMAT);
    printf("error feedback through a checkpoint: 5 resumed steps equal to the uninterrupted run's (%d differ); "
           "a partial state: %s\n", differ, kiln_last_error());
    free(state);
    kn_grad_quant_free(&straight);
    kn_grad_quant_free(&first);
    kn_grad_quant_free(&resumed);
    kn_grad_quant_free(&fresh);
    kn_grad_quant_free(&partial);
}

int main(void) {
    test_levels_and_unbiased(8);
    test_levels_and_unbiased(4);
    test_levels_and_unbiased(2);
    test_binary();
    test_error_feedback(1);
    test_error_feedback(2);
    test_state_round_trip();
    kn_grad_quant gq;
    CHECK(kn_grad_quant_init(&gq, 3, false, 0) == KILN_ERR_INVALID_ARG && strstr(kiln_last_error(), "--grad-bits 3"));
    CHECK(kn_grad_quant_bytes(4, 10) == 5 + 4 && kn_grad_quant_bytes(1, 9) == 2 + 4);
    return check_finish();
}
