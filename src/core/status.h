/* Error reporting inside kiln: set the calling thread's message and return the status. */
#ifndef KN_STATUS_H
#define KN_STATUS_H

#include "kiln/kiln.h"

/* Formats the message for kiln_last_error() and returns `status`, so callers write
 *   return kn_fail(KILN_ERR_SHAPE, "conv '%s': ...", name); */
kiln_status kn_fail(kiln_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Puts `fmt` in front of the current message: adds outer context ("spec.txt:3: ") to an inner error. */
void kn_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

void kn_error_clear(void);

#define KN_TRY(expr)                          \
    do {                                      \
        kiln_status kn_try_status_ = (expr);  \
        if (kn_try_status_ != KILN_OK)        \
            return kn_try_status_;            \
    } while (0)

#endif
