import EGDCodec
import EGDCodecTestSupport
import Testing

let outstandingRequests: [EGDRequest] = [
    .entropyLevel, .readNonBlocking(count: 16), .readBlocking(count: 64), .writeEntropy(bits: 8, data: [1]),
    .readNonBlocking(count: 5), .reportPID, .readBlocking(count: 0), .readBlocking(count: 255), .reportPID,
]
let answers: [EGDResponse] = [
    .entropyLevel(bits: 8_388_608), .nonBlockingData([1, 2, 3]),
    .blockingData(try! EGDPayload((0..<64).map { UInt8($0) })), .nonBlockingData([]), .processID([0x2D, 0x31]),
    .blockingData([]), .blockingData(try! EGDPayload([UInt8](repeating: 0xEE, count: 255))), .processID(4242),
]
let answerBytes: [UInt8] = {
    var bytes: [UInt8] = []
    for answer in answers { try! answer.append(to: &bytes) }
    return bytes
}()

@Suite struct EGDResponseDecoderTests {
    @Test(
        arguments: [
            (EGDRequest.entropyLevel, [0x00, 0x00, 0x10, 0x00], EGDResponse.entropyLevel(bits: 4096)),
            (.entropyLevel, [0xFF, 0xFF, 0xFF, 0xFF], .entropyLevel(bits: UInt32.max)),
            (.readNonBlocking(count: 4), [0x02, 0xAA, 0xBB], .nonBlockingData([0xAA, 0xBB])),
            (.readNonBlocking(count: 4), [0x00], .nonBlockingData([])),
            (.readBlocking(count: 3), [0x01, 0x02, 0x03], .blockingData([1, 2, 3])),
            // ekeyd always answers `04` with `02 2D 31`, "-1".
            (.reportPID, [0x02, 0x2D, 0x31], .processID([0x2D, 0x31])),
            (.reportPID, [0x01, 0x30], .processID([0x30])),
        ] as [(EGDRequest, [UInt8], EGDResponse)])
    func decodesEachAnswerFromItsBytes(request: EGDRequest, bytes: [UInt8], response: EGDResponse) {
        let outcome = EGDDripFeed.decodeResponses([bytes[...]], answering: [request])
        #expect(outcome == EGDDecodeOutcome(messages: [response], streamOffset: UInt64(bytes.count)))
    }

    @Test(arguments: 0...answerBytes.count)
    func everySplitPointYieldsTheOneShotResponses(splitPoint: Int) {
        let expected = EGDDecodeOutcome(messages: answers, streamOffset: UInt64(answerBytes.count))
        #expect(EGDDripFeed.decodeResponses([answerBytes[...]], answering: outstandingRequests) == expected)
        let chunks = EGDStreamSplitter.split(answerBytes, at: [splitPoint])
        #expect(EGDDripFeed.decodeResponses(chunks, answering: outstandingRequests) == expected)
    }

    @Test(arguments: [1, 2, 3, 7, 100])
    func reassemblesABlockingAnswerSentInChunks(chunkSize: Int) {
        // ekeyd writes what it has now and the rest as the pool refills.
        let data = (0..<200).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let outcome = EGDDripFeed.decodeResponses(
            EGDStreamSplitter.split(data, chunkSize: chunkSize), answering: [.readBlocking(count: 200)])
        #expect(outcome.messages == [.blockingData(try! EGDPayload(data))])
        #expect(outcome.error == nil && outcome.finishError == nil)
    }

    @Test func qemuThousandByteAnswerFramesIntoFourReads() throws {
        var plan = try EGDReadPlan(totalCount: 1000)
        var requests: [EGDRequest] = []
        while let request = plan.nextRequest(blocking: true) { requests.append(request) }
        let data = [UInt8](repeating: 0x5A, count: 1000)
        let outcome = EGDDripFeed.decodeResponses(EGDStreamSplitter.split(data, chunkSize: 300), answering: requests)
        #expect(outcome.messages.map(\.encodedCount) == [255, 255, 255, 235])
        #expect(outcome.finishError == nil)
    }

