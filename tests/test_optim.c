/* Optimizers, LR schedules and gradient clipping against PyTorch 1.13 (tests/ref/make_optim_fixtures.py;
 * Adafactor against tests/ref/adafactor_ref.py), plus checkpoint round trips and argument errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/rng.h"
#include "core/status.h"
#include "core/threads.h"
#include "train/optim.h"
#include "train/schedule.h"
#include "train_ref_fixture.h"

enum { STEPS = 10, N_PARAMS = 3, TOTAL = 12 + 36 + 4 };

static const char *const param_names[N_PARAMS] = {"w", "k", "b"};
static const kn_shape param_shapes[N_PARAMS] = {
    {2, {3, 4}},
    {4, {2, 3, 2, 3}},
    {1, {4}},
};

static ref_fixture fx;

/* The quadratic problem of make_optim_fixtures.py: grad_t = c (p - target) + noise_t. */
typedef struct problem {
    float data[TOTAL], grad[TOTAL];
    const float *init[N_PARAMS], *curvature[N_PARAMS], *target[N_PARAMS], *noise[N_PARAMS];
    kn_param_ref params[N_PARAMS];
} problem;

static int problem_init(problem *pb) {
    int64_t offset = 0;
    for (int i = 0; i < N_PARAMS; i++) {
        int64_t numel = kn_shape_numel(&param_shapes[i]);
        char name[64];
        snprintf(name, sizeof name, "init/%s", param_names[i]);
        pb->init[i] = ref_fixture_get(&fx, name, numel);
        snprintf(name, sizeof name, "curvature/%s", param_names[i]);
        pb->curvature[i] = ref_fixture_get(&fx, name, numel);
        snprintf(name, sizeof name, "target/%s", param_names[i]);
        pb->target[i] = ref_fixture_get(&fx, name, numel);
        snprintf(name, sizeof name, "noise/%s", param_names[i]);
        pb->noise[i] = ref_fixture_get(&fx, name, STEPS * numel);
        if (!pb->init[i] || !pb->curvature[i] || !pb->target[i] || !pb->noise[i])
            return 0;
        pb->params[i] = (kn_param_ref){param_names[i], pb->data + offset, pb->grad + offset, param_shapes[i]};
        memcpy(pb->params[i].data, pb->init[i], (size_t)numel * sizeof(float));
        offset += numel;
    }
    return 1;
}

static void problem_reset(problem *pb) {
    for (int i = 0; i < N_PARAMS; i++)
        memcpy(pb->params[i].data, pb->init[i], (size_t)kn_shape_numel(&param_shapes[i]) * sizeof(float));
}

/* Gradients of step t (from 0), in float32 as PyTorch computes them. */
static void problem_gradients(problem *pb, int t) {
    for (int i = 0; i < N_PARAMS; i++) {
        const kn_param_ref *p = &pb->params[i];
        int64_t numel = kn_shape_numel(&p->shape);
        for (int64_t j = 0; j < numel; j++) {
            float diff = p->data[j] - pb->target[i][j];
            float pull = pb->curvature[i][j] * diff;
            p->grad[j] = pull + pb->noise[i][t * numel + j];
        }
    }
}

typedef struct optim_case {
    const char *name;
    kn_optim_config config;
} optim_case;

