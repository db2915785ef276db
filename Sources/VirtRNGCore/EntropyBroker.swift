public import EntropySources
public import RateLimit

/// Shares one entropy supply among many clients, shaped by a hierarchical token bucket.
///
/// The broker is what `virtrngd` serves EGD clients with and what a vhost-user backend fills guest
/// queues with; it knows nothing of sockets. Clients attach to leaf **classes** (one per listening
/// socket, guest or group of guests); the classes form a Linux-style HTB tree (the `RateLimit` library), so each
/// class is guaranteed its rate, may borrow idle bandwidth up to its ceil, and lends what it does not use.
/// Within a class, the clients (connections) take turns by deficit round robin, ``BrokerClassConfiguration/clientQuantum``
/// bytes a turn. A connection is deliberately not an HTB class with a rate of its own: then a client could
/// multiply its share, and its bursts, by opening more connections. Here a client that asks for
/// everything, on as many connections as its class admits, gets exactly what its class is granted.
///
/// ## Requests
///
/// ``submit(_:for:at:)`` queues a ``BrokerRequest``; each client's requests are answered strictly in
/// order through the sink given at ``connect(to:sink:)``. A blocking read is served as its class is
/// granted bytes, possibly in pieces; a non-blocking read gets what its class is granted at once, and
/// nothing while other clients of its class wait for blocking reads (they come first, so polling with
/// non-blocking reads cannot jump the round robin); a level query and a marker are answered as soon
/// as everything before them is.
///
/// ## Driving it
///
/// The broker never reads a clock and never blocks. Its owner calls ``run(at:)`` after submitting
/// requests and whenever the returned ``BrokerWake`` says: at an instant (tokens), when the supply has
/// bytes again (the `sourceReady` callback given at init, called on the supply's thread), or at once
/// (work budget spent). Every call must come from one thread at a time (the owner's event loop); the
/// sink and the event handler run synchronously inside those calls and must not call the broker
/// (it answers such calls with ``BrokerError/reentrantCall``): hop first.
///
/// ## Bytes
///
/// Bytes move from the supply into a staging buffer of ``BrokerConfiguration/maximumGrant`` bytes and
/// from there to exactly one client; each byte is wiped once delivered and the staging buffer is wiped
/// when the broker goes away. The broker asks the HTB for a decision only when it holds enough bytes to
/// serve any decision in full, and keeps them for it while a non-blocking read answered between its
/// pieces takes staged bytes, so tokens are never charged for bytes that were not served (nor a
/// class's window for bytes its HTB refused).
///
/// ## Source failure
///
/// When the supply is empty and reports an error (a failed health test, a vanished device), the broker
/// raises ``BrokerEvent/sourceFailed(_:)`` once and applies its ``SourceFailurePolicy``: requests wait,
/// or are failed with ``BrokerDelivery/failed(_:)``. No byte the supply did not hand out is ever served.
/// While requests wait, the broker is woken when the supply has bytes or news of its failure (see
/// ``EntropySupply/notifyWhenAvailable(_:)``), never in a loop for a failure it already reported.
///
/// ## Specializations
///
/// The calls a transport makes for every request (`submit`, `run`, `pendingBytes`, `pendingRequests`,
/// `setAcceptingBytes`) carry exported specializations for the daemon's types, `PrefetchPool` and
/// `ContinuousClock.Instant`. Called from another module (EGDServer) without them, the generic code runs
/// unspecialized: it looks up generic metadata and copies whole `ClassState` values on each call, which
/// cost virtrngd about a quarter of its CPU per request (`scripts/bench-daemon.py`).
public final class EntropyBroker<Supply: EntropySupply, Instant: InstantProtocol> where Instant.Duration == Duration {
    /// The broker-wide limits in force.
    public let configuration: BrokerConfiguration
    /// The supply bytes come from.
    public let supply: Supply

