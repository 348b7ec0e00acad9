/* SGEMM driver: blocking, packing and threads around one ISA's kernels (contracts in gemm_internal.h).
 * Two paths:
 *
 * Blocked (GotoBLAS/BLIS loop order), for everything but the case below:
 *   for each column panel of C (nc wide)
 *     for each depth block (kc deep):    pack op(B) into (kc, nr) slivers, or read B in place
 *       for each row block (mc high):    pack op(A) into (kc, mr) slivers
 *         for each nr-wide sliver of B:  for each mr-high sliver of A: micro-kernel on the tile
 *         (or, for a product of one depth block whose B panel fits in L2, the two innermost loops
 *         swapped, so that C is written a row of tiles at a time: see plan_blocked)
 *   Packing turns both layouts and any leading dimension into the one the micro-kernel reads.
 *   op(B) = B already has it (rows of nr floats, ldb apart), so for small products B is read in place
 *   and only a ragged last sliver is packed.
 *
 * Dot products, when op(B) = B^T and op(A) has only a few rows (inference with small batches): both
 * operands are then rows contiguous in k, and the dot kernel reads them without packing anything.
 *
 * Direct (kernels that have one: AVX-512), for products on one thread small enough to sit in L1 with
 * one depth block (attention's per-head products): the blocked path's tiles, computed the same way,
 * but reading op(A) where it lies instead of packing it into an allocated buffer; op(B) = B^T is
 * copied out whole first. The same bits as the blocked path, so nothing depends on which one ran.
 *
 * Threads each take a block of C's tiles (or, for dot products, a share of the dot tiles) and never
 * split K. The blocking does not depend on the thread count, so every element of C is computed by the
 * same arithmetic in the same order whatever the thread count: results are bit-identical across
 * counts. */
#include <stdlib.h>
#include <string.h>

#include "core/cpu.h"
#include "core/tensor.h"
#include "core/align.h"
#include "core/threads.h"
#include "kernels/gemm.h"
#include "kernels/gemm_internal.h"

/* Below this many flops, starting a second thread costs more than it saves (measured). */
#define GEMM_PARALLEL_MIN_FLOPS KN_PARALLEL_MIN_GEMM
/* Largest op(B) = B read in place by more than one row of tiles (see plan_blocked). */
#define GEMM_IN_PLACE_B_MAX_BYTES (1 << 20)
/* A one-depth-block product writes C a row of tiles at a time when C has at least the first many
 * bytes and the B panel at most the second (see plan_blocked). */
#define GEMM_ROWS_OUTER_C_MIN_BYTES (256 << 10)
#define GEMM_ROWS_OUTER_B_MAX_BYTES (1 << 20)

/* Block sizes suit L1 48 KiB / L2 2 MiB, but speed varies little around them; dot_max_rows is where
 * the dot kernel stopped beating packed B^T (K = 784, N = 256), on the machine this was tuned on. */
static const kn_gemm_kernel generic_kernel = {
    .name = "generic",
    .mr = KN_GEMM_GENERIC_MR, .nr = KN_GEMM_GENERIC_NR, .mc = 128, .kc = 256, .nc = 2048,
    .micro = kn_gemm_microkernel_generic,
    .pack_columns = kn_gemm_pack_columns_generic,
    .dot_mr = KN_GEMM_GENERIC_DOT_MR, .dot_nr = KN_GEMM_GENERIC_DOT_NR, .dot_max_rows = 12,
    .dot = kn_gemm_dotkernel_generic,
};

#ifdef KILN_HAVE_X86_KERNELS
static const kn_gemm_kernel avx2_kernel = {
    .name = "avx2",
    .mr = KN_GEMM_AVX2_MR, .nr = KN_GEMM_AVX2_NR, .mc = 144, .kc = 256, .nc = 4096,
    .micro = kn_gemm_microkernel_avx2,
    .pack_columns = kn_gemm_pack_columns_avx2,
    .dot_mr = KN_GEMM_AVX2_DOT_MR, .dot_nr = KN_GEMM_AVX2_DOT_NR, .dot_max_rows = 16,
    .dot = kn_gemm_dotkernel_avx2,
};

static const kn_gemm_kernel avx512_kernel = {
    .name = "avx512",
    .mr = KN_GEMM_AVX512_MR, .nr = KN_GEMM_AVX512_NR, .mc = 168, .kc = 256, .nc = 4096,
    .micro = kn_gemm_microkernel_avx512,
    .pack_columns = kn_gemm_pack_columns_avx512,
    .dot_mr = KN_GEMM_AVX512_DOT_MR, .dot_nr = KN_GEMM_AVX512_DOT_NR, .dot_max_rows = 12,
    .dot = kn_gemm_dotkernel_avx512,
    .direct = kn_gemm_directkernel_avx512,
};
#endif

