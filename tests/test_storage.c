/* Compact storage (src/format/storage.h): each codec against a naive reference written here, the
 * reconstruction error against its bound, bit-identical .kiln round trips of every encoding and
 * granularity, a quantized model that runs exactly like the f32 model of its decoded weights, the
 * writer's refusal of data changed after quantization, and what the file sizes become. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "support/graph_ids.h"
#include "core/graph.h"
#include "core/rng.h"
#include "core/status.h"
#include "format/kiln_file.h"
#include "format/storage.h"
#include "kiln/kiln.h"

static uint32_t bits_of(float x) {
    uint32_t b;
    memcpy(&b, &x, 4);
    return b;
}

static float float_of(uint32_t b) {
    float x;
    memcpy(&x, &b, 4);
    return x;
}

static void fill_normal(float *x, int64_t n, uint64_t seed) {
    kn_rng rng = kn_rng_seeded(seed);
    for (int64_t i = 0; i < n; i++)
        x[i] = kn_rng_normal(&rng);
}

/* ---- f16 and bf16 ---------------------------------------------------------------------------------- */

/* The value of a binary16 code by its definition. */
static double f16_value(uint16_t h) {
    int sign = h >> 15, exponent = (h >> 10) & 31, mantissa = h & 1023;
    double v = exponent == 0 ? ldexp(mantissa, -24) : ldexp(1024 + mantissa, exponent - 25);
    return sign ? -v : v;
}

/* The nearest of two candidate codes to x by exact (double) distance, ties to the even code. */
static uint16_t nearer(double x, uint16_t a, double va, uint16_t b, double vb) {
    double da = fabs(x - va), db = fabs(x - vb);
    return da < db ? a : db < da ? b : (a & 1) ? b : a;
}

static void test_half_floats(void) {
    /* Every f16 code decodes to its defined value and encodes back to itself. */
    int wrong_decode = 0, wrong_encode = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        bool special = ((h >> 10) & 31) == 31;
        float f = kn_f16_to_f32((uint16_t)h);
        if (special)
            wrong_decode += (h & 1023) ? !isnan(f) : !(isinf(f) && (f < 0) == (h >> 15));
        else
            wrong_decode += (double)f != f16_value((uint16_t)h) || !!signbit(f) != (int)(h >> 15);
        if (!special || !(h & 1023))
            wrong_encode += kn_f32_to_f16(f) != h;
    }
    CHECK_MSG(wrong_decode == 0 && wrong_encode == 0, "%d decodes and %d re-encodes of f16 codes are wrong",
              wrong_decode, wrong_encode);

    /* Random f32 bit patterns: the nearest f16 (ties to even) and the nearest bf16, by the reference. */
    kn_rng rng = kn_rng_seeded(11);
    int f16_wrong = 0, bf16_wrong = 0, tested = 0;
    for (int t = 0; t < 200000; t++) {
        uint32_t b = (uint32_t)kn_rng_next(&rng);
        if (t % 2) /* half of them near the f16 range, where rounding matters */
            b = (b & 0x807fffffu) | ((uint32_t)(100 + kn_rng_below(&rng, 45)) << 23);
        float x = float_of(b);
        if (isnan(x)) {
            f16_wrong += !isnan(kn_f16_to_f32(kn_f32_to_f16(x)));
            bf16_wrong += !isnan(kn_bf16_to_f32(kn_f32_to_bf16(x)));
            continue;
        }
        tested++;
        /* bf16: the two codes around x, truncated and one up. */
        uint16_t lo = (uint16_t)(b >> 16), hi = (uint16_t)(lo + 1);
        double vlo = kn_bf16_to_f32(lo), vhi = (lo & 0x7fff) == 0x7f7f ? copysign(ldexp(1, 128), x)
                                                                         : (double)float_of((uint32_t)hi << 16);
        uint16_t want_bf16 = isinf(x) ? lo : nearer(x, lo, vlo, hi, vhi);
        bf16_wrong += kn_f32_to_bf16(x) != want_bf16;
        /* f16: the nearest of all finite codes of x's sign and infinity (65520 and up round to it). */
        double mag = fabs(x);
        uint16_t sign = signbit(x) ? 0x8000 : 0, want;
        if (mag >= 65520)
            want = sign | 0x7c00;
        else {
            /* Codes of one sign rise with their value: bisect for the last code <= |x|. */
            uint16_t lo_code = 0, hi_code = 0x7bff;
            while (lo_code < hi_code) {
                uint16_t mid = (uint16_t)((lo_code + hi_code + 1) / 2);
                if (f16_value(mid) <= mag)
                    lo_code = mid;
                else
                    hi_code = (uint16_t)(mid - 1);
            }
            uint16_t c = lo_code;
            want = (uint16_t)(sign | (c == 0x7bff ? c : nearer(mag, c, f16_value(c), (uint16_t)(c + 1),
                                                                   f16_value((uint16_t)(c + 1)))));
        }
        f16_wrong += kn_f32_to_f16(x) != want;
    }
    CHECK_MSG(f16_wrong == 0 && bf16_wrong == 0, "%d f16 and %d bf16 roundings of %d differ from the nearest code",
              f16_wrong, bf16_wrong, tested);
    printf("f16/bf16: all 65536 f16 codes exact; %d random floats rounded to the nearest code (%d, %d wrong)\n",
           tested, f16_wrong, bf16_wrong);
}

