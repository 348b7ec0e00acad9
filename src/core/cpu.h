/* CPU features, detected once at run time so one x86-64 binary picks the fastest safe path. The
 * environment variable KILN_ISA=generic (or avx2) reports less than the CPU has: every dispatcher then
 * runs the generic (or at most AVX2) builds. */
#ifndef KN_CPU_H
#define KN_CPU_H

#include <stdbool.h>

typedef struct kn_cpu_features {
    bool avx2;     /* AVX2 and FMA3, with OS support for YMM state */
    bool avx512f;  /* AVX-512 F, with OS support for ZMM state */
    bool avx512vnni;
    bool neon;
} kn_cpu_features;

const kn_cpu_features *kn_cpu(void);
/* "avx512f avx2" — the features kiln uses that this CPU has. */
const char *kn_cpu_describe(void);

#endif
