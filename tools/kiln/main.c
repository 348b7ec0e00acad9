/* kiln: train, evaluate, convert, compress and run neural networks. */
#include <stdio.h>
#include <string.h>

#include "kiln/kiln.h"

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_distill(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_quantize(int argc, char **argv);

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} commands[] = {
    {"train", cmd_train, "train a model spec or .kiln model on a dataset"},
    {"eval", cmd_eval, "loss, accuracy and confusion matrix of a model on a dataset"},
    {"convert", cmd_convert, "convert a model between .onnx and .kiln"},
    {"info", cmd_info, "inputs, outputs, ops, params, FLOPs, bytes by dtype, sparsity, memory of a model"},
    {"run", cmd_run, "run a model on .npy, image or CSV inputs"},
    {"distill", cmd_distill, "train a student on a teacher's soft targets (knowledge distillation)"},
    {"prune", cmd_prune, "prune weights (stored sparse) or whole channels and neurons, with fine-tuning"},
    {"quantize", cmd_quantize, "post-training quantization: 16 to 1-bit weights, calibrated 8-bit activations"},
    {"bench", cmd_bench, "latency, throughput and peak memory of a model, with a per-op profile"},
    {"report", cmd_report, "an HTML page comparing models: accuracy against size and latency, per layer"},
};

static void print_usage(FILE *out) {
    fprintf(out, "usage: kiln <command> [options]   (kiln <command> --help for its options)\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        print_usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("kiln %s\n", kiln_version());
        return 0;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        print_usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc, argv);
    fprintf(stderr, "kiln: error: unknown command '%s'\n", argv[1]);
    print_usage(stderr);
    return 2;
}
