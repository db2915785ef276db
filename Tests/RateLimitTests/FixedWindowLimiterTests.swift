import RateLimit
import RateLimitTestSupport
import Testing

typealias MInstant = ManualClock.Instant

func ms(_ v: Int64) -> MInstant { MInstant(nanoseconds: v * 1_000_000) }

@Suite struct FixedWindowLimiterTests {
    let zero = MInstant(nanoseconds: 0)

    @Test func qemuRejectsPeriodZeroAndMaxBytesZeroAndAbove2To63() {
        #expect(throws: RateLimitError.periodIsZero) {
            try FixedWindowLimiter.qemu(maxBytes: 1024, periodMilliseconds: 0, origin: zero)
        }
        #expect(throws: RateLimitError.maxBytesIsZero) {
            try FixedWindowLimiter.qemu(maxBytes: 0, periodMilliseconds: 1000, origin: zero)
        }
        #expect(throws: RateLimitError.maxBytesTooLarge(1 << 63, maximum: UInt64(Int64.max))) {
            try FixedWindowLimiter.qemu(maxBytes: 1 << 63, periodMilliseconds: 1000, origin: zero)
        }
        #expect(
            (try? FixedWindowLimiter.qemu(maxBytes: UInt64(Int64.max), periodMilliseconds: .max, origin: zero)) != nil)
    }

    @Test func vhostRejectsPeriodOutside1To65536AndEmptyShares() throws {
        #expect(throws: RateLimitError.periodIsZero) {
            try FixedWindowLimiter.vhostDeviceRNG(periodMilliseconds: 0, start: zero)
        }
        #expect(throws: RateLimitError.periodTooLong(milliseconds: 65_537, maximum: 65_536)) {
            try FixedWindowLimiter.vhostDeviceRNG(periodMilliseconds: 65_537, start: zero)
        }
        #expect(throws: RateLimitError.socketCountIsZero) {
            try FixedWindowLimiter.vhostDeviceRNG(socketCount: 0, start: zero)
        }
        #expect(throws: RateLimitError.maxBytesIsZero) {
            try FixedWindowLimiter.vhostDeviceRNG(maxBytes: 0, start: zero)
        }
        #expect(throws: RateLimitError.shareIsZero(maxBytes: 3, socketCount: 4)) {
            try FixedWindowLimiter.vhostDeviceRNG(maxBytes: 3, socketCount: 4, start: zero)
        }
        let defaults = try FixedWindowLimiter.vhostDeviceRNG(start: zero)
        #expect(defaults.maxBytes == .max && defaults.periodMilliseconds == 65_536)
        let split = try FixedWindowLimiter.vhostDeviceRNG(
            maxBytes: 5000, periodMilliseconds: 1000, socketCount: 3, start: zero)
        #expect(split.maxBytes == 1666)
    }

    @Test func qemuWindowStartsAtFirstRequestAndGrantsPartially() throws {
        var limiter = try FixedWindowLimiter.qemu(maxBytes: 1024, periodMilliseconds: 1000, origin: zero)
        #expect(limiter.request(600, at: ms(5000)) == .granted(600))
        #expect(limiter.request(600, at: ms(5001)) == .partial(424, retryAt: ms(6000)))
        #expect(limiter.request(64, at: ms(5500)) == .deniedUntil(ms(6000)))
        // The timer serves the waiting request from the new quota without arming a window...
        #expect(limiter.request(1024, at: ms(6000)) == .granted(1024))
        // ...so the next request arms one, with the quota the timer-served request left.
        #expect(limiter.request(1, at: ms(6200)) == .deniedUntil(ms(7200)))
        #expect(limiter.request(1, at: ms(7200)) == .granted(1))
    }

    @Test func qemuIdleGuestHasNoWindowRunning() throws {
        var limiter = try FixedWindowLimiter.qemu(maxBytes: 100, periodMilliseconds: 1000, origin: zero)
        #expect(limiter.request(100, at: ms(0)) == .granted(100))
        // Long after the window ended, the first request starts a new window at its own instant.
        #expect(limiter.request(100, at: ms(10_500)) == .granted(100))
        #expect(limiter.request(1, at: ms(11_400)) == .deniedUntil(ms(11_500)))
    }

    @Test func vhostWindowStartsAtCreationAndWaitsWholeMilliseconds() throws {
        var limiter = try FixedWindowLimiter.vhostDeviceRNG(maxBytes: 512, periodMilliseconds: 1000, start: zero)
        #expect(limiter.request(512, at: MInstant(nanoseconds: 300_400_000)) == .granted(512))
        // 300.9 ms elapsed counts as 300 whole ms: the daemon sleeps 700 ms.
        #expect(
            limiter.request(1, at: MInstant(nanoseconds: 300_900_000))
                == .deniedUntil(MInstant(nanoseconds: 1_000_900_000)))
        #expect(
            limiter.request(600, at: MInstant(nanoseconds: 1_000_900_000))
                == .partial(512, retryAt: MInstant(nanoseconds: 2_000_900_000)))
    }

    @Test(arguments: [FixedWindowLimiter<MInstant>.Semantics.qemu, .vhostDeviceRNG])
    func greedyClientGetsExactlyMaxBytesPerPeriodOverThreeHours(semantics: FixedWindowLimiter<MInstant>.Semantics)
        throws
    {
        var limiter =
            semantics == .qemu
            ? try FixedWindowLimiter.qemu(maxBytes: 1024, periodMilliseconds: 1000, origin: zero)
            : try FixedWindowLimiter.vhostDeviceRNG(maxBytes: 1024, periodMilliseconds: 1000, start: zero)
        var now = zero
        var total = 0
        let end = ms(3 * 3600 * 1000)
        while now < end {
            let grant = limiter.request(256, at: now)
            total += grant.bytes
            if let retry = grant.retryAt {
                #expect(retry >= now)
                now = retry
            }
        }
        let expected = 3.0 * 3600 * 1024
        #expect(abs(Double(total) - expected) / expected < 0.001)
    }

    @Test func timeRunningBackwardsOpensNoWindow() throws {
        var limiter = try FixedWindowLimiter.qemu(maxBytes: 10, periodMilliseconds: 1000, origin: zero)
        #expect(limiter.request(10, at: ms(2000)) == .granted(10))
        #expect(limiter.request(10, at: ms(-50_000)) == .deniedUntil(ms(3000)))
        #expect(limiter.request(0, at: ms(2500)) == .granted(0))
    }

    @Test func availableBytesPeeksWithoutChargingOrMovingTheWindow() throws {
        var qemu = try FixedWindowLimiter<MInstant>.qemu(maxBytes: 1_000, periodMilliseconds: 100, origin: zero)
        #expect(qemu.availableBytes(at: zero) == 1_000)
        #expect(qemu.request(300, at: zero) == .granted(300))
        #expect(qemu.availableBytes(at: ms(50)) == 700)
        // The window ends at 100 ms: a request then would get the full quota; peeking changes nothing.
        #expect(qemu.availableBytes(at: ms(100)) == 1_000)
        #expect(qemu.remainingBytes == 700)
        #expect(qemu.availableBytes(at: ms(60)) == 700)
        #expect(qemu.request(1_000, at: ms(60)) == .partial(700, retryAt: ms(100)))
        #expect(qemu.availableBytes(at: ms(99)) == 0)
        #expect(qemu.availableBytes(at: ms(100)) == 1_000)
        #expect(qemu.request(1_000, at: ms(100)) == .granted(1_000))
        // Time never runs backwards for a peek either.
        #expect(qemu.availableBytes(at: ms(-5)) == 0)

        var vhost = try FixedWindowLimiter<MInstant>.vhostDeviceRNG(
            maxBytes: 1_000, periodMilliseconds: 100, socketCount: 2, start: zero)
        #expect(vhost.availableBytes(at: zero) == 500)
        #expect(vhost.request(400, at: ms(10)) == .granted(400))
        #expect(vhost.availableBytes(at: ms(99)) == 100)
        #expect(vhost.availableBytes(at: ms(100)) == 500)
        #expect(vhost.remainingBytes == 100)
    }
}
