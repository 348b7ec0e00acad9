/* The example vision transformer end to end through the runtime, at batch 1, 7 and 64 in one session
 * (dynamic batch): the graph as saved reproduces the training tape's inference forward bit for bit, the
 * optimized graph (every MatMul + bias Add fused, the two MLP Gelus fused) agrees within 1e-5 of the
 * output's largest magnitude. */
#include <stdio.h>

#include "check.h"
#include "support/runtime_models.h"

int main(void) {
    rt_spec_report r;
    CHECK_OK(rt_spec_vs_tape("ViT", "fmnist_vit.txt", NULL, &r));
    // Per block: query, key, value, out, fc1, fc2 biases; plus the patch embedding.
    CHECK(r.stats.biases_fused == 13 && r.stats.activations_fused == 2);
    CHECK(r.plans == 3);
    for (int b = 0; b < 3; b++) {
        CHECK_MSG(r.runs[b].diff_saved == 0.0, "batch %lld: the saved graph differs from the tape by %g",
                  (long long)r.runs[b].batch, r.runs[b].diff_saved);
        CHECK_MSG(r.runs[b].diff_optimized <= 1e-5 * r.runs[b].scale, "batch %lld: optimized differs by %g",
                  (long long)r.runs[b].batch, r.runs[b].diff_optimized);
    }
    return check_finish();
}
