#include "core/cpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static unsigned long long read_xcr0(void) {
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

static void detect(kn_cpu_features *f) {
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return;
    bool osxsave = c & (1u << 27), fma = c & (1u << 12), avx = c & (1u << 28);
    if (!osxsave || !avx)
        return;
    unsigned long long xcr0 = read_xcr0();
    bool ymm_ok = (xcr0 & 0x6) == 0x6;
    bool zmm_ok = (xcr0 & 0xe6) == 0xe6;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return;
    f->avx2 = ymm_ok && fma && (b & (1u << 5));
    f->avx512f = zmm_ok && f->avx2 && (b & (1u << 16));
    f->avx512vnni = f->avx512f && (c & (1u << 11));
}
#else
static void detect(kn_cpu_features *f) {
#if defined(__aarch64__)
    f->neon = true;
#else
    (void)f;
#endif
}
#endif

/* KILN_ISA=generic or avx2 hides the features above that level, so that every dispatcher picks the
 * builds a smaller CPU would run (tests and benchmarks hold the fast paths to the generic ones this
 * way). Any other value, or none, changes nothing. */
static void apply_isa_limit(kn_cpu_features *f) {
    const char *isa = getenv("KILN_ISA");
    if (!isa)
        return;
    if (strcmp(isa, "generic") == 0) {
        f->avx2 = f->avx512f = f->avx512vnni = f->neon = false;
    } else if (strcmp(isa, "avx2") == 0) {
        f->avx512f = f->avx512vnni = false;
    }
}

static kn_cpu_features features;
static int detected;

const kn_cpu_features *kn_cpu(void) {
    if (!__atomic_load_n(&detected, __ATOMIC_ACQUIRE)) {
        kn_cpu_features f;
        memset(&f, 0, sizeof f);
        detect(&f);
        apply_isa_limit(&f);
        features = f;
        __atomic_store_n(&detected, 1, __ATOMIC_RELEASE);
    }
    return &features;
}

const char *kn_cpu_describe(void) {
    static _Thread_local char buf[64];
    const kn_cpu_features *f = kn_cpu();
    snprintf(buf, sizeof buf, "%s%s%s%s", f->avx512f ? "avx512f " : "", f->avx512vnni ? "avx512vnni " : "",
             f->avx2 ? "avx2 fma " : "", f->neon ? "neon " : "");
    size_t n = strlen(buf);
    if (n)
        buf[n - 1] = '\0';
    else
        snprintf(buf, sizeof buf, "generic");
    return buf;
}
