/* Data loading: IDX (plain and gzip), CSV and .npy files written into a temp dir and read back exactly;
 * label-file discovery, standardisation, class names; split and batcher determinism; Fashion-MNIST; and
 * hostile files, each of which must give a clear error naming the file, never a crash. */
#define _GNU_SOURCE
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "core/clock.h"
#include "core/rng.h"
#include "core/status.h"
#include "train/api.h"
#include "train/data.h"

static char temp_dir[64];
static const kn_data_options quiet = {.quiet = true};

/* ---- writing test files ---- */

static const char *temp_path(const char *name) {
    static char paths[8][512];
    static int next;
    char *path = paths[next++ % 8];
    snprintf(path, sizeof paths[0], "%s/%s", temp_dir, name);
    return path;
}

static void write_bytes(const char *name, const void *data, size_t size) {
    FILE *f = fopen(temp_path(name), "wb");
    CHECK(f != NULL);
    if (!f)
        return;
    CHECK(fwrite(data, 1, size, f) == size);
    fclose(f);
}

static void write_text(const char *name, const char *text) { write_bytes(name, text, strlen(text)); }

/* Writes a string literal's bytes, embedded NULs included. */
#define WRITE_LITERAL(name, literal) write_bytes(name, literal, sizeof literal - 1)

static void write_gz(const char *name, const void *data, size_t size) {
    gzFile f = gzopen(temp_path(name), "wb");
    CHECK(f != NULL);
    if (!f)
        return;
    CHECK(gzwrite(f, data, (unsigned)size) == (int)size);
    gzclose(f);
}

/* An IDX file image: magic, big-endian dims, then `size` data bytes. Returns its length. */
static size_t idx_image(uint8_t *out, int type, int rank, const uint32_t *dims, const uint8_t *data, size_t size) {
    uint8_t *p = out;
    *p++ = 0;
    *p++ = 0;
    *p++ = (uint8_t)type;
    *p++ = (uint8_t)rank;
    for (int i = 0; i < rank; i++) {
        *p++ = (uint8_t)(dims[i] >> 24);
        *p++ = (uint8_t)(dims[i] >> 16);
        *p++ = (uint8_t)(dims[i] >> 8);
        *p++ = (uint8_t)dims[i];
    }
    if (size)
        memcpy(p, data, size);
    return (size_t)(p - out) + size;
}

static void write_idx(const char *name, bool gz, int rank, const uint32_t *dims, const uint8_t *data, size_t size) {
    uint8_t *file = malloc(4 + 4 * (size_t)rank + size);
    size_t length = idx_image(file, 0x08, rank, dims, data, size);
    if (gz)
        write_gz(name, file, length);
    else
        write_bytes(name, file, length);
    free(file);
}

/* An .npy file with the given header dict, padded like numpy pads it, then `size` data bytes. */
static void write_npy_dict(const char *name, int major, const char *dict, const void *data, size_t size) {
    size_t prefix = major == 1 ? 10 : 12, dict_length = strlen(dict);
    size_t header_length = (prefix + dict_length + 1 + 63) / 64 * 64 - prefix;
    uint8_t *file = malloc(prefix + header_length + size);
    memcpy(file, "\x93NUMPY", 6);
    file[6] = (uint8_t)major;
    file[7] = 0;
    for (size_t i = 0; i < prefix - 8; i++)
        file[8 + i] = (uint8_t)(header_length >> (8 * i));
    memset(file + prefix, ' ', header_length);
    memcpy(file + prefix, dict, dict_length);
    file[prefix + header_length - 1] = '\n';
    if (size)
        memcpy(file + prefix + header_length, data, size);
    write_bytes(name, file, prefix + header_length + size);
    free(file);
}

static void write_npy(const char *name, const char *descr, const char *shape, const void *data, size_t size) {
    char dict[256];
    snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, shape);
    write_npy_dict(name, 1, dict, data, size);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* ---- checking ---- */

static kiln_status load(const char *name, const kn_data_options *options, kn_dataset *ds) {
    return kn_dataset_load(temp_path(name), options ? options : &quiet, ds);
}

/* Loading `data` fails with `status`, a message holding `needle` (and `needle2` if given), and leaves the
 * dataset empty. */
static void expect_failure(const char *data, const kn_data_options *options, kiln_status status, const char *needle,
                           const char *needle2) {
    kn_dataset ds;
    kiln_status st = kn_dataset_load(data, options ? options : &quiet, &ds);
    const char *message = kiln_last_error();
    CHECK_MSG(st == status, "%s: status '%s', expected '%s' (%s)", data, kiln_status_name(st),
              kiln_status_name(status), message);
    CHECK_MSG(strstr(message, needle) != NULL, "'%s' not in '%s'", needle, message);
    if (needle2)
        CHECK_MSG(strstr(message, needle2) != NULL, "'%s' not in '%s'", needle2, message);
    CHECK(strchr(message, '\n') == NULL);
    CHECK(ds.x == NULL && ds.labels == NULL && ds.count == 0);
    printf("  rejected: %s\n", message);
    if (st == KILN_OK)
        kn_dataset_free(&ds);
}

static void expect_file_failure(const char *name, const kn_data_options *options, kiln_status status,
                                const char *needle) {
    expect_failure(temp_path(name), options, status, name, needle);
}

static bool shape_is(const kn_shape *s, int ndim, const int64_t *dims) {
    kn_shape want = kn_shape_of(ndim, dims);
    return kn_shape_equal(s, &want);
}

/* ---- IDX ---- */

