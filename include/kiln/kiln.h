/* kiln — public runtime API.
 *
 * Load a model, create a session, set its inputs, run, read its outputs:
 *
 *     kiln_model *model;
 *     kiln_session *session;
 *     if (kiln_model_load_file("net.kiln", &model) != KILN_OK ||
 *         kiln_session_create(model, NULL, &session) != KILN_OK)
 *         fprintf(stderr, "%s\n", kiln_last_error());
 *     kiln_model_free(model);                  // the session keeps what it needs
 *     kiln_session_set_input(session, 0, KILN_DTYPE_F32, pixels, sizeof pixels);
 *     kiln_session_run(session);
 *     const void *scores;
 *     kiln_session_output(session, 0, &scores, NULL);
 *     kiln_session_free(session);
 *
 * Errors: every function that can fail returns a kiln_status; on failure a one-line message with context
 * (file, input name, shapes, node) is readable from kiln_last_error() on the same thread. Bad arguments
 * (NULL handles, wrong names, shapes, dtypes or byte sizes) give an error, never a crash.
 *
 * Ownership is stated on every function. Handles are opaque. A model is immutable once loaded and may be
 * shared by any number of sessions on any threads; a session must be used by one thread at a time.
 */
#ifndef KILN_KILN_H
#define KILN_KILN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_VERSION_MAJOR 0
#define KILN_VERSION_MINOR 1
#define KILN_VERSION_PATCH 0
#define KILN_VERSION_STRING "0.1.0"

/* Marks the functions of the public API: the only symbols the shared library exports (everything else
 * is built with hidden visibility). */
#ifndef KILN_API
#define KILN_API __attribute__((visibility("default")))
#endif

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
KILN_API const char *kiln_version(void);

/* Short name of a status code ("invalid argument"); static storage. */
KILN_API const char *kiln_status_name(kiln_status status);

/* The message of the last failure on the calling thread; "" when none.
 * The pointer stays valid until the next kiln call on this thread. */
KILN_API const char *kiln_last_error(void);

/* ---- tensors ------------------------------------------------------------------------------------ */

#define KILN_MAX_DIMS 8

typedef enum kiln_dtype {
    KILN_DTYPE_F32 = 0,
    KILN_DTYPE_I64,
    KILN_DTYPE_I32,
    KILN_DTYPE_U8,
    KILN_DTYPE_I8,
    KILN_DTYPE_BOOL,  /* one byte, 0 or 1 */
    KILN_DTYPE_F16,   /* IEEE half */
    KILN_DTYPE_F64,
    KILN_DTYPE_I16,
    KILN_DTYPE_U16,
    KILN_DTYPE_U32,
    KILN_DTYPE_U64,
    KILN_DTYPE_BF16,  /* bfloat16: the top 16 bits of an f32 */
    KILN_DTYPE_STRING /* text: one `const char *` per element (NUL-terminated), see below */
} kiln_dtype;

/* String tensors (ONNX's STRING) cross the API as arrays of pointers, one NUL-terminated string per
 * element: kiln_session_set_input takes `const char *const strings[n]` with bytes = n * sizeof(char *)
 * and COPIES every string (the caller keeps its array and strings); kiln_session_output hands out
 * `const char *const *` (n pointers) owned by the session, valid until the next kiln_session_run,
 * kiln_session_set_input of a string input, resize or kiln_session_free. kiln_session_input_data
 * refuses string inputs (KILN_ERR_UNSUPPORTED). An element the last set did not write reads as "" or a
 * string set before, never as stray bytes. Only Cast / CastLike (to and from every numeric type)
 * and ops that move data without reading it compute with strings (docs/onnx.md, "Strings"). */

/* "f32"; "?" for a value outside the enum. Static storage. */
KILN_API const char *kiln_dtype_name(kiln_dtype dtype);
/* Bytes of one element as the API passes it (sizeof(const char *) for KILN_DTYPE_STRING); 0 for a value
 * outside the enum. */
KILN_API size_t kiln_dtype_size(kiln_dtype dtype);

/* ---- models ------------------------------------------------------------------------------------- */

typedef struct kiln_model kiln_model;

/* Loads a .kiln file. The weights are used in place from a private read-only mapping of the file (the
 * file may be replaced on disk afterwards; the mapping keeps the old contents). The graph is optimized
 * for inference once, here. On success *model is a new model owned by the caller (kiln_model_free); on
 * failure *model is NULL. */
KILN_API kiln_status kiln_model_load_file(const char *path, kiln_model **model);

/* Loads a .kiln file image from memory. Everything is COPIED: the caller may free `data` as soon as this
 * returns. Ownership of *model as for kiln_model_load_file. */
KILN_API kiln_status kiln_model_load_memory(const void *data, size_t size, kiln_model **model);

/* Releases the caller's reference. Sessions created from the model hold their own reference, so the
 * model may be freed while they live; its memory goes with the last of them. NULL is fine. */
KILN_API void kiln_model_free(kiln_model *model);

