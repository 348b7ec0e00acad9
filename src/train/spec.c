#include "train/spec.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/status.h"
#include "ops/op.h"

enum { SPEC_MAX_TOKENS = 16, SPEC_MAX_NESTING = 16 };

/* The graph under construction and where the spec has got to. */
typedef struct spec_builder {
    kn_graph *g;
    kn_rng rng;
    int current;                       /* value id of the latest layer's output */
    int residual_start[SPEC_MAX_NESTING];
    int residual_line[SPEC_MAX_NESTING];
    int n_residual;
    int layer_index;                   /* counts layers for unique names */
    char prefix[96];                   /* name of the layer being built: "conv3" */
} spec_builder;

typedef struct spec_line {
    char *tok[SPEC_MAX_TOKENS];
    int n;
} spec_line;

/* A copy, not a pointer: adding a value may move g->values, and layers add parameters after reading
 * the shape they are sized from. */
static kn_shape current_shape(const spec_builder *b) { return b->g->values[b->current].shape; }

/* ---- graph construction helpers ---- */

static kiln_status add_param(spec_builder *b, const char *suffix, kn_value_kind kind, int ndim, const int64_t *dims,
                             int *id) {
    char name[128];
    snprintf(name, sizeof name, "%s.%s", b->prefix, suffix);
    kn_shape shape = kn_shape_of(ndim, dims);
    return kn_graph_add_value(b->g, name, kind, KN_F32, &shape, id);
}

static void fill_uniform(kn_graph *g, int value, kn_rng *rng, float bound) {
    float *p = g->values[value].data;
    int64_t n = kn_shape_numel(&g->values[value].shape);
    for (int64_t i = 0; i < n; i++)
        p[i] = (2.0f * kn_rng_uniform(rng) - 1.0f) * bound;
}

static void fill_constant(kn_graph *g, int value, float c) {
    float *p = g->values[value].data;
    int64_t n = kn_shape_numel(&g->values[value].shape);
    for (int64_t i = 0; i < n; i++)
        p[i] = c;
}

static kiln_status add_i64_const(spec_builder *b, const char *suffix, int n, const int64_t *v, int *id) {
    char name[128];
    snprintf(name, sizeof name, "%s.%s", b->prefix, suffix);
    int64_t dims[1] = {n};
    kn_shape shape = kn_shape_of(1, dims);
    KN_TRY(kn_graph_add_value(b->g, name, KN_VALUE_CONST, KN_I64, &shape, id));
    memcpy(b->g->values[*id].data, v, sizeof(int64_t) * (size_t)n);
    return KILN_OK;
}

/* Adds node `op` reading `in` and producing one new value; its index goes to *node (so attributes can
 * be set before calling finish_node). */
static kiln_status add_node(spec_builder *b, const char *op, const char *suffix, int n_in, const int *in,
                            int *node) {
    char name[128];
    snprintf(name, sizeof name, "%s%s%s", b->prefix, suffix[0] ? "." : "", suffix);
    kn_shape empty = {0};
    int out;
    KN_TRY(kn_graph_add_value(b->g, name, KN_VALUE_ACT, KN_F32, &empty, &out));
    return kn_graph_add_node(b->g, op, name, n_in, in, 1, &out, node);
}

/* Runs shape inference of node `node`; its output becomes the current value. */
static kiln_status finish_node(spec_builder *b, int node) {
    kn_node *n = &b->g->nodes[node];
    KN_TRY(kn_node_infer_shapes(b->g, n));
    b->current = n->out[0];
    return KILN_OK;
}

static kiln_status emit(spec_builder *b, const char *op, const char *suffix, int n_in, const int *in) {
    int node;
    KN_TRY(add_node(b, op, suffix, n_in, in, &node));
    return finish_node(b, node);
}

static kiln_status emit_unary(spec_builder *b, const char *op) {
    return emit(b, op, "", 1, &b->current);
}

/* ---- option parsing ---- */

static kiln_status parse_int(const char *s, int64_t lo, int64_t hi, const char *what, int64_t *out) {
    char *end;
    *out = lo;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s must be an integer in [%lld, %lld], got '%s'", what,
                       (long long)lo, (long long)hi, s);
    *out = v;
    return KILN_OK;
}

