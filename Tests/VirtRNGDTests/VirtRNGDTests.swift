import EntropySources
import Foundation
import Testing

/// The built `virtrngd` binary: bad configuration gives one line and exit 2, SIGTERM drains and
/// removes the socket, a stale socket is replaced and a live one refused.
@Suite(.serialized, .timeLimit(.minutes(1))) struct VirtRNGDTests {
    static let binary: URL = {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("virtrngd")
    }()

    struct Outcome {
        var status: Int32
        var error: String
        var lines: [Substring] { error.split(separator: "\n") }
    }

    func makeDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent(
            "virtrngd-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// Launches virtrngd with its standard error in a pipe.
    func launch(_ arguments: [String]) throws -> (Process, Pipe) {
        let process = Process()
        process.executableURL = Self.binary
        process.arguments = arguments
        let error = Pipe()
        process.standardError = error
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        return (process, error)
    }

    /// Waits up to 10 s for `condition`, polling every 10 ms.
    func wait(until condition: () -> Bool) {
        let deadline = Date().addingTimeInterval(10)
        while !condition() && Date() < deadline { usleep(10_000) }
    }

    /// Runs virtrngd to completion (for configurations that must fail at once).
    func run(_ arguments: [String]) throws -> Outcome {
        let (process, error) = try launch(arguments)
        wait { !process.isRunning }
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
            return Outcome(status: -1, error: "still running")
        }
        let text = String(decoding: error.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return Outcome(status: process.terminationStatus, error: text)
    }

    /// Starts virtrngd and waits for its socket to appear.
    func start(_ arguments: [String], socket: String) throws -> (Process, Pipe) {
        let (process, error) = try launch(arguments)
        wait { FileManager.default.fileExists(atPath: socket) || !process.isRunning }
        return (process, error)
    }

    @Test(
        "Bad configuration: one line on standard error, exit status 2",
        arguments: [
            (["--source", "nonsense"], "unknown source"),
            (["--source", "file:/nonexistent/entropy"], "/nonexistent/entropy"),
            (["--rate", "fast"], "--rate fast"),
            (["--rate", "10k", "--ceil", "1k"], "ceil"),
            (["--period", "100"], "--period needs --max-bytes"),
            (["--socket", "/nonexistent-dir/sock"], "/nonexistent-dir/sock"),
            (["--socket", "/tmp/x,speed=3"], "unknown option 'speed'"),
            (["--socket", "/tmp/x,mode=999"], "mode=999 is not octal"),
            (["--on-source-failure", "panic"], "wait or fail"),
            (["--tcp", "nohostport"], "HOST:PORT"),
        ])
    func badConfiguration(arguments: [String], mentions: String) throws {
        let directory = try makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        // Keep the default socket out of the way unless the case names one.
        let socketArguments =
            arguments.contains("--socket") || arguments.contains("--tcp")
            ? [] : ["--socket", directory.appendingPathComponent("s").path]
        let outcome = try run(arguments + socketArguments)
        #expect(outcome.status == 2, "\(outcome.error)")
        #expect(outcome.lines.count == 1, "one line: \(outcome.error)")
        #expect(outcome.error.contains(mentions), "\(outcome.error)")
        #expect(!outcome.error.contains("Fatal error"))
    }

    @Test("SIGTERM: serves, then drains, removes its socket, logs what it served, exits 0")
    func servesAndShutsDown() throws {
        let directory = try makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let socket = directory.appendingPathComponent("egd").path
        let (process, errorPipe) = try start(["--socket", socket + ",mode=660"], socket: socket)
        let attributes = try FileManager.default.attributesOfItem(atPath: socket)
        #expect((attributes[.posixPermissions] as? Int) == 0o660, "mode=660 sets who may connect")
        let client = try EGDClient.connect(to: .unix(path: socket), timeout: .seconds(5))
        var received = 0
        let got = try client.read(count: 1_000, blocking: true) { received += $0.count }
        #expect(got == 1_000 && received == 1_000)
        client.connection.close()
        process.terminate()
        process.waitUntilExit()
        let log = String(decoding: errorPipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 0)
        #expect(!FileManager.default.fileExists(atPath: socket), "socket removed")
        #expect(log.contains("served unix:\(socket) class=1:2 bytes=1000"), "\(log)")
    }

    @Test("A second daemon on a live socket is refused; a stale socket file is replaced")
    func liveAndStaleSockets() throws {
        let directory = try makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let socket = directory.appendingPathComponent("egd").path
        let (first, _) = try start(["--socket", socket], socket: socket)
        let second = try run(["--socket", socket])
        #expect(second.status == 2)
        #expect(second.error.contains("in use by a running daemon"), "\(second.error)")
        #expect(FileManager.default.fileExists(atPath: socket), "the live daemon's socket is left alone")
        // Kill the first without letting it clean up: its socket file goes stale.
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()
        #expect(FileManager.default.fileExists(atPath: socket))
        let (third, thirdError) = try start(["--socket", socket], socket: socket)
        // The stale file exists already: wait until the new daemon accepts on it.
        var connected: EGDClient?
        let deadline = Date().addingTimeInterval(10)
        while connected == nil && Date() < deadline {
            connected = try? EGDClient.connect(to: .unix(path: socket), timeout: .seconds(5))
            if connected == nil { usleep(20_000) }
        }
        let client = try #require(connected)
        #expect(try client.entropyLevel() > 0)
        client.connection.close()
        third.terminate()
        third.waitUntilExit()
        let log = String(decoding: thirdError.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(log.contains("removed stale socket"), "\(log)")
        #expect(third.terminationStatus == 0)
    }
}