static void test_idx(void) {
    /* 4 images of 8 x 8: every byte value 0..255 appears once. */
    uint8_t pixels[256], labels[4] = {3, 0, 7, 3};
    for (int i = 0; i < 256; i++)
        pixels[i] = (uint8_t)(255 - i);
    uint32_t image_dims[3] = {4, 8, 8}, label_dims[1] = {4};
    const char *cases[][2] = {
        {"a-images-idx3-ubyte", "a-labels-idx1-ubyte"},             /* plain, plain */
        {"b-train-images-idx3-ubyte.gz", "b-train-labels-idx1-ubyte.gz"}, /* gzip, gzip */
        {"c-images-idx3-ubyte.gz", "c-labels-idx1-ubyte"},          /* gzip images, plain labels */
        {"d-images-idx3-ubyte", "d-labels-idx1-ubyte.gz"},          /* plain images, gzip labels */
    };
    for (int c = 0; c < 4; c++) {
        write_idx(cases[c][0], strstr(cases[c][0], ".gz") != NULL, 3, image_dims, pixels, sizeof pixels);
        write_idx(cases[c][1], strstr(cases[c][1], ".gz") != NULL, 1, label_dims, labels, sizeof labels);
        kn_dataset ds;
        CHECK_OK(load(cases[c][0], NULL, &ds));
        CHECK(ds.count == 4 && ds.sample_size == 64);
        CHECK(shape_is(&ds.sample_shape, 3, (int64_t[]){1, 8, 8}));
        int mismatches = 0;
        for (int i = 0; ds.x && i < 256; i++)
            mismatches += ds.x[i] != (float)pixels[i] / 255.0f;
        CHECK_MSG(ds.x && mismatches == 0, "%d pixels differ from x / 255", mismatches);
        CHECK(ds.x && ds.x[0] == 1.0f && ds.x[255] == 0.0f);
        CHECK(ds.labels && ds.labels[0] == 3 && ds.labels[1] == 0 && ds.labels[2] == 7 && ds.labels[3] == 3);
        CHECK(ds.class_count == 8 && ds.class_names == NULL && ds.targets == NULL && ds.feature_mean == NULL);
        CHECK(ds.source && strcmp(ds.source, temp_path(cases[c][0])) == 0);
        kn_dataset_free(&ds);
    }

    /* Rank 2 images hold (N, F) vectors. */
    uint32_t vector_dims[2] = {4, 64};
    write_idx("v-images-idx2-ubyte", false, 2, vector_dims, pixels, sizeof pixels);
    write_idx("v-labels-idx1-ubyte", false, 1, label_dims, labels, sizeof labels);
    kn_dataset ds;
    CHECK_OK(load("v-images-idx2-ubyte", NULL, &ds));
    CHECK(shape_is(&ds.sample_shape, 1, (int64_t[]){64}) && ds.count == 4);
    kn_dataset_free(&ds);
}

static void test_idx_hostile(void) {
    uint8_t file[512], data[64] = {0}, labels[4] = {0, 1, 2, 3};
    uint32_t dims[4] = {4, 4, 4};

    /* Truncated header: the magic and half of the dims. */
    size_t length = idx_image(file, 0x08, 3, dims, NULL, 0);
    write_bytes("trunc-head-images-idx3-ubyte", file, length - 6);
    expect_file_failure("trunc-head-images-idx3-ubyte", NULL, KILN_ERR_FORMAT, "truncated");
    write_bytes("trunc-magic-images-idx3-ubyte", file, 2);
    expect_file_failure("trunc-magic-images-idx3-ubyte", NULL, KILN_ERR_FORMAT, "truncated");

    /* Truncated data, plain and gzip. */
    length = idx_image(file, 0x08, 3, dims, data, 63);
    write_bytes("trunc-data-images-idx3-ubyte", file, length);
    expect_file_failure("trunc-data-images-idx3-ubyte", NULL, KILN_ERR_FORMAT, "truncated");
    write_gz("trunc-data-images-idx3-ubyte.gz", file, length);
    expect_file_failure("trunc-data-images-idx3-ubyte.gz", NULL, KILN_ERR_FORMAT, "truncated");

    /* A gzip stream cut in half. */
    write_gz("cut-images-idx3-ubyte.gz", file, length);
    FILE *f = fopen(temp_path("cut-images-idx3-ubyte.gz"), "rb");
    uint8_t compressed[512];
    size_t compressed_size = f ? fread(compressed, 1, sizeof compressed, f) : 0;
    if (f)
        fclose(f);
    write_bytes("cut-images-idx3-ubyte.gz", compressed, compressed_size / 2);
    expect_file_failure("cut-images-idx3-ubyte.gz", NULL, KILN_ERR_FORMAT, "");

    /* Dims whose product overflows, and dims that claim 2^48 bytes in a tiny file. */
    uint32_t huge[4] = {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu};
    length = idx_image(file, 0x08, 4, huge, data, 16);
    write_bytes("overflow-images-idx3-ubyte", file, length);
    expect_file_failure("overflow-images-idx3-ubyte", NULL, KILN_ERR_FORMAT, "overflow");
    uint32_t big[3] = {65536, 65536, 65536};
    length = idx_image(file, 0x08, 3, big, data, 16);
    write_bytes("big-images-idx3-ubyte", file, length);
    expect_file_failure("big-images-idx3-ubyte", NULL, KILN_ERR_FORMAT, "truncated");
    uint32_t zero[3] = {4, 0, 4};
    length = idx_image(file, 0x08, 3, zero, data, 0);
    write_bytes("zero-images-idx3-ubyte", file, length);
    expect_file_failure("zero-images-idx3-ubyte", NULL, KILN_ERR_FORMAT, "dimension 1 is 0");

    /* Wrong magic, unsupported type and rank. */
    length = idx_image(file, 0x08, 3, dims, data, 64);
    file[0] = 0x12;
    write_bytes("magic-images-idx3-ubyte", file, length);
    expect_file_failure("magic-images-idx3-ubyte", NULL, KILN_ERR_FORMAT, "not an IDX file");
    length = idx_image(file, 0x0D, 3, dims, data, 64);
    write_bytes("float-images-idx3-ubyte", file, length);
    expect_file_failure("float-images-idx3-ubyte", NULL, KILN_ERR_UNSUPPORTED, "float32");
    length = idx_image(file, 0x08, 5, (uint32_t[]){1, 1, 1, 1, 1}, data, 1);
    write_bytes("rank5-images-idx3-ubyte", file, length);
    expect_file_failure("rank5-images-idx3-ubyte", NULL, KILN_ERR_UNSUPPORTED, "rank 5");

    /* Bytes past the data the header describes. */
    length = idx_image(file, 0x08, 3, dims, data, 64);
    write_bytes("long-images-idx3-ubyte", file, length + 1);
    expect_file_failure("long-images-idx3-ubyte", NULL, KILN_ERR_FORMAT, "goes on past");

    /* Labels: count mismatch, missing, wrong rank, no name to derive them from. */
    write_idx("count-images-idx3-ubyte", false, 3, dims, data, 64);
    write_idx("count-labels-idx1-ubyte", false, 1, (uint32_t[]){3}, labels, 3);
    expect_file_failure("count-images-idx3-ubyte", NULL, KILN_ERR_SHAPE, "3 labels");
    write_idx("lonely-images-idx3-ubyte.gz", true, 3, dims, data, 64);
    expect_failure(temp_path("lonely-images-idx3-ubyte.gz"), NULL, KILN_ERR_IO, "labels file not found",
                   "lonely-labels-idx1-ubyte.gz");
    write_idx("rank-images-idx3-ubyte", false, 3, dims, data, 64);
    write_idx("rank-labels-idx1-ubyte", false, 2, (uint32_t[]){4, 1}, labels, 4);
    expect_failure(temp_path("rank-images-idx3-ubyte"), NULL, KILN_ERR_FORMAT, "rank-labels-idx1-ubyte", "rank 1");
    write_idx("unnamed.idx", false, 3, dims, data, 64);
    expect_file_failure("unnamed.idx", NULL, KILN_ERR_INVALID_ARG, "images-idx3");

    expect_file_failure("absent-images-idx3-ubyte", NULL, KILN_ERR_IO, "cannot open");
    expect_failure(temp_dir, &quiet, KILN_ERR_IO, temp_dir, "cannot read");
}

