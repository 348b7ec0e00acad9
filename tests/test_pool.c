/* kiln's thread pool (core/pool.h): every chunk runs exactly once, slots stay below the run's thread
 * count and are never shared by two chunks at once, and runs that cannot use the workers (nested, inside
 * an OpenMP region, from a second OS thread while the pool is busy, in a forked child) still run every
 * chunk. */
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "core/pool.h"

#define MAX_CHUNKS 4096

typedef struct tally {
    int threads;
    _Atomic int runs[MAX_CHUNKS];     /* times each chunk ran */
    _Atomic int busy[KN_POOL_MAX_THREADS];
    _Atomic int bad_slot, shared_slot;
    pthread_t only_thread; /* when set, every chunk must run on this thread */
    _Atomic int foreign_thread;
} tally;

static void count_chunk(void *ctx, int64_t chunk, int slot) {
    tally *t = ctx;
    if (slot < 0 || slot >= t->threads) {
        atomic_fetch_add(&t->bad_slot, 1);
        return;
    }
    if (atomic_fetch_add(&t->busy[slot], 1) != 0)
        atomic_fetch_add(&t->shared_slot, 1);
    if (t->only_thread && !pthread_equal(t->only_thread, pthread_self()))
        atomic_fetch_add(&t->foreign_thread, 1);
    atomic_fetch_add(&t->runs[chunk], 1);
    for (volatile int spin = 0; spin < 200; spin++) // long enough for another thread to overlap
        ;
    atomic_fetch_sub(&t->busy[slot], 1);
}

/* Runs one pool run over a fresh tally; true when every chunk ran once and slots were right. */
static bool run_counted(int threads, int64_t chunks, pthread_t only_thread) {
    tally *t = calloc(1, sizeof *t);
    t->threads = threads < 1 ? 1 : threads > KN_POOL_MAX_THREADS ? KN_POOL_MAX_THREADS : threads;
    t->only_thread = only_thread;
    kn_pool_run(threads, chunks, count_chunk, t);
    bool ok = t->bad_slot == 0 && t->shared_slot == 0 && t->foreign_thread == 0;
    for (int64_t c = 0; c < chunks; c++)
        ok = ok && t->runs[c] == 1;
    for (int64_t c = chunks; c < MAX_CHUNKS; c++)
        ok = ok && t->runs[c] == 0;
    free(t);
    return ok;
}

static void test_every_chunk_once(void) {
    const int threads[] = {1, 2, 3, 4, 8, 100};
    const int64_t chunks[] = {0, 1, 2, 3, 7, 64, 1000, MAX_CHUNKS};
    for (size_t i = 0; i < sizeof threads / sizeof *threads; i++)
        for (size_t j = 0; j < sizeof chunks / sizeof *chunks; j++)
            CHECK_MSG(run_counted(threads[i], chunks[j], 0), "%d threads, %lld chunks", threads[i],
                      (long long)chunks[j]);
}

/* Many short runs in a row: workers that wake late must never run a chunk of the wrong run. */
static void test_back_to_back_runs(void) {
    int failures = 0;
    for (int r = 0; r < 20000; r++)
        failures += !run_counted(2 + r % 3, 1 + r % 9, 0);
    CHECK_MSG(failures == 0, "%d of 20000 runs went wrong", failures);
}

typedef struct nested_ctx {
    _Atomic int outer_runs, inner_ok;
} nested_ctx;

static void nested_chunk(void *ctx, int64_t chunk, int slot) {
    (void)chunk, (void)slot;
    nested_ctx *n = ctx;
    atomic_fetch_add(&n->outer_runs, 1);
    // Inside a run the pool is taken: the inner run goes serially on this thread.
    if (run_counted(4, 16, pthread_self()))
        atomic_fetch_add(&n->inner_ok, 1);
}

static void test_nested_runs_serially(void) {
    nested_ctx n = {0};
    kn_pool_run(3, 6, nested_chunk, &n);
    CHECK(n.outer_runs == 6);
    CHECK(n.inner_ok == 6);
}

static void test_inside_openmp_region(void) {
    _Atomic int ok = 0, team = 0;
#pragma omp parallel num_threads(2)
    {
        atomic_fetch_add(&team, 1);
        if (run_counted(2, 32, pthread_self())) // serially, on each of the team's threads
            atomic_fetch_add(&ok, 1);
    }
    CHECK(team >= 1 && ok == team);
}

static void *many_runs(void *arg) {
    _Atomic int *failures = arg;
    for (int r = 0; r < 2000; r++)
        if (!run_counted(2, 1 + r % 17, 0))
            atomic_fetch_add(failures, 1);
    return NULL;
}

/* Two OS threads at once: one holds the pool, the other runs serially meanwhile; both stay right. */
static void test_two_callers(void) {
    _Atomic int failures = 0;
    pthread_t other;
    CHECK(pthread_create(&other, NULL, many_runs, &failures) == 0);
    many_runs(&failures);
    pthread_join(other, NULL);
    CHECK_MSG(failures == 0, "%d runs went wrong", (int)failures);
}

/* A forked child has no workers of its parent's: its runs start its own and finish. */
static void test_forked_child(void) {
    CHECK(run_counted(2, 8, 0)); // workers exist in the parent
    pid_t child = fork();
    if (child == 0) {
        bool ok = run_counted(2, 100, 0) && run_counted(3, 1000, 0);
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    CHECK(child > 0 && waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(void) {
    test_every_chunk_once();
    test_back_to_back_runs();
    test_nested_runs_serially();
    test_inside_openmp_region();
    test_two_callers();
    test_forked_child();
    return check_finish();
}
