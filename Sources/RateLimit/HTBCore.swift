/// The clock-free state of a hierarchical token bucket: classes, buckets, the active rows and feeds,
/// and the wait queue. Time is in nanoseconds on the owner's ``Timeline``.
///
/// Storage is flat and index-based so that a decision allocates nothing: classes live in `nodes`
/// (a removed class's slot is reused; a generation number makes old ``HTBClass`` handles fail), the
/// per-priority round-robin lists are intrusive circular doubly linked lists in `links`, and the
/// wait queue is an indexed binary min-heap.
///
/// Round-robin lists keep their order. A class that leaves a row or feed (it changed mode, or ran out
/// of demand) stays linked where it was, as a *ghost*: only the count of live members goes down. If
/// it comes back before the round-robin pointer reaches it, it is live again in its old place; if the
/// pointer reaches it first, it is unlinked there and its turn is lost, as it was away when it could
/// have sent. Linux gets the same order from its rb-trees sorted by class id and its `last_ptr_id`.
/// Leaves flip between sending on their own rate and borrowing all the time; re-inserting them at
/// the tail would push them behind siblings that already had their turn, and the shares of borrowed
/// bandwidth would drift away from the quanta.
///
/// Token units: a bucket holds *nanobytes* (10⁻⁹ byte) in an `Int128`. In `e` ns a class earns
/// `e · rate` nanobytes (rate in B/s) and sending `n` bytes costs `n · 10⁹`. This is Linux's
/// time-denominated bucket (`tokens` in ns, `L2T(rate, bytes)`) multiplied by `rate`, so every
/// operation is exact: no rounding, no drift, however high or low the rate.
@usableFromInline
struct HTBCore: Sendable {
    /// Linux `TC_HTB_MAXDEPTH`: a leaf sits at most 8 levels below the top.
    static let maximumDepth = 8
    /// Linux `mbuffer`: elapsed time beyond 60 s earns nothing more, and debt is forgiven beyond 60 s.
    static let mbuffer: Int64 = 60_000_000_000
    /// Nanobytes per byte.
    static let scale: Int128 = 1_000_000_000
    static let none: Int32 = -1

    @usableFromInline
    struct Node: Sendable {
        var configuration: HTBClassConfiguration
        var generation: UInt32 = 0
        var inUse = false
        var parent: Int32 = HTBCore.none
        var childCount: Int32 = 0
        /// 1 for a root class.
        var depth = 1
        /// 0 for a leaf; `8 − depth` for an inner class (Linux: the root inner class is level 7).
        var level = 0
        var prio = 0
        var mode = HTBMode.canSend
        /// Bit p set: the class has a backlogged leaf of prio p that reaches it through borrowing
        /// children (Linux `prio_activity`).
        var prioActivity: UInt8 = 0
        var rate: Int64 = 1
        var ceil: Int64 = 1
        var buffer: Int128 = 0
        var cbuffer: Int128 = 0
        var tokens: Int128 = 0
        var ctokens: Int128 = 0
        /// Linux `t_c`: when the buckets were last brought up to date.
        var checkpoint: Int64 = 0
        var quantum: Int64 = 1
        /// Scheduler demand in bytes (leaves only).
        var demand = 0
        var heapIndex: Int32 = HTBCore.none
        /// Bytes charged to the class (sent by it or its descendants).
        var sent: UInt64 = 0
    }

    @usableFromInline
    struct HeapEntry: Sendable {
        var time: Int64
        var slot: Int32
    }

    @usableFromInline
    enum Decision: Sendable, Equatable {
        case serve(slot: Int32, bytes: Int)
        case wait(Int64)
        case idle
    }

