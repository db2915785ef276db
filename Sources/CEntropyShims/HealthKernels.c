// AVX-512 and AVX2 kernels for the health tests of EntropySources (FIPSTest.swift,
// ContinuousHealthTests.swift, dispatch in HealthKernels.swift).
//
// The instructions are enabled per function with target attributes, so the package needs no -m flags
// (and no unsafe flags); Swift calls a tier's kernels only when ces_cpu_health_kernel_tier() reports
// it and otherwise runs its portable code. All tiers must give the same results bit for bit; the
// tests check each against the others, against the first implementation and against a bit-by-bit
// oracle.
#include "CEntropyShims.h"

#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

int ces_cpu_health_kernel_tier(void) {
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return CES_HEALTH_TIER_NONE;
    if (!(c & bit_OSXSAVE) || !(c & bit_POPCNT) || !(c & bit_AVX)) return CES_HEALTH_TIER_NONE;
    // The OS must save the YMM state (XCR0 bits 1 and 2), for AVX-512 also the opmask and ZMM state
    // (bits 5, 6 and 7).
    unsigned int xcr0, xcr0High;
    __asm__("xgetbv" : "=a"(xcr0), "=d"(xcr0High) : "c"(0));
    if ((xcr0 & 0x06) != 0x06) return CES_HEALTH_TIER_NONE;
    if (__get_cpuid_max(0, 0) < 7) return CES_HEALTH_TIER_NONE;
    __cpuid_count(7, 0, a, b, c, d);
    if (!(b & bit_AVX2)) return CES_HEALTH_TIER_NONE;
    int f = (b & bit_AVX512F) && (b & bit_AVX512BW);
    int vbmi = (c & bit_AVX512VBMI) && (c & bit_AVX512VBMI2);
    int counts = (c & bit_AVX512VPOPCNTDQ) && (c & bit_AVX512BITALG);
    int zmm = (xcr0 & 0xE6) == 0xE6;
    return zmm && f && vbmi && counts && (c & bit_GFNI) ? CES_HEALTH_TIER_AVX512 : CES_HEALTH_TIER_AVX2;
}

#define CES_AVX512                                                                                     \
    __attribute__((target("avx512f,avx512bw,avx512vbmi,avx512vbmi2,avx512vpopcntdq,avx512bitalg,gfni,popcnt")))

enum {
    block_size = CES_FIPS_BLOCK_SIZE,
    chunks = block_size / 64,  // 39 chunks of 64 bytes; 4 bytes are left for the tail
    tail_offset = chunks * 64,
};

/// Whether the run of equal bits through bytes i - 1 and i (both 0x00 or both 0xFF) has 26 or more
/// bits: the equal bytes around them, plus the equal leading bits after and trailing bits before.
static int long_run_through(const unsigned char *p, int i) {
    unsigned char u = p[i];
    int start = i - 1, end = i;
    while (start > 0 && p[start - 1] == u) start--;
    while (end + 1 < block_size && p[end + 1] == u) end++;
    int length = (end - start + 1) * 8;
    if (start > 0) {
        unsigned int before = (unsigned char)(p[start - 1] ^ u);  // nonzero: low zeros = equal bits
        length += __builtin_ctz(before);
    }
    if (end + 1 < block_size) {
        unsigned int after = (unsigned char)(p[end + 1] ^ u);  // nonzero: high zeros = equal bits
        length += __builtin_clz(after) - 24;
    }
    return length >= 26;
}

#define CES_POPCNT __attribute__((target("popcnt")))

/// The scalar end of every FIPS kernel: adds the block's last 4 bytes (one 32-bit word, which the
/// vector loops leave out) to the counts of the first 2,496 and fills `out`, all but `long_run`.
/// `oneWindows[k]` and `zeroWindows[k]` (k = 1...6) count the windows of k + 1 equal bits that start
/// in the first 2,496 bytes, `nibbles` the nibbles of those bytes; `repeated` (a word equal to the
/// one before, words 0...623), `fourEqual` (four equal bytes from 0...2,495) and `pairs` (a uniform
/// pair ending at 1...2,496) are the vector loops' flags. Returns 1 when the block holds a uniform
/// pair (two adjacent bytes both 0x00 or both 0xFF), the only case in which it can hold a long run.
CES_POPCNT static int finish_counts(const unsigned char *p, uint64_t oneWindows[7], uint64_t zeroWindows[7],
    uint32_t nibbles[16], int repeated, int fourEqual, int pairs, ces_fips_counts *out) {
    for (int i = tail_offset - 1; i + 3 < block_size; i++) {  // four bytes from 2,495 and 2,496
        fourEqual |= p[i] == p[i + 1] && p[i] == p[i + 2] && p[i] == p[i + 3];
    }
    out->four_equal_bytes = (uint8_t)fourEqual;

    // The last 4 bytes: one 32-bit word, in scalar code.
    const unsigned char *tail = p + tail_offset;
    uint32_t word, wordBefore;
    memcpy(&word, tail, 4);
    memcpy(&wordBefore, tail - 4, 4);
    out->repeated_word = (uint8_t)(repeated | (word == wordBefore));
    out->last_word = word;
    {
        // 32 bits in stream order at the top; past them 0 for the windows of ones, 1 for zeros.
        uint64_t x = (uint64_t)__builtin_bswap32(word) << 32;
        uint64_t xz = x | 0xFFFFFFFFULL;
        uint64_t all = x, any = xz;
        for (int k = 1; k < 7; k++) {
            all &= x << k;
            any |= xz << k;
            oneWindows[k] += (uint64_t)__builtin_popcountll(all);
            zeroWindows[k] += (uint64_t)__builtin_popcountll(~any);
        }
    }
    for (int i = 0; i < 4; i++) {
        nibbles[tail[i] >> 4]++;
        nibbles[tail[i] & 15]++;
    }
    uint32_t onesCount = 0;
    for (int n = 0; n < 16; n++) {
        out->nibbles[n] = nibbles[n];
        onesCount += nibbles[n] * (uint32_t)__builtin_popcount((unsigned int)n);
    }
    out->one_windows[0] = onesCount;
    out->zero_windows[0] = 8 * block_size - onesCount;
    for (int k = 1; k < 7; k++) {
        out->one_windows[k] = (uint32_t)oneWindows[k];
        out->zero_windows[k] = (uint32_t)zeroWindows[k];
    }
    out->one_windows[7] = out->zero_windows[7] = 0;

    // A run of 26 equal bits covers two whole equal bytes, 0x00 0x00 or 0xFF 0xFF; only then look.
    int tailPairs = 0;
    for (int i = tail_offset + 1; i < block_size; i++) {
        tailPairs |= p[i] == p[i - 1] && (p[i] == 0 || p[i] == 0xFF);
    }
    return pairs || tailPairs;
}