static kiln_status parse_float(const char *s, double lo, double hi, const char *what, double *out) {
    char *end;
    *out = lo;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return kn_fail(KILN_ERR_INVALID_ARG, "%s must be a number in [%g, %g], got '%s'", what, lo, hi, s);
    *out = v;
    return KILN_OK;
}

/* Option tokens "key=value" from position `first` on; each key must be in `allowed` ("stride pad ..."). */
static kiln_status check_options(const spec_line *l, int first, const char *allowed) {
    for (int i = first; i < l->n; i++) {
        const char *eq = strchr(l->tok[i], '=');
        size_t klen = eq ? (size_t)(eq - l->tok[i]) : strlen(l->tok[i]);
        bool ok = false;
        for (const char *a = allowed; *a && !ok;) {
            size_t alen = strcspn(a, " ");
            ok = eq && alen == klen && strncmp(a, l->tok[i], klen) == 0;
            a += alen;
            while (*a == ' ')
                a++;
        }
        if (!ok)
            return kn_fail(KILN_ERR_INVALID_ARG, "unexpected '%s' for %s (options: %s)", l->tok[i],
                           l->tok[0], allowed[0] ? allowed : "none");
        for (int k = first; k < i; k++)
            if (strncmp(l->tok[k], l->tok[i], klen + 1) == 0)
                return kn_fail(KILN_ERR_INVALID_ARG, "%s: option '%.*s' is given twice ('%s' and '%s')", l->tok[0],
                               (int)klen, l->tok[i], l->tok[k], l->tok[i]);
    }
    return KILN_OK;
}

static kiln_status option_int(const spec_line *l, int first, const char *key, int64_t lo, int64_t hi,
                              int64_t fallback, int64_t *out) {
    size_t klen = strlen(key);
    *out = fallback;
    for (int i = first; i < l->n; i++)
        if (strncmp(l->tok[i], key, klen) == 0 && l->tok[i][klen] == '=')
            return parse_int(l->tok[i] + klen + 1, lo, hi, key, out);
    return KILN_OK;
}

static kiln_status positional_count(const spec_line *l, int want, const char *usage) {
    int n = 1;
    while (n < l->n && !strchr(l->tok[n], '='))
        n++;
    if (n - 1 != want)
        return kn_fail(KILN_ERR_INVALID_ARG, "expected '%s'", usage);
    return KILN_OK;
}

/* ---- layers ---- */

static kiln_status layer_input(spec_builder *b, const spec_line *l) {
    if (b->current >= 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "'input' may appear only once, as the first layer");
    if (l->n < 2 || l->n > 4)
        return kn_fail(KILN_ERR_INVALID_ARG, "expected 'input C H W' or 'input F'");
    int64_t dims[KN_MAX_DIMS] = {1};
    for (int i = 1; i < l->n; i++)
        KN_TRY(parse_int(l->tok[i], 1, 1 << 24, "input size", &dims[i]));
    kn_shape shape = kn_shape_of(l->n, dims);
    int id;
    KN_TRY(kn_graph_add_value(b->g, "input", KN_VALUE_INPUT, KN_F32, &shape, &id));
    KN_TRY(kn_graph_add_input(b->g, id));
    b->current = id;
    return KILN_OK;
}

/* Dense layer on the last axis; the parser's `dense OUT [bias=0]` and the transformer's projections. */
static kiln_status add_dense(spec_builder *b, int64_t out_features, bool bias) {
    const kn_shape s = current_shape(b);
    if (s.ndim < 2)
        return kn_fail(KILN_ERR_SHAPE, "dense needs a (batch, features) or (batch, seq, features) input");
    int64_t in_features = s.d[s.ndim - 1];
    float bound = 1.0f / sqrtf((float)in_features);
    if (s.ndim == 2) {
        /* Gemm with the weight stored (out, in), as PyTorch's Linear keeps it. */
        int w, bv = -1;
        KN_TRY(add_param(b, "weight", KN_VALUE_PARAM, 2, (int64_t[]){out_features, in_features}, &w));
        if (bias)
            KN_TRY(add_param(b, "bias", KN_VALUE_PARAM, 1, (int64_t[]){out_features}, &bv));
        fill_uniform(b->g, w, &b->rng, bound);
        if (bias)
            fill_uniform(b->g, bv, &b->rng, bound);
        int node;
        KN_TRY(add_node(b, "Gemm", "", bias ? 3 : 2, (int[]){b->current, w, bv}, &node));
        KN_TRY(kn_node_set_int(b->g, node, "transB", 1));
        return finish_node(b, node);
    }
    /* On sequences: MatMul with the weight stored (in, out), then Add of the bias. */
    int w;
    KN_TRY(add_param(b, "weight", KN_VALUE_PARAM, 2, (int64_t[]){in_features, out_features}, &w));
    fill_uniform(b->g, w, &b->rng, bound);
    KN_TRY(emit(b, "MatMul", "matmul", 2, (int[]){b->current, w}));
    if (!bias)
        return KILN_OK;
    int bv;
    KN_TRY(add_param(b, "bias", KN_VALUE_PARAM, 1, (int64_t[]){out_features}, &bv));
    fill_uniform(b->g, bv, &b->rng, bound);
    return emit(b, "Add", "add_bias", 2, (int[]){b->current, bv});
}

