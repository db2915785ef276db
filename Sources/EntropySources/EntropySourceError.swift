#if canImport(Glibc)
    import Glibc
#endif

/// An `errno` value from a failed system call, compared by number.
public struct SystemErrno: Hashable, Sendable, CustomStringConvertible {
    /// The raw value, e.g. `ENOENT` (2).
    public var rawValue: Int32

    /// Wraps a raw `errno` value.
    public init(_ rawValue: Int32) { self.rawValue = rawValue }

    /// `strerror` text and the number, e.g. "No such file or directory (errno 2)".
    public var description: String {
        guard let text = strerror(rawValue) else { return "errno \(rawValue)" }
        return "\(String(cString: text)) (errno \(rawValue))"
    }
}

/// The CPU instructions behind ``CPURandomSource``.
public enum CPURandomInstruction: String, Hashable, Sendable {
    /// RDRAND: output of the CPU's DRBG, reseeded from its conditioner (CPUID.01H:ECX bit 30).
    case rdrand = "RDRAND"
    /// RDSEED: output of the CPU's conditioner, full entropy, slower (CPUID.07H.0:EBX bit 18).
    case rdseed = "RDSEED"
}

/// Everything that can go wrong while obtaining random bytes.
///
/// Each case names the source (its ``EntropySource/name``, usually a path) and what failed, so a
/// daemon can log it as is. Payloads are `Equatable`, so tests match exact cases.
public indirect enum EntropySourceError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The path does not exist (`ENOENT`), e.g. `/dev/hwrng` when the hw_random core is not loaded.
    case notFound(path: String)
    /// The process may not open the path (`EACCES`/`EPERM`). `rootOnly` is set when the file is owned
    /// by root and grants nothing to others (`/dev/hwrng` is `crw------- root root`).
    case permissionDenied(path: String, rootOnly: Bool)
    /// `open(2)` failed for another reason.
    case openFailed(path: String, errno: SystemErrno)
    /// A read or system call of the named source failed (EINTR is retried, never reported).
    case readFailed(source: String, errno: SystemErrno)
    /// The source reached end of input (EOF of a file, a closed FIFO or socket). Never reported as a
    /// zero-length fill.
    case exhausted(source: String)
    /// A non-blocking source had no data right now (`EAGAIN`).
    case wouldBlock(source: String)
    /// No hardware RNG is selected: `/sys/class/misc/hw_random/rng_current` says `none`, or a read of
    /// `/dev/hwrng` returned `ENODEV`. `available` is the content of `rng_available`.
    case noHardwareRNG(path: String, available: [String])
    /// CPUID says the CPU does not implement the instruction.
    case instructionNotSupported(CPURandomInstruction)
    /// The instruction reported "no data" (CF = 0) `attempts` times in a row: the unit is exhausted
    /// or broken.
    case instructionFailed(CPURandomInstruction, attempts: Int)
    /// A ``HealthMonitor`` marked its source failed; no byte is served until its recovery policy (or
    /// ``HealthMonitor/reset()``) lets it recover.
    case unhealthy(source: String, failure: HealthTestFailure)
    /// Both sources of a ``FallbackSource`` failed.
    case allSourcesFailed(primary: EntropySourceError, fallback: EntropySourceError)
    /// The ``PrefetchPool`` was closed.
    case poolClosed
    /// A parameter is out of range; `name` says which and `value` what it was.
    case invalidParameter(name: String, value: Int)
    /// A source returned a count outside `1...requested` for a non-empty buffer.
    case contractViolation(source: String, returned: Int, requested: Int)
    /// A ``RemoteEGDSource`` could not get its bytes within its retry budget: `attempts`
    /// consecutive attempts failed (or the next backoff would have exceeded the total allowed),
    /// the last with `lastError` (refused, timed out, closed mid-response, …).
    case remoteUnavailable(source: String, attempts: Int, lastError: EGDConnectionError)
    /// A ``RemoteEGDSource`` hit a failure that retrying cannot fix: an endpoint that cannot be
    /// used (a socket path too long) or a server that violated the EGD protocol.
    case remoteFailed(source: String, error: EGDConnectionError)

    /// Whether retrying the same source cannot help: the file is gone, ended or forbidden, the
    /// instruction is missing, the monitor latched, the pool is closed. Transient errors (a read
    /// error, an exhausted DRNG, no data right now) may clear.
    public var isPermanent: Bool {
        switch self {
        case .notFound, .permissionDenied, .openFailed, .exhausted, .instructionNotSupported, .unhealthy,
            .poolClosed, .invalidParameter, .contractViolation, .remoteFailed:
            return true
        case .allSourcesFailed(let primary, let fallback):
            return primary.isPermanent && fallback.isPermanent
        case .readFailed, .wouldBlock, .noHardwareRNG, .instructionFailed, .remoteUnavailable:
            return false
        }
    }

    /// One line naming the source and what failed.
    public var description: String {
        switch self {
        case .notFound(let path):
            return "not found: \(path) does not exist"
        case .permissionDenied(let path, let rootOnly):
            return rootOnly
                ? "permission denied: \(path) is root-only (run as root or grant access with a udev rule)"
                : "permission denied: \(path)"
        case .openFailed(let path, let errno):
            return "cannot open \(path): \(errno)"
        case .readFailed(let source, let errno):
            return "read from \(source) failed: \(errno)"
        case .exhausted(let source):
            return "\(source) is exhausted (end of input)"
        case .wouldBlock(let source):
            return "\(source) has no data right now (EAGAIN)"
        case .noHardwareRNG(let path, let available):
            let list = available.isEmpty ? "none registered" : "available: \(available.joined(separator: ", "))"
            return "no current hardware RNG behind \(path) (\(list))"
        case .instructionNotSupported(let instruction):
            return "this CPU does not implement \(instruction.rawValue) (CPUID)"
        case .instructionFailed(let instruction, let attempts):
            return "\(instruction.rawValue) returned no data \(attempts) times in a row"
        case .unhealthy(let source, let failure):
            return "\(source) failed its health tests: \(failure)"
        case .allSourcesFailed(let primary, let fallback):
            return "all sources failed: \(primary); then \(fallback)"
        case .poolClosed:
            return "the prefetch pool is closed"
        case .invalidParameter(let name, let value):
            return "invalid \(name): \(value)"
        case .contractViolation(let source, let returned, let requested):
            return "\(source) returned \(returned) bytes for a request of \(requested)"
        case .remoteUnavailable(let source, let attempts, let lastError):
            return "EGD server \(source) unavailable after \(attempts) attempts: \(lastError)"
        case .remoteFailed(let source, let error):
            return "EGD server \(source) failed: \(error)"
        }
    }
}
