/* The .kiln file: bit-exact round trips (buffer, file, COPY, MMAP, extras), atomic writes, version
 * checks, and a reader that rejects every truncation and every flipped byte of a valid file and survives
 * mutated files whose checksums were fixed up (so the parsers behind the checksums are attacked too). */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "support/graph_ids.h"
#include "core/graph.h"
#include "core/rng.h"
#include "core/status.h"
#include "format/crc32.h"
#include "format/kiln_file.h"
#include "format/storage.h"
#include "ops/op.h"

/* registry.c names the ops weakly while they land one by one, and a static-library link pulls an op in
 * only when something references it: the test references the ops its models use. */
extern const kn_op kn_op_batchnormalization, kn_op_dropout, kn_op_transpose, kn_op_layernormalization,
    kn_op_flatten, kn_op_reshape, kn_op_concat;
static const kn_op *const used_ops[] = {
    &kn_op_batchnormalization, &kn_op_dropout, &kn_op_transpose, &kn_op_layernormalization,
    &kn_op_flatten,            &kn_op_reshape, &kn_op_concat,
};

static char test_dir[64];

static void path_in_test_dir(char *out, size_t size, const char *name) {
    snprintf(out, size, "%s/%s", test_dir, name);
}

/* ---- the CRC against zlib's ------------------------------------------------------------------------ */

static void test_crc32(void) {
    CHECK(kn_crc32(0, "123456789", 9) == 0xCBF43926u); /* the CRC-32 check value */
    enum { N = 1 << 20 };
    unsigned char *data = malloc(N);
    kn_rng rng = kn_rng_seeded(1);
    for (int i = 0; i < N; i++)
        data[i] = (unsigned char)kn_rng_next(&rng);
    int mismatches = 0;
    for (size_t start = 0; start < 8; start++)
        for (size_t n = 0; n < 300; n++)
            mismatches += kn_crc32(0, data + start, n) != (uint32_t)crc32(0, data + start, (uInt)n);
    CHECK_MSG(mismatches == 0, "%d of 2400 short CRCs differ from zlib", mismatches);
    CHECK(kn_crc32(0, data, N) == (uint32_t)crc32(0, data, N));
    CHECK(kn_crc32(kn_crc32(0, data, 1000), data + 1000, N - 1000) == kn_crc32(0, data, N));
    free(data);
}

/* ---- a model that uses every feature of the file --------------------------------------------------- */

/* Fills an initializer with random bits, NaN payloads and all: the round trip must keep every bit. */
static void fill_random(kn_value *v, kn_rng *rng) {
    size_t bytes;
    kn_shape_bytes(&v->shape, v->dtype, &bytes);
    unsigned char *p = v->data;
    for (size_t i = 0; i < bytes; i++)
        p[i] = (unsigned char)kn_rng_next(rng);
}

static int add_value(kn_graph *g, const char *name, kn_value_kind kind, kn_dtype dtype, int ndim,
                     const int64_t *dims) {
    kn_shape s = kn_shape_of(ndim, dims);
    int id = test_add_value(g, name, kind, dtype, &s);
    CHECK(id >= 0);
    return id;
}

static int add_node(kn_graph *g, const char *op, const char *name, int n_in, const int *in, int out) {
    int node = test_add_node(g, op, name, n_in, in, 1, &out);
    CHECK_MSG(node >= 0, "%s", kiln_last_error());
    return node;
}

/* x -> BatchNormalization -> Dropout(omitted inputs) -> Transpose -> LayerNormalization(omitted bias)
 *   -> Flatten -> Reshape(i64 const) -> Concat; plus unused i32/u8/empty constants and full metadata. */
static void build_model(kn_graph *g, uint64_t seed) {
    kn_graph_init(g);
    kn_rng rng = kn_rng_seeded(seed);
    int x = add_value(g, "x", KN_VALUE_INPUT, KN_F32, 4, (int64_t[]){2, 3, 4, 4});
    int bn_scale = add_value(g, "bn.scale", KN_VALUE_PARAM, KN_F32, 1, (int64_t[]){3});
    int bn_bias = add_value(g, "bn.bias", KN_VALUE_PARAM, KN_F32, 1, (int64_t[]){3});
    int bn_mean = add_value(g, "bn.running_mean", KN_VALUE_STATE, KN_F32, 1, (int64_t[]){3});
    int bn_var = add_value(g, "bn.running_var", KN_VALUE_STATE, KN_F32, 1, (int64_t[]){3});
    int ln_scale = add_value(g, "ln.scale", KN_VALUE_PARAM, KN_F32, 1, (int64_t[]){3});
    int shape = add_value(g, "reshape.shape", KN_VALUE_CONST, KN_I64, 1, (int64_t[]){2});
    int table = add_value(g, "lookup", KN_VALUE_CONST, KN_I32, 2, (int64_t[]){2, 2});
    int bytes = add_value(g, "raw-bytes", KN_VALUE_CONST, KN_U8, 1, (int64_t[]){5});
    int empty = add_value(g, "empty", KN_VALUE_CONST, KN_F32, 2, (int64_t[]){0, 3});
    int scalar = add_value(g, "scalar", KN_VALUE_PARAM, KN_F32, 0, NULL);
    int h[7];
    for (int i = 0; i < 7; i++) {
        char name[16];
        snprintf(name, sizeof name, "h%d", i);
        h[i] = add_value(g, name, KN_VALUE_ACT, KN_F32, 0, NULL);
    }
    int ids[] = {bn_scale, bn_bias, bn_mean, bn_var, ln_scale, table, bytes, empty, scalar};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        fill_random(&g->values[ids[i]], &rng);
    ((int64_t *)g->values[shape].data)[0] = 2;
    ((int64_t *)g->values[shape].data)[1] = -1;

    int n = add_node(g, "BatchNormalization", "bn", 5, (int[]){x, bn_scale, bn_bias, bn_mean, bn_var}, h[0]);
    CHECK_OK(kn_node_set_float(g, n, "epsilon", 1e-3f));
    CHECK_OK(kn_node_set_float(g, n, "momentum", 0.875f));
    n = add_node(g, "Dropout", "drop", 3, (int[]){h[0], -1, -1}, h[1]);
    CHECK_OK(kn_node_set_float(g, n, "ratio", 0.25f));
    CHECK_OK(kn_node_set_string(g, n, "comment", "omitted ratio and training_mode inputs"));
    n = add_node(g, "Transpose", "nchw_to_nhwc", 1, (int[]){h[1]}, h[2]);
    CHECK_OK(kn_node_set_ints(g, n, "perm", 4, (int64_t[]){0, 2, 3, 1}));
    n = add_node(g, "LayerNormalization", "ln", 3, (int[]){h[2], ln_scale, -1}, h[3]);
    CHECK_OK(kn_node_set_int(g, n, "axis", -1));
    CHECK_OK(kn_node_set_float(g, n, "epsilon", 1e-6f));
    n = add_node(g, "Flatten", "flatten", 1, (int[]){h[3]}, h[4]);
    CHECK_OK(kn_node_set_int(g, n, "axis", 1));
    CHECK_OK(kn_node_set_ints(g, n, "nothing", 0, NULL));
    n = add_node(g, "Reshape", "reshape", 2, (int[]){h[4], shape}, h[5]);
    CHECK_OK(kn_node_set_int(g, n, "allowzero", 0));
    n = add_node(g, "Concat", "", 2, (int[]){h[5], h[5]}, h[6]);
    CHECK_OK(kn_node_set_int(g, n, "axis", 0));
    int64_t sixteen[KN_MAX_ATTR_INTS];
    for (int i = 0; i < KN_MAX_ATTR_INTS; i++)
        sixteen[i] = (int64_t)kn_rng_next(&rng);
    CHECK_OK(kn_node_set_ints(g, n, "many", KN_MAX_ATTR_INTS, sixteen));
    CHECK_OK(kn_node_set_float(g, n, "tiny", 1e-45f));
    CHECK_OK(kn_node_set_int(g, n, "min", INT64_MIN));

    g->inputs[g->n_inputs++] = x;
    g->outputs[g->n_outputs++] = h[6];
    g->outputs[g->n_outputs++] = h[3];
    CHECK_OK(kn_graph_infer_shapes(g));

    static const char *const classes[] = {"T-shirt/top", "", "\xc3\xa9t\xc3\xa9", "bag"};
    g->class_names = kn_arena_alloc(&g->arena, sizeof classes);
    memcpy(g->class_names, classes, sizeof classes);
    g->n_classes = 4;
    g->n_norm = 3;
    g->input_mean = kn_arena_alloc(&g->arena, 3 * sizeof(float));
    g->input_std = kn_arena_alloc(&g->arena, 3 * sizeof(float));
    for (int i = 0; i < 3; i++) {
        g->input_mean[i] = 0.1f * (float)(i + 1) + (float)seed;
        g->input_std[i] = 0.5f / (float)(i + 1);
    }
    CHECK_OK(kn_graph_set_meta(g, "trained_by", "test_kiln_file"));
    CHECK_OK(kn_graph_set_meta(g, "epochs", "3"));
    CHECK_OK(kn_graph_set_meta(g, "empty value", ""));
}