static kiln_status layer_dense(spec_builder *b, const spec_line *l) {
    int64_t out_features, bias;
    KN_TRY(positional_count(l, 1, "dense OUT [bias=0]"));
    KN_TRY(check_options(l, 2, "bias"));
    KN_TRY(parse_int(l->tok[1], 1, 1 << 24, "dense out_features", &out_features));
    KN_TRY(option_int(l, 2, "bias", 0, 1, 1, &bias));
    return add_dense(b, out_features, bias != 0);
}

static kiln_status layer_conv(spec_builder *b, const spec_line *l) {
    int64_t out_ch, k, stride, pad, groups, dilation, bias;
    KN_TRY(positional_count(l, 2, "conv OUT K [stride=S] [pad=P] [groups=G] [dilation=D] [bias=0]"));
    KN_TRY(check_options(l, 3, "stride pad groups dilation bias"));
    KN_TRY(parse_int(l->tok[1], 1, 1 << 20, "conv out_channels", &out_ch));
    KN_TRY(parse_int(l->tok[2], 1, 1 << 10, "conv kernel", &k));
    KN_TRY(option_int(l, 3, "stride", 1, 1 << 10, 1, &stride));
    KN_TRY(option_int(l, 3, "pad", 0, 1 << 10, 0, &pad));
    KN_TRY(option_int(l, 3, "groups", 1, 1 << 20, 1, &groups));
    KN_TRY(option_int(l, 3, "dilation", 1, 1 << 10, 1, &dilation));
    KN_TRY(option_int(l, 3, "bias", 0, 1, 1, &bias));
    const kn_shape s = current_shape(b);
    if (s.ndim != 4)
        return kn_fail(KILN_ERR_SHAPE, "conv needs an image input (C H W)");
    int64_t in_ch = s.d[1];
    if (in_ch % groups || out_ch % groups)
        return kn_fail(KILN_ERR_SHAPE, "groups=%lld must divide in_channels %lld and out_channels %lld",
                       (long long)groups, (long long)in_ch, (long long)out_ch);
    int w, bv = -1;
    KN_TRY(add_param(b, "weight", KN_VALUE_PARAM, 4, (int64_t[]){out_ch, in_ch / groups, k, k}, &w));
    if (bias)
        KN_TRY(add_param(b, "bias", KN_VALUE_PARAM, 1, (int64_t[]){out_ch}, &bv));
    float bound = 1.0f / sqrtf((float)(in_ch / groups * k * k));
    fill_uniform(b->g, w, &b->rng, bound);
    if (bias)
        fill_uniform(b->g, bv, &b->rng, bound);
    int node;
    KN_TRY(add_node(b, "Conv", "", bias ? 3 : 2, (int[]){b->current, w, bv}, &node));
    KN_TRY(kn_node_set_ints(b->g, node, "kernel_shape", 2, (int64_t[]){k, k}));
    KN_TRY(kn_node_set_ints(b->g, node, "strides", 2, (int64_t[]){stride, stride}));
    KN_TRY(kn_node_set_ints(b->g, node, "pads", 4, (int64_t[]){pad, pad, pad, pad}));
    KN_TRY(kn_node_set_ints(b->g, node, "dilations", 2, (int64_t[]){dilation, dilation}));
    KN_TRY(kn_node_set_int(b->g, node, "group", groups));
    return finish_node(b, node);
}

