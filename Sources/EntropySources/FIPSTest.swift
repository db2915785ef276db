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
/// The implementation is table-driven: one pass counts each byte value and each pair of adjacent
/// bytes' (trailing run, leading run) codes; the per-block statistics then come from 256-entry
/// tables. Runs use the window identity: with `W_j` the number of length-`j` windows of equal bits
/// inside the block, the number of runs of length ≥ `k` is `W_k − W_(k+1)`.
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

    /// A tester with no previous word.
    public init() {}

    /// Tests one block; `block.count` must be ``blockSize``. Returns the failed tests only (empty
    /// on a pass); use ``analyze(_:)`` for the statistics.
    public mutating func test(_ block: UnsafeRawBufferPointer) -> FIPSFailures {
        precondition(block.count == Self.blockSize, "a FIPS block is \(Self.blockSize) bytes")
        var stats = Tally()
        stats.count(block, tables: FIPSTables.shared)
        var failures = stats.verdict(tables: FIPSTables.shared, block: block)
        if continuousFails(block) { failures.insert(.continuousRun) }
        return failures
    }

    /// Tests one block and returns its statistics.
    public mutating func analyze(_ block: UnsafeRawBufferPointer) -> FIPSBlockResult {
        precondition(block.count == Self.blockSize, "a FIPS block is \(Self.blockSize) bytes")
        var stats = Tally()
        stats.count(block, tables: FIPSTables.shared)
        var failures = stats.verdict(tables: FIPSTables.shared, block: block)
        if continuousFails(block) { failures.insert(.continuousRun) }
        let s = stats.summary(tables: FIPSTables.shared)
        return FIPSBlockResult(
            failures: failures, ones: s.ones, pokerSum: s.poker, zeroRuns: s.zeroRuns, oneRuns: s.oneRuns)
    }

    /// rng-tools' continuous test: each little-endian 32-bit word against the previous one.
    private mutating func continuousFails(_ block: UnsafeRawBufferPointer) -> Bool {
        var previous = lastWord
        var failed = false
        var offset = 0
        while offset + 4 <= block.count {
            let word = UInt32(littleEndian: block.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
            if word == previous { failed = true }
            previous = word
            offset += 4
        }
        lastWord = previous
        return failed
    }
}

/// Per-block counters: a histogram of byte values and of adjacent (trailing, leading) run codes.
struct Tally {
    var bytes = Histogram()
    var pairs = Histogram()

    struct Histogram {
        var storage: (SIMD64<UInt16>, SIMD64<UInt16>, SIMD64<UInt16>, SIMD64<UInt16>) = (.zero, .zero, .zero, .zero)
    }

    mutating func count(_ block: UnsafeRawBufferPointer, tables: FIPSTables) {
        tables.codes.withUnsafeBufferPointer { codes in
            withUnsafeMutableBytes(of: &bytes.storage) { rawBytes in
                withUnsafeMutableBytes(of: &pairs.storage) { rawPairs in
                    let byteCounts = rawBytes.baseAddress!.assumingMemoryBound(to: UInt16.self)
                    let pairCounts = rawPairs.baseAddress!.assumingMemoryBound(to: UInt16.self)
                    let p = block.baseAddress!.assumingMemoryBound(to: UInt8.self)
                    var previousTail = Int(codes[Int(p[0])] & 0xF0)
                    byteCounts[Int(p[0])] &+= 1
                    for i in 1..<block.count {
                        let b = Int(p[i])
                        byteCounts[b] &+= 1
                        let code = Int(codes[b])
                        pairCounts[previousTail | (code & 0x0F)] &+= 1
                        previousTail = code & 0xF0
                    }
                }
            }
        }
    }

