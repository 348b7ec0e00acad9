#include <stdlib.h>

#include "ops/op.h"

void *kn_op_scratch(kn_op_ctx *ctx, size_t bytes) {
    if (bytes <= ctx->scratch_bytes)
        return ctx->scratch;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded < bytes)
        return NULL;
    free(ctx->scratch);
    ctx->scratch = aligned_alloc(64, rounded);
    ctx->scratch_bytes = ctx->scratch ? rounded : 0;
    return ctx->scratch;
}

void kn_op_ctx_release(kn_op_ctx *ctx) {
    free(ctx->scratch);
    ctx->scratch = NULL;
    ctx->scratch_bytes = 0;
}
