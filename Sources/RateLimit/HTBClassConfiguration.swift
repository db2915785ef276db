/// The identifier of a class in a ``HierarchicalTokenBucket`` (tc's minor class number).
public struct HTBClassID: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The number itself.
    public var rawValue: UInt32

    /// The class numbered `rawValue`.
    public init(_ rawValue: UInt32) { self.rawValue = rawValue }

    /// Orders by number.
    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    /// `1:` followed by the number in hexadecimal, as tc prints it.
    public var description: String { "1:" + String(rawValue, radix: 16) }
}

/// One class of a ``HierarchicalTokenBucket``: its place in the tree and its tc-htb parameters.
///
/// Rates are in bytes per second, sizes in bytes. Defaults follow tc (`tc/q_htb.c`) with HZ = 1000
/// and an MTU of 1,600: `ceil = rate`, `burst = rate/1000 + 1600`, `cburst = ceil/1000 + 1600`,
/// `quantum = rate / 10` (r2q = 10) clamped to `1000...200000`, `prio = 0`.
public struct HTBClassConfiguration: Sendable, Equatable {
    /// The class's identifier, unique in the tree.
    public var id: HTBClassID
    /// The parent class, or nil for a root class (root classes never lend to each other).
    public var parent: HTBClassID?
    /// Guaranteed rate for the class and all its descendants, bytes/s (> 0).
    public var rate: Int
    /// Highest rate when borrowing, bytes/s (`rate ≤ ceil ≤ parent's ceil`).
    public var ceil: Int
    /// Bytes the class may send at once beyond `rate` (depth of the rate bucket, > 0).
    public var burst: Int
    /// Bytes the class may send at once beyond `ceil` (depth of the ceil bucket, > 0).
    public var cburst: Int
    /// Bytes a class is served in its turn before its siblings (deficit round robin, > 0).
    public var quantum: Int
    /// Priority for excess bandwidth, 0 (first) through 7.
    public var prio: Int

    /// A class with tc's defaults for every parameter not given.
    public init(
        id: HTBClassID,
        parent: HTBClassID? = nil,
        rate: Int,
        ceil: Int? = nil,
        burst: Int? = nil,
        cburst: Int? = nil,
        quantum: Int? = nil,
        prio: Int = 0
    ) {
        self.id = id
        self.parent = parent
        self.rate = rate
        let ceilValue = ceil ?? rate
        self.ceil = ceilValue
        self.burst = burst ?? (rate / 1000 &+ 1600)
        self.cburst = cburst ?? (ceilValue / 1000 &+ 1600)
        self.quantum = quantum ?? Swift.min(Swift.max(rate / 10, 1000), 200_000)
        self.prio = prio
    }
}

/// A class's mode (`htb_class_mode`): whether it may send on its own rate, only by borrowing, or not at all.
public enum HTBMode: UInt8, Sendable, Equatable {
    /// Green: below its rate (rate tokens ≥ 0); sends on its own tokens and may lend.
    case canSend = 0
    /// Yellow: above its rate but below its ceil; sends only by borrowing from a `canSend` ancestor.
    case mayBorrow = 1
    /// Red: above its ceil (ceil tokens < 0); sends nothing until its ceil tokens recover.
    case cantSend = 2
}

/// A reference to a class, cheap to use on every decision; stale once the class is removed.
public struct HTBClass: Hashable, Sendable {
    /// The class's identifier.
    public let id: HTBClassID
    @usableFromInline let slot: Int32
    @usableFromInline let generation: UInt32

    @usableFromInline
    init(id: HTBClassID, slot: Int32, generation: UInt32) {
        self.id = id
        self.slot = slot
        self.generation = generation
    }
}

/// What the scheduler of a ``HierarchicalTokenBucket`` decided.
public enum HTBDecision<Instant: InstantProtocol>: Sendable, Equatable {
    /// Serve `bytes` to `leaf` now; the bytes are already charged and taken off its demand.
    case serve(HTBClass, bytes: Int)
    /// Demand is waiting but no class may send; decide again at this instant (the earliest mode change).
    case waitUntil(Instant)
    /// No leaf has demand.
    case idle
}
