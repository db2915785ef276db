import EGDCodec
import EGDCodecTestSupport
import Testing

@Suite struct EGDEncodingTests {
    @Test(arguments: pipelinedRequests)
    func everyRequestRoundTripsThroughTheServerDecoder(request: EGDRequest) throws {
        var buffer = [UInt8](repeating: 0xCC, count: 300)
        let written = try buffer.withUnsafeMutableBytes { try request.encode(into: $0) }
        #expect(written == request.encodedCount)
        var appended: [UInt8] = []
        request.append(to: &appended)
        #expect(Array(buffer[..<written]) == appended)
        #expect(EGDDripFeed.decodeRequests([buffer[..<written]]).messages == [request])
    }

    @Test(arguments: zip(outstandingRequests.filter { $0.command != .writeEntropy }, answers))
    func everyResponseRoundTripsThroughTheClientDecoder(request: EGDRequest, response: EGDResponse) throws {
        try response.validate(answering: request)
        var buffer = [UInt8](repeating: 0xCC, count: 300)
        let written = try buffer.withUnsafeMutableBytes { try response.encode(into: $0) }
        #expect(written == response.encodedCount)
        let outcome = EGDDripFeed.decodeResponses([buffer[..<written]], answering: [request])
        #expect(outcome == EGDDecodeOutcome(messages: [response], streamOffset: UInt64(written)))
    }

    @Test(arguments: [
        (0, [] as [UInt8]), (1, [0x02, 0x01]), (64, [0x02, 0x40]), (255, [0x02, 0xFF]),
        (256, [0x02, 0xFF, 0x02, 0x01]),
        (510, [0x02, 0xFF, 0x02, 0xFF]), (1000, [0x02, 0xFF, 0x02, 0xFF, 0x02, 0xFF, 0x02, 0xEB]),
    ])
    func readPlansSplitLikeQemu(total: Int, bytes: [UInt8]) throws {
        let plan = try EGDReadPlan(totalCount: total)
        #expect(plan.commandCount == bytes.count / 2)
        #expect(plan.reduce(0) { $0 + Int($1) } == total)
        var consuming = plan
        var buffer = [UInt8](repeating: 0, count: bytes.count)
        let written = try buffer.withUnsafeMutableBytes { try consuming.encodeAll(blocking: true, into: $0) }
        #expect(buffer[..<written] == bytes[...])
        #expect(consuming.remaining == 0)
    }

