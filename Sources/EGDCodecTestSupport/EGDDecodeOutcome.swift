public import EGDCodec

/// Everything a decoder produced from one stream: the messages, and how the stream ended.
///
/// Two outcomes are equal when the decoder yielded the same messages, failed (or not) with the same
/// error at the same offset, and ended in the same state; split-invariance tests compare the outcome
/// of chunked input with that of the whole stream.
public struct EGDDecodeOutcome<Message: Hashable & Sendable>: Hashable, Sendable {
    /// The messages decoded, in order.
    public var messages: [Message]
    /// The error `decode` threw, if it threw.
    public var error: EGDDecodingError?
    /// The error `finish()` threw at the end of the stream, when `decode` did not throw.
    public var finishError: EGDDecodingError?
    /// The decoder's stream offset at the end.
    public var streamOffset: UInt64

    /// An outcome from its parts.
    public init(
        messages: [Message],
        error: EGDDecodingError? = nil,
        finishError: EGDDecodingError? = nil,
        streamOffset: UInt64
    ) {
        self.messages = messages
        self.error = error
        self.finishError = finishError
        self.streamOffset = streamOffset
    }
}

/// Ways to cut a stream into the slices successive `read(2)` calls might return.
public enum EGDStreamSplitter {
    /// `bytes` cut before each of `points` (sorted, in `1..<bytes.count`; others are ignored).
    public static func split(_ bytes: [UInt8], at points: [Int]) -> [ArraySlice<UInt8>] {
        var chunks: [ArraySlice<UInt8>] = []
        var start = 0
        for point in points.sorted() where point > start && point < bytes.count {
            chunks.append(bytes[start..<point])
            start = point
        }
        chunks.append(bytes[start...])
        return chunks
    }

    /// `bytes` in slices of `size` bytes (the last may be shorter); `size` must be at least 1.
    public static func split(_ bytes: [UInt8], chunkSize size: Int) -> [ArraySlice<UInt8>] {
        precondition(size >= 1, "chunk size must be at least 1")
        return stride(from: 0, to: max(bytes.count, 1), by: size).map { bytes[$0..<min($0 + size, bytes.count)] }
    }

    /// `bytes` in slices of pseudo-random sizes in `1...maximum`, reproducible from `seed`.
    public static func split(_ bytes: [UInt8], randomSizesUpTo maximum: Int, seed: UInt64) -> [ArraySlice<UInt8>] {
        var generator = SplitMix64(seed: seed)
        var chunks: [ArraySlice<UInt8>] = []
        var start = 0
        repeat {
            let size = 1 + Int(generator.next() % UInt64(max(maximum, 1)))
            let end = min(start + size, bytes.count)
            chunks.append(bytes[start..<end])
            start = end
        } while start < bytes.count
        return chunks
    }
}

/// How to cut a stream into reads, generated on the fly (no array of slices is built).
public enum EGDChunking: Sendable, Hashable {
    /// The whole stream in one read.
    case whole
    /// Two reads, cut before `at`.
    case cut(at: Int)
    /// Reads of `size` bytes (at least 1).
    case fixed(size: Int)
    /// Reads of pseudo-random sizes in `1...maximum`, reproducible from `seed`.
    case random(maximum: Int, seed: UInt64)

    /// Calls `body` with each successive slice of `stream`; stops early when `body` returns false.
    @inlinable
    public func forEachChunk(of stream: [UInt8], _ body: (ArraySlice<UInt8>) -> Bool) {
        switch self {
        case .whole:
            _ = body(stream[...])
        case .cut(let point):
            let point = Swift.min(Swift.max(point, 0), stream.count)
            if body(stream[..<point]) { _ = body(stream[point...]) }
        case .fixed(let size):
            precondition(size >= 1, "chunk size must be at least 1")
            var start = 0
            repeat {
                let end = Swift.min(start + size, stream.count)
                guard body(stream[start..<end]) else { return }
                start = end
            } while start < stream.count
        case .random(let maximum, let seed):
            var generator = SplitMix64(seed: seed)
            var start = 0
            repeat {
                let end = Swift.min(start + 1 + Int(generator.next() % UInt64(Swift.max(maximum, 1))), stream.count)
                guard body(stream[start..<end]) else { return }
                start = end
            } while start < stream.count
        }
    }
}

/// Feeds chunked streams to the decoders and collects what they produce.
public enum EGDDripFeed {
    /// Decodes a client's stream cut into reads by `chunking` with ``EGDRequestDecoder/decodeAll(_:_:)``,
    /// one call per read: the outcome must equal ``decodeRequests(_:chunking:configuration:)``'s.
    public static func decodeAllRequests(
        _ stream: [UInt8],
        chunking: EGDChunking,
        configuration: EGDRequestDecoder.Configuration = .init()
    ) -> EGDDecodeOutcome<EGDRequest> {
        collectRequests(stream, chunking: chunking, configuration: configuration) {
            (decoder, chunk, messages) throws(EGDDecodingError) in
            var failure: EGDDecodingError?
            chunk.withUnsafeBytes { bytes in
                do throws(EGDDecodingError) {
                    try decoder.decodeAll(bytes) { messages.append($0) }
                } catch {
                    failure = error
                }
            }
            if let failure { throw failure }
        }
    }

