/* Calibration: histograms of activations and the clipping ranges chosen from them (calibrate.h). */
#include "compress/calibrate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "train/evaluate.h"
#include "train/tape.h"

/* Samples per forward pass: 64, fewer when the activations of 64 would pass CALIB_BUDGET_BYTES (an
 * ImageNet mobilenet_v2 keeps about 50 MB of activations per sample: 64 of them took 3.4 GB). */
enum { CALIB_BATCH = 64 };
#define CALIB_BUDGET_BYTES ((size_t)256 << 20)

kiln_status kn_calib_method_parse(const char *text, kn_calib_config *out) {
    *out = (kn_calib_config){KN_CALIB_MINMAX, 100.0};
    if (strcmp(text, "minmax") == 0)
        return KILN_OK;
    if (strcmp(text, "kl") == 0 || strcmp(text, "entropy") == 0) {
        out->method = KN_CALIB_KL;
        return KILN_OK;
    }
    if (strcmp(text, "mse") == 0) {
        out->method = KN_CALIB_MSE;
        return KILN_OK;
    }
    if (strncmp(text, "percentile:", 11) == 0) {
        char *end;
        double p = strtod(text + 11, &end);
        if (end != text + 11 && *end == '\0' && p > 0 && p <= 100) {
            out->method = KN_CALIB_PERCENTILE;
            out->percentile = p;
            return KILN_OK;
        }
        return kn_fail(KILN_ERR_INVALID_ARG, "'%s': the percentile must be a number in (0, 100]", text);
    }
    return kn_fail(KILN_ERR_INVALID_ARG, "unknown calibration method '%s' (minmax, percentile:P, kl, mse)", text);
}

/* ---- methods on histograms ---- */

/* KL(P || Q) of the candidate threshold of i bins; INFINITY where Q misses mass P has. */
static double kl_divergence_at(const int64_t *bins, int n_bins, int i, int levels, double *p, double *q) {
    double outliers = 0;
    for (int b = i; b < n_bins; b++)
        outliers += (double)bins[b];
    for (int b = 0; b < i; b++)
        p[b] = (double)bins[b];
    p[i - 1] += outliers;
    /* Bin b of the i belongs to group b * levels / i; each group's count spread over its non-empty bins. */
    for (int start = 0, group = 0; group < levels; group++) {
        int end = (int)(((int64_t)(group + 1) * i + levels - 1) / levels); /* first bin of the next group */
        double total = 0;
        int nonzero = 0;
        for (int b = start; b < end; b++) {
            total += (double)bins[b];
            nonzero += bins[b] != 0;
        }
        for (int b = start; b < end; b++)
            q[b] = bins[b] != 0 ? total / nonzero : 0.0;
        start = end;
    }
    double p_sum = 0, q_sum = 0;
    for (int b = 0; b < i; b++) {
        p_sum += p[b];
        q_sum += q[b];
    }
    if (p_sum <= 0 || q_sum <= 0)
        return INFINITY;
    double kl = 0;
    for (int b = 0; b < i; b++) {
        if (p[b] <= 0)
            continue;
        if (q[b] <= 0)
            return INFINITY;
        double pn = p[b] / p_sum, qn = q[b] / q_sum;
        kl += pn * log(pn / qn);
    }
    return kl;
}

double kn_calib_kl_threshold(const int64_t *abs_bins, int n_bins, double absmax, int levels) {
    if (n_bins < levels || levels < 1 || n_bins < 2 || !(absmax > 0))
        return absmax;
    double *p = malloc(sizeof(double) * (size_t)n_bins), *q = malloc(sizeof(double) * (size_t)n_bins);
    int64_t *bins = malloc(sizeof(int64_t) * (size_t)n_bins);
    if (!p || !q || !bins) {
        free(p);
        free(q);
        free(bins);
        return absmax; /* min-max: the safe answer when the search cannot run */
    }
    /* Bin 0 holds the exact zeros ReLU makes, often most of the data; every threshold represents them
     * exactly, yet their spike would rule the divergence and pull the threshold far down. */
    memcpy(bins, abs_bins, sizeof(int64_t) * (size_t)n_bins);
    bins[0] = bins[1];
    double best = INFINITY;
    int best_i = n_bins;
    for (int i = levels; i <= n_bins; i++) {
        double kl = kl_divergence_at(bins, n_bins, i, levels, p, q);
        if (kl < best) {
            best = kl;
            best_i = i;
        }
    }
    free(p);
    free(q);
    free(bins);
    return absmax * best_i / n_bins;
}

/* The range the candidate a gives: a * [lo, hi], or a * [-m, m] cut to [lo, hi] when symmetric. */
static void scaled_range(double a, double lo, double hi, bool symmetric, float *out_lo, float *out_hi) {
    if (symmetric) {
        double m = a * fmax(-lo, hi);
        *out_lo = (float)fmax(lo, -m);
        *out_hi = (float)fmin(hi, m);
    } else {
        *out_lo = (float)(a * lo);
        *out_hi = (float)(a * hi);
    }
}

void kn_calib_mse_range(const int64_t *bins, int n_bins, double lo, double hi, kn_quant_range r, bool symmetric,
                        double *out_lo, double *out_hi) {
    double width = (hi - lo) / n_bins, best = INFINITY;
    *out_lo = lo;
    *out_hi = hi;
    for (int k = KN_CALIB_MSE_STEPS; k >= 1; k--) {
        float a_lo, a_hi, scale;
        int32_t zero_point;
        scaled_range((double)k / KN_CALIB_MSE_STEPS, lo, hi, symmetric, &a_lo, &a_hi);
        kn_quant_params(a_lo, a_hi, r, symmetric, &scale, &zero_point);
        double error = 0;
        for (int b = 0; b < n_bins; b++) {
            if (!bins[b])
                continue;
            float centre = (float)(lo + (b + 0.5) * width);
            double e = (double)centre - (double)kn_quant_fake(centre, scale, zero_point, r);
            error += (double)bins[b] * e * e;
        }
        if (error < best) {
            best = error;
            *out_lo = a_lo;
            *out_hi = a_hi;
        }
    }
}

