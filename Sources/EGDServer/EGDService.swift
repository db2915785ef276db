import CoreMetrics
import EGDCodec
import EntropySources
import Logging
import NIOCore
import RateLimit
import VirtRNGCore

#if canImport(Glibc)
    import Glibc
#endif

typealias Broker = EntropyBroker<PrefetchPool, ContinuousClock.Instant>

/// The server's state on its event loop: the broker, the connections, and when to run the broker next.
///
/// Everything here runs on one event loop thread (`eventLoop`), which also runs every connection, so
/// the broker needs no lock. The supply's filler thread reaches this only through `eventLoop.execute`.
final class EGDService {
    let eventLoop: any EventLoop
    let configuration: EGDServerConfiguration
    let broker: Broker
    var logger: Logger
    let pid: Int

    /// Open connections, by identity.
    var connections: [ObjectIdentifier: EGDConnectionHandler] = [:]
    /// Channels admitted and not yet closed (including those not active yet): the connection limit.
    var admitted = 0
    /// Connections with answers to write after the current broker call.
    var dirty: [EGDConnectionHandler] = []
    /// Connections that stopped reading for back-pressure, to resume when their pending bytes drain.
    var held: [ObjectIdentifier: EGDConnectionHandler] = [:]
    var runQueued = false
    var scheduledRun: Scheduled<Void>?
    var scheduledRunAt: ContinuousClock.Instant?
    var shuttingDown = false
    var classNames: [HTBClassID: String] = [:]
    var classCounters: [HTBClassID: Counter] = [:]

    let connectionsAccepted = Counter(label: "virtrngd_connections_accepted_total")
    let connectionsRefused = Counter(label: "virtrngd_connections_refused_total")
    let protocolErrors = Counter(label: "virtrngd_protocol_errors_total")
    let writesDiscarded = Counter(label: "virtrngd_write_entropy_discarded_bytes_total")
    let sourceFailures = Counter(label: "virtrngd_source_failures_total")
    let connectionsOpen = Gauge(label: "virtrngd_connections_open")

    init(
        eventLoop: any EventLoop, configuration: EGDServerConfiguration, supply: PrefetchPool, logger: Logger,
        sourceReady: @escaping @Sendable () -> Void, onEvent: @escaping (BrokerEvent) -> Void
    ) throws(BrokerError) {
        self.eventLoop = eventLoop
        self.configuration = configuration
        self.logger = logger
        self.pid = Int(getpid())
        self.broker = try Broker(
            supply: supply, configuration: configuration.broker, start: .now, sourceReady: sourceReady,
            onEvent: onEvent)
        try broker.addClass(BrokerClassConfiguration(shaping: configuration.root), at: .now)
        for listener in configuration.listeners {
            var shaping = listener.shaping
            shaping.shaping.parent = configuration.root.id
            try broker.addClass(shaping, at: .now)
            let id = shaping.shaping.id
            classNames[id] = listener.endpoint.description
            classCounters[id] = Counter(
                label: "virtrngd_bytes_served_total", dimensions: [("listener", listener.endpoint.description)])
        }
    }

    // MARK: Running the broker

    /// Runs the broker once after the current event-loop tick (coalesces many connections' reads).
    func requestRun() {
        guard !runQueued else { return }
        runQueued = true
        eventLoop.assumeIsolated().execute { [self] in
            runQueued = false
            runNow()
        }
    }

    func runNow() {
        let wake = broker.run(at: .now)
        afterBrokerWork()
        switch wake {
        case .idle, .whenSourceReady: break
        case .now: requestRun()
        case .at(let instant): schedule(at: instant)
        }
    }

    /// Schedules a run at `instant` unless one is scheduled no later.
    func schedule(at instant: ContinuousClock.Instant) {
        if let at = scheduledRunAt, at <= instant { return }
        scheduledRun?.cancel()
        let nanoseconds = max(0, ContinuousClock.now.duration(to: instant).wholeNanoseconds)
        scheduledRunAt = instant
        scheduledRun = eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(nanoseconds)) { [self] in
            scheduledRun = nil
            scheduledRunAt = nil
            runNow()
        }
    }

    /// Writes what the broker delivered and resumes connections whose pending bytes drained.
    func afterBrokerWork() {
        while let handler = dirty.popLast() { handler.flush() }
        guard !held.isEmpty else { return }
        // Deliveries drained some held clients: decode what they sent meanwhile (which may answer
        // at once and dirty them again), then write once more.
        let ready = held.filter { $0.value.hasRoom }
        guard !ready.isEmpty else { return }
        for (id, handler) in ready {
            held[id] = nil
            handler.resumeInput()
        }
        while let handler = dirty.popLast() { handler.flush() }
        // The blocking reads just submitted wait for a run: the one that returned may have found
        // nothing to do, and a client whose held input holds all it will send gives no read to start
        // one (such a client used to wait forever once its first 64 KiB were served).
        requestRun()
    }

    // MARK: Connections

    func register(_ handler: EGDConnectionHandler) {
        connections[ObjectIdentifier(handler)] = handler
        connectionsAccepted.increment()
        connectionsOpen.record(connections.count)
    }

    func unregister(_ handler: EGDConnectionHandler) {
        let id = ObjectIdentifier(handler)
        connections[id] = nil
        held[id] = nil
        connectionsOpen.record(connections.count)
        if shuttingDown && connections.isEmpty { allConnectionsClosed?() }
    }

    var allConnectionsClosed: (() -> Void)?

    /// A report of every class, for logs and tests.
    func report() -> EGDServerReport {
        var classes: [EGDServerReport.ClassReport] = []
        for listener in configuration.listeners {
            let id = listener.shaping.shaping.id
            guard let s = try? broker.statistics(of: id) else { continue }
            classes.append(
                .init(
                    listener: classNames[id] ?? id.description, classID: id, bytesServed: s.bytesServed,
                    requestsAnswered: s.requestsAnswered, connections: s.clients, pendingBytes: s.pendingBytes))
        }
        return EGDServerReport(
            classes: classes, bytesServed: broker.bytesServed, connections: connections.count,
            sourceError: broker.currentSourceError)
    }
}
