/// Up to 255 bytes of message data: the data of writes (`03`), of read answers and the text of a
/// PID answer.
///
/// Every EGD data field is counted by one byte, so 255 bytes is the most any message carries
/// (PROTOCOLS.md §1, "Limits"). A payload is a small value (a reference and a count) over a
/// copy-on-write buffer of exactly 255 bytes, so messages stay small and cheap to move: a request
/// or response is a few bytes however large its payload.
///
/// The decoders fill one buffer each and hand it out inside the message they return. If the
/// caller has dropped that message by the next payload, the decoder refills the same buffer, so a
/// decoding loop allocates nothing after its first payload; a caller that keeps payloads makes the
/// decoder take a fresh buffer, never corrupting the one kept. An empty payload has no buffer.
public struct EGDPayload: @unchecked Sendable {
    // @unchecked: the buffer is mutated only through `makeUnique()`, i.e. when this value holds
    // the sole reference (copy-on-write), so values shared across threads are never written.

    /// The most bytes one EGD message can carry: 255.
    public static let capacity = 255

    @usableFromInline var storage: EGDPayloadStorage?
    @usableFromInline var length: UInt8

    /// An empty payload (no buffer is allocated).
    @inlinable
    public init() {
        storage = nil
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
        // In bounds: start + source.count ≤ 255, the buffer's size, by the precondition above.
        UnsafeMutableRawPointer(makeUnique().bytes + start).copyMemory(from: base, byteCount: source.count)
        length = UInt8(truncatingIfNeeded: start + source.count)
    }

    /// Appends one byte; traps if the payload is full.
    @inlinable
    mutating func appendUnchecked(_ byte: UInt8) {
        precondition(length < 255, "EGDPayload overflow")
        makeUnique().bytes[Int(length)] = byte
        length &+= 1
    }

    /// Empties the payload, keeping its buffer for reuse.
    @inlinable
    mutating func removeAll() { length = 0 }

    /// The buffer, made sole-owned first: a shared (or missing) one is replaced by a new buffer
    /// holding the same ``count`` bytes.
    @inlinable
    mutating func makeUnique() -> EGDPayloadStorage {
        if !isKnownUniquelyReferenced(&storage) {
            let fresh = EGDPayloadStorage.make()
            if let old = storage, length > 0 {
                fresh.bytes.update(from: old.bytes, count: Int(length))
            }
            storage = fresh
        }
        return storage.unsafelyUnwrapped
    }

    /// Calls `body` with the payload's bytes; the pointer is valid only during the call.
    @inlinable
    public func withUnsafeBytes<Value, Failure: Error>(
        _ body: (UnsafeRawBufferPointer) throws(Failure) -> Value
    ) throws(Failure) -> Value {
        guard let storage else { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        return try withExtendedLifetime(storage) { () throws(Failure) -> Value in
            try body(UnsafeRawBufferPointer(start: storage.bytes, count: Int(length)))
        }
    }
}

/// The 255-byte buffer behind ``EGDPayload``: one allocation, header and bytes together.
@usableFromInline
final class EGDPayloadStorage: ManagedBuffer<Void, UInt8> {
    /// A new, uninitialised-content buffer of ``EGDPayload/capacity`` bytes (zero-filled).
    @inlinable
    static func make() -> EGDPayloadStorage {
        let buffer = create(minimumCapacity: EGDPayload.capacity) { _ in () }
        let storage = unsafeDowncast(buffer, to: EGDPayloadStorage.self)
        storage.withUnsafeMutablePointerToElements { $0.initialize(repeating: 0, count: EGDPayload.capacity) }
        return storage
    }

    /// The first byte; valid while the buffer lives.
    @inlinable
    var bytes: UnsafeMutablePointer<UInt8> { withUnsafeMutablePointerToElements { $0 } }
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
        let storage = self.storage.unsafelyUnwrapped  // count > 0 implies a buffer
        return withExtendedLifetime(storage) { storage.bytes[position] }
    }
}

extension EGDPayload: Hashable {
    /// Equal when both hold the same bytes; storage past ``count`` is ignored.
    @inlinable
    public static func == (lhs: EGDPayload, rhs: EGDPayload) -> Bool {
        guard lhs.length == rhs.length else { return false }
        return lhs.withUnsafeBytes { left in rhs.withUnsafeBytes { right in left.elementsEqual(right) } }
    }

    /// Hashes the count and the bytes held.
    @inlinable
    public func hash(into hasher: inout Hasher) {
        hasher.combine(length)
        withUnsafeBytes { hasher.combine(bytes: $0) }
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
