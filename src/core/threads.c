/* kiln's parallel loops run on its own small pool of worker threads.
 *
 * A loop is cut into pieces, and each taking part thread (the caller and the workers) has a home run of
 * consecutive pieces, as a static schedule would give it: a thread works through its own run first, so
 * consecutive loops over the same data keep it in the same core's cache, then takes pieces from the end
 * of other threads' runs. The loop ends when every piece is done. The caller never waits for a worker
 * that has not started: on a machine where another process holds a core, the caller takes the pieces a
 * descheduled worker would have had, so a lost core costs its share of the work and not the whole
 * loop (an OpenMP region's barrier waits for every thread of the team). Between loops the workers spin
 * for a short while (the next loop usually follows within microseconds), then sleep on a condition
 * variable.
 *
 * One loop runs on the pool at a time: a loop started while another thread's loop holds the pool, or
 * from inside a body, runs on its caller alone. Results never depend on this (kn_parallel_for's
 * contract), only the speed does. */
#define _GNU_SOURCE
#include "core/threads.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

/* Per OS thread, so that sessions run from different threads with different counts do not disturb each
 * other. The calling program's OpenMP settings are never read nor changed. */
static _Thread_local int thread_count;

/* Set while the thread runs a body (and always on a pool worker): a loop started there runs inline. */
static _Thread_local bool inside_loop;

enum {
    POOL_MAX_WORKERS = 1023,      /* kn_threads_set's counts are 1..1024 (the CLI refuses more) */
    POOL_PIECES_PER_THREAD = 4,   /* pieces of a loop per thread: the caller can take a slow worker's */
    POOL_SPIN_NS = 50 * 1000,     /* how long an idle worker (or a waiting caller) spins before sleeping */
};

/* A slot's run of pieces, one word: generation (32 bits) | end (16) | next (16), pieces [next, end) not
 * yet claimed. The owner claims `next`, others `end - 1`. A thread claims a piece of the loop it saw
 * published only while the word still names that loop's generation, so a late worker never takes a
 * piece of the next loop with the previous loop's body. */
#define RUN_WORD(gen, end, next) (((uint64_t)(gen) << 32) | ((uint64_t)(end) << 16) | (uint64_t)(next))
#define RUN_GEN(w) ((uint32_t)((w) >> 32))
#define RUN_END(w) ((uint32_t)((w) >> 16) & 0xffffu)
#define RUN_NEXT(w) ((uint32_t)(w) & 0xffffu)

typedef struct {
    _Alignas(64) _Atomic uint64_t word;
} slot_run;

typedef struct {
    /* the loop being run: written by its caller before the generation is published, read by a worker
     * only after it has claimed a piece (until every piece is done they do not change) */
    void (*body_for)(void *ctx, int64_t i, int slot);
    void (*body_range)(void *ctx, int64_t begin, int64_t end, int slot);
    void *ctx;
    int64_t n;
    uint32_t pieces;
    /* slots 0..threads-1 take part: the caller is 0, worker k is k+1 (read by workers before they
     * claim: a stale value only makes a worker skip a loop, or try one whose runs refuse it) */
    _Atomic int threads;
    _Atomic int sleeping_workers;

    /* Each word the threads write in a loop on a cache line of its own, so that claiming a piece or
     * counting one done does not take the line the idle workers spin on away from them. */
    _Alignas(64) _Atomic uint32_t generation; /* the loop last published; workers watch it */
    _Atomic bool stopping;
    _Alignas(64) _Atomic int64_t pieces_done;
    _Atomic bool caller_sleeping;

    _Alignas(64) pthread_mutex_t run_lock; /* held by the thread whose loop is on the pool */
    pthread_mutex_t sleep_lock;
    pthread_cond_t workers_wake, caller_wake;
    int workers;
    pthread_t worker[POOL_MAX_WORKERS];
    slot_run runs[POOL_MAX_WORKERS + 1];
} pool_state;

static pool_state pool = {
    .run_lock = PTHREAD_MUTEX_INITIALIZER,
    .sleep_lock = PTHREAD_MUTEX_INITIALIZER,
    .workers_wake = PTHREAD_COND_INITIALIZER,
    .caller_wake = PTHREAD_COND_INITIALIZER,
};

