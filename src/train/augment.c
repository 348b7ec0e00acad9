#include "train/augment.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/status.h"

#define SHIFT_MAX 4096

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
    return kn_fail(KILN_ERR_INVALID_ARG, "--augment %s: '%.*s' is not an augmentation; give shift:N (move by up to "
                   "N pixels), flip (mirror left to right), both joined by a comma, or none", text, (int)len, part);
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
    if (a->shift && a->flip)
        snprintf(text, size, "shift:%lld,flip", (long long)a->shift);
    else if (a->shift)
        snprintf(text, size, "shift:%lld", (long long)a->shift);
    else
        snprintf(text, size, "%s", a->flip ? "flip" : "none");
}

bool kn_augment_on(const kn_augment *a) { return a->shift > 0 || a->flip; }

kiln_status kn_augment_check(const kn_augment *a, const kn_shape *sample_shape) {
    if (!kn_augment_on(a))
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
            const float *src = in + (c * h + sy) * w;
            for (int64_t x = 0; x < w; x++) {
                int64_t sx = x - v->dx;
                row[x] = sx < 0 || sx >= w ? 0.0f : src[v->flip ? w - 1 - sx : sx];
            }
        }
    }
}

kiln_status kn_augment_batch(const kn_augment *a, float *x, int64_t n, const kn_shape *sample_shape, uint64_t seed,
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
