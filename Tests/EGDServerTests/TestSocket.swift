#if canImport(Glibc)
    import Glibc
#endif

/// A blocking client socket with a receive timeout, for driving the server byte by byte.
final class TestSocket {
    private(set) var fd: Int32

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Connects to a unix socket.
    init(unix path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(errno)") }
        guard withUnixAddress(path, { connect(fd, $0, $1) }) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw Failure(description: "connect \(path): errno \(code)")
        }
    }

    deinit { close() }

    func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    func send(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL))
            }
            guard n > 0 else { throw Failure(description: "send: errno \(errno)") }
            sent += n
        }
    }

    /// Sends without waiting; returns how many bytes the kernel took (0 when its buffer is full).
    func sendNonBlocking(_ bytes: [UInt8]) -> Int {
        let n = bytes.withUnsafeBytes {
            Glibc.send(fd, $0.baseAddress!, bytes.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
        }
        return max(n, 0)
    }

    func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

    /// What happened when waiting for bytes.
    enum Received: Equatable {
        case bytes([UInt8])
        case closed
        case timedOut
    }

    /// Waits up to `milliseconds` for some bytes (at most `maximum`).
    func receive(maximum: Int = 65_536, milliseconds: Int32) -> Received {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&pfd, 1, milliseconds)
        guard ready > 0 else { return .timedOut }
        var buffer = [UInt8](repeating: 0, count: maximum)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, maximum, 0) }
        if n <= 0 { return .closed }
        return .bytes(Array(buffer[0..<n]))
    }

    /// Receives exactly `count` bytes within `milliseconds` in all, or throws.
    func receiveExactly(_ count: Int, milliseconds: Int = 5_000) throws -> [UInt8] {
        var out: [UInt8] = []
        let deadline = monotonicMilliseconds() + milliseconds
        while out.count < count {
            let left = deadline - monotonicMilliseconds()
            guard left > 0 else { throw Failure(description: "timed out after \(out.count) of \(count) bytes") }
            switch receive(maximum: count - out.count, milliseconds: Int32(left)) {
            case .bytes(let b): out += b
            case .closed: throw Failure(description: "closed after \(out.count) of \(count) bytes")
            case .timedOut: throw Failure(description: "timed out after \(out.count) of \(count) bytes")
            }
        }
        return out
    }

    /// Waits for end of stream (or a reset), discarding bytes; false on timeout.
    func waitForClose(milliseconds: Int) -> Bool {
        let deadline = monotonicMilliseconds() + milliseconds
        while true {
            let left = deadline - monotonicMilliseconds()
            guard left > 0 else { return false }
            switch receive(milliseconds: Int32(left)) {
            case .closed: return true
            case .timedOut: return false
            case .bytes: continue
            }
        }
    }

    /// Sets the receive buffer small, so a client that does not read fills up quickly.
    func setReceiveBuffer(_ bytes: Int32) {
        var value = bytes
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &value, socklen_t(MemoryLayout<Int32>.size))
    }
}

/// Calls `body` with `path` as a `sockaddr_un` (for connect or bind).
func withUnixAddress(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        raw.copyBytes(from: bytes)
        raw[bytes.count] = 0
    }
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
}

func monotonicMilliseconds() -> Int {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return now.tv_sec * 1_000 + now.tv_nsec / 1_000_000
}

/// A fresh directory for sockets, removed by `remove()`.
struct TemporaryDirectory {
    let path: String

    init() {
        var template = Array("/tmp/virtrng-egd-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        path = made.map { String(cString: $0) } ?? "/tmp"
    }

    func remove() {
        if let dir = opendir(path) {
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
                }
                if name != "." && name != ".." { unlink(path + "/" + name) }
            }
            closedir(dir)
        }
        rmdir(path)
    }
}
