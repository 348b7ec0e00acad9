/* Reading .kiln files. Nothing in a file is trusted: the header, the directory and every section are
 * checksummed, and every count, offset, length, id and code is bounds-checked before use, so a truncated,
 * corrupt or hostile file gives an error naming the section and file offset, never a crash.
 *
 * Order of checks: magic, then the major version (before anything else, so a newer file is reported as
 * newer, not as corrupt), then the header checksum, the file size, the directory and each section's
 * checksum, and only then the contents.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/status.h"
#include "format/crc32.h"
#include "format/kiln_file.h"
#include "format/kiln_file_layout.h"
#include "ops/op.h"

/* Fuzzers define this (the libFuzzer convention) so that mutated files get past the checksums and
 * exercise the parsers behind them. */
static bool crc_matches(uint32_t stored, const void *bytes, size_t n) {
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
    (void)stored, (void)bytes, (void)n;
    return true;
#else
    return kn_crc32(0, bytes, n) == stored;
#endif
}

/* Names of the storage encodings later format versions add (docs/format.md), so that a file using one
 * is reported as "needs a newer kiln" with the encoding's name, rather than as a bare number. */
static const char *encoding_name(uint32_t code) {
    switch (code) {
    case 0: return "f32";
    case 1: return "i64";
    case 2: return "i32";
    case 3: return "u8";
    case 4: return "f16";
    case 5: return "bf16";
    case 6: return "i8";
    case 7: return "bool";
    case 16: return "affine i8";
    case 17: return "affine u8";
    case 18: return "affine i4";
    case 19: return "affine i2";
    case 20: return "affine i1";
    case 32: return "codebook";
    case 48: return "sparse CSR";
    case 49: return "sparse bitmask";
    }
    return "unknown";
}

static const char *section_name(uint32_t kind) {
    switch (kind) {
    case KN_KILN_SEC_GRAPH: return "graph section";
    case KN_KILN_SEC_META: return "metadata section";
    case KN_KILN_SEC_TENSORS: return "tensor table";
    case KN_KILN_SEC_DATA: return "weight data section";
    case KN_KILN_SEC_EXTRAS: return "extra tensor table";
    case KN_KILN_SEC_EXTRA_DATA: return "extra tensor data section";
    }
    return "unknown section";
}

/* ---- a bounds-checked cursor over one section ------------------------------------------------------ */

typedef struct kn_reader {
    const unsigned char *p; /* the section's bytes */
    size_t size, pos;
    size_t at;            /* where the field being checked starts, for messages */
    const char *section;  /* "graph section" */
    uint64_t file_offset; /* of p in the file */
    char item[160];       /* what is being read ("node 3 'fc1'"), for messages; "" when nothing */
} kn_reader;

static kn_reader reader_of(const unsigned char *file, uint64_t offset, uint64_t size, uint32_t kind) {
    kn_reader r;
    memset(&r, 0, sizeof r);
    r.p = file + offset;
    r.size = (size_t)size;
    r.section = section_name(kind);
    r.file_offset = offset;
    return r;
}

