/// A source named on a command line, as `virtrngd --source` takes it.
///
/// | spelling | source |
/// |---|---|
/// | `getrandom` | ``GetRandomSource`` (the default) |
/// | `urandom` | ``FileSource`` on `/dev/urandom` |
/// | `file:PATH` | ``FileSource`` on any file, FIFO or character device |
/// | `hwrng` or `hwrng:PATH` | ``HardwareRNGSource`` on `/dev/hwrng` (or PATH) |
/// | `rdrand`, `rdseed` | ``CPURandomSource`` |
/// | `egd:PATH` or `egd:HOST:PORT` | ``RemoteEGDSource`` (a path starts with `/`) |
public enum SourceSpecification: Sendable, Hashable, CustomStringConvertible {
    /// getrandom(2).
    case getrandom
    /// `/dev/urandom`.
    case urandom
    /// Any readable file.
    case file(path: String)
    /// A hardware RNG device node.
    case hwrng(path: String)
    /// RDRAND.
    case rdrand
    /// RDSEED.
    case rdseed
    /// A remote EGD server.
    case egd(EGDEndpoint)

    /// Parses one of the spellings in the table above.
    ///
    /// - Throws: ``SourceSpecificationError``, naming the text and what is accepted.
    public init(parsing text: String) throws(SourceSpecificationError) {
        switch text {
        case "getrandom": self = .getrandom
        case "urandom": self = .urandom
        case "hwrng": self = .hwrng(path: "/dev/hwrng")
        case "rdrand": self = .rdrand
        case "rdseed": self = .rdseed
        default:
            if let path = text.dropPrefix("file:") {
                guard !path.isEmpty else { throw .emptyPath(text) }
                self = .file(path: path)
            } else if let path = text.dropPrefix("hwrng:") {
                guard !path.isEmpty else { throw .emptyPath(text) }
                self = .hwrng(path: path)
            } else if let address = text.dropPrefix("egd:") {
                if address.hasPrefix("/") {
                    self = .egd(.unix(path: address))
                } else {
                    do {
                        self = .egd(try EGDEndpoint(tcpAddress: address))
                    } catch {
                        throw .invalidAddress(text)
                    }
                }
            } else {
                throw .unknown(text)
            }
        }
    }

    /// The spelling ``init(parsing:)`` accepts.
    public var description: String {
        switch self {
        case .getrandom: "getrandom"
        case .urandom: "urandom"
        case .file(let path): "file:\(path)"
        case .hwrng(let path): path == "/dev/hwrng" ? "hwrng" : "hwrng:\(path)"
        case .rdrand: "rdrand"
        case .rdseed: "rdseed"
        case .egd(.unix(let path)): "egd:\(path)"
        case .egd(.tcp(let host, let port)): host.contains(":") ? "egd:[\(host)]:\(port)" : "egd:\(host):\(port)"
        }
    }

    /// Opens the source: files and devices are opened now (so a missing or root-only device is an error
    /// at start-up, not at the first request), CPU instructions are checked, a remote server is
    /// contacted at the first fill.
    ///
    /// The result is an existential; wrap it once (in a ``HealthMonitor`` inside a ``PrefetchPool``),
    /// whose generic code then runs specialised on the filler thread.
    public func makeSource() throws(EntropySourceError) -> any EntropySource {
        switch self {
        case .getrandom: return GetRandomSource()
        case .urandom: return try FileSource(path: "/dev/urandom")
        case .file(let path): return try FileSource(path: path)
        case .hwrng(let path): return try HardwareRNGSource(devicePath: path)
        case .rdrand: return try CPURandomSource(.rdrand)
        case .rdseed: return try CPURandomSource(.rdseed)
        case .egd(let endpoint): return try RemoteEGDSource(endpoint: endpoint)
        }
    }
}

/// Why a source specification was refused.
public enum SourceSpecificationError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Not one of the spellings.
    case unknown(String)
    /// `file:`, `hwrng:` without a path.
    case emptyPath(String)
    /// `egd:` with an address that is neither a path nor `HOST:PORT`.
    case invalidAddress(String)

    /// One line naming the text and what is accepted.
    public var description: String {
        switch self {
        case .unknown(let text):
            "unknown source '\(text)': use getrandom, urandom, file:PATH, hwrng[:PATH], rdrand, rdseed or egd:ADDR"
        case .emptyPath(let text): "source '\(text)' needs a path"
        case .invalidAddress(let text): "source '\(text)': the address must be a /path or HOST:PORT"
        }
    }
}

/// Combines two existential sources as ``FallbackSource`` (opens both, so the result is specialised).
public func makeFallbackSource(
    primary: any EntropySource, fallback: any EntropySource
) -> any EntropySource {
    func open<P: EntropySource>(_ p: P) -> any EntropySource {
        func openFallback<F: EntropySource>(_ f: F) -> any EntropySource { FallbackSource(primary: p, fallback: f) }
        return openFallback(fallback)
    }
    return open(primary)
}

extension String {
    fileprivate func dropPrefix(_ prefix: String) -> String? {
        hasPrefix(prefix) ? String(dropFirst(prefix.count)) : nil
    }
}
