#if canImport(Glibc)
    import Glibc
#endif

/// The SP 800-90B §4.4 continuous health tests over byte samples: the Repetition Count Test (RCT)
/// and the Adaptive Proportion Test (APT), with cutoffs derived from the claimed min-entropy.
///
/// With H the claimed min-entropy per byte and α = 2^−n the false-positive probability:
///
/// - RCT (§4.4.1): fail when one byte value repeats C times in a row,
///   **C = 1 + ⌈n / H⌉** (H = 8, n = 20: C = 4; H = 1: C = 21).
/// - APT (§4.4.2): in each window of W = 512 bytes (non-binary samples), fail when the window's first
///   byte occurs C times, **C = 2 + CRITBINOM(W − 1, 2^−H, 1 − α)**, the smallest c with
///   P(X ≥ c − 1) ≤ α for X ~ Binomial(W − 1, 2^−H) (SP 800-90B public comment 10b's correction,
///   as jitterentropy uses; NIST's own formula is at most one lower). Capped at W.
///   H = 8, n = 20: C = 14; H = 4: 63; H = 1: 311 (../shared/PROTOCOLS.md §6.2).
///
/// α is the probability that one test instance (a run starting at a given byte, one window) fails
/// on data with the claimed entropy. Over many bytes the alarms add up: with H = 8 and n = 20 a
/// full-entropy stream trips the RCT about once per 2^24 bytes (16 MiB). That is why
/// ``HealthMonitor`` discards the failing block and marks the source failed only after several
/// failing blocks in a row; raise n (up to 60) to make single alarms rarer.
public struct ContinuousHealthTests: Sendable {
    /// The APT window for non-binary (byte) samples.
    public static let adaptiveProportionWindow = 512

    /// Claimed min-entropy per byte, 0 < H ≤ 8.
    public let minEntropyPerByte: Double
    /// n in α = 2^−n.
    public let falsePositiveExponent: Int
    /// The RCT cutoff C.
    public let repetitionCutoff: Int
    /// The APT cutoff C.
    public let adaptiveProportionCutoff: Int

    // RCT state: the last byte and how many times in a row it has occurred.
    var lastByte: UInt8 = 0
    var repetitions = 0
    // APT state: position in the window, the window's first byte, and its count so far.
    var windowPosition = 0
    var windowValue: UInt8 = 0
    var windowCount = 0
    /// Which code screens the RCT and counts the APT (`HealthKernels`).
    private(set) var tier: HealthKernelTier

    /// Tests for a source claiming `minEntropyPerByte` bits per byte with α = 2^−`falsePositiveExponent`.
    ///
    /// - Throws: ``EntropySourceError/invalidParameter(name:value:)`` unless 0 < H ≤ 8 and
    ///   20 ≤ n ≤ 60 (SP 800-90B recommends 2^−20 ≥ α ≥ 2^−40; beyond 60 the cutoffs stop changing
    ///   at useful entropies).
    public init(minEntropyPerByte: Double = 8, falsePositiveExponent: Int = 20) throws(EntropySourceError) {
        guard minEntropyPerByte > 0, minEntropyPerByte <= 8 else {
            throw .invalidParameter(name: "minEntropyPerByte (millibits)", value: Int(minEntropyPerByte * 1000))
        }
        guard (20...60).contains(falsePositiveExponent) else {
            throw .invalidParameter(name: "falsePositiveExponent", value: falsePositiveExponent)
        }
        self.minEntropyPerByte = minEntropyPerByte
        self.falsePositiveExponent = falsePositiveExponent
        self.repetitionCutoff = Self.repetitionCutoff(minEntropy: minEntropyPerByte, exponent: falsePositiveExponent)
        self.adaptiveProportionCutoff = Self.adaptiveProportionCutoff(
            minEntropy: minEntropyPerByte, exponent: falsePositiveExponent, window: Self.adaptiveProportionWindow)
        self.tier = HealthKernels.selected
    }

    /// Tests on `tier`, or the best tier below it the CPU supports (tests run every tier).
    init(
        minEntropyPerByte: Double = 8, falsePositiveExponent: Int = 20, tier: HealthKernelTier
    ) throws(EntropySourceError) {
        self = try ContinuousHealthTests(
            minEntropyPerByte: minEntropyPerByte, falsePositiveExponent: falsePositiveExponent)
        self.tier = HealthKernels.available(tier)
    }

    /// C = 1 + ⌈n / H⌉ (SP 800-90B §4.4.1).
    public static func repetitionCutoff(minEntropy h: Double, exponent n: Int) -> Int {
        1 + Int((Double(n) / h).rounded(.up))
    }