    @usableFromInline let maximumGrant: Int
    var nodes: ContiguousArray<Node> = []
    /// For slot s and prio p, in its parent's feed: next at `s·32 + 4p`, previous at `s·32 + 4p + 1`;
    /// in its row: next at `s·32 + 4p + 2`, previous at `s·32 + 4p + 3`; −1 when not linked.
    var links: ContiguousArray<Int32> = []
    /// Head (the round-robin pointer) of inner class s's feed for prio p at `s·8 + p`; it may be a ghost.
    var feedHead: ContiguousArray<Int32> = []
    /// Live (non-ghost) members of that feed.
    var feedLive: ContiguousArray<Int32> = []
    /// DRR deficit of slot s for prio p: in its parent's feed at `s·16 + p`, in its row at `s·16 + 8 + p`
    /// (Linux keeps a leaf's deficit per level, so sending on its own rate does not use up its turn
    /// at borrowing).
    var deficit: ContiguousArray<Int64> = []
    /// Head of the row (self feed) for level l and prio p at `l·8 + p`; it may be a ghost.
    var rowHead = ContiguousArray<Int32>(repeating: HTBCore.none, count: 64)
    /// Live (non-ghost) members of that row.
    var rowLive = ContiguousArray<Int32>(repeating: 0, count: 64)
    /// Bit `l·8 + p` set iff that row has live members; the lowest set bit is served first.
    var rowMask: UInt64 = 0
    var heap: ContiguousArray<HeapEntry> = []
    var freeSlots: [Int32] = []
    var slotByID: [HTBClassID: Int32] = [:]
    var backloggedLeaves = 0

    @usableFromInline
    init(maximumGrant: Int) {
        self.maximumGrant = maximumGrant
    }

    // MARK: Lookup

    @usableFromInline
    func slot(of handle: HTBClass) throws(RateLimitError) -> Int32 {
        let s = Int(handle.slot)
        guard s >= 0, s < nodes.count, nodes[s].inUse, nodes[s].generation == handle.generation else {
            throw .unknownClass(handle.id)
        }
        return handle.slot
    }

    @usableFromInline
    func handle(for id: HTBClassID) -> HTBClass? {
        guard let s = slotByID[id] else { return nil }
        return HTBClass(id: id, slot: s, generation: nodes[Int(s)].generation)
    }

    @usableFromInline
    func handle(ofSlot s: Int32) -> HTBClass {
        HTBClass(id: nodes[Int(s)].configuration.id, slot: s, generation: nodes[Int(s)].generation)
    }

    @usableFromInline
    func node(_ s: Int32) -> Node { nodes[Int(s)] }

    var classCount: Int { slotByID.count }

    // MARK: Adding and removing classes

    /// Checks `c` against the tree as it is, without changing anything.
    func validate(_ c: HTBClassConfiguration) throws(RateLimitError) -> Int {
        guard slotByID[c.id] == nil else { throw .duplicateClass(c.id) }
        guard c.rate > 0 else { throw .rateNotPositive(class: c.id, rate: c.rate) }
        guard c.ceil >= c.rate else { throw .ceilBelowRate(class: c.id, rate: c.rate, ceil: c.ceil) }
        guard c.burst > 0 else { throw .burstNotPositive(class: c.id, burst: c.burst) }
        guard c.cburst > 0 else { throw .cburstNotPositive(class: c.id, cburst: c.cburst) }
        guard c.quantum > 0 else { throw .quantumNotPositive(class: c.id, quantum: c.quantum) }
        guard (0..<8).contains(c.prio) else { throw .prioOutOfRange(class: c.id, prio: c.prio) }
        guard let parentID = c.parent else { return 1 }
        guard let p = slotByID[parentID] else { throw .unknownParent(class: c.id, parent: parentID) }
        let parent = nodes[Int(p)]
        guard c.ceil <= parent.configuration.ceil else {
            throw .ceilAboveParentCeil(
                class: c.id, ceil: c.ceil, parent: parentID, parentCeil: parent.configuration.ceil)
        }
        let depth = parent.depth + 1
        guard depth <= Self.maximumDepth else {
            throw .depthExceeded(class: c.id, depth: depth, maximum: Self.maximumDepth)
        }
        return depth
    }

