/* Distillation (compress/distill.h, kiln_distill):
 *
 * 1. The soft term and its gradient against PyTorch's kl_div(log_softmax(zs/T), softmax(zt/T),
 *    'batchmean') * T^2 (tests/ref/make_distill_fixture.py), including logits large enough that a naive
 *    softmax overflows.
 * 2. Through the public API: a student distilled from a teacher trains (finite loss, accuracy above
 *    chance on easy data); a student that is a copy of its teacher has soft loss 0.
 * 3. Hidden-feature matching: the learned projection brings the student's features to the teacher's (the
 *    feature loss falls), and is gone from the student afterwards.
 * 4. A teacher whose output does not match the student's, or whose input does not, is refused with a
 *    message saying so; so are a temperature <= 0 and alpha outside [0, 1].
 * 5. The teacher the hook runs is the deployed teacher: with BatchNormalization and dropout, its soft
 *    targets are those of the runtime's logits (inference mode), not of training mode; a teacher trained
 *    with other input statistics than the student's data gets its own standardisation.
 * 6. The teacher's logits are kept per sample: a batch seen before does not run the teacher and gives the
 *    same gradient bit for bit; a run of E epochs runs the teacher once per sample.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "compress/distill.h"
#include "core/rng.h"
#include "kiln/compress.h"
#include "kiln/kiln.h"
#include "train/api.h"
#include "train/trainer.h"

static void test_against_pytorch(void) {
    FILE *f = fopen(KILN_SOURCE_DIR "/tests/ref/data/distill.txt", "r");
    CHECK(f != NULL);
    if (!f)
        return;
    char header[512];
    CHECK(fgets(header, sizeof header, f) != NULL);
    int cases = 0;
    double t;
    int n, c;
    while (fscanf(f, "%lf %d %d", &t, &n, &c) == 3) {
        float *zs = malloc(sizeof(float) * (size_t)(n * c)), *zt = malloc(sizeof(float) * (size_t)(n * c));
        float *grad = malloc(sizeof(float) * (size_t)(n * c));
        double *want_grad = malloc(sizeof(double) * (size_t)(n * c)), want_loss = 0, loss;
        bool ok = true;
        for (int i = 0; i < n * c; i++)
            ok &= fscanf(f, "%f", &zs[i]) == 1;
        for (int i = 0; i < n * c; i++)
            ok &= fscanf(f, "%f", &zt[i]) == 1;
        ok &= fscanf(f, "%lf", &want_loss) == 1;
        for (int i = 0; i < n * c; i++)
            ok &= fscanf(f, "%lf", &want_grad[i]) == 1;
        CHECK(ok);
        kn_distill_soft_loss(zs, zt, n, c, (float)t, &loss, grad);
        CHECK_NEAR(loss, want_loss, 1e-9 + 1e-7 * fabs(want_loss));
        double worst = 0;
        for (int i = 0; i < n * c; i++)
            worst = fmax(worst, fabs(grad[i] - want_grad[i]));
        CHECK_MSG(worst < 1e-6, "T %g: gradient off by %g", t, worst);
        free(zs);
        free(zt);
        free(grad);
        free(want_grad);
        cases++;
    }
    fclose(f);
    CHECK(cases == 3);
}

static kiln_graph *load_spec(const char *text, uint64_t seed) {
    FILE *f = fopen("test_distill_spec.txt", "w");
    fputs(text, f);
    fclose(f);
    kiln_graph *g = NULL;
    CHECK_OK(kiln_graph_load("test_distill_spec.txt", seed, &g));
    remove("test_distill_spec.txt");
    return g;
}

static const char teacher_spec[] = "input 16\ndense 32\nrelu\ndense 4\n";
static const char student_spec[] = "input 16\ndense 4\n";

/* 16 features; the class is the block of four with the largest sum. */
static void make_dataset(kiln_dataset *ds, int count) {
    memset(ds, 0, sizeof *ds);
    kn_dataset *d = &ds->d;
    d->count = count;
    d->sample_shape = kn_shape_of(1, (int64_t[]){16});
    d->sample_size = 16;
    d->x = malloc(sizeof(float) * 16 * (size_t)count);
    d->labels = malloc(sizeof(int64_t) * (size_t)count);
    d->class_count = 4;
    d->source = strdup("synthetic");
    kn_rng rng = kn_rng_seeded(5);
    for (int s = 0; s < count; s++) {
        d->labels[s] = s % 4;
        for (int i = 0; i < 16; i++)
            d->x[s * 16 + i] = (i / 4 == s % 4 ? 0.8f : 0.0f) + kn_rng_uniform(&rng) - 0.5f;
    }
}

