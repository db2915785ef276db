import CBaselines
import CVirtQueueAtomics
import VirtQueue
import VirtQueueTestSupport

/// A ring laid out once, with every available slot pre-filled, so that the steady state of each
/// benchmark iteration is: the driver publishes N more entries (one release store), the device pops N
/// chains and returns them. The Swift queue and the C baseline get identical, separate fixtures.
final class RingFixture {
    enum Shape {
        /// One 64-byte device-writable descriptor per chain: what Linux virtio_rng posts.
        case rngBuffer
        /// One chain of 128 writable descriptors linked by NEXT.
        case chain128
        /// 128 one-descriptor chains per iteration.
        case chains128
        /// One descriptor pointing to an indirect table of 128 writable entries.
        case indirectChain128
        /// 128 chains per iteration, each one descriptor pointing to a one-entry indirect table.
        case indirectChains128
    }

    static let base: UInt64 = 0x10_0000
    static let memorySize = 4 << 20

    let memory: BufferGuestMemory
    let layout: RingLayout
    let batch: UInt16
    var queue: SplitQueue
    let chain = DescriptorChain()
    let used: UnsafeMutableBufferPointer<UsedElement>
    let availIndex: UnsafeMutableRawPointer

    // The C baseline's view of the same layout (in its own memory).
    private let cMemory: BufferGuestMemory
    private let cRegions: UnsafeMutablePointer<cvq_region>
    private let cSegments: UnsafeMutablePointer<cvq_segment>
    var cQueue: cvq_queue

    init(_ shape: Shape) throws {
        let size: UInt16 = shape == .rngBuffer ? 8 : 128
        batch = shape == .chains128 || shape == .indirectChains128 ? 128 : 1
        layout = RingLayout(
            size: size, base: Self.base, end: Self.base + UInt64(Self.memorySize),
            features: [.version1, .indirectDescriptors, .eventIndex])
        memory = try Self.lay(shape, layout: layout)
        let cMemory = try Self.lay(shape, layout: layout)
        self.cMemory = cMemory
        queue = SplitQueue(configuration: layout.configuration)
        try queue.activate(memory: memory)
        used = .allocate(capacity: 128)
        used.initialize(repeating: UsedElement(head: 0, length: 0))
        availIndex = try memory.hostPointer(at: layout.configuration.availableRingAddress + 2, length: 2)

        cRegions = .allocate(capacity: 1)
        let region = cMemory.regions[0]
        cRegions.initialize(
            to: cvq_region(
                gpa: region.guestAddress, size: region.size, hva: region.hostAddress.assumingMemoryBound(to: UInt8.self)
            ))
        cSegments = .allocate(capacity: DescriptorChain.defaultCapacity)
        let c = layout.configuration
        func host(_ address: UInt64, _ length: UInt64) throws -> UnsafeMutablePointer<UInt8> {
            try cMemory.hostPointer(at: address, length: length).assumingMemoryBound(to: UInt8.self)
        }
        let descriptors = try host(c.descriptorTableAddress, c.descriptorTableLength)
        let available = try host(c.availableRingAddress, c.availableRingLength)
        let usedRing = try host(c.usedRingAddress, c.usedRingLength)
        cQueue = cvq_queue(
            regions: cRegions, nregions: 1, desc: descriptors, avail: available, used: usedRing,
            size: size, next_avail: 0, next_used: 0, head: 0, indirect: 1, event_idx: 1, notifications_enabled: 1,
            segs: cSegments, cap: Int32(DescriptorChain.defaultCapacity), nseg: 0, nreadable: 0, writable_len: 0,
            used_since_check: 0)
    }

    deinit {
        used.deallocate()
        cRegions.deallocate()
        cSegments.deallocate()
    }

    /// Writes the descriptors for `shape` and fills every available slot with the chain heads, so that
    /// publishing is just advancing `avail.idx`.
    private static func lay(_ shape: Shape, layout: RingLayout) throws -> BufferGuestMemory {
        let memory = try BufferGuestMemory(size: memorySize, at: base)
        let driver = try SimulatedDriver(memory: memory, layout: layout)
        let size = layout.configuration.size
        var heads: [UInt16] = []
        switch shape {
        case .rngBuffer:
            try driver.writeDescriptor(index: 0, address: try driver.allocate(64), length: 64, flags: 2, next: 0)
            heads = [0]
        case .chain128:
            for index in 0..<UInt16(128) {
                try driver.writeDescriptor(
                    index: index, address: try driver.allocate(64), length: 64, flags: index == 127 ? 2 : 3,
                    next: index &+ 1)
            }
            heads = [0]
        case .chains128:
            for index in 0..<UInt16(128) {
                try driver.writeDescriptor(
                    index: index, address: try driver.allocate(64), length: 64, flags: 2, next: 0)
            }
            heads = Array(0..<128)
        case .indirectChain128:
            let table = try driver.allocate(16 * 128)
            for entry in 0..<UInt16(128) {
                try driver.writeDescriptor(
                    at: table + 16 * UInt64(entry), address: try driver.allocate(64), length: 64,
                    flags: entry == 127 ? 2 : 3, next: entry &+ 1)
            }
            try driver.writeDescriptor(index: 0, address: table, length: 16 * 128, flags: 4, next: 0)
            heads = [0]
        case .indirectChains128:
            for index in 0..<UInt16(128) {
                let table = try driver.allocate(16)
                try driver.writeDescriptor(at: table, address: try driver.allocate(64), length: 64, flags: 2, next: 0)
                try driver.writeDescriptor(index: index, address: table, length: 16, flags: 4, next: 0)
            }
            heads = Array(0..<128)
        }
        for slot in 0..<UInt64(size) {
            try memory.store(
                littleEndian: heads[Int(slot) % heads.count],
                at: layout.configuration.availableRingAddress + 4 + 2 * slot)
        }
        return memory
    }

    /// The driver side of one step: `batch` more entries become available.
    @inline(__always)
    func publish() {
        let index = UInt16(littleEndian: availIndex.loadUnaligned(as: UInt16.self))
        virtq_store_release_u16(availIndex, (index &+ batch).littleEndian)
    }
}