    @Test func readPlanRefusesNegativeTotalsAndShortBuffers() throws {
        #expect(throws: EGDEncodingError.countOutOfRange(-1)) { try EGDReadPlan(totalCount: -1) }
        var plan = try EGDReadPlan(totalCount: 300)
        var buffer = [UInt8](repeating: 0, count: 3)
        #expect(throws: EGDEncodingError.bufferTooSmall(needed: 4, available: 3)) {
            _ = try buffer.withUnsafeMutableBytes { try plan.encodeAll(blocking: false, into: $0) }
        }
        #expect(plan.remaining == 300)
    }

    @Test func checkedFactoriesRefuseWhatEGDCannotCarry() throws {
        #expect(throws: EGDEncodingError.countOutOfRange(256)) { try EGDRequest.read(count: 256, blocking: true) }
        #expect(throws: EGDEncodingError.countOutOfRange(-1)) { try EGDRequest.read(count: -1, blocking: false) }
        #expect(try EGDRequest.read(count: 255, blocking: false) == .readNonBlocking(count: 255))
        #expect(throws: EGDEncodingError.payloadTooLong(count: 256)) {
            try EGDRequest.write(bits: 8, data: [UInt8](repeating: 0, count: 256))
        }
        #expect(throws: EGDEncodingError.entropyEstimateOutOfRange(65536)) {
            try EGDRequest.write(bits: 65536, data: [1])
        }
        #expect(throws: EGDEncodingError.entropyEstimateOutOfRange(-8)) { try EGDRequest.write(bits: -8, data: [1]) }
        var payload = try EGDPayload([UInt8](repeating: 1, count: 255))
        #expect(throws: EGDEncodingError.payloadTooLong(count: 256)) { try payload.append(0) }
        #expect(throws: EGDEncodingError.payloadTooLong(count: 257)) { try payload.append(contentsOf: [1, 2]) }
        #expect(payload.count == 255)
    }

    @Test(arguments: [
        ([0x31, 0x78] as [UInt8], EGDEncodingError.invalidProcessIDByte(byte: 0x78, index: 1)),
        ([], .invalidProcessIDByte(byte: 0, index: 0)),
        ([0x2D], .invalidProcessIDByte(byte: 0x2D, index: 0)),
        ([0x31, 0x2D], .invalidProcessIDByte(byte: 0x2D, index: 1)),
        ([0xE2, 0x82, 0xAC], .invalidProcessIDByte(byte: 0xE2, index: 0)),
    ])
    func processIDTextMustBeASCIIDecimal(text: [UInt8], error: EGDEncodingError) throws {
        #expect(throws: error) { try EGDResponse.processID(text: text) }
        var buffer = [UInt8](repeating: 0, count: 8)
        #expect(throws: error) {
            _ = try buffer.withUnsafeMutableBytes { try EGDResponse.processID(try! EGDPayload(text)).encode(into: $0) }
        }
    }

    @Test func processIDFromAnIntegerIsDecimal() throws {
        var bytes: [UInt8] = []
        try EGDResponse.processID(-1).append(to: &bytes)
        #expect(bytes == [0x02, 0x2D, 0x31])
        #expect(try EGDResponse.processID(text: "31337".utf8) == .processID(31337))
        #expect(EGDResponse.entropyLevel(saturatingBits: 1 << 40) == .entropyLevel(bits: .max))
        #expect(EGDResponse.entropyLevel(saturatingBits: -5) == .entropyLevel(bits: 0))
    }

    @Test(arguments: [
        (
            EGDRequest.readBlocking(count: 4), EGDResponse.blockingData([1, 2, 3]),
            EGDEncodingError.dataLengthMismatch(requested: 4, actual: 3)
        ),
        (.readNonBlocking(count: 2), .nonBlockingData([1, 2, 3]), .dataLengthMismatch(requested: 2, actual: 3)),
        (.readBlocking(count: 1), .nonBlockingData([1]), .responseDoesNotAnswerRequest(.readBlocking)),
        (.entropyLevel, .processID(1), .responseDoesNotAnswerRequest(.entropyLevel)),
        (.writeEntropy(bits: 0, data: []), .entropyLevel(bits: 0), .responseDoesNotAnswerRequest(.writeEntropy)),
    ])
    func validateRefusesAnswersThatDoNotFitTheirRequest(
        request: EGDRequest, response: EGDResponse, error: EGDEncodingError
    ) {
        #expect(throws: error) { try response.validate(answering: request) }
    }

    @Test func encodersRefuseShortBuffersWithoutWriting() throws {
        var buffer = [UInt8](repeating: 0xCC, count: 3)
        #expect(throws: EGDEncodingError.bufferTooSmall(needed: 6, available: 3)) {
            _ = try buffer.withUnsafeMutableBytes { try EGDRequest.write(bits: 1, data: [1, 2]).encode(into: $0) }
        }
        #expect(throws: EGDEncodingError.bufferTooSmall(needed: 4, available: 3)) {
            _ = try buffer.withUnsafeMutableBytes { try EGDResponse.entropyLevel(bits: 1).encode(into: $0) }
        }
        #expect(buffer == [0xCC, 0xCC, 0xCC])
        #expect(throws: EGDEncodingError.bufferTooSmall(needed: 1, available: 0)) {
            _ = try EGDRequest.entropyLevel.encode(into: UnsafeMutableRawBufferPointer(start: nil, count: 0))
        }
    }

    @Test func errorsDescribeByteAndOffsetOnOneLine() {
        let error = EGDDecodingError.unknownCommand(byte: 0x93, offset: 12)
        #expect(error.description == "unknown EGD command: byte 0x93 at offset 12")
        #expect(error.byte == 0x93 && error.offset == 12)
    }
}
