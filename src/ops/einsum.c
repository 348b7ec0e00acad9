/* Einsum: sums of products over labelled axes, as numpy.einsum reads `equation`:
 *
 *     "bij,bjk->bik"   one term per input, letters label axes; "->" then the output's labels
 *     "i,i"            without "->", the output takes the labels that appear once, in ASCII order
 *     "...ii->...i"    "..." stands for the axes no letter names (broadcast between inputs, right-aligned);
 *                      a letter repeated in one term walks the diagonal
 *
 * Labels missing from the output are summed. Computed directly: every output element sums the product of
 * the inputs over the summed labels' positions, in double, rounded once to the dtype (f32 or f64). No
 * gradient.
 */
#include <string.h>

#include "core/status.h"
#include "ops/movement.h"

enum {
    EINSUM_MAX_INPUTS = KN_INFER_MAX_INPUTS,
    EINSUM_ELLIPSIS = 52,                              /* labels 52.. are the axes "..." stands for */
    EINSUM_LABELS = EINSUM_ELLIPSIS + KN_MAX_DIMS,
    EINSUM_MAX_EQUATION = 256,
};

typedef struct einsum_spec {
    int n_in;
    int rank[EINSUM_MAX_INPUTS];
    int label[EINSUM_MAX_INPUTS][KN_MAX_DIMS]; /* each input axis's label */
    int out_rank;
    int out[KN_MAX_DIMS];                      /* the output's labels */
    int n_summed;
    int summed[EINSUM_LABELS];                 /* labels summed over */
    int64_t extent[EINSUM_LABELS];             /* -1: unused */
} einsum_spec;

static int letter_label(char c) {
    return c >= 'a' && c <= 'z' ? c - 'a' : c >= 'A' && c <= 'Z' ? 26 + (c - 'A') : -1;
}

/* One term's letters (ellipsis as -2, at most once) into labels; returns their count or -1. */
static int parse_term(const char *s, size_t len, int *labels, int max) {
    int n = 0;
    bool ellipsis = false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == ' ')
            continue;
        if (n == max)
            return -1;
        if (s[i] == '.' && i + 3 <= len && strncmp(s + i, "...", 3) == 0 && !ellipsis) {
            ellipsis = true;
            labels[n++] = -2;
            i += 2;
        } else if (letter_label(s[i]) >= 0) {
            labels[n++] = letter_label(s[i]);
        } else {
            return -1;
        }
    }
    return n;
}

/* The term's labels with its ellipsis expanded into the last `rank - letters` of E ellipsis axes. */
static kiln_status expand_term(const int *term, int n_term, int rank, int E, int *labels) {
    int letters = 0;
    bool has_ellipsis = false;
    for (int i = 0; i < n_term; i++) {
        has_ellipsis |= term[i] == -2;
        letters += term[i] != -2;
    }
    int e = rank - letters;
    if (e < 0 || (!has_ellipsis && e != 0) || e > E)
        return kn_fail(KILN_ERR_SHAPE, "a term of %d labels%s does not fit an input of rank %d", letters,
                       has_ellipsis ? " and ..." : "", rank);
    int at = 0;
    for (int i = 0; i < n_term; i++) {
        if (term[i] != -2) {
            labels[at++] = term[i];
            continue;
        }
        for (int j = 0; j < e; j++)
            labels[at++] = EINSUM_ELLIPSIS + (E - e) + j;
    }
    return KILN_OK;
}

