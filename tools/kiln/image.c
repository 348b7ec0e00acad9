/* PNG and JPEG decoding through stb_image, whose implementation is compiled into this file. */
#include "image.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "core/tensor.h"
#include "cli.h"

#if __has_include(<stb/stb_image.h>)
#define KILN_HAVE_STB_IMAGE 1
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_MAX_DIMENSIONS (1 << 14) // refuse images whose decoding would need gigabytes
#define KILN_IMAGE_MAX_PIXELS (1 << 24) // 4096 x 4096: a model input, not a photograph to archive
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include <stb/stb_image.h>
#pragma GCC diagnostic pop
#endif

bool cli_image_supported(void) {
#ifdef KILN_HAVE_STB_IMAGE
    return true;
#else
    return false;
#endif
}

#ifdef KILN_HAVE_STB_IMAGE
/* Whether every chunk of a PNG (a file that starts with the PNG signature; anything else passes) lies
 * within the file (4-byte length, 4-byte type, the data, a 4-byte CRC, up to IEND), and the first IDAT
 * is not empty. */
static bool png_chunks_fit(const unsigned char *p, size_t size) {
    static const unsigned char signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (size < 8 || memcmp(p, signature, 8) != 0)
        return true;
    bool seen_idat = false;
    for (size_t pos = 8; pos + 8 <= size;) { /* a chunk's length and type are there: stb reads them */
        uint32_t length = (uint32_t)p[pos] << 24 | (uint32_t)p[pos + 1] << 16 | (uint32_t)p[pos + 2] << 8 | p[pos + 3];
        if (size - pos < 12 || length > size - pos - 12)
            return false;
        if (memcmp(p + pos + 4, "IEND", 4) == 0)
            return true;
        /* stb adds an empty first IDAT's length to its still-NULL buffer (undefined behaviour); no
         * encoder writes one. */
        if (length == 0 && memcmp(p + pos + 4, "IDAT", 4) == 0 && !seen_idat)
            return false;
        seen_idat |= memcmp(p + pos + 4, "IDAT", 4) == 0;
        pos += 12 + (size_t)length;
    }
    return true; /* no IEND: stb reports the truncation itself, allocating nothing more */
}

/* Whether every Huffman table of a JPEG (a file that starts with the SOI marker; anything else passes)
 * defines at most 256 codes and lies within its DHT segment and the file. stb_image as Debian ships it
 * writes one entry per code into a 257-entry array without checking the total (found by fuzz_image).
 * The walk follows the markers as stb reads them: fill bytes (0xFF) may precede any marker, the first
 * one included; a segment's 2-byte length counts itself; after a scan header the entropy-coded data runs to the next marker that is not a stuffed 0xFF00 or a restart
 * marker. */
static bool jpeg_huffman_tables_fit(const unsigned char *p, size_t size) {
    size_t pos = 0; /* stb takes any number of 0xFF fill bytes before a marker, the first one too */
    while (pos < size && p[pos] == 0xFF)
        pos++;
    if (pos == 0 || pos == size || p[pos] != 0xD8)
        return true;
    pos++;
    while (pos + 4 <= size) {
        if (p[pos] != 0xFF) { /* stb skips bytes that are not a marker, and so does this walk */
            pos++;
            continue;
        }
        unsigned marker = p[pos + 1];
        if (marker == 0xFF) { /* fill byte before a marker */
            pos++;
            continue;
        }
        if (marker == 0xD9)
            return true; /* end of image */
        if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) { /* markers without a segment */
            pos += 2;
            continue;
        }
        size_t length = (size_t)p[pos + 2] << 8 | p[pos + 3];
        if (length < 2 || length > size - pos - 2)
            return false;
        size_t end = pos + 2 + length;
        if (marker == 0xC4) {
            for (size_t t = pos + 4; t < end;) { /* tables: class/id, 16 code counts, the symbols */
                if (end - t < 17)
                    return false;
                size_t codes = 0;
                for (int i = 1; i <= 16; i++)
                    codes += p[t + i];
                if (codes > 256 || codes > end - t - 17)
                    return false;
                t += 17 + codes;
            }
        }
        pos = end;
        if (marker == 0xDA) /* a scan: skip its entropy-coded data */
            while (pos + 1 < size && !(p[pos] == 0xFF && p[pos + 1] != 0x00 &&
                                       !(p[pos + 1] >= 0xD0 && p[pos + 1] <= 0xD7)))
                pos++;
    }
    return true;
}

/* Where output coordinate `i` of `out_size` samples the input of `in_size`: pixel centres aligned,
 * clamped at the borders. *lo and *hi are the two input pixels, *t the weight of *hi. */