/* Must match CONFIGS in tests/ref/make_optim_fixtures.py. */
static int optim_cases(optim_case *cases) {
    int n = 0;
    kn_optim_config c;

    c = kn_optim_defaults(KN_OPTIM_SGD);
    c.lr = 0.1f;
    cases[n++] = (optim_case){"sgd", c};
    c.lr = 0.05f, c.momentum = 0.9f, c.dampening = 0.3f;
    cases[n++] = (optim_case){"sgd_momentum", c};
    c.momentum = 0.8f, c.dampening = 0.0f, c.nesterov = true, c.weight_decay = 0.01f;
    cases[n++] = (optim_case){"sgd_nesterov", c};

    c = kn_optim_defaults(KN_OPTIM_ADAM);
    c.lr = 0.01f;
    cases[n++] = (optim_case){"adam", c};
    c.beta1 = 0.8f, c.beta2 = 0.99f, c.eps = 1e-6f, c.weight_decay = 0.05f;
    cases[n++] = (optim_case){"adam_wd", c};
    c = kn_optim_defaults(KN_OPTIM_ADAMW);
    c.lr = 0.01f, c.weight_decay = 0.1f;
    cases[n++] = (optim_case){"adamw", c};

    c = kn_optim_defaults(KN_OPTIM_ADAGRAD);
    c.lr = 0.1f, c.lr_decay = 0.05f, c.initial_accumulator_value = 0.1f, c.weight_decay = 0.01f;
    cases[n++] = (optim_case){"adagrad", c};

    c = kn_optim_defaults(KN_OPTIM_ADAFACTOR);
    cases[n++] = (optim_case){"adafactor", c};
    c.af_beta1 = 0.9f;
    cases[n++] = (optim_case){"adafactor_momentum", c};
    c = kn_optim_defaults(KN_OPTIM_ADAFACTOR);
    c.warmup_init = true, c.weight_decay = 0.1f;
    cases[n++] = (optim_case){"adafactor_warmup", c};
    c = kn_optim_defaults(KN_OPTIM_ADAFACTOR);
    c.lr = 0.02f, c.relative_step = false, c.scale_parameter = false;
    cases[n++] = (optim_case){"adafactor_fixed_lr", c};
    c = kn_optim_defaults(KN_OPTIM_ADAFACTOR);
    c.lr = 0.02f, c.relative_step = false, c.af_beta1 = 0.8f, c.clip_threshold = 0.5f, c.weight_decay = 0.1f;
    cases[n++] = (optim_case){"adafactor_fixed_lr_momentum", c};
    return n;
}

/* Runs steps [from, to) of the problem; lrs from the fixtures. */
static void run_steps(problem *pb, kn_optim *opt, const float *lrs, int from, int to) {
    for (int t = from; t < to; t++) {
        problem_gradients(pb, t);
        CHECK_OK(kn_optim_step(opt, lrs[t]));
    }
}

/* 10 steps against the reference trajectory; the difference after each step is taken relative to the
 * largest |param| of that tensor. Returns the worst. */
static double check_trajectory(problem *pb, const optim_case *oc, const float *lrs) {
    const float *trajectory[N_PARAMS];
    for (int i = 0; i < N_PARAMS; i++) {
        char name[128];
        snprintf(name, sizeof name, "trajectory/%s/%s", oc->name, param_names[i]);
        trajectory[i] = ref_fixture_get(&fx, name, STEPS * kn_shape_numel(&param_shapes[i]));
        if (!trajectory[i])
            return INFINITY;
    }
    problem_reset(pb);
    kn_optim *opt = kn_optim_create(&oc->config, N_PARAMS, pb->params);
    CHECK_MSG(opt != NULL, "%s: %s", oc->name, kiln_last_error());
    if (!opt)
        return INFINITY;
    double worst = 0.0;
    for (int t = 0; t < STEPS; t++) {
        run_steps(pb, opt, lrs, t, t + 1);
        CHECK(kn_optim_step_count(opt) == t + 1);
        for (int i = 0; i < N_PARAMS; i++) {
            int64_t numel = kn_shape_numel(&param_shapes[i]);
            const float *ref = trajectory[i] + t * numel;
            double scale = 0.0, diff = 0.0;
            for (int64_t j = 0; j < numel; j++) {
                scale = fmax(scale, fabs(ref[j]));
                diff = fmax(diff, fabs((double)pb->params[i].data[j] - ref[j]));
            }
            worst = fmax(worst, diff / scale);
        }
    }
    kn_optim_free(opt);
    return worst;
}

/* 5 steps, save every state buffer and the step count, restore them into a fresh optimizer, 5 more
 * steps: the parameters must equal those of 10 straight steps bit for bit. */
