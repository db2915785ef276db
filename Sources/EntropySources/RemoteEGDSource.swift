import EGDCodec

#if canImport(Glibc)
    import Glibc
#endif

/// Random bytes from a remote EGD server, over a unix socket or TCP, that survives the server
/// restarting.
///
/// Each ``fill(_:)`` asks for exactly the bytes the buffer needs in blocking read commands
/// (`02 NN`, NN ≤ 255, split the way QEMU's `rng-egd` splits them, by `EGDReadPlan`), keeps
/// ``RemoteEGDConfiguration/pipelineDepth`` of them in flight, and receives the answers straight
/// into the caller's buffer. It fills the whole buffer or throws.
///
/// ## Reconnecting
///
/// QEMU's `rng-egd` does not re-send its pending requests after a reconnect ("FIXME we should
/// resubmit pending requests when the CDS reconnects"), so a guest stalls until its next kick.
/// This source does. When the connection drops while bytes are owed (end of stream mid-answer,
/// `ECONNRESET`/`EPIPE`, or no byte for ``RemoteEGDConfiguration/readTimeout``) it:
///
/// 1. keeps every byte the old connection delivered (they are already in the buffer: `done`),
///    and forgets the old connection's outstanding commands with its decoder;
/// 2. counts a failure (a connection that delivered a byte first resets the count to 0), and
///    throws ``EntropySourceError/remoteUnavailable(source:attempts:lastError:)`` when the
///    budget (``RemoteEGDConfiguration/maximumAttempts``,
///    ``RemoteEGDConfiguration/maximumTotalBackoff``) is spent;
/// 3. sleeps the jittered exponential delay (``RemoteEGDConfiguration/Backoff``), reconnects,
///    and plans commands for exactly the `buffer.count − done` bytes still owed.
///
/// A byte is never served twice (a new connection's stream starts afresh, and the source never
/// reads more than its commands in flight ask for, so no surplus is left in a socket) and never
/// lost (every byte received is kept; only bytes never received are asked for again).
///
/// ## Blocking
///
/// ``mayBlock`` is `true`: a fill can wait for the server and for backoff. Run it on a thread of
/// its own, usually a ``PrefetchPool``'s filler. Every wait is bounded: by the timeouts, the
/// backoff cap and the attempt budget. Between fills the connection stays open with no command
/// outstanding.
///
/// Time is never read from a clock: backoff delays go through the injected `sleep` and their
/// jitter comes from the injected random number generator, so tests observe exact delays.
public final class RemoteEGDSource: EntropySource {
    /// Where the server listens.
    public let endpoint: EGDEndpoint
    /// Timeouts, pipeline depth and retry budget.
    public let configuration: RemoteEGDConfiguration
    /// Connections established so far (the first one included).
    public private(set) var connectionCount = 0
    /// Times the source slept before retrying, over its lifetime.
    public private(set) var retryCount = 0

    private var connection: EGDConnection?
    private var decoder = EGDResponseDecoder()
    /// A uniform value in `[0, 1)` from the injected generator, for jitter.
    private let nextUnit: () -> Double
    private let sleep: (Duration) -> Void
    /// Room for a full pipeline of 2-byte commands, allocated once.
    private let sendBuffer: UnsafeMutableRawBufferPointer

    /// A source for the server at `endpoint`; connects on the first fill.
    ///
    /// - Parameters:
    ///   - endpoint: the server's unix socket path or TCP address.
    ///   - configuration: timeouts, pipeline depth and retry budget.
    ///   - random: the generator behind backoff jitter (tests pass a seeded one).
    ///   - sleep: blocks the calling thread for a backoff delay (tests record the delay instead).
    /// - Throws: ``EntropySourceError/invalidParameter(name:value:)`` for a pipeline depth outside
    ///   `1...256`, fewer than 1 attempt, a multiplier below 1 or a jitter outside `0...1` (both
    ///   reported × 1000).
    public init(
        endpoint: EGDEndpoint,
        configuration: RemoteEGDConfiguration = RemoteEGDConfiguration(),
        random: some RandomNumberGenerator = SystemRandomNumberGenerator(),
        sleep: @escaping (Duration) -> Void = RemoteEGDSource.sleepThread
    ) throws(EntropySourceError) {
        let depth = configuration.pipelineDepth
        guard (1...EGDResponseDecoder.maximumOutstandingRequests).contains(depth) else {
            throw .invalidParameter(name: "pipelineDepth", value: depth)
        }
        guard configuration.maximumAttempts >= 1 else {
            throw .invalidParameter(name: "maximumAttempts", value: configuration.maximumAttempts)
        }
        let backoff = configuration.backoff
        guard backoff.multiplier >= 1, backoff.multiplier.isFinite else {
            throw .invalidParameter(
                name: "backoff.multiplier×1000", value: Int(clamping: Int64(backoff.multiplier * 1000)))
        }
        guard (0...1).contains(backoff.jitter) else {
            throw .invalidParameter(name: "backoff.jitter×1000", value: Int(clamping: Int64(backoff.jitter * 1000)))
        }
        self.endpoint = endpoint
        self.configuration = configuration
        var generator = random
        nextUnit = { Double.random(in: 0..<1, using: &generator) }
        self.sleep = sleep
        sendBuffer = .allocate(byteCount: 2 * depth, alignment: 1)
    }

    deinit { sendBuffer.deallocate() }

