/* String tensors through the public C API: tests/ref/data/strings.onnx (tests/ref/make_string_fixtures.py)
 * casts numbers of five types to STRING and strings to four types, moves strings through Reshape and
 * Identity, and reads string constants. Every cast is held to tests/ref/data/strings_cast.txt, numpy's
 * astype (ONNX's reference Cast): the text of each number, the number of each text. Then what a caller may
 * get wrong: a NULL string, a wrong byte count, kiln_session_input_data on a string input, text that is no
 * number, an input never set; and what kiln refuses: strings into an op that computes (Add), a .kiln file
 * of a string model. ONNX export keeps the strings (export, import, export: the same bytes).
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/graph.h"
#include "format/kiln_file.h"
#include "format/onnx/onnx_export.h"
#include "format/onnx/onnx_import.h"
#include "kiln/kiln.h"
#include "kiln/train.h"

#define DATA KILN_SOURCE_DIR "/tests/ref/data/"
#define MAX_CASES 64

static const char long_a[] = "a string of more than thirty-two bytes, which kiln copies aside";
static const char utf8[] = "\xc3\xa9t\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80";

/* The cases of one direction and type, from strings_cast.txt. */
typedef struct case_list {
    int n;
    char value[MAX_CASES][80];    /* to: the number (hex bits for floats); from: the text */
    char expected[MAX_CASES][80]; /* to: the text; from: the number */
} case_list;

static const char *const types[] = {"f32", "f64", "f16", "i64", "bool"};
enum { N_TYPES = 5 };
static case_list to_text[N_TYPES], from_text[N_TYPES];

static int type_index(const char *name) {
    for (int i = 0; i < N_TYPES; i++)
        if (strcmp(types[i], name) == 0)
            return i;
    return -1;
}

static bool read_cases(void) {
    FILE *f = fopen(DATA "strings_cast.txt", "r");
    if (!f)
        return false;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#')
            continue;
        line[strcspn(line, "\n")] = '\0';
        char *dir = strtok(line, "\t"), *type = strtok(NULL, "\t"), *value = strtok(NULL, "\t"),
             *expected = strtok(NULL, "\t");
        int t = type ? type_index(type) : -1;
        if (!dir || t < 0 || !value || !expected)
            continue;
        case_list *l = strcmp(dir, "to") == 0 ? &to_text[t] : &from_text[t];
        if (l->n == MAX_CASES)
            continue;
        snprintf(l->value[l->n], sizeof l->value[0], "%s", value);
        snprintf(l->expected[l->n], sizeof l->expected[0], "%s", expected);
        l->n++;
    }
    fclose(f);
    return true;
}

static int input(kiln_session *s, const char *name) { return kiln_session_input_index(s, name); }
static int output(kiln_session *s, const char *name) { return kiln_session_output_index(s, name); }

/* The number cases of type t as the bytes of that type. */
static void numbers_of(int t, const case_list *l, unsigned char *out) {
    for (int i = 0; i < l->n; i++) {
        unsigned long long bits = strtoull(l->value[i], NULL, t <= 2 ? 16 : 10);
        long long v = strtoll(l->value[i], NULL, 10);
        switch (t) {
        case 0: { uint32_t b = (uint32_t)bits; memcpy(out + 4 * i, &b, 4); break; }
        case 1: memcpy(out + 8 * i, &bits, 8); break;
        case 2: { uint16_t b = (uint16_t)bits; memcpy(out + 2 * i, &b, 2); break; }
        case 3: memcpy(out + 8 * i, &v, 8); break;
        default: out[i] = (unsigned char)v; break;
        }
    }
}

static const kiln_dtype dtype_of[N_TYPES] = {KILN_DTYPE_F32, KILN_DTYPE_F64, KILN_DTYPE_F16, KILN_DTYPE_I64,
                                             KILN_DTYPE_BOOL};

