/* kiln quantize: post-training quantization of a model's weights (and activations, calibrated), with a
 * per-layer report and a before/after table (docs/compress.md, "Quantization"). */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "compress/mixed.h"
#include "compress/qat.h"
#include "compress/quantize.h"
#include "compress/summary.h"
#include "core/status.h"
#include "core/threads.h"
#include "train/api.h"
#include "train/evaluate.h"
#include "train_args.h"

static const char usage[] =
    "M.kiln|M.onnx|SPEC --out OUT.kiln|OUT.onnx [--bits 16|8|4|2|1] [--float f16|bf16] [--weights-only]\n"
    "       [--granularity tensor|channel|block:N] [--symmetric|--asymmetric] [--weight-clip minmax|mse]\n"
    "       [--calib DATA] [--calib-samples N] [--calib-method minmax|percentile:P|kl|mse] [--codebook K] [--log2]\n"
    "       [--bias-correction] [--recalibrate-bn] [--adaround [--adaround-iters N] [--adaround-lambda L]\n"
    "       [--adaround-lr LR]] [--skip NAME,...] [--val DATA] [--max-drop P] [--dry-run] [--json]\n"
    "   or: M --qat --epochs E --data DATA [--bits 8|4|2|1] [--weights-only] [--lsq] [any kiln train option]\n"
    "       --out OUT.kiln|OUT.onnx";

typedef struct quantize_args {
    cli_train_args train;  /* --qat's training; its --val, --seed, --threads and --json serve PTQ too */
    const char *out, *float_type, *granularity, *weight_clip, *calib, *calib_method, *skip;
    int64_t bits, calib_samples, codebook, adaround_iters;
    double max_drop, adaround_lambda, adaround_lr;
    bool weights_only, symmetric, asymmetric, log2, bias_correction, recalibrate_bn, adaround, dry_run, latency;
    bool qat, lsq;
} quantize_args;

/* The options from the arguments; prints the error and returns false on a bad one. */
static bool options_build(const quantize_args *a, kn_quant_options *o, char **skip_copy, const char **skip_list,
                          int max_skip) {
    *o = kn_quant_options_default();
    o->bits = (int)a->bits;
    if (a->float_type) {
        if (strcmp(a->float_type, "f16") != 0 && strcmp(a->float_type, "bf16") != 0) {
            cli_fail_msg("quantize", "--float %s: f16 or bf16", a->float_type);
            return false;
        }
        o->bits = 16;
        o->bf16 = strcmp(a->float_type, "bf16") == 0;
    }
    o->weights_only = a->weights_only || o->bits == 16;
    if (a->granularity) {
        char *end = NULL;
        if (strcmp(a->granularity, "tensor") == 0) {
            o->granularity = KN_QUANT_PER_TENSOR;
        } else if (strcmp(a->granularity, "channel") == 0) {
            o->granularity = KN_QUANT_PER_CHANNEL;
        } else if (strncmp(a->granularity, "block:", 6) == 0 && (o->block = strtoll(a->granularity + 6, &end, 10),
                                                                  end != a->granularity + 6 && *end == '\0')) {
            o->granularity = KN_QUANT_PER_BLOCK;
        } else {
            cli_fail_msg("quantize", "--granularity %s: tensor, channel or block:N", a->granularity);
            return false;
        }
    }
    if (a->symmetric && a->asymmetric) {
        cli_fail_msg("quantize", "--symmetric and --asymmetric exclude each other");
        return false;
    }
    o->symmetric = a->symmetric ? 1 : a->asymmetric ? 0 : -1;
    if (a->weight_clip) {
        if (strcmp(a->weight_clip, "minmax") != 0 && strcmp(a->weight_clip, "mse") != 0) {
            cli_fail_msg("quantize", "--weight-clip %s: minmax or mse", a->weight_clip);
            return false;
        }
        o->weight_clip = strcmp(a->weight_clip, "mse") == 0;
    }
    if (a->calib_method && kn_calib_method_parse(a->calib_method, &o->calib) != KILN_OK) {
        cli_fail("quantize", KILN_ERR_INVALID_ARG);
        return false;
    }
    o->calib_samples = a->calib_samples;
    o->codebook = (int)a->codebook;
    o->log2 = a->log2;
    o->bias_correction = a->bias_correction;
    o->recalibrate_bn = a->recalibrate_bn;
    o->adaround = a->adaround;
    o->adaround_options.iters = a->adaround_iters;
    o->adaround_options.lambda = (float)a->adaround_lambda;
    o->adaround_options.lr = (float)a->adaround_lr;
    o->seed = (uint64_t)a->train.seed;
    if (a->skip) { /* a comma-separated list */
        *skip_copy = strdup(a->skip);
        for (char *name = *skip_copy ? strtok(*skip_copy, ",") : NULL; name && o->n_skip < max_skip;
             name = strtok(NULL, ","))
            skip_list[o->n_skip++] = name;
        o->skip = skip_list;
    }
    if (kn_quant_options_check(o) != KILN_OK) {
        cli_fail("quantize", KILN_ERR_INVALID_ARG);
        return false;
    }
    if (a->calib_samples < 1) {
        cli_fail_msg("quantize", "--calib-samples %lld: at least 1", (long long)a->calib_samples);
        return false;
    }
    return true;
}


