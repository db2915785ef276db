import ArgumentParser
import EGDCodec
import EntropySources

/// `egd-client`: asks an EGD server for its level, entropy or PID, or writes entropy to it.
struct EGDClientCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "egd-client",
        abstract: "Talk to an EGD (Entropy Gathering Daemon) server over a unix socket or TCP.",
        discussion: """
            Exit status 0 on success, 1 on any failure (refused connection, timeout, server closing \
            mid-response, protocol violation), with a one-line error on standard error.
            """,
        subcommands: [Level.self, Read.self, Write.self, PID.self]
    )
}

/// Where to connect, and how long to wait.
struct ConnectionOptions: ParsableArguments {
    @Option(name: .customLong("unix"), help: ArgumentHelp("Unix socket of the server.", valueName: "path"))
    var unixPath: String?

    @Option(name: .customLong("tcp"), help: ArgumentHelp("TCP address of the server.", valueName: "host:port"))
    var tcpAddress: String?

    @Option(help: "Seconds to wait at each step: connecting, sending, and between bytes of an answer.")
    var timeout: Double = 10

    func validate() throws {
        guard (unixPath == nil) != (tcpAddress == nil) else {
            throw ValidationError("give exactly one of --unix PATH and --tcp HOST:PORT")
        }
        guard timeout > 0, timeout <= 86_400 else { throw ValidationError("--timeout must be in (0, 86400] seconds") }
    }

    func connect() throws -> EGDClient {
        let endpoint: EGDEndpoint
        if let unixPath {
            endpoint = .unix(path: unixPath)
        } else {
            endpoint = try EGDEndpoint(tcpAddress: tcpAddress ?? "")
        }
        return try EGDClient.connect(to: endpoint, timeout: .milliseconds(Int((timeout * 1000).rounded(.up))))
    }
}

extension EGDClientCommand {
    /// `level`: prints the server's entropy level in bits.
    struct Level: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the entropy the server holds, in bits (command 00).")

        @OptionGroup var connection: ConnectionOptions

        func run() throws {
            let client = try connection.connect()
            print(try client.entropyLevel())
        }
    }

    /// `read N`: prints N bytes of entropy.
    struct Read: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Read N bytes of entropy (command 02, or 01 with --nonblocking).",
            discussion: "N may exceed 255: the read is split into commands of at most 255 bytes, pipelined."
        )

        @OptionGroup var connection: ConnectionOptions

        @Argument(help: "Number of bytes to read.")
        var count: Int

        @Flag(help: "Ask without waiting (command 01): the server may return fewer bytes, even none.")
        var nonblocking = false

        @Flag(help: "Write the bytes to standard output as they are instead of as hex.")
        var raw = false

        func validate() throws {
            guard count >= 0 else { throw ValidationError("N must be 0 or more") }
        }

        func run() throws {
            let client = try connection.connect()
            var output = StandardOutput()
            try client.read(count: count, blocking: !nonblocking) { data in
                if raw { output.write(data) } else { output.writeHex(data) }
            }
            if !raw { output.writeNewline() }
            output.flush()
        }
    }

    /// `write`: sends entropy to the server's pool.
    struct Write: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write entropy to the server's pool (command 03), from a hex argument or standard input.",
            discussion: "Data longer than 255 bytes is sent as several commands. The protocol has no answer."
        )

        @OptionGroup var connection: ConnectionOptions

        @Option(help: "Bits of entropy to credit per byte, 0 to 8.")
        var bitsPerByte = 0

        @Argument(help: "The data in hex; without it, standard input is read to its end.")
        var hex: String?

        func validate() throws {
            guard (0...8).contains(bitsPerByte) else { throw ValidationError("--bits-per-byte must be 0 to 8") }
            if let hex, decodeHex(hex) == nil { throw ValidationError("'\(hex)' is not an even number of hex digits") }
        }

        func run() throws {
            let data = try hex.flatMap(decodeHex) ?? StandardInput.readAll()
            let client = try connection.connect()
            try client.write(data, bitsPerByte: bitsPerByte)
        }
    }

    /// `pid`: prints the server's process ID.
    struct PID: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the server's process ID (command 04).")

        @OptionGroup var connection: ConnectionOptions

        func run() throws {
            let client = try connection.connect()
            print(try client.processID())
        }
    }
}

/// `"0aff"` → `[0x0a, 0xff]`, or nil when not an even number of hex digits.
func decodeHex(_ text: String) -> [UInt8]? {
    let digits = Array(text.utf8)
    guard digits.count % 2 == 0 else { return nil }
    var bytes: [UInt8] = []
    bytes.reserveCapacity(digits.count / 2)
    var index = 0
    while index < digits.count {
        guard let high = hexValue(digits[index]), let low = hexValue(digits[index + 1]) else { return nil }
        bytes.append(high << 4 | low)
        index += 2
    }
    return bytes
}

private func hexValue(_ digit: UInt8) -> UInt8? {
    switch digit {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return digit - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return digit - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return digit - UInt8(ascii: "A") + 10
    default: return nil
    }
}
