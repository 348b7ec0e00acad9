/* Shared between the ONNX importer's files — tensor decoding (onnx_tensor.c), the graph walk
 * (onnx_import.c), the per-op rewrites (onnx_ops.c) — and the name maps the exporter uses too. */
#ifndef KN_ONNX_INTERNAL_H
#define KN_ONNX_INTERNAL_H

#include <stdbool.h>

#include "core/graph.h"
#include "onnx.pb-c.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the ONNX reader copies little-endian raw_data as it is; big-endian hosts need byte swaps"
#endif

/* The opsets of the default domain kiln reads. */
enum { KN_ONNX_MIN_OPSET = 1, KN_ONNX_MAX_OPSET = 21 };

/* ---- name -> id maps (name_map.c), for the importer and the exporter ---- */

/* Open addressing over strings that the caller keeps alive; zero-initialized is empty. */
typedef struct kn_name_map {
    const char **keys;
    int *ids;
    size_t cap, count;
} kn_name_map;

/* Whether `key` is in the map, and then its id in *id (id may be NULL). */
bool kn_name_map_find(const kn_name_map *m, const char *key, int *id);
/* The id of `key`, or -1 when absent: for maps whose ids are never negative. */
int kn_name_map_get(const kn_name_map *m, const char *key);
/* Adds key -> id; the key is not copied, and must not be in the map yet. */
kiln_status kn_name_map_put(kn_name_map *m, const char *key, int id);
void kn_name_map_free(kn_name_map *m);

/* ---- tensors (onnx_tensor.c) ---- */

/* The kiln dtype of an ONNX TensorProto.DataType when kiln stores that type as it is. */
bool kn_onnx_dtype_to_kiln(int32_t onnx_type, kn_dtype *out);
/* "FLOAT", "DOUBLE", ... or "type 42". Static storage, or `buf` for unknown codes. */
const char *kn_onnx_dtype_name(int32_t onnx_type, char *buf, size_t size);

/* The dtype and shape a TensorProto decodes to. widen: f16 becomes f32 (for initializers, whose
 * values kiln computes with in f32); otherwise it is kept. Other types keep their own dtype. */
kiln_status kn_onnx_tensor_header(const Onnx__TensorProto *t, bool widen, kn_dtype *dtype,
                                  kn_shape *shape);
/* Checks that t carries exactly numel elements (raw_data bytes, a typed field's count, or its external
 * file's span), without reading or allocating them: done before anything is allocated for a tensor,
 * so that a header declaring a huge shape over a few bytes of data costs nothing. */
kiln_status kn_onnx_tensor_check_data(const Onnx__TensorProto *t, const char *base_dir, int64_t numel);
/* Decodes the elements (raw_data, the typed field, or external data relative to base_dir) into dst,
 * which holds numel elements of `dtype` as kn_onnx_tensor_header gave. A STRING tensor (string_data
 * only, no NUL bytes) becomes kn_string elements whose long strings are copied into `strings` (the
 * graph's arena; NULL refuses strings). */
kiln_status kn_onnx_tensor_fill(const Onnx__TensorProto *t, const char *base_dir, kn_dtype dtype,
                                int64_t numel, void *dst, kn_arena *strings);

/* Reads a whole file into malloc'ed memory (free() it). */
kiln_status kn_onnx_read_whole_file(const char *path, unsigned char **bytes, size_t *size);
/* Cuts `path` (a writable copy) down to its directory in place: "a/b.onnx" -> "a", "b.onnx" -> "."
 * (path must have room for 2 bytes). Returns path. */
char *kn_onnx_dirname(char *path);

/* ---- the importer (onnx_import.c) ---- */

typedef struct kn_onnx_importer {
    kn_graph *g;
    const char *base_dir;    /* external data directory; NULL: none allowed */
    int64_t opset;           /* of the default domain */
    bool for_training;       /* mark trainable initializers as PARAM (see kn_onnx_import_for_training) */
    kn_name_map values;      /* every ONNX value name imported so far -> kiln value id */
    kn_name_map produced;    /* every node output name in the file -> ONNX node index */
    unsigned char *weights;  /* (weights_cap) 1 for a value holding a file's initializer (or, when
                                importing for training, an Identity copy of one) */
    int weights_cap;
    bool shapes_known;       /* every value so far has its shape for the probe input dims */
    int n_made;              /* values the rewrites created, for unique names */
} kn_onnx_importer;

/* The ONNX node being imported and its place in the file, for messages. */
typedef struct kn_onnx_node {
    const Onnx__NodeProto *proto;
    int index;        /* in the file's node list */
    const char *name; /* the node's name, or "<op_type>_<index>" when it has none */
} kn_onnx_node;

/* The kiln value id of ONNX value `name`; -1 when absent. "" is an omitted optional input (-2). */
int kn_onnx_value(kn_onnx_importer *im, const char *name);
/* Adds an activation value named `name` for a node output; -1 on failure (duplicate, memory). */
int kn_onnx_add_output(kn_onnx_importer *im, const kn_onnx_node *n, const char *name);
/* Adds a fresh activation between rewritten nodes, named "<base>/<suffix>" made unique. */
int kn_onnx_add_temp(kn_onnx_importer *im, const char *base, const char *suffix);
/* Adds a constant value named from `base` and `suffix` holding a copy of `data`. */
int kn_onnx_add_const(kn_onnx_importer *im, const char *base, const char *suffix, kn_dtype dtype,
                      const kn_shape *shape, const void *data);
/* Whether value `id` holds one of the file's initializers: the values fine-tuning may train. */
bool kn_onnx_is_weight(const kn_onnx_importer *im, int id);
kiln_status kn_onnx_set_weight(kn_onnx_importer *im, int id);

/* Binds ONNX name `name` to an existing kiln value (Identity). */
kiln_status kn_onnx_bind(kn_onnx_importer *im, const char *name, int value);

/* To be called right after kn_graph_add_node and the node's attributes: infers the node's shapes and,
 * when every input is a constant, computes it once and turns its outputs into constants (the node is
 * removed again). */
kiln_status kn_onnx_finish_node(kn_onnx_importer *im, int node);

/* Copies an ONNX attribute onto kiln node `node` (int, float, ints, string). */
kiln_status kn_onnx_copy_attr(kn_onnx_importer *im, const kn_onnx_node *n, int node,
                              const Onnx__AttributeProto *a);
/* The attribute named `name`, or NULL. */
const Onnx__AttributeProto *kn_onnx_attr(const Onnx__NodeProto *p, const char *name);
/* The attribute's type, inferred from its fields for files older than IR version 2. */
Onnx__AttributeProto__AttributeType kn_onnx_attr_type(const Onnx__AttributeProto *a);

/* ---- per-op rewrites (onnx_ops.c) ---- */

/* Imports one node: applies its rewrite, or maps it 1:1 onto the kiln op of the same name. */
kiln_status kn_onnx_import_node(kn_onnx_importer *im, const kn_onnx_node *n);

#endif
