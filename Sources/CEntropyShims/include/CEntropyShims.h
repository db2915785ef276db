// System calls and CPU instructions that Swift cannot reach through `import Glibc`: getrandom(2)
// (not exported by Glibc's module map) and RDRAND/RDSEED with CPUID detection. Every function
// returns a value or a negative errno; none reads or writes `errno` for the caller.
#ifndef CENTROPY_SHIMS_H
#define CENTROPY_SHIMS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/// One getrandom(2) call: the number of bytes written (may be short), or -errno.
ssize_t ces_getrandom(void *buf, size_t len, unsigned int flags);

/// CPUID leaf 1 ECX bit 30: the CPU implements RDRAND. Always 0 on non-x86 builds.
int ces_cpu_has_rdrand(void);
/// CPUID leaf 7 subleaf 0 EBX bit 18: the CPU implements RDSEED. Always 0 on non-x86 builds.
int ces_cpu_has_rdseed(void);

/// Fills `len` bytes with RDRAND output, 8 bytes per step; each step is retried up to `retries`
/// times while the instruction reports no data (CF = 0). Returns the bytes written: `len`, or fewer
/// when a step failed `retries` times in a row. Call only after ces_cpu_has_rdrand() returned 1.
size_t ces_rdrand_fill(void *buf, size_t len, unsigned int retries);
/// RDSEED counterpart of ces_rdrand_fill. Call only after ces_cpu_has_rdseed() returned 1.
size_t ces_rdseed_fill(void *buf, size_t len, unsigned int retries);

#endif