const kn_gemm_kernel *kn_gemm_kernel_for(kn_gemm_path path) {
    switch (path) {
    case KN_GEMM_PATH_GENERIC:
        return &generic_kernel;
#ifdef KILN_HAVE_X86_KERNELS
    case KN_GEMM_PATH_AVX2:
        return kn_cpu()->avx2 ? &avx2_kernel : NULL;
    case KN_GEMM_PATH_AVX512:
        return kn_cpu()->avx512f ? &avx512_kernel : NULL;
#else
    case KN_GEMM_PATH_AVX2:
    case KN_GEMM_PATH_AVX512:
        return NULL;
#endif
    }
    return NULL;
}

const kn_gemm_kernel *kn_gemm_kernel_best(void) {
    const kn_gemm_kernel *kernel = kn_gemm_kernel_for(KN_GEMM_PATH_AVX512);
    if (!kernel)
        kernel = kn_gemm_kernel_for(KN_GEMM_PATH_AVX2);
    if (!kernel)
        kernel = kn_gemm_kernel_for(KN_GEMM_PATH_GENERIC);
    return kernel;
}

typedef struct gemm_args {
    bool trans_a, trans_b;
    int64_t M, N, K;
    float alpha, beta;
    const float *A;
    int64_t lda;
    const float *a_packed; /* op(A) packed by kn_sgemm_pack_a instead (A unused), or NULL */
    const float *b_packed; /* op(B) packed by kn_sgemm_pack_b instead (B unused), or NULL */
    const float *B;
    int64_t ldb;
    float *C;
    int64_t ldc;
    const kn_sgemm_epilogue *epilogue; /* or NULL; only the blocked path takes one */
} gemm_args;

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Block size actually used: at most max_block, but split evenly (K = 784 with kc <= 256 gives four
 * blocks of 196, not 256, 256, 256, 16), and a multiple of `multiple`. */
static int64_t even_block(int64_t total, int64_t max_block, int64_t multiple) {
    int64_t block = ceil_div(total, ceil_div(total, max_block));
    return ceil_div(block, multiple) * multiple;
}

int64_t kn_gemm_depth_block(const kn_gemm_kernel *kernel, int64_t K) { return even_block(K, kernel->kc, 1); }

static float *alloc_floats(size_t count) {
    size_t bytes;
    return kn_size_mul(count, sizeof(float), &bytes) ? kn_aligned_alloc(bytes) : NULL;
}

/* kn_sgemm cannot report an error: when a buffer cannot be had, the unblocked reference, which needs
 * none, does the work. */
static void gemm_ref(const gemm_args *g) {
    kn_sgemm_ref(g->trans_a, g->trans_b, g->M, g->N, g->K, g->alpha, g->A, g->lda, g->B, g->ldb, g->beta,
                 g->C, g->ldc);
}

/* gemm_ref for an A packed by kn_sgemm_pack_a or a B packed by kn_sgemm_pack_b: their entries read
 * from their places in the packed layouts (see there). */
static void gemm_ref_packed(const kn_gemm_kernel *kernel, const gemm_args *g) {
    const int mr = kernel->mr, nr = kernel->nr;
    int64_t kc = even_block(g->K, kernel->kc, 1), m_pad = ceil_div(g->M, mr) * mr, n_pad = ceil_div(g->N, nr) * nr;
    for (int64_t i = 0; i < g->M; i++) {
        for (int64_t j = 0; j < g->N; j++) {
            float sum = 0.0f;
            for (int64_t k = 0; k < g->K; k++) {
                int64_t k0 = k / kc * kc, depth = min64(kc, g->K - k0);
                float a = g->a_packed ? g->a_packed[k0 * m_pad + i / mr * mr * depth + (k - k0) * mr + i % mr]
                          : g->trans_a ? g->A[k * g->lda + i]
                                       : g->A[i * g->lda + k];
                float b = g->b_packed ? g->b_packed[k0 * n_pad + j / nr * nr * depth + (k - k0) * nr + j % nr]
                                      : g->B[k * g->ldb + j];
                sum += a * b;
            }
            float *c = &g->C[i * g->ldc + j];
            *c = g->beta == 0.0f ? g->alpha * sum : g->alpha * sum + g->beta * *c;
        }
    }
}

/* The epilogue (if any) on all of C, a kernel tile at a time: for the paths that compute C without
 * tiles (the reference fallbacks, K == 0). */
static void epilogue_by_tiles(const kn_gemm_kernel *kernel, const gemm_args *g) {
    if (!g->epilogue)
        return;
    for (int64_t i = 0; i < g->M; i += kernel->mr)
        for (int64_t j = 0; j < g->N; j += kernel->nr)
            g->epilogue->fn(g->epilogue->ctx, i, j, (int)min64(kernel->mr, g->M - i), (int)min64(kernel->nr, g->N - j),
                            g->C + i * g->ldc + j, g->ldc);
}

/* ---- Blocked path ---- */