/* Parses the equation for inputs of the given shapes and settles every label's extent. */
static kiln_status einsum_parse(const char *eq, int n_in, const kn_shape *const *shapes, einsum_spec *sp) {
    memset(sp, 0, sizeof *sp);
    for (int l = 0; l < EINSUM_LABELS; l++)
        sp->extent[l] = -1;
    sp->n_in = n_in;
    size_t len = strlen(eq);
    if (len > EINSUM_MAX_EQUATION)
        return kn_fail(KILN_ERR_UNSUPPORTED, "the equation has %zu characters; at most %d", len, EINSUM_MAX_EQUATION);
    const char *arrow = strstr(eq, "->"), *lhs_end = arrow ? arrow : eq + len;
    int terms[EINSUM_MAX_INPUTS][KN_MAX_DIMS + 1], n_term[EINSUM_MAX_INPUTS], count = 0, E = 0;
    for (const char *t = eq; count <= n_in; count++) {
        const char *comma = memchr(t, ',', (size_t)(lhs_end - t)), *end = comma ? comma : lhs_end;
        if (count == n_in || (n_term[count] = parse_term(t, (size_t)(end - t), terms[count], KN_MAX_DIMS + 1)) < 0)
            return kn_fail(KILN_ERR_INVALID_ARG, "equation '%s' does not read as %d terms of letters and ...", eq,
                           n_in);
        int letters = 0;
        for (int i = 0; i < n_term[count]; i++)
            letters += terms[count][i] != -2;
        E = shapes[count]->ndim - letters > E ? shapes[count]->ndim - letters : E;
        if (!comma) {
            count++;
            break;
        }
        t = comma + 1;
    }
    if (count != n_in)
        return kn_fail(KILN_ERR_INVALID_ARG, "equation '%s' has %d terms for %d inputs", eq, count, n_in);
    int uses[EINSUM_LABELS] = {0};
    for (int k = 0; k < n_in; k++) {
        sp->rank[k] = shapes[k]->ndim;
        KN_TRY(expand_term(terms[k], n_term[k], shapes[k]->ndim, E, sp->label[k]));
        for (int d = 0; d < sp->rank[k]; d++) {
            int l = sp->label[k][d];
            int64_t have = sp->extent[l], got = shapes[k]->d[d];
            bool broadcast = l >= EINSUM_ELLIPSIS && (have == 1 || got == 1);
            if (have >= 0 && have != got && !broadcast)
                return kn_fail(KILN_ERR_SHAPE, "label '%c' has extent %lld and %lld", l < 26 ? 'a' + l : 'A' + l - 26,
                               (long long)have, (long long)got);
            sp->extent[l] = have < 0 || have == 1 ? got : have;
            uses[l]++;
        }
    }
    bool in_out[EINSUM_LABELS] = {false};
    if (arrow) {
        int out[KN_MAX_DIMS + 1];
        int n = parse_term(arrow + 2, strlen(arrow + 2), out, KN_MAX_DIMS + 1);
        if (n < 0)
            return kn_fail(KILN_ERR_INVALID_ARG, "the output of equation '%s' is not letters and ...", eq);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < (out[i] == -2 ? E : 1); j++) {
                int l = out[i] == -2 ? EINSUM_ELLIPSIS + j : out[i];
                if (sp->extent[l] < 0 || in_out[l] || sp->out_rank == KN_MAX_DIMS)
                    return kn_fail(KILN_ERR_INVALID_ARG, "output label %d of equation '%s' is unknown or repeated", i,
                                   eq);
                in_out[l] = true;
                sp->out[sp->out_rank++] = l;
            }
    } else {
        for (int j = 0; j < E; j++) {
            sp->out[sp->out_rank++] = EINSUM_ELLIPSIS + j;
            in_out[EINSUM_ELLIPSIS + j] = true;
        }
        for (int l = 26; l < 52 + 26; l++) { /* ASCII order: 'A'..'Z' (26..51), then 'a'..'z' (0..25) */
            int label = l % 52;
            if (uses[label] == 1 && sp->out_rank < KN_MAX_DIMS) {
                sp->out[sp->out_rank++] = label;
                in_out[label] = true;
            }
        }
    }
    for (int l = 0; l < EINSUM_LABELS; l++)
        if (sp->extent[l] >= 0 && !in_out[l])
            sp->summed[sp->n_summed++] = l;
    return KILN_OK;
}