static kiln_status r_fail(const kn_reader *r, kiln_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static kiln_status r_fail(const kn_reader *r, kiln_status status, const char *fmt, ...) {
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return kn_fail(status, "%s at file offset %llu%s%s%s: %s", r->section,
                   (unsigned long long)(r->file_offset + r->at), r->item[0] ? " (" : "", r->item,
                   r->item[0] ? ")" : "", what);
}

static kiln_status r_get(kn_reader *r, const char *what, void *out, size_t n) {
    r->at = r->pos;
    if (r->size - r->pos < n) {
        memset(out, 0, n);
        return r_fail(r, KILN_ERR_FORMAT, "%s needs %zu bytes but the section has %zu left", what, n,
                      r->size - r->pos);
    }
    memcpy(out, r->p + r->pos, n); /* little-endian host: file order is memory order */
    r->pos += n;
    return KILN_OK;
}

/* A u32 count of items taking at least item_bytes each, bounded by `max` and by the bytes left in the
 * section before anything is allocated for the items. */
static kiln_status r_count(kn_reader *r, const char *what, size_t item_bytes, uint32_t max, uint32_t *n) {
    KN_TRY(r_get(r, what, n, sizeof *n));
    if (*n > max)
        return r_fail(r, KILN_ERR_FORMAT, "%s is %u, more than %u", what, *n, max);
    if (*n > (r->size - r->pos) / item_bytes)
        return r_fail(r, KILN_ERR_FORMAT, "%s is %u, more than the %zu bytes left can hold", what, *n,
                      r->size - r->pos);
    return KILN_OK;
}

/* A string (u32 length, bytes), copied NUL-terminated into `arena`. */
static kiln_status r_str(kn_reader *r, const char *what, kn_arena *arena, const char **out) {
    uint32_t len;
    KN_TRY(r_get(r, what, &len, sizeof len));
    if (len > r->size - r->pos)
        return r_fail(r, KILN_ERR_FORMAT, "%s is %u bytes long but the section has %zu left", what, len,
                      r->size - r->pos);
    const unsigned char *s = r->p + r->pos;
    if (memchr(s, 0, len))
        return r_fail(r, KILN_ERR_FORMAT, "%s contains a NUL byte", what);
    char *copy = kn_arena_alloc(arena, (size_t)len + 1);
    if (!copy)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for a %u-byte string", len);
    memcpy(copy, s, len);
    r->pos += len;
    *out = copy;
    return KILN_OK;
}

static kiln_status r_end(kn_reader *r) {
    r->at = r->pos;
    r->item[0] = '\0';
    if (r->pos != r->size)
        return r_fail(r, KILN_ERR_FORMAT, "%zu bytes follow the end of the section's contents",
                      r->size - r->pos);
    return KILN_OK;
}

/* ---- header and section directory ------------------------------------------------------------------ */

typedef struct kn_section_in {
    uint32_t kind, crc;
    uint64_t offset, size;
} kn_section_in;

typedef struct kn_file_view {
    const unsigned char *bytes;
    size_t size;
    uint32_t n_sections;
    kn_section_in sections[KN_KILN_MAX_SECTIONS];
} kn_file_view;

static kiln_status read_header(kn_file_view *f, uint32_t *directory_crc) {
    size_t magic_bytes = f->size < KN_KILN_MAGIC_BYTES ? f->size : KN_KILN_MAGIC_BYTES;
    if (f->size == 0)
        return kn_fail(KILN_ERR_FORMAT, "empty file: not a .kiln model");
    if (memcmp(f->bytes, KN_KILN_MAGIC, magic_bytes) != 0)
        return kn_fail(KILN_ERR_FORMAT, "not a .kiln file (it does not start with the .kiln magic bytes)");
    if (f->size < KN_KILN_HEADER_BYTES)
        return kn_fail(KILN_ERR_FORMAT, "truncated: %zu bytes, shorter than the %d-byte header", f->size,
                       KN_KILN_HEADER_BYTES);
    const unsigned char *h = f->bytes;
    uint16_t major, minor;
    memcpy(&major, h + KN_KILN_AT_MAJOR, sizeof major);
    memcpy(&minor, h + KN_KILN_AT_MINOR, sizeof minor);
    if (major > KN_KILN_FORMAT_MAJOR)
        return kn_fail(KILN_ERR_FORMAT, "written by a newer kiln (format %u.x); this kiln reads %d.x", major,
                       KN_KILN_FORMAT_MAJOR);
    if (major < KN_KILN_FORMAT_MAJOR)
        return kn_fail(KILN_ERR_FORMAT, "format %u.%u is not a .kiln version; this kiln reads %d.x", major,
                       minor, KN_KILN_FORMAT_MAJOR);
    uint32_t header_crc;
    memcpy(&header_crc, h + KN_KILN_AT_HEADER_CRC, sizeof header_crc);
    if (!crc_matches(header_crc, h, KN_KILN_AT_HEADER_CRC))
        return kn_fail(KILN_ERR_FORMAT, "header checksum mismatch: the file is corrupt");

    uint64_t file_bytes;
    memcpy(&file_bytes, h + KN_KILN_AT_FILE_BYTES, sizeof file_bytes);
    if (file_bytes > f->size)
        return kn_fail(KILN_ERR_FORMAT, "truncated: the header says %llu bytes but the file has %zu",
                       (unsigned long long)file_bytes, f->size);
    if (file_bytes < f->size)
        return kn_fail(KILN_ERR_FORMAT, "%llu unexpected bytes after the %llu bytes the header announces",
                       (unsigned long long)(f->size - file_bytes), (unsigned long long)file_bytes);
    memcpy(&f->n_sections, h + KN_KILN_AT_N_SECTIONS, sizeof f->n_sections);
    if (f->n_sections > KN_KILN_MAX_SECTIONS)
        return kn_fail(KILN_ERR_FORMAT, "header: %u sections, more than the %d a .kiln file may have",
                       f->n_sections, KN_KILN_MAX_SECTIONS);
    uint64_t directory_end = KN_KILN_HEADER_BYTES + (uint64_t)f->n_sections * KN_KILN_DIR_ENTRY_BYTES;
    if (directory_end > f->size)
        return kn_fail(KILN_ERR_FORMAT, "header: a directory of %u sections does not fit in %zu bytes",
                       f->n_sections, f->size);
    memcpy(directory_crc, h + KN_KILN_AT_DIRECTORY_CRC, sizeof *directory_crc);
    return KILN_OK;
}

static bool all_zero(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* Sections lie in file order, 64-byte aligned, inside the file, without overlap; the gaps between them
 * are zero and the last one ends the file, so every byte of a valid file is covered by a checksum or
 * must be zero: any corruption is caught. */
static kiln_status read_directory(kn_file_view *f, uint32_t directory_crc) {
    const unsigned char *dir = f->bytes + KN_KILN_HEADER_BYTES;
    size_t dir_bytes = (size_t)f->n_sections * KN_KILN_DIR_ENTRY_BYTES;
    if (!crc_matches(directory_crc, dir, dir_bytes))
        return kn_fail(KILN_ERR_FORMAT, "section directory checksum mismatch: the file is corrupt");
    uint64_t end = KN_KILN_HEADER_BYTES + dir_bytes;
    for (uint32_t i = 0; i < f->n_sections; i++) {
        const unsigned char *e = dir + (size_t)i * KN_KILN_DIR_ENTRY_BYTES;
        kn_section_in *s = &f->sections[i];
        memcpy(&s->kind, e, 4);
        memcpy(&s->crc, e + 4, 4);
        memcpy(&s->offset, e + 8, 8);
        memcpy(&s->size, e + 16, 8);
        const char *name = section_name(s->kind);
        if (s->offset % KN_KILN_ALIGN != 0)
            return kn_fail(KILN_ERR_FORMAT, "directory entry %u (%s): offset %llu is not a multiple of %d", i,
                           name, (unsigned long long)s->offset, KN_KILN_ALIGN);
        if (s->offset < end)
            return kn_fail(KILN_ERR_FORMAT, "directory entry %u (%s): offset %llu overlaps what precedes it",
                           i, name, (unsigned long long)s->offset);
        if (s->offset > f->size || s->size > f->size - s->offset)
            return kn_fail(KILN_ERR_FORMAT,
                           "directory entry %u (%s): %llu bytes at offset %llu run past the end of the file "
                           "(%zu bytes)",
                           i, name, (unsigned long long)s->size, (unsigned long long)s->offset, f->size);
        if (!all_zero(f->bytes + end, (size_t)(s->offset - end)))
            return kn_fail(KILN_ERR_FORMAT,
                           "nonzero padding between offsets %llu and %llu: the file is corrupt",
                           (unsigned long long)end, (unsigned long long)s->offset);
        for (uint32_t k = 0; k < i; k++)
            if (f->sections[k].kind == s->kind)
                return kn_fail(KILN_ERR_FORMAT, "directory entries %u and %u are both a %s", k, i, name);
        if (!crc_matches(s->crc, f->bytes + s->offset, (size_t)s->size))
            return kn_fail(KILN_ERR_FORMAT,
                           "%s (%llu bytes at offset %llu): checksum mismatch: the file is corrupt", name,
                           (unsigned long long)s->size, (unsigned long long)s->offset);
        end = s->offset + s->size;
    }
    if (end != f->size)
        return kn_fail(KILN_ERR_FORMAT, "%llu bytes after the last section: the file is corrupt",
                       (unsigned long long)(f->size - end));
    return KILN_OK;
}

/* The section of `kind`, or NULL. Sections of kinds this kiln does not know (added by later minor
 * versions) were checksummed and are otherwise skipped. */
static const kn_section_in *find_section(const kn_file_view *f, uint32_t kind) {
    for (uint32_t i = 0; i < f->n_sections; i++)
        if (f->sections[i].kind == kind)
            return &f->sections[i];
    return NULL;
}

/* ---- the graph ------------------------------------------------------------------------------------- */

typedef struct kn_load {
    kn_graph *g;
    kn_arena scratch; /* strings and id lists on their way into the graph */
    const unsigned char *file;
    bool in_place; /* initializer data points into `file` (a private mapping) */
    bool keep_packed; /* affine i4 / i2 storages stay packed: storage, no data (KN_KILN_LOAD_PACKED) */
    /* Bytes the compact tensors may still decode to: a file of a few bytes must not make the reader
     * allocate gigabytes (a CSR tensor's columns cost nothing to store). */
    uint64_t decode_budget;
} kn_load;

/* name, kind, dtype, rank, dims. Values are added without data; the tensor table supplies it. */
static kiln_status read_value(kn_reader *r, kn_load *L, uint32_t index) {
    const char *name;
    uint8_t kind_code, dtype_code, ndim;
    snprintf(r->item, sizeof r->item, "value %u", index);
    KN_TRY(r_str(r, "value name", &L->scratch, &name));
    snprintf(r->item, sizeof r->item, "value %u '%.64s'", index, name);
    kn_value_kind kind;
    KN_TRY(r_get(r, "value kind", &kind_code, 1));
    if (!kn_kiln_kind_from_code(kind_code, &kind))
        return r_fail(r, KILN_ERR_FORMAT, "kind code %u is not one of 0 to 4", kind_code);
    kn_dtype dtype;
    KN_TRY(r_get(r, "value dtype", &dtype_code, 1));
    if (!kn_kiln_dtype_from_code(dtype_code, &dtype))
        return r_fail(r, KILN_ERR_UNSUPPORTED, "dtype code %u (%s) is not supported by this kiln", dtype_code,
                      encoding_name(dtype_code));
    KN_TRY(r_get(r, "value rank", &ndim, 1));
    if (ndim > KN_MAX_DIMS)
        return r_fail(r, KILN_ERR_UNSUPPORTED, "rank %u is more than the %d dimensions kiln supports", ndim,
                      KN_MAX_DIMS);
    kn_shape shape;
    memset(&shape, 0, sizeof shape);
    shape.ndim = ndim;
    /* -1 marks an extent of an input or activation that is not known yet (docs/format.md). */
    int64_t min_dim = kn_kiln_is_initializer(kind) ? 0 : -1;
    KN_TRY(r_get(r, "dimensions", shape.d, sizeof(int64_t) * shape.ndim));
    for (int d = 0; d < shape.ndim; d++) {
        if (shape.d[d] < min_dim)
            return r_fail(r, KILN_ERR_FORMAT, "dimension %d is %lld", d, (long long)shape.d[d]);
    }
    if (kn_shape_check_size(&shape) != KILN_OK)
        return r_fail(r, KILN_ERR_SHAPE, "%s", kiln_last_error());
    /* Added as an activation so that kn_graph_add_value does not allocate zeroed arena memory for data
     * that will be copied over, or that lives in the mapping. */
    int id;
    KN_TRY(kn_graph_add_value(L->g, name, KN_VALUE_ACT, dtype, &shape, &id));
    L->g->values[id].kind = kind;
    return KILN_OK;
}

static kiln_status read_attr(kn_reader *r, kn_load *L, kn_attr *a) {
    KN_TRY(r_str(r, "attribute name", &L->g->arena, &a->name));
    uint8_t code;
    KN_TRY(r_get(r, "attribute type", &code, 1));
    if (!kn_kiln_attr_from_code(code, &a->type))
        return r_fail(r, KILN_ERR_FORMAT, "attribute '%.64s' has type code %u, not one of 0 to 3", a->name,
                      code);
    switch (a->type) {
    case KN_ATTR_INT: return r_get(r, "int attribute", &a->i, sizeof a->i);
    case KN_ATTR_FLOAT: return r_get(r, "float attribute", &a->f, sizeof a->f);
    case KN_ATTR_STRING: return r_str(r, "string attribute", &L->g->arena, &a->s);
    case KN_ATTR_INTS: {
        uint32_t n;
        KN_TRY(r_get(r, "ints attribute length", &n, sizeof n));
        if (n > KN_MAX_ATTR_INTS)
            return r_fail(r, KILN_ERR_UNSUPPORTED, "attribute '%.64s' has %u ints; this kiln supports %d",
                          a->name, n, KN_MAX_ATTR_INTS);
        a->n_ints = (int)n;
        for (uint32_t k = 0; k < n; k++)
            KN_TRY(r_get(r, "ints attribute", &a->ints[k], sizeof a->ints[k]));
        return KILN_OK;
    }
    }
    return KILN_OK;
}

/* Value ids of a node's inputs: -1 (omitted) or a value that is not an activation, or one an earlier
 * node produces (nodes are in topological order). */
static kiln_status read_node_inputs(kn_reader *r, kn_load *L, uint32_t *n_in, int **in) {
    const kn_graph *g = L->g;
    KN_TRY(r_count(r, "input count", sizeof(int32_t), INT_MAX, n_in));
    *in = kn_arena_alloc(&L->scratch, sizeof(int) * (*n_in ? *n_in : 1));
    if (!*in)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for %u node inputs", *n_in);
    for (uint32_t k = 0; k < *n_in; k++) {
        int32_t id;
        KN_TRY(r_get(r, "input id", &id, sizeof id));
        if (id < -1 || id >= g->n_values)
            return r_fail(r, KILN_ERR_FORMAT, "input %u is value %d; there are %d values", k, id,
                          g->n_values);
        if (id >= 0 && g->values[id].kind == KN_VALUE_ACT && g->values[id].producer < 0)
            return r_fail(r, KILN_ERR_FORMAT, "input %u is '%.64s', which no earlier node produces", k,
                          g->values[id].name);
        (*in)[k] = id;
    }
    return KILN_OK;
}

/* Value ids of a node's outputs: activations no node has produced yet. Each is marked as produced here,
 * so that a node listing the same output twice is caught too. */
static kiln_status read_node_outputs(kn_reader *r, kn_load *L, uint32_t *n_out, int **out) {
    kn_graph *g = L->g;
    KN_TRY(r_count(r, "output count", sizeof(int32_t), INT_MAX, n_out));
    *out = kn_arena_alloc(&L->scratch, sizeof(int) * (*n_out ? *n_out : 1));
    if (!*out)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for %u node outputs", *n_out);
    for (uint32_t k = 0; k < *n_out; k++) {
        int32_t id;
        KN_TRY(r_get(r, "output id", &id, sizeof id));
        if (id < 0 || id >= g->n_values)
            return r_fail(r, KILN_ERR_FORMAT, "output %u is value %d; there are %d values", k, id,
                          g->n_values);
        kn_value *v = &g->values[id];
        if (v->kind != KN_VALUE_ACT)
            return r_fail(r, KILN_ERR_FORMAT, "output %u is '%.64s', which is not an activation", k, v->name);
        if (v->producer >= 0)
            return r_fail(r, KILN_ERR_FORMAT, "output %u is '%.64s', which node %d already produces", k,
                          v->name, v->producer);
        v->producer = g->n_nodes;
        (*out)[k] = id;
    }
    return KILN_OK;
}

static kiln_status read_node(kn_reader *r, kn_load *L, uint32_t index) {
    kn_graph *g = L->g;
    const char *op_name, *node_name;
    snprintf(r->item, sizeof r->item, "node %u", index);
    KN_TRY(r_str(r, "op name", &L->scratch, &op_name));
    KN_TRY(r_str(r, "node name", &L->scratch, &node_name));
    snprintf(r->item, sizeof r->item, "node %u '%.64s'", index, node_name);
    uint32_t n_in, n_out;
    int *in, *out;
    KN_TRY(read_node_inputs(r, L, &n_in, &in));
    KN_TRY(read_node_outputs(r, L, &n_out, &out));
    /* Resolves the op by name: a model using an op this kiln lacks fails here with the op's name. */
    int node;
    KN_TRY(kn_graph_add_node(g, op_name, node_name, (int)n_in, in, (int)n_out, out, &node));

    uint32_t n_attrs;
    /* An attribute takes at least a name length and a type byte. */
    KN_TRY(r_count(r, "attribute count", 5, INT_MAX, &n_attrs));
    kn_node *n = &g->nodes[node];
    n->attrs = kn_arena_alloc(&g->arena, sizeof(kn_attr) * (n_attrs ? n_attrs : 1));
    if (!n->attrs)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for %u attributes", n_attrs);
    n->n_attrs = (int)n_attrs;
    for (uint32_t k = 0; k < n_attrs; k++)
        KN_TRY(read_attr(r, L, &n->attrs[k]));
    return KILN_OK;
}

static kiln_status read_graph_io(kn_reader *r, kn_graph *g) {
    r->item[0] = '\0';
    uint32_t n;
    KN_TRY(r_count(r, "graph input count", sizeof(int32_t), KN_GRAPH_MAX_IO, &n));
    for (uint32_t i = 0; i < n; i++) {
        int32_t id;
        KN_TRY(r_get(r, "graph input", &id, sizeof id));
        if (id < 0 || id >= g->n_values || g->values[id].kind != KN_VALUE_INPUT)
            return r_fail(r, KILN_ERR_FORMAT, "graph input %u is value %d, which is not an input value", i,
                          id);
        KN_TRY(kn_graph_add_input(g, id));
    }
    KN_TRY(r_count(r, "graph output count", sizeof(int32_t), KN_GRAPH_MAX_IO, &n));
    for (uint32_t i = 0; i < n; i++) {
        int32_t id;
        KN_TRY(r_get(r, "graph output", &id, sizeof id));
        if (id < 0 || id >= g->n_values)
            return r_fail(r, KILN_ERR_FORMAT, "graph output %u is value %d; there are %d values", i, id,
                          g->n_values);
        KN_TRY(kn_graph_add_output(g, id));
    }
    return KILN_OK;
}

static kiln_status read_graph_section(kn_reader *r, kn_load *L) {
    uint32_t n_values, n_nodes;
    /* A value takes at least a name length, kind, dtype and rank; a node its two name lengths and three
     * counts. */
    KN_TRY(r_count(r, "value count", 7, INT_MAX, &n_values));
    for (uint32_t i = 0; i < n_values; i++)
        KN_TRY(read_value(r, L, i));
    r->item[0] = '\0';
    KN_TRY(r_count(r, "node count", 20, INT_MAX, &n_nodes));
    for (uint32_t i = 0; i < n_nodes; i++)
        KN_TRY(read_node(r, L, i));
    KN_TRY(read_graph_io(r, L->g));
    return r_end(r);
}

/* ---- metadata -------------------------------------------------------------------------------------- */

static kiln_status read_meta_section(kn_reader *r, kn_graph *g) {
    uint32_t n_classes;
    KN_TRY(r_count(r, "class name count", 4, INT_MAX, &n_classes));
    if (n_classes > 0) {
        g->class_names = kn_arena_alloc(&g->arena, sizeof(char *) * n_classes);
        if (!g->class_names)
            return kn_fail(KILN_ERR_NOMEM, "out of memory for %u class names", n_classes);
    }
    for (uint32_t i = 0; i < n_classes; i++) {
        snprintf(r->item, sizeof r->item, "class %u", i);
        KN_TRY(r_str(r, "class name", &g->arena, &g->class_names[i]));
        g->n_classes++;
    }
    r->item[0] = '\0';

    uint64_t n_norm;
    KN_TRY(r_get(r, "mean/std length", &n_norm, sizeof n_norm));
    if (n_norm > (r->size - r->pos) / (2 * sizeof(float)))
        return r_fail(r, KILN_ERR_FORMAT, "mean/std length %llu is more than the %zu bytes left can hold",
                      (unsigned long long)n_norm, r->size - r->pos);
    if (n_norm > 0) {
        g->input_mean = kn_arena_alloc(&g->arena, sizeof(float) * n_norm);
        g->input_std = kn_arena_alloc(&g->arena, sizeof(float) * n_norm);
        if (!g->input_mean || !g->input_std)
            return kn_fail(KILN_ERR_NOMEM, "out of memory for %llu mean/std values",
                           (unsigned long long)n_norm);
        KN_TRY(r_get(r, "input mean", g->input_mean, sizeof(float) * n_norm));
        KN_TRY(r_get(r, "input std", g->input_std, sizeof(float) * n_norm));
        g->n_norm = (int64_t)n_norm;
    }

    uint32_t n_meta;
    KN_TRY(r_count(r, "metadata entry count", 8, INT_MAX, &n_meta));
    if (n_meta > 0) {
        g->meta = kn_arena_alloc(&g->arena, sizeof(kn_meta_entry) * n_meta);
        if (!g->meta)
            return kn_fail(KILN_ERR_NOMEM, "out of memory for %u metadata entries", n_meta);
    }
    for (uint32_t i = 0; i < n_meta; i++) {
        snprintf(r->item, sizeof r->item, "metadata entry %u", i);
        KN_TRY(r_str(r, "metadata key", &g->arena, &g->meta[i].key));
        KN_TRY(r_str(r, "metadata value", &g->arena, &g->meta[i].value));
        g->n_meta++;
    }
    return r_end(r);
}

/* ---- tensor tables --------------------------------------------------------------------------------- */

typedef struct kn_tensor_entry {
    uint32_t target; /* value id (model table) or extra index (extras table); NONE: an aux tensor */
    uint16_t encoding;
    uint8_t ndim, flags;
    int64_t dims[KN_KILN_ENTRY_DIMS];
    uint64_t offset, bytes;
    int32_t axis;
    uint32_t block;
    uint32_t aux[4];
} kn_tensor_entry;

/* Reads the fields of one entry this kiln knows and skips the rest of its entry_bytes. */
static kiln_status read_tensor_entry(kn_reader *r, uint32_t entry_bytes, kn_tensor_entry *e) {
    size_t start = r->pos;
    KN_TRY(r_get(r, "target", &e->target, sizeof e->target));
    KN_TRY(r_get(r, "encoding", &e->encoding, sizeof e->encoding));
    KN_TRY(r_get(r, "rank", &e->ndim, sizeof e->ndim));
    KN_TRY(r_get(r, "flags", &e->flags, sizeof e->flags));
    KN_TRY(r_get(r, "dims", e->dims, sizeof e->dims));
    KN_TRY(r_get(r, "offset", &e->offset, sizeof e->offset));
    KN_TRY(r_get(r, "byte size", &e->bytes, sizeof e->bytes));
    KN_TRY(r_get(r, "quantization axis", &e->axis, sizeof e->axis));
    KN_TRY(r_get(r, "quantization block", &e->block, sizeof e->block));
    KN_TRY(r_get(r, "aux tensors", e->aux, sizeof e->aux));
    r->pos = start + entry_bytes; /* in range: the table size was checked against n * entry_bytes */
    r->at = start;
    return KILN_OK;
}

/* n entries of entry_bytes each; returns n. entry_bytes may exceed what this kiln reads (later minor
 * versions append fields), never fall short of it. */
static kiln_status read_table_size(kn_reader *r, uint32_t *n, uint32_t *entry_bytes) {
    KN_TRY(r_get(r, "entry count", n, sizeof *n));
    KN_TRY(r_get(r, "entry size", entry_bytes, sizeof *entry_bytes));
    if (*entry_bytes < KN_KILN_TENSOR_ENTRY_BYTES)
        return r_fail(r, KILN_ERR_FORMAT, "entries of %u bytes are shorter than the %d bytes of format 1.0",
                      *entry_bytes, KN_KILN_TENSOR_ENTRY_BYTES);
    if (*n > (r->size - r->pos) / *entry_bytes)
        return r_fail(r, KILN_ERR_FORMAT, "%u entries of %u bytes do not fit in the %zu bytes left", *n,
                      *entry_bytes, r->size - r->pos);
    return KILN_OK;
}

/* Where the tensor's bytes are: 64-byte aligned, after the previous tensor's (so tensors never overlap:
 * training may update them in place), inside the data section. */
static kiln_status check_placement(kn_reader *r, const kn_tensor_entry *e, uint64_t data_size,
                                   uint64_t *prev_end) {
    if (e->offset % KN_KILN_ALIGN != 0)
        return r_fail(r, KILN_ERR_FORMAT, "data offset %llu is not a multiple of %d",
                      (unsigned long long)e->offset, KN_KILN_ALIGN);
    if (e->offset < *prev_end)
        return r_fail(r, KILN_ERR_FORMAT, "data offset %llu overlaps the previous tensor, which ends at %llu",
                      (unsigned long long)e->offset, (unsigned long long)*prev_end);
    if (e->offset > data_size || e->bytes > data_size - e->offset)
        return r_fail(
            r, KILN_ERR_FORMAT, "%llu bytes at data offset %llu run past the %llu-byte data section",
            (unsigned long long)e->bytes, (unsigned long long)e->offset, (unsigned long long)data_size);
    *prev_end = e->offset + e->bytes;
    return KILN_OK;
}

/* Flags this kiln does not know are unsupported; the packed-codes flag belongs to compact storages
 * only (read_storage checks that this one has packed codes). */
static kiln_status check_flags(kn_reader *r, const kn_tensor_entry *e, bool compact) {
    if (e->flags & ~KN_KILN_FLAG_PACKED_CONTIGUOUS)
        return r_fail(r, KILN_ERR_UNSUPPORTED, "tensor flags 0x%02x are not supported by this kiln",
                      e->flags);
    if (e->flags && !compact)
        return r_fail(r, KILN_ERR_FORMAT, "flag 0x%02x (contiguous packed codes) on a tensor of plain elements",
                      e->flags);
    return KILN_OK;
}

/* The entry's logical shape: a known rank, non-negative dims, zero unused slots. */
static kiln_status entry_shape(kn_reader *r, const kn_tensor_entry *e, kn_shape *shape) {
    if (e->ndim > KN_KILN_ENTRY_DIMS)
        return r_fail(r, KILN_ERR_UNSUPPORTED, "rank %u is more than the %d dimensions a stored tensor has",
                      e->ndim, KN_KILN_ENTRY_DIMS);
    memset(shape, 0, sizeof *shape);
    shape->ndim = e->ndim;
    for (int d = 0; d < KN_KILN_ENTRY_DIMS; d++) {
        if (d < e->ndim && e->dims[d] < 0)
            return r_fail(r, KILN_ERR_FORMAT, "dimension %d is %lld", d, (long long)e->dims[d]);
        if (d >= e->ndim && e->dims[d] != 0)
            return r_fail(r, KILN_ERR_FORMAT, "unused dimension slot %d is %lld, not 0", d,
                          (long long)e->dims[d]);
        shape->d[d] = e->dims[d];
    }
    return KILN_OK;
}

static bool has_no_aux(const kn_tensor_entry *e) {
    return e->aux[0] == KN_KILN_NONE && e->aux[1] == KN_KILN_NONE && e->aux[2] == KN_KILN_NONE &&
           e->aux[3] == KN_KILN_NONE;
}

/* A plain (unquantized) tensor of `dtype`: its encoding, shape and byte size must agree. */
static kiln_status check_plain_entry(kn_reader *r, const kn_tensor_entry *e, kn_dtype dtype,
                                     kn_shape *shape) {
    KN_TRY(check_flags(r, e, false));
    kn_dtype stored;
    kn_encoding compact;
    if (!kn_kiln_dtype_from_code(e->encoding, &stored) && kn_kiln_encoding_from_code(e->encoding, &compact))
        return r_fail(r, KILN_ERR_FORMAT, "stored as %s, which only f32 values can be, but the value is %s",
                      kn_encoding_name(compact), kn_dtype_name(dtype));
    if (!kn_kiln_dtype_from_code(e->encoding, &stored))
        return r_fail(r, KILN_ERR_UNSUPPORTED, "storage encoding %u (%s) is not supported by this kiln",
                      e->encoding, encoding_name(e->encoding));
    if (stored != dtype)
        return r_fail(r, KILN_ERR_FORMAT, "stored as %s but the value is %s", kn_dtype_name(stored),
                      kn_dtype_name(dtype));
    if (e->axis != -1 || e->block != 0 || !has_no_aux(e))
        return r_fail(r, KILN_ERR_FORMAT, "a plain %s tensor has quantization parameters",
                      kn_dtype_name(dtype));
    KN_TRY(entry_shape(r, e, shape));
    size_t bytes;
    if (!kn_shape_bytes(shape, dtype, &bytes) || bytes != e->bytes)
        return r_fail(r, KILN_ERR_FORMAT, "byte size %llu does not match its shape and dtype",
                      (unsigned long long)e->bytes);
    return KILN_OK;
}

/* Gives value v its data: a pointer into the private mapping, or a copy in the arena. */
static kiln_status bind_value_data(kn_load *L, kn_value *v, const unsigned char *bytes, size_t n) {
    if (L->in_place) {
        v->data = (void *)bytes; /* the mapping is writable (MAP_PRIVATE), only this view of it is const */
        return KILN_OK;
    }
    v->data = kn_arena_alloc(&L->g->arena, n ? n : 1);
    if (!v->data)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for the %zu bytes of '%s'", n, v->name);
    memcpy(v->data, bytes, n);
    return KILN_OK;
}

/* The bytes of an entry: in the mapping (in place), or copied into the graph's arena. */
static const void *entry_bytes(kn_load *L, const kn_section_in *data, const kn_tensor_entry *e) {
    const unsigned char *bytes = L->file + data->offset + e->offset;
    if (L->in_place)
        return bytes;
    void *copy = kn_arena_alloc(&L->g->arena, e->bytes ? (size_t)e->bytes : 1);
    if (copy)
        memcpy(copy, bytes, (size_t)e->bytes);
    else
        kn_fail(KILN_ERR_NOMEM, "out of memory for %llu bytes", (unsigned long long)e->bytes);
    return copy;
}

/* The model's tensor table, read whole before any entry is used, since an entry names its aux
 * entries by index. */
typedef struct kn_table {
    kn_tensor_entry *entries; /* (n) */
    bool *used;               /* (n) aux entries some tensor has claimed */
    uint32_t n;
    const kn_section_in *data;
} kn_table;

/* Aux entry `index` for `what`: in the table, an aux entry (target NONE), claimed by no other tensor. */
static kiln_status claim_aux(kn_reader *r, kn_table *t, uint32_t index, const char *what,
                             const kn_tensor_entry **aux) {
    if (index >= t->n)
        return r_fail(r, KILN_ERR_FORMAT, "the %s is entry %u; the table has %u", what, index, t->n);
    if (t->entries[index].target != KN_KILN_NONE)
        return r_fail(r, KILN_ERR_FORMAT, "the %s is entry %u, which is not an aux entry (its target is %u)",
                      what, index, t->entries[index].target);
    if (t->used[index])
        return r_fail(r, KILN_ERR_FORMAT, "the %s is entry %u, which another tensor uses already", what, index);
    t->used[index] = true;
    *aux = &t->entries[index];
    return KILN_OK;
}

/* An aux tensor of plain `code` elements and exactly `shape`: scales, zero points, centroids. */
static kiln_status read_plain_aux(kn_reader *r, kn_load *L, kn_table *t, uint32_t index, const char *what,
                                  uint32_t code, const kn_shape *shape, const void **bytes) {
    const kn_tensor_entry *e = NULL;
    KN_TRY(claim_aux(r, t, index, what, &e));
    kn_dtype dtype = KN_F32;
    kn_kiln_dtype_from_code(code, &dtype);
    kn_shape stored;
    char want[96], got[96];
    KN_TRY(check_flags(r, e, false));
    if (e->encoding != code)
        return r_fail(r, KILN_ERR_FORMAT, "the %s (entry %u) is stored as %s, not %s", what, index,
                      encoding_name(e->encoding), kn_dtype_name(dtype));
    if (e->axis != -1 || e->block != 0 || !has_no_aux(e))
        return r_fail(r, KILN_ERR_FORMAT, "the %s (entry %u) has quantization parameters", what, index);
    KN_TRY(entry_shape(r, e, &stored));
    if (!kn_shape_equal(&stored, shape))
        return r_fail(r, KILN_ERR_FORMAT, "the %s (entry %u) has shape %s; the granularity needs %s", what, index,
                      kn_shape_str(&stored, got, sizeof got), kn_shape_str(shape, want, sizeof want));
    size_t size;
    if (!kn_shape_bytes(shape, dtype, &size) || size != e->bytes)
        return r_fail(r, KILN_ERR_FORMAT, "the %s (entry %u) is %llu bytes for its shape", what, index,
                      (unsigned long long)e->bytes);
    *bytes = entry_bytes(L, t->data, e);
    return *bytes ? KILN_OK : KILN_ERR_NOMEM;
}

static kiln_status read_storage(kn_reader *r, kn_load *L, kn_table *t, const kn_tensor_entry *e,
                                kn_encoding encoding, bool nested, kn_storage **out);

/* The main entry's bytes. Packed codes without KN_KILN_FLAG_PACKED_CONTIGUOUS are format 1.1's rows
 * starting on a byte where that differs (kn_storage_rows_share_bytes): checked and repacked. */
static kiln_status read_storage_payload(kn_reader *r, kn_load *L, kn_table *t, const kn_tensor_entry *e,
                                        kn_storage *s) {
    if (!e->flags && kn_storage_rows_share_bytes(s)) {
        kiln_status st = kn_storage_repack_rows(&L->g->arena, s, L->file + t->data->offset + e->offset,
                                                (size_t)e->bytes);
        if (st == KILN_OK)
            return KILN_OK;
        char why[512];
        snprintf(why, sizeof why, "%s", kiln_last_error());
        return r_fail(r, st, "%s", why);
    }
    return (s->payload = entry_bytes(L, t->data, e)) ? KILN_OK : KILN_ERR_NOMEM;
}

/* The aux entries an encoding uses: scales and zero points (affine), centroids (codebook), values
 * (sparse). Slots an encoding does not use must be NONE. */
static kiln_status read_storage_aux(kn_reader *r, kn_load *L, kn_table *t, const kn_tensor_entry *e,
                                    kn_storage *s) {
    bool used_slot[4] = {false, false, false, false};
    if (kn_encoding_is_affine(s->encoding)) {
        if (s->axis < -1 || s->axis >= s->shape.ndim || (s->block > 0 && (s->axis != -1 || s->shape.ndim < 1)))
            return r_fail(r, KILN_ERR_FORMAT, "axis %d and block %lld do not fit a rank-%d tensor", s->axis,
                          (long long)s->block, s->shape.ndim);
        kn_shape groups = kn_storage_scale_shape(s);
        bool is_unsigned = s->encoding == KN_ENC_AFFINE_U8 || s->encoding == KN_ENC_AFFINE_I1;
        const void *scale;
        if (e->aux[0] == KN_KILN_NONE)
            return r_fail(r, KILN_ERR_FORMAT, "%s storage without a scale (aux 0)", kn_encoding_name(s->encoding));
        KN_TRY(read_plain_aux(r, L, t, e->aux[0], "scale", KN_KILN_DT_F32, &groups, &scale));
        s->scale = scale;
        if (e->aux[1] != KN_KILN_NONE)
            KN_TRY(read_plain_aux(r, L, t, e->aux[1], "zero point", is_unsigned ? KN_KILN_DT_U8 : KN_KILN_DT_I8,
                                  &groups, &s->zero_point));
        used_slot[0] = used_slot[1] = true;
    } else if (s->encoding == KN_ENC_CODEBOOK) {
        if (s->axis < -1 || s->axis >= s->shape.ndim)
            return r_fail(r, KILN_ERR_FORMAT, "axis %d does not fit a rank-%d tensor", s->axis, s->shape.ndim);
        const kn_tensor_entry *table;
        if (e->aux[2] == KN_KILN_NONE || e->aux[2] >= t->n)
            return r_fail(r, KILN_ERR_FORMAT, "codebook without a valid centroid table (aux 2 is %u)", e->aux[2]);
        /* k is the table's last extent; the rest of its shape is fixed by the axis. */
        table = &t->entries[e->aux[2]];
        s->k = table->ndim >= 1 && table->ndim <= KN_KILN_ENTRY_DIMS ? table->dims[table->ndim - 1] : -1;
        kn_shape want = s->axis >= 0 ? kn_shape_of(2, (int64_t[]){s->shape.d[s->axis], s->k})
                                     : kn_shape_of(1, &s->k);
        const void *centroids;
        KN_TRY(read_plain_aux(r, L, t, e->aux[2], "centroid table", KN_KILN_DT_F32, &want, &centroids));
        s->centroids = centroids;
        used_slot[2] = true;
    } else if (kn_encoding_is_sparse(s->encoding)) {
        const kn_tensor_entry *values = NULL;
        if (e->aux[0] == KN_KILN_NONE)
            return r_fail(r, KILN_ERR_FORMAT, "sparse storage without its values (aux 0)");
        KN_TRY(claim_aux(r, t, e->aux[0], "sparse values", &values));
        kn_encoding v;
        if (!kn_kiln_encoding_from_code(values->encoding, &v))
            return r_fail(r, KILN_ERR_UNSUPPORTED, "the sparse values (entry %u) are stored as encoding %u "
                          "(%s), which this kiln does not support", e->aux[0], values->encoding,
                          encoding_name(values->encoding));
        if (kn_encoding_is_sparse(v) || v == KN_ENC_CODEBOOK)
            return r_fail(r, KILN_ERR_FORMAT, "the sparse values (entry %u) are stored as %s; f32, f16, bf16 or "
                          "affine are allowed", e->aux[0], kn_encoding_name(v));
        kn_storage *stored;
        KN_TRY(read_storage(r, L, t, values, v, true, &stored));
        s->values = stored;
        s->nnz = stored->shape.ndim == 1 ? stored->shape.d[0] : -1;
        used_slot[0] = true;
    }
    for (int k = 0; k < 4; k++)
        if (!used_slot[k] && e->aux[k] != KN_KILN_NONE)
            return r_fail(r, KILN_ERR_FORMAT, "aux %d is entry %u, but %s storage has no use for it", k, e->aux[k],
                          kn_encoding_name(s->encoding));
    return KILN_OK;
}

/* A compact storage from its main entry and aux entries, fully checked (kn_storage_check). `nested`:
 * the values of a sparse tensor. */
static kiln_status read_storage(kn_reader *r, kn_load *L, kn_table *t, const kn_tensor_entry *e,
                                kn_encoding encoding, bool nested, kn_storage **out) {
    kn_storage *s = kn_arena_alloc(&L->g->arena, sizeof *s);
    if (!s)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for a storage descriptor");
    s->encoding = encoding;
    KN_TRY(check_flags(r, e, true));
    KN_TRY(entry_shape(r, e, &s->shape));
    size_t f32_bytes;
    if (!kn_shape_bytes(&s->shape, KN_F32, &f32_bytes))
        return r_fail(r, KILN_ERR_FORMAT, "a %s tensor whose size overflows", kn_encoding_name(encoding));
    s->axis = e->axis;
    s->block = kn_encoding_is_affine(encoding) ? e->block : 0;
    s->bits = encoding == KN_ENC_CODEBOOK ? (int)(e->block <= 8 ? e->block : 0) : kn_encoding_bits(encoding);
    if (encoding != KN_ENC_CODEBOOK && !kn_encoding_is_affine(encoding) && e->block != 0)
        return r_fail(r, KILN_ERR_FORMAT, "%s storage has block %u", kn_encoding_name(encoding), e->block);
    s->payload_bytes = (size_t)e->bytes;
    KN_TRY(read_storage_aux(r, L, t, e, s));
    KN_TRY(read_storage_payload(r, L, t, e, s));
    if (kn_storage_check(s) != KILN_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", kiln_last_error());
        return r_fail(r, KILN_ERR_FORMAT, "%s%s: %s", nested ? "the sparse values: " : "",
                      kn_encoding_name(encoding), why);
    }
    if (e->flags && !kn_storage_has_packed_codes(s))
        return r_fail(r, KILN_ERR_FORMAT, "flag 0x%02x (contiguous packed codes) on %s storage, which has no "
                      "codes narrower than a byte", e->flags, kn_encoding_name(encoding));
    *out = s;
    return KILN_OK;
}

static kiln_status read_model_tensor(kn_reader *r, kn_load *L, kn_table *t, const kn_tensor_entry *e) {
    kn_graph *g = L->g;
    if (e->target >= (uint32_t)g->n_values)
        return r_fail(r, KILN_ERR_FORMAT, "target value %u; there are %d values", e->target, g->n_values);
    kn_value *v = &g->values[e->target];
    snprintf(r->item, sizeof r->item, "tensor for value %u '%.64s'", e->target, v->name);
    if (!kn_kiln_is_initializer(v->kind))
        return r_fail(r, KILN_ERR_FORMAT, "the value is an input or activation, which has no stored data");
    if (v->data || v->storage)
        return r_fail(r, KILN_ERR_FORMAT, "the value already has a tensor table entry");
    kn_encoding encoding;
    bool compact = v->dtype == KN_F32 && e->encoding != KN_KILN_DT_F32 &&
                   kn_kiln_encoding_from_code(e->encoding, &encoding);
    kn_shape shape;
    kn_storage *s = NULL;
    if (compact) {
        KN_TRY(read_storage(r, L, t, e, encoding, false, &s));
        shape = s->shape;
    } else {
        KN_TRY(check_plain_entry(r, e, v->dtype, &shape));
    }
    if (!kn_shape_equal(&shape, &v->shape)) {
        char stored[96], declared[96];
        return r_fail(r, KILN_ERR_FORMAT, "shape %s differs from the value's shape %s",
                      kn_shape_str(&shape, stored, sizeof stored),
                      kn_shape_str(&v->shape, declared, sizeof declared));
    }
    if (!compact)
        return bind_value_data(L, v, L->file + t->data->offset + e->offset, (size_t)e->bytes);
    if (L->keep_packed && (s->encoding == KN_ENC_AFFINE_I4 || s->encoding == KN_ENC_AFFINE_I2)) {
        v->storage = s; /* decoded by whoever needs floats (kn_graph_optimize, a session of this graph) */
        return KILN_OK;
    }
    size_t bytes;
    kn_shape_bytes(&shape, KN_F32, &bytes); /* checked by read_storage */
    if (bytes > L->decode_budget)
        return r_fail(r, KILN_ERR_FORMAT, "its %s storage decodes to %zu bytes, more than the %llu a file "
                      "of this size may still decode to", kn_encoding_name(s->encoding), bytes,
                      (unsigned long long)L->decode_budget);
    L->decode_budget -= bytes;
    v->data = kn_arena_alloc(&g->arena, bytes ? bytes : 1);
    if (!v->data)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for the %zu decoded bytes of '%s'", bytes, v->name);
    kn_storage_decode(s, v->data);
    v->storage = s;
    return KILN_OK;
}

/* What compact tensors may decode to in all: 64 MiB, plus 256 times the data section (a bitmask of
 * 1 bit per element with nothing stored decodes to 256 times its size; CSR tensors rarely beat it). */
enum { KN_KILN_DECODE_FLOOR = 64 << 20, KN_KILN_DECODE_RATIO = 256 };

static kiln_status read_tensor_table(kn_reader *r, kn_load *L, const kn_section_in *data) {
    kn_table t = {.data = data};
    uint32_t entry_bytes;
    KN_TRY(read_table_size(r, &t.n, &entry_bytes));
    size_t slots = t.n ? t.n : 1;
    t.entries = kn_arena_alloc(&L->scratch, sizeof *t.entries * slots);
    t.used = kn_arena_alloc(&L->scratch, sizeof *t.used * slots);
    size_t *at = kn_arena_alloc(&L->scratch, sizeof *at * slots); /* where each entry starts, for messages */
    if (!t.entries || !t.used || !at)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for %u tensor entries", t.n);
    uint64_t prev_end = 0;
    for (uint32_t i = 0; i < t.n; i++) {
        snprintf(r->item, sizeof r->item, "entry %u", i);
        KN_TRY(read_tensor_entry(r, entry_bytes, &t.entries[i]));
        at[i] = r->at;
        KN_TRY(check_placement(r, &t.entries[i], data->size, &prev_end));
    }
    L->decode_budget = data->size > (UINT64_MAX - KN_KILN_DECODE_FLOOR) / KN_KILN_DECODE_RATIO
                           ? UINT64_MAX
                           : KN_KILN_DECODE_FLOOR + KN_KILN_DECODE_RATIO * data->size;
    for (uint32_t i = 0; i < t.n; i++) {
        if (t.entries[i].target == KN_KILN_NONE)
            continue; /* an aux tensor, read with the tensor using it */
        snprintf(r->item, sizeof r->item, "entry %u", i);
        r->at = at[i];
        KN_TRY(read_model_tensor(r, L, &t, &t.entries[i]));
    }
    for (uint32_t i = 0; i < t.n; i++) {
        snprintf(r->item, sizeof r->item, "entry %u", i);
        r->at = at[i];
        if (t.entries[i].target == KN_KILN_NONE && !t.used[i])
            return r_fail(r, KILN_ERR_FORMAT, "an aux tensor that no tensor uses");
    }
    KN_TRY(r_end(r));
    const kn_graph *g = L->g;
    for (int i = 0; i < g->n_values; i++)
        if (kn_kiln_is_initializer(g->values[i].kind) && !g->values[i].data && !g->values[i].storage)
            return kn_fail(KILN_ERR_FORMAT, "tensor table: initializer %d '%.64s' has no entry", i,
                           g->values[i].name);
    return KILN_OK;
}

/* ---- extras ---------------------------------------------------------------------------------------- */

void kn_named_tensors_free(kn_named_tensor *t, int n) {
    if (!t)
        return;
    for (int i = 0; i < n; i++) {
        free(t[i].name);
        free(t[i].data);
    }
    free(t);
}

/* The extras table: entries (target = index), then the names. Everything is checked; the tensors are
 * copied out only when `out` is wanted. */
static kiln_status read_extras(kn_reader *r, kn_load *L, const kn_section_in *data, kn_named_tensor **out,
                               int *n_out) {
    uint32_t n, entry_bytes;
    KN_TRY(read_table_size(r, &n, &entry_bytes));
    if (n > INT_MAX)
        return r_fail(r, KILN_ERR_FORMAT, "%u extra tensors", n);
    kn_tensor_entry *entries = kn_arena_alloc(&L->scratch, sizeof(kn_tensor_entry) * (n ? n : 1));
    kn_shape *shapes = kn_arena_alloc(&L->scratch, sizeof(kn_shape) * (n ? n : 1));
    const char **names = kn_arena_alloc(&L->scratch, sizeof(char *) * (n ? n : 1));
    if (!entries || !shapes || !names)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for %u extra tensors", n);
    uint64_t prev_end = 0;
    for (uint32_t i = 0; i < n; i++) {
        snprintf(r->item, sizeof r->item, "entry %u", i);
        KN_TRY(read_tensor_entry(r, entry_bytes, &entries[i]));
        if (entries[i].target != i)
            return r_fail(r, KILN_ERR_FORMAT, "target %u; extras entries list their own index",
                          entries[i].target);
        KN_TRY(check_plain_entry(r, &entries[i], KN_F32, &shapes[i]));
        KN_TRY(check_placement(r, &entries[i], data->size, &prev_end));
    }
    for (uint32_t i = 0; i < n; i++) {
        snprintf(r->item, sizeof r->item, "name of entry %u", i);
        KN_TRY(r_str(r, "extra tensor name", &L->scratch, &names[i]));
    }
    KN_TRY(r_end(r));
    if (!out || n == 0)
        return KILN_OK;

    kn_named_tensor *t = calloc(n, sizeof *t);
    if (!t)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for %u extra tensors", n);
    for (uint32_t i = 0; i < n; i++) {
        size_t bytes = (size_t)entries[i].bytes;
        t[i].name = strdup(names[i]);
        t[i].shape = shapes[i];
        t[i].data = malloc(bytes ? bytes : 1);
        if (!t[i].name || !t[i].data) {
            kn_named_tensors_free(t, (int)n);
            return kn_fail(KILN_ERR_NOMEM, "out of memory for extra tensor '%.64s' (%zu bytes)", names[i],
                           bytes);
        }
        memcpy(t[i].data, L->file + data->offset + entries[i].offset, bytes);
    }
    *out = t;
    *n_out = (int)n;
    return KILN_OK;
}

/* ---- the whole file -------------------------------------------------------------------------------- */

static kiln_status require_section(const kn_file_view *f, uint32_t kind, const kn_section_in **s) {
    *s = find_section(f, kind);
    if (!*s)
        return kn_fail(KILN_ERR_FORMAT, "the file has no %s", section_name(kind));
    return KILN_OK;
}

static kiln_status parse_sections(const kn_file_view *f, kn_load *L, kn_named_tensor **extras,
                                  int *n_extras) {
    const kn_section_in *graph, *tensors, *data;
    KN_TRY(require_section(f, KN_KILN_SEC_GRAPH, &graph));
    KN_TRY(require_section(f, KN_KILN_SEC_TENSORS, &tensors));
    KN_TRY(require_section(f, KN_KILN_SEC_DATA, &data));
    const kn_section_in *meta = find_section(f, KN_KILN_SEC_META);
    const kn_section_in *xtab = find_section(f, KN_KILN_SEC_EXTRAS);
    const kn_section_in *xdat = find_section(f, KN_KILN_SEC_EXTRA_DATA);
    if (!xtab != !xdat)
        return kn_fail(KILN_ERR_FORMAT, "the file has an %s without its %s",
                       section_name(xtab ? xtab->kind : xdat->kind),
                       section_name(xtab ? KN_KILN_SEC_EXTRA_DATA : KN_KILN_SEC_EXTRAS));

    kn_reader r = reader_of(f->bytes, graph->offset, graph->size, graph->kind);
    KN_TRY(read_graph_section(&r, L));
    if (meta) {
        r = reader_of(f->bytes, meta->offset, meta->size, meta->kind);
        KN_TRY(read_meta_section(&r, L->g));
    }
    r = reader_of(f->bytes, tensors->offset, tensors->size, tensors->kind);
    KN_TRY(read_tensor_table(&r, L, data));
    if (xtab) {
        r = reader_of(f->bytes, xtab->offset, xtab->size, xtab->kind);
        KN_TRY(read_extras(&r, L, xdat, extras, n_extras));
    }
    return KILN_OK;
}

/* Parses a whole file image into g (and the extras). On failure g is freed, and the caller still owns
 * `bytes`; on success with in_place, g's initializers point into `bytes`. */
static kiln_status parse_file(const unsigned char *bytes, size_t size, bool in_place, bool keep_packed, kn_graph *g,
                              kn_named_tensor **extras, int *n_extras) {
    bool want_extras = extras && n_extras;
    kn_file_view f;
    f.bytes = bytes;
    f.size = size;
    uint32_t directory_crc = 0;
    KN_TRY(read_header(&f, &directory_crc));
    KN_TRY(read_directory(&f, directory_crc));

    kn_load L = {.g = g, .file = bytes, .in_place = in_place, .keep_packed = keep_packed};
    kiln_status st = parse_sections(&f, &L, want_extras ? extras : NULL, want_extras ? n_extras : NULL);
    kn_arena_free(&L.scratch);
    if (st != KILN_OK)
        kn_graph_free(g);
    return st;
}

/* What the loaders leave behind on failure: an empty graph and no extras. */
static void reset_outputs(kn_graph *g, kn_named_tensor **extras, int *n_extras) {
    kn_graph_init(g);
    if (extras)
        *extras = NULL;
    if (n_extras)
        *n_extras = 0;
}

/* Both buffer loaders: copies, packed weights kept packed or not. */
static kiln_status load_buffer(const void *buf, size_t size, bool keep_packed, kn_graph *g, kn_named_tensor **extras,
                               int *n_extras) {
    reset_outputs(g, extras, n_extras);
    kiln_status st = parse_file(buf, buf ? size : 0, false, keep_packed, g, extras, n_extras);
    if (st != KILN_OK)
        kn_error_prefix("<memory>: ");
    return st;
}

kiln_status kn_kiln_load_buffer(const void *buf, size_t size, kn_graph *g, kn_named_tensor **extras,
                                int *n_extras) {
    return load_buffer(buf, size, false, g, extras, n_extras);
}

kiln_status kn_kiln_load_buffer_packed(const void *buf, size_t size, kn_graph *g) {
    return load_buffer(buf, size, true, g, NULL, NULL);
}

/* Maps the file privately: with KN_KILN_LOAD_MMAP (or PACKED) the graph keeps the mapping and its
 * initializers point into it (copy-on-write, so training can update weights without touching the file); with
 * KN_KILN_LOAD_COPY the mapping is only read from and unmapped again. */
static kiln_status load_file(const char *path, kn_kiln_load_flags flags, kn_graph *g,
                             kn_named_tensor **extras, int *n_extras) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kn_fail(KILN_ERR_IO, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return kn_fail(KILN_ERR_IO, "not a regular file");
    }
    if (st.st_size == 0) {
        close(fd);
        return kn_fail(KILN_ERR_FORMAT, "empty file: not a .kiln model");
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return kn_fail(KILN_ERR_NOMEM, "%lld bytes do not fit in the address space", (long long)st.st_size);
    }
    size_t size = (size_t)st.st_size;
    bool in_place = flags == KN_KILN_LOAD_MMAP || flags == KN_KILN_LOAD_PACKED;
    void *map = mmap(NULL, size, in_place ? PROT_READ | PROT_WRITE : PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED)
        return kn_fail(KILN_ERR_IO, "cannot map %zu bytes: %s", size, strerror(map_errno));
    kiln_status status = parse_file(map, size, in_place, flags == KN_KILN_LOAD_PACKED, g, extras, n_extras);
    if (status == KILN_OK && in_place) {
        g->mapping = map;
        g->mapping_bytes = size;
    } else {
        munmap(map, size);
    }
    return status;
}

kiln_status kn_kiln_load(const char *path, kn_kiln_load_flags flags, kn_graph *g, kn_named_tensor **extras,
                         int *n_extras) {
    reset_outputs(g, extras, n_extras);
    if (flags != KN_KILN_LOAD_COPY && flags != KN_KILN_LOAD_MMAP && flags != KN_KILN_LOAD_PACKED)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s: load flags %d are not COPY, MMAP or PACKED", path, (int)flags);
    kiln_status st = load_file(path, flags, g, extras, n_extras);
    if (st != KILN_OK)
        kn_error_prefix("%s: ", path);
    return st;
}