/* Output "n_<type>" element i against the expected number (floats: bits, or both NaN). */
static void check_number(int t, const void *data, int i, const char *text, const char *expected) {
    if (t == 0) {
        float got, want;
        uint32_t bits = (uint32_t)strtoul(expected, NULL, 16);
        memcpy(&want, &bits, 4);
        memcpy(&got, (const char *)data + 4 * i, 4);
        CHECK_MSG((isnan(got) && isnan(want)) || memcmp(&got, &want, 4) == 0, "\"%s\" to f32: %.9g, numpy %.9g",
                  text, got, want);
    } else if (t == 1) {
        double got, want;
        unsigned long long bits = strtoull(expected, NULL, 16);
        memcpy(&want, &bits, 8);
        memcpy(&got, (const char *)data + 8 * i, 8);
        CHECK_MSG((isnan(got) && isnan(want)) || memcmp(&got, &want, 8) == 0, "\"%s\" to f64: %.17g, numpy %.17g",
                  text, got, want);
    } else if (t == 3) {
        int64_t got;
        memcpy(&got, (const char *)data + 8 * i, 8);
        CHECK_MSG(got == strtoll(expected, NULL, 10), "\"%s\" to i64: %" PRId64 ", expected %s", text, got, expected);
    } else {
        int got = ((const unsigned char *)data)[i];
        CHECK_MSG(got == atoi(expected), "\"%s\" to bool: %d, expected %s", text, got, expected);
    }
}

/* Every case of strings_cast.txt in one run of strings.onnx. */
static void check_casts(kiln_session *s) {
    static unsigned char numbers[N_TYPES][MAX_CASES * 8];
    const char *texts[N_TYPES][MAX_CASES];
    for (int t = 0; t < N_TYPES; t++) {
        char name[16];
        snprintf(name, sizeof name, "x_%s", types[t]);
        int64_t n = to_text[t].n;
        CHECK_OK(kiln_session_resize_input(s, input(s, name), 1, &n));
        if (t == 2)
            continue; /* no f16 from strings in the model */
        snprintf(name, sizeof name, "t_%s", types[t]);
        n = from_text[t].n;
        CHECK_OK(kiln_session_resize_input(s, input(s, name), 1, &n));
    }
    int64_t text_dims[2] = {2, 3};
    CHECK_OK(kiln_session_resize_input(s, input(s, "text"), 2, text_dims));
    for (int t = 0; t < N_TYPES; t++) {
        char name[16];
        snprintf(name, sizeof name, "x_%s", types[t]);
        numbers_of(t, &to_text[t], numbers[t]);
        CHECK_OK(kiln_session_set_input(s, input(s, name), dtype_of[t], numbers[t],
                                        (size_t)to_text[t].n * kiln_dtype_size(dtype_of[t])));
        if (t == 2)
            continue;
        for (int i = 0; i < from_text[t].n; i++)
            texts[t][i] = from_text[t].value[i];
        snprintf(name, sizeof name, "t_%s", types[t]);
        CHECK_OK(kiln_session_set_input(s, input(s, name), KILN_DTYPE_STRING, texts[t],
                                        (size_t)from_text[t].n * sizeof(char *)));
    }
    char mutable_text[80];
    snprintf(mutable_text, sizeof mutable_text, "%s", long_a);
    const char *text[6] = {mutable_text, "", utf8, "short", long_a + 1, "z"};
    CHECK_OK(kiln_session_set_input(s, input(s, "text"), KILN_DTYPE_STRING, text, sizeof text));
    mutable_text[0] = 'X'; /* kiln copied it */
    CHECK_OK(kiln_session_run(s));
    for (int t = 0; t < N_TYPES; t++) {
        char name[16];
        snprintf(name, sizeof name, "s_%s", types[t]);
        const void *data = NULL;
        size_t bytes = 0;
        kiln_dtype dtype = KILN_DTYPE_F32;
        CHECK_OK(kiln_session_output(s, output(s, name), &data, &bytes));
        CHECK_OK(kiln_session_output_dtype(s, output(s, name), &dtype));
        CHECK(dtype == KILN_DTYPE_STRING && bytes == (size_t)to_text[t].n * sizeof(char *));
        const char *const *got = data;
        for (int i = 0; got && i < to_text[t].n; i++)
            CHECK_MSG(strcmp(got[i], to_text[t].expected[i]) == 0, "%s %s to text: \"%s\", numpy \"%s\"",
                      types[t], to_text[t].value[i], got[i], to_text[t].expected[i]);
        if (t == 2)
            continue;
        snprintf(name, sizeof name, "n_%s", types[t]);
        CHECK_OK(kiln_session_output(s, output(s, name), &data, &bytes));
        CHECK(bytes == (size_t)from_text[t].n * kiln_dtype_size(dtype_of[t]));
        for (int i = 0; data && i < from_text[t].n; i++)
            check_number(t, data, i, from_text[t].value[i], from_text[t].expected[i]);
    }
}

