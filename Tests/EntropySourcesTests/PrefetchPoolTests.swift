import EntropySourcesTestSupport
import Foundation
import Synchronization
import Testing

@testable import EntropySources

/// Writes consecutive 64-bit counters (1, 2, 3, …), so every served word is unique.
struct CounterSource: EntropySource {
    var next: UInt64 = 1
    var name: String { "counter" }
    var mayBlock: Bool { false }
    mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) throws(EntropySourceError) -> Int {
        let words = buffer.count / 8
        guard words > 0 else { throw .invalidParameter(name: "counter fill size", value: buffer.count) }
        for i in 0..<words {
            buffer.storeBytes(of: next, toByteOffset: i * 8, as: UInt64.self)
            next += 1
        }
        return words * 8
    }
}

/// Polls `condition` every millisecond for up to `seconds`.
func eventually(seconds: Double = 5, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(1_000)
    }
    return condition()
}

@Suite struct PrefetchPoolTests {
    @Test func fillsToTheHighWatermarkAndServes() throws {
        let pool = try PrefetchPool(
            source: GetRandomSource(), capacity: 4_096, lowWatermark: 1_024, highWatermark: 4_000)
        #expect(eventually { pool.level == 4_000 })
        var bytes = [UInt8](repeating: 0, count: 64)
        #expect(try bytes.withUnsafeMutableBytes { try pool.tryFill($0) } == 64)
        #expect(pool.level == 3_936)
        // Above the low watermark the filler stays idle.
        usleep(5_000)
        #expect(pool.level == 3_936)
        // Draining below the low watermark wakes it.
        var big = [UInt8](repeating: 0, count: 3_000)
        try big.withUnsafeMutableBytes { try pool.fillAll($0) }
        #expect(eventually { pool.level == 4_000 })
    }

    @Test func neverHandsTheSameByteToTwoConsumers() throws {
        let pool = try PrefetchPool(source: CounterSource(), capacity: 1_024, lowWatermark: 256, highWatermark: 1_024)
        let seen = Mutex<[UInt64]>([])
        let group = DispatchGroup()
        for _ in 0..<4 {
            group.enter()
            Thread {
                var local: [UInt64] = []
                var words = [UInt64](repeating: 0, count: 8)
                for _ in 0..<500 {
                    words.withUnsafeMutableBytes { raw in
                        // Requests of 8...64 bytes, always whole words.
                        var done = 0
                        while done < 64 {
                            done += (try? pool.fill(UnsafeMutableRawBufferPointer(rebasing: raw[done..<64]))) ?? 0
                        }
                    }
                    local += words
                }
                seen.withLock { $0 += local }
                group.leave()
            }.start()
        }
        #expect(group.wait(timeout: .now() + 20) == .success)
        let all = seen.withLock { $0 }
        #expect(all.count == 4 * 500 * 8)
        #expect(Set(all).count == all.count)
        #expect(!all.contains(0))
    }

    @Test func servedBytesAreWipedInTheBuffer() throws {
        let pool = try PrefetchPool(
            source: ScriptedSource([.bytes(64, value: 0xAB)]), capacity: 64, lowWatermark: 0, highWatermark: 64)
        #expect(eventually { pool.level == 64 })
        var bytes = [UInt8](repeating: 0, count: 64)
        #expect(try bytes.withUnsafeMutableBytes { try pool.fill($0) } == 64)
        #expect(bytes.allSatisfy { $0 == 0xAB })
        let storage = pool.core.withLock { Array(UnsafeRawBufferPointer(pool.core.storage)) }
        #expect(storage.allSatisfy { $0 == 0 })
    }

    @Test func stalledSourceDegradesToBlockingNeverToOtherBytes() throws {
        let gate = GatedSource.Gate()
        let pool = try PrefetchPool(source: GatedSource(gate: gate), capacity: 1_024)
        var bytes = [UInt8](repeating: 0, count: 64)
        #expect(try bytes.withUnsafeMutableBytes { try pool.tryFill($0) } == 0)
        let served = Atomic<Int>(0)
        let done = DispatchSemaphore(value: 0)
        Thread {
            var local = [UInt8](repeating: 0, count: 64)
            let n = (try? local.withUnsafeMutableBytes { try pool.fill($0) }) ?? -1
            served.store(n, ordering: .releasing)
            done.signal()
        }.start()
        // The consumer waits while the source stalls.
        #expect(done.wait(timeout: .now() + 0.05) == .timedOut)
        #expect(served.load(ordering: .acquiring) == 0)
        gate.open()
        #expect(done.wait(timeout: .now() + 5) == .success)
        #expect(served.load(ordering: .acquiring) >= 1)
    }

