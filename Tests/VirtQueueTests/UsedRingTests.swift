import Testing
import VirtQueue
import VirtQueueTestSupport

@Suite struct UsedRingTests {
    @Test func addUsedPublishesIdAndLength() throws {
        var guest = try Guest()
        let head = try guest.driver.post([.writable(100)])
        #expect(try guest.pop())
        try guest.queue.addUsed(guest.chain, written: 37, memory: guest.memory)
        #expect(try guest.driver.reclaimUsed() == [UsedElement(head: head, length: 37)])
        #expect(guest.queue.nextUsed == 1)
    }

    @Test func neverReportsMoreThanTheChainCanHold() throws {
        var guest = try Guest()
        let head = try guest.driver.post([.readable(16), .writable(64)])
        #expect(try guest.pop())
        #expect(throws: VirtQueueError.usedLengthExceedsWritable(head: head, length: 65, writable: 64)) {
            try guest.queue.addUsed(guest.chain, written: 65, memory: guest.memory)
        }
        // A device error does not fail the queue, and nothing was published.
        #expect(guest.queue.failure == nil)
        #expect(try guest.driver.reclaimUsed().isEmpty)
        try guest.queue.addUsed(guest.chain, written: 64, memory: guest.memory)
        #expect(try guest.driver.reclaimUsed() == [UsedElement(head: head, length: 64)])
    }

    @Test func aBatchIsPublishedWithOneIndexStore() throws {
        var guest = try Guest(size: 8)
        var elements: [UsedElement] = []
        for _ in 0..<5 {
            let head = try guest.driver.postRNGBuffer()
            #expect(try guest.pop())
            elements.append(UsedElement(head: head, length: 64))
        }
        try guest.queue.addUsed(contentsOf: elements, memory: guest.memory)
        #expect(try guest.driver.reclaimUsed() == elements)
    }

    @Test func aBatchWithABadElementPublishesNothing() throws {
        var guest = try Guest(size: 8)
        let head = try guest.driver.postRNGBuffer()
        #expect(try guest.pop())
        #expect(throws: VirtQueueError.usedHeadOutOfRange(head: 8, queueSize: 8)) {
            try guest.queue.addUsed(
                contentsOf: [UsedElement(head: head, length: 64), UsedElement(head: 8, length: 1)], memory: guest.memory
            )
        }
        #expect(guest.queue.nextUsed == 0)
        #expect(try guest.driver.reclaimUsed().isEmpty)
    }

    @Test func usedIndexWrapsAt65535() throws {
        var guest = try Guest(size: 2, startIndex: 65535)
        for _ in 0..<3 {
            let head = try guest.driver.postRNGBuffer()
            #expect(try guest.pop())
            try guest.queue.addUsed(guest.chain, written: 8, memory: guest.memory)
            #expect(try guest.driver.reclaimUsed() == [UsedElement(head: head, length: 8)])
        }
        #expect(guest.queue.nextUsed == 2)
    }
}

@Suite struct NotificationTests {
    /// `vring_need_event(event, new, old)` against cases worked out from virtio 1.2, 2.7.10.
    static let needEventCases: [(event: UInt16, new: UInt16, old: UInt16, notify: Bool)] = [
        (0, 1, 0, true),  // the spec's example: used_event 0 notifies after the first buffer
        (0, 2, 1, false),  // ... and not after the second
        (1, 2, 1, true),  // the entry at index 1 was the one asked for
        (5, 4, 0, false),  // event not reached yet
        (5, 6, 0, true),  // a batch that passes the event
        (5, 5, 0, false),  // the batch ended just before the event entry
        (65535, 0, 65535, true),  // wrap: the entry at 65535 was asked for
        (65535, 1, 65534, true),  // wrap inside a batch
        (2, 1, 65534, false),  // wrap, event still ahead
        (10, 10, 10, false),  // no new entries never notifies
    ]

    @Test(arguments: needEventCases)
    func needsEventFollowsTheSpec(event: UInt16, new: UInt16, old: UInt16, notify: Bool) {
        #expect(SplitQueue.needsEvent(eventIndex: event, newIndex: new, oldIndex: old) == notify)
    }

