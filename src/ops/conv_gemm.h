/* The per-image, per-group matrix products that Conv and ConvTranspose share.
 *
 * Both ops relate a windowed tensor A (Ca, OH*OW), one value per window position, with an image
 * B (Cb, H*W), through weights W (Ca, Cb/group, kH, kW); a window axis per spatial dim (ops/window.h)
 * places the windows on the image (axis.in = H, axis.out = OH). Conv has A = Y and B = X; ConvTranspose
 * has A = X and B = Y. The three products, each one matrix product per group over the column matrix
 * col = im2col(B) (Cb*kH*kW, OH*OW) (ops/im2col.h):
 *     unfold + apply    A_g = W_g @ col_g         Conv forward, ConvTranspose's dX
 *     weight_grad       dW_g += A_g @ col_g^T     both ops' dW
 *     fold              B += col2im(W_g^T @ A_g)  Conv's dX, ConvTranspose forward
 * A pointwise geometry (1x1 kernel, stride 1, no padding) needs no column matrix: B is its own.
 */
#ifndef KN_OPS_CONV_GEMM_H
#define KN_OPS_CONV_GEMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/graph.h"
#include "ops/window.h"

typedef struct kn_conv_gemm {
    int64_t group;
    int64_t a_channels, b_channels; /* Ca, Cb */
    kn_window_axis h, w;
    /* Packing workspace for the products (kn_sgemm_ws), or NULL to let them allocate. */
    void *gemm_ws;
    size_t gemm_ws_bytes;
    /* fold's W_g^T packed once for all images (kn_conv_gemm_pack_fold), or NULL: each product packs it. */
    const float *fold_packed;
} kn_conv_gemm;

bool kn_conv_gemm_is_pointwise(const kn_conv_gemm *c);

/* Bytes of the column matrix (0 when pointwise); false on overflow. */
bool kn_conv_gemm_col_bytes(const kn_conv_gemm *c, size_t *bytes);

/* Bytes of kn_sgemm_ws workspace that kn_conv_gemm_fold's products take (SIZE_MAX on overflow). */
size_t kn_conv_gemm_fold_workspace(const kn_conv_gemm *c);

/* The column matrix of image b (Cb, H, W): im2col into col, or b itself when pointwise. */
const float *kn_conv_gemm_unfold(const kn_conv_gemm *c, const float *b, float *col);

/* a (Ca, OH*OW) = w @ cols + beta * a, per group. */
void kn_conv_gemm_apply(const kn_conv_gemm *c, const float *w, const float *cols, float beta, float *a);

/* dw (Ca, Cb/group*kH*kW) = a @ cols^T + beta * dw, per group. */
void kn_conv_gemm_weight_grad(const kn_conv_gemm *c, const float *a, const float *cols, float beta, float *dw);

/* Bytes of kn_sgemm_ws workspace that kn_conv_gemm_weight_grad's products take (SIZE_MAX on
 * overflow). */
size_t kn_conv_gemm_weight_grad_workspace(const kn_conv_gemm *c);

/* Floats of fold's W^T packed once (0 on overflow), and the packing: w (Ca, Cb/group, kH, kW) into
 * packed, that many floats, for kn_conv_gemm.fold_packed. */
size_t kn_conv_gemm_fold_packed_floats(const kn_conv_gemm *c);
void kn_conv_gemm_pack_fold(const kn_conv_gemm *c, const float *w, float *packed);

/* b (Cb, H, W) += col2im(w^T @ a), per group; col is scratch for the column matrix (unused when
 * pointwise, where the products add into b directly). */
void kn_conv_gemm_fold(const kn_conv_gemm *c, const float *w, const float *a, float *col, float *b);

/* The operand checks Conv and ConvTranspose share, in any rank: X (N, C, spatial...), W of X's rank whose
 * leading dims the messages call `w_lead` ("M, C/group" or "C, M/group"), positive dims, and a group
 * (returned in *group) that divides C. */
kiln_status kn_conv_check_operands(const kn_node *node, const kn_shape *x, const kn_shape *w, const char *w_lead,
                                   int64_t *group);

/* Conv's and ConvTranspose's shape inference starts here: one output, X and W given, everything f32.
 * Gives the input values (*b NULL when there is no bias). */
kiln_status kn_conv_infer_inputs(const kn_graph *g, const kn_node *node, const kn_value **x, const kn_value **w,
                                 const kn_value **b);

/* db[m] += the sum of dy (N, M, plane) over the batch and the plane of channel m. */
void kn_conv_bias_grad(int64_t N, int64_t M, int64_t plane, const float *dy, float *db);

#endif
