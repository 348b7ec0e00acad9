/* The pool of core/pool.h. One run at a time: its chunks are counted down in one atomic word that also
 * holds the run's id, so a worker that wakes late (its call was for a run that has ended) finds either
 * another id or no chunk left and claims nothing. The caller waits only for chunks that were claimed,
 * never for a worker to arrive.
 *
 *   claim = run id (40 bits) << 24 | chunks not yet claimed (24 bits)
 *
 * A worker that claims a chunk of run r knows the run is not over (that chunk has not finished), so the
 * run's fields (fn, ctx, chunks) are r's while it reads them. Waiting is a short spin, then a futex. */
#define _GNU_SOURCE
#include "core/pool.h"

#include <linux/futex.h>
#include <omp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* Pauses a worker spins waiting for its next call, and the caller for the last chunks, before they
 * sleep: about 20-60 us, long enough to catch the next product of a model's step, short enough not to
 * hold a core another process wants. */
#define POOL_SPIN 2000
#define CLAIM_COUNT_BITS 24
#define CLAIM_COUNT_MASK ((UINT64_C(1) << CLAIM_COUNT_BITS) - 1)
#define RUN_ID_MASK ((UINT64_C(1) << (64 - CLAIM_COUNT_BITS)) - 1)

typedef struct pool_worker {
    pthread_t thread;
    int slot;
    _Atomic uint64_t call;     /* the id of the run it is called to */
    _Atomic uint32_t wakes;    /* bumped with every call: the futex word */
    _Atomic uint32_t sleeping; /* in futex_wait on wakes */
} __attribute__((aligned(64))) pool_worker;

static struct {
    pthread_mutex_t start_lock; /* held while workers are started or stopped */
    atomic_flag busy;           /* a run is on */
    int n_workers;
    bool stopping;
    pool_worker workers[KN_POOL_MAX_THREADS - 1];
    _Atomic uint64_t claim __attribute__((aligned(64)));
    _Atomic uint32_t done; /* chunks of the current run finished: the caller's futex word */
    _Atomic uint32_t caller_sleeping;
    uint64_t run_id;
    kn_pool_chunk_fn fn;
    void *ctx;
    uint32_t chunks;
} pool = {.start_lock = PTHREAD_MUTEX_INITIALIZER, .busy = ATOMIC_FLAG_INIT};

/* Set on pool workers and on a caller during its run: a run started from inside one runs serially. */
static _Thread_local bool in_pool_run;

static void futex_wait(_Atomic uint32_t *word, uint32_t expected) {
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *word) {
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}

/* Claims and runs chunks of run `id` until none is left. */
static void run_chunks(uint64_t id, int slot) {
    for (;;) {
        uint64_t claim = atomic_load(&pool.claim);
        do {
            if (claim >> CLAIM_COUNT_BITS != id || (claim & CLAIM_COUNT_MASK) == 0)
                return;
        } while (!atomic_compare_exchange_weak(&pool.claim, &claim, claim - 1));
        uint32_t chunks = pool.chunks;
        pool.fn(pool.ctx, (int64_t)(chunks - (uint32_t)(claim & CLAIM_COUNT_MASK)), slot);
        // After this add the run may end and the next one rewrite the fields: none is read below.
        if (atomic_fetch_add(&pool.done, 1) + 1 == chunks && atomic_load(&pool.caller_sleeping))
            futex_wake_all(&pool.done);
    }
}

static void *worker_main(void *arg) {
    pool_worker *w = arg;
    in_pool_run = true;
    uint32_t seen = 0;
    for (;;) {
        for (int spin = 0; spin < POOL_SPIN && atomic_load(&w->wakes) == seen; spin++)
            cpu_relax();
        if (atomic_load(&w->wakes) == seen) {
            // The caller bumps wakes, then reads sleeping; we set sleeping, then read wakes: one of
            // us sees the other, so a call is never slept through.
            atomic_store(&w->sleeping, 1);
            while (atomic_load(&w->wakes) == seen)
                futex_wait(&w->wakes, seen);
            atomic_store(&w->sleeping, 0);
        }
        seen = atomic_load(&w->wakes);
        if (__atomic_load_n(&pool.stopping, __ATOMIC_ACQUIRE))
            return NULL;
        run_chunks(atomic_load(&w->call), w->slot);
    }
}

static void call_worker(pool_worker *w, uint64_t id) {
    atomic_store(&w->call, id);
    atomic_fetch_add(&w->wakes, 1);
    if (atomic_load(&w->sleeping))
        futex_wake_all(&w->wakes);
}

