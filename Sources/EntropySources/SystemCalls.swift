internal import CEntropyShims

#if canImport(Glibc)
    import Glibc
#endif

/// The system calls the file and getrandom sources make, each returning a value or `-errno`.
///
/// Production code uses ``live``; tests substitute closures that fail with ENOENT, EACCES, EINTR,
/// short counts or EOF in any order (swift-system's mocking idea without a global switch).
struct SystemCalls: Sendable {
    /// `open(path, flags)`: a descriptor or -errno.
    var open: @Sendable (_ path: String, _ flags: Int32) -> Int32
    /// `read(fd, buf, count)`: bytes read (0 at EOF) or -errno.
    var read: @Sendable (_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer) -> Int
    /// `close(fd)`.
    var close: @Sendable (_ fd: Int32) -> Void
    /// `fstat(fd)`: (mode, owner uid) or nil.
    var fileStatus: @Sendable (_ fd: Int32) -> (mode: UInt32, uid: UInt32)?
    /// `stat(path)`: (mode, owner uid) or nil.
    var pathStatus: @Sendable (_ path: String) -> (mode: UInt32, uid: UInt32)?
    /// `getrandom(buf, count, flags)`: bytes written or -errno.
    var getrandom: @Sendable (_ buffer: UnsafeMutableRawBufferPointer, _ flags: UInt32) -> Int

    static let live = SystemCalls(
        open: { path, flags in
            let fd = Glibc.open(path, flags)
            return fd < 0 ? -errno : fd
        },
        read: { fd, buffer in
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            return n < 0 ? -Int(errno) : n
        },
        close: { fd in _ = Glibc.close(fd) },
        fileStatus: { fd in
            var st = stat()
            guard fstat(fd, &st) == 0 else { return nil }
            return (st.st_mode, st.st_uid)
        },
        pathStatus: { path in
            var st = stat()
            guard stat(path, &st) == 0 else { return nil }
            return (st.st_mode, st.st_uid)
        },
        getrandom: { buffer, flags in
            ces_getrandom(buffer.baseAddress, buffer.count, flags)
        }
    )
}