static kiln_status load_data(const char *data, const kn_graph *g, kn_dataset *ds) {
    kn_data_options options = kn_data_options_for_model(g);
    KN_TRY(kn_dataset_load(data, &options, ds));
    kiln_status st = kn_check_input_fits(g, ds);
    if (st != KILN_OK)
        kn_dataset_free(ds);
    return st;
}

/* Post-training quantization: calibrate, quantize, report, write. */
static int run_ptq(const quantize_args *a, const char *model) {
    if (a->train.data || a->train.epochs || a->train.val_split > 0 || a->lsq)
        return cli_fail_msg("quantize", "--data, --epochs, --val-split and --lsq go with --qat (post-training "
                            "quantization calibrates on --calib)");
    kn_quant_options o;
    char *skip_copy = NULL;
    const char *skip_list[64];
    if (!options_build(a, &o, &skip_copy, skip_list, 64)) {
        free(skip_copy);
        return 1;
    }
    kn_threads_set((int)a->train.threads);

    kn_graph g;
    kn_dataset calib = {0}, val = {0};
    kiln_status st = kn_graph_load_path(model, 1, &g, NULL, NULL);
    if (st != KILN_OK) {
        free(skip_copy);
        return cli_fail("quantize", st);
    }
    if (a->calib)
        st = load_data(a->calib, &g, &calib);
    if (st == KILN_OK && a->train.val)
        st = load_data(a->train.val, &g, &val);
    kn_model_summary rows[2] = {{0}};
    kn_summary_options summary = {.data = a->train.val ? &val : NULL, .latency = a->latency};
    if (st == KILN_OK)
        st = kn_model_summarize(&g, &summary, &rows[0]);
    kn_mixed_plan plan = {0};
    if (st == KILN_OK && a->max_drop >= 0) {
        st = kn_mixed_plan_make(&g, a->calib ? &calib : NULL, a->train.val ? &val : NULL, &o, a->max_drop, &plan);
        if (st == KILN_OK && !a->train.json)
            kn_mixed_plan_print(stdout, &plan, a->max_drop);
        o.layer_bits = plan.bits;
    }
    kn_quant_report report = {0};
    if (st == KILN_OK)
        st = kn_quantize(&g, a->calib ? &calib : NULL, &o, &report);
    if (st == KILN_OK)
        st = kn_model_summarize(&g, &summary, &rows[1]);
    if (st == KILN_OK && !a->dry_run)
        st = kn_graph_save_path(&g, a->out);
    int rc = 0;
    const char *labels[2] = {"f32", a->dry_run ? "quantized (dry run)" : "quantized"};
    if (st != KILN_OK) {
        rc = cli_fail("quantize", st);
    } else if (a->train.json) {
        printf("{\"command\":\"quantize\",\"model\":");
        cli_json_string(stdout, model);
        printf(",\"out\":");
        if (a->dry_run)
            printf("null");
        else
            cli_json_string(stdout, a->out);
        printf(",\"layers\":");
        kn_quant_report_print_json(stdout, &report);
        if (plan.n_layers) {
            printf(",\"mixed\":");
            kn_mixed_plan_print_json(stdout, &plan);
        }
        printf(",\"summary\":");
        kn_summary_print_json(stdout, labels, rows, 2);
        printf("}\n");
    } else {
        kn_quant_report_print(stdout, &report);
        printf("\n");
        kn_summary_print_table(stdout, labels, rows, 2);
        if (a->dry_run)
            printf("dry run: nothing written\n");
        else
            printf("wrote %s\n", a->out);
    }
    kn_quant_report_free(&report);
    kn_mixed_plan_free(&plan);
    kn_dataset_free(&calib);
    kn_dataset_free(&val);
    kn_graph_free(&g);
    free(skip_copy);
    return rc;
}

