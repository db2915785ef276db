// EGDCodec throughput beside in-run baselines over the same bytes: each `X.Swift` (the codec) has
// an `X.Baseline` (a plain Swift loop over the same bytes) that scripts/bench-report.py pairs with it.
//
// Every buffer is built before the benchmarks run (in `EGDFixtures`), so the measured loops touch
// only pre-allocated memory: the decoders and encoders must show 0 allocations. Each iteration
// processes one 64 KiB stream; bytes/s = 65 536 / (ns per iteration) GB/s.
import Benchmark
import BenchmarkSupport
import EGDCodec

let benchmarks: @Sendable () -> Void = {
    BenchmarkDefaults.apply()
    let fixtures = EGDFixtures.shared

    // MARK: Server side: QEMU's pipelined `02 40` stream (32 768 requests per 64 KiB)

    Benchmark("EGDReadBlockingByteSum64KiB.Baseline") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(byteSum(fixtures.readBlockingStream)) }
    }
    Benchmark("EGDDecodeReadBlocking64KiB.Baseline") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(handParseReads(fixtures.readBlockingStream)) }
    }
    Benchmark("EGDDecodeReadBlocking64KiB.Swift") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(decodeRequests(fixtures.readBlockingStream, with: &fixtures.requestDecoder))
        }
    }
    Benchmark("EGDDecodeReadBlocking4KiBReads.Baseline") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(handParseReads(fixtures.readBlockingStream, readSize: 4096)) }
    }
    Benchmark("EGDDecodeReadBlocking4KiBReads.Swift") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(decodeRequests(fixtures.readBlockingStream, readSize: 4096, with: &fixtures.requestDecoder))
        }
    }

    // The batch API a server calls once per read(2): same baseline, same stream.
    Benchmark("EGDDecodeAllReadBlocking4KiBReads.Baseline") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(handParseReads(fixtures.readBlockingStream, readSize: 4096)) }
    }
    Benchmark("EGDDecodeAllReadBlocking4KiBReads.Swift") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(decodeAllRequests(fixtures.readBlockingStream, readSize: 4096, with: &fixtures.requestDecoder))
        }
    }

    // MARK: Server side: `03` writes of 255 bytes (253 requests per 64 KiB)

    Benchmark("EGDDecodeWrites64KiB.Baseline") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(byteSum(fixtures.writeStream)) }
    }
    Benchmark("EGDDecodeWrites64KiB.Swift") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(decodeRequests(fixtures.writeStream, with: &fixtures.requestDecoder))
        }
    }

    // MARK: Client side: 256 blocking answers of 255 bytes

    Benchmark("EGDDecodeBlockingAnswers64KiB.Baseline") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(byteSum(fixtures.blockingAnswers)) }
    }
    Benchmark("EGDDecodeBlockingAnswers64KiB.Swift") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(decodeBlockingAnswers(fixtures.blockingAnswers, with: &fixtures.responseDecoder))
        }
    }

    // MARK: Encoding answers into a 64 KiB buffer

    Benchmark("EGDEncodeBlockingAnswers64KiB.Baseline") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(copyChunks(fixtures.payloadBytes, into: fixtures.output)) }
    }
    Benchmark("EGDEncodeBlockingAnswers64KiB.Swift") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(encodeBlockingAnswers(fixtures.payload, into: fixtures.output))
        }
    }
    Benchmark("EGDEncodeLevelAnswers64KiB.Baseline") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(storeBigEndian(into: fixtures.output)) }
    }
    Benchmark("EGDEncodeLevelAnswers64KiB.Swift") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(encodeLevelAnswers(into: fixtures.output)) }
    }
}

/// Streams and buffers, built once. Immutable after `init` except `output` and the two decoders,
/// which only the (single-threaded) benchmark loops touch: hence `@unchecked Sendable`. The
/// decoders persist across iterations as a server's per-connection decoder does, so the first
/// payload buffer they take (during warm-up) is reused from then on.
final class EGDFixtures: @unchecked Sendable {
    static let shared = EGDFixtures()
    static let size = 64 * 1024

    let readBlockingStream: UnsafeRawBufferPointer
    let writeStream: UnsafeRawBufferPointer
    let blockingAnswers: UnsafeRawBufferPointer
    let payloadBytes: UnsafeRawBufferPointer
    let payload: EGDPayload
    let output: UnsafeMutableRawBufferPointer
    var requestDecoder = EGDRequestDecoder()
    var responseDecoder = EGDResponseDecoder()

    private init() {
        readBlockingStream = Self.make(Self.size) { $0 % 2 == 0 ? 0x02 : 0x40 }
        // 03 07 F8 FF + 255 data bytes = 259 bytes a write; 253 whole writes fit in 64 KiB.
        let writeLength = 259 * (Self.size / 259)
        writeStream = Self.make(writeLength) { index in
            switch index % 259 {
            case 0: return 0x03
            case 1: return 0x07
            case 2: return 0xF8
            case 3: return 0xFF
            default: return UInt8(truncatingIfNeeded: index)
            }
        }
        blockingAnswers = Self.make(256 * 255) { UInt8(truncatingIfNeeded: $0 &* 31) }
        payloadBytes = Self.make(255) { UInt8(truncatingIfNeeded: $0) }
        var payload = EGDPayload()
        for byte in payloadBytes { try? payload.append(byte) }
        self.payload = payload
        output = .allocate(byteCount: Self.size, alignment: 16)
        output.initializeMemory(as: UInt8.self, repeating: 0)
    }

