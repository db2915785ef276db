import Glibc
import Testing
import VirtQueue

@Suite struct GuestMemoryTests {
    /// Two adjacent regions [0x1000, 0x2000) and [0x2000, 0x3000), and one apart at [0x8000, 0x9000).
    let memory = try! BufferGuestMemory(regions: [
        (guestAddress: 0x1000, size: 0x1000), (guestAddress: 0x2000, size: 0x1000),
        (guestAddress: 0x8000, size: 0x1000),
    ])

    @Test func translatesARangeInsideOneRegion() throws {
        let pointer = try memory.hostPointer(at: 0x1010, length: 16)
        #expect(pointer == memory.regions[0].hostAddress + 0x10)
        let last = try memory.hostPointer(at: 0x8FFF, length: 1)
        #expect(last == memory.regions[2].hostAddress + 0xFFF)
    }

    static let outsideOneRegion: [(UInt64, UInt64, GuestMemoryError)] = [
        (0x0FFF, 1, .unmapped(address: 0x0FFF, length: 1)),
        (0x3000, 1, .unmapped(address: 0x3000, length: 1)),
        (0x8FFF, 2, .unmapped(address: 0x8FFF, length: 2)),
        (0x1FF0, 0x20, .notContiguous(address: 0x1FF0, length: 0x20)),
        (0x2FF0, 0x20, .unmapped(address: 0x2FF0, length: 0x20)),
        (0x1000, UInt64.max, .rangeOverflow(address: 0x1000, length: .max)),
        (UInt64.max, 2, .rangeOverflow(address: .max, length: 2)),
    ]

    @Test(arguments: outsideOneRegion)
    func refusesRangesOutsideOneRegion(address: UInt64, length: UInt64, expected: GuestMemoryError) {
        #expect(throws: expected) { try memory.hostPointer(at: address, length: length) }
    }

    @Test func splitsARangeAcrossAdjacentRegions() throws {
        var pieces: [(UnsafeMutableRawPointer, Int)] = []
        try memory.withHostBuffers(at: 0x1FF0, length: 0x20) { pieces.append(($0.baseAddress!, $0.count)) }
        #expect(pieces.count == 2)
        #expect(pieces[0] == (memory.regions[0].hostAddress + 0xFF0, 0x10))
        #expect(pieces[1] == (memory.regions[1].hostAddress, 0x10))
    }

    @Test func splittingNeverStartsOnAPartlyUnmappedRange() {
        var calls = 0
        #expect(throws: GuestMemoryError.unmapped(address: 0x2FF0, length: 0x20)) {
            try memory.withHostBuffers(at: 0x2FF0, length: 0x20) { _ in calls += 1 }
        }
        #expect(calls == 0)
    }

    @Test func writesAndReadsBackAcrossARegionBoundary() throws {
        let bytes: [UInt8] = Array(0..<64)
        try bytes.withUnsafeBytes { try memory.write($0, at: 0x1FE0) }
        var back = [UInt8](repeating: 0, count: 64)
        try back.withUnsafeMutableBytes { try memory.read(into: $0, from: 0x1FE0) }
        #expect(back == bytes)
        #expect(try memory.load(littleEndian: UInt32.self, at: 0x2000) == 0x2322_2120)
    }

    @Test func regionsMustNotOverlapOrBeEmpty() {
        #expect(throws: GuestMemoryError.overlappingRegions(first: 0x1000, second: 0x1800)) {
            try BufferGuestMemory(regions: [(0x1000, 0x1000), (0x1800, 0x1000)])
        }
        #expect(throws: GuestMemoryError.emptyRegion(guestAddress: 0x1000)) {
            try BufferGuestMemory(regions: [(0x1000, 0)])
        }
        #expect(throws: GuestMemoryError.noRegions) { try BufferGuestMemory(regions: []) }
        #expect(throws: GuestMemoryError.rangeOverflow(address: UInt64.max - 10, length: 0x1000)) {
            try BufferGuestMemory(regions: [(UInt64.max - 10, 0x1000)])
        }
    }

    @Test func regionAtTheTopOfTheAddressSpaceIsUsable() throws {
        let top = try BufferGuestMemory(regions: [(UInt64.max - 0xFFF, 0x1000)])
        #expect(try top.hostPointer(at: UInt64.max, length: 1) == top.regions[0].hostAddress + 0xFFF)
        #expect(throws: GuestMemoryError.rangeOverflow(address: .max, length: 2)) {
            try top.hostPointer(at: .max, length: 2)
        }
    }

    @Test func lookupFindsEveryRegionOfALargeTable() throws {
        let layout = (0..<40).map { (guestAddress: UInt64($0) * 0x10000, size: 0x1000) }
        let many = try BufferGuestMemory(regions: layout.reversed())
        for (index, region) in layout.enumerated() {
            #expect(many.region(containing: region.guestAddress + 0xFFF) == many.regions[index])
            #expect(many.region(containing: region.guestAddress + 0x1000) == nil)
        }
    }

    @Test func eachMappingHasItsOwnID() throws {
        let other = try BufferGuestMemory(size: 0x1000)
        #expect(other.mappingID != memory.mappingID)
    }

    @Test func mapsAMemoryTableFromFileDescriptors() throws {
        // Two regions of one file, as a vhost-user front end shares guest RAM: the second starts at
        // file offset 0x2000 (mmap_offset).
        var template = Array("/tmp/virtrng-guestmem-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        #expect(fd >= 0)
        defer {
            close(fd)
            template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        }
        #expect(ftruncate(fd, 0x4000) == 0)
        let memory = try MappedGuestMemory(regions: [
            MappedRegionDescriptor(
                guestAddress: 0, size: 0x2000, frontEndAddress: 0x7F00_0000_0000, mmapOffset: 0, fileDescriptor: fd),
            MappedRegionDescriptor(
                guestAddress: 0x1_0000_0000, size: 0x2000, frontEndAddress: 0x7F00_1000_0000, mmapOffset: 0x2000,
                fileDescriptor: fd),
        ])
        try memory.store(littleEndian: UInt64(0x1122_3344_5566_7788), at: 0x1_0000_0008)
        // The byte went to file offset 0x2008: read it back through the file.
        var word: UInt64 = 0
        #expect(pread(fd, &word, 8, 0x2008) == 8)
        #expect(word == 0x1122_3344_5566_7788)
        #expect(memory.guestAddress(forFrontEndAddress: 0x7F00_1000_0010) == 0x1_0000_0010)
        #expect(memory.guestAddress(forFrontEndAddress: 0x7F00_0000_2000) == nil)
        #expect(throws: GuestMemoryError.unmapped(address: 0x2000, length: 1)) {
            try memory.hostPointer(at: 0x2000, length: 1)
        }
    }

    @Test func aFailedMapNamesTheRegionAndErrno() {
        #expect(throws: GuestMemoryError.mapFailed(index: 0, errno: EBADF)) {
            try MappedGuestMemory(regions: [
                MappedRegionDescriptor(
                    guestAddress: 0, size: 0x1000, frontEndAddress: 0, mmapOffset: 0, fileDescriptor: -1)
            ])
        }
        #expect(throws: GuestMemoryError.rangeOverflow(address: 0, length: UInt64.max)) {
            try MappedGuestMemory(regions: [
                MappedRegionDescriptor(
                    guestAddress: 0, size: .max, frontEndAddress: 0, mmapOffset: 1, fileDescriptor: 0)
            ])
        }
    }
}
