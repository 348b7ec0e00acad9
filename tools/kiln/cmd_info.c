/* kiln info: what a model is — inputs, outputs, ops, parameters, FLOPs, weight bytes by how they are
 * stored (dtype, or compact encoding: f16, bf16, affine, codebook, sparse), sparsity, planned activation
 * memory, file size against the same model with f32 weights, class names and metadata. */
#include <string.h>

#include "cli.h"
#include "core/status.h"
#include "format/storage.h"
#include "runtime/runtime.h"

static const char usage[] = "M.kiln|M.onnx|SPEC.txt [--json]";

/* Initializers stored one way ("f32", "affine i4 per-channel", ...): how many, their elements and the
 * bytes they take in the file. */
typedef struct weight_kind {
    char name[64];
    int tensors;
    int64_t values, bytes;
} weight_kind;

enum { MAX_WEIGHT_KINDS = 32 };

/* What info reports beyond the graph itself, measured at batch 1. */
typedef struct model_facts {
    const char *path;
    const kiln_model *model;
    const kn_graph *graph;       /* as saved */
    int optimized_nodes;
    int64_t file_bytes;
    int64_t flops;               /* per run of the saved graph at batch 1 */
    bool open_dims;              /* a dimension besides the batch is open: taken as 1 */
    bool any_open;               /* some input dimension is open: taken as 1 */
    bool from_values;            /* shapes follow input values: no output shapes, FLOPs or memory */
    kiln_memory_info memory;     /* of the optimized graph at batch 1 */
    kn_shape output_shapes[16];  /* at batch 1 */
    kn_dtype output_dtypes[16];
    kn_output_shaping output_shaping[16]; /* whether the run may change the shape, or gives it */
    weight_kind kinds[MAX_WEIGHT_KINDS];
    int n_kinds;
    int64_t f32_delta;           /* bytes the compact tensors would add as plain f32 */
    int64_t float_params, zero_params;
} model_facts;

/* Runs the planner at batch 1: FLOPs and output shapes from the graph as saved (the model as designed),
 * activation memory from the optimized graph (what a session really allocates). */
static kiln_status measure_runtime(model_facts *f) {
    kiln_session_options *options = kiln_session_options_create();
    if (!options)
        return KILN_ERR_NOMEM;
    kiln_session *saved = NULL, *optimized = NULL;
    kiln_memory_info unused;
    kiln_status st = kiln_session_options_set_optimize(options, 0);
    if (st == KILN_OK)
        st = kiln_session_create(f->model, options, &saved);
    if (st == KILN_OK)
        st = kiln_session_memory(saved, &unused);
    if (st != KILN_OK && saved && kn_session_shapes_from_values(saved)) {
        f->from_values = true; /* nothing to measure before the values are given */
        kiln_session_free(saved);
        kiln_session_options_free(options);
        return KILN_OK;
    }
    for (int i = 0; st == KILN_OK && i < kiln_session_profile_count(saved, KILN_PROFILE_BY_NODE); i++) {
        kiln_profile_entry e;
        st = kiln_session_profile_entry(saved, KILN_PROFILE_BY_NODE, i, &e);
        f->flops = kn_count_add(f->flops, e.flops); /* saturates on hostile shapes */
    }
    for (int i = 0; st == KILN_OK && i < kiln_session_output_count(saved); i++) {
        kiln_dtype dtype;
        f->output_shaping[i] = kn_session_output_shaping(saved, i);
        if (f->output_shaping[i] == KN_OUTPUT_AFTER_RUN)
            continue; /* known after a run */
        st = kiln_session_output_shape(saved, i, &f->output_shapes[i].ndim, f->output_shapes[i].d);
        if (st == KILN_OK && (st = kiln_session_output_dtype(saved, i, &dtype)) == KILN_OK)
            f->output_dtypes[i] = (kn_dtype)dtype;
    }
    if (st == KILN_OK)
        st = kiln_session_create(f->model, NULL, &optimized);
    if (st == KILN_OK)
        st = kiln_session_memory(optimized, &f->memory);
    kiln_session_free(saved);
    kiln_session_free(optimized);
    kiln_session_options_free(options);
    return st;
}

static void add_weight(model_facts *f, const char *name, int64_t values, int64_t bytes) {
    int k = 0;
    while (k < f->n_kinds && strcmp(f->kinds[k].name, name) != 0)
        k++;
    if (k == f->n_kinds) {
        if (k == MAX_WEIGHT_KINDS)
            k--; /* more ways of storing than any kiln writes: the last row takes the rest */
        else
            snprintf(f->kinds[f->n_kinds++].name, sizeof f->kinds[k].name, "%s", name);
    }
    f->kinds[k].tensors++;
    f->kinds[k].values += values;
    f->kinds[k].bytes += bytes;
}

