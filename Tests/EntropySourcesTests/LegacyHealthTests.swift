@testable import EntropySources

// The FIPS 140-2 and SP 800-90B implementations as they were before the single-pass rewrite
// (commit 8d6f4a2), kept verbatim as a second oracle: the optimised tests must return the same
// verdicts and statistics bit for bit.

/// The pre-rewrite `FIPSTest`.
struct LegacyFIPSTest {
    var lastWord: UInt32?

    mutating func test(_ block: UnsafeRawBufferPointer) -> FIPSFailures {
        var stats = LegacyTally()
        stats.count(block, tables: LegacyFIPSTables.shared)
        var failures = stats.verdict(tables: LegacyFIPSTables.shared, block: block)
        if continuousFails(block) { failures.insert(.continuousRun) }
        return failures
    }

    mutating func analyze(_ block: UnsafeRawBufferPointer) -> FIPSBlockResult {
        var stats = LegacyTally()
        stats.count(block, tables: LegacyFIPSTables.shared)
        var failures = stats.verdict(tables: LegacyFIPSTables.shared, block: block)
        if continuousFails(block) { failures.insert(.continuousRun) }
        let s = stats.summary(tables: LegacyFIPSTables.shared)
        return FIPSBlockResult(
            failures: failures, ones: s.ones, pokerSum: s.poker, zeroRuns: s.zeroRuns, oneRuns: s.oneRuns)
    }

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

/// The pre-rewrite RCT and APT of `ContinuousHealthTests`.
struct LegacyContinuousHealthTests {
    static let adaptiveProportionWindow = 512
    let repetitionCutoff: Int
    let adaptiveProportionCutoff: Int
    var lastByte: UInt8 = 0
    var repetitions = 0
    var windowPosition = 0
    var windowValue: UInt8 = 0
    var windowCount = 0

    init(repetitionCutoff: Int, adaptiveProportionCutoff: Int) {
        self.repetitionCutoff = repetitionCutoff
        self.adaptiveProportionCutoff = adaptiveProportionCutoff
    }

    mutating func test(_ bytes: UnsafeRawBufferPointer) -> HealthTestFailure? {
        if let failure = repetitionCount(bytes) { return failure }
        return adaptiveProportion(bytes)
    }

    /// RCT over `bytes`. Eight bytes at a time, the chunk is checked for any byte equal to its
    /// predecessor (SWAR zero-byte test on `x ^ (x << 8 | last)`); only chunks with such a pair are
    /// walked byte by byte, so random data costs a few operations per 8 bytes.
    mutating func repetitionCount(_ bytes: UnsafeRawBufferPointer) -> HealthTestFailure? {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return nil }
        var last = lastByte
        var run = repetitions
        let cutoff = repetitionCutoff
        var i = 0
        if run == 0 {
            // First byte ever.
            last = base.load(as: UInt8.self)
            run = 1
            i = 1
        }
        let lows: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        while i + 8 <= bytes.count {
            let x = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: i, as: UInt64.self))
            let predecessors = (x << 8) | UInt64(last)
            let z = x ^ predecessors
            if (z &- lows) & ~z & highs == 0 {
                run = 1
                last = UInt8(truncatingIfNeeded: x >> 56)
            } else {
                for k in 0..<8 {
                    let b = UInt8(truncatingIfNeeded: x >> (8 * UInt64(k)))
                    if b == last {
                        run += 1
                        if run >= cutoff {
                            // Restart the count so the next block is judged on its own run.
                            lastByte = b
                            repetitions = 1
                            return .repetitionCount(value: b, count: run, cutoff: cutoff)
                        }
                    } else {
                        last = b
                        run = 1
                    }
                }
            }
            i += 8
        }
        while i < bytes.count {
            let b = base.load(fromByteOffset: i, as: UInt8.self)
            if b == last {
                run += 1
                if run >= cutoff {
                    lastByte = b
                    repetitions = 1
                    return .repetitionCount(value: b, count: run, cutoff: cutoff)
                }
            } else {
                last = b
                run = 1
            }
            i += 1
        }
        lastByte = last
        repetitions = run
        return nil
    }

    /// APT over `bytes`: windows of 512 bytes, continued across calls.
    mutating func adaptiveProportion(_ bytes: UnsafeRawBufferPointer) -> HealthTestFailure? {
        guard let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return nil }
        let window = Self.adaptiveProportionWindow
        let cutoff = adaptiveProportionCutoff
        var i = 0
        while i < bytes.count {
            if windowPosition == 0 {
                windowValue = base[i]
                windowCount = 1
                windowPosition = 1
                i += 1
                continue
            }
            let end = min(bytes.count, i + (window - windowPosition))
            let value = windowValue
            var count = 0
            for j in i..<end where base[j] == value { count += 1 }
            windowCount += count
            windowPosition += end - i
            i = end
            if windowCount >= cutoff {
                let failure = HealthTestFailure.adaptiveProportion(value: value, count: windowCount, cutoff: cutoff)
                windowPosition = 0
                return failure
            }
            if windowPosition == window { windowPosition = 0 }
        }
        return nil
    }

}

/// Per-block counters: a histogram of byte values and of adjacent (trailing, leading) run codes.
struct LegacyTally {
    var bytes = Histogram()
    var pairs = Histogram()

    struct Histogram {
        var storage: (SIMD64<UInt16>, SIMD64<UInt16>, SIMD64<UInt16>, SIMD64<UInt16>) = (.zero, .zero, .zero, .zero)
    }

    mutating func count(_ block: UnsafeRawBufferPointer, tables: LegacyFIPSTables) {
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
    func windows(tables: LegacyFIPSTables) -> SIMD16<UInt32> {
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

    func summary(tables: LegacyFIPSTables) -> (ones: Int, poker: Int, zeroRuns: [Int], oneRuns: [Int]) {
        let w = windows(tables: tables)
        let zeros = Self.runs(w, bit: 0)
        let ones = Self.runs(w, bit: 1)
        return (Int(w[7]), pokerSum(), (0..<6).map { Int(zeros[$0]) }, (0..<6).map { Int(ones[$0]) })
    }

    func verdict(tables: LegacyFIPSTables, block: UnsafeRawBufferPointer) -> FIPSFailures {
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
        if uniformPairs && Self.longestRun(block) >= 26 { failures.insert(.longRun) }
        return failures
    }

    /// The longest run of equal bits in the block that touches a byte boundary, byte by byte with
    /// the leading/trailing run codes (runs inside one byte are at most 6 bits, far below 26).
    static func longestRun(_ block: UnsafeRawBufferPointer) -> Int {
        LegacyFIPSTables.shared.codes.withUnsafeBufferPointer { codes in
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

/// Lookup tables for ``LegacyTally``, built once.
final class LegacyFIPSTables: Sendable {
    static let shared = LegacyFIPSTables()

    /// Per byte: high nibble = trailing code (lsb << 3 | (trailing run − 1)), low nibble = leading code
    /// (msb << 3 | (leading run − 1)); runs measured in stream order (MSB first).
    let codes: [UInt8]
    /// Per byte: windows of 1...7 equal bits inside the byte (lanes as in ``LegacyTally/windows(tables:)``).
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
