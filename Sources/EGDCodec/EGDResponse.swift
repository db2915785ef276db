/// One EGD response, as a server sends it and a client decodes it.
///
/// A write (`03`) has no response. A blocking read's answer has no framing on the wire: the client
/// knows its length from the request (see ``EGDResponseDecoder``). A server may send a blocking
/// answer in several pieces as entropy arrives; the bytes are the same, so a server can encode each
/// piece by copying it (``blockingData(_:)`` of the piece) and the client decoder reassembles.
/// Byte layouts: <doc:ByteLayouts>.
public enum EGDResponse: Sendable, Hashable {
    /// Answers `00`: bits of entropy available, a big-endian `u32`.
    case entropyLevel(bits: UInt32)
    /// Answers `01 NN`: `MM` then `MM ≤ NN` bytes.
    case nonBlockingData(EGDPayload)
    /// Answers `02 NN`: exactly `NN` raw bytes.
    case blockingData(EGDPayload)
    /// Answers `04`: `LL` then `LL` ASCII decimal characters (a leading `-` allowed: ekeyd sends `-1`).
    case processID(EGDPayload)

    /// The command this response answers.
    @inlinable
    public var command: EGDCommand {
        switch self {
        case .entropyLevel: return .entropyLevel
        case .nonBlockingData: return .readNonBlocking
        case .blockingData: return .readBlocking
        case .processID: return .reportPID
        }
    }

    /// The number of bytes ``encode(into:)`` writes.
    @inlinable
    public var encodedCount: Int {
        switch self {
        case .entropyLevel: return 4
        case .nonBlockingData(let data), .processID(let data): return 1 + data.count
        case .blockingData(let data): return data.count
        }
    }

    /// The level answer for a pool of `bits` bits, clamped to `0...UInt32.max` (a pool larger than
    /// 512 MiB reports the most a `u32` can say).
    @inlinable
    public static func entropyLevel(saturatingBits bits: Int) -> EGDResponse {
        .entropyLevel(bits: bits < 0 ? 0 : UInt32(clamping: bits))
    }

    /// The PID answer for `pid`, in decimal.
    public static func processID(_ pid: Int) -> EGDResponse {
        // At most 20 characters ("-9223372036854775808"), far below 255.
        .processID(EGDPayload(uncheckedText: String(pid).utf8))
    }

    /// The PID answer carrying `text`, which must be ASCII decimal (optionally one leading `-`).
    ///
    /// - Throws: ``EGDEncodingError/payloadTooLong(count:)``,
    ///   ``EGDEncodingError/invalidProcessIDByte(byte:index:)`` (empty text: byte 0, index 0).
    @inlinable
    public static func processID(text: some Collection<UInt8>) throws(EGDEncodingError) -> EGDResponse {
        let payload = try EGDPayload(text)
        try validateProcessID(payload)
        return .processID(payload)
    }

    /// Checks that the response can answer `request`: the same command, and for reads a data length
    /// that fits (at most `NN` bytes non-blocking, exactly `NN` blocking).
    ///
    /// - Throws: ``EGDEncodingError/responseDoesNotAnswerRequest(_:)``,
    ///   ``EGDEncodingError/dataLengthMismatch(requested:actual:)``.
    @inlinable
    public func validate(answering request: EGDRequest) throws(EGDEncodingError) {
        switch (request, self) {
        case (.entropyLevel, .entropyLevel), (.reportPID, .processID):
            return
        case (.readNonBlocking(let count), .nonBlockingData(let data)):
            guard data.count <= Int(count) else {
                throw .dataLengthMismatch(requested: Int(count), actual: data.count)
            }
        case (.readBlocking(let count), .blockingData(let data)):
            guard data.count == Int(count) else {
                throw .dataLengthMismatch(requested: Int(count), actual: data.count)
            }
        default:
            throw .responseDoesNotAnswerRequest(request.command)
        }
    }