/* ---- affine ---------------------------------------------------------------------------------------- */

typedef struct granularity {
    const char *name;
    int axis;
    int64_t block;
} granularity;

static const granularity granularities[] = {
    {"per-tensor", -1, 0}, {"per-channel 0", 0, 0}, {"per-channel 1", 1, 0}, {"per-block 4", -1, 4}, {"per-block 16", -1, 16},
};

static const kn_encoding affine_encodings[] = {KN_ENC_AFFINE_I8, KN_ENC_AFFINE_U8, KN_ENC_AFFINE_I4,
                                               KN_ENC_AFFINE_I2, KN_ENC_AFFINE_I1};

static void level_range(kn_encoding e, int *lo, int *hi) {
    static const int ranges[][2] = {{-128, 127}, {0, 255}, {-8, 7}, {-2, 1}, {0, 1}};
    *lo = ranges[e - KN_ENC_AFFINE_I8][0];
    *hi = ranges[e - KN_ENC_AFFINE_I8][1];
}

/* The group of flat element i of a (3, 5, 10) tensor, by the definitions of docs/format.md. */
static int64_t reference_group(const kn_shape *s, const granularity *g, int64_t i) {
    int64_t cols = s->d[s->ndim - 1];
    if (g->axis >= 0)
        return i / kn_shape_span(s, g->axis + 1, s->ndim) % s->d[g->axis];
    if (g->block > 0)
        return i / cols * ((cols + g->block - 1) / g->block) + i % cols / g->block;
    return 0;
}

/* Encodes x as (encoding, granularity, symmetric), and compares with the formulas done here: the scales,
 * zero points and every decoded element exactly; returns the largest |error| / scale. */
static double check_affine_case(const float *x, const kn_shape *shape, kn_encoding e, const granularity *g,
                                bool symmetric, int *mismatches) {
    kn_arena arena = {0};
    kn_storage_spec spec = {.encoding = e, .symmetric = symmetric, .axis = g->axis, .block = g->block};
    kn_storage *s;
    CHECK_OK(kn_storage_encode(&arena, x, shape, &spec, &s));
    CHECK_OK(kn_storage_check(s));
    int64_t n = kn_shape_numel(shape), groups = kn_storage_group_count(s);
    float *decoded = malloc(sizeof(float) * (size_t)n);
    kn_storage_decode(s, decoded);
    int lo, hi;
    level_range(e, &lo, &hi);
    double *gmin = calloc((size_t)groups, sizeof(double)), *gmax = calloc((size_t)groups, sizeof(double));
    for (int64_t i = 0; i < n; i++) {
        int64_t k = reference_group(shape, g, i);
        gmin[k] = fmin(gmin[k], x[i]);
        gmax[k] = fmax(gmax[k], x[i]);
    }
    double worst = 0;
    for (int64_t k = 0; k < groups; k++) {
        double range = symmetric ? fmax(-gmin[k], gmax[k]) / hi : (gmax[k] - gmin[k]) / (hi - lo);
        float scale = (float)range < 1.17549435e-38f ? 1.0f : (float)range;
        int zp = symmetric ? 0 : (int)fmin(fmax(lo - nearbyint(gmin[k] / scale), lo), hi);
        *mismatches += s->scale[k] != scale;
        int stored_zp = !s->zero_point ? 0 : (e == KN_ENC_AFFINE_U8 || e == KN_ENC_AFFINE_I1)
                                                 ? ((const uint8_t *)s->zero_point)[k]
                                                 : ((const int8_t *)s->zero_point)[k];
        *mismatches += stored_zp != zp;
    }
    size_t payload_bytes = (size_t)(n * kn_encoding_bits(e) + 7) / 8; /* no gaps between rows */
    *mismatches += s->payload_bytes != payload_bytes;
    for (int64_t i = 0; i < n; i++) {
        int64_t k = reference_group(shape, g, i);
        float scale = s->scale[k];
        int zp = !s->zero_point ? 0 : (e == KN_ENC_AFFINE_U8 || e == KN_ENC_AFFINE_I1)
                                          ? ((const uint8_t *)s->zero_point)[k]
                                          : ((const int8_t *)s->zero_point)[k];
        float q = fminf(fmaxf(nearbyintf(x[i] / scale) + (float)zp, (float)lo), (float)hi);
        float want = (float)((int)q - zp) * scale;
        *mismatches += bits_of(decoded[i]) != bits_of(want);
        /* The payload as docs/format.md lays it out: level i in bits [i * bits, (i + 1) * bits) of the
         * whole payload, first element lowest, two's complement for the signed encodings. */
        int bits = kn_encoding_bits(e);
        unsigned code = ((const uint8_t *)s->payload)[i * bits / 8] >> (i * bits % 8) & ((1u << bits) - 1);
        *mismatches += code != ((unsigned)(int)q & ((1u << bits) - 1));
        /* The bound holds where x lies inside the levels' range. */
        if (x[i] >= (lo - zp) * (double)scale && x[i] <= (hi - zp) * (double)scale)
            worst = fmax(worst, fabs((double)x[i] - decoded[i]) / scale);
    }
    free(gmin);
    free(gmax);
    free(decoded);
    kn_arena_free(&arena);
    return worst;
}