static void test_distill_trains(const kiln_dataset *ds) {
    kiln_graph *teacher = load_spec(teacher_spec, 1), *student = load_spec(student_spec, 2);
    kiln_train_config tc = kiln_train_config_default();
    tc.epochs = 6;
    tc.lr = 0.01f;
    tc.batch = 32;
    tc.threads = 1;
    kiln_metrics m;
    CHECK_OK(kiln_train(teacher, ds, NULL, &tc, &m));
    kiln_distill_config dc = {.temperature = 4, .alpha = 0.9f};
    CHECK_OK(kiln_distill(student, teacher, ds, NULL, &tc, &dc, &m));
    CHECK(isfinite(m.loss));
    CHECK_MSG(m.accuracy > 0.6, "the distilled student reached %g on its training data", m.accuracy);
    kiln_graph_free(student);

    /* A copy of the teacher as the student: the soft term vanishes. */
    kn_graph *t = &teacher->g;
    kn_distill d;
    kn_distill_config c = {.temperature = 2, .alpha = 1};
    CHECK_OK(kn_distill_init(&d, t, t, &c, 8));
    kn_tape tape;
    CHECK_OK(kn_tape_init(&tape, t, 8, true));
    memcpy(kn_tape_input(&tape, 0)->data, ds->d.x, sizeof(float) * 8 * 16);
    CHECK_OK(kn_tape_forward(&tape, false));
    memset(kn_tape_output_grad(&tape, 0)->data, 0, sizeof(float) * 8 * 4);
    double loss = 123;
    CHECK_OK(kn_distill_on_loss(&d, &tape, ds->d.labels, &loss));
    CHECK_NEAR(loss, 0.0, 1e-9);
    kn_tape_free(&tape);
    kn_distill_free(&d);
    kiln_graph_free(teacher);
}

/* The first and last match losses of a run. */
typedef struct match_trace {
    kn_distill *d;
    double first, last;
    int calls;
} match_trace;

static kiln_status trace_on_loss(void *user, kn_tape *tape, const int64_t *labels, double *loss) {
    match_trace *m = user;
    KN_TRY(kn_distill_on_loss(m->d, tape, labels, loss));
    if (m->calls++ == 0)
        m->first = m->d->last_match_loss;
    m->last = m->d->last_match_loss;
    return KILN_OK;
}

static const char *relu_output(const kn_graph *g) {
    for (int i = 0; i < g->n_nodes; i++)
        if (strcmp(g->nodes[i].op->name, "Relu") == 0)
            return g->values[g->nodes[i].out[0]].name;
    return "";
}

