import CVirtQueueAtomics
public import VirtQueue

/// Where a simulated driver lays out a queue in guest memory.
public struct RingLayout: Hashable, Sendable {
    /// The queue configuration (size, ring addresses, features, zero-length policy).
    public var configuration: QueueConfiguration
    /// Guest addresses from which buffers and indirect tables are allocated.
    public var arena: Range<UInt64>

    /// Lays out a queue of `size` at `base`: the descriptor table, the available ring right after it,
    /// the used ring at the next 4-byte boundary (the tightest layout the spec allows), then the arena
    /// up to `end`.
    public init(
        size: UInt16,
        base: UInt64,
        end: UInt64,
        features: VirtioFeatures = [.version1],
        zeroLengthDescriptors: ZeroLengthDescriptorPolicy = .reject
    ) {
        let n = UInt64(size)
        let descriptors = base
        let available = descriptors + 16 * n
        let used = (available + 6 + 2 * n + 3) & ~3
        let arenaStart = (used + 6 + 8 * n + 63) & ~63
        configuration = QueueConfiguration(
            size: size,
            descriptorTableAddress: descriptors,
            availableRingAddress: available,
            usedRingAddress: used,
            features: features,
            zeroLengthDescriptors: zeroLengthDescriptors
        )
        arena = arenaStart..<max(arenaStart, end)
    }
}

/// Errors of the simulated driver itself (not of the device under test).
public enum SimulatedDriverError: Error, Equatable {
    /// No free descriptors for a chain of this many entries.
    case outOfDescriptors(needed: Int, free: Int)
    /// The arena has no room for `bytes` more bytes.
    case outOfArena(bytes: UInt64)
    /// The memory refused an access.
    case memory(GuestMemoryError)
}

/// The driver side of a split queue, for tests, fuzzing, benchmarks and simulated guests.
///
/// It lays out rings in a ``BufferGuestMemory`` (or any memory laid out per ``RingLayout``), posts
/// buffers the way a Linux driver does (descriptors from a free list, the head in the available ring,
/// then a release store of `avail.idx`), the way `virtio_rng` does (one 64-byte device-writable buffer),
/// and in other shapes: long chains, indirect tables, deep rings. It reads used elements back and
/// recycles their descriptors. For hostile tests it writes raw descriptors and ring fields directly.
public final class SimulatedDriver<Memory: GuestMemory> {
    /// The guest memory holding the rings.
    public let memory: Memory
    /// The layout in use.
    public let layout: RingLayout
    /// The driver's next `avail.idx` value (entries published so far, wrapping).
    public private(set) var availIndex: UInt16
    /// The used index up to which the driver has consumed used elements.
    public private(set) var lastUsedIndex: UInt16

    /// Host addresses of `avail.idx` and `used.idx`, which the driver publishes and reads with the
    /// release/acquire ordering a guest on another CPU uses.
    private let availIndexPointer: UnsafeMutableRawPointer
    private let usedIndexPointer: UnsafeMutableRawPointer
    private var freeDescriptors: [UInt16]
    private var chainDescriptors: [UInt16: [UInt16]] = [:]
    private var arenaCursor: UInt64

    /// Makes a driver over `memory` with `layout`; rings are zeroed, all descriptors free.
    /// `startIndex` starts both ring indices elsewhere than 0 (to test wrap-around at 65535).
    public init(memory: Memory, layout: RingLayout, startIndex: UInt16 = 0) throws(SimulatedDriverError) {
        self.memory = memory
        self.layout = layout
        availIndex = startIndex
        lastUsedIndex = startIndex
        freeDescriptors = (0..<layout.configuration.size).reversed()
        arenaCursor = layout.arena.lowerBound
        let c = layout.configuration
        do {
            availIndexPointer = try memory.hostPointer(at: c.availableRingAddress + 2, length: 2)
            usedIndexPointer = try memory.hostPointer(at: c.usedRingAddress + 2, length: 2)
        } catch {
            throw .memory(error)
        }
        try zero(c.descriptorTableAddress, c.descriptorTableLength)
        try zero(c.availableRingAddress, c.availableRingLength)
        try zero(c.usedRingAddress, c.usedRingLength)
        try store(startIndex, at: c.availableRingAddress + 2)
        try store(startIndex, at: c.usedRingAddress + 2)
    }

    /// A device-side queue configured for this layout and activated at the driver's start index.
    public func makeQueue() throws(VirtQueueError) -> SplitQueue {
        var queue = SplitQueue(configuration: layout.configuration)
        try queue.setIndices(nextAvail: availIndex, nextUsed: lastUsedIndex)
        try queue.activate(memory: memory)
        return queue
    }