/* ---- comparing graphs bit for bit ------------------------------------------------------------------ */

static bool same_str(const char *a, const char *b) { return a && b && strcmp(a, b) == 0; }

static bool same_attr(const kn_attr *a, const kn_attr *b) {
    if (!same_str(a->name, b->name) || a->type != b->type)
        return false;
    switch (a->type) {
    case KN_ATTR_INT: return a->i == b->i;
    case KN_ATTR_FLOAT: return memcmp(&a->f, &b->f, sizeof a->f) == 0;
    case KN_ATTR_INTS:
        return a->n_ints == b->n_ints && memcmp(a->ints, b->ints, sizeof(int64_t) * (size_t)a->n_ints) == 0;
    case KN_ATTR_STRING: return same_str(a->s, b->s);
    }
    return false;
}

/* Counts the differences between two graphs; 0 when they are identical. */
static int graph_differences(const kn_graph *a, const kn_graph *b) {
    int diff = 0;
    if (a->n_values != b->n_values || a->n_nodes != b->n_nodes)
        return 1;
    for (int i = 0; i < a->n_values; i++) {
        const kn_value *x = &a->values[i], *y = &b->values[i];
        diff += !same_str(x->name, y->name) || x->kind != y->kind || x->dtype != y->dtype ||
                !kn_shape_equal(&x->shape, &y->shape) || x->producer != y->producer;
        size_t bytes;
        if (x->data || y->data)
            diff += !x->data || !y->data || !kn_shape_bytes(&x->shape, x->dtype, &bytes) ||
                    memcmp(x->data, y->data, bytes) != 0;
    }
    for (int i = 0; i < a->n_nodes; i++) {
        const kn_node *x = &a->nodes[i], *y = &b->nodes[i];
        diff += x->op != y->op || !same_str(x->name, y->name) || x->n_in != y->n_in || x->n_out != y->n_out ||
                x->n_attrs != y->n_attrs;
        if (x->n_in == y->n_in)
            diff += memcmp(x->in, y->in, sizeof(int) * (size_t)x->n_in) != 0;
        if (x->n_out == y->n_out)
            diff += memcmp(x->out, y->out, sizeof(int) * (size_t)x->n_out) != 0;
        for (int k = 0; k < x->n_attrs && x->n_attrs == y->n_attrs; k++)
            diff += !same_attr(&x->attrs[k], &y->attrs[k]);
    }
    diff += a->n_inputs != b->n_inputs || memcmp(a->inputs, b->inputs, sizeof a->inputs) != 0;
    diff += a->n_outputs != b->n_outputs || memcmp(a->outputs, b->outputs, sizeof a->outputs) != 0;
    diff += a->n_classes != b->n_classes;
    for (int i = 0; i < a->n_classes && a->n_classes == b->n_classes; i++)
        diff += !same_str(a->class_names[i], b->class_names[i]);
    diff += a->n_norm != b->n_norm;
    if (a->n_norm == b->n_norm && a->n_norm > 0)
        diff += memcmp(a->input_mean, b->input_mean, sizeof(float) * (size_t)a->n_norm) != 0 ||
                memcmp(a->input_std, b->input_std, sizeof(float) * (size_t)a->n_norm) != 0;
    diff += a->n_meta != b->n_meta;
    for (int i = 0; i < a->n_meta && a->n_meta == b->n_meta; i++)
        diff += !same_str(a->meta[i].key, b->meta[i].key) || !same_str(a->meta[i].value, b->meta[i].value);
    return diff;
}

/* ---- extras ---------------------------------------------------------------------------------------- */

enum { N_EXTRAS = 3 };

static void make_extras(kn_named_tensor *t) {
    static const char *const names[N_EXTRAS] = {"adam.m/bn.scale", "adam.step", "empty"};
    static const kn_shape shapes[N_EXTRAS] = {{2, {4, 5}}, {0, {0}}, {1, {0}}};
    kn_rng rng = kn_rng_seeded(7);
    for (int i = 0; i < N_EXTRAS; i++) {
        t[i].name = strdup(names[i]);
        t[i].shape = shapes[i];
        int64_t n = kn_shape_numel(&shapes[i]);
        t[i].data = malloc(sizeof(float) * (size_t)(n ? n : 1));
        for (int64_t k = 0; k < n; k++)
            t[i].data[k] = kn_rng_uniform(&rng) - 0.5f;
    }
}

static int extras_differences(const kn_named_tensor *a, int na, const kn_named_tensor *b, int nb) {
    if (na != nb)
        return 1;
    int diff = 0;
    for (int i = 0; i < na; i++) {
        diff += !same_str(a[i].name, b[i].name) || !kn_shape_equal(&a[i].shape, &b[i].shape);
        if (kn_shape_equal(&a[i].shape, &b[i].shape))
            diff += memcmp(a[i].data, b[i].data, sizeof(float) * (size_t)kn_shape_numel(&a[i].shape)) != 0;
    }
    return diff;
}

/* ---- the container, independently of the reader (docs/format.md) ----------------------------------- */

static uint32_t get_u32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static uint64_t get_u64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}
static void set_u16(unsigned char *p, uint16_t v) { memcpy(p, &v, 2); }
static void set_u32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
static void set_u64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }

static uint32_t fourcc(const char *s) { return get_u32((const unsigned char *)s); }

/* The directory entry of the section `kind`, or NULL. */
static unsigned char *dir_entry(unsigned char *file, const char *kind) {
    uint32_t n = get_u32(file + 12);
    for (uint32_t i = 0; i < n; i++)
        if (get_u32(file + 64 + 32 * i) == fourcc(kind))
            return file + 64 + 32 * i;
    return NULL;
}

static size_t section_offset(unsigned char *file, const char *kind) {
    return (size_t)get_u64(dir_entry(file, kind) + 8);
}
static size_t section_size(unsigned char *file, const char *kind) {
    return (size_t)get_u64(dir_entry(file, kind) + 16);
}

/* Recomputes every checksum after a test edited the bytes, as a writer of a hostile file would. */
static void fix_checksums(unsigned char *file, size_t size) {
    uint32_t n = get_u32(file + 12);
    for (uint32_t i = 0; i < n && 64 + 32 * (size_t)(i + 1) <= size; i++) {
        unsigned char *e = file + 64 + 32 * i;
        uint64_t off = get_u64(e + 8), bytes = get_u64(e + 16);
        if (off <= size && bytes <= size - off)
            set_u32(e + 4, kn_crc32(0, file + off, bytes));
    }
    if (64 + 32 * (size_t)n <= size)
        set_u32(file + 24, kn_crc32(0, file + 64, 32 * (size_t)n));
    set_u32(file + 60, kn_crc32(0, file, 60));
}

typedef struct test_section {
    uint32_t kind;
    const unsigned char *bytes;
    size_t size;
} test_section;

/* Lays out a file from sections, the way docs/format.md describes. */
static unsigned char *assemble(const test_section *s, int n, size_t *size) {
    size_t pos = 64 + 32 * (size_t)n, total = pos;
    for (int i = 0; i < n; i++)
        total = (total + 63) / 64 * 64 + s[i].size;
    unsigned char *file = calloc(1, total);
    memcpy(file, "\x89KILN\r\n\x1a", 8);
    set_u16(file + 8, 1);
    set_u16(file + 10, 0);
    set_u32(file + 12, (uint32_t)n);
    set_u64(file + 16, total);
    for (int i = 0; i < n; i++) {
        pos = (pos + 63) / 64 * 64;
        unsigned char *e = file + 64 + 32 * i;
        set_u32(e, s[i].kind);
        set_u64(e + 8, pos);
        set_u64(e + 16, s[i].size);
        memcpy(file + pos, s[i].bytes, s[i].size);
        pos += s[i].size;
    }
    fix_checksums(file, total);
    *size = total;
    return file;
}

