import Testing
import VirtQueue
import VirtQueueTestSupport

@Suite struct GuestSimulationTests {
    static func pattern(_ buffer: UnsafeMutableRawBufferPointer) -> Int {
        buffer.initializeMemory(as: UInt8.self, repeating: 0xA5)
        return buffer.count
    }

    @Test func aLinuxGuestGetsEveryByteWithOneKickAndOneInterruptPerBuffer() throws {
        let report = try GuestSimulation().run(requests: 1000, fill: Self.pattern)
        #expect(report.requests == 1000)
        #expect(report.bytes == 64_000)
        #expect(report.kicks == 1000)
        #expect(report.interrupts == 1000)
        #expect(report.mismatches == 0)
    }

    @Test func withoutEventIndexADeeperRingBatchesInterrupts() throws {
        var simulation = GuestSimulation()
        simulation.depth = 4
        simulation.features = [.version1]
        let report = try simulation.run(requests: 1000, fill: Self.pattern)
        #expect(report.bytes == 64_000)
        #expect(report.interrupts == 250)
        #expect(report.mismatches == 0)
    }

    @Test func aDeviceThatWritesNothingStallsTheGuestAndIsReported() throws {
        // A device that writes no bytes returns len 0, which virtio-rng forbids: the guest gets nothing.
        let report = try GuestSimulation().run(requests: 10) { _ in 0 }
        #expect(report.bytes == 0)
    }
}
