/* Quantizing one weight tensor: the storage it is encoded in, the MSE clipping of each scale group's
 * range, binary and power-of-two levels as codebooks, and the weight's line of the report. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compress/qdq.h"
#include "compress/quantize.h"
#include "core/quant.h"
#include "core/status.h"

enum { MSE_STEPS = 100 }; /* clipping candidates a = k / MSE_STEPS of the group's range */

void kn_quant_report_free(kn_quant_report *r) {
    free(r->stats);
    memset(r, 0, sizeof *r);
}

static kn_encoding affine_encoding(int bits) {
    switch (bits) {
    case 8: return KN_ENC_AFFINE_I8;
    case 4: return KN_ENC_AFFINE_I4;
    default: return KN_ENC_AFFINE_I2;
    }
}

/* The scale groups of an affine storage of `shape` (as format/storage_affine.c forms them): group_of[i]
 * for every element, and how many groups. */
static int64_t groups_fill(const kn_shape *shape, int axis, int64_t block, int64_t *group_of) {
    int64_t n = kn_shape_numel(shape);
    int64_t cols = shape->ndim ? shape->d[shape->ndim - 1] : 1;
    if (axis >= 0) {
        int64_t inner = kn_shape_span(shape, axis + 1, shape->ndim), channels = shape->d[axis];
        for (int64_t i = 0; i < n; i++)
            group_of[i] = i / inner % channels;
        return channels;
    }
    if (block > 0) {
        int64_t per_row = (cols + block - 1) / block;
        for (int64_t i = 0; i < n; i++)
            group_of[i] = i / cols * per_row + i % cols / block;
        return cols ? n / cols * per_row : 0;
    }
    memset(group_of, 0, sizeof(int64_t) * (size_t)n);
    return 1;
}

/* Squared error of the values v[0..m) clipped to [lo, hi] and quantized with that range's parameters:
 * exactly what the affine encoding stores for the clipped group. */
static double clipped_error(const float *v, int64_t m, float lo, float hi, kn_quant_range r, bool symmetric) {
    float c_lo = 0, c_hi = 0; /* the clipped group's range, with 0 as the encoder widens it */
    for (int64_t j = 0; j < m; j++) {
        float c = fminf(fmaxf(v[j], lo), hi);
        c_lo = fminf(c_lo, c);
        c_hi = fmaxf(c_hi, c);
    }
    float scale;
    int32_t zero_point;
    kn_quant_params(c_lo, c_hi, r, symmetric, &scale, &zero_point);
    double error = 0;
    for (int64_t j = 0; j < m; j++) {
        double e = (double)v[j] - (double)kn_quant_fake(fminf(fmaxf(v[j], lo), hi), scale, zero_point, r);
        error += e * e;
    }
    return error;
}

/* Clips v[0..m) in place to the range a * [lo, hi] (symmetric: a * [-max|v|, max|v|]) with the a in
 * k / MSE_STEPS that minimises the quantization error; the largest a wins ties. */
static void mse_clip(float *v, int64_t m, kn_quant_range r, bool symmetric) {
    float lo = 0, hi = 0;
    for (int64_t j = 0; j < m; j++) {
        lo = fminf(lo, v[j]);
        hi = fmaxf(hi, v[j]);
    }
    float best_lo = lo, best_hi = hi;
    double best = INFINITY;
    for (int k = MSE_STEPS; k >= 1; k--) {
        double a = (double)k / MSE_STEPS, m_abs = fmax(-(double)lo, (double)hi);
        float a_lo = symmetric ? (float)(-a * m_abs) : (float)(a * lo);
        float a_hi = symmetric ? (float)(a * m_abs) : (float)(a * hi);
        double error = clipped_error(v, m, a_lo, a_hi, r, symmetric);
        if (error < best) {
            best = error;
            best_lo = a_lo;
            best_hi = a_hi;
        }
    }
    for (int64_t j = 0; j < m; j++)
        v[j] = fminf(fmaxf(v[j], best_lo), best_hi);
}

/* Applies per-group work to x: gathers each group's elements (in flat order) into a buffer, calls
 * fn on it, and scatters them back. */
typedef void (*group_fn)(float *v, int64_t m, const kn_weight_quant *q);

