import CoreMetrics
public import EntropySources
public import Logging
import NIOCore
import NIOPosix
import RateLimit
public import VirtRNGCore

#if canImport(Glibc)
    import Glibc
#endif

/// An EGD server: SwiftNIO listeners on unix sockets (and TCP addresses) in front of an
/// `EntropyBroker` that shares one supply among all clients.
///
/// It serves what QEMU's `rng-egd`, `ekeyd-egd-linux` and `egc.pl` send: pipelined `02 NN` requests
/// answered in order (never closing on "request while answering"), reads capped at what was asked,
/// `00` level in bits, `01 NN` with a count byte, `04` the PID; `03` writes are read and discarded.
/// A stream that is not EGD closes that client only.
///
/// Each listener is a class of the broker's HTB tree under one root class; its connections share the
/// class by round robin. One event-loop thread runs every connection and the broker (the supply's
/// filler thread does the source's work), so no lock is taken per request.
///
/// Resource bounds: pending bytes and requests per client (input back-pressure: reading stops), one
/// read's worth of undecoded input per client, output paused when the socket does not drain and the
/// client closed after ``EGDServerConfiguration/stallTimeout``, at most
/// ``EGDServerConfiguration/maximumConnections`` connections and each class's
/// `BrokerClassConfiguration.maximumClients`, and an optional idle timeout.
public final class EGDServer: Sendable {
    /// The endpoints listened on, with TCP ports resolved (port 0 binds an ephemeral port).
    public let endpoints: [EGDEndpoint]
    let group: MultiThreadedEventLoopGroup
    let service: NIOLoopBound<EGDService>
    let listeners: [any Channel]
    let createdSockets: [(path: String, inode: UInt64?)]
    let supply: PrefetchPool
    /// The configuration the server runs with.
    public let configuration: EGDServerConfiguration

    private init(
        configuration: EGDServerConfiguration,
        endpoints: [EGDEndpoint], group: MultiThreadedEventLoopGroup, service: NIOLoopBound<EGDService>,
        listeners: [any Channel], createdSockets: [(path: String, inode: UInt64?)], supply: PrefetchPool
    ) {
        self.endpoints = endpoints
        self.group = group
        self.service = service
        self.listeners = listeners
        self.createdSockets = createdSockets
        self.supply = supply
        self.configuration = configuration
    }

