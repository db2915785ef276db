import EGDServer
import EntropySources
import EntropySourcesTestSupport
import Logging
import RateLimit
import Testing
import VirtRNGCore

#if canImport(Glibc)
    import Glibc
#endif

/// A running server on unix sockets in a temporary directory.
struct RunningServer {
    let server: EGDServer
    let directory: TemporaryDirectory
    let paths: [String]

    /// Starts a server with one listener per class given (ids 2, 3, …) over `source` (monitored, pooled).
    static func start(
        classes: [BrokerClassConfiguration] = [.unlimited(id: HTBClassID(2))],
        source: sending some EntropySource = GetRandomSource(),
        configure: (inout EGDServerConfiguration) -> Void = { _ in }
    ) async throws -> RunningServer {
        let directory = TemporaryDirectory()
        var listeners: [EGDListener] = []
        var paths: [String] = []
        for (i, c) in classes.enumerated() {
            let path = "\(directory.path)/s\(i)"
            paths.append(path)
            listeners.append(EGDListener(endpoint: .unix(path: path), shaping: c))
        }
        var configuration = EGDServerConfiguration(listeners: listeners)
        configure(&configuration)
        let pool = try PrefetchPool(source: HealthMonitor(source), capacity: 65_536)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let server = try await EGDServer.start(configuration: configuration, supply: pool, logger: logger)
        return RunningServer(server: server, directory: directory, paths: paths)
    }

    func stop() async -> EGDServerReport {
        let report = await server.shutdown()
        directory.remove()
        return report
    }
}

func classOf(id: UInt32, rate: Int, ceil: Int? = nil, burst: Int? = nil) -> BrokerClassConfiguration {
    BrokerClassConfiguration(shaping: HTBClassConfiguration(id: HTBClassID(id), rate: rate, ceil: ceil, burst: burst))
}

func repeated(_ command: [UInt8], _ times: Int) -> [UInt8] { (0..<times).flatMap { _ in command } }

@Suite("EGD server over unix sockets", .serialized, .timeLimit(.minutes(1)))
struct EGDServerTests {
    @Test("QEMU's pipelined 02 40 requests are answered in order, exactly, on an open connection")
    func pipelinedBlockingReads() async throws {
        let running = try await RunningServer.start()
        let client = try TestSocket(unix: running.paths[0])
        try client.send(repeated([0x02, 0x40], 64))
        let bytes = try client.receiveExactly(4_096)
        #expect(Set(bytes).count > 200, "4 KiB of random bytes use most byte values")
        // Nothing beyond what was asked.
        #expect(client.receive(milliseconds: 200) == .timedOut)
        // Still open and serving.
        try client.send([0x00])
        #expect(try client.receiveExactly(4).count == 4)
        let report = await running.stop()
        #expect(report.classes[0].bytesServed == 4_096)
        #expect(report.classes[0].requestsAnswered == 65)
    }

    @Test("Every command, interleaved, gets its answer in order")
    func everyCommandInOrder() async throws {
        let running = try await RunningServer.start()
        let client = try TestSocket(unix: running.paths[0])
        // 02 10 | 00 | 01 05 | 04 | 03 write (ignored, no answer) | 02 08
        try client.send([0x02, 0x10, 0x00, 0x01, 0x05, 0x04, 0x03, 0x00, 0x10, 0x02, 0xAA, 0xBB, 0x02, 0x08])
        _ = try client.receiveExactly(16)
        let level = try client.receiveExactly(4)
        let bits = level.reduce(0) { $0 << 8 | Int($1) }
        #expect(bits > 0 && bits % 8 == 0)
        let count = try client.receiveExactly(1)[0]
        #expect(count == 5, "the pool holds plenty: a non-blocking read of 5 gets 5")
        _ = try client.receiveExactly(Int(count))
        let pidLength = try client.receiveExactly(1)[0]
        let pid = String(decoding: try client.receiveExactly(Int(pidLength)), as: UTF8.self)
        #expect(pid == String(getpid()))
        _ = try client.receiveExactly(8)
        #expect(client.receive(milliseconds: 200) == .timedOut)
        _ = await running.stop()
    }