/* The PTQ options --qat does not take (it trains symmetric per-channel weights with min/max or LSQ
 * scales, and 8-bit activations unless --weights-only): the first one given, or NULL. */
static const char *qat_excluded_option(const quantize_args *a) {
    const struct {
        bool given;
        const char *name;
    } excluded[] = {
        {a->float_type != NULL || a->bits == 16, "--float/--bits 16"}, {a->granularity != NULL, "--granularity"},
        {a->symmetric, "--symmetric"}, {a->asymmetric, "--asymmetric"}, {a->weight_clip != NULL, "--weight-clip"},
        {a->calib_method != NULL, "--calib-method"}, {a->codebook != 0, "--codebook"}, {a->log2, "--log2"},
        {a->bias_correction, "--bias-correction"}, {a->recalibrate_bn, "--recalibrate-bn"},
        {a->adaround, "--adaround"}, {a->skip != NULL, "--skip"}, {a->max_drop >= 0, "--max-drop"},
        {a->dry_run, "--dry-run"},
    };
    for (size_t k = 0; k < sizeof excluded / sizeof excluded[0]; k++)
        if (excluded[k].given)
            return excluded[k].name;
    return NULL;
}

/* Quantization-aware training (compress/qat.h), as `kiln train --qat` does it: fake quantization,
 * training with every kiln train option, then the real quantized model written. */
