#if canImport(Glibc)
    import Glibc
#endif

/// One region of a vhost-user memory table (`VHOST_USER_SET_MEM_TABLE`): where it is in the guest,
/// where it is in the front end's address space, and the file that backs it.
public struct MappedRegionDescriptor: Equatable, Sendable {
    /// Guest-physical address of the region's first byte (`guest_phys_addr`).
    public var guestAddress: UInt64
    /// Length in bytes (`memory_size`).
    public var size: UInt64
    /// The front end's virtual address of the first byte (`userspace_addr`); vhost-user ring
    /// addresses are given in this space.
    public var frontEndAddress: UInt64
    /// Offset of the region's first byte in the file (`mmap_offset`).
    public var mmapOffset: UInt64
    /// The file descriptor passed with the message. The mapping keeps its own reference to the file
    /// (mmap does), so the caller may close the descriptor after the mapping is made.
    public var fileDescriptor: Int32

    /// Describes one region of a memory table.
    public init(guestAddress: UInt64, size: UInt64, frontEndAddress: UInt64, mmapOffset: UInt64, fileDescriptor: Int32)
    {
        self.guestAddress = guestAddress
        self.size = size
        self.frontEndAddress = frontEndAddress
        self.mmapOffset = mmapOffset
        self.fileDescriptor = fileDescriptor
    }
}

/// Guest memory mapped from the file descriptors of a vhost-user memory table.
///
/// Each region is mapped shared, read-write, from file offset 0 through `mmapOffset + size`, and the
/// region starts `mmapOffset` bytes into the mapping (libvhost-user's convention, which keeps the
/// mapping address page-aligned for huge pages). Every size and offset is overflow-checked before
/// `mmap` is called. The mappings are removed when the value is released, so replace a memory table
/// only once no queue uses the old one (a queue notices the new ``mappingID`` and re-translates).
public final class MappedGuestMemory: GuestMemory, @unchecked Sendable {
    // @unchecked Sendable: immutable after init; the mapped bytes are shared with the guest by design.

    /// This mapping's unique ID.
    public let mappingID: UInt64
    @usableFromInline
    let table: GuestRegionTable
    private let mappings: [(base: UnsafeMutableRawPointer, length: Int)]
    private let frontEnd: [(start: UInt64, size: UInt64, guestAddress: UInt64)]

    /// Maps every region of a memory table, or none: on any failure the regions mapped so far are
    /// unmapped and the error names the region.
    public init(regions descriptors: [MappedRegionDescriptor]) throws(GuestMemoryError) {
        var mappings: [(base: UnsafeMutableRawPointer, length: Int)] = []
        var regions: [GuestRegion] = []
        do throws(GuestMemoryError) {
            for (index, descriptor) in descriptors.enumerated() {
                guard descriptor.size > 0 else {
                    throw GuestMemoryError.emptyRegion(guestAddress: descriptor.guestAddress)
                }
                let (total, overflow) = descriptor.size.addingReportingOverflow(descriptor.mmapOffset)
                guard !overflow, total <= UInt64(Int.max),
                    descriptor.frontEndAddress <= UInt64.max - (descriptor.size - 1)
                else {
                    throw GuestMemoryError.rangeOverflow(address: descriptor.guestAddress, length: descriptor.size)
                }
                let length = Int(total)
                let base = mmap(
                    nil, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, descriptor.fileDescriptor, 0)
                guard let base, base != UnsafeMutableRawPointer(bitPattern: -1) else {
                    throw GuestMemoryError.mapFailed(index: index, errno: errno)
                }
                mappings.append((base, length))
                regions.append(
                    try GuestRegion(
                        guestAddress: descriptor.guestAddress,
                        size: descriptor.size,
                        hostAddress: base.advanced(by: Int(descriptor.mmapOffset))
                    )
                )
            }
            table = try GuestRegionTable(regions)
        } catch {
            for mapping in mappings { munmap(mapping.base, mapping.length) }
            throw error
        }
        self.mappings = mappings
        frontEnd = descriptors.map { ($0.frontEndAddress, $0.size, $0.guestAddress) }
        mappingID = GuestMemoryMappingID.next()
    }

    deinit {
        for mapping in mappings { munmap(mapping.base, mapping.length) }
        table.deallocate()
    }

    /// The regions, sorted by guest address.
    public var regions: [GuestRegion] { table.regions }

    /// The region that contains `address`, or `nil` if no region does.
    @inlinable
    public func region(containing address: UInt64) -> GuestRegion? {
        table.region(containing: address)
    }

    /// Translates a front-end virtual address (as vhost-user `SET_VRING_ADDR` gives ring addresses) to
    /// a guest-physical address, or `nil` if no region holds it.
    public func guestAddress(forFrontEndAddress address: UInt64) -> UInt64? {
        for region in frontEnd where address &- region.start < region.size {
            return region.guestAddress + (address - region.start)
        }
        return nil
    }
}