    var htb: HierarchicalTokenBucket<Instant>
    var classes: ContiguousArray<ClassState<Instant>> = []
    var classIndex: [HTBClassID: Int] = [:]
    /// The classes with a QEMU window, so a run does not scan every class for one.
    var windowedClasses: [Int] = []
    var clients: ContiguousArray<ClientState> = []
    var freeSlots: [Int32] = []
    /// Sum of the classes' registered HTB demand.
    var scheduledDemand = 0

    let stage: UnsafeMutableRawBufferPointer
    var stageStart = 0
    var stageEnd = 0
    /// Staged bytes promised to the decision being distributed: a non-blocking read answered between
    /// two of its pieces may take only the bytes beyond them.
    var reserved = 0

    var sourceError: EntropySourceError?
    var delivering = false
    let sourceReady: @Sendable () -> Void
    let onEvent: (BrokerEvent) -> Void

    /// Bytes served since creation, all classes.
    public private(set) var bytesServed: UInt64 = 0

    /// A broker with no classes yet.
    ///
    /// - Parameters:
    ///   - supply: where bytes come from; never called in a way that blocks.
    ///   - configuration: limits per client and per decision.
    ///   - start: the first instant the owner will pass (its clock's now).
    ///   - sourceReady: called (on any thread) when the supply has bytes again after ``run(at:)``
    ///     returned ``BrokerWake/whenSourceReady``: schedule a ``run(at:)`` on the broker's thread.
    ///   - onEvent: called on the broker's thread for every ``BrokerEvent``.
    public init(
        supply: Supply, configuration: BrokerConfiguration = .init(), start: Instant,
        sourceReady: @escaping @Sendable () -> Void, onEvent: @escaping (BrokerEvent) -> Void = { _ in }
    ) throws(BrokerError) {
        for (name, value) in [
            ("maximumPendingBytesPerClient", configuration.maximumPendingBytesPerClient),
            ("maximumPendingRequestsPerClient", configuration.maximumPendingRequestsPerClient),
            ("maximumGrant", configuration.maximumGrant), ("bytesPerRun", configuration.bytesPerRun),
        ] where value < 1 {
            throw .invalidLimit(name: name, value: value)
        }
        do {
            htb = try HierarchicalTokenBucket(start: start, maximumGrant: configuration.maximumGrant)
        } catch {
            throw .shaping(error)
        }
        self.configuration = configuration
        self.supply = supply
        self.sourceReady = sourceReady
        self.onEvent = onEvent
        stage = .allocate(byteCount: configuration.maximumGrant, alignment: 64)
        stage.initializeMemory(as: UInt8.self, repeating: 0)
    }

    deinit {
        stage.initializeMemory(as: UInt8.self, repeating: 0)
        stage.deallocate()
    }

    // MARK: Classes

    /// Adds a class to the tree. Clients attach to classes without children.
    public func addClass(_ configuration: BrokerClassConfiguration, at now: Instant) throws(BrokerError) {
        guard !delivering else { throw .reentrantCall }
        guard configuration.clientQuantum >= 1 else {
            throw .invalidLimit(name: "clientQuantum", value: configuration.clientQuantum)
        }
        guard configuration.maximumClients >= 1 else {
            throw .invalidLimit(name: "maximumClients", value: configuration.maximumClients)
        }
        if let parent = configuration.shaping.parent, let p = classIndex[parent], classes[p].clientCount > 0 {
            throw .notALeafClass(parent)
        }
        var window: FixedWindowLimiter<Instant>?
        if let w = configuration.window {
            do {
                window = try .qemu(maxBytes: w.maxBytes, periodMilliseconds: w.periodMilliseconds, origin: now)
            } catch {
                throw .window(error)
            }
        }
        let handle: HTBClass
        do {
            handle = try htb.add(configuration.shaping)
        } catch {
            throw .shaping(error)
        }
        if let parent = configuration.shaping.parent, let p = classIndex[parent] { classes[p].childCount += 1 }
        if window != nil { windowedClasses.append(classes.count) }
        classIndex[handle.id] = classes.count
        classes.append(ClassState(configuration: configuration, handle: handle, window: window))
    }

