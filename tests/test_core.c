#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "core/arena.h"
#include "core/graph.h"
#include "core/status.h"
#include "core/tensor.h"
#include "core/threads.h"
#include "ops/op.h"

static void test_shapes(void) {
    kn_shape s = kn_shape_of(4, (int64_t[]){64, 1, 28, 28});
    char buf[64];
    CHECK(kn_shape_numel(&s) == 64 * 28 * 28);
    CHECK(strcmp(kn_shape_str(&s, buf, sizeof buf), "(64, 1, 28, 28)") == 0);
    size_t bytes;
    CHECK(kn_shape_bytes(&s, KN_F32, &bytes) && bytes == 64 * 28 * 28 * 4);
    kn_shape huge = kn_shape_of(3, (int64_t[]){1ll << 40, 1ll << 30, 16});
    CHECK(!kn_shape_bytes(&huge, KN_F32, &bytes));
    CHECK(kn_axis_normalize(-1, 4) == 3 && kn_axis_normalize(4, 4) == -1);
}

static void test_arena(void) {
    kn_arena a = {0};
    for (int i = 0; i < 1000; i++) {
        unsigned char *p = kn_arena_alloc(&a, (size_t)i * 37 + 1);
        CHECK(p && ((uintptr_t)p % 64) == 0);
    }
    CHECK(kn_arena_alloc(&a, SIZE_MAX) == NULL);
    kn_arena_free(&a);
}

static void test_graph_errors(void) {
    kn_graph g;
    kn_graph_init(&g);
    kn_shape s = kn_shape_of(2, (int64_t[]){2, 3});
    int x, y, node = 7;
    CHECK_OK(kn_graph_add_value(&g, "x", KN_VALUE_INPUT, KN_F32, &s, &x));
    CHECK_OK(kn_graph_add_value(&g, "y", KN_VALUE_ACT, KN_F32, &s, &y));
    CHECK(x == 0 && y == 1 && kn_graph_find_value(&g, "y") == 1);
    /* Each failure says what it is, rather than -1 for the caller to guess. */
    CHECK(kn_graph_add_node(&g, "NoSuchOp", "n0", 1, &x, 1, &y, &node) == KILN_ERR_UNSUPPORTED && node == -1);
    CHECK(strstr(kiln_last_error(), "NoSuchOp") != NULL);
    CHECK(kn_graph_add_node(&g, "Relu", "n1", 1, (int[]){5}, 1, &y, &node) == KILN_ERR_INTERNAL && node == -1);
    CHECK(g.n_nodes == 0 && g.values[y].producer == -1);
    kn_shape huge = kn_shape_of(2, (int64_t[]){INT64_C(1) << 40, INT64_C(1) << 40});
    int z = 7;
    CHECK(kn_graph_add_value(&g, "z", KN_VALUE_CONST, KN_F32, &huge, &z) != KILN_OK && z == -1 && g.n_values == 2);
    CHECK_OK(kn_graph_add_node(&g, "Relu", "n2", 1, &x, 1, &y, &node));
    CHECK(node == 0 && g.values[y].producer == 0);
    /* Graph inputs and outputs stop at KN_GRAPH_MAX_IO, in one place for every builder. */
    for (int i = 0; i < KN_GRAPH_MAX_IO; i++) {
        CHECK_OK(kn_graph_add_input(&g, x));
        CHECK_OK(kn_graph_add_output(&g, y));
    }
    CHECK(kn_graph_add_input(&g, x) == KILN_ERR_UNSUPPORTED && g.n_inputs == KN_GRAPH_MAX_IO);
    CHECK(kn_graph_add_output(&g, y) == KILN_ERR_UNSUPPORTED && g.n_outputs == KN_GRAPH_MAX_IO);
    kn_graph_free(&g);
}

/* x -> Add(x, x) -> a; Mul(a, x) -> m (graph output): x is read by 3 slots, the last at node 1. */
static void test_value_reads(void) {
    kn_graph g;
    kn_graph_init(&g);
    kn_shape s = kn_shape_of(1, (int64_t[]){4});
    int x, a, m, node;
    CHECK_OK(kn_graph_add_value(&g, "x", KN_VALUE_INPUT, KN_F32, &s, &x));
    CHECK_OK(kn_graph_add_value(&g, "a", KN_VALUE_ACT, KN_F32, &s, &a));
    CHECK_OK(kn_graph_add_value(&g, "m", KN_VALUE_ACT, KN_F32, &s, &m));
    CHECK_OK(kn_graph_add_node(&g, "Add", "add", 2, (int[]){x, x}, 1, &a, &node));
    CHECK_OK(kn_graph_add_node(&g, "Mul", "mul", 2, (int[]){a, x}, 1, &m, &node));
    CHECK_OK(kn_graph_add_output(&g, m));
    int reads[3], last[3];
    kn_graph_value_reads(&g, reads, last);
    CHECK(reads[x] == 3 && reads[a] == 1 && reads[m] == 0);
    CHECK(last[x] == 1 && last[a] == 1 && last[m] == -1);
    int only_last[3] = {7, 7, 7};
    kn_graph_value_reads(&g, NULL, only_last);
    CHECK(memcmp(only_last, last, sizeof last) == 0);
    kn_graph_free(&g);
}

/* Each thread sets a count and reads it back many times while the other does the same with another. */
static void *hold_thread_count(void *arg) {
    int want = *(int *)arg;
    kn_threads_set(want);
    int mismatches = 0;
    for (int i = 0; i < 200000; i++) {
        mismatches += kn_threads_get() != want;
        if (i % 1000 == 0)
            kn_threads_set(want);
    }
    *(int *)arg = mismatches;
    return NULL;
}

/* The thread count is per OS thread: sessions run from two threads with different counts do not
 * see each other's. */
static void test_thread_count_per_thread(void) {
    int counts[2] = {1, 3};
    pthread_t threads[2];
    for (int i = 0; i < 2; i++)
        CHECK(pthread_create(&threads[i], NULL, hold_thread_count, &counts[i]) == 0);
    for (int i = 0; i < 2; i++)
        pthread_join(threads[i], NULL);
    printf("thread count read back by two threads setting 1 and 3: %d and %d mismatches\n", counts[0],
           counts[1]);
    CHECK(counts[0] == 0 && counts[1] == 0);
}

int main(void) {
    test_shapes();
    test_arena();
    test_graph_errors();
    test_value_reads();
    test_thread_count_per_thread();
    return check_finish();
}