static kiln_status layer_pool(spec_builder *b, const spec_line *l, const char *op) {
    int64_t k = 0, stride = 0;
    KN_TRY(positional_count(l, 1, "maxpool|avgpool K [stride=S]"));
    KN_TRY(check_options(l, 2, "stride"));
    KN_TRY(parse_int(l->tok[1], 1, 1 << 10, "pool kernel", &k));
    KN_TRY(option_int(l, 2, "stride", 1, 1 << 10, k, &stride));
    if (current_shape(b).ndim != 4)
        return kn_fail(KILN_ERR_SHAPE, "%s needs an image input (C H W)", l->tok[0]);
    int node;
    KN_TRY(add_node(b, op, "", 1, &b->current, &node));
    KN_TRY(kn_node_set_ints(b->g, node, "kernel_shape", 2, (int64_t[]){k, k}));
    KN_TRY(kn_node_set_ints(b->g, node, "strides", 2, (int64_t[]){stride, stride}));
    return finish_node(b, node);
}

static kiln_status layer_batchnorm(spec_builder *b, const spec_line *l) {
    KN_TRY(positional_count(l, 0, "batchnorm"));
    const kn_shape s = current_shape(b);
    if (s.ndim != 2 && s.ndim != 4)
        return kn_fail(KILN_ERR_SHAPE, "batchnorm needs a (batch, features) or image input");
    int64_t c = s.d[1];
    int scale, shift, mean, var;
    KN_TRY(add_param(b, "weight", KN_VALUE_PARAM, 1, &c, &scale));
    KN_TRY(add_param(b, "bias", KN_VALUE_PARAM, 1, &c, &shift));
    KN_TRY(add_param(b, "running_mean", KN_VALUE_STATE, 1, &c, &mean));
    KN_TRY(add_param(b, "running_var", KN_VALUE_STATE, 1, &c, &var));
    fill_constant(b->g, scale, 1.0f);
    fill_constant(b->g, var, 1.0f);
    int node;
    KN_TRY(add_node(b, "BatchNormalization", "", 5, (int[]){b->current, scale, shift, mean, var}, &node));
    KN_TRY(kn_node_set_float(b->g, node, "epsilon", 1e-5f));
    KN_TRY(kn_node_set_float(b->g, node, "momentum", 0.9f));
    return finish_node(b, node);
}

/* LayerNorm over the last axis (features of a vector or a sequence), or over C, H, W of an image. */
static kiln_status add_layernorm(spec_builder *b) {
    const kn_shape s = current_shape(b);
    int axis = s.ndim == 4 ? 1 : s.ndim - 1;
    int64_t n = kn_shape_span(&s, axis, s.ndim);
    int64_t dims[KN_MAX_DIMS];
    for (int i = axis; i < s.ndim; i++)
        dims[i - axis] = s.d[i];
    int scale, shift;
    KN_TRY(add_param(b, "weight", KN_VALUE_PARAM, s.ndim - axis, dims, &scale));
    KN_TRY(add_param(b, "bias", KN_VALUE_PARAM, s.ndim - axis, dims, &shift));
    if (n <= 0)
        return KILN_ERR_NOMEM;
    fill_constant(b->g, scale, 1.0f);
    int node;
    KN_TRY(add_node(b, "LayerNormalization", "", 3, (int[]){b->current, scale, shift}, &node));
    KN_TRY(kn_node_set_int(b->g, node, "axis", axis));
    KN_TRY(kn_node_set_float(b->g, node, "epsilon", 1e-5f));
    return finish_node(b, node);
}

static kiln_status layer_dropout(spec_builder *b, const spec_line *l) {
    double p;
    KN_TRY(positional_count(l, 1, "dropout P"));
    KN_TRY(parse_float(l->tok[1], 0.0, 0.99, "dropout probability", &p));
    int node;
    KN_TRY(add_node(b, "Dropout", "", 1, &b->current, &node));
    KN_TRY(kn_node_set_float(b->g, node, "ratio", (float)p));
    return finish_node(b, node);
}

/* `suffix` names the node within the layer ("" when it is the layer's only node). */
static kiln_status add_flatten(spec_builder *b, const char *suffix) {
    int node;
    KN_TRY(add_node(b, "Flatten", suffix, 1, &b->current, &node));
    KN_TRY(kn_node_set_int(b->g, node, "axis", 1));
    return finish_node(b, node);
}

