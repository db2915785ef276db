import Testing
import VirtQueue
import VirtQueueTestSupport

@Suite struct SplitQueuePopTests {
    let data = Guest.base + 0x8_0000  // a free area of guest memory for raw descriptors

    // MARK: Happy paths

    @Test func popsTheBufferLinuxVirtioRngPosts() throws {
        var guest = try Guest()
        let head = try guest.driver.postRNGBuffer()
        #expect(try guest.pop())
        #expect(guest.chain.head == head)
        #expect(guest.chain.readableSegments.isEmpty)
        #expect(guest.chain.writableSegments.count == 1)
        #expect(guest.chain.writableLength == 64)
        let address = try guest.driver.bufferAddress(ofHead: head)
        #expect(guest.chain.writableSegments[0].guestAddress == address)
        #expect(try guest.pop() == false)
    }

    @Test func writesGoStraightIntoGuestMemory() throws {
        var guest = try Guest()
        let head = try guest.driver.postRNGBuffer()
        #expect(try guest.pop())
        let pattern: [UInt8] = (0..<80).map { UInt8($0) }
        let written = pattern.withUnsafeBytes { guest.chain.write($0) }
        #expect(written == 64)
        var back = [UInt8](repeating: 0, count: 64)
        try back.withUnsafeMutableBytes {
            try guest.memory.read(into: $0, from: try guest.driver.bufferAddress(ofHead: head))
        }
        #expect(back == Array(pattern[0..<64]))
    }

    @Test func readableBuffersComeBeforeWritableOnes() throws {
        var guest = try Guest()
        try guest.driver.post([.readable(16), .readable(8), .writable(32), .writable(64)])
        #expect(try guest.pop())
        #expect(guest.chain.readableSegments.map(\.bytes.count) == [16, 8])
        #expect(guest.chain.writableSegments.map(\.bytes.count) == [32, 64])
        #expect(guest.chain.readableLength == 24)
        #expect(guest.chain.writableLength == 96)
    }

    @Test func walksAChainAsLongAsTheQueue() throws {
        var guest = try Guest(size: 128)
        try guest.driver.post(Array(repeating: .writable(64), count: 128))
        #expect(try guest.pop())
        #expect(guest.chain.writableSegments.count == 128)
    }

    @Test func walksAnIndirectTableAfterDirectDescriptors() throws {
        var guest = try Guest()
        let table = data
        try guest.driver.writeDescriptor(at: table, address: data + 0x100, length: 8, flags: 1 | 2, next: 1)
        try guest.driver.writeDescriptor(at: table + 16, address: data + 0x200, length: 24, flags: 2, next: 0)
        try guest.driver.writeDescriptor(index: 0, address: data + 0x300, length: 4, flags: 1, next: 5)
        // WRITE on the descriptor that refers to the table must be ignored (2.7.5.3.2).
        try guest.driver.writeDescriptor(index: 5, address: table, length: 32, flags: 4 | 2, next: 0)
        try guest.driver.publish(head: 0)
        #expect(try guest.pop())
        #expect(guest.chain.readableSegments.map(\.guestAddress) == [data + 0x300])
        #expect(guest.chain.writableSegments.map(\.guestAddress) == [data + 0x100, data + 0x200])
        #expect(guest.chain.writableLength == 32)
    }

    @Test func indirectTableOf128Entries() throws {
        var guest = try Guest()
        try guest.driver.postIndirect(Array(repeating: .writable(64), count: 128))
        #expect(try guest.pop())
        #expect(guest.chain.writableSegments.count == 128)
        #expect(guest.chain.writableLength == 128 * 64)
    }

    @Test func aBufferAcrossAdjacentRegionsIsSplitIntoSegments() throws {
        let memory = try BufferGuestMemory(regions: [(0x10_0000, 0x10000), (0x11_0000, 0x10000)])
        let layout = RingLayout(size: 4, base: 0x10_0000, end: 0x10_8000)
        let driver = try SimulatedDriver(memory: memory, layout: layout)
        var queue = try driver.makeQueue()
        try driver.writeDescriptor(index: 0, address: 0x10_FFF0, length: 0x20, flags: 2, next: 0)
        try driver.publish(head: 0)
        let chain = DescriptorChain()
        #expect(try queue.popChain(into: chain, memory: memory))
        #expect(chain.writableSegments.map(\.guestAddress) == [0x10_FFF0, 0x11_0000])
        #expect(chain.writableSegments.map(\.bytes.count) == [0x10, 0x10])
        #expect(chain.writableSegments[1].bytes.baseAddress == memory.regions[1].hostAddress)
    }