/* Strings through Reshape + Identity (check_casts set them) keep every byte, long ones (kept outside the
 * element) included; a later set replaces them, and the constants come out as the file holds them. */
static void check_movement(kiln_session *s) {
    const void *data = NULL;
    size_t bytes = 0;
    int ndim = 0;
    int64_t shape[KILN_MAX_DIMS];
    CHECK_OK(kiln_session_output_shape(s, output(s, "moved"), &ndim, shape));
    CHECK(ndim == 1 && shape[0] == 6);
    CHECK_OK(kiln_session_output(s, output(s, "moved"), &data, &bytes));
    const char *const *moved = data;
    CHECK(bytes == 6 * sizeof(char *));
    CHECK(moved && strcmp(moved[0], long_a) == 0 && strcmp(moved[1], "") == 0 && strcmp(moved[2], utf8) == 0 &&
          strcmp(moved[3], "short") == 0 && strcmp(moved[4], long_a + 1) == 0 && strcmp(moved[5], "z") == 0);

    const char *again[6] = {"b", long_a + 2, "c", "d", "e", long_a + 3};
    CHECK_OK(kiln_session_set_input(s, input(s, "text"), KILN_DTYPE_STRING, again, sizeof again));
    CHECK_OK(kiln_session_run(s));
    CHECK_OK(kiln_session_output(s, output(s, "moved"), &data, &bytes));
    moved = data;
    CHECK(moved && strcmp(moved[1], long_a + 2) == 0 && strcmp(moved[5], long_a + 3) == 0 &&
          strcmp(moved[0], "b") == 0);

    CHECK_OK(kiln_session_output(s, output(s, "words_out"), &data, &bytes));
    const char *const *words = data;
    static const char long_word[] = "a string longer than kiln keeps in place: \xc3\xa9t\xc3\xa9, \xe6\x97\xa5\xe6"
                                    "\x9c\xac, \xf0\x9f\x98\x80 and more";
    CHECK(words && bytes == 3 * sizeof(char *) && strcmp(words[0], long_word) == 0 &&
          strcmp(words[1], "short") == 0 && strcmp(words[2], "") == 0);
    CHECK_OK(kiln_session_output(s, output(s, "const_num"), &data, &bytes));
    CHECK(data && bytes == sizeof(float) && *(const float *)data == 2.5f);
}

/* What a caller can get wrong gives an error, never a crash. */
static void check_misuse(const kiln_model *model) {
    kiln_session *s = NULL;
    CHECK_OK(kiln_session_create(model, NULL, &s));
    if (!s)
        return;
    int t = input(s, "t_f32");
    int64_t n = 2;
    CHECK_OK(kiln_session_resize_input(s, t, 1, &n));
    const char *with_null[2] = {"1", NULL};
    CHECK(kiln_session_set_input(s, t, KILN_DTYPE_STRING, with_null, sizeof with_null) == KILN_ERR_INVALID_ARG);
    CHECK(strstr(kiln_last_error(), "NULL") != NULL);
    const char *two[2] = {"1", "2"};
    CHECK(kiln_session_set_input(s, t, KILN_DTYPE_STRING, two, 40 * 2) == KILN_ERR_SHAPE); /* internal size */
    CHECK(kiln_session_set_input(s, t, KILN_DTYPE_F32, (float[2]){1, 2}, 8) == KILN_ERR_INVALID_ARG);
    void *buffer = NULL;
    CHECK(kiln_session_input_data(s, t, &buffer, NULL) == KILN_ERR_UNSUPPORTED && buffer == NULL);

    /* Inputs never set read as empty strings (the elements' bytes are never taken for pointers): a run
     * fails on the text "". Every input is at its first shape, one element (text: two). */
    n = 1;
    CHECK_OK(kiln_session_resize_input(s, t, 1, &n));
    CHECK(kiln_session_run(s) == KILN_ERR_INVALID_ARG);
    CHECK_MSG(strstr(kiln_last_error(), "\"\"") && strstr(kiln_last_error(), "is not a number"), "%s",
              kiln_last_error());

    const char *ones[2] = {"1", "1"}, *not_number[1] = {"Hello World!"};
    for (int i = 0; i < kiln_session_input_count(s); i++) {
        kiln_dtype dtype;
        int ndim;
        int64_t dims[KILN_MAX_DIMS];
        CHECK_OK(kiln_session_input_dtype(s, i, &dtype));
        CHECK_OK(kiln_session_input_shape(s, i, &ndim, dims));
        size_t count = ndim == 2 ? 2 : 1;
        if (dtype == KILN_DTYPE_STRING)
            CHECK_OK(kiln_session_set_input(s, i, dtype, i == t ? not_number : ones, count * sizeof(char *)));
    }
    CHECK(kiln_session_run(s) == KILN_ERR_INVALID_ARG);
    CHECK_MSG(strstr(kiln_last_error(), "Hello World!") != NULL, "%s", kiln_last_error());
    kiln_session_free(s);
}

