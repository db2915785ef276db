/// A validated descriptor chain: its head, and its buffers as host memory, readable ones first.
///
/// A chain is storage the device owns and reuses: ``SplitQueue/popChain(into:memory:)`` fills it
/// without allocating, so a device that handles one chain at a time keeps one `DescriptorChain`, and
/// one that holds several keeps a small pool. Each buffer becomes one segment, or several when it
/// crosses guest-memory regions; segments point straight into guest memory (no copy).
///
/// Every segment was bounds-checked against the memory's regions when the chain was popped, so its
/// bytes stay valid for as long as that memory mapping lives. The contents describe the last chain
/// popped into this object and are replaced by the next pop.
public final class DescriptorChain {
    /// How many segments a chain holds by default: 1024, the limit QEMU applies
    /// (`VIRTQUEUE_MAX_SIZE`) and Linux's `UIO_MAXIOV`.
    public static let defaultCapacity = 1024

    /// The most segments this object can hold; a longer chain fails with
    /// ``VirtQueueError/tooManySegments(head:capacity:)``.
    public let capacity: Int
    /// The head descriptor index: what the used ring reports back to the driver.
    @inlinable public var head: UInt16 { state.pointee.head }
    /// Bytes in the device-readable buffers.
    @inlinable public var readableLength: UInt64 { state.pointee.readableLength }
    /// Bytes in the device-writable buffers.
    @inlinable public var writableLength: UInt64 { state.pointee.writableLength }

    // The chain's mutable state lives behind pointers the object owns, not in stored `var`s: a class's
    // stored properties get a dynamic exclusivity check on every access, which on the pop path costs
    // more than the validation itself.
    @usableFromInline
    let state: UnsafeMutablePointer<ChainState>
    @usableFromInline
    let storage: UnsafeMutablePointer<RawSegment>
    @usableFromInline
    var count: Int { state.pointee.count }
    @usableFromInline
    var readableCount: Int { state.pointee.readableCount }

    /// Makes empty storage for chains of up to `capacity` segments (at least 1).
    public init(capacity: Int = DescriptorChain.defaultCapacity) {
        precondition(capacity > 0, "a descriptor chain holds at least one segment")
        self.capacity = capacity
        storage = .allocate(capacity: capacity)
        state = .allocate(capacity: 1)
        state.initialize(to: ChainState())
    }

    deinit {
        storage.deallocate()
        state.deallocate()
    }

    /// The device-readable segments, in chain order.
    public var readableSegments: ReadableSegments { ReadableSegments(chain: self, range: 0..<readableCount) }

    /// The device-writable segments, in chain order.
    public var writableSegments: WritableSegments { WritableSegments(chain: self, range: readableCount..<count) }

    /// Copies `bytes` into the writable buffers starting `offset` bytes into them; returns how many bytes
    /// were copied (fewer than `bytes.count` when the buffers end first). Never writes a readable buffer.
    @inlinable
    @discardableResult
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64 = 0) -> Int {
        var skip = offset
        var copied = 0
        var index = readableCount
        while index < count, copied < bytes.count {
            let segment = storage[index]
            index += 1
            let length = UInt64(segment.length)
            if skip >= length {
                skip -= length
                continue
            }
            let room = Int(length - skip)
            let chunk = min(room, bytes.count - copied)
            segment.host.advanced(by: Int(skip)).copyMemory(from: bytes.baseAddress! + copied, byteCount: chunk)
            copied += chunk
            skip = 0
        }
        return copied
    }

    /// Lets `body` fill the writable buffers in place, one segment at a time, up to `limit` bytes in all.
    /// `body` returns how many bytes it wrote into the buffer it was given; a short count stops the fill.
    /// Returns the total written, which is what the used element should report.
    @inlinable
    public func fillWritable<E: Error>(
        upTo limit: UInt64 = .max,
        _ body: (UnsafeMutableRawBufferPointer) throws(E) -> Int
    ) throws(E) -> UInt64 {
        var total: UInt64 = 0
        var index = readableCount
        while index < count, total < limit {
            let segment = storage[index]
            index += 1
            let chunk = Int(min(UInt64(segment.length), limit - total))
            let written = try body(UnsafeMutableRawBufferPointer(start: segment.host, count: chunk))
            precondition(written >= 0 && written <= chunk, "fill wrote outside the segment it was given")
            total += UInt64(written)
            if written < chunk { break }
        }
        return total
    }

    /// Copies readable bytes, starting `offset` bytes into the readable buffers, into `buffer`; returns
    /// the count copied.
    @discardableResult
    public func read(into buffer: UnsafeMutableRawBufferPointer, from offset: UInt64 = 0) -> Int {
        var skip = offset
        var copied = 0
        for segment in readableSegments where copied < buffer.count {
            let length = UInt64(segment.bytes.count)
            if skip >= length {
                skip -= length
                continue
            }
            let chunk = min(Int(length - skip), buffer.count - copied)
            UnsafeMutableRawBufferPointer(rebasing: buffer[copied..<copied + chunk])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: segment.bytes[Int(skip)..<Int(skip) + chunk]))
            copied += chunk
            skip = 0
        }
        return copied
    }

    // MARK: Building (by the queue)

    @inlinable
    func begin(head: UInt16) {
        state.pointee = ChainState(head: head)
    }

    /// Appends a segment; the queue has already checked order (readable before writable) and the 2^32
    /// total. Returns false when the storage is full.
    @inlinable
    func append(host: UnsafeMutableRawPointer, guestAddress: UInt64, length: UInt32, writable: Bool) -> Bool {
        let count = state.pointee.count
        guard count < capacity else { return false }
        storage[count] = RawSegment(guestAddress: guestAddress, length: length, host: host)
        state.pointee.count = count + 1
        if writable {
            state.pointee.writableLength += UInt64(length)
        } else {
            state.pointee.readableCount += 1
            state.pointee.readableLength += UInt64(length)
        }
        return true
    }
}

