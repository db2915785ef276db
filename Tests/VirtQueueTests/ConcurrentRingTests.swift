import Dispatch
import Testing
import VirtQueue
import VirtQueueTestSupport

/// A driver and a device on two threads sharing one ring, as a guest vCPU and a vhost-user backend do:
/// every buffer comes back once, with every byte the device wrote visible to the driver once it has
/// acquired `used.idx`, with and without EVENT_IDX.
@Suite struct ConcurrentRingTests {
    @Test(arguments: [VirtioFeatures([.version1]), [.version1, .eventIndex]])
    func aDriverOnAnotherThreadSeesEveryByteTheDeviceWrote(features: VirtioFeatures) throws {
        let total = 20_000
        let memory = try BufferGuestMemory(size: 1 << 20, at: 0x100_0000)
        let layout = RingLayout(size: 64, base: 0x100_0000, end: 0x100_0000 + (1 << 20), features: features)
        let driver = try SimulatedDriver(memory: memory, layout: layout)
        let queue = try driver.makeQueue()
        let done = DispatchSemaphore(value: 0)
        let device = DeviceThread(queue: queue, memory: memory, total: total)
        DispatchQueue.global().async {
            device.run()
            done.signal()
        }
        var posted = 0
        var received = 0
        var corrupt = 0
        var buffer = [UInt8](repeating: 0, count: 64)
        while received < total {
            while posted < total, posted - received < 48 {
                try driver.postRNGBuffer()
                posted += 1
            }
            for element in try driver.reclaimUsed() {
                // The device wrote the used index of this element into every byte.
                let expected = UInt8(truncatingIfNeeded: received)
                try buffer.withUnsafeMutableBytes {
                    try memory.read(into: $0, from: try driver.bufferAddress(ofHead: element.head))
                }
                if element.length != 64 || buffer.contains(where: { $0 != expected }) { corrupt += 1 }
                received += 1
            }
        }
        done.wait()
        #expect(device.failure == nil)
        #expect(device.served == total)
        #expect(received == total)
        #expect(corrupt == 0)
    }
}

/// The device side: the disable → process → enable loop, spinning when the ring is empty.
final class DeviceThread: @unchecked Sendable {
    // @unchecked Sendable: used by exactly one thread at a time; the test reads the results only after
    // the semaphore that the device thread signals when it is done.
    var queue: SplitQueue
    let memory: BufferGuestMemory
    let total: Int
    var served = 0
    var failure: VirtQueueError?

    init(queue: SplitQueue, memory: BufferGuestMemory, total: Int) {
        self.queue = queue
        self.memory = memory
        self.total = total
    }

    func run() {
        let chain = DescriptorChain()
        do {
            while served < total {
                repeat {
                    try queue.disableNotifications(memory: memory)
                    while try queue.popChain(into: chain, memory: memory) {
                        let mark = UInt8(truncatingIfNeeded: queue.nextUsed)
                        let written = chain.fillWritable(upTo: 64) { buffer in
                            buffer.initializeMemory(as: UInt8.self, repeating: mark)
                            return buffer.count
                        }
                        try queue.addUsed(chain, written: UInt32(written), memory: memory)
                        served += 1
                    }
                } while try queue.enableNotifications(memory: memory)
                _ = try queue.needsNotification(memory: memory)
            }
        } catch {
            failure = error
        }
    }
}
