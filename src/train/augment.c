#include "train/augment.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/status.h"

#define SHIFT_MAX 4096
#define MIXUP_MAX 100.0

/* "mixup:A": A a decimal number in (0, MIXUP_MAX]. */
static kiln_status parse_mixup(const char *part, size_t len, kn_augment *a, const char *text) {
    char number[32];
    size_t digits = len - 6;
    char *end = NULL;
    double v = NAN;
    if (digits > 0 && digits < sizeof number && strspn(part + 6, "0123456789.eE+-") >= digits) {
        memcpy(number, part + 6, digits);
        number[digits] = '\0';
        v = strtod(number, &end);
    }
    if (!end || *end || !(v > 0 && v <= MIXUP_MAX))
        return kn_fail(KILN_ERR_INVALID_ARG, "--augment %s: mixup:A takes the Beta(A, A) parameter, a number in "
                       "(0, %g] (1: mixing weights uniform in [0, 1])", text, MIXUP_MAX);
    if (a->mixup > 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "--augment %s: mixup is given twice", text);
    a->mixup = (float)v;
    return KILN_OK;
}

static kiln_status parse_part(const char *part, size_t len, kn_augment *a, const char *text) {
    if (len == 4 && strncmp(part, "flip", 4) == 0) {
        if (a->flip)
            return kn_fail(KILN_ERR_INVALID_ARG, "--augment %s: flip is given twice", text);
        a->flip = true;
        return KILN_OK;
    }
    if (len > 6 && strncmp(part, "shift:", 6) == 0) {
        int64_t n = 0;
        for (size_t i = 6; i < len; i++) {
            if (part[i] < '0' || part[i] > '9' || n > SHIFT_MAX)
                return kn_fail(KILN_ERR_INVALID_ARG, "--augment %s: shift:N takes a whole number of pixels "
                               "from 1 to %d", text, SHIFT_MAX);
            n = n * 10 + (part[i] - '0');
        }
        if (n < 1 || n > SHIFT_MAX)
            return kn_fail(KILN_ERR_INVALID_ARG, "--augment %s: shift:N takes a whole number of pixels from 1 to %d",
                           text, SHIFT_MAX);
        if (a->shift)
            return kn_fail(KILN_ERR_INVALID_ARG, "--augment %s: shift is given twice", text);
        a->shift = n;
        return KILN_OK;
    }
    if (len >= 6 && strncmp(part, "mixup:", 6) == 0)
        return parse_mixup(part, len, a, text);
    return kn_fail(KILN_ERR_INVALID_ARG, "--augment %s: '%.*s' is not an augmentation; give shift:N (move by up to "
                   "N pixels), flip (mirror left to right), mixup:A (mix pairs of samples, Beta(A, A) weights), "
                   "several joined by commas, or none", text, (int)len, part);
}

kiln_status kn_augment_parse(const char *text, kn_augment *out) {
    kn_augment a = {0};
    if (text && *text && strcmp(text, "none") != 0) {
        for (const char *p = text;;) {
            size_t len = strcspn(p, ",");
            KN_TRY(parse_part(p, len, &a, text));
            if (!p[len])
                break;
            p += len + 1;
        }
    }
    *out = a;
    return KILN_OK;
}

void kn_augment_format(const kn_augment *a, char *text, size_t size) {
    char shift[32] = "", mixup[48] = "";
    if (a->shift)
        snprintf(shift, sizeof shift, "shift:%lld", (long long)a->shift);
    /* The fewest digits, without an exponent, that read back to the same float (0.2, not 0.200000003; 100,
     * not 1e+02). */
    for (int digits = 1; a->mixup > 0 && digits <= 9; digits++) {
        snprintf(mixup, sizeof mixup, "mixup:%.*g", digits, (double)a->mixup);
        if ((float)strtod(mixup + 6, NULL) == a->mixup && !strchr(mixup, 'e'))
            break;
    }
    if (!kn_augment_on(a)) {
        snprintf(text, size, "none");
        return;
    }
    snprintf(text, size, "%s%s%s%s%s", shift, *shift && a->flip ? "," : "", a->flip ? "flip" : "",
             (*shift || a->flip) && *mixup ? "," : "", mixup);
}

