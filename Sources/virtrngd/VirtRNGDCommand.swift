import ArgumentParser
import CoreMetrics
import EGDServer
import EntropySources
import Logging
import RateLimit
import ServiceLifecycle
import UnixSignals
import VirtRNGCore

#if canImport(Glibc)
    import Glibc
#endif

/// `virtrngd`: the host entropy daemon of the libvirt RFC. Flags → configuration → ``EGDServer``.
@main
struct VirtRNGDCommand: AsyncParsableCommand {
    static let defaultSocket = "/run/virtrngd/egd-pool"

    static let configuration = CommandConfiguration(
        commandName: "virtrngd",
        abstract: "Serve host entropy to guests and clients over the EGD protocol, shaped per socket.",
        discussion: """
            Each --socket (and --tcp) is a class of a hierarchical token bucket: its connections share \
            the class's rate and may borrow idle bandwidth up to its ceil. Options per listener follow \
            the address, QEMU style: --socket /run/vm1.sock,rate=20k,ceil=100k or ,max-bytes=1024,period=1000 \
            (QEMU virtio-rng meaning). Rates are bytes/s; k, M, G are powers of 1000. \
            ,prefill=64 on a socket QEMU's rng-egd connects to sends bytes ahead of its requests: the \
            guest never waits for a round trip, and recovers at once after a daemon restart (QEMU \
            only; other clients would misread unsolicited bytes).

            With no --socket and no --tcp, serves getrandom on \(defaultSocket). \
            SIGTERM/SIGINT: stop accepting, finish pending requests (up to --shutdown-grace), remove \
            the socket files, log what each class was served, exit 0. Configuration errors: one line, exit 2.
            """
    )

    @Option(
        name: .customLong("socket"),
        help: ArgumentHelp("Unix socket to listen on, with class options (repeatable).", valueName: "path[,opts]"))
    var sockets: [String] = []

    @Option(
        name: .customLong("tcp"),
        help: ArgumentHelp("TCP address to listen on, with class options (repeatable).", valueName: "host:port[,opts]"))
    var tcpListeners: [String] = []

    @Option(help: "Entropy source: getrandom, urandom, file:PATH, hwrng[:PATH], rdrand, rdseed, egd:ADDR.")
    var source = "getrandom"

    @Option(help: "Source used for any read the --source fails (e.g. --source rdseed --fallback getrandom).")
    var fallback: String?

    @Option(help: ArgumentHelp("Default rate of each class, bytes/s (default: unlimited).", valueName: "bytes/s"))
    var rate: String?

    @Option(help: ArgumentHelp("Default ceil of each class, bytes/s (default: its rate).", valueName: "bytes/s"))
    var ceil: String?

    @Option(name: .customLong("max-bytes"), help: "QEMU max-bytes: bytes per --period for each class.")
    var maxBytes: String?

    @Option(help: ArgumentHelp("QEMU period in ms for --max-bytes (default 1000).", valueName: "ms"))
    var period: UInt32?

    @Option(
        name: .customLong("total-ceil"),
        help: ArgumentHelp("Ceil of the whole daemon over all classes, bytes/s.", valueName: "bytes/s"))
    var totalCeil: String?

    @Option(name: .customLong("pool-size"), help: "Bytes prefetched from the source by its own thread.")
    var poolSize = "256k"

    @Option(name: .customLong("min-entropy"), help: "Claimed min-entropy of the source, bits per byte (0, 8].")
    var minEntropy = 8.0

    @Option(name: .customLong("on-source-failure"), help: "wait (requests wait) or fail (clients are closed).")
    var onSourceFailure = "wait"

    @Option(name: .customLong("max-connections"), help: "Connections open at once over all listeners.")
    var maxConnections = 4_096

    @Option(name: .customLong("max-clients"), help: "Connections per class (per listener).")
    var maxClients = 1_024

    @Option(name: .customLong("max-pending"), help: "Bytes of blocking reads one client may have pending.")
    var maxPending = "64k"

    @Option(name: .customLong("idle-timeout"), help: "Close connections idle this many seconds (0: never).")
    var idleTimeout = 0.0

