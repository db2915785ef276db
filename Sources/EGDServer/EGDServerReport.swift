public import EntropySources
public import RateLimit

/// What a server has served, per listener.
public struct EGDServerReport: Sendable, Equatable {
    /// One listener's class.
    public struct ClassReport: Sendable, Equatable {
        /// The listener, e.g. `unix:/run/virtrngd/egd-pool`.
        public var listener: String
        /// Its class in the HTB tree.
        public var classID: HTBClassID
        /// Bytes served to its connections.
        public var bytesServed: UInt64
        /// Requests answered completely.
        public var requestsAnswered: UInt64
        /// Connections open now.
        public var connections: Int
        /// Bytes of blocking reads waiting now.
        public var pendingBytes: Int
    }

    /// Every listener's class, in configuration order.
    public var classes: [ClassReport]
    /// Bytes served in all.
    public var bytesServed: UInt64
    /// Connections open now.
    public var connections: Int
    /// The source's error while it is failing.
    public var sourceError: EntropySourceError?
}