static void source_position(int64_t i, int64_t out_size, int64_t in_size, int64_t *lo, int64_t *hi, float *t) {
    double x = ((double)i + 0.5) * (double)in_size / (double)out_size - 0.5;
    if (x < 0)
        x = 0;
    if (x > (double)(in_size - 1))
        x = (double)(in_size - 1);
    *lo = (int64_t)x;
    *hi = *lo + 1 < in_size ? *lo + 1 : *lo;
    *t = (float)(x - (double)*lo);
}

/* Interleaved (in_h, in_w, channels) bytes -> planar (channels, out_h, out_w) floats in [0, 1]. Same
 * sizes copy each byte exactly as v / 255, like kiln's IDX loader; others interpolate bilinearly. */
static void to_planar(const unsigned char *src, int64_t channels, int64_t in_h, int64_t in_w, int64_t out_h,
                      int64_t out_w, float *dst) {
    for (int64_t y = 0; y < out_h; y++) {
        int64_t y0, y1;
        float ty;
        source_position(y, out_h, in_h, &y0, &y1, &ty);
        for (int64_t x = 0; x < out_w; x++) {
            int64_t x0, x1;
            float tx;
            source_position(x, out_w, in_w, &x0, &x1, &tx);
            for (int64_t c = 0; c < channels; c++) {
                float p00 = src[(y0 * in_w + x0) * channels + c], p01 = src[(y0 * in_w + x1) * channels + c];
                float p10 = src[(y1 * in_w + x0) * channels + c], p11 = src[(y1 * in_w + x1) * channels + c];
                float top = p00 + tx * (p01 - p00), bottom = p10 + tx * (p11 - p10);
                dst[(c * out_h + y) * out_w + x] = (top + ty * (bottom - top)) / 255.0f;
            }
        }
    }
}
#endif

kiln_status cli_image_load(const char *path, int64_t channels, int64_t *height, int64_t *width, float **pixels) {
    *pixels = NULL;
#ifdef KILN_HAVE_STB_IMAGE
    if (channels < 1 || channels > 4)
        return kn_fail(KILN_ERR_SHAPE, "%s: an image gives 1 to 4 channels (gray, gray+alpha, RGB, RGBA); the "
                       "model input has %lld", path, (long long)channels);
    unsigned char *file;
    size_t size;
    KN_TRY(cli_read_file(path, &file, &size));
    int w, h, file_channels;
    /* The header first: an image claiming more than KILN_IMAGE_MAX_PIXELS is refused before stb
     * allocates for it (a 100-byte PNG can claim 16384 x 16384), and so is a PNG whose chunks claim more
     * bytes than the file has (stb would allocate what a chunk claims before reading it) and a JPEG
     * whose Huffman tables would overrun stb's. */
    if (size > INT_MAX || !png_chunks_fit(file, size)) {
        free(file);
        return kn_fail(KILN_ERR_FORMAT, "%s: a truncated or corrupt PNG (a chunk claims more bytes than the file "
                       "has, or the first image data chunk is empty)", path);
    }
    if (!jpeg_huffman_tables_fit(file, size)) {
        free(file);
        return kn_fail(KILN_ERR_FORMAT, "%s: a truncated or corrupt JPEG (a segment runs past the end of the "
                       "file, or a Huffman table defines more than 256 codes)", path);
    }
    if (stbi_info_from_memory(file, (int)size, &w, &h, &file_channels) && (int64_t)w * h > KILN_IMAGE_MAX_PIXELS) {
        free(file);
        return kn_fail(KILN_ERR_UNSUPPORTED, "%s: a %d x %d image has more than %d pixels, kiln's limit", path,
                       w, h, KILN_IMAGE_MAX_PIXELS);
    }
    unsigned char *decoded = stbi_load_from_memory(file, (int)size, &w, &h, &file_channels, (int)channels);
    free(file);
    if (!decoded)
        return kn_fail(KILN_ERR_FORMAT, "%s: not a PNG or JPEG image kiln can decode (%s)", path,
                       stbi_failure_reason());
    int64_t out_h = *height > 0 ? *height : h, out_w = *width > 0 ? *width : w;
    size_t bytes;
    kn_shape shape = kn_shape_of(3, (int64_t[]){channels, out_h, out_w});
    if (!kn_shape_bytes(&shape, KN_F32, &bytes) || !(*pixels = malloc(bytes))) {
        stbi_image_free(decoded);
        return kn_fail(KILN_ERR_NOMEM, "%s: no memory for a %lld x %lld image", path, (long long)out_h,
                       (long long)out_w);
    }
    to_planar(decoded, channels, h, w, out_h, out_w, *pixels);
    stbi_image_free(decoded);
    *height = out_h;
    *width = out_w;
    return KILN_OK;
#else
    (void)channels, (void)height, (void)width;
    return kn_fail(KILN_ERR_UNSUPPORTED, "%s: this kiln was built without an image decoder (install libstb-dev "
                   "and rebuild)", path);
#endif
}
