import CEntropyShims
import EntropySourcesTestSupport
import Testing

@testable import EntropySources

#if canImport(Glibc)
    import Glibc
#endif

/// Serves a fixed byte stream once, then returns 0 bytes (which a monitor reports as an error).
struct RecordedSource: EntropySource {
    let bytes: [UInt8]
    var position = 0
    var name: String { "recorded" }
    var mayBlock: Bool { false }
    mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) throws(EntropySourceError) -> Int {
        let n = min(buffer.count, bytes.count - position)
        for i in 0..<n { buffer[i] = bytes[position + i] }
        position += n
        return n
    }
}

/// `count` bytes flush against inaccessible pages on both sides: a read past either end faults.
final class GuardedBuffer {
    let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
    let mapping: UnsafeMutableRawPointer
    let mappingSize: Int
    let pages: Int

    init(pages: Int = 1) {
        self.pages = pages
        mappingSize = (pages + 2) * pageSize
        mapping = mmap(nil, mappingSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
        precondition(mapping != MAP_FAILED)
        precondition(mprotect(mapping, pageSize, PROT_NONE) == 0)
        precondition(mprotect(mapping + (pages + 1) * pageSize, pageSize, PROT_NONE) == 0)
    }

    deinit { munmap(mapping, mappingSize) }

    /// `bytes` copied to the start of the accessible pages (`atEnd` false) or to their end.
    func place(_ bytes: [UInt8], atEnd: Bool) -> UnsafeRawBufferPointer {
        precondition(bytes.count <= pages * pageSize)
        let start = mapping + pageSize + (atEnd ? pages * pageSize - bytes.count : 0)
        bytes.withUnsafeBytes { start.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        return UnsafeRawBufferPointer(start: start, count: bytes.count)
    }
}

@Suite struct HealthKernelsTests {
    /// `VIRTRNG_HEALTH_KERNEL` caps the tier: a tier the CPU lacks falls to the best one below it,
    /// and anything else leaves the best the CPU has.
    @Test func environmentVariableCapsTheTier() {
        let cases: [(String?, HealthKernelTier, HealthKernelTier)] = [
            (nil, .avx512, .avx512), ("avx512", .avx512, .avx512), ("avx2", .avx512, .avx2),
            ("swift", .avx512, .swift), ("avx512", .avx2, .avx2), ("avx2", .avx2, .avx2), ("avx512", .swift, .swift),
            ("avx2", .swift, .swift), ("", .avx2, .avx2), ("auto", .avx512, .avx512), ("AVX2", .avx512, .avx512),
            ("sse", .avx2, .avx2),
        ]
        for (requested, supported, expected) in cases {
            #expect(HealthKernels.tier(requested: requested, supported: supported) == expected, "\(requested ?? "nil")")
        }
        #expect(HealthKernels.selected <= HealthKernels.supported)
        #expect(
            HealthKernels.supportedTiers.first == .swift && HealthKernels.supportedTiers.last == HealthKernels.supported
        )
        #if arch(x86_64) && os(Linux)
            // The CPUID check agrees with what the kernel reports of the CPU (and the OS's state saving,
            // which /proc/cpuinfo reflects by hiding flags the OS does not enable).
            if let cpuinfo = HardwareRNGSource.readAttribute("/proc/cpuinfo", maximumBytes: 1 << 20),
                let line = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
            {
                let flags = Set(line.split(separator: " ").map(String.init))
                let avx2 = flags.isSuperset(of: ["avx", "avx2", "popcnt"])
                let avx512 =
                    avx2
                    && flags.isSuperset(of: [
                        "avx512f", "avx512bw", "avx512vbmi", "avx512_vbmi2", "avx512_vpopcntdq", "avx512_bitalg",
                        "gfni",
                    ])
                let expected: HealthKernelTier = avx512 ? .avx512 : (avx2 ? .avx2 : .swift)
                #expect(HealthKernels.supported == expected, "flags: \(flags.sorted().filter { $0.hasPrefix("avx") })")
            }
        #endif
    }

    /// The kernels read nothing outside the block or buffer: each runs on data flush against an
    /// inaccessible page before and after it (a stray read faults), on blocks whose first and last
    /// words and bytes matter (uniform pairs, repeats and runs at both ends), with results equal to
    /// the portable code's.
    @Test(arguments: HealthKernelTier.allCases)
    func kernelsStayInsideTheBuffer(tier: HealthKernelTier) {
        let tier = HealthKernels.available(tier)
        let buffer = GuardedBuffer()
        var generator = SplitMix(seed: 31)
        var blocks = [randomBlock(&generator)]
        var ends = randomBlock(&generator)
        ends.replaceSubrange(0..<8, with: [0, 0, 0, 0, 0, 0, 0, 0])
        ends.replaceSubrange(2_492..<2_500, with: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
        blocks.append(ends)
        var repeats = randomBlock(&generator)
        repeats.replaceSubrange(2_496..<2_500, with: repeats[2_492..<2_496])
        blocks.append(repeats)
        for block in blocks {
            for atEnd in [false, true] {
                let placed = buffer.place(block, atEnd: atEnd)
                var kernel = FIPSTest(tier: tier)
                var portable = FIPSTest(tier: .swift)
                let got = kernel.analyze(placed)
                let want = block.withUnsafeBytes { portable.analyze($0) }
                #expect(got == want)
                #expect(kernel.lastWord == portable.lastWord)
                #expect(
                    HealthKernels.hasFourEqualBytes(placed.baseAddress!, count: placed.count, tier: tier)
                        == hasFourEqualBytes(block[...]))
            }
        }
        // The byte kernels at every length up to 100, flush with either end.
        let bytes = (0..<100).map { _ in UInt8(truncatingIfNeeded: generator.next() % 2) }
        for length in 0...100 {
            let slice = Array(bytes[0..<length])
            for atEnd in [false, true] {
                let placed = buffer.place(slice, atEnd: atEnd)
                let p = placed.baseAddress ?? UnsafeRawPointer(buffer.mapping + buffer.pageSize)
                #expect(
                    HealthKernels.hasFourEqualBytes(p, count: length, tier: tier) == hasFourEqualBytes(slice[...]),
                    "\(length)")
                #expect(
                    ContinuousHealthTests.count(1, in: p, length: length, tier: tier) == slice.filter { $0 == 1 }.count,
                    "\(length)")
            }
        }
    }

    /// A monitor serves the same bytes, statistics and events on every tier: the equivalence corpus
    /// (blocks failing each FIPS test, RCT and APT alarms) and stuck blocks, read in 7,500-byte and
    /// 100-byte requests, with a recovery policy so the run goes through failures and recoveries.
    @Test(arguments: HealthKernelTier.allCases)
    func monitorsAgreeOnEveryTier(tier: HealthKernelTier) throws {
        var stream = equivalenceCorpus().joined().map { $0 }
        stream += [UInt8](repeating: 0x5A, count: 4 * FIPSTest.blockSize)
        var generator = SplitMix(seed: 5)
        for _ in 0..<8 { stream += randomBlock(&generator) }
        let configuration = HealthMonitorConfiguration(
            rejectionsToFail: 3, recovery: .afterPassingBlocks(2, maximumFailures: 1_000))
        func run(_ tier: HealthKernelTier, request: Int) throws -> ([UInt8], HealthStatistics, [HealthEvent]) {
            let log = EventLog()
            let monitor = try HealthMonitor(
                RecordedSource(bytes: stream), configuration: configuration, kernelTier: tier, onEvent: log.handler)
            var served: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: request)
            var attempts = 0
            while attempts < 1_000_000 {
                attempts += 1
                do {
                    let n = try buffer.withUnsafeMutableBytes { try monitor.fill($0) }
                    if n == 0 { break }
                    served += buffer[0..<n]
                } catch let error as EntropySourceError {
                    // Unhealthy: the next fill reads the blocks the recovery policy needs. Any other
                    // error is the recorded stream's end.
                    guard case .unhealthy = error else { break }
                }
            }
            return (served, monitor.statistics, log.all)
        }
        for request in [7_500, 100] {
            let expected = try run(.swift, request: request)
            let got = try run(tier, request: request)
            #expect(got.0 == expected.0, "request \(request)")
            #expect(got.1 == expected.1, "request \(request)")
            #expect(got.2 == expected.2, "request \(request)")
            #expect(expected.1.rejectedByFIPS > 100 && expected.1.rejectedByRepetitionCount > 0, "\(expected.1)")
            #expect(expected.1.failures > 0 && expected.1.recoveries > 0)
        }
    }
}