    // MARK: Posting

    /// A buffer to post: its length and whether the device may write it.
    public struct Buffer: Hashable, Sendable {
        /// Length in bytes.
        public var length: UInt32
        /// Device-writable (`VIRTQ_DESC_F_WRITE`).
        public var writable: Bool
        /// Makes a buffer description.
        public init(length: UInt32, writable: Bool) {
            self.length = length
            self.writable = writable
        }
        /// A device-writable buffer of `length` bytes.
        public static func writable(_ length: UInt32) -> Buffer { Buffer(length: length, writable: true) }
        /// A device-readable buffer of `length` bytes.
        public static func readable(_ length: UInt32) -> Buffer { Buffer(length: length, writable: false) }
    }

    /// Posts what Linux `virtio_rng` posts: one 64-byte device-writable buffer. Returns the head.
    @discardableResult
    public func postRNGBuffer() throws(SimulatedDriverError) -> UInt16 {
        try post([.writable(64)])
    }

    /// Posts `buffers` as one chain of descriptors linked by NEXT and publishes it. Returns the head.
    @discardableResult
    public func post(_ buffers: [Buffer]) throws(SimulatedDriverError) -> UInt16 {
        guard buffers.count <= freeDescriptors.count else {
            throw .outOfDescriptors(needed: buffers.count, free: freeDescriptors.count)
        }
        let indices = (0..<buffers.count).map { _ in freeDescriptors.removeLast() }
        for (position, buffer) in buffers.enumerated() {
            let address = try allocate(UInt64(buffer.length))
            let isLast = position == buffers.count - 1
            try writeDescriptor(
                index: indices[position],
                address: address,
                length: buffer.length,
                flags: (buffer.writable ? 2 : 0) | (isLast ? 0 : 1),
                next: isLast ? 0 : indices[position + 1]
            )
        }
        chainDescriptors[indices[0]] = indices
        try publish(head: indices[0])
        return indices[0]
    }

    /// Posts `buffers` through an indirect table: one descriptor of the queue's table points to a table
    /// of `buffers.count` entries in the arena. Returns the head.
    @discardableResult
    public func postIndirect(_ buffers: [Buffer]) throws(SimulatedDriverError) -> UInt16 {
        guard let index = freeDescriptors.popLast() else { throw .outOfDescriptors(needed: 1, free: 0) }
        let table = try allocate(16 * UInt64(buffers.count))
        for (position, buffer) in buffers.enumerated() {
            let address = try allocate(UInt64(buffer.length))
            let isLast = position == buffers.count - 1
            try writeDescriptor(
                at: table + 16 * UInt64(position),
                address: address,
                length: buffer.length,
                flags: (buffer.writable ? 2 : 0) | (isLast ? 0 : 1),
                next: isLast ? 0 : UInt16(position + 1)
            )
        }
        try writeDescriptor(index: index, address: table, length: UInt32(16 * buffers.count), flags: 4, next: 0)
        chainDescriptors[index] = [index]
        try publish(head: index)
        return index
    }

    /// Puts `head` in the next available slot and publishes it by advancing `avail.idx`.
    public func publish(head: UInt16) throws(SimulatedDriverError) {
        let c = layout.configuration
        try store(head, at: c.availableRingAddress + 4 + 2 * UInt64(availIndex & (c.size - 1)))
        availIndex &+= 1
        // Release: the device that acquires avail.idx sees the descriptors and the ring entry.
        virtq_store_release_u16(availIndexPointer, availIndex.littleEndian)
    }

    // MARK: Used ring

    /// Consumes the used elements the device published since the last call, recycling their descriptors.
    public func reclaimUsed() throws(SimulatedDriverError) -> [UsedElement] {
        let c = layout.configuration
        // Acquire: the used elements and the bytes written into the buffers are visible after this.
        let usedIndex = UInt16(littleEndian: virtq_load_acquire_u16(usedIndexPointer))
        var elements: [UsedElement] = []
        while lastUsedIndex != usedIndex {
            let slot = c.usedRingAddress + 4 + 8 * UInt64(lastUsedIndex & (c.size - 1))
            let id: UInt32 = try load(at: slot)
            let length: UInt32 = try load(at: slot + 4)
            elements.append(UsedElement(head: UInt16(truncatingIfNeeded: id), length: length))
            if let indices = chainDescriptors.removeValue(forKey: UInt16(truncatingIfNeeded: id)) {
                freeDescriptors.append(contentsOf: indices)
            }
            lastUsedIndex &+= 1
        }
        return elements
    }