static int run_qat(const quantize_args *a, const char *model) {
    const char *excluded = qat_excluded_option(a);
    if (excluded)
        return cli_fail_msg("quantize", "%s is post-training quantization; --qat trains symmetric per-channel "
                            "weights (8-bit activations unless --weights-only)", excluded);
    if (!a->train.data)
        return cli_fail_msg("quantize", "--qat trains: give the training data with --data DATA");
    if (a->train.epochs < 1)
        return cli_fail_msg("quantize", "--qat --epochs %lld: train at least 1 epoch", (long long)a->train.epochs);
    if (a->calib_samples < 1)
        return cli_fail_msg("quantize", "--calib-samples %lld: at least 1", (long long)a->calib_samples);
    kn_qat_config c = {.weight_bits = (int)a->bits, .act_bits = a->weights_only ? 0 : 8, .lsq = a->lsq,
                       .calib_samples = a->calib_samples};
    kiln_status st = kn_qat_config_check(&c);
    if (st != KILN_OK)
        return cli_fail("quantize", st);
    kn_train_options o;
    int rc = cli_train_build_options("quantize", &a->train, &o);
    if (rc)
        return rc;
    const char *outputs[] = {a->out, a->train.log};
    const char *inputs[] = {model, a->train.data, a->train.val, a->calib};
    if ((rc = cli_check_outputs("quantize", outputs, 2, inputs, 4)))
        return rc;
    kn_threads_set((int)a->train.threads);

    kn_graph g;
    st = kn_graph_load_path(model, (uint64_t)a->train.seed, &g, NULL, NULL);
    if (st != KILN_OK)
        return cli_fail("quantize", st);
    cli_train_data data;
    kn_dataset calib = {0};
    st = cli_train_data_load(&a->train, &g, &data);
    if (st == KILN_OK && a->calib)
        st = load_data(a->calib, &g, &calib);
    const kn_dataset *train_set = st == KILN_OK ? cli_train_data_train(&data) : NULL;
    c.calib = a->calib ? &calib : train_set;
    kn_summary_options summary = {.data = st == KILN_OK ? cli_train_data_val(&data) : NULL, .latency = a->latency};
    kn_model_summary rows[2] = {{0}};
    if (st == KILN_OK)
        st = kn_model_summarize(&g, &summary, &rows[0]);
    if (st == KILN_OK)
        st = kn_qat_prepare(&g, &c);
    if (st == KILN_OK && !a->train.json && !a->train.quiet)
        printf("quantization-aware training: %lld-bit weights per channel%s, %s scales, BatchNormalization folded; "
               "%lld epochs on %s\n", (long long)a->bits, c.act_bits ? ", 8-bit activations" : "",
               a->lsq ? "learned (LSQ)" : "min/max", (long long)a->train.epochs, a->train.data);
    fflush(stdout);
    cli_train_progress progress;
    cli_train_progress_init(&progress, &a->train);
    o.progress = cli_train_on_progress;
    o.progress_user = &progress;
    kn_train_result r;
    if (st == KILN_OK)
        st = kn_train(&g, train_set, cli_train_data_val(&data), &o, NULL, 0, &r);
    cli_progress_end_line(&progress.bar);
    if (st == KILN_OK)
        st = kn_qat_finalize(&g);
    if (st == KILN_OK)
        st = kn_model_summarize(&g, &summary, &rows[1]);
    if (st == KILN_OK)
        st = kn_graph_save_path(&g, a->out);
    const char *labels[2] = {"f32", "quantized (QAT)"};
    if (st != KILN_OK) {
        rc = cli_fail("quantize", st);
    } else if (a->train.json) {
        printf("{\"command\":\"quantize\",\"qat\":true,\"model\":");
        cli_json_string(stdout, model);
        printf(",\"out\":");
        cli_json_string(stdout, a->out);
        printf(",\"bits\":%lld,\"act_bits\":%d,\"epochs\":%lld,\"train_loss\":%.6f,\"summary\":", (long long)a->bits,
               c.act_bits, (long long)r.epochs_done, r.train_loss);
        kn_summary_print_json(stdout, labels, rows, 2);
        printf("}\n");
    } else {
        kn_summary_print_table(stdout, labels, rows, 2);
        printf("wrote %s\n", a->out);
    }
    kn_dataset_free(&calib);
    cli_train_data_free(&data);
    kn_graph_free(&g);
    return rc;
}