static void test_affine(void) {
    /* Rows of 9: 4-, 2- and 1-bit rows end inside a byte, so the codes run on across them. */
    kn_shape shape = kn_shape_of(3, (int64_t[]){3, 5, 9});
    float x[150];
    fill_normal(x, 150, 3);
    x[7] = 0.0f;
    x[8] = -0.0f;
    int mismatches = 0, cases = 0;
    double worst = 0;
    for (size_t e = 0; e < sizeof affine_encodings / sizeof affine_encodings[0]; e++)
        for (size_t g = 0; g < sizeof granularities / sizeof granularities[0]; g++)
            for (int symmetric = 0; symmetric < 2; symmetric++) {
                /* Unsigned symmetric storage is for non-negative data. */
                bool non_negative = symmetric && (affine_encodings[e] == KN_ENC_AFFINE_U8 ||
                                                  affine_encodings[e] == KN_ENC_AFFINE_I1);
                float y[150];
                for (int i = 0; i < 150; i++)
                    y[i] = non_negative ? fabsf(x[i]) : x[i];
                double w = check_affine_case(y, &shape, affine_encodings[e], &granularities[g], symmetric,
                                             &mismatches);
                worst = fmax(worst, w);
                cases++;
            }
    CHECK_MSG(mismatches == 0, "%d scales, zero points or elements differ from the reference", mismatches);
    /* Half a scale, plus the rounding of x / scale and of (q - zp) * scale in f32. */
    CHECK_MSG(worst <= 0.5 + 1e-5, "largest error %.9f scales", worst);
    printf("affine: %d cases (5 encodings x 5 granularities x sym/asym) exact against the formulas; "
           "max |x - decoded| = %.7f scale (bound 0.5)\n", cases, worst);

    /* Invalid requests and inputs. */
    kn_arena arena = {0};
    kn_storage *s;
    kn_storage_spec bad_axis = {.encoding = KN_ENC_AFFINE_I8, .axis = 3};
    CHECK(kn_storage_encode(&arena, x, &shape, &bad_axis, &s) == KILN_ERR_INVALID_ARG);
    kn_storage_spec block_and_axis = {.encoding = KN_ENC_AFFINE_I8, .axis = 0, .block = 4};
    CHECK(kn_storage_encode(&arena, x, &shape, &block_and_axis, &s) == KILN_ERR_INVALID_ARG);
    x[5] = NAN;
    kn_storage_spec i8 = {.encoding = KN_ENC_AFFINE_I8, .axis = -1};
    CHECK(kn_storage_encode(&arena, x, &shape, &i8, &s) == KILN_ERR_INVALID_ARG);
    CHECK(strstr(kiln_last_error(), "element 5") != NULL);
    kn_arena_free(&arena);
}

/* ---- codebook -------------------------------------------------------------------------------------- */

static void test_codebook(void) {
    kn_shape shape = kn_shape_of(2, (int64_t[]){6, 50});
    float x[300];
    fill_normal(x, 300, 5);
    int bad = 0;
    for (int axis = -1; axis <= 1; axis++) {
        for (int bits = 1; bits <= 8; bits *= 2) {
            kn_arena arena = {0};
            kn_storage_spec spec = {.encoding = KN_ENC_CODEBOOK, .axis = axis, .bits = bits, .seed = 42};
            kn_storage *s, *again;
            CHECK_OK(kn_storage_encode(&arena, x, &shape, &spec, &s));
            CHECK_OK(kn_storage_encode(&arena, x, &shape, &spec, &again));
            CHECK_OK(kn_storage_check(s));
            /* Deterministic: the same seed gives the same bytes. */
            int64_t channels = axis >= 0 ? shape.d[axis] : 1;
            bad += s->k != again->k || memcmp(s->payload, again->payload, s->payload_bytes) != 0 ||
                   memcmp(s->centroids, again->centroids, sizeof(float) * (size_t)(channels * s->k)) != 0;
            bad += s->k < 1 || s->k > (1 << bits);
            float decoded[300];
            kn_storage_decode(s, decoded);
            double sq = 0, sum[256] = {0};
            int64_t count[256] = {0};
            for (int i = 0; i < 300; i++) {
                int64_t ch = axis < 0 ? 0 : axis == 0 ? i / 50 : i % 50;
                const float *table = s->centroids + ch * s->k;
                /* The decoded element is its nearest centroid, found by brute force. */
                int best = 0;
                for (int j = 1; j < s->k; j++)
                    if (fabsf(x[i] - table[j]) < fabsf(x[i] - table[best]))
                        best = j;
                bad += fabsf(x[i] - decoded[i]) != fabsf(x[i] - table[best]);
                sq += (x[i] - decoded[i]) * (double)(x[i] - decoded[i]);
                if (axis < 0) {
                    int j = 0;
                    while (table[j] != decoded[i])
                        j++;
                    sum[j] += x[i];
                    count[j]++;
                }
            }
            /* Lloyd converged: each used centroid is the mean of its elements. */
            for (int j = 0; axis < 0 && j < s->k; j++)
                bad += count[j] && (float)(sum[j] / (double)count[j]) != s->centroids[j];
            if (axis != 1)
                printf("codebook %d-bit %s: k = %lld, rms error %.5f\n", bits, axis < 0 ? "per-tensor" : "per-channel",
                       (long long)s->k, sqrt(sq / 300));
            kn_arena_free(&arena);
        }
    }
    CHECK_MSG(bad == 0, "%d codebook checks failed", bad);
    /* Fewer distinct values than 2^bits: one centroid each, exact. */
    float few[12] = {1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3};
    kn_arena arena = {0};
    kn_shape s12 = kn_shape_of(1, (int64_t[]){12});
    kn_storage_spec spec = {.encoding = KN_ENC_CODEBOOK, .axis = -1, .bits = 4, .seed = 1};
    kn_storage *s;
    CHECK_OK(kn_storage_encode(&arena, few, &s12, &spec, &s));
    float decoded[12];
    kn_storage_decode(s, decoded);
    CHECK(s->k == 3 && memcmp(decoded, few, sizeof few) == 0);
    kn_arena_free(&arena);
}

