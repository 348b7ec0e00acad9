/* Writing .kiln files: check the graph, lay the file out, then stream it to a buffer or an atomic file.
 *
 * The small sections (graph, metadata, tensor tables) are serialised into memory first; the weights are
 * never copied: their checksum is computed from the graph's own buffers, and they are written straight
 * from there. So saving a model costs no second copy of its weights.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "format/crc32.h"
#include "format/file_write.h"
#include "format/kiln_file.h"
#include "format/kiln_file_layout.h"
#include "ops/op.h"

/* ---- checking what is about to be written ---------------------------------------------------------- */

/* The writer refuses anything its reader would reject, so a save never produces an unloadable file. */

static kiln_status check_string(const char *s, const char *what) {
    if (!s)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s is NULL", what);
    if (strlen(s) > UINT32_MAX)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s is longer than 4 GiB", what);
    return KILN_OK;
}

static kiln_status check_shape(const kn_shape *shape, bool has_data, const char *name) {
    if (shape->ndim < 0 || shape->ndim > KN_MAX_DIMS)
        return kn_fail(KILN_ERR_INVALID_ARG, "'%s' has rank %d; kiln supports 0 to %d", name, shape->ndim,
                       KN_MAX_DIMS);
    /* A tensor-table entry has room for KN_KILN_ENTRY_DIMS dims (docs/format.md). */
    if (has_data && shape->ndim > KN_KILN_ENTRY_DIMS)
        return kn_fail(KILN_ERR_UNSUPPORTED, "'%s' has rank %d; a .kiln file stores tensors of rank 0 to %d",
                       name, shape->ndim, KN_KILN_ENTRY_DIMS);
    /* Inputs and activations may carry -1 for an extent not known yet; stored data needs real extents. */
    int64_t min_dim = has_data ? 0 : -1;
    for (int i = 0; i < shape->ndim; i++)
        if (shape->d[i] < min_dim)
            return kn_fail(KILN_ERR_INVALID_ARG, "'%s' has dimension %d = %lld", name, i,
                           (long long)shape->d[i]);
    return KILN_OK;
}

/* A compact storage must be valid, and the value's data must still be exactly what it decodes to:
 * something that changed the data without dropping the storage would otherwise lose that change. */
static kiln_status check_storage(const kn_value *v) {
    const kn_storage *s = v->storage;
    if (!kn_kiln_is_initializer(v->kind) || v->dtype != KN_F32)
        return kn_fail(KILN_ERR_INVALID_ARG, "value '%s' (%s) has a compact storage; only f32 initializers "
                       "can", v->name, kn_dtype_name(v->dtype));
    if (s->encoding == KN_ENC_F32 || !kn_shape_equal(&s->shape, &v->shape))
        return kn_fail(KILN_ERR_INVALID_ARG, "value '%s': its storage is %s of another shape",
                       v->name, s->encoding == KN_ENC_F32 ? "plain f32 (no storage is)" : "one");
    if (kn_storage_check(s) != KILN_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", kiln_last_error());
        return kn_fail(KILN_ERR_INVALID_ARG, "value '%s': invalid %s storage: %s", v->name,
                       kn_encoding_name(s->encoding), why);
    }
    size_t bytes;
    kn_shape_bytes(&v->shape, KN_F32, &bytes); /* checked by the caller */
    float *decoded = malloc(bytes ? bytes : 1);
    if (!decoded)
        return kn_fail(KILN_ERR_NOMEM, "out of memory checking the storage of '%s'", v->name);
    kn_storage_decode(s, decoded);
    bool same = memcmp(decoded, v->data, bytes) == 0;
    free(decoded);
    if (!same)
        return kn_fail(KILN_ERR_INVALID_ARG, "value '%s' changed after it was quantized: its data is no "
                       "longer what its %s storage decodes to (drop the storage with kn_value_drop_storage, "
                       "or quantize it again)", v->name, kn_encoding_name(s->encoding));
    return KILN_OK;
}

