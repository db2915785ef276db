import Testing

@testable import EGDCodec

@Suite struct EGDPayloadTests {
    static let twoWrites: [UInt8] = [0x03, 0x00, 0x08, 0x02, 0xAA, 0xBB, 0x03, 0x00, 0x08, 0x02, 0xCC, 0xDD]

    @Test func decoderReusesItsBufferOnceTheLastPayloadIsDropped() throws {
        var decoder = EGDRequestDecoder()
        var input = Self.twoWrites[...]
        var first: ObjectIdentifier?
        if case .writeEntropy(_, let data) = try decoder.decode(&input) {
            first = data.storage.map(ObjectIdentifier.init)
        }
        guard case .writeEntropy(_, let second) = try decoder.decode(&input) else {
            Issue.record("expected a write")
            return
        }
        #expect(first != nil && second.storage.map(ObjectIdentifier.init) == first)
        #expect(second == [0xCC, 0xDD])
    }

    @Test func aPayloadTheCallerKeepsIsNeverOverwritten() throws {
        var decoder = EGDRequestDecoder()
        var input = Self.twoWrites[...]
        let kept = try decoder.decode(&input)
        let next = try decoder.decode(&input)
        #expect(kept == .writeEntropy(bits: 8, data: [0xAA, 0xBB]))
        #expect(next == .writeEntropy(bits: 8, data: [0xCC, 0xDD]))
    }

    @Test func aResponsePayloadTheCallerKeepsIsNeverOverwritten() throws {
        var decoder = EGDResponseDecoder()
        try decoder.expectResponse(to: .readBlocking(count: 2))
        try decoder.expectResponse(to: .readNonBlocking(count: 2))
        var input: ArraySlice<UInt8> = [0x01, 0x02, 0x02, 0x03, 0x04]
        let kept = try decoder.decode(&input)
        let next = try decoder.decode(&input)
        #expect(kept == .blockingData([0x01, 0x02]))
        #expect(next == .nonBlockingData([0x03, 0x04]))
    }

    @Test func copiesAreIndependent() throws {
        var original = try EGDPayload([1, 2, 3])
        let copy = original
        try original.append(4)
        #expect(Array(copy) == [1, 2, 3])
        #expect(Array(original) == [1, 2, 3, 4])
        #expect(EGDPayload().storage == nil)
        #expect(EGDPayload() == [])
        #expect(original.description == "01020304")
    }
}