    @Test func exhaustedSourceServesWhatItHadThenTheError() throws {
        let pool = try PrefetchPool(
            source: ScriptedSource([.bytes(100, value: 1), .bytes(28, value: 2)], name: "file"), capacity: 4_096)
        #expect(eventually { pool.lastError == .exhausted(source: "file") })
        var bytes = [UInt8](repeating: 0, count: 4_096)
        #expect(try bytes.withUnsafeMutableBytes { try pool.fill($0) } == 128)
        #expect(throws: EntropySourceError.exhausted(source: "file")) {
            _ = try bytes.withUnsafeMutableBytes { try pool.fill($0) }
        }
    }

    @Test func transientErrorsAreRetriedWithBackoff() throws {
        let pool = try PrefetchPool(
            source: ScriptedSource([
                .error(.instructionFailed(.rdseed, attempts: 1)),
                .error(.readFailed(source: "x", errno: SystemErrno(EIO))),
                .bytes(64, value: 3),
            ]), capacity: 128, lowWatermark: 0, highWatermark: 64)
        #expect(eventually { pool.level == 64 })
        #expect(pool.lastError == nil)
        var bytes = [UInt8](repeating: 0, count: 64)
        #expect(try bytes.withUnsafeMutableBytes { try pool.fill($0) } == 64)
        #expect(bytes.allSatisfy { $0 == 3 })
    }

    @Test func unhealthySourceInAPoolNeverServesFailingBytes() throws {
        let monitor = try HealthMonitor(FaultySource.stuck(0x11))
        let pool = try PrefetchPool(source: monitor, capacity: 4_096)
        var bytes = [UInt8](repeating: 0, count: 64)
        #expect(eventually { pool.lastError != nil })
        #expect(
            throws: EntropySourceError.unhealthy(
                source: "faulty", failure: .repetitionCount(value: 0x11, count: 4, cutoff: 4))
        ) {
            _ = try bytes.withUnsafeMutableBytes { try pool.fill($0) }
        }
        #expect(bytes.allSatisfy { $0 == 0 })
    }

    @Test func closeWakesWaitersAndRejectsLaterCalls() throws {
        let gate = GatedSource.Gate()
        let pool = try PrefetchPool(source: GatedSource(gate: gate), capacity: 256)
        let result = Mutex<EntropySourceError?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread {
            var local = [UInt8](repeating: 0, count: 8)
            do { _ = try local.withUnsafeMutableBytes { try pool.fill($0) } } catch let error as EntropySourceError {
                result.withLock { $0 = error }
            } catch {}
            done.signal()
        }.start()
        usleep(10_000)
        pool.close()
        #expect(done.wait(timeout: .now() + 5) == .success)
        #expect(result.withLock { $0 } == .poolClosed)
        gate.open()  // let the filler's stalled fill return so its thread exits
    }

    @Test func rejectsBadWatermarks() {
        #expect(throws: EntropySourceError.invalidParameter(name: "capacity", value: 8)) {
            _ = try PrefetchPool(source: GetRandomSource(), capacity: 8)
        }
        #expect(throws: EntropySourceError.invalidParameter(name: "lowWatermark", value: 100)) {
            _ = try PrefetchPool(source: GetRandomSource(), capacity: 100, lowWatermark: 100, highWatermark: 100)
        }
    }

    @Test func slowSourceIsServedFromTheWarmPool() throws {
        // 4 kB/s, 64 bytes per 16 ms: direct use costs ~16 ms per request; the warm pool serves at once.
        let pool = try PrefetchPool(source: ThrottledSource(bytesPerSecond: 4_000), capacity: 256)
        #expect(eventually { pool.level == 256 })
        var bytes = [UInt8](repeating: 0, count: 64)
        let start = DispatchTime.now()
        for _ in 0..<4 { try bytes.withUnsafeMutableBytes { try pool.fillAll($0) } }
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e6
        #expect(elapsed < 10, "4 requests from a warm pool took \(elapsed) ms")
    }
}

@Suite struct PrefetchPoolNotificationTests {
    @Test func notifiesOfAFailureOnlyUntilAConsumerHasBeenThrownIt() throws {
        // The source is exhausted at once: the filler records the error and stops for good.
        let pool = try PrefetchPool(source: ScriptedSource([], name: "file"), capacity: 64)
        #expect(eventually { pool.lastError != nil })
        let calls = Atomic<Int>(0)
        let count: @Sendable () -> Void = { calls.add(1, ordering: .relaxed) }
        pool.notifyWhenAvailable(count)
        #expect(calls.load(ordering: .relaxed) == 1)
        var bytes = [UInt8](repeating: 0, count: 8)
        #expect(throws: EntropySourceError.exhausted(source: "file")) {
            _ = try bytes.withUnsafeMutableBytes { try pool.tryFill($0) }
        }
        // Known now: a consumer that asks again after the error is not woken at once, which would
        // make an event loop that retries on every wake spin.
        pool.notifyWhenAvailable(count)
        #expect(calls.load(ordering: .relaxed) == 1)
        pool.close()
        #expect(calls.load(ordering: .relaxed) == 2)
        #expect(throws: EntropySourceError.poolClosed) { _ = try bytes.withUnsafeMutableBytes { try pool.tryFill($0) } }
        pool.notifyWhenAvailable(count)
        #expect(calls.load(ordering: .relaxed) == 2)
    }

    @Test func notifiesWhenBytesArriveAndAtOnceWhileThereAreSome() throws {
        let gate = GatedSource.Gate()
        let pool = try PrefetchPool(source: GatedSource(gate: gate), capacity: 256)
        let calls = Atomic<Int>(0)
        pool.notifyWhenAvailable { calls.add(1, ordering: .relaxed) }
        #expect(calls.load(ordering: .relaxed) == 0)
        gate.open()
        #expect(eventually { calls.load(ordering: .relaxed) == 1 })
        pool.notifyWhenAvailable { calls.add(1, ordering: .relaxed) }
        #expect(calls.load(ordering: .relaxed) == 2)
    }
}