/* The sections of a valid file, in directory order. */
static int file_sections(const unsigned char *file, test_section *out) {
    uint32_t n = get_u32(file + 12);
    for (uint32_t i = 0; i < n; i++) {
        const unsigned char *e = file + 64 + 32 * i;
        out[i].kind = get_u32(e);
        out[i].bytes = file + get_u64(e + 8);
        out[i].size = (size_t)get_u64(e + 16);
    }
    return (int)n;
}

/* ---- loading helpers ------------------------------------------------------------------------------- */

/* Loads a copy of exactly `size` bytes, so that ASan sees any read past the end. */
static kiln_status load_exact(const unsigned char *bytes, size_t size, kn_graph *g) {
    unsigned char *copy = malloc(size ? size : 1);
    memcpy(copy, bytes, size);
    kn_named_tensor *extras = NULL;
    int n_extras = 0;
    kiln_status st = kn_kiln_load_buffer(copy, size, g, &extras, &n_extras);
    kn_named_tensors_free(extras, n_extras);
    free(copy);
    return st;
}

/* Loads bytes that must be rejected with `status`, the message containing `needle` (when not NULL);
 * the graph must be left empty. */
static void expect_rejected(const unsigned char *bytes, size_t size, kiln_status status, const char *needle) {
    kn_graph g;
    kiln_status st = load_exact(bytes, size, &g);
    CHECK_MSG(st == status, "status %s, expected %s: %s", kiln_status_name(st), kiln_status_name(status),
              kiln_last_error());
    if (needle)
        CHECK_MSG(strstr(kiln_last_error(), needle) != NULL, "message \"%s\" lacks \"%s\"", kiln_last_error(),
                  needle);
    CHECK(g.n_values == 0 && g.n_nodes == 0 && g.arena.head == NULL);
    kn_graph_free(&g);
}

/* Copies the valid file buf (size bytes) into f, applies `edit` to the copy, fixes its checksums so that
 * only the edit is wrong, and expects the load to fail with `status` and a message holding `needle`. */
#define HOSTILE(edit, status, needle)                 \
    do {                                              \
        memcpy(f, buf, size);                         \
        edit;                                         \
        fix_checksums(f, size);                       \
        expect_rejected(f, size, status, needle);     \
    } while (0)

static bool file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* True when the test directory holds a leftover "<name>.tmp.<pid>" file. */
static bool temp_file_left(void) {
    DIR *d = opendir(test_dir);
    bool found = false;
    struct dirent *e;
    while (d && (e = readdir(d)))
        found |= strstr(e->d_name, ".tmp.") != NULL;
    if (d)
        closedir(d);
    return found;
}

/* ---- round trips ----------------------------------------------------------------------------------- */

static void test_buffer_round_trip(void) {
    kn_graph g, back;
    build_model(&g, 1);
    void *buf;
    size_t size;
    CHECK_OK(kn_kiln_save_buffer(&g, NULL, 0, &buf, &size));
    CHECK_OK(kn_kiln_load_buffer(buf, size, &back, NULL, NULL));
    int diff = graph_differences(&g, &back);
    CHECK_MSG(diff == 0, "%d differences after a buffer round trip", diff);
    CHECK(back.mapping == NULL);
    CHECK_OK(kn_graph_infer_shapes(&back));
    CHECK(graph_differences(&g, &back) == 0);

    /* Saving the loaded graph gives the same bytes: the file is a canonical image of the graph. */
    void *buf2;
    size_t size2;
    CHECK_OK(kn_kiln_save_buffer(&back, NULL, 0, &buf2, &size2));
    CHECK(size2 == size && memcmp(buf, buf2, size) == 0);
    printf("buffer round trip: %zu-byte file, %d values, %d nodes, %d differences\n", size, g.n_values,
           g.n_nodes, diff);

    /* A second model differs: the comparison can fail. */
    kn_graph other;
    build_model(&other, 2);
    CHECK(graph_differences(&g, &other) > 0);
    kn_graph_free(&other);
    free(buf);
    free(buf2);
    kn_graph_free(&back);
    kn_graph_free(&g);
}

static void test_file_round_trip(void) {
    char path[128];
    path_in_test_dir(path, sizeof path, "model.kiln");
    kn_graph g, copy, mapped;
    build_model(&g, 3);
    CHECK_OK(kn_kiln_save(path, &g, NULL, 0));
    CHECK(!temp_file_left());

    CHECK_OK(kn_kiln_load(path, KN_KILN_LOAD_COPY, &copy, NULL, NULL));
    CHECK(graph_differences(&g, &copy) == 0 && copy.mapping == NULL);

    static kn_named_tensor sentinel;
    kn_named_tensor *extras = &sentinel; /* the loader must reset it: the file has no extras */
    int n_extras = -1;
    CHECK_OK(kn_kiln_load(path, KN_KILN_LOAD_MMAP, &mapped, &extras, &n_extras));
    CHECK(extras == NULL && n_extras == 0);
    CHECK(graph_differences(&g, &mapped) == 0);
    CHECK(mapped.mapping != NULL && mapped.mapping_bytes > 0);
    int in_mapping = 0, aligned = 0, initializers = 0;
    const unsigned char *lo = mapped.mapping, *hi = lo + mapped.mapping_bytes;
    for (int i = 0; i < mapped.n_values; i++) {
        const kn_value *v = &mapped.values[i];
        if (!v->data)
            continue;
        initializers++;
        in_mapping += (const unsigned char *)v->data >= lo && (const unsigned char *)v->data <= hi;
        aligned += ((uintptr_t)v->data % 64) == 0;
    }
    CHECK_MSG(in_mapping == initializers && aligned == initializers,
              "%d initializers, %d in the mapping, %d aligned", initializers, in_mapping, aligned);
    printf("mmap load: %d initializers, %d in the mapping, %d 64-byte aligned\n", initializers, in_mapping,
           aligned);

    /* Training writes weights in place; the file on disk must not change. */
    int scale = kn_graph_find_value(&mapped, "bn.scale");
    ((float *)mapped.values[scale].data)[0] = 1234.5f;
    CHECK_OK(kn_graph_infer_shapes(&mapped));
    kn_graph_free(&mapped);
    kn_graph again;
    CHECK_OK(kn_kiln_load(path, KN_KILN_LOAD_MMAP, &again, NULL, NULL));
    CHECK(graph_differences(&g, &again) == 0);
    kn_graph_free(&again);

    kn_graph_free(&copy);
    kn_graph_free(&g);
}

static void test_extras_round_trip(void) {
    kn_graph g, back;
    build_model(&g, 4);
    kn_named_tensor extras[N_EXTRAS];
    make_extras(extras);
    void *buf;
    size_t size;
    CHECK_OK(kn_kiln_save_buffer(&g, extras, N_EXTRAS, &buf, &size));
    kn_named_tensor *got = NULL;
    int n_got = 0;
    CHECK_OK(kn_kiln_load_buffer(buf, size, &back, &got, &n_got));
    CHECK(graph_differences(&g, &back) == 0);
    int diff = extras_differences(extras, N_EXTRAS, got, n_got);
    CHECK_MSG(diff == 0, "%d extras differ", diff);
    kn_named_tensors_free(got, n_got);
    kn_graph_free(&back);

    /* Without asking for the extras, the same file loads the graph alone. */
    CHECK_OK(kn_kiln_load_buffer(buf, size, &back, NULL, NULL));
    CHECK(graph_differences(&g, &back) == 0);
    kn_graph_free(&back);

    char path[128];
    path_in_test_dir(path, sizeof path, "checkpoint.kiln");
    CHECK_OK(kn_kiln_save(path, &g, extras, N_EXTRAS));
    for (int mode = 0; mode < 2; mode++) {
        CHECK_OK(kn_kiln_load(path, mode ? KN_KILN_LOAD_MMAP : KN_KILN_LOAD_COPY, &back, &got, &n_got));
        CHECK(graph_differences(&g, &back) == 0);
        CHECK(extras_differences(extras, N_EXTRAS, got, n_got) == 0);
        kn_named_tensors_free(got, n_got);
        kn_graph_free(&back);
    }
    printf("extras round trip: %d tensors, %d differences, %zu-byte checkpoint\n", n_got, diff, size);
    for (int i = 0; i < N_EXTRAS; i++) {
        free(extras[i].name);
        free(extras[i].data);
    }
    free(buf);
    kn_graph_free(&g);
}

/* ---- ranks ------------------------------------------------------------------------------------------ */

/* Graph values (inputs, activations) have ranks up to KN_MAX_DIMS (8) and round-trip; a stored tensor's
 * entry has six dims slots, so the writer refuses a constant of rank 7 with one clear error. */
