/// Linux HTB (`net/sched/sch_htb.c`) as a byte-rate limiter: a tree of classes sharing one source.
///
/// Each class has a rate bucket (depth `burst`) and a ceil bucket (depth `cburst`), both refilled
/// continuously and kept in exact integer nanobytes (see the DocC article). Its mode is
/// ``HTBMode/cantSend`` when the ceil bucket is negative, ``HTBMode/canSend`` when the rate bucket
/// is non-negative, else ``HTBMode/mayBorrow``. A leaf sends on its own rate when it can send, or
/// borrows from its nearest ancestor that can send, every class in between being `mayBorrow`; root
/// classes never lend to each other. Every send is charged along the path to the root: rate buckets
/// of the lender and above, ceil buckets of every class.
///
/// Two ways to decide, on the same state:
/// - ``request(_:from:at:)``: the grant API. A leaf asks for bytes; it gets up to `maximumGrant` now
///   if it may send, and otherwise the instant to ask again. Guarantees hold whatever the order of
///   requests (a leaf under its rate is always granted); excess is first come, first served.
/// - ``addDemand(_:for:)`` and ``dequeue(at:)``: the scheduler. Among leaves with demand it picks the
///   one Linux's `htb_dequeue` would: lowest lending level first (own rate before borrowing), then
///   lowest prio, then deficit round robin by quantum; or says when to look again.
///
/// Like Linux, a decision may overdraw a bucket by one grant (Linux: one packet): over any interval
/// `Δt` a class sends at most `cburst + ceil·Δt + maximumGrant` on its own path; a tree whose
/// children's rates add up to more than their parent's rate can push an inner class past its ceil,
/// because a leaf under its rate is served without asking its ancestors (as in Linux).
///
/// Time: `now` is an input; instants earlier than one already seen count as the latest seen. Elapsed
/// time beyond 60 s (Linux `mbuffer`) earns nothing more.
///
/// Cost: a decision walks one root path (≤ 8 classes) and does O(log n) work in the wait queue per
/// mode change; it allocates nothing once the tree is built.
public struct HierarchicalTokenBucket<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    @usableFromInline var timeline: Timeline<Instant>
    @usableFromInline var core: HTBCore

    /// The largest number of bytes one decision grants (the analogue of Linux's MTU): also the most
    /// by which one decision can overdraw a bucket.
    public var maximumGrant: Int { core.maximumGrant }

    /// An empty tree whose time starts at `start`.
    public init(start: Instant, maximumGrant: Int = 4096) throws(RateLimitError) {
        guard maximumGrant > 0 else { throw .maximumGrantNotPositive(maximumGrant) }
        self.timeline = Timeline(origin: start)
        self.core = HTBCore(maximumGrant: maximumGrant)
    }

    /// A tree built from `classes` given in any order; parents are added before their children.
    ///
    /// Throws the first configuration error found: duplicates, unknown parents, a cycle of parents,
    /// then each class's own errors in order of depth.
    public init(
        classes: [HTBClassConfiguration],
        start: Instant,
        maximumGrant: Int = 4096
    ) throws(RateLimitError) {
        try self.init(start: start, maximumGrant: maximumGrant)
        var byID: [HTBClassID: HTBClassConfiguration] = [:]
        for c in classes {
            guard byID.updateValue(c, forKey: c.id) == nil else { throw .duplicateClass(c.id) }
        }
        var depth: [HTBClassID: Int] = [:]
        for c in classes {
            var chain: [HTBClassID] = []
            var current = c
            var known = 0
            while true {
                if let d = depth[current.id] {
                    known = d
                    break
                }
                if chain.contains(current.id) { throw .cycle(current.id) }
                chain.append(current.id)
                guard let parentID = current.parent else { break }
                guard let parent = byID[parentID] else { throw .unknownParent(class: current.id, parent: parentID) }
                current = parent
            }
            for (offset, id) in chain.reversed().enumerated() { depth[id] = known + offset + 1 }
        }
        let ordered = classes.sorted { (depth[$0.id]!, $0.id) < (depth[$1.id]!, $1.id) }
        for c in ordered { _ = try core.add(c, now: 0) }
    }

    // MARK: Configuration

    /// Adds a class at run time (a guest arrives) and returns its handle.
    ///
    /// Adding a child to a leaf makes it an inner class and drops its scheduler demand. The class
    /// starts with full buckets.
    @discardableResult
    public mutating func add(_ configuration: HTBClassConfiguration) throws(RateLimitError) -> HTBClass {
        try core.add(configuration, now: timeline.latest)
    }

    /// Removes a class without children (a guest leaves); its handle becomes stale. A parent left
    /// without children becomes a leaf with full buckets (Linux `htb_parent_to_leaf`).
    public mutating func remove(_ id: HTBClassID) throws(RateLimitError) {
        try core.remove(id, now: timeline.latest)
    }

    /// The handle of class `id`, or nil if there is none.
    public func handle(for id: HTBClassID) -> HTBClass? { core.handle(for: id) }

    /// The number of classes in the tree.
    public var classCount: Int { core.classCount }

    /// The configuration of a class.
    public func configuration(of handle: HTBClass) throws(RateLimitError) -> HTBClassConfiguration {
        try core.node(core.slot(of: handle)).configuration
    }

    /// A class's mode as of the latest decision.
    public func mode(of handle: HTBClass) throws(RateLimitError) -> HTBMode {
        try core.node(core.slot(of: handle)).mode
    }

    /// Bytes charged to a class so far: sent by it or, for an inner class, by its descendants.
    public func bytesCharged(to handle: HTBClass) throws(RateLimitError) -> UInt64 {
        try core.node(core.slot(of: handle)).sent
    }

    /// A leaf's scheduler demand not yet served, in bytes.
    public func demand(of handle: HTBClass) throws(RateLimitError) -> Int {
        try core.node(core.slot(of: handle)).demand
    }

    // MARK: Decisions

    /// The grant API: asks for `bytes` for `leaf` at `now`.
    ///
    /// Grants `min(bytes, maximumGrant)` when the leaf may send (on its own rate, or borrowing) and
    /// charges it; otherwise grants nothing. When not everything is granted, the retry instant is the
    /// earliest at which the leaf could send if no other class were charged meanwhile (it may be `now`
    /// after a partial grant; it is later than `now` after a denial).
    @inlinable
    public mutating func request(_ bytes: Int, from leaf: HTBClass, at now: Instant) throws(RateLimitError) -> Grant<
        Instant
    > {
        let slot = try core.slot(of: leaf)
        let t = timeline.advance(to: now)
        let (granted, retry) = try core.request(bytes, leaf: slot, now: t)
        if granted >= bytes { return .granted(max(bytes, 0)) }
        return .make(granted: granted, of: bytes, retryAt: timeline.instant(atNanoseconds: retry))
    }

    /// Adds `bytes` of demand to a leaf for the scheduler (``dequeue(at:)``).
    @inlinable
    public mutating func addDemand(_ bytes: Int, for leaf: HTBClass) throws(RateLimitError) {
        try core.addDemand(bytes, leaf: core.slot(of: leaf))
    }

    /// Takes up to `bytes` of demand away from a leaf, e.g. when the consumer it stood for left or can
    /// take no more for now; a leaf left with no demand is no longer scheduled.
    @inlinable
    public mutating func removeDemand(_ bytes: Int, for leaf: HTBClass) throws(RateLimitError) {
        try core.removeDemand(bytes, leaf: core.slot(of: leaf))
    }

    /// The scheduler: picks the leaf to serve next among those with demand, grants it
    /// `min(demand, maximumGrant, quantum)` bytes and charges them, or says when to decide again.
    @inlinable
    public mutating func dequeue(at now: Instant) -> HTBDecision<Instant> {
        let t = timeline.advance(to: now)
        switch core.dequeue(now: t) {
        case .serve(let slot, let bytes):
            return .serve(core.handle(ofSlot: slot), bytes: bytes)
        case .wait(let time): return .waitUntil(timeline.instant(atNanoseconds: time))
        case .idle: return .idle
        }
    }

    /// The earliest instant at which some waiting class changes mode (Linux's watchdog time), or nil
    /// when no class is waiting.
    public var nextEventInstant: Instant? {
        core.heap.first.map { timeline.instant(atNanoseconds: $0.time) }
    }
}