bool kn_augment_views_on(const kn_augment *a) { return a->shift > 0 || a->flip; }

bool kn_augment_on(const kn_augment *a) { return kn_augment_views_on(a) || a->mixup > 0; }

kiln_status kn_augment_check(const kn_augment *a, const kn_shape *sample_shape) {
    if (!kn_augment_views_on(a))
        return KILN_OK;
    char shape[96], text[KN_AUGMENT_TEXT_MAX];
    kn_augment_format(a, text, sizeof text);
    if (sample_shape->ndim != 3)
        return kn_fail(KILN_ERR_INVALID_ARG, "--augment %s needs image samples (C, H, W); these samples are %s", text,
                       kn_shape_str(sample_shape, shape, sizeof shape));
    if (a->shift >= sample_shape->d[1] || a->shift >= sample_shape->d[2])
        return kn_fail(KILN_ERR_INVALID_ARG, "--augment %s: a shift of %lld pixels leaves nothing of images %s", text,
                       (long long)a->shift, kn_shape_str(sample_shape, shape, sizeof shape));
    return KILN_OK;
}

kn_augment_view kn_augment_view_of(const kn_augment *a, uint64_t seed, int64_t epoch, int64_t index) {
    /* Three draws from a stream of its own per (seed, epoch, sample), always all three, so that a view does
     * not depend on anything else drawn in the run. */
    kn_rng r = {kn_mix64(kn_mix64(kn_mix64(seed) ^ (uint64_t)epoch) ^ (uint64_t)index)};
    uint64_t span = 2 * (uint64_t)a->shift + 1;
    kn_augment_view v;
    v.dy = (int64_t)kn_rng_below(&r, span) - a->shift;
    v.dx = (int64_t)kn_rng_below(&r, span) - a->shift;
    v.flip = a->flip && (kn_rng_next(&r) >> 63);
    return v;
}

/* Uniform in (0, 1), never 0, so that its log is finite. 53 random bits. */
static double open_uniform(kn_rng *r) { return ((double)(kn_rng_next(r) >> 11) + 0.5) * 0x1.0p-53; }

/* log of a Gamma(k, 1) draw, k > 0: Marsaglia & Tsang (2000) for k >= 1; for k < 1, Gamma(k + 1) U^(1/k),
 * in logs so that small k (whose draws underflow a double) still gives a finite value. */
static double log_gamma_draw(kn_rng *r, double k) {
    double boost = 0;
    if (k < 1) {
        boost = log(open_uniform(r)) / k;
        k += 1;
    }
    double d = k - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        /* A standard normal by Box-Muller. */
        double z = sqrt(-2.0 * log(open_uniform(r))) * cos(2.0 * M_PI * open_uniform(r));
        double v = 1.0 + c * z;
        if (v <= 0)
            continue;
        v = v * v * v;
        if (log(open_uniform(r)) < 0.5 * z * z + d - d * v + d * log(v))
            return log(d * v) + boost;
    }
}

float kn_augment_mix_weight(const kn_augment *a, uint64_t seed, int64_t epoch, int64_t index) {
    if (!(a->mixup > 0))
        return 1.0f;
    /* A stream apart from the view's (the seed is salted), so that adding mixup leaves the views as they were. */
    kn_rng r = {kn_mix64(kn_mix64(kn_mix64(seed ^ 0x6d69787570ull) ^ (uint64_t)epoch) ^ (uint64_t)index)};
    /* Beta(A, A) = X / (X + Y) for X, Y ~ Gamma(A): 1 / (1 + exp(log Y - log X)). */
    double log_x = log_gamma_draw(&r, a->mixup), log_y = log_gamma_draw(&r, a->mixup);
    return (float)(1.0 / (1.0 + exp(log_y - log_x)));
}