/* ---- CSV ---- */

/* (x - mean) / std as the loader computes it, with mean and std rounded to float. */
static float standardised(double x, float mean, float std) { return (float)((x - mean) / std); }

static void test_csv(void) {
    /* CRLF, quotes with commas, a quoted number, string classes, a trailing newline. */
    write_text("iris.csv", "\"len,cm\",width,species\r\n"
                           "1,2.5,setosa\r\n"
                           "\"3\",4.5,\"vir,ginica\"\r\n"
                           "5, -1.5 ,setosa\r\n");
    kn_dataset ds;
    CHECK_OK(load("iris.csv", NULL, &ds));
    CHECK(ds.count == 3 && ds.sample_size == 2 && shape_is(&ds.sample_shape, 1, (int64_t[]){2}));
    CHECK(ds.class_count == 2 && ds.class_names && strcmp(ds.class_names[0], "setosa") == 0 &&
          strcmp(ds.class_names[1], "vir,ginica") == 0);
    CHECK(ds.labels && ds.labels[0] == 0 && ds.labels[1] == 1 && ds.labels[2] == 0 && ds.targets == NULL);
    /* column 0: 1, 3, 5 -> mean 3, std sqrt(8/3); column 1: 2.5, 4.5, -1.5 -> mean 11/6 */
    float mean0 = 3.0f, std0 = (float)sqrt(8.0 / 3.0);
    float mean1 = (float)(5.5 / 3.0);
    double dev1 = (2.5 - mean1) * (2.5 - mean1) + (4.5 - mean1) * (4.5 - mean1) + (-1.5 - mean1) * (-1.5 - mean1);
    float std1 = (float)sqrt(dev1 / 3.0);
    CHECK(ds.feature_mean && ds.feature_mean[0] == mean0 && ds.feature_mean[1] == mean1);
    CHECK(ds.feature_std && ds.feature_std[0] == std0 && ds.feature_std[1] == std1);
    const double raw[3][2] = {{1, 2.5}, {3, 4.5}, {5, -1.5}};
    double max_diff = 0;
    for (int r = 0; ds.x && r < 3; r++)
        for (int f = 0; f < 2; f++)
            max_diff = fmax(max_diff, fabs(ds.x[r * 2 + f] - standardised(raw[r][f], f ? mean1 : mean0,
                                                                             f ? std1 : std0)));
    printf("csv standardisation: max |x - expected| = %g\n", max_diff);
    CHECK(ds.x && max_diff == 0);
    kn_dataset_free(&ds);

    /* Integer targets are both values and classes; a label column in the middle; blank lines; no final
     * newline; a UTF-8 byte order mark. */
    write_text("ints.csv", "\xEF\xBB\xBFp,k,q\n10,2,7\n\n20,0,7\n30,1,7");
    kn_data_options options = {.quiet = true, .label_column = "k"};
    CHECK_OK(load("ints.csv", &options, &ds));
    CHECK(ds.count == 3 && ds.sample_size == 2);
    CHECK(ds.labels && ds.labels[0] == 2 && ds.labels[1] == 0 && ds.labels[2] == 1 && ds.class_count == 3);
    CHECK(ds.targets && ds.target_width == 1 && ds.targets[0] == 2 && ds.targets[2] == 1);
    CHECK(ds.class_names == NULL);
    /* p = 10, 20, 30 standardised; q is constant: std 1, centred to 0 */
    float std_p = (float)sqrt(200.0 / 3.0);
    CHECK(ds.x && ds.x[0] == standardised(10, 20, std_p) && ds.x[4] == standardised(30, 20, std_p));
    CHECK(ds.feature_std && ds.feature_std[1] == 1.0f && ds.x[1] == 0 && ds.x[3] == 0 && ds.x[5] == 0);
    kn_dataset_free(&ds);
    options.label_column = "p";
    CHECK_OK(load("ints.csv", &options, &ds));
    CHECK(ds.labels && ds.class_count == 31);
    kn_dataset_free(&ds);

    /* Fractional and negative targets are values only. */
    write_text("values.csv", "a,y\n1,0.5\n2,-3\n3,2\n");
    CHECK_OK(load("values.csv", NULL, &ds));
    CHECK(ds.labels == NULL && ds.class_count == 0 && ds.targets && ds.targets[0] == 0.5f &&
          ds.targets[1] == -3.0f);
    kn_dataset_free(&ds);

    /* Given statistics are applied as they are and copied out. */
    const float mean[2] = {10, 20}, std[2] = {2, 4};
    kn_data_options given = {.quiet = true, .feature_mean = mean, .feature_std = std, .feature_count = 2};
    write_text("given.csv", "a,b,y\n11,28,x\n9,20,y\n");
    CHECK_OK(load("given.csv", &given, &ds));
    CHECK(ds.x && ds.x[0] == 0.5f && ds.x[1] == 2.0f && ds.x[2] == -0.5f && ds.x[3] == 0.0f);
    CHECK(ds.feature_mean && ds.feature_mean[1] == 20 && ds.feature_std && ds.feature_std[1] == 4);
    kn_dataset_free(&ds);
    given.feature_count = 3;
    expect_file_failure("given.csv", &given, KILN_ERR_SHAPE, "3");

    /* A model's class names: labels index its list even when the file lacks some classes. */
    const char *names[3] = {"virginica", "setosa", "versicolor"};
    kn_data_options named = {.quiet = true, .class_names = names, .class_count = 3};
    write_text("named.csv", "a,y\n1,setosa\n2,virginica\n3,setosa\n");
    CHECK_OK(load("named.csv", &named, &ds));
    CHECK(ds.labels && ds.labels[0] == 1 && ds.labels[1] == 0 && ds.labels[2] == 1 && ds.class_count == 3);
    CHECK(ds.class_names && strcmp(ds.class_names[2], "versicolor") == 0);
    kn_dataset_free(&ds);
    names[0] = "other"; /* "virginica" is now unknown: fall back to the file's own sorted names */
    CHECK_OK(load("named.csv", &named, &ds));
    CHECK(ds.class_count == 2 && ds.labels && ds.labels[1] == 1 && strcmp(ds.class_names[1], "virginica") == 0);
    kn_dataset_free(&ds);

    /* A quoted field spanning lines keeps the line numbers of later errors right. */
    write_text("multiline.csv", "a,y\n1,\"two\nlines\"\n2,x\n3\n");
    expect_file_failure("multiline.csv", NULL, KILN_ERR_FORMAT, "multiline.csv:5:");

    /* gzip-compressed CSV. */
    const char *gz_text = "a,y\n1,2\n3,4\n";
    write_gz("table.csv.gz", gz_text, strlen(gz_text));
    CHECK_OK(load("table.csv.gz", NULL, &ds));
    CHECK(ds.count == 2 && ds.targets && ds.targets[1] == 4);
    kn_dataset_free(&ds);
}