    /// C = 2 + CRITBINOM(W − 1, 2^−H, 1 − 2^−n), capped at W (SP 800-90B §4.4.2, corrected form).
    ///
    /// The upper tail P(X > k) is summed from k = W − 1 downwards in log space (`lgamma`), as
    /// ../shared/PROTOCOLS.md §6.2 describes; CRITBINOM is the smallest k with P(X > k) ≤ α.
    public static func adaptiveProportionCutoff(minEntropy h: Double, exponent n: Int, window: Int) -> Int {
        let trials = window - 1
        let p = exp2(-h)
        let alpha = exp2(-Double(n))
        func logPMF(_ j: Int) -> Double {
            let t = Double(trials)
            let jd = Double(j)
            let logChoose = lgamma(t + 1) - lgamma(jd + 1) - lgamma(t - jd + 1)
            let tailTerm = p < 1 ? (t - jd) * log1p(-p) : (j == trials ? 0 : -.infinity)
            return logChoose + jd * log(p) + tailTerm
        }
        // tail = P(X > k); start with k = trials (tail 0) and walk down while the tail stays ≤ α.
        var tail = 0.0
        var k = trials
        while k > 0 {
            let next = tail + exp(logPMF(k))  // P(X > k − 1)
            if next > alpha { break }
            tail = next
            k -= 1
        }
        return min(window, 2 + k)
    }

    /// Runs both tests over `bytes`, carrying state across calls; returns the first failure.
    public mutating func test(_ bytes: UnsafeRawBufferPointer) -> HealthTestFailure? {
        test(bytes, fourEqualBytes: nil)
    }

    /// ``test(_:)`` with `fourEqualBytes`, whether four consecutive bytes of `bytes` are equal, when
    /// it is already known (``HealthMonitor`` has it from the FIPS kernel's pass over the block).
    mutating func test(_ bytes: UnsafeRawBufferPointer, fourEqualBytes: Bool?) -> HealthTestFailure? {
        if let failure = repetitionCount(bytes, fourEqualBytes: fourEqualBytes) { return failure }
        return adaptiveProportion(bytes)
    }

