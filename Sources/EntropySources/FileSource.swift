#if canImport(Glibc)
    import Glibc
#endif

/// Any file or character device: `/dev/urandom`, a FIFO fed by another program, a regular file of
/// test data, a USB TRNG's character device (QEMU's `rng-random`, vhost-device-rng's `--rng-source`).
///
/// Each ``fill(_:)`` is one `read(2)` (retried on `EINTR`): it may return fewer bytes than asked, as
/// a FIFO or a device does, and end of file is ``EntropySourceError/exhausted(source:)``, never a
/// zero-length fill. The descriptor is opened read-only with `O_CLOEXEC` and closed when the value
/// is released.
///
/// ``mayBlock`` is `false` for regular files and for the paths `/dev/urandom` and `/dev/random` (since
/// Linux 5.6 both block only before the CRNG is ready) and `true` for everything else
/// (FIFOs, sockets, other devices): run those on a dedicated thread, e.g. a ``PrefetchPool``.
///
/// Not thread-safe: one owner calls ``fill(_:)`` at a time (the pool's filler thread, or one
/// caller). It is `Sendable` so that ownership can move to such a thread.
public final class FileSource: EntropySource, @unchecked Sendable {
    // @unchecked Sendable: the only mutable state is the descriptor, closed in deinit; `fill` is
    // documented as single-owner, and moving the owner to another thread is what `Sendable` is for.

    /// The path opened (the source's ``name``).
    public let path: String
    /// See the type's discussion.
    public let mayBlock: Bool
    let fd: Int32
    let calls: SystemCalls

    /// Opens `path` read-only. `nonBlocking` adds `O_NONBLOCK`, so a device or FIFO without data
    /// throws ``EntropySourceError/wouldBlock(source:)`` instead of waiting.
    public convenience init(path: String, nonBlocking: Bool = false) throws(EntropySourceError) {
        try self.init(path: path, nonBlocking: nonBlocking, calls: .live)
    }

    init(path: String, nonBlocking: Bool, calls: SystemCalls) throws(EntropySourceError) {
        self.path = path
        self.calls = calls
        var flags = O_RDONLY | O_CLOEXEC
        if nonBlocking { flags |= O_NONBLOCK }
        var fd: Int32
        repeat { fd = calls.open(path, flags) } while fd == -EINTR
        guard fd >= 0 else { throw Self.openError(path: path, errno: -fd, calls: calls) }
        self.fd = fd
        if let (mode, _) = calls.fileStatus(fd) {
            let kind = mode & UInt32(S_IFMT)
            if kind == UInt32(S_IFREG) {
                mayBlock = false
            } else if kind == UInt32(S_IFCHR) {
                mayBlock = !Self.isKernelCSPRNG(path: path)
            } else {
                mayBlock = true
            }
        } else {
            mayBlock = true
        }
    }

    deinit { calls.close(fd) }

    /// The source's name: its path.
    public var name: String { path }

    /// One `read(2)` into `buffer`; returns 1...buffer.count bytes.
    public func fill(_ buffer: UnsafeMutableRawBufferPointer) throws(EntropySourceError) -> Int {
        guard !buffer.isEmpty else { return 0 }
        while true {
            let n = calls.read(fd, buffer)
            if n > 0 { return min(n, buffer.count) }
            if n == 0 { throw .exhausted(source: path) }
            switch Int32(truncatingIfNeeded: -n) {
            case EINTR: continue
            case EAGAIN: throw .wouldBlock(source: path)
            case ENODEV: throw .noHardwareRNG(path: path, available: [])
            case let code: throw .readFailed(source: path, errno: SystemErrno(code))
            }
        }
    }

    /// Maps an `open(2)` errno to the error naming it; for EACCES/EPERM says whether the file is
    /// root-only (owned by uid 0, no permission bits for group or others).
    static func openError(path: String, errno code: Int32, calls: SystemCalls) -> EntropySourceError {
        switch code {
        case ENOENT:
            return .notFound(path: path)
        case EACCES, EPERM:
            var rootOnly = false
            if let (mode, uid) = calls.pathStatus(path) {
                rootOnly = uid == 0 && mode & 0o077 == 0
            }
            return .permissionDenied(path: path, rootOnly: rootOnly)
        default:
            return .openFailed(path: path, errno: SystemErrno(code))
        }
    }

    private static func isKernelCSPRNG(path: String) -> Bool {
        path == "/dev/urandom" || path == "/dev/random"
    }
}