/// What a chain holds besides its segments.
@usableFromInline
struct ChainState {
    @usableFromInline var head: UInt16
    @usableFromInline var count = 0
    @usableFromInline var readableCount = 0
    @usableFromInline var readableLength: UInt64 = 0
    @usableFromInline var writableLength: UInt64 = 0

    @inlinable
    init(head: UInt16 = 0) { self.head = head }
}

/// A segment as stored: guest address, length and the validated host address.
@usableFromInline
struct RawSegment {
    @usableFromInline let guestAddress: UInt64
    @usableFromInline let length: UInt32
    @usableFromInline let host: UnsafeMutableRawPointer

    @inlinable
    init(guestAddress: UInt64, length: UInt32, host: UnsafeMutableRawPointer) {
        self.guestAddress = guestAddress
        self.length = length
        self.host = host
    }
}

/// A device-readable piece of a chain: the device may read it and must not write it (2.7.4.2).
public struct ReadableSegment {
    /// Guest-physical address of the first byte.
    public let guestAddress: UInt64
    /// The bytes, in host memory, bounds-checked against guest memory when the chain was popped.
    public let bytes: UnsafeRawBufferPointer
}

/// A device-writable piece of a chain: the device writes random bytes (or any payload) straight into it.
public struct WritableSegment {
    /// Guest-physical address of the first byte.
    public let guestAddress: UInt64
    /// The bytes, in host memory, bounds-checked against guest memory when the chain was popped.
    public let bytes: UnsafeMutableRawBufferPointer
}

/// The readable segments of a ``DescriptorChain``; keeps the chain alive.
public struct ReadableSegments: RandomAccessCollection {
    let chain: DescriptorChain
    let range: Range<Int>
    /// The first position.
    public var startIndex: Int { 0 }
    /// One past the last position.
    public var endIndex: Int { range.count }
    /// The segment at `position`.
    public subscript(position: Int) -> ReadableSegment {
        precondition(position >= 0 && position < range.count, "segment index out of range")
        let raw = chain.storage[range.lowerBound + position]
        return ReadableSegment(
            guestAddress: raw.guestAddress,
            bytes: UnsafeRawBufferPointer(start: raw.host, count: Int(raw.length))
        )
    }
}

/// The writable segments of a ``DescriptorChain``; keeps the chain alive.
public struct WritableSegments: RandomAccessCollection {
    let chain: DescriptorChain
    let range: Range<Int>
    /// The first position.
    public var startIndex: Int { 0 }
    /// One past the last position.
    public var endIndex: Int { range.count }
    /// The segment at `position`.
    public subscript(position: Int) -> WritableSegment {
        precondition(position >= 0 && position < range.count, "segment index out of range")
        let raw = chain.storage[range.lowerBound + position]
        return WritableSegment(
            guestAddress: raw.guestAddress,
            bytes: UnsafeMutableRawBufferPointer(start: raw.host, count: Int(raw.length))
        )
    }
}
