public import EGDCodec

/// A blocking EGD client: sends requests over an ``EGDConnection`` and frames the answers with
/// an `EGDResponseDecoder`.
///
/// Reads larger than 255 bytes are split into commands of at most 255 bytes the way QEMU splits
/// them (`EGDReadPlan`) and pipelined, at most ``pipelineDepth`` commands in flight. Buffers are
/// allocated once, at initialisation. A server that closes the connection before answering in
/// full gives ``EGDConnectionError/closedMidResponse(command:offset:)``; bytes that are not EGD
/// give ``EGDConnectionError/protocolViolation(_:)``. After any error, close the client: the
/// stream position is unknown.
public final class EGDClient {
    /// The most read commands kept in flight at once: 64 (16 KiB of blocking reads).
    public static let pipelineDepth = 64

    /// The connection the client talks over.
    public let connection: EGDConnection
    private var decoder = EGDResponseDecoder()
    private let receiveBuffer: UnsafeMutableRawBufferPointer
    private let sendBuffer: UnsafeMutableRawBufferPointer
    /// Received bytes not yet decoded: `receiveBuffer[pendingStart..<pendingEnd]`.
    private var pendingStart = 0
    private var pendingEnd = 0

    /// A client over an established connection.
    public init(connection: EGDConnection) {
        self.connection = connection
        receiveBuffer = .allocate(byteCount: 16 * 1024, alignment: 1)
        // Room for a full pipeline of 2-byte reads, or one maximal write (4 + 255 bytes).
        sendBuffer = .allocate(byteCount: max(2 * Self.pipelineDepth, 4 + EGDPayload.capacity), alignment: 1)
    }

    deinit {
        receiveBuffer.deallocate()
        sendBuffer.deallocate()
    }

    /// Connects to `endpoint` (see ``EGDConnection/connect(to:timeout:)``).
    public static func connect(to endpoint: EGDEndpoint, timeout: Duration) throws(EGDConnectionError) -> EGDClient {
        EGDClient(connection: try EGDConnection.connect(to: endpoint, timeout: timeout))
    }

    /// Asks for the server's entropy level (`00`), in bits.
    public func entropyLevel() throws(EGDConnectionError) -> UInt32 {
        try send([.entropyLevel])
        guard case .entropyLevel(let bits) = try nextResponse() else { throw mismatch(.entropyLevel) }
        return bits
    }

    /// Asks for the server's process ID (`04`), as the ASCII text it sent (`"-1"` from ekeyd).
    public func processID() throws(EGDConnectionError) -> String {
        try send([.reportPID])
        guard case .processID(let text) = try nextResponse() else { throw mismatch(.reportPID) }
        return text.text
    }

    /// Reads `count` bytes (any size; split into commands of at most 255), blocking (`02`) or
    /// not (`01`), handing each answer's bytes to `body` in order. Returns the number of bytes
    /// received: `count` for a blocking read, at most `count` for a non-blocking one.
    ///
    /// - Throws: ``EGDConnectionError/invalidRequest(_:)`` for a negative count, or any failure
    ///   of the connection or the protocol.
    @discardableResult
    public func read(count: Int, blocking: Bool, _ body: (EGDPayload) -> Void) throws(EGDConnectionError) -> Int {
        var plan: EGDReadPlan
        do { plan = try EGDReadPlan(totalCount: count) } catch { throw .invalidRequest(error) }
        var outstanding = 0
        var received = 0
        while true {
            var batch: [EGDRequest] = []
            while outstanding + batch.count < Self.pipelineDepth, let request = plan.nextRequest(blocking: blocking) {
                batch.append(request)
            }
            try send(batch)
            outstanding += batch.count
            guard outstanding > 0 else { return received }
            switch try nextResponse() {
            case .blockingData(let data) where blocking, .nonBlockingData(let data) where !blocking:
                received += data.count
                body(data)
            default:
                throw mismatch(blocking ? .readBlocking : .readNonBlocking)
            }
            outstanding -= 1
        }
    }

    /// Writes `data` to the server's pool (`03`), in commands of at most 255 bytes, crediting
    /// `bitsPerByte` bits of entropy per byte (0…8). The protocol has no answer to a write.
    ///
    /// - Throws: ``EGDConnectionError/invalidRequest(_:)`` with `entropyEstimateOutOfRange` when
    ///   `bitsPerByte` is outside `0...8`, or a connection failure.
    public func write(_ data: some Collection<UInt8>, bitsPerByte: Int) throws(EGDConnectionError) {
        guard (0...8).contains(bitsPerByte) else { throw .invalidRequest(.entropyEstimateOutOfRange(bitsPerByte)) }
        var rest = data[...]
        while !rest.isEmpty {
            let chunk = rest.prefix(EGDPayload.capacity)
            rest = rest.dropFirst(chunk.count)
            do {
                try send([try EGDRequest.write(bits: chunk.count * bitsPerByte, data: chunk)])
            } catch let error as EGDConnectionError {
                throw error
            } catch let error as EGDEncodingError {
                throw .invalidRequest(error)
            } catch {
                preconditionFailure("unreachable: \(error)")
            }
        }
    }

    /// Encodes `requests` into the send buffer, records the answers they expect, and sends them.
    private func send(_ requests: [EGDRequest]) throws(EGDConnectionError) {
        guard !requests.isEmpty else { return }
        var length = 0
        for request in requests {
            do {
                length += try request.encode(into: UnsafeMutableRawBufferPointer(rebasing: sendBuffer[length...]))
                try decoder.expectResponse(to: request)
            } catch {
                throw .invalidRequest(error)
            }
        }
        try connection.send(UnsafeRawBufferPointer(rebasing: sendBuffer[..<length]))
    }

    /// Decodes the next answer, receiving more bytes as needed.
    private func nextResponse() throws(EGDConnectionError) -> EGDResponse {
        while true {
            var pending = receiveBuffer[pendingStart..<pendingEnd]
            do {
                let response = try decoder.decode(&pending)
                pendingStart = pending.startIndex
                if let response { return response }
            } catch {
                throw .protocolViolation(error)
            }
            let count = try connection.receive(into: receiveBuffer)
            guard count > 0 else {
                do { try decoder.finish() } catch {
                    if case .truncatedMessage(let byte, let offset) = error, let command = EGDCommand(rawValue: byte) {
                        throw .closedMidResponse(command: command, offset: offset)
                    }
                    throw .protocolViolation(error)
                }
                throw .closedMidResponse(command: .readBlocking, offset: decoder.streamOffset)
            }
            pendingStart = 0
            pendingEnd = count
        }
    }

    private func mismatch(_ command: EGDCommand) -> EGDConnectionError {
        .invalidRequest(.responseDoesNotAnswerRequest(command))
    }
}
