public import EntropySources
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A source that replays a script of steps, for failure-path tests: each fill consumes one step.
public struct ScriptedSource: EntropySource {
    /// One fill's outcome.
    public enum Step: Sendable {
        /// Write `count` bytes (at most the buffer's size) of the given pattern value.
        case bytes(Int, value: UInt8)
        /// Throw this error.
        case error(EntropySourceError)
    }

    /// The remaining steps; when empty, fills throw ``EntropySourceError/exhausted(source:)``.
    public var steps: [Step]
    /// The name used in errors.
    public var name: String
    /// Reported ``EntropySource/mayBlock``.
    public var mayBlock: Bool { false }

    /// A source that plays `steps` in order.
    public init(_ steps: [Step], name: String = "scripted") {
        self.steps = steps
        self.name = name
    }

    /// Plays the next step.
    public mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) throws(EntropySourceError) -> Int {
        guard !buffer.isEmpty else { return 0 }
        guard !steps.isEmpty else { throw .exhausted(source: name) }
        switch steps.removeFirst() {
        case .bytes(let count, let value):
            let n = min(count, buffer.count)
            UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n]).initializeMemory(as: UInt8.self, repeating: value)
            return n
        case .error(let error):
            throw error
        }
    }
}

/// A deterministic generator (SplitMix64) used by the fake sources.
public struct SplitMix: RandomNumberGenerator, Sendable {
    var state: UInt64
    /// Seeds the generator.
    public init(seed: UInt64) { state = seed }
    /// The next 64-bit value.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A broken source: emits each bit as 1 with probability `onesProbability` (0.55 models a 55/45 bias),
/// or, with ``stuck(_:)``, one byte value forever.
public struct FaultySource: EntropySource {
    enum Mode { case biased(threshold: UInt64), stuck(UInt8), pseudoRandom }
    var mode: Mode
    var generator: SplitMix
    /// `"faulty"`.
    public var name: String { "faulty" }
    /// `false`.
    public var mayBlock: Bool { false }

    /// Bits that are 1 with probability `onesProbability`.
    public static func biased(onesProbability: Double, seed: UInt64 = 1) -> FaultySource {
        FaultySource(mode: .biased(threshold: UInt64(onesProbability * 0x1p32)), generator: SplitMix(seed: seed))
    }

    /// One byte value repeated forever.
    public static func stuck(_ value: UInt8) -> FaultySource {
        FaultySource(mode: .stuck(value), generator: SplitMix(seed: 0))
    }

    /// Good pseudo-random bytes (SplitMix64), for deterministic passing data.
    public static func pseudoRandom(seed: UInt64) -> FaultySource {
        FaultySource(mode: .pseudoRandom, generator: SplitMix(seed: seed))
    }

    /// Fills the whole buffer.
    public mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) throws(EntropySourceError) -> Int {
        for i in 0..<buffer.count {
            switch mode {
            case .stuck(let value):
                buffer[i] = value
            case .pseudoRandom:
                buffer[i] = UInt8(truncatingIfNeeded: generator.next())
            case .biased(let threshold):
                var byte: UInt8 = 0
                for _ in 0..<8 {
                    byte = byte << 1 | (generator.next() & 0xFFFF_FFFF < threshold ? 1 : 0)
                }
                buffer[i] = byte
            }
        }
        return buffer.count
    }
}

/// A source throttled to `bytesPerSecond`, delivering at most `chunk` bytes per fill after sleeping
/// for the chunk's share of a second: a slow TRNG or a remote server. Its bytes come from getrandom.
public struct ThrottledSource: EntropySource, Sendable {
    /// The rate.
    public let bytesPerSecond: Int
    /// The most bytes one fill returns.
    public let chunk: Int
    var inner = GetRandomSource()

    /// A source of `bytesPerSecond`, `chunk` bytes at a time.
    public init(bytesPerSecond: Int, chunk: Int = 64) {
        self.bytesPerSecond = bytesPerSecond
        self.chunk = chunk
    }

    /// `"throttled"`.
    public var name: String { "throttled(\(bytesPerSecond) B/s)" }
    /// `true`.
    public var mayBlock: Bool { true }

    /// Sleeps, then fills up to `chunk` bytes.
    public mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) throws(EntropySourceError) -> Int {
        let n = min(chunk, buffer.count)
        guard n > 0 else { return 0 }
        let nanoseconds = Int(Double(n) / Double(bytesPerSecond) * 1e9)
        var request = timespec(tv_sec: nanoseconds / 1_000_000_000, tv_nsec: nanoseconds % 1_000_000_000)
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 { request = remaining }
        return try inner.fill(UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n]))
    }
}

/// A source that stalls until ``Gate/open()`` is called, then serves getrandom bytes: a stalled
/// device for pool tests.
public struct GatedSource: EntropySource, Sendable {
    /// The shared switch.
    public final class Gate: Sendable {
        let isOpen = Atomic<Bool>(false)
        let fills = Atomic<Int>(0)
        /// A closed gate.
        public init() {}
        /// Lets fills proceed.
        public func open() { isOpen.store(true, ordering: .releasing) }
        /// Stalls later fills again.
        public func close() { isOpen.store(false, ordering: .releasing) }
        /// Fills completed so far.
        public var completedFills: Int { fills.load(ordering: .acquiring) }
    }

    /// The gate this source waits on.
    public let gate: Gate
    var inner = GetRandomSource()

    /// A source waiting on `gate`.
    public init(gate: Gate) { self.gate = gate }

    /// `"gated"`.
    public var name: String { "gated" }
    /// `true`.
    public var mayBlock: Bool { true }

    /// Waits (polling every 0.5 ms) until the gate is open, then fills up to 256 bytes.
    public mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) throws(EntropySourceError) -> Int {
        while !gate.isOpen.load(ordering: .acquiring) { usleep(500) }
        let n = try inner.fill(UnsafeMutableRawBufferPointer(rebasing: buffer[0..<min(256, buffer.count)]))
        gate.fills.add(1, ordering: .relaxed)
        return n
    }
}