/// A byte lane is zero exactly when the byte equals its predecessor and is 0x00 or 0xFF.
CES_AVX512 static inline __m512i uniform_pairs(__m512i bytes, __m512i predecessors) {
    __m512i plusOne = _mm512_add_epi8(bytes, _mm512_set1_epi8(1));  // 0xFF -> 0x00, 0x00 -> 0x01
    return _mm512_ternarylogic_epi64(
        _mm512_xor_si512(bytes, predecessors), plusOne, _mm512_set1_epi8((char)0xFE), 0xF8);  // a | (b & c)
}

/// A byte lane is zero exactly when the bytes at its position in a, b, c and d are all equal.
CES_AVX512 static inline __m512i four_equal(__m512i a, __m512i b, __m512i c, __m512i d) {
    __m512i three = _mm512_ternarylogic_epi64(a, b, c, 0x7E);  // (a ^ b) | (a ^ c)
    return _mm512_ternarylogic_epi64(three, a, d, 0xF6);       // three | (a ^ d)
}

/// The rare path: a uniform pair exists somewhere; find each and measure its run.
CES_AVX512 static int has_long_run(const unsigned char *p) {
    for (int c = 0; c < chunks; c++) {
        const unsigned char *q = p + 64 * c;
        __m512i v = uniform_pairs(_mm512_loadu_si512(q + 1), _mm512_loadu_si512(q));
        unsigned long long pairs = _mm512_testn_epi8_mask(v, v);
        while (pairs) {
            int i = 64 * c + 1 + __builtin_ctzll(pairs);
            if (long_run_through(p, i)) return 1;
            pairs &= pairs - 1;
        }
    }
    for (int i = tail_offset + 1; i < block_size; i++) {
        if (p[i] == p[i - 1] && (p[i] == 0 || p[i] == 0xFF) && long_run_through(p, i)) return 1;
    }
    return 0;
}

/// Windows of k + 1 = 2...7 equal bits starting in `x` (eight 64-bit words in stream order, the
/// first bit of the stream in bit 63), `y` holding each word's successor: ones[k] += the number of
/// windows of ones (AND over the window), ors[k] += the number of windows holding a one (OR over
/// the window; windows of zeros = positions - that).
CES_AVX512 static inline void count_windows(__m512i x, __m512i y, __m512i *ones, __m512i *ors) {
    __m512i all = x, any = x;
#define CES_WINDOW(k)                                                                                  \
    {                                                                                                  \
        __m512i next = _mm512_shldi_epi64(x, y, k); /* bit i: the bit k later in the stream */         \
        all = _mm512_and_si512(all, next);                                                             \
        any = _mm512_or_si512(any, next);                                                              \
        ones[k] = _mm512_add_epi64(ones[k], _mm512_popcnt_epi64(all));                                 \
        ors[k] = _mm512_add_epi64(ors[k], _mm512_popcnt_epi64(any));                                   \
    }
    CES_WINDOW(1) CES_WINDOW(2) CES_WINDOW(3) CES_WINDOW(4) CES_WINDOW(5) CES_WINDOW(6)
#undef CES_WINDOW
}

/// Nibble one-hot tables for VPERMB (64 entries, index = the low 6 bits of each byte lane): the low
/// nibble of the byte, or the high nibble of the byte after a 16-bit shift right by 2, mapped to
/// bit n (values 0...7, table A) or bit n - 8 (values 8...15, table B).
static const unsigned char low_a[64] __attribute__((aligned(64))) = {
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};
static const unsigned char high_a[64] __attribute__((aligned(64))) = {
    0x01, 0x01, 0x01, 0x01, 0x02, 0x02, 0x02, 0x02, 0x04, 0x04, 0x04, 0x04, 0x08, 0x08, 0x08, 0x08,
    0x10, 0x10, 0x10, 0x10, 0x20, 0x20, 0x20, 0x20, 0x40, 0x40, 0x40, 0x40, 0x80, 0x80, 0x80, 0x80,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};
