extension HTBCore {
    /// Checks the structural invariants; returns a description of the first one broken, or nil.
    ///
    /// - A leaf's `prioActivity` is `1 << prio` exactly when it has demand; an inner class's bit p is
    ///   set exactly when its feed for p is non-empty.
    /// - Class c is in row (level(c), p) iff it can send and bit p is active; in its parent's feed p
    ///   iff it may borrow, has a parent and bit p is active; in no list otherwise.
    /// - `rowMask` matches the non-empty rows; the heap is ordered, its indices are right, and it holds
    ///   exactly the classes that are not `canSend`; a mode that differs from the buckets has its event due.
    /// - Buckets stay within `[−mbuffer·rate, depth]`.
    func invariantViolation(now: Int64) -> String? {
        var inRow = Set<Int>()
        var inFeed = Set<Int>()
        for row in 0..<64 {
            let nonEmpty = rowHead[row] != Self.none
            if nonEmpty != (rowMask & (1 << UInt64(row)) != 0) { return "rowMask bit \(row) wrong" }
            if let error = walk(rowHead[row], prio: row & 7, into: &inRow) { return error }
        }
        for (i, n) in nodes.enumerated() where n.inUse {
            for p in 0..<8 {
                if let error = walk(feedHead[i * 8 + p], prio: p, into: &inFeed) { return error }
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
                for p in 0..<8 where (n.prioActivity & (1 << UInt8(p)) != 0) != (feedHead[i * 8 + p] != Self.none) {
                    return "\(id): activity bit \(p) disagrees with its feed"
                }
            }
            for p in 0..<8 {
                let active = n.prioActivity & (1 << UInt8(p)) != 0
                let wantRow = active && n.mode == .canSend
                let wantFeed = active && n.mode == .mayBorrow && n.parent != Self.none
                if inRow.contains(i * 8 + p) != wantRow { return "\(id): row membership for prio \(p) wrong" }
                if inFeed.contains(i * 8 + p) != wantFeed { return "\(id): feed membership for prio \(p) wrong" }
                if wantFeed && !isMember(Int32(i), of: feedHead[Int(n.parent) * 8 + p], prio: p) {
                    return "\(id): in a feed other than its parent's"
                }
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
        if backlogged != backloggedLeaves { return "backlogged count \(backloggedLeaves) ≠ \(backlogged)" }
        for (i, e) in heap.enumerated() {
            if nodes[Int(e.slot)].heapIndex != Int32(i) { return "heap index of slot \(e.slot) wrong" }
            if i > 0 && heap[(i - 1) / 2].time > e.time { return "heap order broken at \(i)" }
        }
        return nil
    }

    private func walk(_ head: Int32, prio: Int, into members: inout Set<Int>) -> String? {
        guard head != Self.none else { return nil }
        var s = head
        var steps = 0
        repeat {
            if !members.insert(Int(s) * 8 + prio).inserted { return "slot \(s) in two lists for prio \(prio)" }
            let next = links[Int(s) * 16 + prio * 2]
            if links[Int(next) * 16 + prio * 2 + 1] != s { return "list links broken at slot \(s)" }
            s = next
            steps += 1
            if steps > nodes.count { return "list for prio \(prio) does not close" }
        } while s != head
        return nil
    }

    private func isMember(_ s: Int32, of head: Int32, prio: Int) -> Bool {
        guard head != Self.none else { return false }
        var x = head
        repeat {
            if x == s { return true }
            x = links[Int(x) * 16 + prio * 2]
        } while x != head
        return false
    }
}

extension HierarchicalTokenBucket {
    /// Checks the internal invariants (for tests and fuzzers); returns the first one broken, or nil.
    /// Walks the whole tree: O(n), allocates.
    public func checkInvariants() -> String? {
        core.invariantViolation(now: timeline.latest)
    }
}