    /// The counters of a class.
    public func statistics(of id: HTBClassID) throws(BrokerError) -> BrokerClassStatistics {
        guard let c = classIndex[id] else { throw .unknownClass(id) }
        return classes[c].statistics
    }

    /// Bits the broker could serve now: the bytes staged and in the supply, times 8 (EGD `00`).
    public var entropyLevelBits: Int { (stageEnd - stageStart + supply.level) &* 8 }

    /// The error the supply last failed with, while it is failing.
    public var currentSourceError: EntropySourceError? { sourceError }

    // MARK: Clients

    /// Attaches a client to a leaf class; `sink` receives its answers, in order, on the broker's thread.
    public func connect(to id: HTBClassID, sink: @escaping (BrokerDelivery) -> Void) throws(BrokerError) -> BrokerClient
    {
        guard !delivering else { throw .reentrantCall }
        guard let c = classIndex[id] else { throw .unknownClass(id) }
        guard classes[c].childCount == 0 else { throw .notALeafClass(id) }
        let limit = classes[c].configuration.maximumClients
        guard classes[c].clientCount < limit else { throw .classFull(id, maximumClients: limit) }
        let state = ClientState(classSlot: c, sink: sink)
        let slot: Int32
        if let free = freeSlots.popLast() {
            slot = free
            let generation = clients[Int(slot)].generation &+ 1
            clients[Int(slot)] = state
            clients[Int(slot)].generation = generation
        } else {
            slot = Int32(clients.count)
            clients.append(state)
        }
        classes[c].clientCount += 1
        classes[c].statistics.clients += 1
        return BrokerClient(slot: slot, generation: clients[Int(slot)].generation)
    }

    /// Detaches a client; its pending requests are dropped (nothing more is delivered to it).
    public func disconnect(_ client: BrokerClient) throws(BrokerError) {
        guard !delivering else { throw .reentrantCall }
        let s = try slot(of: client)
        setScheduled(s, false)
        let c = clients[s].classSlot
        classes[c].statistics.pendingBytes -= clients[s].pendingBytes
        classes[c].clientCount -= 1
        classes[c].statistics.clients -= 1
        clients[s].release()
        freeSlots.append(Int32(s))
    }

    /// Bytes of blocking reads the client has pending: a transport stops reading the client's requests
    /// while this is at ``BrokerConfiguration/maximumPendingBytesPerClient``.
    @_specialize(exported:true,where Supply == PrefetchPool, Instant == ContinuousClock.Instant)
    public func pendingBytes(of client: BrokerClient) throws(BrokerError) -> Int {
        try clients[slot(of: client)].pendingBytes
    }

    /// Requests the client has queued.
    @_specialize(exported:true,where Supply == PrefetchPool, Instant == ContinuousClock.Instant)
    public func pendingRequests(of client: BrokerClient) throws(BrokerError) -> Int {
        try clients[slot(of: client)].queue.count
    }

    /// Bytes served to the client so far.
    public func bytesServed(to client: BrokerClient) throws(BrokerError) -> UInt64 {
        try clients[slot(of: client)].served
    }

    /// Whether the client can take bytes now. A transport whose write buffer is full pauses the client
    /// (its demand leaves the schedule, so its class's bandwidth goes to its other clients and classes)
    /// and resumes it when the buffer drains.
    @_specialize(exported:true,where Supply == PrefetchPool, Instant == ContinuousClock.Instant)
    public func setAcceptingBytes(_ accepting: Bool, for client: BrokerClient) throws(BrokerError) {
        guard !delivering else { throw .reentrantCall }
        let s = try slot(of: client)
        guard clients[s].accepting != accepting else { return }
        clients[s].accepting = accepting
        setScheduled(s, accepting && clients[s].pendingBytes > 0)
    }

