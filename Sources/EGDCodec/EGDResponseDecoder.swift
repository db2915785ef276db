/// The client side: frames a server's response stream by the requests outstanding, in order.
///
/// EGD responses do not say what they answer, and a blocking read's answer has no length at all:
/// only the client knows how to cut the stream. Tell the decoder about each request as you send
/// it (``expectResponse(to:)``), then feed it whatever each `read(2)` returned:
///
/// ```swift
/// try decoder.expectResponse(to: .readBlocking(count: 64))
/// var input = bytesJustRead[...]
/// while let response = try decoder.decode(&input) { use(response) }
/// ```
///
/// Responses come out in request order, each whole: a blocking answer that the server sends in
/// several chunks (as ekeyd does when its pool runs short) is reassembled, at most 255 bytes, in a
/// payload buffer the decoder reuses (see ``EGDPayload``).
/// Writes (`03`) have no response and are not tracked. Up to
/// ``maximumOutstandingRequests`` requests may be outstanding, held in a fixed inline ring; after
/// its first payload the decoder allocates nothing while the caller lets each answer go before
/// the next.
///
/// A server that sends bytes nobody asked for, a non-blocking answer longer than the request, or a
/// PID that is not ASCII decimal makes ``decode(_:)`` throw an ``EGDDecodingError`` naming the byte
/// and its offset; the decoder then stays failed.
public struct EGDResponseDecoder: Sendable {
    /// The most requests that may be outstanding at once: 256 (64 KiB of blocking reads).
    public static let maximumOutstandingRequests = 256

    /// What the answer to one outstanding request looks like.
    @usableFromInline enum Expectation: Sendable {
        case entropyLevel
        case nonBlocking(UInt8)
        case blocking(UInt8)
        case processID

        @usableFromInline var command: EGDCommand {
            switch self {
            case .entropyLevel: return .entropyLevel
            case .nonBlocking: return .readNonBlocking
            case .blocking: return .readBlocking
            case .processID: return .reportPID
            }
        }
    }

    /// Ring of outstanding expectations: `queue[(head + i) % 256]` for `i` in `0..<queued`.
    @usableFromInline var queue: InlineArray<256, Expectation>
    @usableFromInline var head = 0
    @usableFromInline var queued = 0
    /// Bytes of the head's answer received so far (including a length byte).
    @usableFromInline var progress = 0
    /// The length byte of a non-blocking or PID answer, once received.
    @usableFromInline var declaredLength: UInt8 = 0
    /// The level answer's bits so far.
    @usableFromInline var level: UInt32 = 0
    @usableFromInline var payload = EGDPayload()
    @usableFromInline var failure: EGDDecodingError?
    /// The stream offset where the head's answer began.
    @usableFromInline var messageStart: UInt64 = 0
    /// The number of bytes consumed so far: the stream offset of the next byte.
    @inlinable public var streamOffset: UInt64 { consumed }
    @usableFromInline var consumed: UInt64 = 0

    /// A decoder with no request outstanding.
    public init() {
        queue = InlineArray(repeating: .entropyLevel)
    }

    /// The number of requests whose answers have not been fully decoded.
    @inlinable
    public var outstandingCount: Int { queued }

    /// Records that `request` was sent, so that its answer is expected after those already
    /// outstanding. A write expects nothing and is ignored.
    ///
    /// - Throws: ``EGDEncodingError/tooManyOutstandingRequests(limit:)`` when
    ///   ``maximumOutstandingRequests`` are outstanding already; nothing is recorded then.
    @inlinable
    public mutating func expectResponse(to request: EGDRequest) throws(EGDEncodingError) {
        let expectation: Expectation
        switch request {
        case .entropyLevel: expectation = .entropyLevel
        case .readNonBlocking(let count): expectation = .nonBlocking(count)
        case .readBlocking(let count): expectation = .blocking(count)
        case .reportPID: expectation = .processID
        case .writeEntropy: return
        }
        guard queued < Self.maximumOutstandingRequests else {
            throw .tooManyOutstandingRequests(limit: Self.maximumOutstandingRequests)
        }
        queue[(head + queued) & (Self.maximumOutstandingRequests - 1)] = expectation
        queued += 1
    }

