public import EGDCodec

/// The libFuzzer harnesses for both decoders. Each checks properties, not only "no crash"; a
/// violated property calls `fatalError` with the evidence, which libFuzzer reports as a crash.
///
/// Server input: `[configuration] [split seed] stream…`. The configuration byte's low 5 bits are
/// the accepted commands, bit 5 turns off the overstated-entropy check.
///
/// Client input: `[n] [split seed] n × [kind, count] stream…`: `n & 15` requests (kind modulo 5 is the
/// command, count is `NN` for reads and the data length for writes), then the server's stream.
public enum EGDFuzzHarness {
    /// Runs the server-side (request decoder) properties on one fuzz input.
    public static func fuzzServer(_ data: UnsafeRawBufferPointer) {
        guard data.count >= 2 else { return }
        let configuration = EGDRequestDecoder.Configuration(
            acceptedCommands: EGDCommandSet(rawValue: data[0] & 0x1F),
            rejectsOverstatedEntropy: data[0] & 0x20 == 0
        )
        let seed = UInt64(data[1])
        let stream = Array(data[2...])
        checkServerStream(stream, configuration: configuration, seed: seed)
        checkRequestRoundTrip(stream, seed: seed)
    }

    /// Runs the client-side (response decoder) properties on one fuzz input.
    public static func fuzzClient(_ data: UnsafeRawBufferPointer) {
        guard data.count >= 2 else { return }
        let requestCount = Int(data[0] & 0x0F)
        let seed = UInt64(data[1])
        var requests: [EGDRequest] = []
        var index = 2
        while requests.count < requestCount && index + 1 < data.count {
            requests.append(request(kind: data[index], count: data[index + 1], filler: data[index]))
            index += 2
        }
        let stream = Array(data[index...])
        checkClientStream(stream, answering: requests, seed: seed)
        checkResponseRoundTrip(requests: requests, material: stream, seed: seed)
    }

    /// Properties of the request decoder on an arbitrary stream: every split gives the one-shot
    /// outcome; re-encoding the messages reproduces the consumed prefix; errors name the right byte.
    public static func checkServerStream(
        _ stream: [UInt8],
        configuration: EGDRequestDecoder.Configuration = .init(),
        seed: UInt64
    ) {
        let whole = EGDDripFeed.decodeRequests(stream, chunking: .whole, configuration: configuration)
        for chunking in splits(of: stream, seed: seed) {
            let split = EGDDripFeed.decodeRequests(stream, chunking: chunking, configuration: configuration)
            check(split == whole, "split request decode differs: \(split) vs one-shot \(whole), stream \(stream)")
            let batch = EGDDripFeed.decodeAllRequests(stream, chunking: chunking, configuration: configuration)
            check(batch == whole, "decodeAll differs: \(batch) vs one-shot decode \(whole), stream \(stream)")
        }
        var reencoded: [UInt8] = []
        for message in whole.messages { message.append(to: &reencoded) }
        check(stream.starts(with: reencoded), "re-encoded requests \(reencoded) are not a prefix of \(stream)")
        checkEnding(whole, stream: stream, completeBytes: reencoded.count, maximumHeader: 4)
        if let failure = whole.finishError {
            check(
                failure == .truncatedMessage(byte: stream[reencoded.count], offset: UInt64(reencoded.count)),
                "finish error \(failure) does not name the incomplete command at \(reencoded.count)")
        }
    }

