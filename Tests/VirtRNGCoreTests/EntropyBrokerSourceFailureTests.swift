import Dispatch
import EntropySources
import EntropySourcesTestSupport
import RateLimit
import RateLimitTestSupport
import Testing
import VirtRNGCoreTestSupport

@testable import VirtRNGCore

/// A supply that runs dry, fails (a health test, a vanished device) and recovers.
@Suite struct EntropyBrokerSourceFailureTests {
    let unhealthy = EntropySourceError.unhealthy(
        source: "trng", failure: .repetitionCount(value: 0x11, count: 4, cutoff: 4))
    let gone = EntropySourceError.notFound(path: "/dev/hwrng")

    func broker(
        _ supply: ScriptedSupply, policy: SourceFailurePolicy = .wait
    ) throws -> (Broker, EventLog, WakeCounter) {
        try makeBroker(
            supply: supply, configuration: BrokerConfiguration(failurePolicy: policy),
            classes: [.unlimited(id: HTBClassID(1))])
    }

    @Test func anEmptySupplyParksReadsUntilItSaysItHasBytes() throws {
        let supply = ScriptedSupply(available: 0)
        let (broker, log, wakes) = try broker(supply)
        let deliveries = Deliveries()
        let client = try broker.connect(to: HTBClassID(1), sink: deliveries.sink(0))
        try broker.submit(.read(100), for: client, at: zero)
        #expect(broker.run(at: zero) == .whenSourceReady)
        #expect(supply.waiting == 1)
        #expect(wakes.count == 0)
        // A decision is asked for only once its bytes are all staged: 60 are not enough.
        supply.refill(60)
        #expect(wakes.count == 1)
        #expect(broker.run(at: zero) == .whenSourceReady)
        #expect(deliveries.take(0).isEmpty)
        supply.refill(40)
        #expect(wakes.count == 2)
        #expect(broker.run(at: zero) == .idle)
        #expect(deliveries.take(0) == [.bytes(100, completesRead: true)])
        #expect(deliveries.stream == supply.expectedBytes(0..<100))
        #expect(log.events.isEmpty)
    }

    @Test func underTheWaitPolicyReadsWaitThroughAFailureAndAreServedAfterIt() throws {
        let supply = ScriptedSupply(available: 150)
        let (broker, log, wakes) = try broker(supply)
        let deliveries = Deliveries()
        let a = try broker.connect(to: HTBClassID(1), sink: deliveries.sink(0))
        let b = try broker.connect(to: HTBClassID(1), sink: deliveries.sink(1))
        try broker.submit(.read(100), for: a, at: zero)
        #expect(broker.run(at: zero) == .idle)
        #expect(broker.stagedByteCount == 50)
        supply.fail(with: unhealthy)
        try broker.submit(.read(200), for: a, at: zero)
        try broker.submit(.marker(1), for: a, at: zero)
        #expect(broker.run(at: zero) == .whenSourceReady)
        #expect(log.events == [.sourceFailed(unhealthy)])
        #expect(broker.currentSourceError == unhealthy)
        // Raised once, however often the broker looks again; the reads wait, in order.
        for _ in 0..<3 { #expect(broker.run(at: zero) == .whenSourceReady) }
        #expect(log.events == [.sourceFailed(unhealthy)])
        #expect(supply.immediateNotifications == 0)
        #expect(try broker.pendingBytes(of: a) == 200)
        // The 50 staged bytes passed the supply's tests, but they are a's, whose blocking read waits
        // first: another client's non-blocking read gets nothing.
        try broker.submit(.readAvailable(30), for: b, at: zero)
        #expect(deliveries.take(1) == [.available(0)])
        // A different failure is a new event.
        supply.fail(with: gone)
        _ = broker.run(at: zero)
        #expect(log.events == [.sourceFailed(unhealthy), .sourceFailed(gone)])
        let before = wakes.count
        supply.refill(1_000)
        #expect(wakes.count > before)
        #expect(broker.run(at: zero) == .idle)
        #expect(log.events == [.sourceFailed(unhealthy), .sourceFailed(gone), .sourceRecovered])
        #expect(broker.currentSourceError == nil)
        let answers = deliveries.take(0)
        #expect(answers.first == .bytes(100, completesRead: true))
        #expect(answers.last == .marker(1))
        #expect(
            answers.dropFirst().dropLast().reduce(0) { if case .bytes(let n, _) = $1 { $0 + n } else { $0 } } == 200)
        #expect(deliveries.stream == supply.expectedBytes(0..<300))
        #expect(supply.produced == 300 + broker.stagedByteCount)
        // A failure after recovery is raised again.
        supply.fail(with: unhealthy)
        try broker.submit(.read(5_000), for: b, at: zero)
        #expect(broker.run(at: zero) == .whenSourceReady)
        #expect(log.events.last == .sourceFailed(unhealthy))
    }