    @Test func withoutEventIndexTheDriverFlagSuppressesInterrupts() throws {
        var guest = try Guest(features: [.version1])
        try guest.driver.postRNGBuffer()
        #expect(try guest.pop())
        try guest.queue.addUsed(guest.chain, written: 64, memory: guest.memory)
        #expect(try guest.queue.needsNotification(memory: guest.memory))
        // Nothing added since: no notification.
        #expect(try guest.queue.needsNotification(memory: guest.memory) == false)
        try guest.driver.setAvailFlags(1)  // VIRTQ_AVAIL_F_NO_INTERRUPT
        try guest.driver.postRNGBuffer()
        #expect(try guest.pop())
        try guest.queue.addUsed(guest.chain, written: 64, memory: guest.memory)
        #expect(try guest.queue.needsNotification(memory: guest.memory) == false)
    }

    @Test func withEventIndexTheNoInterruptFlagIsIgnored() throws {
        var guest = try Guest(features: [.version1, .eventIndex])
        try guest.driver.setAvailFlags(1)
        try guest.driver.setUsedEvent(0)
        try guest.driver.postRNGBuffer()
        #expect(try guest.pop())
        try guest.queue.addUsed(guest.chain, written: 64, memory: guest.memory)
        #expect(try guest.queue.needsNotification(memory: guest.memory))
    }

    @Test func withEventIndexABatchNotifiesOnlyIfItPassesUsedEvent() throws {
        var guest = try Guest(size: 8, features: [.version1, .eventIndex])
        try guest.driver.setUsedEvent(3)  // "interrupt me once the entry at index 3 is used"
        func complete(_ count: Int) throws -> Bool {
            for _ in 0..<count {
                try guest.driver.postRNGBuffer()
                #expect(try guest.pop())
                try guest.queue.addUsed(guest.chain, written: 64, memory: guest.memory)
            }
            _ = try guest.driver.reclaimUsed()
            return try guest.queue.needsNotification(memory: guest.memory)
        }
        #expect(try complete(2) == false)  // used 0, 1
        #expect(try complete(1) == false)  // used 2
        #expect(try complete(2) == true)  // used 3, 4: passes 3
        #expect(try complete(1) == false)  // used 5: already past
    }

    @Test func withoutEventIndexDisablingSetsNoNotify() throws {
        var guest = try Guest(features: [.version1])
        try guest.queue.disableNotifications(memory: guest.memory)
        #expect(try guest.driver.usedFlags() == 1)
        #expect(try guest.driver.kickNeeded(since: guest.driver.availIndex) == false)
        #expect(try guest.queue.enableNotifications(memory: guest.memory) == false)
        #expect(try guest.driver.usedFlags() == 0)
    }

    @Test func withEventIndexPoppingAsksForTheNextKick() throws {
        var guest = try Guest(features: [.version1, .eventIndex])
        let old = guest.driver.availIndex
        try guest.driver.postRNGBuffer()
        #expect(try guest.driver.kickNeeded(since: old))  // avail_event starts at 0
        #expect(try guest.pop())
        #expect(try guest.driver.availEvent() == 1)
        let before = guest.driver.availIndex
        try guest.driver.postRNGBuffer()
        #expect(try guest.driver.kickNeeded(since: before))
    }

    @Test func withEventIndexDisabledPopsLeaveAvailEventAlone() throws {
        var guest = try Guest(features: [.version1, .eventIndex])
        try guest.queue.disableNotifications(memory: guest.memory)
        for _ in 0..<3 { try guest.driver.postRNGBuffer() }
        for _ in 0..<3 { #expect(try guest.pop()) }
        #expect(try guest.driver.availEvent() == 0)
        // The driver posting now would not kick: the device said it is busy.
        let before = guest.driver.availIndex
        try guest.driver.postRNGBuffer()
        #expect(try guest.driver.kickNeeded(since: before) == false)
        // Re-enabling reports the buffer that arrived without a kick, so it is not lost.
        #expect(try guest.queue.enableNotifications(memory: guest.memory) == true)
        #expect(try guest.driver.availEvent() == 3)
        #expect(try guest.pop())
        #expect(try guest.queue.enableNotifications(memory: guest.memory) == false)
        #expect(try guest.driver.availEvent() == 4)
    }

    @Test func theDisableProcessEnableLoopLosesNoBuffer() throws {
        for features: VirtioFeatures in [[.version1], [.version1, .eventIndex]] {
            var guest = try Guest(size: 16, features: features)
            var served = 0
            var posted = 0
            for round in 0..<50 {
                // The driver posts a few buffers, kicking only when the device asks for kicks.
                var kicked = false
                for _ in 0..<(round % 4) {
                    let old = guest.driver.availIndex
                    try guest.driver.postRNGBuffer()
                    posted += 1
                    kicked = try guest.driver.kickNeeded(since: old) || kicked
                }
                guard kicked || round == 0 else { continue }
                repeat {
                    try guest.queue.disableNotifications(memory: guest.memory)
                    while try guest.pop() {
                        try guest.queue.addUsed(guest.chain, written: 64, memory: guest.memory)
                        served += 1
                    }
                } while try guest.queue.enableNotifications(memory: guest.memory)
                _ = try guest.driver.reclaimUsed()
            }
            #expect(served == posted, "features \(features.rawValue)")
        }
    }

    @Test func anAvailIndexJumpSeenWhileEnablingFailsTheQueue() throws {
        var guest = try Guest(size: 4)
        try guest.driver.setAvailIndex(100)
        let expected = VirtQueueError.availIndexJump(availIndex: 100, nextAvail: 0, queueSize: 4)
        #expect(throws: expected) { try guest.queue.enableNotifications(memory: guest.memory) }
        #expect(guest.queue.failure == expected)
    }
}

@Suite struct QueueConfigurationTests {
    static let badSizes: [UInt16] = [0, 3, 6, 100, 32767, 65535]