    @Option(name: .customLong("stall-timeout"), help: "Close clients that stop reading answers for this long, s.")
    var stallTimeout = 30.0

    @Option(name: .customLong("shutdown-grace"), help: "Seconds pending requests may take at shutdown.")
    var shutdownGrace = 2.0

    @Option(name: .customLong("stats-interval"), help: "Log what each class was served every N seconds (0: at exit).")
    var statsInterval = 0.0

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"

    mutating func run() async throws {
        let logger = makeLogger()
        let built: (EGDServerConfiguration, PrefetchPool)
        do {
            built = try buildConfiguration(logger: logger)
        } catch {
            Self.fail(error.message)
        }
        let server: EGDServer
        do {
            server = try await EGDServer.start(configuration: built.0, supply: built.1, logger: logger)
        } catch {
            built.1.close()
            Self.fail(error.description)
        }
        for endpoint in server.endpoints { logger.notice("listening on \(endpoint)") }
        logger.info("source: \(built.1.name)")
        let daemon = DaemonService(server: server, logger: logger, statsInterval: statsInterval)
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [.init(service: daemon, successTerminationBehavior: .gracefullyShutdownGroup)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        try await group.run()
    }

    static func fail(_ message: String) -> Never {
        var line = "virtrngd: error: \(message)\n"
        line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
        Glibc.exit(2)
    }

    func makeLogger() -> Logger {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        return Logger(label: "virtrngd")
    }

    struct ConfigurationError: Error {
        var message: String
    }

    func size(_ text: String?, _ option: String) throws(ConfigurationError) -> Int? {
        guard let text else { return nil }
        guard let value = EGDListener.parseSize(text), value > 0 else {
            throw ConfigurationError(message: "--\(option) \(text) is not a positive number (k, M, G suffixes allowed)")
        }
        return value
    }

    /// Flags → server configuration and the supply (source → health monitor → prefetch pool).
    func buildConfiguration(logger: Logger) throws(ConfigurationError) -> (EGDServerConfiguration, PrefetchPool) {
        let defaults = ListenerDefaults(
            rate: try size(rate, "rate"), ceil: try size(ceil, "ceil"),
            maxBytes: try size(maxBytes, "max-bytes").map(UInt64.init), periodMilliseconds: period,
            maximumClients: maxClients)
        if period != nil && maxBytes == nil { throw ConfigurationError(message: "--period needs --max-bytes") }
        var listeners: [EGDListener] = []
        var nextID: UInt32 = 2
        let socketSpecs = sockets.isEmpty && tcpListeners.isEmpty ? [Self.defaultSocket] : sockets
        for (spec, tcp) in socketSpecs.map({ ($0, false) }) + tcpListeners.map({ ($0, true) }) {
            do {
                listeners.append(try EGDListener(parsing: spec, tcp: tcp, id: HTBClassID(nextID), defaults: defaults))
            } catch {
                throw ConfigurationError(message: error.description)
            }
            nextID += 1
        }
        if sockets.isEmpty && tcpListeners.isEmpty {
            // The default socket's directory is ours to create.
            mkdir("/run/virtrngd", 0o755)
        }
        let rootRate = BrokerClassConfiguration.unlimitedRate
        let rootCeil = try size(totalCeil, "total-ceil")
        let root = HTBClassConfiguration(
            id: EGDServerConfiguration.rootClassID, rate: min(rootRate, rootCeil ?? rootRate),
            ceil: rootCeil ?? rootRate)
        for listener in listeners where listener.shaping.shaping.ceil > root.ceil {
            throw ConfigurationError(
                message: "\(listener.endpoint): ceil \(listener.shaping.shaping.ceil) exceeds --total-ceil \(root.ceil)"
            )
        }
        guard onSourceFailure == "wait" || onSourceFailure == "fail" else {
            throw ConfigurationError(message: "--on-source-failure must be wait or fail, not '\(onSourceFailure)'")
        }
        guard let pending = try size(maxPending, "max-pending"), pending >= 255 else {
            throw ConfigurationError(message: "--max-pending must be at least 255 bytes (one EGD request)")
        }
        for (name, value) in [("idle-timeout", idleTimeout), ("stall-timeout", stallTimeout)]
        where !(value >= 0 && value <= 86_400) {
            throw ConfigurationError(message: "--\(name) must be in [0, 86400] seconds")
        }
        guard maxConnections >= 1, maxClients >= 1 else {
            throw ConfigurationError(message: "--max-connections and --max-clients must be at least 1")
        }
        let broker = BrokerConfiguration(
            maximumPendingBytesPerClient: pending, failurePolicy: onSourceFailure == "wait" ? .wait : .failRequests)
        let configuration = EGDServerConfiguration(
            listeners: listeners, root: root, broker: broker, maximumConnections: maxConnections,
            idleTimeout: idleTimeout > 0 ? .milliseconds(Int64(idleTimeout * 1000)) : nil,
            stallTimeout: .milliseconds(Int64(max(stallTimeout, 0.001) * 1000)),
            shutdownGracePeriod: .milliseconds(Int64(max(shutdownGrace, 0) * 1000)))
        return (configuration, try makeSupply(logger: logger))
    }

    func makeSupply(logger: Logger) throws(ConfigurationError) -> PrefetchPool {
        guard let capacity = try size(poolSize, "pool-size"), capacity >= 4_096 else {
            throw ConfigurationError(message: "--pool-size must be at least 4096 bytes")
        }
        do {
            var base = try SourceSpecification(parsing: source).makeSource()
            if let fallback {
                base = makeFallbackSource(
                    primary: base, fallback: try SourceSpecification(parsing: fallback).makeSource())
            }
            let health = HealthMonitorConfiguration(minEntropyPerByte: minEntropy)
            return try Self.monitoredPool(base, health: health, capacity: capacity, logger: logger)
        } catch let error as SourceSpecificationError {
            throw ConfigurationError(message: error.description)
        } catch let error as EntropySourceError {
            throw ConfigurationError(message: "source \(source): \(error)")
        } catch {
            throw ConfigurationError(message: "\(error)")
        }
    }

    /// Opens the existential once: the monitor and the pool's filler run specialised on the source.
    static func monitoredPool<S: EntropySource>(
        _ source: sending S, health: HealthMonitorConfiguration, capacity: Int, logger: Logger
    ) throws(EntropySourceError) -> PrefetchPool {
        let rejected = Counter(label: "virtrngd_health_blocks_rejected_total")
        let monitor = try HealthMonitor(source, configuration: health) { event in
            switch event {
            case .blockRejected(let failure, let consecutive):
                // About 1 block in 1,000 of a perfect source fails some test (the tests' false-positive
                // rate): counted, logged at debug; only a failure of the source is a warning.
                rejected.increment()
                logger.debug("health test rejected a block (\(consecutive) in a row): \(failure)")
            case .failed(let failure): logger.error("source failed its health tests: \(failure)")
            case .disabled(let failure): logger.critical("source disabled after repeated failures: \(failure)")
            case .recovered(let blocks): logger.notice("source recovered after \(blocks) passing blocks")
            }
        }
        return try PrefetchPool(source: monitor, capacity: capacity)
    }
}

/// The daemon as a service of the lifecycle group: serves until a graceful shutdown, then drains.
struct DaemonService: Service {
    let server: EGDServer
    let logger: Logger
    let statsInterval: Double

    func run() async throws {
        if statsInterval > 0 {
            let interval = Duration.milliseconds(Int64(statsInterval * 1000))
            let stats = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: interval)
                    log(await server.report(), final: false)
                }
            }
            try? await gracefulShutdown()
            stats.cancel()
        } else {
            try? await gracefulShutdown()
        }
        logger.notice("shutting down: finishing pending requests")
        log(await server.shutdown(), final: true)
    }

    func log(_ report: EGDServerReport, final: Bool) {
        for c in report.classes {
            logger.notice(
                "\(final ? "served" : "serving") \(c.listener) class=\(c.classID) bytes=\(c.bytesServed) requests=\(c.requestsAnswered) connections=\(c.connections)"
            )
        }
        logger.notice("\(final ? "served" : "serving") total bytes=\(report.bytesServed)")
    }
}