/* kc rows of exactly `width` floats; `width` is a constant in every caller, so the row copy compiles to
 * a few vector moves (a run-time width made gcc call memmove for every row of 14 or 32 floats: 10% of
 * a ViT training step). */
static inline __attribute__((always_inline)) void copy_rows(const float *restrict src, int64_t ld, int64_t kc,
                                                            const int width, float *restrict dst) {
    for (int64_t k = 0; k < kc; k++)
        memcpy(dst + k * width, src + k * ld, (size_t)width * sizeof(float));
}

/* A (kc, width) sliver whose row k is src row k (rows ld apart), zero past `count` columns: a plain
 * copy. Its transposing counterpart is kernel->pack_columns. */
static void pack_rows(const float *restrict src, int64_t ld, int64_t kc, int count, int width,
                      float *restrict dst) {
    if (count == width) { // whole slivers: the widths are the kernels' mr and nr
        switch (width) {
        case 4: copy_rows(src, ld, kc, 4, dst); return;
        case 6: copy_rows(src, ld, kc, 6, dst); return;
        case 8: copy_rows(src, ld, kc, 8, dst); return;
        case 14: copy_rows(src, ld, kc, 14, dst); return;
        case 16: copy_rows(src, ld, kc, 16, dst); return;
        case 32: copy_rows(src, ld, kc, 32, dst); return;
        default: break;
        }
    }
    if (count < width)
        memset(dst, 0, (size_t)(kc * width) * sizeof(float));
    for (int64_t k = 0; k < kc; k++)
        for (int x = 0; x < count; x++)
            dst[k * width + x] = src[k * ld + x];
}

/* op(B)[k0 : k0 + kc, j0 : j0 + cols] into (kc, nr) slivers. */
static void pack_b(const kn_gemm_kernel *kernel, const gemm_args *g, int64_t k0, int64_t kc, int64_t j0,
                   int64_t cols, float *b_pack) {
    const int nr = kernel->nr;
    for (int64_t col = j0; col < j0 + cols; col += nr) {
        int n = (int)min64(nr, j0 + cols - col);
        float *dst = b_pack + (col - j0) * kc;
        if (g->trans_b) // B is (N, K)
            kernel->pack_columns(g->B + col * g->ldb + k0, g->ldb, kc, n, nr, dst);
        else // B is (K, N)
            pack_rows(g->B + k0 * g->ldb + col, g->ldb, kc, n, nr, dst);
    }
}

/* op(A)[i0 : i0 + rows, k0 : k0 + kc] into (kc, mr) slivers. */
static void pack_a(const kn_gemm_kernel *kernel, const gemm_args *g, int64_t i0, int64_t rows, int64_t k0,
                   int64_t kc, float *a_pack) {
    const int mr = kernel->mr;
    for (int64_t row = i0; row < i0 + rows; row += mr) {
        int m = (int)min64(mr, i0 + rows - row);
        float *dst = a_pack + (row - i0) * kc;
        if (g->trans_a) // A is (K, M)
            pack_rows(g->A + k0 * g->lda + row, g->lda, kc, m, mr, dst);
        else // A is (M, K)
            kernel->pack_columns(g->A + row * g->lda + k0, g->lda, kc, m, mr, dst);
    }
}

/* How one product is blocked: decided once for the whole of C, whatever the threads. */
typedef struct gemm_plan {
    int64_t mc, kc, nc;
    bool b_in_place;      /* op(B) = B read in place; only a ragged last sliver is packed */
    bool rows_outer;      /* tiles row by row along the panel, not column by column down the block */
    int64_t a_pack_count; /* floats of one thread's packing buffers, each a multiple of 16 */
    int64_t b_pack_count;
} gemm_plan;