    @Test(
        arguments: [
            ([], [0x00], EGDDecodingError.unexpectedByte(byte: 0x00, offset: 0)),
            ([.readBlocking(count: 1)], [0x01, 0x02], .unexpectedByte(byte: 0x02, offset: 1)),
            ([.writeEntropy(bits: 0, data: [])], [0x00], .unexpectedByte(byte: 0x00, offset: 0)),
            (
                [.readNonBlocking(count: 2)], [0x03, 0x01, 0x02, 0x03],
                .nonBlockingLengthExceedsRequest(byte: 3, requested: 2, offset: 0)
            ),
            ([.entropyLevel, .reportPID], [0, 0, 0, 1, 0x00], .invalidProcessIDLength(byte: 0, offset: 4)),
            ([.reportPID], [0x02, 0x31, 0x78], .invalidProcessIDByte(byte: 0x78, offset: 2)),
            ([.reportPID], [0x01, 0x2D], .invalidProcessIDByte(byte: 0x2D, offset: 1)),
            ([.reportPID], [0x03, 0x31, 0x2D, 0x31], .invalidProcessIDByte(byte: 0x2D, offset: 2)),
            ([.reportPID], [0x02, 0xC3, 0xA9], .invalidProcessIDByte(byte: 0xC3, offset: 1)),
        ] as [([EGDRequest], [UInt8], EGDDecodingError)])
    func refusesMalformedAnswersNamingByteAndOffset(requests: [EGDRequest], bytes: [UInt8], error: EGDDecodingError) {
        for chunkSize in [1, 2, bytes.count] {
            let outcome = EGDDripFeed.decodeResponses(
                EGDStreamSplitter.split(bytes, chunkSize: chunkSize), answering: requests)
            #expect(outcome.error == error)
            #expect(outcome.streamOffset == error.offset)
        }
    }

    @Test(
        arguments: [
            ([.readBlocking(count: 128)], [0x01, 0x02], EGDDecodingError.truncatedMessage(byte: 0x02, offset: 0)),
            ([.readBlocking(count: 2), .entropyLevel], [0x01, 0x02, 0x00], .truncatedMessage(byte: 0x00, offset: 2)),
            ([.readBlocking(count: 2), .reportPID], [0x01, 0x02], .truncatedMessage(byte: 0x04, offset: 2)),
            ([.readNonBlocking(count: 9)], [0x05, 0x01], .truncatedMessage(byte: 0x01, offset: 0)),
        ] as [([EGDRequest], [UInt8], EGDDecodingError)])
    func finishReportsTheMissingAnswer(requests: [EGDRequest], bytes: [UInt8], error: EGDDecodingError) {
        let outcome = EGDDripFeed.decodeResponses([bytes[...]], answering: requests)
        #expect(outcome.error == nil)
        #expect(outcome.finishError == error)
    }

    @Test func tracksAtMostTwoHundredFiftySixOutstandingRequests() throws {
        var decoder = EGDResponseDecoder()
        for _ in 0..<EGDResponseDecoder.maximumOutstandingRequests {
            try decoder.expectResponse(to: .readBlocking(count: 1))
        }
        #expect(throws: EGDEncodingError.tooManyOutstandingRequests(limit: 256)) {
            try decoder.expectResponse(to: .entropyLevel)
        }
        try decoder.expectResponse(to: .writeEntropy(bits: 0, data: []))  // writes expect nothing
        #expect(decoder.outstandingCount == 256)
        var input = ArraySlice([UInt8](repeating: 9, count: 256))
        var count = 0
        while try decoder.decode(&input) != nil { count += 1 }
        #expect(count == 256)
        try decoder.expectResponse(to: .entropyLevel)  // the ring wrapped
        #expect(decoder.outstandingCount == 1)
    }

    @Test func answersAreDecodedInRequestOrderAsRequestsAreAdded() throws {
        var decoder = EGDResponseDecoder()
        try decoder.expectResponse(to: .readBlocking(count: 2))
        var first: ArraySlice<UInt8> = [0xAA]
        #expect(try decoder.decode(&first) == nil)
        try decoder.expectResponse(to: .entropyLevel)
        var second: ArraySlice<UInt8> = [0xBB, 0, 0, 0, 8]
        #expect(try decoder.decode(&second) == .blockingData([0xAA, 0xBB]))
        #expect(try decoder.decode(&second) == .entropyLevel(bits: 8))
        #expect(decoder.outstandingCount == 0)
        try decoder.finish()
    }
}