static void test_csv_hostile(void) {
    write_text("ragged.csv", "a,b,y\n1,2,3\n4,5\n");
    expect_failure(temp_path("ragged.csv"), NULL, KILN_ERR_FORMAT, "ragged.csv:3:", "2 fields");
    write_text("ragged2.csv", "a,b,y\n1,2,3,4\n");
    expect_file_failure("ragged2.csv", NULL, KILN_ERR_FORMAT, "4 fields");
    write_text("word.csv", "a,b,y\r\n1,2,0\r\n1,x2,0\r\n");
    expect_failure(temp_path("word.csv"), NULL, KILN_ERR_FORMAT, "word.csv:3: column 2 ('b')",
                   "'x2' is not a number");
    write_text("empty-field.csv", "a,b,y\n1,,0\n");
    expect_failure(temp_path("empty-field.csv"), NULL, KILN_ERR_FORMAT, "empty-field.csv:2: column 2", "empty");
    write_text("empty-target.csv", "a,b,y\n1,2,\n");
    expect_failure(temp_path("empty-target.csv"), NULL, KILN_ERR_FORMAT, "empty-target.csv:2: column 3",
                   "empty");
    write_text("inf.csv", "a,y\ninf,1\n");
    expect_file_failure("inf.csv", NULL, KILN_ERR_FORMAT, "not a number");
    write_text("huge.csv", "a,y\n1e39,1\n");
    expect_file_failure("huge.csv", NULL, KILN_ERR_FORMAT, "not a number");
    write_text("empty.csv", "");
    expect_file_failure("empty.csv", NULL, KILN_ERR_FORMAT, "empty");
    write_text("header-only.csv", "a,b,y\n");
    expect_file_failure("header-only.csv", NULL, KILN_ERR_FORMAT, "no data rows");
    write_text("one-column.csv", "y\n1\n");
    expect_file_failure("one-column.csv", NULL, KILN_ERR_FORMAT, "1 column");
    write_text("open-quote.csv", "a,y\n1,\"never closed\n2,3\n");
    expect_failure(temp_path("open-quote.csv"), NULL, KILN_ERR_FORMAT, "open-quote.csv:2:", "never closed");
    write_text("after-quote.csv", "a,y\n\"1\"x,3\n");
    expect_file_failure("after-quote.csv", NULL, KILN_ERR_FORMAT, "after a closing quote");
    WRITE_LITERAL("binary.csv", "a,y\n1,\0\n");
    expect_file_failure("binary.csv", NULL, KILN_ERR_FORMAT, "NUL byte");
    kn_data_options options = {.quiet = true, .label_column = "nope"};
    write_text("fine.csv", "a,y\n1,2\n");
    expect_file_failure("fine.csv", &options, KILN_ERR_INVALID_ARG, "'nope'");
    write_text("twice.csv", "a,a,y\n1,2,3\n");
    options.label_column = "a";
    expect_file_failure("twice.csv", &options, KILN_ERR_INVALID_ARG, "twice");
    const float mean[1] = {0}, bad_std[1] = {0};
    kn_data_options bad_stats = {.quiet = true, .feature_mean = mean, .feature_std = bad_std, .feature_count = 1};
    expect_file_failure("fine.csv", &bad_stats, KILN_ERR_INVALID_ARG, "std 0");
    expect_file_failure("absent.csv", NULL, KILN_ERR_IO, "cannot open");
}

/* ---- NPY ---- */

