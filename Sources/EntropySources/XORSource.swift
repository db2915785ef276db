/// The XOR of two sources: each output byte is `a ⊕ b` of one byte from each.
///
/// If the two are independent, the output is at least as unpredictable as the better of them, so a
/// daemon can combine a hardware RNG it does not fully trust with getrandom. Generic over both
/// sides, so it nests with ``FallbackSource`` and ``HealthMonitor`` without a type per combination.
///
/// A fill of `n` bytes fills `min(n, chunkSize)` bytes fully from `first` (into the caller's
/// buffer) and from `second` (into a scratch buffer of `chunkSize` bytes allocated once at
/// creation, wiped after use), then XORs them in place; no call allocates. If either side throws,
/// the caller's bytes are wiped and the error propagates, so a half-mixed buffer is never reported.
///
/// Not thread-safe (one owner calls ``fill(_:)``); the scratch buffer is freed with the last copy.
public struct XORSource<First: EntropySource, Second: EntropySource>: EntropySource {
    /// The source written into the caller's buffer.
    public var first: First
    /// The source XORed into it.
    public var second: Second
    private let scratch: Scratch

    /// Combines `first` and `second`; `chunkSize` (at least 1) bounds the bytes one fill returns.
    public init(_ first: First, _ second: Second, chunkSize: Int = 4_096) {
        self.first = first
        self.second = second
        self.scratch = Scratch(count: max(1, chunkSize))
    }

    /// `"first ⊕ second"`.
    public var name: String { "\(first.name) xor \(second.name)" }

    /// Whether either side may block.
    public var mayBlock: Bool { first.mayBlock || second.mayBlock }

    /// Fills up to `chunkSize` bytes with the XOR of both sources.
    public mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) throws(EntropySourceError) -> Int {
        let n = min(buffer.count, scratch.buffer.count)
        guard n > 0 else { return 0 }
        let out = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n])
        let other = UnsafeMutableRawBufferPointer(rebasing: scratch.buffer[0..<n])
        defer { other.initializeMemory(as: UInt8.self, repeating: 0) }
        do throws(EntropySourceError) {
            try first.fillAll(out)
            try second.fillAll(other)
        } catch {
            out.initializeMemory(as: UInt8.self, repeating: 0)
            throw error
        }
        Self.xor(out, other)
        return n
    }

    @inline(__always)
    static func xor(_ out: UnsafeMutableRawBufferPointer, _ other: UnsafeMutableRawBufferPointer) {
        var i = 0
        let words = out.count / 8
        while i < words {
            let a = out.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self)
            let b = other.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self)
            out.storeBytes(of: a ^ b, toByteOffset: i * 8, as: UInt64.self)
            i += 1
        }
        var j = words * 8
        while j < out.count {
            out[j] ^= other[j]
            j += 1
        }
    }

    /// The scratch buffer, freed with the last copy of the source.
    final class Scratch {
        let buffer: UnsafeMutableRawBufferPointer
        init(count: Int) {
            buffer = .allocate(byteCount: count, alignment: 16)
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
        }
        deinit { buffer.deallocate() }
    }
}
