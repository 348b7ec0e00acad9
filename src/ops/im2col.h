/* Unfolding images into column matrices and folding them back: the im2col / col2im pair behind Conv
 * and ConvTranspose. A window axis per spatial dim (ops/window.h) places the taps: row (c, i, j) of
 * the column matrix holds, at each window position (oh, ow), the pixel of channel c that kernel tap
 * (i, j) reads there, or 0 where it reads padding.
 */
#ifndef KN_OPS_IM2COL_H
#define KN_OPS_IM2COL_H

#include <stdint.h>

#include "ops/window.h"

/* col (C*kH*kW, OH*OW) = the unfolded image x (C, H, W), with H = h->in, OH = h->out and so on. */
void kn_im2col(int64_t channels, const kn_window_axis *h, const kn_window_axis *w, const float *x,
               float *col);

/* x (C, H, W) += col (C*kH*kW, OH*OW) folded back, each entry onto the pixel it was read from: the
 * adjoint of kn_im2col. One thread owns each channel, so the order of the adds is fixed. */
void kn_col2im(int64_t channels, const kn_window_axis *h, const kn_window_axis *w, const float *col,
               float *x);

#endif
