/// What a device does with a zero-length buffer descriptor.
public enum ZeroLengthDescriptorPolicy: Hashable, Sendable {
    /// Reject the chain with ``VirtQueueError/zeroLengthDescriptor(_:)``, as QEMU does ("zero sized
    /// buffers are not allowed").
    case reject
    /// Accept the descriptor and contribute no segment, as Linux vhost and rust-vmm do.
    case skip
}

/// A split queue's configuration as the driver (or a vhost-user front end) sets it.
///
/// Ring addresses are guest-physical. Sizes of the three areas follow virtio 1.2, 2.7: the descriptor
/// table is `16·size` bytes, the available ring `6 + 2·size`, the used ring `6 + 8·size` (each includes
/// the EVENT_IDX field, which the spec counts whether or not the feature is negotiated).
public struct QueueConfiguration: Hashable, Sendable {
    /// The largest split queue the spec allows.
    public static let maximumSize: UInt16 = 32768

    /// Number of descriptors: a power of two in 1...32768.
    public var size: UInt16
    /// Guest address of the descriptor table (16-byte aligned).
    public var descriptorTableAddress: UInt64
    /// Guest address of the available ring (2-byte aligned).
    public var availableRingAddress: UInt64
    /// Guest address of the used ring (4-byte aligned).
    public var usedRingAddress: UInt64
    /// The negotiated features; the queue acts on INDIRECT_DESC and EVENT_IDX.
    public var features: VirtioFeatures
    /// What to do with zero-length buffer descriptors.
    public var zeroLengthDescriptors: ZeroLengthDescriptorPolicy

    /// Makes a configuration; call ``validate()`` (or activate a queue) to check it.
    public init(
        size: UInt16,
        descriptorTableAddress: UInt64,
        availableRingAddress: UInt64,
        usedRingAddress: UInt64,
        features: VirtioFeatures = [.version1],
        zeroLengthDescriptors: ZeroLengthDescriptorPolicy = .reject
    ) {
        self.size = size
        self.descriptorTableAddress = descriptorTableAddress
        self.availableRingAddress = availableRingAddress
        self.usedRingAddress = usedRingAddress
        self.features = features
        self.zeroLengthDescriptors = zeroLengthDescriptors
    }

    /// Bytes of the descriptor table: `16·size`.
    public var descriptorTableLength: UInt64 { 16 * UInt64(size) }
    /// Bytes of the available ring: `6 + 2·size` (flags, idx, ring, used_event).
    public var availableRingLength: UInt64 { 6 + 2 * UInt64(size) }
    /// Bytes of the used ring: `6 + 8·size` (flags, idx, ring, avail_event).
    public var usedRingLength: UInt64 { 6 + 8 * UInt64(size) }

    /// Checks the size and the alignments of virtio 1.2, 2.7, and that packed rings are not asked for.
    public func validate() throws(VirtQueueError) {
        guard size > 0, size <= Self.maximumSize, size & (size - 1) == 0 else {
            throw .invalidQueueSize(UInt32(size))
        }
        guard !features.contains(.ringPacked) else { throw .packedRingNotSupported }
        for (area, address, alignment) in [
            (RingArea.descriptorTable, descriptorTableAddress, UInt64(16)),
            (.availableRing, availableRingAddress, 2),
            (.usedRing, usedRingAddress, 4),
        ] where address % alignment != 0 {
            throw .misalignedRing(area, address: address, requiredAlignment: alignment)
        }
    }
}