static gemm_plan plan_blocked(const kn_gemm_kernel *kernel, const gemm_args *g) {
    gemm_plan plan;
    plan.mc = even_block(g->M, kernel->mc, kernel->mr);
    plan.kc = even_block(g->K, kernel->kc, 1);
    plan.nc = even_block(g->N, kernel->nc, kernel->nr);
    // Reading op(B) = B in place saves copying it. The copy pays off once a large B is reread by many
    // row tiles: in place, a sliver is kc scattered rows, which cache and prefetch worse than a
    // contiguous panel. Measured on a 2 MiB-L2 Xeon: in place wins up to mr rows, and up to mc rows
    // while B fits in half of L2.
    double b_bytes = (double)g->K * (double)g->N * sizeof(float);
    plan.b_in_place = !g->trans_b && (g->M <= kernel->mr ||
                                      (g->M <= kernel->mc && b_bytes <= GEMM_IN_PLACE_B_MAX_BYTES));
    // With one depth block each tile of C is written once, and for a shallow product with a large C
    // (a 1x1 convolution over 16 to 64 channels, its output fresh memory) writing C is most of the
    // work. Column by column, the tiles write every row of the block 128 bytes at a time: 100-odd rows
    // of fresh memory at once, more streams than the prefetchers follow. Row by row, a row of tiles
    // writes mr rows along the whole panel, which prefetches well, while the panel of B, reread once
    // per row of tiles, stays in L2. A small C is likely in cache already, and there the column order
    // is faster (B's sliver stays in L1): Winograd's products ran 12% slower row by row. Measured on a
    // 2 MiB-L2 Xeon, batch 32, 1 thread: mobilenet_v2's 24 -> 144 1x1 layer on 56x56 17.7 -> 7.9 ms,
    // 16 -> 96 on 112x112 46 -> 25 ms; resnet18's first layer (K = 147) 112 -> 102 ms.
    double panel_bytes = (double)g->K * (double)min64(g->N, plan.nc) * sizeof(float);
    double c_bytes = (double)g->M * (double)g->N * sizeof(float);
    plan.rows_outer = g->K <= plan.kc && panel_bytes <= GEMM_ROWS_OUTER_B_MAX_BYTES &&
                      c_bytes >= GEMM_ROWS_OUTER_C_MIN_BYTES;
    // The block sizes are bounded by the kernel's, so these products cannot overflow.
    plan.a_pack_count = ceil_div(plan.mc * plan.kc, 16) * 16;
    plan.b_pack_count = ceil_div(plan.kc * (plan.b_in_place ? kernel->nr : plan.nc), 16) * 16;
    return plan;
}

/* The (depth, nr) sliver of B at columns j.. (n of them) of the panel starting at jc, and its row
 * stride: packed once (b_packed), packed for this panel (b_pack), or read in place, where only the
 * panel's ragged last sliver is in b_pack. */
static const float *b_sliver(const gemm_args *g, const gemm_plan *plan, int nr, const float *b_pack, int64_t jc,
                             int64_t k0, int64_t depth, int64_t j, int n, int64_t *ldb) {
    *ldb = nr;
    if (g->b_packed)
        return g->b_packed + k0 * ceil_div(g->N, nr) * nr + j * depth;
    if (!plan->b_in_place)
        return b_pack + (j - jc) * depth;
    if (n < nr)
        return b_pack;
    *ldb = g->ldb;
    return g->B + k0 * g->ldb + j;
}

/* The block C[i0 : i0 + rows, j0 : j0 + cols] (i0, j0 multiples of mr, nr) by the loop nest at the
 * top, with one thread's packing buffers. */
static void gemm_blocked(const kn_gemm_kernel *kernel, const gemm_args *g, const gemm_plan *plan,
                         int64_t i0, int64_t rows, int64_t j0, int64_t cols, float *a_pack, float *b_pack) {
    const int mr = kernel->mr, nr = kernel->nr;
    for (int64_t jc = j0; jc < j0 + cols; jc += plan->nc) {
        int64_t panel_cols = min64(plan->nc, j0 + cols - jc);
        int64_t ragged = (ceil_div(panel_cols, nr) - 1) * nr; // offset of the panel's last sliver
        for (int64_t k0 = 0; k0 < g->K; k0 += plan->kc) {
            int64_t depth = min64(plan->kc, g->K - k0);
            // The first depth block applies beta; later ones add to what it left in C; after the last,
            // each tile is final and gets the epilogue.
            float beta = k0 == 0 ? g->beta : 1.0f;
            bool finishes = g->epilogue && k0 + depth == g->K;
            if (g->b_packed) // nothing to pack
                ;
            else if (!plan->b_in_place)
                pack_b(kernel, g, k0, depth, jc, panel_cols, b_pack);
            else if (panel_cols - ragged < nr)
                pack_b(kernel, g, k0, depth, jc + ragged, panel_cols - ragged, b_pack);
            for (int64_t ic = i0; ic < i0 + rows; ic += plan->mc) {
                int64_t block_rows = min64(plan->mc, i0 + rows - ic);
                const float *a_block = a_pack; // the (kc, mr) slivers of rows ic.. for this depth block
                if (g->a_packed)
                    a_block = g->a_packed + k0 * ceil_div(g->M, mr) * mr + ic * depth;
                else
                    pack_a(kernel, g, ic, block_rows, k0, depth, a_pack);
                if (plan->rows_outer) { // along the B panel, in L2, with each A sliver in L1
                    for (int64_t i = ic; i < ic + block_rows; i += mr)
                        for (int64_t j = jc; j < jc + panel_cols; j += nr) {
                            int m = (int)min64(mr, g->M - i), n = (int)min64(nr, g->N - j);
                            int64_t ldb;
                            const float *b = b_sliver(g, plan, nr, b_pack, jc, k0, depth, j, n, &ldb);
                            kernel->micro(depth, m, n, a_block + (i - ic) * depth, b, ldb, g->alpha, beta,
                                          g->C + i * g->ldc + j, g->ldc);
                            if (finishes)
                                g->epilogue->fn(g->epilogue->ctx, i, j, m, n, g->C + i * g->ldc + j, g->ldc);
                        }
                    continue;
                }
                for (int64_t j = jc; j < jc + panel_cols; j += nr) {
                    int n = (int)min64(nr, g->N - j);
                    int64_t ldb;
                    const float *b = b_sliver(g, plan, nr, b_pack, jc, k0, depth, j, n, &ldb);
                    // Down the B sliver, which stays in L1, over the A block, which stays in L2.
                    for (int64_t i = ic; i < ic + block_rows; i += mr) {
                        int m = (int)min64(mr, g->M - i);
                        kernel->micro(depth, m, n, a_block + (i - ic) * depth, b, ldb, g->alpha, beta,
                                      g->C + i * g->ldc + j, g->ldc);
                        if (finishes)
                            g->epilogue->fn(g->epilogue->ctx, i, j, m, n, g->C + i * g->ldc + j, g->ldc);
                    }
                }
            }
        }
    }
}

