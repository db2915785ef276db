/// Where a descriptor sits: in the queue's descriptor table or in an indirect table.
public struct DescriptorPosition: Hashable, Sendable, CustomStringConvertible {
    /// The descriptor's index in its table.
    public var index: UInt16
    /// The guest address of the indirect table holding the descriptor, or `nil` for the queue's own
    /// descriptor table.
    public var indirectTable: UInt64?

    /// Names a descriptor of the queue's table (`indirectTable == nil`) or of an indirect table.
    public init(index: UInt16, indirectTable: UInt64? = nil) {
        self.index = index
        self.indirectTable = indirectTable
    }

    /// "descriptor 3" or "indirect descriptor 3 of table 0x1000".
    public var description: String {
        guard let table = indirectTable else { return "descriptor \(index)" }
        return "indirect descriptor \(index) of table 0x\(String(table, radix: 16))"
    }
}

/// The three areas of a split virtqueue.
public enum RingArea: Hashable, Sendable {
    /// The descriptor table (16 bytes per entry, 16-byte aligned).
    case descriptorTable
    /// The available ring, or driver area (2-byte aligned).
    case availableRing
    /// The used ring, or device area (4-byte aligned).
    case usedRing
}

/// Everything that can be wrong with a queue's configuration, its rings, or a device's use of it.
///
/// Cases caused by the guest (a malformed ring) put the queue into a failed state: every later
/// operation throws ``needsReset(_:)`` wrapping the first error until ``SplitQueue/reset()``, so the
/// device model can set `DEVICE_NEEDS_RESET`. Cases caused by the device's own calls (for example
/// ``usedLengthExceedsWritable(head:length:writable:)``) are thrown without failing the queue.
/// Section numbers refer to virtio 1.2.
public enum VirtQueueError: Error, Hashable, Sendable {
    // MARK: Configuration
    /// The queue size is not a power of two in 1...32768 (2.7).
    case invalidQueueSize(UInt32)
    /// A ring area's address is not aligned as 2.7 requires (16, 2 and 4 bytes).
    case misalignedRing(RingArea, address: UInt64, requiredAlignment: UInt64)
    /// A ring area is not inside one region of guest memory.
    case ringNotInMemory(RingArea, address: UInt64, length: UInt64)
    /// The queue is not ready (never activated, or deactivated).
    case notReady
    /// The configuration or indices were changed while the queue was ready.
    case changeWhileReady
    /// Packed rings were negotiated; this type implements split rings only.
    case packedRingNotSupported

    // MARK: Available ring
    /// `avail.idx` moved more than a queue's worth past the device's next index (2.7.13.3).
    case availIndexJump(availIndex: UInt16, nextAvail: UInt16, queueSize: UInt16)
    /// The available ring names a head descriptor outside the table (2.7.13).
    case headIndexOutOfRange(head: UInt16, queueSize: UInt16)

    // MARK: Descriptor chains
    /// A descriptor's `next` is outside its table (the queue's, or an indirect table of `limit` entries).
    case nextIndexOutOfRange(DescriptorPosition, next: UInt16, limit: UInt32)
    /// The chain visits more descriptors than its table holds: a loop, or longer than the spec allows
    /// (2.7.5.2, 2.7.5.3.1).
    case chainTooLong(head: UInt16, limit: UInt32)
    /// The chain's buffers add up to more than 2^32 bytes (2.7.5.2).
    case chainLengthOverflow(head: UInt16)
    /// A buffer descriptor has length zero and the queue's policy rejects that (as QEMU does).
    case zeroLengthDescriptor(DescriptorPosition)
    /// A device-readable descriptor follows a device-writable one (2.7.5.2).
    case readableAfterWritable(DescriptorPosition)
    /// An INDIRECT descriptor was used without `VIRTIO_F_INDIRECT_DESC` (2.7.5.3.1).
    case indirectNotNegotiated(DescriptorPosition)
    /// An indirect table contains an INDIRECT descriptor (2.7.5.3.1: one table per chain).
    case nestedIndirect(DescriptorPosition)
    /// A descriptor sets both INDIRECT and NEXT (2.7.5.3.1).
    case indirectWithNext(DescriptorPosition)
    /// An indirect table length is zero, not a multiple of 16, or above 65536 entries (2.7.5.3).
    case invalidIndirectTableLength(DescriptorPosition, length: UInt32)
    /// A buffer or an indirect table is not entirely inside guest memory.
    case descriptorNotInMemory(DescriptorPosition, address: UInt64, length: UInt64)
    /// The chain has more segments than the ``DescriptorChain`` given to hold it.
    case tooManySegments(head: UInt16, capacity: Int)

    // MARK: Device-side misuse (the queue keeps working)
    /// A used element names a head outside the table.
    case usedHeadOutOfRange(head: UInt16, queueSize: UInt16)
    /// A used length is larger than the chain's device-writable bytes (2.7.8: never report more
    /// than was written; released Linux drivers trust it).
    case usedLengthExceedsWritable(head: UInt16, length: UInt32, writable: UInt64)

    // MARK: Failed state
    /// The queue failed earlier with the wrapped error and refuses work until reset.
    indirect case needsReset(VirtQueueError)
}