    @Test("Commands split across writes decode as whole ones")
    func fragmentedCommands() async throws {
        let running = try await RunningServer.start()
        let client = try TestSocket(unix: running.paths[0])
        for byte: UInt8 in [0x02, 0xFF, 0x02] {
            try client.send([byte])
            usleep(20_000)
        }
        try client.send([0x01])
        #expect(try client.receiveExactly(256).count == 256)
        #expect(client.receive(milliseconds: 200) == .timedOut)
        _ = await running.stop()
    }

    @Test("A stream that is not EGD closes that client only")
    func unknownCommandClosesOnlyThatClient() async throws {
        let running = try await RunningServer.start()
        let good = try TestSocket(unix: running.paths[0])
        let bad = try TestSocket(unix: running.paths[0])
        try good.send([0x02, 0x20])
        _ = try good.receiveExactly(32)
        try bad.send([0x93, 0x12])
        #expect(bad.waitForClose(milliseconds: 2_000))
        try good.send([0x02, 0x20])
        _ = try good.receiveExactly(32)
        // Garbage after valid requests: the valid ones are answered, then the client is closed.
        let garbage = try TestSocket(unix: running.paths[0])
        try garbage.send([0x02, 0x04, 0x07, 0x01, 0x02])
        #expect(try garbage.receiveExactly(4).count == 4)
        #expect(garbage.waitForClose(milliseconds: 2_000))
        _ = await running.stop()
    }

    @Test("A half-closed client gets every answer, then the server closes")
    func halfClose() async throws {
        let running = try await RunningServer.start()
        let client = try TestSocket(unix: running.paths[0])
        try client.send(repeated([0x02, 0xFF], 4))
        client.shutdownWrite()
        #expect(try client.receiveExactly(1_020).count == 1_020)
        #expect(client.waitForClose(milliseconds: 2_000))
        _ = await running.stop()
    }

    @Test("A class's rate holds, and two classes share in proportion to their rates")
    func classesShareByRate() async throws {
        let running = try await RunningServer.start(classes: [
            classOf(id: 2, rate: 20_000, burst: 2_000), classOf(id: 3, rate: 60_000, burst: 2_000),
        ])
        let slow = try TestSocket(unix: running.paths[0])
        let fast = try TestSocket(unix: running.paths[1])
        // Ask for more than either can get in the window.
        try slow.send(repeated([0x02, 0xFF], 200))
        try fast.send(repeated([0x02, 0xFF], 600))
        let start = monotonicMilliseconds()
        var slowBytes = 0
        var fastBytes = 0
        while monotonicMilliseconds() - start < 1_500 {
            if case .bytes(let b) = slow.receive(milliseconds: 5) { slowBytes += b.count }
            if case .bytes(let b) = fast.receive(milliseconds: 5) { fastBytes += b.count }
        }
        let seconds = Double(monotonicMilliseconds() - start) / 1_000
        // Rate × time plus the burst, give or take scheduling.
        #expect(Double(slowBytes) <= 20_000 * seconds + 2_000 + 4_096)
        #expect(Double(fastBytes) <= 60_000 * seconds + 2_000 + 4_096)
        let ratio = Double(fastBytes) / Double(max(slowBytes, 1))
        #expect(ratio > 2.4 && ratio < 3.6, "fast/slow = \(ratio) (\(fastBytes) / \(slowBytes) B)")
        _ = await running.stop()
    }

    @Test(
        "A client that pipelines past its pending limit in one write is served in full",
        arguments: [1_000, 4_000])
    func pipelinePastThePendingLimit(requests: Int) async throws {
        // The server takes requests up to the limit (64 KiB), holds the rest, and takes more as answers
        // drain it. The client sends nothing more, so only the server's own runs can finish the job.
        let running = try await RunningServer.start()
        let client = try TestSocket(unix: running.paths[0])
        try client.send(repeated([0x02, 0xFF], requests))
        let answers = try client.receiveExactly(requests * 255, milliseconds: 10_000)
        #expect(answers.count == requests * 255)
        #expect(client.receive(milliseconds: 100) == .timedOut)
        let report = await running.stop()
        #expect(report.classes[0].requestsAnswered == UInt64(requests))
    }