static void test_ranks(void) {
    kn_graph g, back;
    kn_graph_init(&g);
    int x = add_value(&g, "x", KN_VALUE_INPUT, KN_F32, 8, (int64_t[]){-1, 2, 1, 3, 1, 2, 1, 2});
    int y = add_value(&g, "y", KN_VALUE_ACT, KN_F32, 0, NULL);
    add_node(&g, "Relu", "relu", 1, (int[]){x}, y);
    g.inputs[g.n_inputs++] = x;
    g.outputs[g.n_outputs++] = y;
    CHECK_OK(kn_graph_infer_shapes(&g));
    void *buf;
    size_t size;
    CHECK_OK(kn_kiln_save_buffer(&g, NULL, 0, &buf, &size));
    CHECK_OK(kn_kiln_load_buffer(buf, size, &back, NULL, NULL));
    CHECK(graph_differences(&g, &back) == 0 && back.values[back.inputs[0]].shape.ndim == 8);
    kn_graph_free(&back);
    free(buf);

    int c = add_value(&g, "seven", KN_VALUE_CONST, KN_F32, 7, (int64_t[]){1, 2, 1, 1, 1, 1, 2});
    memset(g.values[c].data, 0, 4 * sizeof(float));
    kiln_status st = kn_kiln_save_buffer(&g, NULL, 0, &buf, &size);
    CHECK_MSG(st == KILN_ERR_UNSUPPORTED && strstr(kiln_last_error(), "'seven' has rank 7; a .kiln file stores "
                                                                      "tensors of rank 0 to 6"),
              "%s: %s", kiln_status_name(st), kiln_last_error());
    kn_graph_free(&g);
}

/* ---- atomic writes --------------------------------------------------------------------------------- */

static void test_atomic_write(void) {
    kn_graph good, other;
    build_model(&good, 5);
    build_model(&other, 6);
    char path[128], dir[128], missing[160];
    path_in_test_dir(path, sizeof path, "atomic.kiln");
    path_in_test_dir(dir, sizeof dir, "a-directory.kiln");
    path_in_test_dir(missing, sizeof missing, "no/such/dir/model.kiln");
    CHECK_OK(kn_kiln_save(path, &good, NULL, 0));

    /* The target is a directory: the rename fails, the temp file goes away. */
    CHECK(mkdir(dir, 0755) == 0);
    kiln_status st = kn_kiln_save(dir, &other, NULL, 0);
    CHECK(st == KILN_ERR_IO && strstr(kiln_last_error(), dir) != NULL);
    printf("save onto a directory: %s\n", kiln_last_error());
    CHECK(!temp_file_left());
    rmdir(dir);

    /* The directory does not exist. */
    st = kn_kiln_save(missing, &other, NULL, 0);
    CHECK(st == KILN_ERR_IO && strstr(kiln_last_error(), missing) != NULL);

    /* The disk fills up half way (a file size limit makes write() fail with EFBIG): the old model stays. */
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit old_limit, small;
    getrlimit(RLIMIT_FSIZE, &old_limit);
    small = old_limit;
    small.rlim_cur = 300;
    CHECK(setrlimit(RLIMIT_FSIZE, &small) == 0);
    st = kn_kiln_save(path, &other, NULL, 0);
    setrlimit(RLIMIT_FSIZE, &old_limit);
    CHECK_MSG(st == KILN_ERR_IO, "status %s: %s", kiln_status_name(st), kiln_last_error());
    printf("save with a full disk: %s\n", kiln_last_error());
    CHECK(!temp_file_left());
    kn_graph back;
    CHECK_OK(kn_kiln_load(path, KN_KILN_LOAD_COPY, &back, NULL, NULL));
    CHECK(graph_differences(&good, &back) == 0);
    kn_graph_free(&back);

    /* A graph the writer refuses never reaches the disk. */
    char refused[128];
    path_in_test_dir(refused, sizeof refused, "refused.kiln");
    void *keep = other.values[1].data;
    other.values[1].data = NULL;
    st = kn_kiln_save(refused, &other, NULL, 0);
    CHECK(st == KILN_ERR_INVALID_ARG && strstr(kiln_last_error(), "bn.scale") != NULL);
    CHECK(!file_exists(refused) && !temp_file_left());
    other.values[1].data = keep;

    /* Overwriting succeeds when nothing fails. */
    CHECK_OK(kn_kiln_save(path, &other, NULL, 0));
    CHECK_OK(kn_kiln_load(path, KN_KILN_LOAD_COPY, &back, NULL, NULL));
    CHECK(graph_differences(&other, &back) == 0);
    kn_graph_free(&back);
    kn_graph_free(&good);
    kn_graph_free(&other);
}

/* ---- versions, sections, file errors --------------------------------------------------------------- */

static void test_versions_and_sections(void) {
    kn_graph g, back;
    build_model(&g, 8);
    unsigned char *buf;
    size_t size;
    CHECK_OK(kn_kiln_save_buffer(&g, NULL, 0, (void **)&buf, &size));
    unsigned char *f = malloc(size);

    memcpy(f, buf, size);
    set_u16(f + 8, 2);
    fix_checksums(f, size);
    expect_rejected(f, size, KILN_ERR_FORMAT, "written by a newer kiln (format 2.x); this kiln reads 1.x");
    printf("newer major: %s\n", kiln_last_error());
    set_u16(f + 8, 0);
    fix_checksums(f, size);
    expect_rejected(f, size, KILN_ERR_FORMAT, "this kiln reads 1.x");

    /* A newer minor version of the same major loads. */
    memcpy(f, buf, size);
    set_u16(f + 10, 9);
    fix_checksums(f, size);
    CHECK_OK(load_exact(f, size, &back));
    kn_graph_free(&back);

    expect_rejected((const unsigned char *)"GIF89a", 6, KILN_ERR_FORMAT, "not a .kiln file");
    expect_rejected(buf, 0, KILN_ERR_FORMAT, "empty");

    /* Sections this kiln does not know (added by a later minor version) are skipped; required ones
     * must be there, each once. */
    test_section s[8];
    int n = file_sections(buf, s);
    s[n] = (test_section){fourcc("NEW!"), (const unsigned char *)"future data", 11};
    size_t asize;
    unsigned char *a = assemble(s, n + 1, &asize);
    CHECK_OK(load_exact(a, asize, &back));
    CHECK(graph_differences(&g, &back) == 0);
    kn_graph_free(&back);
    free(a);
    a = assemble(s + 1, n - 1, &asize); /* no graph section */
    expect_rejected(a, asize, KILN_ERR_FORMAT, "no graph section");
    free(a);
    s[n] = s[0];
    a = assemble(s, n + 1, &asize); /* the graph section twice */
    expect_rejected(a, asize, KILN_ERR_FORMAT, "both a graph section");
    free(a);
    s[n] = (test_section){fourcc("XTAB"), (const unsigned char *)"\0\0\0\0\x60\0\0\0", 8};
    a = assemble(s, n + 1, &asize); /* extras table without extras data */
    expect_rejected(a, asize, KILN_ERR_FORMAT, "extra tensor table without");
    free(a);

    /* File errors name the file. */
    char path[128];
    path_in_test_dir(path, sizeof path, "missing.kiln");
    CHECK(kn_kiln_load(path, KN_KILN_LOAD_MMAP, &back, NULL, NULL) == KILN_ERR_IO);
    CHECK(strstr(kiln_last_error(), path) != NULL);
    CHECK(kn_kiln_load(test_dir, KN_KILN_LOAD_COPY, &back, NULL, NULL) == KILN_ERR_IO);
    path_in_test_dir(path, sizeof path, "empty.kiln");
    fclose(fopen(path, "wb"));
    CHECK(kn_kiln_load(path, KN_KILN_LOAD_MMAP, &back, NULL, NULL) == KILN_ERR_FORMAT);
    CHECK(strstr(kiln_last_error(), path) != NULL && strstr(kiln_last_error(), "empty") != NULL);
    free(f);
    free(buf);
    kn_graph_free(&g);
}

/* ---- truncation and corruption --------------------------------------------------------------------- */

