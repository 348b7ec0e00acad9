/* The example spec models end to end through the runtime (the ViT is in test_runtime_vit.c).
 *
 * 1. MLP, batchnorm MLP and CNN at batch 1, 7 and 64 in one session each (dynamic batch): the graph as
 *    saved reproduces the training tape's inference forward bit for bit, the optimized graph agrees
 *    within 1e-5 of the output's largest magnitude.
 * 2. Bit-identical results run to run with 1 and with 2 threads; 1 vs 2 within rounding.
 * 3. The per-node and per-op profile of the optimized CNN.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/threads.h"
#include "runtime/runtime.h"
#include "support/runtime_models.h"

/* ---- 1. spec models against the tape ---------------------------------------------------------- */

static const char bn_mlp_spec[] = "input 20\n"
                                  "dense 32\n"
                                  "batchnorm\n"
                                  "relu\n"
                                  "dropout 0.3\n"
                                  "dense 16\n"
                                  "batchnorm\n"
                                  "relu\n"
                                  "dense 5\n";

/* The saved graph must give the tape's output exactly (same ops, same order), the optimized one within
 * 1e-5 of the output's magnitude. */
static void check_spec_model(const char *label, const char *file, const char *text) {
    rt_spec_report r;
    CHECK_OK(rt_spec_vs_tape(label, file, text, &r));
    CHECK(r.stats.nodes_after < r.stats.nodes_before);
    CHECK(r.plans == 3); // one plan per batch size, the first at creation
    for (int b = 0; b < 3; b++) {
        CHECK_MSG(r.runs[b].diff_saved == 0.0, "%s batch %lld: the saved graph differs from the tape by %g",
                  label, (long long)r.runs[b].batch, r.runs[b].diff_saved);
        CHECK_MSG(r.runs[b].diff_optimized <= 1e-5 * r.runs[b].scale, "%s batch %lld: optimized differs by %g",
                  label, (long long)r.runs[b].batch, r.runs[b].diff_optimized);
    }
}

/* ---- 2. threads ---------------------------------------------------------------------------------- */

/* Bit-identical outputs run to run for 1 and for 2 threads; 1 vs 2 within rounding. */
static void test_threads(void) {
    kn_graph g;
    kiln_model *model = NULL;
    CHECK_OK(rt_spec_file("fmnist_cnn.txt", 6, &g));
    int64_t sample = rt_sample_numel(&g);
    CHECK_OK(kn_model_from_graph(&g, &model));
    if (!model)
        return;
    const int64_t batch = 7;
    float *x = malloc(sizeof(float) * (size_t)(batch * sample));
    rt_fill(x, batch * sample, 2);
    float out[2][2][70];
    int64_t numel = 0;
    for (int t = 0; t < 2; t++) {
        kiln_session *s = rt_session_new(model, true, t + 1, false);
        CHECK(s != NULL);
        for (int rep = 0; rep < 2 && s; rep++) {
            const float *y = rt_session_forward(s, batch, x, sample, &numel);
            if (y && numel == 70)
                memcpy(out[t][rep], y, sizeof out[t][rep]);
        }
        kiln_session_free(s);
    }
    CHECK(numel == 70);
    CHECK(memcmp(out[0][0], out[0][1], sizeof out[0][0]) == 0);
    CHECK(memcmp(out[1][0], out[1][1], sizeof out[1][0]) == 0);
    double diff = rt_max_diff(out[0][0], out[1][0], 70), scale = rt_max_abs(out[0][0], 70);
    printf("CNN batch 7: 1 thread and 2 threads each bit-identical run to run; 1 vs 2 max diff %.3g\n", diff);
    CHECK(diff <= 1e-5 * scale);
    free(x);
    kiln_model_free(model);
}

/* ---- 3. the profile ---------------------------------------------------------------------------- */

static void test_profile(void) {
    kn_graph g;
    kiln_model *model = NULL;
    CHECK_OK(rt_spec_file("fmnist_cnn.txt", 7, &g));
    int64_t sample = rt_sample_numel(&g);
    CHECK_OK(kn_model_from_graph(&g, &model));
    kiln_session *s = model ? rt_session_new(model, true, 1, true) : NULL;
    CHECK(s != NULL);
    if (!s) {
        kiln_model_free(model);
        return;
    }
    float *x = malloc(sizeof(float) * (size_t)(4 * sample));
    rt_fill(x, 4 * sample, 3);
    int64_t numel;
    for (int run = 0; run < 3; run++)
        CHECK(rt_session_forward(s, 4, x, sample, &numel) != NULL);
    double by_node = 0, by_op = 0;
    int64_t flops_by_node = 0, flops_by_op = 0;
    for (int i = 0; i < kiln_session_profile_count(s, KILN_PROFILE_BY_NODE); i++) {
        kiln_profile_entry e;
        CHECK_OK(kiln_session_profile_entry(s, KILN_PROFILE_BY_NODE, i, &e));
        by_node += e.seconds;
        flops_by_node += e.flops;
        CHECK(e.runs == 3 && e.nodes == 1);
    }
    int conv_relu = 0; // nodes in Conv+Relu entries: Conv, ConvWinograd or ConvPacked as the optimizer left them
    printf("CNN profile by op (3 runs, batch 4):");
    for (int i = 0; i < kiln_session_profile_count(s, KILN_PROFILE_BY_OP); i++) {
        kiln_profile_entry e;
        CHECK_OK(kiln_session_profile_entry(s, KILN_PROFILE_BY_OP, i, &e));
        printf(" %s x%d %.2f ms %.1f MFLOP;", e.op, e.nodes, e.seconds * 1e3 / 3, e.flops / 1e6);
        by_op += e.seconds;
        flops_by_op += e.flops;
        bool fused_conv = strncmp(e.op, "Conv", 4) == 0 && strcmp(e.op + strlen(e.op) - 5, "+Relu") == 0;
        conv_relu += fused_conv && e.flops > 0 && e.seconds > 0 ? e.nodes : 0;
    }
    printf("\n");
    CHECK_MSG(conv_relu == 2, "%d nodes in Conv*+Relu entries, not the two fused conv blocks", conv_relu);
    CHECK(fabs(by_node - by_op) <= 1e-9 * fmax(1.0, by_node) && flops_by_node == flops_by_op);
    kiln_profile_entry e;
    CHECK(kiln_session_profile_entry(s, KILN_PROFILE_BY_OP, 99, &e) == KILN_ERR_INVALID_ARG);
    kiln_session_profile_reset(s);
    CHECK_OK(kiln_session_profile_entry(s, KILN_PROFILE_BY_NODE, 0, &e));
    CHECK(e.runs == 0 && e.seconds == 0);
    free(x);
    kiln_session_free(s);
    kiln_model_free(model);
}

int main(void) {
    check_spec_model("MLP", "fmnist_mlp.txt", NULL);
    check_spec_model("BN-MLP", NULL, bn_mlp_spec);
    check_spec_model("CNN", "fmnist_cnn.txt", NULL);
    test_threads();
    test_profile();
    return check_finish();
}