static void check_checkpoint_round_trip(problem *pb, const optim_case *oc, const float *lrs) {
    float straight[TOTAL];
    problem_reset(pb);
    kn_optim *opt = kn_optim_create(&oc->config, N_PARAMS, pb->params);
    CHECK(opt != NULL);
    if (!opt)
        return;
    run_steps(pb, opt, lrs, 0, STEPS);
    memcpy(straight, pb->data, sizeof straight);
    kn_optim_free(opt);

    problem_reset(pb);
    opt = kn_optim_create(&oc->config, N_PARAMS, pb->params);
    run_steps(pb, opt, lrs, 0, STEPS / 2);
    int n_states = kn_optim_state_count(opt);
    int64_t saved_t = kn_optim_step_count(opt);
    const char *names[16];
    float *saved[16];
    CHECK(n_states <= 16);
    for (int i = 0; i < n_states && i < 16; i++) {
        int64_t numel;
        const float *data = kn_optim_state(opt, i, &names[i], &numel);
        saved[i] = malloc((size_t)numel * sizeof(float));
        memcpy(saved[i], data, (size_t)numel * sizeof(float));
    }
    float params_at_save[TOTAL];
    memcpy(params_at_save, pb->data, sizeof params_at_save);

    /* A fresh optimizer, restored by state name. */
    kn_optim *restored = kn_optim_create(&oc->config, N_PARAMS, pb->params);
    CHECK(restored && kn_optim_state_count(restored) == n_states);
    for (int i = 0; restored && i < n_states && i < 16; i++) {
        int found = 0;
        for (int j = 0; j < kn_optim_state_count(restored); j++) {
            const char *name;
            int64_t numel;
            float *data = kn_optim_state(restored, j, &name, &numel);
            if (strcmp(name, names[i]) == 0) {
                memcpy(data, saved[i], (size_t)numel * sizeof(float));
                found = 1;
            }
        }
        CHECK_MSG(found, "%s: state %s missing after re-creating", oc->name, names[i]);
    }
    if (restored) {
        kn_optim_set_step_count(restored, saved_t);
        run_steps(pb, restored, lrs, STEPS / 2, STEPS);
        CHECK_MSG(memcmp(pb->data, straight, sizeof straight) == 0, "%s: restored run differs", oc->name);
    }

    /* Without the state the continuation must differ, or the round trip would prove nothing. */
    if (n_states > 0) {
        memcpy(pb->data, params_at_save, sizeof params_at_save);
        kn_optim *fresh = kn_optim_create(&oc->config, N_PARAMS, pb->params);
        kn_optim_set_step_count(fresh, saved_t);
        run_steps(pb, fresh, lrs, STEPS / 2, STEPS);
        CHECK_MSG(memcmp(pb->data, straight, sizeof straight) != 0, "%s: state had no effect", oc->name);
        kn_optim_free(fresh);
    }
    for (int i = 0; i < n_states && i < 16; i++)
        free(saved[i]);
    kn_optim_free(restored);
    kn_optim_free(opt);
}

static void test_optimizers(void) {
    problem pb;
    CHECK(problem_init(&pb));
    optim_case cases[16];
    int n = optim_cases(cases);
    for (int c = 0; c < n; c++) {
        char name[128];
        snprintf(name, sizeof name, "lr/%s", cases[c].name);
        const float *lrs = ref_fixture_get(&fx, name, STEPS);
        CHECK(lrs != NULL);
        if (!lrs)
            continue;
        double worst = check_trajectory(&pb, &cases[c], lrs);
        /* float32 against float32 PyTorch (or float64 NumPy for Adafactor): a few ulps after 10 steps. */
        CHECK_MSG(worst <= 2e-6, "%s: trajectory differs from the reference by %.3g", cases[c].name, worst);
        printf("%-28s 10 steps: max |param - reference| / max |reference| = %.3g\n", cases[c].name, worst);
        check_checkpoint_round_trip(&pb, &cases[c], lrs);
    }
}

static void test_state_layout(void) {
    problem pb;
    CHECK(problem_init(&pb));
    kn_optim_config c = kn_optim_defaults(KN_OPTIM_ADAGRAD);
    c.initial_accumulator_value = 0.25f;
    kn_optim *opt = kn_optim_create(&c, N_PARAMS, pb.params);
    CHECK(opt && kn_optim_state_count(opt) == 3 && kn_optim_step_count(opt) == 0);
    const char *name;
    int64_t numel;
    float *sum = kn_optim_state(opt, 1, &name, &numel);
    CHECK(sum && strcmp(name, "sum/k") == 0 && numel == 36 && sum[0] == 0.25f && sum[35] == 0.25f);
    CHECK(kn_optim_state(opt, 3, &name, &numel) == NULL);
    kn_optim_free(opt);

    /* Adafactor: (lead, rows) and (lead, cols) factors for the matrix and the 4-D kernel, full for the vector. */
    c = kn_optim_defaults(KN_OPTIM_ADAFACTOR);
    c.af_beta1 = 0.9f;
    opt = kn_optim_create(&c, N_PARAMS, pb.params);
    static const char *const expected[] = {"exp_avg_sq_row/w", "exp_avg_sq_col/w", "exp_avg/w", "exp_avg_sq_row/k",
                                           "exp_avg_sq_col/k", "exp_avg/k", "exp_avg_sq/b", "exp_avg/b"};
    static const int64_t expected_numel[] = {3, 4, 12, 2 * 3 * 2, 2 * 3 * 3, 36, 4, 4};
    CHECK(opt && kn_optim_state_count(opt) == 8);
    for (int i = 0; opt && i < 8; i++) {
        float *data = kn_optim_state(opt, i, &name, &numel);
        CHECK_MSG(data && strcmp(name, expected[i]) == 0 && numel == expected_numel[i], "state %d: %s (%lld)", i,
                  name, (long long)numel);
    }
    kn_optim_free(opt);

    c = kn_optim_defaults(KN_OPTIM_SGD);
    opt = kn_optim_create(&c, N_PARAMS, pb.params);
    CHECK(opt && kn_optim_state_count(opt) == 0);
    kn_optim_free(opt);
}

