/* Shared by the DATA loaders (data.c, data_common.c, data_idx.c, data_csv.c, data_npy.c); not an API.
 *
 * A loader fills the kn_dataset it is given and returns; on failure it returns the error and leaves whatever
 * it allocated in the dataset, which kn_dataset_load then frees. Loaders free only their temporaries.
 */
#ifndef KN_TRAIN_DATA_INTERNAL_H
#define KN_TRAIN_DATA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <zlib.h>

#include "train/data.h"

/* A file read front to back through zlib, so that plain and gzip-compressed files read alike. */
typedef struct kn_data_file {
    gzFile gz;
    const char *path;
} kn_data_file;

kiln_status kn_data_file_open(kn_data_file *f, const char *path);
void kn_data_file_close(kn_data_file *f);
/* Reads exactly `bytes` into `buf`; a short file is a "truncated" format error naming `what`. */
kiln_status kn_data_file_read(kn_data_file *f, void *buf, size_t bytes, const char *what);
/* Reads exactly `bytes` into a new buffer (free() it). The buffer grows as data arrives, so a header that
 * claims a huge size makes kiln allocate no more than the file really holds before the read fails. */
kiln_status kn_data_file_read_alloc(kn_data_file *f, size_t bytes, const char *what, uint8_t **out);
/* Fails when the file goes on past the data its header described. */
kiln_status kn_data_file_expect_end(kn_data_file *f);
/* The whole (decompressed) file as one NUL-terminated buffer; *size excludes the NUL. */
kiln_status kn_data_file_slurp(const char *path, char **out, size_t *size);

/* malloc(count * size), NULL on overflow or out of memory. */
void *kn_data_malloc(size_t count, size_t size);
/* The out-of-memory error for an allocation of count * size bytes for `what` in `path`. */
kiln_status kn_data_nomem(const char *path, const char *what, size_t count, size_t size);
char *kn_data_strdup(const char *s);
bool kn_data_ends_with(const char *s, const char *suffix);
/* Copies up to `length` bytes of `s` into `out` for an error message: non-printable bytes become '?',
 * and a long value is cut with "...". Returns out. */
char *kn_data_snippet(const char *s, size_t length, char *out, size_t out_size);

/* dst[i] = src[i] / 255, exactly: pixels and uint8 arrays become floats in [0, 1]. */
void kn_data_u8_to_unit(const uint8_t *src, float *dst, size_t n);
/* max(labels) + 1 for labels already checked to lie in [0, KN_DATA_MAX_CLASSES). */
int64_t kn_data_class_count(const int64_t *labels, int64_t n);
/* Sets ds->class_count and copies the `count` names into ds->class_names. */
kiln_status kn_data_set_class_names(kn_dataset *ds, const char *const *names, int64_t count);

/* The loaders, one per DATA form. */
kiln_status kn_data_load_idx(const char *images_path, kn_dataset *out);
kiln_status kn_data_load_fashion_mnist(bool test_set, kn_dataset *out);
kiln_status kn_data_load_csv(const char *path, const kn_data_options *options, kn_dataset *out);
kiln_status kn_data_load_npy(const char *x_path, const char *y_path, kn_dataset *out);

#endif