static kiln_status check_value(const kn_graph *g, int id) {
    const kn_value *v = &g->values[id];
    KN_TRY(check_string(v->name, "a value name"));
    if (kn_kiln_kind_code(v->kind) == KN_KILN_NONE)
        return kn_fail(KILN_ERR_INVALID_ARG, "value '%s' has kind %d", v->name, (int)v->kind);
    if (v->dtype == KN_STRING)
        return kn_fail(KILN_ERR_UNSUPPORTED, "value '%s' is a string tensor: .kiln files do not store "
                       "strings (keep the model as .onnx)", v->name);
    if (kn_kiln_dtype_code(v->dtype) == KN_KILN_NONE)
        return kn_fail(KILN_ERR_INVALID_ARG, "value '%s' has dtype %d", v->name, (int)v->dtype);
    bool has_data = kn_kiln_is_initializer(v->kind);
    KN_TRY(check_shape(&v->shape, has_data, v->name));
    size_t bytes;
    if (has_data && !kn_shape_bytes(&v->shape, v->dtype, &bytes))
        return kn_fail(KILN_ERR_INVALID_ARG, "value '%s': its size overflows", v->name);
    if (has_data && !v->data)
        return kn_fail(KILN_ERR_INVALID_ARG, "initializer '%s' has no data", v->name);
    return v->storage ? check_storage(v) : KILN_OK;
}

static kiln_status check_attr(const kn_node *n, const kn_attr *a) {
    KN_TRY(check_string(a->name, "an attribute name"));
    if (kn_kiln_attr_code(a->type) == KN_KILN_NONE)
        return kn_fail(KILN_ERR_INVALID_ARG, "node '%s': attribute '%s' has type %d", n->name, a->name,
                       (int)a->type);
    if (a->type == KN_ATTR_INTS && (a->n_ints < 0 || a->n_ints > KN_MAX_ATTR_INTS))
        return kn_fail(KILN_ERR_INVALID_ARG, "node '%s': attribute '%s' has %d ints", n->name, a->name,
                       a->n_ints);
    if (a->type == KN_ATTR_STRING)
        KN_TRY(check_string(a->s, "a string attribute"));
    return KILN_OK;
}

/* Ids in range, and the graph in topological order: each activation is produced by exactly one node,
 * before any node reads it. */
static kiln_status check_node(const kn_graph *g, int index) {
    const kn_node *n = &g->nodes[index];
    KN_TRY(check_string(n->name, "a node name"));
    if (!n->op || !n->op->name)
        return kn_fail(KILN_ERR_INVALID_ARG, "node '%s' has no op", n->name);
    if (n->n_in < 0 || n->n_out < 0 || n->n_attrs < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "node '%s' has a negative count", n->name);
    for (int i = 0; i < n->n_in; i++) {
        int id = n->in[i];
        if (id < -1 || id >= g->n_values)
            return kn_fail(KILN_ERR_INVALID_ARG, "node '%s': input %d is value %d of %d", n->name, i, id,
                           g->n_values);
        if (id >= 0 && g->values[id].kind == KN_VALUE_ACT &&
            (g->values[id].producer < 0 || g->values[id].producer >= index))
            return kn_fail(KILN_ERR_INVALID_ARG, "node '%s': input '%s' is not produced by an earlier node",
                           n->name, g->values[id].name);
    }
    for (int i = 0; i < n->n_out; i++) {
        int id = n->out[i];
        if (id < 0 || id >= g->n_values)
            return kn_fail(KILN_ERR_INVALID_ARG, "node '%s': output %d is value %d of %d", n->name, i, id,
                           g->n_values);
        if (g->values[id].kind != KN_VALUE_ACT || g->values[id].producer != index)
            return kn_fail(KILN_ERR_INVALID_ARG, "node '%s': output '%s' is not an activation it produces",
                           n->name, g->values[id].name);
    }
    for (int i = 0; i < n->n_attrs; i++)
        KN_TRY(check_attr(n, &n->attrs[i]));
    return KILN_OK;
}