/* out (C, H, W) = in moved by the view: out[c, y, x] = in'[c, y - dy, x - dx], 0 outside, where in' is in
 * mirrored (in'[c, y, x] = in[c, y, W - 1 - x]) when v.flip. */
static void view_apply(const kn_augment_view *v, const float *in, float *out, int64_t channels, int64_t h,
                       int64_t w) {
    for (int64_t c = 0; c < channels; c++) {
        for (int64_t y = 0; y < h; y++) {
            float *row = out + (c * h + y) * w;
            int64_t sy = y - v->dy;
            if (sy < 0 || sy >= h) {
                memset(row, 0, sizeof(float) * (size_t)w);
                continue;
            }
            // columns x with sx = x - dx inside [0, w) read the source; those left and right of them are 0
            const float *src = in + (c * h + sy) * w;
            int64_t x0 = v->dx <= 0 ? 0 : v->dx < w ? v->dx : w, x1 = v->dx < 0 ? w + v->dx : w;
            x1 = x1 > x0 ? x1 : x0;
            memset(row, 0, sizeof(float) * (size_t)x0);
            if (v->flip)
                for (int64_t x = x0; x < x1; x++)
                    row[x] = src[w - 1 - (x - v->dx)];
            else
                memcpy(row + x0, src + x0 - v->dx, sizeof(float) * (size_t)(x1 - x0));
            memset(row + x1, 0, sizeof(float) * (size_t)(w - x1));
        }
    }
}

static kiln_status views_apply(const kn_augment *a, float *x, int64_t n, const kn_shape *sample_shape, uint64_t seed,
                               int64_t epoch, const int64_t *index) {
    int64_t channels = sample_shape->d[0], h = sample_shape->d[1], w = sample_shape->d[2], size = channels * h * w;
    float *sample = malloc(sizeof(float) * (size_t)size); // (C, H, W): the sample as the batcher gave it
    if (!sample)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for an augmented view");
    for (int64_t i = 0; i < n; i++) {
        kn_augment_view v = kn_augment_view_of(a, seed, epoch, index[i]);
        memcpy(sample, x + i * size, sizeof(float) * (size_t)size);
        view_apply(&v, sample, x + i * size, channels, h, w);
    }
    free(sample);
    return KILN_OK;
}

void kn_augment_mix_pair(float *a, float *b, int64_t width, float wa, float wb) {
    for (int64_t j = 0; j < width; j++) {
        float own = a[j], other = b[j];
        a[j] = wa * own + (1.0f - wa) * other;
        b[j] = wb * other + (1.0f - wb) * own;
    }
}

/* x_i <- lambda_i x_i + (1 - lambda_i) x_partner(i), pair by pair. */
static void mix_apply(const kn_augment *a, float *x, int64_t n, int64_t size, uint64_t seed, int64_t epoch,
                      const int64_t *index, float *mix_weight) {
    for (int64_t i = 0; i <= kn_augment_mix_partner(i, n); i++) {
        int64_t p = kn_augment_mix_partner(i, n);
        float li = kn_augment_mix_weight(a, seed, epoch, index[i]), lp = kn_augment_mix_weight(a, seed, epoch, index[p]);
        kn_augment_mix_pair(x + i * size, x + p * size, size, li, lp);
        if (mix_weight) {
            mix_weight[i] = li;
            mix_weight[p] = lp;
        }
    }
}

kiln_status kn_augment_batch(const kn_augment *a, float *x, int64_t n, const kn_shape *sample_shape, uint64_t seed,
                             int64_t epoch, const int64_t *index, float *mix_weight) {
    if (kn_augment_views_on(a))
        KN_TRY(views_apply(a, x, n, sample_shape, seed, epoch, index));
    if (a->mixup > 0) {
        mix_apply(a, x, n, kn_shape_numel(sample_shape), seed, epoch, index, mix_weight);
        return KILN_OK;
    }
    for (int64_t i = 0; mix_weight && i < n; i++)
        mix_weight[i] = 1.0f;
    return KILN_OK;
}