static void test_optim_errors(void) {
    problem pb;
    CHECK(problem_init(&pb));
    kn_optim_kind kind;
    CHECK_OK(kn_optim_parse("adafactor", &kind));
    CHECK(kind == KN_OPTIM_ADAFACTOR && strcmp(kn_optim_name(kind), "adafactor") == 0);
    CHECK(kn_optim_parse("rmsprop", &kind) == KILN_ERR_INVALID_ARG);
    CHECK_MSG(strstr(kiln_last_error(), "sgd, adam, adamw, adagrad, adafactor"), "%s", kiln_last_error());

    kn_optim_config c = kn_optim_defaults(KN_OPTIM_ADAM);
    CHECK(c.lr == 1e-3f && c.beta1 == 0.9f && c.beta2 == 0.999f && c.eps == 1e-8f && c.weight_decay == 0.0f);
    CHECK(kn_optim_defaults(KN_OPTIM_ADAMW).weight_decay == 1e-2f);
    CHECK(kn_optim_defaults(KN_OPTIM_ADAGRAD).lr == 1e-2f && kn_optim_defaults(KN_OPTIM_ADAGRAD).eps == 1e-10f);
    CHECK(kn_optim_defaults(KN_OPTIM_SGD).lr == 1e-2f);

    c.beta2 = 1.0f;
    CHECK(kn_optim_create(&c, N_PARAMS, pb.params) == NULL);
    CHECK_MSG(strstr(kiln_last_error(), "beta2"), "%s", kiln_last_error());
    c = kn_optim_defaults(KN_OPTIM_SGD);
    c.nesterov = true;
    CHECK(kn_optim_create(&c, N_PARAMS, pb.params) == NULL);
    CHECK_MSG(strstr(kiln_last_error(), "nesterov"), "%s", kiln_last_error());
    c = kn_optim_defaults(KN_OPTIM_SGD);
    kn_param_ref twins[2] = {pb.params[0], pb.params[2]};
    twins[1].name = "w";
    CHECK(kn_optim_create(&c, 2, twins) == NULL);
    CHECK_MSG(strstr(kiln_last_error(), "'w'"), "%s", kiln_last_error());

    c.lr = NAN; /* unset: the default */
    kn_optim *opt = kn_optim_create(&c, N_PARAMS, pb.params);
    CHECK(opt != NULL);
    CHECK(kn_optim_step(opt, -1.0f) == KILN_ERR_INVALID_ARG && kn_optim_step_count(opt) == 0);
    CHECK(kn_optim_step(opt, NAN) == KILN_ERR_INVALID_ARG && kn_optim_step_count(opt) == 0);
    kn_optim_free(opt);

    c = kn_optim_defaults(KN_OPTIM_ADAFACTOR); /* relative step: the lr argument is ignored */
    opt = kn_optim_create(&c, N_PARAMS, pb.params);
    problem_gradients(&pb, 0);
    CHECK_OK(kn_optim_step(opt, NAN));
    for (int i = 0; i < TOTAL; i++)
        CHECK(isfinite(pb.data[i]));
    kn_optim_free(opt);
}