    /// Properties of the response decoder on an arbitrary stream answering `requests`.
    public static func checkClientStream(_ stream: [UInt8], answering requests: [EGDRequest], seed: UInt64) {
        let whole = EGDDripFeed.decodeResponses(stream, chunking: .whole, answering: requests)
        for chunking in splits(of: stream, seed: seed) {
            let split = EGDDripFeed.decodeResponses(stream, chunking: chunking, answering: requests)
            check(split == whole, "split response decode differs: \(split) vs one-shot \(whole)")
        }
        var reencoded: [UInt8] = []
        for message in whole.messages {
            do { try message.append(to: &reencoded) } catch {
                check(false, "decoded \(message) does not encode: \(error)")
            }
        }
        check(stream.starts(with: reencoded), "re-encoded responses \(reencoded) are not a prefix of \(stream)")
        let answered = requests.filter { $0.command != .writeEntropy }
        for (request, response) in zip(answered, whole.messages) {
            do { try response.validate(answering: request) } catch {
                check(false, "decoded \(response) does not answer \(request): \(error)")
            }
        }
        // A PID answer's error may come after its whole header and up to 255 text bytes.
        checkEnding(whole, stream: stream, completeBytes: reencoded.count, maximumHeader: 256)
        if let failure = whole.finishError {
            let pending = answered[whole.messages.count]
            check(
                failure == .truncatedMessage(byte: pending.command.rawValue, offset: UInt64(reencoded.count)),
                "finish error \(failure) does not name \(pending) at \(reencoded.count)")
        }
        if whole.error == nil && whole.finishError == nil {
            check(whole.messages.count == answered.count, "stream ended cleanly with answers missing")
        }
    }

    /// Encodes requests built from `material` into one buffer, then decodes them in splits:
    /// the decoder must return exactly the requests, with no error.
    public static func checkRequestRoundTrip(_ material: [UInt8], seed: UInt64) {
        var requests: [EGDRequest] = []
        var index = 0
        while index + 1 < material.count && requests.count < 12 {
            let next = request(kind: material[index], count: material[index + 1], filler: material[index])
            // Keep estimates honest so the default configuration accepts every write.
            if case .writeEntropy(_, let data) = next {
                requests.append(.writeEntropy(bits: UInt16(data.count) * 8 / 2, data: data))
            } else {
                requests.append(next)
            }
            index += 2
        }
        let stream = encodeAll(requests)
        let expected = EGDDecodeOutcome(messages: requests, streamOffset: UInt64(stream.count))
        for chunking in [EGDChunking.random(maximum: 1 + Int(seed % 64), seed: seed)] {
            let outcome = EGDDripFeed.decodeRequests(stream, chunking: chunking)
            check(outcome == expected, "request round trip failed: \(outcome) vs \(expected)")
        }
    }

    /// Builds valid answers to `requests` from `material`, encodes them through `encode(into:)`
    /// and decodes them in splits: the decoder must return exactly those answers, with no error.
    public static func checkResponseRoundTrip(requests: [EGDRequest], material: [UInt8], seed: UInt64) {
        var generator = SplitMix64(seed: seed ^ UInt64(material.count))
        var responses: [EGDResponse] = []
        for request in requests {
            let response: EGDResponse
            switch request {
            case .writeEntropy: continue
            case .entropyLevel: response = .entropyLevel(bits: UInt32(truncatingIfNeeded: generator.next()))
            case .reportPID: response = .processID(Int(truncatingIfNeeded: generator.next()) >> 3)
            case .readNonBlocking(let count):
                let length = Int(generator.next() % (UInt64(count) + 1))
                response = .nonBlockingData(payload(length: length, from: material, generator: &generator))
            case .readBlocking(let count):
                response = .blockingData(payload(length: Int(count), from: material, generator: &generator))
            }
            do { try response.validate(answering: request) } catch {
                check(false, "\(response) vs \(request): \(error)")
            }
            responses.append(response)
        }
        let stream = encodeAll(responses)
        let expected = EGDDecodeOutcome(messages: responses, streamOffset: UInt64(stream.count))
        for chunking in [EGDChunking.random(maximum: 1 + Int(seed % 64), seed: seed)] {
            let outcome = EGDDripFeed.decodeResponses(stream, chunking: chunking, answering: requests)
            check(outcome == expected, "response round trip failed: \(outcome) vs \(expected)")
        }
    }

    // MARK: - Helpers

