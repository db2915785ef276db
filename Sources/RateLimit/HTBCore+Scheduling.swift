// Modes, charging, the active rows and feeds, the wait queue, and the two decisions (request and
// dequeue). Names follow net/sched/sch_htb.c so the code can be read beside it; see PROTOCOLS.md §5.

extension HTBCore {
    // MARK: Arithmetic

    /// `⌈numerator / denominator⌉` for `numerator > 0`, `denominator > 0`, saturating at `Int64.max`.
    static func ceilingDivide(_ numerator: Int128, _ denominator: Int64) -> Int64 {
        if numerator <= Int128(UInt64.max) {
            let n = UInt64(numerator)
            let d = UInt64(denominator)
            let q = n / d + (n % d == 0 ? 0 : 1)
            return q > UInt64(Int64.max) ? .max : Int64(q)
        }
        let (q, r) = numerator.quotientAndRemainder(dividingBy: Int128(denominator))
        let up = q + (r == 0 ? 0 : 1)
        return up > Int128(Int64.max) ? .max : Int64(up)
    }

    /// Linux `htb_class_mode` with hysteresis off (lowater = hiwater = 0), evaluated `diff` ns after
    /// the checkpoint (capped at mbuffer), and how long until the mode changes.
    ///
    /// `ctokens + diff·ceil < 0` → cantSend, wait `⌈−(ctokens + diff·ceil) / ceil⌉`;
    /// else `tokens + diff·rate ≥ 0` → canSend; else mayBorrow, wait `⌈−(tokens + diff·rate) / rate⌉`.
    func classMode(_ s: Int32, diff: Int64) -> (HTBMode, wait: Int64) {
        let n = nodes[Int(s)]
        let d = Int128(min(diff, Self.mbuffer))
        let ct = n.ctokens + d * Int128(n.ceil)
        if ct < 0 { return (.cantSend, Self.ceilingDivide(-ct, n.ceil)) }
        let t = n.tokens + d * Int128(n.rate)
        if t >= 0 { return (.canSend, 0) }
        return (.mayBorrow, Self.ceilingDivide(-t, n.rate))
    }

    // MARK: Charging

    /// Linux `htb_charge_class`: `bytes` sent by `leaf`, lent by the class at `level`.
    ///
    /// For every class from the leaf to the root: classes at or above the lending level pay from their
    /// rate bucket (`tokens = min(tokens + diff·rate, buffer) − bytes·10⁹`, floored near −mbuffer·rate);
    /// classes below it (the borrowers) only move their checkpoint (`tokens += diff·rate`); every class
    /// pays from its ceil bucket. The checkpoint becomes `now` and the mode is recomputed, moving the
    /// class between the rows/feeds and the wait queue.
    mutating func charge(_ leaf: Int32, level: Int, bytes: Int, now: Int64) {
        let cost = Int128(bytes) * Self.scale
        var s = leaf
        while s != Self.none {
            let i = Int(s)
            let diff = Int128(min(now - nodes[i].checkpoint, Self.mbuffer))
            let rate = Int128(nodes[i].rate)
            let ceil = Int128(nodes[i].ceil)
            if nodes[i].level >= level {
                let floor = -Int128(Self.mbuffer) * rate
                var t = min(nodes[i].tokens + diff * rate, nodes[i].buffer) - cost
                if t <= floor { t = floor + rate }
                nodes[i].tokens = t
            } else {
                nodes[i].tokens += diff * rate
            }
            let cfloor = -Int128(Self.mbuffer) * ceil
            var ct = min(nodes[i].ctokens + diff * ceil, nodes[i].cbuffer) - cost
            if ct <= cfloor { ct = cfloor + ceil }
            nodes[i].ctokens = ct
            nodes[i].checkpoint = now
            nodes[i].sent &+= UInt64(bytes)
            let old = nodes[i].mode
            let (mode, wait) = classMode(s, diff: 0)
            if mode != old {
                changeMode(s, to: mode)
                if old != .canSend { heapRemove(s) }
                if mode != .canSend { heapInsert(s, time: saturatingAdd(now, wait)) }
            }
            s = nodes[i].parent
        }
    }

    /// Linux `htb_do_events`: re-evaluates every class whose mode-change time has come.
    mutating func doEvents(now: Int64) {
        while let top = heap.first, top.time <= now {
            let s = top.slot
            heapRemove(s)
            let (mode, wait) = classMode(s, diff: now - nodes[Int(s)].checkpoint)
            changeMode(s, to: mode)
            if mode != .canSend { heapInsert(s, time: saturatingAdd(now, wait)) }
        }
    }

