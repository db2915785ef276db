import EGDCodec
import EntropySourcesTestSupport
import Synchronization
import Testing

@testable import EntropySources

#if canImport(Glibc)
    import Glibc
#endif

/// Records every backoff delay instead of sleeping, and runs an action on chosen calls (restart
/// the server on the 3rd sleep, …), so no test waits for backoff.
final class RecordingSleeper: Sendable {
    private let delays = Mutex<[Duration]>([])
    private let action: @Sendable (_ call: Int) -> Void

    init(_ action: @escaping @Sendable (_ call: Int) -> Void = { _ in }) { self.action = action }

    var recorded: [Duration] { delays.withLock { $0 } }

    func sleep(_ delay: Duration) {
        let call = delays.withLock {
            $0.append(delay)
            return $0.count
        }
        action(call)
    }
}

/// A generator that always returns 0, so `u = 0` and every delay is its base exactly.
struct ZeroGenerator: RandomNumberGenerator {
    mutating func next() -> UInt64 { 0 }
}

@Suite(.serialized) struct RemoteEGDSourceTests {
    static let fastBackoff = RemoteEGDConfiguration.Backoff(
        initial: .milliseconds(10), maximum: .milliseconds(80), multiplier: 2, jitter: 0)

    static func configuration(
        depth: Int = 16, attempts: Int = 8, readTimeout: Duration = .seconds(5), jitter: Double = 0,
        totalBackoff: Duration = .seconds(60)
    ) -> RemoteEGDConfiguration {
        var backoff = fastBackoff
        backoff.jitter = jitter
        return RemoteEGDConfiguration(
            connectTimeout: .seconds(2), readTimeout: readTimeout, pipelineDepth: depth, backoff: backoff,
            maximumAttempts: attempts, maximumTotalBackoff: totalBackoff)
    }

    /// The server's stream `from..<to`.
    static func stream(_ range: Range<Int>) -> [UInt8] { range.map(EGDTestServer.byte(at:)) }

    /// The exact request bytes for a read of `count` bytes: `02 FF … 02 NN`.
    static func commands(_ count: Int) -> [UInt8] {
        var plan = try! EGDReadPlan(totalCount: count)
        var bytes: [UInt8] = []
        while let request = plan.nextRequest(blocking: true) { request.append(to: &bytes) }
        return bytes
    }

    static func fill(_ source: RemoteEGDSource, _ count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let n = try bytes.withUnsafeMutableBytes { try source.fill($0) }
        #expect(n == count)
        return bytes
    }

    @Test(arguments: [64, 10_000])
    func fillsTheBufferWithPipelinedCommands(count: Int) throws {
        let server = EGDTestServer()
        #expect(server.start())
        defer { server.stop() }
        let source = try RemoteEGDSource(endpoint: server.endpoint, configuration: Self.configuration())
        #expect(source.mayBlock)
        #expect(try Self.fill(source, count) == Self.stream(0..<count))
        #expect(server.record.requestBytes == [Self.commands(count)])
        #expect(source.connectionCount == 1)
        // The connection stays open for the next fill, with nothing outstanding.
        #expect(try Self.fill(source, 64) == Self.stream(count..<(count + 64)))
        #expect(server.record.requestBytes == [Self.commands(count) + [0x02, 0x40]])
    }

    @Test(arguments: [1, 100, 254, 255, 256, 700, 999])
    func reconnectsAfterACrashMidResponseAndResubmitsOnlyTheOwedBytes(keptBytes: Int) throws {
        let server = EGDTestServer(plans: [.crashAfter(bytes: keptBytes)])
        #expect(server.start())
        defer { server.stop() }
        // The server is down after the crash; it comes back (same path) during the first backoff.
        let sleeper = RecordingSleeper { _ in server.start() }
        let source = try RemoteEGDSource(
            endpoint: server.endpoint, configuration: Self.configuration(depth: 4), random: ZeroGenerator(),
            sleep: sleeper.sleep)
        let bytes = try Self.fill(source, 1000)
        // No gap, no duplicate: exactly the first 1000 bytes the server ever sent, in order.
        #expect(bytes == Self.stream(0..<1000))
        #expect(server.record.sent == 1000)
        let record = server.record.requestBytes
        #expect(record.count == 2)
        #expect(record.first == Self.commands(1000))
        #expect(record.last == Self.commands(1000 - keptBytes))
        #expect(sleeper.recorded == [.milliseconds(10)])
        #expect(source.connectionCount == 2)
    }

