/* Helpers shared by the DATA loaders: reading files through zlib, allocation, messages, conversions. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "core/tensor.h"
#include "train/data_internal.h"

/* gzread takes an unsigned count: read in pieces well below its limit. */
enum { KN_DATA_READ_CHUNK = 1 << 30 };
/* First allocation of kn_data_file_read_alloc; it doubles from here up to the size the header claims. */
enum { KN_DATA_FIRST_BLOCK = 1 << 24 };

kiln_status kn_data_file_open(kn_data_file *f, const char *path) {
    f->path = path;
    errno = 0;
    f->gz = gzopen(path, "rb");
    if (!f->gz)
        return kn_fail(KILN_ERR_IO, "%s: cannot open: %s", path, errno ? strerror(errno) : "out of memory");
    gzbuffer(f->gz, 1 << 18); /* zlib's default 8 KiB makes many small reads for a 50 MB file */
    return KILN_OK;
}

void kn_data_file_close(kn_data_file *f) {
    if (f->gz)
        gzclose(f->gz);
    f->gz = NULL;
}

static kiln_status file_read_error(kn_data_file *f, const char *what) {
    int code;
    const char *message = gzerror(f->gz, &code);
    if (code == Z_ERRNO)
        return kn_fail(KILN_ERR_IO, "%s: cannot read %s: %s", f->path, what, strerror(errno));
    return kn_fail(KILN_ERR_FORMAT, "%s: corrupt compressed data in %s: %s", f->path, what, message);
}

/* Reads up to `bytes`, stopping early only at the end of the file; *got is the count read. */
static kiln_status file_read_some(kn_data_file *f, uint8_t *buf, size_t bytes, const char *what, size_t *got) {
    *got = 0;
    while (*got < bytes) {
        size_t chunk = bytes - *got < KN_DATA_READ_CHUNK ? bytes - *got : KN_DATA_READ_CHUNK;
        int n = gzread(f->gz, buf + *got, (unsigned)chunk);
        if (n < 0)
            return file_read_error(f, what);
        if (n == 0)
            break;
        *got += (size_t)n;
    }
    /* A gzip stream cut short reads as a short file; a damaged one reports its error here. */
    int code;
    gzerror(f->gz, &code);
    if (code != Z_OK && code != Z_BUF_ERROR)
        return file_read_error(f, what);
    return KILN_OK;
}

static kiln_status file_truncated(kn_data_file *f, const char *what, size_t needed, size_t got) {
    return kn_fail(KILN_ERR_FORMAT, "%s: truncated: expected %zu bytes of %s, found %zu", f->path, needed, what,
                   got);
}

kiln_status kn_data_file_read(kn_data_file *f, void *buf, size_t bytes, const char *what) {
    size_t got;
    KN_TRY(file_read_some(f, buf, bytes, what, &got));
    return got == bytes ? KILN_OK : file_truncated(f, what, bytes, got);
}

kiln_status kn_data_file_read_alloc(kn_data_file *f, size_t bytes, const char *what, uint8_t **out) {
    *out = NULL;
    size_t capacity = bytes < KN_DATA_FIRST_BLOCK ? bytes : KN_DATA_FIRST_BLOCK;
    uint8_t *buf = malloc(capacity ? capacity : 1);
    if (!buf)
        return kn_data_nomem(f->path, what, capacity, 1);
    size_t done = 0;
    while (done < bytes) {
        if (done == capacity) {
            capacity = capacity <= bytes / 2 ? capacity * 2 : bytes;
            uint8_t *grown = realloc(buf, capacity);
            if (!grown) {
                free(buf);
                return kn_data_nomem(f->path, what, capacity, 1);
            }
            buf = grown;
        }
        size_t wanted = capacity - done, got;
        kiln_status st = file_read_some(f, buf + done, wanted, what, &got);
        done += got;
        if (st == KILN_OK && got < wanted)
            st = file_truncated(f, what, bytes, done);
        if (st != KILN_OK) {
            free(buf);
            return st;
        }
    }
    *out = buf;
    return KILN_OK;
}

