internal import CEntropyShims

/// The FIPS 140-2 statistical tests that rng-tools' `rngd` runs on every 20,000-bit block.
///
/// Each block is 2,500 bytes, read most significant bit first. Bounds (rng-tools `fips.c`, FIPS
/// 140-2 4.9.1 as of 2001-10-10; all inclusive):
///
/// | test | statistic | passes |
/// |---|---|---|
/// | monobit | ones X in 20,000 bits | 9,726 ≤ X ≤ 10,274 |
/// | poker | S = Σ f[i]² over the 5,000 nibbles (high nibble first) | 1,563,176 ≤ S ≤ 1,576,928 |
/// | runs | runs of length 1, 2, 3, 4, 5, 6+ (zeros and ones apart) | 2,315–2,685, 1,114–1,386, 527–723, 240–384, 103–209, 103–209 |
/// | long run | longest run | < 26 |
/// | continuous run | each little-endian 32-bit word against the previous (carried across blocks) | differs |
///
/// On full-entropy input about 1 block in 1,250 fails one of these tests (rngd's well-known rate;
/// the monobit bound alone is ±3.9σ). ``HealthMonitor`` therefore discards a failing block and only
/// marks the source failed after several failures in a row.
///
/// Two deliberate differences from rng-tools: runs are counted per block (the first and the last,
/// possibly incomplete, run of the block included) and each run is counted under its own bit value.
/// rng-tools carries the last bit across blocks and, when a run ends, files it under the *new* bit
/// (and indexes `runs[-1]` when a block starts with a bit change); since zeros and ones share the
/// same bounds, this changes a count by at most one. Blocks are independent here, so a failing
/// block can be discarded without affecting its neighbours' verdicts.
///
/// Runs use the window identity: with `W_j` the number of length-`j` windows of equal bits inside the
/// block, the number of runs of length ≥ `k` is `W_k − W_(k+1)`. On CPUs with AVX-512 (see
/// `HealthKernels`) one pass of a C kernel counts the windows with 64-bit population counts, the
/// nibbles with one-hot bytes and an 8 × 8 bit transpose, and the continuous test with 32-bit lane
/// compares, 64 bytes per step (about 0.2 ns per byte). With AVX2 only, a C kernel counts the same
/// 32 bytes per step (population counts by nibble lookups, nibbles in 4-bit fields; about 0.7 ns
/// per byte). Elsewhere one pass over the block fills a histogram indexed by (previous byte's
/// trailing run, byte), and everything is derived from it at the end of the block. A long run is
/// only looked for when two adjacent bytes are both 0x00 or both 0xFF. Every path gives the same
/// results bit for bit. The environment variable `VIRTRNG_HEALTH_KERNEL` (`avx512`, `avx2` or
/// `swift`, read once) caps the tier used, to compare them on one machine.
public struct FIPSFailures: OptionSet, Hashable, Sendable, CustomStringConvertible {
    /// The bit set (rng-tools' values: monobit 0x1, poker 0x2, runs 0x4, long run 0x8, continuous 0x10).
    public var rawValue: UInt8
    /// Wraps a bit set.
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Monobit test failed.
    public static let monobit = FIPSFailures(rawValue: 0x01)
    /// Poker test failed.
    public static let poker = FIPSFailures(rawValue: 0x02)
    /// Runs test failed.
    public static let runs = FIPSFailures(rawValue: 0x04)
    /// A run of 26 or more equal bits.
    public static let longRun = FIPSFailures(rawValue: 0x08)
    /// Two consecutive 32-bit words were equal.
    public static let continuousRun = FIPSFailures(rawValue: 0x10)

    /// The failed tests' names, e.g. "monobit, runs".
    public var description: String {
        var names: [String] = []
        if contains(.monobit) { names.append("monobit") }
        if contains(.poker) { names.append("poker") }
        if contains(.runs) { names.append("runs") }
        if contains(.longRun) { names.append("long run") }
        if contains(.continuousRun) { names.append("continuous run") }
        return names.isEmpty ? "none" : names.joined(separator: ", ")
    }
}