    /// Queues a request of `client`; answers at once what can be answered at once (a level query or a
    /// marker at the front of the queue, a non-blocking read with what is granted now).
    ///
    /// Blocking reads are served by ``run(at:)``; call it after submitting.
    /// - Throws: ``BrokerError/tooManyPendingBytes(pending:requested:maximum:)`` or
    ///   ``BrokerError/tooManyPendingRequests(maximum:)`` when the client ignored back-pressure,
    ///   ``BrokerError/invalidCount(_:)`` for a negative count.
    @_specialize(exported:true,where Supply == PrefetchPool, Instant == ContinuousClock.Instant)
    public func submit(_ request: BrokerRequest, for client: BrokerClient, at now: Instant) throws(BrokerError) {
        guard !delivering else { throw .reentrantCall }
        let s = try slot(of: client)
        guard clients[s].queue.count < configuration.maximumPendingRequestsPerClient else {
            throw .tooManyPendingRequests(maximum: configuration.maximumPendingRequestsPerClient)
        }
        switch request {
        case .read(let n), .readAvailable(let n):
            guard n >= 0 else { throw .invalidCount(n) }
            if case .read = request {
                let pending = clients[s].pendingBytes
                guard n <= configuration.maximumPendingBytesPerClient - pending else {
                    throw .tooManyPendingBytes(
                        pending: pending, requested: n, maximum: configuration.maximumPendingBytesPerClient)
                }
                if n == 0 {
                    // Nothing to send; answered in its place in the queue, like any request.
                    clients[s].queue.append(.read(0))
                    break
                }
                clients[s].queue.append(.read(n))
                clients[s].pendingBytes += n
                classes[clients[s].classSlot].statistics.pendingBytes += n
                if clients[s].accepting && !clients[s].scheduled {
                    setScheduled(s, true)
                } else if clients[s].scheduled {
                    addClassDemand(clients[s].classSlot, n)
                }
            } else {
                clients[s].queue.append(request)
            }
        case .entropyLevel, .marker:
            clients[s].queue.append(request)
        }
        answerImmediateRequests(s, generation: client.generation, at: now)
    }

    // MARK: Running

    /// Serves waiting blocking reads as their classes are granted bytes and the supply has them.
    ///
    /// Returns when to call again. Serves at most ``BrokerConfiguration/bytesPerRun`` bytes per call.
    @_specialize(exported:true,where Supply == PrefetchPool, Instant == ContinuousClock.Instant)
    public func run(at now: Instant) -> BrokerWake<Instant> {
        guard !delivering else { return .now }
        var budget = configuration.bytesPerRun
        var windowWake = refreshWindows(at: now)
        while scheduledDemand > 0 {
            if budget <= 0 { return .now }
            // Hold enough bytes to serve any decision in full before asking for one.
            let needed = min(configuration.maximumGrant, scheduledDemand)
            if stageEnd - stageStart < needed && !topUpStage(wanting: needed) {
                if sourceError != nil, configuration.failurePolicy == .failRequests {
                    failAllPending()
                    // Nothing waits any more: the next request looks at the supply again.
                    if scheduledDemand == 0 { return windowWake.map { .at($0) } ?? .idle }
                }
                supply.notifyWhenAvailable(sourceReady)
                return .whenSourceReady
            }
            switch htb.dequeue(at: now) {
            case .serve(let leaf, let bytes):
                guard let c = classIndex[leaf.id] else { break }
                classes[c].scheduledDemand -= bytes
                scheduledDemand -= bytes
                reserved = bytes
                distribute(bytes, toClass: c, at: now)
                // Bytes no client could take (none is left in the class) stay staged for the next decision.
                reserved = 0
                budget -= bytes
                if classes[c].configuration.window != nil, let w = refreshWindow(c, at: now) {
                    windowWake = earliest(windowWake, w)
                }
            case .waitUntil(let instant):
                return .at(earliest(windowWake, instant) ?? instant)
            case .idle:
                return windowWake.map { .at($0) } ?? .idle
            }
        }
        return windowWake.map { .at($0) } ?? .idle
    }

    // MARK: Internals

    func slot(of client: BrokerClient) throws(BrokerError) -> Int {
        let s = Int(client.slot)
        guard s >= 0, s < clients.count, clients[s].live, clients[s].generation == client.generation else {
            throw .unknownClient
        }
        return s
    }