static int cores_available(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

void kn_threads_set(int n) { thread_count = n > 0 ? n : cores_available(); }

/* Inside a body a loop runs inline, so it is planned for one thread (one GEMM block, not two packed
 * one after the other). */
int kn_threads_get(void) {
    if (inside_loop)
        return 1;
    if (thread_count <= 0)
        kn_threads_set(0);
    return thread_count;
}

int kn_threads_for(int64_t work, int64_t min) { return work >= min ? kn_threads_get() : 1; }

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Piece p of n iterations cut into `pieces`: the first n % pieces pieces one longer. */
static void piece_bounds(int64_t n, uint32_t pieces, uint32_t p, int64_t *begin, int64_t *end) {
    int64_t share = n / pieces, extra = n % pieces;
    *begin = (int64_t)p * share + ((int64_t)p < extra ? (int64_t)p : extra);
    *end = *begin + share + ((int64_t)p < extra);
}

static void piece_run(int64_t begin, int64_t end, int slot) {
    if (pool.body_range) {
        pool.body_range(pool.ctx, begin, end, slot);
        return;
    }
    for (int64_t i = begin; i < end; i++)
        pool.body_for(pool.ctx, i, slot);
}

/* Claims a piece of loop `gen` from `run`: its next one for the owner, its last for another slot.
 * Returns the piece, or -1 when the run is empty or belongs to another loop. */
static int64_t piece_claim(slot_run *run, uint32_t gen, bool owner) {
    uint64_t w = atomic_load_explicit(&run->word, memory_order_acquire);
    for (;;) {
        if (RUN_GEN(w) != gen || RUN_NEXT(w) >= RUN_END(w))
            return -1;
        uint64_t taken = owner ? w + 1 : w - ((uint64_t)1 << 16);
        if (atomic_compare_exchange_weak_explicit(&run->word, &w, taken, memory_order_acq_rel,
                                                  memory_order_acquire))
            return owner ? RUN_NEXT(w) : RUN_END(w) - 1;
    }
}

static void piece_done(void) {
    int64_t pieces = pool.pieces; /* read first: after the last piece is counted the next loop may start */
    int64_t done = atomic_fetch_add(&pool.pieces_done, 1) + 1;
    if (done == pieces && atomic_load(&pool.caller_sleeping)) {
        pthread_mutex_lock(&pool.sleep_lock);
        pthread_cond_signal(&pool.caller_wake);
        pthread_mutex_unlock(&pool.sleep_lock);
    }
}

/* Runs pieces of loop `gen` on `slot` until none is left: its own run first, then the other slots'
 * (`threads` as this thread last read it: a stale count only skips runs that others will empty). */
static void pieces_work(uint32_t gen, int slot, int threads) {
    for (int k = 0; k < threads; k++) {
        int victim = slot + k < threads ? slot + k : slot + k - threads;
        int64_t p;
        while ((p = piece_claim(&pool.runs[victim], gen, k == 0)) >= 0) {
            int64_t begin, end;
            piece_bounds(pool.n, pool.pieces, (uint32_t)p, &begin, &end);
            piece_run(begin, end, slot);
            piece_done();
        }
    }
}

/* One round of a wait's spinning: a pause, and every 64 rounds a look at the clock. Returns true once
 * the wait has spun POOL_SPIN_NS (from its first look: a wait that ends within 64 rounds reads no
 * clock) and should sleep instead. */
static bool spin_over(int *spins, int64_t *give_up) {
    cpu_relax();
    if ((++*spins & 63) != 0)
        return false;
    if (!*give_up) {
        *give_up = now_ns() + POOL_SPIN_NS;
        return false;
    }
    return now_ns() > *give_up;
}

/* Returns the next generation after `seen`: spins for POOL_SPIN_NS, then sleeps until one is published. */
static uint32_t generation_wait(uint32_t seen) {
    int spins = 0;
    int64_t give_up = 0;
    for (;;) {
        uint32_t g = atomic_load_explicit(&pool.generation, memory_order_acquire);
        if (g != seen || atomic_load_explicit(&pool.stopping, memory_order_relaxed))
            return g;
        if (spin_over(&spins, &give_up))
            break;
    }
    pthread_mutex_lock(&pool.sleep_lock);
    atomic_fetch_add(&pool.sleeping_workers, 1);
    while (atomic_load(&pool.generation) == seen && !atomic_load(&pool.stopping))
        pthread_cond_wait(&pool.workers_wake, &pool.sleep_lock);
    atomic_fetch_sub(&pool.sleeping_workers, 1);
    pthread_mutex_unlock(&pool.sleep_lock);
    return atomic_load_explicit(&pool.generation, memory_order_acquire);
}

static void *worker_main(void *arg) {
    int slot = (int)(intptr_t)arg + 1;
    inside_loop = true;
    uint32_t seen = atomic_load_explicit(&pool.generation, memory_order_acquire);
    for (;;) {
        seen = generation_wait(seen);
        if (atomic_load(&pool.stopping))
            return NULL;
        int threads = atomic_load_explicit(&pool.threads, memory_order_relaxed);
        if (slot < threads)
            pieces_work(seen, slot, threads);
    }
}

/* Starts workers until there are `wanted` (as many as can be started); under run_lock. */
static void workers_grow(int wanted) {
    if (wanted > POOL_MAX_WORKERS)
        wanted = POOL_MAX_WORKERS;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* workers inherit a full mask: signals go to the program's threads */
    while (pool.workers < wanted &&
           pthread_create(&pool.worker[pool.workers], NULL, worker_main, (void *)(intptr_t)pool.workers) == 0)
        pool.workers++;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Waits until all `pieces` of the caller's loop are done: spins for POOL_SPIN_NS, then sleeps. */
static void caller_wait(int64_t pieces) {
    int spins = 0;
    int64_t give_up = 0;
    while (atomic_load_explicit(&pool.pieces_done, memory_order_acquire) < pieces)
        if (spin_over(&spins, &give_up))
            break;
    if (atomic_load_explicit(&pool.pieces_done, memory_order_acquire) == pieces)
        return;
    pthread_mutex_lock(&pool.sleep_lock);
    atomic_store(&pool.caller_sleeping, true);
    while (atomic_load(&pool.pieces_done) < pieces)
        pthread_cond_wait(&pool.caller_wake, &pool.sleep_lock);
    atomic_store(&pool.caller_sleeping, false);
    pthread_mutex_unlock(&pool.sleep_lock);
}

/* Runs the loop on the pool, or returns false when the pool is busy with another thread's loop. */
static bool pool_run(int64_t n, int threads, uint32_t pieces, void (*body_for)(void *, int64_t, int),
                     void (*body_range)(void *, int64_t, int64_t, int), void *ctx) {
    if (pthread_mutex_trylock(&pool.run_lock) != 0)
        return false;
    if (pool.workers < threads - 1)
        workers_grow(threads - 1);
    if (threads > pool.workers + 1)
        threads = pool.workers + 1;
    pool.body_for = body_for;
    pool.body_range = body_range;
    pool.ctx = ctx;
    pool.n = n;
    pool.pieces = pieces;
    atomic_store_explicit(&pool.threads, threads, memory_order_relaxed);
    atomic_store_explicit(&pool.pieces_done, 0, memory_order_relaxed);
    uint32_t gen = atomic_load_explicit(&pool.generation, memory_order_relaxed) + 1;
    for (int s = 0; s < threads; s++) /* slot s's home: pieces [s * pieces / threads, (s + 1) * ...) */
        atomic_store_explicit(&pool.runs[s].word,
                              RUN_WORD(gen, (uint64_t)(s + 1) * pieces / threads, (uint64_t)s * pieces / threads),
                              memory_order_release);
    atomic_store(&pool.generation, gen);
    if (atomic_load(&pool.sleeping_workers) > 0) {
        pthread_mutex_lock(&pool.sleep_lock);
        pthread_cond_broadcast(&pool.workers_wake);
        pthread_mutex_unlock(&pool.sleep_lock);
    }
    inside_loop = true;
    pieces_work(gen, 0, threads);
    caller_wait(pieces);
    inside_loop = false;
    pthread_mutex_unlock(&pool.run_lock);
    return true;
}

static uint32_t pieces_for(int64_t n, int threads, int64_t per_thread) {
    int64_t cap = (int64_t)threads * per_thread;
    if (cap > 0xffff)
        cap = 0xffff;
    return (uint32_t)(n < cap ? n : cap);
}

void kn_parallel_for(int64_t n, int threads, void (*body)(void *ctx, int64_t i, int slot), void *ctx) {
    if (threads > 1 && n > 1 && !inside_loop &&
        pool_run(n, threads, pieces_for(n, threads, POOL_PIECES_PER_THREAD), body, NULL, ctx))
        return;
    for (int64_t i = 0; i < n; i++)
        body(ctx, i, 0);
}

void kn_parallel_range(int64_t n, int threads, void (*body)(void *ctx, int64_t begin, int64_t end, int slot),
                       void *ctx) {
    if (threads > 1 && n > 1 && !inside_loop &&
        pool_run(n, threads, pieces_for(n, threads, POOL_PIECES_PER_THREAD), NULL, body, ctx))
        return;
    if (n > 0)
        body(ctx, 0, n, 0);
}

/* A forked child has none of the parent's workers (only the forking thread survives a fork): it
 * starts with an empty pool and grows its own. */
static void pool_after_fork_child(void) {
    pthread_mutex_t unlocked = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t fresh = PTHREAD_COND_INITIALIZER;
    pool.run_lock = unlocked;
    pool.sleep_lock = unlocked;
    pool.workers_wake = fresh;
    pool.caller_wake = fresh;
    pool.workers = 0;
    atomic_store(&pool.sleeping_workers, 0);
    atomic_store(&pool.caller_sleeping, false);
    inside_loop = false;
}

__attribute__((constructor)) static void pool_register_fork(void) { pthread_atfork(NULL, NULL, pool_after_fork_child); }

/* Stops and joins the workers when the program exits or the library is unloaded (a worker must not be
 * left running code that dlclose unmaps). */
__attribute__((destructor)) static void pool_stop(void) {
    if (pool.workers == 0)
        return;
    pthread_mutex_lock(&pool.sleep_lock);
    atomic_store(&pool.stopping, true);
    pthread_cond_broadcast(&pool.workers_wake);
    pthread_mutex_unlock(&pool.sleep_lock);
    for (int k = 0; k < pool.workers; k++)
        pthread_join(pool.worker[k], NULL);
    pool.workers = 0;
}
