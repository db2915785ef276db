// Public because @inlinable hot paths call its static inline functions; it is our own C target,
// built for any package that depends on VirtQueue.
public import CVirtQueueAtomics

/// Descriptor flags (virtio 1.2, 2.7.5: `VIRTQ_DESC_F_NEXT`, `_WRITE`, `_INDIRECT`).
@usableFromInline
enum DescriptorFlag {
    @usableFromInline static let next: UInt16 = 1
    @usableFromInline static let write: UInt16 = 2
    @usableFromInline static let indirect: UInt16 = 4
}

/// A descriptor as read from guest memory: a private copy, so validation and use see the same values
/// however the guest rewrites the table meanwhile.
@usableFromInline
struct RawDescriptor {
    @usableFromInline let address: UInt64
    @usableFromInline let length: UInt32
    @usableFromInline let flags: UInt16
    @usableFromInline let next: UInt16

    /// Reads the 16-byte descriptor at `pointer` (le64 addr, le32 len, le16 flags, le16 next).
    @inlinable
    @inline(__always)
    init(at pointer: UnsafeRawPointer) {
        address = UInt64(littleEndian: pointer.loadUnaligned(as: UInt64.self))
        length = UInt32(littleEndian: pointer.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
        flags = UInt16(littleEndian: pointer.loadUnaligned(fromByteOffset: 12, as: UInt16.self))
        next = UInt16(littleEndian: pointer.loadUnaligned(fromByteOffset: 14, as: UInt16.self))
    }
}

/// Running totals of a chain walk that the spec bounds.
@usableFromInline
struct ChainWalkState {
    @usableFromInline let head: UInt16
    /// Sum of buffer lengths so far; at most 2^32 (2.7.5.2). Cannot overflow a UInt64: at most 65536 +
    /// 32768 descriptors of at most 2^32 - 1 bytes each are added before the bound is checked again.
    @usableFromInline var totalLength: UInt64 = 0
    @usableFromInline var sawWritable = false

    @inlinable
    init(head: UInt16) { self.head = head }
}

extension SplitQueue {
    /// Pops the next available chain into `chain`, validating all of it; returns `false` when the
    /// driver has made nothing new available.
    ///
    /// Checks, each a typed error that fails the queue: the avail index jump (at most `size` new
    /// entries), the head index, every `next` index, the step bound (at most `size` descriptors in the
    /// table, at most the table's entries in an indirect table, which catches loops), INDIRECT only when
    /// negotiated, never with NEXT and never nested, indirect table length a non-zero multiple of 16 of
    /// at most 65536 entries and inside guest memory, zero-length buffers per the configured policy,
    /// readable buffers never after writable ones, the 2^32-byte total, and every buffer inside guest
    /// memory (split into several segments where it crosses adjacent regions). The WRITE flag of a
    /// descriptor that refers to an indirect table is ignored, as 2.7.5.3.2 requires.
    ///
    /// With EVENT_IDX and notifications enabled, the queue also publishes `avail_event = nextAvail`, so
    /// the driver kicks for its next buffer (what QEMU does on every pop).
    @inlinable
    public mutating func popChain<Memory: GuestMemory>(
        into chain: DescriptorChain,
        memory: Memory
    ) throws(VirtQueueError) -> Bool {
        let rings = try ringsForAccess(memory)
        guard try pendingCount(rings) > 0 else { return false }
        let size = configuration.size
        let slot = Int(nextAvail & (size &- 1))
        let head = UInt16(littleEndian: rings.available.loadUnaligned(fromByteOffset: 4 + 2 * slot, as: UInt16.self))
        guard head < size else { throw fail(.headIndexOutOfRange(head: head, queueSize: size)) }
        do {
            try walker.walk(head: head, descriptors: rings.descriptors, into: chain, memory: memory)
        } catch {
            throw fail(error)
        }
        storedNextAvail &+= 1
        if notificationsEnabled, eventIndexNegotiated {
            // avail_event sits after the used ring's `size` elements: offset 4 + 8·size.
            virtq_store_relaxed_u16(rings.used + 4 + 8 * Int(size), nextAvail.littleEndian)
        }
        return true
    }
}

/// The rules a chain walk applies, copied out of the queue's configuration at activation: a value small
/// enough to pass in registers, so walking a chain never copies the queue.
@usableFromInline
struct ChainWalker {
    @usableFromInline let size: UInt16
    @usableFromInline let indirectAllowed: Bool
    @usableFromInline let skipZeroLength: Bool

    @inlinable
    init(_ configuration: QueueConfiguration) {
        size = configuration.size
        indirectAllowed = configuration.features.contains(.indirectDescriptors)
        skipZeroLength = configuration.zeroLengthDescriptors == .skip
    }

    @inlinable
    func walk<Memory: GuestMemory>(
        head: UInt16,
        descriptors: UnsafeMutableRawPointer,
        into chain: DescriptorChain,
        memory: Memory
    ) throws(VirtQueueError) {
        chain.begin(head: head)
        var state = ChainWalkState(head: head)
        var index = head
        // A chain in the descriptor table visits at most `size` descriptors (2.7.5.2); one more is a loop.
        var stepsLeft = UInt32(size)
        while true {
            guard stepsLeft > 0 else { throw .chainTooLong(head: head, limit: UInt32(size)) }
            stepsLeft -= 1
            let descriptor = RawDescriptor(at: descriptors + 16 * Int(index))
            let position = DescriptorPosition(index: index)
            if descriptor.flags & DescriptorFlag.indirect != 0 {
                try walkIndirect(descriptor, at: position, state: &state, into: chain, memory: memory)
                return  // an INDIRECT descriptor has no NEXT, so it ends the chain
            }
            try appendBuffer(descriptor, at: position, state: &state, into: chain, memory: memory)
            guard descriptor.flags & DescriptorFlag.next != 0 else { return }
            guard descriptor.next < size else {
                throw .nextIndexOutOfRange(position, next: descriptor.next, limit: UInt32(size))
            }
            index = descriptor.next
        }
    }

