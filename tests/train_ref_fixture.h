/* Reads a fixture set written by tests/ref/train_fixture_io.py: tests/ref/data/<set>.txt lists
 * "name count" lines (and # comments), and <set>.bin holds those float32 little-endian arrays back to
 * back in the same order. Header-only; for the training tests (losses, optimizers). */
#ifndef KILN_TEST_TRAIN_REF_FIXTURE_H
#define KILN_TEST_TRAIN_REF_FIXTURE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { REF_FIXTURE_MAX_ARRAYS = 256, REF_FIXTURE_NAME_MAX = 96 };

typedef struct ref_fixture {
    int count;
    char names[REF_FIXTURE_MAX_ARRAYS][REF_FIXTURE_NAME_MAX];
    int64_t offset[REF_FIXTURE_MAX_ARRAYS], numel[REF_FIXTURE_MAX_ARRAYS];
    float *data;
} ref_fixture;

/* Loads KILN_SOURCE_DIR/tests/ref/data/<set>.{txt,bin}; prints why and returns 0 on failure. */
static int ref_fixture_load(ref_fixture *f, const char *set) {
    char path[1024];
    memset(f, 0, sizeof *f);
    snprintf(path, sizeof path, "%s/tests/ref/data/%s.txt", KILN_SOURCE_DIR, set);
    FILE *index = fopen(path, "r");
    if (!index) {
        fprintf(stderr, "cannot open fixture index %s\n", path);
        return 0;
    }
    char line[256];
    int64_t total = 0;
    while (fgets(line, sizeof line, index)) {
        long long n;
        if (line[0] == '#' || line[0] == '\n')
            continue;
        if (f->count == REF_FIXTURE_MAX_ARRAYS ||
            sscanf(line, "%95s %lld", f->names[f->count], &n) != 2 || n <= 0) {
            fprintf(stderr, "%s: bad line or too many arrays: %s", path, line);
            fclose(index);
            return 0;
        }
        f->offset[f->count] = total;
        f->numel[f->count] = n;
        total += n;
        f->count++;
    }
    fclose(index);

    snprintf(path, sizeof path, "%s/tests/ref/data/%s.bin", KILN_SOURCE_DIR, set);
    FILE *blob = fopen(path, "rb");
    unsigned char *bytes = malloc((size_t)total * 4);
    f->data = malloc((size_t)total * sizeof(float));
    if (!blob || !bytes || !f->data || fread(bytes, 4, (size_t)total, blob) != (size_t)total || fgetc(blob) != EOF) {
        fprintf(stderr, "cannot read %lld floats from %s (missing, short or long)\n", (long long)total, path);
        if (blob)
            fclose(blob);
        free(bytes);
        free(f->data);
        f->data = NULL;
        return 0;
    }
    fclose(blob);
    for (int64_t i = 0; i < total; i++) { /* little-endian on disk whatever the host */
        const unsigned char *b = bytes + 4 * i;
        uint32_t word = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
        memcpy(&f->data[i], &word, sizeof word);
    }
    free(bytes);
    return 1;
}

/* The array `name`, which must hold `numel` floats; NULL (and a message) otherwise. */
static const float *ref_fixture_get(const ref_fixture *f, const char *name, int64_t numel) {
    for (int i = 0; i < f->count; i++) {
        if (strcmp(f->names[i], name) != 0)
            continue;
        if (f->numel[i] != numel) {
            fprintf(stderr, "fixture %s holds %lld floats, the test expects %lld\n", name, (long long)f->numel[i],
                    (long long)numel);
            return NULL;
        }
        return f->data + f->offset[i];
    }
    fprintf(stderr, "fixture %s is missing: rerun the script in tests/ref/\n", name);
    return NULL;
}

static void ref_fixture_free(ref_fixture *f) {
    free(f->data);
    f->data = NULL;
}

#endif
