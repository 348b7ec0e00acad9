/* kn_model_summarize: the before/after numbers every compression command prints. Parameters and
 * non-zeros are counted by hand here, the file size against the writer, accuracy and loss against an
 * evaluation of the graph itself, FLOPs against the Gemm formula, and the table shows every row. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "compress/summary.h"
#include "format/kiln_file.h"
#include "train/evaluate.h"
#include "train/spec.h"

/* 40 samples of 6 features, labels by the sign of the first feature. */
static void make_data(kn_dataset *ds) {
    memset(ds, 0, sizeof *ds);
    ds->count = 40;
    ds->sample_shape = kn_shape_of(1, (int64_t[]){6});
    ds->sample_size = 6;
    ds->x = malloc(sizeof(float) * 40 * 6);
    ds->labels = malloc(sizeof(int64_t) * 40);
    ds->class_count = 3;
    ds->source = strdup("synthetic");
    for (int i = 0; i < 40; i++) {
        for (int j = 0; j < 6; j++)
            ds->x[i * 6 + j] = (float)((i * 7 + j * 3) % 11) / 5.0f - 1.0f;
        ds->labels[i] = ds->x[i * 6] > 0 ? 1 : 0;
    }
}

int main(void) {
    kn_graph g;
    CHECK_OK(kn_spec_parse("input 6\ndense 5\nrelu\ndense 3\n", "test", 7, &g));
    /* Zero half of the first weight, as pruning would. */
    int64_t zeros = 0, params = 0;
    for (int v = 0; v < g.n_values; v++) {
        kn_value *val = &g.values[v];
        if (val->kind != KN_VALUE_PARAM)
            continue;
        int64_t n = kn_shape_numel(&val->shape);
        params += n;
        if (n == 30)
            for (int64_t i = 0; i < n; i += 2)
                ((float *)val->data)[i] = 0.0f;
        for (int64_t i = 0; i < n; i++)
            zeros += ((float *)val->data)[i] == 0.0f;
    }
    kn_dataset ds;
    make_data(&ds);
    kn_summary_options o = {.data = &ds, .latency = true, .latency_runs = 5};
    kn_model_summary s;
    CHECK_OK(kn_model_summarize(&g, &o, &s));
    CHECK(s.params == params && params == 6 * 5 + 5 + 5 * 3 + 3);
    CHECK_MSG(s.nonzeros == params - zeros, "%lld non-zeros, expected %lld", (long long)s.nonzeros,
              (long long)(params - zeros));
    void *buf;
    size_t size;
    CHECK_OK(kn_kiln_save_buffer(&g, NULL, 0, &buf, &size));
    CHECK(s.file_bytes == (int64_t)size);
    free(buf);
    /* Each Gemm: 2 * in * out multiply-adds plus out bias additions at least. */
    CHECK_MSG(s.flops >= 2 * (6 * 5 + 5 * 3) && s.flops <= 2 * (6 * 5 + 5 * 3) + 4 * (5 + 3) + 5,
              "FLOPs %lld", (long long)s.flops);
    CHECK_MSG(s.peak_memory > 4 * params, "peak memory %lld: the f32 weights alone take %lld", (long long)s.peak_memory,
              (long long)(4 * params)); /* weights, activations and scratch */
    CHECK(s.latency_ms[0] > 0 && s.latency_ms[1] > 0);

    kn_loss loss = {.kind = KN_LOSS_CE, .reduction = KN_REDUCTION_MEAN};
    kn_eval_result r;
    CHECK_OK(kn_evaluate(&g, &ds, &loss, 256, &r));
    CHECK(s.has_eval && s.accuracy == r.accuracy && s.loss == r.loss);
    printf("summary: accuracy %.4f (evaluate %.4f), loss %.6f (%.6f), %lld params, %lld non-zeros, %lld FLOPs\n",
           s.accuracy, r.accuracy, s.loss, r.loss, (long long)s.params, (long long)s.nonzeros, (long long)s.flops);
    kn_eval_result_free(&r);

    /* Without data or latency: those rows are absent, the rest the same. */
    kn_model_summary bare;
    CHECK_OK(kn_model_summarize(&g, NULL, &bare));
    CHECK(!bare.has_eval && bare.latency_ms[0] < 0 && bare.file_bytes == s.file_bytes && bare.flops == s.flops);

    char *text = NULL;
    size_t text_size = 0;
    FILE *out = open_memstream(&text, &text_size);
    const char *labels[] = {"before", "after"};
    kn_model_summary rows[2] = {bare, s};
    kn_summary_print_table(out, labels, rows, 2);
    fclose(out);
    fputs(text, stdout);
    const char *expected[] = {"accuracy", "loss", "params", "non-zeros", "FLOPs/sample", "file", "peak memory",
                              "latency b1", "latency b32", "after vs before", "1.00x smaller"};
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++)
        CHECK_MSG(strstr(text, expected[i]) != NULL, "the table lacks '%s'", expected[i]);
    free(text);

    kn_dataset_free(&ds);
    kn_graph_free(&g);
    return check_finish();
}
