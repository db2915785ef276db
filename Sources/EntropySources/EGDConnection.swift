#if canImport(Glibc)
    import Glibc
#endif

/// A blocking stream connection to an EGD server, over a unix socket or TCP.
///
/// The socket is non-blocking underneath: every wait is a `poll(2)` bounded by ``timeout``, so a
/// silent or stalled server turns into ``EGDConnectionError/timedOut(_:milliseconds:)`` rather
/// than a hang. `EINTR` is retried (a retried wait starts its timeout afresh); short sends are
/// completed; `SIGPIPE` is suppressed (`MSG_NOSIGNAL`), a closed peer surfacing as `EPIPE`. TCP
/// connections set `TCP_NODELAY`: EGD requests are tiny, and with Nagle plus delayed ACK a
/// pipelining client waits about 40 ms a round (TOOLCHAIN.md measured 12 kB/s against 4 MB/s).
///
/// This is transport only; ``EGDClient`` speaks the protocol over it.
public final class EGDConnection {
    /// The endpoint this connection reached.
    public let endpoint: EGDEndpoint
    /// The longest any single wait (connect, send, receive) may take.
    public var timeout: Duration
    private var descriptor: CInt

    private init(endpoint: EGDEndpoint, descriptor: CInt, timeout: Duration) {
        self.endpoint = endpoint
        self.descriptor = descriptor
        self.timeout = timeout
    }

    deinit { close() }

    /// Connects to `endpoint`, waiting at most `timeout` (per address tried, for TCP).
    ///
    /// - Throws: ``EGDConnectionError/connectionRefused(_:)`` when nobody listens,
    ///   ``EGDConnectionError/timedOut(_:milliseconds:)``, ``EGDConnectionError/resolutionFailed(host:code:)``,
    ///   ``EGDConnectionError/socketPathTooLong(path:limit:)`` or ``EGDConnectionError/system(_:errno:)``.
    public static func connect(to endpoint: EGDEndpoint, timeout: Duration) throws(EGDConnectionError) -> EGDConnection
    {
        switch endpoint {
        case .unix(let path):
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let limit = MemoryLayout.size(ofValue: address.sun_path) - 1
            let bytes = Array(path.utf8)
            guard bytes.count <= limit else { throw .socketPathTooLong(path: path, limit: limit) }
            withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
            let descriptor = try openSocket(family: AF_UNIX)
            do {
                try withUnsafeBytes(of: &address) { (raw) throws(EGDConnectionError) in
                    let pointer = raw.baseAddress.unsafelyUnwrapped.assumingMemoryBound(to: sockaddr.self)
                    try connectSocket(descriptor, pointer, socklen_t(raw.count), endpoint: endpoint, timeout: timeout)
                }
            } catch {
                _ = Glibc.close(descriptor)
                throw error
            }
            return EGDConnection(endpoint: endpoint, descriptor: descriptor, timeout: timeout)
        case .tcp(let host, let port):
            var hints = addrinfo()
            hints.ai_family = AF_UNSPEC
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var list: UnsafeMutablePointer<addrinfo>?
            let code = getaddrinfo(host, String(port), &hints, &list)
            guard code == 0, let first = list else { throw .resolutionFailed(host: host, code: code) }
            defer { freeaddrinfo(first) }
            var lastError = EGDConnectionError.connectionRefused(endpoint)
            var candidate: UnsafeMutablePointer<addrinfo>? = first
            while let info = candidate {
                candidate = info.pointee.ai_next
                let descriptor: CInt
                do { descriptor = try openSocket(family: info.pointee.ai_family) } catch {
                    lastError = error
                    continue
                }
                do throws(EGDConnectionError) {
                    try connectSocket(
                        descriptor, info.pointee.ai_addr, info.pointee.ai_addrlen, endpoint: endpoint, timeout: timeout)
                    var one: CInt = 1
                    guard
                        setsockopt(descriptor, CInt(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<CInt>.size))
                            == 0
                    else {
                        throw .system(.setOption, errno: errno)
                    }
                    return EGDConnection(endpoint: endpoint, descriptor: descriptor, timeout: timeout)
                } catch {
                    _ = Glibc.close(descriptor)
                    lastError = error
                }
            }
            throw lastError
        }
    }