    /// W-vector sums: lanes 0...6 windows of 1...7 zeros, lane 7 ones count, lanes 8...14 windows of
    /// 1...7 ones.
    func windows(tables: FIPSTables) -> SIMD16<UInt32> {
        var acc = SIMD16<UInt32>.zero
        tables.byteWindows.withUnsafeBufferPointer { byteWindows in
            withUnsafeBytes(of: bytes.storage) { raw in
                let counts = raw.baseAddress!.assumingMemoryBound(to: UInt16.self)
                for b in 0..<256 where counts[b] != 0 {
                    acc &+=
                        SIMD16<UInt32>(repeating: UInt32(counts[b]))
                        &* SIMD16<UInt32>(truncatingIfNeeded: byteWindows[b])
                }
            }
        }
        tables.pairWindows.withUnsafeBufferPointer { pairWindows in
            withUnsafeBytes(of: pairs.storage) { raw in
                let counts = raw.baseAddress!.assumingMemoryBound(to: UInt16.self)
                for i in 0..<256 where counts[i] != 0 {
                    acc &+=
                        SIMD16<UInt32>(repeating: UInt32(counts[i]))
                        &* SIMD16<UInt32>(truncatingIfNeeded: pairWindows[i])
                }
            }
        }
        return acc
    }

    func pokerSum() -> Int {
        withUnsafeBytes(of: bytes.storage) { raw in
            let counts = raw.baseAddress!.assumingMemoryBound(to: UInt16.self)
            var nibbles = (SIMD16<Int32>.zero)
            for hi in 0..<16 {
                var rowSum: Int32 = 0
                for lo in 0..<16 {
                    let c = Int32(counts[hi << 4 | lo])
                    rowSum &+= c
                    nibbles[lo] &+= c
                }
                nibbles[hi] &+= rowSum
            }
            var s = 0
            for i in 0..<16 { s += Int(nibbles[i]) * Int(nibbles[i]) }
            return s
        }
    }

    /// Runs of length 1...5 and 6+ for bit value `v` from the window sums.
    /// Lanes 0...5: runs of length 1...5 and 6+; lanes 6, 7 are zero.
    static func runs(_ w: SIMD16<UInt32>, bit v: Int) -> SIMD8<Int32> {
        let base = v == 0 ? 0 : 8
        // W_j for j = 1...7; runs ≥ k = W_k − W_(k+1); runs of exactly k = (≥ k) − (≥ k+1).
        var atLeast = SIMD8<Int32>.zero
        for k in 1...6 { atLeast[k - 1] = Int32(w[base + k - 1]) - Int32(w[base + k]) }
        var exact = SIMD8<Int32>.zero
        for k in 0..<5 { exact[k] = atLeast[k] - atLeast[k + 1] }
        exact[5] = atLeast[5]
        return exact
    }

    static let runLower = SIMD8<Int32>(2_315, 1_114, 527, 240, 103, 103, 0, 0)
    static let runUpper = SIMD8<Int32>(2_685, 1_386, 723, 384, 209, 209, 0, 0)

    func summary(tables: FIPSTables) -> (ones: Int, poker: Int, zeroRuns: [Int], oneRuns: [Int]) {
        let w = windows(tables: tables)
        let zeros = Self.runs(w, bit: 0)
        let ones = Self.runs(w, bit: 1)
        return (Int(w[7]), pokerSum(), (0..<6).map { Int(zeros[$0]) }, (0..<6).map { Int(ones[$0]) })
    }

    func verdict(tables: FIPSTables, block: UnsafeRawBufferPointer) -> FIPSFailures {
        let w = windows(tables: tables)
        var failures: FIPSFailures = []
        if !FIPSTest.monobitRange.contains(Int(w[7])) { failures.insert(.monobit) }
        if !FIPSTest.pokerRange.contains(pokerSum()) { failures.insert(.poker) }
        for v in 0...1 {
            let r = Self.runs(w, bit: v)
            if any(r .< Self.runLower) || any(r .> Self.runUpper) { failures.insert(.runs) }
        }
        // A run of ≥ 26 bits spans two whole equal bytes (0x00 0x00 or 0xFF 0xFF), whose pair code
        // (trailing run 8, leading run 8) is unique; only then scan the block.
        let uniformPairs = withUnsafeBytes(of: pairs.storage) { raw in
            let counts = raw.baseAddress!.assumingMemoryBound(to: UInt16.self)
            return counts[0x77] != 0 || counts[0xFF] != 0
        }
        if uniformPairs && Self.longestRun(block) >= FIPSTest.longRunLength { failures.insert(.longRun) }
        return failures
    }

