import EntropySourcesTestSupport
import Foundation
import Synchronization
import Testing

@testable import EntropySources

/// A bit-by-bit FIPS 140-2 oracle written straight from the definitions (per-block runs, MSB first).
func naiveFIPS(_ block: [UInt8]) -> (ones: Int, poker: Int, zeroRuns: [Int], oneRuns: [Int], longest: Int) {
    var bits: [Int] = []
    for byte in block { for j in (0..<8).reversed() { bits.append(Int(byte >> UInt8(j)) & 1) } }
    let ones = bits.reduce(0, +)
    var f = [Int](repeating: 0, count: 16)
    for byte in block {
        f[Int(byte >> 4)] += 1
        f[Int(byte & 15)] += 1
    }
    var runs = [[Int](repeating: 0, count: 6), [Int](repeating: 0, count: 6)]
    var longest = 0
    var i = 0
    while i < bits.count {
        var j = i
        while j < bits.count && bits[j] == bits[i] { j += 1 }
        runs[bits[i]][min(j - i, 6) - 1] += 1
        longest = max(longest, j - i)
        i = j
    }
    return (ones, f.map { $0 * $0 }.reduce(0, +), runs[0], runs[1], longest)
}

func randomBlock(_ generator: inout SplitMix) -> [UInt8] {
    (0..<FIPSTest.blockSize).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
}

/// A source whose behaviour can be switched between good and stuck while a monitor owns it.
final class SwitchableSource: EntropySource, @unchecked Sendable {
    // @unchecked Sendable: `stuck` is atomic; the getrandom source is used by the monitor's owner only.
    let stuck = Atomic<Bool>(false)
    var good = GetRandomSource()
    var name: String { "switchable" }
    var mayBlock: Bool { false }
    func fill(_ buffer: UnsafeMutableRawBufferPointer) throws(EntropySourceError) -> Int {
        if stuck.load(ordering: .relaxed) {
            buffer.initializeMemory(as: UInt8.self, repeating: 0x5A)
            return buffer.count
        }
        return try good.fill(buffer)
    }
}

final class EventLog: Sendable {
    let events = Mutex<[HealthEvent]>([])
    var handler: @Sendable (HealthEvent) -> Void { { event in self.events.withLock { $0.append(event) } } }
    var all: [HealthEvent] { events.withLock { $0 } }
}

@Suite struct ContinuousHealthTestsTests {
    /// ../shared/PROTOCOLS.md §6.1/6.2 (α = 2^-20; APT in the corrected form, W = 512).
    @Test(arguments: [
        (8.0, 4, 14), (7.0, 4, 18), (6.0, 5, 26), (5.0, 5, 40), (4.0, 6, 63), (3.0, 8, 104), (2.0, 11, 178),
        (1.0, 21, 311), (0.5, 41, 411),
    ])
    func cutoffsMatchTheReferenceTable(entropy: Double, rct: Int, apt: Int) throws {
        let tests = try ContinuousHealthTests(minEntropyPerByte: entropy, falsePositiveExponent: 20)
        #expect(tests.repetitionCutoff == rct)
        #expect(tests.adaptiveProportionCutoff == apt)
    }

    @Test func cutoffsForOtherAlphas() {
        #expect(ContinuousHealthTests.adaptiveProportionCutoff(minEntropy: 1, exponent: 30, window: 512) == 325)
        #expect(ContinuousHealthTests.repetitionCutoff(minEntropy: 1, exponent: 30) == 31)
        #expect(ContinuousHealthTests.adaptiveProportionCutoff(minEntropy: 1, exponent: 40, window: 1024) == 626)
    }

