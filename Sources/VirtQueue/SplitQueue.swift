// Public because @inlinable hot paths call its static inline functions; it is our own C target,
// built for any package that depends on VirtQueue.
public import CVirtQueueAtomics

/// The device side of a virtio split virtqueue (virtio 1.2, 2.7) over any ``GuestMemory``.
///
/// The queue is state (configuration, indices, cached ring addresses); guest memory is a parameter of
/// every call, so one type serves tests, fuzzers, benchmarks and vhost-user backends alike. Everything
/// read from the guest is untrusted: each index, length, flag and address is validated before use, and
/// a malformed ring puts the queue into a failed state (see ``VirtQueueError``) instead of crashing or
/// touching memory outside the guest's regions.
///
/// A device loop looks like this:
///
/// ```swift
/// let chain = DescriptorChain()
/// repeat {
///     try queue.disableNotifications(memory: memory)
///     while try queue.popChain(into: chain, memory: memory) {
///         let written = chain.fillWritable { buffer in fill(buffer) }
///         try queue.addUsed(chain, written: UInt32(written), memory: memory)
///     }
/// } while try queue.enableNotifications(memory: memory)
/// if try queue.needsNotification(memory: memory) { signalGuest() }
/// ```
///
/// ## Memory ordering
///
/// The guest driver runs on another CPU and writes the available ring while the device reads it. The
/// queue pairs its accesses with the driver's barriers as virtio 1.2, 2.7.13 and 2.7.10 require:
/// - `avail.idx` is loaded with *acquire* ordering, so the ring entries and descriptors the driver
///   wrote before its release store of `avail.idx` are visible before the queue reads them.
/// - Each descriptor is read once into a local copy and validated there, so a guest that rewrites a
///   descriptor concurrently can only make its own chain invalid, never make the device act on a
///   value it did not check.
/// - Used elements (`id`, `len`) are written with plain stores and `used.idx` is published with a
///   *release* store, so a driver that acquires `used.idx` sees the elements and the bytes written
///   into its buffers.
/// - Deciding whether to notify (``needsNotification(memory:)``) and re-enabling notifications
///   (``enableNotifications(memory:)``) each store, then read a field the driver writes; a full
///   (sequentially consistent) fence separates them, since acquire/release does not order a store
///   before a later load. Without it a kick or an interrupt can be lost.
///
/// The fields are little-endian (`VIRTIO_F_VERSION_1`); a legacy guest on a little-endian host uses the
/// same byte order.
public struct SplitQueue {
    /// The configuration in force.
    public private(set) var configuration: QueueConfiguration
    /// Index into the available ring of the next chain to pop (free-running, wraps at 65536).
    @inlinable public var nextAvail: UInt16 { storedNextAvail }
    /// Index into the used ring of the next element to add (free-running, wraps at 65536).
    @inlinable public var nextUsed: UInt16 { storedNextUsed }
    @usableFromInline var storedNextAvail: UInt16 = 0
    @usableFromInline var storedNextUsed: UInt16 = 0
    /// Whether the queue has been activated and may process the rings.
    public private(set) var isReady = false
    /// The guest error that stopped the queue, if any; cleared by ``reset()``.
    public private(set) var failure: VirtQueueError?

    @usableFromInline
    var rings: RingPointers?
    /// The walk rules and EVENT_IDX, cached from `configuration` when the queue is activated.
    @usableFromInline
    var walker: ChainWalker
    @usableFromInline
    var eventIndexNegotiated = false
    @usableFromInline
    var cachedMappingID: UInt64 = 0
    /// Whether the device currently wants available-buffer notifications (kicks).
    @usableFromInline
    var notificationsEnabled = true
    /// Used elements added since the last ``needsNotification(memory:)``, saturating above 2^16.
    @usableFromInline
    var usedSinceNotificationCheck: UInt32 = 0

    /// Makes a stopped queue with `configuration`; nothing is checked until ``activate(memory:)``.
    public init(configuration: QueueConfiguration) {
        self.configuration = configuration
        walker = ChainWalker(configuration)
    }

    /// The queue size (number of descriptors).
    @inlinable
    public var size: UInt16 { configuration.size }

    // MARK: Lifecycle

    /// Replaces the configuration of a stopped queue (vhost-user `SET_VRING_NUM`, `SET_VRING_ADDR`,
    /// `SET_FEATURES`).
    public mutating func configure(_ configuration: QueueConfiguration) throws(VirtQueueError) {
        guard !isReady else { throw .changeWhileReady }
        self.configuration = configuration
    }