    func earliest(_ a: Instant?, _ b: Instant?) -> Instant? {
        guard let a else { return b }
        guard let b else { return a }
        return min(a, b)
    }

    /// Puts a client's demand into (or takes it out of) its class's round robin and the HTB.
    func setScheduled(_ s: Int, _ on: Bool) {
        guard clients[s].scheduled != on else { return }
        let c = clients[s].classSlot
        let bytes = clients[s].pendingBytes
        clients[s].scheduled = on
        if on {
            classes[c].ring.append(Int32(s))
            addClassDemand(c, bytes)
        } else {
            classes[c].removeFromRing(Int32(s))
            classes[c].demand -= bytes
            trimClassDemand(c)
        }
    }

    /// Demand of ready clients grew by `bytes`: register it with the HTB, through the window if any.
    func addClassDemand(_ c: Int, _ bytes: Int) {
        classes[c].demand += bytes
        if classes[c].window == nil { registerDemand(c, bytes) }
        // A windowed class registers what its window grants in refreshWindow.
    }

    func registerDemand(_ c: Int, _ bytes: Int) {
        guard bytes > 0 else { return }
        try? htb.addDemand(bytes, for: classes[c].handle)
        classes[c].scheduledDemand += bytes
        scheduledDemand += bytes
    }

    /// Keeps the HTB's demand for a class no larger than its ready clients' demand.
    func trimClassDemand(_ c: Int) {
        let excess = classes[c].scheduledDemand - classes[c].demand
        guard excess > 0 else { return }
        try? htb.removeDemand(excess, for: classes[c].handle)
        classes[c].scheduledDemand -= excess
        scheduledDemand -= excess
    }

    /// For each windowed class: registers with the HTB what its window grants of its unregistered
    /// demand; returns the earliest instant a window opens for demand that is still waiting.
    func refreshWindows(at now: Instant) -> Instant? {
        var wake: Instant?
        for c in windowedClasses {
            wake = earliest(wake, refreshWindow(c, at: now))
        }
        return wake
    }

    func refreshWindow(_ c: Int, at now: Instant) -> Instant? {
        let want = classes[c].demand - classes[c].scheduledDemand
        guard want > 0 else { return nil }
        let grant = classes[c].window!.request(want, at: now)
        registerDemand(c, grant.bytes)
        return grant.retryAt
    }

    /// Gives `bytes` (already granted to class `c`) to its clients in round-robin turns.
    func distribute(_ bytes: Int, toClass c: Int, at now: Instant) {
        var remaining = bytes
        while remaining > 0, !classes[c].ring.isEmpty {
            if classes[c].cursor >= classes[c].ring.count { classes[c].cursor = 0 }
            let s = Int(classes[c].ring[classes[c].cursor])
            let give = min(remaining, clients[s].pendingBytes, classes[c].turnLeft)
            let given = deliverBlocking(s, give, at: now)
            remaining -= given
            classes[c].turnLeft -= given
            // Not expected (the grant's bytes are reserved in the stage); kept as a guard: the rest goes
            // back to the schedule below.
            if given < give { break }
            if clients[s].pendingBytes == 0 {
                setScheduled(s, false)
            } else if classes[c].turnLeft <= 0 {
                classes[c].cursor += 1
                classes[c].turnLeft = classes[c].configuration.clientQuantum
            }
        }
        if remaining > 0 {
            // Granted but not served: hand the demand back to the schedule (the class was charged for
            // these bytes). Not expected while the grant's bytes are reserved in the stage.
            registerDemand(c, min(remaining, classes[c].demand - classes[c].scheduledDemand))
        }
    }

