import ArgumentParser
import Glibc
import VirtQueue
import VirtQueueTestSupport

/// Runs a simulated Linux virtio_rng guest against a simulated virtio-rng device through a real
/// VirtQueue, and reports what crossed the queue.
@main
struct VirtRNGSim: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "virtrng-sim",
        abstract: "Serve a simulated virtio_rng guest through a VirtQueue split queue."
    )

    @Option(help: "64-byte buffers the guest reads.")
    var requests = 200_000

    @Option(help: "Queue size (a power of two up to 32768).")
    var queueSize: UInt16 = 8

    @Option(help: "Buffers the guest keeps posted.")
    var depth = 1

    @Flag(help: "Negotiate without VIRTIO_F_EVENT_IDX.")
    var noEventIndex = false

    mutating func run() throws {
        var simulation = GuestSimulation()
        simulation.queueSize = queueSize
        simulation.depth = depth
        if noEventIndex { simulation.features.remove(.eventIndex) }
        let clock = ContinuousClock()
        var report = GuestSimulation.Report()
        let elapsed = try clock.measure {
            // The device writes straight into guest memory: getentropy(3), 256 bytes at most a call.
            report = try simulation.run(requests: requests) { buffer in
                var written = 0
                while written < buffer.count {
                    let chunk = min(buffer.count - written, 256)
                    guard getentropy(buffer.baseAddress! + written, chunk) == 0 else { break }
                    written += chunk
                }
                return written
            }
        }
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        let rate = Int(Double(report.bytes) / seconds / 1e3)
        print("virtrng-sim: \(report.requests) requests, \(report.bytes) bytes in \(seconds) s")
        print(
            "virtrng-sim: \(rate) kB/s, "
                + "\(report.kicks) kicks, \(report.interrupts) interrupts, \(report.mismatches) length mismatches")
        guard report.bytes == requests * 64, report.mismatches == 0 else { throw ExitCode.failure }
    }
}
