/* Writing model files: whole-buffer writes to a descriptor, and atomic replacement of a file, shared by
 * the .kiln writer and the ONNX exporter. */
#ifndef KN_FILE_WRITE_H
#define KN_FILE_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

/* Writes all n bytes of src to fd (retrying short writes and EINTR) and advances *pos by what was
 * written; *pos names the offset in the error message. */
kiln_status kn_file_write_all(int fd, const void *src, size_t n, uint64_t *pos);

/* Produces a file's bytes into the open descriptor fd (with kn_file_write_all). */
typedef kiln_status (*kn_file_emit_fn)(int fd, void *ctx);

/* Writes `path` atomically: emit writes into `<path>.tmp.<pid>`, which is fsynced and renamed over
 * `path`, then the directory is fsynced. On failure the temporary file is removed and an existing
 * `path` is untouched; readers see the old file or the new one, never a mix. Errors do not name a file: the
 * caller puts `path` in front (kn_error_prefix). First
 * removes any `<path>.tmp.<pid>` whose process is no longer alive (left by a killed run). */
kiln_status kn_file_write_atomic(const char *path, kn_file_emit_fn emit, void *ctx);

#endif