/* ---- sparse ---------------------------------------------------------------------------------------- */

static void test_sparse(void) {
    kn_shape shape = kn_shape_of(3, (int64_t[]){7, 3, 5}); /* viewed as (7, 15) */
    float x[105];
    fill_normal(x, 105, 9);
    kn_rng rng = kn_rng_seeded(10);
    for (int i = 0; i < 105; i++)
        if (kn_rng_uniform(&rng) < 0.7f)
            x[i] = 0.0f;
    for (int i = 15; i < 30; i++)
        x[i] = 0.0f; /* an empty row */
    x[3] = -0.0f;    /* stored: its bits are not +0's */
    x[4] = float_of(0x7fc01234u);
    int64_t nnz = 0;
    for (int i = 0; i < 105; i++)
        nnz += bits_of(x[i]) != 0;
    static const kn_encoding kinds[] = {KN_ENC_SPARSE_CSR, KN_ENC_SPARSE_BITMASK};
    int bad = 0;
    for (int k = 0; k < 2; k++) {
        kn_arena arena = {0};
        kn_storage_spec spec = {.encoding = kinds[k], .values = KN_ENC_F32};
        kn_storage *s;
        CHECK_OK(kn_storage_encode(&arena, x, &shape, &spec, &s));
        CHECK_OK(kn_storage_check(s));
        float decoded[105];
        kn_storage_decode(s, decoded);
        bad += s->nnz != nnz || memcmp(decoded, x, sizeof x) != 0;
        /* The reference layout: CSR row pointers and columns, or the bitmask bits. */
        const int32_t *ptr = s->payload;
        const uint8_t *mask = s->payload;
        int64_t j = 0;
        for (int r = 0; r < 7; r++) {
            for (int c = 0; c < 15; c++) {
                bool here = bits_of(x[r * 15 + c]) != 0;
                if (kinds[k] == KN_ENC_SPARSE_BITMASK)
                    bad += ((mask[(r * 15 + c) / 8] >> ((r * 15 + c) % 8)) & 1) != here;
                else if (here)
                    bad += ptr[8 + j] != c;
                j += here;
            }
            if (kinds[k] == KN_ENC_SPARSE_CSR)
                bad += ptr[r + 1] != j;
        }
        /* The same with affine i8 values: zeros stay +0, the stored elements dequantize (NaN is not
         * finite: leave it out). */
        x[4] = 0.5f;
        kn_storage_spec quantized = {.encoding = kinds[k], .values = KN_ENC_AFFINE_I8, .values_symmetric = true};
        CHECK_OK(kn_storage_encode(&arena, x, &shape, &quantized, &s));
        CHECK_OK(kn_storage_check(s));
        kn_storage_decode(s, decoded);
        float scale = s->values->scale[0];
        for (int i = 0; i < 105; i++) {
            float want = bits_of(x[i]) == 0 ? 0.0f : (float)(int)fminf(fmaxf(nearbyintf(x[i] / scale), -128), 127) * scale;
            bad += bits_of(decoded[i]) != bits_of(want);
        }
        x[4] = float_of(0x7fc01234u);
        char name[64];
        printf("%s: %lld of 105 stored, %lld bytes (f32 values); %s: %lld bytes\n",
               kn_encoding_name(kinds[k]), (long long)nnz, (long long)(s->payload_bytes + (size_t)nnz * 4),
               kn_storage_describe(s, name, sizeof name), (long long)kn_storage_bytes(s));
        kn_arena_free(&arena);
    }
    CHECK_MSG(bad == 0, "%d sparse elements or indices differ", bad);
}

/* ---- .kiln round trips ----------------------------------------------------------------------------- */

typedef struct storage_case {
    const char *name;
    kn_storage_spec spec;
} storage_case;

