public import VirtQueue

/// A Linux `virtio_rng` guest and a virtio-rng device, both simulated, talking through a real
/// ``SplitQueue`` in ``BufferGuestMemory``.
///
/// The driver keeps one 64-byte device-writable buffer posted and kicks only when the device asks for
/// kicks; the device runs the disable → process → enable loop, fills each chain through `fill`, and
/// notifies only when the driver asks for interrupts. The report counts what crossed the queue.
public struct GuestSimulation {
    /// What a simulation did.
    public struct Report: Equatable, Sendable {
        /// Buffers the driver posted.
        public var requests = 0
        /// Bytes the device wrote and the driver received.
        public var bytes = 0
        /// Kicks the driver sent (available-buffer notifications).
        public var kicks = 0
        /// Interrupts the device raised (used-buffer notifications).
        public var interrupts = 0
        /// Buffers that came back with a used length other than what the device wrote.
        public var mismatches = 0

        /// An empty report.
        public init() {}
    }

    /// Queue size (QEMU's virtio-rng uses 8).
    public var queueSize: UInt16 = 8
    /// Buffers the driver keeps posted at once (the current Linux driver: 1).
    public var depth = 1
    /// Features negotiated.
    public var features: VirtioFeatures = [.version1, .eventIndex, .indirectDescriptors]

    /// A simulation with the defaults of a Linux guest on QEMU's virtio-rng-pci.
    public init() {}

    /// Serves `requests` 64-byte buffers; `fill` writes random bytes into each writable segment and
    /// returns how many it wrote.
    public func run(
        requests: Int,
        fill: (UnsafeMutableRawBufferPointer) -> Int
    ) throws -> Report {
        let memory = try BufferGuestMemory(size: 1 << 20, at: 0x4000_0000)
        let layout = RingLayout(
            size: queueSize, base: 0x4000_0000, end: 0x4000_0000 + (1 << 20), features: features)
        let driver = try SimulatedDriver(memory: memory, layout: layout)
        var queue = try driver.makeQueue()
        let chain = DescriptorChain(capacity: 8)
        var report = Report()
        var pendingKick = false
        var expected: [UInt16: UInt32] = [:]

        func post() throws {
            let old = driver.availIndex
            try driver.postRNGBuffer()
            report.requests += 1
            if try driver.kickNeeded(since: old) {
                report.kicks += 1
                pendingKick = true
            }
        }

        for _ in 0..<min(depth, requests) { try post() }
        while report.bytes < requests * 64 {
            if pendingKick {
                pendingKick = false
                repeat {
                    try queue.disableNotifications(memory: memory)
                    while try queue.popChain(into: chain, memory: memory) {
                        let written = chain.fillWritable(fill)
                        expected[chain.head] = UInt32(written)
                        try queue.addUsed(chain, written: UInt32(written), memory: memory)
                    }
                } while try queue.enableNotifications(memory: memory)
                if try queue.needsNotification(memory: memory) { report.interrupts += 1 }
            }
            let used = try driver.reclaimUsed()
            guard !used.isEmpty else { break }  // nothing came back: the device is stuck
            // Re-arm: "interrupt me for the next used buffer", as virtqueue_enable_cb() does.
            try driver.setUsedEvent(driver.lastUsedIndex)
            for element in used {
                if expected.removeValue(forKey: element.head) != element.length { report.mismatches += 1 }
                report.bytes += Int(element.length)
                if report.requests < requests { try post() }
            }
        }
        return report
    }
}
