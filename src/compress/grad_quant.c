/* Gradient quantization with stochastic rounding and error feedback (compress/grad_quant.h). */
#include "compress/grad_quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/quant.h"
#include "core/rng.h"
#include "core/status.h"

/* Ternary gradients clip their range at this many RMS (TernGrad, Wen et al. 2017). */
#define KN_GRAD_TERNARY_CLIP 2.5

kiln_status kn_grad_quant_init(kn_grad_quant *q, int bits, bool error_feedback, uint64_t seed) {
    memset(q, 0, sizeof *q);
    if (bits != 1 && bits != 2 && bits != 4 && bits != 8)
        return kn_fail(KILN_ERR_INVALID_ARG, "--grad-bits %d: gradients are quantized to 8, 4, 2 or 1 bits "
                       "(32: not at all)", bits);
    *q = (kn_grad_quant){.bits = bits, .error_feedback = error_feedback, .seed = seed};
    return KILN_OK;
}

void kn_grad_quant_free(kn_grad_quant *q) {
    for (int i = 0; q->residual && i < q->n_params; i++)
        free(q->residual[i]);
    for (int i = 0; q->residual_name && i < q->n_params; i++)
        free(q->residual_name[i]);
    free(q->residual);
    free(q->residual_name);
    memset(q, 0, sizeof *q);
}

int64_t kn_grad_quant_bytes(int bits, int64_t numel) { return (numel * bits + 7) / 8 + (int64_t)sizeof(float); }

/* The residual buffers, zero, on the first call. */
static kiln_status residuals_alloc(kn_grad_quant *q, const kn_param_ref *params, int n_params) {
    q->residual = calloc((size_t)(n_params ? n_params : 1), sizeof(float *));
    if (!q->residual)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for error feedback");
    q->n_params = n_params;
    for (int i = 0; i < n_params; i++)
        if (!(q->residual[i] = calloc((size_t)kn_shape_numel(&params[i].shape), sizeof(float))))
            return kn_fail(KILN_ERR_NOMEM, "out of memory for error feedback");
    return KILN_OK;
}

/* The residuals' checkpoint names, once. */
static kiln_status residual_names(kn_grad_quant *q, const kn_param_ref *params) {
    if (q->residual_name)
        return KILN_OK;
    q->residual_name = calloc((size_t)(q->n_params ? q->n_params : 1), sizeof(char *));
    if (!q->residual_name)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for error feedback");
    for (int i = 0; i < q->n_params; i++) {
        size_t size = strlen(KN_GRAD_QUANT_RESIDUAL_PREFIX) + strlen(params[i].name) + 1;
        if (!(q->residual_name[i] = malloc(size)))
            return kn_fail(KILN_ERR_NOMEM, "out of memory for error feedback");
        snprintf(q->residual_name[i], size, "%s%s", KN_GRAD_QUANT_RESIDUAL_PREFIX, params[i].name);
    }
    return KILN_OK;
}

/* The residual buffers exist (zero until the first step) for this parameter list. */
static kiln_status residuals_ready(kn_grad_quant *q, const kn_param_ref *params, int n_params) {
    if (!q->residual)
        KN_TRY(residuals_alloc(q, params, n_params));
    if (n_params != q->n_params)
        return kn_fail(KILN_ERR_INTERNAL, "gradient quantization: %d parameters, was %d", n_params, q->n_params);
    return residual_names(q, params);
}

kiln_status kn_grad_quant_state(kn_grad_quant *q, const kn_param_ref *params, int n_params,
                                kn_named_tensor **state, int *n_state) {
    *state = NULL;
    *n_state = 0;
    if (!q->error_feedback)
        return KILN_OK;
    KN_TRY(residuals_ready(q, params, n_params));
    *state = calloc((size_t)(n_params ? n_params : 1), sizeof **state);
    if (!*state)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for error feedback");
    for (int i = 0; i < n_params; i++) {
        int64_t numel = kn_shape_numel(&params[i].shape);
        (*state)[i] = (kn_named_tensor){q->residual_name[i], kn_shape_of(1, &numel), q->residual[i]};
    }
    *n_state = n_params;
    return KILN_OK;
}

