/// QEMU's `virtio-rng` `max-bytes`/`period` limiter, and vhost-device-rng's variant of it.
///
/// A fixed window, not a token bucket: at most `maxBytes` bytes per window of `period`, the quota
/// returning to full (not accruing) when a window ends, and a request granted in part when the
/// quota left is smaller than it.
///
/// **QEMU** (`hw/virtio/virtio-rng.c`, unchanged in 7.2): the quota starts full; the first request
/// arms a timer `period` ms ahead ("activate_timer"); when it fires the quota is reset to `max-bytes`,
/// a request waiting at that moment is served from the new quota *without* arming the timer again,
/// and the next request after that arms it. So a window starts at the first request after the
/// previous window ended, not on a fixed grid, and an idle guest has no window running.
///
/// **vhost-device-rng** (`vhu_rng.rs`): the first window starts when the limiter is created; a
/// request whose whole milliseconds since the window start reach `period` starts a new window at
/// its own instant with a full quota; with the quota at 0 it waits `period − elapsed_ms` ms (the
/// daemon sleeps; here the request is denied until then). Each of `--socket-count` guests gets
/// `max-bytes / socket-count` per window.
///
/// Long-run rate: at most `maxBytes` per `period`; a greedy client that retries at the instants
/// returned gets exactly `maxBytes` per `period`. Requests of 0 or fewer bytes are granted 0 bytes
/// and change nothing.
public struct FixedWindowLimiter<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    /// Which implementation's window rules are followed.
    public enum Semantics: Sendable, Equatable {
        /// QEMU `virtio-rng` (`-object ...,max-bytes=N,period=MS`).
        case qemu
        /// rust-vmm vhost-device-rng (`--max-bytes N --period MS --socket-count C`), per guest.
        case vhostDeviceRNG
    }

    /// The largest `period` vhost-device-rng accepts, in ms (`VHU_RNG_MAX_PERIOD_MS`), and QEMU's default.
    public static var vhostMaximumPeriodMilliseconds: UInt64 { 65_536 }
    /// The largest `max-bytes` QEMU accepts: 2^63 − 1.
    public static var qemuMaximumMaxBytes: UInt64 { UInt64(Int64.max) }

    /// The rules in force.
    public let semantics: Semantics
    /// Bytes per window (for vhost-device-rng, this guest's share: `max-bytes / socket-count`).
    public let maxBytes: UInt64
    /// The window length in milliseconds.
    public let periodMilliseconds: UInt64

    @usableFromInline var timeline: Timeline<Instant>
    /// Bytes left in the current window. Invariant: `0 ≤ remaining ≤ maxBytes`.
    @usableFromInline var remaining: UInt64
    /// QEMU: when the armed timer fires, in ns on `timeline`, or nil while no timer is armed.
    /// vhost-device-rng: always set, the start of the current window.
    @usableFromInline var mark: Int64?
    /// QEMU: a request was refused or cut short and is waiting for the timer.
    @usableFromInline var waiterPending: Bool

    /// The quota left in the current window.
    public var remainingBytes: UInt64 { remaining }

    @usableFromInline var periodNanoseconds: Int64 { Int64(periodMilliseconds) * 1_000_000 }

    /// QEMU's limiter for `max-bytes=maxBytes,period=periodMilliseconds`.
    ///
    /// Validated as QEMU validates it (period > 0, max-bytes < 2^63), and additionally max-bytes > 0:
    /// QEMU accepts 0 and then never answers the guest.
    /// - Parameters:
    ///   - maxBytes: QEMU `max-bytes`, the quota of one window (`1 ..< 2^63`).
    ///   - periodMilliseconds: QEMU `period`, the length of a window in milliseconds (> 0).
    ///   - origin: any instant not later than the first request (QEMU arms its first window at the
    ///     first request, so this only anchors the limiter's internal time).
    public static func qemu(
        maxBytes: UInt64,
        periodMilliseconds: UInt32,
        origin: Instant
    ) throws(RateLimitError) -> Self {
        guard periodMilliseconds > 0 else { throw .periodIsZero }
        guard maxBytes > 0 else { throw .maxBytesIsZero }
        guard maxBytes <= qemuMaximumMaxBytes else {
            throw .maxBytesTooLarge(maxBytes, maximum: qemuMaximumMaxBytes)
        }
        return Self(semantics: .qemu, maxBytes: maxBytes, period: UInt64(periodMilliseconds), origin: origin, mark: nil)
    }

    /// vhost-device-rng's limiter for one of `socketCount` guests, whose first window starts at `start`.
    ///
    /// Validated as vhost-device-rng validates it (`1 ≤ period ≤ 65536`, socket count > 0), and
    /// additionally each guest's share `maxBytes / socketCount` must be positive.
    public static func vhostDeviceRNG(
        maxBytes: UInt64 = .max,
        periodMilliseconds: UInt64 = 65_536,
        socketCount: UInt32 = 1,
        start: Instant
    ) throws(RateLimitError) -> Self {
        guard periodMilliseconds > 0 else { throw .periodIsZero }
        guard periodMilliseconds <= vhostMaximumPeriodMilliseconds else {
            throw .periodTooLong(milliseconds: periodMilliseconds, maximum: vhostMaximumPeriodMilliseconds)
        }
        guard socketCount > 0 else { throw .socketCountIsZero }
        guard maxBytes > 0 else { throw .maxBytesIsZero }
        let share = maxBytes / UInt64(socketCount)
        guard share > 0 else { throw .shareIsZero(maxBytes: maxBytes, socketCount: socketCount) }
        return Self(semantics: .vhostDeviceRNG, maxBytes: share, period: periodMilliseconds, origin: start, mark: 0)
    }

    @usableFromInline
    init(semantics: Semantics, maxBytes: UInt64, period: UInt64, origin: Instant, mark: Int64?) {
        self.semantics = semantics
        self.maxBytes = maxBytes
        self.periodMilliseconds = period
        self.timeline = Timeline(origin: origin)
        self.remaining = maxBytes
        self.mark = mark
        self.waiterPending = false
    }

    /// Asks for `bytes` at `now`; grants `min(bytes, quota left)` and charges it to the window.
    ///
    /// When not everything is granted, the retry instant is the end of the current window: there the
    /// quota is full again.
    @inlinable
    public mutating func request(_ bytes: Int, at now: Instant) -> Grant<Instant> {
        guard bytes > 0 else { return .granted(0) }
        let t = timeline.advance(to: now)
        switch semantics {
        case .qemu: return requestQEMU(bytes, at: t)
        case .vhostDeviceRNG: return requestVhost(bytes, at: t)
        }
    }

    /// The bytes a request at `now` would be granted at most, without charging the window or moving
    /// its time: the full `maxBytes` when the current window has ended by `now`, else the quota left.
    ///
    /// For a caller that must also ask another limiter: it asks that one for at most this many bytes
    /// and then requests exactly what was granted there, so the window is never charged for bytes the
    /// other limiter refused.
    @inlinable
    public func availableBytes(at now: Instant) -> UInt64 {
        let t = max(Timeline<Instant>.nanoseconds(timeline.origin.duration(to: now)), timeline.latest)
        switch semantics {
        case .qemu:
            if let end = mark, t >= end { return maxBytes }
        case .vhostDeviceRNG:
            if UInt64(t - (mark ?? 0)) / 1_000_000 >= periodMilliseconds { return maxBytes }
        }
        return remaining
    }

    @inlinable
    mutating func take(_ bytes: Int) -> Int {
        let granted = UInt64(bytes) < remaining ? UInt64(bytes) : remaining
        remaining -= granted
        return Int(granted)
    }

    @inlinable
    mutating func requestQEMU(_ bytes: Int, at t: Int64) -> Grant<Instant> {
        var servedByTimer = false
        if let end = mark, t >= end {
            // check_rate_limit(): the timer fired at `end`; quota back to max-bytes, activate_timer = true.
            remaining = maxBytes
            mark = nil
            if waiterPending {
                // ...and virtio_rng_process() ran from the timer callback, before activate_timer was set,
                // so serving the waiting request does not arm a window.
                waiterPending = false
                servedByTimer = true
            }
        }
        if mark == nil && !servedByTimer {
            mark = saturatingAdd(t, periodNanoseconds)
        }
        let granted = take(bytes)
        if granted == bytes { return .granted(bytes) }
        if mark == nil {
            // The timer-served request is cut short: chr_read() finds the queue non-empty and
            // re-processes, which arms the window now.
            mark = saturatingAdd(t, periodNanoseconds)
        }
        waiterPending = true
        return .make(granted: granted, of: bytes, retryAt: timeline.instant(atNanoseconds: mark!))
    }

    @inlinable
    mutating func requestVhost(_ bytes: Int, at t: Int64) -> Grant<Instant> {
        // `t ≥ start` always: the timeline never goes back and `mark` is a time it has seen.
        if UInt64(t - (mark ?? 0)) / 1_000_000 >= periodMilliseconds {
            mark = t
            remaining = maxBytes
        }
        let elapsedMilliseconds = UInt64(t - (mark ?? 0)) / 1_000_000
        // vhost-device-rng sleeps `period − elapsed_ms` whole milliseconds, then starts a new window.
        let wait = Int64(periodMilliseconds - elapsedMilliseconds) * 1_000_000
        let retry = timeline.instant(atNanoseconds: saturatingAdd(t, wait))
        if remaining == 0 { return .deniedUntil(retry) }
        return .make(granted: take(bytes), of: bytes, retryAt: retry)
    }
}
