/* Tiny assertion kit for kiln's test programs. Each failed CHECK prints its place and the test goes on;
 * check_finish() prints "N passed, N failed" and gives the exit code. */
#ifndef KILN_TEST_CHECK_H
#define KILN_TEST_CHECK_H

#include <math.h>
#include <stdio.h>

static int check_passed, check_failed;

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (cond) {                                                              \
            check_passed++;                                                      \
        } else {                                                                 \
            check_failed++;                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                        \
    } while (0)

#define CHECK_MSG(cond, ...)                                                     \
    do {                                                                         \
        if (cond) {                                                              \
            check_passed++;                                                      \
        } else {                                                                 \
            check_failed++;                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                        \
            fprintf(stderr, "\n");                                               \
        }                                                                        \
    } while (0)

/* Checks that a kiln call succeeded, printing kiln_last_error() when it did not. */
#define CHECK_OK(expr)                                                           \
    do {                                                                         \
        kiln_status check_st_ = (expr);                                          \
        CHECK_MSG(check_st_ == KILN_OK, "%s", kiln_last_error());                \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                    \
    do {                                                                         \
        double check_a_ = (a), check_b_ = (b);                                   \
        CHECK_MSG(fabs(check_a_ - check_b_) <= (tol), "%.9g vs %.9g (tol %.3g)",  \
                  check_a_, check_b_, (double)(tol));                            \
    } while (0)

static inline int check_finish(void) {
    printf("%d passed, %d failed\n", check_passed, check_failed);
    return check_failed ? 1 : 0;
}

#endif
