extension HTBCore {
    /// Checks the structural invariants; returns a description of the first one broken, or nil.
    ///
    /// - A leaf's `prioActivity` is `1 << prio` exactly when it has demand; an inner class's bit p is
    ///   set exactly when its feed for p has live members.
    /// - Class c is live in row (level(c), p) iff it can send and bit p is active; live in its
    ///   parent's feed p iff it may borrow, has a parent and bit p is active. A class linked in a list
    ///   where it is not live is a ghost; every list holds only classes of its level (rows) or children
    ///   of its owner (feeds), and its live count is right. Free slots are linked nowhere.
    /// - `rowMask` matches the rows with live members; the heap is ordered, its indices are right, and
    ///   it holds exactly the classes that are not `canSend`; a mode that differs from the buckets has
    ///   its event due.
    /// - Buckets stay within `[−mbuffer·rate, depth]`.
    func invariantViolation(now: Int64) -> String? {
        // Local copies: one retain each, where a debug build retains the arrays at every access
        // through `self` (tests call this after every step).
        let nodes = self.nodes
        let links = self.links
        let feedHead = self.feedHead
        let feedLive = self.feedLive
        let rowHead = self.rowHead
        let rowLive = self.rowLive
        let heap = self.heap
        // Membership as flags at `slot·8 + prio`.
        var inRow = [Bool](repeating: false, count: nodes.count * 8)
        var inFeed = [Bool](repeating: false, count: nodes.count * 8)
        for row in 0..<64 {
            let prio = row & 7
            let (error, live) = Self.walk(
                nodes, links, rowHead[row], offset: prio * 4 + 2, prio: prio, into: &inRow, liveMode: .canSend,
                level: row >> 3)
            if let error { return error }
            if rowLive[row] != live { return "row \(row) counts \(rowLive[row]) live members, has \(live)" }
            if (live > 0) != (rowMask & (1 << UInt64(row)) != 0) { return "rowMask bit \(row) wrong" }
        }
        for (i, n) in nodes.enumerated() {
            for p in 0..<8 {
                guard n.inUse else {
                    if feedHead[i * 8 + p] != Self.none || feedLive[i * 8 + p] != 0 {
                        return "free slot \(i) has a feed"
                    }
                    if links[i * 32 + p * 4] != Self.none || links[i * 32 + p * 4 + 2] != Self.none {
                        return "free slot \(i) is linked"
                    }
                    continue
                }
                let (error, live) = Self.walk(
                    nodes, links, feedHead[i * 8 + p], offset: p * 4, prio: p, into: &inFeed, liveMode: .mayBorrow,
                    parent: Int32(i))
                if let error { return error }
                if feedLive[i * 8 + p] != live { return "\(n.configuration.id): feed \(p) live count wrong" }
            }
        }
        var backlogged = 0
        for (i, n) in nodes.enumerated() where n.inUse {
            let id = n.configuration.id
            if n.childCount == 0 {
                if n.demand > 0 { backlogged += 1 }
                let expected: UInt8 = n.demand > 0 ? 1 << UInt8(n.prio) : 0
                if n.prioActivity != expected { return "\(id): leaf activity \(n.prioActivity) ≠ \(expected)" }
            } else {
                if n.demand != 0 { return "\(id): inner class with demand" }
                for p in 0..<8 where (n.prioActivity & (1 << UInt8(p)) != 0) != (feedLive[i * 8 + p] != 0) {
                    return "\(id): activity bit \(p) disagrees with its feed"
                }
            }
            for p in 0..<8 {
                let active = n.prioActivity & (1 << UInt8(p)) != 0
                let wantRow = active && n.mode == .canSend
                let wantFeed = active && n.mode == .mayBorrow && n.parent != Self.none
                if wantRow && !inRow[i * 8 + p] { return "\(id): not in its row for prio \(p)" }
                if wantFeed && !inFeed[i * 8 + p] { return "\(id): not in its parent's feed for prio \(p)" }
                if n.parent == Self.none && links[i * 32 + p * 4] != Self.none { return "\(id): root class in a feed" }
            }
            if (n.heapIndex != Self.none) != (n.mode != .canSend) { return "\(id): heap membership wrong" }
            let (fresh, _) = classMode(Int32(i), diff: now - n.checkpoint)
            if fresh != n.mode && (n.heapIndex == Self.none || heap[Int(n.heapIndex)].time > now) {
                return "\(id): mode \(n.mode) but buckets say \(fresh) and no event is due"
            }
            if n.tokens > n.buffer || n.ctokens > n.cbuffer { return "\(id): bucket above its depth" }
            if n.tokens < -Int128(Self.mbuffer) * Int128(n.rate) { return "\(id): rate debt beyond mbuffer" }
            if n.ctokens < -Int128(Self.mbuffer) * Int128(n.ceil) { return "\(id): ceil debt beyond mbuffer" }
        }
        for (i, n) in nodes.enumerated() where n.inUse {
            for p in 0..<8 {
                if (links[i * 32 + p * 4] != Self.none) != inFeed[i * 8 + p] {
                    return "\(n.configuration.id): linked in no feed for prio \(p)"
                }
                if (links[i * 32 + p * 4 + 2] != Self.none) != inRow[i * 8 + p] {
                    return "\(n.configuration.id): linked in no row for prio \(p)"
                }
            }
        }
        if backlogged != backloggedLeaves { return "backlogged count \(backloggedLeaves) ≠ \(backlogged)" }
        for (i, e) in heap.enumerated() {
            if nodes[Int(e.slot)].heapIndex != Int32(i) { return "heap index of slot \(e.slot) wrong" }
            if i > 0 && heap[(i - 1) / 2].time > e.time { return "heap order broken at \(i)" }
        }
        return nil
    }

    /// Walks the circular list starting at `head`, checking its links and that each member belongs
    /// there (a row's `level`, a feed's `parent`), recording each as `slot·8 + prio`; returns the number
    /// of live members (in `liveMode` and active for `prio`).
    private static func walk(
        _ nodes: ContiguousArray<Node>, _ links: ContiguousArray<Int32>, _ head: Int32, offset: Int, prio: Int,
        into members: inout [Bool], liveMode: HTBMode, level: Int = -1,
        parent: Int32 = HTBCore.none
    ) -> (String?, Int32) {
        var live: Int32 = 0
        guard head != none else { return (nil, live) }
        var s = head
        var steps = 0
        repeat {
            let i = Int(s)
            if members[i * 8 + prio] { return ("slot \(s) in two lists for prio \(prio)", live) }
            members[i * 8 + prio] = true
            if !nodes[i].inUse { return ("free slot \(s) in a list", live) }
            if level >= 0 && nodes[i].level != level { return ("slot \(s) in the row of another level", live) }
            if parent != none && nodes[i].parent != parent {
                return ("slot \(s) in a feed other than its parent's", live)
            }
            if nodes[i].mode == liveMode && nodes[i].prioActivity & (1 << UInt8(prio)) != 0 { live += 1 }
            let next = links[i * 32 + offset]
            if links[Int(next) * 32 + offset + 1] != s { return ("list links broken at slot \(s)", live) }
            s = next
            steps += 1
            if steps > nodes.count { return ("list for prio \(prio) does not close", live) }
        } while s != head
        return (nil, live)
    }
}

extension HierarchicalTokenBucket {
    /// Checks the internal invariants (for tests and fuzzers); returns the first one broken, or nil.
    /// Walks the whole tree: O(n), allocates.
    public func checkInvariants() -> String? {
        core.invariantViolation(now: timeline.latest)
    }
}
