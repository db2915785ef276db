public import RateLimit

/// Random HTB class trees for property tests, built so that the guide's rules hold: each inner class's
/// rate equals the sum of its children's rates, and ceils never exceed the parent's.
public enum RandomHTBTree {
    /// A tree of `leafCount` leaves under one root with at most `maximumDepth` levels (≥ 2), leaf rates
    /// in `minimumRate...maximumRate` B/s, random ceils between rate and the root rate, random prios in
    /// `0...maximumPrio`, and quanta proportional to rate.
    ///
    /// Returns the configurations parents-first and the leaf identifiers.
    public static func make(
        leafCount: Int,
        maximumDepth: Int,
        minimumRate: Int = 1_000,
        maximumRate: Int = 100_000,
        maximumPrio: Int = 0,
        using rng: inout some RandomNumberGenerator
    ) -> (classes: [HTBClassConfiguration], leaves: [HTBClassID]) {
        // Shape: assign each leaf a random path of inner-class choices, then sum rates bottom-up.
        var nextID: UInt32 = 2
        var parentOf: [UInt32: UInt32] = [:]
        var children: [UInt32: [UInt32]] = [1: []]
        var leafRate: [UInt32: Int] = [:]
        var inner: [UInt32] = [1]
        var depthOf: [UInt32: Int] = [1: 1]
        var leaves: [UInt32] = []
        for _ in 0..<leafCount {
            // Pick an existing inner class, maybe open a new inner class under it, then hang a leaf.
            var parent = inner.randomElement(using: &rng)!
            if depthOf[parent]! + 1 < maximumDepth && Bool.random(using: &rng) {
                let id = nextID
                nextID += 1
                parentOf[id] = parent
                children[parent, default: []].append(id)
                children[id] = []
                depthOf[id] = depthOf[parent]! + 1
                inner.append(id)
                parent = id
            }
            let leaf = nextID
            nextID += 1
            parentOf[leaf] = parent
            children[parent, default: []].append(leaf)
            depthOf[leaf] = depthOf[parent]! + 1
            leafRate[leaf] = Int.random(in: minimumRate...maximumRate, using: &rng)
            leaves.append(leaf)
        }
        // Inner classes without leaves below them would be leaves themselves: give each one a leaf.
        for id in inner where children[id]!.isEmpty {
            let leaf = nextID
            nextID += 1
            parentOf[leaf] = id
            children[id]!.append(leaf)
            depthOf[leaf] = depthOf[id]! + 1
            leafRate[leaf] = Int.random(in: minimumRate...maximumRate, using: &rng)
            leaves.append(leaf)
        }
        func rate(_ id: UInt32) -> Int {
            if let r = leafRate[id] { return r }
            return children[id]!.reduce(0) { $0 + rate($1) }
        }
        let rootRate = rate(1)
        var ceilOf: [UInt32: Int] = [1: rootRate]
        var classes: [HTBClassConfiguration] = []
        let ordered = ([1] + inner.dropFirst() + leaves).sorted { depthOf[$0]! < depthOf[$1]! }
        for id in ordered {
            let r = rate(id)
            var ceil = r
            if let parent = parentOf[id] {
                let parentCeil = ceilOf[parent]!
                ceil = Int.random(in: r...max(r, parentCeil), using: &rng)
            }
            ceilOf[id] = ceil
            classes.append(
                HTBClassConfiguration(
                    id: HTBClassID(id),
                    parent: parentOf[id].map(HTBClassID.init),
                    rate: r,
                    ceil: ceil,
                    burst: max(r / 100, 2_000),
                    cburst: max(ceil / 100, 2_000),
                    quantum: max(r / 10, 1_000),
                    prio: leafRate[id] != nil ? Int.random(in: 0...maximumPrio, using: &rng) : 0
                ))
        }
        return (classes, leaves.map(HTBClassID.init))
    }
}