    /// Sends all of `bytes`, waiting (at most ``timeout`` each time) while the socket is full.
    ///
    /// - Throws: ``EGDConnectionError/timedOut(_:milliseconds:)`` or
    ///   ``EGDConnectionError/system(_:errno:)`` (`EPIPE`, `ECONNRESET` when the server is gone).
    public func send(_ bytes: UnsafeRawBufferPointer) throws(EGDConnectionError) {
        var sent = 0
        while sent < bytes.count {
            let result = Glibc.send(
                descriptor, bytes.baseAddress.unsafelyUnwrapped + sent, bytes.count - sent, CInt(MSG_NOSIGNAL))
            if result >= 0 {
                sent += result
                continue
            }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: try wait(for: Int16(POLLOUT), operation: .send)
            case let code: throw .system(.send, errno: code)
            }
        }
    }

    /// Receives at most `buffer.count` bytes, waiting up to ``timeout`` for the first; returns the
    /// number received, 0 when the server closed the connection.
    ///
    /// - Throws: ``EGDConnectionError/timedOut(_:milliseconds:)`` or ``EGDConnectionError/system(_:errno:)``.
    public func receive(into buffer: UnsafeMutableRawBufferPointer) throws(EGDConnectionError) -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        while true {
            let result = recv(descriptor, base, buffer.count, 0)
            if result >= 0 { return result }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: try wait(for: Int16(POLLIN), operation: .receive)
            case let code: throw .system(.receive, errno: code)
            }
        }
    }

    /// Closes the socket; later sends and receives fail with `EBADF`. Idempotent.
    public func close() {
        guard descriptor >= 0 else { return }
        _ = Glibc.close(descriptor)
        descriptor = -1
    }

    private func wait(for events: Int16, operation: EGDConnectionError.Operation) throws(EGDConnectionError) {
        try Self.poll(descriptor, events: events, timeout: timeout, operation: operation)
    }

    /// Waits until `descriptor` is ready for `events` (an error or hang-up also counts as ready:
    /// the following call reports it), or throws on timeout.
    private static func poll(
        _ descriptor: CInt,
        events: Int16,
        timeout: Duration,
        operation: EGDConnectionError.Operation
    ) throws(EGDConnectionError) {
        let milliseconds = Self.milliseconds(timeout)
        var entry = pollfd(fd: descriptor, events: events, revents: 0)
        while true {
            let ready = Glibc.poll(&entry, 1, CInt(clamping: milliseconds))
            if ready > 0 { return }
            if ready == 0 { throw .timedOut(operation, milliseconds: milliseconds) }
            if errno != EINTR { throw .system(.poll, errno: errno) }
        }
    }

    /// `timeout` in whole milliseconds, rounded up, at least 0.
    static func milliseconds(_ timeout: Duration) -> Int {
        let (seconds, attoseconds) = timeout.components
        guard seconds >= 0 else { return 0 }
        let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1000)
        guard !overflow else { return Int(CInt.max) }
        let fraction = (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
        return Int(clamping: whole + fraction)
    }

    private static func openSocket(family: CInt) throws(EGDConnectionError) -> CInt {
        let type = CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue)
        let descriptor = socket(family, type, 0)
        guard descriptor >= 0 else { throw .system(.socket, errno: errno) }
        return descriptor
    }

    /// Non-blocking connect, then a bounded wait for completion and its `SO_ERROR`.
    private static func connectSocket(
        _ descriptor: CInt,
        _ address: UnsafePointer<sockaddr>,
        _ length: socklen_t,
        endpoint: EGDEndpoint,
        timeout: Duration
    ) throws(EGDConnectionError) {
        var code: CInt = 0
        if Glibc.connect(descriptor, address, length) != 0 {
            code = errno
            // EINTR: the connection proceeds asynchronously, as with EINPROGRESS (POSIX connect()).
            if code == EINPROGRESS || code == EINTR || code == EAGAIN {
                try poll(descriptor, events: Int16(POLLOUT), timeout: timeout, operation: .connect)
                var length = socklen_t(MemoryLayout<CInt>.size)
                guard getsockopt(descriptor, SOL_SOCKET, SO_ERROR, &code, &length) == 0 else {
                    throw .connectFailed(endpoint, errno: errno)
                }
            }
        }
        switch code {
        case 0: return
        case ECONNREFUSED: throw .connectionRefused(endpoint)
        case ETIMEDOUT: throw .timedOut(.connect, milliseconds: milliseconds(timeout))
        default: throw .connectFailed(endpoint, errno: code)
        }
    }
}

func errnoMessage(_ code: Int32) -> String {
    guard let message = strerror(code) else { return "error \(code)" }
    return String(cString: message)
}

func gaiMessage(_ code: Int32) -> String {
    guard let message = gai_strerror(code) else { return "error \(code)" }
    return String(cString: message)
}
