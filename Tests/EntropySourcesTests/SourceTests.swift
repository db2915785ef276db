import EntropySourcesTestSupport
import Foundation
import Synchronization
import Testing

@testable import EntropySources

/// Simulated system calls: each open/read/getrandom call takes the next scripted result.
final class SyscallScript: @unchecked Sendable {
    // @unchecked Sendable: the mutex guards every field.
    let lock = Mutex<[Int]>([])
    init(_ results: [Int]) { lock.withLock { $0 = results } }
    func next() -> Int { lock.withLock { $0.isEmpty ? 0 : $0.removeFirst() } }

    func calls(openResult: Int32 = 3, status: (mode: UInt32, uid: UInt32)? = (0o100644, 0)) -> SystemCalls {
        SystemCalls(
            open: { _, _ in openResult },
            read: { _, buffer in
                let n = self.next()
                if n > 0 {
                    buffer.baseAddress!.initializeMemory(as: UInt8.self, repeating: 0xAB, count: min(n, buffer.count))
                }
                return n
            },
            close: { _ in },
            fileStatus: { _ in status },
            pathStatus: { _ in status },
            getrandom: { buffer, _ in
                let n = self.next()
                if n > 0 {
                    buffer.baseAddress!.initializeMemory(as: UInt8.self, repeating: 0xCD, count: min(n, buffer.count))
                }
                return n
            })
    }
}

func temporaryFile(_ bytes: [UInt8]) -> String {
    let path = NSTemporaryDirectory() + "virtrng-\(UUID().uuidString)"
    _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
    return path
}

@Suite struct GetRandomSourceTests {
    @Test(arguments: [1, 64, 256, 257, 65_536])
    func fillsTheWholeBuffer(size: Int) throws {
        var source = GetRandomSource()
        var bytes = [UInt8](repeating: 0, count: size)
        let n = try bytes.withUnsafeMutableBytes { try source.fill($0) }
        #expect(n == size)
        if size >= 64 { #expect(Set(bytes).count > 16) }
    }

    @Test func retriesEINTRAndShortCounts() throws {
        let script = SyscallScript([-Int(EINTR), 10, -Int(EINTR), 20, 34])
        var source = GetRandomSource(calls: script.calls())
        var bytes = [UInt8](repeating: 0, count: 64)
        let n = try bytes.withUnsafeMutableBytes { try source.fill($0) }
        #expect(n == 64)
        #expect(bytes.allSatisfy { $0 == 0xCD })
    }

    @Test func reportsErrnoAndEAGAIN() {
        var source = GetRandomSource(calls: SyscallScript([-Int(ENOSYS)]).calls())
        var bytes = [UInt8](repeating: 0, count: 8)
        #expect(throws: EntropySourceError.readFailed(source: "getrandom", errno: SystemErrno(ENOSYS))) {
            _ = try bytes.withUnsafeMutableBytes { try source.fill($0) }
        }
        var nonBlocking = GetRandomSource(flags: 1, calls: SyscallScript([-Int(EAGAIN)]).calls())
        #expect(throws: EntropySourceError.wouldBlock(source: "getrandom")) {
            _ = try bytes.withUnsafeMutableBytes { try nonBlocking.fill($0) }
        }
    }

    @Test func emptyBufferTouchesNothing() throws {
        var source = GetRandomSource(calls: SyscallScript([-Int(EIO)]).calls())
        #expect(try source.fill(UnsafeMutableRawBufferPointer(start: nil, count: 0)) == 0)
    }
}

@Suite struct FileSourceTests {
    @Test func readsDevURandom() throws {
        let source = try FileSource(path: "/dev/urandom")
        #expect(!source.mayBlock)
        var bytes = [UInt8](repeating: 0, count: 4096)
        try bytes.withUnsafeMutableBytes { try source.fillAll($0) }
        #expect(Set(bytes).count > 200)
    }

