/// What a ``HealthMonitor`` reports as it runs.
public enum HealthEvent: Hashable, Sendable {
    /// A block failed a test and was discarded (never served); `consecutive` counts the failing
    /// blocks in a row so far.
    case blockRejected(HealthTestFailure, consecutive: Int)
    /// The source was marked failed: fills throw ``EntropySourceError/unhealthy(source:failure:)``.
    case failed(HealthTestFailure)
    /// The recovery policy gave up for good: the monitor stays failed until ``HealthMonitor/reset()``.
    case disabled(HealthTestFailure)
    /// The source passed the recovery policy's blocks and serves again.
    case recovered(afterBlocks: Int)
}

/// A ``HealthMonitor``'s state.
public enum HealthState: Hashable, Sendable {
    /// Serving bytes of blocks that passed every test.
    case healthy
    /// Failed; the recovery policy may let it recover.
    case failed(HealthTestFailure)
    /// Failed for good; only ``HealthMonitor/reset()`` re-arms it.
    case disabled(HealthTestFailure)
}

/// How a failed ``HealthMonitor`` may recover.
public enum HealthRecoveryPolicy: Hashable, Sendable {
    /// Never by itself: the first failure latches until ``HealthMonitor/reset()``.
    case never
    /// On a later fill, after `passingBlocks` consecutive blocks pass (they are tested and discarded,
    /// not served). After `maximumFailures` failures in total the monitor is disabled for good.
    case afterPassingBlocks(Int, maximumFailures: Int)
}

/// Settings of a ``HealthMonitor``.
public struct HealthMonitorConfiguration: Hashable, Sendable {
    /// Claimed min-entropy per byte of the wrapped source, 0 < H ≤ 8 (8 for getrandom, RDRAND,
    /// RDSEED; a raw TRNG's assessed value otherwise).
    public var minEntropyPerByte: Double
    /// n in the SP 800-90B false-positive probability α = 2^−n, 20...60.
    public var falsePositiveExponent: Int
    /// Failing blocks in a row that mark the source failed (≥ 1).
    ///
    /// A full-entropy source fails some block with probability about 1e-3 (rngd's FIPS rate plus the
    /// 90B alarms), so 4 in a row happens about once per 10^12 blocks, while a stuck or broken source
    /// fails every block and is marked failed after 4 × 2,500 bytes, none of them served.
    public var rejectionsToFail: Int
    /// What happens after the source is marked failed.
    public var recovery: HealthRecoveryPolicy

    /// Defaults: H = 8, α = 2^−20, 4 failing blocks in a row, never recover by itself.
    public init(
        minEntropyPerByte: Double = 8, falsePositiveExponent: Int = 20, rejectionsToFail: Int = 4,
        recovery: HealthRecoveryPolicy = .never
    ) {
        self.minEntropyPerByte = minEntropyPerByte
        self.falsePositiveExponent = falsePositiveExponent
        self.rejectionsToFail = rejectionsToFail
        self.recovery = recovery
    }
}

/// Counters a daemon can export.
public struct HealthStatistics: Hashable, Sendable {
    /// Blocks that passed every test.
    public var blocksPassed: UInt64 = 0
    /// Blocks discarded, by cause.
    public var rejectedByRepetitionCount: UInt64 = 0
    /// See ``rejectedByRepetitionCount``.
    public var rejectedByAdaptiveProportion: UInt64 = 0
    /// See ``rejectedByRepetitionCount``.
    public var rejectedByFIPS: UInt64 = 0
    /// Times the source was marked failed.
    public var failures: UInt64 = 0
    /// Times it recovered.
    public var recoveries: UInt64 = 0

    /// All rejected blocks.
    public var blocksRejected: UInt64 { rejectedByRepetitionCount + rejectedByAdaptiveProportion + rejectedByFIPS }
}

