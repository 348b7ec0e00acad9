/* Reader for the tensor bundles written by the scripts in tests/ref/ (format in their docstrings):
 * records of (name, shape, float32 data). */
#ifndef KILN_TEST_FIXTURE_H
#define KILN_TEST_FIXTURE_H

#include "core/tensor.h"

typedef struct fixture_tensor {
    char *name;
    kn_shape shape;
    float *data;
} fixture_tensor;

typedef struct fixture {
    fixture_tensor *items;
    int count;
} fixture;

/* Loads tests/ref/data/<file> from the source tree; false (with a message on stderr) on failure. */
bool fixture_load(const char *file, fixture *f);
const fixture_tensor *fixture_find(const fixture *f, const char *name);
void fixture_free(fixture *f);

/* max |a - b| over n floats. */
double fixture_max_diff(const float *a, const float *b, int64_t n);
double fixture_max_abs(const float *a, int64_t n);

#endif
