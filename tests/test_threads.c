/* kiln's parallel loops (core/threads.h) on its worker pool: every index runs once, pieces cover the
 * loop exactly, a slot is never used by two running calls at once, loops follow each other back to back
 * without losing a piece, a loop inside a body runs inline, two calling threads share the pool, and a
 * forked child gets a pool of its own. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "core/threads.h"

enum { MAX_SLOTS = 8 };

typedef struct {
    _Atomic int *hits;                 /* (n) how often each index ran */
    _Atomic int busy[MAX_SLOTS];       /* a call is running on this slot */
    _Atomic int slot_clashes, slot_out_of_range;
    int threads;
} loop_log;

static void slot_enter(loop_log *log, int slot) {
    if (slot < 0 || slot >= log->threads) {
        atomic_fetch_add(&log->slot_out_of_range, 1);
        return;
    }
    if (atomic_exchange(&log->busy[slot], 1))
        atomic_fetch_add(&log->slot_clashes, 1);
}

static void slot_leave(loop_log *log, int slot) {
    if (slot >= 0 && slot < log->threads)
        atomic_store(&log->busy[slot], 0);
}

static void count_index(void *ctx, int64_t i, int slot) {
    loop_log *log = ctx;
    slot_enter(log, slot);
    for (volatile int spin = 0; spin < (int)(i % 7) * 50; spin++) {
    }
    atomic_fetch_add(&log->hits[i], 1);
    slot_leave(log, slot);
}

static void count_range(void *ctx, int64_t begin, int64_t end, int slot) {
    loop_log *log = ctx;
    slot_enter(log, slot);
    for (int64_t i = begin; i < end; i++)
        atomic_fetch_add(&log->hits[i], 1);
    slot_leave(log, slot);
}

/* Runs one loop of n on `threads` and returns how many indices did not run exactly once; clashes of
 * slots are added to *clashes. */
static int64_t loop_check(int64_t n, int threads, bool range, int *clashes) {
    loop_log log = {.threads = threads};
    log.hits = calloc((size_t)(n > 0 ? n : 1), sizeof *log.hits);
    if (range)
        kn_parallel_range(n, threads, count_range, &log);
    else
        kn_parallel_for(n, threads, count_index, &log);
    int64_t wrong = 0;
    for (int64_t i = 0; i < n; i++)
        wrong += atomic_load(&log.hits[i]) != 1;
    *clashes += atomic_load(&log.slot_clashes) + atomic_load(&log.slot_out_of_range);
    free(log.hits);
    return wrong;
}

static void test_every_index_once(void) {
    const int64_t sizes[] = {0, 1, 2, 3, 7, 8, 9, 63, 64, 65, 1000, 100003};
    int64_t wrong = 0;
    int clashes = 0;
    for (int threads = 1; threads <= MAX_SLOTS; threads++)
        for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++)
            for (int range = 0; range < 2; range++)
                wrong += loop_check(sizes[s], threads, range, &clashes);
    printf("loops of 0..100003 on 1..8 threads: %lld indices not run exactly once, %d slot clashes\n",
           (long long)wrong, clashes);
    CHECK(wrong == 0);
    CHECK(clashes == 0);
}

/* Many short loops back to back: a worker late for one loop must not take a piece of the next. */
static void test_back_to_back(void) {
    int64_t wrong = 0;
    int clashes = 0;
    for (int round = 0; round < 20000; round++)
        wrong += loop_check(1 + round % 37, 2 + round % 3, round & 1, &clashes);
    printf("20000 loops back to back: %lld indices wrong, %d slot clashes\n", (long long)wrong, clashes);
    CHECK(wrong == 0);
    CHECK(clashes == 0);
}

typedef struct {
    _Atomic int64_t inner_total;
    _Atomic int inner_slot_not_zero;
} nested_log;

static void inner_add(void *ctx, int64_t i, int slot) {
    nested_log *log = ctx;
    if (slot != 0)
        atomic_fetch_add(&log->inner_slot_not_zero, 1);
    atomic_fetch_add(&log->inner_total, i);
}

static void outer_body(void *ctx, int64_t i, int slot) {
    (void)i;
    (void)slot;
    kn_parallel_for(100, 4, inner_add, ctx);
}

static void test_nested_inline(void) {
    nested_log log = {0};
    kn_parallel_for(16, 4, outer_body, &log);
    printf("16 outer x 100 inner: total %lld (expected %d), inner slots not 0: %d\n",
           (long long)atomic_load(&log.inner_total), 16 * 4950, atomic_load(&log.inner_slot_not_zero));
    CHECK(atomic_load(&log.inner_total) == 16 * 4950);
    CHECK(atomic_load(&log.inner_slot_not_zero) == 0);
}

static void *caller_thread(void *arg) {
    int *wrong = arg;
    int clashes = 0;
    for (int round = 0; round < 3000; round++)
        *wrong += (int)loop_check(50 + round % 11, 3, round & 1, &clashes);
    *wrong += clashes;
    return NULL;
}

/* Two program threads running loops at once: one has the pool, the other runs its loops alone. */
static void test_two_callers(void) {
    pthread_t t[2];
    int wrong[2] = {0, 0};
    for (int k = 0; k < 2; k++)
        CHECK(pthread_create(&t[k], NULL, caller_thread, &wrong[k]) == 0);
    for (int k = 0; k < 2; k++)
        pthread_join(t[k], NULL);
    printf("two calling threads x 3000 loops: %d and %d wrong\n", wrong[0], wrong[1]);
    CHECK(wrong[0] == 0 && wrong[1] == 0);
}

static void test_forked_child(void) {
#if defined(__SANITIZE_THREAD__)
    printf("forked child: not run under ThreadSanitizer (it cannot start threads after a fork)\n");
    return;
#endif
    int clashes = 0;
    CHECK(loop_check(1000, 4, false, &clashes) == 0); /* the parent's pool has workers */
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int child_clashes = 0;
        int64_t wrong = loop_check(1000, 4, false, &child_clashes) + loop_check(999, 3, true, &child_clashes);
        _exit(wrong == 0 && child_clashes == 0 ? 0 : 1);
    }
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    printf("forked child's loops: exit status %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(clashes == 0);
}

int main(void) {
    test_every_index_once();
    test_back_to_back();
    test_nested_inline();
    test_two_callers();
    test_forked_child();
    return check_finish();
}
