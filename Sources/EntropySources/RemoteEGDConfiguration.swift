/// How a ``RemoteEGDSource`` talks to its server and how hard it tries to reach it again.
///
/// The defaults follow the clients the EGD section of PROTOCOLS.md describes: a 10 s read timeout
/// (ekeyd-egd-linux `-t`), 16 pipelined commands of at most 255 bytes (4 KiB in flight; QEMU's
/// `rng-egd` writes all its headers back to back), and reconnects with exponential backoff from
/// 100 ms up to 10 s, half-jittered, giving up after 10 consecutive failed attempts or 60 s of
/// backoff in one outage.
public struct RemoteEGDConfiguration: Sendable, Hashable {
    /// The longest a connect may take before the attempt counts as failed.
    public var connectTimeout: Duration
    /// The longest the source waits for the server to accept a request or send a byte while
    /// bytes are owed; then the connection counts as dropped and the source reconnects.
    public var readTimeout: Duration
    /// Blocking read commands (`02 NN`, NN ≤ 255) kept in flight at once: `1...256` (the
    /// `EGDResponseDecoder` limit). At most `255 × pipelineDepth` bytes are owed by the server.
    public var pipelineDepth: Int
    /// The delays between reconnect attempts.
    public var backoff: Backoff
    /// Consecutive failed attempts (a refused or timed-out connect, or a connection that dropped
    /// before delivering a byte) after which a fill throws
    /// ``EntropySourceError/remoteUnavailable(source:attempts:lastError:)``. At least 1. A
    /// connection that delivers at least one byte resets the count.
    public var maximumAttempts: Int
    /// The most backoff one outage may sleep in total; a delay that would exceed it ends the fill
    /// with ``EntropySourceError/remoteUnavailable(source:attempts:lastError:)`` instead. The
    /// wall time of an outage is at most this plus `maximumAttempts × (connectTimeout +
    /// readTimeout)`.
    public var maximumTotalBackoff: Duration

    /// A configuration; every parameter has the default described on the type.
    public init(
        connectTimeout: Duration = .seconds(5),
        readTimeout: Duration = .seconds(10),
        pipelineDepth: Int = 16,
        backoff: Backoff = Backoff(),
        maximumAttempts: Int = 10,
        maximumTotalBackoff: Duration = .seconds(60)
    ) {
        self.connectTimeout = connectTimeout
        self.readTimeout = readTimeout
        self.pipelineDepth = pipelineDepth
        self.backoff = backoff
        self.maximumAttempts = maximumAttempts
        self.maximumTotalBackoff = maximumTotalBackoff
    }

    /// Exponential backoff with jitter.
    ///
    /// The n-th consecutive failure (n = 1, 2, …) is followed by a delay of
    /// `base(n) = min(maximum, initial × multiplierⁿ⁻¹)`, jittered down by up to `jitter` of itself:
    /// `delay(n) = base(n) × (1 − jitter × u)` with `u` uniform in `[0, 1)` from the source's
    /// random number generator. So `delay(n) ∈ (base(n) × (1 − jitter), base(n)]`: clients that
    /// lost the same server spread their reconnects out and none waits longer than `maximum`.
    public struct Backoff: Sendable, Hashable {
        /// The delay after the first failure (before jitter).
        public var initial: Duration
        /// The cap on any delay.
        public var maximum: Duration
        /// The growth factor per failure, at least 1.
        public var multiplier: Double
        /// The fraction of a delay that jitter may take away, `0...1` (0: no jitter).
        public var jitter: Double

        /// Backoff from `initial` (100 ms), times `multiplier` (2) per failure, capped at `maximum`
        /// (10 s), jittered by up to `jitter` (0.5) of each delay.
        public init(
            initial: Duration = .milliseconds(100),
            maximum: Duration = .seconds(10),
            multiplier: Double = 2,
            jitter: Double = 0.5
        ) {
            self.initial = initial
            self.maximum = maximum
            self.multiplier = multiplier
            self.jitter = jitter
        }

        /// `base(failure) = min(maximum, initial × multiplier^(failure − 1))`, before jitter;
        /// `failure` counts from 1.
        public func baseDelay(afterFailure failure: Int) -> Duration {
            let cap = Self.nanoseconds(maximum)
            var delay = Double(Self.nanoseconds(initial))
            // Stop multiplying once past the cap: the product cannot overflow a Double then.
            var step = 1
            while step < failure && delay < Double(cap) {
                delay *= multiplier
                step += 1
            }
            return .nanoseconds(min(cap, Int64(min(delay, Double(Int64.max / 2)))))
        }

        /// `delay(failure) = base(failure) × (1 − jitter × u)`, `u = unit` in `[0, 1)`.
        public func delay(afterFailure failure: Int, unit: Double) -> Duration {
            let base = Double(Self.nanoseconds(baseDelay(afterFailure: failure)))
            return .nanoseconds(Int64(base * (1 - jitter * unit)))
        }

        /// `duration` in whole nanoseconds, clamped to `0...Int64.max / 2`.
        static func nanoseconds(_ duration: Duration) -> Int64 {
            let (seconds, attoseconds) = duration.components
            guard seconds >= 0 else { return 0 }
            let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
            guard !overflow, whole < Int64.max / 2 else { return Int64.max / 2 }
            return whole + attoseconds / 1_000_000_000
        }
    }
}
