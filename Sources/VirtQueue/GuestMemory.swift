import Synchronization

/// One contiguous piece of guest-physical memory and where it lives in this process.
///
/// A region is validated when it is made: it is not empty and `guestAddress + size` does not overflow,
/// so `guestAddress ... guestAddress + size - 1` is always a well-formed range.
public struct GuestRegion: Equatable {
    /// The guest-physical address of the region's first byte.
    public let guestAddress: UInt64
    /// The region's length in bytes (at least 1).
    public let size: UInt64
    /// Where the region's first byte is mapped in this process.
    public let hostAddress: UnsafeMutableRawPointer

    /// Makes a region, refusing an empty one or one whose end overflows the 64-bit address space.
    public init(guestAddress: UInt64, size: UInt64, hostAddress: UnsafeMutableRawPointer) throws(GuestMemoryError) {
        guard size > 0 else { throw .emptyRegion(guestAddress: guestAddress) }
        // The last byte is guestAddress + size - 1; that must fit in 64 bits.
        guard guestAddress <= UInt64.max - (size - 1) else {
            throw .rangeOverflow(address: guestAddress, length: size)
        }
        // The host range must fit too (Int(size) would trap on a size above Int.max).
        guard size <= UInt64(Int.max) else { throw .rangeOverflow(address: guestAddress, length: size) }
        self.guestAddress = guestAddress
        self.size = size
        self.hostAddress = hostAddress
    }

    /// Whether `address` lies in the region. Written as one wrapping subtraction: an address below
    /// `guestAddress` wraps to a value of at least `2^64 - guestAddress`, which is never below `size`.
    @inlinable
    public func contains(_ address: UInt64) -> Bool {
        address &- guestAddress < size
    }

    /// The guest address one past the region's last byte, or `nil` when the region ends at `2^64`.
    @inlinable
    public var guestEnd: UInt64? {
        let (end, overflow) = guestAddress.addingReportingOverflow(size)
        return overflow ? nil : end
    }
}

/// Errors from guest-memory construction and translation. Each case names the range at fault.
public enum GuestMemoryError: Error, Equatable, Sendable {
    /// Some byte of `address ..< address + length` is in no region.
    case unmapped(address: UInt64, length: UInt64)
    /// The range is mapped, but only across a region boundary, where a contiguous range was required.
    case notContiguous(address: UInt64, length: UInt64)
    /// `address + length` exceeds the 64-bit address space.
    case rangeOverflow(address: UInt64, length: UInt64)
    /// A region of size zero was given.
    case emptyRegion(guestAddress: UInt64)
    /// Two regions overlap in guest-physical space.
    case overlappingRegions(first: UInt64, second: UInt64)
    /// No regions were given.
    case noRegions
    /// `mmap(2)` of region `index` failed with `errno`.
    case mapFailed(index: Int, errno: Int32)
}

/// Guest-physical memory made of regions, as a device sees it.
///
/// A conforming type answers one question, which region holds an address; bounds-checked,
/// overflow-safe translation of whole ranges is built on that in an extension, so no implementation
/// can get it wrong. A range that crosses a region boundary is refused by ``hostPointer(at:length:)``
/// and split by ``withHostBuffers(at:length:_:)``; neither ever yields a byte outside the regions.
///
/// Implementations are immutable: a new memory table (vhost-user `SET_MEM_TABLE`) is a new value
/// with a new ``mappingID``, which tells queues that cached ring pointers must be translated again.
/// Use the type generically (`some GuestMemory`), never as an existential, so calls specialise.
public protocol GuestMemory {
    /// Identifies this mapping. Two values with the same ID translate every address identically.
    /// Allocate one with ``GuestMemoryMappingID/next()``.
    var mappingID: UInt64 { get }

    /// The region that contains `address`, or `nil` if no region does.
    func region(containing address: UInt64) -> GuestRegion?
}

/// A source of process-unique IDs for ``GuestMemory/mappingID``.
public enum GuestMemoryMappingID {
    private static let counter = Atomic<UInt64>(1)

    /// Returns an ID no other mapping in this process has had.
    public static func next() -> UInt64 {
        counter.wrappingAdd(1, ordering: .relaxed).oldValue
    }
}

