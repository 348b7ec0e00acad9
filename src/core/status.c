#include "core/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum { KN_ERROR_MAX = 1024 };
static _Thread_local char kn_error_message[KN_ERROR_MAX];

kiln_status kn_fail(kiln_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(kn_error_message, sizeof kn_error_message, fmt, ap);
    va_end(ap);
    return status;
}

void kn_error_prefix(const char *fmt, ...) {
    char joined[KN_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(joined, sizeof joined, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t used = (size_t)n < sizeof joined ? (size_t)n : sizeof joined - 1;
    size_t rest = strnlen(kn_error_message, sizeof kn_error_message);
    if (rest > sizeof joined - 1 - used)
        rest = sizeof joined - 1 - used;
    memcpy(joined + used, kn_error_message, rest);
    joined[used + rest] = '\0';
    memcpy(kn_error_message, joined, sizeof joined);
}

void kn_error_clear(void) { kn_error_message[0] = '\0'; }

const char *kiln_last_error(void) { return kn_error_message; }

const char *kiln_version(void) { return KILN_VERSION_STRING; }

const char *kiln_status_name(kiln_status status) {
    switch (status) {
    case KILN_OK: return "ok";
    case KILN_ERR_INVALID_ARG: return "invalid argument";
    case KILN_ERR_IO: return "i/o error";
    case KILN_ERR_FORMAT: return "bad file format";
    case KILN_ERR_SHAPE: return "shape mismatch";
    case KILN_ERR_UNSUPPORTED: return "unsupported";
    case KILN_ERR_NOMEM: return "out of memory";
    case KILN_ERR_NUMERIC: return "numeric error";
    case KILN_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}
