/* Gradient quantization: what a data-parallel step would send instead of f32 gradients, applied to the
 * parameter gradients before the optimizer reads them (kn_train_hooks.on_gradients), so that training
 * shows the accuracy the compression costs.
 *
 * Each tensor gets one scale per step. At 2 to 8 bits the levels are symmetric, [-qmax, qmax] with
 * qmax = 2^(b-1) - 1 (2 bits: ternary, as TernGrad), scale = max|g| / qmax, and rounding is stochastic:
 * g/s rounds up with probability equal to its fraction (round-half-even of g/s + u - 1/2, u uniform in
 * [0, 1), through core/quant.h), so the quantized gradient is unbiased. At 1 bit the gradient becomes
 * sign(g) * mean|g| (signSGD with a scale). With error feedback (Seide et al. 2014; Karimireddy et al.
 * 2019) each tensor keeps what quantization dropped and adds it to the next step's gradient first.
 */
#ifndef KN_COMPRESS_GRAD_QUANT_H
#define KN_COMPRESS_GRAD_QUANT_H

#include "format/kiln_file.h"
#include "train/optim.h"

typedef struct kn_grad_quant {
    int bits;              /* 1, 2, 4 or 8 */
    bool error_feedback;
    uint64_t seed;
    int n_params;
    float **residual;      /* (n_params) with error feedback: (numel) each, else NULL */
    char **residual_name;  /* (n_params) their names in a checkpoint, made by kn_grad_quant_state */
} kn_grad_quant;

/* bits must be 1, 2, 4 or 8 (the message names --grad-bits). */
kiln_status kn_grad_quant_init(kn_grad_quant *q, int bits, bool error_feedback, uint64_t seed);
void kn_grad_quant_free(kn_grad_quant *q);

/* Quantizes every parameter gradient in place (params[i].grad), for optimizer step `step`. The parameter
 * list must be the same at every call. */
kiln_status kn_grad_quant_apply(kn_grad_quant *q, kn_param_ref *params, int n_params, int64_t step);

/* The error-feedback residuals are state a resumed run needs: a checkpoint carries them as extras named
 * "grad_quant.residual/<param name>", beside the optimizer's state. */
#define KN_GRAD_QUANT_RESIDUAL_PREFIX "grad_quant.residual/"

/* The residuals as named tensors, one per parameter (zero before the first step), into a malloc'd array
 * *state of *n_state: names and data are q's own (free only the array). None without error feedback. */
kiln_status kn_grad_quant_state(kn_grad_quant *q, const kn_param_ref *params, int n_params,
                                kn_named_tensor **state, int *n_state);

/* Takes the residuals of a resumed run from its checkpoint's extras, by name. A checkpoint without any
 * (written before kiln kept them) leaves them zero; one with some but not all, or with a residual of the
 * wrong size, is KILN_ERR_FORMAT. Without error feedback, nothing is read. */
kiln_status kn_grad_quant_restore(kn_grad_quant *q, const kn_param_ref *params, int n_params,
                                  const kn_named_tensor *state, int n_state);

/* Bytes one tensor of numel elements takes on the wire at `bits` (levels packed, plus its f32 scale). */
int64_t kn_grad_quant_bytes(int bits, int64_t numel);

#endif