static kiln_status check_graph_io(const kn_graph *g) {
    if (g->n_inputs < 0 || g->n_inputs > KN_GRAPH_MAX_IO || g->n_outputs < 0 || g->n_outputs > KN_GRAPH_MAX_IO)
        return kn_fail(KILN_ERR_INVALID_ARG, "graph has %d inputs and %d outputs; at most %d each",
                       g->n_inputs, g->n_outputs, KN_GRAPH_MAX_IO);
    for (int i = 0; i < g->n_inputs; i++)
        if (g->inputs[i] < 0 || g->inputs[i] >= g->n_values || g->values[g->inputs[i]].kind != KN_VALUE_INPUT)
            return kn_fail(KILN_ERR_INVALID_ARG, "graph input %d is not an input value", i);
    for (int i = 0; i < g->n_outputs; i++)
        if (g->outputs[i] < 0 || g->outputs[i] >= g->n_values)
            return kn_fail(KILN_ERR_INVALID_ARG, "graph output %d is value %d of %d", i, g->outputs[i],
                           g->n_values);
    return KILN_OK;
}

static kiln_status check_metadata(const kn_graph *g) {
    if (g->n_classes < 0 || (g->n_classes > 0 && !g->class_names))
        return kn_fail(KILN_ERR_INVALID_ARG, "graph has %d class names but no names", g->n_classes);
    for (int i = 0; i < g->n_classes; i++)
        KN_TRY(check_string(g->class_names[i], "a class name"));
    if (g->n_norm < 0 || (g->n_norm > 0 && (!g->input_mean || !g->input_std)))
        return kn_fail(KILN_ERR_INVALID_ARG, "graph has n_norm %lld but no mean/std", (long long)g->n_norm);
    if (g->n_meta < 0 || (g->n_meta > 0 && !g->meta))
        return kn_fail(KILN_ERR_INVALID_ARG, "graph has %d metadata entries but no entries", g->n_meta);
    for (int i = 0; i < g->n_meta; i++) {
        KN_TRY(check_string(g->meta[i].key, "a metadata key"));
        KN_TRY(check_string(g->meta[i].value, "a metadata value"));
    }
    return KILN_OK;
}

static kiln_status check_graph(const kn_graph *g) {
    if (g->n_values < 0 || g->n_nodes < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "graph has %d values and %d nodes", g->n_values, g->n_nodes);
    for (int i = 0; i < g->n_values; i++)
        KN_TRY(check_value(g, i));
    for (int i = 0; i < g->n_nodes; i++)
        KN_TRY(check_node(g, i));
    KN_TRY(check_graph_io(g));
    return check_metadata(g);
}

static kiln_status check_extras(const kn_named_tensor *extras, int n_extras) {
    if (n_extras < 0 || (n_extras > 0 && !extras))
        return kn_fail(KILN_ERR_INVALID_ARG, "%d extra tensors but no array", n_extras);
    for (int i = 0; i < n_extras; i++) {
        const kn_named_tensor *t = &extras[i];
        KN_TRY(check_string(t->name, "an extra tensor name"));
        KN_TRY(check_shape(&t->shape, true, t->name));
        size_t bytes;
        if (!kn_shape_bytes(&t->shape, KN_F32, &bytes))
            return kn_fail(KILN_ERR_INVALID_ARG, "extra tensor '%s': its size overflows", t->name);
        if (!t->data && bytes > 0)
            return kn_fail(KILN_ERR_INVALID_ARG, "extra tensor '%s' has no data", t->name);
    }
    return KILN_OK;
}

/* ---- serialising the small sections ---------------------------------------------------------------- */

/* A growing byte buffer. `failed` remembers an allocation failure, so serialisers put field after field
 * and the caller checks once at the end. */
typedef struct kn_bytes {
    unsigned char *p;
    size_t n, cap;
    bool failed;
} kn_bytes;

static void put(kn_bytes *b, const void *src, size_t n) {
    if (b->failed)
        return;
    if (b->cap - b->n < n) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->n < n) {
            if (!kn_size_mul(cap, 2, &cap)) {
                b->failed = true;
                return;
            }
        }
        unsigned char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, src, n);
    b->n += n;
}

/* Fixed-width fields: the host is little-endian (kiln_file_layout.h), so memory order is file order. */
static void put_u8(kn_bytes *b, uint8_t v) { put(b, &v, 1); }
static void put_u16(kn_bytes *b, uint16_t v) { put(b, &v, 2); }
static void put_u32(kn_bytes *b, uint32_t v) { put(b, &v, 4); }
static void put_i32(kn_bytes *b, int32_t v) { put(b, &v, 4); }
static void put_u64(kn_bytes *b, uint64_t v) { put(b, &v, 8); }
static void put_i64(kn_bytes *b, int64_t v) { put(b, &v, 8); }
static void put_f32(kn_bytes *b, float v) { put(b, &v, 4); }