    /// Linux `htb_change_class_mode`.
    mutating func changeMode(_ s: Int32, to mode: HTBMode) {
        let old = nodes[Int(s)].mode
        if mode == old { return }
        if nodes[Int(s)].prioActivity != 0 {
            if old != .cantSend { deactivatePrios(s) }
            nodes[Int(s)].mode = mode
            if mode != .cantSend { activatePrios(s) }
        } else {
            nodes[Int(s)].mode = mode
        }
    }

    // MARK: Rows and feeds (Linux htb_activate_prios / htb_deactivate_prios)

    mutating func activatePrios(_ start: Int32) {
        var s = start
        var p = nodes[Int(s)].parent
        var mask = nodes[Int(s)].prioActivity
        while nodes[Int(s)].mode == .mayBorrow && p != Self.none && mask != 0 {
            var m = mask
            while m != 0 {
                let prio = m.trailingZeroBitCount
                m &= m &- 1
                let feed = Int(p) * 8 + prio
                // The parent is already active for this prio: it need not be activated again above.
                if feedLive[feed] != 0 { mask &= ~(1 << UInt8(prio)) }
                Self.join(&links, &feedHead[feed], &feedLive[feed], s, prio * 4)
            }
            nodes[Int(p)].prioActivity |= mask
            s = p
            p = nodes[Int(s)].parent
        }
        if nodes[Int(s)].mode == .canSend && mask != 0 { addToRow(s, mask) }
    }

    mutating func deactivatePrios(_ start: Int32) {
        var s = start
        var p = nodes[Int(s)].parent
        var mask = nodes[Int(s)].prioActivity
        while nodes[Int(s)].mode == .mayBorrow && p != Self.none && mask != 0 {
            var m = mask
            mask = 0
            while m != 0 {
                let prio = m.trailingZeroBitCount
                m &= m &- 1
                let feed = Int(p) * 8 + prio
                feedLive[feed] -= 1
                if feedLive[feed] == 0 { mask |= 1 << UInt8(prio) }
            }
            nodes[Int(p)].prioActivity &= ~mask
            s = p
            p = nodes[Int(s)].parent
        }
        if nodes[Int(s)].mode == .canSend && mask != 0 { removeFromRow(s, mask) }
    }

    mutating func addToRow(_ s: Int32, _ mask: UInt8) {
        let level = nodes[Int(s)].level
        var m = mask
        while m != 0 {
            let prio = m.trailingZeroBitCount
            m &= m &- 1
            let row = level * 8 + prio
            Self.join(&links, &rowHead[row], &rowLive[row], s, prio * 4 + 2)
            rowMask |= 1 << UInt64(row)
        }
    }

    mutating func removeFromRow(_ s: Int32, _ mask: UInt8) {
        let level = nodes[Int(s)].level
        var m = mask
        while m != 0 {
            let prio = m.trailingZeroBitCount
            m &= m &- 1
            let row = level * 8 + prio
            rowLive[row] -= 1
            if rowLive[row] == 0 { rowMask &= ~(1 << UInt64(row)) }
        }
    }

    /// Makes `s` a live member of a list (`offset` selects the list kind and prio in `links`). A ghost
    /// of `s` still linked there comes back to life in its place; otherwise `s` goes at the tail, just
    /// before the round-robin pointer `head`, last in the current round.
    static func join(
        _ links: inout ContiguousArray<Int32>, _ head: inout Int32, _ live: inout Int32, _ s: Int32, _ offset: Int
    ) {
        live += 1
        let me = Int(s) * 32 + offset
        if links[me] != none { return }
        if head == none {
            links[me] = s
            links[me + 1] = s
            head = s
        } else {
            let h = Int(head) * 32 + offset
            let tail = links[h + 1]
            links[Int(tail) * 32 + offset] = s
            links[me + 1] = tail
            links[me] = head
            links[h + 1] = s
        }
    }

    /// Unlinks `s` (a ghost); a pointer at `s` moves to the next class.
    static func unlink(_ links: inout ContiguousArray<Int32>, _ head: inout Int32, _ s: Int32, _ offset: Int) {
        let me = Int(s) * 32 + offset
        let next = links[me]
        if next == s {
            head = none
        } else {
            let prev = links[me + 1]
            links[Int(prev) * 32 + offset] = next
            links[Int(next) * 32 + offset + 1] = prev
            if head == s { head = next }
        }
        links[me] = none
        links[me + 1] = none
    }