/* Large parameters take the parallel loops: one thread and two must give the same bits. */
static void test_thread_independence(void) {
    enum { BIG = 70000 };
    static float init[BIG], data[BIG], grad[BIG], first[BIG];
    kn_rng rng = kn_rng_seeded(42);
    for (int i = 0; i < BIG; i++)
        init[i] = kn_rng_uniform(&rng) - 0.5f;
    kn_param_ref param = {"big", data, grad, kn_shape_of(2, (int64_t[]){350, 200})};
    static const kn_optim_kind kinds[] = {KN_OPTIM_SGD, KN_OPTIM_ADAM, KN_OPTIM_ADAMW, KN_OPTIM_ADAGRAD, KN_OPTIM_ADAFACTOR};
    int saved_threads = kn_threads_get();
    for (int k = 0; k < 5; k++) {
        for (int threads = 1; threads <= 2; threads++) {
            kn_threads_set(threads);
            kn_optim_config c = kn_optim_defaults(kinds[k]);
            c.momentum = kinds[k] == KN_OPTIM_SGD ? 0.9f : 0.0f;
            c.weight_decay = 0.01f;
            kn_optim *opt = kn_optim_create(&c, 1, &param);
            memcpy(data, init, sizeof data);
            for (int t = 0; t < 3; t++) {
                for (int i = 0; i < BIG; i++)
                    grad[i] = data[i] + 0.1f * (float)((i * 7 + t) % 13 - 6);
                CHECK_OK(kn_optim_step(opt, 0.01f));
            }
            if (threads == 1)
                memcpy(first, data, sizeof first);
            else
                CHECK_MSG(memcmp(first, data, sizeof first) == 0, "%s: 1 and 2 threads differ", kn_optim_name(kinds[k]));
            CHECK(memcmp(init, data, sizeof data) != 0);
            kn_optim_free(opt);
        }
    }
    kn_threads_set(saved_threads);
}

static void check_schedule(const char *name, kn_schedule s, int steps) {
    char key[64];
    snprintf(key, sizeof key, "schedule/%s", name);
    const float *ref = ref_fixture_get(&fx, key, steps);
    CHECK(ref != NULL);
    if (!ref)
        return;
    CHECK_OK(kn_schedule_validate(&s));
    double worst = 0.0;
    for (int i = 0; i < steps; i++)
        worst = fmax(worst, fabs(kn_schedule_lr(&s, i) - ref[i]) / ref[i]);
    CHECK_MSG(worst <= 1e-6, "%s: %.3g", name, worst);
    printf("schedule %-16s vs torch.optim.lr_scheduler over %d steps: max relative difference %.3g\n", name, steps,
           worst);
}

static void test_schedules(void) {
    check_schedule("cosine_warmup", (kn_schedule){KN_SCHEDULE_COSINE, 0.1f, 5, 30, 0, 0.0f, 1e-3f}, 30);
    check_schedule("cosine", (kn_schedule){KN_SCHEDULE_COSINE, 0.05f, 0, 12, 0, 0.0f, 0.0f}, 12);
    check_schedule("step_warmup", (kn_schedule){KN_SCHEDULE_STEP, 0.1f, 3, 0, 4, 0.5f, 0.0f}, 20);
    check_schedule("step", (kn_schedule){KN_SCHEDULE_STEP, 0.2f, 0, 0, 3, 0.1f, 0.0f}, 10);
    check_schedule("constant_warmup", (kn_schedule){KN_SCHEDULE_CONSTANT, 0.01f, 4, 0, 0, 0.0f, 0.0f}, 8);

    /* Hand values: warm-up 1/4, 2/4, ...; cosine half-way is the mid-point and ends held at min_lr. */
    kn_schedule cosine = {KN_SCHEDULE_COSINE, 1.0f, 4, 14, 0, 0.0f, 0.2f};
    CHECK(kn_schedule_lr(&cosine, 0) == 0.25f && kn_schedule_lr(&cosine, 3) == 1.0f);
    CHECK(kn_schedule_lr(&cosine, 4) == 1.0f);
    CHECK_NEAR(kn_schedule_lr(&cosine, 9), 0.6, 1e-7);
    CHECK_NEAR(kn_schedule_lr(&cosine, 14), 0.2, 1e-7);
    CHECK_NEAR(kn_schedule_lr(&cosine, 1000), 0.2, 1e-7);
    kn_schedule step = {KN_SCHEDULE_STEP, 0.5f, 1, 0, 2, 0.1f, 0.0f};
    CHECK(kn_schedule_lr(&step, 0) == 0.5f && kn_schedule_lr(&step, 2) == 0.5f);
    CHECK_NEAR(kn_schedule_lr(&step, 3), 0.05, 1e-9);
    CHECK_NEAR(kn_schedule_lr(&step, 5), 0.005, 1e-9);
    kn_schedule constant = {KN_SCHEDULE_CONSTANT, 0.3f, 0, 0, 0, 0.0f, 0.0f};
    CHECK(kn_schedule_lr(&constant, 0) == 0.3f && kn_schedule_lr(&constant, 123456) == 0.3f);

    cosine.total_steps = 4;
    CHECK(kn_schedule_validate(&cosine) == KILN_ERR_INVALID_ARG);
    step.step_size = 0;
    CHECK(kn_schedule_validate(&step) == KILN_ERR_INVALID_ARG);
    CHECK(kn_schedule_lr(&step, 7) == 0.5f); /* unvalidated: no decay rather than a division by zero */
    kn_schedule_kind kind;
    CHECK_OK(kn_schedule_parse("cosine", &kind));
    CHECK(kind == KN_SCHEDULE_COSINE && strcmp(kn_schedule_name(kind), "cosine") == 0);
    CHECK(kn_schedule_parse("linear", &kind) == KILN_ERR_INVALID_ARG);
    CHECK_MSG(strstr(kiln_last_error(), "constant, step, cosine"), "%s", kiln_last_error());
}