    @Test func rejectsOutOfRangeParameters() {
        #expect(throws: EntropySourceError.invalidParameter(name: "falsePositiveExponent", value: 10)) {
            _ = try ContinuousHealthTests(falsePositiveExponent: 10)
        }
        #expect(throws: EntropySourceError.invalidParameter(name: "minEntropyPerByte (millibits)", value: 9000)) {
            _ = try ContinuousHealthTests(minEntropyPerByte: 9)
        }
    }

    @Test(arguments: [1, 3, 7, 8, 9, 100])
    func repetitionCountFindsRunAcrossChunkAndCallBoundaries(offset: Int) throws {
        var generator = SplitMix(seed: UInt64(offset))
        var bytes = (0..<200).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        // Make every neighbour differ, then plant a run of exactly C = 4 equal bytes at `offset`.
        for i in 1..<bytes.count where bytes[i] == bytes[i - 1] { bytes[i] = bytes[i - 1] &+ 1 }
        for i in offset..<(offset + 4) { bytes[i] = 0x42 }
        if bytes[offset - 1] == 0x42 { bytes[offset - 1] = 0x41 }
        if bytes[offset + 4] == 0x42 { bytes[offset + 4] = 0x43 }
        for split in [0, offset + 2, 64] {
            var tests = try ContinuousHealthTests()
            let first = bytes.withUnsafeBytes { tests.test(UnsafeRawBufferPointer(rebasing: $0[0..<split])) }
            let second = first ?? bytes.withUnsafeBytes { tests.test(UnsafeRawBufferPointer(rebasing: $0[split...])) }
            #expect(second == .repetitionCount(value: 0x42, count: 4, cutoff: 4))
        }
        // Three in a row pass.
        bytes[offset + 3] = 0x40
        if bytes[offset + 4] == 0x40 { bytes[offset + 4] = 0x44 }
        var tests = try ContinuousHealthTests()
        #expect(bytes.withUnsafeBytes { tests.repetitionCount($0) } == nil)
    }

    @Test func adaptiveProportionCountsTheWindowsFirstByte() throws {
        var generator = SplitMix(seed: 9)
        var window = (0..<512).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        for i in 0..<512 where window[i] == 0x77 { window[i] = 0x78 }
        window[0] = 0x77
        // 14 occurrences of the first byte, spread out so the RCT does not fire.
        for k in 1..<14 { window[k * 30] = 0x77 }
        var tests = try ContinuousHealthTests()
        #expect(
            window.withUnsafeBytes { tests.adaptiveProportion($0) }
                == .adaptiveProportion(value: 0x77, count: 14, cutoff: 14))
        window[13 * 30] = 0x78
        var passing = try ContinuousHealthTests()
        #expect(window.withUnsafeBytes { passing.adaptiveProportion($0) } == nil)
    }
}

@Suite struct FIPSTestTests {
    @Test func statisticsMatchANaiveOracle() {
        var generator = SplitMix(seed: 42)
        var blocks = (0..<20).map { _ in randomBlock(&generator) }
        blocks.append([UInt8](repeating: 0, count: FIPSTest.blockSize))
        blocks.append([UInt8](repeating: 0xFF, count: FIPSTest.blockSize))
        blocks.append((0..<FIPSTest.blockSize).map { $0 % 2 == 0 ? 0xAA : 0x55 })
        blocks.append((0..<FIPSTest.blockSize).map { UInt8(truncatingIfNeeded: $0) })
        var withRuns = randomBlock(&generator)
        withRuns.replaceSubrange(100..<104, with: [0x80, 0x00, 0x00, 0x01])  // a run of 7+8+8+7 = 30 zeros
        blocks.append(withRuns)
        var almost = randomBlock(&generator)
        almost.replaceSubrange(200..<204, with: [0xF0, 0x00, 0x00, 0x1F])  // exactly 4+16+3 = 23... plus neighbours
        blocks.append(almost)
        for block in blocks {
            var test = FIPSTest()
            let result = block.withUnsafeBytes { test.analyze($0) }
            let oracle = naiveFIPS(block)
            #expect(result.ones == oracle.ones)
            #expect(result.pokerSum == oracle.poker)
            #expect(result.zeroRuns == oracle.zeroRuns)
            #expect(result.oneRuns == oracle.oneRuns)
            #expect(result.failures.contains(.longRun) == (oracle.longest >= 26))
            #expect(result.failures.contains(.monobit) == !FIPSTest.monobitRange.contains(oracle.ones))
        }
    }

    @Test func longRunBoundaryIs26() {
        var generator = SplitMix(seed: 5)
        for length in [25, 26] {
            var block = randomBlock(&generator)
            // Bits 800..<800+length are zero, framed by ones.
            var bits: [Int] = []
            for byte in block { for j in (0..<8).reversed() { bits.append(Int(byte >> UInt8(j)) & 1) } }
            bits[799] = 1
            for i in 800..<(800 + length) { bits[i] = 0 }
            bits[800 + length] = 1
            block = stride(from: 0, to: bits.count, by: 8).map { i in
                UInt8(bits[i..<(i + 8)].reduce(0) { $0 << 1 | $1 })
            }
            var test = FIPSTest()
            let failures = block.withUnsafeBytes { test.test($0) }
            #expect(failures.contains(.longRun) == (length == 26 || naiveFIPS(block).longest >= 26))
        }
    }

