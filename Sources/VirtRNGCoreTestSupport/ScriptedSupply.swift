public import EntropySources
public import VirtRNGCore

/// A deterministic ``EntropySupply`` for broker tests: the test decides how many bytes it holds,
/// when it fails and when its waiters are woken.
///
/// Its bytes are a fixed pseudo-random stream (SplitMix64's outputs, little-endian), so
/// a test can check that what clients received is exactly ``expectedBytes(_:)`` of the bytes handed
/// out: none invented, none twice. ``tryFill(_:)`` behaves as `PrefetchPool.tryFill(_:)` does: it
/// copies out up to ``available`` bytes (at most ``maximumPerFill`` per call), and only when nothing
/// is available throws ``error``, if one is set.
///
/// Waiters of ``notifyWhenAvailable(_:)`` are kept until ``wakeWaiters()`` (or ``refill(_:)``,
/// ``fail(with:)``) runs them, on the test's thread; a waiter is run at once when bytes are available
/// or a failure has not been reported by a ``tryFill(_:)`` yet, as the protocol asks.
///
/// Not thread-safe: one test thread owns it.
public final class ScriptedSupply: EntropySupply {
    /// The name in messages.
    public let name: String
    /// The stream's seed.
    public let seed: UInt64
    /// Bytes ``tryFill(_:)`` may still hand out before it returns 0 (or throws ``error``).
    public var available: Int
    /// Most bytes one ``tryFill(_:)`` hands out (a short read), at least 1.
    public var maximumPerFill: Int
    /// The error ``tryFill(_:)`` throws when nothing is available; setting it (to a non-nil value)
    /// makes it a failure not yet reported.
    public var error: EntropySourceError? {
        didSet { if error != nil { failureReported = false } }
    }
    /// Bytes handed out so far: the stream's prefix `0..<produced` left the supply.
    public private(set) var produced = 0
    /// Calls of ``tryFill(_:)`` so far.
    public private(set) var fillCalls = 0
    /// Errors thrown by ``tryFill(_:)`` so far.
    public private(set) var errorsThrown = 0
    /// Calls of ``notifyWhenAvailable(_:)`` so far.
    public private(set) var notifyCalls = 0
    /// Waiters run at once by ``notifyWhenAvailable(_:)`` (instead of being kept).
    public private(set) var immediateNotifications = 0
    private var failureReported = false
    private var waiters: [@Sendable () -> Void] = []

    /// A supply holding `available` bytes of the stream seeded with `seed`.
    public init(available: Int = 1 << 40, seed: UInt64 = 1, maximumPerFill: Int = .max, name: String = "scripted") {
        self.available = available
        self.seed = seed
        self.maximumPerFill = max(1, maximumPerFill)
        self.name = name
    }

    /// The bytes available.
    public var level: Int { available }

    /// Waiters kept, not yet woken.
    public var waiting: Int { waiters.count }

    /// Copies out the next `min(buffer.count, available, maximumPerFill)` bytes of the stream.
    public func tryFill(_ buffer: UnsafeMutableRawBufferPointer) throws(EntropySourceError) -> Int {
        fillCalls += 1
        guard available > 0 else {
            if let error {
                failureReported = true
                errorsThrown += 1
                throw error
            }
            return 0
        }
        let n = min(buffer.count, available, maximumPerFill)
        Self.write(from: produced, into: buffer[0..<n], seed: seed)
        produced += n
        available -= n
        return n
    }

    /// Keeps `handler` until the test wakes it, or runs it now when bytes are available or a failure
    /// has not been reported yet.
    public func notifyWhenAvailable(_ handler: @escaping @Sendable () -> Void) {
        notifyCalls += 1
        if available > 0 || (error != nil && !failureReported) {
            immediateNotifications += 1
            handler()
        } else {
            waiters.append(handler)
        }
    }

    /// Runs and forgets every waiter (the supply's state changed).
    public func wakeWaiters() {
        let woken = waiters
        waiters.removeAll()
        for handler in woken { handler() }
    }

    /// Makes `bytes` more bytes available, clears the error (the source serves again) and wakes waiters.
    public func refill(_ bytes: Int) {
        available += bytes
        error = nil
        wakeWaiters()
    }

    /// Drops the bytes still available (a failing pool has served what it held), sets `error` and
    /// wakes waiters.
    public func fail(with error: EntropySourceError) {
        available = 0
        self.error = error
        wakeWaiters()
    }

    /// The bytes of the stream at `range`: what ``tryFill(_:)`` hands out there.
    public func expectedBytes(_ range: Range<Int>) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: range.count)
        bytes.withUnsafeMutableBytes { Self.write(from: range.lowerBound, into: $0[...], seed: seed) }
        return bytes
    }

    /// Word `k` of the stream: the `k+1`-th output of SplitMix64 seeded with `seed`.
    static func word(_ k: Int, seed: UInt64) -> UInt64 {
        var z = seed &+ UInt64(k + 1) &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Writes the stream from byte `start` on into `buffer`, words little-endian.
    static func write(from start: Int, into buffer: Slice<UnsafeMutableRawBufferPointer>, seed: UInt64) {
        var position = start
        var i = buffer.startIndex
        // Byte by byte up to a word boundary of the stream and after the last whole word; whole words between.
        while i < buffer.endIndex && (position % 8 != 0 || buffer.endIndex - i < 8) {
            buffer.base[i] = UInt8(truncatingIfNeeded: word(position / 8, seed: seed) >> (UInt64(position % 8) * 8))
            position += 1
            i += 1
        }
        while buffer.endIndex - i >= 8 {
            buffer.base.storeBytes(of: word(position / 8, seed: seed).littleEndian, toByteOffset: i, as: UInt64.self)
            position += 8
            i += 8
        }
        while i < buffer.endIndex {
            buffer.base[i] = UInt8(truncatingIfNeeded: word(position / 8, seed: seed) >> (UInt64(position % 8) * 8))
            position += 1
            i += 1
        }
    }
}