static const storage_case cases[] = {
    {"f16", {.encoding = KN_ENC_F16}},
    {"bf16", {.encoding = KN_ENC_BF16}},
    {"i8 tensor sym", {.encoding = KN_ENC_AFFINE_I8, .symmetric = true, .axis = -1}},
    {"i8 channel", {.encoding = KN_ENC_AFFINE_I8, .axis = 0}},
    {"i8 block", {.encoding = KN_ENC_AFFINE_I8, .axis = -1, .block = 4}},
    {"u8 tensor", {.encoding = KN_ENC_AFFINE_U8, .axis = -1}},
    {"u8 channel 1", {.encoding = KN_ENC_AFFINE_U8, .axis = 1}},
    {"u8 block sym", {.encoding = KN_ENC_AFFINE_U8, .symmetric = true, .axis = -1, .block = 3}},
    {"i4 tensor", {.encoding = KN_ENC_AFFINE_I4, .axis = -1}},
    {"i4 channel sym", {.encoding = KN_ENC_AFFINE_I4, .symmetric = true, .axis = 0}},
    {"i4 block", {.encoding = KN_ENC_AFFINE_I4, .axis = -1, .block = 2}},
    {"i2 tensor sym", {.encoding = KN_ENC_AFFINE_I2, .symmetric = true, .axis = -1}},
    {"i2 channel", {.encoding = KN_ENC_AFFINE_I2, .axis = 1}},
    {"i2 block", {.encoding = KN_ENC_AFFINE_I2, .axis = -1, .block = 5}},
    {"i1 tensor", {.encoding = KN_ENC_AFFINE_I1, .axis = -1}},
    {"i1 channel", {.encoding = KN_ENC_AFFINE_I1, .axis = 0}},
    {"i1 block sym", {.encoding = KN_ENC_AFFINE_I1, .symmetric = true, .axis = -1, .block = 3}},
    {"codebook 1", {.encoding = KN_ENC_CODEBOOK, .axis = -1, .bits = 1, .seed = 1}},
    {"codebook 2 channel", {.encoding = KN_ENC_CODEBOOK, .axis = 0, .bits = 2, .seed = 2}},
    {"codebook 4", {.encoding = KN_ENC_CODEBOOK, .axis = -1, .bits = 4, .seed = 3}},
    {"codebook 8 channel", {.encoding = KN_ENC_CODEBOOK, .axis = 1, .bits = 8, .seed = 4}},
    {"csr f32", {.encoding = KN_ENC_SPARSE_CSR, .values = KN_ENC_F32}},
    {"csr i8", {.encoding = KN_ENC_SPARSE_CSR, .values = KN_ENC_AFFINE_I8}},
    {"csr bf16", {.encoding = KN_ENC_SPARSE_CSR, .values = KN_ENC_BF16}},
    {"bitmask f16", {.encoding = KN_ENC_SPARSE_BITMASK, .values = KN_ENC_F16}},
    {"bitmask i4 sym", {.encoding = KN_ENC_SPARSE_BITMASK, .values = KN_ENC_AFFINE_I4, .values_symmetric = true}},
};
enum { N_CASES = sizeof cases / sizeof cases[0] };

/* x -> Add(w0) -> Add(w1) ... with one (3, 7) constant per case, each stored as that case says, plus an
 * unquantized i64 constant so plain and compact entries mix. */
static void build_storage_graph(kn_graph *g) {
    kn_graph_init(g);
    kn_shape s = kn_shape_of(2, (int64_t[]){3, 7});
    int prev = test_add_value(g, "x", KN_VALUE_INPUT, KN_F32, &s);
    g->inputs[g->n_inputs++] = prev;
    kn_rng rng = kn_rng_seeded(77);
    for (int c = 0; c < N_CASES; c++) {
        char name[64];
        snprintf(name, sizeof name, "w %s", cases[c].name);
        int w = test_add_value(g, name, c % 2 ? KN_VALUE_PARAM : KN_VALUE_CONST, KN_F32, &s);
        float *data = g->values[w].data;
        for (int i = 0; i < 21; i++)
            data[i] = kn_rng_uniform(&rng) < 0.5f && kn_encoding_is_sparse(cases[c].spec.encoding)
                          ? 0.0f : kn_rng_normal(&rng);
        CHECK_MSG(kn_value_compress(g, w, &cases[c].spec) == KILN_OK, "%s: %s", cases[c].name, kiln_last_error());
        snprintf(name, sizeof name, "h%d", c);
        int h = test_add_value(g, name, KN_VALUE_ACT, KN_F32, &s);
        test_add_node(g, "Add", name, 2, (int[]){prev, w}, 1, &h);
        prev = h;
    }
    kn_shape one = kn_shape_of(1, (int64_t[]){2});
    int shape = test_add_value(g, "shape", KN_VALUE_CONST, KN_I64, &one);
    ((int64_t *)g->values[shape].data)[0] = 7;
    ((int64_t *)g->values[shape].data)[1] = 3;
    int y = test_add_value(g, "y", KN_VALUE_ACT, KN_F32, &s);
    test_add_node(g, "Reshape", "reshape", 2, (int[]){prev, shape}, 1, &y);
    g->outputs[g->n_outputs++] = y;
    CHECK_OK(kn_graph_infer_shapes(g));
}

