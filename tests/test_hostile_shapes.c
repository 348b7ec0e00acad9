/* Hostile sizes: shape arithmetic that must not overflow, checks whose cost must not grow with the
 * number of elements or windows, and the spec parser's pointers into a growing graph. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/clock.h"
#include "support/graph_ids.h"
#include "core/graph.h"
#include "ops/op.h"
#include "ops/window.h"
#include "train/spec.h"

/* The oracle: every window, every tap. *first_miss is the first window that reads only padding. */
static bool brute_force_reads_input(const kn_window_axis *a, int64_t *first_miss) {
    for (int64_t o = 0; o < a->out; o++) {
        bool any = false;
        for (int64_t k = 0; k < a->kernel && !any; k++) {
            int64_t at = o * a->stride - a->pad_begin + k * a->dilation;
            any = at >= 0 && at < a->in;
        }
        if (!any) {
            *first_miss = o;
            return false;
        }
    }
    return true;
}

/* kn_window_check_reads_input against every window of many small random axes, among them ones
 * whose taps step over the whole input between the first and the last window. */
static void test_window_check_matches_brute_force(void) {
    srand(7);
    int mismatches = 0, misses = 0, inner_misses = 0;
    for (int trial = 0; trial < 40000; trial++) {
        kn_window_axis a = {.in = 1 + rand() % 12, .kernel = 1 + rand() % 8, .stride = 1 + rand() % 9,
                            .dilation = 1 + rand() % 24, .pad_begin = rand() % 80, .pad_end = rand() % 80};
        int64_t span = a.in + a.pad_begin + a.pad_end - kn_window_extent(&a);
        if (span < 0)
            continue;
        a.out = span / a.stride + 1;
        int64_t first_miss = -1;
        bool expected = brute_force_reads_input(&a, &first_miss);
        bool got = kn_window_check_reads_input(&a, 1) == KILN_OK;
        misses += !expected;
        inner_misses += !expected && first_miss > 0 && first_miss < a.out - 1;
        if (got != expected && mismatches++ < 5)
            fprintf(stderr, "in %lld kernel %lld stride %lld dilation %lld pads %lld %lld: expected %d got %d\n",
                    (long long)a.in, (long long)a.kernel, (long long)a.stride, (long long)a.dilation,
                    (long long)a.pad_begin, (long long)a.pad_end, expected, got);
        if (got != expected || expected)
            continue;
        /* The error names the first window that misses. */
        char want[48];
        snprintf(want, sizeof want, "window %lld along", (long long)first_miss);
        CHECK_MSG(strstr(kiln_last_error(), want), "%s: expected '%s'", kiln_last_error(), want);
    }
    CHECK(mismatches == 0);
    /* The trials reached windows that cover only padding, also between the first and last window. */
    CHECK(misses > 1000);
    CHECK_MSG(inner_misses > 100, "%d", inner_misses);
}

/* A pool over an input of 2^30 positions: the check must not visit each window (that took seconds). */
static void test_window_check_is_fast_on_huge_axes(void) {
    kn_window_axis huge = {.in = INT64_C(1) << 30, .kernel = 3, .stride = 1, .dilation = 1,
                           .pad_begin = 1, .pad_end = 1};
    huge.out = huge.in;
    /* Taps 2^15 apart over a short input with large pads: 2^30 windows that could step over it. */
    kn_window_axis sparse = {.in = 3, .kernel = 1 << 15, .stride = 1, .dilation = 1 << 15,
                             .pad_begin = INT64_C(1) << 30, .pad_end = INT64_C(1) << 30};
    sparse.out = (sparse.in + sparse.pad_begin + sparse.pad_end - kn_window_extent(&sparse)) + 1;
    double start = kn_seconds_now();
    CHECK_OK(kn_window_check_reads_input(&huge, 1));
    CHECK(kn_window_check_reads_input(&sparse, 1) == KILN_ERR_SHAPE);
    CHECK_MSG(kn_seconds_now() - start < 0.5, "took %.2f s", kn_seconds_now() - start);
}

