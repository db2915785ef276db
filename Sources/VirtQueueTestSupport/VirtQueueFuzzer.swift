public import VirtQueue

/// The structure-aware fuzz harness for ``SplitQueue``: the input becomes a queue configuration, ring
/// memory (descriptor table, rings, indirect tables, all guest-controlled) and a sequence of queue
/// operations, some of which rewrite guest memory between device steps as a hostile guest on another
/// CPU would.
///
/// Input layout:
///
/// | bytes | meaning |
/// |---|---|
/// | 0 | queue size = 2^(b % 9), 1...256 |
/// | 1 | bit 0 INDIRECT_DESC, bit 1 EVENT_IDX, bit 2 zero-length descriptors skipped |
/// | 2–3 | start index (LE), used for both rings |
/// | 4 | operation count n |
/// | 5 ..< 5+2n | operations: (opcode, argument) |
/// | rest | image copied to the start of region A (rings first, laid out by ``RingLayout``) |
///
/// Guest memory is region A `[0x10000, 0x20000)`, region B `[0x20000, 0x28000)` adjacent to it (buffers
/// may straddle the boundary) and region C `[0x40000, 0x41000)` apart from both.
///
/// After every operation the harness checks the invariants a device relies on; a violation is reported
/// as a ``Violation`` (the fuzz target turns it into a crash, the tests into a failure):
/// every segment lies inside one region's host memory, segment lengths add up to the chain's totals,
/// a chain holds at most 2^32 bytes and at most its capacity of segments, a failed queue keeps
/// refusing work with `needsReset`, and the used index advances exactly once per element added.
public enum VirtQueueFuzzer {
    /// The regions of the fuzzed guest: A, B (adjacent to A) and C.
    public static let regionLayout: [(guestAddress: UInt64, size: Int)] = [
        (0x10000, 0x10000), (0x20000, 0x8000), (0x40000, 0x1000),
    ]

    /// Operation codes (the first byte of each operation, modulo the count).
    public enum Operation: UInt8, CaseIterable, Sendable {
        /// Pop a chain and fill its writable bytes with a pattern.
        case pop
        /// Return the oldest popped chain with `argument`-derived length.
        case addUsed
        /// Return every popped chain in one batch.
        case addUsedBatch
        /// Ask whether to notify the driver.
        case needsNotification
        /// Disable notifications.
        case disableNotifications
        /// Enable notifications.
        case enableNotifications
        /// The guest advances `avail.idx` by `argument`.
        case guestBumpsAvailIndex
        /// The guest writes head `argument` into the next available slot and publishes it.
        case guestPublishesHead
        /// The guest flips byte `argument` of the descriptor table.
        case guestCorruptsDescriptor
        /// Count available chains.
        case availableCount
        /// Reset and reactivate the queue at the guest's current indices.
        case resetAndActivate
    }

    /// A broken invariant: a bug in the queue.
    public struct Violation: Error, CustomStringConvertible {
        /// What was broken.
        public let description: String
    }

    /// What one input did, so tests can check that a seed exercises what it was made for.
    public struct Statistics: Equatable, Sendable {
        /// Chains popped and checked.
        public var chainsPopped = 0
        /// Used elements published.
        public var usedAdded = 0
        /// Guest errors that failed the queue.
        public var queueFailures = 0

        /// Makes statistics with the given counts.
        public init(chainsPopped: Int = 0, usedAdded: Int = 0, queueFailures: Int = 0) {
            self.chainsPopped = chainsPopped
            self.usedAdded = usedAdded
            self.queueFailures = queueFailures
        }
    }

    /// Makes guest memory laid out as ``regionLayout``, for ``run(_:reusing:)`` to reuse.
    public static func makeMemory() -> BufferGuestMemory {
        guard let memory = try? BufferGuestMemory(regions: regionLayout) else {
            preconditionFailure("the fuzz layout is valid")
        }
        return memory
    }

