#include <stdlib.h>

#include "core/align.h"
#include "ops/op.h"

/* A buffer of at least `bytes` at *buf (capacity *cap), reallocated only to grow; NULL when out of memory. */
static void *grow_buffer(void **buf, size_t *cap, size_t bytes) {
    if (bytes <= *cap)
        return *buf;
    size_t rounded;
    if (!kn_align_up(bytes, &rounded))
        return NULL;
    free(*buf);
    *buf = kn_aligned_alloc(rounded);
    *cap = *buf ? rounded : 0;
    return *buf;
}

void *kn_op_scratch(kn_op_ctx *ctx, size_t bytes) { return grow_buffer(&ctx->scratch, &ctx->scratch_bytes, bytes); }

kiln_status kn_op_call_prepared(const kn_op_call *call, const void **state) {
    *state = call->prepared;
    if (call->prepared)
        return KILN_OK;
    const kn_op *op = call->node->op;
    size_t bytes = op->prepared_bytes(call);
    void *fresh = grow_buffer(&call->ctx->prepared, &call->ctx->prepared_bytes, bytes ? bytes : 1);
    if (!fresh)
        return kn_fail(KILN_ERR_NOMEM, "no memory for %zu bytes of %s's prepared state", bytes, op->name);
    KN_TRY(op->prepare(call, fresh));
    *state = fresh;
    return KILN_OK;
}

void kn_op_ctx_release(kn_op_ctx *ctx) {
    free(ctx->scratch);
    free(ctx->prepared);
    ctx->scratch = ctx->prepared = NULL;
    ctx->scratch_bytes = ctx->prepared_bytes = 0;
}
