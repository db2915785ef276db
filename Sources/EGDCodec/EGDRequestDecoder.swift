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
/// keeps only the state of one incomplete command: at most a 255-byte write payload, in one
/// buffer it reuses (see ``EGDPayload``), so it never buffers without bound, and after its first
/// write it allocates nothing as long as the caller lets each message go before the next.
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

    /// Where in a command the decoder stands. Kept payload-free (one byte) so that the hot check
    /// "between commands?" is a byte compare; the pending command's fields are stored beside it.
    @usableFromInline enum Phase: UInt8, Sendable {
        /// Between commands.
        case idle
        /// After `01` or `02` (in `pendingCommand`), waiting for the count.
        case readCount
        /// After `03`, waiting for the estimate's high byte.
        case writeBitsHigh
        /// After `03 EH`, waiting for the low byte (`pendingBits` holds `EH << 8`).
        case writeBitsLow
        /// After `03 EH EL`, waiting for the length.
        case writeLength
        /// After `03 EH EL NN`, collecting `pendingLength` bytes into `payload`.
        case writeData
        /// The stream was refused; every call rethrows `failure`.
        case failed
    }

    /// The configuration this decoder applies.
    public let configuration: Configuration
    @usableFromInline var phase: Phase = .idle
    @usableFromInline var pendingCommand: UInt8 = 0
    @usableFromInline var pendingBits: UInt16 = 0
    @usableFromInline var pendingLength: UInt8 = 0
    @usableFromInline var failure: EGDDecodingError?
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
    public var isIdle: Bool { phase == .idle }

    /// Decodes the next request from the front of `input`, consuming its bytes.
    ///
    /// Returns the request as soon as its last byte is consumed (the rest of `input` stays for the
    /// next call), or nil once `input` is empty without completing a request. A write's payload
    /// reuses the decoder's buffer (see ``EGDPayload``): allocation happens only for the first
    /// write, or while the caller still holds the previous write's payload.
    ///
    /// - Throws: ``EGDDecodingError``; `input` then starts at the offending byte.
    @inlinable @inline(__always)
    public mutating func decode<Bytes: Collection<UInt8>>(_ input: inout Bytes) throws(EGDDecodingError) -> EGDRequest?
    where Bytes.SubSequence == Bytes {
        // Fast path: between commands with a whole read command (`01 NN` / `02 NN`) in view, the
        // whole of QEMU's and ekeyd-egd-linux's traffic. Everything else takes the general path.
        if phase == .idle {
            let start = input.startIndex
            let end = input.endIndex
            if start != end {
                let command = input[start]
                let second = input.index(after: start)
                if second != end && (command == 0x02 || command == 0x01)
                    && configuration.acceptedCommands.rawValue & (1 &<< command) != 0
                {
                    let count = input[second]
                    input = input[input.index(after: second)...]
                    consumed &+= 2
                    return command == 0x02 ? .readBlocking(count: count) : .readNonBlocking(count: count)
                }
            }
        }
        return try decodeByteByByte(&input)
    }

    /// Decodes every request in `input` (one `read(2)`'s worth), handing each to `body` in order.
    ///
    /// Equivalent to calling ``decode(_:)`` until it returns nil, message for message, error for
    /// error and offset for offset, but faster on the traffic that matters: between commands it walks
    /// back-to-back `01 NN` / `02 NN` commands (QEMU's and ekeyd-egd-linux's pipelines) in a tight loop
    /// that keeps its position in registers and saves it once. Anything else takes the general path
    /// one request at a time. On return every byte of `input` has been consumed; the decoder holds
    /// what it needs of an incomplete command.
    ///
    /// - Throws: ``EGDDecodingError``, after `body` has seen every request before the offending byte.
    @inlinable @inline(__always)
    public mutating func decodeAll(
        _ input: UnsafeRawBufferPointer,
        _ body: (EGDRequest) -> Void
    ) throws(EGDDecodingError) {
        var index = 0
        let end = input.count
        let accepted = configuration.acceptedCommands.rawValue
        while index < end {
            if phase == .idle {
                let start = index
                while index &+ 1 < end {
                    let command = input[index]
                    guard command == 0x02 || command == 0x01, accepted & (1 &<< command) != 0 else { break }
                    let count = input[index &+ 1]
                    index &+= 2
                    // One case per branch: the compiler then knows the value holds no payload buffer
                    // and drops the per-request destroy call a conditional expression needed.
                    if command == 0x02 {
                        body(.readBlocking(count: count))
                    } else {
                        body(.readNonBlocking(count: count))
                    }
                }
                consumed &+= UInt64(index &- start)
                if index == end { return }
            }
            var rest = input[index...]
            guard let request = try decodeByteByByte(&rest) else { return }  // all of `rest` consumed
            index = rest.startIndex
            body(request)
        }
    }

    /// The general path of ``decode(_:)``: every command, split anywhere.
    @inlinable @inline(__always)
    mutating func decodeByteByByte<Bytes: Collection<UInt8>>(
        _ input: inout Bytes
    ) throws(EGDDecodingError) -> EGDRequest? where Bytes.SubSequence == Bytes {
        if phase == .failed { throw failure.unsafelyUnwrapped }
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
                    pendingCommand = byte
                    phase = .readCount
                case .writeEntropy:
                    phase = .writeBitsHigh
                }
            case .readCount:
                input.formIndex(after: &index)
                offset &+= 1
                phase = .idle
                return pendingCommand == 0x02 ? .readBlocking(count: byte) : .readNonBlocking(count: byte)
            case .writeBitsHigh:
                input.formIndex(after: &index)
                offset &+= 1
                pendingBits = UInt16(byte) &<< 8
                phase = .writeBitsLow
            case .writeBitsLow:
                input.formIndex(after: &index)
                offset &+= 1
                pendingBits |= UInt16(byte)
                phase = .writeLength
            case .writeLength:
                // 8 · 255 = 2040 fits UInt16 easily: no overflow.
                if configuration.rejectsOverstatedEntropy && pendingBits > 8 &* UInt16(byte) {
                    throw fail(.entropyEstimateExceedsData(bits: pendingBits, byte: byte, offset: offset))
                }
                input.formIndex(after: &index)
                offset &+= 1
                payload.removeAll()
                guard byte > 0 else {
                    phase = .idle
                    return .writeEntropy(bits: pendingBits, data: EGDPayload())
                }
                pendingLength = byte
                phase = .writeData
            case .writeData:
                let wanted = Int(pendingLength) - payload.count
                let chunkEnd = input.index(index, offsetBy: wanted, limitedBy: end) ?? end
                let chunk = input[index..<chunkEnd]
                // chunk.count ≤ wanted = length − payload.count, so the payload never exceeds 255.
                offset &+= UInt64(chunk.count)
                payload.appendUnchecked(contentsOf: chunk)
                index = chunkEnd
                if payload.count == Int(pendingLength) {
                    phase = .idle
                    return .writeEntropy(bits: pendingBits, data: payload)
                }
            case .failed:
                throw failure.unsafelyUnwrapped
            }
        }
        return nil
    }

    /// Records `error` as the decoder's final state and returns it for throwing.
    @inlinable
    mutating func fail(_ error: EGDDecodingError) -> EGDDecodingError {
        phase = .failed
        failure = error
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
        case .failed:
            throw failure.unsafelyUnwrapped
        case .readCount:
            throw .truncatedMessage(byte: pendingCommand, offset: messageStart)
        case .writeBitsHigh, .writeBitsLow, .writeLength, .writeData:
            throw .truncatedMessage(byte: EGDCommand.writeEntropy.rawValue, offset: messageStart)
        }
    }
}
