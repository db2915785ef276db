import EGDCodec
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A one-connection EGD server on a unix socket in a fresh temp directory, built on EGDCodec.
///
/// It accepts one client, serves it according to `behaviour` and exits; every wait is bounded
/// (accept 10 s, each receive 5 s), so a failing test cannot hang. State is written by the server
/// thread before it signals `done` and read by the test only after `finish()` waits on it: the
/// semaphore orders the accesses, hence `@unchecked Sendable`.
final class TestEGDServer: @unchecked Sendable {
    enum Behaviour {
        /// Answers everything: level 4096 bits, PID 4242, read answers from ``byte(at:)`` (blocking
        /// answers in pieces of at most 100 bytes; non-blocking answers at most 10 bytes).
        case serve
        /// Answers the first read with half its bytes, then closes.
        case closeMidResponse
        /// Reads requests and never answers.
        case silent
    }

    /// Byte `i` of the entropy stream the server hands out.
    static func byte(at index: Int) -> UInt8 { UInt8(truncatingIfNeeded: index &* 7 &+ 3) }

    let directory: String
    let path: String
    /// The TCP port on 127.0.0.1 when created with `tcp: true`, else 0.
    private(set) var port: UInt16 = 0
    private let behaviour: Behaviour
    private let listener: CInt
    private let done = DispatchSemaphore(value: 0)
    /// Requests received, in order (valid after `finish()`).
    private(set) var requests: [EGDRequest] = []
    private var served = 0

    /// A server socket that is bound and listening (or, with `listening: false`, bound only, so
    /// connecting to it is refused); on a unix socket in a temp dir, or with `tcp: true` on an
    /// ephemeral port of 127.0.0.1.
    init(behaviour: Behaviour, listening: Bool = true, tcp: Bool = false) throws {
        var template = Array("/tmp/egd-client-test-XXXXXX".utf8CString)
        guard let created = mkdtemp(&template) else { throw POSIXError(.EIO) }
        directory = String(cString: created)
        path = directory + "/egd-pool"
        self.behaviour = behaviour
        let bound: CInt
        if tcp {
            listener = socket(AF_INET, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = in_addr_t(0x7F00_0001).bigEndian
            let size = socklen_t(MemoryLayout<sockaddr_in>.size)
            bound = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                    var length = size
                    guard bind(listener, pointer, size) == 0 else { return -1 }
                    return getsockname(listener, pointer, &length)
                }
            }
            port = UInt16(bigEndian: address.sin_port)
        } else {
            listener = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(path.utf8)
            withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
            bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
        }
        guard bound == 0, !listening || listen(listener, 1) == 0 else { throw POSIXError(.EADDRINUSE) }
        if listening {
            Thread { [self] in
                serveOneClient()
                done.signal()
            }.start()
        } else {
            done.signal()
        }
    }

    /// Waits (at most 15 s) for the server thread, then removes the socket and directory.
    func finish() {
        _ = done.wait(timeout: .now() + 15)
        close(listener)
        unlink(path)
        rmdir(directory)
    }

    private func serveOneClient() {
        var entry = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
        guard poll(&entry, 1, 10_000) == 1 else { return }
        let client = accept(listener, nil, nil)
        guard client >= 0 else { return }
        defer { close(client) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var decoder = EGDRequestDecoder()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { return }
            var input = buffer[..<count]
            do {
                while let request = try decoder.decode(&input) {
                    requests.append(request)
                    guard answer(request, on: client) else { return }
                }
            } catch {
                return  // not EGD: close, as servers do
            }
        }
    }

    /// Answers one request; false when the connection should close.
    private func answer(_ request: EGDRequest, on client: CInt) -> Bool {
        if case .silent = behaviour { return true }
        var bytes: [UInt8] = []
        switch request {
        case .entropyLevel: try? EGDResponse.entropyLevel(bits: 4096).append(to: &bytes)
        case .reportPID: try? EGDResponse.processID(4242).append(to: &bytes)
        case .writeEntropy: return true
        case .readNonBlocking(let count):
            let data = (0..<min(Int(count), 10)).map { Self.byte(at: served + $0) }
            served += data.count
            try? EGDResponse.nonBlockingData(try! EGDPayload(data)).append(to: &bytes)
        case .readBlocking(let count):
            var data = (0..<Int(count)).map { Self.byte(at: served + $0) }
            served += data.count
            if case .closeMidResponse = behaviour {
                data = Array(data.prefix(data.count / 2))
                sendAll(data, on: client)
                return false
            }
            // A blocking answer in pieces, as a server whose pool runs short sends it.
            var rest = data[...]
            while !rest.isEmpty {
                sendAll(Array(rest.prefix(100)), on: client)
                rest = rest.dropFirst(100)
            }
            return true
        }
        sendAll(bytes, on: client)
        return true
    }

    private func sendAll(_ bytes: [UInt8], on client: CInt) {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { send(client, $0.baseAddress, $0.count, CInt(MSG_NOSIGNAL)) }
            guard sent > 0 else { return }
            offset += sent
        }
    }
}