    @Test func zeroLengthDescriptorsAreSkippedWhenThePolicySaysSo() throws {
        var guest = try Guest(zeroLength: .skip)
        try guest.driver.post([.writable(0), .writable(16)])
        #expect(try guest.pop())
        #expect(guest.chain.writableSegments.map(\.bytes.count) == [16])
    }

    // MARK: Every rule, its exact error, and the failed state after it

    @Test func rejectsAvailIndexJumpingMoreThanAQueueAhead() throws {
        var guest = try Guest(size: 8)
        try guest.driver.setAvailIndex(9)
        let expected = VirtQueueError.availIndexJump(availIndex: 9, nextAvail: 0, queueSize: 8)
        guest.expectPopFailure(expected)
    }

    @Test func acceptsAvailIndexExactlyAQueueAhead() throws {
        var guest = try Guest(size: 4)
        for _ in 0..<4 { try guest.driver.postRNGBuffer() }
        #expect(try guest.queue.availableCount(memory: guest.memory) == 4)
    }

    @Test func rejectsHeadIndexOutOfRange() throws {
        var guest = try Guest(size: 8)
        try guest.driver.publish(head: 8)
        let expected = VirtQueueError.headIndexOutOfRange(head: 8, queueSize: 8)
        guest.expectPopFailure(expected)
    }

    @Test func rejectsNextIndexOutOfRange() throws {
        var guest = try Guest(size: 8)
        try guest.driver.writeDescriptor(index: 2, address: data, length: 8, flags: 1 | 2, next: 8)
        try guest.driver.publish(head: 2)
        let expected = VirtQueueError.nextIndexOutOfRange(DescriptorPosition(index: 2), next: 8, limit: 8)
        guest.expectPopFailure(expected)
    }

    @Test func rejectsALoopInTheDescriptorTable() throws {
        var guest = try Guest(size: 8)
        try guest.driver.writeDescriptor(index: 0, address: data, length: 8, flags: 1 | 2, next: 1)
        try guest.driver.writeDescriptor(index: 1, address: data, length: 8, flags: 1 | 2, next: 0)
        try guest.driver.publish(head: 0)
        let expected = VirtQueueError.chainTooLong(head: 0, limit: 8)
        guest.expectPopFailure(expected)
    }

    @Test func rejectsASelfLoopInAnIndirectTable() throws {
        var guest = try Guest(size: 8)
        try guest.driver.writeDescriptor(at: data, address: data + 0x100, length: 8, flags: 1 | 2, next: 1)
        try guest.driver.writeDescriptor(at: data + 16, address: data + 0x100, length: 8, flags: 1 | 2, next: 1)
        try guest.driver.writeDescriptor(index: 0, address: data, length: 32, flags: 4, next: 0)
        try guest.driver.publish(head: 0)
        let expected = VirtQueueError.chainTooLong(head: 0, limit: 2)
        guest.expectPopFailure(expected)
    }

    @Test func rejectsAChainOfMoreThan4GiB() throws {
        // The bound is checked on the running total before the overflowing buffer is translated, so the
        // 4 GiB need not exist.
        let memory = try BufferGuestMemory(size: 0x10000, at: 0)
        let layout = RingLayout(size: 4, base: 0, end: 0x10000)
        let driver = try SimulatedDriver(memory: memory, layout: layout)
        var queue = try driver.makeQueue()
        try driver.writeDescriptor(index: 0, address: 0x8000, length: 0x100, flags: 1 | 2, next: 1)
        try driver.writeDescriptor(index: 1, address: 0x8000, length: .max, flags: 2, next: 0)
        try driver.publish(head: 0)
        let chain = DescriptorChain()
        #expect(throws: VirtQueueError.chainLengthOverflow(head: 0)) { try queue.popChain(into: chain, memory: memory) }
    }

    @Test func rejectsZeroLengthDescriptorsByDefault() throws {
        var guest = try Guest()
        try guest.driver.post([.writable(16), .writable(0)])  // descriptors 0 and 1
        let expected = VirtQueueError.zeroLengthDescriptor(DescriptorPosition(index: 1))
        guest.expectPopFailure(expected)
    }

    @Test func rejectsReadableAfterWritable() throws {
        var guest = try Guest()
        try guest.driver.writeDescriptor(index: 0, address: data, length: 8, flags: 1 | 2, next: 1)
        try guest.driver.writeDescriptor(index: 1, address: data, length: 8, flags: 0, next: 0)
        try guest.driver.publish(head: 0)
        let expected = VirtQueueError.readableAfterWritable(DescriptorPosition(index: 1))
        guest.expectPopFailure(expected)
    }