    /// The longest run of equal bits in the block that touches a byte boundary, byte by byte with
    /// the leading/trailing run codes (runs inside one byte are at most 6 bits, far below 26).
    static func longestRun(_ block: UnsafeRawBufferPointer) -> Int {
        FIPSTables.shared.codes.withUnsafeBufferPointer { codes in
            var longest = 0
            var bit = -1
            var length = 0
            for byte in block {
                let code = Int(codes[Int(byte)])
                let msb = (code >> 3) & 1
                let leading = (code & 7) + 1
                length = msb == bit ? length + leading : leading
                bit = msb
                longest = max(longest, length)
                if leading < 8 {
                    bit = code >> 7
                    length = ((code >> 4) & 7) + 1
                }
            }
            return longest
        }
    }
}

/// Lookup tables for ``Tally``, built once.
final class FIPSTables: Sendable {
    static let shared = FIPSTables()

    /// Per byte: high nibble = trailing code (lsb << 3 | (trailing run − 1)), low nibble = leading code
    /// (msb << 3 | (leading run − 1)); runs measured in stream order (MSB first).
    let codes: [UInt8]
    /// Per byte: windows of 1...7 equal bits inside the byte (lanes as in ``Tally/windows(tables:)``).
    let byteWindows: [SIMD16<UInt16>]
    /// Per pair code (trailing code << 4 | leading code): windows of 2...7 equal bits straddling the
    /// byte boundary.
    let pairWindows: [SIMD16<UInt16>]

    private init() {
        var codes = [UInt8](repeating: 0, count: 256)
        var byteWindows = [SIMD16<UInt16>](repeating: .zero, count: 256)
        for value in 0..<256 {
            let bits = (0..<8).map { (value >> (7 - $0)) & 1 }  // stream order
            var leading = 1
            while leading < 8 && bits[leading] == bits[0] { leading += 1 }
            var trailing = 1
            while trailing < 8 && bits[7 - trailing] == bits[7] { trailing += 1 }
            codes[value] = UInt8((bits[7] << 3 | (trailing - 1)) << 4 | (bits[0] << 3 | (leading - 1)))
            var w = SIMD16<UInt16>.zero
            for j in 1...7 {
                for start in 0...(8 - j) {
                    let window = bits[start..<(start + j)]
                    if window.allSatisfy({ $0 == 0 }) { w[j - 1] += 1 }
                    if window.allSatisfy({ $0 == 1 }) { w[8 + j - 1] += 1 }
                }
            }
            w[7] = UInt16(value.nonzeroBitCount)
            byteWindows[value] = w
        }
        var pairWindows = [SIMD16<UInt16>](repeating: .zero, count: 256)
        for index in 0..<256 {
            let tail = index >> 4
            let head = index & 0x0F
            let v = tail >> 3
            guard v == head >> 3 else { continue }
            let t = (tail & 7) + 1
            let l = (head & 7) + 1
            var w = SIMD16<UInt16>.zero
            for j in 2...7 {
                // u bits before the boundary (1...t), j − u after it (1...l).
                let low = max(1, j - l)
                let high = min(j - 1, t)
                if high >= low { w[(v == 0 ? 0 : 8) + j - 1] = UInt16(high - low + 1) }
            }
            pairWindows[index] = w
        }
        self.codes = codes
        self.byteWindows = byteWindows
        self.pairWindows = pairWindows
    }
}