    static func make(_ count: Int, _ byte: (Int) -> UInt8) -> UnsafeRawBufferPointer {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 16)
        for index in 0..<count { buffer[index] = byte(index) }
        return UnsafeRawBufferPointer(buffer)
    }
}

// MARK: - Baselines: plain loops over the same bytes

@inline(never)
func byteSum(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
    var sum: UInt64 = 0
    for byte in bytes { sum &+= UInt64(byte) }
    return sum
}

/// The least a request parser can do for a stream of 2-byte reads: step two bytes at a time,
/// check the command, add the count. No state across reads (`readSize` must be even), no
/// validation of other commands.
@inline(never)
func handParseReads(_ bytes: UnsafeRawBufferPointer, readSize: Int = .max) -> UInt64 {
    var sum: UInt64 = 0
    var start = 0
    while start < bytes.count {
        let end = start + min(readSize, bytes.count - start)
        var index = start
        while index + 1 < end {
            if bytes[index] == 0x02 { sum &+= UInt64(bytes[index + 1]) }
            index += 2
        }
        start = end
    }
    return sum
}

@inline(never)
func copyChunks(_ source: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Int {
    var offset = 0
    while offset + source.count <= output.count {
        UnsafeMutableRawBufferPointer(rebasing: output[offset..<(offset + source.count)]).copyMemory(from: source)
        offset += source.count
    }
    return offset
}

@inline(never)
func storeBigEndian(into output: UnsafeMutableRawBufferPointer) -> Int {
    var offset = 0
    var bits: UInt32 = 4096
    while offset + 4 <= output.count {
        output.storeBytes(of: bits.bigEndian, toByteOffset: offset, as: UInt32.self)
        offset += 4
        bits &+= 8
    }
    return offset
}

// MARK: - Code under test

/// Decodes every request of `bytes`, fed in reads of `readSize` bytes; returns a checksum.
@inline(never)
func decodeRequests(
    _ bytes: UnsafeRawBufferPointer,
    readSize: Int = .max,
    with decoder: inout EGDRequestDecoder
) -> UInt64 {
    var sum: UInt64 = 0
    var start = 0
    while start < bytes.count {
        let end = start + min(readSize, bytes.count - start)
        var input = bytes[start..<end]
        do {
            while let request = try decoder.decode(&input) { sum &+= checksum(request) }
        } catch {
            return 0
        }
        start = end
    }
    return sum
}

/// What both request benchmarks add up for each request, so neither can be optimised away.
@inline(__always)
func checksum(_ request: EGDRequest) -> UInt64 {
    switch request {
    case .readBlocking(let count), .readNonBlocking(let count): UInt64(count)
    case .writeEntropy(let bits, let data): UInt64(bits) &+ UInt64(data.count)
    case .entropyLevel, .reportPID: 1
    }
}

/// Decodes every request of `bytes` with `decodeAll`, one call per read of `readSize` bytes; returns a
/// checksum.
@inline(never)
func decodeAllRequests(
    _ bytes: UnsafeRawBufferPointer,
    readSize: Int,
    with decoder: inout EGDRequestDecoder
) -> UInt64 {
    var sum: UInt64 = 0
    var start = 0
    while start < bytes.count {
        let end = start + min(readSize, bytes.count - start)
        do {
            try decoder.decodeAll(UnsafeRawBufferPointer(rebasing: bytes[start..<end])) { sum &+= checksum($0) }
        } catch {
            return 0
        }
        start = end
    }
    return sum
}

/// Expects 256 blocking reads of 255 bytes, then decodes their answers; returns a checksum.
@inline(never)
func decodeBlockingAnswers(_ bytes: UnsafeRawBufferPointer, with decoder: inout EGDResponseDecoder) -> UInt64 {
    var sum: UInt64 = 0
    do {
        for _ in 0..<256 { try decoder.expectResponse(to: .readBlocking(count: 255)) }
        var input = bytes[...]
        while let response = try decoder.decode(&input) {
            if case .blockingData(let data) = response { sum &+= UInt64(data.count) &+ UInt64(data[0]) }
        }
    } catch {
        return 0
    }
    return sum
}

@inline(never)
func encodeBlockingAnswers(_ payload: EGDPayload, into output: UnsafeMutableRawBufferPointer) -> Int {
    let response = EGDResponse.blockingData(payload)
    var offset = 0
    do {
        while offset + 255 <= output.count {
            offset += try response.encode(into: UnsafeMutableRawBufferPointer(rebasing: output[offset...]))
        }
    } catch {
        return 0
    }
    return offset
}

@inline(never)
func encodeLevelAnswers(into output: UnsafeMutableRawBufferPointer) -> Int {
    var offset = 0
    var bits: UInt32 = 4096
    do {
        while offset + 4 <= output.count {
            offset += try EGDResponse.entropyLevel(bits: bits).encode(
                into: UnsafeMutableRawBufferPointer(rebasing: output[offset...]))
            bits &+= 8
        }
    } catch {
        return 0
    }
    return offset
}
