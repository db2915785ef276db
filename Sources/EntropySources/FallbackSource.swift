/// A source that uses `primary` and, for any fill in which `primary` throws, `fallback`: "RDSEED,
/// else getrandom" is `FallbackSource(primary: rdseed, fallback: GetRandomSource())`.
///
/// Generic over both sides, so any two sources combine (and combinations nest) without a type per
/// pair. The primary is tried again on every fill: a transient failure (RDSEED's unit momentarily
/// empty) costs one fill, not the rest of the run. When the primary's error is permanent
/// (``EntropySourceError/isPermanent``) it is not retried. If both fail, the fill throws
/// ``EntropySourceError/allSourcesFailed(primary:fallback:)``. ``fallbackFills`` counts the fills
/// the fallback served, for a daemon's metrics.
///
/// When the primary may not even be creatable (a CPU without RDSEED), pass the attempt as a
/// `Result`, which is a source that throws its stored error:
///
/// ```swift
/// let rdseed = Result { () throws(EntropySourceError) in try CPURandomSource(.rdseed) }
/// var source = FallbackSource(primary: rdseed, fallback: GetRandomSource())
/// ```
public struct FallbackSource<Primary: EntropySource, Fallback: EntropySource>: EntropySource {
    /// The preferred source.
    public var primary: Primary
    /// The source used when the primary fails.
    public var fallback: Fallback
    /// How many fills the fallback served.
    public private(set) var fallbackFills: UInt64 = 0
    /// The primary's last error, if any.
    public private(set) var lastPrimaryError: EntropySourceError?
    private var primaryDisabled = false

    /// Combines `primary` with `fallback`.
    public init(primary: Primary, fallback: Fallback) {
        self.primary = primary
        self.fallback = fallback
    }

    /// `"primary else fallback"`.
    public var name: String { "\(primary.name) else \(fallback.name)" }

    /// Whether either side may block.
    public var mayBlock: Bool { primary.mayBlock || fallback.mayBlock }

    /// Fills from the primary, or from the fallback when the primary throws.
    public mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) throws(EntropySourceError) -> Int {
        if !primaryDisabled {
            do throws(EntropySourceError) {
                return try primary.fill(buffer)
            } catch {
                lastPrimaryError = error
                if error.isPermanent { primaryDisabled = true }
            }
        }
        do throws(EntropySourceError) {
            let n = try fallback.fill(buffer)
            fallbackFills &+= 1
            return n
        } catch {
            throw .allSourcesFailed(primary: lastPrimaryError ?? .poolClosed, fallback: error)
        }
    }
}

extension EntropySource {
    /// This source, falling back to `fallback` for every fill in which this one throws.
    public func orElse<Fallback: EntropySource>(_ fallback: Fallback) -> FallbackSource<Self, Fallback> {
        FallbackSource(primary: self, fallback: fallback)
    }

    /// The XOR of this source and `other` (see ``XORSource``).
    public func xor<Other: EntropySource>(_ other: Other, chunkSize: Int = 4_096) -> XORSource<Self, Other> {
        XORSource(self, other, chunkSize: chunkSize)
    }
}

/// A source that may have failed to open: `.success` fills from the source, `.failure` throws its
/// error on every fill. Lets ``FallbackSource`` take a primary that could not be created.
extension Result: EntropySource where Success: EntropySource, Failure == EntropySourceError {
    /// The source's name, or `"unavailable source"`.
    public var name: String {
        switch self {
        case .success(let source): return source.name
        case .failure: return "unavailable source"
        }
    }

    /// The source's ``EntropySource/mayBlock``; `false` for a failure.
    public var mayBlock: Bool {
        switch self {
        case .success(let source): return source.mayBlock
        case .failure: return false
        }
    }

    /// Fills from the source, or throws the stored error.
    public mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) throws(EntropySourceError) -> Int {
        switch self {
        case .success(var source):
            defer { self = .success(source) }
            return try source.fill(buffer)
        case .failure(let error):
            throw error
        }
    }
}