/* A small model: one node, one parameter, a little metadata, one extra. */
static void build_small(kn_graph *g, kn_named_tensor *extra) {
    kn_graph_init(g);
    int x = add_value(g, "x", KN_VALUE_INPUT, KN_F32, 2, (int64_t[]){1, 4});
    int w = add_value(g, "w", KN_VALUE_CONST, KN_I64, 1, (int64_t[]){2});
    int y = add_value(g, "y", KN_VALUE_ACT, KN_F32, 0, NULL);
    ((int64_t *)g->values[w].data)[0] = 2;
    ((int64_t *)g->values[w].data)[1] = 2;
    int n = add_node(g, "Reshape", "r", 2, (int[]){x, w}, y);
    CHECK_OK(kn_node_set_int(g, n, "allowzero", 0));
    CHECK_OK(kn_node_set_string(g, n, "s", "t"));
    g->inputs[g->n_inputs++] = x;
    g->outputs[g->n_outputs++] = y;
    CHECK_OK(kn_graph_infer_shapes(g));
    CHECK_OK(kn_graph_set_meta(g, "k", "v"));
    extra->name = strdup("e");
    extra->shape = kn_shape_of(1, (int64_t[]){2});
    extra->data = malloc(2 * sizeof(float));
    extra->data[0] = 1.0f;
    extra->data[1] = -2.0f;
}

/* Every prefix of the file `buf`, and every byte of it flipped two ways, is rejected. */
static void check_truncation_and_flips(const unsigned char *buf, size_t size, const char *what) {
    int accepted = 0;
    for (size_t n = 0; n < size; n++) {
        kn_graph back;
        accepted += load_exact(buf, n, &back) != KILN_ERR_FORMAT;
        CHECK(back.n_values == 0);
    }
    CHECK_MSG(accepted == 0, "%s: %d of %zu truncations were not rejected as bad format", what, accepted, size);
    printf("%s: all %zu prefixes of the %zu-byte file rejected (%d accepted)\n", what, size, size, accepted);

    /* Every byte flipped, in two ways: everything is checksummed or must be zero. */
    unsigned char *f = malloc(size);
    accepted = 0;
    for (size_t i = 0; i < size; i++) {
        for (int pattern = 0; pattern < 2; pattern++) {
            memcpy(f, buf, size);
            f[i] ^= pattern ? 0xFF : 0x01;
            kn_graph back;
            accepted += load_exact(f, size, &back) == KILN_OK;
            kn_graph_free(&back);
        }
    }
    CHECK_MSG(accepted == 0, "%s: %d of %zu byte flips were accepted", what, accepted, 2 * size);
    printf("%s: %zu byte flips, %d accepted\n", what, 2 * size, accepted);
    free(f);
}

static void test_truncation_and_flips(void) {
    kn_graph g;
    kn_named_tensor extra;
    build_small(&g, &extra);
    unsigned char *buf;
    size_t size;
    CHECK_OK(kn_kiln_save_buffer(&g, &extra, 1, (void **)&buf, &size));
    check_truncation_and_flips(buf, size, "small model");

    /* The same on disk, through the mmap path, for a stride of lengths. */
    char path[128];
    path_in_test_dir(path, sizeof path, "truncated.kiln");
    int rejected = 0, tried = 0;
    for (size_t n = 0; n < size; n += 37) {
        FILE *fp = fopen(path, "wb");
        fwrite(buf, 1, n, fp);
        fclose(fp);
        kn_graph back;
        tried++;
        rejected += kn_kiln_load(path, KN_KILN_LOAD_MMAP, &back, NULL, NULL) == KILN_ERR_FORMAT &&
                    strstr(kiln_last_error(), path) != NULL;
    }
    CHECK_MSG(rejected == tried, "%d of %d truncated files rejected with their name", rejected, tried);
    free(buf);
    free(extra.name);
    free(extra.data);
    kn_graph_free(&g);
}

/* A graph the reader accepted must be one the writer accepts: the two agree on what is valid. */
static int resaves(const kn_graph *g) {
    void *buf;
    size_t size;
    kiln_status st = kn_kiln_save_buffer(g, NULL, 0, &buf, &size);
    if (st != KILN_OK)
        fprintf(stderr, "accepted graph does not save: %s\n", kiln_last_error());
    free(buf);
    return st == KILN_OK;
}

/* Mutates every byte of the n_ranges (offset, size) ranges and fixes the checksums, so the parsers see
 * hostile contents; the reader must never crash (ASan watches), and may accept only what is a valid
 * graph. */
static void check_mutations_in(const unsigned char *buf, size_t size, const size_t (*ranges)[2], int n_ranges,
                               const char *what) {
    unsigned char *f = malloc(size);
    static const unsigned char values[] = {0x00, 0x01, 0x05, 0x7F, 0x80, 0xFE, 0xFF};
    int loads = 0, errors = 0, resavable = 0;
    for (int s = 0; s < n_ranges; s++) {
        size_t off = ranges[s][0], n = ranges[s][1];
        for (size_t i = off; i < off + n; i++) {
            for (size_t v = 0; v < sizeof values; v++) {
                if (buf[i] == values[v])
                    continue;
                memcpy(f, buf, size);
                f[i] = values[v];
                fix_checksums(f, size);
                kn_graph back;
                kiln_status st = load_exact(f, size, &back);
                loads++;
                errors += st != KILN_OK;
                if (st != KILN_OK)
                    CHECK(kiln_last_error()[0] != '\0');
                else
                    resavable += resaves(&back);
                kn_graph_free(&back);
            }
        }
    }
    /* Random multi-byte damage anywhere in the file, checksums fixed. */
    kn_rng rng = kn_rng_seeded(99);
    for (int t = 0; t < 3000; t++) {
        memcpy(f, buf, size);
        int hits = 1 + (int)kn_rng_below(&rng, 4);
        for (int k = 0; k < hits; k++)
            f[kn_rng_below(&rng, size)] = (unsigned char)kn_rng_next(&rng);
        fix_checksums(f, size);
        kn_graph back;
        kiln_status st = load_exact(f, size, &back);
        loads++;
        errors += st != KILN_OK;
        if (st == KILN_OK)
            resavable += resaves(&back);
        kn_graph_free(&back);
    }
    printf("%s, mutations past the checksums: %d loads, %d rejected, %d accepted, of which %d save again\n",
           what, loads, errors, loads - errors, resavable);
    CHECK(resavable == loads - errors);
    free(f);
}

/* The same over the sections named in `parsed`. */
static void check_mutations(const unsigned char *buf, size_t size, const char *const *parsed, int n_parsed,
                            const char *what) {
    size_t ranges[8][2];
    for (int s = 0; s < n_parsed && s < 8; s++) {
        ranges[s][0] = section_offset((unsigned char *)buf, parsed[s]);
        ranges[s][1] = section_size((unsigned char *)buf, parsed[s]);
    }
    check_mutations_in(buf, size, (const size_t(*)[2])ranges, n_parsed < 8 ? n_parsed : 8, what);
}

static void test_mutations_past_checksums(void) {
    kn_graph g;
    kn_named_tensor extra;
    build_small(&g, &extra);
    unsigned char *buf;
    size_t size;
    CHECK_OK(kn_kiln_save_buffer(&g, &extra, 1, (void **)&buf, &size));
    static const char *const parsed[] = {"GRPH", "META", "TTAB", "XTAB"};
    check_mutations(buf, size, parsed, 4, "small model");
    free(buf);
    free(extra.name);
    free(extra.data);
    kn_graph_free(&g);
}

/* Position of `needle` in the graph section. */
static size_t find_in_graph(unsigned char *file, const char *needle) {
    size_t off = section_offset(file, "GRPH"), n = section_size(file, "GRPH"), len = strlen(needle);
    for (size_t i = off; i + len <= off + n; i++)
        if (memcmp(file + i, needle, len) == 0)
            return i;
    return 0;
}