    /// The live class at the pointer of row `row` (which has live members), after unlinking the
    /// ghosts the pointer meets: their turn has come while they were away.
    mutating func rowPointer(_ row: Int) -> Int32 {
        let bit: UInt8 = 1 << UInt8(row & 7)
        while true {
            let s = rowHead[row]
            if nodes[Int(s)].mode == .canSend && nodes[Int(s)].prioActivity & bit != 0 { return s }
            Self.unlink(&links, &rowHead[row], s, (row & 7) * 4 + 2)
        }
    }

    /// The live class at the pointer of feed `feed` (which has live members), after unlinking ghosts.
    mutating func feedPointer(_ feed: Int) -> Int32 {
        let bit: UInt8 = 1 << UInt8(feed & 7)
        while true {
            let s = feedHead[feed]
            if nodes[Int(s)].mode == .mayBorrow && nodes[Int(s)].prioActivity & bit != 0 { return s }
            Self.unlink(&links, &feedHead[feed], s, (feed & 7) * 4)
        }
    }

    // MARK: Wait queue (indexed binary min-heap on the mode-change time)

    mutating func heapInsert(_ s: Int32, time: Int64) {
        heap.append(HeapEntry(time: time, slot: s))
        nodes[Int(s)].heapIndex = Int32(heap.count - 1)
        siftUp(heap.count - 1)
    }

    mutating func heapRemove(_ s: Int32) {
        let i = Int(nodes[Int(s)].heapIndex)
        nodes[Int(s)].heapIndex = Self.none
        let last = heap.removeLast()
        if i == heap.count { return }
        heap[i] = last
        nodes[Int(last.slot)].heapIndex = Int32(i)
        if i > 0 && heap[(i - 1) / 2].time > last.time { siftUp(i) } else { siftDown(i) }
    }

    mutating func siftUp(_ start: Int) {
        var i = start
        let entry = heap[i]
        while i > 0 {
            let parent = (i - 1) / 2
            if heap[parent].time <= entry.time { break }
            heap[i] = heap[parent]
            nodes[Int(heap[i].slot)].heapIndex = Int32(i)
            i = parent
        }
        heap[i] = entry
        nodes[Int(entry.slot)].heapIndex = Int32(i)
    }

    mutating func siftDown(_ start: Int) {
        var i = start
        let entry = heap[i]
        let count = heap.count
        while true {
            var child = 2 * i + 1
            if child >= count { break }
            if child + 1 < count && heap[child + 1].time < heap[child].time { child += 1 }
            if heap[child].time >= entry.time { break }
            heap[i] = heap[child]
            nodes[Int(heap[i].slot)].heapIndex = Int32(i)
            i = child
        }
        heap[i] = entry
        nodes[Int(entry.slot)].heapIndex = Int32(i)
    }

    // MARK: Decisions

    /// The level of the class that would lend to `leaf` now, or nil when it may not send
    /// (modes must be current: call after `doEvents`).
    func lendingLevel(_ leaf: Int32) -> Int? {
        switch nodes[Int(leaf)].mode {
        case .canSend: return 0
        case .cantSend: return nil
        case .mayBorrow:
            var s = nodes[Int(leaf)].parent
            while s != Self.none {
                switch nodes[Int(s)].mode {
                case .canSend: return nodes[Int(s)].level
                case .cantSend: return nil
                case .mayBorrow: s = nodes[Int(s)].parent
                }
            }
            return nil
        }
    }

    /// The earliest time at which `leaf` could send if nothing else were charged meanwhile: the least,
    /// over the leaf and each ancestor A, of the time when A's rate bucket and the ceil buckets of every
    /// class from the leaf to A are all non-negative.
    func earliestEligible(_ leaf: Int32, now: Int64) -> Int64 {
        var best = Int64.max
        var ceilWait: Int64 = 0
        var s = leaf
        while s != Self.none {
            let n = nodes[Int(s)]
            let d = Int128(min(now - n.checkpoint, Self.mbuffer))
            let ct = n.ctokens + d * Int128(n.ceil)
            if ct < 0 { ceilWait = max(ceilWait, Self.ceilingDivide(-ct, n.ceil)) }
            let t = n.tokens + d * Int128(n.rate)
            let rateWait = t < 0 ? Self.ceilingDivide(-t, n.rate) : 0
            best = min(best, max(ceilWait, rateWait))
            s = n.parent
        }
        return saturatingAdd(now, best)
    }

    /// The grant API: up to `min(bytes, maximumGrant)` bytes for `leaf` now, or nothing; and when not
    /// everything was granted, the time to ask again.
    @usableFromInline
    mutating func request(_ bytes: Int, leaf: Int32, now: Int64) throws(RateLimitError) -> (granted: Int, retry: Int64)
    {
        guard nodes[Int(leaf)].childCount == 0 else { throw .notALeaf(nodes[Int(leaf)].configuration.id) }
        guard bytes > 0 else { return (0, now) }
        doEvents(now: now)
        guard let level = lendingLevel(leaf) else { return (0, earliestEligible(leaf, now: now)) }
        let granted = min(bytes, maximumGrant)
        charge(leaf, level: level, bytes: granted, now: now)
        return (granted, granted == bytes ? now : earliestEligible(leaf, now: now))
    }