    @Test func regularFileEndsWithExhaustedNeverZero() throws {
        let path = temporaryFile(Array(0..<100))
        defer { unlink(path) }
        let source = try FileSource(path: path)
        #expect(!source.mayBlock)
        var bytes = [UInt8](repeating: 0, count: 64)
        #expect(try bytes.withUnsafeMutableBytes { try source.fill($0) } == 64)
        #expect(try bytes.withUnsafeMutableBytes { try source.fill($0) } == 36)
        #expect(bytes[0..<36] == ArraySlice(64..<100))
        #expect(throws: EntropySourceError.exhausted(source: path)) {
            _ = try bytes.withUnsafeMutableBytes { try source.fill($0) }
        }
        #expect(throws: EntropySourceError.exhausted(source: path)) {
            try bytes.withUnsafeMutableBytes { try source.fillAll($0) }
        }
    }

    @Test func missingPathIsNotFound() {
        #expect(throws: EntropySourceError.notFound(path: "/nonexistent/virtrng")) {
            _ = try FileSource(path: "/nonexistent/virtrng")
        }
    }

    @Test func accessDeniedSaysRootOnly() {
        let script = SyscallScript([])
        #expect(throws: EntropySourceError.permissionDenied(path: "/dev/hwrng", rootOnly: true)) {
            _ = try FileSource(
                path: "/dev/hwrng", nonBlocking: false,
                calls: script.calls(openResult: -EACCES, status: (0o020600, 0)))
        }
        #expect(throws: EntropySourceError.permissionDenied(path: "/srv/data", rootOnly: false)) {
            _ = try FileSource(
                path: "/srv/data", nonBlocking: false,
                calls: script.calls(openResult: -EACCES, status: (0o100644, 1000))
            )
        }
        let message = EntropySourceError.permissionDenied(path: "/dev/hwrng", rootOnly: true).description
        #expect(message.hasPrefix("permission denied: /dev/hwrng is root-only"))
    }

    @Test func shortReadsEINTRAndErrors() throws {
        let script = SyscallScript([
            -Int(EINTR), 3, -Int(EINTR), -Int(EINTR), 1, -Int(EAGAIN), -Int(EIO), -Int(ENODEV), 0,
        ])
        let source = try FileSource(path: "/fake", nonBlocking: false, calls: script.calls())
        var bytes = [UInt8](repeating: 0, count: 16)
        #expect(try bytes.withUnsafeMutableBytes { try source.fill($0) } == 3)
        #expect(try bytes.withUnsafeMutableBytes { try source.fill($0) } == 1)
        #expect(throws: EntropySourceError.wouldBlock(source: "/fake")) {
            _ = try bytes.withUnsafeMutableBytes { try source.fill($0) }
        }
        #expect(throws: EntropySourceError.readFailed(source: "/fake", errno: SystemErrno(EIO))) {
            _ = try bytes.withUnsafeMutableBytes { try source.fill($0) }
        }
        #expect(throws: EntropySourceError.noHardwareRNG(path: "/fake", available: [])) {
            _ = try bytes.withUnsafeMutableBytes { try source.fill($0) }
        }
        #expect(throws: EntropySourceError.exhausted(source: "/fake")) {
            _ = try bytes.withUnsafeMutableBytes { try source.fill($0) }
        }
    }

    @Test func fifoDeliversShortReadsThenExhausted() throws {
        let path = NSTemporaryDirectory() + "virtrng-fifo-\(UUID().uuidString)"
        #expect(mkfifo(path, 0o600) == 0)
        defer { unlink(path) }
        let writer = Thread {
            let fd = open(path, O_WRONLY)
            for chunk in 0..<4 {
                var bytes = [UInt8](repeating: UInt8(chunk), count: 5)
                _ = write(fd, &bytes, 5)
                usleep(2_000)
            }
            close(fd)
        }
        writer.start()
        let source = try FileSource(path: path)
        #expect(source.mayBlock)
        var bytes = [UInt8](repeating: 0, count: 64)
        var total = 0
        var fills = 0
        do {
            while true {
                let n = try bytes.withUnsafeMutableBytes { try source.fill($0) }
                #expect(n >= 1 && n <= 20)
                total += n
                fills += 1
            }
        } catch let error as EntropySourceError {
            #expect(error == .exhausted(source: path))
        }
        #expect(total == 20)
        #expect(fills >= 2)
    }
}

@Suite struct HardwareRNGSourceTests {
    func sysfs(current: String, available: String) -> String {
        let dir = NSTemporaryDirectory() + "virtrng-sysfs-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: dir + "/rng_current", contents: Data((current + "\n").utf8))
        _ = FileManager.default.createFile(atPath: dir + "/rng_available", contents: Data((available + "\n").utf8))
        return dir
    }