    @Test(arguments: badSizes)
    func sizeMustBeAPowerOfTwoUpTo32768(size: UInt16) {
        let configuration = QueueConfiguration(
            size: size, descriptorTableAddress: 0, availableRingAddress: 0, usedRingAddress: 0)
        #expect(throws: VirtQueueError.invalidQueueSize(UInt32(size))) { try configuration.validate() }
    }

    @Test func acceptsEveryPowerOfTwoUpTo32768() throws {
        for shift in 0...15 {
            let configuration = QueueConfiguration(
                size: 1 << shift, descriptorTableAddress: 0, availableRingAddress: 0, usedRingAddress: 0)
            try configuration.validate()
        }
    }

    static let misaligned: [(RingArea, UInt64, UInt64, UInt64, UInt64)] = [
        (.descriptorTable, 0x1008, 0x2000, 0x3000, 16),
        (.availableRing, 0x1000, 0x2001, 0x3000, 2),
        (.usedRing, 0x1000, 0x2000, 0x3002, 4),
    ]

    @Test(arguments: misaligned)
    func ringsMustBeAlignedAsTheSpecSays(area: RingArea, table: UInt64, avail: UInt64, used: UInt64, alignment: UInt64)
    {
        let configuration = QueueConfiguration(
            size: 8, descriptorTableAddress: table, availableRingAddress: avail, usedRingAddress: used)
        let address = [table, avail, used][[RingArea.descriptorTable, .availableRing, .usedRing].firstIndex(of: area)!]
        #expect(throws: VirtQueueError.misalignedRing(area, address: address, requiredAlignment: alignment)) {
            try configuration.validate()
        }
    }

    @Test func packedRingsAreRefused() {
        let configuration = QueueConfiguration(
            size: 8, descriptorTableAddress: 0, availableRingAddress: 0, usedRingAddress: 0,
            features: [.version1, .ringPacked])
        #expect(throws: VirtQueueError.packedRingNotSupported) { try configuration.validate() }
    }

    @Test func ringsOutsideMemoryAreRefusedAtActivation() throws {
        let memory = try BufferGuestMemory(size: 0x1000, at: 0x1000)
        // A 256-entry table fills the region exactly; its used ring (6 + 8·256 bytes) at 0x1800 runs out.
        var queue = SplitQueue(
            configuration: QueueConfiguration(
                size: 256, descriptorTableAddress: 0x1000, availableRingAddress: 0x1000, usedRingAddress: 0x1800))
        #expect(throws: VirtQueueError.ringNotInMemory(.usedRing, address: 0x1800, length: 6 + 8 * 256)) {
            try queue.activate(memory: memory)
        }
        queue = SplitQueue(
            configuration: QueueConfiguration(
                size: 128, descriptorTableAddress: 0x1000, availableRingAddress: 0x1800, usedRingAddress: 0x1C00))
        #expect(throws: VirtQueueError.ringNotInMemory(.usedRing, address: 0x1C00, length: 6 + 8 * 128)) {
            try queue.activate(memory: memory)
        }
        #expect(queue.isReady == false)
        #expect(queue.failure == nil)
        queue = SplitQueue(
            configuration: QueueConfiguration(
                size: 128, descriptorTableAddress: 0x3000, availableRingAddress: 0x1800, usedRingAddress: 0x1A00))
        #expect(throws: VirtQueueError.ringNotInMemory(.descriptorTable, address: 0x3000, length: 16 * 128)) {
            try queue.activate(memory: memory)
        }
    }
}
