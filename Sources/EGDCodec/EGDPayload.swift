/// Up to 255 bytes of message data, stored inline: no heap allocation, ever.
///
/// Every EGD data field is counted by one byte, so 255 bytes is the most any message carries
/// (PROTOCOLS.md §1, "Limits"). Payloads are the data of writes (`03`), of read answers and the
/// text of a PID answer. The storage is a fixed 255-byte `InlineArray`; only the first ``count``
/// bytes are meaningful, and equality and hashing look at those alone.
public struct EGDPayload: Sendable {
    /// The most bytes one EGD message can carry: 255.
    public static let capacity = 255

    @usableFromInline var storage: InlineArray<255, UInt8>
    @usableFromInline var length: UInt8

    /// An empty payload.
    @inlinable
    public init() {
        storage = InlineArray(repeating: 0)
        length = 0
    }

    /// A payload holding `bytes`.
    ///
    /// - Throws: ``EGDEncodingError/payloadTooLong(count:)`` when `bytes` holds more than 255 bytes.
    @inlinable
    public init(_ bytes: some Collection<UInt8>) throws(EGDEncodingError) {
        let count = bytes.count
        guard count <= Self.capacity else { throw .payloadTooLong(count: count) }
        self.init()
        appendUnchecked(contentsOf: bytes)
    }

    /// Appends one byte.
    ///
    /// - Throws: ``EGDEncodingError/payloadTooLong(count:)`` (count 256) when the payload is full.
    @inlinable
    public mutating func append(_ byte: UInt8) throws(EGDEncodingError) {
        guard length < 255 else { throw .payloadTooLong(count: Self.capacity + 1) }
        appendUnchecked(byte)
    }

    /// Appends `bytes`, copying once when they are contiguous.
    ///
    /// - Throws: ``EGDEncodingError/payloadTooLong(count:)`` (and appends nothing) when the result
    ///   would exceed 255 bytes.
    @inlinable
    public mutating func append(contentsOf bytes: some Collection<UInt8>) throws(EGDEncodingError) {
        let total = count + bytes.count
        guard total <= Self.capacity else { throw .payloadTooLong(count: total) }
        appendUnchecked(contentsOf: bytes)
    }

    /// Appends `bytes`; the caller guarantees that `count + bytes.count ≤ 255`.
    @inlinable
    mutating func appendUnchecked(contentsOf bytes: some Collection<UInt8>) {
        let copied: Void? = bytes.withContiguousStorageIfAvailable { source in
            appendUnchecked(UnsafeRawBufferPointer(source))
        }
        if copied == nil {
            for byte in bytes { appendUnchecked(byte) }
        }
    }

    /// Appends raw bytes with one copy; traps (never corrupts memory) if they do not fit.
    @inlinable
    mutating func appendUnchecked(_ source: UnsafeRawBufferPointer) {
        let start = Int(length)
        precondition(source.count <= Self.capacity - start, "EGDPayload overflow")
        guard let base = source.baseAddress, source.count > 0 else { return }
        var span = storage.mutableSpan
        span.withUnsafeMutableBytes { destination in
            // In bounds: start + source.count ≤ 255 by the precondition above.
            destination.baseAddress.unsafelyUnwrapped.advanced(by: start)
                .copyMemory(from: base, byteCount: source.count)
        }
        length = UInt8(truncatingIfNeeded: start + source.count)
    }

    /// Appends one byte; traps if the payload is full.
    @inlinable
    mutating func appendUnchecked(_ byte: UInt8) {
        storage[Int(length)] = byte
        length &+= 1
    }

    /// Empties the payload, keeping its storage.
    @inlinable
    mutating func removeAll() { length = 0 }

    /// Calls `body` with the payload's bytes; the pointer is valid only during the call.
    @inlinable
    public func withUnsafeBytes<Value, Failure: Error>(
        _ body: (UnsafeRawBufferPointer) throws(Failure) -> Value
    ) throws(Failure) -> Value {
        let count = Int(length)
        let span = storage.span
        // Collect the body's outcome inside the (non-throwing) span access, then rethrow it typed.
        var outcome: Swift.Result<Value, Failure>?
        span.withUnsafeBytes { all in
            let bytes = UnsafeRawBufferPointer(rebasing: all[0..<count])
            do throws(Failure) {
                outcome = .success(try body(bytes))
            } catch {
                outcome = .failure(error)
            }
        }
        return try outcome.unsafelyUnwrapped.get()
    }
}

extension EGDPayload: RandomAccessCollection {
    /// Always 0.
    @inlinable public var startIndex: Int { 0 }
    /// The number of bytes held, `0...255`.
    @inlinable public var endIndex: Int { Int(length) }
    /// The number of bytes held, `0...255`.
    @inlinable public var count: Int { Int(length) }

    /// The byte at `position`, which must be in `0..<count`.
    @inlinable
    public subscript(position: Int) -> UInt8 {
        precondition(position >= 0 && position < Int(length), "EGDPayload index out of range")
        return storage[position]
    }
}

extension EGDPayload: Hashable {
    /// Equal when both hold the same bytes; storage past ``count`` is ignored.
    @inlinable
    public static func == (lhs: EGDPayload, rhs: EGDPayload) -> Bool {
        guard lhs.length == rhs.length else { return false }
        for index in 0..<Int(lhs.length) where lhs.storage[index] != rhs.storage[index] { return false }
        return true
    }

    /// Hashes the count and the bytes held.
    @inlinable
    public func hash(into hasher: inout Hasher) {
        hasher.combine(length)
        for index in 0..<Int(length) { hasher.combine(storage[index]) }
    }
}

extension EGDPayload: CustomStringConvertible {
    /// The bytes in lowercase hex, e.g. `"0a1b"`.
    public var description: String {
        var text = ""
        text.reserveCapacity(2 * count)
        for byte in self { text += hexByte(byte) }
        return text
    }
}

extension EGDPayload: ExpressibleByArrayLiteral {
    /// A payload from a literal list of at most 255 bytes; more traps (literals are programmer input).
    public init(arrayLiteral elements: UInt8...) {
        precondition(elements.count <= Self.capacity, "EGDPayload literal longer than 255 bytes")
        self.init()
        appendUnchecked(contentsOf: elements)
    }
}
