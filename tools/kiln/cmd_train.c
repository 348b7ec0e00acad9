/* kiln train: trains a spec, .kiln, .onnx or checkpoint on a dataset and writes a .kiln model. */
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "compress/grad_quant.h"
#include "compress/qat.h"
#include "compress/summary.h"
#include "core/threads.h"
#include "train/api.h"
#include "train/trainer.h"
#include "train_args.h"

static const char usage[] = "--model SPEC.txt|M.kiln|M.onnx --data DATA --out M.kiln|M.onnx [options]";

typedef struct train_args {
    cli_train_args train;
    const char *model, *out, *resume, *checkpoint;
    bool qat, lsq, error_feedback, override;
    int64_t bits, act_bits, grad_bits;
    int argc;
    char **argv; /* the command line, to print the command that resumes an interrupted run */
} train_args;

/* Checks the compression options; prints the error and returns the exit code, 0 when they are fine. */
static int check_compression_args(const train_args *a) {
    if (!a->qat && (a->bits || a->act_bits || a->lsq))
        return cli_fail_msg("train", "--bits, --act-bits and --lsq go with --qat");
    if (a->qat && !a->bits)
        return cli_fail_msg("train", "--qat needs --bits 8|4|2|1");
    kn_qat_config c = {.weight_bits = (int)a->bits, .act_bits = (int)a->act_bits};
    kiln_status st = a->qat ? kn_qat_config_check(&c) : KILN_OK;
    if (st != KILN_OK)
        return cli_fail("train", st);
    kn_grad_quant q;
    if (a->grad_bits != 32) {
        st = kn_grad_quant_init(&q, (int)a->grad_bits, a->error_feedback, 0);
        if (st != KILN_OK)
            return cli_fail("train", st);
        kn_grad_quant_free(&q);
    } else if (a->error_feedback) {
        return cli_fail_msg("train", "--error-feedback goes with --grad-bits 8|4|2|1");
    }
    return 0;
}

static kiln_status on_gradients(void *user, kn_param_ref *params, int n_params, int64_t step) {
    return kn_grad_quant_apply(user, params, n_params, step);
}

static kiln_status grad_quant_checkpoint(void *user, const kn_param_ref *params, int n_params,
                                         kn_named_tensor **state, int *n_state) {
    return kn_grad_quant_state(user, params, n_params, state, n_state);
}

static kiln_status grad_quant_restore(void *user, const kn_param_ref *params, int n_params,
                                      const kn_named_tensor *state, int n_state) {
    return kn_grad_quant_restore(user, params, n_params, state, n_state);
}

/* A checkpoint holding error-feedback residuals continues only with error feedback: without it the run
 * would silently drop them. */
static int check_resumed_feedback(const train_args *a, const kn_named_tensor *state, int n_state) {
    size_t prefix = strlen(KN_GRAD_QUANT_RESIDUAL_PREFIX);
    for (int k = 0; k < n_state && !a->error_feedback; k++)
        if (strncmp(state[k].name, KN_GRAD_QUANT_RESIDUAL_PREFIX, prefix) == 0)
            return cli_fail_msg("train", "%s was trained with --grad-bits and --error-feedback: pass them to resume",
                                a->resume);
    return 0;
}

/* The bytes a data-parallel step would exchange with quantized gradients, against f32. */
static void print_grad_bytes(const kn_graph *g, int bits) {
    int64_t quantized = 0, full = 0;
    for (int v = 0; v < g->n_values; v++) {
        if (g->values[v].kind != KN_VALUE_PARAM)
            continue;
        int64_t n = kn_shape_numel(&g->values[v].shape);
        quantized += kn_grad_quant_bytes(bits, n);
        full += 4 * n;
    }
    printf("gradients at %d bit%s: %lld bytes per data-parallel step instead of %lld in f32 (%.1fx smaller)\n", bits,
           bits == 1 ? "" : "s", (long long)quantized, (long long)full,
           quantized ? (double)full / (double)quantized : 0.0);
}

/* Prepares g for quantization-aware training (unless it is a QAT checkpoint already), calibrating
 * activation ranges on the training data. */
