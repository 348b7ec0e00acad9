#include <string.h>

#include "ops/op.h"

/* The table, in the order of KN_OPS (src/ops/list.h), which declares each entry. */
#define KN_ENTRY(id) &kn_op_##id,
static const kn_op *const kn_op_table[] = {KN_OPS(KN_ENTRY)};

const kn_op *kn_op_at(int i) {
    int n = (int)(sizeof kn_op_table / sizeof kn_op_table[0]);
    return (i >= 0 && i < n) ? kn_op_table[i] : NULL;
}

const kn_op *kn_op_find(const char *name) {
    const kn_op *op;
    for (int i = 0; (op = kn_op_at(i)); i++)
        if (strcmp(op->name, name) == 0)
            return op;
    return NULL;
}
