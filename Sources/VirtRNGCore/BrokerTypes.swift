public import EntropySources
public import RateLimit

/// Where an ``EntropyBroker`` takes its bytes from: a supply that never blocks.
///
/// `PrefetchPool` is the supply of a daemon: its filler thread runs the (possibly blocking,
/// health-monitored) source, and `PrefetchPool.tryFill(_:)` only copies out what is buffered. Tests
/// give the broker a scripted supply to make "empty", "failing" and "recovered" deterministic.
public protocol EntropySupply: AnyObject {
    /// A short name for messages, e.g. `"pool(health(getrandom))"`.
    var name: String { get }
    /// The bytes that could be taken now.
    var level: Int { get }
    /// Copies out up to `buffer.count` bytes without waiting; 0 when empty but not failing.
    ///
    /// - Throws: the source's error when nothing is buffered and the source is failing.
    func tryFill(_ buffer: UnsafeMutableRawBufferPointer) throws(EntropySourceError) -> Int
    /// Calls `handler` once, on any thread, when ``tryFill(_:)`` would hand out bytes or throw an error
    /// it has not thrown yet (the source failed, failed again on a retry, or the supply closed); at
    /// once when that is already so.
    ///
    /// An error ``tryFill(_:)`` already threw must not trigger the handler again by itself: the broker
    /// asks to be told after every failed top-up, and an owner runs it on every notification, so a
    /// supply that fired at once for a known failure would have them spin while the source is down.
    func notifyWhenAvailable(_ handler: @escaping @Sendable () -> Void)
}

extension PrefetchPool: EntropySupply {}

/// What a client of the broker asks for. Requests of one client are answered strictly in order.
public enum BrokerRequest: Sendable, Hashable {
    /// A blocking read: exactly `count` bytes, delivered as the client's class is granted them, possibly
    /// in several pieces (EGD `02 NN`, a guest's virtqueue buffer). A read of 0 bytes is answered in its
    /// place by one empty piece that completes it.
    case read(Int)
    /// A non-blocking read: up to `count` bytes, whatever the class is granted at once, possibly none
    /// (EGD `01 NN`).
    case readAvailable(Int)
    /// The bytes the broker could serve now, in bits (EGD `00`).
    case entropyLevel
    /// A request the broker does not serve itself but must answer in order (EGD `04`, the daemon's PID):
    /// the broker hands `tag` back when the marker reaches the front of the client's queue.
    case marker(UInt64)
}

/// What the broker hands a client's sink. The byte views are valid only during the call: copy them.
public enum BrokerDelivery {
    /// The next bytes of the client's oldest blocking read; `completesRead` is true on its last piece.
    case bytes(UnsafeRawBufferPointer, completesRead: Bool)
    /// The whole answer to a non-blocking read (possibly empty).
    case available(UnsafeRawBufferPointer)
    /// The answer to ``BrokerRequest/entropyLevel``: bits the broker could serve now.
    case entropyLevel(bits: Int)
    /// A ``BrokerRequest/marker(_:)`` reached the front of the queue.
    case marker(UInt64)
    /// The client's pending requests were failed and dropped (the source failed under
    /// ``SourceFailurePolicy/failRequests``); a transport should close the client, since EGD has no error
    /// reply. The client stays connected in the broker and may submit again.
    case failed(EntropySourceError)
}

/// What the broker does with waiting requests while its source fails (health test, device gone).
public enum SourceFailurePolicy: Sendable, Hashable {
    /// Requests wait, in order, until the source serves again (QEMU's behaviour with a stalled backend).
    case wait
    /// Every pending request is failed at once and new ones fail until the source recovers.
    case failRequests
}

/// An observable change of the broker's state, for logs, metrics and alerts.
public enum BrokerEvent: Sendable, Hashable {
    /// The supply reported an error with nothing left to serve; no byte of a failed block is served.
    case sourceFailed(EntropySourceError)
    /// The supply serves again after a failure.
    case sourceRecovered
    /// Requests were failed under ``SourceFailurePolicy/failRequests``: `clients` clients, `bytes` bytes.
    case requestsFailed(clients: Int, bytes: Int)
}

/// When to call ``EntropyBroker/run(at:)`` again.
public enum BrokerWake<Instant: InstantProtocol>: Sendable, Equatable {
    /// Nothing is waiting.
    case idle
    /// Requests wait for their classes' tokens (or a QEMU-style window) until this instant.
    case at(Instant)
    /// Requests wait for the source; the broker's `sourceReady` callback fires when it has bytes (or
    /// news of a failure, which the next run reports).
    case whenSourceReady
    /// The run stopped after its work budget to let the caller serve other work; call again soon.
    case now
}

/// A QEMU `max-bytes`/`period` window applied to a class before its HTB shaping.
public struct BrokerWindow: Sendable, Hashable {
    /// Bytes per window (QEMU `max-bytes`).
    public var maxBytes: UInt64
    /// Window length in milliseconds (QEMU `period`).
    public var periodMilliseconds: UInt32

    /// A window of `maxBytes` per `periodMilliseconds`.
    public init(maxBytes: UInt64, periodMilliseconds: UInt32) {
        self.maxBytes = maxBytes
        self.periodMilliseconds = periodMilliseconds
    }
}

