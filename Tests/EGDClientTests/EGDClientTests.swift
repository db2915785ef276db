import EGDCodec
import Foundation
import Testing

/// The built `egd-client` binary against ``TestEGDServer`` on a unix socket: output, exit status,
/// the exact requests sent, and the three failures the issue names.
@Suite(.serialized) struct EGDClientTests {
    struct Result {
        var status: Int32
        var output: [UInt8]
        var error: String
        var seconds: Double
        var text: String { String(decoding: output, as: UTF8.self) }
    }

    static let binary: URL = {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("egd-client")
    }()

    func run(_ arguments: [String], input: [UInt8]? = nil) throws -> Result {
        let process = Process()
        process.executableURL = Self.binary
        process.arguments = arguments
        let output = Pipe()
        let error = Pipe()
        process.standardOutput = output
        process.standardError = error
        let stdin = Pipe()
        process.standardInput = stdin
        let start = Date()
        try process.run()
        if let input { stdin.fileHandleForWriting.write(Data(input)) }
        try stdin.fileHandleForWriting.close()
        let out = output.fileHandleForReading.readDataToEndOfFile()
        let err = error.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(
            status: process.terminationStatus,
            output: [UInt8](out),
            error: String(decoding: err, as: UTF8.self),
            seconds: Date().timeIntervalSince(start)
        )
    }

    static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    @Test func binaryWasBuiltBesideTheTests() {
        #expect(FileManager.default.isExecutableFile(atPath: Self.binary.path))
    }

    @Test func levelPrintsTheServersBits() throws {
        let server = try TestEGDServer(behaviour: .serve)
        let result = try run(["level", "--unix", server.path])
        server.finish()
        #expect(result.status == 0)
        #expect(result.text == "4096\n")
        #expect(server.requests == [.entropyLevel])
    }

    @Test func pidPrintsTheServersProcessID() throws {
        let server = try TestEGDServer(behaviour: .serve)
        let result = try run(["pid", "--unix", server.path])
        server.finish()
        #expect(result.status == 0)
        #expect(result.text == "4242\n")
    }

    @Test(arguments: [
        (0, [] as [UInt8]), (1, [1]), (64, [64]), (255, [255]), (256, [255, 1]), (1000, [255, 255, 255, 235]),
        (20000, Array(repeating: 255, count: 78) + [110]),
    ])
    func readPrintsHexAndSplitsLikeQemu(count: Int, commands: [UInt8]) throws {
        let server = try TestEGDServer(behaviour: .serve)
        let result = try run(["read", String(count), "--unix", server.path])
        server.finish()
        #expect(result.status == 0, "\(result.error)")
        #expect(result.text == Self.hex((0..<count).map(TestEGDServer.byte(at:))) + "\n")
        #expect(server.requests == commands.map { .readBlocking(count: $0) })
    }

    @Test func talksToAServerOverLoopbackTCP() throws {
        let server = try TestEGDServer(behaviour: .serve, tcp: true)
        let result = try run(["read", "600", "--tcp", "127.0.0.1:\(server.port)"])
        server.finish()
        #expect(result.status == 0, "\(result.error)")
        #expect(result.text == Self.hex((0..<600).map(TestEGDServer.byte(at:))) + "\n")
        #expect(server.requests == [.readBlocking(count: 255), .readBlocking(count: 255), .readBlocking(count: 90)])
    }

    @Test func readRawWritesTheBytesThemselves() throws {
        let server = try TestEGDServer(behaviour: .serve)
        let result = try run(["read", "300", "--raw", "--unix", server.path])
        server.finish()
        #expect(result.status == 0)
        #expect(result.output == (0..<300).map(TestEGDServer.byte(at:)))
    }

    @Test func nonblockingReadPrintsWhatTheServerHad() throws {
        let server = try TestEGDServer(behaviour: .serve)
        let result = try run(["read", "300", "--nonblocking", "--unix", server.path])
        server.finish()
        #expect(result.status == 0)
        #expect(result.text == Self.hex((0..<20).map(TestEGDServer.byte(at:))) + "\n")
        #expect(server.requests == [.readNonBlocking(count: 255), .readNonBlocking(count: 45)])
    }

    @Test func writeSendsHexArgumentAsCommandsOfAtMost255Bytes() throws {
        let data = (0..<300).map { UInt8(truncatingIfNeeded: $0) }
        let server = try TestEGDServer(behaviour: .serve)
        let result = try run(["write", "--bits-per-byte", "6", Self.hex(data), "--unix", server.path])
        server.finish()
        #expect(result.status == 0, "\(result.error)")
        #expect(
            server.requests == [
                .writeEntropy(bits: 255 * 6, data: try EGDPayload(data[..<255])),
                .writeEntropy(bits: 45 * 6, data: try EGDPayload(data[255...])),
            ])
    }

    @Test func writeReadsStandardInputWithoutAnArgument() throws {
        let server = try TestEGDServer(behaviour: .serve)
        let result = try run(["write", "--unix", server.path], input: [1, 2, 3])
        server.finish()
        #expect(result.status == 0)
        #expect(server.requests == [.writeEntropy(bits: 0, data: [1, 2, 3])])
    }

    @Test func refusedConnectionFailsWithOneLine() throws {
        let server = try TestEGDServer(behaviour: .serve, listening: false)
        let result = try run(["level", "--unix", server.path])
        server.finish()
        #expect(result.status == 1)
        #expect(result.error == "Error: connection refused: unix:\(server.path)\n")
        #expect(result.output.isEmpty)
    }

    @Test func missingSocketFailsWithOneLine() throws {
        let result = try run(["level", "--unix", "/nonexistent/egd-pool"])
        #expect(result.status == 1)
        #expect(
            result.error == "Error: cannot connect to unix:/nonexistent/egd-pool: No such file or directory (errno 2)\n"
        )
    }

    @Test func serverClosingMidResponseFailsWithOneLine() throws {
        let server = try TestEGDServer(behaviour: .closeMidResponse)
        let result = try run(["read", "64", "--unix", server.path])
        server.finish()
        #expect(result.status == 1)
        #expect(
            result.error
                == "Error: server closed the connection mid-response (awaiting the answer to readBlocking at offset 0)\n"
        )
    }

    @Test func silentServerTimesOut() throws {
        let server = try TestEGDServer(behaviour: .silent)
        let result = try run(["read", "64", "--timeout", "0.3", "--unix", server.path])
        server.finish()
        #expect(result.status == 1)
        #expect(result.error == "Error: timed out after 300 ms waiting for the server\n")
        #expect(result.seconds < 5)
    }

    @Test(arguments: [
        (["level"], "Error: give exactly one of --unix PATH and --tcp HOST:PORT"),
        (["level", "--tcp", "localhost"], "Error: invalid TCP address 'localhost' (expected HOST:PORT)"),
        (["read", "--unix", "/x", "--", "-5"], "Error: N must be 0 or more"),
        (["write", "abc", "--unix", "/x"], "Error: 'abc' is not an even number of hex digits"),
    ])
    func badArgumentsFailBeforeConnecting(arguments: [String], message: String) throws {
        let result = try run(arguments)
        #expect(result.status != 0)
        #expect(result.error.hasPrefix(message))
    }
}