/* Whether two storages hold the same bytes everywhere. */
static bool same_storage(const kn_storage *a, const kn_storage *b) {
    if (!a || !b)
        return a == b;
    if (a->encoding != b->encoding || !kn_shape_equal(&a->shape, &b->shape) || a->axis != b->axis ||
        a->block != b->block || a->bits != b->bits || a->payload_bytes != b->payload_bytes || a->k != b->k ||
        a->nnz != b->nnz || !a->zero_point != !b->zero_point)
        return false;
    if (memcmp(a->payload, b->payload, a->payload_bytes) != 0)
        return false;
    if (kn_encoding_is_affine(a->encoding)) {
        size_t groups = (size_t)kn_storage_group_count(a);
        if (memcmp(a->scale, b->scale, groups * 4) != 0 || (a->zero_point && memcmp(a->zero_point, b->zero_point, groups)))
            return false;
    }
    if (a->encoding == KN_ENC_CODEBOOK &&
        memcmp(a->centroids, b->centroids, sizeof(float) * (size_t)(a->k * (a->axis >= 0 ? a->shape.d[a->axis] : 1))))
        return false;
    return same_storage(a->values, b->values);
}

static int storage_differences(const kn_graph *a, const kn_graph *b) {
    int diff = a->n_values != b->n_values;
    for (int v = 0; v < a->n_values && !diff; v++) {
        const kn_value *x = &a->values[v], *y = &b->values[v];
        size_t bytes;
        diff += strcmp(x->name, y->name) != 0;
        if (x->data && kn_shape_bytes(&x->shape, x->dtype, &bytes))
            diff += !y->data || memcmp(x->data, y->data, bytes) != 0;
        diff += !same_storage(x->storage, y->storage);
    }
    return diff;
}

static void test_round_trips(void) {
    kn_graph g, back;
    build_storage_graph(&g);
    void *buf, *again;
    size_t size, size2;
    CHECK_OK(kn_kiln_save_buffer(&g, NULL, 0, &buf, &size));
    CHECK_OK(kn_kiln_load_buffer(buf, size, &back, NULL, NULL));
    int diff = storage_differences(&g, &back);
    CHECK_MSG(diff == 0, "%d values differ after a buffer round trip", diff);
    CHECK_OK(kn_kiln_save_buffer(&back, NULL, 0, &again, &size2));
    CHECK(size == size2 && memcmp(buf, again, size) == 0);
    kn_graph_free(&back);
    free(again);

    char path[] = "/tmp/kiln_storage_test.XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    CHECK_OK(kn_kiln_save(path, &g, NULL, 0));
    for (int mode = 0; mode < 2; mode++) {
        CHECK_OK(kn_kiln_load(path, mode ? KN_KILN_LOAD_MMAP : KN_KILN_LOAD_COPY, &back, NULL, NULL));
        int d = storage_differences(&g, &back);
        CHECK_MSG(d == 0, "%d values differ after a %s load", d, mode ? "mmap" : "copy");
        kn_graph_free(&back);
    }
    unlink(path);
    int64_t compact = 0, plain = 0;
    for (int v = 0; v < g.n_values; v++)
        if (g.values[v].storage) {
            compact += kn_storage_bytes(g.values[v].storage);
            plain += 21 * 4;
        }
    printf("round trip: %d encodings x granularities in one %zu-byte file, bit-identical through buffer, "
           "copy and mmap loads (%d differences); their data: %lld bytes stored for %lld as f32\n",
           N_CASES, size, diff, (long long)compact, (long long)plain);
    free(buf);
    kn_graph_free(&g);
}

/* A file written by format 1.1 (tests/ref/data/storage_1_1.kiln, the round-trip graph as kiln wrote it
 * at commit bbe5563, packed rows starting on a byte) reads as the same graph, storages included: the
 * reader repacks its codes into the contiguous layout the encoders give today, so the graph built here
 * now and the old file agree bit for bit, and saving what was read gives today's file exactly. */
static void test_format_1_1_file(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/tests/ref/data/storage_1_1.kiln", KILN_SOURCE_DIR);
    kn_graph now, old;
    build_storage_graph(&now);
    void *now_file, *resaved;
    size_t now_size, resaved_size;
    CHECK_OK(kn_kiln_save_buffer(&now, NULL, 0, &now_file, &now_size));
    CHECK(((const uint16_t *)now_file)[5] == 2); /* minor version 2 */
    for (int mode = 0; mode < 2; mode++) {
        CHECK_OK(kn_kiln_load(path, mode ? KN_KILN_LOAD_MMAP : KN_KILN_LOAD_COPY, &old, NULL, NULL));
        int d = storage_differences(&now, &old);
        CHECK_MSG(d == 0, "%d values of the 1.1 file differ (%s load)", d, mode ? "mmap" : "copy");
        CHECK_OK(kn_kiln_save_buffer(&old, NULL, 0, &resaved, &resaved_size));
        CHECK(resaved_size == now_size && memcmp(resaved, now_file, now_size) == 0);
        free(resaved);
        kn_graph_free(&old);
    }
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    unsigned char header[12] = {0};
    CHECK(f && fread(header, 1, sizeof header, f) == sizeof header);
    long old_size = f && fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (f)
        fclose(f);
    CHECK(header[8] == 1 && header[10] == 1); /* written as format 1.1 */
    /* Tensors of (3, 7) with codes narrower than a byte: 1.1 padded each of their rows to a byte (the
     * files' sizes are the same: every tensor starts on 64 bytes). */
    CHECK(old_size > 0 && (size_t)old_size >= now_size);
    int64_t packed_now = 0, packed_old = 0, n_packed = 0;
    for (int v = 0; v < now.n_values; v++) {
        const kn_storage *st = now.values[v].storage;
        if (st && kn_storage_rows_share_bytes(st)) {
            int bits = st->encoding == KN_ENC_SPARSE_BITMASK ? 1 : st->bits;
            packed_now += (int64_t)st->payload_bytes;
            packed_old += 3 * ((7 * bits + 7) / 8);
            n_packed++;
        }
    }
    CHECK(n_packed == 14 && packed_now < packed_old);
    printf("format 1.1 file (%ld bytes) reads as today's graph, bit for bit (copy and mmap), and saves as "
           "today's %zu-byte 1.2 file; the row-padded codes of its %lld packed tensors: %lld bytes, now %lld\n",
           old_size, now_size, (long long)n_packed, (long long)packed_old, (long long)packed_now);
    free(now_file);
    kn_graph_free(&now);
}