    @Test func noCurrentRNGIsAClearError() {
        let dir = sysfs(current: "none", available: "")
        #expect(throws: EntropySourceError.noHardwareRNG(path: "/dev/hwrng", available: [])) {
            _ = try HardwareRNGSource(sysfsDirectory: dir)
        }
    }

    @Test func missingNodeIsNotFound() {
        let dir = sysfs(current: "tpm-rng-0", available: "tpm-rng-0 ")
        #expect(throws: EntropySourceError.notFound(path: "/nonexistent/hwrng")) {
            _ = try HardwareRNGSource(devicePath: "/nonexistent/hwrng", sysfsDirectory: dir)
        }
    }

    @Test func rootOnlyNodeIsPermissionDenied() {
        let dir = sysfs(current: "virtio_rng.0", available: "virtio_rng.0 ")
        let calls = SyscallScript([]).calls(openResult: -EACCES, status: (0o020600, 0))
        #expect(throws: EntropySourceError.permissionDenied(path: "/dev/hwrng", rootOnly: true)) {
            _ = try HardwareRNGSource(devicePath: "/dev/hwrng", sysfsDirectory: dir, calls: calls)
        }
    }

    @Test func readsFileBackedDeviceAndReportsCurrentRNG() throws {
        let dir = sysfs(current: "virtio_rng.0", available: "virtio_rng.0 tpm-rng-0 ")
        let path = temporaryFile(Array(repeating: 7, count: 32))
        defer { unlink(path) }
        let source = try HardwareRNGSource(devicePath: path, sysfsDirectory: dir)
        #expect(source.currentRNG == "virtio_rng.0")
        #expect(source.availableRNGs == ["virtio_rng.0", "tpm-rng-0"])
        #expect(source.mayBlock)
    }

    /// The machine's own /dev/hwrng (a host-throttled virtio-rng, ~9 kB/s, root-only): 16 bytes, read on
    /// a thread of its own and given 5 s, so a stalled device cannot hang the suite.
    @Test func readsTheRealDeviceWhenPresent() throws {
        guard access("/dev/hwrng", F_OK) == 0 else { return }
        let result = Mutex<Result<[UInt8], EntropySourceError>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread {
            do {
                let source = try HardwareRNGSource()
                var bytes = [UInt8](repeating: 0, count: 16)
                try bytes.withUnsafeMutableBytes { try source.fillAll($0) }
                result.withLock { $0 = .success(bytes) }
            } catch let error as EntropySourceError {
                result.withLock { $0 = .failure(error) }
            } catch {
                Issue.record("untyped error \(error)")
            }
            done.signal()
        }.start()
        guard done.wait(timeout: .now() + 5) == .success else {
            Issue.record("/dev/hwrng delivered no 16 bytes within 5 s")
            return
        }
        switch result.withLock({ $0 })! {
        case .success(let bytes):
            #expect(bytes.count == 16)
            #expect(Set(bytes).count > 4)
        case .failure(let error):
            // Not root, or no RNG selected: the error must say so.
            switch error {
            case .permissionDenied(let path, _), .noHardwareRNG(let path, _): #expect(path == "/dev/hwrng")
            default: Issue.record("unexpected error \(error)")
            }
        }
    }
}

@Suite struct CPURandomSourceTests {
    @Test(arguments: [CPURandomInstruction.rdrand, .rdseed])
    func realInstructionFillsOrIsUnsupported(instruction: CPURandomInstruction) throws {
        guard CPURandomFeatures.current.supports(instruction) else {
            #expect(throws: EntropySourceError.instructionNotSupported(instruction)) {
                _ = try CPURandomSource(instruction)
            }
            return
        }
        var source = try CPURandomSource(instruction)
        for size in [1, 7, 8, 9, 4096] {
            var bytes = [UInt8](repeating: 0, count: size)
            try bytes.withUnsafeMutableBytes { try source.fillAll($0) }
            if size == 4096 { #expect(Set(bytes).count > 200) }
        }
    }

