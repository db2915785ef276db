import Testing
import VirtQueue
import VirtQueueTestSupport

/// A guest with one 1 MiB region at 0x10_0000 (so that address 0 is unmapped) and a queue laid out at
/// its start.
struct Guest {
    static let base: UInt64 = 0x10_0000
    static let size = 1 << 20

    let memory: BufferGuestMemory
    let driver: SimulatedDriver<BufferGuestMemory>
    var queue: SplitQueue
    let chain = DescriptorChain()

    init(
        size: UInt16 = 8,
        features: VirtioFeatures = [.version1, .indirectDescriptors, .eventIndex],
        zeroLength: ZeroLengthDescriptorPolicy = .reject,
        startIndex: UInt16 = 0
    ) throws {
        memory = try BufferGuestMemory(size: Self.size, at: Self.base)
        let layout = RingLayout(
            size: size, base: Self.base, end: Self.base + UInt64(Self.size), features: features,
            zeroLengthDescriptors: zeroLength)
        driver = try SimulatedDriver(memory: memory, layout: layout, startIndex: startIndex)
        queue = try driver.makeQueue()
    }

    /// Expects the next pop to throw exactly `expected`, and the one after it to report the failed queue.
    mutating func expectPopFailure(_ expected: VirtQueueError, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(throws: expected, sourceLocation: sourceLocation) { try queue.popChain(into: chain, memory: memory) }
        #expect(throws: VirtQueueError.needsReset(expected), sourceLocation: sourceLocation) {
            try queue.popChain(into: chain, memory: memory)
        }
    }

    mutating func pop() throws -> Bool {
        try queue.popChain(into: chain, memory: memory)
    }
}