static kiln_status for_each_group(float *x, const kn_shape *shape, int axis, int64_t block, group_fn fn,
                                  const kn_weight_quant *q) {
    int64_t n = kn_shape_numel(shape);
    int64_t *group_of = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    int64_t *start = NULL, *order = NULL;
    float *buf = malloc(sizeof(float) * (size_t)(n ? n : 1));
    int64_t groups = group_of ? groups_fill(shape, axis, block, group_of) : 0;
    if (group_of && buf) {
        start = calloc((size_t)groups + 2, sizeof(int64_t));
        order = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    }
    if (!group_of || !buf || !start || !order) {
        free(group_of), free(buf), free(start), free(order);
        return kn_fail(KILN_ERR_NOMEM, "out of memory grouping %lld weights", (long long)n);
    }
    /* Counting sort of the elements by group: group k's elements are order[start[k] .. start[k+1]). */
    for (int64_t i = 0; i < n; i++)
        start[group_of[i] + 2]++;
    for (int64_t k = 0; k < groups; k++)
        start[k + 2] += start[k + 1];
    for (int64_t i = 0; i < n; i++)
        order[start[group_of[i] + 1]++] = i;
    for (int64_t k = 0; k < groups; k++) {
        int64_t m = start[k + 1] - start[k];
        for (int64_t j = 0; j < m; j++)
            buf[j] = x[order[start[k] + j]];
        fn(buf, m, q);
        for (int64_t j = 0; j < m; j++)
            x[order[start[k] + j]] = buf[j];
    }
    free(group_of), free(buf), free(start), free(order);
    return KILN_OK;
}

static void group_mse_clip(float *v, int64_t m, const kn_weight_quant *q) {
    mse_clip(v, m, kn_quant_range_of(q->bits, true), q->symmetric);
}

/* Binary: every weight becomes +-a, a = mean |w| of its group (the scale minimising the squared error
 * of sign(w) * a); 0 counts as positive. */
static void group_binarize(float *v, int64_t m, const kn_weight_quant *q) {
    (void)q;
    double sum = 0;
    for (int64_t j = 0; j < m; j++)
        sum += fabs(v[j]);
    float a = m ? (float)(sum / (double)m) : 0.0f;
    for (int64_t j = 0; j < m; j++)
        v[j] = v[j] < 0 ? -a : a;
}

/* Power-of-two levels: {0} and +-2^e for the 2^(bits-1) - 1 exponents up to e_max = round(log2 max|w|)
 * of the group; each weight goes to the nearest level (a tie to the smaller magnitude). */
static void group_log2(float *v, int64_t m, const kn_weight_quant *q) {
    float m_abs = 0;
    for (int64_t j = 0; j < m; j++)
        m_abs = fmaxf(m_abs, fabsf(v[j]));
    if (!(m_abs >= FLT_MIN)) {
        for (int64_t j = 0; j < m; j++)
            v[j] = 0;
        return;
    }
    int e_max = (int)lrint(log2((double)m_abs)), magnitudes = (1 << (q->bits - 1)) - 1;
    int e_min = e_max - magnitudes + 1;
    for (int64_t j = 0; j < m; j++) {
        double a = fabs(v[j]), best = 0; /* the level 0 */
        for (int e = e_min; e <= e_max; e++) {
            double level = ldexp(1.0, e);
            if (fabs(a - level) < fabs(a - best))
                best = level;
        }
        v[j] = (float)(v[j] < 0 && best > 0 ? -best : best); /* +0, never -0: one codebook entry */
    }
}

/* The codebook index width that holds k entries: 1, 2, 4 or 8 bits. */
static int codebook_bits(int k) { return k <= 2 ? 1 : k <= 4 ? 2 : k <= 16 ? 4 : 8; }

/* The storage spec of the weight, and the per-group rewrite its data gets first (NULL: none). */
static void weight_plan(const kn_weight_quant *q, kn_storage_spec *spec, group_fn *prepare) {
    *prepare = NULL;
    *spec = (kn_storage_spec){.axis = q->axis, .seed = q->seed};
    if (q->bits == 16) {
        spec->encoding = q->bf16 ? KN_ENC_BF16 : KN_ENC_F16;
    } else if (q->codebook > 0) {
        spec->encoding = KN_ENC_CODEBOOK;
        spec->bits = codebook_bits(q->codebook);
    } else if (q->log2 || q->bits == 1) {
        /* The levels are computed here; the codebook holds them exactly (k-means of at most 2^bits
         * distinct values finds them). */
        spec->encoding = KN_ENC_CODEBOOK;
        spec->bits = q->bits == 1 ? 1 : q->bits;
        *prepare = q->bits == 1 ? group_binarize : group_log2;
    } else {
        spec->encoding = affine_encoding(q->bits);
        spec->symmetric = q->symmetric;
        spec->block = q->block;
        *prepare = q->mse_clip ? group_mse_clip : NULL;
    }
}

