/* kiln's own model file, `.kiln`: a whole kn_graph (values, nodes, attributes, initializer data,
 * metadata) plus optional named f32 tensors (a checkpoint's optimizer state), in one little-endian,
 * checksummed, 64-byte aligned container that can be mmapped and used in place. The byte layout is
 * docs/format.md.
 *
 * Writes are atomic: a crash or a failed write never leaves a half-written model behind. Reads check
 * every count, offset, size and checksum: a truncated or corrupt file gives KILN_ERR_FORMAT with a
 * message naming the file, the section and the offset; a file from a newer kiln (a newer major format
 * version, or a storage dtype this kiln does not have) gives a clear error too.
 */
#ifndef KN_KILN_FILE_H
#define KN_KILN_FILE_H

#include <stddef.h>

#include "core/graph.h"

/* The format version this kiln writes. Readers accept any minor version of their major version. */
#define KN_KILN_FORMAT_MAJOR 1
#define KN_KILN_FORMAT_MINOR 2

/* A named f32 tensor carried beside the graph (optimizer state in a checkpoint). */
typedef struct kn_named_tensor {
    char *name;    /* malloc'd */
    kn_shape shape;
    float *data;   /* malloc'd, numel floats */
} kn_named_tensor;

/* Writes graph g (+ optional extras) to `path` atomically: into `<path>.tmp.<pid>`, fsync, rename over
 * `path`, fsync the directory. On failure the temp file is removed and an existing `path` is untouched. */
kiln_status kn_kiln_save(const char *path, const kn_graph *g, const kn_named_tensor *extras, int n_extras);

/* Same, into a malloc'd memory buffer (*buf, *size); the caller frees *buf. */
kiln_status kn_kiln_save_buffer(const kn_graph *g, const kn_named_tensor *extras, int n_extras, void **buf,
                                size_t *size);

typedef enum kn_kiln_load_flags { KN_KILN_LOAD_COPY = 0, KN_KILN_LOAD_MMAP = 1, KN_KILN_LOAD_PACKED = 2 } kn_kiln_load_flags;

/* Reads a .kiln file into a fresh graph (kn_graph_init is done here). With KN_KILN_LOAD_MMAP, initializer
 * data points into a private copy-on-write mapping of the file owned by the graph (g->mapping, unmapped by
 * kn_graph_free): pages are shared with the page cache until training writes a weight, and the file
 * itself is never changed. With KN_KILN_LOAD_COPY everything lives in the graph arena.
 * KN_KILN_LOAD_PACKED maps as MMAP and leaves the initializers stored as affine i4 or i2 undecoded: such
 * a value has its storage (checked, its codes in the mapping) and no data, against the rule of
 * format/storage.h. For inference only: kn_graph_optimize runs their products on the codes
 * (KN_OPT_LOWBIT) and decodes the rest; a session of the graph as loaded decodes them for itself.
 * extras/n_extras may be NULL (extras are then checked but not returned); free them with
 * kn_named_tensors_free. On error the graph is left freed and *extras NULL. */
kiln_status kn_kiln_load(const char *path, kn_kiln_load_flags flags, kn_graph *g, kn_named_tensor **extras,
                         int *n_extras);

/* Same, from a memory buffer; everything is copied, the buffer may be freed afterwards. */
kiln_status kn_kiln_load_buffer(const void *buf, size_t size, kn_graph *g, kn_named_tensor **extras,
                                int *n_extras);
/* The same as KN_KILN_LOAD_PACKED does from a file: affine i4 and i2 weights keep their storage (its
 * codes copied into the arena) and get no data. For inference only. */
kiln_status kn_kiln_load_buffer_packed(const void *buf, size_t size, kn_graph *g);

/* Frees n tensors (names, data) and the array itself; NULL is fine. */
void kn_named_tensors_free(kn_named_tensor *t, int n);

#endif