    /// Decodes the next response from the front of `input`, consuming its bytes.
    ///
    /// Returns the response as soon as its last byte is consumed (a blocking read of 0 bytes
    /// completes without any), or nil once `input` is empty without completing one. Allocates
    /// only a first payload buffer, or a fresh one while the caller still holds the last.
    ///
    /// - Throws: ``EGDDecodingError``; `input` then starts at the offending byte.
    @inlinable
    public mutating func decode<Bytes: Collection<UInt8>>(_ input: inout Bytes) throws(EGDDecodingError) -> EGDResponse?
    where Bytes.SubSequence == Bytes {
        if let failure { throw failure }
        var index = input.startIndex
        let end = input.endIndex
        var offset = consumed
        defer {
            input = input[index...]
            consumed = offset
        }
        /// Copies what `input` holds of the payload, up to `length` bytes in all; true once complete.
        func collectPayload(upTo length: Int) -> Bool {
            let chunkEnd = input.index(index, offsetBy: length - payload.count, limitedBy: end) ?? end
            let chunk = input[index..<chunkEnd]
            // chunk.count ≤ length − payload.count, so the payload never exceeds length ≤ 255.
            offset &+= UInt64(chunk.count)
            progress &+= chunk.count
            payload.appendUnchecked(contentsOf: chunk)
            index = chunkEnd
            return payload.count == length
        }
        while queued > 0 {
            let expectation = queue[head]
            if progress == 0 { messageStart = offset }
            switch expectation {
            case .blocking(let count):
                guard collectPayload(upTo: Int(count)) else { return nil }
                return .blockingData(complete())
            case .entropyLevel:
                while progress < 4 {
                    guard index != end else { return nil }
                    level = level &<< 8 | UInt32(input[index])
                    input.formIndex(after: &index)
                    offset &+= 1
                    progress &+= 1
                }
                let bits = level
                _ = complete()
                return .entropyLevel(bits: bits)
            case .nonBlocking(let requested) where progress == 0:
                guard index != end else { return nil }
                let length = input[index]
                guard length <= requested else {
                    throw fail(.nonBlockingLengthExceedsRequest(byte: length, requested: requested, offset: offset))
                }
                input.formIndex(after: &index)
                offset &+= 1
                progress = 1
                declaredLength = length
            case .processID where progress == 0:
                guard index != end else { return nil }
                let length = input[index]
                guard length > 0 else { throw fail(.invalidProcessIDLength(byte: length, offset: offset)) }
                input.formIndex(after: &index)
                offset &+= 1
                progress = 1
                declaredLength = length
            case .nonBlocking:
                guard collectPayload(upTo: Int(declaredLength)) else { return nil }
                return .nonBlockingData(complete())
            case .processID:
                while payload.count < Int(declaredLength) {
                    guard index != end else { return nil }
                    let byte = input[index]
                    guard isProcessIDByte(byte, at: payload.count, length: Int(declaredLength)) else {
                        throw fail(.invalidProcessIDByte(byte: byte, offset: offset))
                    }
                    payload.appendUnchecked(byte)
                    input.formIndex(after: &index)
                    offset &+= 1
                    progress &+= 1
                }
                return .processID(complete())
            }
        }
        if index != end {
            throw fail(.unexpectedByte(byte: input[index], offset: offset))
        }
        return nil
    }

    /// Pops the head expectation, resets the per-answer state and returns the payload collected.
    @inlinable
    mutating func complete() -> EGDPayload {
        let data = payload
        payload.removeAll()
        progress = 0
        level = 0
        declaredLength = 0
        head = (head + 1) & (Self.maximumOutstandingRequests - 1)
        queued -= 1
        return data
    }

    /// Records `error` as the decoder's final state and returns it for throwing.
    @inlinable
    mutating func fail(_ error: EGDDecodingError) -> EGDDecodingError {
        failure = error
        return error
    }

    /// Declares the end of the stream (the server closed).
    ///
    /// A blocking read of 0 bytes at the head completes without bytes, so it does not count as
    /// missing; call ``decode(_:)`` until it returns nil before finishing.
    ///
    /// - Throws: ``EGDDecodingError/truncatedMessage(byte:offset:)`` when an answer is still
    ///   outstanding (naming the command it answers and where its answer began or was due), or the
    ///   error the decoder failed with.
    public func finish() throws(EGDDecodingError) {
        if let failure { throw failure }
        guard queued > 0 else { return }
        let start = progress == 0 ? streamOffset : messageStart
        throw .truncatedMessage(byte: queue[head].command.rawValue, offset: start)
    }
}
