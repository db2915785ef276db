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

/// Bytes per FIPS 140-2 block (20,000 bits).
#define CES_FIPS_BLOCK_SIZE 2500

/// The counts behind the FIPS 140-2 tests of one block, bits read most significant first.
typedef struct ces_fips_counts {
    /// W_1...W_7: windows of 1...7 consecutive zero bits inside the block (entry 7 is 0).
    uint32_t zero_windows[8];
    /// The same for one bits; one_windows[0] is the number of one bits.
    uint32_t one_windows[8];
    /// How many of the 5,000 nibbles hold each value 0...15.
    uint32_t nibbles[16];
    /// The block's last little-endian 32-bit word (the continuous test's next carry).
    uint32_t last_word;
    /// 1 when a 32-bit word equals the one before it (the first against `previous_word`).
    uint8_t repeated_word;
    /// 1 when the block holds a run of 26 or more equal bits.
    uint8_t long_run;
    /// 1 when four consecutive bytes of the block are equal (see ces_has_four_equal_bytes_avx512).
    uint8_t four_equal_bytes;
} ces_fips_counts;

/// Health-test kernel tiers, best last (values of ces_cpu_health_kernel_tier).
#define CES_HEALTH_TIER_NONE 0
/// x86-64 with AVX2 and POPCNT, YMM state enabled by the OS (Haswell and later, every AMD Zen).
#define CES_HEALTH_TIER_AVX2 1
/// x86-64 with AVX-512 F, BW, VBMI, VBMI2, VPOPCNTDQ, BITALG, GFNI and POPCNT, ZMM and opmask state
/// enabled by the OS (Ice Lake and later Intel parts, AMD Zen 4 and later).
#define CES_HEALTH_TIER_AVX512 2

/// The best kernel tier the CPU and OS support (a CES_HEALTH_TIER_* value; a CPU with the AVX-512
/// tier also has the AVX2 one). Always CES_HEALTH_TIER_NONE off x86-64.
int ces_cpu_health_kernel_tier(void);

/// Counts one CES_FIPS_BLOCK_SIZE-byte block; `previous_word` is the 32-bit word before it.
/// Reads nothing outside the block. Call only when the tier is at least CES_HEALTH_TIER_AVX512.
void ces_fips_count_avx512(const void *block, uint32_t previous_word, ces_fips_counts *out);
/// 1 when four consecutive bytes among `count` are equal (a run the SP 800-90B RCT may fail on:
/// its cutoff is at least 4). Reads nothing outside the buffer.
/// Call only when the tier is at least CES_HEALTH_TIER_AVX512.
int ces_has_four_equal_bytes_avx512(const void *bytes, size_t count);
/// The number of bytes equal to `value` among `count`. Reads nothing outside the buffer.
/// Call only when the tier is at least CES_HEALTH_TIER_AVX512.
size_t ces_count_byte_avx512(const void *bytes, size_t count, uint8_t value);

/// ces_fips_count_avx512 with AVX2: the same counts bit for bit.
/// Call only when the tier is at least CES_HEALTH_TIER_AVX2.
void ces_fips_count_avx2(const void *block, uint32_t previous_word, ces_fips_counts *out);
/// ces_has_four_equal_bytes_avx512 with AVX2. Call only when the tier is at least CES_HEALTH_TIER_AVX2.
int ces_has_four_equal_bytes_avx2(const void *bytes, size_t count);
/// ces_count_byte_avx512 with AVX2. Call only when the tier is at least CES_HEALTH_TIER_AVX2.
size_t ces_count_byte_avx2(const void *bytes, size_t count, uint8_t value);

#endif