    @Test func dropWhileTheServerKeepsListeningReconnectsAtOnceAfterOneBackoff() throws {
        let server = EGDTestServer(plans: [.dropAfter(bytes: 300), .dropAfter(bytes: 1)])
        #expect(server.start())
        defer { server.stop() }
        let sleeper = RecordingSleeper()
        let source = try RemoteEGDSource(
            endpoint: server.endpoint, configuration: Self.configuration(depth: 16), random: ZeroGenerator(),
            sleep: sleeper.sleep)
        #expect(try Self.fill(source, 2000) == Self.stream(0..<2000))
        #expect(
            server.record.requestBytes.suffix(2) == [Self.commands(2000 - 300), Self.commands(2000 - 301)])
        // Each drop delivered bytes first, so each restarts the failure count: two initial delays.
        #expect(sleeper.recorded == [.milliseconds(10), .milliseconds(10)])
    }

    @Test func backoffWhileTheServerIsDownIsExponentialAndCapped() throws {
        let server = EGDTestServer()
        defer { server.stop() }
        // Down at first; comes back during the 6th backoff.
        let sleeper = RecordingSleeper { call in if call == 6 { server.start() } }
        let source = try RemoteEGDSource(
            endpoint: server.endpoint, configuration: Self.configuration(attempts: 10), random: ZeroGenerator(),
            sleep: sleeper.sleep)
        #expect(try Self.fill(source, 64) == Self.stream(0..<64))
        #expect(sleeper.recorded == [10, 20, 40, 80, 80, 80].map { Duration.milliseconds($0) })
        #expect(source.retryCount == 6)
    }

    @Test func jitterStaysWithinItsBoundsAndIsReproducible() throws {
        func delays(seed: UInt64) throws -> [Duration] {
            let server = EGDTestServer()
            defer { server.stop() }
            let sleeper = RecordingSleeper { call in if call == 7 { server.start() } }
            let source = try RemoteEGDSource(
                endpoint: server.endpoint, configuration: Self.configuration(attempts: 10, jitter: 0.5),
                random: SplitMix(seed: seed), sleep: sleeper.sleep)
            _ = try Self.fill(source, 64)
            return sleeper.recorded
        }
        let first = try delays(seed: 42)
        #expect(first.count == 7)
        for (index, delay) in first.enumerated() {
            let base = Self.fastBackoff.baseDelay(afterFailure: index + 1)
            #expect(delay > base / 2 && delay <= base, "delay \(index + 1): \(delay) outside (\(base / 2), \(base)]")
        }
        #expect(Set(first).count > 2, "jitter should vary the delays")
        #expect(try delays(seed: 42) == first)
    }

    @Test func serverThatNeverComesBackFailsAfterTheAttemptBudget() throws {
        let server = EGDTestServer()
        let sleeper = RecordingSleeper()
        let source = try RemoteEGDSource(
            endpoint: server.endpoint, configuration: Self.configuration(attempts: 4), random: ZeroGenerator(),
            sleep: sleeper.sleep)
        #expect(
            throws: EntropySourceError.remoteUnavailable(
                source: "unix:\(server.path)", attempts: 4, lastError: .connectFailed(server.endpoint, errno: ENOENT))
        ) {
            try Self.fill(source, 64)
        }
        #expect(sleeper.recorded == [10, 20, 40].map { Duration.milliseconds($0) })
        #expect(
            !EntropySourceError.remoteUnavailable(
                source: "", attempts: 1, lastError: .timedOut(.receive, milliseconds: 1)
            ).isPermanent)
    }

    @Test func serverThatNeverComesBackFailsAfterTheTotalBackoffBudget() throws {
        let server = EGDTestServer()
        let sleeper = RecordingSleeper()
        let source = try RemoteEGDSource(
            endpoint: server.endpoint,
            configuration: Self.configuration(attempts: 100, totalBackoff: .milliseconds(75)),
            random: ZeroGenerator(), sleep: sleeper.sleep)
        // 10 + 20 + 40 = 70 ms fit the budget; the next 80 ms would not.
        #expect(
            throws: EntropySourceError.remoteUnavailable(
                source: "unix:\(server.path)", attempts: 4, lastError: .connectFailed(server.endpoint, errno: ENOENT))
        ) {
            try Self.fill(source, 64)
        }
        #expect(sleeper.recorded == [10, 20, 40].map { Duration.milliseconds($0) })
    }

    @Test func serverThatStopsSendingTimesOutAndTheSourceReconnects() throws {
        let server = EGDTestServer(plans: [.stallAfter(bytes: 100)])
        #expect(server.start())
        defer { server.stop() }
        let sleeper = RecordingSleeper()
        let source = try RemoteEGDSource(
            endpoint: server.endpoint, configuration: Self.configuration(readTimeout: .milliseconds(50)),
            random: ZeroGenerator(), sleep: sleeper.sleep)
        #expect(try Self.fill(source, 300) == Self.stream(0..<300))
        #expect(server.record.requestBytes.last == Self.commands(200))
        #expect(sleeper.recorded.count == 1)
        #expect(source.connectionCount == 2)
    }

    @Test func serverThatClosesEveryConnectionAtOnceGivesATypedError() throws {
        let server = EGDTestServer(plans: Array(repeating: .closeOnAccept, count: 10))
        #expect(server.start())
        defer { server.stop() }
        let sleeper = RecordingSleeper()
        let source = try RemoteEGDSource(
            endpoint: server.endpoint, configuration: Self.configuration(attempts: 3), random: ZeroGenerator(),
            sleep: sleeper.sleep)
        do {
            _ = try Self.fill(source, 64)
            Issue.record("fill succeeded against a server that closes every connection")
        } catch let error as EntropySourceError {
            guard case .remoteUnavailable(let name, let attempts, let last) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(name == "unix:\(server.path)")
            #expect(attempts == 3)
            // Closed before a byte: EOF, or a reset/broken pipe if our requests were unread.
            let dropped: Set<EGDConnectionError> = [
                .closedMidResponse(command: .readBlocking, offset: 0), .system(.receive, errno: ECONNRESET),
                .system(.send, errno: EPIPE), .system(.send, errno: ECONNRESET),
            ]
            #expect(dropped.contains(last), "\(last)")
            #expect(error.description.contains("unavailable after 3 attempts"))
        }
        #expect(sleeper.recorded.count == 2)
        #expect(source.connectionCount == 3)
    }

    @Test func unusableEndpointFailsWithoutRetrying() throws {
        let sleeper = RecordingSleeper()
        let path = "/tmp/" + String(repeating: "x", count: 200)
        let source = try RemoteEGDSource(endpoint: .unix(path: path), sleep: sleeper.sleep)
        #expect(
            throws: EntropySourceError.remoteFailed(
                source: "unix:\(path)", error: .socketPathTooLong(path: path, limit: 107))
        ) {
            try Self.fill(source, 64)
        }
        #expect(sleeper.recorded.isEmpty)
    }

    @Test func rejectsInvalidParameters() {
        #expect(throws: EntropySourceError.invalidParameter(name: "pipelineDepth", value: 0)) {
            try RemoteEGDSource(endpoint: .unix(path: "/x"), configuration: .init(pipelineDepth: 0))
        }
        #expect(throws: EntropySourceError.invalidParameter(name: "pipelineDepth", value: 257)) {
            try RemoteEGDSource(endpoint: .unix(path: "/x"), configuration: .init(pipelineDepth: 257))
        }
        #expect(throws: EntropySourceError.invalidParameter(name: "maximumAttempts", value: 0)) {
            try RemoteEGDSource(endpoint: .unix(path: "/x"), configuration: .init(maximumAttempts: 0))
        }
        #expect(throws: EntropySourceError.invalidParameter(name: "backoff.jitter×1000", value: 1500)) {
            try RemoteEGDSource(endpoint: .unix(path: "/x"), configuration: .init(backoff: .init(jitter: 1.5)))
        }
    }

    @Test func baseDelayGrowsByTheMultiplierUpToTheCap() {
        let backoff = RemoteEGDConfiguration.Backoff(initial: .milliseconds(100), maximum: .seconds(1), multiplier: 3)
        #expect(
            (1...5).map { backoff.baseDelay(afterFailure: $0) }
                == [100, 300, 900, 1000, 1000].map { Duration.milliseconds($0) })
        #expect(backoff.baseDelay(afterFailure: 10_000) == .seconds(1))
        #expect(backoff.delay(afterFailure: 1, unit: 0.5) == .milliseconds(75))
    }

    @Test func poolServesAConsumerAcrossAServerRestart() throws {
        let server = EGDTestServer(plans: [.crashAfter(bytes: 5000)])
        #expect(server.start())
        defer { server.stop() }
        let sleeper = RecordingSleeper { _ in server.start() }
        let source = try RemoteEGDSource(
            endpoint: server.endpoint, configuration: Self.configuration(), random: ZeroGenerator(),
            sleep: sleeper.sleep)
        let pool = try PrefetchPool(source: source, capacity: 4096)
        defer { pool.close() }
        var bytes = [UInt8](repeating: 0, count: 20_000)
        try bytes.withUnsafeMutableBytes { try pool.fillAll($0) }
        #expect(bytes == Self.stream(0..<20_000))
        #expect(server.record.requestBytes.count == 2)
        #expect(sleeper.recorded == [.milliseconds(10)])
    }
}