/* The writer refuses a value whose data changed after it was quantized, until its storage is dropped. */
static void test_changed_after_quantization(void) {
    kn_graph g;
    build_storage_graph(&g);
    int w = kn_graph_find_value(&g, "w i4 channel sym");
    ((float *)g.values[w].data)[3] += 1.0f;
    void *buf;
    size_t size;
    kiln_status st = kn_kiln_save_buffer(&g, NULL, 0, &buf, &size);
    CHECK(st == KILN_ERR_INVALID_ARG && strstr(kiln_last_error(), "value 'w i4 channel sym' changed after it was quantized"));
    printf("changed weight: %s\n", kiln_last_error());
    kn_value_drop_storage(&g.values[w]);
    CHECK_OK(kn_kiln_save_buffer(&g, NULL, 0, &buf, &size));
    free(buf);
    kn_graph_free(&g);
}

/* ---- a quantized model runs like the f32 model of its decoded weights ------------------------------- */

/* x (B, 64) -> Gemm(w1 (32, 64) transB, b1) -> Relu -> Gemm(w2 (10, 32) transB, b2). */
static void build_mlp(kn_graph *g, int64_t in, int64_t hidden) {
    kn_graph_init(g);
    kn_shape xs = kn_shape_of(2, (int64_t[]){4, in}), none = {0};
    int x = test_add_value(g, "x", KN_VALUE_INPUT, KN_F32, &xs);
    int w1 = test_add_value(g, "w1", KN_VALUE_PARAM, KN_F32, &(kn_shape){2, {hidden, in}});
    int b1 = test_add_value(g, "b1", KN_VALUE_PARAM, KN_F32, &(kn_shape){1, {hidden}});
    int w2 = test_add_value(g, "w2", KN_VALUE_PARAM, KN_F32, &(kn_shape){2, {10, hidden}});
    int b2 = test_add_value(g, "b2", KN_VALUE_PARAM, KN_F32, &(kn_shape){1, {10}});
    int h = test_add_value(g, "h", KN_VALUE_ACT, KN_F32, &none);
    int r = test_add_value(g, "r", KN_VALUE_ACT, KN_F32, &none);
    int y = test_add_value(g, "y", KN_VALUE_ACT, KN_F32, &none);
    int n = test_add_node(g, "Gemm", "fc1", 3, (int[]){x, w1, b1}, 1, &h);
    kn_node_set_int(g, n, "transB", 1);
    test_add_node(g, "Relu", "relu", 1, &h, 1, &r);
    n = test_add_node(g, "Gemm", "fc2", 3, (int[]){r, w2, b2}, 1, &y);
    kn_node_set_int(g, n, "transB", 1);
    g->inputs[g->n_inputs++] = x;
    g->outputs[g->n_outputs++] = y;
    int params[] = {w1, b1, w2, b2};
    for (int i = 0; i < 4; i++)
        fill_normal(g->values[params[i]].data, kn_shape_numel(&g->values[params[i]].shape), 100 + (uint64_t)i);
    CHECK_OK(kn_graph_infer_shapes(g));
}

/* Runs a .kiln image on a fixed input; out gets the (4, 10) output. */
static void run_model(const void *file, size_t size, float *out) {
    kiln_model *model;
    kiln_session *session;
    CHECK_OK(kiln_model_load_memory(file, size, &model));
    CHECK_OK(kiln_session_create(model, NULL, &session));
    int64_t dims[2];
    int ndim;
    CHECK_OK(kiln_session_input_shape(session, 0, &ndim, dims));
    dims[0] = 4;
    CHECK_OK(kiln_session_resize_input(session, 0, 2, dims));
    float *x = malloc(sizeof(float) * (size_t)(4 * dims[1]));
    fill_normal(x, 4 * dims[1], 7);
    CHECK_OK(kiln_session_set_input(session, 0, KILN_DTYPE_F32, x, sizeof(float) * (size_t)(4 * dims[1])));
    CHECK_OK(kiln_session_run(session));
    const void *y;
    size_t bytes;
    CHECK_OK(kiln_session_output(session, 0, &y, &bytes));
    CHECK(bytes == 40 * sizeof(float));
    memcpy(out, y, 40 * sizeof(float));
    free(x);
    kiln_session_free(session);
    kiln_model_free(model);
}

