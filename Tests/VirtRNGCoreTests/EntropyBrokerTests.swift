import EntropySources
import RateLimit
import RateLimitTestSupport
import Testing
import VirtRNGCoreTestSupport

@testable import VirtRNGCore

/// The request protocol: what each client is answered, in what order, with which bytes.
@Suite struct EntropyBrokerTests {
    /// One class of 1,000 B/s with 1,000-byte buckets, 512-byte grants and 256-byte client turns.
    func slowBroker(supply: ScriptedSupply = ScriptedSupply()) throws -> (Broker, EventLog, WakeCounter) {
        try makeBroker(
            supply: supply, configuration: BrokerConfiguration(maximumGrant: 512),
            classes: [BrokerClassConfiguration(shaping: shaping(1, rate: 1_000, burst: 1_000), clientQuantum: 256)])
    }

    @Test func answersEveryRequestOfAClientInOrder() throws {
        let (broker, _, _) = try slowBroker()
        let deliveries = Deliveries()
        let client = try broker.connect(to: HTBClassID(1), sink: deliveries.sink(0))
        for request in [
            BrokerRequest.read(600), .entropyLevel, .marker(7), .readAvailable(50), .read(100), .marker(8),
        ] {
            try broker.submit(request, for: client, at: zero)
        }
        // Everything waits behind the blocking read at the front.
        #expect(deliveries.take(0).isEmpty)
        #expect(try broker.pendingRequests(of: client) == 6)
        #expect(try broker.pendingBytes(of: client) == 700)
        #expect(broker.run(at: zero) == .idle)
        let answers = deliveries.take(0).map { answer -> Answer in
            if case .level = answer { return .level(bits: -1) }
            return answer
        }
        // 512 granted first, in two 256-byte turns; then 188: the read's last 88 and, after the
        // level, the marker and the non-blocking read, all of the next read.
        #expect(
            answers == [
                .bytes(256, completesRead: false), .bytes(256, completesRead: false), .bytes(88, completesRead: true),
                .level(bits: -1), .marker(7), .available(50), .bytes(100, completesRead: true), .marker(8),
            ])
        #expect(try broker.pendingRequests(of: client) == 0)
        #expect(try broker.pendingBytes(of: client) == 0)
        #expect(try broker.bytesServed(to: client) == 750)
        let statistics = try broker.statistics(of: HTBClassID(1))
        #expect(statistics == BrokerClassStatistics(bytesServed: 750, requestsAnswered: 6, clients: 1, pendingBytes: 0))
    }

    @Test func answersLevelMarkerAndNonBlockingReadsAtOnceWhenNothingWaitsBeforeThem() throws {
        let supply = ScriptedSupply(available: 1_000)
        let (broker, _, _) = try slowBroker(supply: supply)
        let deliveries = Deliveries()
        let client = try broker.connect(to: HTBClassID(1), sink: deliveries.sink(0))
        try broker.submit(.entropyLevel, for: client, at: zero)
        #expect(deliveries.take(0) == [.level(bits: 8_000)])
        try broker.submit(.marker(42), for: client, at: zero)
        #expect(deliveries.take(0) == [.marker(42)])
        try broker.submit(.readAvailable(100), for: client, at: zero)
        #expect(deliveries.take(0) == [.available(100)])
        // Staged bytes count as well as the supply's: 900 bytes are left either way.
        try broker.submit(.entropyLevel, for: client, at: zero)
        #expect(deliveries.take(0) == [.level(bits: 7_200)])
        #expect(broker.entropyLevelBits == 7_200)
        #expect(deliveries.stream == supply.expectedBytes(0..<100))
    }

    @Test func deliversABlockingReadInPiecesAsItsClassIsGrantedAndCompletesOnlyTheLast() throws {
        let (broker, _, _) = try slowBroker()
        let deliveries = Deliveries()
        let client = try broker.connect(to: HTBClassID(1), sink: deliveries.sink(0))
        try broker.submit(.read(3_000), for: client, at: zero)
        // 1,000 bytes of burst, 1,000 B/s, at most one 512-byte grant of overdraft: by 1.4 s at most
        // 2,912 bytes, so the read is still open.
        try drive(broker, until: ms(1_400))
        var answers = deliveries.take(0)
        let early = answers.reduce(0) { if case .bytes(let n, _) = $1 { $0 + n } else { $0 } }
        #expect(early >= 2_000 && early <= 2_912, "\(early) bytes by 1.4 s")
        try drive(broker, from: ms(1_400), until: ms(3_000))
        answers += deliveries.take(0)
        var total = 0
        for (i, answer) in answers.enumerated() {
            guard case .bytes(let n, let completes) = answer else {
                Issue.record("unexpected \(answer)")
                continue
            }
            #expect(n >= 1 && n <= 256)
            #expect(completes == (i == answers.count - 1))
            total += n
        }
        #expect(total == 3_000)
        #expect(try broker.pendingBytes(of: client) == 0)
    }

    @Test func aRunStopsAfterItsWorkBudgetAndAsksToBeCalledAgain() throws {
        let (broker, _, _) = try makeBroker(
            configuration: BrokerConfiguration(maximumGrant: 512, bytesPerRun: 1_000),
            classes: [.unlimited(id: HTBClassID(1))])
        let client = try broker.connect(to: HTBClassID(1), sink: { _ in })
        try broker.submit(.read(3_000), for: client, at: zero)
        // Decisions of 512 bytes until the budget is spent: the last one may overrun it by one grant.
        var served: [UInt64] = []
        var wakes: [BrokerWake<Instant>] = []
        repeat {
            wakes.append(broker.run(at: zero))
            served.append(try broker.bytesServed(to: client))
        } while wakes.last == .now && wakes.count < 10
        #expect(wakes == [.now, .now, .idle])
        #expect(served == [1_024, 2_048, 3_000])
    }

    @Test func aReadOfZeroBytesIsAnsweredInItsPlace() throws {
        let (broker, _, _) = try slowBroker()
        let deliveries = Deliveries()
        let client = try broker.connect(to: HTBClassID(1), sink: deliveries.sink(0))
        try broker.submit(.read(0), for: client, at: zero)
        #expect(deliveries.take(0) == [.bytes(0, completesRead: true)])
        try broker.submit(.read(100), for: client, at: zero)
        try broker.submit(.read(0), for: client, at: zero)
        try broker.submit(.marker(1), for: client, at: zero)
        #expect(deliveries.take(0).isEmpty)
        #expect(try broker.pendingBytes(of: client) == 100)
        _ = broker.run(at: zero)
        #expect(
            deliveries.take(0) == [.bytes(100, completesRead: true), .bytes(0, completesRead: true), .marker(1)])
        #expect(try broker.statistics(of: HTBClassID(1)).requestsAnswered == 4)
    }

    @Test func aNonBlockingReadGetsWhatTheClassIsGrantedNowPossiblyNothing() throws {
        let (broker, _, _) = try slowBroker()
        let deliveries = Deliveries()
        let client = try broker.connect(to: HTBClassID(1), sink: deliveries.sink(0))
        // 1,000 bytes in the bucket: three grants while it is not negative (the last overdraws by
        // 200), then nothing until 200 ms have earned the debt back.
        for _ in 0..<4 { try broker.submit(.readAvailable(400), for: client, at: zero) }
        #expect(deliveries.take(0) == [.available(400), .available(400), .available(400), .available(0)])
        try broker.submit(.readAvailable(400), for: client, at: ms(199))
        #expect(deliveries.take(0) == [.available(0)])
        try broker.submit(.readAvailable(400), for: client, at: ms(200))
        try broker.submit(.readAvailable(400), for: client, at: ms(200))
        #expect(deliveries.take(0) == [.available(400), .available(0)])
        // One decision grants at most maximumGrant bytes.
        try broker.submit(.readAvailable(5_000), for: client, at: ms(10_000))
        #expect(deliveries.take(0) == [.available(512)])
        try broker.submit(.readAvailable(0), for: client, at: ms(10_000))
        #expect(deliveries.take(0) == [.available(0)])
        #expect(try broker.pendingRequests(of: client) == 0)
        #expect(try broker.bytesServed(to: client) == 400 * 4 + 512)
    }

    @Test func aNonBlockingReadWaitsBehindOtherClientsBlockingReadsOfItsClass() throws {
        let (broker, _, _) = try slowBroker()
        let deliveries = Deliveries()
        let poller = try broker.connect(to: HTBClassID(1), sink: deliveries.sink(0))
        let reader = try broker.connect(to: HTBClassID(1), sink: deliveries.sink(1))
        // The reader waits for more than the bucket holds; the poller's non-blocking reads must not
        // take the class's tokens ahead of it.
        try broker.submit(.read(3_000), for: reader, at: zero)
        try broker.submit(.readAvailable(400), for: poller, at: zero)
        #expect(deliveries.take(0) == [.available(0)])
        _ = broker.run(at: zero)
        try broker.submit(.readAvailable(400), for: poller, at: ms(500))
        #expect(deliveries.take(0) == [.available(0)])
        // Once the reader is served in full, the poller gets what the class is granted.
        var now = zero
        while try broker.pendingBytes(of: reader) > 0 {
            now = now.advanced(by: .milliseconds(100))
            _ = broker.run(at: now)
        }
        try broker.submit(.readAvailable(400), for: poller, at: now.advanced(by: .seconds(10)))
        #expect(deliveries.take(0) == [.available(400)])
        // A client's own later blocking reads do not hold back its non-blocking read.
        try broker.submit(.readAvailable(100), for: poller, at: now.advanced(by: .seconds(20)))
        try broker.submit(.read(100), for: poller, at: now.advanced(by: .seconds(20)))
        #expect(deliveries.take(0).first == .available(100))
    }

    @Test func aNonBlockingReadGetsNothingFromAnEmptyOrFailingSupply() throws {
        let supply = ScriptedSupply(available: 0)
        let (broker, log, _) = try slowBroker(supply: supply)
        let deliveries = Deliveries()
        let client = try broker.connect(to: HTBClassID(1), sink: deliveries.sink(0))
        try broker.submit(.readAvailable(64), for: client, at: zero)
        supply.fail(with: .exhausted(source: "scripted"))
        try broker.submit(.readAvailable(64), for: client, at: zero)
        #expect(deliveries.take(0) == [.available(0), .available(0)])
        #expect(log.events == [.sourceFailed(.exhausted(source: "scripted"))])
        // Nothing was taken from the class: once the supply has bytes, the whole burst is there.
        supply.refill(2_000)
        try broker.submit(.readAvailable(400), for: client, at: zero)
        try broker.submit(.readAvailable(400), for: client, at: zero)
        #expect(deliveries.take(0) == [.available(400), .available(400)])
        #expect(log.events.last == .sourceRecovered)
    }

    /// Random traffic from clients of three classes: reads of every size, non-blocking reads, level
    /// queries, markers, pauses, disconnects and reconnects, a supply that runs dry and short reads.
    /// Every client's answers match its requests in order; every byte delivered is the supply's next
    /// byte (so none is invented, repeated or given to two clients); served bytes are wiped at once.
    @Test(arguments: [1, 2, 3, 4, 5] as [UInt64])
    func randomTrafficIsAnsweredInOrderWithEachSupplyByteDeliveredOnce(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let supply = ScriptedSupply(seed: seed, maximumPerFill: Int.random(in: 1...700, using: &rng))
        let (broker, _, _) = try makeBroker(
            supply: supply,
            configuration: BrokerConfiguration(maximumGrant: Int.random(in: 64...1_024, using: &rng)),
            classes: [
                BrokerClassConfiguration(shaping: shaping(1, rate: 50_000)),
                BrokerClassConfiguration(
                    shaping: shaping(2, parent: 1, rate: 10_000, ceil: 50_000), clientQuantum: 100),
                BrokerClassConfiguration(shaping: shaping(3, parent: 1, rate: 20_000), clientQuantum: 1),
                BrokerClassConfiguration(
                    shaping: shaping(4, rate: 5_000), window: BrokerWindow(maxBytes: 700, periodMilliseconds: 50)),
            ])
        let deliveries = Deliveries()
        let checker = OrderChecker()
        var clients: [(label: Int, client: BrokerClient)] = []
        var nextLabel = 0
        func connect() throws {
            let label = nextLabel
            nextLabel += 1
            let id = HTBClassID([2, 3, 4].randomElement(using: &rng)!)
            let client = try broker.connect(to: id) { delivery in
                deliveries.record(label, delivery)
                checker.received(label, delivery)
            }
            clients.append((label, client))
        }
        for _ in 0..<6 { try connect() }
        var now = zero
        var tag: UInt64 = 0
        for _ in 0..<3_000 {
            let i = Int.random(in: 0..<clients.count, using: &rng)
            let (label, client) = clients[i]
            let request: BrokerRequest?
            switch Int.random(in: 0..<100, using: &rng) {
            case 0..<30: request = .read(Int.random(in: 0...700, using: &rng))
            case 30..<42: request = .readAvailable(Int.random(in: 0...600, using: &rng))
            case 42..<47: request = .entropyLevel
            case 47..<52:
                tag += 1
                request = .marker(tag)
            case 52..<58:
                request = nil
                try broker.setAcceptingBytes(Bool.random(using: &rng), for: client)
            case 58..<61:
                request = nil
                try broker.disconnect(client)
                checker.disconnected(label)
                clients.remove(at: i)
                try connect()
            case 61..<64:
                request = nil
                supply.available = 0
            case 64..<68:
                request = nil
                supply.refill(Int.random(in: 0...5_000, using: &rng))
            default:
                request = nil
                now = now.advanced(by: .microseconds(Int64.random(in: 0...30_000, using: &rng)))
                _ = broker.run(at: now)
            }
            if let request {
                checker.submitted(label, request)
                do {
                    try broker.submit(request, for: client, at: now)
                } catch {
                    // A paused client can pile up more than the broker admits; nothing else may fail.
                    checker.refused(label)
                    switch error {
                    case .tooManyPendingBytes, .tooManyPendingRequests: break
                    default: Issue.record("\(error)")
                    }
                }
            }
            #expect(broker.stageIsWipedOutsideUnservedBytes)
            #expect(deliveries.stream.count + broker.stagedByteCount == supply.produced)
        }
        // Let everything drain: all clients take bytes, the supply has plenty.
        for (_, client) in clients { try broker.setAcceptingBytes(true, for: client) }
        supply.refill(1 << 30)
        try drive(broker, from: now, until: now.advanced(by: .seconds(120)))
        for (label, client) in clients {
            #expect(try broker.pendingRequests(of: client) == 0)
            #expect(checker.outstanding(label) == 0, "client \(label)")
        }
        #expect(checker.violations.isEmpty, "\(checker.violations.prefix(5))")
        #expect(deliveries.stream == supply.expectedBytes(0..<deliveries.stream.count))
        #expect(deliveries.stream.count + broker.stagedByteCount == supply.produced)
        #expect(broker.stageIsWipedOutsideUnservedBytes)
        #expect(broker.bytesServed == UInt64(deliveries.stream.count))
    }
}