    /// A request from two fuzz bytes: `kind % 5` is the command; `count` the read count or the
    /// write's data length (data bytes all `filler`, estimate `count` bits).
    static func request(kind: UInt8, count: UInt8, filler: UInt8) -> EGDRequest {
        switch kind % 5 {
        case 0: return .entropyLevel
        case 1: return .readNonBlocking(count: count)
        case 2: return .readBlocking(count: count)
        case 3:
            var data = EGDPayload()
            for _ in 0..<count { append(filler, to: &data) }
            return .writeEntropy(bits: UInt16(count), data: data)
        default: return .reportPID
        }
    }

    static func payload(length: Int, from material: [UInt8], generator: inout SplitMix64) -> EGDPayload {
        var data = EGDPayload()
        for _ in 0..<length {
            let byte =
                material.isEmpty
                ? UInt8(truncatingIfNeeded: generator.next()) : material[Int(generator.next() % UInt64(material.count))]
            append(byte, to: &data)
        }
        return data
    }

    static func append(_ byte: UInt8, to payload: inout EGDPayload) {
        do { try payload.append(byte) } catch { fatalError("harness overfilled a payload: \(error)") }
    }

    /// Encodes every message into one buffer through the allocation-free `encode(into:)`.
    static func encodeAll(_ requests: [EGDRequest]) -> [UInt8] {
        let total = requests.reduce(0) { $0 + $1.encodedCount }
        return [UInt8](unsafeUninitializedCapacity: total) { buffer, initialized in
            var offset = 0
            for request in requests {
                do {
                    offset += try request.encode(
                        into: UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(buffer)[offset...]))
                } catch { fatalError("encoding \(request) into an exact buffer failed: \(error)") }
            }
            check(offset == total, "encodedCount disagrees with encode(into:)")
            initialized = total
        }
    }

    static func encodeAll(_ responses: [EGDResponse]) -> [UInt8] {
        let total = responses.reduce(0) { $0 + $1.encodedCount }
        return [UInt8](unsafeUninitializedCapacity: total) { buffer, initialized in
            var offset = 0
            for response in responses {
                do {
                    offset += try response.encode(
                        into: UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(buffer)[offset...]))
                } catch { fatalError("encoding \(response) into an exact buffer failed: \(error)") }
            }
            check(offset == total, "encodedCount disagrees with encode(into:)")
            initialized = total
        }
    }

    /// The splits every property is checked against: random sizes from the seed, a single cut
    /// at a seed-chosen point, and byte-by-byte for short streams.
    static func splits(of stream: [UInt8], seed: UInt64) -> [EGDChunking] {
        var result = [EGDChunking.random(maximum: 1 + Int(seed % 17) * 16, seed: seed)]
        if stream.count > 1 { result.append(.cut(at: 1 + Int(seed) % (stream.count - 1))) }
        if stream.count <= 64 { result.append(.fixed(size: 1)) }
        return result
    }

    /// The error (if any) names a byte of the stream, at or after the complete messages and within
    /// `maximumHeader` bytes of them; a clean decode consumed the whole stream.
    static func checkEnding<Message>(
        _ outcome: EGDDecodeOutcome<Message>,
        stream: [UInt8],
        completeBytes: Int,
        maximumHeader: Int
    ) {
        if let error = outcome.error {
            let offset = Int(error.offset)
            check(
                offset >= completeBytes && offset < stream.count && offset - completeBytes < maximumHeader,
                "error \(error) lies outside the incomplete message at \(completeBytes)")
            check(stream[offset] == error.byte, "error \(error) names byte \(error.byte), stream has \(stream[offset])")
            check(outcome.streamOffset == error.offset, "stream offset \(outcome.streamOffset) ≠ error offset")
        } else {
            check(
                outcome.streamOffset == UInt64(stream.count),
                "decoder stopped at \(outcome.streamOffset) of \(stream.count)")
            check(
                (outcome.finishError == nil) == (completeBytes == stream.count) || Message.self == EGDResponse.self,
                "finish() disagrees with the incomplete tail at \(completeBytes)")
        }
    }

    static func check(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
        if !condition() { fatalError("EGD property violated: \(message())") }
    }
}