    @inlinable
    func walkIndirect<Memory: GuestMemory>(
        _ descriptor: RawDescriptor,
        at position: DescriptorPosition,
        state: inout ChainWalkState,
        into chain: DescriptorChain,
        memory: Memory
    ) throws(VirtQueueError) {
        guard indirectAllowed else { throw .indirectNotNegotiated(position) }
        guard descriptor.flags & DescriptorFlag.next == 0 else { throw .indirectWithNext(position) }
        // len is a non-zero multiple of 16 of at most 65536 entries (Linux vhost's bound; u16 `next`
        // indices cannot address more).
        guard descriptor.length != 0, descriptor.length % 16 == 0, descriptor.length / 16 <= 65536 else {
            throw .invalidIndirectTableLength(position, length: descriptor.length)
        }
        let entries = descriptor.length / 16
        let table: UnsafeMutableRawPointer
        do {
            table = try memory.hostPointer(at: descriptor.address, length: UInt64(descriptor.length))
        } catch {
            throw .descriptorNotInMemory(position, address: descriptor.address, length: UInt64(descriptor.length))
        }
        var index: UInt32 = 0
        var stepsLeft = entries  // more steps than entries is a loop
        while true {
            guard stepsLeft > 0 else { throw .chainTooLong(head: state.head, limit: entries) }
            stepsLeft -= 1
            let entry = RawDescriptor(at: table + 16 * Int(index))
            let entryPosition = DescriptorPosition(
                index: UInt16(truncatingIfNeeded: index), indirectTable: descriptor.address)
            guard entry.flags & DescriptorFlag.indirect == 0 else { throw .nestedIndirect(entryPosition) }
            try appendBuffer(entry, at: entryPosition, state: &state, into: chain, memory: memory)
            guard entry.flags & DescriptorFlag.next != 0 else { return }
            guard UInt32(entry.next) < entries else {
                throw .nextIndexOutOfRange(entryPosition, next: entry.next, limit: entries)
            }
            index = UInt32(entry.next)
        }
    }

    @inlinable
    @inline(__always)
    func appendBuffer<Memory: GuestMemory>(
        _ descriptor: RawDescriptor,
        at position: DescriptorPosition,
        state: inout ChainWalkState,
        into chain: DescriptorChain,
        memory: Memory
    ) throws(VirtQueueError) {
        let writable = descriptor.flags & DescriptorFlag.write != 0
        if writable {
            state.sawWritable = true
        } else if state.sawWritable {
            throw .readableAfterWritable(position)
        }
        guard descriptor.length > 0 else {
            if skipZeroLength { return }
            throw .zeroLengthDescriptor(position)
        }
        state.totalLength += UInt64(descriptor.length)
        guard state.totalLength <= 1 << 32 else { throw .chainLengthOverflow(head: state.head) }
        // Fast path: the whole buffer inside one region.
        if let region = memory.region(containing: descriptor.address) {
            let offset = descriptor.address &- region.guestAddress
            if UInt64(descriptor.length) <= region.size &- offset {
                let host = region.hostAddress.advanced(by: Int(truncatingIfNeeded: offset))
                guard
                    chain.append(
                        host: host, guestAddress: descriptor.address, length: descriptor.length, writable: writable)
                else { throw .tooManySegments(head: state.head, capacity: chain.capacity) }
                return
            }
        }
        try appendSplitBuffer(
            descriptor, at: position, writable: writable, head: state.head, into: chain, memory: memory)
    }

    /// The slow path: a buffer that crosses into adjacent regions becomes one segment per region; a
    /// buffer with any unmapped byte is an error.
    @usableFromInline
    func appendSplitBuffer<Memory: GuestMemory>(
        _ descriptor: RawDescriptor,
        at position: DescriptorPosition,
        writable: Bool,
        head: UInt16,
        into chain: DescriptorChain,
        memory: Memory
    ) throws(VirtQueueError) {
        let length = UInt64(descriptor.length)
        do {
            try memory.validateRange(at: descriptor.address, length: length)
        } catch {
            throw .descriptorNotInMemory(position, address: descriptor.address, length: length)
        }
        var cursor = descriptor.address
        var remaining = length
        while remaining > 0 {
            guard let region = memory.region(containing: cursor) else {
                throw .descriptorNotInMemory(position, address: descriptor.address, length: length)
            }
            let offset = cursor - region.guestAddress
            let chunk = min(remaining, region.size - offset)  // <= length < 2^32
            guard
                chain.append(
                    host: region.hostAddress.advanced(by: Int(offset)),
                    guestAddress: cursor,
                    length: UInt32(chunk),
                    writable: writable
                )
            else { throw .tooManySegments(head: head, capacity: chain.capacity) }
            remaining -= chunk
            cursor &+= chunk
        }
    }
}
