#if canImport(Glibc)
    import Glibc
#endif

/// What lies at a unix socket path before the server binds it.
enum SocketFileState: Equatable {
    /// Nothing: bind creates it.
    case absent
    /// A socket nobody accepts on (a daemon that died without cleaning up): safe to remove.
    case stale
    /// A socket a live process accepts connections on.
    case live
    /// Some other file.
    case notASocket
    /// The path could not be examined (permissions, a missing directory, too long).
    case unusable(String)
}

enum SocketFile {
    /// Examines `path` without changing anything: `lstat`, then a connect attempt for sockets.
    static func state(of path: String) -> SocketFileState {
        var info = stat()
        if lstat(path, &info) != 0 {
            return errno == ENOENT ? .absent : .unusable(String(cString: strerror(errno)))
        }
        guard info.st_mode & S_IFMT == S_IFSOCK else { return .notASocket }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .unusable(String(cString: strerror(errno))) }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return .unusable("path too long") }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if result == 0 { return .live }
        switch errno {
        case ECONNREFUSED, ENOENT: return .stale
        // A full backlog means a live daemon that is busy.
        case EAGAIN: return .live
        default: return .unusable(String(cString: strerror(errno)))
        }
    }

    /// Makes `path` free for bind: removes a stale socket; refuses a live one and any other file.
    /// Returns true when a stale socket was removed.
    static func prepare(_ path: String) throws(EGDServerError) -> Bool {
        switch state(of: path) {
        case .absent: return false
        case .stale:
            guard unlink(path) == 0 || errno == ENOENT else {
                throw .cannotBind(
                    endpoint: path, reason: "cannot remove stale socket: \(String(cString: strerror(errno)))")
            }
            return true
        case .live: throw .socketInUse(path: path)
        case .notASocket: throw .pathNotASocket(path: path)
        case .unusable(let reason): throw .cannotBind(endpoint: path, reason: reason)
        }
    }

    /// Removes the socket at `path` if it is still the one this process bound (same inode).
    static func remove(_ path: String, inode: UInt64?) {
        var info = stat()
        guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFSOCK else { return }
        if let inode, UInt64(info.st_ino) != inode { return }
        unlink(path)
    }

    /// The inode of the socket at `path`, to recognise it at shutdown.
    static func inode(of path: String) -> UInt64? {
        var info = stat()
        guard lstat(path, &info) == 0 else { return nil }
        return UInt64(info.st_ino)
    }
}