/// The statistics of one FIPS block and the tests it failed.
public struct FIPSBlockResult: Hashable, Sendable {
    /// The tests that failed (empty: the block passed).
    public var failures: FIPSFailures
    /// The number of one bits (monobit statistic).
    public var ones: Int
    /// Σ f[i]² over the 16 nibble counts (poker statistic).
    public var pokerSum: Int
    /// Runs of zeros of length 1...5 and 6+ (index 0...5).
    public var zeroRuns: [Int]
    /// Runs of ones of length 1...5 and 6+ (index 0...5).
    public var oneRuns: [Int]
}

/// Runs the FIPS 140-2 tests over 2,500-byte blocks, carrying the continuous-test word across blocks.
public struct FIPSTest: Sendable {
    /// Bytes per block: 20,000 bits.
    public static let blockSize = 2_500
    /// Monobit bounds.
    public static let monobitRange = 9_726...10_274
    /// Poker bounds on S = Σ f[i]².
    public static let pokerRange = 1_563_176...1_576_928
    /// Runs bounds for lengths 1...5 and 6+.
    public static let runRanges = [2_315...2_685, 1_114...1_386, 527...723, 240...384, 103...209, 103...209]
    /// The shortest failing run.
    public static let longRunLength = 26

    /// The previous 32-bit word (continuous test), nil before the first block.
    var lastWord: UInt32?
    /// Which code counts the blocks (`HealthKernels`).
    let tier: HealthKernelTier

    /// A tester with no previous word, on the tier `HealthKernels.selected`.
    public init() {
        tier = HealthKernels.selected
    }

    /// A tester on `tier`, or the best tier below it the CPU supports (tests run every tier).
    init(tier: HealthKernelTier) {
        self.tier = HealthKernels.available(tier)
    }

    /// Tests one block; `block.count` must be ``blockSize``. Returns the failed tests only (empty
    /// on a pass); use ``analyze(_:)`` for the statistics.
    public mutating func test(_ block: UnsafeRawBufferPointer) -> FIPSFailures {
        var fourEqualBytes: Bool?
        return test(block, fourEqualBytes: &fourEqualBytes)
    }

    /// ``test(_:)`` that also sets `fourEqualBytes` (whether four consecutive bytes of the block are
    /// equal) when a kernel counted the block; leaves it unchanged otherwise.
    mutating func test(_ block: UnsafeRawBufferPointer, fourEqualBytes: inout Bool?) -> FIPSFailures {
        precondition(block.count == Self.blockSize, "a FIPS block is \(Self.blockSize) bytes")
        let tally = Tally.count(block, lastWord: &lastWord, tier: tier)
        if let known = tally.fourEqualBytes { fourEqualBytes = known }
        return tally.verdict()
    }

    /// Tests one block and returns its statistics.
    public mutating func analyze(_ block: UnsafeRawBufferPointer) -> FIPSBlockResult {
        precondition(block.count == Self.blockSize, "a FIPS block is \(Self.blockSize) bytes")
        let tally = Tally.count(block, lastWord: &lastWord, tier: tier)
        let zeros = Tally.runs(tally.zeroWindows)
        let ones = Tally.runs(tally.oneWindows)
        return FIPSBlockResult(
            failures: tally.verdict(), ones: tally.ones, pokerSum: tally.poker,
            zeroRuns: (0..<6).map { Int(zeros[$0]) }, oneRuns: (0..<6).map { Int(ones[$0]) })
    }
}

/// Per-block counters and the statistics derived from them.
///
/// With a kernel (AVX-512 or AVX2), `ces_fips_count_*` returns W_1...W_7, the nibble counts and the long-run
/// and continuous verdicts directly. The portable path makes one pass over the block, eight bytes
/// per load, keeping a histogram from which come byte values and byte-boundary codes (the previous
/// byte's trailing run and bit, this byte's leading run and bit). Everything else comes from these
/// at the end of the block in a few hundred operations:
///
/// - the nibble counts f (poker, monobit) are the histogram's row and column sums;
/// - W_j, the number of windows of j equal bits (j = 1...7), splits into windows inside a nibble
///   (from f), windows straddling the middle of a byte (from row and column sums of the histogram
///   seen as a 16 × 16 matrix) and windows straddling a byte boundary (from the boundary codes).
///   Both straddling parts use S[a][b], the number of boundaries whose left side ends in a run of
///   at least a equal bits and whose right side starts with at least b more of them:
///   the straddling windows of length j number Σ_(u = 1...j−1) S[u][j − u].
struct Tally {
    /// W_1...W_7 for zeros (`zeros[j − 1]`) and ones.
    var zeroWindows = SIMD8<Int32>.zero
    var oneWindows = SIMD8<Int32>.zero
    /// Σ f[i]² over the 16 nibble counts.
    var poker = 0
    /// Whether two adjacent bytes are both 0x00 or both 0xFF (a precondition for a long run).
    var uniformPair = false
    /// The block holds a run of ``FIPSTest/longRunLength`` or more equal bits.
    var longRun = false
    /// The continuous test failed inside this block (or against `lastWord`).
    var repeatedWord = false
    /// Whether four consecutive bytes are equal (from the kernel only; the RCT's shortcut uses it).
    var fourEqualBytes: Bool?