/* --match: the projection learns (the feature loss falls), and afterwards neither graph keeps a trace. */
static void test_feature_matching(const kiln_dataset *ds) {
    kiln_graph *teacher = load_spec(teacher_spec, 1), *student = load_spec("input 16\ndense 8\nrelu\ndense 4\n", 2);
    int values_before = student->g.n_values, nodes_before = student->g.n_nodes;
    char t_name[128], s_name[128];
    snprintf(t_name, sizeof t_name, "%s", relu_output(&teacher->g));
    snprintf(s_name, sizeof s_name, "%s", relu_output(&student->g));
    kn_distill d;
    kn_distill_config c = {.temperature = 2, .alpha = 0.5f, .match_teacher = t_name, .match_student = s_name,
                           .match_weight = 1};
    CHECK_OK(kn_distill_init(&d, &teacher->g, &student->g, &c, 32));
    CHECK(student->g.n_outputs == 2 && teacher->g.n_outputs == 2);
    match_trace trace = {.d = &d};
    kn_train_hooks hooks = {.user = &trace, .on_loss = trace_on_loss};
    kn_train_options o = {.epochs = 3, .batch = 32, .optim = kn_optim_defaults(KN_OPTIM_ADAM), .seed = 1,
                          .loss = {.kind = KN_LOSS_CE, .reduction = KN_REDUCTION_MEAN}, .hooks = &hooks};
    o.optim.lr = 0.01f;
    kn_train_result r;
    CHECK_OK(kn_train(&student->g, &ds->d, NULL, &o, NULL, 0, &r));
    CHECK_MSG(trace.calls > 0 && trace.last < 0.75 * trace.first, "the feature loss went from %g to %g", trace.first,
              trace.last);
    kn_distill_finish(&d, &student->g);
    kn_distill_free(&d);
    CHECK(student->g.n_outputs == 1 && teacher->g.n_outputs == 1);
    CHECK(student->g.n_values == values_before && student->g.n_nodes == nodes_before);
    CHECK(kn_graph_infer_shapes(&student->g) == KILN_OK);

    c.match_student = "no such value";
    CHECK(kn_distill_init(&d, &teacher->g, &student->g, &c, 32) == KILN_ERR_INVALID_ARG &&
          strstr(kiln_last_error(), "no such value"));
    CHECK(student->g.n_outputs == 1 && teacher->g.n_outputs == 1);
    kiln_graph_free(teacher);
    kiln_graph_free(student);
}


/* The runtime's output (n, c) of `g` on x (n, features): the deployed model's logits. */
static void runtime_logits(const kiln_graph *g, const float *x, int64_t n, int64_t features, float *out, int64_t c) {
    kiln_model *m = NULL;
    kiln_session *s = NULL;
    CHECK_OK(kiln_graph_to_model(g, &m));
    CHECK_OK(kiln_session_create(m, NULL, &s));
    int64_t dims[2] = {n, features};
    CHECK_OK(kiln_session_resize_input(s, 0, 2, dims));
    CHECK_OK(kiln_session_set_input(s, 0, KILN_DTYPE_F32, x, sizeof(float) * (size_t)(n * features)));
    CHECK_OK(kiln_session_run(s));
    const void *data = NULL;
    size_t bytes = 0;
    CHECK_OK(kiln_session_output(s, 0, &data, &bytes));
    CHECK(bytes == sizeof(float) * (size_t)(n * c));
    if (data && bytes == sizeof(float) * (size_t)(n * c))
        memcpy(out, data, bytes);
    kiln_session_free(s);
    kiln_model_free(m);
}

/* The hook's soft loss (alpha 1) on the first n samples of x, for the student's output there. */
static double hook_soft_loss(kn_distill *d, kn_graph *student, const float *x, int64_t n, float *zs) {
    kn_tape tape;
    CHECK_OK(kn_tape_init(&tape, student, n, true));
    memcpy(kn_tape_input(&tape, 0)->data, x, sizeof(float) * 16 * (size_t)n);
    CHECK_OK(kn_tape_forward(&tape, false));
    memcpy(zs, kn_tape_output(&tape, 0)->data, sizeof(float) * 4 * (size_t)n);
    memset(kn_tape_output_grad(&tape, 0)->data, 0, sizeof(float) * 4 * (size_t)n);
    double loss = 0;
    CHECK_OK(kn_distill_on_loss(d, &tape, NULL, &loss));
    kn_tape_free(&tape);
    return loss;
}

static const char bn_teacher_spec[] = "input 16\ndense 32\nbatchnorm\nrelu\ndropout 0.5\ndense 4\n";