    /// Runs one input. Returns normally whatever the queue thinks of the input; throws only when an
    /// invariant is broken. Passing `memory` (from ``makeMemory()``) reuses it after zeroing it, which
    /// is what a fuzz loop wants; without it each run allocates its own.
    @discardableResult
    public static func run(
        _ input: UnsafeRawBufferPointer,
        reusing memory: BufferGuestMemory? = nil
    ) throws(Violation) -> Statistics {
        guard input.count >= 5 else { return Statistics() }
        let size = UInt16(1) << (input[0] % 9)
        var features: VirtioFeatures = [.version1]
        if input[1] & 1 != 0 { features.insert(.indirectDescriptors) }
        if input[1] & 2 != 0 { features.insert(.eventIndex) }
        let policy: ZeroLengthDescriptorPolicy = input[1] & 4 != 0 ? .skip : .reject
        let startIndex = UInt16(input[2]) | UInt16(input[3]) << 8
        let operationCount = min(Int(input[4]), (input.count - 5) / 2)
        let operations = UnsafeRawBufferPointer(rebasing: input[5..<5 + 2 * operationCount])
        let image = UnsafeRawBufferPointer(rebasing: input[(5 + 2 * operationCount)...])

        let memory = memory ?? makeMemory()
        for region in memory.regions {
            region.hostAddress.initializeMemory(as: UInt8.self, repeating: 0, count: Int(region.size))
        }
        let regionA = memory.regions[0]
        if let imageBase = image.baseAddress {
            regionA.hostAddress.copyMemory(from: imageBase, byteCount: min(image.count, Int(regionA.size)))
        }
        let layout = RingLayout(
            size: size, base: regionA.guestAddress, end: regionA.guestAddress + regionA.size, features: features,
            zeroLengthDescriptors: policy)
        var state = State(memory: memory, layout: layout)
        try state.activate(startIndex: startIndex)
        for index in 0..<operationCount {
            let code = operations[2 * index] % UInt8(Operation.allCases.count)
            try state.perform(Operation(rawValue: code)!, argument: operations[2 * index + 1])
        }
        return state.statistics
    }

    struct State {
        let memory: BufferGuestMemory
        let layout: RingLayout
        var queue: SplitQueue
        let chain = DescriptorChain(capacity: 64)
        var popped: [(head: UInt16, writable: UInt64)] = []
        var usedAdded = 0
        var usedAtActivation: UInt16 = 0
        var statistics = Statistics()

        init(memory: BufferGuestMemory, layout: RingLayout) {
            self.memory = memory
            self.layout = layout
            queue = SplitQueue(configuration: layout.configuration)
        }

        var configuration: QueueConfiguration { layout.configuration }

        mutating func activate(startIndex: UInt16) throws(Violation) {
            do {
                try queue.setIndices(nextAvail: startIndex, nextUsed: startIndex)
                try queue.activate(memory: memory)
            } catch {
                throw Violation(description: "a laid-out queue failed to activate: \(error)")
            }
            usedAtActivation = startIndex
            usedAdded = 0
            popped.removeAll(keepingCapacity: true)
        }

