#include "ops/im2col.h"

#include <string.h>

/* Below this many elements a loop runs on one thread: waking the team costs more than it saves. */
#define KN_IM2COL_PARALLEL_MIN (1 << 14)

/* Where row r = (c, i, j) of the column matrix reads: output rows [oh_lo, oh_hi) and columns
 * [ow_lo, ow_hi) see real pixels through kernel tap (i, j); the rest see padding. */
typedef struct col_tap {
    int64_t oh_lo, oh_hi, ow_lo, ow_hi;
    int64_t first; /* offset in channel c's plane of the pixel read at (oh_lo, ow_lo) */
} col_tap;

static col_tap col_tap_of(const kn_window_axis *h, const kn_window_axis *w, int64_t r) {
    int64_t tap = r % (h->kernel * w->kernel), i = tap / w->kernel, j = tap % w->kernel;
    col_tap t;
    kn_window_tap_range(h, i, &t.oh_lo, &t.oh_hi);
    kn_window_tap_range(w, j, &t.ow_lo, &t.ow_hi);
    int64_t ih = kn_window_start(h, t.oh_lo) + i * h->dilation;
    int64_t iw = kn_window_start(w, t.ow_lo) + j * w->dilation;
    t.first = ih * w->in + iw;
    return t;
}

static bool col_tap_empty(const col_tap *t) { return t->oh_lo == t->oh_hi || t->ow_lo == t->ow_hi; }

void kn_im2col(int64_t channels, const kn_window_axis *h, const kn_window_axis *w, const float *x,
               float *col) {
    int64_t taps = h->kernel * w->kernel, in_plane = h->in * w->in, out_plane = h->out * w->out;
    int64_t rows = channels * taps, OW = w->out, W = w->in;
    int64_t row_step = h->stride * W, col_step = w->stride;
#pragma omp parallel for schedule(static) if (rows * out_plane >= KN_IM2COL_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        float *dst = col + r * out_plane; // (OH, OW)
        col_tap t = col_tap_of(h, w, r);
        if (col_tap_empty(&t)) {
            memset(dst, 0, sizeof(float) * (size_t)out_plane);
            continue;
        }
        const float *xc = x + (r / taps) * in_plane; // (H, W)
        int64_t width = t.ow_hi - t.ow_lo;
        memset(dst, 0, sizeof(float) * (size_t)(t.oh_lo * OW));
        for (int64_t oh = t.oh_lo; oh < t.oh_hi; oh++) {
            const float *src = xc + t.first + (oh - t.oh_lo) * row_step;
            float *d = dst + oh * OW;
            memset(d, 0, sizeof(float) * (size_t)t.ow_lo);
            if (col_step == 1) {
                memcpy(d + t.ow_lo, src, sizeof(float) * (size_t)width);
            } else {
                for (int64_t k = 0; k < width; k++)
                    d[t.ow_lo + k] = src[k * col_step];
            }
            memset(d + t.ow_hi, 0, sizeof(float) * (size_t)(OW - t.ow_hi));
        }
        memset(dst + t.oh_hi * OW, 0, sizeof(float) * (size_t)((h->out - t.oh_hi) * OW));
    }
}

void kn_col2im(int64_t channels, const kn_window_axis *h, const kn_window_axis *w, const float *col,
               float *x) {
    int64_t taps = h->kernel * w->kernel, in_plane = h->in * w->in, out_plane = h->out * w->out;
    int64_t OW = w->out, W = w->in;
    int64_t row_step = h->stride * W, col_step = w->stride;
#pragma omp parallel for schedule(static) if (channels * taps * out_plane >= KN_IM2COL_PARALLEL_MIN)
    for (int64_t c = 0; c < channels; c++) {
        for (int64_t r = c * taps; r < (c + 1) * taps; r++) {
            col_tap t = col_tap_of(h, w, r);
            if (col_tap_empty(&t))
                continue;
            float *xc = x + c * in_plane; // (H, W)
            int64_t width = t.ow_hi - t.ow_lo;
            for (int64_t oh = t.oh_lo; oh < t.oh_hi; oh++) {
                float *d = xc + t.first + (oh - t.oh_lo) * row_step;
                const float *s = col + r * out_plane + oh * OW + t.ow_lo;
                for (int64_t k = 0; k < width; k++)
                    d[k * col_step] += s[k];
            }
        }
    }
}
