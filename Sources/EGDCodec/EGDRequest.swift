/// One EGD request, as a client sends it and a server decodes it.
///
/// Counts and lengths are bytes on the wire, so a value of this type is always encodable; the
/// checked factories (``read(count:blocking:)``, ``write(bits:data:)``) turn out-of-range
/// `Int`s into ``EGDEncodingError``s. Byte layouts: <doc:ByteLayouts>.
public enum EGDRequest: Sendable, Hashable {
    /// `00`: how many bits of entropy does the server hold?
    case entropyLevel
    /// `01 NN`: up to `count` bytes now, possibly none.
    case readNonBlocking(count: UInt8)
    /// `02 NN`: exactly `count` bytes, waiting for them if need be.
    case readBlocking(count: UInt8)
    /// `03 EH EL NN` + data: entropy for the server's pool, with an estimate in bits.
    case writeEntropy(bits: UInt16, data: EGDPayload)
    /// `04`: the server's process ID.
    case reportPID

    /// The command byte this request starts with.
    @inlinable
    public var command: EGDCommand {
        switch self {
        case .entropyLevel: return .entropyLevel
        case .readNonBlocking: return .readNonBlocking
        case .readBlocking: return .readBlocking
        case .writeEntropy: return .writeEntropy
        case .reportPID: return .reportPID
        }
    }

    /// The number of bytes ``encode(into:)`` writes: 1, 2, or 4 + data length for a write.
    @inlinable
    public var encodedCount: Int {
        switch self {
        case .entropyLevel, .reportPID: return 1
        case .readNonBlocking, .readBlocking: return 2
        case .writeEntropy(_, let data): return 4 + data.count
        }
    }

    /// A read of `count` bytes, blocking (`02`) or not (`01`).
    ///
    /// - Throws: ``EGDEncodingError/countOutOfRange(_:)`` unless `0 ≤ count ≤ 255`; use
    ///   ``EGDReadPlan`` for larger reads.
    @inlinable
    public static func read(count: Int, blocking: Bool) throws(EGDEncodingError) -> EGDRequest {
        guard let byte = UInt8(exactly: count) else { throw .countOutOfRange(count) }
        return blocking ? .readBlocking(count: byte) : .readNonBlocking(count: byte)
    }

    /// A write (`03`) of `data` crediting `bits` bits of entropy.
    ///
    /// - Throws: ``EGDEncodingError/entropyEstimateOutOfRange(_:)`` unless `0 ≤ bits ≤ 65535`,
    ///   ``EGDEncodingError/payloadTooLong(count:)`` when `data` exceeds 255 bytes.
    @inlinable
    public static func write(bits: Int, data: some Collection<UInt8>) throws(EGDEncodingError) -> EGDRequest {
        guard let estimate = UInt16(exactly: bits) else { throw .entropyEstimateOutOfRange(bits) }
        return .writeEntropy(bits: estimate, data: try EGDPayload(data))
    }

    /// Writes the request's bytes at the start of `buffer` and returns how many it wrote.
    ///
    /// Never allocates. - Throws: ``EGDEncodingError/bufferTooSmall(needed:available:)``.
    @inlinable
    public func encode(into buffer: UnsafeMutableRawBufferPointer) throws(EGDEncodingError) -> Int {
        let needed = encodedCount
        guard buffer.count >= needed else { throw .bufferTooSmall(needed: needed, available: buffer.count) }
        buffer[0] = command.rawValue
        switch self {
        case .entropyLevel, .reportPID:
            break
        case .readNonBlocking(let count), .readBlocking(let count):
            buffer[1] = count
        case .writeEntropy(let bits, let data):
            buffer[1] = UInt8(truncatingIfNeeded: bits >> 8)
            buffer[2] = UInt8(truncatingIfNeeded: bits)
            buffer[3] = UInt8(truncatingIfNeeded: data.count)
            data.withUnsafeBytes { source in
                UnsafeMutableRawBufferPointer(rebasing: buffer[4..<needed]).copyMemory(from: source)
            }
        }
        return needed
    }

    /// Appends the request's bytes to `bytes` (allocates only if `bytes` must grow).
    @inlinable
    public func append(to bytes: inout some RangeReplaceableCollection<UInt8>) {
        bytes.append(command.rawValue)
        switch self {
        case .entropyLevel, .reportPID:
            break
        case .readNonBlocking(let count), .readBlocking(let count):
            bytes.append(count)
        case .writeEntropy(let bits, let data):
            bytes.append(UInt8(truncatingIfNeeded: bits >> 8))
            bytes.append(UInt8(truncatingIfNeeded: bits))
            bytes.append(UInt8(truncatingIfNeeded: data.count))
            bytes.append(contentsOf: data)
        }
    }
}

extension EGDRequest: CustomStringConvertible {
    /// The request in words, e.g. `readBlocking(64)`.
    public var description: String {
        switch self {
        case .entropyLevel: return "entropyLevel"
        case .readNonBlocking(let count): return "readNonBlocking(\(count))"
        case .readBlocking(let count): return "readBlocking(\(count))"
        case .writeEntropy(let bits, let data): return "writeEntropy(bits: \(bits), data: \(data))"
        case .reportPID: return "reportPID"
        }
    }
}