kiln_status kn_grad_quant_restore(kn_grad_quant *q, const kn_param_ref *params, int n_params,
                                  const kn_named_tensor *state, int n_state) {
    if (!q->error_feedback)
        return KILN_OK;
    KN_TRY(residuals_ready(q, params, n_params));
    int found = 0;
    for (int i = 0; i < n_params; i++)
        for (int k = 0; k < n_state; k++)
            found += strcmp(state[k].name, q->residual_name[i]) == 0;
    if (found == 0)
        return KILN_OK; /* a checkpoint from before the residuals were kept: they start at zero */
    for (int i = 0; i < n_params; i++) {
        int64_t numel = kn_shape_numel(&params[i].shape);
        const kn_named_tensor *r = NULL;
        for (int k = 0; k < n_state && !r; k++)
            if (strcmp(state[k].name, q->residual_name[i]) == 0)
                r = &state[k];
        if (!r || kn_shape_numel(&r->shape) != numel)
            return kn_fail(KILN_ERR_FORMAT, "the checkpoint lacks error-feedback residual '%s' (%lld values)",
                           q->residual_name[i], (long long)numel);
        memcpy(q->residual[i], r->data, sizeof(float) * (size_t)numel);
    }
    return KILN_OK;
}

/* g (n) quantized in place; stream seeds the stochastic rounding. */
static void quantize_tensor(float *g, int64_t n, int bits, uint64_t stream) {
    if (bits == 1) {
        double abs_sum = 0;
        for (int64_t i = 0; i < n; i++)
            abs_sum += fabsf(g[i]);
        float alpha = n ? (float)(abs_sum / (double)n) : 0.0f;
        for (int64_t i = 0; i < n; i++)
            g[i] = g[i] >= 0.0f ? alpha : -alpha;
        return;
    }
    float max_abs = 0;
    double sum_sq = 0;
    for (int64_t i = 0; i < n; i++) {
        max_abs = fmaxf(max_abs, fabsf(g[i]));
        sum_sq += (double)g[i] * g[i];
    }
    /* Ternary levels at max|g| would round nearly every element to 0 or +-max: like TernGrad, clip the
     * range to 2.5 times the RMS (elements beyond saturate; error feedback carries what they lose). */
    float range = max_abs;
    if (bits == 2 && n > 0)
        range = fminf(max_abs, (float)(KN_GRAD_TERNARY_CLIP * sqrt(sum_sq / (double)n)));
    kn_quant_range r = kn_quant_range_of(bits, true);
    r.qmin = -r.qmax; /* symmetric levels: 2 bits are ternary */
    float scale;
    int32_t zero_point;
    kn_quant_params(-range, range, r, true, &scale, &zero_point);
    for (int64_t i = 0; i < n; i++) {
        float u = kn_hash_uniform(stream, (uint64_t)i);
        g[i] = kn_quant_value(kn_quant_level(g[i] + (u - 0.5f) * scale, scale, 0, r), scale, 0);
    }
}

kiln_status kn_grad_quant_apply(kn_grad_quant *q, kn_param_ref *params, int n_params, int64_t step) {
    if (q->error_feedback)
        KN_TRY(residuals_ready(q, params, n_params));
    for (int p = 0; p < n_params; p++) {
        float *g = params[p].grad;
        int64_t n = kn_shape_numel(&params[p].shape);
        float *residual = q->residual ? q->residual[p] : NULL; // (n)
        for (int64_t i = 0; residual && i < n; i++) {
            g[i] += residual[i];
            residual[i] = g[i];
        }
        quantize_tensor(g, n, q->bits, kn_mix64(q->seed ^ kn_mix64((uint64_t)step * 1000003u + (uint64_t)p)));
        for (int64_t i = 0; residual && i < n; i++)
            residual[i] -= g[i]; /* what this step's quantization dropped */
    }
    return KILN_OK;
}
