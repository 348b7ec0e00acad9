/* kiln convert: rewrites a model in another format, picked by the output's extension (.kiln or .onnx). */
#include <string.h>

#include "cli.h"
#include "core/status.h"
#ifdef KILN_HAVE_ONNX
#include "format/onnx/onnx_export.h"
#endif

static const char usage[] =
    "IN OUT   (IN: .onnx, .kiln, .ckpt or a spec; OUT: .kiln or .onnx) [--norm-as-metadata] [--json]";

static kiln_status save(const kn_graph *g, const char *path, bool norm_as_metadata) {
    if (cli_has_suffix(path, ".kiln"))
        return kn_kiln_save(path, g, NULL, 0);
#ifdef KILN_HAVE_ONNX
    kn_onnx_export_options options = {.norm_as_metadata = norm_as_metadata};
    return kn_onnx_export_file_with(g, path, &options);
#else
    (void)norm_as_metadata;
    return kn_fail(KILN_ERR_UNSUPPORTED, "%s: this kiln was built without ONNX support (it needs protobuf-c; see "
                   "README)", path);
#endif
}

static void print_summary(const char *in, const char *out, const kn_graph *g, bool json) {
    int64_t bytes_in = cli_file_size(in), bytes_out = cli_file_size(out);
    if (json) {
        printf("{\"command\":\"convert\",\"in\":");
        cli_json_string(stdout, in);
        printf(",\"out\":");
        cli_json_string(stdout, out);
        printf(",\"nodes\":%d,\"ops\":", g->n_nodes);
        cli_print_op_counts(stdout, g, true);
        printf(",\"params\":%lld,\"bytes_in\":%lld,\"bytes_out\":%lld}\n", (long long)kn_graph_param_count(g),
               (long long)bytes_in, (long long)bytes_out);
        return;
    }
    char size_in[32], size_out[32];
    cli_format_bytes((double)bytes_in, size_in, sizeof size_in);
    cli_format_bytes((double)bytes_out, size_out, sizeof size_out);
    printf("converted %s -> %s\n  ops     %d nodes: ", in, out, g->n_nodes);
    cli_print_op_counts(stdout, g, false);
    printf("\n  params  %lld\n  size    %s -> %s\n", (long long)kn_graph_param_count(g), size_in, size_out);
}

int cmd_convert(int argc, char **argv) {
    bool json = false, norm_as_metadata = false;
    const cli_option options[] = {
        {"--norm-as-metadata", CLI_FLAG, &norm_as_metadata,
         "ONNX: keep the input standardisation as metadata, not Sub/Div nodes (the caller standardises)"},
        {"--json", CLI_FLAG, &json, "print one JSON object with the summary"},
    };
    const int n_options = (int)(sizeof options / sizeof options[0]);
    const char *paths[2] = {NULL, NULL};
    int n_pos;
    if (!cli_parse("convert", usage, argc, argv, 2, options, n_options, paths, 2, &n_pos))
        return 2;
    if (n_pos != 2) {
        fprintf(stderr, "kiln convert: error: an input and an output model are required\n");
        cli_print_help(stderr, "convert", usage, options, n_options);
        return 2;
    }
    if (!cli_has_suffix(paths[1], ".kiln") && !cli_has_suffix(paths[1], ".onnx")) {
        fprintf(stderr, "kiln convert: error: the output '%s' must end in .kiln or .onnx\n", paths[1]);
        return 2;
    }
    kn_graph g;
    kiln_status st = cli_load_model(paths[0], 1, &g, NULL, NULL);
    if (st != KILN_OK)
        return cli_fail("convert", st);
    st = save(&g, paths[1], norm_as_metadata);
    if (st == KILN_OK)
        print_summary(paths[0], paths[1], &g, json);
    kn_graph_free(&g);
    return st == KILN_OK ? 0 : cli_fail("convert", st);
}