        mutating func perform(_ operation: Operation, argument: UInt8) throws(Violation) {
            switch operation {
            case .pop:
                do {
                    guard try queue.popChain(into: chain, memory: memory) else { return }
                } catch {
                    try checkFailedState(after: error)
                    return
                }
                try checkChain()
                statistics.chainsPopped += 1
                // Write every writable byte: AddressSanitizer checks they are real guest memory.
                _ = chain.fillWritable { buffer in
                    buffer.initializeMemory(as: UInt8.self, repeating: argument)
                    return buffer.count
                }
                if popped.count < 256 { popped.append((chain.head, chain.writableLength)) }
            case .addUsed:
                guard !popped.isEmpty else { return }
                let (head, writable) = popped.removeFirst()
                let length = UInt32(min(writable, UInt64(argument) * 17))
                add([UsedElement(head: head, length: length)])
            case .addUsedBatch:
                let elements = popped.map { UsedElement(head: $0.head, length: UInt32(min($0.writable, 64))) }
                popped.removeAll(keepingCapacity: true)
                add(elements)
            case .needsNotification:
                _ = try? queue.needsNotification(memory: memory)
            case .disableNotifications:
                try? queue.disableNotifications(memory: memory)
            case .enableNotifications:
                do { _ = try queue.enableNotifications(memory: memory) } catch { try checkFailedState(after: error) }
            case .guestBumpsAvailIndex:
                let address = configuration.availableRingAddress + 2
                guard let index = try? memory.load(littleEndian: UInt16.self, at: address) else { return }
                try? memory.store(littleEndian: index &+ UInt16(argument % 4 + 1), at: address)
            case .guestPublishesHead:
                let address = configuration.availableRingAddress + 2
                guard let index = try? memory.load(littleEndian: UInt16.self, at: address) else { return }
                let slot = configuration.availableRingAddress + 4 + 2 * UInt64(index & (configuration.size - 1))
                try? memory.store(littleEndian: UInt16(argument) % (configuration.size &* 2 | 1), at: slot)
                try? memory.store(littleEndian: index &+ 1, at: address)
            case .guestCorruptsDescriptor:
                let offset = UInt64(argument) % configuration.descriptorTableLength
                let address = configuration.descriptorTableAddress + offset
                if let byte = try? memory.load(littleEndian: UInt8.self, at: address) {
                    try? memory.store(littleEndian: byte ^ 0xA5, at: address)
                }
            case .availableCount:
                do { _ = try queue.availableCount(memory: memory) } catch { try checkFailedState(after: error) }
            case .resetAndActivate:
                queue.reset()
                let index = (try? memory.load(littleEndian: UInt16.self, at: configuration.usedRingAddress + 2)) ?? 0
                try activate(startIndex: index)
            }
        }

        mutating func add(_ elements: [UsedElement]) {
            guard !elements.isEmpty else { return }
            do {
                try queue.addUsed(contentsOf: elements, memory: memory)
                usedAdded += elements.count
                statistics.usedAdded += elements.count
            } catch {
                // Only a failed queue may refuse elements the harness took from popped chains.
                return
            }
            _ = try? queue.needsNotification(memory: memory)
        }

        func checkChain() throws(Violation) {
            var readable: UInt64 = 0
            var writable: UInt64 = 0
            for segment in chain.readableSegments {
                try checkInsideRegion(UnsafeRawPointer(segment.bytes.baseAddress!), segment.bytes.count)
                readable += UInt64(segment.bytes.count)
            }
            for segment in chain.writableSegments {
                try checkInsideRegion(UnsafeRawPointer(segment.bytes.baseAddress!), segment.bytes.count)
                writable += UInt64(segment.bytes.count)
            }
            guard readable == chain.readableLength, writable == chain.writableLength else {
                throw Violation(description: "segment lengths do not add up to the chain's totals")
            }
            guard readable + writable <= 1 << 32 else { throw Violation(description: "chain longer than 2^32") }
            guard chain.readableSegments.count + chain.writableSegments.count <= chain.capacity else {
                throw Violation(description: "more segments than capacity")
            }
            guard chain.head < configuration.size else { throw Violation(description: "head out of range") }
            guard queue.nextUsed == usedAtActivation &+ UInt16(truncatingIfNeeded: usedAdded) else {
                throw Violation(description: "used index moved without an element")
            }
        }

        func checkInsideRegion(_ start: UnsafeRawPointer, _ count: Int) throws(Violation) {
            for region in memory.regions {
                let base = UnsafeRawPointer(region.hostAddress)
                if start >= base, start + count <= base + Int(region.size) { return }
            }
            throw Violation(description: "segment outside every region: \(start) +\(count)")
        }

        mutating func checkFailedState(after error: VirtQueueError) throws(Violation) {
            guard queue.failure != nil else { return }  // device-side errors do not fail the queue
            statistics.queueFailures += 1
            var refusal: VirtQueueError?
            do { _ = try queue.popChain(into: chain, memory: memory) } catch { refusal = error }
            guard case .needsReset? = refusal else {
                throw Violation(description: "after \(error) a failed queue answered \(String(describing: refusal))")
            }
        }
    }
}
