/* kiln quantize: post-training quantization of a model's weights (and activations, calibrated), with a
 * per-layer report and a before/after table (docs/compress.md, "Quantization"). */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "compress/mixed.h"
#include "compress/quantize.h"
#include "compress/summary.h"
#include "core/status.h"
#include "core/threads.h"
#include "train/api.h"
#include "train/evaluate.h"

static const char usage[] =
    "M.kiln|M.onnx|SPEC --out OUT.kiln|OUT.onnx [--bits 16|8|4|2|1] [--float f16|bf16] [--weights-only]\n"
    "       [--granularity tensor|channel|block:N] [--symmetric|--asymmetric] [--weight-clip minmax|mse]\n"
    "       [--calib DATA] [--calib-samples N] [--calib-method minmax|percentile:P|kl|mse] [--codebook K] [--log2]\n"
    "       [--bias-correction] [--recalibrate-bn] [--adaround [--adaround-iters N] [--adaround-lambda L]\n"
    "       [--adaround-lr LR]] [--skip NAME,...] [--val DATA] [--max-drop P] [--dry-run] [--json]";

typedef struct quantize_args {
    const char *out, *float_type, *granularity, *weight_clip, *calib, *calib_method, *skip, *val;
    int64_t bits, calib_samples, codebook, threads, seed, adaround_iters;
    double max_drop, adaround_lambda, adaround_lr;
    bool weights_only, symmetric, asymmetric, log2, bias_correction, recalibrate_bn, adaround, dry_run, json, latency;
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
    o->seed = (uint64_t)a->seed;
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

int cmd_quantize(int argc, char **argv) {
    const kn_adaround_options ada = kn_adaround_options_default();
    quantize_args a = {.bits = 8, .calib_samples = 512, .seed = 1, .max_drop = -1, .adaround_iters = ada.iters,
                       .adaround_lambda = ada.lambda, .adaround_lr = ada.lr};
    const cli_option options[] = {
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
        {"--val", CLI_STRING, &a.val, "data for the accuracy before and after"},
        {"--max-drop", CLI_FLOAT, &a.max_drop, "P: per-layer weight bits (8/4/2/f32) losing at most P accuracy points on --val"},
        {"--latency", CLI_FLAG, &a.latency, "measure latency at batch 1 and 32 before and after"},
        {"--dry-run", CLI_FLAG, &a.dry_run, "print the report and the table; write nothing"},
        {"--json", CLI_FLAG, &a.json, "print one JSON object"},
        {"--threads", CLI_INT, &a.threads, "threads (default: all cores)"},
        {"--seed", CLI_INT, &a.seed, "k-means++ seed (default 1)"},
    };
    const int n_options = (int)(sizeof options / sizeof options[0]);
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
    kn_quant_options o;
    char *skip_copy = NULL;
    const char *skip_list[64];
    if (!options_build(&a, &o, &skip_copy, skip_list, 64)) {
        free(skip_copy);
        return 1;
    }
    kn_threads_set((int)a.threads);

    kn_graph g;
    kn_dataset calib = {0}, val = {0};
    kiln_status st = kn_graph_load_path(model, 1, &g, NULL, NULL);
    if (st != KILN_OK) {
        free(skip_copy);
        return cli_fail("quantize", st);
    }
    if (a.calib)
        st = load_data(a.calib, &g, &calib);
    if (st == KILN_OK && a.val)
        st = load_data(a.val, &g, &val);
    kn_model_summary rows[2] = {{0}};
    kn_summary_options summary = {.data = a.val ? &val : NULL, .latency = a.latency};
    if (st == KILN_OK)
        st = kn_model_summarize(&g, &summary, &rows[0]);
    kn_mixed_plan plan = {0};
    if (st == KILN_OK && a.max_drop >= 0) {
        st = kn_mixed_plan_make(&g, a.calib ? &calib : NULL, a.val ? &val : NULL, &o, a.max_drop, &plan);
        if (st == KILN_OK && !a.json)
            kn_mixed_plan_print(stdout, &plan, a.max_drop);
        o.layer_bits = plan.bits;
    }
    kn_quant_report report = {0};
    if (st == KILN_OK)
        st = kn_quantize(&g, a.calib ? &calib : NULL, &o, &report);
    if (st == KILN_OK)
        st = kn_model_summarize(&g, &summary, &rows[1]);
    if (st == KILN_OK && !a.dry_run)
        st = kn_graph_save_path(&g, a.out);
    int rc = 0;
    const char *labels[2] = {"f32", a.dry_run ? "quantized (dry run)" : "quantized"};
    if (st != KILN_OK) {
        rc = cli_fail("quantize", st);
    } else if (a.json) {
        printf("{\"command\":\"quantize\",\"model\":");
        cli_json_string(stdout, model);
        printf(",\"out\":");
        if (a.dry_run)
            printf("null");
        else
            cli_json_string(stdout, a.out);
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
        if (a.dry_run)
            printf("dry run: nothing written\n");
        else
            printf("wrote %s\n", a.out);
    }
    kn_quant_report_free(&report);
    kn_mixed_plan_free(&plan);
    kn_dataset_free(&calib);
    kn_dataset_free(&val);
    kn_graph_free(&g);
    free(skip_copy);
    return rc;
}
