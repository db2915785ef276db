/// Guest memory backed by buffers this process owns: for tests, fuzzing, benchmarks and simulated
/// guests.
///
/// Each region is a separate page-aligned, zero-filled allocation, so a range that crosses from one
/// region into the next really is discontiguous on the host, as it can be under a real hypervisor, and
/// AddressSanitizer sees any read past a region's end.
public final class BufferGuestMemory: GuestMemory, @unchecked Sendable {
    // @unchecked Sendable: every stored property is immutable after init; the bytes behind the regions
    // are shared with the (simulated) guest by design and are accessed only through bounds-checked
    // translation, exactly as real guest memory is.

    /// This mapping's unique ID.
    public let mappingID: UInt64
    @usableFromInline
    let table: GuestRegionTable

    /// Allocates one zero-filled region per `(guestAddress, size)`. Regions may be adjacent but must
    /// not overlap.
    public init(regions layout: [(guestAddress: UInt64, size: Int)]) throws(GuestMemoryError) {
        var regions: [GuestRegion] = []
        do throws(GuestMemoryError) {
            for (guestAddress, size) in layout {
                guard size > 0 else { throw GuestMemoryError.emptyRegion(guestAddress: guestAddress) }
                let host = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 4096)
                host.initializeMemory(as: UInt8.self, repeating: 0, count: size)
                do {
                    regions.append(try GuestRegion(guestAddress: guestAddress, size: UInt64(size), hostAddress: host))
                } catch {
                    host.deallocate()
                    throw error
                }
            }
            table = try GuestRegionTable(regions)
        } catch {
            for region in regions { region.hostAddress.deallocate() }
            throw error
        }
        mappingID = GuestMemoryMappingID.next()
    }

    /// Allocates a single zero-filled region of `size` bytes at `guestAddress`.
    public convenience init(size: Int, at guestAddress: UInt64 = 0) throws(GuestMemoryError) {
        try self.init(regions: [(guestAddress: guestAddress, size: size)])
    }

    deinit {
        for region in table.regions { region.hostAddress.deallocate() }
        table.deallocate()
    }

    /// The regions, sorted by guest address.
    public var regions: [GuestRegion] { table.regions }

    /// The region that contains `address`, or `nil` if no region does.
    @inlinable
    public func region(containing address: UInt64) -> GuestRegion? {
        table.region(containing: address)
    }
}