extension GuestMemory {
    /// Translates a range that must lie inside a single region to its host address.
    ///
    /// Overflow-safe: the check is `length <= region.size - offset`, where `offset < region.size`.
    @inlinable
    public func hostPointer(at address: UInt64, length: UInt64) throws(GuestMemoryError) -> UnsafeMutableRawPointer {
        if let region = region(containing: address) {
            let offset = address &- region.guestAddress  // < region.size: `contains` held
            if length <= region.size &- offset {
                return region.hostAddress.advanced(by: Int(truncatingIfNeeded: offset))
            }
        }
        throw translationFailure(address: address, length: length)
    }

    /// Explains why `address ..< address + length` is not one contiguous mapped range.
    @usableFromInline
    func translationFailure(address: UInt64, length: UInt64) -> GuestMemoryError {
        do {
            try validateRange(at: address, length: length)
            return .notContiguous(address: address, length: length)
        } catch {
            return error
        }
    }

    /// Checks that every byte of `address ..< address + length` is mapped, possibly across several
    /// adjacent regions. A zero-length range is valid when `address` is mapped.
    public func validateRange(at address: UInt64, length: UInt64) throws(GuestMemoryError) {
        guard length == 0 || address <= UInt64.max - (length - 1) else {
            throw .rangeOverflow(address: address, length: length)
        }
        var cursor = address
        var remaining = length
        repeat {
            guard let region = region(containing: cursor) else { throw .unmapped(address: address, length: length) }
            let available = region.size - (cursor - region.guestAddress)
            if remaining <= available { return }
            remaining -= available
            cursor += available  // cannot overflow: the range's last byte fits in 64 bits
        } while true
    }

    /// Calls `body` with the host buffers that make up `address ..< address + length`, in order, one
    /// per region crossed. The whole range is validated before `body` sees any part of it.
    public func withHostBuffers(
        at address: UInt64,
        length: UInt64,
        _ body: (UnsafeMutableRawBufferPointer) -> Void
    ) throws(GuestMemoryError) {
        try validateRange(at: address, length: length)
        var cursor = address
        var remaining = length
        while remaining > 0 {
            // validateRange proved every byte is mapped.
            guard let region = region(containing: cursor) else { preconditionFailure("validated range unmapped") }
            let offset = cursor - region.guestAddress
            let chunk = min(remaining, region.size - offset)
            body(
                UnsafeMutableRawBufferPointer(
                    start: region.hostAddress.advanced(by: Int(offset)),
                    count: Int(chunk)
                )
            )
            remaining -= chunk
            cursor &+= chunk
        }
    }

    /// Copies `bytes` into guest memory at `address`, across regions if needed. Nothing is written
    /// unless the whole destination is mapped.
    public func write(_ bytes: UnsafeRawBufferPointer, at address: UInt64) throws(GuestMemoryError) {
        var copied = 0
        try withHostBuffers(at: address, length: UInt64(bytes.count)) { buffer in
            buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[copied..<copied + buffer.count]))
            copied += buffer.count
        }
    }

    /// Copies `buffer.count` bytes of guest memory at `address` into `buffer`, across regions if needed.
    public func read(into buffer: UnsafeMutableRawBufferPointer, from address: UInt64) throws(GuestMemoryError) {
        var copied = 0
        try withHostBuffers(at: address, length: UInt64(buffer.count)) { source in
            UnsafeMutableRawBufferPointer(rebasing: buffer[copied..<copied + source.count])
                .copyMemory(from: UnsafeRawBufferPointer(source))
            copied += source.count
        }
    }

    /// Reads a little-endian integer stored at `address` (which must not cross a region boundary).
    @inlinable
    public func load<T: FixedWidthInteger>(littleEndian type: T.Type, at address: UInt64) throws(GuestMemoryError) -> T
    {
        let pointer = try hostPointer(at: address, length: UInt64(MemoryLayout<T>.size))
        return T(littleEndian: pointer.loadUnaligned(as: T.self))
    }

    /// Stores `value` little-endian at `address` (which must not cross a region boundary).
    @inlinable
    public func store<T: FixedWidthInteger>(littleEndian value: T, at address: UInt64) throws(GuestMemoryError) {
        let pointer = try hostPointer(at: address, length: UInt64(MemoryLayout<T>.size))
        pointer.storeBytes(of: value.littleEndian, as: T.self)
    }
}
