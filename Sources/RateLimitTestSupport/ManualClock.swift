/// A clock that moves only when told to, for driving limiters in tests and simulations.
///
/// Its instants count nanoseconds from 0 in an `Int64`, so durations convert exactly. The clock is a
/// value: tests own one, advance it, and pass `clock.now` to the limiter under test. It has no sleep,
/// because limiters never sleep: they return the instant to come back at, and a test advances to it.
public struct ManualClock: Sendable {
    /// An instant of a ``ManualClock``: nanoseconds since the clock's zero.
    public struct Instant: InstantProtocol, Sendable, CustomStringConvertible {
        /// Nanoseconds since zero.
        public var nanoseconds: Int64

        /// The instant `nanoseconds` after zero.
        public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

        /// This instant moved by `duration` (truncated to whole nanoseconds).
        public func advanced(by duration: Duration) -> Self {
            Self(nanoseconds: nanoseconds + ManualClock.wholeNanoseconds(duration))
        }

        /// The duration from this instant to `other`.
        public func duration(to other: Self) -> Duration { .nanoseconds(other.nanoseconds - nanoseconds) }

        /// Orders by time.
        public static func < (lhs: Self, rhs: Self) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

        /// The time in nanoseconds, e.g. `t=1500000000ns`.
        public var description: String { "t=\(nanoseconds)ns" }
    }

    /// The current instant.
    public private(set) var now: Instant

    /// A clock reading `start`.
    public init(start: Instant = Instant(nanoseconds: 0)) { self.now = start }

    /// Moves the clock forward by `duration`; a negative duration moves it back (to test that limiters
    /// ignore time running backwards).
    public mutating func advance(by duration: Duration) { now = now.advanced(by: duration) }

    /// Sets the clock to `instant`, earlier or later.
    public mutating func set(to instant: Instant) { now = instant }

    static func wholeNanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
