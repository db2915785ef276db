/// A token bucket with continuous refill in exact integer arithmetic (Firecracker's model, fixed).
///
/// One token is one byte. The bucket holds at most `capacity` tokens and refills from empty to full
/// in `refillPeriod`, continuously: over an interval of `e` nanoseconds it earns `e · capacity /
/// refillPeriod` tokens. An optional one-time burst (Firecracker's `one_time_burst`) is spent first
/// and never refills.
///
/// Arithmetic (no floating point, no drift, no overflow):
/// - Earned tokens are `⌊(e · C + carry) / P⌋` with `C` = capacity, `P` = refill period in ns; the
///   remainder becomes the new `carry` (`0 ≤ carry < P`), so the fraction of a token earned but not
///   yet whole is kept, never lost and never counted twice. Over any run of calls the total earned is
///   `⌊(total elapsed · C) / P⌋` exactly, whatever the call pattern (Firecracker #2176).
/// - `e · C` is a 128-bit product (`multipliedFullWidth`) and `e` is capped at `P` (one full refill),
///   so the quotient is at most `C + 1` and fits in 64 bits: huge capacities cannot overflow and tiny
///   ones still refill (Firecracker #3370). Sub-millisecond and sub-microsecond periods are exact
///   (Firecracker #6212).
/// - A request larger than what is available is granted in part (what there is), and a request larger
///   than the capacity is granted in pieces of at most the capacity, one per refill (Firecracker #259):
///   nothing ever waits for more tokens than the bucket can hold.
///
/// Invariants (``checkInvariants()``): `0 ≤ budget ≤ capacity`, `0 ≤ carry < P`, `carry = 0` when
/// full, `0 ≤ oneTimeBurst`.
public struct TokenBucket<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    /// The most tokens (bytes) the bucket holds.
    public let capacity: Int
    /// The time to refill from empty to full, in nanoseconds.
    public let refillPeriodNanoseconds: Int64
    /// What is left of the one-time burst; it is spent before the budget and never refills.
    public var oneTimeBurst: Int { burstLeft }
    @usableFromInline var burstLeft: Int

    @usableFromInline var timeline: Timeline<Instant>
    /// Whole tokens in the bucket.
    @usableFromInline var budget: Int
    /// Earned fraction of a token, in units of 1/P token.
    @usableFromInline var carry: UInt64

    /// A bucket of `capacity` bytes refilling in `refillPeriod`, full at `start`, with an extra
    /// one-time `burst` spent first.
    ///
    /// The long-run rate is `capacity / refillPeriod` bytes per second: `TokenBucket(capacity: 1024,
    /// refillPeriod: .seconds(1), ...)` allows 1,024 B/s with bursts of 1,024 bytes.
    public init(
        capacity: Int,
        refillPeriod: Duration,
        oneTimeBurst burst: Int = 0,
        start: Instant
    ) throws(RateLimitError) {
        guard capacity > 0 else { throw .capacityNotPositive(capacity) }
        let period = Timeline<Instant>.nanoseconds(refillPeriod)
        guard period > 0 else { throw .refillPeriodNotPositive(refillPeriod) }
        guard burst >= 0 else { throw .oneTimeBurstNegative(burst) }
        self.capacity = capacity
        self.refillPeriodNanoseconds = period
        self.burstLeft = burst
        self.timeline = Timeline(origin: start)
        self.budget = capacity
        self.carry = 0
    }

    /// Whole tokens in the bucket at the latest instant seen (not counting the one-time burst).
    public var availableTokens: Int { budget }

    /// Adds the tokens earned between the latest instant seen and `t`.
    @inlinable
    mutating func refill(to now: Instant) {
        let last = timeline.latest
        let t = timeline.advance(to: now)
        if budget == capacity { return }
        let elapsed = UInt64(t - last)
        let period = UInt64(refillPeriodNanoseconds)
        if elapsed >= period {
            budget = capacity
            carry = 0
            return
        }
        // elapsed < P and carry < P, so elapsed·C + carry < P·(C + 1): the quotient fits in 64 bits.
        let product = elapsed.multipliedFullWidth(by: UInt64(capacity))
        let (low, overflow) = product.low.addingReportingOverflow(carry)
        let high = product.high &+ (overflow ? 1 : 0)
        let (earned, remainder) = period.dividingFullWidth((high: high, low: low))
        if earned >= UInt64(capacity - budget) {
            budget = capacity
            carry = 0
        } else {
            budget += Int(earned)
            carry = remainder
        }
    }

    /// Asks for `bytes` at `now`: grants the one-time burst first, then the budget, up to `bytes`.
    ///
    /// When not everything is granted, the retry instant is the first at which `min(rest, capacity)`
    /// tokens will have been earned (`⌈(need · P − carry) / C⌉` ns from now), always strictly later
    /// than `now`.
    @inlinable
    public mutating func request(_ bytes: Int, at now: Instant) -> Grant<Instant> {
        guard bytes > 0 else { return .granted(0) }
        refill(to: now)
        let fromBurst = min(bytes, burstLeft)
        burstLeft -= fromBurst
        let fromBudget = min(bytes - fromBurst, budget)
        budget -= fromBudget
        let granted = fromBurst + fromBudget
        if granted == bytes { return .granted(bytes) }
        let need = min(bytes - granted, capacity)
        return .make(granted: granted, of: bytes, retryAt: instantWhenAvailable(need))
    }

    /// The first instant at which `need` (≤ capacity) tokens will be in the bucket, assuming it holds
    /// fewer now.
    @inlinable
    func instantWhenAvailable(_ need: Int) -> Instant {
        // Units of 1/P token still missing: (need − budget)·P − carry > 0 because need > budget and carry < P.
        let period = UInt64(refillPeriodNanoseconds)
        let product = UInt64(need - budget).multipliedFullWidth(by: period)
        let (low, borrow) = product.low.subtractingReportingOverflow(carry)
        let high = product.high &- (borrow ? 1 : 0)
        // The quotient is at most need·P / C ≤ P, so it fits in 64 bits.
        let (quotient, remainder) = UInt64(capacity).dividingFullWidth((high: high, low: low))
        let wait = quotient + (remainder > 0 ? 1 : 0)
        return timeline.instant(atNanoseconds: saturatingAdd(timeline.latest, Int64(wait)))
    }

    /// Checks the bucket's invariants; returns a description of the first one broken, or nil.
    public func checkInvariants() -> String? {
        if budget < 0 || budget > capacity { return "budget \(budget) outside 0...\(capacity)" }
        if carry >= UInt64(refillPeriodNanoseconds) { return "carry \(carry) ≥ period \(refillPeriodNanoseconds)" }
        if budget == capacity && carry != 0 { return "full bucket with carry \(carry)" }
        if burstLeft < 0 { return "negative one-time burst \(burstLeft)" }
        return nil
    }
}
