import EntropySources
import RateLimit
import RateLimitTestSupport
import Synchronization
import Testing
import VirtRNGCoreTestSupport

@testable import VirtRNGCore

typealias Instant = ManualClock.Instant
typealias Broker = EntropyBroker<ScriptedSupply, Instant>

let zero = Instant(nanoseconds: 0)

func ms(_ v: Int64) -> Instant { Instant(nanoseconds: v * 1_000_000) }

/// A class of the HTB tree with small bursts (2,000 bytes unless given), so that rates over a
/// simulated minute are not blurred by the initial burst.
func shaping(
    _ id: UInt32, parent: UInt32? = nil, rate: Int, ceil: Int? = nil, burst: Int = 2_000, quantum: Int? = nil,
    prio: Int = 0
) -> HTBClassConfiguration {
    HTBClassConfiguration(
        id: HTBClassID(id), parent: parent.map(HTBClassID.init), rate: rate, ceil: ceil, burst: burst,
        cburst: burst, quantum: quantum, prio: prio)
}

func relativeError(_ measured: Double, _ expected: Double) -> Double { abs(measured - expected) / expected }

/// Jain's fairness index: 1 when all shares are equal, 1/n when one takes everything.
func jain(_ xs: [Double]) -> Double {
    let s = xs.reduce(0, +)
    return s * s / (Double(xs.count) * xs.reduce(0) { $0 + $1 * $1 })
}

/// An answer as a value: ``BrokerDelivery``'s byte views live only during the call.
enum Answer: Equatable, CustomStringConvertible {
    case bytes(Int, completesRead: Bool)
    case available(Int)
    case level(bits: Int)
    case marker(UInt64)
    case failed(EntropySourceError)

    var description: String {
        switch self {
        case .bytes(let n, let completes): "bytes(\(n)\(completes ? ", last" : ""))"
        case .available(let n): "available(\(n))"
        case .level(let bits): "level(\(bits))"
        case .marker(let tag): "marker(\(tag))"
        case .failed(let error): "failed(\(error))"
        }
    }
}

/// Everything the broker handed to clients, per client and as one stream in delivery order.
final class Deliveries {
    /// Answers per client label, in the order received.
    var answers: [Int: [Answer]] = [:]
    /// Every byte delivered, to any client, in delivery order.
    var stream: [UInt8] = []
    /// Bytes delivered per client label.
    var bytes: [Int: Int] = [:]
    /// When set, every byte received is also kept per client.
    var keepBytesPerClient = false
    var bytesPerClient: [Int: [UInt8]] = [:]

    /// A sink that records under `label`.
    func sink(_ label: Int) -> (BrokerDelivery) -> Void {
        { [self] delivery in record(label, delivery) }
    }

    func record(_ label: Int, _ delivery: BrokerDelivery) {
        switch delivery {
        case .bytes(let piece, let completes):
            answers[label, default: []].append(.bytes(piece.count, completesRead: completes))
            take(label, piece)
        case .available(let piece):
            answers[label, default: []].append(.available(piece.count))
            take(label, piece)
        case .entropyLevel(let bits): answers[label, default: []].append(.level(bits: bits))
        case .marker(let tag): answers[label, default: []].append(.marker(tag))
        case .failed(let error): answers[label, default: []].append(.failed(error))
        }
    }

    private func take(_ label: Int, _ piece: UnsafeRawBufferPointer) {
        stream.append(contentsOf: piece)
        bytes[label, default: 0] += piece.count
        if keepBytesPerClient { bytesPerClient[label, default: []].append(contentsOf: piece) }
    }

    /// Answers of `label` so far, forgotten once returned.
    func take(_ label: Int) -> [Answer] {
        defer { answers[label] = [] }
        return answers[label] ?? []
    }
}

/// The broker's events, in order.
final class EventLog {
    var events: [BrokerEvent] = []
}

/// Counts the broker's `sourceReady` calls (from any thread).
final class WakeCounter: Sendable {
    let calls = Atomic<Int>(0)
    var count: Int { calls.load(ordering: .acquiring) }
    func callback() -> @Sendable () -> Void { { [self] in calls.add(1, ordering: .relaxed) } }
}

/// A broker over `supply` with an event log and a wake counter.
func makeBroker(
    supply: ScriptedSupply = ScriptedSupply(), configuration: BrokerConfiguration = .init(),
    classes: [BrokerClassConfiguration] = []
) throws -> (Broker, EventLog, WakeCounter) {
    let log = EventLog()
    let wakes = WakeCounter()
    let broker = try Broker(
        supply: supply, configuration: configuration, start: zero, sourceReady: wakes.callback(),
        onEvent: { log.events.append($0) })
    for c in classes { try broker.addClass(c, at: zero) }
    return (broker, log, wakes)
}

extension EntropyBroker {
    /// Every byte outside the staged window `[stageStart, stageEnd)` is zero: served bytes were wiped.
    var stageIsWipedOutsideUnservedBytes: Bool {
        allZero(UnsafeRawBufferPointer(rebasing: stage[..<stageStart]))
            && allZero(UnsafeRawBufferPointer(rebasing: stage[stageEnd...]))
    }

    /// Bytes taken from the supply and not yet served.
    var stagedByteCount: Int { stageEnd - stageStart }
}

/// Whether every byte is zero (eight at a time: the check runs after every step of long tests).
func allZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
    var bits: UInt64 = 0
    var i = 0
    while i + 8 <= bytes.count {
        bits |= bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self)
        i += 8
    }
    while i < bytes.count {
        bits |= UInt64(bytes[i])
        i += 1
    }
    return bits == 0
}

/// Runs the broker on a manual clock from `start` until `end` (exclusive), following its wakes.
///
/// `beforeRun` is called before every run (to top up clients' reads or add load); `afterRun` after
/// every run (to check bounds). With `tick`, the clock also stops at every multiple of `tick`, for
/// clients that act on a schedule of their own. A wake of ``BrokerWake/whenSourceReady`` is a failure
/// here: the supply is meant to be unlimited. Returns the number of runs.
@discardableResult
func drive(
    _ broker: Broker, from start: Instant = zero, until end: Instant, tick: Duration? = nil,
    beforeRun: (Instant) throws -> Void = { _ in }, afterRun: (Instant) throws -> Void = { _ in }
) rethrows -> Int {
    var now = start
    var runs = 0
    func nextTick() -> Instant {
        guard let tick else { return end }
        let step = ManualClock.Instant(nanoseconds: 0).advanced(by: tick).nanoseconds
        return min(end, Instant(nanoseconds: (now.nanoseconds / step + 1) * step))
    }
    while now < end {
        try beforeRun(now)
        let wake = broker.run(at: now)
        runs += 1
        try afterRun(now)
        switch wake {
        case .now: continue
        case .at(let t):
            guard t > now else {
                Issue.record("wake at \(t), not after \(now)")
                return runs
            }
            now = min(t, nextTick())
        case .idle: now = nextTick()
        case .whenSourceReady:
            Issue.record("the supply ran dry at \(now)")
            return runs
        }
    }
    return runs
}

/// A client that always has `depth` reads of `readSize` bytes pending, as a greedy guest does.
struct GreedyClient {
    let label: Int
    let client: BrokerClient
    var readSize = 4_096
    var depth = 4

    func topUp(_ broker: Broker, at now: Instant) throws {
        while try broker.pendingRequests(of: client) < depth {
            try broker.submit(.read(readSize), for: client, at: now)
        }
    }
}