/* Class names of the model's output classes (saved by training): count, then name i (storage owned by
 * the model, valid while it lives); NULL when index is out of range. */
KILN_API int kiln_model_class_count(const kiln_model *model);
KILN_API const char *kiln_model_class_name(const kiln_model *model, int index);

/* Input preprocessing saved with the model: the model expects (x - mean[i]) / std[i] per feature (vector
 * input) or per channel (image input). Returns the count and points *mean and *std at arrays owned by
 * the model; returns 0 (and NULLs) when the model has none. mean/std may be NULL. */
KILN_API int64_t kiln_model_input_norm(const kiln_model *model, const float **mean, const float **std);

/* A free-form metadata value (training provenance ...) or NULL; storage owned by the model. */
KILN_API const char *kiln_model_metadata(const kiln_model *model, const char *key);

/* Number of scalar trainable parameters. */
KILN_API int64_t kiln_model_param_count(const kiln_model *model);

/* ---- session options ---------------------------------------------------------------------------- */

typedef struct kiln_session_options kiln_session_options;

/* New options with defaults: all cores, optimized graph, no profiling. Owned by the caller
 * (kiln_session_options_free); NULL when out of memory. */
KILN_API kiln_session_options *kiln_session_options_create(void);
/* Threads the session's runs use; 0 = all cores (default). Negative: KILN_ERR_INVALID_ARG. */
KILN_API kiln_status kiln_session_options_set_threads(kiln_session_options *options, int threads);
/* 1 (default): run the optimized graph (folded constants, BatchNorm folded into weights, fused
 * activations); 0: run the graph as it was saved. Outputs agree to float rounding. */
KILN_API kiln_status kiln_session_options_set_optimize(kiln_session_options *options, int enabled);
/* 1: time every node of every run (kiln_session_profile_*); 0 (default): no timing. */
KILN_API kiln_status kiln_session_options_set_profiling(kiln_session_options *options, int enabled);
/* The most bytes of activations and op scratch a session may plan (at any input shapes); 0 (default):
 * no limit. A plan that needs more fails with KILN_ERR_NOMEM before allocating, naming both figures:
 * a way to bound what an untrusted model can make the program allocate. */
KILN_API kiln_status kiln_session_options_set_memory_limit(kiln_session_options *options, size_t bytes);
/* NULL is fine. */
KILN_API void kiln_session_options_free(kiln_session_options *options);

/* ---- sessions ----------------------------------------------------------------------------------- */

typedef struct kiln_session kiln_session;

/* A session runs the model: it holds the input, activation and output buffers of one run (memory
 * planned once per set of input shapes, nothing allocated while running). options may be NULL
 * (defaults) and is copied: the caller may free it right after. Inputs start at the model's shapes with
 * every OPEN dimension at 1. A dimension is open when the model leaves it so: a symbolic ONNX dimension
 * (dim_param, or none given), stored as -1 in a .kiln file, and the first dimension (the batch) of a
 * model built from a spec or trained by kiln, or saved before .kiln format 1.2. A fixed dimension keeps
 * its value: an ONNX model exported with a batch of 2 runs at 2, and a 1-D input is not a batch. When
 * no dimension but the first of an input of rank 2 or more is open, the memory is planned here, so that
 * a model that cannot run fails here; otherwise it is planned at the first call that needs it (resize
 * the open dimensions first).
 * On success *session is new and owned by the caller (kiln_session_free); it holds a reference to the
 * model. On failure *session is NULL. */
KILN_API kiln_status kiln_session_create(const kiln_model *model, const kiln_session_options *options,
                                kiln_session **session);
/* Frees the session and its buffers (every pointer it handed out). NULL is fine. */
KILN_API void kiln_session_free(kiln_session *session);

/* Graph inputs and outputs, in the model's order. Counts are 0 for a NULL session. */
KILN_API int kiln_session_input_count(const kiln_session *session);
KILN_API int kiln_session_output_count(const kiln_session *session);
/* Name of input / output `index`, storage owned by the model; NULL (and an error) when out of range. */
KILN_API const char *kiln_session_input_name(const kiln_session *session, int index);
KILN_API const char *kiln_session_output_name(const kiln_session *session, int index);
/* Index of the input / output called `name`; -1 (and an error naming the known ones) when none is. */
KILN_API int kiln_session_input_index(const kiln_session *session, const char *name);
KILN_API int kiln_session_output_index(const kiln_session *session, const char *name);

/* The current shape and dtype of an input or output: *ndim dimensions written into dims[KILN_MAX_DIMS].
 * Output shapes and dtypes follow from the input shapes (after kiln_session_resize_input they are those
 * of the next run), so the output getters plan the memory first when a resize is pending. */
KILN_API kiln_status kiln_session_input_shape(const kiln_session *session, int index, int *ndim, int64_t *dims);
KILN_API kiln_status kiln_session_output_shape(kiln_session *session, int index, int *ndim, int64_t *dims);
KILN_API kiln_status kiln_session_input_dtype(const kiln_session *session, int index, kiln_dtype *dtype);
KILN_API kiln_status kiln_session_output_dtype(kiln_session *session, int index, kiln_dtype *dtype);

