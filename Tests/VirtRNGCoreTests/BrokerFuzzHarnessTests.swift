import RateLimitTestSupport
import Testing
import VirtRNGCoreTestSupport

/// The fuzz harness's promises hold on random programs here too, so `make test` runs them on every
/// change, not only the fuzzer in CI.
@Suite struct BrokerFuzzHarnessTests {
    @Test(arguments: 0..<4)
    func randomProgramsKeepEveryPromise(batch: Int) {
        var rng = SplitMix64(seed: 0xB70C_E700 + UInt64(batch))
        var operations = 0
        for _ in 0..<100 {
            let count = Int(rng.next() % 600)
            let program = (0..<count).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            operations += program.withUnsafeBytes { BrokerFuzzHarness.run($0) }
        }
        // The harness traps on a broken promise; this only checks that the programs were not empty.
        #expect(operations > 5_000, "the programs ran their operations")
    }

    @Test func theCheckedInSeedsRun() {
        // An empty program and one that only connects and reads.
        #expect([UInt8]().withUnsafeBytes { BrokerFuzzHarness.run($0) } == 0)
        let connectAndRead: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 1, 3, 0, 64, 0, 11, 0, 8, 200, 11, 0]
        #expect(connectAndRead.withUnsafeBytes { BrokerFuzzHarness.run($0) } == 7)
    }
}