    @Test func rejectsReadableAfterWritableAcrossIntoAnIndirectTable() throws {
        var guest = try Guest()
        try guest.driver.writeDescriptor(at: data, address: data + 0x100, length: 8, flags: 0, next: 0)
        try guest.driver.writeDescriptor(index: 0, address: data + 0x200, length: 8, flags: 1 | 2, next: 1)
        try guest.driver.writeDescriptor(index: 1, address: data, length: 16, flags: 4, next: 0)
        try guest.driver.publish(head: 0)
        let expected = VirtQueueError.readableAfterWritable(DescriptorPosition(index: 0, indirectTable: data))
        guest.expectPopFailure(expected)
    }

    @Test func rejectsIndirectWhenNotNegotiated() throws {
        var guest = try Guest(features: [.version1])
        try guest.driver.writeDescriptor(index: 3, address: data, length: 16, flags: 4, next: 0)
        try guest.driver.publish(head: 3)
        let expected = VirtQueueError.indirectNotNegotiated(DescriptorPosition(index: 3))
        guest.expectPopFailure(expected)
    }

    @Test func rejectsNestedIndirect() throws {
        var guest = try Guest()
        try guest.driver.writeDescriptor(at: data, address: data + 0x100, length: 8, flags: 1 | 2, next: 1)
        try guest.driver.writeDescriptor(at: data + 16, address: data + 0x200, length: 16, flags: 4, next: 0)
        try guest.driver.writeDescriptor(index: 0, address: data, length: 32, flags: 4, next: 0)
        try guest.driver.publish(head: 0)
        let expected = VirtQueueError.nestedIndirect(DescriptorPosition(index: 1, indirectTable: data))
        guest.expectPopFailure(expected)
    }

    @Test func rejectsIndirectTogetherWithNext() throws {
        var guest = try Guest()
        try guest.driver.writeDescriptor(index: 0, address: data, length: 16, flags: 4 | 1, next: 1)
        try guest.driver.publish(head: 0)
        let expected = VirtQueueError.indirectWithNext(DescriptorPosition(index: 0))
        guest.expectPopFailure(expected)
    }

    static let badTableLengths: [UInt32] = [0, 8, 24, 17, 16 * 65537]

    @Test(arguments: badTableLengths)
    func rejectsIndirectTableLengthsThatAreNotWholeEntries(length: UInt32) throws {
        var guest = try Guest()
        try guest.driver.writeDescriptor(index: 0, address: data, length: length, flags: 4, next: 0)
        try guest.driver.publish(head: 0)
        let expected = VirtQueueError.invalidIndirectTableLength(DescriptorPosition(index: 0), length: length)
        guest.expectPopFailure(expected)
    }

    @Test func rejectsAnIndirectTableOutsideGuestMemory() throws {
        var guest = try Guest()
        let outside = Guest.base + UInt64(Guest.size) - 16  // one entry fits, two do not
        try guest.driver.writeDescriptor(index: 0, address: outside, length: 32, flags: 4, next: 0)
        try guest.driver.publish(head: 0)
        let expected = VirtQueueError.descriptorNotInMemory(DescriptorPosition(index: 0), address: outside, length: 32)
        guest.expectPopFailure(expected)
    }

    @Test func rejectsANextIndexBeyondTheIndirectTable() throws {
        var guest = try Guest()
        try guest.driver.writeDescriptor(at: data, address: data + 0x100, length: 8, flags: 1 | 2, next: 2)
        try guest.driver.writeDescriptor(at: data + 16, address: data + 0x100, length: 8, flags: 2, next: 0)
        try guest.driver.writeDescriptor(index: 0, address: data, length: 32, flags: 4, next: 0)
        try guest.driver.publish(head: 0)
        let expected = VirtQueueError.nextIndexOutOfRange(
            DescriptorPosition(index: 0, indirectTable: data), next: 2, limit: 2)
        guest.expectPopFailure(expected)
    }

    static let buffersOutside: [(address: UInt64, length: UInt32)] = [
        (0, 64),  // below the only region
        (Guest.base + UInt64(Guest.size) - 32, 64),  // runs off the end of the region
        (UInt64.max - 15, 64),  // wraps the 64-bit address space
    ]

    @Test(arguments: buffersOutside)
    func rejectsBuffersOutsideGuestMemory(address: UInt64, length: UInt32) throws {
        var guest = try Guest()
        try guest.driver.writeDescriptor(index: 0, address: address, length: length, flags: 2, next: 0)
        try guest.driver.publish(head: 0)
        let expected = VirtQueueError.descriptorNotInMemory(
            DescriptorPosition(index: 0), address: address, length: UInt64(length))
        guest.expectPopFailure(expected)
    }

