/* IDX files, the MNIST format: a magic (0, 0, element type, rank), `rank` big-endian uint32 dims, then the
 * elements in row-major order. kiln reads unsigned bytes (type 0x08): images scale to x / 255 in [0, 1],
 * labels are class indices. The labels file sits beside the images file under the same name with
 * "images-idxN" replaced by "labels-idx1", compressed or not. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/status.h"
#include "train/data_internal.h"

enum { IDX_UBYTE = 0x08, IDX_MAX_RANK = 4 };

typedef struct idx_header {
    int rank;
    int64_t dims[IDX_MAX_RANK];
    size_t numel;
} idx_header;

static const char *idx_type_name(int type) {
    switch (type) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    }
    return "unknown";
}

static kiln_status idx_read_header(kn_data_file *f, idx_header *h) {
    uint8_t magic[4];
    KN_TRY(kn_data_file_read(f, magic, sizeof magic, "the IDX magic"));
    if (magic[0] != 0 || magic[1] != 0)
        return kn_fail(KILN_ERR_FORMAT, "%s: not an IDX file (it starts with %02x %02x, IDX starts with 00 00)",
                       f->path, magic[0], magic[1]);
    if (magic[2] != IDX_UBYTE)
        return kn_fail(KILN_ERR_UNSUPPORTED,
                       "%s: IDX element type 0x%02x (%s) is not supported; kiln reads unsigned bytes (0x08)",
                       f->path, magic[2], idx_type_name(magic[2]));
    h->rank = magic[3];
    if (h->rank < 1 || h->rank > IDX_MAX_RANK)
        return kn_fail(KILN_ERR_UNSUPPORTED, "%s: IDX rank %d is not supported; kiln reads ranks 1 to %d",
                       f->path, h->rank, IDX_MAX_RANK);

    uint8_t dims[4 * IDX_MAX_RANK];
    KN_TRY(kn_data_file_read(f, dims, 4 * (size_t)h->rank, "the IDX dimensions"));
    h->numel = 1;
    for (int i = 0; i < h->rank; i++) {
        const uint8_t *p = dims + 4 * i;
        h->dims[i] = (int64_t)p[0] << 24 | (int64_t)p[1] << 16 | (int64_t)p[2] << 8 | (int64_t)p[3];
        if (h->dims[i] == 0)
            return kn_fail(KILN_ERR_FORMAT, "%s: IDX dimension %d is 0: the file holds no data", f->path, i);
        /* The element count must also fit as floats once converted. */
        size_t float_bytes;
        if (!kn_size_mul(h->numel, (size_t)h->dims[i], &h->numel) ||
            !kn_size_mul(h->numel, sizeof(float), &float_bytes))
            return kn_fail(KILN_ERR_FORMAT, "%s: IDX dimensions overflow (dimension %d is %lld)", f->path, i,
                           (long long)h->dims[i]);
    }
    return KILN_OK;
}

/* Opens `path`, reads its header and all of its bytes into *data (free() it). */
static kiln_status idx_read(const char *path, idx_header *h, uint8_t **data) {
    *data = NULL;
    kn_data_file f;
    KN_TRY(kn_data_file_open(&f, path));
    kiln_status st = idx_read_header(&f, h);
    if (st == KILN_OK)
        st = kn_data_file_read_alloc(&f, h->numel, "the IDX data", data);
    if (st == KILN_OK)
        st = kn_data_file_expect_end(&f);
    kn_data_file_close(&f);
    if (st != KILN_OK) {
        free(*data);
        *data = NULL;
    }
    return st;
}

static bool file_exists(const char *path) { return access(path, R_OK) == 0; }

/* Finds the labels file beside `images_path`; *out is a new string (free() it). */
static kiln_status idx_find_labels(const char *images_path, char **out) {
    *out = NULL;
    const char *slash = strrchr(images_path, '/');
    const char *base = slash ? slash + 1 : images_path;
    const char *marker = strstr(base, "images-idx");
    while (marker && !(marker[10] >= '0' && marker[10] <= '9'))
        marker = strstr(marker + 1, "images-idx");
    if (!marker)
        return kn_fail(KILN_ERR_INVALID_ARG,
                       "%s: cannot find its labels file: the name has no 'images-idx3' to replace with "
                       "'labels-idx1'",
                       images_path);

    /* "images-idxN" and "labels-idx1" have the same length; keep room to add or drop ".gz". */
    size_t length = strlen(images_path);
    char *with_gz = malloc(length + 4), *without_gz = malloc(length + 4);
    if (!with_gz || !without_gz) {
        free(with_gz);
        free(without_gz);
        return kn_fail(KILN_ERR_NOMEM, "out of memory");
    }
    memcpy(with_gz, images_path, length + 1);
    memcpy(with_gz + (marker - images_path), "labels-idx1", 11);
    memcpy(without_gz, with_gz, length + 1);
    if (kn_data_ends_with(with_gz, ".gz"))
        without_gz[length - 3] = '\0';
    else
        memcpy(with_gz + length, ".gz", 4);

    /* Prefer the form the images file has. */
    bool images_gz = kn_data_ends_with(images_path, ".gz");
    char *first = images_gz ? with_gz : without_gz, *second = images_gz ? without_gz : with_gz;
    const char *found = file_exists(first) ? first : file_exists(second) ? second : NULL;
    kiln_status st = KILN_OK;
    if (!found)
        st = kn_fail(KILN_ERR_IO, "%s: labels file not found: expected %s (or %s)", images_path, first, second);
    else if (!(*out = kn_data_strdup(found)))
        st = kn_fail(KILN_ERR_NOMEM, "out of memory");
    free(with_gz);
    free(without_gz);
    return st;
}