    /// The guest address of the first buffer of the chain headed by `head` (to check what was written).
    public func bufferAddress(ofHead head: UInt16) throws(SimulatedDriverError) -> UInt64 {
        try load(at: layout.configuration.descriptorTableAddress + 16 * UInt64(head))
    }

    // MARK: Notification fields

    /// Writes `used_event` (driver → device: "interrupt me when used.idx passes this").
    public func setUsedEvent(_ value: UInt16) throws(SimulatedDriverError) {
        let c = layout.configuration
        try store(value, at: c.availableRingAddress + 4 + 2 * UInt64(c.size))
    }

    /// Writes `avail.flags` (`1` = `VIRTQ_AVAIL_F_NO_INTERRUPT`).
    public func setAvailFlags(_ value: UInt16) throws(SimulatedDriverError) {
        try store(value, at: layout.configuration.availableRingAddress)
    }

    /// Reads `avail_event` (device → driver: "kick me when avail.idx passes this").
    public func availEvent() throws(SimulatedDriverError) -> UInt16 {
        let c = layout.configuration
        return try load(at: c.usedRingAddress + 4 + 8 * UInt64(c.size))
    }

    /// Reads `used.flags` (`1` = `VIRTQ_USED_F_NO_NOTIFY`).
    public func usedFlags() throws(SimulatedDriverError) -> UInt16 {
        try load(at: layout.configuration.usedRingAddress)
    }

    /// Whether a driver that just moved `avail.idx` from `old` to the current index must kick: by
    /// `avail_event` with EVENT_IDX, by `used.flags` without.
    public func kickNeeded(since old: UInt16) throws(SimulatedDriverError) -> Bool {
        if layout.configuration.features.contains(.eventIndex) {
            return SplitQueue.needsEvent(eventIndex: try availEvent(), newIndex: availIndex, oldIndex: old)
        }
        return try usedFlags() & 1 == 0
    }

    // MARK: Raw access for hostile tests

    /// Writes descriptor `index` of the queue's table verbatim.
    public func writeDescriptor(index: UInt16, address: UInt64, length: UInt32, flags: UInt16, next: UInt16)
        throws(SimulatedDriverError)
    {
        try writeDescriptor(
            at: layout.configuration.descriptorTableAddress + 16 * UInt64(index),
            address: address, length: length, flags: flags, next: next)
    }

    /// Writes a 16-byte descriptor verbatim at guest address `at` (for indirect tables).
    public func writeDescriptor(at location: UInt64, address: UInt64, length: UInt32, flags: UInt16, next: UInt16)
        throws(SimulatedDriverError)
    {
        try store(address, at: location)
        try store(length, at: location + 8)
        try store(flags, at: location + 12)
        try store(next, at: location + 14)
    }

    /// Writes `avail.idx` verbatim, without touching the ring entries (a hostile jump).
    public func setAvailIndex(_ value: UInt16) throws(SimulatedDriverError) {
        availIndex = value
        virtq_store_release_u16(availIndexPointer, value.littleEndian)
    }

    /// Reserves `length` bytes of the arena (16-byte aligned) and returns their guest address.
    public func allocate(_ length: UInt64) throws(SimulatedDriverError) -> UInt64 {
        let start = (arenaCursor + 15) & ~15
        guard start <= layout.arena.upperBound, length <= layout.arena.upperBound - start else {
            // Recycle the arena from its start: tests and benchmarks reuse buffers freely.
            guard length <= UInt64(layout.arena.count) else { throw .outOfArena(bytes: length) }
            arenaCursor = layout.arena.lowerBound + length
            return layout.arena.lowerBound
        }
        arenaCursor = start + length
        return start
    }

    // MARK: Memory helpers

    private func zero(_ address: UInt64, _ length: UInt64) throws(SimulatedDriverError) {
        do {
            try memory.withHostBuffers(at: address, length: length) {
                _ = $0.initializeMemory(as: UInt8.self, repeating: 0)
            }
        } catch {
            throw .memory(error)
        }
    }

    private func store<T: FixedWidthInteger>(_ value: T, at address: UInt64) throws(SimulatedDriverError) {
        do { try memory.store(littleEndian: value, at: address) } catch { throw .memory(error) }
    }

    private func load<T: FixedWidthInteger>(at address: UInt64) throws(SimulatedDriverError) -> T {
        do { return try memory.load(littleEndian: T.self, at: address) } catch { throw .memory(error) }
    }
}
