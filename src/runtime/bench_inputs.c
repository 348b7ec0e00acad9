/* What timing a model needs from the runtime, shared by `kiln bench` and the compression summary: inputs
 * filled the same way, and the same median. */
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/status.h"
#include "runtime/runtime.h"

/* A string input holds "0" in every element, as the others hold zeros (their floats aside): strings are
 * copied in with kiln_session_set_input, never written in place. */
static kiln_status fill_text_zero(kiln_session *s, int i) {
    int ndim;
    int64_t dims[KILN_MAX_DIMS], n = 1;
    KN_TRY(kiln_session_input_shape(s, i, &ndim, dims));
    for (int k = 0; k < ndim; k++)
        n *= dims[k]; /* a planned shape: at most 2^62 elements */
    size_t bytes;
    const char **text = NULL;
    if (!kn_size_mul((size_t)n, sizeof *text, &bytes) || !(text = malloc(bytes ? bytes : 1)))
        return kn_fail(KILN_ERR_NOMEM, "no memory for the %lld strings of input '%s'", (long long)n,
                       kiln_session_input_name(s, i));
    for (int64_t k = 0; k < n; k++)
        text[k] = "0";
    kiln_status st = kiln_session_set_input(s, i, KILN_DTYPE_STRING, text, bytes);
    free(text);
    return st;
}

kiln_status kn_session_fill_uniform(kiln_session *s, int64_t batch) {
    kn_rng rng = kn_rng_seeded(1);
    for (int i = 0; i < kiln_session_input_count(s); i++) {
        int ndim;
        int64_t dims[KILN_MAX_DIMS];
        kiln_dtype dtype;
        void *data;
        size_t bytes;
        KN_TRY(kiln_session_input_shape(s, i, &ndim, dims));
        if (ndim < 1)
            return kn_fail(KILN_ERR_SHAPE, "input '%s' is a scalar: it has no batch dimension",
                           kiln_session_input_name(s, i));
        dims[0] = batch;
        KN_TRY(kiln_session_resize_input(s, i, ndim, dims));
        KN_TRY(kiln_session_input_dtype(s, i, &dtype));
        if (dtype == KILN_DTYPE_STRING) {
            KN_TRY(fill_text_zero(s, i));
            continue;
        }
        KN_TRY(kiln_session_input_data(s, i, &data, &bytes));
        memset(data, 0, bytes);
        for (size_t k = 0; dtype == KILN_DTYPE_F32 && k < bytes / sizeof(float); k++)
            ((float *)data)[k] = kn_rng_uniform(&rng);
    }
    return KILN_OK;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double kn_sort_median(double *v, int64_t n) {
    if (n < 1)
        return 0;
    qsort(v, (size_t)n, sizeof(double), compare_doubles);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}