/// Wraps a source with continuous health tests and serves only bytes of blocks that passed them.
///
/// The monitor reads its source in blocks of 2,500 bytes (20,000 bits, rng-tools' FIPS block) and
/// runs on each block, before any of its bytes is served:
///
/// - the SP 800-90B Repetition Count and Adaptive Proportion tests over byte samples, with cutoffs
///   from the claimed min-entropy per byte H and α = 2^−n (see ``ContinuousHealthTests``; for the
///   defaults H = 8, α = 2^−20: RCT C = 4, APT C = 14 in 512-byte windows);
/// - the FIPS 140-2 monobit, poker, runs, long-run and continuous tests as rng-tools runs them
///   (see ``FIPSTest``).
///
/// **Fails closed.** A block that fails any test is wiped and never served; a
/// ``HealthEvent/blockRejected(_:consecutive:)`` event is emitted and the next block is read. After
/// ``HealthMonitorConfiguration/rejectionsToFail`` failing blocks in a row the source is marked
/// failed (``HealthEvent/failed(_:)``), and fills throw ``EntropySourceError/unhealthy(source:failure:)``
/// until the ``HealthRecoveryPolicy`` lets it recover or ``reset()`` is called. Errors of the wrapped
/// source pass through unchanged.
///
/// **Observable.** ``state`` and ``statistics`` can be read at any time by the owner; events go to the
/// `onEvent` handler, called synchronously on the filling thread (keep it short). To consume them
/// as an `AsyncStream`:
///
/// ```swift
/// let (events, continuation) = AsyncStream.makeStream(of: HealthEvent.self)
/// let monitor = try HealthMonitor(GetRandomSource(), onEvent: { continuation.yield($0) })
/// ```
///
/// A request that spans whole blocks has them read straight into the caller's buffer (one read of
/// the source for up to 64 blocks) and tested there; a failing block is wiped before `fill` returns,
/// and the buffer past the returned count holds zeros or untouched bytes, never untested or failing
/// ones. The rest of a request goes through the monitor's own 2,500-byte block, allocated once;
/// fills do not allocate. Not thread-safe: one owner
/// (a pool's filler thread) calls ``fill(_:)``.
public final class HealthMonitor<Base: EntropySource>: EntropySource {
    /// The wrapped source.
    public private(set) var base: Base
    /// The settings.
    public let configuration: HealthMonitorConfiguration
    /// The current state.
    public private(set) var state: HealthState = .healthy
    /// Counters since creation.
    public private(set) var statistics = HealthStatistics()

    private var continuous: ContinuousHealthTests
    private var fips: FIPSTest
    private let block: UnsafeMutableRawBufferPointer
    /// Bytes of `block` not yet served: `block[served..<FIPSTest.blockSize]`, valid when `served` < size.
    private var served = FIPSTest.blockSize
    private var consecutiveRejections = 0
    private let onEvent: (@Sendable (HealthEvent) -> Void)?

    /// Wraps `base`.
    ///
    /// The tests run on the best kernel tier the CPU has (AVX-512, AVX2 or portable Swift; see
    /// ``FIPSTest``), capped by the environment variable `VIRTRNG_HEALTH_KERNEL` (`avx512`, `avx2` or
    /// `swift`) when it is set: all tiers give the same verdicts.
    ///
    /// - Throws: ``EntropySourceError/invalidParameter(name:value:)`` for an entropy claim, exponent,
    ///   `rejectionsToFail` or recovery block count out of range.
    public convenience init(
        _ base: Base, configuration: HealthMonitorConfiguration = .init(),
        onEvent: (@Sendable (HealthEvent) -> Void)? = nil
    ) throws(EntropySourceError) {
        try self.init(base, configuration: configuration, kernelTier: HealthKernels.selected, onEvent: onEvent)
    }

    /// Wraps `base`, testing on `kernelTier` or the best tier below it the CPU supports.
    init(
        _ base: Base, configuration: HealthMonitorConfiguration, kernelTier: HealthKernelTier,
        onEvent: (@Sendable (HealthEvent) -> Void)?
    ) throws(EntropySourceError) {
        guard configuration.rejectionsToFail >= 1 else {
            throw .invalidParameter(name: "rejectionsToFail", value: configuration.rejectionsToFail)
        }
        if case .afterPassingBlocks(let blocks, let maximum) = configuration.recovery {
            guard blocks >= 1 else { throw .invalidParameter(name: "recovery passingBlocks", value: blocks) }
            guard maximum >= 1 else { throw .invalidParameter(name: "recovery maximumFailures", value: maximum) }
        }
        self.continuous = try ContinuousHealthTests(
            minEntropyPerByte: configuration.minEntropyPerByte,
            falsePositiveExponent: configuration.falsePositiveExponent, tier: kernelTier)
        self.fips = FIPSTest(tier: kernelTier)
        self.base = base
        self.configuration = configuration
        self.onEvent = onEvent
        self.block = .allocate(byteCount: FIPSTest.blockSize, alignment: 64)
        self.block.initializeMemory(as: UInt8.self, repeating: 0)
    }