    /// Adds scheduler demand to a leaf, activating it when it had none (Linux `htb_activate`).
    @usableFromInline
    mutating func addDemand(_ bytes: Int, leaf: Int32) throws(RateLimitError) {
        guard nodes[Int(leaf)].childCount == 0 else { throw .notALeaf(nodes[Int(leaf)].configuration.id) }
        guard bytes > 0 else { return }
        let i = Int(leaf)
        if nodes[i].demand == 0 {
            nodes[i].demand = bytes
            nodes[i].prioActivity = 1 << UInt8(nodes[i].prio)
            backloggedLeaves += 1
            activatePrios(leaf)
        } else {
            let (sum, overflow) = nodes[i].demand.addingReportingOverflow(bytes)
            nodes[i].demand = overflow ? .max : sum
        }
    }

    /// Takes up to `bytes` of a leaf's demand away (a consumer left or paused); the leaf leaves the
    /// active rows when none is left.
    @usableFromInline
    mutating func removeDemand(_ bytes: Int, leaf: Int32) throws(RateLimitError) {
        guard nodes[Int(leaf)].childCount == 0 else { throw .notALeaf(nodes[Int(leaf)].configuration.id) }
        let i = Int(leaf)
        guard bytes > 0, nodes[i].demand > 0 else { return }
        nodes[i].demand -= min(bytes, nodes[i].demand)
        if nodes[i].demand == 0 {
            deactivatePrios(leaf)
            nodes[i].prioActivity = 0
            backloggedLeaves -= 1
        }
    }

    /// Linux `htb_dequeue`: levels 0…7 in turn (sending on one's own rate first), lower prio first in
    /// each level, then `htb_lookup_leaf` down the feeds following the round-robin pointers; DRR along
    /// the path; the leaf gets `min(demand, maximumGrant, quantum)` bytes, charged at the row's level.
    @usableFromInline
    mutating func dequeue(now: Int64) -> Decision {
        doEvents(now: now)
        if rowMask != 0 {
            let row = rowMask.trailingZeroBitCount
            let level = row >> 3
            let prio = row & 7
            var s = rowPointer(row)
            while nodes[Int(s)].childCount > 0 { s = feedPointer(Int(s) * 8 + prio) }
            let leaf = s
            let bytes = min(nodes[Int(leaf)].demand, maximumGrant, Int(nodes[Int(leaf)].quantum))
            // Deficit round robin at every list on the path (Linux does it in the leaf's list only), so
            // the bytes lent at this level are shared by quantum among the siblings of each class on
            // the path. The pointers were made live above.
            var x = rowHead[row]
            Self.spend(
                &deficit[Int(x) * 16 + 8 + prio], &rowHead[row], links, x, prio * 4 + 2, bytes, nodes[Int(x)].quantum)
            while nodes[Int(x)].childCount > 0 {
                let feed = Int(x) * 8 + prio
                let y = feedHead[feed]
                Self.spend(
                    &deficit[Int(y) * 16 + prio], &feedHead[feed], links, y, prio * 4, bytes, nodes[Int(y)].quantum)
                x = y
            }
            nodes[Int(leaf)].demand -= bytes
            if nodes[Int(leaf)].demand == 0 {
                deactivatePrios(leaf)
                nodes[Int(leaf)].prioActivity = 0
                backloggedLeaves -= 1
            }
            charge(leaf, level: level, bytes: bytes, now: now)
            return .serve(slot: leaf, bytes: bytes)
        }
        if backloggedLeaves == 0 { return .idle }
        return .wait(heap.first?.time ?? saturatingAdd(now, Self.mbuffer))
    }

    /// DRR: `s` (the list's current pointer) spent `bytes`; when its deficit goes negative it gets
    /// enough quanta to be non-negative again and the pointer moves to the next class.
    static func spend(
        _ deficit: inout Int64,
        _ head: inout Int32,
        _ links: ContiguousArray<Int32>,
        _ s: Int32,
        _ offset: Int,
        _ bytes: Int,
        _ quantum: Int64
    ) {
        var d = deficit - Int64(bytes)
        if d < 0 {
            d += ((-d + quantum - 1) / quantum) * quantum
            head = links[Int(s) * 32 + offset]
        }
        deficit = d
    }
}
