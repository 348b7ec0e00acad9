/* kiln: train, evaluate, convert, compress and run neural networks. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
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

enum { N_COMMANDS = sizeof commands / sizeof commands[0] };

static void print_usage(FILE *out) {
    fprintf(out, "usage: kiln <command> [options]   (kiln help <command> or kiln <command> --help for its "
                 "options; kiln --version)\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
}

static int find_command(const char *name) {
    for (int i = 0; i < N_COMMANDS; i++)
        if (strcmp(name, commands[i].name) == 0)
            return i;
    return -1;
}

/* One line for a command kiln does not have, with the nearest one. */
static int unknown_command(const char *name) {
    const char *names[N_COMMANDS];
    for (int i = 0; i < N_COMMANDS; i++)
        names[i] = commands[i].name;
    const char *near = cli_closest(name, strlen(name), names, N_COMMANDS);
    fprintf(stderr, "kiln: error: unknown command '%s'", name);
    if (near)
        fprintf(stderr, " (did you mean %s?)", near);
    fprintf(stderr, "; kiln --help lists the commands\n");
    return 2;
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
    bool help = strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0;
    if (help && argc == 2) {
        print_usage(stdout);
        return 0;
    }
    if (help) { /* kiln help train: as kiln train --help */
        int i = find_command(argv[2]);
        if (i < 0)
            return unknown_command(argv[2]);
        char *help_argv[] = {argv[0], argv[2], "--help", NULL};
        return commands[i].run(3, help_argv);
    }
    int i = find_command(argv[1]);
    return i >= 0 ? commands[i].run(argc, argv) : unknown_command(argv[1]);
}