/* 5: inference mode, and the teacher's own standardisation. */
static void test_teacher_as_deployed(const kiln_dataset *ds) {
    kiln_graph *teacher = load_spec(bn_teacher_spec, 1), *student = load_spec(student_spec, 2);
    kiln_train_config tc = kiln_train_config_default();
    tc.epochs = 2;
    tc.lr = 0.01f;
    tc.batch = 32;
    tc.threads = 1;
    CHECK_OK(kiln_train(teacher, ds, NULL, &tc, NULL)); /* BatchNorm's running statistics move */
    enum { N = 16 };
    float zt[N * 4], zs[N * 4], grad[N * 4];
    runtime_logits(teacher, ds->d.x, N, 16, zt, 4);
    kn_distill d;
    kn_distill_config c = {.temperature = 2, .alpha = 1};
    CHECK_OK(kn_distill_init(&d, &teacher->g, &student->g, &c, N));
    CHECK_OK(kn_distill_bind_data(&d, &ds->d));
    double got = hook_soft_loss(&d, &student->g, ds->d.x, N, zs), want, training_mode;
    kn_distill_soft_loss(zs, zt, N, 4, 2, &want, grad);
    CHECK_MSG(fabs(got - want) <= 1e-5 * fabs(want) + 1e-7, "hook %.9g, runtime teacher %.9g", got, want);
    /* The same teacher in training mode (batch statistics, dropout) gives other soft targets. */
    kn_tape tt;
    CHECK_OK(kn_tape_init(&tt, &teacher->g, N, false));
    memcpy(kn_tape_input(&tt, 0)->data, ds->d.x, sizeof(float) * 16 * N);
    CHECK_OK(kn_tape_forward(&tt, true));
    kn_distill_soft_loss(zs, kn_f32(kn_tape_output(&tt, 0)), N, 4, 2, &training_mode, grad);
    CHECK_MSG(fabs(training_mode - want) > 1e-3, "training mode %.9g, inference %.9g", training_mode, want);
    kn_tape_free(&tt);
    kn_distill_free(&d);

    /* The teacher was trained on raw features standardised with (mean 0.5, std 2); the student's data
     * carries its own statistics (mean -1, std 0.25): the teacher must see (raw - 0.5) / 2. */
    kn_graph *t = &teacher->g;
    t->input_mean = kn_arena_alloc(&t->arena, sizeof(float) * 16);
    t->input_std = kn_arena_alloc(&t->arena, sizeof(float) * 16);
    t->n_norm = 16;
    kiln_dataset standardised;
    make_dataset(&standardised, N);
    standardised.d.feature_mean = malloc(sizeof(float) * 16);
    standardised.d.feature_std = malloc(sizeof(float) * 16);
    float teacher_x[N * 16];
    for (int f = 0; f < 16; f++) {
        t->input_mean[f] = 0.5f;
        t->input_std[f] = 2.0f;
        standardised.d.feature_mean[f] = -1.0f;
        standardised.d.feature_std[f] = 0.25f;
    }
    for (int i = 0; i < N * 16; i++) {
        float raw = standardised.d.x[i];
        standardised.d.x[i] = (raw - -1.0f) / 0.25f;
        teacher_x[i] = (raw - 0.5f) / 2.0f;
    }
    runtime_logits(teacher, teacher_x, N, 16, zt, 4);
    CHECK_OK(kn_distill_init(&d, &teacher->g, &student->g, &c, N));
    CHECK_OK(kn_distill_bind_data(&d, &standardised.d));
    got = hook_soft_loss(&d, &student->g, standardised.d.x, N, zs);
    kn_distill_soft_loss(zs, zt, N, 4, 2, &want, grad);
    CHECK_MSG(fabs(got - want) <= 1e-4 * fabs(want) + 1e-6, "standardised: hook %.9g, teacher's own %.9g", got, want);
    kn_distill_free(&d);
    kn_dataset_free(&standardised.d);
    kiln_graph_free(teacher);
    kiln_graph_free(student);
}

