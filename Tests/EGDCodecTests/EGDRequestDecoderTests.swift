import EGDCodec
import EGDCodecTestSupport
import Testing

/// A pipelined stream holding every command, QEMU's and ekeyd's patterns, and a 255-byte write.
let pipelinedRequests: [EGDRequest] = [
    .readBlocking(count: 64), .readBlocking(count: 64), .entropyLevel,
    .readNonBlocking(count: 0), .readNonBlocking(count: 200),
    .writeEntropy(bits: 16, data: [0xAA, 0xBB]), .reportPID, .readBlocking(count: 0),
    .writeEntropy(bits: 0, data: []), .readBlocking(count: 255),
    .writeEntropy(bits: 2040, data: try! EGDPayload((0..<255).map { UInt8($0) })),
    .readBlocking(count: 128), .readBlocking(count: 128),
]
let pipelinedRequestBytes: [UInt8] = {
    var bytes: [UInt8] = []
    for request in pipelinedRequests { request.append(to: &bytes) }
    return bytes
}()

@Suite struct EGDRequestDecoderTests {
    @Test(
        arguments: [
            ([0x00], EGDRequest.entropyLevel),
            ([0x01, 0x00], .readNonBlocking(count: 0)),
            ([0x01, 0xFF], .readNonBlocking(count: 255)),
            ([0x02, 0x40], .readBlocking(count: 64)),
            ([0x02, 0x00], .readBlocking(count: 0)),
            ([0x03, 0x00, 0x10, 0x02, 0xAA, 0xBB], .writeEntropy(bits: 16, data: [0xAA, 0xBB])),
            ([0x03, 0x00, 0x00, 0x00], .writeEntropy(bits: 0, data: [])),
            ([0x04], .reportPID),
        ] as [([UInt8], EGDRequest)])
    func decodesEachCommandFromItsBytes(bytes: [UInt8], request: EGDRequest) throws {
        var decoder = EGDRequestDecoder()
        var input = bytes[...]
        #expect(try decoder.decode(&input) == request)
        #expect(input.isEmpty)
        #expect(decoder.streamOffset == UInt64(bytes.count))
        #expect(try decoder.decode(&input) == nil)
        try decoder.finish()
    }

    @Test func qemuSixtyFourByteGuestBufferIsOneBlockingRead() throws {
        // QEMU rng-egd, Linux guest posting one 64-byte buffer: the capture is `02 40`.
        let outcome = EGDDripFeed.decodeRequests([[0x02, 0x40]])
        #expect(outcome == EGDDecodeOutcome(messages: [.readBlocking(count: 64)], streamOffset: 2))
    }

    @Test func qemuThousandByteRequestIsFourPipelinedReads() throws {
        let capture: [UInt8] = [0x02, 0xFF, 0x02, 0xFF, 0x02, 0xFF, 0x02, 0xEB]
        var plan = try EGDReadPlan(totalCount: 1000)
        var encoded = [UInt8](repeating: 0, count: 8)
        let written = try encoded.withUnsafeMutableBytes { try plan.encodeAll(blocking: true, into: $0) }
        #expect(written == 8)
        #expect(encoded == capture)
        let outcome = EGDDripFeed.decodeRequests([capture[...]])
        #expect(outcome.messages == [255, 255, 255, 235].map { EGDRequest.readBlocking(count: $0) })
        #expect(outcome.error == nil && outcome.finishError == nil)
    }

    @Test(arguments: 1...4)
    func ekeydEgdLinuxBlocksAreBackToBackReadsOf128(blocks: Int) {
        let capture = Array([[UInt8]](repeating: [0x02, 0x80], count: blocks).joined())
        let outcome = EGDDripFeed.decodeRequests(EGDStreamSplitter.split(capture, chunkSize: 3))
        #expect(outcome.messages == Array(repeating: .readBlocking(count: 128), count: blocks))
        #expect(outcome.streamOffset == UInt64(2 * blocks))
    }