    @Test func continuousTestCarriesAcrossBlocks() {
        var generator = SplitMix(seed: 6)
        let first = randomBlock(&generator)
        var second = randomBlock(&generator)
        second.replaceSubrange(0..<4, with: first[2496..<2500])
        var test = FIPSTest()
        #expect(!first.withUnsafeBytes { test.test($0) }.contains(.continuousRun))
        #expect(second.withUnsafeBytes { test.test($0) }.contains(.continuousRun))
    }
}

@Suite struct HealthMonitorTests {
    @Test func stuckByteIsCaughtInTheFirstWindowAndNeverServed() throws {
        let log = EventLog()
        let monitor = try HealthMonitor(FaultySource.stuck(0x00), onEvent: log.handler)
        var bytes = [UInt8](repeating: 0xEE, count: 64)
        #expect(
            throws: EntropySourceError.unhealthy(
                source: "faulty", failure: .repetitionCount(value: 0, count: 4, cutoff: 4))
        ) {
            _ = try bytes.withUnsafeMutableBytes { try monitor.fill($0) }
        }
        #expect(bytes.allSatisfy { $0 == 0xEE })  // nothing written
        let events = log.all
        #expect(events.count == 5)
        #expect(events.first == .blockRejected(.repetitionCount(value: 0, count: 4, cutoff: 4), consecutive: 1))
        #expect(events.last == .failed(.repetitionCount(value: 0, count: 4, cutoff: 4)))
        #expect(monitor.state == .failed(.repetitionCount(value: 0, count: 4, cutoff: 4)))
        #expect(monitor.statistics.blocksPassed == 0)
        // Latched (policy .never): later fills throw without reading.
        #expect(throws: EntropySourceError.self) { _ = try bytes.withUnsafeMutableBytes { try monitor.fill($0) } }
    }

    @Test func biasOf55PercentFailsWithinAFewBlocks() throws {
        let log = EventLog()
        let monitor = try HealthMonitor(FaultySource.biased(onesProbability: 0.55), onEvent: log.handler)
        var bytes = [UInt8](repeating: 0, count: 64)
        #expect(throws: EntropySourceError.self) { _ = try bytes.withUnsafeMutableBytes { try monitor.fill($0) } }
        guard case .failed(.fips(let failures)) = monitor.state else {
            Issue.record("expected a FIPS failure, got \(monitor.state)")
            return
        }
        #expect(failures.contains(.monobit))
        #expect(monitor.statistics.rejectedByFIPS == 4)
        #expect(monitor.statistics.blocksPassed == 0)
    }

    @Test func goodDataPassesWithTheExpectedFalsePositiveRate() throws {
        // 2,000 blocks (5 MB) of getrandom. Expected rejections: FIPS about 1 block in 1,250 (1.6),
        // RCT 5e6 × 2^-24 (0.3), APT below 0.01. Poisson(2) exceeds 12 with probability < 1e-6.
        let log = EventLog()
        let monitor = try HealthMonitor(GetRandomSource(), onEvent: log.handler)
        var bytes = [UInt8](repeating: 0, count: 64 * 1024)
        for _ in 0..<(2_000 * FIPSTest.blockSize / bytes.count) {
            try bytes.withUnsafeMutableBytes { try monitor.fillAll($0) }
        }
        let stats = monitor.statistics
        #expect(stats.blocksRejected <= 12, "rejections: \(stats)")
        #expect(stats.failures == 0)
        #expect(monitor.state == .healthy)
        print(
            "good data: \(stats.blocksPassed) blocks passed, rejected: RCT \(stats.rejectedByRepetitionCount), APT \(stats.rejectedByAdaptiveProportion), FIPS \(stats.rejectedByFIPS)"
        )
    }

    @Test func isolatedRejectionIsDiscardedWithoutFailingTheSource() throws {
        // One stuck block between good ones: rejected, skipped, never served.
        var steps: [ScriptedSource.Step] = [.bytes(FIPSTest.blockSize, value: 9)]
        var generator = SplitMix(seed: 77)
        let good = randomBlock(&generator)
        _ = good
        steps.append(.error(.wouldBlock(source: "scripted")))
        let log = EventLog()
        let monitor = try HealthMonitor(ScriptedSource(steps), onEvent: log.handler)
        var bytes = [UInt8](repeating: 0, count: 16)
        #expect(throws: EntropySourceError.wouldBlock(source: "scripted")) {
            _ = try bytes.withUnsafeMutableBytes { try monitor.fill($0) }
        }
        #expect(log.all == [.blockRejected(.repetitionCount(value: 9, count: 4, cutoff: 4), consecutive: 1)])
        #expect(monitor.state == .healthy)
        #expect(bytes.allSatisfy { $0 == 0 })
    }

    @Test func recoversAfterPassingBlocksThenDisablesAfterMaximumFailures() throws {
        let source = SwitchableSource()
        let log = EventLog()
        let monitor = try HealthMonitor(
            source, configuration: .init(rejectionsToFail: 2, recovery: .afterPassingBlocks(3, maximumFailures: 2)),
            onEvent: log.handler)
        var bytes = [UInt8](repeating: 0, count: 4096)
        try bytes.withUnsafeMutableBytes { try monitor.fillAll($0) }
        source.stuck.store(true, ordering: .relaxed)
        let stuck = HealthTestFailure.repetitionCount(value: 0x5A, count: 4, cutoff: 4)
        // The rest of the current block (passed earlier) may still be served; then the failure.
        #expect(throws: EntropySourceError.unhealthy(source: "switchable", failure: stuck)) {
            for _ in 0..<4 { try bytes.withUnsafeMutableBytes { try monitor.fillAll($0) } }
        }
        #expect(monitor.state == .failed(stuck))
        // Still stuck: recovery attempt fails.
        #expect(throws: EntropySourceError.self) { _ = try bytes.withUnsafeMutableBytes { try monitor.fill($0) } }
        source.stuck.store(false, ordering: .relaxed)
        try bytes.withUnsafeMutableBytes { try monitor.fillAll($0) }
        #expect(monitor.state == .healthy)
        #expect(log.all.contains(.recovered(afterBlocks: 3)))
        // Second failure reaches maximumFailures: disabled for good, even once the data is good again.
        source.stuck.store(true, ordering: .relaxed)
        #expect(throws: EntropySourceError.self) {
            for _ in 0..<4 { try bytes.withUnsafeMutableBytes { try monitor.fillAll($0) } }
        }
        #expect(monitor.state == .disabled(stuck))
        source.stuck.store(false, ordering: .relaxed)
        #expect(throws: EntropySourceError.unhealthy(source: "switchable", failure: stuck)) {
            _ = try bytes.withUnsafeMutableBytes { try monitor.fill($0) }
        }
        #expect(log.all.last == .disabled(stuck))
        monitor.reset()
        try bytes.withUnsafeMutableBytes { try monitor.fillAll($0) }
        #expect(monitor.state == .healthy)
    }

    @Test func eventsArriveOnAnAsyncStream() async throws {
        let (events, continuation) = AsyncStream.makeStream(of: HealthEvent.self)
        let monitor = try HealthMonitor(FaultySource.stuck(0xFF), onEvent: { continuation.yield($0) })
        var bytes = [UInt8](repeating: 0, count: 8)
        #expect(throws: EntropySourceError.self) { _ = try bytes.withUnsafeMutableBytes { try monitor.fill($0) } }
        continuation.finish()
        var received: [HealthEvent] = []
        for await event in events { received.append(event) }
        #expect(received.count == 5)
        #expect(received.last == .failed(.repetitionCount(value: 0xFF, count: 4, cutoff: 4)))
    }

    @Test func servedBytesEqualTheSourcesPassingBlocks() throws {
        // Deterministic good data: the monitor serves exactly the source's bytes, in order, once.
        let monitor = try HealthMonitor(FaultySource.pseudoRandom(seed: 3))
        var reference = FaultySource.pseudoRandom(seed: 3)
        var expected = [UInt8](repeating: 0, count: 3 * FIPSTest.blockSize)
        try expected.withUnsafeMutableBytes { try reference.fillAll($0) }
        var served: [UInt8] = []
        for size in [1, 2, 3, 7, 64, 2_500, 4_000] where served.count < expected.count {
            var chunk = [UInt8](repeating: 0, count: min(size, expected.count - served.count))
            try chunk.withUnsafeMutableBytes { try monitor.fillAll($0) }
            served += chunk
        }
        #expect(monitor.statistics.blocksRejected == 0)
        #expect(served == Array(expected[0..<served.count]))
    }
}