    /// Serves `bytes` of the decision being distributed to the client's blocking reads, answering in
    /// order the requests that follow each read it completes; returns the bytes served (all of them:
    /// the client's pending reads cover them, the stage holds them in reserve, and no sink can change
    /// the queue meanwhile).
    func deliverBlocking(_ s: Int, _ bytes: Int, at now: Instant) -> Int {
        var left = bytes
        let c = clients[s].classSlot
        let generation = clients[s].generation
        while left > 0, case .read(let want)? = clients[s].queue.first {
            let n = min(left, want, stageEnd - stageStart)
            guard n > 0 else { break }
            let piece = takeStaged(n)
            reserved -= n
            clients[s].pendingBytes -= n
            clients[s].served &+= UInt64(n)
            classes[c].demand -= n
            classes[c].statistics.pendingBytes -= n
            classes[c].statistics.bytesServed &+= UInt64(n)
            bytesServed &+= UInt64(n)
            let complete = n == want
            if complete {
                clients[s].queue.removeFirst()
                classes[c].statistics.requestsAnswered &+= 1
            } else {
                clients[s].queue.replaceFirst(with: .read(want - n))
            }
            deliver(s, .bytes(UnsafeRawBufferPointer(piece), completesRead: complete))
            piece.initializeMemory(as: UInt8.self, repeating: 0)
            left -= n
            // What follows a completed read up to the next one: level queries, markers, non-blocking
            // reads (which take staged bytes beyond the ones `reserved` keeps for this decision).
            if complete { answerImmediateRequests(s, generation: generation, at: now) }
        }
        return bytes - left
    }

    /// Answers, in order, the requests at the front of the queue that need no waiting.
    func answerImmediateRequests(_ s: Int, generation: UInt32, at now: Instant) {
        while clients[s].live, clients[s].generation == generation, let head = clients[s].queue.first {
            let c = clients[s].classSlot
            switch head {
            case .read(let n):
                guard n == 0 else { return }
                clients[s].queue.removeFirst()
                classes[c].statistics.requestsAnswered &+= 1
                deliver(s, .bytes(UnsafeRawBufferPointer(start: nil, count: 0), completesRead: true))
            case .entropyLevel:
                clients[s].queue.removeFirst()
                classes[c].statistics.requestsAnswered &+= 1
                deliver(s, .entropyLevel(bits: entropyLevelBits))
            case .marker(let tag):
                clients[s].queue.removeFirst()
                classes[c].statistics.requestsAnswered &+= 1
                deliver(s, .marker(tag))
            case .readAvailable(let n):
                clients[s].queue.removeFirst()
                classes[c].statistics.requestsAnswered &+= 1
                let granted = grantNow(n, toClass: c, for: s, at: now)
                let piece = takeStaged(granted)
                clients[s].served &+= UInt64(piece.count)
                classes[c].statistics.bytesServed &+= UInt64(piece.count)
                bytesServed &+= UInt64(piece.count)
                deliver(s, .available(UnsafeRawBufferPointer(piece)))
                piece.initializeMemory(as: UInt8.self, repeating: 0)
            }
        }
    }

    /// How many of `n` bytes class `c` may have at once: staged bytes not reserved for the decision
    /// being distributed, its window, its HTB tokens. Charges the window and the HTB for exactly that.
    func grantNow(_ n: Int, toClass c: Int, for s: Int, at now: Instant) -> Int {
        // Other clients' blocking reads waiting in the class come first: otherwise a client polling
        // with non-blocking reads would take the class's tokens ahead of the round robin. (The client's
        // own later reads wait behind this answer anyway.)
        let own = clients[s].scheduled ? clients[s].pendingBytes : 0
        guard n > 0, classes[c].demand - own == 0 else { return 0 }
        if stageEnd - stageStart - reserved < n { _ = topUpStage(wanting: reserved + n) }
        var g = min(n, stageEnd - stageStart - reserved)
        // The window is charged only for what the HTB grants (it may refuse), so ask it first for at
        // most what the window would grant.
        if g > 0, let window = classes[c].window { g = min(g, Int(clamping: window.availableBytes(at: now))) }
        if g > 0 { g = (try? htb.request(g, from: classes[c].handle, at: now).bytes) ?? 0 }
        if g > 0, classes[c].window != nil { g = classes[c].window!.request(g, at: now).bytes }
        return g
    }

    func deliver(_ s: Int, _ delivery: BrokerDelivery) {
        delivering = true
        defer { delivering = false }
        clients[s].sink(delivery)
    }

