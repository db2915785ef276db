import EntropySources
import RateLimit
import RateLimitTestSupport
import Testing
import VirtRNGCoreTestSupport

@testable import VirtRNGCore

/// Holds the broker for sinks and event handlers that try to call it (they must be refused).
final class BrokerReference {
    weak var broker: Broker?
}

/// Clients and classes: back-pressure, per-client limits, stale handles, re-entrant calls and
/// configurations the broker refuses.
@Suite struct EntropyBrokerClientTests {
    /// Classes A (2) and B (3), 10,000 B/s each, both allowed the whole 20,000 B/s of their parent.
    func twoClasses() throws -> Broker {
        try makeBroker(
            configuration: BrokerConfiguration(maximumGrant: 1_024),
            classes: [
                shaping(1, rate: 20_000), shaping(2, parent: 1, rate: 10_000, ceil: 20_000),
                shaping(3, parent: 1, rate: 10_000, ceil: 20_000),
            ].map { BrokerClassConfiguration(shaping: $0) }
        ).0
    }

    /// Drives 20 s from `start` with every client in `guests` kept busy; bytes per second each got
    /// over the last 18 s.
    func phase(_ broker: Broker, _ guests: [GreedyClient], from start: Instant) throws -> [Double] {
        var baseline: [UInt64] = []
        let measureFrom = start.advanced(by: .seconds(2))
        let end = start.advanced(by: .seconds(20))
        try drive(
            broker, from: start, until: end, tick: .seconds(1),
            beforeRun: { now in
                if now == measureFrom { baseline = try guests.map { try broker.bytesServed(to: $0.client) } }
                for g in guests { try g.topUp(broker, at: now) }
            })
        return try guests.indices.map { Double(try broker.bytesServed(to: guests[$0].client) - baseline[$0]) / 18 }
    }

    func expectRates(_ measured: [Double], _ expected: [Double], _ comment: Comment) {
        for (m, e) in zip(measured, expected) {
            if e == 0 {
                #expect(m == 0, "\(comment): \(measured)")
            } else {
                #expect(relativeError(m, e) < 0.015, "\(comment): \(measured)")
            }
        }
    }

