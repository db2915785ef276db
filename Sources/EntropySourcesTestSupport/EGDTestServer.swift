import EGDCodec
public import EntropySources
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// An EGD server on a unix socket in a fresh temp directory, for tests and benchmarks, that can
/// drop connections, stall, refuse and restart on the same path.
///
/// It serves one connection at a time on a thread of its own, decoding requests with
/// `EGDRequestDecoder`. Blocking reads (`02 NN`) are answered in order from one stream that runs
/// on across connections, byte `i` being ``byte(at:)``, in pieces of at most ``chunkSize`` bytes;
/// so a client that reconnected and kept every byte it got holds exactly `byte(at: 0..<n)`.
/// Each accepted connection follows the next ``ConnectionPlan`` (``ConnectionPlan/serve`` once
/// the script is empty). Every wait is bounded (polls of 20 ms that check for ``stop()``), so a
/// failing test cannot hang.
public final class EGDTestServer: Sendable {
    /// What the server does with one accepted connection.
    public enum ConnectionPlan: Sendable, Hashable {
        /// Answers every request in full.
        case serve
        /// Sends `bytes` bytes of answers, then closes the connection.
        case dropAfter(bytes: Int)
        /// Sends `bytes` bytes of answers, then closes the connection and stops listening
        /// (unlinks the socket), as a crashing server does; ``start()`` brings it back.
        case crashAfter(bytes: Int)
        /// Sends `bytes` bytes of answers, then reads on but never answers again.
        case stallAfter(bytes: Int)
        /// Closes the connection as soon as it is accepted.
        case closeOnAccept
    }

    /// Everything the server saw, for assertions.
    public struct Record: Sendable {
        /// The raw request bytes of each connection, in order of acceptance.
        public var requestBytes: [[UInt8]] = []
        /// Answer bytes handed to a socket, over all connections: the stream position.
        public var sent = 0
    }

    /// Byte `i` of the stream the server hands out (period 65,536, so no short gap or repeat
    /// goes unnoticed).
    public static func byte(at index: Int) -> UInt8 {
        UInt8(truncatingIfNeeded: index &* 7 &+ 3 &+ (index >> 8))
    }

    /// The stream's period: it is sent from one precomputed table of this many bytes.
    static let period = 65_536

    /// The temp directory holding the socket.
    public let directory: String
    /// The socket's path.
    public let path: String
    /// The largest piece a blocking answer is sent in.
    public let chunkSize: Int
    /// Whether ``Record/requestBytes`` is kept (off for benchmarks: it grows without bound).
    public let recordsRequests: Bool
    /// One period of the stream; written once in `init`, read-only afterwards.
    private nonisolated(unsafe) let table: UnsafeMutableRawBufferPointer
    private let state: Mutex<State>

    struct State: Sendable {
        var record = Record()
        var plans: [ConnectionPlan]
        var listener: CInt = -1
        var thread: pthread_t?
        var stopping = false
    }

    /// A server (not yet listening) whose connections follow `plans` in order.
    public init(plans: [ConnectionPlan] = [], chunkSize: Int = 100, recordsRequests: Bool = true) {
        var template = Array("/tmp/egd-source-test-XXXXXX".utf8CString)
        let created = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        directory = created.map { String(cString: $0) } ?? "/tmp"
        path = directory + "/egd-pool"
        self.chunkSize = chunkSize
        self.recordsRequests = recordsRequests
        table = .allocate(byteCount: Self.period, alignment: 64)
        for index in 0..<Self.period { table[index] = Self.byte(at: index) }
        state = Mutex(State(plans: plans))
    }

    deinit {
        stop()
        rmdir(directory)
        table.deallocate()
    }

    /// The endpoint to connect to.
    public var endpoint: EGDEndpoint { .unix(path: path) }

    /// A copy of what the server saw so far.
    public var record: Record { state.withLock { $0.record } }

    /// Appends connection plans to the script.
    public func script(_ plans: [ConnectionPlan]) { state.withLock { $0.plans += plans } }

