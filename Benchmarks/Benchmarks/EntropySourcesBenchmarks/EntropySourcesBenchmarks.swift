// Throughput of every source at 64 B and 64 KiB requests beside raw getrandom (the C loop
// `cb_getrandom`) measured in the same run; the pool serving 64-byte requests; the health monitor
// against the unwrapped source; and the pool in front of a source throttled to 4 kB/s. Each
// benchmark's throughput metric counts requests, so MB/s = requests/s × request size. Sources and
// buffers are created before `startMeasurement()`: the measured region allocates nothing.
import Benchmark
import BenchmarkSupport
import CBaselines
import EntropySources
import EntropySourcesTestSupport

#if canImport(Glibc)
    import Glibc
#endif

let small = 64
let large = 65_536

/// Runs `body` on a buffer of `size` bytes, `scaledIterations` times.
func measure(_ benchmark: Benchmark, size: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64)
    defer { buffer.deallocate() }
    benchmark.startMeasurement()
    for _ in benchmark.scaledIterations {
        try body(buffer)
        blackHole(buffer[0])
    }
    benchmark.stopMeasurement()
}

let benchmarks: @Sendable () -> Void = {
    BenchmarkDefaults.apply()
    let fast = Benchmark.Configuration(scalingFactor: .kilo)
    let bulk = Benchmark.Configuration(scalingFactor: .one)

    for (size, configuration) in [(small, fast), (large, bulk)] {
        let suffix = size == small ? "64B" : "64KiB"

        Benchmark("Baseline_getrandom_C_\(suffix)", configuration: configuration) { benchmark in
            measure(benchmark, size: size) { buffer in _ = cb_getrandom(buffer.baseAddress, buffer.count) }
        }

        Benchmark("GetRandomSource_\(suffix)", configuration: configuration) { benchmark in
            var source = GetRandomSource()
            try measure(benchmark, size: size) { buffer in try source.fillAll(buffer) }
        }

        Benchmark("FileSource_urandom_\(suffix)", configuration: configuration) { benchmark in
            var source = try FileSource(path: "/dev/urandom")
            try measure(benchmark, size: size) { buffer in try source.fillAll(buffer) }
        }

        if CPURandomFeatures.current.rdrand {
            Benchmark("CPURandomSource_RDRAND_\(suffix)", configuration: configuration) { benchmark in
                var source = try CPURandomSource(.rdrand)
                try measure(benchmark, size: size) { buffer in try source.fillAll(buffer) }
            }
        }

        if CPURandomFeatures.current.rdseed {
            // RDSEED delivers a few MB/s: keep the 64 KiB case to a handful of requests.
            Benchmark(
                "CPURandomSource_RDSEED_\(suffix)",
                configuration: size == small ? fast : .init(scalingFactor: .one, maxIterations: 10)
            ) { benchmark in
                var source = try CPURandomSource(.rdseed)
                try measure(benchmark, size: size) { buffer in try source.fillAll(buffer) }
            }
        }

        // A RemoteEGDSource against an in-process EGD server thread on a unix socket (answers in
        // pieces of up to 64 KiB from a precomputed table, requests not recorded), 16 commands of
        // 255 bytes in flight. Connected and warmed up before measuring.
        Benchmark("RemoteEGDSource_unix_\(suffix)", configuration: configuration) { benchmark in
            let server = EGDTestServer(chunkSize: 65_536, recordsRequests: false)
            guard server.start() else { return }
            defer { server.stop() }
            let source = try RemoteEGDSource(endpoint: server.endpoint)
            var warm = [UInt8](repeating: 0, count: 64)
            try warm.withUnsafeMutableBytes { try source.fillAll($0) }
            try measure(benchmark, size: size) { buffer in try source.fillAll(buffer) }
            source.disconnect()
        }

        Benchmark("HealthMonitor_getrandom_\(suffix)", configuration: configuration) { benchmark in
            let monitor = try HealthMonitor(GetRandomSource())
            try measure(benchmark, size: size) { buffer in try monitor.fillAll(buffer) }
        }

        Benchmark("XOR_getrandom_rdrand_\(suffix)", configuration: configuration) { benchmark in
            let rdrand = Result { () throws(EntropySourceError) in try CPURandomSource(.rdrand) }
            var source = GetRandomSource().xor(rdrand.orElse(GetRandomSource()))
            try measure(benchmark, size: size) { buffer in try source.fillAll(buffer) }
        }
    }

    // The health tests alone over a 2,500-byte block already in memory (no source).
    Benchmark("HealthTests_block_only", configuration: fast) { benchmark in
        var fips = FIPSTest()
        var continuous = try ContinuousHealthTests()
        let block = UnsafeMutableRawBufferPointer.allocate(byteCount: FIPSTest.blockSize, alignment: 64)
        defer { block.deallocate() }
        _ = cb_getrandom(block.baseAddress, block.count)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(continuous.test(UnsafeRawBufferPointer(block)))
            blackHole(fips.test(UnsafeRawBufferPointer(block)))
        }
    }

    // A warm pool serving 64-byte requests (the filler refills in the background).
    Benchmark("PrefetchPool_warm_64B", configuration: fast) { benchmark in
        let pool = try PrefetchPool(source: GetRandomSource(), capacity: 1 << 20, lowWatermark: 1 << 19)
        while pool.level < 1 << 20 { usleep(1_000) }
        try measure(benchmark, size: small) { buffer in try pool.fillAll(buffer) }
        pool.close()
    }

    // A source throttled to 8 kB/s (like this VM's /dev/hwrng), directly and behind a pool that has
    // buffered 8 kB (about 1 s of the source's output, so the benchmark starts quickly); 100 requests
    // of 64 bytes, with the warm-up, fit in what is buffered.
    Benchmark("SlowSource_direct_64B", configuration: .init(scalingFactor: .one, maxIterations: 8)) { benchmark in
        var source = ThrottledSource(bytesPerSecond: 8_000)
        try measure(benchmark, size: small) { buffer in try source.fillAll(buffer) }
    }

    Benchmark("SlowSource_pool_64B", configuration: .init(scalingFactor: .one, maxIterations: 100)) { benchmark in
        let pool = try PrefetchPool(source: ThrottledSource(bytesPerSecond: 8_000, chunk: 512), capacity: 65_536)
        while pool.level < 8_000 { usleep(10_000) }
        try measure(benchmark, size: small) { buffer in try pool.fillAll(buffer) }
        pool.close()
    }
}