    @Test func aPausedClientGetsNothingAndItsShareGoesToTheOthers() throws {
        let broker = try twoClasses()
        let deliveries = Deliveries()
        let guests = try [2, 2, 3].enumerated().map { label, id in
            GreedyClient(
                label: label, client: try broker.connect(to: HTBClassID(UInt32(id)), sink: deliveries.sink(label)))
        }
        expectRates(try phase(broker, guests, from: zero), [5_000, 5_000, 10_000], "all busy")
        try broker.setAcceptingBytes(false, for: guests[0].client)
        let answered = deliveries.answers[0]?.count
        let waiting = try broker.pendingBytes(of: guests[0].client)
        expectRates(try phase(broker, guests, from: ms(20_000)), [0, 10_000, 10_000], "a1 paused")
        #expect(deliveries.answers[0]?.count == answered)
        #expect(try broker.pendingBytes(of: guests[0].client) == waiting)
        try broker.setAcceptingBytes(false, for: guests[1].client)
        // Class A has demand but no client that can take it: B borrows A's whole share.
        expectRates(try phase(broker, guests, from: ms(40_000)), [0, 0, 20_000], "A paused")
        #expect(
            try broker.statistics(of: HTBClassID(2)).pendingBytes == waiting + broker.pendingBytes(of: guests[1].client)
        )
        for g in guests { try broker.setAcceptingBytes(true, for: g.client) }
        expectRates(try phase(broker, guests, from: ms(60_000)), [5_000, 5_000, 10_000], "all resumed")
    }

    @Test func disconnectingAClientWithPendingReadsReleasesItsDemand() throws {
        let broker = try twoClasses()
        let deliveries = Deliveries()
        var guests = try [2, 2, 3].enumerated().map { label, id in
            GreedyClient(
                label: label, client: try broker.connect(to: HTBClassID(UInt32(id)), sink: deliveries.sink(label)))
        }
        expectRates(try phase(broker, guests, from: zero), [5_000, 5_000, 10_000], "all busy")
        let answered = deliveries.answers[0]?.count
        try broker.disconnect(guests[0].client)
        guests.remove(at: 0)
        expectRates(try phase(broker, guests, from: ms(20_000)), [10_000, 10_000], "a1 gone")
        #expect(deliveries.answers[0]?.count == answered)
        try broker.disconnect(guests[0].client)
        guests.remove(at: 0)
        // Class A is empty: had its demand stayed with the HTB, A would still be served (to nobody).
        expectRates(try phase(broker, guests, from: ms(40_000)), [20_000], "A empty")
        let a = try broker.statistics(of: HTBClassID(2))
        #expect(a.clients == 0 && a.pendingBytes == 0)
        guests.append(GreedyClient(label: 3, client: try broker.connect(to: HTBClassID(2), sink: deliveries.sink(3))))
        expectRates(try phase(broker, guests, from: ms(60_000)), [10_000, 10_000], "A back")
    }

    @Test func aClientThatIgnoresBackPressureIsRefusedWithTypedErrors() throws {
        let (broker, _, _) = try makeBroker(
            configuration: BrokerConfiguration(maximumPendingBytesPerClient: 1_000, maximumPendingRequestsPerClient: 4),
            classes: [BrokerClassConfiguration(shaping: shaping(1, rate: 1_000, burst: 1_000))])
        let deliveries = Deliveries()
        let client = try broker.connect(to: HTBClassID(1), sink: deliveries.sink(0))
        try broker.submit(.read(600), for: client, at: zero)
        try broker.submit(.read(400), for: client, at: zero)
        #expect(throws: BrokerError.tooManyPendingBytes(pending: 1_000, requested: 1, maximum: 1_000)) {
            try broker.submit(.read(1), for: client, at: zero)
        }
        try broker.submit(.read(0), for: client, at: zero)
        try broker.submit(.marker(1), for: client, at: zero)
        for request in [BrokerRequest.marker(2), .entropyLevel, .readAvailable(1), .read(0)] {
            #expect(throws: BrokerError.tooManyPendingRequests(maximum: 4)) {
                try broker.submit(request, for: client, at: zero)
            }
        }
        #expect(try broker.pendingBytes(of: client) == 1_000)
        #expect(try broker.pendingRequests(of: client) == 4)
        // The refused requests left no trace: the four accepted ones are answered, and then the
        // client may submit again.
        try drive(broker, until: ms(2_000))
        let answers = deliveries.take(0)
        let ends = answers.compactMap { answer -> String? in
            switch answer {
            case .bytes(let n, true): "read done\(n == 0 ? " (empty)" : "")"
            case .marker(let tag): "marker \(tag)"
            case .bytes: nil
            default: "\(answer)"
            }
        }
        #expect(ends == ["read done", "read done", "read done (empty)", "marker 1"])
        #expect(answers.reduce(0) { if case .bytes(let n, _) = $1 { $0 + n } else { $0 } } == 1_000)
        #expect(try broker.pendingRequests(of: client) == 0)
        #expect(try broker.statistics(of: HTBClassID(1)).requestsAnswered == 4)
        try broker.submit(.read(1_000), for: client, at: ms(2_000))
        #expect(throws: BrokerError.invalidCount(-1)) { try broker.submit(.read(-1), for: client, at: ms(2_000)) }
        #expect(throws: BrokerError.invalidCount(-5)) {
            try broker.submit(.readAvailable(-5), for: client, at: ms(2_000))
        }
    }

    @Test func aFullClassRefusesClientsUntilOneLeaves() throws {
        let (broker, _, _) = try makeBroker(classes: [
            BrokerClassConfiguration(shaping: shaping(1, rate: 1_000), maximumClients: 2)
        ])
        let first = try broker.connect(to: HTBClassID(1), sink: { _ in })
        _ = try broker.connect(to: HTBClassID(1), sink: { _ in })
        #expect(throws: BrokerError.classFull(HTBClassID(1), maximumClients: 2)) {
            try broker.connect(to: HTBClassID(1), sink: { _ in })
        }
        try broker.disconnect(first)
        _ = try broker.connect(to: HTBClassID(1), sink: { _ in })
        #expect(try broker.statistics(of: HTBClassID(1)).clients == 2)
    }

    @Test func aHandleGoesStaleAtDisconnectEvenWhenItsSlotIsReused() throws {
        let (broker, _, _) = try makeBroker(classes: [BrokerClassConfiguration(shaping: shaping(1, rate: 1_000))])
        let deliveries = Deliveries()
        let old = try broker.connect(to: HTBClassID(1), sink: deliveries.sink(0))
        try broker.submit(.read(1_000), for: old, at: zero)
        try broker.disconnect(old)
        let new = try broker.connect(to: HTBClassID(1), sink: deliveries.sink(1))
        #expect(new.slot == old.slot)
        #expect(new != old)
        for call in [
            { try broker.submit(.entropyLevel, for: old, at: zero) }, { _ = try broker.pendingBytes(of: old) },
            { _ = try broker.pendingRequests(of: old) }, { _ = try broker.bytesServed(to: old) },
            { try broker.setAcceptingBytes(false, for: old) }, { try broker.disconnect(old) },
        ] as [() throws -> Void] {
            #expect(throws: BrokerError.unknownClient) { try call() }
        }
        // The new client is served; the old one's sink hears nothing more.
        let answered = deliveries.answers[0]?.count ?? 0
        try broker.submit(.marker(9), for: new, at: zero)
        try drive(broker, until: ms(100_000))
        #expect(deliveries.take(1) == [.marker(9)])
        #expect((deliveries.answers[0]?.count ?? 0) == answered)
        #expect(try broker.statistics(of: HTBClassID(1)).pendingBytes == 0)
    }

    @Test func aSinkOrEventHandlerThatCallsTheBrokerIsRefused() throws {
        let reference = BrokerReference()
        var refusals: [String: BrokerError] = [:]
        var nestedRun: BrokerWake<Instant>?
        let supply = ScriptedSupply()
        let broker = try Broker(
            supply: supply, start: zero, sourceReady: {},
            onEvent: { _ in
                do throws(BrokerError) {
                    try reference.broker?.addClass(BrokerClassConfiguration(shaping: shaping(9, rate: 1)), at: zero)
                } catch { refusals["event: addClass"] = error }
            })
        reference.broker = broker
        try broker.addClass(BrokerClassConfiguration(shaping: shaping(1, rate: 1_000_000)), at: zero)
        var me: BrokerClient?
        let other = try broker.connect(to: HTBClassID(1), sink: { _ in })
        me = try broker.connect(to: HTBClassID(1)) { delivery in
            guard let broker = reference.broker, let me else { return }
            func attempt(_ name: String, _ call: () throws -> Void) {
                do { try call() } catch { refusals[name] = error as? BrokerError }
            }
            attempt("submit") { try broker.submit(.read(10), for: me, at: zero) }
            attempt("connect") { _ = try broker.connect(to: HTBClassID(1), sink: { _ in }) }
            attempt("disconnect") { try broker.disconnect(other) }
            attempt("pause") { try broker.setAcceptingBytes(false, for: me) }
            attempt("addClass") {
                try broker.addClass(BrokerClassConfiguration(shaping: shaping(8, rate: 1)), at: zero)
            }
            nestedRun = broker.run(at: zero)
        }
        try broker.submit(.read(100), for: me!, at: zero)
        _ = broker.run(at: zero)
        for name in ["submit", "connect", "disconnect", "pause", "addClass"] {
            #expect(refusals[name] == .reentrantCall, "\(name)")
        }
        #expect(nestedRun == .now)
        // Nothing the sink tried happened.
        #expect(try broker.pendingRequests(of: me!) == 0)
        #expect(try broker.statistics(of: HTBClassID(1)).clients == 2)
        #expect(throws: BrokerError.unknownClass(HTBClassID(8))) { try broker.statistics(of: HTBClassID(8)) }
        // Events are delivered under the same rule.
        supply.fail(with: .exhausted(source: "scripted"))
        try broker.submit(.read(5_000), for: me!, at: zero)
        _ = broker.run(at: zero)
        #expect(refusals["event: addClass"] == .reentrantCall)
        #expect(throws: BrokerError.unknownClass(HTBClassID(9))) { try broker.statistics(of: HTBClassID(9)) }
    }

    @Test(arguments: [
        ("maximumPendingBytesPerClient", BrokerConfiguration(maximumPendingBytesPerClient: 0)),
        ("maximumPendingRequestsPerClient", BrokerConfiguration(maximumPendingRequestsPerClient: 0)),
        ("maximumGrant", BrokerConfiguration(maximumGrant: 0)), ("bytesPerRun", BrokerConfiguration(bytesPerRun: -1)),
    ])
    func refusesBrokerLimitsBelowOne(name: String, configuration: BrokerConfiguration) throws {
        let value = [
            configuration.maximumPendingBytesPerClient, configuration.maximumPendingRequestsPerClient,
            configuration.maximumGrant, configuration.bytesPerRun,
        ].min()!
        #expect(throws: BrokerError.invalidLimit(name: name, value: value)) {
            try Broker(supply: ScriptedSupply(), configuration: configuration, start: zero, sourceReady: {})
        }
    }

    @Test func refusesBadClassesAndLeavesNoTraceOfThem() throws {
        let (broker, _, _) = try makeBroker(classes: [BrokerClassConfiguration(shaping: shaping(1, rate: 10_000))])
        let refused: [(BrokerClassConfiguration, BrokerError)] = [
            (
                BrokerClassConfiguration(shaping: shaping(2, parent: 1, rate: 100), clientQuantum: 0),
                .invalidLimit(name: "clientQuantum", value: 0)
            ),
            (
                BrokerClassConfiguration(shaping: shaping(2, parent: 1, rate: 100), maximumClients: 0),
                .invalidLimit(name: "maximumClients", value: 0)
            ),
            (
                BrokerClassConfiguration(shaping: shaping(2, parent: 1, rate: 0)),
                .shaping(.rateNotPositive(class: HTBClassID(2), rate: 0))
            ),
            (
                BrokerClassConfiguration(shaping: shaping(2, parent: 1, rate: 100, ceil: 50)),
                .shaping(.ceilBelowRate(class: HTBClassID(2), rate: 100, ceil: 50))
            ),
            (
                BrokerClassConfiguration(shaping: shaping(2, parent: 7, rate: 100)),
                .shaping(.unknownParent(class: HTBClassID(2), parent: HTBClassID(7)))
            ),
            (BrokerClassConfiguration(shaping: shaping(1, rate: 100)), .shaping(.duplicateClass(HTBClassID(1)))),
            (
                BrokerClassConfiguration(
                    shaping: shaping(2, parent: 1, rate: 100),
                    window: BrokerWindow(maxBytes: 100, periodMilliseconds: 0)),
                .window(.periodIsZero)
            ),
            (
                BrokerClassConfiguration(
                    shaping: shaping(2, parent: 1, rate: 100), window: BrokerWindow(maxBytes: 0, periodMilliseconds: 10)
                ),
                .window(.maxBytesIsZero)
            ),
            (
                BrokerClassConfiguration(
                    shaping: shaping(2, parent: 1, rate: 100),
                    window: BrokerWindow(maxBytes: 1 << 63, periodMilliseconds: 10)),
                .window(.maxBytesTooLarge(1 << 63, maximum: UInt64(Int64.max)))
            ),
        ]
        for (configuration, error) in refused {
            #expect(throws: error) { try broker.addClass(configuration, at: zero) }
            #expect(throws: BrokerError.unknownClass(HTBClassID(2))) { try broker.statistics(of: HTBClassID(2)) }
        }
        // Class 1 is still a leaf (none of the refused children was attached to it).
        _ = try broker.connect(to: HTBClassID(1), sink: { _ in })
        #expect(throws: BrokerError.unknownClass(HTBClassID(5))) {
            try broker.connect(to: HTBClassID(5), sink: { _ in })
        }
    }

    @Test func clientsAttachToLeavesOnlyAndLeavesWithClientsGetNoChildren() throws {
        let (broker, _, _) = try makeBroker(classes: [
            BrokerClassConfiguration(shaping: shaping(1, rate: 10_000)),
            BrokerClassConfiguration(shaping: shaping(2, parent: 1, rate: 5_000)),
        ])
        #expect(throws: BrokerError.notALeafClass(HTBClassID(1))) {
            try broker.connect(to: HTBClassID(1), sink: { _ in })
        }
        let client = try broker.connect(to: HTBClassID(2), sink: { _ in })
        #expect(throws: BrokerError.notALeafClass(HTBClassID(2))) {
            try broker.addClass(BrokerClassConfiguration(shaping: shaping(3, parent: 2, rate: 1_000)), at: zero)
        }
        #expect(throws: BrokerError.unknownClass(HTBClassID(3))) { try broker.statistics(of: HTBClassID(3)) }
        // Once the class is empty it may become an inner class.
        try broker.disconnect(client)
        try broker.addClass(BrokerClassConfiguration(shaping: shaping(3, parent: 2, rate: 1_000)), at: zero)
        #expect(throws: BrokerError.notALeafClass(HTBClassID(2))) {
            try broker.connect(to: HTBClassID(2), sink: { _ in })
        }
        _ = try broker.connect(to: HTBClassID(3), sink: { _ in })
    }
}
