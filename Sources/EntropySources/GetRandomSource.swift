internal import CEntropyShims

#if canImport(Glibc)
    import Glibc
#endif

/// The kernel's CSPRNG through `getrandom(2)`: the default source, and QEMU's `rng-builtin`.
///
/// Every fill is full-length: short counts (a signal during a request above 256 bytes) and `EINTR`
/// are retried until the buffer is full. With the default flags a call blocks only before the
/// kernel's CRNG is initialised at boot, so ``mayBlock`` is `false`: call it from any thread.
/// `GRND_NONBLOCK` turns that early-boot wait into ``EntropySourceError/wouldBlock(source:)``.
public struct GetRandomSource: EntropySource, Sendable {
    /// The `flags` argument of `getrandom(2)` (0, or `GRND_NONBLOCK` = 1).
    public var flags: UInt32
    let calls: SystemCalls?

    /// A getrandom source with the given flags (default 0: the urandom pool, blocking only until the
    /// CRNG is initialised).
    public init(flags: UInt32 = 0) {
        self.flags = flags
        self.calls = nil
    }

    /// A source whose system call is simulated (tests).
    init(flags: UInt32 = 0, calls: SystemCalls) {
        self.flags = flags
        self.calls = calls
    }

    /// `"getrandom"`.
    public var name: String { "getrandom" }

    /// `false`: the call returns in bounded time once the CRNG is initialised.
    public var mayBlock: Bool { false }

    /// Fills the whole buffer; returns `buffer.count`.
    public mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) throws(EntropySourceError) -> Int {
        var done = 0
        while done < buffer.count {
            let rest = UnsafeMutableRawBufferPointer(rebasing: buffer[done...])
            let n: Int
            if let calls {
                n = calls.getrandom(rest, flags)
            } else {
                n = ces_getrandom(rest.baseAddress, rest.count, flags)
            }
            if n > 0 {
                // getrandom never reports more than it was asked for; the min keeps a simulated call
                // from walking past the buffer.
                done += min(n, rest.count)
            } else if n == -Int(EINTR) {
                continue
            } else if n == -Int(EAGAIN) {
                throw .wouldBlock(source: name)
            } else {
                throw .readFailed(source: name, errno: SystemErrno(Int32(truncatingIfNeeded: n == 0 ? -Int(EIO) : -n)))
            }
        }
        return done
    }
}
