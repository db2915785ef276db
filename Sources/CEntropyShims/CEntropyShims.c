#include "CEntropyShims.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

ssize_t ces_getrandom(void *buf, size_t len, unsigned int flags) {
    ssize_t n = getrandom(buf, len, flags);
    return n < 0 ? -(ssize_t)errno : n;
}

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>

int ces_cpu_has_rdrand(void) {
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    return (c & bit_RDRND) != 0;
}

int ces_cpu_has_rdseed(void) {
    unsigned int a, b, c, d;
    if (__get_cpuid_max(0, 0) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (b & bit_RDSEED) != 0;
}

// The target attributes enable the instructions for these functions only, so the package needs no
// -m flags (and no unsafeFlags); callers check CPUID first.
__attribute__((target("rdrnd"))) static int rdrand_step(unsigned long long *out, unsigned int retries) {
    for (unsigned int i = 0; i <= retries; i++) {
        if (_rdrand64_step(out)) return 1;
    }
    return 0;
}

__attribute__((target("rdseed"))) static int rdseed_step(unsigned long long *out, unsigned int retries) {
    for (unsigned int i = 0; i <= retries; i++) {
        if (_rdseed64_step(out)) return 1;
        _mm_pause();
    }
    return 0;
}

#define CES_FILL(name, step)                                                                       \
    size_t name(void *buf, size_t len, unsigned int retries) {                                     \
        unsigned char *p = buf;                                                                    \
        size_t done = 0;                                                                           \
        unsigned long long word;                                                                   \
        while (done < len) {                                                                       \
            if (!step(&word, retries)) break;                                                      \
            size_t n = len - done < 8 ? len - done : 8;                                            \
            memcpy(p + done, &word, n);                                                            \
            done += n;                                                                             \
        }                                                                                          \
        word = 0;                                                                                  \
        __asm__ __volatile__("" : : "r"(&word) : "memory");                                       \
        return done;                                                                               \
    }

CES_FILL(ces_rdrand_fill, rdrand_step)
CES_FILL(ces_rdseed_fill, rdseed_step)

#else
int ces_cpu_has_rdrand(void) { return 0; }
int ces_cpu_has_rdseed(void) { return 0; }
size_t ces_rdrand_fill(void *buf, size_t len, unsigned int retries) { (void)buf; (void)len; (void)retries; return 0; }
size_t ces_rdseed_fill(void *buf, size_t len, unsigned int retries) { (void)buf; (void)len; (void)retries; return 0; }
#endif