    @Test(arguments: [CPURandomInstruction.rdrand, .rdseed])
    func cpuWithoutTheInstructionIsRejected(instruction: CPURandomInstruction) {
        #expect(throws: EntropySourceError.instructionNotSupported(instruction)) {
            _ = try CPURandomSource(instruction, features: CPURandomFeatures(rdrand: false, rdseed: false))
        }
    }

    @Test func failingUnitThrowsAfterBoundedRetries() {
        let attempts = Atomic<Int>(0)
        var source = CPURandomSource(.rdseed, retries: 5) {
            attempts.add(1, ordering: .relaxed)
            return nil
        }
        var bytes = [UInt8](repeating: 0, count: 16)
        #expect(throws: EntropySourceError.instructionFailed(.rdseed, attempts: 6)) {
            _ = try bytes.withUnsafeMutableBytes { try source.fill($0) }
        }
        #expect(attempts.load(ordering: .relaxed) == 6)
    }

    @Test func unitFailingMidFillReturnsWhatItGot() throws {
        let calls = Atomic<Int>(0)
        var source = CPURandomSource(.rdrand, retries: 2) {
            calls.add(1, ordering: .relaxed).oldValue < 2 ? 0x0102_0304_0506_0708 : nil
        }
        var bytes = [UInt8](repeating: 0, count: 32)
        #expect(try bytes.withUnsafeMutableBytes { try source.fill($0) } == 16)
        #expect(bytes[0..<8] == [8, 7, 6, 5, 4, 3, 2, 1])
    }
}

@Suite struct CompositionTests {
    @Test func fallbackServesWhenPrimaryFailsAndRetriesPrimary() throws {
        var source = FallbackSource(
            primary: ScriptedSource([.error(.instructionFailed(.rdseed, attempts: 3)), .bytes(8, value: 1)]),
            fallback: ScriptedSource([.bytes(8, value: 2)]))
        var bytes = [UInt8](repeating: 0, count: 8)
        #expect(try bytes.withUnsafeMutableBytes { try source.fill($0) } == 8)
        #expect(bytes == Array(repeating: 2, count: 8))
        #expect(try bytes.withUnsafeMutableBytes { try source.fill($0) } == 8)
        #expect(bytes == Array(repeating: 1, count: 8))
        #expect(source.fallbackFills == 1)
    }

    @Test func rdseedElseGetrandomOnACPUWithoutRDSEED() throws {
        let rdseed = Result { () throws(EntropySourceError) in
            try CPURandomSource(.rdseed, features: CPURandomFeatures(rdrand: true, rdseed: false))
        }
        var source = FallbackSource(primary: rdseed, fallback: GetRandomSource())
        var bytes = [UInt8](repeating: 0, count: 64)
        for _ in 0..<3 { try bytes.withUnsafeMutableBytes { try source.fillAll($0) } }
        #expect(source.fallbackFills == 3)
        #expect(source.lastPrimaryError == .instructionNotSupported(.rdseed))
    }

    @Test func bothFailingNamesBoth() {
        var source = ScriptedSource([.error(.exhausted(source: "a"))], name: "a")
            .orElse(ScriptedSource([.error(.wouldBlock(source: "b"))], name: "b"))
        var bytes = [UInt8](repeating: 0, count: 8)
        #expect(
            throws: EntropySourceError.allSourcesFailed(
                primary: .exhausted(source: "a"), fallback: .wouldBlock(source: "b"))
        ) { _ = try bytes.withUnsafeMutableBytes { try source.fill($0) } }
    }

    @Test func xorMixesBothAndWipesOnError() throws {
        var source = ScriptedSource([.bytes(100, value: 0xF0)]).xor(ScriptedSource([.bytes(100, value: 0x3C)]))
        var bytes = [UInt8](repeating: 0, count: 100)
        #expect(try bytes.withUnsafeMutableBytes { try source.fill($0) } == 100)
        #expect(bytes.allSatisfy { $0 == 0xCC })

        var failing = ScriptedSource([.bytes(100, value: 0xAA)]).xor(ScriptedSource([.error(.exhausted(source: "b"))]))
        #expect(throws: EntropySourceError.exhausted(source: "b")) {
            _ = try bytes.withUnsafeMutableBytes { try failing.fill($0) }
        }
        #expect(bytes.allSatisfy { $0 == 0 })
    }

    @Test func xorOfGetrandomAndRDRANDNests() throws {
        let rdrand = Result { () throws(EntropySourceError) in try CPURandomSource(.rdrand) }
        var source = GetRandomSource().xor(rdrand.orElse(GetRandomSource()), chunkSize: 1024)
        var bytes = [UInt8](repeating: 0, count: 4096)
        #expect(try bytes.withUnsafeMutableBytes { try source.fill($0) } == 1024)
        try bytes.withUnsafeMutableBytes { try source.fillAll($0) }
        #expect(Set(bytes).count > 200)
    }
}