    deinit {
        block.initializeMemory(as: UInt8.self, repeating: 0)
        block.deallocate()
    }

    /// The RCT cutoff in use.
    public var repetitionCutoff: Int { continuous.repetitionCutoff }
    /// The APT cutoff in use.
    public var adaptiveProportionCutoff: Int { continuous.adaptiveProportionCutoff }

    /// `"health(<base>)"`.
    public var name: String { "health(\(base.name))" }

    /// The wrapped source's ``EntropySource/mayBlock``.
    public var mayBlock: Bool { base.mayBlock }

    /// Re-arms a failed or disabled monitor: state healthy, no rejections counted, any partly served
    /// block discarded. The test state (last byte, APT window) carries on.
    public func reset() {
        state = .healthy
        consecutiveRejections = 0
        discardBlock()
    }

    /// Fills the whole buffer with bytes of blocks that passed every test.
    ///
    /// Throws ``EntropySourceError/unhealthy(source:failure:)`` while failed, and the wrapped source's
    /// errors; if some bytes were already written when the error occurs, returns their count instead
    /// (the error recurs on the next call when it persists).
    public func fill(_ buffer: UnsafeMutableRawBufferPointer) throws(EntropySourceError) -> Int {
        guard !buffer.isEmpty else { return 0 }
        try ensureHealthy()
        var written = 0
        while written < buffer.count {
            let remaining = buffer.count - written
            if served == FIPSTest.blockSize && remaining >= FIPSTest.blockSize {
                // Whole blocks go straight into the caller's buffer: one read of the source, tests
                // in place, no copy and no wipe of passing bytes.
                let blocks = min(remaining / FIPSTest.blockSize, Self.maximumBlocksPerRead)
                let region = UnsafeMutableRawBufferPointer(
                    rebasing: buffer[written..<(written + blocks * FIPSTest.blockSize)])
                var kept = 0
                do throws(EntropySourceError) {
                    try fillWholeBlocks(region, kept: &kept)
                    written += kept
                } catch {
                    written += kept
                    if written > 0 { return written }
                    throw error
                }
                continue
            }
            if served == FIPSTest.blockSize {
                do throws(EntropySourceError) {
                    try loadPassingBlock()
                } catch {
                    if written > 0 { return written }
                    throw error
                }
            }
            let n = min(buffer.count - written, FIPSTest.blockSize - served)
            let source = UnsafeMutableRawBufferPointer(rebasing: block[served..<(served + n)])
            UnsafeMutableRawBufferPointer(rebasing: buffer[written..<(written + n)])
                .copyMemory(from: UnsafeRawBufferPointer(source))
            // Served bytes are wiped at once, so no byte can be handed out twice.
            source.initializeMemory(as: UInt8.self, repeating: 0)
            served += n
            written += n
        }
        return written
    }

    /// Throws unless healthy; a failed monitor whose policy allows it tries to recover first.
    private func ensureHealthy() throws(EntropySourceError) {
        switch state {
        case .healthy:
            return
        case .disabled(let failure):
            throw .unhealthy(source: base.name, failure: failure)
        case .failed(let failure):
            guard case .afterPassingBlocks(let needed, _) = configuration.recovery else {
                throw .unhealthy(source: base.name, failure: failure)
            }
            for _ in 0..<needed {
                try base.fillAll(block)
                if let newFailure = testBlock(UnsafeRawBufferPointer(block)) {
                    discardBlock()
                    recordRejection(newFailure)
                    state = .failed(newFailure)
                    throw .unhealthy(source: base.name, failure: newFailure)
                }
                discardBlock()
            }
            state = .healthy
            consecutiveRejections = 0
            statistics.recoveries += 1
            onEvent?(.recovered(afterBlocks: needed))
        }
    }

    /// Blocks read from the source at once when a request spans whole blocks (160 kB): bounds
    /// what a failing source makes the monitor read and discard.
    static var maximumBlocksPerRead: Int { 64 }