/* A string is its u32 byte length, then its bytes, without a terminating NUL. */
static void put_str(kn_bytes *b, const char *s) {
    size_t n = strlen(s);
    put_u32(b, (uint32_t)n);
    put(b, s, n);
}

static void put_attr(kn_bytes *b, const kn_attr *a) {
    put_str(b, a->name);
    put_u8(b, (uint8_t)kn_kiln_attr_code(a->type));
    switch (a->type) {
    case KN_ATTR_INT: put_i64(b, a->i); break;
    case KN_ATTR_FLOAT: put_f32(b, a->f); break;
    case KN_ATTR_INTS:
        put_u32(b, (uint32_t)a->n_ints);
        for (int k = 0; k < a->n_ints; k++)
            put_i64(b, a->ints[k]);
        break;
    case KN_ATTR_STRING: put_str(b, a->s); break;
    }
}

static void put_graph_section(kn_bytes *b, const kn_graph *g) {
    put_u32(b, (uint32_t)g->n_values);
    for (int i = 0; i < g->n_values; i++) {
        const kn_value *v = &g->values[i];
        put_str(b, v->name);
        put_u8(b, (uint8_t)kn_kiln_kind_code(v->kind));
        put_u8(b, (uint8_t)kn_kiln_dtype_code(v->dtype));
        put_u8(b, (uint8_t)v->shape.ndim);
        for (int d = 0; d < v->shape.ndim; d++)
            put_i64(b, v->shape.d[d]);
    }
    put_u32(b, (uint32_t)g->n_nodes);
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        put_str(b, n->op->name);
        put_str(b, n->name);
        put_u32(b, (uint32_t)n->n_in);
        for (int k = 0; k < n->n_in; k++)
            put_i32(b, n->in[k]);
        put_u32(b, (uint32_t)n->n_out);
        for (int k = 0; k < n->n_out; k++)
            put_i32(b, n->out[k]);
        put_u32(b, (uint32_t)n->n_attrs);
        for (int k = 0; k < n->n_attrs; k++)
            put_attr(b, &n->attrs[k]);
    }
    put_u32(b, (uint32_t)g->n_inputs);
    for (int i = 0; i < g->n_inputs; i++)
        put_i32(b, g->inputs[i]);
    put_u32(b, (uint32_t)g->n_outputs);
    for (int i = 0; i < g->n_outputs; i++)
        put_i32(b, g->outputs[i]);
}

static void put_meta_section(kn_bytes *b, const kn_graph *g) {
    put_u32(b, (uint32_t)g->n_classes);
    for (int i = 0; i < g->n_classes; i++)
        put_str(b, g->class_names[i]);
    put_u64(b, (uint64_t)g->n_norm);
    for (int64_t i = 0; i < g->n_norm; i++)
        put_f32(b, g->input_mean[i]);
    for (int64_t i = 0; i < g->n_norm; i++)
        put_f32(b, g->input_std[i]);
    put_u32(b, (uint32_t)g->n_meta);
    for (int i = 0; i < g->n_meta; i++) {
        put_str(b, g->meta[i].key);
        put_str(b, g->meta[i].value);
    }
}

/* One tensor-table entry (KN_KILN_TENSOR_ENTRY_BYTES): which value, extra or nothing (an aux tensor)
 * `target` is, how its elements are stored and where; axis, block and aux mean what docs/format.md says
 * for the encoding, and are -1, 0 and NONE for the plain ones. */
typedef struct kn_entry_out {
    uint32_t target, encoding;
    uint8_t flags;
    kn_shape shape;
    int32_t axis;
    uint32_t block;
    uint32_t aux[4];
} kn_entry_out;