static const unsigned char low_b[64] __attribute__((aligned(64))) = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80,
};
static const unsigned char high_b[64] __attribute__((aligned(64))) = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x01, 0x01, 0x01, 0x02, 0x02, 0x02, 0x02, 0x04, 0x04, 0x04, 0x04, 0x08, 0x08, 0x08, 0x08,
    0x10, 0x10, 0x10, 0x10, 0x20, 0x20, 0x20, 0x20, 0x40, 0x40, 0x40, 0x40, 0x80, 0x80, 0x80, 0x80,
};

/// Per 64-bit lane, byte k: how many of the lane's 8 bytes have bit k set (an 8 x 8 bit transpose
/// by GF2P8AFFINEQB with the lane as the matrix, then a byte popcount).
CES_AVX512 static inline __m512i bit_counts(__m512i oneHot) {
    const __m512i units = _mm512_set1_epi64(0x8040201008040201ULL);
    return _mm512_popcnt_epi8(_mm512_gf2p8affine_epi64_epi8(units, oneHot, 0));
}

/// Running counts of one block.
struct fips_state {
    __m512i ones[7], ors[7];   // entries 1...6 (see count_windows); 0 is unused
    __m512i countsA, countsB;  // 8-bit nibble counters of the current group (bit_counts layout)
    __m512i evenA, oddA, evenB, oddB;  // the same, flushed to 16 bits: even and odd bytes
    __m512i uniform;           // byte-wise minimum: zero where a uniform pair ends
    __m512i equalBytes;        // byte-wise minimum: zero where four equal bytes start
    __mmask16 repeated;        // words equal to the word before
};