    var ones: Int { Int(oneWindows[0]) }

    /// Counts `block` (``FIPSTest/blockSize`` bytes) with the kernel of `tier`, or the portable code
    /// for ``HealthKernelTier/swift``; `lastWord` is the continuous test's carry.
    static func count(_ block: UnsafeRawBufferPointer, lastWord: inout UInt32?, tier: HealthKernelTier) -> Tally {
        if tier > .swift {
            var counts = ces_fips_counts()
            let previous = lastWord ?? ~UInt32(littleEndian: block.loadUnaligned(as: UInt32.self))
            HealthKernels.fipsCount(block, previousWord: previous, tier: tier, into: &counts)
            lastWord = counts.last_word
            return Tally(counts)
        }
        var tally = Tally(block, lastWord: &lastWord)
        tally.longRun = tally.uniformPair && hasLongRun(block)
        return tally
    }

    /// The statistics from the kernel's counts.
    private init(_ counts: ces_fips_counts) {
        zeroWindows = withUnsafeBytes(of: counts.zero_windows) {
            SIMD8<Int32>(truncatingIfNeeded: $0.loadUnaligned(as: SIMD8<UInt32>.self))
        }
        oneWindows = withUnsafeBytes(of: counts.one_windows) {
            SIMD8<Int32>(truncatingIfNeeded: $0.loadUnaligned(as: SIMD8<UInt32>.self))
        }
        // Each count is at most 5,000, so Σ f² (at most 25,000,000) fits 32 bits.
        let f = withUnsafeBytes(of: counts.nibbles) { $0.loadUnaligned(as: SIMD16<UInt32>.self) }
        poker = Int((f &* f).wrappedSum())
        longRun = counts.long_run != 0
        repeatedWord = counts.repeated_word != 0
        fourEqualBytes = counts.four_equal_bytes != 0
    }