    /// Sets the indices of a stopped queue, e.g. to resume from `SET_VRING_BASE` or a saved state.
    public mutating func setIndices(nextAvail: UInt16, nextUsed: UInt16) throws(VirtQueueError) {
        guard !isReady else { throw .changeWhileReady }
        storedNextAvail = nextAvail
        storedNextUsed = nextUsed
    }

    /// Validates the configuration, translates the three ring areas in `memory` and starts the queue.
    ///
    /// Errors leave the queue stopped (not failed): they describe a configuration, not a ring.
    public mutating func activate<Memory: GuestMemory>(memory: Memory) throws(VirtQueueError) {
        if let failure { throw .needsReset(failure) }
        try configuration.validate()
        rings = try RingPointers(configuration: configuration, memory: memory)
        walker = ChainWalker(configuration)
        eventIndexNegotiated = configuration.features.contains(.eventIndex)
        cachedMappingID = memory.mappingID
        usedSinceNotificationCheck = 0
        isReady = true
    }

    /// Stops the queue (vhost-user `GET_VRING_BASE`), keeping configuration and indices so that it can
    /// be resumed.
    public mutating func deactivate() {
        isReady = false
        rings = nil
    }

    /// Returns the queue to its initial state: stopped, indices zero, notifications enabled, any failure
    /// cleared. The configuration is kept; activate again to resume.
    public mutating func reset() {
        deactivate()
        failure = nil
        storedNextAvail = 0
        storedNextUsed = 0
        notificationsEnabled = true
        usedSinceNotificationCheck = 0
    }

    // MARK: Shared machinery

    /// The ring pointers for an access through `memory`: the cached ones when the queue is ready and the
    /// memory is the mapping they were translated in; otherwise the slow path re-translates or throws.
    @inlinable
    @inline(__always)
    mutating func ringsForAccess<Memory: GuestMemory>(_ memory: Memory) throws(VirtQueueError) -> RingPointers {
        if let rings, memory.mappingID == cachedMappingID { return rings }
        return try retranslateRings(memory)
    }

    @usableFromInline
    mutating func retranslateRings<Memory: GuestMemory>(_ memory: Memory) throws(VirtQueueError) -> RingPointers {
        if let failure { throw .needsReset(failure) }
        guard isReady else { throw .notReady }
        do {
            let translated = try RingPointers(configuration: configuration, memory: memory)
            rings = translated
            cachedMappingID = memory.mappingID
            return translated
        } catch {
            throw fail(error)
        }
    }

    /// Records a guest error and stops the queue; returns the error for the caller to throw.
    @usableFromInline
    mutating func fail(_ error: VirtQueueError) -> VirtQueueError {
        if failure == nil { failure = error }
        isReady = false
        rings = nil
        return error
    }

    /// Number of chains the driver has made available and the device has not popped, validated:
    /// more than a queue's worth fails the queue with ``VirtQueueError/availIndexJump(availIndex:nextAvail:queueSize:)``.
    @inlinable
    public mutating func availableCount<Memory: GuestMemory>(memory: Memory) throws(VirtQueueError) -> UInt16 {
        let rings = try ringsForAccess(memory)
        return try pendingCount(rings)
    }

    @inlinable
    @inline(__always)
    mutating func pendingCount(_ rings: RingPointers) throws(VirtQueueError) -> UInt16 {
        let availIndex = UInt16(littleEndian: virtq_load_acquire_u16(rings.available + 2))
        let pending = availIndex &- nextAvail
        guard pending <= configuration.size else {
            throw fail(.availIndexJump(availIndex: availIndex, nextAvail: nextAvail, queueSize: configuration.size))
        }
        return pending
    }
}

/// Host addresses of the three ring areas, translated once per memory mapping.
@usableFromInline
struct RingPointers {
    @usableFromInline let descriptors: UnsafeMutableRawPointer
    @usableFromInline let available: UnsafeMutableRawPointer
    @usableFromInline let used: UnsafeMutableRawPointer

    @usableFromInline
    init<Memory: GuestMemory>(configuration: QueueConfiguration, memory: Memory) throws(VirtQueueError) {
        func translate(_ area: RingArea, _ address: UInt64, _ length: UInt64) throws(VirtQueueError)
            -> UnsafeMutableRawPointer
        {
            do {
                return try memory.hostPointer(at: address, length: length)
            } catch {
                throw .ringNotInMemory(area, address: address, length: length)
            }
        }
        descriptors = try translate(
            .descriptorTable, configuration.descriptorTableAddress, configuration.descriptorTableLength)
        available = try translate(
            .availableRing, configuration.availableRingAddress, configuration.availableRingLength)
        used = try translate(.usedRing, configuration.usedRingAddress, configuration.usedRingLength)
    }
}