static void put_tensor_entry(kn_bytes *b, const kn_entry_out *e, uint64_t offset, uint64_t bytes) {
    put_u32(b, e->target);
    put_u16(b, (uint16_t)e->encoding);
    put_u8(b, (uint8_t)e->shape.ndim);
    put_u8(b, e->flags);
    for (int d = 0; d < KN_KILN_ENTRY_DIMS; d++)
        put_i64(b, d < e->shape.ndim ? e->shape.d[d] : 0);
    put_u64(b, offset);
    put_u64(b, bytes);
    put_i32(b, e->axis);
    put_u32(b, e->block);
    for (int k = 0; k < 4; k++)
        put_u32(b, e->aux[k]);
}

/* ---- the data sections ----------------------------------------------------------------------------- */

/* A tensor's bytes inside a data section, each starting at the next 64-byte boundary. */
typedef struct kn_blob {
    const void *data;
    size_t bytes;
    uint64_t offset; /* from the start of the data section */
} kn_blob;

/* Places the blobs one after the other. */
static void blobs_layout(kn_blob *blobs, int n) {
    uint64_t end = 0;
    for (int i = 0; i < n; i++) {
        blobs[i].offset = kn_kiln_align(end);
        end = blobs[i].offset + blobs[i].bytes;
    }
}

static const unsigned char kn_zeros[KN_KILN_ALIGN];

static uint32_t blobs_crc(const kn_blob *blobs, int n) {
    uint32_t crc = 0;
    uint64_t pos = 0;
    for (int i = 0; i < n; i++) {
        crc = kn_crc32(crc, kn_zeros, (size_t)(blobs[i].offset - pos));
        crc = kn_crc32(crc, blobs[i].data, blobs[i].bytes);
        pos = blobs[i].offset + blobs[i].bytes;
    }
    return crc;
}

/* ---- the whole file -------------------------------------------------------------------------------- */

typedef struct kn_section_out {
    uint32_t kind;
    const kn_bytes *bytes; /* a serialised section, or NULL for a data section made of: */
    const kn_blob *blobs;
    int n_blobs;
    uint64_t offset, size;
    uint32_t crc;
} kn_section_out;

enum { KN_KILN_WRITER_SECTIONS = 6 };

typedef struct kn_plan {
    kn_bytes graph, meta, tensors, extras; /* the small sections */
    kn_blob *data_blobs, *extra_blobs;     /* (n_data_blobs), (n_extras) */
    kn_entry_out *entries;                 /* (n_data_blobs) the model's tensor table, blob k for entry k */
    int n_data_blobs;
    kn_section_out sections[KN_KILN_WRITER_SECTIONS];
    int n_sections;
    kn_bytes head; /* header + section directory */
    uint64_t file_bytes;
} kn_plan;

static void plan_free(kn_plan *plan) {
    free(plan->graph.p);
    free(plan->meta.p);
    free(plan->tensors.p);
    free(plan->extras.p);
    free(plan->data_blobs);
    free(plan->entries);
    free(plan->extra_blobs);
    free(plan->head.p);
}

static void plan_add_section(kn_plan *plan, uint32_t kind, const kn_bytes *bytes, const kn_blob *blobs,
                             int n_blobs) {
    kn_section_out *s = &plan->sections[plan->n_sections++];
    s->kind = kind;
    s->bytes = bytes;
    s->blobs = blobs;
    s->n_blobs = n_blobs;
}

/* Tensor-table entries a value takes: one, plus the aux entries of a compact storage. */
static int entries_of(const kn_storage *s) {
    if (!s)
        return 1;
    if (kn_encoding_is_affine(s->encoding))
        return 2 + (s->zero_point != NULL);
    if (s->encoding == KN_ENC_CODEBOOK)
        return 2;
    return 1 + (s->values ? entries_of(s->values) : 0);
}

/* Appends an entry and the blob of its bytes; returns the entry's index. */
static uint32_t add_entry(kn_plan *plan, uint32_t target, uint32_t encoding, const kn_shape *shape,
                          const void *data, size_t bytes) {
    int k = plan->n_data_blobs++;
    plan->entries[k] = (kn_entry_out){target, encoding, 0, *shape, -1, 0,
                                      {KN_KILN_NONE, KN_KILN_NONE, KN_KILN_NONE, KN_KILN_NONE}};
    plan->data_blobs[k] = (kn_blob){.data = data, .bytes = bytes};
    return (uint32_t)k;
}