kiln_status kn_data_file_expect_end(kn_data_file *f) {
    uint8_t extra;
    size_t got;
    KN_TRY(file_read_some(f, &extra, 1, "the end of the file", &got));
    if (got != 0)
        return kn_fail(KILN_ERR_FORMAT, "%s: the file goes on past the data its header describes", f->path);
    return KILN_OK;
}

kiln_status kn_data_file_slurp(const char *path, char **out, size_t *size) {
    *out = NULL;
    *size = 0;
    kn_data_file f;
    KN_TRY(kn_data_file_open(&f, path));
    size_t capacity = 1 << 16, used = 0;
    char *text = malloc(capacity);
    if (!text) {
        kn_data_file_close(&f);
        return kn_data_nomem(path, "the file", capacity, 1);
    }
    for (;;) {
        size_t got;
        kiln_status st = file_read_some(&f, (uint8_t *)text + used, capacity - 1 - used, "the file", &got);
        used += got;
        if (st != KILN_OK) {
            free(text);
            kn_data_file_close(&f);
            return st;
        }
        if (used < capacity - 1)
            break; /* end of file: the last read came back short */
        char *grown = capacity <= SIZE_MAX / 2 ? realloc(text, capacity * 2) : NULL;
        if (!grown) {
            free(text);
            kn_data_file_close(&f);
            return kn_data_nomem(path, "the file", capacity, 2);
        }
        text = grown;
        capacity *= 2;
    }
    kn_data_file_close(&f);
    text[used] = '\0';
    *out = text;
    *size = used;
    return KILN_OK;
}

void *kn_data_malloc(size_t count, size_t size) {
    size_t bytes;
    if (!kn_size_mul(count, size, &bytes))
        return NULL;
    return malloc(bytes ? bytes : 1);
}

kiln_status kn_data_nomem(const char *path, const char *what, size_t count, size_t size) {
    size_t bytes;
    if (!kn_size_mul(count, size, &bytes))
        return kn_fail(KILN_ERR_NOMEM, "%s: %s: %zu x %zu bytes overflows", path, what, count, size);
    return kn_fail(KILN_ERR_NOMEM, "%s: out of memory for %s (%zu bytes)", path, what, bytes);
}

char *kn_data_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *copy = malloc(n);
    if (copy)
        memcpy(copy, s, n);
    return copy;
}

bool kn_data_ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

char *kn_data_snippet(const char *s, size_t length, char *out, size_t out_size) {
    const size_t ellipsis = 3;
    size_t room = out_size - 1;
    size_t shown = length <= room ? length : room - ellipsis;
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (shown < length) {
        memcpy(out + shown, "...", ellipsis);
        shown += ellipsis;
    }
    out[shown] = '\0';
    return out;
}

void kn_data_u8_to_unit(const uint8_t *src, float *dst, size_t n) {
    float unit[256];
    for (int v = 0; v < 256; v++)
        unit[v] = (float)v / 255.0f;
    for (size_t i = 0; i < n; i++)
        dst[i] = unit[src[i]];
}

int64_t kn_data_class_count(const int64_t *labels, int64_t n) {
    int64_t max_label = -1;
    for (int64_t i = 0; i < n; i++)
        if (labels[i] > max_label)
            max_label = labels[i];
    return max_label + 1;
}

kiln_status kn_data_set_class_names(kn_dataset *ds, const char *const *names, int64_t count) {
    ds->class_count = count;
    ds->class_names = calloc((size_t)count, sizeof *ds->class_names);
    if (!ds->class_names)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for %lld class names", (long long)count);
    for (int64_t i = 0; i < count; i++) {
        ds->class_names[i] = kn_data_strdup(names[i]);
        if (!ds->class_names[i])
            return kn_fail(KILN_ERR_NOMEM, "out of memory for class name '%s'", names[i]);
    }
    return KILN_OK;
}
