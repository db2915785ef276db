/// A limiter's answer to "may I have `n` bytes now?".
///
/// Every limiter in this module returns one: ``TokenBucket/request(_:at:)``,
/// ``FixedWindowLimiter/request(_:at:)`` and ``HierarchicalTokenBucket/request(_:from:at:)``.
/// Invariants: a granted byte count is in `0...n`; a retry instant is never earlier than the
/// instant of the request, and for ``deniedUntil(_:)`` it is strictly later, so a caller that
/// retries at the instant it was given can never spin.
public enum Grant<Instant: InstantProtocol>: Sendable, Equatable {
    /// All `n` requested bytes may be produced now.
    case granted(Int)
    /// Only the first `bytes` (`0 < bytes < n`) may be produced now; ask for the rest at `retryAt`.
    case partial(Int, retryAt: Instant)
    /// Nothing may be produced now; ask again at the instant given.
    case deniedUntil(Instant)

    /// The number of bytes that may be produced now (0 when denied).
    @inlinable
    public var bytes: Int {
        switch self {
        case .granted(let n): n
        case .partial(let n, _): n
        case .deniedUntil: 0
        }
    }

    /// When to ask again for the bytes not granted, or `nil` when everything was granted.
    @inlinable
    public var retryAt: Instant? {
        switch self {
        case .granted: nil
        case .partial(_, let instant): instant
        case .deniedUntil(let instant): instant
        }
    }

    /// Builds the grant for `granted` of `requested` bytes, with `retry` used when not all were granted.
    @inlinable
    static func make(granted: Int, of requested: Int, retryAt retry: Instant) -> Self {
        if granted >= requested { return .granted(requested) }
        if granted > 0 { return .partial(granted, retryAt: retry) }
        return .deniedUntil(retry)
    }
}