/* A compact storage: its main entry, followed by its aux entries (scales, zero points, centroids, the
 * sparse values and theirs). */
static uint32_t add_storage(kn_plan *plan, uint32_t target, const kn_storage *s) {
    uint32_t k = add_entry(plan, target, kn_kiln_encoding_code(s->encoding), &s->shape, s->payload,
                           s->payload_bytes);
    plan->entries[k].axis = s->axis;
    if (kn_storage_rows_share_bytes(s))
        plan->entries[k].flags = KN_KILN_FLAG_PACKED_CONTIGUOUS;
    if (kn_encoding_is_affine(s->encoding)) {
        kn_shape scale_shape = kn_storage_scale_shape(s);
        size_t groups = (size_t)kn_storage_group_count(s);
        bool is_unsigned = s->encoding == KN_ENC_AFFINE_U8 || s->encoding == KN_ENC_AFFINE_I1;
        plan->entries[k].block = (uint32_t)s->block;
        plan->entries[k].aux[0] = add_entry(plan, KN_KILN_NONE, KN_KILN_DT_F32, &scale_shape, s->scale,
                                            groups * sizeof(float));
        if (s->zero_point)
            plan->entries[k].aux[1] = add_entry(plan, KN_KILN_NONE, is_unsigned ? KN_KILN_DT_U8 : KN_KILN_DT_I8,
                                                &scale_shape, s->zero_point, groups);
    } else if (s->encoding == KN_ENC_CODEBOOK) {
        int64_t channels = s->axis >= 0 ? s->shape.d[s->axis] : 1;
        kn_shape table = s->axis >= 0 ? kn_shape_of(2, (int64_t[]){channels, s->k}) : kn_shape_of(1, &s->k);
        plan->entries[k].block = (uint32_t)s->bits;
        plan->entries[k].aux[2] = add_entry(plan, KN_KILN_NONE, KN_KILN_DT_F32, &table, s->centroids,
                                            (size_t)(channels * s->k) * sizeof(float));
    } else if (s->values) {
        plan->entries[k].aux[0] = add_storage(plan, KN_KILN_NONE, s->values);
    }
    return k;
}

/* The initializers' bytes, in value order, and the tensor table that points at them. */
static kiln_status plan_model_tensors(kn_plan *plan, const kn_graph *g) {
    size_t n_entries = 1;
    for (int i = 0; i < g->n_values; i++)
        if (kn_kiln_is_initializer(g->values[i].kind))
            n_entries += (size_t)entries_of(g->values[i].storage);
    plan->data_blobs = malloc(sizeof(kn_blob) * n_entries);
    plan->entries = malloc(sizeof(kn_entry_out) * n_entries);
    if (!plan->data_blobs || !plan->entries)
        return kn_fail(KILN_ERR_NOMEM, "out of memory listing %zu tensors", n_entries);
    for (int i = 0; i < g->n_values; i++) {
        const kn_value *v = &g->values[i];
        if (!kn_kiln_is_initializer(v->kind))
            continue;
        if (v->storage) {
            add_storage(plan, (uint32_t)i, v->storage);
            continue;
        }
        size_t bytes;
        kn_shape_bytes(&v->shape, v->dtype, &bytes); /* cannot overflow: check_value */
        add_entry(plan, (uint32_t)i, kn_kiln_dtype_code(v->dtype), &v->shape, v->data, bytes);
    }
    blobs_layout(plan->data_blobs, plan->n_data_blobs);
    put_u32(&plan->tensors, (uint32_t)plan->n_data_blobs);
    put_u32(&plan->tensors, KN_KILN_TENSOR_ENTRY_BYTES);
    for (int k = 0; k < plan->n_data_blobs; k++)
        put_tensor_entry(&plan->tensors, &plan->entries[k], plan->data_blobs[k].offset, plan->data_blobs[k].bytes);
    return KILN_OK;
}