/* Splits a grid of row_slivers x col_slivers tiles into row_parts x col_parts blocks, one per thread,
 * so that the biggest block has as few tiles as possible. On ties it splits columns, so that each
 * thread packs all rows of A rather than all columns of B, unless rows_first: A is the bigger operand
 * to pack (a tall product whose B is a few slivers, or read in place: a transformer's projections,
 * (3136, 64) @ (64, 64), had both threads pack all of A). */
static void split_tiles(int64_t row_slivers, int64_t col_slivers, int threads, bool rows_first, int *row_parts,
                        int *col_parts) {
    *row_parts = 1;
    *col_parts = threads;
    int64_t best = row_slivers * ceil_div(col_slivers, threads);
    for (int rp = 2; rp <= threads; rp++) {
        int cp = threads / rp;
        int64_t biggest = ceil_div(row_slivers, rp) * ceil_div(col_slivers, cp);
        if (biggest < best || (biggest == best && rows_first)) {
            best = biggest;
            *row_parts = rp;
            *col_parts = cp;
        }
    }
}

/* Part `part` of `parts` of `slivers` slivers `width` wide, as [*start, *start + *size) clipped to
 * `total`. */
static void split_range(int64_t slivers, int width, int64_t total, int part, int parts, int64_t *start,
                        int64_t *size) {
    int64_t first = slivers * part / parts, last = slivers * (part + 1) / parts;
    *start = first * width;
    *size = min64(last * width, total) - *start;
}

/* Block `part` of C, out of `parts`, with the part's own packing buffers in workspace. */
static void gemm_part_block(const kn_gemm_kernel *kernel, const gemm_args *g, const gemm_plan *plan, int part,
                            int parts, float *workspace) {
    int64_t row_slivers = ceil_div(g->M, kernel->mr), col_slivers = ceil_div(g->N, kernel->nr);
    int row_parts, col_parts;
    // Floats each thread would pack of A (all its rows) and of B (all its columns) if it had them all.
    double a_floats = g->a_packed ? 0.0 : (double)g->M * (double)g->K;
    double b_floats = g->b_packed || plan->b_in_place ? 0.0 : (double)g->K * (double)g->N;
    split_tiles(row_slivers, col_slivers, parts, a_floats > b_floats, &row_parts, &col_parts);
    if (part >= row_parts * col_parts)
        return;
    int64_t i0, rows, j0, cols;
    split_range(row_slivers, kernel->mr, g->M, part / col_parts, row_parts, &i0, &rows);
    split_range(col_slivers, kernel->nr, g->N, part % col_parts, col_parts, &j0, &cols);
    float *a_pack = workspace + (size_t)part * (size_t)(plan->a_pack_count + plan->b_pack_count);
    if (rows > 0 && cols > 0)
        gemm_blocked(kernel, g, plan, i0, rows, j0, cols, a_pack, a_pack + plan->a_pack_count);
}

/* A blocked product's blocks for kn_parallel_for: C cut into `parts` blocks (as many as its threads). */
typedef struct gemm_blocks {
    const kn_gemm_kernel *kernel;
    const gemm_args *g;
    const gemm_plan *plan;
    int parts;
    float *workspace;
} gemm_blocks;

static void gemm_block_of(void *ctx, int64_t part, int slot) {
    (void)slot;
    const gemm_blocks *b = ctx;
    gemm_part_block(b->kernel, b->g, b->plan, (int)part, b->parts, b->workspace);
}

/* Threads the blocked path uses: no more than there are tiles. */
static int blocked_threads(const kn_gemm_kernel *kernel, const gemm_args *g, int threads) {
    int64_t tiles = ceil_div(g->M, kernel->mr) * ceil_div(g->N, kernel->nr);
    return threads > tiles ? (int)tiles : threads;
}

/* op(B) = B^T goes to the dot kernel when A has few rows (packing B would cost more than the
 * product) or when C is narrower than one micro-kernel tile (most of every tile would be wasted: the
 * gradient of a first conv layer's weights, N = 9 taps, ran 2.5x faster this way). */