/// Counts the 64 bytes at `q`; `after` holds the 64 bytes at q + 8, `before` those at q - 4.
CES_AVX512 static inline __attribute__((always_inline)) void count_chunk(
    struct fips_state *s, const unsigned char *q, __m512i after, __m512i before) {
    // Byte swap within each 64-bit word: bit 63 is then the first bit of the stream (MSB first).
    const __m512i swap = _mm512_set_epi8(
        56, 57, 58, 59, 60, 61, 62, 63, 48, 49, 50, 51, 52, 53, 54, 55, 40, 41, 42, 43, 44, 45, 46, 47, 32, 33, 34,
        35, 36, 37, 38, 39, 24, 25, 26, 27, 28, 29, 30, 31, 16, 17, 18, 19, 20, 21, 22, 23, 8, 9, 10, 11, 12, 13,
        14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    __m512i raw = _mm512_loadu_si512(q);
    count_windows(_mm512_shuffle_epi8(raw, swap), _mm512_shuffle_epi8(after, swap), s->ones, s->ors);

    __m512i shifted = _mm512_srli_epi16(raw, 2);  // each byte's high nibble in bits 2...5
    __m512i a = _mm512_add_epi8(bit_counts(_mm512_permutexvar_epi8(raw, _mm512_load_si512(low_a))),
        bit_counts(_mm512_permutexvar_epi8(shifted, _mm512_load_si512(high_a))));
    __m512i b = _mm512_add_epi8(bit_counts(_mm512_permutexvar_epi8(raw, _mm512_load_si512(low_b))),
        bit_counts(_mm512_permutexvar_epi8(shifted, _mm512_load_si512(high_b))));
    s->countsA = _mm512_add_epi8(s->countsA, a);
    s->countsB = _mm512_add_epi8(s->countsB, b);

    // Continuous test: each 32-bit word against the one before.
    s->repeated |= _mm512_cmpeq_epi32_mask(raw, before);
    // Pairs (i - 1, i) for i = q + 1 ... q + 64 (at most 2,496: inside the block), and four bytes
    // from i = q ... q + 63 (the last of them at most 2,498).
    __m512i next = _mm512_loadu_si512(q + 1);
    s->uniform = _mm512_min_epu8(s->uniform, uniform_pairs(next, raw));
    s->equalBytes = _mm512_min_epu8(
        s->equalBytes, four_equal(raw, next, _mm512_loadu_si512(q + 2), _mm512_loadu_si512(q + 3)));
}

/// Counts chunks first ..< end of the block at p, none of them the first or the last.
CES_AVX512 static inline __attribute__((always_inline)) void count_chunks(
    struct fips_state *s, const unsigned char *p, int first, int end) {
    for (int c = first; c < end; c++) {
        const unsigned char *q = p + 64 * c;
        count_chunk(s, q, _mm512_loadu_si512(q + 8), _mm512_loadu_si512(q - 4));
    }
}

/// Adds the 8-bit nibble counters (at most 16 a chunk, so flushed every 13 chunks) to the 16-bit ones.
CES_AVX512 static inline __attribute__((always_inline)) void flush_nibbles(struct fips_state *s) {
    const __m512i lowBytes = _mm512_set1_epi16(0xFF);
    s->evenA = _mm512_add_epi16(s->evenA, _mm512_and_si512(s->countsA, lowBytes));
    s->oddA = _mm512_add_epi16(s->oddA, _mm512_srli_epi16(s->countsA, 8));
    s->evenB = _mm512_add_epi16(s->evenB, _mm512_and_si512(s->countsB, lowBytes));
    s->oddB = _mm512_add_epi16(s->oddB, _mm512_srli_epi16(s->countsB, 8));
    s->countsA = s->countsB = _mm512_setzero_si512();
}

/// The sums of the four 16-bit lanes of each 64-bit lane over the eight 64-bit lanes.
CES_AVX512 static inline __m128i sum_lanes(__m512i v) {
    __m256i half = _mm256_add_epi16(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
    __m128i quarter = _mm_add_epi16(_mm256_castsi256_si128(half), _mm256_extracti128_si256(half, 1));
    return _mm_add_epi16(quarter, _mm_srli_si128(quarter, 8));
}

CES_AVX512 void ces_fips_count_avx512(const void *block, uint32_t previous_word, ces_fips_counts *out) {
    _Static_assert(chunks == 39, "three groups of 13 chunks");
    const unsigned char *p = block;
    struct fips_state s;
    for (int k = 0; k < 7; k++) s.ones[k] = s.ors[k] = _mm512_setzero_si512();
    s.countsA = s.countsB = s.evenA = s.oddA = s.evenB = s.oddB = _mm512_setzero_si512();
    s.uniform = s.equalBytes = _mm512_set1_epi8(-1);
    s.repeated = 0;

    // Chunk 0: the word before word 0 is the carried one. The last chunk: the words after it reach
    // 4 bytes past the block, which are not loaded (zero).
    count_chunk(&s, p, _mm512_loadu_si512(p + 8),
        _mm512_mask_loadu_epi32(_mm512_set1_epi32((int)previous_word), 0xFFFE, p - 4));
    count_chunks(&s, p, 1, 13);
    flush_nibbles(&s);
    count_chunks(&s, p, 13, 26);
    flush_nibbles(&s);
    count_chunks(&s, p, 26, 38);
    const unsigned char *last = p + 64 * 38;
    count_chunk(&s, last, _mm512_maskz_loadu_epi8((1ULL << 60) - 1, last + 8), _mm512_loadu_si512(last - 4));
    flush_nibbles(&s);
    int fourEqual = _mm512_testn_epi8_mask(s.equalBytes, s.equalBytes) != 0;
    int pairs = _mm512_testn_epi8_mask(s.uniform, s.uniform) != 0;
    uint64_t oneWindows[7] = {0}, zeroWindows[7] = {0};
    const uint64_t positions = 64 * chunks * 8;  // every window starting here ends inside the block
    for (int k = 1; k < 7; k++) {
        oneWindows[k] = (uint64_t)_mm512_reduce_add_epi64(s.ones[k]);
        zeroWindows[k] = positions - (uint64_t)_mm512_reduce_add_epi64(s.ors[k]);
    }

    // Per 64-bit lane, 16-bit lane j holds the counts of values 2j (even) and 2j + 1 (odd).
    uint16_t sums[4][8];
    _mm_storeu_si128((__m128i *)sums[0], sum_lanes(s.evenA));
    _mm_storeu_si128((__m128i *)sums[1], sum_lanes(s.oddA));
    _mm_storeu_si128((__m128i *)sums[2], sum_lanes(s.evenB));
    _mm_storeu_si128((__m128i *)sums[3], sum_lanes(s.oddB));
    uint32_t nibbles[16];
    for (int j = 0; j < 4; j++) {
        nibbles[2 * j] = sums[0][j];
        nibbles[2 * j + 1] = sums[1][j];
        nibbles[8 + 2 * j] = sums[2][j];
        nibbles[8 + 2 * j + 1] = sums[3][j];
    }
    int uniformPair = finish_counts(p, oneWindows, zeroWindows, nibbles, s.repeated != 0, fourEqual, pairs, out);
    out->long_run = (uint8_t)(uniformPair && has_long_run(p));
}

CES_AVX512 int ces_has_four_equal_bytes_avx512(const void *bytes, size_t count) {
    const unsigned char *p = bytes;
    if (count < 4) return 0;
    // Lane j compares bytes i ... i + 3 with i = offset + j; the last loads are masked to the buffer.
    size_t n = count - 3;
    __m512i least = _mm512_set1_epi8(-1);
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        least = _mm512_min_epu8(least,
            four_equal(_mm512_loadu_si512(p + i), _mm512_loadu_si512(p + i + 1), _mm512_loadu_si512(p + i + 2),
                _mm512_loadu_si512(p + i + 3)));
    }
    if (i < n) {
        __mmask64 m = (1ULL << (n - i)) - 1;
        __m512i d = _mm512_mask_loadu_epi8(_mm512_set1_epi8(1), m, p + i + 3);  // 1 in unused lanes
        least = _mm512_min_epu8(least,
            four_equal(_mm512_maskz_loadu_epi8(m, p + i), _mm512_maskz_loadu_epi8(m, p + i + 1),
                _mm512_maskz_loadu_epi8(m, p + i + 2), d));
    }
    return _mm512_testn_epi8_mask(least, least) != 0;
}

CES_AVX512 size_t ces_count_byte_avx512(const void *bytes, size_t count, uint8_t value) {
    const unsigned char *p = bytes;
    const __m512i pattern = _mm512_set1_epi8((char)value);
    size_t total = 0, i = 0;
    for (; i + 64 <= count; i += 64) {
        total += (size_t)__builtin_popcountll(_mm512_cmpeq_epi8_mask(_mm512_loadu_si512(p + i), pattern));
    }
    if (i < count) {
        __mmask64 m = (1ULL << (count - i)) - 1;
        __m512i bytesLeft = _mm512_maskz_loadu_epi8(m, p + i);
        total += (size_t)__builtin_popcountll(_mm512_mask_cmpeq_epi8_mask(m, bytesLeft, pattern));
    }
    return total;
}

// MARK: AVX2 (Haswell and later, every AMD Zen)
//
// The same counts as the AVX-512 kernels, 32 bytes a step (78 steps and the 4-byte tail):
// - windows: as count_windows, each shifted word built from two 64-bit shifts, and the population
//   counts per byte by Mula's nibble lookup (VPSHUFB), summed in bytes (at most 8 a step, so
//   flushed by VPSADBW at least every 31 steps);
// - nibbles: VPSHUFB maps each nibble to a 1 in one of four 2-bit fields of one of four bytes, the
//   fields are spread to 4 bits and summed (at most 2 a step, so flushed every 6 steps);
// - the continuous test, the uniform pairs and the four equal bytes as in the AVX-512 kernel.

#define CES_AVX2 __attribute__((target("avx2,popcnt")))

enum {
    steps = block_size / 32,  // 78 steps of 32 bytes; the same 4-byte tail as above
    nibble_group = 6,         // steps between nibble flushes (fields of 4 bits, at most 2 a step)
    window_group = 24,        // steps between window flushes (bytes, at most 8 a step)
};

/// The population count of each byte (Mula: one lookup per nibble).
CES_AVX2 static inline __m256i popcount_bytes(__m256i v) {
    const __m256i table = _mm256_setr_epi8(
        0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0F);
    __m256i lo = _mm256_shuffle_epi8(table, _mm256_and_si256(v, low));
    __m256i hi = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(v, 4), low));
    return _mm256_add_epi8(lo, hi);
}

