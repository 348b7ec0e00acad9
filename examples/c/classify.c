/* classify MODEL.kiln INPUT.f32 — kiln embedded in a program: load a model, run one sample, print the
 * top 5 classes. INPUT.f32 holds the sample's raw float32 values in the model's input layout (an image
 * as C x H x W with pixels in [0, 1]); the normalisation saved with the model is applied here. */
#include <kiln/kiln.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static const float *scores; // (classes) the model's output, for sorting class indices by it

static int by_score(const void *a, const void *b) {
    float sa = scores[*(const int *)a], sb = scores[*(const int *)b];
    return (sa < sb) - (sa > sb);
}

static int fail(const char *what, const char *why) {
    fprintf(stderr, "classify: %s: %s\n", what, why);
    return 1;
}

int main(int argc, char **argv) {
    kiln_model *model;
    kiln_session *session;
    float *x;
    size_t bytes;
    if (argc != 3)
        return fail("usage", "classify MODEL.kiln INPUT.f32");
    if (kiln_model_load_file(argv[1], &model) != KILN_OK ||
        kiln_session_create(model, NULL, &session) != KILN_OK ||
        kiln_session_input_data(session, 0, (void **)&x, &bytes) != KILN_OK) // batch 1, filled in place
        return fail(argv[1], kiln_last_error());
    size_t n = bytes / sizeof(float);
    FILE *f = fopen(argv[2], "rb");
    if (!f || fread(x, sizeof(float), n, f) != n || fgetc(f) != EOF)
        return fail(argv[2], "not one sample of float32 values the size of the model's input");
    fclose(f);
    const float *mean, *std;
    int64_t n_norm = kiln_model_input_norm(model, &mean, &std); // per feature, or per channel of an image
    for (size_t i = 0; i < n && n_norm > 0; i++)
        x[i] = (x[i] - mean[i / (n / n_norm)]) / std[i / (n / n_norm)];
    if (kiln_session_run(session) != KILN_OK ||
        kiln_session_output(session, 0, (const void **)&scores, &bytes) != KILN_OK)
        return fail("run", kiln_last_error());
    int classes = (int)(bytes / sizeof(float)), *order = malloc(sizeof(int) * (size_t)classes);
    for (int c = 0; c < classes; c++)
        order[c] = c;
    qsort(order, (size_t)classes, sizeof(int), by_score);
    double sum = 0; // softmax over the scores, shifted by the largest
    for (int c = 0; c < classes; c++)
        sum += exp(scores[c] - scores[order[0]]);
    for (int r = 0; r < 5 && r < classes; r++) {
        const char *name = kiln_model_class_name(model, order[r]);
        printf("%d. %-12s %.4f\n", r + 1, name ? name : "?", exp(scores[order[r]] - scores[order[0]]) / sum);
    }
    free(order);
    kiln_session_free(session);
    kiln_model_free(model);
    return 0;
}
