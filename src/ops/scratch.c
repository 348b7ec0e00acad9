#include <stdlib.h>

#include "core/align.h"
#include "ops/op.h"

void *kn_op_scratch(kn_op_ctx *ctx, size_t bytes) {
    if (bytes <= ctx->scratch_bytes)
        return ctx->scratch;
    size_t rounded;
    if (!kn_align_up(bytes, &rounded))
        return NULL;
    free(ctx->scratch);
    ctx->scratch = kn_aligned_alloc(rounded);
    ctx->scratch_bytes = ctx->scratch ? rounded : 0;
    return ctx->scratch;
}

void kn_op_ctx_release(kn_op_ctx *ctx) {
    free(ctx->scratch);
    ctx->scratch = NULL;
    ctx->scratch_bytes = 0;
}
