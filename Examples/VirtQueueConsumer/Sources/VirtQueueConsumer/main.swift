// A hypervisor tool that depends on VirtQueue alone: it plays the guest driver by writing a ring into
// guest memory by hand, then serves it as a virtio-rng device would, and shows a hostile ring refused.
import VirtQueue

let base: UInt64 = 0x4000_0000
let memory = try BufferGuestMemory(size: 0x10000, at: base)
let configuration = QueueConfiguration(
    size: 4,
    descriptorTableAddress: base,  // 16 × 4 bytes
    availableRingAddress: base + 0x40,  // 6 + 2 × 4 bytes
    usedRingAddress: base + 0x80,  // 6 + 8 × 4 bytes
    features: [.version1, .eventIndex]
)

// Driver: descriptor 0 is a 64-byte device-writable buffer at base + 0x1000; publish head 0.
try memory.store(littleEndian: base + 0x1000, at: base)
try memory.store(littleEndian: UInt32(64), at: base + 8)
try memory.store(littleEndian: UInt16(2), at: base + 12)  // VIRTQ_DESC_F_WRITE
try memory.store(littleEndian: UInt16(0), at: base + 0x40 + 4)  // avail.ring[0] = 0
try memory.store(littleEndian: UInt16(1), at: base + 0x40 + 2)  // avail.idx = 1

// Device: pop, fill in place, return.
var queue = SplitQueue(configuration: configuration)
try queue.activate(memory: memory)
let chain = DescriptorChain(capacity: 16)
guard try queue.popChain(into: chain, memory: memory) else { fatalError("the chain was not available") }
var counter: UInt8 = 0
let written = chain.fillWritable(upTo: 64) { buffer in
    for index in buffer.indices {
        buffer[index] = counter
        counter &+= 1
    }
    return buffer.count
}
try queue.addUsed(chain, written: UInt32(written), memory: memory)
let usedIndex = try memory.load(littleEndian: UInt16.self, at: base + 0x80 + 2)
let usedLength = try memory.load(littleEndian: UInt32.self, at: base + 0x80 + 8)
let lastByte = try memory.load(littleEndian: UInt8.self, at: base + 0x1000 + 63)
print("served head \(chain.head): used.idx=\(usedIndex) len=\(usedLength) last byte=\(lastByte)")
guard usedIndex == 1, usedLength == 64, lastByte == 63 else { fatalError("unexpected used ring contents") }

// A hostile driver: descriptor 1 chains to itself.
try memory.store(littleEndian: base + 0x2000, at: base + 16)
try memory.store(littleEndian: UInt32(8), at: base + 16 + 8)
try memory.store(littleEndian: UInt16(1 | 2), at: base + 16 + 12)  // NEXT | WRITE
try memory.store(littleEndian: UInt16(1), at: base + 16 + 14)  // next = itself
try memory.store(littleEndian: UInt16(1), at: base + 0x40 + 6)  // avail.ring[1] = 1
try memory.store(littleEndian: UInt16(2), at: base + 0x40 + 2)  // avail.idx = 2
do {
    _ = try queue.popChain(into: chain, memory: memory)
    fatalError("a looped chain was accepted")
} catch {
    print("refused a hostile ring: \(error)")
}