static kiln_status prepare_qat(const train_args *a, kn_graph *g, const kn_dataset *train) {
    if (kn_qat_is_prepared(g))
        return KILN_OK;
    kn_qat_config c = {.weight_bits = (int)a->bits, .act_bits = (int)a->act_bits, .lsq = a->lsq, .calib = train};
    KN_TRY(kn_qat_prepare(g, &c));
    if (!a->train.json && !a->train.quiet)
        printf("quantization-aware training: %lld-bit weights per channel%s, %s scales, BatchNormalization folded\n",
               (long long)a->bits, a->act_bits ? ", 8-bit activations" : "", a->lsq ? "learned (LSQ)" : "min/max");
    return KILN_OK;
}

/* How early stopping and --save-best ended the run. */
static void print_best_epoch(const kn_train_result *r, const kn_train_options *o) {
    if (r->stopped_early)
        printf("early stop after epoch %lld: the validation loss has not improved for %lld epoch%s\n",
               (long long)r->epochs_done, (long long)o->early_stop, cli_plural(o->early_stop));
    if (o->keep_best && r->best_epoch > 0)
        printf("kept epoch %lld, of lowest validation loss %.4f%s\n", (long long)r->best_epoch, r->best_val_loss,
               r->best_epoch == r->epochs_done ? " (the last)" : "");
}

static void print_json(const train_args *a, const kn_graph *g, const kn_train_result *r, const kn_train_options *o) {
    printf("{\"command\":\"train\",\"model\":");
    cli_json_string(stdout, a->resume ? a->resume : a->model);
    printf(",\"data\":");
    cli_json_string(stdout, a->train.data);
    printf(",\"out\":");
    cli_json_string(stdout, a->out);
    printf(",\"params\":%lld,\"epochs\":%lld,\"steps\":%lld,\"batch\":%lld,\"optimizer\":\"%s\",\"lr\":%.6g,"
           "\"threads\":%d,\"train_loss\":%.6f",
           (long long)kn_graph_param_count(g), (long long)r->epochs_done, (long long)r->steps, (long long)o->batch,
           kn_optim_name(o->optim.kind), (double)o->optim.lr, kn_threads_get(), r->train_loss);
    if (r->train_accuracy >= 0)
        printf(",\"train_accuracy\":%.6f", r->train_accuracy);
    if (r->has_val) {
        printf(",\"val_loss\":%.6f", r->val_loss);
        if (r->val_accuracy >= 0)
            printf(",\"val_accuracy\":%.6f", r->val_accuracy);
    }
    if (r->best_epoch > 0)
        printf(",\"best_epoch\":%lld,\"best_val_loss\":%.6f", (long long)r->best_epoch, r->best_val_loss);
    printf(",\"stopped_early\":%s,\"seconds\":%.3f,\"samples_per_second\":%.1f}\n", r->stopped_early ? "true" : "false",
           r->seconds, r->samples_per_second);
}

/* Ctrl-C: the first asks training to stop at the next step boundary and write its checkpoint; the handler
 * is then reset, so a second one ends the process at once. */
static volatile sig_atomic_t interrupt_flag;

static void on_interrupt(int sig) {
    (void)sig;
    interrupt_flag = 1;
    static const char note[] = "\nkiln train: stopping after this step to write the checkpoint (Ctrl-C again quits "
                               "at once)\n";
    ssize_t ignored = write(STDERR_FILENO, note, sizeof note - 1);
    (void)ignored;
}

static void catch_interrupt(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_interrupt;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
}