static kiln_status einsum_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    const kn_shape *shapes[EINSUM_MAX_INPUTS];
    kn_dtype dtype = KN_F32;
    for (int k = 0; k < node->n_in; k++) {
        const kn_value *x = kn_node_input(g, node, k);
        if (!x)
            return kn_fail(KILN_ERR_INVALID_ARG, "input %d is missing", k);
        if ((x->dtype != KN_F32 && x->dtype != KN_F64) || (k > 0 && x->dtype != dtype))
            return kn_fail(KILN_ERR_UNSUPPORTED, "input %d is %s; Einsum takes f32 or f64 inputs of one dtype", k,
                           kn_dtype_name(x->dtype));
        dtype = x->dtype;
        shapes[k] = &x->shape;
    }
    einsum_spec sp;
    KN_TRY(einsum_parse(kn_node_string(node, "equation", ""), node->n_in, shapes, &sp));
    kn_shape y = {.ndim = sp.out_rank};
    for (int d = 0; d < sp.out_rank; d++)
        y.d[d] = sp.extent[sp.out[d]];
    KN_TRY(kn_shape_check_size(&y));
    kn_set_output(g, node, 0, &y, dtype);
    return KILN_OK;
}

static double einsum_load(const kn_tensor *t, int64_t i) {
    return t->dtype == KN_F32 ? kn_f32(t)[i] : ((const double *)t->data)[i];
}

static kiln_status einsum_forward(const kn_op_call *call) {
    const kn_node *node = call->node;
    const kn_shape *shapes[EINSUM_MAX_INPUTS];
    for (int k = 0; k < node->n_in; k++)
        shapes[k] = &call->in[k]->shape;
    einsum_spec sp;
    KN_TRY(einsum_parse(kn_node_string(node, "equation", ""), node->n_in, shapes, &sp));
    /* axis_stride[k][d]: input k's step along axis d, 0 where a size-1 axis broadcasts. */
    int64_t axis_stride[EINSUM_MAX_INPUTS][KN_MAX_DIMS];
    for (int k = 0; k < sp.n_in; k++) {
        kn_shape_strides(shapes[k], axis_stride[k]);
        for (int d = 0; d < sp.rank[k]; d++)
            if (shapes[k]->d[d] == 1 && sp.extent[sp.label[k][d]] != 1)
                axis_stride[k][d] = 0;
    }
    int64_t pos[EINSUM_LABELS] = {0}, n_out = kn_numel(call->out[0]), n_sum = 1;
    for (int i = 0; i < sp.n_summed; i++)
        n_sum *= sp.extent[sp.summed[i]];
    for (int64_t o = 0; o < n_out; o++) {
        int64_t r = o; /* o as the output labels' positions */
        for (int d = sp.out_rank - 1; d >= 0; d--) {
            pos[sp.out[d]] = r % sp.extent[sp.out[d]];
            r /= sp.extent[sp.out[d]];
        }
        double sum = 0.0;
        for (int64_t s = 0; s < n_sum; s++) {
            int64_t q = s;
            for (int i = sp.n_summed - 1; i >= 0; i--) {
                pos[sp.summed[i]] = q % sp.extent[sp.summed[i]];
                q /= sp.extent[sp.summed[i]];
            }
            double product = 1.0;
            for (int k = 0; k < sp.n_in; k++) {
                int64_t at = 0;
                for (int d = 0; d < sp.rank[k]; d++) /* a repeated label adds its stride once per axis */
                    at += pos[sp.label[k][d]] * axis_stride[k][d];
                product *= einsum_load(call->in[k], at);
            }
            sum += product;
        }
        if (call->out[0]->dtype == KN_F32)
            kn_f32(call->out[0])[o] = (float)sum;
        else
            ((double *)call->out[0]->data)[o] = sum;
    }
    return KILN_OK;
}

const kn_op kn_op_einsum = {.name = "Einsum", .min_inputs = 1, .max_inputs = EINSUM_MAX_INPUTS,
                            .infer = einsum_infer, .forward = einsum_forward};