static kiln_status layer_activation(spec_builder *b, const spec_line *l) {
    const char *name = l->tok[0];
    const char *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    if (eq && !(len == 9 && strncmp(name, "leakyrelu", 9) == 0) && !(len == 3 && strncmp(name, "elu", 3) == 0) &&
        !(len == 4 && strncmp(name, "gelu", 4) == 0))
        return kn_fail(KILN_ERR_INVALID_ARG, "'%s' takes no value", name);
    static const struct { const char *spec, *op; } table[] = {
        {"relu", "Relu"}, {"sigmoid", "Sigmoid"}, {"tanh", "Tanh"}, {"gelu", "Gelu"},
        {"leakyrelu", "LeakyRelu"}, {"elu", "Elu"}, {"softmax", "Softmax"},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (strlen(table[i].spec) != len || strncmp(table[i].spec, name, len) != 0)
            continue;
        KN_TRY(positional_count(l, 0, name));
        int node;
        KN_TRY(add_node(b, table[i].op, "", 1, &b->current, &node));
        if (eq && len == 4) {
            if (strcmp(eq + 1, "tanh") != 0 && strcmp(eq + 1, "none") != 0)
                return kn_fail(KILN_ERR_INVALID_ARG, "gelu takes =tanh or =none, got '%s'", eq + 1);
            KN_TRY(kn_node_set_string(b->g, node, "approximate", eq + 1));
        } else if (eq) {
            double alpha;
            KN_TRY(parse_float(eq + 1, 0.0, 100.0, "alpha", &alpha));
            KN_TRY(kn_node_set_float(b->g, node, "alpha", (float)alpha));
        }
        if (len == 7 && strncmp(name, "softmax", 7) == 0)
            KN_TRY(kn_node_set_int(b->g, node, "axis", -1));
        return finish_node(b, node);
    }
    return KILN_ERR_UNSUPPORTED;
}

/* (N, C, H, W) -> (N, H/P * W/P, C*P*P): each P x P patch becomes one token, channel-major inside. */
static kiln_status layer_patchify(spec_builder *b, const spec_line *l) {
    int64_t p;
    KN_TRY(positional_count(l, 1, "patchify P"));
    KN_TRY(parse_int(l->tok[1], 1, 1 << 10, "patch size", &p));
    const kn_shape s = current_shape(b);
    if (s.ndim != 4)
        return kn_fail(KILN_ERR_SHAPE, "patchify needs an image input (C H W)");
    int64_t c = s.d[1], h = s.d[2], w = s.d[3];
    if (h % p || w % p)
        return kn_fail(KILN_ERR_SHAPE, "patch size %lld does not divide the image %lldx%lld", (long long)p,
                       (long long)h, (long long)w);
    int split, merged;
    KN_TRY(add_i64_const(b, "split_shape", 6, (int64_t[]){0, c, h / p, p, w / p, p}, &split));
    KN_TRY(add_i64_const(b, "token_shape", 3, (int64_t[]){0, (h / p) * (w / p), c * p * p}, &merged));
    KN_TRY(emit(b, "Reshape", "split", 2, (int[]){b->current, split}));
    int node;
    KN_TRY(add_node(b, "Transpose", "transpose", 1, &b->current, &node));
    KN_TRY(kn_node_set_ints(b->g, node, "perm", 6, (int64_t[]){0, 2, 4, 1, 3, 5}));
    KN_TRY(finish_node(b, node));
    return emit(b, "Reshape", "tokens", 2, (int[]){b->current, merged});
}

static kiln_status layer_posembed(spec_builder *b) {
    const kn_shape s = current_shape(b);
    if (s.ndim != 3)
        return kn_fail(KILN_ERR_SHAPE, "posembed needs a sequence input (batch, seq, features)");
    int pos;
    KN_TRY(add_param(b, "weight", KN_VALUE_PARAM, 2, (int64_t[]){s.d[1], s.d[2]}, &pos));
    float *p = b->g->values[pos].data;
    for (int64_t i = 0; i < s.d[1] * s.d[2]; i++)
        p[i] = 0.02f * kn_rng_normal(&b->rng);
    return emit(b, "Add", "", 2, (int[]){b->current, pos});
}

