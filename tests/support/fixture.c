#include "fixture.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool read_exact(FILE *fp, void *dst, size_t n) { return fread(dst, 1, n, fp) == n; }

bool fixture_load(const char *file, fixture *f) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/ref/data/%s", KILN_SOURCE_DIR, file);
    memset(f, 0, sizeof *f);
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        fprintf(stderr, "cannot open fixture %s\n", path);
        return false;
    }
    bool ok = true;
    for (;;) {
        uint32_t name_len, ndim;
        if (!read_exact(fp, &name_len, 4))
            break;
        fixture_tensor t = {0};
        ok = name_len < 4096 && (t.name = calloc(name_len + 1, 1)) && read_exact(fp, t.name, name_len) &&
             read_exact(fp, &ndim, 4) && ndim <= KN_MAX_DIMS;
        if (ok) {
            t.shape.ndim = (int)ndim;
            ok = read_exact(fp, t.shape.d, 8 * ndim);
        }
        int64_t n = ok ? kn_shape_numel(&t.shape) : 0;
        ok = ok && n >= 0 && n < (1 << 24) && (t.data = malloc(sizeof(float) * (size_t)(n ? n : 1))) &&
             read_exact(fp, t.data, sizeof(float) * (size_t)n);
        fixture_tensor *items = ok ? realloc(f->items, sizeof(fixture_tensor) * (size_t)(f->count + 1)) : NULL;
        if (!items) {
            free(t.name);
            free(t.data);
            ok = false;
            break;
        }
        f->items = items;
        f->items[f->count++] = t;
    }
    fclose(fp);
    if (!ok) {
        fprintf(stderr, "fixture %s is corrupt\n", path);
        fixture_free(f);
    }
    return ok;
}

const fixture_tensor *fixture_find(const fixture *f, const char *name) {
    for (int i = 0; i < f->count; i++)
        if (strcmp(f->items[i].name, name) == 0)
            return &f->items[i];
    return NULL;
}

void fixture_free(fixture *f) {
    for (int i = 0; i < f->count; i++) {
        free(f->items[i].name);
        free(f->items[i].data);
    }
    free(f->items);
    memset(f, 0, sizeof *f);
}

double fixture_max_diff(const float *a, const float *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fmax(m, fabs((double)a[i] - (double)b[i]));
    return m;
}

double fixture_max_abs(const float *a, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fmax(m, fabs((double)a[i]));
    return m;
}