    @Test("A client that never reads is back-pressured and closed after the stall timeout; others are served")
    func neverReadingClient() async throws {
        let running = try await RunningServer.start(configure: { $0.stallTimeout = .milliseconds(500) })
        let hostile = try TestSocket(unix: running.paths[0])
        hostile.setReceiveBuffer(4_096)
        // Ask for answers and never read them, until the server stops reading our requests: that
        // happens once its answers are stuck behind the full socket and it has paused us. Offering a
        // fixed amount instead would make the test depend on the kernel's socket buffer sizes and on
        // how fast a loaded machine runs the server.
        let chunk = repeated([0x02, 0xFF], 2_048)
        var offered = 0
        var refusedSince: Int?
        let start = monotonicMilliseconds()
        while monotonicMilliseconds() - start < 8_000 {
            let n = hostile.sendNonBlocking(Array(chunk[(offered % chunk.count)...]))
            offered += n
            if n > 0 {
                refusedSince = nil
                continue
            }
            let now = monotonicMilliseconds()
            if let since = refusedSince, now - since >= 300 { break }
            if refusedSince == nil { refusedSince = now }
            usleep(10_000)
        }
        #expect(refusedSince != nil, "the server kept reading \(offered) B of requests it could not answer")
        // A well-behaved client on the same class is still served at once.
        let good = try TestSocket(unix: running.paths[0])
        let t0 = monotonicMilliseconds()
        try good.send(repeated([0x02, 0xFF], 4))
        _ = try good.receiveExactly(1_020)
        #expect(monotonicMilliseconds() - t0 < 500)
        // The hostile client's pending bytes stay bounded by the per-client limit.
        let report = await running.server.report()
        #expect(report.classes[0].pendingBytes <= 65_536)
        // Once the socket's buffers are full, the stall timeout (0.5 s) runs and the server gives up on it.
        let deadline = monotonicMilliseconds() + 10_000
        var connections = 2
        while connections > 1 && monotonicMilliseconds() < deadline {
            usleep(50_000)
            connections = await running.server.report().connections
        }
        #expect(connections == 1, "only the good client is left")
        _ = await running.stop()
    }

    @Test("Connections beyond the limit are closed at once; those within are served")
    func connectionLimit() async throws {
        let running = try await RunningServer.start(configure: { $0.maximumConnections = 8 })
        var clients: [TestSocket] = []
        for _ in 0..<20 { clients.append(try TestSocket(unix: running.paths[0])) }
        var served = 0
        var closed = 0
        for c in clients {
            try? c.send([0x02, 0x08])
            switch c.receive(milliseconds: 1_000) {
            case .bytes: served += 1
            case .closed: closed += 1
            case .timedOut: break
            }
        }
        #expect(served == 8)
        #expect(closed == 12)
        _ = await running.stop()
    }

    @Test("A class admits its maximum of clients")
    func classClientLimit() async throws {
        var limited = BrokerClassConfiguration.unlimited(id: HTBClassID(2))
        limited.maximumClients = 2
        let running = try await RunningServer.start(classes: [limited])
        let clients = try (0..<3).map { _ in try TestSocket(unix: running.paths[0]) }
        var served = 0
        for c in clients {
            try? c.send([0x02, 0x08])
            if case .bytes = c.receive(milliseconds: 1_000) { served += 1 }
        }
        #expect(served == 2)
        _ = await running.stop()
    }

    @Test("The idle timeout closes idle connections, not ones waiting for their class's tokens")
    func idleTimeout() async throws {
        let running = try await RunningServer.start(
            classes: [classOf(id: 2, rate: 100, burst: 1)], configure: { $0.idleTimeout = .milliseconds(300) })
        let idle = try TestSocket(unix: running.paths[0])
        let waiting = try TestSocket(unix: running.paths[0])
        // More than the class's ceil burst (1,600 B): most of it waits for tokens.
        try waiting.send(repeated([0x02, 0xFF], 10))
        #expect(idle.waitForClose(milliseconds: 2_000))
        // The waiting client is trickled bytes at 100 B/s and stays open.
        #expect(!waiting.waitForClose(milliseconds: 600))
        _ = await running.stop()
    }

    @Test("A source failing its health tests serves nothing; requests wait (policy wait)")
    func failingSourceWaits() async throws {
        let running = try await RunningServer.start(source: FaultySource.stuck(0x55))
        let client = try TestSocket(unix: running.paths[0])
        try client.send([0x02, 0x40, 0x01, 0x10])
        #expect(client.receive(milliseconds: 500) == .timedOut, "no byte of a failed block is served")
        let report = await running.server.report()
        if case .unhealthy? = report.sourceError {
        } else {
            Issue.record("expected an unhealthy source, got \(String(describing: report.sourceError))")
        }
        #expect(report.bytesServed == 0)
        _ = await running.stop()
    }