/* ONNX export writes string constants as string_data and string inputs, outputs and Casts as STRING:
 * importing the file again gives the same strings, and exporting that the same bytes. */
static void check_export(void) {
    kn_graph g, back;
    CHECK_OK(kn_onnx_import_file(DATA "strings.onnx", &g));
    void *first = NULL, *second = NULL;
    size_t first_size = 0, second_size = 0;
    CHECK_OK(kn_onnx_export_buffer(&g, &first, &first_size));
    CHECK_OK(kn_onnx_import_buffer(first, first_size, NULL, &back));
    int a = kn_graph_find_value(&g, "words_out"), b = kn_graph_find_value(&back, "words_out"); /* folded */
    CHECK(a >= 0 && b >= 0 && back.values[b].dtype == KN_STRING && kn_shape_numel(&back.values[b].shape) == 3);
    for (int i = 0; a >= 0 && b >= 0 && i < 3; i++)
        CHECK(strcmp(kn_string_get((const kn_string *)g.values[a].data + i),
                     kn_string_get((const kn_string *)back.values[b].data + i)) == 0);
    int text = kn_graph_find_value(&back, "text");
    CHECK(text >= 0 && back.values[text].dtype == KN_STRING);
    CHECK_OK(kn_onnx_export_buffer(&back, &second, &second_size));
    CHECK(first_size == second_size && first && second && memcmp(first, second, first_size) == 0);
    free(first);
    free(second);
    kn_graph_free(&back);
    kn_graph_free(&g);
}

/* Only Cast and the ops that move data take strings; .kiln files hold none. */
static void check_refusals(void) {
    kiln_model *model = NULL;
    kiln_session *s = NULL;
    CHECK_OK(kiln_model_load_onnx(DATA "strings_add.onnx", &model)); /* shapes are checked when bound */
    CHECK(kiln_session_create(model, NULL, &s) == KILN_ERR_UNSUPPORTED && !s);
    CHECK_MSG(strstr(kiln_last_error(), "string tensor") && strstr(kiln_last_error(), "Add"), "%s",
              kiln_last_error());
    kiln_model_free(model);

    kn_graph g;
    CHECK_OK(kn_onnx_import_file(DATA "strings.onnx", &g));
    void *bytes = NULL;
    size_t size = 0;
    CHECK(kn_kiln_save_buffer(&g, NULL, 0, &bytes, &size) == KILN_ERR_UNSUPPORTED && !bytes);
    CHECK_MSG(strstr(kiln_last_error(), "string tensor") && strstr(kiln_last_error(), ".kiln"), "%s",
              kiln_last_error());
    free(bytes);
    kn_graph_free(&g);
}

int main(void) {
    CHECK(strcmp(kiln_dtype_name(KILN_DTYPE_STRING), "string") == 0 &&
          kiln_dtype_size(KILN_DTYPE_STRING) == sizeof(const char *));
    CHECK(read_cases());
    CHECK(to_text[0].n > 20 && from_text[0].n > 10 && to_text[2].n > 5 && from_text[4].n > 5);
    kiln_model *model = NULL;
    CHECK_OK(kiln_model_load_onnx(DATA "strings.onnx", &model));
    if (!model)
        return check_finish();
    for (int threads = 1; threads <= 2; threads++) {
        kiln_session_options *options = kiln_session_options_create();
        kiln_session_options_set_threads(options, threads);
        kiln_session *s = NULL;
        CHECK_OK(kiln_session_create(model, options, &s));
        kiln_session_options_free(options);
        if (s) {
            check_casts(s);
            check_movement(s);
        }
        kiln_session_free(s);
    }
    check_misuse(model);
    kiln_model_free(model);
    check_export();
    check_refusals();
    return check_finish();
}