static kiln_status layer_meanpool(spec_builder *b) {
    if (current_shape(b).ndim != 3)
        return kn_fail(KILN_ERR_SHAPE, "meanpool needs a sequence input (batch, seq, features)");
    int node;
    KN_TRY(add_node(b, "ReduceMean", "", 1, &b->current, &node));
    KN_TRY(kn_node_set_ints(b->g, node, "axes", 1, (int64_t[]){1}));
    KN_TRY(kn_node_set_int(b->g, node, "keepdims", 0));
    return finish_node(b, node);
}

/* Sequence dense layer named `<block>.<name>`: (N, T, in) @ (in, out) + (out). */
static kiln_status block_dense(spec_builder *b, const char *block, const char *name, int64_t out) {
    snprintf(b->prefix, sizeof b->prefix, "%s.%s", block, name);
    return add_dense(b, out, true);
}

/* (N, T, D) -> (N, H, T, D/H), or with keys_transposed (N, H, D/H, T). */
static kiln_status split_heads(spec_builder *b, const char *block, const char *name, int64_t heads,
                               int64_t head_dim, bool keys_transposed) {
    snprintf(b->prefix, sizeof b->prefix, "%s.%s", block, name);
    int shape;
    KN_TRY(add_i64_const(b, "heads_shape", 4, (int64_t[]){0, 0, heads, head_dim}, &shape));
    KN_TRY(emit(b, "Reshape", "split_heads", 2, (int[]){b->current, shape}));
    int node;
    KN_TRY(add_node(b, "Transpose", "heads_first", 1, &b->current, &node));
    int64_t perm_q[4] = {0, 2, 1, 3}, perm_k[4] = {0, 2, 3, 1};
    KN_TRY(kn_node_set_ints(b->g, node, "perm", 4, keys_transposed ? perm_k : perm_q));
    return finish_node(b, node);
}

/* Pre-LN encoder block: x + MHA(LN(x)), then x + MLP(LN(x)) with a GELU MLP of width FF. */
static kiln_status layer_transformer(spec_builder *b, const spec_line *l) {
    int64_t d, heads, ff;
    KN_TRY(positional_count(l, 3, "transformer D HEADS FF"));
    KN_TRY(parse_int(l->tok[1], 1, 1 << 16, "transformer width D", &d));
    KN_TRY(parse_int(l->tok[2], 1, 1 << 10, "transformer heads", &heads));
    KN_TRY(parse_int(l->tok[3], 1, 1 << 20, "transformer FF width", &ff));
    const kn_shape s = current_shape(b);
    if (s.ndim != 3 || s.d[2] != d)
        return kn_fail(KILN_ERR_SHAPE, "transformer %lld needs a (batch, seq, %lld) input", (long long)d,
                       (long long)d);
    if (d % heads)
        return kn_fail(KILN_ERR_SHAPE, "heads %lld must divide D %lld", (long long)heads, (long long)d);
    int64_t head_dim = d / heads, seq = s.d[1];
    char block[40];
    snprintf(block, sizeof block, "%.39s", b->prefix);
    int x = b->current;

    snprintf(b->prefix, sizeof b->prefix, "%s.ln1", block);
    KN_TRY(add_layernorm(b));
    int h = b->current;
    int qkv[3];
    static const char *const qkv_names[3] = {"query", "key", "value"};
    for (int i = 0; i < 3; i++) {
        b->current = h;
        KN_TRY(block_dense(b, block, qkv_names[i], d));
        KN_TRY(split_heads(b, block, qkv_names[i], heads, head_dim, i == 1));
        qkv[i] = b->current;
    }
    snprintf(b->prefix, sizeof b->prefix, "%s.attn", block);
    int scale;
    KN_TRY(add_param(b, "scale", KN_VALUE_CONST, 0, NULL, &scale));
    fill_constant(b->g, scale, 1.0f / sqrtf((float)head_dim));
    KN_TRY(emit(b, "MatMul", "scores", 2, (int[]){qkv[0], qkv[1]}));       /* (N, H, T, T) */
    KN_TRY(emit(b, "Mul", "scaled", 2, (int[]){b->current, scale}));
    int node;
    KN_TRY(add_node(b, "Softmax", "probs", 1, &b->current, &node));
    KN_TRY(kn_node_set_int(b->g, node, "axis", -1));
    KN_TRY(finish_node(b, node));
    KN_TRY(emit(b, "MatMul", "context", 2, (int[]){b->current, qkv[2]}));  /* (N, H, T, D/H) */
    KN_TRY(add_node(b, "Transpose", "tokens_first", 1, &b->current, &node));
    KN_TRY(kn_node_set_ints(b->g, node, "perm", 4, (int64_t[]){0, 2, 1, 3}));
    KN_TRY(finish_node(b, node));
    int merged;
    KN_TRY(add_i64_const(b, "merged_shape", 3, (int64_t[]){0, seq, d}, &merged));
    KN_TRY(emit(b, "Reshape", "merge_heads", 2, (int[]){b->current, merged}));  /* (N, T, D) */
    KN_TRY(block_dense(b, block, "out", d));
    snprintf(b->prefix, sizeof b->prefix, "%s", block);
    KN_TRY(emit(b, "Add", "attn_residual", 2, (int[]){x, b->current}));
    int x1 = b->current;

    snprintf(b->prefix, sizeof b->prefix, "%s.ln2", block);
    KN_TRY(add_layernorm(b));
    KN_TRY(block_dense(b, block, "fc1", ff));
    snprintf(b->prefix, sizeof b->prefix, "%s.fc1", block);
    KN_TRY(emit_unary(b, "Gelu"));
    KN_TRY(block_dense(b, block, "fc2", d));
    snprintf(b->prefix, sizeof b->prefix, "%s", block);
    return emit(b, "Add", "mlp_residual", 2, (int[]){x1, b->current});
}