static bool uses_dots(const kn_gemm_kernel *kernel, bool trans_b, int64_t M, int64_t N) {
    return trans_b && (M <= kernel->dot_max_rows || N < kernel->nr);
}

/* Floats of workspace a product needs; false on overflow. */
static bool workspace_floats(const kn_gemm_kernel *kernel, const gemm_args *g, int threads, size_t *count) {
    if (uses_dots(kernel, g->trans_b, g->M, g->N))
        return !g->trans_a ? (*count = 0, true) : kn_size_mul((size_t)g->M, (size_t)g->K, count);
    gemm_plan plan = plan_blocked(kernel, g);
    return kn_size_mul((size_t)(plan.a_pack_count + plan.b_pack_count),
                       (size_t)blocked_threads(kernel, g, threads), count);
}

/* The caller's workspace when it is large enough, else a fresh allocation (*owned set) or NULL. */
static float *take_workspace(float *given, size_t given_floats, size_t need, float **owned) {
    *owned = NULL;
    if (given && given_floats >= need)
        return given;
    return *owned = alloc_floats(need ? need : 1);
}

static void run_blocked(const kn_gemm_kernel *kernel, const gemm_args *g, int threads, float *given,
                        size_t given_floats) {
    gemm_plan plan = plan_blocked(kernel, g);
    threads = blocked_threads(kernel, g, threads);
    size_t count;
    float *owned = NULL, *workspace = NULL;
    if (workspace_floats(kernel, g, threads, &count))
        workspace = take_workspace(given, given_floats, count, &owned);
    if (!workspace) {
        if (g->a_packed || g->b_packed)
            gemm_ref_packed(kernel, g);
        else
            gemm_ref(g);
        epilogue_by_tiles(kernel, g);
        return;
    }
    // Each part computes its own block of C with its own packing buffers (a part runs once, so they are
    // indexed by part): no shared state, so no barriers. Blocks start on the tile grid, so each tile is
    // the same work whoever does it. One thread is block 0 of 1, on the calling thread.
    gemm_blocks blocks = {kernel, g, &plan, threads, workspace};
    kn_parallel_for(threads, threads, gemm_block_of, &blocks);
    free(owned);
}

/* ---- Dot-product path ---- */

/* C as a grid of dot kernel tiles (row_tiles of them down), for kn_parallel_range; a_rows holds op(A)
 * as rows contiguous in k, lda_rows apart. */
typedef struct gemm_dots {
    const kn_gemm_kernel *kernel;
    const gemm_args *g;
    const float *a_rows;
    int64_t lda_rows, row_tiles;
} gemm_dots;

/* Tiles [begin, end) of C. */
static void gemm_dot_tiles(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const gemm_dots *d = ctx;
    const kn_gemm_kernel *kernel = d->kernel;
    const gemm_args *g = d->g;
    for (int64_t t = begin; t < end; t++) {
        int64_t i = (t % d->row_tiles) * kernel->dot_mr, j = (t / d->row_tiles) * kernel->dot_nr;
        int m = (int)min64(kernel->dot_mr, g->M - i), n = (int)min64(kernel->dot_nr, g->N - j);
        kernel->dot(g->K, m, n, d->a_rows + i * d->lda_rows, d->lda_rows, g->B + j * g->ldb, g->ldb, g->alpha,
                    g->beta, g->C + i * g->ldc + j, g->ldc);
    }
}

static void run_dots(const kn_gemm_kernel *kernel, const gemm_args *g, int threads, float *given,
                     size_t given_floats) {
    const float *a_rows = g->A;
    int64_t lda_rows = g->lda;
    float *owned = NULL;
    if (g->trans_a) { // A is (K, M): copy its few columns out as the rows of op(A) (M, K)
        size_t count;
        float *a_copy = NULL;
        if (!workspace_floats(kernel, g, threads, &count) ||
            !(a_copy = take_workspace(given, given_floats, count, &owned))) {
            gemm_ref(g);
            return;
        }
        for (int64_t i = 0; i < g->M; i++)
            for (int64_t k = 0; k < g->K; k++)
                a_copy[i * g->K + k] = g->A[k * g->lda + i];
        a_rows = a_copy;
        lda_rows = g->K;
    }
    int64_t row_tiles = ceil_div(g->M, kernel->dot_mr), tiles = row_tiles * ceil_div(g->N, kernel->dot_nr);
    gemm_dots dots = {kernel, g, a_rows, lda_rows, row_tiles};
    kn_parallel_range(tiles, threads, gemm_dot_tiles, &dots);
    free(owned);
}

/* ---- Direct path ---- */

/* Largest product the direct kernel takes: op(A) and op(B) together in this many floats (half of a
 * 64 KiB L1, so both stay there while C's tiles sweep them), and op(B) = B^T copied out whole. */
#define GEMM_DIRECT_MAX_FLOATS 8192
#define GEMM_DIRECT_MAX_B_FLOATS 4096