static void test_shape_sizes(void) {
    int64_t big = INT64_C(1) << 31;
    kn_shape ok = kn_shape_of(2, (int64_t[]){big, big});
    kn_shape over = kn_shape_of(3, (int64_t[]){big, big, 2});
    kn_shape overflow = kn_shape_of(3, (int64_t[]){16777216, 16777216, 16777216});
    kn_shape zero_hides = kn_shape_of(3, (int64_t[]){0, INT64_C(1) << 40, INT64_C(1) << 40});
    CHECK_OK(kn_shape_check_size(&ok));
    CHECK(kn_shape_numel(&ok) == INT64_C(1) << 62);
    CHECK(kn_shape_check_size(&over) == KILN_ERR_SHAPE);
    CHECK(strstr(kiln_last_error(), "the shape (2147483648, 2147483648, 2) has more than 2^62 elements"));
    CHECK(kn_shape_check_size(&overflow) == KILN_ERR_SHAPE);
    CHECK(kn_shape_numel(&overflow) == INT64_MAX); /* saturated, not wrapped */
    CHECK(kn_shape_span(&overflow, 1, 3) == INT64_C(1) << 48);
    /* A zero dim does not let the others multiply past the limit: their spans would overflow. */
    CHECK(kn_shape_check_size(&zero_hides) == KILN_ERR_SHAPE);
    CHECK(kn_count_add(INT64_MAX, 1) == INT64_MAX);
    CHECK(kn_count_add(INT64_MIN, -1) == INT64_MIN);
    CHECK(kn_count_mul(INT64_C(1) << 40, INT64_C(1) << 40) == INT64_MAX);
    CHECK(kn_count_mul(-(INT64_C(1) << 40), INT64_C(1) << 40) == INT64_MIN);

    kn_graph g;
    kn_graph_init(&g);
    CHECK(test_add_value(&g, "x", KN_VALUE_INPUT, KN_F32, &overflow) < 0);
    CHECK(strstr(kiln_last_error(), "value 'x': the shape"));
    kn_shape unknown = kn_shape_of(2, (int64_t[]){-1, big});
    CHECK(test_add_value(&g, "y", KN_VALUE_INPUT, KN_F32, &unknown) == 0);
    kn_graph_free(&g);
}

/* A FLOP count of shapes within the limit can still pass INT64_MAX: it saturates there. */
static void test_flops_saturate(void) {
    int64_t big = INT64_C(1) << 31;
    kn_graph g;
    kn_graph_init(&g);
    kn_shape square = kn_shape_of(2, (int64_t[]){big, big});
    int a = test_add_value(&g, "a", KN_VALUE_INPUT, KN_F32, &square);
    int b = test_add_value(&g, "b", KN_VALUE_INPUT, KN_F32, &square);
    int y = test_add_value(&g, "y", KN_VALUE_ACT, KN_F32, &square);
    int node = test_add_node(&g, "MatMul", "mm", 2, (int[]){a, b}, 1, &y);
    CHECK(node == 0);
    if (node == 0) {
        CHECK_OK(kn_graph_infer_node(&g, node));
        CHECK(g.nodes[node].op->flops(&g, &g.nodes[node]) == INT64_MAX); /* 2^94 */
    }
    kn_graph_free(&g);
}

/* Layers that add parameters after reading the current shape: the shape must be read from a copy,
 * since adding a value may move g->values (an ASan build reports the use after free). 64 values fill
 * the first allocation of g->values; the layernorm is then sized from value 64. */
static void test_spec_shape_survives_growth(void) {
    char text[1024] = "input 8\n";
    for (int i = 0; i < 63; i++)
        strcat(text, "relu\n");
    strcat(text, "layernorm\ndense 3\n");
    kn_graph g;
    CHECK_OK(kn_spec_parse(text, "u.txt", 1, &g));
    int scale = kn_graph_find_value(&g, "layernorm64.weight");
    CHECK(scale >= 0);
    if (scale >= 0) {
        CHECK(g.values[scale].shape.ndim == 1 && g.values[scale].shape.d[0] == 8);
        CHECK(((float *)g.values[scale].data)[7] == 1.0f);
    }
    kn_graph_free(&g);
}

/* A spec input whose size overflows int64 is refused with the size error, naming the line. */
static void test_spec_huge_input(void) {
    kn_graph g;
    CHECK(kn_spec_parse("input 16777216 16777216 16777216\ndense 3\n", "big.txt", 1, &g) != KILN_OK);
    CHECK_MSG(strstr(kiln_last_error(), "big.txt:1:") && strstr(kiln_last_error(), "more than 2^62 elements"),
              "%s", kiln_last_error());
}

int main(void) {
    test_window_check_matches_brute_force();
    test_window_check_is_fast_on_huge_axes();
    test_shape_sizes();
    test_flops_saturate();
    test_spec_shape_survives_growth();
    test_spec_huge_input();
    return check_finish();
}
