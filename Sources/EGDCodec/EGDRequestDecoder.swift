/// The server side: turns a client's byte stream, in slices of any size, into ``EGDRequest``s.
///
/// Feed it whatever each `read(2)` returned. A command may arrive split across reads, and one read
/// may hold many pipelined commands (QEMU sends `02 40 02 40 …` back to back); the decoder yields
/// them one at a time, in order, with the single-step shape:
///
/// ```swift
/// var input = bytesJustRead[...]
/// while let request = try decoder.decode(&input) { serve(request) }
/// // `input` is empty now: the decoder holds what it needs of an incomplete command.
/// ```
///
/// `nil` means only "need more bytes"; by then every input byte has been consumed. The decoder
/// keeps only the state of one incomplete command: at most a 255-byte write payload, stored
/// inline, so it never buffers without bound and never allocates.
///
/// A stream that is not EGD (an unknown command byte, a command the configuration refuses, a write
/// claiming more entropy than it carries) throws an ``EGDDecodingError`` naming the byte and its
/// offset, which tells the server to close the client, as EGD servers do. The input is then left
/// at the offending byte, and every later call throws the same error.
///
/// Fragmented input (`|` marks read boundaries) decodes the same as whole input:
///
/// ```
/// 02 | 40 02 40 03 00 | 10 02 AA | BB 04      reads
/// readBlocking(64), readBlocking(64), writeEntropy(16 bits, AA BB), reportPID
/// ```
public struct EGDRequestDecoder: Sendable {
    /// What the decoder accepts beyond the protocol's syntax.
    public struct Configuration: Sendable, Hashable {
        /// Commands the server serves; any other valid command throws
        /// ``EGDDecodingError/commandNotAccepted(byte:offset:)``. Default: all five.
        public var acceptedCommands: EGDCommandSet
        /// Whether a write claiming more than 8 bits per data byte throws
        /// ``EGDDecodingError/entropyEstimateExceedsData(bits:byte:offset:)``. Default: true (no
        /// source of bytes holds more than 8 bits of entropy per byte, so such a claim is a lie).
        public var rejectsOverstatedEntropy: Bool

        /// A configuration; the defaults accept every command and reject overstated estimates.
        public init(acceptedCommands: EGDCommandSet = .all, rejectsOverstatedEntropy: Bool = true) {
            self.acceptedCommands = acceptedCommands
            self.rejectsOverstatedEntropy = rejectsOverstatedEntropy
        }
    }

    /// Where in a command the decoder stands.
    @usableFromInline enum Phase: Sendable {
        /// Between commands.
        case idle
        /// After `01` or `02`, waiting for the count.
        case readCount(blocking: Bool)
        /// After `03`, waiting for the estimate's high byte.
        case writeBitsHigh
        /// After `03 EH`, waiting for the low byte.
        case writeBitsLow(high: UInt8)
        /// After `03 EH EL`, waiting for the length.
        case writeLength(bits: UInt16)
        /// After `03 EH EL NN`, collecting `NN` bytes into `payload`.
        case writeData(bits: UInt16, length: UInt8)
        /// The stream was refused; every call rethrows this error.
        case failed(EGDDecodingError)
    }

    /// The configuration this decoder applies.
    public let configuration: Configuration
    @usableFromInline var phase: Phase = .idle
    @usableFromInline var payload = EGDPayload()
    /// The stream offset of the first byte of the command in progress.
    @usableFromInline var messageStart: UInt64 = 0
    /// The number of bytes consumed so far: the stream offset of the next byte.
    @inlinable public var streamOffset: UInt64 { consumed }
    @usableFromInline var consumed: UInt64 = 0

    /// A decoder at the start of a stream.
    public init(configuration: Configuration = .init()) {
        self.configuration = configuration
    }

    /// Whether the decoder stands between commands (nothing of an incomplete command held).
    @inlinable
    public var isIdle: Bool {
        if case .idle = phase { return true }
        return false
    }