static kiln_status layer_residual_end(spec_builder *b, int line) {
    if (b->n_residual == 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "'end' without 'residual'");
    int start = b->residual_start[--b->n_residual];
    const kn_shape a = b->g->values[start].shape, c = current_shape(b);
    if (!kn_shape_equal(&a, &c)) {
        char sa[96], sc[96];
        return kn_fail(KILN_ERR_SHAPE, "residual block from line %d maps %s to %s; they must match",
                       b->residual_line[b->n_residual], kn_shape_str(&a, sa, sizeof sa),
                       kn_shape_str(&c, sc, sizeof sc));
    }
    (void)line;
    return emit(b, "Add", "", 2, (int[]){start, b->current});
}

/* Names the layer ("conv3"), then builds it. */
static kiln_status build_layer(spec_builder *b, const spec_line *l, int line) {
    const char *kw = l->tok[0];
    if (strcmp(kw, "input") == 0)
        return layer_input(b, l);
    if (b->current < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "the first layer must be 'input'");
    b->layer_index++;
    size_t kwlen = strcspn(kw, "=");
    snprintf(b->prefix, sizeof b->prefix, "%.*s%d", (int)(kwlen < 24 ? kwlen : 24), kw, b->layer_index);
    if (strcmp(kw, "dense") == 0) return layer_dense(b, l);
    if (strcmp(kw, "conv") == 0) return layer_conv(b, l);
    if (strcmp(kw, "maxpool") == 0) return layer_pool(b, l, "MaxPool");
    if (strcmp(kw, "avgpool") == 0) return layer_pool(b, l, "AveragePool");
    if (strcmp(kw, "globalavgpool") == 0) {
        KN_TRY(positional_count(l, 0, "globalavgpool"));
        if (current_shape(b).ndim != 4)
            return kn_fail(KILN_ERR_SHAPE, "globalavgpool needs an image input (C H W)");
        KN_TRY(emit(b, "GlobalAveragePool", "pool", 1, &b->current));
        return add_flatten(b, "flatten");
    }
    if (strcmp(kw, "batchnorm") == 0) return layer_batchnorm(b, l);
    if (strcmp(kw, "layernorm") == 0) {
        KN_TRY(positional_count(l, 0, "layernorm"));
        return add_layernorm(b);
    }
    if (strcmp(kw, "dropout") == 0) return layer_dropout(b, l);
    if (strcmp(kw, "flatten") == 0) {
        KN_TRY(positional_count(l, 0, "flatten"));
        return add_flatten(b, "");
    }
    if (strcmp(kw, "patchify") == 0) return layer_patchify(b, l);
    if (strcmp(kw, "posembed") == 0) {
        KN_TRY(positional_count(l, 0, "posembed"));
        return layer_posembed(b);
    }
    if (strcmp(kw, "transformer") == 0) return layer_transformer(b, l);
    if (strcmp(kw, "meanpool") == 0) {
        KN_TRY(positional_count(l, 0, "meanpool"));
        return layer_meanpool(b);
    }
    if (strcmp(kw, "residual") == 0) {
        KN_TRY(positional_count(l, 0, "residual"));
        if (b->n_residual == SPEC_MAX_NESTING)
            return kn_fail(KILN_ERR_INVALID_ARG, "residual blocks nest deeper than %d", SPEC_MAX_NESTING);
        b->residual_line[b->n_residual] = line;
        b->residual_start[b->n_residual++] = b->current;
        return KILN_OK;
    }
    if (strcmp(kw, "end") == 0) {
        KN_TRY(positional_count(l, 0, "end"));
        return layer_residual_end(b, line);
    }
    kiln_status st = layer_activation(b, l);
    if (st == KILN_ERR_UNSUPPORTED)
        return kn_fail(KILN_ERR_INVALID_ARG,
                       "unknown layer '%s' (layers: input conv dense maxpool avgpool globalavgpool batchnorm "
                       "layernorm dropout flatten relu sigmoid tanh gelu leakyrelu elu softmax residual end "
                       "patchify posembed transformer meanpool)", kw);
    return st;
}

