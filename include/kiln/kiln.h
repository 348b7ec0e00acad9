/* kiln — public runtime API.
 *
 * Status codes, version and error messages. Every kiln function that can fail returns a kiln_status;
 * on failure a one-line message with context is readable from kiln_last_error() on the same thread.
 */
#ifndef KILN_KILN_H
#define KILN_KILN_H

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_VERSION_MAJOR 0
#define KILN_VERSION_MINOR 1
#define KILN_VERSION_PATCH 0
#define KILN_VERSION_STRING "0.1.0"

typedef enum kiln_status {
    KILN_OK = 0,
    KILN_ERR_INVALID_ARG,  /* a bad argument, option or spec line */
    KILN_ERR_IO,           /* a file could not be opened, read or written */
    KILN_ERR_FORMAT,       /* a file is truncated, corrupt or of an unknown version */
    KILN_ERR_SHAPE,        /* tensor shapes do not fit together */
    KILN_ERR_UNSUPPORTED,  /* an op, dtype or feature kiln does not have */
    KILN_ERR_NOMEM,        /* out of memory, or a size that overflows */
    KILN_ERR_NUMERIC,      /* a NaN or infinity where a finite number is needed */
    KILN_ERR_INTERNAL      /* a bug in kiln */
} kiln_status;

/* "0.1.0"; static storage, never freed. */
const char *kiln_version(void);

/* Short name of a status code ("invalid argument"); static storage. */
const char *kiln_status_name(kiln_status status);

/* The message of the last failure on the calling thread; "" when none.
 * The pointer stays valid until the next kiln call on this thread. */
const char *kiln_last_error(void);

#ifdef __cplusplus
}
#endif
#endif