    /// RCT over `bytes`; `fourEqualBytes` as in ``test(_:fourEqualBytes:)``.
    ///
    /// The cutoff C is at least 1 + ⌈20 / 8⌉ = 4. If no four consecutive bytes are equal (known, or
    /// found by one pass of `ces_has_four_equal_bytes_*`, 32 or 64 bytes per step) and the first byte does not
    /// continue the carried run, every run here has at most three bytes and none reaches C: the state
    /// is the last byte and the length of the last run. Other calls (on full-entropy data about one
    /// 2,500-byte block in 256, whose first byte repeats the carried one) take the walk below.
    ///
    /// The walk: sixteen bytes at a time are compared with their predecessors (the same bytes one
    /// earlier) in one vector compare; if no byte equals its predecessor the run is 1. Otherwise
    /// (about 6% of chunks of random data) each half is checked without branches on the data, and
    /// only a half with two or more equal neighbours is walked byte by byte.
    mutating func repetitionCount(_ bytes: UnsafeRawBufferPointer, fourEqualBytes: Bool? = nil) -> HealthTestFailure? {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return nil }
        let n = bytes.count
        if n >= 3 && repetitionCutoff > 3 && (fourEqualBytes != nil || tier > .swift)
            && (repetitions == 0 || base.load(as: UInt8.self) != lastByte)
            && !(fourEqualBytes ?? HealthKernels.hasFourEqualBytes(base, count: n, tier: tier))
        {
            let last = base.load(fromByteOffset: n - 1, as: UInt8.self)
            let second = base.load(fromByteOffset: n - 2, as: UInt8.self)
            let third = base.load(fromByteOffset: n - 3, as: UInt8.self)
            repetitions = second != last ? 1 : third != last ? 2 : 3
            lastByte = last
            return nil
        }
        var last = lastByte
        var run = repetitions
        let cutoff = repetitionCutoff
        /// Counts one byte; true when the run reached the cutoff.
        @inline(__always) func count(_ b: UInt8) -> Bool {
            if b == last && run > 0 {
                run += 1
                return run >= cutoff
            }
            last = b
            run = 1
            return false
        }
        let sevens: UInt64 = 0x7F7F_7F7F_7F7F_7F7F
        let highs: UInt64 = 0x8080_8080_8080_8080
        var i = 0
        var failed = false
        outer: while i < bytes.count {
            if i > 0 && i + 16 <= bytes.count {
                // `last` is the byte at i − 1 here.
                let chunk = base.loadUnaligned(fromByteOffset: i, as: SIMD16<UInt8>.self)
                let predecessors = base.loadUnaligned(fromByteOffset: i - 1, as: SIMD16<UInt8>.self)
                if !any(chunk .== predecessors) {
                    run = 1
                    last = base.load(fromByteOffset: i + 15, as: UInt8.self)
                    i += 16
                    continue
                }
                // Each half: bit 7 of each byte of `equal` is set exactly when the byte equals its
                // predecessor (exact SWAR zero-byte test on x ^ (x << 8 | last)). With at most one
                // such byte the run needs no walk: it ends at 2 if the last byte equals the one
                // before, else 1 (a run inside the half is at most 2, below the cutoff of at least 4),
                // unless the first byte extends the carried run up to the cutoff.
                for _ in 0..<2 {
                    let x = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: i, as: UInt64.self))
                    let z = x ^ (x << 8 | UInt64(last))
                    let equal = ~(((z & sevens) &+ sevens) | z) & highs
                    if equal & (equal &- 1) == 0 && (equal & 0x80 == 0 || run + 1 < cutoff) {
                        run = Int(truncatingIfNeeded: equal >> 63) + 1
                        last = UInt8(truncatingIfNeeded: x >> 56)
                    } else {
                        for k in 0..<8 where count(base.load(fromByteOffset: i + k, as: UInt8.self)) {
                            failed = true
                            break outer
                        }
                    }
                    i += 8
                }
            } else {
                if count(base.load(fromByteOffset: i, as: UInt8.self)) {
                    failed = true
                    break
                }
                i += 1
            }
        }
        if failed {
            // Restart the count so the next block is judged on its own run.
            lastByte = last
            repetitions = 1
            return .repetitionCount(value: last, count: run, cutoff: cutoff)
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
            windowCount += Self.count(value, in: UnsafeRawPointer(base + i), length: end - i, tier: tier)
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

    /// The number of bytes equal to `value` among `length` bytes at `p`: with a kernel, 64 (AVX-512)
    /// or 32 (AVX2) at a time (a compare into a mask, a population count); else sixteen at a time, a vector compare
    /// gives −1 in each matching lane, subtracted from per-lane counters that are summed every 255
    /// chunks.
    static func count(
        _ value: UInt8, in p: UnsafeRawPointer, length: Int, tier: HealthKernelTier = HealthKernels.selected
    ) -> Int {
        if tier > .swift { return HealthKernels.countByte(value, in: p, count: length, tier: tier) }
        let pattern = SIMD16<UInt8>(repeating: value)
        var total = 0
        var i = 0
        while i + 16 <= length {
            var lanes = SIMD16<UInt8>.zero
            let end = min(length & ~15, i + 255 * 16)
            while i < end {
                let matches = p.loadUnaligned(fromByteOffset: i, as: SIMD16<UInt8>.self) .== pattern
                lanes &-= unsafeBitCast(matches, to: SIMD16<UInt8>.self)
                i += 16
            }
            total += Int(SIMD16<UInt16>(truncatingIfNeeded: lanes).wrappedSum())
        }
        while i < length {
            total += p.load(fromByteOffset: i, as: UInt8.self) == value ? 1 : 0
            i += 1
        }
        return total
    }
}

/// Why a ``HealthMonitor`` rejected a block or failed its source.
public enum HealthTestFailure: Hashable, Sendable, CustomStringConvertible {
    /// SP 800-90B RCT: `value` occurred `count` times in a row; the cutoff is `cutoff`.
    case repetitionCount(value: UInt8, count: Int, cutoff: Int)
    /// SP 800-90B APT: a 512-byte window's first byte, `value`, occurred `count` times (cutoff `cutoff`).
    case adaptiveProportion(value: UInt8, count: Int, cutoff: Int)
    /// FIPS 140-2 block tests failed.
    case fips(FIPSFailures)

    /// One line naming the test and its numbers.
    public var description: String {
        switch self {
        case .repetitionCount(let value, let count, let cutoff):
            return
                "repetition count test: byte 0x\(String(value, radix: 16)) repeated \(count) times (cutoff \(cutoff))"
        case .adaptiveProportion(let value, let count, let cutoff):
            return
                "adaptive proportion test: byte 0x\(String(value, radix: 16)) occurred \(count) times in a 512-byte window (cutoff \(cutoff))"
        case .fips(let failures):
            return "FIPS 140-2 block tests failed: \(failures)"
        }
    }
}