/* The edge of the first bin where the running count reaches `target`, counting from the left. */
static double quantile_edge(const int64_t *bins, int n_bins, double lo, double hi, double target, bool upper) {
    double width = (hi - lo) / n_bins, seen = 0;
    for (int b = 0; b < n_bins; b++) {
        seen += (double)bins[b];
        if (seen >= target)
            return lo + (b + (upper ? 1 : 0)) * width;
    }
    return hi;
}

void kn_calib_choose_range(const kn_calib_hist *h, const kn_calib_config *config, int bits, bool symmetric,
                           double *lo, double *hi) {
    *lo = h->lo;
    *hi = h->hi;
    kn_quant_range r = kn_quant_range_of(bits, symmetric);
    double n = (double)h->count;
    switch (config->method) {
    case KN_CALIB_MINMAX: return;
    case KN_CALIB_PERCENTILE: {
        double f = config->percentile / 100.0;
        if (symmetric) {
            double t = quantile_edge(h->abs_bins, KN_CALIB_BINS, 0, h->absmax, f * n, true);
            *lo = fmax(h->lo, -t);
            *hi = fmin(h->hi, t);
        } else {
            *lo = fmin(0.0, quantile_edge(h->bins, KN_CALIB_BINS, h->lo, h->hi, (1 - f) * n, false));
            *hi = fmax(0.0, quantile_edge(h->bins, KN_CALIB_BINS, h->lo, h->hi, f * n, true));
        }
        return;
    }
    case KN_CALIB_KL: {
        int levels = symmetric ? 1 << (bits - 1) : 1 << bits;
        double t = kn_calib_kl_threshold(h->abs_bins, KN_CALIB_BINS, h->absmax, levels);
        *lo = fmax(h->lo, -t);
        *hi = fmin(h->hi, t);
        return;
    }
    case KN_CALIB_MSE: kn_calib_mse_range(h->bins, KN_CALIB_BINS, h->lo, h->hi, r, symmetric, lo, hi); return;
    }
}

/* ---- running the model ---- */

kiln_status kn_calib_run(kn_graph *g, const kn_dataset *ds, const int *values, int n, kn_calib_visit visit, void *ctx) {
    KN_TRY(kn_check_input_fits(g, ds));
    kn_tape t;
    KN_TRY(kn_tape_init(&t, g, 1, false));
    size_t per_sample = t.act_block_bytes ? t.act_block_bytes : 1;
    int64_t batch = CALIB_BUDGET_BYTES / per_sample;
    batch = batch < 1 ? 1 : batch > CALIB_BATCH ? CALIB_BATCH : batch;
    kiln_status st = KILN_OK;
    for (int64_t start = 0; start < ds->count && st == KILN_OK; start += batch) {
        int64_t count = ds->count - start < batch ? ds->count - start : batch;
        st = kn_tape_set_batch(&t, count);
        if (st != KILN_OK)
            break;
        memcpy(kn_tape_input(&t, 0)->data, ds->x + start * ds->sample_size,
               sizeof(float) * (size_t)(count * ds->sample_size));
        st = kn_tape_forward(&t, false);
        for (int k = 0; k < n && st == KILN_OK; k++)
            st = visit(ctx, k, &t.values[values[k]]);
    }
    kn_tape_free(&t);
    return st;
}

static kiln_status visit_range(void *ctx, int k, const kn_tensor *x) {
    kn_calib_hist *h = (kn_calib_hist *)ctx + k;
    const float *v = x->data;
    int64_t n = kn_numel(x);
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(v[i]))
            return kn_fail(KILN_ERR_INVALID_ARG, "calibration: an activation took the value %g", (double)v[i]);
        h->lo = fmin(h->lo, v[i]);
        h->hi = fmax(h->hi, v[i]);
    }
    h->count += n;
    return KILN_OK;
}

static int bin_of(double x, double lo, double hi) {
    if (!(hi > lo))
        return 0;
    int b = (int)((x - lo) / (hi - lo) * KN_CALIB_BINS);
    return b < 0 ? 0 : b >= KN_CALIB_BINS ? KN_CALIB_BINS - 1 : b;
}

static kiln_status visit_histogram(void *ctx, int k, const kn_tensor *x) {
    kn_calib_hist *h = (kn_calib_hist *)ctx + k;
    const float *v = x->data;
    int64_t n = kn_numel(x);
    for (int64_t i = 0; i < n; i++) {
        h->bins[bin_of(v[i], h->lo, h->hi)]++;
        h->abs_bins[bin_of(fabs(v[i]), 0, h->absmax)]++;
    }
    return KILN_OK;
}

kiln_status kn_calib_collect(kn_graph *g, const kn_dataset *ds, const int *values, int n, kn_calib_hist *hists) {
    memset(hists, 0, sizeof *hists * (size_t)n);
    KN_TRY(kn_calib_run(g, ds, values, n, visit_range, hists));
    for (int k = 0; k < n; k++)
        hists[k].absmax = fmax(-hists[k].lo, hists[k].hi);
    return kn_calib_run(g, ds, values, n, visit_histogram, hists);
}