/* Hand-made hostile fields, each checksummed correctly, each rejected with a precise message. */
static void test_hostile_fields(void) {
    kn_graph g;
    kn_named_tensor extra;
    build_small(&g, &extra);
    unsigned char *buf;
    size_t size;
    CHECK_OK(kn_kiln_save_buffer(&g, &extra, 1, (void **)&buf, &size));
    unsigned char *f = malloc(size);
    size_t graph = section_offset(buf, "GRPH"), table = section_offset(buf, "TTAB");
    size_t entry = table + 8; /* the first tensor-table entry */


    HOSTILE(set_u32(f + 12, 0xFFFFFFFFu), KILN_ERR_FORMAT, "more than the 64");
    HOSTILE(set_u32(f + 12, 60), KILN_ERR_FORMAT, "directory");
    HOSTILE(set_u64(f + 16, UINT64_MAX), KILN_ERR_FORMAT, "truncated");
    HOSTILE(set_u64(dir_entry(f, "GRPH") + 8, UINT64_MAX - 63), KILN_ERR_FORMAT, "past the end of the file");
    HOSTILE(set_u64(dir_entry(f, "GRPH") + 16, UINT64_MAX), KILN_ERR_FORMAT, "past the end of the file");
    HOSTILE(set_u64(dir_entry(f, "GRPH") + 8, graph + 8), KILN_ERR_FORMAT, "not a multiple of 64");
    HOSTILE(set_u64(dir_entry(f, "META") + 8, graph), KILN_ERR_FORMAT, "overlaps");
    size_t graph_end = graph + section_size(buf, "GRPH");
    CHECK(graph_end % 64 != 0); /* so the byte after the graph section is padding */
    HOSTILE(f[graph_end] = 1, KILN_ERR_FORMAT, "nonzero padding");
    HOSTILE(set_u32(f + graph, 0xFFFFFFFFu), KILN_ERR_FORMAT, "value count");
    HOSTILE(set_u32(f + graph, 0x7FFFFFFF), KILN_ERR_FORMAT, "value count");
    HOSTILE(set_u32(f + graph + 4, 0xFFFFFFF0u), KILN_ERR_FORMAT, "value name");
    HOSTILE(f[graph + 8] = 0, KILN_ERR_FORMAT, "NUL byte"); /* name "x" -> "\0" */
    HOSTILE(f[graph + 9] = 9, KILN_ERR_FORMAT, "kind code 9");
    HOSTILE(f[graph + 10] = 13, KILN_ERR_UNSUPPORTED, "dtype code 13");
    HOSTILE(f[graph + 11] = 9, KILN_ERR_UNSUPPORTED, "rank 9");
    HOSTILE(set_u64(f + graph + 12, (uint64_t)-5), KILN_ERR_FORMAT, "dimension 0 is -5");
    size_t op = find_in_graph(buf, "Reshape");
    CHECK(op > 0);
    HOSTILE(f[op + 6] = 'X', KILN_ERR_UNSUPPORTED, "op 'ReshapX' is not supported");
    printf("unknown op: %s\n", kiln_last_error());
    size_t in0 = op + 7 + 4 + 1 + 4; /* after "Reshape", the node name "r" and the input count */
    HOSTILE(set_u32(f + in0 - 4, 0xFFFFFFFFu), KILN_ERR_FORMAT, "input count");
    HOSTILE(set_u32(f + in0, 999), KILN_ERR_FORMAT, "input 0 is value 999");
    HOSTILE(set_u32(f + in0, (uint32_t)-2), KILN_ERR_FORMAT, "input 0 is value -2");
    HOSTILE(set_u32(f + in0, 2), KILN_ERR_FORMAT, "no earlier node produces");
    HOSTILE(set_u32(f + in0 + 12, 0), KILN_ERR_FORMAT, "not an activation"); /* output -> x */
    HOSTILE(set_u32(f + in0 + 16, 0xFFFFFFFFu), KILN_ERR_FORMAT, "attribute count");
    HOSTILE(f[in0 + 20 + 4 + 9] = 7, KILN_ERR_FORMAT, "type code 7"); /* "allowzero" type */

    HOSTILE(set_u32(f + table, 0xFFFFFFFFu), KILN_ERR_FORMAT, "entries of 96 bytes");
    HOSTILE(set_u32(f + table + 4, 8), KILN_ERR_FORMAT, "shorter than");
    HOSTILE(set_u32(f + entry, 7), KILN_ERR_FORMAT, "target value 7");
    HOSTILE(set_u32(f + entry, 0), KILN_ERR_FORMAT, "input or activation");
    HOSTILE(f[entry + 4] = 99, KILN_ERR_UNSUPPORTED, "storage encoding 99 (unknown) is not supported");
    printf("unknown encoding: %s\n", kiln_last_error());
    HOSTILE(f[entry + 4] = 5,
            KILN_ERR_FORMAT, "stored as bf16 but the value is i64");
    HOSTILE(f[entry + 4] = 16, KILN_ERR_FORMAT, "stored as affine i8, which only f32 values can be");
    HOSTILE(f[entry + 4] = 0, KILN_ERR_FORMAT, "stored as f32 but the value is i64");
    HOSTILE(f[entry + 6] = 9, KILN_ERR_UNSUPPORTED, "rank 9");
    HOSTILE(f[entry + 7] = 2, KILN_ERR_UNSUPPORTED, "tensor flags 0x02 are not supported");
    HOSTILE(f[entry + 7] = 1, KILN_ERR_FORMAT, "flag 0x01 (contiguous packed codes) on a tensor of plain elements");
    HOSTILE(set_u64(f + entry + 8, 3), KILN_ERR_FORMAT, "byte size 16");
    HOSTILE(set_u64(f + entry + 8, (uint64_t)-1), KILN_ERR_FORMAT, "dimension 0 is -1");
    HOSTILE(set_u64(f + entry + 16, 1), KILN_ERR_FORMAT, "unused dimension slot 1");
    HOSTILE(set_u64(f + entry + 8, 1ull << 62), KILN_ERR_FORMAT, "byte size");
    HOSTILE(set_u64(f + entry + 56, 32), KILN_ERR_FORMAT, "not a multiple of 64");
    HOSTILE(set_u64(f + entry + 56, UINT64_MAX - 63), KILN_ERR_FORMAT, "run past");
    HOSTILE((set_u64(f + entry + 8, 1ull << 58), set_u64(f + entry + 64, 1ull << 61)), KILN_ERR_FORMAT,
            "run past");
    HOSTILE(set_u32(f + entry + 72, 0), KILN_ERR_FORMAT, "quantization parameters");
    HOSTILE(set_u32(f + entry + 80, 3), KILN_ERR_FORMAT, "quantization parameters");
    size_t xtab = section_offset(buf, "XTAB");
    HOSTILE(set_u32(f + xtab + 8, 1), KILN_ERR_FORMAT, "list their own index");
    HOSTILE(f[xtab + 8 + 4] = 1, KILN_ERR_FORMAT, "stored as i64 but the value is f32");
    size_t meta = section_offset(buf, "META");
    HOSTILE(set_u32(f + meta, 0x40000000u), KILN_ERR_FORMAT, "class name count");
    HOSTILE(set_u64(f + meta + 4, UINT64_MAX), KILN_ERR_FORMAT, "mean/std length");
    HOSTILE(set_u32(f + meta + 12, 1000), KILN_ERR_FORMAT, "metadata entry count");
    printf("a hostile field: %s\n", kiln_last_error());
    free(f);
    free(buf);
    free(extra.name);
    free(extra.data);
    kn_graph_free(&g);
}

/* ---- compact storage encodings (format 1.1) --------------------------------------------------------- */

enum { N_COMPACT = 8 };

static const char *const compact_names[N_COMPACT] = {"w_f16", "w_bf16", "w_i4", "w_u8", "w_i1", "w_cb", "w_csr", "w_mask"};

/* x (2, 3) plus one (2, 3) weight per compact encoding, each stored its own way (with zero points,
 * nested sparse values and every aux kind), added one after the other. */
static void build_compact(kn_graph *g) {
    static const kn_storage_spec specs[N_COMPACT] = {
        {.encoding = KN_ENC_F16},
        {.encoding = KN_ENC_BF16},
        {.encoding = KN_ENC_AFFINE_I4, .axis = 0},
        {.encoding = KN_ENC_AFFINE_U8, .symmetric = true, .axis = -1, .block = 2},
        {.encoding = KN_ENC_AFFINE_I1, .axis = -1},
        {.encoding = KN_ENC_CODEBOOK, .axis = -1, .bits = 2, .seed = 5},
        {.encoding = KN_ENC_SPARSE_CSR, .values = KN_ENC_AFFINE_I8},
        {.encoding = KN_ENC_SPARSE_BITMASK, .values = KN_ENC_BF16},
    };
    static const float data[N_COMPACT][6] = {
        {0.1f, -2.5f, 3e-5f, 65504.0f, -0.0f, 1.0f}, {0.1f, -2.5f, 3e-5f, 1e30f, -0.0f, 1.0f},
        {0.5f, -1.0f, 0.25f, 2.0f, 3.0f, -0.5f},     {0.5f, 1.0f, 0.25f, 2.0f, 3.0f, 0.0f},
        {0.0f, 1.0f, 1.0f, 0.0f, 1.0f, 0.0f},        {1.0f, 2.0f, 3.0f, 3.0f, 2.0f, 1.0f},
        {0.0f, 1.5f, 0.0f, -2.0f, 0.0f, 0.75f},      {0.0f, 0.0f, 4.0f, -1.0f, 0.0f, 0.0f},
    };
    kn_graph_init(g);
    kn_shape s = kn_shape_of(2, (int64_t[]){2, 3});
    int prev = test_add_value(g, "x", KN_VALUE_INPUT, KN_F32, &s);
    g->inputs[g->n_inputs++] = prev;
    for (int c = 0; c < N_COMPACT; c++) {
        int w = test_add_value(g, compact_names[c], KN_VALUE_PARAM, KN_F32, &s);
        memcpy(g->values[w].data, data[c], sizeof data[c]);
        CHECK_MSG(kn_value_compress(g, w, &specs[c]) == KILN_OK, "%s: %s", compact_names[c], kiln_last_error());
        char name[16];
        snprintf(name, sizeof name, "h%d", c);
        int h = add_value(g, name, KN_VALUE_ACT, KN_F32, 0, NULL);
        add_node(g, "Add", name, 2, (int[]){prev, w}, h);
        prev = h;
    }
    g->outputs[g->n_outputs++] = prev;
    CHECK_OK(kn_graph_infer_shapes(g));
}