    @Test(arguments: 0...pipelinedRequestBytes.count)
    func everySplitPointYieldsTheOneShotRequests(splitPoint: Int) {
        let whole = EGDDripFeed.decodeRequests([pipelinedRequestBytes[...]])
        #expect(
            whole == EGDDecodeOutcome(messages: pipelinedRequests, streamOffset: UInt64(pipelinedRequestBytes.count)))
        let split = EGDDripFeed.decodeRequests(EGDStreamSplitter.split(pipelinedRequestBytes, at: [splitPoint]))
        #expect(split == whole)
    }

    @Test(arguments: [1, 2, 3, 7, 64, 255, 4096])
    func decodeAllMatchesStepByStepDecodingAtEveryChunkSize(chunkSize: Int) {
        let stepwise = EGDDripFeed.decodeRequests(pipelinedRequestBytes, chunking: .fixed(size: chunkSize))
        let batch = EGDDripFeed.decodeAllRequests(pipelinedRequestBytes, chunking: .fixed(size: chunkSize))
        #expect(batch == stepwise)
        #expect(batch.messages == pipelinedRequests)
    }

    @Test func decodeAllMatchesStepByStepDecodingOnRandomStreams() {
        var generator = SplitMix64(seed: 0x5EED)
        for round in 0..<300 {
            // Mostly pipelined reads, with every other command and some garbage mixed in.
            var stream: [UInt8] = []
            for _ in 0..<Int(generator.next() % 40) {
                switch generator.next() % 10 {
                case 0: stream += [0x00]
                case 1: stream += [0x04]
                case 2: stream += [0x03, 0x00, 0x08, 0x02, UInt8(truncatingIfNeeded: generator.next()), 0x55]
                case 3: stream += [UInt8(truncatingIfNeeded: generator.next())]
                case 4: stream += [0x01, UInt8(truncatingIfNeeded: generator.next())]
                default: stream += [0x02, UInt8(truncatingIfNeeded: generator.next())]
                }
            }
            for configuration in [EGDRequestDecoder.Configuration(), .init(acceptedCommands: [.readBlocking])] {
                for chunking in [EGDChunking.whole, .fixed(size: 1), .fixed(size: 3), .random(maximum: 9, seed: 7)] {
                    let stepwise = EGDDripFeed.decodeRequests(stream, chunking: chunking, configuration: configuration)
                    let batch = EGDDripFeed.decodeAllRequests(stream, chunking: chunking, configuration: configuration)
                    #expect(batch == stepwise, "round \(round), \(chunking), stream \(stream)")
                }
            }
        }
    }

    @Test(arguments: [1, 2, 3, 7, 64, 255, 4096])
    func everyChunkSizeYieldsTheOneShotRequests(chunkSize: Int) {
        let split = EGDDripFeed.decodeRequests(EGDStreamSplitter.split(pipelinedRequestBytes, chunkSize: chunkSize))
        #expect(
            split == EGDDecodeOutcome(messages: pipelinedRequests, streamOffset: UInt64(pipelinedRequestBytes.count)))
    }

    @Test(
        arguments: [
            // egc.pl's `bogus` probe sends 93 12; servers drop the connection.
            ([0x93, 0x12], EGDRequestDecoder.Configuration(), EGDDecodingError.unknownCommand(byte: 0x93, offset: 0)),
            ([0x02, 0x40, 0x05], .init(), .unknownCommand(byte: 0x05, offset: 2)),
            ([0x02, 0x40, 0xFF], .init(), .unknownCommand(byte: 0xFF, offset: 2)),
            (
                [0x00, 0x03, 0x00, 0x11, 0x02, 0xAA, 0xBB], .init(),
                .entropyEstimateExceedsData(bits: 17, byte: 0x02, offset: 4)
            ),
            ([0x03, 0x01, 0x00, 0x00], .init(), .entropyEstimateExceedsData(bits: 256, byte: 0x00, offset: 3)),
            (
                [0x02, 0x40, 0x03, 0x00, 0x00, 0x00], .init(acceptedCommands: [.readBlocking]),
                .commandNotAccepted(byte: 0x03, offset: 2)
            ),
            ([0x04], .init(acceptedCommands: .all.subtracting(.reportPID)), .commandNotAccepted(byte: 0x04, offset: 0)),
        ] as [([UInt8], EGDRequestDecoder.Configuration, EGDDecodingError)])
    func refusesMalformedStreamsNamingByteAndOffset(
        bytes: [UInt8],
        configuration: EGDRequestDecoder.Configuration,
        error: EGDDecodingError
    ) {
        for chunkSize in [1, 2, bytes.count] {
            let outcome = EGDDripFeed.decodeRequests(
                EGDStreamSplitter.split(bytes, chunkSize: chunkSize), configuration: configuration)
            #expect(outcome.error == error)
            #expect(outcome.streamOffset == error.offset)
        }
    }

    @Test func acceptsOverstatedEntropyWhenConfiguredTo() {
        let bytes: [UInt8] = [0x03, 0x01, 0x00, 0x01, 0x7F]
        let outcome = EGDDripFeed.decodeRequests([bytes[...]], configuration: .init(rejectsOverstatedEntropy: false))
        #expect(outcome.messages == [.writeEntropy(bits: 256, data: [0x7F])])
    }

    @Test func leavesInputAtTheOffendingByteAndStaysFailed() throws {
        var decoder = EGDRequestDecoder()
        var input: ArraySlice<UInt8> = [0x02, 0x40, 0x07, 0x02, 0x40]
        #expect(try decoder.decode(&input) == .readBlocking(count: 64))
        #expect(throws: EGDDecodingError.unknownCommand(byte: 0x07, offset: 2)) { try decoder.decode(&input) }
        #expect(input == [0x07, 0x02, 0x40])
        var more: ArraySlice<UInt8> = [0x00]
        #expect(throws: EGDDecodingError.unknownCommand(byte: 0x07, offset: 2)) { try decoder.decode(&more) }
        #expect(throws: EGDDecodingError.unknownCommand(byte: 0x07, offset: 2)) { try decoder.finish() }
    }

    @Test(
        arguments: [
            ([0x01], EGDDecodingError.truncatedMessage(byte: 0x01, offset: 0)),
            ([0x02, 0x40, 0x02], .truncatedMessage(byte: 0x02, offset: 2)),
            ([0x03], .truncatedMessage(byte: 0x03, offset: 0)),
            ([0x00, 0x03, 0x00, 0x08], .truncatedMessage(byte: 0x03, offset: 1)),
            ([0x03, 0x00, 0x08, 0x02, 0x01], .truncatedMessage(byte: 0x03, offset: 0)),
        ] as [([UInt8], EGDDecodingError)])
    func finishReportsTheIncompleteCommand(bytes: [UInt8], error: EGDDecodingError) {
        let outcome = EGDDripFeed.decodeRequests(EGDStreamSplitter.split(bytes, chunkSize: 1))
        #expect(outcome.error == nil)
        #expect(outcome.finishError == error)
        #expect(outcome.streamOffset == UInt64(bytes.count))
    }

    @Test func keepsOnlyOneIncompleteCommandInline() throws {
        // A 259-byte write arriving one byte at a time: the decoder's size is fixed, so whatever
        // a client sends, one connection costs this much and no more.
        #expect(MemoryLayout<EGDRequestDecoder>.size < 320)
        var decoder = EGDRequestDecoder()
        var count = 0
        for byte in [0x03, 0x00, 0x08, 0xFF] + [UInt8](repeating: 1, count: 255) {
            var input: ArraySlice<UInt8> = [byte]
            if try decoder.decode(&input) != nil { count += 1 }
            #expect(input.isEmpty)
        }
        #expect(count == 1)
        #expect(decoder.isIdle)
    }
}
