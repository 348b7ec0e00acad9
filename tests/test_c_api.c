/* The public C API (include/kiln/kiln.h) as an embedding program uses it.
 *
 * 1. A small CNN saved with kn_kiln_save, loaded from the file (mmap) and from memory (the buffer freed right
 *    after loading), gives the training tape's outputs at batch 1, 7 and 64 through one session; the
 *    session outlives the caller's model handle.
 * 2. Names, indices, shapes, dtypes, class names, input normalisation, metadata, memory figures, and
 *    writing an input in place.
 * 3. Misuse: NULL handles, unknown names, bad indices, wrong shapes, dtypes and byte sizes, outputs read
 *    before a run, missing and corrupt files — each gives its status and a message saying what was
 *    wrong, and nothing crashes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/status.h"
#include "format/kiln_file.h"
#include "kiln/kiln.h"
#include "support/runtime_models.h"

static const char *const class_names[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                            "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

/* Expects `status` from a call and a message containing `needle`. */
#define CHECK_ERROR(call, status, needle)                                                              \
    do {                                                                                               \
        kiln_status got_ = (call);                                                                     \
        CHECK_MSG(got_ == (status), "%s gave %s (%s)", #call, kiln_status_name(got_), kiln_last_error()); \
        CHECK_MSG(strstr(kiln_last_error(), (needle)) != NULL, "%s: message '%s' lacks '%s'", #call,   \
                  kiln_last_error(), (needle));                                                        \
    } while (0)

/* A small Fashion-MNIST CNN with class names, normalisation and a note, as a training run saves it. */
static const char cnn_spec[] = "input 1 28 28\n"
                               "conv 8 3 stride=2 pad=1\n"
                               "batchnorm\n"
                               "relu\n"
                               "maxpool 2\n"
                               "flatten\n"
                               "dropout 0.2\n"
                               "dense 10\n";

static kiln_status make_cnn(kn_graph *g) {
    KN_TRY(rt_spec_text(cnn_spec, 21, g));
    g->class_names = kn_arena_alloc(&g->arena, sizeof(char *) * 10);
    g->input_mean = kn_arena_alloc(&g->arena, sizeof(float));
    g->input_std = kn_arena_alloc(&g->arena, sizeof(float));
    if (!g->class_names || !g->input_mean || !g->input_std)
        return KILN_ERR_NOMEM;
    for (int i = 0; i < 10; i++)
        g->class_names[i] = kn_arena_strdup(&g->arena, class_names[i]);
    g->n_classes = 10;
    g->input_mean[0] = 0.286f;
    g->input_std[0] = 0.353f;
    g->n_norm = 1;
    return kn_graph_set_meta(g, "trained_by", "test_c_api");
}

/* Runs `session` on batch 1, 7 and 64 and compares output 0 with the tape on graph `ref`; exact
 * when `exact`, else within 1e-5 of the output's largest magnitude. */
static void check_against_tape(const char *label, kiln_session *session, kn_graph *ref, bool exact) {
    static const int64_t batches[] = {1, 7, 64};
    for (int b = 0; b < 3; b++) {
        int64_t batch = batches[b], sample = 28 * 28, n_ref = 0;
        float *x = malloc(sizeof(float) * (size_t)(batch * sample)), *y_ref = NULL;
        rt_fill(x, batch * sample, 100 + (uint64_t)batch);
        CHECK_OK(kiln_session_resize_input(session, 0, 4, (int64_t[]){batch, 1, 28, 28}));
        size_t bytes_in = sizeof(float) * (size_t)(batch * sample);
        CHECK_OK(kiln_session_set_input(session, 0, KILN_DTYPE_F32, x, bytes_in));
        CHECK_OK(kiln_session_run(session));
        const void *y = NULL;
        size_t bytes = 0;
        CHECK_OK(kiln_session_output(session, 0, &y, &bytes));
        CHECK_OK(rt_tape_forward(ref, batch, x, &y_ref, &n_ref));
        if (y && y_ref && bytes == sizeof(float) * (size_t)n_ref) {
            double diff = rt_max_diff(y, y_ref, n_ref), scale = rt_max_abs(y_ref, n_ref);
            printf("%s batch %2lld: max diff vs tape %.3g (|y| %.3g)\n", label, (long long)batch, diff, scale);
            CHECK_MSG(exact ? diff == 0 : diff <= 1e-5 * scale, "%s batch %lld: diff %g", label,
                      (long long)batch, diff);
        } else {
            CHECK_MSG(false, "%s batch %lld: %zu output bytes for %lld reference floats", label,
                      (long long)batch, bytes, (long long)n_ref);
        }
        free(x);
        free(y_ref);
    }
}

static void test_load_and_run(const char *path, const void *image, size_t image_size) {
    kn_graph ref;
    CHECK_OK(make_cnn(&ref));

    // From the file, default options (optimized), the caller's model handle dropped at once.
    kiln_model *model = NULL;
    kiln_session *session = NULL;
    CHECK_OK(kiln_model_load_file(path, &model));
    CHECK_OK(kiln_session_create(model, NULL, &session));
    kiln_model_free(model);
    if (session)
        check_against_tape("file, optimized", session, &ref, false);
    kiln_session_free(session);

    // From memory, the image freed before use, unoptimized: the saved graph exactly.
    void *copy = malloc(image_size);
    memcpy(copy, image, image_size);
    CHECK_OK(kiln_model_load_memory(copy, image_size, &model));
    memset(copy, 0xff, image_size);
    free(copy);
    kiln_session_options *options = kiln_session_options_create();
    CHECK_OK(kiln_session_options_set_optimize(options, 0));
    CHECK_OK(kiln_session_options_set_threads(options, 1));
    CHECK_OK(kiln_session_create(model, options, &session));
    kiln_session_options_free(options);
    if (session)
        check_against_tape("memory, as saved", session, &ref, true);
    kiln_session_free(session);
    kiln_model_free(model);
    kn_graph_free(&ref);
}

static void test_introspection(const char *path) {
    kiln_model *model = NULL;
    kiln_session *s = NULL;
    CHECK_OK(kiln_model_load_file(path, &model));
    CHECK_OK(kiln_session_create(model, NULL, &s));
    if (!s) {
        kiln_model_free(model);
        return;
    }
    CHECK(kiln_model_class_count(model) == 10);
    CHECK(kiln_model_class_name(model, 9) && strcmp(kiln_model_class_name(model, 9), "Ankle boot") == 0);
    CHECK(kiln_model_class_name(model, 10) == NULL && strstr(kiln_last_error(), "10 class names"));
    const float *mean = NULL, *std = NULL;
    CHECK(kiln_model_input_norm(model, &mean, &std) == 1 && mean && std);
    CHECK(mean && std && mean[0] == 0.286f && std[0] == 0.353f);
    const char *note = kiln_model_metadata(model, "trained_by");
    CHECK(note && strcmp(note, "test_c_api") == 0);
    CHECK(kiln_model_metadata(model, "absent") == NULL);
    CHECK(kiln_model_param_count(model) == 8 * 9 + 8 + 2 * 8 + 7 * 7 * 8 * 10 + 10);

    CHECK(kiln_session_input_count(s) == 1 && kiln_session_output_count(s) == 1);
    CHECK(strcmp(kiln_session_input_name(s, 0), "input") == 0);
    const char *out_name = kiln_session_output_name(s, 0);
    CHECK(out_name && kiln_session_output_index(s, out_name) == 0);
    CHECK(kiln_session_input_index(s, "input") == 0);
    int ndim = 0;
    int64_t dims[KILN_MAX_DIMS];
    CHECK_OK(kiln_session_input_shape(s, 0, &ndim, dims));
    CHECK(ndim == 4 && dims[0] == 1 && dims[1] == 1 && dims[2] == 28 && dims[3] == 28);
    CHECK_OK(kiln_session_output_shape(s, 0, &ndim, dims));
    CHECK(ndim == 2 && dims[0] == 1 && dims[1] == 10);
    kiln_dtype dtype = KILN_DTYPE_I64;
    CHECK_OK(kiln_session_input_dtype(s, 0, &dtype));
    CHECK(dtype == KILN_DTYPE_F32);
    CHECK_OK(kiln_session_output_dtype(s, 0, &dtype));
    CHECK(dtype == KILN_DTYPE_F32);
    CHECK(strcmp(kiln_dtype_name(KILN_DTYPE_F32), "f32") == 0 && kiln_dtype_size(KILN_DTYPE_I64) == 8);
    CHECK(strcmp(kiln_dtype_name((kiln_dtype)42), "?") == 0 && kiln_dtype_size((kiln_dtype)42) == 0);

    // A resize shows in the output shape before any run.
    CHECK_OK(kiln_session_resize_input(s, 0, 4, (int64_t[]){5, 1, 28, 28}));
    CHECK_OK(kiln_session_output_shape(s, 0, &ndim, dims));
    CHECK(ndim == 2 && dims[0] == 5 && dims[1] == 10);

    // Writing the input in place gives what copying it in gives.
    float x[5 * 784];
    rt_fill(x, 5 * 784, 8);
    void *in = NULL;
    size_t in_bytes = 0;
    CHECK_OK(kiln_session_input_data(s, 0, &in, &in_bytes));
    CHECK(in && in_bytes == sizeof x);
    if (in && in_bytes == sizeof x)
        memcpy(in, x, sizeof x);
    CHECK_OK(kiln_session_run(s));
    const void *y = NULL;
    size_t y_bytes = 0;
    CHECK_OK(kiln_session_output(s, 0, &y, &y_bytes));
    float first[50];
    if (y && y_bytes == sizeof first)
        memcpy(first, y, sizeof first);
    CHECK_OK(kiln_session_set_input(s, 0, KILN_DTYPE_F32, x, sizeof x));
    CHECK_OK(kiln_session_run(s));
    CHECK_OK(kiln_session_output(s, 0, &y, &y_bytes));
    CHECK(y && y_bytes == sizeof first && memcmp(y, first, sizeof first) == 0);

    kiln_memory_info info;
    CHECK_OK(kiln_session_memory(s, &info));
    printf("CNN batch 5 memory: arena %zu bytes (naive %zu), workspace %zu, weights %zu\n", info.arena_bytes,
           info.naive_bytes, info.workspace_bytes, info.weight_bytes);
    CHECK(info.arena_bytes > 0 && info.arena_bytes < info.naive_bytes && info.workspace_bytes > 0 &&
          info.weight_bytes == sizeof(float) * (8 * 9 + 8 + 7 * 7 * 8 * 10 + 10));
    kiln_session_free(s);
    kiln_model_free(model);
}

static void test_misuse(const char *path, const void *image, size_t image_size) {
    kiln_model *model = NULL;
    kiln_session *s = NULL;
    CHECK_OK(kiln_model_load_file(path, &model));
    CHECK_OK(kiln_session_create(model, NULL, &s));
    if (!s) {
        kiln_model_free(model);
        return;
    }
    float x[784] = {0};
    const void *y = NULL;
    int ndim;
    int64_t dims[KILN_MAX_DIMS];

    CHECK_ERROR(kiln_session_output(s, 0, &y, NULL), KILN_ERR_INVALID_ARG, "has not run");
    CHECK(y == NULL);
    CHECK(kiln_session_input_index(s, "pixels") == -1);
    printf("unknown input: %s\n", kiln_last_error());
    CHECK(strstr(kiln_last_error(), "'pixels'") && strstr(kiln_last_error(), "'input'"));
    CHECK(kiln_session_output_index(s, "logits") == -1 && strstr(kiln_last_error(), "'logits'"));
    CHECK(kiln_session_input_name(s, 1) == NULL && strstr(kiln_last_error(), "input 1 does not exist"));
    CHECK(kiln_session_output_name(s, -1) == NULL && strstr(kiln_last_error(), "output -1 does not exist"));

    CHECK_ERROR(kiln_session_set_input(s, 0, KILN_DTYPE_I64, x, sizeof x), KILN_ERR_INVALID_ARG,
                "is f32, got i64");
    CHECK_ERROR(kiln_session_set_input(s, 0, KILN_DTYPE_F32, x, sizeof x - 4), KILN_ERR_SHAPE,
                "takes 3136 bytes, got 3132");
    printf("wrong byte size: %s\n", kiln_last_error());
    CHECK_ERROR(kiln_session_set_input(s, 0, KILN_DTYPE_F32, NULL, sizeof x), KILN_ERR_INVALID_ARG, "NULL");
    CHECK_ERROR(kiln_session_set_input(s, 1, KILN_DTYPE_F32, x, sizeof x), KILN_ERR_INVALID_ARG, "input 1");
    CHECK_ERROR(kiln_session_resize_input(s, 0, 3, (int64_t[]){1, 28, 28}), KILN_ERR_SHAPE,
                "4 dimensions, got 3");
    CHECK_ERROR(kiln_session_resize_input(s, 0, 4, (int64_t[]){2, 1, 27, 28}), KILN_ERR_SHAPE, "fixed at 28");
    printf("wrong shape: %s\n", kiln_last_error());
    CHECK_ERROR(kiln_session_resize_input(s, 0, 4, (int64_t[]){-2, 1, 28, 28}), KILN_ERR_SHAPE, "negative");
    // An empty batch is a shape like any other; this model's Conv refuses it when the session plans.
    CHECK_OK(kiln_session_resize_input(s, 0, 4, (int64_t[]){0, 1, 28, 28}));
    CHECK_ERROR(kiln_session_set_input(s, 0, KILN_DTYPE_F32, x, 0), KILN_ERR_SHAPE, "node 'conv1' (Conv)");
    CHECK_OK(kiln_session_resize_input(s, 0, 4, (int64_t[]){1, 1, 28, 28}));
    CHECK_ERROR(kiln_session_resize_input(s, 0, 4, NULL), KILN_ERR_INVALID_ARG, "dims is NULL");
    CHECK_ERROR(kiln_session_input_shape(s, 0, NULL, dims), KILN_ERR_INVALID_ARG, "NULL");
    CHECK_ERROR(kiln_session_output_dtype(s, 3, &(kiln_dtype){0}), KILN_ERR_INVALID_ARG, "output 3");

    // A run, then a resize: the old output is gone until the next run.
    CHECK_OK(kiln_session_set_input(s, 0, KILN_DTYPE_F32, x, sizeof x));
    CHECK_OK(kiln_session_run(s));
    CHECK_OK(kiln_session_output(s, 0, &y, NULL));
    CHECK_OK(kiln_session_resize_input(s, 0, 4, (int64_t[]){2, 1, 28, 28}));
    CHECK_ERROR(kiln_session_output(s, 0, &y, NULL), KILN_ERR_INVALID_ARG, "has not run");

    // NULL everywhere.
    CHECK(kiln_session_input_count(NULL) == 0 && kiln_session_output_count(NULL) == 0);
    CHECK(kiln_session_input_name(NULL, 0) == NULL && kiln_session_input_index(NULL, "input") == -1);
    CHECK_ERROR(kiln_session_run(NULL), KILN_ERR_INVALID_ARG, "session is NULL");
    CHECK_ERROR(kiln_session_set_input(NULL, 0, KILN_DTYPE_F32, x, sizeof x), KILN_ERR_INVALID_ARG, "NULL");
    CHECK_ERROR(kiln_session_output_shape(NULL, 0, &ndim, dims), KILN_ERR_INVALID_ARG, "NULL");
    CHECK_ERROR(kiln_session_memory(NULL, NULL), KILN_ERR_INVALID_ARG, "NULL");
    kiln_session *none = s;
    CHECK_ERROR(kiln_session_create(NULL, NULL, &none), KILN_ERR_INVALID_ARG, "model is NULL");
    CHECK(none == NULL);
    CHECK_ERROR(kiln_session_create(model, NULL, NULL), KILN_ERR_INVALID_ARG, "session is NULL");
    CHECK_ERROR(kiln_session_options_set_threads(NULL, 2), KILN_ERR_INVALID_ARG, "NULL");
    kiln_session_options *options = kiln_session_options_create();
    CHECK_ERROR(kiln_session_options_set_threads(options, -3), KILN_ERR_INVALID_ARG, "-3");
    kiln_session_options_free(options);
    kiln_session_free(NULL);
    kiln_model_free(NULL);
    kiln_session_options_free(NULL);
    CHECK(kiln_model_class_count(NULL) == 0 && kiln_model_input_norm(NULL, NULL, NULL) == 0);
    CHECK(kiln_session_profile_count(NULL, KILN_PROFILE_BY_OP) == 0);

    // Files.
    kiln_model *bad = NULL;
    CHECK_ERROR(kiln_model_load_file("/nonexistent/model.kiln", &bad), KILN_ERR_IO, "/nonexistent/model.kiln");
    CHECK(bad == NULL);
    printf("missing file: %s\n", kiln_last_error());
    CHECK_ERROR(kiln_model_load_memory(image, image_size / 2, &bad), KILN_ERR_FORMAT, "");
    printf("truncated image: %s\n", kiln_last_error());
    CHECK_ERROR(kiln_model_load_memory("not a model", 11, &bad), KILN_ERR_FORMAT, "");
    CHECK_ERROR(kiln_model_load_memory(NULL, 10, &bad), KILN_ERR_INVALID_ARG, "data is NULL");
    CHECK_ERROR(kiln_model_load_file(path, NULL), KILN_ERR_INVALID_ARG, "model is NULL");
    CHECK(bad == NULL);

    CHECK(strcmp(kiln_version(), KILN_VERSION_STRING) == 0);
    CHECK(strcmp(kiln_status_name(KILN_ERR_SHAPE), "shape mismatch") == 0);
    kiln_session_free(s);
    kiln_model_free(model);
}

/* A memory limit refuses a plan that needs more before allocating it, and lets one that fits run. */
static void test_memory_limit(const char *path) {
    kiln_model *model;
    kiln_session *s = NULL;
    kiln_memory_info memory;
    CHECK_OK(kiln_model_load_file(path, &model));
    CHECK_OK(kiln_session_create(model, NULL, &s));
    CHECK_OK(kiln_session_memory(s, &memory));
    size_t needed = memory.arena_bytes + memory.workspace_bytes;
    kiln_session_free(s);
    kiln_session_options *options = kiln_session_options_create();
    CHECK_OK(kiln_session_options_set_memory_limit(options, needed - 1));
    s = NULL;
    CHECK_ERROR(kiln_session_create(model, options, &s), KILN_ERR_NOMEM, "more than its memory limit");
    printf("memory limit %zu: %s\n", needed - 1, kiln_last_error());
    CHECK(s == NULL);
    CHECK_OK(kiln_session_options_set_memory_limit(options, needed));
    CHECK_OK(kiln_session_create(model, options, &s));
    /* A larger batch needs more than the limit: resizing succeeds, planning for the run refuses. */
    CHECK_OK(kiln_session_resize_input(s, 0, 4, (int64_t[]){8, 1, 28, 28}));
    CHECK_ERROR(kiln_session_run(s), KILN_ERR_NOMEM, "memory limit");
    CHECK_ERROR(kiln_session_options_set_memory_limit(NULL, 1), KILN_ERR_INVALID_ARG, "NULL");
    kiln_session_free(s);
    kiln_session_options_free(options);
    kiln_model_free(model);
}

int main(void) {
    kn_graph g;
    const char *path = "test_c_api_cnn.kiln";
    void *image = NULL;
    size_t image_size = 0;
    CHECK_OK(make_cnn(&g));
    CHECK_OK(kn_kiln_save(path, &g, NULL, 0));
    CHECK_OK(kn_kiln_save_buffer(&g, NULL, 0, &image, &image_size));
    kn_graph_free(&g);
    if (image) {
        test_load_and_run(path, image, image_size);
        test_introspection(path);
        test_misuse(path, image, image_size);
        test_memory_limit(path);
    }
    free(image);
    remove(path);
    return check_finish();
}