/// VPSHUFB tables (the same 16 entries in both 128-bit lanes): nibble n maps, in table n / 4, to a 1
/// in the 2-bit field n % 4 of the byte; 0 in the other tables.
static const unsigned char nibble_fields[4][32] __attribute__((aligned(32))) = {
#define CES_ROW(g)                                                                                     \
    {                                                                                                  \
        (g) == 0, (g) == 0 ? 4 : 0, (g) == 0 ? 16 : 0, (g) == 0 ? 64 : 0, (g) == 1, (g) == 1 ? 4 : 0,      \
            (g) == 1 ? 16 : 0, (g) == 1 ? 64 : 0, (g) == 2, (g) == 2 ? 4 : 0, (g) == 2 ? 16 : 0,           \
            (g) == 2 ? 64 : 0, (g) == 3, (g) == 3 ? 4 : 0, (g) == 3 ? 16 : 0, (g) == 3 ? 64 : 0, (g) == 0, \
            (g) == 0 ? 4 : 0, (g) == 0 ? 16 : 0, (g) == 0 ? 64 : 0, (g) == 1, (g) == 1 ? 4 : 0,            \
            (g) == 1 ? 16 : 0, (g) == 1 ? 64 : 0, (g) == 2, (g) == 2 ? 4 : 0, (g) == 2 ? 16 : 0,           \
            (g) == 2 ? 64 : 0, (g) == 3, (g) == 3 ? 4 : 0, (g) == 3 ? 16 : 0, (g) == 3 ? 64 : 0            \
    }
    CES_ROW(0), CES_ROW(1), CES_ROW(2), CES_ROW(3),
#undef CES_ROW
};

/// The sum of the four 64-bit lanes.
CES_AVX2 static inline uint64_t sum_quadwords(__m256i v) {
    __m128i half = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    return (uint64_t)_mm_cvtsi128_si64(_mm_add_epi64(half, _mm_unpackhi_epi64(half, half)));
}

/// Windows of k + 1 = 2...7 equal bits starting in the 32 bytes at `q` (count_windows' layout):
/// per byte, the population counts of the windows of ones (`ones[k]`) and of the windows holding a
/// one (`ors[k]`) are added; `after` holds the 32 bytes at q + 8.
CES_AVX2 static inline __attribute__((always_inline)) void count_windows_step(
    const unsigned char *q, __m256i after, __m256i ones[7], __m256i ors[7]) {
    // Byte swap within each 64-bit word: bit 63 is then the first bit of the stream (MSB first).
    const __m256i swap = _mm256_setr_epi8(
        7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8);
    __m256i x = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)q), swap);
    __m256i y = _mm256_shuffle_epi8(after, swap);
    __m256i all = x, any = x;