/* The extras: their own tensor table (target = extra index) followed by their names. */
static kiln_status plan_extra_tensors(kn_plan *plan, const kn_named_tensor *extras, int n_extras) {
    plan->extra_blobs = malloc(sizeof(kn_blob) * (size_t)n_extras);
    if (!plan->extra_blobs)
        return kn_fail(KILN_ERR_NOMEM, "out of memory listing %d extra tensors", n_extras);
    for (int i = 0; i < n_extras; i++) {
        plan->extra_blobs[i].data = extras[i].data;
        kn_shape_bytes(&extras[i].shape, KN_F32, &plan->extra_blobs[i].bytes); /* checked: check_extras */
    }
    blobs_layout(plan->extra_blobs, n_extras);
    put_u32(&plan->extras, (uint32_t)n_extras);
    put_u32(&plan->extras, KN_KILN_TENSOR_ENTRY_BYTES);
    for (int i = 0; i < n_extras; i++) {
        kn_entry_out e = {(uint32_t)i, KN_KILN_DT_F32, 0, extras[i].shape, -1, 0,
                          {KN_KILN_NONE, KN_KILN_NONE, KN_KILN_NONE, KN_KILN_NONE}};
        put_tensor_entry(&plan->extras, &e, plan->extra_blobs[i].offset, plan->extra_blobs[i].bytes);
    }
    for (int i = 0; i < n_extras; i++)
        put_str(&plan->extras, extras[i].name);
    return KILN_OK;
}

/* Offsets, sizes and checksums of every section, then the header and directory that record them. */
static kiln_status plan_place_sections(kn_plan *plan) {
    uint64_t pos = KN_KILN_HEADER_BYTES + (uint64_t)plan->n_sections * KN_KILN_DIR_ENTRY_BYTES;
    for (int i = 0; i < plan->n_sections; i++) {
        kn_section_out *s = &plan->sections[i];
        if (s->bytes) {
            s->size = s->bytes->n;
            s->crc = kn_crc32(0, s->bytes->p, s->bytes->n);
        } else {
            s->size = s->n_blobs ? s->blobs[s->n_blobs - 1].offset + s->blobs[s->n_blobs - 1].bytes : 0;
            s->crc = blobs_crc(s->blobs, s->n_blobs);
        }
        s->offset = kn_kiln_align(pos);
        if (!kn_size_add(s->offset, s->size, &pos))
            return kn_fail(KILN_ERR_NOMEM, "the file would be larger than the address space");
    }
    plan->file_bytes = pos;

    kn_bytes directory = {0};
    for (int i = 0; i < plan->n_sections; i++) {
        const kn_section_out *s = &plan->sections[i];
        put_u32(&directory, s->kind);
        put_u32(&directory, s->crc);
        put_u64(&directory, s->offset);
        put_u64(&directory, s->size);
        put_u64(&directory, 0); /* reserved */
    }
    kn_bytes *h = &plan->head;
    put(h, KN_KILN_MAGIC, KN_KILN_MAGIC_BYTES);
    put_u16(h, KN_KILN_FORMAT_MAJOR);
    put_u16(h, KN_KILN_FORMAT_MINOR);
    put_u32(h, (uint32_t)plan->n_sections);
    put_u64(h, plan->file_bytes);
    put_u32(h, directory.failed ? 0 : kn_crc32(0, directory.p, directory.n));
    put(h, kn_zeros, KN_KILN_AT_HEADER_CRC - KN_KILN_AT_RESERVED);
    if (!h->failed)
        put_u32(h, kn_crc32(0, h->p, KN_KILN_AT_HEADER_CRC));
    put(h, directory.p, directory.n);
    bool failed = h->failed || directory.failed;
    free(directory.p);
    if (failed)
        return kn_fail(KILN_ERR_NOMEM, "out of memory writing the file header");
    return KILN_OK;
}

