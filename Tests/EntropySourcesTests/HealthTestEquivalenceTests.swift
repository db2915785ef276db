import CEntropyShims
import EntropySourcesTestSupport
import Testing

@testable import EntropySources

/// Bytes with each bit set with probability `ones` (a biased source).
func biasedBlock(_ generator: inout SplitMix, ones: Double) -> [UInt8] {
    let threshold = UInt64(ones * Double(UInt64(1) << 32))
    return (0..<FIPSTest.blockSize).map { _ in
        var byte: UInt8 = 0
        for _ in 0..<8 { byte = byte << 1 | (generator.next() & 0xFFFF_FFFF < threshold ? 1 : 0) }
        return byte
    }
}

/// Writes `length` bits equal to `bit` from bit position `start` (stream order), framed by the
/// opposite bit on both sides where the block has room.
func plantRun(_ block: inout [UInt8], start: Int, length: Int, bit: UInt8) {
    func set(_ position: Int, _ value: UInt8) {
        guard position >= 0, position < block.count * 8 else { return }
        let mask = UInt8(0x80) >> UInt8(position % 8)
        if value == 1 { block[position / 8] |= mask } else { block[position / 8] &= ~mask }
    }
    for position in start..<(start + length) { set(position, bit) }
    set(start - 1, bit ^ 1)
    set(start + length, bit ^ 1)
}

/// Random blocks and crafted edge cases, in a fixed order (the continuous test carries across them).
func equivalenceCorpus() -> [[UInt8]] {
    var generator = SplitMix(seed: 2026)
    var blocks: [[UInt8]] = []
    for _ in 0..<300 { blocks.append(randomBlock(&generator)) }
    for ones in [0.3, 0.45, 0.48, 0.5, 0.52, 0.55, 0.7] {
        for _ in 0..<8 { blocks.append(biasedBlock(&generator, ones: ones)) }
    }
    for value: UInt8 in [0x00, 0xFF, 0x55, 0xAA, 0x0F, 0xF0, 0x01, 0x80, 0x7E, 0x81] {
        blocks.append([UInt8](repeating: value, count: FIPSTest.blockSize))
    }
    blocks.append((0..<FIPSTest.blockSize).map { UInt8(truncatingIfNeeded: $0) })
    blocks.append((0..<FIPSTest.blockSize).map { UInt8(truncatingIfNeeded: $0 &* 37 ^ $0 >> 3) })
    // Small alphabets: many runs across byte and nibble boundaries.
    for alphabet: [UInt8] in [[0x00, 0xFF], [0x00, 0x01], [0x80, 0x7F], [0x0F, 0xF0, 0x00], [0x3C, 0xC3]] {
        for _ in 0..<4 {
            blocks.append(
                (0..<FIPSTest.blockSize).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] })
        }
    }
    // Planted runs of every length 1...40 at every bit offset, both bit values, at the block's
    // start, middle and end.
    for length in 1...40 {
        for offset in 0..<8 {
            for bit: UInt8 in [0, 1] {
                var block = randomBlock(&generator)
                let starts = [offset, 8_000 + offset, 20_000 - length - offset]
                plantRun(&block, start: starts[(length + offset + Int(bit)) % 3], length: length, bit: bit)
                blocks.append(block)
            }
        }
    }
    // Runs of 25, 26 and 27 bits at each offset, framed and unframed, near both ends.
    for length in 25...27 {
        for start in [0, 1, 7, 8, 9, 15, 19_999 - length, 20_000 - length] {
            var block = randomBlock(&generator)
            plantRun(&block, start: start, length: length, bit: UInt8(start & 1))
            blocks.append(block)
        }
    }
    // Runs across the kernel's boundaries: 64-bit words (bit 64), 64-byte chunks (bit 512), the
    // chunk flush after 13 chunks (bit 6,656), the 4-byte tail (bit 19,968), and the last word.
    for boundary in [64, 512, 6_656, 19_968, 19_992] {
        for before in [1, 6, 7, 25] {
            for length in [6, 7, 25, 26, 34] where boundary - before + length <= 20_000 {
                var block = randomBlock(&generator)
                plantRun(&block, start: boundary - before, length: length, bit: UInt8((before + length) & 1))
                blocks.append(block)
            }
        }
    }
    // Runs of exactly 25, 26 and 34 bits flush with the block's start and end, unframed outside.
    for length in [25, 26, 34] {
        for bit: UInt8 in [0, 1] {
            for start in [0, 20_000 - length] {
                var block = randomBlock(&generator)
                plantRun(&block, start: start, length: length, bit: bit)
                blocks.append(block)
            }
        }
    }
    // Long uniform stretches crossing chunks, with and without a long run: 80 equal bytes, and
    // 0x00 0x00 pairs every 64 bytes framed by 0xFF on both sides (uniform pairs, longest run 18).
    var stretch = randomBlock(&generator)
    stretch.replaceSubrange(30..<110, with: repeatElement(0xFF, count: 80))
    blocks.append(stretch)
    var pairs = randomBlock(&generator)
    for start in stride(from: 62, to: 2_497, by: 64) {
        pairs.replaceSubrange(start..<(start + 4), with: [0xFF, 0, 0, 0xFF])
    }
    blocks.append(pairs)
    var tailPair = randomBlock(&generator)
    tailPair.replaceSubrange(2_495..<2_500, with: [0x7F, 0xFF, 0xFF, 0xFF, 0x80])
    blocks.append(tailPair)
    var tailPairShort = randomBlock(&generator)
    tailPairShort.replaceSubrange(2_496..<2_500, with: [0x80, 0x00, 0x00, 0x7F])
    blocks.append(tailPairShort)
    // Uniform byte pairs that are not long runs (0x00 0x00 framed by 0xFF), at the ends.
    var framed = randomBlock(&generator)
    framed.replaceSubrange(0..<3, with: [0x00, 0x00, 0xFF])
    framed.replaceSubrange(2_497..<2_500, with: [0xFF, 0xFF, 0xFF])
    blocks.append(framed)
    // Repeated 32-bit words: inside a block at every alignment that matters, and across blocks.
    for position in [0, 4, 8, 12, 60, 124, 1_248, 2_428, 2_488, 2_492] {
        var block = randomBlock(&generator)
        block.replaceSubrange((position + 4)..<(position + 8), with: block[position..<(position + 4)])
        blocks.append(block)
    }
    var next = randomBlock(&generator)
    next.replaceSubrange(0..<4, with: blocks[blocks.count - 1][2_496..<2_500])
    blocks.append(next)
    // Equal bytes but unequal words, and a word equal to the previous one shifted by a byte.
    var shifted = randomBlock(&generator)
    shifted.replaceSubrange(101..<105, with: shifted[100..<104])
    blocks.append(shifted)
    return blocks
}