    @Test func rejectsAChainWithMoreSegmentsThanTheStorageHolds() throws {
        var guest = try Guest(size: 16)
        try guest.driver.post(Array(repeating: .writable(8), count: 5))
        let small = DescriptorChain(capacity: 4)
        #expect(throws: VirtQueueError.tooManySegments(head: 0, capacity: 4)) {
            try guest.queue.popChain(into: small, memory: guest.memory)
        }
    }

    // MARK: Lifecycle and resume

    @Test func aFailedQueueWorksAgainAfterResetAndActivate() throws {
        var guest = try Guest(size: 8)
        try guest.driver.publish(head: 9)
        #expect(throws: VirtQueueError.headIndexOutOfRange(head: 9, queueSize: 8)) { try guest.pop() }
        #expect(guest.queue.failure == .headIndexOutOfRange(head: 9, queueSize: 8))
        #expect(throws: VirtQueueError.needsReset(.headIndexOutOfRange(head: 9, queueSize: 8))) {
            try guest.queue.activate(memory: guest.memory)
        }
        guest.queue.reset()
        try guest.queue.setIndices(nextAvail: guest.driver.availIndex, nextUsed: 0)
        try guest.queue.activate(memory: guest.memory)
        try guest.driver.postRNGBuffer()
        #expect(try guest.pop())
    }

    @Test func anInactiveQueueRefusesWork() throws {
        var guest = try Guest()
        guest.queue.deactivate()
        #expect(throws: VirtQueueError.notReady) { try guest.pop() }
    }

    @Test func resumesFromASavedIndexAcrossTheWrapAt65535() throws {
        var guest = try Guest(size: 4, startIndex: 65533)
        var heads: [UInt16] = []
        for round in 0..<6 {
            let head = try guest.driver.postRNGBuffer()
            #expect(try guest.pop(), "round \(round)")
            #expect(guest.chain.head == head)
            try guest.queue.addUsed(guest.chain, written: 64, memory: guest.memory)
            heads.append(head)
            #expect(try guest.driver.reclaimUsed() == [UsedElement(head: head, length: 64)])
        }
        #expect(guest.queue.nextAvail == 65533 &+ 6)
        #expect(guest.queue.nextUsed == 3)
    }

    @Test func stoppingAndResumingKeepsTheIndices() throws {
        var guest = try Guest(size: 4)
        try guest.driver.postRNGBuffer()
        #expect(try guest.pop())
        try guest.queue.addUsed(guest.chain, written: 64, memory: guest.memory)
        guest.queue.deactivate()
        let saved = guest.queue.nextAvail
        // A new device instance resumes from the saved avail index and the used index in the ring.
        var resumed = SplitQueue(configuration: guest.queue.configuration)
        try resumed.setIndices(nextAvail: saved, nextUsed: 0)
        try resumed.loadNextUsedFromRing(memory: guest.memory)
        #expect(resumed.nextUsed == 1)
        try resumed.activate(memory: guest.memory)
        _ = try guest.driver.reclaimUsed()
        let head = try guest.driver.postRNGBuffer()
        #expect(try resumed.popChain(into: guest.chain, memory: guest.memory))
        #expect(guest.chain.head == head)
    }

    @Test func configurationCannotChangeWhileReady() throws {
        var guest = try Guest()
        #expect(throws: VirtQueueError.changeWhileReady) { try guest.queue.setIndices(nextAvail: 1, nextUsed: 1) }
        #expect(throws: VirtQueueError.changeWhileReady) { try guest.queue.configure(guest.queue.configuration) }
    }

    @Test func aNewMemoryMappingIsTranslatedAgain() throws {
        var guest = try Guest()
        try guest.driver.postRNGBuffer()
        // A copy of guest memory at the same guest addresses but different host addresses, as after
        // vhost-user SET_MEM_TABLE.
        let copy = try BufferGuestMemory(size: Guest.size, at: Guest.base)
        copy.regions[0].hostAddress.copyMemory(from: guest.memory.regions[0].hostAddress, byteCount: Guest.size)
        #expect(try guest.queue.popChain(into: guest.chain, memory: copy))
        let segment = guest.chain.writableSegments[0].bytes.baseAddress!
        let region = copy.regions[0]
        #expect(segment >= region.hostAddress && segment < region.hostAddress + Guest.size)
    }

    @Test func aNewMappingWithoutTheRingsFailsTheQueue() throws {
        var guest = try Guest()
        let elsewhere = try BufferGuestMemory(size: 0x1000, at: 0)
        let expected = VirtQueueError.ringNotInMemory(
            .descriptorTable, address: Guest.base, length: guest.queue.configuration.descriptorTableLength)
        #expect(throws: expected) { try guest.queue.popChain(into: guest.chain, memory: elsewhere) }
        #expect(throws: VirtQueueError.needsReset(expected)) { try guest.pop() }
    }
}