/// Checks that each client's answers follow its requests in order: a read is answered by pieces
/// adding up to its count, the last one completing it; a non-blocking read by one answer of at most
/// its count; a level query and a marker by their answer.
final class OrderChecker {
    var expected: [Int: [BrokerRequest]] = [:]
    var bytesOfHead: [Int: Int] = [:]
    var violations: [String] = []

    func submitted(_ label: Int, _ request: BrokerRequest) { expected[label, default: []].append(request) }

    /// The last submitted request was refused and is not expected.
    func refused(_ label: Int) { expected[label]?.removeLast() }

    func disconnected(_ label: Int) { expected[label] = nil }

    func outstanding(_ label: Int) -> Int { expected[label]?.count ?? 0 }

    func received(_ label: Int, _ delivery: BrokerDelivery) {
        guard let head = expected[label]?.first else {
            violations.append("client \(label): an answer with nothing asked")
            return
        }
        switch (head, delivery) {
        case (.read(let n), .bytes(let piece, let completes)):
            let got = bytesOfHead[label, default: 0] + piece.count
            guard got <= n, completes == (got == n) else {
                violations.append("client \(label): read(\(n)) got \(got), completes \(completes)")
                return
            }
            bytesOfHead[label] = completes ? 0 : got
            if completes { expected[label]!.removeFirst() }
        case (.readAvailable(let n), .available(let piece)):
            if piece.count > n { violations.append("client \(label): readAvailable(\(n)) got \(piece.count)") }
            expected[label]!.removeFirst()
        case (.entropyLevel, .entropyLevel(let bits)):
            if bits < 0 { violations.append("client \(label): level \(bits)") }
            expected[label]!.removeFirst()
        case (.marker(let want), .marker(let got)):
            if want != got { violations.append("client \(label): marker \(got), expected \(want)") }
            expected[label]!.removeFirst()
        default:
            violations.append("client \(label): \(delivery) answers \(head)")
            expected[label]!.removeFirst()
        }
    }
}