    @Test func underTheFailPolicyPendingReadsFailAtOnceAndNewOnesUntilRecovery() throws {
        let supply = ScriptedSupply(available: 0)
        let (broker, log, _) = try broker(supply, policy: .failRequests)
        let deliveries = Deliveries()
        let clients = try (0..<4).map { try broker.connect(to: HTBClassID(1), sink: deliveries.sink($0)) }
        try broker.submit(.read(300), for: clients[0], at: zero)
        try broker.submit(.marker(1), for: clients[0], at: zero)
        try broker.submit(.read(100), for: clients[1], at: zero)
        // Client 2 asks for nothing; client 3 is paused with a read pending.
        try broker.submit(.read(50), for: clients[3], at: zero)
        try broker.setAcceptingBytes(false, for: clients[3])
        // Merely empty is not failing: the reads wait.
        #expect(broker.run(at: zero) == .whenSourceReady)
        #expect(log.events.isEmpty)
        supply.fail(with: gone)
        _ = broker.run(at: zero)
        #expect(log.events == [.sourceFailed(gone), .requestsFailed(clients: 3, bytes: 450)])
        for i in [0, 1, 3] { #expect(deliveries.take(i) == [.failed(gone)], "client \(i)") }
        #expect(deliveries.take(2).isEmpty)
        for client in clients {
            #expect(try broker.pendingBytes(of: client) == 0)
            #expect(try broker.pendingRequests(of: client) == 0)
        }
        #expect(try broker.statistics(of: HTBClassID(1)).pendingBytes == 0)
        // A new read fails at the next run; level queries and markers are still answered.
        try broker.submit(.entropyLevel, for: clients[2], at: zero)
        try broker.submit(.read(10), for: clients[2], at: zero)
        try broker.submit(.marker(2), for: clients[2], at: zero)
        _ = broker.run(at: zero)
        #expect(deliveries.take(2) == [.level(bits: 0), .failed(gone)])
        #expect(log.events.count == 3)
        #expect(log.events.last == .requestsFailed(clients: 1, bytes: 10))
        // The clients stay connected and are served once the supply recovers.
        supply.refill(500)
        try broker.setAcceptingBytes(true, for: clients[3])
        for client in clients { try broker.submit(.read(100), for: client, at: zero) }
        #expect(broker.run(at: zero) == .idle)
        for i in 0..<4 { #expect(deliveries.take(i) == [.bytes(100, completesRead: true)], "client \(i)") }
        #expect(log.events.last == .sourceRecovered)
        #expect(deliveries.stream == supply.expectedBytes(0..<400))
    }

    @Test func bytesAreNeverServedBeyondWhatTheSupplyHandedOut() throws {
        // Short reads of 7 bytes, a failure in the middle of topping up the stage, recovery.
        let supply = ScriptedSupply(available: 1_000, maximumPerFill: 7)
        let (broker, log, _) = try broker(supply)
        let deliveries = Deliveries()
        let client = try broker.connect(to: HTBClassID(1), sink: deliveries.sink(0))
        try broker.submit(.read(3_000), for: client, at: zero)
        supply.error = unhealthy
        #expect(broker.run(at: zero) == .whenSourceReady)
        #expect(log.events == [.sourceFailed(unhealthy)])
        // The 1,000 good bytes are staged, not served: a decision waits until all its bytes are there.
        #expect(broker.stagedByteCount == 1_000)
        #expect(deliveries.stream.isEmpty)
        supply.refill(2_000)
        #expect(broker.run(at: zero) == .idle)
        #expect(deliveries.stream == supply.expectedBytes(0..<3_000))
        #expect(supply.produced == 3_000 + broker.stagedByteCount)
    }

    /// A real pool over the health monitor over a source stuck at one value: the monitor rejects
    /// every block, marks the source failed, and the pool reports it. The broker must raise the
    /// failure and deliver nothing, and must not be woken in a loop while the source stays failed.
    @Test(arguments: [SourceFailurePolicy.wait, .failRequests])
    func aStuckSourceBehindHealthTestsDeliversNothingAndRaisesTheFailure(policy: SourceFailurePolicy) throws {
        let pool = try PrefetchPool(source: try HealthMonitor(FaultySource.stuck(0x11)), capacity: 4_096)
        defer { pool.close() }
        let ready = DispatchSemaphore(value: 0)
        let wakes = WakeCounter()
        let count = wakes.callback()
        let log = EventLog()
        let broker = try EntropyBroker<PrefetchPool, Instant>(
            supply: pool, configuration: BrokerConfiguration(failurePolicy: policy), start: zero,
            sourceReady: {
                count()
                ready.signal()
            }, onEvent: { log.events.append($0) })
        try broker.addClass(.unlimited(id: HTBClassID(1)), at: zero)
        let deliveries = Deliveries()
        let client = try broker.connect(to: HTBClassID(1), sink: deliveries.sink(0))
        try broker.submit(.read(64), for: client, at: zero)
        // Follow the broker's wakes as an event loop would (a run after every notification), until
        // 300 ms after it reported the failure.
        let deadline = DispatchTime.now() + 10
        var failedAt: DispatchTime?
        var runs = 0
        var runsAtFailure = 0
        while true {
            let wake = broker.run(at: zero)
            runs += 1
            if failedAt == nil && !log.events.isEmpty {
                failedAt = .now()
                runsAtFailure = runs
            }
            // Until the failure: wait for the source; with it, under .failRequests, nothing waits.
            #expect(wake == (failedAt == nil || policy == .wait ? .whenSourceReady : .idle))
            let end = failedAt.map { $0 + 0.3 } ?? deadline
            guard ready.wait(timeout: end) == .success, DispatchTime.now() < end else { break }
        }
        guard case .sourceFailed(let error)? = log.events.first else {
            Issue.record("no failure raised: \(log.events)")
            return
        }
        guard case .unhealthy(source: "faulty", failure: _) = error else {
            Issue.record("failed with \(error)")
            return
        }
        // The pool retries the source (1 ms, doubling) and tells the broker each time, no more often.
        let after = runs - runsAtFailure
        #expect(after < 40, "\(after) runs in 300 ms, \(wakes.count) wakes")
        #expect(log.events.filter { if case .sourceFailed = $0 { true } else { false } }.count == 1)
        #expect(deliveries.stream.isEmpty)
        #expect(broker.bytesServed == 0)
        switch policy {
        case .wait:
            #expect(deliveries.take(0).isEmpty)
            #expect(try broker.pendingBytes(of: client) == 64)
        case .failRequests:
            #expect(deliveries.take(0) == [.failed(error)])
            #expect(log.events.contains(.requestsFailed(clients: 1, bytes: 64)))
        }
    }
}
