/// A validated, sorted set of non-overlapping guest regions with fast lookup.
///
/// Shared by the in-process and the mmap'd memory so that the lookup and the validation are written
/// once. Lookups check the first region before searching: a typical guest has one large region (or a
/// few), and the descriptor rings of a virtio queue all sit in the first one.
@usableFromInline
struct GuestRegionTable {
    /// The regions, sorted by guest address.
    let regions: [GuestRegion]
    /// The same regions in storage that lookups read without reference counting; owned by the memory
    /// object that owns this table, which calls ``deallocate()``.
    @usableFromInline
    let table: UnsafeMutableBufferPointer<GuestRegion>

    /// Sorts and validates regions: at least one, none empty (checked by `GuestRegion`), no overlap.
    init(_ unsorted: [GuestRegion]) throws(GuestMemoryError) {
        guard !unsorted.isEmpty else { throw .noRegions }
        let sorted = unsorted.sorted { $0.guestAddress < $1.guestAddress }
        for (previous, next) in zip(sorted, sorted.dropFirst()) {
            // previous.guestEnd == nil means previous reaches 2^64, so anything after it overlaps.
            guard let end = previous.guestEnd, end <= next.guestAddress else {
                throw .overlappingRegions(first: previous.guestAddress, second: next.guestAddress)
            }
        }
        regions = sorted
        table = .allocate(capacity: sorted.count)
        _ = table.initialize(from: sorted)
    }

    /// Frees the lookup storage; called once by the owning memory object's deinit.
    func deallocate() {
        table.deallocate()
    }

    @inlinable
    func region(containing address: UInt64) -> GuestRegion? {
        let first = table[0]  // never empty: init refuses an empty table
        if first.contains(address) { return first }
        // Binary search for the last region starting at or below `address`.
        var low = 0
        var high = table.count
        while low < high {
            let middle = (low + high) / 2
            if table[middle].guestAddress <= address { low = middle + 1 } else { high = middle }
        }
        guard low > 0, table[low - 1].contains(address) else { return nil }
        return table[low - 1]
    }
}
