// Public because @inlinable hot paths call its static inline functions; it is our own C target,
// built for any package that depends on VirtQueue.
public import CVirtQueueAtomics

/// One element of the used ring: the head of a chain the device is done with, and how many bytes it
/// wrote into the chain's device-writable buffers.
public struct UsedElement: Hashable, Sendable {
    /// The head descriptor index of the returned chain.
    public var head: UInt16
    /// Bytes written into the chain's writable buffers.
    public var length: UInt32

    /// Makes a used element.
    public init(head: UInt16, length: UInt32) {
        self.head = head
        self.length = length
    }
}

extension SplitQueue {
    // MARK: Used ring

    /// Returns `chain` to the driver reporting `written` bytes, checked against the chain's writable
    /// length, and publishes it at once.
    @inlinable
    public mutating func addUsed<Memory: GuestMemory>(
        _ chain: DescriptorChain,
        written: UInt32,
        memory: Memory
    ) throws(VirtQueueError) {
        guard UInt64(written) <= chain.writableLength else {
            throw .usedLengthExceedsWritable(head: chain.head, length: written, writable: chain.writableLength)
        }
        try addUsed(UsedElement(head: chain.head, length: written), memory: memory)
    }

    /// Writes one used element and publishes it (release store of `used.idx`).
    @inlinable
    public mutating func addUsed<Memory: GuestMemory>(
        _ element: UsedElement,
        memory: Memory
    ) throws(VirtQueueError) {
        let rings = try ringsForAccess(memory)
        try writeUsed(element, rings: rings)
        publishUsed(rings)
    }

    /// Writes several used elements and publishes them together with one release store of `used.idx`.
    /// If an element is invalid, none of them is published.
    @inlinable
    public mutating func addUsed<Memory: GuestMemory, Elements: Sequence<UsedElement>>(
        contentsOf elements: Elements,
        memory: Memory
    ) throws(VirtQueueError) {
        let rings = try ringsForAccess(memory)
        let start = nextUsed
        let startCount = usedSinceNotificationCheck
        for element in elements {
            do {
                try writeUsed(element, rings: rings)
            } catch {
                // Nothing was published: roll the device-side index back.
                storedNextUsed = start
                usedSinceNotificationCheck = startCount
                throw error
            }
        }
        publishUsed(rings)
    }

    /// Writes the element at `nextUsed` (id, then len; both before the index is published) and advances
    /// the device's index without publishing it.
    @inlinable
    @inline(__always)
    mutating func writeUsed(_ element: UsedElement, rings: RingPointers) throws(VirtQueueError) {
        let size = configuration.size
        guard element.head < size else { throw .usedHeadOutOfRange(head: element.head, queueSize: size) }
        let slot = rings.used + 4 + 8 * Int(nextUsed & (size &- 1))
        slot.storeBytes(of: UInt32(element.head).littleEndian, as: UInt32.self)
        slot.storeBytes(of: element.length.littleEndian, toByteOffset: 4, as: UInt32.self)
        storedNextUsed &+= 1
        if usedSinceNotificationCheck <= UInt32(UInt16.max) { usedSinceNotificationCheck += 1 }
    }

    @inlinable
    @inline(__always)
    func publishUsed(_ rings: RingPointers) {
        virtq_store_release_u16(rings.used + 2, nextUsed.littleEndian)
    }

    // MARK: Notifications

    /// Whether the device must notify the driver (interrupt, call eventfd) for the used elements added
    /// since the last call. Call after publishing.
    ///
    /// Without EVENT_IDX: notify unless the driver set `VIRTQ_AVAIL_F_NO_INTERRUPT` (2.7.7.2). With
    /// EVENT_IDX: notify iff the used index passed `used_event` during the batch, by
    /// ``needsEvent(eventIndex:newIndex:oldIndex:)``; a batch of 2^16 or more always notifies.
    @inlinable
    public mutating func needsNotification<Memory: GuestMemory>(memory: Memory) throws(VirtQueueError) -> Bool {
        let rings = try ringsForAccess(memory)
        let added = usedSinceNotificationCheck
        usedSinceNotificationCheck = 0
        guard added > 0 else { return false }
        // Order the release store of used.idx before the load of the driver's field (store → load).
        virtq_fence_seq_cst()
        if eventIndexNegotiated {
            guard added <= UInt32(UInt16.max) else { return true }
            // used_event sits after the available ring's `size` entries: offset 4 + 2·size.
            let usedEvent = UInt16(
                littleEndian: virtq_load_relaxed_u16(rings.available + 4 + 2 * Int(configuration.size)))
            return Self.needsEvent(eventIndex: usedEvent, newIndex: nextUsed, oldIndex: nextUsed &- UInt16(added))
        }
        let flags = UInt16(littleEndian: virtq_load_relaxed_u16(rings.available))
        return flags & 1 == 0  // VIRTQ_AVAIL_F_NO_INTERRUPT
    }

    /// The spec's `vring_need_event`: whether moving an index from `oldIndex` to `newIndex` passed
    /// `eventIndex`, i.e. `(u16)(new - event - 1) < (u16)(new - old)` (virtio 1.2, 2.7.10).
    @inlinable
    public static func needsEvent(eventIndex: UInt16, newIndex: UInt16, oldIndex: UInt16) -> Bool {
        newIndex &- eventIndex &- 1 < newIndex &- oldIndex
    }

    /// Asks the driver not to kick for new buffers while the device is processing: sets
    /// `VIRTQ_USED_F_NO_NOTIFY` without EVENT_IDX; with EVENT_IDX stops advancing `avail_event`, so the
    /// driver stops kicking once it passes the last value written.
    @inlinable
    public mutating func disableNotifications<Memory: GuestMemory>(memory: Memory) throws(VirtQueueError) {
        let rings = try ringsForAccess(memory)
        notificationsEnabled = false
        if !eventIndexNegotiated {
            virtq_store_relaxed_u16(rings.used, UInt16(1).littleEndian)  // VIRTQ_USED_F_NO_NOTIFY
        }
    }

    /// Asks the driver to kick again, then reports whether buffers arrived meanwhile.
    ///
    /// Writes `used.flags = 0` (without EVENT_IDX) or `avail_event = nextAvail` (with it), issues a full
    /// fence, and re-reads `avail.idx`. A `true` result means more chains are available that no kick
    /// will announce: keep processing. Looping disable → process → enable until this returns `false`
    /// loses no kick.
    @inlinable
    public mutating func enableNotifications<Memory: GuestMemory>(memory: Memory) throws(VirtQueueError) -> Bool {
        let rings = try ringsForAccess(memory)
        notificationsEnabled = true
        if eventIndexNegotiated {
            virtq_store_relaxed_u16(rings.used + 4 + 8 * Int(configuration.size), nextAvail.littleEndian)
        } else {
            virtq_store_relaxed_u16(rings.used, 0)
        }
        virtq_fence_seq_cst()
        return try pendingCount(rings) > 0
    }

    /// Reads `used.idx` from the ring into ``nextUsed`` on a stopped queue, for resuming a device whose
    /// used index lives only in guest memory (vhost-user passes only the avail index).
    public mutating func loadNextUsedFromRing<Memory: GuestMemory>(memory: Memory) throws(VirtQueueError) {
        guard !isReady else { throw .changeWhileReady }
        let rings = try RingPointers(configuration: configuration, memory: memory)
        storedNextUsed = UInt16(littleEndian: virtq_load_acquire_u16(rings.used + 2))
    }
}