/// Whether four consecutive bytes are equal (what the kernels report to the RCT).
func hasFourEqualBytes(_ bytes: ArraySlice<UInt8>) -> Bool {
    let a = Array(bytes)
    return a.indices.dropLast(3).contains { a[$0] == a[$0 + 1] && a[$0] == a[$0 + 2] && a[$0] == a[$0 + 3] }
}

/// How the RCT learns whether a call holds four equal bytes: it walks (portable code), asks the
/// AVX2 or AVX-512 kernel, or is told (as ``HealthMonitor`` tells it from the FIPS kernel's pass).
enum RCTScreen: CaseIterable, Sendable {
    case walk, avx2, avx512, told

    /// The tier the tests run on (a kernel tier the CPU lacks falls to the best one below it).
    var tier: HealthKernelTier {
        switch self {
        case .walk, .told: .swift
        case .avx2: .avx2
        case .avx512: .avx512
        }
    }
}

@Suite struct HealthTestEquivalenceTests {
    /// The FIPS tests, on each kernel tier (where the CPU has it) and on the portable path,
    /// against the pre-rewrite implementation and the bit-by-bit oracle, block by block over the
    /// whole corpus with the continuous-test word carried along.
    @Test(arguments: HealthKernelTier.allCases)
    func fipsMatchesTheLegacyImplementationAndTheNaiveOracle(tier: HealthKernelTier) {
        let blocks = equivalenceCorpus()
        #expect(blocks.count > 1_000)
        var current = FIPSTest(tier: tier)
        #expect(current.tier == min(tier, HealthKernels.supported))
        var legacy = LegacyFIPSTest()
        var verdictOnly = FIPSTest(tier: tier)
        var failing = 0
        for (index, block) in blocks.enumerated() {
            let result = block.withUnsafeBytes { current.analyze($0) }
            let expected = block.withUnsafeBytes { legacy.analyze($0) }
            #expect(result == expected, "block \(index)")
            var fourEqualBytes: Bool?
            #expect(
                block.withUnsafeBytes { verdictOnly.test($0, fourEqualBytes: &fourEqualBytes) } == expected.failures,
                "block \(index)")
            #expect(
                fourEqualBytes == (verdictOnly.tier > .swift ? hasFourEqualBytes(block[...]) : nil), "block \(index)")
            let oracle = naiveFIPS(block)
            #expect(result.ones == oracle.ones, "block \(index)")
            #expect(result.pokerSum == oracle.poker, "block \(index)")
            #expect(result.zeroRuns == oracle.zeroRuns, "block \(index)")
            #expect(result.oneRuns == oracle.oneRuns, "block \(index)")
            #expect(result.failures.contains(.longRun) == (oracle.longest >= 26), "block \(index)")
            if !result.failures.isEmpty { failing += 1 }
        }
        // The corpus exercises failing and passing blocks of every kind.
        #expect(failing > 100 && failing < blocks.count - 300)
    }

    /// RCT and APT against the pre-rewrite implementation: low-entropy streams so both fire,
    /// several entropy claims, calls of random lengths (windows and runs cross call boundaries).
    @Test(arguments: [8.0, 4.0, 1.0, 0.5], HealthKernelTier.allCases)
    func continuousTestsMatchTheLegacyImplementation(entropy: Double, tier: HealthKernelTier) throws {
        var generator = SplitMix(seed: UInt64(entropy * 100))
        var tests = try ContinuousHealthTests(minEntropyPerByte: entropy, tier: tier)
        #expect(tests.tier == min(tier, HealthKernels.supported))
        var legacy = LegacyContinuousHealthTests(
            repetitionCutoff: tests.repetitionCutoff, adaptiveProportionCutoff: tests.adaptiveProportionCutoff)
        var failures = 0
        for alphabet in [256, 2, 3, 16, 64, 256, 4, 256] {
            let stream = (0..<60_000).map { i -> UInt8 in
                // Stretches of repeats and of a favourite byte, so both tests fire now and then.
                let r = generator.next()
                if i % 5_000 < 40 { return 0x42 }
                if r % 7 == 0 { return 0x42 }
                return UInt8(truncatingIfNeeded: (r >> 8) % UInt64(alphabet))
            }
            var offset = 0
            while offset < stream.count {
                let length = min(stream.count - offset, Int(generator.next() % 3_000))
                let got = stream.withUnsafeBytes {
                    tests.test(UnsafeRawBufferPointer(rebasing: $0[offset..<(offset + length)]))
                }
                let want = stream.withUnsafeBytes {
                    legacy.test(UnsafeRawBufferPointer(rebasing: $0[offset..<(offset + length)]))
                }
                #expect(got == want)
                #expect(tests.lastByte == legacy.lastByte && tests.repetitions == legacy.repetitions)
                #expect(tests.windowPosition == legacy.windowPosition && tests.windowCount == legacy.windowCount)
                #expect(tests.windowValue == legacy.windowValue)
                if got != nil { failures += 1 }
                offset += length
            }
        }
        #expect(failures > 0)
    }

    /// RCT and APT against the pre-rewrite implementation on full-entropy bytes with planted repeats
    /// (runs of 2 to 7 equal bytes, some straddling call boundaries), in calls of 0 to 3,000 bytes:
    /// most calls take the kernel's no-triple shortcut, the rest the walk, and the carried state
    /// must match after every call.
    @Test(arguments: [8.0, 4.0], RCTScreen.allCases)
    func continuousTestsMatchTheLegacyImplementationOnFullEntropy(entropy: Double, screen: RCTScreen) throws {
        var generator = SplitMix(seed: 7 + UInt64(entropy))
        var tests = try ContinuousHealthTests(minEntropyPerByte: entropy, tier: screen.tier)
        var legacy = LegacyContinuousHealthTests(
            repetitionCutoff: tests.repetitionCutoff, adaptiveProportionCutoff: tests.adaptiveProportionCutoff)
        var stream = (0..<300_000).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        var lengths: [Int] = []
        var position = 0
        while position < stream.count {
            let pick = generator.next() % 8
            let length = pick < 2 ? Int(generator.next() % 6) : pick < 5 ? 2_500 : Int(generator.next() % 3_001)
            lengths.append(length)
            position += length
            // A run of 2...7 equal bytes ending 0...3 bytes after this call's end.
            if pick % 2 == 0 {
                let runLength = 2 + Int(generator.next() % 6)
                let end = min(stream.count, position + Int(generator.next() % 4))
                let value = UInt8(truncatingIfNeeded: generator.next())
                for i in max(0, end - runLength)..<end { stream[i] = value }
            }
        }
        var failures = 0
        var offset = 0
        for length in lengths where offset < stream.count {
            let end = min(stream.count, offset + length)
            let told = screen == .told ? hasFourEqualBytes(stream[offset..<end]) : nil
            let got = stream.withUnsafeBytes {
                tests.test(UnsafeRawBufferPointer(rebasing: $0[offset..<end]), fourEqualBytes: told)
            }
            let want = stream.withUnsafeBytes { legacy.test(UnsafeRawBufferPointer(rebasing: $0[offset..<end])) }
            #expect(got == want, "call at \(offset)")
            #expect(tests.lastByte == legacy.lastByte && tests.repetitions == legacy.repetitions)
            #expect(tests.windowPosition == legacy.windowPosition && tests.windowCount == legacy.windowCount)
            #expect(tests.windowValue == legacy.windowValue)
            if got != nil { failures += 1 }
            offset = end
        }
        #expect(failures > 10)
    }

    /// Each tier's four-equal-bytes screen against a plain loop, at every length and alignment.
    @Test(arguments: HealthKernelTier.allCases)
    func fourEqualBytesMatchesAPlainLoop(tier: HealthKernelTier) {
        let tier = HealthKernels.available(tier)
        var generator = SplitMix(seed: 12)
        for alphabet in [2, 3, 256] {
            let bytes = (0..<600).map { _ in UInt8(truncatingIfNeeded: generator.next() % UInt64(alphabet)) }
            for start in 0..<17 {
                for length in [0, 1, 3, 4, 5, 31, 32, 34, 35, 36, 63, 64, 66, 67, 68, 127, 130, 300, 583 - start] {
                    let got = bytes.withUnsafeBytes {
                        HealthKernels.hasFourEqualBytes($0.baseAddress! + start, count: length, tier: tier)
                    }
                    #expect(got == hasFourEqualBytes(bytes[start..<(start + length)]), "\(alphabet) \(start) \(length)")
                }
            }
        }
    }

    /// The byte counter behind the APT against a plain loop, at every length and alignment.
    @Test(arguments: HealthKernelTier.allCases)
    func countMatchesAPlainLoop(tier: HealthKernelTier) {
        let tier = HealthKernels.available(tier)
        var generator = SplitMix(seed: 11)
        let bytes = (0..<10_000).map { _ in UInt8(truncatingIfNeeded: generator.next() % 3) }
        for start in 0..<17 {
            for length in [0, 1, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 511, 512 - start, 600, 4_080, 4_096, 9_000] {
                for value: UInt8 in [0, 1, 2, 3] {
                    let expected = bytes[start..<(start + length)].filter { $0 == value }.count
                    let got = bytes.withUnsafeBytes {
                        ContinuousHealthTests.count(
                            value, in: $0.baseAddress! + start, length: length, tier: tier)
                    }
                    #expect(got == expected)
                }
            }
        }
    }
}

