/* Products with packed 4-bit and 2-bit weights (kernels/lowbit.h): the generic inner loops, which are
 * the reference, and the driver every build shares (which rows, columns and groups go where). */
#include "kernels/lowbit.h"

#include <string.h>

#include "core/align.h"
#include "core/cpu.h"
#include "core/tensor.h"
#include "core/threads.h"
#include "kernels/gemm.h"
#include "kernels/gemm_internal.h"

enum { SLIVER = 32, SLIVER_BYTES = 16 }; /* columns of W in a sliver; bytes of one of its rows */

int kn_lowbit_level(const uint8_t *codes, int64_t i, int bits) {
    int64_t bit = i * bits;
    unsigned code = (unsigned)(codes[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
    unsigned sign = 1u << (bits - 1); /* two's complement of `bits` bits */
    return (int)(code ^ sign) - (int)sign;
}

int64_t kn_lowbit_group(const kn_lowbit_matrix *w, int64_t r, int64_t c) {
    if (w->axis == 0)
        return r;
    if (w->axis == 1)
        return c;
    if (w->block > 0)
        return r * ((w->cols + w->block - 1) / w->block) + c / w->block;
    return 0;
}

static int zero_point_of(const kn_lowbit_matrix *w, int64_t g) { return w->zero_point ? w->zero_point[g] : 0; }

int kn_lowbit_order(int bits, int p) {
    int per_byte = 8 / bits, per_lanes = 8 * per_byte; /* codes in 8 bytes: 16 or 32 */
    int unit = p / per_lanes, q = p % per_lanes;      /* vector q / 8, lane q % 8 */
    return unit * per_lanes + q % 8 * per_byte + q / 8;
}

void kn_lowbit_interleave(int bits, const float *x, int64_t n, float *xi) {
    int order[KN_LOWBIT_CHUNK];
    for (int p = 0; p < KN_LOWBIT_CHUNK; p++)
        order[p] = kn_lowbit_order(bits, p);
    for (int64_t c = 0; c < n; c += KN_LOWBIT_CHUNK)
        for (int p = 0; p < KN_LOWBIT_CHUNK; p++)
            xi[c + p] = c + order[p] < n ? x[c + order[p]] : 0.0f;
}

/* ---- the generic build: plain C, index order ---- */

static void dot_generic(const uint8_t *const codes[KN_LOWBIT_DOT_ROWS], int64_t n_runs, int64_t run_units, int bits,
                        const int8_t *const zero_point[KN_LOWBIT_DOT_ROWS], const float *const scale[KN_LOWBIT_DOT_ROWS],
                        const float *xi, const float *xi_sums, float out[KN_LOWBIT_DOT_ROWS]) {
    (void)xi_sums; /* the exact terms need no correction */
    int64_t run_codes = run_units * 64 / bits;
    for (int r = 0; r < KN_LOWBIT_DOT_ROWS; r++) {
        out[r] = 0.0f;
        for (int64_t j = 0; j < n_runs; j++) {
            int z = zero_point[r] ? zero_point[r][j] : 0;
            float sum = 0.0f;
            for (int64_t i = j * run_codes; i < (j + 1) * run_codes; i++) {
                int64_t code = i / KN_LOWBIT_CHUNK * KN_LOWBIT_CHUNK + kn_lowbit_order(bits, (int)(i % KN_LOWBIT_CHUNK));
                sum += xi[i] * (float)(kn_lowbit_level(codes[r], code, bits) - z);
            }
            out[r] += sum * scale[r][j];
        }
    }
}

static void sweep_generic(const uint8_t *codes, int64_t stride, int64_t K, int bits, const float *xs,
                          const int8_t *zr, const int8_t *zc, float *acc) {
    for (int64_t k = 0; k < K; k++)
        for (int p = 0; p < KN_LOWBIT_CHUNK; p++) {
            int level = kn_lowbit_level(codes + k * stride, kn_lowbit_order(bits, p), bits) - (zr ? zr[k] : 0) -
                        (zc ? zc[p] : 0);
            acc[p] += xs[k] * (float)level;
        }
}

static void decode_generic(const uint8_t *codes, int bits, const int8_t *z, const float *s, float *out) {
    for (int i = 0; i < KN_LOWBIT_CHUNK; i++)
        out[i] = (float)(kn_lowbit_level(codes, i, bits) - z[i]) * s[i];
}

const kn_lowbit_kernels kn_lowbit_generic = {"generic", dot_generic, sweep_generic, decode_generic};

const kn_lowbit_kernels *kn_lowbit_best(void) {
#ifdef KILN_HAVE_X86_KERNELS
    if (kn_cpu()->avx2)
        return &kn_lowbit_avx2;
#endif
    return &kn_lowbit_generic;
}

/* ---- shapes and workspace ---- */

static int64_t dim_k(const kn_lowbit_matrix *w) { return w->transposed ? w->cols : w->rows; }
static int64_t dim_n(const kn_lowbit_matrix *w) { return w->transposed ? w->rows : w->cols; }

/* Whether code i starts on a byte, so that a chunk from it is whole bytes. */
static bool on_byte(int64_t i, int bits) { return i * bits % 8 == 0; }

/* Columns of W decoded at once for several rows of A: a panel of about 512 KiB (half of a core's L2
 * here; 256 KiB measured 3% slower on the MLP at batch 32 and 5% on the transformer), whole chunks. */
static int64_t panel_width(const kn_lowbit_matrix *w) {
    int64_t K = dim_k(w), N = dim_n(w), width = (131072 / (K ? K : 1)) / KN_LOWBIT_CHUNK * KN_LOWBIT_CHUNK;
    width = width < KN_LOWBIT_CHUNK ? KN_LOWBIT_CHUNK : width;
    return width < N ? width : N;
}

static size_t round_up(size_t bytes) { return (bytes + KN_ALIGN - 1) / KN_ALIGN * KN_ALIGN; }

/* Per thread of a sweep: the row factors xs (K floats) and row zero points zr (K bytes). */
static size_t sweep_bytes_per_thread(int64_t K) { return round_up((size_t)K * sizeof(float)) + round_up((size_t)K); }

/* The codes of 8 bytes, the step of a dot product: 16 or 32. */
static int64_t unit_codes(int bits) { return 64 / bits; }

/* A dot product's runs along a row of S = (N, K): one scale group each, the same for every row; the
 * vector dot needs every row on a byte and runs of whole units but for the row's last. */
static int64_t run_length(const kn_lowbit_matrix *w) {
    return w->axis < 0 && w->block > 0 && w->block < w->cols ? w->block : w->cols;
}
static bool dot_fits(const kn_lowbit_matrix *w) {
    return on_byte(w->cols, w->bits) && w->axis != 1 &&
           (run_length(w) % unit_codes(w->bits) == 0 || run_length(w) == w->cols);
}

/* For the dot products: x interleaved (kn_lowbit_interleave), K rounded up to whole chunks, and x's
 * sums over each run (row_runs: the full ones, the rest's units, its tail). */
static size_t interleaved_floats(int64_t K) { return (size_t)((K + KN_LOWBIT_CHUNK - 1) / KN_LOWBIT_CHUNK * KN_LOWBIT_CHUNK); }
static size_t interleaved_bytes(const kn_lowbit_matrix *w) {
    int64_t K = dim_k(w), runs = K / run_length(w) + 2;
    return round_up(interleaved_floats(K) * sizeof(float)) + round_up((size_t)runs * sizeof(float));
}

/* x[0] + ... + x[n - 1], 8 sums side by side. */
static float sum_floats(const float *x, int64_t n) {
    float part[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            part[j] += x[i + j];
    for (; i < n; i++)
        part[0] += x[i];
    return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

/* Rows of A packed at once for the sliver GEMM: kn_sgemm's mc, a multiple of mr. */
static int64_t sliver_row_block(const kn_gemm_kernel *gk, int64_t M) {
    int64_t mc = M < gk->mc ? M : gk->mc;
    return (mc + gk->mr - 1) / gk->mr * gk->mr;
}

/* For several rows of A in the sliver layout: a block of A packed for the GEMM micro-kernel (mc, kc),
 * then per thread a (kc, 32) sliver of W; both bounded by the GEMM's blocking. */
static size_t sliver_gemm_bytes(const kn_lowbit_matrix *w, int64_t M) {
    const kn_gemm_kernel *gk = kn_gemm_kernel_best();
    int64_t kc = kn_gemm_depth_block(gk, w->rows);
    size_t per_thread = round_up((size_t)kc * SLIVER * sizeof(float)), slivers;
    if (!kn_size_mul(per_thread, (size_t)kn_threads_get(), &slivers))
        return SIZE_MAX;
    return round_up((size_t)(sliver_row_block(gk, M) * kc) * sizeof(float)) + slivers;
}

/* Whether more than two rows of A take dot products over S's rows, as kn_sgemm would. */
static bool sliver_dots(const kn_lowbit_matrix *w, int64_t M) {
    return w->from_rows && !kn_sgemm_packs_b(true, M, w->cols) && w->rows <= INT32_MAX;
}

/* Per thread of sliver_dots: a sliver decoded whole (K, 32), and its transpose, 32 rows of S. */
static size_t sliver_dots_bytes(const kn_lowbit_matrix *w) {
    size_t half, all;
    if (!kn_size_mul((size_t)w->rows * SLIVER, sizeof(float), &half) || half > SIZE_MAX / 2 - KN_ALIGN ||
        !kn_size_mul(2 * round_up(half), (size_t)kn_threads_get(), &all))
        return SIZE_MAX;
    return all;
}

/* How the sliver layout runs M rows of A: each row by itself (batch 1, or a file that names the layout
 * where the GEMM's tiles are not 32 columns wide), dot products over S's rows, or the blocked GEMM. */
typedef enum { SLIVERS_BY_ROW, SLIVERS_DOTS, SLIVERS_GEMM } sliver_path;

static sliver_path sliver_path_of(const kn_lowbit_matrix *w, int64_t M) {
    if (M <= 2 || kn_gemm_kernel_best()->nr != SLIVER)
        return SLIVERS_BY_ROW;
    return sliver_dots(w, M) ? SLIVERS_DOTS : SLIVERS_GEMM;
}

/* The row path's sums of x over each run of rows that share their groups: one per block, or one. */
static int64_t sliver_runs(const kn_lowbit_matrix *w) {
    return w->block > 0 ? (w->rows + w->block - 1) / w->block : 1;
}

size_t kn_lowbit_workspace(const kn_lowbit_matrix *w, int64_t M) {
    if (w->slivers) {
        switch (sliver_path_of(w, M)) {
        case SLIVERS_BY_ROW: return round_up((size_t)sliver_runs(w) * sizeof(float));
        case SLIVERS_DOTS: return sliver_dots_bytes(w);
        case SLIVERS_GEMM: return sliver_gemm_bytes(w, M);
        }
    }
    int64_t K = dim_k(w), width = panel_width(w);
    size_t sweep = 0, panel = 0, gemm;
    if (M <= 2 && w->transposed)
        return interleaved_bytes(w);
    if (M <= 2)
        return kn_size_mul(sweep_bytes_per_thread(K), (size_t)kn_threads_get(), &sweep) ? sweep : SIZE_MAX;
    gemm = kn_sgemm_workspace(false, w->transposed, M, width, K);
    if (gemm == SIZE_MAX || !kn_size_mul((size_t)width * sizeof(float), (size_t)K, &panel) ||
        panel > SIZE_MAX - 2 * KN_ALIGN - gemm)
        return SIZE_MAX;
    return round_up(panel) + round_up(gemm);
}

/* ---- one row of A: dot products along the rows of S = (N, K) ---- */

/* Row r of S times x, the plain way: x times the decoded row, in index order. */
static float row_dot_plain(const kn_lowbit_matrix *w, int64_t r, const float *x) {
    float sum = 0.0f;
    for (int64_t c = 0; c < w->cols; c++) {
        int64_t g = kn_lowbit_group(w, r, c);
        sum += x[c] * ((float)(kn_lowbit_level(w->codes, r * w->cols + c, w->bits) - zero_point_of(w, g)) *
                       w->scale[g]);
    }
    return sum;
}

/* How a row of S = (N, K) splits for the dot products: `full` runs of `length` codes (whole units),
 * then the codes left (a shorter last block, or the whole row when it is one run): their whole units,
 * then their tail, fewer than a unit. */
typedef struct row_runs {
    int64_t length, full, rest_at, rest_units, tail_at, tail;
} row_runs;

static row_runs runs_of(const kn_lowbit_matrix *w) {
    int64_t K = w->cols, unit = unit_codes(w->bits), length = run_length(w);
    row_runs p = {.length = length, .full = length < K ? K / length : 0};
    p.rest_at = p.full * length;
    p.rest_units = (K - p.rest_at) / unit;
    p.tail_at = p.rest_at + p.rest_units * unit;
    p.tail = K - p.tail_at;
    return p;
}

/* Rows r0 .. r0 + 3 of S (the last one repeated past N) times x by k's dot: the full runs in one call,
 * the rest's units in another, and its tail as one more unit (its bytes, the last one's high bits
 * perhaps the next row's, against xi's zeros past K, so whatever follows them adds 0). sums: x's sums
 * over the full runs, then over the rest's units and its tail. */
static void rows_dot(const kn_lowbit_kernels *k, const kn_lowbit_matrix *w, const row_runs *p, int64_t r0,
                     const float *xi, const float *sums, float total[KN_LOWBIT_DOT_ROWS]) {
    int64_t K = w->cols, unit = unit_codes(w->bits);
    const uint8_t *codes[KN_LOWBIT_DOT_ROWS], *rest[KN_LOWBIT_DOT_ROWS], *tail_at[KN_LOWBIT_DOT_ROWS];
    const int8_t *zero_point[KN_LOWBIT_DOT_ROWS], *rest_zero_point[KN_LOWBIT_DOT_ROWS];
    const float *scale[KN_LOWBIT_DOT_ROWS], *rest_scale[KN_LOWBIT_DOT_ROWS];
    uint8_t tail_codes[KN_LOWBIT_DOT_ROWS][8];
    for (int i = 0; i < KN_LOWBIT_DOT_ROWS; i++) {
        int64_t row = r0 + i < w->rows ? r0 + i : w->rows - 1, g = kn_lowbit_group(w, row, 0);
        codes[i] = w->codes + row * K * w->bits / 8;
        rest[i] = codes[i] + p->rest_at * w->bits / 8;
        scale[i] = w->scale + g;
        zero_point[i] = w->zero_point ? w->zero_point + g : NULL;
        rest_scale[i] = scale[i] + p->full;
        rest_zero_point[i] = zero_point[i] ? zero_point[i] + p->full : NULL;
        tail_at[i] = tail_codes[i];
        if (p->tail) {
            memset(tail_codes[i], 0, sizeof tail_codes[i]);
            memcpy(tail_codes[i], codes[i] + p->tail_at * w->bits / 8, (size_t)((p->tail * w->bits + 7) / 8));
        }
        total[i] = 0.0f;
    }
    float part[KN_LOWBIT_DOT_ROWS];
    if (p->full) {
        k->dot(codes, p->full, p->length / unit, w->bits, zero_point, scale, xi, sums, part);
        for (int i = 0; i < KN_LOWBIT_DOT_ROWS; i++)
            total[i] += part[i];
    }
    if (p->rest_units) {
        k->dot(rest, 1, p->rest_units, w->bits, rest_zero_point, rest_scale, xi + p->rest_at, sums + p->full, part);
        for (int i = 0; i < KN_LOWBIT_DOT_ROWS; i++)
            total[i] += part[i];
    }
    if (p->tail) {
        k->dot(tail_at, 1, 1, w->bits, rest_zero_point, rest_scale, xi + p->tail_at, sums + p->full + 1, part);
        for (int i = 0; i < KN_LOWBIT_DOT_ROWS; i++)
            total[i] += part[i];
    }
}

/* What the loops of the row path read: W and x (with x interleaved and its sums, for the dot products),
 * the bias and y. */
typedef struct gemv_rows_run {
    const kn_lowbit_kernels *k;
    const kn_lowbit_matrix *w;
    const row_runs *p;
    const float *x, *xi, *sums, *bias;
    float *y;
} gemv_rows_run;

static void gemv_rows_plain_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const gemv_rows_run *r = ctx;
    for (int64_t n = begin; n < end; n++)
        r->y[n] = (r->bias ? r->bias[n] : 0.0f) + row_dot_plain(r->w, n, r->x);
}

/* Group q of KN_LOWBIT_DOT_ROWS rows of y. */
static void gemv_rows_group_of(void *ctx, int64_t q, int slot) {
    (void)slot;
    const gemv_rows_run *r = ctx;
    float total[KN_LOWBIT_DOT_ROWS];
    rows_dot(r->k, r->w, r->p, q * KN_LOWBIT_DOT_ROWS, r->xi, r->sums, total);
    for (int64_t i = 0; i < KN_LOWBIT_DOT_ROWS && q * KN_LOWBIT_DOT_ROWS + i < r->w->rows; i++) {
        int64_t n = q * KN_LOWBIT_DOT_ROWS + i;
        r->y[n] = (r->bias ? r->bias[n] : 0.0f) + total[i];
    }
}

static void gemv_rows(const kn_lowbit_kernels *k, const kn_lowbit_matrix *w, const float *x, const float *bias,
                      float *y, unsigned char *ws) {
    int64_t N = w->rows, K = w->cols;
    float *xi = (float *)ws;                                                       // (K rounded up)
    float *sums = (float *)(ws + round_up(interleaved_floats(K) * sizeof(float))); // (full runs + 2)
    int threads = kn_threads_for(N * K, KN_PARALLEL_MIN_GEMM);
    gemv_rows_run run = {.k = k, .w = w, .x = x, .xi = xi, .sums = sums, .bias = bias, .y = y};
    if (!dot_fits(w)) {
        kn_parallel_range(N, threads, gemv_rows_plain_range, &run);
        return;
    }
    row_runs p = runs_of(w);
    run.p = &p;
    kn_lowbit_interleave(w->bits, x, K, xi);
    for (int64_t j = 0; j < p.full; j++)
        sums[j] = sum_floats(x + j * p.length, p.length);
    sums[p.full] = sum_floats(x + p.rest_at, p.tail_at - p.rest_at);
    sums[p.full + 1] = sum_floats(x + p.tail_at, p.tail);
    kn_parallel_for((N + KN_LOWBIT_DOT_ROWS - 1) / KN_LOWBIT_DOT_ROWS, threads, gemv_rows_group_of, &run);
}

/* ---- one row of A: sweeps down S = (K, N), 32 columns at a time ---- */

/* Columns [j0, j0 + 32) of y: acc = sum_k xs[k] (level - zr[k] - zc), then the column scales; acc and
 * zc by position (kn_lowbit_order). */
static void sweep_chunk(const kn_lowbit_kernels *k, const kn_lowbit_matrix *w, int64_t j0, const float *x,
                        const float *bias, float *y, float *xs, int8_t *zr) {
    int64_t K = w->rows, stride = w->cols * w->bits / 8;
    float acc[KN_LOWBIT_CHUNK] = {0};
    int8_t zc[KN_LOWBIT_CHUNK];
    const int8_t *zc_used = NULL, *zr_used = NULL;
    const float *xs_used = x;
    bool row_groups = w->axis == 0 || (w->axis < 0 && w->block > 0);
    if (row_groups) {
        /* one group per (row, chunk): its scale goes onto x, its zero point onto the row */
        for (int64_t r = 0; r < K; r++) {
            int64_t g = kn_lowbit_group(w, r, j0);
            xs[r] = x[r] * w->scale[g];
            zr[r] = (int8_t)zero_point_of(w, g);
        }
        xs_used = xs;
        zr_used = w->zero_point ? zr : NULL;
    } else if (w->zero_point) {
        for (int p = 0; p < KN_LOWBIT_CHUNK; p++)
            zc[p] = w->zero_point[kn_lowbit_group(w, 0, j0 + kn_lowbit_order(w->bits, p))];
        zc_used = zc;
    }
    k->sweep(w->codes + j0 * w->bits / 8, stride, K, w->bits, xs_used, zr_used, zc_used, acc);
    for (int p = 0; p < KN_LOWBIT_CHUNK; p++) {
        int64_t j = j0 + kn_lowbit_order(w->bits, p);
        y[j] = (bias ? bias[j] : 0.0f) + (row_groups ? acc[p] : acc[p] * w->scale[kn_lowbit_group(w, 0, j)]);
    }
}

/* Column j of y the plain way: x times the decoded column, in row order. */
static void sweep_column(const kn_lowbit_matrix *w, int64_t j, const float *x, const float *bias, float *y) {
    float sum = 0.0f;
    for (int64_t r = 0; r < w->rows; r++) {
        int64_t g = kn_lowbit_group(w, r, j);
        float v = (float)(kn_lowbit_level(w->codes, r * w->cols + j, w->bits) - zero_point_of(w, g)) * w->scale[g];
        sum += x[r] * v;
    }
    y[j] = (bias ? bias[j] : 0.0f) + sum;
}

/* What a sweep's pieces read: W, x, the bias, y, the chunks, and sweep_bytes_per_thread(K) of ws per
 * slot. */
typedef struct sweep_run {
    const kn_lowbit_kernels *k;
    const kn_lowbit_matrix *w;
    const float *x, *bias;
    float *y;
    unsigned char *ws;
    int64_t chunks;
} sweep_run;

/* Piece i of a sweep: chunk i, in the slot's xs and zr, or past the chunks one column of those after
 * them. */
static void sweep_piece_of(void *ctx, int64_t i, int slot) {
    const sweep_run *r = ctx;
    int64_t K = r->w->rows;
    if (i >= r->chunks) {
        sweep_column(r->w, r->chunks * KN_LOWBIT_CHUNK + i - r->chunks, r->x, r->bias, r->y);
        return;
    }
    unsigned char *mine = r->ws + (size_t)slot * sweep_bytes_per_thread(K);
    float *xs = (float *)mine;                                          // (K)
    int8_t *zr = (int8_t *)(mine + round_up((size_t)K * sizeof(float))); // (K)
    sweep_chunk(r->k, r->w, i * KN_LOWBIT_CHUNK, r->x, r->bias, r->y, xs, zr);
}

static void gemv_columns(const kn_lowbit_kernels *k, const kn_lowbit_matrix *w, const float *x, const float *bias,
                         float *y, unsigned char *ws) {
    int64_t K = w->rows, N = w->cols;
    /* Chunks need every row on a byte and groups that stay put inside them. */
    bool chunks_fit = on_byte(N, w->bits) && (w->axis >= 0 || w->block == 0 || w->block % KN_LOWBIT_CHUNK == 0);
    int64_t chunks = chunks_fit ? N / KN_LOWBIT_CHUNK : 0;
    sweep_run run = {.k = k, .w = w, .x = x, .bias = bias, .y = y, .ws = ws, .chunks = chunks};
    kn_parallel_for(chunks + N - chunks * KN_LOWBIT_CHUNK, kn_threads_for(K * N, KN_PARALLEL_MIN_GEMM), sweep_piece_of,
                    &run);
}

/* ---- several rows of A: decoded panels through kn_sgemm ---- */

/* out[c - c0] = S[r][c] for c in [c0, c1): whole chunks by k's decode where they start on a byte and
 * their groups are one, or per column (axis 1); the rest one by one. */
static void decode_run(const kn_lowbit_kernels *k, const kn_lowbit_matrix *w, int64_t r, int64_t c0, int64_t c1,
                       float *out) {
    static const int8_t no_zero[KN_LOWBIT_CHUNK];
    int8_t z[KN_LOWBIT_CHUNK];
    float s[KN_LOWBIT_CHUNK];
    int64_t filled = -1; /* the group z and s hold */
    int64_t c = c0;
    for (; on_byte(r * w->cols + c0, w->bits) && c + KN_LOWBIT_CHUNK <= c1; c += KN_LOWBIT_CHUNK) {
        const uint8_t *codes = w->codes + (r * w->cols + c) * w->bits / 8;
        if (w->axis == 1) {
            k->decode(codes, w->bits, w->zero_point ? w->zero_point + c : no_zero, w->scale + c, out + c - c0);
            continue;
        }
        int64_t g = kn_lowbit_group(w, r, c);
        if (g != kn_lowbit_group(w, r, c + KN_LOWBIT_CHUNK - 1))
            break;
        if (g != filled) {
            memset(z, zero_point_of(w, g), sizeof z);
            for (int i = 0; i < KN_LOWBIT_CHUNK; i++)
                s[i] = w->scale[g];
            filled = g;
        }
        k->decode(codes, w->bits, z, s, out + c - c0);
    }
    for (; c < c1; c++) {
        int64_t g = kn_lowbit_group(w, r, c);
        out[c - c0] = (float)(kn_lowbit_level(w->codes, r * w->cols + c, w->bits) - zero_point_of(w, g)) *
                      w->scale[g];
    }
}

/* With a bias, Y (M, N) starts as the bias in every row and the products add to it: returns the beta
 * they take (1), else 0. */
static float start_with_bias(const float *bias, int64_t M, int64_t N, float *y) {
    if (!bias)
        return 0.0f;
    for (int64_t m = 0; m < M; m++)
        memcpy(y + m * N, bias, sizeof(float) * (size_t)N);
    return 1.0f;
}

static void gemm_panels(const kn_lowbit_kernels *k, const kn_lowbit_matrix *w, int64_t M, const float *a,
                        const float *bias, float *y, unsigned char *ws) {
    int64_t K = dim_k(w), N = dim_n(w), width = panel_width(w);
    float *panel = (float *)ws; // (width, K) transposed, else (K, width)
    void *gemm_ws = ws + round_up((size_t)width * (size_t)K * sizeof(float));
    size_t gemm_bytes = kn_sgemm_workspace(false, w->transposed, M, width, K);
    float beta = start_with_bias(bias, M, N, y);
    for (int64_t n0 = 0; n0 < N; n0 += width) {
        int64_t cols = N - n0 < width ? N - n0 : width;
        if (w->transposed) {
            for (int64_t n = 0; n < cols; n++)
                decode_run(k, w, n0 + n, 0, K, panel + n * K);
            kn_sgemm_ws(gemm_ws, gemm_bytes, false, true, M, cols, K, 1.0f, a, K, panel, K, beta, y + n0, N);
        } else {
            for (int64_t r = 0; r < K; r++)
                decode_run(k, w, r, n0, n0 + cols, panel + r * cols);
            kn_sgemm_ws(gemm_ws, gemm_bytes, false, false, M, cols, K, 1.0f, a, K, panel, cols, beta, y + n0, N);
        }
    }
}

void kn_lowbit_matmul(const kn_lowbit_kernels *k, const kn_lowbit_matrix *w, int64_t M, const float *a,
                      const float *bias, float *y, void *workspace) {
    int64_t K = dim_k(w), N = dim_n(w);
    if (w->slivers) {
        kn_lowbit_matmul_slivers(kn_lowbit_slivers_best(), w, M, a, bias, y, workspace);
        return;
    }
    if (M > 2) {
        gemm_panels(k, w, M, a, bias, y, workspace);
        return;
    }
    for (int64_t m = 0; m < M; m++) {
        if (w->transposed)
            gemv_rows(k, w, a + m * K, bias, y + m * N, workspace);
        else
            gemv_columns(k, w, a + m * K, bias, y + m * N, workspace);
    }
}

/* ---- the sliver layout ---- */

static void sweep_slivers_generic(const uint8_t *codes, int64_t K, const float *x, float acc[SLIVER]) {
    for (int c = 0; c < SLIVER; c++)
        acc[c] = 0.0f;
    for (int64_t k = 0; k < K; k++)
        for (int c = 0; c < SLIVER; c++)
            acc[c] += x[k] * (float)(codes[k * SLIVER_BYTES + c % SLIVER_BYTES] >> (c / SLIVER_BYTES * 4) & 15);
}

static void decode_slivers_generic(const uint8_t *codes, int64_t depth, const int32_t zu[SLIVER],
                                   const float s[SLIVER], float *out) {
    for (int64_t k = 0; k < depth; k++)
        for (int c = 0; c < SLIVER; c++) {
            int u = codes[k * SLIVER_BYTES + c % SLIVER_BYTES] >> (c / SLIVER_BYTES * 4) & 15;
            out[k * SLIVER + c] = (float)(u - zu[c]) * s[c];
        }
}

const kn_lowbit_sliver_kernels kn_lowbit_slivers_generic = {"generic", sweep_slivers_generic,
                                                            decode_slivers_generic};

const kn_lowbit_sliver_kernels *kn_lowbit_slivers_best(void) {
#ifdef KILN_HAVE_X86_KERNELS
    if (kn_cpu()->avx512f)
        return &kn_lowbit_slivers_avx512;
#endif
    return &kn_lowbit_slivers_generic;
}

bool kn_lowbit_slivers_suit(const kn_lowbit_matrix *w) {
    bool per_column = w->transposed ? w->axis == 0 : w->axis == 1;
    /* S = (N, K)'s blocks run down the columns of W: a scale per (column, run of rows) */
    bool column_blocks = w->transposed && w->axis == -1 && w->block > 0;
    return !w->slivers && w->bits == 4 && ((w->axis == -1 && w->block == 0) || per_column || column_blocks) &&
           kn_gemm_kernel_best()->nr == SLIVER && kn_lowbit_slivers_best() != &kn_lowbit_slivers_generic;
}

size_t kn_lowbit_sliver_bytes(int64_t K, int64_t N) {
    size_t bytes;
    return kn_size_mul((size_t)((N + SLIVER - 1) / SLIVER), (size_t)K * SLIVER_BYTES, &bytes) ? bytes : SIZE_MAX;
}

/* u = level + 8 of W[k][c], 8 (level 0) past N. */
static unsigned field_of(const kn_lowbit_matrix *w, int64_t k, int64_t c) {
    if (c >= dim_n(w))
        return 8;
    int64_t i = w->transposed ? c * w->cols + k : k * w->cols + c;
    return (unsigned)(kn_lowbit_level(w->codes, i, w->bits) + 8);
}

void kn_lowbit_slivers_write(const kn_lowbit_matrix *w, uint8_t *out) {
    int64_t K = dim_k(w), N = dim_n(w);
    for (int64_t s = 0; s < (N + SLIVER - 1) / SLIVER; s++)
        for (int64_t k = 0; k < K; k++)
            for (int b = 0; b < SLIVER_BYTES; b++) {
                int64_t c = s * SLIVER + b;
                *out++ = (uint8_t)(field_of(w, k, c) | field_of(w, k, c + SLIVER_BYTES) << 4);
            }
}

void kn_lowbit_slivers_write_groups(const kn_lowbit_matrix *w, float *scale, int8_t *zero_point) {
    int64_t N = w->rows, blocks = (w->cols + w->block - 1) / w->block; /* S = (N, K) */
    for (int64_t n = 0; n < N; n++)
        for (int64_t b = 0; b < blocks; b++) {
            scale[b * N + n] = w->scale[n * blocks + b];
            if (zero_point)
                zero_point[b * N + n] = w->zero_point[n * blocks + b];
        }
}

/* The scale and 8 + zero point of the columns [j, j + 32) at row k of W (0 and 8 past N). */
static void sliver_groups(const kn_lowbit_matrix *w, int64_t j, int64_t k, int32_t zu[SLIVER], float s[SLIVER]) {
    for (int c = 0; c < SLIVER; c++) {
        int64_t g = w->axis == 1 ? j + c : w->block > 0 ? k / w->block * w->cols + j + c : 0;
        bool inside = j + c < w->cols;
        zu[c] = 8 + (inside ? zero_point_of(w, g) : 0);
        s[c] = inside ? w->scale[g] : 0.0f;
    }
}

/* Where the run of rows of W with the groups of row k ends: the next block, or K. */
static int64_t run_end(const kn_lowbit_matrix *w, int64_t k) {
    return w->block > 0 && (k / w->block + 1) * w->block < w->rows ? (k / w->block + 1) * w->block : w->rows;
}

/* Sliver s of y = x W + bias: its fields summed against x, then y[c] = s[c] (acc[c] - zu[c] sum x), per
 * run of rows that share their groups (all of K but with blocks; sums[b] is x's sum over run b). */
static void gemv_sliver(const kn_lowbit_sliver_kernels *k, const kn_lowbit_matrix *w, const float *x,
                        const float *sums, const float *bias, float *y, int64_t s) {
    const int64_t K = w->rows, N = w->cols, j = s * SLIVER, n = N - j < SLIVER ? N - j : SLIVER;
    const int64_t step = w->block > 0 || w->axis == 1; /* per column (or per block's column), or per tensor */
    float acc[SLIVER], total[SLIVER] = {0};
    for (int64_t r0 = 0, r1, run = 0; r0 < K; r0 = r1, run++) {
        r1 = run_end(w, r0);
        k->sweep(w->codes + (s * K + r0) * SLIVER_BYTES, r1 - r0, x + r0, acc);
        int64_t at = (w->block > 0 ? run * N : 0) + j * step; /* the groups of (blocks, N), or of N, or one */
        const float *scale = w->scale + at;
        const int8_t *zero_point = w->zero_point ? w->zero_point + at : NULL;
        /* a loop without branches, which the compiler vectorizes */
        for (int64_t c = 0; c < n; c++)
            total[c] += (acc[c] - (8.0f + (zero_point ? (float)zero_point[c * step] : 0.0f)) * sums[run]) *
                        scale[c * step];
    }
    for (int64_t c = 0; c < n; c++)
        y[j + c] = (bias ? bias[j + c] : 0.0f) + total[c];
}

typedef struct gemv_run {
    const kn_lowbit_sliver_kernels *k;
    const kn_lowbit_matrix *w;
    const float *x, *sums, *bias;
    float *y;
} gemv_run;

static void gemv_sliver_of(void *ctx, int64_t s, int slot) {
    (void)slot;
    const gemv_run *r = ctx;
    gemv_sliver(r->k, r->w, r->x, r->sums, r->bias, r->y, s);
}

/* y = x W + bias, the slivers shared among the threads; sums: sliver_runs floats of workspace. */
static void gemv_slivers(const kn_lowbit_sliver_kernels *k, const kn_lowbit_matrix *w, const float *x,
                         const float *bias, float *y, float *sums) {
    int64_t K = w->rows, N = w->cols, slivers = (N + SLIVER - 1) / SLIVER;
    for (int64_t r0 = 0, r1, run = 0; r0 < K; r0 = r1, run++) {
        r1 = run_end(w, r0);
        sums[run] = sum_floats(x + r0, r1 - r0);
    }
    gemv_run run = {k, w, x, sums, bias, y};
    kn_parallel_for(slivers, kn_threads_for(N * K, KN_PARALLEL_MIN_GEMM), gemv_sliver_of, &run);
}

/* What the sliver GEMM's slivers read: the rows [i0, i0 + rows) of A packed in a_block, for the depth
 * block [k0, k0 + depth), and thread_bytes of per_thread for each slot's decoded sliver. */
typedef struct sliver_gemm_run {
    const kn_lowbit_sliver_kernels *k;
    const kn_gemm_kernel *gk;
    const kn_lowbit_matrix *w;
    const float *a_block;
    unsigned char *per_thread;
    size_t thread_bytes;
    float *y;
    float beta;
    int64_t M, k0, depth, i0, rows;
} sliver_gemm_run;

/* Sliver s decoded over the depth block into the slot's buffer, and every row tile of the block over it. */
static void gemm_sliver_of(void *ctx, int64_t s, int slot) {
    const sliver_gemm_run *r = ctx;
    const kn_lowbit_matrix *w = r->w;
    const int mr = r->gk->mr;
    const int64_t K = w->rows, N = w->cols, M = r->M, k0 = r->k0, depth = r->depth, i0 = r->i0, j = s * SLIVER;
    float *sliver = (float *)(r->per_thread + (size_t)slot * r->thread_bytes); // (kc, 32)
    int32_t zu[SLIVER];
    float scale[SLIVER];
    for (int64_t r0 = k0, r1; r0 < k0 + depth; r0 = r1) { /* runs of rows sharing their groups */
        r1 = run_end(w, r0) < k0 + depth ? run_end(w, r0) : k0 + depth;
        sliver_groups(w, j, r0, zu, scale);
        r->k->decode(w->codes + (s * K + r0) * SLIVER_BYTES, r1 - r0, zu, scale, sliver + (r0 - k0) * SLIVER);
    }
    for (int64_t i = i0; i < i0 + r->rows; i += mr)
        r->gk->micro(depth, (int)(M - i < mr ? M - i : mr), (int)(N - j < SLIVER ? N - j : SLIVER),
                     r->a_block + (i - i0) * depth, sliver, SLIVER, 1.0f, k0 == 0 ? r->beta : 1.0f, r->y + i * N + j,
                     N);
}

/* Y = A W + bias as kn_sgemm's blocked path computes it over the decoded W (the same micro-kernel calls
 * on the same packed operands, tiles and depth blocks, so the same bits), in its loop order: for each
 * depth block, each block of mc rows of A is packed once (it stays in L2), then each (kc, 32) sliver of
 * W is decoded from the codes into a thread's buffer (in L1) and every row tile of the block passes over
 * it. No f32 copy of W, nor of a panel of it, exists, and nothing is packed twice; a sliver is decoded
 * once per block of mc rows (once for up to 168 rows). */
static void gemm_slivers(const kn_lowbit_sliver_kernels *k, const kn_lowbit_matrix *w, int64_t M, const float *a,
                         const float *bias, float *y, unsigned char *ws) {
    const kn_gemm_kernel *gk = kn_gemm_kernel_best(); /* nr is 32: kn_lowbit_matmul_slivers */
    int64_t K = w->rows, N = w->cols, kc = kn_gemm_depth_block(gk, K), mc = sliver_row_block(gk, M);
    int64_t slivers = (N + SLIVER - 1) / SLIVER;
    float *a_block = (float *)ws; // (depth, mr) slivers of the block's rows of A
    sliver_gemm_run run = {
        .k = k, .gk = gk, .w = w, .a_block = a_block, .per_thread = ws + round_up((size_t)(mc * kc) * sizeof(float)),
        .thread_bytes = round_up((size_t)(kc * SLIVER) * sizeof(float)), .y = y, .M = M,
        .beta = start_with_bias(bias, M, N, y), /* of the first depth block; the later ones add to it */
    };
    int threads = kn_threads_for(2 * M * N * K, KN_PARALLEL_MIN_GEMM);
    for (int64_t k0 = 0; k0 < K; k0 += kc) {
        run.k0 = k0;
        run.depth = K - k0 < kc ? K - k0 : kc;
        for (int64_t i0 = 0; i0 < M; i0 += mc) {
            run.i0 = i0;
            run.rows = M - i0 < mc ? M - i0 : mc;
            kn_sgemm_pack_a(false, run.rows, run.depth, a + i0 * K + k0, K, a_block);
            kn_parallel_for(slivers, threads, gemm_sliver_of, &run);
        }
    }
}

/* What the dot products' slivers read: A (M, K), y, and 2 * half bytes of ws per slot. */
typedef struct sliver_dots_run {
    const kn_lowbit_sliver_kernels *k;
    const kn_gemm_kernel *gk;
    const kn_lowbit_matrix *w;
    const float *a;
    float *y;
    float beta;
    int64_t M;
    unsigned char *ws;
    size_t half;
} sliver_dots_run;

/* Sliver s decoded whole into the slot's buffer, transposed, and its dot products with every row of A. */
static void dots_sliver_of(void *ctx, int64_t s, int slot) {
    const sliver_dots_run *r = ctx;
    const kn_lowbit_matrix *w = r->w;
    const kn_gemm_kernel *gk = r->gk;
    const int64_t K = w->rows, N = w->cols, M = r->M, j = s * SLIVER;
    float *decoded = (float *)(r->ws + (size_t)slot * 2 * r->half); // (K, 32)
    float *rows = (float *)((unsigned char *)decoded + r->half);     // (32, K): rows of S
    int n = (int)(N - j < SLIVER ? N - j : SLIVER);
    int32_t zu[SLIVER];
    float scale[SLIVER];
    for (int64_t r0 = 0, r1; r0 < K; r0 = r1) {
        r1 = run_end(w, r0);
        sliver_groups(w, j, r0, zu, scale);
        r->k->decode(w->codes + (s * K + r0) * SLIVER_BYTES, r1 - r0, zu, scale, decoded + r0 * SLIVER);
    }
    gk->pack_columns(decoded, SLIVER, SLIVER, (int)K, (int)K, rows);
    for (int c = 0; c < n; c += gk->dot_nr)
        for (int64_t i = 0; i < M; i += gk->dot_mr)
            gk->dot(K, (int)(M - i < gk->dot_mr ? M - i : gk->dot_mr), n - c < gk->dot_nr ? n - c : gk->dot_nr,
                    r->a + i * K, K, rows + c * K, K, 1.0f, r->beta, r->y + i * N + j + c, N);
}

/* Y = A W + bias as kn_sgemm's dot products compute it over the decoded S = W^T: each sliver decoded
 * whole, transposed into 32 rows of S (the GEMM's transposing pack), and their dot products with A's
 * rows taken by kn_sgemm's dot kernel, whose sums depend on K only. */
static void dots_slivers(const kn_lowbit_sliver_kernels *k, const kn_lowbit_matrix *w, int64_t M, const float *a,
                         const float *bias, float *y, unsigned char *ws) {
    int64_t K = w->rows, N = w->cols;
    sliver_dots_run run = {
        .k = k, .gk = kn_gemm_kernel_best(), .w = w, .a = a, .y = y, .beta = start_with_bias(bias, M, N, y), .M = M,
        .ws = ws, .half = round_up((size_t)(K * SLIVER) * sizeof(float)),
    };
    kn_parallel_for((N + SLIVER - 1) / SLIVER, kn_threads_for(2 * M * N * K, KN_PARALLEL_MIN_GEMM), dots_sliver_of,
                    &run);
}

void kn_lowbit_matmul_slivers(const kn_lowbit_sliver_kernels *k, const kn_lowbit_matrix *w, int64_t M,
                              const float *a, const float *bias, float *y, void *workspace) {
    switch (sliver_path_of(w, M)) {
    case SLIVERS_DOTS:
        dots_slivers(k, w, M, a, bias, y, workspace);
        return;
    case SLIVERS_GEMM:
        gemm_slivers(k, w, M, a, bias, y, workspace);
        return;
    case SLIVERS_BY_ROW:
        for (int64_t m = 0; m < M; m++)
            gemv_slivers(k, w, a + m * w->rows, bias, y + m * w->cols, workspace);
        return;
    }
}
