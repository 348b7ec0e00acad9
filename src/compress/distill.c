/* Knowledge distillation's loss and the teacher beside the training loop (compress/distill.h). */
#include "compress/distill.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"

/* softmax(z / T) of one row of c into p, and its log into log_p (either may be NULL), in double. */
static void softmax_row(const float *z, int64_t c, double t, double *p, double *log_p) {
    double mx = -INFINITY, sum = 0;
    for (int64_t k = 0; k < c; k++)
        mx = fmax(mx, z[k] / t);
    for (int64_t k = 0; k < c; k++)
        sum += exp(z[k] / t - mx);
    double log_sum = log(sum);
    for (int64_t k = 0; k < c; k++) {
        double lp = z[k] / t - mx - log_sum;
        if (p)
            p[k] = exp(lp);
        if (log_p)
            log_p[k] = lp;
    }
}

void kn_distill_soft_loss(const float *zs, const float *zt, int64_t n, int64_t c, float temperature, double *loss,
                          float *grad) {
    double t = temperature, total = 0;
    double *buf = malloc(sizeof(double) * 4 * (size_t)(c ? c : 1));
    if (!buf) {
        *loss = NAN;
        return;
    }
    double *p_t = buf, *log_p_t = buf + c, *p_s = buf + 2 * c, *log_p_s = buf + 3 * c;
    for (int64_t i = 0; i < n; i++) {
        softmax_row(zt + i * c, c, t, p_t, log_p_t);
        softmax_row(zs + i * c, c, t, p_s, log_p_s);
        for (int64_t k = 0; k < c; k++) {
            if (p_t[k] > 0)
                total += p_t[k] * (log_p_t[k] - log_p_s[k]);
            /* d/dzs of T^2 KL / n = T (p_s - p_t) / n */
            grad[i * c + k] = (float)(t * (p_s[k] - p_t[k]) / (double)n);
        }
    }
    free(buf);
    *loss = t * t * total / (double)n;
}

kiln_status kn_distill_init(kn_distill *d, kn_graph *teacher, const kn_graph *student, const kn_distill_config *c,
                            int64_t batch) {
    memset(d, 0, sizeof *d);
    if (!(c->temperature > 0) || !isfinite(c->temperature))
        return kn_fail(KILN_ERR_INVALID_ARG, "--temperature %g: it must be > 0", (double)c->temperature);
    if (!(c->alpha >= 0 && c->alpha <= 1))
        return kn_fail(KILN_ERR_INVALID_ARG, "--alpha %g: it must be in [0, 1]", (double)c->alpha);
    if (teacher->n_inputs != 1 || student->n_inputs != 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "the teacher has %d inputs and the student %d; distillation takes one "
                       "each", teacher->n_inputs, student->n_inputs);
    const kn_shape *ti = &teacher->values[teacher->inputs[0]].shape, *si = &student->values[student->inputs[0]].shape;
    bool inputs_match = ti->ndim == si->ndim;
    for (int k = 1; k < ti->ndim && inputs_match; k++)
        inputs_match = ti->d[k] == si->d[k];
    char a[64], b[64];
    if (!inputs_match)
        return kn_fail(KILN_ERR_SHAPE, "the teacher's input %s does not match the student's %s",
                       kn_shape_str(ti, a, sizeof a), kn_shape_str(si, b, sizeof b));
    d->c = *c;
    KN_TRY(kn_tape_init(&d->teacher, teacher, batch, false));
    const kn_shape *to = &kn_tape_output(&d->teacher, 0)->shape;
    const kn_shape *so = &student->values[student->outputs[0]].shape;
    bool outputs_match = to->ndim == so->ndim;
    for (int k = 1; k < to->ndim && outputs_match; k++)
        outputs_match = to->d[k] == so->d[k] || so->d[k] < 0;
    if (!outputs_match) {
        kn_tape_free(&d->teacher);
        return kn_fail(KILN_ERR_SHAPE, "the teacher's output %s does not match the student's %s (per sample: they "
                       "must have the same classes)", kn_shape_str(to, a, sizeof a), kn_shape_str(so, b, sizeof b));
    }
    return KILN_OK;
}

void kn_distill_free(kn_distill *d) { kn_tape_free(&d->teacher); }

kiln_status kn_distill_on_loss(void *user, kn_tape *tape, const int64_t *labels, double *loss) {
    (void)labels;
    kn_distill *d = user;
    const kn_tensor *x = kn_tape_input(tape, 0);
    if (tape->batch != d->teacher.batch)
        KN_TRY(kn_tape_set_batch(&d->teacher, tape->batch));
    memcpy(kn_tape_input(&d->teacher, 0)->data, x->data, sizeof(float) * (size_t)kn_numel(x));
    KN_TRY(kn_tape_forward(&d->teacher, false));
    const kn_tensor *zs = kn_tape_output(tape, 0), *zt = kn_tape_output(&d->teacher, 0);
    kn_tensor *dpred = kn_tape_output_grad(tape, 0);
    int64_t n = zs->shape.d[0], c = kn_numel(zs) / (n ? n : 1);
    if (kn_numel(zt) != kn_numel(zs))
        return kn_fail(KILN_ERR_SHAPE, "the teacher gave %lld outputs for the batch, the student %lld",
                       (long long)kn_numel(zt), (long long)kn_numel(zs));
    float *soft_grad = malloc(sizeof(float) * (size_t)(n * c > 0 ? n * c : 1)); // (n, c)
    if (!soft_grad)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for the distillation gradient");
    double soft;
    kn_distill_soft_loss(kn_f32(zs), kn_f32(zt), n, c, d->c.temperature, &soft, soft_grad);
    float alpha = d->c.alpha, *g = kn_f32(dpred);
    for (int64_t i = 0; i < n * c; i++)
        g[i] = (1.0f - alpha) * g[i] + alpha * soft_grad[i];
    free(soft_grad);
    if (!isfinite(soft))
        return kn_fail(KILN_ERR_NUMERIC, "the distillation loss is not finite");
    d->last_soft_loss = soft;
    *loss = (1.0 - alpha) * *loss + alpha * soft;
    return KILN_OK;
}