#define CES_WINDOW(k)                                                                                  \
    {                                                                                                  \
        __m256i next = _mm256_or_si256(_mm256_slli_epi64(x, k), _mm256_srli_epi64(y, 64 - (k)));        \
        all = _mm256_and_si256(all, next);                                                             \
        any = _mm256_or_si256(any, next);                                                              \
        ones[k] = _mm256_add_epi8(ones[k], popcount_bytes(all));                                       \
        ors[k] = _mm256_add_epi8(ors[k], popcount_bytes(any));                                         \
    }
    CES_WINDOW(1) CES_WINDOW(2) CES_WINDOW(3) CES_WINDOW(4) CES_WINDOW(5) CES_WINDOW(6)
#undef CES_WINDOW
}

/// The windows pass over the first 2,496 bytes: `oneWindows[k]` and `orWindows[k]` (k = 1...6)
/// become the numbers of windows of k + 1 ones and of windows holding a one that start there.
CES_AVX2 static void count_windows_avx2(const unsigned char *p, uint64_t oneWindows[7], uint64_t orWindows[7]) {
    const __m256i zero = _mm256_setzero_si256();
    __m256i oneSums[7], orSums[7];
    for (int k = 1; k < 7; k++) oneSums[k] = orSums[k] = zero;
    for (int first = 0; first < steps; first += window_group) {
        int end = first + window_group < steps ? first + window_group : steps;
        __m256i ones[7], ors[7];
        for (int k = 1; k < 7; k++) ones[k] = ors[k] = zero;
        for (int c = first; c < end; c++) {
            const unsigned char *q = p + 32 * c;
            // The last step: the words after it reach 4 bytes past the block, which are not
            // loaded (VPMASKMOVD: zero, and no fault).
            __m256i after = c == steps - 1
                ? _mm256_maskload_epi32((const int *)(q + 8), _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, -1, 0))
                : _mm256_loadu_si256((const __m256i *)(q + 8));
            count_windows_step(q, after, ones, ors);
        }
        for (int k = 1; k < 7; k++) {
            oneSums[k] = _mm256_add_epi64(oneSums[k], _mm256_sad_epu8(ones[k], zero));
            orSums[k] = _mm256_add_epi64(orSums[k], _mm256_sad_epu8(ors[k], zero));
        }
    }
    for (int k = 1; k < 7; k++) {
        oneWindows[k] = sum_quadwords(oneSums[k]);
        orWindows[k] = sum_quadwords(orSums[k]);
    }
}

/// Running counts of the bytes pass (AVX2).
struct bytes_state_avx2 {
    __m256i even[4], odd[4];            // 4-bit fields: nibbles 4g + 0, 4g + 2 (even) and 4g + 1, 4g + 3
    __m256i fieldSums[8], highSums[8];  // 64-bit lanes: VPSADBW of the fields, and of the high ones
    __m256i uniform;                    // byte-wise minimum: zero where a uniform pair ends
    __m256i equalBytes;                 // byte-wise minimum: zero where four equal bytes start
    __m256i repeated;                   // 32-bit lanes: all ones where a word equals the word before
};

/// Counts the nibbles, repeated words, uniform pairs and four equal bytes of the 32 bytes at `q`;
/// `before` holds the 32 bytes at q - 4.
CES_AVX2 static inline __attribute__((always_inline)) void count_bytes_step(
    struct bytes_state_avx2 *s, const unsigned char *q, __m256i before) {
    const __m256i low = _mm256_set1_epi8(0x0F);
    const __m256i pairsOfBits = _mm256_set1_epi8(0x33);
    __m256i raw = _mm256_loadu_si256((const __m256i *)q);
    __m256i lo = _mm256_and_si256(raw, low);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low);
    for (int g = 0; g < 4; g++) {
        __m256i table = _mm256_load_si256((const __m256i *)nibble_fields[g]);
        __m256i fields = _mm256_add_epi8(_mm256_shuffle_epi8(table, lo), _mm256_shuffle_epi8(table, hi));
        s->even[g] = _mm256_add_epi8(s->even[g], _mm256_and_si256(fields, pairsOfBits));
        s->odd[g] = _mm256_add_epi8(s->odd[g], _mm256_and_si256(_mm256_srli_epi16(fields, 2), pairsOfBits));
    }

    // Continuous test: each 32-bit word against the one before.
    s->repeated = _mm256_or_si256(s->repeated, _mm256_cmpeq_epi32(raw, before));
    // Pairs (i - 1, i) for i = q + 1 ... q + 32 (at most 2,496: inside the block), and four bytes
    // from i = q ... q + 31 (the last of them at most 2,498). A pair is uniform exactly when
    // (next ^ raw) | ((next + 1) & 0xFE) is zero: equal bytes, and 0xFF + 1 = 0, 0x00 + 1 = 1.
    __m256i next = _mm256_loadu_si256((const __m256i *)(q + 1));
    __m256i plusOne = _mm256_add_epi8(next, _mm256_set1_epi8(1));
    __m256i pair = _mm256_or_si256(
        _mm256_xor_si256(next, raw), _mm256_and_si256(plusOne, _mm256_set1_epi8((char)0xFE)));
    s->uniform = _mm256_min_epu8(s->uniform, pair);
    __m256i second = _mm256_xor_si256(raw, _mm256_loadu_si256((const __m256i *)(q + 2)));
    __m256i third = _mm256_xor_si256(raw, _mm256_loadu_si256((const __m256i *)(q + 3)));
    __m256i four = _mm256_or_si256(_mm256_or_si256(_mm256_xor_si256(raw, next), second), third);
    s->equalBytes = _mm256_min_epu8(s->equalBytes, four);
}

