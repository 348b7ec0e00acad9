/* kiln distill: trains a student (a spec or a model) on a teacher's soft targets and the labels
 * (compress/distill.h), with every option of kiln train, and writes it as .kiln or .onnx. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "compress/distill.h"
#include "compress/summary.h"
#include "core/threads.h"
#include "train/api.h"
#include "train/trainer.h"
#include "train_args.h"

static const char usage[] = "--teacher T.kiln|T.onnx --student SPEC.txt|M.kiln|M.onnx --data DATA --out OUT.kiln|OUT.onnx "
                            "[--temperature T] [--alpha A] [--match TEACHER_VALUE:STUDENT_VALUE [--match-weight W]] [training options]";

typedef struct distill_args {
    cli_train_args train;
    const char *teacher, *student, *out, *checkpoint, *match;
    double temperature, alpha, match_weight;
} distill_args;

static int check_paths(const distill_args *a) {
    if (!cli_has_suffix(a->out, ".kiln") && !cli_has_suffix(a->out, ".onnx"))
        return cli_fail_msg("distill", "--out %s: the student is written as .kiln or .onnx", a->out);
    if (cli_same_file(a->out, a->teacher) || cli_same_file(a->out, a->student))
        return cli_fail_msg("distill", "--out %s is one of the inputs; write the student elsewhere", a->out);
    return 0;
}

/* The teacher against the trained student: accuracy on the validation data, size, FLOPs and latency. */
static kiln_status print_summary(const distill_args *a, const kn_graph *teacher, const kn_graph *student,
                                 const kn_dataset *val) {
    kn_summary_options o = {.data = val, .latency = true};
    kn_model_summary rows[2];
    KN_TRY(kn_model_summarize(teacher, &o, &rows[0]));
    KN_TRY(kn_model_summarize(student, &o, &rows[1]));
    const char *labels[2] = {"teacher", "student"};
    if (a->train.json)
        kn_summary_print_json(stdout, labels, rows, 2);
    else
        kn_summary_print_table(stdout, labels, rows, 2);
    return KILN_OK;
}

static int run(const distill_args *a) {
    kn_train_options o;
    int rc = cli_train_build_options("distill", &a->train, &o);
    if (rc || (rc = check_paths(a)))
        return rc;
    char checkpoint[4096];
    if (snprintf(checkpoint, sizeof checkpoint, "%s", a->checkpoint ? a->checkpoint : a->out) >= (int)sizeof checkpoint - 5)
        return cli_fail_msg("distill", "--out path is too long");
    if (!a->checkpoint)
        strcat(checkpoint, ".ckpt");
    o.checkpoint_path = checkpoint;
    kn_threads_set((int)a->train.threads);

    kn_graph teacher, student;
    kiln_status st = cli_load_model(a->teacher, 1, &teacher, NULL, NULL);
    if (st != KILN_OK)
        return cli_fail("distill", st);
    st = cli_load_model(a->student, (uint64_t)a->train.seed, &student, NULL, NULL);
    if (st != KILN_OK) {
        kn_graph_free(&teacher);
        return cli_fail("distill", st);
    }
    cli_train_data data = {0};
    kn_distill d = {0};
    kn_distill_config c = {.temperature = (float)a->temperature, .alpha = (float)a->alpha,
                           .match_weight = (float)a->match_weight, .views_change = kn_augment_on(&o.augment)};
    char match[512];
    if (a->match) {
        /* TEACHER_VALUE:STUDENT_VALUE, split at the first colon */
        const char *colon = strchr(a->match, ':');
        if (!colon || colon == a->match || !colon[1] || strlen(a->match) >= sizeof match) {
            kn_graph_free(&student);
            kn_graph_free(&teacher);
            return cli_fail_msg("distill", "--match %s: give TEACHER_VALUE:STUDENT_VALUE", a->match);
        }
        snprintf(match, sizeof match, "%s", a->match);
        match[colon - a->match] = '\0';
        c.match_teacher = match;
        c.match_student = match + (colon - a->match) + 1;
    }
    st = kn_distill_init(&d, &teacher, &student, &c, o.batch);
    if (st == KILN_OK)
        st = cli_train_data_load(&a->train, &student, &data);
    if (st == KILN_OK)
        st = kn_distill_bind_data(&d, cli_train_data_train(&data));
    bool talk = !a->train.json && !a->train.quiet;
    if (st == KILN_OK && talk) {
        printf("distilling %s (%lld params) into %s (%lld params) on %s, temperature %g, alpha %g\n", a->teacher,
               (long long)kn_graph_param_count(&teacher), a->student, (long long)kn_graph_param_count(&student),
               a->train.data, a->temperature, a->alpha);
    }
    fflush(stdout);
    cli_train_progress progress;
    cli_train_progress_init(&progress, &a->train);
    o.progress = cli_train_on_progress;
    o.progress_user = &progress;
    kn_train_hooks hooks = {.user = &d, .on_loss = kn_distill_on_loss};
    o.hooks = &hooks;
    kn_train_result r;
    if (st == KILN_OK)
        st = kn_train(&student, cli_train_data_train(&data), cli_train_data_val(&data), &o, NULL, 0, &r);
    cli_progress_end_line(&progress.bar);
    kn_distill_finish(&d, &student);
    if (st == KILN_OK)
        st = kn_graph_save_path(&student, a->out);
    if (st == KILN_OK && talk)
        printf("done: %lld epoch%s in %.1fs; student written to %s\n", (long long)r.epochs_done,
               cli_plural(r.epochs_done), r.seconds, a->out);
    if (st == KILN_OK && !a->train.quiet)
        st = print_summary(a, &teacher, &student, cli_train_data_val(&data));
    rc = st == KILN_OK ? 0 : cli_fail("distill", st);
    kn_distill_free(&d);
    cli_train_data_free(&data);
    kn_graph_free(&student);
    kn_graph_free(&teacher);
    return rc;
}

int cmd_distill(int argc, char **argv) {
    distill_args a = {.train = cli_train_args_defaults(5), .temperature = 2, .alpha = 0.5, .match_weight = 1};
    cli_option options[CLI_TRAIN_OPTION_COUNT + 8] = {
        {"--teacher", CLI_STRING, &a.teacher, "the trained teacher (.kiln or .onnx)"},
        {"--student", CLI_STRING, &a.student, "the student: a spec (.txt), .kiln or .onnx model"},
        {"--out", CLI_STRING, &a.out, "where to write the trained student (.kiln or .onnx)"},
        {"--checkpoint", CLI_STRING, &a.checkpoint, "checkpoint path (default OUT.ckpt)"},
        {"--temperature", CLI_FLOAT, &a.temperature, "softmax temperature of the soft targets (default 2)"},
        {"--alpha", CLI_FLOAT, &a.alpha, "weight of the soft-target loss, in [0, 1] (default 0.5)"},
        {"--match", CLI_STRING, &a.match, "TEACHER_VALUE:STUDENT_VALUE hidden features to match (1x1 projection)"},
        {"--match-weight", CLI_FLOAT, &a.match_weight, "weight of the feature-matching MSE (default 1)"},
    };
    int n_options = 8 + cli_train_option_table(&a.train, options + 8);
    int n_pos;
    if (!cli_parse("distill", usage, argc, argv, 2, options, n_options, NULL, 0, &n_pos))
        return 2;
    if (!a.teacher || !a.student || !a.train.data || !a.out) {
        fprintf(stderr, "kiln distill: error: --teacher, --student, --data and --out are required\n");
        cli_print_help(stderr, "distill", usage, options, n_options);
        return 2;
    }
    return run(&a);
}