static void tokenize(char *text, spec_line *l) {
    l->n = 0;
    char *hash = strchr(text, '#');
    if (hash)
        *hash = '\0';
    for (char *t = strtok(text, " \t\r"); t && l->n < SPEC_MAX_TOKENS; t = strtok(NULL, " \t\r"))
        l->tok[l->n++] = t;
}

kiln_status kn_spec_parse(const char *text, const char *origin, uint64_t seed, kn_graph *g) {
    kn_graph_init(g);
    spec_builder b = {.g = g, .rng = kn_rng_seeded(seed), .current = -1};
    size_t len = strlen(text);
    char *copy = malloc(len + 1);
    if (!copy)
        return kn_fail(KILN_ERR_NOMEM, "%s: out of memory", origin);
    memcpy(copy, text, len + 1);
    kiln_status st = KILN_OK;
    int line = 0;
    for (char *cursor = copy; cursor && st == KILN_OK;) {
        char *next = strchr(cursor, '\n');
        if (next)
            *next++ = '\0';
        line++;
        spec_line l;
        tokenize(cursor, &l);
        cursor = next;
        if (l.n == 0)
            continue;
        st = build_layer(&b, &l, line);
        if (st != KILN_OK)
            kn_error_prefix("%s:%d: ", origin, line);
    }
    free(copy);
    if (st == KILN_OK && b.current < 0)
        st = kn_fail(KILN_ERR_INVALID_ARG, "%s: no layers (the first line must be 'input ...')", origin);
    if (st == KILN_OK && b.n_residual)
        st = kn_fail(KILN_ERR_INVALID_ARG, "%s:%d: 'residual' is never closed by 'end'", origin,
                     b.residual_line[b.n_residual - 1]);
    if (st == KILN_OK && g->values[b.current].kind != KN_VALUE_ACT)
        st = kn_fail(KILN_ERR_INVALID_ARG, "%s: the model has an input but no layers", origin);
    if (st != KILN_OK) {
        kn_graph_free(g);
        return st;
    }
    return kn_graph_add_output(g, b.current); /* the first: cannot fail */
}

kiln_status kn_spec_load(const char *path, uint64_t seed, kn_graph *g) {
    kn_graph_init(g);
    FILE *f = fopen(path, "rb");
    if (!f)
        return kn_fail(KILN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    enum { SPEC_MAX_BYTES = 1 << 20 };
    char *text = malloc(SPEC_MAX_BYTES + 1);
    size_t n = text ? fread(text, 1, SPEC_MAX_BYTES + 1, f) : 0;
    bool read_error = ferror(f);
    fclose(f);
    if (!text)
        return kn_fail(KILN_ERR_NOMEM, "%s: out of memory", path);
    if (read_error || n > SPEC_MAX_BYTES || memchr(text, '\0', n)) {
        free(text);
        return kn_fail(KILN_ERR_FORMAT, "%s: not a model spec (unreadable, binary, or over 1 MiB)", path);
    }
    text[n] = '\0';
    kiln_status st = kn_spec_parse(text, path, seed, g);
    free(text);
    return st;
}