    @Test("A failing source fails pending requests and closes their clients (policy failRequests)")
    func failingSourceFailsRequests() async throws {
        let running = try await RunningServer.start(
            source: FaultySource.stuck(0x55), configure: { $0.broker.failurePolicy = .failRequests })
        let client = try TestSocket(unix: running.paths[0])
        try client.send([0x02, 0x40])
        #expect(client.waitForClose(milliseconds: 2_000))
        #expect(await running.server.report().bytesServed == 0)
        _ = await running.stop()
    }

    @Test("Shutdown finishes pending requests within the grace period and removes the socket file")
    func shutdownDrains() async throws {
        let running = try await RunningServer.start(
            classes: [classOf(id: 2, rate: 2_000, burst: 1)], configure: { $0.shutdownGracePeriod = .milliseconds(500) }
        )
        let quick = try TestSocket(unix: running.paths[0])
        try quick.send([0x02, 0x10])
        _ = try quick.receiveExactly(16)
        let slow = try TestSocket(unix: running.paths[0])
        // 10 KB at 2 kB/s cannot finish in the grace period: the server closes it at the end.
        try slow.send(repeated([0x02, 0xFF], 40))
        // Wait until the server holds the slow client's requests.
        let deadline = monotonicMilliseconds() + 2_000
        while await running.server.report().classes[0].pendingBytes == 0 && monotonicMilliseconds() < deadline {
            usleep(10_000)
        }
        let t0 = monotonicMilliseconds()
        let report = await running.server.shutdown()
        let elapsed = monotonicMilliseconds() - t0
        #expect(elapsed >= 400 && elapsed < 3_000, "shutdown took \(elapsed) ms")
        #expect(slow.waitForClose(milliseconds: 1_000))
        #expect(access(running.paths[0], F_OK) != 0, "socket file removed")
        #expect(report.classes[0].bytesServed >= 16)
        running.directory.remove()
    }

    @Test("A stale socket file is replaced; a live one, or a file that is not a socket, is refused")
    func socketFiles() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.path + "/egd"
        // Stale: a socket bound by a process that is gone (bound, never listened, closed).
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        #expect(withUnixAddress(path, { bind(fd, $0, $1) }) == 0)
        close(fd)
        let listener = EGDListener(endpoint: .unix(path: path), shaping: .unlimited(id: HTBClassID(2)))
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let first = try await EGDServer.start(
            configuration: EGDServerConfiguration(listeners: [listener]),
            supply: try PrefetchPool(source: GetRandomSource()), logger: logger)
        // Live: a second server on the same path is refused, and does not remove the first's socket.
        await #expect(throws: EGDServerError.socketInUse(path: path)) {
            _ = try await EGDServer.start(
                configuration: EGDServerConfiguration(listeners: [listener]),
                supply: try PrefetchPool(source: GetRandomSource()), logger: logger)
        }
        let client = try TestSocket(unix: path)
        try client.send([0x02, 0x08])
        _ = try client.receiveExactly(8)
        await first.shutdown()
        // Not a socket: refused, left alone.
        let file = open(path, O_CREAT | O_WRONLY, 0o600)
        close(file)
        await #expect(throws: EGDServerError.pathNotASocket(path: path)) {
            _ = try await EGDServer.start(
                configuration: EGDServerConfiguration(listeners: [listener]),
                supply: try PrefetchPool(source: GetRandomSource()), logger: logger)
        }
        #expect(access(path, F_OK) == 0)
        unlink(path)
    }

    @Test("Impossible classes are refused with one clear error")
    func impossibleClasses() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let listener = EGDListener(
            endpoint: .unix(path: directory.path + "/x"), shaping: classOf(id: 2, rate: 1_000, ceil: 10))
        do {
            _ = try await EGDServer.start(
                configuration: EGDServerConfiguration(listeners: [listener]),
                supply: try PrefetchPool(source: GetRandomSource()), logger: logger)
            Issue.record("ceil below rate was accepted")
        } catch {
            #expect("\(error)".contains("ceil"), "\(error)")
            #expect(!"\(error)".contains("\n"))
        }
        #expect(access(directory.path + "/x", F_OK) != 0, "nothing left behind")
    }
}