/// A class of clients: its HTB shaping, an optional QEMU-style window, and limits per client.
public struct BrokerClassConfiguration: Sendable, Equatable {
    /// The class in the HTB tree (rate, ceil, bursts, parent, prio, quantum).
    public var shaping: HTBClassConfiguration
    /// A QEMU `max-bytes`/`period` window applied before the HTB, or nil.
    public var window: BrokerWindow?
    /// Bytes a client of this class is served per round-robin turn among the class's clients.
    public var clientQuantum: Int
    /// Clients (connections) the class admits at once.
    public var maximumClients: Int

    /// A class; by default 256-byte turns (one EGD request) and 1,024 clients.
    public init(
        shaping: HTBClassConfiguration, window: BrokerWindow? = nil, clientQuantum: Int = 256,
        maximumClients: Int = 1_024
    ) {
        self.shaping = shaping
        self.window = window
        self.clientQuantum = clientQuantum
        self.maximumClients = maximumClients
    }

    /// A class that only shares: 1 TB/s rate and ceil, so only the source limits it.
    public static func unlimited(id: HTBClassID, parent: HTBClassID? = nil) -> Self {
        Self(shaping: HTBClassConfiguration(id: id, parent: parent, rate: unlimitedRate))
    }

    /// The rate of ``unlimited(id:parent:)``, bytes per second.
    public static var unlimitedRate: Int { 1_000_000_000_000 }
}

/// Broker-wide limits.
public struct BrokerConfiguration: Sendable, Hashable {
    /// Bytes of blocking reads one client may have pending; a transport stops reading the client's
    /// requests at this bound (back-pressure), and ``EntropyBroker/submit(_:for:at:)`` refuses beyond it.
    public var maximumPendingBytesPerClient: Int
    /// Requests one client may have queued (bounds zero-byte requests such as level queries too).
    public var maximumPendingRequestsPerClient: Int
    /// The largest piece one scheduling decision grants (HTB `maximumGrant`), and the size of the
    /// broker's staging buffer.
    public var maximumGrant: Int
    /// Bytes one ``EntropyBroker/run(at:)`` serves before it returns ``BrokerWake/now``.
    public var bytesPerRun: Int
    /// What waiting requests do while the source fails.
    public var failurePolicy: SourceFailurePolicy

    /// Defaults: 64 KiB and 1,024 requests pending per client, 4 KiB grants, 256 KiB per run, wait.
    public init(
        maximumPendingBytesPerClient: Int = 65_536, maximumPendingRequestsPerClient: Int = 1_024,
        maximumGrant: Int = 4_096, bytesPerRun: Int = 262_144, failurePolicy: SourceFailurePolicy = .wait
    ) {
        self.maximumPendingBytesPerClient = maximumPendingBytesPerClient
        self.maximumPendingRequestsPerClient = maximumPendingRequestsPerClient
        self.maximumGrant = maximumGrant
        self.bytesPerRun = bytesPerRun
        self.failurePolicy = failurePolicy
    }
}

/// A client of the broker (a connection, a guest's queue). Stale once disconnected.
public struct BrokerClient: Hashable, Sendable {
    @usableFromInline let slot: Int32
    @usableFromInline let generation: UInt32
}

/// Why the broker refused something.
public enum BrokerError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The HTB refused the class (bad rates, unknown parent, …).
    case shaping(RateLimitError)
    /// The class's QEMU window is invalid (period 0, max-bytes 0 or ≥ 2^63).
    case window(RateLimitError)
    /// Clients attach to leaf classes only; this class has children (or clients, when adding a child).
    case notALeafClass(HTBClassID)
    /// A client quantum or client limit below 1, or a broker limit below 1.
    case invalidLimit(name: String, value: Int)
    /// No class has this identifier.
    case unknownClass(HTBClassID)
    /// The class holds its maximum number of clients.
    case classFull(HTBClassID, maximumClients: Int)
    /// The handle names a client that disconnected.
    case unknownClient
    /// A read asked for a negative count.
    case invalidCount(Int)
    /// The client has this many bytes of blocking reads pending already (back-pressure was ignored).
    case tooManyPendingBytes(pending: Int, requested: Int, maximum: Int)
    /// The client has this many requests queued already.
    case tooManyPendingRequests(maximum: Int)
    /// The broker was called from inside one of its own deliveries; hop to the broker's thread first.
    case reentrantCall

    /// One line for a log.
    public var description: String {
        switch self {
        case .shaping(let e): "class configuration refused: \(e)"
        case .window(let e): "max-bytes/period window refused: \(e)"
        case .notALeafClass(let id): "class \(id) has children (or clients); clients attach to leaf classes only"
        case .invalidLimit(let name, let value): "\(name) must be at least 1, got \(value)"
        case .unknownClass(let id): "no class \(id)"
        case .classFull(let id, let maximum): "class \(id) already has its maximum of \(maximum) clients"
        case .unknownClient: "the client is no longer connected"
        case .invalidCount(let n): "a read of \(n) bytes"
        case .tooManyPendingBytes(let pending, let requested, let maximum):
            "\(pending) bytes pending, \(requested) more requested: the limit per client is \(maximum)"
        case .tooManyPendingRequests(let maximum): "more than \(maximum) requests pending"
        case .reentrantCall: "the broker was called from inside its own delivery"
        }
    }
}

/// Counters of one class.
public struct BrokerClassStatistics: Sendable, Hashable {
    /// Bytes served to the class's clients (blocking and non-blocking reads).
    public var bytesServed: UInt64 = 0
    /// Requests answered completely.
    public var requestsAnswered: UInt64 = 0
    /// Clients attached now.
    public var clients: Int = 0
    /// Bytes of blocking reads waiting now.
    public var pendingBytes: Int = 0
}