static void test_clipping(void) {
    problem pb;
    CHECK(problem_init(&pb));
    const float *grads[N_PARAMS];
    for (int i = 0; i < N_PARAMS; i++) {
        char key[64];
        snprintf(key, sizeof key, "clip/grad/%s", param_names[i]);
        grads[i] = ref_fixture_get(&fx, key, kn_shape_numel(&param_shapes[i]));
        if (!grads[i])
            return;
    }
    static const float max_norms[] = {1.0f, 100.0f};
    static const char *const labels[] = {"1", "100"};
    for (int m = 0; m < 2; m++) {
        for (int i = 0; i < N_PARAMS; i++)
            memcpy(pb.params[i].grad, grads[i], (size_t)kn_shape_numel(&param_shapes[i]) * sizeof(float));
        double norm = kn_grad_clip_global_norm(pb.params, N_PARAMS, max_norms[m]);
        char key[64];
        snprintf(key, sizeof key, "clip/%s/norm", labels[m]);
        const float *ref_norm = ref_fixture_get(&fx, key, 1);
        double norm_rel = ref_norm ? fabs(norm - ref_norm[0]) / ref_norm[0] : INFINITY;
        double grad_rel = 0.0;
        for (int i = 0; i < N_PARAMS; i++) {
            int64_t numel = kn_shape_numel(&param_shapes[i]);
            snprintf(key, sizeof key, "clip/%s/%s", labels[m], param_names[i]);
            const float *ref = ref_fixture_get(&fx, key, numel);
            for (int64_t j = 0; ref && j < numel; j++)
                grad_rel = fmax(grad_rel, fabs(pb.params[i].grad[j] - ref[j]) / fabs(ref[j]));
            if (max_norms[m] == 100.0f) /* not clipped: untouched */
                CHECK(memcmp(pb.params[i].grad, grads[i], (size_t)numel * sizeof(float)) == 0);
        }
        CHECK_MSG(norm_rel <= 1e-6 && grad_rel <= 1e-6, "max_norm %g: norm %.3g, grads %.3g", max_norms[m], norm_rel,
                  grad_rel);
        printf("clip_grad_norm_(max_norm=%s) vs torch: norm %.3g, clipped grads %.3g (max relative differences)\n",
               labels[m], norm_rel, grad_rel);
    }

    /* The clipped global norm is max_norm (up to PyTorch's 1e-6 in the divisor). */
    double clipped = kn_grad_clip_global_norm(pb.params, N_PARAMS, 0.0f);
    CHECK(clipped > 1.0); /* the last pass was unclipped */
    kn_grad_clip_global_norm(pb.params, N_PARAMS, 0.5f);
    CHECK_NEAR(kn_grad_clip_global_norm(pb.params, N_PARAMS, 0.0f), 0.5, 1e-6);
    pb.params[1].grad[3] = NAN;
    float before = pb.params[0].grad[0];
    CHECK(isnan(kn_grad_clip_global_norm(pb.params, N_PARAMS, 0.1f)) && pb.params[0].grad[0] == before);
}

int main(void) {
    CHECK(ref_fixture_load(&fx, "optim"));
    if (fx.data) {
        test_optimizers();
        test_state_layout();
        test_optim_errors();
        test_thread_independence();
        test_schedules();
        test_clipping();
    }
    ref_fixture_free(&fx);
    return check_finish();
}
