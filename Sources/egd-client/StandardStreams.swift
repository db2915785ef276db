import EGDCodec

#if canImport(Glibc)
    import Glibc
#endif

/// Buffered writes to file descriptor 1, raw or as lowercase hex.
struct StandardOutput {
    private var buffer: [UInt8] = []

    mutating func write(_ data: EGDPayload) {
        buffer.append(contentsOf: data)
        if buffer.count >= 64 * 1024 { flush() }
    }

    mutating func writeHex(_ data: EGDPayload) {
        let digits = Array("0123456789abcdef".utf8)
        for byte in data {
            buffer.append(digits[Int(byte >> 4)])
            buffer.append(digits[Int(byte & 0x0F)])
        }
        if buffer.count >= 64 * 1024 { flush() }
    }

    mutating func writeNewline() { buffer.append(UInt8(ascii: "\n")) }

    /// Writes everything buffered; a closed pipe (EPIPE) or other error ends the output silently,
    /// as `head` expects of a producer.
    mutating func flush() {
        var offset = 0
        while offset < buffer.count {
            let written = buffer[offset...].withUnsafeBytes { Glibc.write(STDOUT_FILENO, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                break
            }
            offset += written
        }
        buffer.removeAll(keepingCapacity: true)
    }
}

/// Reads file descriptor 0 to its end.
enum StandardInput {
    struct ReadError: Error, CustomStringConvertible {
        var errno: Int32
        var description: String { "reading standard input: errno \(errno)" }
    }

    static func readAll() throws -> [UInt8] {
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(STDIN_FILENO, $0.baseAddress, $0.count) }
            if count == 0 { return data }
            if count < 0 {
                if errno == EINTR { continue }
                throw ReadError(errno: errno)
            }
            data.append(contentsOf: chunk[..<count])
        }
    }
}