/* A forked child has none of its parent's workers: it starts its own when it needs them. */
static void forget_workers_in_child(void) {
    pool.n_workers = 0;
    pthread_mutex_init(&pool.start_lock, NULL);
    atomic_flag_clear(&pool.busy);
}

static void register_fork_handler(void) { pthread_atfork(NULL, NULL, forget_workers_in_child); }

/* Starts workers until there are `want` (or as many as the system gives); returns how many there are.
 * Workers block every signal, so that signals reach the program's own threads. */
static int start_workers(int want) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_fork_handler);
    pthread_mutex_lock(&pool.start_lock);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    while (pool.n_workers < want && !pool.stopping) {
        pool_worker *w = &pool.workers[pool.n_workers];
        w->slot = pool.n_workers + 1;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
            break;
        pool.n_workers++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    int have = pool.n_workers;
    pthread_mutex_unlock(&pool.start_lock);
    return have;
}

/* Workers are joined when the library is unloaded (or the program exits), so none is left running
 * code that is gone. */
__attribute__((destructor)) static void stop_workers(void) {
    pthread_mutex_lock(&pool.start_lock);
    __atomic_store_n(&pool.stopping, true, __ATOMIC_RELEASE);
    for (int i = 0; i < pool.n_workers; i++)
        call_worker(&pool.workers[i], 0);
    for (int i = 0; i < pool.n_workers; i++)
        pthread_join(pool.workers[i].thread, NULL);
    pool.n_workers = 0;
    pthread_mutex_unlock(&pool.start_lock);
}

static void run_serially(int64_t chunks, kn_pool_chunk_fn fn, void *ctx) {
    for (int64_t c = 0; c < chunks; c++)
        fn(ctx, c, 0);
}

static void wait_for_chunks(uint32_t chunks) {
    for (int spin = 0; spin < POOL_SPIN && atomic_load(&pool.done) != chunks; spin++)
        cpu_relax();
    uint32_t done = atomic_load(&pool.done);
    if (done == chunks)
        return;
    atomic_store(&pool.caller_sleeping, 1);
    while ((done = atomic_load(&pool.done)) != chunks)
        futex_wait(&pool.done, done);
    atomic_store(&pool.caller_sleeping, 0);
}

void kn_pool_run(int threads, int64_t chunks, kn_pool_chunk_fn fn, void *ctx) {
    if (chunks <= 0)
        return;
    if (threads > KN_POOL_MAX_THREADS)
        threads = KN_POOL_MAX_THREADS;
    if (threads <= 1 || chunks == 1 || (uint64_t)chunks > CLAIM_COUNT_MASK || in_pool_run || omp_in_parallel() ||
        atomic_flag_test_and_set(&pool.busy)) {
        run_serially(chunks, fn, ctx);
        return;
    }
    int helpers = threads - 1 < chunks - 1 ? threads - 1 : (int)(chunks - 1);
    int started = start_workers(helpers);
    if (started < helpers) // the caller takes the chunks of workers the system would not start
        helpers = started;
    pool.fn = fn;
    pool.ctx = ctx;
    pool.chunks = (uint32_t)chunks;
    atomic_store(&pool.done, 0);
    uint64_t id = pool.run_id = (pool.run_id + 1) & RUN_ID_MASK;
    atomic_store(&pool.claim, id << CLAIM_COUNT_BITS | (uint64_t)chunks);
    for (int i = 0; i < helpers; i++)
        call_worker(&pool.workers[i], id);
    in_pool_run = true;
    run_chunks(id, 0);
    in_pool_run = false;
    wait_for_chunks((uint32_t)chunks);
    atomic_flag_clear(&pool.busy);
}

/* Ranges per thread of kn_pool_for: enough that a thread running at half speed (sharing its core)
 * holds up the others by an eighth of the loop at most. */
#define RANGES_PER_THREAD 4

typedef struct range_loop {
    kn_pool_range_fn fn;
    void *ctx;
    int64_t n, step;
} range_loop;

static void run_range(void *ctx, int64_t chunk, int slot) {
    (void)slot;
    const range_loop *loop = ctx;
    int64_t begin = chunk * loop->step, end = begin + loop->step < loop->n ? begin + loop->step : loop->n;
    loop->fn(loop->ctx, begin, end);
}

void kn_pool_for(int threads, int64_t n, kn_pool_range_fn fn, void *ctx) {
    if (n <= 0)
        return;
    int64_t ranges = threads <= 1 ? 1 : (int64_t)threads * RANGES_PER_THREAD;
    int64_t step = (n + ranges - 1) / ranges;
    step = (step + 15) / 16 * 16;
    range_loop loop = {fn, ctx, n, step};
    kn_pool_run(threads, (n + step - 1) / step, run_range, &loop);
}