void kn_quant_weight_stat(kn_quant_stat *stat, const kn_value *w, const float *orig) {
    int64_t n = kn_shape_numel(&w->shape);
    const float *x = w->data;
    const kn_storage *s = w->storage;
    double signal = 0, noise = 0;
    float lo = n ? orig[0] : 0, hi = lo;
    int64_t clipped = 0;
    for (int64_t i = 0; i < n; i++) {
        signal += (double)orig[i] * orig[i];
        noise += ((double)orig[i] - x[i]) * ((double)orig[i] - x[i]);
        lo = fminf(lo, orig[i]);
        hi = fmaxf(hi, orig[i]);
    }
    snprintf(stat->name, sizeof stat->name, "%s", w->name);
    kn_storage_describe(s, stat->encoding, sizeof stat->encoding);
    stat->is_weight = true;
    stat->bits = kn_encoding_is_sparse(s->encoding) ? s->values->bits : s->bits; /* the stored bits: a
                                                                                 * codebook's index width */
    stat->lo = lo;
    stat->hi = hi;
    stat->count = n;
    stat->sqnr_db = noise > 0 ? 10 * log10(signal / noise) : INFINITY;
    stat->scale_min = stat->scale_max = 0;
    if (kn_encoding_is_affine(s->encoding)) {
        kn_quant_range r = kn_quant_range_of(s->bits, s->encoding != KN_ENC_AFFINE_U8 && s->encoding != KN_ENC_AFFINE_I1);
        stat->scale_min = INFINITY;
        for (int64_t k = 0; k < kn_storage_group_count(s); k++) {
            stat->scale_min = fmin(stat->scale_min, s->scale[k]);
            stat->scale_max = fmax(stat->scale_max, s->scale[k]);
        }
        for (int64_t i = 0; i < n; i++) {
            int64_t k = kn_storage_group_of(s, i);
            double step = s->scale[k], zp = kn_storage_zero_point(s, k);
            clipped += orig[i] < (r.qmin - zp - 0.5) * step || orig[i] > (r.qmax - zp + 0.5) * step;
        }
    }
    stat->clip_fraction = n ? (double)clipped / (double)n : 0;
}

kiln_status kn_quant_weight(kn_graph *g, int id, const kn_weight_quant *q, kn_quant_stat *stat) {
    kn_value *w = &g->values[id];
    int64_t n = kn_shape_numel(&w->shape);
    if (q->bits != 16 && q->bits != 8 && q->bits != 4 && q->bits != 2 && q->bits != 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "%d-bit weights: 16, 8, 4, 2 or 1 are supported", q->bits);
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(((const float *)w->data)[i]))
            return kn_fail(KILN_ERR_INVALID_ARG, "weight '%s' element %lld is %g; only finite weights are quantized",
                           w->name, (long long)i, (double)((const float *)w->data)[i]);
    kn_storage_spec spec;
    group_fn prepare;
    weight_plan(q, &spec, &prepare);
    /* A pruned weight (sparse storage) stays sparse, its stored values quantized: per tensor, the one
     * scale the sparse encodings keep for their values; the zeros stay exact. */
    if (w->storage && kn_encoding_is_sparse(w->storage->encoding) && kn_encoding_is_affine(spec.encoding) &&
        spec.block == 0) {
        spec = (kn_storage_spec){.encoding = w->storage->encoding, .axis = -1, .values = spec.encoding,
                                 .values_symmetric = spec.symmetric};
        prepare = NULL;
    }
    float *orig = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (!orig)
        return kn_fail(KILN_ERR_NOMEM, "out of memory copying weight '%s'", w->name);
    memcpy(orig, w->data, sizeof(float) * (size_t)n);
    kiln_status st = KILN_OK;
    if (prepare) /* binary and log2 levels per channel or per tensor; MSE clipping per scale group */
        st = for_each_group(w->data, &w->shape, q->axis, spec.encoding == KN_ENC_CODEBOOK ? 0 : q->block, prepare, q);
    float *levels = NULL; /* binary and log2: the levels the codebook must hold exactly */
    if (st == KILN_OK && prepare && spec.encoding == KN_ENC_CODEBOOK) {
        levels = malloc(sizeof(float) * (size_t)(n ? n : 1));
        if (levels)
            memcpy(levels, w->data, sizeof(float) * (size_t)n);
        else
            st = kn_fail(KILN_ERR_NOMEM, "out of memory copying weight '%s'", w->name);
    }
    if (st == KILN_OK) {
        kn_value_drop_storage(w);
        st = kn_qdq_quantize_weight(g, id, &spec);
    }
    if (st == KILN_OK && levels && memcmp(levels, w->data, sizeof(float) * (size_t)n) != 0) {
        kn_value_drop_storage(w);
        st = kn_fail(KILN_ERR_INTERNAL, "weight '%s': the codebook did not keep the %d-bit levels exactly",
                     w->name, q->bits);
    }
    free(levels);
    if (st == KILN_OK && stat)
        kn_quant_weight_stat(stat, w, orig);
    if (st != KILN_OK)
        memcpy(w->data, orig, sizeof(float) * (size_t)n);
    free(orig);
    return st;
}