static void test_npy(void) {
    const float x_f4[12] = {0.5f, -1.25f, 3e-8f, 1e30f, 7, 8, 9, 10, -0.0f, 1.5f, 2.5f, 3.5f};
    const int64_t y_i8[3] = {2, 0, 5};
    write_npy("x.npy", "<f4", "(3, 2, 2)", x_f4, sizeof x_f4);
    write_npy("y.npy", "<i8", "(3,)", y_i8, sizeof y_i8);
    char data[1100];
    snprintf(data, sizeof data, "%s,%s", temp_path("x.npy"), temp_path("y.npy"));
    kn_dataset ds;
    CHECK_OK(kn_dataset_load(data, &quiet, &ds));
    CHECK(ds.count == 3 && shape_is(&ds.sample_shape, 2, (int64_t[]){2, 2}) && ds.sample_size == 4);
    CHECK(ds.x && memcmp(ds.x, x_f4, sizeof x_f4) == 0);
    CHECK(ds.labels && ds.labels[0] == 2 && ds.labels[2] == 5 && ds.class_count == 6 && ds.targets == NULL);
    CHECK(ds.feature_mean == NULL && ds.source && strcmp(ds.source, data) == 0);
    kn_dataset_free(&ds);

    /* uint8 inputs scale by 1/255; float32 (N, K) targets; version 2 and 3 headers. */
    const uint8_t x_u1[6] = {0, 1, 2, 128, 254, 255};
    const float y_f4[4] = {0.25f, -1, 100, 3};
    write_npy_dict("xu1.npy", 2, "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3), }", x_u1, 6);
    write_npy_dict("yf4.npy", 3, "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2, 2)}", y_f4, 16);
    snprintf(data, sizeof data, "%s,%s", temp_path("xu1.npy"), temp_path("yf4.npy"));
    CHECK_OK(kn_dataset_load(data, &quiet, &ds));
    CHECK(ds.count == 2 && ds.sample_size == 3);
    for (int i = 0; ds.x && i < 6; i++)
        CHECK(ds.x[i] == (float)x_u1[i] / 255.0f);
    CHECK(ds.targets && ds.target_width == 2 && memcmp(ds.targets, y_f4, sizeof y_f4) == 0 && ds.labels == NULL);
    kn_dataset_free(&ds);

    /* float64 and integer inputs are cast; int32 (N, 1) labels; float64 (N) targets; (N) inputs. */
    const double x_f8[2] = {0.1, -2.5};
    const int32_t y_i4[2] = {1, 0};
    const int64_t x_i8[2] = {-7, 1 << 20};
    const double y_f8[2] = {1.5, 2.5};
    write_npy("xf8.npy", "<f8", "(2,)", x_f8, sizeof x_f8);
    write_npy("yi4.npy", "<i4", "(2, 1)", y_i4, sizeof y_i4);
    snprintf(data, sizeof data, "%s,%s", temp_path("xf8.npy"), temp_path("yi4.npy"));
    CHECK_OK(kn_dataset_load(data, &quiet, &ds));
    CHECK(ds.x && ds.x[0] == (float)0.1 && ds.x[1] == -2.5f && shape_is(&ds.sample_shape, 1, (int64_t[]){1}));
    CHECK(ds.labels && ds.labels[0] == 1 && ds.labels[1] == 0 && ds.class_count == 2);
    kn_dataset_free(&ds);
    write_npy("xi8.npy", "<i8", "(2, 1)", x_i8, sizeof x_i8);
    write_npy("yf8.npy", "<f8", "(2,)", y_f8, sizeof y_f8);
    snprintf(data, sizeof data, "%s,%s", temp_path("xi8.npy"), temp_path("yf8.npy"));
    CHECK_OK(kn_dataset_load(data, &quiet, &ds));
    CHECK(ds.x && ds.x[0] == -7.0f && ds.x[1] == (float)(1 << 20));
    CHECK(ds.targets && ds.target_width == 1 && ds.targets[0] == 1.5f && ds.targets[1] == 2.5f);
    kn_dataset_free(&ds);
}

/* Loads "<x>,<y>" from the temp dir and expects a failure naming `blamed` and holding `needle`. */
static void expect_npy_failure(const char *x, const char *y, kiln_status status, const char *blamed,
                               const char *needle) {
    char data[1100];
    snprintf(data, sizeof data, "%s,%s", temp_path(x), temp_path(y));
    expect_failure(data, NULL, status, blamed, needle);
}