/// Adds the 4-bit nibble fields to the 64-bit sums: VPSADBW of the fields gives L + 16 H per lane
/// (L, H: the low and high fields' totals), VPSADBW of the high fields alone 16 H.
CES_AVX2 static inline __attribute__((always_inline)) void flush_nibble_fields(struct bytes_state_avx2 *s) {
    const __m256i zero = _mm256_setzero_si256();
    const __m256i highFields = _mm256_set1_epi8((char)0xF0);
    for (int g = 0; g < 4; g++) {
        s->fieldSums[2 * g] = _mm256_add_epi64(s->fieldSums[2 * g], _mm256_sad_epu8(s->even[g], zero));
        s->highSums[2 * g] = _mm256_add_epi64(
            s->highSums[2 * g], _mm256_sad_epu8(_mm256_and_si256(s->even[g], highFields), zero));
        s->fieldSums[2 * g + 1] = _mm256_add_epi64(s->fieldSums[2 * g + 1], _mm256_sad_epu8(s->odd[g], zero));
        s->highSums[2 * g + 1] = _mm256_add_epi64(
            s->highSums[2 * g + 1], _mm256_sad_epu8(_mm256_and_si256(s->odd[g], highFields), zero));
        s->even[g] = s->odd[g] = zero;
    }
}

/// Whether any byte lane is zero.
CES_AVX2 static inline int has_zero_byte(__m256i v) {
    return _mm256_movemask_epi8(_mm256_cmpeq_epi8(v, _mm256_setzero_si256())) != 0;
}

/// The rare path (AVX2): a uniform pair exists somewhere; find each and measure its run.
CES_AVX2 static int has_long_run_avx2(const unsigned char *p) {
    const __m256i one = _mm256_set1_epi8(1), fe = _mm256_set1_epi8((char)0xFE);
    for (int c = 0; c < steps; c++) {
        const unsigned char *q = p + 32 * c;
        __m256i raw = _mm256_loadu_si256((const __m256i *)q);
        __m256i next = _mm256_loadu_si256((const __m256i *)(q + 1));
        __m256i v = _mm256_or_si256(
            _mm256_xor_si256(next, raw), _mm256_and_si256(_mm256_add_epi8(next, one), fe));
        unsigned int pairs = (unsigned int)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, _mm256_setzero_si256()));
        while (pairs) {
            int i = 32 * c + 1 + __builtin_ctz(pairs);
            if (long_run_through(p, i)) return 1;
            pairs &= pairs - 1;
        }
    }
    for (int i = tail_offset + 1; i < block_size; i++) {
        if (p[i] == p[i - 1] && (p[i] == 0 || p[i] == 0xFF) && long_run_through(p, i)) return 1;
    }
    return 0;
}

CES_AVX2 void ces_fips_count_avx2(const void *block, uint32_t previous_word, ces_fips_counts *out) {
    _Static_assert(steps == 78 && steps % nibble_group == 0, "13 groups of 6 steps");
    _Static_assert(window_group * 8 <= 255, "byte counters hold the window group's counts");
    const unsigned char *p = block;
    // Two passes, so that each keeps its counters in registers.
    uint64_t oneWindows[7] = {0}, orWindows[7] = {0}, zeroWindows[7] = {0};
    count_windows_avx2(p, oneWindows, orWindows);
    const uint64_t positions = 32 * steps * 8;  // every window starting here ends inside the block
    for (int k = 1; k < 7; k++) zeroWindows[k] = positions - orWindows[k];

    struct bytes_state_avx2 s;
    for (int g = 0; g < 8; g++) s.fieldSums[g] = s.highSums[g] = _mm256_setzero_si256();
    for (int g = 0; g < 4; g++) s.even[g] = s.odd[g] = _mm256_setzero_si256();
    s.uniform = s.equalBytes = _mm256_set1_epi8(-1);
    s.repeated = _mm256_setzero_si256();
    // Step 0: the word before word 0 is the carried one (nothing before the block is read).
    __m256i first = _mm256_loadu_si256((const __m256i *)p);
    count_bytes_step(&s, p,
        _mm256_blend_epi32(_mm256_permutevar8x32_epi32(first, _mm256_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6)),
            _mm256_set1_epi32((int)previous_word), 0x01));
    for (int c = 1; c < nibble_group; c++) {
        count_bytes_step(&s, p + 32 * c, _mm256_loadu_si256((const __m256i *)(p + 32 * c - 4)));
    }
    flush_nibble_fields(&s);
    for (int group = nibble_group; group < steps; group += nibble_group) {
        for (int c = group; c < group + nibble_group; c++) {
            count_bytes_step(&s, p + 32 * c, _mm256_loadu_si256((const __m256i *)(p + 32 * c - 4)));
        }
        flush_nibble_fields(&s);
    }

    // fieldSums[2g] = L + 16 H with L the count of 4g + 0 and H of 4g + 2; [2g + 1]: 4g + 1, 4g + 3.
    uint32_t nibbles[16];
    for (int g = 0; g < 4; g++) {
        for (int odd = 0; odd < 2; odd++) {
            uint64_t fields = sum_quadwords(s.fieldSums[2 * g + odd]);
            uint64_t high = sum_quadwords(s.highSums[2 * g + odd]);
            nibbles[4 * g + odd] = (uint32_t)(fields - high);
            nibbles[4 * g + 2 + odd] = (uint32_t)(high / 16);
        }
    }
    int repeated = !_mm256_testz_si256(s.repeated, s.repeated);
    int uniformPair = finish_counts(
        p, oneWindows, zeroWindows, nibbles, repeated, has_zero_byte(s.equalBytes), has_zero_byte(s.uniform), out);
    out->long_run = (uint8_t)(uniformPair && has_long_run_avx2(p));
}