    /// Binds and listens on ``path`` and starts the serving thread; a server that is already
    /// running is stopped first. Returns false when the socket cannot be bound.
    @discardableResult
    public func start() -> Bool {
        stop()
        let listener = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0, listen(listener, 8) == 0 else {
            close(listener)
            return false
        }
        var thread = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        state.withLock {
            $0.listener = listener
            $0.stopping = false
        }
        let started = pthread_create(
            &thread, nil,
            { context in
                let server = Unmanaged<EGDTestServer>.fromOpaque(context!).takeRetainedValue()
                server.run()
                return nil
            }, context)
        guard started == 0 else {
            Unmanaged<EGDTestServer>.fromOpaque(context).release()
            return false
        }
        state.withLock { $0.thread = thread }
        return true
    }

    /// Stops the serving thread (closing any connection), closes the listener and unlinks the
    /// socket. Idempotent; callable from any thread but the server's own.
    public func stop() {
        let thread = state.withLock { state -> pthread_t? in
            state.stopping = true
            defer { state.thread = nil }
            return state.thread
        }
        if let thread { pthread_join(thread, nil) }
        shutDownListener()
    }

    private func shutDownListener() {
        let listener = state.withLock { state -> CInt in
            defer { state.listener = -1 }
            return state.listener
        }
        if listener >= 0 {
            unlink(path)
            close(listener)
        }
    }

    private var stopping: Bool { state.withLock { $0.stopping } }

    private func run() {
        while !stopping {
            let listener = state.withLock { $0.listener }
            guard listener >= 0 else { return }
            var entry = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            guard poll(&entry, 1, 20) == 1 else { continue }
            let client = accept(listener, nil, nil)
            guard client >= 0 else { continue }
            let plan = state.withLock { state -> ConnectionPlan in
                if recordsRequests { state.record.requestBytes.append([]) }
                return state.plans.isEmpty ? .serve : state.plans.removeFirst()
            }
            let crash = serve(client, plan: plan)
            if crash {
                shutDownListener()
                close(client)
                return
            }
            close(client)
        }
    }

    /// Serves one connection until the client leaves, the plan ends it or the server stops;
    /// returns whether the plan was a crash.
    private func serve(_ client: CInt, plan: ConnectionPlan) -> Bool {
        let limit: Int
        switch plan {
        case .closeOnAccept: return false
        case .serve: limit = .max
        case .dropAfter(let bytes), .crashAfter(let bytes), .stallAfter(let bytes): limit = bytes
        }
        var decoder = EGDRequestDecoder()
        var input = [UInt8](repeating: 0, count: 4096)
        var sentHere = 0
        var owed = 0
        while !stopping {
            // Answer what is owed, in pieces, up to the plan's limit.
            while owed > 0 && sentHere < limit {
                let piece = min(owed, chunkSize, limit - sentHere)
                // Counted before sending, so a client that has the bytes never sees a stale count.
                let start = state.withLock { state -> Int in
                    defer { state.record.sent += piece }
                    return state.record.sent
                }
                guard sendStream(from: start, count: piece, on: client) else { return false }
                sentHere += piece
                owed -= piece
            }
            if sentHere >= limit {
                switch plan {
                case .dropAfter: return false
                case .crashAfter: return true
                default: break
                }
            }
            var entry = pollfd(fd: client, events: Int16(POLLIN), revents: 0)
            guard poll(&entry, 1, 20) == 1 else { continue }
            let count = input.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { return false }
            if recordsRequests {
                state.withLock { $0.record.requestBytes[$0.record.requestBytes.count - 1] += input[..<count] }
            }
            var pending = input[..<count]
            do {
                while let request = try decoder.decode(&pending) {
                    if case .readBlocking(let n) = request { owed += Int(n) }
                }
            } catch {
                return false  // not EGD: close, as servers do
            }
        }
        return false
    }

    /// Sends stream bytes `start..<start + count` from ``table`` (no allocation).
    private func sendStream(from start: Int, count: Int, on client: CInt) -> Bool {
        var position = start
        let end = start + count
        while position < end {
            let index = position & (Self.period - 1)
            let length = min(end - position, Self.period - index)
            let sent = send(client, table.baseAddress! + index, length, CInt(MSG_NOSIGNAL))
            guard sent > 0 else { return false }
            position += sent
        }
        return true
    }
}