    /// Decodes a client's stream cut into reads by `chunking`.
    public static func decodeRequests(
        _ stream: [UInt8],
        chunking: EGDChunking,
        configuration: EGDRequestDecoder.Configuration = .init()
    ) -> EGDDecodeOutcome<EGDRequest> {
        collectRequests(stream, chunking: chunking, configuration: configuration) {
            (decoder, chunk, messages) throws(EGDDecodingError) in
            var input = chunk
            while let request = try decoder.decode(&input) { messages.append(request) }
            if !input.isEmpty { fatalError("EGDRequestDecoder returned nil with \(input.count) bytes unconsumed") }
        }
    }

    /// Feeds each read to `decodeChunk` until it throws, then finishes the stream: the outcome.
    private static func collectRequests(
        _ stream: [UInt8],
        chunking: EGDChunking,
        configuration: EGDRequestDecoder.Configuration,
        decodeChunk: (inout EGDRequestDecoder, ArraySlice<UInt8>, inout [EGDRequest]) throws(EGDDecodingError) -> Void
    ) -> EGDDecodeOutcome<EGDRequest> {
        var decoder = EGDRequestDecoder(configuration: configuration)
        var messages: [EGDRequest] = []
        var failure: EGDDecodingError?
        chunking.forEachChunk(of: stream) { chunk in
            do throws(EGDDecodingError) {
                try decodeChunk(&decoder, chunk, &messages)
            } catch {
                failure = error
                return false
            }
            return true
        }
        if let failure {
            return EGDDecodeOutcome(messages: messages, error: failure, streamOffset: decoder.streamOffset)
        }
        var finishError: EGDDecodingError?
        do { try decoder.finish() } catch { finishError = error }
        return EGDDecodeOutcome(messages: messages, finishError: finishError, streamOffset: decoder.streamOffset)
    }

    /// Decodes a server's stream answering `requests`, cut into reads by `chunking`.
    public static func decodeResponses(
        _ stream: [UInt8],
        chunking: EGDChunking,
        answering requests: [EGDRequest]
    ) -> EGDDecodeOutcome<EGDResponse> {
        var decoder = EGDResponseDecoder()
        for request in requests {
            do { try decoder.expectResponse(to: request) } catch {
                fatalError("decodeResponses: \(error) (pass at most 256 requests that expect answers)")
            }
        }
        var messages: [EGDResponse] = []
        var failure: EGDDecodingError?
        func feed(_ chunk: ArraySlice<UInt8>) -> Bool {
            var input = chunk
            do throws(EGDDecodingError) {
                while let response = try decoder.decode(&input) { messages.append(response) }
            } catch {
                failure = error
                return false
            }
            if !input.isEmpty { fatalError("EGDResponseDecoder returned nil with \(input.count) bytes unconsumed") }
            return true
        }
        chunking.forEachChunk(of: stream, feed)
        // A final empty read drains answers that need no bytes (blocking reads of 0).
        if failure == nil { _ = feed([]) }
        if let failure {
            return EGDDecodeOutcome(messages: messages, error: failure, streamOffset: decoder.streamOffset)
        }
        var finishError: EGDDecodingError?
        do { try decoder.finish() } catch { finishError = error }
        return EGDDecodeOutcome(messages: messages, finishError: finishError, streamOffset: decoder.streamOffset)
    }

    /// Decodes a client's stream, given as the slices that successive reads returned.
    public static func decodeRequests(
        _ chunks: [ArraySlice<UInt8>],
        configuration: EGDRequestDecoder.Configuration = .init()
    ) -> EGDDecodeOutcome<EGDRequest> {
        var decoder = EGDRequestDecoder(configuration: configuration)
        var messages: [EGDRequest] = []
        for chunk in chunks {
            var input = chunk
            do throws(EGDDecodingError) {
                while let request = try decoder.decode(&input) { messages.append(request) }
            } catch {
                return EGDDecodeOutcome(messages: messages, error: error, streamOffset: decoder.streamOffset)
            }
            if !input.isEmpty { fatalError("EGDRequestDecoder returned nil with \(input.count) bytes unconsumed") }
        }
        var finishError: EGDDecodingError?
        do { try decoder.finish() } catch { finishError = error }
        return EGDDecodeOutcome(messages: messages, finishError: finishError, streamOffset: decoder.streamOffset)
    }

    /// Decodes a server's stream answering `requests` (sent in that order, at most
    /// ``EGDResponseDecoder/maximumOutstandingRequests`` of them expecting answers).
    public static func decodeResponses(
        _ chunks: [ArraySlice<UInt8>],
        answering requests: [EGDRequest]
    ) -> EGDDecodeOutcome<EGDResponse> {
        var decoder = EGDResponseDecoder()
        for request in requests {
            do { try decoder.expectResponse(to: request) } catch {
                fatalError("decodeResponses: \(error) (pass at most 256 requests that expect answers)")
            }
        }
        var messages: [EGDResponse] = []
        for chunk in chunks + [[]] {  // a final empty read drains answers that need no bytes
            var input = chunk
            do {
                while let response = try decoder.decode(&input) { messages.append(response) }
            } catch {
                return EGDDecodeOutcome(messages: messages, error: error, streamOffset: decoder.streamOffset)
            }
            if !input.isEmpty { fatalError("EGDResponseDecoder returned nil with \(input.count) bytes unconsumed") }
        }
        var finishError: EGDDecodingError?
        do { try decoder.finish() } catch { finishError = error }
        return EGDDecodeOutcome(messages: messages, finishError: finishError, streamOffset: decoder.streamOffset)
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny reproducible generator for chunk sizes and seeds.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    /// A generator whose sequence is fixed by `seed`.
    public init(seed: UInt64) { state = seed }

    /// The next 64 pseudo-random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z &>> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z &>> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z &>> 31)
    }
}
