#include "fuzz_input.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char folder[64];

static const char *scratch_folder(void) {
    if (!folder[0]) {
        snprintf(folder, sizeof folder, "/tmp/kiln-fuzz-%d", (int)getpid());
        char command[128];
        snprintf(command, sizeof command, "mkdir -p %s", folder);
        if (system(command) != 0)
            abort();
    }
    return folder;
}

const char *fuzz_write_file(const char *name, const uint8_t *data, size_t size) {
    static char paths[4][256];
    static int next;
    char *path = paths[next++ % 4];
    snprintf(path, 256, "%s/%s", scratch_folder(), name);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size))
        abort();
    fclose(f);
    return path;
}

/* Gives string input i a number's text per element ("1.5e3"), which every Cast from strings reads. */
static void set_numbers_as_text(kiln_session *session, int i) {
    int ndim;
    int64_t dims[KILN_MAX_DIMS], n = 1;
    if (kiln_session_input_shape(session, i, &ndim, dims) != KILN_OK)
        return;
    for (int k = 0; k < ndim; k++)
        n = dims[k] >= 0 && n <= (1 << 20) ? n * dims[k] : 1 << 21;
    const char **text = n <= (1 << 20) ? malloc((size_t)(n ? n : 1) * sizeof *text) : NULL;
    for (int64_t k = 0; text && k < n; k++)
        text[k] = "1.5e3";
    if (text)
        kiln_session_set_input(session, i, KILN_DTYPE_STRING, text, (size_t)n * sizeof *text);
    free(text);
}

void fuzz_run_model(const kiln_model *model) {
    /* 256 MiB of activations and scratch: libFuzzer's 1 GiB limit is for kiln's own bookkeeping. */
    kiln_session_options *options = kiln_session_options_create();
    kiln_session *session;
    kiln_status st = options ? kiln_session_options_set_memory_limit(options, (size_t)256 << 20) : KILN_ERR_NOMEM;
    if (st == KILN_OK)
        st = kiln_session_create(model, options, &session);
    kiln_session_options_free(options);
    if (st != KILN_OK)
        return;
    for (int i = 0; i < kiln_session_input_count(session); i++) {
        void *data;
        size_t bytes;
        kiln_dtype dtype;
        if (kiln_session_input_data(session, i, &data, &bytes) == KILN_OK && data)
            memset(data, 0, bytes);
        else if (kiln_session_input_dtype(session, i, &dtype) == KILN_OK && dtype == KILN_DTYPE_STRING)
            set_numbers_as_text(session, i); /* strings are copied in, not written in place */
    }
    /* A model may legitimately ask for seconds of arithmetic; what is fuzzed is everything up to the
     * run and the run of models of up to 5e6 FLOPs. Under the sanitizers and coverage counters a
     * convolution's im2col costs far more per FLOP than its product: two found models of under 2e7 FLOPs
     * took 1.1-1.2 s of CPU each, close to the 2 s per-input limit. */
    double flops = 0;
    for (int i = 0; i < kiln_session_profile_count(session, KILN_PROFILE_BY_NODE); i++) {
        kiln_profile_entry e;
        if (kiln_session_profile_entry(session, KILN_PROFILE_BY_NODE, i, &e) == KILN_OK)
            flops += (double)e.flops;
    }
    if (flops <= 5e6)
        kiln_session_run(session);
    kiln_session_free(session);
}