    /// Raises an event; the handler, like a sink, may not call the broker.
    func emit(_ event: BrokerEvent) {
        delivering = true
        defer { delivering = false }
        onEvent(event)
    }

    /// The next `n` staged bytes (the caller wipes them after use).
    func takeStaged(_ requested: Int) -> UnsafeMutableRawBufferPointer {
        // Never past what the supply handed out: a caller asking for more gets what is staged.
        let n = min(requested, stageEnd - stageStart)
        let piece = UnsafeMutableRawBufferPointer(rebasing: stage[stageStart..<(stageStart + n)])
        stageStart += n
        if stageStart == stageEnd {
            stageStart = 0
            stageEnd = 0
        }
        return piece
    }

    /// Tops the stage up from the supply; true when it then holds at least `wanting` bytes (at most the
    /// stage's size).
    func topUpStage(wanting: Int) -> Bool {
        let wanting = min(wanting, stage.count)
        if stageStart > 0 && stageStart + wanting > stage.count {
            // Slide the unserved bytes to the front; wipe where they were.
            let count = stageEnd - stageStart
            stage.baseAddress!.copyMemory(from: stage.baseAddress! + stageStart, byteCount: count)
            UnsafeMutableRawBufferPointer(rebasing: stage[count..<stageEnd]).initializeMemory(
                as: UInt8.self, repeating: 0)
            stageStart = 0
            stageEnd = count
        }
        while stageEnd - stageStart < wanting && stageEnd < stage.count {
            do throws(EntropySourceError) {
                let n = try supply.tryFill(UnsafeMutableRawBufferPointer(rebasing: stage[stageEnd...]))
                if n <= 0 { break }
                stageEnd += min(n, stage.count - stageEnd)
                if sourceError != nil {
                    sourceError = nil
                    emit(.sourceRecovered)
                }
            } catch {
                if sourceError != error {
                    sourceError = error
                    emit(.sourceFailed(error))
                }
                break
            }
        }
        return stageEnd - stageStart >= wanting
    }

    /// Under ``SourceFailurePolicy/failRequests``: drops every pending read and tells its client.
    func failAllPending() {
        guard let error = sourceError else { return }
        var failedClients = 0
        var failedBytes = 0
        for s in clients.indices where clients[s].live && !clients[s].queue.isEmpty {
            let c = clients[s].classSlot
            let bytes = clients[s].pendingBytes
            setScheduled(s, false)
            classes[c].statistics.pendingBytes -= bytes
            clients[s].pendingBytes = 0
            clients[s].queue.removeAll()
            failedClients += 1
            failedBytes += bytes
            deliver(s, .failed(error))
        }
        if failedClients > 0 { emit(.requestsFailed(clients: failedClients, bytes: failedBytes)) }
    }
}

/// A class's state beside its HTB class.
struct ClassState<Instant: InstantProtocol> where Instant.Duration == Duration {
    let configuration: BrokerClassConfiguration
    let handle: HTBClass
    var window: FixedWindowLimiter<Instant>?
    var childCount = 0
    var clientCount = 0
    /// Pending bytes of the class's ready clients.
    var demand = 0
    /// The part of `demand` registered with the HTB (all of it without a window).
    var scheduledDemand = 0
    /// Ready clients with pending reads, in turn order.
    var ring: ContiguousArray<Int32> = []
    var cursor = 0
    var turnLeft: Int
    var statistics = BrokerClassStatistics()

    init(configuration: BrokerClassConfiguration, handle: HTBClass, window: FixedWindowLimiter<Instant>?) {
        self.configuration = configuration
        self.handle = handle
        self.window = window
        self.turnLeft = configuration.clientQuantum
    }

    mutating func removeFromRing(_ s: Int32) {
        guard let i = ring.firstIndex(of: s) else { return }
        ring.remove(at: i)
        if i < cursor {
            cursor -= 1
        } else if i == cursor {
            // The next client's turn starts afresh.
            turnLeft = configuration.clientQuantum
        }
        if cursor >= ring.count { cursor = 0 }
    }
}