static void test_npy_hostile(void) {
    const float x[4] = {1, 2, 3, 4};
    const int64_t y[2] = {0, 1};
    write_npy("good-x.npy", "<f4", "(2, 2)", x, sizeof x);
    write_npy("good-y.npy", "<i8", "(2,)", y, sizeof y);

    WRITE_LITERAL("magic.npy", "\x93NUMPX\x01\x00\x10\x00{}");
    expect_npy_failure("magic.npy", "good-y.npy", KILN_ERR_FORMAT, "magic.npy", "bad magic");
    WRITE_LITERAL("short.npy", "\x93NUM");
    expect_npy_failure("short.npy", "good-y.npy", KILN_ERR_FORMAT, "short.npy", "truncated");
    WRITE_LITERAL("version.npy", "\x93NUMPY\x04\x00\x10\x00");
    expect_npy_failure("version.npy", "good-y.npy", KILN_ERR_UNSUPPORTED, "version.npy", "4.0");
    /* header length 1000 in a 27-byte file */
    WRITE_LITERAL("header-past-end.npy", "\x93NUMPY\x01\x00\xe8\x03{'descr': '<f4', ");
    expect_npy_failure("header-past-end.npy", "good-y.npy", KILN_ERR_FORMAT, "header-past-end.npy", "truncated");
    WRITE_LITERAL("header-huge.npy", "\x93NUMPY\x02\x00\xff\xff\xff\xff{");
    expect_npy_failure("header-huge.npy", "good-y.npy", KILN_ERR_FORMAT, "header-huge.npy", "limit");

    write_npy("overflow.npy", "<f4", "(4294967296, 4294967296, 16)", x, sizeof x);
    expect_npy_failure("overflow.npy", "good-y.npy", KILN_ERR_FORMAT, "overflow.npy", "overflows");
    write_npy("digits.npy", "<f4", "(99999999999999999999999,)", x, sizeof x);
    expect_npy_failure("digits.npy", "good-y.npy", KILN_ERR_FORMAT, "digits.npy", "overflows");
    write_npy("claims-big.npy", "<f4", "(1099511627776, 1)", x, sizeof x);
    expect_npy_failure("claims-big.npy", "good-y.npy", KILN_ERR_FORMAT, "claims-big.npy", "truncated");
    write_npy("rank9.npy", "<f4", "(1, 1, 1, 1, 1, 1, 1, 1, 1)", x, 4);
    expect_npy_failure("rank9.npy", "good-y.npy", KILN_ERR_UNSUPPORTED, "rank9.npy", "dimensions");

    write_npy("big-endian.npy", ">f4", "(2, 2)", x, sizeof x);
    expect_npy_failure("big-endian.npy", "good-y.npy", KILN_ERR_UNSUPPORTED, "big-endian.npy", "'>f4'");
    write_npy("complex.npy", "<c8", "(2, 1)", x, sizeof x);
    expect_npy_failure("complex.npy", "good-y.npy", KILN_ERR_UNSUPPORTED, "complex.npy", "'<c8'");
    write_npy_dict("fortran.npy", 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", x, sizeof x);
    expect_npy_failure("fortran.npy", "good-y.npy", KILN_ERR_UNSUPPORTED, "fortran.npy", "fortran_order");

    write_npy_dict("no-shape.npy", 1, "{'descr': '<f4', 'fortran_order': False}", x, sizeof x);
    expect_npy_failure("no-shape.npy", "good-y.npy", KILN_ERR_FORMAT, "no-shape.npy", "'shape'");
    write_npy_dict("garbage.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2)} junk", x, 16);
    expect_npy_failure("garbage.npy", "good-y.npy", KILN_ERR_FORMAT, "garbage.npy", "malformed");
    write_npy_dict("bad-tuple.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2 2)}", x, 16);
    expect_npy_failure("bad-tuple.npy", "good-y.npy", KILN_ERR_FORMAT, "bad-tuple.npy", "malformed");
    write_npy_dict("twice.npy", 1, "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (4,)}", x,
                   16);
    expect_npy_failure("twice.npy", "good-y.npy", KILN_ERR_FORMAT, "twice.npy", "twice");
    write_npy_dict("unclosed.npy", 1, "{'descr': '<f4", x, 16);
    expect_npy_failure("unclosed.npy", "good-y.npy", KILN_ERR_FORMAT, "unclosed.npy", "malformed");

    write_npy("three-y.npy", "<i8", "(3,)", (int64_t[]){0, 1, 2}, 24);
    expect_npy_failure("good-x.npy", "three-y.npy", KILN_ERR_SHAPE, "good-x.npy has 2 samples", "has 3");
    write_npy("trunc.npy", "<f4", "(2, 2)", x, sizeof x - 1);
    expect_npy_failure("trunc.npy", "good-y.npy", KILN_ERR_FORMAT, "trunc.npy", "truncated");
    write_npy("long.npy", "<f4", "(2, 1)", x, sizeof x);
    expect_npy_failure("long.npy", "good-y.npy", KILN_ERR_FORMAT, "long.npy", "goes on past");
    write_npy("negative-y.npy", "<i8", "(2,)", (int64_t[]){0, -1}, 16);
    expect_npy_failure("good-x.npy", "negative-y.npy", KILN_ERR_FORMAT, "negative-y.npy", "-1");
    write_npy("nan-x.npy", "<f4", "(2, 1)", (float[]){1, NAN}, 8);
    expect_npy_failure("nan-x.npy", "good-y.npy", KILN_ERR_NUMERIC, "nan-x.npy", "finite");
    write_npy("wide-y.npy", "<i8", "(2, 2)", (int64_t[]){0, 1, 1, 0}, 32);
    expect_npy_failure("good-x.npy", "wide-y.npy", KILN_ERR_SHAPE, "wide-y.npy", "class indices");

    expect_failure(temp_path("good-x.npy"), NULL, KILN_ERR_INVALID_ARG, "X.npy,Y.npy", NULL);
    char data[600];
    snprintf(data, sizeof data, "%s,", temp_path("good-x.npy"));
    expect_failure(data, NULL, KILN_ERR_INVALID_ARG, "X.npy,Y.npy", NULL);
    expect_npy_failure("good-x.npy", "absent.npy", KILN_ERR_IO, "absent.npy", "cannot open");
}

/* ---- split and batcher ---- */

/* A dataset of `count` samples whose x row i is (i, i + 0.25, i + 0.5), label i % 4, target -i. */
static kn_dataset numbered_dataset(int64_t count) {
    kn_dataset ds = {.count = count, .sample_size = 3, .target_width = 1, .class_count = 4};
    ds.sample_shape = kn_shape_of(1, (int64_t[]){3});
    ds.x = malloc((size_t)count * 3 * sizeof(float));
    ds.labels = malloc((size_t)count * sizeof(int64_t));
    ds.targets = malloc((size_t)count * sizeof(float));
    ds.feature_mean = calloc(3, sizeof(float));
    ds.feature_std = calloc(3, sizeof(float));
    ds.class_names = calloc(4, sizeof(char *));
    for (int i = 0; i < 4; i++) {
        ds.class_names[i] = malloc(8);
        snprintf(ds.class_names[i], 8, "c%d", i);
    }
    ds.source = malloc(9);
    memcpy(ds.source, "numbered", 9);
    for (int64_t i = 0; i < count; i++) {
        for (int k = 0; k < 3; k++)
            ds.x[i * 3 + k] = (float)i + 0.25f * (float)k;
        ds.labels[i] = i % 4;
        ds.targets[i] = -(float)i;
    }
    return ds;
}

/* Runs one epoch; writes the sample order into `order` and the batch sizes into `sizes`; returns the batch
 * count, or -1 when a batch row does not match its sample. */
static int run_epoch(const kn_dataset *ds, int64_t batch, bool shuffle, uint64_t seed, int64_t epoch,
                     int64_t *order, int64_t *sizes) {
    kn_batcher b;
    if (kn_batcher_init(&b, ds, batch, shuffle, seed, epoch) != KILN_OK)
        return -1;
    float *x = malloc((size_t)batch * 3 * sizeof(float)), *targets = malloc((size_t)batch * sizeof(float));
    int64_t *labels = malloc((size_t)batch * sizeof(int64_t));
    int batches = 0, seen = 0;
    bool consistent = true;
    int64_t n;
    while ((n = kn_batcher_next(&b, x, labels, targets)) > 0) {
        sizes[batches++] = n;
        for (int64_t i = 0; i < n; i++) {
            int64_t sample = (int64_t)x[i * 3];
            consistent = consistent && x[i * 3 + 2] == (float)sample + 0.5f && labels[i] == sample % 4 &&
                         targets[i] == -(float)sample;
            order[seen++] = sample;
        }
    }
    CHECK(kn_batcher_next(&b, x, labels, targets) == 0);
    kn_batcher_free(&b);
    free(x);
    free(targets);
    free(labels);
    return consistent ? batches : -1;
}

static void test_batcher(void) {
    enum { N = 10 };
    kn_dataset ds = numbered_dataset(N);
    int64_t order[N], again[N], other_epoch[N], other_seed[N], sizes[N];

    int batches = run_epoch(&ds, 4, true, 7, 0, order, sizes);
    CHECK(batches == 3 && sizes[0] == 4 && sizes[1] == 4 && sizes[2] == 2);
    int hits[N] = {0};
    for (int i = 0; i < N; i++)
        if (order[i] >= 0 && order[i] < N)
            hits[order[i]]++;
    for (int i = 0; i < N; i++)
        CHECK_MSG(hits[i] == 1, "sample %d seen %d times in an epoch", i, hits[i]);

    CHECK(run_epoch(&ds, 4, true, 7, 0, again, sizes) == 3 && memcmp(order, again, sizeof order) == 0);
    CHECK(run_epoch(&ds, 4, true, 7, 1, other_epoch, sizes) == 3 && memcmp(order, other_epoch, sizeof order) != 0);
    CHECK(run_epoch(&ds, 4, true, 8, 0, other_seed, sizes) == 3 && memcmp(order, other_seed, sizeof order) != 0);

    CHECK(run_epoch(&ds, 3, false, 7, 5, order, sizes) == 4 && sizes[3] == 1);
    for (int i = 0; i < N; i++)
        CHECK(order[i] == i);
    CHECK(run_epoch(&ds, 64, true, 1, 0, order, sizes) == 1 && sizes[0] == N);

    /* Labels and targets are optional outputs. */
    kn_batcher b;
    float x[12];
    CHECK_OK(kn_batcher_init(&b, &ds, 4, false, 0, 0));
    CHECK(kn_batcher_next(&b, x, NULL, NULL) == 4 && x[3] == 1.0f);
    kn_batcher_free(&b);
    CHECK(kn_batcher_init(&b, &ds, 0, false, 0, 0) == KILN_ERR_INVALID_ARG);
    kn_dataset_free(&ds);
}

static void test_split(void) {
    enum { N = 10 };
    kn_dataset all = numbered_dataset(N), train, val, train2, val2;
    CHECK_OK(kn_dataset_split(&all, 0.25, 42, &train, &val));
    CHECK(train.count == 7 && val.count == 3); /* round(2.5) = 3 */
    int hits[N] = {0};
    for (int64_t i = 0; i < train.count; i++) {
        int64_t sample = (int64_t)train.x[i * 3];
        hits[sample]++;
        CHECK(train.labels[i] == sample % 4 && train.targets[i] == -(float)sample);
        CHECK(i == 0 || train.x[i * 3] > train.x[(i - 1) * 3]); /* file order */
    }
    for (int64_t i = 0; i < val.count; i++) {
        int64_t sample = (int64_t)val.x[i * 3];
        hits[sample]++;
        CHECK(val.labels[i] == sample % 4 && val.x[i * 3 + 1] == (float)sample + 0.25f);
    }
    for (int i = 0; i < N; i++)
        CHECK_MSG(hits[i] == 1, "sample %d is in %d parts", i, hits[i]);
    CHECK(val.class_count == 4 && val.class_names && strcmp(val.class_names[3], "c3") == 0);
    CHECK(val.feature_mean && val.feature_std && train.source && strcmp(train.source, "numbered") == 0);

    CHECK_OK(kn_dataset_split(&all, 0.25, 42, &train2, &val2));
    CHECK(memcmp(val.x, val2.x, 9 * sizeof(float)) == 0 && memcmp(train.x, train2.x, 21 * sizeof(float)) == 0);
    kn_dataset_free(&train2);
    kn_dataset_free(&val2);
    bool differs = false;
    for (uint64_t seed = 43; seed < 46 && !differs; seed++) {
        CHECK_OK(kn_dataset_split(&all, 0.25, seed, &train2, &val2));
        differs = memcmp(val.x, val2.x, 9 * sizeof(float)) != 0;
        kn_dataset_free(&train2);
        kn_dataset_free(&val2);
    }
    CHECK(differs);

    CHECK(kn_dataset_split(&all, 0.0, 1, &train2, &val2) == KILN_ERR_INVALID_ARG);
    CHECK(kn_dataset_split(&all, 1.0, 1, &train2, &val2) == KILN_ERR_INVALID_ARG);
    CHECK(kn_dataset_split(&all, 0.01, 1, &train2, &val2) == KILN_ERR_INVALID_ARG);
    CHECK(kn_dataset_split(&all, 0.97, 1, &train2, &val2) == KILN_ERR_INVALID_ARG);
    printf("  rejected: %s\n", kiln_last_error());
    CHECK(train2.x == NULL && val2.x == NULL);
    kn_dataset_free(&train);
    kn_dataset_free(&val);
    kn_dataset_free(&all);
}

/* ---- Fashion-MNIST ---- */

/* Training and evaluation copy f32 samples into the model's input: a model whose input is another dtype
 * (an imported f16-input ONNX model, say) is refused, not overrun (a fuzz finding: the batcher wrote
 * 4-byte samples into a buffer sized for 2-byte ones). */
static void test_input_dtype_refused(void) {
    write_text("f16_input.txt", "input 4\ndense 2\n");
    kiln_graph *net = NULL;
    CHECK_OK(kiln_graph_load(temp_path("f16_input.txt"), 1, &net));
    if (!net)
        return;
    kn_graph *g = &net->g;
    g->values[g->inputs[0]].dtype = KN_F16;
    float x[2 * 4] = {0};
    int64_t labels[2] = {0, 1};
    kiln_dataset ds = {.d = {.count = 2, .class_count = 2, .sample_size = 4, .x = x, .labels = labels,
                             .source = "two samples"}};
    ds.d.sample_shape = kn_shape_of(1, (int64_t[]){4});
    kiln_train_config config = kiln_train_config_default();
    config.epochs = 1;
    config.batch = 2;
    CHECK(kiln_train(net, &ds, NULL, &config, NULL) == KILN_ERR_UNSUPPORTED);
    CHECK(strstr(kiln_last_error(), "f16") != NULL);
    kiln_metrics m;
    CHECK(kiln_evaluate(net, &ds, 2, &m) == KILN_ERR_UNSUPPORTED);
    kiln_graph_free(net);
}

static void test_fashion_mnist_dir_override(void) {
    uint8_t pixels[2 * 28 * 28] = {0}, labels[2] = {9, 4};
    uint32_t image_dims[3] = {2, 28, 28}, label_dims[1] = {2};
    write_idx("train-images-idx3-ubyte.gz", true, 3, image_dims, pixels, sizeof pixels);
    write_idx("train-labels-idx1-ubyte.gz", true, 1, label_dims, labels, sizeof labels);
    setenv("KILN_FASHION_MNIST_DIR", temp_dir, 1);
    kn_dataset ds;
    CHECK_OK(kn_dataset_load("fashion-mnist", &quiet, &ds));
    CHECK(ds.count == 2 && ds.class_count == 10 && ds.labels && ds.labels[0] == 9);
    CHECK(ds.class_names && strcmp(ds.class_names[9], "Ankle boot") == 0 && strcmp(ds.source, "fashion-mnist") == 0);
    kn_dataset_free(&ds);
    expect_failure("fashion-mnist:test", NULL, KILN_ERR_IO, "t10k-images-idx3-ubyte.gz", "dataset-fashion-mnist");
    labels[1] = 10;
    write_idx("train-labels-idx1-ubyte.gz", true, 1, label_dims, labels, sizeof labels);
    expect_failure("fashion-mnist", NULL, KILN_ERR_FORMAT, "label 10", NULL);
    unsetenv("KILN_FASHION_MNIST_DIR");
}

static void test_fashion_mnist(void) {
    const char *dir = "/usr/share/datasets/fashion-mnist";
    if (access(dir, R_OK) != 0) {
        printf("note: %s is absent (Debian package dataset-fashion-mnist); skipping the Fashion-MNIST test\n", dir);
        return;
    }
    const char *names[2] = {"fashion-mnist", "fashion-mnist:test"};
    const int64_t counts[2] = {60000, 10000};
    for (int set = 0; set < 2; set++) {
        kn_dataset ds;
        double start = kn_seconds_now();
        kiln_status st = kn_dataset_load(names[set], &quiet, &ds);
        double seconds = kn_seconds_now() - start;
        CHECK_OK(st);
        if (st != KILN_OK)
            continue;
        printf("%s: %lld samples loaded in %.3f s\n", names[set], (long long)ds.count, seconds);
        CHECK(ds.count == counts[set] && shape_is(&ds.sample_shape, 3, (int64_t[]){1, 28, 28}));
        CHECK(ds.class_count == 10 && strcmp(ds.class_names[0], "T-shirt/top") == 0);
        int64_t per_class[10] = {0}, out_of_range = 0;
        for (int64_t i = 0; i < ds.count; i++) {
            if (ds.labels[i] < 0 || ds.labels[i] >= 10)
                out_of_range++;
            else
                per_class[ds.labels[i]]++;
        }
        CHECK(out_of_range == 0);
        for (int c = 0; c < 10; c++)
            CHECK_MSG(per_class[c] == counts[set] / 10, "class %d has %lld samples", c, (long long)per_class[c]);
        float low = 1, high = 0;
        for (int64_t i = 0; i < ds.count * ds.sample_size; i++) {
            low = fminf(low, ds.x[i]);
            high = fmaxf(high, ds.x[i]);
        }
        CHECK(low == 0.0f && high == 1.0f);
        kn_dataset_free(&ds);
    }
}

/* ---- mutated files ---- */

/* Loads `rounds` seeded mutations of `file` (bytes overwritten with `alphabet` characters, or the file cut
 * short) saved as `name`: each load must succeed or fail with a message, and never crash or leak (ASan). */
static void load_mutations(const char *name, const char *data, const uint8_t *file, size_t size,
                           const char *alphabet, int rounds) {
    uint8_t *mutant = malloc(size);
    kn_rng rng = kn_rng_seeded(size);
    size_t alphabet_size = strlen(alphabet);
    int failures = 0, silent = 0;
    for (int round = 0; round < rounds; round++) {
        memcpy(mutant, file, size);
        size_t length = size;
        int edits = 1 + (int)kn_rng_below(&rng, 4);
        for (int e = 0; e < edits; e++) {
            size_t at = kn_rng_below(&rng, size);
            mutant[at] = alphabet_size ? (uint8_t)alphabet[kn_rng_below(&rng, alphabet_size)]
                                       : (uint8_t)kn_rng_below(&rng, 256);
        }
        if (kn_rng_below(&rng, 4) == 0)
            length = kn_rng_below(&rng, size);
        write_bytes(name, mutant, length);
        kn_dataset ds;
        kiln_status st = kn_dataset_load(data, &quiet, &ds);
        if (st != KILN_OK) {
            failures++;
            silent += kiln_last_error()[0] == '\0';
        } else {
            kn_dataset_free(&ds);
        }
    }
    printf("%s: %d of %d mutations rejected, %d without a message\n", name, failures, rounds, silent);
    CHECK(silent == 0 && failures > 0);
    free(mutant);
}

static void test_mutations(void) {
    uint8_t pixels[2 * 3 * 3] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18}, labels[2] = {1, 0};
    uint8_t idx[64];
    size_t idx_size = idx_image(idx, 0x08, 3, (uint32_t[]){2, 3, 3}, pixels, sizeof pixels);
    write_idx("fuzz-labels-idx1-ubyte", false, 1, (uint32_t[]){2}, labels, sizeof labels);
    load_mutations("fuzz-images-idx3-ubyte", temp_path("fuzz-images-idx3-ubyte"), idx, idx_size, "", 400);

    const float x[4] = {1, 2, 3, 4};
    write_npy("fuzz-x.npy", "<f4", "(2, 2)", x, sizeof x);
    write_npy("fuzz-y.npy", "<i8", "(2,)", (int64_t[]){0, 1}, 16);
    FILE *f = fopen(temp_path("fuzz-x.npy"), "rb");
    uint8_t npy[256];
    size_t npy_size = f ? fread(npy, 1, sizeof npy, f) : 0;
    if (f)
        fclose(f);
    char data[1100];
    snprintf(data, sizeof data, "%s,%s", temp_path("fuzz-x.npy"), temp_path("fuzz-y.npy"));
    load_mutations("fuzz-x.npy", data, npy, npy_size, "", 200);
    load_mutations("fuzz-x.npy", data, npy, npy_size, "'\"(),: 019<|fiuTrue{}", 400);

    const char *csv = "a,\"b,c\",y\r\n1,2.5,cat\r\n-3,\"4\",\"dog\"\r\n5e1,6,cat\n";
    load_mutations("fuzz.csv", temp_path("fuzz.csv"), (const uint8_t *)csv, strlen(csv), ",\"\r\n 0.-e9ax", 600);
}

static void test_options(void) {
    kn_data_options options = {.quiet = true, .label_column = "y"};
    expect_failure("fashion-mnist", &options, KILN_ERR_INVALID_ARG, "only to CSV", NULL);
    expect_failure("", NULL, KILN_ERR_INVALID_ARG, "empty", NULL);
}

int main(void) {
    snprintf(temp_dir, sizeof temp_dir, "/tmp/kiln_test_data_XXXXXX");
    if (!mkdtemp(temp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_idx();
    test_idx_hostile();
    test_csv();
    test_csv_hostile();
    test_npy();
    test_npy_hostile();
    test_batcher();
    test_split();
    test_mutations();
    test_options();
    test_input_dtype_refused();
    test_fashion_mnist_dir_override();
    test_fashion_mnist();
    nftw(temp_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return check_finish();
}