CES_AVX2 int ces_has_four_equal_bytes_avx2(const void *bytes, size_t count) {
    const unsigned char *p = bytes;
    if (count < 4) return 0;
    // Lane j compares bytes i ... i + 3 with i = offset + j. The last step overlaps the one before
    // instead of reading past the buffer; under 32 starts, plain code.
    size_t n = count - 3;
    if (n < 32) {
        for (size_t i = 0; i < n; i++) {
            if (p[i] == p[i + 1] && p[i] == p[i + 2] && p[i] == p[i + 3]) return 1;
        }
        return 0;
    }
    __m256i least = _mm256_set1_epi8(-1);
    for (size_t i = 0;; i += 32) {
        if (i + 32 > n) i = n - 32;
        __m256i a = _mm256_loadu_si256((const __m256i *)(p + i));
        __m256i b = _mm256_xor_si256(a, _mm256_loadu_si256((const __m256i *)(p + i + 1)));
        __m256i c = _mm256_xor_si256(a, _mm256_loadu_si256((const __m256i *)(p + i + 2)));
        __m256i d = _mm256_xor_si256(a, _mm256_loadu_si256((const __m256i *)(p + i + 3)));
        least = _mm256_min_epu8(least, _mm256_or_si256(_mm256_or_si256(b, c), d));
        if (i + 32 == n) break;
    }
    return has_zero_byte(least);
}

CES_AVX2 size_t ces_count_byte_avx2(const void *bytes, size_t count, uint8_t value) {
    const unsigned char *p = bytes;
    const __m256i pattern = _mm256_set1_epi8((char)value);
    size_t total = 0, i = 0;
    for (; i + 32 <= count; i += 32) {
        __m256i equal = _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(p + i)), pattern);
        total += (size_t)__builtin_popcount((unsigned int)_mm256_movemask_epi8(equal));
    }
    if (i < count && count >= 32) {
        // The last 32 bytes of the buffer; only the lanes past i are new.
        __m256i equal = _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(p + count - 32)), pattern);
        unsigned int fresh = ~0u << (32 - (count - i));
        total += (size_t)__builtin_popcount((unsigned int)_mm256_movemask_epi8(equal) & fresh);
    } else {
        for (; i < count; i++) total += p[i] == value;
    }
    return total;
}

#else
// No kernels off x86-64: ces_cpu_health_kernel_tier() is CES_HEALTH_TIER_NONE and Swift never calls
// the others; they still link, and answer like the kernels would.
int ces_cpu_health_kernel_tier(void) { return CES_HEALTH_TIER_NONE; }
static void no_fips_count(const void *block, uint32_t previous_word, ces_fips_counts *out) {
    (void)block;
    (void)previous_word;
    memset(out, 0, sizeof *out);
}
static int plain_has_four_equal_bytes(const void *bytes, size_t count) {
    const unsigned char *p = bytes;
    for (size_t i = 0; i + 3 < count; i++) {
        if (p[i] == p[i + 1] && p[i] == p[i + 2] && p[i] == p[i + 3]) return 1;
    }
    return 0;
}
static size_t plain_count_byte(const void *bytes, size_t count, uint8_t value) {
    const unsigned char *p = bytes;
    size_t total = 0;
    for (size_t i = 0; i < count; i++) total += p[i] == value;
    return total;
}
void ces_fips_count_avx512(const void *block, uint32_t previous_word, ces_fips_counts *out) {
    no_fips_count(block, previous_word, out);
}
void ces_fips_count_avx2(const void *block, uint32_t previous_word, ces_fips_counts *out) {
    no_fips_count(block, previous_word, out);
}
int ces_has_four_equal_bytes_avx512(const void *bytes, size_t count) {
    return plain_has_four_equal_bytes(bytes, count);
}
int ces_has_four_equal_bytes_avx2(const void *bytes, size_t count) { return plain_has_four_equal_bytes(bytes, count); }
size_t ces_count_byte_avx512(const void *bytes, size_t count, uint8_t value) {
    return plain_count_byte(bytes, count, value);
}
size_t ces_count_byte_avx2(const void *bytes, size_t count, uint8_t value) {
    return plain_count_byte(bytes, count, value);
}
#endif
