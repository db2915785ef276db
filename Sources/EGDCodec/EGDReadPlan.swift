/// A large read split into EGD read commands of at most 255 bytes, the way QEMU's `rng-egd` does.
///
/// QEMU (`backends/rng-egd.c`) answers a front-end request of `size` bytes by writing, back to back,
/// `⌈size / 255⌉` headers `02 len` with `len = min(remaining, 255)`: 1000 bytes become
/// `02 FF 02 FF 02 FF 02 EB`. A plan of 0 bytes has no commands. Iterating yields the counts.
public struct EGDReadPlan: Sequence, IteratorProtocol, Sendable, Hashable {
    /// The total number of bytes to read.
    public let totalCount: Int
    /// Bytes not yet yielded by ``next()``.
    @inlinable public var remaining: Int { unplanned }
    @usableFromInline var unplanned: Int

    /// A plan for `totalCount` bytes.
    ///
    /// - Throws: ``EGDEncodingError/countOutOfRange(_:)`` when `totalCount` is negative.
    @inlinable
    public init(totalCount: Int) throws(EGDEncodingError) {
        guard totalCount >= 0 else { throw .countOutOfRange(totalCount) }
        self.totalCount = totalCount
        self.unplanned = totalCount
    }

    /// The number of commands still to come: `⌈remaining / 255⌉`.
    @inlinable
    public var commandCount: Int { remaining / 255 + (remaining % 255 == 0 ? 0 : 1) }

    /// The count of the next command, or nil when the plan is done.
    @inlinable
    public mutating func next() -> UInt8? {
        guard remaining > 0 else { return nil }
        let count = Swift.min(unplanned, 255)
        unplanned -= count
        return UInt8(truncatingIfNeeded: count)
    }

    /// The next read request, blocking (`02`) or not (`01`), or nil when the plan is done.
    @inlinable
    public mutating func nextRequest(blocking: Bool) -> EGDRequest? {
        guard let count = next() else { return nil }
        return blocking ? .readBlocking(count: count) : .readNonBlocking(count: count)
    }

    /// Writes every remaining command (2 bytes each) into `buffer`, consuming the plan, and returns
    /// the number of bytes written. Never allocates.
    ///
    /// - Throws: ``EGDEncodingError/bufferTooSmall(needed:available:)`` (and consumes nothing) when
    ///   `buffer` holds fewer than `2 × commandCount` bytes.
    @inlinable
    public mutating func encodeAll(blocking: Bool, into buffer: UnsafeMutableRawBufferPointer) throws(EGDEncodingError)
        -> Int
    {
        let (needed, overflow) = commandCount.multipliedReportingOverflow(by: 2)
        guard !overflow, buffer.count >= needed else {
            throw .bufferTooSmall(needed: overflow ? Int.max : needed, available: buffer.count)
        }
        let command = blocking ? EGDCommand.readBlocking.rawValue : EGDCommand.readNonBlocking.rawValue
        var offset = 0
        while let count = next() {
            buffer[offset] = command
            buffer[offset + 1] = count
            offset += 2
        }
        return offset
    }
}
