/// Virtio feature bits that change how a split queue behaves (virtio 1.2, 6 "Reserved Feature Bits").
///
/// The constants are inlinable computed properties, so a check such as `features.contains(.eventIndex)`
/// folds to a bit test in client code.
public struct VirtioFeatures: OptionSet, Hashable, Sendable {
    /// The raw 64-bit feature word.
    public let rawValue: UInt64

    /// Makes a feature set from a raw feature word.
    @inlinable
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// `VIRTIO_F_NOTIFY_ON_EMPTY` (bit 24, legacy only). Recorded; a split queue does not act on it.
    @inlinable public static var notifyOnEmpty: VirtioFeatures { VirtioFeatures(rawValue: 1 << 24) }
    /// `VIRTIO_F_INDIRECT_DESC` (bit 28): descriptors may point to indirect tables.
    @inlinable public static var indirectDescriptors: VirtioFeatures { VirtioFeatures(rawValue: 1 << 28) }
    /// `VIRTIO_F_EVENT_IDX` (bit 29): `used_event` / `avail_event` replace the ring flags.
    @inlinable public static var eventIndex: VirtioFeatures { VirtioFeatures(rawValue: 1 << 29) }
    /// `VIRTIO_F_VERSION_1` (bit 32): a modern device; ring fields are little-endian.
    @inlinable public static var version1: VirtioFeatures { VirtioFeatures(rawValue: 1 << 32) }
    /// `VIRTIO_F_RING_PACKED` (bit 34): packed rings, which this split queue does not implement.
    @inlinable public static var ringPacked: VirtioFeatures { VirtioFeatures(rawValue: 1 << 34) }
}