    /// Binds every listener and starts serving from `supply`.
    ///
    /// A stale socket file (nobody accepts on it) is removed first; a live one, or a path that is not a
    /// socket, is an error. On any error nothing is left listening and no socket file is left behind.
    ///
    /// - Parameters:
    ///   - configuration: listeners, classes and limits.
    ///   - supply: the pool the broker serves from (its filler thread runs the source).
    ///   - logger: where connections' errors and the broker's events are logged.
    ///   - onEvent: called on the server's thread for each `BrokerEvent` (after it is logged).
    public static func start(
        configuration: EGDServerConfiguration, supply: PrefetchPool, logger: Logger,
        onEvent: @escaping @Sendable (BrokerEvent) -> Void = { _ in }
    ) async throws(EGDServerError) -> EGDServer {
        guard !configuration.listeners.isEmpty else { throw .noListeners }
        guard configuration.maximumConnections >= 1 else {
            throw .invalidLimit(name: "maximumConnections", value: configuration.maximumConnections)
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        do {
            return try await startOnLoop(
                configuration: configuration, supply: supply, logger: logger, onEvent: onEvent, group: group, loop: loop
            )
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    private static func startOnLoop(
        configuration: EGDServerConfiguration, supply: PrefetchPool, logger: Logger,
        onEvent: @escaping @Sendable (BrokerEvent) -> Void, group: MultiThreadedEventLoopGroup, loop: any EventLoop
    ) async throws(EGDServerError) -> EGDServer {
        // The broker and the service are created on the loop that will own them.
        let made: Result<NIOLoopBound<EGDService>, EGDServerError>
        do {
            made = try await loop.submit { () -> Result<NIOLoopBound<EGDService>, EGDServerError> in
                let box = NIOLoopBoundBox<EGDService?>(nil, eventLoop: loop)
                let sourceReady: @Sendable () -> Void = {
                    loop.execute { box.value?.runNow() }
                }
                let onBrokerEvent: (BrokerEvent) -> Void = { event in
                    if let service = box.value {
                        switch event {
                        case .sourceFailed(let error):
                            service.sourceFailures.increment()
                            service.logger.error("source failed: \(error)")
                        case .sourceRecovered: service.logger.notice("source serves again")
                        case .requestsFailed(let clients, let bytes):
                            service.logger.warning("failed \(bytes) pending bytes of \(clients) clients")
                        }
                    }
                    onEvent(event)
                }
                do throws(BrokerError) {
                    let service = try EGDService(
                        eventLoop: loop, configuration: configuration, supply: supply, logger: logger,
                        sourceReady: sourceReady, onEvent: onBrokerEvent)
                    box.value = service
                    return .success(NIOLoopBound(service, eventLoop: loop))
                } catch {
                    let listener = configuration.listeners.first?.endpoint.description ?? "root"
                    return .failure(.classRefused(listener: listener, reason: error.description))
                }
            }.get()
        } catch {
            throw .cannotBind(endpoint: "event loop", reason: "\(error)")
        }
        let service = try made.get()

        var channels: [any Channel] = []
        var created: [(path: String, inode: UInt64?)] = []
        var endpoints: [EGDEndpoint] = []
        func undo() async {
            for channel in channels { try? await channel.close() }
            for socket in created { SocketFile.remove(socket.path, inode: socket.inode) }
        }
        for listener in configuration.listeners {
            let classID = listener.shaping.shaping.id
            let prefill = listener.prefillBytes
            var bootstrap = ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 256)
                .childChannelOption(.allowRemoteHalfClosure, value: true)
                .childChannelOption(.writeBufferWaterMark, value: .init(low: 16 * 1024, high: 64 * 1024))
                .childChannelOption(.maxMessagesPerRead, value: 4)
                .childChannelOption(.autoRead, value: true)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let service = service.value
                        // Counted from acceptance (not activation), so a burst of connects cannot overshoot.
                        guard service.admitted < configuration.maximumConnections, !service.shuttingDown
                        else {
                            service.connectionsRefused.increment()
                            service.logger.warning(
                                "refusing connection: limit reached",
                                metadata: ["limit": "\(configuration.maximumConnections)"])
                            channel.close(promise: nil)
                            return
                        }
                        if let idle = configuration.idleTimeout {
                            try channel.pipeline.syncOperations.addHandler(
                                IdleStateHandler(allTimeout: .nanoseconds(idle.wholeNanoseconds)))
                        }
                        try channel.pipeline.syncOperations.addHandler(
                            EGDConnectionHandler(
                                service: service, classID: classID, prefill: prefill, allocator: channel.allocator))
                        service.admitted += 1
                    }
                }
            let channel: any Channel
            switch listener.endpoint {
            case .unix(let path):
                let removedStale: Bool
                do {
                    removedStale = try SocketFile.prepare(path)
                } catch {
                    await undo()
                    throw error
                }
                if removedStale { logger.notice("removed stale socket \(path)") }
                do {
                    channel = try await bootstrap.bind(unixDomainSocketPath: path).get()
                } catch {
                    await undo()
                    throw .cannotBind(endpoint: listener.endpoint.description, reason: "\(error)")
                }
                created.append((path, SocketFile.inode(of: path)))
                if let mode = listener.socketMode, chmod(path, mode_t(mode)) != 0 {
                    let reason = String(cString: strerror(errno))
                    await undo()
                    throw .cannotBind(endpoint: listener.endpoint.description, reason: "chmod: \(reason)")
                }
                endpoints.append(listener.endpoint)
            case .tcp(let host, let port):
                bootstrap = bootstrap.serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                if configuration.tcpNoDelay {
                    bootstrap = bootstrap.childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                }
                do {
                    channel = try await bootstrap.bind(host: host, port: Int(port)).get()
                } catch {
                    await undo()
                    throw .cannotBind(endpoint: listener.endpoint.description, reason: "\(error)")
                }
                endpoints.append(.tcp(host: host, port: UInt16(channel.localAddress?.port ?? Int(port))))
            }
            channels.append(channel)
        }
        return EGDServer(
            configuration: configuration, endpoints: endpoints, group: group, service: service, listeners: channels,
            createdSockets: created,
            supply: supply)
    }

    /// What has been served so far, per listener.
    public func report() async -> EGDServerReport {
        let service = self.service
        return (try? await service.eventLoop.submit { service.value.report() }.get())
            ?? EGDServerReport(classes: [], bytesServed: 0, connections: 0, sourceError: nil)
    }

    /// Stops accepting, lets connections finish their pending requests for the grace period (reading no
    /// new ones), closes them, removes the socket files this server created, stops the supply and the
    /// event loop. Returns the final report.
    @discardableResult
    public func shutdown() async -> EGDServerReport {
        for channel in listeners { try? await channel.close() }
        for socket in createdSockets { SocketFile.remove(socket.path, inode: socket.inode) }
        let service = self.service
        let loop = service.eventLoop
        let grace = configuration.shutdownGracePeriod
        // Stop reading; connections close themselves as their last pending request is answered.
        let drained = loop.makePromise(of: Void.self)
        loop.execute {
            let s = service.value
            s.shuttingDown = true
            if s.connections.isEmpty {
                drained.succeed()
                return
            }
            s.allConnectionsClosed = { drained.succeed() }
            for handler in s.connections.values { handler.closeIfFinished() }
        }
        let timeout = loop.scheduleTask(in: .nanoseconds(grace.wholeNanoseconds)) {
            let s = service.value
            for handler in s.connections.values { handler.closeNow() }
            drained.succeed()
        }
        try? await drained.futureResult.get()
        timeout.cancel()
        let report = await self.report()
        supply.close()
        try? await group.shutdownGracefully()
        return report
    }
}

extension Duration {
    /// The duration in whole nanoseconds, saturating.
    var wholeNanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (ns, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        return ns.addingReportingOverflow(attoseconds / 1_000_000_000).overflow
            ? .max : ns + attoseconds / 1_000_000_000
    }
}