static void test_compact_truncation_flips_mutations(void) {
    kn_graph g, back;
    build_compact(&g);
    unsigned char *buf;
    size_t size;
    CHECK_OK(kn_kiln_save_buffer(&g, NULL, 0, (void **)&buf, &size));
    CHECK(get_u32(buf + 8) == (1u | 2u << 16)); /* format 1.2 */
    CHECK_OK(load_exact(buf, size, &back));
    CHECK(graph_differences(&g, &back) == 0);
    int with_storage = 0;
    for (int v = 0; v < back.n_values; v++)
        with_storage += back.values[v].storage != NULL;
    CHECK(with_storage == N_COMPACT);
    kn_graph_free(&back);
    check_truncation_and_flips(buf, size, "compact model");
    /* The data section too: payloads, scales, zero points, centroids and sparse indices are parsed. */
    static const char *const parsed[] = {"GRPH", "TTAB", "DATA"};
    check_mutations(buf, size, parsed, 3, "compact model");
    free(buf);
    kn_graph_free(&g);
}

/* Offset of the tensor-table entry with index `k`, and of the one whose target is value `id`. */
static size_t entry_at(unsigned char *file, uint32_t k) { return section_offset(file, "TTAB") + 8 + 96 * (size_t)k; }

static size_t entry_for(unsigned char *file, const kn_graph *g, const char *name) {
    uint32_t id = (uint32_t)kn_graph_find_value(g, name), n = get_u32(file + section_offset(file, "TTAB"));
    for (uint32_t k = 0; k < n; k++)
        if (get_u32(file + entry_at(file, k)) == id)
            return entry_at(file, k);
    CHECK_MSG(false, "no entry for '%s'", name);
    return 0;
}

/* Offset of the data of the entry at `entry`, and of its aux entry in slot `slot`. */
static size_t data_of(unsigned char *file, size_t entry) {
    return section_offset(file, "DATA") + get_u64(file + entry + 56);
}
static size_t aux_of(unsigned char *file, size_t entry, int slot) {
    return entry_at(file, get_u32(file + entry + 80 + 4 * slot));
}

/* Hand-made bad compact fields, checksummed correctly, each rejected with a precise message. */
static void test_hostile_compact_fields(void) {
    kn_graph g;
    build_compact(&g);
    unsigned char *buf;
    size_t size;
    CHECK_OK(kn_kiln_save_buffer(&g, NULL, 0, (void **)&buf, &size));
    unsigned char *f = malloc(size);
    size_t i4 = entry_for(buf, &g, "w_i4"), u8 = entry_for(buf, &g, "w_u8"), cb = entry_for(buf, &g, "w_cb");
    size_t csr = entry_for(buf, &g, "w_csr"), mask = entry_for(buf, &g, "w_mask"), half = entry_for(buf, &g, "w_f16");
    size_t i1 = entry_for(buf, &g, "w_i1");
    size_t i4_scale = aux_of(buf, i4, 0), i4_zp = aux_of(buf, i4, 1), csr_values = aux_of(buf, csr, 0);
    uint32_t n_entries = get_u32(buf + section_offset(buf, "TTAB"));
    uint32_t u8_scale_index = get_u32(buf + u8 + 80), i4_scale_index = get_u32(buf + i4 + 80);


    /* Aux references. */
    HOSTILE(set_u32(f + i4 + 80, 999), KILN_ERR_FORMAT, "the scale is entry 999; the table has");
    HOSTILE(set_u32(f + i4 + 80, 0), KILN_ERR_FORMAT, "which is not an aux entry");
    HOSTILE(set_u32(f + i4 + 84, i4_scale_index), KILN_ERR_FORMAT, "which another tensor uses already");
    HOSTILE(set_u32(f + u8 + 80, i4_scale_index), KILN_ERR_FORMAT, "another tensor uses already");
    HOSTILE(set_u32(f + i4 + 84, 0xFFFFFFFFu), KILN_ERR_FORMAT, "an aux tensor that no tensor uses");
    HOSTILE(set_u32(f + i4 + 80, 0xFFFFFFFFu), KILN_ERR_FORMAT, "without a scale");
    HOSTILE(set_u32(f + i4 + 88, u8_scale_index), KILN_ERR_FORMAT, "has no use for it");
    HOSTILE(set_u32(f + half + 80, u8_scale_index), KILN_ERR_FORMAT, "has no use for it");
    /* Aux shapes and types must match the granularity. */
    HOSTILE(set_u64(f + i4_scale + 8, 3), KILN_ERR_FORMAT, "has shape (3); the granularity needs (2)");
    HOSTILE(f[i4_scale + 4] = 4, KILN_ERR_FORMAT, "the scale (entry");
    HOSTILE(f[i4_zp + 4] = 3, KILN_ERR_FORMAT, "is stored as u8, not i8");
    HOSTILE(set_u32(f + i4_scale + 72, 0), KILN_ERR_FORMAT, "has quantization parameters");
    HOSTILE(set_u32(f + i4 + 72, 5), KILN_ERR_FORMAT, "axis 5 and block 0 do not fit");
    HOSTILE(set_u32(f + i4 + 76, 2), KILN_ERR_FORMAT, "axis 0 and block 2 do not fit a rank-2 tensor");
    HOSTILE(set_u32(f + u8 + 76, 3), KILN_ERR_FORMAT, "granularity needs (2, 1)");
    /* Packed sizes, padding and values. */
    HOSTILE(set_u64(f + i4 + 64, 6), KILN_ERR_FORMAT, "6 bytes of affine i4 levels; 6 levels need 3");
    HOSTILE(f[data_of(f, i1)] |= 0x80, KILN_ERR_FORMAT, "nonzero padding bits after the last affine i1 level");
    /* The packed-codes flag: rows of 3 levels run on across bytes (i4: 12 bits, i1: 3, codebook: 6,
     * bitmask: 3). Without the flag the reader takes 1.1's rows starting on a byte, 2 x 2 bytes. */
    CHECK(f[i4 + 7] == 1 && f[i1 + 7] == 1 && f[cb + 7] == 1 && f[mask + 7] == 1 && f[u8 + 7] == 0);
    HOSTILE(f[i4 + 7] = 0, KILN_ERR_FORMAT,
            "3 bytes of affine i4 codes in rows that start on a byte (format 1.1); 2 rows of 3 need 4");
    HOSTILE(f[half + 7] = 1, KILN_ERR_FORMAT,
            "flag 0x01 (contiguous packed codes) on f16 storage, which has no codes narrower than a byte");
    HOSTILE(f[u8 + 7] = 1, KILN_ERR_FORMAT, "on affine u8 storage, which has no codes");
    HOSTILE(f[csr + 7] = 1, KILN_ERR_FORMAT, "on sparse CSR storage, which has no codes");
    HOSTILE(f[i4_scale + 7] = 1, KILN_ERR_FORMAT, "on a tensor of plain elements");
    HOSTILE(f[i4 + 7] = 3, KILN_ERR_UNSUPPORTED, "tensor flags 0x03 are not supported");
    HOSTILE(set_u32(f + data_of(f, i4_scale), 0xBF800000u), KILN_ERR_FORMAT, "scale 0 is -1");
    HOSTILE(set_u32(f + data_of(f, i4_scale), 0x7F800000u), KILN_ERR_FORMAT, "scale 0 is inf");
    HOSTILE(f[data_of(f, i4_zp)] = 100,
            KILN_ERR_FORMAT, "zero point 0 is 100, outside the affine i4 range [-8, 7]");
    HOSTILE(f[data_of(f, cb)] = 0x3F, KILN_ERR_FORMAT, "has codebook index 3; there are 3 centroids");
    HOSTILE(set_u32(f + cb + 76, 3), KILN_ERR_FORMAT, "codebook indices of 3 bits");
    HOSTILE(set_u32(f + cb + 88, 0xFFFFFFFFu), KILN_ERR_FORMAT, "without a valid centroid table");
    HOSTILE(set_u64(f + aux_of(f, cb, 2) + 8, 2), KILN_ERR_FORMAT, "the centroid table (entry");
    HOSTILE((f[aux_of(f, cb, 2) + 6] = 2, set_u64(f + aux_of(f, cb, 2) + 16, 1)),
            KILN_ERR_FORMAT, "has shape (3, 1); the granularity needs (1)");
    /* Sparse structure. */
    size_t ptr = data_of(buf, csr); /* row pointers 0, 1, 3; then columns 1 | 0 2 */
    HOSTILE(set_u32(f + ptr, 1), KILN_ERR_FORMAT, "CSR row pointer 0 is 1");
    HOSTILE(set_u32(f + ptr + 4, 4), KILN_ERR_FORMAT, "CSR row pointer 1 is 4; row pointers rise from 0 to the 3");
    HOSTILE(set_u32(f + ptr + 8, 2), KILN_ERR_FORMAT, "the last CSR row pointer is 2");
    HOSTILE(set_u32(f + ptr + 12, 3), KILN_ERR_FORMAT, "column index 3 is past the last column");
    HOSTILE(set_u32(f + ptr + 20, 0), KILN_ERR_FORMAT, "column index 0 does not increase");
    HOSTILE(set_u64(f + csr + 64, 20), KILN_ERR_FORMAT, "bytes of CSR indices");
    HOSTILE(f[data_of(f, mask)] |= 1, KILN_ERR_FORMAT, "the bitmask marks 3 elements but 2 are stored");
    HOSTILE(f[data_of(f, mask)] |= 0x80, KILN_ERR_FORMAT, "nonzero padding bits after the last bit");
    HOSTILE(f[csr_values + 4] = 32, KILN_ERR_FORMAT, "f32, f16, bf16 or affine are allowed");
    HOSTILE(f[csr_values + 4] = 77, KILN_ERR_UNSUPPORTED, "encoding 77 (unknown)");
    HOSTILE(set_u64(f + csr_values + 8, 4),
            KILN_ERR_FORMAT, "the sparse values: affine i8: 3 bytes of affine i8 levels; 4 levels need 4");
    HOSTILE((f[csr_values + 6] = 2, set_u64(f + csr_values + 16, 1)),
            KILN_ERR_FORMAT, "not a vector of that length");
    HOSTILE(set_u32(f + csr + 72, 0), KILN_ERR_FORMAT, "sparse storage has an axis");
    HOSTILE((f[mask + 6] = 0, set_u64(f + mask + 8, 0), set_u64(f + mask + 16, 0)),
            KILN_ERR_FORMAT, "sparse storage of a rank-0 tensor");
    /* Plain float storage and the main entry's shape. */
    HOSTILE(set_u64(f + half + 64, 10), KILN_ERR_FORMAT, "10 bytes of f16 for 12 expected");
    HOSTILE(set_u32(f + half + 76, 1), KILN_ERR_FORMAT, "f16 storage has block 1");
    HOSTILE((set_u64(f + half + 8, 3), set_u64(f + half + 16, 2)),
            KILN_ERR_FORMAT, "shape (3, 2) differs from the value's shape (2, 3)");
    /* A CSR tensor of 2 x 2^30 columns costs 12 bytes of indices and would decode to 8 GiB. */
    size_t dims = find_in_graph(buf, "w_csr") + 5 + 3 + 8; /* name, kind, dtype, rank, dims[0] */
    HOSTILE((set_u64(f + dims, 1ull << 30), set_u64(f + csr + 16, 1ull << 30)), KILN_ERR_FORMAT,
            "more than the");
    printf("decode budget: %s\n", kiln_last_error());
    CHECK(n_entries > N_COMPACT);
    printf("a hostile compact field: %s\n", kiln_last_error());
    free(f);
    free(buf);
    kn_graph_free(&g);
}

