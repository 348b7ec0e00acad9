/* Calibration: the ranges activations get their quantization scales from.
 *
 * The model runs (inference mode, on the training executor so every activation is kept) over
 * calibration samples; each watched activation gets its min and max (pass 1), then two histograms of
 * KN_CALIB_BINS bins (pass 2): of x over [lo, hi] and of |x| over [0, max |x|]. A method turns them
 * into the clipping range [lo', hi'] that core/quant.h's kn_quant_params makes a scale and zero point
 * of:
 *   minmax          [lo, hi] as seen.
 *   percentile:P    symmetric: +-(the P-th percentile of |x|); asymmetric: the (100-P)-th and P-th
 *                   percentiles of x (each widened to include 0). Read off the histogram at bin edges.
 *   kl              TensorRT's entropy calibration: for each threshold T = i bin widths of the |x|
 *                   histogram, i from `levels` to KN_CALIB_BINS, the reference P is the first i bins
 *                   with everything beyond folded into bin i-1, the candidate Q merges those i bins into
 *                   `levels` groups and spreads each group's total evenly over its non-empty bins; T
 *                   minimises KL(P || Q) (the first, smallest T of equal divergences). levels = 2^(bits-1)
 *                   (the non-negative levels of a symmetric type) or 2^bits for an asymmetric one. The
 *                   range is [max(lo, -T), min(hi, T)].
 *   mse             the range a * [lo, hi] (symmetric: a * [-m, m], m = max |x|, cut to [lo, hi]) for a in
 *                   k / KN_CALIB_MSE_STEPS, k = 1..KN_CALIB_MSE_STEPS, minimising the squared error of
 *                   quantizing the histogram's bin centres (weighted by count) with that range's scale;
 *                   the largest such a wins ties.
 */
#ifndef KN_COMPRESS_CALIBRATE_H
#define KN_COMPRESS_CALIBRATE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/graph.h"
#include "core/quant.h"
#include "core/tensor.h"
#include "train/data.h"

enum { KN_CALIB_BINS = 2048, KN_CALIB_MSE_STEPS = 200 };

typedef enum kn_calib_method {
    KN_CALIB_MINMAX,
    KN_CALIB_PERCENTILE,
    KN_CALIB_KL,
    KN_CALIB_MSE,
} kn_calib_method;

typedef struct kn_calib_config {
    kn_calib_method method;
    double percentile;    /* percentile: P in (0, 100] */
} kn_calib_config;

/* "minmax", "percentile:99.99", "kl", "mse"; KILN_ERR_INVALID_ARG for anything else. */
kiln_status kn_calib_method_parse(const char *text, kn_calib_config *out);

/* The values one activation took during calibration. */
typedef struct kn_calib_hist {
    double lo, hi;        /* min and max seen, widened to include 0 */
    double absmax;        /* max |x| */
    int64_t count;        /* elements seen */
    int64_t bins[KN_CALIB_BINS];     /* x over [lo, hi] */
    int64_t abs_bins[KN_CALIB_BINS]; /* |x| over [0, absmax] */
} kn_calib_hist;

/* TensorRT's entropy threshold (see above) of an |x| histogram of `n_bins` bins over [0, absmax] for a
 * type with `levels` non-negative levels; absmax when there are fewer than `levels` bins or no data. */
double kn_calib_kl_threshold(const int64_t *abs_bins, int n_bins, double absmax, int levels);

/* The range of the mse method for a histogram of `n_bins` bins over [lo, hi] and the integer range r. */
void kn_calib_mse_range(const int64_t *bins, int n_bins, double lo, double hi, kn_quant_range r, bool symmetric,
                        double *out_lo, double *out_hi);

/* The clipping range `config` chooses for h, quantized to `bits` (symmetric or not). */
void kn_calib_choose_range(const kn_calib_hist *h, const kn_calib_config *config, int bits, bool symmetric,
                           double *lo, double *hi);

/* Runs g in inference mode over the samples of ds (batches of 64), calling visit(ctx, k, x) with the
 * tensor each of values[0..n) holds for the batch. ds must fit g's input. */
typedef kiln_status (*kn_calib_visit)(void *ctx, int k, const kn_tensor *x);
kiln_status kn_calib_run(kn_graph *g, const kn_dataset *ds, const int *values, int n, kn_calib_visit visit, void *ctx);

/* Fills hists[0..n) for values[0..n) over ds (two passes of kn_calib_run). */
kiln_status kn_calib_collect(kn_graph *g, const kn_dataset *ds, const int *values, int n, kn_calib_hist *hists);

#endif