    /// Writes the response's bytes at the start of `buffer` and returns how many it wrote.
    ///
    /// Never allocates. - Throws: ``EGDEncodingError/bufferTooSmall(needed:available:)``, and
    /// ``EGDEncodingError/invalidProcessIDByte(byte:index:)`` for PID text that is not ASCII decimal.
    @inlinable
    public func encode(into buffer: UnsafeMutableRawBufferPointer) throws(EGDEncodingError) -> Int {
        let needed = encodedCount
        guard buffer.count >= needed else { throw .bufferTooSmall(needed: needed, available: buffer.count) }
        switch self {
        case .entropyLevel(let bits):
            buffer[0] = UInt8(truncatingIfNeeded: bits >> 24)
            buffer[1] = UInt8(truncatingIfNeeded: bits >> 16)
            buffer[2] = UInt8(truncatingIfNeeded: bits >> 8)
            buffer[3] = UInt8(truncatingIfNeeded: bits)
        case .nonBlockingData(let data), .processID(let data):
            if case .processID = self { try Self.validateProcessID(data) }
            buffer[0] = UInt8(truncatingIfNeeded: data.count)
            data.withUnsafeBytes { source in
                UnsafeMutableRawBufferPointer(rebasing: buffer[1..<needed]).copyMemory(from: source)
            }
        case .blockingData(let data):
            data.withUnsafeBytes { source in
                UnsafeMutableRawBufferPointer(rebasing: buffer[0..<needed]).copyMemory(from: source)
            }
        }
        return needed
    }

    /// Appends the response's bytes to `bytes` (allocates only if `bytes` must grow).
    ///
    /// - Throws: ``EGDEncodingError/invalidProcessIDByte(byte:index:)`` for bad PID text.
    @inlinable
    public func append(to bytes: inout some RangeReplaceableCollection<UInt8>) throws(EGDEncodingError) {
        switch self {
        case .entropyLevel(let bits):
            bytes.append(UInt8(truncatingIfNeeded: bits >> 24))
            bytes.append(UInt8(truncatingIfNeeded: bits >> 16))
            bytes.append(UInt8(truncatingIfNeeded: bits >> 8))
            bytes.append(UInt8(truncatingIfNeeded: bits))
        case .nonBlockingData(let data):
            bytes.append(UInt8(truncatingIfNeeded: data.count))
            bytes.append(contentsOf: data)
        case .processID(let data):
            try Self.validateProcessID(data)
            bytes.append(UInt8(truncatingIfNeeded: data.count))
            bytes.append(contentsOf: data)
        case .blockingData(let data):
            bytes.append(contentsOf: data)
        }
    }

    /// PID text is one or more ASCII digits, optionally after one leading `-`.
    @inlinable
    static func validateProcessID(_ text: EGDPayload) throws(EGDEncodingError) {
        guard !text.isEmpty else { throw .invalidProcessIDByte(byte: 0, index: 0) }
        for (index, byte) in text.enumerated()
        where !isProcessIDByte(byte, at: index, length: text.count) {
            throw .invalidProcessIDByte(byte: byte, index: index)
        }
    }
}

/// Whether `byte` may stand at `index` of PID text `length` characters long: a digit anywhere, a
/// `-` only first and only before at least one digit.
@inlinable
func isProcessIDByte(_ byte: UInt8, at index: Int, length: Int) -> Bool {
    (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || (byte == UInt8(ascii: "-") && index == 0 && length > 1)
}

extension EGDPayload {
    /// Text known to be at most 255 bytes.
    init(uncheckedText text: String.UTF8View) {
        self.init()
        appendUnchecked(contentsOf: text)
    }

    /// The payload as text, for PID answers (`"-1"`), decoded as UTF-8 with repair.
    public var text: String { String(decoding: self, as: UTF8.self) }
}

extension EGDResponse: CustomStringConvertible {
    /// The response in words, e.g. `entropyLevel(4096)`.
    public var description: String {
        switch self {
        case .entropyLevel(let bits): return "entropyLevel(\(bits))"
        case .nonBlockingData(let data): return "nonBlockingData(\(data))"
        case .blockingData(let data): return "blockingData(\(data))"
        case .processID(let text): return "processID(\(text.text))"
        }
    }
}