static kiln_status plan_build(kn_plan *plan, const kn_graph *g, const kn_named_tensor *extras, int n_extras) {
    memset(plan, 0, sizeof *plan);
    KN_TRY(check_graph(g));
    KN_TRY(check_extras(extras, n_extras));
    put_graph_section(&plan->graph, g);
    put_meta_section(&plan->meta, g);
    KN_TRY(plan_model_tensors(plan, g));
    plan_add_section(plan, KN_KILN_SEC_GRAPH, &plan->graph, NULL, 0);
    plan_add_section(plan, KN_KILN_SEC_META, &plan->meta, NULL, 0);
    plan_add_section(plan, KN_KILN_SEC_TENSORS, &plan->tensors, NULL, 0);
    plan_add_section(plan, KN_KILN_SEC_DATA, NULL, plan->data_blobs, plan->n_data_blobs);
    if (n_extras > 0) {
        KN_TRY(plan_extra_tensors(plan, extras, n_extras));
        plan_add_section(plan, KN_KILN_SEC_EXTRAS, &plan->extras, NULL, 0);
        plan_add_section(plan, KN_KILN_SEC_EXTRA_DATA, NULL, plan->extra_blobs, n_extras);
    }
    if (plan->graph.failed || plan->meta.failed || plan->tensors.failed || plan->extras.failed)
        return kn_fail(KILN_ERR_NOMEM, "out of memory serialising the graph");
    return plan_place_sections(plan);
}

/* ---- emitting the bytes ---------------------------------------------------------------------------- */

/* Where the bytes go: a buffer of exactly the file size, or a file descriptor. */
typedef struct kn_out {
    unsigned char *buf;
    int fd;
    uint64_t pos;
} kn_out;

static kiln_status out_write(kn_out *o, const void *src, size_t n) {
    if (o->buf) {
        if (n)
            memcpy(o->buf + o->pos, src, n);
        o->pos += n;
        return KILN_OK;
    }
    return kn_file_write_all(o->fd, src, n, &o->pos);
}

static kiln_status out_pad_to(kn_out *o, uint64_t offset) {
    return out_write(o, kn_zeros, (size_t)(offset - o->pos)); /* always < KN_KILN_ALIGN */
}

static kiln_status plan_emit(const kn_plan *plan, kn_out *o) {
    KN_TRY(out_write(o, plan->head.p, plan->head.n));
    for (int i = 0; i < plan->n_sections; i++) {
        const kn_section_out *s = &plan->sections[i];
        KN_TRY(out_pad_to(o, s->offset));
        if (s->bytes) {
            KN_TRY(out_write(o, s->bytes->p, s->bytes->n));
            continue;
        }
        for (int k = 0; k < s->n_blobs; k++) {
            KN_TRY(out_pad_to(o, s->offset + s->blobs[k].offset));
            KN_TRY(out_write(o, s->blobs[k].data, s->blobs[k].bytes));
        }
    }
    return KILN_OK;
}

kiln_status kn_kiln_save_buffer(const kn_graph *g, const kn_named_tensor *extras, int n_extras, void **buf,
                                size_t *size) {
    *buf = NULL;
    *size = 0;
    kn_plan plan;
    kiln_status st = plan_build(&plan, g, extras, n_extras);
    if (st == KILN_OK && plan.file_bytes > SIZE_MAX)
        st = kn_fail(KILN_ERR_NOMEM, "a %llu-byte .kiln file does not fit in memory",
                     (unsigned long long)plan.file_bytes);
    kn_out out = {.fd = -1};
    if (st == KILN_OK) {
        out.buf = malloc((size_t)plan.file_bytes);
        if (!out.buf)
            st = kn_fail(KILN_ERR_NOMEM, "out of memory for a %llu-byte .kiln buffer",
                         (unsigned long long)plan.file_bytes);
    }
    if (st == KILN_OK)
        st = plan_emit(&plan, &out);
    plan_free(&plan);
    if (st != KILN_OK) {
        free(out.buf);
        return st;
    }
    *buf = out.buf;
    *size = (size_t)out.pos;
    return KILN_OK;
}

/* ---- the file, replaced atomically ----------------------------------------------------------------- */

static kiln_status emit_to_fd(int fd, void *plan) {
    kn_out out = {.fd = fd};
    return plan_emit(plan, &out);
}

kiln_status kn_kiln_save(const char *path, const kn_graph *g, const kn_named_tensor *extras, int n_extras) {
    kn_plan plan;
    kiln_status st = plan_build(&plan, g, extras, n_extras);
    if (st == KILN_OK)
        st = kn_file_write_atomic(path, emit_to_fd, &plan);
    plan_free(&plan);
    if (st != KILN_OK)
        kn_error_prefix("%s: ", path);
    return st;
}