int cmd_quantize(int argc, char **argv) {
    const kn_adaround_options ada = kn_adaround_options_default();
    quantize_args a = {.train = cli_train_args_defaults(0), .bits = 8, .calib_samples = 512, .max_drop = -1,
                       .adaround_iters = ada.iters, .adaround_lambda = ada.lambda, .adaround_lr = ada.lr};
    enum { OWN = 25 };
    cli_option options[OWN + CLI_TRAIN_OPTION_COUNT] = {
        {"--out", CLI_STRING, &a.out, "the quantized model: .kiln or .onnx (QDQ)"},
        {"--bits", CLI_INT, &a.bits, "weight bits: 16, 8 (default), 4, 2 or 1 (binary); activations are 8-bit"},
        {"--float", CLI_STRING, &a.float_type, "f16|bf16: 16-bit float weights (= --bits 16)"},
        {"--weights-only", CLI_FLAG, &a.weights_only, "quantize weights only (no calibration, no QDQ activations)"},
        {"--granularity", CLI_STRING, &a.granularity, "weight scales per tensor|channel (default)|block:N"},
        {"--symmetric", CLI_FLAG, &a.symmetric, "zero point 0 for weights and activations (i8 activations)"},
        {"--asymmetric", CLI_FLAG, &a.asymmetric, "zero points for weights and activations"},
        {"--weight-clip", CLI_STRING, &a.weight_clip, "minmax|mse weight ranges (default: mse at 4 bits and below)"},
        {"--calib", CLI_STRING, &a.calib, "calibration data (the forms of --data in kiln train)"},
        {"--calib-samples", CLI_INT, &a.calib_samples, "calibration samples: the first N (default 512)"},
        {"--calib-method", CLI_STRING, &a.calib_method, "minmax (default)|percentile:P|kl|mse"},
        {"--codebook", CLI_INT, &a.codebook, "K: k-means codebook weights of 2, 4, 16 or 256 entries"},
        {"--log2", CLI_FLAG, &a.log2, "power-of-two weight levels {0, +-2^e} (as a codebook)"},
        {"--bias-correction", CLI_FLAG, &a.bias_correction, "correct biases for the weights' mean rounding error"},
        {"--recalibrate-bn", CLI_FLAG, &a.recalibrate_bn, "re-estimate BatchNormalization statistics on --calib"},
        {"--adaround", CLI_FLAG, &a.adaround, "learn each weight's rounding up or down on --calib (AdaRound)"},
        {"--adaround-iters", CLI_INT, &a.adaround_iters, "AdaRound optimisation steps per layer (default 500)"},
        {"--adaround-lambda", CLI_FLOAT, &a.adaround_lambda, "weight of AdaRound's rounding regulariser (default 0.01)"},
        {"--adaround-lr", CLI_FLOAT, &a.adaround_lr, "AdaRound's Adam learning rate (default 0.01)"},
        {"--skip", CLI_STRING, &a.skip, "NAME,...: layers (node or weight names) left in f32"},
        {"--max-drop", CLI_FLOAT, &a.max_drop, "P: per-layer weight bits (8/4/2/f32) losing at most P accuracy points on --val"},
        {"--latency", CLI_FLAG, &a.latency, "measure latency at batch 1 and 32 before and after"},
        {"--dry-run", CLI_FLAG, &a.dry_run, "print the report and the table; write nothing"},
        {"--qat", CLI_FLAG, &a.qat, "quantization-aware training on --data for --epochs (with kiln train's options)"},
        {"--lsq", CLI_FLAG, &a.lsq, "--qat: learn the scales (LSQ) instead of min/max"},
    };
    int n_options = OWN;
    /* kiln train's options; their --val (the accuracy before and after), --seed (also k-means++'s),
     * --threads and --json serve post-training quantization too. */
    n_options += cli_train_option_table(&a.train, options + n_options);
    const char *model = NULL;
    int n_pos;
    if (!cli_parse("quantize", usage, argc, argv, 2, options, n_options, &model, 1, &n_pos))
        return 2;
    if (!model)
        return cli_fail_msg("quantize", "a model is required (kiln quantize --help)");
    if (!a.out && !a.dry_run)
        return cli_fail_msg("quantize", "--out is required (or --dry-run)");
    if (a.out && !cli_has_suffix(a.out, ".kiln") && !cli_has_suffix(a.out, ".onnx"))
        return cli_fail_msg("quantize", "the output '%s' must end in .kiln or .onnx", a.out);
    if (a.out && cli_same_file(model, a.out))
        return cli_fail_msg("quantize", "the output '%s' is the input model; write to another file", a.out);
    return a.qat ? run_qat(&a, model) : run_ptq(&a, model);
}