/* Exact zeros of an f32 initializer: from its data, or from its levels when the model keeps it packed
 * (KN_KILN_LOAD_PACKED: storage, no data), where an element is 0 exactly when its level is the zero point. */
static int64_t zeros_of(const kn_value *v) {
    int64_t n = kn_shape_numel(&v->shape), zeros = 0;
    for (int64_t i = 0; i < n; i++)
        zeros += v->data ? ((const float *)v->data)[i] == 0.0f
                         : kn_storage_level(v->storage, i) ==
                               kn_storage_zero_point(v->storage, kn_storage_group_of(v->storage, i));
    return zeros;
}

/* Initializers and their bytes by how they are stored; exact zeros among the float trainable parameters. */
static void count_weights(model_facts *f) {
    const kn_graph *g = f->graph;
    for (int v = 0; v < g->n_values; v++) {
        const kn_value *val = &g->values[v];
        size_t bytes;
        if ((!val->data && !val->storage) || val->kind == KN_VALUE_INPUT || val->kind == KN_VALUE_ACT ||
            !kn_shape_bytes(&val->shape, val->dtype, &bytes))
            continue;
        int64_t n = kn_shape_numel(&val->shape);
        if (val->storage) {
            char name[64];
            int64_t stored = kn_storage_bytes(val->storage);
            add_weight(f, kn_storage_describe(val->storage, name, sizeof name), n, stored);
            f->f32_delta += (int64_t)bytes - stored;
        } else {
            add_weight(f, kn_dtype_name(val->dtype), n, (int64_t)bytes);
        }
        if (val->kind != KN_VALUE_PARAM || val->dtype != KN_F32)
            continue;
        f->float_params += n;
        f->zero_params += zeros_of(val);
    }
}

static kiln_status gather(model_facts *f) {
    f->graph = kn_model_graph(f->model, false);
    f->optimized_nodes = kn_model_graph(f->model, true)->n_nodes;
    f->file_bytes = cli_file_size(f->path);
    for (int i = 0; i < f->graph->n_inputs; i++) {
        kn_shape s = kn_graph_input_declared(f->graph, i);
        for (int d = 0; d < s.ndim; d++)
            f->open_dims |= s.d[d] < 0 && (d > 0 || s.ndim < 2);
        for (int d = 0; d < s.ndim; d++)
            f->any_open |= s.d[d] < 0;
    }
    count_weights(f);
    return measure_runtime(f);
}

/* Exact zeros of a float parameter of at least two dimensions (a layer's weight), or -1 for others. */
static int64_t weight_zeros(const kn_value *v) {
    if (v->kind != KN_VALUE_PARAM || v->dtype != KN_F32 || v->shape.ndim < 2 || (!v->data && !v->storage))
        return -1;
    return zeros_of(v);
}

/* One line per layer weight with zeros in it (a pruned model), or a JSON object of them. */
static void print_layer_sparsity(const kn_graph *g, bool json) {
    bool first = true;
    for (int v = 0; v < g->n_values; v++) {
        int64_t zeros = weight_zeros(&g->values[v]), n = kn_shape_numel(&g->values[v].shape);
        if (zeros <= 0)
            continue;
        if (json) {
            printf("%s", first ? "" : ",");
            cli_json_string(stdout, g->values[v].name);
            printf(":%.6f", (double)zeros / (double)n);
        } else {
            printf("%-10s %s %.2f%% zero (%lld of %lld)\n", first ? "sparsity" : "", g->values[v].name,
                   100.0 * (double)zeros / (double)n, (long long)zeros, (long long)n);
        }
        first = false;
    }
}

/* ---- text --------------------------------------------------------------------------------------- */

/* "12,345". */
static char *format_count(int64_t n, char *buf, size_t size) {
    char digits[32];
    int len = snprintf(digits, sizeof digits, "%lld", (long long)n), out = 0;
    for (int i = 0; i < len && out + 2 < (int)size; i++) {
        if (i > 0 && digits[i - 1] != '-' && (len - i) % 3 == 0)
            buf[out++] = ',';
        buf[out++] = digits[i];
    }
    buf[out] = '\0';
    return buf;
}