    /// Counts `block` (``FIPSTest/blockSize`` bytes) in Swift; `lastWord` is the continuous test's carry.
    private init(_ block: UnsafeRawBufferPointer, lastWord: inout UInt32?) {
        let tables = FIPSTables.shared
        let tailRows = tables.tailRows
        let p = block.baseAddress!
        // One histogram indexed by (previous byte's trailing code, byte): 16 × 256 counters on the
        // stack (a tuple, so no allocation). Byte counts are its column sums; the boundary codes'
        // counts are sums over ranges of its rows.
        typealias Eight = (
            SIMD64<UInt16>, SIMD64<UInt16>, SIMD64<UInt16>, SIMD64<UInt16>, SIMD64<UInt16>, SIMD64<UInt16>,
            SIMD64<UInt16>, SIMD64<UInt16>
        )
        let zero: Eight = (.zero, .zero, .zero, .zero, .zero, .zero, .zero, .zero)
        var storage: (Eight, Eight, Eight, Eight, Eight, Eight, Eight, Eight, Eight) = (
            zero, zero, zero, zero, zero, zero, zero, zero, zero
        )
        self = withUnsafeMutableBytes(of: &storage) { raw in
            let histogram = raw.baseAddress!.assumingMemoryBound(to: UInt16.self)
            var tail = 0  // the boundary before byte 0 is counted under tail code 0 and removed below
            var repeated: UInt32 = 0
            var previous = lastWord ?? ~UInt32(littleEndian: p.loadUnaligned(as: UInt32.self))
            // Bytes are loaded one by one (one load µop each) rather than shifted out of the word.
            let bytes = p.assumingMemoryBound(to: UInt8.self)
            @inline(__always) func step(_ i: Int) {
                let b = Int(bytes[i])
                histogram[tail | b] &+= 1
                tail = Int(tailRows[b])
            }
            var offset = 0
            let wholeWords = FIPSTest.blockSize & ~7
            while offset < wholeWords {
                let x = UInt64(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
                let low = UInt32(truncatingIfNeeded: x)
                let high = UInt32(truncatingIfNeeded: x >> 32)
                repeated |= (low == previous ? 1 : 0) | (high == low ? 1 : 0)
                previous = high
                for k in 0..<8 { step(offset + k) }
                offset += 8
            }
            while offset < FIPSTest.blockSize {  // 2,500 = 312 × 8 + 4: one 32-bit word left
                let w = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
                repeated |= w == previous ? 1 : 0
                previous = w
                for k in 0..<4 { step(offset + k) }
                offset += 4
            }
            lastWord = previous
            // Byte counts: column sums of the 16 rows (vectorised adds).
            let counts = histogram + 16 * 256
            for b in 0..<256 { counts[b] = 0 }
            for t in 0..<16 {
                let row = histogram + 256 * t
                for b in 0..<256 { counts[b] &+= row[b] }
            }
            histogram[Int(p.load(as: UInt8.self))] &-= 1
            // Boundary codes: the bytes whose leading code is (v, l) form one range per row.
            let pairs = counts + 256
            for t in 0..<16 {
                let row = histogram + 256 * t
                let v = t >> 3
                for l in 1...8 {
                    let size = l == 8 ? 1 : 1 << (7 - l)
                    let start = v == 0 ? (l == 8 ? 0 : size) : (l == 8 ? 255 : 256 - 2 * size)
                    var sum: UInt16 = 0
                    for b in start..<(start + size) { sum &+= row[b] }
                    pairs[t << 4 | v << 3 | (l - 1)] = sum
                }
            }
            var tally = Tally(counts: UnsafePointer(counts), pairs: UnsafePointer(pairs), tables: tables)
            tally.repeatedWord = repeated != 0
            return tally
        }
    }

    /// The statistics from the two histograms (scalar code on packed 16-bit lanes: every count
    /// here is at most 20,000).
    private init(counts c: UnsafePointer<UInt16>, pairs: UnsafePointer<UInt16>, tables: FIPSTables) {
        // Only the pair entries whose two codes carry the same bit are filled in.
        uniformPair = pairs[0x77] != 0 || pairs[0xFF] != 0
        // The byte histogram as a 16 × 16 matrix (row: high nibble h, column: low nibble l).
        // f = row sums + column sums. Per row, the sums over the low nibbles that start with at
        // least b = 1...4 zeros (l < 2^(4−b)) or ones (l ≥ 16 − 2^(4−b)), packed 16 bits per b;
        // summed over the rows whose high nibble ends in at least a bits of the same value they
        // give S[a][b] for the middle of the byte.
        var w0 = SIMD8<Int32>.zero
        var w1 = SIMD8<Int32>.zero
        var poker = 0
        withUnsafeTemporaryAllocation(of: Int.self, capacity: 32) { scratch in
            // Scalars in memory: lane inserts into SIMD values would stall store forwarding.
            let f = scratch.baseAddress!  // nibble counts
            let w = f + 16  // w[0...7]: W_1...W_8 of zeros, w[8...15]: of ones
            scratch.initialize(repeating: 0)
            var mid0 = SIMD4<UInt64>.zero  // lane a − 1: Σ over rows ending in ≥ a zeros
            var mid1 = SIMD4<UInt64>.zero
            for h in 0..<16 {
                let row = c + 16 * h
                for l in 0..<16 { f[l] &+= Int(row[l]) }
                let z4 = UInt64(row[0])
                let z3 = z4 + UInt64(row[1])
                let z2 = z3 + UInt64(row[2]) + UInt64(row[3])
                let z1 = z2 + UInt64(row[4]) + UInt64(row[5]) + UInt64(row[6]) + UInt64(row[7])
                let o4 = UInt64(row[15])
                let o3 = o4 + UInt64(row[14])
                let o2 = o3 + UInt64(row[13]) + UInt64(row[12])
                let o1 = o2 + UInt64(row[11]) + UInt64(row[10]) + UInt64(row[9]) + UInt64(row[8])
                f[h] &+= Int(truncatingIfNeeded: z1 + o1)
                let zeros = z1 | z2 << 16 | z3 << 32 | z4 << 48
                let ones = o1 | o2 << 16 | o3 << 32 | o4 << 48
                if h & 1 == 0 { mid0[0] &+= zeros } else { mid1[0] &+= ones }
                if h & 3 == 0 { mid0[1] &+= zeros } else if h & 3 == 3 { mid1[1] &+= ones }
                if h & 7 == 0 { mid0[2] &+= zeros } else if h & 7 == 7 { mid1[2] &+= ones }
                if h == 0 { mid0[3] &+= zeros } else if h == 15 { mid1[3] &+= ones }
            }
            var nibble0: UInt64 = 0  // windows of j = 1...4 zeros inside nibbles, 16 bits per j
            var nibble1: UInt64 = 0
            for n in 0..<16 {
                let count = f[n]
                poker += count * count
                nibble0 &+= UInt64(count) &* tables.nibbleWindows[2 * n]
                nibble1 &+= UInt64(count) &* tables.nibbleWindows[2 * n + 1]
            }
            for j in 1...4 {
                w[j - 1] = Int(truncatingIfNeeded: (nibble0 >> UInt64(16 * (j - 1))) & 0xFFFF)
                w[8 + j - 1] = Int(truncatingIfNeeded: (nibble1 >> UInt64(16 * (j - 1))) & 0xFFFF)
            }
            // Middle of the byte: W_j += Σ_(u = max(1, j−4)...min(4, j−1)) S[u][j − u].
            for j in 2...7 {
                for u in max(1, j - 4)...min(4, j - 1) {
                    let shift = UInt64(16 * (j - u - 1))
                    w[j - 1] &+= Int(truncatingIfNeeded: (mid0[u - 1] >> shift) & 0xFFFF)
                    w[8 + j - 1] &+= Int(truncatingIfNeeded: (mid1[u - 1] >> shift) & 0xFFFF)
                }
            }
            // Byte boundaries from the boundary codes: rows t (trailing run of the previous byte,
            // 1...8), columns l (leading run of this byte); R_a = Σ_(t ≥ a) row_t, then
            // S[a][b] = Σ_(l ≥ b) R_a[l − 1], which adds to W_(a+b).
            for v in 0...1 {
                let r = f  // f is no longer needed: reuse it for R_a
                for l in 0..<8 { r[l] = 0 }
                for a in stride(from: 8, through: 1, by: -1) {
                    let row = pairs + ((v << 3 | (a - 1)) << 4 | v << 3)
                    for l in 0..<8 { r[l] &+= Int(row[l]) }
                    guard a <= 6 else { continue }
                    var s = 0
                    for b in stride(from: 8, through: 1, by: -1) {
                        s &+= r[b - 1]
                        if a + b <= 7 { w[8 * v + a + b - 1] &+= s }
                    }
                }
            }
            for j in 0..<8 {
                w0[j] = Int32(truncatingIfNeeded: w[j])
                w1[j] = Int32(truncatingIfNeeded: w[8 + j])
            }
        }
        self.poker = poker
        zeroWindows = w0
        oneWindows = w1
    }

    /// Runs of length 1...5 and 6+ (lanes 0...5) from W_1...W_7: runs of length ≥ k number
    /// W_k − W_(k+1).
    static func runs(_ w: SIMD8<Int32>) -> SIMD8<Int32> {
        var atLeast = SIMD8<Int32>.zero
        for k in 1...6 { atLeast[k - 1] = w[k - 1] - w[k] }
        var exact = SIMD8<Int32>.zero
        for k in 0..<5 { exact[k] = atLeast[k] - atLeast[k + 1] }
        exact[5] = atLeast[5]
        return exact
    }

    static let runLower = SIMD8<Int32>(2_315, 1_114, 527, 240, 103, 103, 0, 0)
    static let runUpper = SIMD8<Int32>(2_685, 1_386, 723, 384, 209, 209, 0, 0)

    func verdict() -> FIPSFailures {
        var failures: FIPSFailures = []
        if !FIPSTest.monobitRange.contains(ones) { failures.insert(.monobit) }
        if !FIPSTest.pokerRange.contains(poker) { failures.insert(.poker) }
        let zeros = Self.runs(zeroWindows)
        let ones = Self.runs(oneWindows)
        if any(zeros .< Self.runLower) || any(zeros .> Self.runUpper) || any(ones .< Self.runLower)
            || any(ones .> Self.runUpper)
        {
            failures.insert(.runs)
        }
        if longRun { failures.insert(.longRun) }
        if repeatedWord { failures.insert(.continuousRun) }
        return failures
    }

    /// Whether a run of ``FIPSTest/longRunLength`` or more equal bits exists: every such run
    /// contains two adjacent bytes both 0x00 or both 0xFF, so only those are extended (and only
    /// called when the count found such a pair).
    static func hasLongRun(_ block: UnsafeRawBufferPointer) -> Bool {
        let codes = FIPSTables.shared.codes
        let p = block.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let n = block.count
        var i = 0
        while i + 1 < n {
            let u = p[i]
            guard (u == 0 || u == 0xFF) && p[i + 1] == u else {
                i += 1
                continue
            }
            var start = i
            while start > 0 && p[start - 1] == u { start -= 1 }
            var end = i + 1
            while end + 1 < n && p[end + 1] == u { end += 1 }
            var length = (end - start + 1) * 8
            let bit = Int(u & 1)
            if start > 0 {
                let code = Int(codes[Int(p[start - 1])])
                if code >> 7 == bit { length += (code >> 4) & 7 + 1 }
            }
            if end + 1 < n {
                let code = Int(codes[Int(p[end + 1])])
                if (code >> 3) & 1 == bit { length += code & 7 + 1 }
            }
            if length >= FIPSTest.longRunLength { return true }
            i = end + 1
        }
        return false
    }
}

/// Lookup tables for ``Tally``, built once.
///
/// `@unchecked Sendable`: the tables are written in `init`, only read afterwards, and never freed
/// (one instance for the process).
final class FIPSTables: @unchecked Sendable {
    static let shared = FIPSTables()