    /// Reads `region.count / blockSize` blocks into `region` and tests each in order, exactly as if
    /// they had been read one by one. Passing blocks are packed at the front (`kept` bytes); the
    /// rest of `region`, including every failing block, is wiped. Throws (with `kept` set) when the
    /// source fails or the monitor is marked failed.
    private func fillWholeBlocks(_ region: UnsafeMutableRawBufferPointer, kept: inout Int) throws(EntropySourceError) {
        let size = FIPSTest.blockSize
        do throws(EntropySourceError) {
            try base.fillAll(region)
        } catch {
            region.initializeMemory(as: UInt8.self, repeating: 0)
            throw error
        }
        defer {
            if kept < region.count {
                UnsafeMutableRawBufferPointer(rebasing: region[kept...]).initializeMemory(as: UInt8.self, repeating: 0)
            }
        }
        var offset = 0
        while offset < region.count {
            let candidate = UnsafeMutableRawBufferPointer(rebasing: region[offset..<(offset + size)])
            if let failure = testBlock(UnsafeRawBufferPointer(candidate)) {
                candidate.initializeMemory(as: UInt8.self, repeating: 0)
                recordRejection(failure)
                onEvent?(.blockRejected(failure, consecutive: consecutiveRejections))
                if consecutiveRejections >= configuration.rejectionsToFail {
                    markFailed(failure)
                    throw .unhealthy(source: base.name, failure: failure)
                }
            } else {
                consecutiveRejections = 0
                statistics.blocksPassed += 1
                if kept != offset {
                    // An earlier block of this read failed: close the gap (the ranges do not overlap).
                    region.baseAddress!.advanced(by: kept).copyMemory(from: candidate.baseAddress!, byteCount: size)
                }
                kept += size
            }
            offset += size
        }
    }

    /// Reads blocks until one passes; marks the source failed after too many rejections in a row.
    private func loadPassingBlock() throws(EntropySourceError) {
        while true {
            do throws(EntropySourceError) {
                try base.fillAll(block)
            } catch {
                discardBlock()
                throw error
            }
            guard let failure = testBlock(UnsafeRawBufferPointer(block)) else {
                served = 0
                consecutiveRejections = 0
                statistics.blocksPassed += 1
                return
            }
            discardBlock()
            recordRejection(failure)
            onEvent?(.blockRejected(failure, consecutive: consecutiveRejections))
            if consecutiveRejections >= configuration.rejectionsToFail {
                markFailed(failure)
                throw .unhealthy(source: base.name, failure: failure)
            }
        }
    }

    /// The 90B tests' failure first, else the FIPS tests'. The FIPS tests run on every block (which
    /// keeps their continuous-test word in step) and first: the kernel's pass also tells the RCT
    /// whether four equal bytes occur, which spares it a pass of its own.
    private func testBlock(_ bytes: UnsafeRawBufferPointer) -> HealthTestFailure? {
        var fourEqualBytes: Bool?
        let failures = fips.test(bytes, fourEqualBytes: &fourEqualBytes)
        if let failure = continuous.test(bytes, fourEqualBytes: fourEqualBytes) { return failure }
        return failures.isEmpty ? nil : .fips(failures)
    }

    private func recordRejection(_ failure: HealthTestFailure) {
        consecutiveRejections += 1
        switch failure {
        case .repetitionCount: statistics.rejectedByRepetitionCount += 1
        case .adaptiveProportion: statistics.rejectedByAdaptiveProportion += 1
        case .fips: statistics.rejectedByFIPS += 1
        }
    }

    private func markFailed(_ failure: HealthTestFailure) {
        statistics.failures += 1
        if case .afterPassingBlocks(_, let maximum) = configuration.recovery, statistics.failures < UInt64(maximum) {
            state = .failed(failure)
            onEvent?(.failed(failure))
        } else if case .never = configuration.recovery {
            state = .failed(failure)
            onEvent?(.failed(failure))
        } else {
            state = .disabled(failure)
            onEvent?(.failed(failure))
            onEvent?(.disabled(failure))
        }
    }

    private func discardBlock() {
        block.initializeMemory(as: UInt8.self, repeating: 0)
        served = FIPSTest.blockSize
    }
}
