public import EGDCodec
public import EntropySources
public import RateLimit
public import VirtRNGCore

/// One listening socket and the class its connections belong to.
///
/// A libvirt-style setup gives each guest (or group of guests) its own unix socket, so the socket is
/// the class: every connection accepted on it shares the class's rate and ceil by round robin.
public struct EGDListener: Sendable, Equatable {
    /// Where to listen: a unix socket path, or a TCP address (loopback in tests; any explicit address).
    public var endpoint: EGDEndpoint
    /// The class of the connections accepted here. Its `BrokerClassConfiguration.shaping` parent is
    /// set by the server (every listener's class hangs under the server's root class).
    public var shaping: BrokerClassConfiguration
    /// Bytes sent to each new connection before it asks (0: none). **For QEMU `rng-egd` sockets only.**
    ///
    /// QEMU assigns the bytes it reads to its oldest pending request whatever command they answer, and
    /// reads only while a request is pending, so bytes sent ahead wait in the socket until the guest
    /// asks and then complete its request at once; each answer that follows keeps the stream that many
    /// bytes ahead. The guest then never waits for a round trip to the daemon, and after a daemon
    /// restart the request QEMU lost with the old connection (QEMU does not resend it) is completed by
    /// the new connection's first bytes, so the guest recovers as soon as QEMU reconnects. Any other
    /// client (ekeyd, egc.pl, `egd-client`) would misread unsolicited bytes: leave it 0 for them.
    /// The bytes are served and charged to the class like any others.
    public var prefillBytes: Int
    /// Permission bits of a unix socket file (who may connect: connecting needs write permission),
    /// e.g. `0o660` with a group QEMU runs in; nil leaves what the process's umask gives.
    public var socketMode: UInt32?

    /// A listener on `endpoint` whose connections share `shaping`.
    public init(
        endpoint: EGDEndpoint, shaping: BrokerClassConfiguration, prefillBytes: Int = 0, socketMode: UInt32? = nil
    ) {
        self.endpoint = endpoint
        self.shaping = shaping
        self.prefillBytes = prefillBytes
        self.socketMode = socketMode
    }
}

/// Everything an ``EGDServer`` needs besides its supply.
public struct EGDServerConfiguration: Sendable, Equatable {
    /// The sockets to listen on, at least one.
    public var listeners: [EGDListener]
    /// The class every listener's class hangs under: its ceil caps the whole daemon (default unlimited).
    public var root: HTBClassConfiguration
    /// Limits of the broker (pending bytes per client, grant size, failure policy).
    public var broker: BrokerConfiguration
    /// Connections open at once over all listeners; more are accepted and closed at once.
    public var maximumConnections: Int
    /// A connection with no request pending that sends nothing for this long is closed (nil: never).
    ///
    /// Off by default: QEMU's `rng-egd` keeps one connection per guest for the guest's lifetime and
    /// reconnects only with `reconnect=` on its chardev, so closing an idle QEMU would starve its guest.
    public var idleTimeout: Duration?
    /// A connection whose answers have not drained for this long (the peer stopped reading) is closed.
    public var stallTimeout: Duration
    /// On shutdown, how long connections may take to finish the requests they have pending.
    public var shutdownGracePeriod: Duration
    /// Which EGD commands are served; by default all five (`03` writes are read and discarded, as
    /// ekeyd does: client-supplied bytes never reach another client).
    public var acceptedCommands: EGDCommandSet
    /// Sets TCP_NODELAY on TCP connections (default true): without it Nagle's algorithm and delayed
    /// ACKs hold ekeyd-egd-linux's pipelined requests to one round per ~40 ms.
    public var tcpNoDelay: Bool

    /// A configuration with the defaults described on each property.
    public init(
        listeners: [EGDListener],
        root: HTBClassConfiguration = HTBClassConfiguration(
            id: EGDServerConfiguration.rootClassID, rate: BrokerClassConfiguration.unlimitedRate),
        broker: BrokerConfiguration = BrokerConfiguration(),
        maximumConnections: Int = 4_096,
        idleTimeout: Duration? = nil,
        stallTimeout: Duration = .seconds(30),
        shutdownGracePeriod: Duration = .seconds(2),
        acceptedCommands: EGDCommandSet = .all,
        tcpNoDelay: Bool = true
    ) {
        self.listeners = listeners
        self.root = root
        self.broker = broker
        self.maximumConnections = maximumConnections
        self.idleTimeout = idleTimeout
        self.stallTimeout = stallTimeout
        self.shutdownGracePeriod = shutdownGracePeriod
        self.acceptedCommands = acceptedCommands
        self.tcpNoDelay = tcpNoDelay
    }

    /// The root class's identifier, `1:1` as `tc` would number it.
    public static var rootClassID: HTBClassID { HTBClassID(1) }
}

/// Why a server could not start. Each case is one clear line for a daemon's exit.
public enum EGDServerError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No listener was configured.
    case noListeners
    /// A limit below 1.
    case invalidLimit(name: String, value: Int)
    /// A live daemon answers on this unix socket.
    case socketInUse(path: String)
    /// The path exists and is not a socket; the server does not remove other files.
    case pathNotASocket(path: String)
    /// The socket's directory is missing or not writable, or the path is too long.
    case cannotBind(endpoint: String, reason: String)
    /// The broker refused a class (bad rate, ceil below rate, bad window).
    case classRefused(listener: String, reason: String)

    /// One line for a log or an exit message.
    public var description: String {
        switch self {
        case .noListeners: "no socket to listen on"
        case .invalidLimit(let name, let value): "\(name) must be at least 1, got \(value)"
        case .socketInUse(let path): "\(path) is in use by a running daemon (it accepted a connection)"
        case .pathNotASocket(let path): "\(path) exists and is not a socket; not removing it"
        case .cannotBind(let endpoint, let reason): "cannot listen on \(endpoint): \(reason)"
        case .classRefused(let listener, let reason): "class of \(listener) refused: \(reason)"
        }
    }
}
