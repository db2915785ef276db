public import EGDCodec

/// Where an EGD server listens: a unix-domain stream socket or a TCP address.
public enum EGDEndpoint: Sendable, Hashable, CustomStringConvertible {
    /// A unix-domain stream socket, conventionally `/dev/egd-pool` or `/var/run/egd-pool`.
    case unix(path: String)
    /// A TCP address; `host` is a name or numeric address (ekeyd's default is 127.0.0.1:8888).
    case tcp(host: String, port: UInt16)

    /// Parses `HOST:PORT`, where a numeric IPv6 host is bracketed (`[::1]:8888`).
    ///
    /// - Throws: ``EGDConnectionError/invalidAddress(_:)`` for a missing host or a port outside
    ///   `1...65535`.
    public init(tcpAddress address: String) throws(EGDConnectionError) {
        guard let colon = address.lastIndex(of: ":") else { throw .invalidAddress(address) }
        var host = address[..<colon]
        if host.hasPrefix("[") && host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard !host.isEmpty, let port = UInt16(address[address.index(after: colon)...]), port > 0 else {
            throw .invalidAddress(address)
        }
        self = .tcp(host: String(host), port: port)
    }

    /// `unix:PATH` or `tcp:HOST:PORT`.
    public var description: String {
        switch self {
        case .unix(let path): return "unix:\(path)"
        case .tcp(let host, let port): return host.contains(":") ? "tcp:[\(host)]:\(port)" : "tcp:\(host):\(port)"
        }
    }
}

/// Why talking to an EGD server failed: each case names the step and wraps `errno` or the
/// protocol error, so callers match exact cases.
public enum EGDConnectionError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The system call a failure happened in.
    public enum Operation: String, Sendable, Hashable {
        /// `socket(2)`.
        case socket
        /// `connect(2)`, including waiting for a TCP handshake.
        case connect
        /// `poll(2)`.
        case poll
        /// `recv(2)`: waiting for or reading a response.
        case receive
        /// `send(2)`: sending a request.
        case send
        /// `setsockopt(2)`.
        case setOption
    }

    /// `HOST:PORT` that does not parse.
    case invalidAddress(String)
    /// A unix socket path longer than `sockaddr_un` holds (`limit` bytes, excluding the NUL).
    case socketPathTooLong(path: String, limit: Int)
    /// `getaddrinfo(3)` failed with `code` (an `EAI_*` value).
    case resolutionFailed(host: String, code: Int32)
    /// Nobody listens at the endpoint (`ECONNREFUSED`).
    case connectionRefused(EGDEndpoint)
    /// Connecting to the endpoint failed with `errno` (for example `ENOENT`: no socket at the path).
    case connectFailed(EGDEndpoint, errno: Int32)
    /// The server neither accepted data nor sent any for `milliseconds` during `operation`.
    case timedOut(Operation, milliseconds: Int)
    /// The server closed the connection before answering in full: still awaiting the answer to
    /// `command`, whose bytes began (or were due) at response-stream offset `offset`.
    case closedMidResponse(command: EGDCommand, offset: UInt64)
    /// A system call failed with `errno`.
    case system(Operation, errno: Int32)
    /// The server's bytes are not EGD.
    case protocolViolation(EGDDecodingError)
    /// The request cannot be encoded (for example a count over 255 given to a single command).
    case invalidRequest(EGDEncodingError)

    /// One line naming the failure.
    public var description: String {
        switch self {
        case .invalidAddress(let address): return "invalid TCP address '\(address)' (expected HOST:PORT)"
        case .socketPathTooLong(let path, let limit): return "unix socket path longer than \(limit) bytes: \(path)"
        case .resolutionFailed(let host, let code): return "cannot resolve '\(host)': \(gaiMessage(code))"
        case .connectionRefused(let endpoint): return "connection refused: \(endpoint)"
        case .connectFailed(let endpoint, let code):
            return "cannot connect to \(endpoint): \(errnoMessage(code)) (errno \(code))"
        case .timedOut(let operation, let milliseconds):
            let step = operation == .connect ? "connecting" : operation == .send ? "sending" : "waiting for the server"
            return "timed out after \(milliseconds) ms \(step)"
        case .closedMidResponse(let command, let offset):
            return "server closed the connection mid-response (awaiting the answer to \(command) at offset \(offset))"
        case .system(let operation, let code): return "\(operation.rawValue): \(errnoMessage(code)) (errno \(code))"
        case .protocolViolation(let error): return "server violated the EGD protocol: \(error)"
        case .invalidRequest(let error): return "invalid request: \(error)"
        }
    }
}