/// A deterministic stream in which chosen 2,500-byte blocks are stuck (all 0x5A).
struct StreamWithBadBlocks: EntropySource {
    var generator = SplitMix(seed: 99)
    var position = 0
    let bad: Set<Int>
    var name: String { "stream" }
    var mayBlock: Bool { false }
    mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) throws(EntropySourceError) -> Int {
        for i in 0..<buffer.count {
            let random = UInt8(truncatingIfNeeded: generator.next())
            buffer[i] = bad.contains(position / FIPSTest.blockSize) ? 0x5A : random
            position += 1
        }
        return buffer.count
    }
}

@Suite struct HealthMonitorWholeBlockTests {
    /// Large requests (tested in the caller's buffer) serve the same bytes, statistics and events as
    /// small ones (tested in the monitor's block), including isolated failing blocks, a failing
    /// block at the start of a read and a run of failures that marks the source failed.
    @Test(arguments: [7_500, 65_536, 10_000, 2_500])
    func largeRequestsMatchSmallOnes(size: Int) throws {
        let bad: Set<Int> = [0, 3, 4, 9, 26, 27, 28, 40, 41, 42, 43, 44]
        let smallLog = EventLog()
        let largeLog = EventLog()
        let small = try HealthMonitor(StreamWithBadBlocks(bad: bad), onEvent: smallLog.handler)
        let large = try HealthMonitor(StreamWithBadBlocks(bad: bad), onEvent: largeLog.handler)
        var expected: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 100)
        while true {
            let n = try? chunk.withUnsafeMutableBytes { try small.fill($0) }
            guard let n, n > 0 else { break }
            expected += chunk[0..<n]
        }
        var served: [UInt8] = []
        var buffer = [UInt8](repeating: 0xEE, count: size)
        while true {
            let n = try? buffer.withUnsafeMutableBytes { try large.fill($0) }
            guard let n, n > 0 else { break }
            served += buffer[0..<n]
            // Past the count: nothing of a failing block (random bytes hold 0x5A one time in 256).
            #expect(buffer[n...].filter { $0 == 0x5A }.count < 100)
        }
        #expect(served == expected)
        // Blocks 40...43 fail in a row: the source is marked failed after the 33 good blocks before.
        #expect(served.count == 33 * FIPSTest.blockSize)
        #expect(large.state == .failed(.repetitionCount(value: 0x5A, count: 4, cutoff: 4)))
        #expect(large.statistics == small.statistics)
        #expect(large.state == small.state)
        #expect(largeLog.all == smallLog.all)
    }
}