    /// Decodes the next request from the front of `input`, consuming its bytes.
    ///
    /// Returns the request as soon as its last byte is consumed (the rest of `input` stays for the
    /// next call), or nil once `input` is empty without completing a request. Never allocates.
    ///
    /// - Throws: ``EGDDecodingError``; `input` then starts at the offending byte.
    @inlinable
    public mutating func decode<Bytes: Collection<UInt8>>(_ input: inout Bytes) throws(EGDDecodingError) -> EGDRequest?
    where Bytes.SubSequence == Bytes {
        var index = input.startIndex
        let end = input.endIndex
        var offset = consumed
        defer {
            input = input[index...]
            consumed = offset
        }
        while index != end {
            let byte = input[index]
            switch phase {
            case .idle:
                guard let command = EGDCommand(rawValue: byte) else {
                    throw fail(.unknownCommand(byte: byte, offset: offset))
                }
                guard configuration.acceptedCommands.contains(command) else {
                    throw fail(.commandNotAccepted(byte: byte, offset: offset))
                }
                messageStart = offset
                input.formIndex(after: &index)
                offset &+= 1
                switch command {
                case .entropyLevel:
                    return .entropyLevel
                case .reportPID:
                    return .reportPID
                case .readNonBlocking, .readBlocking:
                    let blocking = command == .readBlocking
                    // Fast path: the count is in this slice too (the common case for QEMU's stream).
                    guard index != end else {
                        phase = .readCount(blocking: blocking)
                        return nil
                    }
                    let count = input[index]
                    input.formIndex(after: &index)
                    offset &+= 1
                    return blocking ? .readBlocking(count: count) : .readNonBlocking(count: count)
                case .writeEntropy:
                    phase = .writeBitsHigh
                }
            case .readCount(let blocking):
                input.formIndex(after: &index)
                offset &+= 1
                phase = .idle
                return blocking ? .readBlocking(count: byte) : .readNonBlocking(count: byte)
            case .writeBitsHigh:
                input.formIndex(after: &index)
                offset &+= 1
                phase = .writeBitsLow(high: byte)
            case .writeBitsLow(let high):
                input.formIndex(after: &index)
                offset &+= 1
                phase = .writeLength(bits: UInt16(high) &<< 8 | UInt16(byte))
            case .writeLength(let bits):
                // 8 · 255 = 2040 fits UInt16 easily: no overflow.
                if configuration.rejectsOverstatedEntropy && bits > 8 &* UInt16(byte) {
                    throw fail(.entropyEstimateExceedsData(bits: bits, byte: byte, offset: offset))
                }
                input.formIndex(after: &index)
                offset &+= 1
                payload.removeAll()
                guard byte > 0 else {
                    phase = .idle
                    return .writeEntropy(bits: bits, data: EGDPayload())
                }
                phase = .writeData(bits: bits, length: byte)
            case .writeData(let bits, let length):
                let wanted = Int(length) - payload.count
                let chunkEnd = input.index(index, offsetBy: wanted, limitedBy: end) ?? end
                let chunk = input[index..<chunkEnd]
                // chunk.count ≤ wanted = length − payload.count, so the payload never exceeds 255.
                offset &+= UInt64(chunk.count)
                payload.appendUnchecked(contentsOf: chunk)
                index = chunkEnd
                if payload.count == Int(length) {
                    phase = .idle
                    return .writeEntropy(bits: bits, data: payload)
                }
            case .failed(let error):
                throw error
            }
        }
        if case .failed(let error) = phase { throw error }
        return nil
    }

    /// Records `error` as the decoder's final state and returns it for throwing.
    @inlinable
    mutating func fail(_ error: EGDDecodingError) -> EGDDecodingError {
        phase = .failed(error)
        return error
    }

    /// Declares the end of the stream (the client closed).
    ///
    /// - Throws: ``EGDDecodingError/truncatedMessage(byte:offset:)`` when the stream ended inside a
    ///   command (naming its command byte and where it began), or the error the decoder failed with.
    public func finish() throws(EGDDecodingError) {
        switch phase {
        case .idle:
            return
        case .failed(let error):
            throw error
        case .readCount(let blocking):
            let command: EGDCommand = blocking ? .readBlocking : .readNonBlocking
            throw .truncatedMessage(byte: command.rawValue, offset: messageStart)
        case .writeBitsHigh, .writeBitsLow, .writeLength, .writeData:
            throw .truncatedMessage(byte: EGDCommand.writeEntropy.rawValue, offset: messageStart)
        }
    }
}