/* 6: the cache of the teacher's logits. */
static void test_teacher_cache(const kiln_dataset *ds) {
    kiln_graph *teacher = load_spec(teacher_spec, 1), *student = load_spec(student_spec, 2);
    enum { N = 8 };
    kn_distill d;
    kn_distill_config c = {.temperature = 3, .alpha = 0.7f};
    CHECK_OK(kn_distill_init(&d, &teacher->g, &student->g, &c, N));
    kn_tape tape;
    CHECK_OK(kn_tape_init(&tape, &student->g, N, true));
    float first[N * 4];
    for (int round = 0; round < 2; round++) {
        memcpy(kn_tape_input(&tape, 0)->data, ds->d.x, sizeof(float) * 16 * N);
        CHECK_OK(kn_tape_forward(&tape, false));
        memset(kn_tape_output_grad(&tape, 0)->data, 0, sizeof(float) * 4 * N);
        double loss = 0;
        CHECK_OK(kn_distill_on_loss(&d, &tape, ds->d.labels, &loss));
        if (round == 0)
            memcpy(first, kn_tape_output_grad(&tape, 0)->data, sizeof first);
    }
    CHECK(d.cache.misses == N && d.cache.hits == N);
    CHECK(memcmp(first, kn_tape_output_grad(&tape, 0)->data, sizeof first) == 0);
    kn_tape_free(&tape);
    kn_distill_free(&d);

    /* Three epochs: the teacher runs on each sample once. */
    CHECK_OK(kn_distill_init(&d, &teacher->g, &student->g, &c, 32));
    kn_train_hooks hooks = {.user = &d, .on_loss = kn_distill_on_loss};
    kn_train_options o = {.epochs = 3, .batch = 32, .optim = kn_optim_defaults(KN_OPTIM_ADAM), .seed = 1,
                          .loss = {.kind = KN_LOSS_CE, .reduction = KN_REDUCTION_MEAN}, .hooks = &hooks};
    kn_train_result r;
    CHECK_OK(kn_train(&student->g, &ds->d, NULL, &o, NULL, 0, &r));
    CHECK_MSG(d.cache.misses == ds->d.count && d.cache.hits == 2 * ds->d.count,
              "teacher ran on %lld samples, cache served %lld", (long long)d.cache.misses, (long long)d.cache.hits);
    kn_distill_free(&d);
    kiln_graph_free(teacher);
    kiln_graph_free(student);
}

static void test_mismatch(void) {
    kiln_graph *teacher = load_spec("input 16\ndense 10\n", 1), *student = load_spec(student_spec, 2);
    kn_distill d;
    kn_distill_config c = {.temperature = 4, .alpha = 0.5f};
    CHECK(kn_distill_init(&d, &teacher->g, &student->g, &c, 8) == KILN_ERR_SHAPE &&
          strstr(kiln_last_error(), "output") && strstr(kiln_last_error(), "does not match"));
    kiln_graph_free(teacher);
    teacher = load_spec("input 12\ndense 4\n", 1);
    CHECK(kn_distill_init(&d, &teacher->g, &student->g, &c, 8) == KILN_ERR_SHAPE &&
          strstr(kiln_last_error(), "input"));
    kiln_graph_free(teacher);
    teacher = load_spec(teacher_spec, 1);
    c.temperature = 0;
    CHECK(kn_distill_init(&d, &teacher->g, &student->g, &c, 8) == KILN_ERR_INVALID_ARG &&
          strstr(kiln_last_error(), "--temperature"));
    c = (kn_distill_config){.temperature = 1, .alpha = 1.5f};
    CHECK(kn_distill_init(&d, &teacher->g, &student->g, &c, 8) == KILN_ERR_INVALID_ARG &&
          strstr(kiln_last_error(), "--alpha"));
    kiln_graph_free(teacher);
    kiln_graph_free(student);
}

int main(void) {
    test_against_pytorch();
    kiln_dataset ds;
    make_dataset(&ds, 256);
    test_distill_trains(&ds);
    test_feature_matching(&ds);
    test_teacher_as_deployed(&ds);
    test_teacher_cache(&ds);
    test_mismatch();
    kn_dataset_free(&ds.d);
    return check_finish();
}