static void test_quantized_model_runs(void) {
    static const storage_case weights[] = {
        {"affine i8 per-channel", {.encoding = KN_ENC_AFFINE_I8, .symmetric = true, .axis = 0}},
        {"affine i4 per-block 16", {.encoding = KN_ENC_AFFINE_I4, .axis = -1, .block = 16}},
        {"codebook 4-bit", {.encoding = KN_ENC_CODEBOOK, .axis = -1, .bits = 4, .seed = 9}},
        {"sparse CSR, i8 values", {.encoding = KN_ENC_SPARSE_CSR, .values = KN_ENC_AFFINE_I8}},
        {"bf16", {.encoding = KN_ENC_BF16}},
    };
    for (size_t c = 0; c < sizeof weights / sizeof weights[0]; c++) {
        kn_graph g;
        build_mlp(&g, 64, 32);
        for (int w = 0; w < g.n_values; w++) {
            if (strcmp(g.values[w].name, "w1") && strcmp(g.values[w].name, "w2"))
                continue;
            float *data = g.values[w].data;
            for (int64_t i = 0; kn_encoding_is_sparse(weights[c].spec.encoding) && i < kn_shape_numel(&g.values[w].shape); i += 2)
                data[i] = 0.0f; /* pruned */
            CHECK_OK(kn_value_compress(&g, w, &weights[c].spec));
        }
        void *compact, *plain;
        size_t compact_size, plain_size;
        CHECK_OK(kn_kiln_save_buffer(&g, NULL, 0, &compact, &compact_size));
        for (int w = 0; w < g.n_values; w++)
            kn_value_drop_storage(&g.values[w]);
        CHECK_OK(kn_kiln_save_buffer(&g, NULL, 0, &plain, &plain_size));
        float y_compact[40], y_plain[40];
        run_model(compact, compact_size, y_compact);
        run_model(plain, plain_size, y_plain);
        double max_diff = 0;
        for (int i = 0; i < 40; i++)
            max_diff = fmax(max_diff, fabs((double)y_compact[i] - y_plain[i]));
        CHECK_MSG(memcmp(y_compact, y_plain, sizeof y_plain) == 0, "%s: outputs differ by up to %g", weights[c].name,
                  max_diff);
        printf("MLP with %s weights: %zu-byte file (%zu as f32), outputs equal to the f32 model of the decoded "
               "weights (max difference %g)\n", weights[c].name, compact_size, plain_size, max_diff);
        free(compact);
        free(plain);
        kn_graph_free(&g);
    }
}

/* A 784-256-10 MLP's file as f32, int8 and int4. */
static void test_file_sizes(void) {
    static const storage_case kinds[] = {
        {"f32", {.encoding = KN_ENC_F32}},
        {"int8 per-channel", {.encoding = KN_ENC_AFFINE_I8, .symmetric = true, .axis = 0}},
        {"int4 per-channel", {.encoding = KN_ENC_AFFINE_I4, .symmetric = true, .axis = 0}},
        {"int4 per-block 32", {.encoding = KN_ENC_AFFINE_I4, .axis = -1, .block = 32}},
    };
    size_t sizes[4];
    printf("784-256-10 MLP file:");
    for (int t = 0; t < 4; t++) {
        kn_graph g;
        build_mlp(&g, 784, 256);
        for (int w = 0; t > 0 && w < g.n_values; w++)
            if (g.values[w].kind == KN_VALUE_PARAM && g.values[w].shape.ndim == 2)
                CHECK_OK(kn_value_compress(&g, w, &kinds[t].spec));
        void *buf;
        CHECK_OK(kn_kiln_save_buffer(&g, NULL, 0, &buf, &sizes[t]));
        printf("%s %s %zu bytes (%.2fx smaller)", t ? "," : "", kinds[t].name, sizes[t], (double)sizes[0] / (double)sizes[t]);
        free(buf);
        kn_graph_free(&g);
    }
    printf("\n");
    /* The weights dominate: 4 bytes an element become 1 and 1/2, plus the biases and scales. */
    CHECK(sizes[1] * 39 < sizes[0] * 10);
    CHECK(sizes[2] * 10 < sizes[1] * 55 / 10);
    CHECK(sizes[2] < sizes[3] && sizes[3] * 5 < sizes[0]);
}

/* `test_storage --save PATH` writes the round-trip graph to PATH: tests/ref/data/storage_1_1.kiln is
 * what it wrote at commit bbe5563 (format 1.1, packed rows starting on a byte). */
static int save_round_trip_graph(const char *path) {
    kn_graph g;
    build_storage_graph(&g);
    CHECK_OK(kn_kiln_save(path, &g, NULL, 0));
    kn_graph_free(&g);
    return check_finish();
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--save") == 0)
        return save_round_trip_graph(argv[2]);
    test_half_floats();
    test_affine();
    test_codebook();
    test_sparse();
    test_round_trips();
    test_format_1_1_file();
    test_changed_after_quantization();
    test_quantized_model_runs();
    test_file_sizes();
    return check_finish();
}