    /// The endpoint, e.g. `"unix:/dev/egd-pool"` or `"tcp:127.0.0.1:8888"`.
    public var name: String { endpoint.description }

    /// `true`: a fill waits for the server, and for backoff while it is away.
    public var mayBlock: Bool { true }

    /// Closes the connection, if any; the next fill reconnects.
    public func disconnect() {
        connection?.close()
        connection = nil
    }

    /// Fills the whole buffer from the server, reconnecting as described on the type; returns
    /// `buffer.count`.
    ///
    /// - Throws: ``EntropySourceError/remoteUnavailable(source:attempts:lastError:)`` when the
    ///   retry budget is spent, ``EntropySourceError/remoteFailed(source:error:)`` for a failure
    ///   retrying cannot fix. The bytes written before a throw are not reported.
    public func fill(_ buffer: UnsafeMutableRawBufferPointer) throws(EntropySourceError) -> Int {
        guard !buffer.isEmpty else { return 0 }
        var done = 0
        var failures = 0
        var slept = Duration.zero
        while true {
            let before = done
            do {
                try transfer(into: buffer, done: &done)
                return buffer.count
            } catch {
                disconnect()
                guard Self.isRetryable(error) else { throw .remoteFailed(source: name, error: error) }
                if done > before { failures = 0 }
                failures += 1
                guard failures < configuration.maximumAttempts else {
                    throw .remoteUnavailable(source: name, attempts: failures, lastError: error)
                }
                let unit = nextUnit()
                let delay = configuration.backoff.delay(afterFailure: failures, unit: unit)
                guard slept + delay <= configuration.maximumTotalBackoff else {
                    throw .remoteUnavailable(source: name, attempts: failures, lastError: error)
                }
                slept += delay
                retryCount += 1
                sleep(delay)
            }
        }
    }

    /// Connects if needed, then asks for and receives `buffer.count − done` bytes, advancing
    /// `done` past every byte received, so that a throw leaves it counting what was kept.
    private func transfer(into buffer: UnsafeMutableRawBufferPointer, done: inout Int) throws(EGDConnectionError) {
        let connection = try connected()
        var plan: EGDReadPlan
        do { plan = try EGDReadPlan(totalCount: buffer.count - done) } catch { throw .invalidRequest(error) }
        // Commands sent and not fully answered, and the bytes they still owe. Invariant:
        // done + owedInFlight + plan.remaining == buffer.count.
        var commandsInFlight = decoder.outstandingCount
        var owedInFlight = 0
        while done < buffer.count {
            var length = 0
            while commandsInFlight < configuration.pipelineDepth, let request = plan.nextRequest(blocking: true) {
                do {
                    length += try request.encode(into: UnsafeMutableRawBufferPointer(rebasing: sendBuffer[length...]))
                    try decoder.expectResponse(to: request)
                } catch {
                    throw .invalidRequest(error)
                }
                if case .readBlocking(let count) = request { owedInFlight += Int(count) }
                commandsInFlight += 1
            }
            if length > 0 { try connection.send(UnsafeRawBufferPointer(rebasing: sendBuffer[..<length])) }
            // Receive straight into the caller's buffer, never more than the commands in flight
            // ask for (as QEMU's chr_can_read does): a surplus byte stays in the socket.
            let window = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + owedInFlight)])
            let count = try connection.receive(into: window)
            guard count > 0 else {
                do { try decoder.finish() } catch {
                    if case .truncatedMessage(let byte, let offset) = error, let command = EGDCommand(rawValue: byte) {
                        throw .closedMidResponse(command: command, offset: offset)
                    }
                    throw .protocolViolation(error)
                }
                throw .closedMidResponse(command: .readBlocking, offset: decoder.streamOffset)
            }
            // The bytes are random data already; the decoder frames them into answers, so that the
            // pipeline is topped up as each command completes.
            var input = UnsafeRawBufferPointer(window)[..<count]
            do throws(EGDDecodingError) {
                while let response = try decoder.decode(&input) {
                    guard case .blockingData = response else {
                        throw EGDDecodingError.unexpectedByte(byte: 0, offset: decoder.streamOffset)
                    }
                    commandsInFlight -= 1
                }
            } catch {
                throw .protocolViolation(error)
            }
            done += count
            owedInFlight -= count
        }
    }

    /// The open connection, or a new one (with a fresh decoder) if there is none.
    private func connected() throws(EGDConnectionError) -> EGDConnection {
        if let connection { return connection }
        let fresh = try EGDConnection.connect(to: endpoint, timeout: configuration.connectTimeout)
        fresh.timeout = configuration.readTimeout
        connection = fresh
        decoder = EGDResponseDecoder()
        connectionCount += 1
        return fresh
    }

    /// Whether another connection may succeed where this one failed: yes for refused, timed-out
    /// and dropped connections and failed system calls; no for an unusable endpoint or a server
    /// that is not speaking EGD.
    static func isRetryable(_ error: EGDConnectionError) -> Bool {
        switch error {
        case .invalidAddress, .socketPathTooLong, .protocolViolation, .invalidRequest:
            return false
        case .resolutionFailed, .connectionRefused, .connectFailed, .timedOut, .closedMidResponse, .system:
            return true
        }
    }

    /// Blocks the calling thread for `duration` (`nanosleep(2)`, resumed after signals).
    public static func sleepThread(_ duration: Duration) {
        let nanoseconds = RemoteEGDConfiguration.Backoff.nanoseconds(duration)
        var request = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }
}