    @usableFromInline
    mutating func add(_ c: HTBClassConfiguration, now: Int64) throws(RateLimitError) -> HTBClass {
        let depth = try validate(c)
        let parent = c.parent.flatMap { slotByID[$0] } ?? Self.none
        let s: Int32
        if let reused = freeSlots.popLast() {
            s = reused
        } else {
            s = Int32(nodes.count)
            nodes.append(Node(configuration: c))
            links.append(contentsOf: repeatElement(Self.none, count: 32))
            feedHead.append(contentsOf: repeatElement(Self.none, count: 8))
            feedLive.append(contentsOf: repeatElement(0, count: 8))
            deficit.append(contentsOf: repeatElement(0, count: 16))
            // The wait queue holds at most one entry per class: reserve now so decisions never allocate.
            heap.reserveCapacity(nodes.count)
        }
        var n = Node(configuration: c)
        n.generation = nodes[Int(s)].generation
        n.inUse = true
        n.parent = parent
        n.depth = depth
        n.prio = c.prio
        n.rate = Int64(c.rate)
        n.ceil = Int64(c.ceil)
        n.buffer = Int128(c.burst) * Self.scale
        n.cbuffer = Int128(c.cburst) * Self.scale
        n.tokens = n.buffer
        n.ctokens = n.cbuffer
        n.checkpoint = now
        n.quantum = Int64(c.quantum)
        nodes[Int(s)] = n
        for p in 0..<16 { deficit[Int(s) * 16 + p] = 0 }
        slotByID[c.id] = s
        if parent != Self.none {
            if nodes[Int(parent)].childCount == 0 {
                // A leaf becomes an inner class (Linux drops its queue): its demand goes.
                dropDemand(parent)
                unlinkGhost(parent)
                nodes[Int(parent)].level = Self.maximumDepth - nodes[Int(parent)].depth
            }
            nodes[Int(parent)].childCount += 1
        }
        return HTBClass(id: c.id, slot: s, generation: n.generation)
    }

    @usableFromInline
    mutating func remove(_ id: HTBClassID, now: Int64) throws(RateLimitError) {
        guard let s = slotByID[id] else { throw .unknownClass(id) }
        guard nodes[Int(s)].childCount == 0 else { throw .classHasChildren(id) }
        dropDemand(s)
        unlinkGhost(s)
        if nodes[Int(s)].heapIndex != Self.none { heapRemove(s) }
        let parent = nodes[Int(s)].parent
        if parent != Self.none {
            nodes[Int(parent)].childCount -= 1
            if nodes[Int(parent)].childCount == 0 {
                // Linux htb_parent_to_leaf: full buckets, CAN_SEND, out of the wait queue.
                if nodes[Int(parent)].heapIndex != Self.none { heapRemove(parent) }
                unlinkGhost(parent)
                nodes[Int(parent)].level = 0
                nodes[Int(parent)].tokens = nodes[Int(parent)].buffer
                nodes[Int(parent)].ctokens = nodes[Int(parent)].cbuffer
                nodes[Int(parent)].checkpoint = now
                nodes[Int(parent)].mode = .canSend
                nodes[Int(parent)].prioActivity = 0
            }
        }
        slotByID[id] = nil
        nodes[Int(s)].inUse = false
        nodes[Int(s)].generation &+= 1
        nodes[Int(s)].parent = Self.none
        freeSlots.append(s)
    }

    /// Unlinks `s`, which is live in no list, from the row of its level and its parent's feed where it
    /// stayed as a ghost: before it is removed or changes level.
    mutating func unlinkGhost(_ s: Int32) {
        let level = nodes[Int(s)].level
        let parent = nodes[Int(s)].parent
        for p in 0..<8 {
            if links[Int(s) * 32 + p * 4] != Self.none {
                Self.unlink(&links, &feedHead[Int(parent) * 8 + p], s, p * 4)
            }
            if links[Int(s) * 32 + p * 4 + 2] != Self.none {
                Self.unlink(&links, &rowHead[level * 8 + p], s, p * 4 + 2)
            }
        }
    }

    /// Forgets a leaf's demand and takes it out of the rows and feeds.
    mutating func dropDemand(_ s: Int32) {
        guard nodes[Int(s)].demand > 0 else { return }
        deactivatePrios(s)
        nodes[Int(s)].prioActivity = 0
        nodes[Int(s)].demand = 0
        backloggedLeaves -= 1
    }
}