    /// Per byte: high nibble = trailing code (lsb << 3 | (trailing run − 1)), low nibble = leading code
    /// (msb << 3 | (leading run − 1)); runs measured in stream order (MSB first).
    let codes: UnsafePointer<UInt8>
    /// The trailing code times 256: the row of the next byte in ``Tally``'s histogram.
    let tailRows: UnsafePointer<UInt16>
    /// Per nibble n: windows of j = 1...4 zeros (entry 2n) and ones (2n + 1) inside it, 16 bits per j.
    let nibbleWindows: UnsafePointer<UInt64>

    private init() {
        let codes = UnsafeMutablePointer<UInt8>.allocate(capacity: 256)
        let tailRows = UnsafeMutablePointer<UInt16>.allocate(capacity: 256)
        for value in 0..<256 {
            let bits = (0..<8).map { (value >> (7 - $0)) & 1 }  // stream order
            var leading = 1
            while leading < 8 && bits[leading] == bits[0] { leading += 1 }
            var trailing = 1
            while trailing < 8 && bits[7 - trailing] == bits[7] { trailing += 1 }
            let code = UInt8((bits[7] << 3 | (trailing - 1)) << 4 | (bits[0] << 3 | (leading - 1)))
            codes[value] = code
            tailRows[value] = UInt16(code >> 4) << 8
        }
        let nibbleWindows = UnsafeMutablePointer<UInt64>.allocate(capacity: 32)
        for n in 0..<16 {
            let bits = (0..<4).map { (n >> (3 - $0)) & 1 }
            for v in 0...1 {
                var packed: UInt64 = 0
                for j in 1...4 {
                    let windows = (0...(4 - j)).filter { start in bits[start..<(start + j)].allSatisfy { $0 == v } }
                    packed |= UInt64(windows.count) << UInt64(16 * (j - 1))
                }
                nibbleWindows[2 * n + v] = packed
            }
        }
        self.codes = UnsafePointer(codes)
        self.tailRows = UnsafePointer(tailRows)
        self.nibbleWindows = UnsafePointer(nibbleWindows)
    }
}