/* Sets the shape of input `index` for the following runs. Only the dimensions the model leaves open
 * (see kiln_session_create) may change, to 0 or more; the rank and the fixed dimensions must match the
 * model's (KILN_ERR_SHAPE otherwise). Set the input's data again after a resize that changes it. The memory is planned again at the next
 * call that needs it, only when a shape really changed; then pointers from kiln_session_input_data and
 * kiln_session_output become invalid. An error from the new shapes (an op rejecting them) is reported by
 * the call that plans. */
KILN_API kiln_status kiln_session_resize_input(kiln_session *session, int index, int ndim, const int64_t *dims);

/* Copies `bytes` bytes of `dtype` data from the caller's buffer into input `index`. The dtype must be the
 * input's and bytes its exact size at the current shape (resize first to change the batch): otherwise
 * KILN_ERR_INVALID_ARG / KILN_ERR_SHAPE, and nothing is copied. The caller keeps its buffer. A string
 * input takes an array of `const char *` (see KILN_DTYPE_STRING). */
KILN_API kiln_status kiln_session_set_input(kiln_session *session, int index, kiln_dtype dtype, const void *data,
                                   size_t bytes);

/* The session's own buffer of input `index`, to be written in place instead of copying: *data and
 * *bytes (may be NULL). Owned by the session; valid until a resize that changes a shape, or
 * kiln_session_free. Its contents persist across runs. */
KILN_API kiln_status kiln_session_input_data(kiln_session *session, int index, void **data, size_t *bytes);

/* Runs the model on the current inputs. Allocates nothing (after the first run at a given set of input
 * shapes, which plans the memory; a session keeps the plans of the four sets of input shapes, and
 * shape values below, it used last, so going back to one of them plans and allocates nothing; a string
 * output's table of pointers grows on the first run that needs it larger). Uses the session's thread
 * count.
 *
 * Shapes computed from input VALUES: a model may read a small input (rank 0 or 1, at most 64 elements:
 * a Reshape target, Slice bounds, Resize scales or sizes, Range bounds, Pad pads, axes ...) to size what
 * follows. Such a session plans when those inputs are set (set them before asking for output shapes),
 * and plans again only when their values change to values it keeps no plan for: a run after such a
 * change may allocate; a run with the same values, or values of a kept plan (and every run of a model
 * whose shapes do not depend on values), does not. A value
 * that asks for a negative or too large shape, or for more elements than the data has, fails the run
 * (or the output getter) with an error naming the node. */
KILN_API kiln_status kiln_session_run(kiln_session *session);

/* Output `index` of the last run: *data points into the session (owned by it) and stays valid until the
 * next kiln_session_run, resize or kiln_session_free; *bytes (may be NULL) is its size. Before any run:
 * KILN_ERR_INVALID_ARG. A string output is an array of `const char *` (see KILN_DTYPE_STRING). */
KILN_API kiln_status kiln_session_output(const kiln_session *session, int index, const void **data, size_t *bytes);

/* ---- memory and profile ------------------------------------------------------------------------- */

typedef struct kiln_memory_info {
    size_t arena_bytes;     /* inputs, activations and outputs as planned: the arena (the peak) */
    size_t naive_bytes;     /* the same with one buffer per tensor, no reuse */
    size_t workspace_bytes; /* op scratch (convolution column buffers) */
    size_t weight_bytes;    /* the model's weights and constants, shared by all its sessions */
} kiln_memory_info;

/* Memory at the current input shapes (planning them first if needed). */
KILN_API kiln_status kiln_session_memory(kiln_session *session, kiln_memory_info *info);

typedef enum kiln_profile_by {
    KILN_PROFILE_BY_NODE, /* one entry per node, in run order */
    KILN_PROFILE_BY_OP    /* one entry per op ("Conv+Relu" for a fused one), in order of first use */
} kiln_profile_by;

typedef struct kiln_profile_entry {
    const char *name;  /* node name, or the op as for `op`; owned by the session */
    const char *op;    /* "Conv", "Conv+Relu" ... */
    int nodes;         /* nodes in this entry: 1 per node, the count per op */
    int64_t runs;      /* profiled runs summed */
    double seconds;    /* total time over those runs */
    int64_t flops;     /* per run at the current shapes; INT64_MAX when the count overflows */
} kiln_profile_entry;

/* Entries of the profile collected since the session was created or last reset (needs the profiling
 * option; without it times are 0). Count is 0 for a NULL session. */
KILN_API int kiln_session_profile_count(const kiln_session *session, kiln_profile_by by);
KILN_API kiln_status kiln_session_profile_entry(const kiln_session *session, kiln_profile_by by, int index,
                                       kiln_profile_entry *entry);
KILN_API void kiln_session_profile_reset(kiln_session *session);

#ifdef __cplusplus
}
#endif
#endif