/* Sample shape of an images file of the given rank: (N, H, W) holds one-channel images (1, H, W); the
 * other ranks keep their dims after the first, (N) holding one value per sample. */
static kn_shape idx_sample_shape(const idx_header *h) {
    if (h->rank == 1)
        return kn_shape_of(1, (int64_t[]){1});
    if (h->rank == 3)
        return kn_shape_of(3, (int64_t[]){1, h->dims[1], h->dims[2]});
    return kn_shape_of(h->rank - 1, h->dims + 1);
}

static kiln_status idx_load_images(const char *path, kn_dataset *out) {
    idx_header h;
    uint8_t *pixels;
    KN_TRY(idx_read(path, &h, &pixels));
    out->count = h.dims[0];
    out->sample_shape = idx_sample_shape(&h);
    out->sample_size = kn_shape_numel(&out->sample_shape);
    out->x = kn_data_malloc(h.numel, sizeof(float)); // (count, sample_size)
    if (!out->x) {
        free(pixels);
        return kn_data_nomem(path, "the images", h.numel, sizeof(float));
    }
    kn_data_u8_to_unit(pixels, out->x, h.numel);
    free(pixels);
    return KILN_OK;
}

static kiln_status idx_load_labels(const char *path, const char *images_path, kn_dataset *out) {
    idx_header h;
    uint8_t *bytes;
    KN_TRY(idx_read(path, &h, &bytes));
    if (h.rank != 1) {
        free(bytes);
        return kn_fail(KILN_ERR_FORMAT, "%s: a labels file has rank 1, this one has rank %d", path, h.rank);
    }
    if (h.dims[0] != out->count) {
        free(bytes);
        return kn_fail(KILN_ERR_SHAPE, "%s has %lld labels but %s has %lld images", path, (long long)h.dims[0],
                       images_path, (long long)out->count);
    }
    out->labels = kn_data_malloc(h.numel, sizeof(int64_t)); // (count)
    if (!out->labels) {
        free(bytes);
        return kn_data_nomem(path, "the labels", h.numel, sizeof(int64_t));
    }
    for (size_t i = 0; i < h.numel; i++)
        out->labels[i] = bytes[i];
    free(bytes);
    out->class_count = kn_data_class_count(out->labels, out->count);
    return KILN_OK;
}

kiln_status kn_data_load_idx(const char *images_path, kn_dataset *out) {
    KN_TRY(idx_load_images(images_path, out));
    char *labels_path;
    KN_TRY(idx_find_labels(images_path, &labels_path));
    kiln_status st = idx_load_labels(labels_path, images_path, out);
    free(labels_path);
    return st;
}

static const char *const fashion_mnist_classes[] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
};
enum { FASHION_MNIST_CLASSES = sizeof fashion_mnist_classes / sizeof fashion_mnist_classes[0] };

kiln_status kn_data_load_fashion_mnist(bool test_set, kn_dataset *out) {
    const char *dir = getenv("KILN_FASHION_MNIST_DIR");
    if (!dir || !*dir)
        dir = "/usr/share/datasets/fashion-mnist";
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/%s", dir,
                     test_set ? "t10k-images-idx3-ubyte.gz" : "train-images-idx3-ubyte.gz");
    if (n < 0 || (size_t)n >= sizeof path)
        return kn_fail(KILN_ERR_INVALID_ARG, "KILN_FASHION_MNIST_DIR is too long (%zu bytes)", strlen(dir));
    if (!file_exists(path))
        return kn_fail(KILN_ERR_IO,
                       "fashion-mnist: %s not found; install the Debian package dataset-fashion-mnist or set "
                       "KILN_FASHION_MNIST_DIR",
                       path);
    KN_TRY(kn_data_load_idx(path, out));
    if (out->class_count > FASHION_MNIST_CLASSES)
        return kn_fail(KILN_ERR_FORMAT, "fashion-mnist: %s has label %lld; Fashion-MNIST has %d classes", path,
                       (long long)out->class_count - 1, FASHION_MNIST_CLASSES);
    return kn_data_set_class_names(out, fashion_mnist_classes, FASHION_MNIST_CLASSES);
}