/* Whether kn_sgemm_with runs the product on the direct kernel: one thread, one depth block (so each tile
 * sums its terms as the blocked path does), small enough that packing would cost more than it saves, and
 * a product the blocked path would take. Products the dot kernel takes stay there, whose bits LowbitGemm
 * reproduces (docs/runtime.md, "Low-bit"). */
static bool takes_direct(const kn_gemm_kernel *kernel, const gemm_args *g, int threads) {
    double floats = (double)g->K * (double)(g->M + g->N);
    return kernel->direct && threads == 1 && g->K <= kernel->kc && floats <= GEMM_DIRECT_MAX_FLOATS &&
           (!g->trans_b || g->K * g->N <= GEMM_DIRECT_MAX_B_FLOATS) && !uses_dots(kernel, g->trans_b, g->M, g->N);
}

bool kn_sgemm_takes_direct(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K) {
    gemm_args g = {trans_a, trans_b, M, N, K, 1.0f, 0.0f, NULL, 0, NULL, NULL, NULL, 0, NULL, 0, NULL};
    return M > 0 && N > 0 && K > 0 && takes_direct(kn_gemm_kernel_best(), &g, 1);
}

/* C by the blocked path's tiles, reading op(A) in place; op(B) = B^T is first copied out as (K, N)
 * rows. Every tile is the one gemm_blocked computes, with the same terms in the same order. */
static void run_direct(const kn_gemm_kernel *kernel, const gemm_args *g) {
    const int mr = kernel->mr, nr = kernel->nr;
    const float *b = g->B;
    int64_t ldb = g->ldb;
    float b_rows[GEMM_DIRECT_MAX_B_FLOATS]; // op(B) (K, N) when trans_b
    if (g->trans_b) {
        for (int64_t k = 0; k < g->K; k++)
            for (int64_t j = 0; j < g->N; j++)
                b_rows[k * g->N + j] = g->B[j * g->ldb + k];
        b = b_rows;
        ldb = g->N;
    }
    int64_t a_rs = g->trans_a ? 1 : g->lda, a_cs = g->trans_a ? g->lda : 1;
    for (int64_t j = 0; j < g->N; j += nr) {
        int n = (int)min64(nr, g->N - j);
        for (int64_t i = 0; i < g->M; i += mr) {
            int m = (int)min64(mr, g->M - i);
            kernel->direct(g->K, m, n, g->A + i * a_rs, a_rs, a_cs, b + j, ldb, g->alpha, g->beta,
                           g->C + i * g->ldc + j, g->ldc);
        }
    }
}

/* ---- Entry points ---- */

/* K == 0: op(A) @ op(B) is empty, C = beta * C. */
static void scale_c(int64_t M, int64_t N, float beta, float *C, int64_t ldc) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++)
            C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
}

static int threads_for(const gemm_args *g) {
    double flops = 2.0 * (double)g->M * (double)g->N * (double)g->K;
    return flops < GEMM_PARALLEL_MIN_FLOPS ? 1 : kn_threads_get();
}

void kn_sgemm_with(const kn_gemm_kernel *kernel, void *workspace, size_t workspace_bytes, bool trans_a,
                   bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                   const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) {
        scale_c(M, N, beta, C, ldc);
        return;
    }
    gemm_args g = {trans_a, trans_b, M, N, K, alpha, beta, A, lda, NULL, NULL, B, ldb, C, ldc, NULL};
    int threads = threads_for(&g);
    size_t given_floats = workspace_bytes / sizeof(float);
    if (takes_direct(kernel, &g, threads))
        run_direct(kernel, &g);
    else if (uses_dots(kernel, trans_b, M, N))
        run_dots(kernel, &g, threads, workspace, given_floats);
    else
        run_blocked(kernel, &g, threads, workspace, given_floats);
}

size_t kn_sgemm_workspace(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K) {
    if (M <= 0 || N <= 0 || K <= 0)
        return 0;
    gemm_args g = {trans_a, trans_b, M, N, K, 1.0f, 0.0f, NULL, 0, NULL, NULL, NULL, 0, NULL, 0, NULL};
    size_t count, bytes;
    const kn_gemm_kernel *kernel = kn_gemm_kernel_best();
    if (!workspace_floats(kernel, &g, threads_for(&g), &count) || !kn_size_mul(count, sizeof(float), &bytes))
        return SIZE_MAX;
    return bytes;
}

bool kn_sgemm_uses_no_workspace(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K) {
    gemm_args g = {trans_a, trans_b, M, N, K, 1.0f, 0.0f, NULL, 0, NULL, NULL, NULL, 0, NULL, 0, NULL};
    const kn_gemm_kernel *kernel = kn_gemm_kernel_best();
    int threads = threads_for(&g);
    return M <= 0 || N <= 0 || K <= 0 || takes_direct(kernel, &g, threads) ||
           (uses_dots(kernel, trans_b, M, N) && !trans_a);
}