/* One shell word: as it is when it holds only safe characters, else in single quotes. */
static void print_shell_word(FILE *out, const char *word) {
    if (*word && strspn(word, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./,:=+-@%") ==
                     strlen(word)) {
        fputs(word, out);
        return;
    }
    fputc('\'', out);
    for (const char *c = word; *c; c++)
        fputs(*c == '\'' ? "'\\''" : (char[2]){*c, 0}, out);
    fputc('\'', out);
}

/* The command line that continues: this one with --model/--resume replaced by --resume CHECKPOINT (the
 * other options are the run's own, so they agree with what the checkpoint recorded). */
static void print_resume_command(FILE *out, const train_args *a, const char *checkpoint) {
    fputs("kiln train --resume ", out);
    print_shell_word(out, checkpoint);
    for (int i = 2; i < a->argc; i++) {
        const char *arg = a->argv[i];
        if (strcmp(arg, "--model") == 0 || strcmp(arg, "--resume") == 0) {
            i++;
            continue;
        }
        if (strncmp(arg, "--model=", 8) == 0 || strncmp(arg, "--resume=", 9) == 0)
            continue;
        fputc(' ', out);
        print_shell_word(out, arg);
    }
    fputc('\n', out);
}

static int run(train_args *a) {
    kn_train_options o;
    int rc = cli_train_build_options("train", &a->train, &o);
    if (rc || (rc = check_compression_args(a)))
        return rc;
    if (a->override && !a->resume)
        return cli_fail_msg("train", "--override goes with --resume");
    if (!cli_has_suffix(a->out, ".kiln") && !cli_has_suffix(a->out, ".onnx"))
        return cli_fail_msg("train", "--out %s: the model is written as .kiln or .onnx", a->out);
    const char *input = a->resume ? a->resume : a->model;
    if (cli_same_file(a->out, input))
        return cli_fail_msg("train", "--out %s is the model being trained (%s); write elsewhere", a->out, input);
    o.out_path = NULL; /* written below, after quantization-aware training is finalized */
    o.resume = a->resume != NULL;
    char checkpoint[4096];
    if (a->checkpoint)
        snprintf(checkpoint, sizeof checkpoint, "%s", a->checkpoint);
    else if (snprintf(checkpoint, sizeof checkpoint, "%s.ckpt", a->out) >= (int)sizeof checkpoint)
        return cli_fail_msg("train", "--out path is too long");
    o.checkpoint_path = checkpoint;
    const char *outputs[] = {a->out, a->train.log};
    const char *inputs[] = {input, a->train.data, a->train.val};
    if ((rc = cli_check_outputs("train", outputs, 2, inputs, 3)))
        return rc;
    /* The checkpoint a run resumes from is the one it goes on writing (replaced atomically after it was read). */
    const char *checkpoint_inputs[] = {a->resume ? NULL : a->model, a->train.data, a->train.val};
    if ((rc = cli_check_outputs("train", (const char *[]){checkpoint}, 1, checkpoint_inputs, 3)))
        return rc;
    kn_threads_set((int)a->train.threads);

    kn_graph g;
    kn_named_tensor *state = NULL;
    int n_state = 0;
    kiln_status st =
        cli_load_model(a->resume ? a->resume : a->model, (uint64_t)a->train.seed, &g, &state, &n_state);
    if (st != KILN_OK)
        return cli_fail("train", st);
    if (a->resume && ((rc = cli_train_resume_options("train", &a->train, &g, a->override, &o)) ||
                      (rc = check_resumed_feedback(a, state, n_state)))) {
        kn_named_tensors_free(state, n_state);
        kn_graph_free(&g);
        return rc;
    }
    cli_train_data data;
    st = cli_train_data_load(&a->train, &g, &data);
    cli_train_progress progress;
    cli_train_progress_init(&progress, &a->train);
    o.progress = cli_train_on_progress;
    o.progress_user = &progress;
    kn_train_result r;
    const kn_dataset *train_set = cli_train_data_train(&data);
    bool qat = a->qat || (st == KILN_OK && kn_qat_is_prepared(&g));
    /* QAT prints the float model against the quantized one (the first column only when it starts from a
     * float model, not a QAT checkpoint). */
    kn_summary_options summary_options = {.data = cli_train_data_val(&data), .latency = true};
    kn_model_summary summaries[2];
    bool has_before = false;
    bool show_summary = qat && !a->train.quiet && !a->train.json;
    if (st == KILN_OK && show_summary && !kn_qat_is_prepared(&g))
        has_before = (st = kn_model_summarize(&g, &summary_options, &summaries[0])) == KILN_OK;
    if (st == KILN_OK && a->qat)
        st = prepare_qat(a, &g, train_set);
    kn_grad_quant grad_quant = {0};
    kn_train_hooks hooks = {.user = &grad_quant, .on_gradients = on_gradients,
                            .checkpoint_state = grad_quant_checkpoint, .restore_state = grad_quant_restore};
    if (st == KILN_OK && a->grad_bits != 32) {
        st = kn_grad_quant_init(&grad_quant, (int)a->grad_bits, a->error_feedback, (uint64_t)a->train.seed);
        o.hooks = &hooks;
        if (st == KILN_OK && !a->train.json && !a->train.quiet)
            print_grad_bytes(&g, (int)a->grad_bits);
    }
    if (st == KILN_OK && !a->train.json && !a->train.quiet)
        printf("training %s on %s (%lld sample%s%s), %lld param%s, %s, batch %lld, %d thread%s\n",
               a->resume ? a->resume : a->model, a->train.data, (long long)train_set->count,
               cli_plural(train_set->count), data.has_val ? ", with validation" : "",
               (long long)kn_graph_param_count(&g), cli_plural(kn_graph_param_count(&g)), a->train.optimizer,
               (long long)a->train.batch, kn_threads_get(), cli_plural(kn_threads_get()));
    fflush(stdout);
    interrupt_flag = 0;
    o.interrupt = &interrupt_flag;
    catch_interrupt();
    if (st == KILN_OK)
        st = kn_train(&g, train_set, cli_train_data_val(&data), &o, state, n_state, &r);
    signal(SIGINT, SIG_DFL);
    cli_progress_end_line(&progress.bar);
    bool interrupted = st == KILN_OK && r.interrupted;
    if (interrupted) { /* no final model: the checkpoint is where the run stands */
        fprintf(stderr, "kiln train: interrupted after step %lld (epoch %lld of %lld); checkpoint written to %s\n"
                "resume with: ", (long long)r.steps, (long long)r.epochs_done + 1, (long long)o.epochs, checkpoint);
        print_resume_command(stderr, a, checkpoint);
    }
    bool finish = st == KILN_OK && !interrupted;
    if (finish && qat)
        st = kn_qat_finalize(&g);
    if (finish && st == KILN_OK)
        st = kn_graph_save_path(&g, a->out);
    if (finish && st == KILN_OK && show_summary &&
        (st = kn_model_summarize(&g, &summary_options, &summaries[1])) == KILN_OK) {
        const char *labels[2] = {"float", "quantized"};
        kn_summary_print_table(stdout, labels + !has_before, summaries + !has_before, 1 + has_before);
    }
    if (finish && st == KILN_OK && !a->train.json)
        print_best_epoch(&r, &o);
    if (finish && st == KILN_OK) {
        if (a->train.json)
            print_json(a, &g, &r, &o);
        else
            printf("done: %lld epoch%s, %lld step%s in %.1fs (%.0f samples/s); model written to %s, checkpoint %s\n",
                   (long long)r.epochs_done, cli_plural(r.epochs_done), (long long)r.steps, cli_plural(r.steps),
                   r.seconds, r.samples_per_second, a->out, checkpoint);
    }
    rc = st != KILN_OK ? cli_fail("train", st) : interrupted ? 128 + SIGINT : 0;
    kn_grad_quant_free(&grad_quant);
    cli_train_data_free(&data);
    kn_named_tensors_free(state, n_state);
    kn_graph_free(&g);
    return rc;
}

int cmd_train(int argc, char **argv) {
    train_args a = {.train = cli_train_args_defaults(5)};
    a.grad_bits = 32;
    cli_option options[CLI_TRAIN_OPTION_COUNT + 11] = {
        {"--model", CLI_STRING, &a.model, "model spec (.txt), .kiln or .onnx model to train"},
        {"--out", CLI_STRING, &a.out, "where to write the trained model (.kiln or .onnx)"},
        {"--resume", CLI_STRING, &a.resume, "continue from this checkpoint"},
        {"--checkpoint", CLI_STRING, &a.checkpoint, "checkpoint path (default OUT.ckpt)"},
        {"--override", CLI_FLAG, &a.override, "--resume: take options that differ from the checkpoint's run"},
        {"--qat", CLI_FLAG, &a.qat, "quantization-aware training: fake-quantize, then write the quantized model"},
        {"--bits", CLI_INT, &a.bits, "--qat weight bits: 8, 4, 2 or 1 (binary +-alpha)"},
        {"--act-bits", CLI_INT, &a.act_bits, "--qat activation bits: 8 (default: weights only)"},
        {"--lsq", CLI_FLAG, &a.lsq, "--qat: learn the scales (LSQ) instead of min/max"},
        {"--grad-bits", CLI_INT, &a.grad_bits, "quantize gradients to 8, 4, 2 or 1 bits (default 32: off)"},
        {"--error-feedback", CLI_FLAG, &a.error_feedback, "--grad-bits: carry the quantization error over"},
    };
    int n_options = 11 + cli_train_option_table(&a.train, options + 11);
    int n_pos;
    if (!cli_parse("train", usage, argc, argv, 2, options, n_options, NULL, 0, &n_pos))
        return 2;
    if ((!a.model && !a.resume) || !a.train.data || !a.out) {
        fprintf(stderr, "kiln train: error: --model (or --resume), --data and --out are required\n");
        cli_print_help(stderr, "train", usage, options, n_options);
        return 2;
    }
    a.argc = argc;
    a.argv = argv;
    return run(&a);
}
