/// Turns caller-supplied instants into a private monotonic nanosecond count.
///
/// Limiters never read a clock: every call passes `now`. A timeline remembers the instant it was
/// created at (`origin`) and the latest time it has seen, in whole nanoseconds since `origin`.
/// Invariants: `latest ≥ 0`, and `latest` never decreases: an instant earlier than one already seen
/// (or earlier than `origin`) is read as `latest`, so time that runs backwards can neither refill a
/// bucket twice nor reopen a window. Durations that do not fit in `Int64` nanoseconds (about 292
/// years) saturate instead of trapping.
@usableFromInline
struct Timeline<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    /// The instant that nanosecond 0 stands for.
    @usableFromInline let origin: Instant
    /// The latest time seen, in nanoseconds since `origin`.
    @usableFromInline var latest: Int64

    @inlinable
    init(origin: Instant) {
        self.origin = origin
        self.latest = 0
    }

    /// Moves the timeline to `now` (never backwards) and returns the time in nanoseconds.
    @inlinable
    mutating func advance(to now: Instant) -> Int64 {
        let ns = Self.nanoseconds(origin.duration(to: now))
        if ns > latest { latest = ns }
        return latest
    }

    /// The instant `ns` nanoseconds after `origin`.
    @inlinable
    func instant(atNanoseconds ns: Int64) -> Instant {
        origin.advanced(by: .nanoseconds(ns))
    }

    /// `duration` in whole nanoseconds, truncated toward zero, saturating at the `Int64` bounds.
    @inlinable
    static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        let (sum, overflow2) = scaled.addingReportingOverflow(attoseconds / 1_000_000_000)
        if overflow2 { return attoseconds < 0 ? .min : .max }
        return sum
    }
}

/// `a + b` for non-negative `b`, saturating at `Int64.max` (instants far in the future stay there).
@inlinable
func saturatingAdd(_ a: Int64, _ b: Int64) -> Int64 {
    let (sum, overflow) = a.addingReportingOverflow(b)
    return overflow ? .max : sum
}