void kn_sgemm_ws(void *workspace, size_t workspace_bytes, bool trans_a, bool trans_b, int64_t M, int64_t N,
                 int64_t K, float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                 float *C, int64_t ldc) {
    kn_sgemm_with(kn_gemm_kernel_best(), workspace, workspace_bytes, trans_a, trans_b, M, N, K, alpha, A, lda,
                  B, ldb, beta, C, ldc);
}

void kn_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
              int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    kn_sgemm_ws(NULL, 0, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* ---- A packed once ---- */

/* The packed layout is the blocked path's: per depth block k0 (plan.kc deep, which depends on K
 * only), all of op(A)'s rows as (depth, mr) slivers, rows past M zero; block k0 starts at k0 * Mpad
 * (Mpad = M rounded up to mr), and the sliver of row i at i * depth within it. */
size_t kn_sgemm_packed_a_floats(int64_t M, int64_t K) {
    const kn_gemm_kernel *kernel = kn_gemm_kernel_best();
    size_t count;
    if (M <= 0 || K <= 0 || !kn_size_mul((size_t)ceil_div(M, kernel->mr) * (size_t)kernel->mr, (size_t)K, &count))
        return 0;
    return count;
}

void kn_sgemm_pack_a(bool trans_a, int64_t M, int64_t K, const float *A, int64_t lda, float *packed) {
    const kn_gemm_kernel *kernel = kn_gemm_kernel_best();
    gemm_args g = {trans_a, false, M, 0, K, 1.0f, 0.0f, A, lda, NULL, NULL, NULL, 0, NULL, 0, NULL};
    int64_t kc = kn_gemm_depth_block(kernel, K), m_pad = ceil_div(M, kernel->mr) * kernel->mr;
    for (int64_t k0 = 0; k0 < K; k0 += kc)
        pack_a(kernel, &g, 0, M, k0, min64(kc, K - k0), packed + k0 * m_pad);
}

bool kn_sgemm_packs_b(bool trans_b, int64_t M, int64_t N) { return !uses_dots(kn_gemm_kernel_best(), trans_b, M, N); }

size_t kn_sgemm_packed_b_floats(int64_t K, int64_t N) {
    const kn_gemm_kernel *kernel = kn_gemm_kernel_best();
    size_t count;
    if (N <= 0 || K <= 0 || !kn_size_mul((size_t)ceil_div(N, kernel->nr) * (size_t)kernel->nr, (size_t)K, &count))
        return 0;
    return count;
}

/* The layout mirrors A's: per depth block k0, all of B's columns as (depth, nr) slivers, columns past N
 * zero; block k0 starts at k0 * Npad (Npad = N rounded up to nr), the sliver of column j at j * depth
 * within it. */
void kn_sgemm_pack_b(bool trans_b, int64_t K, int64_t N, const float *B, int64_t ldb, float *packed) {
    const kn_gemm_kernel *kernel = kn_gemm_kernel_best();
    gemm_args g = {false, trans_b, 0, N, K, 1.0f, 0.0f, NULL, 0, NULL, NULL, B, ldb, NULL, 0, NULL};
    int64_t kc = kn_gemm_depth_block(kernel, K), n_pad = ceil_div(N, kernel->nr) * kernel->nr;
    for (int64_t k0 = 0; k0 < K; k0 += kc)
        pack_b(kernel, &g, k0, min64(kc, K - k0), 0, N, packed + k0 * n_pad);
}

void kn_sgemm_ws_packed_b(void *workspace, size_t workspace_bytes, bool trans_a, int64_t M, int64_t N, int64_t K,
                          float alpha, const float *A, int64_t lda, const float *b_packed, float beta, float *C,
                          int64_t ldc) {
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) {
        scale_c(M, N, beta, C, ldc);
        return;
    }
    gemm_args g = {trans_a, false, M, N, K, alpha, beta, A, lda, NULL, b_packed, NULL, 0, C, ldc, NULL};
    run_blocked(kn_gemm_kernel_best(), &g, threads_for(&g), workspace, workspace_bytes / sizeof(float));
}

void kn_sgemm_ws_packed(void *workspace, size_t workspace_bytes, const float *a_packed, int64_t M, int64_t N,
                        int64_t K, float alpha, const float *B, int64_t ldb, float beta, float *C, int64_t ldc,
                        const kn_sgemm_epilogue *epilogue) {
    if (M <= 0 || N <= 0)
        return;
    gemm_args g = {false, false, M, N, K, alpha, beta, NULL, 0, a_packed, NULL, B, ldb, C, ldc, epilogue};
    if (K <= 0) {
        scale_c(M, N, beta, C, ldc);
        epilogue_by_tiles(kn_gemm_kernel_best(), &g);
        return;
    }
    run_blocked(kn_gemm_kernel_best(), &g, threads_for(&g), workspace, workspace_bytes / sizeof(float));
}