/* "662.43 KFLOP", "8.12 MFLOP". */
static void format_flops(double flops, char *buf, size_t size) {
    static const char units[] = " KMGTP";
    int unit = 0;
    while (flops >= 1000 && unit < 5) {
        flops /= 1000;
        unit++;
    }
    snprintf(buf, size, unit ? "%.2f %cFLOP" : "%.0f FLOP", flops, units[unit]);
}

static void print_text(const model_facts *f) {
    const kn_graph *g = f->graph;
    char size[32], a[32], b[32], c[32];
    cli_format_bytes((double)f->file_bytes, size, sizeof size);
    printf("model      %s (%s)\n", f->path, size);
    for (int i = 0; i < g->n_inputs; i++) {
        const kn_value *v = &g->values[g->inputs[i]];
        kn_shape declared = kn_graph_input_declared(g, i);
        char shape[96];
        printf("%-10s %s %s %s\n", i ? "" : "inputs", v->name, cli_input_shape_str(&declared, shape, sizeof shape),
               kn_dtype_name(v->dtype));
    }
    for (int i = 0; i < g->n_outputs; i++) {
        char shape[96];
        if (f->from_values)
            printf("%-10s %s: shape and dtype follow the values of the inputs\n", i ? "" : "outputs",
                   g->values[g->outputs[i]].name);
        else if (f->output_shaping[i] == KN_OUTPUT_AFTER_RUN)
            printf("%-10s %s: shape and dtype follow values the model computes as it runs\n", i ? "" : "outputs",
                   g->values[g->outputs[i]].name);
        else
            printf("%-10s %s %s %s%s%s\n", i ? "" : "outputs", g->values[g->outputs[i]].name,
                   kn_shape_str(&f->output_shapes[i], shape, sizeof shape), kn_dtype_name(f->output_dtypes[i]),
                   i || !f->any_open ? "" : "  (open dimensions at 1)",
                   f->output_shaping[i] == KN_OUTPUT_RUN_MAY_CHANGE ? "  (before a run: values may change it)" : "");
    }
    printf("ops        %d nodes (%d after optimization): ", g->n_nodes, f->optimized_nodes);
    cli_print_op_counts(stdout, g, false);
    printf("\nparams     %lld trainable", (long long)kn_graph_param_count(g));
    if (f->float_params)
        printf("; sparsity %.2f%% (exact zeros among the float parameters)",
               100.0 * (double)f->zero_params / (double)f->float_params);
    printf("\n");
    print_layer_sparsity(g, false);
    for (int k = 0; k < f->n_kinds; k++) {
        const weight_kind *w = &f->kinds[k];
        printf("%-10s %s: %d tensor%s, %s bytes (%s values)\n", k ? "" : "weights", w->name, w->tensors,
               w->tensors == 1 ? "" : "s", format_count(w->bytes, a, sizeof a),
               format_count(w->values, b, sizeof b));
    }
    if (f->f32_delta && f->file_bytes > 0) {
        int64_t as_f32 = f->file_bytes + f->f32_delta;
        printf("size       %s-byte file; about %s bytes with f32 weights (%.2fx smaller)\n",
               format_count(f->file_bytes, a, sizeof a), format_count(as_f32, b, sizeof b),
               (double)as_f32 / (double)f->file_bytes);
    }
    format_flops((double)f->flops, a, sizeof a);
    cli_format_bytes((double)f->memory.arena_bytes, b, sizeof b);
    cli_format_bytes((double)f->memory.naive_bytes, c, sizeof c);
    if (f->from_values) {
        printf("FLOPs      set at run time: shapes follow the values of the inputs\n");
    } else {
        printf("FLOPs      %s per run at batch 1%s\n", a, f->open_dims ? " (open dimensions at 1)" : "");
        cli_format_bytes((double)f->memory.workspace_bytes, a, sizeof a);
        printf("memory     activations %s planned at batch 1 (%s without reuse), op scratch %s\n", b, c, a);
    }
    if (g->class_names) {
        printf("classes    %d:", g->n_classes);
        for (int i = 0; i < g->n_classes; i++)
            printf("%s %s", i ? "," : "", g->class_names[i]);
        printf("\n");
    }
    if (g->input_mean && g->input_std)
        printf("input norm (x - mean) / std over %lld %s\n", (long long)g->n_norm,
               g->n_norm == 1 ? "value" : "values");
    for (int i = 0; i < g->n_meta; i++)
        printf("%-10s %s = %s\n", i ? "" : "metadata", g->meta[i].key, g->meta[i].value);
}