/* A format 1.1 file (tests/ref/data/storage_1_1.kiln: 26 (3, 7) tensors stored every way, packed codes
 * in rows that start on a byte) is read through the repacking path: truncations, flips, mutations of the
 * table entries and rows of its i4, i2, i1, codebook and bitmask tensors, and hand-made bad row layouts,
 * each rejected. */
static void test_format_1_1_rows(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/tests/ref/data/storage_1_1.kiln", KILN_SOURCE_DIR);
    FILE *in = fopen(path, "rb");
    CHECK(in != NULL);
    if (!in)
        return;
    unsigned char *buf = malloc(1 << 16), *f = malloc(1 << 16);
    size_t size = fread(buf, 1, 1 << 16, in);
    fclose(in);
    kn_graph g;
    CHECK(size > 64 && size < (1 << 16) && load_exact(buf, size, &g) == KILN_OK);
    CHECK(get_u32(buf + 8) == (1u | 1u << 16)); /* format 1.1 */
    check_truncation_and_flips(buf, size, "format 1.1 file");
    size_t i4 = entry_for(buf, &g, "w i4 channel sym"), mask = entry_for(buf, &g, "w bitmask f16");
    size_t cb = entry_for(buf, &g, "w codebook 2 channel"), i2 = entry_for(buf, &g, "w i2 block");
    size_t i1 = entry_for(buf, &g, "w i1 channel");
    /* The table entries and the 1.1 rows of one tensor of each kind of packed codes. */
    const size_t packed[5] = {i4, i2, i1, cb, mask};
    size_t ranges[10][2];
    for (int k = 0; k < 5; k++) {
        ranges[2 * k][0] = packed[k];
        ranges[2 * k][1] = 96;
        ranges[2 * k + 1][0] = data_of(buf, packed[k]);
        ranges[2 * k + 1][1] = get_u64(buf + packed[k] + 64);
    }
    check_mutations_in(buf, size, (const size_t(*)[2])ranges, 10, "format 1.1 file's packed tensors");

    /* Rows of 7 levels: 4 bytes each (the last half-byte zero) for i4, 1 byte for the bitmask. */
    CHECK(get_u64(buf + i4 + 64) == 12 && get_u64(buf + mask + 64) == 3 && buf[i4 + 7] == 0);
    HOSTILE(set_u64(f + i4 + 64, 11), KILN_ERR_FORMAT,
            "11 bytes of affine i4 codes in rows that start on a byte (format 1.1); 3 rows of 7 need 12");
    HOSTILE(f[data_of(f, i4) + 7] |= 0x10, KILN_ERR_FORMAT,
            "nonzero padding bits after the last affine i4 code of row 1");
    HOSTILE(f[data_of(f, mask) + 2] |= 0x80, KILN_ERR_FORMAT,
            "nonzero padding bits after the last sparse bitmask code of row 2");
    HOSTILE(set_u32(f + cb + 76, 3), KILN_ERR_FORMAT, "codebook indices of 3 bits");
    /* The same bytes marked contiguous: 12 bytes are not the 11 that 21 levels take. */
    HOSTILE(f[i4 + 7] = 1, KILN_ERR_FORMAT, "12 bytes of affine i4 levels; 21 levels need 11");
    printf("format 1.1 rows: %s\n", kiln_last_error());
    kn_graph_free(&g);
    free(buf);
    free(f);
}

int main(void) {
    snprintf(test_dir, sizeof test_dir, "/tmp/kiln_file_test.XXXXXX");
    if (!mkdtemp(test_dir)) {
        fprintf(stderr, "cannot create a temp directory: %s\n", strerror(errno));
        return 1;
    }
    for (size_t i = 0; i < sizeof used_ops / sizeof used_ops[0]; i++)
        CHECK(kn_op_find(used_ops[i]->name) == used_ops[i]);
    test_crc32();
    test_buffer_round_trip();
    test_file_round_trip();
    test_extras_round_trip();
    test_ranks();
    test_atomic_write();
    test_versions_and_sections();
    test_truncation_and_flips();
    test_mutations_past_checksums();
    test_hostile_fields();
    test_compact_truncation_flips_mutations();
    test_hostile_compact_fields();
    test_format_1_1_rows();

    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", test_dir);
    CHECK(system(cmd) == 0);
    return check_finish();
}
