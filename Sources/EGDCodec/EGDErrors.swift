/// A byte stream that is not valid EGD, found by ``EGDRequestDecoder`` or ``EGDResponseDecoder``.
///
/// Every case names the offending byte and its offset in the stream (counted from 0, the first byte
/// the decoder ever saw). A decoder that threw stays failed: each later call throws the same error.
/// A server answers any of these by closing that client, which is what EGD servers do.
public enum EGDDecodingError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Server side: `byte`, where a command was due, is none of `00`…`04`.
    case unknownCommand(byte: UInt8, offset: UInt64)
    /// Server side: a valid command that this decoder's configuration does not accept.
    case commandNotAccepted(byte: UInt8, offset: UInt64)
    /// Server side: a write (`03`) claims more bits of entropy than its data holds (8 per byte);
    /// `byte` is the length byte `NN`, `bits` the claimed estimate.
    case entropyEstimateExceedsData(bits: UInt16, byte: UInt8, offset: UInt64)
    /// Client side: a response byte arrived while no request was outstanding.
    case unexpectedByte(byte: UInt8, offset: UInt64)
    /// Client side: a non-blocking answer's length byte `MM` exceeds the count `NN` that was asked for.
    case nonBlockingLengthExceedsRequest(byte: UInt8, requested: UInt8, offset: UInt64)
    /// Client side: a PID answer's length byte is 0; a PID has at least one digit.
    case invalidProcessIDLength(byte: UInt8, offset: UInt64)
    /// Client side: a PID answer holds a byte that is not an ASCII digit (or a leading `-`).
    case invalidProcessIDByte(byte: UInt8, offset: UInt64)
    /// The stream ended (``EGDRequestDecoder/finish()``, ``EGDResponseDecoder/finish()``) inside a
    /// message. Server side `byte` is the command byte and `offset` where the command began; client
    /// side `byte` is the command being answered and `offset` where its answer began (or was due).
    case truncatedMessage(byte: UInt8, offset: UInt64)

    /// The offending byte.
    public var byte: UInt8 {
        switch self {
        case .unknownCommand(let byte, _), .commandNotAccepted(let byte, _),
            .entropyEstimateExceedsData(_, let byte, _), .unexpectedByte(let byte, _),
            .nonBlockingLengthExceedsRequest(let byte, _, _), .invalidProcessIDLength(let byte, _),
            .invalidProcessIDByte(let byte, _), .truncatedMessage(let byte, _):
            return byte
        }
    }

    /// The stream offset of the offending byte.
    public var offset: UInt64 {
        switch self {
        case .unknownCommand(_, let offset), .commandNotAccepted(_, let offset),
            .entropyEstimateExceedsData(_, _, let offset), .unexpectedByte(_, let offset),
            .nonBlockingLengthExceedsRequest(_, _, let offset), .invalidProcessIDLength(_, let offset),
            .invalidProcessIDByte(_, let offset), .truncatedMessage(_, let offset):
            return offset
        }
    }

    /// One line naming the fault, the byte (hex) and the offset.
    public var description: String {
        let at = "byte 0x\(hexByte(byte)) at offset \(offset)"
        switch self {
        case .unknownCommand: return "unknown EGD command: \(at)"
        case .commandNotAccepted: return "EGD command not accepted: \(at)"
        case .entropyEstimateExceedsData(let bits, let length, _):
            return "write claims \(bits) bits of entropy for \(length) bytes of data: \(at)"
        case .unexpectedByte: return "response byte with no request outstanding: \(at)"
        case .nonBlockingLengthExceedsRequest(_, let requested, _):
            return "non-blocking answer longer than the \(requested) bytes requested: \(at)"
        case .invalidProcessIDLength: return "empty PID answer: \(at)"
        case .invalidProcessIDByte: return "PID answer is not ASCII decimal: \(at)"
        case .truncatedMessage: return "stream ended inside a message for command \(at)"
        }
    }
}

/// A message that EGD cannot carry, or a buffer it does not fit; thrown by the encoders.
public enum EGDEncodingError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A read count outside `0...255` (every EGD count is one byte). Split larger reads with
    /// ``EGDReadPlan``.
    case countOutOfRange(Int)
    /// Data longer than the 255 bytes one EGD message can carry.
    case payloadTooLong(count: Int)
    /// A write's entropy estimate outside `0...65535` bits (a big-endian `u16`).
    case entropyEstimateOutOfRange(Int)
    /// PID text with a byte that is not an ASCII digit (a `-` is allowed first), or empty text
    /// (`byte` 0, `index` 0); `index` counts from the first character.
    case invalidProcessIDByte(byte: UInt8, index: Int)
    /// A response of the wrong kind for the request it answers (for example a level for a read).
    case responseDoesNotAnswerRequest(EGDCommand)
    /// A read answer whose data length does not fit its request: more than `requested` bytes for a
    /// non-blocking read, or other than exactly `requested` for a blocking read.
    case dataLengthMismatch(requested: Int, actual: Int)
    /// The caller's buffer holds `available` bytes; the message needs `needed`.
    case bufferTooSmall(needed: Int, available: Int)
    /// ``EGDResponseDecoder`` already tracks `limit` outstanding requests.
    case tooManyOutstandingRequests(limit: Int)

    /// One line naming the fault.
    public var description: String {
        switch self {
        case .countOutOfRange(let count): return "read count \(count) outside 0...255"
        case .payloadTooLong(let count): return "data of \(count) bytes exceeds the 255-byte EGD limit"
        case .entropyEstimateOutOfRange(let bits): return "entropy estimate \(bits) bits outside 0...65535"
        case .invalidProcessIDByte(let byte, let index):
            return "PID text is not ASCII decimal: byte 0x\(hexByte(byte)) at index \(index)"
        case .responseDoesNotAnswerRequest(let command): return "response does not answer command \(command)"
        case .dataLengthMismatch(let requested, let actual):
            return "answer of \(actual) bytes does not fit a request for \(requested)"
        case .bufferTooSmall(let needed, let available):
            return "buffer of \(available) bytes too small for \(needed)"
        case .tooManyOutstandingRequests(let limit): return "more than \(limit) requests outstanding"
        }
    }
}

func hexByte(_ byte: UInt8) -> String {
    let digits: StaticString = "0123456789abcdef"
    return digits.withUTF8Buffer { d in
        String(decoding: [d[Int(byte >> 4)], d[Int(byte & 0xF)]], as: UTF8.self)
    }
}