/* ---- JSON --------------------------------------------------------------------------------------- */

/* An input's declared shape (-1 for an open dimension) or an output's shape. */
static void print_json_shape(const kn_shape *s) {
    printf("[");
    for (int d = 0; d < s->ndim; d++)
        printf("%s%lld", d ? "," : "", (long long)s->d[d]);
    printf("]");
}

static void print_json_io(const model_facts *f, bool input) {
    const kn_graph *g = f->graph;
    int n = input ? g->n_inputs : g->n_outputs;
    printf("[");
    for (int i = 0; i < n; i++) {
        const kn_value *v = &g->values[input ? g->inputs[i] : g->outputs[i]];
        printf("%s{\"name\":", i ? "," : "");
        cli_json_string(stdout, v->name);
        printf(",\"shape\":");
        kn_shape shape = input ? kn_graph_input_declared(g, i) : f->output_shapes[i];
        if (!input && (f->from_values || f->output_shaping[i] == KN_OUTPUT_AFTER_RUN)) {
            printf("null,\"dtype\":null}"); /* they follow the input values */
            continue;
        }
        print_json_shape(&shape);
        printf(",\"dtype\":\"%s\"}", kn_dtype_name(input ? v->dtype : f->output_dtypes[i]));
    }
    printf("]");
}

static void print_json(const model_facts *f) {
    const kn_graph *g = f->graph;
    printf("{\"command\":\"info\",\"model\":");
    cli_json_string(stdout, f->path);
    printf(",\"file_bytes\":%lld,\"inputs\":", (long long)f->file_bytes);
    print_json_io(f, true);
    printf(",\"outputs\":");
    print_json_io(f, false);
    printf(",\"nodes\":%d,\"nodes_optimized\":%d,\"ops\":", g->n_nodes, f->optimized_nodes);
    cli_print_op_counts(stdout, g, true);
    printf(",\"params\":%lld,\"sparsity\":%.6f,\"weight_bytes\":{", (long long)kn_graph_param_count(g),
           f->float_params ? (double)f->zero_params / (double)f->float_params : 0.0);
    for (int k = 0; k < f->n_kinds; k++)
        printf("%s\"%s\":%lld", k ? "," : "", f->kinds[k].name, (long long)f->kinds[k].bytes);
    printf("},\"layer_sparsity\":{");
    print_layer_sparsity(g, true);
    printf("},\"file_bytes_f32\":%lld,\"flops\":%lld,\"open_dims\":%s,\"shapes_from_values\":%s,"
           "\"activation_bytes\":%zu,\"activation_bytes_naive\":%zu,"
           "\"workspace_bytes\":%zu,\"classes\":[",
           (long long)(f->file_bytes + f->f32_delta), (long long)f->flops, f->open_dims ? "true" : "false",
           f->from_values ? "true" : "false",
           f->memory.arena_bytes, f->memory.naive_bytes, f->memory.workspace_bytes);
    for (int i = 0; g->class_names && i < g->n_classes; i++) {
        printf(i ? "," : "");
        cli_json_string(stdout, g->class_names[i]);
    }
    printf("],\"input_norm\":%lld,\"metadata\":{", g->input_mean && g->input_std ? (long long)g->n_norm : 0LL);
    for (int i = 0; i < g->n_meta; i++) {
        printf(i ? "," : "");
        cli_json_string(stdout, g->meta[i].key);
        printf(":");
        cli_json_string(stdout, g->meta[i].value);
    }
    printf("}}\n");
}

int cmd_info(int argc, char **argv) {
    bool json = false;
    const cli_option options[] = {
        {"--json", CLI_FLAG, &json, "print one JSON object"},
    };
    const int n_options = (int)(sizeof options / sizeof options[0]);
    const char *path = NULL;
    int n_pos;
    if (!cli_parse("info", usage, argc, argv, 2, options, n_options, &path, 1, &n_pos))
        return 2;
    if (!path) {
        fprintf(stderr, "kiln info: error: a model is required\n");
        cli_print_help(stderr, "info", usage, options, n_options);
        return 2;
    }
    kiln_model *model;
    kiln_status st = cli_open_model(path, &model);
    if (st != KILN_OK)
        return cli_fail("info", st);
    model_facts facts = {.path = path, .model = model};
    st = gather(&facts);
    if (st == KILN_OK && json)
        print_json(&facts);
    else if (st == KILN_OK)
        print_text(&facts);
    kiln_model_free(model);
    return st == KILN_OK ? 0 : cli_fail("info", st);
}
